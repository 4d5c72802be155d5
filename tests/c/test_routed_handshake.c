/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_routed_handshake.c - TLS through an SSL_CTX whose HMAC resolves to
 * the provider (docs/design.md, "Three ways to route").
 *
 * Once routed, libssl runs the TLS 1.3 Finished MAC and PSK binder and the
 * TLS 1.2 CBC record MAC through the provider's HMAC proxy, so every cipher
 * family must still complete a handshake and carry data, in both provider
 * orders.  Scenarios, each in its own process (a fresh provider state):
 *   1. SSL_CTX_new_ex(libctx, "?p11ticket=yes") with default listed first,
 *      then with p11ticket listed first: handshakes without tickets, then
 *      with p11ticket_enable() and resumption;
 *   2. both orders loaded into two library contexts of ONE process;
 *   3. default_properties = ?p11ticket=yes in a private libctx, plain
 *      SSL_CTX_new_ex(libctx, NULL): handshakes, enable, resumption;
 *   4. the same in the default libctx (OPENSSL_CONF, plain SSL_CTX_new, as
 *      nginx does), run in a re-executed copy of this program;
 *   5. no routing + p11ticket_enable(): tickets refused, handshakes fine,
 *      one error about routing (private libctx and default libctx);
 *   6. no "default" provider at all: every algorithm, HMAC included, comes
 *      from a provider of another name (as with a FIPS provider), and the
 *      proxy still has an HMAC to forward to.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_dispatch.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>

#include "p11ticket.h"
#include "support.h"

static t_env env;
static uint8_t key1[16];

typedef struct variant {
    const char *name;
    int version;
    const char *cipher; /* TLS 1.2 */
    const char *suites; /* TLS 1.3 */
    uint64_t options;   /* both sides */
    const char *want;   /* negotiated cipher */
} variant;

static const variant variants[] = {
    {"TLS 1.3 AES-256-GCM-SHA384", TLS1_3_VERSION, NULL,
     "TLS_AES_256_GCM_SHA384", 0, "TLS_AES_256_GCM_SHA384"},
    {"TLS 1.3 AES-128-GCM-SHA256", TLS1_3_VERSION, NULL,
     "TLS_AES_128_GCM_SHA256", 0, "TLS_AES_128_GCM_SHA256"},
    {"TLS 1.2 GCM", TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256", NULL, 0,
     "ECDHE-ECDSA-AES128-GCM-SHA256"},
    {"TLS 1.2 CBC encrypt-then-MAC", TLS1_2_VERSION,
     "ECDHE-ECDSA-AES128-SHA256", NULL, 0, "ECDHE-ECDSA-AES128-SHA256"},
    {"TLS 1.2 CBC MAC-then-encrypt", TLS1_2_VERSION,
     "ECDHE-ECDSA-AES128-SHA256", NULL, SSL_OP_NO_ENCRYPT_THEN_MAC,
     "ECDHE-ECDSA-AES128-SHA256"},
};
#define N_VARIANTS (sizeof(variants) / sizeof(variants[0]))

static void opts_for(const variant *v, t_conn_opts *o, SSL_SESSION *sess)
{
    memset(o, 0, sizeof(*o));
    o->version = v->version;
    o->cipher = v->cipher;
    o->suites = v->suites;
    o->client_options = v->options;
    o->server_options = v->options;
    o->session = sess;
}

/* Every variant completes a handshake and carries data both ways.  With
 * tickets, each variant also resumes from its ticket, which must be ours. */
