/* Shared declarations of the mountgate N-API addon. */
#ifndef MOUNTGATE_ADDON_H
#define MOUNTGATE_ADDON_H

#include <node_api.h>

/* Throws a JS Error whose `code` is the errno name (e.g. "EAGAIN"), with
 * `errno` and `syscall` set, and returns NULL for the caller to return. */
napi_value mg_throw_errno(napi_env env, int err, const char *syscall);

/* Throws a TypeError with a fixed message and returns NULL. */
napi_value mg_throw_type(napi_env env, const char *msg);

/* Reads an int32 argument; returns 0 and throws on a wrong type. */
int mg_get_int(napi_env env, napi_value v, int *out);

/* Registers a native function on exports. */
void mg_export(napi_env env, napi_value exports, const char *name, napi_callback cb);

void mg_init_socket(napi_env env, napi_value exports);
void mg_init_hash(napi_env env, napi_value exports);

#endif
