// koffi bindings to libbpf.so.1: only what the userns-restrict loader needs. libbpf 1.x
// returns -errno from int functions and NULL (with errno set) from pointer functions; both
// are turned into SysError here, with the tail of libbpf's own log (verifier output) attached.
import koffi from 'koffi';
import { SysError } from '../sys/errors.js';

const lib = koffi.load('libbpf.so.1');
const libc = koffi.load('libc.so.6');

/** Opaque libbpf handles (koffi represents pointers as bigint). */
export type BpfObject = bigint & { readonly __brand: 'bpf_object' };
export type BpfMap = bigint & { readonly __brand: 'bpf_map' };
export type BpfProgram = bigint & { readonly __brand: 'bpf_program' };
export type BpfLink = bigint & { readonly __brand: 'bpf_link' };
export type RingBuffer = bigint & { readonly __brand: 'ring_buffer' };

// libbpf's print callback gets a va_list; on x86-64 that is passed as a pointer, which
// vsnprintf accepts as-is.
const PrintFn = koffi.proto('int libbpf_print_fn(int level, const char *fmt, void *args)');
const vsnprintf: (buf: Buffer, size: number, fmt: string, args: unknown) => number = libc.func(
  'int vsnprintf(_Out_ uint8_t *buf, size_t size, const char *fmt, void *args)',
);
const setPrint: (fn: unknown) => unknown = lib.func('void *libbpf_set_print(libbpf_print_fn *fn)');

const LOG_LIMIT = 16384;
const LIBBPF_INFO = 1;
let logTail = '';
const printBuf = Buffer.alloc(4096);
setPrint(
  koffi.register((level: number, fmt: string, args: unknown): number => {
    if (level > LIBBPF_INFO) return 0;
    const n = vsnprintf(printBuf, printBuf.length, fmt, args);
    if (n > 0) logTail = (logTail + printBuf.toString('utf8', 0, Math.min(n, printBuf.length - 1))).slice(-LOG_LIMIT);
    return 0;
  }, koffi.pointer(PrintFn)),
);

/** Clears the captured libbpf log (call before an operation whose log you want). */
export function resetLog(): void {
  logTail = '';
}

/** Last lines libbpf logged (verifier output on load failures). */
export function lastLog(): string {
  return logTail;
}

function errnoOf(ret: number): number {
  return ret < 0 ? -ret : koffi.errno();
}

function checkInt(ret: number, what: string, detail?: string): number {
  if (ret < 0) throw new SysError(errnoOf(ret), what, detail);
  return ret;
}

function checkPtr<T extends bigint>(ret: unknown, what: string, detail?: string): T {
  if (typeof ret !== 'bigint' || ret === 0n) throw new SysError(koffi.errno(), what, detail);
  return ret as T;
}

const fn = {
  openFile: lib.func('void *bpf_object__open_file(const char *path, void *opts)'),
  load: lib.func('int bpf_object__load(void *obj)'),
  close: lib.func('void bpf_object__close(void *obj)'),
  findMap: lib.func('void *bpf_object__find_map_by_name(void *obj, const char *name)'),
  findProgram: lib.func('void *bpf_object__find_program_by_name(void *obj, const char *name)'),
  setMaxEntries: lib.func('int bpf_map__set_max_entries(void *map, uint32_t max_entries)'),
  keySize: lib.func('uint32_t bpf_map__key_size(void *map)'),
  valueSize: lib.func('uint32_t bpf_map__value_size(void *map)'),
  setInitialValue: lib.func('int bpf_map__set_initial_value(void *map, const void *data, size_t size)'),
  reuseFd: lib.func('int bpf_map__reuse_fd(void *map, int fd)'),
  mapFd: lib.func('int bpf_map__fd(void *map)'),
  mapPin: lib.func('int bpf_map__pin(void *map, const char *path)'),
  setAutoload: lib.func('int bpf_program__set_autoload(void *prog, bool autoload)'),
  attach: lib.func('void *bpf_program__attach(void *prog)'),
  attachKprobe: lib.func('void *bpf_program__attach_kprobe(void *prog, bool retprobe, const char *func)'),
  linkPin: lib.func('int bpf_link__pin(void *link, const char *path)'),
  linkDisconnect: lib.func('void bpf_link__disconnect(void *link)'),
  linkDestroy: lib.func('int bpf_link__destroy(void *link)'),
  objGet: lib.func('int bpf_obj_get(const char *path)'),
  update: lib.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
  lookup: lib.func('int bpf_map_lookup_elem(int fd, const void *key, _Out_ void *value)'),
  del: lib.func('int bpf_map_delete_elem(int fd, const void *key)'),
  nextKey: lib.func('int bpf_map_get_next_key(int fd, const void *key, _Out_ void *next)'),
  ringNew: lib.func('void *ring_buffer__new(int map_fd, void *sample_cb, void *ctx, void *opts)'),
  ringEpollFd: lib.func('int ring_buffer__epoll_fd(void *rb)'),
  ringConsume: lib.func('int ring_buffer__consume(void *rb)'),
  ringFree: lib.func('void ring_buffer__free(void *rb)'),
  nextProgram: lib.func('void *bpf_object__next_program(void *obj, void *prev)'),
  programSection: lib.func('const char *bpf_program__section_name(void *prog)'),
  nextMap: lib.func('void *bpf_object__next_map(void *obj, void *prev)'),
  mapName: lib.func('const char *bpf_map__name(void *map)'),
  mapType: lib.func('int bpf_map__type(void *map)'),
  mapIsInternal: lib.func('bool bpf_map__is_internal(void *map)'),
  loadVmlinuxBtf: lib.func('void *btf__load_vmlinux_btf(void)'),
  btfFind: lib.func('int btf__find_by_name_kind(void *btf, const char *name, uint32_t kind)'),
  btfFree: lib.func('void btf__free(void *btf)'),
};

