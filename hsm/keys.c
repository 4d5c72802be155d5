/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keys.c - the handle cache and the hot-path operations.
 *
 * The hot path never searches the token: C_FindObjects costs 42 us with 4
 * objects and 1.6 ms with 104 (docs/design.md, "Latency").  Handles are
 * cached per key name and the cache is rescanned
 *   - when it is older than refresh-interval,
 *   - when a ticket names a key we do not know (at most once per
 *     rescan-interval),
 *   - when no key is active,
 *   - when the token says a cached handle is invalid (another process
 *     destroyed the object); the operation is then retried once.
 *
 * Session copies (session-copies = yes, the default): SoftHSM re-reads a
 * token object's file on every *Init, so an operation on a token key costs
 * about 19 us against 6 us on a session object (docs/design.md,
 * "Latency").  Each scan therefore copies every usable generation into a
 * session object inside
 * the token (C_CopyObject with CKA_TOKEN false; the copy keeps CKA_SENSITIVE
 * and CKA_EXTRACTABLE, so the key still never leaves the token).  The
 * copies belong to the login session, and every scan destroys the copies of
 * generations that have left the token, so a copy outlives its token object
 * by at most one refresh-interval: retire and revoke still take effect on
 * every server within that bound.
 *
 * The ticket cipher, AES-CBC with PKCS#7 padding, runs as CKM_AES_CBC_PAD
 * or, on tokens without it (p11-kit's client module), as CBC built on
 * CKM_AES_ECB (docs/design.md, "p11-kit remoting"); the login chooses
 * (module.c, choose_mechanism()) and run() follows that choice per call.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "internal.h"

/* ---- scanning ------------------------------------------------------------ */

static CK_RV find_all(p11t_hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE **out,
                      size_t *n)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_BBOOL tok = CK_TRUE;
    CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof(cls)},
                           {CKA_TOKEN, &tok, sizeof(tok)}};
    CK_OBJECT_HANDLE *all = NULL, batch[64];
    size_t cap = 0;
    CK_ULONG got;
    CK_RV rv;

    *out = NULL;
    *n = 0;
    rv = P11T_CALL(h, C_FindObjectsInit, s, tmpl, 2);
    if (rv != CKR_OK)
        return rv;
    while ((rv = P11T_CALL(h, C_FindObjects, s, batch, 64, &got)) == CKR_OK && got > 0) {
        if (*n + got > cap) {
            CK_OBJECT_HANDLE *p;

            cap = (*n + got) * 2;
            p = realloc(all, cap * sizeof(*p));
            if (p == NULL) {
                rv = CKR_HOST_MEMORY;
                break;
            }
            all = p;
        }
        memcpy(all + *n, batch, got * sizeof(*batch));
        *n += got;
    }
    P11T_CALL(h, C_FindObjectsFinal, s);
    if (rv != CKR_OK) {
        free(all);
        *n = 0;
        return rv;
    }
    *out = all;
    return CKR_OK;
}

static CK_BBOOL get_bool(p11t_hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
                         CK_ATTRIBUTE_TYPE t)
{
    CK_BBOOL v = CK_FALSE;
    CK_ATTRIBUTE a = {t, &v, sizeof(v)};

    if (P11T_CALL(h, C_GetAttributeValue, s, o, &a, 1) != CKR_OK)
        return CK_FALSE;
    return v;
}

/* Errors about one attribute or one object that say nothing about the
 * token: the object is skipped, the scan goes on. */
static int object_error(CK_RV rv)
{
    return rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE ||
           rv == CKR_OBJECT_HANDLE_INVALID;
}

/*
 * Reads one object.  Returns 1 if it is a well-formed p11ticket key, 0 if it
 * is something else (or vanished meanwhile), or a negative value with *rv
 * set when the token failed: the whole scan is then void.
 */
static int read_object(p11t_hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
                       int detail, p11t_objinfo *oi, CK_RV *rv)
{
    CK_ATTRIBUTE a[5];
    char *label = NULL;
    int ok = 0;

    memset(oi, 0, sizeof(*oi));
    oi->handle = o;
    /* The label may be rewritten (retire) between the length query and the
     * read; a longer one comes back as CKR_BUFFER_TOO_SMALL: ask again. */
    for (int attempt = 0; attempt < 3; attempt++) {
        a[0] = (CK_ATTRIBUTE){CKA_LABEL, NULL, 0};
        *rv = P11T_CALL(h, C_GetAttributeValue, s, o, a, 1);
        if (*rv != CKR_OK)
            return object_error(*rv) ? 0 : -1;
        if (a[0].ulValueLen == CK_UNAVAILABLE_INFORMATION ||
            a[0].ulValueLen > 4096)
            return 0;
        free(label);
        label = malloc(a[0].ulValueLen + 1);
        if (label == NULL) {
            *rv = CKR_HOST_MEMORY;
            return -1;
        }
        a[0].pValue = label;
        a[1] = (CK_ATTRIBUTE){CKA_ID, oi->name, P11T_NAME_LEN};
        a[2] = (CK_ATTRIBUTE){CKA_KEY_TYPE, &oi->key_type,
                              sizeof(oi->key_type)};
        a[3] = (CK_ATTRIBUTE){CKA_SENSITIVE, &oi->sensitive,
                              sizeof(oi->sensitive)};
        a[4] = (CK_ATTRIBUTE){CKA_EXTRACTABLE, &oi->extractable,
                              sizeof(oi->extractable)};
        *rv = P11T_CALL(h, C_GetAttributeValue, s, o, a, 5);
        if (*rv != CKR_BUFFER_TOO_SMALL)
            break;
    }
    if (*rv == CKR_OK)
        ok = a[1].ulValueLen == P11T_NAME_LEN &&
             a[3].ulValueLen == sizeof(oi->sensitive) &&
             a[4].ulValueLen == sizeof(oi->extractable) &&
             p11t_label_parse(label, a[0].ulValueLen, &oi->role, &oi->times);
    free(label);
    if (*rv != CKR_OK)
        return object_error(*rv) || *rv == CKR_BUFFER_TOO_SMALL ? 0 : -1;
    if (!ok)
        return 0;
    a[0] = (CK_ATTRIBUTE){CKA_VALUE_LEN, &oi->value_len, sizeof(oi->value_len)};
    *rv = P11T_CALL(h, C_GetAttributeValue, s, o, a, 1);
    if (*rv != CKR_OK) {
        if (!object_error(*rv))
            return -1;
        oi->value_len = 0;
    }
    *rv = CKR_OK;
    if (detail) {
        CK_ATTRIBUTE v = {CKA_VALUE, NULL, 0};
        CK_RV vrv;

        oi->token = get_bool(h, s, o, CKA_TOKEN);
        oi->priv = get_bool(h, s, o, CKA_PRIVATE);
        oi->always_sensitive = get_bool(h, s, o, CKA_ALWAYS_SENSITIVE);
        oi->never_extractable = get_bool(h, s, o, CKA_NEVER_EXTRACTABLE);
        /* Only the length is asked for; the value is never fetched. */
        vrv = P11T_CALL(h, C_GetAttributeValue, s, o, &v, 1);
        oi->value_readable =
            vrv == CKR_OK && v.ulValueLen != CK_UNAVAILABLE_INFORMATION;
    }
    return 1;
}

