#!/usr/bin/env bash
# Runs CMD inside the systemd 257 chroot (scripts/build-chroot) as uid AS, as a booted systemd
# host would let it: our daemons' sockets at the systemd paths, plus the few stand-ins for what
# this machine lacks (clients-257.test.ts lists each and why). Run as root on the host.
#
#   enter.sh AS -- CMD...
#
# Env: CHROOT; USERDBD_SOCKET and MNTFSD_SOCKET (empty: no daemon, as for the root reference
# run); IMAGES (a directory, seen as /images); MACHINE_ID (a file, seen as /etc/machine-id);
# UDEV_SOCKET (a listening socket, seen as /run/udev/control); CGROUP (a name: a cgroup2 group
# created for this run, delegated to AS, removed afterwards; empty: none).
#
# Everything happens in a private mount namespace and the chroot becomes the root by
# pivot_root: a chroot(2)ed process gets EPERM from unshare(CLONE_NEWUSER), which every
# client calls first. Nothing is mounted on the host, so nothing needs unmounting after.
set -euo pipefail
if [ "${ENTER_INSIDE:-}" != 1 ]; then
  ENTER_INSIDE=1 exec unshare --mount --propagation private -- "$0" "$@"
fi
AS=$1
[ "$2" = -- ] || { echo "usage: enter.sh AS -- CMD..." >&2; exit 2; }
shift 2
R=$CHROOT
[ -x "$R/usr/bin/systemd-nspawn" ] || { echo "enter.sh: no chroot at $R (scripts/build-chroot)" >&2; exit 1; }

mount --bind "$R" "$R" # pivot_root needs the new root to be a mount point
mount -t tmpfs -o mode=0755 tmpfs "$R/run" # a fresh /run, as at boot
mkdir -p "$R/run/systemd/userdb" "$R/run/udev"
mkdir -m 0000 "$R/run/systemd/dissect-root" # stand-in: systemd-tmpfiles makes it at boot
if [ "$AS" != 0 ]; then # stand-in: logind (pam_systemd) makes the user's runtime directory at login
  mkdir -m 0700 -p "$R/run/user/$AS"
  chown "$AS:$AS" "$R/run/user/$AS"
fi
bind_socket() { # SOURCE TARGET: a socket bound at a path of the chroot's /run
  touch "$2"
  mount --bind "$1" "$2"
}
if [ -n "${USERDBD_SOCKET:-}" ]; then
  bind_socket "$USERDBD_SOCKET" "$R/run/systemd/io.systemd.NamespaceResource"
  bind_socket "$USERDBD_SOCKET" "$R/run/systemd/userdb/io.systemd.NamespaceResource"
fi
[ -z "${MNTFSD_SOCKET:-}" ] || bind_socket "$MNTFSD_SOCKET" "$R/run/systemd/io.systemd.MountFileSystem"
[ -z "${UDEV_SOCKET:-}" ] || bind_socket "$UDEV_SOCKET" "$R/run/udev/control"
[ -z "${MACHINE_ID:-}" ] || mount --bind "$MACHINE_ID" "$R/etc/machine-id"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mkdir -p "$R/images"
[ -z "${IMAGES:-}" ] || mount --bind "$IMAGES" "$R/images"

cg=
if [ -n "${CGROUP:-}" ]; then
  # cgroup2 at /sys/fs/cgroup with our group delegated to AS (as a user manager's is).
  unified=/sys/fs/cgroup
  [ "$(stat -f -c %T "$unified")" = cgroup2fs ] || unified=/sys/fs/cgroup/unified
  cg=$unified/$CGROUP
  mkdir "$cg"
  chown "$AS:$AS" "$cg" "$cg/cgroup.procs" "$cg/cgroup.subtree_control" "$cg/cgroup.threads"
  echo $$ >"$cg/cgroup.procs"
  [ "$unified" = /sys/fs/cgroup ] || mount --bind "$unified" "$R/sys/fs/cgroup"
  cg=/sys/fs/cgroup/$CGROUP # its path once the chroot is the root
fi

cd "$R"
pivot_root . . # the old root lands on top of the new one; detach it
umount -l .
cd /

rc=0
if [ "$AS" = 0 ]; then
  env -i PATH=/usr/sbin:/usr/bin HOME=/root TERM=dumb SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 "$@" </dev/null || rc=$?
else
  setpriv --reuid="$AS" --regid="$AS" --clear-groups --inh-caps=-all \
    env -i PATH=/usr/bin HOME=/home/tester USER=tester XDG_RUNTIME_DIR="/run/user/$AS" TERM=dumb SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 "$@" </dev/null || rc=$?
fi

if [ -n "$cg" ]; then
  # Out of the group, then remove it and whatever the clients made below it (deepest first;
  # a payload that is still exiting may hold a group for a moment).
  echo $$ >/sys/fs/cgroup/cgroup.procs
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [ -d "$cg" ] || break
    sleep 0.1
  done
fi
exit $rc
