/* SPDX-License-Identifier: Apache-2.0 */
/*
 * plain_ticket_server.c - a plain OpenSSL TLS server for the import tests.
 *
 * It stands for the servers that p11ticket migrates from (OpenSSL's own
 * SSL_CTX_set_tlsext_ticket_keys, nginx, Envoy, HAProxy, Node.js, Apache):
 * it keeps its session-ticket keys in memory, loaded from a key file in one
 * of the formats `p11ticket import` reads, and it never loads the p11ticket
 * provider (run it with OPENSSL_CONF=/dev/null).  A ticket it issues must
 * resume on p11ticket-server once the same file has been imported, and a
 * ticket p11ticket-server issues under an imported active key must resume
 * here.
 *
 *   openssl80, nginx80, envoy   80 bytes name|hmac32|aes32, installed with
 *                               SSL_CTX_set_tlsext_ticket_keys (libssl's own
 *                               AES-256-CBC + HMAC-SHA256 ticket code)
 *   nginx48                     48 bytes name|aes16|hmac16  } ticket callback,
 *   node48, apache48            48 bytes name|hmac16|aes16  } AES-128-CBC
 *   haproxy                     base64 lines name|aes|hmac, 48 bytes (AES-128)
 *                               or 80 bytes (AES-256); the last three lines
 *                               are kept, the penultimate one encrypts
 *
 * The callback formats use SSL_CTX_set_tlsext_ticket_key_evp_cb the way
 * nginx, Node.js and HAProxy use their ticket callbacks: a random IV, AES-CBC
 * with the file's AES key, HMAC-SHA256 keyed with the file's 16- or 32-byte
 * HMAC key, RFC 5077 layout name|IV|ciphertext|mac (libssl writes it).
 *
 * Like p11ticket-server it prints "ACCEPT 127.0.0.1:PORT" once it listens,
 * logs "conn N: VERSION CIPHER New|Reused" on stderr, keeps no server-side
 * session store (so "Reused" can only come from a ticket) and uses the
 * session id context "p11ticket-server" (a ticket carries the sid_ctx of its
 * issuer, and a server resumes only sessions with its own).  It echoes what
 * the client sends until the client closes, or with -www answers one HTTP
 * request and closes.  SIGTERM/SIGINT: exit 0.  Connections are served one
 * at a time.
 *
 * Exit status: 0 after a signal, 1 when set-up fails, 2 on a usage error.
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#define NAME_LEN 16
#define MAX_KEYS 3 /* HAProxy's TLS_TICKETS_NO */
#define MAX_FILE 16000

static const unsigned char sid_ctx[] = "p11ticket-server";

struct tkey {
    unsigned char name[NAME_LEN];
    unsigned char aes[32];
    unsigned char hmac[32];
    size_t aes_len, hmac_len;
};

static struct tkey g_keys[MAX_KEYS];
static int g_nkeys;
static int g_enc; /* index of the encrypting key */
static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    g_stop = sig;
}

static int die(const char *what, const char *arg)
{
    fprintf(stderr, "plain_ticket_server: %s%s\n", what, arg);
    ERR_print_errors_fp(stderr);
    return 1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: plain_ticket_server -accept 127.0.0.1:PORT -cert FILE -key FILE\n"
            "         -format openssl80|nginx80|envoy|nginx48|node48|apache48|haproxy\n"
            "         -keys FILE [-www] [-tls1_2|-tls1_3]\n");
    exit(2);
}

