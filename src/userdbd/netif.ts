// Network interfaces handed to user namespaces (AddNetworkToUserNamespace, after systemd's
// vl_method_add_netif_to_user_namespace() in nsresourcework.c): the names and MAC addresses of
// both sides, which network namespace may receive a veth peer, and the host side's creation
// and removal. The link operations themselves are in src/sys/netlink.ts.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { invalidParameter } from '../ipc/errors.js';
import { isSysError } from '../sys/errors.js';
import { ALTIFNAMSIZ, IFNAMSIZ, addAlternativeName, createTap, createVeth, deleteLink } from '../sys/netlink.js';
import { CLONE_NEWNET, nsGetOwnerUid, nsGetType, nsGetUserns } from '../sys/nsfs.js';
import { fdFlags } from '../sys/stat.js';

export type NetifMode = 'veth' | 'tap';

/** Interfaces per namespace. Upstream checks `> 16` before adding, so 17 fit; we keep 16, as for
 * cgroups. */
export const MAX_NETIFS = 16;
/** The namespace side's name when the caller names none (systemd: "host0"). */
const DEFAULT_NAMESPACE_IFNAME = 'host0';

/**
 * systemd's ifname_valid(): 1–15 printable ASCII bytes (127 for alternative names), none of
 * ':', '/', '%', not "." or "..", not "all" or "default" (sysctl directories), not all digits.
 */
export function isValidIfname(name: string, alternative = false): boolean {
  const max = (alternative ? ALTIFNAMSIZ : IFNAMSIZ) - 1;
  if (name.length === 0 || name.length > max) return false;
  if (!/^[\x21-\x7e]+$/.test(name) || /[:/%]/.test(name)) return false;
  if (['.', '..', 'all', 'default'].includes(name)) return false;
  return !/^[0-9]+$/.test(name);
}

function digest(...parts: string[]): Buffer {
  return createHash('sha256').update(parts.join('\0')).digest();
}

/**
 * The host side's name: "ns-" and 12 hex digits of a hash of the namespace name and the
 * requested namespace-side name (upstream: a keyed siphash printed as "ns-%08x", cut to 15
 * bytes). Names are unique per registered namespace, and nobody else can create host links.
 */
export function hostIfname(nsName: string, requested: string | undefined): string {
  return `ns-${digest('ifname', nsName, requested ?? '').toString('hex').slice(0, IFNAMSIZ - 1 - 'ns-'.length)}`;
}

/** The readable alternative name of the host side: "ns-<owner>-<namespace>[-<ifname>]". */
export function hostAltIfname(owner: number, nsName: string, requested: string | undefined): string {
  return requested === undefined ? `ns-${owner}-${nsName}` : `ns-${owner}-${nsName}-${requested}`;
}

/** A stable, locally administered unicast MAC per namespace, name and side (0 host, 1 namespace). */
export function macAddress(nsName: string, requested: string | undefined, side: 0 | 1): Buffer {
  const mac = digest('mac', nsName, requested ?? '', String(side)).subarray(0, 6);
  mac[0] = (mac[0]! & 0xfe) | 0x02; // unicast, locally administered
  return Buffer.from(mac);
}

/**
 * validate_netns() in nsresourcework.c: a network namespace (not the daemon's own) owned by the
 * user namespace `usernsFd` and, for unprivileged peers, by a namespace the peer owns.
 */
export function validateNetns(netnsFd: number, usernsFd: number, peerUid: number): void {
  const ownerFd = netnsOwner(netnsFd);
  if (ownerFd === null) throw invalidParameter('networkNamespaceFileDescriptor');
  try {
    const ns = fs.fstatSync(netnsFd);
    const own = fs.statSync('/proc/self/ns/net');
    const owner = fs.fstatSync(ownerFd);
    const userns = fs.fstatSync(usernsFd);
    const ok =
      !(ns.ino === own.ino && ns.dev === own.dev) &&
      owner.ino === userns.ino &&
      owner.dev === userns.dev &&
      (peerUid === 0 || nsGetOwnerUid(ownerFd) === peerUid);
    if (!ok) throw invalidParameter('networkNamespaceFileDescriptor');
  } finally {
    fs.closeSync(ownerFd);
  }
}

/** The owning user namespace (a new fd) of a network namespace fd; null if `fd` is not one. */
function netnsOwner(fd: number): number | null {
  try {
    if (fdFlags(fd).path || nsGetType(fd) !== CLONE_NEWNET) return null;
    return nsGetUserns(fd);
  } catch (e) {
    if (isSysError(e) || typeof (e as NodeJS.ErrnoException).code === 'string') return null;
    throw e;
  }
}

export interface NetifRequest {
  mode: NetifMode;
  owner: number;
  nsName: string;
  /** The namespace side's name as requested (veth only; undefined: host0). */
  requested: string | undefined;
  /** veth: the network namespace the peer goes to. */
  netnsFd?: number;
  /** tap: the uid owning the device (the namespace's root as seen by the daemon). */
  tapOwner?: number;
}

export interface CreatedNetif {
  hostName: string;
  namespaceName?: string;
  /** tap: the device's fd, owned by the caller. */
  fd?: number;
}

/**
 * Creates the host side (and, for veth, the peer in the namespace). `onAltNameError` hears
 * about an alternative name that could not be set; the interface works without it (upstream
 * only warns, too).
 */
export function createNetif(r: NetifRequest, hostName: string, onAltNameError: (err: unknown) => void): CreatedNetif {
  const alt = hostAltIfname(r.owner, r.nsName, r.requested);
  let created: CreatedNetif;
  if (r.mode === 'veth') {
    const namespaceName = r.requested ?? DEFAULT_NAMESPACE_IFNAME;
    if (r.netnsFd === undefined) throw new TypeError('veth without a network namespace');
    createVeth({ hostName, hostMac: macAddress(r.nsName, r.requested, 0), peerName: namespaceName, peerMac: macAddress(r.nsName, r.requested, 1), peerNetnsFd: r.netnsFd });
    created = { hostName, namespaceName };
  } else {
    if (r.tapOwner === undefined) throw new TypeError('tap without an owner');
    created = { hostName, fd: createTap(hostName, r.tapOwner) };
  }
  try {
    if (!isValidIfname(alt, true)) throw new RangeError(`alternative name '${alt}' is too long`);
    addAlternativeName(hostName, alt);
  } catch (e) {
    onAltNameError(e);
  }
  return created;
}

/** Deletes a host-side link; one that is already gone (the peer's network namespace died and
 * took the pair along, or the tap's last fd was closed) is fine. */
export function removeNetif(hostName: string): void {
  try {
    deleteLink(hostName);
  } catch (e) {
    if (!isSysError(e, 'ENODEV')) throw e;
  }
}
