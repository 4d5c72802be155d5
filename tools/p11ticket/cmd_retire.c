/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_retire.c - stop encrypting with a generation now; it keeps
 * decrypting (and servers renew its tickets under the current key) until
 * its decrypt-until.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static void usage(FILE *fp)
{
    fputs("usage: p11ticket [global options] retire [--decrypt-for DURATION] "
          "NAME\n"
          "\n"
          "Make the generation NAME (32 hex digits, as 'p11ticket list' "
          "prints it)\n"
          "decrypt-only from now on: its encrypt-until becomes now (a pending "
          "generation\n"
          "never encrypts: its encrypt-from becomes now too).  Its "
          "decrypt-until stays,\n"
          "so tickets under it keep resuming and are renewed under the "
          "current key; if it\n"
          "had none, it becomes now + --decrypt-for.  Servers stop issuing "
          "tickets under\n"
          "it within their refresh-interval.\n"
          "\n"
          "If no generation is active afterwards, servers issue no tickets "
          "until\n"
          "'p11ticket rotate' (or create) makes one.  To stop accepting a "
          "key's tickets\n"
          "at once, after a compromise, use 'p11ticket revoke'.\n"
          "\n"
          "Options:\n"
          "  -d, --decrypt-for DURATION  decrypt window when the generation "
          "had no\n"
          "                              decrypt-until (default: the "
          "section's\n"
          "                              decrypt-for, else 24h)\n"
          "  -h, --help                  show this help\n",
          fp);
}

static int run(p11t_tool *t, int argc, char **argv)
{
    static const struct option opts[] = {
        {"decrypt-for", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    p11t_policy pol = {0, 0, 0};
    int64_t now;
    uint8_t name[P11T_NAME_LEN];
    p11t_keyinfo *keys = NULL;
    size_t n = 0;
    p11t_times tm;
    p11t_state st;
    char hex[33], desc[160];
    p11t_err err;
    CK_RV rv;
    int c, rc, i;

    p11t_tool_getopt_reset(&p11t_tool_cmd_retire, argv);
    while ((c = p11t_tool_getopt(t, &p11t_tool_cmd_retire, argc, argv, "d:h",
                                 opts)) != -1) {
        switch (c) {
        case 'd':
            if (!p11t_tool_policy_opt("retire", c, optarg, &pol))
                return P11T_TOOL_USAGE;
            break;
        default:
            return p11t_tool_help_or_bad(&p11t_tool_cmd_retire, c);
        }
    }
    if ((rc = p11t_tool_name_operand(&p11t_tool_cmd_retire, argc, argv,
                                     name)) != P11T_TOOL_OK)
        return rc;

    if ((rc = p11t_tool_load_config(t)) != P11T_TOOL_OK)
        return rc;
    p11t_tool_policy_defaults(t, &pol);
    if ((rc = p11t_tool_open_hsm(t)) != P11T_TOOL_OK)
        return rc;
    if ((rc = p11t_tool_scan(t, "retire", NULL, NULL, &keys, &n)) !=
        P11T_TOOL_OK)
        return rc;

    p11t_hex(name, hex);
    i = p11t_tool_find_name(keys, n, name);
    if (i < 0) {
        p11t_tool_error("retire: no key named %s on the token (see "
                        "'p11ticket list')",
                        hex);
        free(keys);
        return P11T_TOOL_FAIL;
    }
    now = p11t_tool_now();
    tm = keys[i].times;
    st = p11t_lifecycle_state(&tm, now);
    if (st == P11T_STATE_EXPIRED) {
        p11t_tool_describe(&tm, now, desc, sizeof(desc));
        printf("%s is already expired (%s); 'p11ticket purge' destroys it\n",
               hex, desc);
        free(keys);
        return P11T_TOOL_OK;
    }
    if (st == P11T_STATE_DECRYPT_ONLY && tm.decrypt_until != P11T_TIME_NEVER) {
        p11t_tool_describe(&tm, now, desc, sizeof(desc));
        printf("%s is already retired: %s\n", hex, desc);
        free(keys);
        return P11T_TOOL_OK;
    }
    if (st == P11T_STATE_PENDING)
        tm.encrypt_from = now;
    if (st != P11T_STATE_DECRYPT_ONLY)
        tm.encrypt_until = now;
    if (tm.decrypt_until == P11T_TIME_NEVER)
        tm.decrypt_until = p11t_time_add(now, pol.decrypt_for);

    p11t_err_clear(&err);
    rv = p11t_hsm_set_times(t->hsm, name, &tm, &err);
    if (rv == P11T_CKR_UNKNOWN_KEY) {
        p11t_tool_error("retire: %s was destroyed meanwhile", hex);
        free(keys);
        return P11T_TOOL_FAIL;
    }
    if (rv != CKR_OK) {
        free(keys);
        return p11t_tool_report("retire", rv, &err);
    }
    p11t_tool_describe(&tm, now, desc, sizeof(desc));
    printf("retired %s: %s\n", hex, desc);
    printf("servers stop issuing tickets under it within %us "
           "(refresh-interval)\n",
           t->refresh_interval);

    keys[i].times = tm;
    if (p11t_lifecycle_pick(keys, n, now) < 0)
        p11t_tool_warn("no generation is active now: servers issue no "
                       "tickets until 'p11ticket rotate' (or create) makes "
                       "one");
    free(keys);
    return P11T_TOOL_OK;
}

const p11t_tool_cmd p11t_tool_cmd_retire = {
    .name = "retire",
    .summary = "make a generation decrypt-only now",
    .run = run,
    .usage = usage,
};
