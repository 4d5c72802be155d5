/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_unit_hsm.c - unit tests of the parts of hsm/ that need no token:
 * label metadata, lifecycle states and the pick, configuration validation,
 * PIN sources, hex helpers and error records.  Every function starts with
 * its NULL and edge cases (as s2n-tls's unit tests do).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hsm.h"
#include "support.h"

static const int64_t NEVER = P11T_TIME_NEVER;

/* ---- labels -----------------------------------------------------------------
 */

static int parse_str(const char *s, p11t_role *role, p11t_times *t)
{
    return p11t_label_parse(s, strlen(s), role, t);
}

/* Places s at the very end of a readable page followed by PROT_NONE: any read
 * past len faults. */
static char *guarded(const char *s, size_t len, void **map, size_t *maplen)
{
    long pg = sysconf(_SC_PAGESIZE);
    char *base;

    *maplen = 2 * (size_t)pg;
    base = mmap(NULL, *maplen, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED || len > (size_t)pg)
        return NULL;
    if (mprotect(base + pg, (size_t)pg, PROT_NONE) != 0)
        return NULL;
    *map = base;
    memcpy(base + pg - len, s, len);
    return base + pg - len;
}

static void test_label_roundtrip(void)
{
    static const p11t_times cases[] = {
        {0, NEVER, NEVER},
        {1700000000, 1700007200, 1700054000},
        {1700000000, NEVER, NEVER},
        {1700000000, 1700007200, NEVER},
        {5, 5, 5},
        {NEVER - 1, NEVER - 1, NEVER - 1}, /* 19 digits, the largest time */
    };
    char buf[256];

    t_section("label format/parse round trips");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (int r = P11T_ROLE_AES; r <= P11T_ROLE_HMAC; r++) {
            p11t_role role = 0;
            p11t_times t = {-1, -1, -1};
            int n =
                p11t_label_format(buf, sizeof(buf), (p11t_role)r, &cases[i]);

            if (!CHECKF(n > 0 && (size_t)n == strlen(buf), "case %zu", i))
                continue;
            CHECKF(strncmp(buf, "p11ticket/1 ", 12) == 0, "%s", buf);
            CHECKF(p11t_label_parse(buf, (size_t)n, &role, &t) == 1, "%s", buf);
            CHECK_EQ(role, r);
            CHECKF(t.encrypt_from == cases[i].encrypt_from &&
                       t.encrypt_until == cases[i].encrypt_until &&
                       t.decrypt_until == cases[i].decrypt_until,
                   "%s", buf);
            /* Exactly n + 1 bytes is enough, n is not. */
            CHECK_EQ(
                p11t_label_format(buf, (size_t)n + 1, (p11t_role)r, &cases[i]),
                n);
            CHECK_EQ(p11t_label_format(buf, (size_t)n, (p11t_role)r, &cases[i]),
                     -1);
        }
    }
    {
        p11t_times t = {100, 200, NEVER};

        CHECK_EQ(p11t_label_format(buf, sizeof(buf), P11T_ROLE_AES, &t),
                 (int)strlen("p11ticket/1 aes ef=100 eu=200 du=-"));
        CHECKF(strcmp(buf, "p11ticket/1 aes ef=100 eu=200 du=-") == 0, "%s",
               buf);
        CHECK_EQ(p11t_label_format(buf, sizeof(buf), P11T_ROLE_HMAC, &t),
                 (int)strlen("p11ticket/1 hmac ef=100 eu=200 du=-"));
        CHECKF(strcmp(buf, "p11ticket/1 hmac ef=100 eu=200 du=-") == 0, "%s",
               buf);
        CHECK_EQ(p11t_label_format(NULL, 0, P11T_ROLE_AES, &t), -1);
        CHECK_EQ(p11t_label_format(buf, 0, P11T_ROLE_AES, &t), -1);
        CHECK_EQ(p11t_label_format(buf, sizeof(buf), P11T_ROLE_AES, NULL), -1);
        CHECK_EQ(p11t_label_format(buf, sizeof(buf), (p11t_role)0, &t), -1);
        CHECK_EQ(p11t_label_format(buf, sizeof(buf), (p11t_role)3, &t), -1);
        t.encrypt_from = NEVER; /* "never starts" cannot be written */
        CHECK_EQ(p11t_label_format(buf, sizeof(buf), P11T_ROLE_AES, &t), -1);
    }
}

