// Loader for the userns-restrict BPF-LSM policy (src/bpf/userns-restrict.bpf.c).
//
// Pins, under pinDir (default /sys/fs/bpf/mountgate; bpffs refuses dots in names):
//   maps/{managed,setgroups_deny,ringbuf,meta}   links/<program>
// both named after the object's own maps and programs (see readObject()).
// Maps are pinned and reused across daemon generations, so managed namespaces stay managed.
// `meta` holds the SHA-256 of the object and the id windows it was given, for the generation
// that owns the links: a daemon running the same object with the same windows adopts the pins
// as they are; a different one is loaded against the pinned maps,
// attached, and its links are renamed over the old pins, so the old programs detach only
// after the new ones are live (no window without policy).
//
// The id windows the program judges by are not in the C: they come from src/id-ranges.ts and
// are written into the object's .rodata.ids section before load (see idWindowsImage()).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import * as bpf from './libbpf.js';
import { SysError } from '../sys/errors.js';
import { native, projectRoot, POLL_READABLE } from '../native/index.js';
import { FOREIGN_WINDOW, TRANSIENT_WINDOWS } from '../id-ranges.js';
import type { Poller } from '../native/index.js';

export interface PolicyStatus {
  lsm: boolean;
  attached: boolean;
  pinned: boolean;
  managed: number;
  /** Attached programs, named by the hook or probe they attach to. */
  hooks: string[];
  reason?: string;
}

export interface NamespaceDeath {
  inode: number;
}

export const DEFAULT_PIN_DIR = '/sys/fs/bpf/mountgate';
const DEFAULT_MAX_NAMESPACES = 16384;
export const OBJECT_PATH = path.join(projectRoot, 'build', 'bpf', 'userns-restrict.bpf.o');

const LSM_LIST = '/sys/kernel/security/lsm';
/** The section (and so libbpf's internal map) holding `struct id_windows id_windows`. */
export const ID_WINDOWS_SECTION = '.rodata.ids';

/**
 * struct id_windows of userns-restrict.h: byte size, the offset of each field, and of `last` in
 * struct id_window (all u32, LE); `windows` is TRANSIENT_WINDOWS.
 */
export const ID_WINDOWS = { size: 28, configured: 0, transient: 4, foreign: 20, windowSize: 8, last: 4, windows: 2 } as const;

/** The .rodata.ids image: configured (1), the TRANSIENT_WINDOWS, then the foreign window. */
export function idWindowsImage(): Buffer {
  if (TRANSIENT_WINDOWS.length !== ID_WINDOWS.windows) {
    throw new Error(`the BPF policy takes exactly ${ID_WINDOWS.windows} transient windows (TRANSIENT_WINDOWS in userns-restrict.h)`);
  }
  const image = Buffer.alloc(ID_WINDOWS.size);
  const window = (at: number, w: { min: number; max: number }): void => {
    image.writeUInt32LE(w.min, at);
    image.writeUInt32LE(w.max, at + ID_WINDOWS.last);
  };
  image.writeUInt32LE(1, ID_WINDOWS.configured);
  TRANSIENT_WINDOWS.forEach((w, i) => window(ID_WINDOWS.transient + i * ID_WINDOWS.windowSize, w));
  window(ID_WINDOWS.foreign, FOREIGN_WINDOW);
  return image;
}

/** Every program's and map's name starts so; the rest names its hook, probe or pin. */
const PROG_PREFIX = 'userns_restrict_';
const MAP_PREFIX = 'userns_';

/** A map kept across daemon generations, pinned as maps/<pin>. */
interface ObjectMap {
  pin: string;
  name: string;
  /** Keyed by namespace: sized by maxNamespaces when created. */
  resizable: boolean;
}

/** The object's programs by what they attach to: LSM hooks, and death probes in order of preference
 * (the object lists retire_userns_sysctls, which sees every namespace of a freed chain, first);
 * and the maps to pin. */
interface ObjectContents {
  lsm: string[];
  probes: string[];
  maps: ObjectMap[];
}

/**
 * Read from the object itself (each program's SEC(), each map's declaration), so nothing here
 * drifts from the C. Every map is pinned but task storage (per-task scratch, held only from a
 * path hook to the inode hook of the same call); the hash maps are keyed by namespace.
 */
