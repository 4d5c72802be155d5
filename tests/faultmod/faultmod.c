/* SPDX-License-Identifier: Apache-2.0 */
/*
 * faultmod.c - libp11t_faultmod.so, a fault-injection PKCS#11 module for the
 * test suite (built in the build tree's lib/, never installed).
 *
 * What it is for
 * --------------
 * p11ticket must survive a token that fails, stalls, disappears or loses
 * its sessions, and SoftHSM never does any of that by itself.  This module
 * wraps a real PKCS#11 module and, driven by a control file that a test
 * rewrites while the program under test runs, makes chosen calls fail,
 * slow, or behave as if the token were removed.  It also counts every call,
 * so a test can see what p11ticket did (how many C_Login after one error,
 * say).  Point p11ticket's pkcs11-module at this library instead of SoftHSM.
 *
 * Environment (read once, at the first C_GetFunctionList of the process):
 *   P11T_FAULT_MODULE   the wrapped module (default
 *                       /usr/lib/softhsm/libsofthsm2.so)
 *   P11T_FAULT_CONTROL  the control file (unset: never any fault)
 *   P11T_FAULT_COUNTS   a counters file shared by every process that uses
 *                       the module (unset: counters in memory only), mapped
 *                       (and created by the first process) at that first
 *                       C_GetFunctionList; read it with
 *                       `p11t_faultctl counts FILE [FUNC]`
 *
 * C_GetFunctionList hands out this module's own CK_FUNCTION_LIST (version
 * 2.40, every function of p11-kit's pkcs11.h).  Each entry counts the call,
 * applies the rules, then forwards to the wrapped module or answers itself.
 * No lock is held around a forwarded call: p11ticket's own concurrency
 * reaches the wrapped module unchanged.  Counters are atomics; the only
 * lock guards a short lookup in the session table (see "Sessions").
 *
 * Control file
 * ------------
 * One rule per line; `#` starts a comment; words are separated by blanks.
 * FUNC is a PKCS#11 function name (C_Encrypt, C_GetFunctionList, ...) or
 * `*` for every function.  Options may come in any order.
 *
 *   fail FUNC nth=N rv=RV [for_ms=T]
 *       The Nth matching call (N >= 1, counted from when this rule set was
 *       loaded) returns RV instead of being forwarded.  Once.
 *   fail FUNC every rv=RV [for_ms=T] [max=K]
 *       Every matching call returns RV.
 *   fail FUNC random=P rv=RV [max=K] [seed=S] [for_ms=T]
 *       Each matching call fails with probability P (0..1).  Draw number i
 *       of the rule is a hash of (S, i), so a given seed fails the same
 *       calls of a single-threaded sequence every time.  Without seed= the
 *       seed comes from the clock.
 *   delay FUNC ms=N [for_ms=T]
 *       Sleep N ms before answering (whether the call is then forwarded or
 *       failed by a fail rule).  Several matching delays add up.
 *   removed
 *       The token is gone: C_GetSlotList(tokenPresent=TRUE) returns no
 *       slot, C_GetSlotInfo clears CKF_TOKEN_PRESENT, C_GetTokenInfo,
 *       C_InitToken, C_GetMechanismList/Info and C_OpenSession return
 *       CKR_TOKEN_NOT_PRESENT, C_CloseAllSessions closes the sessions and
 *       returns CKR_TOKEN_NOT_PRESENT, and every call that takes a session
 *       returns CKR_DEVICE_REMOVED (C_CloseSession does close the real
 *       session).  Removing the rule brings the token back, but every
 *       session opened before `removed` was loaded stays invalid
 *       (CKR_SESSION_HANDLE_INVALID), as a real token's sessions die with
 *       its removal.
 *   invalidate-sessions
 *       Every session opened before this rule set was loaded answers
 *       CKR_SESSION_HANDLE_INVALID from then on, also after the rule is
 *       gone.  C_CloseSession on such a session closes the real one too,
 *       returns CKR_SESSION_HANDLE_INVALID and forgets it.  (Every load of
 *       a file with this rule is a new "before": rewriting the file while
 *       it keeps the rule kills the sessions opened in between.)
 *   token-flags 0xHEX
 *       These bits are set in the flags C_GetTokenInfo returns (e.g.
 *       0x20000 CKF_USER_PIN_FINAL_TRY, 0x40000 CKF_USER_PIN_LOCKED).
 *   hide-mech MECH
 *       MECH is missing from C_GetMechanismList; C_GetMechanismInfo and
 *       every call that takes a CK_MECHANISM (the *Init functions,
 *       C_GenerateKey(Pair), C_WrapKey, C_UnwrapKey, C_DeriveKey) return
 *       CKR_MECHANISM_INVALID.
 *
 *   for_ms=T   the rule acts only during the first T ms after its rule set
 *              was loaded; outside that window it neither fails nor counts.
 *   max=K      at most K failures from this rule (per rule set and process).
 *   RV         a CKR_ name (see ckr_names below) or hex 0x...
 *   MECH       a CKM_ name (see ckm_names below) or hex 0x...
 *
 * Rules are checked in file order.  Every matching rule counts the call
 * (nth=, random= draws), the first one that fires decides the result.
 * Fail rules come before removed / invalidate-sessions / hide-mech.
 *
 * When a fail rule hits a call that, had the token failed it, would end the
 * session's active operation (C_Encrypt, C_Sign, C_DecryptUpdate, ...;
 * PKCS#11 2.40 section 5.2), the module ends the real operation itself
 * (see finish_single), so the application's next *Init does not get
 * CKR_OPERATION_ACTIVE from the wrapped module.
 *
 * The file is re-read when its inode, size, mtime or ctime changes (one
 * stat() per call); a missing file means no rules.  For 100 ms after a
 * change its text is also compared on every call, because a second change
 * within the file system's timestamp granularity can keep all of those.
 * Best write a new file and rename() it over the old one: an in-place
 * rewrite can be read half-written (and then reported as malformed until
 * the rest arrives).  Counters of nth/random/max and the for_ms clock start
 * again at every reload, separately in every process.
 *
 * A malformed line (unknown word, function, CKR/CKM name, bad number,
 * missing rv=, two modes, ...) makes the module print one line to stderr,
 * naming the file and the line, and ignore the whole file: no faults until
 * the file changes again.
 *
 * Sessions
 * --------
 * The module remembers every session it opened, with the generation of the
 * rule set in force when it was opened.  A rule set with `removed` or
 * `invalidate-sessions` kills every session of an older generation; dead
 * sessions stay open in the wrapped module (so that it cannot hand their
 * handle to a new session) until the application closes them.  The table
 * is guarded by a mutex held only for the lookup, never across a forwarded
 * call, and taken around fork() (pthread_atfork) so a child never inherits
 * it locked.
 *
 * Reloads never lock: a thread that sees a changed file parses it into a
 * new immutable rule set and swaps the current pointer with a
 * compare-and-swap.  A set is never freed once published (another thread
 * may still read it); each new set links to the previous one, so the old
 * ones stay reachable and leak checkers stay quiet.
 *
 * Counters
 * --------
 * Per function: calls into the module, and failures (calls the module
 * answered with an error of its own instead of the wrapped module's answer:
 * fail rules, `removed`, dead sessions, hidden mechanisms; a CKR_OK answer
 * such as the empty slot list of `removed` is not a failure).  In this
 * process: p11t_fault_calls() / p11t_fault_failures() (faultmod.h).
 * Across processes: the P11T_FAULT_COUNTS file, mapped shared and added to
 * atomically (layout in faultmod.h).  After fork() both simply continue.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "faultmod.h"

#define DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define MAX_WORDS 16
#define MAX_FILE (1 << 20)
/* Longer than any file system's timestamp granularity. */
#define SETTLE_NS (100 * 1000000LL)

/* ---- the functions --------------------------------------------------------
 * Every entry of CK_FUNCTION_LIST, in its order. */
