/*
 * sanmux's native crypto accelerator: AES-256-GCM seal/open and HMAC-SHA-256 for
 * src/crypto/aead.ts and src/crypto/kdf.ts (loaded by src/crypto/native.ts).
 *
 * Why it exists: node:crypto spends ~3 µs of JS and C++ glue per record (createDecipheriv,
 * setAAD, setAuthTag, update, final each cross into C++ and allocate), while OpenSSL's own work
 * on a 4 KiB grain is ~1 µs. Here one call does the whole operation on long-lived OpenSSL
 * contexts that are only re-keyed (or, when the key repeats, only re-IV'd) per call.
 *
 * It computes exactly what node:crypto computes (same OpenSSL, same algorithms): the callers
 * rely on byte-identical ciphertexts, tags and fingerprints whichever path runs.
 *
 * Build: scripts/build-native.mjs, against node's own headers (<prefix>/include/node, which
 * include node's OpenSSL headers). It is not linked against libcrypto: the OpenSSL symbols
 * resolve to the copy inside the node binary, so the addon always uses node's OpenSSL (and its
 * default library context and providers). It is linked with -z now so that a node binary that
 * does not export them fails at load time (and sanmux falls back to node:crypto) instead of at
 * the first call.
 *
 * Threads: the module is context-aware (NAPI_MODULE_INIT), so every worker_thread that loads it
 * gets its own napi_env and its own `state` (napi instance data). An env's JS code runs on one
 * thread at a time, so a state is never used concurrently and needs no lock; its finalizer frees
 * the OpenSSL contexts when the env is torn down (a terminated worker leaks nothing).
 */
#define NAPI_VERSION 8
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <node_api.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <openssl/params.h>

#define KEY_BYTES 32
#define NONCE_BYTES 12 /* SP 800-38D §5.2.1.1: 96-bit IVs are the recommended length */
#define TAG_BYTES 16   /* SP 800-38D §5.2.1.2: t = 128, the full-length tag */
#define HMAC_CACHE_MAX 64 /* SHA-256 block size: longer HMAC keys are hashed first, not cached */

/* EVP_*Update take an int length: feed longer inputs in slices of this many bytes. GCM's
 * streaming is exact across any split (a multiple of 16 keeps OpenSSL on its bulk path). */
#define SLICE (1 << 30)

typedef struct {
  EVP_CIPHER *gcm;      /* fetched once: AES-256-GCM from the default provider */
  EVP_CIPHER_CTX *enc;  /* sealing context */
  EVP_CIPHER_CTX *dec;  /* opening context */
  EVP_MAC *hmac;
  EVP_MAC_CTX *mac;     /* HMAC with digest SHA-256 */
  /* The key each context was last keyed with. Re-keying costs an AES key expansion plus GHASH
   * table setup (GCM) or two SHA-256 compressions (HMAC); a worker usually processes runs of
   * records under one container key and fingerprints under one domain key, so a repeated key
   * only sets the IV (GCM) or restarts from the saved ipad/opad state (HMAC). */
  unsigned char enc_key[KEY_BYTES];
  unsigned char dec_key[KEY_BYTES];
  unsigned char mac_key[HMAC_CACHE_MAX];
  size_t mac_key_len;
  int enc_keyed, dec_keyed, mac_keyed;
} state;

static void free_state(state *s) {
  if (s == NULL) return;
  EVP_CIPHER_CTX_free(s->enc);
  EVP_CIPHER_CTX_free(s->dec);
  EVP_MAC_CTX_free(s->mac);
  EVP_MAC_free(s->hmac);
  EVP_CIPHER_free(s->gcm);
  OPENSSL_cleanse(s, sizeof(*s)); /* the cached keys */
  OPENSSL_free(s);
}

static void finalize_state(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free_state((state *)data);
}

/* ---------------------------------------------------------------------------------------- */
/* Argument handling: every check throws a JS error and returns NULL; nothing is trusted.   */

