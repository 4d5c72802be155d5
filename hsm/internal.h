/* SPDX-License-Identifier: Apache-2.0 */
/*
 * internal.h - private to hsm/: the token handle and the helpers shared by
 * module.c, keys.c and provision.c.
 */
#ifndef P11T_HSM_INTERNAL_H
#define P11T_HSM_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include <p11-kit/uri.h>

#include "hsm.h"

struct p11t_config {
    char *module_path;   /* pkcs11-module */
    char *token_uri;     /* token-uri, as written */
    P11KitUri *uri;      /* token-uri, parsed */
    char *pin_source;    /* pin-source */
    unsigned refresh_s;  /* refresh-interval */
    unsigned rescan_s;   /* rescan-interval */
    unsigned max_sessions; /* max-sessions */
    int auto_rotate;     /* auto-rotate */
    int session_copies;  /* session-copies */
    int auto_enable;     /* auto-enable */
    p11t_aes_mech aes_mech; /* aes-mechanism */
    p11t_policy policy;  /* encrypt-for, decrypt-for, rotate-lead */
    p11t_err err;        /* first configuration error, reported lazily */
};

/* One key generation as cached: handles are valid for h->epoch only. */
typedef struct p11t_entry {
    p11t_keyinfo info;
    CK_OBJECT_HANDLE aes, hmac;         /* token objects */
    CK_OBJECT_HANDLE aes_op, hmac_op;   /* what operations use */
    int copied;                         /* *_op are session copies */
} p11t_entry;

/* One per PKCS#11 module path in the process, shared by every p11t_hsm
 * (the provider may be loaded into several library contexts). */
typedef struct p11t_module p11t_module;

struct p11t_hsm {
    p11t_hsm *next; /* the registry of live handles (fork handlers) */
    p11t_config *cfg;
    p11t_pin_prompt_fn prompt;
    void *prompt_arg;

    /* Module and login state; guarded by lock. */
    pthread_mutex_t lock;
    p11t_module *mod;
    CK_FUNCTION_LIST_PTR f;
    pid_t counted_pid;      /* process in which mod->users_here counts us */
    pid_t pid;              /* process that initialised; fork detection */
    int ready;              /* logged in, usable */
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE login_session; /* keeps the login alive */
    int login_open;         /* login_session is open (ours to close) */
    unsigned login_epoch;   /* the epoch login_session belongs to */
    /* Login sessions of lost epochs, closed by the next scan. */
#define P11T_STALE_LOGINS 8
    CK_SESSION_HANDLE stale[P11T_STALE_LOGINS];
    size_t n_stale;
    unsigned seen_restarts; /* mod->restarts when last looked */
    unsigned dead_below;    /* sessions of older epochs died with a restart */
    pid_t had_pid;          /* process in which the token was ever ready */
    int64_t ready_since_ms; /* monotonic time of the last login */
    int64_t lost_ms;        /* monotonic time of the last loss; 0 = none */
    p11t_err init_err;      /* last initialisation failure */
    int init_permanent;     /* PIN rejected: never retry */
    int64_t retry_at_ms;    /* monotonic; no init attempt before this */
    unsigned backoff_ms;
    /* The AES mechanism (p11t_aes_mech) the last login chose from what the
     * token offers; written under lock before ready, read atomically by
     * every operation (keys.c, run()). */
    int aes_mech;
    atomic_uint epoch;      /* bumps on every (re)initialisation */

    /* Session pool; guarded by pool_lock. */
    pthread_mutex_t pool_lock;
    CK_SESSION_HANDLE *pool;
    size_t pool_n, pool_cap;
    unsigned pool_epoch;

    /* Handle cache; entries guarded by cache_lock (rw). */
    pthread_rwlock_t cache_lock;
    p11t_entry *entries;
    size_t n_entries;
    unsigned cache_epoch;
    /* The current encrypting key, valid while now is in [cur_from,
     * cur_until) and the entries are the ones it was computed from. */
    uint64_t cache_gen;     /* bumps whenever entries are replaced */
    uint64_t cur_gen;
    int cur_found;
    int64_t cur_from, cur_until;
    uint8_t cur_name[P11T_NAME_LEN];
    int64_t refreshed_ms;   /* monotonic time of last scan; 0 = never */
    int64_t rescan_ms;      /* last scan caused by an unknown name */
    int64_t scan_failed_ms; /* when the last scan failed; 0 = it did not */
    p11t_err scan_err;      /* why; both under refresh_lock */
    pthread_mutex_t refresh_lock; /* one scan at a time */

    atomic_uint_fast64_t errors;
};

int64_t p11t_mono_ms(void);

/*
 * Every call into a PKCS#11 module goes through P11T_CALL, which holds the
 * process-wide gate (module.c) shared for the duration of that one call.
 * p11t_gate_exclusive(1) waits until no call is in flight and holds new
 * ones back until p11t_gate_exclusive(0).
 */
void p11t_gate_enter(void);
void p11t_gate_leave(void);
void p11t_gate_exclusive(int on);
/* The PIN store's lock around fork(): taken (1) before, released (0) after
 * in parent and child. */
void p11t_pin_fork_lock(int on);
#define P11T_CALL(h, fn, ...)                                                  \
    __extension__({                                                            \
        CK_RV p11t_call_rv_;                                                   \
        p11t_gate_enter();                                                     \
        p11t_call_rv_ = (h)->f->fn(__VA_ARGS__);                               \
        p11t_gate_leave();                                                     \
        p11t_call_rv_;                                                         \
    })
CK_RV p11t_session_get(p11t_hsm *h, CK_SESSION_HANDLE *s, unsigned *epoch,
                       p11t_err *err);
/* bad != 0: the session failed and must be closed rather than pooled. */
void p11t_session_put(p11t_hsm *h, CK_SESSION_HANDLE s, unsigned epoch, int bad);
/*
 * A token-lost failure on a session of login epoch `epoch`: if that is the
 * current epoch, marks the token as lost so that the next call (after a
 * backoff if logins keep failing) re-initialises; otherwise nothing.
 */
void p11t_hsm_mark_broken(p11t_hsm *h, CK_RV rv, unsigned epoch);
/* Closes login sessions of lost epochs (called by the scan, which is the
 * only user of the login session besides the login itself). */
void p11t_close_stale_logins(p11t_hsm *h);
/* 1 if rv means the session/token went away (re-init needed). */
int p11t_rv_is_token_lost(CK_RV rv);
/* Rescan the token's objects into the cache (takes refresh_lock). */
CK_RV p11t_cache_refresh(p11t_hsm *h, p11t_err *err);
/* Generates one generation in session s; no cache refresh (callers may
 * hold refresh_lock). */
CK_RV p11t_gen_create(p11t_hsm *h, CK_SESSION_HANDLE s, CK_ULONG aes_len,
                      const p11t_times *times, uint8_t name[P11T_NAME_LEN],
                      p11t_err *err);
/* Reads every p11ticket object (used by the scan and by list). */
CK_RV p11t_scan_objects(p11t_hsm *h, CK_SESSION_HANDLE s, int detail,
                        p11t_objinfo **objs, size_t *n, p11t_err *err);

#endif
