/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_ecb_kat.c - known-answer tests of the ticket cipher built on
 * CKM_AES_ECB (aes-mechanism = ecb), the way tokens without CBC run it
 * (docs/design.md, "p11-kit remoting"), against OpenSSL's AES-256-CBC.
 *
 * A generation with known random key bytes is imported (t_keytool import)
 * and P11TICKET-AES-CBC is used exactly as test_named_kat uses it, from two
 * library contexts on the same in-process SoftHSM token:
 *  - "cbc": the provider straight on SoftHSM with the default
 *    aes-mechanism (auto, so CKM_AES_CBC_PAD);
 *  - "ecb": the provider on SoftHSM through tests/faultmod (no faults, it
 *    only counts the calls) with aes-mechanism = ecb.
 * Checked:
 *  - every plaintext length 0..300: the ECB path's ciphertext equals
 *    AES-256-CBC's (one C_EncryptUpdate per block, no C_Encrypt), the ECB
 *    path decrypts it, the CBC_PAD path decrypts the ECB path's ciphertext
 *    and the ECB path the CBC_PAD path's (tickets stay readable across
 *    servers), and a corrupted last block (bad padding) fails at
 *    DecryptFinal, not at update, counted as one token error as on CBC_PAD;
 *  - with CKM_AES_CBC_PAD hidden by faultmod the ECB context still
 *    encrypts and decrypts (it never uses CBC_PAD, not even to decrypt);
 *  - in-place encryption and decryption (out == in);
 *  - aes-mechanism = cbc-pad through faultmod uses C_Encrypt, not
 *    C_EncryptUpdate; an unknown aes-mechanism value is a configuration
 *    error naming the key.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
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

#ifndef P11T_TEST_FAULTMOD
#error "P11T_TEST_FAULTMOD (path of libp11t_faultmod.so) is not defined"
#endif

#define NAME_LEN P11TICKET_KEY_NAME_LEN
#define BLOCK 16
#define MAX_LEN 300

static t_env env;
static char control[400];
static unsigned long long (*fault_calls)(const char *);
static EVP_CIPHER *dciph; /* AES-256-CBC from the default provider */
static uint8_t kname[NAME_LEN], khmac[32], kaes[32];
static unsigned char data[MAX_LEN + BLOCK];

typedef struct side {
    const char *what;
    OSSL_LIB_CTX *libctx;
    EVP_CIPHER *ciph; /* P11TICKET-AES-CBC */
} side;

/* ---- helpers -------------------------------------------------------------- */

static void set_faults(const char *rules)
{
    t_write_file_atomic(control, rules);
}

static unsigned long long calls(const char *fn)
{
    return fault_calls != NULL ? fault_calls(fn) : 0;
}

static void side_open(side *sd, const char *what, const char *file,
                      const char *extra, int through_faultmod)
{
    char cnf[512];
    t_cnf o = {.extra = extra};

    if (through_faultmod)
        o.pkcs11_module = P11T_TEST_FAULTMOD;
    sd->what = what;
    REQUIRE(t_write_cnf(&env, file, &o, cnf, sizeof(cnf)));
    sd->libctx = t_libctx_load(cnf);
    REQUIRE(sd->libctx != NULL);
    sd->ciph = EVP_CIPHER_fetch(sd->libctx, P11TICKET_CIPHER_NAME, NULL);
    REQUIRE(sd->ciph != NULL);
    if (through_faultmod && fault_calls == NULL) {
        void *dl = dlopen(P11T_TEST_FAULTMOD, RTLD_NOW | RTLD_LOCAL);

        REQUIRE(dl != NULL);
        fault_calls = (unsigned long long (*)(const char *))dlsym(
            dl, "p11t_fault_calls");
        REQUIRE(fault_calls != NULL);
    }
}

static void side_close(side *sd)
{
    EVP_CIPHER_free(sd->ciph);
    OSSL_LIB_CTX_free(sd->libctx);
    memset(sd, 0, sizeof(*sd));
}

