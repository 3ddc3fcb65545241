/*
 * mountgate-nshelper: tiny single-threaded helper for work that must happen inside a user or
 * mount namespace. setns() into those fails with EINVAL in a multi-threaded process such as
 * Node, so the daemon spawns this binary with the namespace fds inherited.
 *
 *   mountgate-nshelper joiner
 *       Serve the daemon on fd 3 (a stream socket) until it closes: per request, fork a
 *       member that joins a user namespace and stays there until released, so that the daemon
 *       can use /proc/<pid>/{uid_map,gid_map}. A fork of this small process costs far less
 *       than Node spawning a helper per request. Requests and replies are 8 bytes, handled
 *       one at a time in order (native byte order, both ends on this host):
 *         request {u32 op, u32 arg}: op 1 JOIN (one user namespace fd as SCM_RIGHTS, arg 0),
 *                                    op 2 RELEASE (arg = a member pid from a JOIN reply)
 *         reply   {i32 result, u32 0}: JOIN: member pid, or -errno (setns, fork, no fd);
 *                                      RELEASE: 0 once the member is killed and reaped, or -ESRCH
 *       Members die with the joiner (PR_SET_PDEATHSIG), and the joiner exits on EOF.
 *   mountgate-nshelper userns-new
 *       Create a new, unmapped user namespace, write "1" to stdout, then block until stdin
 *       reaches EOF. The caller opens /proc/<pid>/ns/user meanwhile.
 *   mountgate-nshelper exec-in <userns-fd|-> <mntns-fd|-> -- cmd [args...]
 *       Join the given user namespace and/or mount namespace (in that order, so that the
 *       capabilities gained in the user namespace apply to the mount namespace), then execvp.
 *   mountgate-nshelper open-tree <mntns-fd> <dir-fd> <sock-fd>
 *       Join the mount namespace <mntns-fd>, clone the mount of <dir-fd> there (just that
 *       mount, not the ones below it; an idmapping it carries dropped where the kernel can:
 *       open_tree_attr(), Linux 6.15) and send the detached mount fd over the AF_UNIX socket
 *       <sock-fd>. open_tree() only clones mounts of the caller's own mount namespace, so a
 *       daemon in another one comes here (systemd's open_tree_try_drop_idmap_harder() in
 *       mountwork.c forks for this). The reply is one 4-byte int: 0 with the mount fd as
 *       SCM_RIGHTS, or the errno of setns/open_tree without one.
 *   mountgate-nshelper enter <userns-fd> <root-mount-fd> [<path>=<mount-fd>...] -- cmd [args...]
 *       Run cmd as uid/gid 0 of the (already mapped) user namespace, in a new mount and PID
 *       namespace whose root is the detached mount <root-mount-fd>. Each <path>=<mount-fd> is
 *       attached at <path> beneath it (skipped with a warning if that directory is missing);
 *       the host's /dev and a fresh /proc are added where the image has those directories
 *       (skipped with a warning if that fails). Nothing is created on host file systems.
 *
 * Exit status: 0 ok (for open-tree: the reply was sent), 1 namespace/setup failure, 2 usage
 * error, 127 exec failure.
 * For enter: cmd's status (128+N if killed by signal N); 125 usage or setup failure;
 * 126 cmd not executable; 127 cmd not found.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* x86-64 numbers; glibc 2.36 has no wrappers for the new mount API. */
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_open_tree_attr
#define SYS_open_tree_attr 467
#endif
#ifndef SYS_pivot_root
#define SYS_pivot_root 155
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef MOUNT_ATTR_IDMAP
#define MOUNT_ATTR_IDMAP 0x00100000
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif

#define ENTER_FAIL 125
#define MAX_SUBMOUNTS 16

static int parse_fd(const char *s, int *out) {
    char *end = NULL;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0 || v > INT_MAX) return -1;
    *out = (int)v;
    return 0;
}

