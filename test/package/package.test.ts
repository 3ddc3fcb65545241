// The package as a host gets it: `npm pack` of this checkout, `npm install -g` of the tarball
// into a clean prefix (offline: the dependencies travel inside the tarball), and then only the
// installed copy: its `mountgate` from another directory, both daemons socket-activated from it
// as the units start them, and `mountgate run` as uid 1000 through them, which needs the
// installed native addon, nshelper and (for userdbd) BPF object. No build tool runs on install.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { startDaemon, stopDaemons } from '../support/daemons.js';
import { buildSignedImages, type SignedImages } from '../support/images.js';
import { REPO, runAsUser } from '../support/processes.js';

const BUSYBOX = '/bin/busybox'; // Debian package busybox-static
/** What the installed package must hold for its bin, daemons and client to work. */
const SHIPPED = [
  'package.json',
  'dist/bundle/main.mjs',
  'dist/client/index.js',
  'dist/client/index.d.ts',
  'build/Release/mountgate.node',
  'build/Release/mountgate-nshelper',
  'build/bpf/userns-restrict.bpf.o',
  'units/mountgate-userdbd.service',
  'units/mountgate-userdbd.socket',
  'units/mountgate-mntfsd.service',
  'units/mountgate-mntfsd.socket',
  'node_modules/koffi/package.json',
  'node_modules/pino/package.json',
];

interface PackResult {
  filename: string;
  files: { path: string }[];
}

let tmp = '';
let tarball = '';
let packed: PackResult;
/** The clean prefix: PREFIX/bin/mountgate -> PREFIX/lib/node_modules/mountgate/dist/bundle/main.mjs. */
let prefix = '';
let installed = '';
let bin = '';
const pinDir = `/sys/fs/bpf/mountgate-test-package-${process.pid}`;

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-package-'));
  fs.chmodSync(tmp, 0o755); // uid 1000 runs the installed copy and reaches the sockets
  // npm pack runs prepack (scripts/check-built): it fails, naming the fix, if the build is stale.
  const out = execFileSync('npm', ['pack', '--json', '--pack-destination', tmp], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  [packed] = JSON.parse(out) as [PackResult];
  tarball = path.join(tmp, packed.filename);
  prefix = path.join(tmp, 'prefix');
  // From another directory, with no network: everything must come from the tarball.
  execFileSync('npm', ['install', '-g', '--prefix', prefix, '--offline', '--no-audit', '--no-fund', '--loglevel=error', tarball], {
    cwd: tmp,
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 120_000,
  });
  installed = path.join(prefix, 'lib/node_modules/mountgate');
  bin = path.join(prefix, 'bin/mountgate');
});

