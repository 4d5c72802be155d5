/* SPDX-License-Identifier: Apache-2.0 */
/*
 * config.c - the openssl.cnf provider section, validated without side
 * effects: nothing is opened, loaded or read here, because the provider
 * must not touch the token inside OSSL_provider_init (docs/design.md,
 * "Recursion and load order").
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define DEFAULT_REFRESH_S 30
#define DEFAULT_RESCAN_S 1
#define DEFAULT_MAX_SESSIONS 64

p11t_config *p11t_config_new(void)
{
    p11t_config *cfg = calloc(1, sizeof(*cfg));

    if (cfg == NULL)
        return NULL;
    cfg->refresh_s = DEFAULT_REFRESH_S;
    cfg->rescan_s = DEFAULT_RESCAN_S;
    cfg->max_sessions = DEFAULT_MAX_SESSIONS;
    cfg->session_copies = 1;
    cfg->auto_enable = 1;
    cfg->aes_mech = P11T_AES_MECH_AUTO;
    cfg->policy.encrypt_for = 12 * 3600;
    cfg->policy.decrypt_for = 24 * 3600;
    cfg->policy.lead = 3600;
    return cfg;
}

void p11t_config_free(p11t_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->module_path);
    free(cfg->token_uri);
    if (cfg->uri != NULL)
        p11_kit_uri_free(cfg->uri);
    free(cfg->pin_source);
    free(cfg);
}

unsigned p11t_config_refresh_interval(const p11t_config *cfg)
{
    return cfg->refresh_s;
}

void p11t_config_policy(const p11t_config *cfg, p11t_policy *out)
{
    *out = cfg->policy;
}

int p11t_config_auto_rotate(const p11t_config *cfg)
{
    return cfg->auto_rotate;
}

int p11t_config_auto_enable(const p11t_config *cfg)
{
    return cfg->auto_enable;
}

int p11t_config_session_copies(const p11t_config *cfg)
{
    return cfg->session_copies;
}

p11t_aes_mech p11t_config_aes_mechanism(const p11t_config *cfg)
{
    return cfg->aes_mech;
}

const char *p11t_aes_mech_name(p11t_aes_mech m)
{
    switch (m) {
    case P11T_AES_MECH_AUTO:
        return "auto";
    case P11T_AES_MECH_CBC_PAD:
        return "cbc-pad";
    case P11T_AES_MECH_ECB:
        return "ecb";
    }
    return "?";
}

static CK_RV set_string(char **slot, const char *key, const char *value,
                        p11t_err *err)
{
    char *copy;

    if (*slot != NULL) {
        p11t_err_set(err, P11T_CKR_CONFIG, "%s: given more than once", key);
        return P11T_CKR_CONFIG;
    }
    copy = strdup(value);
    if (copy == NULL) {
        p11t_err_set(err, CKR_HOST_MEMORY, "%s: out of memory", key);
        return CKR_HOST_MEMORY;
    }
    *slot = copy;
    return CKR_OK;
}

static CK_RV set_uint(unsigned *slot, const char *key, const char *value,
                      unsigned lo, unsigned hi, p11t_err *err)
{
    char *end;
    unsigned long v;

    errno = 0;
    if (!isdigit((unsigned char)value[0]))
        goto bad;
    v = strtoul(value, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        goto bad;
    *slot = (unsigned)v;
    return CKR_OK;
bad:
    p11t_err_set(err, P11T_CKR_CONFIG,
                 "%s: '%.64s' is not a whole number between %u and %u", key,
                 value, lo, hi);
    return P11T_CKR_CONFIG;
}

static CK_RV set_duration(int64_t *slot, const char *key, const char *value,
                          p11t_err *err)
{
    if (!p11t_parse_duration(value, slot)) {
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "%s: '%.64s' is not a duration such as 15s, 90m, 12h "
                     "or 7d", key, value);
        return P11T_CKR_CONFIG;
    }
    return CKR_OK;
}

static CK_RV set_bool(int *slot, const char *key, const char *value,
                      p11t_err *err)
{
    if (strcmp(value, "yes") == 0 || strcmp(value, "1") == 0 ||
        strcmp(value, "true") == 0) {
        *slot = 1;
        return CKR_OK;
    }
    if (strcmp(value, "no") == 0 || strcmp(value, "0") == 0 ||
        strcmp(value, "false") == 0) {
        *slot = 0;
        return CKR_OK;
    }
    p11t_err_set(err, P11T_CKR_CONFIG, "%s: '%.64s' is not yes or no", key,
                 value);
    return P11T_CKR_CONFIG;
}

/* aes-mechanism: what the token may use for the ticket's AES-CBC
 * (docs/design.md, "p11-kit remoting"); checked against the token at login. */
