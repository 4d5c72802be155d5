/* SPDX-License-Identifier: Apache-2.0 */
/*
 * prov.c - provider entry point, configuration, provider parameters and
 * error reporting.
 *
 * OSSL_provider_init only records the configuration: the PKCS#11 module is
 * loaded on first use, because initialising SoftHSM while OpenSSL loads its
 * configuration deadlocks, and SoftHSM itself uses OpenSSL inside this
 * process (docs/design.md, "Recursion and load order").
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>

#include "p11ticket.h"
#include "prov.h"

#define ALG_PROPS "provider=p11ticket," P11TICKET_PROPERTY

static OSSL_FUNC_core_get_params_fn *c_get_params;
static OSSL_FUNC_core_get_libctx_fn *c_get_libctx;
static OSSL_FUNC_core_new_error_fn *c_new_error;
static OSSL_FUNC_core_set_error_debug_fn *c_set_error_debug;
static OSSL_FUNC_core_vset_error_fn *c_vset_error;

static OSSL_FUNC_provider_teardown_fn p11t_prov_teardown;
static OSSL_FUNC_provider_gettable_params_fn p11t_prov_gettable_params;
static OSSL_FUNC_provider_get_params_fn p11t_prov_get_params;
static OSSL_FUNC_provider_query_operation_fn p11t_prov_query;
static OSSL_FUNC_provider_get_reason_strings_fn p11t_prov_reasons;

/* The file, line and function are the caller's (the macros in prov.h). */
void p11t_prov_raise_at(p11t_provctx *pc, const char *file, int line,
                        const char *func, int reason, const char *fmt, ...)
{
    va_list ap;

    if (c_new_error == NULL || c_vset_error == NULL)
        return;
    c_new_error(pc->handle);
    if (c_set_error_debug != NULL)
        c_set_error_debug(pc->handle, file, line, func);
    va_start(ap, fmt);
    /* A reason whose upper 8 bits are 0 is filed under this provider's own
     * library number (core_vset_error()), which libp11ticket checks. */
    c_vset_error(pc->handle, (uint32_t)reason, fmt, ap);
    va_end(ap);
}

void p11t_prov_raise_hsm_at(p11t_provctx *pc, const char *file, int line,
                            const char *func, const p11t_err *e)
{
    int reason;

    switch (e->rv) {
    case P11T_CKR_UNKNOWN_KEY:
        reason = P11TICKET_R_UNKNOWN_KEY;
        break;
    case P11T_CKR_NO_ACTIVE_KEY:
        reason = P11TICKET_R_NO_ACTIVE_KEY;
        break;
    case P11T_CKR_CONFIG:
    case P11T_CKR_NO_TOKEN:
    case CKR_PIN_INCORRECT:
    case CKR_PIN_LOCKED:
    case CKR_PIN_EXPIRED:
        reason = P11TICKET_R_CONFIG;
        break;
    default:
        reason = P11TICKET_R_TOKEN;
    }
    p11t_prov_raise_at(pc, file, line, func, reason, "%s",
                       e->msg[0] ? e->msg : p11t_rv_name(e->rv));
}

int p11t_prov_key_name_param(p11t_provctx *pc, const OSSL_PARAM params[],
                             uint8_t name[P11T_NAME_LEN], int *found)
{
    const OSSL_PARAM *p =
        OSSL_PARAM_locate_const(params, P11TICKET_PARAM_KEY_NAME);

    if (p == NULL)
        return 1;
    if (p->data_type != OSSL_PARAM_OCTET_STRING ||
        p->data_size != P11T_NAME_LEN) {
        p11t_prov_raise(pc, P11TICKET_R_BAD_PARAM,
                        P11TICKET_PARAM_KEY_NAME " must be a %d-byte octet "
                        "string", P11T_NAME_LEN);
        return 0;
    }
    memcpy(name, p->data, P11T_NAME_LEN);
    *found = 1;
    return 1;
}

/*
 * What the raw-key proxy forwards to: an HMAC from any provider but this
 * one.  The query must exclude us, mandatorily: an optional or empty query
 * can resolve to this very "HMAC" and recurse until the stack overflows
 * (docs/design.md, "The raw-key HMAC proxy").  It must exclude nothing
 * else: with a FIPS provider, or any other provider that offers HMAC in
 * place of "default", "provider=default" found nothing and every routed
 * SSL_CTX lost every HMAC.
 *
 * "p11ticket.token!=yes" is the exact negation of the routing property
 * (P11TICKET_PROPERTY, on all our algorithms), so it rejects whatever a
 * routing query would select, under any provider name.  OpenSSL 3.0 accepts
 * it and matches a definition that lacks the property, which it compares
 * as the Boolean "no" (ossl_property_match_count()): the default provider's
 * HMAC ("provider=default") matches, ours does not; an explicit query also
 * overrides an optional ?p11ticket.token=yes in default_properties
 * (ossl_property_merge()).  "provider!=p11ticket" behaves the same on
 * 3.0.22 but names the provider, which is one more string to keep in step.
 */
#define INNER_HMAC_QUERY "p11ticket.token!=yes"

