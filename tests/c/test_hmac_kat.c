/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_hmac_kat.c - the provider's "HMAC" in proxy mode (raw keys) against
 * known-answer vectors: RFC 4231 (HMAC-SHA-256) and RFC 2202 (HMAC-SHA-1),
 * kept in data/hmac_kat.txt.
 *
 * Once an SSL_CTX routes HMAC to the provider, libssl runs the TLS 1.3
 * Finished MAC, the PSK binder and the TLS 1.2 CBC record MAC through it
 * with raw keys (docs/design.md, "The raw-key HMAC proxy"), so the proxy
 * must be an exact HMAC: init, split updates, dupctx mid-stream, re-init
 * with the same key, and the size / block-size parameters.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>

#include "p11ticket.h"
#include "support.h"

#define MAX_VECTORS 64

typedef struct kat {
    char name[128];
    char digest[16];
    unsigned char *key, *data, *mac;
    long keylen, datalen, maclen;
} kat;

static kat vectors[MAX_VECTORS];
static size_t n_vectors;

static char *trim(char *s)
{
    char *e;

    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s &&
           (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
        *--e = '\0';
    return s;
}

static int record_done(kat *k)
{
    return k->name[0] != '\0' && k->digest[0] != '\0' && k->key != NULL &&
           k->data != NULL && k->mac != NULL;
}

static int load_vectors(const char *path)
{
    FILE *fp = fopen(path, "r");
    char line[1024];
    kat *cur = &vectors[0];
    int lineno = 0;

    if (fp == NULL) {
        perror(path);
        return 0;
    }
    while (fgets(line, sizeof(line), fp) != NULL) {
        char *s = trim(line), *eq, *key, *val;

        lineno++;
        if (*s == '#')
            continue;
        if (*s == '\0') {
            if (cur->name[0] == '\0')
                continue;
            if (!record_done(cur) || n_vectors + 1 >= MAX_VECTORS) {
                fprintf(stderr, "%s:%d: incomplete record\n", path, lineno);
                fclose(fp);
                return 0;
            }
            cur = &vectors[++n_vectors];
            continue;
        }
        eq = strchr(s, '=');
        if (eq == NULL) {
            fprintf(stderr, "%s:%d: no '='\n", path, lineno);
            fclose(fp);
            return 0;
        }
        *eq = '\0';
        key = trim(s);
        val = trim(eq + 1);
        if (strcmp(key, "name") == 0)
            snprintf(cur->name, sizeof(cur->name), "%s", val);
        else if (strcmp(key, "digest") == 0)
            snprintf(cur->digest, sizeof(cur->digest), "%s", val);
        else if (strcmp(key, "key") == 0)
            cur->key = OPENSSL_hexstr2buf(val, &cur->keylen);
        else if (strcmp(key, "data") == 0)
            cur->data = OPENSSL_hexstr2buf(val, &cur->datalen);
        else if (strcmp(key, "mac") == 0)
            cur->mac = OPENSSL_hexstr2buf(val, &cur->maclen);
        else {
            fprintf(stderr, "%s:%d: unknown field %s\n", path, lineno, key);
            fclose(fp);
            return 0;
        }
    }
    fclose(fp);
    if (cur->name[0] != '\0') {
        if (!record_done(cur)) {
            fprintf(stderr, "%s: incomplete last record\n", path);
            return 0;
        }
        n_vectors++;
    }
    return 1;
}

static void free_vectors(void)
{
    for (size_t i = 0; i < n_vectors; i++) {
        OPENSSL_free(vectors[i].key);
        OPENSSL_free(vectors[i].data);
        OPENSSL_free(vectors[i].mac);
    }
}

/* ---- helpers ------------------------------------------------------------- */

static EVP_MAC_CTX *keyed(EVP_MAC *mac, const kat *k)
{
    OSSL_PARAM params[2];
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *)k->digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    if (ctx == NULL || !EVP_MAC_init(ctx, k->key, (size_t)k->keylen, params)) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Final, and compare the leading maclen bytes with the vector. */
static int final_ok(EVP_MAC_CTX *ctx, const kat *k, size_t mdsize)
{
    unsigned char out[EVP_MAX_MD_SIZE];
    size_t outl = 0;

    if (!EVP_MAC_final(ctx, out, &outl, sizeof(out)))
        return 0;
    return outl == mdsize && (size_t)k->maclen <= outl &&
           memcmp(out, k->mac, (size_t)k->maclen) == 0;
}

static int get_size_params(EVP_MAC_CTX *ctx, size_t *size, size_t *bsize)
{
    OSSL_PARAM params[3];

    *size = *bsize = 0;
    params[0] = OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, size);
    params[1] = OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_BLOCK_SIZE, bsize);
    params[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_CTX_get_params(ctx, params);
}