after(async () => {
  await stopDaemons();
  fs.rmSync(pinDir, { recursive: true, force: true });
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('npm pack: prebuilt addon, nshelper and BPF object, the bundle, the client and its dependencies; no sources or tests', () => {
  const files = new Set(packed.files.map((f) => f.path));
  for (const f of SHIPPED) assert.ok(files.has(f), `${f} missing from ${packed.filename}`);
  const unwanted = [...files].filter((f) => /^(src|test|bench|scripts)\//.test(f) || f.endsWith('.map') || f.startsWith('node_modules/.bin/'));
  assert.deepEqual(unwanted, []);
  // No development tool travels along.
  for (const dev of ['tsx', 'typescript', 'esbuild']) assert.ok(!files.has(`node_modules/${dev}/package.json`), dev);
});

test('npm install -g: bin/mountgate links to the bundle; no build ran, nothing refers to the checkout', () => {
  assert.equal(fs.realpathSync(bin), path.join(installed, 'dist/bundle/main.mjs'));
  for (const f of SHIPPED) assert.ok(fs.existsSync(path.join(installed, f)), `${f} not installed`);
  // Nothing was compiled on install: node-gyp would have left its Makefile.
  assert.equal(fs.existsSync(path.join(installed, 'build/Makefile')), false, 'the install ran node-gyp');
  const bundle = path.join(installed, 'dist/bundle');
  for (const f of fs.readdirSync(bundle)) assert.ok(!fs.readFileSync(path.join(bundle, f), 'utf8').includes(REPO), `${f} names ${REPO}`);
});

test("units: ExecStart= is the bin `npm install -g` puts in this host's global prefix", () => {
  const globalBin = path.join(execFileSync('npm', ['prefix', '-g'], { encoding: 'utf8' }).trim(), 'bin/mountgate');
  for (const name of ['mountgate-userdbd.service', 'mountgate-mntfsd.service']) {
    const m = /^ExecStart=(\S+) /m.exec(fs.readFileSync(path.join(installed, 'units', name), 'utf8'));
    assert.equal(m?.[1], globalBin, name);
  }
});

test('installed mountgate --help and status work from any directory, as root and as uid 1000', async () => {
  const help = execFileSync(bin, ['--help'], { cwd: '/', encoding: 'utf8' });
  assert.match(help, /^Usage: mountgate COMMAND/);
  const user = await runAsUser([bin, '--help'], { cwd: '/' });
  assert.equal(user.status, 0, user.stderr);
  assert.match(user.stdout, /^Usage: mountgate COMMAND/);
  // No daemon at these paths: status says so and exits 1, after loading all it needs.
  const none = ['--userdbd', path.join(tmp, 'none-userdbd.sock'), '--mntfsd', path.join(tmp, 'none-mntfsd.sock')];
  const status = await runAsUser([bin, 'status', ...none], { cwd: '/' });
  assert.equal(status.status, 1, status.stderr);
  assert.match(`${status.stdout}${status.stderr}`, /not reachable|unreachable/);
});

interface StatusReport {
  userdbd: { state: string; status?: { policy: { attached: boolean; reason?: string } } };
  mntfsd: { state: string };
}

test('installed daemons, socket-activated as the units run them: status, and `mountgate run` as uid 1000', async () => {
  // scripts/setup installs busybox-static; without it the image has no programs to run.
  assert.ok(fs.existsSync(BUSYBOX), `${BUSYBOX} missing: run ./scripts/setup`);
  const tree = path.join(tmp, 'tree');
  for (const d of ['bin', 'dev', 'proc', 'etc', 'usr', 'tmp']) fs.mkdirSync(path.join(tree, d), { recursive: true });
  fs.copyFileSync(BUSYBOX, path.join(tree, 'bin/busybox'));
  fs.chmodSync(path.join(tree, 'bin/busybox'), 0o755);
  fs.symlinkSync('busybox', path.join(tree, 'bin/cat'));
  fs.writeFileSync(path.join(tree, 'etc/hello'), 'hello from the installed package\n');
  const images: SignedImages = buildSignedImages(tree, tmp);

  const userdbd = path.join(tmp, 'userdbd.sock');
  const mntfsd = path.join(tmp, 'mntfsd.sock');
  const daemon = { bin, cwd: '/' };
  // --allow-without-policy only matters where the kernel refuses the BPF policy (this CI VM).
  await startDaemon(['userdbd', '--state-dir', path.join(tmp, 'state'), '--bpf-pin-dir', pinDir, '--allow-without-policy'], userdbd, {
    ...daemon,
    service: 'mountgate-userdbd.service',
    activate: { fdName: 'io.systemd.NamespaceResource' },
  });
  await startDaemon(['mntfsd', '--userdbd', userdbd, '--verity-certs', images.certs], mntfsd, {
    ...daemon,
    service: 'mountgate-mntfsd.service',
    activate: { fdName: 'io.systemd.MountFileSystem' },
  });
  for (const sock of [userdbd, mntfsd]) fs.chmodSync(sock, 0o666); // the socket units' SocketMode=

  const sockets = ['--userdbd', userdbd, '--mntfsd', mntfsd];
  const run = await runAsUser([bin, 'run', images.trusted, ...sockets, '--', '/bin/cat', '/etc/hello'], { cwd: '/' });
  assert.equal(run.status, 0, run.stderr);
  assert.equal(run.stdout, 'hello from the installed package\n');

  const status = await runAsUser([bin, 'status', ...sockets, '--json'], { cwd: '/' });
  assert.equal(status.status, 0, status.stderr);
  const report = JSON.parse(status.stdout) as StatusReport;
  assert.equal(report.userdbd.state, 'ok');
  assert.equal(report.mntfsd.state, 'ok');
  // Attached, or refused by this kernel: never because the installed object was not found.
  const policy = report.userdbd.status?.policy;
  assert.ok(policy, status.stdout);
  if (!policy.attached) {
    assert.doesNotMatch(policy.reason ?? '', /ENOENT|No such file/, 'the BPF object was not found');
    for (const object of (policy.reason ?? '').match(/\/\S+\.bpf\.o/g) ?? []) assert.equal(object, path.join(installed, 'build/bpf/userns-restrict.bpf.o'));
  }
});
