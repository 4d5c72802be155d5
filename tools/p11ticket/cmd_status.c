/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_status.c - the generations on the token as an operator reads them:
 * one line per generation with times relative to now, when a new key is
 * needed, and a text timeline of the hours ahead.  The token is read and
 * the generations are folded, picked and sorted exactly as for `list`
 * (p11t_tool_scan, p11t_lifecycle_*, gen.c); only the presentation is
 * status's own.  list keeps the per-object attribute table.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

#define STATUS_SPAN_DEFAULT (24 * 3600)
#define STATUS_COLUMNS_MAX 60
#define LABEL_WIDTH 12 /* "3f2a..9c1d" and two blanks */
#define OPT_SPAN P11T_TOOL_OPT_LONG

static void usage(FILE *fp)
{
    fputs("usage: p11ticket [global options] status [--json] "
          "[--span DURATION]\n"
          "\n"
          "Show the generations on the token as operators read them, one "
          "line each,\n"
          "ordered by encrypt-from, with times relative to now:\n"
          "  9f9f..1a1a  expired           2h ago\n"
          "  7c9c..a5e4  decrypt-only      decrypts 9h more\n"
          "  3f2a..9c1d  active (current)  encrypts 42m more, decrypts "
          "until +1d01h\n"
          "  77e1..0b2c  pending           starts encrypting in 42m, for "
          "12h\n"
          "Names are shortened to their first and last four hex digits "
          "('list' and\n"
          "--json show them whole).  '(current)' marks the generation every "
          "server\n"
          "encrypts with now.  Then a line says when a new key is needed: "
          "the first\n"
          "moment no generation encrypts any more (rotate creates the next "
          "one\n"
          "rotate-lead ahead; a warning says when that moment is closer).\n"
          "\n"
          "Then a timeline of the next 24 hours, one column per 30 minutes "
          "and one\n"
          "row per generation that is not expired; each column shows the "
          "state at\n"
          "its start:\n"
          "  E  servers encrypt with it     P  pending (accepted, not used "
          "yet)\n"
          "  d  decrypt-only                a  active, but a newer one "
          "encrypts\n"
          "  .  expired\n"
          "and a row 'no key' with ! where, at some moment of the column, "
          "no\n"
          "generation encrypts: servers issue no tickets then unless a "
          "generation is\n"
          "created before.\n"
          "\n"
          "Options:\n"
          "  -j, --json        print one JSON object instead: format, now, "
          "now_unix,\n"
          "                    current (name or null), issuing_until and "
          "issuing_until_unix\n"
          "                    (when no generation encrypts any more; null "
          "for never)\n"
          "                    and generations (the members of list --json "
          "except objects)\n"
          "      --span DURATION\n"
          "                    how far the timeline looks ahead (default 24h,"
          " 1m to 60d);\n"
          "                    columns are 1m, 2m, 5m, 10m, 15m, 30m, 1h, 2h,"
          " 3h, 6h,\n"
          "                    12h or 1d, at most 60 of them\n"
          "  -h, --help        show this help\n",
          fp);
}

/* "3f2a..9c1d": enough to tell the generations of one token apart. */
static void short_name(const p11t_keyinfo *g, char out[static 11])
{
    char hex[33];

    p11t_hex(g->name, hex);
    snprintf(out, 11, "%.4s..%.4s", hex, hex + 28);
}

/* "+1d04h" for a moment after now. */
static void rel(int64_t t, int64_t now, char out[static P11T_TOOL_DUR_LEN + 1])
{
    char d[P11T_TOOL_DUR_LEN];

    p11t_tool_format_dur(t - now, d);
    snprintf(out, P11T_TOOL_DUR_LEN + 1, "+%s", d);
}

static void decrypt_tail(const p11t_times *tm, int64_t now, char *buf,
                         size_t len)
{
    char r[P11T_TOOL_DUR_LEN + 1];

    if (tm->decrypt_until == P11T_TIME_NEVER) {
        snprintf(buf, len, "never expires");
        return;
    }
    rel(tm->decrypt_until, now, r);
    snprintf(buf, len, "decrypts until %s", r);
}

