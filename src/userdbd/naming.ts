// Namespace names (systemd's userns_name_is_valid() and mangling in nsresourcework.c):
// validation, the "<uid>-" prefix for unprivileged callers, optional mangling, and the NSS
// names "ns-<name>-<offset>" of the allocated IDs.
import { createHash } from 'node:crypto';

const NAME_MAX = 255;
/** utmpx ut_user (32) minus "ns-", "-65536" and the NUL: what mangling shortens to. */
const MANGLED_MAX = 22;
const USER_NAME_MAX = 255;
const NAME_CHARS = /^[A-Za-z0-9_][A-Za-z0-9_-]*$/;

/** `ns-<name>-<offset>` is a valid strict user name and `n<name>.userns` a valid file name. */
function isValidNamespaceName(name: string): boolean {
  if (name.length === 0 || name.length > NAME_MAX - 'n.userns'.length) return false;
  if (!NAME_CHARS.test(name)) return false;
  return userName(name, 65535).length <= USER_NAME_MAX;
}

/**
 * The registered name for a request: root keeps the name, others get "<uid>-<name>" so users
 * cannot squat each other's names. Returns null when the name is invalid and may not be mangled.
 */
export function namespaceName(requested: string, peerUid: number, mangle: boolean): string | null {
  const full = peerUid === 0 ? requested : `${peerUid}-${requested}`;
  if (isValidNamespaceName(full)) return full;
  if (!mangle) return null;
  const short = full.slice(0, MANGLED_MAX);
  if (isValidNamespaceName(short)) return short;
  return createHash('sha256').update(full).digest('hex').slice(0, 16);
}

export function userName(nsName: string, offset: number): string {
  return `ns-${nsName}-${offset}`;
}

/** Splits "ns-<name>-<offset>" (the last '-' separates the offset); null if not that shape. */
export function parseUserName(user: string): { nsName: string; offset: number } | null {
  if (!user.startsWith('ns-')) return null;
  const dash = user.lastIndexOf('-');
  if (dash <= 3) return null;
  const nsName = user.slice(3, dash);
  const off = user.slice(dash + 1);
  if (!/^(0|[1-9][0-9]{0,4})$/.test(off)) return null;
  return { nsName, offset: Number(off) };
}

/** Stable 32-bit hash of a name, used to pick the first allocation candidate. */
export function nameHash(name: string): number {
  return createHash('sha256').update(name).digest().readUInt32LE(0);
}
