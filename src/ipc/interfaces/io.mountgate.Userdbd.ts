// io.mountgate.Userdbd: userdbd's own introspection (GetStatus in userdbd/status.ts), read by
// `mountgate status` (cli/status.ts): the ranges in use, by whom, and whether the BPF policy is
// enforcing.
import { defineInterface } from './define.js';

export const UserdbdStatus = defineInterface<Methods, Errors>(`# Ranges handed out by userdbd and the state of its BPF policy.
interface io.mountgate.Userdbd

type PolicyState (
  # The BPF LSM is active in the kernel.
  lsm: bool,
  # The policy programs are attached (the policy is enforced).
  attached: bool,
  # The programs and maps are pinned and survive a daemon restart.
  pinned: bool,
  # Namespaces in the policy's map.
  managed: int,
  # The attached programs, named by the LSM hook or kprobe each is attached to.
  hooks: ?[]string,
  # Why the policy is not enforced, if it is not.
  reason: ?string
)

type Namespace (
  name: string,
  # Uid of the caller that registered the namespace.
  owner: int,
  userNamespaceInode: int,
  # First host uid/gid of the transient range (0 with size 0: registered without a range).
  base: int,
  size: int,
  # Extra 64K ranges delegated for nested containers (their first ids).
  delegations: []int,
  # "managed", or "self": base is the owner's own uid, no range is held.
  type: ?string,
  # The foreign range is mapped 1:1 as well.
  mapForeign: ?bool,
  # Host-side network interfaces handed to the namespace.
  networkInterfaces: ?[]string
)

method GetStatus() -> (
  policy: PolicyState,
  namespaces: []Namespace
)
`);

// --- generated from the IDL by typegen.ts: do not edit below ---
export type PolicyState = { lsm: boolean; attached: boolean; pinned: boolean; managed: number; hooks?: string[] | null; reason?: string | null };
export type Namespace = { name: string; owner: number; userNamespaceInode: number; base: number; size: number; delegations: number[]; type?: string | null; mapForeign?: boolean | null; networkInterfaces?: string[] | null };
export type GetStatusParameters = Record<string, never>;
export type GetStatusReply = { policy: PolicyState; namespaces: Namespace[] };
export type Methods = { GetStatus: { parameters: GetStatusParameters; reply: GetStatusReply } };
export type Errors = Record<string, never>;
// --- end of generated types ---
