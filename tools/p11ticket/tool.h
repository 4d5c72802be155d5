/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tool.h - shared helpers of the p11ticket setup tool.
 *
 * The tool is a table of subcommands (main.c), one file per command
 * (cmd_*.c), and these helpers (tool.c): reading the provider section of
 * openssl.cnf exactly as the servers see it, opening the token through
 * hsm/, PIN prompts, and error reporting.  Only the tool prints; hsm/ hands
 * back a p11t_err and the tool turns it into one line on stderr.
 */
#ifndef P11T_TOOL_H
#define P11T_TOOL_H

#include <getopt.h>
#include <stdio.h>

#include <openssl/conf.h>

#include "hsm.h"

/* Exit status of the tool and of every command. */
#define P11T_TOOL_OK 0
#define P11T_TOOL_FAIL 1  /* token or operation failure */
#define P11T_TOOL_USAGE 2 /* usage or configuration error */

#define P11T_TOOL_DEFAULT_SECTION "p11ticket"

typedef struct p11t_tool {
    /* From the global options. */
    const char *config_file; /* NULL until resolved */
    char *config_file_owned; /* set when the default path was allocated */
    const char *provider_name;
    int verbose;

    /* Filled by p11t_tool_load_config(). */
    p11t_conffile file; /* file.cfg validated; owned until p11t_tool_open_hsm() */
    unsigned refresh_interval; /* the section's refresh-interval, seconds */
    p11t_policy policy; /* encrypt-for, decrypt-for, rotate-lead (defaults) */

    /* Filled by p11t_tool_open_hsm(). */
    p11t_hsm *hsm;
} p11t_tool;

typedef struct p11t_tool_cmd {
    const char *name;
    const char *summary; /* one line for the command list */
    /* argv[0] is the command name; returns a P11T_TOOL_* status. */
    int (*run)(p11t_tool *t, int argc, char **argv);
    void (*usage)(FILE *fp);
} p11t_tool_cmd;

extern const p11t_tool_cmd p11t_tool_cmd_init_token;
extern const p11t_tool_cmd p11t_tool_cmd_create;
extern const p11t_tool_cmd p11t_tool_cmd_rotate;
extern const p11t_tool_cmd p11t_tool_cmd_retire;
extern const p11t_tool_cmd p11t_tool_cmd_revoke;
extern const p11t_tool_cmd p11t_tool_cmd_purge;
extern const p11t_tool_cmd p11t_tool_cmd_import;
extern const p11t_tool_cmd p11t_tool_cmd_list;
extern const p11t_tool_cmd p11t_tool_cmd_status;
extern const p11t_tool_cmd p11t_tool_cmd_tokens;
extern const p11t_tool_cmd p11t_tool_cmd_check;

/* ---- messages ------------------------------------------------------------ */

void p11t_tool_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
void p11t_tool_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * Print a p11t_err (its message is secret-free by contract) prefixed with
 * `what`, and return the matching exit status: P11T_TOOL_USAGE for
 * configuration errors, P11T_TOOL_FAIL otherwise.
 */
int p11t_tool_report(const char *what, CK_RV rv, const p11t_err *err);
/* Print the OpenSSL error queue, one line per entry, then clear it. */
void p11t_tool_print_ossl_errors(void);

/*
 * Option parsing for commands: reset getopt so a command can parse its own
 * argv, and the common reaction to an unknown option.
 */
void p11t_tool_getopt_reset(const p11t_tool_cmd *cmd, char **argv);
/*
 * getopt_long() over a command's options and the global ones, so that
 * --config, --section and --verbose (-c, -s, -v) work after the command name
 * as well as before it.  The global ones are applied to t and never
 * returned; everything else is returned as getopt_long() would.  One letter
 * means one thing everywhere: a command whose own options use c, s or v is
 * refused as an internal error ('?').  Long-only options use values from
 * P11T_TOOL_OPT_LONG on, which no letter can collide with.
 */
#define P11T_TOOL_OPT_LONG 0x100
int p11t_tool_getopt(p11t_tool *t, const p11t_tool_cmd *cmd, int argc,
                     char **argv, const char *shortopts,
                     const struct option *longopts);
