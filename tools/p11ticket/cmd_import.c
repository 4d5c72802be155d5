/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_import.c - migrate the ticket-key files of other servers into the
 * token, so that tickets those servers issued keep resuming.
 *
 * Everything is parsed and validated before the token is touched, and a
 * failed import removes the generations this run created: a key file is
 * imported completely or not at all.  The file is read with read(2) into
 * OpenSSL's secure heap (no stdio buffer holds key bytes), and every copy
 * is cleansed.  Key bytes are never printed.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "keyfile.h"
#include "tool.h"

#define OPT_STATE P11T_TOOL_OPT_LONG

/* Room for a whole key file plus the parsed keys (see keyfile.h limits). */
#define IMPORT_SECURE_HEAP (256 * 1024)

static void usage(FILE *fp)
{
    fputs("usage: p11ticket [global options] import --format FORMAT "
          "[--state active|decrypt-only]\n"
          "         [--encrypt-for DURATION] [--decrypt-for DURATION] "
          "[--dry-run] FILE\n"
          "\n"
          "Import the ticket keys of another server into the token, so that "
          "tickets it\n"
          "issued keep resuming on p11ticket servers.  The key name is the "
          "file's own\n"
          "16-byte name.  FILE '-' reads standard input.  The format is never "
          "guessed,\n"
          "because layouts of the same size differ:\n"
          "  openssl80   80 bytes: name[16] | hmac[32] | aes[32], AES-256 "
          "(OpenSSL's\n"
          "              SSL_CTX_set_tlsext_ticket_keys); aliases nginx80, "
          "envoy\n"
          "  nginx48     48 bytes: name[16] | aes[16] | hmac[16], AES-128\n"
          "  node48      48 bytes: name[16] | hmac[16] | aes[16], AES-128 "
          "(Node.js\n"
          "              ticketKeys); alias apache48 "
          "(SSLSessionTicketKeyFile)\n"
          "  haproxy     tls-ticket-keys text file: one base64 key per line, "
          "48 bytes\n"
          "              name[16] | aes[16] | hmac[16] or 80 bytes name[16] | "
          "aes[32] |\n"
          "              hmac[32]; blank lines and # comments are skipped.  "
          "HAProxy\n"
          "              encrypts with the penultimate line (the only line if "
          "there is\n"
          "              one): that key is imported with --state, all others "
          "as\n"
          "              decrypt-only.\n"
          "\n"
          "Times: an active key encrypts from now for --encrypt-for, then "
          "decrypts for\n"
          "--decrypt-for; a decrypt-only key decrypts from now for "
          "--decrypt-for.  The\n"
          "newest active generation encrypts, so an active import takes over "
          "from the\n"
          "token's current key.  A key whose name is already on the token is "
          "an error.\n"
          "\n"
          "Afterwards destroy the key file (shred -u FILE): whoever has it can "
          "decrypt\n"
          "every session its keys protected.\n"
          "\n"
          "Options:\n"
          "  -f, --format FORMAT         the file's format (required)\n"
          "      --state STATE           active (default) or decrypt-only\n"
          "  -e, --encrypt-for DURATION  encrypt window of an active key "
          "(default: the\n"
          "                              section's encrypt-for, else 12h)\n"
          "  -d, --decrypt-for DURATION  decrypt-only window (default: the "
          "section's\n"
          "                              decrypt-for, else 24h)\n"
          "  -n, --dry-run               validate the file and print what "
          "would be\n"
          "                              imported; change nothing\n"
          "  -h, --help                  show this help\n"
          "\n"
          "Exit status: 0 imported, 1 the file is unreadable or malformed or "
          "a token\n"
          "operation failed (nothing is left half-imported), 2 usage or "
          "configuration\n"
          "error.\n",
          fp);
}

typedef struct file_buf {
    uint8_t *p; /* secure heap, cap bytes */
    size_t len, cap;
} file_buf;

static void file_buf_free(file_buf *b)
{
    OPENSSL_secure_clear_free(b->p, b->cap);
    memset(b, 0, sizeof(*b));
}

