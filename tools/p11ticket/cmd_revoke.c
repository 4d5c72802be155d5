/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_revoke.c - destroy a generation now: the response to a compromised
 * key.  Unlike retire, tickets under it stop resuming.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static void usage(FILE *fp)
{
    fputs("usage: p11ticket [global options] revoke NAME\n"
          "\n"
          "Destroy the generation NAME (32 hex digits, as 'p11ticket list' "
          "prints it)\n"
          "in the token now, both its objects.  This is the response to a "
          "compromise:\n"
          "tickets under it stop resuming on every server within the "
          "refresh-interval\n"
          "of the configuration (default 30 s); clients then do a full "
          "handshake.\n"
          "Servers keep their own session copy of a key until their next "
          "scan, so do not\n"
          "count on sooner; the bound holds whether or not handshakes arrive "
          "meanwhile.\n"
          "\n"
          "If NAME was the key that encrypts, run 'p11ticket rotate' "
          "afterwards: until a\n"
          "generation is active again, servers issue no tickets.\n"
          "\n"
          "Options:\n"
          "  -h, --help   show this help\n",
          fp);
}

static int run(p11t_tool *t, int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    uint8_t name[P11T_NAME_LEN];
    p11t_keyinfo *keys = NULL;
    size_t n = 0;
    int64_t now;
    char hex[33];
    p11t_err err;
    CK_RV rv;
    int c, rc, i, current, active_left;

    p11t_tool_getopt_reset(&p11t_tool_cmd_revoke, argv);
    /* --help is its only option (the global ones aside): any other ends
     * the command. */
    if ((c = p11t_tool_getopt(t, &p11t_tool_cmd_revoke, argc, argv, "h",
                              opts)) != -1)
        return p11t_tool_help_or_bad(&p11t_tool_cmd_revoke, c);
    if ((rc = p11t_tool_name_operand(&p11t_tool_cmd_revoke, argc, argv,
                                     name)) != P11T_TOOL_OK)
        return rc;

    if ((rc = p11t_tool_load_config(t)) != P11T_TOOL_OK)
        return rc;
    if ((rc = p11t_tool_open_hsm(t)) != P11T_TOOL_OK)
        return rc;
    if ((rc = p11t_tool_scan(t, "revoke", NULL, NULL, &keys, &n)) !=
        P11T_TOOL_OK)
        return rc;

    p11t_hex(name, hex);
    now = p11t_tool_now();
    i = p11t_tool_find_name(keys, n, name);
    current = i >= 0 && p11t_lifecycle_pick(keys, n, now) == i;

    p11t_err_clear(&err);
    rv = p11t_hsm_destroy(t->hsm, name, &err);
    if (rv == P11T_CKR_UNKNOWN_KEY) {
        p11t_tool_error("revoke: no key named %s on the token (see "
                        "'p11ticket list')",
                        hex);
        free(keys);
        return P11T_TOOL_FAIL;
    }
    if (rv != CKR_OK) {
        free(keys);
        return p11t_tool_report("revoke", rv, &err);
    }
    printf("revoked %s: destroyed in the token\n", hex);
    printf("servers stop using it (no ticket issued or accepted under it) "
           "within %us (refresh-interval) plus one token scan; clients then "
           "do a full handshake\n",
           t->refresh_interval);

    if (i >= 0) {
        /* What the servers will pick once they see the key gone. */
        keys[i].has_aes = keys[i].has_hmac = 0;
    }
    active_left = p11t_lifecycle_pick(keys, n, now) >= 0;
    if (current)
        p11t_tool_warn(
            "%s was the key that encrypts%s: run 'p11ticket "
            "rotate' now%s",
            hex, active_left ? "; servers move to the next active key" : "",
            active_left ? " to restore the schedule"
                        : ": until a generation is active, "
                          "servers issue no tickets");
    else if (!active_left)
        p11t_tool_warn("no generation is active: servers issue no tickets "
                       "until 'p11ticket rotate' (or create) makes one");
    free(keys);
    return P11T_TOOL_OK;
}

const p11t_tool_cmd p11t_tool_cmd_revoke = {
    .name = "revoke",
    .summary = "destroy a generation now (after a compromise)",
    .run = run,
    .usage = usage,
};