/*
 * Apply one global option ('c', 's' or 'v', from main or from
 * p11t_tool_getopt); P11T_TOOL_OK, or P11T_TOOL_USAGE after printing why.
 */
int p11t_tool_global_opt(p11t_tool *t, int c, const char *arg);
int p11t_tool_bad_usage(const p11t_tool_cmd *cmd);
/*
 * The last case of every command's option switch: for 'h' (--help) print
 * the command's usage on stdout and return P11T_TOOL_OK, for anything else
 * p11t_tool_bad_usage().
 */
int p11t_tool_help_or_bad(const p11t_tool_cmd *cmd, int c);
/*
 * An operand given to a command that takes none: prints "NAME: unexpected
 * argument 'ARG'" and returns p11t_tool_bad_usage().
 */
int p11t_tool_unexpected(const p11t_tool_cmd *cmd, const char *arg);
/*
 * Exactly one operand after the options: returns it, or prints
 * "NAME: MISSING" (none) or "NAME: SEVERAL" (more), the usage hint, and
 * returns NULL (exit with P11T_TOOL_USAGE).
 */
const char *p11t_tool_one_operand(const p11t_tool_cmd *cmd, int argc,
                                  char **argv, const char *missing,
                                  const char *several);
/*
 * The single key-name operand (retire, revoke) into `name`: P11T_TOOL_OK,
 * or P11T_TOOL_USAGE after printing why.
 */
int p11t_tool_name_operand(const p11t_tool_cmd *cmd, int argc, char **argv,
                           uint8_t name[static P11T_NAME_LEN]);

/* ---- configuration ------------------------------------------------------- */

/*
 * Load the config file, follow openssl_conf -> providers -> provider_name to
 * the provider's section, feed every key to p11t_config_set() and run
 * p11t_config_check().  Prints one line naming file/section/key on failure.
 */
int p11t_tool_load_config(p11t_tool *t);
/* Raw value of a key in the provider section (after load), or NULL. */
const char *p11t_tool_conf_value(const p11t_tool *t, const char *key);
/* Hand the config to hsm/ and install the tty PIN prompt. */
int p11t_tool_open_hsm(p11t_tool *t);
void p11t_tool_cleanup(p11t_tool *t);

/* ---- PINs ---------------------------------------------------------------- */

typedef struct p11t_tool_pin {
    char *buf; /* NUL-terminated */
    size_t len;
    int from_hsm; /* released with p11t_pin_free() rather than by us */
} p11t_tool_pin;

/*
 * Read a PIN from a pin-source value: "file:", "env:" go through
 * p11t_pin_read(); "prompt" asks on /dev/tty with echo off (twice when
 * `confirm` is set, for a PIN being chosen).  `what` names the PIN in
 * prompts ("SO PIN"), `origin` names where the source came from in
 * messages ("init-token: --so-pin-source").  Never prints the PIN.
 */
int p11t_tool_pin_get(const char *source, const char *what, const char *origin,
                      int confirm, p11t_tool_pin *pin);
void p11t_tool_pin_release(p11t_tool_pin *pin);
/*
 * Ask for a secret on /dev/tty with echo off.  Returns its length, or -1
 * with the reason (never the input) in `why`.
 */
#define P11T_TOOL_WHY_LEN 160
int p11t_tool_tty_secret(const char *prompt, char *buf, size_t len,
                         char why[static P11T_TOOL_WHY_LEN]);

/* ---- formatting ---------------------------------------------------------- */

/* "2025-01-31T12:00:00Z", or "never" for P11T_TIME_NEVER. */
void p11t_tool_format_time(int64_t t, char out[static 32]);
int64_t p11t_tool_now(void);
/*
 * A fixed-size, blank-padded PKCS#11 string (CK_TOKEN_INFO.label, ...) as a
 * C string without the padding, safe to print: control characters and bytes
 * that are not UTF-8 become '?'.  out has room for len + 1 bytes.
 */
void p11t_tool_pkcs11_string(const CK_UTF8CHAR *s, size_t len, char *out);

