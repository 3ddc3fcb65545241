/*
 * mountgate-nshelper: tiny single-threaded helper for work that must happen inside a user or
 * mount namespace. setns() into those fails with EINVAL in a multi-threaded process such as
 * Node, so the daemon spawns this binary with the namespace fds inherited.
 *
 *   mountgate-nshelper userns-wait <fd>
 *       Join the user namespace <fd>, write "1" to stdout, then block until stdin reaches EOF.
 *       The daemon uses /proc/<pid>/{uid_map,gid_map} of this process meanwhile.
 *   mountgate-nshelper userns-new
 *       Create a new, unmapped user namespace, write "1" to stdout, then block until stdin
 *       reaches EOF. The caller opens /proc/<pid>/ns/user meanwhile.
 *   mountgate-nshelper exec-in <userns-fd|-> <mntns-fd|-> -- cmd [args...]
 *       Join the given user namespace and/or mount namespace (in that order, so that the
 *       capabilities gained in the user namespace apply to the mount namespace), then execvp.
 *   mountgate-nshelper enter <userns-fd> <root-mount-fd> [<path>=<mount-fd>...] -- cmd [args...]
 *       Run cmd as uid/gid 0 of the (already mapped) user namespace, in a new mount and PID
 *       namespace whose root is the detached mount <root-mount-fd>. Each <path>=<mount-fd> is
 *       attached at <path> beneath it (skipped with a warning if that directory is missing);
 *       the host's /dev and a fresh /proc are added where the image has those directories
 *       (skipped with a warning if that fails). Nothing is created on host file systems.
 *
 * Exit status: 0 ok, 1 namespace/setup failure, 2 usage error, 127 exec failure.
 * For enter: cmd's status (128+N if killed by signal N); 125 usage or setup failure;
 * 126 cmd not executable; 127 cmd not found.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
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
#ifndef SYS_pivot_root
#define SYS_pivot_root 155
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
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

static int userns_wait(const char *fdarg) {
    int r = join(fdarg, CLONE_NEWUSER, "userns");
    if (r < 0) return r == -2 ? 2 : 1;
    return ready_then_wait();
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
    if (argc == 3 && strcmp(argv[1], "userns-wait") == 0) return userns_wait(argv[2]);
    if (argc == 2 && strcmp(argv[1], "userns-new") == 0) return userns_new();
    if (argc >= 2 && strcmp(argv[1], "exec-in") == 0) return exec_in(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "enter") == 0) return enter(argc - 1, argv + 1);
    fprintf(stderr,
            "usage: mountgate-nshelper userns-wait <fd>\n"
            "       mountgate-nshelper userns-new\n"
            "       mountgate-nshelper exec-in <userns-fd|-> <mntns-fd|-> -- cmd [args...]\n"
            "       mountgate-nshelper enter <userns-fd> <root-mount-fd> [<path>=<mount-fd>...] -- cmd [args...]\n");
    return 2;
}
