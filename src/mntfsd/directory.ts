// io.systemd.MountFileSystem.MountDirectory and MakeDirectory (vl_method_mount_directory() and
// vl_method_make_directory() in systemd's mountwork.c): idmapped mounts of directory trees
// owned by the caller or by the foreign UID range, and empty foreign-owned directories to put
// such trees in. mountgate has no polkit; it grants what upstream grants when polkit is absent.
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { FOREIGN_RANGE, isForeign, isTransient } from '../id-ranges.js';
import { ClientDisconnected, invalidParameter, permissionDenied, systemError, toVarlinkError } from '../ipc/errors.js';
import type { CallContext } from '../ipc/server.js';
import type { MethodHandlers } from '../ipc/interfaces/define.js';
import {
  AT_REMOVEDIR,
  O_DIRECTORY,
  O_LARGEFILE,
  O_NOFOLLOW,
  O_PATH,
  O_RDONLY,
  RENAME_NOREPLACE,
  STATX_ATTR_MOUNT_ROOT,
  STATX_GID,
  STATX_INO,
  STATX_MNT_ID,
  STATX_TYPE,
  STATX_UID,
  mkdirat,
  openat,
  renameat2,
  statx,
  unlinkat,
  type Statx,
} from '../sys/dirfd.js';
import { SysError, isSysError } from '../sys/errors.js';
import { createIdmapUserNamespace, readUserNamespaceMaps, type IdMapLine, type IdMaps } from '../sys/idmap-userns.js';
import {
  AT_EMPTY_PATH,
  AT_SYMLINK_NOFOLLOW,
  MOUNT_ATTR_IDMAP,
  MOUNT_ATTR_NODEV,
  MOUNT_ATTR_RDONLY,
  MS_PRIVATE,
  OPEN_TREE_CLOEXEC,
  OPEN_TREE_CLONE,
  mountSetattrFd,
  openTree,
  openTreeAttr,
} from '../sys/mount-api.js';
import { openTreeInNamespace } from '../sys/nshelper.js';
import { pidfdOpen } from '../sys/pidfd.js';
import { fdFlags } from '../sys/stat.js';
import { MountFsError } from './errors.js';
import {
  type MakeDirectoryParameters,
  type MakeDirectoryReply,
  type Methods,
  type MountDirectoryParameters,
  type MountDirectoryReply,
  type MountMapMode,
} from '../ipc/interfaces/io.systemd.MountFileSystem.js';
import { callerUserNamespace } from './mount-image.js';

export interface DirectoryConfig {
  /** Registers returned mounts with userdbd; undefined when no userdbd is configured. */
  registerMount?: (usernsFd: number, mountFd: number) => Promise<void>;
  /** Counts mount fds handed out (for GetStatus). */
  counters: { mountsHandedOut: number };
  log: Logger;
}

/** MountDirectory and MakeDirectory, typed against io.systemd.MountFileSystem. */
export function directoryMethods(cfg: DirectoryConfig): MethodHandlers<Methods> {
  return {
    MountDirectory: async (p, ctx) => {
      try {
        return await mountDirectory(cfg, p, ctx);
      } catch (err) {
        cfg.log.debug({ method: 'MountDirectory', uid: ctx.peer.uid, err: (err as Error).message }, 'refused or failed');
        throw toVarlinkError(err) ?? err; // failures on the caller's files are the caller's, not the daemon's
      }
    },
    MakeDirectory: async (p, ctx) => {
      try {
        return await makeDirectory(p, ctx);
      } catch (err) {
        cfg.log.debug({ method: 'MakeDirectory', uid: ctx.peer.uid, err: (err as Error).message }, 'refused or failed');
        throw toVarlinkError(err) ?? err;
      }
    },
  };
}

/** directoryMethods() in the shape mntfsd/daemon.ts spreads into its handler table today. */

// Flags a caller's directory fd may carry (fd_verify_safe_flags_full() with O_DIRECTORY, and
// for MountDirectory O_PATH: a directory fd grants nothing by its access mode, ownership does).
const O_ACCMODE = 0o3;
const DIRECTORY_FLAGS = O_ACCMODE | O_NOFOLLOW | O_LARGEFILE | O_DIRECTORY;

/** A directory fd of the right type and flags, or the error upstream answers with. */
function checkDirectoryFd(fd: number, parameter: string, allowed: number): Statx {
  const st = statx(fd, '', AT_SYMLINK_NOFOLLOW, STATX_TYPE | STATX_UID | STATX_GID | STATX_MNT_ID | STATX_INO);
  // stat_verify_directory(): the type comes first, whatever the flags.
  if (st.isSymlink) throw systemError('ELOOP');
  if (!st.isDirectory) throw systemError('ENOTDIR');
  if ((fdFlags(fd).flags & ~allowed) !== 0) throw new MountFsError('BadFileDescriptorFlags', `${parameter} flags`, { parameter });
  return st;
}