#define THROW_TYPE(env, msg)                \
  do {                                      \
    napi_throw_type_error((env), NULL, (msg)); \
    return NULL;                            \
  } while (0)
#define THROW_RANGE(env, msg)                \
  do {                                       \
    napi_throw_range_error((env), NULL, (msg)); \
    return NULL;                             \
  } while (0)

/* A Uint8Array (a Buffer is one): its bytes and length. Other views are refused so that a
 * caller cannot pass, say, a Float64Array whose "length" is not its byte length. */
static int get_bytes(napi_env env, napi_value v, const char *what, unsigned char **data,
                     size_t *len) {
  bool is_ta = false;
  napi_typedarray_type type;
  size_t length = 0;
  void *p = NULL;
  char msg[128];
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, v, &type, &length, &p, NULL, NULL) != napi_ok ||
      type != napi_uint8_array) {
    snprintf(msg, sizeof msg, "%s must be a Buffer or Uint8Array", what);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  /* A zero-length view may report a NULL data pointer; OpenSSL is never given one with a
   * nonzero length, and the empty-string pointer keeps the "key != NULL" meaning intact. */
  *data = p != NULL ? (unsigned char *)p : (unsigned char *)"";
  *len = length;
  return 1;
}

/* A non-negative integer offset (a JS number). */
static int get_offset(napi_env env, napi_value v, size_t *out) {
  napi_valuetype t;
  double d;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number ||
      napi_get_value_double(env, v, &d) != napi_ok) {
    napi_throw_type_error(env, NULL, "outOffset must be a number");
    return 0;
  }
  /* Range first: converting an out-of-range double to an integer is undefined behaviour. */
  if (!(d >= 0) || d > 9007199254740991.0 /* 2^53 - 1 */ || d != (double)(uint64_t)d) {
    napi_throw_range_error(env, NULL, "outOffset must be a non-negative integer");
    return 0;
  }
  *out = (size_t)d;
  return 1;
}

static int get_state(napi_env env, state **s) {
  if (napi_get_instance_data(env, (void **)s) != napi_ok || *s == NULL) {
    napi_throw_error(env, NULL, "sanmux_crypto: no per-thread state");
    return 0;
  }
  return 1;
}

/* [a, a+alen) and [b, b+blen) share a byte but do not start at the same address: OpenSSL's
 * GCM may read input after it wrote output there. Exactly in place (a == b) is allowed. */
static int partially_overlap(const unsigned char *a, size_t alen, const unsigned char *b,
                             size_t blen) {
  uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
  if (alen == 0 || blen == 0 || x == y) return 0;
  return x < y + blen && y < x + alen;
}

static napi_value make_bool(napi_env env, bool b) {
  napi_value v;
  napi_get_boolean(env, b, &v);
  return v;
}

static napi_value make_size(napi_env env, size_t n) {
  napi_value v;
  napi_create_double(env, (double)n, &v);
  return v;
}

/* Feed `len` bytes to an EVP update in int-sized slices. `out` NULL means AAD. */
static int cipher_update(EVP_CIPHER_CTX *ctx, int encrypt, unsigned char *out,
                         const unsigned char *in, size_t len) {
  while (len > 0) {
    int n = len > SLICE ? SLICE : (int)len;
    int written = 0;
    int ok = encrypt ? EVP_EncryptUpdate(ctx, out, &written, in, n)
                     : EVP_DecryptUpdate(ctx, out, &written, in, n);
    /* GCM is a stream mode: OpenSSL writes exactly as much as it was given. */
    if (!ok || (out != NULL && written != n)) return 0;
    in += n;
    if (out != NULL) out += n;
    len -= (size_t)n;
  }
  return 1;
}

/* Key (or only re-IV) a GCM context. A repeated key skips the key schedule: re-initialising
 * with key NULL and a new IV restarts GHASH and the counter from that IV (OpenSSL resets the
 * per-message state on every IV), which is exactly a fresh GCM invocation (SP 800-38D §7.1). */
