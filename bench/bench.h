/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench.h - p11ticket-bench: shared declarations.
 *
 * The benchmark is split by what it measures:
 *   main.c    options, the order of the sections, tables, targets, JSON
 *   setup.c   the openssl.cnf provider section, provisioning the token and
 *             removing everything again (also on SIGINT and on failure)
 *   ticket.c  one ticket sealed and opened three ways: through the
 *             provider, on the bare PKCS#11 module, in memory
 *   tls.c     server-side handshake cost over memory BIOs
 *   scale.c   one worker process against two
 *   stats.c   clocks, medians, the round-robin runner
 *
 * Every number is a median over interleaved rounds (A, B, C, A, B, C, ...)
 * so that machine noise lands on every variant alike.
 */
#ifndef P11T_BENCH_H
#define P11T_BENCH_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "hsm.h"

/* Ticket geometry: a ~200-byte DER session, as libssl seals it. */
#define BENCH_SESSION_LEN 200
#define BENCH_CT_LEN 208 /* AES-CBC with PKCS#7 padding */
#define BENCH_TICKET_LEN (P11T_NAME_LEN + P11T_IV_LEN + BENCH_CT_LEN + P11T_HMAC_LEN)
#define BENCH_MAC_OFF (P11T_NAME_LEN + P11T_IV_LEN + BENCH_CT_LEN)

/* ---- stats.c -------------------------------------------------------------- */

extern volatile sig_atomic_t bench_stop; /* set by SIGINT/SIGTERM/SIGHUP */

double bench_now(void); /* CLOCK_MONOTONIC, seconds */
/* "what: <first queued OpenSSL error>" into err; clears the queue. */
void bench_ossl_err(char *err, size_t errlen, const char *what);
double bench_median(double *v, size_t n); /* sorts v; NAN if n == 0 */
/* Median over i of a[i] / b[i] (a and b unchanged); NAN if n == 0. */
double bench_median_ratio(const double *a, const double *b, size_t n);
double bench_mean(const double *v, size_t n);

/* A growable array of per-round results. */
typedef struct bench_series {
    double *v;
    size_t n, cap;
} bench_series;

int bench_series_add(bench_series *s, double x);
double bench_series_median(bench_series *s);
void bench_series_free(bench_series *s);

/* ---- setup.c -------------------------------------------------------------- */

typedef struct bench_setup {
    const char *config_file; /* --config */
    const char *provider_name; /* --section */
    p11t_conffile file;      /* the parsed file and the provider's section */
    p11t_hsm *hsm;           /* the bench's own provisioning handle */
    int session_copies;      /* the file's session-copies (default yes) */
    int auto_rotate;         /* the file's auto-rotate */
    unsigned refresh_s;      /* the file's refresh-interval */

    char tmpdir[256];        /* 0700 directory for generated configs */
    char alt_config[320];    /* copy with session-copies flipped */

    uint8_t key[P11T_NAME_LEN]; /* the bench's current encrypting key */
    uint8_t (*created)[P11T_NAME_LEN]; /* everything we added, to remove */
    size_t n_created, cap_created;
    size_t gens_before;      /* p11ticket generations already on the token */
} bench_setup;

/* Reads FILE's provider section into s (and a p11t_hsm for provisioning). */
int bench_setup_load(bench_setup *s, char *err, size_t errlen);
/* The value of one key of the provider section, or NULL. */
const char *bench_setup_value(const bench_setup *s, const char *key);
/* Writes alt_config: the same section with session-copies flipped. */
int bench_setup_write_alt(bench_setup *s, char *err, size_t errlen);
/* Creates the bench's key and makes it the current one. */
int bench_setup_key(bench_setup *s, char *err, size_t errlen);
/* Adds decrypt-only generations until the token holds `total`. */
int bench_setup_ring(bench_setup *s, size_t total, size_t *have, char *err,
                     size_t errlen);
/* Number of complete p11ticket generations on the token now. */
int bench_setup_count(bench_setup *s, size_t *n, char *err, size_t errlen);
/* Destroys the generations created after the first `keep` (ring undo). */
int bench_setup_unring(bench_setup *s, size_t keep, char *err, size_t errlen);
/* Destroys every generation the bench created; removes temp files. */
void bench_setup_cleanup(bench_setup *s);
void bench_signals_install(void);