static void handshakes(const char *what, SSL_CTX *sctx, SSL_CTX *cctx,
                       int tickets)
{
    for (size_t i = 0; i < N_VARIANTS; i++) {
        const variant *v = &variants[i];
        t_conn_opts o;
        t_conn full, again;
        const unsigned char *tick = NULL;
        size_t tlen;

        opts_for(v, &o, NULL);
        if (!CHECKF(t_connect(sctx, cctx, &o, &full), "%s, %s: %s", what,
                    v->name, full.why))
            continue;
        CHECKF(full.version == v->version, "%s, %s: version %x", what, v->name,
               (unsigned)full.version);
        CHECKF(strcmp(full.cipher, v->want) == 0, "%s, %s: cipher %s", what,
               v->name, full.cipher);
        CHECKF(!full.client_reused && !full.server_reused, "%s, %s", what,
               v->name);
        tlen = t_ticket(full.session, &tick);
        if (!tickets) {
            t_conn_clear(&full);
            continue;
        }
        if (CHECKF(tlen >= 16 + 16 + 16 + 32, "%s, %s: ticket of %zu bytes",
                   what, v->name, tlen))
            CHECKF(memcmp(tick, key1, 16) == 0,
                   "%s, %s: ticket not under the token key", what, v->name);
        opts_for(v, &o, full.session);
        if (CHECKF(t_connect(sctx, cctx, &o, &again), "%s, %s resume: %s", what,
                   v->name, again.why)) {
            CHECKF(again.client_reused && again.server_reused,
                   "%s, %s: not resumed (client %d, server %d)", what, v->name,
                   again.client_reused, again.server_reused);
            CHECKF(strcmp(again.cipher, v->want) == 0, "%s, %s: cipher %s",
                   what, v->name, again.cipher);
        }
        t_conn_clear(&again);
        t_conn_clear(&full);
    }
}

static SSL_CTX *server_ctx(OSSL_LIB_CTX *libctx, const char *propq)
{
    SSL_CTX *s = SSL_CTX_new_ex(libctx, propq, TLS_server_method());

    if (s == NULL)
        return NULL;
    if (!t_use_new_cert(s, libctx)) {
        SSL_CTX_free(s);
        return NULL;
    }
    /* Resumption must come from the ticket, not from a session cache. */
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
    return s;
}

static const char *mac_provider(OSSL_LIB_CTX *libctx, const char *propq)
{
    EVP_MAC *mac = EVP_MAC_fetch(libctx, "HMAC", propq);
    const char *name = "(none)";

    if (mac != NULL) {
        name = OSSL_PROVIDER_get0_name(EVP_MAC_get0_provider(mac));
        EVP_MAC_free(mac);
    }
    ERR_clear_error();
    return name;
}

/* ---- 1. SSL_CTX_new_ex(libctx, "?p11ticket=yes") --------------------------
 */

static int routed_order(void *arg)
{
    int order = *(int *)arg;
    const char *what =
        order == T_P11T_FIRST ? "p11ticket first" : "default first";
    t_cnf o = {.order = order};
    char cnf[512];
    OSSL_LIB_CTX *libctx;
    SSL_CTX *sctx, *tctx, *cctx;
    p11ticket_stats st;
    t_log log = {.want = "rout"};

    if (!CHECK(t_write_cnf(&env,
                           order == T_P11T_FIRST ? "p11t-first.cnf"
                                                 : "default-first.cnf",
                           &o, cnf, sizeof(cnf))))
        return 0;
    libctx = t_libctx_load(cnf);
    if (!CHECK(libctx != NULL))
        return 0;
    t_log_capture(&log);
    CHECKF(strcmp(mac_provider(libctx, P11TICKET_PROPQ), "p11ticket") == 0,
           "%s: HMAC with " P11TICKET_PROPQ " comes from %s", what,
           mac_provider(libctx, P11TICKET_PROPQ));

    sctx = server_ctx(libctx, P11TICKET_PROPQ);
    /* The client shares the libctx without properties: with p11ticket
     * listed first its HMACs come from the proxy as well. */
    cctx = SSL_CTX_new_ex(libctx, NULL, TLS_client_method());
    if (!CHECK(sctx != NULL && cctx != NULL))
        return 0;
    t_section("%s: handshakes through the routed HMAC, no tickets", what);
    handshakes(what, sctx, cctx, 0);

    t_section("%s: p11ticket_SSL_CTX_new + p11ticket_enable + resumption",
              what);
    tctx = p11ticket_SSL_CTX_new(libctx, TLS_server_method());
    if (CHECK(tctx != NULL)) {
        CHECK(t_use_new_cert(tctx, libctx));
        SSL_CTX_set_session_cache_mode(tctx, SSL_SESS_CACHE_OFF);
        CHECK_EQ(p11ticket_enable(tctx), 1);
        handshakes(what, tctx, cctx, 1);
        CHECK(p11ticket_get_stats(tctx, &st) == 1);
        CHECKF(st.issued >= N_VARIANTS && st.resumed == N_VARIANTS &&
                   st.errors == 0 && st.refused == 0 && st.unknown_key == 0,
               "%s: issued %llu resumed %llu errors %llu refused %llu", what,
               st.issued, st.resumed, st.errors, st.refused);
        SSL_CTX_free(tctx);
    }
    CHECKF(log.count[P11TICKET_LOG_ERROR] == 0, "%s: errors logged: %s", what,
           log.first_error);
    t_log_capture(NULL);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    OSSL_LIB_CTX_free(libctx);
    return 1;
}

