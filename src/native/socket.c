/* AF_UNIX stream sockets with SCM_RIGHTS, peer credentials and uv_poll readiness.
 *
 * Node's net.Socket reads without ancillary data, so passed fds would be dropped: this
 * file owns listening and connected sockets end to end. Every call is non-blocking;
 * "would block" is returned as null / -1 instead of an exception so the JS side can
 * wait for readiness. Received fds are always close-on-exec (MSG_CMSG_CLOEXEC). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>
#include "addon.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

/* The kernel caps one SCM_RIGHTS message at SCM_MAX_FD = 253 fds. */
#define MG_MAX_FDS 253

/* Argument i, a socket path ('@' first for an abstract one), as an address. */
static int arg_addr(const mg_args_t *a, size_t i, struct sockaddr_un *sa, socklen_t *len) {
  size_t n = 0;
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (!mg_arg_string(a, i, sa->sun_path, sizeof sa->sun_path, &n)) return 0;
  if (n == 0 || n >= sizeof sa->sun_path - 1) {
    mg_throw_errno(a->env, ENAMETOOLONG, "sockaddr_un");
    return 0;
  }
  /* A leading '@' names an abstract socket. */
  if (sa->sun_path[0] == '@') sa->sun_path[0] = '\0';
  *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (sa->sun_path[0] ? 1 : 0));
  return 1;
}

static napi_value int_value(napi_env env, int v) {
  napi_value r;
  napi_create_int32(env, v, &r);
  return r;
}

/* listen(path, backlog) -> fd */
static napi_value js_listen(napi_env env, napi_callback_info info) {
  mg_args_t a;
  struct sockaddr_un sa;
  socklen_t len;
  int backlog;
  if (!mg_args(env, info, "listen(path, backlog)", 2, &a) || !arg_addr(&a, 0, &sa, &len) || !mg_arg_int(&a, 1, &backlog))
    return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return mg_throw_errno(env, errno, "socket");
  if (bind(fd, (struct sockaddr *)&sa, len) < 0) {
    int e = errno;
    close(fd);
    return mg_throw_errno(env, e, "bind");
  }
  if (listen(fd, backlog) < 0) {
    int e = errno;
    close(fd);
    return mg_throw_errno(env, e, "listen");
  }
  return int_value(env, fd);
}

/* connect(path) -> fd. AF_UNIX connects complete at once or fail with EAGAIN
 * (backlog full), which is thrown for the caller to retry. */
static napi_value js_connect(napi_env env, napi_callback_info info) {
  mg_args_t a;
  struct sockaddr_un sa;
  socklen_t len;
  if (!mg_args(env, info, "connect(path)", 1, &a) || !arg_addr(&a, 0, &sa, &len)) return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return mg_throw_errno(env, errno, "socket");
  if (connect(fd, (struct sockaddr *)&sa, len) < 0) {
    int e = errno;
    close(fd);
    return mg_throw_errno(env, e, "connect");
  }
  return int_value(env, fd);
}

/* accept(listenFd) -> fd | null when no connection is pending */
static napi_value js_accept(napi_env env, napi_callback_info info) {
  mg_args_t a;
  napi_value r;
  int lfd;
  if (!mg_args(env, info, "accept(listenFd)", 1, &a) || !mg_arg_fd(&a, 0, &lfd)) return NULL;
  int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED || errno == EINTR) {
      napi_get_null(env, &r);
      return r;
    }
    return mg_throw_errno(env, errno, "accept4");
  }
  return int_value(env, fd);
}

/* socketpair() -> [fd, fd] */
static napi_value js_socketpair(napi_env env, napi_callback_info info) {
  (void)info;
  int sv[2];
  napi_value arr;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
    return mg_throw_errno(env, errno, "socketpair");
  napi_create_array_with_length(env, 2, &arr);
  napi_set_element(env, arr, 0, int_value(env, sv[0]));
  napi_set_element(env, arr, 1, int_value(env, sv[1]));
  return arr;
}

/* sendmsg(fd, buffer, offset, length, fds[]) -> bytes written | -1 when it would block.
 * All fds ride on this one call (the start of a Varlink message). */
