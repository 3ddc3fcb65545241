// io.systemd.NamespaceResource (after systemd's nsresourcework.c): hands transient UID/GID
// ranges (or the caller's own ids, type "self") to empty user namespaces passed in by their
// owners, registers initialized ones, and hands out cgroups and network interfaces.
// The daemon never keeps a namespace fd past the call (that would keep it alive); it keeps the
// inode and NS_GET_ID. These are the methods only: the lifecycle of what they register
// (release once a death is proven, reaping, settling, the owner cap) is the manager's
// (manager.ts), handing out cgroups is delegation.ts's.
import fs from 'node:fs';
import type { CallContext, Service } from '../ipc/server.js';
import { VarlinkError, invalidParameter, permissionDenied, systemError } from '../ipc/errors.js';
import { serve } from '../ipc/interfaces/define.js';
import {
  NamespaceResource as NamespaceResourceInterface,
  NamespaceResourceError,
  type AddControlGroupToUserNamespaceParameters,
  type AddMountToUserNamespaceParameters,
  type AddNetworkToUserNamespaceParameters,
  type AddNetworkToUserNamespaceReply,
  type AllocateUserRangeParameters,
  type AllocateUserRangeReply,
  type RegisterUserNamespaceParameters,
  type RegisterUserNamespaceReply,
} from '../ipc/interfaces/io.systemd.NamespaceResource.js';
import { FOREIGN_RANGE } from '../id-ranges.js';
import type { Logger } from '../log.js';
import { nsGetParent, userNamespaceInfo, userNamespaceLiveness, type UserNamespaceInfo } from '../sys/nsfs.js';
import { fdFlags } from '../sys/stat.js';
import type { UserNamespaceMember } from '../sys/nshelper.js';
import { joinUserNamespace } from '../sys/userns-joiner.js';
import { nameHash, namespaceName } from './naming.js';
import { CONTAINER_SIZE, HostIds, pickRange, type IdRange } from './range-allocator.js';
import type { NamespaceRecord, Registry } from './registry.js';
import { writeMaps } from './map-writer.js';
import { readUserNamespaceMaps, type IdMapLine as MapLine } from '../sys/idmap-userns.js';
import { MAX_NETIFS, createNetif, hostIfname, isValidIfname, validateNetns, type CreatedNetif, type NetifMode } from './netif.js';

import { MAX_CGROUPS, controlGroupOf, delegateControlGroup } from './delegation.js';
import { NamespaceManager, readMap, type NamespacePolicy } from './manager.js';

export type { NamespaceDeath, NamespacePolicy, PolicyStatus } from './manager.js';

const MAX_DELEGATIONS = 16;
const UID_INVALID = 0xffffffff;
/** Everything the daemon's own namespace maps (a direct child may get any free range). */
const WHOLE_ID_SPACE: IdRange[] = [{ start: 0, size: UID_INVALID }];

export interface NamespaceResourceOptions {
  registry: Registry;
  policy?: NamespacePolicy;
  /** The daemon's manager of the namespace lifecycle; one over registry and policy if not given. */
  manager?: NamespaceManager;
  /** Allocate even though the policy is not enforcing (--allow-without-policy). */
  allowWithoutPolicy?: boolean;
  hostIds?: HostIds;
  logger?: Logger;
}

/** The validated namespace of a call, with its parent (null when that is the daemon's own). */
interface Target {
  info: UserNamespaceInfo & { nsId: string };
  parent: { inode: number; fd: number; record?: NamespaceRecord } | null;
}

/** AllocateUserRange's validated request (validate_target_and_size() in nsresourcework.c). */
interface AllocRequest {
  type: 'managed' | 'self';
  size: number;
  /** Inside the namespace; undefined only for "self" without one: the caller's ids map to
   * themselves. */
  target: number | undefined;
  delegations: number;
  mapForeign: boolean;
}

/** The caller's ids for a "self" allocation: as the daemon sees them (what the record keeps,
 * as upstream's start_uid/start_gid) and as the parent namespace sees them (the maps' outside). */
interface SelfIds {
  uid: number;
  gid: number;
  parentUid: number;
  parentGid: number;
}

interface Maps {
  uid: MapLine[];
  gid: MapLine[];
}

