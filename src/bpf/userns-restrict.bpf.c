// SPDX-License-Identifier: MIT
/*
 * BPF-LSM write policy for managed user namespaces (after systemd's userns-restrict.bpf.c, plus
 * ACL and file-capability hooks, which upstream leaves open: its FIXME says there is no
 * path-based hook for xattrs and ACLs).
 *
 * A managed namespace holds a *transient* id range that will be handed to someone else after
 * it dies. It must not leave inodes, ACL entries or v3 file-capability root ids naming those
 * ids on any file system that outlives it. File systems owned by the namespace (or a
 * descendant) die with it and are always writable; writes through an idmapped mount that maps
 * the transient ids to non-transient on-disk ids are fine by construction.
 *
 * Foreign ids (the foreign UID range of systemd's docs/UIDS-GIDS.md) are not recycled, but they
 * are nobody's: every user may get them mapped (AllocateUserRange mapForeign, mntfsd's
 * MountDirectory), so a foreign-owned inode is writable by every such user, and the document
 * asks that foreign-owned inodes only ever sit inside the owner's 0700 directory, as container
 * trees at rest. Upstream's policy does not look at foreign ids at all (uid_is_transient() is
 * its only id test). Here a managed namespace may name foreign ids (as owner at creation, in
 * chown, ACL entries, v3 file-capability root ids) on a file system that outlives it only
 * inside a foreign tree: in a directory that is itself foreign-owned, or on a tree's root
 * directory itself (which mntfsd's MakeDirectory creates foreign-owned in the user's
 * directory). So a mapForeign namespace can extend the trees it was given, but cannot scatter
 * foreign-owned inodes into /tmp or a home directory, nor move or link a tree's inodes out.
 * New tree roots come only from mntfsd (MakeDirectory), which checks who asks. Transient ids
 * stay refused everywhere that outlives the namespace, inside foreign trees too.
 *
 * The windows are not written here: the loader sets id_windows (src/id-ranges.ts) before load.
 *
 * Two layers: the path hooks see the mount (and its idmap) and decide; the inode hooks behind
 * them see every inode the kernel creates, also on a caller's behalf without a path (overlayfs
 * makes its work directory in ovl_fill_super() before sb_kern_mount runs), and refuse what no
 * path hook approved for this task and this dentry.
 *
 * Everything here is fail-closed: an unreadable structure or an over-long chain denies.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "userns-restrict.h"

#define EPERM 1
#define INVALID_ID 0xffffffffU
/* Longest user namespace chain the kernel allows is 32; walk a little further, then deny. */
#define MAX_NS_DEPTH 34
#define UID_GID_MAP_MAX_BASE_EXTENTS 5
#define UID_GID_MAP_MAX_EXTENTS 340
#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#define VFS_CAP_REVISION_MASK 0xff000000U
#define VFS_CAP_REVISION_3 0x03000000U
#define ACL_USER 0x02
#define ACL_GROUP 0x08
#define MAX_ACL_ENTRIES 32
#define S_IFMT 00170000
#define S_IFDIR 0040000
#define RENAME_EXCHANGE (1 << 1)

char LICENSE[] SEC("license") = "GPL";

/* Managed user namespaces, keyed by nsfs inode (ns.inum). max_entries is set by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} userns_managed SEC(".maps");

/* Managed namespaces whose members may not call setgroups(). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} userns_setgroups_deny SEC(".maps");

/* Death records (struct userns_death, userns-restrict.h) of managed namespaces. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16384 * sizeof(struct userns_death));
} userns_ringbuf SEC(".maps");

/* Identifies the policy build that owns the pins (written by the loader, never read here). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8[32]);
} userns_meta SEC(".maps");

/*
 * The dentry whose creation a path hook of this task approved last (see approve()), keyed by
 * task so that the inode hook that follows in the same call can recognise it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} userns_approved SEC(".maps");

/*
 * A verdict every verifier can bound. For `c ? -EPERM : 0` clang emits -(c & 1), and verifiers
 * without range tracking through BPF_NEG (6.12 among them) then see an unbounded R0 at exit
 * ("should have been in [-4095, 0]"). Opaque constants make clang branch instead, so R0 is a
 * known constant on each path.
 */
