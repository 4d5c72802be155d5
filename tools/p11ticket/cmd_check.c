/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_check.c - issue and accept one ticket through the provider, exactly as
 * a server would, for TLS 1.2 and TLS 1.3.
 *
 * Both ends run in this process over a memory BIO pair; the server SSL_CTX
 * comes from p11ticket_SSL_CTX_new() in a private OSSL_LIB_CTX loaded from
 * the same openssl.cnf the servers use.  With --connect the tool checks a
 * running server from the outside instead (check_connect.c).  Either way
 * the configuration must route the ticket HMAC when auto-enable is on.
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
#define OPT_CONNECT P11T_TOOL_OPT_LONG
#define OPT_SERVERNAME (P11T_TOOL_OPT_LONG + 1)

typedef struct check_ctx {
    p11t_tool *t;
    OSSL_LIB_CTX *libctx;
    EVP_PKEY *pkey;
    X509 *cert;
    SSL_CTX *server, *client;
    /*
     * While p11ticket_enable() runs, the library's errors are held here
     * rather than printed: when it fails, check says why in its own line,
     * and the library's line would repeat the same cause.
     */
    int hold_errors;
    char held[512];
} check_ctx;

static void usage(FILE *fp)
{
    fputs(
        "usage: p11ticket [global options] check\n"
        "         [--connect HOST:PORT [--servername NAME]]\n"
        "\n"
        "Without --connect: load the configuration file into a private "
        "OpenSSL\n"
        "library context, as a server does, and run two in-memory "
        "handshakes per\n"
        "protocol version (TLS 1.2 and TLS 1.3) against a throwaway "
        "self-signed\n"
        "certificate: the first gets a ticket from the token's current key, "
        "the\n"
        "second presents it and must be resumed.  The server keeps no "
        "session cache,\n"
        "so only the ticket can resume.  Exits 0 only if both versions "
        "resumed.\n"
        "\n"
        "With --connect: check a running server (nginx, HAProxy, "
        "p11ticket-server...)\n"
        "from the outside.  Connect as a plain TLS client (never through "
        "the\n"
        "provider; the server's certificate is NOT verified: this checks "
        "tickets,\n"
        "not certificates), once with TLS 1.2 and once with TLS 1.3.  Nothing "
        "is sent;\n"
        "TLS 1.3 tickets are read for up to 2 s after the handshake.  The "
        "ticket's\n"
        "first 16 bytes name its key, which is looked up on the token of "
        "the\n"
        "configuration; then the session is presented on a new connection. "
        " One line\n"
        "per version on stdout, e.g.\n"
        "  TLSv1.3: ticket under token key NAME (active, current); resumed: "
        "yes; new\n"
        "  ticket under token key NAME (active, current)\n"
        "A version the server does not offer (its handshake fails) is "
        "reported and\n"
        "not counted, unless neither version works.\n"
        "\n"
        "Either way, when auto-enable is on (the default) the file must "
        "route the\n"
        "ticket HMAC to the provider ('default_properties = "
        "?p11ticket.token=yes'\n"
        "in the section that alg_section names): otherwise unmodified "
        "servers would\n"
        "issue no tickets, and check fails before anything else.\n"
        "\n"
        "Options:\n"
        "  --connect HOST:PORT  check the server there ([V6ADDR]:PORT for "
        "IPv6)\n"
        "  --servername NAME    SNI to send (default: HOST, none for an IP "
        "address;\n"
        "                       '' sends none)\n"
        "  -h, --help           show this help\n"
        "\n"
        "Exit status: 0 every version resumed (with --connect: every "
        "version the\n"
        "server offers got a ticket under a token key and resumed); 1 a "
        "handshake,\n"
        "ticket or resumption failed, a ticket is not under a token key or "
        "none was\n"
        "issued; 2 usage or configuration error, or (--connect) no TCP or "
        "no TLS\n"
        "connection to HOST:PORT at all.\n",
        fp);
}

