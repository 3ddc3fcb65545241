// The policy the userdbd tests run with: the real BPF UsernsPolicy when the kernel lets it attach,
// otherwise what `mountgate userdbd --allow-without-policy` runs with (UnenforcedPolicy: deaths
// are then found by the daemon's liveness sweep). Tests pass `allowWithoutPolicy: !real`.
import { UsernsPolicy } from '../../src/bpf/policy.js';
import type { NamespaceDeath, NamespacePolicy, PolicyStatus } from '../../src/userdbd/namespace-resource.js';
import { UnenforcedPolicy } from '../../src/userdbd/unenforced-policy.js';

export interface TestPolicy {
  policy: NamespacePolicy;
  real: boolean;
  /** Why the policy is not enforced. */
  why?: string;
  dispose(): void;
}

/** The pin directory of a test policy named `name` (one per test file or daemon). */
function testPinDir(name: string): string {
  return `/sys/fs/bpf/mountgate-test-${name}`;
}

/** `name` picks a private pin directory under /sys/fs/bpf (testPinDir). */
export async function loadPolicy(name: string): Promise<TestPolicy> {
  const pinDir = testPinDir(name);
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

/** Records the policy calls (and forwards them to the test policy). */
export class RecordingPolicy implements NamespacePolicy {
  readonly calls: Array<[string, number]> = [];
  constructor(private readonly inner: NamespacePolicy) {}
  status(): PolicyStatus {
    return this.inner.status();
  }
  manage(inode: number): void {
    this.calls.push(['manage', inode]);
    this.inner.manage(inode);
  }
  unmanage(inode: number): void {
    this.calls.push(['unmanage', inode]);
    this.inner.unmanage(inode);
  }
  denySetgroups(inode: number): void {
    this.calls.push(['denySetgroups', inode]);
    this.inner.denySetgroups(inode);
  }
  deaths(): AsyncIterable<NamespaceDeath> {
    return this.inner.deaths();
  }
  close(): void {
    // the test disposes of the inner policy
  }
}
