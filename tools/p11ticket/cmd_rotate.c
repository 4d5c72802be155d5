/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_rotate.c - scheduled rotation: make sure a key encrypts now, that its
 * successor exists `lead` ahead of time, and that expired generations are
 * gone.  Idempotent and safe to run from many hosts at once:
 *
 *   - The plan (hsm/rotate.c) is a pure function of (token contents, now,
 *     policy): racing rotators compute the same successor times, because
 *     they chain from the current key's encrypt-until.
 *   - Racing rotators may therefore each create a successor with identical
 *     times.  Afterwards every rotator re-reads the token and destroys all
 *     but the greatest name of such a set, while they are still pending far
 *     enough ahead that no server can have encrypted with them.  All
 *     rotators agree on the survivor, and servers agree even before that
 *     (p11t_lifecycle_pick breaks the tie the same way).
 *   - Rotators that each found no active key create one starting now.
 *     Servers may encrypt with any of them for a moment, so the extra ones
 *     are retired (decrypt-only), never destroyed: exactly one generation
 *     stays active and every ticket still resumes.
 *   - Destroying what another rotator already destroyed is not an error.
 *
 * p11t_tool_rotate() is shared with `purge`, which only destroys.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static void usage(FILE *fp)
{
    fputs(
        "usage: p11ticket [global options] rotate [--encrypt-for DURATION]\n"
        "         [--decrypt-for DURATION] [--lead DURATION] "
        "[--aes-bits 256|128]\n"
        "         [--dry-run]\n"
        "\n"
        "Bring the token in line with the rotation policy:\n"
        "  - exactly one generation is active now (one is created if none "
        "is; others\n"
        "    that are active too are retired to decrypt-only);\n"
        "  - the next generation exists, pending, --lead before it must "
        "take over;\n"
        "  - expired generations, and incomplete ones left by a crash, are "
        "destroyed.\n"
        "Each new generation encrypts for --encrypt-for from the moment the "
        "previous one\n"
        "stops, then decrypts for --decrypt-for.  Prints one line per action, "
        "or\n"
        "\"nothing to do\".  Run it from cron or a systemd timer, every 15 "
        "minutes for\n"
        "example; running it on several hosts at once is safe.\n"
        "\n"
        "Options:\n"
        "  -e, --encrypt-for DURATION  how long a generation encrypts\n"
        "  -d, --decrypt-for DURATION  how long it still decrypts "
        "afterwards\n"
        "  -l, --lead DURATION         create the successor this long before "
        "it is\n"
        "                              needed\n"
        "  -b, --aes-bits BITS         AES key size of new generations, 256 "
        "(default)\n"
        "                              or 128\n"
        "  -n, --dry-run               print what would be done, change "
        "nothing\n"
        "  -h, --help                  show this help\n"
        "\n"
        "The policy defaults to the section's encrypt-for, decrypt-for and "
        "rotate-lead\n"
        "(which auto-rotate uses too), else 12h, 24h and 1h.  Every rotator "
        "of a token\n"
        "must use the same policy, or they create different successors.\n"
        "\n"
        "Exit status: 0 when the token is in line with the policy, 1 when a "
        "token\n"
        "operation failed, 2 on a usage or configuration error.\n",
        fp);
}

/* Destroys one generation; "already gone" counts as done. */
static int destroy_one(p11t_tool *t, const char *what,
                       const uint8_t name[static P11T_NAME_LEN],
                       const char *why, int dry_run)
{
    char hex[33];
    p11t_err err;
    CK_RV rv;

    p11t_hex(name, hex);
    if (dry_run) {
        printf("would destroy %s: %s\n", hex, why);
        return P11T_TOOL_OK;
    }
    p11t_err_clear(&err);
    rv = p11t_hsm_destroy(t->hsm, name, &err);
    if (rv == CKR_OK) {
        printf("destroyed %s: %s\n", hex, why);
    } else if (rv == P11T_CKR_UNKNOWN_KEY) {
        printf("destroyed %s: %s (already gone: another rotator was "
               "faster)\n",
               hex, why);
    } else {
        char msg[64];

        snprintf(msg, sizeof(msg), "%s: destroying %s", what, hex);
        return p11t_tool_report(msg, rv, &err);
    }
    return P11T_TOOL_OK;
}

static int create_one(p11t_tool *t, const char *what, CK_ULONG aes_len,
                      const p11t_times *times, int64_t now, int dry_run)
{
    uint8_t name[P11T_NAME_LEN];
    char hex[33], desc[160];
    p11t_err err;
    CK_RV rv;

    p11t_tool_describe(times, now, desc, sizeof(desc));
    if (dry_run) {
        printf("would create a generation: %s\n", desc);
        return P11T_TOOL_OK;
    }
    p11t_err_clear(&err);
    rv = p11t_hsm_create(t->hsm, aes_len, times, name, &err);
    if (rv != CKR_OK)
        return p11t_tool_report(what, rv, &err);
    p11t_hex(name, hex);
    printf("created %s: %s\n", hex, desc);
    return P11T_TOOL_OK;
}

