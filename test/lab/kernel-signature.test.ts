// The kernel checks verity signatures itself where it trusts the signer (this runs in the
// kernel lab booted under UEFI firmware, scripts/lab LAB_FIRMWARE=uefi): the firmware's `db`
// holds the lab's test certificate (scripts/build-lab-firmware), the kernel loads it into its
// .platform keyring at boot (load_uefi_certs() in security/integrity/platform_certs/load_uefi.c)
// and dm-verity trusts that keyring for root_hash_sig_key_desc (verity_verify_root_hash() in
// drivers/md/dm-verity-verify-sig.c). So an image signed with the lab key gets a verity table
// the kernel only loads after checking its signature; an image signed by a key only mntfsd's
// verity.d trusts still mounts, with an unsigned table (dm-verity.ts loadSigned()); and the
// kernel refuses a signature that does not match the root hash, so its check is a real one.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { dmCreate, dmLoadTable, dmRemove, DM_READONLY_FLAG } from '../../src/sys/dm.js';
import { isSysError } from '../../src/sys/errors.js';
import { addUserKey, invalidateKey } from '../../src/sys/keyring.js';
import { e2eClientAs1000 } from '../support/clients.js';
import { type Daemon, startDaemon } from '../support/daemons.js';
import { repartImage, sampleTree, testDir, testKey } from '../support/images.js';
import { REPO } from '../support/processes.js';
import { mappedHolder1000, type UsernsHolder } from '../support/userns.js';
import { tearDownFixture } from '../support/fixture.js';
import { waitFor } from '../support/wait.js';

/** Set by scripts/lab when the VM booted under UEFI firmware with the lab certificate in `db`. */
const LAB_KEY = process.env.MOUNTGATE_LAB_PLATFORM_KEY;
const LAB_CERT = process.env.MOUNTGATE_LAB_PLATFORM_CERT;
const NO_FIRMWARE = !(LAB_KEY && LAB_CERT) && 'the lab booted without UEFI firmware (LAB_FIRMWARE=bios): the kernel has no lab certificate';

const dir = testDir('mg-lab-ksig-');
const msock = path.join(dir, 'mntfsd.sock');
const certs = path.join(dir, 'certs');
const PREFIX = 'mountgate-verity-';
/** Host uid that the holder namespace's uid 0 maps to. */
const BASE = 3_000_000;
// include/uapi/asm-generic/errno.h; Node's os.constants.errno has neither.
const ENOKEY = 126;
const EKEYREJECTED = 129;
const CHECKED = 'the kernel checked the root hash signature too';
const NOT_CHECKED = 'the kernel could not check the root hash signature (verified in userspace)';

// Daemon logs at info: the lines saying whether the kernel checked the signature are what is checked.
process.env.MOUNTGATE_LOG_LEVEL = 'info';

let mntfsd: Daemon;
let holder: UsernsHolder;
let labImage: string;
let otherImage: string;

interface MountReport {
  partitions?: Array<{ designator: string; fileSystemType: string; host: { uid: number; content: string } | null }>;
  error?: string;
}

interface Table {
  name: string;
  rootHash: string;
  /** `0 <sectors>`: where the target sits. */
  sectors: number;
  /** The verity target's ten positional arguments (version … salt). */
  positional: string;
  /** Its optional arguments, after their count. */
  optional: string[];
}

/** Names of the mountgate-verity-* devices the kernel lists in sysfs. */
function ourDevices(): string[] {
  return fs
    .readdirSync('/sys/block')
    .filter((d) => d.startsWith('dm-'))
    .map((d) => fs.readFileSync(`/sys/block/${d}/dm/name`, 'utf8').trim())
    .filter((n) => n.startsWith(PREFIX));
}

