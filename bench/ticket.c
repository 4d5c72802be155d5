/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ticket.c - one session ticket sealed and opened in several ways.
 *
 * Every way produces the same bytes libssl would put on the wire
 * (construct_stateless_ticket / tls_decrypt_ticket; docs/design.md,
 * "libssl's ticket path"):
 *     key_name(16) | IV(16) | AES-256-CBC-PAD(200-byte session) = 208 bytes |
 *     HMAC-SHA256(key_name | IV | ciphertext)
 *
 *  provider  the EVP calls the ticket callback (lib/ticket_cb.c) and libssl
 *            make, in their order, on contexts created per ticket as libssl
 *            creates them: seal = EncryptInit without a name, read the chosen
 *            name, MAC init with name and digest, one EncryptUpdate + Final,
 *            one MAC update + final; open = DecryptInit with the name, MAC
 *            init, the renew query, MAC, compare, DecryptUpdate + Final.
 *  floor     the same keys on the bare module: C_EncryptInit + C_Encrypt and
 *            C_SignInit + C_Sign (seal); C_SignInit + C_Sign and
 *            C_DecryptInit + C_Decrypt (open).  No provider, no EVP.  When
 *            the provider would build CBC on CKM_AES_ECB (no CBC_PAD in the
 *            module's list, as through p11-kit-client.so, or aes-mechanism =
 *            ecb), so does the floor, with the same calls as hsm/keys.c:
 *            seal = C_EncryptInit(ECB), one C_EncryptUpdate per block,
 *            C_EncryptFinal; open = C_DecryptInit(ECB) + one C_Decrypt.  On
 *            token objects, on session copies (what p11ticket uses), or on
 *            random public session keys (a reference only: see bench.h).
 *  inmem     OpenSSL's AES-256-CBC and HMAC-SHA256 with raw keys, the way
 *            libssl's built-in ticket keys work.
 *
 * IVs come from a table filled once, so no variant pays for randomness.
 * bench_floor_token_work() is the floor's token calls alone, for the TLS
 * floor server (tls.c).
 */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rand.h>

#include <p11-kit/uri.h>

#include "bench.h"
#include "p11ticket.h"

/* ---- the provider ------------------------------------------------------------ */

static int provider_status(EVP_CIPHER *cipher, char *buf, size_t len)
{
    OSSL_PARAM params[2];

    memset(buf, 0, len);
    params[0] = OSSL_PARAM_construct_utf8_string(P11TICKET_PARAM_STATUS, buf,
                                                 len - 1);
    params[1] = OSSL_PARAM_construct_end();
    return OSSL_PROVIDER_get_params(EVP_CIPHER_get0_provider(cipher), params) &&
           OSSL_PARAM_modified(&params[0]);
}

int bench_prov_load(bench_prov *p, const char *cnf, char *err, size_t errlen)
{
    EVP_MAC_CTX *h;
    OSSL_PARAM params[2];
    int routed = 0;
    char status[400];

    memset(p, 0, sizeof(*p));
    p->libctx = OSSL_LIB_CTX_new();
    if (p->libctx == NULL || !OSSL_LIB_CTX_load_config(p->libctx, cnf)) {
        bench_ossl_err(err, errlen, cnf);
        return 0;
    }
    p->cipher = EVP_CIPHER_fetch(p->libctx, P11TICKET_CIPHER_NAME, NULL);
    if (p->cipher == NULL) {
        bench_ossl_err(err, errlen, "the p11ticket provider is not loaded by the "
                 "configuration (EVP_CIPHER_fetch " P11TICKET_CIPHER_NAME ")");
        return 0;
    }
    /* What libssl's ssl_hmac_new() fetches on a p11ticket_SSL_CTX_new() ctx. */
    p->mac = EVP_MAC_fetch(p->libctx, "HMAC", P11TICKET_PROPQ);
    h = p->mac != NULL ? EVP_MAC_CTX_new(p->mac) : NULL;
    params[0] = OSSL_PARAM_construct_int(P11TICKET_PARAM_ROUTED, &routed);
    params[1] = OSSL_PARAM_construct_end();
    if (h == NULL || !EVP_MAC_CTX_get_params(h, params) || routed != 1) {
        EVP_MAC_CTX_free(h);
        bench_ossl_err(err, errlen, "HMAC with " P11TICKET_PROPQ " is not the "
                 "provider's");
        return 0;
    }
    EVP_MAC_CTX_free(h);
    /* Asking for the status logs the provider in and scans the token. */
    if (!provider_status(p->cipher, status, sizeof(status)) ||
        strcmp(status, "ok") != 0) {
        snprintf(err, errlen, "provider status: %s", status);
        ERR_clear_error();
        return 0;
    }
    return 1;
}

