// Kernel dm-verity for verified partitions, where device-mapper and its verity target exist:
// the caller's image is read through two read-only loop devices (data and hash partitions)
// and a verity device that checks every block against the root hash as it is read, so a
// MountImage costs the same at any image size and the data stays in the page cache only.
// Without device-mapper, mount-image.ts uses the verified copy instead (verity.ts).
//
// Devices are named mountgate-verity-<root hash>-<n>: the prefix is how start-up recognises
// devices a killed daemon left behind. Lifetime is the kernel's business once a base mount
// holds the device: it is marked for deferred removal (DM_DEFERRED_REMOVE), and its loop
// devices are autoclear, so the last unmount removes the device and then the loops, whether or
// not mntfsd is still running.
import fs from 'node:fs';
import type { X509Certificate } from 'node:crypto';
import type { Logger } from 'pino';
import { isSysError } from '../sys/errors.js';
import { dmAvailable, dmCreate, dmDevicePath, dmListDevices, dmLoadTable, dmRemove, dmResume, dmSlaves, dmTargetTypes, DM_READONLY_FLAG, type DmDevice } from '../sys/dm.js';
import { addUserKey, invalidateKey } from '../sys/keyring.js';
import { attachLoop, loopClearFd, type LoopDevice } from '../sys/loop.js';
import { detectFileSystem } from './ddi/dissect.js';
import { kernelKeyId } from './pkcs7.js';
import { incompatible, verityFailure } from './errors.js';
import { readVerityLayout, type Extent, type VerityLayout } from './verity.js';

const DEVICE_PREFIX = 'mountgate-verity-';
/** Devices per root hash that may exist at once (callers still holding an evicted one's mounts). */
const MAX_INDEX = 1024;
const SECTOR = 512;

/**
 * Whether this kernel can do dm-verity: /dev/mapper/control answers, and the verity target is
 * loaded or loads on demand. The kernel loads a target's module when a table names it
 * (dm_get_target_type() in drivers/md/dm-target.c calls request_module("dm-verity")), which
 * works where mntfsd itself could not even read /lib/modules (the unit's ProtectKernelModules=):
 * a throwaway device is given a verity table the target must refuse, then removed.
 */
export function dmVerityAvailable(): boolean {
  if (!dmAvailable()) return false;
  if (dmTargetTypes().includes('verity')) return true;
  // Under the prefix, so start-up cleans it up should the daemon die right here.
  const probe = `${DEVICE_PREFIX}probe-${process.pid}`;
  try {
    dmCreate(probe);
  } catch {
    return false;
  }
  try {
    dmLoadTable(probe, [{ start: 0, length: 8, type: 'verity', params: '' }], DM_READONLY_FLAG);
  } catch {
    // EINVAL from the target's constructor (no arguments), or no such target.
  } finally {
    removeQuietly(probe);
  }
  return dmTargetTypes().includes('verity');
}

/** A root hash signature verified in userspace (mount-image.ts), and the certificate that made it. */
export interface RootHashSignature {
  der: Buffer;
  signer: X509Certificate;
}

export interface VerityDevice {
  readonly name: string;
  /** /dev/dm-N: what the file system is mounted from. */
  readonly devPath: string;
  readonly layout: VerityLayout;
  /** File system type probed on the verity device (verified bytes). */
  readonly fileSystemType: string;
  /** Once a mount holds the device: let the kernel remove it (and its loops) after the last unmount. */
  release(): void;
  /** Before anything holds it: remove the device now. */
  destroy(): void;
}

/** `major:minor` of an open block device, the form a dm table names devices by. */
function majorMinor(fd: number): string {
  const rdev = fs.fstatSync(fd).rdev;
  // glibc's dev_t layout (gnu_dev_major/gnu_dev_minor).
  const major = ((rdev >>> 8) & 0xfff) | Math.floor(rdev / 2 ** 32) & ~0xfff;
  const minor = (rdev & 0xff) | ((rdev >>> 12) & ~0xff & 0xfffff);
  return `${major}:${minor}`;
}

/**
 * The verity target's table line (the kernel's Documentation/admin-guide/device-mapper/verity.rst):
 * <version> <dev> <hash_dev> <data_block_size> <hash_block_size> <num_data_blocks>
 * <hash_start_block> <algorithm> <digest> <salt>. Version 1 is hash type 1 (salt first), the
 * only one verity.ts accepts; hash_start_block skips the cryptsetup superblock, as
 * cryptsetup's VERITY_activate() does. No optional arguments: a block that does not match
 * fails its read with EIO (the default mode), never restarts or panics the machine.
 */
