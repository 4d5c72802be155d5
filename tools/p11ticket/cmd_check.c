/*
 * cmd_check.c - issue and accept one ticket through the provider, exactly as
 * a server would, for TLS 1.2 and TLS 1.3.
 *
 * Both ends run in this process over a memory BIO pair; the server SSL_CTX
 * comes from p11ticket_SSL_CTX_new() in a private OSSL_LIB_CTX loaded from
 * the same openssl.cnf the servers use.
 */
#include <dlfcn.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "p11ticket.h"
#include "tool.h"

#define HANDSHAKE_ROUNDS 64

typedef struct check_ctx {
    p11t_tool *t;
    OSSL_LIB_CTX *libctx;
    EVP_PKEY *pkey;
    X509 *cert;
    SSL_CTX *server, *client;
} check_ctx;

static void usage(FILE *fp)
{
    fputs("usage: p11ticket [global options] check\n"
          "\n"
          "Load the configuration file into a private OpenSSL library "
          "context, as a\n"
          "server does, and run two in-memory handshakes per protocol version "
          "(TLS 1.2\n"
          "and TLS 1.3) against a throwaway self-signed certificate: the "
          "first gets a\n"
          "ticket from the token's current key, the second presents it and "
          "must be\n"
          "resumed.  The server keeps no session cache, so only the ticket can "
          "resume.\n"
          "Exits 0 only if both versions resumed.\n"
          "\n"
          "Options:\n"
          "  -h, --help   show this help\n",
          fp);
}

static void log_cb(int level, const char *msg, void *arg)
{
    const p11t_tool *t = arg;

    switch (level) {
    case P11TICKET_LOG_ERROR:
        fprintf(stderr, "p11ticket: library error: %s\n", msg);
        break;
    case P11TICKET_LOG_WARNING:
        fprintf(stderr, "p11ticket: library warning: %s\n", msg);
        break;
    default:
        if (t->verbose)
            fprintf(stderr, "p11ticket: library: %s\n", msg);
        break;
    }
}

static const char *version_name(int version)
{
    return version == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2";
}

static void print_provider_state(const check_ctx *c)
{
    char status[512] = "", current[2 * P11TICKET_KEY_NAME_LEN + 1] = "";
    p11ticket_stats st;

    if (!p11ticket_status(c->server, status, sizeof(status), current,
                          sizeof(current))) {
        p11t_tool_error("  provider status: provider not loaded");
        return;
    }
    p11t_tool_error("  provider status: %s; current key: %s", status,
                    current[0] != '\0' ? current : "none");
    if (p11ticket_get_stats(c->server, &st))
        p11t_tool_error("  tickets issued %llu, resumed %llu, renewed %llu, "
                        "unknown key %llu, refused %llu, token errors %llu",
                        st.issued, st.resumed, st.renewed, st.unknown_key,
                        st.refused, st.errors);
}

static int make_identity(check_ctx *c)
{
    X509_NAME *name;

    c->pkey = EVP_PKEY_Q_keygen(c->libctx, NULL, "EC", "P-256");
    c->cert = X509_new_ex(c->libctx, NULL);
    if (c->pkey == NULL || c->cert == NULL)
        return 0;
    name = X509_get_subject_name(c->cert);
    return X509_set_version(c->cert, X509_VERSION_3) &&
           ASN1_INTEGER_set(X509_get_serialNumber(c->cert), 1) &&
           X509_gmtime_adj(X509_getm_notBefore(c->cert), -300) != NULL &&
           X509_gmtime_adj(X509_getm_notAfter(c->cert), 3600) != NULL &&
           X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                      (const unsigned char *)"p11ticket check",
                                      -1, -1, 0) &&
           X509_set_issuer_name(c->cert, name) &&
           X509_set_pubkey(c->cert, c->pkey) &&
           X509_sign(c->cert, c->pkey, EVP_sha256()) > 0;
}

/* The name OpenSSL registers: the providers entry, unless "identity". */
static const char *provider_name(const p11t_tool *t)
{
    const char *id = p11t_tool_conf_value(t, "identity");

    return id != NULL ? id : t->provider_name;
}