static void test_label_parse_edges(void)
{
    static const char *bad[] = {
        "",
        "p11ticket/1",
        "p11ticket/1 ",
        "p11ticket/1 aes",
        "p11ticket/1 aes ef=1",
        "p11ticket/1 aes ef=1 eu=2",
        "p11ticket/1 aes ef=1 eu=2 du=",
        "p11ticket/1 aes ef= eu=2 du=3",
        "p11ticket/1 aes ef=- eu=2 du=3", /* ef cannot be never */
        "p11ticket/1 des ef=1 eu=2 du=3",
        "p11ticket/1 AES ef=1 eu=2 du=3",
        "p11ticket/2 aes ef=1 eu=2 du=3",
        "p11ticket/1  aes ef=1 eu=2 du=3",
        "p11ticket/1 aes ef=1 du=3 eu=2",
        "p11ticket/1 aes ef=1 eu=2 du=3 ",
        "p11ticket/1 aes ef=1 eu=2 du=3 x=4",
        "p11ticket/1 aes ef=1 eu=2 du=3\n",
        "p11ticket/1 aes ef=-1 eu=2 du=3",
        "p11ticket/1 aes ef=+1 eu=2 du=3",
        "p11ticket/1 aes ef=0x10 eu=2 du=3",
        "p11ticket/1 aes ef=1 eu=2x du=3",
        "p11ticket/1 aes ef=1 eu=2 du=3x",
        "p11ticket/1 aes ef=1 eu=2 du=--",
        "p11ticket/1 aes ef=99999999999999999999 eu=2 du=3",
        "p11ticket/1 aes ef=1 eu=18446744073709551616 du=3",
        "p11ticket/1 aes ef=1 eu=2 du=9223372036854775808",
        "p11ticket/1 aes ef=9223372036854775807 eu=- du=-", /* reserved: never
                                                             */
        "p11ticket/1 aes ef=1 eu=2 du=3000000000000000000000000000000",
        "my own key",
        "P11TICKET/1 aes ef=1 eu=2 du=3",
    };
    p11t_role role = 0;
    p11t_times t = {0, 0, 0};

    t_section("label parse: malformed input is refused");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECKF(parse_str(bad[i], &role, &t) == 0, "accepted \"%s\"", bad[i]);

    /* NULL-ish arguments. */
    CHECK_EQ(p11t_label_parse(NULL, 0, &role, &t), 0);
    CHECK_EQ(p11t_label_parse(NULL, 10, &role, &t), 0);
    CHECK_EQ(p11t_label_parse("p11ticket/1 aes ef=1 eu=2 du=3", 0, &role, &t),
             0);
    CHECK_EQ(p11t_label_parse("p11ticket/1 aes ef=1 eu=2 du=3", 30, NULL, &t),
             0);
    CHECK_EQ(
        p11t_label_parse("p11ticket/1 aes ef=1 eu=2 du=3", 30, &role, NULL), 0);

    /* An embedded NUL is not the end of the label: len rules. */
    {
        static const char withnul[] = "p11ticket/1 aes ef=1 eu=2 du=3\0garbage";

        CHECK_EQ(p11t_label_parse(withnul, sizeof(withnul) - 1, &role, &t), 0);
    }

    /* The largest time that is not "never". */
    CHECK(parse_str("p11ticket/1 hmac ef=9223372036854775806 eu=- du=-", &role,
                    &t) == 1 &&
          t.encrypt_from == NEVER - 1 && role == P11T_ROLE_HMAC);
    /* Leading zeros are harmless digits. */
    CHECK(parse_str("p11ticket/1 aes ef=007 eu=08 du=9", &role, &t) == 1 &&
          t.encrypt_from == 7 && t.encrypt_until == 8 && t.decrypt_until == 9);

    /* A failed parse leaves the outputs alone. */
    role = P11T_ROLE_HMAC;
    t.encrypt_from = 42;
    CHECK_EQ(parse_str("p11ticket/1 aes ef=1 eu=2", &role, &t), 0);
    CHECK(role == P11T_ROLE_HMAC && t.encrypt_from == 42);
}

static void test_label_len_respected(void)
{
    static const char full[] = "p11ticket/1 aes ef=100 eu=200 du=3004";
    size_t len = sizeof(full) - 1;
    p11t_role role = 0;
    p11t_times t = {0, 0, 0};
    void *map = NULL;
    size_t maplen = 0;
    char *g;

    t_section("label parse respects len (no NUL, guard page after)");
    g = guarded(full, len, &map, &maplen);
    if (!CHECK(g != NULL))
        return;
    /* No NUL anywhere: the page ends right after the label. */
    CHECK(p11t_label_parse(g, len, &role, &t) == 1 && t.decrypt_until == 3004 &&
          role == P11T_ROLE_AES && t.encrypt_from == 100 &&
          t.encrypt_until == 200);
    /* One byte shorter is a different, valid label: du=300. */
    CHECK(p11t_label_parse(g, len - 1, &role, &t) == 1 &&
          t.decrypt_until == 300);
    /* Every shorter prefix that cuts a field or its name is refused. */
    for (size_t cut = 0; cut < len; cut++) {
        int r = p11t_label_parse(g, cut, &role, &t);
        int valid = cut >= len - 3; /* "du=3", "du=30", "du=300" */

        CHECKF(r == valid, "prefix of %zu bytes: %d", cut, r);
    }
    munmap(map, maplen);

    /* Every prefix of a label with a "-" at the end, at the page end too. */
    {
        static const char nev[] = "p11ticket/1 hmac ef=1 eu=- du=-";

        g = guarded(nev, sizeof(nev) - 1, &map, &maplen);
        if (CHECK(g != NULL)) {
            for (size_t cut = 0; cut <= sizeof(nev) - 1; cut++)
                CHECKF(p11t_label_parse(g + (sizeof(nev) - 1 - cut), cut, &role,
                                        &t) == (cut == sizeof(nev) - 1),
                       "suffix of %zu bytes", cut);
            munmap(map, maplen);
        }
    }
}

/* ---- lifecycle
 * --------------------------------------------------------------- */