/* ---- key files ------------------------------------------------------------- */

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    size_t n;

    if (f == NULL)
        return NULL;
    buf = OPENSSL_secure_malloc(MAX_FILE + 1);
    if (buf == NULL) {
        fclose(f);
        return NULL;
    }
    n = fread(buf, 1, MAX_FILE + 1, f);
    fclose(f);
    if (n > MAX_FILE) {
        OPENSSL_secure_clear_free(buf, MAX_FILE + 1);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* One binary record; aes_off/hmac_off are offsets, both keys klen bytes. */
static void set_key(struct tkey *k, const unsigned char *rec, size_t aes_off,
                    size_t hmac_off, size_t klen)
{
    memcpy(k->name, rec, NAME_LEN);
    memcpy(k->aes, rec + aes_off, klen);
    memcpy(k->hmac, rec + hmac_off, klen);
    k->aes_len = k->hmac_len = klen;
}

/* HAProxy's tls-ticket-keys: one base64 key per line. */
static int load_haproxy(unsigned char *text)
{
    static struct tkey all[64];
    int n = 0, i;
    size_t size = 0;
    char *save = NULL, *line;

    for (line = strtok_r((char *)text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        unsigned char rec[96];
        size_t l = strlen(line);
        int dl;

        while (l > 0 && (line[l - 1] == '\r' || line[l - 1] == ' '))
            line[--l] = '\0';
        while (*line == ' ')
            line++, l--;
        if (l == 0 || line[0] == '#')
            continue;
        if (l > 108 || n >= 64)
            return -1;
        dl = EVP_DecodeBlock(rec, (unsigned char *)line, (int)l);
        if (dl < 0)
            return -1;
        /* EVP_DecodeBlock counts the '=' padding as zero bytes. */
        if (l >= 1 && line[l - 1] == '=')
            dl--;
        if (l >= 2 && line[l - 2] == '=')
            dl--;
        if ((dl != 48 && dl != 80) || (size != 0 && (size_t)dl != size))
            return -1;
        size = (size_t)dl;
        if (dl == 48)
            set_key(&all[n], rec, 16, 32, 16);
        else
            set_key(&all[n], rec, 16, 48, 32);
        OPENSSL_cleanse(rec, sizeof(rec));
        n++;
    }
    if (n == 0)
        return -1;
    /* The last TLS_TICKETS_NO lines; the penultimate one encrypts. */
    i = n > MAX_KEYS ? n - MAX_KEYS : 0;
    for (g_nkeys = 0; i < n; i++)
        g_keys[g_nkeys++] = all[i];
    OPENSSL_cleanse(all, sizeof(all));
    g_enc = g_nkeys >= 2 ? g_nkeys - 2 : 0;
    return 0;
}

/* Returns 1 for the callback formats, 0 for openssl80, -1 on error. */
static int load_keys(SSL_CTX *ctx, const char *format, const char *path)
{
    size_t len = 0;
    unsigned char *buf = read_file(path, &len);
    int ret = -1;

    if (buf == NULL)
        return -1;
    if (strcmp(format, "openssl80") == 0 || strcmp(format, "nginx80") == 0
        || strcmp(format, "envoy") == 0) {
        if (len == 80 && SSL_CTX_set_tlsext_ticket_keys(ctx, buf, 80) == 1) {
            memcpy(g_keys[0].name, buf, NAME_LEN);
            g_nkeys = 1;
            ret = 0;
        }
    } else if (strcmp(format, "nginx48") == 0) {
        if (len == 48) {
            set_key(&g_keys[0], buf, 16, 32, 16);
            g_nkeys = 1;
            ret = 1;
        }
    } else if (strcmp(format, "node48") == 0 || strcmp(format, "apache48") == 0) {
        if (len == 48) {
            set_key(&g_keys[0], buf, 32, 16, 16);
            g_nkeys = 1;
            ret = 1;
        }
    } else if (strcmp(format, "haproxy") == 0) {
        if (load_haproxy(buf) == 0)
            ret = 1;
    } else {
        usage();
    }
    OPENSSL_secure_clear_free(buf, MAX_FILE + 1);
    return ret;
}

/* ---- the ticket callback (nginx / Node.js / HAProxy style) ---------------- */

static int init_mac(EVP_MAC_CTX *hctx, const struct tkey *k)
{
    OSSL_PARAM params[2];

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    return EVP_MAC_init(hctx, k->hmac, k->hmac_len, params);
}

static const EVP_CIPHER *cipher_of(const struct tkey *k)
{
    return k->aes_len == 16 ? EVP_aes_128_cbc() : EVP_aes_256_cbc();
}

static int ticket_cb(SSL *s, unsigned char key_name[16], unsigned char *iv,
                     EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    const struct tkey *k;
    int i;

    if (enc) {
        k = &g_keys[g_enc];
        if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1)
            return -1;
        memcpy(key_name, k->name, NAME_LEN);
        if (EVP_EncryptInit_ex(cctx, cipher_of(k), NULL, k->aes, iv) != 1
            || init_mac(hctx, k) != 1)
            return -1;
        return 1;
    }
    for (i = 0; i < g_nkeys; i++)
        if (memcmp(key_name, g_keys[i].name, NAME_LEN) == 0)
            break;
    if (i == g_nkeys)
        return 0; /* unknown key: full handshake */
    k = &g_keys[i];
    if (init_mac(hctx, k) != 1
        || EVP_DecryptInit_ex(cctx, cipher_of(k), NULL, k->aes, iv) != 1)
        return -1;
    /* Renew tickets under a key that no longer encrypts, as HAProxy does;
     * in TLS 1.3 libssl issues a new ticket only for 2. */
    return (i == g_enc && SSL_version(s) != TLS1_3_VERSION) ? 1 : 2;
}

/* ---- connections ------------------------------------------------------------ */

static void serve(SSL_CTX *ctx, int fd, unsigned long id, int www)
{
    SSL *ssl = SSL_new(ctx);
    char buf[4096];
    size_t got = 0;
    int n;

    if (ssl == NULL || !SSL_set_fd(ssl, fd))
        goto out;
    if (SSL_accept(ssl) != 1) {
        fprintf(stderr, "conn %lu: handshake failed\n", id);
        ERR_print_errors_fp(stderr);
        goto out;
    }
    fprintf(stderr, "conn %lu: %s %s %s\n", id, SSL_get_version(ssl),
            SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)),
            SSL_session_reused(ssl) ? "Reused" : "New");
    for (;;) {
        n = SSL_read(ssl, buf + got, (int)(sizeof(buf) - 1 - got));
        if (n <= 0)
            break; /* the client closed (or the 10 s timeout) */
        if (!www) {
            if (SSL_write(ssl, buf + got, n) != n)
                break;
            continue;
        }
        got += (size_t)n;
        buf[got] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL || strstr(buf, "\n\n") != NULL
            || got == sizeof(buf) - 1) {
            char resp[256];
            const char *body = SSL_session_reused(ssl) ? "Reused\n" : "New\n";
            int rl = snprintf(resp, sizeof(resp),
                              "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                              "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                              strlen(body), body);

            if (SSL_write(ssl, resp, rl) == rl)
                (void)SSL_shutdown(ssl);
            break;
        }
    }
