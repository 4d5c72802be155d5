/* SPDX-License-Identifier: Apache-2.0 */
/*
 * prov_cipher.c - P11TICKET-AES-CBC: AES-CBC with PKCS#7 padding computed
 * in the token with a named key (CKM_AES_CBC_PAD, or CBC built on
 * CKM_AES_ECB for tokens without it: aes-mechanism, hsm/keys.c).
 *
 * Never registered under a standard name: SoftHSM runs OpenSSL inside this
 * process, and a standard "AES-256-CBC" from us could route its own AES
 * back into the token (docs/design.md, "Recursion and load order").
 *
 * The whole message must arrive in ONE update call, which is what libssl
 * does for tickets; that call makes one C_Encrypt / C_Decrypt, the cheapest
 * way through the token (on the ECB path one C_Decrypt, or one
 * C_EncryptUpdate per block).  When encrypting, update returns all but the
 * last ciphertext block and final returns that block: construct_stateless_ticket
 * hands both lengths to WPACKET_allocate_bytes(), which rejects 0.  When
 * decrypting, update returns everything and final nothing.  Failures are
 * shaped by what libssl does with them:
 *  - encrypt: construct_stateless_ticket turns any failure into a fatal
 *    alert, so a token failure emits random bytes instead (the ticket never
 *    decrypts; the client simply gets a full handshake next time).
 *  - decrypt: tls_decrypt_ticket treats a DecryptUpdate failure as fatal but
 *    a DecryptFinal failure as "no resumption", so update swallows the
 *    token's error and final reports it.
 */
#include <string.h>
#include <time.h>

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "p11ticket.h"
#include "prov.h"

#define BLOCK 16
#define DEFAULT_KEYLEN 32

static OSSL_FUNC_cipher_newctx_fn cbc_new;
static OSSL_FUNC_cipher_freectx_fn cbc_free;
static OSSL_FUNC_cipher_dupctx_fn cbc_dup;
static OSSL_FUNC_cipher_encrypt_init_fn cbc_einit;
static OSSL_FUNC_cipher_decrypt_init_fn cbc_dinit;
static OSSL_FUNC_cipher_update_fn cbc_update;
static OSSL_FUNC_cipher_final_fn cbc_final;
static OSSL_FUNC_cipher_get_params_fn cbc_get_params;
static OSSL_FUNC_cipher_gettable_params_fn cbc_gettable_params;
static OSSL_FUNC_cipher_get_ctx_params_fn cbc_get_ctx_params;
static OSSL_FUNC_cipher_gettable_ctx_params_fn cbc_gettable_ctx_params;
static OSSL_FUNC_cipher_set_ctx_params_fn cbc_set_ctx_params;
static OSSL_FUNC_cipher_settable_ctx_params_fn cbc_settable_ctx_params;

typedef struct cbc_ctx {
    p11t_provctx *pc;
    int enc;
    int have_name, have_iv, ready;
    uint8_t name[P11T_NAME_LEN];
    p11t_keyref key; /* resolved at init, used by the single update */
    uint8_t iv[P11T_IV_LEN];
    size_t keylen;
    int renew;
    int updated; /* the single update happened */
    unsigned char last[BLOCK]; /* encrypt: last ciphertext block, for final */
    int have_last;
    int failed;  /* decrypt: token refused; final reports it */
} cbc_ctx;

static void *cbc_new(void *provctx)
{
    cbc_ctx *c = OPENSSL_zalloc(sizeof(*c));

    if (c == NULL)
        return NULL;
    c->pc = provctx;
    c->keylen = DEFAULT_KEYLEN;
    return c;
}

static void cbc_free(void *vctx)
{
    OPENSSL_clear_free(vctx, sizeof(cbc_ctx));
}

static void *cbc_dup(void *vctx)
{
    return OPENSSL_memdup(vctx, sizeof(cbc_ctx));
}