EVP_MAC *p11t_prov_inner_hmac(p11t_provctx *pc)
{
    EVP_MAC *mac;

    pthread_mutex_lock(&pc->lock);
    if (pc->inner_hmac == NULL)
        pc->inner_hmac = EVP_MAC_fetch(pc->libctx, "HMAC", INNER_HMAC_QUERY);
    mac = pc->inner_hmac;
    pthread_mutex_unlock(&pc->lock);
    if (mac == NULL)
        p11t_prov_raise(pc, P11TICKET_R_NO_DEFAULT_HMAC,
                        "no HMAC from another provider to forward raw-key "
                        "HMAC to; activate the default (or FIPS) provider "
                        "in openssl.cnf");
    return mac;
}

static const OSSL_ALGORITHM p11t_macs[] = {
    {"HMAC", ALG_PROPS, p11t_prov_hmac_functions,
     "HMAC proxy; token HMAC for named ticket keys"},
    {NULL, NULL, NULL, NULL}};

static const OSSL_ALGORITHM p11t_ciphers[] = {
    {P11TICKET_CIPHER_NAME, ALG_PROPS, p11t_prov_cipher_functions,
     "AES-CBC-PAD on a named token key"},
    {NULL, NULL, NULL, NULL}};

static const OSSL_ALGORITHM *p11t_prov_query(void *provctx, int op,
                                             int *no_cache)
{
    *no_cache = 0;
    switch (op) {
    case OSSL_OP_MAC:
        return p11t_macs;
    case OSSL_OP_CIPHER:
        return p11t_ciphers;
    }
    return NULL;
}

static const OSSL_ITEM p11t_reason_strings[] = {
    {P11TICKET_R_TOKEN, "token operation failed"},
    {P11TICKET_R_UNKNOWN_KEY, "unknown key"},
    {P11TICKET_R_CONFIG, "configuration error"},
    {P11TICKET_R_NO_ACTIVE_KEY, "no active key"},
    {P11TICKET_R_KEY_EXPIRED, "key expired"},
    {P11TICKET_R_BAD_PARAM, "invalid parameter"},
    {P11TICKET_R_UNSUPPORTED, "operation not supported"},
    {P11TICKET_R_NO_DEFAULT_HMAC, "no HMAC to forward to"},
    {0, NULL}};

static const OSSL_ITEM *p11t_prov_reasons(void *provctx)
{
    return p11t_reason_strings;
}

static const OSSL_PARAM p11t_gettable[] = {
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_NAME, OSSL_PARAM_UTF8_PTR, NULL, 0),
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_VERSION, OSSL_PARAM_UTF8_PTR, NULL, 0),
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_BUILDINFO, OSSL_PARAM_UTF8_PTR, NULL, 0),
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_STATUS, OSSL_PARAM_INTEGER, NULL, 0),
    OSSL_PARAM_DEFN(P11TICKET_PARAM_STATUS, OSSL_PARAM_UTF8_STRING, NULL, 0),
    OSSL_PARAM_DEFN(P11TICKET_PARAM_CURRENT_KEY, OSSL_PARAM_UTF8_STRING, NULL,
                    0),
    OSSL_PARAM_DEFN(P11TICKET_PARAM_TOKEN_ERRORS, OSSL_PARAM_UNSIGNED_INTEGER,
                    NULL, 0),
    OSSL_PARAM_END};

static const OSSL_PARAM *p11t_prov_gettable_params(void *provctx)
{
    return p11t_gettable;
}

/* "ok" only when the token is logged in AND has a key to encrypt with, and
 * auto-enable, if the section asked for it here, could hand over. */
static void token_status(p11t_provctx *pc, char *buf, size_t len,
                         char hex[static 33])
{
    uint8_t name[P11T_NAME_LEN];
    p11t_err e = {0};

    hex[0] = '\0';
    if (p11t_prov_auto_problem(buf, len))
        return;
    if (p11t_hsm_ready(pc->hsm, &e) != CKR_OK ||
        p11t_hsm_current(pc->hsm, (int64_t)time(NULL), name, &e) != CKR_OK) {
        snprintf(buf, len, "%s", e.msg);
        return;
    }
    p11t_hex(name, hex);
    snprintf(buf, len, "ok");
}

static int p11t_prov_get_params(void *provctx, OSSL_PARAM params[])
{
    p11t_provctx *pc = provctx;
    OSSL_PARAM *p;
    char status[400], hex[33] = "";
    int have_status = 0;

    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME)) != NULL &&
        !OSSL_PARAM_set_utf8_ptr(p, "p11ticket"))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION)) != NULL &&
        !OSSL_PARAM_set_utf8_ptr(p, P11TICKET_VERSION_STR))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_BUILDINFO)) != NULL &&
        !OSSL_PARAM_set_utf8_ptr(p, "p11ticket " P11TICKET_VERSION_STR))
        return 0;
    /* OpenSSL's own status (what `openssl list -providers -verbose` shows
     * as active or inactive): 1 only when tickets can be issued now. */
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS)) != NULL) {
        token_status(pc, status, sizeof(status), hex);
        have_status = 1;
        if (!OSSL_PARAM_set_int(p, strcmp(status, "ok") == 0))
            return 0;
    }
    if ((p = OSSL_PARAM_locate(params, P11TICKET_PARAM_STATUS)) != NULL) {
        if (!have_status)
            token_status(pc, status, sizeof(status), hex);
        have_status = 1;
        if (!OSSL_PARAM_set_utf8_string(p, status))
            return 0;
    }
    if ((p = OSSL_PARAM_locate(params, P11TICKET_PARAM_CURRENT_KEY)) != NULL) {
        if (!have_status)
            token_status(pc, status, sizeof(status), hex);
        if (!OSSL_PARAM_set_utf8_string(p, hex))
            return 0;
    }
    if ((p = OSSL_PARAM_locate(params, P11TICKET_PARAM_TOKEN_ERRORS)) != NULL &&
        !OSSL_PARAM_set_uint64(p, p11t_hsm_error_count(pc->hsm)))
        return 0;
    return 1;
}

