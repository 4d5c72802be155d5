/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_threads.c - one server SSL_CTX shared by several threads, each
 * running resumption handshakes at the same time (TLS 1.3 threads issue
 * and accept tickets on every handshake, TLS 1.2 threads accept).  Every
 * handshake must succeed and resume.  Built with -DP11T_SANITIZE=ON this
 * runs under ASan/UBSan; a ThreadSanitizer build runs it unchanged.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/ssl.h>

#include "p11ticket.h"
#include "support.h"

#define N_THREADS 4
#define N_RESUMES 50

static SSL_CTX *sctx, *cctx;
static uint8_t key[16];

typedef struct worker {
    int id;
    int version;
    int full_ok;
    int ok, reused, ours;
    char why[320];
} worker;

static int ours(const SSL_SESSION *s)
{
    const unsigned char *t;

    return t_ticket(s, &t) >= 16 && memcmp(t, key, 16) == 0;
}

static void *run(void *arg)
{
    worker *w = arg;
    t_conn_opts o = {.version = w->version};
    SSL_SESSION *sess;
    t_conn r;

    if (!t_connect(sctx, cctx, &o, &r)) {
        snprintf(w->why, sizeof(w->why), "full handshake: %s", r.why);
        return NULL;
    }
    w->full_ok = ours(r.session);
    sess = r.session;
    r.session = NULL;
    t_conn_clear(&r);
    for (int i = 0; i < N_RESUMES; i++) {
        o.session = sess;
        if (!t_connect(sctx, cctx, &o, &r)) {
            if (w->why[0] == '\0')
                snprintf(w->why, sizeof(w->why), "resumption %d: %s", i, r.why);
            continue;
        }
        w->ok++;
        if (r.client_reused && r.server_reused)
            w->reused++;
        /* TLS 1.3 renews: continue with the newest ticket. */
        if (w->version == TLS1_3_VERSION && r.session != NULL) {
            w->ours += ours(r.session);
            SSL_SESSION_free(sess);
            sess = r.session;
            r.session = NULL;
        }
        t_conn_clear(&r);
    }
    SSL_SESSION_free(sess);
    return NULL;
}

int main(void)
{
    int64_t now = (int64_t)time(NULL);
    pthread_t th[N_THREADS];
    worker w[N_THREADS];
    p11ticket_stats before, after;
    OSSL_LIB_CTX *libctx;
    char cnf[512];
    t_env env;
    t_log log = {0};

    REQUIRE(t_env_init(&env, "threads"));
    REQUIRE(t_key_create(&env, NULL, now - 60, INT64_MAX, INT64_MAX, key));
    REQUIRE(t_write_cnf(&env, "openssl.cnf", NULL, cnf, sizeof(cnf)));
    libctx = t_libctx_load(cnf);
    REQUIRE(libctx != NULL);
    t_log_capture(&log);
    sctx = p11ticket_SSL_CTX_new(libctx, TLS_server_method());
    cctx = SSL_CTX_new(TLS_client_method());
    REQUIRE(sctx != NULL && cctx != NULL);
    REQUIRE(t_use_new_cert(sctx, libctx));
    SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);
    CHECK_EQ(p11ticket_enable(sctx), 1);
    CHECK(p11ticket_get_stats(sctx, &before) == 1);

    t_section("%d threads x %d resumptions on one SSL_CTX", N_THREADS,
              N_RESUMES);
    for (int i = 0; i < N_THREADS; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].id = i;
        w[i].version = i % 2 == 0 ? TLS1_3_VERSION : TLS1_2_VERSION;
        REQUIRE(pthread_create(&th[i], NULL, run, &w[i]) == 0);
    }
    for (int i = 0; i < N_THREADS; i++)
        pthread_join(th[i], NULL);

    for (int i = 0; i < N_THREADS; i++) {
        const char *v = w[i].version == TLS1_3_VERSION ? "TLS 1.3" : "TLS 1.2";

        CHECKF(w[i].why[0] == '\0', "thread %d (%s): %s", i, v, w[i].why);
        CHECKF(w[i].full_ok, "thread %d (%s): first ticket not under the key",
               i, v);
        CHECKF(w[i].ok == N_RESUMES && w[i].reused == N_RESUMES,
               "thread %d (%s): %d handshakes ok, %d resumed of %d", i, v,
               w[i].ok, w[i].reused, N_RESUMES);
        if (w[i].version == TLS1_3_VERSION)
            CHECKF(w[i].ours == N_RESUMES,
                   "thread %d: %d of %d renewed tickets under the key", i,
                   w[i].ours, N_RESUMES);
    }
    CHECK(p11ticket_get_stats(sctx, &after) == 1);
    CHECKF(after.resumed - before.resumed == N_THREADS * N_RESUMES,
           "stats.resumed moved by %llu", after.resumed - before.resumed);
    CHECKF(after.errors == before.errors && after.refused == before.refused,
           "errors %llu refused %llu", after.errors, after.refused);
    CHECKF(log.count[P11TICKET_LOG_ERROR] == 0 &&
               log.count[P11TICKET_LOG_WARNING] == 0,
           "logged: %s", log.last);

    t_log_capture(NULL);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    OSSL_LIB_CTX_free(libctx);
    t_env_cleanup(&env);
    return t_finish("test_threads");
}
