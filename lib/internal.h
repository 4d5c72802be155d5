/* SPDX-License-Identifier: Apache-2.0 */
/*
 * internal.h - shared between the files of libp11ticket; not installed.
 *
 * libp11ticket never touches PKCS#11.  It reaches the token only through EVP
 * fetches of the p11ticket provider, by the names in p11ticket.h.
 */
#ifndef P11T_LIB_INTERNAL_H
#define P11T_LIB_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "p11ticket.h"

/* The root CMakeLists builds with -fvisibility=hidden; the version script
 * (libp11ticket.map) is the second fence. */
#define P11TICKET_EXPORT __attribute__((visibility("default")))

#define P11T_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* Why a ticket callback may log, each rate-limited on its own. */
enum p11t_lib_limit {
    P11T_LIMIT_NONE = -1,   /* not rate-limited (p11ticket_enable) */
    P11T_LIMIT_REFUSED = 0, /* enc=1 failed: no ticket issued */
    P11T_LIMIT_UNKNOWN,     /* enc=0 under a key name the token lacks */
    P11T_LIMIT_DECRYPT,     /* enc=0 failed for another reason */
    P11T_LIMIT_COUNT
};

/* The problem key (see p11t_lib_log_problem) of a missing provider. */
#define P11T_PROBLEM_NOT_LOADED "p11ticket provider not loaded"

/* Seconds between two messages of the same kind from one SSL_CTX. */
#define P11T_LOG_INTERVAL 10

enum p11t_lib_routing {
    P11T_ROUTING_UNKNOWN = 0,
    P11T_ROUTING_YES,
    P11T_ROUTING_NO,
};

/*
 * Per-SSL_CTX state, kept in SSL_CTX ex_data and freed by its free callback.
 * Every field the ticket callback reads is atomic: handshakes run on any
 * thread, and p11ticket_enable() may be called again while they do.
 */
struct p11t_lib_state {
    OSSL_LIB_CTX *libctx;         /* not owned; NULL = default libctx */
    _Atomic(EVP_CIPHER *) cipher; /* owned; NULL while the provider is absent */
    atomic_bool enabled;          /* p11ticket_enable() was called */
    atomic_bool automatic;        /* made while auto-enable was on */
    atomic_int routing;           /* enum p11t_lib_routing */

    atomic_ullong issued;
    atomic_ullong resumed;
    atomic_ullong renewed;
    atomic_ullong unknown_key;
    atomic_ullong refused;
    atomic_ullong errors;

    atomic_llong next_log[P11T_LIMIT_COUNT]; /* CLOCK_MONOTONIC seconds */

    /* The failure reported last, so that a broken token, which fails every
     * handshake the same way, is reported once rather than every
     * P11T_LOG_INTERVAL; cleared by the next success. */
    pthread_mutex_t problem_lock;
    char problem[256]; /* under problem_lock */
    atomic_bool has_problem;
};

/* state.c */
int p11t_lib_indexes_ready(void);
EVP_CIPHER *p11t_lib_state_cipher(struct p11t_lib_state *st);
struct p11t_lib_state *p11t_lib_state_get(const SSL_CTX *ctx);
struct p11t_lib_state *p11t_lib_state_get_or_new(SSL_CTX *ctx);
struct p11t_lib_state *p11t_lib_state_for_ssl(const SSL *s);
int p11t_lib_pending_set(SSL *s, bool renew);
void p11t_lib_pending_settle(SSL *s);

/* ticket_cb.c */
int p11t_lib_ticket_cb(SSL *s, unsigned char *key_name, unsigned char *iv,
                       EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc);

/* log.c */
void p11t_lib_log(int level, const char *fmt, ...) P11T_PRINTF(2, 3);
void p11t_lib_log_limited(struct p11t_lib_state *st, enum p11t_lib_limit kind,
                          int level, const char *fmt, ...) P11T_PRINTF(4, 5);
void p11t_lib_log_problem(struct p11t_lib_state *st, enum p11t_lib_limit kind,
                          int level, const char *problem, const char *fmt, ...)
    P11T_PRINTF(5, 6);
void p11t_lib_problem_solved(struct p11t_lib_state *st);
void p11t_lib_hex(const unsigned char *in, size_t len, char *out);

#endif /* P11T_LIB_INTERNAL_H */
