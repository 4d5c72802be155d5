/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gen.c - the lifecycle questions the commands ask about key generations
 * (folded by p11t_fold_generations, picked by p11t_lifecycle_pick), and how
 * status shows the answers (timeline, durations).  Pure functions of
 * (generations, now), so test_generations.c runs them with fixed times.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "tool.h"

int p11t_tool_complete(const p11t_keyinfo *k)
{
    return k->has_aes == 1 && k->has_hmac == 1;
}

static int same_times(const p11t_times *a, const p11t_times *b)
{
    return a->encrypt_from == b->encrypt_from &&
           a->encrypt_until == b->encrypt_until &&
           a->decrypt_until == b->decrypt_until;
}

static int dedupe_candidate(const p11t_keyinfo *k, int64_t now)
{
    return p11t_tool_complete(k) &&
           p11t_lifecycle_state(&k->times, now) == P11T_STATE_PENDING &&
           k->times.encrypt_from > now &&
           k->times.encrypt_from - now > P11T_TOOL_SKEW;
}

size_t p11t_tool_duplicates(const p11t_keyinfo *keys, size_t n, int64_t now,
                            size_t *out)
{
    size_t k = 0;

    for (size_t i = 0; i < n; i++) {
        if (!dedupe_candidate(&keys[i], now))
            continue;
        for (size_t j = 0; j < n; j++) {
            if (j == i || !dedupe_candidate(&keys[j], now) ||
                !same_times(&keys[i].times, &keys[j].times))
                continue;
            /* The lexicographically greatest name survives. */
            if (memcmp(keys[j].name, keys[i].name, P11T_NAME_LEN) > 0) {
                out[k++] = i;
                break;
            }
        }
    }
    return k;
}

size_t p11t_tool_overlapping(const p11t_keyinfo *keys, size_t n, int64_t now,
                             size_t *out)
{
    int cur = p11t_lifecycle_pick(keys, n, now);
    size_t k = 0;

    for (size_t i = 0; cur >= 0 && i < n; i++)
        if ((int)i != cur && p11t_tool_complete(&keys[i]) &&
            p11t_lifecycle_state(&keys[i].times, now) == P11T_STATE_ACTIVE)
            out[k++] = i;
    return k;
}

int p11t_tool_find_name(const p11t_keyinfo *keys, size_t n,
                        const uint8_t name[static P11T_NAME_LEN])
{
    for (size_t i = 0; i < n; i++)
        if (CRYPTO_memcmp(keys[i].name, name, P11T_NAME_LEN) == 0)
            return (int)i;
    return -1;
}

static int cmp_generations(const void *a, const void *b)
{
    const p11t_keyinfo *x = a, *y = b;

    if (x->times.encrypt_from != y->times.encrypt_from)
        return x->times.encrypt_from < y->times.encrypt_from ? -1 : 1;
    return memcmp(x->name, y->name, P11T_NAME_LEN);
}

void p11t_tool_sort_generations(p11t_keyinfo *keys, size_t n)
{
    if (n > 1)
        qsort(keys, n, sizeof(*keys), cmp_generations);
}

int p11t_tool_obj_ok(const p11t_objinfo *o)
{
    return o->token && o->priv && o->sensitive && !o->extractable &&
           !o->value_readable;
}

int p11t_tool_gen_ok(const p11t_objinfo *objs, size_t n, const p11t_keyinfo *g)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(objs[i].name, g->name, P11T_NAME_LEN) == 0 &&
            !p11t_tool_obj_ok(&objs[i]))
            return 0;
    return 1;
}

/*
 * The pick changes only where some generation changes state, at one of its
 * three times: the earliest time after `after` (P11T_TIME_NEVER if none).
 */
static int64_t next_change(const p11t_keyinfo *keys, size_t n, int64_t after)
{
    int64_t next = P11T_TIME_NEVER;

    for (size_t i = 0; i < n; i++) {
        const int64_t t[3] = {keys[i].times.encrypt_from,
                              keys[i].times.encrypt_until,
                              keys[i].times.decrypt_until};

        for (size_t j = 0; j < 3; j++)
            if (t[j] > after && t[j] < next)
                next = t[j];
    }
    return next;
}

int64_t p11t_tool_issuing_until(const p11t_keyinfo *keys, size_t n, int64_t now)
{
    int64_t t = now;

    while (t != P11T_TIME_NEVER && p11t_lifecycle_pick(keys, n, t) >= 0)
        t = next_change(keys, n, t);
    return t;
}

int p11t_tool_no_key_in(const p11t_keyinfo *keys, size_t n, int64_t from,
                        int64_t to)
{
    for (int64_t t = from; t < to; t = next_change(keys, n, t))
        if (p11t_lifecycle_pick(keys, n, t) < 0)
            return 1;
    return 0;
}

char p11t_tool_timeline_char(const p11t_keyinfo *keys, size_t n, size_t i,
                             int64_t t)
{
    switch (p11t_lifecycle_state(&keys[i].times, t)) {
    case P11T_STATE_PENDING:
        return 'P';
    case P11T_STATE_ACTIVE:
        return p11t_lifecycle_pick(keys, n, t) == (int)i ? 'E' : 'a';
    case P11T_STATE_DECRYPT_ONLY:
        return 'd';
    case P11T_STATE_EXPIRED:
        break;
    }
    return '.';
}

void p11t_tool_format_dur(int64_t secs, char out[static P11T_TOOL_DUR_LEN])
{
    /* The magnitude, without overflowing on INT64_MIN. */
    uint64_t d = secs < 0 ? (uint64_t)0 - (uint64_t)secs : (uint64_t)secs;
    uint64_t m, h;

    if (d < 60) {
        snprintf(out, P11T_TOOL_DUR_LEN, "%us", (unsigned)d);
        return;
    }
    m = (d + 30) / 60;
    if (m < 60) {
        snprintf(out, P11T_TOOL_DUR_LEN, "%um", (unsigned)m);
    } else if (m < 24 * 60) {
        if (m % 60 == 0)
            snprintf(out, P11T_TOOL_DUR_LEN, "%uh", (unsigned)(m / 60));
        else
            snprintf(out, P11T_TOOL_DUR_LEN, "%uh%02um", (unsigned)(m / 60),
                     (unsigned)(m % 60));
    } else {
        h = d / 3600 + (d % 3600 >= 1800);
        if (h % 24 == 0)
            snprintf(out, P11T_TOOL_DUR_LEN, "%llud",
                     (unsigned long long)(h / 24));
        else
            snprintf(out, P11T_TOOL_DUR_LEN, "%llud%02uh",
                     (unsigned long long)(h / 24), (unsigned)(h % 24));
    }
}