/* ---- 2. both orders in one process ----------------------------------------
 */

static int two_libctx(void *arg)
{
    t_cnf a = {.order = T_DEFAULT_FIRST}, b = {.order = T_P11T_FIRST};
    char cnf_a[512], cnf_b[512];
    OSSL_LIB_CTX *la, *lb;
    SSL_CTX *sa, *sb, *ca, *cb;

    (void)arg;
    if (!CHECK(
            t_write_cnf(&env, "default-first.cnf", &a, cnf_a, sizeof(cnf_a))) ||
        !CHECK(t_write_cnf(&env, "p11t-first.cnf", &b, cnf_b, sizeof(cnf_b))))
        return 0;
    la = t_libctx_load(cnf_a);
    lb = t_libctx_load(cnf_b);
    if (!CHECK(la != NULL && lb != NULL))
        return 0;
    sa = p11ticket_SSL_CTX_new(la, TLS_server_method());
    sb = p11ticket_SSL_CTX_new(lb, TLS_server_method());
    ca = SSL_CTX_new_ex(la, NULL, TLS_client_method());
    cb = SSL_CTX_new_ex(lb, NULL, TLS_client_method());
    if (!CHECK(sa != NULL && sb != NULL && ca != NULL && cb != NULL))
        return 0;
    CHECK(t_use_new_cert(sa, la) && t_use_new_cert(sb, lb));
    SSL_CTX_set_session_cache_mode(sa, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_cache_mode(sb, SSL_SESS_CACHE_OFF);
    /* Two provider instances, one PKCS#11 module in the process. */
    CHECK_EQ(p11ticket_enable(sa), 1);
    CHECK_EQ(p11ticket_enable(sb), 1);
    t_section("two library contexts in one process, interleaved");
    handshakes("libctx A", sa, ca, 1);
    handshakes("libctx B", sb, cb, 1);
    handshakes("libctx A again", sa, ca, 1);
    SSL_CTX_free(sa);
    SSL_CTX_free(sb);
    SSL_CTX_free(ca);
    SSL_CTX_free(cb);
    OSSL_LIB_CTX_free(la);
    OSSL_LIB_CTX_free(lb);
    return 1;
}

/* ---- 3. default_properties in a private libctx
 * -------------------------------- */

static int default_props_private(void *arg)
{
    t_cnf o = {.order = T_DEFAULT_FIRST, .default_props = 1};
    char cnf[512];
    OSSL_LIB_CTX *libctx;
    SSL_CTX *sctx, *cctx;
    t_log log = {.want = "rout"};

    (void)arg;
    if (!CHECK(t_write_cnf(&env, "default-props.cnf", &o, cnf, sizeof(cnf))))
        return 0;
    libctx = t_libctx_load(cnf);
    if (!CHECK(libctx != NULL))
        return 0;
    CHECKF(strcmp(mac_provider(libctx, NULL), "p11ticket") == 0,
           "an unqualified HMAC fetch comes from %s",
           mac_provider(libctx, NULL));
    t_log_capture(&log);
    sctx = server_ctx(libctx, NULL);
    cctx = SSL_CTX_new_ex(libctx, NULL, TLS_client_method());
    if (!CHECK(sctx != NULL && cctx != NULL))
        return 0;
    t_section("default_properties, private libctx: handshakes, no tickets");
    handshakes("default_properties", sctx, cctx, 0);
    t_section("default_properties, private libctx: enable + resumption");
    /* OpenSSL 3.0 cannot tell an SSL_CTX's libctx: plain enable looks in
     * the default libctx, finds no provider and must say so (tickets
     * refused); enable_ex names the libctx and works. */
    CHECKF(p11ticket_enable(sctx) == 0,
           "p11ticket_enable on SSL_CTX_new_ex(libctx, NULL) claimed success");
    CHECKF(log.first_error[0] != '\0',
           "p11ticket_enable failed without logging why");
    CHECKF(p11ticket_enable_ex(sctx, libctx) == 1,
           "p11ticket_enable_ex on SSL_CTX_new_ex(libctx, NULL) found no "
           "usable provider: %s",
           log.first_error);
    handshakes("default_properties", sctx, cctx, 1);
    t_log_capture(NULL);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    OSSL_LIB_CTX_free(libctx);
    return 1;
}

/* ---- 5. no routing, private libctx
 * ------------------------------------------- */

/* Three connections of each version: no ticket reaches the client, every
 * handshake succeeds, nothing resumes. */
static void refused_tickets(const char *what, SSL_CTX *sctx, SSL_CTX *cctx)
{
    static const int versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};

    for (int round = 0; round < 3; round++)
        for (size_t i = 0; i < 2; i++) {
            t_conn_opts o = {.version = versions[i]};
            t_conn a, b;

            if (!CHECKF(t_connect(sctx, cctx, &o, &a), "%s: %s", what, a.why))
                continue;
            CHECKF(t_ticket(a.session, NULL) == 0,
                   "%s: version %x: client got a ticket of %zu bytes", what,
                   (unsigned)versions[i], t_ticket(a.session, NULL));
            o.session = a.session;
            if (CHECKF(t_connect(sctx, cctx, &o, &b), "%s: %s", what, b.why))
                CHECKF(!b.client_reused && !b.server_reused,
                       "%s: version %x resumed without a ticket", what,
                       (unsigned)versions[i]);
            t_conn_clear(&b);
            t_conn_clear(&a);
        }
}

