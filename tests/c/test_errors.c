/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_errors.c - the provider's errors by code and call site, and how
 * libp11ticket tells them apart.
 *
 *  1. A provider error carries a P11TICKET_R_* reason under the library
 *     number OpenSSL gave the provider (at least ERR_LIB_USER, and named
 *     after it), and the file, line and function that raised it: an unknown
 *     key name and a missing one at decrypt init (prov_cipher.c), a key name
 *     of the wrong length (prov.c), a digest other than SHA-256 for a token
 *     HMAC key (prov_hmac.c), a token-uri that matches no token
 *     (P11TICKET_R_CONFIG), a token that cannot be reached
 *     (P11TICKET_R_TOKEN).
 *  2. libp11ticket counts a ticket under a name the token does not hold as
 *     unknown_key, and one it cannot check because the token failed or the
 *     configuration is wrong as errors (p11ticket_get_stats).
 *
 * The token failure runs first, in a child, while this process has not yet
 * initialised SoftHSM: the child points SOFTHSM2_CONF at a token directory
 * that does not exist, so C_Initialize fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>

#include "p11ticket.h"
#include "support.h"

#define NAME_LEN P11TICKET_KEY_NAME_LEN

static t_env env;
static char cnf[512];
static uint8_t key1[NAME_LEN];
static const uint8_t unknown[NAME_LEN] = {0x70, 0x11, 0x7e, 0x57, 0xde, 0xad,
                                          0xbe, 0xef, 0x00, 0x01, 0x02, 0x03,
                                          0x04, 0x05, 0x06, 0x07};

/* ---- the newest error ---------------------------------------------------- */

typedef struct raised {
    unsigned long code;
    int line;
    char file[512], func[128], data[256];
} raised;

/* Copies the newest error on this thread's queue, then clears the queue. */
static raised newest(void)
{
    raised r;
    const char *file = "", *func = "", *data = "";
    int flags = 0;

    memset(&r, 0, sizeof(r));
    r.code = ERR_peek_last_error_all(&file, &r.line, &func, &data, &flags);
    snprintf(r.file, sizeof(r.file), "%s", file != NULL ? file : "");
    snprintf(r.func, sizeof(r.func), "%s", func != NULL ? func : "");
    snprintf(r.data, sizeof(r.data), "%s",
             (flags & ERR_TXT_STRING) != 0 && data != NULL ? data : "");
    ERR_clear_error();
    return r;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash != NULL ? slash + 1 : path;
}

/*
 * Whether the source line at file:line, or one of the two before it (a call
 * spread over several lines reports one of them), contains `call`.
 */
static int source_has(const char *file, int line, const char *call)
{
    char buf[512];
    FILE *fp = fopen(file, "r");
    int n = 0, found = 0;

    if (fp == NULL) {
        fprintf(stderr, "  cannot open %s\n", file);
        return 0;
    }
    while (fgets(buf, sizeof(buf), fp) != NULL && ++n <= line)
        if (n >= line - 2 && strstr(buf, call) != NULL)
            found = 1;
    fclose(fp);
    return found;
}

/*
 * The error came from the provider behind `prov`, with `reason`, raised by
 * `func` in `file` at a line that holds `call`.
 */
static void check_raised(const char *what, const raised *r,
                         const OSSL_PROVIDER *prov, int reason,
                         const char *file, const char *func, const char *call)
{
    const char *lib = ERR_lib_error_string(r->code);

    if (!CHECKF(r->code != 0, "%s: no error raised", what))
        return;
    /* core_vset_error(): a provider's own library, never a built-in one. */
    CHECKF(ERR_GET_LIB(r->code) >= ERR_LIB_USER, "%s: library %d", what,
           ERR_GET_LIB(r->code));
    CHECKF(lib != NULL && strcmp(lib, OSSL_PROVIDER_get0_name(prov)) == 0,
           "%s: library \"%s\", not the provider \"%s\"", what,
           lib != NULL ? lib : "(null)", OSSL_PROVIDER_get0_name(prov));
    CHECKF(ERR_GET_REASON(r->code) == reason, "%s: reason %d, want %d", what,
           ERR_GET_REASON(r->code), reason);
    /* The call site, not the raise helper in prov.c. */
    CHECKF(strcmp(base_name(r->file), file) == 0 && strcmp(r->func, func) == 0,
           "%s: raised at %s:%d in %s, want %s in %s", what, r->file, r->line,
           r->func, func, file);
    CHECKF(source_has(r->file, r->line, call), "%s: %s:%d does not call %s",
           what, r->file, r->line, call);
}