static int gcm_init(EVP_CIPHER_CTX *ctx, int encrypt, unsigned char *cached, int *keyed,
                    const unsigned char *key, const unsigned char *nonce) {
  const unsigned char *k = key;
  if (*keyed && CRYPTO_memcmp(cached, key, KEY_BYTES) == 0) k = NULL;
  int ok = encrypt ? EVP_EncryptInit_ex(ctx, NULL, NULL, k, nonce)
                   : EVP_DecryptInit_ex(ctx, NULL, NULL, k, nonce);
  if (!ok) {
    *keyed = 0; /* the context's key is unknown now: re-key next time */
    return 0;
  }
  if (k != NULL) {
    memcpy(cached, key, KEY_BYTES);
    *keyed = 1;
  }
  return 1;
}

/* ---------------------------------------------------------------------------------------- */

/* gcmSealInto(key, nonce, aad, plaintext, out, outOffset) -> plaintext.length + 16
 * Writes ciphertext ‖ tag at out[outOffset..]. The caller guarantees the nonce is fresh for
 * the key (SP 800-38D §8.2: never reuse an IV under one key). */
static napi_value gcm_seal_into(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  unsigned char *key, *nonce, *aad, *pt, *out;
  size_t key_len, nonce_len, aad_len, pt_len, out_len, at;
  state *s;

  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 6) THROW_TYPE(env, "gcmSealInto(key, nonce, aad, plaintext, out, outOffset)");
  if (!get_bytes(env, argv[0], "key", &key, &key_len) ||
      !get_bytes(env, argv[1], "nonce", &nonce, &nonce_len) ||
      !get_bytes(env, argv[2], "aad", &aad, &aad_len) ||
      !get_bytes(env, argv[3], "plaintext", &pt, &pt_len) ||
      !get_bytes(env, argv[4], "out", &out, &out_len) || !get_offset(env, argv[5], &at))
    return NULL;
  if (key_len != KEY_BYTES) THROW_RANGE(env, "AES-256-GCM needs a 32-byte key");
  if (nonce_len != NONCE_BYTES) THROW_RANGE(env, "AES-256-GCM nonces here are 12 bytes");
  /* SP 800-38D §5.2.1.1: len(P) <= 2^39 - 256 bits, i.e. 2^36 - 32 bytes. */
  if ((uint64_t)pt_len > ((uint64_t)1 << 36) - 32) THROW_RANGE(env, "plaintext too long for GCM");
  if (at > out_len || out_len - at < pt_len + TAG_BYTES)
    THROW_RANGE(env, "no room for the sealed data in out");
  unsigned char *dst = out + at;
  if (partially_overlap(dst, pt_len + TAG_BYTES, pt, pt_len))
    THROW_RANGE(env, "out partially overlaps the plaintext");
  if (!get_state(env, &s)) return NULL;

  int fin = 0;
  if (!gcm_init(s->enc, 1, s->enc_key, &s->enc_keyed, key, nonce) ||
      !cipher_update(s->enc, 1, NULL, aad, aad_len) ||
      !cipher_update(s->enc, 1, dst, pt, pt_len) ||
      !EVP_EncryptFinal_ex(s->enc, dst + pt_len, &fin) || fin != 0 ||
      !EVP_CIPHER_CTX_ctrl(s->enc, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, dst + pt_len)) {
    ERR_clear_error(); /* leave nothing on the thread's queue for node's own crypto calls */
    s->enc_keyed = 0;
    OPENSSL_cleanse(dst, pt_len + TAG_BYTES);
    napi_throw_error(env, NULL, "AES-256-GCM encryption failed in OpenSSL");
    return NULL;
  }
  return make_size(env, pt_len + TAG_BYTES);
}