static void kat_one(EVP_MAC *mac, const kat *k)
{
    EVP_MD *md = EVP_MD_fetch(NULL, k->digest, NULL);
    size_t mdsize = md != NULL ? (size_t)EVP_MD_get_size(md) : 0;
    size_t n = (size_t)k->datalen, size, bsize;
    EVP_MAC_CTX *ctx, *dup;
    const char *nm = k->name;

    EVP_MD_free(md);
    if (!CHECKF(mdsize > 0, "%s: digest %s", nm, k->digest))
        return;

    /* One update. */
    ctx = keyed(mac, k);
    if (!CHECKF(ctx != NULL, "%s: init", nm))
        return;
    CHECKF(EVP_MAC_CTX_get_mac_size(ctx) == mdsize, "%s", nm);
    CHECKF(get_size_params(ctx, &size, &bsize), "%s", nm);
    CHECKF(size == mdsize, "%s: size %zu", nm, size);
    CHECKF(bsize == 64, "%s: block-size %zu", nm, bsize);
    CHECKF(EVP_MAC_update(ctx, k->data, n), "%s", nm);
    CHECKF(final_ok(ctx, k, mdsize), "%s: one update", nm);

    /* Re-init with the same key (key == NULL keeps it). */
    CHECKF(EVP_MAC_init(ctx, NULL, 0, NULL) &&
               EVP_MAC_update(ctx, k->data, n) && final_ok(ctx, k, mdsize),
           "%s: re-init with the same key", nm);
    EVP_MAC_CTX_free(ctx);

    /* Split updates at every position, including empty updates. */
    for (size_t cut = 0; cut <= n; cut++) {
        ctx = keyed(mac, k);
        if (!CHECKF(ctx != NULL, "%s: init", nm))
            return;
        if (!CHECKF(EVP_MAC_update(ctx, k->data, cut) &&
                        EVP_MAC_update(ctx, NULL, 0) &&
                        EVP_MAC_update(ctx, k->data + cut, n - cut) &&
                        final_ok(ctx, k, mdsize),
                    "%s: split at %zu", nm, cut)) {
            EVP_MAC_CTX_free(ctx);
            break;
        }
        EVP_MAC_CTX_free(ctx);
    }

    /* Byte by byte. */
    ctx = keyed(mac, k);
    if (!CHECKF(ctx != NULL, "%s: init", nm))
        return;
    for (size_t i = 0; i < n; i++)
        EVP_MAC_update(ctx, k->data + i, 1);
    CHECKF(final_ok(ctx, k, mdsize), "%s: byte by byte", nm);
    EVP_MAC_CTX_free(ctx);

    /* dupctx mid-stream: both copies finish independently. */
    ctx = keyed(mac, k);
    if (!CHECKF(ctx != NULL, "%s: init", nm))
        return;
    CHECKF(EVP_MAC_update(ctx, k->data, n / 2), "%s", nm);
    dup = EVP_MAC_CTX_dup(ctx);
    if (CHECKF(dup != NULL, "%s: dup", nm)) {
        CHECKF(EVP_MAC_CTX_get_mac_size(dup) == mdsize, "%s: dup size", nm);
        CHECKF(EVP_MAC_update(dup, k->data + n / 2, n - n / 2) &&
                   final_ok(dup, k, mdsize),
               "%s: dup mid-stream", nm);
        EVP_MAC_CTX_free(dup);
    }
    /* The original is untouched by what the copy did (and by its free). */
    CHECKF(EVP_MAC_update(ctx, k->data + n / 2, n - n / 2) &&
               final_ok(ctx, k, mdsize),
           "%s: original after dup", nm);
    EVP_MAC_CTX_free(ctx);

    /* dup right after init, before any data; free the original first. */
    ctx = keyed(mac, k);
    if (!CHECKF(ctx != NULL, "%s: init", nm))
        return;
    dup = EVP_MAC_CTX_dup(ctx);
    EVP_MAC_CTX_free(ctx);
    if (CHECKF(dup != NULL, "%s: dup", nm)) {
        CHECKF(EVP_MAC_update(dup, k->data, n) && final_ok(dup, k, mdsize),
               "%s: dup after init", nm);
        EVP_MAC_CTX_free(dup);
    }

    /* Digest and key as settable parameters, then init without a key. */
    ctx = EVP_MAC_CTX_new(mac);
    if (CHECKF(ctx != NULL, "%s", nm)) {
        OSSL_PARAM p[3];

        p[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                (char *)k->digest, 0);
        p[1] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k->key,
                                                 (size_t)k->keylen);
        p[2] = OSSL_PARAM_construct_end();
        CHECKF(EVP_MAC_CTX_set_params(ctx, p) &&
                   EVP_MAC_init(ctx, NULL, 0, NULL) &&
                   EVP_MAC_update(ctx, k->data, n) && final_ok(ctx, k, mdsize),
               "%s: key via params", nm);
        EVP_MAC_CTX_free(ctx);
    }
}

