/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tls.c - server-side handshake cost, p11ticket tickets against OpenSSL's
 * built-in in-memory tickets, over memory BIOs in one process.
 *
 * Four servers, interleaved batch by batch:
 *   p11ticket  p11ticket_SSL_CTX_new() + p11ticket_enable(): the product.
 *   floor      in-memory ticket keys through a ticket callback that first
 *              makes the same bare PKCS#11 calls p11ticket needs for that
 *              ticket (ticket.c, bench_floor_token_work).  It is the best
 *              any PKCS#11 design can do with this token: the token's own
 *              cost, inside a real handshake, with nothing of p11ticket.
 *   floor*     the same on random public session keys (bench.h): what the
 *              token would allow if it did not unwrap a private key per
 *              call.  A reference for the targets, not reachable.
 *   in-memory  SSL_CTX_new_ex() with OpenSSL's built-in ticket keys.
 *
 * Only the server's calls are timed: SSL_new, every SSL_do_handshake step,
 * SSL_shutdown and SSL_free of the server object.  The client (its own
 * OSSL_LIB_CTX, never the provider) runs in between, untimed.  Both servers
 * use the same P-256 ECDSA certificate, key exchange on X25519, no session
 * cache (so tickets are the only way to resume) and the default two tickets
 * after a full TLS 1.3 handshake.  P-256 is offered after X25519 only
 * because TLS 1.2 lets an ECDSA certificate be used only on a curve the
 * client lists (RFC 8422 section 5.1); both sides prefer X25519, so every
 * handshake uses it.
 *
 * Every resumption must resume on both sides, and every TLS 1.3 resumption
 * must bring the client a renewal ticket, in both variants: a benchmark of
 * failed resumptions, or of one variant doing less work, is meaningless.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "bench.h"
#include "p11ticket.h"

#define HS_PER_BATCH 40
#define GROUPS "X25519:P-256"
#define MIN_ROUNDS 3

/* What the client saw of one connection (its new-session callback). */
typedef struct client_seen {
    int sessions;        /* new sessions: NewSessionTickets in TLS 1.3 */
    SSL_SESSION *latest; /* owned */
} client_seen;

static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    client_seen *cs = SSL_get_app_data(ssl);

    if (cs == NULL)
        return 0;
    cs->sessions++;
    SSL_SESSION_free(cs->latest);
    cs->latest = sess;
    return 1; /* we keep the reference */
}

const char *bench_hs_name(enum bench_hs kind)
{
    switch (kind) {
    case BENCH_TLS13_RESUME:
        return "TLS 1.3 resumption";
    case BENCH_TLS12_RESUME:
        return "TLS 1.2 resumption";
    case BENCH_TLS13_FULL:
        return "TLS 1.3 full handshake";
    default:
        return "?";
    }
}

static int use_new_cert(SSL_CTX *const *ctxs, int nctx, OSSL_LIB_CTX *libctx)
{
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(libctx, NULL, "EC", "P-256");
    X509 *x = X509_new_ex(libctx, NULL);
    X509_NAME *n;
    int ok = 0;

    if (pkey == NULL || x == NULL)
        goto done;
    n = X509_get_subject_name(x);
    ok = X509_set_version(x, X509_VERSION_3) &&
         ASN1_INTEGER_set(X509_get_serialNumber(x), 1) &&
         X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL &&
         X509_gmtime_adj(X509_getm_notAfter(x), 86400) != NULL &&
         X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
                                    (const unsigned char *)"localhost", -1, -1,
                                    0) &&
         X509_set_issuer_name(x, n) && X509_set_pubkey(x, pkey) &&
         X509_sign(x, pkey, EVP_sha256()) > 0;
    for (int i = 0; ok && i < nctx; i++)
        ok = SSL_CTX_use_certificate(ctxs[i], x) == 1 &&
             SSL_CTX_use_PrivateKey(ctxs[i], pkey) == 1 &&
             SSL_CTX_check_private_key(ctxs[i]) == 1;
done:
    X509_free(x);
    EVP_PKEY_free(pkey);
    return ok;
}

