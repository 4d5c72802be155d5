/* SPDX-License-Identifier: Apache-2.0 */
/*
 * prov_hmac.c - the provider's "HMAC".
 *
 * libssl creates its ticket HMAC context itself (ssl_hmac_new ->
 * EVP_MAC_fetch(libctx, "HMAC", propq)), so the ticket MAC can only reach
 * the token if that fetch resolves here.  Routing by property query then
 * sends every other HMAC of the SSL_CTX (TLS 1.3 Finished, PSK binder,
 * TLS 1.2 CBC record MAC, and with default_properties also TLS1-PRF and
 * HKDF) through us too, so two modes:
 *
 *  - raw key (OSSL_MAC_PARAM_KEY or a key passed to init): an exact proxy of
 *    another provider's HMAC (the default provider's, or a FIPS
 *    provider's: p11t_prov_inner_hmac()); every call and parameter is
 *    forwarded.
 *  - key name (P11TICKET_PARAM_KEY_NAME): CKM_SHA256_HMAC in the token.  The
 *    input is buffered and signed in one C_Sign at final.
 *
 * In key-name mode a token failure yields a random tag instead of an error:
 * libssl turns a MAC failure into a fatal alert both when issuing
 * (construct_stateless_ticket) and when accepting (tls_decrypt_ticket),
 * while a tag that never verifies just means a full handshake.
 */
#include <string.h>
#include <strings.h>

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "p11ticket.h"
#include "prov.h"

#define TICKET_MAX 65536 /* a ticket extension cannot exceed 2^16 bytes */

static OSSL_FUNC_mac_newctx_fn hmac_new;
static OSSL_FUNC_mac_dupctx_fn hmac_dup;
static OSSL_FUNC_mac_freectx_fn hmac_free;
static OSSL_FUNC_mac_init_fn hmac_init;
static OSSL_FUNC_mac_update_fn hmac_update;
static OSSL_FUNC_mac_final_fn hmac_final;
static OSSL_FUNC_mac_gettable_ctx_params_fn hmac_gettable_ctx_params;
static OSSL_FUNC_mac_get_ctx_params_fn hmac_get_ctx_params;
static OSSL_FUNC_mac_settable_ctx_params_fn hmac_settable_ctx_params;
static OSSL_FUNC_mac_set_ctx_params_fn hmac_set_ctx_params;

typedef struct hmac_ctx {
    p11t_provctx *pc;
    EVP_MAC_CTX *inner; /* another provider's HMAC (raw-key mode); made on
                           first need, so ticket contexts never pay for it */
    int named;
    p11t_keyref key; /* key-name mode: named here, resolved by the first
                        C_Sign */
    /* Key-name mode: the data to sign.  buf is `small` until a ticket
     * outgrows it (sessions with client certificates), then the heap. */
    unsigned char *buf;
    size_t len, cap;
    unsigned char small[512];
} hmac_ctx;

static void *hmac_new(void *provctx)
{
    p11t_provctx *pc = provctx;
    hmac_ctx *c;

    /* Fail early, at fetch time, if there is nothing to proxy to. */
    if (p11t_prov_inner_hmac(pc) == NULL)
        return NULL;
    c = OPENSSL_zalloc(sizeof(*c));
    if (c == NULL)
        return NULL;
    c->pc = pc;
    c->buf = c->small;
    c->cap = sizeof(c->small);
    return c;
}

static EVP_MAC_CTX *inner(hmac_ctx *c)
{
    EVP_MAC *mac;

    if (c->inner != NULL)
        return c->inner;
    mac = p11t_prov_inner_hmac(c->pc);
    if (mac != NULL)
        c->inner = EVP_MAC_CTX_new(mac);
    return c->inner;
}

static void hmac_free(void *vctx)
{
    hmac_ctx *c = vctx;

    if (c == NULL)
        return;
    EVP_MAC_CTX_free(c->inner);
    OPENSSL_cleanse(c->buf, c->len); /* final already cleansed what it signed */
    if (c->buf != c->small)
        OPENSSL_free(c->buf);
    OPENSSL_free(c);
}

