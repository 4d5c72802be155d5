/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_resume.c - session resumption with tickets issued and accepted by the
 * token, through p11ticket_SSL_CTX_new() + p11ticket_enable(), in memory.
 *
 * Covers: TLS 1.2 and 1.3 resumption; the ticket's key_name is the token
 * key's name (RFC 5077 section 4); SSL_CTX_set_num_tickets(4); no ticket with
 * SSL_OP_NO_TICKET; an expired session; tampered tickets (every part:
 * key_name, IV, ciphertext, MAC); a ticket under a key name the token does
 * not hold; rotation to a newer key (renewal) and a destroyed generation;
 * and the statistics p11ticket_get_stats() reports along the way.
 *
 * The server's session cache is off, so every resumption comes from a
 * ticket.  The client runs in the default library context and never loads
 * the provider.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "p11ticket.h"
#include "support.h"

static t_env env;
static SSL_CTX *sctx, *cctx;
static p11ticket_stats last;
static t_log logc = {.want = NULL};

/* Counter deltas since the previous call (any field not named must not move
 * unless listed as "may"). */
typedef struct delta {
    long long issued, resumed, renewed, unknown_key, refused, errors;
} delta;

static delta stats_delta(void)
{
    p11ticket_stats now;
    delta d = {0};

    if (!CHECK(p11ticket_get_stats(sctx, &now) == 1))
        return d;
    d.issued = (long long)(now.issued - last.issued);
    d.resumed = (long long)(now.resumed - last.resumed);
    d.renewed = (long long)(now.renewed - last.renewed);
    d.unknown_key = (long long)(now.unknown_key - last.unknown_key);
    d.refused = (long long)(now.refused - last.refused);
    d.errors = (long long)(now.errors - last.errors);
    last = now;
    return d;
}

#define CHECK_DELTA(d, field, want)                                            \
    CHECKF((d).field == (want), "%s: stats." #field " moved by %lld, want %d", \
           what, (d).field, (int)(want))

static int name_of(const SSL_SESSION *s, uint8_t out[16])
{
    const unsigned char *t;

    if (t_ticket(s, &t) < 16)
        return 0;
    memcpy(out, t, 16);
    return 1;
}

static int ticket_under(const SSL_SESSION *s, const uint8_t key[16])
{
    uint8_t n[16];

    return name_of(s, n) && memcmp(n, key, 16) == 0;
}

/* A full handshake that must yield a ticket under key. */
static SSL_SESSION *fresh(const char *what, int version, const uint8_t key[16])
{
    t_conn_opts o = {.version = version};
    t_conn r;
    SSL_SESSION *s;

    if (!CHECKF(t_connect(sctx, cctx, &o, &r), "%s: %s", what, r.why))
        return NULL;
    CHECKF(!r.client_reused && !r.server_reused, "%s", what);
    CHECKF(ticket_under(r.session, key),
           "%s: ticket of %zu bytes not under "
           "the expected key",
           what, t_ticket(r.session, NULL));
    s = r.session;
    r.session = NULL;
    t_conn_clear(&r);
    return s;
}

/* Offers sess; *next receives the client's session afterwards (or NULL).
 * want_reused -1: either outcome is within contract, but the two sides
 * must agree and the connection must succeed. */
static int resume(const char *what, int version, SSL_SESSION *sess,
                  int want_reused, SSL_SESSION **next)
{
    t_conn_opts o = {.version = version, .session = sess};
    t_conn r;
    int ok;

    if (next != NULL)
        *next = NULL;
    if (!CHECKF(t_connect(sctx, cctx, &o, &r), "%s: %s", what, r.why))
        return 0;
    if (want_reused < 0)
        ok = CHECKF(r.client_reused == r.server_reused,
                    "%s: client reused %d but server %d", what,
                    r.client_reused, r.server_reused);
    else
        ok = CHECKF(r.client_reused == want_reused &&
                        r.server_reused == want_reused,
                    "%s: reused client %d server %d, want %d", what,
                    r.client_reused, r.server_reused, want_reused);
    if (next != NULL) {
        *next = r.session;
        r.session = NULL;
    }
    t_conn_clear(&r);
    return ok;
}

static const char *vname(int version)
{
    return version == TLS1_3_VERSION ? "TLS 1.3" : "TLS 1.2";
}

/* ---- scenarios ----------------------------------------------------------- */