#define P11T_FUNCS(X)                                                          \
    X(C_Initialize)                                                            \
    X(C_Finalize)                                                              \
    X(C_GetInfo)                                                               \
    X(C_GetFunctionList)                                                       \
    X(C_GetSlotList)                                                           \
    X(C_GetSlotInfo)                                                           \
    X(C_GetTokenInfo)                                                          \
    X(C_GetMechanismList)                                                      \
    X(C_GetMechanismInfo)                                                      \
    X(C_InitToken)                                                             \
    X(C_InitPIN)                                                               \
    X(C_SetPIN)                                                                \
    X(C_OpenSession)                                                           \
    X(C_CloseSession)                                                          \
    X(C_CloseAllSessions)                                                      \
    X(C_GetSessionInfo)                                                        \
    X(C_GetOperationState)                                                     \
    X(C_SetOperationState)                                                     \
    X(C_Login)                                                                 \
    X(C_Logout)                                                                \
    X(C_CreateObject)                                                          \
    X(C_CopyObject)                                                            \
    X(C_DestroyObject)                                                         \
    X(C_GetObjectSize)                                                         \
    X(C_GetAttributeValue)                                                     \
    X(C_SetAttributeValue)                                                     \
    X(C_FindObjectsInit)                                                       \
    X(C_FindObjects)                                                           \
    X(C_FindObjectsFinal)                                                      \
    X(C_EncryptInit)                                                           \
    X(C_Encrypt)                                                               \
    X(C_EncryptUpdate)                                                         \
    X(C_EncryptFinal)                                                          \
    X(C_DecryptInit)                                                           \
    X(C_Decrypt)                                                               \
    X(C_DecryptUpdate)                                                         \
    X(C_DecryptFinal)                                                          \
    X(C_DigestInit)                                                            \
    X(C_Digest)                                                                \
    X(C_DigestUpdate)                                                          \
    X(C_DigestKey)                                                             \
    X(C_DigestFinal)                                                           \
    X(C_SignInit)                                                              \
    X(C_Sign)                                                                  \
    X(C_SignUpdate)                                                            \
    X(C_SignFinal)                                                             \
    X(C_SignRecoverInit)                                                       \
    X(C_SignRecover)                                                           \
    X(C_VerifyInit)                                                            \
    X(C_Verify)                                                                \
    X(C_VerifyUpdate)                                                          \
    X(C_VerifyFinal)                                                           \
    X(C_VerifyRecoverInit)                                                     \
    X(C_VerifyRecover)                                                         \
    X(C_DigestEncryptUpdate)                                                   \
    X(C_DecryptDigestUpdate)                                                   \
    X(C_SignEncryptUpdate)                                                     \
    X(C_DecryptVerifyUpdate)                                                   \
    X(C_GenerateKey)                                                           \
    X(C_GenerateKeyPair)                                                       \
    X(C_WrapKey)                                                               \
    X(C_UnwrapKey)                                                             \
    X(C_DeriveKey)                                                             \
    X(C_SeedRandom)                                                            \
    X(C_GenerateRandom)                                                        \
    X(C_GetFunctionStatus)                                                     \
    X(C_CancelFunction)                                                        \
    X(C_WaitForSlotEvent)

enum {
#define X(n) F_##n,
    P11T_FUNCS(X)
#undef X
        NFUNC
};

static const char *const func_names[NFUNC] = {
#define X(n) #n,
    P11T_FUNCS(X)
#undef X
};

static int func_id(const char *name)
{
    for (int i = 0; i < NFUNC; i++)
        if (strcmp(func_names[i], name) == 0)
            return i;
    return -1;
}

/* ---- CKR_ and CKM_ names ------------------------------------------------- */

typedef struct named {
    const char *name;
    unsigned long value;
} named;

/* clang-format off */
#define N(x) {#x, x}
/* clang-format on */
static const named ckr_names[] = {
    N(CKR_OK),
    N(CKR_CANCEL),
    N(CKR_HOST_MEMORY),
    N(CKR_SLOT_ID_INVALID),
    N(CKR_GENERAL_ERROR),
    N(CKR_FUNCTION_FAILED),
    N(CKR_ARGUMENTS_BAD),
    N(CKR_NO_EVENT),
    N(CKR_NEED_TO_CREATE_THREADS),
    N(CKR_CANT_LOCK),
    N(CKR_ATTRIBUTE_READ_ONLY),
    N(CKR_ATTRIBUTE_SENSITIVE),
    N(CKR_ATTRIBUTE_TYPE_INVALID),
    N(CKR_ATTRIBUTE_VALUE_INVALID),
    N(CKR_DATA_INVALID),
    N(CKR_DATA_LEN_RANGE),
    N(CKR_DEVICE_ERROR),
    N(CKR_DEVICE_MEMORY),
    N(CKR_DEVICE_REMOVED),
    N(CKR_ENCRYPTED_DATA_INVALID),
    N(CKR_ENCRYPTED_DATA_LEN_RANGE),
    N(CKR_FUNCTION_CANCELED),
    N(CKR_FUNCTION_NOT_PARALLEL),
    N(CKR_FUNCTION_NOT_SUPPORTED),
    N(CKR_KEY_HANDLE_INVALID),
    N(CKR_KEY_SIZE_RANGE),
    N(CKR_KEY_TYPE_INCONSISTENT),
    N(CKR_KEY_FUNCTION_NOT_PERMITTED),
    N(CKR_MECHANISM_INVALID),
    N(CKR_MECHANISM_PARAM_INVALID),
    N(CKR_OBJECT_HANDLE_INVALID),
    N(CKR_OPERATION_ACTIVE),
    N(CKR_OPERATION_NOT_INITIALIZED),
    N(CKR_PIN_INCORRECT),
    N(CKR_PIN_INVALID),
    N(CKR_PIN_LEN_RANGE),
    N(CKR_PIN_EXPIRED),
    N(CKR_PIN_LOCKED),
    N(CKR_SESSION_CLOSED),
    N(CKR_SESSION_COUNT),
    N(CKR_SESSION_HANDLE_INVALID),
    N(CKR_SESSION_PARALLEL_NOT_SUPPORTED),
    N(CKR_SESSION_READ_ONLY),
    N(CKR_SESSION_EXISTS),
    N(CKR_SESSION_READ_ONLY_EXISTS),
    N(CKR_SESSION_READ_WRITE_SO_EXISTS),
    N(CKR_SIGNATURE_INVALID),
    N(CKR_SIGNATURE_LEN_RANGE),
    N(CKR_TEMPLATE_INCOMPLETE),
    N(CKR_TEMPLATE_INCONSISTENT),
    N(CKR_TOKEN_NOT_PRESENT),
    N(CKR_TOKEN_NOT_RECOGNIZED),
    N(CKR_TOKEN_WRITE_PROTECTED),
    N(CKR_USER_ALREADY_LOGGED_IN),
    N(CKR_USER_NOT_LOGGED_IN),
    N(CKR_USER_PIN_NOT_INITIALIZED),
    N(CKR_USER_TYPE_INVALID),
    N(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
    N(CKR_USER_TOO_MANY_TYPES),
    N(CKR_RANDOM_SEED_NOT_SUPPORTED),
    N(CKR_RANDOM_NO_RNG),
    N(CKR_BUFFER_TOO_SMALL),
    N(CKR_SAVED_STATE_INVALID),
    N(CKR_INFORMATION_SENSITIVE),
    N(CKR_STATE_UNSAVEABLE),
    N(CKR_CRYPTOKI_NOT_INITIALIZED),
    N(CKR_CRYPTOKI_ALREADY_INITIALIZED),
    N(CKR_MUTEX_BAD),
    N(CKR_MUTEX_NOT_LOCKED),
    N(CKR_FUNCTION_REJECTED),
};

static const named ckm_names[] = {
    N(CKM_AES_KEY_GEN),
    N(CKM_AES_ECB),
    N(CKM_AES_CBC),
    N(CKM_AES_CBC_PAD),
    N(CKM_AES_CTR),
    N(CKM_AES_GCM),
    N(CKM_AES_MAC),
    N(CKM_AES_CMAC),
    N(CKM_GENERIC_SECRET_KEY_GEN),
    N(CKM_SHA_1),
    N(CKM_SHA256),
    N(CKM_SHA384),
    N(CKM_SHA512),
    N(CKM_SHA_1_HMAC),
    N(CKM_SHA256_HMAC),
    N(CKM_SHA384_HMAC),
    N(CKM_SHA512_HMAC),
    N(CKM_RSA_PKCS_KEY_PAIR_GEN),
    N(CKM_RSA_PKCS),
    N(CKM_RSA_PKCS_OAEP),
    N(CKM_RSA_PKCS_PSS),
    N(CKM_SHA256_RSA_PKCS),
    N(CKM_EC_KEY_PAIR_GEN),
    N(CKM_ECDSA),
    N(CKM_ECDH1_DERIVE),
};
#undef N

/* A name from table, or 0x followed by hex digits. */
static int lookup_value(const named *table, size_t n, const char *s,
                        unsigned long *out)
{
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        char *end;

        if (s[2] == '\0')
            return 0;
        errno = 0;
        *out = strtoul(s + 2, &end, 16);
        return errno == 0 && *end == '\0' && s[2] != '-' && s[2] != '+';
    }
    for (size_t i = 0; i < n; i++)
        if (strcmp(table[i].name, s) == 0) {
            *out = table[i].value;
            return 1;
        }
    return 0;
}