void bench_prov_free(bench_prov *p)
{
    EVP_CIPHER_free(p->cipher);
    EVP_MAC_free(p->mac);
    /* Provider teardown makes no PKCS#11 call; its sessions stay open. */
    OSSL_LIB_CTX_free(p->libctx);
    memset(p, 0, sizeof(*p));
}

static int mac_init_named(EVP_MAC_CTX *h, unsigned char *name)
{
    char digest[] = "SHA256";
    OSSL_PARAM params[3];

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[1] = OSSL_PARAM_construct_octet_string(P11TICKET_PARAM_KEY_NAME, name,
                                                  P11T_NAME_LEN);
    params[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_init(h, NULL, 0, params);
}

/* libssl's part after the callback, common to the provider and inmem ways. */
static int seal_body(EVP_CIPHER_CTX *c, EVP_MAC_CTX *h, const uint8_t *in,
                     uint8_t t[BENCH_TICKET_LEN])
{
    int l1 = 0, l2 = 0;
    size_t tl = 0;

    return EVP_EncryptUpdate(c, t + 32, &l1, in, BENCH_SESSION_LEN) &&
           EVP_EncryptFinal(c, t + 32 + l1, &l2) && l1 + l2 == BENCH_CT_LEN &&
           EVP_MAC_update(h, t, BENCH_MAC_OFF) &&
           EVP_MAC_final(h, t + BENCH_MAC_OFF, &tl, P11T_HMAC_LEN) &&
           tl == P11T_HMAC_LEN;
}

static int open_body(EVP_CIPHER_CTX *c, EVP_MAC_CTX *h,
                     const uint8_t t[BENCH_TICKET_LEN], uint8_t *out,
                     size_t *outl)
{
    unsigned char tag[EVP_MAX_MD_SIZE];
    size_t tl = 0;
    int l1 = 0, l2 = 0;

    /* tls_decrypt_ticket asks for both sizes before it trusts anything. */
    if (EVP_MAC_CTX_get_mac_size(h) != P11T_HMAC_LEN ||
        EVP_CIPHER_CTX_get_iv_length(c) != P11T_IV_LEN)
        return 0;
    if (!EVP_MAC_update(h, t, BENCH_MAC_OFF) ||
        !EVP_MAC_final(h, tag, &tl, sizeof(tag)) ||
        CRYPTO_memcmp(tag, t + BENCH_MAC_OFF, P11T_HMAC_LEN) != 0)
        return 0;
    if (!EVP_DecryptUpdate(c, out, &l1, t + 32, BENCH_CT_LEN) ||
        !EVP_DecryptFinal(c, out + l1, &l2))
        return 0;
    *outl = (size_t)(l1 + l2);
    return 1;
}

static int prov_seal(void *vctx, const uint8_t iv[P11T_IV_LEN],
                     const uint8_t *in, uint8_t t[BENCH_TICKET_LEN])
{
    bench_prov *p = vctx;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    EVP_MAC_CTX *h = EVP_MAC_CTX_new(p->mac);
    OSSL_PARAM params[2];
    int ok;

    params[0] = OSSL_PARAM_construct_octet_string(P11TICKET_PARAM_KEY_NAME, t,
                                                  P11T_NAME_LEN);
    params[1] = OSSL_PARAM_construct_end();
    ok = c != NULL && h != NULL &&
         EVP_EncryptInit_ex2(c, p->cipher, NULL, iv, NULL) &&
         EVP_CIPHER_CTX_get_params(c, params) &&
         params[0].return_size == P11T_NAME_LEN && mac_init_named(h, t);
    if (ok) {
        memcpy(t + P11T_NAME_LEN, iv, P11T_IV_LEN);
        ok = seal_body(c, h, in, t);
    }
    EVP_MAC_CTX_free(h);
    EVP_CIPHER_CTX_free(c);
    return ok;
}

static int prov_open(void *vctx, const uint8_t t[BENCH_TICKET_LEN],
                     uint8_t *out, size_t *outl)
{
    bench_prov *p = vctx;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    EVP_MAC_CTX *h = EVP_MAC_CTX_new(p->mac);
    unsigned char name[P11T_NAME_LEN];
    OSSL_PARAM params[2];
    int renew = 1, ok;

    memcpy(name, t, sizeof(name));
    params[0] = OSSL_PARAM_construct_octet_string(P11TICKET_PARAM_KEY_NAME, name,
                                                  sizeof(name));
    params[1] = OSSL_PARAM_construct_end();
    ok = c != NULL && h != NULL &&
         EVP_DecryptInit_ex2(c, p->cipher, NULL, t + P11T_NAME_LEN, params) &&
         mac_init_named(h, name);
    if (ok) {
        /* The callback's renew question (ticket_cb.c key_renew). */
        params[0] = OSSL_PARAM_construct_int(P11TICKET_PARAM_KEY_RENEW, &renew);
        ok = EVP_CIPHER_CTX_get_params(c, params) && open_body(c, h, t, out, outl);
    }
    EVP_MAC_CTX_free(h);
    EVP_CIPHER_CTX_free(c);
    return ok;
}

void bench_way_prov(bench_way *w, const char *name, bench_prov *p)
{
    w->name = name;
    w->seal = prov_seal;
    w->open = prov_open;
    w->ctx = p;
}

/* ---- in memory -------------------------------------------------------------- */

static const uint8_t inmem_name[P11T_NAME_LEN] = "inmem-bench-key";

int bench_inmem_init(bench_inmem *m, OSSL_LIB_CTX *libctx, char *err,
                     size_t errlen)
{
    memset(m, 0, sizeof(*m));
    m->cipher = EVP_CIPHER_fetch(libctx, "AES-256-CBC", "provider=default");
    m->mac = EVP_MAC_fetch(libctx, "HMAC", "provider=default");
    if (m->cipher == NULL || m->mac == NULL ||
        RAND_bytes(m->aes, sizeof(m->aes)) != 1 ||
        RAND_bytes(m->hmac, sizeof(m->hmac)) != 1) {
        bench_ossl_err(err, errlen, "in-memory AES-256-CBC/HMAC");
        return 0;
    }
    return 1;
}

void bench_inmem_free(bench_inmem *m)
{
    EVP_CIPHER_free(m->cipher);
    EVP_MAC_free(m->mac);
    OPENSSL_cleanse(m, sizeof(*m));
}

/* ssl_hmac_init(): HMAC with the digest by name, the key raw. */
int bench_hmac_init(EVP_MAC_CTX *h, const uint8_t *key, size_t keylen)
{
    char digest[] = "SHA256";
    OSSL_PARAM params[2];

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    return EVP_MAC_init(h, key, keylen, params);
}

static int inmem_seal(void *vctx, const uint8_t iv[P11T_IV_LEN],
                      const uint8_t *in, uint8_t t[BENCH_TICKET_LEN])
{
    bench_inmem *m = vctx;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    EVP_MAC_CTX *h = EVP_MAC_CTX_new(m->mac);
    int ok;

    memcpy(t, inmem_name, P11T_NAME_LEN);
    memcpy(t + P11T_NAME_LEN, iv, P11T_IV_LEN);
    ok = c != NULL && h != NULL &&
         EVP_EncryptInit_ex2(c, m->cipher, m->aes, iv, NULL) &&
         bench_hmac_init(h, m->hmac, sizeof(m->hmac)) && seal_body(c, h, in, t);
    EVP_MAC_CTX_free(h);
    EVP_CIPHER_CTX_free(c);
    return ok;
}

static int inmem_open(void *vctx, const uint8_t t[BENCH_TICKET_LEN],
                      uint8_t *out, size_t *outl)
{
    bench_inmem *m = vctx;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    EVP_MAC_CTX *h = EVP_MAC_CTX_new(m->mac);
    int ok;

    ok = c != NULL && h != NULL &&
         EVP_DecryptInit_ex2(c, m->cipher, m->aes, t + P11T_NAME_LEN, NULL) &&
         bench_hmac_init(h, m->hmac, sizeof(m->hmac)) && open_body(c, h, t, out, outl);
    EVP_MAC_CTX_free(h);
    EVP_CIPHER_CTX_free(c);
    return ok;
}

void bench_way_inmem(bench_way *w, const char *name, bench_inmem *m)
{
    w->name = name;
    w->seal = inmem_seal;
    w->open = inmem_open;
    w->ctx = m;
}

/* ---- the bare PKCS#11 floor ------------------------------------------------- */

static CK_RV find_slot(CK_FUNCTION_LIST_PTR f, const char *uri_text,
                       CK_SLOT_ID *slot)
{
    P11KitUri *uri = p11_kit_uri_new();
    CK_SLOT_ID slots[64];
    CK_ULONG n = 64;
    CK_RV rv;
    int found = 0;

    if (uri == NULL)
        return CKR_HOST_MEMORY;
    if (p11_kit_uri_parse(uri_text, P11_KIT_URI_FOR_TOKEN | P11_KIT_URI_FOR_SLOT,
                          uri) != P11_KIT_URI_OK) {
        p11_kit_uri_free(uri);
        return CKR_ARGUMENTS_BAD;
    }
    rv = f->C_GetSlotList(CK_TRUE, slots, &n);
    for (CK_ULONG i = 0; rv == CKR_OK && i < n && !found; i++) {
        CK_TOKEN_INFO ti;
        CK_SLOT_INFO si;

        if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK ||
            f->C_GetSlotInfo(slots[i], &si) != CKR_OK ||
            !(ti.flags & CKF_TOKEN_INITIALIZED))
            continue;
        if (p11_kit_uri_match_token_info(uri, &ti) == 1 &&
            p11_kit_uri_match_slot_info(uri, &si) == 1 &&
            (p11_kit_uri_get_slot_id(uri) == (CK_SLOT_ID)-1 ||
             p11_kit_uri_get_slot_id(uri) == slots[i])) {
            *slot = slots[i];
            found = 1;
        }
    }
    p11_kit_uri_free(uri);
    if (rv == CKR_OK && !found)
        rv = CKR_TOKEN_NOT_PRESENT;
    return rv;
}

