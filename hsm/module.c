/* SPDX-License-Identifier: Apache-2.0 */
/*
 * module.c - module loading, token selection, login, the session pool and
 * fork re-initialisation.
 *
 * Everything here is lazy: p11t_hsm_new only records the configuration.
 * The module is loaded on the first operation, never inside
 * OSSL_provider_init, because initialising SoftHSM while OpenSSL loads its
 * configuration deadlocks (docs/design.md, "Recursion and load order").
 *
 * We never call C_Finalize at exit: SoftHSM crashes when finalized from an
 * exit handler.  The only C_Finalize is in a forked child, right before it
 * initialises its own copy of the library.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "internal.h"

#define SLOT_TRIES 6      /* SoftHSM startup race: 1-10% of starts */
#define LOGIN_TRIES 5
#define FIRST_SLEEP_MS 10
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 30000
/* A token lost again within this time of the last loss is not logged in
 * to again at once. */
#define QUICK_LOSS_MS 10000

struct p11t_module {
    p11t_module *next;
    char *path;
    void *dl;
    CK_FUNCTION_LIST_PTR f;
    pid_t init_pid; /* process the library is initialised in; 0 = none */
    /* Another user in the process (libp11 holding the server's certificate
     * key, say) initialised the library first: we share it and never
     * finalise it, in this process or in a forked child. */
    int adopted;
    /* C_Finalize calls made by p11ticket in this process: every session
     * and object handle from before one is meaningless, and a restarted
     * library hands the same numbers out again. */
    unsigned restarts;
    unsigned users;
    /* Instances that have used the module in process here_pid.  A forked
     * child inherits `users` but starts with no active instance. */
    pid_t here_pid;
    unsigned users_here;
};

static pthread_mutex_t modules_lock = PTHREAD_MUTEX_INITIALIZER;
static p11t_module *modules; /* never freed: modules are never unloaded */

/*
 * The process id, kept current by a fork handler: getpid() is a system call
 * and the hot path asks several times per ticket.  The module is linked
 * -z nodelete, so the handler can never point into unmapped code.
 */
static pid_t cur_pid;
static pthread_once_t pid_once = PTHREAD_ONCE_INIT;

/*
 * The gate in front of every PKCS#11 call (P11T_CALL).  Calls share it;
 * two things take it alone, after every call in flight has returned and
 * before any new one starts:
 *  - a restart of the library (C_Finalize + C_Initialize);
 *  - fork(): a child inherits the library's memory, including any mutex a
 *    thread of the parent held inside it at that instant, and that thread
 *    does not exist in the child.  A child that then entered the library
 *    (its own C_Finalize first of all) waited forever; with the gate closed
 *    across fork() no thread is inside the library when the child is made.
 * A closed gate admits no new call, so a stream of calls cannot starve a
 * fork.  It is a counter under a mutex rather than a read-write lock: no
 * lock is held across fork() (glibc cannot release in the child a
 * read-write lock the parent held for writing), and the child just starts
 * with an open, empty gate.  The gate is never entered twice by one thread:
 * P11T_CALL wraps exactly one call, and the library never calls back.
 */
static struct {
    pthread_mutex_t m;
    pthread_cond_t cv;
    unsigned calls; /* in flight */
    int closed;
} gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

void p11t_gate_enter(void)
{
    pthread_mutex_lock(&gate.m);
    while (gate.closed)
        pthread_cond_wait(&gate.cv, &gate.m);
    gate.calls++;
    pthread_mutex_unlock(&gate.m);
}

void p11t_gate_leave(void)
{
    pthread_mutex_lock(&gate.m);
    if (--gate.calls == 0 && gate.closed)
        pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.m);
}

void p11t_gate_exclusive(int on)
{
    pthread_mutex_lock(&gate.m);
    if (on) {
        while (gate.closed) /* another exclusive holder first */
            pthread_cond_wait(&gate.cv, &gate.m);
        gate.closed = 1;
        while (gate.calls > 0)
            pthread_cond_wait(&gate.cv, &gate.m);
    } else {
        gate.closed = 0;
        pthread_cond_broadcast(&gate.cv);
    }
    pthread_mutex_unlock(&gate.m);
}

static void gate_reset_in_child(void)
{
    pthread_mutex_init(&gate.m, NULL);
    pthread_cond_init(&gate.cv, NULL);
    gate.calls = 0;
    gate.closed = 0;
}

/* Every live handle, for the fork handlers. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static p11t_hsm *registry;

/*
 * fork() with other threads inside p11ticket: the prepare handler takes
 * p11ticket's mutexes in the order the code itself takes them
 * (refresh_lock, lock, modules_lock, pool_lock, the PIN store), then
 * closes the gate, so it waits for scans, initialisations and token calls
 * in flight to finish and holds new ones back; parent and child then
 * release them.  The child starts with no thread inside the PKCS#11
 * library and re-initialises lazily (forget_after_fork).
 *
 * The cache's read-write lock is not held across fork(): glibc cannot
 * release in a child a read-write lock the parent held (a later lock waits
 * forever).  The child makes it anew instead; whatever the cache held is
 * never trusted there (a new epoch makes it stale), and the entries
 * themselves only change under refresh_lock, which prepare holds.
 *
 * These handlers are registered after the first C_Initialize, not before:
 * prepare handlers run in the reverse order of registration, and a module
 * that registers its own (p11-kit's client, the test fault module) takes
 * its locks there.  Ours must run first, while calls in flight can still
 * finish inside the module.
 */
