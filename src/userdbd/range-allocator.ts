// Choosing a transient range (allocate_one() in systemd's nsresourcework.c): candidates are
// what the parent user namespace maps 1:1, clipped to the pool window and cut into
// size-aligned chunks; the first probe is derived from the name, then random, at most 100
// probes. Cost is independent of how many ranges are in
// use: probes are O(1) lookups in the caller's index, never a scan of the registry.
import fs from 'node:fs';
import { randomInt } from 'node:crypto';
import { CONTAINER_WINDOW, DYNAMIC_WINDOW, type IdWindow } from '../id-ranges.js';

export { CONTAINER_WINDOW, DYNAMIC_WINDOW };
export const CONTAINER_SIZE = 65536;
const MAX_PROBES = 100;

/** A half-open ID interval [start, start+size). */
export interface IdRange {
  start: number;
  size: number;
}

/** Where a namespace of `size` may be placed: the window for that size. */
function windowFor(size: number): IdWindow {
  return size === 1 ? DYNAMIC_WINDOW : CONTAINER_WINDOW;
}

/** Chunk intervals [first, last] (in units of `size`) of `ranges` inside the size's window. */
export function candidateChunks(ranges: readonly IdRange[], size: number): Array<[number, number]> {
  const w = windowFor(size);
  const out: Array<[number, number]> = [];
  for (const r of ranges) {
    const lo = Math.max(r.start, w.min);
    const hi = Math.min(r.start + r.size - 1, w.max);
    const first = Math.ceil(lo / size);
    const last = Math.floor((hi + 1) / size) - 1;
    if (last >= first) out.push([first, last]);
  }
  return out;
}

export type PickResult = { ok: true; start: number } | { ok: false; reason: 'unavailable' | 'exhausted' };

/**
 * Picks a base for `size` IDs among `ranges` (1:1-mapped IDs of the parent namespace).
 * `available(start)` is the caller's O(1) check against registry, delegations and host users.
 */
export function pickRange(ranges: readonly IdRange[], size: number, seed: number, available: (start: number) => boolean): PickResult {
  const chunks = candidateChunks(ranges, size);
  const total = chunks.reduce((n, [a, b]) => n + (b - a + 1), 0);
  if (total === 0) return { ok: false, reason: 'unavailable' };
  const tried = new Set<number>();
  for (let probe = 0; probe < MAX_PROBES && tried.size < total; probe++) {
    let idx = probe === 0 ? seed % total : randomInt(total);
    while (tried.has(idx)) idx = (idx + 1) % total; // a tried candidate is out of the set
    tried.add(idx);
    const start = chunkAt(chunks, idx) * size;
    if (available(start)) return { ok: true, start };
  }
  return { ok: false, reason: 'exhausted' };
}

function chunkAt(chunks: ReadonlyArray<[number, number]>, idx: number): number {
  for (const [a, b] of chunks) {
    const n = b - a + 1;
    if (idx < n) return a + idx;
    idx -= n;
  }
  throw new RangeError('chunk index out of range');
}

/**
 * UIDs of /etc/passwd and GIDs of /etc/group, re-read only when a file changed (one stat per
 * file per allocation), so a transient range never covers an existing user or group.
 */
export class HostIds {
  private readonly files: Array<{ path: string; key: string; ids: number[] }>;

  constructor(passwd = '/etc/passwd', group = '/etc/group') {
    this.files = [passwd, group].map((path) => ({ path, key: '', ids: [] }));
  }

  /** True if any UID or GID in [start, start+size) is used by the host. */
  overlaps(start: number, size: number): boolean {
    for (const f of this.files) {
      const ids = this.load(f);
      // first id >= start
      let lo = 0;
      let hi = ids.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (ids[mid] < start) lo = mid + 1;
        else hi = mid;
      }
      if (lo < ids.length && ids[lo] < start + size) return true;
    }
    return false;
  }

  private load(f: { path: string; key: string; ids: number[] }): number[] {
    let st: fs.Stats;
    try {
      st = fs.statSync(f.path);
    } catch {
      f.key = '';
      f.ids = [];
      return f.ids;
    }
    const key = `${st.ino}:${st.size}:${st.mtimeMs}`;
    if (key !== f.key) {
      f.ids = parseIds(fs.readFileSync(f.path, 'utf8'));
      f.key = key;
    }
    return f.ids;
  }
}

/** Third field (uid or gid) of every colon-separated line, sorted. */
function parseIds(text: string): number[] {
  const ids: number[] = [];
  for (const line of text.split('\n')) {
    const field = line.split(':')[2];
    if (field !== undefined && /^[0-9]+$/.test(field)) ids.push(Number(field));
  }
  return ids.sort((a, b) => a - b);
}