static napi_value js_sendmsg(napi_env env, napi_callback_info info) {
  mg_args_t a;
  int fd, off, len, fds[MG_MAX_FDS];
  void *data;
  size_t dlen;
  uint32_t nfds = 0;
  if (!mg_args(env, info, "sendmsg(fd, buf, offset, length, fds)", 5, &a) || !mg_arg_fd(&a, 0, &fd) ||
      !mg_arg_buffer(&a, 1, &data, &dlen) || !mg_arg_int(&a, 2, &off) || !mg_arg_int(&a, 3, &len) ||
      !mg_arg_fd_array(&a, 4, fds, MG_MAX_FDS, &nfds))
    return NULL;
  if (off < 0 || len < 0 || (size_t)off + (size_t)len > dlen)
    return mg_args_invalid(&a, "offset and length outside buf");
  if (nfds > MG_MAX_FDS) return mg_throw_errno(env, ETOOMANYREFS, "sendmsg");

  union {
    char buf[CMSG_SPACE(sizeof(int) * MG_MAX_FDS)];
    struct cmsghdr align;
  } ctl;
  struct iovec iov = {.iov_base = (char *)data + off, .iov_len = (size_t)len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (nfds > 0) {
    memset(&ctl, 0, sizeof ctl);
    msg.msg_control = ctl.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n;
  do n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return int_value(env, -1);
    return mg_throw_errno(env, errno, "sendmsg");
  }
  return int_value(env, (int)n);
}

/* recvmsg(fd, buffer) -> { bytes, fds, truncated } | null when it would block.
 * bytes == 0 means end of stream. truncated means the kernel dropped fds (MSG_CTRUNC);
 * the caller must treat that as a protocol error. */
static napi_value js_recvmsg(napi_env env, napi_callback_info info) {
  mg_args_t a;
  napi_value r, arr;
  int fd;
  void *data;
  size_t dlen;
  if (!mg_args(env, info, "recvmsg(fd, buf)", 2, &a) || !mg_arg_fd(&a, 0, &fd) || !mg_arg_buffer(&a, 1, &data, &dlen))
    return NULL;

  union {
    char buf[CMSG_SPACE(sizeof(int) * MG_MAX_FDS)];
    struct cmsghdr align;
  } ctl;
  struct iovec iov = {.iov_base = data, .iov_len = dlen};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
  ssize_t n;
  do n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      napi_get_null(env, &r);
      return r;
    }
    return mg_throw_errno(env, errno, "recvmsg");
  }
  napi_create_object(env, &r);
  napi_create_array(env, &arr);
  uint32_t count = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int *fds = (int *)CMSG_DATA(c);
    for (size_t i = 0; i < k; i++) napi_set_element(env, arr, count++, int_value(env, fds[i]));
  }
  napi_value bytes, trunc;
  napi_create_int32(env, (int)n, &bytes);
  napi_get_boolean(env, (msg.msg_flags & MSG_CTRUNC) != 0, &trunc);
  napi_set_named_property(env, r, "bytes", bytes);
  napi_set_named_property(env, r, "fds", arr);
  napi_set_named_property(env, r, "truncated", trunc);
  return r;
}

/* peerCred(fd) -> { pid, uid, gid } */
static napi_value js_peercred(napi_env env, napi_callback_info info) {
  mg_args_t a;
  napi_value r;
  int fd;
  if (!mg_args(env, info, "peerCred(fd)", 1, &a) || !mg_arg_fd(&a, 0, &fd)) return NULL;
  struct ucred cr;
  socklen_t l = sizeof cr;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) < 0) return mg_throw_errno(env, errno, "getsockopt(SO_PEERCRED)");
  napi_create_object(env, &r);
  napi_set_named_property(env, r, "pid", int_value(env, cr.pid));
  napi_value u, g;
  napi_create_uint32(env, cr.uid, &u);
  napi_create_uint32(env, cr.gid, &g);
  napi_set_named_property(env, r, "uid", u);
  napi_set_named_property(env, r, "gid", g);
  return r;
}

/* peerPidfd(fd) -> pidfd (close-on-exec) | -1 when the kernel lacks SO_PEERPIDFD */
static napi_value js_peerpidfd(napi_env env, napi_callback_info info) {
  mg_args_t a;
  int fd, pidfd = -1;
  if (!mg_args(env, info, "peerPidfd(fd)", 1, &a) || !mg_arg_fd(&a, 0, &fd)) return NULL;
  socklen_t l = sizeof pidfd;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &l) < 0) {
    if (errno == ENOPROTOOPT || errno == EINVAL) return int_value(env, -1);
    return mg_throw_errno(env, errno, "getsockopt(SO_PEERPIDFD)");
  }
  return int_value(env, pidfd);
}

