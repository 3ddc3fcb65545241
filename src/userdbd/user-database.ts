// io.systemd.UserDatabase for the allocated ranges (as nsresourced serves it): users and groups
// "ns-<name>-<offset>" resolve by name or number; no enumeration, no memberships.
import { VarlinkError } from '../ipc/errors.js';
import type { Handler, Service } from '../ipc/server.js';
import { USER_DATABASE_IDL } from './interfaces.js';
import { parseInterface } from '../ipc/idl.js';
import { parseUserName, userName } from './naming.js';
import { CONTAINER_SIZE, CONTAINER_WINDOW, DYNAMIC_WINDOW } from './range-allocator.js';
import type { NamespaceRecord, Registry } from './registry.js';

export const USERDB_SERVICE = 'io.systemd.NamespaceResource';
const IFACE = 'io.systemd.UserDatabase';
const NOBODY_GID = 65534;
const NOLOGIN = '/usr/sbin/nologin';

const err = (name: string): VarlinkError => new VarlinkError(`${IFACE}.${name}`);

interface Hit {
  rec: NamespaceRecord;
  offset: number;
}

type Kind = 'user' | 'group';

export function userDatabaseService(registry: Registry): Service {
  const lookup = (kind: Kind, p: Record<string, unknown>): Hit => {
    if (p.service !== USERDB_SERVICE) throw err('BadService');
    // Optional fields may come as null, which means not given.
    const id = ((kind === 'user' ? p.uid : p.gid) ?? undefined) as number | undefined;
    const name = ((kind === 'user' ? p.userName : p.groupName) ?? undefined) as string | undefined;
    if (id === undefined && name === undefined) throw err('EnumerationNotSupported');
    const hit = name !== undefined ? byName(registry, name) : byNumber(registry, kind, id as number);
    if (!hit) throw err('NoRecordFound');
    if (name !== undefined && id !== undefined && idOf(kind, hit) !== id) throw err('ConflictingRecordFound');
    const num = idOf(kind, hit);
    const min = ((kind === 'user' ? p.uidMin : p.gidMin) ?? undefined) as number | undefined;
    const max = ((kind === 'user' ? p.uidMax : p.gidMax) ?? undefined) as number | undefined;
    const mask = (p.dispositionMask ?? undefined) as string[] | undefined;
    // Our records carry no uuid, so a uuid filter never matches (systemd: user_record_match()).
    const uuid = (p.uuid ?? undefined) as string | undefined;
    if ((min !== undefined && num < min) || (max !== undefined && num > max) || (mask && !mask.includes(disposition(hit.rec))) || uuid !== undefined) {
      throw err('NonMatchingRecordFound');
    }
    return hit;
  };
  const user: Handler = async (p) => ({ parameters: { record: userRecord(lookup('user', p)), incomplete: false } });
  const group: Handler = async (p) => ({ parameters: { record: groupRecord(lookup('group', p)), incomplete: false } });
  return {
    iface: parseInterface(USER_DATABASE_IDL),
    handlers: {
      GetUserRecord: user,
      GetGroupRecord: group,
      GetMemberships: async (p) => {
        if (p.service !== USERDB_SERVICE) throw err('BadService');
        throw err('NoRecordFound'); // no auxiliary group memberships
      },
    },
  };
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