static __always_inline int deny_if(bool deny)
{
	int eperm = -EPERM, ok = 0;

	asm volatile("" : "+r"(eperm));
	asm volatile("" : "+r"(ok));
	return deny ? eperm : ok;
}

/* Set by the loader before load (struct id_windows, userns-restrict.h). */
const volatile struct id_windows id_windows SEC(".rodata.ids") = {};

static __always_inline bool id_in(__u32 id, __u32 first, __u32 last)
{
	return id >= first && id <= last;
}

static __always_inline bool id_transient(__u32 id)
{
	if (!id_windows.configured)
		return true;
	return id_in(id, id_windows.transient[0].first, id_windows.transient[0].last) ||
	       id_in(id, id_windows.transient[1].first, id_windows.transient[1].last);
}

static __always_inline bool id_foreign(__u32 id)
{
	return id_windows.configured && id_in(id, id_windows.foreign.first, id_windows.foreign.last);
}

/* Ids that need a look at where they land: transient ones, and foreign ones. */
static __always_inline bool id_watched(__u32 id)
{
	return id_transient(id) || id_foreign(id);
}

static __always_inline bool window_overlaps(__u32 first, __u64 last, const volatile struct id_window *w)
{
	return !(last < w->first || first > w->last);
}

static __always_inline bool range_hits_transient(__u32 first, __u32 count)
{
	__u64 last = (__u64)first + count - 1;

	if (count == 0)
		return false;
	if (!id_windows.configured)
		return true;
	return window_overlaps(first, last, &id_windows.transient[0]) ||
	       window_overlaps(first, last, &id_windows.transient[1]);
}

/* Foreign-owned: the inode's owner (the on-disk id: i_uid is never idmapped) is a foreign id. */
static __always_inline bool inode_foreign_owned(const struct inode *inode)
{
	return inode && id_foreign(BPF_CORE_READ(inode, i_uid.val));
}

/*
 * Is the inode of `dentry` part of a foreign tree? Its directory is foreign-owned, or it is a
 * foreign-owned directory itself: the root of a tree, whose parent is the user's own directory
 * (MakeDirectory in systemd's mountwork.c creates it so; MountDirectory hands out mounts of it).
 */
static __always_inline bool in_foreign_tree(const struct dentry *dentry)
{
	struct inode *inode = BPF_CORE_READ(dentry, d_inode);

	if (inode_foreign_owned(BPF_CORE_READ(dentry, d_parent, d_inode)))
		return true;
	return inode && (BPF_CORE_READ(inode, i_mode) & S_IFMT) == S_IFDIR && inode_foreign_owned(inode);
}

/* May an id be stored on an inode of `dentry` (on a file system that outlives the namespace)? */
static __always_inline bool id_storable(__u32 id, const struct dentry *dentry)
{
	if (id_transient(id))
		return false;
	return !id_foreign(id) || in_foreign_tree(dentry);
}

/* May an inode owned by `id` get a name in the directory of `dentry`? (No tree-root clause.) */
static __always_inline bool id_placeable(__u32 id, const struct dentry *dentry)
{
	if (id_transient(id))
		return false;
	return !id_foreign(id) || inode_foreign_owned(BPF_CORE_READ(dentry, d_parent, d_inode));
}

static __always_inline __u32 ns_inum(const struct user_namespace *ns)
{
	return BPF_CORE_READ(ns, ns.inum);
}

static __always_inline bool ns_managed(const struct user_namespace *ns)
{
	__u32 inum = ns_inum(ns);

	return bpf_map_lookup_elem(&userns_managed, &inum) != NULL;
}

/*
 * Closest managed namespace at or above `ns`. Returns 0 with *out = NULL when there is none,
 * -EPERM when the chain is longer than we walk.
 */
static __always_inline int closest_managed(struct user_namespace *ns, struct user_namespace **out)
{
	*out = NULL;
	for (int i = 0; i < MAX_NS_DEPTH; i++) {
		if (!ns)
			return 0;
		if (ns_managed(ns)) {
			*out = ns;
			return 0;
		}
		ns = BPF_CORE_READ(ns, parent);
	}
	return deny_if(ns);
}