export function readObject(): ObjectContents {
  const obj = bpf.openObject(OBJECT_PATH);
  try {
    const sections = bpf.programSections(obj);
    const of = (kind: string): string[] => sections.filter((s) => s.startsWith(`${kind}/`)).map((s) => s.slice(kind.length + 1));
    const maps = bpf
      .declaredMaps(obj)
      .filter((m) => m.type !== bpf.MAP_TYPE.TASK_STORAGE)
      .map((m) => {
        if (!m.name.startsWith(MAP_PREFIX)) throw new Error(`map ${m.name} of ${OBJECT_PATH} lacks the prefix ${MAP_PREFIX}`);
        return { pin: m.name.slice(MAP_PREFIX.length), name: m.name, resizable: m.type === bpf.MAP_TYPE.HASH };
      });
    return { lsm: of('lsm'), probes: of('kprobe'), maps };
  } finally {
    bpf.closeObject(obj);
  }
}

/**
 * struct userns_death of userns-restrict.h: byte size and the offset of each field (u32, LE).
 * Older builds wrote 16 bytes, inode first, which this reads too.
 */
export const DEATH_RECORD = { size: 4, inode: 0 } as const;

/**
 * Key and value sizes of the maps this file reads and writes: u32 nsfs inodes mapped to a u32
 * flag, and meta's index 0 mapped to a SHA-256 digest.
 */
export const MAP_ENTRIES = {
  managed: { key: 4, value: 4 },
  setgroups_deny: { key: 4, value: 4 },
  meta: { key: 4, value: 32 },
} as const;

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

function validInode(inode: number): number {
  if (!Number.isInteger(inode) || inode <= 0 || inode > 0xffffffff) {
    throw new RangeError(`not a namespace inode number: ${inode}`);
  }
  return inode;
}

function validPinDir(dir: string): string {
  const resolved = path.resolve(dir);
  if (!resolved.startsWith('/sys/fs/bpf/') || path.basename(resolved).includes('.')) {
    throw new RangeError(`pin directory must be a dot-free path under /sys/fs/bpf: ${dir}`);
  }
  return resolved;
}

function readMeta(metaPin: string): Buffer | null {
  if (!fs.existsSync(metaPin)) return null;
  const fd = bpf.objGet(metaPin);
  try {
    const value = Buffer.alloc(MAP_ENTRIES.meta.value);
    return bpf.mapLookup(fd, u32(0), value) ? value : null;
  } finally {
    fs.closeSync(fd);
  }
}

interface Pins {
  dir: string;
  map(pin: string): string;
  link(program: string): string;
  links: string;
}

function pinsAt(dir: string): Pins {
  return {
    dir,
    map: (pin) => path.join(dir, 'maps', pin),
    link: (program) => path.join(dir, 'links', program),
    links: path.join(dir, 'links'),
  };
}

/**
 * The programs this kernel can run. Every LSM hook is required: each carries part of the
 * guarantee, so a kernel without one (inode_set_acl came in 6.2) gets no policy at all, with
 * the missing hooks named, rather than a policy with a silent hole. The death probe has a
 * fallback: retire_userns_sysctls (needs CONFIG_SYSCTL), else free_user_ns.
 */
function expectedPrograms({ lsm, probes }: ObjectContents): string[] {
  // Each LSM hook has a BPF attachment point, the function bpf_lsm_<hook> (kernel/bpf/bpf_lsm.c).
  const present = bpf.kernelBtfFunctions(lsm.map((hook) => `bpf_lsm_${hook}`));
  const missing = lsm.filter((hook) => !present.has(`bpf_lsm_${hook}`));
  if (missing.length > 0) throw new Error(`kernel lacks the LSM hook(s) ${missing.join(', ')}`);
  const functions = bpf.kernelBtfFunctions(probes);
  const probe = probes.find((p) => functions.has(p));
  if (!probe) throw new Error(`kernel has none of ${probes.join(', ')}`);
  return [...lsm, probe];
}

