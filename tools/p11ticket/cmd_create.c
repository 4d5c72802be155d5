/*
 * cmd_create.c - generate a new ticket key generation inside the token.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static void usage(FILE *fp)
{
    fputs("usage: p11ticket [global options] create [--aes-bits 256|128]\n"
          "\n"
          "Generate a new key generation in the token: an AES key and a "
          "256-bit HMAC\n"
          "key (CKK_GENERIC_SECRET) sharing a fresh random 16-byte key name, "
          "both\n"
          "CKA_TOKEN, CKA_PRIVATE and CKA_SENSITIVE, never extractable.  The "
          "new\n"
          "generation encrypts from now on, with no end date; it takes over "
          "from the\n"
          "current key on every server at its next refresh.  Prints the key "
          "name in hex.\n"
          "\n"
          "Options:\n"
          "  -b, --aes-bits BITS  AES key size, 256 (default) or 128\n"
          "  -h, --help           show this help\n",
          fp);
}

static int run(p11t_tool *t, int argc, char **argv)
{
    static const struct option opts[] = {
        {"aes-bits", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    uint8_t name[P11T_NAME_LEN];
    char hex[33], from[32];
    CK_ULONG aes_len = 32;
    p11t_times times;
    p11t_err err;
    CK_RV rv;
    int c, rc;

    p11t_tool_getopt_reset(&p11t_tool_cmd_create, argv);
    while ((c = getopt_long(argc, argv, "b:h", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            if (strcmp(optarg, "256") == 0) {
                aes_len = 32;
            } else if (strcmp(optarg, "128") == 0) {
                aes_len = 16;
            } else {
                p11t_tool_error("create: --aes-bits must be 256 or 128, not "
                                "'%s'",
                                optarg);
                return P11T_TOOL_USAGE;
            }
            break;
        case 'h':
            usage(stdout);
            return P11T_TOOL_OK;
        default:
            return p11t_tool_bad_usage(&p11t_tool_cmd_create);
        }
    }
    if (optind < argc) {
        p11t_tool_error("create: unexpected argument '%s'", argv[optind]);
        return p11t_tool_bad_usage(&p11t_tool_cmd_create);
    }

    if ((rc = p11t_tool_load_config(t)) != P11T_TOOL_OK)
        return rc;
    if ((rc = p11t_tool_open_hsm(t)) != P11T_TOOL_OK)
        return rc;

    times.encrypt_from = p11t_tool_now();
    times.encrypt_until = P11T_TIME_NEVER;
    times.decrypt_until = P11T_TIME_NEVER;
    p11t_err_clear(&err);
    rv = p11t_hsm_create(t->hsm, aes_len, &times, name, &err);
    if (rv != CKR_OK)
        return p11t_tool_report("create", rv, &err);

    p11t_hex(name, hex);
    if (t->verbose) {
        p11t_tool_format_time(times.encrypt_from, from);
        fprintf(stderr,
                "p11ticket: created key %s: AES-%lu + HMAC-SHA256, "
                "encrypts from %s\n",
                hex, (unsigned long)aes_len * 8, from);
    }
    printf("%s\n", hex);
    return P11T_TOOL_OK;
}

const p11t_tool_cmd p11t_tool_cmd_create = {
    .name = "create",
    .summary = "generate a new key generation in the token",
    .run = run,
    .usage = usage,
};
