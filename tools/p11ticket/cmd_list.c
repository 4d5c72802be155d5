/*
 * cmd_list.c - `list` and its alias `status`: every p11ticket object on the
 * token, grouped by generation, with the generation's lifecycle state and
 * times and the attributes that keep the key inside the token.  Never a key
 * value.  --json gives monitoring one entry per generation.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

typedef struct row {
    const p11t_objinfo *o;
    const p11t_keyinfo *g; /* its generation */
} row;

static void usage_for(FILE *fp, const char *name)
{
    fprintf(fp, "usage: p11ticket [global options] %s [--json]\n", name);
    fputs("\n"
          "Show the ticket keys on the token, one line per token object, "
          "grouped by\n"
          "generation (key name) and ordered by encrypt-from.  'list' and "
          "'status' are\n"
          "the same command.  Columns:\n"
          "  NAME         key name in hex (the first 16 bytes of every "
          "ticket)\n"
          "  ROLE         aes or hmac\n"
          "  TYPE         PKCS#11 key type and size in bits\n"
          "  STATE        the generation's state as of now: pending, active, "
          "decrypt-only\n"
          "               or expired\n"
          "  CUR          yes for the generation that every server encrypts "
          "with now\n"
          "  FROM, UNTIL, DECRYPT-UNTIL\n"
          "               the generation's encrypt-from, encrypt-until and "
          "decrypt-until\n"
          "               (UTC)\n"
          "  TOK PRIV SENS EXTR ASENS NEXTR\n"
          "               CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, "
          "CKA_EXTRACTABLE,\n"
          "               CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE\n"
          "  CHECK        ok if the key is a private, sensitive, "
          "non-extractable token\n"
          "               object whose value cannot be read; WEAK otherwise"
          "\n"
          "Warnings on standard error name incomplete generations (servers "
          "ignore them),\n"
          "labels that disagree, WEAK objects, and a token without an active "
          "key.\n"
          "\n"
          "Options:\n"
          "  -j, --json   print a JSON array with one object per generation "
          "instead:\n"
          "               name, state, current, complete, encrypt_from, "
          "encrypt_until,\n"
          "               decrypt_until (ISO 8601 UTC, null for never), the "
          "same with\n"
          "               _unix (seconds, null for never), aes_bits, "
          "hmac_bits, check\n"
          "               (ok or WEAK) and objects (per-object attributes)\n"
          "  -h, --help   show this help\n",
          fp);
}

static void usage_list(FILE *fp)
{
    usage_for(fp, "list");
}

static void usage_status(FILE *fp)
{
    usage_for(fp, "status");
}

static int obj_ok(const p11t_objinfo *o)
{
    return o->token && o->priv && o->sensitive && !o->extractable &&
           !o->value_readable;
}

static const char *role_name(p11t_role r)
{
    switch (r) {
    case P11T_ROLE_AES:
        return "aes";
    case P11T_ROLE_HMAC:
        return "hmac";
    }
    return "?";
}

static const char *key_type_name(CK_KEY_TYPE kt, char buf[static 24])
{
    switch (kt) {
    case CKK_AES:
        return "AES";
    case CKK_GENERIC_SECRET:
        return "GENERIC_SECRET";
    case CKK_SHA256_HMAC:
        return "SHA256_HMAC";
    default:
        snprintf(buf, 24, "0x%lx", (unsigned long)kt);
        return buf;
    }
}

static int cmp_gens(const p11t_keyinfo *x, const p11t_keyinfo *y)
{
    if (x->times.encrypt_from != y->times.encrypt_from)
        return x->times.encrypt_from < y->times.encrypt_from ? -1 : 1;
    return memcmp(x->name, y->name, P11T_NAME_LEN);
}

static int cmp_rows(const void *a, const void *b)
{
    const row *x = a, *y = b;
    int c = cmp_gens(x->g, y->g);

    if (c != 0)
        return c;
    return (int)x->o->role - (int)y->o->role;
}

static int cmp_keyinfo(const void *a, const void *b)
{
    return cmp_gens(a, b);
}

static row *sorted_rows(const p11t_objinfo *objs, size_t n,
                        const p11t_keyinfo *gens, size_t ng)
{
    row *rows = calloc(n ? n : 1, sizeof(*rows));

    if (rows == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int g = p11t_tool_find_name(gens, ng, objs[i].name);

        rows[i].o = &objs[i];
        rows[i].g = &gens[g < 0 ? 0 : g]; /* every object has a generation */
    }
    qsort(rows, n, sizeof(*rows), cmp_rows);
    return rows;
}

