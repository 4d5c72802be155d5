/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11ticket.c - the public API of libp11ticket except logging: SSL_CTX
 * creation, enabling the ticket callback, statistics and status.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/provider.h>

#include "internal.h"

/* Provider strings are short ("ok", a config key and a reason, 32 hex
 * digits); the caller's buffers may be smaller, so query into this much and
 * truncate on copy. */
#define PROVIDER_STRING_MAX 512

#define NOT_LOADED_MSG                                                         \
    "p11ticket provider is not loaded (check OPENSSL_CONF and that "           \
    "openssl.cnf activates the p11ticket provider; for an SSL_CTX in a "       \
    "private OSSL_LIB_CTX use p11ticket_SSL_CTX_new())"

P11TICKET_EXPORT SSL_CTX *p11ticket_SSL_CTX_new(OSSL_LIB_CTX *libctx,
                                                const SSL_METHOD *method)
{
    SSL_CTX *ctx = SSL_CTX_new_ex(libctx, P11TICKET_PROPQ, method);
    struct p11t_lib_state *st;

    if (ctx == NULL || libctx == NULL)
        return ctx;

    /* OpenSSL 3.0 has no SSL_CTX_get0_libctx(); remember it for the cipher
     * fetch and the IV's RAND_bytes_ex() in p11ticket_enable(). */
    st = p11t_lib_state_get_or_new(ctx);
    if (st == NULL) {
        ERR_raise(ERR_LIB_SSL, ERR_R_MALLOC_FAILURE);
        SSL_CTX_free(ctx);
        return NULL;
    }
    st->libctx = libctx;
    return ctx;
}

/*
 * Asks the provider for its status line and current key name in one call
 * (the provider computes both from one look at the token).  data_size is one
 * short of each buffer: OSSL_PARAM_set_utf8_string() omits the terminator
 * when the string fills data_size exactly.  Returns 1 if the status came
 * back; key is "" when it did not.
 */
static int provider_status(const OSSL_PROVIDER *prov, char *status,
                           size_t status_len, char *key, size_t key_len)
{
    OSSL_PARAM params[3];
    int ok;

    memset(status, 0, status_len);
    memset(key, 0, key_len);
    params[0] = OSSL_PARAM_construct_utf8_string(P11TICKET_PARAM_STATUS, status,
                                                 status_len - 1);
    params[1] = OSSL_PARAM_construct_utf8_string(P11TICKET_PARAM_CURRENT_KEY,
                                                 key, key_len - 1);
    params[2] = OSSL_PARAM_construct_end();
    ok = OSSL_PROVIDER_get_params(prov, params);
    if (!ok || !OSSL_PARAM_modified(&params[1]))
        key[0] = '\0';
    if (!ok || !OSSL_PARAM_modified(&params[0])) {
        snprintf(status, status_len,
                 "the provider did not report " P11TICKET_PARAM_STATUS);
        return 0;
    }
    return 1;
}

P11TICKET_EXPORT int p11ticket_enable_ex(SSL_CTX *ctx, OSSL_LIB_CTX *libctx)
{
    struct p11t_lib_state *st;

    if (ctx == NULL)
        return p11ticket_enable(ctx);
    st = p11t_lib_state_get_or_new(ctx);
    if (st == NULL) {
        p11t_lib_log(P11TICKET_LOG_ERROR,
                     "p11ticket_enable_ex: cannot attach state to the SSL_CTX");
        return 0;
    }
    /* A different libctx than before invalidates the cached cipher. */
    if (st->libctx != libctx) {
        EVP_CIPHER *old = atomic_exchange(&st->cipher, NULL);

        EVP_CIPHER_free(old);
        st->libctx = libctx;
    }
    return p11ticket_enable(ctx);
}

P11TICKET_EXPORT int p11ticket_enable(SSL_CTX *ctx)
{
    struct p11t_lib_state *st;
    EVP_CIPHER *cipher;
    char status[PROVIDER_STRING_MAX];
    char key[PROVIDER_STRING_MAX];

    if (ctx == NULL) {
        p11t_lib_log(P11TICKET_LOG_ERROR, "p11ticket_enable: ctx is NULL");
        return 0;
    }
    st = p11t_lib_state_get_or_new(ctx);
    if (st == NULL) {
        p11t_lib_log(P11TICKET_LOG_ERROR,
                     "p11ticket_enable: cannot attach state to the SSL_CTX");
        return 0;
    }

    /* Install before probing: whatever the probe says, the server must not
     * fall back to libssl's in-memory ticket keys. */
    if (!SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, p11t_lib_ticket_cb)) {
        p11t_lib_log(P11TICKET_LOG_ERROR,
                     "p11ticket_enable: cannot install the ticket callback");
        return 0;
    }
    atomic_store(&st->enabled, true);

    ERR_set_mark();
    cipher = p11t_lib_state_cipher(st);
    ERR_pop_to_mark();
    if (cipher == NULL) {
        p11t_lib_log_problem(
            st, P11T_LIMIT_NONE, P11TICKET_LOG_ERROR, P11T_PROBLEM_NOT_LOADED,
            NOT_LOADED_MSG "; tickets refused, full handshakes only");
        return 0;
    }

    /* Asking for the status makes the provider initialise the token now
     * rather than in the first handshake. */
    ERR_set_mark();
    (void)provider_status(EVP_CIPHER_get0_provider(cipher), status,
                          sizeof(status), key, sizeof(key));
    ERR_pop_to_mark();

    if (strcmp(status, "ok") != 0) {
        /* status is the provider's one-line error, the same text its
         * errors carry, so the handshakes that fail for the same reason
         * do not repeat it. */
        p11t_lib_log_problem(
            st, P11T_LIMIT_NONE, P11TICKET_LOG_ERROR, status,
            "token not usable: %s; tickets refused until it is", status);
        return 0;
    }
    p11t_lib_problem_solved(st);
    if (key[0] == '\0')
        p11t_lib_log(P11TICKET_LOG_WARNING,
                     "the token holds no current ticket key (create one with "
                     "the p11ticket tool); tickets refused until it does");
    else
        p11t_lib_log(P11TICKET_LOG_INFO, "tickets enabled, current key %s",
                     key);
    return 1;
}