out:
    ERR_clear_error();
    SSL_free(ssl);
    close(fd);
}

int main(int argc, char **argv)
{
    const char *accept_arg = NULL, *cert = NULL, *key = NULL, *format = NULL,
               *keys = NULL;
    int www = 0, version = 0, lfd, i, cb;
    struct sockaddr_in sa;
    socklen_t salen = sizeof(sa);
    struct sigaction act;
    unsigned long next_id = 0;
    SSL_CTX *ctx;
    char *colon;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-accept") == 0 && i + 1 < argc)
            accept_arg = argv[++i];
        else if (strcmp(argv[i], "-cert") == 0 && i + 1 < argc)
            cert = argv[++i];
        else if (strcmp(argv[i], "-key") == 0 && i + 1 < argc)
            key = argv[++i];
        else if (strcmp(argv[i], "-format") == 0 && i + 1 < argc)
            format = argv[++i];
        else if (strcmp(argv[i], "-keys") == 0 && i + 1 < argc)
            keys = argv[++i];
        else if (strcmp(argv[i], "-www") == 0)
            www = 1;
        else if (strcmp(argv[i], "-tls1_2") == 0)
            version = TLS1_2_VERSION;
        else if (strcmp(argv[i], "-tls1_3") == 0)
            version = TLS1_3_VERSION;
        else
            usage();
    }
    if (accept_arg == NULL || cert == NULL || format == NULL || keys == NULL)
        usage();
    if (key == NULL)
        key = cert;

    memset(&act, 0, sizeof(act));
    act.sa_handler = on_signal; /* no SA_RESTART: accept() returns EINTR */
    sigemptyset(&act.sa_mask);
    sigaction(SIGTERM, &act, NULL);
    sigaction(SIGINT, &act, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (CRYPTO_secure_malloc_init(1 << 16, 32) == 0)
        fprintf(stderr, "plain_ticket_server: no secure heap, key bytes "
                        "live in the normal heap\n");
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        return die("SSL_CTX_new failed", "");
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1
        || SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        return die("cannot load the certificate or key ", cert);
    if (version != 0
        && (!SSL_CTX_set_min_proto_version(ctx, version)
            || !SSL_CTX_set_max_proto_version(ctx, version)))
        return die("cannot set the protocol version", "");
    if (!SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1))
        return die("cannot set the session id context", "");
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER
                                            | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    cb = load_keys(ctx, format, keys);
    if (cb < 0)
        return die("cannot load the key file, or it does not match its format: ", keys);
    if (cb == 1 && SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb) != 1)
        return die("cannot install the ticket callback", "");
    fprintf(stderr, "plain_ticket_server: %s, %d key(s), encrypting key name ",
            format, g_nkeys);
    for (i = 0; i < NAME_LEN; i++)
        fprintf(stderr, "%02x", g_keys[g_enc].name[i]);
    fputc('\n', stderr);

    colon = strrchr(accept_arg, ':');
    if (colon == NULL)
        usage();
    *colon = '\0';
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, accept_arg, &sa.sin_addr) != 1)
        usage();
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    i = 1;
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &i, sizeof(i)) != 0
        || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0
        || listen(lfd, 16) != 0
        || getsockname(lfd, (struct sockaddr *)&sa, &salen) != 0)
        return die("cannot listen on ", accept_arg);
    printf("ACCEPT %s:%u\n", accept_arg, (unsigned)ntohs(sa.sin_port));
    fflush(stdout);

    while (g_stop == 0) {
        struct timeval tv = { .tv_sec = 10 };
        int fd = accept(lfd, NULL, NULL);

        if (fd < 0) {
            if (errno == EINTR)
                continue;
            perror("plain_ticket_server: accept");
            break;
        }
        /* Never hang on a silent client. */
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        serve(ctx, fd, ++next_id, www);
    }
    close(lfd);
    SSL_CTX_free(ctx);
    OPENSSL_cleanse(g_keys, sizeof(g_keys));
    fflush(stderr);
    return g_stop != 0 ? 0 : 1;
}
