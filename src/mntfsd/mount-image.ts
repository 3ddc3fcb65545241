// io.systemd.MountFileSystem.MountImage: validate the request and its fds, ask admission.ts
// whether and how the image is taken (trust, policy, dissection, signatures), then carry out
// its plan: verify (through kernel dm-verity, or into private storage), mount, idmap to the
// caller's namespace, hand back mount fds.
import * as fs from 'node:fs';
import type { Logger } from 'pino';
import { ClientDisconnected, invalidParameter, isErrnoError, permissionDenied, toVarlinkError } from '../ipc/errors.js';
import type { MethodHandler } from '../ipc/interfaces/define.js';
import type { Methods, MountImageParameters, PartitionDesignator } from '../ipc/interfaces/io.systemd.MountFileSystem.js';
import type { CallContext } from '../ipc/server.js';
import { MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID } from '../sys/mount-api.js';
import { userNamespaceInfo } from '../sys/nsfs.js';
import { fdFlags, fdStat, NSFS_MAGIC, PIDFS_MAGIC, PROC_SUPER_MAGIC, statfsType } from '../sys/stat.js';
import { admitImage, type PlannedMount } from './admission.js';
import { detectFileSystem, type DissectedPartition } from './ddi/dissect.js';
import type { Designator } from './ddi/dps.js';
import { setupVerityDevice, type RootHashSignature } from './dm-verity.js';
import { MountFsError } from './errors.js';
import { formatImagePolicy } from './image-policy.js';
import { mountBlockDevice, mountForCaller, mountPartition, releasePartitionMount, type PartitionMount } from './mount.js';
import type { CachedMount, MountCache, VerityBackend } from './mount-cache.js';
import { verifyPartition, type Extent } from './verity.js';

export interface MountImageConfig {
  certificateDirectories: readonly string[];
  trustedDirectories: readonly string[];
  cache: MountCache;
  /** How verified partitions are served: kernel dm-verity, or the userspace verified copy. */
  verity: VerityBackend;
  /** Registers returned mounts with userdbd; undefined when no userdbd is configured. */
  registerMount?: (usernsFd: number, mountFd: number) => Promise<void>;
  log: Logger;
  /** Counts mount fds handed out (for GetStatus). */
  counters: { mountsHandedOut: number };
}

// Flags a caller's image fd may carry besides its access mode (systemd: fd_verify_safe_flags).
const O_NONBLOCK = 0o4000;
const O_LARGEFILE = 0o100000;
const O_NOFOLLOW = 0o400000;
const O_NOATIME = 0o1000000;
const O_CLOEXEC = 0o2000000;
const O_ACCMODE = 0o3;
const SAFE_FLAGS = O_ACCMODE | O_NONBLOCK | O_LARGEFILE | O_NOFOLLOW | O_NOATIME | O_CLOEXEC;

const PSEUDO_FILE_SYSTEMS = new Set([NSFS_MAGIC, PROC_SUPER_MAGIC, PIDFS_MAGIC]);

// Where each partition is meant to go (systemd's partition_mountpoint_table); the reply's
// PartitionInfo.mountPoint.
const MOUNT_POINTS: Partial<Record<string, readonly string[]>> = {
  root: ['/'],
  usr: ['/usr'],
  home: ['/home'],
  srv: ['/srv'],
  esp: ['/efi', '/boot'],
  xbootldr: ['/boot'],
  tmp: ['/var/tmp'],
  var: ['/var'],
};

const HEX = /^(?:[0-9a-fA-F]{2})*$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * mountOptions: refused unless empty. systemd's vl_method_mount_image (mountwork.c) hands the
 * options to dissect_loop_device(), and since options can defeat ACLs or security labels it then
 * skips the trusted-directory check and requires polkit's mount-untrusted-image(-privately)
 * action, which nothing grants by default. mountgate has no polkit (an unprivileged caller never
 * gets more than the untrusted policy), and mount.ts creates every superblock with fixed options,
 * so even root cannot have them honoured: the call is refused, naming the parameter, rather
 * than mounted without what was asked for. An empty map asks for nothing.
 */
