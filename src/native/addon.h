/* Shared declarations of the mountgate N-API addon: the mg_* helpers (helpers.c) and each
 * part's registration. Every native function opens by fetching its arguments through
 * mg_args() and the mg_arg_* family, which throw a TypeError naming the JS signature on
 * misuse (after better-sqlite3's src/macros.h); JS has already validated and normalised
 * them, so a TypeError here is a bug in the caller. */
#ifndef MOUNTGATE_ADDON_H
#define MOUNTGATE_ADDON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <node_api.h>

/* Throws a JS Error whose `code` is the errno name (e.g. "EAGAIN"), with
 * `errno` (positive, unlike Node's own errors) and `syscall` set, and returns NULL for the caller to
 * return. */
napi_value mg_throw_errno(napi_env env, int err, const char *syscall);

/* Throws a TypeError with a fixed message and returns NULL. */
napi_value mg_throw_type(napi_env env, const char *msg);

/* Registers a native function on exports. */
void mg_export(napi_env env, napi_value exports, const char *name, napi_callback cb);

#define MG_MAX_ARGS 10

/* The arguments of one call. `sig` is the JS signature, e.g. "listen(path, backlog)". */
typedef struct {
  napi_env env;
  const char *sig;
  size_t argc;
  napi_value argv[MG_MAX_ARGS];
  napi_value self;
} mg_args_t;

/* Throws a TypeError "<sig>: <msg>" (arguments of the right types that do not fit together)
 * and returns NULL. */
napi_value mg_args_invalid(const mg_args_t *a, const char *msg);

/* Each returns 1, or 0 with a TypeError thrown ("<sig>: argument N must be ...") for the
 * caller to return NULL. */

/* Fetches the call's arguments (and `this`); at least `min` must have been passed. */
int mg_args(napi_env env, napi_callback_info info, const char *sig, size_t min, mg_args_t *a);
/* A number that is an integer in int32 range. */
int mg_arg_int(const mg_args_t *a, size_t i, int *out);
/* A file descriptor: an integer in 0..INT32_MAX. */
int mg_arg_fd(const mg_args_t *a, size_t i, int *out);
/* A safe integer (|n| <= 2^53 - 1) no smaller than `min`. */
int mg_arg_i64(const mg_args_t *a, size_t i, int64_t min, int64_t *out);
/* A Buffer; *data aliases its memory. */
int mg_arg_buffer(const mg_args_t *a, size_t i, void **data, size_t *len);
/* A string, UTF-8 into buf (NUL-terminated, truncated to size - 1 bytes; *len is what was copied). */
int mg_arg_string(const mg_args_t *a, size_t i, char *buf, size_t size, size_t *len);
/* A function. */
int mg_arg_function(const mg_args_t *a, size_t i);
/* An array of file descriptors, into fds[]; when it holds more than `max`, *n is its length
 * and nothing is read (the caller decides what that means). */
int mg_arg_fd_array(const mg_args_t *a, size_t i, int *fds, uint32_t max, uint32_t *n);
/* A boolean, or `dflt` when the argument was not passed. */
int mg_arg_bool(const mg_args_t *a, size_t i, bool dflt, bool *out);

void mg_init_socket(napi_env env, napi_value exports);
void mg_init_hash(napi_env env, napi_value exports);

#endif
