/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_keyref.c - key references (p11t_keyref, hsm.h): a ticket looks its
 * key up once, and an operation never uses a handle older than the cache.
 *
 * Runs hsm/ directly against a throwaway SoftHSM token.  Generations are
 * created and destroyed by t_keytool in another process, as `p11ticket
 * rotate` or `revoke` would do on a live server.  Covers: resolving by name
 * and by "current"; lazy resolution of a named reference; a reference that
 * crosses a rescan (resolved again, same key); a reference to a generation
 * destroyed by another process, with and without session copies (usable
 * until this process's next scan at most, then P11T_CKR_UNKNOWN_KEY); a
 * reference carried into a forked child; threads sharing one handle while
 * another thread forces rescans (no operation may fail); and a periodic
 * scan in progress, which other threads never wait for: they use the cache
 * while it is younger than refresh-interval and go without a key after.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "hsm.h"
#include "internal.h" /* refresh_lock, to hold a scan "in progress" */
#include "support.h"

static t_env env;

static p11t_hsm *open_hsm(const char *copies, const char *refresh)
{
    char pin_source[400];
    const char *kv[][2] = {{"pkcs11-module", env.pkcs11},
                           {"token-uri", "pkcs11:token=tickets"},
                           {"pin-source", pin_source},
                           {"refresh-interval", refresh},
                           {"rescan-interval", "1"},
                           {"session-copies", copies}};
    p11t_config *cfg = p11t_config_new();
    p11t_hsm *h = NULL;
    p11t_err e = {0};

    snprintf(pin_source, sizeof(pin_source), "file:%s", env.pin_file);
    if (cfg == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
        if (p11t_config_set(cfg, kv[i][0], kv[i][1], &e) != CKR_OK) {
            fprintf(stderr, "config: %s\n", e.msg);
            p11t_config_free(cfg);
            return NULL;
        }
    if (p11t_config_check(cfg, &e) != CKR_OK ||
        p11t_hsm_new(cfg, &h, &e) != CKR_OK || p11t_hsm_ready(h, &e) != CKR_OK) {
        fprintf(stderr, "hsm: %s\n", e.msg);
        return NULL;
    }
    return h;
}

/* Encrypt, decrypt and MAC through ref; 1 if everything round-trips. */
static int roundtrip(p11t_hsm *h, p11t_keyref *ref, CK_RV *rv_out)
{
    uint8_t iv[P11T_IV_LEN], in[200], ct[224], pt[224], tag1[P11T_HMAC_LEN],
        tag2[P11T_HMAC_LEN];
    size_t ctl = sizeof(ct), ptl = sizeof(pt);
    p11t_err e = {0};
    CK_RV rv;

    if (RAND_bytes(iv, sizeof(iv)) != 1 || RAND_bytes(in, sizeof(in)) != 1)
        return 0;
    rv = p11t_hsm_encrypt(h, ref, iv, in, sizeof(in), ct, &ctl, &e);
    if (rv == CKR_OK)
        rv = p11t_hsm_decrypt(h, ref, iv, ct, ctl, pt, &ptl, &e);
    if (rv == CKR_OK)
        rv = p11t_hsm_hmac(h, ref, ct, ctl, tag1, &e);
    if (rv == CKR_OK)
        rv = p11t_hsm_hmac(h, ref, ct, ctl, tag2, &e);
    if (rv_out != NULL)
        *rv_out = rv;
    return rv == CKR_OK && ctl == 208 && ptl == sizeof(in) &&
           memcmp(pt, in, sizeof(in)) == 0 &&
           memcmp(tag1, tag2, sizeof(tag1)) == 0;
}

/* A scan now, as the periodic refresh or a rescan for an unknown name
 * would run it. */
static void force_rescan(p11t_hsm *h)
{
    p11t_err e = {0};

    CHECK_EQ(p11t_cache_refresh(h, &e), CKR_OK);
}

static void basics(p11t_hsm *h, const uint8_t old[16], const uint8_t cur[16])
{
    uint8_t junk[P11T_NAME_LEN];
    p11t_keyref r, lazy;
    p11t_err e = {0};
    CK_RV rv;

    t_section("resolving by name and by current");
    REQUIRE(RAND_bytes(junk, sizeof(junk)) == 1);
    CHECK_EQ(p11t_hsm_resolve(h, junk, &r, &e), P11T_CKR_UNKNOWN_KEY);
    CHECK(r.gen == 0);
    CHECK(strstr(e.msg, "unknown key") != NULL);

    CHECK_EQ(p11t_hsm_resolve(h, old, &r, &e), CKR_OK);
    CHECK(memcmp(r.info.name, old, 16) == 0);
    CHECK(r.gen != 0);
    CHECK_EQ(r.info.aes_len, 32);
    CHECK(roundtrip(h, &r, &rv));
    CHECK_EQ(rv, CKR_OK);
    CHECK_EQ(p11t_hsm_is_current(h, &r, (int64_t)time(NULL)), 0);

    CHECK_EQ(p11t_hsm_resolve_current(h, (int64_t)time(NULL), &r, &e), CKR_OK);
    CHECKF(memcmp(r.info.name, cur, 16) == 0, "current is not the newest key");
    CHECK_EQ(p11t_hsm_is_current(h, &r, (int64_t)time(NULL)), 1);

    /* An unresolved reference is resolved by its first operation. */
    p11t_keyref_set_name(&lazy, cur);
    CHECK(lazy.gen == 0);
    CHECK(roundtrip(h, &lazy, &rv));
    CHECK(lazy.gen != 0 && lazy.aes_op == r.aes_op);
}

static void across_rescan(p11t_hsm *h, const uint8_t k[16])
{
    p11t_keyref r, again;
    p11t_err e = {0};
    uint64_t g0;
    CK_RV rv;

    t_section("a reference that crosses a rescan is resolved again");
    CHECK_EQ(p11t_hsm_resolve(h, k, &r, &e), CKR_OK);
    g0 = r.gen;
    force_rescan(h);
    CHECK(roundtrip(h, &r, &rv));
    CHECK_EQ(rv, CKR_OK);
    CHECKF(r.gen > g0, "reference not re-resolved (gen %llu, was %llu)",
           (unsigned long long)r.gen, (unsigned long long)g0);
    CHECK_EQ(p11t_hsm_resolve(h, k, &again, &e), CKR_OK);
    CHECK(again.gen == r.gen && again.aes_op == r.aes_op &&
          again.hmac_op == r.hmac_op);
}

static void destroyed(p11t_hsm *h, int copies)
{
    uint8_t k[16];
    p11t_keyref r;
    p11t_err e = {0};
    int64_t now = (int64_t)time(NULL);
    CK_RV rv = CKR_OK;

    t_section("a generation destroyed by another process (session-copies=%s)",
              copies ? "yes" : "no");
    /* Decrypt-only, so it never becomes the current key of other cases. */
    REQUIRE(t_key_create(&env, NULL, now - 7200, now - 3600, now + 3600, k));
    force_rescan(h);
    CHECK_EQ(p11t_hsm_resolve(h, k, &r, &e), CKR_OK);
    CHECK(roundtrip(h, &r, NULL));
    REQUIRE(t_key_destroy(&env, NULL, k));
    if (copies) {
        /* The session copy lives until this process's next scan: the
         * documented refresh bound. */
        CHECK(roundtrip(h, &r, &rv));
        CHECK_EQ(rv, CKR_OK);
        force_rescan(h);
    }
    /* Never the old handle: re-resolved by name, which is gone. */
    CHECK(!roundtrip(h, &r, &rv));
    CHECK_EQ(rv, P11T_CKR_UNKNOWN_KEY);
    CHECK_EQ(p11t_hsm_resolve(h, k, &r, &e), P11T_CKR_UNKNOWN_KEY);
}

typedef struct fork_arg {
    p11t_hsm *h;
    p11t_keyref ref;
} fork_arg;

static int in_child(void *varg)
{
    fork_arg *a = varg;
    unsigned epoch = a->ref.epoch;
    CK_RV rv;

    /* The child re-initialises PKCS#11; the parent's handles mean nothing
     * in the new module instance, so the reference is resolved again. */
    CHECK(roundtrip(a->h, &a->ref, &rv));
    CHECK_EQ(rv, CKR_OK);
    CHECK(a->ref.epoch != epoch);
    return 1;
}

static void forked(p11t_hsm *h, const uint8_t k[16])
{
    fork_arg a = {.h = h};
    p11t_err e = {0};

    t_section("a reference carried into a forked child");
    CHECK_EQ(p11t_hsm_resolve(h, k, &a.ref, &e), CKR_OK);
    CHECK(t_in_child("keyref", in_child, &a));
    /* ... and the parent's own reference still works. */
    CHECK(roundtrip(h, &a.ref, NULL));
}

#define WORKERS 4

typedef struct shared {
    p11t_hsm *h;
    atomic_int stop;
    atomic_long ops, failures, scans;
    CK_RV first_rv;
    pthread_mutex_t lock;
} shared;

static void *worker(void *varg)
{
    shared *s = varg;

    while (!atomic_load(&s->stop)) {
        p11t_keyref r;
        p11t_err e = {0};
        CK_RV rv = p11t_hsm_resolve_current(s->h, (int64_t)time(NULL), &r, &e);

        if (rv == CKR_OK && roundtrip(s->h, &r, &rv)) {
            atomic_fetch_add(&s->ops, 1);
            continue;
        }
        pthread_mutex_lock(&s->lock);
        if (atomic_fetch_add(&s->failures, 1) == 0)
            s->first_rv = rv;
        pthread_mutex_unlock(&s->lock);
    }
    return NULL;
}

static void *churn(void *varg)
{
    shared *s = varg;

    while (!atomic_load(&s->stop)) {
        p11t_err e = {0};

        if (p11t_cache_refresh(s->h, &e) == CKR_OK)
            atomic_fetch_add(&s->scans, 1);
    }
    return NULL;
}

static void threads(p11t_hsm *h)
{
    static shared s;
    pthread_t w[WORKERS], c;
    uint64_t errors0 = p11t_hsm_error_count(h);

    t_section("%d threads on one handle while another forces rescans",
              WORKERS);
    s.h = h;
    pthread_mutex_init(&s.lock, NULL);
    for (int i = 0; i < WORKERS; i++)
        REQUIRE(pthread_create(&w[i], NULL, worker, &s) == 0);
    REQUIRE(pthread_create(&c, NULL, churn, &s) == 0);
    sleep(3);
    atomic_store(&s.stop, 1);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(w[i], NULL);
    pthread_join(c, NULL);
    fprintf(stderr, "  %ld round trips, %ld rescans\n", atomic_load(&s.ops),
            atomic_load(&s.scans));
    CHECKF(atomic_load(&s.failures) == 0, "%ld failures, first %s",
           atomic_load(&s.failures), p11t_rv_name(s.first_rv));
    CHECK(atomic_load(&s.ops) > 0);
    CHECK(atomic_load(&s.scans) > 0);
    CHECK_EQ(p11t_hsm_error_count(h), errors0);
    pthread_mutex_destroy(&s.lock);
}

typedef struct resolver {
    p11t_hsm *h;
    const uint8_t *name;
    atomic_int done;
    CK_RV rv;
} resolver;

static void *resolve_thread(void *arg)
{
    resolver *r = arg;
    p11t_keyref ref;
    p11t_err e = {0};

    r->rv = p11t_hsm_resolve(r->h, r->name, &ref, &e);
    atomic_store(&r->done, 1);
    return NULL;
}

/* 1 if r finished within ms milliseconds. */
static int done_within(resolver *r, int ms)
{
    for (int waited = 0; waited < ms && !atomic_load(&r->done); waited += 10)
        usleep(10 * 1000);
    return atomic_load(&r->done);
}

static void scan_in_progress(const uint8_t k[16])
{
    p11t_hsm *h = open_hsm("yes", "4");
    resolver a = {.name = k}, b = {.name = k}, c = {.name = k};
    p11t_keyref r;
    p11t_err e = {0};
    pthread_t t;

    t_section("a scan in progress never stalls other threads "
              "(refresh-interval 4 s)");
    REQUIRE(h != NULL);
    a.h = b.h = c.h = h;
    CHECK_EQ(p11t_hsm_resolve(h, k, &r, &e), CKR_OK); /* the first scan */
    /* Past 3/4 of the interval a lookup would scan; holding the lock
     * stands for another thread's slow scan, so this one uses the cache,
     * which is still younger than the interval. */
    usleep(3400 * 1000);
    pthread_mutex_lock(&h->refresh_lock);
    REQUIRE(pthread_create(&t, NULL, resolve_thread, &a) == 0);
    CHECKF(done_within(&a, 500), "a lookup waited for the scan in progress");
    pthread_join(t, NULL);
    CHECK_EQ(a.rv, CKR_OK);

    /* Past the interval the cache is never used (a revoked key must be
     * out of use by then), and the lookup still does not wait: no key. */
    usleep(1000 * 1000);
    REQUIRE(pthread_create(&t, NULL, resolve_thread, &b) == 0);
    CHECKF(done_within(&b, 500),
           "a lookup waited for the scan in progress past the interval");
    pthread_join(t, NULL);
    CHECKF(b.rv == P11T_CKR_BACKOFF,
           "a cache older than refresh-interval was used (%s)",
           p11t_rv_name(b.rv));
    pthread_mutex_unlock(&h->refresh_lock);

    /* With nobody else scanning, the lookup scans and finds the key. */
    REQUIRE(pthread_create(&t, NULL, resolve_thread, &c) == 0);
    CHECKF(done_within(&c, 10000), "the lookup did not finish");
    pthread_join(t, NULL);
    CHECK_EQ(c.rv, CKR_OK);
}

int main(void)
{
    p11t_hsm *h, *nocopy;
    uint8_t k1[16], k2[16];
    int64_t now = (int64_t)time(NULL);
    int rc;

    REQUIRE(t_env_init(&env, "keyref"));
    REQUIRE(t_key_create(&env, NULL, now - 3600, INT64_MAX, INT64_MAX, k1));
    REQUIRE(t_key_create(&env, NULL, now - 1800, INT64_MAX, INT64_MAX, k2));
    h = open_hsm("yes", "3600");
    nocopy = open_hsm("no", "3600");
    REQUIRE(h != NULL && nocopy != NULL);

    basics(h, k1, k2);
    across_rescan(h, k1);
    destroyed(h, 1);
    destroyed(nocopy, 0);
    forked(h, k2);
    threads(h);
    scan_in_progress(k2);

    rc = t_finish("test_keyref");
    t_env_cleanup(&env);
    fflush(NULL);
    /* No p11t_hsm_free(): it may finalise the module, and SoftHSM crashes
     * when finalised at process exit
     * (docs/design.md, "Never C_Finalize at exit"). */
    _exit(rc);
}
