// The README's TypeScript example, extracted and run for real as uid 1000 against userdbd and
// mntfsd started here on private sockets: once with a trusted signed image, once with an image
// signed by an unknown key. It runs unchanged, its 'mountgate' import resolved in the packed
// package (test/support/user-package.ts), types stripped by esbuild: no tsx, nothing of the checkout.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { startDaemon, stopDaemons } from '../support/daemons.js';
import { buildSignedImages, type SignedImages } from '../support/images.js';
import { REPO, runAsUser, type UserRun } from '../support/processes.js';
import { userScript } from '../support/user-package.js';

const BUSYBOX = '/bin/busybox';

let tmp = '';
let example = '';
let images: SignedImages;
let userdbdSocket = '';
let mntfsdSocket = '';
const pinDir = `/sys/fs/bpf/mountgate-test-readme-${process.pid}`;

/** The ```ts blocks of the README, joined. */
function readmeExample(): string {
  const readme = fs.readFileSync(path.join(REPO, 'README.md'), 'utf8');
  const blocks = [...readme.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
  assert.ok(blocks.length > 0, 'README.md has no ```ts example');
  return blocks.join('\n');
}

before(async () => {
  // scripts/setup installs busybox-static; without it the image has no programs to run.
  assert.ok(fs.existsSync(BUSYBOX), `${BUSYBOX} missing: run ./scripts/setup`);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-readme-'));
  fs.chmodSync(tmp, 0o755);
  const code = readmeExample();
  assert.match(code, /from 'mountgate';/, "the example must import from 'mountgate'");
  const source = path.join(tmp, 'example.mts'); // .mts: an ES module, top-level await allowed
  fs.writeFileSync(source, code);
  example = userScript(source);

  const tree = path.join(tmp, 'tree');
  for (const d of ['bin', 'etc', 'usr']) fs.mkdirSync(path.join(tree, d), { recursive: true });
  fs.copyFileSync(BUSYBOX, path.join(tree, 'bin/busybox'));
  fs.chmodSync(path.join(tree, 'bin/busybox'), 0o755);
  fs.symlinkSync('busybox', path.join(tree, 'bin/ls'));
  fs.writeFileSync(path.join(tree, 'etc/hello'), 'hello\n');
  images = buildSignedImages(tree, tmp);

  userdbdSocket = path.join(tmp, 'userdbd.sock');
  mntfsdSocket = path.join(tmp, 'mntfsd.sock');
  // The opt-out only matters on kernels that refuse the BPF-LSM programs (see the README).
  await startDaemon(['userdbd', '--listen', userdbdSocket, '--state-dir', path.join(tmp, 'state'), '--bpf-pin-dir', pinDir, '--allow-without-policy'], userdbdSocket);
  await startDaemon(['mntfsd', '--listen', mntfsdSocket, '--userdbd', userdbdSocket, '--verity-certs', images.certs], mntfsdSocket);
});

after(async () => {
  await stopDaemons();
  fs.rmSync(pinDir, { recursive: true, force: true });
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** The example as uid 1000 against the test daemons. */
function runExample(image: string): Promise<UserRun> {
  return runAsUser([process.execPath, example], {
    cwd: tmp,
    env: { ...process.env, IMAGE: image, USERDBD_SOCKET: userdbdSocket, MNTFSD_SOCKET: mntfsdSocket },
  });
}

test('README example: allocate a range, mount the image, see its files as root of the namespace', async (t) => {
  const r = await runExample(images.trusted);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^namespace 1000-example: root \(erofs\)$/m);
  for (const name of ['bin', 'etc', 'usr']) assert.match(r.stdout, new RegExp(`^d\\S+\\s+\\d+\\s+0\\s+0\\s+.* ${name}$`, 'm'), r.stdout);
});

test('README example: an image signed by an unknown key is refused with KeyNotFound', async (t) => {
  const r = await runExample(images.untrusted);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /^refused: io\.systemd\.MountFileSystem\.KeyNotFound$/m);
});