/* Reads the whole file (or stdin for "-") into secure memory. */
static int read_file(const char *path, file_buf *b)
{
    int is_stdin = strcmp(path, "-") == 0;
    int fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;

    memset(b, 0, sizeof(*b));
    if (fd < 0) {
        p11t_tool_error("import: %s: %s", path, strerror(errno));
        return P11T_TOOL_FAIL;
    }
    if (!is_stdin && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
        p11t_tool_error("import: %s: not a regular file", path);
        close(fd);
        return P11T_TOOL_FAIL;
    }
    b->cap = P11T_KEYFILE_MAX_SIZE + 1; /* one more, to detect too large */
    b->p = OPENSSL_secure_zalloc(b->cap);
    if (b->p == NULL) {
        p11t_tool_error("import: out of secure memory");
        b->cap = 0;
        if (!is_stdin)
            close(fd);
        return P11T_TOOL_FAIL;
    }
    while (b->len < b->cap) {
        ssize_t r = read(fd, b->p + b->len, b->cap - b->len);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            p11t_tool_error("import: %s: %s", path, strerror(errno));
            if (!is_stdin)
                close(fd);
            file_buf_free(b);
            return P11T_TOOL_FAIL;
        }
        if (r == 0)
            break;
        b->len += (size_t)r;
    }
    if (!is_stdin)
        close(fd);
    if (b->len > P11T_KEYFILE_MAX_SIZE) {
        p11t_tool_error("import: %s: larger than %d bytes, which no "
                        "ticket-key file is",
                        path, P11T_KEYFILE_MAX_SIZE);
        file_buf_free(b);
        return P11T_TOOL_FAIL;
    }
    return P11T_TOOL_OK;
}

static void key_origin(const p11t_keyfile *kf, size_t i,
                       p11t_keyfile_format fmt, char *buf, size_t len)
{
    const p11t_keyfile_key *k = &kf->keys[i];

    if (k->line == 0)
        snprintf(buf, len, "AES-%zu", k->aes_len * 8);
    else
        snprintf(buf, len, "line %u%s, AES-%zu", k->line,
                 fmt == P11T_KEYFILE_HAPROXY && i == kf->encrypt_index
                     ? ", HAProxy's encrypting key"
                     : "",
                 k->aes_len * 8);
}

/* Destroys the generations this run imported, after a failure. */
static void roll_back(p11t_tool *t, const p11t_keyfile *kf, size_t done)
{
    for (size_t i = 0; i < done; i++) {
        char hex[33];
        p11t_err err;
        CK_RV rv;

        p11t_hex(kf->keys[i].name, hex);
        p11t_err_clear(&err);
        rv = p11t_hsm_destroy(t->hsm, kf->keys[i].name, &err);
        if (rv == CKR_OK || rv == P11T_CKR_UNKNOWN_KEY)
            fprintf(stderr, "p11ticket: import: removed %s again\n", hex);
        else
            p11t_tool_error("import: cannot remove %s again (%s): remove it "
                            "with 'p11ticket revoke %s'",
                            hex, err.msg[0] ? err.msg : p11t_rv_name(rv), hex);
    }
}

/* Refuses names that are already on the token, before importing any. */
static int check_names(p11t_tool *t, const p11t_keyfile *kf, int *active_now)
{
    p11t_keyinfo *keys = NULL;
    size_t n = 0, clash = 0;
    int rc;

    if ((rc = p11t_tool_scan(t, "import", NULL, NULL, &keys, &n)) !=
        P11T_TOOL_OK)
        return rc;
    for (size_t i = 0; i < kf->n; i++) {
        char hex[33];

        if (p11t_tool_find_name(keys, n, kf->keys[i].name) < 0)
            continue;
        p11t_hex(kf->keys[i].name, hex);
        p11t_tool_error("import: a key named %s is already on the token "
                        "(imported before?)",
                        hex);
        clash++;
    }
    *active_now = p11t_lifecycle_pick(keys, n, p11t_tool_now()) >= 0;
    free(keys);
    if (clash > 0) {
        p11t_tool_error("import: nothing imported");
        return P11T_TOOL_FAIL;
    }
    return P11T_TOOL_OK;
}