const BTF_KIND_FUNC = 12;

/** The SEC() names of the object's programs ("lsm/path_mkdir", "kprobe/free_user_ns", ...), in object order. */
export function programSections(obj: BpfObject): string[] {
  const sections: string[] = [];
  for (let prog = fn.nextProgram(obj, null) as bigint | null; prog; prog = fn.nextProgram(obj, prog) as bigint | null) {
    sections.push(fn.programSection(prog) as string);
  }
  return sections;
}

/** The BPF_MAP_TYPE_* numbers the loader tells apart (enum bpf_map_type, include/uapi/linux/bpf.h). */
export const MAP_TYPE = { HASH: 1, TASK_STORAGE: 29 } as const;

/** A map the object declares in SEC(".maps"), with its BPF_MAP_TYPE_* number. */
export interface DeclaredMap {
  name: string;
  type: number;
}

/** The object's own maps, in object order; libbpf's internal ones (.rodata*, .bss, .kconfig) are left out. */
export function declaredMaps(obj: BpfObject): DeclaredMap[] {
  const maps: DeclaredMap[] = [];
  for (let map = fn.nextMap(obj, null) as bigint | null; map; map = fn.nextMap(obj, map) as bigint | null) {
    if (fn.mapIsInternal(map) as boolean) continue;
    maps.push({ name: fn.mapName(map) as string, type: fn.mapType(map) as number });
  }
  return maps;
}

/**
 * Which of `names` the running kernel's BTF (/sys/kernel/btf/vmlinux) has as functions: what
 * LSM and fentry programs attach to (libbpf resolves `lsm/<hook>` to the function bpf_lsm_<hook>).
 */
export function kernelBtfFunctions(names: readonly string[]): Set<string> {
  const btf = checkPtr<bigint>(fn.loadVmlinuxBtf(), 'btf__load_vmlinux_btf');
  try {
    return new Set(names.filter((n) => (fn.btfFind(btf, n, BTF_KIND_FUNC) as number) > 0));
  } finally {
    fn.btfFree(btf);
  }
}

export function openObject(path: string): BpfObject {
  return checkPtr<BpfObject>(fn.openFile(path, null), 'bpf_object__open_file', path);
}

export function loadObject(obj: BpfObject): void {
  checkInt(fn.load(obj) as number, 'bpf_object__load');
}

export function closeObject(obj: BpfObject): void {
  fn.close(obj);
}

export function findMap(obj: BpfObject, name: string): BpfMap {
  return checkPtr<BpfMap>(fn.findMap(obj, name), 'bpf_object__find_map_by_name', name);
}

export function findProgram(obj: BpfObject, name: string): BpfProgram {
  return checkPtr<BpfProgram>(fn.findProgram(obj, name), 'bpf_object__find_program_by_name', name);
}

export function setMaxEntries(map: BpfMap, n: number): void {
  checkInt(fn.setMaxEntries(map, n) as number, 'bpf_map__set_max_entries');
}

export function keySize(map: BpfMap): number {
  return fn.keySize(map) as number;
}

export function valueSize(map: BpfMap): number {
  return fn.valueSize(map) as number;
}

/**
 * Sets the contents of a global-data map (.rodata*, .data*) before load; `data` must be
 * exactly its size. Find such a map by its section name (".rodata.ids").
 */
export function setInitialValue(map: BpfMap, data: Buffer): void {
  checkInt(fn.setInitialValue(map, data, data.length) as number, 'bpf_map__set_initial_value');
}

