// Crash-safe registry of user namespaces under <stateDir>/registry: one JSON record per
// namespace (i<inode>.userns), written atomically (tmp + fsync + rename + dir fsync). The
// records are the only truth on disk; the indexes by name, uid, gid, owner and delegated chunk
// live in memory and are rebuilt on load, so a crash can never leave an index pointing at a
// record that is not there. Writers are serialized by an in-process mutex; a pid lock file
// keeps a second daemon off the same directory.
import fs from 'node:fs';
import path from 'node:path';
import * as z from '../validation.js';

const DelegationSchema = z.object({
  start: z.int().check(z.nonnegative()),
  size: z.int().check(z.positive()),
  /** Inodes of the namespaces that held this range before (outermost first). */
  ancestors: z.array(z.int().check(z.nonnegative())),
});

const NetifSchema = z.object({
  /** Host-side interface name (removed when the namespace is released). */
  name: z.string().check(z.minLength(1), z.maxLength(15)),
  mode: z.enum(['veth', 'tap']),
});

const RecordSchema = z.object({
  userns: z.int().check(z.nonnegative()),
  /** NS_GET_ID as a decimal string ("" on kernels without it). */
  nsId: z.string().check(z.regex(/^[0-9]*$/)),
  owner: z.int().check(z.nonnegative()),
  name: z.string().check(z.minLength(1)),
  /** 0 for registered namespaces without a transient range. */
  size: z.int().check(z.nonnegative()),
  start: z.optional(z.int().check(z.nonnegative())),
  target: z.optional(z.int().check(z.nonnegative())),
  startGid: z.optional(z.int().check(z.nonnegative())),
  targetGid: z.optional(z.int().check(z.nonnegative())),
  /** "self": the owner's own uid/gid (start/startGid, as the daemon sees them) is mapped instead
   * of a transient range; such a record holds no range. Absent: "managed". */
  type: z.optional(z.enum(['managed', 'self'])),
  /** The foreign range (src/id-ranges.ts) is mapped 1:1 as well. */
  mapForeign: z.optional(z.boolean()),
  /** Host-side network interfaces handed to the namespace (AddNetworkToUserNamespace). */
  netifs: z.optional(z.array(NetifSchema)),
  /** Inode of the parent user namespace when it is not the daemon's own (nested allocation). */
  parent: z.optional(z.int().check(z.nonnegative())),
  cgroups: z.array(z.string()),
  delegates: z.array(DelegationSchema),
  /** Written before the maps, cleared once they are: a crash in between leaves it set. */
  pending: z.optional(z.boolean()),
});

export type Delegation = z.infer<typeof DelegationSchema>;
export type Netif = z.infer<typeof NetifSchema>;
export type NamespaceRecord = z.infer<typeof RecordSchema>;

export class RegistryLockedError extends Error {
  override name = 'RegistryLockedError';
}

export class Registry {
  readonly dir: string;
  private readonly byInode = new Map<number, NamespaceRecord>();
  private readonly byName = new Map<string, number>();
  private readonly byUid = new Map<number, number>();
  private readonly byGid = new Map<number, number>();
  private readonly byOwner = new Map<number, Set<number>>();
  /** Delegated chunk start -> holders, innermost last. */
  private readonly delegated = new Map<number, number[]>();
  private tail: Promise<unknown> = Promise.resolve();
  private readonly lockPath: string;

  private constructor(stateDir: string) {
    this.dir = path.join(stateDir, 'registry');
    this.lockPath = path.join(this.dir, 'lock');
  }

  /** Takes the directory lock and loads every record; unreadable records are set aside. */
  static open(stateDir: string): Registry {
    const reg = new Registry(stateDir);
    fs.mkdirSync(reg.dir, { recursive: true, mode: 0o755 });
    reg.takeLock();
    for (const entry of fs.readdirSync(reg.dir)) {
      const file = path.join(reg.dir, entry);
      if (entry.endsWith('.tmp')) {
        fs.rmSync(file, { force: true }); // interrupted write: the old record (if any) is intact
        continue;
      }
      if (!/^i[0-9]+\.userns$/.test(entry)) continue;
      const parsed = RecordSchema.safeParse(safeJson(fs.readFileSync(file, 'utf8')));
      if (parsed.success && `i${parsed.data.userns}.userns` === entry) reg.index(parsed.data);
      else fs.renameSync(file, `${file}.corrupt`);
    }
    return reg;
  }

  /** Runs fn with the registry to itself (allocation decisions and writes are one step). */
  exclusive<T>(fn: () => Promise<T> | T): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  close(): void {
    fs.rmSync(this.lockPath, { force: true });
  }

  get size(): number {
    return this.byInode.size;
  }