/* The provider's status line and token error count. */
static void side_status(const side *sd, char *status, size_t len,
                        uint64_t *errors)
{
    uint64_t e = UINT64_MAX;
    OSSL_PARAM p[3];

    status[0] = '\0';
    p[0] = OSSL_PARAM_construct_utf8_string(P11TICKET_PARAM_STATUS, status,
                                            len - 1);
    p[1] = OSSL_PARAM_construct_uint64(P11TICKET_PARAM_TOKEN_ERRORS, &e);
    p[2] = OSSL_PARAM_construct_end();
    CHECK(OSSL_PROVIDER_get_params(EVP_CIPHER_get0_provider(sd->ciph), p));
    if (errors != NULL)
        *errors = e;
}

static uint64_t side_errors(const side *sd)
{
    char status[400];
    uint64_t e;

    side_status(sd, status, sizeof(status), &e);
    return e;
}

/* AES-256-CBC with PKCS#7 padding in memory; returns the length or -1. */
static int ref_crypt(int enc, const unsigned char iv[BLOCK],
                     const unsigned char *in, int len, unsigned char *out)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int l1 = 0, l2 = 0, ok;

    ok = c != NULL && EVP_CipherInit_ex2(c, dciph, kaes, iv, enc, NULL) &&
         EVP_CipherUpdate(c, out, &l1, in, len) &&
         EVP_CipherFinal_ex(c, out + l1, &l2);
    EVP_CIPHER_CTX_free(c);
    ERR_clear_error(); /* an expected padding failure leaves an entry */
    return ok ? l1 + l2 : -1;
}

static EVP_CIPHER_CTX *named_ctx(const side *sd, int enc,
                                 const unsigned char iv[BLOCK])
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    uint8_t copy[NAME_LEN];
    OSSL_PARAM p[2];

    if (c == NULL)
        return NULL;
    memcpy(copy, kname, NAME_LEN);
    p[0] = OSSL_PARAM_construct_octet_string(P11TICKET_PARAM_KEY_NAME, copy,
                                             NAME_LEN);
    p[1] = OSSL_PARAM_construct_end();
    if (!EVP_CipherInit_ex2(c, sd->ciph, NULL, iv, enc, p)) {
        EVP_CIPHER_CTX_free(c);
        return NULL;
    }
    return c;
}

/*
 * Token encryption (one update + final, as libssl does) of pt into out;
 * returns the ciphertext length or -1.  Checks the provider's contract:
 * update gives all but the last block, final the last block.
 */
static int tok_encrypt(const side *sd, const unsigned char iv[BLOCK],
                       const unsigned char *pt, int len, unsigned char *out)
{
    EVP_CIPHER_CTX *c = named_ctx(sd, 1, iv);
    int padded = len + BLOCK - len % BLOCK, l1 = -1, l2 = -1, ok = 0;

    if (!CHECKF(c != NULL, "%s len %d: encrypt init", sd->what, len))
        return -1;
    if (CHECKF(EVP_EncryptUpdate(c, out, &l1, pt, len), "%s len %d: update",
               sd->what, len) &&
        CHECKF(l1 == padded - BLOCK, "%s len %d: update gave %d", sd->what,
               len, l1) &&
        CHECKF(EVP_EncryptFinal_ex(c, out + l1, &l2), "%s len %d: final",
               sd->what, len))
        ok = CHECKF(l2 == BLOCK, "%s len %d: final gave %d", sd->what, len,
                    l2);
    EVP_CIPHER_CTX_free(c);
    ERR_clear_error();
    return ok ? l1 + l2 : -1;
}

/* Token decryption: 1 if update and final both succeed; *upd_ok says
 * whether update did (it must, even for a bad ciphertext). */
static int tok_decrypt(const side *sd, const unsigned char iv[BLOCK],
                       const unsigned char *ct, int len, unsigned char *out,
                       int *outlen, int *upd_ok)
{
    EVP_CIPHER_CTX *c = named_ctx(sd, 0, iv);
    int l1 = 0, l2 = -1, ok = 0;

    *upd_ok = 0;
    *outlen = -1;
    if (c == NULL)
        return 0;
    *upd_ok = EVP_DecryptUpdate(c, out, &l1, ct, len) == 1;
    if (*upd_ok) {
        ok = EVP_DecryptFinal_ex(c, out + l1, &l2) == 1;
        *outlen = l1 + (l2 > 0 ? l2 : 0);
    }
    EVP_CIPHER_CTX_free(c);
    ERR_clear_error();
    return ok;
}