CK_RV p11t_scan_objects(p11t_hsm *h, CK_SESSION_HANDLE s, int detail,
                        p11t_objinfo **objs, size_t *n, p11t_err *err)
{
    CK_OBJECT_HANDLE *all;
    size_t total, k = 0;
    p11t_objinfo *out;
    CK_RV rv;

    *objs = NULL;
    *n = 0;
    rv = find_all(h, s, &all, &total);
    if (rv != CKR_OK) {
        p11t_err_set(err, rv, "C_FindObjects failed: %s", p11t_rv_name(rv));
        return rv;
    }
    out = calloc(total ? total : 1, sizeof(*out));
    if (out == NULL) {
        free(all);
        return CKR_HOST_MEMORY;
    }
    /* All or nothing: a token that fails half-way yields no list at all,
     * never a partial one that would look like keys were destroyed. */
    for (size_t i = 0; i < total; i++) {
        int r = read_object(h, s, all[i], detail, &out[k], &rv);

        if (r < 0) {
            free(all);
            free(out);
            p11t_err_set(err, rv, "C_GetAttributeValue failed: %s",
                         p11t_rv_name(rv));
            return rv;
        }
        k += (size_t)r;
    }
    free(all);
    *objs = out;
    *n = k;
    return CKR_OK;
}

/* The servers' view of the token: p11t_fold_generations, plus the handles
 * operations use (the token objects until sync_copies makes copies). */
static p11t_entry *build_entries(p11t_objinfo *o, size_t n, size_t *out_n)
{
    p11t_keyinfo *g;
    p11t_entry *e;
    size_t k, kept = 0;

    /* A key whose bytes could be read is not ours to use, whatever its
     * label says: one planted with known bytes would otherwise protect new
     * tickets.  The generation then lacks that role and is never used. */
    for (size_t i = 0; i < n; i++)
        if (o[i].sensitive == CK_TRUE && o[i].extractable == CK_FALSE)
            o[kept++] = o[i];
    if (p11t_fold_generations(o, kept, &g, &k) != 0)
        return NULL;
    e = calloc(k ? k : 1, sizeof(*e));
    for (size_t i = 0; e != NULL && i < k; i++) {
        e[i].info = g[i];
        e[i].aes = e[i].aes_op = g[i].aes_obj;
        e[i].hmac = e[i].hmac_op = g[i].hmac_obj;
    }
    free(g);
    *out_n = k;
    return e;
}

static CK_OBJECT_HANDLE copy_to_session(p11t_hsm *h, CK_SESSION_HANDLE login,
                                        CK_OBJECT_HANDLE obj)
{
    CK_BBOOL f = CK_FALSE;
    CK_ATTRIBUTE tmpl[] = {{CKA_TOKEN, &f, sizeof(f)}};
    CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE;

    /* Created from the login session, so the copy lives as long as the
     * login does (session objects die with the session that made them). */
    if (P11T_CALL(h, C_CopyObject, login, obj, tmpl, 1, &copy) != CKR_OK)
        return CK_INVALID_HANDLE;
    return copy;
}

static void destroy_copies(p11t_hsm *h, CK_SESSION_HANDLE login, p11t_entry *e)
{
    if (!e->copied)
        return;
    P11T_CALL(h, C_DestroyObject, login, e->aes_op);
    P11T_CALL(h, C_DestroyObject, login, e->hmac_op);
    e->copied = 0;
}

/*
 * Carries session copies over from the previous scan (same name and same
 * token objects), makes copies for new usable generations, and destroys
 * the copies of generations that are gone or changed.  Old copies from an
 * earlier epoch died with their sessions and are simply forgotten.
 */
static void sync_copies(p11t_hsm *h, CK_SESSION_HANDLE login, p11t_entry *ne,
                        size_t nn, p11t_entry *old, size_t no, int old_valid)
{
    int64_t now = (int64_t)time(NULL);

    for (size_t i = 0; i < nn; i++) {
        p11t_entry *e = &ne[i];

        for (size_t j = 0; old_valid && j < no; j++) {
            if (!old[j].copied || old[j].aes != e->aes ||
                old[j].hmac != e->hmac ||
                memcmp(old[j].info.name, e->info.name, P11T_NAME_LEN) != 0)
                continue;
            e->aes_op = old[j].aes_op;
            e->hmac_op = old[j].hmac_op;
            e->copied = 1;
            old[j].copied = 0; /* ownership moved */
        }
        if (e->copied || !h->cfg->session_copies || e->info.has_aes != 1 ||
            e->info.has_hmac != 1 ||
            p11t_lifecycle_state(&e->info.times, now) == P11T_STATE_EXPIRED)
            continue;
        e->aes_op = copy_to_session(h, login, e->aes);
        e->hmac_op = copy_to_session(h, login, e->hmac);
        if (e->aes_op == CK_INVALID_HANDLE || e->hmac_op == CK_INVALID_HANDLE) {
            /* Not copyable (CKA_COPYABLE false, or no support): use the
             * token objects directly. */
            if (e->aes_op != CK_INVALID_HANDLE)
                P11T_CALL(h, C_DestroyObject, login, e->aes_op);
            if (e->hmac_op != CK_INVALID_HANDLE)
                P11T_CALL(h, C_DestroyObject, login, e->hmac_op);
            e->aes_op = e->aes;
            e->hmac_op = e->hmac;
            continue;
        }
        e->copied = 1;
    }
    for (size_t j = 0; old_valid && j < no; j++)
        destroy_copies(h, login, &old[j]);
}