static int is_false(const char *v)
{
    return strcasecmp(v, "0") == 0 || strcasecmp(v, "no") == 0 ||
           strcasecmp(v, "false") == 0 || strcasecmp(v, "off") == 0;
}

/*
 * OpenSSL 3.0 drops the error when a provider marked "activate" fails to
 * load from openssl.cnf (OSSL_LIB_CTX_load_config() still succeeds), so
 * find the reason ourselves.
 */
static int explain_inactive(const check_ctx *c)
{
    const p11t_tool *t = c->t;
    const char *activate = p11t_tool_conf_value(t, "activate");
    const char *module = p11t_tool_conf_value(t, "module");
    void *dl;

    if (activate == NULL || is_false(activate)) {
        p11t_tool_error("check: %s: [%s] the provider is not activated: set "
                        "'activate = 1'",
                        t->config_file, t->file.section);
        return P11T_TOOL_USAGE;
    }
    if (module == NULL) {
        p11t_tool_error("check: %s: [%s] provider '%s' did not load from "
                        "OpenSSL's modules directory; set 'module' to the "
                        "path of p11ticket.so",
                        t->config_file, t->file.section, provider_name(t));
        return P11T_TOOL_USAGE;
    }
    dl = dlopen(module, RTLD_LAZY | RTLD_LOCAL);
    if (dl == NULL) {
        p11t_tool_error("check: %s: [%s] module: %s", t->config_file,
                        t->file.section, dlerror());
        return P11T_TOOL_USAGE;
    }
    if (dlsym(dl, "OSSL_provider_init") == NULL) {
        p11t_tool_error("check: %s: [%s] module: %s is not an OpenSSL "
                        "provider (no OSSL_provider_init)",
                        t->config_file, t->file.section, module);
        dlclose(dl);
        return P11T_TOOL_USAGE;
    }
    dlclose(dl);
    p11t_tool_error("check: %s: [%s] provider '%s' (%s) failed to "
                    "initialise",
                    t->config_file, t->file.section, provider_name(t), module);
    return P11T_TOOL_FAIL;
}

static int setup(check_ctx *c)
{
    const char *file = c->t->config_file;

    c->libctx = OSSL_LIB_CTX_new();
    if (c->libctx == NULL) {
        p11t_tool_error("check: cannot create an OpenSSL library context");
        return P11T_TOOL_FAIL;
    }
    if (!OSSL_LIB_CTX_load_config(c->libctx, file)) {
        p11t_tool_error("check: OpenSSL cannot load %s:", file);
        p11t_tool_print_ossl_errors();
        return P11T_TOOL_USAGE;
    }
    if (!OSSL_PROVIDER_available(c->libctx, provider_name(c->t)))
        return explain_inactive(c);

    if (!make_identity(c)) {
        p11t_tool_error("check: cannot make the test certificate:");
        p11t_tool_print_ossl_errors();
        return P11T_TOOL_FAIL;
    }
    c->server = p11ticket_SSL_CTX_new(c->libctx, TLS_server_method());
    c->client = SSL_CTX_new_ex(c->libctx, NULL, TLS_client_method());
    if (c->server == NULL || c->client == NULL ||
        SSL_CTX_use_certificate(c->server, c->cert) != 1 ||
        SSL_CTX_use_PrivateKey(c->server, c->pkey) != 1) {
        p11t_tool_error("check: cannot set up the TLS contexts:");
        p11t_tool_print_ossl_errors();
        return P11T_TOOL_FAIL;
    }
    /*
     * Without a server-side cache a TLS 1.2 client's session ID cannot
     * resume, so a resumption proves the ticket was decrypted and verified.
     */
    SSL_CTX_set_session_cache_mode(c->server, SSL_SESS_CACHE_OFF);

    if (p11ticket_enable(c->server) != 1) {
        char status[512] = "";

        if (!p11ticket_status(c->server, status, sizeof(status), NULL, 0))
            snprintf(status, sizeof(status), "provider not loaded");
        p11t_tool_error("check: the token is not usable: %s", status);
        return P11T_TOOL_FAIL;
    }
    return P11T_TOOL_OK;
}

