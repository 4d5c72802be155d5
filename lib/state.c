/* SPDX-License-Identifier: Apache-2.0 */
/*
 * state.c - where the per-SSL_CTX state lives and how the ticket callback
 * finds it.
 *
 * The state hangs off SSL_CTX ex_data, so SSL_CTX_free() frees it.  The ticket
 * callback, however, gets only an SSL, and libssl runs it against
 * s->session_ctx (the SSL_CTX given to SSL_new(), ssl/statem/statem_srvr.c),
 * not SSL_get_SSL_CTX(s), which a servername callback may have switched.
 * OpenSSL has no getter for session_ctx, so an SSL ex_data "new" callback
 * copies the state pointer of the initial SSL_CTX into every SSL as it is
 * created.  The pointer stays valid: an SSL holds a reference on its
 * session_ctx until SSL_free().
 */
#include <pthread.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>

#include "internal.h"

static int ctx_index = -1;
static int ssl_index = -1;
static int pending_index = -1;

/* Values of the pending_index slot: a ticket the callback accepted, with or
 * without asking libssl to renew it. */
static char pending_use, pending_renew;
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

/* Serialises state creation, so two p11ticket_enable() calls racing on one
 * SSL_CTX cannot both install a state. */
static pthread_mutex_t create_lock = PTHREAD_MUTEX_INITIALIZER;

static void state_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                       long argl, void *argp)
{
    struct p11t_lib_state *st = ptr;

    if (st == NULL)
        return;
    EVP_CIPHER_free(atomic_load(&st->cipher));
    pthread_mutex_destroy(&st->problem_lock);
    OPENSSL_free(st);
}

static void ssl_remember_state(void *parent, void *ptr, CRYPTO_EX_DATA *ad,
                               int idx, long argl, void *argp)
{
    /* CRYPTO_new_ex_data() runs after SSL_new() has set s->ctx, which is the
     * future session_ctx (ssl/ssl_lib.c). */
    SSL_CTX *ctx = SSL_get_SSL_CTX(parent);
    struct p11t_lib_state *st = ctx != NULL ? p11t_lib_state_get(ctx) : NULL;

    /* If this fails the callback falls back to SSL_get_SSL_CTX(). */
    if (st != NULL)
        (void)CRYPTO_set_ex_data(ad, idx, st);
}

/*
 * Why resumptions are counted late: the callback runs before libssl checks
 * the ticket's HMAC, decrypts it and checks the session's lifetime
 * (tls_decrypt_ticket() in ssl/t1_lib.c), and any of those may still turn
 * the handshake into a full one.  So the callback only marks the SSL, and
 * the mark is settled against SSL_session_reused() once the outcome is
 * known: when the same SSL next reaches the callback (libssl issuing the
 * renewed ticket) or when it is freed.
 */
static void settle(SSL *s, const void *mark)
{
    struct p11t_lib_state *st;

    if (mark == NULL || !SSL_session_reused(s))
        return;
    st = p11t_lib_state_for_ssl(s);
    if (st == NULL)
        return;
    atomic_fetch_add(&st->resumed, 1);
    if (mark == &pending_renew)
        atomic_fetch_add(&st->renewed, 1);
}

static void pending_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                         long argl, void *argp)
{
    /* SSL_free() runs ex_data free callbacks first, while the SSL and its
     * other ex_data are still intact (ssl/ssl_lib.c). */
    settle(parent, ptr);
}

static void index_init(void)
{
    ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, state_free);
    ssl_index = SSL_get_ex_new_index(0, NULL, ssl_remember_state, NULL, NULL);
    pending_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, pending_free);
}

int p11t_lib_indexes_ready(void)
{
    if (pthread_once(&index_once, index_init) != 0)
        return 0;
    return ctx_index >= 0 && ssl_index >= 0 && pending_index >= 0;
}

int p11t_lib_pending_set(SSL *s, bool renew)
{
    if (!p11t_lib_indexes_ready())
        return 0;
    return SSL_set_ex_data(s, pending_index,
                           renew ? &pending_renew : &pending_use);
}

void p11t_lib_pending_settle(SSL *s)
{
    void *mark;

    if (!p11t_lib_indexes_ready())
        return;
    mark = SSL_get_ex_data(s, pending_index);
    if (mark == NULL)
        return;
    (void)SSL_set_ex_data(s, pending_index, NULL);
    settle(s, mark);
}

struct p11t_lib_state *p11t_lib_state_get(const SSL_CTX *ctx)
{
    if (ctx == NULL || !p11t_lib_indexes_ready())
        return NULL;
    return SSL_CTX_get_ex_data(ctx, ctx_index);
}

static struct p11t_lib_state *state_new(void)
{
    struct p11t_lib_state *st = OPENSSL_malloc(sizeof(*st));

    if (st == NULL)
        return NULL;
    if (pthread_mutex_init(&st->problem_lock, NULL) != 0) {
        OPENSSL_free(st);
        return NULL;
    }
    st->problem[0] = '\0';
    atomic_init(&st->has_problem, false);
    st->libctx = NULL;
    atomic_init(&st->cipher, NULL);
    atomic_init(&st->enabled, false);
    atomic_init(&st->automatic, false);
    atomic_init(&st->routing, P11T_ROUTING_UNKNOWN);
    atomic_init(&st->issued, 0);
    atomic_init(&st->resumed, 0);
    atomic_init(&st->renewed, 0);
    atomic_init(&st->unknown_key, 0);
    atomic_init(&st->refused, 0);
    atomic_init(&st->errors, 0);
    for (int i = 0; i < P11T_LIMIT_COUNT; i++)
        atomic_init(&st->next_log[i], 0);
    return st;
}

struct p11t_lib_state *p11t_lib_state_get_or_new(SSL_CTX *ctx)
{
    struct p11t_lib_state *st;

    if (ctx == NULL || !p11t_lib_indexes_ready())
        return NULL;

    pthread_mutex_lock(&create_lock);
    st = SSL_CTX_get_ex_data(ctx, ctx_index);
    if (st == NULL) {
        st = state_new();
        if (st != NULL && !SSL_CTX_set_ex_data(ctx, ctx_index, st)) {
            OPENSSL_free(st);
            st = NULL;
        }
    }
    pthread_mutex_unlock(&create_lock);
    return st;
}

struct p11t_lib_state *p11t_lib_state_for_ssl(const SSL *s)
{
    struct p11t_lib_state *st;

    if (s == NULL || !p11t_lib_indexes_ready())
        return NULL;
    st = SSL_get_ex_data(s, ssl_index);
    if (st != NULL)
        return st;
    /* SSL created before the state existed: the best remaining guess. */
    return p11t_lib_state_get(SSL_get_SSL_CTX(s));
}

/*
 * The state's cipher, fetched now if the provider was absent last time (it
 * may have been loaded since) or if nothing fetched it yet (auto-enable
 * fetches in the first handshake).  Errors of a failed fetch are the
 * caller's to discard.
 */
EVP_CIPHER *p11t_lib_state_cipher(struct p11t_lib_state *st)
{
    EVP_CIPHER *cipher = atomic_load(&st->cipher);
    EVP_CIPHER *expected = NULL;

    if (cipher != NULL)
        return cipher;
    cipher = EVP_CIPHER_fetch(st->libctx, P11TICKET_CIPHER_NAME, NULL);
    if (cipher == NULL)
        return NULL;
    if (atomic_compare_exchange_strong(&st->cipher, &expected, cipher))
        return cipher;
    /* Another thread stored one first; keep that one. */
    EVP_CIPHER_free(cipher);
    return expected;
}