static void fork_prepare(void)
{
    pthread_mutex_lock(&registry_lock);
    for (p11t_hsm *h = registry; h != NULL; h = h->next)
        pthread_mutex_lock(&h->refresh_lock);
    for (p11t_hsm *h = registry; h != NULL; h = h->next)
        pthread_mutex_lock(&h->lock);
    pthread_mutex_lock(&modules_lock);
    for (p11t_hsm *h = registry; h != NULL; h = h->next)
        pthread_mutex_lock(&h->pool_lock);
    p11t_pin_fork_lock(1);
    p11t_gate_exclusive(1);
}

static void release_mutexes(void)
{
    p11t_pin_fork_lock(0);
    for (p11t_hsm *h = registry; h != NULL; h = h->next)
        pthread_mutex_unlock(&h->pool_lock);
    pthread_mutex_unlock(&modules_lock);
    for (p11t_hsm *h = registry; h != NULL; h = h->next)
        pthread_mutex_unlock(&h->lock);
    for (p11t_hsm *h = registry; h != NULL; h = h->next)
        pthread_mutex_unlock(&h->refresh_lock);
    pthread_mutex_unlock(&registry_lock);
}

static void fork_parent(void)
{
    p11t_gate_exclusive(0);
    release_mutexes();
}

/* The forking thread owns the mutexes in the child too, so it releases
 * them there as in the parent. */
static void fork_child(void)
{
    gate_reset_in_child();
    for (p11t_hsm *h = registry; h != NULL; h = h->next)
        pthread_rwlock_init(&h->cache_lock, NULL);
    release_mutexes();
}

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void fork_register(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

static void pid_after_fork(void)
{
    __atomic_store_n(&cur_pid, getpid(), __ATOMIC_RELAXED);
}

static void pid_init(void)
{
    cur_pid = getpid();
    pthread_atfork(NULL, NULL, pid_after_fork);
}

static pid_t self_pid(void)
{
    return __atomic_load_n(&cur_pid, __ATOMIC_RELAXED);
}

/*
 * Monotonic milliseconds for refresh, rescan and backoff intervals, which
 * are whole seconds: the coarse clock's few milliseconds of resolution are
 * ample, and it costs 7 ns here against 31 ns (it is read on every ticket).
 */
int64_t p11t_mono_ms(void)
{
    struct timespec ts;

#ifdef CLOCK_MONOTONIC_COARSE
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0)
#endif
        clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

CK_RV p11t_hsm_new(p11t_config *cfg, p11t_hsm **out, p11t_err *err)
{
    p11t_hsm *h;

    *out = NULL;
    if (cfg == NULL) {
        p11t_err_set(err, CKR_ARGUMENTS_BAD, "no configuration");
        return CKR_ARGUMENTS_BAD;
    }
    h = calloc(1, sizeof(*h));
    if (h == NULL) {
        p11t_config_free(cfg);
        p11t_err_set(err, CKR_HOST_MEMORY, "out of memory");
        return CKR_HOST_MEMORY;
    }
    h->cfg = cfg;
    pthread_once(&pid_once, pid_init);
    pthread_mutex_init(&h->lock, NULL);
    pthread_mutex_init(&h->pool_lock, NULL);
    pthread_mutex_init(&h->refresh_lock, NULL);
    pthread_rwlock_init(&h->cache_lock, NULL);
    h->pid = getpid();
    h->backoff_ms = BACKOFF_MIN_MS;
    atomic_init(&h->epoch, 1);
    atomic_init(&h->errors, 0);
    pthread_mutex_lock(&registry_lock);
    h->next = registry;
    registry = h;
    pthread_mutex_unlock(&registry_lock);
    *out = h;
    return CKR_OK;
}

CK_RV p11t_hsm_preload_pin(p11t_hsm *h, p11t_err *err)
{
    if (h->cfg->err.rv != CKR_OK || h->cfg->pin_source == NULL)
        return CKR_OK;
    return p11t_pin_preload(h->cfg->pin_source, err);
}

void p11t_hsm_free(p11t_hsm *h)
{
    if (h == NULL)
        return;
    pthread_mutex_lock(&registry_lock);
    for (p11t_hsm **pp = &registry; *pp != NULL; pp = &(*pp)->next)
        if (*pp == h) {
            *pp = h->next;
            break;
        }
    pthread_mutex_unlock(&registry_lock);
    if (h->mod != NULL) {
        pthread_mutex_lock(&modules_lock);
        h->mod->users--;
        if (h->counted_pid == getpid() && h->mod->here_pid == getpid())
            h->mod->users_here--;
        pthread_mutex_unlock(&modules_lock);
    }
    /*
     * No PKCS#11 call here.  Provider teardown runs from OPENSSL_cleanup at
     * exit, after SoftHSM's own exit handlers have destroyed its state, and
     * C_CloseSession then crashes.  The sessions and the module die with
     * the process; an unloaded provider leaves its sessions open, which
     * costs the module a few bytes and nothing else.
     */
    free(h->pool);
    free(h->entries);
    pthread_mutex_destroy(&h->lock);
    pthread_mutex_destroy(&h->pool_lock);
    pthread_mutex_destroy(&h->refresh_lock);
    pthread_rwlock_destroy(&h->cache_lock);
    p11t_config_free(h->cfg);
    free(h);
}

void p11t_hsm_set_pin_prompt(p11t_hsm *h, p11t_pin_prompt_fn fn, void *arg)
{
    h->prompt = fn;
    h->prompt_arg = arg;
}

uint64_t p11t_hsm_error_count(p11t_hsm *h)
{
    return atomic_load(&h->errors);
}

static CK_RV load_module(p11t_hsm *h, p11t_err *err)
{
    CK_C_GetFunctionList getfl;
    p11t_module *m;
    void *dl;
    CK_RV rv;

    if (h->f != NULL)
        return CKR_OK;
    pthread_mutex_lock(&modules_lock);
    for (m = modules; m != NULL; m = m->next)
        if (strcmp(m->path, h->cfg->module_path) == 0)
            break;
    if (m != NULL)
        goto found;
    dl = dlopen(h->cfg->module_path, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        const char *why = dlerror();

        pthread_mutex_unlock(&modules_lock);
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "pkcs11-module: cannot load %.200s: %.200s",
                     h->cfg->module_path, why ? why : "unknown error");
        return P11T_CKR_CONFIG;
    }
    getfl = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
    if (getfl == NULL) {
        pthread_mutex_unlock(&modules_lock);
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "pkcs11-module: %.200s is not a PKCS#11 module "
                     "(no C_GetFunctionList)", h->cfg->module_path);
        return P11T_CKR_CONFIG;
    }
    m = calloc(1, sizeof(*m));
    if (m == NULL || (m->path = strdup(h->cfg->module_path)) == NULL) {
        free(m);
        pthread_mutex_unlock(&modules_lock);
        return CKR_HOST_MEMORY;
    }
    rv = getfl(&m->f);
    if (rv != CKR_OK || m->f == NULL) {
        free(m->path);
        free(m);
        pthread_mutex_unlock(&modules_lock);
        p11t_err_set(err, rv, "pkcs11-module: C_GetFunctionList failed: %s",
                     p11t_rv_name(rv));
        return rv == CKR_OK ? CKR_GENERAL_ERROR : rv;
    }
    m->dl = dl;
    m->next = modules;
    modules = m;