static int server_common(SSL_CTX *ctx)
{
    /* No stateful cache: a resumption can only come from the ticket. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    return SSL_CTX_set1_groups_list(ctx, GROUPS) == 1 &&
           SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1;
}

/*
 * OpenSSL's built-in tickets need no provider of ours.  A plain
 * SSL_CTX_new_ex(libctx, NULL, ...) resolves "HMAC" to the first provider
 * in the file that offers it (docs/design.md,
 * "Provider order and the default provider"); if that is p11ticket, its
 * proxy would carry the baseline's HMACs too, so then ask for the default
 * provider explicitly.
 */
static const char *inmem_propq(OSSL_LIB_CTX *libctx)
{
    EVP_MAC *mac = EVP_MAC_fetch(libctx, "HMAC", NULL);
    const char *name =
        mac != NULL ? OSSL_PROVIDER_get0_name(EVP_MAC_get0_provider(mac)) : "";
    int is_default = strcmp(name, "default") == 0;

    EVP_MAC_free(mac);
    ERR_clear_error();
    return is_default ? NULL : "provider=default";
}

/* ---- the floor server's ticket callback ---------------------------------- */

static const unsigned char floor_key_name[16] = "bench-floor-tick";

/*
 * The token work first (what p11ticket would ask of the token for this
 * ticket), then libssl's contexts keyed in memory so the handshake goes on.
 * TLS 1.3 renews like the other two servers; TLS 1.2 keeps the ticket.
 */
static int floor_ticket_cb(SSL *s, unsigned char key_name[16],
                           unsigned char *iv, EVP_CIPHER_CTX *cctx,
                           EVP_MAC_CTX *hctx, int enc)
{
    bench_tls *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(s));
    bench_floor *fl;

    if (t == NULL)
        return 0;
    fl = SSL_get_SSL_CTX(s) == t->srv[BENCH_V_FLOOR_PUB] ? t->floor_pub
                                                         : t->floor;
    if (enc) {
        if (RAND_bytes(iv, P11T_IV_LEN) != 1 ||
            !bench_floor_token_work(fl, 1))
            return 0;
        memcpy(key_name, floor_key_name, sizeof(floor_key_name));
        return EVP_EncryptInit_ex2(cctx, t->floor_cipher, t->floor_aes, iv,
                                   NULL) &&
               bench_hmac_init(hctx, t->floor_hmac, sizeof(t->floor_hmac));
    }
    if (memcmp(key_name, floor_key_name, sizeof(floor_key_name)) != 0 ||
        !bench_floor_token_work(fl, 0))
        return 0;
    if (!EVP_DecryptInit_ex2(cctx, t->floor_cipher, t->floor_aes, iv, NULL) ||
        !bench_hmac_init(hctx, t->floor_hmac, sizeof(t->floor_hmac)))
        return -1;
    return SSL_version(s) == TLS1_3_VERSION ? 2 : 1;
}