function verityTable(layout: VerityLayout, dataDev: string, hashDev: string, rootHash: string): string {
  const sb = layout.superblock;
  const salt = sb.salt.length > 0 ? sb.salt.toString('hex') : '-';
  const hashStart = layout.geometry.hashAreaOffset / sb.hashBlockSize;
  return `1 ${dataDev} ${hashDev} ${sb.dataBlockSize} ${sb.hashBlockSize} ${sb.dataBlocks} ${hashStart} ${sb.algorithm} ${rootHash} ${salt}`;
}

/** Creates the first free mountgate-verity-<rootHash>-<n>. */
function createNamed(rootHash: string): DmDevice {
  for (let n = 0; n < MAX_INDEX; n++) {
    try {
      return dmCreate(`${DEVICE_PREFIX}${rootHash}-${n}`);
    } catch (err) {
      if (!isSysError(err, 'EBUSY')) throw err;
    }
  }
  throw verityFailure(`${MAX_INDEX} dm-verity devices for ${rootHash} exist`);
}

/**
 * Sets up a dm-verity device for the data partition `data` of `imageFd` with its hash tree in
 * `hash`, and probes the file system type on it. The root hash must already be trusted (the
 * signature checked, mount-image.ts): the device only guarantees that what is read matches it.
 * On failure nothing is left: the device is removed, and the loop devices, autoclear, go with
 * the last close of their fds.
 */
export function setupVerityDevice(imageFd: number, data: Extent, hash: Extent, rootHash: string, log?: Logger, signature?: RootHashSignature): VerityDevice {
  if (!/^[0-9a-f]{64}$/.test(rootHash)) throw verityFailure('root hash must be 32 bytes of lowercase hex');
  const layout = readVerityLayout(imageFd, data, hash);
  if (layout.superblock.dataBlockSize < SECTOR) throw incompatible('Verity data block size below 512 bytes');
  const loops: LoopDevice[] = [];
  let dev: DmDevice | null = null;
  try {
    // Read-only loop devices over exactly the two partitions; the data one ends where the tree's
    // data ends. Autoclear: detached when the last opener (our fd now, the verity table later) closes.
    loops.push(attachLoop(imageFd, { offset: data.offset, size: layout.dataBytes, readOnly: true, autoclear: true }));
    loops.push(attachLoop(imageFd, { offset: hash.offset, size: hash.size, readOnly: true, autoclear: true }));
    dev = createNamed(rootHash);
    const table = verityTable(layout, majorMinor(loops[0]!.fd), majorMinor(loops[1]!.fd), rootHash);
    const load = (params: string): void =>
      // Read-only table: the loops are read-only, and the device never writes.
      dmLoadTable(dev!.name, [{ start: 0, length: layout.dataBytes / SECTOR, type: 'verity', params }], DM_READONLY_FLAG);
    if (!(signature && kernelMayCheck(dev.name, signature.signer, log) && loadSigned(dev.name, table, rootHash, signature.der, load, log))) load(table);
    dmResume(dev.name);
  } catch (err) {
    if (dev) removeQuietly(dev.name, log);
    throw err;
  } finally {
    // The table holds the loops now (or nothing does, and autoclear detaches them).
    for (const l of loops) fs.closeSync(l.fd);
  }
  const name = dev.name;
  const devPath = dmDevicePath(dev);
  try {
    const fileSystemType = probe(devPath, dev, layout.dataBytes);
    log?.info({ device: name, devPath, verity: 'dm-verity' }, 'dm-verity device set up');
    return {
      name,
      devPath,
      layout,
      fileSystemType,
      release: () => dmRemove(name, { deferred: true }),
      destroy: () => removeQuietly(name, log),
    };
  } catch (err) {
    removeQuietly(name, log);
    throw err;
  }
}

/**
 * Lets the kernel check the signature as well, where it can: the PKCS#7 signature goes into a
 * `user` key named on the table (root_hash_sig_key_desc, verity.rst), and the kernel verifies it
 * against its own keyrings (CONFIG_DM_VERITY_VERIFY_ROOTHASH_SIG: the builtin and secondary
 * trusted keys, and the platform keyring, i.e. UEFI db, with its _PLATFORM_KEYRING option).
 * Only offered where kernelMayCheck() finds a key for the signer; the kernel may still refuse
 * (EKEYREJECTED, ENOKEY, EINVAL without the option): trust was already decided in userspace,
 * and the table is then loaded without it, as systemd's do_crypt_activate_verity() falls back
 * to crypt_activate_by_volume_key().
 */
