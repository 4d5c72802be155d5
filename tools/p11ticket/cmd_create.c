/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_create.c - generate a new ticket key generation inside the token,
 * with lifecycle times from a policy.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

#define OPT_START P11T_TOOL_OPT_LONG

static void usage(FILE *fp)
{
    fputs(
        "usage: p11ticket [global options] create [--aes-bits 256|128]\n"
        "         [--encrypt-for DURATION] [--decrypt-for DURATION]\n"
        "         [--start now|+DURATION]\n"
        "\n"
        "Generate a new key generation in the token: an AES key and a "
        "256-bit HMAC\n"
        "key (CKK_GENERIC_SECRET) sharing a fresh random 16-byte key name, "
        "both\n"
        "CKA_TOKEN, CKA_PRIVATE and CKA_SENSITIVE, never extractable.  Prints "
        "the key\n"
        "name in hex on standard output.\n"
        "\n"
        "The generation encrypts from its start (now by default) for "
        "--encrypt-for,\n"
        "then only decrypts for --decrypt-for.  Being the newest active "
        "generation,\n"
        "it takes over on every server within the refresh interval.  "
        "Scheduled\n"
        "rotation ('p11ticket rotate') creates generations by itself; create "
        "is for\n"
        "the first key and for manual changes.\n"
        "\n"
        "Options:\n"
        "  -b, --aes-bits BITS       AES key size, 256 (default) or 128\n"
        "  -e, --encrypt-for DURATION\n"
        "                            how long it encrypts (default: the "
        "section's\n"
        "                            encrypt-for, else 12h)\n"
        "  -d, --decrypt-for DURATION\n"
        "                            how long it still decrypts afterwards "
        "(default:\n"
        "                            the section's decrypt-for, else 24h)\n"
        "      --start now|+DURATION start encrypting now (default) or "
        "later; until\n"
        "                            then it is pending: servers accept it "
        "but do not\n"
        "                            encrypt with it\n"
        "  -h, --help                show this help\n"
        "\n"
        "Durations: a positive number with an optional unit s, m, h or d "
        "(90m, 12h,\n"
        "7d); a bare number is seconds.\n",
        fp);
}

static int run(p11t_tool *t, int argc, char **argv)
{
    static const struct option opts[] = {
        {"aes-bits", required_argument, NULL, 'b'},
        {"encrypt-for", required_argument, NULL, 'e'},
        {"decrypt-for", required_argument, NULL, 'd'},
        {"start", required_argument, NULL, OPT_START},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    uint8_t name[P11T_NAME_LEN];
    char hex[33], desc[160];
    CK_ULONG aes_len = 32;
    p11t_policy pol = {0, 0, 0};
    int64_t start = 0, now;
    p11t_times times;
    p11t_err err;
    CK_RV rv;
    int c, rc;

    p11t_tool_getopt_reset(&p11t_tool_cmd_create, argv);
    while ((c = p11t_tool_getopt(t, &p11t_tool_cmd_create, argc, argv,
                                 "b:e:d:h", opts)) != -1) {
        switch (c) {
        case 'b':
            if (!p11t_tool_aes_bits("create", optarg, &aes_len))
                return P11T_TOOL_USAGE;
            break;
        case 'e':
        case 'd':
            if (!p11t_tool_policy_opt("create", c, optarg, &pol))
                return P11T_TOOL_USAGE;
            break;
        case OPT_START:
            if (strcmp(optarg, "now") == 0) {
                start = 0;
            } else if (optarg[0] != '+' ||
                       !p11t_parse_duration(optarg + 1, &start)) {
                p11t_tool_error("create: --start must be 'now' or '+' and a "
                                "duration (e.g. +1h), not '%s'",
                                optarg);
                return P11T_TOOL_USAGE;
            }
            break;
        default:
            return p11t_tool_help_or_bad(&p11t_tool_cmd_create, c);
        }
    }
    if (optind < argc)
        return p11t_tool_unexpected(&p11t_tool_cmd_create, argv[optind]);

    if ((rc = p11t_tool_load_config(t)) != P11T_TOOL_OK)
        return rc;
    p11t_tool_policy_defaults(t, &pol);
    if ((rc = p11t_tool_open_hsm(t)) != P11T_TOOL_OK)
        return rc;

    now = p11t_tool_now();
    times.encrypt_from = p11t_time_add(now, start);
    times.encrypt_until =
        p11t_time_add(times.encrypt_from, pol.encrypt_for);
    times.decrypt_until =
        p11t_time_add(times.encrypt_until, pol.decrypt_for);
    p11t_err_clear(&err);
    rv = p11t_hsm_create(t->hsm, aes_len, &times, name, &err);
    if (rv != CKR_OK)
        return p11t_tool_report("create", rv, &err);

    p11t_hex(name, hex);
    p11t_tool_describe(&times, now, desc, sizeof(desc));
    fprintf(stderr, "p11ticket: created %s: %s (AES-%lu, HMAC-SHA256)\n", hex,
            desc, (unsigned long)aes_len * 8);
    printf("%s\n", hex);
    return P11T_TOOL_OK;
}

const p11t_tool_cmd p11t_tool_cmd_create = {
    .name = "create",
    .summary = "generate a new key generation in the token",
    .run = run,
    .usage = usage,
};