export class NamespaceResource {
  private readonly registry: Registry;
  private readonly policy: NamespacePolicy | undefined;
  /** The namespace lifecycle: releasing, reaping, settling, the owner cap (manager.ts). */
  private readonly manager: NamespaceManager;
  private readonly hostIds: HostIds;
  private readonly ownUserns = fs.statSync('/proc/self/ns/user').ino;
  private readonly policyActive: boolean;
  private readonly log: Logger | undefined;

  constructor(opts: NamespaceResourceOptions) {
    this.registry = opts.registry;
    this.policy = opts.policy;
    this.manager = opts.manager ?? new NamespaceManager({ registry: opts.registry, policy: opts.policy, logger: opts.logger });
    this.hostIds = opts.hostIds ?? new HostIds();
    this.log = opts.logger;
    // Checked once: status() counts the managed map, too slow for every call.
    const st = opts.policy?.status();
    this.policyActive = st !== undefined && ((st.lsm && st.attached) || opts.allowWithoutPolicy === true);
  }

  service(): Service {
    return serve(NamespaceResourceInterface, {
      AllocateUserRange: async (p, ctx) => ({ parameters: await this.allocate(p, ctx) }),
      RegisterUserNamespace: async (p, ctx) => ({ parameters: await this.register(p, ctx) }),
      AddMountToUserNamespace: async (p, ctx) => ({ parameters: await this.addMount(p, ctx) }),
      AddControlGroupToUserNamespace: async (p, ctx) => ({ parameters: await this.addControlGroup(p, ctx) }),
      AddNetworkToUserNamespace: (p, ctx) => this.addNetwork(p, ctx),
    });
  }

  private requirePolicy(): NamespacePolicy {
    if (!this.policy || !this.policyActive) throw new NamespaceResourceError('UserNamespaceInterfaceNotSupported');
    return this.policy;
  }

  private async allocate(p: AllocateUserRangeParameters, ctx: CallContext): Promise<AllocateUserRangeReply> {
    const policy = this.requirePolicy();
    const req = allocRequest(p);
    const name = namespaceName(p.name, ctx.peer.uid, p.mangleName === true);
    if (name === null) throw invalidParameter('name');

    const fd = ctx.fd(p.userNamespaceFileDescriptor, 'userNamespaceFileDescriptor');
    const member = await this.joinValidated(fd, ctx.peer.uid);
    try {
      // A registered namespace has its maps written: say so before complaining about the maps.
      const known = this.registry.byUserns(this.inspect(fd).inode);
      if (known && userNamespaceLiveness(known.nsId, known.userns) !== 'dead') throw new NamespaceResourceError('UserNamespaceExists');
      if (readMap(member.pid, 'uid_map') !== '' || readMap(member.pid, 'gid_map') !== '') {
        throw invalidParameter('userNamespaceFileDescriptor');
      }
      const t = this.target(fd);
      try {
        const self = await parentView(t, req, ctx.peer);
        const { rec, maps } = await this.registry.exclusive(() => this.reserve(t, name, ctx.peer.uid, req, self));
        try {
          policy.manage(rec.userns); // before the maps: the namespace is never mapped without policy
          // The caller's own gid may not be dropped by setgroups() inside (upstream denies it
          // through the BPF hook: /proc/<pid>/setgroups would bind child namespaces, too).
          if (req.type === 'self') policy.denySetgroups(rec.userns);
          await writeMaps(fd, member.pid, t.parent?.fd ?? null, maps.uid, maps.gid);
        } catch (e) {
          await this.registry.exclusive(() => this.manager.drop(rec));
          throw e;
        }
        await this.registry.exclusive(() => this.manager.markMapped(rec.userns));
        return { name };
      } finally {
        if (t.parent) fs.closeSync(t.parent.fd);
      }
    } finally {
      await member.release();
    }
  }