found:
    m->users++;
    h->mod = m;
    h->f = m->f;
    pthread_mutex_unlock(&modules_lock);
    return CKR_OK;
}

/*
 * Called with modules_lock held.  restart: finalise and initialise again
 * even in the process that initialised it.  C_Finalize and C_Initialize run
 * with the gate held exclusively, so that no other thread is inside the
 * library meanwhile (PKCS#11 leaves that undefined).
 */
static CK_RV initialize_locked(p11t_module *m, int restart, p11t_err *err)
{
    CK_C_INITIALIZE_ARGS args = {0};
    CK_RV rv;

    if (m->init_pid == getpid() && !restart)
        return CKR_OK;
    p11t_gate_exclusive(1);
    if (m->init_pid != 0 && !m->adopted) {
        /* A forked child (the parent's library state is not valid here)
         * or a restart: finalize, then start over (docs/design.md,
         * "fork()"). */
        (void)m->f->C_Finalize(NULL);
        m->init_pid = 0;
        m->restarts++;
    }
    args.flags = CKF_OS_LOCKING_OK;
    rv = m->f->C_Initialize(&args);
    p11t_gate_exclusive(0);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        p11t_err_set(err, rv, "pkcs11-module: C_Initialize failed: %s",
                     p11t_rv_name(rv));
        return rv;
    }
    /* ALREADY_INITIALIZED on a library we did not initialise: someone else
     * in this process did; share it and leave its life to them.  In a child
     * of an adopting parent it is the inherited state of that other user,
     * which it re-initialises itself if it must (libp11 does). */
    if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED && m->init_pid == 0)
        m->adopted = 1;
    m->init_pid = getpid();
    pthread_once(&fork_once, fork_register);
    return CKR_OK;
}

static CK_RV initialize(p11t_hsm *h, p11t_err *err)
{
    p11t_module *m = h->mod;
    pid_t me = getpid();
    CK_RV rv;

    pthread_mutex_lock(&modules_lock);
    if (m->here_pid != me) {
        m->here_pid = me;
        m->users_here = 0;
    }
    if (h->counted_pid != me) {
        h->counted_pid = me;
        m->users_here++;
    }
    rv = initialize_locked(m, 0, err);
    pthread_mutex_unlock(&modules_lock);
    return rv;
}

/*
 * SoftHSM reads its token directory only in C_Initialize, and a token being
 * rewritten by another process's C_Login at that moment is missed.  When we
 * are the module's only user in this process and initialised it ourselves,
 * start the library over.
 */
