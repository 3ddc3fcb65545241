/*
 * mountgate-nshelper: tiny single-threaded helper for work that must happen inside a user or
 * mount namespace. setns() into those fails with EINVAL in a multi-threaded process such as
 * Node, so the daemon spawns this binary with the namespace fds inherited.
 *
 *   mountgate-nshelper userns-wait <fd>
 *       Join the user namespace <fd>, write "1" to stdout, then block until stdin reaches EOF.
 *       The daemon uses /proc/<pid>/{uid_map,gid_map} of this process meanwhile.
 *   mountgate-nshelper exec-in <userns-fd|-> <mntns-fd|-> -- cmd [args...]
 *       Join the given user namespace and/or mount namespace (in that order, so that the
 *       capabilities gained in the user namespace apply to the mount namespace), then execvp.
 *
 * Exit status: 0 ok, 1 namespace/setup failure, 2 usage error, 127 exec failure.
 */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static int userns_wait(const char *fdarg) {
    char buf[256];
    ssize_t n;
    int r = join(fdarg, CLONE_NEWUSER, "userns");
    if (r < 0) return r == -2 ? 2 : 1;
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

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "userns-wait") == 0 && argc == 3) return userns_wait(argv[2]);
    if (argc >= 2 && strcmp(argv[1], "exec-in") == 0) return exec_in(argc - 1, argv + 1);
    fprintf(stderr,
            "usage: mountgate-nshelper userns-wait <fd>\n"
            "       mountgate-nshelper exec-in <userns-fd|-> <mntns-fd|-> -- cmd [args...]\n");
    return 2;
}