/* gcmOpenInto(key, nonce, aad, sealed, out, outOffset) -> boolean
 * `sealed` is ciphertext ‖ tag; on success the plaintext (sealed.length - 16 bytes) is at
 * out[outOffset..] and the result is true. On a tag mismatch the result is false and the bytes
 * written to out are zeroed: SP 800-38D §7.2 step 8 outputs FAIL and no plaintext, and OpenSSL
 * decrypts before it can check the tag, so the unauthenticated plaintext must be wiped. */
static napi_value gcm_open_into(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  unsigned char *key, *nonce, *aad, *sealed, *out;
  size_t key_len, nonce_len, aad_len, sealed_len, out_len, at;
  unsigned char tag[TAG_BYTES];
  state *s;

  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 6) THROW_TYPE(env, "gcmOpenInto(key, nonce, aad, sealed, out, outOffset)");
  if (!get_bytes(env, argv[0], "key", &key, &key_len) ||
      !get_bytes(env, argv[1], "nonce", &nonce, &nonce_len) ||
      !get_bytes(env, argv[2], "aad", &aad, &aad_len) ||
      !get_bytes(env, argv[3], "sealed", &sealed, &sealed_len) ||
      !get_bytes(env, argv[4], "out", &out, &out_len) || !get_offset(env, argv[5], &at))
    return NULL;
  if (key_len != KEY_BYTES) THROW_RANGE(env, "AES-256-GCM needs a 32-byte key");
  if (nonce_len != NONCE_BYTES) THROW_RANGE(env, "AES-256-GCM nonces here are 12 bytes");
  if (sealed_len < TAG_BYTES) THROW_RANGE(env, "sealed data shorter than its 16-byte tag");
  size_t ct_len = sealed_len - TAG_BYTES;
  if (at > out_len || out_len - at < ct_len) THROW_RANGE(env, "no room for the plaintext in out");
  unsigned char *dst = out + at;
  if (partially_overlap(dst, ct_len, sealed, sealed_len))
    THROW_RANGE(env, "out partially overlaps the sealed data");
  if (!get_state(env, &s)) return NULL;

  /* Copy the tag first: decrypting in place (dst == sealed) never reaches it (it follows the
   * ciphertext), but a copy makes that independent of the layout. */
  memcpy(tag, sealed + ct_len, TAG_BYTES);
  int fin = 0;
  int ok = gcm_init(s->dec, 0, s->dec_key, &s->dec_keyed, key, nonce) &&
           EVP_CIPHER_CTX_ctrl(s->dec, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, tag) &&
           cipher_update(s->dec, 0, NULL, aad, aad_len) &&
           cipher_update(s->dec, 0, dst, sealed, ct_len);
  /* DecryptFinal compares the computed tag with the expected one in constant time
   * (CRYPTO_memcmp) and fails on mismatch (SP 800-38D §7.2 step 8). */
  ok = ok && EVP_DecryptFinal_ex(s->dec, dst + ct_len, &fin) > 0 && fin == 0;
  if (!ok) {
    OPENSSL_cleanse(dst, ct_len);
    ERR_clear_error();
  }
  OPENSSL_cleanse(tag, sizeof tag);
  return make_bool(env, ok != 0);
}

/* hmacSha256Into(key, data, out, outOffset) -> 32
 * HMAC-SHA-256 (FIPS 198-1) of data, written at out[outOffset..]. */
/* Key the HMAC context for one MAC. EVP_MAC_init with key NULL restarts from the ipad/opad
 * state of the previous key (OpenSSL's HMAC provider: HMAC_Init_ex(ctx, NULL, 0, NULL, NULL)),
 * saving the two compressions that keying costs. Returns 0 on failure (state forgets the key). */
