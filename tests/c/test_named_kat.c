/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_named_kat.c - known-answer tests of the provider's token-named mode.
 *
 * In named mode (P11TICKET_PARAM_KEY_NAME) the provider's "HMAC" signs with
 * CKM_SHA256_HMAC in the token and P11TICKET-AES-CBC runs CKM_AES_CBC_PAD
 * there.  Keys generated in the token cannot be read, so this test imports a
 * generation with known random bytes (t_keytool import) and compares every
 * token result with OpenSSL's in-memory HMAC-SHA256 / AES-256-CBC from the
 * default provider under the same bytes:
 *  - HMAC: message lengths around the context's 512-byte inline buffer (and
 *    its move to the heap), one update and split updates, EVP_MAC_CTX_dup
 *    mid-stream with diverging copies, re-init for further messages, the
 *    mac size;
 *  - cipher: the provider's one-update contract (update returns all but the
 *    last block, final the last block), decryption of in-memory ciphertext,
 *    a corrupted ciphertext failing at DecryptFinal and not at update;
 *  - encryption without a name picks the current (imported) key;
 *  - an unknown key name: a random tag from the HMAC, a clean init failure
 *    from the cipher.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rand.h>

#include "p11ticket.h"
#include "support.h"

#define NAME_LEN P11TICKET_KEY_NAME_LEN
#define TAG_LEN 32
#define BLOCK 16
#define DATA_MAX 5000

static t_env env;
static OSSL_LIB_CTX *libctx;
static EVP_MAC *pmac, *dmac;          /* provider's / default's HMAC */
static EVP_CIPHER *pciph, *dciph;     /* P11TICKET-AES-CBC / AES-256-CBC */
static uint8_t kname[NAME_LEN], khmac[32], kaes[32];
static uint8_t unknown[NAME_LEN];     /* a name the token does not hold */
static unsigned char data[DATA_MAX], other[DATA_MAX];

static const size_t hmac_lens[] = {0, 1, 100, 240, 511, 512, 513, 1000, 5000};
static const size_t cipher_lens[] = {1, 15, 16, 17, 200, 1000};

/* ---- helpers -------------------------------------------------------------- */

static const char *prov_name(const OSSL_PROVIDER *p)
{
    return p != NULL ? OSSL_PROVIDER_get0_name(p) : "(none)";
}