static const char *yes_no(CK_BBOOL b)
{
    return b ? "yes" : "no";
}

static int is_current(const p11t_keyinfo *gens, int cur, const p11t_keyinfo *g)
{
    return cur >= 0 && &gens[cur] == g;
}

static void print_table(const row *rows, size_t n, const p11t_keyinfo *gens,
                        int cur, int64_t now)
{
    printf("%-32s %-4s %-18s %-12s %-3s %-20s %-20s %-20s %-3s %-4s %-4s %-4s "
           "%-5s %-5s %s\n",
           "NAME", "ROLE", "TYPE", "STATE", "CUR", "FROM", "UNTIL",
           "DECRYPT-UNTIL", "TOK", "PRIV", "SENS", "EXTR", "ASENS", "NEXTR",
           "CHECK");
    for (size_t i = 0; i < n; i++) {
        const p11t_objinfo *o = rows[i].o;
        const p11t_times *tm = &rows[i].g->times;
        char hex[33], ef[32], eu[32], du[32], tbuf[24], type[40];

        p11t_hex(o->name, hex);
        p11t_tool_format_time(tm->encrypt_from, ef);
        p11t_tool_format_time(tm->encrypt_until, eu);
        p11t_tool_format_time(tm->decrypt_until, du);
        snprintf(type, sizeof(type), "%s-%lu", key_type_name(o->key_type, tbuf),
                 (unsigned long)o->value_len * 8);
        printf("%-32s %-4s %-18s %-12s %-3s %-20s %-20s %-20s %-3s %-4s %-4s "
               "%-4s %-5s %-5s %s\n",
               hex, role_name(o->role), type,
               p11t_state_name(p11t_lifecycle_state(tm, now)),
               is_current(gens, cur, rows[i].g) ? "yes" : "no", ef, eu, du,
               yes_no(o->token), yes_no(o->priv), yes_no(o->sensitive),
               yes_no(o->extractable), yes_no(o->always_sensitive),
               yes_no(o->never_extractable), obj_ok(o) ? "ok" : "WEAK");
    }
}

static void json_time(const char *key, int64_t t)
{
    char buf[32];

    if (t == P11T_TIME_NEVER) {
        printf("\"%s\": null, \"%s_unix\": null", key, key);
        return;
    }
    p11t_tool_format_time(t, buf);
    printf("\"%s\": \"%s\", \"%s_unix\": %lld", key, buf, key, (long long)t);
}

static const char *jb(int b)
{
    return b ? "true" : "false";
}

static int gen_ok(const p11t_objinfo *objs, size_t n, const p11t_keyinfo *g)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(objs[i].name, g->name, P11T_NAME_LEN) == 0 &&
            !obj_ok(&objs[i]))
            return 0;
    return 1;
}

/* Every string printed here is hex or from a fixed table: no escaping. */
static void print_json(const p11t_objinfo *objs, size_t n,
                       const p11t_keyinfo *gens, size_t ng, int cur,
                       int64_t now)
{
    printf("[");
    for (size_t i = 0; i < ng; i++) {
        const p11t_keyinfo *g = &gens[i];
        char hex[33];
        int first = 1;

        p11t_hex(g->name, hex);
        printf("%s\n  {\"name\": \"%s\", \"state\": \"%s\", \"current\": %s, "
               "\"complete\": %s,\n   ",
               i ? "," : "", hex,
               p11t_state_name(p11t_lifecycle_state(&g->times, now)),
               jb(is_current(gens, cur, g)), jb(p11t_tool_complete(g)));
        json_time("encrypt_from", g->times.encrypt_from);
        printf(",\n   ");
        json_time("encrypt_until", g->times.encrypt_until);
        printf(",\n   ");
        json_time("decrypt_until", g->times.decrypt_until);
        printf(",\n   \"aes_bits\": %lu, \"hmac_bits\": %lu, \"check\": "
               "\"%s\",\n   \"objects\": [",
               g->has_aes ? (unsigned long)g->aes_len * 8 : 0UL,
               g->has_hmac ? (unsigned long)g->hmac_len * 8 : 0UL,
               gen_ok(objs, n, g) ? "ok" : "WEAK");
        /* AES first, then HMAC, then anything else, for stable output. */
        for (size_t j = 0; j < 3 * n; j++) {
            const p11t_objinfo *o = &objs[j % n];
            int pass = (int)(j / n);
            int rank = o->role == P11T_ROLE_AES    ? 0
                       : o->role == P11T_ROLE_HMAC ? 1
                                                   : 2;
            char tbuf[24];

            if (rank != pass || memcmp(o->name, g->name, P11T_NAME_LEN) != 0)
                continue;
            printf("%s\n    {\"role\": \"%s\", \"key_type\": \"%s\", "
                   "\"bits\": %lu, \"token\": %s, \"private\": %s,\n"
                   "     \"sensitive\": %s, \"extractable\": %s, "
                   "\"always_sensitive\": %s, \"never_extractable\": %s,\n"
                   "     \"value_readable\": %s, \"check\": \"%s\"}",
                   first ? "" : ",", role_name(o->role),
                   key_type_name(o->key_type, tbuf),
                   (unsigned long)o->value_len * 8, jb(o->token), jb(o->priv),
                   jb(o->sensitive), jb(o->extractable),
                   jb(o->always_sensitive), jb(o->never_extractable),
                   jb(o->value_readable), obj_ok(o) ? "ok" : "WEAK");
            first = 0;
        }
        printf("]}");
    }
    printf("%s]\n", ng ? "\n" : "");
}