static int mac_start(state *s, const unsigned char *key, size_t key_len) {
  const unsigned char *k = key;
  if (s->mac_keyed && key_len == s->mac_key_len && CRYPTO_memcmp(s->mac_key, key, key_len) == 0)
    k = NULL;
  int ok = EVP_MAC_init(s->mac, k, k != NULL ? key_len : 0, NULL);
  if (ok && k != NULL) {
    if (key_len <= HMAC_CACHE_MAX) {
      memcpy(s->mac_key, key, key_len);
      s->mac_key_len = key_len;
      s->mac_keyed = 1;
    } else {
      s->mac_keyed = 0;
    }
  }
  if (!ok) s->mac_keyed = 0;
  return ok;
}

/* HMAC-SHA-256(key, data) into out[0..32); 0 on failure. */
static int mac_into(state *s, const unsigned char *key, size_t key_len, const unsigned char *data,
                    size_t data_len, unsigned char *out) {
  unsigned char mac[32];
  size_t mac_len = 0;
  int ok = mac_start(s, key, key_len) && EVP_MAC_update(s->mac, data, data_len) &&
           EVP_MAC_final(s->mac, mac, &mac_len, sizeof mac) && mac_len == sizeof mac;
  if (ok) memcpy(out, mac, sizeof mac);
  OPENSSL_cleanse(mac, sizeof mac);
  if (!ok) {
    ERR_clear_error();
    s->mac_keyed = 0;
  }
  return ok;
}

static napi_value hmac_sha256_into(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  unsigned char *key, *data, *out;
  size_t key_len, data_len, out_len, at;
  state *s;

  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 4) THROW_TYPE(env, "hmacSha256Into(key, data, out, outOffset)");
  if (!get_bytes(env, argv[0], "key", &key, &key_len) ||
      !get_bytes(env, argv[1], "data", &data, &data_len) ||
      !get_bytes(env, argv[2], "out", &out, &out_len) || !get_offset(env, argv[3], &at))
    return NULL;
  if (key_len == 0) THROW_RANGE(env, "the HMAC key is empty");
  if (at > out_len || out_len - at < 32) THROW_RANGE(env, "no room for the 32-byte MAC in out");
  if (!get_state(env, &s)) return NULL;
  if (!mac_into(s, key, key_len, data, data_len, out + at)) {
    napi_throw_error(env, NULL, "HMAC-SHA-256 failed in OpenSSL");
    return NULL;
  }
  return make_size(env, 32);
}

/* hmacSha256Grains(key, data, grainBytes, macs, zero): data is whole grains of grainBytes; for
 * grain i, zero[i] = 1 when all its bytes are 0 (macs[32i..] left as they are), else zero[i] = 0
 * and macs[32i..32i+32) = HMAC-SHA-256(key, grain). One call per job instead of one per grain:
 * the chunk workers' fingerprint jobs spent about as long in the per-grain calls, views and
 * result buffers around the MACs as in SHA-256 itself. Returns the number of grains. */
static napi_value hmac_sha256_grains(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  unsigned char *key, *data, *macs, *zero;
  size_t key_len, data_len, macs_len, zero_len, grain;
  state *s;

  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 5) THROW_TYPE(env, "hmacSha256Grains(key, data, grainBytes, macs, zero)");
  if (!get_bytes(env, argv[0], "key", &key, &key_len) ||
      !get_bytes(env, argv[1], "data", &data, &data_len) || !get_offset(env, argv[2], &grain) ||
      !get_bytes(env, argv[3], "macs", &macs, &macs_len) ||
      !get_bytes(env, argv[4], "zero", &zero, &zero_len))
    return NULL;
  if (key_len == 0) THROW_RANGE(env, "the HMAC key is empty");
  if (grain == 0 || data_len % grain != 0)
    THROW_RANGE(env, "data is not a whole number of grains of grainBytes");
  size_t n = data_len / grain;
  if (macs_len / 32 < n || zero_len < n) THROW_RANGE(env, "no room for a MAC per grain");
  if (!get_state(env, &s)) return NULL;
  for (size_t i = 0; i < n; i++) {
    const unsigned char *g = data + i * grain;
    /* All zeros: the first byte is 0 and every byte equals the one after it. */
    if (g[0] == 0 && memcmp(g, g + 1, grain - 1) == 0) {
      zero[i] = 1;
      continue;
    }
    zero[i] = 0;
    if (!mac_into(s, key, key_len, g, grain, macs + 32 * i)) {
      napi_throw_error(env, NULL, "HMAC-SHA-256 failed in OpenSSL");
      return NULL;
    }
  }
  return make_size(env, n);
}