/* Is `ns` the namespace `ancestor` or one of its descendants? */
static __always_inline bool ns_at_or_below(struct user_namespace *ns, const struct user_namespace *ancestor)
{
	for (int i = 0; i < MAX_NS_DEPTH; i++) {
		if (!ns)
			return false;
		if (ns == ancestor)
			return true;
		ns = BPF_CORE_READ(ns, parent);
	}
	return false;
}

struct map_walk {
	const struct uid_gid_extent *extents;
	__u32 nr;
	__u32 id;
	bool up;
	__u32 result;
};

static int map_walk_cb(__u32 i, struct map_walk *w)
{
	struct uid_gid_extent e;
	__u32 from, to;

	if (i >= w->nr)
		return 1;
	if (bpf_probe_read_kernel(&e, sizeof(e), &w->extents[i]))
		return 1;
	/* up: lower (kernel) id -> first (namespace) id; down: the reverse. */
	from = w->up ? e.lower_first : e.first;
	to = w->up ? e.first : e.lower_first;
	if (w->id >= from && (__u64)w->id < (__u64)from + e.count) {
		w->result = to + (w->id - from);
		return 1;
	}
	return 0;
}

/* The kernel's map_id_up()/map_id_down() on a uid_gid_map; INVALID_ID when unmapped. */
static __always_inline __u32 map_id(const struct uid_gid_map *map, __u32 id, bool up)
{
	struct map_walk w = { .id = id, .up = up, .result = INVALID_ID };

	w.nr = BPF_CORE_READ(map, nr_extents);
	if (w.nr <= UID_GID_MAP_MAX_BASE_EXTENTS)
		w.extents = map->extent;
	else
		w.extents = BPF_CORE_READ(map, forward);
	if (w.nr > UID_GID_MAP_MAX_EXTENTS)
		return INVALID_ID;
	bpf_loop(UID_GID_MAP_MAX_EXTENTS, map_walk_cb, &w, 0);
	return w.result;
}

/* No extents in either map: the nop (or invalid) idmap, which passes ids through unchanged. */
static __always_inline bool idmap_is_nop(const struct mnt_idmap *idmap)
{
	return BPF_CORE_READ(idmap, uid_map.nr_extents) == 0 && BPF_CORE_READ(idmap, gid_map.nr_extents) == 0;
}

/* from_vfsuid()/from_vfsgid(): the id that a file system owned by `fs_ns` will store. */
static __always_inline __u32 on_disk_id(const struct mnt_idmap *idmap, struct user_namespace *fs_ns, __u32 id,
					bool gid)
{
	if (!idmap_is_nop(idmap)) {
		id = map_id(gid ? &idmap->gid_map : &idmap->uid_map, id, true);
		if (id == INVALID_ID)
			return INVALID_ID;
	}
	if (BPF_CORE_READ(fs_ns, level) == 0)
		return id;
	return map_id(gid ? &fs_ns->gid_map : &fs_ns->uid_map, id, false);
}

/*
 * Shared prologue: should a write by the current task to a file system with user namespace
 * `fs_ns` be checked at all? Returns 1 to check, 0 to allow, -EPERM to deny.
 */
static __always_inline int needs_check(struct user_namespace *fs_ns)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct user_namespace *managed;
	const struct cred *cred;
	int r;

	cred = task->cred;
	if (!cred)
		return -EPERM;
	r = closest_managed(BPF_CORE_READ(cred, user_ns), &managed);
	if (r)
		return r;
	if (!managed)
		return 0;
	if (!fs_ns)
		return -EPERM;
	return ns_at_or_below(fs_ns, managed) ? 0 : 1;
}

