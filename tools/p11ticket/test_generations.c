/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_generations.c - unit tests of gen.c with fixed times: folding token
 * objects into generations, the key every server encrypts with, which
 * generations racing rotators destroy as duplicates, and what status shows
 * (durations, when a new key is needed, the timeline).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "tool.h"

#define NOW 1700000000LL
#define H 3600

static p11t_objinfo obj(uint8_t tag, p11t_role role, int64_t ef, int64_t eu,
                        int64_t du)
{
    p11t_objinfo o;

    memset(&o, 0, sizeof(o));
    memset(o.name, tag, P11T_NAME_LEN);
    o.role = role;
    o.key_type = role == P11T_ROLE_AES ? CKK_AES : CKK_GENERIC_SECRET;
    o.value_len = 32;
    o.times.encrypt_from = ef;
    o.times.encrypt_until = eu;
    o.times.decrypt_until = du;
    return o;
}

static p11t_keyinfo gen(uint8_t tag, int64_t ef, int64_t eu, int64_t du)
{
    p11t_keyinfo k;

    memset(&k, 0, sizeof(k));
    memset(k.name, tag, P11T_NAME_LEN);
    k.has_aes = k.has_hmac = 1;
    k.aes_len = k.hmac_len = 32;
    k.times.encrypt_from = ef;
    k.times.encrypt_until = eu;
    k.times.decrypt_until = du;
    return k;
}

static const p11t_keyinfo *by_tag(const p11t_keyinfo *g, size_t n, uint8_t tag)
{
    uint8_t name[P11T_NAME_LEN];
    int i;

    memset(name, tag, sizeof(name));
    i = p11t_tool_find_name(g, n, name);
    return i < 0 ? NULL : &g[i];
}

static void test_fold(void)
{
    p11t_objinfo o[10];
    p11t_keyinfo *g = NULL;
    const p11t_keyinfo *k;
    size_t n = 0, no = 0;

    /* 1: complete; labels disagree, so the intersection rules. */
    o[no++] = obj(1, P11T_ROLE_AES, NOW, NOW + 10 * H, NOW + 30 * H);
    o[no++] = obj(1, P11T_ROLE_HMAC, NOW + 60, NOW + 12 * H, NOW + 20 * H);
    /* 2: AES only. */
    o[no++] = obj(2, P11T_ROLE_AES, NOW, NOW + H, NOW + 2 * H);
    /* 3: AES twice. */
    o[no++] = obj(3, P11T_ROLE_AES, NOW, NOW + H, NOW + 2 * H);
    o[no++] = obj(3, P11T_ROLE_AES, NOW, NOW + H, NOW + 2 * H);
    o[no++] = obj(3, P11T_ROLE_HMAC, NOW, NOW + H, NOW + 2 * H);
    /* 4: only unusable objects (wrong type, too short). */
    o[no] = obj(4, P11T_ROLE_AES, NOW - 5 * H, NOW, NOW + H);
    o[no++].key_type = CKK_DES3;
    o[no] = obj(4, P11T_ROLE_HMAC, NOW - 4 * H, NOW, NOW + H);
    o[no++].value_len = 8;
    /* 5: complete plus an unusable AES object whose times must not count. */
    o[no++] = obj(5, P11T_ROLE_AES, NOW, NOW + H, NOW + 2 * H);
    o[no] = obj(5, P11T_ROLE_HMAC, NOW, NOW + H, NOW + 2 * H);
    o[no++].value_len = 16;
    CHECK(no <= sizeof(o) / sizeof(o[0]));

    CHECK(p11t_fold_generations(o, no, &g, &n) == 0);
    CHECK(n == 5);

    k = by_tag(g, n, 1);
    CHECK(k != NULL && p11t_tool_complete(k));
    CHECK(k && k->times.encrypt_from == NOW + 60);
    CHECK(k && k->times.encrypt_until == NOW + 10 * H);
    CHECK(k && k->times.decrypt_until == NOW + 20 * H);

    k = by_tag(g, n, 2);
    CHECK(k != NULL && !p11t_tool_complete(k));
    CHECK(k && k->has_aes == 1 && k->has_hmac == 0);

    k = by_tag(g, n, 3);
    CHECK(k != NULL && !p11t_tool_complete(k));
    CHECK(k && k->has_aes == -1 && k->has_hmac == 1);

    k = by_tag(g, n, 4);
    CHECK(k != NULL && !p11t_tool_complete(k));
    CHECK(k && k->has_aes == 0 && k->has_hmac == 0);
    CHECK(k && k->times.encrypt_from == NOW - 4 * H);

    k = by_tag(g, n, 5);
    CHECK(k != NULL && p11t_tool_complete(k));
    CHECK(k && k->hmac_len == 16);
    free(g);

    CHECK(p11t_fold_generations(NULL, 0, &g, &n) == 0);
    CHECK(n == 0);
    free(g);
    CHECK(p11t_fold_generations(NULL, 3, &g, &n) == -1);
}