static int entry_cmp(const void *a, const void *b)
{
    return memcmp(((const p11t_entry *)a)->info.name,
                  ((const p11t_entry *)b)->info.name, P11T_NAME_LEN);
}

/*
 * SoftHSM whose token directory vanished or became unreadable keeps
 * answering C_FindObjects with CKR_OK and no objects, and its token flags
 * drop to 0 (not even CKF_TOKEN_INITIALIZED); it never sees the token again
 * without a restart (docs/design.md, "SoftHSM facts the code depends on").
 * So a scan first asks whether the token is still there.
 */
static CK_RV token_present(p11t_hsm *h, p11t_err *err)
{
    CK_TOKEN_INFO ti;
    CK_RV rv = CKR_OK;

    /* Another process's C_Login rewrites SoftHSM's token file, and a read
     * at that moment fails (CKR_GENERAL_ERROR) for a few milliseconds: only
     * a token that stays away is gone. */
    for (int attempt = 0; attempt < 4; attempt++) {
        if (attempt > 0)
            usleep(10000u << attempt);
        rv = P11T_CALL(h, C_GetTokenInfo, h->slot, &ti);
        if (rv == CKR_OK && !(ti.flags & CKF_TOKEN_INITIALIZED))
            rv = CKR_TOKEN_NOT_RECOGNIZED;
        if (rv == CKR_OK)
            return CKR_OK;
    }
    /* Whatever the library answered, a token that stays away is lost:
     * the caller must log in again (and, alone, restart the library). */
    p11t_err_set(err, CKR_TOKEN_NOT_PRESENT, "token-uri: the token is gone (%s)",
                 p11t_rv_name(rv));
    return CKR_TOKEN_NOT_PRESENT;
}

/* The login session and its epoch, as the scan must use them: read under
 * h->lock, since a re-login replaces them. */
static void login_snapshot(p11t_hsm *h, CK_SESSION_HANDLE *s, unsigned *ep)
{
    pthread_mutex_lock(&h->lock);
    *s = h->login_session;
    *ep = h->login_open ? h->login_epoch : 0;
    pthread_mutex_unlock(&h->lock);
}

/*
 * Called with refresh_lock held.  All or nothing: whatever fails, the
 * previous cache stays as it was (and ages out: it is not used once it is
 * refresh-interval old).  A failure that means the token is lost starts a
 * recovery for the epoch it happened in.
 */
static CK_RV refresh_locked(p11t_hsm *h, p11t_err *err)
{
    CK_SESSION_HANDLE s, login;
    unsigned ep, login_ep;
    p11t_objinfo *objs = NULL;
    p11t_entry *entries, *old;
    size_t n = 0, ne;
    CK_RV rv;

    p11t_close_stale_logins(h);
    rv = p11t_session_get(h, &s, &ep, err);
    if (rv != CKR_OK)
        return rv;
    rv = token_present(h, err);
    if (rv == CKR_OK)
        rv = p11t_scan_objects(h, s, 0, &objs, &n, err);
    p11t_session_put(h, s, ep, rv != CKR_OK);
    if (rv != CKR_OK) {
        if (p11t_rv_is_token_lost(rv))
            p11t_hsm_mark_broken(h, rv, ep);
        return rv;
    }
    login_snapshot(h, &login, &login_ep);
    if (login_ep != ep) {
        /* A re-login happened meanwhile: this scan belongs to a past
         * epoch.  The next lookup scans again. */
        free(objs);
        p11t_err_set(err, P11T_CKR_BACKOFF, "token-uri: logged in again "
                     "during a scan");
        return P11T_CKR_BACKOFF;
    }
    entries = build_entries(objs, n, &ne);
    free(objs);
    if (entries == NULL)
        return CKR_HOST_MEMORY;
    /* Sorted by name so lookups are a binary search: with a ring of 100
     * generations a linear scan showed up in the per-ticket cost. */
    qsort(entries, ne, sizeof(*entries), entry_cmp);
    pthread_rwlock_wrlock(&h->cache_lock);
    old = h->entries;
    /* Atomic because operations compare their key reference's generation
     * with it without taking the lock (ref_current). */
    __atomic_store_n(&h->cache_gen, h->cache_gen + 1, __ATOMIC_RELEASE);
    /* Copies are made and destroyed under the write lock, so no lookup
     * sees a handle while it changes hands.  An operation still holding a
     * destroyed copy through an older key reference gets
     * CKR_KEY_HANDLE_INVALID and resolves again (run()). */
    sync_copies(h, login, entries, ne, old, h->n_entries,
                h->cache_epoch == ep);
    h->entries = entries;
    h->n_entries = ne;
    h->cache_epoch = ep;
    h->refreshed_ms = p11t_mono_ms();
    pthread_rwlock_unlock(&h->cache_lock);
    free(old);
    return CKR_OK;
}

/*
 * auto-rotate: the same plan `p11ticket rotate` follows, run by the server
 * itself after a scan.  Meant for a single host; racing processes are
 * harmless (identical successor times, settled by the name tie-break) but a
 * fleet should run the rotate timer instead.  Called with refresh_lock
 * held; returns 1 if it changed the token.
 */