static CK_RV reinitialize_if_alone(p11t_hsm *h, p11t_err *err)
{
    CK_RV rv = CKR_OK;

    pthread_mutex_lock(&modules_lock);
    if (h->mod->here_pid == getpid() && h->mod->users_here == 1 &&
        h->mod->init_pid == getpid() && !h->mod->adopted)
        rv = initialize_locked(h->mod, 1, err);
    pthread_mutex_unlock(&modules_lock);
    return rv;
}

static void padded_copy(char *dst, const CK_UTF8CHAR *src, size_t n)
{
    memcpy(dst, src, n);
    dst[n] = '\0';
    for (size_t i = n; i > 0 && dst[i - 1] == ' '; i--)
        dst[i - 1] = '\0';
}

/* One pass over the slots.  P11T_CKR_NO_TOKEN is worth retrying. */
static CK_RV find_slot_once(p11t_hsm *h, p11t_err *err)
{
    CK_SLOT_ID *slots = NULL;
    CK_ULONG n = 0;
    CK_RV rv;
    size_t matches = 0;
    char seen[160] = "";

    rv = P11T_CALL(h, C_GetSlotList, CK_TRUE, NULL, &n);
    if (rv == CKR_OK && n > 0) {
        slots = calloc(n, sizeof(*slots));
        if (slots == NULL)
            return CKR_HOST_MEMORY;
        rv = P11T_CALL(h, C_GetSlotList, CK_TRUE, slots, &n);
    }
    if (rv != CKR_OK) {
        free(slots);
        p11t_err_set(err, rv, "token-uri: C_GetSlotList failed: %s",
                     p11t_rv_name(rv));
        return rv;
    }
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        CK_SLOT_INFO si;
        char label[33];

        if (P11T_CALL(h, C_GetTokenInfo, slots[i], &ti) != CKR_OK ||
            P11T_CALL(h, C_GetSlotInfo, slots[i], &si) != CKR_OK)
            continue;
        if (!(ti.flags & CKF_TOKEN_INITIALIZED))
            continue;
        padded_copy(label, ti.label, sizeof(ti.label));
        if (strlen(seen) + strlen(label) + 4 < sizeof(seen))
            snprintf(seen + strlen(seen), sizeof(seen) - strlen(seen),
                     "%s'%s'", seen[0] ? ", " : "", label);
        /* p11_kit_uri_match_slot_info ignores slot-id; compare it here. */
        if (p11_kit_uri_match_token_info(h->cfg->uri, &ti) != 1 ||
            p11_kit_uri_match_slot_info(h->cfg->uri, &si) != 1 ||
            (p11_kit_uri_get_slot_id(h->cfg->uri) != (CK_SLOT_ID)-1 &&
             p11_kit_uri_get_slot_id(h->cfg->uri) != slots[i]))
            continue;
        if (matches++ == 0)
            h->slot = slots[i];
    }
    free(slots);
    if (matches == 1)
        return CKR_OK;
    if (matches > 1) {
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "token-uri: %.100s matches %zu tokens; add serial= to "
                     "choose one", h->cfg->token_uri, matches);
        return P11T_CKR_CONFIG;
    }
    p11t_err_set(err, P11T_CKR_NO_TOKEN,
                 "token-uri: no token matches %.100s (tokens present: %s)",
                 h->cfg->token_uri, seen[0] ? seen : "none");
    return P11T_CKR_NO_TOKEN;
}

static CK_RV find_slot(p11t_hsm *h, p11t_err *err)
{
    unsigned delay = FIRST_SLEEP_MS;
    CK_RV rv = CKR_OK;

    for (int i = 0; i < SLOT_TRIES; i++) {
        p11t_err e = {0};

        rv = find_slot_once(h, &e);
        if (rv == CKR_OK)
            return CKR_OK;
        if (rv == P11T_CKR_CONFIG || rv == CKR_HOST_MEMORY ||
            i == SLOT_TRIES - 1) {
            p11t_err_set(err, e.rv, "%s", e.msg);
            return rv;
        }
        sleep_ms(delay);
        delay *= 2;
        if (reinitialize_if_alone(h, &e) != CKR_OK) {
            p11t_err_set(err, e.rv, "%s", e.msg);
            return e.rv;
        }
    }
    return rv;
}

static int pin_error_is_permanent(CK_RV rv)
{
    return rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED ||
           rv == CKR_PIN_EXPIRED || rv == CKR_PIN_INVALID ||
           rv == CKR_PIN_LEN_RANGE;
}

static int login_error_is_transient(CK_RV rv)
{
    return rv == CKR_GENERAL_ERROR || rv == CKR_USER_PIN_NOT_INITIALIZED ||
           rv == CKR_DEVICE_ERROR || rv == CKR_FUNCTION_FAILED ||
           rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_SESSION_COUNT;
}