  /** Picks the ranges, builds the maps and writes the record; runs under the registry lock. */
  private reserve(t: Target, name: string, owner: number, req: AllocRequest, self: SelfIds | null): { rec: NamespaceRecord; maps: Maps } {
    const { info, parent } = t;
    const existing = this.registry.byUserns(info.inode);
    if (existing) {
      if (!this.manager.reapIfDead(existing)) throw new NamespaceResourceError('UserNamespaceExists');
    }
    const sameName = this.registry.findName(name);
    if (sameName && !this.manager.reapIfDead(sameName)) throw new NamespaceResourceError('NameExists');
    this.manager.enforceOwnerCap(owner);

    // Only what the parent got delegated is mapped 1:1 there and may be handed on (asked for
    // only when something is picked: a "self" namespace without delegations needs none).
    const candidates = (): readonly IdRange[] => {
      if (!parent) return WHOLE_ID_SPACE;
      if (!parent.record) throw new NamespaceResourceError('DynamicRangeUnavailable');
      return parent.record.delegates;
    };
    const taken = new Set<number>();
    const available = (start: number, sz: number): boolean => !taken.has(start) && this.isFree(start, sz, parent?.inode);
    const pick = (sz: number, seed: number): number => {
      const r = pickRange(candidates(), sz, seed, (s) => available(s, sz));
      if (!r.ok) throw new NamespaceResourceError(r.reason === 'unavailable' ? 'DynamicRangeUnavailable' : 'NoDynamicRange');
      taken.add(r.start);
      return r.start;
    };
    const start = self ? self.uid : pick(req.size, nameHash(name));
    const delegates = Array.from({ length: req.delegations }, (_, i) => {
      const s = pick(CONTAINER_SIZE, nameHash(`${name}/${i}`));
      const prev = parent ? this.registry.byUserns(parent.inode)?.delegates.find((d) => d.start === s) : undefined;
      return { start: s, size: CONTAINER_SIZE, ancestors: parent && prev ? [...prev.ancestors, parent.inode] : [] };
    });
    const rec: NamespaceRecord = {
      userns: info.inode,
      nsId: info.nsId,
      owner,
      name,
      size: req.size,
      start,
      target: req.target ?? self?.parentUid ?? 0,
      startGid: self ? self.gid : start,
      targetGid: req.target ?? self?.parentGid ?? 0,
      ...(req.type === 'self' ? { type: 'self' as const } : {}),
      ...(req.mapForeign ? { mapForeign: true } : {}),
      ...(parent ? { parent: parent.inode } : {}),
      cgroups: [],
      delegates,
      pending: true,
    };
    const maps = mapLines(rec, self);
    // The kernel refuses overlapping extents (EINVAL): say which parameter caused it.
    if (overlaps(maps, 'inside')) throw invalidParameter('target');
    if (overlaps(maps, 'outside')) throw invalidParameter(req.mapForeign ? 'mapForeign' : 'type');
    this.registry.put(rec);
    return { rec, maps };
  }

  /** Is [start, start+size) free for a namespace whose parent is `parentInode` (undefined: ours)? */
  private isFree(start: number, size: number, parentInode: number | undefined): boolean {
    for (const other of [this.registry.findUidStart(start), this.registry.findGidStart(start)]) {
      if (other && !this.manager.reapIfDead(other)) return false;
    }
    if (size === CONTAINER_SIZE) {
      const holder = this.registry.delegationHolder(start);
      if (holder !== parentInode) return false;
    }
    // Host users and groups only matter where the daemon's own IDs are handed out.
    return parentInode !== undefined || !this.hostIds.overlaps(start, size);
  }

  private async register(p: RegisterUserNamespaceParameters, ctx: CallContext): Promise<RegisterUserNamespaceReply> {
    const policy = this.requirePolicy();
    const name = namespaceName(p.name, ctx.peer.uid, p.mangleName === true);
    if (name === null) throw invalidParameter('name');
    const fd = ctx.fd(p.userNamespaceFileDescriptor, 'userNamespaceFileDescriptor');
    const member = await this.joinValidated(fd, ctx.peer.uid);
    let info: Target['info'];
    try {
      checkRegisterable(readMap(member.pid, 'uid_map'), readMap(member.pid, 'gid_map'), ctx.peer);
      info = this.target(fd, false).info;
    } finally {
      await member.release();
    }
    await this.registry.exclusive(() => {
      const existing = this.registry.byUserns(info.inode);
      if (existing && !this.manager.reapIfDead(existing)) throw new NamespaceResourceError('UserNamespaceExists');
      const sameName = this.registry.findName(name);
      if (sameName && !this.manager.reapIfDead(sameName)) throw new NamespaceResourceError('NameExists');
      this.manager.enforceOwnerCap(ctx.peer.uid);
      const rec: NamespaceRecord = { userns: info.inode, nsId: info.nsId, owner: ctx.peer.uid, name, size: 0, cgroups: [], delegates: [] };
      this.registry.put(rec);
      try {
        policy.manage(rec.userns); // so that its death is reported
      } catch (e) {
        this.registry.remove(rec.userns);
        throw e;
      }
    });
    return { name };
  }