/* ---- time ---------------------------------------------------------------- */

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- rules --------------------------------------------------------------- */

enum { R_FAIL, R_DELAY };
enum { M_NTH, M_EVERY, M_RANDOM };

#define UNLIMITED UINT64_MAX

typedef struct rule {
    int type;        /* R_FAIL or R_DELAY */
    int fid;         /* function, or -1 for `*` */
    int mode;        /* M_* (fail rules) */
    uint64_t nth;    /* M_NTH */
    double p;        /* M_RANDOM */
    uint64_t seed;   /* M_RANDOM */
    uint64_t max;    /* failures at most, or UNLIMITED */
    int64_t for_ns;  /* active window after loading, or -1 */
    uint64_t ms;     /* R_DELAY */
    CK_RV rv;        /* R_FAIL */
    uint64_t seen;   /* atomic: matching calls (nth) or draws (random) */
    uint64_t failed; /* atomic: failures from this rule */
} rule;

typedef struct filekey {
    int state; /* -1 never looked, 0 absent, 1 present */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
} filekey;

typedef struct ruleset {
    struct ruleset *older; /* keeps retired sets reachable; never freed */
    filekey key;
    uint64_t gen;         /* generation: increases with every load */
    uint64_t dead_before; /* sessions born in an older generation are dead */
    int64_t loaded_ns;
    int removed;
    int invalidate;
    rule *rules;
    size_t nrules;
    CK_MECHANISM_TYPE *mechs; /* hidden mechanisms */
    size_t nmechs;
    CK_FLAGS token_flags; /* ORed into C_GetTokenInfo's flags */
    char *text; /* the file's text, NULL if none */
    size_t textlen;
    int settled;     /* atomic: see rules_now() */
    char error[600]; /* the malformed-file message, printed once */
} ruleset;

static ruleset initial = {.key = {.state = -1}, .gen = 1, .settled = 1};
static ruleset *current = &initial; /* atomic */
static uint64_t next_gen = 2;       /* atomic */
static char *control_path;          /* set once in setup() */

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;

    if (*s < '0' || *s > '9')
        return 0;
    errno = 0;
    *out = strtoull(s, &end, 10);
    return errno == 0 && *end == '\0';
}

static int parse_hex(const char *s, uint64_t *out)
{
    char *end;

    if (*s == '\0')
        return 0;
    errno = 0;
    *out = strtoull(s, &end, 16);
    return errno == 0 && *end == '\0';
}

/* "key=value": the value if word starts with key=, else NULL. */
static const char *opt(const char *word, const char *key)
{
    size_t n = strlen(key);

    return strncmp(word, key, n) == 0 && word[n] == '=' ? word + n + 1 : NULL;
}