static CK_RV get_pin(p11t_hsm *h, char **pin, size_t *len, p11t_err *err)
{
    int n;

    if (strcmp(h->cfg->pin_source, "prompt") != 0)
        return p11t_pin_read(h->cfg->pin_source, pin, len, err);
    if (h->prompt == NULL) {
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "pin-source: 'prompt' is only available to interactive "
                     "tools; servers need file: or env:");
        return P11T_CKR_CONFIG;
    }
    *pin = OPENSSL_secure_zalloc(257);
    if (*pin == NULL)
        return CKR_HOST_MEMORY;
    n = h->prompt(*pin, 257, h->prompt_arg);
    if (n <= 0) {
        p11t_pin_free(*pin, 257);
        *pin = NULL;
        p11t_err_set(err, P11T_CKR_CONFIG, "pin-source: no PIN entered");
        return P11T_CKR_CONFIG;
    }
    *len = (size_t)n;
    return CKR_OK;
}

/*
 * A token that has locked the user PIN, or would lock it at the next wrong
 * one, gets no C_Login from a server: restarts with a wrong PIN would
 * otherwise use up the operator's last attempt.  A token that reports
 * neither flag is logged in to as usual.
 */
static CK_RV pin_state_ok(p11t_hsm *h, p11t_err *err)
{
    CK_TOKEN_INFO ti;

    if (P11T_CALL(h, C_GetTokenInfo, h->slot, &ti) != CKR_OK)
        return CKR_OK; /* C_Login will tell */
    if (ti.flags & CKF_USER_PIN_LOCKED) {
        p11t_err_set(err, CKR_PIN_LOCKED,
                     "pin-source: the token has locked the user PIN "
                     "(CKF_USER_PIN_LOCKED); not logging in");
        return CKR_PIN_LOCKED;
    }
    if (ti.flags & CKF_USER_PIN_FINAL_TRY) {
        p11t_err_set(err, CKR_PIN_LOCKED,
                     "pin-source: one wrong PIN would lock the token "
                     "(CKF_USER_PIN_FINAL_TRY); not trying the configured "
                     "PIN: check it and log in once by hand to reset the "
                     "counter");
        return CKR_PIN_LOCKED;
    }
    return CKR_OK;
}

static CK_RV login(p11t_hsm *h, p11t_err *err)
{
    char *pin = NULL;
    size_t pin_len = 0;
    unsigned delay = FIRST_SLEEP_MS;
    CK_RV rv;

    rv = pin_state_ok(h, err);
    if (rv != CKR_OK)
        return rv;
    rv = get_pin(h, &pin, &pin_len, err);
    if (rv != CKR_OK)
        return rv;
    for (int i = 0; i < LOGIN_TRIES; i++) {
        rv = P11T_CALL(h, C_Login, h->login_session, CKU_USER, (CK_UTF8CHAR_PTR)pin,
                           (CK_ULONG)pin_len);
        if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) {
            rv = CKR_OK;
            break;
        }
        /* Never retry a rejected PIN: real tokens lock after a few. */
        if (!login_error_is_transient(rv) || i == LOGIN_TRIES - 1)
            break;
        sleep_ms(delay);
        delay *= 2;
    }
    p11t_pin_free(pin, pin_len);
    if (rv == CKR_OK)
        return CKR_OK;
    if (pin_error_is_permanent(rv))
        p11t_err_set(err, rv,
                     "pin-source: the token rejected the PIN (%s); not "
                     "retrying, so the token does not lock", p11t_rv_name(rv));
    else
        p11t_err_set(err, rv, "token-uri: C_Login failed: %s",
                     p11t_rv_name(rv));
    return rv;
}

/*
 * Called with h->lock held.  If the library was finalised since this
 * instance last looked, no handle from before means anything any more:
 * sessions of every epoch up to now are dead and never closed (their
 * numbers may belong to new sessions now).
 */
static void note_restarts(p11t_hsm *h)
{
    unsigned r;

    if (h->mod == NULL)
        return;
    pthread_mutex_lock(&modules_lock);
    r = h->mod->restarts;
    pthread_mutex_unlock(&modules_lock);
    if (r == h->seen_restarts)
        return;
    h->seen_restarts = r;
    __atomic_store_n(&h->dead_below, atomic_load(&h->epoch) + 1,
                     __ATOMIC_RELEASE);
    h->n_stale = 0;
    h->login_open = 0;
}

/* 1 if sessions of epoch ep died with a library restart (or a fork). */
static int epoch_dead(const p11t_hsm *h, unsigned ep)
{
    return (int)(ep - __atomic_load_n(&h->dead_below, __ATOMIC_ACQUIRE)) < 0;
}

/* Called with h->lock held.  The login session of a lost epoch may still
 * carry session copies another thread is using; it is closed later, by the
 * next scan (p11t_close_stale_logins). */
static void retire_login(p11t_hsm *h)
{
    if (!h->login_open)
        return;
    h->login_open = 0;
    if (epoch_dead(h, h->login_epoch))
        return;
    if (h->n_stale < P11T_STALE_LOGINS)
        h->stale[h->n_stale++] = h->login_session;
    /* Beyond that many unclosed logins the oldest is simply left open:
     * better a leaked session than one closed under a running operation. */
}

