// UID/GID windows with a fixed meaning on every host, named once for the daemons and the BPF
// policy (the loader hands them to the program before load: src/bpf/policy.ts).

/** An inclusive window of UIDs/GIDs. */
export interface IdWindow {
  readonly min: number;
  readonly max: number;
}

/**
 * Single transient ids: the DynamicUser= pool (DYNAMIC_UID_MIN…DYNAMIC_UID_MAX in systemd's
 * docs/UIDS-GIDS.md), 61184…65519; AllocateUserRange size 1 comes from here.
 */
export const DYNAMIC_WINDOW: IdWindow = { min: 61184, max: 65519 };

/**
 * Transient 64K ranges: bases CONTAINER_UID_BASE_MIN…CONTAINER_UID_BASE_MAX (0x80000 …
 * 0x6FFF0000, docs/UIDS-GIDS.md), so the last id is 0x6FFF0000 + 65535 = 1879048191.
 */
export const CONTAINER_WINDOW: IdWindow = { min: 0x80000, max: 0x6fffffff };

/** Every id a namespace may hold only while it lives (recycled after its death). */
export const TRANSIENT_WINDOWS: readonly IdWindow[] = [DYNAMIC_WINDOW, CONTAINER_WINDOW];

/**
 * The foreign UID/GID range (systemd's docs/UIDS-GIDS.md, "The foreign UID range";
 * FOREIGN_UID_BASE in systemd's uid-classification.h): 0x7FFE0000–0x7FFEFFFF. Files owned by
 * it belong to container trees at rest; only idmapped mounts give them meaning.
 */
export const FOREIGN_RANGE = { start: 0x7ffe0000, size: 0x10000 } as const;

/** FOREIGN_RANGE as an inclusive window. */
export const FOREIGN_WINDOW: IdWindow = { min: FOREIGN_RANGE.start, max: FOREIGN_RANGE.start + FOREIGN_RANGE.size - 1 };

function inWindow(id: number, w: IdWindow): boolean {
  return id >= w.min && id <= w.max;
}

export function isTransient(id: number): boolean {
  return TRANSIENT_WINDOWS.some((w) => inWindow(id, w));
}

export function isForeign(id: number): boolean {
  return inWindow(id, FOREIGN_WINDOW);
}
