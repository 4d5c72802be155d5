/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ticket_cb.c - the callback libssl runs to issue (enc=1) and to accept
 * (enc=0) a session ticket: construct_stateless_ticket() in
 * ssl/statem/statem_srvr.c and tls_decrypt_ticket() in ssl/t1_lib.c.
 *
 * Its return values are libssl's: 0 = no ticket / full handshake, 1 = go on,
 * 2 = accepted, issue a fresh ticket.  A negative value makes libssl send a
 * fatal alert, which no token problem justifies, so it is never returned.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rand.h>

#include "internal.h"

/* What a failed cipher or MAC init means, by the provider's reason code. */
enum failure_kind {
    FAILURE_OTHER,       /* not the provider's, or another reason */
    FAILURE_UNKNOWN_KEY, /* P11TICKET_R_UNKNOWN_KEY: a normal event */
    FAILURE_TOKEN,       /* P11TICKET_R_TOKEN: the token failed */
    FAILURE_CONFIG,      /* P11TICKET_R_CONFIG: the operator must act */
};

struct failure {
    char text[256];  /* OpenSSL's error line plus the provider's message */
    char cause[256]; /* the provider's message alone, else the reason */
    enum failure_kind kind;
};

/*
 * Whether e was raised by the provider that implements cipher.  A
 * provider's reasons are filed under a library number OpenSSL allocates at
 * load time (core_vset_error() in crypto/provider_core.c, from
 * ERR_get_next_error_library(), so at least ERR_LIB_USER), and
 * ERR_lib_error_string() gives that provider's name, so the reason code is
 * only compared once the library is known to be ours.
 */
static bool from_provider(unsigned long e, const EVP_CIPHER *cipher)
{
    const OSSL_PROVIDER *prov = EVP_CIPHER_get0_provider(cipher);
    const char *lib = ERR_lib_error_string(e);
    const char *name = prov != NULL ? OSSL_PROVIDER_get0_name(prov) : NULL;

    return ERR_GET_LIB(e) >= ERR_LIB_USER && lib != NULL && name != NULL &&
           strcmp(lib, name) == 0;
}

static enum failure_kind classify(unsigned long e, const EVP_CIPHER *cipher)
{
    if (!from_provider(e, cipher))
        return FAILURE_OTHER;
    switch (ERR_GET_REASON(e)) {
    case P11TICKET_R_UNKNOWN_KEY:
        return FAILURE_UNKNOWN_KEY;
    case P11TICKET_R_TOKEN:
        return FAILURE_TOKEN;
    case P11TICKET_R_CONFIG:
        return FAILURE_CONFIG;
    }
    return FAILURE_OTHER;
}

/*
 * One line for the newest error raised since the callback started (`before`
 * is what the queue's newest entry was then; ERR_peek_last_error() does not
 * stop at marks), and its kind.
 */
static void describe_error(unsigned long before, const EVP_CIPHER *cipher,
                           struct failure *f)
{
    const char *data = NULL;
    int flags = 0;
    unsigned long e = ERR_peek_last_error_data(&data, &flags);
    char reason[200];

    f->kind = FAILURE_OTHER;
    if (e == 0 || e == before) {
        snprintf(f->text, sizeof(f->text), "no OpenSSL error reported");
        snprintf(f->cause, sizeof(f->cause), "%s", f->text);
        return;
    }
    f->kind = classify(e, cipher);
    ERR_error_string_n(e, reason, sizeof(reason));
    if ((flags & ERR_TXT_STRING) != 0 && data != NULL && *data != '\0') {
        snprintf(f->text, sizeof(f->text), "%s (%s)", reason, data);
        snprintf(f->cause, sizeof(f->cause), "%s", data);
    } else {
        snprintf(f->text, sizeof(f->text), "%s", reason);
        snprintf(f->cause, sizeof(f->cause), "%s", reason);
    }
}

/*
 * libssl makes hctx itself, with EVP_MAC_fetch(libctx, "HMAC", propq) in
 * ssl_hmac_new(); it reaches the token only if that fetch chose the
 * provider's HMAC.  Only that HMAC answers P11TICKET_PARAM_ROUTED; others
 * ignore unknown parameters and leave it unmodified.  An SSL_CTX's propq never
 * changes, so a "no" is final.
 */