static void test_lifecycle_state(void)
{
    const p11t_times t = {1000, 2000, 3000};
    const p11t_times open = {1000, NEVER, NEVER};
    const p11t_times no_eu = {1000, NEVER, 3000};
    const p11t_times inverted = {1000, 4000, 3000}; /* du before eu */

    t_section("lifecycle state at the boundaries ([ef, eu) active, [eu, du) "
              "decrypt-only)");
    CHECK_EQ(p11t_lifecycle_state(&t, 0), P11T_STATE_PENDING);
    CHECK_EQ(p11t_lifecycle_state(&t, 999), P11T_STATE_PENDING);
    CHECK_EQ(p11t_lifecycle_state(&t, 1000), P11T_STATE_ACTIVE);
    CHECK_EQ(p11t_lifecycle_state(&t, 1999), P11T_STATE_ACTIVE);
    CHECK_EQ(p11t_lifecycle_state(&t, 2000), P11T_STATE_DECRYPT_ONLY);
    CHECK_EQ(p11t_lifecycle_state(&t, 2999), P11T_STATE_DECRYPT_ONLY);
    CHECK_EQ(p11t_lifecycle_state(&t, 3000), P11T_STATE_EXPIRED);
    CHECK_EQ(p11t_lifecycle_state(&t, NEVER), P11T_STATE_EXPIRED);
    CHECK_EQ(p11t_lifecycle_state(&t, -1), P11T_STATE_PENDING);
    CHECK_EQ(p11t_lifecycle_state(&t, INT64_MIN), P11T_STATE_PENDING);

    CHECK_EQ(p11t_lifecycle_state(&open, 999), P11T_STATE_PENDING);
    CHECK_EQ(p11t_lifecycle_state(&open, 1000), P11T_STATE_ACTIVE);
    CHECK_EQ(p11t_lifecycle_state(&open, NEVER - 1), P11T_STATE_ACTIVE);

    CHECK_EQ(p11t_lifecycle_state(&no_eu, 2999), P11T_STATE_ACTIVE);
    CHECK_EQ(p11t_lifecycle_state(&no_eu, 3000), P11T_STATE_EXPIRED);

    /* A generation never encrypts at or after its decrypt_until. */
    CHECK_EQ(p11t_lifecycle_state(&inverted, 2999), P11T_STATE_ACTIVE);
    CHECK_EQ(p11t_lifecycle_state(&inverted, 3000), P11T_STATE_EXPIRED);

    /* Zero-length windows. */
    {
        const p11t_times z = {1000, 1000, 1000};

        CHECK_EQ(p11t_lifecycle_state(&z, 999), P11T_STATE_PENDING);
        CHECK_EQ(p11t_lifecycle_state(&z, 1000), P11T_STATE_EXPIRED);
    }

    CHECK(strcmp(p11t_state_name(P11T_STATE_PENDING), "pending") == 0);
    CHECK(strcmp(p11t_state_name(P11T_STATE_ACTIVE), "active") == 0);
    CHECK(strcmp(p11t_state_name(P11T_STATE_DECRYPT_ONLY), "decrypt-only") ==
          0);
    CHECK(strcmp(p11t_state_name(P11T_STATE_EXPIRED), "expired") == 0);
    CHECK(p11t_state_name((p11t_state)99) != NULL);
}

static p11t_keyinfo key(uint8_t first, uint8_t last, int64_t ef, int64_t eu,
                        int64_t du)
{
    p11t_keyinfo k;

    memset(&k, 0, sizeof(k));
    k.name[0] = first;
    k.name[P11T_NAME_LEN - 1] = last;
    k.times.encrypt_from = ef;
    k.times.encrypt_until = eu;
    k.times.decrypt_until = du;
    k.has_aes = k.has_hmac = 1;
    k.aes_len = 32;
    k.hmac_len = 32;
    return k;
}

static void test_lifecycle_pick(void)
{
    p11t_keyinfo k[6];

    t_section("lifecycle pick");
    CHECK_EQ(p11t_lifecycle_pick(NULL, 0, 100), -1);
    CHECK_EQ(p11t_lifecycle_pick(NULL, 3, 100), -1);
    k[0] = key(1, 0, 100, NEVER, NEVER);
    CHECK_EQ(p11t_lifecycle_pick(k, 0, 100), -1);
    CHECK_EQ(p11t_lifecycle_pick(k, 1, 99), -1); /* pending */
    CHECK_EQ(p11t_lifecycle_pick(k, 1, 100), 0);

    /* Latest encrypt_from wins, whatever the order. */
    k[0] = key(9, 0, 100, NEVER, NEVER);
    k[1] = key(1, 0, 200, NEVER, NEVER);
    k[2] = key(5, 0, 150, NEVER, NEVER);
    CHECK_EQ(p11t_lifecycle_pick(k, 3, 300), 1);
    CHECK_EQ(p11t_lifecycle_pick(k, 3, 199), 2); /* k[1] still pending */
    CHECK_EQ(p11t_lifecycle_pick(k, 3, 149), 0);

    /* Ties go to the greatest name, compared as bytes (0xff > 0x7f) and
     * across the whole name, in any order. */
    k[0] = key(0x7f, 0xff, 100, NEVER, NEVER);
    k[1] = key(0xff, 0x00, 100, NEVER, NEVER);
    k[2] = key(0x7f, 0xfe, 100, NEVER, NEVER);
    CHECK_EQ(p11t_lifecycle_pick(k, 3, 100), 1);
    k[1] = key(0x7f, 0x00, 100, NEVER, NEVER);
    CHECK_EQ(p11t_lifecycle_pick(k, 3, 100), 0);
    {
        p11t_keyinfo rev[3] = {k[2], k[1], k[0]};

        CHECK_EQ(p11t_lifecycle_pick(rev, 3, 100), 2);
    }

    /* Incomplete generations are skipped even when they would win. */
    k[0] = key(1, 0, 100, NEVER, NEVER);
    k[1] = key(2, 0, 200, NEVER, NEVER);
    k[1].has_aes = 0;
    k[2] = key(3, 0, 300, NEVER, NEVER);
    k[2].has_hmac = 0;
    CHECK_EQ(p11t_lifecycle_pick(k, 3, 400), 0);
    k[0].has_aes = 0;
    CHECK_EQ(p11t_lifecycle_pick(k, 3, 400), -1);

    /* Only ACTIVE keys: decrypt-only, expired and pending never win. */
    k[0] = key(1, 0, 100, 200, 300);     /* decrypt-only at 250 */
    k[1] = key(2, 0, 50, 100, 150);      /* expired at 250 */
    k[2] = key(3, 0, 400, NEVER, NEVER); /* pending at 250 */
    CHECK_EQ(p11t_lifecycle_pick(k, 3, 250), -1);
    k[3] = key(4, 0, 10, NEVER, NEVER);
    CHECK_EQ(p11t_lifecycle_pick(k, 4, 250), 3);
    /* At eu exactly the key stops encrypting. */
    CHECK_EQ(p11t_lifecycle_pick(k, 1, 199), 0);
    CHECK_EQ(p11t_lifecycle_pick(k, 1, 200), -1);
}

