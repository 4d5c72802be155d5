/*
 * cmd_list.c - show every p11ticket object on the token: names, lifecycle
 * times and state, and the attributes that keep the key inside the token.
 * Never a key value.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

typedef struct row {
    const p11t_objinfo *o;
    int64_t gen_from; /* earliest encrypt_from of the generation */
} row;

static void usage(FILE *fp)
{
    fputs("usage: p11ticket [global options] list [--json]\n"
          "\n"
          "List the ticket keys on the token, one line per token object, "
          "grouped by\n"
          "generation (key name) and ordered by encrypt-from.  Columns:\n"
          "  NAME         key name in hex (the first 16 bytes of every "
          "ticket)\n"
          "  ROLE         aes or hmac\n"
          "  TYPE         PKCS#11 key type and size in bits\n"
          "  STATE        pending, active, decrypt-only or expired, as of now"
          "\n"
          "  FROM, UNTIL, DECRYPT-UNTIL\n"
          "               encrypt-from, encrypt-until and decrypt-until "
          "(UTC)\n"
          "  TOK PRIV SENS EXTR ASENS NEXTR\n"
          "               CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, "
          "CKA_EXTRACTABLE,\n"
          "               CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE\n"
          "  CHECK        ok if the key is a private, sensitive, "
          "non-extractable token\n"
          "               object whose value cannot be read; WEAK otherwise"
          "\n"
          "\n"
          "Options:\n"
          "  -j, --json   print a JSON array of objects instead (times are "
          "ISO 8601\n"
          "               UTC strings, null for never)\n"
          "  -h, --help   show this help\n",
          fp);
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

static int cmp_rows(const void *a, const void *b)
{
    const row *x = a, *y = b;
    int c;

    if (x->gen_from != y->gen_from)
        return x->gen_from < y->gen_from ? -1 : 1;
    c = memcmp(x->o->name, y->o->name, P11T_NAME_LEN);
    if (c != 0)
        return c;
    return (int)x->o->role - (int)y->o->role;
}

static row *sorted_rows(const p11t_objinfo *objs, size_t n)
{
    row *rows = calloc(n ? n : 1, sizeof(*rows));
    size_t i, j;

    if (rows == NULL)
        return NULL;
    /* n is a handful of generations; quadratic grouping is fine. */
    for (i = 0; i < n; i++) {
        rows[i].o = &objs[i];
        rows[i].gen_from = objs[i].times.encrypt_from;
        for (j = 0; j < n; j++)
            if (memcmp(objs[j].name, objs[i].name, P11T_NAME_LEN) == 0 &&
                objs[j].times.encrypt_from < rows[i].gen_from)
                rows[i].gen_from = objs[j].times.encrypt_from;
    }
    qsort(rows, n, sizeof(*rows), cmp_rows);
    return rows;
}

static const char *yes_no(CK_BBOOL b)
{
    return b ? "yes" : "no";
}

static void print_table(const row *rows, size_t n, int64_t now)
{
    size_t i;

    printf("%-32s %-4s %-18s %-12s %-20s %-20s %-20s %-3s %-4s %-4s %-4s "
           "%-5s %-5s %s\n",
           "NAME", "ROLE", "TYPE", "STATE", "FROM", "UNTIL", "DECRYPT-UNTIL",
           "TOK", "PRIV", "SENS", "EXTR", "ASENS", "NEXTR", "CHECK");
    for (i = 0; i < n; i++) {
        const p11t_objinfo *o = rows[i].o;
        char hex[33], ef[32], eu[32], du[32], tbuf[24], type[40];

        p11t_hex(o->name, hex);
        p11t_tool_format_time(o->times.encrypt_from, ef);
        p11t_tool_format_time(o->times.encrypt_until, eu);
        p11t_tool_format_time(o->times.decrypt_until, du);
        snprintf(type, sizeof(type), "%s-%lu", key_type_name(o->key_type, tbuf),
                 (unsigned long)o->value_len * 8);
        printf("%-32s %-4s %-18s %-12s %-20s %-20s %-20s %-3s %-4s %-4s %-4s "
               "%-5s %-5s %s\n",
               hex, role_name(o->role), type,
               p11t_state_name(p11t_lifecycle_state(&o->times, now)), ef, eu,
               du, yes_no(o->token), yes_no(o->priv), yes_no(o->sensitive),
               yes_no(o->extractable), yes_no(o->always_sensitive),
               yes_no(o->never_extractable), obj_ok(o) ? "ok" : "WEAK");
    }
}

static void json_time(const char *key, int64_t t)
{
    char buf[32];

    if (t == P11T_TIME_NEVER) {
        printf("\"%s\": null", key);
        return;
    }
    p11t_tool_format_time(t, buf);
    printf("\"%s\": \"%s\"", key, buf);
}

static const char *jb(CK_BBOOL b)
{
    return b ? "true" : "false";
}

/* Every string printed here is hex or from a fixed table: no escaping. */
static void print_json(const row *rows, size_t n, int64_t now)
{
    size_t i;

    printf("[");
    for (i = 0; i < n; i++) {
        const p11t_objinfo *o = rows[i].o;
        char hex[33], tbuf[24];

        p11t_hex(o->name, hex);
        printf("%s\n  {\"name\": \"%s\", \"role\": \"%s\", "
               "\"key_type\": \"%s\", \"bits\": %lu, \"state\": \"%s\", ",
               i ? "," : "", hex, role_name(o->role),
               key_type_name(o->key_type, tbuf),
               (unsigned long)o->value_len * 8,
               p11t_state_name(p11t_lifecycle_state(&o->times, now)));
        json_time("encrypt_from", o->times.encrypt_from);
        printf(", ");
        json_time("encrypt_until", o->times.encrypt_until);
        printf(", ");
        json_time("decrypt_until", o->times.decrypt_until);
        printf(",\n   \"token\": %s, \"private\": %s, \"sensitive\": %s, "
               "\"extractable\": %s, \"always_sensitive\": %s, "
               "\"never_extractable\": %s, \"value_readable\": %s, "
               "\"check\": \"%s\"}",
               jb(o->token), jb(o->priv), jb(o->sensitive), jb(o->extractable),
               jb(o->always_sensitive), jb(o->never_extractable),
               o->value_readable ? "true" : "false", obj_ok(o) ? "ok" : "WEAK");
    }
    printf("%s]\n", n ? "\n" : "");
}

/*
 * A generation needs both halves to be used (p11t_lifecycle_pick ignores
 * incomplete ones), and its two labels should agree on the times.
 */
static void warn_generations(const row *rows, size_t n)
{
    size_t i = 0;

    while (i < n) {
        const p11t_objinfo *a = rows[i].o;
        int has[3] = {0, 0, 0}, differ = 0;
        size_t j = i;
        char hex[33];

        for (; j < n && memcmp(rows[j].o->name, a->name, P11T_NAME_LEN) == 0;
             j++) {
            const p11t_objinfo *b = rows[j].o;

            if (b->role == P11T_ROLE_AES || b->role == P11T_ROLE_HMAC)
                has[b->role]++;
            if (b->times.encrypt_from != a->times.encrypt_from ||
                b->times.encrypt_until != a->times.encrypt_until ||
                b->times.decrypt_until != a->times.decrypt_until)
                differ = 1;
        }
        p11t_hex(a->name, hex);
        if (has[P11T_ROLE_AES] != 1 || has[P11T_ROLE_HMAC] != 1)
            p11t_tool_warn("key %s has %d aes and %d hmac objects; servers "
                           "use only generations with exactly one of each",
                           hex, has[P11T_ROLE_AES], has[P11T_ROLE_HMAC]);
        if (differ)
            p11t_tool_warn("key %s: its objects' labels disagree on the "
                           "lifecycle times",
                           hex);
        i = j;
    }
}

static int run(p11t_tool *t, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    p11t_objinfo *objs = NULL;
    size_t n = 0, i, weak = 0;
    int json = 0, c, rc;
    int64_t now;
    p11t_err err;
    row *rows;
    CK_RV rv;

    p11t_tool_getopt_reset(&p11t_tool_cmd_list, argv);
    while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
        switch (c) {
        case 'j':
            json = 1;
            break;
        case 'h':
            usage(stdout);
            return P11T_TOOL_OK;
        default:
            return p11t_tool_bad_usage(&p11t_tool_cmd_list);
        }
    }
    if (optind < argc) {
        p11t_tool_error("list: unexpected argument '%s'", argv[optind]);
        return p11t_tool_bad_usage(&p11t_tool_cmd_list);
    }

    if ((rc = p11t_tool_load_config(t)) != P11T_TOOL_OK)
        return rc;
    if ((rc = p11t_tool_open_hsm(t)) != P11T_TOOL_OK)
        return rc;

    p11t_err_clear(&err);
    rv = p11t_hsm_list(t->hsm, &objs, &n, &err);
    if (rv != CKR_OK)
        return p11t_tool_report("list", rv, &err);
    rows = sorted_rows(objs, n);
    if (rows == NULL) {
        free(objs);
        p11t_tool_error("out of memory");
        return P11T_TOOL_FAIL;
    }

    now = p11t_tool_now();
    if (json)
        print_json(rows, n, now);
    else if (n == 0)
        fprintf(stderr, "p11ticket: no p11ticket keys on the token "
                        "(create one with 'p11ticket create')\n");
    else
        print_table(rows, n, now);
    warn_generations(rows, n);
    for (i = 0; i < n; i++)
        weak += !obj_ok(&objs[i]);
    if (weak > 0)
        p11t_tool_warn("%zu object(s) marked WEAK: their values may leave "
                       "the token",
                       weak);

    free(rows);
    free(objs);
    return P11T_TOOL_OK;
}

const p11t_tool_cmd p11t_tool_cmd_list = {
    .name = "list",
    .summary = "list the ticket keys on the token and their attributes",
    .run = run,
    .usage = usage,
};
