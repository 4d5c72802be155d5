/*
 * gen.c - the lifecycle questions the commands ask about key generations
 * (folded by p11t_fold_generations, picked by p11t_lifecycle_pick).  Pure
 * functions of (generations, now), so test_generations.c runs them with
 * fixed times.
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
