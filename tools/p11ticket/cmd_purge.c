/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_purge.c - destroy expired generations and incomplete debris, the
 * destroying half of `rotate` (same rules, p11t_rotate_plan), without
 * creating anything.
 */
#include <getopt.h>

#include "tool.h"

static void usage(FILE *fp)
{
    fputs("usage: p11ticket [global options] purge [--dry-run]\n"
          "\n"
          "Destroy every expired generation (past its decrypt-until) and "
          "every incomplete\n"
          "one (an AES or HMAC object without its partner, or with a role "
          "twice) that\n"
          "is older than 10 minutes, so that it cannot be a generation that "
          "another\n"
          "process is still creating.  These are the generations rotate "
          "destroys;\n"
          "purge creates nothing.  Prints one line per generation destroyed, "
          "or\n"
          "\"nothing to do\".\n"
          "\n"
          "Options:\n"
          "  -n, --dry-run   print what would be destroyed, change nothing\n"
          "  -h, --help      show this help\n",
          fp);
}

static int run(p11t_tool *t, int argc, char **argv)
{
    static const struct option opts[] = {
        {"dry-run", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    /* The destroy list does not depend on the policy: the section's. */
    p11t_policy policy = {0, 0, 0};
    int c, dry_run = 0;

    p11t_tool_getopt_reset(&p11t_tool_cmd_purge, argv);
    while ((c = p11t_tool_getopt(t, &p11t_tool_cmd_purge, argc, argv, "nh",
                                 opts)) != -1) {
        switch (c) {
        case 'n':
            dry_run = 1;
            break;
        default:
            return p11t_tool_help_or_bad(&p11t_tool_cmd_purge, c);
        }
    }
    if (optind < argc)
        return p11t_tool_unexpected(&p11t_tool_cmd_purge, argv[optind]);
    return p11t_tool_rotate(t, "purge", &policy, 32, 0, dry_run);
}

const p11t_tool_cmd p11t_tool_cmd_purge = {
    .name = "purge",
    .summary = "destroy expired and incomplete generations, create nothing",
    .run = run,
    .usage = usage,
};