/* pt decrypts from ct (len n plaintext, wl ciphertext) on side sd. */
static int decrypts_to(const side *sd, const unsigned char iv[BLOCK],
                       const unsigned char *ct, int wl, const unsigned char *pt,
                       int n)
{
    unsigned char out[MAX_LEN + 2 * BLOCK];
    int ol = -1, upd = 0;

    memset(out, 0xa5, sizeof(out));
    return tok_decrypt(sd, iv, ct, wl, out, &ol, &upd) && ol == n &&
           memcmp(out, pt, (size_t)n) == 0;
}

/* ---- provisioning --------------------------------------------------------- */

static int write_key_file(const char *path, const unsigned char *bytes,
                          size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ssize_t w;

    if (fd < 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return 0;
    }
    w = fchmod(fd, 0600) == 0 ? write(fd, bytes, len) : -1;
    if (close(fd) != 0 || w != (ssize_t)len)
        return 0;
    return 1;
}

static void provision(int64_t now)
{
    unsigned char file[NAME_LEN + 64];
    char path[512];

    t_section("import a generation with known key bytes");
    REQUIRE(RAND_bytes(kname, sizeof(kname)) == 1 &&
            RAND_bytes(khmac, sizeof(khmac)) == 1 &&
            RAND_bytes(kaes, sizeof(kaes)) == 1);
    memcpy(file, kname, NAME_LEN);
    memcpy(file + NAME_LEN, khmac, 32);
    memcpy(file + NAME_LEN + 32, kaes, 32);
    snprintf(path, sizeof(path), "%s/known.key", env.dir);
    REQUIRE(write_key_file(path, file, sizeof(file)));
    OPENSSL_cleanse(file, sizeof(file));
    REQUIRE(t_key_import(&env, NULL, path, now - 60, INT64_MAX, INT64_MAX));
    unlink(path);
}

/* ---- the tests ------------------------------------------------------------ */