static int auto_rotate(p11t_hsm *h)
{
    p11t_keyinfo *infos;
    p11t_plan plan;
    CK_SESSION_HANDLE s;
    unsigned ep;
    size_t n;
    int changed = 0;
    p11t_err e = {0};

    pthread_rwlock_rdlock(&h->cache_lock);
    n = h->n_entries;
    infos = calloc(n ? n : 1, sizeof(*infos));
    for (size_t i = 0; infos != NULL && i < n; i++)
        infos[i] = h->entries[i].info;
    pthread_rwlock_unlock(&h->cache_lock);
    if (infos == NULL)
        return 0;
    if (p11t_rotate_plan(infos, n, (int64_t)time(NULL), &h->cfg->policy,
                         &plan) != 0) {
        free(infos);
        return 0;
    }
    free(infos);
    if ((plan.n_create == 0 && plan.n_destroy == 0) ||
        p11t_session_get(h, &s, &ep, &e) != CKR_OK) {
        p11t_plan_free(&plan);
        return 0;
    }
    for (size_t i = 0; i < plan.n_create; i++) {
        uint8_t name[P11T_NAME_LEN];

        if (p11t_gen_create(h, s, 32, &plan.create[i], name, &e) == CKR_OK)
            changed = 1;
    }
    for (size_t i = 0; i < plan.n_destroy; i++) {
        pthread_rwlock_rdlock(&h->cache_lock);
        for (size_t j = 0; j < h->n_entries; j++) {
            p11t_entry *en = &h->entries[j];

            if (memcmp(en->info.name, plan.destroy[i], P11T_NAME_LEN) != 0)
                continue;
            if (en->info.has_aes == 1 &&
                P11T_CALL(h, C_DestroyObject, s, en->aes) == CKR_OK)
                changed = 1;
            if (en->info.has_hmac == 1 &&
                P11T_CALL(h, C_DestroyObject, s, en->hmac) == CKR_OK)
                changed = 1;
        }
        pthread_rwlock_unlock(&h->cache_lock);
    }
    p11t_session_put(h, s, ep, 0);
    p11t_plan_free(&plan);
    return changed;
}

static CK_RV refresh_and_rotate(p11t_hsm *h, p11t_err *err)
{
    CK_RV rv = refresh_locked(h, err);

    if (rv == CKR_OK && h->cfg->auto_rotate && auto_rotate(h))
        rv = refresh_locked(h, err);
    return rv;
}

CK_RV p11t_cache_refresh(p11t_hsm *h, p11t_err *err)
{
    CK_RV rv;

    pthread_mutex_lock(&h->refresh_lock);
    rv = refresh_locked(h, err);
    pthread_mutex_unlock(&h->refresh_lock);
    return rv;
}

static int64_t refresh_ms(const p11t_hsm *h)
{
    return (int64_t)h->cfg->refresh_s * 1000;
}

/* The cache is unusable (another module instance, never scanned) or at
 * least max_age milliseconds old. */
static int stale_locked(const p11t_hsm *h, int64_t now_ms, int64_t max_age)
{
    return h->cache_epoch != atomic_load(&h->epoch) || h->refreshed_ms == 0 ||
           now_ms - h->refreshed_ms >= max_age;
}

static int cache_stale(p11t_hsm *h, int64_t max_age)
{
    int64_t now_ms = p11t_mono_ms();
    int stale;

    pthread_rwlock_rdlock(&h->cache_lock);
    stale = stale_locked(h, now_ms, max_age);
    pthread_rwlock_unlock(&h->cache_lock);
    return stale;
}

/* Failed scans are not repeated more often than this: during an outage
 * every handshake would otherwise start one. */
#define SCAN_RETRY_MS 1000

/* How long a handshake may wait for another thread's scan of a cache that
 * is too old to use: a scan of a local token takes a few milliseconds
 * (tens under the sanitizers). */
#define SCAN_WAIT_MS 250

/* 1 if the lock was taken within ms milliseconds. */
static int lock_within(pthread_mutex_t *m, int ms)
{
    struct timespec t;

    /* pthread_mutex_timedlock() measures against CLOCK_REALTIME; a clock
     * step during such a wait only lengthens or shortens one wait. */
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_nsec += (long)ms * 1000000L;
    t.tv_sec += t.tv_nsec / 1000000000L;
    t.tv_nsec %= 1000000000L;
    return pthread_mutex_timedlock(m, &t) == 0;
}

/* Called with refresh_lock held: a scan, unless one failed a moment ago. */
static CK_RV scan_now(p11t_hsm *h, p11t_err *err)
{
    int64_t now = p11t_mono_ms();
    CK_RV rv;

    if (h->scan_failed_ms != 0 && now - h->scan_failed_ms < SCAN_RETRY_MS) {
        p11t_err_set(err, h->scan_err.rv, "%s", h->scan_err.msg);
        return h->scan_err.rv != CKR_OK ? h->scan_err.rv : P11T_CKR_BACKOFF;
    }
    p11t_err_clear(&h->scan_err);
    rv = refresh_and_rotate(h, &h->scan_err);
    h->scan_failed_ms = rv == CKR_OK ? 0 : p11t_mono_ms();
    if (rv != CKR_OK)
        p11t_err_set(err, h->scan_err.rv, "%s", h->scan_err.msg);
    return rv;
}

/*
 * Keep the cache younger than refresh-interval without making handshakes
 * wait for a scan.  From 3/4 of the interval on, the first thread to get
 * refresh_lock scans (its own handshake pays for it); the others do not
 * wait but go on with the cache, which is still young enough.  A cache
 * that reached refresh-interval, or an unusable one (a new login), is never
 * used: the thread that finds it so scans, or, if another thread is
 * scanning already, returns at once without a key (a full handshake).  So
 * a key removed from the token is out of use everywhere within
 * refresh-interval plus one scan, whether or not handshakes arrive.
 * (The thread that meets a too-old cache while another scans waits up to
 * SCAN_WAIT_MS for that scan, which ends in a few milliseconds on a local
 * token; a slow or stuck token never holds handshakes longer.)
 * *max_age is the age the caller may accept now.
 */