/* close(fd) */
static napi_value js_close(napi_env env, napi_callback_info info) {
  mg_args_t a;
  int fd;
  if (!mg_args(env, info, "close(fd)", 1, &a) || !mg_arg_fd(&a, 0, &fd)) return NULL;
  /* Linux always releases the fd, even when close() reports EINTR. */
  if (close(fd) < 0 && errno != EINTR) return mg_throw_errno(env, errno, "close");
  return NULL;
}

/* shutdown(fd): half-close both directions so a blocked peer wakes up. */
static napi_value js_shutdown(napi_env env, napi_callback_info info) {
  mg_args_t a;
  int fd;
  if (!mg_args(env, info, "shutdown(fd)", 1, &a) || !mg_arg_fd(&a, 0, &fd)) return NULL;
  if (shutdown(fd, SHUT_RDWR) < 0 && errno != ENOTCONN) return mg_throw_errno(env, errno, "shutdown");
  return NULL;
}

/* setNonBlocking(fd): inherited (socket-activated) sockets may be blocking, and a
 * blocking accept() would stall the whole event loop. */
static napi_value js_setnonblocking(napi_env env, napi_callback_info info) {
  mg_args_t a;
  int fd;
  if (!mg_args(env, info, "setNonBlocking(fd)", 1, &a) || !mg_arg_fd(&a, 0, &fd)) return NULL;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return mg_throw_errno(env, errno, "fcntl(O_NONBLOCK)");
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) return mg_throw_errno(env, errno, "fcntl(FD_CLOEXEC)");
  return NULL;
}

/* ---- Poller: uv_poll_t on an fd, calling back (status, events) in the JS loop ---- */

typedef struct {
  uv_poll_t handle;
  napi_env env;
  napi_ref callback;
  napi_ref self;
  int closed;
} poller_t;

static void poll_cb(uv_poll_t *h, int status, int events) {
  poller_t *p = (poller_t *)h->data;
  napi_handle_scope scope;
  napi_open_handle_scope(p->env, &scope);
  napi_value cb, recv, argv[2], ret;
  napi_get_reference_value(p->env, p->callback, &cb);
  napi_get_global(p->env, &recv); /* make_callback needs an object receiver */
  napi_create_int32(p->env, status, &argv[0]);
  napi_create_int32(p->env, events, &argv[1]);
  napi_async_context ctx;
  napi_value name;
  napi_create_string_utf8(p->env, "mountgate.poll", NAPI_AUTO_LENGTH, &name);
  napi_async_init(p->env, NULL, name, &ctx);
  /* make_callback runs the microtask queue afterwards, so promises settle promptly. */
  /* An exception in the callback must not stay pending (it would poison every later
   * N-API call): hand it to process 'uncaughtException' like any async error. */
  if (napi_make_callback(p->env, ctx, recv, cb, 2, argv, &ret) == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(p->env, &exc);
    napi_fatal_exception(p->env, exc);
  }
  napi_async_destroy(p->env, ctx);
  napi_close_handle_scope(p->env, scope);
}

static void close_cb(uv_handle_t *h) {
  poller_t *p = (poller_t *)h->data;
  /* Unwrap before freeing: a later method call on the JS object then throws "not a Poller"
   * instead of reading freed memory. */
  napi_handle_scope scope;
  napi_value self;
  napi_open_handle_scope(p->env, &scope); /* a libuv callback: no scope is open */
  if (napi_get_reference_value(p->env, p->self, &self) == napi_ok && self) napi_remove_wrap(p->env, self, NULL);
  napi_close_handle_scope(p->env, scope);
  napi_delete_reference(p->env, p->callback);
  napi_reference_unref(p->env, p->self, NULL);
  napi_delete_reference(p->env, p->self);
  free(p);
}

/* The open Poller a method was called on, with the call's arguments in *a. */
static poller_t *unwrap(napi_env env, napi_callback_info info, const char *sig, size_t min, mg_args_t *a) {
  void *ptr = NULL;
  if (!mg_args(env, info, sig, min, a)) return NULL;
  if (napi_unwrap(env, a->self, &ptr) != napi_ok || !ptr) {
    mg_throw_type(env, "not a Poller");
    return NULL;
  }
  poller_t *p = (poller_t *)ptr;
  if (p->closed) {
    mg_throw_type(env, "Poller is closed");
    return NULL;
  }
  return p;
}