/** How the directory's owner relates to the caller (DirectoryOwnership in mountwork.c). */
type Ownership = 'root-peer' | 'root' | 'peer' | 'foreign' | 'other';

/** Ancestors looked at for a foreign-owned directory, as upstream. */
const MAX_LEVELS = 16;

/**
 * validate_directory_fd(): a directory owned by the foreign range counts as the caller's only
 * if it lies below a directory the caller owns, with nothing but foreign-owned directories in
 * between, all on the same mount (a bind mount could put anyone's tree below a directory of the
 * caller's). Root skips the search. Upstream's loop re-opens ".." of the starting directory on
 * every round, so in effect it only ever looks at the immediate parent; this walks the chain it
 * describes. Every step goes through fds, never a path.
 */
function classify(fd: number, st: Statx, peerUid: number): Ownership {
  if (st.uid === 0) return peerUid === 0 ? 'root-peer' : 'root';
  if (st.uid === peerUid) return 'peer';
  const mask = STATX_UID | STATX_GID | STATX_MNT_ID | STATX_INO;
  let cur = st;
  let curFd = fd;
  let held = -1;
  try {
    for (let level = 0; level < MAX_LEVELS; level++) {
      // Without STATX_ATTR_MOUNT_ROOT support nothing proves the parent is on the same mount.
      if ((cur.attributesMask & BigInt(STATX_ATTR_MOUNT_ROOT)) === 0n || (cur.attributes & BigInt(STATX_ATTR_MOUNT_ROOT)) !== 0n) return 'other';
      if ((cur.mask & STATX_MNT_ID) === 0 || !isForeign(cur.uid) || !isForeign(cur.gid)) return 'other';
      if (peerUid === 0) return 'foreign';
      const parentFd = openat(curFd, '..', O_PATH | O_DIRECTORY);
      if (held >= 0) fs.closeSync(held);
      held = parentFd;
      curFd = parentFd;
      const parent = statx(parentFd, '', 0, mask);
      if ((parent.ino === cur.ino && parent.dev === cur.dev) || parent.mntId !== cur.mntId) return 'other';
      if (parent.uid === peerUid) return 'foreign';
      cur = parent;
    }
    return 'other';
  } finally {
    if (held >= 0) fs.closeSync(held);
  }
}

/** default_mount_map_mode(). */
function defaultMode(o: Ownership): Exclude<MountMapMode, 'auto'> {
  return o === 'peer' ? 'root' : o === 'foreign' ? 'foreign' : 'identity';
}

const RANGE = 0x10000;

/**
 * The host id the namespace's 0 maps to, if the namespace looks like one userdbd allocated
 * (mountwork.c's checks before building the idmap): identical uid and gid maps, first a 64K
 * transient range at 0, then only 64K transient ranges mapped 1:1 (delegations), the last of
 * which may be the foreign range. Anything else is InvalidParameter.
 */
function transientBase(maps: IdMaps): number {
  const same = (a: IdMapLine[], b: IdMapLine[]): boolean =>
    a.length === b.length && a.every((l, i) => l.inside === b[i]!.inside && l.outside === b[i]!.outside && l.count === b[i]!.count);
  const [first, ...rest] = maps.uid;
  const ok =
    first !== undefined &&
    same(maps.uid, maps.gid) &&
    isTransient(first.outside) &&
    first.outside % RANGE === 0 &&
    first.count === RANGE &&
    first.inside === 0 &&
    rest.every(
      (l, i) => (isTransient(l.outside) || (i === rest.length - 1 && isForeign(l.outside))) && l.outside % RANGE === 0 && l.count === RANGE && l.inside === l.outside,
    );
  if (!ok) throw invalidParameter('userNamespaceFileDescriptor');
  return first!.outside;
}

const CLONE_FLAGS = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW;

/**
 * A detached clone of the caller's directory (just that mount, not the ones below it), with an
 * idmapping the source mount carries removed where the kernel can (open_tree_attr, Linux
 * 6.15; open_tree_try_drop_idmap() upstream).
 */
function cloneHere(fd: number): number {
  try {
    return openTreeAttr(fd, '', CLONE_FLAGS, { attrClr: MOUNT_ATTR_IDMAP });
  } catch (err) {
    // ENOSYS: older kernel; EINVAL: a file system without idmap support, or another namespace;
    // EPERM: a seccomp allow-list that predates the call (SystemCallFilter= under systemd 252,
    // whose libseccomp does not know it; systemd-mountfsd.service drops its filter for this).
    // open_tree() then keeps an idmapping the source carries: identity mode shows the tree as
    // the caller's fd does, and a mapping mode fails in mount_setattr() (no idmap on an idmap).
    if (!isSysError(err, 'ENOSYS') && !isSysError(err, 'EINVAL') && !isSysError(err, 'EPERM')) throw err;
  }
  return openTree(fd, '', CLONE_FLAGS);
}

