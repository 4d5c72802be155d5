/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lifecycle.c - key states as pure functions of (times, now).
 *
 * Modelled on s2n-tls's intro time / encrypt window / decrypt-only window.
 * Boundaries are half-open: a key is active on [ef, eu), decrypt-only on
 * [eu, du) and expired from du on.  decrypt_until wins over everything, so a
 * malformed generation with du < eu never encrypts after du.
 */
#include <stdlib.h>
#include <string.h>

#include "hsm.h"

p11t_state p11t_lifecycle_state(const p11t_times *t, int64_t now)
{
    if (now >= t->decrypt_until)
        return P11T_STATE_EXPIRED;
    if (now < t->encrypt_from)
        return P11T_STATE_PENDING;
    if (now < t->encrypt_until)
        return P11T_STATE_ACTIVE;
    return P11T_STATE_DECRYPT_ONLY;
}

const char *p11t_state_name(p11t_state s)
{
    switch (s) {
    case P11T_STATE_PENDING:
        return "pending";
    case P11T_STATE_ACTIVE:
        return "active";
    case P11T_STATE_DECRYPT_ONLY:
        return "decrypt-only";
    case P11T_STATE_EXPIRED:
        return "expired";
    }
    return "invalid";
}

int p11t_lifecycle_better(const p11t_keyinfo *k, const p11t_keyinfo *best)
{
    return best == NULL || k->times.encrypt_from > best->times.encrypt_from ||
           (k->times.encrypt_from == best->times.encrypt_from &&
            memcmp(k->name, best->name, P11T_NAME_LEN) > 0);
}

int p11t_lifecycle_pick(const p11t_keyinfo *keys, size_t n, int64_t now)
{
    int best = -1;

    if (keys == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const p11t_keyinfo *k = &keys[i];

        /* -1 marks a role present twice: ambiguous, never used. */
        if (k->has_aes != 1 || k->has_hmac != 1 ||
            p11t_lifecycle_state(&k->times, now) != P11T_STATE_ACTIVE)
            continue;
        if (p11t_lifecycle_better(k, best >= 0 ? &keys[best] : NULL))
            best = (int)i;
    }
    return best;
}

int64_t p11t_time_add(int64_t a, int64_t b)
{
    if (a == P11T_TIME_NEVER || b == P11T_TIME_NEVER)
        return P11T_TIME_NEVER;
    if (b > 0 && a > P11T_TIME_NEVER - 1 - b)
        return P11T_TIME_NEVER - 1;
    return a + b;
}

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

static void intersect(p11t_times *t, const p11t_times *o)
{
    if (o->encrypt_from > t->encrypt_from)
        t->encrypt_from = o->encrypt_from;
    if (o->encrypt_until < t->encrypt_until)
        t->encrypt_until = o->encrypt_until;
    if (o->decrypt_until < t->decrypt_until)
        t->decrypt_until = o->decrypt_until;
}

int p11t_fold_generations(const p11t_objinfo *objs, size_t n,
                          p11t_keyinfo **out, size_t *n_out)
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
    /* Pass 1: usable objects.  Pass 2: generations made only of unusable
     * objects, so they show up (and are cleaned up) as incomplete. */
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
                e->aes_obj = o->handle;
            } else {
                e->has_hmac = e->has_hmac ? -1 : 1;
                e->hmac_len = o->value_len;
                e->hmac_obj = o->handle;
            }
        }
    }
    *out = g;
    *n_out = k;
    return 0;
}