static int join(const char *arg, int nstype, const char *what) {
    int fd;
    if (strcmp(arg, "-") == 0) return 0;
    if (parse_fd(arg, &fd) < 0) {
        fprintf(stderr, "mountgate-nshelper: bad %s fd '%s'\n", what, arg);
        return -2;
    }
    if (setns(fd, nstype) < 0) {
        fprintf(stderr, "mountgate-nshelper: setns(%s fd %d): %s\n", what, fd, strerror(errno));
        return -1;
    }
    close(fd);
    return 0;
}

/* Writes the ready byte, then holds the namespace membership until stdin reaches EOF. */
static int ready_then_wait(void) {
    char buf[256];
    ssize_t n;
    do {
        n = write(STDOUT_FILENO, "1", 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) {
        fprintf(stderr, "mountgate-nshelper: write ready byte: %s\n", strerror(errno));
        return 1;
    }
    for (;;) {
        n = read(STDIN_FILENO, buf, sizeof(buf));
        if (n == 0) return 0;
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "mountgate-nshelper: read stdin: %s\n", strerror(errno));
            return 1;
        }
    }
}

#define JOINER_SOCK 3
#define JOINER_MAX_MEMBERS 1024
#define OP_JOIN 1
#define OP_RELEASE 2

static pid_t members[JOINER_MAX_MEMBERS];

/* Reads exactly 8 bytes; the first recvmsg may carry one fd (-1 if none). 1 ok, 0 EOF, -1 error. */
static int joiner_read(uint32_t req[2], int *fd) {
    size_t got = 0;
    *fd = -1;
    while (got < 8) {
        char ctl[CMSG_SPACE(sizeof(int) * 4)];
        struct iovec iov = {(char *)req + got, 8 - got};
        struct msghdr mh = {0};
        ssize_t n;
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = ctl;
        mh.msg_controllen = sizeof(ctl);
        n = recvmsg(JOINER_SOCK, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return n == 0 && got == 0 ? 0 : -1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            int nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < nfds; i++) {
                int f;
                memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                if (got == 0 && *fd < 0) *fd = f;
                else close(f); /* only one fd, on the first byte */
            }
        }
        got += (size_t)n;
    }
    return 1;
}

static int joiner_reply(int32_t result) {
    int32_t rep[2] = {result, 0};
    size_t off = 0;
    while (off < sizeof(rep)) {
        ssize_t n = write(JOINER_SOCK, (char *)rep + off, sizeof(rep) - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        off += (size_t)n;
    }
    return 0;
}

/* Forks a member that joins `fd`; returns its pid or -errno once it is in (or has failed). */
static int32_t joiner_join(int fd, pid_t joiner) {
    int ready[2], slot = -1, err = 0;
    pid_t pid;
    ssize_t n;
    for (int i = 0; i < JOINER_MAX_MEMBERS; i++) {
        if (members[i] == 0) { slot = i; break; }
    }
    if (slot < 0) return -EAGAIN;
    if (pipe2(ready, O_CLOEXEC) < 0) return -errno;
    pid = fork();
    if (pid < 0) {
        err = errno;
        close(ready[0]);
        close(ready[1]);
        return -err;
    }
    if (pid == 0) {
        /* Member: hold nothing of the joiner's, die with it, join, report, wait to be killed. */
        close(ready[0]);
        close(JOINER_SOCK);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != joiner) _exit(1);
        /* It stays uid 0 on the host: the namespace's owner must not ptrace it or read its
         * /proc files. The kernel drops dumpability on this setns too; say so explicitly. */
        if (prctl(PR_SET_DUMPABLE, 0) < 0) _exit(1);
        err = setns(fd, CLONE_NEWUSER) < 0 ? errno : 0;
        close(fd);
        if (write(ready[1], &err, sizeof(err)) != (ssize_t)sizeof(err) || err != 0) _exit(1);
        close(ready[1]);
        for (;;) pause();
    }
    close(ready[1]);
    do {
        n = read(ready[0], &err, sizeof(err));
    } while (n < 0 && errno == EINTR);
    close(ready[0]);
    if (n != (ssize_t)sizeof(err) || err != 0) {
        /* setns failed (err), or the member died before reporting. */
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
        return n == (ssize_t)sizeof(err) && err != 0 ? -err : -ECHILD;
    }
    members[slot] = pid;
    return pid;
}

