/* SPDX-License-Identifier: Apache-2.0 */
/*
 * support.h - shared helpers of the C test programs in tests/c.
 *
 * Every test process builds its own world: a throwaway SoftHSM token in a
 * temporary directory (its own SOFTHSM2_CONF), a PIN file, an openssl.cnf
 * that loads the provider from the build tree, and key generations created
 * by t_keytool, a separate process (so the test process itself never loads
 * the PKCS#11 module outside the provider).  TLS runs in memory over a BIO
 * pair, without sockets.
 *
 * Paths come from compile definitions set by tests/c/CMakeLists.txt and can
 * be overridden by environment variables of the same name:
 *   P11T_TEST_PROVIDER     BUILD/lib/p11ticket.so
 *   P11T_TEST_PKCS11       the SoftHSM module
 *   P11T_TEST_KEYTOOL      BUILD/bin/t_keytool
 *   P11T_TEST_SOFTHSM_UTIL softhsm2-util
 *   P11T_TEST_DATA_DIR     tests/c/data
 * P11T_TEST_KEEP=1 keeps the temporary directory (it is also kept, and its
 * path printed, when a check failed).
 */
#ifndef P11T_TEST_SUPPORT_H
#define P11T_TEST_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

/* ---- checks -------------------------------------------------------------- */

extern unsigned long t_passed, t_failed;

/* Records one check; prints file:line and the expression when it fails.
 * Returns ok so that callers can stop early. */