static int cbc_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    cbc_ctx *c = vctx;
    const OSSL_PARAM *p;
    unsigned int pad;

    if (params == NULL)
        return 1;
    if (!p11t_prov_key_name_param(c->pc, params, c->name, &c->have_name))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_CIPHER_PARAM_PADDING)) !=
        NULL) {
        if (!OSSL_PARAM_get_uint(p, &pad) || pad != 1) {
            p11t_prov_raise(c->pc, P11TICKET_R_UNSUPPORTED,
                            "padding cannot be turned off");
            return 0;
        }
    }
    return 1;
}

static int cbc_init(cbc_ctx *c, int enc, const unsigned char *key,
                    const unsigned char *iv, size_t ivlen,
                    const OSSL_PARAM params[])
{
    int64_t now = (int64_t)time(NULL);
    p11t_hsm *h = c->pc->hsm;
    p11t_state st;
    p11t_err e = {0};
    CK_RV rv;

    c->enc = enc;
    c->ready = c->updated = c->failed = c->renew = c->have_last = 0;
    /* Every init selects its key anew: the name passed with this init, or
     * (encrypting) the current key; a re-init that reuses the context
     * never inherits the previous one. */
    c->have_name = 0;
    if (key != NULL) {
        p11t_prov_raise(c->pc, P11TICKET_R_UNSUPPORTED,
                        "raw keys are not accepted: this cipher only uses "
                        "token keys selected by " P11TICKET_PARAM_KEY_NAME);
        return 0;
    }
    if (iv != NULL) {
        if (ivlen != P11T_IV_LEN) {
            p11t_prov_raise(c->pc, P11TICKET_R_BAD_PARAM,
                            "IV must be 16 bytes");
            return 0;
        }
        memcpy(c->iv, iv, P11T_IV_LEN);
        c->have_iv = 1;
    }
    if (!cbc_set_ctx_params(c, params))
        return 0;
    if (!enc && !c->have_name) {
        p11t_prov_raise(c->pc, P11TICKET_R_BAD_PARAM,
                        "decryption needs " P11TICKET_PARAM_KEY_NAME);
        return 0;
    }
    /* One lookup per ticket: the update below uses the resolved key. */
    if (c->have_name)
        rv = p11t_hsm_resolve(h, c->name, &c->key, &e);
    else /* no name: encrypt under the key every server agrees on now */
        rv = p11t_hsm_resolve_current(h, now, &c->key, &e);
    if (rv != CKR_OK) {
        p11t_prov_raise_hsm(c->pc, &e);
        return 0;
    }
    memcpy(c->name, c->key.info.name, P11T_NAME_LEN);
    c->have_name = 1;
    st = p11t_lifecycle_state(&c->key.info.times, now);
    if (st == P11T_STATE_EXPIRED || (enc && st != P11T_STATE_ACTIVE)) {
        char hex[33];

        p11t_hex(c->name, hex);
        p11t_prov_raise(c->pc, P11TICKET_R_KEY_EXPIRED, "key %s is %s", hex,
                        p11t_state_name(st));
        return 0;
    }
    c->keylen = c->key.info.aes_len;
    /* Renew unless this is the key we would issue under right now. */
    if (!enc)
        c->renew = st != P11T_STATE_ACTIVE ||
                   !p11t_hsm_is_current(h, &c->key, now);
    c->ready = 1;
    return 1;
}

static int cbc_einit(void *vctx, const unsigned char *key, size_t keylen,
                     const unsigned char *iv, size_t ivlen,
                     const OSSL_PARAM params[])
{
    return cbc_init(vctx, 1, key, iv, ivlen, params);
}

static int cbc_dinit(void *vctx, const unsigned char *key, size_t keylen,
                     const unsigned char *iv, size_t ivlen,
                     const OSSL_PARAM params[])
{
    return cbc_init(vctx, 0, key, iv, ivlen, params);
}

