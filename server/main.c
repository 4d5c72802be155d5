/* SPDX-License-Identifier: Apache-2.0 */
/*
 * main.c - p11ticket-server: options, SSL_CTX set-up, the accept loop and
 * orderly shutdown on SIGTERM/SIGINT.
 *
 * Exit status: 0 after a signal, 1 when set-up fails, 2 on a usage error.
 */
#define _GNU_SOURCE /* accept4, pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "p11ticket.h"
#include "server.h"

#define EXIT_USAGE 2

/* Same value on every instance: a ticket carries the sid_ctx of the server
 * that issued it, and a server only resumes sessions with its own. */
static const unsigned char session_id_context[] = P11T_SRV_NAME;

static const char usage_text[] =
    "usage: " P11T_SRV_NAME
    " -accept HOST:PORT -cert FILE [-key FILE] [options]\n"
    "\n"
    "  -accept HOST:PORT     listen there; [V6ADDR]:PORT for IPv6, port 0 for\n"
    "                        an ephemeral port (printed as 'ACCEPT "
    "HOST:PORT')\n"
    "  -cert FILE            PEM certificate chain, leaf first\n"
    "  -key FILE             PEM private key (default: the -cert file)\n"
    "  -www                  answer one HTTP request with a status page\n"
    "                        (default: echo what the client sends)\n"
    "  -no_ticket            no session tickets; stateful session cache only\n"
    "  -num_tickets N        TLS 1.3 tickets sent after a full handshake\n"
    "  -timeout SECONDS      session (and ticket) lifetime\n"
    "  -tls1_2, -tls1_3      allow only this protocol version\n"
    "  -cipher LIST          TLS 1.2 cipher list\n"
    "  -ciphersuites LIST    TLS 1.3 cipher suites\n"
    "  -no_etm               do not negotiate encrypt-then-MAC (TLS 1.2 CBC)\n"
    "  -quiet                log errors only\n"
    "  -help                 print this text\n"
    "\n"
    "The p11ticket provider is configured by the openssl.cnf that "
    "OPENSSL_CONF\n"
    "names.\n";

enum opt_id {
    OPT_ACCEPT,
    OPT_CERT,
    OPT_KEY,
    OPT_WWW,
    OPT_NO_TICKET,
    OPT_NUM_TICKETS,
    OPT_TIMEOUT,
    OPT_TLS1_2,
    OPT_TLS1_3,
    OPT_CIPHER,
    OPT_CIPHERSUITES,
    OPT_NO_ETM,
    OPT_QUIET,
    OPT_HELP,
};

static const struct opt_def {
    const char *name;
    enum opt_id id;
    bool has_arg;
} opt_table[] = {
    {"accept", OPT_ACCEPT, true},
    {"cert", OPT_CERT, true},
    {"key", OPT_KEY, true},
    {"www", OPT_WWW, false},
    {"no_ticket", OPT_NO_TICKET, false},
    {"num_tickets", OPT_NUM_TICKETS, true},
    {"timeout", OPT_TIMEOUT, true},
    {"tls1_2", OPT_TLS1_2, false},
    {"tls1_3", OPT_TLS1_3, false},
    {"cipher", OPT_CIPHER, true},
    {"ciphersuites", OPT_CIPHERSUITES, true},
    {"no_etm", OPT_NO_ETM, false},
    {"quiet", OPT_QUIET, false},
    {"help", OPT_HELP, false},
};

static volatile sig_atomic_t stop_signal;
static int wake_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    ssize_t r;

    stop_signal = sig;
    r = write(wake_pipe[1], "", 1); /* full pipe: a wake-up is pending anyway */
    (void)r;
    errno = saved;
}

static int usage_error(const char *fmt, ...) P11T_SRV_PRINTF(1, 2);
static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs(P11T_SRV_NAME ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry '" P11T_SRV_NAME " -help'.\n", stderr);
    return EXIT_USAGE;
}

static bool parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static const struct opt_def *find_opt(const char *arg)
{
    /* "-name", also "--name" for people used to GNU tools. */
    if (arg[0] != '-')
        return NULL;
    arg += arg[1] == '-' ? 2 : 1;
    for (size_t i = 0; i < sizeof(opt_table) / sizeof(opt_table[0]); i++)
        if (strcmp(arg, opt_table[i].name) == 0)
            return &opt_table[i];
    return NULL;
}