/* ---- ticket.c ------------------------------------------------------------- */

/* The provider, loaded from one openssl.cnf into a private OSSL_LIB_CTX. */
typedef struct bench_prov {
    OSSL_LIB_CTX *libctx;
    EVP_CIPHER *cipher; /* P11TICKET-AES-CBC */
    EVP_MAC *mac;       /* "HMAC" fetched with P11TICKET_PROPQ: ours */
} bench_prov;

int bench_prov_load(bench_prov *p, const char *cnf, char *err, size_t errlen);
void bench_prov_free(bench_prov *p);

/* Which objects a floor's calls use. */
enum bench_keys { BENCH_KEYS_TOKEN, BENCH_KEYS_COPY, BENCH_KEYS_PUBLIC };

/* The bare PKCS#11 module: the same keys, found by CKA_ID. */
typedef struct bench_floor {
    CK_FUNCTION_LIST_PTR f;
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE aes_tok, hmac_tok; /* token objects */
    CK_OBJECT_HANDLE aes_ses, hmac_ses; /* C_CopyObject, CKA_TOKEN false */
    /* Fresh random session keys with CKA_PRIVATE false.  Not the ticket
     * keys and not usable by p11ticket: a copy cannot drop CKA_PRIVATE
     * (SoftHSM refuses it), so these only show what the token would cost
     * if its keys were public session objects (docs/performance.md). */
    CK_OBJECT_HANDLE aes_pub, hmac_pub;
    enum bench_keys keys;               /* which pair seal/open use */
    /* 1: AES-CBC built on CKM_AES_ECB, as hsm/keys.c does when the module
     * lacks CKM_AES_CBC_PAD (p11-kit-client.so) or aes-mechanism = ecb;
     * 0: CKM_AES_CBC_PAD.  Chosen once by bench_floor_open like the
     * provider's login chooses (hsm/module.c choose_mechanism). */
    int ecb;
    uint8_t name[P11T_NAME_LEN];        /* CKA_ID of both keys */
    uint8_t ticket[BENCH_TICKET_LEN];   /* one valid ticket, for token work */
    int ticket_ready;
} bench_floor;

int bench_floor_open(bench_floor *fl, const bench_setup *s, char *err,
                     size_t errlen);
/* The token calls of one seal (enc) or one open, on ticket-sized data,
 * without the surrounding EVP work (the TLS floor server uses it). */
int bench_floor_token_work(bench_floor *fl, int enc);
void bench_floor_close(bench_floor *fl);

/* In-memory OpenSSL AES-256-CBC + HMAC-SHA256, libssl's built-in way. */
typedef struct bench_inmem {
    EVP_CIPHER *cipher;
    EVP_MAC *mac;
    uint8_t aes[32], hmac[32];
} bench_inmem;

/* HMAC-SHA256 with a raw key, initialised as libssl's ssl_hmac_init() does. */
int bench_hmac_init(EVP_MAC_CTX *h, const uint8_t *key, size_t keylen);
int bench_inmem_init(bench_inmem *m, OSSL_LIB_CTX *libctx, char *err,
                     size_t errlen);
void bench_inmem_free(bench_inmem *m);

/* One way to seal and open a ticket. */
typedef struct bench_way {
    const char *name;
    int (*seal)(void *ctx, const uint8_t iv[P11T_IV_LEN], const uint8_t *in,
                uint8_t ticket[BENCH_TICKET_LEN]);
    int (*open)(void *ctx, const uint8_t ticket[BENCH_TICKET_LEN],
                uint8_t out[BENCH_CT_LEN], size_t *outl);
    void *ctx;
} bench_way;

void bench_way_prov(bench_way *w, const char *name, bench_prov *p);
void bench_way_floor(bench_way *w, const char *name, bench_floor *fl);
void bench_way_inmem(bench_way *w, const char *name, bench_inmem *m);