static void every_length(const side *cbc, const side *ecb)
{
    static unsigned char want[MAX_LEN + BLOCK], ct_ecb[MAX_LEN + BLOCK],
        ct_cbc[MAX_LEN + BLOCK], bad[MAX_LEN + BLOCK], pt[MAX_LEN + BLOCK];
    unsigned long long upd0 = calls("C_EncryptUpdate"),
                       enc0 = calls("C_Encrypt"),
                       dec0 = calls("C_Decrypt");
    unsigned long long blocks = 0, decrypts = 0;
    uint64_t errors_ecb = side_errors(ecb), errors_cbc = side_errors(cbc);
    int corrupted = 0, mismatches = 0;

    t_section("lengths 0..%d: ECB path against AES-256-CBC and CBC_PAD",
              MAX_LEN);
    for (int n = 0; n <= MAX_LEN; n++) {
        int wl, cl, el, pl = -1, upd = 0, x;
        unsigned char iv[BLOCK];

        REQUIRE(RAND_bytes(iv, sizeof(iv)) == 1);
        wl = ref_crypt(1, iv, data, n, want);
        REQUIRE(wl == n + BLOCK - n % BLOCK);

        el = tok_encrypt(ecb, iv, data, n, ct_ecb);
        blocks += (unsigned long long)(wl / BLOCK);
        if (!CHECKF(el == wl && memcmp(ct_ecb, want, (size_t)wl) == 0,
                    "len %d: ECB-path ciphertext (%d bytes) differs from "
                    "AES-256-CBC", n, el))
            mismatches++;
        cl = tok_encrypt(cbc, iv, data, n, ct_cbc);
        CHECKF(cl == wl && memcmp(ct_cbc, want, (size_t)wl) == 0,
               "len %d: CBC_PAD ciphertext differs from AES-256-CBC", n);

        /* Decryption inverts it, on each path and across the two. */
        CHECKF(decrypts_to(ecb, iv, want, wl, data, n),
               "len %d: ECB path does not decrypt AES-256-CBC", n);
        CHECKF(el == wl && decrypts_to(cbc, iv, ct_ecb, el, data, n),
               "len %d: CBC_PAD does not decrypt the ECB path's ciphertext",
               n);
        CHECKF(cl == wl && decrypts_to(ecb, iv, ct_cbc, cl, data, n),
               "len %d: ECB path does not decrypt CBC_PAD's ciphertext", n);
        decrypts += 2;

        /* A corrupted last block that AES-256-CBC rejects (about 1 in 256
         * corruptions still ends in valid padding). */
        memcpy(bad, want, (size_t)wl);
        for (x = 1; x < 256; x++) {
            bad[wl - BLOCK] = (unsigned char)(want[wl - BLOCK] ^ x);
            if (ref_crypt(0, iv, bad, wl, pt) < 0)
                break;
        }
        REQUIRE(x < 256);
        CHECKF(!tok_decrypt(ecb, iv, bad, wl, pt, &pl, &upd),
               "len %d: ECB path accepted a bad padding", n);
        CHECKF(upd, "len %d: DecryptUpdate failed on a bad padding (must "
               "fail at DecryptFinal)", n);
        decrypts++;
        corrupted++;
        /* A corrupted first block garbles it and flips a bit in the
         * second: the ECB path answers exactly as AES-256-CBC does
         * (garbage that still ends in valid padding "decrypts"). */
        if (wl > BLOCK) {
            static unsigned char ref[MAX_LEN + BLOCK];
            int rl, ok;

            memcpy(bad, want, (size_t)wl);
            bad[0] ^= 0x40;
            rl = ref_crypt(0, iv, bad, wl, ref);
            ok = tok_decrypt(ecb, iv, bad, wl, pt, &pl, &upd);
            CHECKF(upd && ok == (rl >= 0) &&
                       (!ok || (pl == rl && memcmp(pt, ref, (size_t)rl) == 0)),
                   "len %d: corrupted first block: %d/%d bytes, AES-CBC %d",
                   n, ok, pl, rl);
            decrypts++;
            corrupted += !ok;
        }
        /* Not a whole number of blocks: refused before the token. */
        CHECKF(!tok_decrypt(ecb, iv, want, wl - 1, pt, &pl, &upd) && upd,
               "len %d: truncated ciphertext", n);
    }
    fprintf(stderr, "  %d mismatches; C_EncryptUpdate %llu (%llu blocks), "
            "C_Encrypt %llu, C_Decrypt %llu\n", mismatches,
            calls("C_EncryptUpdate") - upd0, blocks, calls("C_Encrypt") - enc0,
            calls("C_Decrypt") - dec0);
    /* Only the ECB side goes through faultmod: one update per block and
     * not one C_Encrypt; one C_Decrypt per decryption. */
    CHECK_EQ(calls("C_EncryptUpdate") - upd0, blocks);
    CHECK_EQ(calls("C_Encrypt") - enc0, 0);
    CHECK_EQ(calls("C_Decrypt") - dec0, decrypts);
    /* Each bad padding is one token error, as SoftHSM's CBC_PAD failure
     * is (hsm/keys.c, run()); truncated input never reaches the token. */
    CHECK_EQ(side_errors(ecb) - errors_ecb, corrupted);
    CHECK_EQ(side_errors(cbc) - errors_cbc, 0);
}

static void cbc_pad_hidden(const side *cbc, const side *ecb)
{
    unsigned char iv[BLOCK], want[256], ct[256];
    int wl;

    t_section("CKM_AES_CBC_PAD hidden: the ECB path never needs it");
    set_faults("hide-mech CKM_AES_CBC_PAD\n");
    REQUIRE(RAND_bytes(iv, sizeof(iv)) == 1);
    wl = ref_crypt(1, iv, data, 146, want); /* a TLS 1.3 state */
    CHECK(tok_encrypt(ecb, iv, data, 146, ct) == wl &&
          memcmp(ct, want, (size_t)wl) == 0);
    CHECK(decrypts_to(ecb, iv, want, wl, data, 146));
    /* The direct context does not go through faultmod. */
    CHECK(decrypts_to(cbc, iv, ct, wl, data, 146));
    set_faults("");
}