/** Loads the object against the pinned maps (creating and pinning missing ones), attaches and pins. */
function loadAndAttach(pins: Pins, all: ObjectContents, programs: string[], maxNamespaces: number, digest: Buffer): void {
  const obj = bpf.openObject(OBJECT_PATH);
  const links: bpf.BpfLink[] = [];
  try {
    const ids = bpf.findMap(obj, ID_WINDOWS_SECTION);
    const image = idWindowsImage();
    if (bpf.valueSize(ids) !== image.length) {
      throw new Error(`${ID_WINDOWS_SECTION} is ${bpf.valueSize(ids)} bytes, the loader writes ${image.length}`);
    }
    bpf.setInitialValue(ids, image);
    const created: ObjectMap[] = [];
    for (const m of all.maps) {
      const map = bpf.findMap(obj, m.name);
      if (fs.existsSync(pins.map(m.pin))) {
        const fd = bpf.objGet(pins.map(m.pin));
        try {
          bpf.reuseMapFd(map, fd);
        } finally {
          fs.closeSync(fd);
        }
      } else {
        if (m.resizable) bpf.setMaxEntries(map, maxNamespaces);
        created.push(m);
      }
    }
    for (const probe of all.probes) {
      bpf.setAutoload(bpf.findProgram(obj, PROG_PREFIX + probe), programs.includes(probe));
    }
    bpf.resetLog();
    try {
      bpf.loadObject(obj);
    } catch (err) {
      const log = bpf.lastLog().trim().split('\n').slice(-6).join(' | ');
      if (err instanceof SysError && log) err.message += ` [${log}]`;
      throw err;
    }
    fs.mkdirSync(path.join(pins.dir, 'maps'), { recursive: true });
    fs.mkdirSync(pins.links, { recursive: true });
    for (const m of created) bpf.pinMap(bpf.findMap(obj, m.name), pins.map(m.pin));

    for (const name of programs) {
      const prog = bpf.findProgram(obj, PROG_PREFIX + name);
      const link = all.probes.includes(name) ? bpf.attachKprobe(prog, name) : bpf.attach(prog, name);
      links.push(link);
      const staging = pins.link(`${name}_new`);
      fs.rmSync(staging, { force: true });
      bpf.pinLink(link, staging);
      // Atomic replacement: the previous generation's link is released only now.
      fs.renameSync(staging, pins.link(name));
    }
    // Only now is this generation complete: a later install may adopt it.
    bpf.mapUpdate(bpf.mapFd(bpf.findMap(obj, `${MAP_PREFIX}meta`)), u32(0), digest);
    // Links of programs this generation no longer has (e.g. the other death probe).
    for (const entry of fs.readdirSync(pins.links)) {
      if (!programs.includes(entry)) fs.rmSync(path.join(pins.links, entry), { force: true });
    }
  } finally {
    // Pinned links stay attached; an unpinned one (failed attach sequence) detaches here.
    for (const link of links) bpf.releaseLink(link, true);
    bpf.closeObject(obj);
  }
}

interface MapFds {
  managed: number;
  setgroups: number;
  ringbuf: number;
}

export class UsernsPolicy {
  private readonly pins: Pins;
  private readonly lsm: boolean;
  private readonly programs: string[];
  /** Pin names of the object's maps (empty when the object was not read). */
  private readonly mapPins: string[];
  private fds: MapFds | null;
  private readonly reason?: string;
  private consumer: bpf.RingBufferConsumer | null = null;
  private poller: Poller | null = null;
  private readonly listeners = new Set<(ev: NamespaceDeath | null) => void>();

  private constructor(pins: Pins, lsm: boolean, programs: string[], mapPins: string[], fds: MapFds | null, reason?: string) {
    this.pins = pins;
    this.lsm = lsm;
    this.programs = programs;
    this.mapPins = mapPins;
    this.fds = fds;
    this.reason = reason;
  }

  /** True when the kernel runs the BPF LSM ('bpf' in the active LSM list). */
  static lsmAvailable(): boolean {
    try {
      return fs.readFileSync(LSM_LIST, 'utf8').trim().split(',').includes('bpf');
    } catch {
      return false;
    }
  }

  /**
   * Loads, attaches and pins the policy, or adopts pins left by a daemon running the same
   * object. Never throws for what the kernel refuses: status() then reports why.
   */
  static install(opts: { pinDir?: string; maxNamespaces?: number } = {}): UsernsPolicy {
    const pins = pinsAt(validPinDir(opts.pinDir ?? DEFAULT_PIN_DIR));
    const maxNamespaces = opts.maxNamespaces ?? DEFAULT_MAX_NAMESPACES;
    if (!Number.isInteger(maxNamespaces) || maxNamespaces < 1 || maxNamespaces > 1 << 20) {
      throw new RangeError(`maxNamespaces out of range: ${maxNamespaces}`);
    }
    if (!UsernsPolicy.lsmAvailable()) {
      return new UsernsPolicy(pins, false, [], [], null, `'bpf' is not in ${LSM_LIST}`);
    }
    // The windows are part of the generation: a daemon with other windows must not adopt the pins.
    const digest = crypto.createHash('sha256').update(fs.readFileSync(OBJECT_PATH)).update(idWindowsImage()).digest();
    const existed = fs.existsSync(pins.dir);
    let programs: string[] = [];
    let mapPins: string[] = [];
    try {
      const all = readObject();
      mapPins = all.maps.map((m) => m.pin);
      programs = expectedPrograms(all);
      const current = readMeta(pins.map('meta'))?.equals(digest) && programs.every((p) => fs.existsSync(pins.link(p)));
      if (!current) loadAndAttach(pins, all, programs, maxNamespaces, digest);
      return new UsernsPolicy(pins, true, programs, mapPins, UsernsPolicy.openMaps(pins));
    } catch (err) {
      // A fresh install that failed leaves nothing behind; a failed upgrade keeps the old policy.
      if (!existed) fs.rmSync(pins.dir, { recursive: true, force: true });
      const reason = err instanceof Error ? err.message : String(err);
      return new UsernsPolicy(pins, true, programs, mapPins, null, `cannot install the BPF policy: ${reason}`);
    }
  }

