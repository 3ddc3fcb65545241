// UID/GID windows with a fixed meaning on every host, named once for the daemons and the BPF
// policy.

/**
 * The foreign UID/GID range (systemd's docs/UIDS-GIDS.md, "The foreign UID range";
 * FOREIGN_UID_BASE in systemd's uid-classification.h): 0x7FFE0000–0x7FFEFFFF. Files owned by
 * it belong to container trees at rest; only idmapped mounts give them meaning.
 */
export const FOREIGN_RANGE = { start: 0x7ffe0000, size: 0x10000 } as const;