/* HMAC-SHA256 of in under the imported HMAC key, in memory. */
static int ref_tag(const unsigned char *in, size_t len, unsigned char out[32])
{
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(dmac);
    char digest[] = "SHA256";
    OSSL_PARAM p[2];
    size_t outl = 0;
    int ok;

    p[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    p[1] = OSSL_PARAM_construct_end();
    ok = ctx != NULL && EVP_MAC_init(ctx, khmac, sizeof(khmac), p) &&
         EVP_MAC_update(ctx, in, len) &&
         EVP_MAC_final(ctx, out, &outl, TAG_LEN) && outl == TAG_LEN;
    EVP_MAC_CTX_free(ctx);
    return ok;
}

/* Named init, as lib/ticket_cb.c's mac_init() does it. */
static int named_init(EVP_MAC_CTX *ctx, const uint8_t name[NAME_LEN])
{
    char digest[] = "SHA256";
    uint8_t n[NAME_LEN];
    OSSL_PARAM p[3];

    memcpy(n, name, NAME_LEN);
    p[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    p[1] = OSSL_PARAM_construct_octet_string(P11TICKET_PARAM_KEY_NAME, n,
                                             NAME_LEN);
    p[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_init(ctx, NULL, 0, p);
}

static EVP_MAC_CTX *named_new(const uint8_t name[NAME_LEN])
{
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(pmac);

    if (ctx != NULL && !named_init(ctx, name)) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Final into a 64-byte buffer; 1 if it gave exactly 32 bytes. */
static int final32(EVP_MAC_CTX *ctx, unsigned char out[TAG_LEN])
{
    unsigned char buf[64];
    size_t outl = 0;

    memset(buf, 0x5a, sizeof(buf));
    if (!EVP_MAC_final(ctx, buf, &outl, sizeof(buf)) || outl != TAG_LEN)
        return 0;
    memcpy(out, buf, TAG_LEN);
    return 1;
}

/* Final, and compare with the in-memory tag of in[0..len). */
static int final_is(EVP_MAC_CTX *ctx, const unsigned char *in, size_t len)
{
    unsigned char got[TAG_LEN], want[TAG_LEN];

    return ref_tag(in, len, want) && final32(ctx, got) &&
           memcmp(got, want, TAG_LEN) == 0;
}

/* Feeds in[0..len) in chunks of `chunk` bytes, with an empty update first. */
static int feed(EVP_MAC_CTX *ctx, const unsigned char *in, size_t len,
                size_t chunk)
{
    if (!EVP_MAC_update(ctx, in, 0))
        return 0;
    for (size_t off = 0; off < len; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;

        if (!EVP_MAC_update(ctx, in + off, n))
            return 0;
    }
    return 1;
}

/* AES-256-CBC with PKCS#7 padding in memory; returns the length or -1. */
static int ref_crypt(int enc, const unsigned char iv[BLOCK],
                     const unsigned char *in, int len, unsigned char *out)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int l1 = 0, l2 = 0, ok;

    ok = c != NULL &&
         EVP_CipherInit_ex2(c, dciph, kaes, iv, enc, NULL) &&
         EVP_CipherUpdate(c, out, &l1, in, len) &&
         EVP_CipherFinal_ex(c, out + l1, &l2);
    EVP_CIPHER_CTX_free(c);
    ERR_clear_error(); /* an expected padding failure leaves an entry */
    return ok ? l1 + l2 : -1;
}

static int name_param(const uint8_t name[NAME_LEN], uint8_t copy[NAME_LEN],
                      OSSL_PARAM p[2])
{
    memcpy(copy, name, NAME_LEN);
    p[0] = OSSL_PARAM_construct_octet_string(P11TICKET_PARAM_KEY_NAME, copy,
                                             NAME_LEN);
    p[1] = OSSL_PARAM_construct_end();
    return 1;
}

/* The name the cipher context reports (after init); 1 if 16 bytes came. */
static int chosen_name(EVP_CIPHER_CTX *c, uint8_t out[NAME_LEN])
{
    uint8_t buf[NAME_LEN + 8];
    OSSL_PARAM p[2];

    memset(buf, 0, sizeof(buf));
    p[0] = OSSL_PARAM_construct_octet_string(P11TICKET_PARAM_KEY_NAME, buf,
                                             sizeof(buf));
    p[1] = OSSL_PARAM_construct_end();
    if (!EVP_CIPHER_CTX_get_params(c, p) || !OSSL_PARAM_modified(&p[0]) ||
        p[0].return_size != NAME_LEN)
        return 0;
    memcpy(out, buf, NAME_LEN);
    return 1;
}

static int renew_flag(EVP_CIPHER_CTX *c)
{
    int renew = -7;
    OSSL_PARAM p[2];

    p[0] = OSSL_PARAM_construct_int(P11TICKET_PARAM_KEY_RENEW, &renew);
    p[1] = OSSL_PARAM_construct_end();
    if (!EVP_CIPHER_CTX_get_params(c, p) || !OSSL_PARAM_modified(&p[0]))
        return -1;
    return renew;
}

/* ---- provisioning --------------------------------------------------------- */

/* DIR/<file> with exactly `len` bytes of `bytes`, mode `mode`. */
static int write_key_file(const char *path, const unsigned char *bytes,
                          size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    ssize_t w;

    if (fd < 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return 0;
    }
    /* The umask must not widen nor narrow what the test asked for. */
    w = fchmod(fd, mode) == 0 ? write(fd, bytes, len) : -1;
    if (close(fd) != 0 || w != (ssize_t)len) {
        fprintf(stderr, "%s: short write\n", path);
        return 0;
    }
    return 1;
}

/* t_keytool list, for the imported generation's labels. */
static int keytool_list(char *out, size_t outlen)
{
    char mod[512], uri[512], pin[512];
    char *argv[] = {(char *)env.keytool, mod, uri, pin, "list", NULL};

    snprintf(mod, sizeof(mod), "pkcs11-module=%s", env.pkcs11);
    snprintf(uri, sizeof(uri), "token-uri=pkcs11:token=tickets");
    snprintf(pin, sizeof(pin), "pin-source=file:%s", env.pin_file);
    return t_run(argv, out, outlen) == 0;
}

static void provision(int64_t now)
{
    unsigned char file[NAME_LEN + 64 + 1];
    char path[512], bad[512], list[4096], hex[33], want[128];
    uint8_t junk_name[NAME_LEN];

    t_section("import a generation with known key bytes");
    REQUIRE(RAND_bytes(kname, sizeof(kname)) == 1 &&
            RAND_bytes(khmac, sizeof(khmac)) == 1 &&
            RAND_bytes(kaes, sizeof(kaes)) == 1 &&
            RAND_bytes(unknown, sizeof(unknown)) == 1);
    /* Different from the real name in every byte: never a near miss. */
    for (size_t i = 0; i < NAME_LEN; i++)
        if (unknown[i] == kname[i])
            unknown[i] ^= 0x80;
    memcpy(file, kname, NAME_LEN);
    memcpy(file + NAME_LEN, khmac, 32);
    memcpy(file + NAME_LEN + 32, kaes, 32);

    snprintf(path, sizeof(path), "%s/known.key", env.dir);
    REQUIRE(write_key_file(path, file, 80, 0600));
    REQUIRE(t_key_import(&env, NULL, path, now - 60, INT64_MAX, INT64_MAX));
    /* The same name twice is refused. */
    CHECK(!t_key_import(&env, NULL, path, now - 60, INT64_MAX, INT64_MAX));
    unlink(path);

    /* t_keytool's own checks.  Names that must never reach the token are
     * pending (ef in the future), so a wrong success cannot change which
     * key encrypts. */
    REQUIRE(RAND_bytes(junk_name, sizeof(junk_name)) == 1);
    memcpy(file, junk_name, NAME_LEN);
    snprintf(bad, sizeof(bad), "%s/readable.key", env.dir);
    REQUIRE(write_key_file(bad, file, 80, 0644));
    CHECKF(!t_key_import(&env, NULL, bad, now + 86400, INT64_MAX, INT64_MAX),
           "a key file that others can read was accepted");
    unlink(bad);
    snprintf(bad, sizeof(bad), "%s/short.key", env.dir);
    REQUIRE(write_key_file(bad, file, 79, 0600));
    CHECKF(!t_key_import(&env, NULL, bad, now + 86400, INT64_MAX, INT64_MAX),
           "a 79-byte key file was accepted");
    unlink(bad);
    snprintf(bad, sizeof(bad), "%s/long.key", env.dir);
    REQUIRE(write_key_file(bad, file, 81, 0600));
    CHECKF(!t_key_import(&env, NULL, bad, now + 86400, INT64_MAX, INT64_MAX),
           "an 81-byte key file was accepted");
    unlink(bad);
    OPENSSL_cleanse(file, sizeof(file));

    /* Exactly one generation, ours, both objects with the times given. */
    REQUIRE(keytool_list(list, sizeof(list)));
    t_hexstr(kname, NAME_LEN, hex);
    snprintf(want, sizeof(want), "%s aes ef=%lld eu=%lld du=%lld\n", hex,
             (long long)(now - 60), (long long)INT64_MAX,
             (long long)INT64_MAX);
    CHECKF(strstr(list, want) != NULL, "list:\n%s", list);
    snprintf(want, sizeof(want), "%s hmac ef=%lld eu=%lld du=%lld\n", hex,
             (long long)(now - 60), (long long)INT64_MAX,
             (long long)INT64_MAX);
    CHECKF(strstr(list, want) != NULL, "list:\n%s", list);
    {
        int lines = 0;

        for (const char *s = list; *s != '\0'; s++)
            lines += *s == '\n';
        CHECKF(lines == 2, "%d objects on the token:\n%s", lines, list);
    }
}

/* ---- HMAC ----------------------------------------------------------------- */

static void hmac_one_update(void)
{
    t_section("HMAC: one update, mac size");
    for (size_t i = 0; i < sizeof(hmac_lens) / sizeof(hmac_lens[0]); i++) {
        size_t n = hmac_lens[i];
        EVP_MAC_CTX *ctx = named_new(kname);

        if (!CHECKF(ctx != NULL, "len %zu: named init", n))
            continue;
        CHECKF(EVP_MAC_CTX_get_mac_size(ctx) == TAG_LEN, "len %zu: size %zu",
               n, EVP_MAC_CTX_get_mac_size(ctx));
        CHECKF(EVP_MAC_update(ctx, data, n) && final_is(ctx, data, n),
               "len %zu: one update", n);
        /* Still 32 after final. */
        CHECKF(EVP_MAC_CTX_get_mac_size(ctx) == TAG_LEN,
               "len %zu: size after final", n);
        EVP_MAC_CTX_free(ctx);
    }
}

static void hmac_split(void)
{
    static const size_t chunks[] = {1, 3, 64, 255, 511, 512, 513};

    t_section("HMAC: split updates");
    for (size_t i = 0; i < sizeof(hmac_lens) / sizeof(hmac_lens[0]); i++) {
        size_t n = hmac_lens[i];

        for (size_t j = 0; j < sizeof(chunks) / sizeof(chunks[0]); j++) {
            EVP_MAC_CTX *ctx = named_new(kname);

            if (!CHECKF(ctx != NULL, "len %zu: named init", n))
                continue;
            CHECKF(feed(ctx, data, n, chunks[j]) && final_is(ctx, data, n),
                   "len %zu in chunks of %zu", n, chunks[j]);
            EVP_MAC_CTX_free(ctx);
        }
        /* Two pieces cut right at the inline buffer's edge. */
        if (n > 512) {
            EVP_MAC_CTX *ctx = named_new(kname);

            if (CHECKF(ctx != NULL, "len %zu: named init", n)) {
                CHECKF(EVP_MAC_update(ctx, data, 512) &&
                           EVP_MAC_update(ctx, data + 512, n - 512) &&
                           final_is(ctx, data, n),
                       "len %zu cut at 512", n);
                EVP_MAC_CTX_free(ctx);
            }
        }
    }
}

/*
 * dup after `cut` bytes.  The original finishes with data, the copy with
 * other (same prefix, different tail), so a buffer the two shared would
 * show.  free_first frees the original before the copy finishes.
 */
static void dup_at(size_t n, size_t cut, int free_first)
{
    unsigned char msg2[DATA_MAX];
    EVP_MAC_CTX *ctx = named_new(kname), *dup;

    if (!CHECKF(ctx != NULL, "len %zu: named init", n))
        return;
    memcpy(msg2, data, cut);
    memcpy(msg2 + cut, other + cut, n - cut);
    if (!CHECKF(EVP_MAC_update(ctx, data, cut), "len %zu", n)) {
        EVP_MAC_CTX_free(ctx);
        return;
    }
    dup = EVP_MAC_CTX_dup(ctx);
    if (!CHECKF(dup != NULL, "len %zu: dup at %zu", n, cut)) {
        EVP_MAC_CTX_free(ctx);
        return;
    }
    CHECKF(EVP_MAC_CTX_get_mac_size(dup) == TAG_LEN, "len %zu: dup size", n);
    if (free_first) {
        EVP_MAC_CTX_free(ctx);
        ctx = NULL;
    } else {
        /* The original moves on first (and may grow onto the heap). */
        CHECKF(EVP_MAC_update(ctx, data + cut, n - cut),
               "len %zu: original update", n);
    }
    CHECKF(feed(dup, msg2 + cut, n - cut, 97) && final_is(dup, msg2, n),
           "len %zu: copy made at %zu%s", n, cut,
           free_first ? " (original freed)" : "");
    EVP_MAC_CTX_free(dup);
    if (ctx != NULL) {
        CHECKF(final_is(ctx, data, n), "len %zu: original after dup at %zu",
               n, cut);
        EVP_MAC_CTX_free(ctx);
    }
}

static void hmac_dup(void)
{
    t_section("HMAC: EVP_MAC_CTX_dup mid-stream");
    for (size_t i = 0; i < sizeof(hmac_lens) / sizeof(hmac_lens[0]); i++) {
        size_t n = hmac_lens[i];

        dup_at(n, n / 2, 0);
        dup_at(n, n / 2, 1);
        dup_at(n, 0, 0);
        if (n > 0)
            dup_at(n, n - 1, 0);
        if (n > 512) {
            dup_at(n, 512, 0); /* inline buffer exactly full */
            dup_at(n, 513, 1); /* just moved to the heap */
        }
    }
}

static void hmac_reinit(void)
{
    unsigned char t1[TAG_LEN], t2[TAG_LEN];
    EVP_MAC_CTX *ctx;

    t_section("HMAC: re-init of the same context");
    ctx = named_new(kname);
    REQUIRE(ctx != NULL);
    CHECK(EVP_MAC_update(ctx, data, 1000) && final_is(ctx, data, 1000));
    /* Init without parameters keeps the name; a second message. */
    CHECK(EVP_MAC_init(ctx, NULL, 0, NULL) && EVP_MAC_update(ctx, other, 100) &&
          final_is(ctx, other, 100));
    /* Re-init mid-stream drops what was buffered (here on the heap). */
    CHECK(EVP_MAC_update(ctx, data, 3000) &&
          EVP_MAC_init(ctx, NULL, 0, NULL) && EVP_MAC_update(ctx, other, 240) &&
          final_is(ctx, other, 240));
    /* ...and inline. */
    CHECK(EVP_MAC_update(ctx, data, 17) && named_init(ctx, kname) &&
          final_is(ctx, data, 0));
    /* The two messages really differ (the comparisons above are not
     * between equal tags). */
    CHECK(ref_tag(data, 100, t1) && ref_tag(other, 100, t2) &&
          memcmp(t1, t2, TAG_LEN) != 0);
    /* Switching to an unknown name and back on the same context. */
    CHECK(named_init(ctx, unknown) && EVP_MAC_update(ctx, data, 100) &&
          final32(ctx, t2) && memcmp(t1, t2, TAG_LEN) != 0);
    CHECK(named_init(ctx, kname) && EVP_MAC_update(ctx, data, 100) &&
          final_is(ctx, data, 100));
    EVP_MAC_CTX_free(ctx);
    ERR_clear_error();
}

static void hmac_unknown(void)
{
    unsigned char want[TAG_LEN], a[TAG_LEN], b[TAG_LEN];
    EVP_MAC_CTX *ctx;
    uint8_t shortname[NAME_LEN - 1];
    char digest[] = "SHA256";
    OSSL_PARAM p[3];

    t_section("HMAC: unknown key name gives a random tag");
    REQUIRE(ref_tag(data, 240, want));
    ctx = named_new(unknown);
    if (CHECK(ctx != NULL)) {
        CHECK(EVP_MAC_CTX_get_mac_size(ctx) == TAG_LEN);
        CHECK(EVP_MAC_update(ctx, data, 240) && final32(ctx, a));
        CHECK(memcmp(a, want, TAG_LEN) != 0);
        CHECK(EVP_MAC_init(ctx, NULL, 0, NULL) &&
              EVP_MAC_update(ctx, data, 240) && final32(ctx, b));
        CHECK(memcmp(b, want, TAG_LEN) != 0);
        /* Random, not a fixed pattern. */
        CHECK(memcmp(a, b, TAG_LEN) != 0);
        EVP_MAC_CTX_free(ctx);
    }
    ERR_clear_error();

    /* A name of the wrong length is refused at init. */
    ctx = EVP_MAC_CTX_new(pmac);
    if (CHECK(ctx != NULL)) {
        memcpy(shortname, kname, sizeof(shortname));
        p[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest,
                                                0);
        p[1] = OSSL_PARAM_construct_octet_string(P11TICKET_PARAM_KEY_NAME,
                                                 shortname, sizeof(shortname));
        p[2] = OSSL_PARAM_construct_end();
        CHECK(!EVP_MAC_init(ctx, NULL, 0, p));
        EVP_MAC_CTX_free(ctx);
    }
    ERR_clear_error();
}

/* ---- cipher --------------------------------------------------------------- */

/* Token encryption (one update + final) of pt; the ciphertext goes to out,
 * its length is returned (-1 on failure).  name NULL: the current key. */
static int tok_encrypt(const uint8_t *name, const unsigned char iv[BLOCK],
                       const unsigned char *pt, int len, unsigned char *out,
                       uint8_t chosen[NAME_LEN])
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int padded = len + BLOCK - len % BLOCK, l1 = -1, l2 = -1, ok = 0;
    uint8_t copy[NAME_LEN];
    OSSL_PARAM p[2];

    if (!CHECK(c != NULL))
        return -1;
    if (name != NULL)
        name_param(name, copy, p);
    if (!CHECKF(EVP_EncryptInit_ex2(c, pciph, NULL, iv, name ? p : NULL),
                "len %d: encrypt init", len))
        goto done;
    if (chosen != NULL && !CHECKF(chosen_name(c, chosen), "len %d", len))
        goto done;
    CHECKF(renew_flag(c) == 0, "len %d: renew %d after encrypt init", len,
           renew_flag(c));
    if (!CHECKF(EVP_EncryptUpdate(c, out, &l1, pt, len), "len %d: update",
                len))
        goto done;
    /* The contract: update gives all but the last block... */
    CHECKF(l1 == padded - BLOCK, "len %d: update gave %d, want %d", len, l1,
           padded - BLOCK);
    if (l1 < 0 || l1 > padded - BLOCK)
        goto done;
    /* ...a second update is refused... */
    {
        unsigned char junk[64];
        int lj = 0;

        CHECKF(!EVP_EncryptUpdate(c, junk, &lj, pt, 1),
               "len %d: second update accepted", len);
        ERR_clear_error();
    }
    /* ...and final gives the last block. */
    if (!CHECKF(EVP_EncryptFinal_ex(c, out + l1, &l2), "len %d: final", len))
        goto done;
    CHECKF(l2 == BLOCK, "len %d: final gave %d", len, l2);
    ok = l2 == BLOCK;
done:
    EVP_CIPHER_CTX_free(c);
    return ok ? l1 + l2 : -1;
}

/* Token decryption: 1 if update and final both succeed; *upd_ok says
 * whether update did (it must, even for a bad ciphertext). */
static int tok_decrypt(const uint8_t *name, const unsigned char iv[BLOCK],
                       const unsigned char *ct, int len, unsigned char *out,
                       int *outlen, int *upd_ok, int *renew)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int l1 = 0, l2 = -1, ok = 0;
    uint8_t copy[NAME_LEN];
    OSSL_PARAM p[2];

    *upd_ok = 0;
    *outlen = -1;
    *renew = -1;
    if (c == NULL)
        return 0;
    name_param(name, copy, p);
    if (!EVP_DecryptInit_ex2(c, pciph, NULL, iv, p))
        goto done;
    *renew = renew_flag(c);
    *upd_ok = EVP_DecryptUpdate(c, out, &l1, ct, len) == 1;
    if (!*upd_ok)
        goto done;
    ok = EVP_DecryptFinal_ex(c, out + l1, &l2) == 1;
    *outlen = l1 + (l2 > 0 ? l2 : 0);
done:
    EVP_CIPHER_CTX_free(c);
    return ok;
}

/* The provider's count of token errors (P11TICKET_PARAM_TOKEN_ERRORS). */
static uint64_t token_errors(void)
{
    uint64_t errors = UINT64_MAX;
    OSSL_PARAM p[2];

    p[0] = OSSL_PARAM_construct_uint64(P11TICKET_PARAM_TOKEN_ERRORS, &errors);
    p[1] = OSSL_PARAM_construct_end();
    CHECK(OSSL_PROVIDER_get_params(EVP_CIPHER_get0_provider(pciph), p));
    return errors;
}

static void cipher_kat(void)
{
    static unsigned char ct[DATA_MAX + BLOCK], want[DATA_MAX + BLOCK],
        pt[DATA_MAX + BLOCK], bad[DATA_MAX + BLOCK];
    uint64_t errors0 = token_errors();

    t_section("cipher: encrypt and decrypt against AES-256-CBC");
    for (size_t i = 0; i < sizeof(cipher_lens) / sizeof(cipher_lens[0]); i++) {
        int n = (int)cipher_lens[i], wl, cl, pl = -1, upd = 0, renew = -1, x;
        unsigned char iv[BLOCK];

        REQUIRE(RAND_bytes(iv, sizeof(iv)) == 1);
        wl = ref_crypt(1, iv, data, n, want);
        REQUIRE(wl == n + BLOCK - n % BLOCK);

        cl = tok_encrypt(kname, iv, data, n, ct, NULL);
        CHECKF(cl == wl && memcmp(ct, want, (size_t)wl) == 0,
               "len %d: token ciphertext (%d bytes) differs from AES-256-CBC",
               n, cl);

        /* Decrypting the in-memory ciphertext gives the plaintext back. */
        memset(pt, 0, sizeof(pt));
        CHECKF(tok_decrypt(kname, iv, want, wl, pt, &pl, &upd, &renew) &&
                   pl == n && memcmp(pt, data, (size_t)n) == 0,
               "len %d: decrypt gave %d bytes (update %d)", n, pl, upd);
        CHECKF(renew == 0, "len %d: renew %d for the current key", n, renew);

        /* A wrong IV decrypts to a different first block (the token really
         * uses the IV). */
        {
            unsigned char iv2[BLOCK];

            memcpy(iv2, iv, BLOCK);
            iv2[0] ^= 1;
            memset(pt, 0, sizeof(pt));
            /* Byte 0 is always data (n >= 1), so the padding stays valid. */
            CHECKF(tok_decrypt(kname, iv2, want, wl, pt, &pl, &upd, &renew) &&
                       pl == n && (pt[0] ^ data[0]) == 1 &&
                       memcmp(pt + 1, data + 1, (size_t)n - 1) == 0,
                   "len %d: IV flip", n);
        }

        /* A corrupted last block: the in-memory cipher must reject it too
         * (about 1 in 256 corruptions still ends in valid padding), then the
         * token must fail at final, not at update. */
        memcpy(bad, want, (size_t)wl);
        for (x = 1; x < 256; x++) {
            bad[wl - BLOCK] = (unsigned char)(want[wl - BLOCK] ^ x);
            if (ref_crypt(0, iv, bad, wl, pt) < 0)
                break;
        }
        REQUIRE(x < 256);
        CHECKF(!tok_decrypt(kname, iv, bad, wl, pt, &pl, &upd, &renew),
               "len %d: corrupted last block accepted", n);
        CHECKF(upd, "len %d: DecryptUpdate failed on a corrupted ciphertext "
               "(must fail at DecryptFinal)", n);
        ERR_clear_error();

        /* A length that is not a whole number of blocks: final fails. */
        CHECKF(!tok_decrypt(kname, iv, want, wl - 1, pt, &pl, &upd, &renew),
               "len %d: truncated ciphertext accepted", n);
        CHECKF(upd, "len %d: DecryptUpdate failed on a truncated ciphertext",
               n);
        ERR_clear_error();
    }
    /* Each corrupted last block cost one token error: SoftHSM reports bad
     * padding as CKR_GENERAL_ERROR (hsm/keys.c, run()); truncated input
     * never reaches the token. */
    CHECK_EQ(token_errors() - errors0,
             sizeof(cipher_lens) / sizeof(cipher_lens[0]));
}

static void cipher_current(void)
{
    unsigned char iv[BLOCK], ct[256], want[256];
    uint8_t chosen[NAME_LEN];
    char status[256] = "", cur[64] = "", hex[33];
    uint64_t errors = 0;
    OSSL_PARAM p[4];
    int cl, wl;

    t_section("cipher: encrypt without a name picks the current key");
    REQUIRE(RAND_bytes(iv, sizeof(iv)) == 1);
    memset(chosen, 0, sizeof(chosen));
    cl = tok_encrypt(NULL, iv, data, 200, ct, chosen);
    CHECKF(memcmp(chosen, kname, NAME_LEN) == 0,
           "encrypt init chose another key");
    wl = ref_crypt(1, iv, data, 200, want);
    CHECKF(cl == wl && wl > 0 && memcmp(ct, want, (size_t)wl) == 0,
           "ciphertext under the current key differs");

    /* The provider agrees on what is current. */
    p[0] = OSSL_PARAM_construct_utf8_string(P11TICKET_PARAM_STATUS, status,
                                            sizeof(status));
    p[1] = OSSL_PARAM_construct_utf8_string(P11TICKET_PARAM_CURRENT_KEY, cur,
                                            sizeof(cur));
    p[2] = OSSL_PARAM_construct_uint64(P11TICKET_PARAM_TOKEN_ERRORS, &errors);
    p[3] = OSSL_PARAM_construct_end();
    t_hexstr(kname, NAME_LEN, hex);
    if (CHECK(OSSL_PROVIDER_get_params(EVP_CIPHER_get0_provider(pciph), p))) {
        CHECKF(strcmp(status, "ok") == 0, "status %s", status);
        CHECKF(strcmp(cur, hex) == 0, "current key %s, want %s", cur, hex);
        fprintf(stderr, "  token errors so far: %llu\n",
                (unsigned long long)errors);
    }
}

static void cipher_reinit(int64_t now)
{
    uint8_t older[NAME_LEN], copy[NAME_LEN], chosen[NAME_LEN];
    unsigned char iv[BLOCK];
    EVP_CIPHER_CTX *c;
    OSSL_PARAM p[2];

    t_section("cipher: every init selects its key anew");
    /* Active but older than the imported key, so never the current one. */
    REQUIRE(t_key_create(&env, NULL, now - 7200, INT64_MAX, INT64_MAX, older));
    /* An unknown name rescans at most once per rescan-interval (1 s, the
     * smallest allowed): let the last rescan age past it. */
    usleep(1100 * 1000);
    REQUIRE(RAND_bytes(iv, sizeof(iv)) == 1);
    c = EVP_CIPHER_CTX_new();
    REQUIRE(c != NULL);
    name_param(older, copy, p);
    CHECK(EVP_DecryptInit_ex2(c, pciph, NULL, iv, p));
    CHECK_EQ(renew_flag(c), 1);
    /* A re-init without the cipher reuses the provider context; without a
     * name it must encrypt under the current key, not the last one named. */
    memset(chosen, 0, sizeof(chosen));
    CHECK(EVP_EncryptInit_ex2(c, NULL, NULL, iv, NULL));
    CHECKF(chosen_name(c, chosen) && memcmp(chosen, kname, NAME_LEN) == 0,
           "re-init kept the previous key name");
    /* Decryption without a name is refused, not run under an old name. */
    CHECK(!EVP_DecryptInit_ex2(c, NULL, NULL, iv, NULL));
    CHECKF(ERR_peek_error() != 0, "refused without an error");
    ERR_clear_error();
    EVP_CIPHER_CTX_free(c);
}

static void cipher_unknown(void)
{
    unsigned char iv[BLOCK], out[64];
    EVP_CIPHER_CTX *c;
    uint8_t copy[NAME_LEN];
    OSSL_PARAM p[2];
    int l = 0;

    t_section("cipher: unknown key name");
    REQUIRE(RAND_bytes(iv, sizeof(iv)) == 1);
    c = EVP_CIPHER_CTX_new();
    REQUIRE(c != NULL);
    name_param(unknown, copy, p);
    CHECK(!EVP_EncryptInit_ex2(c, pciph, NULL, iv, p));
    CHECKF(ERR_peek_error() != 0, "encrypt init failed without an error");
    ERR_clear_error();
    /* The failed context does not encrypt. */
    CHECK(!EVP_EncryptUpdate(c, out, &l, data, 20));
    ERR_clear_error();
    name_param(unknown, copy, p);
    CHECK(!EVP_DecryptInit_ex2(c, pciph, NULL, iv, p));
    CHECKF(ERR_peek_error() != 0, "decrypt init failed without an error");
    ERR_clear_error();
    CHECK(!EVP_DecryptUpdate(c, out, &l, data, 32) ||
          !EVP_DecryptFinal_ex(c, out, &l));
    ERR_clear_error();
    /* The same context still works with the right name. */
    {
        unsigned char want[64];
        int l1 = 0, l2 = 0, wl = ref_crypt(1, iv, data, 20, want);

        name_param(kname, copy, p);
        CHECK(EVP_EncryptInit_ex2(c, pciph, NULL, iv, p) &&
              EVP_EncryptUpdate(c, out, &l1, data, 20) &&
              EVP_EncryptFinal_ex(c, out + l1, &l2) && l1 + l2 == wl &&
              memcmp(out, want, (size_t)wl) == 0);
    }
    /* Decryption needs a name; a raw key is refused. */
    CHECK(!EVP_DecryptInit_ex2(c, pciph, NULL, iv, NULL));
    ERR_clear_error();
    CHECK(!EVP_EncryptInit_ex2(c, pciph, kaes, iv, NULL));
    ERR_clear_error();
    EVP_CIPHER_CTX_free(c);
}

/* ---- main ----------------------------------------------------------------- */

int main(void)
{
    char cnf[512];
    int64_t now = (int64_t)time(NULL);
    t_cnf opts = {.extra = "rescan-interval = 1"};

    REQUIRE(t_env_init(&env, "named-kat"));
    REQUIRE(RAND_bytes(data, sizeof(data)) == 1 &&
            RAND_bytes(other, sizeof(other)) == 1);
    provision(now);

    /* Keys added later (cipher_reinit) are found by the rescan for an
     * unknown name, at most once per rescan-interval. */
    REQUIRE(t_write_cnf(&env, "openssl.cnf", &opts, cnf, sizeof(cnf)));
    libctx = t_libctx_load(cnf);
    REQUIRE(libctx != NULL);
    pmac = EVP_MAC_fetch(libctx, "HMAC", P11TICKET_PROPQ);
    dmac = EVP_MAC_fetch(libctx, "HMAC", "provider=default");
    pciph = EVP_CIPHER_fetch(libctx, P11TICKET_CIPHER_NAME, NULL);
    dciph = EVP_CIPHER_fetch(libctx, "AES-256-CBC", "provider=default");
    REQUIRE(pmac != NULL && dmac != NULL && pciph != NULL && dciph != NULL);
    CHECKF(strcmp(prov_name(EVP_MAC_get0_provider(pmac)), "p11ticket") == 0,
           "HMAC with " P11TICKET_PROPQ " from %s",
           prov_name(EVP_MAC_get0_provider(pmac)));
    CHECKF(strcmp(prov_name(EVP_MAC_get0_provider(dmac)), "default") == 0,
           "reference HMAC from %s", prov_name(EVP_MAC_get0_provider(dmac)));
    CHECKF(strcmp(prov_name(EVP_CIPHER_get0_provider(pciph)), "p11ticket") == 0,
           "cipher from %s", prov_name(EVP_CIPHER_get0_provider(pciph)));
    CHECK(EVP_CIPHER_get_iv_length(pciph) == BLOCK &&
          EVP_CIPHER_get_block_size(pciph) == BLOCK);

    hmac_one_update();
    hmac_split();
    hmac_dup();
    hmac_reinit();
    hmac_unknown();
    cipher_kat();
    cipher_current();
    cipher_unknown();
    cipher_reinit(now);

    EVP_MAC_free(pmac);
    EVP_MAC_free(dmac);
    EVP_CIPHER_free(pciph);
    EVP_CIPHER_free(dciph);
    /* Provider teardown makes no PKCS#11 call (hsm/module.c): returning
     * from main never finalises SoftHSM. */
    OSSL_LIB_CTX_free(libctx);
    OPENSSL_cleanse(khmac, sizeof(khmac));
    OPENSSL_cleanse(kaes, sizeof(kaes));
    t_env_cleanup(&env);
    return t_finish("test_named_kat");
}
