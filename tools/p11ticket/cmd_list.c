/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_list.c - `list`: every p11ticket object on the token, grouped by
 * generation, with the generation's lifecycle state and times and the
 * attributes that keep the key inside the token.  Never a key value.
 * `status` (cmd_status.c) shows the same generations as an operator reads
 * them: relative times and a timeline.
 *
 * list --json is the tool's one JSON document without a "format" member: a
 * bare array, one entry per generation, that scripts have read since the
 * first release (tests/lib.sh among them).  It stays exactly as it is;
 * status --json carries the same generation members in a versioned object.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

typedef struct row {
    const p11t_objinfo *o;
    const p11t_keyinfo *g; /* its generation */
} row;

static void usage(FILE *fp)
{
    fputs("usage: p11ticket [global options] list [--json]\n"
          "\n"
          "Show the ticket keys on the token, one line per token object, "
          "grouped by\n"
          "generation (key name) and ordered by encrypt-from.  'p11ticket "
          "status' shows\n"
          "the same generations with relative times and a timeline.  "
          "Columns:\n"
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
          "               (ok or WEAK) and objects (per-object attributes).  "
          "It is the\n"
          "               one JSON output without a \"format\" member; "
          "status --json has\n"
          "               the same generation members in a versioned "
          "document\n"
          "  -h, --help   show this help\n",
          fp);
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

/* Rows follow the generations' order (p11t_tool_sort_generations), AES
 * first within a generation. */
static int cmp_rows(const void *a, const void *b)
{
    const row *x = a, *y = b;

    if (x->g != y->g)
        return x->g < y->g ? -1 : 1;
    return (int)x->o->role - (int)y->o->role;
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
               yes_no(o->never_extractable),
               p11t_tool_obj_ok(o) ? "ok" : "WEAK");
    }
}

static const char *jb(int b)
{
    return p11t_tool_json_bool(b);
}

/* Every string printed here is hex or from a fixed table: no escaping. */
static void print_json(const p11t_objinfo *objs, size_t n,
                       const p11t_keyinfo *gens, size_t ng, int cur,
                       int64_t now)
{
    printf("[");
    for (size_t i = 0; i < ng; i++) {
        const p11t_keyinfo *g = &gens[i];
        int first = 1;

        printf("%s\n  {", i ? "," : "");
        p11t_tool_json_generation(objs, n, g, is_current(gens, cur, g), now,
                                  ",\n   ");
        printf(",\n   \"objects\": [");
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
                   jb(o->value_readable), p11t_tool_obj_ok(o) ? "ok" : "WEAK");
            first = 0;
        }
        printf("]}");
    }
    printf("%s]\n", ng ? "\n" : "");
}

static int run(p11t_tool *t, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const p11t_tool_cmd *cmd = &p11t_tool_cmd_list;
    p11t_objinfo *objs = NULL;
    p11t_keyinfo *gens = NULL;
    size_t n = 0, ng = 0;
    int json = 0, c, rc, cur;
    int64_t now;
    row *rows;

    p11t_tool_getopt_reset(cmd, argv);
    while ((c = p11t_tool_getopt(t, cmd, argc, argv, "jh", opts)) != -1) {
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

    if ((rc = p11t_tool_read_token(t, cmd->name, &objs, &n, &gens, &ng)) !=
        P11T_TOOL_OK)
        return rc;
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
        p11t_tool_warn("no p11ticket keys on the token (create them with "
                       "'p11ticket rotate')");
    else
        print_table(rows, n, gens, cur, now);
    p11t_tool_warn_generations(objs, n, gens, ng, cur);

    free(rows);
    free(gens);
    free(objs);
    return P11T_TOOL_OK;
}

const p11t_tool_cmd p11t_tool_cmd_list = {
    .name = "list",
    .summary = "every token object: state, times, attributes (JSON too)",
    .run = run,
    .usage = usage,
};
