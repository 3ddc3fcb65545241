// Stands in for the BPF policy when the operator explicitly runs userdbd without it
// (`--allow-without-policy`, e.g. on kernels that refuse BPF-LSM programs). Allocation works,
// but nothing stops a namespace from leaving files owned by its transient ids behind, and
// deaths are found by the registry's liveness sweep instead of BPF events. status() says so.
import type { NamespaceDeath, NamespacePolicy, PolicyStatus } from './namespace-resource.js';

export class UnenforcedPolicy implements NamespacePolicy {
  private readonly managed = new Set<number>();

  constructor(
    private readonly lsm: boolean,
    private readonly reason: string,
  ) {}

  status(): PolicyStatus {
    return { lsm: this.lsm, attached: false, pinned: false, managed: this.managed.size, hooks: [], reason: `not enforced: ${this.reason}` };
  }

  manage(usernsInode: number): void {
    this.managed.add(usernsInode);
  }

  unmanage(usernsInode: number): void {
    this.managed.delete(usernsInode);
  }

  denySetgroups(): void {
    // Nothing can enforce it without the BPF program.
  }

  async *deaths(): AsyncIterable<NamespaceDeath> {
    // No death events: the liveness sweep releases dead namespaces.
  }

  close(): void {
    this.managed.clear();
  }
}