/* The state column and the words after it. */
static void describe(const p11t_keyinfo *gens, size_t i, int cur, int64_t now,
                     const char **state, char *buf, size_t len)
{
    const p11t_times *tm = &gens[i].times;
    char d[P11T_TOOL_DUR_LEN], tail[64], other[11];

    *state = p11t_state_name(p11t_lifecycle_state(tm, now));
    if (!p11t_tool_complete(&gens[i])) {
        *state = "incomplete";
        snprintf(buf, len, "servers ignore it (see 'p11ticket list')");
        return;
    }
    decrypt_tail(tm, now, tail, sizeof(tail));
    switch (p11t_lifecycle_state(tm, now)) {
    case P11T_STATE_PENDING:
        p11t_tool_format_dur(tm->encrypt_from - now, d);
        if (tm->encrypt_from >= tm->encrypt_until) {
            snprintf(buf, len, "never encrypts, %s", tail);
        } else if (tm->encrypt_until == P11T_TIME_NEVER) {
            snprintf(buf, len, "starts encrypting in %s, with no end", d);
        } else {
            char f[P11T_TOOL_DUR_LEN];

            p11t_tool_format_dur(tm->encrypt_until - tm->encrypt_from, f);
            snprintf(buf, len, "starts encrypting in %s, for %s", d, f);
        }
        return;
    case P11T_STATE_ACTIVE:
        if ((int)i != cur) {
            /* cur >= 0: a complete active generation is always picked. */
            if (cur >= 0)
                short_name(&gens[cur], other);
            else
                snprintf(other, sizeof(other), "another");
            snprintf(buf, len, "not used: %s is newer; %s", other, tail);
            return;
        }
        *state = "active (current)";
        if (tm->encrypt_until == P11T_TIME_NEVER) {
            snprintf(buf, len, "encrypts with no end, %s", tail);
        } else {
            p11t_tool_format_dur(tm->encrypt_until - now, d);
            snprintf(buf, len, "encrypts %s more, %s", d, tail);
        }
        return;
    case P11T_STATE_DECRYPT_ONLY:
        if (tm->decrypt_until == P11T_TIME_NEVER) {
            snprintf(buf, len, "decrypts with no end");
        } else {
            p11t_tool_format_dur(tm->decrypt_until - now, d);
            snprintf(buf, len, "decrypts %s more", d);
        }
        return;
    case P11T_STATE_EXPIRED:
        p11t_tool_format_dur(now - tm->decrypt_until, d);
        snprintf(buf, len, "%s ago", d);
        return;
    }
}

static void print_lines(const p11t_keyinfo *gens, size_t ng, int cur,
                        int64_t now)
{
    for (size_t i = 0; i < ng; i++) {
        const char *state;
        char name[11], words[160];

        short_name(&gens[i], name);
        describe(gens, i, cur, now, &state, words, sizeof(words));
        printf("%-10s  %-16s  %s\n", name, state, words);
    }
}

/* When the next key is needed; warns when rotate should have made it. */
static void print_next(const p11t_tool *t, const p11t_keyinfo *gens, size_t ng,
                       int cur, int64_t now)
{
    int64_t until = p11t_tool_issuing_until(gens, ng, now);
    char d[P11T_TOOL_DUR_LEN], lead[P11T_TOOL_DUR_LEN], at[32];

    if (cur < 0)
        return; /* p11t_tool_warn_generations() says it */
    if (until == P11T_TIME_NEVER) {
        printf("no new key needed: the encrypt windows never end\n");
        return;
    }
    p11t_tool_format_dur(until - now, d);
    p11t_tool_format_dur(t->policy.lead, lead);
    printf("next key needed in %s (rotate creates it %s ahead)\n", d, lead);
    if (until - now <= t->policy.lead) {
        p11t_tool_format_time(until, at);
        p11t_tool_warn("no generation encrypts from %s (in %s) and rotate "
                       "creates the next one %s ahead: run 'p11ticket "
                       "rotate' (is its timer running?)",
                       at, d, lead);
    }
}

/* ---- the timeline -------------------------------------------------------- */