int t_check(int ok, const char *file, int line, const char *expr,
            const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Prints "prog: N passed, N failed" and returns the exit code. */
int t_finish(const char *prog);
/* Gives up at once: counts a failure and exits 1 (keeps the temp dir). */
void t_bail(const char *file, int line, const char *expr)
    __attribute__((noreturn));

#define CHECK(c) t_check(!!(c), __FILE__, __LINE__, #c, NULL)
#define CHECKF(c, ...) t_check(!!(c), __FILE__, __LINE__, #c, __VA_ARGS__)
#define REQUIRE(c)                                                             \
    do {                                                                       \
        if (!(c))                                                              \
            t_bail(__FILE__, __LINE__, #c);                                    \
        t_passed++;                                                            \
    } while (0)
/* Equality of integers, printing both values on failure (each argument is
 * evaluated once). */
#define CHECK_EQ(a, b)                                                         \
    __extension__({                                                            \
        long long t_a_ = (long long)(a), t_b_ = (long long)(b);                \
        t_check(t_a_ == t_b_, __FILE__, __LINE__, #a " == " #b,                \
                "%lld != %lld", t_a_, t_b_);                                   \
    })

/* Prints a section header to stderr (helps to read failures). */
void t_section(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- the token world ---------------------------------------------------- */

typedef struct t_env {
    char dir[256];          /* temporary directory */
    char softhsm_conf[320]; /* DIR/softhsm2.conf */
    char pin_file[320];     /* DIR/pin, mode 0600 */
    char pin[33], so_pin[33];
    const char *provider; /* p11ticket.so */
    const char *pkcs11;   /* SoftHSM module */
    const char *keytool;
    const char *softhsm_util;
    const char *data_dir;
    long owner; /* pid that created dir; only it removes it */
} t_env;

/*
 * Creates DIR, writes SOFTHSM2_CONF (and sets it in the environment),
 * initialises a token labelled "tickets" with random PINs and writes the PIN
 * file.  Returns 1 on success (prints why on failure).
 */
int t_env_init(t_env *e, const char *name);
/* Another token in the same SoftHSM configuration, same PINs. */
int t_env_add_token(t_env *e, const char *label);
/* Appends one line to DIR/softhsm2.conf (read at the next C_Initialize). */
int t_env_softhsm_option(t_env *e, const char *line);
/* Removes DIR unless P11T_TEST_KEEP is set or a check failed. */
void t_env_cleanup(t_env *e);

enum { T_DEFAULT_FIRST = 0, T_P11T_FIRST = 1 };

typedef struct t_cnf {
    int order;         /* T_DEFAULT_FIRST or T_P11T_FIRST */
    int default_props; /* adds alg_section default_properties = P11TICKET_PROPQ
                        */
    const char *token_uri;  /* default "pkcs11:token=tickets" */
    const char *pin_source; /* default "file:DIR/pin" */
    const char *extra;      /* extra lines for the provider section, or NULL */
    /* The provider loaded (section BASE_sect, activate = 1) in place of
     * "default", e.g. a builtin added with OSSL_PROVIDER_add_builtin()
     * before the file is loaded; NULL means "default". */
    const char *base;
    /* pkcs11-module instead of the SoftHSM module (the fault module). */
    const char *pkcs11_module;
} t_cnf;

/* Writes DIR/<file> from opts; the path goes to out. */
int t_write_cnf(const t_env *e, const char *file, const t_cnf *opts, char *out,
                size_t outlen);
/* A new library context loaded from cnf (NULL on failure, errors printed). */
OSSL_LIB_CTX *t_libctx_load(const char *cnf);

/*
 * Key generations, through t_keytool in a child process.  Times are unix
 * seconds; INT64_MAX means never.  token_label NULL means "tickets".
 */
int t_key_create(const t_env *e, const char *token_label, int64_t ef,
                 int64_t eu, int64_t du, uint8_t name[16]);
int t_key_destroy(const t_env *e, const char *token_label,
                  const uint8_t name[16]);
/*
 * Imports a generation with known key bytes: `file` holds exactly 80 bytes,
 * the 16-byte name, the 32-byte HMAC key and the 32-byte AES key (write it
 * with mode 0600, e.g. inside e->dir; t_keytool refuses a file that group or
 * others can read).  Only the path is passed on the helper's command line.
 */
int t_key_import(const t_env *e, const char *token_label, const char *file,
                 int64_t ef, int64_t eu, int64_t du);

/* Runs argv (fork + exec), stdout captured into out (NUL-terminated; with
 * out == NULL stdout is passed through), stderr passed through.  Returns the
 * exit status, or -1 (a signal is reported on stderr). */
int t_run(char *const argv[], char *out, size_t outlen);

/*
 * One token HMAC-SHA256 of msg under key generation `name`, through the
 * provider's HMAC (mac fetched from it), into tag.  Returns 1 if the MAC
 * ran; a token failure still yields a tag (one that never verifies), so
 * callers compare tags.
 */
int t_token_hmac(EVP_MAC *mac, const uint8_t name[16], const char *msg,
                 unsigned char tag[32]);
/* Replaces file with text atomically (write a sibling, rename over). */
void t_write_file_atomic(const char *file, const char *text);

/* Waits for child pid; returns 1 if it exited 0. */
int t_wait_child(pid_t pid);
/* Runs fn(arg) in a forked child; returns 1 if the child exited 0. */
int t_in_child(const char *what, int (*fn)(void *), void *arg);

void t_hexstr(const uint8_t *p, size_t n, char *out);

/* ---- TLS ------------------------------------------------------------------
 */

/* Self-signed EC P-256 certificate + key, generated in libctx, installed
 * on ctx.  Returns 1 on success. */
int t_use_new_cert(SSL_CTX *ctx, OSSL_LIB_CTX *libctx);

typedef struct t_conn_opts {
    int version;        /* 0: any; else client min = max = version */
    const char *cipher; /* TLS 1.2 cipher list on the client, or NULL */
    const char *suites; /* TLS 1.3 ciphersuites on the client, or NULL */
    uint64_t client_options;
    uint64_t server_options;
    SSL_SESSION *session; /* offered by the client, or NULL */
} t_conn_opts;

typedef struct t_conn {
    int ok; /* handshake and data both ways succeeded */
    int client_reused, server_reused;
    int version;
    char cipher[64];
    SSL_SESSION *session; /* the client's session afterwards (owned) */
    char why[256];        /* first failure, for messages */
} t_conn;

/*
 * One connection over a BIO pair: handshake, then server->client and
 * client->server application data (which makes the client process every
 * TLS 1.3 NewSessionTicket), then close_notify both ways.  r->session is
 * the client's session at the end.  Returns r->ok.
 */
int t_connect(SSL_CTX *sctx, SSL_CTX *cctx, const t_conn_opts *o, t_conn *r);
void t_conn_clear(t_conn *r);

/* The ticket inside a session (0 if none). */
size_t t_ticket(const SSL_SESSION *s, const unsigned char **tick);
/*
 * Copy of s whose ticket has byte `off` XORed with x, made through
 * i2d_SSL_SESSION / d2i_SSL_SESSION.  With name != NULL the first 16 bytes
 * of the ticket are replaced by name instead.  NULL on failure.
 */
SSL_SESSION *t_session_tamper(const SSL_SESSION *s, size_t off, uint8_t x,
                              const uint8_t *name);

/* ---- the library's log callback ----------------------------------------- */

typedef struct t_log {
    int count[3]; /* per level */
    int count_other;
    char first_error[512];
    char last[512];
    int matched;      /* errors whose text contained `want` */
    const char *want; /* case-insensitive substring counted in matched */
} t_log;

/* Installs a thread-safe capture callback writing into log (NULL: restore
 * the default). */
void t_log_capture(t_log *log);

#endif
