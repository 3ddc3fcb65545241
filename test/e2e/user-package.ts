// What the unprivileged side of a test runs: the package as `npm pack` makes it, unpacked into
// a world-readable temporary directory, never files of the checkout. The checkout may sit
// where uid 1000 cannot enter (root's home is 0700), and tsx is a development tool that has
// no place on that side: programs run there are bundled here, as root, into plain modules.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface UserPackage {
  /** World-readable directory holding node_modules/mountgate; removed when this process exits. */
  root: string;
  /** The unpacked package: root/node_modules/mountgate. */
  dir: string;
  /** Its `mountgate` bin (dist/bundle/main.mjs). */
  bin: string;
}

let staged: UserPackage | undefined;

/**
 * Fails, with the fix, unless the checkout is built from its current sources (scripts/check-built):
 * otherwise the unprivileged side would silently run older code than the daemons.
 */
export function assertBuilt(): void {
  const r = spawnSync(path.join(REPO, 'scripts/check-built'), { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr.trim() || `scripts/check-built exited with ${r.status}`);
}

/** Packs the checkout and unpacks it once per process (about a second); later calls reuse it. */
export function userPackage(): UserPackage {
  if (staged) return staged;
  assertBuilt();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-user-'));
  process.once('exit', () => fs.rmSync(root, { recursive: true, force: true }));
  fs.chmodSync(root, 0o755);
  const dir = path.join(root, 'node_modules', 'mountgate');
  fs.mkdirSync(dir, { recursive: true });
  fs.chmodSync(path.dirname(dir), 0o755);
  fs.chmodSync(dir, 0o755);
  // prepack (scripts/check-built) already ran above; --json names the tarball.
  const out = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', root], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const [{ filename }] = JSON.parse(out) as [{ filename: string }];
  const tarball = path.join(root, filename);
  // npm's tarballs carry normalized modes (0644, 0755 for executables), kept as root extracts.
  execFileSync('tar', ['-xzf', tarball, '-C', dir, '--strip-components=1']);
  fs.rmSync(tarball);
  staged = { root, dir, bin: path.join(dir, 'dist/bundle/main.mjs') };
  return staged;
}

/**
 * Bundles the TypeScript program ENTRY (and what it imports from this checkout's sources) into
 * one module inside the unpacked package and returns its path, for `node PATH` as uid 1000.
 * Package imports stay imports: 'mountgate' resolves through the package's own exports and
 * its dependencies from its node_modules, as for any program using the installed package.
 * The module sits two levels below the package root, as the bundle's chunks do, so code that
 * finds the native addon relative to itself finds the package's.
 */
export function userScript(entry: string): string {
  const pkg = userPackage();
  const dir = path.join(pkg.dir, 'dist', 'user-scripts');
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  fs.chmodSync(dir, 0o755);
  const outfile = path.join(dir, `${path.basename(entry).replace(/\.[mc]?tsx?$/, '')}.mjs`);
  buildSync({
    entryPoints: [entry],
    outfile,
    bundle: true,
    packages: 'external',
    format: 'esm',
    platform: 'node',
    target: 'node20',
    logLevel: 'warning',
  });
  fs.chmodSync(outfile, 0o644);
  return outfile;
}