/* ---- rotation planning
 * ---------------------------------------------------------- */

static void test_parse_duration(void)
{
    static const struct {
        const char *s;
        int64_t v;
    } good[] = {
        {"90", 90},     {"15s", 15},    {"90m", 5400},
        {"12h", 43200}, {"7d", 604800}, {"1", 1},
    };
    static const char *bad[] = {"",
                                "-1",
                                "+5",
                                "1x",
                                "1hh",
                                "h",
                                " 1",
                                "1 h",
                                "1.5h",
                                "99999999999999999999",
                                "9223372036854775807d",
                                "0x10"};
    int64_t v;

    t_section("durations");
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        v = -1;
        CHECKF(p11t_parse_duration(good[i].s, &v) == 1 && v == good[i].v,
               "'%s' -> %lld", good[i].s, (long long)v);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 42;
        CHECKF(p11t_parse_duration(bad[i], &v) == 0 && v == 42,
               "'%s' accepted (%lld)", bad[i], (long long)v);
    }
    CHECK_EQ(p11t_parse_duration(NULL, &v), 0);
    CHECK_EQ(p11t_parse_duration("5", NULL), 0);
}

static int plans_equal(const p11t_plan *a, const p11t_plan *b)
{
    if (a->n_create != b->n_create || a->n_destroy != b->n_destroy)
        return 0;
    for (size_t i = 0; i < a->n_create; i++)
        if (a->create[i].encrypt_from != b->create[i].encrypt_from ||
            a->create[i].encrypt_until != b->create[i].encrypt_until ||
            a->create[i].decrypt_until != b->create[i].decrypt_until)
            return 0;
    return a->n_destroy == 0 ||
           memcmp(a->destroy, b->destroy, a->n_destroy * P11T_NAME_LEN) == 0;
}

static int plan_destroys(const p11t_plan *p, const p11t_keyinfo *k)
{
    for (size_t i = 0; i < p->n_destroy; i++)
        if (memcmp(p->destroy[i], k->name, P11T_NAME_LEN) == 0)
            return 1;
    return 0;
}

static void test_rotate_plan(void)
{
    const p11t_policy pol = {
        .encrypt_for = 7200, .decrypt_for = 46800, .lead = 3600};
    const int64_t now = 1700000000;
    p11t_keyinfo k[4];
    p11t_plan plan, again;

    t_section("rotation planning");
    /* Bad arguments. */
    CHECK_EQ(p11t_rotate_plan(NULL, 0, now, &pol, NULL), -1);
    CHECK_EQ(p11t_rotate_plan(NULL, 0, now, NULL, &plan), -1);
    CHECK_EQ(p11t_rotate_plan(NULL, 2, now, &pol, &plan), -1);
    {
        p11t_policy z = pol;

        z.encrypt_for = 0;
        CHECK_EQ(p11t_rotate_plan(NULL, 0, now, &z, &plan), -1);
        z = pol;
        z.lead = -1;
        CHECK_EQ(p11t_rotate_plan(NULL, 0, now, &z, &plan), -1);
    }

    /* Empty token: one generation active from now; the lead is shorter than
     * its window, so no successor yet. */
    if (CHECK(p11t_rotate_plan(NULL, 0, now, &pol, &plan) == 0)) {
        CHECK_EQ(plan.n_create, 1);
        CHECK_EQ(plan.n_destroy, 0);
        CHECK(plan.create[0].encrypt_from == now &&
              plan.create[0].encrypt_until == now + 7200 &&
              plan.create[0].decrypt_until == now + 7200 + 46800);
        p11t_plan_free(&plan);
    }

    /* A key active well beyond the lead: nothing to do. */
    k[0] = key(1, 0, now - 100, now + 7100, now + 7100 + 46800);
    if (CHECK(p11t_rotate_plan(k, 1, now, &pol, &plan) == 0)) {
        CHECK_EQ(plan.n_create, 0);
        CHECK_EQ(plan.n_destroy, 0);
        p11t_plan_free(&plan);
    }

    /* A key ending within the lead: the successor starts exactly at its
     * encrypt_until (every host computes the same times). */
    k[0] = key(1, 0, now - 7000, now + 200, now + 200 + 46800);
    if (CHECK(p11t_rotate_plan(k, 1, now, &pol, &plan) == 0)) {
        CHECK_EQ(plan.n_create, 1);
        CHECK(plan.n_create >= 1 && plan.create[0].encrypt_from == now + 200 &&
              plan.create[0].encrypt_until == now + 200 + 7200 &&
              plan.create[0].decrypt_until == now + 200 + 7200 + 46800);
        CHECK(p11t_rotate_plan(k, 1, now, &pol, &again) == 0 &&
              plans_equal(&plan, &again));
        p11t_plan_free(&again);
        p11t_plan_free(&plan);
    }
    /* ... unless that successor is already on the token (pending). */
    k[1] = key(2, 0, now + 200, now + 200 + 7200, now + 200 + 7200 + 46800);
    if (CHECK(p11t_rotate_plan(k, 2, now, &pol, &plan) == 0)) {
        CHECK_EQ(plan.n_create, 0);
        p11t_plan_free(&plan);
    }
    /* An incomplete successor does not count. */
    k[1].has_aes = 0;
    k[1].times.encrypt_from = now; /* young: maybe still being created */
    if (CHECK(p11t_rotate_plan(k, 2, now, &pol, &plan) == 0)) {
        CHECK_EQ(plan.n_create, 1);
        CHECK(!plan_destroys(&plan, &k[1]));
        p11t_plan_free(&plan);
    }

    /* Expired generations go, decrypt-only ones stay; old debris goes. */
    k[0] = key(1, 0, now - 90000, now - 80000, now - 1);   /* expired */
    k[1] = key(2, 0, now - 9000, now - 1800, now + 45000); /* decrypt-only */
    k[2] = key(3, 0, now - 1800, now + 5400, now + 5400 + 46800); /* active */
    k[3] = key(4, 0, now - 100000, NEVER, NEVER); /* incomplete */
    k[3].has_hmac = 0;
    if (CHECK(p11t_rotate_plan(k, 4, now, &pol, &plan) == 0)) {
        CHECK(plan_destroys(&plan, &k[0]));
        CHECK(!plan_destroys(&plan, &k[1]));
        CHECK(!plan_destroys(&plan, &k[2]));
        CHECK(plan_destroys(&plan, &k[3]));
        CHECK_EQ(plan.n_destroy, 2);
        CHECK_EQ(plan.n_create, 0);
        p11t_plan_free(&plan);
    }

    /* Only decrypt-only keys left: a new active key from now. */
    if (CHECK(p11t_rotate_plan(&k[1], 1, now, &pol, &plan) == 0)) {
        CHECK(plan.n_create >= 1 && plan.create[0].encrypt_from == now);
        p11t_plan_free(&plan);
    }
    p11t_plan_free(NULL);
}