/* An active import takes over only if it wins the tie-break; say so if
 * another generation keeps encrypting (same second, greater name). */
static void warn_not_current(p11t_tool *t, const p11t_keyfile_key *k)
{
    p11t_keyinfo *keys = NULL;
    size_t n = 0;
    int cur;

    if (p11t_tool_scan(t, "import", NULL, NULL, &keys, &n) != P11T_TOOL_OK)
        return;
    cur = p11t_lifecycle_pick(keys, n, p11t_tool_now());
    if (cur >= 0 &&
        memcmp(keys[cur].name, k->name, P11T_KEYFILE_NAME_LEN) != 0) {
        char hex[33], curhex[33];

        p11t_hex(k->name, hex);
        p11t_hex(keys[cur].name, curhex);
        p11t_tool_warn("%s is active, but %s still encrypts (it starts at "
                       "the same time or later, or has the greater name)",
                       hex, curhex);
    }
    free(keys);
}

/* The times a key gets: HAProxy's encrypting key (or the single key of a
 * binary file) takes --state; every other key is decrypt-only. */
static void times_of(const p11t_keyfile *kf, size_t i, int active, int64_t now,
                     int64_t encrypt_for, int64_t decrypt_for, p11t_times *tm)
{
    int a = active && i == kf->encrypt_index;

    tm->encrypt_from = now;
    if (a) {
        tm->encrypt_until = p11t_time_add(now, encrypt_for);
        tm->decrypt_until = p11t_time_add(tm->encrypt_until, decrypt_for);
    } else {
        tm->encrypt_until = now;
        tm->decrypt_until = p11t_time_add(now, decrypt_for);
    }
}

static int import_all(p11t_tool *t, const char *path, p11t_keyfile_format fmt,
                      const p11t_keyfile *kf, int active, int64_t encrypt_for,
                      int64_t decrypt_for, int dry_run)
{
    int64_t now = p11t_tool_now();
    int rc, active_before = 0;
    p11t_times tm;

    if ((rc = check_names(t, kf, &active_before)) != P11T_TOOL_OK)
        return rc;
    for (size_t i = 0; !dry_run && i < kf->n; i++) {
        const p11t_keyfile_key *k = &kf->keys[i];
        char what[64], hex[33];
        p11t_err err;
        CK_RV rv;

        times_of(kf, i, active, now, encrypt_for, decrypt_for, &tm);
        p11t_err_clear(&err);
        rv = p11t_hsm_import(t->hsm, k->name, k->aes, k->aes_len, k->hmac,
                             k->hmac_len, &tm, &err);
        if (rv == CKR_OK)
            continue;
        p11t_hex(k->name, hex);
        snprintf(what, sizeof(what), "import: %s", hex);
        rc = p11t_tool_report(what, rv, &err);
        roll_back(t, kf, i);
        p11t_tool_error("import: nothing imported from %s", path);
        return rc;
    }
    /* Reported only now, so that nothing a roll-back removed is listed. */
    for (size_t i = 0; i < kf->n; i++) {
        char hex[33], desc[160], origin[64];

        times_of(kf, i, active, now, encrypt_for, decrypt_for, &tm);
        p11t_hex(kf->keys[i].name, hex);
        p11t_tool_describe(&tm, now, desc, sizeof(desc));
        key_origin(kf, i, fmt, origin, sizeof(origin));
        printf("%s %s (%s): %s\n", dry_run ? "would import" : "imported", hex,
               origin, desc);
    }
    if (dry_run)
        return P11T_TOOL_OK;
    if (strcmp(path, "-") != 0)
        p11t_tool_warn("destroy %s now (e.g. shred -u %s): whoever has it can "
                       "decrypt every session its keys protected",
                       path, path);
    else
        p11t_tool_warn("destroy every copy of the imported key material: "
                       "whoever has it can decrypt every session it "
                       "protected");
    if (!active && !active_before)
        p11t_tool_warn("no generation is active: servers issue no tickets "
                       "until 'p11ticket rotate' (or create) makes one");
    if (active)
        warn_not_current(t, &kf->keys[kf->encrypt_index]);
    return P11T_TOOL_OK;
}