static CK_RV find_key(bench_floor *fl, const uint8_t *id, CK_KEY_TYPE kt,
                      CK_OBJECT_HANDLE *out)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_BBOOL tok = CK_TRUE;
    CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof(cls)},
                           {CKA_TOKEN, &tok, sizeof(tok)},
                           {CKA_KEY_TYPE, &kt, sizeof(kt)},
                           {CKA_ID, (void *)id, P11T_NAME_LEN}};
    CK_OBJECT_HANDLE h[2];
    CK_ULONG got = 0;
    CK_RV rv;

    rv = fl->f->C_FindObjectsInit(fl->s, tmpl, 4);
    if (rv != CKR_OK)
        return rv;
    rv = fl->f->C_FindObjects(fl->s, h, 2, &got);
    fl->f->C_FindObjectsFinal(fl->s);
    if (rv == CKR_OK && got != 1)
        rv = CKR_KEY_HANDLE_INVALID;
    if (rv == CKR_OK)
        *out = h[0];
    return rv;
}

static CK_RV login_if_needed(bench_floor *fl, const bench_setup *s, char *err,
                             size_t errlen)
{
    CK_SESSION_INFO si;
    char *pin = NULL;
    size_t pin_len = 0;
    p11t_err e;
    CK_RV rv;

    rv = fl->f->C_GetSessionInfo(fl->s, &si);
    if (rv != CKR_OK || si.state == CKS_RW_USER_FUNCTIONS ||
        si.state == CKS_RO_USER_FUNCTIONS)
        return rv;
    /* Login is per process: normally the provider did it already. */
    p11t_err_clear(&e);
    rv = p11t_pin_read(bench_setup_value(s, "pin-source"), &pin, &pin_len, &e);
    if (rv != CKR_OK) {
        snprintf(err, errlen, "%s", e.msg);
        return rv;
    }
    rv = fl->f->C_Login(fl->s, CKU_USER, (CK_UTF8CHAR_PTR)pin, (CK_ULONG)pin_len);
    p11t_pin_free(pin, pin_len);
    return rv == CKR_USER_ALREADY_LOGGED_IN ? CKR_OK : rv;
}