/**
 * cloneHere(), or where open_tree answers EINVAL because the directory's mount is not in the
 * daemon's mount namespace (the kernel's check_mnt(): a caller in a container or chroot-like
 * namespace, or the daemon in a namespace of its own under its unit), the same clone made in
 * the caller's mount namespace by the nshelper (open_tree_try_drop_idmap_harder() in
 * systemd's mountwork.c forks into it).
 */
async function cloneDirectory(fd: number, ctx: CallContext, log: Logger): Promise<number> {
  try {
    return cloneHere(fd);
  } catch (err) {
    if (!isSysError(err, 'EINVAL') || ctx.peer.pid <= 0) throw err;
    const mntnsFd = callerMountNamespace(ctx.peer.pid);
    try {
      const ours = fs.statSync('/proc/self/ns/mnt');
      const theirs = fs.fstatSync(mntnsFd);
      if (theirs.ino === ours.ino && theirs.dev === ours.dev) throw err; // EINVAL for another reason
      log.debug({ method: ctx.method, uid: ctx.peer.uid }, 'cloning the directory in the caller\'s mount namespace');
      return await openTreeInNamespace(mntnsFd, fd);
    } finally {
      fs.closeSync(mntnsFd);
    }
  }
}

/**
 * An fd for the mount namespace of process `pid`, through a pidfd: the namespace is only
 * used if that very process still holds the pid after it was opened, so a pid reused meanwhile
 * is never mistaken for the caller (pidref_namespace_open() and pidref_verify() upstream do
 * the same). The pid itself is the one SO_PEERCRED recorded at connect().
 */
function callerMountNamespace(pid: number): number {
  const pidfd = pidfdOpen(pid);
  try {
    const nsFd = fs.openSync(`/proc/${pid}/ns/mnt`, 'r');
    if (pidfdPid(pidfd) !== pid) {
      fs.closeSync(nsFd);
      throw new SysError(3 /* ESRCH */, 'MountDirectory', 'the caller exited');
    }
    return nsFd;
  } finally {
    fs.closeSync(pidfd);
  }
}

/** The pid a pidfd refers to, -1 once that process is gone (the pidfd's fdinfo, as systemd's
 * pidfd_get_pid(); pidfd_send_signal(0) would need CAP_KILL for another uid's process). */
