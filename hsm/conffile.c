/* SPDX-License-Identifier: Apache-2.0 */
/*
 * conffile.c - the provider section of an openssl.cnf, found the way
 * OpenSSL finds it, for the programs that read the file themselves (the
 * setup tool and the bench; the provider gets its section from OpenSSL).
 *
 * openssl_conf -> [init] providers -> [providers] NAME -> section.  Values
 * are looked up by iterating each section's own values, as OpenSSL's config
 * modules do (crypto/conf/conf_mod.c, crypto/provider_conf.c):
 * NCONF_get_string() would fall back to the default section, so a program
 * could find a key the servers never see.
 */
#include <string.h>

#include <openssl/conf.h>
#include <openssl/err.h>

#include "internal.h"

const char *p11t_conffile_lookup(const CONF *conf, const char *section,
                                 const char *key)
{
    STACK_OF(CONF_VALUE) *sk = NCONF_get_section(conf, section);

    if (sk == NULL)
        return NULL;
    for (int i = 0; i < sk_CONF_VALUE_num(sk); i++) {
        const CONF_VALUE *v = sk_CONF_VALUE_value(sk, i);

        if (strcmp(v->name, key) == 0)
            return v->value;
    }
    return NULL;
}

const char *p11t_conffile_value(const p11t_conffile *f, const char *key)
{
    if (f->conf == NULL || f->section == NULL)
        return NULL;
    return p11t_conffile_lookup(f->conf, f->section, key);
}

static CK_RV load(const char *file, CONF *conf, p11t_err *err)
{
    long eline = -1;
    const char *reason;
    CK_RV rv = CKR_OK;

    ERR_set_mark();
    if (NCONF_load(conf, file, &eline) <= 0) {
        reason = ERR_reason_error_string(ERR_peek_last_error());
        if (reason == NULL)
            reason = "cannot load";
        if (eline > 0)
            p11t_err_set(err, P11T_CKR_CONFIG, "%s:%ld: %s", file, eline,
                         reason);
        else
            p11t_err_set(err, P11T_CKR_CONFIG, "%s: %s", file, reason);
        rv = P11T_CKR_CONFIG;
    }
    ERR_pop_to_mark();
    return rv;
}

static CK_RV find_section(const char *file, const CONF *conf,
                          const char *provider, const char **out,
                          p11t_err *err)
{
    const char *init, *providers, *section;

    init = p11t_conffile_lookup(conf, "default", "openssl_conf");
    providers = init != NULL ? p11t_conffile_lookup(conf, init, "providers")
                             : NULL;
    section = providers != NULL
                  ? p11t_conffile_lookup(conf, providers, provider)
                  : NULL;
    if (init == NULL)
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "%s: no 'openssl_conf' in the default section, so "
                     "OpenSSL loads no providers from this file",
                     file);
    else if (NCONF_get_section(conf, init) == NULL)
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "%s: openssl_conf names section [%s], which does not "
                     "exist",
                     file, init);
    else if (providers == NULL)
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "%s: section [%s] has no 'providers' key", file, init);
    else if (NCONF_get_section(conf, providers) == NULL)
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "%s: [%s] providers names section [%s], which does not "
                     "exist",
                     file, init, providers);
    else if (section == NULL)
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "%s: section [%s] has no '%s' entry (the provider to "
                     "configure; see --section)",
                     file, providers, provider);
    else if (NCONF_get_section(conf, section) == NULL)
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "%s: [%s] %s names section [%s], which does not exist",
                     file, providers, provider, section);
    else {
        *out = section;
        return CKR_OK;
    }
    return P11T_CKR_CONFIG;
}

/* Every key of the section into a new config, then the config's checks. */
static CK_RV read_section(const char *file, const CONF *conf,
                          const char *section, p11t_config **out,
                          p11t_err *err)
{
    STACK_OF(CONF_VALUE) *sk = NCONF_get_section(conf, section);
    p11t_config *cfg = p11t_config_new();
    p11t_err e = {0};
    CK_RV rv = CKR_OK;

    if (cfg == NULL) {
        p11t_err_set(err, CKR_HOST_MEMORY, "out of memory");
        return CKR_HOST_MEMORY;
    }
    for (int i = 0; rv == CKR_OK && i < sk_CONF_VALUE_num(sk); i++) {
        const CONF_VALUE *v = sk_CONF_VALUE_value(sk, i);

        rv = p11t_config_set(cfg, v->name, v->value, &e);
    }
    if (rv == CKR_OK)
        rv = p11t_config_check(cfg, &e);
    if (rv != CKR_OK) {
        p11t_err_set(err, rv, "%s: [%s] %s", file, section,
                     e.msg[0] != '\0' ? e.msg : p11t_rv_name(rv));
        p11t_config_free(cfg);
        return rv;
    }
    *out = cfg;
    return CKR_OK;
}

CK_RV p11t_conffile_load(const char *file, const char *provider,
                         p11t_conffile *out, p11t_err *err)
{
    CK_RV rv;

    memset(out, 0, sizeof(*out));
    out->conf = NCONF_new(NULL);
    if (out->conf == NULL) {
        p11t_err_set(err, CKR_HOST_MEMORY, "out of memory");
        return CKR_HOST_MEMORY;
    }
    rv = load(file, out->conf, err);
    if (rv == CKR_OK)
        rv = find_section(file, out->conf, provider, &out->section, err);
    if (rv == CKR_OK)
        rv = read_section(file, out->conf, out->section, &out->cfg, err);
    if (rv != CKR_OK)
        p11t_conffile_free(out);
    return rv;
}

void p11t_conffile_free(p11t_conffile *f)
{
    p11t_config_free(f->cfg);
    NCONF_free(f->conf);
    memset(f, 0, sizeof(*f));
}