static int hmac_routed(struct p11t_lib_state *st, EVP_MAC_CTX *hctx,
                       bool have_cipher)
{
    int routed = 0;
    OSSL_PARAM params[2];

    if (atomic_load(&st->routing) == P11T_ROUTING_NO)
        return 0;
    params[0] = OSSL_PARAM_construct_int(P11TICKET_PARAM_ROUTED, &routed);
    params[1] = OSSL_PARAM_construct_end();
    if (EVP_MAC_CTX_get_params(hctx, params) &&
        OSSL_PARAM_modified(&params[0]) && routed == 1) {
        atomic_store(&st->routing, P11T_ROUTING_YES);
        return 1;
    }
    /* Without the cipher the provider may simply not be loaded; say so
     * first, since no routing can find a provider that is absent. */
    if (atomic_exchange(&st->routing, P11T_ROUTING_NO) != P11T_ROUTING_NO)
        p11t_lib_log(P11TICKET_LOG_ERROR,
                     "libssl's ticket HMAC is not routed to the p11ticket "
                     "provider; %sset default_properties = " P11TICKET_PROPQ
                     " in the alg_section of openssl.cnf, or create the "
                     "SSL_CTX with p11ticket_SSL_CTX_new(); tickets "
                     "disabled, full handshakes only",
                     have_cipher ? "" : "load the provider, then ");
    return 0;
}

/* The token key is CKM_SHA256_HMAC, and SHA-256 is what libssl's own ticket
 * HMAC uses (ssl_hmac_init() in ssl/t1_lib.c). */