static void test_pick(void)
{
    p11t_keyinfo k[5];

    /* The latest encrypt-from wins among active generations. */
    k[0] = gen(9, NOW - 2 * H, NOW + 10 * H, NOW + 30 * H);
    k[1] = gen(1, NOW - H, NOW + 11 * H, NOW + 30 * H);
    k[2] = gen(7, NOW + H, NOW + 13 * H, NOW + 30 * H); /* pending */
    CHECK(p11t_lifecycle_pick(k, 3, NOW) == 1);
    /* Ties go to the greatest name. */
    k[3] = gen(5, NOW - H, NOW + 11 * H, NOW + 30 * H);
    CHECK(p11t_lifecycle_pick(k, 4, NOW) == 3);
    /* A generation with a role twice is never used, even if it would win. */
    k[4] = gen(0xff, NOW - 60, NOW + H, NOW + 2 * H);
    k[4].has_aes = -1;
    CHECK(p11t_lifecycle_pick(k, 5, NOW) == 3);
    k[4].has_aes = 1;
    CHECK(p11t_lifecycle_pick(k, 5, NOW) == 4);
    /* Boundaries are half-open: [ef, eu). */
    CHECK(p11t_lifecycle_pick(&k[2], 1, NOW + H - 1) == -1);
    CHECK(p11t_lifecycle_pick(&k[2], 1, NOW + H) == 0);
    CHECK(p11t_lifecycle_pick(&k[2], 1, NOW + 13 * H) == -1);
    CHECK(p11t_lifecycle_pick(k, 0, NOW) == -1);
}

static void test_duplicates(void)
{
    p11t_keyinfo k[8];
    size_t idx[8], n;
    int64_t ef = NOW + H;

    /* Three racing successors with identical times: the greatest survives. */
    k[0] = gen(0x30, ef, ef + 12 * H, ef + 36 * H);
    k[1] = gen(0xa0, ef, ef + 12 * H, ef + 36 * H);
    k[2] = gen(0x50, ef, ef + 12 * H, ef + 36 * H);
    /* The active key and an unrelated pending one stay. */
    k[3] = gen(0x10, NOW - 11 * H, ef, ef + 24 * H);
    k[4] = gen(0x05, ef + 12 * H, ef + 24 * H, ef + 48 * H);
    n = p11t_tool_duplicates(k, 5, NOW, idx);
    CHECK(n == 2);
    CHECK(n == 2 &&
          ((idx[0] == 0 && idx[1] == 2) || (idx[0] == 2 && idx[1] == 0)));

    /* An incomplete twin is not a candidate (rotate's plan handles it). */
    k[1].has_hmac = 0;
    n = p11t_tool_duplicates(k, 5, NOW, idx);
    CHECK(n == 1 && idx[0] == 0); /* 0x30 < 0x50 */
    k[1].has_hmac = 1;

    /* Different times: not duplicates. */
    k[2].times.decrypt_until++;
    n = p11t_tool_duplicates(k, 3, NOW, idx);
    CHECK(n == 1 && idx[0] == 0);
    k[2].times.decrypt_until--;

    /* Within the skew margin of encrypt-from, nothing is destroyed: a
     * server with a fast clock may already encrypt with either. */
    n = p11t_tool_duplicates(k, 3, ef - P11T_TOOL_SKEW, idx);
    CHECK(n == 0);
    n = p11t_tool_duplicates(k, 3, ef - P11T_TOOL_SKEW - 1, idx);
    CHECK(n == 2);
    /* Active twins (the gap was now) are left to the tie-break. */
    n = p11t_tool_duplicates(k, 3, ef, idx);
    CHECK(n == 0);
    CHECK(p11t_lifecycle_pick(k, 3, ef) == 1);
    CHECK(p11t_tool_duplicates(k, 0, NOW, idx) == 0);
}