/** Makes the object use an existing (e.g. pinned) map instead of creating one; the fd is dup'ed. */
export function reuseMapFd(map: BpfMap, fd: number): void {
  checkInt(fn.reuseFd(map, fd) as number, 'bpf_map__reuse_fd');
}

export function mapFd(map: BpfMap): number {
  return checkInt(fn.mapFd(map) as number, 'bpf_map__fd');
}

export function pinMap(map: BpfMap, path: string): void {
  checkInt(fn.mapPin(map, path) as number, 'bpf_map__pin', path);
}

export function setAutoload(prog: BpfProgram, on: boolean): void {
  checkInt(fn.setAutoload(prog, on) as number, 'bpf_program__set_autoload');
}

/** Attaches according to the program's SEC() (lsm/..., kprobe/...). */
export function attach(prog: BpfProgram, name: string): BpfLink {
  return checkPtr<BpfLink>(fn.attach(prog), 'bpf_program__attach', name);
}

export function attachKprobe(prog: BpfProgram, func: string): BpfLink {
  return checkPtr<BpfLink>(fn.attachKprobe(prog, false, func), 'bpf_program__attach_kprobe', func);
}

export function pinLink(link: BpfLink, path: string): void {
  checkInt(fn.linkPin(link, path) as number, 'bpf_link__pin', path);
}

/** Frees the handle; with keepAttached the link lives on through its pin. */
export function releaseLink(link: BpfLink, keepAttached: boolean): void {
  if (keepAttached) fn.linkDisconnect(link);
  fn.linkDestroy(link);
}

/** Opens a pinned object (map, link) and returns a new fd. */
export function objGet(path: string): number {
  return checkInt(fn.objGet(path) as number, 'bpf_obj_get', path);
}

export function mapUpdate(fd: number, key: Buffer, value: Buffer): void {
  checkInt(fn.update(fd, key, value, 0) as number, 'bpf_map_update_elem');
}

/** Returns false when the key is absent. */
export function mapLookup(fd: number, key: Buffer, value: Buffer): boolean {
  const ret = fn.lookup(fd, key, value) as number;
  if (ret < 0 && errnoOf(ret) === 2 /* ENOENT */) return false;
  checkInt(ret, 'bpf_map_lookup_elem');
  return true;
}

/** Returns false when the key was absent. */
export function mapDelete(fd: number, key: Buffer): boolean {
  const ret = fn.del(fd, key) as number;
  if (ret < 0 && errnoOf(ret) === 2 /* ENOENT */) return false;
  checkInt(ret, 'bpf_map_delete_elem');
  return true;
}

/** Number of keys in a hash map of `keySize`-byte keys. */
export function mapCount(fd: number, keySize: number): number {
  let count = 0;
  let key: Buffer | null = null;
  for (;;) {
    const next = Buffer.alloc(keySize);
    const ret = fn.nextKey(fd, key, next) as number;
    if (ret < 0 && errnoOf(ret) === 2 /* ENOENT: no more keys */) return count;
    checkInt(ret, 'bpf_map_get_next_key');
    count++;
    key = next;
  }
}

const SampleFn = koffi.proto('int ring_buffer_sample_fn(void *ctx, void *data, size_t size)');

export interface RingBufferConsumer {
  ring: RingBuffer;
  /** An epoll fd that becomes readable when records are available. */
  epollFd: number;
  /** Invokes the sample callback for every available record; returns how many. */
  consume(): number;
  free(): void;
}

/** A libbpf ring buffer on `mapFd`; `onSample` gets a copy of each record's bytes. */
export function ringBuffer(mapFdNum: number, onSample: (data: Buffer) => void): RingBufferConsumer {
  const cb = koffi.register((_ctx: unknown, data: unknown, size: number): number => {
    // Copy: the view aliases ring memory that libbpf hands back to the kernel after we return.
    onSample(Buffer.from(new Uint8Array(koffi.view(data, size))));
    return 0;
  }, koffi.pointer(SampleFn));
  let ring: RingBuffer;
  try {
    ring = checkPtr<RingBuffer>(fn.ringNew(mapFdNum, cb, null, null), 'ring_buffer__new');
  } catch (err) {
    koffi.unregister(cb);
    throw err;
  }
  let freed = false;
  return {
    ring,
    epollFd: checkInt(fn.ringEpollFd(ring) as number, 'ring_buffer__epoll_fd'),
    consume: () => checkInt(fn.ringConsume(ring) as number, 'ring_buffer__consume'),
    free: () => {
      if (freed) return;
      freed = true;
      fn.ringFree(ring);
      koffi.unregister(cb);
    },
  };
}