/* ---- configuration
 * -------------------------------------------------------------- */

static CK_RV cfg_one(const char *key, const char *value, p11t_err *err)
{
    p11t_config *cfg = p11t_config_new();
    CK_RV rv;

    p11t_err_clear(err);
    if (cfg == NULL)
        return CKR_HOST_MEMORY;
    rv = p11t_config_set(cfg, key, value, err);
    p11t_config_free(cfg);
    return rv;
}

static void test_config(void)
{
    static const struct {
        const char *key, *value;
    } bad[] = {
        {"token-uri", "http://x"},
        {"token-uri", ""},
        {"token-uri", "tickets"},
        {"token-uri", "pkcs11:token=%zz"},
        {"token-uri", "pkcs11:token=%4"},
        {"token-uri", "pkcs11:token=tickets?pin-value=1234"},
        {"pin-source", "foo:"},
        {"pin-source", "foo:bar"},
        {"pin-source", "file:"},
        {"pin-source", "file:relative/pin"},
        {"pin-source", "env:"},
        {"pin-source", "env:1BAD"},
        {"pin-source", "env:HAS SPACE"},
        {"pin-source", ""},
        {"pin-source", "1234"},
        {"pkcs11-module", ""},
        {"refresh-interval", ""},
        {"refresh-interval", "abc"},
        {"refresh-interval", "-1"},
        {"refresh-interval", "0"},
        {"refresh-interval", "10s"},
        {"refresh-interval", " 10"},
        {"refresh-interval", "99999999999999999999"},
        {"refresh-interval", "4294967306"}, /* 2^32 + 10 wraps to 10 */
        {"p11ticket-foo", "1"},
        {"token_uri", "pkcs11:token=tickets"},
        {"pin-sourc", "file:/x"},
    };
    static const struct {
        const char *key, *value;
    } good[] = {
        {"token-uri", "pkcs11:token=tickets"},
        {"token-uri",
         "pkcs11:token=my%20tickets;manufacturer=SoftHSM%20project"},
        {"pin-source", "file:/etc/p11ticket/pin"},
        {"pin-source", "env:P11TICKET_PIN"},
        {"pkcs11-module", "/usr/lib/softhsm/libsofthsm2.so"},
        {"refresh-interval", "1"},
        {"refresh-interval", "86400"},
        {"module", "/anything/p11ticket.so"},
        {"activate", "1"},
        {"identity", "p11ticket"},
    };
    p11t_config *cfg;
    p11t_err err;
    CK_RV rv;

    t_section("config: invalid values are refused and name their key");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rv = cfg_one(bad[i].key, bad[i].value, &err);
        CHECKF(rv == P11T_CKR_CONFIG, "%s = '%s' gave %s", bad[i].key,
               bad[i].value, p11t_rv_name(rv));
        CHECKF(err.rv == rv && strstr(err.msg, bad[i].key) != NULL,
               "%s: message does not name the key: '%s'", bad[i].key, err.msg);
    }
    /* The PIN-like values never appear in the message. */
    rv = cfg_one("pin-source", "1234", &err);
    CHECKF(strstr(err.msg, "1234") == NULL, "%s", err.msg);
    rv = cfg_one("token-uri", "pkcs11:token=tickets?pin-value=98765", &err);
    CHECKF(strstr(err.msg, "98765") == NULL, "%s", err.msg);

    t_section("config: valid values are accepted");
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        rv = cfg_one(good[i].key, good[i].value, &err);
        CHECKF(rv == CKR_OK, "%s = '%s' gave %s: %s", good[i].key,
               good[i].value, p11t_rv_name(rv), err.msg);
    }

    t_section("config: NULL arguments, duplicates, check, refresh-interval");
    cfg = p11t_config_new();
    REQUIRE(cfg != NULL);
    p11t_err_clear(&err);
    CHECK(p11t_config_set(NULL, "token-uri", "pkcs11:token=x", &err) != CKR_OK);
    CHECK(p11t_config_set(cfg, NULL, "x", &err) != CKR_OK);
    CHECK(p11t_config_set(cfg, "token-uri", NULL, &err) != CKR_OK);
    CHECK(p11t_config_set(cfg, "token-uri", NULL, NULL) != CKR_OK);

    p11t_err_clear(&err);
    CHECK_EQ(p11t_config_check(cfg, &err), P11T_CKR_CONFIG);
    CHECKF(strstr(err.msg, "pkcs11-module") != NULL, "%s", err.msg);
    p11t_err_clear(&err);
    CHECK_EQ(p11t_config_set(cfg, "pkcs11-module", "/x.so", &err), CKR_OK);
    CHECK_EQ(p11t_config_check(cfg, &err), P11T_CKR_CONFIG);
    CHECKF(strstr(err.msg, "token-uri") != NULL, "%s", err.msg);
    p11t_err_clear(&err);
    CHECK_EQ(p11t_config_set(cfg, "token-uri", "pkcs11:token=t", &err), CKR_OK);
    CHECK_EQ(p11t_config_check(cfg, &err), P11T_CKR_CONFIG);
    CHECKF(strstr(err.msg, "pin-source") != NULL, "%s", err.msg);
    p11t_err_clear(&err);
    CHECK_EQ(p11t_config_set(cfg, "pin-source", "env:PIN", &err), CKR_OK);
    CHECK_EQ(p11t_config_check(cfg, &err), CKR_OK);
    /* A key given twice is an error (two values: which one is meant?). */
    p11t_err_clear(&err);
    CHECK_EQ(p11t_config_set(cfg, "token-uri", "pkcs11:token=u", &err),
             P11T_CKR_CONFIG);
    CHECKF(strstr(err.msg, "token-uri") != NULL, "%s", err.msg);
    /* refresh-interval: default, then the configured value. */
    CHECKF(p11t_config_refresh_interval(cfg) > 0, "default %u",
           p11t_config_refresh_interval(cfg));
    p11t_err_clear(&err);
    CHECK_EQ(p11t_config_set(cfg, "refresh-interval", "17", &err), CKR_OK);
    CHECK_EQ(p11t_config_refresh_interval(cfg), 17);
    /* A rejected value leaves the previous one. */
    CHECK(p11t_config_set(cfg, "refresh-interval", "x", &err) != CKR_OK);
    CHECK_EQ(p11t_config_refresh_interval(cfg), 17);
    p11t_config_free(cfg);
    p11t_config_free(NULL);
}