function refuseMountOptions(p: MountImageParameters): void {
  if (p.mountOptions && Object.keys(p.mountOptions).length > 0) throw invalidParameter('mountOptions');
}

/**
 * verityDataFileDescriptor / verityRootHash / verityRootHashSignature: external Verity data for
 * a bare file system image. Malformed combinations get mountwork.c's answers, in its order: the
 * hash must be hex and the signature base64 (its json_dispatch_unhex_iovec/unbase64_iovec; an
 * empty string means not given), data fd and root hash come together or not at all
 * (InvalidParameter verityDataFileDescriptor), a signature needs a root hash (InvalidParameter
 * verityRootHashSignature). A consistent set is refused as InvalidParameter
 * verityDataFileDescriptor: verity.ts reads the hash tree from the image itself, and verifying
 * against a second, caller-supplied fd is not implemented.
 */
function refuseExternalVerity(p: MountImageParameters): void {
  const rootHash = p.verityRootHash ?? '';
  const signature = (p.verityRootHashSignature ?? '').replace(/\s+/g, '');
  if (!HEX.test(rootHash)) throw invalidParameter('verityRootHash');
  if (!BASE64.test(signature)) throw invalidParameter('verityRootHashSignature');
  const hasData = p.verityDataFileDescriptor !== undefined && p.verityDataFileDescriptor !== null;
  if (hasData !== (rootHash !== '')) throw invalidParameter('verityDataFileDescriptor');
  if (signature !== '' && rootHash === '') throw invalidParameter('verityRootHashSignature');
  if (hasData) throw invalidParameter('verityDataFileDescriptor');
}

/**
 * The caller's target user namespace from userNamespaceFileDescriptor, or null for the host's id
 * space (none given, or the daemon's own namespace, as in systemd's validate_userns()). Anything
 * but a user namespace is InvalidParameter. A caller other than root may only name a namespace
 * it owns: systemd checks no owner, but a mount registered with someone else's namespace would
 * be handed to a namespace the caller has no say over.
 */
export function callerUserNamespace(ctx: CallContext, index: number | null | undefined): number | null {
  if (index === undefined || index === null) return null;
  const fd = ctx.fd(index, 'userNamespaceFileDescriptor');
  let info;
  try {
    info = userNamespaceInfo(fd);
  } catch {
    throw invalidParameter('userNamespaceFileDescriptor');
  }
  if (info.inode === fs.statSync('/proc/self/ns/user').ino) return null;
  if (ctx.peer.uid !== 0 && info.ownerUid !== ctx.peer.uid) throw permissionDenied();
  return fd;
}

/**
 * Mounts in the host's id space for callers other than root. systemd asks polkit
 * (io.systemd.mount-file-system.mount-image, no default: without polkit every such call is
 * PermissionDenied; with its stock policy active local sessions may mount what the untrusted
 * policy lets through). mountgate has no polkit and allows what cannot raise anyone's
 * privileges: only partitions whose Verity signature a trusted certificate vouches for (the
 * untrusted policy, even for images in trusted directories: location says who placed a file,
 * not what a kernel file system driver may safely parse without verification), always
 * read-only (readOnly false is PermissionDenied rather than quietly dropped), and nosuid and
 * nodev on top of the partition's own attributes: the on-disk owners are host ids here, so a
 * setuid-root program or a device node in the image would otherwise be usable through
 * /proc/self/fd/N by whoever holds the mount fd.
 */
const HOST_ID_SPACE_ATTRS = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;

const mountPoint = (d: Designator): string[] | null => {
  const at = MOUNT_POINTS[d];
  return at ? [...at] : null;
};

/** The IDL's enum spells designators with underscores (root_verity), systemd's strings with dashes. */
const wireDesignator = (d: Designator): PartitionDesignator => d.replaceAll('-', '_') as PartitionDesignator;

