/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hsm.h - the PKCS#11 layer of p11ticket.
 *
 * Everything that talks to the token lives behind this header: module
 * loading, token selection by RFC 7512 URI, PIN sources, lazy
 * initialisation with retries, a session pool, the handle cache keyed by the
 * 16-byte key name, fork re-initialisation and key provisioning.
 *
 * Return conventions, one per family:
 *  - functions that can fail for a reason (everything that touches the
 *    token, the configuration setters and checks, PIN sources, the config
 *    file reader) return CK_RV: CKR_OK, or a PKCS#11 or P11T_CKR_* code with
 *    a p11t_err filled in.  A p11t_err carries a one-line, secret-free
 *    message that names the configuration key at fault; callers convert it
 *    to their own convention exactly once (provider: ERR_raise; tool:
 *    stderr);
 *  - predicates and getters return int 1 (yes) / 0 (no), or the value;
 *  - the pure helpers that build something (rotation plan, fold) return 0
 *    on success and -1 on bad input or no memory; the parsers return 1 when
 *    the input was valid and 0 when not (p11t_label_parse,
 *    p11t_parse_duration, p11t_unhex); p11t_label_format returns the length
 *    written or -1, and p11t_lifecycle_pick the index or -1 for none.
 */
#ifndef P11T_HSM_H
#define P11T_HSM_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

#define P11T_NAME_LEN 16
#define P11T_HMAC_LEN 32
#define P11T_IV_LEN 16

/* Vendor-defined CK_RV values for failures that are not PKCS#11 errors. */
#define P11T_CKR_CONFIG (CKR_VENDOR_DEFINED | 0x7031u)      /* bad config value */
#define P11T_CKR_NO_TOKEN (CKR_VENDOR_DEFINED | 0x7032u)    /* URI matches no token */
#define P11T_CKR_UNKNOWN_KEY (CKR_VENDOR_DEFINED | 0x7033u) /* no such key name */
#define P11T_CKR_NO_ACTIVE_KEY (CKR_VENDOR_DEFINED | 0x7034u)
#define P11T_CKR_BACKOFF (CKR_VENDOR_DEFINED | 0x7035u)     /* init failed recently */

typedef struct p11t_err {
    CK_RV rv;
    char msg[320];
} p11t_err;