function pidfdPid(pidfd: number): number {
  const m = /^Pid:\s*(-?\d+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${pidfd}`, 'utf8'));
  if (!m) throw new SysError(95 /* EOPNOTSUPP */, 'MountDirectory', 'pidfd fdinfo has no Pid');
  return Number(m[1]);
}

async function mountDirectory(cfg: DirectoryConfig, p: MountDirectoryParameters, ctx: CallContext): Promise<{ parameters: MountDirectoryReply; fds: number[] }> {
  const dirFd = ctx.fd(p.directoryFileDescriptor, 'directoryFileDescriptor');
  const peerUid = ctx.peer.uid;
  const st = checkDirectoryFd(dirFd, 'directoryFileDescriptor', DIRECTORY_FLAGS | O_PATH);
  const ownership = classify(dirFd, st, peerUid);
  const usernsFd = callerUserNamespace(ctx, p.userNamespaceFileDescriptor);
  const mode = !p.mode || p.mode === 'auto' ? defaultMode(ownership) : p.mode;
  // Upstream's polkit actions without polkit: mount-directory (host id space) is root's alone;
  // mount-directory-privately defaults to allow for the caller's own or foreign-owned trees;
  // mount-untrusted-directory(-privately), for anything else, is root's alone.
  if (peerUid !== 0 && (usernsFd === null || (ownership !== 'peer' && ownership !== 'foreign'))) throw permissionDenied();
  cfg.log.debug({ method: 'MountDirectory', uid: peerUid, ownership, mode }, 'mounting directory');

  // The idmap is checked and built before anything is mounted: a refusal leaves nothing behind.
  let idmap: IdMaps | null = null;
  if (mode !== 'identity') {
    const start = usernsFd === null ? 0 : transientBase(await readUserNamespaceMaps(usernsFd));
    // As upstream, the gid map is the uid map: in root mode the caller's uid doubles as the gid.
    const line: IdMapLine = mode === 'root' ? { inside: peerUid, outside: start, count: 1 } : { inside: FOREIGN_RANGE.start, outside: start, count: RANGE };
    idmap = { uid: [line], gid: [line] };
  }

  const mountFd = await cloneDirectory(dirFd, ctx, cfg.log);
  try {
    // Dropping an idmapping may change who owns the tree: refuse then (mountwork.c does too).
    const cloned = fs.fstatSync(mountFd);
    if (!cloned.isDirectory()) throw systemError('ENOTDIR');
    if (cloned.uid !== st.uid) throw new SysError(1 /* EPERM */, 'MountDirectory', 'owner changed with the idmapping dropped');
    // nodev for callers other than root (upstream sets none): a tree root prepared and shifted
    // to the foreign range may hold device nodes, which an idmapped mount would hand to the
    // namespace's root. Containers get their /dev elsewhere.
    const attrs = (p.readOnly === true ? MOUNT_ATTR_RDONLY : 0) | (peerUid !== 0 ? MOUNT_ATTR_NODEV : 0);
    if (attrs !== 0) mountSetattrFd(mountFd, { attrSet: attrs });
    if (idmap) {
      const idmapFd = await createIdmapUserNamespace(idmap);
      try {
        mountSetattrFd(mountFd, { attrSet: MOUNT_ATTR_IDMAP, usernsFd: idmapFd, propagation: MS_PRIVATE });
      } finally {
        fs.closeSync(idmapFd);
      }
    }
    if (usernsFd !== null && cfg.registerMount) await cfg.registerMount(usernsFd, mountFd);
    if (ctx.disconnected) throw new ClientDisconnected();
  } catch (err) {
    fs.closeSync(mountFd);
    throw err;
  }
  cfg.counters.mountsHandedOut++;
  return { parameters: { mountFileDescriptor: 0 }, fds: [mountFd] };
}

const NAME_MAX = 255;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** filename_is_valid(), plus what a C string cannot carry (NUL) and what UTF-8 cannot (lone surrogates). */
function isValidFilename(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0') && !LONE_SURROGATE.test(name) && Buffer.byteLength(name) <= NAME_MAX;
}

/** tempfn_random(name, "mountfsd"): ".#mountfsd<name><16 hex>", the name shortened to fit NAME_MAX. */
function tempName(name: string): string {
  const prefix = '.#mountfsd';
  const suffix = randomBytes(8).toString('hex');
  const chars = Array.from(name);
  while (Buffer.byteLength(prefix + chars.join('') + suffix) > NAME_MAX) chars.pop();
  return prefix + chars.join('') + suffix;
}

/**
 * vl_method_make_directory(): a fresh directory under a temporary name, made the foreign
 * range's and renamed into place without replacing anything, so the name never shows a
 * half-made directory. Everything happens relative to the caller's fd. The parent's owner may
 * swap another directory in under the temporary name between mkdirat and openat; the one
 * opened is used only if it is ours: owned by the daemon and made with mode 0, which a
 * pre-existing directory the caller could move there is not.
 */
async function makeDirectory(p: MakeDirectoryParameters, ctx: CallContext): Promise<{ parameters: MakeDirectoryReply; fds: number[] }> {
  if (!isValidFilename(p.name)) throw invalidParameter('name');
  let mode = 0o700;
  if (p.mode !== undefined && p.mode !== null) {
    if (p.mode < 0 || p.mode > 0o7777) throw invalidParameter('mode');
    mode = p.mode & 0o775; // never setuid, setgid, sticky or world-writable
  }
  const parentFd = ctx.fd(p.parentFileDescriptor, 'parentFileDescriptor');
  const parent = checkDirectoryFd(parentFd, 'parentFileDescriptor', DIRECTORY_FLAGS);
  // make-directory (default allow without polkit) for a parent the caller owns; anything else
  // is make-directory-untrusted, root's alone.
  if (ctx.peer.uid !== 0 && parent.uid !== ctx.peer.uid) throw permissionDenied();

  const temp = tempName(p.name);
  mkdirat(parentFd, temp, 0);
  let fd = -1;
  try {
    fd = openat(parentFd, temp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    const st = fs.fstatSync(fd);
    if (st.uid !== process.geteuid?.() || (st.mode & 0o777) !== 0) throw new SysError(116 /* ESTALE */, 'MakeDirectory', 'temporary directory replaced');
    fs.fchmodSync(fd, mode); // explicitly, whatever the umask or a default ACL made of it
    fs.fchownSync(fd, FOREIGN_RANGE.start, FOREIGN_RANGE.start);
    renameat2(parentFd, temp, parentFd, p.name, RENAME_NOREPLACE);
  } catch (err) {
    if (fd >= 0) fs.closeSync(fd);
    try {
      unlinkat(parentFd, temp, AT_REMOVEDIR);
    } catch {
      // already gone, or not empty: not ours to clean any further
    }
    throw err;
  }
  return { parameters: { directoryFileDescriptor: 0 }, fds: [fd] };
}