/* The survivor of a set of racing duplicates: the greatest name among
 * generations with the same times. */
static const p11t_keyinfo *survivor(const p11t_keyinfo *keys, size_t n,
                                    const p11t_keyinfo *dup)
{
    const p11t_keyinfo *best = dup;

    for (size_t i = 0; i < n; i++)
        if (p11t_tool_complete(&keys[i]) &&
            keys[i].times.encrypt_from == dup->times.encrypt_from &&
            keys[i].times.encrypt_until == dup->times.encrypt_until &&
            keys[i].times.decrypt_until == dup->times.decrypt_until &&
            memcmp(keys[i].name, best->name, P11T_NAME_LEN) > 0)
            best = &keys[i];
    return best;
}

static int dedupe(p11t_tool *t, const char *what, const p11t_keyinfo *keys,
                  size_t n, int64_t now, int dry_run, size_t *actions)
{
    size_t *idx = calloc(n ? n : 1, sizeof(*idx)), k;
    int rc = P11T_TOOL_OK;

    if (idx == NULL) {
        p11t_tool_error("%s: out of memory", what);
        return P11T_TOOL_FAIL;
    }
    k = p11t_tool_duplicates(keys, n, now, idx);
    for (size_t i = 0; i < k; i++) {
        char why[96], hex[33];
        int r;

        p11t_hex(survivor(keys, n, &keys[idx[i]])->name, hex);
        snprintf(why, sizeof(why),
                 "duplicate of %s, created by a concurrent rotate", hex);
        r = destroy_one(t, what, keys[idx[i]].name, why, dry_run);
        if (r != P11T_TOOL_OK)
            rc = r;
        (*actions)++;
    }
    free(idx);
    return rc;
}

/*
 * Retire complete generations that are active besides the current one.
 * Servers may have encrypted with such a key until they saw the current
 * one, so it is not destroyed: it becomes decrypt-only and keeps its
 * decrypt-until, and its tickets keep resuming.
 */
#define RETIRE_SETTLE_S 2

static int retire_overlapping(p11t_tool *t, const char *what,
                              const p11t_keyinfo *keys, size_t n, int64_t now,
                              const p11t_policy *policy, int dry_run,
                              size_t *actions)
{
    size_t *idx = calloc(n ? n : 1, sizeof(*idx)), k;
    int cur = p11t_lifecycle_pick(keys, n, now), rc = P11T_TOOL_OK;

    if (idx == NULL) {
        p11t_tool_error("%s: out of memory", what);
        return P11T_TOOL_FAIL;
    }
    k = p11t_tool_overlapping(keys, n, now, idx);
    for (size_t i = 0; i < k; i++) {
        const p11t_keyinfo *g = &keys[idx[i]];
        char hex[33], curhex[33], desc[160];
        p11t_times tm = g->times;
        p11t_err err;
        CK_RV rv;

        /*
         * SoftHSM 2.6's file store can lose a key's value when its label is
         * rewritten while another process is still creating objects (seen
         * in racing rotators: the retired key then fails with
         * CKR_KEY_SIZE_RANGE everywhere).  Both keys stay usable and every
         * server picks the same one meanwhile, so leave the retirement to
         * the next run once the racers are surely done.
         */
        if (g->times.encrypt_from > now - RETIRE_SETTLE_S ||
            keys[cur].times.encrypt_from > now - RETIRE_SETTLE_S) {
            p11t_hex(g->name, hex);
            printf("left %s active for now: created less than %d s ago; "
                   "the next rotate retires it\n",
                   hex, RETIRE_SETTLE_S);
            continue;
        }
        tm.encrypt_until = now;
        if (tm.decrypt_until == P11T_TIME_NEVER)
            tm.decrypt_until = p11t_time_add(now, policy->decrypt_for);
        p11t_hex(g->name, hex);
        p11t_hex(keys[cur].name, curhex);
        p11t_tool_describe(&tm, now, desc, sizeof(desc));
        (*actions)++;
        if (dry_run) {
            printf("would retire %s: active besides the current key %s\n", hex,
                   curhex);
            continue;
        }
        p11t_err_clear(&err);
        rv = p11t_hsm_set_times(t->hsm, g->name, &tm, &err);
        if (rv == CKR_OK) {
            printf("retired %s: active besides the current key %s; now %s\n",
                   hex, curhex, desc);
        } else if (rv == P11T_CKR_UNKNOWN_KEY) {
            printf("retired %s: already gone\n", hex);
        } else {
            char msg[64];

            snprintf(msg, sizeof(msg), "%s: retiring %s", what, hex);
            rc = p11t_tool_report(msg, rv, &err);
        }
    }
    free(idx);
    return rc;
}