export function mountImageHandler(cfg: MountImageConfig): MethodHandler<Methods['MountImage']> {
  return async (params, ctx) => {
    refuseMountOptions(params);
    refuseExternalVerity(params);
    // relaxExtensionReleaseChecks (systemd 262's clients always send it) only loosens how a
    // sysext/confext image's extension-release file must match the host; mountgate checks no
    // extension-release file, so there is nothing to relax. veritySharing (also always sent)
    // asks to reuse a dm-verity device set up for the same root hash; mountgate always shares
    // what is safe to share (sharedDeviceKey(): dm-verity devices per image file, verified copies
    // per root hash), and not sharing would only cost a second set-up of the same bytes. Both
    // are accepted either way.
    const imageFd = ctx.fd(params.imageFileDescriptor, 'imageFileDescriptor');
    const flags = fdFlags(imageFd);
    if (flags.path || !flags.readable || (flags.flags & ~SAFE_FLAGS) !== 0) {
      throw new MountFsError('BadFileDescriptorFlags', 'image fd flags', { parameter: 'imageFileDescriptor' });
    }
    const st = fdStat(imageFd);
    if (!st.isFile && !st.isBlockDevice) throw invalidParameter('imageFileDescriptor');
    // nsfs, procfs and pidfs inodes look like regular files but are no images.
    if (st.isFile && PSEUDO_FILE_SYSTEMS.has(statfsType(imageFd))) throw invalidParameter('imageFileDescriptor');

    const usernsFd = callerUserNamespace(ctx, params.userNamespaceFileDescriptor);
    // An unprivileged caller without a namespace of its own asks for a mount in the host's id
    // space (systemd 262's `systemd-dissect --copy-from/--copy-to/--with`): HOST_ID_SPACE_ATTRS.
    const hostIdSpace = usernsFd === null && ctx.peer.uid !== 0;
    if (hostIdSpace && params.readOnly === false) throw permissionDenied();

    // A malformed or impossible caller imagePolicy throws here (ImagePolicyError, a VarlinkError).
    const plan = await admitImage(imageFd, {
      trustedDirectories: cfg.trustedDirectories,
      certificateDirectories: cfg.certificateDirectories,
      hostIdSpace,
      callerPolicy: params.imagePolicy ?? undefined,
    });
    if (!plan.admitted) throw plan.refusal;
    const { image, mounts: planned } = plan;
    // Untrusted images are always read-only; so is an image the caller could only read.
    const readOnly = params.readOnly === true || !plan.trust.trusted || !flags.writable;

    try {
      const extraAttrs = hostIdSpace ? HOST_ID_SPACE_ATTRS : 0;
      const mounts = await mountPlanned(cfg, imageFd, planned, readOnly, usernsFd, ctx, extraAttrs);
      cfg.counters.mountsHandedOut += mounts.length;
      return {
        parameters: {
          partitions: mounts.map((m, i) => ({
            designator: wireDesignator(m.partition.designator),
            writable: !readOnly,
            growFileSystem: m.partition.growFileSystem && params.growFileSystems !== false,
            partitionNumber: image.partitionTable ? m.partition.partitionNumber : null,
            architecture: m.partition.architecture,
            partitionUuid: m.partition.partitionUuid,
            fileSystemType: m.fileSystemType,
            partitionLabel: m.partition.partitionLabel || null,
            size: m.partition.size,
            offset: m.partition.offset,
            mountFileDescriptor: i,
            mountPoint: mountPoint(m.partition.designator),
          })),
          imagePolicy: formatImagePolicy(plan.policy),
          imageSize: image.imageSize,
          sectorSize: image.sectorSize,
          imageName: null,
          imageUuid: image.imageUuid,
          singleFileSystem: !image.partitionTable,
        },
        fds: mounts.map((m) => m.fd),
      };
    } catch (err) {
      // errno failures on the caller's image and mounts are answered, not logged as the daemon's.
      throw toVarlinkError(err) ?? err;
    }
  };
}

