// Verified partitions, mounted: a hit means the partition was already set up (copied and
// verified, or put on a dm-verity device) and mounted, so serving the same image again costs
// one mount of that superblock. Keys are chosen by mount-image.ts: the root hash for verified
// copies, root hash and image file for dm-verity devices (sharedDeviceKey()).
import { releasePartitionMount, type PartitionMount } from './mount.js';

/** Where a verified partition's bytes come from. */
export type VerityBackend = 'dm-verity' | 'copy';

export interface CachedMount {
  /** The verified private copy or dm-verity device, mounted (never handed out itself). */
  partition: PartitionMount;
  fileSystemType: string;
  /** Verity root hash (hex) of the partition. */
  rootHash: string;
  verity: VerityBackend;
}

/** Where verified copies may live (see verified-copy.ts). */
export interface CopyStorageOptions {
  /** Root-only directory for copies that do not fit memoryBudget; undefined: memory only. */
  stateDir?: string;
  /** Bytes of copies kept in memory. */
  memoryBudget?: number;
}

export class MountCache {
  private readonly entries = new Map<string, CachedMount>();
  /** Verification in progress, so concurrent calls for one image verify it once. */
  private readonly inFlight = new Map<string, Promise<CachedMount>>();

  /** Lookups served without verifying again, and verifications done. */
  readonly stats = { hits: 0, misses: 0 };

  constructor(
    private readonly capacity = 32,
    readonly storage: CopyStorageOptions = {},
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** Root hash, file system and backend of every cached image, least recently used first. */
  list(): Array<{ rootHash: string; fileSystemType: string; verity: VerityBackend }> {
    return [...this.entries.values()].map((m) => ({ rootHash: m.rootHash, fileSystemType: m.fileSystemType, verity: m.verity }));
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  async getOrCreate(key: string, create: () => Promise<CachedMount>): Promise<{ mount: CachedMount; cached: boolean }> {
    const hit = this.entries.get(key);
    if (hit) {
      // Map order is insertion order: re-insert to mark as most recently used.
      this.entries.delete(key);
      this.entries.set(key, hit);
      this.stats.hits++;
      return { mount: hit, cached: true };
    }
    const pending = this.inFlight.get(key);
    if (pending) {
      this.stats.hits++;
      return { mount: await pending, cached: true };
    }
    this.stats.misses++;
    const p = create();
    this.inFlight.set(key, p);
    try {
      const mount = await p;
      this.entries.set(key, mount);
      this.evict();
      return { mount, cached: false };
    } finally {
      this.inFlight.delete(key);
    }
  }

  /** Closing the base mount releases the private copy or dm-verity device, and the loop
   * devices, once callers' mounts are gone. */
  private evict(): void {
    while (this.entries.size > this.capacity) {
      const [key, oldest] = this.entries.entries().next().value as [string, CachedMount];
      this.entries.delete(key);
      releasePartitionMount(oldest.partition);
    }
  }

  clear(): void {
    for (const m of this.entries.values()) releasePartitionMount(m.partition);
    this.entries.clear();
  }
}