/* ---- PIN sources
 * --------------------------------------------------------------- */

static const char *tmpdir;

extern char **environ;

static void pin_file(const char *path, const void *data, size_t len,
                     mode_t mode)
{
    int fd;

    unlink(path); /* the previous one may be read-only */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);

    if (fd < 0 || write(fd, data, len) != (ssize_t)len || fchmod(fd, mode) != 0)
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
    if (fd >= 0)
        close(fd);
}

static CK_RV pin_read(const char *source, char **pin, size_t *len,
                      p11t_err *err)
{
    p11t_err_clear(err);
    *pin = NULL;
    *len = 0;
    return p11t_pin_read(source, pin, len, err);
}

static void test_pin(void)
{
    static const char secret[] = "s3cr3t-PIN-4711";
    char path[512], src[600];
    char *pin = NULL;
    size_t len = 0;
    p11t_err err;
    CK_RV rv;

    t_section("pin-source file:");
    snprintf(path, sizeof(path), "%s/pin", tmpdir);
    snprintf(src, sizeof(src), "file:%s", path);

    pin_file(path, secret, strlen(secret), 0600);
    rv = pin_read(src, &pin, &len, &err);
    CHECKF(rv == CKR_OK && pin != NULL && len == strlen(secret) &&
               strcmp(pin, secret) == 0,
           "%s: %s", p11t_rv_name(rv), err.msg);
    p11t_pin_free(pin, len);

    pin_file(path, "1234\n", 5, 0600);
    rv = pin_read(src, &pin, &len, &err);
    CHECKF(rv == CKR_OK && len == 4 && strcmp(pin, "1234") == 0,
           "trailing newline: %s len %zu", p11t_rv_name(rv), len);
    p11t_pin_free(pin, len);

    /* Only the trailing newline goes; inner spaces are part of the PIN. */
    pin_file(path, " a b \n", 6, 0600);
    rv = pin_read(src, &pin, &len, &err);
    CHECKF(rv == CKR_OK && len == 5 && strcmp(pin, " a b ") == 0,
           "inner spaces: %s len %zu", p11t_rv_name(rv), len);
    p11t_pin_free(pin, len);

    pin_file(path, "0400", 4, 0400);
    rv = pin_read(src, &pin, &len, &err);
    CHECKF(rv == CKR_OK && len == 4, "mode 0400: %s", err.msg);
    p11t_pin_free(pin, len);

    pin_file(path, secret, strlen(secret), 0644);
    rv = pin_read(src, &pin, &len, &err);
    CHECKF(rv != CKR_OK && pin == NULL, "mode 0644 accepted");
    CHECKF(strstr(err.msg, "pin-source") != NULL, "message: %s", err.msg);
    CHECKF(strstr(err.msg, secret) == NULL, "PIN in message: %s", err.msg);

    pin_file(path, secret, strlen(secret), 0640);
    rv = pin_read(src, &pin, &len, &err);
    CHECKF(rv != CKR_OK && pin == NULL, "mode 0640 accepted");
    pin_file(path, secret, strlen(secret), 0604);
    rv = pin_read(src, &pin, &len, &err);
    CHECKF(rv != CKR_OK && pin == NULL, "mode 0604 accepted");

    pin_file(path, "", 0, 0600);
    rv = pin_read(src, &pin, &len, &err);
    CHECKF(rv != CKR_OK && pin == NULL, "empty file accepted");
    CHECKF(strstr(err.msg, "pin-source") != NULL, "message: %s", err.msg);
    pin_file(path, "\n", 1, 0600);
    rv = pin_read(src, &pin, &len, &err);
    CHECKF(rv != CKR_OK && pin == NULL, "newline-only file accepted");

    pin_file(path,
             "12\0"
             "34",
             5, 0600);
    rv = pin_read(src, &pin, &len, &err);
    CHECKF(rv != CKR_OK && pin == NULL, "PIN with a NUL byte accepted");

    {
        char big[4096];

        memset(big, '7', sizeof(big));
        pin_file(path, big, sizeof(big), 0600);
        rv = pin_read(src, &pin, &len, &err);
        CHECKF(rv != CKR_OK && pin == NULL, "4096-byte PIN accepted");
    }

    snprintf(src, sizeof(src), "file:%s/does-not-exist", tmpdir);
    rv = pin_read(src, &pin, &len, &err);
    CHECKF(rv != CKR_OK && pin == NULL, "missing file accepted");
    CHECKF(strstr(err.msg, "pin-source") != NULL, "message: %s", err.msg);

    snprintf(src, sizeof(src), "file:%s", tmpdir); /* a directory */
    rv = pin_read(src, &pin, &len, &err);
    CHECKF(rv != CKR_OK && pin == NULL, "directory accepted");

    t_section("pin-source env:");
    setenv("P11T_UNIT_PIN", secret, 1);
    rv = pin_read("env:P11T_UNIT_PIN", &pin, &len, &err);
    CHECKF(rv == CKR_OK && len == strlen(secret) && strcmp(pin, secret) == 0,
           "%s", err.msg);
    p11t_pin_free(pin, len);
    setenv("P11T_UNIT_PIN", "", 1);
    rv = pin_read("env:P11T_UNIT_PIN", &pin, &len, &err);
    CHECKF(rv != CKR_OK && pin == NULL, "empty env PIN accepted");
    unsetenv("P11T_UNIT_PIN");
    rv = pin_read("env:P11T_UNIT_PIN", &pin, &len, &err);
    CHECKF(rv != CKR_OK && pin == NULL, "unset variable accepted");
    CHECKF(strstr(err.msg, "pin-source") != NULL &&
               strstr(err.msg, "P11T_UNIT_PIN") != NULL,
           "message: %s", err.msg);

    t_section("pin-source file: the first line only");
    snprintf(src, sizeof(src), "file:%s/pin", tmpdir);
    pin_file(path, "first\nsecond line\n", 18, 0600);
    rv = pin_read(src, &pin, &len, &err);
    CHECKF(rv == CKR_OK && len == 5 && strcmp(pin, "first") == 0,
           "first line: %s", err.msg);
    p11t_pin_free(pin, len);
    pin_file(path, "crlf\r\nrest", 10, 0600);
    rv = pin_read(src, &pin, &len, &err);
    CHECKF(rv == CKR_OK && len == 4 && strcmp(pin, "crlf") == 0,
           "CRLF first line: %s", err.msg);
    p11t_pin_free(pin, len);

    if (geteuid() == 0) {
        t_section("pin-source file: owned by another user");
        pin_file(path, secret, strlen(secret), 0600);
        CHECK(chown(path, 12345, 12345) == 0);
        rv = pin_read(src, &pin, &len, &err);
        CHECKF(rv != CKR_OK && pin == NULL, "another user's PIN file accepted");
        CHECKF(strstr(err.msg, "chown") != NULL, "message: %s", err.msg);
        CHECK(chown(path, 0, 0) == 0);
    }

    t_section("pin-source: preload holds the PIN, env: is wiped");
    setenv("P11T_UNIT_PRELOAD", "preloaded-pin", 1);
    CHECK_EQ(p11t_pin_preload("env:P11T_UNIT_PRELOAD", &err), CKR_OK);
    CHECKF(getenv("P11T_UNIT_PRELOAD") == NULL,
           "the env: variable is still in the environment");
    for (char **e = environ; *e != NULL; e++)
        CHECKF(strstr(*e, "preloaded-pin") == NULL,
               "the PIN is still in environ: %s", *e);
    rv = pin_read("env:P11T_UNIT_PRELOAD", &pin, &len, &err);
    CHECKF(rv == CKR_OK && len == 13 && strcmp(pin, "preloaded-pin") == 0,
           "held env: PIN not returned: %s", err.msg);
    p11t_pin_free(pin, len);
    pin_file(path, "held-file-pin\n", 14, 0600);
    CHECK_EQ(p11t_pin_preload(src, &err), CKR_OK);
    /* The file goes away (or becomes unreadable after a privilege drop):
     * the held PIN still serves every later login. */
    CHECK(unlink(path) == 0);
    rv = pin_read(src, &pin, &len, &err);
    CHECKF(rv == CKR_OK && strcmp(pin, "held-file-pin") == 0,
           "held file PIN not returned: %s", err.msg);
    p11t_pin_free(pin, len);
    CHECK_EQ(p11t_pin_preload("prompt", &err), CKR_OK);
    p11t_err_clear(&err);
    snprintf(src, sizeof(src), "file:%s/never-there", tmpdir);
    CHECK(p11t_pin_preload(src, &err) != CKR_OK);
    CHECKF(strstr(err.msg, "pin-source") != NULL, "message: %s", err.msg);

    t_section("pin-source: bad forms");
    rv = pin_read("foo:bar", &pin, &len, &err);
    CHECKF(rv != CKR_OK && pin == NULL, "foo:bar accepted");
    CHECKF(strstr(err.msg, "pin-source") != NULL, "message: %s", err.msg);
    rv = pin_read("file:", &pin, &len, &err);
    CHECKF(rv != CKR_OK && pin == NULL, "file: accepted");
    rv = pin_read("env:", &pin, &len, &err);
    CHECKF(rv != CKR_OK && pin == NULL, "env: accepted");
    rv = pin_read(secret, &pin, &len, &err);
    CHECKF(rv != CKR_OK && pin == NULL, "a bare PIN accepted");
    CHECKF(strstr(err.msg, secret) == NULL, "PIN in message: %s", err.msg);
    p11t_err_clear(&err);
    CHECK(p11t_pin_read(NULL, &pin, &len, &err) != CKR_OK);
    p11t_pin_free(NULL, 0);
}