/* Records that this task's path hook vetted the creation of `dentry` (see userns_approved). */
static __always_inline void approve(const struct dentry *dentry)
{
	__u64 *slot = bpf_task_storage_get(&userns_approved, bpf_get_current_task_btf(), 0,
					   BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (slot)
		*slot = (__u64)dentry;
}

/* Consumes the approval: true when this task's last path hook vetted `dentry`. */
static __always_inline bool approved(const struct dentry *dentry)
{
	__u64 *slot = bpf_task_storage_get(&userns_approved, bpf_get_current_task_btf(), 0, 0);
	bool ok;

	if (!slot)
		return false;
	ok = *slot == (__u64)dentry;
	*slot = 0;
	return ok;
}

/*
 * Creation of `dentry` in `dir`, owned by the caller's fsuid/fsgid (upstream's
 * validate_mount()): allowed when the file system dies with the namespace, or when the mount's
 * idmap stores ids that may stay there: not transient, and foreign only inside a foreign tree
 * (then approved for the inode hook that follows). The fast path trusts that no idmap turns a
 * caller id outside both windows into one inside them: idmapped mounts of file systems that
 * outlive the namespace need CAP_SYS_ADMIN over the file system, i.e. host root or mntfsd.
 */
static __always_inline int check_create(const struct path *dir, const struct dentry *dentry)
{
	struct task_struct *task = bpf_get_current_task_btf();
	const struct cred *cred = task->cred;
	struct user_namespace *fs_ns;
	struct mnt_idmap *idmap;
	__u32 fsuid, fsgid;
	int r;

	if (!cred)
		return -EPERM;
	/* Plain (CO-RE relocated) loads, not helper calls: this is every process's fast path. */
	fsuid = cred->fsuid.val;
	fsgid = cred->fsgid.val;
	if (!id_watched(fsuid) && !id_watched(fsgid))
		return 0;
	fs_ns = BPF_CORE_READ(dir, mnt, mnt_sb, s_user_ns);
	r = needs_check(fs_ns);
	if (r <= 0)
		return r;
	idmap = BPF_CORE_READ(dir, mnt, mnt_idmap);
	if (!idmap)
		return -EPERM;
	fsuid = on_disk_id(idmap, fs_ns, fsuid, false);
	fsgid = on_disk_id(idmap, fs_ns, fsgid, true);
	if (!id_storable(fsuid, dentry) || !id_storable(fsgid, dentry))
		return -EPERM;
	approve(dentry);
	return 0;
}

/*
 * The inode-level backstop: the same question without a mount, so without its idmap. An
 * inode that would carry the caller's transient or foreign fsuid/fsgid on a file system that
 * outlives the namespace is allowed only if this task's path hook approved exactly this dentry.
 */
static __always_inline int check_inode_create(const struct dentry *dentry)
{
	struct task_struct *task = bpf_get_current_task_btf();
	const struct cred *cred = task->cred;
	int r;

	if (!cred)
		return -EPERM;
	if (!id_watched(cred->fsuid.val) && !id_watched(cred->fsgid.val))
		return 0;
	r = needs_check(BPF_CORE_READ(dentry, d_sb, s_user_ns));
	if (r <= 0)
		return r;
	return deny_if(!approved(dentry));
}

SEC("lsm/path_mkdir")
int BPF_PROG(userns_restrict_path_mkdir, const struct path *dir, struct dentry *dentry, umode_t mode, int ret)
{
	return ret ? ret : check_create(dir, dentry);
}

/* Also called by open(O_CREAT) through may_o_create(). */
SEC("lsm/path_mknod")
int BPF_PROG(userns_restrict_path_mknod, const struct path *dir, struct dentry *dentry, umode_t mode,
	     unsigned int dev, int ret)
{
	return ret ? ret : check_create(dir, dentry);
}

SEC("lsm/path_symlink")
int BPF_PROG(userns_restrict_path_symlink, const struct path *dir, struct dentry *dentry, const char *old_name,
	     int ret)
{
	return ret ? ret : check_create(dir, dentry);
}

/*
 * A new name for an existing inode (link, rename) is judged by the inode's owner, whoever the
 * caller is: the same test as creation, but on ids already stored. Otherwise a namespace with
 * ids of more than one kind could carry a foreign-owned inode out of its tree (into /tmp, say),
 * or name an inode that a transient fsuid made with O_TMPFILE (vfs_tmpfile() has no LSM hook)
 * by linking it as a non-transient id: the caller's own id in a `self` namespace, a foreign id
 * in a mapForeign one. A tree's root itself is moved by its user or by mntfsd, not from
 * inside a namespace, so the tree-root clause of in_foreign_tree() does not apply.
 */
static __always_inline int check_move(const struct dentry *moved, const struct path *to_dir,
				      const struct dentry *to_dentry)
{
	struct inode *inode = BPF_CORE_READ(moved, d_inode);
	__u32 uid, gid;
	int r;

	if (!inode)
		return 0;
	uid = BPF_CORE_READ(inode, i_uid.val);
	gid = BPF_CORE_READ(inode, i_gid.val);
	if (!id_watched(uid) && !id_watched(gid))
		return 0;
	r = needs_check(BPF_CORE_READ(to_dir, mnt, mnt_sb, s_user_ns));
	if (r <= 0)
		return r;
	return deny_if(!id_placeable(uid, to_dentry) || !id_placeable(gid, to_dentry));
}

SEC("lsm/path_link")
int BPF_PROG(userns_restrict_path_link, struct dentry *old_dentry, const struct path *new_dir,
	     struct dentry *new_dentry, int ret)
{
	int r;

	if (ret)
		return ret;
	r = check_move(old_dentry, new_dir, new_dentry);
	if (r)
		return r;
	return check_create(new_dir, new_dentry);
}

/* Renames within one file system (across file systems is a copy, seen by the creation hooks). */
SEC("lsm/path_rename")
int BPF_PROG(userns_restrict_path_rename, const struct path *old_dir, struct dentry *old_dentry,
	     const struct path *new_dir, struct dentry *new_dentry, unsigned int flags, int ret)
{
	int r;

	if (ret)
		return ret;
	r = check_move(old_dentry, new_dir, new_dentry);
	if (r || !(flags & RENAME_EXCHANGE))
		return r;
	return check_move(new_dentry, old_dir, old_dentry);
}

SEC("lsm/inode_mkdir")
int BPF_PROG(userns_restrict_inode_mkdir, struct inode *dir, struct dentry *dentry, umode_t mode, int ret)
{
	return ret ? ret : check_inode_create(dentry);
}

/* Regular files: vfs_create(), and open(O_CREAT) through may_o_create(). */
SEC("lsm/inode_create")
int BPF_PROG(userns_restrict_inode_create, struct inode *dir, struct dentry *dentry, umode_t mode, int ret)
{
	return ret ? ret : check_inode_create(dentry);
}

SEC("lsm/inode_mknod")
int BPF_PROG(userns_restrict_inode_mknod, struct inode *dir, struct dentry *dentry, umode_t mode, dev_t dev,
	     int ret)
{
	return ret ? ret : check_inode_create(dentry);
}

SEC("lsm/inode_symlink")
int BPF_PROG(userns_restrict_inode_symlink, struct inode *dir, struct dentry *dentry, const char *old_name,
	     int ret)
{
	return ret ? ret : check_inode_create(dentry);
}

SEC("lsm/inode_link")
int BPF_PROG(userns_restrict_inode_link, struct dentry *old_dentry, struct inode *dir, struct dentry *new_dentry,
	     int ret)
{
	return ret ? ret : check_inode_create(new_dentry);
}

/*
 * The kernel has already idmapped uid/gid to the ids the file system will store (chown_common()
 * passes from_vfsuid()/from_vfsgid()); an unchanged one is INVALID_ID, neither transient nor
 * foreign. They are kuid_t/kgid_t by value; BPF_PROG casts context slots, so take them as plain
 * integers.
 */
SEC("lsm/path_chown")
int BPF_PROG(userns_restrict_path_chown, const struct path *path, __u32 uid, __u32 gid, int ret)
{
	struct dentry *dentry;
	int r;

	if (ret)
		return ret;
	r = needs_check(BPF_CORE_READ(path, mnt, mnt_sb, s_user_ns));
	if (r <= 0)
		return r;
	dentry = BPF_CORE_READ(path, dentry);
	return deny_if(!id_storable(uid, dentry) || !id_storable(gid, dentry));
}

struct acl_walk {
	const struct posix_acl *acl;
	__u32 count;
	bool in_foreign_tree;
	bool deny;
};

static int acl_walk_cb(__u32 i, struct acl_walk *w)
{
	struct posix_acl_entry e;

	if (i >= w->count)
		return 1;
	if (bpf_probe_read_kernel(&e, sizeof(e), &w->acl->a_entries[i])) {
		w->deny = true;
		return 1;
	}
	/* e_uid and e_gid share a union: one test serves both tags. */
	if ((e.e_tag == ACL_USER || e.e_tag == ACL_GROUP) &&
	    (id_transient(e.e_uid.val) || (id_foreign(e.e_uid.val) && !w->in_foreign_tree))) {
		w->deny = true;
		return 1;
	}
	return 0;
}

/*
 * POSIX ACLs (also what setxattr("system.posix_acl_*") turns into): vfs_set_acl() has already
 * translated the entries to global kuids/kgids before this hook runs.
 */
SEC("lsm/inode_set_acl")
int BPF_PROG(userns_restrict_inode_set_acl, struct mnt_idmap *idmap, struct dentry *dentry, const char *acl_name,
	     struct posix_acl *kacl, int ret)
{
	struct acl_walk w = { .acl = kacl };
	int r;

	if (ret)
		return ret;
	if (!kacl)
		return 0; /* removing an ACL stores nothing */
	r = needs_check(BPF_CORE_READ(dentry, d_sb, s_user_ns));
	if (r <= 0)
		return r;
	w.count = BPF_CORE_READ(kacl, a_count);
	if (w.count > MAX_ACL_ENTRIES)
		return -EPERM;
	w.in_foreign_tree = in_foreign_tree(dentry);
	bpf_loop(MAX_ACL_ENTRIES, acl_walk_cb, &w, 0);
	return deny_if(w.deny);
}

/*
 * security.capability: cap_convert_nscap() has already turned the value into what will be
 * stored, so a v3 rootid here is relative to the file system's user namespace. `value` is a
 * void pointer, which verifiers before 7.x refuse to take from the context ("arg3 type UNKNOWN
 * is not a struct"): it is fetched with bpf_get_func_arg() instead.
 */
SEC("lsm/inode_setxattr")
int BPF_PROG(userns_restrict_inode_setxattr, struct mnt_idmap *idmap, struct dentry *dentry, const char *name,
	     const void *value_unread, size_t size, int flags, int ret)
{
	__u64 value = 0;
	static const char caps[] = "security.capability";
	struct vfs_ns_cap_data cap;
	struct user_namespace *fs_ns;
	char buf[sizeof(caps)];
	__u32 rootid;
	int r;

	if (ret)
		return ret;
	if (bpf_probe_read_kernel_str(buf, sizeof(buf), name) != sizeof(caps))
		return 0;
	for (int i = 0; i < sizeof(caps); i++)
		if (buf[i] != caps[i])
			return 0;
	fs_ns = BPF_CORE_READ(dentry, d_sb, s_user_ns);
	r = needs_check(fs_ns);
	if (r <= 0)
		return r;
	if (size < sizeof(cap))
		return 0; /* v1/v2: no rootid, owned by the file system's root */
	if (bpf_get_func_arg(ctx, 3, &value) || bpf_probe_read_kernel(&cap, sizeof(cap), (const void *)value))
		return -EPERM;
	if ((cap.magic_etc & VFS_CAP_REVISION_MASK) != VFS_CAP_REVISION_3)
		return 0;
	rootid = cap.rootid;
	if (BPF_CORE_READ(fs_ns, level) != 0)
		rootid = map_id(&fs_ns->uid_map, rootid, false);
	/* A foreign root id is what a shifted container image carries (ping's cap_net_raw, say). */
	return deny_if(!id_storable(rootid, dentry));
}

/* Does every extent of this idmap put on-disk ids outside the transient windows? */
static __always_inline bool idmap_avoids_transient(const struct uid_gid_map *map)
{
	struct uid_gid_extent e;
	__u32 nr = BPF_CORE_READ(map, nr_extents);

	/* Idmaps with more than the inline extents are rare; treat them as unverifiable. */
	if (nr == 0 || nr > UID_GID_MAP_MAX_BASE_EXTENTS)
		return false;
	for (int i = 0; i < UID_GID_MAP_MAX_BASE_EXTENTS; i++) {
		if (i >= nr)
			break;
		if (bpf_probe_read_kernel(&e, sizeof(e), &map->extent[i]))
			return false;
		if (range_hits_transient(e.first, e.count))
			return false;
	}
	return true;
}

/*
 * overlayfs writes the upper layer's inodes with vfs_create() and friends, which only hit
 * inode-level hooks, so the upper layer is vetted when the overlay is mounted.
 */
SEC("lsm/sb_kern_mount")
int BPF_PROG(userns_restrict_sb_kern_mount, const struct super_block *sb, int ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct user_namespace *managed, *upper_ns;
	const struct cred *cred;
	struct ovl_layer *layers;
	struct vfsmount *upper;
	struct mnt_idmap *idmap;
	struct ovl_fs *ofs;
	int r;

	if (ret)
		return ret;
	if (BPF_CORE_READ(sb, s_magic) != OVERLAYFS_SUPER_MAGIC)
		return 0;
	cred = task->cred;
	if (!cred)
		return -EPERM;
	r = closest_managed(BPF_CORE_READ(cred, user_ns), &managed);
	if (r || !managed)
		return r;
	ofs = BPF_CORE_READ(sb, s_fs_info);
	if (!ofs)
		return -EPERM;
	layers = BPF_CORE_READ(ofs, layers);
	if (!layers)
		return -EPERM;
	upper = BPF_CORE_READ(layers, mnt);
	if (!upper)
		return 0; /* read-only overlay */
	upper_ns = BPF_CORE_READ(upper, mnt_sb, s_user_ns);
	if (ns_at_or_below(upper_ns, managed))
		return 0;
	if (!upper_ns || BPF_CORE_READ(upper_ns, level) != 0)
		return -EPERM;
	idmap = BPF_CORE_READ(upper, mnt_idmap);
	if (!idmap || !idmap_avoids_transient(&idmap->uid_map) || !idmap_avoids_transient(&idmap->gid_map))
		return -EPERM;
	return 0;
}

SEC("lsm/task_fix_setgroups")
int BPF_PROG(userns_restrict_task_fix_setgroups, struct cred *new, const struct cred *old, int ret)
{
	struct user_namespace *ns;
	__u32 inum;

	if (ret)
		return ret;
	ns = BPF_CORE_READ(new, user_ns);
	for (int i = 0; i < MAX_NS_DEPTH; i++) {
		if (!ns)
			return 0;
		inum = ns_inum(ns);
		if (bpf_map_lookup_elem(&userns_setgroups_deny, &inum))
			return -EPERM;
		if (bpf_map_lookup_elem(&userns_managed, &inum))
			return 0;
		ns = BPF_CORE_READ(ns, parent);
	}
	return -EPERM;
}

/*
 * Namespace death. free_user_ns() frees a whole chain of namespaces whose last reference went
 * away in one call; retire_userns_sysctls() runs once per namespace of that chain.
 */
static __always_inline void report_death(struct user_namespace *ns)
{
	struct userns_death *ev;
	__u32 inum = ns_inum(ns);

	if (!bpf_map_lookup_elem(&userns_managed, &inum))
		return;
	/* The inode number is free for reuse from now on; a stale entry would restrict its next owner. */
	bpf_map_delete_elem(&userns_managed, &inum);
	bpf_map_delete_elem(&userns_setgroups_deny, &inum);
	ev = bpf_ringbuf_reserve(&userns_ringbuf, sizeof(*ev), 0);
	if (!ev)
		return;
	ev->inode = inum;
	bpf_ringbuf_submit(ev, 0);
}

SEC("kprobe/retire_userns_sysctls")
int BPF_KPROBE(userns_restrict_retire_userns_sysctls, struct user_namespace *ns)
{
	report_death(ns);
	return 0;
}

/* Fallback for kernels without CONFIG_SYSCTL: only the first namespace of a chain is seen. */
SEC("kprobe/free_user_ns")
int BPF_KPROBE(userns_restrict_free_user_ns, struct work_struct *work)
{
	struct user_namespace *ns = container_of(work, struct user_namespace, work);

	report_death(ns);
	return 0;
}