static int unrouted_private(void *arg)
{
    t_cnf o = {.order = T_DEFAULT_FIRST};
    char cnf[512];
    OSSL_LIB_CTX *libctx;
    SSL_CTX *sctx, *cctx;
    t_log log = {.want = "rout"};

    (void)arg;
    if (!CHECK(t_write_cnf(&env, "default-first.cnf", &o, cnf, sizeof(cnf))))
        return 0;
    libctx = t_libctx_load(cnf);
    if (!CHECK(libctx != NULL))
        return 0;
    t_section("no routing, private libctx: tickets refused");
    CHECKF(strcmp(mac_provider(libctx, NULL), "default") == 0,
           "premise: unqualified HMAC from %s", mac_provider(libctx, NULL));
    t_log_capture(&log);
    sctx = server_ctx(libctx, NULL);
    cctx = SSL_CTX_new_ex(libctx, NULL, TLS_client_method());
    if (!CHECK(sctx != NULL && cctx != NULL))
        return 0;
    p11ticket_enable(sctx); /* 0 or 1: either way tickets must be refused */
    refused_tickets("unrouted private libctx", sctx, cctx);
    CHECKF(log.matched == 1, "%d errors mention routing (first error: %s)",
           log.matched, log.first_error);
    t_log_capture(NULL);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    OSSL_LIB_CTX_free(libctx);
    return 1;
}

/* ---- 6. HMAC from a provider other than "default" ---------------------------
 *
 * A FIPS provider, or any other that offers HMAC in place of "default",
 * names itself in its algorithms' properties ("provider=fips"), so the
 * proxy's inner fetch must not ask for provider=default.  There is no FIPS
 * module here.  "standin" is the default provider's algorithms, taken from
 * a backing library context and offered under provider=standin.  (The
 * default provider itself always says provider=default, under any
 * provider_sect key; and OpenSSL 3.0.22 refuses "identity = default",
 * because "default" also names the file's default section, which
 * provider_conf_params() then walks into: "recursive section reference".)
 */

#define STANDIN "standin"

