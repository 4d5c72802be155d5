/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tool.c - shared helpers of the p11ticket setup tool: configuration,
 * token handle, PINs, messages.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>

#include "tool.h"

/* PKCS#11 leaves PIN length to the token; SoftHSM allows up to 255. */
#define TOOL_PIN_MAX 256

/*
 * Why the last tty prompt for the token's user PIN failed.  hsm/ only learns
 * "no PIN entered" from the prompt callback; the report names the cause.
 */
static char prompt_failure[P11T_TOOL_WHY_LEN];

/* ---- messages ------------------------------------------------------------ */

static void vmessage(const char *kind, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void vmessage(const char *kind, const char *fmt, va_list ap)
{
    fflush(stdout); /* keep results and messages in order when piped */
    fputs("p11ticket: ", stderr);
    if (kind != NULL)
        fputs(kind, stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void p11t_tool_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vmessage(NULL, fmt, ap);
    va_end(ap);
}

void p11t_tool_warn(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vmessage("warning: ", fmt, ap);
    va_end(ap);
}

int p11t_tool_report(const char *what, CK_RV rv, const p11t_err *err)
{
    const char *msg =
        (err != NULL && err->msg[0] != '\0') ? err->msg : p11t_rv_name(rv);

    if (prompt_failure[0] != '\0') {
        p11t_tool_error("%s: pin-source: %s", what, prompt_failure);
        prompt_failure[0] = '\0';
    } else {
        p11t_tool_error("%s: %s", what, msg);
    }
    return rv == P11T_CKR_CONFIG ? P11T_TOOL_USAGE : P11T_TOOL_FAIL;
}

void p11t_tool_print_ossl_errors(void)
{
    unsigned long e;
    const char *data;
    int flags;
    char buf[256];

    while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        if ((flags & ERR_TXT_STRING) != 0 && data != NULL && *data != '\0')
            fprintf(stderr, "p11ticket:   %s (%s)\n", buf, data);
        else
            fprintf(stderr, "p11ticket:   %s\n", buf);
    }
}

void p11t_tool_getopt_reset(const p11t_tool_cmd *cmd, char **argv)
{
    static char argv0[64];

    /* getopt's own messages start with argv[0]: "p11ticket list: ...". */
    snprintf(argv0, sizeof(argv0), "p11ticket %s", cmd->name);
    argv[0] = argv0;
    /* glibc: optind = 0 re-initialises getopt's internal state as well. */
    optind = 0;
    opterr = 1;
}

/* The global options (main.c parses them before the command name). */
static const struct option global_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"section", required_argument, NULL, 's'},
    {"verbose", no_argument, NULL, 'v'},
};
#define GLOBAL_SHORT "c:s:v"
#define N_GLOBAL (sizeof(global_opts) / sizeof(global_opts[0]))
#define MAX_CMD_OPTS 32

int p11t_tool_global_opt(p11t_tool *t, int c, const char *arg)
{
    switch (c) {
    case 'c':
        if (*arg == '\0') {
            p11t_tool_error("--config: empty file name");
            return P11T_TOOL_USAGE;
        }
        t->config_file = arg;
        return P11T_TOOL_OK;
    case 's':
        if (*arg == '\0') {
            p11t_tool_error("--section: empty name");
            return P11T_TOOL_USAGE;
        }
        t->provider_name = arg;
        return P11T_TOOL_OK;
    default: /* 'v' */
        t->verbose++;
        return P11T_TOOL_OK;
    }
}

static int is_global(int c)
{
    return c == 'c' || c == 's' || c == 'v';
}

/* The command's options followed by the global ones; 0 if they clash. */
static int merge_options(const p11t_tool_cmd *cmd, const char *shortopts,
                         const struct option *longopts, struct option *all,
                         char *all_short, size_t short_len)
{
    size_t n = 0;

    for (const char *p = shortopts; *p != '\0'; p++)
        if (*p != ':' && is_global(*p)) {
            p11t_tool_error("internal error: %s: -%c is a global option",
                            cmd->name, *p);
            return 0;
        }
    for (; longopts[n].name != NULL; n++) {
        for (size_t g = 0; g < N_GLOBAL; g++)
            if (strcmp(longopts[n].name, global_opts[g].name) == 0 ||
                longopts[n].val == global_opts[g].val) {
                p11t_tool_error("internal error: %s: --%s clashes with the "
                                "global --%s",
                                cmd->name, longopts[n].name,
                                global_opts[g].name);
                return 0;
            }
        if (n == MAX_CMD_OPTS) {
            p11t_tool_error("internal error: %s: too many options", cmd->name);
            return 0;
        }
        all[n] = longopts[n];
    }
    memcpy(&all[n], global_opts, sizeof(global_opts));
    memset(&all[n + N_GLOBAL], 0, sizeof(*all));
    if ((size_t)snprintf(all_short, short_len, "%s%s", shortopts,
                         GLOBAL_SHORT) >= short_len) {
        p11t_tool_error("internal error: %s: too many options", cmd->name);
        return 0;
    }
    return 1;
}