/** The device's live table as the kernel reports it (dmsetup table: DM_TABLE_STATUS). */
function table(name: string): Table {
  const line = execFileSync('dmsetup', ['table', name], { encoding: 'utf8' }).trim();
  const f = line.split(/\s+/);
  assert.equal(f[2], 'verity', line);
  const count = f[13] === undefined ? 0 : Number(f[13]);
  return { name, rootHash: f[11]!, sectors: Number(f[1]), positional: f.slice(3, 13).join(' '), optional: f.slice(14, 14 + count) };
}

/** PKCS#7 (detached, DER, no certificates or attributes) of TEXT by KEY, as systemd-repart and `mountgate build` sign root hashes. */
function sign(text: string, key: string, cert: string): Buffer {
  return execFileSync('openssl', ['smime', '-sign', '-binary', '-noattr', '-nocerts', '-inkey', key, '-signer', cert, '-outform', 'der'], { input: text });
}

/** MountImage of IMAGE as uid 1000 into the holder's namespace; returns the device it made. */
async function mountAs1000(image: string): Promise<string> {
  const before = new Set(ourDevices());
  const r = await e2eClientAs1000<MountReport>(['mount', msock, image, String(holder.pid)]);
  assert.equal(r.error, undefined, JSON.stringify(r));
  const root = r.partitions?.find((p) => p.designator === 'root');
  assert.equal(root?.host?.content, 'hello\n', JSON.stringify(r));
  assert.equal(root?.host?.uid, BASE, JSON.stringify(r));
  const made = ourDevices().filter((n) => !before.has(n));
  assert.equal(made.length, 1, `one new dm-verity device: ${made.join()}`);
  return made[0]!;
}

/** Waits for mntfsd's log (pino writes asynchronously) to have a line for DEVICE saying MSG; returns it. */
async function loggedFor(device: string, msg: string): Promise<Record<string, unknown>> {
  const find = (): Record<string, unknown> | undefined =>
    mntfsd
      .stderr()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((o) => o.device === device && o.msg === msg);
  try {
    await waitFor(() => find() !== undefined, msg, 10_000);
  } catch {
    assert.fail(`mntfsd logged no "${msg}" for ${device}: ${mntfsd.stderr().slice(-2000)}`);
  }
  return find()!;
}

/**
 * Loads TABLE's verity target (same devices, same root hash) into a fresh device with SIGNATURE
 * under root_hash_sig_key_desc, as loadSigned() does; returns the errno the kernel refused it
 * with, or null when it took it. The device goes either way.
 */
function loadWithSignature(t: Table, signature: Buffer): number | null {
  const name = `mg-lab-ksig-${process.pid}`;
  const description = `mg-lab-ksig:${process.pid}`;
  const key = addUserKey(description, signature);
  let created = false;
  try {
    dmCreate(name);
    created = true;
    dmLoadTable(name, [{ start: 0, length: t.sectors, type: 'verity', params: `${t.positional} 2 root_hash_sig_key_desc ${description}` }], DM_READONLY_FLAG);
    return null;
  } catch (err) {
    if (isSysError(err)) return err.errno;
    throw err;
  } finally {
    invalidateKey(key);
    if (created) dmRemove(name);
  }
}

before(async () => {
  if (NO_FIRMWARE) return;
  const other = testKey();
  fs.mkdirSync(certs);
  // mntfsd trusts both in userspace; only the lab certificate is in the kernel's keyrings.
  fs.copyFileSync(LAB_CERT!, path.join(certs, 'lab.crt'));
  fs.copyFileSync(other.cert, path.join(certs, 'other.crt'));
  labImage = path.join(dir, 'lab-signed.raw');
  execFileSync(process.execPath, [path.join(REPO, 'dist/bundle/main.mjs'), 'build', sampleTree(), labImage, '--key', LAB_KEY!, '--cert', LAB_CERT!], { stdio: ['ignore', 'ignore', 'pipe'] });
  otherImage = path.join(dir, 'other-signed.raw');
  fs.copyFileSync(repartImage('squashfs').path, otherImage);
  for (const img of [labImage, otherImage]) fs.chmodSync(img, 0o644);
  mntfsd = await startDaemon(['mntfsd', '--listen', msock, '--userdbd', 'none', '--verity-certs', certs], msock, { shipped: true });
  holder = await mappedHolder1000(BASE);
});