static int decrypt_init(EVP_CIPHER *ciph, const uint8_t *name, size_t len)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    unsigned char iv[16] = {0};
    uint8_t copy[NAME_LEN + 1];
    OSSL_PARAM p[2];
    int ok;

    if (c == NULL)
        return -1;
    memcpy(copy, name != NULL ? name : unknown, len);
    p[0] =
        OSSL_PARAM_construct_octet_string(P11TICKET_PARAM_KEY_NAME, copy, len);
    p[1] = OSSL_PARAM_construct_end();
    ok = EVP_DecryptInit_ex2(c, ciph, NULL, iv, name != NULL ? p : NULL);
    EVP_CIPHER_CTX_free(c);
    return ok;
}

/* ---- TLS ----------------------------------------------------------------- */

static SSL_CTX *token_server(OSSL_LIB_CTX *libctx)
{
    SSL_CTX *s = p11ticket_SSL_CTX_new(libctx, TLS_server_method());

    if (s == NULL)
        return NULL;
    if (!t_use_new_cert(s, libctx)) {
        SSL_CTX_free(s);
        return NULL;
    }
    /* Resumption from the ticket only; and in TLS 1.3 no new tickets, so
     * the counters move only for the ticket the client offers. */
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(s, 0);
    return s;
}

typedef struct delta {
    long long resumed, unknown_key, refused, errors;
} delta;

/* Offers sess in TLS 1.3 to sctx, which must not resume it; the counters'
 * movement goes to *d. */
static int offer(const char *what, SSL_CTX *sctx, SSL_CTX *cctx,
                 SSL_SESSION *sess, int want_reused, delta *d)
{
    t_conn_opts o = {.version = TLS1_3_VERSION, .session = sess};
    p11ticket_stats a, b;
    t_conn r;
    int ok;

    memset(d, 0, sizeof(*d));
    if (!CHECK(p11ticket_get_stats(sctx, &a) == 1))
        return 0;
    ok = CHECKF(t_connect(sctx, cctx, &o, &r), "%s: %s", what, r.why);
    if (ok)
        ok = CHECKF(r.server_reused == want_reused &&
                        r.client_reused == want_reused,
                    "%s: reused server %d client %d, want %d", what,
                    r.server_reused, r.client_reused, want_reused);
    t_conn_clear(&r);
    if (!CHECK(p11ticket_get_stats(sctx, &b) == 1))
        return 0;
    d->resumed = (long long)(b.resumed - a.resumed);
    d->unknown_key = (long long)(b.unknown_key - a.unknown_key);
    d->refused = (long long)(b.refused - a.refused);
    d->errors = (long long)(b.errors - a.errors);
    return ok;
}

#define CHECK_DELTA(d, r, u, f, e)                                             \
    CHECKF((d).resumed == (r) && (d).unknown_key == (u) &&                     \
               (d).refused == (f) && (d).errors == (e),                        \
           "%s: resumed %lld unknown_key %lld refused %lld errors %lld, "      \
           "want %d %d %d %d",                                                 \
           what, (d).resumed, (d).unknown_key, (d).refused, (d).errors, r, u,  \
           f, e)

/* ---- 1. the token cannot be reached (child) ------------------------------ */

static int token_unreachable(void *arg)
{
    const char *what = "token unreachable";
    char conf[400], text[600];
    OSSL_LIB_CTX *libctx;
    EVP_CIPHER *ciph;
    SSL_CTX *plain, *sctx, *cctx;
    SSL_SESSION *named = NULL;
    t_conn_opts o = {.version = TLS1_3_VERSION};
    t_conn r;
    raised e;
    delta d;
    FILE *fp;

    (void)arg;
    t_section("%s: P11TICKET_R_TOKEN, counted as errors", what);
    snprintf(conf, sizeof(conf), "%s/unreachable.conf", env.dir);
    snprintf(text, sizeof(text),
             "directories.tokendir = %s/no-such-dir\n"
             "objectstore.backend = file\n"
             "log.level = ERROR\n",
             env.dir);
    fp = fopen(conf, "w");
    REQUIRE(fp != NULL && fputs(text, fp) >= 0 && fclose(fp) == 0);
    setenv("SOFTHSM2_CONF", conf, 1);

    libctx = t_libctx_load(cnf);
    REQUIRE(libctx != NULL);
    ciph = EVP_CIPHER_fetch(libctx, P11TICKET_CIPHER_NAME, NULL);
    REQUIRE(ciph != NULL);
    ERR_clear_error();
    CHECK(decrypt_init(ciph, key1, NAME_LEN) == 0);
    e = newest();
    check_raised(what, &e, EVP_CIPHER_get0_provider(ciph), P11TICKET_R_TOKEN,
                 "prov_cipher.c", "cbc_init", "p11t_prov_raise_hsm(");

    /* A ticket named after the token's key, from a server with OpenSSL's
     * in-memory keys: the token cannot say whether it is genuine. */
    plain = SSL_CTX_new(TLS_server_method());
    cctx = SSL_CTX_new(TLS_client_method());
    REQUIRE(plain != NULL && cctx != NULL && t_use_new_cert(plain, NULL));
    SSL_CTX_set_session_cache_mode(plain, SSL_SESS_CACHE_OFF);
    if (CHECKF(t_connect(plain, cctx, &o, &r), "%s: %s", what, r.why))
        named = t_session_tamper(r.session, 0, 0, key1);
    t_conn_clear(&r);
    REQUIRE(named != NULL);

    sctx = token_server(libctx);
    REQUIRE(sctx != NULL);
    CHECKF(p11ticket_enable(sctx) == 0,
           "p11ticket_enable reports a usable token");
    if (offer(what, sctx, cctx, named, 0, &d))
        CHECK_DELTA(d, 0, 0, 0, 1);

    SSL_SESSION_free(named);
    SSL_CTX_free(sctx);
    SSL_CTX_free(plain);
    SSL_CTX_free(cctx);
    EVP_CIPHER_free(ciph);
    OSSL_LIB_CTX_free(libctx);
    return 1;
}