static void p11t_prov_teardown(void *provctx)
{
    p11t_provctx *pc = provctx;

    if (pc == NULL)
        return;
    p11t_hsm_free(pc->hsm);
    EVP_MAC_free(pc->inner_hmac);
    OSSL_LIB_CTX_free(pc->libctx);
    pthread_mutex_destroy(&pc->lock);
    OPENSSL_free(pc);
}

static p11t_config *read_config(const OSSL_CORE_HANDLE *handle)
{
    enum { NKEYS = 32 };
    const char *values[NKEYS] = {NULL};
    OSSL_PARAM req[NKEYS];
    size_t n = 0;
    p11t_config *cfg = p11t_config_new();
    p11t_err e = {0};

    if (cfg == NULL)
        return NULL;
    for (; p11t_config_keys[n] != NULL && n < NKEYS - 1; n++)
        req[n] = OSSL_PARAM_construct_utf8_ptr(p11t_config_keys[n],
                                               (char **)&values[n], 0);
    req[n] = OSSL_PARAM_construct_end();
    if (c_get_params == NULL || !c_get_params(handle, req)) {
        p11t_config_fail(cfg, "configuration: OpenSSL could not hand over "
                              "the p11ticket provider section");
        return cfg;
    }
    /* Errors are remembered inside cfg and reported on first use. */
    for (size_t i = 0; i < n; i++)
        if (values[i] != NULL)
            (void)p11t_config_set(cfg, p11t_config_keys[i], values[i], &e);
    (void)p11t_config_check(cfg, &e);
    return cfg;
}

static const OSSL_DISPATCH p11t_prov_dispatch[] = {
    {OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))p11t_prov_teardown},
    {OSSL_FUNC_PROVIDER_GETTABLE_PARAMS,
     (void (*)(void))p11t_prov_gettable_params},
    {OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))p11t_prov_get_params},
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))p11t_prov_query},
    {OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, (void (*)(void))p11t_prov_reasons},
    {0, NULL}};

OSSL_provider_init_fn OSSL_provider_init;

__attribute__((visibility("default"))) int
OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                   const OSSL_DISPATCH **out, void **provctx)
{
    p11t_provctx *pc;
    p11t_config *cfg;
    const OSSL_DISPATCH *core = in;
    p11t_err e = {0};
    int auto_enable;

    for (; in->function_id != 0; in++) {
        switch (in->function_id) {
        case OSSL_FUNC_CORE_GET_PARAMS:
            c_get_params = OSSL_FUNC_core_get_params(in);
            break;
        case OSSL_FUNC_CORE_GET_LIBCTX:
            c_get_libctx = OSSL_FUNC_core_get_libctx(in);
            break;
        case OSSL_FUNC_CORE_NEW_ERROR:
            c_new_error = OSSL_FUNC_core_new_error(in);
            break;
        case OSSL_FUNC_CORE_SET_ERROR_DEBUG:
            c_set_error_debug = OSSL_FUNC_core_set_error_debug(in);
            break;
        case OSSL_FUNC_CORE_VSET_ERROR:
            c_vset_error = OSSL_FUNC_core_vset_error(in);
            break;
        }
    }
    pc = OPENSSL_zalloc(sizeof(*pc));
    if (pc == NULL)
        return 0;
    pc->handle = handle;
    pthread_mutex_init(&pc->lock, NULL);
    pc->libctx = OSSL_LIB_CTX_new_child(handle, core);
    cfg = read_config(handle);
    if (pc->libctx == NULL || cfg == NULL)
        goto fail;
    auto_enable = p11t_config_auto_enable(cfg);
    if (p11t_hsm_new(cfg, &pc->hsm, &e) != CKR_OK)
        goto fail;
    /* The PIN now, while the process may still read it (privileges are
     * dropped later); a failure is reported again at login. */
    (void)p11t_hsm_preload_pin(pc->hsm, &e);
    if (auto_enable && c_get_libctx != NULL)
        (void)p11t_prov_auto_enable(
            (OSSL_LIB_CTX *)c_get_libctx(handle), 1);
    *out = p11t_prov_dispatch;
    *provctx = pc;
    return 1;
fail:
    p11t_prov_teardown(pc);
    return 0;
}