static void *hmac_dup(void *vsrc)
{
    const hmac_ctx *src = vsrc;
    hmac_ctx *c = OPENSSL_memdup(src, sizeof(*src));

    if (c == NULL)
        return NULL;
    c->buf = c->small;
    c->cap = sizeof(c->small);
    c->inner = NULL;
    if (src->inner != NULL &&
        (c->inner = EVP_MAC_CTX_dup(src->inner)) == NULL) {
        OPENSSL_clear_free(c, sizeof(*c));
        return NULL;
    }
    if (src->buf != src->small) {
        c->buf = OPENSSL_memdup(src->buf, src->cap);
        if (c->buf == NULL) {
            c->buf = c->small;
            c->len = 0;
            hmac_free(c);
            return NULL;
        }
        c->cap = src->cap;
    }
    return c;
}

static int digest_is_sha256(const char *d)
{
    return strcasecmp(d, "SHA256") == 0 || strcasecmp(d, "SHA2-256") == 0 ||
           strcasecmp(d, "SHA-256") == 0;
}

static int hmac_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    hmac_ctx *c = vctx;
    const OSSL_PARAM *p;
    uint8_t name[P11T_NAME_LEN];
    int got = 0;

    if (params == NULL)
        return 1;
    if (!p11t_prov_key_name_param(c->pc, params, name, &got))
        return 0;
    if (got) {
        c->named = 1;
        p11t_keyref_set_name(&c->key, name);
    }
    if (OSSL_PARAM_locate_const(params, OSSL_MAC_PARAM_KEY) != NULL)
        c->named = 0; /* a raw key always means proxy mode */
    if (c->named &&
        (p = OSSL_PARAM_locate_const(params, OSSL_MAC_PARAM_DIGEST)) != NULL) {
        if (p->data_type != OSSL_PARAM_UTF8_STRING ||
            !digest_is_sha256(p->data)) {
            p11t_prov_raise(c->pc, P11TICKET_R_BAD_PARAM,
                            "token HMAC keys only do SHA-256");
            return 0;
        }
    }
    /* Ticket contexts keep no inner HMAC: there is nothing to forward. */
    if (c->named && OSSL_PARAM_locate_const(params, OSSL_MAC_PARAM_KEY) == NULL)
        return 1;
    /* The inner HMAC ignores names it does not know, ours included. */
    return inner(c) != NULL && EVP_MAC_CTX_set_params(c->inner, params);
}

static int hmac_init(void *vctx, const unsigned char *key, size_t keylen,
                     const OSSL_PARAM params[])
{
    hmac_ctx *c = vctx;

    if (!hmac_set_ctx_params(c, params))
        return 0;
    if (key != NULL)
        c->named = 0;
    if (!c->named)
        return inner(c) != NULL && EVP_MAC_init(c->inner, key, keylen, NULL);
    OPENSSL_cleanse(c->buf, c->len);
    c->len = 0;
    return 1;
}

static int hmac_update(void *vctx, const unsigned char *in, size_t inl)
{
    hmac_ctx *c = vctx;

    if (!c->named)
        return inner(c) != NULL && EVP_MAC_update(c->inner, in, inl);
    if (inl > TICKET_MAX - c->len) {
        p11t_prov_raise(c->pc, P11TICKET_R_BAD_PARAM, "ticket too long");
        return 0;
    }
    if (c->len + inl > c->cap) {
        size_t cap = (c->len + inl) * 2;
        unsigned char *b = OPENSSL_malloc(cap);

        if (b == NULL)
            return 0;
        memcpy(b, c->buf, c->len);
        OPENSSL_cleanse(c->buf, c->len);
        if (c->buf != c->small)
            OPENSSL_free(c->buf);
        c->buf = b;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, in, inl);
    c->len += inl;
    return 1;
}