/* ---- 2. reason codes and call sites -------------------------------------- */

static void provider_errors(OSSL_LIB_CTX *libctx)
{
    EVP_CIPHER *ciph = EVP_CIPHER_fetch(libctx, P11TICKET_CIPHER_NAME, NULL);
    EVP_MAC *mac = EVP_MAC_fetch(libctx, "HMAC", P11TICKET_PROPQ);
    const OSSL_PROVIDER *prov;
    EVP_MAC_CTX *m;
    char digest[] = "SHA384", hex[2 * NAME_LEN + 1];
    uint8_t copy[NAME_LEN];
    OSSL_PARAM p[3];
    raised e;

    REQUIRE(ciph != NULL && mac != NULL);
    prov = EVP_CIPHER_get0_provider(ciph);
    REQUIRE(prov != NULL);

    t_section("unknown key name at decrypt init");
    ERR_clear_error();
    CHECK(decrypt_init(ciph, unknown, NAME_LEN) == 0);
    e = newest();
    check_raised("unknown key", &e, prov, P11TICKET_R_UNKNOWN_KEY,
                 "prov_cipher.c", "cbc_init", "p11t_prov_raise_hsm(");
    t_hexstr(unknown, NAME_LEN, hex);
    CHECKF(strstr(e.data, hex) != NULL, "unknown key: data \"%s\"", e.data);
    {
        const char *s = ERR_reason_error_string(e.code);

        CHECKF(s != NULL && strcmp(s, "unknown key") == 0,
               "unknown key: reason string \"%s\"", s != NULL ? s : "(null)");
    }

    t_section("bad parameters");
    ERR_clear_error();
    CHECK(decrypt_init(ciph, key1, NAME_LEN - 1) == 0);
    e = newest();
    check_raised("15-byte key name", &e, prov, P11TICKET_R_BAD_PARAM, "prov.c",
                 "p11t_prov_key_name_param", "p11t_prov_raise(");

    ERR_clear_error();
    CHECK(decrypt_init(ciph, NULL, 0) == 0);
    e = newest();
    check_raised("decrypt without a name", &e, prov, P11TICKET_R_BAD_PARAM,
                 "prov_cipher.c", "cbc_init", "p11t_prov_raise(");

    m = EVP_MAC_CTX_new(mac);
    REQUIRE(m != NULL);
    memcpy(copy, key1, NAME_LEN);
    p[0] = OSSL_PARAM_construct_octet_string(P11TICKET_PARAM_KEY_NAME, copy,
                                             NAME_LEN);
    p[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    p[2] = OSSL_PARAM_construct_end();
    ERR_clear_error();
    CHECK(EVP_MAC_init(m, NULL, 0, p) == 0);
    e = newest();
    check_raised("token HMAC with SHA-384", &e, EVP_MAC_get0_provider(mac),
                 P11TICKET_R_BAD_PARAM, "prov_hmac.c", "hmac_set_ctx_params",
                 "p11t_prov_raise(");
    EVP_MAC_CTX_free(m);

    EVP_MAC_free(mac);
    EVP_CIPHER_free(ciph);
}

/* ---- 3. libp11ticket's counters ------------------------------------------ */

static void classification(OSSL_LIB_CTX *libctx, SSL_CTX *cctx)
{
    const char *what;
    t_conn_opts o = {.version = TLS1_3_VERSION};
    SSL_CTX *issuer, *sctx;
    SSL_SESSION *genuine = NULL, *renamed = NULL;
    t_conn r;
    delta d;

    t_section("libp11ticket: unknown key vs resumption");
    /* An issuer with the default two TLS 1.3 tickets. */
    issuer = p11ticket_SSL_CTX_new(libctx, TLS_server_method());
    REQUIRE(issuer != NULL && t_use_new_cert(issuer, libctx));
    SSL_CTX_set_session_cache_mode(issuer, SSL_SESS_CACHE_OFF);
    CHECK_EQ(p11ticket_enable(issuer), 1);
    if (CHECKF(t_connect(issuer, cctx, &o, &r), "issuer: %s", r.why)) {
        genuine = r.session;
        r.session = NULL;
    }
    t_conn_clear(&r);
    REQUIRE(genuine != NULL && t_ticket(genuine, NULL) >= NAME_LEN);
    renamed = t_session_tamper(genuine, 0, 0, unknown);
    REQUIRE(renamed != NULL);

    sctx = token_server(libctx);
    REQUIRE(sctx != NULL);
    CHECK_EQ(p11ticket_enable(sctx), 1);
    what = "the genuine ticket";
    if (offer(what, sctx, cctx, genuine, 1, &d))
        CHECK_DELTA(d, 1, 0, 0, 0);
    what = "the same ticket under an unknown key name";
    if (offer(what, sctx, cctx, renamed, 0, &d))
        CHECK_DELTA(d, 0, 1, 0, 0);

    t_section("libp11ticket: configuration error");
    {
        t_cnf bad = {.token_uri = "pkcs11:token=no-such-token"};
        char bad_cnf[512];
        OSSL_LIB_CTX *badctx;
        EVP_CIPHER *ciph;
        SSL_CTX *bsctx;
        raised e;

        REQUIRE(t_write_cnf(&env, "no-such-token.cnf", &bad, bad_cnf,
                            sizeof(bad_cnf)));
        badctx = t_libctx_load(bad_cnf);
        REQUIRE(badctx != NULL);
        ciph = EVP_CIPHER_fetch(badctx, P11TICKET_CIPHER_NAME, NULL);
        REQUIRE(ciph != NULL);
        ERR_clear_error();
        CHECK(decrypt_init(ciph, key1, NAME_LEN) == 0);
        e = newest();
        check_raised("token-uri matches no token", &e,
                     EVP_CIPHER_get0_provider(ciph), P11TICKET_R_CONFIG,
                     "prov_cipher.c", "cbc_init", "p11t_prov_raise_hsm(");
        CHECKF(strstr(e.data, "token-uri") != NULL,
               "the error does not name token-uri: \"%s\"", e.data);

        bsctx = token_server(badctx);
        REQUIRE(bsctx != NULL);
        CHECK_EQ(p11ticket_enable(bsctx), 0);
        what = "a genuine ticket, token-uri matches no token";
        if (offer(what, bsctx, cctx, genuine, 0, &d))
            CHECK_DELTA(d, 0, 0, 0, 1);
        SSL_CTX_free(bsctx);
        EVP_CIPHER_free(ciph);
        OSSL_LIB_CTX_free(badctx);
    }

    SSL_SESSION_free(genuine);
    SSL_SESSION_free(renamed);
    SSL_CTX_free(sctx);
    SSL_CTX_free(issuer);
}

int main(void)
{
    int64_t now = (int64_t)time(NULL);
    OSSL_LIB_CTX *libctx;
    SSL_CTX *cctx;
    t_log log = {.want = NULL};

    REQUIRE(t_env_init(&env, "errors"));
    REQUIRE(t_key_create(&env, NULL, now - 60, INT64_MAX, INT64_MAX, key1));
    REQUIRE(t_write_cnf(&env, "openssl.cnf", NULL, cnf, sizeof(cnf)));
    t_log_capture(&log);

    /* First: nothing in this process has initialised SoftHSM yet. */
    CHECKF(t_in_child("token unreachable", token_unreachable, NULL),
           "a token that cannot be reached");

    libctx = t_libctx_load(cnf);
    REQUIRE(libctx != NULL);
    provider_errors(libctx);

    /* The client runs in the default libctx and never loads the provider. */
    cctx = SSL_CTX_new(TLS_client_method());
    REQUIRE(cctx != NULL);
    classification(libctx, cctx);

    t_log_capture(NULL);
    SSL_CTX_free(cctx);
    OSSL_LIB_CTX_free(libctx);
    t_env_cleanup(&env);
    return t_finish("test_errors");
}
