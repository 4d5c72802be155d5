/* SPDX-License-Identifier: Apache-2.0 */
/*
 * conn.c - one thread per connection: TLS handshake, then either a one-shot
 * HTTP status page (-www) or an echo of everything the client sends.
 *
 * Threads are joinable and joined by the accept loop (p11t_srv_conn_reap),
 * so at exit every thread has really finished before the SSL_CTX is freed.
 */
#define _GNU_SOURCE /* GNU strerror_r */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "p11ticket.h"
#include "server.h"

struct p11t_srv_conn {
    struct p11t_srv *srv;
    pthread_t thread;
    int fd;    /* -1 once closed; under srv->lock */
    bool done; /* under srv->lock */
    unsigned long id;
    struct p11t_srv_conn *next;
};

/* Largest HTTP request head (request line and headers) read with -www. */
#define WWW_MAX_REQUEST 8192

static void describe_failure(SSL *ssl, int ret, int saved_errno, char *buf,
                             size_t len)
{
    int err = SSL_get_error(ssl, ret);
    unsigned long code = ERR_peek_last_error();
    char tmp[128];

    if (code != 0)
        ERR_error_string_n(code, buf, len);
    else if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
        snprintf(buf, len, "timed out after %d s", P11T_SRV_IO_TIMEOUT_SEC);
    else if (err == SSL_ERROR_SYSCALL && saved_errno != 0)
        snprintf(buf, len, "%s", strerror_r(saved_errno, tmp, sizeof(tmp)));
    else if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN)
        snprintf(buf, len, "peer closed the connection");
    else
        snprintf(buf, len, "SSL error %d", err);
}

/* Returns 1 if the peer closed cleanly (close_notify), so one is owed back. */
static int serve_echo(SSL *ssl)
{
    char buf[16384];

    for (;;) {
        int n = SSL_read(ssl, buf, sizeof(buf));

        if (n <= 0)
            return SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN;
        /* Blocking and without SSL_MODE_ENABLE_PARTIAL_WRITE: all or error. */
        if (SSL_write(ssl, buf, n) != n)
            return 0;
    }
}

/*
 * Reads the request head.  It is complete at the blank line; a request line
 * without an HTTP version (HTTP/0.9) has no head beyond it; a client that
 * closes its side after sending a request line still gets an answer.
 * Returns the number of bytes read, 0 if there is nothing to answer;
 * *closed says whether the read ended at the peer's close_notify.
 */
static size_t read_request(SSL *ssl, char *req, size_t size, bool *closed)
{
    size_t used = 0;

    req[0] = '\0';
    *closed = false;
    while (used < size - 1) {
        int n = SSL_read(ssl, req + used, (int)(size - 1 - used));
        char *eol;

        if (n <= 0) {
            *closed = SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN;
            return strchr(req, '\n') != NULL ? used : 0;
        }
        used += (size_t)n;
        req[used] = '\0';
        if (strstr(req, "\r\n\r\n") != NULL || strstr(req, "\n\n") != NULL)
            return used;
        eol = strchr(req, '\n');
        if (eol != NULL &&
            memmem(req, (size_t)(eol - req), " HTTP/", 6) == NULL)
            return used;
    }
    return used;
}

/* "METHOD TARGET[ HTTP/x.y]": a token, a space, something. */
static bool request_line_ok(const char *req, bool *head)
{
    size_t method = strspn(req, "ABCDEFGHIJKLMNOPQRSTUVWXYZ");

    *head = method == 4 && strncmp(req, "HEAD", 4) == 0;
    return method > 0 && req[method] == ' ' && req[method + 1] != ' ' &&
           req[method + 1] != '\r' && req[method + 1] != '\n';
}