static OSSL_LIB_CTX *standin_backing;
static OSSL_PROVIDER *standin_real;
static OSSL_FUNC_provider_query_operation_fn *standin_real_query;
static OSSL_FUNC_provider_get_capabilities_fn *standin_real_caps;
static OSSL_ALGORITHM *standin_algs[OSSL_OP__HIGHEST + 1];
static char **standin_props[OSSL_OP__HIGHEST + 1];

/* "provider=default[,more]" becomes "provider=standin[,more]" (encoders
 * and decoders need the rest: output=der, structure=...). */
static char *standin_prop(const char *real)
{
    static const char old[] = "provider=default";
    const char *rest = real;
    size_t len;
    char *p;

    if (strncmp(real, old, sizeof(old) - 1) == 0)
        rest += sizeof(old) - 1;
    len = strlen("provider=" STANDIN) + strlen(rest) + 2;
    if ((p = OPENSSL_malloc(len)) != NULL)
        snprintf(p, len, "provider=" STANDIN "%s%s",
                 rest == real && *rest != '\0' ? "," : "", rest);
    return p;
}

/* The real tables, made once per operation with the properties renamed. */
static const OSSL_ALGORITHM *standin_query(void *provctx, int op, int *no_cache)
{
    const OSSL_ALGORITHM *real;
    size_t n = 0;

    *no_cache = 0;
    if (op < 0 || op > OSSL_OP__HIGHEST)
        return NULL;
    if (standin_algs[op] != NULL)
        return standin_algs[op];
    real = standin_real_query(provctx, op, no_cache);
    if (real == NULL)
        return NULL;
    while (real[n].algorithm_names != NULL)
        n++;
    standin_algs[op] = OPENSSL_zalloc((n + 1) * sizeof(*real));
    standin_props[op] = OPENSSL_zalloc((n + 1) * sizeof(char *));
    if (standin_algs[op] == NULL || standin_props[op] == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        standin_algs[op][i] = real[i];
        standin_props[op][i] = standin_prop(real[i].property_definition);
        standin_algs[op][i].property_definition = standin_props[op][i];
    }
    *no_cache = 0;
    return standin_algs[op];
}

static void standin_free(void)
{
    for (size_t op = 0; op <= OSSL_OP__HIGHEST; op++) {
        for (size_t i = 0; standin_props[op] != NULL &&
                           standin_algs[op][i].algorithm_names != NULL;
             i++)
            OPENSSL_free(standin_props[op][i]);
        OPENSSL_free(standin_props[op]);
        OPENSSL_free(standin_algs[op]);
        standin_props[op] = NULL;
        standin_algs[op] = NULL;
    }
}

/* TLS-GROUP: libssl learns its key exchange groups from the providers. */
static int standin_caps(void *provctx, const char *capability,
                        OSSL_CALLBACK *cb, void *arg)
{
    return standin_real_caps(provctx, capability, cb, arg);
}

/* The provider context handed out is the real default provider's, which
 * its algorithms' functions expect. */
static int standin_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                        const OSSL_DISPATCH **out, void **provctx)
{
    static const OSSL_DISPATCH dispatch[] = {
        {OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))standin_query},
        {OSSL_FUNC_PROVIDER_GET_CAPABILITIES, (void (*)(void))standin_caps},
        {0, NULL}};
    const OSSL_DISPATCH *d;

    (void)handle;
    (void)in;
    if (standin_real == NULL)
        return 0;
    for (d = OSSL_PROVIDER_get0_dispatch(standin_real); d->function_id != 0;
         d++) {
        if (d->function_id == OSSL_FUNC_PROVIDER_QUERY_OPERATION)
            standin_real_query = OSSL_FUNC_provider_query_operation(d);
        else if (d->function_id == OSSL_FUNC_PROVIDER_GET_CAPABILITIES)
            standin_real_caps = OSSL_FUNC_provider_get_capabilities(d);
    }
    *out = dispatch;
    *provctx = OSSL_PROVIDER_get0_provider_ctx(standin_real);
    return standin_real_query != NULL && standin_real_caps != NULL;
}