/* ---- hex and errors
 * ------------------------------------------------------------ */

static void test_hex(void)
{
    const uint8_t name[P11T_NAME_LEN] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0xab,
                                         0xcd, 0xef, 0x10, 0x20, 0x30, 0x40,
                                         0x50, 0x60, 0x70, 0x9a};
    uint8_t back[P11T_NAME_LEN];
    char hex[33];

    t_section("hex helpers");
    memset(hex, 'X', sizeof(hex));
    p11t_hex(name, hex);
    CHECKF(strcmp(hex, "00017f80ffabcdef102030405060709a") == 0, "%s", hex);
    memset(back, 0, sizeof(back));
    CHECK(p11t_unhex(hex, back) == 1 && memcmp(back, name, sizeof(name)) == 0);

    memset(back, 0x55, sizeof(back));
    CHECK_EQ(p11t_unhex(NULL, back), 0);
    CHECK_EQ(p11t_unhex("", back), 0);
    CHECK_EQ(p11t_unhex("00017f80ffabcdef102030405060709", back), 0);   /* 31 */
    CHECK_EQ(p11t_unhex("00017f80ffabcdef102030405060709a0", back), 0); /* 33 */
    CHECK_EQ(p11t_unhex("00017f80ffabcdef102030405060709g", back), 0);
    CHECK_EQ(p11t_unhex("g0017f80ffabcdef102030405060709a", back), 0);
    CHECK_EQ(p11t_unhex("00017f80ffabcdef10203040506070 a", back), 0);
    CHECK_EQ(p11t_unhex("0x017f80ffabcdef102030405060709a", back), 0);
    CHECK_EQ(p11t_unhex("00:1:7f80ffabcdef102030405060709", back), 0);
}