/*
 * auto-enable.  libcrypto runs the "new" callback of every SSL_CTX ex_data
 * index inside SSL_CTX_new_ex(), for every SSL_CTX of the process, and a
 * ticket callback installed there survives the rest of SSL_CTX_new_ex()
 * (docs/design.md, "Unmodified servers").  The callback only attaches the
 * state and installs the ticket callback: no fetch, no token.  The first
 * handshake does the rest, in whichever process serves it.
 */
static int auto_index = -1;
static pthread_once_t auto_once = PTHREAD_ONCE_INIT;

static void auto_new(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                     long argl, void *argp)
{
    SSL_CTX *ctx = parent;
    struct p11t_lib_state *st = ctx != NULL ? p11t_lib_state_get_or_new(ctx)
                                            : NULL;

    if (st == NULL) {
        p11t_lib_log(P11TICKET_LOG_ERROR,
                     "auto-enable: cannot attach state to a new SSL_CTX; "
                     "it keeps OpenSSL's in-memory ticket keys");
        return;
    }
    atomic_store(&st->automatic, true);
    if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, p11t_lib_ticket_cb))
        atomic_store(&st->enabled, true);
}

static void auto_register(void)
{
    if (!p11t_lib_indexes_ready())
        return;
    auto_index = CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL_CTX, 0, NULL,
                                         auto_new, NULL, NULL);
}

P11TICKET_EXPORT int p11ticket_enable_all(void)
{
    if (pthread_once(&auto_once, auto_register) != 0 || auto_index < 0) {
        p11t_lib_log(P11TICKET_LOG_ERROR,
                     "p11ticket_enable_all: cannot register the SSL_CTX "
                     "callback");
        return 0;
    }
    return 1;
}

P11TICKET_EXPORT int p11ticket_get_stats(SSL_CTX *ctx, p11ticket_stats *out)
{
    struct p11t_lib_state *st = p11t_lib_state_get(ctx);

    if (out == NULL)
        return 0;
    memset(out, 0, sizeof(*out));
    if (st == NULL || !atomic_load(&st->enabled))
        return 0;
    out->issued = atomic_load(&st->issued);
    out->resumed = atomic_load(&st->resumed);
    out->renewed = atomic_load(&st->renewed);
    out->unknown_key = atomic_load(&st->unknown_key);
    out->refused = atomic_load(&st->refused);
    out->errors = atomic_load(&st->errors);
    return 1;
}

static void copy_out(char *dst, size_t len, const char *src)
{
    if (dst != NULL && len > 0)
        snprintf(dst, len, "%s", src);
}

P11TICKET_EXPORT int p11ticket_status(SSL_CTX *ctx, char *status,
                                      size_t status_len, char *current_key_hex,
                                      size_t key_hex_len)
{
    struct p11t_lib_state *st = p11t_lib_state_get(ctx);
    OSSL_LIB_CTX *libctx = st != NULL ? st->libctx : NULL;
    EVP_CIPHER *cipher = st != NULL ? atomic_load(&st->cipher) : NULL;
    EVP_CIPHER *fetched = NULL;
    char sbuf[PROVIDER_STRING_MAX], kbuf[PROVIDER_STRING_MAX];

    copy_out(status, status_len, "");
    copy_out(current_key_hex, key_hex_len, "");

    ERR_set_mark();
    if (cipher == NULL)
        cipher = fetched =
            EVP_CIPHER_fetch(libctx, P11TICKET_CIPHER_NAME, NULL);
    if (cipher == NULL) {
        ERR_pop_to_mark();
        copy_out(status, status_len, NOT_LOADED_MSG);
        return 0;
    }
    (void)provider_status(EVP_CIPHER_get0_provider(cipher), sbuf, sizeof(sbuf),
                          kbuf, sizeof(kbuf));
    EVP_CIPHER_free(fetched);
    ERR_pop_to_mark();

    copy_out(status, status_len, sbuf);
    copy_out(current_key_hex, key_hex_len, kbuf);
    return 1;
}