interface Mounted {
  partition: DissectedPartition;
  fd: number;
  /** From the bytes actually mounted (for verified partitions: the verified copy). */
  fileSystemType: string;
}

/** Carries out the plan's mounts, in its order; on failure or disconnect every fd made so far is closed. */
async function mountPlanned(
  cfg: MountImageConfig,
  imageFd: number,
  planned: readonly PlannedMount[],
  readOnly: boolean,
  usernsFd: number | null,
  ctx: CallContext,
  extraAttrs: number,
): Promise<Mounted[]> {
  const mounted: Mounted[] = [];
  // splice: fds released on disconnect must not be closed again by the catch below.
  const release = (): void => mounted.splice(0).forEach((m) => fs.closeSync(m.fd));
  ctx.onDisconnect(release);
  try {
    for (const p of planned) {
      const m = p.protection === 'unprotected' ? mountUnprotected(imageFd, p, readOnly, usernsFd, extraAttrs) : await mountVerified(cfg, imageFd, p, usernsFd, ctx.peer.uid, extraAttrs);
      mounted.push({ partition: p.partition, ...m });
      if (usernsFd !== null && cfg.registerMount) await cfg.registerMount(usernsFd, m.fd);
      if (ctx.disconnected) throw new ClientDisconnected();
    }
    return mounted;
  } catch (err) {
    release();
    throw err;
  }
}

/** Only reachable for trusted images: the policy never lets untrusted ones be unprotected. */
function mountUnprotected(imageFd: number, { partition: p, fileSystemType }: PlannedMount, readOnly: boolean, usernsFd: number | null, extraAttrs: number): { fd: number; fileSystemType: string } {
  const base = mountPartition({ fd: imageFd, offset: p.offset, size: p.size }, { designator: p.designator, fileSystemType, readOnly });
  try {
    return { fd: mountForCaller(base, usernsFd, readOnly, extraAttrs), fileSystemType };
  } finally {
    releasePartitionMount(base);
  }
}

/** The root hash is authentic by now: signed partitions' signatures were checked by admitImage(). */
async function mountVerified(
  cfg: MountImageConfig,
  imageFd: number,
  { partition: p, signature }: PlannedMount,
  usernsFd: number | null,
  peerUid: number,
  extraAttrs: number,
): Promise<{ fd: number; fileSystemType: string }> {
  const verity = p.verity!;
  const data = { offset: p.offset, size: p.size };
  const hash = { offset: verity.hash.offset, size: verity.hash.size };
  const rootHash = verity.rootHash;
  const others = cfg.verity === 'dm-verity' && othersMayWrite(imageFd, peerUid);
  if (others) cfg.log.info({ rootHash, verity: 'copy', why: others }, 'image writable by others than root and the caller: verified copy instead of dm-verity');
  const { mount, cached } =
    cfg.verity === 'dm-verity' && !others
      ? await cfg.cache.getOrCreate(sharedDeviceKey(imageFd, rootHash, data, hash), async () => mountDmVerity(cfg, imageFd, p, data, hash, rootHash, signature))
      : await cfg.cache.getOrCreate(rootHash, async () => {
          const copy = await verifyPartition(imageFd, data, hash, Buffer.from(rootHash, 'hex'), { storage: cfg.cache.storage });
          try {
            // Decide the driver from the verified bytes, not from what dissection read off the caller's fd.
            const fileSystemType = detectFileSystem(copy.fd, copy.offset, copy.size);
            if (!fileSystemType) throw new MountFsError('IncompatibleImage', `${p.designator}: no known file system`);
            return { partition: mountPartition(copy, { designator: p.designator, fileSystemType, readOnly: true }), fileSystemType, rootHash, verity: 'copy' as const };
          } finally {
            fs.closeSync(copy.fd);
          }
        });
  cfg.log.debug({ rootHash, cached, verity: mount.verity }, 'verified partition');
  return { fd: mountForCaller(mount.partition, usernsFd, true, extraAttrs), fileSystemType: mount.fileSystemType };
}