/*
 * JSON output.  Every document the tool prints is one object whose first
 * member is "format": P11T_TOOL_JSON_FORMAT (except list --json, see
 * cmd_list.c).  Members may be added within a format; removing or changing
 * one bumps it (docs/p11ticket.1, "JSON OUTPUT").
 */
#define P11T_TOOL_JSON_FORMAT 1
/* A JSON string (quotes included) on stdout. */
void p11t_tool_json_string(const char *s);
/* "KEY": "ISO 8601", "KEY_unix": seconds, both null for never. */
void p11t_tool_json_time(const char *key, int64_t t);
const char *p11t_tool_json_bool(int b);
/*
 * The members every generation has in list --json and status --json: name,
 * state, current, complete, the three times (p11t_tool_json_time), aes_bits,
 * hmac_bits and check.  `sep` goes between members (",\n   " for list).
 */
void p11t_tool_json_generation(const p11t_objinfo *objs, size_t n,
                               const p11t_keyinfo *g, int current, int64_t now,
                               const char *sep);

/* ---- lifecycle policy options -------------------------------------------- */

/*
 * The policy options (--encrypt-for, --decrypt-for, --lead) default to the
 * section's encrypt-for, decrypt-for and rotate-lead, which the providers'
 * auto-rotate uses too, so that every rotator computes the same successor
 * times.  Without them hsm/ defaults to 12 h, 24 h and 1 h, following
 * practice (docs/design.md, "Key files and rotation elsewhere").  A command
 * keeps 0 for "not given" and calls this after p11t_tool_load_config().
 */
void p11t_tool_policy_defaults(const p11t_tool *t, p11t_policy *p);
/*
 * Clock-skew margin: a pending generation whose encrypt-from is more than
 * this far ahead cannot have encrypted a ticket on any server whose clock
 * is off by less, so racing rotators may still destroy duplicates of it.
 */
#define P11T_TOOL_SKEW 60

/*
 * Parse a duration option ("15s", "90m", "12h", "7d", bare seconds) with
 * p11t_parse_duration(); prints "CMD: --OPTION: ..." and returns 0 on error.
 */
int p11t_tool_duration(const char *cmd, const char *option, const char *arg,
                       int64_t *out);
/*
 * A policy option by its getopt character: 'e' --encrypt-for, 'd'
 * --decrypt-for, 'l' --lead, parsed with p11t_tool_duration() into `p`.
 */
int p11t_tool_policy_opt(const char *cmd, int c, const char *arg,
                         p11t_policy *p);
/* "--aes-bits 256|128" -> 32 or 16 bytes; prints and returns 0 on error. */
int p11t_tool_aes_bits(const char *cmd, const char *arg, CK_ULONG *aes_len);
/* A key name in hex, as list prints it; prints and returns 0 on error. */
int p11t_tool_key_name(const char *cmd, const char *arg,
                       uint8_t name[static P11T_NAME_LEN]);

/* ---- generations (gen.c: pure) ------------------------------------------- */

/* Exactly one usable AES and one usable HMAC object. */
int p11t_tool_complete(const p11t_keyinfo *k);
/*
 * Racing rotators: among complete PENDING generations with identical times
 * whose encrypt-from is more than P11T_TOOL_SKEW seconds after `now`, all
 * but the one with the greatest name are duplicates.  Writes their indices
 * to out (room for n) and returns how many.
 */
size_t p11t_tool_duplicates(const p11t_keyinfo *keys, size_t n, int64_t now,
                            size_t *out);
/*
 * Complete generations that are active at `now` besides the one that
 * encrypts (p11t_lifecycle_pick): left by rotators that each created a key
 * starting now, or by a manual create or import.  They never encrypt while
 * the current key is active; rotate retires them so that exactly one
 * generation is active.  Writes their indices to out (room for n).
 */
size_t p11t_tool_overlapping(const p11t_keyinfo *keys, size_t n, int64_t now,
                             size_t *out);
/* Index of the generation with this name, or -1. */
int p11t_tool_find_name(const p11t_keyinfo *keys, size_t n,
                        const uint8_t name[static P11T_NAME_LEN]);
