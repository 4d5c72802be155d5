/* SPDX-License-Identifier: Apache-2.0 */
/*
 * server.h - p11ticket-server: a small TLS server whose session tickets are
 * issued and accepted through libp11ticket.  Shared between its files only.
 */
#ifndef P11T_SRV_SERVER_H
#define P11T_SRV_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#define P11T_SRV_NAME "p11ticket-server"
#define P11T_SRV_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* Above this many live connections new ones are closed at once. */
#define P11T_SRV_MAX_CONNS 256
/* SO_RCVTIMEO/SO_SNDTIMEO: a stuck client cannot pin a thread longer. */
#define P11T_SRV_IO_TIMEOUT_SEC 30
/* On SIGTERM/SIGINT, how long in-flight connections may take to finish
 * before their sockets are shut down under them. */
#define P11T_SRV_DRAIN_MS 2000

struct p11t_srv_opts {
    const char *accept;
    const char *cert;
    const char *key;
    const char *cipher;
    const char *ciphersuites;
    long num_tickets; /* -1: libssl's default */
    long timeout;     /* -1: libssl's default */
    int version;      /* 0, TLS1_2_VERSION or TLS1_3_VERSION */
    bool www;
    bool no_ticket;
    bool no_etm;
    bool quiet;
};

struct p11t_srv_conn;

struct p11t_srv {
    SSL_CTX *ctx;
    const struct p11t_srv_opts *opts;

    pthread_mutex_t lock;        /* guards everything below */
    pthread_cond_t changed;      /* a connection finished */
    struct p11t_srv_conn *conns; /* running or finished, not yet joined */
    unsigned int live;           /* running */
    unsigned long next_id;
};

/* listen.c */
int p11t_srv_parse_hostport(const char *spec, char *host, size_t host_len,
                            char *port, size_t port_len);
int p11t_srv_listen(const char *host, const char *port, char *bound,
                    size_t bound_len);

/* conn.c */
void p11t_srv_conn_start(struct p11t_srv *srv, int fd);
void p11t_srv_conn_reap(struct p11t_srv *srv);
unsigned int p11t_srv_conn_drain(struct p11t_srv *srv, int wait_ms);

#endif /* P11T_SRV_SERVER_H */
