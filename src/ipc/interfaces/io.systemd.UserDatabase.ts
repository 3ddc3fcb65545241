// io.systemd.UserDatabase as userdbd serves it for the ranges it handed out (userdbd/
// user-database.ts), as systemd's nsresourced does (src/shared/varlink-io.systemd.UserDatabase.c).
import { defineInterface } from './define.js';
import { VarlinkError } from '../errors.js';
export const UserDatabase = defineInterface<Methods, Errors>(`# User and group records (JSON User/Group Records).
interface io.systemd.UserDatabase

# Look up a user record by UID and/or name.
method GetUserRecord(
  uid: ?int,
  userName: ?string,
  fuzzyNames: ?[]string,
  dispositionMask: ?[]string,
  uidMin: ?int,
  uidMax: ?int,
  # Restrict to this record UUID (systemd 262). Transient records have none, so nothing matches.
  uuid: ?string,
  service: string
) -> (
  record: object,
  incomplete: ?bool
)

# Look up a group record by GID and/or name.
method GetGroupRecord(
  gid: ?int,
  groupName: ?string,
  fuzzyNames: ?[]string,
  dispositionMask: ?[]string,
  gidMin: ?int,
  gidMax: ?int,
  # Restrict to this record UUID (systemd 262). Transient records have none, so nothing matches.
  uuid: ?string,
  service: string
) -> (
  record: object,
  incomplete: ?bool
)

# Look up user/group memberships.
method GetMemberships(
  userName: ?string,
  groupName: ?string,
  service: string
) -> (
  userName: string,
  groupName: string
)

error NoRecordFound ()
error BadService ()
error ServiceNotAvailable ()
error ConflictingRecordFound ()
error EnumerationNotSupported ()
error NonMatchingRecordFound ()
`);

/** The `service` every io.systemd.UserDatabase call names: nsresourced's, whose socket
 * (/run/systemd/userdb/io.systemd.NamespaceResource) userdbd links to. */
export const USERDB_SERVICE = 'io.systemd.NamespaceResource';

/** An io.systemd.UserDatabase error (its name read from the IDL above). */
export class UserDatabaseError extends VarlinkError {
  constructor(readonly kind: keyof Errors) {
    super(UserDatabase.error[kind]);
    this.name = 'UserDatabaseError';
  }
}

// --- generated from the IDL by typegen.ts: do not edit below ---
export type GetUserRecordParameters = { uid?: number | null; userName?: string | null; fuzzyNames?: string[] | null; dispositionMask?: string[] | null; uidMin?: number | null; uidMax?: number | null; uuid?: string | null; service: string };
export type GetUserRecordReply = { record: unknown; incomplete?: boolean | null };
export type GetGroupRecordParameters = { gid?: number | null; groupName?: string | null; fuzzyNames?: string[] | null; dispositionMask?: string[] | null; gidMin?: number | null; gidMax?: number | null; uuid?: string | null; service: string };
export type GetGroupRecordReply = { record: unknown; incomplete?: boolean | null };
export type GetMembershipsParameters = { userName?: string | null; groupName?: string | null; service: string };
export type GetMembershipsReply = { userName: string; groupName: string };
export type Methods = { GetUserRecord: { parameters: GetUserRecordParameters; reply: GetUserRecordReply }; GetGroupRecord: { parameters: GetGroupRecordParameters; reply: GetGroupRecordReply }; GetMemberships: { parameters: GetMembershipsParameters; reply: GetMembershipsReply } };
export type Errors = { NoRecordFound: Record<string, never>; BadService: Record<string, never>; ServiceNotAvailable: Record<string, never>; ConflictingRecordFound: Record<string, never>; EnumerationNotSupported: Record<string, never>; NonMatchingRecordFound: Record<string, never> };
// --- end of generated types ---