/* Record an error (printf-style); keeps the first error if already set. */
void p11t_err_set(p11t_err *err, CK_RV rv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void p11t_err_clear(p11t_err *err);
/* Short symbolic name of a CK_RV, e.g. "CKR_PIN_INCORRECT". */
const char *p11t_rv_name(CK_RV rv);

/* ---- configuration (the openssl.cnf provider section) ------------------ */

typedef struct p11t_config p11t_config;

p11t_config *p11t_config_new(void);
void p11t_config_free(p11t_config *cfg);
/*
 * Set one key from the provider section.  The first error is also kept in
 * cfg and returned by every later p11t_hsm_ready().  Unknown keys that belong to
 * OpenSSL itself (module, activate, identity, ...) are ignored; unknown keys
 * that look like ours are an error.  Values are validated syntactically
 * here (URI, pin-source form, numbers); nothing is opened or loaded.
 * Returns CKR_OK or P11T_CKR_CONFIG with err naming the key.
 */
CK_RV p11t_config_set(p11t_config *cfg, const char *key, const char *value,
                      p11t_err *err);
/* Records a configuration error found outside p11t_config_set() (for
 * example a provider section OpenSSL could not hand over). */
void p11t_config_fail(p11t_config *cfg, const char *msg);
/* Checks that the required keys are present. */
CK_RV p11t_config_check(p11t_config *cfg, p11t_err *err);
/* Configured refresh interval in seconds (key "refresh-interval"). */
unsigned p11t_config_refresh_interval(const p11t_config *cfg);

/*
 * Whether the provider, loaded into the default library context from
 * openssl.cnf, installs the ticket callback on every SSL_CTX the process
 * creates (auto-enable, default yes).
 */
int p11t_config_auto_enable(const p11t_config *cfg);

/* The provider-section keys p11ticket understands, NULL-terminated. */
extern const char *const p11t_config_keys[];

/* Whether operations use session copies of the token keys
 * (session-copies, default yes). */
int p11t_config_session_copies(const p11t_config *cfg);

/*
 * How the token computes the ticket's AES-CBC (key aes-mechanism).  The
 * ticket format is the same either way: AES-CBC, PKCS#7 padding, the IV
 * libssl gives.
 *  - CBC_PAD: CKM_AES_CBC_PAD, one C_Encrypt or C_Decrypt per ticket.
 *  - ECB: CBC built on CKM_AES_ECB, for tokens that do not offer CBC
 *    (p11-kit 0.24's client module, docs/design.md, "p11-kit remoting"):
 *    the chaining XOR and the padding happen in the process, on values
 *    computable from the plaintext and the ciphertext; the key stays in
 *    the token.
 * AUTO is a configuration value only: CBC_PAD if the token offers it, else
 * ECB, decided at every login.  A ticket cipher other than CBC (a mode per
 * generation) would be a separate decision next to this one.
 */
typedef enum {
    P11T_AES_MECH_AUTO = 0,
    P11T_AES_MECH_CBC_PAD = 1,
    P11T_AES_MECH_ECB = 2
} p11t_aes_mech;

/* aes-mechanism (default auto). */
p11t_aes_mech p11t_config_aes_mechanism(const p11t_config *cfg);
/* "auto", "cbc-pad" or "ecb", as the configuration spells it. */
const char *p11t_aes_mech_name(p11t_aes_mech m);

/*
 * The provider section of an openssl.cnf, for programs that read the file
 * themselves (setup tool, bench): OpenSSL's own path openssl_conf ->
 * [init] providers -> [providers] NAME -> section, each section's own
 * values only.  p11t_conffile_load() fills *out with the parsed file, the
 * section's name and a p11t_config of its keys that passed
 * p11t_config_check().  On failure (P11T_CKR_CONFIG, CKR_HOST_MEMORY, or
 * the config's own code) err names the file, the section and the key, and
 * *out is empty.
 */
typedef struct p11t_conffile {
    struct conf_st *conf; /* CONF * */
    const char *section;  /* inside conf */
    p11t_config *cfg;     /* the caller may take it (set to NULL) */
} p11t_conffile;

CK_RV p11t_conffile_load(const char *file, const char *provider,
                         p11t_conffile *out, p11t_err *err);
/* Raw value of a key in the provider section, or NULL. */
const char *p11t_conffile_value(const p11t_conffile *f, const char *key);
/* Raw value of a key in any section of conf (exact, no default fallback). */
const char *p11t_conffile_lookup(const struct conf_st *conf,
                                 const char *section, const char *key);
void p11t_conffile_free(p11t_conffile *f);

/*
 * Read a PIN from a pin-source value ("file:/path", "env:VAR").  The file
 * must be a regular file owned by the process's user or root that neither
 * group nor others can access.  The PIN is its first line.  A PIN held by
 * p11t_pin_preload() for the same source is returned without reading
 * again.  On success *pin is a NUL-terminated buffer; release it with
 * p11t_pin_free() (cleansed).  The PIN never appears in err.
 */
CK_RV p11t_pin_read(const char *source, char **pin, size_t *pin_len,
                    p11t_err *err);
void p11t_pin_free(char *pin, size_t pin_len);
/*
 * Read the PIN of source now and hold it for the life of the process in
 * locked, never-dumped memory that is cleansed at exit; forked children
 * inherit it.  For servers that load their configuration with privileges
 * they later drop.  An env: variable is wiped from the environment once
 * held.  "prompt" holds nothing.  CKR_OK, or the read's error.
 */
CK_RV p11t_pin_preload(const char *source, p11t_err *err);

/* ---- key metadata stored in CKA_LABEL ----------------------------------- */

/*
 * A key generation is an AES object and an HMAC (CKK_GENERIC_SECRET) object
 * sharing one 16-byte CKA_ID.  Lifecycle times live in CKA_LABEL, because
 * SoftHSM cannot read CKA_START_DATE/CKA_END_DATE back on private keys:
 *   "p11ticket/1 aes ef=<unix> eu=<unix|-> du=<unix|->"
 *   "p11ticket/1 hmac ef=... eu=... du=..."
 * ef: encrypt-from, eu: encrypt-until, du: decrypt-until; "-" = never.
 */
#define P11T_TIME_NEVER INT64_MAX

typedef enum { P11T_ROLE_AES = 1, P11T_ROLE_HMAC = 2 } p11t_role;

typedef struct p11t_times {
    int64_t encrypt_from;
    int64_t encrypt_until; /* P11T_TIME_NEVER if open-ended */
    int64_t decrypt_until; /* P11T_TIME_NEVER if open-ended */
} p11t_times;

/* Parse a label; returns 1 and fills role/times, or 0 if it is not ours or
 * is malformed (never reads past len). */
int p11t_label_parse(const char *label, size_t len, p11t_role *role,
                     p11t_times *times);
/* Format a label; returns the length written (excluding NUL) or -1. */
int p11t_label_format(char *buf, size_t buflen, p11t_role role,
                      const p11t_times *times);

/* ---- lifecycle (pure; takes its clock as a parameter) ------------------- */

typedef enum {
    P11T_STATE_PENDING = 1,      /* decrypt, never encrypt (yet) */
    P11T_STATE_ACTIVE = 2,       /* may encrypt */
    P11T_STATE_DECRYPT_ONLY = 3, /* decrypt and renew */
    P11T_STATE_EXPIRED = 4       /* refuse */
} p11t_state;

p11t_state p11t_lifecycle_state(const p11t_times *t, int64_t now);
const char *p11t_state_name(p11t_state s);

typedef struct p11t_keyinfo {
    uint8_t name[P11T_NAME_LEN];
    p11t_times times;
    int has_aes, has_hmac;      /* 1 present, 0 absent, -1 present twice */
    CK_ULONG aes_len, hmac_len; /* CKA_VALUE_LEN in bytes */
    CK_OBJECT_HANDLE aes_obj, hmac_obj; /* token objects (when has_* == 1) */
} p11t_keyinfo;

/*
 * Index of the key that encrypts at `now`, or -1.  Among complete ACTIVE
 * generations the latest encrypt_from wins; ties go to the
 * lexicographically greatest name, so every server holding the same token
 * contents agrees.
 */
int p11t_lifecycle_pick(const p11t_keyinfo *keys, size_t n, int64_t now);
/* The pick's order: 1 if k encrypts in preference to best (best may be
 * NULL).  Both are assumed complete and active. */
int p11t_lifecycle_better(const p11t_keyinfo *k, const p11t_keyinfo *best);
/* a + b for times, saturating below P11T_TIME_NEVER; NEVER stays NEVER. */
int64_t p11t_time_add(int64_t a, int64_t b);

/* ---- rotation planning (pure) -------------------------------------------- */

typedef struct p11t_policy {
    int64_t encrypt_for; /* seconds a generation encrypts */
    int64_t decrypt_for; /* seconds it still decrypts afterwards */
    int64_t lead;        /* a successor exists this long before it is needed */
} p11t_policy;

#define P11T_PLAN_MAX_CREATE 8

typedef struct p11t_plan {
    size_t n_create;
    p11t_times create[P11T_PLAN_MAX_CREATE];
    size_t n_destroy;
    uint8_t (*destroy)[P11T_NAME_LEN]; /* malloc'd; p11t_plan_free() */
    const char *destroy_why[64];       /* reason per name, first 64 only */
} p11t_plan;

/*
 * What `rotate` must do so that an active key exists now, a successor
 * exists `lead` seconds ahead of the moment it is needed, and expired
 * generations disappear.  Deterministic in (keys, now, policy): every host
 * computes the same successor times (they chain from the current key's
 * encrypt_until), so racing rotators create generations with identical
 * times whose order is settled by p11t_lifecycle_pick's name tie-break.
 * Returns 0 on success, -1 on bad arguments or allocation failure.
 */
int p11t_rotate_plan(const p11t_keyinfo *keys, size_t n, int64_t now,
                     const p11t_policy *policy, p11t_plan *plan);
void p11t_plan_free(p11t_plan *plan);
/* Parses "90", "15s", "90m", "12h", "7d" into seconds; 0 on error. */
int p11t_parse_duration(const char *s, int64_t *out);
/* Rotation policy from the section (encrypt-for, decrypt-for, rotate-lead;
 * defaults 12h, 24h, 1h) and whether auto-rotate is on. */
void p11t_config_policy(const p11t_config *cfg, p11t_policy *out);
int p11t_config_auto_rotate(const p11t_config *cfg);

/* ---- the token handle ---------------------------------------------------- */

typedef struct p11t_hsm p11t_hsm;

/* Takes ownership of cfg (freed by p11t_hsm_free, even on error). Nothing is
 * loaded until the first operation. */
CK_RV p11t_hsm_new(p11t_config *cfg, p11t_hsm **out, p11t_err *err);
void p11t_hsm_free(p11t_hsm *h);
/* p11t_pin_preload() of the configured pin-source; nothing else is touched.
 * The provider calls it from OSSL_provider_init. */
CK_RV p11t_hsm_preload_pin(p11t_hsm *h, p11t_err *err);

/*
 * Lazy initialisation: load the module, find the token, open a session and
 * log in, retrying transient failures with backoff (never after
 * CKR_PIN_INCORRECT/LOCKED/EXPIRED).  After a failure, further calls return
 * P11T_CKR_BACKOFF with the original message until the backoff expires; a
 * PIN error is permanent.  Re-initialises in a forked child.  Once the
 * token was up in this process, a thread that finds another one
 * reconnecting returns P11T_CKR_BACKOFF at once instead of waiting.
 */
CK_RV p11t_hsm_ready(p11t_hsm *h, p11t_err *err);

/*
 * PIN prompt for interactive tools only.  With a callback set, the
 * pin-source value "prompt" is accepted and the callback is asked for the
 * PIN (buf has room for len bytes including NUL; return the PIN length or
 * -1).  The provider never sets one, so a server never prompts.
 */
typedef int (*p11t_pin_prompt_fn)(char *buf, size_t len, void *arg);
void p11t_hsm_set_pin_prompt(p11t_hsm *h, p11t_pin_prompt_fn fn, void *arg);

/* The mechanism the last login chose (CBC_PAD or ECB), or AUTO before the
 * first successful login. */
p11t_aes_mech p11t_hsm_aes_mechanism(p11t_hsm *h);
uint64_t p11t_hsm_error_count(p11t_hsm *h);

/* Name of the key that encrypts at `now` (refreshing if none cached). */
CK_RV p11t_hsm_current(p11t_hsm *h, int64_t now,
                       uint8_t name[static P11T_NAME_LEN], p11t_err *err);

/*
 * A key resolved once for one EVP context: the cached facts and the object
 * handles its operations use, so a ticket looks its key up once instead of
 * once per token call.  A reference is only used while the cache it came
 * from is the live one (same scan, same module instance); after a rescan,
 * a rotation or a re-initialisation the next operation resolves it again
 * by name, so it never outlives the cache's own refresh bound.
 */
typedef struct p11t_keyref {
    p11t_keyinfo info;                  /* info.name is the key's name */
    CK_OBJECT_HANDLE aes_op, hmac_op;   /* what the operations use */
    uint64_t gen;                       /* cache generation; 0 = unresolved */
    unsigned epoch;                     /* module instance it belongs to */
} p11t_keyref;

/* An unresolved reference to `name`; the first operation resolves it. */
void p11t_keyref_set_name(p11t_keyref *ref,
                          const uint8_t name[static P11T_NAME_LEN]);
/* Resolve a named key; P11T_CKR_UNKNOWN_KEY after one rate-limited rescan
 * if the name is not on the token. */
CK_RV p11t_hsm_resolve(p11t_hsm *h, const uint8_t name[static P11T_NAME_LEN],
                       p11t_keyref *ref, p11t_err *err);
/* Resolve the key that encrypts at `now`. */
CK_RV p11t_hsm_resolve_current(p11t_hsm *h, int64_t now, p11t_keyref *ref,
                               p11t_err *err);
/* 1 if ref is the key that encrypts at `now` (cached answer, no scan). */
int p11t_hsm_is_current(p11t_hsm *h, const p11t_keyref *ref, int64_t now);

/*
 * AES-CBC with PKCS#7 padding under the referenced key, by the mechanism
 * the login chose (p11t_aes_mech).  *outl is the capacity on input and the
 * length written on output.  Decryption of a ciphertext whose padding is
 * wrong fails (CKR_ENCRYPTED_DATA_INVALID on the ECB path; SoftHSM's
 * CBC_PAD answers CKR_GENERAL_ERROR), as does one that is not a positive
 * multiple of 16 bytes.
 */
CK_RV p11t_hsm_encrypt(p11t_hsm *h, p11t_keyref *ref,
                       const uint8_t iv[static P11T_IV_LEN], const uint8_t *in,
                       size_t inl, uint8_t *out, size_t *outl, p11t_err *err);
CK_RV p11t_hsm_decrypt(p11t_hsm *h, p11t_keyref *ref,
                       const uint8_t iv[static P11T_IV_LEN], const uint8_t *in,
                       size_t inl, uint8_t *out, size_t *outl, p11t_err *err);
/* CKM_SHA256_HMAC with the referenced key. */
CK_RV p11t_hsm_hmac(p11t_hsm *h, p11t_keyref *ref, const uint8_t *in,
                    size_t inl, uint8_t out[static P11T_HMAC_LEN],
                    p11t_err *err);

/* ---- provisioning (setup tool) ------------------------------------------ */

/*
 * Generate one key generation in the token: AES (aes_len bytes, 16 or 32)
 * and a 32-byte CKK_GENERIC_SECRET HMAC key, both CKA_TOKEN, CKA_PRIVATE,
 * CKA_SENSITIVE true and CKA_EXTRACTABLE false, sharing a fresh random
 * 16-byte CKA_ID.  Either both objects exist afterwards or neither.
 */
CK_RV p11t_hsm_create(p11t_hsm *h, CK_ULONG aes_len, const p11t_times *times,
                      uint8_t name_out[static P11T_NAME_LEN], p11t_err *err);

/* Attributes of one token object, as `list` shows them (never the value). */
typedef struct p11t_objinfo {
    uint8_t name[P11T_NAME_LEN];
    p11t_role role;
    p11t_times times;
    CK_KEY_TYPE key_type;
    CK_ULONG value_len;
    CK_BBOOL token, priv, sensitive, extractable, always_sensitive,
        never_extractable;
    int value_readable; /* 1 if C_GetAttributeValue(CKA_VALUE) succeeded */
    CK_OBJECT_HANDLE handle;
} p11t_objinfo;

/*
 * Folds objects into generations, exactly as the servers' handle cache does:
 * an AES object counts if it is CKK_AES of 16 or 32 bytes, an HMAC object
 * if it is CKK_GENERIC_SECRET/CKK_SHA256_HMAC of at least 16 bytes; a role
 * present twice is marked -1 (ambiguous, never used); when the two labels
 * disagree the stricter times win.  Generations made only of unusable
 * objects are listed too (incomplete), so they can be cleaned up.  Pure;
 * *out is malloc'd.  Returns 0, or -1 on bad arguments / no memory.
 */
int p11t_fold_generations(const p11t_objinfo *objs, size_t n,
                          p11t_keyinfo **out, size_t *n_out);

/* Every p11ticket object on the token; *objs is malloc'd, free() it. */
CK_RV p11t_hsm_list(p11t_hsm *h, p11t_objinfo **objs, size_t *n, p11t_err *err);

/* Destroy both objects of a generation. */
CK_RV p11t_hsm_destroy(p11t_hsm *h, const uint8_t name[static P11T_NAME_LEN],
                       p11t_err *err);

/* Rewrite the lifecycle times of both objects of a generation (retire). */
CK_RV p11t_hsm_set_times(p11t_hsm *h, const uint8_t name[static P11T_NAME_LEN],
                         const p11t_times *times, p11t_err *err);

/*
 * Import existing key material (migration from key files) as a generation
 * named `name`: C_CreateObject with CKA_SENSITIVE true, CKA_EXTRACTABLE
 * false.  hmac_len may be 16..64; a 16-byte HMAC key is stored zero-padded
 * to 32 bytes, which gives the same HMAC (keys shorter than the block size
 * are zero-padded by HMAC itself; SoftHSM rejects HMAC keys under 32
 * bytes).  Either both objects exist afterwards or neither.  The caller
 * cleanses its copies.
 */
CK_RV p11t_hsm_import(p11t_hsm *h, const uint8_t name[static P11T_NAME_LEN],
                      const uint8_t *aes, size_t aes_len, const uint8_t *hmac,
                      size_t hmac_len, const p11t_times *times, p11t_err *err);

/* ---- slots and tokens (setup tool: `tokens`; hsm/slots.c) ---------------- */

/* One slot of the module, as C_GetSlotInfo and C_GetTokenInfo describe it. */
typedef struct p11t_slotinfo {
    CK_SLOT_ID id;
    CK_SLOT_INFO slot;   /* zeroed if C_GetSlotInfo failed */
    CK_RV token_rv;      /* C_GetTokenInfo's answer; CKR_TOKEN_NOT_PRESENT
                          * when the slot reports no token */
    CK_TOKEN_INFO token; /* valid when token_rv == CKR_OK */
    int selected;        /* token-uri selects this token, as the login's
                          * slot search would */
} p11t_slotinfo;

/*
 * Every slot of the configured pkcs11-module, with or without a token, and
 * which tokens token-uri selects (an initialised token whose token and slot
 * information match the URI, in its slot-id if it names one).  Loads and
 * initialises the module, but opens no session and never logs in, so no
 * PIN is read; h's own state is not touched.  *slots is malloc'd, free() it.
 * CKR_OK, the configuration's error, or the module's with err naming
 * pkcs11-module.
 */
CK_RV p11t_hsm_slots(p11t_hsm *h, p11t_slotinfo **slots, size_t *n,
                     p11t_err *err);

/* Hex helpers for key names (lowercase, 32 chars + NUL). */
void p11t_hex(const uint8_t name[static P11T_NAME_LEN], char out[static 33]);
int p11t_unhex(const char *hex, uint8_t name[static P11T_NAME_LEN]);

#endif /* P11T_HSM_H */
