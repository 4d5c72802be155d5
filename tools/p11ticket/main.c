/* SPDX-License-Identifier: Apache-2.0 */
/*
 * main.c - the p11ticket setup tool: global options and the command table.
 *
 *   p11ticket [--config FILE] [--section NAME] <command> [options]
 *
 * Each command lives in its own cmd_*.c file and parses its own options
 * with p11t_tool_getopt(), which also takes the global options, so that
 * they may follow the command name as well.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "p11ticket.h"
#include "tool.h"

static const p11t_tool_cmd *const commands[] = {
    &p11t_tool_cmd_init_token,
    &p11t_tool_cmd_create,
    &p11t_tool_cmd_rotate,
    &p11t_tool_cmd_retire,
    &p11t_tool_cmd_revoke,
    &p11t_tool_cmd_purge,
    &p11t_tool_cmd_import,
    &p11t_tool_cmd_list,
    &p11t_tool_cmd_status,
    &p11t_tool_cmd_tokens,
    &p11t_tool_cmd_check,
    NULL,
};

static void usage(FILE *fp)
{
    size_t i;

    fputs("usage: p11ticket [--config FILE] [--section NAME] [--verbose] "
          "<command> [options]\n"
          "       p11ticket help [<command>]\n"
          "\n"
          "Provision, rotate and inspect TLS session-ticket keys kept in a "
          "PKCS#11\ntoken.  "
          "The tool reads the same openssl.cnf provider section as the "
          "servers.\n"
          "\n"
          "Global options (before or after the command):\n"
          "  -c, --config FILE    openssl.cnf to read (default: $OPENSSL_CONF,"
          "\n"
          "                       else OpenSSL's default configuration file)\n"
          "  -s, --section NAME   provider entry in the providers section "
          "(default:\n"
          "                       " P11T_TOOL_DEFAULT_SECTION ")\n"
          "  -v, --verbose        more detail on stderr\n"
          "  -h, --help           show this help (after a command: its "
          "help)\n"
          "  -V, --version        show the version\n"
          "\n"
          "Commands:\n",
          fp);
    for (i = 0; commands[i] != NULL; i++)
        fprintf(fp, "  %-12s %s\n", commands[i]->name, commands[i]->summary);
    fputs("\n"
          "Run 'p11ticket <command> --help' for the options of a command.\n"
          "Results go to standard output, warnings and errors to standard "
          "error.\n"
          "Exit status: 0 success, 1 token or operation failure, 2 usage or "
          "configuration error.\n",
          fp);
}

static const p11t_tool_cmd *find_command(const char *name)
{
    size_t i;

    for (i = 0; commands[i] != NULL; i++)
        if (strcmp(commands[i]->name, name) == 0)
            return commands[i];
    return NULL;
}

static int unknown_command(const char *name)
{
    p11t_tool_error("unknown command '%s'", name);
    fputs("Try 'p11ticket --help'.\n", stderr);
    return P11T_TOOL_USAGE;
}

static int help_command(int argc, char **argv)
{
    const p11t_tool_cmd *cmd;

    if (argc < 2) {
        usage(stdout);
        return P11T_TOOL_OK;
    }
    if (argc > 2) {
        p11t_tool_error("help takes at most one command");
        return P11T_TOOL_USAGE;
    }
    cmd = find_command(argv[1]);
    if (cmd == NULL)
        return unknown_command(argv[1]);
    cmd->usage(stdout);
    return P11T_TOOL_OK;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"section", required_argument, NULL, 's'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    p11t_tool t;
    const p11t_tool_cmd *cmd;
    int c, rc;

    /*
     * The tool reads the configuration itself (and `check` loads it into a
     * private OSSL_LIB_CTX).  Keep OpenSSL from also loading $OPENSSL_CONF
     * into the default library context, which would load the provider a
     * second time, into the process that already holds the token through
     * hsm/, and apply its default_properties to SoftHSM's own OpenSSL use.
     */
    OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL);

    memset(&t, 0, sizeof(t));
    t.provider_name = P11T_TOOL_DEFAULT_SECTION;

    argv[0] = "p11ticket"; /* for getopt's messages */
    /* '+': stop at the command name; the rest belongs to the command. */
    while ((c = getopt_long(argc, argv, "+c:s:vhV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
        case 's':
        case 'v':
            if (p11t_tool_global_opt(&t, c, optarg) != P11T_TOOL_OK)
                return P11T_TOOL_USAGE;
            break;
        case 'h':
            usage(stdout);
            return P11T_TOOL_OK;
        case 'V':
            printf("p11ticket %s\n", P11TICKET_VERSION_STR);
            return P11T_TOOL_OK;
        default:
            fputs("Try 'p11ticket --help'.\n", stderr);
            return P11T_TOOL_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return P11T_TOOL_USAGE;
    }

    if (strcmp(argv[optind], "help") == 0)
        return help_command(argc - optind, argv + optind);
    cmd = find_command(argv[optind]);
    if (cmd == NULL)
        return unknown_command(argv[optind]);

    rc = cmd->run(&t, argc - optind, argv + optind);
    p11t_tool_cleanup(&t);
    return rc;
}
