// Cgroup delegation (AddControlGroupToUserNamespace; vl_method_add_cgroup_to_user_namespace()
// in systemd's nsresourcework.c): a cgroup v2 subtree the caller owns is handed to the root of
// its namespace's transient range, and removed again when the namespace is released.
import fs from 'node:fs';
import path from 'node:path';
import { invalidParameter } from '../ipc/errors.js';
import { fdFlags, statfsType } from '../sys/stat.js';

/** Upstream checks `> 16`, so 17 fit; we keep the documented 16. */
export const MAX_CGROUPS = 16;
const CGROUP2_SUPER_MAGIC = 0x63677270;
const CGROUP_ROOT = '/sys/fs/cgroup';

/** A cgroup v2 directory below the cgroup root, as an fd that can be fchown'd: its path and
 * owner, or InvalidParameter(controlGroupFileDescriptor). */
export function controlGroupOf(cfd: number): { dir: string; uid: number } {
  // An O_PATH fd passes fstat/fstatfs but cannot be fchown'd: refuse it before anything.
  if (fdFlags(cfd).path) throw invalidParameter('controlGroupFileDescriptor');
  const st = fs.fstatSync(cfd);
  if (!st.isDirectory() || statfsType(cfd) !== CGROUP2_SUPER_MAGIC) throw invalidParameter('controlGroupFileDescriptor');
  const dir = fs.readlinkSync(`/proc/self/fd/${cfd}`);
  if (!dir.startsWith(`${CGROUP_ROOT}/`)) throw invalidParameter('controlGroupFileDescriptor');
  return { dir, uid: st.uid };
}

/** Hands the cgroup to uid/gid: the directory and the files a delegatee writes
 * (cgroup.procs, cgroup.subtree_control, cgroup.threads), as systemd's cgroup delegation. */
export function delegateControlGroup(cfd: number, uid: number, gid: number): void {
  fs.fchownSync(cfd, uid, gid);
  fs.fchmodSync(cfd, 0o755);
  for (const f of ['cgroup.procs', 'cgroup.subtree_control', 'cgroup.threads']) {
    const file = `/proc/self/fd/${cfd}/${f}`;
    fs.chownSync(file, uid, gid);
    fs.chmodSync(file, 0o644);
  }
}

/** Removes a delegated cgroup subtree (directories only, never outside or at the root). */
export function removeControlGroup(dir: string): void {
  const rel = path.relative(CGROUP_ROOT, dir);
  if (!rel || rel.startsWith('..') || path.isAbsolute(rel)) return;
  const rmTree = (d: string): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) rmTree(path.join(d, e.name));
    try {
      fs.rmdirSync(d);
    } catch {
      // still populated or already gone: nothing more we may do
    }
  };
  rmTree(dir);
}