function loadSigned(name: string, table: string, rootHash: string, signature: Buffer, load: (params: string) => void, log?: Logger): boolean {
  const description = `mountgate:verity:${rootHash}:${process.pid}`;
  let key: number | null = null;
  try {
    key = addUserKey(description, signature);
    load(`${table} 2 root_hash_sig_key_desc ${description}`);
    log?.info({ device: name }, 'the kernel checked the root hash signature too');
    return true;
  } catch (err) {
    log?.info({ device: name, code: (err as { code?: unknown }).code }, NOT_CHECKED);
    return false;
  } finally {
    // The verity target reads the key while the table is loaded, not later.
    if (key !== null) invalidateKey(key);
  }
}

const NOT_CHECKED = 'the kernel could not check the root hash signature (verified in userspace)';

/**
 * Whether a key the kernel could check the signature with is loaded: asymmetric keys are listed
 * in /proc/keys as "<subject>: <hex id>", the id being the certificate's subject key identifier,
 * else its serial number (x509_key_preparse() in crypto/asymmetric_keys/x509_public_key.c). Without
 * one, the signed table would only be refused (a device-mapper round trip per cold mount for
 * nothing). A key we cannot see is not used by the kernel for us either way: the fallback stays.
 */
function kernelMayCheck(name: string, signer: X509Certificate, log?: Logger): boolean {
  let keys: string;
  try {
    keys = fs.readFileSync('/proc/keys', 'utf8');
  } catch {
    return true; // cannot tell: let the kernel decide
  }
  const id = `: ${kernelKeyId(signer)}:`;
  if (keys.split('\n').some((line) => / asymmetri /.test(line) && line.includes(id))) return true;
  log?.info({ device: name, why: 'no kernel key for the signer' }, NOT_CHECKED);
  return false;
}

/** Probes the file system on the verity device: these reads are already checked by the kernel. */
function probe(devPath: string, dev: DmDevice, size: number): string {
  const fd = fs.openSync(devPath, fs.constants.O_RDONLY);
  try {
    // devtmpfs names the node after the minor; make sure it is this device.
    const st = fs.fstatSync(fd);
    if (!st.isBlockDevice() || majorMinor(fd) !== `${dev.major}:${dev.minor}`) throw new Error(`${devPath} is not ${dev.name}`);
    let type: string | null;
    try {
      type = detectFileSystem(fd, 0, size);
    } catch (err) {
      if ((err as { code?: unknown }).code === 'EIO') throw verityFailure('file system superblock does not match the hash tree');
      throw err;
    }
    if (!type) throw incompatible('no known file system on the verity device');
    return type;
  } finally {
    fs.closeSync(fd);
  }
}

function removeQuietly(name: string, log?: Logger): void {
  try {
    // Deferred: removed at once when unused, else when the last opener goes.
    dmRemove(name, { deferred: true });
  } catch (err) {
    log?.warn({ err, device: name }, 'could not remove dm-verity device');
  }
}

/**
 * Start-up: devices named mountgate-verity-* are left over from a daemon that was killed (a
 * device it finished setting up removes itself once unused; one it was setting up does not).
 * Each is marked for deferred removal, so a device still holding callers' mounts stays until
 * they go and is never pulled from under them; its loop devices are marked autoclear first
 * (LOOP_CLR_FD on a loop that is still open does just that, loop_clr_fd() in
 * drivers/block/loop.c), while the device still holds them, so no loop that somebody else may
 * have bound meanwhile is touched. Returns the names handled.
 */
export function cleanStaleVerityDevices(log?: Logger): string[] {
  const done: string[] = [];
  for (const dev of dmListDevices()) {
    if (!dev.name.startsWith(DEVICE_PREFIX)) continue;
    for (const slave of dmSlaves(dev)) {
      if (!/^loop\d+$/.test(slave)) continue;
      let fd: number;
      try {
        fd = fs.openSync(`/dev/${slave}`, fs.constants.O_RDONLY);
      } catch {
        continue;
      }
      try {
        // Still held by this device, so still the loop it was set up with.
        if (dmSlaves(dev).includes(slave)) loopClearFd(fd);
      } catch (err) {
        if (!isSysError(err, 'ENXIO')) log?.warn({ err, loop: slave }, 'could not mark a stale loop device autoclear');
      } finally {
        fs.closeSync(fd);
      }
    }
    try {
      dmRemove(dev.name, { deferred: true });
      done.push(dev.name);
    } catch (err) {
      if (!isSysError(err, 'ENXIO')) log?.warn({ err, device: dev.name }, 'could not remove a stale dm-verity device');
    }
  }
  if (done.length > 0) log?.info({ devices: done }, 'removed stale dm-verity devices (deferred while still mounted)');
  return done;
}
