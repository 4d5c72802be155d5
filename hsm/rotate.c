/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rotate.c - rotation planning as a pure function of (token contents, now,
 * policy), so it can be tested with fixed times and every host computes the
 * same answer.
 *
 * Coverage: a moment t is covered when a complete generation is active at t.
 * Starting at now, coverage is followed along the chain of encrypt_until
 * times.  A gap within `lead` seconds gets a new generation starting exactly
 * at the gap, which is how a fleet learns a key (pending) before anyone
 * encrypts with it, as HAProxy does with its "next" key.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hsm.h"

/* Incomplete generations younger than this may still be being created by a
 * concurrent rotator; older ones are debris from a crash. */
#define INCOMPLETE_GRACE 600

static int complete(const p11t_keyinfo *k)
{
    return k->has_aes == 1 && k->has_hmac == 1;
}

/* End of the longest encrypt window active at t, or t itself if none. */
static int64_t covered_until(const p11t_keyinfo *keys, size_t n,
                             const p11t_times *extra, size_t n_extra, int64_t t)
{
    int64_t end = t;

    for (size_t i = 0; i < n + n_extra; i++) {
        const p11t_times *tm = i < n ? &keys[i].times : &extra[i - n];
        int64_t e;

        if (i < n && !complete(&keys[i]))
            continue;
        if (p11t_lifecycle_state(tm, t) != P11T_STATE_ACTIVE)
            continue;
        e = tm->encrypt_until < tm->decrypt_until ? tm->encrypt_until
                                                  : tm->decrypt_until;
        if (e > end)
            end = e;
    }
    return end;
}

static int add_destroy(p11t_plan *plan, const uint8_t *name, const char *why,
                       size_t cap)
{
    if (plan->n_destroy >= cap)
        return -1;
    memcpy(plan->destroy[plan->n_destroy], name, P11T_NAME_LEN);
    if (plan->n_destroy < 64)
        plan->destroy_why[plan->n_destroy] = why;
    plan->n_destroy++;
    return 0;
}

int p11t_rotate_plan(const p11t_keyinfo *keys, size_t n, int64_t now,
                     const p11t_policy *policy, p11t_plan *plan)
{
    int64_t t;

    if (plan == NULL)
        return -1;
    memset(plan, 0, sizeof(*plan));
    if ((keys == NULL && n > 0) || policy == NULL || policy->encrypt_for <= 0 ||
        policy->decrypt_for < 0 || policy->lead < 0 || now < 0)
        return -1;
    plan->destroy = calloc(n ? n : 1, sizeof(*plan->destroy));
    if (plan->destroy == NULL)
        return -1;

    for (size_t i = 0; i < n; i++) {
        const p11t_keyinfo *k = &keys[i];

        if (!complete(k)) {
            if (k->times.encrypt_from <= now - INCOMPLETE_GRACE &&
                add_destroy(plan, k->name, "incomplete", n) < 0)
                goto fail;
            continue;
        }
        if (p11t_lifecycle_state(&k->times, now) == P11T_STATE_EXPIRED &&
            add_destroy(plan, k->name, "expired", n) < 0)
            goto fail;
    }

    /* Follow coverage from now; fill the first gap(s) within the lead. */
    t = now;
    while (t != P11T_TIME_NEVER && t <= p11t_time_add(now, policy->lead)) {
        int64_t end = covered_until(keys, n, plan->create, plan->n_create, t);
        p11t_times *c;

        if (end > t) {
            t = end;
            continue;
        }
        if (plan->n_create == P11T_PLAN_MAX_CREATE)
            break;
        c = &plan->create[plan->n_create++];
        c->encrypt_from = t;
        c->encrypt_until = p11t_time_add(t, policy->encrypt_for);
        c->decrypt_until = p11t_time_add(c->encrypt_until, policy->decrypt_for);
    }
    return 0;
fail:
    p11t_plan_free(plan);
    return -1;
}

void p11t_plan_free(p11t_plan *plan)
{
    if (plan == NULL)
        return;
    free(plan->destroy);
    plan->destroy = NULL;
    plan->n_destroy = 0;
}

int p11t_parse_duration(const char *s, int64_t *out)
{
    char *end;
    long long v;
    int64_t mult = 1;

    if (s == NULL || out == NULL || !isdigit((unsigned char)s[0]))
        return 0;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || v <= 0)
        return 0;
    if (*end != '\0') {
        switch (*end) {
        case 's':
            mult = 1;
            break;
        case 'm':
            mult = 60;
            break;
        case 'h':
            mult = 3600;
            break;
        case 'd':
            mult = 86400;
            break;
        default:
            return 0;
        }
        if (end[1] != '\0')
            return 0;
    }
    if (v > (long long)(INT64_MAX / 2 / mult))
        return 0;
    *out = (int64_t)v * mult;
    return 1;
}
