/* SPDX-License-Identifier: Apache-2.0 */
/*
 * label.c - lifecycle metadata kept in CKA_LABEL.
 *
 * Why the label: CKA_START_DATE/CKA_END_DATE cannot be read back on
 * CKA_PRIVATE keys in SoftHSM 2.6 and are day-granular anyway, while
 * CKA_LABEL can be changed later and has no length limit (docs/design.md,
 * "Lifecycle times in CKA_LABEL").
 *
 * Grammar (single spaces, nothing else):
 *   "p11ticket/1 " ("aes" | "hmac") " ef=" T " eu=" T2 " du=" T2
 *   T  = decimal seconds since the epoch, 1..19 digits, no sign
 *   T2 = T | "-"     ("-" means never)
 * The parser is strict and bounded by len: the label comes from the token
 * and is not NUL-terminated.
 */
#include <stdio.h>
#include <string.h>

#include "hsm.h"

#define LABEL_MAGIC "p11ticket/1 "

typedef struct cursor {
    const char *p;
    size_t left;
} cursor;

static int eat(cursor *c, const char *lit)
{
    size_t n = strlen(lit);

    if (c->left < n || memcmp(c->p, lit, n) != 0)
        return 0;
    c->p += n;
    c->left -= n;
    return 1;
}

static int eat_time(cursor *c, int allow_never, int64_t *out)
{
    int64_t v = 0;
    size_t digits = 0;

    if (allow_never && eat(c, "-")) {
        *out = P11T_TIME_NEVER;
        return 1;
    }
    while (c->left > 0 && *c->p >= '0' && *c->p <= '9') {
        int d = *c->p - '0';

        if (v > (INT64_MAX - 1 - d) / 10)
            return 0; /* INT64_MAX itself is reserved for "never" */
        v = v * 10 + d;
        c->p++;
        c->left--;
        digits++;
    }
    if (digits == 0)
        return 0;
    *out = v;
    return 1;
}

int p11t_label_parse(const char *label, size_t len, p11t_role *role,
                     p11t_times *times)
{
    cursor c = {label, len};
    p11t_role r;
    p11t_times t;

    if (label == NULL || role == NULL || times == NULL)
        return 0;
    if (!eat(&c, LABEL_MAGIC))
        return 0;
    if (eat(&c, "aes"))
        r = P11T_ROLE_AES;
    else if (eat(&c, "hmac"))
        r = P11T_ROLE_HMAC;
    else
        return 0;
    if (!eat(&c, " ef=") || !eat_time(&c, 0, &t.encrypt_from) ||
        !eat(&c, " eu=") || !eat_time(&c, 1, &t.encrypt_until) ||
        !eat(&c, " du=") || !eat_time(&c, 1, &t.decrypt_until))
        return 0;
    if (c.left != 0)
        return 0;
    *role = r;
    *times = t;
    return 1;
}

static int fmt_time(char *buf, size_t len, int64_t t)
{
    if (t == P11T_TIME_NEVER)
        return snprintf(buf, len, "-");
    return snprintf(buf, len, "%lld", (long long)t);
}

int p11t_label_format(char *buf, size_t buflen, p11t_role role,
                      const p11t_times *times)
{
    char eu[24], du[24];
    int n;

    if (buf == NULL || times == NULL || times->encrypt_from < 0 ||
        times->encrypt_from == P11T_TIME_NEVER || times->encrypt_until < 0 ||
        times->decrypt_until < 0)
        return -1;
    if (role != P11T_ROLE_AES && role != P11T_ROLE_HMAC)
        return -1;
    fmt_time(eu, sizeof(eu), times->encrypt_until);
    fmt_time(du, sizeof(du), times->decrypt_until);
    n = snprintf(buf, buflen, LABEL_MAGIC "%s ef=%lld eu=%s du=%s",
                 role == P11T_ROLE_AES ? "aes" : "hmac",
                 (long long)times->encrypt_from, eu, du);
    if (n < 0 || (size_t)n >= buflen)
        return -1;
    return n;
}