/* A random 32-byte session key with CKA_PRIVATE false (still sensitive and
 * never extractable), for the public-key reference only. */
static CK_RV public_session_key(bench_floor *fl, CK_MECHANISM_TYPE gen,
                                CK_OBJECT_HANDLE *out)
{
    CK_MECHANISM mech = {gen, NULL, 0};
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG len = 32;
    CK_ATTRIBUTE tmpl[] = {{CKA_TOKEN, &no, sizeof(no)},
                           {CKA_PRIVATE, &no, sizeof(no)},
                           {CKA_SENSITIVE, &yes, sizeof(yes)},
                           {CKA_EXTRACTABLE, &no, sizeof(no)},
                           {gen == CKM_AES_KEY_GEN ? CKA_ENCRYPT : CKA_SIGN,
                            &yes, sizeof(yes)},
                           {gen == CKM_AES_KEY_GEN ? CKA_DECRYPT : CKA_VERIFY,
                            &yes, sizeof(yes)},
                           {CKA_VALUE_LEN, &len, sizeof(len)}};

    return fl->f->C_GenerateKey(fl->s, &mech, tmpl, 7, out);
}

/*
 * The AES mechanism the provider's login would choose (hsm/module.c
 * choose_mechanism): aes-mechanism = ecb or cbc-pad as configured; auto
 * (the default) takes CKM_AES_CBC_PAD when the slot lists it for encrypt
 * and decrypt, else CKM_AES_ECB.  Sets fl->ecb.
 */
