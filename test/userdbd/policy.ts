// The policy the userdbd tests run with: the real BPF UsernsPolicy when the kernel lets it attach,
// otherwise what `mountgate userdbd --allow-without-policy` runs with (UnenforcedPolicy: deaths
// are then found by the daemon's liveness sweep). Tests pass `allowWithoutPolicy: !real`.
import { UsernsPolicy } from '../../src/bpf/policy.js';
import type { NamespacePolicy } from '../../src/userdbd/namespace-resource.js';
import { UnenforcedPolicy } from '../../src/userdbd/unenforced-policy.js';

export interface TestPolicy {
  policy: NamespacePolicy;
  real: boolean;
  /** Why the policy is not enforced. */
  why?: string;
  dispose(): void;
}

/** `name` picks a private pin directory under /sys/fs/bpf (one per test file or daemon). */
export async function loadPolicy(name: string): Promise<TestPolicy> {
  const pinDir = `/sys/fs/bpf/mountgate-test-${name}`;
  const lsm = UsernsPolicy.lsmAvailable();
  let why = "'bpf' is not an active LSM";
  if (lsm) {
    const policy = UsernsPolicy.install({ pinDir });
    const st = policy.status();
    if (st.attached) {
      return {
        policy,
        real: true,
        dispose: () => {
          policy.close();
          UsernsPolicy.uninstall(pinDir);
        },
      };
    }
    policy.close();
    UsernsPolicy.uninstall(pinDir);
    why = `BPF policy not attached: ${st.reason ?? '?'}`;
  }
  return { policy: new UnenforcedPolicy(lsm, why), real: false, why, dispose: () => {} };
}