static void basic(int version, const uint8_t key[16])
{
    char what[64];
    SSL_SESSION *s, *next = NULL;
    delta d;

    snprintf(what, sizeof(what), "%s full handshake", vname(version));
    t_section("%s", what);
    stats_delta();
    s = fresh(what, version, key);
    if (s == NULL)
        return;
    d = stats_delta();
    /* TLS 1.3 sends two tickets by default (SSL_CTX_set_num_tickets). */
    CHECK_DELTA(d, issued, version == TLS1_3_VERSION ? 2 : 1);
    CHECK_DELTA(d, resumed, 0);
    CHECK_DELTA(d, errors, 0);
    CHECK_DELTA(d, refused, 0);
    {
        const unsigned char *t;
        size_t len = t_ticket(s, &t);

        /* key_name(16) | IV(16) | AES-CBC-PAD ciphertext | HMAC-SHA256(32) */
        CHECKF(len >= 16 + 16 + 16 + 32 && (len - 16 - 16 - 32) % 16 == 0,
               "%s: ticket length %zu", what, len);
    }

    snprintf(what, sizeof(what), "%s resumption", vname(version));
    t_section("%s", what);
    resume(what, version, s, 1, &next);
    d = stats_delta();
    CHECK_DELTA(d, resumed, 1);
    CHECK_DELTA(d, unknown_key, 0);
    CHECK_DELTA(d, errors, 0);
    if (version == TLS1_3_VERSION) {
        /* TLS 1.3 renews on every resumption, like libssl's own keys. */
        CHECK_DELTA(d, renewed, 1);
        CHECKF(d.issued >= 1, "%s: no new ticket after resumption", what);
        CHECKF(next != NULL && ticket_under(next, key) &&
                   t_ticket(next, NULL) > 0,
               "%s: renewed ticket not under the current key", what);
    } else {
        /* TLS 1.2 under the current key: accepted, not renewed. */
        CHECK_DELTA(d, renewed, 0);
        CHECK_DELTA(d, issued, 0);
    }
    /* The resumed session resumes again (1.3: the renewed ticket). */
    snprintf(what, sizeof(what), "%s second resumption", vname(version));
    resume(what, version, next != NULL ? next : s, 1, NULL);
    stats_delta();
    SSL_SESSION_free(next);
    SSL_SESSION_free(s);
}

static SSL_SESSION *collected[16];
static int n_collected;

static int collect(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    if (n_collected >= (int)(sizeof(collected) / sizeof(collected[0])))
        return 0;
    collected[n_collected++] = sess;
    return 1; /* we keep the reference */
}