  /** Removes the pins: the programs detach and the maps go away once nothing else holds them. */
  static uninstall(pinDir: string = DEFAULT_PIN_DIR): void {
    fs.rmSync(validPinDir(pinDir), { recursive: true, force: true });
  }

  private static openMaps(pins: Pins): MapFds {
    const opened: number[] = [];
    try {
      for (const role of ['managed', 'setgroups_deny', 'ringbuf'] as const) opened.push(bpf.objGet(pins.map(role)));
    } catch (err) {
      for (const fd of opened) fs.closeSync(fd);
      throw err;
    }
    const [managed, setgroups, ringbuf] = opened as [number, number, number];
    return { managed, setgroups, ringbuf };
  }

  status(): PolicyStatus {
    const hooks = this.fds ? this.programs.filter((p) => fs.existsSync(this.pins.link(p))) : [];
    const status: PolicyStatus = {
      lsm: this.lsm,
      attached: this.programs.length > 0 && hooks.length === this.programs.length,
      pinned: this.mapPins.length > 0 && this.mapPins.every((m) => fs.existsSync(this.pins.map(m))),
      managed: this.fds ? bpf.mapCount(this.fds.managed, MAP_ENTRIES.managed.key) : 0,
      hooks,
    };
    if (this.reason !== undefined) status.reason = this.reason;
    return status;
  }

  private maps(): MapFds {
    if (!this.fds) throw new Error(`userns policy unavailable: ${this.reason ?? 'closed'}`);
    return this.fds;
  }

  /** Subjects the user namespace (nsfs inode number) and its descendants to the write policy. */
  manage(usernsInode: number): void {
    const key = u32(validInode(usernsInode));
    bpf.mapUpdate(this.maps().managed, key, u32(1));
  }

  unmanage(usernsInode: number): void {
    const key = u32(validInode(usernsInode));
    const fds = this.maps();
    bpf.mapDelete(fds.managed, key);
    bpf.mapDelete(fds.setgroups, key);
  }

  /** Members of this namespace (and descendants up to the next managed one) may not setgroups(). */
  denySetgroups(usernsInode: number): void {
    const key = u32(validInode(usernsInode));
    bpf.mapUpdate(this.maps().setgroups, key, u32(1));
  }

  private startConsumer(): void {
    if (this.consumer) return;
    const consumer = bpf.ringBuffer(this.maps().ringbuf, (data) => {
      if (data.length < DEATH_RECORD.size) return;
      const ev: NamespaceDeath = { inode: data.readUInt32LE(DEATH_RECORD.inode) };
      for (const l of this.listeners) l(ev);
    });
    this.consumer = consumer;
    this.poller = new native.Poller(consumer.epollFd, () => consumer.consume());
    this.poller.start(POLL_READABLE);
    // Records that arrived while nobody listened (e.g. between daemon generations).
    consumer.consume();
  }

  /**
   * Deaths of managed namespaces, as the kernel reports them (the kernel has already removed
   * them from the maps). Readiness comes from uv_poll on libbpf's epoll fd: never blocks.
   */
  async *deaths(): AsyncIterable<NamespaceDeath> {
    const queue: Array<NamespaceDeath | null> = [];
    let wake: (() => void) | null = null;
    const listener = (ev: NamespaceDeath | null): void => {
      queue.push(ev);
      wake?.();
    };
    this.listeners.add(listener);
    try {
      this.startConsumer();
      for (;;) {
        while (queue.length === 0) await new Promise<void>((r) => (wake = r));
        wake = null;
        const ev = queue.shift();
        if (!ev) return;
        yield ev;
      }
    } finally {
      this.listeners.delete(listener);
    }
  }

  /** Stops consuming and closes the map fds; the pins (and so the policy) stay. */
  close(): void {
    this.poller?.stop();
    this.poller?.close();
    this.poller = null;
    this.consumer?.free();
    this.consumer = null;
    for (const l of this.listeners) l(null);
    if (this.fds) {
      for (const fd of [this.fds.managed, this.fds.setgroups, this.fds.ringbuf]) fs.closeSync(fd);
      this.fds = null;
    }
  }
}
