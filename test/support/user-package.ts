// What the unprivileged side of a test runs: the package as `npm pack` makes it, unpacked into
// a world-readable temporary directory, never files of the checkout. The checkout may sit
// where uid 1000 cannot enter (root's home is 0700), and tsx is a development tool that has
// no place on that side: programs run there are bundled here, as root, into plain modules.
// Its JavaScript is rebuilt from the current sources (the daemons under test run from them
// too); the native addon, nshelper, BPF object and dependencies are the packed ones.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync, type BuildOptions } from 'esbuild';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** Built by scripts/setup with a compiler; the tests take them as built. */
const COMPILED = ['build/Release/mountgate.node', 'build/Release/mountgate-nshelper', 'build/bpf/userns-restrict.bpf.o'];

export interface UserPackage {
  /** World-readable directory holding node_modules/mountgate; removed when this process exits. */
  root: string;
  /** The unpacked package: root/node_modules/mountgate. */
  dir: string;
  /** Its `mountgate` bin (dist/bundle/main.mjs). */
  bin: string;
}

let staged: UserPackage | undefined;

/** Packs the checkout and unpacks it once per process (a second or two); later calls reuse it. */
export function userPackage(): UserPackage {
  if (staged) return staged;
  const missing = COMPILED.filter((f) => !fs.existsSync(path.join(REPO, f)));
  if (missing.length > 0) throw new Error(`${missing.join(', ')} missing: run ./scripts/setup`);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-user-'));
  process.once('exit', () => fs.rmSync(root, { recursive: true, force: true }));
  fs.chmodSync(root, 0o755);
  const dir = path.join(root, 'node_modules', 'mountgate');
  fs.mkdirSync(dir, { recursive: true });
  fs.chmodSync(path.dirname(dir), 0o755);
  fs.chmodSync(dir, 0o755);
  // No prepack: its freshness check of dist/ does not apply, dist/ is rebuilt below.
  const out = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', root], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const [{ filename }] = JSON.parse(out) as [{ filename: string }];
  const tarball = path.join(root, filename);
  // npm's tarballs carry normalized modes (0644, 0755 for executables), kept as root extracts.
  execFileSync('tar', ['-xzf', tarball, '-C', dir, '--strip-components=1']);
  fs.rmSync(tarball);
  // The bin and the library's entry point from the sources as they are now, where the
  // packed ones are (two levels below the package root, where they find build/).
  execFileSync(path.join(REPO, 'scripts/build-bundle'), [path.join(dir, 'dist/bundle')], { stdio: ['ignore', 'ignore', 'pipe'] });
  buildSync({ ...BUNDLE, external: ['koffi'], entryPoints: [path.join(REPO, 'src/client/index.ts')], outfile: path.join(dir, 'dist/client/index.js') });
  execFileSync('chmod', ['-R', 'a+rX', path.join(dir, 'dist')]);
  staged = { root, dir, bin: path.join(dir, 'dist/bundle/main.mjs') };
  return staged;
}

/** Where userScript() and userEval() put their modules: two levels below the package root, as
 * the bundle's chunks are, so code that finds the native addon relative to itself finds the package's. */
function scriptsDir(): string {
  const dir = path.join(userPackage().dir, 'dist', 'user-scripts');
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  fs.chmodSync(dir, 0o755);
  return dir;
}

/** esbuild options shared by userScript() and userEval(): one ES module, as scripts/build-bundle makes. */
const BUNDLE: BuildOptions = {
  bundle: true,
  // 'mountgate' resolves at run time through the package's own exports (as for any program using
  // the installed package); koffi is native and found from the package's node_modules. Anything
  // else is bundled, development-only helpers included.
  external: ['mountgate', 'koffi'],
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // CommonJS dependencies (pino) call require() for built-ins, which an ES module has to be given.
  banner: { js: "import { createRequire as __mountgateCreateRequire } from 'node:module'; const require = __mountgateCreateRequire(import.meta.url);" },
  logLevel: 'warning',
};

/** ENTRY -> its module: tests call userScript() per client run; one bundle per process will do. */
const bundled = new Map<string, string>();

/**
 * Bundles the TypeScript program ENTRY (with what it imports from this checkout) into one module
 * inside the unpacked package and returns its path, for `node PATH` as uid 1000.
 */
export function userScript(entry: string): string {
  let outfile = bundled.get(entry);
  if (outfile) return outfile;
  // Numbered: e2e-client.ts and userdbd-client.ts may both be in use.
  outfile = path.join(scriptsDir(), `${path.basename(entry).replace(/\.[mc]?tsx?$/, '')}-${bundled.size}.mjs`);
  buildSync({ ...BUNDLE, entryPoints: [entry], outfile });
  fs.chmodSync(outfile, 0o644);
  bundled.set(entry, outfile);
  return outfile;
}

let evals = 0;

/**
 * userScript() for the program `node --input-type=module -e CODE` would run (imports resolved from
 * RESOLVE_DIR), saved as NAME-N.mjs. It sees the arguments as -e does: process.argv[1] is the first.
 */
export function userEval(name: string, code: string, resolveDir = REPO): string {
  // A new file each time: a program started from the previous one may still be loading it.
  const outfile = path.join(scriptsDir(), `${name}-${evals++}.mjs`);
  // `node FILE ARGS` has FILE at argv[1]; drop it before any bundled code runs.
  const banner = `${BUNDLE.banner?.js ?? ''}\nprocess.argv.splice(1, 1);`;
  buildSync({ ...BUNDLE, banner: { js: banner }, stdin: { contents: code, loader: 'ts', resolveDir, sourcefile: `${name}.ts` }, outfile });
  fs.chmodSync(outfile, 0o644);
  return outfile;
}
