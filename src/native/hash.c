/* dm-verity hashing off the JS thread.
 *
 * Each call is one napi_async_work whose execute step shares the blocks, 2 MiB chunks
 * claimed one at a time, among one thread per online CPU. A block's digest is SHA-256(salt || block) (hash type 1),
 * compared with the expected digest slot; the promise resolves with -1 when every block
 * matches, or with the index of a block that does not (threads stop at the first they see).
 *
 * verityVerifyFd() also copies: each chunk is pread() once into a thread-private buffer,
 * hashed there, and that same buffer is pwrite()n to the destination, so the destination
 * holds exactly the bytes that were hashed, whatever the source does meanwhile. Where the
 * destination takes huge pages (its st_blksize is 2 MiB: verified-copy.ts), a whole chunk is
 * written in one call, which fills a huge page without the kernel zeroing it first, as it does
 * for a page that is faulted in through a mapping or only partly written
 * (shmem_get_folio_gfp(), shmem_write_end()). Otherwise each 256 KiB step is written as soon
 * as it is hashed, while it is still in the core's cache.
 *
 * SHA-256: where the CPU has the SHA extensions, our own code below hashes four blocks at a
 * time, their rounds interleaved: one SHA256RNDS2 waits for the previous one's result, so a
 * single message leaves the unit idle most of the time (four lanes measured 2.5 GB/s per core
 * here, two 1.8, OpenSSL's one 1.4) (Intel's "SHA extensions" paper gives the
 * instruction sequence; FIPS 180-4 the algorithm). Elsewhere OpenSSL's SHA256_* from the node
 * binary (headers in /usr/include/node/openssl, same version), so the addon needs no -lcrypto.
 * Either way the salt is absorbed once per call, not per block (cryptsetup's
 * verify_hash_block() feeds it every time), and there is no EVP: with 512-byte blocks,
 * EVP_MD_CTX_copy_ex() and EVP_DigestFinal_ex() per block cost more than the hashing. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <errno.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/sha.h>
#include "addon.h"

#define DIGEST 32
/* 2 MiB: a huge page of the copy, written whole (see above), and never by two threads. */
#define CHUNK (2u << 20)
/* Read and hashed in steps this large, so the bytes pread() just wrote are still in this
 * core's cache when they are hashed. */
#define STEP (256u << 10)
#define MAX_THREADS 64

/* ---- SHA-256(salt || block) ---- */

typedef struct {
  SHA256_CTX ossl;  /* OpenSSL path: the salt absorbed; copied per block */
  uint32_t h[8];    /* SHA-NI path: state after the salt's whole 64-byte blocks */
  uint8_t rest[64]; /* and the salt bytes after them */
  uint32_t rest_len;
  uint64_t salt_len;
  int ni;
} salted_t;

static const uint32_t K256[64] = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};
static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

/* Blocks hashed at once, their rounds interleaved. */
#ifndef LANES
#define LANES 4
#endif

#define SHANI __attribute__((target("sha,sse4.1,ssse3")))

/* Compresses one 64-byte block into each of `lanes` (1..LANES) states, the lanes' rounds
 * interleaved. st[l] holds the state as SHA-NI wants it: [0] = ABEF, [1] = CDGH. */