typedef struct timeline {
    int64_t cell; /* seconds per column */
    int columns;
    int mark;  /* a scale label every `mark` columns */
    int hours; /* up to 48h: whole hours as "+24h" rather than "+1d" */
} timeline;

/* Column widths people count in. */
static const int64_t nice_cells[] = {
    60,   120,      300,      600,      900,       1800,
    3600, 2 * 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600,
};

static int span_ok(int64_t span)
{
    size_t last = sizeof(nice_cells) / sizeof(nice_cells[0]) - 1;

    return span >= nice_cells[0] &&
           span <= nice_cells[last] * STATUS_COLUMNS_MAX;
}

/* A length of the timeline: "18h", "24h", "1d12h", "3d". */
static void tl_dur(const timeline *tl, int64_t secs, char *buf, size_t len)
{
    char d[P11T_TOOL_DUR_LEN];

    if (tl->hours && secs % 3600 == 0) {
        snprintf(buf, len, "%lldh", (long long)(secs / 3600));
        return;
    }
    p11t_tool_format_dur(secs, d);
    snprintf(buf, len, "%s", d);
}

static void mark_label(const timeline *tl, int col, char *buf, size_t len)
{
    if (col == 0) {
        snprintf(buf, len, "now");
        return;
    }
    buf[0] = '+';
    tl_dur(tl, tl->cell * col, buf + 1, len - 1);
}

/* The smallest column width that fits the span, labels that fit between
 * their marks. */
static void plan_timeline(int64_t span, timeline *tl)
{
    static const int marks[] = {6, 8, 12, 24};
    size_t i;

    for (i = 0; i + 1 < sizeof(nice_cells) / sizeof(nice_cells[0]); i++)
        if ((span + nice_cells[i] - 1) / nice_cells[i] <= STATUS_COLUMNS_MAX)
            break;
    tl->cell = nice_cells[i];
    tl->columns = (int)((span + tl->cell - 1) / tl->cell);
    tl->hours = tl->cell * tl->columns <= 48 * 3600;
    for (i = 0; i < sizeof(marks) / sizeof(marks[0]); i++) {
        int fits = 1;

        tl->mark = marks[i];
        for (int col = 0; col <= tl->columns && fits; col += tl->mark) {
            char label[P11T_TOOL_DUR_LEN + 1];

            mark_label(tl, col, label, sizeof(label));
            fits = (int)strlen(label) < tl->mark;
        }
        if (fits)
            break;
    }
}

static void print_scale(const timeline *tl)
{
    char line[LABEL_WIDTH + STATUS_COLUMNS_MAX + 32];
    int col, pos = LABEL_WIDTH;

    memset(line, ' ', sizeof(line));
    for (col = 0; col <= tl->columns; col += tl->mark) {
        char label[P11T_TOOL_DUR_LEN + 1];

        mark_label(tl, col, label, sizeof(label));
        memcpy(line + LABEL_WIDTH + col, label, strlen(label));
        pos = LABEL_WIDTH + col + (int)strlen(label);
    }
    line[pos] = '\0';
    printf("%s\n%*s", line, LABEL_WIDTH, "");
    for (col = 0; col <= tl->columns; col++)
        putchar(col % tl->mark == 0 || col == tl->columns ? '|' : '-');
    putchar('\n');
}

static int on_timeline(const p11t_keyinfo *g, int64_t now)
{
    return p11t_tool_complete(g) &&
           p11t_lifecycle_state(&g->times, now) != P11T_STATE_EXPIRED;
}