int p11t_tool_rotate(p11t_tool *t, const char *what, const p11t_policy *given,
                     CK_ULONG aes_len, int create, int dry_run)
{
    p11t_policy pol = *given, *policy = &pol;
    p11t_keyinfo *keys = NULL;
    size_t n = 0, actions = 0;
    p11t_plan plan;
    int64_t now;
    int rc, r;

    if ((rc = p11t_tool_load_config(t)) != P11T_TOOL_OK)
        return rc;
    p11t_tool_policy_defaults(t, policy);
    if (create && policy->lead < (int64_t)t->refresh_interval)
        p11t_tool_warn("%s: the lead (%llds) is shorter than "
                       "refresh-interval (%us): some servers will first meet "
                       "a new key in a ticket (they then rescan at once)",
                       what, (long long)policy->lead, t->refresh_interval);
    if ((rc = p11t_tool_open_hsm(t)) != P11T_TOOL_OK)
        return rc;
    if ((rc = p11t_tool_scan(t, what, NULL, NULL, &keys, &n)) != P11T_TOOL_OK)
        return rc;

    now = p11t_tool_now();
    if (p11t_rotate_plan(keys, n, now, policy, &plan) != 0) {
        free(keys);
        p11t_tool_error("%s: cannot compute the rotation plan (out of memory "
                        "or an invalid policy)",
                        what);
        return P11T_TOOL_FAIL;
    }
    /* Create first: the token is never without a key it needs. */
    for (size_t i = 0; create && i < plan.n_create; i++) {
        r = create_one(t, what, aes_len, &plan.create[i], now, dry_run);
        if (r != P11T_TOOL_OK)
            rc = r;
        actions++;
    }
    for (size_t i = 0; i < plan.n_destroy; i++) {
        const char *why = i < 64 ? plan.destroy_why[i] : NULL;

        r = destroy_one(t, what, plan.destroy[i],
                        why != NULL ? why : "expired or incomplete", dry_run);
        if (r != P11T_TOOL_OK)
            rc = r;
        actions++;
    }
    p11t_plan_free(&plan);

    if (create) {
        /* Settle races against the token as it is now. */
        if (!dry_run) {
            free(keys);
            keys = NULL;
            r = p11t_tool_scan(t, what, NULL, NULL, &keys, &n);
            if (r != P11T_TOOL_OK) {
                free(keys);
                return r;
            }
            now = p11t_tool_now();
        }
        r = dedupe(t, what, keys, n, now, dry_run, &actions);
        if (r != P11T_TOOL_OK)
            rc = r;
        r = retire_overlapping(t, what, keys, n, now, policy, dry_run,
                               &actions);
        if (r != P11T_TOOL_OK)
            rc = r;
        if (!dry_run && p11t_lifecycle_pick(keys, n, now) < 0)
            p11t_tool_warn("%s: no generation is active: servers issue no "
                           "tickets until a rotate succeeds",
                           what);
    }
    free(keys);
    if (actions == 0)
        printf("nothing to do\n");
    return rc;
}

static int run(p11t_tool *t, int argc, char **argv)
{
    static const struct option opts[] = {
        {"encrypt-for", required_argument, NULL, 'e'},
        {"decrypt-for", required_argument, NULL, 'd'},
        {"lead", required_argument, NULL, 'l'},
        {"aes-bits", required_argument, NULL, 'b'},
        {"dry-run", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    p11t_policy policy = {0, 0, 0}; /* unset: from the section */
    CK_ULONG aes_len = 32;
    int c, dry_run = 0;

    p11t_tool_getopt_reset(&p11t_tool_cmd_rotate, argv);
    while ((c = p11t_tool_getopt(t, &p11t_tool_cmd_rotate, argc, argv,
                                 "e:d:l:b:nh", opts)) != -1) {
        switch (c) {
        case 'e':
        case 'd':
        case 'l':
            if (!p11t_tool_policy_opt("rotate", c, optarg, &policy))
                return P11T_TOOL_USAGE;
            break;
        case 'b':
            if (!p11t_tool_aes_bits("rotate", optarg, &aes_len))
                return P11T_TOOL_USAGE;
            break;
        case 'n':
            dry_run = 1;
            break;
        default:
            return p11t_tool_help_or_bad(&p11t_tool_cmd_rotate, c);
        }
    }
    if (optind < argc)
        return p11t_tool_unexpected(&p11t_tool_cmd_rotate, argv[optind]);
    return p11t_tool_rotate(t, "rotate", &policy, aes_len, 1, dry_run);
}

const p11t_tool_cmd p11t_tool_cmd_rotate = {
    .name = "rotate",
    .summary = "apply the rotation policy (idempotent, safe from many hosts)",
    .run = run,
    .usage = usage,
};
