// Where verified bytes are copied to: a file on a private tmpfs instance of its own, made with
// the mount API and never attached anywhere, so no path leads to it. Its own instance can use
// huge pages (huge=within_size), which memfds cannot here: the host's shmem_enabled is
// "never", and allocating and zeroing 4 KiB pages dominated the copy (BENCHMARKS.md, figure
// 1). Once written, the writable fd is closed and the instance remounted read-only, which the
// kernel refuses while any writer is left: from then on nobody can change the bytes, which is
// what a memfd's write seal gave.
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
/** What /proc/<pid>/fd and a loop device's backing_file show for a copy. */
export const FILE_NAME = 'mountgate-verified';

export interface CopyTarget {
  /** Writable fd of a file already `size` bytes long (sparse); write the verified bytes here. */
  readonly fd: number;
  /** Closes the writable fd, makes the instance read-only and returns a read-only fd of the
   * file (the caller owns it). Throws if a writer is left (EBUSY). */
  freeze(): number;
  /** Drops the copy; its memory goes with the last fd. */
  discard(): void;
}

export function createCopyTarget(size: number): CopyTarget {
  const fds: number[] = [];
  const closeAll = (): void => {
    for (const fd of fds.splice(0)) fs.closeSync(fd);
  };
  let mnt: number;
  let file: number;
  try {
    const fsFd = fsopen('tmpfs');
    fds.push(fsFd);
    fsconfigSetString(fsFd, 'huge', 'within_size');
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