int p11t_tool_getopt(p11t_tool *t, const p11t_tool_cmd *cmd, int argc,
                     char **argv, const char *shortopts,
                     const struct option *longopts)
{
    /* One command runs per process; getopt_long() wants the same tables on
     * every call of a parse. */
    static struct option all[MAX_CMD_OPTS + N_GLOBAL + 1];
    static char all_short[3 * MAX_CMD_OPTS + sizeof(GLOBAL_SHORT)];
    static const p11t_tool_cmd *built;
    int c;

    if (built != cmd) {
        if (!merge_options(cmd, shortopts, longopts, all, all_short,
                           sizeof(all_short)))
            return '?';
        built = cmd;
    }
    while ((c = getopt_long(argc, argv, all_short, all, NULL)) != -1 &&
           is_global(c))
        if (p11t_tool_global_opt(t, c, optarg) != P11T_TOOL_OK)
            return '?';
    return c;
}

int p11t_tool_bad_usage(const p11t_tool_cmd *cmd)
{
    fprintf(stderr, "Try 'p11ticket %s --help'.\n", cmd->name);
    return P11T_TOOL_USAGE;
}

int p11t_tool_help_or_bad(const p11t_tool_cmd *cmd, int c)
{
    if (c != 'h')
        return p11t_tool_bad_usage(cmd);
    cmd->usage(stdout);
    return P11T_TOOL_OK;
}

int p11t_tool_unexpected(const p11t_tool_cmd *cmd, const char *arg)
{
    p11t_tool_error("%s: unexpected argument '%s'", cmd->name, arg);
    return p11t_tool_bad_usage(cmd);
}

const char *p11t_tool_one_operand(const p11t_tool_cmd *cmd, int argc,
                                  char **argv, const char *missing,
                                  const char *several)
{
    if (argc - optind == 1)
        return argv[optind];
    p11t_tool_error("%s: %s", cmd->name, argc == optind ? missing : several);
    p11t_tool_bad_usage(cmd);
    return NULL;
}

int p11t_tool_name_operand(const p11t_tool_cmd *cmd, int argc, char **argv,
                           uint8_t name[static P11T_NAME_LEN])
{
    const char *arg = p11t_tool_one_operand(
        cmd, argc, argv, "which key? Give its name", "one key name at a time");

    if (arg == NULL || !p11t_tool_key_name(cmd->name, arg, name))
        return P11T_TOOL_USAGE;
    return P11T_TOOL_OK;
}

/* ---- configuration ------------------------------------------------------- */

static int resolve_config_file(p11t_tool *t)
{
    const char *env;

    if (t->config_file != NULL)
        return P11T_TOOL_OK;
    env = getenv("OPENSSL_CONF");
    if (env != NULL && *env != '\0') {
        t->config_file = env;
        return P11T_TOOL_OK;
    }
    /* The file OpenSSL itself loads when OPENSSL_CONF is unset. */
    t->config_file_owned = CONF_get1_default_config_file();
    if (t->config_file_owned == NULL) {
        p11t_tool_error("no configuration file: use --config FILE or set "
                        "OPENSSL_CONF");
        return P11T_TOOL_USAGE;
    }
    t->config_file = t->config_file_owned;
    return P11T_TOOL_OK;
}

int p11t_tool_load_config(p11t_tool *t)
{
    p11t_err err = {0};
    CK_RV rv;
    int rc;

    if ((rc = resolve_config_file(t)) != P11T_TOOL_OK)
        return rc;
    rv = p11t_conffile_load(t->config_file, t->provider_name, &t->file, &err);
    if (rv != CKR_OK) {
        p11t_tool_error("%s", err.msg);
        return rv == CKR_HOST_MEMORY ? P11T_TOOL_FAIL : P11T_TOOL_USAGE;
    }
    t->refresh_interval = p11t_config_refresh_interval(t->file.cfg);
    p11t_config_policy(t->file.cfg, &t->policy);
    return P11T_TOOL_OK;
}

