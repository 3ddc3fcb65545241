// User namespaces as id maps: reading the maps of a namespace the daemon only holds an fd for,
// and making a throwaway namespace whose only purpose is to carry a map for MOUNT_ATTR_IDMAP
// (userns_acquire() in systemd's namespace-util.c). Both need a process inside the namespace:
// the joiner (userns-joiner.ts) provides one without forking the daemon.
import fs from 'node:fs';
import { createUserNamespace } from './nshelper.js';
import { joinUserNamespace } from './userns-joiner.js';

export interface IdMapLine {
  inside: number;
  /** As seen from the parent user namespace (here: the daemon's). */
  outside: number;
  count: number;
}

export interface IdMaps {
  uid: IdMapLine[];
  gid: IdMapLine[];
}

/** uid_map/gid_map text: one "inside outside count" line each. */
function parseMap(text: string): IdMapLine[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const [inside, outside, count] = l.trim().split(/\s+/).map(Number);
      return { inside: inside!, outside: outside!, count: count! };
    });
}

export function formatMap(lines: readonly IdMapLine[]): string {
  return lines.map((l) => `${l.inside} ${l.outside} ${l.count}\n`).join('');
}

/** uid_map/gid_map of the user namespace `usernsFd` (borrowed), in the kernel's order. */
export async function readUserNamespaceMaps(usernsFd: number): Promise<IdMaps> {
  const member = await joinUserNamespace(usernsFd);
  try {
    return {
      uid: parseMap(fs.readFileSync(`/proc/${member.pid}/uid_map`, 'utf8')),
      gid: parseMap(fs.readFileSync(`/proc/${member.pid}/gid_map`, 'utf8')),
    };
  } finally {
    await member.release();
  }
}

/** Writes a /proc map file in one write(2): the kernel takes a map only whole (user_namespaces(7)). */
export function writeMapFile(file: string, text: string): void {
  const buf = Buffer.from(text);
  const fd = fs.openSync(file, 'w');
  try {
    if (fs.writeSync(fd, buf) !== buf.length) throw new Error(`short write to ${file}`);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * A new user namespace (owned by the daemon, child of its own) with these maps and setgroups
 * denied; nothing ever runs in it. Returns its fd, the caller's to close: the fd alone keeps it
 * alive, and a mount idmapped with it keeps its own reference.
 */
export async function createIdmapUserNamespace(maps: IdMaps): Promise<number> {
  const nsFd = await createUserNamespace();
  try {
    const member = await joinUserNamespace(nsFd);
    try {
      writeMapFile(`/proc/${member.pid}/setgroups`, 'deny');
      writeMapFile(`/proc/${member.pid}/uid_map`, formatMap(maps.uid));
      writeMapFile(`/proc/${member.pid}/gid_map`, formatMap(maps.gid));
    } finally {
      await member.release();
    }
    return nsFd;
  } catch (err) {
    fs.closeSync(nsFd);
    throw err;
  }
}
