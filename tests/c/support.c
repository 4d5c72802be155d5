/* SPDX-License-Identifier: Apache-2.0 */
/*
 * support.c - token setup, configuration files, certificates and an
 * in-memory handshake driver for the C tests.  See support.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "p11ticket.h"
#include <openssl/core_names.h>
#include <openssl/params.h>
#include "support.h"

#ifndef P11T_TEST_PROVIDER
#define P11T_TEST_PROVIDER "p11ticket.so"
#endif
#ifndef P11T_TEST_PKCS11
#define P11T_TEST_PKCS11 "/usr/lib/softhsm/libsofthsm2.so"
#endif
#ifndef P11T_TEST_KEYTOOL
#define P11T_TEST_KEYTOOL "t_keytool"
#endif
#ifndef P11T_TEST_SOFTHSM_UTIL
#define P11T_TEST_SOFTHSM_UTIL "softhsm2-util"
#endif
#ifndef P11T_TEST_DATA_DIR
#define P11T_TEST_DATA_DIR "data"
#endif

unsigned long t_passed, t_failed;

/* ---- checks -------------------------------------------------------------- */

int t_check(int ok, const char *file, int line, const char *expr,
            const char *fmt, ...)
{
    va_list ap;

    if (ok) {
        t_passed++;
        return 1;
    }
    t_failed++;
    fprintf(stderr, "%s:%d: FAILED: %s", file, line, expr);
    if (fmt != NULL) {
        fputs(" -- ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fputc('\n', stderr);
    if (ERR_peek_error() != 0) {
        fputs("  OpenSSL error queue:\n", stderr);
        ERR_print_errors_fp(stderr);
    }
    fflush(stderr);
    return 0;
}

void t_bail(const char *file, int line, const char *expr)
{
    t_check(0, file, line, expr, "cannot continue");
    fprintf(stderr, "%lu passed, %lu failed\n", t_passed, t_failed);
    fflush(NULL);
    exit(1);
}

int t_finish(const char *prog)
{
    fflush(stderr);
    printf("%s: %lu passed, %lu failed\n", prog, t_passed, t_failed);
    fflush(stdout);
    return t_failed == 0 && t_passed > 0 ? 0 : 1;
}

void t_section(const char *fmt, ...)
{
    va_list ap;

    fputs("--- ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

void t_hexstr(const uint8_t *p, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int unhex16(const char *s, uint8_t out[16])
{
    for (size_t i = 0; i < 16; i++) {
        unsigned v;

        if (sscanf(s + 2 * i, "%2x", &v) != 1)
            return 0;
        out[i] = (uint8_t)v;
    }
    return 1;
}

/* ---- processes ---------------------------------------------------------- */

int t_run(char *const argv[], char *out, size_t outlen)
{
    int fd[2], status;
    size_t got = 0;
    pid_t pid;

    if (pipe(fd) != 0)
        return -1;
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return -1;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);

        if (devnull >= 0)
            dup2(devnull, 0);
        if (out != NULL)
            dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fd[1]);
    for (;;) {
        char buf[512];
        ssize_t r = read(fd[0], buf, sizeof(buf));

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (out != NULL && got + 1 < outlen) {
            size_t n =
                (size_t)r < outlen - 1 - got ? (size_t)r : outlen - 1 - got;

            memcpy(out + got, buf, n);
            got += n;
        }
    }
    close(fd[0]);
    if (out != NULL && outlen > 0)
        out[got] = '\0';
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    fprintf(stderr, "%s died with signal %d\n", argv[0],
            WIFSIGNALED(status) ? WTERMSIG(status) : -1);
    return -1;
}

int t_in_child(const char *what, int (*fn)(void *), void *arg)
{
    int status;
    pid_t pid;

    fflush(NULL);
    pid = fork();
    if (pid < 0)
        return 0;
    if (pid == 0) {
        unsigned long failed = t_failed;
        int ok = fn(arg);

        fprintf(stderr, "  [child %s: %s]\n", what,
                ok && t_failed == failed ? "ok" : "FAILED");
        fflush(NULL);
        /* _exit: the module is never finalised at exit
         * (docs/design.md, "Never C_Finalize at exit"). */
        _exit(ok && t_failed == failed ? 0 : 1);
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return 0;
    if (WIFSIGNALED(status))
        fprintf(stderr, "  [child %s: killed by signal %d]\n", what,
                WTERMSIG(status));
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int t_token_hmac(EVP_MAC *mac, const uint8_t name[16], const char *msg,
                 unsigned char tag[32])
{
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    unsigned char nm[16];
    char digest[] = "SHA256";
    size_t outl = 0;
    OSSL_PARAM params[3];
    int ok;

    memcpy(nm, name, sizeof(nm));
    params[0] =
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[1] = OSSL_PARAM_construct_octet_string(P11TICKET_PARAM_KEY_NAME, nm,
                                                  sizeof(nm));
    params[2] = OSSL_PARAM_construct_end();
    ok = ctx != NULL && EVP_MAC_init(ctx, NULL, 0, params) &&
         EVP_MAC_update(ctx, (const unsigned char *)msg, strlen(msg)) &&
         EVP_MAC_final(ctx, tag, &outl, 32) && outl == 32;
    EVP_MAC_CTX_free(ctx);
    return ok;
}

void t_write_file_atomic(const char *file, const char *text)
{
    char tmp[1100];
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.new", file);
    f = fopen(tmp, "w");
    REQUIRE(f != NULL);
    fputs(text, f);
    REQUIRE(fclose(f) == 0);
    REQUIRE(rename(tmp, file) == 0);
}

int t_wait_child(pid_t pid)
{
    int status;

    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return 0;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* ---- the token world ---------------------------------------------------- */

static const char *path_of(const char *env, const char *dflt)
{
    const char *v = getenv(env);

    return v != NULL && *v != '\0' ? v : dflt;
}

static int write_file(const char *path, mode_t mode, const char *text)
{
    size_t len = strlen(text);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

    if (fd < 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return 0;
    }
    if (fchmod(fd, mode) != 0 || write(fd, text, len) != (ssize_t)len) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        close(fd);
        return 0;
    }
    return close(fd) == 0;
}

static int random_pin(char out[33])
{
    uint8_t b[16];

    if (RAND_bytes(b, sizeof(b)) != 1)
        return 0;
    t_hexstr(b, sizeof(b), out);
    return 1;
}

int t_env_add_token(t_env *e, const char *label)
{
    char *argv[] = {(char *)e->softhsm_util,
                    "--init-token",
                    "--free",
                    "--label",
                    (char *)label,
                    "--so-pin",
                    e->so_pin,
                    "--pin",
                    e->pin,
                    NULL};
    char out[512];
    int rc = t_run(argv, out, sizeof(out));

    if (rc != 0) {
        fprintf(stderr, "softhsm2-util --init-token %s failed (%d): %s\n",
                label, rc, out);
        return 0;
    }
    return 1;
}

int t_env_init(t_env *e, const char *name)
{
    const char *tmp = path_of("TMPDIR", "/tmp");
    char buf[1024];

    memset(e, 0, sizeof(*e));
    e->provider = path_of("P11T_TEST_PROVIDER", P11T_TEST_PROVIDER);
    e->pkcs11 = path_of("P11T_TEST_PKCS11", P11T_TEST_PKCS11);
    e->keytool = path_of("P11T_TEST_KEYTOOL", P11T_TEST_KEYTOOL);
    e->softhsm_util = path_of("P11T_TEST_SOFTHSM_UTIL", P11T_TEST_SOFTHSM_UTIL);
    e->data_dir = path_of("P11T_TEST_DATA_DIR", P11T_TEST_DATA_DIR);
    e->owner = (long)getpid();

    snprintf(e->dir, sizeof(e->dir), "%s/p11t-%s-XXXXXX", tmp, name);
    if (mkdtemp(e->dir) == NULL) {
        fprintf(stderr, "mkdtemp %s: %s\n", e->dir, strerror(errno));
        return 0;
    }
    snprintf(buf, sizeof(buf), "%s/tokens", e->dir);
    if (mkdir(buf, 0700) != 0) {
        fprintf(stderr, "mkdir %s: %s\n", buf, strerror(errno));
        return 0;
    }
    snprintf(e->softhsm_conf, sizeof(e->softhsm_conf), "%s/softhsm2.conf",
             e->dir);
    snprintf(buf, sizeof(buf),
             "directories.tokendir = %s/tokens\n"
             "objectstore.backend = file\n"
             "log.level = ERROR\n"
             "slots.removable = false\n",
             e->dir);
    if (!write_file(e->softhsm_conf, 0600, buf))
        return 0;
    setenv("SOFTHSM2_CONF", e->softhsm_conf, 1);

    if (!random_pin(e->pin) || !random_pin(e->so_pin))
        return 0;
    snprintf(e->pin_file, sizeof(e->pin_file), "%s/pin", e->dir);
    /* A trailing newline, as `echo PIN > pin` leaves it. */
    snprintf(buf, sizeof(buf), "%s\n", e->pin);
    if (!write_file(e->pin_file, 0600, buf))
        return 0;
    return t_env_add_token(e, "tickets");
}

int t_env_softhsm_option(t_env *e, const char *line)
{
    FILE *fp = fopen(e->softhsm_conf, "a");
    int ok;

    if (fp == NULL) {
        fprintf(stderr, "%s: %s\n", e->softhsm_conf, strerror(errno));
        return 0;
    }
    ok = fprintf(fp, "%s\n", line) > 0;
    return fclose(fp) == 0 && ok;
}

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void t_env_cleanup(t_env *e)
{
    if (e->dir[0] == '\0' || e->owner != (long)getpid())
        return;
    if (getenv("P11T_TEST_KEEP") != NULL || t_failed > 0) {
        fprintf(stderr, "kept %s\n", e->dir);
        return;
    }
    nftw(e->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int t_write_cnf(const t_env *e, const char *file, const t_cnf *o, char *out,
                size_t outlen)
{
    static const t_cnf dflt = {0};
    char pin_source[400], text[4096], base_line[128], providers[256];
    const char *base;

    if (o == NULL)
        o = &dflt;
    base = o->base != NULL ? o->base : "default";
    snprintf(out, outlen, "%s/%s", e->dir, file);
    snprintf(pin_source, sizeof(pin_source), "file:%s", e->pin_file);
    snprintf(base_line, sizeof(base_line), "%s = %s_sect\n", base, base);
    snprintf(
        providers, sizeof(providers), "%s%s",
        o->order == T_P11T_FIRST ? "p11ticket = p11ticket_sect\n" : base_line,
        o->order == T_P11T_FIRST ? base_line : "p11ticket = p11ticket_sect\n");
    snprintf(text, sizeof(text),
             "openssl_conf = openssl_init\n"
             "\n"
             "[openssl_init]\n"
             "providers = provider_sect\n"
             "%s"
             "\n"
             "[provider_sect]\n"
             "%s"
             "\n"
             "[%s_sect]\n"
             "activate = 1\n"
             "\n"
             "[p11ticket_sect]\n"
             "module = %s\n"
             "pkcs11-module = %s\n"
             "token-uri = %s\n"
             "pin-source = %s\n"
             "%s%s"
             "activate = 1\n"
             "%s",
             o->default_props ? "alg_section = alg_sect\n" : "", providers,
             base, e->provider,
             o->pkcs11_module != NULL ? o->pkcs11_module : e->pkcs11,
             o->token_uri != NULL ? o->token_uri : "pkcs11:token=tickets",
             o->pin_source != NULL ? o->pin_source : pin_source,
             o->extra != NULL ? o->extra : "",
             o->extra != NULL && o->extra[0] != '\0' &&
                     o->extra[strlen(o->extra) - 1] != '\n'
                 ? "\n"
                 : "",
             o->default_props
                 ? "\n[alg_sect]\ndefault_properties = " P11TICKET_PROPQ "\n"
                 : "");
    return write_file(out, 0600, text);
}

OSSL_LIB_CTX *t_libctx_load(const char *cnf)
{
    OSSL_LIB_CTX *libctx = OSSL_LIB_CTX_new();

    if (libctx == NULL)
        return NULL;
    if (!OSSL_LIB_CTX_load_config(libctx, cnf)) {
        fprintf(stderr, "OSSL_LIB_CTX_load_config(%s) failed:\n", cnf);
        ERR_print_errors_fp(stderr);
        OSSL_LIB_CTX_free(libctx);
        return NULL;
    }
    return libctx;
}

static void keytool_args(const t_env *e, const char *label, char *mod,
                         char *uri, char *pin, size_t len)
{
    snprintf(mod, len, "pkcs11-module=%s", e->pkcs11);
    snprintf(uri, len, "token-uri=pkcs11:token=%s",
             label != NULL ? label : "tickets");
    snprintf(pin, len, "pin-source=file:%s", e->pin_file);
}

static void time_arg(int64_t t, char *out, size_t len)
{
    if (t == INT64_MAX)
        snprintf(out, len, "-");
    else
        snprintf(out, len, "%" PRId64, t);
}

/* Runs "t_keytool CMD [FILE] EF EU DU", which prints the generation's name. */
static int keytool_timed(const t_env *e, const char *label, const char *cmd,
                         const char *file, int64_t ef, int64_t eu, int64_t du,
                         uint8_t name[16])
{
    char mod[512], uri[512], pin[512], a[32], b[32], c[32], out[256];
    char *argv[10] = {(char *)e->keytool, mod, uri, pin, (char *)cmd};
    int rc, i = 5;

    keytool_args(e, label, mod, uri, pin, sizeof(mod));
    time_arg(ef, a, sizeof(a));
    time_arg(eu, b, sizeof(b));
    time_arg(du, c, sizeof(c));
    if (file != NULL)
        argv[i++] = (char *)file;
    argv[i++] = a;
    argv[i++] = b;
    argv[i++] = c;
    argv[i] = NULL;
    rc = t_run(argv, out, sizeof(out));
    if (rc != 0 || strlen(out) < 32 || !unhex16(out, name)) {
        fprintf(stderr, "t_keytool %s failed (%d): %s\n", cmd, rc, out);
        return 0;
    }
    return 1;
}

int t_key_create(const t_env *e, const char *label, int64_t ef, int64_t eu,
                 int64_t du, uint8_t name[16])
{
    return keytool_timed(e, label, "create", NULL, ef, eu, du, name);
}

int t_key_destroy(const t_env *e, const char *label, const uint8_t name[16])
{
    char mod[512], uri[512], pin[512], hex[33], out[256];
    char *argv[] = {(char *)e->keytool, mod, uri, pin, "destroy", hex, NULL};
    int rc;

    keytool_args(e, label, mod, uri, pin, sizeof(mod));
    t_hexstr(name, 16, hex);
    rc = t_run(argv, out, sizeof(out));
    if (rc != 0) {
        fprintf(stderr, "t_keytool destroy failed (%d): %s\n", rc, out);
        return 0;
    }
    return 1;
}

int t_key_import(const t_env *e, const char *label, const char *file,
                 int64_t ef, int64_t eu, int64_t du)
{
    uint8_t name[16];

    return keytool_timed(e, label, "import", file, ef, eu, du, name);
}

/* ---- TLS ------------------------------------------------------------------
 */

int t_use_new_cert(SSL_CTX *ctx, OSSL_LIB_CTX *libctx)
{
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(libctx, NULL, "EC", "P-256");
    X509 *x = X509_new_ex(libctx, NULL);
    X509_NAME *n;
    int ok = 0;

    if (pkey == NULL || x == NULL)
        goto done;
    n = X509_get_subject_name(x);
    if (!X509_set_version(x, X509_VERSION_3) ||
        !ASN1_INTEGER_set(X509_get_serialNumber(x), 1) ||
        X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), 86400) == NULL ||
        !X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
                                    (const unsigned char *)"localhost", -1, -1,
                                    0) ||
        !X509_set_issuer_name(x, n) || !X509_set_pubkey(x, pkey) ||
        X509_sign(x, pkey, EVP_sha256()) <= 0)
        goto done;
    ok = SSL_CTX_use_certificate(ctx, x) == 1 &&
         SSL_CTX_use_PrivateKey(ctx, pkey) == 1 &&
         SSL_CTX_check_private_key(ctx) == 1;
done:
    if (!ok) {
        fprintf(stderr, "certificate generation failed:\n");
        ERR_print_errors_fp(stderr);
    }
    X509_free(x);
    EVP_PKEY_free(pkey);
    return ok;
}

static void why(t_conn *r, const char *what, SSL *ssl, int rc)
{
    unsigned long e;
    char buf[200] = "";

    if (r->why[0] != '\0')
        return;
    e = ERR_peek_error();
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(r->why, sizeof(r->why), "%s: rc=%d ssl_error=%d %s", what, rc,
             ssl != NULL ? SSL_get_error(ssl, rc) : 0, buf);
}

static int want_more(SSL *ssl, int rc)
{
    int e = SSL_get_error(ssl, rc);

    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

static int send_recv(SSL *from, SSL *to, const char *msg, t_conn *r,
                     const char *what)
{
    char buf[128];
    int len = (int)strlen(msg), got = 0, rc;

    rc = SSL_write(from, msg, len);
    if (rc != len) {
        why(r, what, from, rc);
        return 0;
    }
    for (int i = 0; i < 16 && got < len; i++) {
        rc = SSL_read(to, buf + got, (int)sizeof(buf) - got);
        if (rc > 0) {
            got += rc;
            continue;
        }
        if (!want_more(to, rc)) {
            why(r, what, to, rc);
            return 0;
        }
    }
    if (got != len || memcmp(buf, msg, (size_t)len) != 0) {
        snprintf(r->why, sizeof(r->why), "%s: data mismatch (%d bytes)", what,
                 got);
        return 0;
    }
    return 1;
}

void t_conn_clear(t_conn *r)
{
    SSL_SESSION_free(r->session);
    memset(r, 0, sizeof(*r));
}

int t_connect(SSL_CTX *sctx, SSL_CTX *cctx, const t_conn_opts *o, t_conn *r)
{
    static const t_conn_opts none = {0};
    SSL *c = NULL, *s = NULL;
    BIO *bc = NULL, *bs = NULL;
    int cdone = 0, sdone = 0;

    memset(r, 0, sizeof(*r));
    if (o == NULL)
        o = &none;
    ERR_clear_error();
    c = SSL_new(cctx);
    s = SSL_new(sctx);
    if (c == NULL || s == NULL || !BIO_new_bio_pair(&bc, 0, &bs, 0)) {
        why(r, "setup", NULL, 0);
        goto done;
    }
    SSL_set_bio(c, bc, bc);
    SSL_set_bio(s, bs, bs);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    SSL_set_tlsext_host_name(c, "localhost");
    if (o->version != 0 && (!SSL_set_min_proto_version(c, o->version) ||
                            !SSL_set_max_proto_version(c, o->version))) {
        why(r, "set version", NULL, 0);
        goto done;
    }
    if (o->cipher != NULL && !SSL_set_cipher_list(c, o->cipher)) {
        why(r, "set cipher", NULL, 0);
        goto done;
    }
    if (o->suites != NULL && !SSL_set_ciphersuites(c, o->suites)) {
        why(r, "set ciphersuites", NULL, 0);
        goto done;
    }
    SSL_set_options(c, o->client_options);
    SSL_set_options(s, o->server_options);
    if (o->session != NULL && !SSL_set_session(c, o->session)) {
        why(r, "set session", NULL, 0);
        goto done;
    }

    for (int i = 0; i < 100 && !(cdone && sdone); i++) {
        int rc;

        if (!cdone) {
            rc = SSL_do_handshake(c);
            if (rc == 1)
                cdone = 1;
            else if (!want_more(c, rc)) {
                why(r, "client handshake", c, rc);
                goto done;
            }
        }
        if (!sdone) {
            rc = SSL_do_handshake(s);
            if (rc == 1)
                sdone = 1;
            else if (!want_more(s, rc)) {
                why(r, "server handshake", s, rc);
                goto done;
            }
        }
    }
    if (!cdone || !sdone) {
        snprintf(r->why, sizeof(r->why), "handshake did not finish");
        goto done;
    }
    if (!send_recv(s, c, "hello from the server", r, "server->client") ||
        !send_recv(c, s, "hello from the client", r, "client->server"))
        goto done;

    r->client_reused = SSL_session_reused(c);
    r->server_reused = SSL_session_reused(s);
    r->version = SSL_version(c);
    snprintf(r->cipher, sizeof(r->cipher), "%s",
             SSL_CIPHER_get_name(SSL_get_current_cipher(c)));
    r->session = SSL_get1_session(c);
    r->ok = r->session != NULL;
    if (!r->ok)
        snprintf(r->why, sizeof(r->why), "no client session");
    SSL_shutdown(c);
    SSL_shutdown(s);
done:
    SSL_free(c);
    SSL_free(s);
    ERR_clear_error();
    return r->ok;
}

size_t t_ticket(const SSL_SESSION *s, const unsigned char **tick)
{
    const unsigned char *t = NULL;
    size_t len = 0;

    if (s == NULL || !SSL_SESSION_has_ticket(s))
        return 0;
    SSL_SESSION_get0_ticket(s, &t, &len);
    if (tick != NULL)
        *tick = t;
    return len;
}

SSL_SESSION *t_session_tamper(const SSL_SESSION *s, size_t off, uint8_t x,
                              const uint8_t *name)
{
    const unsigned char *tick, *q;
    unsigned char *der = NULL, *p, *at;
    size_t tlen = t_ticket(s, &tick);
    SSL_SESSION *out = NULL;
    int len;

    if (tlen < 16 || (name == NULL && off >= tlen))
        return NULL;
    len = i2d_SSL_SESSION((SSL_SESSION *)s, NULL);
    if (len <= 0 || (der = OPENSSL_malloc((size_t)len)) == NULL)
        return NULL;
    p = der;
    if (i2d_SSL_SESSION((SSL_SESSION *)s, &p) != len)
        goto done;
    /* The ticket is an OCTET STRING inside the DER (ssl/ssl_asn1.c). */
    at = memmem(der, (size_t)len, tick, tlen);
    if (at == NULL)
        goto done;
    if (name != NULL)
        memcpy(at, name, 16);
    else
        at[off] ^= x;
    q = der;
    out = d2i_SSL_SESSION(NULL, &q, len);
done:
    OPENSSL_free(der);
    return out;
}