/* ---------------------------------------------------------------------------------------- */
/* Container records of codec none, whole (src/pool/container/FORMAT.md §3).                  */

/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78), continuing from `crc` (0 to start):
 * crc32c(crc32c(0, a), b) = crc32c(0, a ‖ b), as @node-rs/crc32's crc32c(b, crc32c(a)). The
 * SSE 4.2 instruction when the CPU has it, else a table. */
static uint32_t crc_table[256];
static int crc_hw = -1;

/* Once, when the library is loaded (before any thread can call in: dlopen runs constructors
 * under the loader lock), so that worker threads never race to fill the table. */
__attribute__((constructor)) static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[i] = c;
  }
#if defined(__x86_64__)
  crc_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#else
  crc_hw = 0;
#endif
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_update_hw(uint32_t c,
                                                                  const unsigned char *p,
                                                                  size_t n) {
  uint64_t c64 = c;
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    c64 = __builtin_ia32_crc32di(c64, v);
    p += 8;
    n -= 8;
  }
  c = (uint32_t)c64;
  while (n-- > 0) c = __builtin_ia32_crc32qi(c, *p++);
  return c;
}
#endif

static uint32_t crc32c_continue(uint32_t crc, const unsigned char *p, size_t n) {
  uint32_t c = ~crc;
#if defined(__x86_64__)
  if (crc_hw == 1) return ~crc_update_hw(c, p, n);
#endif
  while (n-- > 0) c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
  return ~c;
}

static void put_u32le(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
  p[2] = (unsigned char)(v >> 16);
  p[3] = (unsigned char)(v >> 24);
}

/* The compressibility probe of src/pool/container/compressibility.ts, the same decision bit for
 * bit (same samples, same double arithmetic): 1 when zstd could pay on the grain. */
static int worth_compressing(const unsigned char *g, size_t len) {
  if (len < 1024) return 1;
  uint16_t counts[256];
  memset(counts, 0, sizeof counts);
  double pairs = 0;
  double n = 0;
  for (size_t i = 0; i < len; i += 7) {
    pairs += counts[g[i]]++;
    n += 1;
  }
  return 512 * pairs >= 1.1 * n * (n - 1);
}

#define RECORD_HEADER 60
#define AAD_BYTES 64

/* sealPlainRecords(key, containerId, base, data, grainBytes, fps, nonces, out, outOffset, probe)
 *   -> the number of grains sealed
 * Seals the grains of `data` (grainBytes each, back to back) as codec-none records back to back
 * at out[outOffset..], the first for container offset `base`: header (magic, codec 0, flags 0,
 * L, S = L + 16, fingerprint i of `fps`, nonce i of `nonces`, CRC32C), then AES-256-GCM of the
 * grain under `key` with the record's AAD (container id, offset, fingerprint, codec, flags, L).
 * With `probe`, it stops before the first grain that zstd could pay on (the caller compresses
 * that one), so a run of random-looking grains costs one call. The nonces must be fresh. */
