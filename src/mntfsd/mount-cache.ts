// Verified partitions, mounted: a hit means the partition was already set up (copied and
// verified, or put on a dm-verity device) and mounted, so serving the same image again costs
// one mount of that superblock. Keys are chosen by mount-image.ts: the root hash for verified
// copies, root hash and image file for dm-verity devices (sharedDeviceKey()).
//
// What the cache keeps, and for how long (the eviction rule):
// - An entry is *in use* while a caller's mount still holds its superblock; otherwise the
//   cache's own base mount is its only holder and the entry is *unused*. Dropping an unused
//   entry frees its copy (or dm-verity device); dropping one in use frees nothing, since the
//   callers' mounts keep the superblock, the loop device and the copy alive.
// - So entries in use stay (however many; keeping them costs a mount fd, and it keeps their
//   bytes counted), and only unused ones are evicted, least recently used first:
//   1. while more than `capacity` entries are cached, or more than `memoryBudget` bytes of
//      copies are held in memory (in use or not, counting copies still being verified);
//   2. when a new copy would not fit the memory budget (before it is placed on disk instead);
//   3. once unused for `idleMs`, checked every `idleMs / 2`.
// - An entry handed out in the last `graceMs` is never evicted, nor the one just made by the
//   insertion that triggers rule 1: the caller mounts it right after getOrCreate() returns,
//   and until then nothing holds it but the cache.
// - Copies that do not fit the memory budget (after 2.) go to `stateDir` (verified-copy.ts);
//   without one they stay in memory, over the budget, rather than fail the call.
//
// Whether an entry is in use: its base mount is closed, which ends the superblock unless
// another mount holds it, and the device is then opened with O_EXCL, which the kernel refuses
// (EBUSY) while a file system is mounted from it (open(2); bdev_open()'s claim). Throughout, an
// fd of the device keeps it (and a loop device's file) from going away; if it is in use, a new
// base mount of the very same superblock takes the old one's place.
import fs from 'node:fs';
import os from 'node:os';
import { mountBlockDevice, releasePartitionMount, type PartitionMount } from './mount.js';
import { prepareStateDir, type CopyPlace } from './verified-copy.js';

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
  /** Bytes of copies kept in memory (default: a quarter of the machine's memory). */
  memoryBudget?: number;
}

export interface MountCacheOptions extends CopyStorageOptions {
  /** Unused entries are evicted after this long (default 10 minutes). */
  idleMs?: number;
  /** Entries handed out this recently are not evicted (default 2 s). */
  graceMs?: number;
}

export const DEFAULT_IDLE_MS = 10 * 60_000;
const DEFAULT_GRACE_MS = 2_000;

/** The default memory budget for copies: a quarter of the machine's memory. */
function defaultCopyMemoryBudget(): number {
  return Math.floor(os.totalmem() / 4);
}

/** A copy's bytes, counted from the moment its place is chosen until it is freed. */
export interface CopyReservation {
  readonly place: CopyPlace;
  readonly bytes: number;
  /** The copy was not made or not kept: stop counting it. */
  release(): void;
}

/** Bytes of verified copies: what GetStatus reports and the budget bounds. */
export interface CopyUsage {
  /** Copies in memory, cached or still being verified. */
  memoryBytes: number;
  /** Copies in the state directory. */
  diskBytes: number;
  memoryBudget: number;
  /** Cached entries, and how many of them a caller's mount holds. */
  entries: number;
  inUse: number;
}

interface Entry {
  key: string;
  mount: CachedMount;
  /** The copy's place and size; null for a dm-verity device. */
  copy: CopyReservation | null;
  lastUsed: number;
}

/**
 * Where copies go: what verifyPartition() asks (VerifyOptions.storage) before it makes one.
 * A copy is counted from here on; the cache takes the count over with the entry.
 */
export class CopyStorage {
  readonly memoryBudget: number;
  readonly stateDir: string | undefined;
  /** Copies verified or being verified, not yet cached, by root hash (hex). */
  private readonly pending = new Map<string, CopyReservation>();

  constructor(
    opts: CopyStorageOptions,
    private readonly cache: MountCache,
  ) {
    this.memoryBudget = opts.memoryBudget ?? defaultCopyMemoryBudget();
    if (!(this.memoryBudget >= 0)) throw new Error('copy memory budget must be a non-negative number of bytes');
    this.stateDir = opts.stateDir;
    if (this.stateDir !== undefined) prepareStateDir(this.stateDir);
  }