static int cbc_update(void *vctx, unsigned char *out, size_t *outl,
                      size_t outsize, const unsigned char *in, size_t inl)
{
    cbc_ctx *c = vctx;
    p11t_err e = {0};
    size_t n = outsize;

    if (!c->ready || !c->have_iv || c->updated) {
        p11t_prov_raise(c->pc, P11TICKET_R_UNSUPPORTED,
                        c->updated ? "only one update per message is supported"
                                   : "not initialised with a key name and IV");
        return 0;
    }
    c->updated = 1;
    if (c->enc) {
        size_t padded = inl + BLOCK - inl % BLOCK;

        if (outsize < padded) {
            p11t_prov_raise(c->pc, P11TICKET_R_BAD_PARAM,
                            "output buffer too small");
            return 0;
        }
        if (p11t_hsm_encrypt(c->pc->hsm, &c->key, c->iv, in, inl, out, &n,
                             &e) != CKR_OK) {
            if (RAND_bytes_ex(c->pc->libctx, out, padded, 0) <= 0)
                memset(out, 0, padded);
            n = padded;
        }
        memcpy(c->last, out + n - BLOCK, BLOCK);
        c->have_last = 1;
        *outl = n - BLOCK;
        return 1;
    }
    *outl = 0;
    if (inl == 0 || inl % BLOCK != 0 || outsize < inl ||
        p11t_hsm_decrypt(c->pc->hsm, &c->key, c->iv, in, inl, out, &n, &e) !=
            CKR_OK) {
        c->failed = 1;
        return 1;
    }
    *outl = n;
    return 1;
}

static int cbc_final(void *vctx, unsigned char *out, size_t *outl,
                     size_t outsize)
{
    cbc_ctx *c = vctx;

    *outl = 0;
    if (!c->ready)
        return 0;
    if (c->enc) {
        size_t n = 0;

        if (!c->updated &&
            !cbc_update(c, out, &n, outsize, (const unsigned char *)"", 0))
            return 0;
        if (!c->have_last || outsize < BLOCK)
            return 0;
        memcpy(out, c->last, BLOCK);
        c->have_last = 0;
        *outl = BLOCK;
        return 1;
    }
    if (!c->updated || c->failed)
        return 0; /* "no resumption"; see the top of the file */
    return 1;
}

static const OSSL_PARAM cbc_gettable[] = {
    OSSL_PARAM_uint(OSSL_CIPHER_PARAM_MODE, NULL),
    OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, NULL),
    OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_IVLEN, NULL),
    OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_BLOCK_SIZE, NULL),
    OSSL_PARAM_int(OSSL_CIPHER_PARAM_AEAD, NULL),
    OSSL_PARAM_int(OSSL_CIPHER_PARAM_CUSTOM_IV, NULL),
    OSSL_PARAM_int(OSSL_CIPHER_PARAM_CTS, NULL),
    OSSL_PARAM_int(OSSL_CIPHER_PARAM_TLS1_MULTIBLOCK, NULL),
    OSSL_PARAM_int(OSSL_CIPHER_PARAM_HAS_RAND_KEY, NULL),
    OSSL_PARAM_END};

static const OSSL_PARAM *cbc_gettable_params(void *provctx)
{
    return cbc_gettable;
}

static int cbc_get_params(OSSL_PARAM params[])
{
    static const char *const zero[] = {
        OSSL_CIPHER_PARAM_AEAD, OSSL_CIPHER_PARAM_CUSTOM_IV,
        OSSL_CIPHER_PARAM_CTS, OSSL_CIPHER_PARAM_TLS1_MULTIBLOCK,
        OSSL_CIPHER_PARAM_HAS_RAND_KEY, NULL};
    OSSL_PARAM *p;

    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_MODE)) != NULL &&
        !OSSL_PARAM_set_uint(p, EVP_CIPH_CBC_MODE))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_KEYLEN)) != NULL &&
        !OSSL_PARAM_set_size_t(p, DEFAULT_KEYLEN))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_IVLEN)) != NULL &&
        !OSSL_PARAM_set_size_t(p, P11T_IV_LEN))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_BLOCK_SIZE)) != NULL &&
        !OSSL_PARAM_set_size_t(p, BLOCK))
        return 0;
    for (size_t i = 0; zero[i] != NULL; i++)
        if ((p = OSSL_PARAM_locate(params, zero[i])) != NULL &&
            !OSSL_PARAM_set_int(p, 0))
            return 0;
    return 1;
}