static napi_value seal_plain_records(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value argv[10];
  unsigned char *key, *cid, *data, *fps, *nonces, *out;
  size_t key_len, cid_len, data_len, fps_len, nonces_len, out_len, base, grain, at;
  bool probe = false;
  state *s;

  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 10)
    THROW_TYPE(env, "sealPlainRecords(key, containerId, base, data, grainBytes, fps, nonces, "
                    "out, outOffset, probe)");
  if (!get_bytes(env, argv[0], "key", &key, &key_len) ||
      !get_bytes(env, argv[1], "containerId", &cid, &cid_len) ||
      !get_offset(env, argv[2], &base) || !get_bytes(env, argv[3], "data", &data, &data_len) ||
      !get_offset(env, argv[4], &grain) || !get_bytes(env, argv[5], "fps", &fps, &fps_len) ||
      !get_bytes(env, argv[6], "nonces", &nonces, &nonces_len) ||
      !get_bytes(env, argv[7], "out", &out, &out_len) || !get_offset(env, argv[8], &at))
    return NULL;
  if (napi_get_value_bool(env, argv[9], &probe) != napi_ok) THROW_TYPE(env, "probe must be a boolean");
  if (key_len != KEY_BYTES) THROW_RANGE(env, "AES-256-GCM needs a 32-byte key");
  if (cid_len != 16) THROW_RANGE(env, "a container id is 16 bytes");
  if (grain == 0 || grain > (16u << 20) || data_len % grain != 0)
    THROW_RANGE(env, "data is not a whole number of grains of 1 byte to 16 MiB");
  size_t n = data_len / grain;
  size_t record = RECORD_HEADER + grain + TAG_BYTES;
  if (fps_len / 32 < n || nonces_len / NONCE_BYTES < n)
    THROW_RANGE(env, "a fingerprint and a nonce are needed per grain");
  if (at > out_len || (out_len - at) / record < n) THROW_RANGE(env, "no room for the records in out");
  unsigned char *dst = out + at;
  if (n > 0 && (partially_overlap(dst, n * record, data, data_len) || dst == data))
    THROW_RANGE(env, "out overlaps the grains");
  if (!get_state(env, &s)) return NULL;

  unsigned char aad[AAD_BYTES];
  memcpy(aad, cid, 16);
  size_t done = 0;
  for (; done < n; done++) {
    const unsigned char *g = data + done * grain;
    if (probe && worth_compressing(g, grain)) break;
    unsigned char *r = dst + done * record;
    const unsigned char *fp = fps + 32 * done;
    const unsigned char *nonce = nonces + NONCE_BYTES * done;
    uint64_t offset = (uint64_t)base + (uint64_t)done * record;
    put_u32le(aad + 16, (uint32_t)offset);
    put_u32le(aad + 20, (uint32_t)(offset >> 32));
    memcpy(aad + 24, fp, 32);
    aad[56] = 0; /* codec none */
    aad[57] = 0; /* flags */
    aad[58] = 0;
    aad[59] = 0;
    put_u32le(aad + 60, (uint32_t)grain);
    r[0] = 0x52; /* 'R' */
    r[1] = 0x43; /* 'C' */
    r[2] = 0;
    r[3] = 0;
    put_u32le(r + 4, (uint32_t)grain);
    put_u32le(r + 8, (uint32_t)(grain + TAG_BYTES));
    memcpy(r + 12, fp, 32);
    memcpy(r + 44, nonce, NONCE_BYTES);
    unsigned char *payload = r + RECORD_HEADER;
    int fin = 0;
    if (!gcm_init(s->enc, 1, s->enc_key, &s->enc_keyed, key, nonce) ||
        !cipher_update(s->enc, 1, NULL, aad, AAD_BYTES) ||
        !cipher_update(s->enc, 1, payload, g, grain) ||
        !EVP_EncryptFinal_ex(s->enc, payload + grain, &fin) || fin != 0 ||
        !EVP_CIPHER_CTX_ctrl(s->enc, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, payload + grain)) {
      ERR_clear_error();
      s->enc_keyed = 0;
      OPENSSL_cleanse(dst, n * record);
      napi_throw_error(env, NULL, "AES-256-GCM encryption failed in OpenSSL");
      return NULL;
    }
    uint32_t crc = crc32c_continue(0, r, 56);
    crc = crc32c_continue(crc, payload, grain + TAG_BYTES);
    put_u32le(r + 56, crc);
  }
  return make_size(env, done);
}

