/*
 * lifecycle.c - key states as pure functions of (times, now).
 *
 * Modelled on s2n-tls's intro time / encrypt window / decrypt-only window.
 * Boundaries are half-open: a key is active on [ef, eu), decrypt-only on
 * [eu, du) and expired from du on.  decrypt_until wins over everything, so a
 * malformed generation with du < eu never encrypts after du.
 */
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
        if (best < 0 || k->times.encrypt_from > keys[best].times.encrypt_from ||
            (k->times.encrypt_from == keys[best].times.encrypt_from &&
             memcmp(k->name, keys[best].name, P11T_NAME_LEN) > 0))
            best = (int)i;
    }
    return best;
}
