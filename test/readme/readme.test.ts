// The README's TypeScript example, extracted and run for real as uid 1000 against userdbd and
// mntfsd started here on private sockets: once with a trusted signed image, once with an image
// signed by an unknown key. Only the import specifier changes ('mountgate' -> the source).
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = [process.execPath, '--import', 'tsx', path.join(repo, 'src/cli/main.ts')];
const AS_USER = ['setpriv', '--reuid=1000', '--regid=1000', '--clear-groups'];
const BUSYBOX = '/bin/busybox';

let skipReason: string | undefined;
let tmp = '';
let example = '';
let trustedImage = '';
let untrustedImage = '';
let userdbdSocket = '';
let mntfsdSocket = '';
const pinDir = `/sys/fs/bpf/mountgate-test-readme-${process.pid}`;
const daemons: ChildProcess[] = [];

/** The ```ts blocks of the README, joined. */
function readmeExample(): string {
  const readme = fs.readFileSync(path.join(repo, 'README.md'), 'utf8');
  const blocks = [...readme.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
  assert.ok(blocks.length > 0, 'README.md has no ```ts example');
  return blocks.join('\n');
}

function whyNotRunnable(): string | undefined {
  if (!fs.existsSync(BUSYBOX)) return `${BUSYBOX} missing (apt-get install busybox-static)`;
  for (const cmd of ['userdbd', 'mntfsd', 'build']) {
    if (spawnSync(CLI[0], [...CLI.slice(1), cmd, '--help'], { stdio: 'ignore' }).status !== 0) return `'mountgate ${cmd}' is not wired into src/cli/main.ts yet`;
  }
  return undefined;
}

async function startDaemon(args: string[], socket: string): Promise<void> {
  const child = spawn(CLI[0], [...CLI.slice(1), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  daemons.push(child);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    if (stderr.length < 16384) stderr += s;
  });
  const deadline = Date.now() + 20_000;
  while (!fs.existsSync(socket)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${args[0]} did not start: ${stderr.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function makeKey(dir: string, cn: string): { key: string; cert: string } {
  const key = path.join(dir, `${cn}.key`);
  const cert = path.join(dir, `${cn}.crt`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '30', '-subj', `/CN=${cn}`], { stdio: 'ignore' });
  return { key, cert };
}

before(async () => {
  skipReason = whyNotRunnable();
  if (skipReason) return;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-readme-'));
  fs.chmodSync(tmp, 0o755);
  const clientUrl = pathToFileURL(path.join(repo, 'src/client/index.ts')).href;
  const code = readmeExample().replace(/from 'mountgate'/g, `from '${clientUrl}'`);
  assert.ok(code.includes(clientUrl), "the example must import from 'mountgate'");
  example = path.join(tmp, 'example.mts'); // .mts: an ES module, top-level await allowed
  fs.writeFileSync(example, code, { mode: 0o644 });

  const tree = path.join(tmp, 'tree');
  for (const d of ['bin', 'etc', 'usr']) fs.mkdirSync(path.join(tree, d), { recursive: true });
  fs.copyFileSync(BUSYBOX, path.join(tree, 'bin/busybox'));
  fs.chmodSync(path.join(tree, 'bin/busybox'), 0o755);
  fs.symlinkSync('busybox', path.join(tree, 'bin/ls'));
  fs.writeFileSync(path.join(tree, 'etc/hello'), 'hello\n');
  const keys = fs.mkdtempSync(path.join(tmp, 'keys-'));
  const certs = path.join(tmp, 'certs');
  fs.mkdirSync(certs);
  const trusted = makeKey(keys, 'trusted');
  const untrusted = makeKey(keys, 'untrusted');
  fs.copyFileSync(trusted.cert, path.join(certs, 'trusted.crt'));
  trustedImage = path.join(tmp, 'trusted.raw');
  untrustedImage = path.join(tmp, 'untrusted.raw');
  for (const [image, k] of [[trustedImage, trusted], [untrustedImage, untrusted]] as const) {
    execFileSync(CLI[0], [...CLI.slice(1), 'build', tree, image, '--key', k.key, '--cert', k.cert], { stdio: 'ignore' });
    fs.chmodSync(image, 0o644);
  }

  userdbdSocket = path.join(tmp, 'userdbd.sock');
  mntfsdSocket = path.join(tmp, 'mntfsd.sock');
  // The opt-out only matters on kernels that refuse the BPF-LSM programs (see the README).
  await startDaemon(['userdbd', '--listen', userdbdSocket, '--state-dir', path.join(tmp, 'state'), '--bpf-pin-dir', pinDir, '--allow-without-policy'], userdbdSocket);
  await startDaemon(['mntfsd', '--listen', mntfsdSocket, '--userdbd', userdbdSocket, '--verity-certs', certs], mntfsdSocket);
});

after(async () => {
  await Promise.all(
    daemons.map((d) => {
      if (d.exitCode !== null || d.signalCode !== null) return undefined;
      const done = new Promise((r) => d.once('exit', r));
      d.kill('SIGTERM');
      const killer = setTimeout(() => d.kill('SIGKILL'), 5000);
      return done.then(() => clearTimeout(killer));
    }),
  );
  fs.rmSync(pinDir, { recursive: true, force: true });
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

function runExample(image: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(AS_USER[0], [...AS_USER.slice(1), process.execPath, '--import', 'tsx', example], {
    cwd: repo,
    env: { ...process.env, IMAGE: image, USERDBD_SOCKET: userdbdSocket, MNTFSD_SOCKET: mntfsdSocket },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('README example: allocate a range, mount the image, see its files as root of the namespace', (t) => {
  if (skipReason) return t.skip(skipReason);
  const r = runExample(trustedImage);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^namespace 1000-example: root \(erofs\)$/m);
  for (const name of ['bin', 'etc', 'usr']) assert.match(r.stdout, new RegExp(`^d\\S+\\s+\\d+\\s+0\\s+0\\s+.* ${name}$`, 'm'), r.stdout);
});

test('README example: an image signed by an unknown key is refused with KeyNotFound', (t) => {
  if (skipReason) return t.skip(skipReason);
  const r = runExample(untrustedImage);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /^refused: io\.systemd\.MountFileSystem\.KeyNotFound$/m);
});