static int run(p11t_tool *t, int argc, char **argv)
{
    static const struct option opts[] = {
        {"format", required_argument, NULL, 'f'},
        {"state", required_argument, NULL, OPT_STATE},
        {"encrypt-for", required_argument, NULL, 'e'},
        {"decrypt-for", required_argument, NULL, 'd'},
        {"dry-run", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    p11t_policy pol = {0, 0, 0};
    p11t_keyfile_format fmt = 0;
    char why[P11T_KEYFILE_WHY_LEN];
    p11t_keyfile kf;
    file_buf buf;
    const char *path;
    int c, rc, active = 1, dry_run = 0, ok;

    p11t_tool_getopt_reset(&p11t_tool_cmd_import, argv);
    while ((c = p11t_tool_getopt(t, &p11t_tool_cmd_import, argc, argv,
                                 "f:e:d:nh", opts)) != -1) {
        switch (c) {
        case 'f':
            if (!p11t_keyfile_format_parse(optarg, &fmt)) {
                p11t_tool_error("import: unknown --format '%s': use "
                                "openssl80 (nginx80, envoy), nginx48, "
                                "haproxy or node48 (apache48)",
                                optarg);
                return P11T_TOOL_USAGE;
            }
            break;
        case OPT_STATE:
            if (strcmp(optarg, "active") == 0) {
                active = 1;
            } else if (strcmp(optarg, "decrypt-only") == 0) {
                active = 0;
            } else {
                p11t_tool_error("import: --state must be active or "
                                "decrypt-only, not '%s'",
                                optarg);
                return P11T_TOOL_USAGE;
            }
            break;
        case 'e':
        case 'd':
            if (!p11t_tool_policy_opt("import", c, optarg, &pol))
                return P11T_TOOL_USAGE;
            break;
        case 'n':
            dry_run = 1;
            break;
        default:
            return p11t_tool_help_or_bad(&p11t_tool_cmd_import, c);
        }
    }
    if (fmt == 0) {
        p11t_tool_error("import: --format is required (openssl80, nginx48, "
                        "haproxy, node48): layouts of the same size differ, "
                        "so the tool never guesses");
        return p11t_tool_bad_usage(&p11t_tool_cmd_import);
    }
    path = p11t_tool_one_operand(&p11t_tool_cmd_import, argc, argv,
                                 "which key file?", "one key file at a time");
    if (path == NULL)
        return P11T_TOOL_USAGE;

    if ((rc = p11t_tool_load_config(t)) != P11T_TOOL_OK)
        return rc;
    p11t_tool_policy_defaults(t, &pol);

    /* mlock'd and left out of core dumps; without it (the call fails, e.g.
     * no mmap) OpenSSL falls back to the ordinary heap, still cleansed. */
    if (!CRYPTO_secure_malloc_initialized())
        (void)CRYPTO_secure_malloc_init(IMPORT_SECURE_HEAP, 16);

    if ((rc = read_file(path, &buf)) != P11T_TOOL_OK)
        return rc;
    ok = p11t_keyfile_parse(fmt, buf.p, buf.len, &kf, why);
    file_buf_free(&buf);
    if (!ok) {
        p11t_tool_error("import: %s: %s", path, why);
        return P11T_TOOL_FAIL;
    }

    rc = p11t_tool_open_hsm(t);
    if (rc == P11T_TOOL_OK)
        rc = import_all(t, path, fmt, &kf, active, pol.encrypt_for,
                        pol.decrypt_for, dry_run);
    p11t_keyfile_free(&kf);
    return rc;
}

const p11t_tool_cmd p11t_tool_cmd_import = {
    .name = "import",
    .summary = "migrate ticket-key files of other servers into the token",
    .run = run,
    .usage = usage,
};