static int want_io(SSL *s, int ret)
{
    int e = SSL_get_error(s, ret);

    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

/* One handshake step of one side, unless it is done; 0 on a fatal error. */
static int handshake_step(SSL *s, int *done)
{
    int r;

    if (*done)
        return 1;
    r = SSL_do_handshake(s);
    if (r == 1)
        *done = 1;
    return r == 1 || want_io(s, r);
}

static int handshake(SSL *cl, SSL *sv)
{
    int i, cdone = 0, sdone = 0;

    for (i = 0; i < HANDSHAKE_ROUNDS && !(cdone && sdone); i++)
        if (!handshake_step(cl, &cdone) || !handshake_step(sv, &sdone))
            return 0;
    return cdone && sdone;
}

/*
 * One connection.  The server sends one byte so that the client also reads
 * the TLS 1.3 NewSessionTicket messages that follow the handshake.
 */
static int connect_once(check_ctx *c, int version, SSL_SESSION *resume,
                        SSL_SESSION **session_out, int *reused)
{
    SSL *cl = SSL_new(c->client), *sv = SSL_new(c->server);
    BIO *bc = NULL, *bs = NULL;
    unsigned char byte = 'x';
    int ok = 0, reported = 0, r = 0, i;

    if (cl == NULL || sv == NULL || !BIO_new_bio_pair(&bc, 0, &bs, 0))
        goto done;
    SSL_set_bio(cl, bc, bc);
    SSL_set_bio(sv, bs, bs);
    if (!SSL_set_min_proto_version(cl, version) ||
        !SSL_set_max_proto_version(cl, version) ||
        !SSL_set_min_proto_version(sv, version) ||
        !SSL_set_max_proto_version(sv, version))
        goto done;
    if (resume != NULL && !SSL_set_session(cl, resume))
        goto done;
    SSL_set_connect_state(cl);
    SSL_set_accept_state(sv);

    if (!handshake(cl, sv)) {
        p11t_tool_error("check: %s %s failed:", version_name(version),
                        resume != NULL ? "resumption handshake"
                                       : "first handshake");
        p11t_tool_print_ossl_errors();
        reported = 1;
        goto done;
    }
    if (SSL_version(cl) != version) {
        p11t_tool_error("check: negotiated %s instead of %s",
                        SSL_get_version(cl), version_name(version));
        reported = 1;
        goto done;
    }
    if (SSL_write(sv, &byte, 1) != 1)
        goto io_fail;
    for (i = 0; i < HANDSHAKE_ROUNDS && r != 1; i++) {
        r = SSL_read(cl, &byte, 1);
        if (r != 1 && !want_io(cl, r))
            goto io_fail;
    }
    if (r != 1)
        goto io_fail;

    *reused = SSL_session_reused(cl) && SSL_session_reused(sv);
    if (session_out != NULL && (*session_out = SSL_get1_session(cl)) == NULL)
        goto done;
    /*
     * A clean close: SSL_free() on a connection that sent no close_notify
     * marks its session not resumable (ssl/ssl_lib.c ssl_clear_bad_session).
     */
    SSL_shutdown(cl);
    SSL_shutdown(sv);
    ok = 1;
    goto done;

io_fail:
    p11t_tool_error("check: %s: cannot exchange data after the handshake:",
                    version_name(version));
    p11t_tool_print_ossl_errors();
    reported = 1;
done:
    SSL_free(cl);
    SSL_free(sv);
    if (!ok && !reported) {
        p11t_tool_error("check: %s: cannot set up the connection",
                        version_name(version));
        p11t_tool_print_ossl_errors();
    }
    return ok;
}

static int check_version(check_ctx *c, int version)
{
    const char *vname = version_name(version);
    SSL_SESSION *sess = NULL;
    const unsigned char *tick = NULL;
    size_t tick_len = 0;
    p11ticket_stats before, after;
    char hex[33];
    int reused = 0, rc = P11T_TOOL_FAIL, have_stats;

    have_stats = p11ticket_get_stats(c->server, &before);
    if (!connect_once(c, version, NULL, &sess, &reused))
        goto done;
    SSL_SESSION_get0_ticket(sess, &tick, &tick_len);
    if (tick == NULL || tick_len < P11TICKET_KEY_NAME_LEN ||
        !SSL_SESSION_is_resumable(sess)) {
        p11t_tool_error("check: %s: the server issued no ticket", vname);
        print_provider_state(c);
        goto done;
    }
    /* A TLS 1.3 server issues stateful tickets when the callback is off. */
    if (have_stats && p11ticket_get_stats(c->server, &after) &&
        after.issued == before.issued) {
        p11t_tool_error("check: %s: the server issued a ticket, but not "
                        "under a token key",
                        vname);
        print_provider_state(c);
        goto done;
    }
    /* RFC 5077 section 4: the ticket starts with the 16-byte key_name. */
    p11t_hex(tick, hex);

    if (!connect_once(c, version, sess, NULL, &reused))
        goto done;
    printf("%s: ticket issued under key %s, resumed: %s\n", vname, hex,
           reused ? "yes" : "no");
    if (!reused) {
        p11t_tool_error("check: %s: the ticket under key %s was not "
                        "accepted",
                        vname, hex);
        print_provider_state(c);
        goto done;
    }
    rc = P11T_TOOL_OK;
done:
    SSL_SESSION_free(sess);
    return rc;
}

static int run(p11t_tool *t, int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const int versions[] = {TLS1_2_VERSION, TLS1_3_VERSION};
    const char *pin_source;
    check_ctx c;
    size_t i;
    int ch, rc, r;

    p11t_tool_getopt_reset(&p11t_tool_cmd_check, argv);
    /* --help is the only option: any option ends the command. */
    if ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1)
        return p11t_tool_help_or_bad(&p11t_tool_cmd_check, ch);
    if (optind < argc)
        return p11t_tool_unexpected(&p11t_tool_cmd_check, argv[optind]);

    /* Validate the section first: its messages name the key at fault. */
    if ((rc = p11t_tool_load_config(t)) != P11T_TOOL_OK)
        return rc;
    pin_source = p11t_tool_conf_value(t, "pin-source");
    if (pin_source != NULL && strcmp(pin_source, "prompt") == 0) {
        p11t_tool_error("check: %s: [%s] pin-source: the provider never "
                        "prompts, so check, like a server, needs file: or "
                        "env:",
                        t->config_file, t->file.section);
        return P11T_TOOL_USAGE;
    }

    memset(&c, 0, sizeof(c));
    c.t = t;
    p11ticket_set_log_callback(log_cb, t);
    rc = setup(&c);
    /* Both versions even if one fails: their failures differ in meaning. */
    if (rc == P11T_TOOL_OK) {
        for (i = 0; i < sizeof(versions) / sizeof(*versions); i++) {
            r = check_version(&c, versions[i]);
            if (r != P11T_TOOL_OK)
                rc = r;
        }
    }
    if (rc == P11T_TOOL_OK && t->verbose) {
        char status[512] = "", cur[33] = "";

        p11ticket_status(c.server, status, sizeof(status), cur, sizeof(cur));
        fprintf(stderr, "p11ticket: provider status: %s; current key: %s\n",
                status, cur[0] ? cur : "none");
    }

    SSL_CTX_free(c.server);
    SSL_CTX_free(c.client);
    X509_free(c.cert);
    EVP_PKEY_free(c.pkey);
    OSSL_LIB_CTX_free(c.libctx);
    p11ticket_set_log_callback(NULL, NULL);
    return rc;
}

const p11t_tool_cmd p11t_tool_cmd_check = {
    .name = "check",
    .summary = "issue and resume a TLS 1.2 and a TLS 1.3 ticket through the "
               "provider",
    .run = run,
    .usage = usage,
};