static int status_page(struct p11t_srv *srv, SSL *ssl, char *out, size_t len)
{
    p11ticket_stats st;
    char status[256], key[2 * P11TICKET_KEY_NAME_LEN + 1];
    char tickets[256];

    if (p11ticket_get_stats(srv->ctx, &st))
        snprintf(tickets, sizeof(tickets),
                 "issued=%llu resumed=%llu renewed=%llu unknown_key=%llu "
                 "refused=%llu errors=%llu",
                 st.issued, st.resumed, st.renewed, st.unknown_key, st.refused,
                 st.errors);
    else
        snprintf(tickets, sizeof(tickets), "p11ticket not enabled");
    if (!p11ticket_status(srv->ctx, status, sizeof(status), key, sizeof(key)) &&
        status[0] == '\0')
        snprintf(status, sizeof(status), "not loaded");

    return snprintf(out, len,
                    P11T_SRV_NAME " " P11TICKET_VERSION_STR "\n"
                                  "protocol: %s\n"
                                  "cipher: %s\n"
                                  "session: %s\n"
                                  "tickets: %s\n"
                                  "provider: %s\n"
                                  "current_key: %s\n",
                    SSL_get_version(ssl),
                    SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)),
                    SSL_session_reused(ssl) ? "Reused" : "New", tickets, status,
                    key[0] != '\0' ? key : "none");
}

/* Returns 1 if the exchange ended cleanly and a close_notify is due. */
static int serve_www(struct p11t_srv *srv, SSL *ssl)
{
    char req[WWW_MAX_REQUEST];
    char body[1024];
    char resp[sizeof(body) + 256];
    const char *code = "200 OK";
    bool head = false, closed;
    int blen, rlen;

    /*
     * A peer that closes cleanly without asking anything (s_client
     * -reconnect with stdin closed) is owed a close_notify too: SSL_free()
     * of a connection that sent none removes its session from the cache
     * (ssl_clear_bad_session()), and the next session-ID resumption fails.
     * s_server -www shuts down the same way (www_body()).
     */
    if (read_request(ssl, req, sizeof(req), &closed) == 0)
        return closed;
    if (request_line_ok(req, &head)) {
        blen = status_page(srv, ssl, body, sizeof(body));
    } else {
        code = "400 Bad Request";
        blen = snprintf(body, sizeof(body), "bad request\n");
    }
    if (blen < 0 || (size_t)blen >= sizeof(body))
        return 0;
    rlen = snprintf(resp, sizeof(resp),
                    "HTTP/1.0 %s\r\n"
                    "Content-Type: text/plain\r\n"
                    "Content-Length: %d\r\n"
                    "Connection: close\r\n"
                    "\r\n"
                    "%s",
                    code, blen, head ? "" : body);
    if (rlen < 0 || (size_t)rlen >= sizeof(resp))
        return 0;
    return SSL_write(ssl, resp, rlen) == rlen;
}

static void serve(struct p11t_srv_conn *c)
{
    struct p11t_srv *srv = c->srv;
    bool quiet = srv->opts->quiet;
    SSL *ssl = SSL_new(srv->ctx);
    char why[256];
    int ret, saved;

    if (ssl == NULL || !SSL_set_fd(ssl, c->fd)) {
        fprintf(stderr, "conn %lu: cannot create the SSL object\n", c->id);
        goto out;
    }
    errno = 0;
    ret = SSL_accept(ssl);
    saved = errno;
    if (ret != 1) {
        if (!quiet) {
            describe_failure(ssl, ret, saved, why, sizeof(why));
            fprintf(stderr, "conn %lu: handshake failed: %s\n", c->id, why);
        }
        goto out;
    }
    if (!quiet)
        fprintf(stderr, "conn %lu: %s %s %s\n", c->id, SSL_get_version(ssl),
                SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)),
                SSL_session_reused(ssl) ? "Reused" : "New");

    if (srv->opts->www ? serve_www(srv, ssl) : serve_echo(ssl))
        (void)SSL_shutdown(ssl);
out:
    SSL_free(ssl);
    ERR_clear_error();
}