static int no_default_provider(void *arg)
{
    t_cnf o = {.base = STANDIN, .default_props = 1};
    char cnf[512];
    OSSL_LIB_CTX *libctx;
    SSL_CTX *sctx, *cctx;
    p11ticket_stats st;
    t_log log = {.want = NULL};

    (void)arg;
    t_section("HMAC from \"" STANDIN "\", no default provider: routed "
              "handshakes, enable, resumption");
    standin_backing = OSSL_LIB_CTX_new();
    REQUIRE(standin_backing != NULL);
    standin_real = OSSL_PROVIDER_load(standin_backing, "default");
    REQUIRE(standin_real != NULL);
    if (!CHECK(t_write_cnf(&env, "standin.cnf", &o, cnf, sizeof(cnf))))
        return 0;
    libctx = OSSL_LIB_CTX_new();
    REQUIRE(libctx != NULL);
    REQUIRE(OSSL_PROVIDER_add_builtin(libctx, STANDIN, standin_init));
    if (!CHECKF(OSSL_LIB_CTX_load_config(libctx, cnf), "loading %s", cnf))
        return 0;
    /* The premise: nothing in this libctx answers provider=default, so
     * an inner fetch that asked for it would find nothing. */
    CHECKF(strcmp(mac_provider(libctx, "provider=default"), "(none)") == 0,
           "premise: an HMAC with provider=default from %s",
           mac_provider(libctx, "provider=default"));
    CHECKF(strcmp(mac_provider(libctx, NULL), "p11ticket") == 0,
           "an unqualified HMAC fetch comes from %s",
           mac_provider(libctx, NULL));
    CHECKF(strcmp(mac_provider(libctx, "provider=" STANDIN), STANDIN) == 0,
           "premise: no HMAC from " STANDIN);

    t_log_capture(&log);
    sctx = p11ticket_SSL_CTX_new(libctx, TLS_server_method());
    cctx = SSL_CTX_new_ex(libctx, NULL, TLS_client_method());
    if (!CHECK(sctx != NULL && cctx != NULL))
        return 0;
    CHECK(t_use_new_cert(sctx, libctx));
    SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);
    CHECKF(p11ticket_enable(sctx) == 1, "p11ticket_enable: %s",
           log.first_error);
    handshakes(STANDIN, sctx, cctx, 1);
    CHECK(p11ticket_get_stats(sctx, &st) == 1);
    CHECKF(st.resumed == N_VARIANTS && st.errors == 0 && st.refused == 0,
           "resumed %llu errors %llu refused %llu", st.resumed, st.errors,
           st.refused);
    CHECKF(log.count[P11TICKET_LOG_ERROR] == 0, "error logged: %s",
           log.first_error);
    t_log_capture(NULL);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    OSSL_LIB_CTX_free(libctx);
    standin_free();
    OSSL_PROVIDER_unload(standin_real);
    OSSL_LIB_CTX_free(standin_backing);
    return 1;
}

/* ---- 4 and 5 in the default libctx: this program re-executed ----------------
 */