static void finalize_noop(napi_env env, void *data, void *hint) {
  (void)env; (void)data; (void)hint;
}

/* new Poller(fd, callback) */
static napi_value poller_new(napi_env env, napi_callback_info info) {
  mg_args_t a;
  int fd;
  if (!mg_args(env, info, "new Poller(fd, callback)", 2, &a) || !mg_arg_fd(&a, 0, &fd) || !mg_arg_function(&a, 1))
    return NULL;
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  poller_t *p = calloc(1, sizeof *p);
  if (!p) return mg_throw_errno(env, ENOMEM, "calloc");
  int rc = uv_poll_init(loop, &p->handle, fd);
  if (rc < 0) {
    free(p);
    return mg_throw_errno(env, -rc, "uv_poll_init");
  }
  p->handle.data = p;
  p->env = env;
  napi_create_reference(env, a.argv[1], 1, &p->callback);
  /* The JS object stays alive while the handle is open; close() drops that ref. */
  napi_wrap(env, a.self, p, finalize_noop, NULL, &p->self);
  napi_reference_ref(env, p->self, NULL);
  return a.self;
}

/* poller.start(events): 1 = readable, 2 = writable, 4 = peer hung up (without reading) */
static napi_value poller_start(napi_env env, napi_callback_info info) {
  mg_args_t a;
  int ev;
  poller_t *p = unwrap(env, info, "poller.start(events)", 1, &a);
  if (!p || !mg_arg_int(&a, 0, &ev)) return NULL;
  int flags = ((ev & 1) ? UV_READABLE : 0) | ((ev & 2) ? UV_WRITABLE : 0) | ((ev & 4) ? UV_DISCONNECT : 0);
  int rc = uv_poll_start(&p->handle, flags, poll_cb);
  if (rc < 0) return mg_throw_errno(env, -rc, "uv_poll_start");
  return NULL;
}

static napi_value poller_stop(napi_env env, napi_callback_info info) {
  mg_args_t a;
  poller_t *p = unwrap(env, info, "poller.stop()", 0, &a);
  if (!p) return NULL;
  uv_poll_stop(&p->handle);
  return NULL;
}

/* poller.close(): stops watching; the fd itself is closed separately by its owner. */
static napi_value poller_close(napi_env env, napi_callback_info info) {
  mg_args_t a;
  poller_t *p = unwrap(env, info, "poller.close()", 0, &a);
  if (!p) return NULL;
  p->closed = 1;
  uv_poll_stop(&p->handle);
  uv_close((uv_handle_t *)&p->handle, close_cb);
  return NULL;
}

/* poller.ref(bool): whether this poller keeps the event loop alive */
static napi_value poller_ref(napi_env env, napi_callback_info info) {
  mg_args_t a;
  bool on;
  poller_t *p = unwrap(env, info, "poller.ref(on)", 0, &a);
  if (!p || !mg_arg_bool(&a, 0, true, &on)) return NULL;
  if (on) uv_ref((uv_handle_t *)&p->handle);
  else uv_unref((uv_handle_t *)&p->handle);
  return NULL;
}

void mg_init_socket(napi_env env, napi_value exports) {
  mg_export(env, exports, "listen", js_listen);
  mg_export(env, exports, "connect", js_connect);
  mg_export(env, exports, "accept", js_accept);
  mg_export(env, exports, "socketpair", js_socketpair);
  mg_export(env, exports, "sendmsg", js_sendmsg);
  mg_export(env, exports, "recvmsg", js_recvmsg);
  mg_export(env, exports, "peerCred", js_peercred);
  mg_export(env, exports, "peerPidfd", js_peerpidfd);
  mg_export(env, exports, "close", js_close);
  mg_export(env, exports, "shutdown", js_shutdown);
  mg_export(env, exports, "setNonBlocking", js_setnonblocking);

  napi_property_descriptor props[] = {
      {"start", NULL, poller_start, NULL, NULL, NULL, napi_default, NULL},
      {"stop", NULL, poller_stop, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, poller_close, NULL, NULL, NULL, napi_default, NULL},
      {"ref", NULL, poller_ref, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value cls;
  napi_define_class(env, "Poller", NAPI_AUTO_LENGTH, poller_new, NULL, 4, props, &cls);
  napi_set_named_property(env, exports, "Poller", cls);
}
