// userdbd's manager (after systemd's nsresourced-manager.c): the namespace lifecycle the
// Varlink methods (namespace-resource.ts) rely on but do not own. A namespace is released only
// once its death is proven (nsfs handle and NS_GET_ID, userNamespaceLiveness()): on the policy's
// death report (release), by the liveness sweep and at start (reapDead), and when a record is in
// the way of a new one (reapIfDead). Releasing returns the record's ranges, policy entry,
// delegated cgroups and host-side interfaces. At start it settles what a crash cut off
// (settlePending) and puts every namespace back under the policy (manageAll).
// Everything that touches the registry runs under its lock (registry.exclusive()).
import fs from 'node:fs';
import { systemError } from '../ipc/errors.js';
import type { Logger } from '../log.js';
import { openUserNamespaceByHandle, userNamespaceLiveness } from '../sys/nsfs.js';
import { joinUserNamespace } from '../sys/userns-joiner.js';
import type { NamespaceDeath, PolicyStatus } from '../bpf/policy.js';
import { removeControlGroup } from './delegation.js';
import { removeNetif } from './netif.js';
import type { NamespaceRecord, Registry } from './registry.js';

export type { NamespaceDeath, PolicyStatus } from '../bpf/policy.js';

/** What the daemon needs from the BPF policy (src/bpf/policy.ts UsernsPolicy satisfies it). */
export interface NamespacePolicy {
  status(): PolicyStatus;
  manage(usernsInode: number): void;
  unmanage(usernsInode: number): void;
  denySetgroups(usernsInode: number): void;
  deaths(): AsyncIterable<NamespaceDeath>;
  close(): void;
}

/** Namespaces one uid may hold at once. */
export const USERNS_PER_UID = 256;

export interface NamespaceManagerOptions {
  registry: Registry;
  policy?: NamespacePolicy;
  logger?: Logger;
}

export class NamespaceManager {
  readonly registry: Registry;
  readonly policy: NamespacePolicy | undefined;
  private readonly log: Logger | undefined;

  constructor(opts: NamespaceManagerOptions) {
    this.registry = opts.registry;
    this.policy = opts.policy;
    this.log = opts.logger;
  }

  /** Handles a death report: releases the namespace unless it is provably alive (then the
   * report was about an older namespace with a recycled inode). */
  async release(inode: number): Promise<boolean> {
    return this.registry.exclusive(() => {
      const rec = this.registry.byUserns(inode);
      if (!rec || userNamespaceLiveness(rec.nsId, rec.userns) === 'alive') return false;
      this.drop(rec);
      return true;
    });
  }

  /** Reaps every registered namespace that is dead (startup reconciliation, periodic sweep). */
  async reapDead(): Promise<number> {
    return this.registry.exclusive(() => {
      let n = 0;
      for (const rec of this.registry.all()) {
        if (userNamespaceLiveness(rec.nsId, rec.userns) === 'dead') {
          this.drop(rec);
          n++;
        }
      }
      return n;
    });
  }

  /** Settles allocations a crash cut off between the record and the maps (startup): a living
   * namespace keeps its record if its maps were written, otherwise the record goes. */
  async settlePending(): Promise<number> {
    return this.registry.exclusive(async () => {
      let dropped = 0;
      for (const rec of this.registry.all()) {
        if (!rec.pending) continue;
        let fd: number;
        try {
          fd = openUserNamespaceByHandle(rec.nsId, rec.userns);
        } catch {
          continue; // dead or unknown: the liveness sweep decides
        }
        try {
          const member = await joinUserNamespace(fd);
          let mapped: boolean;
          try {
            mapped = readMap(member.pid, 'uid_map') !== '';
          } finally {
            await member.release();
          }
          if (mapped) this.markMapped(rec.userns);
          else {
            this.drop(rec);
            dropped++;
          }
        } finally {
          fs.closeSync(fd);
        }
      }
      return dropped;
    });
  }

  /** Clears the pending mark once the maps are written; runs under the registry lock. */
  markMapped(inode: number): void {
    const cur = this.registry.byUserns(inode);
    if (!cur?.pending) return;
    const done: NamespaceRecord = { ...cur };
    delete done.pending;
    this.registry.put(done);
  }

  /** Puts every registered namespace (back) under the policy, e.g. after a daemon restart;
   * "self" namespaces get their setgroups() denial back, too. */
  manageAll(): void {
    for (const rec of this.registry.all()) {
      this.policy?.manage(rec.userns);
      if (rec.type === 'self') this.policy?.denySetgroups(rec.userns);
    }
  }

  /** At most USERNS_PER_UID namespaces per owner (upstream's per-uid limit); dead ones are
   * reaped before counting. Runs under the registry lock. */
  enforceOwnerCap(owner: number): void {
    const owned = this.registry.ownedBy(owner);
    if (owned.length < USERNS_PER_UID) return;
    for (const inode of owned) {
      const rec = this.registry.byUserns(inode);
      if (rec) this.reapIfDead(rec);
    }
    if (this.registry.ownedBy(owner).length >= USERNS_PER_UID) throw systemError('EUSERS');
  }

  /** Drops a record whose namespace is provably dead; returns whether it did. */
  reapIfDead(rec: NamespaceRecord): boolean {
    if (userNamespaceLiveness(rec.nsId, rec.userns) !== 'dead') return false;
    this.drop(rec);
    return true;
  }

  /** Forgets a namespace: registry record (delegations return to the previous holder), policy
   * entry, delegated cgroups, host-side network interfaces. Runs under the registry lock. */
  drop(rec: NamespaceRecord): void {
    this.registry.remove(rec.userns);
    try {
      this.policy?.unmanage(rec.userns);
    } catch {
      // the kernel drops entries of dead namespaces itself
    }
    for (const cg of rec.cgroups) removeControlGroup(cg);
    for (const n of rec.netifs ?? []) {
      try {
        removeNetif(n.name);
      } catch (err) {
        this.log?.warn({ err, userns: rec.userns, netif: n.name }, 'host interface of a released namespace not removed');
      }
    }
  }
}

/** A namespace's uid_map or gid_map as a member process reads it (empty: not written yet). */
export function readMap(pid: number, file: 'uid_map' | 'gid_map'): string {
  return fs.readFileSync(`/proc/${pid}/${file}`, 'utf8').trim();
}