static CK_RV set_aes_mech(p11t_config *cfg, const char *value, p11t_err *err)
{
    static const p11t_aes_mech all[] = {
        P11T_AES_MECH_AUTO, P11T_AES_MECH_CBC_PAD, P11T_AES_MECH_ECB};

    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (strcmp(value, p11t_aes_mech_name(all[i])) == 0) {
            cfg->aes_mech = all[i];
            return CKR_OK;
        }
    p11t_err_set(err, P11T_CKR_CONFIG,
                 "aes-mechanism: '%.64s' is not auto, cbc-pad or ecb", value);
    return P11T_CKR_CONFIG;
}

static CK_RV set_uri(p11t_config *cfg, const char *value, p11t_err *err)
{
    P11KitUri *uri;
    int rc;

    if (cfg->uri != NULL) {
        p11t_err_set(err, P11T_CKR_CONFIG, "token-uri: given more than once");
        return P11T_CKR_CONFIG;
    }
    uri = p11_kit_uri_new();
    if (uri == NULL)
        return CKR_HOST_MEMORY;
    rc = p11_kit_uri_parse(value, P11_KIT_URI_FOR_TOKEN | P11_KIT_URI_FOR_SLOT,
                           uri);
    if (rc != P11_KIT_URI_OK) {
        /* The URI may hold a pin-value; never echo it back. */
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "token-uri: not a valid RFC 7512 PKCS#11 token URI (%s); "
                     "expected e.g. pkcs11:token=tickets",
                     p11_kit_uri_message(rc));
        p11_kit_uri_free(uri);
        return P11T_CKR_CONFIG;
    }
    if (p11_kit_uri_get_pin_value(uri) != NULL ||
        p11_kit_uri_get_pin_source(uri) != NULL) {
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "token-uri: must not carry pin-value or pin-source; "
                     "use the pin-source key");
        p11_kit_uri_free(uri);
        return P11T_CKR_CONFIG;
    }
    if (set_string(&cfg->token_uri, "token-uri", value, err) != CKR_OK) {
        p11_kit_uri_free(uri);
        return P11T_CKR_CONFIG;
    }
    cfg->uri = uri;
    return CKR_OK;
}

static int valid_env_name(const char *s)
{
    if (*s == '\0' || isdigit((unsigned char)*s))
        return 0;
    for (; *s != '\0'; s++)
        if (!isalnum((unsigned char)*s) && *s != '_')
            return 0;
    return 1;
}

static CK_RV set_pin_source(p11t_config *cfg, const char *value, p11t_err *err)
{
    if (strncmp(value, "file:", 5) == 0) {
        if (value[5] != '/') {
            p11t_err_set(err, P11T_CKR_CONFIG,
                         "pin-source: 'file:' needs an absolute path, "
                         "e.g. file:/etc/p11ticket/pin");
            return P11T_CKR_CONFIG;
        }
    } else if (strncmp(value, "env:", 4) == 0) {
        if (!valid_env_name(value + 4)) {
            p11t_err_set(err, P11T_CKR_CONFIG,
                         "pin-source: 'env:' needs a variable name "
                         "([A-Za-z_][A-Za-z0-9_]*)");
            return P11T_CKR_CONFIG;
        }
    } else if (strcmp(value, "prompt") != 0) {
        /* Do not echo the value: someone may have pasted the PIN itself. */
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "pin-source: must be file:/PATH or env:VARIABLE "
                     "(the PIN itself never goes in the configuration)");
        return P11T_CKR_CONFIG;
    }
    return set_string(&cfg->pin_source, "pin-source", value, err);
}

/* Every key of the provider section p11ticket understands: the provider asks
 * OpenSSL for exactly these, the setup tool reads them from the file. */
const char *const p11t_config_keys[] = {
    "pkcs11-module",  "token-uri",   "pin-source",  "refresh-interval",
    "rescan-interval", "max-sessions", "auto-rotate", "auto-enable",
    "encrypt-for",    "decrypt-for", "rotate-lead", "session-copies",
    "aes-mechanism",  NULL};

/* Keys of the provider section that belong to OpenSSL itself. */
static const char *const openssl_keys[] = {"module", "activate", "identity",
                                           "soft_load", NULL};