static void four_tickets(const uint8_t key[16])
{
    const char *what = "TLS 1.3 num_tickets 4";
    SSL_CTX *c4 = SSL_CTX_new(TLS_client_method());
    t_conn_opts o = {.version = TLS1_3_VERSION};
    t_conn r;
    delta d;

    t_section("%s", what);
    if (!CHECK(c4 != NULL))
        return;
    SSL_CTX_set_session_cache_mode(c4, SSL_SESS_CACHE_CLIENT |
                                           SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(c4, collect);
    CHECK(SSL_CTX_set_num_tickets(sctx, 4));
    stats_delta();
    n_collected = 0;
    if (CHECKF(t_connect(sctx, c4, &o, &r), "%s: %s", what, r.why)) {
        d = stats_delta();
        CHECK_DELTA(d, issued, 4);
        CHECK_EQ(n_collected, 4);
        for (int i = 0; i < n_collected; i++) {
            char w[80];

            snprintf(w, sizeof(w), "%s: ticket %d", what, i);
            CHECKF(ticket_under(collected[i], key), "%s: not under the key", w);
            for (int j = 0; j < i; j++) {
                const unsigned char *a, *b;
                size_t la = t_ticket(collected[i], &a),
                       lb = t_ticket(collected[j], &b);

                CHECKF(la != lb || memcmp(a, b, la) != 0,
                       "%s: same bytes as ticket %d", w, j);
            }
            resume(w, TLS1_3_VERSION, collected[i], 1, NULL);
        }
        d = stats_delta();
        CHECK_DELTA(d, resumed, 4);
        CHECK_DELTA(d, errors, 0);
    }
    t_conn_clear(&r);
    for (int i = 0; i < n_collected; i++)
        SSL_SESSION_free(collected[i]);
    n_collected = 0;
    SSL_CTX_set_num_tickets(sctx, 2);
    SSL_CTX_free(c4);
}

static void no_ticket(const uint8_t key[16])
{
    static const struct {
        const char *what;
        int version;
        int server_side;
    } cases[] = {
        {"TLS 1.2 SSL_OP_NO_TICKET on the server", TLS1_2_VERSION, 1},
        {"TLS 1.2 SSL_OP_NO_TICKET on the client", TLS1_2_VERSION, 0},
        {"TLS 1.3 SSL_OP_NO_TICKET on the server", TLS1_3_VERSION, 1},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *what = cases[i].what;
        t_conn_opts o = {.version = cases[i].version};
        t_conn r, again;
        delta d;

        t_section("%s", what);
        if (cases[i].server_side)
            o.server_options = SSL_OP_NO_TICKET;
        else
            o.client_options = SSL_OP_NO_TICKET;
        stats_delta();
        if (!CHECKF(t_connect(sctx, cctx, &o, &r), "%s: %s", what, r.why))
            continue;
        d = stats_delta();
        CHECK_DELTA(d, issued, 0);
        CHECK_DELTA(d, refused, 0);
        if (cases[i].version == TLS1_2_VERSION)
            CHECKF(t_ticket(r.session, NULL) == 0, "%s: got a ticket", what);
        else /* TLS 1.3 falls back to a stateful ticket: never ours */
            CHECKF(!ticket_under(r.session, key), "%s: got a token ticket",
                   what);
        o.session = r.session;
        if (CHECKF(t_connect(sctx, cctx, &o, &again), "%s: %s", what,
                   again.why))
            CHECKF(!again.client_reused && !again.server_reused,
                   "%s: resumed (session cache is off)", what);
        t_conn_clear(&again);
        t_conn_clear(&r);
        stats_delta();
    }
}

static void tampered(int version, const uint8_t key[16])
{
    char what[96];
    SSL_SESSION *s;
    size_t len;
    long long rejected = 0, resumed_anyway = 0;

    snprintf(what, sizeof(what), "%s tampered ticket", vname(version));
    t_section("%s", what);
    s = fresh(what, version, key);
    if (s == NULL)
        return;
    len = t_ticket(s, NULL);
    {
        const struct {
            const char *part;
            size_t off;
        } spots[] = {
            {"key_name", 0},
            {"key_name (last byte)", 15},
            {"IV", 16},
            {"IV (last byte)", 31},
            {"first ciphertext block", 32},
            {"middle of the ciphertext", 32 + (len - 64 - 32) / 2},
            {"last ciphertext byte (padding)", len - 33},
            {"MAC (first byte)", len - 32},
            {"MAC (last byte)", len - 1},
        };

        for (size_t i = 0; i < sizeof(spots) / sizeof(spots[0]); i++) {
            SSL_SESSION *bad = t_session_tamper(s, spots[i].off, 0x01, NULL);
            SSL_SESSION *next = NULL;
            char w[160];
            delta d;

            snprintf(w, sizeof(w),
                     "%s: flipped bit in the %s (offset %zu of %zu)", what,
                     spots[i].part, spots[i].off, len);
            if (!CHECKF(bad != NULL, "%s: cannot build the session", w))
                continue;
            stats_delta();
            /* Full handshake, no alert, and a fresh ticket. */
            resume(w, version, bad, 0, &next);
            d = stats_delta();
            CHECKF(next != NULL && ticket_under(next, key),
                   "%s: no fresh ticket after the full handshake", w);
            CHECKF(d.errors == 0, "%s: counted as a token error", w);
            if (spots[i].off >= 16) {
                rejected++;
                resumed_anyway += d.resumed;
            }
            if (spots[i].off < 16)
                CHECKF(d.unknown_key == 1, "%s: unknown_key moved by %lld", w,
                       d.unknown_key);
            else
                CHECKF(d.unknown_key == 0, "%s: unknown_key moved by %lld", w,
                       d.unknown_key);
            SSL_SESSION_free(next);
            SSL_SESSION_free(bad);
        }
    }
    /* libssl rejected those tickets (HMAC mismatch): no resumption
     * happened, so "resumed" (tickets accepted) must not count them. */
    CHECKF(resumed_anyway == 0,
           "%s: stats.resumed counted %lld of %lld tickets that libssl "
           "rejected after the callback (HMAC mismatch)",
           what, resumed_anyway, rejected);
    /* The original still resumes: nothing was poisoned. */
    snprintf(what, sizeof(what), "%s untampered original", vname(version));
    resume(what, version, s, 1, NULL);
    stats_delta();
    SSL_SESSION_free(s);
}

static void unknown_name(int version, const uint8_t key[16])
{
    char what[96];
    uint8_t other[16];
    SSL_SESSION *s, *bad;
    delta d;

    snprintf(what, sizeof(what), "%s ticket under a key name not on the token",
             vname(version));
    t_section("%s", what);
    s = fresh(what, version, key);
    if (s == NULL)
        return;
    REQUIRE(RAND_bytes(other, sizeof(other)) == 1);
    bad = t_session_tamper(s, 0, 0, other);
    if (CHECKF(bad != NULL, "%s: cannot build the session", what)) {
        stats_delta();
        resume(what, version, bad, 0, NULL);
        d = stats_delta();
        CHECK_DELTA(d, unknown_key, 1);
        CHECK_DELTA(d, resumed, 0);
        CHECK_DELTA(d, errors, 0);
        CHECKF(d.issued >= 1, "%s: no fresh ticket", what);
    }
    SSL_SESSION_free(bad);
    SSL_SESSION_free(s);
}

static void expect_current(const char *what, const uint8_t key[16])
{
    char status[256], hex[64], want[33];

    t_hexstr(key, 16, want);
    CHECK(p11ticket_status(sctx, status, sizeof(status), hex, sizeof(hex)) ==
          1);
    CHECKF(strcmp(status, "ok") == 0, "%s: status '%s'", what, status);
    CHECKF(strcmp(hex, want) == 0, "%s: current key %s, want %s", what, hex,
           want);
}

int main(void)
{
    char cnf[512];
    uint8_t k1[16], k2[16];
    SSL_SESSION *t12, *t13, *old12, *old13, *next;
    OSSL_LIB_CTX *libctx;
    int64_t now = (int64_t)time(NULL);
    /* Rotation is picked up at the next refresh; keep it short. */
    t_cnf o = {.extra = "refresh-interval = 1"};
    p11ticket_stats st;
    delta d;
    const char *what;

    REQUIRE(t_env_init(&env, "resume"));
    REQUIRE(t_key_create(&env, NULL, now - 3600, INT64_MAX, INT64_MAX, k1));
    REQUIRE(t_write_cnf(&env, "openssl.cnf", &o, cnf, sizeof(cnf)));
    libctx = t_libctx_load(cnf);
    REQUIRE(libctx != NULL);
    t_log_capture(&logc);

    sctx = p11ticket_SSL_CTX_new(libctx, TLS_server_method());
    cctx = SSL_CTX_new(TLS_client_method());
    REQUIRE(sctx != NULL && cctx != NULL);
    REQUIRE(t_use_new_cert(sctx, libctx));
    SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);

    t_section("stats before and after p11ticket_enable");
    CHECK_EQ(p11ticket_get_stats(sctx, &st), 0);
    CHECK_EQ(p11ticket_get_stats(cctx, &st), 0);
    CHECK_EQ(p11ticket_get_stats(NULL, &st), 0);
    CHECK_EQ(p11ticket_enable(sctx), 1);
    CHECK_EQ(p11ticket_get_stats(sctx, &last), 1);
    CHECK(last.issued == 0 && last.resumed == 0 && last.renewed == 0 &&
          last.unknown_key == 0 && last.refused == 0 && last.errors == 0);
    expect_current("after enable", k1);

    basic(TLS1_2_VERSION, k1);
    basic(TLS1_3_VERSION, k1);
    four_tickets(k1);
    no_ticket(k1);
    tampered(TLS1_2_VERSION, k1);
    tampered(TLS1_3_VERSION, k1);
    unknown_name(TLS1_2_VERSION, k1);
    unknown_name(TLS1_3_VERSION, k1);

    /* Sessions under k1 for the rotation below. */
    old12 = fresh("TLS 1.2 under k1", TLS1_2_VERSION, k1);
    old13 = fresh("TLS 1.3 under k1", TLS1_3_VERSION, k1);

    /* Session lifetime: the server's timeout travels inside the ticket. */
    t_section("expired sessions (timeout 1 s, 2 s later)");
    SSL_CTX_set_timeout(sctx, 1);
    t12 = fresh("TLS 1.2 timeout 1", TLS1_2_VERSION, k1);
    t13 = fresh("TLS 1.3 timeout 1", TLS1_3_VERSION, k1);
    SSL_CTX_set_timeout(sctx, 7200);
    /* Rotation: a newer generation becomes current at the next refresh. */
    REQUIRE(t_key_create(&env, NULL, now - 1800, INT64_MAX, INT64_MAX, k2));
    sleep(2);
    stats_delta();
    if (t12 != NULL) {
        /* The client would still offer it; the server must refuse. */
        SSL_SESSION_set_timeout(t12, 3600);
        resume("TLS 1.2 expired session", TLS1_2_VERSION, t12, 0, NULL);
    }
    if (t13 != NULL)
        resume("TLS 1.3 expired session", TLS1_3_VERSION, t13, 0, NULL);
    d = stats_delta();
    what = "expired sessions";
    CHECK_DELTA(d, errors, 0);
    SSL_SESSION_free(t12);
    SSL_SESSION_free(t13);

    t_section("rotation: k2 is newer, k1 still decrypts and is renewed");
    expect_current("after rotation", k2);
    what = "TLS 1.2 resumption under the old key";
    if (old12 != NULL && resume(what, TLS1_2_VERSION, old12, 1, &next)) {
        d = stats_delta();
        CHECK_DELTA(d, resumed, 1);
        CHECK_DELTA(d, renewed, 1);
        CHECK_DELTA(d, issued, 1);
        CHECKF(next != NULL && ticket_under(next, k2),
               "%s: renewed ticket not under the new key", what);
        if (next != NULL)
            resume("TLS 1.2 renewed ticket", TLS1_2_VERSION, next, 1, NULL);
        SSL_SESSION_free(next);
    }
    SSL_SESSION_free(fresh("TLS 1.2 after rotation", TLS1_2_VERSION, k2));
    SSL_SESSION_free(fresh("TLS 1.3 after rotation", TLS1_3_VERSION, k2));
    stats_delta();

    t_section("destroyed generation: k1 gone from the token");
    REQUIRE(t_key_destroy(&env, NULL, k1));
    /* Right away the server may still hold k1: its session copy lives
     * until the next scan (the documented refresh bound), or, without
     * copies, the token operation fails and degrades to a full handshake.
     * Either way the connection succeeds and a fresh ticket is under k2. */
    what = "TLS 1.3 ticket under a just-destroyed key";
    if (old13 != NULL) {
        resume(what, TLS1_3_VERSION, old13, -1, &next);
        d = stats_delta();
        CHECKF(next != NULL && ticket_under(next, k2),
               "%s: no fresh ticket under the current key", what);
        SSL_SESSION_free(next);
    }
    /* After a refresh the name is simply unknown. */
    sleep(2);
    stats_delta();
    what = "TLS 1.2 ticket under a destroyed key, after a refresh";
    if (old12 != NULL) {
        resume(what, TLS1_2_VERSION, old12, 0, &next);
        d = stats_delta();
        CHECK_DELTA(d, unknown_key, 1);
        CHECK_DELTA(d, resumed, 0);
        CHECK_DELTA(d, errors, 0);
        CHECKF(next != NULL && ticket_under(next, k2),
               "%s: no fresh ticket under the current key", what);
        SSL_SESSION_free(next);
    }
    what = "TLS 1.3 ticket under a destroyed key, after a refresh";
    if (old13 != NULL) {
        resume(what, TLS1_3_VERSION, old13, 0, NULL);
        d = stats_delta();
        CHECK_DELTA(d, unknown_key, 1);
        CHECK_DELTA(d, resumed, 0);
        CHECK_DELTA(d, errors, 0);
    }
    basic(TLS1_2_VERSION, k2);
    basic(TLS1_3_VERSION, k2);
    SSL_SESSION_free(old12);
    SSL_SESSION_free(old13);

    t_section("totals");
    CHECK(p11ticket_get_stats(sctx, &st) == 1);
    fprintf(stderr,
            "  issued %llu resumed %llu renewed %llu unknown %llu "
            "refused %llu errors %llu\n",
            st.issued, st.resumed, st.renewed, st.unknown_key, st.refused,
            st.errors);
    CHECK_EQ(st.errors, 0);
    CHECK_EQ(st.refused, 0);
    CHECKF(logc.count[P11TICKET_LOG_ERROR] == 0 &&
               logc.count[P11TICKET_LOG_WARNING] == 0,
           "errors/warnings logged; first error: %s; last: %s",
           logc.first_error, logc.last);

    t_log_capture(NULL);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    OSSL_LIB_CTX_free(libctx);
    t_env_cleanup(&env);
    return t_finish("test_resume");
}
