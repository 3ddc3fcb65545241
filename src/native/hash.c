/* dm-verity hashing off the JS thread.
 *
 * Each call is one napi_async_work whose execute step shares the blocks, 2 MiB chunks
 * claimed one at a time, among one thread per online CPU. A block's digest is SHA-256(salt || block) (hash type 1),
 * compared with the expected digest slot; the promise resolves with -1 when every block
 * matches, or with the index of a block that does not (threads stop at the first they see).
 *
 * verityVerifyFd() also copies: each chunk is pread() once into a thread-private buffer,
 * hashed there, and that same buffer is pwrite()n to the destination, so the destination
 * holds exactly the bytes that were hashed, whatever the source does meanwhile.
 *
 * SHA-256 comes from the OpenSSL that the node binary exports (headers in
 * /usr/include/node/openssl, same version), so the addon needs no -lcrypto. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/evp.h>
#include "addon.h"

#define DIGEST 32
/* 2 MiB: a huge page of the copy, so two threads never write into the same one. */
#define CHUNK (2u << 20)
#define MAX_THREADS 64

typedef struct {
  /* Source: memory (src_fd < 0) or an fd read with pread at src_off. */
  const uint8_t *src_mem;
  int src_fd;
  int64_t src_off;
  /* Optional copy destination (dst_fd < 0: none). */
  int dst_fd;
  int64_t dst_off;
  uint32_t block_size;
  int64_t count;
  const uint8_t *salt;
  uint32_t salt_len;
  const uint8_t *expected;
  uint32_t hash_block_size;
  uint32_t per_block;

  EVP_MD_CTX *base; /* initialised with the salt; copied per block */
  _Atomic int64_t next; /* first block no thread has claimed yet */
  _Atomic int64_t first_bad;
  _Atomic int stop;
  pthread_mutex_t err_lock;
  int err;
  const char *err_call;

  napi_async_work work;
  napi_deferred deferred;
  napi_ref refs[3];
  int nrefs;
} job_t;


static void job_fail(job_t *j, int err, const char *call) {
  pthread_mutex_lock(&j->err_lock);
  if (!j->err) {
    j->err = err;
    j->err_call = call;
  }
  pthread_mutex_unlock(&j->err_lock);
  atomic_store(&j->stop, 1);
}

static void note_bad(job_t *j, int64_t idx) {
  int64_t cur = atomic_load(&j->first_bad);
  while ((cur < 0 || idx < cur) && !atomic_compare_exchange_weak(&j->first_bad, &cur, idx)) {
  }
  atomic_store(&j->stop, 1);
}

/* Hashes n blocks at p (block indices from first) and compares with the expected slots.
 * Returns 0, or -1 after recording an OpenSSL failure. */
static int check_blocks(job_t *j, EVP_MD_CTX *ctx, const uint8_t *p, int64_t first, int64_t n) {
  uint8_t md[EVP_MAX_MD_SIZE];
  unsigned int len;
  for (int64_t k = 0; k < n; k++) {
    int64_t i = first + k;
    if (!EVP_MD_CTX_copy_ex(ctx, j->base) || !EVP_DigestUpdate(ctx, p + (size_t)k * j->block_size, j->block_size) ||
        !EVP_DigestFinal_ex(ctx, md, &len) || len != DIGEST) {
      job_fail(j, EPROTO, "EVP_Digest");
      return -1;
    }
    const uint8_t *want = j->expected + (size_t)(i / j->per_block) * j->hash_block_size + (size_t)(i % j->per_block) * DIGEST;
    if (memcmp(md, want, DIGEST) != 0) {
      note_bad(j, i);
      return 0;
    }
  }
  return 0;
}