static CK_RV config_set(p11t_config *cfg, const char *key, const char *value,
                        p11t_err *err)
{
    if (cfg == NULL || key == NULL || value == NULL) {
        p11t_err_set(err, CKR_ARGUMENTS_BAD, "configuration: missing argument");
        return CKR_ARGUMENTS_BAD;
    }
    for (size_t i = 0; openssl_keys[i] != NULL; i++)
        if (strcmp(key, openssl_keys[i]) == 0)
            return CKR_OK;
    if (strcmp(key, "pkcs11-module") == 0) {
        if (value[0] == '\0') {
            p11t_err_set(err, P11T_CKR_CONFIG, "pkcs11-module: empty path");
            return P11T_CKR_CONFIG;
        }
        return set_string(&cfg->module_path, key, value, err);
    }
    if (strcmp(key, "token-uri") == 0)
        return set_uri(cfg, value, err);
    if (strcmp(key, "pin-source") == 0)
        return set_pin_source(cfg, value, err);
    if (strcmp(key, "refresh-interval") == 0)
        return set_uint(&cfg->refresh_s, key, value, 1, 86400, err);
    if (strcmp(key, "rescan-interval") == 0)
        /* At least 1: it is the only bound on the scans that clients can
         * cause with made-up key names. */
        return set_uint(&cfg->rescan_s, key, value, 1, 3600, err);
    if (strcmp(key, "max-sessions") == 0)
        return set_uint(&cfg->max_sessions, key, value, 1, 4096, err);
    if (strcmp(key, "session-copies") == 0)
        return set_bool(&cfg->session_copies, key, value, err);
    if (strcmp(key, "aes-mechanism") == 0)
        return set_aes_mech(cfg, value, err);
    if (strcmp(key, "auto-rotate") == 0)
        return set_bool(&cfg->auto_rotate, key, value, err);
    if (strcmp(key, "auto-enable") == 0)
        return set_bool(&cfg->auto_enable, key, value, err);
    if (strcmp(key, "encrypt-for") == 0)
        return set_duration(&cfg->policy.encrypt_for, key, value, err);
    if (strcmp(key, "decrypt-for") == 0)
        return set_duration(&cfg->policy.decrypt_for, key, value, err);
    if (strcmp(key, "rotate-lead") == 0)
        return set_duration(&cfg->policy.lead, key, value, err);
    p11t_err_set(err, P11T_CKR_CONFIG,
                 "%.64s: unknown key in the p11ticket provider section", key);
    return P11T_CKR_CONFIG;
}

static CK_RV config_check(const p11t_config *cfg, p11t_err *err)
{
    static const char hint[] = "missing from the p11ticket provider section";

    if (cfg->module_path == NULL) {
        p11t_err_set(err, P11T_CKR_CONFIG, "pkcs11-module: %s", hint);
        return P11T_CKR_CONFIG;
    }
    if (cfg->uri == NULL) {
        p11t_err_set(err, P11T_CKR_CONFIG, "token-uri: %s", hint);
        return P11T_CKR_CONFIG;
    }
    if (cfg->pin_source == NULL) {
        p11t_err_set(err, P11T_CKR_CONFIG, "pin-source: %s", hint);
        return P11T_CKR_CONFIG;
    }
    return CKR_OK;
}

/* The first error is also kept in cfg: the provider cannot report it from
 * OSSL_provider_init (OpenSSL ignores provider init failures during config
 * load), so it reports it on first use and in its status instead. */
static CK_RV remember(p11t_config *cfg, CK_RV rv, const p11t_err *e,
                      p11t_err *err)
{
    if (rv == CKR_OK)
        return rv;
    if (cfg != NULL)
        p11t_err_set(&cfg->err, e->rv, "%s", e->msg);
    p11t_err_set(err, e->rv, "%s", e->msg);
    return rv;
}

CK_RV p11t_config_set(p11t_config *cfg, const char *key, const char *value,
                      p11t_err *err)
{
    p11t_err e = {0};

    return remember(cfg, config_set(cfg, key, value, &e), &e, err);
}

void p11t_config_fail(p11t_config *cfg, const char *msg)
{
    p11t_err e = {0};

    p11t_err_set(&e, P11T_CKR_CONFIG, "%s", msg);
    (void)remember(cfg, P11T_CKR_CONFIG, &e, &e);
}

CK_RV p11t_config_check(p11t_config *cfg, p11t_err *err)
{
    p11t_err e = {0};

    return remember(cfg, config_check(cfg, &e), &e, err);
}