  all(): NamespaceRecord[] {
    return [...this.byInode.values()];
  }

  byUserns(inode: number): NamespaceRecord | undefined {
    return this.byInode.get(inode);
  }

  findName(name: string): NamespaceRecord | undefined {
    return this.lookup(this.byName.get(name));
  }

  findUidStart(uid: number): NamespaceRecord | undefined {
    return this.lookup(this.byUid.get(uid));
  }

  findGidStart(gid: number): NamespaceRecord | undefined {
    return this.lookup(this.byGid.get(gid));
  }

  ownedBy(owner: number): number[] {
    return [...(this.byOwner.get(owner) ?? [])];
  }

  /** Inode of the namespace currently holding the delegated chunk starting at `start`. */
  delegationHolder(start: number): number | undefined {
    const stack = this.delegated.get(start);
    return stack?.[stack.length - 1];
  }

  /** Writes (or rewrites) a record durably, then indexes it. */
  put(rec: NamespaceRecord): void {
    const old = this.byInode.get(rec.userns);
    const file = this.recordPath(rec.userns);
    const tmp = `${file}.tmp`;
    const fd = fs.openSync(tmp, 'w', 0o644);
    try {
      fs.writeSync(fd, `${JSON.stringify(rec)}\n`);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
    this.syncDir();
    if (old) this.unindex(old);
    this.index(rec);
  }

  /** Removes a record durably; returns it (or undefined if it was not there). */
  remove(inode: number): NamespaceRecord | undefined {
    const rec = this.byInode.get(inode);
    if (!rec) return undefined;
    fs.rmSync(this.recordPath(inode), { force: true });
    this.syncDir();
    this.unindex(rec);
    return rec;
  }

  private lookup(inode: number | undefined): NamespaceRecord | undefined {
    return inode === undefined ? undefined : this.byInode.get(inode);
  }

  private recordPath(inode: number): string {
    return path.join(this.dir, `i${inode}.userns`);
  }

  private index(rec: NamespaceRecord): void {
    this.byInode.set(rec.userns, rec);
    this.byName.set(rec.name, rec.userns);
    if (holdsRange(rec) && rec.start !== undefined) this.byUid.set(rec.start, rec.userns);
    if (holdsRange(rec) && rec.startGid !== undefined) this.byGid.set(rec.startGid, rec.userns);
    let owned = this.byOwner.get(rec.owner);
    if (!owned) this.byOwner.set(rec.owner, (owned = new Set()));
    owned.add(rec.userns);
    for (const d of rec.delegates) this.delegated.set(d.start, [...d.ancestors, rec.userns]);
  }

  private unindex(rec: NamespaceRecord): void {
    this.byInode.delete(rec.userns);
    if (this.byName.get(rec.name) === rec.userns) this.byName.delete(rec.name);
    if (rec.start !== undefined && this.byUid.get(rec.start) === rec.userns) this.byUid.delete(rec.start);
    if (rec.startGid !== undefined && this.byGid.get(rec.startGid) === rec.userns) this.byGid.delete(rec.startGid);
    const owned = this.byOwner.get(rec.owner);
    owned?.delete(rec.userns);
    if (owned?.size === 0) this.byOwner.delete(rec.owner);
    // Delegated chunks go back to the previous holder, or to the pool.
    for (const d of rec.delegates) {
      if (this.delegationHolder(d.start) !== rec.userns) continue;
      if (d.ancestors.length) this.delegated.set(d.start, [...d.ancestors]);
      else this.delegated.delete(d.start);
    }
  }

  private syncDir(): void {
    const fd = fs.openSync(this.dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Pid lock: "<pid> <starttime>". A lock whose process is gone (or was recycled) is stale. */
  private takeLock(): void {
    const me = `${process.pid} ${procStartTime(process.pid)}`;
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        fs.writeFileSync(this.lockPath, me, { flag: 'wx', mode: 0o644 });
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const [pid, start] = fs.readFileSync(this.lockPath, 'utf8').trim().split(' ');
      if (pid && start && procStartTime(Number(pid)) === start) {
        throw new RegistryLockedError(`${this.dir} is in use by pid ${pid}`);
      }
      fs.rmSync(this.lockPath, { force: true });
    }
    throw new RegistryLockedError(`cannot lock ${this.dir}`);
  }
}

/** Whether the record's start/startGid are a transient range it holds (a "self" namespace maps
 * its owner's ids, which no allocation may treat as taken or hand out). */
function holdsRange(rec: NamespaceRecord): boolean {
  return rec.size > 0 && rec.type !== 'self';
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Field 22 of /proc/<pid>/stat (start time in ticks), or '' if the process does not exist. */
function procStartTime(pid: number): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  } catch {
    return '';
  }
}