void p11t_close_stale_logins(p11t_hsm *h)
{
    CK_SESSION_HANDLE stale[P11T_STALE_LOGINS];
    size_t n;

    pthread_mutex_lock(&h->lock);
    n = h->n_stale;
    memcpy(stale, h->stale, n * sizeof(*stale));
    h->n_stale = 0;
    pthread_mutex_unlock(&h->lock);
    if (n == 0)
        return;
    /* Their session copies die with them: hold every call back meanwhile,
     * so that no operation runs on a copy while SoftHSM destroys it. */
    p11t_gate_exclusive(1);
    for (size_t i = 0; i < n; i++)
        (void)h->f->C_CloseSession(stale[i]);
    p11t_gate_exclusive(0);
}

/*
 * 1 if the slot's token offers mech for everything in `need` (CKF_ flags):
 * listed by C_GetMechanismList and, when C_GetMechanismInfo answers, with
 * those flags.  A token whose C_GetMechanismInfo fails otherwise is taken
 * at its list's word.
 */
static int offers(p11t_hsm *h, const CK_MECHANISM_TYPE *list, CK_ULONG n,
                  CK_MECHANISM_TYPE mech, CK_FLAGS need)
{
    CK_MECHANISM_INFO mi;
    CK_RV rv;
    CK_ULONG i;

    for (i = 0; i < n && list[i] != mech; i++)
        ;
    if (i == n)
        return 0;
    rv = P11T_CALL(h, C_GetMechanismInfo, h->slot, mech, &mi);
    if (rv == CKR_MECHANISM_INVALID)
        return 0;
    return rv != CKR_OK || (mi.flags & need) == need;
}

/*
 * Called with h->lock held, before C_Login (a token p11ticket cannot use is
 * not logged in to every backoff).  Chooses the AES mechanism of this login
 * from what the token offers now: p11-kit 0.24's client module forwards
 * CKM_AES_ECB and CKM_SHA256_HMAC but no CBC mechanism, which it leaves out
 * of its list and fails at *Init (docs/design.md, "p11-kit remoting").  A
 * token without a usable AES mechanism or without CKM_SHA256_HMAC cannot
 * serve tickets: P11T_CKR_CONFIG naming pkcs11-module, which p11t_hsm_ready
 * retries only with its backoff, so the status and the one log line say
 * why and no token operation is ever attempted.
 */
static CK_RV choose_mechanism(p11t_hsm *h, p11t_err *err)
{
    const CK_FLAGS crypt = CKF_ENCRYPT | CKF_DECRYPT;
    p11t_aes_mech want = h->cfg->aes_mech, got;
    CK_MECHANISM_TYPE *list = NULL;
    CK_ULONG n = 0;
    int cbc_pad, ecb, hmac;
    CK_RV rv;

    /* The list may grow between the two calls (another attempt then). */
    for (int attempt = 0; attempt < 3; attempt++) {
        CK_MECHANISM_TYPE *p;

        rv = P11T_CALL(h, C_GetMechanismList, h->slot, NULL, &n);
        if (rv != CKR_OK)
            break;
        /* One spare entry: p11-kit 0.24's client module reads one past the
         * caller's array here (fixed in p11-kit 0.25). */
        p = realloc(list, (n + 1) * sizeof(*list));
        if (p == NULL) {
            free(list);
            return CKR_HOST_MEMORY;
        }
        list = p;
        rv = P11T_CALL(h, C_GetMechanismList, h->slot, list, &n);
        if (rv != CKR_BUFFER_TOO_SMALL)
            break;
    }
    if (rv != CKR_OK) {
        free(list);
        p11t_err_set(err, rv, "token-uri: C_GetMechanismList failed: %s",
                     p11t_rv_name(rv));
        return rv;
    }
    cbc_pad = offers(h, list, n, CKM_AES_CBC_PAD, crypt);
    ecb = offers(h, list, n, CKM_AES_ECB, crypt);
    hmac = offers(h, list, n, CKM_SHA256_HMAC, CKF_SIGN);
    free(list);

    if (!cbc_pad && !ecb) {
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "pkcs11-module: the token offers neither CKM_AES_CBC_PAD "
                     "nor CKM_AES_ECB (p11ticket needs one of them)%s; a "
                     "PKCS#11 proxy may not forward them",
                     hmac ? "" : ", nor CKM_SHA256_HMAC (needed too)");
        return P11T_CKR_CONFIG;
    }
    if (!hmac) {
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "pkcs11-module: the token does not offer CKM_SHA256_HMAC "
                     "(p11ticket needs it for the ticket HMAC)");
        return P11T_CKR_CONFIG;
    }
    if (want == P11T_AES_MECH_CBC_PAD && !cbc_pad) {
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "pkcs11-module: the token does not offer CKM_AES_CBC_PAD, "
                     "which aes-mechanism = cbc-pad requires (auto or ecb "
                     "would use CKM_AES_ECB)");
        return P11T_CKR_CONFIG;
    }
    if (want == P11T_AES_MECH_ECB && !ecb) {
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "pkcs11-module: the token does not offer CKM_AES_ECB, "
                     "which aes-mechanism = ecb requires (auto or cbc-pad "
                     "would use CKM_AES_CBC_PAD)");
        return P11T_CKR_CONFIG;
    }
    if (want == P11T_AES_MECH_AUTO)
        got = cbc_pad ? P11T_AES_MECH_CBC_PAD : P11T_AES_MECH_ECB;
    else
        got = want;
    __atomic_store_n(&h->aes_mech, (int)got, __ATOMIC_RELEASE);
    return CKR_OK;
}