static int mac_init(EVP_MAC_CTX *hctx, unsigned char *name)
{
    char digest[] = "SHA256";
    OSSL_PARAM params[3];

    params[0] =
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[1] = OSSL_PARAM_construct_octet_string(P11TICKET_PARAM_KEY_NAME,
                                                  name, P11TICKET_KEY_NAME_LEN);
    params[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_init(hctx, NULL, 0, params);
}

/* After an encrypt init without a name, the provider reports the key it
 * chose, which goes into the ticket for the way back. */
static int chosen_key_name(EVP_CIPHER_CTX *cctx, unsigned char *name)
{
    OSSL_PARAM params[2];

    params[0] = OSSL_PARAM_construct_octet_string(P11TICKET_PARAM_KEY_NAME,
                                                  name, P11TICKET_KEY_NAME_LEN);
    params[1] = OSSL_PARAM_construct_end();
    return EVP_CIPHER_CTX_get_params(cctx, params) &&
           OSSL_PARAM_modified(&params[0]) &&
           params[0].return_size == P11TICKET_KEY_NAME_LEN;
}

/* A provider that does not say is treated as "renew": a fresh ticket under
 * the current key costs one token operation, a stale one may outlive its
 * key. */
static int key_renew(EVP_CIPHER_CTX *cctx)
{
    int renew = 1;
    OSSL_PARAM params[2];

    params[0] = OSSL_PARAM_construct_int(P11TICKET_PARAM_KEY_RENEW, &renew);
    params[1] = OSSL_PARAM_construct_end();
    if (!EVP_CIPHER_CTX_get_params(cctx, params) ||
        !OSSL_PARAM_modified(&params[0]))
        return 1;
    return renew != 0;
}

static int issue_ticket(struct p11t_lib_state *st, EVP_CIPHER *cipher,
                        unsigned char *key_name, unsigned char *iv,
                        EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx,
                        unsigned long before)
{
    unsigned char name[P11TICKET_KEY_NAME_LEN];
    int ivlen = EVP_CIPHER_get_iv_length(cipher);
    struct failure f;
    const char *step;

    /* libssl's iv buffer holds EVP_MAX_IV_LENGTH bytes. */
    step = "checking the token cipher's IV length";
    if (ivlen <= 0 || ivlen > EVP_MAX_IV_LENGTH)
        goto token_error;
    step = "generating the IV";
    if (RAND_bytes_ex(st->libctx, iv, (size_t)ivlen, 0) <= 0)
        goto refuse;
    /* No key name: the provider picks the current encrypting key. */
    step = "encrypt init";
    if (!EVP_EncryptInit_ex2(cctx, cipher, NULL, iv, NULL))
        goto token_error;
    step = "reading the chosen key name";
    if (!chosen_key_name(cctx, name))
        goto token_error;
    step = "HMAC init";
    if (!mac_init(hctx, name))
        goto token_error;

    memcpy(key_name, name, sizeof(name));
    atomic_fetch_add(&st->issued, 1);
    p11t_lib_problem_solved(st);
    return 1;

token_error:
    atomic_fetch_add(&st->errors, 1);
refuse:
    atomic_fetch_add(&st->refused, 1);
    describe_error(before, cipher, &f);
    p11t_lib_log_problem(st, P11T_LIMIT_REFUSED, P11TICKET_LOG_ERROR, f.cause,
                         "no ticket issued: %s failed: %s", step, f.text);
    return 0;
}

static int accept_ticket(struct p11t_lib_state *st, EVP_CIPHER *cipher, SSL *s,
                         const unsigned char *key_name, const unsigned char *iv,
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx,
                         unsigned long before)
{
    unsigned char name[P11TICKET_KEY_NAME_LEN];
    char hex[2 * P11TICKET_KEY_NAME_LEN + 1];
    OSSL_PARAM params[2];
    struct failure f;
    bool renew;

    /* A copy: OSSL_PARAM wants a non-const pointer, libssl's is its ticket. */
    memcpy(name, key_name, sizeof(name));
    params[0] = OSSL_PARAM_construct_octet_string(P11TICKET_PARAM_KEY_NAME,
                                                  name, sizeof(name));
    params[1] = OSSL_PARAM_construct_end();
    if (!EVP_DecryptInit_ex2(cctx, cipher, NULL, iv, params))
        goto fail;
    if (!mac_init(hctx, name))
        goto fail;

    p11t_lib_problem_solved(st);
    /*
     * In TLS 1.3, 1 means no NewSessionTicket after this resumption;
     * libssl's built-in keys always renew there, so do the same.
     */
    renew = key_renew(cctx) || SSL_version(s) == TLS1_3_VERSION;
    /* Counted once libssl has verified the ticket (state.c, settle). */
    if (!p11t_lib_pending_set(s, renew)) {
        atomic_fetch_add(&st->resumed, 1);
        if (renew)
            atomic_fetch_add(&st->renewed, 1);
    }
    return renew ? 2 : 1;

fail:
    describe_error(before, cipher, &f);
    p11t_lib_hex(name, sizeof(name), hex);
    if (f.kind == FAILURE_UNKNOWN_KEY) {
        /* Normal after rotation, or a ticket from another deployment. */
        atomic_fetch_add(&st->unknown_key, 1);
        p11t_lib_log_limited(st, P11T_LIMIT_UNKNOWN, P11TICKET_LOG_INFO,
                             "ticket under unknown key %s: full handshake",
                             hex);
        return 0;
    }
    atomic_fetch_add(&st->errors, 1);
    /* A configuration error fails every handshake until someone fixes it;
     * a token failure (or anything else) may pass by itself. */
    p11t_lib_log_problem(
        st, P11T_LIMIT_DECRYPT,
        f.kind == FAILURE_CONFIG ? P11TICKET_LOG_ERROR : P11TICKET_LOG_WARNING,
        f.cause, "cannot accept ticket under key %s: %s; full handshake", hex,
        f.text);
    return 0;
}

int p11t_lib_ticket_cb(SSL *s, unsigned char *key_name, unsigned char *iv,
                       EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    struct p11t_lib_state *st = p11t_lib_state_for_ssl(s);
    EVP_CIPHER *cipher;
    unsigned long before;
    int ret = 0;

    if (st == NULL || cctx == NULL || hctx == NULL)
        return 0;

    /*
     * A refused ticket is not a failure of the connection.  Leave nothing on
     * this thread's error queue: a stale entry makes a later SSL_get_error()
     * report SSL_ERROR_SSL for an unrelated I/O result.
     */
    ERR_set_mark();
    before = ERR_peek_last_error();

    /* Whatever marked this SSL before has had its outcome by now. */
    p11t_lib_pending_settle(s);

    /* An auto-enabled SSL_CTX was made by a process that loaded the
     * provider, which is why it has the callback at all. */
    if (!hmac_routed(st, hctx,
                     atomic_load(&st->cipher) != NULL ||
                         atomic_load(&st->automatic))) {
        if (enc)
            atomic_fetch_add(&st->refused, 1);
    } else if ((cipher = p11t_lib_state_cipher(st)) == NULL) {
        if (enc)
            atomic_fetch_add(&st->refused, 1);
        /* Routed, so the provider is loaded in the SSL_CTX's library
         * context, yet p11ticket_enable() could not fetch its cipher. */
        p11t_lib_log_problem(
            st, P11T_LIMIT_REFUSED, P11TICKET_LOG_ERROR,
            "routed, but no cipher",
            "tickets refused: the p11ticket cipher is not "
            "available in the library context "
            "p11ticket_enable() used; create an SSL_CTX in a "
            "private OSSL_LIB_CTX with p11ticket_SSL_CTX_new()");
    } else if (enc) {
        ret = issue_ticket(st, cipher, key_name, iv, cctx, hctx, before);
    } else {
        ret = accept_ticket(st, cipher, s, key_name, iv, cctx, hctx, before);
    }

    ERR_pop_to_mark();
    return ret;
}
