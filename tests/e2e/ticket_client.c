/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ticket_client.c - a small TLS client for the end-to-end tests.
 *
 * `openssl s_client -sess_out` keeps only the LAST session it sees, and it
 * cannot alter a ticket.  This client:
 *   1. connects once (optionally resuming -sess_in FILE), exchanges a little
 *      data so that every TLS 1.3 NewSessionTicket is processed, and keeps
 *      every session the new-session callback hands over;
 *   2. resumes each collected session on a fresh connection, optionally
 *      after tampering with the ticket bytes, and prints one line per
 *      ticket: "ticket I: Reused" or "ticket I: New".
 *
 * The ticket cannot be replaced through a public setter, so tampering
 * rewrites the session's DER encoding: the ticket is the [10] EXPLICIT
 * OCTET STRING (tlsext_tick) of the SSL_SESSION_ASN1 SEQUENCE
 * (ssl/ssl_asn1.c).  The element is re-encoded with the new bytes, which
 * keeps the DER valid whatever the new length.
 *
 * It must run with OPENSSL_CONF=/dev/null: the client never loads the
 * provider.  Exit status: 0 when every connection completed its handshake,
 * 1 otherwise, 2 on usage errors.  The test scripts judge New/Reused.
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#define MAX_SESSIONS 64

static SSL_SESSION *g_sessions[MAX_SESSIONS];
static int g_nsessions;

static struct {
    const char *host;
    int port;
    int version; /* 0: any, else TLS1_2_VERSION / TLS1_3_VERSION */
    int www;
    const char *tamper;
    const char *sess_in;
    const char *sess_out;
    int no_resume;
} opt;

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    if (g_nsessions >= MAX_SESSIONS)
        return 0;
    g_sessions[g_nsessions++] = sess;
    return 1; /* we keep the reference */
}

static void print_errors(const char *what)
{
    fprintf(stderr, "ticket_client: %s failed\n", what);
    ERR_print_errors_fp(stderr);
}

static int tcp_connect(void)
{
    struct sockaddr_in sa;
    struct timeval tv = { .tv_sec = 10, .tv_usec = 0 };
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)opt.port);
    if (inet_pton(AF_INET, opt.host, &sa.sin_addr) != 1) {
        fprintf(stderr, "ticket_client: bad address %s\n", opt.host);
        close(fd);
        return -1;
    }
    /* Never hang the test suite: every read and write gives up after 10 s. */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "ticket_client: connect %s:%d: %s\n", opt.host,
                opt.port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/*
 * One connection: handshake, a request, enough of the answer to be sure
 * that the post-handshake NewSessionTicket messages were processed (the
 * server sends them before any application data), then close.
 * Returns 1 on success and sets *reused.
 */
static int run_connection(SSL_CTX *ctx, SSL_SESSION *resume, int *reused)
{
    static const char www_req[] = "GET / HTTP/1.0\r\n\r\n";
    static const char echo_req[] = "p11ticket-ping\n";
    const char *req = opt.www ? www_req : echo_req;
    size_t reqlen = strlen(req);
    char buf[4096];
    size_t got = 0;
    int ok = 0;
    SSL *ssl = NULL;
    int fd = tcp_connect();

    if (fd < 0)
        return 0;
    ssl = SSL_new(ctx);
    if (ssl == NULL || !SSL_set_fd(ssl, fd)) {
        print_errors("SSL_new");
        goto done;
    }
    if (resume != NULL && !SSL_set_session(ssl, resume)) {
        print_errors("SSL_set_session");
        goto done;
    }
    if (SSL_connect(ssl) != 1) {
        print_errors("SSL_connect");
        goto done;
    }
    *reused = SSL_session_reused(ssl);
    if (SSL_write(ssl, req, (int)reqlen) != (int)reqlen) {
        print_errors("SSL_write");
        goto done;
    }
    for (;;) {
        int n = SSL_read(ssl, buf, sizeof(buf));

        if (n <= 0) {
            int e = SSL_get_error(ssl, n);

            /* -www: the server answers and closes; that is the end. */
            if (opt.www && got > 0
                && (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL))
                break;
            print_errors("SSL_read");
            goto done;
        }
        got += (size_t)n;
        if (!opt.www && got >= reqlen)
            break; /* echo server: the echo is back */
    }
    ok = 1;
    SSL_shutdown(ssl);
done:
    ERR_clear_error();
    SSL_free(ssl);
    close(fd);
    return ok;
}