void p11t_tool_policy_defaults(const p11t_tool *t, p11t_policy *p)
{
    if (p->encrypt_for == 0)
        p->encrypt_for = t->policy.encrypt_for;
    if (p->decrypt_for == 0)
        p->decrypt_for = t->policy.decrypt_for;
    if (p->lead == 0)
        p->lead = t->policy.lead;
}

const char *p11t_tool_conf_value(const p11t_tool *t, const char *key)
{
    return p11t_conffile_value(&t->file, key);
}

static int hsm_prompt(char *buf, size_t len, void *arg)
{
    const p11t_tool *t = arg;
    const char *uri = p11t_tool_conf_value(t, "token-uri");
    char prompt[512];
    int n;

    snprintf(prompt, sizeof(prompt),
             "User PIN for %s: ", uri != NULL ? uri : "the token");
    n = p11t_tool_tty_secret(prompt, buf, len, prompt_failure);
    if (n == 0) {
        snprintf(prompt_failure, sizeof(prompt_failure), "empty PIN");
        return -1;
    }
    if (n > 0)
        prompt_failure[0] = '\0';
    return n;
}

int p11t_tool_open_hsm(p11t_tool *t)
{
    p11t_config *cfg = t->file.cfg;
    p11t_err err;
    CK_RV rv;

    p11t_err_clear(&err);
    t->file.cfg = NULL; /* p11t_hsm_new() owns it from here, even on error */
    rv = p11t_hsm_new(cfg, &t->hsm, &err);
    if (rv != CKR_OK) {
        t->hsm = NULL;
        return p11t_tool_report(t->config_file, rv, &err);
    }
    p11t_hsm_set_pin_prompt(t->hsm, hsm_prompt, t);
    return P11T_TOOL_OK;
}

void p11t_tool_cleanup(p11t_tool *t)
{
    /* No C_Finalize here: SoftHSM crashes when finalized at exit. */
    p11t_hsm_free(t->hsm);
    t->hsm = NULL;
    p11t_conffile_free(&t->file);
    OPENSSL_free(t->config_file_owned);
    t->config_file_owned = NULL;
}

/* ---- PINs ---------------------------------------------------------------- */

static volatile sig_atomic_t tty_signo;

static void tty_on_signal(int sig)
{
    tty_signo = sig;
}

static void tty_write(int fd, const char *s)
{
    size_t len = strlen(s);

    while (len > 0) {
        ssize_t w = write(fd, s, len);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        len -= (size_t)w;
    }
}

int p11t_tool_tty_secret(const char *prompt, char *buf, size_t len,
                         char why[static P11T_TOOL_WHY_LEN])
{
    /* Signals that would otherwise leave the terminal with echo off. */
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
    struct sigaction sa, saved[sizeof(sigs) / sizeof(sigs[0])];
    struct termios old, noecho;
    int fd, have_term, done = 0, too_long = 0;
    size_t n = 0, i;

    why[0] = '\0';
    if (len < 2) {
        snprintf(why, P11T_TOOL_WHY_LEN, "no room for a PIN");
        return -1;
    }
    fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, P11T_TOOL_WHY_LEN,
                 "'prompt' needs a terminal, but /dev/tty: %s (use file: or "
                 "env:)",
                 strerror(errno));
        return -1;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = tty_on_signal; /* no SA_RESTART: read() must return */
    sigemptyset(&sa.sa_mask);
    tty_signo = 0;
    for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &sa, &saved[i]);

    have_term = tcgetattr(fd, &old) == 0;
    if (have_term) {
        noecho = old;
        noecho.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL);
        noecho.c_lflag |= ICANON;
        tcsetattr(fd, TCSAFLUSH, &noecho);
    }
    tty_write(fd, prompt);

    /* One byte at a time, so no stdio buffer ever holds the PIN. */
    while (tty_signo == 0) {
        char c;
        ssize_t r = read(fd, &c, 1);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (c == '\n' || c == '\r') {
            done = 1;
            break;
        }
        if (n + 1 < len)
            buf[n++] = c;
        else
            too_long = 1;
        OPENSSL_cleanse(&c, sizeof(c));
    }
    buf[n] = '\0';

    if (have_term)
        tcsetattr(fd, TCSAFLUSH, &old);
    tty_write(fd, "\n");
    close(fd);
    for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &saved[i], NULL);
    if (tty_signo != 0) {
        OPENSSL_cleanse(buf, len);
        snprintf(why, P11T_TOOL_WHY_LEN, "interrupted");
        raise(tty_signo);
        return -1;
    }
    if (too_long) {
        OPENSSL_cleanse(buf, len);
        snprintf(why, P11T_TOOL_WHY_LEN,
                 "PIN too long (at most %zu characters)", len - 1);
        return -1;
    }
    if (!done) {
        OPENSSL_cleanse(buf, len);
        snprintf(why, P11T_TOOL_WHY_LEN, "no PIN entered");
        return -1;
    }
    return (int)n;
}