static void test_overlapping(void)
{
    p11t_keyinfo k[5];
    size_t idx[5], n;

    /* Two rotators that each created "the" active key, a second apart. */
    k[0] = gen(0x20, NOW, NOW + 12 * H, NOW + 36 * H);
    k[1] = gen(0x90, NOW + 1, NOW + 1 + 12 * H, NOW + 1 + 36 * H);
    /* The successor and a decrypt-only predecessor are not affected. */
    k[2] = gen(0x30, NOW + 12 * H, NOW + 24 * H, NOW + 48 * H);
    k[3] = gen(0x40, NOW - 12 * H, NOW, NOW + 24 * H);
    CHECK(p11t_lifecycle_pick(k, 4, NOW + 5) == 1);
    n = p11t_tool_overlapping(k, 4, NOW + 5, idx);
    CHECK(n == 1 && idx[0] == 0);
    /* Before the second existed, nothing overlaps. */
    CHECK(p11t_tool_overlapping(k, 1, NOW + 5, idx) == 0);
    /* Same encrypt-from: the smaller name is the one retired. */
    k[1].times = k[0].times;
    CHECK(p11t_lifecycle_pick(k, 4, NOW + 5) == 1);
    n = p11t_tool_overlapping(k, 4, NOW + 5, idx);
    CHECK(n == 1 && idx[0] == 0);
    /* An incomplete twin is neither current nor retired. */
    k[1].has_hmac = 0;
    CHECK(p11t_tool_overlapping(k, 4, NOW + 5, idx) == 0);
    k[1].has_hmac = 1;
    /* No active key at all: nothing to retire. */
    CHECK(p11t_tool_overlapping(&k[2], 2, NOW + 5, idx) == 0);
    CHECK(p11t_tool_overlapping(k, 0, NOW, idx) == 0);
}

static void test_time_add(void)
{
    CHECK(p11t_time_add(NOW, H) == NOW + H);
    CHECK(p11t_time_add(P11T_TIME_NEVER, H) == P11T_TIME_NEVER);
    CHECK(p11t_time_add(NOW, P11T_TIME_NEVER) == P11T_TIME_NEVER);
    CHECK(p11t_time_add(P11T_TIME_NEVER - 5, 100) == P11T_TIME_NEVER - 1);
}

static void dur_is(int64_t secs, const char *want, int line)
{
    char out[P11T_TOOL_DUR_LEN];

    p11t_tool_format_dur(secs, out);
    CHECK_AT(strcmp(out, want) == 0, line);
    if (strcmp(out, want) != 0)
        fprintf(stderr, "  format_dur(%lld) = '%s', want '%s'\n",
                (long long)secs, out, want);
}
#define DUR_IS(s, w) dur_is(s, w, __LINE__)

static void test_format_dur(void)
{
    DUR_IS(0, "0s");
    DUR_IS(59, "59s");
    DUR_IS(60, "1m");
    DUR_IS(89, "1m");
    DUR_IS(90, "2m"); /* rounded to the last unit shown */
    DUR_IS(42 * 60 + 10, "42m");
    DUR_IS(59 * 60 + 29, "59m");
    DUR_IS(59 * 60 + 30, "1h");
    DUR_IS(H, "1h");
    DUR_IS(3 * H + 12 * 60, "3h12m");
    DUR_IS(9 * H, "9h");
    DUR_IS(24 * H - 31, "23h59m");
    DUR_IS(24 * H - 30, "1d");
    DUR_IS(28 * H, "1d04h");
    DUR_IS(28 * H + 29 * 60, "1d04h");
    DUR_IS(28 * H + 30 * 60, "1d05h");
    DUR_IS(48 * H, "2d");
    DUR_IS(-2 * H, "2h"); /* the magnitude: callers say "ago" */
    DUR_IS(-5, "5s");
    DUR_IS(INT64_MIN, "106751991167300d16h");
}

static void test_sort(void)
{
    p11t_keyinfo k[3];

    k[0] = gen(0x30, NOW + H, NOW + 2 * H, NOW + 3 * H);
    k[1] = gen(0x20, NOW, NOW + H, NOW + 2 * H);
    k[2] = gen(0x10, NOW + H, NOW + 2 * H, NOW + 3 * H);
    p11t_tool_sort_generations(k, 3);
    CHECK(k[0].name[0] == 0x20 && k[1].name[0] == 0x10 && k[2].name[0] == 0x30);
    p11t_tool_sort_generations(k, 0);
}

static void test_obj_ok(void)
{
    p11t_objinfo o[2];
    p11t_keyinfo g = gen(1, NOW, NOW + H, NOW + 2 * H);

    o[0] = obj(1, P11T_ROLE_AES, NOW, NOW + H, NOW + 2 * H);
    o[1] = obj(1, P11T_ROLE_HMAC, NOW, NOW + H, NOW + 2 * H);
    for (int i = 0; i < 2; i++)
        o[i].token = o[i].priv = o[i].sensitive = CK_TRUE;
    CHECK(p11t_tool_obj_ok(&o[0]) && p11t_tool_gen_ok(o, 2, &g));
    o[1].extractable = CK_TRUE;
    CHECK(!p11t_tool_obj_ok(&o[1]) && !p11t_tool_gen_ok(o, 2, &g));
    o[1].extractable = CK_FALSE;
    o[1].value_readable = 1;
    CHECK(!p11t_tool_gen_ok(o, 2, &g));
    /* Another generation's weak object does not count. */
    o[1].name[0] = 2;
    CHECK(p11t_tool_gen_ok(o, 2, &g));
}