/* crc32c(data, initial) -> CRC32C continuing from `initial` (tests compare it with the JS one). */
static napi_value crc32c_js(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  unsigned char *data;
  size_t len, initial;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 2) THROW_TYPE(env, "crc32c(data, initial)");
  if (!get_bytes(env, argv[0], "data", &data, &len) || !get_offset(env, argv[1], &initial))
    return NULL;
  if (initial > 0xffffffffu) THROW_RANGE(env, "initial is a 32-bit CRC");
  return make_size(env, crc32c_continue((uint32_t)initial, data, len));
}

/* ---------------------------------------------------------------------------------------- */

static state *new_state(void) {
  state *s = OPENSSL_zalloc(sizeof(state));
  if (s == NULL) return NULL;
  char digest[] = "SHA256";
  OSSL_PARAM params[2];
  params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
  params[1] = OSSL_PARAM_construct_end();
  s->gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
  s->enc = EVP_CIPHER_CTX_new();
  s->dec = EVP_CIPHER_CTX_new();
  s->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  s->mac = s->hmac != NULL ? EVP_MAC_CTX_new(s->hmac) : NULL;
  /* Bind the cipher once; calls only pass key and IV. 12-byte IVs are OpenSSL's default for
   * GCM, the tag length is set per open (SET_TAG) and is 16 on seal (GET_TAG). */
  if (s->gcm == NULL || s->enc == NULL || s->dec == NULL || s->mac == NULL ||
      !EVP_EncryptInit_ex(s->enc, s->gcm, NULL, NULL, NULL) ||
      !EVP_DecryptInit_ex(s->dec, s->gcm, NULL, NULL, NULL) ||
      EVP_CIPHER_CTX_get_iv_length(s->enc) != NONCE_BYTES ||
      !EVP_MAC_CTX_set_params(s->mac, params)) {
    ERR_clear_error();
    free_state(s);
    return NULL;
  }
  return s;
}

static int export_fn(napi_env env, napi_value exports, const char *name, napi_callback fn) {
  napi_value f;
  return napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f) == napi_ok &&
         napi_set_named_property(env, exports, name, f) == napi_ok;
}

static int export_string(napi_env env, napi_value exports, const char *name, const char *value) {
  napi_value v;
  return napi_create_string_utf8(env, value, NAPI_AUTO_LENGTH, &v) == napi_ok &&
         napi_set_named_property(env, exports, name, v) == napi_ok;
}

NAPI_MODULE_INIT() {
  state *s = new_state();
  if (s == NULL) {
    napi_throw_error(env, NULL, "sanmux_crypto: OpenSSL AES-256-GCM / HMAC-SHA256 unavailable");
    return NULL;
  }
  if (napi_set_instance_data(env, s, finalize_state, NULL) != napi_ok) {
    free_state(s);
    napi_throw_error(env, NULL, "sanmux_crypto: cannot set instance data");
    return NULL;
  }
  if (!export_fn(env, exports, "gcmSealInto", gcm_seal_into) ||
      !export_fn(env, exports, "gcmOpenInto", gcm_open_into) ||
      !export_fn(env, exports, "hmacSha256Into", hmac_sha256_into) ||
      !export_fn(env, exports, "hmacSha256Grains", hmac_sha256_grains) ||
      !export_fn(env, exports, "sealPlainRecords", seal_plain_records) ||
      !export_fn(env, exports, "crc32c", crc32c_js) ||
      /* the OpenSSL the addon was compiled against, and the one it runs on (node's) */
      !export_string(env, exports, "opensslHeaders", OPENSSL_VERSION_TEXT) ||
      !export_string(env, exports, "opensslRuntime", OpenSSL_version(OPENSSL_VERSION)))
    return NULL;
  return exports;
}