  private async addMount(p: AddMountToUserNamespaceParameters, ctx: CallContext): Promise<Record<string, never>> {
    this.requirePolicy();
    if (ctx.peer.uid !== 0) throw permissionDenied();
    this.registeredRecord(ctx.fd(p.userNamespaceFileDescriptor, 'userNamespaceFileDescriptor'));
    const mfd = ctx.fd(p.mountFileDescriptor, 'mountFileDescriptor');
    if (!fs.fstatSync(mfd).isDirectory()) throw invalidParameter('mountFileDescriptor');
    // The write policy is keyed on where bytes land, not on a mount allowlist: nothing to record.
    return {};
  }

  private async addControlGroup(p: AddControlGroupToUserNamespaceParameters, ctx: CallContext): Promise<Record<string, never>> {
    this.requirePolicy();
    const rec = this.registeredRecord(ctx.fd(p.userNamespaceFileDescriptor, 'userNamespaceFileDescriptor'));
    if (rec.size === 0 || rec.start === undefined) throw new NamespaceResourceError('UserNamespaceWithoutUserRange');
    const cfd = ctx.fd(p.controlGroupFileDescriptor, 'controlGroupFileDescriptor');
    const { dir, uid: dirOwner } = controlGroupOf(cfd);
    if (ctx.peer.uid !== 0 && (rec.owner !== ctx.peer.uid || dirOwner !== ctx.peer.uid)) throw permissionDenied();
    const uid = rec.start;
    const gid = rec.startGid ?? rec.start;
    await this.registry.exclusive(() => {
      const cur = this.registry.byUserns(rec.userns);
      if (!cur) throw new NamespaceResourceError('UserNamespaceNotRegistered');
      if (cur.cgroups.includes(dir)) throw new NamespaceResourceError('ControlGroupAlreadyAdded');
      if (cur.cgroups.length >= MAX_CGROUPS) throw new NamespaceResourceError('TooManyControlGroups');
      delegateControlGroup(cfd, uid, gid);
      this.registry.put({ ...cur, cgroups: [...cur.cgroups, dir] });
    });
    return {};
  }

  /** vl_method_add_netif_to_user_namespace() in nsresourcework.c: a veth pair whose peer goes to
   * the namespace's network namespace, or a tap device whose fd is handed back. */
  private async addNetwork(p: AddNetworkToUserNamespaceParameters, ctx: CallContext): Promise<{ parameters: AddNetworkToUserNamespaceReply; fds?: number[] }> {
    this.requirePolicy();
    const usernsFd = ctx.fd(p.userNamespaceFileDescriptor, 'userNamespaceFileDescriptor');
    if (ctx.peer.uid !== 0 && this.inspect(usernsFd).ownerUid !== ctx.peer.uid) throw permissionDenied();
    const netnsIndex = p.networkNamespaceFileDescriptor ?? undefined;
    const netnsFd = netnsIndex === undefined ? undefined : ctx.fd(netnsIndex, 'networkNamespaceFileDescriptor');
    if (netnsFd !== undefined) validateNetns(netnsFd, usernsFd, ctx.peer.uid);
    const requested = p.namespaceInterfaceName ?? undefined;
    if (requested !== undefined && !isValidIfname(requested)) throw invalidParameter('namespaceInterfaceName');
    const mode = p.mode;
    if (mode === 'veth') {
      if (netnsFd === undefined) throw invalidParameter('networkNamespaceFileDescriptor');
    } else if (mode === 'tap') {
      // The tap's fd is the namespace's side: neither a network namespace nor a name applies.
      if (requested !== undefined) throw invalidParameter('namespaceInterfaceName');
      if (netnsFd !== undefined) throw invalidParameter('networkNamespaceFileDescriptor');
    } else {
      throw invalidParameter('mode');
    }
    this.registeredRecord(usernsFd);
    // The tap belongs to the namespace's root as the daemon sees it (userns_get_base_uid()).
    const tapOwner = mode === 'tap' ? await rootUid(usernsFd) : undefined;

    const created: CreatedNetif = await this.registry.exclusive(() => {
      const rec = this.registeredRecord(usernsFd);
      const before = rec.netifs ?? [];
      const hostName = hostIfname(rec.name, requested);
      // The same name again (same namespace-side name, or a tap after the default veth, as
      // upstream) is the same host link: the kernel answers EEXIST while it exists. One whose
      // link is gone (a closed tap) may be made again without counting twice.
      const known = before.some((n) => n.name === hostName);
      if (!known && before.length >= MAX_NETIFS) throw new NamespaceResourceError('TooManyNetworkInterfaces');
      if (ctx.peer.uid !== 0 && ctx.peer.uid !== rec.owner) throw permissionDenied();
      // Recorded before it exists: whatever happens next, releasing the namespace removes it.
      const entry: { name: string; mode: NetifMode } = { name: hostName, mode };
      this.registry.put({ ...rec, netifs: [...before.filter((n) => n.name !== hostName), entry] });
      try {
        return createNetif({ mode: entry.mode, owner: rec.owner, nsName: rec.name, requested, netnsFd, tapOwner }, hostName, (err) =>
          this.log?.warn({ err, method: ctx.method, uid: ctx.peer.uid, netif: hostName }, 'alternative interface name not set'),
        );
      } catch (e) {
        const cur = this.registry.byUserns(rec.userns);
        if (cur) this.registry.put({ ...cur, netifs: before });
        throw e;
      }
    });
    if (created.fd !== undefined) return { parameters: { hostInterfaceName: created.hostName, interfaceFileDescriptor: 0 }, fds: [created.fd] };
    return { parameters: { hostInterfaceName: created.hostName, namespaceInterfaceName: created.namespaceName } };
  }