SHANI static inline __attribute__((always_inline)) void compress_ni(__m128i st[][2], const uint8_t *const *in, const int lanes) {
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i w[LANES][16], s0[LANES], s1[LANES];
  for (int l = 0; l < lanes; l++) {
    s0[l] = st[l][0];
    s1[l] = st[l][1];
  }
#pragma GCC unroll 16
  for (int g = 0; g < 16; g++) {
    const __m128i k = _mm_loadu_si128((const __m128i *)&K256[4 * g]);
#pragma GCC unroll 4
    for (int l = 0; l < lanes; l++) {
      if (g < 4) {
        w[l][g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(in[l] + 16 * g)), bswap);
      } else {
        /* W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16], four words at a time. */
        __m128i x = _mm_sha256msg1_epu32(w[l][g - 4], w[l][g - 3]);
        x = _mm_add_epi32(x, _mm_alignr_epi8(w[l][g - 1], w[l][g - 2], 4));
        w[l][g] = _mm_sha256msg2_epu32(x, w[l][g - 1]);
      }
      __m128i m = _mm_add_epi32(w[l][g], k);
      s1[l] = _mm_sha256rnds2_epu32(s1[l], s0[l], m);
      s0[l] = _mm_sha256rnds2_epu32(s0[l], s1[l], _mm_shuffle_epi32(m, 0x0e));
    }
  }
  for (int l = 0; l < lanes; l++) {
    st[l][0] = _mm_add_epi32(st[l][0], s0[l]);
    st[l][1] = _mm_add_epi32(st[l][1], s1[l]);
  }
}

SHANI static void load_state(__m128i st[2], const uint32_t h[8]) {
  __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xb1); /* CDAB */
  __m128i u = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1b); /* EFGH */
  st[0] = _mm_alignr_epi8(t, u, 8);                                             /* ABEF */
  st[1] = _mm_blend_epi16(u, t, 0xf0);                                          /* CDGH */
}

/* The digest (big-endian words) of a state in SHA-NI order. */
SHANI static void store_digest(const __m128i st[2], uint8_t out[DIGEST]) {
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i t = _mm_shuffle_epi32(st[0], 0x1b); /* FEBA */
  __m128i u = _mm_shuffle_epi32(st[1], 0xb1); /* DCHG */
  __m128i abcd = _mm_blend_epi16(t, u, 0xf0); /* DCBA */
  __m128i efgh = _mm_alignr_epi8(u, t, 8);    /* HGFE */
  _mm_storeu_si128((__m128i *)out, _mm_shuffle_epi8(abcd, bswap));
  _mm_storeu_si128((__m128i *)(out + 16), _mm_shuffle_epi8(efgh, bswap));
}

/* Block k (64 bytes) of the message rest || data || padding: a pointer into data where it lies
 * wholly inside, else assembled in tmp. */
static const uint8_t *message_block(const salted_t *s, const uint8_t *data, size_t len, size_t k, size_t nblocks, uint8_t tmp[64]) {
  size_t r = s->rest_len, start = 64 * k, end = start + 64;
  if (start >= r && end <= r + len) return data + (start - r);
  memset(tmp, 0, 64);
  /* The salt's rest, the data, then 0x80, zeros and the length in bits, as far as they fall in [start, end). */
  if (start < r) memcpy(tmp, s->rest + start, (end < r ? end : r) - start);
  size_t from = start > r ? start : r, to = end < r + len ? end : r + len;
  if (from < to) memcpy(tmp + (from - start), data + (from - r), to - from);
  if (r + len >= start && r + len < end) tmp[r + len - start] = 0x80;
  if (k == nblocks - 1) {
    uint64_t bits = (s->salt_len + len) * 8;
    for (int i = 0; i < 8; i++) tmp[63 - i] = (uint8_t)(bits >> (8 * i));
  }
  return tmp;
}

/* Digests of the n (1..LANES) blocks in[] of `len` bytes each. */
SHANI static void digest_ni(const salted_t *s, const uint8_t *const *blocks, int n, size_t len, uint8_t out[][DIGEST]) {
  __m128i st[LANES][2];
  uint8_t tmp[LANES][64];
  size_t nblocks = (s->rest_len + len + 9 + 63) / 64;
  load_state(st[0], s->h);
  for (int l = 1; l < n; l++) {
    st[l][0] = st[0][0];
    st[l][1] = st[0][1];
  }
  for (size_t k = 0; k < nblocks; k++) {
    const uint8_t *in[LANES];
    for (int l = 0; l < n; l++) in[l] = message_block(s, blocks[l], len, k, nblocks, tmp[l]);
    /* Constant lane counts, so that each is unrolled and interleaved. */
    switch (n) {
      case 4: compress_ni(st, in, 4); break;
      case 3: compress_ni(st, in, 3); break;
      case 2: compress_ni(st, in, 2); break;
      default: compress_ni(st, in, 1); break;
    }
  }
  for (int l = 0; l < n; l++) store_digest(st[l], out[l]);
}