static int hmac_final(void *vctx, unsigned char *out, size_t *outl,
                      size_t outsize)
{
    hmac_ctx *c = vctx;
    p11t_err e = {0};

    if (!c->named)
        return inner(c) != NULL && EVP_MAC_final(c->inner, out, outl, outsize);
    if (outsize < P11T_HMAC_LEN) {
        p11t_prov_raise(c->pc, P11TICKET_R_BAD_PARAM,
                        "output buffer too small");
        return 0;
    }
    if (p11t_hsm_hmac(c->pc->hsm, &c->key, c->buf, c->len, out, &e) != CKR_OK &&
        RAND_bytes_ex(c->pc->libctx, out, P11T_HMAC_LEN, 0) <= 0)
        memset(out, 0xA5, P11T_HMAC_LEN); /* still never a valid tag */
    *outl = P11T_HMAC_LEN;
    OPENSSL_cleanse(c->buf, c->len);
    c->len = 0;
    return 1;
}

static const OSSL_PARAM hmac_gettable[] = {
    OSSL_PARAM_size_t(OSSL_MAC_PARAM_SIZE, NULL),
    OSSL_PARAM_size_t(OSSL_MAC_PARAM_BLOCK_SIZE, NULL),
    OSSL_PARAM_int(P11TICKET_PARAM_ROUTED, NULL), OSSL_PARAM_END};

static const OSSL_PARAM *hmac_gettable_ctx_params(void *vctx, void *provctx)
{
    return hmac_gettable;
}

static int hmac_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    hmac_ctx *c = vctx;
    OSSL_PARAM *p;

    if ((p = OSSL_PARAM_locate(params, P11TICKET_PARAM_ROUTED)) != NULL &&
        !OSSL_PARAM_set_int(p, 1))
        return 0;
    /* A question about routing alone needs no inner HMAC. */
    if (!c->named && (p == NULL || params[1].key != NULL))
        return inner(c) != NULL && EVP_MAC_CTX_get_params(c->inner, params);
    if ((p = OSSL_PARAM_locate(params, OSSL_MAC_PARAM_SIZE)) != NULL &&
        !OSSL_PARAM_set_size_t(p, P11T_HMAC_LEN))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_MAC_PARAM_BLOCK_SIZE)) != NULL &&
        !OSSL_PARAM_set_size_t(p, 64))
        return 0;
    return 1;
}

static const OSSL_PARAM hmac_settable[] = {
    OSSL_PARAM_utf8_string(OSSL_MAC_PARAM_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_MAC_PARAM_PROPERTIES, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_MAC_PARAM_KEY, NULL, 0),
    OSSL_PARAM_int(OSSL_MAC_PARAM_DIGEST_NOINIT, NULL),
    OSSL_PARAM_int(OSSL_MAC_PARAM_DIGEST_ONESHOT, NULL),
    OSSL_PARAM_size_t(OSSL_MAC_PARAM_TLS_DATA_SIZE, NULL),
    OSSL_PARAM_octet_string(P11TICKET_PARAM_KEY_NAME, NULL, 0),
    OSSL_PARAM_END};

static const OSSL_PARAM *hmac_settable_ctx_params(void *vctx, void *provctx)
{
    return hmac_settable;
}

const OSSL_DISPATCH p11t_prov_hmac_functions[] = {
    {OSSL_FUNC_MAC_NEWCTX, (void (*)(void))hmac_new},
    {OSSL_FUNC_MAC_DUPCTX, (void (*)(void))hmac_dup},
    {OSSL_FUNC_MAC_FREECTX, (void (*)(void))hmac_free},
    {OSSL_FUNC_MAC_INIT, (void (*)(void))hmac_init},
    {OSSL_FUNC_MAC_UPDATE, (void (*)(void))hmac_update},
    {OSSL_FUNC_MAC_FINAL, (void (*)(void))hmac_final},
    {OSSL_FUNC_MAC_GETTABLE_CTX_PARAMS,
     (void (*)(void))hmac_gettable_ctx_params},
    {OSSL_FUNC_MAC_GET_CTX_PARAMS, (void (*)(void))hmac_get_ctx_params},
    {OSSL_FUNC_MAC_SETTABLE_CTX_PARAMS,
     (void (*)(void))hmac_settable_ctx_params},
    {OSSL_FUNC_MAC_SET_CTX_PARAMS, (void (*)(void))hmac_set_ctx_params},
    {0, NULL}};
