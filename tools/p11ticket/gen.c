/*
 * gen.c - token objects folded into key generations, and the lifecycle
 * questions the commands ask about them.  Pure functions of (objects, now),
 * so test_generations.c runs them with fixed times.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "tool.h"

/* The same acceptance rules as the servers' handle cache (hsm/keys.c
 * build_entries): an object that fails them does not count for its role. */
static int usable(const p11t_objinfo *o)
{
    if (o->role == P11T_ROLE_AES)
        return o->key_type == CKK_AES &&
               (o->value_len == 16 || o->value_len == 32);
    if (o->role == P11T_ROLE_HMAC)
        return (o->key_type == CKK_GENERIC_SECRET ||
                o->key_type == CKK_SHA256_HMAC) &&
               o->value_len >= 16;
    return 0;
}

static p11t_keyinfo *find(p11t_keyinfo *g, size_t n, const uint8_t *name)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(g[i].name, name, P11T_NAME_LEN) == 0)
            return &g[i];
    return NULL;
}

/* Both labels should agree; if they do not, the stricter times win. */
static void intersect(p11t_times *t, const p11t_times *o)
{
    if (o->encrypt_from > t->encrypt_from)
        t->encrypt_from = o->encrypt_from;
    if (o->encrypt_until < t->encrypt_until)
        t->encrypt_until = o->encrypt_until;
    if (o->decrypt_until < t->decrypt_until)
        t->decrypt_until = o->decrypt_until;
}

int p11t_tool_fold(const p11t_objinfo *objs, size_t n, p11t_keyinfo **out,
                   size_t *n_out)
{
    p11t_keyinfo *g;
    size_t k = 0;

    *out = NULL;
    *n_out = 0;
    if (objs == NULL && n > 0)
        return -1;
    g = calloc(n ? n : 1, sizeof(*g));
    if (g == NULL)
        return -1;
    /*
     * Pass 1, usable objects, exactly as the servers fold them.  Pass 2
     * adds generations that consist only of unusable objects, so that they
     * show up (and are cleaned up) as incomplete instead of being invisible.
     */
    for (int pass = 1; pass <= 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            const p11t_objinfo *o = &objs[i];
            int ok = usable(o);
            p11t_keyinfo *e;

            if (ok != (pass == 1))
                continue;
            e = find(g, k, o->name);
            if (pass == 2 && e != NULL && (e->has_aes || e->has_hmac))
                continue; /* has usable objects: their times rule */
            if (e == NULL) {
                e = &g[k++];
                memcpy(e->name, o->name, P11T_NAME_LEN);
                e->times = o->times;
            } else {
                intersect(&e->times, &o->times);
            }
            if (!ok)
                continue;
            if (o->role == P11T_ROLE_AES) {
                e->has_aes = e->has_aes ? -1 : 1;
                e->aes_len = o->value_len;
            } else {
                e->has_hmac = e->has_hmac ? -1 : 1;
                e->hmac_len = o->value_len;
            }
        }
    }
    *out = g;
    *n_out = k;
    return 0;
}

int64_t p11t_tool_time_add(int64_t a, int64_t b)
{
    if (a == P11T_TIME_NEVER || b == P11T_TIME_NEVER)
        return P11T_TIME_NEVER;
    if (b > 0 && a > P11T_TIME_NEVER - 1 - b)
        return P11T_TIME_NEVER - 1;
    return a + b;
}

int p11t_tool_complete(const p11t_keyinfo *k)
{
    return k->has_aes == 1 && k->has_hmac == 1;
}

int p11t_tool_pick(const p11t_keyinfo *keys, size_t n, int64_t now)
{
    int best = -1;

    /*
     * p11t_lifecycle_pick() treats any non-zero has_* as present; the
     * servers zero both flags of a generation with a role twice.  Ask it
     * one complete candidate at a time so the tie-break stays its own.
     */
    for (size_t i = 0; i < n; i++) {
        p11t_keyinfo pair[2];

        if (!p11t_tool_complete(&keys[i]))
            continue;
        if (best < 0) {
            if (p11t_lifecycle_pick(&keys[i], 1, now) == 0)
                best = (int)i;
            continue;
        }
        pair[0] = keys[best];
        pair[1] = keys[i];
        if (p11t_lifecycle_pick(pair, 2, now) == 1)
            best = (int)i;
    }
    return best;
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
    int cur = p11t_tool_pick(keys, n, now);
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
