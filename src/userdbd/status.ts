// io.mountgate.Userdbd.GetStatus: what `mountgate status` shows about userdbd: the ranges in
// use, by whom, and whether the BPF policy is enforcing.
import { parseInterface } from '../ipc/idl.js';
import type { Service } from '../ipc/server.js';
import type { NamespacePolicy } from './namespace-resource.js';
import type { Registry } from './registry.js';

export const USERDBD_STATUS_IDL = `# Ranges handed out by userdbd and the state of its BPF policy.
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
`;

export function userdbdStatusService(registry: Registry, policy: NamespacePolicy | undefined): Service {
  return {
    iface: parseInterface(USERDBD_STATUS_IDL),
    handlers: {
      GetStatus: async () => {
        const st = policy?.status() ?? { lsm: false, attached: false, pinned: false, managed: 0, hooks: [], reason: 'no policy loaded' };
        return {
          parameters: {
            policy: { lsm: st.lsm, attached: st.attached, pinned: st.pinned, managed: st.managed, hooks: st.hooks, reason: st.reason ?? null },
            namespaces: registry.all().map((r) => ({
              name: r.name,
              owner: r.owner,
              userNamespaceInode: r.userns,
              base: r.start ?? 0,
              size: r.size,
              delegations: r.delegates.map((d) => d.start),
              type: r.type ?? 'managed',
              mapForeign: r.mapForeign === true,
              networkInterfaces: (r.netifs ?? []).map((n) => n.name),
            })),
          },
        };
      },
    },
  };
}