static void test_err(void)
{
    p11t_err err;

    t_section("error records");
    p11t_err_clear(&err);
    CHECK(err.rv == CKR_OK && err.msg[0] == '\0');
    p11t_err_set(&err, CKR_PIN_INCORRECT, "first %d", 1);
    p11t_err_set(&err, CKR_GENERAL_ERROR, "second %d", 2);
    CHECK(err.rv == CKR_PIN_INCORRECT && strcmp(err.msg, "first 1") == 0);
    p11t_err_clear(&err);
    p11t_err_set(&err, CKR_OK, "not an error?");
    CHECKF(err.rv != CKR_OK, "an error recorded with CKR_OK reads as success");
    p11t_err_set(NULL, CKR_GENERAL_ERROR, "no record");
    p11t_err_clear(NULL);
    {
        char longmsg[1000];

        memset(longmsg, 'x', sizeof(longmsg) - 1);
        longmsg[sizeof(longmsg) - 1] = '\0';
        p11t_err_clear(&err);
        p11t_err_set(&err, CKR_GENERAL_ERROR, "%s", longmsg);
        CHECK(strlen(err.msg) == sizeof(err.msg) - 1);
    }
    CHECK(strcmp(p11t_rv_name(CKR_PIN_INCORRECT), "CKR_PIN_INCORRECT") == 0);
    CHECK(strcmp(p11t_rv_name(CKR_OK), "CKR_OK") == 0);
    CHECK(strcmp(p11t_rv_name(P11T_CKR_UNKNOWN_KEY), "P11T_CKR_UNKNOWN_KEY") ==
          0);
    CHECK(p11t_rv_name(0x7fffffffUL) != NULL);
}

int main(void)
{
    char dir[] = "/tmp/p11t-unit-XXXXXX";

    REQUIRE(mkdtemp(dir) != NULL);
    tmpdir = dir;

    test_label_roundtrip();
    test_label_parse_edges();
    test_label_len_respected();
    test_lifecycle_state();
    test_lifecycle_pick();
    test_parse_duration();
    test_rotate_plan();
    test_config();
    test_pin();
    test_hex();
    test_err();

    {
        char path[600];

        snprintf(path, sizeof(path), "%s/pin", dir);
        unlink(path);
        rmdir(dir);
    }
    return t_finish("test_unit_hsm");
}