  /** Checks the fd is a user namespace other than ours and, for non-root peers, theirs, then
   * spawns the helper that joins it (needed to read and write its maps). */
  private async joinValidated(fd: number, peerUid: number): Promise<UserNamespaceMember> {
    const info = this.inspect(fd);
    if (peerUid !== 0 && info.ownerUid !== peerUid) throw permissionDenied();
    return joinUserNamespace(fd);
  }

  private inspect(fd: number): UserNamespaceInfo {
    let info: UserNamespaceInfo;
    try {
      if (fdFlags(fd).path) throw invalidParameter('userNamespaceFileDescriptor');
      info = userNamespaceInfo(fd);
    } catch (e) {
      if (e instanceof VarlinkError) throw e;
      throw invalidParameter('userNamespaceFileDescriptor');
    }
    if (info.inode === this.ownUserns) throw invalidParameter('userNamespaceFileDescriptor');
    return info;
  }

  private target(fd: number, withParent = true): Target {
    const raw = this.inspect(fd);
    const info = { ...raw, nsId: raw.id === undefined ? '' : raw.id.toString() };
    if (!withParent) return { info, parent: null };
    const pfd = nsGetParent(fd);
    const pinode = fs.fstatSync(pfd).ino;
    if (pinode === this.ownUserns) {
      fs.closeSync(pfd);
      return { info, parent: null };
    }
    let record = this.registry.byUserns(pinode);
    if (record && record.nsId !== '' && record.nsId !== (this.inspect(pfd).id?.toString() ?? '')) record = undefined;
    return { info, parent: { inode: pinode, fd: pfd, record } };
  }

  private registeredRecord(fd: number): NamespaceRecord {
    const info = this.inspect(fd);
    const rec = this.registry.byUserns(info.inode);
    if (!rec || (rec.nsId !== '' && info.id !== undefined && rec.nsId !== info.id.toString())) throw new NamespaceResourceError('UserNamespaceNotRegistered');
    return rec;
  }
}

/** validate_target_and_size() in nsresourcework.c: "self" maps exactly the caller's ids, to
 * themselves or to 0; "managed" a pool range of 1 or 65536 to any target that fits. */
function allocRequest(p: AllocateUserRangeParameters): AllocRequest {
  const type = p.type ?? 'managed';
  const size = p.size;
  const target = p.target ?? undefined;
  if (type === 'self') {
    if (size !== 1) throw invalidParameter('size');
    if (target !== undefined && target !== 0) throw invalidParameter('target');
  } else {
    if (size !== 1 && size !== CONTAINER_SIZE) throw invalidParameter('size');
    if (target !== undefined && (target < 0 || target + size > UID_INVALID)) throw invalidParameter('target');
  }
  const delegations = p.delegateContainerRanges ?? 0;
  if (delegations < 0) throw invalidParameter('delegateContainerRanges');
  if (delegations > MAX_DELEGATIONS) throw new NamespaceResourceError('TooManyDelegations');
  return { type, size, target: type === 'self' ? target : (target ?? 0), delegations, mapForeign: p.mapForeign === true };
}

