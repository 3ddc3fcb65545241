// Where verified bytes are copied to: a file on a private tmpfs instance of its own, made with
// the mount API and never attached anywhere, so no path leads to it. Its own instance can use
// huge pages (huge=within_size), which memfds cannot here: the host's shmem_enabled is
// "never", and allocating and zeroing 4 KiB pages dominated the copy (BENCHMARKS.md, figure
// 1). Once written, the writable fd is closed and the instance remounted read-only, which the
// kernel refuses while any writer is left: from then on nobody can change the bytes, which is
// what a memfd's write seal gave.
//
// Except in a VM that hands free memory back to its host (virtio-balloon free page reporting):
// the guest reports free blocks of 2 MiB and more, the host discards them, and a huge page
// then almost always comes from such a block and is faulted in from the host 4 KiB at a time
// on first write, which made copies several times slower there than with small pages, which
// mostly come from memory freed moments before (bench/verify.ts measures both).
//
// A copy that does not fit the memory budget (mount-cache.ts) goes to disk instead: an
// unnamed file (O_TMPFILE) in a root-only state directory. It has no name from the start, so
// nothing is left behind however the daemon ends (kill -9 included), and nobody but root can
// reach it: no path leads to it, and the directory it was made in is root's, mode 0700.
import fs from 'node:fs';
import {
  fsconfigCreate,
  fsconfigReconfigure,
  fsconfigSetFlag,
  fsconfigSetString,
  fsmount,
  fsopen,
  fspickFd,
  MOUNT_ATTR_NODEV,
  MOUNT_ATTR_NOEXEC,
  MOUNT_ATTR_NOSUID,
} from '../sys/mount-api.js';

const HUGE_PAGE = 2 * 1024 * 1024;
/** VIRTIO_BALLOON_F_REPORTING (virtio spec 5.5.3, feature bit 5). */
const BALLOON_F_REPORTING = 5;

let reporting: boolean | undefined;

/** Whether a virtio balloon reports free pages to the host (see above). */
export function freePageReporting(): boolean {
  if (reporting !== undefined) return reporting;
  reporting = false;
  const dir = '/sys/bus/virtio/drivers/virtio_balloon';
  try {
    for (const dev of fs.readdirSync(dir)) {
      if (!dev.startsWith('virtio')) continue;
      // One '0'/'1' per feature bit, bit 0 first (drivers/virtio/virtio.c features_show()).
      if (fs.readFileSync(`${dir}/${dev}/features`, 'utf8')[BALLOON_F_REPORTING] === '1') reporting = true;
    }
  } catch {
    // no balloon driver
  }
  return reporting;
}
/** What /proc/<pid>/fd and a loop device's backing_file show for a copy. */
export const FILE_NAME = 'mountgate-verified';

/** open(2)'s O_TMPFILE on x86-64 (__O_TMPFILE | O_DIRECTORY); Node has no constant for it. */
const O_TMPFILE = 0o20200000;

/** Where a copy's bytes live: a private tmpfs instance, or an unnamed file in `stateDir`. */
export type CopyPlace = { where: 'memory' } | { where: 'disk'; stateDir: string };

export interface CopyTarget {
  /** Writable fd of a file already `size` bytes long (sparse); write the verified bytes here. */
  readonly fd: number;
  /** Closes the writable fd, makes the instance read-only and returns a read-only fd of the
   * file (the caller owns it). Throws if a writer is left (EBUSY). */
  freeze(): number;
  /** Drops the copy; its memory goes with the last fd. */
  discard(): void;
}

export function createCopyTarget(size: number, place: CopyPlace = { where: 'memory' }): CopyTarget {
  return place.where === 'disk' ? diskTarget(size, place.stateDir) : memoryTarget(size);
}

/**
 * Checks the state directory for copies, creating it (root, 0700) when it is missing: it must
 * be a directory, not a symbolic link, owned by root, with no access for group or others, on a
 * file system that supports O_TMPFILE. Throws otherwise.
 */
export function prepareStateDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const st = fs.lstatSync(dir);
  if (!st.isDirectory() || st.uid !== 0 || (st.mode & 0o077) !== 0)
    throw new Error(`state directory ${dir} must be a directory owned by root with mode 0700 (is ${st.isDirectory() ? `uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8)}` : 'not a directory'})`);
  // Fails now (EOPNOTSUPP, EISDIR on old kernels) rather than at the first copy.
  fs.closeSync(fs.openSync(dir, O_TMPFILE | fs.constants.O_RDWR, 0o400));
}

/** An unnamed file in `stateDir`; it goes away with its last fd (the loop device's). */
function diskTarget(size: number, stateDir: string): CopyTarget {
  const dirFd = fs.openSync(stateDir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
  let file = -1;
  try {
    // Checked on every copy, not only at start: the directory may have been replaced.
    const st = fs.fstatSync(dirFd);
    if (st.uid !== 0 || (st.mode & 0o077) !== 0) throw new Error(`state directory ${stateDir} is no longer root-only`);
    file = fs.openSync(`/proc/self/fd/${dirFd}`, O_TMPFILE | fs.constants.O_RDWR, 0o400);
    fs.ftruncateSync(file, size);
  } catch (err) {
    if (file >= 0) fs.closeSync(file);
    throw err;
  } finally {
    fs.closeSync(dirFd);
  }
  let writer = file;
  return {
    fd: file,
    freeze(): number {
      const ro = fs.openSync(`/proc/self/fd/${writer}`, fs.constants.O_RDONLY);
      fs.closeSync(writer);
      writer = -1;
      return ro;
    },
    discard(): void {
      if (writer >= 0) fs.closeSync(writer);
      writer = -1;
    },
  };
}

function memoryTarget(size: number): CopyTarget {
  const fds: number[] = [];
  const closeAll = (): void => {
    for (const fd of fds.splice(0)) fs.closeSync(fd);
  };
  let mnt: number;
  let file: number;
  try {
    const fsFd = fsopen('tmpfs');
    fds.push(fsFd);
    fsconfigSetString(fsFd, 'huge', freePageReporting() ? 'never' : 'within_size');
    // Bounded to this copy: the root directory and one file of `size` bytes.
    fsconfigSetString(fsFd, 'size', String(Math.max(HUGE_PAGE, Math.ceil(size / HUGE_PAGE) * HUGE_PAGE)));
    fsconfigSetString(fsFd, 'nr_inodes', '4');
    fsconfigSetString(fsFd, 'mode', '0700');
    fsconfigCreate(fsFd);
    mnt = fsmount(fsFd, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
    fds.push(mnt);
    const { O_RDWR, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
    file = fs.openSync(`/proc/self/fd/${mnt}/${FILE_NAME}`, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0o400);
    fds.push(file);
    fs.ftruncateSync(file, size);
  } catch (err) {
    closeAll();
    throw err;
  }
  return {
    fd: file,
    freeze(): number {
      const ro = fs.openSync(`/proc/self/fd/${file}`, fs.constants.O_RDONLY);
      try {
        fs.closeSync(fds.splice(fds.indexOf(file), 1)[0]!);
        const ctx = fspickFd(mnt);
        try {
          fsconfigSetFlag(ctx, 'ro');
          fsconfigReconfigure(ctx);
        } finally {
          fs.closeSync(ctx);
        }
      } catch (err) {
        fs.closeSync(ro);
        closeAll();
        throw err;
      }
      closeAll(); // the file keeps its instance alive
      return ro;
    },
    discard: closeAll,
  };
}