static void log_cb(int level, const char *msg, void *arg)
{
    check_ctx *c = arg;
    const p11t_tool *t = c->t;

    switch (level) {
    case P11TICKET_LOG_ERROR:
        if (c->hold_errors) {
            if (c->held[0] == '\0')
                snprintf(c->held, sizeof(c->held), "%s", msg);
            break;
        }
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

/* ---- routing of the ticket HMAC (auto-enable) --------------------------- */

#define ROUTE_NAME "p11ticket.token"

static const char *skip_space(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

/*
 * One element of a property query ([-][?]name[=value|!=value], OpenSSL's
 * crypto/property/property_parse.c): 1 if it asks for p11ticket.token=yes
 * (a bare name means =yes), with *optional set for a leading '?'.
 */
static int element_routes(const char *p, const char *end, int *optional)
{
    size_t n = sizeof(ROUTE_NAME) - 1;
    const char *v;

    p = skip_space(p, end);
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *optional = p < end && *p == '?';
    if (*optional)
        p = skip_space(p + 1, end);
    if ((size_t)(end - p) < n || strncasecmp(p, ROUTE_NAME, n) != 0)
        return 0;
    p = skip_space(p + n, end);
    if (p == end)
        return 1;
    if (*p != '=')
        return 0; /* "!=", or a longer name */
    v = skip_space(p + 1, end);
    if (end - v >= 2 && (*v == '"' || *v == '\'') && end[-1] == *v) {
        v++;
        end--;
    }
    return end - v == 3 && strncasecmp(v, "yes", 3) == 0;
}

/* 1 if the query routes to the provider; *optional as above. */
static int props_route(const char *props, int *optional)
{
    const char *p = props;

    for (;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma != NULL ? comma : p + strlen(p);

        if (element_routes(p, end, optional))
            return 1;
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}

/*
 * With auto-enable (default yes) the provider installs the ticket callback
 * in every SSL_CTX of a process that loads it, including those of
 * unmodified servers, which create them with plain SSL_CTX_new().  libssl
 * fetches their ticket HMAC with the SSL_CTX's (empty) property query
 * (ssl_hmac_new), so only default_properties in the alg_section can route
 * it to the provider; unrouted, the callback refuses to issue and such
 * servers send no tickets at all (docs/configuration.md, "Routing").
 */
static int check_routing(const p11t_tool *t)
{
    const struct conf_st *conf = t->file.conf;
    /* Only for the message: the key itself is read by p11t_config_set(). */
    const char *ae = p11t_tool_conf_value(t, "auto-enable");
    const char *init, *algs, *props = NULL;
    int optional = 0, routed;
    char fix[320];

    init = p11t_conffile_lookup(conf, "default", "openssl_conf");
    algs =
        init != NULL ? p11t_conffile_lookup(conf, init, "alg_section") : NULL;
    if (algs != NULL)
        props = p11t_conffile_lookup(conf, algs, "default_properties");
    routed = props != NULL && props_route(props, &optional);

    if (routed && !optional) {
        p11t_tool_error("check: %s: [%s] default_properties: '%.80s' makes "
                        "p11ticket.token=yes mandatory, so every algorithm "
                        "the provider lacks (AES-GCM, SHA-256, ECDSA...) "
                        "becomes unavailable and TLS breaks; write "
                        "'?" P11TICKET_PROPERTY "'",
                        t->config_file, algs, props);
        return P11T_TOOL_USAGE;
    }
    if (routed || !p11t_config_auto_enable(t->file.cfg))
        return P11T_TOOL_OK;

    if (algs == NULL)
        snprintf(fix, sizeof(fix),
                 "add 'alg_section = algs' to [%s] and a section [algs] "
                 "with 'default_properties = " P11TICKET_PROPQ "'",
                 init != NULL ? init : "openssl_init");
    else if (props == NULL)
        snprintf(fix, sizeof(fix),
                 "add 'default_properties = " P11TICKET_PROPQ
                 "' to [%s] (named by alg_section)",
                 algs);
    else
        snprintf(fix, sizeof(fix),
                 "append '," P11TICKET_PROPQ "' to default_properties in "
                 "[%s] ('%.64s')",
                 algs, props);
    p11t_tool_error("check: %s: [%s] auto-enable is %s, but the ticket HMAC "
                    "is not routed to the provider: unmodified servers "
                    "(nginx, HAProxy...) would issue no session tickets at "
                    "all.  Fix: %s; or set 'auto-enable = no' if only "
                    "programs that call p11ticket_SSL_CTX_new() use this "
                    "file",
                    t->config_file, t->file.section,
                    ae != NULL ? "on" : "on by default", fix);
    return P11T_TOOL_USAGE;
}

static int setup(check_ctx *c)
{
    const char *file = c->t->config_file;
    int r;

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

    c->hold_errors = 1;
    c->held[0] = '\0';
    r = p11ticket_enable(c->server);
    c->hold_errors = 0;
    if (r != 1) {
        char status[512] = "";

        /* The provider's status line is the cause the library logged. */
        if (!p11ticket_status(c->server, status, sizeof(status), NULL, 0))
            snprintf(status, sizeof(status), "%s",
                     c->held[0] != '\0' ? c->held : "provider not loaded");
        p11t_tool_error("check: the token is not usable: %s", status);
        return P11T_TOOL_FAIL;
    }
    if (c->held[0] != '\0')
        fprintf(stderr, "p11ticket: library error: %s\n", c->held);
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
        {"connect", required_argument, NULL, OPT_CONNECT},
        {"servername", required_argument, NULL, OPT_SERVERNAME},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const int versions[] = {TLS1_2_VERSION, TLS1_3_VERSION};
    const char *pin_source, *target = NULL, *servername = NULL;
    check_ctx c;
    size_t i;
    int ch, rc, r;

    p11t_tool_getopt_reset(&p11t_tool_cmd_check, argv);
    while ((ch = p11t_tool_getopt(t, &p11t_tool_cmd_check, argc, argv, "h",
                                  opts)) != -1) {
        switch (ch) {
        case OPT_CONNECT:
            target = optarg;
            break;
        case OPT_SERVERNAME:
            servername = optarg;
            break;
        default:
            return p11t_tool_help_or_bad(&p11t_tool_cmd_check, ch);
        }
    }
    if (optind < argc)
        return p11t_tool_unexpected(&p11t_tool_cmd_check, argv[optind]);
    if (servername != NULL && target == NULL) {
        p11t_tool_error("check: --servername needs --connect");
        return p11t_tool_bad_usage(&p11t_tool_cmd_check);
    }

    /* Validate the section first: its messages name the key at fault. */
    if ((rc = p11t_tool_load_config(t)) != P11T_TOOL_OK)
        return rc;
    if ((rc = check_routing(t)) != P11T_TOOL_OK)
        return rc;
    /* The tool reads the token itself, so a prompt is fine here. */
    if (target != NULL)
        return p11t_tool_check_connect(t, target, servername);
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
    p11ticket_set_log_callback(log_cb, &c);
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
    .summary = "resume TLS 1.2 and 1.3 tickets in memory, or from a running "
               "server",
    .run = run,
    .usage = usage,
};