after(() => tearDownFixture(holder, dir));

describe('the kernel checks verity signatures it can (lab under UEFI firmware)', { skip: NO_FIRMWARE }, () => {
  let labTable: Table;

  it("the lab certificate is in the kernel's .platform keyring, loaded from the firmware's db", () => {
    const keys = fs.readFileSync('/proc/keys', 'utf8');
    assert.match(keys, / keyring +\.platform: [1-9]/, `no populated .platform keyring in /proc/keys:\n${keys}`);
    // x509_key_preparse() names the key "<subject CN>: <subject key identifier in hex>".
    const skid = execFileSync('openssl', ['x509', '-in', LAB_CERT!, '-noout', '-ext', 'subjectKeyIdentifier'], { encoding: 'utf8' })
      .split('\n')[1]!
      .trim()
      .replaceAll(':', '')
      .toLowerCase();
    const cn = /CN ?= ?(.+)$/.exec(execFileSync('openssl', ['x509', '-in', LAB_CERT!, '-noout', '-subject'], { encoding: 'utf8' }).trim())![1]!;
    assert.ok(keys.includes(` asymmetri ${cn}: ${skid}: X509.`), `the lab certificate (${cn}: ${skid}) is not among the kernel's keys:\n${keys}`);
  });

  it('an image signed with the lab key: its verity table carries the signature, which the kernel checked', async () => {
    const device = await mountAs1000(labImage);
    labTable = table(device);
    assert.equal(labTable.optional[0], 'root_hash_sig_key_desc', `${device}: ${JSON.stringify(labTable)}`);
    assert.match(labTable.optional[1] ?? '', new RegExp(`^mountgate:verity:${labTable.rootHash}:\\d+$`));
    await loggedFor(device, CHECKED);
    // The key held the signature only while the table loaded.
    await waitFor(() => !fs.readFileSync('/proc/keys', 'utf8').includes('mountgate:verity:'), 'the signature key to go', 10_000);
  });

  it('an image signed by a key only verity.d trusts still mounts, with an unsigned table (the kernel knows no such key)', async () => {
    const device = await mountAs1000(otherImage);
    assert.deepEqual(table(device).optional, [], 'no signature on the table');
    // Not even offered: /proc/keys lists no key for that signer (the next test shows the kernel
    // would answer ENOKEY).
    const line = await loggedFor(device, NOT_CHECKED);
    assert.equal(line.why, 'no kernel key for the signer', JSON.stringify(line));
  });

  it('the kernel refuses a signature that does not match the root hash, and one by a key it does not trust', async () => {
    assert.ok(labTable, 'the lab-signed image mounted');
    const other = testKey();
    const elsewhere = 'ab'.repeat(32);
    // The control: the lab key's signature of this root hash loads.
    assert.equal(loadWithSignature(labTable, sign(labTable.rootHash, LAB_KEY!, LAB_CERT!)), null);
    // The lab key's signature of another root hash: the key is trusted, the signature is wrong.
    assert.equal(loadWithSignature(labTable, sign(elsewhere, LAB_KEY!, LAB_CERT!)), EKEYREJECTED);
    // The right root hash signed by a key the kernel does not know.
    assert.equal(loadWithSignature(labTable, sign(labTable.rootHash, other.key, other.cert)), ENOKEY);
    // Nothing of it is left (invalidated keys go with the key garbage collector's next pass).
    await waitFor(() => !fs.readFileSync('/proc/keys', 'utf8').includes('mg-lab-ksig:'), 'no test key left', 10_000);
    assert.ok(!fs.readdirSync('/sys/block').some((d) => d.startsWith('dm-') && fs.readFileSync(`/sys/block/${d}/dm/name`, 'utf8').startsWith('mg-lab-ksig-')));
  });
});
