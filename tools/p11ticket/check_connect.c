/* SPDX-License-Identifier: Apache-2.0 */
/*
 * check_connect.c - `check --connect HOST:PORT`: verify a running server,
 * modified or not, from the outside.
 *
 * The tool connects as an ordinary TLS client, once with TLS 1.2 and once
 * with TLS 1.3, takes the ticket the server issues, looks its key name (the
 * first 16 bytes, RFC 5077 section 4) up among the generations on the token
 * (p11t_tool_scan, the reader `list` uses), and presents the session again
 * to see whether the server resumes it.
 *
 * The client never touches the provider: its SSL_CTX lives in a private
 * OSSL_LIB_CTX with only the default provider loaded, and it does not
 * verify the server's certificate (we check tickets, not certificates).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>

#include "tool.h"

#define CONNECT_TIMEOUT_MS 10000   /* TCP connect, per address */
#define HANDSHAKE_TIMEOUT_MS 10000 /* TLS handshake */
/*
 * TLS 1.3 tickets arrive after the handshake (RFC 8446 section 4.6.1).  We
 * send nothing and read for at most this long, stopping at the first
 * NewSessionTicket: a server that sends tickets sends them right after the
 * client's Finished, before any request (libssl does).
 */
#define TICKET_WAIT_MS 2000
/*
 * libssl's stateless ticket: key_name(16) | IV(16) | AES-CBC ciphertext
 * (padded, so at least one block) | HMAC-SHA256(32).  Anything shorter is
 * not such a ticket: a TLS 1.3 server with SSL_OP_NO_TICKET sends its
 * 32-byte session ID as a stateful "ticket" and resumes from its cache.
 */
#define MIN_STATELESS_TICKET (P11T_NAME_LEN + P11T_IV_LEN + 16 + P11T_HMAC_LEN)

#define WHY_LEN 200

typedef struct endpoint {
    char *host, *port;
    const char *sni;    /* NULL: no SNI */
    const char *target; /* HOST:PORT as given, for messages */
} endpoint;

/* One connection: the first NewSessionTicket's session (TLS 1.3). */
typedef struct conn {
    SSL_SESSION *nst;
} conn;

/* What one protocol version showed. */
typedef struct probe {
    int version;
    int handshake;            /* the first handshake completed */
    char why[WHY_LEN];        /* why it did not */
    SSL_SESSION *first;       /* the session it left (ticket or not) */
    int tried_resume;         /* a second connection presented it */
    int resumed;              /* ... and the server resumed it */
    char resume_why[WHY_LEN]; /* the second handshake failed */
    SSL_SESSION *second;      /* the session the second connection left */
} probe;

/* Generations on the token, scanned once after the connections. */
typedef struct token_view {
    p11t_keyinfo *gens;
    size_t n;
    int cur;
    int64_t now;
} token_view;

enum { CONN_OK, CONN_TCP, CONN_TLS, CONN_ERR };

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *version_name(int version)
{
    return version == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2";
}

/* ---- HOST:PORT ---------------------------------------------------------- */

static int is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 ||
           inet_pton(AF_INET6, host, buf) == 1;
}

/* HOST:PORT or [V6ADDR]:PORT; prints why and returns 0 if malformed. */
static int parse_target(const char *arg, endpoint *ep)
{
    const char *colon, *host = arg;
    size_t host_len;

    if (arg[0] == '[') {
        const char *close = strchr(arg, ']');

        if (close == NULL || close[1] != ':')
            goto bad;
        host = arg + 1;
        host_len = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(arg, ':');
        if (colon == NULL || memchr(arg, ':', (size_t)(colon - arg)) != NULL)
            goto bad;
        host_len = (size_t)(colon - arg);
    }
    if (host_len == 0 || colon[1] == '\0')
        goto bad;
    ep->host = strndup(host, host_len);
    ep->port = strdup(colon + 1);
    if (ep->host == NULL || ep->port == NULL) {
        p11t_tool_error("out of memory");
        return 0;
    }
    return 1;
bad:
    p11t_tool_error("check: --connect: '%s' is not HOST:PORT (an IPv6 "
                    "address goes in brackets: [::1]:443)",
                    arg);
    return 0;
}

/* ---- sockets ------------------------------------------------------------ */

/* Wait until fd is readable (or writable); 0 on timeout or error. */
static int wait_fd(int fd, int for_write, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        struct pollfd p = {.fd = fd, .events = for_write ? POLLOUT : POLLIN};
        int n;

        if (left <= 0)
            return 0;
        n = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (n > 0)
            return 1;
        if (n == 0 || errno != EINTR)
            return 0;
    }
}