  /** Memory, if the copy fits the budget (after evicting unused copies), else the state directory. */
  reserve(bytes: number, rootHash: string): CopyReservation {
    const fits = (): boolean => this.cache.usage().memoryBytes + bytes <= this.memoryBudget;
    if (!fits()) this.cache.evictUnused(() => fits(), 'memory');
    const place: CopyPlace = fits() || this.stateDir === undefined ? { where: 'memory' } : { where: 'disk', stateDir: this.stateDir };
    const r: CopyReservation = {
      place,
      bytes,
      release: () => {
        if (this.pending.get(rootHash) === r) this.pending.delete(rootHash);
      },
    };
    this.pending.get(rootHash)?.release();
    this.pending.set(rootHash, r);
    return r;
  }

  /** The reservation of the copy for `rootHash`, handed to its cache entry. */
  take(rootHash: string): CopyReservation | null {
    const r = this.pending.get(rootHash) ?? null;
    this.pending.delete(rootHash);
    return r;
  }

  pendingBytes(where: CopyPlace['where']): number {
    let n = 0;
    for (const r of this.pending.values()) if (r.place.where === where) n += r.bytes;
    return n;
  }
}

export class MountCache {
  private readonly entries = new Map<string, Entry>();
  /** Verification in progress, so concurrent calls for one image verify it once. */
  private readonly inFlight = new Map<string, Promise<CachedMount>>();
  private readonly idleMs: number;
  private readonly graceMs: number;
  private idleTimer: NodeJS.Timeout | undefined;

  /** Lookups served without verifying again, verifications done, and entries evicted. */
  readonly stats = { hits: 0, misses: 0, evictions: 0 };
  /** What verifyPartition() is given: where copies go, and their accounting. */
  readonly storage: CopyStorage;