/**
 * Which callers may share a dm-verity device: those whose image is the same file (or block
 * device), not merely the same root hash. A verity device reads its caller's file for as long as
 * it lives, so whoever can write that file can make its unread blocks fail with EIO. Sharing
 * by root hash alone would hand that power over everybody's mounts of the image to whichever
 * tenant mounted it first (systemd's veritySharing names devices by root hash only). Sharing by
 * file gives nobody a power they lack: any device over that file, shared or not, reads the
 * same bytes, and othersMayWrite() already keeps callers off files that anyone but root or
 * themselves can write, so devices are shared across callers only over files root alone
 * controls. The key cannot outlive the file's identity: the cached device's loop holds the
 * file open, so its inode number cannot be reused meanwhile. The verified copy needs no such
 * rule: its bytes are private and can no longer change, so it is shared by root hash.
 */
function sharedDeviceKey(imageFd: number, rootHash: string, data: Extent, hash: Extent): string {
  const st = fs.fstatSync(imageFd, { bigint: true });
  const file = st.isBlockDevice() ? `b${st.rdev}` : `f${st.dev}:${st.ino}`;
  return `${rootHash}/${file}/${data.offset}+${data.size}/${hash.offset}+${hash.size}`;
}

// File systems whose files can change by the hand of someone this host's ownership and modes
// do not describe: a FUSE server, other NFS/SMB/9p/Ceph/AFS clients.
const SHARED_FILE_SYSTEMS = new Set([0x65735546, 0x6969, 0xff534d42, 0xfe534d42, 0x01021997, 0x00c36400, 0x6b414653]);

/**
 * Why a dm-verity device over this image would answer to someone other than root and the caller,
 * or false. A verity device reads the image for as long as it lives: whoever can write the
 * file can make the caller's unread blocks fail (EIO). That is the caller's own business for
 * its own file (or root's), but a file another user can write would put the caller's mounts
 * at that user's mercy, so such an image gets the verified copy, whose bytes nobody can change.
 * Group write covers POSIX ACLs too: with an ACL the group bits are its mask, which bounds
 * every named entry (acl(5)).
 */
function othersMayWrite(imageFd: number, peerUid: number): string | false {
  const st = fs.fstatSync(imageFd);
  if (st.uid !== 0 && st.uid !== peerUid) return `owned by uid ${st.uid}`;
  if ((st.mode & 0o022) !== 0) return `mode ${(st.mode & 0o7777).toString(8)}`;
  if (st.isFile() && SHARED_FILE_SYSTEMS.has(statfsType(imageFd))) return 'on a shared or user-space file system';
  return false;
}

/** The root hash is trusted by now; the kernel checks every block read against it. */
function mountDmVerity(cfg: MountImageConfig, imageFd: number, p: DissectedPartition, data: Extent, hash: Extent, rootHash: string, signature?: RootHashSignature): CachedMount {
  const dev = setupVerityDevice(imageFd, data, hash, rootHash, cfg.log, signature);
  let partition: PartitionMount;
  try {
    partition = mountBlockDevice(dev.devPath, { designator: p.designator, fileSystemType: dev.fileSystemType, readOnly: true });
  } catch (err) {
    dev.destroy();
    if (isErrnoError(err) && err.code === 'EIO') throw new MountFsError('VerityFailure', `${p.designator}: file system metadata does not match the hash tree`);
    throw err;
  }
  try {
    // From here the base mount holds the device: it goes with the last mount of it.
    dev.release();
  } catch (err) {
    releasePartitionMount(partition);
    dev.destroy();
    throw err;
  }
  return { partition, fileSystemType: dev.fileSystemType, rootHash, verity: 'dm-verity' };
}
