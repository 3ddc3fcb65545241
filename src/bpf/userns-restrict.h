/* SPDX-License-Identifier: MIT */
/*
 * What userns-restrict.bpf.c and its loader (src/bpf/policy.ts) exchange, in one place (as
 * libbpf-bootstrap's bootstrap.h is shared by bootstrap.bpf.c and bootstrap.c). The loader is
 * TypeScript and cannot include this: test/bpf/object.test.ts compiles it and checks that
 * policy.ts's DEATH_RECORD and ID_WINDOWS layouts agree. Needs __u32 (vmlinux.h or
 * linux/types.h) first.
 */
#ifndef USERNS_RESTRICT_H
#define USERNS_RESTRICT_H

/*
 * A death record: the nsfs inode only. The daemon never trusts it alone (inode numbers are
 * recycled): it releases a namespace only once open_by_handle_at() on its recorded NS_GET_ID
 * says it is gone. struct ns_common's id field is not NS_GET_ID's value on every kernel
 * (Debian sid's 7.x differs), so it is not reported.
 */
struct userns_death {
	__u32 inode;
};

struct id_window {
	__u32 first, last;
};

#define TRANSIENT_WINDOWS 2

/*
 * The id windows (src/id-ranges.ts: TRANSIENT_WINDOWS, FOREIGN_RANGE), written by the loader
 * into the .rodata.ids map before load; the kernel freezes it. Left unset (configured == 0),
 * every id counts as transient: managed namespaces can then write nothing that outlives them.
 */
struct id_windows {
	__u32 configured;
	struct id_window transient[TRANSIENT_WINDOWS];
	struct id_window foreign;
};

#endif