/* Returns 0 to run, -1 after -help, EXIT_USAGE on a usage error. */
static int parse_args(int argc, char **argv, struct p11t_srv_opts *o)
{
    *o = (struct p11t_srv_opts){.num_tickets = -1, .timeout = -1};

    for (int i = 1; i < argc; i++) {
        const struct opt_def *d = find_opt(argv[i]);
        const char *val = NULL;

        if (d == NULL)
            return usage_error("unknown option '%s'", argv[i]);
        if (d->has_arg) {
            if (i + 1 >= argc)
                return usage_error("option '%s' needs a value", argv[i]);
            val = argv[++i];
        }
        switch (d->id) {
        case OPT_ACCEPT:
            o->accept = val;
            break;
        case OPT_CERT:
            o->cert = val;
            break;
        case OPT_KEY:
            o->key = val;
            break;
        case OPT_WWW:
            o->www = true;
            break;
        case OPT_NO_TICKET:
            o->no_ticket = true;
            break;
        case OPT_NUM_TICKETS:
            if (!parse_long(val, 0, 1000, &o->num_tickets))
                return usage_error("-num_tickets: '%s' is not a number from 0 "
                                   "to 1000",
                                   val);
            break;
        case OPT_TIMEOUT:
            if (!parse_long(val, 1, INT_MAX, &o->timeout))
                return usage_error("-timeout: '%s' is not a positive number "
                                   "of seconds",
                                   val);
            break;
        case OPT_TLS1_2:
        case OPT_TLS1_3:
            if (o->version != 0)
                return usage_error("-tls1_2 and -tls1_3 exclude each other");
            o->version = d->id == OPT_TLS1_2 ? TLS1_2_VERSION : TLS1_3_VERSION;
            break;
        case OPT_CIPHER:
            o->cipher = val;
            break;
        case OPT_CIPHERSUITES:
            o->ciphersuites = val;
            break;
        case OPT_NO_ETM:
            o->no_etm = true;
            break;
        case OPT_QUIET:
            o->quiet = true;
            break;
        case OPT_HELP:
            fputs(usage_text, stdout);
            return -1;
        }
    }
    if (o->accept == NULL)
        return usage_error("-accept HOST:PORT is required");
    if (o->cert == NULL)
        return usage_error("-cert FILE is required");
    if (o->key == NULL)
        o->key = o->cert;
    return 0;
}

static void lib_log(int level, const char *msg, void *arg)
{
    const struct p11t_srv_opts *o = arg;

    if (level == P11TICKET_LOG_INFO && o->quiet)
        return;
    fprintf(stderr, "p11ticket: %s\n", msg);
}

static int setup_error(const char *fmt, ...) P11T_SRV_PRINTF(1, 2);
static int setup_error(const char *fmt, ...)
{
    va_list ap;

    fputs(P11T_SRV_NAME ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    ERR_print_errors_fp(stderr);
    return EXIT_FAILURE;
}

static int configure_tickets(SSL_CTX *ctx, const struct p11t_srv_opts *o)
{
    /* Stateless or (with -no_ticket) stateful TLS 1.3 tickets alike. */
    if (o->num_tickets >= 0 &&
        !SSL_CTX_set_num_tickets(ctx, (size_t)o->num_tickets))
        return setup_error("cannot set -num_tickets");
    if (o->no_ticket) {
        /* Default cache mode: TLS 1.3 without tickets issues stateful ones,
         * which need the internal session store. */
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        return 0;
    }
    /*
     * No internal session store: a resumption can only come from a ticket,
     * never from a cached session ID, so "Reused" proves the ticket path.
     */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER |
                                            SSL_SESS_CACHE_NO_INTERNAL_STORE);
    /* Not fatal: the callback is installed anyway, refuses tickets while the
     * token is unusable, and picks it up when it becomes usable. */
    (void)p11ticket_enable(ctx);
    return 0;
}

static int configure_ctx(SSL_CTX *ctx, const struct p11t_srv_opts *o)
{
    if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1)
        return setup_error("cannot load certificate '%s'", o->cert);
    if (SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1)
        return setup_error("cannot load private key '%s'", o->key);
    if (SSL_CTX_check_private_key(ctx) != 1)
        return setup_error("the private key does not match the certificate");

    if (o->version != 0 && (!SSL_CTX_set_min_proto_version(ctx, o->version) ||
                            !SSL_CTX_set_max_proto_version(ctx, o->version)))
        return setup_error("cannot restrict the protocol version");
    if (o->cipher != NULL && !SSL_CTX_set_cipher_list(ctx, o->cipher)) {
        ERR_clear_error();
        return usage_error("-cipher: no usable cipher in '%s'", o->cipher);
    }
    if (o->ciphersuites != NULL &&
        !SSL_CTX_set_ciphersuites(ctx, o->ciphersuites)) {
        ERR_clear_error();
        return usage_error("-ciphersuites: bad list '%s'", o->ciphersuites);
    }
    if (o->timeout > 0)
        (void)SSL_CTX_set_timeout(ctx, o->timeout);

    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
                                 (o->no_etm ? SSL_OP_NO_ENCRYPT_THEN_MAC : 0));
    if (!SSL_CTX_set_session_id_context(ctx, session_id_context,
                                        sizeof(session_id_context) - 1))
        return setup_error("cannot set the session id context");
    return configure_tickets(ctx, o);
}