int p11t_tool_pin_get(const char *source, const char *what, const char *origin,
                      int confirm, p11t_tool_pin *pin)
{
    char prompt[128], why[P11T_TOOL_WHY_LEN], *again = NULL;
    p11t_err err;
    CK_RV rv;
    int n, m;

    memset(pin, 0, sizeof(*pin));
    if (source == NULL) {
        p11t_tool_error("%s: not set", origin);
        return P11T_TOOL_USAGE;
    }
    if (strcmp(source, "prompt") != 0) {
        static const char pfx[] = "pin-source: ";
        const char *msg;

        p11t_err_clear(&err);
        rv = p11t_pin_read(source, &pin->buf, &pin->len, &err);
        if (rv != CKR_OK) {
            pin->buf = NULL;
            /* hsm/ names the key "pin-source"; origin says which one. */
            msg = err.msg[0] != '\0' ? err.msg : p11t_rv_name(rv);
            if (strncmp(msg, pfx, sizeof(pfx) - 1) == 0)
                msg += sizeof(pfx) - 1;
            p11t_tool_error("%s: %s", origin, msg);
            return rv == P11T_CKR_CONFIG ? P11T_TOOL_USAGE : P11T_TOOL_FAIL;
        }
        pin->from_hsm = 1;
        return P11T_TOOL_OK;
    }

    pin->buf = OPENSSL_secure_zalloc(TOOL_PIN_MAX + 1);
    if (pin->buf == NULL || (confirm && (again = OPENSSL_secure_zalloc(
                                             TOOL_PIN_MAX + 1)) == NULL)) {
        p11t_tool_pin_release(pin);
        p11t_tool_error("out of memory");
        return P11T_TOOL_FAIL;
    }
    snprintf(prompt, sizeof(prompt), "%s%s: ", confirm ? "New " : "", what);
    n = p11t_tool_tty_secret(prompt, pin->buf, TOOL_PIN_MAX + 1, why);
    if (n == 0)
        snprintf(why, sizeof(why), "empty PIN");
    if (n > 0 && confirm) {
        snprintf(prompt, sizeof(prompt), "Repeat the new %s: ", what);
        m = p11t_tool_tty_secret(prompt, again, TOOL_PIN_MAX + 1, why);
        if (m >= 0 && (m != n || CRYPTO_memcmp(again, pin->buf, n) != 0)) {
            snprintf(why, sizeof(why), "the two entries differ");
            m = -1;
        }
        if (m < 0)
            n = -1;
    }
    OPENSSL_secure_clear_free(again, TOOL_PIN_MAX + 1);
    if (n <= 0) {
        p11t_tool_error("%s: %s", what, why);
        p11t_tool_pin_release(pin);
        return P11T_TOOL_FAIL;
    }
    pin->len = (size_t)n;
    return P11T_TOOL_OK;
}

void p11t_tool_pin_release(p11t_tool_pin *pin)
{
    if (pin->buf != NULL) {
        if (pin->from_hsm)
            p11t_pin_free(pin->buf, pin->len);
        else
            OPENSSL_secure_clear_free(pin->buf, TOOL_PIN_MAX + 1);
    }
    memset(pin, 0, sizeof(*pin));
}

/* ---- formatting ---------------------------------------------------------- */