static CK_RV floor_mechanism(bench_floor *fl, const bench_setup *s,
                             CK_SLOT_ID slot)
{
    const char *want = bench_setup_value(s, "aes-mechanism");
    CK_MECHANISM_TYPE list[512];
    CK_ULONG n = 512;
    CK_MECHANISM_INFO mi;
    CK_RV rv;
    int cbc_pad = 0;

    if (want != NULL && strcmp(want, "ecb") == 0) {
        fl->ecb = 1;
        return CKR_OK;
    }
    if (want != NULL && strcmp(want, "cbc-pad") == 0) {
        fl->ecb = 0;
        return CKR_OK;
    }
    rv = fl->f->C_GetMechanismList(slot, list, &n);
    if (rv != CKR_OK)
        return rv;
    for (CK_ULONG i = 0; i < n; i++)
        if (list[i] == CKM_AES_CBC_PAD &&
            fl->f->C_GetMechanismInfo(slot, CKM_AES_CBC_PAD, &mi) == CKR_OK &&
            (mi.flags & (CKF_ENCRYPT | CKF_DECRYPT)) ==
                (CKF_ENCRYPT | CKF_DECRYPT))
            cbc_pad = 1;
    fl->ecb = !cbc_pad;
    return CKR_OK;
}

int bench_floor_open(bench_floor *fl, const bench_setup *s, char *err,
                     size_t errlen)
{
    const char *module = bench_setup_value(s, "pkcs11-module");
    const char *uri = bench_setup_value(s, "token-uri");
    CK_C_INITIALIZE_ARGS args = {0};
    CK_C_GetFunctionList getfl;
    CK_BBOOL f = CK_FALSE;
    CK_ATTRIBUTE session_obj = {CKA_TOKEN, &f, sizeof(f)};
    CK_SLOT_ID slot = 0;
    const char *step;
    void *dl;
    CK_RV rv;

    memset(fl, 0, sizeof(*fl));
    memcpy(fl->name, s->key, P11T_NAME_LEN);
    /* The same path dlopen()s to the same, already initialised, instance. */
    dl = dlopen(module, RTLD_NOW | RTLD_LOCAL);
    getfl = dl != NULL ? (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList")
                       : NULL;
    if (getfl == NULL || getfl(&fl->f) != CKR_OK) {
        snprintf(err, errlen, "pkcs11-module %s: cannot load", module);
        return 0;
    }
    args.flags = CKF_OS_LOCKING_OK;
    step = "C_Initialize";
    rv = fl->f->C_Initialize(&args);
    if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED)
        rv = CKR_OK;
    if (rv == CKR_OK) {
        step = "finding the token";
        rv = find_slot(fl->f, uri, &slot);
    }
    if (rv == CKR_OK) {
        step = "C_GetMechanismList";
        rv = floor_mechanism(fl, s, slot);
    }
    if (rv == CKR_OK) {
        step = "C_OpenSession";
        rv = fl->f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
                                  NULL, NULL, &fl->s);
    }
    if (rv == CKR_OK) {
        step = "C_Login";
        rv = login_if_needed(fl, s, err, errlen);
    }
    if (rv == CKR_OK) {
        step = "finding the AES key by CKA_ID";
        rv = find_key(fl, s->key, CKK_AES, &fl->aes_tok);
    }
    if (rv == CKR_OK) {
        step = "finding the HMAC key by CKA_ID";
        rv = find_key(fl, s->key, CKK_GENERIC_SECRET, &fl->hmac_tok);
    }
    if (rv == CKR_OK) {
        step = "C_CopyObject";
        rv = fl->f->C_CopyObject(fl->s, fl->aes_tok, &session_obj, 1,
                                 &fl->aes_ses);
    }
    if (rv == CKR_OK)
        rv = fl->f->C_CopyObject(fl->s, fl->hmac_tok, &session_obj, 1,
                                 &fl->hmac_ses);
    if (rv == CKR_OK) {
        step = "C_GenerateKey (public session keys)";
        rv = public_session_key(fl, CKM_AES_KEY_GEN, &fl->aes_pub);
    }
    if (rv == CKR_OK)
        rv = public_session_key(fl, CKM_GENERIC_SECRET_KEY_GEN, &fl->hmac_pub);
    if (rv != CKR_OK) {
        if (err[0] == '\0')
            snprintf(err, errlen, "PKCS#11 floor: %s: %s", step,
                     p11t_rv_name(rv));
        return 0;
    }
    return 1;
}

