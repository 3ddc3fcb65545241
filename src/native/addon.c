/* Entry point of the mountgate N-API addon and the error helpers every part uses. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "addon.h"

napi_value mg_throw_errno(napi_env env, int err, const char *syscall) {
  const char *name = strerrorname_np(err);
  napi_value msg, error, code, num, sc;
  char text[256];
  snprintf(text, sizeof text, "%s: %s (%s)", syscall, strerror(err), name ? name : "E?");
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, NULL, msg, &error);
  napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code);
  napi_create_int32(env, -err, &num);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sc);
  napi_set_named_property(env, error, "code", code);
  napi_set_named_property(env, error, "errno", num);
  napi_set_named_property(env, error, "syscall", sc);
  napi_throw(env, error);
  return NULL;
}

napi_value mg_throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, NULL, msg);
  return NULL;
}

int mg_get_int(napi_env env, napi_value v, int *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    mg_throw_type(env, "expected an integer");
    return 0;
  }
  return 1;
}

void mg_export(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

static napi_value init(napi_env env, napi_value exports) {
  mg_init_socket(env, exports);
  mg_init_hash(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