int bench_tls_init(bench_tls *t, bench_prov *p, bench_floor *floor,
                   bench_floor *floor_pub, const uint8_t *expect_name,
                   char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    t->expect_name = expect_name;
    t->floor = floor;
    t->floor_pub = floor_pub;
    t->mem_propq = inmem_propq(p->libctx);
    t->srv[BENCH_V_P11] = p11ticket_SSL_CTX_new(p->libctx, TLS_server_method());
    if (t->srv[BENCH_V_P11] == NULL) {
        bench_ossl_err(err, errlen, "p11ticket_SSL_CTX_new");
        return 0;
    }
    if (p11ticket_enable(t->srv[BENCH_V_P11]) != 1) {
        snprintf(err, errlen, "p11ticket_enable failed (see the message "
                 "above)");
        return 0;
    }
    t->srv[BENCH_V_FLOOR] =
        SSL_CTX_new_ex(p->libctx, t->mem_propq, TLS_server_method());
    t->srv[BENCH_V_FLOOR_PUB] =
        SSL_CTX_new_ex(p->libctx, t->mem_propq, TLS_server_method());
    t->srv[BENCH_V_MEM] =
        SSL_CTX_new_ex(p->libctx, t->mem_propq, TLS_server_method());
    t->floor_cipher =
        EVP_CIPHER_fetch(p->libctx, "AES-256-CBC", "provider=default");
    t->client_libctx = OSSL_LIB_CTX_new();
    t->client = t->client_libctx != NULL
                    ? SSL_CTX_new_ex(t->client_libctx, NULL, TLS_client_method())
                    : NULL;
    if (t->srv[BENCH_V_FLOOR] == NULL || t->srv[BENCH_V_FLOOR_PUB] == NULL ||
        t->srv[BENCH_V_MEM] == NULL ||
        t->floor_cipher == NULL || t->client == NULL ||
        RAND_bytes(t->floor_aes, sizeof(t->floor_aes)) != 1 ||
        RAND_bytes(t->floor_hmac, sizeof(t->floor_hmac)) != 1 ||
        SSL_CTX_set1_groups_list(t->client, GROUPS) != 1 ||
        !use_new_cert(t->srv, BENCH_V_COUNT, p->libctx)) {
        bench_ossl_err(err, errlen, "setting up the TLS contexts");
        return 0;
    }
    for (int v = 0; v < BENCH_V_COUNT; v++)
        if (!server_common(t->srv[v])) {
            bench_ossl_err(err, errlen, "setting up the TLS contexts");
            return 0;
        }
    for (int v = BENCH_V_FLOOR; v <= BENCH_V_FLOOR_PUB; v++) {
        SSL_CTX_set_app_data(t->srv[v], t);
        if (SSL_CTX_set_tlsext_ticket_key_evp_cb(t->srv[v],
                                                 floor_ticket_cb) != 1) {
            bench_ossl_err(err, errlen, "installing the floor ticket callback");
            return 0;
        }
    }
    /* OpenSSL's own keys for the in-memory reference, even where an
     * OPENSSL_CONF with auto-enable gave every SSL_CTX p11ticket's
     * callback. */
    SSL_CTX_set_tlsext_ticket_key_evp_cb(t->srv[BENCH_V_MEM], NULL);
    SSL_CTX_set_session_cache_mode(t->client, SSL_SESS_CACHE_CLIENT |
                                                  SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(t->client, on_new_session);
    return 1;
}

void bench_tls_free(bench_tls *t)
{
    for (int v = 0; v < BENCH_V_COUNT; v++)
        SSL_CTX_free(t->srv[v]);
    SSL_CTX_free(t->client);
    OSSL_LIB_CTX_free(t->client_libctx);
    EVP_CIPHER_free(t->floor_cipher);
    OPENSSL_cleanse(t, sizeof(*t));
}

static int want_io(SSL *ssl, int rc)
{
    int e = SSL_get_error(ssl, rc);

    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

/*
 * The server's steps, kept out of line so that a profiler can select
 * exactly the timed part (valgrind --toggle-collect='bench_server_*').
 */
__attribute__((noinline)) static SSL *bench_server_new(SSL_CTX *sctx, BIO *bs)
{
    SSL *s = SSL_new(sctx);

    if (s != NULL) {
        SSL_set_bio(s, bs, bs);
        SSL_set_accept_state(s);
    }
    return s;
}

__attribute__((noinline)) static int bench_server_step(SSL *s)
{
    return SSL_do_handshake(s);
}

__attribute__((noinline)) static void bench_server_shutdown(SSL *s)
{
    SSL_shutdown(s);
}

__attribute__((noinline)) static void bench_server_free(SSL *s)
{
    SSL_free(s);
}

/*
 * One connection.  *server_s accumulates the server's time; cs receives
 * what the client got.  want_reused: 1 resumption, 0 full handshake.
 */
static int connect_once(bench_tls *t, SSL_CTX *sctx, int version,
                        SSL_SESSION *sess, int want_reused, client_seen *cs,
                        double *server_s, char *err, size_t errlen)
{
    SSL *c = SSL_new(t->client), *s = NULL;
    BIO *bc = NULL, *bs = NULL;
    int cdone = 0, sdone = 0, ok = 0, rc;
    unsigned char byte;
    double t0, st = 0;

    if (c == NULL || !BIO_new_bio_pair(&bc, 0, &bs, 0)) {
        bench_ossl_err(err, errlen, "client setup");
        goto done;
    }
    SSL_set_bio(c, bc, bc);
    SSL_set_connect_state(c);
    SSL_set_app_data(c, cs);
    if (version == TLS1_2_VERSION)
        SSL_set_max_proto_version(c, TLS1_2_VERSION);
    if (sess != NULL && !SSL_set_session(c, sess)) {
        bench_ossl_err(err, errlen, "SSL_set_session");
        goto done;
    }

    t0 = bench_now();
    s = bench_server_new(sctx, bs);
    st += bench_now() - t0;
    if (s == NULL) {
        bench_ossl_err(err, errlen, "server SSL_new");
        BIO_free(bs);
        goto done;
    }
    for (int i = 0; i < 32 && !(cdone && sdone); i++) {
        if (!cdone) {
            rc = SSL_do_handshake(c);
            if (rc == 1)
                cdone = 1;
            else if (!want_io(c, rc)) {
                bench_ossl_err(err, errlen, "client handshake");
                goto done;
            }
        }
        if (!sdone) {
            t0 = bench_now();
            rc = bench_server_step(s);
            st += bench_now() - t0;
            if (rc == 1)
                sdone = 1;
            else if (!want_io(s, rc)) {
                bench_ossl_err(err, errlen, "server handshake");
                goto done;
            }
        }
    }
    if (!cdone || !sdone) {
        snprintf(err, errlen, "handshake did not finish");
        goto done;
    }
    /* TLS 1.3 tickets follow the handshake: let the client read them. */
    rc = SSL_read(c, &byte, 1);
    if (rc > 0 || !want_io(c, rc)) {
        bench_ossl_err(err, errlen, "client reading the tickets");
        goto done;
    }
    if (SSL_session_reused(s) != want_reused ||
        SSL_session_reused(c) != want_reused) {
        snprintf(err, errlen, "%s: server reused %d, client reused %d, "
                 "expected %d: %s", SSL_get_version(s), SSL_session_reused(s),
                 SSL_session_reused(c), want_reused,
                 want_reused ? "the ticket did not resume"
                             : "a full handshake resumed");
        goto done;
    }
    /* TLS 1.2 resumption has no key exchange; every other handshake must
     * have used X25519. */
    if ((version == TLS1_3_VERSION || !want_reused) &&
        SSL_get_negotiated_group(s) != NID_X25519) {
        snprintf(err, errlen, "%s: key exchange did not use X25519",
                 SSL_get_version(s));
        goto done;
    }
    /* A clean close keeps the client's session resumable. */
    SSL_shutdown(c);
    t0 = bench_now();
    bench_server_shutdown(s);
    st += bench_now() - t0;
    ok = 1;
done:
    SSL_free(c);
    if (s != NULL) {
        t0 = bench_now();
        bench_server_free(s);
        st += bench_now() - t0;
    }
    ERR_clear_error();
    *server_s += st;
    return ok;
}

static int ticket_name_is(const SSL_SESSION *sess, const uint8_t *name)
{
    const unsigned char *tick = NULL;
    size_t len = 0;

    if (sess == NULL || !SSL_SESSION_has_ticket(sess))
        return 0;
    SSL_SESSION_get0_ticket(sess, &tick, &len);
    return len >= P11T_NAME_LEN && memcmp(tick, name, P11T_NAME_LEN) == 0;
}

static const char *const vname[BENCH_V_COUNT] = {"p11ticket", "floor",
                                                  "floor*", "in-memory"};

/* A full handshake whose session the client keeps, for resumptions. */
static int prime(bench_tls *t, enum bench_hs kind, int v, SSL_SESSION **sess,
                 char *err, size_t errlen)
{
    int version = kind == BENCH_TLS12_RESUME ? TLS1_2_VERSION : TLS1_3_VERSION;
    client_seen cs = {0};
    double ignored = 0;

    *sess = NULL;
    if (kind == BENCH_TLS13_FULL)
        return 1;
    if (!connect_once(t, t->srv[v], version, NULL, 0, &cs, &ignored, err,
                      errlen)) {
        SSL_SESSION_free(cs.latest);
        return 0;
    }
    *sess = cs.latest;
    if (v == BENCH_V_P11 && !ticket_name_is(*sess, t->expect_name)) {
        snprintf(err, errlen, "%s: the p11ticket server's ticket is not under "
                 "the bench's key", bench_hs_name(kind));
        return 0;
    }
    return 1;
}

/*
 * n handshakes of one kind against one server.  *sess is the session to
 * resume (TLS 1.3: replaced by each renewal, as clients do); *tickets counts
 * the client's new sessions.
 */
static int batch(bench_tls *t, enum bench_hs kind, int v, int n,
                 SSL_SESSION **sess, long *tickets, double *server_s,
                 char *err, size_t errlen)
{
    int version = kind == BENCH_TLS12_RESUME ? TLS1_2_VERSION : TLS1_3_VERSION;
    int resume = kind != BENCH_TLS13_FULL;

    for (int k = 0; k < n; k++) {
        client_seen cs = {0};

        if (bench_stop) {
            snprintf(err, errlen, "interrupted");
            return 0;
        }
        if (!connect_once(t, t->srv[v], version, *sess, resume, &cs, server_s,
                          err, errlen)) {
            SSL_SESSION_free(cs.latest);
            snprintf(err + strlen(err), errlen - strlen(err), " (%s server, %s)",
                     vname[v], bench_hs_name(kind));
            return 0;
        }
        *tickets += cs.sessions;
        if (kind == BENCH_TLS13_RESUME && cs.sessions < 1) {
            SSL_SESSION_free(cs.latest);
            snprintf(err, errlen, "%s: the %s server issued no renewal ticket",
                     bench_hs_name(kind), vname[v]);
            return 0;
        }
        if (v == BENCH_V_P11 && cs.latest != NULL &&
            !ticket_name_is(cs.latest, t->expect_name)) {
            SSL_SESSION_free(cs.latest);
            snprintf(err, errlen, "%s: a p11ticket ticket is not under the "
                     "bench's key", bench_hs_name(kind));
            return 0;
        }
        if (kind == BENCH_TLS13_RESUME) {
            SSL_SESSION_free(*sess);
            *sess = cs.latest;
        } else {
            SSL_SESSION_free(cs.latest);
        }
    }
    return 1;
}

static int stats_clean(bench_tls *t, const p11ticket_stats *before,
                       enum bench_hs kind, char *err, size_t errlen)
{
    p11ticket_stats after;

    p11ticket_get_stats(t->srv[BENCH_V_P11], &after);
    if (after.errors == before->errors && after.refused == before->refused)
        return 1;
    snprintf(err, errlen, "%s: the p11ticket server had %llu token errors and "
             "refused %llu tickets", bench_hs_name(kind),
             after.errors - before->errors, after.refused - before->refused);
    return 0;
}

int bench_tls_run(bench_tls *t, enum bench_hs kind, double seconds,
                  bench_tls_result *out, char *err, size_t errlen)
{
    SSL_SESSION *sess[BENCH_V_COUNT] = {NULL};
    bench_series hs_s[BENCH_V_COUNT] = {{0}}, us[BENCH_V_COUNT] = {{0}};
    long tickets[BENCH_V_COUNT] = {0};
    p11ticket_stats before;
    double end;
    size_t round;
    int ok = 0;

    memset(out, 0, sizeof(*out));
    p11ticket_get_stats(t->srv[BENCH_V_P11], &before);
    for (int v = 0; v < BENCH_V_COUNT; v++)
        if (!prime(t, kind, v, &sess[v], err, errlen))
            goto done;
    end = bench_now() + seconds;
    for (round = 0; round < MIN_ROUNDS || bench_now() < end; round++) {
        for (int v = 0; v < BENCH_V_COUNT; v++) {
            double server_s = 0;

            if (!batch(t, kind, v, HS_PER_BATCH, &sess[v], &tickets[v],
                       &server_s, err, errlen))
                goto done;
            if (!bench_series_add(&hs_s[v], HS_PER_BATCH / server_s) ||
                !bench_series_add(&us[v], server_s * 1e6 / HS_PER_BATCH)) {
                snprintf(err, errlen, "out of memory");
                goto done;
            }
        }
    }
    if (!stats_clean(t, &before, kind, err, errlen))
        goto done;
    out->rounds = round;
    out->handshakes = round * HS_PER_BATCH;
    /* Paired per round first: the medians below sort the series. */
    out->ratio = bench_median_ratio(hs_s[BENCH_V_P11].v, hs_s[BENCH_V_MEM].v,
                                    round);
    out->bound = bench_median_ratio(hs_s[BENCH_V_FLOOR].v, hs_s[BENCH_V_MEM].v,
                                    round);
    out->bound_pub = bench_median_ratio(hs_s[BENCH_V_FLOOR_PUB].v,
                                        hs_s[BENCH_V_MEM].v, round);
    out->vs_floor = bench_median_ratio(hs_s[BENCH_V_P11].v,
                                       hs_s[BENCH_V_FLOOR].v, round);
    for (int v = 0; v < BENCH_V_COUNT; v++) {
        out->hs_s[v] = bench_series_median(&hs_s[v]);
        out->us[v] = bench_series_median(&us[v]);
        out->tickets[v] = (double)tickets[v] / (double)out->handshakes;
    }
    ok = 1;
done:
    for (int v = 0; v < BENCH_V_COUNT; v++) {
        SSL_SESSION_free(sess[v]);
        bench_series_free(&hs_s[v]);
        bench_series_free(&us[v]);
    }
    return ok;
}

int bench_tls_loop(bench_tls *t, enum bench_hs kind, int v, long n,
                   double *server_us, char *err, size_t errlen)
{
    SSL_SESSION *sess = NULL;
    p11ticket_stats before;
    long tickets = 0;
    double server_s = 0;
    int ok;

    p11ticket_get_stats(t->srv[BENCH_V_P11], &before);
    ok = prime(t, kind, v, &sess, err, errlen) &&
         batch(t, kind, v, (int)n, &sess, &tickets, &server_s, err, errlen) &&
         stats_clean(t, &before, kind, err, errlen);
    SSL_SESSION_free(sess);
    *server_us = server_s * 1e6 / (double)n;
    return ok;
}