  constructor(
    private readonly capacity = 32,
    opts: MountCacheOptions = {},
  ) {
    this.storage = new CopyStorage(opts, this);
    this.idleMs = opts.idleMs ?? DEFAULT_IDLE_MS;
    this.graceMs = opts.graceMs ?? DEFAULT_GRACE_MS;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Root hash, file system and backend of every cached image, least recently used first. */
  list(): Array<{ rootHash: string; fileSystemType: string; verity: VerityBackend }> {
    return [...this.entries.values()].map(({ mount: m }) => ({ rootHash: m.rootHash, fileSystemType: m.fileSystemType, verity: m.verity }));
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** Bytes held by copies. `probe` also counts the entries in use (see probe(): two opens and a
   * mount each; entries handed out within graceMs count as in use). */
  usage(opts: { probe?: boolean } = {}): CopyUsage {
    let memoryBytes = this.storage.pendingBytes('memory');
    let diskBytes = this.storage.pendingBytes('disk');
    for (const e of this.entries.values()) {
      if (e.copy?.place.where === 'memory') memoryBytes += e.copy.bytes;
      if (e.copy?.place.where === 'disk') diskBytes += e.copy.bytes;
    }
    let inUse = 0;
    if (opts.probe) for (const e of [...this.entries.values()]) if (this.probe(e)) inUse++;
    if (opts.probe) ({ memoryBytes, diskBytes } = this.usage());
    return { memoryBytes, diskBytes, memoryBudget: this.storage.memoryBudget, entries: this.entries.size, inUse };
  }

  async getOrCreate(key: string, create: () => Promise<CachedMount>): Promise<{ mount: CachedMount; cached: boolean }> {
    const hit = this.entries.get(key);
    if (hit) {
      // Map order is insertion order: re-insert to mark as most recently used.
      this.entries.delete(key);
      this.entries.set(key, hit);
      hit.lastUsed = Date.now();
      this.stats.hits++;
      return { mount: hit.mount, cached: true };
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
      let mount: CachedMount;
      try {
        mount = await p;
      } catch (err) {
        this.storage.take(key)?.release();
        throw err;
      }
      const copy = mount.verity === 'copy' ? this.storage.take(mount.rootHash) : null;
      const entry: Entry = { key, mount, copy, lastUsed: Date.now() };
      this.entries.set(key, entry);
      this.evict(entry);
      this.armIdleTimer();
      return { mount, cached: false };
    } finally {
      this.inFlight.delete(key);
    }
  }

  /** Rule 1: back within capacity and the memory budget, as far as unused entries allow;
   * never `fresh`, which the caller is about to mount. */
  private evict(fresh: Entry): void {
    this.evictUnused(() => this.entries.size <= this.capacity && this.usage().memoryBytes <= this.storage.memoryBudget, undefined, fresh);
  }

  /**
   * Evicts unused entries, least recently used first, until `enough()` (only copies held in
   * `only`, when given). Returns how many went.
   */
  evictUnused(enough: () => boolean, only?: CopyPlace['where'], spare?: Entry): number {
    let n = 0;
    const now = Date.now();
    for (const e of [...this.entries.values()]) {
      if (enough()) break;
      if (e === spare || (only && e.copy?.place.where !== only)) continue;
      if (now - e.lastUsed < this.graceMs) continue;
      if (this.releaseIfUnused(e)) n++;
    }
    return n;
  }

  /** Rule 3: unused entries idle for idleMs go. Returns how many went. */
  sweepIdle(now = Date.now()): number {
    let n = 0;
    for (const e of [...this.entries.values()]) {
      if (now - e.lastUsed >= Math.max(this.idleMs, this.graceMs) && this.releaseIfUnused(e)) n++;
    }
    return n;
  }

  private armIdleTimer(): void {
    if (this.idleTimer || this.entries.size === 0) return;
    this.idleTimer = setInterval(
      () => {
        this.sweepIdle();
        if (this.entries.size === 0) this.stopIdleTimer();
      },
      Math.max(1000, this.idleMs / 2),
    );
    this.idleTimer.unref();
  }

  private stopIdleTimer(): void {
    clearInterval(this.idleTimer);
    this.idleTimer = undefined;
  }

  /** Drops the entry if no caller's mount holds it (and says so); see probe(). */
  private releaseIfUnused(e: Entry): boolean {
    if (this.probe(e, true)) return false;
    if (this.entries.get(e.key) === e) this.entries.delete(e.key);
    e.copy?.release();
    this.stats.evictions++;
    return true;
  }

  /**
   * Whether a caller's mount holds the entry's superblock. Closes the base mount and tries an
   * exclusive open of the device; in use, the entry gets a new base mount of the same
   * superblock. Unused, with `dropUnused` nothing of it is kept (the caller removes the entry);
   * without, it gets a new base mount as well. An entry whose base mount cannot be made again
   * is dropped (callers' mounts keep working; the next call verifies afresh).
   */
  private probe(e: Entry, dropUnused = false): boolean {
    const { partition } = e.mount;
    if (Date.now() - e.lastUsed < this.graceMs) return true; // about to be mounted: see the rule
    let dev: number;
    try {
      dev = fs.openSync(partition.devPath, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } catch {
      return true; // cannot tell: keep it
    }
    try {
      const st = fs.fstatSync(dev);
      // The base mount holds the device, so its name still leads to it; check anyway.
      if (!st.isBlockDevice() || st.rdev !== fs.fstatSync(partition.baseFd).dev) return true;
      releasePartitionMount(partition);
      let inUse = false;
      try {
        fs.closeSync(fs.openSync(`/proc/self/fd/${dev}`, fs.constants.O_RDONLY | fs.constants.O_EXCL | fs.constants.O_NONBLOCK));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EBUSY') throw err;
        inUse = true;
      }
      if (!inUse && dropUnused) return false;
      try {
        // `dev` keeps the device: a mount of it finds the superblock that is there, or sets a
        // new one up from the same verified bytes.
        const base = mountBlockDevice(`/proc/self/fd/${dev}`, partition.request);
        if (fs.fstatSync(base.baseFd).dev !== st.rdev) {
          releasePartitionMount(base);
          throw new Error(`${partition.devPath}: the new base mount is not on the device`);
        }
        e.mount = { ...e.mount, partition: { ...base, devPath: partition.devPath } };
      } catch {
        if (this.entries.get(e.key) === e) this.entries.delete(e.key);
        e.copy?.release();
        this.stats.evictions++;
      }
      return inUse;
    } finally {
      fs.closeSync(dev);
    }
  }

  clear(): void {
    this.stopIdleTimer();
    for (const e of this.entries.values()) {
      releasePartitionMount(e.mount.partition);
      e.copy?.release();
    }
    this.entries.clear();
  }
}