static const OSSL_PARAM cbc_gettable_ctx[] = {
    OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, NULL),
    OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_IVLEN, NULL),
    OSSL_PARAM_uint(OSSL_CIPHER_PARAM_PADDING, NULL),
    OSSL_PARAM_octet_string(P11TICKET_PARAM_KEY_NAME, NULL, 0),
    OSSL_PARAM_int(P11TICKET_PARAM_KEY_RENEW, NULL),
    OSSL_PARAM_END};

static const OSSL_PARAM *cbc_gettable_ctx_params(void *vctx, void *provctx)
{
    return cbc_gettable_ctx;
}

static int cbc_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    cbc_ctx *c = vctx;
    OSSL_PARAM *p;

    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_KEYLEN)) != NULL &&
        !OSSL_PARAM_set_size_t(p, c->keylen))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_IVLEN)) != NULL &&
        !OSSL_PARAM_set_size_t(p, P11T_IV_LEN))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_PADDING)) != NULL &&
        !OSSL_PARAM_set_uint(p, 1))
        return 0;
    if ((p = OSSL_PARAM_locate(params, P11TICKET_PARAM_KEY_NAME)) != NULL) {
        if (!c->have_name) {
            p11t_prov_raise(c->pc, P11TICKET_R_BAD_PARAM,
                            "no key selected yet");
            return 0;
        }
        if (!OSSL_PARAM_set_octet_string(p, c->name, P11T_NAME_LEN))
            return 0;
    }
    if ((p = OSSL_PARAM_locate(params, P11TICKET_PARAM_KEY_RENEW)) != NULL &&
        !OSSL_PARAM_set_int(p, c->renew))
        return 0;
    return 1;
}

static const OSSL_PARAM cbc_settable_ctx[] = {
    OSSL_PARAM_uint(OSSL_CIPHER_PARAM_PADDING, NULL),
    OSSL_PARAM_octet_string(P11TICKET_PARAM_KEY_NAME, NULL, 0),
    OSSL_PARAM_END};

static const OSSL_PARAM *cbc_settable_ctx_params(void *vctx, void *provctx)
{
    return cbc_settable_ctx;
}

const OSSL_DISPATCH p11t_prov_cipher_functions[] = {
    {OSSL_FUNC_CIPHER_NEWCTX, (void (*)(void))cbc_new},
    {OSSL_FUNC_CIPHER_FREECTX, (void (*)(void))cbc_free},
    {OSSL_FUNC_CIPHER_DUPCTX, (void (*)(void))cbc_dup},
    {OSSL_FUNC_CIPHER_ENCRYPT_INIT, (void (*)(void))cbc_einit},
    {OSSL_FUNC_CIPHER_DECRYPT_INIT, (void (*)(void))cbc_dinit},
    {OSSL_FUNC_CIPHER_UPDATE, (void (*)(void))cbc_update},
    {OSSL_FUNC_CIPHER_FINAL, (void (*)(void))cbc_final},
    {OSSL_FUNC_CIPHER_GET_PARAMS, (void (*)(void))cbc_get_params},
    {OSSL_FUNC_CIPHER_GETTABLE_PARAMS, (void (*)(void))cbc_gettable_params},
    {OSSL_FUNC_CIPHER_GET_CTX_PARAMS, (void (*)(void))cbc_get_ctx_params},
    {OSSL_FUNC_CIPHER_GETTABLE_CTX_PARAMS,
     (void (*)(void))cbc_gettable_ctx_params},
    {OSSL_FUNC_CIPHER_SET_CTX_PARAMS, (void (*)(void))cbc_set_ctx_params},
    {OSSL_FUNC_CIPHER_SETTABLE_CTX_PARAMS,
     (void (*)(void))cbc_settable_ctx_params},
    {0, NULL}};