/* h = the state after the whole 64-byte blocks of salt[0..whole). */
SHANI static void absorb_ni(uint32_t h[8], const uint8_t *salt, size_t whole) {
  memcpy(h, H0, sizeof H0);
  for (size_t off = 0; off < whole; off += 64) {
    __m128i st[1][2];
    const uint8_t *in[1] = {salt + off};
    load_state(st[0], h);
    compress_ni(st, in, 1);
    /* Back to h[] order: the digest's words are the state. */
    uint8_t d[DIGEST];
    store_digest(st[0], d);
    for (int i = 0; i < 8; i++) h[i] = (uint32_t)d[4 * i] << 24 | (uint32_t)d[4 * i + 1] << 16 | (uint32_t)d[4 * i + 2] << 8 | d[4 * i + 3];
  }
}

static void salted_init(salted_t *s, const uint8_t *salt, size_t salt_len) {
  memset(s, 0, sizeof *s);
  SHA256_Init(&s->ossl);
  SHA256_Update(&s->ossl, salt, salt_len);
  s->salt_len = salt_len;
  __builtin_cpu_init();
  /* MOUNTGATE_HASH=openssl takes the other path on any CPU (the tests check both). */
  const char *force = getenv("MOUNTGATE_HASH");
  s->ni = !(force && strcmp(force, "openssl") == 0) && __builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1") && __builtin_cpu_supports("ssse3");
  if (!s->ni) return;
  size_t whole = salt_len / 64 * 64;
  absorb_ni(s->h, salt, whole);
  s->rest_len = (uint32_t)(salt_len - whole);
  memcpy(s->rest, salt + whole, s->rest_len);
}

/* Digests of the n (1..LANES) blocks in[]. */
static void digest_blocks(const salted_t *s, const uint8_t *const *blocks, int n, size_t len, uint8_t out[][DIGEST]) {
  if (s->ni) {
    digest_ni(s, blocks, n, len, out);
    return;
  }
  for (int l = 0; l < n; l++) {
    SHA256_CTX c = s->ossl;
    SHA256_Update(&c, blocks[l], len);
    SHA256_Final(out[l], &c);
  }
}

/* ---- jobs ---- */

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
  /* The copy is written a step at a time, unless its file takes huge pages (st_blksize):
   * then a chunk at a time (see the top of this file). */
  int write_steps;

  salted_t salted;
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

static const uint8_t *expected_slot(const job_t *j, int64_t i) {
  return j->expected + (size_t)(i / j->per_block) * j->hash_block_size + (size_t)(i % j->per_block) * DIGEST;
}

/* Hashes n blocks at p (block indices from first), LANES at a time, and compares each with its
 * expected slot. Returns 0 on a mismatch (recorded), 1 when all match. */