void bench_floor_close(bench_floor *fl)
{
    if (fl->f == NULL)
        return;
    if (fl->aes_ses != CK_INVALID_HANDLE)
        fl->f->C_DestroyObject(fl->s, fl->aes_ses);
    if (fl->hmac_ses != CK_INVALID_HANDLE)
        fl->f->C_DestroyObject(fl->s, fl->hmac_ses);
    if (fl->aes_pub != CK_INVALID_HANDLE)
        fl->f->C_DestroyObject(fl->s, fl->aes_pub);
    if (fl->hmac_pub != CK_INVALID_HANDLE)
        fl->f->C_DestroyObject(fl->s, fl->hmac_pub);
    fl->f->C_CloseSession(fl->s);
    memset(fl, 0, sizeof(*fl));
}

static void floor_keys(const bench_floor *fl, CK_OBJECT_HANDLE *aes,
                       CK_OBJECT_HANDLE *hmac)
{
    *aes = fl->aes_tok;
    *hmac = fl->hmac_tok;
    switch (fl->keys) {
    case BENCH_KEYS_TOKEN:
        return;
    case BENCH_KEYS_COPY:
        *aes = fl->aes_ses;
        *hmac = fl->hmac_ses;
        return;
    case BENCH_KEYS_PUBLIC:
        *aes = fl->aes_pub;
        *hmac = fl->hmac_pub;
        return;
    }
}

#define AES_BLOCK 16

/* CBC with PKCS#7 padding on CKM_AES_ECB, as hsm/keys.c ecb_encrypt: one
 * C_EncryptInit, one C_EncryptUpdate per block (each block's input is the
 * plaintext XOR the previous ciphertext block), C_EncryptFinal.  The
 * operation is ended on failure, so the session stays usable. */
static int floor_ecb_encrypt(bench_floor *fl, CK_OBJECT_HANDLE aes,
                             const uint8_t *iv, const uint8_t *in, size_t inl,
                             uint8_t *out)
{
    CK_MECHANISM ecb = {CKM_AES_ECB, NULL, 0};
    size_t nblk = inl / AES_BLOCK + 1;
    uint8_t pad = (uint8_t)(AES_BLOCK - inl % AES_BLOCK), x[AES_BLOCK],
            tail[AES_BLOCK];
    const uint8_t *prev = iv;
    CK_ULONG ol;

    if (fl->f->C_EncryptInit(fl->s, &ecb, aes) != CKR_OK)
        return 0;
    for (size_t b = 0; b < nblk; b++) {
        for (size_t j = 0; j < AES_BLOCK; j++) {
            size_t i = b * AES_BLOCK + j;

            x[j] = (uint8_t)((i < inl ? in[i] : pad) ^ prev[j]);
        }
        ol = AES_BLOCK;
        if (fl->f->C_EncryptUpdate(fl->s, x, AES_BLOCK, out + b * AES_BLOCK,
                                   &ol) != CKR_OK || ol != AES_BLOCK) {
            ol = sizeof(tail);
            fl->f->C_EncryptFinal(fl->s, tail, &ol);
            return 0;
        }
        prev = out + b * AES_BLOCK;
    }
    ol = sizeof(tail);
    return fl->f->C_EncryptFinal(fl->s, tail, &ol) == CKR_OK && ol == 0;
}

/* The decrypting half, as hsm/keys.c ecb_decrypt: one C_DecryptInit and one
 * C_Decrypt over every block, XOR with the previous ciphertext block, then
 * the padding (checked plainly: the bench's own tickets only). */
static int floor_ecb_decrypt(bench_floor *fl, CK_OBJECT_HANDLE aes,
                             const uint8_t *iv, const uint8_t *in, size_t inl,
                             uint8_t *out, CK_ULONG *outl)
{
    CK_MECHANISM ecb = {CKM_AES_ECB, NULL, 0};
    CK_ULONG ol = inl;
    unsigned pad;

    if (fl->f->C_DecryptInit(fl->s, &ecb, aes) != CKR_OK ||
        fl->f->C_Decrypt(fl->s, (CK_BYTE_PTR)in, (CK_ULONG)inl, out, &ol) !=
            CKR_OK ||
        ol != inl)
        return 0;
    for (size_t i = 0; i < inl; i++)
        out[i] ^= i < AES_BLOCK ? iv[i] : in[i - AES_BLOCK];
    pad = out[inl - 1];
    if (pad < 1 || pad > AES_BLOCK)
        return 0;
    for (unsigned i = 1; i <= pad; i++)
        if (out[inl - i] != pad)
            return 0;
    *outl = (CK_ULONG)(inl - pad);
    return 1;
}