static int routed_param(EVP_MAC *mac, int *value)
{
    OSSL_PARAM p[2];
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    int ok;

    *value = -7;
    p[0] = OSSL_PARAM_construct_int(P11TICKET_PARAM_ROUTED, value);
    p[1] = OSSL_PARAM_construct_end();
    ok = ctx != NULL && EVP_MAC_CTX_get_params(ctx, p);
    EVP_MAC_CTX_free(ctx);
    return ok;
}

static const char *prov_name(const EVP_MAC *mac)
{
    const OSSL_PROVIDER *p = mac != NULL ? EVP_MAC_get0_provider(mac) : NULL;

    return p != NULL ? OSSL_PROVIDER_get0_name(p) : "(none)";
}

/* The whole vector set through mac; also cross-checks a sample with EVP_Q_mac.
 */
static void all_vectors(EVP_MAC *mac, OSSL_LIB_CTX *libctx, const char *propq)
{
    unsigned long before = t_failed;

    for (size_t i = 0; i < n_vectors; i++)
        kat_one(mac, &vectors[i]);
    for (size_t i = 0; i < n_vectors; i++) {
        const kat *k = &vectors[i];
        unsigned char out[EVP_MAX_MD_SIZE];
        size_t outl = 0;

        CHECKF(EVP_Q_mac(libctx, "HMAC", propq, k->digest, NULL, k->key,
                         (size_t)k->keylen, k->data, (size_t)k->datalen, out,
                         sizeof(out), &outl) != NULL &&
                   memcmp(out, k->mac, (size_t)k->maclen) == 0,
               "%s: EVP_Q_mac", k->name);
    }
    fprintf(stderr, "  %zu vectors through %s: %s\n", n_vectors, prov_name(mac),
            t_failed == before ? "ok" : "FAILED");
}