p11t_aes_mech p11t_hsm_aes_mechanism(p11t_hsm *h)
{
    return (p11t_aes_mech)__atomic_load_n(&h->aes_mech, __ATOMIC_ACQUIRE);
}

/* Called with h->lock held. */
static CK_RV do_init(p11t_hsm *h, p11t_err *err)
{
    CK_RV rv;

    rv = load_module(h, err);
    if (rv == CKR_OK)
        rv = initialize(h, err);
    if (rv == CKR_OK)
        rv = find_slot(h, err);
    note_restarts(h);
    if (rv == CKR_OK)
        rv = choose_mechanism(h, err);
    if (rv != CKR_OK)
        return rv;
    rv = P11T_CALL(h, C_OpenSession, h->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
                             NULL, NULL, &h->login_session);
    if (rv != CKR_OK) {
        p11t_err_set(err, rv, "token-uri: C_OpenSession failed: %s",
                     p11t_rv_name(rv));
        return rv;
    }
    rv = login(h, err);
    if (rv != CKR_OK) {
        P11T_CALL(h, C_CloseSession, h->login_session);
        return rv;
    }
    h->login_open = 1;
    return CKR_OK;
}

/* A forked child inherits the parent's module state, which is not valid
 * here: finalize it and start over (docs/design.md, "fork()"). */
static void forget_after_fork(p11t_hsm *h)
{
    /* The library itself is finalized and re-initialised once per process
     * by initialize(), whichever instance gets there first. */
    h->ready = 0;
    h->pid = getpid();
    h->retry_at_ms = 0;
    h->backoff_ms = BACKOFF_MIN_MS;
    /* The locks are free: the fork handlers took and released them. */
    h->pool_n = 0; /* handles belong to the parent's module instance */
    h->n_stale = 0;
    h->login_open = 0;
    atomic_fetch_add(&h->epoch, 1);
    __atomic_store_n(&h->dead_below, atomic_load(&h->epoch),
                     __ATOMIC_RELEASE);
}

static unsigned backoff_max_ms(const p11t_hsm *h)
{
    /* A token that comes back is in use again within refresh-interval:
     * never wait longer than half of it between attempts. */
    unsigned half = h->cfg->refresh_s * 500u;

    return half < BACKOFF_MIN_MS   ? BACKOFF_MIN_MS
           : half > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                   : half;
}

static void grow_backoff(p11t_hsm *h)
{
    unsigned max = backoff_max_ms(h);

    h->backoff_ms = h->backoff_ms * 2 > max ? max : h->backoff_ms * 2;
}

CK_RV p11t_hsm_ready(p11t_hsm *h, p11t_err *err)
{
    CK_RV rv;
    int64_t now;

    if (h->cfg->err.rv != CKR_OK) {
        p11t_err_set(err, h->cfg->err.rv, "%s", h->cfg->err.msg);
        return h->cfg->err.rv;
    }
    if (__atomic_load_n(&h->ready, __ATOMIC_ACQUIRE) && h->pid == self_pid())
        return CKR_OK;

    /*
     * One thread (re)initialises; once this process has had the token, the
     * others do not wait for it (a login may retry for a while) but fail at
     * once, and their handshakes go on without tickets.  The very first
     * initialisation is waited for.
     */
    if (pthread_mutex_trylock(&h->lock) != 0) {
        if (__atomic_load_n(&h->had_pid, __ATOMIC_ACQUIRE) == self_pid()) {
            p11t_err_set(err, P11T_CKR_BACKOFF,
                         "token-uri: the token is being reconnected");
            return P11T_CKR_BACKOFF;
        }
        pthread_mutex_lock(&h->lock);
    }
    if (h->pid != getpid())
        forget_after_fork(h);
    if (h->ready) {
        pthread_mutex_unlock(&h->lock);
        return CKR_OK;
    }
    if (h->init_permanent) {
        p11t_err_set(err, h->init_err.rv, "%s", h->init_err.msg);
        pthread_mutex_unlock(&h->lock);
        return h->init_err.rv;
    }
    now = p11t_mono_ms();
    if (h->init_err.rv != CKR_OK && now < h->retry_at_ms) {
        p11t_err_set(err, h->init_err.rv, "%s", h->init_err.msg);
        pthread_mutex_unlock(&h->lock);
        return P11T_CKR_BACKOFF;
    }
    p11t_err_clear(&h->init_err);
    retire_login(h);
    rv = do_init(h, &h->init_err);
    if (rv != CKR_OK) {
        h->init_permanent = pin_error_is_permanent(rv);
        h->retry_at_ms = p11t_mono_ms() + h->backoff_ms;
        grow_backoff(h);
        p11t_err_set(err, h->init_err.rv, "%s", h->init_err.msg);
        pthread_mutex_unlock(&h->lock);
        return rv;
    }
    atomic_fetch_add(&h->epoch, 1);
    h->login_epoch = atomic_load(&h->epoch);
    h->ready_since_ms = p11t_mono_ms();
    __atomic_store_n(&h->had_pid, getpid(), __ATOMIC_RELEASE);
    __atomic_store_n(&h->ready, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&h->lock);
    return CKR_OK;
}

