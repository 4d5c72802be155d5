/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_label.c - p11t_label_parse() on arbitrary bytes.
 *
 * The label comes from the token (CKA_LABEL), is not NUL-terminated and may
 * have been written by anyone with write access to the token, so the parser
 * must stay inside len and refuse anything that is not exactly its grammar.
 * Invariants checked (abort() on violation):
 *   1. whatever parses formats again, and the formatted label parses back to
 *      the same role and times (format/parse round trip);
 *   2. times built from the input bytes that format at all parse back equal;
 *   3. lifecycle states of parsed times never go backwards as time advances,
 *      and p11t_lifecycle_pick only returns ACTIVE, complete generations.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "hsm.h"

static int same_times(const p11t_times *a, const p11t_times *b)
{
    return a->encrypt_from == b->encrypt_from &&
           a->encrypt_until == b->encrypt_until &&
           a->decrypt_until == b->decrypt_until;
}

static void roundtrip(p11t_role role, const p11t_times *t, int must_format)
{
    char out[256];
    p11t_role r2 = 0;
    p11t_times t2;
    int n = p11t_label_format(out, sizeof(out), role, t);

    if (n < 0) {
        if (must_format)
            abort();
        return;
    }
    if ((size_t)n != strlen(out))
        abort();
    if (!p11t_label_parse(out, (size_t)n, &r2, &t2) || r2 != role ||
        !same_times(t, &t2))
        abort();
    /* A buffer one byte short must be refused, not truncated silently. */
    if (p11t_label_format(out, (size_t)n, role, t) != -1)
        abort();
}

static void monotonic(const p11t_times *t, const uint8_t *data, size_t size)
{
    int64_t probes[] = {INT64_MIN,
                        -1,
                        0,
                        t->encrypt_from - 1,
                        t->encrypt_from,
                        t->encrypt_until - 1,
                        t->encrypt_until,
                        t->decrypt_until - 1,
                        t->decrypt_until,
                        INT64_MAX - 1,
                        INT64_MAX};
    p11t_keyinfo k;
    int prev = 0;

    /* Probes in ascending order; the subtractions above cannot overflow for
     * parsed times (all >= 0), the sort keeps the walk monotonic. */
    for (size_t i = 1; i < sizeof(probes) / sizeof(probes[0]); i++)
        for (size_t j = i; j > 0 && probes[j - 1] > probes[j]; j--) {
            int64_t x = probes[j];

            probes[j] = probes[j - 1];
            probes[j - 1] = x;
        }
    for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
        p11t_state s = p11t_lifecycle_state(t, probes[i]);

        if (s < P11T_STATE_PENDING || s > P11T_STATE_EXPIRED || (int)s < prev)
            abort();
        prev = (int)s;
    }

    memset(&k, 0, sizeof(k));
    memcpy(k.name, data, size < P11T_NAME_LEN ? size : P11T_NAME_LEN);
    k.times = *t;
    k.has_aes = k.has_hmac = 1;
    for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
        int idx = p11t_lifecycle_pick(&k, 1, probes[i]);
        int active = p11t_lifecycle_state(t, probes[i]) == P11T_STATE_ACTIVE;

        if (idx != (active ? 0 : -1))
            abort();
    }
    k.has_hmac = 0;
    if (p11t_lifecycle_pick(&k, 1, t->encrypt_from) != -1)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    p11t_role role = 0;
    p11t_times t;

    if (p11t_label_parse((const char *)data, size, &role, &t)) {
        if (role != P11T_ROLE_AES && role != P11T_ROLE_HMAC)
            abort();
        if (t.encrypt_from < 0 || t.encrypt_from == P11T_TIME_NEVER ||
            t.encrypt_until < 0 || t.decrypt_until < 0)
            abort();
        roundtrip(role, &t, 1);
        monotonic(&t, data, size);
    }

    /* Arbitrary times from the raw bytes. */
    if (size >= 25) {
        p11t_times raw;

        memcpy(&raw.encrypt_from, data + 1, 8);
        memcpy(&raw.encrypt_until, data + 9, 8);
        memcpy(&raw.decrypt_until, data + 17, 8);
        roundtrip((p11t_role)(data[0] % 4), &raw, 0);
    }
    return 0;
}