int main(void)
{
    char path[1024], cnf[512];
    OSSL_LIB_CTX *libctx, *lazy, *first;
    EVP_MAC *mac, *dmac;
    t_env env;
    int v;

    REQUIRE(t_env_init(&env, "hmac-kat"));
    snprintf(path, sizeof(path), "%s/hmac_kat.txt", env.data_dir);
    REQUIRE(load_vectors(path));
    CHECKF(n_vectors == 14, "%zu vectors in %s", n_vectors, path);

    t_section("default provider's HMAC (checks the vectors themselves)");
    REQUIRE(t_write_cnf(&env, "openssl.cnf", NULL, cnf, sizeof(cnf)));
    libctx = t_libctx_load(cnf);
    REQUIRE(libctx != NULL);
    dmac = EVP_MAC_fetch(libctx, "HMAC", "provider=default");
    REQUIRE(dmac != NULL);
    all_vectors(dmac, libctx, "provider=default");

    t_section("p11ticket HMAC, proxy mode");
    mac = EVP_MAC_fetch(libctx, "HMAC", P11TICKET_PROPERTY);
    REQUIRE(mac != NULL);
    CHECKF(strcmp(prov_name(mac), "p11ticket") == 0, "provider %s",
           prov_name(mac));
    all_vectors(mac, libctx, P11TICKET_PROPERTY);

    t_section("gettable parameters and " P11TICKET_PARAM_ROUTED);
    {
        const OSSL_PARAM *g = EVP_MAC_gettable_ctx_params(mac);

        CHECK(g != NULL &&
              OSSL_PARAM_locate_const(g, OSSL_MAC_PARAM_SIZE) != NULL);
        CHECK(g != NULL &&
              OSSL_PARAM_locate_const(g, OSSL_MAC_PARAM_BLOCK_SIZE) != NULL);
        CHECK(g != NULL &&
              OSSL_PARAM_locate_const(g, P11TICKET_PARAM_ROUTED) != NULL);
    }
    CHECK(routed_param(mac, &v));
    CHECK_EQ(v, 1);
    CHECK(routed_param(dmac, &v));
    CHECKF(v == -7, "default's HMAC wrote %d into " P11TICKET_PARAM_ROUTED, v);
    EVP_MAC_free(mac);
    EVP_MAC_free(dmac);
    OSSL_LIB_CTX_free(libctx);

    /* Proxy mode never needs the token: a token that does not exist must not
     * matter (with default_properties every HMAC of the process comes here). */
    t_section("proxy mode with a token that does not exist");
    {
        t_cnf o = {.token_uri = "pkcs11:token=no-such-token"};

        REQUIRE(t_write_cnf(&env, "missing-token.cnf", &o, cnf, sizeof(cnf)));
    }
    lazy = t_libctx_load(cnf);
    REQUIRE(lazy != NULL);
    mac = EVP_MAC_fetch(lazy, "HMAC", P11TICKET_PROPERTY);
    REQUIRE(mac != NULL);
    all_vectors(mac, lazy, P11TICKET_PROPERTY);
    EVP_MAC_free(mac);
    OSSL_LIB_CTX_free(lazy);

    /* With p11ticket listed first, an unqualified fetch resolves to it
     * (docs/design.md, "Provider order and the default provider"), so the
     * proxy serves every plain HMAC user. */
    t_section("p11ticket listed first, unqualified fetch");
    {
        t_cnf o = {.order = T_P11T_FIRST};

        REQUIRE(t_write_cnf(&env, "p11t-first.cnf", &o, cnf, sizeof(cnf)));
    }
    first = t_libctx_load(cnf);
    REQUIRE(first != NULL);
    mac = EVP_MAC_fetch(first, "HMAC", NULL);
    REQUIRE(mac != NULL);
    CHECKF(strcmp(prov_name(mac), "p11ticket") == 0, "provider %s",
           prov_name(mac));
    all_vectors(mac, first, NULL);
    EVP_MAC_free(mac);
    OSSL_LIB_CTX_free(first);

    free_vectors();
    t_env_cleanup(&env);
    return t_finish("test_hmac_kat");
}
