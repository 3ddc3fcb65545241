/* Entry point of the mountgate N-API addon: registers each part (the helpers they share are
 * in helpers.c). */
#include "addon.h"

static napi_value init(napi_env env, napi_value exports) {
  mg_init_socket(env, exports);
  mg_init_hash(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
