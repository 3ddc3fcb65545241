/* The mg_* helpers every part of the addon uses: errors, registration, and the one family of
 * argument checks (declared, with their contracts, in addon.h). */
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
  /* errno positive, as everywhere in mountgate (SysError, io.systemd.System); Node's own errors negate it. */
  napi_create_int32(env, err, &num);
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

void mg_export(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

napi_value mg_args_invalid(const mg_args_t *a, const char *msg) {
  char text[256];
  snprintf(text, sizeof text, "%s: %s", a->sig, msg);
  return mg_throw_type(a->env, text);
}

/* "<sig>: argument <i + 1> must be <what>" as a TypeError; returns 0. */
static int misuse(const mg_args_t *a, size_t i, const char *what) {
  char text[128];
  snprintf(text, sizeof text, "argument %zu must be %s", i + 1, what);
  mg_args_invalid(a, text);
  return 0;
}

int mg_args(napi_env env, napi_callback_info info, const char *sig, size_t min, mg_args_t *a) {
  a->env = env;
  a->sig = sig;
  a->argc = MG_MAX_ARGS;
  napi_get_cb_info(env, info, &a->argc, a->argv, &a->self, NULL);
  if (a->argc > MG_MAX_ARGS) a->argc = MG_MAX_ARGS; /* the rest were not fetched */
  if (a->argc < min) {
    char text[256];
    snprintf(text, sizeof text, "%s: expected %zu argument%s, got %zu", sig, min, min == 1 ? "" : "s", a->argc);
    mg_throw_type(env, text);
    return 0;
  }
  return 1;
}

/* v as a double that is a whole number in [lo, hi]. */
static int whole(napi_env env, napi_value v, double lo, double hi, double *out) {
  if (napi_get_value_double(env, v, out) != napi_ok) return 0;
  /* Range first: converting NaN or an out-of-range double to an integer is undefined. */
  return *out >= lo && *out <= hi && *out == (double)(int64_t)*out;
}

/* Argument i as whole() takes it; an argument not passed is undefined, which is no number. */
static int whole_arg(const mg_args_t *a, size_t i, double lo, double hi, double *out) {
  return i < a->argc && whole(a->env, a->argv[i], lo, hi, out);
}

int mg_arg_int(const mg_args_t *a, size_t i, int *out) {
  double d;
  if (!whole_arg(a, i, INT32_MIN, INT32_MAX, &d)) return misuse(a, i, "an int32 integer");
  *out = (int)d;
  return 1;
}

int mg_arg_fd(const mg_args_t *a, size_t i, int *out) {
  double d;
  if (!whole_arg(a, i, 0, INT32_MAX, &d)) return misuse(a, i, "a file descriptor (an integer >= 0)");
  *out = (int)d;
  return 1;
}

#define MAX_SAFE_INTEGER 9007199254740991.0

int mg_arg_i64(const mg_args_t *a, size_t i, int64_t min, int64_t *out) {
  double d;
  if (!whole_arg(a, i, (double)min, MAX_SAFE_INTEGER, &d)) return misuse(a, i, "a safe integer in range");
  *out = (int64_t)d;
  return 1;
}

int mg_arg_buffer(const mg_args_t *a, size_t i, void **data, size_t *len) {
  bool is = false;
  if (i >= a->argc || napi_is_buffer(a->env, a->argv[i], &is) != napi_ok || !is ||
      napi_get_buffer_info(a->env, a->argv[i], data, len) != napi_ok)
    return misuse(a, i, "a Buffer");
  return 1;
}

int mg_arg_string(const mg_args_t *a, size_t i, char *buf, size_t size, size_t *len) {
  if (i >= a->argc || napi_get_value_string_utf8(a->env, a->argv[i], buf, size, len) != napi_ok)
    return misuse(a, i, "a string");
  return 1;
}

int mg_arg_function(const mg_args_t *a, size_t i) {
  napi_valuetype t;
  if (i >= a->argc || napi_typeof(a->env, a->argv[i], &t) != napi_ok || t != napi_function)
    return misuse(a, i, "a function");
  return 1;
}

int mg_arg_fd_array(const mg_args_t *a, size_t i, int *fds, uint32_t max, uint32_t *n) {
  bool is = false;
  if (i >= a->argc || napi_is_array(a->env, a->argv[i], &is) != napi_ok || !is ||
      napi_get_array_length(a->env, a->argv[i], n) != napi_ok)
    return misuse(a, i, "an array of file descriptors");
  if (*n > max) return 1;
  for (uint32_t k = 0; k < *n; k++) {
    napi_value e;
    double d;
    if (napi_get_element(a->env, a->argv[i], k, &e) != napi_ok || !whole(a->env, e, 0, INT32_MAX, &d))
      return misuse(a, i, "an array of file descriptors");
    fds[k] = (int)d;
  }
  return 1;
}

int mg_arg_bool(const mg_args_t *a, size_t i, bool dflt, bool *out) {
  *out = dflt;
  if (i >= a->argc) return 1;
  if (napi_get_value_bool(a->env, a->argv[i], out) != napi_ok) return misuse(a, i, "a boolean");
  return 1;
}