static void *conn_main(void *arg)
{
    struct p11t_srv_conn *c = arg;
    struct p11t_srv *srv = c->srv;

    serve(c);
    /* Free this thread's OpenSSL state now rather than in a thread-exit
     * destructor that might race with the main thread's cleanup. */
    OPENSSL_thread_stop();

    /* Closed under the lock: p11t_srv_conn_drain() must never shutdown() a
     * descriptor number that has been reused. */
    pthread_mutex_lock(&srv->lock);
    close(c->fd);
    c->fd = -1;
    c->done = true;
    srv->live--;
    pthread_cond_broadcast(&srv->changed);
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}

static void set_timeouts(int fd)
{
    struct timeval tv = {.tv_sec = P11T_SRV_IO_TIMEOUT_SEC};

    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

void p11t_srv_conn_start(struct p11t_srv *srv, int fd)
{
    struct p11t_srv_conn *c;
    sigset_t block, old;
    int err;

    pthread_mutex_lock(&srv->lock);
    if (srv->live >= P11T_SRV_MAX_CONNS) {
        pthread_mutex_unlock(&srv->lock);
        close(fd);
        if (!srv->opts->quiet)
            fprintf(stderr,
                    P11T_SRV_NAME ": %d connections already, "
                                  "closing a new one\n",
                    P11T_SRV_MAX_CONNS);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        pthread_mutex_unlock(&srv->lock);
        close(fd);
        return;
    }
    c->srv = srv;
    c->fd = fd;
    c->id = ++srv->next_id;
    set_timeouts(fd);

    /* Workers inherit a mask without SIGTERM/SIGINT: only the main thread
     * takes them, and worker I/O never fails with EINTR. */
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    /* Still under the lock, so the thread cannot finish before it is
     * listed. */
    err = pthread_create(&c->thread, NULL, conn_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        pthread_mutex_unlock(&srv->lock);
        close(fd);
        free(c);
        fprintf(stderr, P11T_SRV_NAME ": cannot start a thread: %s\n",
                strerror(err));
        return;
    }
    c->next = srv->conns;
    srv->conns = c;
    srv->live++;
    pthread_mutex_unlock(&srv->lock);
}

/* Joins every finished connection thread. */
void p11t_srv_conn_reap(struct p11t_srv *srv)
{
    struct p11t_srv_conn *finished = NULL, **pp, *c;

    pthread_mutex_lock(&srv->lock);
    pp = &srv->conns;
    while ((c = *pp) != NULL) {
        if (c->done) {
            *pp = c->next;
            c->next = finished;
            finished = c;
        } else {
            pp = &c->next;
        }
    }
    pthread_mutex_unlock(&srv->lock);

    while ((c = finished) != NULL) {
        finished = c->next;
        pthread_join(c->thread, NULL);
        free(c);
    }
}

/* Waits on srv->changed until no connection runs or wait_ms passed.
 * Called with srv->lock held; srv->changed runs on CLOCK_MONOTONIC. */
static void wait_live_locked(struct p11t_srv *srv, int wait_ms)
{
    struct timespec deadline;

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += wait_ms / 1000;
    deadline.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    while (srv->live > 0)
        if (pthread_cond_timedwait(&srv->changed, &srv->lock, &deadline) != 0)
            break;
}

/*
 * Shutdown: give running connections wait_ms to finish on their own, then
 * shut their sockets down under them (their reads and writes fail at once)
 * and wait as long again.  Returns how many are still running, which is 0
 * unless a thread is stuck outside socket I/O.
 */
unsigned int p11t_srv_conn_drain(struct p11t_srv *srv, int wait_ms)
{
    unsigned int left;

    pthread_mutex_lock(&srv->lock);
    wait_live_locked(srv, wait_ms);
    if (srv->live > 0) {
        for (struct p11t_srv_conn *c = srv->conns; c != NULL; c = c->next)
            if (!c->done && c->fd >= 0)
                (void)shutdown(c->fd, SHUT_RDWR);
        wait_live_locked(srv, wait_ms);
    }
    left = srv->live;
    pthread_mutex_unlock(&srv->lock);

    p11t_srv_conn_reap(srv);
    return left;
}