static void ticket_name_hex(const SSL_SESSION *s, char out[33], size_t *len)
{
    const unsigned char *tick = NULL;
    size_t i;

    SSL_SESSION_get0_ticket(s, &tick, len);
    out[0] = '\0';
    if (tick == NULL || *len < 16)
        return;
    for (i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", tick[i]);
}

/* New ticket bytes for a tamper mode; returns a malloc'd buffer or NULL. */
static unsigned char *tamper_bytes(const unsigned char *t, size_t len,
                                   const char *mode, size_t *newlen)
{
    unsigned char *out = malloc(len > 0 ? len : 1);
    size_t pos;

    if (out == NULL)
        return NULL;
    memcpy(out, t, len);
    *newlen = len;
    if (strcmp(mode, "flip-name") == 0) {
        pos = 0; /* key name: unknown key */
    } else if (strcmp(mode, "flip-iv") == 0) {
        pos = 16; /* IV: the HMAC no longer matches */
    } else if (strcmp(mode, "flip-mid") == 0) {
        pos = len / 2; /* ciphertext */
    } else if (strcmp(mode, "flip-mac") == 0) {
        pos = len - 1; /* last byte of the HMAC */
    } else if (strncmp(mode, "trunc:", 6) == 0) {
        long n = strtol(mode + 6, NULL, 10);

        if (n < 0 || (size_t)n >= len) {
            free(out);
            return NULL;
        }
        *newlen = (size_t)n;
        return out;
    } else {
        free(out);
        return NULL;
    }
    if (len == 0) {
        free(out);
        return NULL;
    }
    out[pos] ^= 0x5a;
    return out;
}

/*
 * Re-encode sess with its ticket transformed by `mode`.  Walks the top-level
 * SEQUENCE and rewrites only the [10] element.
 */
static SSL_SESSION *tamper_session(SSL_SESSION *sess, const char *mode)
{
    unsigned char *der = NULL, *outbuf = NULL, *w, *nt = NULL;
    const unsigned char *p, *end, *cp;
    long len;
    int tag, xclass, der_len, ret, body_len = 0, found = 0;
    size_t nt_len = 0;
    SSL_SESSION *result = NULL;

    der_len = i2d_SSL_SESSION(sess, &der);
    if (der_len <= 0)
        return NULL;
    p = der;
    ret = ASN1_get_object(&p, &len, &tag, &xclass, der_len);
    if ((ret & 0x80) || ret != V_ASN1_CONSTRUCTED || tag != V_ASN1_SEQUENCE)
        goto out;
    end = p + len;
    /* The output cannot be larger than the input plus a few header bytes. */
    outbuf = malloc((size_t)der_len + 32);
    if (outbuf == NULL)
        goto out;
    w = outbuf + 16; /* leave room for the SEQUENCE header, moved later */
    while (p < end) {
        const unsigned char *elem = p, *q = p;
        long elen;
        int etag, eclass;

        ret = ASN1_get_object(&q, &elen, &etag, &eclass, end - p);
        if ((ret & 0x80) || (ret & 1)) /* error or indefinite length */
            goto out;
        p = q + elen;
        if (eclass == V_ASN1_CONTEXT_SPECIFIC && etag == 10) {
            long tlen;
            int ttag, tclass, inner_len, outer_len;

            cp = q;
            ret = ASN1_get_object(&cp, &tlen, &ttag, &tclass, elen);
            if ((ret & 0x80) || ttag != V_ASN1_OCTET_STRING)
                goto out;
            nt = tamper_bytes(cp, (size_t)tlen, mode, &nt_len);
            if (nt == NULL)
                goto out;
            inner_len = ASN1_object_size(0, (int)nt_len, V_ASN1_OCTET_STRING);
            outer_len = ASN1_object_size(1, inner_len, 10);
            if (inner_len < 0 || outer_len < 0)
                goto out;
            ASN1_put_object(&w, 1, inner_len, 10, V_ASN1_CONTEXT_SPECIFIC);
            ASN1_put_object(&w, 0, (int)nt_len, V_ASN1_OCTET_STRING,
                            V_ASN1_UNIVERSAL);
            memcpy(w, nt, nt_len);
            w += nt_len;
            body_len += outer_len;
            found = 1;
        } else {
            memcpy(w, elem, (size_t)(p - elem));
            w += p - elem;
            body_len += (int)(p - elem);
        }
    }
    if (!found)
        goto out;
    {
        /* Prepend the SEQUENCE header right before the body. */
        int hdr = ASN1_object_size(1, body_len, V_ASN1_SEQUENCE) - body_len;
        unsigned char *start = outbuf + 16 - hdr, *h = start;

        ASN1_put_object(&h, 1, body_len, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
        cp = start;
        result = d2i_SSL_SESSION(NULL, &cp, hdr + body_len);
    }
out:
    if (result == NULL)
        fprintf(stderr, "ticket_client: cannot tamper (%s) with the ticket\n",
                mode);
    free(nt);
    free(outbuf);
    OPENSSL_free(der);
    return result;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: ticket_client -connect 127.0.0.1:PORT [-tls1_2|-tls1_3] [-www]\n"
            "         [-sess_in FILE] [-sess_out FILE] [-no_resume]\n"
            "         [-tamper flip-name|flip-iv|flip-mid|flip-mac|trunc:N]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    SSL_CTX *ctx;
    SSL_SESSION *first_in = NULL;
    int i, reused = 0, failures = 0, n;
    char *colon;

    signal(SIGPIPE, SIG_IGN);
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-connect") == 0 && i + 1 < argc) {
            opt.host = argv[++i];
        } else if (strcmp(argv[i], "-tls1_2") == 0) {
            opt.version = TLS1_2_VERSION;
        } else if (strcmp(argv[i], "-tls1_3") == 0) {
            opt.version = TLS1_3_VERSION;
        } else if (strcmp(argv[i], "-www") == 0) {
            opt.www = 1;
        } else if (strcmp(argv[i], "-tamper") == 0 && i + 1 < argc) {
            opt.tamper = argv[++i];
        } else if (strcmp(argv[i], "-sess_in") == 0 && i + 1 < argc) {
            opt.sess_in = argv[++i];
        } else if (strcmp(argv[i], "-sess_out") == 0 && i + 1 < argc) {
            opt.sess_out = argv[++i];
        } else if (strcmp(argv[i], "-no_resume") == 0) {
            opt.no_resume = 1;
        } else {
            usage();
        }
    }
    if (opt.host == NULL)
        usage();
    colon = strrchr(opt.host, ':');
    if (colon == NULL)
        usage();
    *colon = '\0';
    opt.port = atoi(colon + 1);
    if (opt.port <= 0 || opt.port > 65535)
        usage();

    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        print_errors("SSL_CTX_new");
        return 1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    if (opt.version != 0
        && (!SSL_CTX_set_min_proto_version(ctx, opt.version)
            || !SSL_CTX_set_max_proto_version(ctx, opt.version))) {
        print_errors("set_proto_version");
        return 1;
    }
    /* The client cache mode is what makes libssl call new_session_cb for
     * every ticket; the internal store is off, we keep them ourselves. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT
                                            | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);

    if (opt.sess_in != NULL) {
        FILE *f = fopen(opt.sess_in, "r");

        if (f == NULL) {
            fprintf(stderr, "ticket_client: %s: %s\n", opt.sess_in,
                    strerror(errno));
            return 1;
        }
        first_in = PEM_read_SSL_SESSION(f, NULL, NULL, NULL);
        fclose(f);
        if (first_in == NULL) {
            print_errors("PEM_read_SSL_SESSION");
            return 1;
        }
        if (opt.tamper != NULL) {
            SSL_SESSION *t = tamper_session(first_in, opt.tamper);

            SSL_SESSION_free(first_in);
            if (t == NULL)
                return 1;
            first_in = t;
        }
    }

    if (!run_connection(ctx, first_in, &reused)) {
        printf("connection 0: FAILED\n");
        return 1;
    }
    printf("connection 0: %s\n", reused ? "Reused" : "New");
    n = g_nsessions;
    printf("tickets: %d\n", n);
    for (i = 0; i < n; i++) {
        char name[33];
        size_t len = 0;

        ticket_name_hex(g_sessions[i], name, &len);
        printf("ticket %d: len %zu name %s\n", i, len, len ? name : "-");
    }
    if (opt.sess_out != NULL && n > 0) {
        FILE *f = fopen(opt.sess_out, "w");

        if (f == NULL || !PEM_write_SSL_SESSION(f, g_sessions[n - 1])) {
            fprintf(stderr, "ticket_client: cannot write %s\n", opt.sess_out);
            failures++;
        }
        if (f != NULL)
            fclose(f);
    }

    for (i = 0; i < n && !opt.no_resume; i++) {
        SSL_SESSION *s = g_sessions[i];
        SSL_SESSION *t = NULL;

        if (opt.tamper != NULL && opt.sess_in == NULL) {
            t = tamper_session(s, opt.tamper);
            if (t == NULL) {
                printf("ticket %d: FAILED (tamper)\n", i);
                failures++;
                continue;
            }
            s = t;
            {
                char name[33];
                size_t len = 0;

                ticket_name_hex(s, name, &len);
                printf("ticket %d: tampered (%s) to len %zu name %s\n", i,
                       opt.tamper, len, len >= 16 ? name : "-");
            }
        }
        reused = 0;
        if (run_connection(ctx, s, &reused)) {
            printf("ticket %d: %s\n", i, reused ? "Reused" : "New");
        } else {
            printf("ticket %d: FAILED\n", i);
            failures++;
        }
        SSL_SESSION_free(t);
    }
    fflush(stdout);

    /* Sessions collected by the resumption connections are freed too. */
    for (i = 0; i < g_nsessions; i++)
        SSL_SESSION_free(g_sessions[i]);
    SSL_SESSION_free(first_in);
    SSL_CTX_free(ctx);
    return failures ? 1 : 0;
}