int p11t_rv_is_token_lost(CK_RV rv)
{
    return rv == CKR_DEVICE_REMOVED || rv == CKR_TOKEN_NOT_PRESENT ||
           rv == CKR_DEVICE_ERROR || rv == CKR_USER_NOT_LOGGED_IN ||
           rv == CKR_CRYPTOKI_NOT_INITIALIZED || rv == CKR_SESSION_CLOSED ||
           rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_TOKEN_NOT_RECOGNIZED;
}

void p11t_hsm_mark_broken(p11t_hsm *h, CK_RV rv, unsigned epoch)
{
    int64_t now;

    pthread_mutex_lock(&h->lock);
    /*
     * Only the first failure of the current login epoch starts a recovery.
     * A failure on a session of an older epoch is a leftover of a loss that
     * is already being handled: that session is simply dropped.  Nothing is
     * closed here: other threads may be using their sessions right now.
     */
    if (h->ready && h->pid == getpid() && epoch == atomic_load(&h->epoch)) {
        __atomic_store_n(&h->ready, 0, __ATOMIC_RELEASE);
        atomic_fetch_add(&h->epoch, 1);
        p11t_err_clear(&h->init_err);
        p11t_err_set(&h->init_err, rv, "token-uri: token lost (%s)",
                     p11t_rv_name(rv));
        /* A token lost again soon after the last loss is logged in to
         * again only after a growing delay: every C_Login rewrites
         * SoftHSM's token.object, and a storm of them has emptied it. */
        now = p11t_mono_ms();
        if (h->lost_ms != 0 && now - h->lost_ms < QUICK_LOSS_MS) {
            h->retry_at_ms = now + h->backoff_ms;
            grow_backoff(h);
        } else {
            h->retry_at_ms = 0; /* a one-off loss: log in again at once */
            h->backoff_ms = BACKOFF_MIN_MS;
        }
        h->lost_ms = now;
    }
    pthread_mutex_unlock(&h->lock);
}

/* Closes the sessions of a pool whose epoch ended (not if it died with a
 * library restart: those numbers may be someone else's now). */
static void close_sessions(p11t_hsm *h, CK_SESSION_HANDLE *s, size_t n,
                           unsigned epoch)
{
    if (epoch_dead(h, epoch))
        return;
    for (size_t i = 0; i < n; i++)
        (void)P11T_CALL(h, C_CloseSession, s[i]);
}

CK_RV p11t_session_get(p11t_hsm *h, CK_SESSION_HANDLE *s, unsigned *epoch,
                       p11t_err *err)
{
    unsigned ep = atomic_load(&h->epoch);
    CK_SESSION_HANDLE *old = NULL;
    size_t old_n = 0;
    unsigned old_ep = 0;
    CK_RV rv;

    pthread_mutex_lock(&h->pool_lock);
    if (h->pool_epoch != ep) {
        /* Sessions of an ended epoch: take them out to close. */
        if (h->pool_n > 0 && (old = malloc(h->pool_n * sizeof(*old))) != NULL) {
            memcpy(old, h->pool, h->pool_n * sizeof(*old));
            old_n = h->pool_n;
            old_ep = h->pool_epoch;
        }
        h->pool_n = 0;
        h->pool_epoch = ep;
    }
    if (h->pool_n > 0) {
        *s = h->pool[--h->pool_n];
        pthread_mutex_unlock(&h->pool_lock);
        *epoch = ep;
        return CKR_OK;
    }
    pthread_mutex_unlock(&h->pool_lock);
    if (old != NULL) {
        close_sessions(h, old, old_n, old_ep);
        free(old);
    }
    rv = P11T_CALL(h, C_OpenSession, h->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
                             NULL, NULL, s);
    if (rv != CKR_OK) {
        p11t_err_set(err, rv, "C_OpenSession failed: %s", p11t_rv_name(rv));
        return rv;
    }
    *epoch = ep;
    return CKR_OK;
}

void p11t_session_put(p11t_hsm *h, CK_SESSION_HANDLE s, unsigned epoch, int bad)
{
    pthread_mutex_lock(&h->pool_lock);
    if (!bad && epoch == h->pool_epoch && epoch == atomic_load(&h->epoch)) {
        if (h->pool_n == h->pool_cap && h->pool_cap < h->cfg->max_sessions) {
            size_t cap = h->pool_cap ? h->pool_cap * 2 : 8;
            CK_SESSION_HANDLE *p;

            if (cap > h->cfg->max_sessions)
                cap = h->cfg->max_sessions;
            p = realloc(h->pool, cap * sizeof(*p));
            if (p != NULL) {
                h->pool = p;
                h->pool_cap = cap;
            }
        }
        if (h->pool_n < h->pool_cap) {
            h->pool[h->pool_n++] = s;
            pthread_mutex_unlock(&h->pool_lock);
            return;
        }
    }
    pthread_mutex_unlock(&h->pool_lock);
    close_sessions(h, &s, 1, epoch);
}