static int check_blocks(job_t *j, const uint8_t *p, int64_t first, int64_t n) {
  uint8_t md[LANES][DIGEST];
  size_t bs = j->block_size;
  for (int64_t k = 0; k < n; k += LANES) {
    int m = n - k < LANES ? (int)(n - k) : LANES;
    const uint8_t *blocks[LANES];
    for (int l = 0; l < m; l++) blocks[l] = p + (size_t)(k + l) * bs;
    digest_blocks(&j->salted, blocks, m, bs, md);
    for (int l = 0; l < m; l++) {
      if (memcmp(md[l], expected_slot(j, first + k + l), DIGEST) != 0) {
        note_bad(j, first + k + l);
        return 0;
      }
    }
  }
  return 1;
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

/* Chunk buffers are kept for the next job instead of freed: a fresh one is faulted in page by
 * page, and page faults are what a VM pays most for (they were a tenth of a verification's
 * time here). At most one per thread that ever ran at once is kept. */
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *pool[MAX_THREADS];
static int pool_len;

static uint8_t *buffer_get(void) {
  uint8_t *b = NULL;
  pthread_mutex_lock(&pool_lock);
  if (pool_len > 0) b = pool[--pool_len];
  pthread_mutex_unlock(&pool_lock);
  return b ? b : malloc(CHUNK);
}

static void buffer_put(uint8_t *b) {
  if (!b) return;
  pthread_mutex_lock(&pool_lock);
  if (pool_len < MAX_THREADS) {
    pool[pool_len++] = b;
    b = NULL;
  }
  pthread_mutex_unlock(&pool_lock);
  free(b);
}

/* Claims chunks until none are left: threads that get less CPU (the machine is shared) do
 * less, instead of the others idling at the end of a fixed split. */
static void *worker(void *arg) {
  job_t *j = arg;
  uint8_t *buf = NULL;
  int64_t per_chunk = CHUNK / j->block_size;
  if (j->src_fd >= 0 && !(buf = buffer_get())) {
    job_fail(j, ENOMEM, "malloc");
    return NULL;
  }
  /* Blocks are at most 4 KiB in practice but up to CHUNK by the interface. */
  int64_t per_step = STEP >= j->block_size ? STEP / j->block_size : 1;
  while (!atomic_load(&j->stop)) {
    int64_t i = atomic_fetch_add(&j->next, per_chunk);
    if (i >= j->count) break;
    int64_t end = j->count - i < per_chunk ? j->count : i + per_chunk;
    int64_t rel = i * (int64_t)j->block_size;
    int ok = 1;
    for (int64_t s = i; ok && s < end && !atomic_load(&j->stop); s += per_step) {
      int64_t n = end - s < per_step ? end - s : per_step;
      size_t at = (size_t)(s - i) * j->block_size;
      const uint8_t *p;
      if (j->src_fd >= 0) {
        int e = read_full(j->src_fd, buf + at, (size_t)n * j->block_size, j->src_off + rel + (int64_t)at);
        if (e) {
          job_fail(j, e, "pread");
          ok = 0;
          break;
        }
        p = buf + at;
      } else {
        p = j->src_mem + rel + (int64_t)at;
      }
      ok = check_blocks(j, p, s, n);
      /* Written while the bytes are still in this core's cache. */
      if (ok && j->dst_fd >= 0 && j->write_steps) {
        int e = write_full(j->dst_fd, p, (size_t)n * j->block_size, j->dst_off + rel + (int64_t)at);
        if (e) {
          job_fail(j, e, "pwrite");
          ok = 0;
        }
      }
    }
    if (!ok || atomic_load(&j->stop)) break;
    if (j->dst_fd >= 0 && !j->write_steps) {
      int e = write_full(j->dst_fd, buf, (size_t)(end - i) * j->block_size, j->dst_off + rel);
      if (e) {
        job_fail(j, e, "pwrite");
        break;
      }
    }
  }
  buffer_put(buf);
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
  salted_init(&j->salted, j->salt, j->salt_len);
  struct stat st;
  if (j->dst_fd >= 0) {
    if (fstat(j->dst_fd, &st) != 0) {
      job_fail(j, errno, "fstat");
      return;
    }
    j->write_steps = st.st_blksize < (blksize_t)CHUNK;
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
  pthread_mutex_destroy(&j->err_lock);
  free(j);
}

/* Argument i, a Buffer, held by the job (kept alive while the worker threads read it). */
static int arg_job_buffer(const mg_args_t *a, size_t i, job_t *j, const uint8_t **p, size_t *len) {
  void *data;
  if (!mg_arg_buffer(a, i, &data, len)) return 0;
  napi_create_reference(a->env, a->argv[i], 1, &j->refs[j->nrefs++]);
  *p = data;
  return 1;
}

static int is_pow2(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

/* Parses (blockSize, count, salt, expected, hashBlockSize, hashesPerBlock) from argument
 * `at` on and checks that every expected slot lies inside `expected`. */
static int parse_common(const mg_args_t *a, size_t at, job_t *j) {
  int64_t bs, count, hbs, per;
  size_t salt_len, exp_len;
  if (!mg_arg_i64(a, at, 1, &bs) || !mg_arg_i64(a, at + 1, 1, &count) || !arg_job_buffer(a, at + 2, j, &j->salt, &salt_len) ||
      !arg_job_buffer(a, at + 3, j, &j->expected, &exp_len) || !mg_arg_i64(a, at + 4, DIGEST, &hbs) ||
      !mg_arg_i64(a, at + 5, 1, &per))
    return 0;
  if (!is_pow2(bs) || bs > (int64_t)CHUNK || salt_len > 256 || per * DIGEST > hbs || count > INT64_MAX / 2 / bs) {
    mg_args_invalid(a, "invalid hashing geometry");
    return 0;
  }
  int64_t last = count - 1;
  if ((last / per) > INT64_MAX / 2 / hbs || (uint64_t)((last / per) * hbs + (last % per) * DIGEST + DIGEST) > exp_len) {
    mg_args_invalid(a, "expected digests out of range");
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

#define VERIFY_MEMORY "verityVerifyMemory(data, blockSize, count, salt, expected, hashBlockSize, hashesPerBlock)"
#define VERIFY_FD \
  "verityVerifyFd(srcFd, srcOffset, dstFd, dstOffset, blockSize, count, salt, expected, hashBlockSize, hashesPerBlock)"

static napi_value verify_memory(napi_env env, napi_callback_info info) {
  mg_args_t a;
  if (!mg_args(env, info, VERIFY_MEMORY, 7, &a)) return NULL;
  job_t *j = job_new();
  if (!j) return mg_throw_errno(env, ENOMEM, "calloc");
  size_t len;
  if (!arg_job_buffer(&a, 0, j, &j->src_mem, &len) || !parse_common(&a, 1, j)) {
    job_abort(env, j);
    return NULL;
  }
  if ((uint64_t)j->count > len / j->block_size) {
    job_abort(env, j);
    return mg_args_invalid(&a, "data shorter than count blocks");
  }
  return job_start(env, j);
}

/* dstFd is -1 for no copy. */
static napi_value verify_fd(napi_env env, napi_callback_info info) {
  mg_args_t a;
  if (!mg_args(env, info, VERIFY_FD, 10, &a)) return NULL;
  job_t *j = job_new();
  if (!j) return mg_throw_errno(env, ENOMEM, "calloc");
  int src_fd, dst_fd;
  if (!mg_arg_fd(&a, 0, &src_fd) || !mg_arg_i64(&a, 1, 0, &j->src_off) || !mg_arg_int(&a, 2, &dst_fd) ||
      !mg_arg_i64(&a, 3, 0, &j->dst_off) || !parse_common(&a, 4, j)) {
    job_abort(env, j);
    return NULL;
  }
  int64_t bytes = j->count * (int64_t)j->block_size;
  if (dst_fd < -1 || j->src_off > INT64_MAX - bytes || j->dst_off > INT64_MAX - bytes) {
    job_abort(env, j);
    return mg_args_invalid(&a, "dstFd below -1, or an offset past the largest file");
  }

  j->src_fd = src_fd;
  j->dst_fd = dst_fd;
  return job_start(env, j);
}

void mg_init_hash(napi_env env, napi_value exports) {
  mg_export(env, exports, "verityVerifyMemory", verify_memory);
  mg_export(env, exports, "verityVerifyFd", verify_fd);
}