/* The order list and status show: by encrypt-from, then by name. */
void p11t_tool_sort_generations(p11t_keyinfo *keys, size_t n);
/*
 * A token object that keeps its key inside the token: a private, sensitive,
 * non-extractable token object whose value cannot be read (list's "ok",
 * otherwise "WEAK").  p11t_tool_gen_ok: every object of generation g is.
 */
int p11t_tool_obj_ok(const p11t_objinfo *o);
int p11t_tool_gen_ok(const p11t_objinfo *objs, size_t n, const p11t_keyinfo *g);
/*
 * The first moment at or after `now` at which no generation encrypts
 * (p11t_lifecycle_pick finds none, so servers issue no tickets), given the
 * generations as they are: `now` itself when none encrypts now,
 * P11T_TIME_NEVER when the encrypt windows never end.
 */
int64_t p11t_tool_issuing_until(const p11t_keyinfo *keys, size_t n,
                                int64_t now);
/*
 * status's timeline: what generation i does at time t, as one character:
 * 'E' servers encrypt with it (p11t_lifecycle_pick), 'a' active but another
 * generation encrypts, 'P' pending, 'd' decrypt-only, '.' expired.
 */
char p11t_tool_timeline_char(const p11t_keyinfo *keys, size_t n, size_t i,
                             int64_t t);
/* 1 if at some moment of [from, to) no generation encrypts. */
int p11t_tool_no_key_in(const p11t_keyinfo *keys, size_t n, int64_t from,
                        int64_t to);
/*
 * A duration for people, rounded to its last unit: "45s", "42m", "3h12m",
 * "9h", "1d04h", "2d".  Negative durations are shown as their magnitude.
 */
#define P11T_TOOL_DUR_LEN 24
void p11t_tool_format_dur(int64_t secs, char out[static P11T_TOOL_DUR_LEN]);

/* ---- token helpers ------------------------------------------------------- */

/*
 * p11t_hsm_list() and p11t_fold_generations().  objs may be NULL when the
 * caller needs only the generations.  On failure prints one line prefixed with
 * `what` and returns the exit status.
 */
int p11t_tool_scan(p11t_tool *t, const char *what, p11t_objinfo **objs,
                   size_t *n_objs, p11t_keyinfo **gens, size_t *n_gens);
/* What list and status start with: load the configuration, open the token,
 * p11t_tool_scan() and sort the generations for display. */
int p11t_tool_read_token(p11t_tool *t, const char *what, p11t_objinfo **objs,
                         size_t *n_objs, p11t_keyinfo **gens, size_t *n_gens);
/* "created NAME: STATE, encrypts FROM to UNTIL, decrypts until DU" tail:
 * "STATE, encrypts ... until DU" for the times at `now`. */
void p11t_tool_describe(const p11t_times *tm, int64_t now, char *buf,
                        size_t len);
/*
 * The warnings list and status print on stderr after their output:
 * incomplete generations, labels that disagree, WEAK objects, and no
 * generation encrypting (cur < 0) while there are keys.
 */
void p11t_tool_warn_generations(const p11t_objinfo *objs, size_t n,
                                const p11t_keyinfo *gens, size_t ng, int cur);

/*
 * check --connect (check_connect.c): connect to `target` (HOST:PORT or
 * [V6ADDR]:PORT) as a plain TLS client with TLS 1.2 and with TLS 1.3, look
 * the key name of each ticket up on the token (p11t_tool_scan) and present
 * the session again.  `servername` is the SNI to send (NULL: HOST unless it
 * is an IP literal; "": none).  Needs p11t_tool_load_config() first; opens
 * the token.  Returns the exit status.
 */
int p11t_tool_check_connect(p11t_tool *t, const char *target,
                            const char *servername);

/*
 * Rotation (cmd_rotate.c), shared by rotate and purge: destroy expired and
 * incomplete generations; with `create`, also create the generations the
 * plan asks for and then remove duplicates left by racing rotators.  With
 * `dry_run`, only print what would be done.  Returns the exit status.
 */
int p11t_tool_rotate(p11t_tool *t, const char *what, const p11t_policy *policy,
                     CK_ULONG aes_len, int create, int dry_run);

#endif /* P11T_TOOL_H */