static void print_timeline(const p11t_keyinfo *gens, size_t ng, int64_t now,
                           int64_t span)
{
    char at[32], d[P11T_TOOL_DUR_LEN], c[P11T_TOOL_DUR_LEN], name[11];
    int rows = 0, gap = 0;
    timeline tl;

    for (size_t i = 0; i < ng; i++)
        rows += on_timeline(&gens[i], now);
    if (rows == 0)
        return;
    plan_timeline(span, &tl);
    p11t_tool_format_time(now, at);
    tl_dur(&tl, tl.cell * tl.columns, d, sizeof(d));
    p11t_tool_format_dur(tl.cell, c);
    printf("\nnext %s from %s, %s a column:\n", d, at, c);
    print_scale(&tl);
    for (size_t i = 0; i < ng; i++) {
        if (!on_timeline(&gens[i], now))
            continue;
        short_name(&gens[i], name);
        printf("%-*s", LABEL_WIDTH, name);
        for (int col = 0; col < tl.columns; col++)
            putchar(p11t_tool_timeline_char(gens, ng, i, now + col * tl.cell));
        putchar('\n');
    }
    for (int col = 0; col < tl.columns && !gap; col++)
        gap = p11t_tool_no_key_in(gens, ng, now + col * tl.cell,
                                  now + (col + 1) * tl.cell);
    if (gap) {
        printf("%-*s", LABEL_WIDTH, "no key");
        for (int col = 0; col < tl.columns; col++)
            putchar(p11t_tool_no_key_in(gens, ng, now + col * tl.cell,
                                        now + (col + 1) * tl.cell)
                        ? '!'
                        : ' ');
        putchar('\n');
    }
    printf("E encrypts  P pending  d decrypt-only  a active, a newer one "
           "encrypts  . expired\n");
    if (gap)
        printf("! no key encrypts: no tickets then, unless a generation is "
               "created before\n");
}

/* ---- JSON ---------------------------------------------------------------- */

static void print_json(const p11t_objinfo *objs, size_t n,
                       const p11t_keyinfo *gens, size_t ng, int cur,
                       int64_t now)
{
    char hex[33];

    printf("{\"format\": %d, ", P11T_TOOL_JSON_FORMAT);
    p11t_tool_json_time("now", now);
    printf(", \"current\": ");
    if (cur >= 0) {
        p11t_hex(gens[cur].name, hex);
        printf("\"%s\"", hex);
    } else {
        printf("null");
    }
    printf(",\n  ");
    p11t_tool_json_time("issuing_until",
                        p11t_tool_issuing_until(gens, ng, now));
    printf(",\n  \"generations\": [");
    for (size_t i = 0; i < ng; i++) {
        printf("%s\n    {", i ? "," : "");
        p11t_tool_json_generation(objs, n, &gens[i], (int)i == cur, now,
                                  ",\n     ");
        printf("}");
    }
    printf("%s]}\n", ng ? "\n  " : "");
}

static int run(p11t_tool *t, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"span", required_argument, NULL, OPT_SPAN},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const p11t_tool_cmd *cmd = &p11t_tool_cmd_status;
    p11t_objinfo *objs = NULL;
    p11t_keyinfo *gens = NULL;
    size_t n = 0, ng = 0;
    int64_t now, span = STATUS_SPAN_DEFAULT;
    int c, rc, cur, json = 0;

    p11t_tool_getopt_reset(cmd, argv);
    while ((c = p11t_tool_getopt(t, cmd, argc, argv, "jh", opts)) != -1) {
        switch (c) {
        case 'j':
            json = 1;
            break;
        case OPT_SPAN:
            if (!p11t_tool_duration("status", "--span", optarg, &span))
                return P11T_TOOL_USAGE;
            if (!span_ok(span)) {
                p11t_tool_error("status: --span must be 1m to 60d, not "
                                "'%s'",
                                optarg);
                return P11T_TOOL_USAGE;
            }
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

    now = p11t_tool_now();
    cur = p11t_lifecycle_pick(gens, ng, now);
    if (json) {
        print_json(objs, n, gens, ng, cur, now);
    } else if (ng == 0) {
        p11t_tool_warn("no p11ticket keys on the token (create them with "
                       "'p11ticket rotate')");
    } else {
        print_lines(gens, ng, cur, now);
        print_next(t, gens, ng, cur, now);
        print_timeline(gens, ng, now, span);
    }
    p11t_tool_warn_generations(objs, n, gens, ng, cur);
    free(gens);
    free(objs);
    return P11T_TOOL_OK;
}

const p11t_tool_cmd p11t_tool_cmd_status = {
    .name = "status",
    .summary = "the generations with relative times and a timeline",
    .run = run,
    .usage = usage,
};