/*
 * A generation needs exactly one usable object of each role to be used
 * (the servers ignore it otherwise), and its labels should agree.
 */
static void warn_generations(const p11t_objinfo *objs, size_t n,
                             const p11t_keyinfo *gens, size_t ng)
{
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
}

static int list(p11t_tool *t, const p11t_tool_cmd *cmd, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    p11t_objinfo *objs = NULL;
    p11t_keyinfo *gens = NULL;
    size_t n = 0, ng = 0, weak = 0;
    int json = 0, c, rc, cur;
    int64_t now;
    row *rows;

    p11t_tool_getopt_reset(cmd, argv);
    while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
        switch (c) {
        case 'j':
            json = 1;
            break;
        default:
            return p11t_tool_help_or_bad(cmd, c);
        }
    }
    if (optind < argc)
        return p11t_tool_unexpected(cmd, argv[optind]);

    if ((rc = p11t_tool_load_config(t)) != P11T_TOOL_OK)
        return rc;
    if ((rc = p11t_tool_open_hsm(t)) != P11T_TOOL_OK)
        return rc;
    if ((rc = p11t_tool_scan(t, cmd->name, &objs, &n, &gens, &ng)) !=
        P11T_TOOL_OK)
        return rc;
    qsort(gens, ng, sizeof(*gens), cmp_keyinfo);
    rows = sorted_rows(objs, n, gens, ng);
    if (rows == NULL) {
        free(objs);
        free(gens);
        p11t_tool_error("out of memory");
        return P11T_TOOL_FAIL;
    }

    now = p11t_tool_now();
    cur = p11t_lifecycle_pick(gens, ng, now);
    if (json)
        print_json(objs, n, gens, ng, cur, now);
    else if (n == 0)
        fprintf(stderr, "p11ticket: no p11ticket keys on the token "
                        "(create them with 'p11ticket rotate')\n");
    else
        print_table(rows, n, gens, cur, now);
    warn_generations(objs, n, gens, ng);
    for (size_t i = 0; i < n; i++)
        weak += !obj_ok(&objs[i]);
    if (weak > 0)
        p11t_tool_warn("%zu object(s) marked WEAK: their values may leave "
                       "the token",
                       weak);
    if (n > 0 && cur < 0)
        p11t_tool_warn("no generation is active: servers issue no tickets "
                       "until 'p11ticket rotate' (or create) makes one");

    free(rows);
    free(gens);
    free(objs);
    return P11T_TOOL_OK;
}

static int run_list(p11t_tool *t, int argc, char **argv)
{
    return list(t, &p11t_tool_cmd_list, argc, argv);
}

static int run_status(p11t_tool *t, int argc, char **argv)
{
    return list(t, &p11t_tool_cmd_status, argc, argv);
}

const p11t_tool_cmd p11t_tool_cmd_list = {
    .name = "list",
    .summary = "show the generations on the token: state, times, attributes",
    .run = run_list,
    .usage = usage_list,
};

const p11t_tool_cmd p11t_tool_cmd_status = {
    .name = "status",
    .summary = "the same as list",
    .run = run_status,
    .usage = usage_status,
};