static void test_issuing_until(void)
{
    p11t_keyinfo k[3];

    /* Current until +3h, successor from +2h to +5h: tickets until +5h. */
    k[0] = gen(1, NOW - H, NOW + 3 * H, NOW + 27 * H);
    k[1] = gen(2, NOW + 2 * H, NOW + 5 * H, NOW + 10 * H);
    CHECK(p11t_tool_issuing_until(k, 2, NOW) == NOW + 5 * H);
    /* A gap between them: until the first one ends. */
    k[1] = gen(2, NOW + 4 * H, NOW + 5 * H, NOW + 10 * H);
    CHECK(p11t_tool_issuing_until(k, 2, NOW) == NOW + 3 * H);
    /* Back to back (half-open windows): no gap. */
    k[1] = gen(2, NOW + 3 * H, NOW + 5 * H, NOW + 10 * H);
    CHECK(p11t_tool_issuing_until(k, 2, NOW) == NOW + 5 * H);
    /* None now: now.  Incomplete ones never count. */
    CHECK(p11t_tool_issuing_until(&k[1], 1, NOW) == NOW);
    k[2] = gen(3, NOW, NOW + 20 * H, NOW + 30 * H);
    k[2].has_hmac = 0;
    CHECK(p11t_tool_issuing_until(k, 3, NOW) == NOW + 5 * H);
    /* Open-ended: never. */
    k[2].has_hmac = 1;
    k[2].times.encrypt_until = P11T_TIME_NEVER;
    CHECK(p11t_tool_issuing_until(k, 3, NOW) == NOW + 30 * H); /* its du */
    k[2].times.decrypt_until = P11T_TIME_NEVER;
    CHECK(p11t_tool_issuing_until(k, 3, NOW) == P11T_TIME_NEVER);
    CHECK(p11t_tool_issuing_until(k, 0, NOW) == NOW);
}

static void test_timeline(void)
{
    p11t_keyinfo k[3];

    k[0] = gen(1, NOW - H, NOW + 3 * H, NOW + 27 * H);
    k[1] = gen(2, NOW + 2 * H, NOW + 5 * H, NOW + 10 * H);
    k[2] = gen(3, NOW - 10 * H, NOW - 2 * H, NOW + H);
    CHECK(p11t_tool_timeline_char(k, 3, 0, NOW) == 'E');
    CHECK(p11t_tool_timeline_char(k, 3, 1, NOW) == 'P');
    CHECK(p11t_tool_timeline_char(k, 3, 2, NOW) == 'd');
    /* At +2h the successor encrypts; the first is still active. */
    CHECK(p11t_tool_timeline_char(k, 3, 0, NOW + 2 * H) == 'a');
    CHECK(p11t_tool_timeline_char(k, 3, 1, NOW + 2 * H) == 'E');
    CHECK(p11t_tool_timeline_char(k, 3, 0, NOW + 3 * H) == 'd');
    CHECK(p11t_tool_timeline_char(k, 3, 2, NOW + H) == '.');
    CHECK(p11t_tool_timeline_char(k, 3, 1, NOW + 5 * H) == 'd');
    CHECK(p11t_tool_timeline_char(k, 3, 1, NOW + 10 * H) == '.');

    /* No key in [from, to): at from, or at a change inside. */
    CHECK(!p11t_tool_no_key_in(k, 3, NOW, NOW + 5 * H));
    CHECK(p11t_tool_no_key_in(k, 3, NOW + 4 * H, NOW + 5 * H + 1));
    CHECK(!p11t_tool_no_key_in(k, 3, NOW + 4 * H, NOW + 5 * H));
    CHECK(p11t_tool_no_key_in(k, 3, NOW + 6 * H, NOW + 7 * H));
    CHECK(!p11t_tool_no_key_in(k, 3, NOW, NOW));
    CHECK(p11t_tool_no_key_in(k, 0, NOW, NOW + 1));
}

int main(void)
{
    test_fold();
    test_pick();
    test_duplicates();
    test_overlapping();
    test_time_add();
    test_format_dur();
    test_sort();
    test_obj_ok();
    test_issuing_until();
    test_timeline();
    return test_report("test_generations");
}