void p11t_tool_format_time(int64_t t, char out[static 32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (t == P11T_TIME_NEVER) {
        strcpy(out, "never");
        return;
    }
    if ((int64_t)tt != t || gmtime_r(&tt, &tm) == NULL ||
        strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 32, "@%lld", (long long)t);
}

int64_t p11t_tool_now(void)
{
    return (int64_t)time(NULL);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len, i;
    unsigned cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2, cp = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3, cp = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4, cp = s[0] & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    /* Overlong forms, surrogates and code points past U+10FFFF. */
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
        return 0;
    return len;
}

void p11t_tool_pkcs11_string(const CK_UTF8CHAR *s, size_t len, char *out)
{
    size_t i = 0, o = 0, k;

    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\0'))
        len--;
    while (i < len) {
        if (s[i] < 0x20 || s[i] == 0x7f ||
            (k = utf8_len(s + i, len - i)) == 0) {
            out[o++] = '?';
            i++;
            continue;
        }
        memcpy(out + o, s + i, k);
        o += k;
        i += k;
    }
    out[o] = '\0';
}

/* ---- JSON ---------------------------------------------------------------- */

void p11t_tool_json_string(const char *s)
{
    putchar('"');
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

void p11t_tool_json_time(const char *key, int64_t t)
{
    char buf[32];

    if (t == P11T_TIME_NEVER) {
        printf("\"%s\": null, \"%s_unix\": null", key, key);
        return;
    }
    p11t_tool_format_time(t, buf);
    printf("\"%s\": \"%s\", \"%s_unix\": %lld", key, buf, key, (long long)t);
}

const char *p11t_tool_json_bool(int b)
{
    return b ? "true" : "false";
}

/* Every string printed here is hex or from a fixed table: no escaping. */
void p11t_tool_json_generation(const p11t_objinfo *objs, size_t n,
                               const p11t_keyinfo *g, int current, int64_t now,
                               const char *sep)
{
    char hex[33];

    p11t_hex(g->name, hex);
    printf("\"name\": \"%s\", \"state\": \"%s\", \"current\": %s, "
           "\"complete\": %s%s",
           hex, p11t_state_name(p11t_lifecycle_state(&g->times, now)),
           p11t_tool_json_bool(current),
           p11t_tool_json_bool(p11t_tool_complete(g)), sep);
    p11t_tool_json_time("encrypt_from", g->times.encrypt_from);
    fputs(sep, stdout);
    p11t_tool_json_time("encrypt_until", g->times.encrypt_until);
    fputs(sep, stdout);
    p11t_tool_json_time("decrypt_until", g->times.decrypt_until);
    printf("%s\"aes_bits\": %lu, \"hmac_bits\": %lu, \"check\": \"%s\"", sep,
           g->has_aes ? (unsigned long)g->aes_len * 8 : 0UL,
           g->has_hmac ? (unsigned long)g->hmac_len * 8 : 0UL,
           p11t_tool_gen_ok(objs, n, g) ? "ok" : "WEAK");
}

void p11t_tool_describe(const p11t_times *tm, int64_t now, char *buf,
                        size_t len)
{
    char ef[32], eu[32], du[32];

    p11t_tool_format_time(tm->encrypt_from, ef);
    p11t_tool_format_time(tm->encrypt_until, eu);
    p11t_tool_format_time(tm->decrypt_until, du);
    if (tm->encrypt_from >= tm->encrypt_until)
        snprintf(buf, len, "%s, never encrypts, decrypts until %s",
                 p11t_state_name(p11t_lifecycle_state(tm, now)), du);
    else
        snprintf(buf, len, "%s, encrypts %s to %s, decrypts until %s",
                 p11t_state_name(p11t_lifecycle_state(tm, now)), ef, eu, du);
}

/* ---- option values ------------------------------------------------------- */

int p11t_tool_duration(const char *cmd, const char *option, const char *arg,
                       int64_t *out)
{
    if (!p11t_parse_duration(arg, out)) {
        p11t_tool_error("%s: %s: '%s' is not a duration: use a positive "
                        "number with an optional unit s, m, h or d, e.g. "
                        "90m, 12h, 7d",
                        cmd, option, arg);
        return 0;
    }
    return 1;
}

int p11t_tool_aes_bits(const char *cmd, const char *arg, CK_ULONG *aes_len)
{
    if (strcmp(arg, "256") == 0) {
        *aes_len = 32;
    } else if (strcmp(arg, "128") == 0) {
        *aes_len = 16;
    } else {
        p11t_tool_error("%s: --aes-bits must be 256 or 128, not '%s'", cmd,
                        arg);
        return 0;
    }
    return 1;
}

int p11t_tool_key_name(const char *cmd, const char *arg,
                       uint8_t name[static P11T_NAME_LEN])
{
    if (!p11t_unhex(arg, name)) {
        p11t_tool_error("%s: '%s' is not a key name: expected 32 hex digits, "
                        "as 'p11ticket list' prints them",
                        cmd, arg);
        return 0;
    }
    return 1;
}

int p11t_tool_policy_opt(const char *cmd, int c, const char *arg,
                         p11t_policy *p)
{
    switch (c) {
    case 'e':
        return p11t_tool_duration(cmd, "--encrypt-for", arg, &p->encrypt_for);
    case 'd':
        return p11t_tool_duration(cmd, "--decrypt-for", arg, &p->decrypt_for);
    default: /* 'l' */
        return p11t_tool_duration(cmd, "--lead", arg, &p->lead);
    }
}

/* ---- token helpers ------------------------------------------------------- */

int p11t_tool_read_token(p11t_tool *t, const char *what, p11t_objinfo **objs,
                         size_t *n_objs, p11t_keyinfo **gens, size_t *n_gens)
{
    int rc;

    if ((rc = p11t_tool_load_config(t)) != P11T_TOOL_OK ||
        (rc = p11t_tool_open_hsm(t)) != P11T_TOOL_OK ||
        (rc = p11t_tool_scan(t, what, objs, n_objs, gens, n_gens)) !=
            P11T_TOOL_OK)
        return rc;
    p11t_tool_sort_generations(*gens, *n_gens);
    return P11T_TOOL_OK;
}

int p11t_tool_scan(p11t_tool *t, const char *what, p11t_objinfo **objs,
                   size_t *n_objs, p11t_keyinfo **gens, size_t *n_gens)
{
    p11t_objinfo *o = NULL;
    size_t n = 0;
    p11t_err err;
    CK_RV rv;

    *gens = NULL;
    *n_gens = 0;
    if (objs != NULL) {
        *objs = NULL;
        *n_objs = 0;
    }
    p11t_err_clear(&err);
    rv = p11t_hsm_list(t->hsm, &o, &n, &err);
    if (rv != CKR_OK)
        return p11t_tool_report(what, rv, &err);
    if (p11t_fold_generations(o, n, gens, n_gens) != 0) {
        free(o);
        p11t_tool_error("%s: out of memory", what);
        return P11T_TOOL_FAIL;
    }
    if (objs != NULL) {
        *objs = o;
        *n_objs = n;
    } else {
        free(o);
    }
    return P11T_TOOL_OK;
}

/*
 * A generation needs exactly one usable object of each role to be used
 * (the servers ignore it otherwise), and its labels should agree.
 */
void p11t_tool_warn_generations(const p11t_objinfo *objs, size_t n,
                                const p11t_keyinfo *gens, size_t ng, int cur)
{
    size_t weak = 0;

    for (size_t i = 0; i < ng; i++) {
        const p11t_keyinfo *g = &gens[i];
        const p11t_objinfo *first = NULL;
        int has[3] = {0, 0, 0}, differ = 0;
        char hex[33];

        for (size_t j = 0; j < n; j++) {
            const p11t_objinfo *o = &objs[j];

            if (memcmp(o->name, g->name, P11T_NAME_LEN) != 0)
                continue;
            if (o->role == P11T_ROLE_AES || o->role == P11T_ROLE_HMAC)
                has[o->role]++;
            if (first == NULL)
                first = o;
            else if (o->times.encrypt_from != first->times.encrypt_from ||
                     o->times.encrypt_until != first->times.encrypt_until ||
                     o->times.decrypt_until != first->times.decrypt_until)
                differ = 1;
        }
        p11t_hex(g->name, hex);
        if (!p11t_tool_complete(g))
            p11t_tool_warn("key %s is incomplete (%d aes and %d hmac objects, "
                           "%s usable): servers ignore it; 'p11ticket purge' "
                           "removes it once it is 10 minutes old",
                           hex, has[P11T_ROLE_AES], has[P11T_ROLE_HMAC],
                           g->has_aes == 1 || g->has_hmac == 1 ? "not all"
                                                               : "none");
        if (differ)
            p11t_tool_warn("key %s: its objects' labels disagree on the "
                           "lifecycle times; the stricter times are shown",
                           hex);
    }
    for (size_t i = 0; i < n; i++)
        weak += !p11t_tool_obj_ok(&objs[i]);
    if (weak > 0)
        p11t_tool_warn("%zu object(s) marked WEAK: their values may leave "
                       "the token",
                       weak);
    if (n > 0 && cur < 0)
        p11t_tool_warn("no generation is active: servers issue no tickets "
                       "until 'p11ticket rotate' (or create) makes one");
}