static int floor_seal(void *vctx, const uint8_t iv[P11T_IV_LEN],
                      const uint8_t *in, uint8_t t[BENCH_TICKET_LEN])
{
    bench_floor *fl = vctx;
    CK_MECHANISM cbc = {CKM_AES_CBC_PAD, (void *)iv, P11T_IV_LEN};
    CK_MECHANISM mac = {CKM_SHA256_HMAC, NULL, 0};
    CK_OBJECT_HANDLE aes, hmac;

    floor_keys(fl, &aes, &hmac);
    CK_ULONG cl = BENCH_CT_LEN, ml = P11T_HMAC_LEN;

    memcpy(t, fl->name, P11T_NAME_LEN);
    memcpy(t + P11T_NAME_LEN, iv, P11T_IV_LEN);
    if (fl->ecb) {
        if (!floor_ecb_encrypt(fl, aes, iv, in, BENCH_SESSION_LEN, t + 32))
            return 0;
    } else if (fl->f->C_EncryptInit(fl->s, &cbc, aes) != CKR_OK ||
               fl->f->C_Encrypt(fl->s, (CK_BYTE_PTR)in, BENCH_SESSION_LEN,
                                t + 32, &cl) != CKR_OK ||
               cl != BENCH_CT_LEN) {
        return 0;
    }
    return fl->f->C_SignInit(fl->s, &mac, hmac) == CKR_OK &&
           fl->f->C_Sign(fl->s, t, BENCH_MAC_OFF, t + BENCH_MAC_OFF, &ml) ==
               CKR_OK &&
           ml == P11T_HMAC_LEN;
}

static int floor_open(void *vctx, const uint8_t t[BENCH_TICKET_LEN],
                      uint8_t *out, size_t *outl)
{
    bench_floor *fl = vctx;
    CK_MECHANISM cbc = {CKM_AES_CBC_PAD, (void *)(t + P11T_NAME_LEN),
                        P11T_IV_LEN};
    CK_MECHANISM mac = {CKM_SHA256_HMAC, NULL, 0};
    CK_OBJECT_HANDLE aes, hmac;

    floor_keys(fl, &aes, &hmac);
    uint8_t tag[P11T_HMAC_LEN];
    CK_ULONG ml = sizeof(tag), pl = BENCH_CT_LEN;

    if (fl->f->C_SignInit(fl->s, &mac, hmac) != CKR_OK ||
        fl->f->C_Sign(fl->s, (CK_BYTE_PTR)t, BENCH_MAC_OFF, tag, &ml) !=
            CKR_OK ||
        CRYPTO_memcmp(tag, t + BENCH_MAC_OFF, sizeof(tag)) != 0)
        return 0;
    if (fl->ecb) {
        if (!floor_ecb_decrypt(fl, aes, t + P11T_NAME_LEN, t + 32,
                               BENCH_CT_LEN, out, &pl))
            return 0;
        *outl = pl;
        return 1;
    }
    if (fl->f->C_DecryptInit(fl->s, &cbc, aes) != CKR_OK ||
        fl->f->C_Decrypt(fl->s, (CK_BYTE_PTR)(t + 32), BENCH_CT_LEN, out, &pl) !=
            CKR_OK)
        return 0;
    *outl = pl;
    return 1;
}

void bench_way_floor(bench_way *w, const char *name, bench_floor *fl)
{
    w->name = name;
    w->seal = floor_seal;
    w->open = floor_open;
    w->ctx = fl;
}

/* ---- the runner ---------------------------------------------------------------- */

#define N_IVS 64

static uint8_t ivs[N_IVS][P11T_IV_LEN];
static uint8_t plain[BENCH_SESSION_LEN];
static int inputs_ready;

static int inputs(void)
{
    if (!inputs_ready)
        inputs_ready = RAND_bytes(&ivs[0][0], sizeof(ivs)) == 1 &&
                       RAND_bytes(plain, sizeof(plain)) == 1;
    return inputs_ready;
}

static int check_open(bench_way *w, const uint8_t *t, char *err, size_t errlen)
{
    uint8_t out[BENCH_CT_LEN];
    size_t outl = 0;

    if (!w->open(w->ctx, t, out, &outl)) {
        bench_ossl_err(err, errlen, w->name);
        snprintf(err + strlen(err), errlen - strlen(err),
                 " (open failed: tag or decryption)");
        return 0;
    }
    if (outl != BENCH_SESSION_LEN || memcmp(out, plain, outl) != 0) {
        snprintf(err, errlen, "%s: opened ticket differs from the session",
                 w->name);
        return 0;
    }
    return 1;
}

