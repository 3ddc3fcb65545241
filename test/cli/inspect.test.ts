// `mountgate inspect` as uid 1000: the verdict mntfsd would give an unprivileged caller, with
// the Varlink error name and exit status, for a trusted signed image, an image signed by an
// untrusted key, and an unsigned file system (also placed in a trusted directory).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { InspectReport } from '../../src/cli/inspect.js';
import { buildSignedImages } from '../support/images.js';
import { cliAsUser, cliJsonAsUser } from '../support/clients.js';
import type { UserRun } from '../support/processes.js';

let tmp = '';
let certs = '';
let trustedDir = '';
const img = { signed: '', untrusted: '', unsigned: '', unsignedTrusted: '' };

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-inspect-'));
  fs.chmodSync(tmp, 0o755); // uid 1000 reads the images and certificates
  const tree = path.join(tmp, 'tree');
  fs.mkdirSync(path.join(tree, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(tree, 'etc/hello'), 'hello\n');
  const signed = buildSignedImages(tree, tmp);
  certs = signed.certs;
  img.signed = signed.trusted;
  img.untrusted = signed.untrusted;
  img.unsigned = path.join(tmp, 'unsigned.erofs');
  execFileSync('mkfs.erofs', ['--quiet', img.unsigned, tree], { stdio: 'ignore' });
  trustedDir = path.join(tmp, 'machines');
  fs.mkdirSync(trustedDir);
  img.unsignedTrusted = path.join(trustedDir, 'unsigned.erofs');
  fs.copyFileSync(img.unsigned, img.unsignedTrusted);
  for (const f of Object.values(img)) fs.chmodSync(f, 0o644);
});

after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

const inspect = (args: string[]): Promise<UserRun> => cliAsUser('inspect', args);
const inspectJson = (args: string[]) => cliJsonAsUser<InspectReport>('inspect', args);

test('inspect: a signed image whose certificate is trusted is accepted (exit 0), with partition details', async (t) => {
  const { status, report } = await inspectJson([img.signed, '--verity-certs', certs, '--verify']);
  assert.equal(status, 0);
  assert.equal(report.accepted, true);
  assert.equal(report.error, null);
  assert.equal(report.partitionTable, true);
  assert.equal(report.trustedByLocation, false);
  assert.equal(report.imagePolicy, 'root=signed+absent:usr=signed+absent');
  assert.deepEqual(
    report.partitions.map((p) => [p.partitionNumber, p.designator]),
    [[1, 'root'], [2, 'root-verity'], [3, 'root-verity-sig']],
  );
  const root = report.partitions[0]!;
  assert.equal(root.fileSystemType, 'erofs');
  assert.equal(root.use, 'signed');
  assert.equal(root.verified, true);
  assert.equal(root.flags.readOnly, true);
  assert.match(root.uuid ?? '', /^[0-9a-f-]{36}$/);
  assert.ok(root.size > 0 && root.offset > 0);
  assert.equal(root.verity?.signature.status, 'trusted');
  assert.equal(root.verity?.signature.status === 'trusted' && root.verity.signature.certificate, path.join(certs, 'trusted.crt'));
  assert.match(root.verity?.rootHash ?? '', /^[0-9a-f]{64}$/);
  // Partition UUIDs are the halves of the root hash (UAPI.2).
  assert.equal(root.uuid?.replaceAll('-', ''), root.verity?.rootHash.slice(0, 32));

  const human = await inspect([img.signed, '--verity-certs', certs]);
  assert.equal(human.status, 0);
  assert.match(human.stdout, /^1 +root +erofs .* signed by CN=trusted/m);
  assert.match(human.stdout, /^Verdict: +accepted/m);
  assert.equal(human.stderr, ''); // no progress bar on a pipe
});

test('inspect: an image signed by an untrusted key is refused with KeyNotFound (exit 1)', async (t) => {
  const { status, report } = await inspectJson([img.untrusted, '--verity-certs', certs]);
  assert.equal(status, 1);
  assert.equal(report.accepted, false);
  assert.equal(report.error, 'io.systemd.MountFileSystem.KeyNotFound');
  assert.equal(report.partitions[0]!.verity?.signature.status, 'untrusted');
  assert.ok(report.partitions.every((p) => p.use === null));
  const human = await inspect([img.untrusted, '--verity-certs', certs]);
  assert.equal(human.status, 1);
  assert.match(human.stdout, /refused: io\.systemd\.MountFileSystem\.KeyNotFound/);
  assert.match(human.stdout, /signed, key not trusted/);
});

test('inspect: an unsigned file system is DeniedByImagePolicy, unless it lies in a trusted directory', async (t) => {
  const denied = await inspectJson([img.unsigned, '--verity-certs', certs]);
  assert.equal(denied.status, 1);
  assert.equal(denied.report.error, 'io.systemd.MountFileSystem.DeniedByImagePolicy');
  assert.match(denied.report.reason ?? '', /unprotected root/);
  assert.equal(denied.report.partitionTable, false);
  assert.deepEqual(denied.report.partitions.map((p) => [p.designator, p.partitionNumber, p.fileSystemType, p.verity]), [['root', null, 'erofs', null]]);

  const trusted = await inspectJson([img.unsignedTrusted, '--trusted-dir', trustedDir]);
  assert.equal(trusted.status, 0);
  assert.equal(trusted.report.trustedByLocation, true);
  assert.equal(trusted.report.imagePolicy, '*');
  assert.equal(trusted.report.partitions[0]!.use, 'unprotected');
});

test('inspect: usage errors exit 2, an unreadable image exits 1, --help exits 0', async (t) => {
  assert.equal((await inspect([])).status, 2);
  assert.equal((await inspect([img.signed, img.signed])).status, 2);
  assert.equal((await inspect(['--bogus', img.signed])).status, 2);
  const missing = await inspect([path.join(tmp, 'nothing.raw')]);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /ENOENT/);
  const help = await inspect(['--help']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^Usage: mountgate inspect IMAGE/);
});