/**
 * What a "self" or foreign mapping needs from the parent namespace (the maps name the parent's
 * ids): the caller's ids as the parent sees them, and that the parent maps the foreign range
 * 1:1 (uid_range_translate() in upstream's write_userns()). The daemon's own namespace maps
 * everything to itself.
 */
async function parentView(t: Target, req: AllocRequest, peer: { uid: number; gid: number }): Promise<SelfIds | null> {
  if (req.type !== 'self' && !req.mapForeign) return null;
  const maps = t.parent ? await readUserNamespaceMaps(t.parent.fd) : null;
  const toParent = (lines: MapLine[] | undefined, id: number): number | null => {
    if (!lines) return id;
    const l = lines.find((x) => id >= x.outside && id - x.outside < x.count);
    return l ? l.inside + (id - l.outside) : null;
  };
  if (req.mapForeign) {
    for (const lines of [maps?.uid, maps?.gid]) {
      const l = lines?.find((x) => x.outside <= FOREIGN_RANGE.start && FOREIGN_RANGE.start - x.outside < x.count);
      if (lines && !(l && l.inside === l.outside && l.outside + l.count >= FOREIGN_RANGE.start + FOREIGN_RANGE.size)) throw systemError('ERANGE');
    }
  }
  if (req.type !== 'self') return null;
  const parentUid = toParent(maps?.uid, peer.uid);
  const parentGid = toParent(maps?.gid, peer.gid);
  if (parentUid === null || parentGid === null) throw systemError('ERANGE');
  return { uid: peer.uid, gid: peer.gid, parentUid, parentGid };
}

/** The map lines of an allocation: the transient range (or the caller's own ids), each
 * delegated range 1:1, then the foreign range 1:1 if asked for (upstream's write_userns()). */
function mapLines(rec: NamespaceRecord, self: SelfIds | null): Maps {
  const extra: MapLine[] = [
    ...rec.delegates.map((d) => ({ inside: d.start, outside: d.start, count: d.size })),
    ...(rec.mapForeign ? [{ inside: FOREIGN_RANGE.start, outside: FOREIGN_RANGE.start, count: FOREIGN_RANGE.size }] : []),
  ];
  return {
    uid: [{ inside: rec.target ?? 0, outside: self ? self.parentUid : (rec.start ?? 0), count: rec.size }, ...extra],
    gid: [{ inside: rec.targetGid ?? 0, outside: self ? self.parentGid : (rec.startGid ?? 0), count: rec.size }, ...extra],
  };
}

function overlaps(maps: Maps, side: 'inside' | 'outside'): boolean {
  return [maps.uid, maps.gid].some((lines) => {
    const sorted = [...lines].sort((a, b) => a[side] - b[side]);
    return sorted.some((l, i) => i > 0 && sorted[i - 1]![side] + sorted[i - 1]!.count > l[side]);
  });
}

/** The uid that the namespace's uid 0 is (upstream: userns_get_base_uid(); ENXIO if unmapped). */
async function rootUid(fd: number): Promise<number> {
  const { uid } = await readUserNamespaceMaps(fd);
  const l = uid.find((x) => x.inside === 0);
  if (!l) throw systemError('ENXIO');
  return l.outside;
}


/** validate_userns_is_safe() in nsresourcework.c: one line each, uid and gid maps alike, starting at
 * the peer's own IDs, mapping to 0 inside when more than one ID is mapped. */
function checkRegisterable(uidMap: string, gidMap: string, peer: { uid: number; gid: number }): void {
  const parse = (m: string): number[] | null => {
    const lines = m.split('\n').filter(Boolean);
    if (lines.length !== 1) return null;
    const nums = lines[0].trim().split(/\s+/).map(Number);
    return nums.length === 3 && nums.every(Number.isSafeInteger) ? nums : null;
  };
  const u = parse(uidMap);
  const g = parse(gidMap);
  const ok =
    u !== null &&
    g !== null &&
    u[2] > 0 &&
    u[2] === g[2] &&
    u[0] === g[0] &&
    u[1] === peer.uid &&
    g[1] === peer.gid &&
    (u[2] === 1 || u[0] === 0);
  if (!ok) throw invalidParameter('userNamespaceFileDescriptor');
}