static int connect_addr(const struct addrinfo *ai, char *why, size_t len)
{
    int fd, err = 0;
    socklen_t elen = sizeof(err);

    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                ai->ai_protocol);
    if (fd < 0) {
        snprintf(why, len, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return fd;
    if (errno != EINPROGRESS) {
        snprintf(why, len, "%s", strerror(errno));
    } else if (!wait_fd(fd, 1, now_ms() + CONNECT_TIMEOUT_MS)) {
        snprintf(why, len, "no answer within %d s", CONNECT_TIMEOUT_MS / 1000);
    } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 ||
               err != 0) {
        snprintf(why, len, "%s", strerror(err != 0 ? err : errno));
    } else {
        return fd;
    }
    close(fd);
    return -1;
}

/* A non-blocking TCP connection to the first address that answers. */
static int tcp_connect(const endpoint *ep, char *why, size_t len)
{
    struct addrinfo hints, *res = NULL, *ai;
    int fd = -1, rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(ep->host, ep->port, &hints, &res);
    if (rc != 0) {
        snprintf(why, len, "cannot resolve: %s", gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
        fd = connect_addr(ai, why, len);
    freeaddrinfo(res);
    return fd;
}

/* ---- TLS ---------------------------------------------------------------- */

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    conn *c = SSL_get_app_data(ssl);

    if (c == NULL || c->nst != NULL)
        return 0; /* not kept: libssl drops its reference */
    c->nst = sess;
    return 1; /* kept: we own the reference */
}

/* The reason for a failed handshake, from OpenSSL or the socket. */
static void tls_reason(SSL *ssl, int r, int saved_errno, char *why, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    int se = SSL_get_error(ssl, r);

    if (e != 0) {
        const char *reason = ERR_reason_error_string(e);

        if (reason != NULL)
            snprintf(why, len, "%s", reason);
        else
            ERR_error_string_n(e, why, len);
    } else if (se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE) {
        snprintf(why, len, "no answer within %d s",
                 HANDSHAKE_TIMEOUT_MS / 1000);
    } else if (se == SSL_ERROR_SYSCALL && saved_errno != 0) {
        snprintf(why, len, "%s", strerror(saved_errno));
    } else if (se == SSL_ERROR_SYSCALL || se == SSL_ERROR_ZERO_RETURN) {
        snprintf(why, len, "the server closed the connection");
    } else {
        snprintf(why, len, "handshake failed (SSL error %d)", se);
    }
}

static int handshake(SSL *ssl, int fd, char *why, size_t len)
{
    int64_t deadline = now_ms() + HANDSHAKE_TIMEOUT_MS;

    for (;;) {
        int r, se, saved;

        errno = 0;
        r = SSL_connect(ssl);
        saved = errno;
        if (r == 1)
            return 1;
        se = SSL_get_error(ssl, r);
        if ((se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE) &&
            wait_fd(fd, se == SSL_ERROR_WANT_WRITE, deadline))
            continue;
        tls_reason(ssl, r, saved, why, len);
        return 0;
    }
}

/*
 * Read (and discard) what the server sends until the first
 * NewSessionTicket has been processed or TICKET_WAIT_MS have passed.
 */
static void wait_ticket(SSL *ssl, int fd, const conn *c)
{
    int64_t deadline = now_ms() + TICKET_WAIT_MS;
    unsigned char buf[1024];

    while (c->nst == NULL) {
        int r = SSL_read(ssl, buf, sizeof(buf)), se;

        if (r > 0 || c->nst != NULL)
            continue; /* the loop condition decides */
        se = SSL_get_error(ssl, r);
        if ((se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE) &&
            wait_fd(fd, se == SSL_ERROR_WANT_WRITE, deadline))
            continue;
        break;
    }
}

/*
 * One connection with exactly `version`, presenting `resume` if set.  On
 * CONN_OK *sess_out is the session it left: for TLS 1.3 the first
 * NewSessionTicket's (NULL if none came), for TLS 1.2 the connection's
 * (which carries the ticket of the handshake, renewed or not).
 */
static int connect_once(const endpoint *ep, SSL_CTX *ctx, int version,
                        SSL_SESSION *resume, SSL_SESSION **sess_out,
                        int *reused, int verbose, char *why, size_t len)
{
    conn c = {NULL};
    SSL *ssl = NULL;
    int fd, rc = CONN_ERR;

    *sess_out = NULL;
    *reused = 0;
    fd = tcp_connect(ep, why, len);
    if (fd < 0)
        return CONN_TCP;
    ERR_clear_error();
    ssl = SSL_new(ctx);
    if (ssl == NULL || !SSL_set_fd(ssl, fd) ||
        !SSL_set_min_proto_version(ssl, version) ||
        !SSL_set_max_proto_version(ssl, version) ||
        (ep->sni != NULL && !SSL_set_tlsext_host_name(ssl, ep->sni)) ||
        (resume != NULL && !SSL_set_session(ssl, resume)) ||
        !SSL_set_app_data(ssl, &c)) {
        snprintf(why, len, "cannot set up the TLS connection");
        goto done;
    }
    if (!handshake(ssl, fd, why, len)) {
        rc = CONN_TLS;
        goto done;
    }
    if (SSL_version(ssl) != version) {
        snprintf(why, len, "negotiated %s", SSL_get_version(ssl));
        rc = CONN_TLS;
        goto done;
    }
    *reused = SSL_session_reused(ssl);
    if (version == TLS1_3_VERSION) {
        wait_ticket(ssl, fd, &c);
        *sess_out = c.nst;
        c.nst = NULL;
    } else {
        *sess_out = SSL_get1_session(ssl);
    }
    if (verbose)
        fprintf(stderr, "p11ticket: check: %s: %s %s, %s%s\n", ep->target,
                SSL_get_version(ssl), SSL_get_cipher_name(ssl),
                *reused ? "resumed" : "full handshake",
                *sess_out == NULL ? ", no session" : "");
    /*
     * close_notify first: SSL_free() of a connection that did not send it
     * marks its session not resumable (ssl_clear_bad_session).
     */
    SSL_shutdown(ssl);
    rc = CONN_OK;
done:
    if (ssl != NULL)
        SSL_set_app_data(ssl, NULL);
    SSL_free(ssl);
    SSL_SESSION_free(c.nst);
    close(fd);
    ERR_clear_error();
    return rc;
}

static void probe_free(probe *p)
{
    SSL_SESSION_free(p->first);
    SSL_SESSION_free(p->second);
    p->first = p->second = NULL;
}

/* Both connections of one version; CONN_TCP (why set) is fatal. */
static int run_probe(const endpoint *ep, SSL_CTX *ctx, probe *p, int verbose,
                     char *why, size_t len)
{
    int reused, rc;

    rc = connect_once(ep, ctx, p->version, NULL, &p->first, &reused, verbose,
                      p->why, sizeof(p->why));
    if (rc == CONN_TCP || rc == CONN_ERR) {
        snprintf(why, len, "%s", p->why);
        return rc;
    }
    if (rc != CONN_OK)
        return CONN_OK; /* this version is not offered: reported later */
    p->handshake = 1;
    if (p->first == NULL || !SSL_SESSION_is_resumable(p->first))
        return CONN_OK; /* nothing to present */
    p->tried_resume = 1;
    rc = connect_once(ep, ctx, p->version, p->first, &p->second, &p->resumed,
                      verbose, p->resume_why, sizeof(p->resume_why));
    if (rc == CONN_TCP || rc == CONN_ERR) {
        snprintf(why, len, "%s", p->resume_why);
        return rc;
    }
    if (rc == CONN_OK)
        p->resume_why[0] = '\0';
    return CONN_OK;
}

/* ---- reporting ---------------------------------------------------------- */

static void get_ticket(const SSL_SESSION *s, const unsigned char **tick,
                       size_t *len)
{
    *tick = NULL;
    *len = 0;
    if (s != NULL)
        SSL_SESSION_get0_ticket(s, tick, len);
    if (*tick == NULL)
        *len = 0;
}

static int stateless(size_t len)
{
    return len >= MIN_STATELESS_TICKET;
}

/* Index of the ticket's generation on the token, or -1. */
static int ticket_gen(const token_view *tv, const unsigned char *tick,
                      size_t len)
{
    if (!stateless(len))
        return -1;
    return p11t_tool_find_name(tv->gens, tv->n, tick);
}

/* "under token key NAME (STATE[, current][, incomplete])" or "under key
 * NAME: NOT a token key...". */
static void describe_key(const token_view *tv, const unsigned char *tick,
                         int explain, char *buf, size_t len)
{
    int g = p11t_tool_find_name(tv->gens, tv->n, tick);
    char hex[33];

    p11t_hex(tick, hex);
    if (g < 0) {
        snprintf(buf, len, "under key %s: NOT a token key%s", hex,
                 explain ? " (the server uses in-memory ticket keys, or "
                           "the key is no longer on the token)"
                         : "");
        return;
    }
    snprintf(buf, len, "under token key %s (%s%s%s)", hex,
             p11t_state_name(p11t_lifecycle_state(&tv->gens[g].times, tv->now)),
             g == tv->cur ? ", current" : "",
             p11t_tool_complete(&tv->gens[g]) ? "" : ", incomplete");
}

/* The ticket of the first connection. */
static void describe_first(const token_view *tv, const probe *p, char *buf,
                           size_t len)
{
    const unsigned char *tick;
    size_t tlen;
    char key[192];

    get_ticket(p->first, &tick, &tlen);
    if (tlen == 0) {
        snprintf(buf, len, "no ticket issued");
    } else if (!stateless(tlen)) {
        snprintf(buf, len,
                 "no ticket issued (only a %zu-byte session reference: the "
                 "server resumes from its session cache)",
                 tlen);
    } else {
        describe_key(tv, tick, 1, key, sizeof(key));
        snprintf(buf, len, "ticket %s", key);
    }
}

/* Whether the second connection brought a ticket other than the first. */
static int renewed(const probe *p, const unsigned char **tick, size_t *len)
{
    const unsigned char *old;
    size_t olen;

    get_ticket(p->second, tick, len);
    if (!stateless(*len))
        return 0;
    if (p->version == TLS1_3_VERSION)
        return 1; /* p->second comes from a NewSessionTicket */
    /* TLS 1.2: the session keeps the presented ticket unless renewed. */
    get_ticket(p->first, &old, &olen);
    return olen != *len || memcmp(old, *tick, olen) != 0;
}

static void describe_resume(const token_view *tv, const probe *p, char *buf,
                            size_t len)
{
    const unsigned char *tick;
    size_t tlen;
    const char *resumed;
    char key[192];

    get_ticket(p->first, &tick, &tlen);
    resumed = !p->resumed       ? "no"
              : stateless(tlen) ? "yes"
                                : "yes (from the server's session cache)";
    if (!p->tried_resume) {
        snprintf(buf, len, "resumed: no (no session to present)");
    } else if (p->resume_why[0] != '\0') {
        snprintf(buf, len, "resumed: no (handshake failed: %s)", p->resume_why);
    } else if (renewed(p, &tick, &tlen)) {
        describe_key(tv, tick, 0, key, sizeof(key));
        snprintf(buf, len, "resumed: %s; new ticket %s", resumed, key);
    } else {
        snprintf(buf, len, "resumed: %s; no new ticket", resumed);
    }
}

/* Print the version's line; 1 if it passed (token ticket, resumed). */
static int report(const p11t_tool *t, const endpoint *ep, const token_view *tv,
                  const probe *p, int any_up)
{
    const char *v = version_name(p->version);
    const unsigned char *tick;
    size_t tlen;
    char first[320], second[320], hex[33], cur[33];
    int g;

    if (!p->handshake) {
        if (any_up)
            printf("%s: no handshake (%s): the server may not offer %s\n", v,
                   p->why, v);
        else
            printf("%s: no handshake (%s)\n", v, p->why);
        return 0;
    }
    describe_first(tv, p, first, sizeof(first));
    describe_resume(tv, p, second, sizeof(second));
    printf("%s: %s; %s\n", v, first, second);

    get_ticket(p->first, &tick, &tlen);
    g = ticket_gen(tv, tick, tlen);
    if (g >= 0 && g != tv->cur) {
        p11t_hex(tick, hex);
        if (tv->cur >= 0)
            p11t_hex(tv->gens[tv->cur].name, cur);
        p11t_tool_warn("%s: %s: the server issued its ticket under %s, "
                       "not under the token's current key %s: it has not "
                       "picked up the latest rotation yet (servers rescan "
                       "within refresh-interval, %u s in %s)",
                       ep->target, v, hex, tv->cur >= 0 ? cur : "(none)",
                       t->refresh_interval, t->config_file);
    }
    if (!stateless(tlen))
        p11t_tool_error("check: %s: %s: the server issued no ticket: "
                        "tickets are off there (SSL_OP_NO_TICKET, nginx's "
                        "ssl_session_tickets off...), or its ticket "
                        "callback refused to issue (see its log: token "
                        "unreachable, no active key, ticket HMAC not "
                        "routed)",
                        ep->target, v);
    else if (g < 0)
        p11t_tool_error("check: %s: %s: the ticket's key is not on the "
                        "token: the server's tickets do not come from "
                        "p11ticket (is the provider loaded there, with "
                        "auto-enable or p11ticket_enable(), and the ticket "
                        "HMAC routed?)",
                        ep->target, v);
    if (p->tried_resume && !p->resumed)
        p11t_tool_error("check: %s: %s: the server did not resume the "
                        "session it had just issued",
                        ep->target, v);
    return g >= 0 && p->resumed;
}

/* ---- the command -------------------------------------------------------- */

static SSL_CTX *client_ctx(OSSL_LIB_CTX **lib, OSSL_PROVIDER **def)
{
    SSL_CTX *ctx;

    *lib = OSSL_LIB_CTX_new();
    *def = *lib != NULL ? OSSL_PROVIDER_load(*lib, "default") : NULL;
    if (*def == NULL)
        return NULL;
    ctx = SSL_CTX_new_ex(*lib, NULL, TLS_client_method());
    if (ctx == NULL)
        return NULL;
    /* We check tickets, not certificates. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    /* Sessions reach new_session_cb and nowhere else. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                            SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    return ctx;
}

static int scan_token(p11t_tool *t, token_view *tv)
{
    int rc;

    if ((rc = p11t_tool_open_hsm(t)) != P11T_TOOL_OK)
        return rc;
    if ((rc = p11t_tool_scan(t, "check", NULL, NULL, &tv->gens, &tv->n)) !=
        P11T_TOOL_OK)
        return rc;
    tv->now = p11t_tool_now();
    tv->cur = p11t_lifecycle_pick(tv->gens, tv->n, tv->now);
    return P11T_TOOL_OK;
}

static int probe_all(p11t_tool *t, const endpoint *ep, SSL_CTX *ctx,
                     probe *probes, size_t n)
{
    token_view tv = {NULL, 0, -1, 0};
    char why[WHY_LEN];
    size_t i, up = 0, passed = 0;
    int rc;

    for (i = 0; i < n; i++) {
        rc = run_probe(ep, ctx, &probes[i], t->verbose, why, sizeof(why));
        if (rc == CONN_TCP) {
            p11t_tool_error("check: cannot connect to %s: %s", ep->target, why);
            return P11T_TOOL_USAGE;
        }
        if (rc != CONN_OK) {
            p11t_tool_error("check: %s: %s", ep->target, why);
            return P11T_TOOL_FAIL;
        }
        up += probes[i].handshake != 0;
    }
    if (up > 0 && (rc = scan_token(t, &tv)) != P11T_TOOL_OK)
        return rc;
    for (i = 0; i < n; i++)
        passed += (size_t)report(t, ep, &tv, &probes[i], up > 0);
    free(tv.gens);
    if (up == 0) {
        p11t_tool_error("check: no TLS connection to %s: %s: %s; %s: %s",
                        ep->target, version_name(probes[0].version),
                        probes[0].why, version_name(probes[1].version),
                        probes[1].why);
        return P11T_TOOL_USAGE;
    }
    /* A version the server does not offer is not a failure. */
    return passed == up ? P11T_TOOL_OK : P11T_TOOL_FAIL;
}

int p11t_tool_check_connect(p11t_tool *t, const char *target,
                            const char *servername)
{
    probe probes[2] = {{.version = TLS1_2_VERSION},
                       {.version = TLS1_3_VERSION}};
    endpoint ep = {NULL, NULL, NULL, target};
    OSSL_LIB_CTX *lib = NULL;
    OSSL_PROVIDER *def = NULL;
    SSL_CTX *ctx = NULL;
    struct sigaction ign, saved;
    int rc;

    if (!parse_target(target, &ep)) {
        free(ep.host);
        free(ep.port);
        return P11T_TOOL_USAGE;
    }
    if (servername != NULL)
        ep.sni = servername[0] != '\0' ? servername : NULL;
    else if (!is_ip_literal(ep.host))
        ep.sni = ep.host;

    /* A server that closes first must not kill us on close_notify. */
    memset(&ign, 0, sizeof(ign));
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, &saved);

    ctx = client_ctx(&lib, &def);
    if (ctx == NULL) {
        p11t_tool_error("check: cannot set up the TLS client:");
        p11t_tool_print_ossl_errors();
        rc = P11T_TOOL_FAIL;
    } else {
        rc = probe_all(t, &ep, ctx, probes, sizeof(probes) / sizeof(*probes));
    }

    probe_free(&probes[0]);
    probe_free(&probes[1]);
    SSL_CTX_free(ctx);
    OSSL_PROVIDER_unload(def);
    OSSL_LIB_CTX_free(lib);
    sigaction(SIGPIPE, &saved, NULL);
    free(ep.host);
    free(ep.port);
    return rc;
}