static CK_RV ensure_fresh(p11t_hsm *h, int64_t *max_age, p11t_err *err)
{
    int64_t r = refresh_ms(h);
    CK_RV rv = CKR_OK;

    *max_age = r;
    if (!cache_stale(h, r - r / 4))
        return CKR_OK;
    if (pthread_mutex_trylock(&h->refresh_lock) != 0) {
        if (!cache_stale(h, r))
            return CKR_OK; /* someone is scanning: use what we have */
        /* Too old to use: wait for that scan, but only as long as a scan
         * normally takes, never for a slow or stuck token. */
        if (!lock_within(&h->refresh_lock, SCAN_WAIT_MS)) {
            p11t_err_set(err, P11T_CKR_BACKOFF,
                         "token-uri: the key cache is being refreshed");
            return P11T_CKR_BACKOFF;
        }
    }
    if (cache_stale(h, r - r / 4))
        rv = scan_now(h, err);
    pthread_mutex_unlock(&h->refresh_lock);
    /* A failed scan leaves the old cache, usable while younger than r. */
    if (rv != CKR_OK && !cache_stale(h, r))
        rv = CKR_OK;
    return rv;
}

/* Rescan for a reason other than age, at most once per rescan-interval,
 * and never waiting for a scan another thread is running. */
static int rescan_limited(p11t_hsm *h, p11t_err *err)
{
    int64_t now = p11t_mono_ms();
    int done = 0;

    if (pthread_mutex_trylock(&h->refresh_lock) != 0)
        return 0;
    if (h->rescan_ms == 0 ||
        now - h->rescan_ms >= (int64_t)h->cfg->rescan_s * 1000) {
        h->rescan_ms = now;
        done = scan_now(h, err) == CKR_OK;
    }
    pthread_mutex_unlock(&h->refresh_lock);
    return done;
}

enum { FOUND = 1, NOT_FOUND = 0, STALE = -1 };

/*
 * Binary search under one read lock, which also checks the cache's age:
 * STALE means "scan first" (the cache is max_age old or unusable), so the
 * hot path takes the lock once.
 */