static int read_full(int fd, uint8_t *buf, size_t len, int64_t off) {
  while (len > 0) {
    ssize_t r = pread(fd, buf, len, off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno;
    if (r == 0) return ENODATA; /* source shorter than announced */
    buf += r;
    len -= (size_t)r;
    off += r;
  }
  return 0;
}

static int write_full(int fd, const uint8_t *buf, size_t len, int64_t off) {
  while (len > 0) {
    ssize_t r = pwrite(fd, buf, len, off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno;
    if (r == 0) return ENOSPC;
    buf += r;
    len -= (size_t)r;
    off += r;
  }
  return 0;
}

/* Claims chunks until none are left: threads that get less CPU (the machine is shared) do
 * less, instead of the others idling at the end of a fixed split. */
static void *worker(void *arg) {
  job_t *j = arg;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  uint8_t *buf = NULL;
  if (!ctx) {
    job_fail(j, ENOMEM, "EVP_MD_CTX_new");
    return NULL;
  }
  if (j->src_fd >= 0 && !(buf = malloc(CHUNK))) {
    job_fail(j, ENOMEM, "malloc");
    EVP_MD_CTX_free(ctx);
    return NULL;
  }
  int64_t per_chunk = CHUNK / j->block_size;
  while (!atomic_load(&j->stop)) {
    int64_t i = atomic_fetch_add(&j->next, per_chunk);
    if (i >= j->count) break;
    int64_t n = j->count - i < per_chunk ? j->count - i : per_chunk;
    size_t bytes = (size_t)n * j->block_size;
    int64_t rel = i * (int64_t)j->block_size;
    const uint8_t *p;
    if (j->src_fd >= 0) {
      int e = read_full(j->src_fd, buf, bytes, j->src_off + rel);
      if (e) {
        job_fail(j, e, "pread");
        break;
      }
      p = buf;
    } else {
      p = j->src_mem + rel;
    }
    if (check_blocks(j, ctx, p, i, n) < 0) break;
    if (j->dst_fd >= 0 && !atomic_load(&j->stop)) {
      int e = write_full(j->dst_fd, p, bytes, j->dst_off + rel);
      if (e) {
        job_fail(j, e, "pwrite");
        break;
      }
    }
  }
  free(buf);
  EVP_MD_CTX_free(ctx);
  return NULL;
}

static int online_cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n < 1) return 1;
  return n > MAX_THREADS ? MAX_THREADS : (int)n;
}

static void execute(napi_env env, void *data) {
  (void)env;
  job_t *j = data;
  j->base = EVP_MD_CTX_new();
  if (!j->base || !EVP_DigestInit_ex(j->base, EVP_sha256(), NULL) || !EVP_DigestUpdate(j->base, j->salt, j->salt_len)) {
    job_fail(j, EPROTO, "EVP_DigestInit");
    return;
  }
  /* At least 64 blocks per thread so tiny levels don't pay for thread start-up. */
  int64_t want = (j->count + 63) / 64;
  int nt = online_cpus();
  if (want < nt) nt = (int)want;
  if (nt < 1) nt = 1;
  pthread_t tids[MAX_THREADS];
  int started[MAX_THREADS] = {0};
  /* This (libuv pool) thread works too, next to nt - 1 threads of its own. */
  for (int t = 1; t < nt; t++) {
    int e = pthread_create(&tids[t], NULL, worker, j);
    if (e) {
      job_fail(j, e, "pthread_create");
      break;
    }
    started[t] = 1;
  }
  worker(j);
  for (int t = 1; t < nt; t++)
    if (started[t]) pthread_join(tids[t], NULL);
}

static void complete(napi_env env, napi_status status, void *data) {
  job_t *j = data;
  napi_value result;
  if (j->err || status != napi_ok) {
    /* mg_throw_errno builds the errno-coded error; take it back off the pending slot. */
    mg_throw_errno(env, j->err ? j->err : ECANCELED, j->err ? j->err_call : "napi_async_work");
    napi_get_and_clear_last_exception(env, &result);
    napi_reject_deferred(env, j->deferred, result);
  } else {
    napi_create_int64(env, atomic_load(&j->first_bad), &result);
    napi_resolve_deferred(env, j->deferred, result);
  }
  for (int i = 0; i < j->nrefs; i++) napi_delete_reference(env, j->refs[i]);
  napi_delete_async_work(env, j->work);
  if (j->base) EVP_MD_CTX_free(j->base);
  pthread_mutex_destroy(&j->err_lock);
  free(j);
}

static int get_i64(napi_env env, napi_value v, int64_t *out, int64_t min) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d != (double)(int64_t)d || d < (double)min || d > 9007199254740991.0) {
    mg_throw_type(env, "expected a safe integer in range");
    return 0;
  }
  *out = (int64_t)d;
  return 1;
}

static int get_buf(napi_env env, job_t *j, napi_value v, const uint8_t **p, size_t *len) {
  bool is;
  void *data;
  if (napi_is_buffer(env, v, &is) != napi_ok || !is || napi_get_buffer_info(env, v, &data, len) != napi_ok) {
    mg_throw_type(env, "expected a Buffer");
    return 0;
  }
  /* Keep the Buffer alive while the worker threads read it. */
  napi_create_reference(env, v, 1, &j->refs[j->nrefs++]);
  *p = data;
  return 1;
}