int bench_floor_token_work(bench_floor *fl, int enc)
{
    uint8_t t[BENCH_TICKET_LEN], out[BENCH_CT_LEN];
    size_t outl;

    if (!fl->ticket_ready) {
        if (!inputs() || !floor_seal(fl, ivs[0], plain, fl->ticket))
            return 0;
        fl->ticket_ready = 1;
    }
    if (enc)
        return floor_seal(fl, fl->ticket + P11T_NAME_LEN, plain, t);
    return floor_open(fl, fl->ticket, out, &outl);
}

long bench_sealopen_loop(bench_way *w, long n, double until, char *err,
                         size_t errlen)
{
    uint8_t t[BENCH_TICKET_LEN];
    long done = 0;

    if (!inputs()) {
        snprintf(err, errlen, "RAND_bytes failed");
        return -1;
    }
    for (; (n < 0 || done < n) && !bench_stop; done++) {
        if ((done & 15) == 0 && until > 0 && bench_now() >= until)
            break;
        if (!w->seal(w->ctx, ivs[done % N_IVS], plain, t)) {
            bench_ossl_err(err, errlen, w->name);
            return -1;
        }
        if (!check_open(w, t, err, errlen))
            return -1;
    }
    return done;
}

void bench_sealopen_free(bench_sealopen *s)
{
    free(s->round_pair_us);
    s->round_pair_us = NULL;
}

double bench_paired(const bench_sealopen *a, const bench_sealopen *b)
{
    if (a->round_pair_us == NULL || b->round_pair_us == NULL ||
        a->rounds != b->rounds)
        return NAN;
    return bench_median_ratio(a->round_pair_us, b->round_pair_us, a->rounds);
}

int bench_sealopen_run(bench_way *ways, size_t n, double seconds,
                       size_t min_rounds, size_t batch,
                       const uint8_t *expect_name, const int *check_name,
                       bench_sealopen *out, char *err, size_t errlen)
{
    uint8_t(*t)[BENCH_TICKET_LEN] = calloc(batch, BENCH_TICKET_LEN);
    bench_series *seal = calloc(n, sizeof(*seal));
    bench_series *open = calloc(n, sizeof(*open));
    bench_series *pair = calloc(n, sizeof(*pair));
    double end = bench_now() + seconds;
    size_t round;
    int ok = 0;

    if (t == NULL || seal == NULL || open == NULL || pair == NULL ||
        !inputs()) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    for (round = 0; round < min_rounds || bench_now() < end; round++) {
        for (size_t i = 0; i < n; i++) {
            bench_way *w = &ways[i];
            double t0, t1, t2;

            if (bench_stop) {
                snprintf(err, errlen, "interrupted");
                goto done;
            }
            t0 = bench_now();
            for (size_t k = 0; k < batch; k++)
                if (!w->seal(w->ctx, ivs[(k + round) % N_IVS], plain, t[k])) {
                    bench_ossl_err(err, errlen, w->name);
                    goto done;
                }
            t1 = bench_now();
            for (size_t k = 0; k < batch; k++)
                if (!check_open(w, t[k], err, errlen))
                    goto done;
            t2 = bench_now();
            if (expect_name != NULL && check_name != NULL && check_name[i] &&
                memcmp(t[0], expect_name, P11T_NAME_LEN) != 0) {
                snprintf(err, errlen, "%s: tickets are not sealed under the "
                         "bench's key (did another key become current?)",
                         w->name);
                goto done;
            }
            if (!bench_series_add(&seal[i], (t1 - t0) * 1e6 / (double)batch) ||
                !bench_series_add(&open[i], (t2 - t1) * 1e6 / (double)batch) ||
                !bench_series_add(&pair[i], (t2 - t0) * 1e6 / (double)batch)) {
                snprintf(err, errlen, "out of memory");
                goto done;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        bench_sealopen_free(&out[i]);
        out[i].pair_mean_us = bench_mean(pair[i].v, pair[i].n);
        /* The round series, in round order, before the median sorts it. */
        out[i].round_pair_us = pair[i].v;
        pair[i].v = malloc(pair[i].n * sizeof(double));
        if (pair[i].v == NULL) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
        memcpy(pair[i].v, out[i].round_pair_us, pair[i].n * sizeof(double));
        out[i].seal_us = bench_series_median(&seal[i]);
        out[i].open_us = bench_series_median(&open[i]);
        out[i].pair_us = bench_series_median(&pair[i]);
        out[i].rounds = round;
        out[i].ops = round * batch;
    }
    ok = 1;
done:
    for (size_t i = 0; i < n && seal != NULL && open != NULL && pair != NULL;
         i++) {
        bench_series_free(&seal[i]);
        bench_series_free(&open[i]);
        bench_series_free(&pair[i]);
    }
    free(seal);
    free(open);
    free(pair);
    free(t);
    return ok;
}
