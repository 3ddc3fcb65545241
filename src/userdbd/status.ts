// io.mountgate.Userdbd.GetStatus: what `mountgate status` shows about userdbd: the ranges in
// use, by whom, and whether the BPF policy is enforcing.
import { serve } from '../ipc/interfaces/define.js';
import { UserdbdStatus } from '../ipc/interfaces/io.mountgate.Userdbd.js';
import type { Service } from '../ipc/server.js';
import type { NamespacePolicy } from './namespace-resource.js';
import type { Registry } from './registry.js';

export function userdbdStatusService(registry: Registry, policy: NamespacePolicy | undefined): Service {
  return serve(UserdbdStatus, {
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
  });
}