/* Per-op medians of one way, in microseconds. */
typedef struct bench_sealopen {
    double seal_us, open_us, pair_us; /* medians over rounds */
    double pair_mean_us;              /* mean over rounds */
    size_t rounds, ops;
    double *round_pair_us;            /* per round, owned; for pairing */
} bench_sealopen;

void bench_sealopen_free(bench_sealopen *s);
/* Median over rounds of a's time / b's time in the same round. */
double bench_paired(const bench_sealopen *a, const bench_sealopen *b);

/*
 * Runs the ways round-robin, `batch` seals then `batch` opens per way and
 * round, for `seconds` (at least min_rounds rounds).  Every opened ticket
 * is checked against its plaintext; expect_name, if set, must be the key
 * name of every ticket of ways[i] with check_name[i].  out[] must be zeroed
 * or hold earlier results (their round series are freed and replaced).
 */
int bench_sealopen_run(bench_way *ways, size_t n, double seconds,
                       size_t min_rounds, size_t batch,
                       const uint8_t *expect_name, const int *check_name,
                       bench_sealopen *out, char *err, size_t errlen);
/* Seals and opens n tickets through one way; returns pairs done or -1. */
long bench_sealopen_loop(bench_way *w, long n, double until, char *err,
                         size_t errlen);

/* ---- tls.c ---------------------------------------------------------------- */

enum bench_hs { BENCH_TLS13_RESUME, BENCH_TLS12_RESUME, BENCH_TLS13_FULL,
                BENCH_HS_COUNT };

/* The three servers: the product, the token's floor, OpenSSL alone. */
/* p11ticket, the floor server on the objects p11ticket uses, the floor
 * server on public session keys (bench_floor.aes_pub), in-memory tickets. */
enum bench_variant { BENCH_V_P11, BENCH_V_FLOOR, BENCH_V_FLOOR_PUB, BENCH_V_MEM,
                     BENCH_V_COUNT };

typedef struct bench_tls_result {
    double hs_s[BENCH_V_COUNT];    /* medians of per-round handshakes/s */
    double us[BENCH_V_COUNT];      /* server time per handshake, medians */
    double tickets[BENCH_V_COUNT]; /* new sessions per handshake (client) */
    double ratio;                  /* p11ticket / in-memory, paired */
    double bound;                  /* floor / in-memory, paired */
    double bound_pub;              /* public-key floor / in-memory, paired */
    double vs_floor;               /* p11ticket / floor, paired */
    size_t rounds, handshakes;
} bench_tls_result;

typedef struct bench_tls {
    OSSL_LIB_CTX *client_libctx;
    SSL_CTX *srv[BENCH_V_COUNT], *client;
    const char *mem_propq;         /* what the in-memory servers used */
    const uint8_t *expect_name;    /* p11ticket tickets must carry it */
    bench_floor *floor;            /* the floor server's token work */
    bench_floor *floor_pub;        /* the same on public session keys */
    EVP_CIPHER *floor_cipher;      /* its in-memory ticket keys */
    unsigned char floor_aes[32], floor_hmac[32];
} bench_tls;

int bench_tls_init(bench_tls *t, bench_prov *p, bench_floor *floor,
                   bench_floor *floor_pub, const uint8_t *expect_name,
                   char *err, size_t errlen);
void bench_tls_free(bench_tls *t);
int bench_tls_run(bench_tls *t, enum bench_hs kind, double seconds,
                  bench_tls_result *out, char *err, size_t errlen);
const char *bench_hs_name(enum bench_hs kind);
/* Only n handshakes of one kind against one server, for profiling;
 * *server_us is the server's time per handshake. */
int bench_tls_loop(bench_tls *t, enum bench_hs kind, int v, long n,
                   double *server_us, char *err, size_t errlen);

/* ---- scale.c -------------------------------------------------------------- */

typedef struct bench_scale_result {
    double procs1_ops_s, procs2_ops_s, speedup; /* through the provider */
    double mem1_ops_s, mem2_ops_s, mem_speedup; /* in memory: the machine */
    size_t rounds;
} bench_scale_result;

int bench_scale_run(const char *cnf, const uint8_t *expect_name,
                    double seconds, double round_s, bench_scale_result *out,
                    char *err, size_t errlen);

#endif /* P11T_BENCH_H */