static int default_libctx_main(const char *mode)
{
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    t_log log = {.want = "rout"};
    p11ticket_stats st;
    int enabled;

    REQUIRE(sctx != NULL && cctx != NULL);
    REQUIRE(t_use_new_cert(sctx, NULL));
    SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);
    t_log_capture(&log);
    if (strcmp(mode, "routed") == 0) {
        t_section("default_properties, default libctx (OPENSSL_CONF), "
                  "SSL_CTX_new");
        CHECKF(strcmp(mac_provider(NULL, NULL), "p11ticket") == 0,
               "an unqualified HMAC fetch comes from %s",
               mac_provider(NULL, NULL));
        handshakes("default libctx, no tickets", sctx, cctx, 0);
        enabled = p11ticket_enable(sctx);
        CHECKF(enabled == 1, "p11ticket_enable: %s", log.first_error);
        handshakes("default libctx", sctx, cctx, 1);
        CHECK(p11ticket_get_stats(sctx, &st) == 1);
        CHECKF(st.resumed == N_VARIANTS && st.errors == 0 && st.refused == 0,
               "resumed %llu errors %llu refused %llu", st.resumed, st.errors,
               st.refused);
        CHECKF(log.count[P11TICKET_LOG_ERROR] == 0, "error logged: %s",
               log.first_error);
    } else {
        t_section("no routing, default libctx (OPENSSL_CONF), SSL_CTX_new");
        CHECKF(strcmp(mac_provider(NULL, NULL), "default") == 0,
               "premise: unqualified HMAC from %s", mac_provider(NULL, NULL));
        /* The provider is loaded and the token fine: enable says so. */
        CHECKF(p11ticket_enable(sctx) == 1, "p11ticket_enable: %s",
               log.first_error);
        refused_tickets("unrouted default libctx", sctx, cctx);
        CHECKF(log.count[P11TICKET_LOG_ERROR] == 1 && log.matched == 1,
               "%d errors logged, %d about routing (first: %s)",
               log.count[P11TICKET_LOG_ERROR], log.matched, log.first_error);
        CHECK(p11ticket_get_stats(sctx, &st) == 1);
        CHECKF(st.issued == 0 && st.refused > 0 && st.resumed == 0,
               "issued %llu refused %llu resumed %llu", st.issued, st.refused,
               st.resumed);
    }
    t_log_capture(NULL);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    return t_finish(mode);
}

static int reexec(const char *mode, const t_cnf *o, const char *file)
{
    char cnf[512], self[600] = "", hex[33];
    char *argv[] = {self, "--default-libctx", (char *)mode, hex, NULL};
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    int rc;

    if (n <= 0 || !t_write_cnf(&env, file, o, cnf, sizeof(cnf)))
        return 0;
    self[n] = '\0';
    t_hexstr(key1, sizeof(key1), hex);
    setenv("OPENSSL_CONF", cnf, 1);
    rc = t_run(argv, NULL, 0);
    unsetenv("OPENSSL_CONF");
    return rc == 0;
}

int main(int argc, char **argv)
{
    int first = T_DEFAULT_FIRST, second = T_P11T_FIRST;
    int64_t now = (int64_t)time(NULL);

    if (argc == 4 && strcmp(argv[1], "--default-libctx") == 0) {
        for (int i = 0; i < 16; i++) {
            unsigned b = 0;

            sscanf(argv[3] + 2 * i, "%2x", &b);
            key1[i] = (uint8_t)b;
        }
        /* Returns from main: exit() runs OPENSSL_cleanup, which unloads the
         * provider from the default libctx, as in any server's exit. */
        return default_libctx_main(argv[2]);
    }

    REQUIRE(t_env_init(&env, "routed"));
    REQUIRE(t_key_create(&env, NULL, now - 60, INT64_MAX, INT64_MAX, key1));

    CHECKF(t_in_child("default first", routed_order, &first),
           "SSL_CTX_new_ex(libctx, ?p11ticket=yes), default listed first");
    CHECKF(t_in_child("p11ticket first", routed_order, &second),
           "SSL_CTX_new_ex(libctx, ?p11ticket=yes), p11ticket listed first");
    CHECKF(t_in_child("two libctx", two_libctx, NULL),
           "both orders in two library contexts of one process");
    CHECKF(
        t_in_child("default_properties private", default_props_private, NULL),
        "default_properties in a private libctx");
    {
        t_cnf o = {.order = T_DEFAULT_FIRST, .default_props = 1};

        CHECKF(reexec("routed", &o, "default-props-global.cnf"),
               "default_properties in the default libctx (OPENSSL_CONF); a "
               "signal after the child's summary line is a crash at exit");
    }
    CHECKF(t_in_child("unrouted private", unrouted_private, NULL),
           "no routing, private libctx");
    CHECKF(t_in_child("no default provider", no_default_provider, NULL),
           "every algorithm from a provider other than default");
    {
        t_cnf o = {.order = T_DEFAULT_FIRST};

        CHECKF(reexec("unrouted", &o, "unrouted-global.cnf"),
               "no routing, default libctx (OPENSSL_CONF); a signal after "
               "the child's summary line is a crash at exit");
    }
    t_env_cleanup(&env);
    return t_finish("test_routed_handshake");
}