static bool setup_signals(void)
{
    struct sigaction sa = {.sa_handler = on_signal};

    if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        return false;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
        return false;
    /* A peer that goes away mid-write is that connection's problem only. */
    sa.sa_handler = SIG_IGN;
    return sigaction(SIGPIPE, &sa, NULL) == 0;
}

static void pause_briefly(void)
{
    struct timespec ts = {.tv_nsec = 50 * 1000 * 1000};

    nanosleep(&ts, NULL);
}

static int accept_loop(struct p11t_srv *srv, int lfd)
{
    struct pollfd pfd[2] = {
        {.fd = lfd, .events = POLLIN},
        {.fd = wake_pipe[0], .events = POLLIN},
    };

    while (stop_signal == 0) {
        /* The timeout only bounds how long finished threads wait for
         * their join. */
        int n = poll(pfd, 2, 1000);
        int fd;

        p11t_srv_conn_reap(srv);
        if (n < 0 && errno != EINTR) {
            perror(P11T_SRV_NAME ": poll");
            return EXIT_FAILURE;
        }
        if (n <= 0 || stop_signal != 0 || (pfd[0].revents & POLLIN) == 0)
            continue;
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            p11t_srv_conn_start(srv, fd);
            continue;
        }
        /* Out of descriptors or memory: the pending connection stays
         * readable, so back off instead of spinning. */
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
            errno == ENOMEM)
            pause_briefly();
    }
    return EXIT_SUCCESS;
}

static int init_srv(struct p11t_srv *srv, SSL_CTX *ctx,
                    const struct p11t_srv_opts *o)
{
    pthread_condattr_t attr;
    int ok;

    *srv = (struct p11t_srv){.ctx = ctx, .opts = o};
    if (pthread_mutex_init(&srv->lock, NULL) != 0)
        return 0;
    /* Monotonic, so the shutdown wait does not stretch if the clock jumps. */
    if (pthread_condattr_init(&attr) != 0) {
        pthread_mutex_destroy(&srv->lock);
        return 0;
    }
    ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
         pthread_cond_init(&srv->changed, &attr) == 0;
    pthread_condattr_destroy(&attr);
    if (!ok)
        pthread_mutex_destroy(&srv->lock);
    return ok;
}

int main(int argc, char **argv)
{
    struct p11t_srv_opts opts;
    struct p11t_srv srv;
    char host[256], port[16], bound[300];
    SSL_CTX *ctx;
    int rc, lfd;
    unsigned int left;

    rc = parse_args(argc, argv, &opts);
    if (rc != 0)
        return rc < 0 ? EXIT_SUCCESS : rc;
    if (!p11t_srv_parse_hostport(opts.accept, host, sizeof(host), port,
                                 sizeof(port)))
        return usage_error("-accept: '%s' is not HOST:PORT or [V6ADDR]:PORT",
                           opts.accept);
    if (!setup_signals()) {
        perror(P11T_SRV_NAME ": signals");
        return EXIT_FAILURE;
    }

    p11ticket_set_log_callback(lib_log, &opts);
    /* Loads OPENSSL_CONF, which loads and configures the p11ticket provider. */
    if (!OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG, NULL))
        return setup_error("cannot load the OpenSSL configuration");
    ctx = p11ticket_SSL_CTX_new(NULL, TLS_server_method());
    if (ctx == NULL)
        return setup_error("cannot create the SSL_CTX");
    rc = configure_ctx(ctx, &opts);
    if (rc != 0) {
        SSL_CTX_free(ctx);
        return rc;
    }

    lfd = p11t_srv_listen(host, port, bound, sizeof(bound));
    if (lfd < 0) {
        SSL_CTX_free(ctx);
        return EXIT_FAILURE;
    }
    if (!init_srv(&srv, ctx, &opts)) {
        close(lfd);
        SSL_CTX_free(ctx);
        return setup_error("cannot initialise threading");
    }
    /* Tests wait for this line to know the server is ready, and where. */
    printf("ACCEPT %s\n", bound);
    fflush(stdout);

    rc = accept_loop(&srv, lfd);
    close(lfd);
    left = p11t_srv_conn_drain(&srv, P11T_SRV_DRAIN_MS);
    if (left > 0) {
        /* Freeing the SSL_CTX under a running thread would crash it. */
        fprintf(stderr,
                P11T_SRV_NAME ": %u connection(s) did not finish; "
                              "exiting without cleanup\n",
                left);
        fflush(NULL);
        _exit(rc);
    }
    if (!opts.quiet && stop_signal != 0)
        fprintf(stderr, P11T_SRV_NAME ": stopped by signal %d\n",
                (int)stop_signal);

    pthread_cond_destroy(&srv.changed);
    pthread_mutex_destroy(&srv.lock);
    SSL_CTX_free(ctx);
    p11ticket_set_log_callback(NULL, NULL);
    close(wake_pipe[0]);
    close(wake_pipe[1]);
    return rc;
}
