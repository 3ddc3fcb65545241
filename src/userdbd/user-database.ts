// io.systemd.UserDatabase for the allocated ranges (as nsresourced serves it): users and groups
// "ns-<name>-<offset>" resolve by name or number; no enumeration, no memberships.
import type { Service } from '../ipc/server.js';
import { serve } from '../ipc/interfaces/define.js';
import {
  USERDB_SERVICE,
  UserDatabase,
  UserDatabaseError,
  type GetGroupRecordParameters,
  type GetUserRecordParameters,
} from '../ipc/interfaces/io.systemd.UserDatabase.js';
import { parseUserName, userName } from './naming.js';
import { CONTAINER_SIZE, CONTAINER_WINDOW, DYNAMIC_WINDOW } from './range-allocator.js';
import type { NamespaceRecord, Registry } from './registry.js';

const NOBODY_GID = 65534;
const NOLOGIN = '/usr/sbin/nologin';

interface Hit {
  rec: NamespaceRecord;
  offset: number;
}

type Kind = 'user' | 'group';

/** A user or group lookup, whichever it is (GetUserRecord's and GetGroupRecord's fields). */
interface Lookup {
  service: string;
  id?: number | null;
  name?: string | null;
  min?: number | null;
  max?: number | null;
  dispositionMask?: string[] | null;
  uuid?: string | null;
}

const userLookup = (p: GetUserRecordParameters): Lookup => ({ ...p, id: p.uid, name: p.userName, min: p.uidMin, max: p.uidMax });
const groupLookup = (p: GetGroupRecordParameters): Lookup => ({ ...p, id: p.gid, name: p.groupName, min: p.gidMin, max: p.gidMax });

export function userDatabaseService(registry: Registry): Service {
  const lookup = (kind: Kind, p: Lookup): Hit => {
    if (p.service !== USERDB_SERVICE) throw new UserDatabaseError('BadService');
    // Optional fields may come as null, which means not given.
    const id = p.id ?? undefined;
    const name = p.name ?? undefined;
    if (id === undefined && name === undefined) throw new UserDatabaseError('EnumerationNotSupported');
    const hit = name !== undefined ? byName(registry, name) : id !== undefined ? byNumber(registry, kind, id) : undefined;
    if (!hit) throw new UserDatabaseError('NoRecordFound');
    if (name !== undefined && id !== undefined && idOf(kind, hit) !== id) throw new UserDatabaseError('ConflictingRecordFound');
    const num = idOf(kind, hit);
    const min = p.min ?? undefined;
    const max = p.max ?? undefined;
    const mask = p.dispositionMask ?? undefined;
    // Our records carry no uuid, so a uuid filter never matches (systemd: user_record_match()).
    const uuid = p.uuid ?? undefined;
    if ((min !== undefined && num < min) || (max !== undefined && num > max) || (mask && !mask.includes(disposition(hit.rec))) || uuid !== undefined) {
      throw new UserDatabaseError('NonMatchingRecordFound');
    }
    return hit;
  };
  return serve(UserDatabase, {
    GetUserRecord: async (p) => ({ parameters: { record: userRecord(lookup('user', userLookup(p))), incomplete: false } }),
    GetGroupRecord: async (p) => ({ parameters: { record: groupRecord(lookup('group', groupLookup(p))), incomplete: false } }),
    GetMemberships: async (p) => {
      if (p.service !== USERDB_SERVICE) throw new UserDatabaseError('BadService');
      throw new UserDatabaseError('NoRecordFound'); // no auxiliary group memberships
    },
  });
}

function byName(registry: Registry, name: string): Hit | undefined {
  const parsed = parseUserName(name);
  if (!parsed) return undefined;
  const rec = registry.findName(parsed.nsName);
  if (!rec || parsed.offset >= rec.size) return undefined;
  return { rec, offset: parsed.offset };
}

function byNumber(registry: Registry, kind: Kind, id: number): Hit | undefined {
  let start: number;
  if (id >= CONTAINER_WINDOW.min && id <= CONTAINER_WINDOW.max) start = id - (id % CONTAINER_SIZE);
  else if (id >= DYNAMIC_WINDOW.min && id <= DYNAMIC_WINDOW.max) start = id;
  else return undefined;
  const rec = kind === 'user' ? registry.findUidStart(start) : registry.findGidStart(start);
  if (!rec || id - start >= rec.size) return undefined;
  return { rec, offset: id - start };
}

function idOf(kind: Kind, hit: Hit): number {
  const start = kind === 'user' ? hit.rec.start : (hit.rec.startGid ?? hit.rec.start);
  return (start ?? 0) + hit.offset;
}

function disposition(rec: NamespaceRecord): string {
  return rec.size > 1 ? 'container' : 'dynamic';
}

function userRecord(hit: Hit): Record<string, unknown> {
  const { rec, offset } = hit;
  return {
    userName: userName(rec.name, offset),
    uid: idOf('user', hit),
    gid: NOBODY_GID,
    realName: rec.size > 1 ? `User ${offset} of Allocated Namespace ${rec.name}` : `Allocated Namespace ${rec.name}`,
    homeDirectory: '/',
    shell: NOLOGIN,
    locked: true,
    service: USERDB_SERVICE,
    disposition: disposition(rec),
  };
}

function groupRecord(hit: Hit): Record<string, unknown> {
  const { rec, offset } = hit;
  return {
    groupName: userName(rec.name, offset),
    gid: idOf('group', hit),
    description: rec.size > 1 ? `Group ${offset} of Allocated Namespace ${rec.name}` : `Allocated Namespace ${rec.name}`,
    service: USERDB_SERVICE,
    disposition: disposition(rec),
  };
}