static int32_t joiner_release(uint32_t arg) {
    for (int i = 0; i < JOINER_MAX_MEMBERS; i++) {
        if (members[i] == 0 || (uint32_t)members[i] != arg) continue;
        kill(members[i], SIGKILL);
        while (waitpid(members[i], NULL, 0) < 0 && errno == EINTR) {}
        members[i] = 0;
        return 0;
    }
    return -ESRCH;
}

static int joiner(void) {
    pid_t self = getpid();
    int fl = fcntl(JOINER_SOCK, F_GETFL);
    /* The daemon's end is non-blocking; this one (its own file) must block. */
    if (fl < 0 || fcntl(JOINER_SOCK, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        fprintf(stderr, "mountgate-nshelper: joiner: fd %d: %s\n", JOINER_SOCK, strerror(errno));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        uint32_t req[2];
        int fd, r = joiner_read(req, &fd);
        int32_t result;
        if (r <= 0) {
            if (fd >= 0) close(fd);
            if (r < 0) fprintf(stderr, "mountgate-nshelper: joiner: read: %s\n", strerror(errno));
            return r == 0 ? 0 : 1; /* members die with us (PR_SET_PDEATHSIG) */
        }
        if (req[0] == OP_JOIN) result = fd < 0 ? -EBADF : joiner_join(fd, self);
        else if (req[0] == OP_RELEASE) result = joiner_release(req[1]);
        else result = -EINVAL;
        if (fd >= 0) close(fd);
        if (joiner_reply(result) < 0) return 1;
    }
}

static int userns_new(void) {
    if (unshare(CLONE_NEWUSER) < 0) {
        fprintf(stderr, "mountgate-nshelper: unshare(CLONE_NEWUSER): %s\n", strerror(errno));
        return 1;
    }
    return ready_then_wait();
}

static int exec_in(int argc, char **argv) {
    /* argv: exec-in <userns> <mntns> -- cmd args... */
    int r;
    if (argc < 5 || strcmp(argv[3], "--") != 0) {
        fprintf(stderr, "usage: mountgate-nshelper exec-in <userns-fd|-> <mntns-fd|-> -- cmd [args...]\n");
        return 2;
    }
    r = join(argv[1], CLONE_NEWUSER, "userns");
    if (r < 0) return r == -2 ? 2 : 1;
    r = join(argv[2], CLONE_NEWNS, "mntns");
    if (r < 0) return r == -2 ? 2 : 1;
    execvp(argv[4], &argv[4]);
    fprintf(stderr, "mountgate-nshelper: exec %s: %s\n", argv[4], strerror(errno));
    return 127;
}

/* struct mount_attr, MOUNT_ATTR_SIZE_VER0 (glibc 2.36 has the syscalls' types only in linux/mount.h). */
struct tree_attr {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};

/* Sends the 4-byte result, with `fd` as SCM_RIGHTS when it is >= 0. */
static int send_result(int sock, int32_t result, int fd) {
    char ctl[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {&result, sizeof(result)};
    struct msghdr mh = {0};
    ssize_t n;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (fd >= 0) {
        struct cmsghdr *c;
        memset(ctl, 0, sizeof(ctl));
        mh.msg_control = ctl;
        mh.msg_controllen = sizeof(ctl);
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    do {
        n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n == (ssize_t)sizeof(result) ? 0 : -1;
}

static int open_tree_in(int argc, char **argv) {
    /* argv: open-tree <mntns-fd> <dir-fd> <sock-fd> */
    const unsigned flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW;
    struct tree_attr attr = {0, MOUNT_ATTR_IDMAP, 0, 0};
    int mntns, dir, sock, mnt = -1, err = 0;
    if (argc != 4 || parse_fd(argv[1], &mntns) < 0 || parse_fd(argv[2], &dir) < 0 || parse_fd(argv[3], &sock) < 0) {
        fprintf(stderr, "usage: mountgate-nshelper open-tree <mntns-fd> <dir-fd> <sock-fd>\n");
        return 2;
    }
    /* An explicit type: the fd must be a mount namespace (and a filter such as systemd's
     * RestrictNamespaces= refuses setns() with type 0). */
    if (setns(mntns, CLONE_NEWNS) < 0) {
        err = errno;
        fprintf(stderr, "mountgate-nshelper: setns(mntns fd %d): %s\n", mntns, strerror(err));
    } else {
        close(mntns);
        mnt = (int)syscall(SYS_open_tree_attr, dir, "", flags, &attr, sizeof(attr));
        /* ENOSYS: before 6.15; EINVAL: a file system without idmapped mounts; EPERM: a seccomp
         * allow-list older than the call (directory.ts's cloneHere() says more). */
        if (mnt < 0 && (errno == ENOSYS || errno == EINVAL || errno == EPERM)) mnt = (int)syscall(SYS_open_tree, dir, "", flags);
        if (mnt < 0) err = errno;
    }
    if (send_result(sock, err, mnt) < 0) {
        fprintf(stderr, "mountgate-nshelper: open-tree: send: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

struct submount {
    const char *path; /* relative to the new root */
    int fd;
};

static int fail(const char *what, const char *arg) {
    fprintf(stderr, "mountgate-nshelper: %s%s%s: %s\n", what, arg ? " " : "", arg ? arg : "", strerror(errno));
    return ENTER_FAIL;
}

static int attach(int mount_fd, const char *target) {
    return (int)syscall(SYS_move_mount, mount_fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
}

static int is_dir(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* A relative path without "." or ".." components, so it stays beneath the new root. */
static int valid_subpath(const char *p) {
    const char *c = p;
    if (*p == '\0' || *p == '/') return 0;
    while (*c) {
        size_t len = strcspn(c, "/");
        if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.')) return 0;
        c += len;
        if (*c == '/') c++;
    }
    return 1;
}

static pid_t child_pid;

static void forward_signal(int sig) {
    if (child_pid > 0) kill(child_pid, sig);
}

/* In the PID namespace's first process: build the tree, switch root, exec. */
static int enter_child(int root_fd, const struct submount *subs, int nsubs, int dev_fd, char **cmd) {
    int i;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) return fail("prctl(PR_SET_PDEATHSIG)", NULL);
    /* cwd on the detached root, attach it over "/": lookups from cwd now see the image. */
    if (fchdir(root_fd) < 0) return fail("fchdir to root mount", NULL);
    if (attach(root_fd, "/") < 0) return fail("move_mount root over /", NULL);
    close(root_fd);
    for (i = 0; i < nsubs; i++) {
        if (!is_dir(subs[i].path)) {
            fprintf(stderr, "mountgate-nshelper: warning: image has no directory /%s, partition not mounted\n", subs[i].path);
        } else if (attach(subs[i].fd, subs[i].path) < 0) {
            return fail("move_mount to", subs[i].path);
        }
        close(subs[i].fd);
    }
    if (dev_fd >= 0) {
        if (!is_dir("dev") || attach(dev_fd, "dev") < 0)
            fprintf(stderr, "mountgate-nshelper: warning: /dev not mounted: %s\n", is_dir("dev") ? strerror(errno) : "no such directory in image");
        close(dev_fd);
    }
    /* Needs the host /proc still visible in this mount namespace, so before dropping it. */
    if (!is_dir("proc") || mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        fprintf(stderr, "mountgate-nshelper: warning: /proc not mounted: %s\n", is_dir("proc") ? strerror(errno) : "no such directory in image");
    /* Stack the old root beneath the new one, then detach it. */
    if (syscall(SYS_pivot_root, ".", ".") < 0) return fail("pivot_root", NULL);
    if (umount2(".", MNT_DETACH) < 0) return fail("umount old root", NULL);
    if (chdir("/") < 0) return fail("chdir /", NULL);
    execvp(cmd[0], cmd);
    fprintf(stderr, "mountgate-nshelper: exec %s: %s\n", cmd[0], strerror(errno));
    return errno == ENOENT ? 127 : 126;
}

static int enter(int argc, char **argv) {
    /* argv: enter <userns-fd> <root-fd> [<path>=<fd>...] -- cmd args... */
    struct submount subs[MAX_SUBMOUNTS];
    int nsubs = 0, userns_fd, root_fd, dev_fd, i, status;
    struct sigaction sa;
    if (argc < 5 || parse_fd(argv[1], &userns_fd) < 0 || parse_fd(argv[2], &root_fd) < 0) goto usage;
    for (i = 3; i < argc && strcmp(argv[i], "--") != 0; i++) {
        char *eq = strrchr(argv[i], '=');
        if (!eq || nsubs == MAX_SUBMOUNTS) goto usage;
        *eq = '\0';
        subs[nsubs].path = argv[i];
        while (*subs[nsubs].path == '/') subs[nsubs].path++;
        if (!valid_subpath(subs[nsubs].path) || parse_fd(eq + 1, &subs[nsubs].fd) < 0) goto usage;
        nsubs++;
    }
    if (i + 1 >= argc) goto usage;

    if (setns(userns_fd, CLONE_NEWUSER) < 0) return fail("setns(user namespace)", NULL);
    close(userns_fd);
    /* The creator's uid is not mapped: become root of the namespace, so that the
     * capabilities survive execve. Groups not mapped there would show as nobody. */
    if (setgroups(0, NULL) < 0 && errno != EPERM) return fail("setgroups", NULL);
    if (setresgid(0, 0, 0) < 0) return fail("setresgid(0)", NULL);
    if (setresuid(0, 0, 0) < 0) return fail("setresuid(0)", NULL);
    if (unshare(CLONE_NEWNS | CLONE_NEWPID) < 0) return fail("unshare(CLONE_NEWNS|CLONE_NEWPID)", NULL);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) return fail("make / private", NULL);
    /* Clone the host /dev now, while "/" still means the host root. */
    dev_fd = (int)syscall(SYS_open_tree, AT_FDCWD, "/dev", OPEN_TREE_CLONE | AT_RECURSIVE | O_CLOEXEC);
    if (dev_fd < 0) fprintf(stderr, "mountgate-nshelper: warning: cannot clone /dev: %s\n", strerror(errno));

    child_pid = fork();
    if (child_pid < 0) return fail("fork", NULL);
    if (child_pid == 0) _exit(enter_child(root_fd, subs, nsubs, dev_fd, &argv[i + 1]));

    /* The terminal sends SIGINT/SIGQUIT to cmd directly; pass on the rest. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = forward_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGHUP, &sa, NULL) < 0) return fail("sigaction", NULL);
    signal(SIGINT, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    close(root_fd);
    for (int j = 0; j < nsubs; j++) close(subs[j].fd);
    if (dev_fd >= 0) close(dev_fd);
    while (waitpid(child_pid, &status, 0) < 0) {
        if (errno != EINTR) return fail("waitpid", NULL);
    }
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);

usage:
    fprintf(stderr, "usage: mountgate-nshelper enter <userns-fd> <root-mount-fd> [<path>=<mount-fd>...] -- cmd [args...]\n");
    return ENTER_FAIL;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "joiner") == 0) return joiner();
    if (argc == 2 && strcmp(argv[1], "userns-new") == 0) return userns_new();
    if (argc >= 2 && strcmp(argv[1], "exec-in") == 0) return exec_in(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "enter") == 0) return enter(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "open-tree") == 0) return open_tree_in(argc - 1, argv + 1);
    fprintf(stderr,
            "usage: mountgate-nshelper joiner\n"
            "       mountgate-nshelper userns-new\n"
            "       mountgate-nshelper exec-in <userns-fd|-> <mntns-fd|-> -- cmd [args...]\n"
            "       mountgate-nshelper enter <userns-fd> <root-mount-fd> [<path>=<mount-fd>...] -- cmd [args...]\n"
            "       mountgate-nshelper open-tree <mntns-fd> <dir-fd> <sock-fd>\n");
    return 2;
}