static int is_pow2(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

/* Parses (blockSize, count, salt, expected, hashBlockSize, hashesPerBlock) at argv and
 * checks that every expected slot lies inside `expected`. */
static int parse_common(napi_env env, job_t *j, napi_value *argv) {
  int64_t bs, count, hbs, per;
  size_t salt_len, exp_len;
  if (!get_i64(env, argv[0], &bs, 1) || !get_i64(env, argv[1], &count, 1) || !get_buf(env, j, argv[2], &j->salt, &salt_len) ||
      !get_buf(env, j, argv[3], &j->expected, &exp_len) || !get_i64(env, argv[4], &hbs, DIGEST) || !get_i64(env, argv[5], &per, 1))
    return 0;
  if (!is_pow2(bs) || bs > (int64_t)CHUNK || salt_len > 256 || per * DIGEST > hbs || count > INT64_MAX / 2 / bs) {
    mg_throw_type(env, "invalid hashing geometry");
    return 0;
  }
  int64_t last = count - 1;
  if ((last / per) > INT64_MAX / 2 / hbs || (uint64_t)((last / per) * hbs + (last % per) * DIGEST + DIGEST) > exp_len) {
    mg_throw_type(env, "expected digests out of range");
    return 0;
  }
  j->block_size = (uint32_t)bs;
  j->count = count;
  j->salt_len = (uint32_t)salt_len;
  j->hash_block_size = (uint32_t)hbs;
  j->per_block = (uint32_t)per;
  return 1;
}

static job_t *job_new(void) {
  job_t *j = calloc(1, sizeof *j);
  if (!j) return NULL;
  j->src_fd = -1;
  j->dst_fd = -1;
  atomic_init(&j->first_bad, -1);
  atomic_init(&j->next, 0);
  atomic_init(&j->stop, 0);
  pthread_mutex_init(&j->err_lock, NULL);
  return j;
}

static void job_abort(napi_env env, job_t *j) {
  for (int i = 0; i < j->nrefs; i++) napi_delete_reference(env, j->refs[i]);
  pthread_mutex_destroy(&j->err_lock);
  free(j);
}

static napi_value job_start(napi_env env, job_t *j) {
  napi_value promise, name;
  napi_create_promise(env, &j->deferred, &promise);
  napi_create_string_utf8(env, "mountgate:verity", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, complete, j, &j->work);
  napi_queue_async_work(env, j->work);
  return promise;
}

/* verityVerifyMemory(data, blockSize, count, salt, expected, hashBlockSize, hashesPerBlock) */
static napi_value verify_memory(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 7) return mg_throw_type(env, "verityVerifyMemory takes 7 arguments");
  job_t *j = job_new();
  if (!j) return mg_throw_errno(env, ENOMEM, "calloc");
  size_t len;
  if (!get_buf(env, j, argv[0], &j->src_mem, &len) || !parse_common(env, j, argv + 1)) {
    job_abort(env, j);
    return NULL;
  }
  if ((uint64_t)j->count > len / j->block_size) {
    job_abort(env, j);
    return mg_throw_type(env, "data shorter than count blocks");
  }
  return job_start(env, j);
}

/* verityVerifyFd(srcFd, srcOffset, dstFd, dstOffset, blockSize, count, salt, expected, hashBlockSize, hashesPerBlock) */
static napi_value verify_fd(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value argv[10];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 10) return mg_throw_type(env, "verityVerifyFd takes 10 arguments");
  job_t *j = job_new();
  if (!j) return mg_throw_errno(env, ENOMEM, "calloc");
  int src_fd, dst_fd;
  if (!mg_get_int(env, argv[0], &src_fd) || !get_i64(env, argv[1], &j->src_off, 0) || !mg_get_int(env, argv[2], &dst_fd) ||
      !get_i64(env, argv[3], &j->dst_off, 0) || !parse_common(env, j, argv + 4)) {
    job_abort(env, j);
    return NULL;
  }
  int64_t bytes = j->count * (int64_t)j->block_size;
  if (src_fd < 0 || dst_fd < -1 || j->src_off > INT64_MAX - bytes || j->dst_off > INT64_MAX - bytes) {
    job_abort(env, j);
    return mg_throw_type(env, "invalid fd");
  }
  j->src_fd = src_fd;
  j->dst_fd = dst_fd;
  return job_start(env, j);
}

void mg_init_hash(napi_env env, napi_value exports) {
  mg_export(env, exports, "verityVerifyMemory", verify_memory);
  mg_export(env, exports, "verityVerifyFd", verify_fd);
}