static void set_error(ruleset *rs, const char *path, unsigned line,
                      const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void set_error(ruleset *rs, const char *path, unsigned line,
                      const char *fmt, ...)
{
    char why[300];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    /* One printable line, whatever bytes the file holds. */
    for (char *p = why; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
    snprintf(rs->error, sizeof(rs->error),
             "p11t_faultmod: %s:%u: %s; ignoring the whole file (no faults)",
             path, line, why);
}

static int add_rule(ruleset *rs, const rule *r)
{
    rule *n = realloc(rs->rules, (rs->nrules + 1) * sizeof(*n));

    if (n == NULL)
        return 0;
    rs->rules = n;
    rs->rules[rs->nrules++] = *r;
    return 1;
}

/* One fail/delay line.  Returns NULL or why it is malformed (in buf). */
static const char *parse_rule(ruleset *rs, char **w, int nw, char *buf,
                              size_t buflen)
{
    rule r;
    int have_rv = 0, have_seed = 0, have_max = 0, have_ms = 0, nmodes = 0;

    memset(&r, 0, sizeof(r));
    r.type = strcmp(w[0], "fail") == 0 ? R_FAIL : R_DELAY;
    r.max = UNLIMITED;
    r.for_ns = -1;
    if (nw < 2)
        return "missing function name";
    if (strcmp(w[1], "*") == 0)
        r.fid = -1;
    else if ((r.fid = func_id(w[1])) < 0) {
        snprintf(buf, buflen, "unknown function '%.100s'", w[1]);
        return buf;
    }
    for (int i = 2; i < nw; i++) {
        const char *v;
        uint64_t u;

        if (r.type == R_FAIL && strcmp(w[i], "every") == 0) {
            r.mode = M_EVERY;
            nmodes++;
        } else if (r.type == R_FAIL && (v = opt(w[i], "nth")) != NULL) {
            if (!parse_u64(v, &r.nth) || r.nth == 0)
                return "nth= needs a whole number >= 1";
            r.mode = M_NTH;
            nmodes++;
        } else if (r.type == R_FAIL && (v = opt(w[i], "random")) != NULL) {
            char *end;

            errno = 0;
            r.p = strtod(v, &end);
            if (*v == '\0' || *end != '\0' || errno != 0 || !isfinite(r.p) ||
                r.p < 0 || r.p > 1)
                return "random= needs a probability between 0 and 1";
            r.mode = M_RANDOM;
            nmodes++;
        } else if (r.type == R_FAIL && (v = opt(w[i], "rv")) != NULL) {
            unsigned long rv;

            if (have_rv++)
                return "rv= given twice";
            if (!lookup_value(ckr_names,
                              sizeof(ckr_names) / sizeof(ckr_names[0]), v,
                              &rv)) {
                snprintf(buf, buflen, "unknown return value '%.100s'", v);
                return buf;
            }
            r.rv = rv;
        } else if (r.type == R_FAIL && (v = opt(w[i], "max")) != NULL) {
            if (have_max++ || !parse_u64(v, &r.max))
                return "max= needs one whole number";
        } else if (r.type == R_FAIL && (v = opt(w[i], "seed")) != NULL) {
            if (have_seed++ || !parse_u64(v, &r.seed))
                return "seed= needs one whole number";
        } else if (r.type == R_DELAY && (v = opt(w[i], "ms")) != NULL) {
            if (have_ms++ || !parse_u64(v, &r.ms) || r.ms > 3600000)
                return "ms= needs one whole number of milliseconds (<= "
                       "3600000)";
        } else if ((v = opt(w[i], "for_ms")) != NULL) {
            if (r.for_ns >= 0 || !parse_u64(v, &u) || u > 86400000)
                return "for_ms= needs one whole number of milliseconds";
            r.for_ns = (int64_t)u * 1000000;
        } else {
            snprintf(buf, buflen, "unknown option '%.100s' for %s", w[i], w[0]);
            return buf;
        }
    }
    if (r.type == R_DELAY) {
        if (!have_ms)
            return "delay needs ms=";
    } else {
        if (nmodes != 1)
            return "fail needs exactly one of nth=, every, random=";
        if (!have_rv)
            return "fail needs rv=";
        if (have_seed && r.mode != M_RANDOM)
            return "seed= only goes with random=";
        if (r.mode == M_RANDOM && !have_seed)
            r.seed = (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32);
    }
    return add_rule(rs, &r) ? NULL : "out of memory";
}

/* One line (comment already cut).  Returns NULL or why it is malformed. */
static const char *parse_line(ruleset *rs, char *line, char *buf, size_t buflen)
{
    char *w[MAX_WORDS + 1], *save = NULL, *tok;
    int nw = 0;

    for (tok = strtok_r(line, " \t\r\n\v\f", &save); tok != NULL;
         tok = strtok_r(NULL, " \t\r\n\v\f", &save)) {
        if (nw == MAX_WORDS)
            return "too many words";
        w[nw++] = tok;
    }
    if (nw == 0)
        return NULL;
    if (strcmp(w[0], "fail") == 0 || strcmp(w[0], "delay") == 0)
        return parse_rule(rs, w, nw, buf, buflen);
    if (strcmp(w[0], "removed") == 0 ||
        strcmp(w[0], "invalidate-sessions") == 0) {
        if (nw != 1) {
            snprintf(buf, buflen, "%s takes no argument", w[0]);
            return buf;
        }
        if (w[0][0] == 'r')
            rs->removed = 1;
        else
            rs->invalidate = 1;
        return NULL;
    }
    if (strcmp(w[0], "token-flags") == 0) {
        uint64_t f;

        if (nw != 2 || strncmp(w[1], "0x", 2) != 0 ||
            !parse_hex(w[1] + 2, &f))
            return "token-flags takes one hex value (0x...)";
        rs->token_flags |= (CK_FLAGS)f;
        return NULL;
    }
    if (strcmp(w[0], "hide-mech") == 0) {
        unsigned long m;
        CK_MECHANISM_TYPE *n;

        if (nw != 2)
            return "hide-mech takes one mechanism";
        if (!lookup_value(ckm_names, sizeof(ckm_names) / sizeof(ckm_names[0]),
                          w[1], &m)) {
            snprintf(buf, buflen, "unknown mechanism '%.100s'", w[1]);
            return buf;
        }
        n = realloc(rs->mechs, (rs->nmechs + 1) * sizeof(*n));
        if (n == NULL)
            return "out of memory";
        rs->mechs = n;
        rs->mechs[rs->nmechs++] = m;
        return NULL;
    }
    snprintf(buf, buflen, "unknown rule '%.100s'", w[0]);
    return buf;
}

static void ruleset_clear(ruleset *rs)
{
    free(rs->rules);
    free(rs->mechs);
    rs->rules = NULL;
    rs->mechs = NULL;
    rs->nrules = rs->nmechs = 0;
    rs->removed = rs->invalidate = 0;
}

static void ruleset_free(ruleset *rs)
{
    ruleset_clear(rs);
    free(rs->text);
    free(rs);
}

static int64_t real_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t ts_ns(struct timespec ts)
{
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * 1 if no later change of the file can keep the key k: its last change is
 * older than any timestamp granularity, so the next one gets a new mtime.
 */
static int key_settled(const filekey *k)
{
    int64_t last =
        ts_ns(k->mtime) > ts_ns(k->ctime) ? ts_ns(k->mtime) : ts_ns(k->ctime);

    return k->state != 1 || real_ns() - last > SETTLE_NS;
}

/*
 * The whole file into *text (NUL-terminated).  Returns 1, 0 if there is no
 * file, -1 on another error (errno set).
 */
static int read_text(const char *path, char **text, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    *text = NULL;
    *len = 0;
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    if ((buf = malloc(cap)) == NULL) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    for (;;) {
        ssize_t r;

        if (n + 1 == cap) {
            char *bigger = cap >= MAX_FILE ? NULL : realloc(buf, cap * 2);

            if (bigger == NULL) {
                free(buf);
                close(fd);
                errno = cap >= MAX_FILE ? EFBIG : ENOMEM;
                return -1;
            }
            buf = bigger;
            cap *= 2;
        }
        r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;

            free(buf);
            close(fd);
            errno = e;
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return 1;
}

/*
 * A new rule set, succeeding prev, from the file's text (got: what
 * read_text returned, read_errno its errno; the set takes text over).  key:
 * what stat() said before the read; settled: key_settled() before the read.
 * NULL only when out of memory.
 */
static ruleset *parse_text(const char *path, const filekey *key, int settled,
                           int got, int read_errno, char *text, size_t len,
                           ruleset *prev)
{
    ruleset *rs = calloc(1, sizeof(*rs));
    char buf[300], *copy = NULL, *line, *next;
    unsigned lineno = 0;

    if (rs == NULL) {
        free(text);
        return NULL;
    }
    rs->older = prev;
    rs->key = *key;
    rs->settled = settled;
    rs->text = text;
    rs->textlen = len;
    rs->gen = __atomic_fetch_add(&next_gen, 1, __ATOMIC_RELAXED);
    rs->loaded_ns = now_ns();
    if (got < 0)
        set_error(rs, path, 0, "cannot read: %s", strerror(read_errno));
    if (got == 1 && (copy = strdup(text)) == NULL) {
        ruleset_free(rs);
        return NULL;
    }
    for (line = got == 1 ? copy : NULL; line != NULL; line = next) {
        const char *why;
        char *hash;

        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        lineno++;
        if ((hash = strchr(line, '#')) != NULL)
            *hash = '\0';
        if ((why = parse_line(rs, line, buf, sizeof(buf))) != NULL) {
            set_error(rs, path, lineno, "%s", why);
            break;
        }
    }
    if (got == 1) {
        if (rs->error[0] == '\0' && memchr(text, '\0', len) != NULL)
            set_error(rs, path, 0, "NUL byte in the file");
        free(copy);
    }
    if (rs->error[0] != '\0')
        ruleset_clear(rs);
    rs->dead_before =
        rs->removed || rs->invalidate ? rs->gen : prev->dead_before;
    return rs;
}

static void key_of(filekey *k, const struct stat *st)
{
    memset(k, 0, sizeof(*k));
    if (st == NULL)
        return; /* state 0: absent */
    k->state = 1;
    k->dev = st->st_dev;
    k->ino = st->st_ino;
    k->size = st->st_size;
    k->mtime = st->st_mtim;
    k->ctime = st->st_ctim;
}

static int key_eq(const filekey *a, const filekey *b)
{
    if (a->state != b->state)
        return 0;
    return a->state != 1 ||
           (a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
            ts_ns(a->mtime) == ts_ns(b->mtime) &&
            ts_ns(a->ctime) == ts_ns(b->ctime));
}

/*
 * The rule set in force for this call: one stat(), and a reload when the
 * file changed.  A file changed less than SETTLE_NS ago may change again
 * without a new stat() key (same inode and size, mtime within the file
 * system's timestamp granularity), so until then its text is compared too.
 */
static ruleset *rules_now(void)
{
    ruleset *cur = __atomic_load_n(&current, __ATOMIC_ACQUIRE), *n;
    struct stat st;
    filekey k;
    char *text = NULL;
    size_t len = 0;
    int got = 0, settled, read_errno = 0;

    if (control_path == NULL)
        return cur;
    key_of(&k, stat(control_path, &st) == 0 ? &st : NULL);
    if (key_eq(&k, &cur->key) &&
        (k.state != 1 || __atomic_load_n(&cur->settled, __ATOMIC_ACQUIRE)))
        return cur;
    settled = key_settled(&k);
    if (k.state == 1) {
        got = read_text(control_path, &text, &len);
        read_errno = errno;
    }
    if (key_eq(&k, &cur->key) && got == 1 && len == cur->textlen &&
        memcmp(text, cur->text, len) == 0) {
        free(text);
        if (settled)
            __atomic_store_n(&cur->settled, 1, __ATOMIC_RELEASE);
        return cur;
    }
    n = parse_text(control_path, &k, settled, got, read_errno, text, len, cur);
    if (n == NULL)
        return cur;
    if (__atomic_compare_exchange_n(&current, &cur, n, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
        if (n->error[0] != '\0') {
            fprintf(stderr, "%s\n", n->error);
            fflush(stderr);
        }
        return n;
    }
    /* Another thread installed a set first; ours was never seen. */
    ruleset_free(n);
    return cur;
}

static int mech_hidden(const ruleset *rs, CK_MECHANISM_TYPE m)
{
    for (size_t i = 0; i < rs->nmechs; i++)
        if (rs->mechs[i] == m)
            return 1;
    return 0;
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* Takes one of the rule's failures, unless max= is used up. */
static int claim(rule *r)
{
    uint64_t f = __atomic_load_n(&r->failed, __ATOMIC_RELAXED);

    do {
        if (f >= r->max)
            return 0;
    } while (!__atomic_compare_exchange_n(&r->failed, &f, f + 1, 1,
                                          __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return 1;
}

/* ---- counters ------------------------------------------------------------ */

static uint64_t local_calls[NFUNC], local_failures[NFUNC]; /* atomic */
static p11t_fault_counts_entry *shared_counts;             /* atomic */

static void count_call(int fid)
{
    p11t_fault_counts_entry *s =
        __atomic_load_n(&shared_counts, __ATOMIC_ACQUIRE);

    __atomic_fetch_add(&local_calls[fid], 1, __ATOMIC_RELAXED);
    if (s != NULL)
        __atomic_fetch_add(&s[fid].calls, 1, __ATOMIC_RELAXED);
}

/* Records an injected failure; sets *out and returns 1 (for `return`). */
static int inject(int fid, CK_RV rv, CK_RV *out)
{
    p11t_fault_counts_entry *s =
        __atomic_load_n(&shared_counts, __ATOMIC_ACQUIRE);

    __atomic_fetch_add(&local_failures[fid], 1, __ATOMIC_RELAXED);
    if (s != NULL)
        __atomic_fetch_add(&s[fid].failures, 1, __ATOMIC_RELAXED);
    *out = rv;
    return 1;
}

static unsigned long long sum_of(const uint64_t *a, const char *func)
{
    unsigned long long n = 0;
    int fid;

    if (func == NULL || strcmp(func, "*") == 0) {
        for (int i = 0; i < NFUNC; i++)
            n += __atomic_load_n(&a[i], __ATOMIC_RELAXED);
        return n;
    }
    fid = func_id(func);
    return fid < 0 ? 0 : __atomic_load_n(&a[fid], __ATOMIC_RELAXED);
}

unsigned long long p11t_fault_calls(const char *func)
{
    return sum_of(local_calls, func);
}

unsigned long long p11t_fault_failures(const char *func)
{
    return sum_of(local_failures, func);
}

/* Maps the counters file, initialising it if this process is the first. */
static void counts_setup(const char *path)
{
    size_t size =
        sizeof(p11t_fault_counts_hdr) + NFUNC * sizeof(p11t_fault_counts_entry);
    p11t_fault_counts_hdr *h;
    p11t_fault_counts_entry *e;
    struct stat st;
    void *map;
    int fd, fresh = 0;

    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "p11t_faultmod: %s: %s; counters not shared\n", path,
                strerror(errno));
        return;
    }
    while (flock(fd, LOCK_EX) != 0 && errno == EINTR)
        ;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size != size) {
        if (ftruncate(fd, 0) != 0 || ftruncate(fd, (off_t)size) != 0) {
            fprintf(stderr, "p11t_faultmod: %s: %s; counters not shared\n",
                    path, strerror(errno));
            close(fd);
            return;
        }
        fresh = 1;
    }
    map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        fprintf(stderr, "p11t_faultmod: mmap %s: %s; counters not shared\n",
                path, strerror(errno));
        close(fd);
        return;
    }
    h = map;
    e = (p11t_fault_counts_entry *)(h + 1);
    if (!fresh && (memcmp(h->magic, P11T_FAULT_COUNTS_MAGIC, 8) != 0 ||
                   h->nfuncs != NFUNC || h->entry_size != sizeof(*e))) {
        memset(map, 0, size);
        fresh = 1;
    }
    if (fresh) {
        for (int i = 0; i < NFUNC; i++)
            snprintf(e[i].name, sizeof(e[i].name), "%s", func_names[i]);
        h->nfuncs = NFUNC;
        h->entry_size = sizeof(*e);
        /* Last: other processes look at it under the same flock. */
        memcpy(h->magic, P11T_FAULT_COUNTS_MAGIC, 8);
    }
    flock(fd, LOCK_UN);
    close(fd); /* the mapping stays */
    __atomic_store_n(&shared_counts, e, __ATOMIC_RELEASE);
}

/* ---- sessions ------------------------------------------------------------ */

#define SESS_BUCKETS 256

typedef struct sess {
    struct sess *next;
    CK_SESSION_HANDLE h;
    CK_SLOT_ID slot;
    uint64_t birth; /* generation of the rule set it was opened under */
} sess;

static pthread_mutex_t sess_lock = PTHREAD_MUTEX_INITIALIZER;
static sess *sess_table[SESS_BUCKETS];

static void sess_fork_prepare(void)
{
    pthread_mutex_lock(&sess_lock);
}

static void sess_fork_release(void)
{
    pthread_mutex_unlock(&sess_lock);
}

static sess **sess_find(CK_SESSION_HANDLE h)
{
    sess **p = &sess_table[h % SESS_BUCKETS];

    while (*p != NULL && (*p)->h != h)
        p = &(*p)->next;
    return p;
}

static void sess_add(CK_SESSION_HANDLE h, CK_SLOT_ID slot, uint64_t birth)
{
    sess **p, *s;

    pthread_mutex_lock(&sess_lock);
    p = sess_find(h);
    s = *p;
    if (s == NULL && (s = calloc(1, sizeof(*s))) != NULL) {
        s->h = h;
        *p = s;
    }
    if (s != NULL) {
        s->slot = slot;
        s->birth = birth;
    }
    pthread_mutex_unlock(&sess_lock);
}

/* 1 if h is known and was born before dead_before. */
static int sess_dead(CK_SESSION_HANDLE h, uint64_t dead_before)
{
    sess *s;
    int dead;

    pthread_mutex_lock(&sess_lock);
    s = *sess_find(h);
    dead = s != NULL && s->birth < dead_before;
    pthread_mutex_unlock(&sess_lock);
    return dead;
}

/* Removes h; returns 1 with its slot and birth if it was known. */
static int sess_take(CK_SESSION_HANDLE h, CK_SLOT_ID *slot, uint64_t *birth)
{
    sess **p, *s;

    pthread_mutex_lock(&sess_lock);
    p = sess_find(h);
    s = *p;
    if (s != NULL) {
        *p = s->next;
        *slot = s->slot;
        *birth = s->birth;
    }
    pthread_mutex_unlock(&sess_lock);
    free(s);
    return s != NULL;
}

/* Forgets every session of slot (all slots if all). */
static void sess_forget(CK_SLOT_ID slot, int all)
{
    sess *gone = NULL;

    pthread_mutex_lock(&sess_lock);
    for (int i = 0; i < SESS_BUCKETS; i++) {
        sess **p = &sess_table[i];

        while (*p != NULL) {
            sess *s = *p;

            if (all || s->slot == slot) {
                *p = s->next;
                s->next = gone;
                gone = s;
            } else {
                p = &s->next;
            }
        }
    }
    pthread_mutex_unlock(&sess_lock);
    while (gone != NULL) {
        sess *n = gone->next;

        free(gone);
        gone = n;
    }
}

/* ---- the wrapped module -------------------------------------------------- */

static CK_FUNCTION_LIST *real; /* atomic; set once in setup() */
static CK_RV setup_rv = CKR_GENERAL_ERROR;
static pthread_once_t setup_once = PTHREAD_ONCE_INIT;
static CK_FUNCTION_LIST wrapper_list; /* defined at the end */

#define REAL() __atomic_load_n(&real, __ATOMIC_ACQUIRE)
#define FORWARD(name, args)                                                    \
    (REAL()->name != NULL ? REAL()->name args : CKR_FUNCTION_NOT_SUPPORTED)

static void setup(void)
{
    const char *mod = getenv("P11T_FAULT_MODULE");
    const char *ctl = getenv("P11T_FAULT_CONTROL");
    const char *counts = getenv("P11T_FAULT_COUNTS");
    CK_C_GetFunctionList getfl;
    CK_FUNCTION_LIST *fl = NULL;
    void *dl;
    CK_RV rv;

    if (mod == NULL || *mod == '\0')
        mod = DEFAULT_MODULE;
    if (ctl != NULL && *ctl != '\0')
        control_path = strdup(ctl);
    if (counts != NULL && *counts != '\0')
        counts_setup(counts);
    pthread_atfork(sess_fork_prepare, sess_fork_release, sess_fork_release);

    dl = dlopen(mod, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        const char *why = dlerror();

        fprintf(stderr, "p11t_faultmod: cannot load %s: %s\n", mod,
                why != NULL ? why : "?");
        return;
    }
    getfl = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
    if (getfl == NULL) {
        fprintf(stderr, "p11t_faultmod: %s has no C_GetFunctionList\n", mod);
        return;
    }
    rv = getfl(&fl);
    if (rv != CKR_OK || fl == NULL || fl == &wrapper_list) {
        fprintf(stderr,
                "p11t_faultmod: C_GetFunctionList of %s failed (0x%lx)%s\n",
                mod, (unsigned long)rv,
                fl == &wrapper_list ? ": it is this module" : "");
        return;
    }
    __atomic_store_n(&real, fl, __ATOMIC_RELEASE);
    setup_rv = CKR_OK;
}

/*
 * Every wrapper starts here: counts the call, finds the rules, applies the
 * fail and delay rules.  Returns 1 with *rv set when the call must return
 * *rv without being forwarded.
 */
static int enter(int fid, ruleset **rsp, CK_RV *rv)
{
    ruleset *rs;
    uint64_t delay = 0;
    int64_t age;
    rule *fired = NULL;

    count_call(fid);
    *rsp = rs = rules_now();
    if (rs->nrules == 0)
        return 0;
    age = now_ns() - rs->loaded_ns;
    for (size_t i = 0; i < rs->nrules; i++) {
        rule *r = &rs->rules[i];
        int hit = 0;

        if ((r->fid != -1 && r->fid != fid) ||
            (r->for_ns >= 0 && age >= r->for_ns))
            continue;
        if (r->type == R_DELAY) {
            delay += r->ms;
            continue;
        }
        switch (r->mode) {
        case M_NTH:
            hit = __atomic_add_fetch(&r->seen, 1, __ATOMIC_RELAXED) == r->nth;
            break;
        case M_EVERY:
            hit = 1;
            break;
        case M_RANDOM: {
            uint64_t i_ = __atomic_fetch_add(&r->seen, 1, __ATOMIC_RELAXED);
            uint64_t x = splitmix64(r->seed ^ splitmix64(i_));

            hit = (double)(x >> 11) * 0x1.0p-53 < r->p;
            break;
        }
        }
        if (hit && fired == NULL && claim(r))
            fired = r;
    }
    if (delay > 0)
        sleep_ms(delay);
    return fired != NULL ? inject(fid, fired->rv, rv) : 0;
}

/* Calls that take a session: the token's state. */
static int session_gate(int fid, const ruleset *rs, CK_SESSION_HANDLE s,
                        CK_RV *rv)
{
    if (rs->removed)
        return inject(fid, CKR_DEVICE_REMOVED, rv);
    if (rs->dead_before != 0 && sess_dead(s, rs->dead_before))
        return inject(fid, CKR_SESSION_HANDLE_INVALID, rv);
    return 0;
}

static int mech_gate(int fid, const ruleset *rs, const CK_MECHANISM *m,
                     CK_RV *rv)
{
    if (m != NULL && rs->nmechs > 0 && mech_hidden(rs, m->mechanism))
        return inject(fid, CKR_MECHANISM_INVALID, rv);
    return 0;
}

/* Calls that take a slot and need the token. */
static int slot_gate(int fid, const ruleset *rs, CK_RV *rv)
{
    return rs->removed ? inject(fid, CKR_TOKEN_NOT_PRESENT, rv) : 0;
}

/*
 * Ending the real operation after an injected failure.  A token that fails
 * C_Encrypt, C_Sign, C_DecryptUpdate... ends the session's operation
 * (PKCS#11 2.40 section 5.2), so the application may *Init again at once.
 * The wrapped module never saw the failure: we finish its operation
 * ourselves, into scratch buffers, or it would answer that next *Init with
 * CKR_OPERATION_ACTIVE.  Single-part calls are repeated for real with the
 * caller's input (always ends them); multi-part ones get their update, then
 * the *Final (best effort: a module may keep an operation whose *Final
 * fails without ending it).
 */
#define SCRATCH_MAX (16u << 20)

typedef CK_RV (*single_fn)(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG,
                           CK_BYTE_PTR, CK_ULONG_PTR);
typedef CK_RV (*final_fn)(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG_PTR);

/* fn(s, in, inl, scratch, &n), with a scratch buffer as large as asked. */
static void finish_single(single_fn fn, CK_SESSION_HANDLE s, CK_BYTE_PTR in,
                          CK_ULONG inl)
{
    CK_BYTE small[1024];
    CK_ULONG n = sizeof(small);

    if (fn != NULL && fn(s, in, inl, small, &n) == CKR_BUFFER_TOO_SMALL &&
        n <= SCRATCH_MAX) {
        CK_BYTE *big = malloc(n);

        if (big != NULL) {
            (void)fn(s, in, inl, big, &n);
            free(big);
        }
    }
}

static void finish_final(final_fn fn, CK_SESSION_HANDLE s)
{
    CK_BYTE small[1024];
    CK_ULONG n = sizeof(small);

    if (fn != NULL && fn(s, small, &n) == CKR_BUFFER_TOO_SMALL &&
        n <= SCRATCH_MAX) {
        CK_BYTE *big = malloc(n);

        if (big != NULL) {
            (void)fn(s, big, &n);
            free(big);
        }
    }
}

static void finish_verify(CK_SESSION_HANDLE s)
{
    CK_BYTE sig[64] = {0};

    if (REAL()->C_VerifyFinal != NULL)
        (void)REAL()->C_VerifyFinal(s, sig, 32);
}

/* ---- the wrappers -------------------------------------------------------- */

/* No session, no slot: only the rules. */
#define PLAIN_FN(name, params, args)                                           \
    static CK_RV w_##name params                                               \
    {                                                                          \
        ruleset *rs;                                                           \
        CK_RV rv;                                                              \
        if (enter(F_##name, &rs, &rv))                                         \
            return rv;                                                         \
        return FORWARD(name, args);                                            \
    }

/* A slot that needs the token present. */
#define SLOT_FN(name, params, args)                                            \
    static CK_RV w_##name params                                               \
    {                                                                          \
        ruleset *rs;                                                           \
        CK_RV rv;                                                              \
        if (enter(F_##name, &rs, &rv) || slot_gate(F_##name, rs, &rv))         \
            return rv;                                                         \
        return FORWARD(name, args);                                            \
    }

/* A session (always named s in params). */
#define SESSION_FN(name, params, args)                                         \
    static CK_RV w_##name params                                               \
    {                                                                          \
        ruleset *rs;                                                           \
        CK_RV rv;                                                              \
        if (enter(F_##name, &rs, &rv) || session_gate(F_##name, rs, s, &rv))   \
            return rv;                                                         \
        return FORWARD(name, args);                                            \
    }

/* A session and a mechanism (named m). */
#define MECH_FN(name, params, args)                                            \
    static CK_RV w_##name params                                               \
    {                                                                          \
        ruleset *rs;                                                           \
        CK_RV rv;                                                              \
        if (enter(F_##name, &rs, &rv) || session_gate(F_##name, rs, s, &rv) || \
            mech_gate(F_##name, rs, m, &rv))                                   \
            return rv;                                                         \
        return FORWARD(name, args);                                            \
    }

/* A session and an operation that an error ends; `finish` ends the real
 * one after an injected failure. */
#define OP_FN(name, finish, params, args)                                      \
    static CK_RV w_##name params                                               \
    {                                                                          \
        ruleset *rs;                                                           \
        CK_RV rv;                                                              \
        if (enter(F_##name, &rs, &rv)) {                                       \
            if (rv != CKR_BUFFER_TOO_SMALL && rv != CKR_OK) {                  \
                finish;                                                        \
            }                                                                  \
            return rv;                                                         \
        }                                                                      \
        if (session_gate(F_##name, rs, s, &rv))                                \
            return rv;                                                         \
        return FORWARD(name, args);                                            \
    }

static CK_RV w_C_Initialize(CK_VOID_PTR args)
{
    ruleset *rs;
    CK_RV rv;

    if (enter(F_C_Initialize, &rs, &rv))
        return rv;
    return FORWARD(C_Initialize, (args));
}

static CK_RV w_C_Finalize(CK_VOID_PTR reserved)
{
    ruleset *rs;
    CK_RV rv;

    if (enter(F_C_Finalize, &rs, &rv))
        return rv;
    rv = FORWARD(C_Finalize, (reserved));
    if (rv == CKR_OK)
        sess_forget(0, 1);
    return rv;
}

PLAIN_FN(C_GetInfo, (CK_INFO_PTR info), (info))

P11T_FAULT_EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    ruleset *rs;
    CK_RV rv;

    pthread_once(&setup_once, setup);
    if (setup_rv != CKR_OK)
        return setup_rv;
    if (enter(F_C_GetFunctionList, &rs, &rv))
        return rv;
    if (list == NULL)
        return CKR_ARGUMENTS_BAD;
    *list = &wrapper_list;
    return CKR_OK;
}

static CK_RV w_C_GetSlotList(CK_BBOOL present, CK_SLOT_ID_PTR list,
                             CK_ULONG_PTR count)
{
    ruleset *rs;
    CK_RV rv;

    if (enter(F_C_GetSlotList, &rs, &rv))
        return rv;
    if (rs->removed && present) {
        if (count == NULL)
            return CKR_ARGUMENTS_BAD;
        *count = 0;
        return CKR_OK;
    }
    return FORWARD(C_GetSlotList, (present, list, count));
}

static CK_RV w_C_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info)
{
    ruleset *rs;
    CK_RV rv;

    if (enter(F_C_GetSlotInfo, &rs, &rv))
        return rv;
    rv = FORWARD(C_GetSlotInfo, (slot, info));
    if (rv == CKR_OK && rs->removed && info != NULL)
        info->flags &= ~(CK_FLAGS)CKF_TOKEN_PRESENT;
    return rv;
}

static CK_RV w_C_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
    ruleset *rs;
    CK_RV rv;

    if (enter(F_C_GetTokenInfo, &rs, &rv) ||
        slot_gate(F_C_GetTokenInfo, rs, &rv))
        return rv;
    rv = FORWARD(C_GetTokenInfo, (slot, info));
    if (rv == CKR_OK && info != NULL)
        info->flags |= rs->token_flags;
    return rv;
}

static CK_RV w_C_GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list,
                                  CK_ULONG_PTR count)
{
    CK_MECHANISM_TYPE *all = NULL;
    CK_ULONG n = 0, kept = 0;
    ruleset *rs;
    CK_RV rv;

    if (enter(F_C_GetMechanismList, &rs, &rv) ||
        slot_gate(F_C_GetMechanismList, rs, &rv))
        return rv;
    if (rs->nmechs == 0 || count == NULL)
        return FORWARD(C_GetMechanismList, (slot, list, count));
    /* Fetch the whole list, drop the hidden ones, answer from the rest. */
    for (;;) {
        rv = FORWARD(C_GetMechanismList, (slot, NULL, &n));
        if (rv != CKR_OK)
            return rv;
        free(all);
        all = malloc((n + 1) * sizeof(*all));
        if (all == NULL)
            return CKR_HOST_MEMORY;
        rv = FORWARD(C_GetMechanismList, (slot, all, &n));
        if (rv != CKR_BUFFER_TOO_SMALL)
            break;
    }
    if (rv != CKR_OK) {
        free(all);
        return rv;
    }
    for (CK_ULONG i = 0; i < n; i++)
        if (!mech_hidden(rs, all[i]))
            all[kept++] = all[i];
    if (list == NULL) {
        rv = CKR_OK;
    } else if (*count < kept) {
        rv = CKR_BUFFER_TOO_SMALL;
    } else {
        memcpy(list, all, kept * sizeof(*all));
        rv = CKR_OK;
    }
    *count = kept;
    free(all);
    return rv;
}

static CK_RV w_C_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type,
                                  CK_MECHANISM_INFO_PTR info)
{
    ruleset *rs;
    CK_RV rv;

    if (enter(F_C_GetMechanismInfo, &rs, &rv) ||
        slot_gate(F_C_GetMechanismInfo, rs, &rv))
        return rv;
    if (rs->nmechs > 0 && mech_hidden(rs, type)) {
        inject(F_C_GetMechanismInfo, CKR_MECHANISM_INVALID, &rv);
        return rv;
    }
    return FORWARD(C_GetMechanismInfo, (slot, type, info));
}

SLOT_FN(C_InitToken,
        (CK_SLOT_ID slot, CK_UTF8CHAR_PTR pin, CK_ULONG len,
         CK_UTF8CHAR_PTR label),
        (slot, pin, len, label))
SESSION_FN(C_InitPIN, (CK_SESSION_HANDLE s, CK_UTF8CHAR_PTR pin, CK_ULONG len),
           (s, pin, len))
SESSION_FN(C_SetPIN,
           (CK_SESSION_HANDLE s, CK_UTF8CHAR_PTR old, CK_ULONG oldlen,
            CK_UTF8CHAR_PTR new_pin, CK_ULONG newlen),
           (s, old, oldlen, new_pin, newlen))

static CK_RV w_C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app,
                             CK_NOTIFY notify, CK_SESSION_HANDLE_PTR out)
{
    ruleset *rs;
    CK_RV rv;

    if (enter(F_C_OpenSession, &rs, &rv) || slot_gate(F_C_OpenSession, rs, &rv))
        return rv;
    rv = FORWARD(C_OpenSession, (slot, flags, app, notify, out));
    if (rv == CKR_OK && out != NULL)
        sess_add(*out, slot, rs->gen);
    return rv;
}

static CK_RV w_C_CloseSession(CK_SESSION_HANDLE s)
{
    CK_SLOT_ID slot = 0;
    uint64_t birth = 0;
    int known;
    ruleset *rs;
    CK_RV rv;

    if (enter(F_C_CloseSession, &rs, &rv))
        return rv;
    /* Forget it before the real close: once that returns, the wrapped
     * module may hand the same handle to another thread's new session. */
    known = sess_take(s, &slot, &birth);
    rv = FORWARD(C_CloseSession, (s));
    if (rs->removed) {
        inject(F_C_CloseSession, CKR_DEVICE_REMOVED, &rv);
        return rv;
    }
    if (known && birth < rs->dead_before) {
        inject(F_C_CloseSession, CKR_SESSION_HANDLE_INVALID, &rv);
        return rv;
    }
    if (known && rv != CKR_OK && rv != CKR_SESSION_HANDLE_INVALID &&
        rv != CKR_SESSION_CLOSED)
        sess_add(s, slot, birth); /* still open */
    return rv;
}

static CK_RV w_C_CloseAllSessions(CK_SLOT_ID slot)
{
    ruleset *rs;
    CK_RV rv;

    if (enter(F_C_CloseAllSessions, &rs, &rv))
        return rv;
    sess_forget(slot, 0);
    rv = FORWARD(C_CloseAllSessions, (slot));
    if (rs->removed) {
        inject(F_C_CloseAllSessions, CKR_TOKEN_NOT_PRESENT, &rv);
        return rv;
    }
    return rv;
}

SESSION_FN(C_GetSessionInfo, (CK_SESSION_HANDLE s, CK_SESSION_INFO_PTR info),
           (s, info))
SESSION_FN(C_GetOperationState,
           (CK_SESSION_HANDLE s, CK_BYTE_PTR state, CK_ULONG_PTR len),
           (s, state, len))
SESSION_FN(C_SetOperationState,
           (CK_SESSION_HANDLE s, CK_BYTE_PTR state, CK_ULONG len,
            CK_OBJECT_HANDLE ek, CK_OBJECT_HANDLE ak),
           (s, state, len, ek, ak))
SESSION_FN(C_Login,
           (CK_SESSION_HANDLE s, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin,
            CK_ULONG len),
           (s, user, pin, len))
SESSION_FN(C_Logout, (CK_SESSION_HANDLE s), (s))
SESSION_FN(C_CreateObject,
           (CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR t, CK_ULONG n,
            CK_OBJECT_HANDLE_PTR o),
           (s, t, n, o))
SESSION_FN(C_CopyObject,
           (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t,
            CK_ULONG n, CK_OBJECT_HANDLE_PTR out),
           (s, o, t, n, out))
SESSION_FN(C_DestroyObject, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o), (s, o))
SESSION_FN(C_GetObjectSize,
           (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ULONG_PTR size),
           (s, o, size))
SESSION_FN(C_GetAttributeValue,
           (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t,
            CK_ULONG n),
           (s, o, t, n))
SESSION_FN(C_SetAttributeValue,
           (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t,
            CK_ULONG n),
           (s, o, t, n))
SESSION_FN(C_FindObjectsInit,
           (CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR t, CK_ULONG n), (s, t, n))
SESSION_FN(C_FindObjects,
           (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE_PTR o, CK_ULONG max,
            CK_ULONG_PTR n),
           (s, o, max, n))
SESSION_FN(C_FindObjectsFinal, (CK_SESSION_HANDLE s), (s))

MECH_FN(C_EncryptInit,
        (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k),
        (s, m, k))
OP_FN(C_Encrypt, finish_single(REAL()->C_Encrypt, s, in, inl),
      (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inl, CK_BYTE_PTR out,
       CK_ULONG_PTR outl),
      (s, in, inl, out, outl))
OP_FN(C_EncryptUpdate,
      (finish_single(REAL()->C_EncryptUpdate, s, in, inl),
       finish_final(REAL()->C_EncryptFinal, s)),
      (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inl, CK_BYTE_PTR out,
       CK_ULONG_PTR outl),
      (s, in, inl, out, outl))
OP_FN(C_EncryptFinal, finish_final(REAL()->C_EncryptFinal, s),
      (CK_SESSION_HANDLE s, CK_BYTE_PTR out, CK_ULONG_PTR outl), (s, out, outl))
MECH_FN(C_DecryptInit,
        (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k),
        (s, m, k))
OP_FN(C_Decrypt, finish_single(REAL()->C_Decrypt, s, in, inl),
      (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inl, CK_BYTE_PTR out,
       CK_ULONG_PTR outl),
      (s, in, inl, out, outl))
OP_FN(C_DecryptUpdate,
      (finish_single(REAL()->C_DecryptUpdate, s, in, inl),
       finish_final(REAL()->C_DecryptFinal, s)),
      (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inl, CK_BYTE_PTR out,
       CK_ULONG_PTR outl),
      (s, in, inl, out, outl))
OP_FN(C_DecryptFinal, finish_final(REAL()->C_DecryptFinal, s),
      (CK_SESSION_HANDLE s, CK_BYTE_PTR out, CK_ULONG_PTR outl), (s, out, outl))
MECH_FN(C_DigestInit, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m), (s, m))
OP_FN(C_Digest, finish_single(REAL()->C_Digest, s, in, inl),
      (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inl, CK_BYTE_PTR out,
       CK_ULONG_PTR outl),
      (s, in, inl, out, outl))
OP_FN(C_DigestUpdate,
      ((void)FORWARD(C_DigestUpdate, (s, in, inl)),
       finish_final(REAL()->C_DigestFinal, s)),
      (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inl), (s, in, inl))
OP_FN(C_DigestKey,
      ((void)FORWARD(C_DigestKey, (s, k)),
       finish_final(REAL()->C_DigestFinal, s)),
      (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE k), (s, k))
OP_FN(C_DigestFinal, finish_final(REAL()->C_DigestFinal, s),
      (CK_SESSION_HANDLE s, CK_BYTE_PTR out, CK_ULONG_PTR outl), (s, out, outl))
MECH_FN(C_SignInit,
        (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k),
        (s, m, k))
OP_FN(C_Sign, finish_single(REAL()->C_Sign, s, in, inl),
      (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inl, CK_BYTE_PTR out,
       CK_ULONG_PTR outl),
      (s, in, inl, out, outl))
OP_FN(C_SignUpdate,
      ((void)FORWARD(C_SignUpdate, (s, in, inl)),
       finish_final(REAL()->C_SignFinal, s)),
      (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inl), (s, in, inl))
OP_FN(C_SignFinal, finish_final(REAL()->C_SignFinal, s),
      (CK_SESSION_HANDLE s, CK_BYTE_PTR out, CK_ULONG_PTR outl), (s, out, outl))
MECH_FN(C_SignRecoverInit,
        (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k),
        (s, m, k))
OP_FN(C_SignRecover, finish_single(REAL()->C_SignRecover, s, in, inl),
      (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inl, CK_BYTE_PTR out,
       CK_ULONG_PTR outl),
      (s, in, inl, out, outl))
MECH_FN(C_VerifyInit,
        (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k),
        (s, m, k))
OP_FN(C_Verify, (void)FORWARD(C_Verify, (s, in, inl, sig, sigl)),
      (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inl, CK_BYTE_PTR sig,
       CK_ULONG sigl),
      (s, in, inl, sig, sigl))
OP_FN(C_VerifyUpdate,
      ((void)FORWARD(C_VerifyUpdate, (s, in, inl)), finish_verify(s)),
      (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inl), (s, in, inl))
OP_FN(C_VerifyFinal, (void)FORWARD(C_VerifyFinal, (s, sig, sigl)),
      (CK_SESSION_HANDLE s, CK_BYTE_PTR sig, CK_ULONG sigl), (s, sig, sigl))
MECH_FN(C_VerifyRecoverInit,
        (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k),
        (s, m, k))
OP_FN(C_VerifyRecover, finish_single(REAL()->C_VerifyRecover, s, sig, sigl),
      (CK_SESSION_HANDLE s, CK_BYTE_PTR sig, CK_ULONG sigl, CK_BYTE_PTR out,
       CK_ULONG_PTR outl),
      (s, sig, sigl, out, outl))
SESSION_FN(C_DigestEncryptUpdate,
           (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inl, CK_BYTE_PTR out,
            CK_ULONG_PTR outl),
           (s, in, inl, out, outl))
SESSION_FN(C_DecryptDigestUpdate,
           (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inl, CK_BYTE_PTR out,
            CK_ULONG_PTR outl),
           (s, in, inl, out, outl))
SESSION_FN(C_SignEncryptUpdate,
           (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inl, CK_BYTE_PTR out,
            CK_ULONG_PTR outl),
           (s, in, inl, out, outl))
SESSION_FN(C_DecryptVerifyUpdate,
           (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inl, CK_BYTE_PTR out,
            CK_ULONG_PTR outl),
           (s, in, inl, out, outl))
MECH_FN(C_GenerateKey,
        (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR t,
         CK_ULONG n, CK_OBJECT_HANDLE_PTR k),
        (s, m, t, n, k))
MECH_FN(C_GenerateKeyPair,
        (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pubt,
         CK_ULONG pubn, CK_ATTRIBUTE_PTR privt, CK_ULONG privn,
         CK_OBJECT_HANDLE_PTR pub, CK_OBJECT_HANDLE_PTR priv),
        (s, m, pubt, pubn, privt, privn, pub, priv))
MECH_FN(C_WrapKey,
        (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE wk,
         CK_OBJECT_HANDLE k, CK_BYTE_PTR out, CK_ULONG_PTR outl),
        (s, m, wk, k, out, outl))
MECH_FN(C_UnwrapKey,
        (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE uk,
         CK_BYTE_PTR in, CK_ULONG inl, CK_ATTRIBUTE_PTR t, CK_ULONG n,
         CK_OBJECT_HANDLE_PTR k),
        (s, m, uk, in, inl, t, n, k))
MECH_FN(C_DeriveKey,
        (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE base,
         CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k),
        (s, m, base, t, n, k))
SESSION_FN(C_SeedRandom, (CK_SESSION_HANDLE s, CK_BYTE_PTR seed, CK_ULONG len),
           (s, seed, len))
SESSION_FN(C_GenerateRandom,
           (CK_SESSION_HANDLE s, CK_BYTE_PTR out, CK_ULONG len), (s, out, len))
SESSION_FN(C_GetFunctionStatus, (CK_SESSION_HANDLE s), (s))
SESSION_FN(C_CancelFunction, (CK_SESSION_HANDLE s), (s))
PLAIN_FN(C_WaitForSlotEvent,
         (CK_FLAGS flags, CK_SLOT_ID_PTR slot, CK_VOID_PTR reserved),
         (flags, slot, reserved))

static CK_FUNCTION_LIST wrapper_list = {.version = {2, 40},
#define X(n) .n = w_##n,
#define w_C_GetFunctionList C_GetFunctionList
                                        P11T_FUNCS(X)
#undef w_C_GetFunctionList
#undef X
};