static int lookup(p11t_hsm *h, const uint8_t name[P11T_NAME_LEN],
                  p11t_keyref *out, int64_t max_age)
{
    int64_t now_ms = p11t_mono_ms();
    size_t lo = 0, hi;
    int found = NOT_FOUND;

    pthread_rwlock_rdlock(&h->cache_lock);
    if (stale_locked(h, now_ms, max_age)) {
        pthread_rwlock_unlock(&h->cache_lock);
        return STALE;
    }
    hi = h->n_entries;
    /* Key names are public (they travel in every ticket), so ordering them
     * with memcmp leaks nothing; equality is still confirmed in constant
     * time. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const p11t_entry *e = &h->entries[mid];
        int c = memcmp(e->info.name, name, P11T_NAME_LEN);

        if (c == 0) {
            if (CRYPTO_memcmp(e->info.name, name, P11T_NAME_LEN) == 0 &&
                e->info.has_aes == 1 && e->info.has_hmac == 1) {
                out->info = e->info;
                out->aes_op = e->aes_op;
                out->hmac_op = e->hmac_op;
                out->gen = h->cache_gen;
                out->epoch = h->cache_epoch;
                found = FOUND;
            }
            break;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    pthread_rwlock_unlock(&h->cache_lock);
    return found;
}

/*
 * One question to the cache, asked the way every caller must: logged in,
 * the cache fresh enough (scanning first if needed), and once more after a
 * rate-limited rescan.  q returns FOUND, NOT_FOUND or STALE.  Returns the
 * error of the login or the scan, else CKR_OK with *found set.
 */
typedef int (*cache_query)(p11t_hsm *h, void *arg, int64_t max_age);

static CK_RV ask_cache(p11t_hsm *h, cache_query q, void *arg, int *found,
                       p11t_err *err)
{
    int64_t max_age = refresh_ms(h);
    CK_RV rv = p11t_hsm_ready(h, err);
    int r;

    *found = 0;
    if (rv != CKR_OK)
        return rv;
    r = q(h, arg, max_age);
    if (r == STALE) {
        rv = ensure_fresh(h, &max_age, err);
        if (rv != CKR_OK)
            return rv;
        r = q(h, arg, max_age);
    }
    *found = r == FOUND ||
             (rescan_limited(h, err) && q(h, arg, max_age) == FOUND);
    return CKR_OK;
}

typedef struct lookup_arg {
    const uint8_t *name;
    p11t_keyref *out;
} lookup_arg;

static int lookup_query(p11t_hsm *h, void *varg, int64_t max_age)
{
    lookup_arg *a = varg;

    return lookup(h, a->name, a->out, max_age);
}

static CK_RV find_entry(p11t_hsm *h, const uint8_t name[P11T_NAME_LEN],
                        p11t_keyref *out, p11t_err *err)
{
    lookup_arg a = {name, out};
    char hex[33];
    int found;
    CK_RV rv = ask_cache(h, lookup_query, &a, &found, err);

    if (rv != CKR_OK || found)
        return rv;
    p11t_hex(name, hex);
    p11t_err_set(err, P11T_CKR_UNKNOWN_KEY, "unknown key %s", hex);
    return P11T_CKR_UNKNOWN_KEY;
}

void p11t_keyref_set_name(p11t_keyref *ref,
                          const uint8_t name[static P11T_NAME_LEN])
{
    memset(ref, 0, sizeof(*ref));
    memcpy(ref->info.name, name, P11T_NAME_LEN);
}

CK_RV p11t_hsm_resolve(p11t_hsm *h, const uint8_t name[static P11T_NAME_LEN],
                       p11t_keyref *ref, p11t_err *err)
{
    uint8_t n[P11T_NAME_LEN];

    memcpy(n, name, P11T_NAME_LEN); /* name may point into ref */
    p11t_keyref_set_name(ref, n);
    return find_entry(h, n, ref, err);
}

/* The reference belongs to the live cache, so its handles are current. */
static int ref_current(p11t_hsm *h, const p11t_keyref *ref)
{
    return ref->gen != 0 &&
           ref->gen == __atomic_load_n(&h->cache_gen, __ATOMIC_ACQUIRE) &&
           ref->epoch == atomic_load(&h->epoch);
}

/* Lowers *until to t if t is a boundary after now. */
static void next_boundary(int64_t t, int64_t now, int64_t *until)
{
    if (t > now && t < *until)
        *until = t;
}

/*
 * The pick only changes when the entries change or now crosses some
 * generation's ef, eu or du, so it is computed once per such interval
 * instead of scanning every generation in every handshake.  Returns FOUND,
 * NOT_FOUND, or STALE when the cache needs a scan first.
 */
static int pick_cached(p11t_hsm *h, int64_t now, uint8_t name[P11T_NAME_LEN],
                       int64_t max_age)
{
    int best = -1, found;
    int64_t until = P11T_TIME_NEVER;

    pthread_rwlock_rdlock(&h->cache_lock);
    if (stale_locked(h, p11t_mono_ms(), max_age)) {
        pthread_rwlock_unlock(&h->cache_lock);
        return STALE;
    }
    if (h->cur_gen == h->cache_gen && now >= h->cur_from &&
        now < h->cur_until) {
        found = h->cur_found;
        if (found)
            memcpy(name, h->cur_name, P11T_NAME_LEN);
        pthread_rwlock_unlock(&h->cache_lock);
        return found;
    }
    pthread_rwlock_unlock(&h->cache_lock);

    pthread_rwlock_wrlock(&h->cache_lock);
    if (h->cache_epoch != atomic_load(&h->epoch)) {
        pthread_rwlock_unlock(&h->cache_lock);
        return 0;
    }
    for (size_t i = 0; i < h->n_entries; i++) {
        const p11t_keyinfo *k = &h->entries[i].info;

        next_boundary(k->times.encrypt_from, now, &until);
        next_boundary(k->times.encrypt_until, now, &until);
        next_boundary(k->times.decrypt_until, now, &until);
        if (k->has_aes != 1 || k->has_hmac != 1 ||
            p11t_lifecycle_state(&k->times, now) != P11T_STATE_ACTIVE)
            continue;
        if (p11t_lifecycle_better(k, best >= 0 ? &h->entries[best].info
                                                : NULL))
            best = (int)i;
    }
    found = best >= 0;
    if (found)
        memcpy(h->cur_name, h->entries[best].info.name, P11T_NAME_LEN);
    h->cur_found = found;
    h->cur_from = now;
    h->cur_until = until;
    h->cur_gen = h->cache_gen;
    if (found)
        memcpy(name, h->cur_name, P11T_NAME_LEN);
    pthread_rwlock_unlock(&h->cache_lock);
    return found;
}

typedef struct pick_arg {
    int64_t now;
    uint8_t *name;
} pick_arg;

static int pick_query(p11t_hsm *h, void *varg, int64_t max_age)
{
    pick_arg *a = varg;

    return pick_cached(h, a->now, a->name, max_age);
}

CK_RV p11t_hsm_current(p11t_hsm *h, int64_t now,
                       uint8_t name[static P11T_NAME_LEN], p11t_err *err)
{
    pick_arg a = {now, name};
    int found;
    CK_RV rv = ask_cache(h, pick_query, &a, &found, err);

    if (rv != CKR_OK || found)
        return rv;
    p11t_err_set(err, P11T_CKR_NO_ACTIVE_KEY,
                 "no active key on the token; run 'p11ticket create'");
    return P11T_CKR_NO_ACTIVE_KEY;
}

CK_RV p11t_hsm_resolve_current(p11t_hsm *h, int64_t now, p11t_keyref *ref,
                               p11t_err *err)
{
    uint8_t name[P11T_NAME_LEN];
    CK_RV rv = p11t_hsm_current(h, now, name, err);

    return rv == CKR_OK ? p11t_hsm_resolve(h, name, ref, err) : rv;
}

int p11t_hsm_is_current(p11t_hsm *h, const p11t_keyref *ref, int64_t now)
{
    uint8_t name[P11T_NAME_LEN];

    /* A cache too old to trust only makes the answer "renew". */
    return pick_cached(h, now, name, 2 * refresh_ms(h)) == FOUND &&
           CRYPTO_memcmp(name, ref->info.name, P11T_NAME_LEN) == 0;
}

/* ---- operations ---------------------------------------------------------- */

enum op { OP_ENCRYPT, OP_DECRYPT, OP_HMAC };

#define BLOCK 16

/* All ones if a < b, else 0 (a, b below 2^31), without a branch. */
static unsigned ct_lt(unsigned a, unsigned b)
{
    return 0u - ((a - b) >> 31);
}

/* out and in share bytes (EVP lets a caller decrypt in place). */
static int overlap(const uint8_t *a, const uint8_t *b, size_t n)
{
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;

    return x < y + n && y < x + n;
}

/*
 * AES-CBC encryption with PKCS#7 padding built on CKM_AES_ECB, for tokens
 * that offer no CBC mechanism (docs/design.md, "p11-kit remoting").  One
 * C_EncryptInit, then one C_EncryptUpdate per block on that operation,
 * since each block's input is the plaintext block XOR the previous
 * ciphertext block (the IV for the first), then C_EncryptFinal.  The
 * process only ever holds the plaintext, the padding and the ciphertext,
 * never the key.  Works in place (out == in).  *dirty: the session may
 * still have an operation active and must not go back to the pool.
 */
static CK_RV ecb_encrypt(p11t_hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key,
                         const uint8_t *iv, const uint8_t *in, size_t inl,
                         uint8_t *out, CK_ULONG *outl, int *dirty,
                         const char **what)
{
    CK_MECHANISM ecb = {CKM_AES_ECB, NULL, 0};
    size_t nblk = inl / BLOCK + 1;
    uint8_t pad = (uint8_t)(BLOCK - inl % BLOCK), x[BLOCK], tail[BLOCK];
    const uint8_t *prev = iv;
    CK_ULONG ol;
    CK_RV rv;

    *what = "C_EncryptInit (CKM_AES_ECB)";
    if (*outl < nblk * BLOCK)
        return CKR_BUFFER_TOO_SMALL;
    rv = P11T_CALL(h, C_EncryptInit, s, &ecb, key);
    if (rv != CKR_OK)
        return rv;
    for (size_t b = 0; b < nblk; b++) {
        for (size_t j = 0; j < BLOCK; j++) {
            size_t i = b * BLOCK + j;

            x[j] = (uint8_t)((i < inl ? in[i] : pad) ^ prev[j]);
        }
        ol = BLOCK;
        *what = "C_EncryptUpdate (CKM_AES_ECB)";
        rv = P11T_CALL(h, C_EncryptUpdate, s, x, BLOCK, out + b * BLOCK, &ol);
        if (rv == CKR_OK && ol != BLOCK)
            rv = CKR_GENERAL_ERROR; /* ECB returns each block at once */
        if (rv != CKR_OK)
            goto fail;
        prev = out + b * BLOCK;
    }
    ol = sizeof(tail);
    *what = "C_EncryptFinal (CKM_AES_ECB)";
    rv = P11T_CALL(h, C_EncryptFinal, s, tail, &ol);
    if (rv == CKR_OK && ol != 0) {
        OPENSSL_cleanse(x, sizeof(x));
        return CKR_GENERAL_ERROR; /* the operation has ended all the same */
    }
    if (rv != CKR_OK)
        goto fail;
    OPENSSL_cleanse(x, sizeof(x));
    *outl = (CK_ULONG)(nblk * BLOCK);
    return CKR_OK;
fail:
    /* An error normally ends the operation (PKCS#11 2.40 section 5.2), but
     * not every one does: never pool a session that may still be in it. */
    *dirty = 1;
    OPENSSL_cleanse(x, sizeof(x));
    return rv;
}

/*
 * The decrypting half: one C_DecryptInit and one C_Decrypt over every
 * block, then each block XOR the previous ciphertext block (the IV for the
 * first), and the PKCS#7 padding checked without a branch on its bytes.  A
 * bad padding is CKR_ENCRYPTED_DATA_INVALID, which run() treats like
 * CBC_PAD's failure; out is cleansed then.
 */
static CK_RV ecb_decrypt(p11t_hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key,
                         const uint8_t *iv, const uint8_t *in, size_t inl,
                         uint8_t *out, CK_ULONG *outl, const char **what)
{
    CK_MECHANISM ecb = {CKM_AES_ECB, NULL, 0};
    uint8_t *copy = NULL;
    const uint8_t *last;
    unsigned pad, bad;
    CK_ULONG ol = *outl;
    CK_RV rv;

    *what = "C_Decrypt (CKM_AES_ECB)";
    if (inl == 0 || inl % BLOCK != 0)
        return CKR_ENCRYPTED_DATA_LEN_RANGE;
    if (*outl < inl)
        return CKR_BUFFER_TOO_SMALL;
    /* Decrypting in place overwrites the ciphertext the chaining needs. */
    if (overlap(in, out, inl)) {
        copy = malloc(inl);
        if (copy == NULL)
            return CKR_HOST_MEMORY;
        memcpy(copy, in, inl);
        in = copy;
    }
    *what = "C_DecryptInit (CKM_AES_ECB)";
    rv = P11T_CALL(h, C_DecryptInit, s, &ecb, key);
    if (rv == CKR_OK) {
        *what = "C_Decrypt (CKM_AES_ECB)";
        rv = P11T_CALL(h, C_Decrypt, s, (CK_BYTE_PTR)in, (CK_ULONG)inl, out,
                       &ol);
        if (rv == CKR_OK && ol != inl)
            rv = CKR_GENERAL_ERROR;
    }
    if (rv != CKR_OK) {
        OPENSSL_cleanse(out, inl);
        free(copy);
        return rv;
    }
    for (size_t i = 0; i < inl; i++)
        out[i] ^= i < BLOCK ? iv[i] : in[i - BLOCK];
    free(copy);
    last = out + inl - BLOCK;
    pad = last[BLOCK - 1];
    bad = ct_lt(pad, 1) | ct_lt(BLOCK, pad);
    for (unsigned i = 0; i < BLOCK; i++)
        bad |= ct_lt(i, pad) & (last[BLOCK - 1 - i] ^ pad);
    if (bad != 0) {
        OPENSSL_cleanse(out, inl);
        *what = "CBC padding check (CKM_AES_ECB)";
        return CKR_ENCRYPTED_DATA_INVALID;
    }
    *outl = (CK_ULONG)(inl - pad);
    return CKR_OK;
}

/*
 * One operation in session s.  The ticket cipher is AES-CBC for every
 * generation; mech only says how the token computes it.  (A cipher per
 * generation, such as CTR on ECB, would be chosen here from e->info,
 * next to mech.)  *what names the call that failed; *dirty as above.
 */
static CK_RV run_once(p11t_hsm *h, CK_SESSION_HANDLE s, enum op op,
                      p11t_aes_mech mech, const p11t_keyref *e,
                      const uint8_t *iv, const uint8_t *in, size_t inl,
                      uint8_t *out, CK_ULONG *outl, int *dirty,
                      const char **what)
{
    CK_MECHANISM cbc = {CKM_AES_CBC_PAD, (void *)iv, P11T_IV_LEN};
    CK_MECHANISM mac = {CKM_SHA256_HMAC, NULL, 0};
    CK_RV rv;

    switch (op) {
    case OP_ENCRYPT:
        if (mech == P11T_AES_MECH_ECB)
            return ecb_encrypt(h, s, e->aes_op, iv, in, inl, out, outl, dirty,
                               what);
        *what = "C_Encrypt";
        rv = P11T_CALL(h, C_EncryptInit, s, &cbc, e->aes_op);
        if (rv == CKR_OK)
            rv = P11T_CALL(h, C_Encrypt, s, (CK_BYTE_PTR)in, (CK_ULONG)inl, out, outl);
        return rv;
    case OP_DECRYPT:
        if (mech == P11T_AES_MECH_ECB)
            return ecb_decrypt(h, s, e->aes_op, iv, in, inl, out, outl, what);
        *what = "C_Decrypt";
        rv = P11T_CALL(h, C_DecryptInit, s, &cbc, e->aes_op);
        if (rv == CKR_OK)
            rv = P11T_CALL(h, C_Decrypt, s, (CK_BYTE_PTR)in, (CK_ULONG)inl, out, outl);
        return rv;
    case OP_HMAC:
        *what = "C_Sign";
        rv = P11T_CALL(h, C_SignInit, s, &mac, e->hmac_op);
        if (rv == CKR_OK)
            rv = P11T_CALL(h, C_Sign, s, (CK_BYTE_PTR)in, (CK_ULONG)inl, out, outl);
        return rv;
    }
    return CKR_ARGUMENTS_BAD;
}

/*
 * One token operation with the referenced key.  The reference is resolved
 * (or re-resolved, when the cache has moved on since) here, so a ticket
 * pays for one lookup, not one per call.  A handle the token no longer
 * knows means another process destroyed or re-created the key: rescan once
 * and retry.  The AES mechanism is the one the current login chose
 * (module.c, choose_mechanism()); both give the same ciphertext.
 */
static CK_RV run(p11t_hsm *h, enum op op, p11t_keyref *ref, const uint8_t *iv,
                 const uint8_t *in, size_t inl, uint8_t *out, size_t *outl,
                 p11t_err *err)
{
    const char *what = "C_OpenSession";
    CK_RV rv;

    rv = p11t_hsm_ready(h, err); /* also notices a fork */
    if (rv != CKR_OK)
        return rv;
    for (int attempt = 0; attempt < 2; attempt++) {
        CK_SESSION_HANDLE s;
        CK_ULONG ol = (CK_ULONG)*outl;
        unsigned ep;
        int dirty = 0;
        p11t_err scratch = {0};

        if (!ref_current(h, ref)) {
            uint8_t name[P11T_NAME_LEN];

            memcpy(name, ref->info.name, P11T_NAME_LEN);
            rv = find_entry(h, name, ref, err);
            if (rv != CKR_OK)
                return rv;
        }
        rv = p11t_session_get(h, &s, &ep, err);
        if (rv != CKR_OK)
            break;
        rv = run_once(h, s, op, p11t_hsm_aes_mechanism(h), ref, iv, in, inl,
                      out, &ol, &dirty, &what);
        if (rv == CKR_OK) {
            p11t_session_put(h, s, ep, 0);
            *outl = ol;
            return CKR_OK;
        }
        p11t_session_put(h, s, ep, dirty || p11t_rv_is_token_lost(rv));
        if (rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_KEY_HANDLE_INVALID) {
            if (attempt > 0)
                break;
            /* A newer cache already dropped the handle: resolve again.
             * Otherwise another process changed the token: rescan now. */
            if (!ref_current(h, ref) ||
                p11t_cache_refresh(h, &scratch) == CKR_OK)
                continue;
        } else if (p11t_rv_is_token_lost(rv)) {
            p11t_hsm_mark_broken(h, rv, ep);
        }
        break;
    }
    /* Counted even for ciphertext the token rejects: SoftHSM reports bad
     * padding as CKR_GENERAL_ERROR, indistinguishable from a failure (the
     * ECB path's own padding check counts the same way).  In TLS a ticket
     * is only decrypted after its HMAC verified, so there it does mean the
     * token (or the issuer) failed. */
    atomic_fetch_add(&h->errors, 1);
    p11t_err_set(err, rv, "%s failed: %s", what, p11t_rv_name(rv));
    return rv;
}

CK_RV p11t_hsm_encrypt(p11t_hsm *h, p11t_keyref *ref,
                       const uint8_t iv[static P11T_IV_LEN], const uint8_t *in,
                       size_t inl, uint8_t *out, size_t *outl, p11t_err *err)
{
    /* A short buffer would leave the operation active (PKCS#11 5.2). */
    if (*outl < inl + P11T_IV_LEN - inl % P11T_IV_LEN) {
        p11t_err_set(err, CKR_BUFFER_TOO_SMALL, "encrypt: output too small");
        return CKR_BUFFER_TOO_SMALL;
    }
    return run(h, OP_ENCRYPT, ref, iv, in, inl, out, outl, err);
}

CK_RV p11t_hsm_decrypt(p11t_hsm *h, p11t_keyref *ref,
                       const uint8_t iv[static P11T_IV_LEN], const uint8_t *in,
                       size_t inl, uint8_t *out, size_t *outl, p11t_err *err)
{
    if (*outl < inl) {
        p11t_err_set(err, CKR_BUFFER_TOO_SMALL, "decrypt: output too small");
        return CKR_BUFFER_TOO_SMALL;
    }
    return run(h, OP_DECRYPT, ref, iv, in, inl, out, outl, err);
}

CK_RV p11t_hsm_hmac(p11t_hsm *h, p11t_keyref *ref, const uint8_t *in,
                    size_t inl, uint8_t out[static P11T_HMAC_LEN],
                    p11t_err *err)
{
    size_t ol = P11T_HMAC_LEN;

    return run(h, OP_HMAC, ref, NULL, in, inl, out, &ol, err);
}