static void in_place(const side *ecb)
{
    unsigned char iv[BLOCK], buf[256], want[256];
    EVP_CIPHER_CTX *c;
    int l1 = -1, l2 = -1, wl, n = 100;

    t_section("ECB path in place (out == in)");
    REQUIRE(RAND_bytes(iv, sizeof(iv)) == 1);
    wl = ref_crypt(1, iv, data, n, want);
    memcpy(buf, data, (size_t)n);
    c = named_ctx(ecb, 1, iv);
    CHECK(c != NULL && EVP_EncryptUpdate(c, buf, &l1, buf, n) &&
          EVP_EncryptFinal_ex(c, buf + l1, &l2) && l1 + l2 == wl &&
          memcmp(buf, want, (size_t)wl) == 0);
    EVP_CIPHER_CTX_free(c);
    memcpy(buf, want, (size_t)wl);
    l1 = l2 = -1;
    c = named_ctx(ecb, 0, iv);
    CHECK(c != NULL && EVP_DecryptUpdate(c, buf, &l1, buf, wl) &&
          EVP_DecryptFinal_ex(c, buf + l1, &l2) && l1 + l2 == n &&
          memcmp(buf, data, (size_t)n) == 0);
    EVP_CIPHER_CTX_free(c);
    ERR_clear_error();
}

static void forced_cbc_pad(void)
{
    unsigned char iv[BLOCK], want[256], ct[256];
    unsigned long long upd0, enc0;
    side s;
    int wl;

    t_section("aes-mechanism = cbc-pad uses C_Encrypt");
    side_open(&s, "cbc-pad", "cbc-pad.cnf", "aes-mechanism = cbc-pad", 1);
    REQUIRE(RAND_bytes(iv, sizeof(iv)) == 1);
    wl = ref_crypt(1, iv, data, 200, want);
    upd0 = calls("C_EncryptUpdate");
    enc0 = calls("C_Encrypt");
    CHECK(tok_encrypt(&s, iv, data, 200, ct) == wl &&
          memcmp(ct, want, (size_t)wl) == 0);
    CHECK_EQ(calls("C_Encrypt") - enc0, 1);
    CHECK_EQ(calls("C_EncryptUpdate") - upd0, 0);
    side_close(&s);
}

static void bad_value(void)
{
    char status[400];
    side s;

    t_section("aes-mechanism = cbc: a configuration error");
    side_open(&s, "bad", "bad.cnf", "aes-mechanism = cbc", 0);
    side_status(&s, status, sizeof(status), NULL);
    CHECKF(strstr(status, "aes-mechanism") != NULL &&
               strstr(status, "cbc-pad") != NULL,
           "status: %s", status);
    side_close(&s);
}

int main(void)
{
    int64_t now = (int64_t)time(NULL);
    char status[400];
    side cbc, ecb;

    REQUIRE(t_env_init(&env, "ecb-kat"));
    snprintf(control, sizeof(control), "%s/faults.control", env.dir);
    setenv("P11T_FAULT_CONTROL", control, 1);
    setenv("P11T_FAULT_MODULE", env.pkcs11, 1);
    set_faults("");
    REQUIRE(RAND_bytes(data, sizeof(data)) == 1);
    provision(now);

    side_open(&cbc, "cbc", "cbc.cnf", NULL, 0);
    side_open(&ecb, "ecb", "ecb.cnf", "aes-mechanism = ecb", 1);
    dciph = EVP_CIPHER_fetch(cbc.libctx, "AES-256-CBC", "provider=default");
    REQUIRE(dciph != NULL);
    side_status(&ecb, status, sizeof(status), NULL);
    CHECKF(strcmp(status, "ok") == 0, "ecb status: %s", status);
    side_status(&cbc, status, sizeof(status), NULL);
    CHECKF(strcmp(status, "ok") == 0, "cbc status: %s", status);

    every_length(&cbc, &ecb);
    cbc_pad_hidden(&cbc, &ecb);
    in_place(&ecb);
    forced_cbc_pad();
    bad_value();

    EVP_CIPHER_free(dciph);
    side_close(&ecb);
    side_close(&cbc);
    OPENSSL_cleanse(khmac, sizeof(khmac));
    OPENSSL_cleanse(kaes, sizeof(kaes));
    t_env_cleanup(&env);
    /* Provider teardown makes no PKCS#11 call (hsm/module.c): returning
     * from main never finalises SoftHSM. */
    return t_finish("test_ecb_kat");
}
