/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_tokens.c - the slots and tokens the configured pkcs11-module offers,
 * like `pkcs11-tool -L`, and which of them token-uri selects, so that a
 * token-uri that finds no token, or several, is easy to fix.  Needs no PIN:
 * p11t_hsm_slots() (hsm/slots.c) opens no session and never logs in.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/uri.h>

#include "tool.h"

static void usage(FILE *fp)
{
    fputs("usage: p11ticket [global options] tokens [--json]\n"
          "\n"
          "List every slot of the section's pkcs11-module with its token: "
          "label,\n"
          "manufacturer, model, serial number and flags (initialised, login "
          "required,\n"
          "user PIN set, count low, final try, locked...), the token's own "
          "URI, and\n"
          "which token the section's token-uri selects, by the rules the "
          "servers use.\n"
          "It opens no session and never logs in: no PIN is read.\n"
          "\n"
          "The last line says which slot token-uri selects.  When it "
          "selects none,\n"
          "or several, an error says so and the exit status is 1 (none) or 2 "
          "(several,\n"
          "add serial=): put one token's uri line into token-uri.\n"
          "\n"
          "Options:\n"
          "  -j, --json   print one JSON object instead: format, module, "
          "token_uri,\n"
          "               selected (how many tokens token-uri selects) and "
          "slots, each\n"
          "               with id, description, manufacturer, token_present, "
          "removable,\n"
          "               hardware and token (null, or label, manufacturer, "
          "model,\n"
          "               serial, the flags as booleans, uri and selected)\n"
          "  -h, --help   show this help\n",
          fp);
}

#define STR_MAX 65 /* the longest PKCS#11 string field (64) + NUL */

typedef struct token_flag {
    CK_FLAGS flag;
    const char *text, *json;
} token_flag;

/* CKF_TOKEN_INITIALIZED and CKF_USER_PIN_INITIALIZED are worded apart. */
static const token_flag token_flags[] = {
    {CKF_LOGIN_REQUIRED, "login required", "login_required"},
    {CKF_USER_PIN_COUNT_LOW, "user PIN count low", "user_pin_count_low"},
    {CKF_USER_PIN_FINAL_TRY, "user PIN final try", "user_pin_final_try"},
    {CKF_USER_PIN_LOCKED, "user PIN locked", "user_pin_locked"},
    {CKF_USER_PIN_TO_BE_CHANGED, "user PIN to be changed",
     "user_pin_to_be_changed"},
    {CKF_SO_PIN_LOCKED, "SO PIN locked", "so_pin_locked"},
    {CKF_WRITE_PROTECTED, "write-protected", "write_protected"},
    {CKF_PROTECTED_AUTHENTICATION_PATH, "PIN pad",
     "protected_authentication_path"},
};
#define N_TOKEN_FLAGS (sizeof(token_flags) / sizeof(token_flags[0]))

static int has_token(const p11t_slotinfo *s)
{
    return s->token_rv == CKR_OK;
}

static int initialised(const p11t_slotinfo *s)
{
    return has_token(s) && (s->token.flags & CKF_TOKEN_INITIALIZED);
}

/*
 * The URI that selects exactly this token: its label and serial number,
 * percent-encoded by p11-kit.  NULL when it has no label (not initialised)
 * or on failure; free() it.
 */
static char *token_uri(const p11t_slotinfo *s)
{
    P11KitUri *uri;
    CK_TOKEN_INFO *ti;
    char *str = NULL, serial[STR_MAX];

    if (!initialised(s) || (uri = p11_kit_uri_new()) == NULL)
        return NULL;
    /* p11-kit leaves fields that start with a NUL out of the URI. */
    ti = p11_kit_uri_get_token_info(uri);
    memcpy(ti->label, s->token.label, sizeof(ti->label));
    p11t_tool_pkcs11_string(s->token.serialNumber,
                            sizeof(s->token.serialNumber), serial);
    if (serial[0] != '\0')
        memcpy(ti->serialNumber, s->token.serialNumber,
               sizeof(ti->serialNumber));
    if (p11_kit_uri_format(uri, P11_KIT_URI_FOR_TOKEN, &str) != P11_KIT_URI_OK)
        str = NULL;
    p11_kit_uri_free(uri);
    return str;
}

static void flags_text(const p11t_slotinfo *s, char *buf, size_t len)
{
    CK_FLAGS f = s->token.flags;
    size_t used;

    /* A token that is not initialised has no PINs to speak of (SoftHSM
     * reports its free slot's SO PIN as locked). */
    if (!(f & CKF_TOKEN_INITIALIZED)) {
        snprintf(buf, len, "not initialised");
        return;
    }
    snprintf(buf, len, "initialised, %s",
             (f & CKF_USER_PIN_INITIALIZED) ? "user PIN set" : "no user PIN");
    for (size_t i = 0; i < N_TOKEN_FLAGS; i++) {
        if (!(f & token_flags[i].flag))
            continue;
        used = strlen(buf);
        snprintf(buf + used, len - used, ", %s", token_flags[i].text);
    }
}

static void print_slot(const p11t_slotinfo *s)
{
    char desc[STR_MAX], str[STR_MAX], flags[256], *uri;

    p11t_tool_pkcs11_string(s->slot.slotDescription,
                            sizeof(s->slot.slotDescription), desc);
    printf("\nslot %lu (0x%lx): %s%s%s\n", (unsigned long)s->id,
           (unsigned long)s->id, desc,
           (s->slot.flags & CKF_REMOVABLE_DEVICE) ? ", removable" : "",
           (s->slot.flags & CKF_HW_SLOT) ? ", hardware slot" : "");
    if (!has_token(s)) {
        printf("  token         %s\n", s->token_rv == CKR_TOKEN_NOT_PRESENT
                                           ? "(none present)"
                                           : p11t_rv_name(s->token_rv));
        return;
    }
    p11t_tool_pkcs11_string(s->token.label, sizeof(s->token.label), str);
    if (initialised(s))
        printf("  token         %s%s\n", str,
               s->selected ? "   <- token-uri" : "");
    else
        printf("  token         (not initialised)\n");
    p11t_tool_pkcs11_string(s->token.manufacturerID,
                            sizeof(s->token.manufacturerID), str);
    printf("  manufacturer  %s\n", str);
    p11t_tool_pkcs11_string(s->token.model, sizeof(s->token.model), str);
    printf("  model         %s\n", str);
    p11t_tool_pkcs11_string(s->token.serialNumber,
                            sizeof(s->token.serialNumber), str);
    if (str[0] != '\0')
        printf("  serial        %s\n", str);
    flags_text(s, flags, sizeof(flags));
    printf("  flags         %s\n", flags);
    if ((uri = token_uri(s)) != NULL)
        printf("  uri           %s\n", uri);
    free(uri);
}

static void json_member(const char *key, const CK_UTF8CHAR *s, size_t len)
{
    char str[STR_MAX];

    p11t_tool_pkcs11_string(s, len, str);
    printf("\"%s\": ", key);
    p11t_tool_json_string(str);
}

static void json_slot(const p11t_slotinfo *s)
{
    const char *(*jb)(int) = p11t_tool_json_bool;
    char *uri;

    printf("    {\"id\": %lu, ", (unsigned long)s->id);
    json_member("description", s->slot.slotDescription,
                sizeof(s->slot.slotDescription));
    printf(", ");
    json_member("manufacturer", s->slot.manufacturerID,
                sizeof(s->slot.manufacturerID));
    printf(",\n     \"token_present\": %s, \"removable\": %s, "
           "\"hardware\": %s,\n     \"token\": ",
           jb(has_token(s)), jb((s->slot.flags & CKF_REMOVABLE_DEVICE) != 0),
           jb((s->slot.flags & CKF_HW_SLOT) != 0));
    if (!has_token(s)) {
        printf("null}");
        return;
    }
    printf("{");
    json_member("label", s->token.label, sizeof(s->token.label));
    printf(", ");
    json_member("manufacturer", s->token.manufacturerID,
                sizeof(s->token.manufacturerID));
    printf(", ");
    json_member("model", s->token.model, sizeof(s->token.model));
    printf(", ");
    json_member("serial", s->token.serialNumber, sizeof(s->token.serialNumber));
    printf(",\n       \"initialized\": %s, \"user_pin_initialized\": %s",
           jb((s->token.flags & CKF_TOKEN_INITIALIZED) != 0),
           jb((s->token.flags & CKF_USER_PIN_INITIALIZED) != 0));
    for (size_t i = 0; i < N_TOKEN_FLAGS; i++)
        printf(",%s\"%s\": %s", i % 3 == 0 ? "\n       " : " ",
               token_flags[i].json,
               jb((s->token.flags & token_flags[i].flag) != 0));
    printf(",\n       \"uri\": ");
    if ((uri = token_uri(s)) != NULL)
        p11t_tool_json_string(uri);
    else
        printf("null");
    free(uri);
    printf(", \"selected\": %s}}", jb(s->selected));
}

static void print_json(const char *module, const char *uri,
                       const p11t_slotinfo *s, size_t n, size_t selected)
{
    printf("{\"format\": %d, \"module\": ", P11T_TOOL_JSON_FORMAT);
    p11t_tool_json_string(module);
    printf(", \"token_uri\": ");
    p11t_tool_json_string(uri);
    printf(", \"selected\": %zu,\n  \"slots\": [", selected);
    for (size_t i = 0; i < n; i++) {
        printf("%s\n", i ? "," : "");
        json_slot(&s[i]);
    }
    printf("%s]}\n", n ? "\n  " : "");
}

/* "'label' (slot N), ..." of the initialised tokens, for the error. */
static void initialised_list(const p11t_slotinfo *s, size_t n, char *buf,
                             size_t len)
{
    char label[STR_MAX];
    size_t used;

    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (!initialised(&s[i]))
            continue;
        p11t_tool_pkcs11_string(s[i].token.label, sizeof(s[i].token.label),
                                label);
        used = strlen(buf);
        snprintf(buf + used, len - used, "%s'%s' (slot %lu)", used ? ", " : "",
                 label, (unsigned long)s[i].id);
    }
}

/* The summary line, or the error; returns the exit status. */
static int verdict(const char *uri, const p11t_slotinfo *s, size_t n,
                   size_t selected, int json)
{
    char list[512], label[STR_MAX], serial[STR_MAX];
    size_t i;

    if (selected == 0) {
        initialised_list(s, n, list, sizeof(list));
        if (list[0] == '\0')
            p11t_tool_error("tokens: no token matches token-uri %s: the "
                            "module has no initialised token ('p11ticket "
                            "init-token' makes one for development)",
                            uri);
        else
            p11t_tool_error("tokens: no token matches token-uri %s "
                            "(initialised tokens: %s); set token-uri to the "
                            "uri line of the token the servers should use",
                            uri, list);
        return P11T_TOOL_FAIL;
    }
    if (selected > 1) {
        list[0] = '\0';
        for (i = 0; i < n; i++)
            if (s[i].selected)
                snprintf(list + strlen(list), sizeof(list) - strlen(list),
                         "%s%lu", list[0] ? ", " : "", (unsigned long)s[i].id);
        p11t_tool_error("tokens: token-uri %s matches %zu tokens (slots %s): "
                        "add serial= to choose one, as in their uri lines",
                        uri, selected, list);
        return P11T_TOOL_USAGE;
    }
    for (i = 0; !s[i].selected; i++)
        ;
    p11t_tool_pkcs11_string(s[i].token.label, sizeof(s[i].token.label), label);
    p11t_tool_pkcs11_string(s[i].token.serialNumber,
                            sizeof(s[i].token.serialNumber), serial);
    if (!json)
        printf("\ntoken-uri selects slot %lu: token '%s', serial %s\n",
               (unsigned long)s[i].id, label, serial[0] ? serial : "none");
    /* What the servers would run into at their login. */
    if (s[i].token.flags & CKF_USER_PIN_LOCKED)
        p11t_tool_warn("the token has locked the user PIN: servers do not "
                       "log in until its security officer unlocks it");
    else if (s[i].token.flags & CKF_USER_PIN_FINAL_TRY)
        p11t_tool_warn("one more wrong user PIN locks the token: servers "
                       "do not try theirs; log in once by hand");
    else if (!(s[i].token.flags & CKF_USER_PIN_INITIALIZED))
        p11t_tool_warn("the token has no user PIN yet: servers cannot log "
                       "in");
    return P11T_TOOL_OK;
}

static int run(p11t_tool *t, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const p11t_tool_cmd *cmd = &p11t_tool_cmd_tokens;
    const char *module, *uri;
    p11t_slotinfo *slots = NULL;
    size_t n = 0, selected = 0;
    int c, rc, json = 0;
    p11t_err err;
    CK_RV rv;

    p11t_tool_getopt_reset(cmd, argv);
    while ((c = p11t_tool_getopt(t, cmd, argc, argv, "jh", opts)) != -1) {
        switch (c) {
        case 'j':
            json = 1;
            break;
        default:
            return p11t_tool_help_or_bad(cmd, c);
        }
    }
    if (optind < argc)
        return p11t_tool_unexpected(cmd, argv[optind]);

    if ((rc = p11t_tool_load_config(t)) != P11T_TOOL_OK)
        return rc;
    /* Required keys: p11t_tool_load_config() checked they are there. */
    module = p11t_tool_conf_value(t, "pkcs11-module");
    uri = p11t_tool_conf_value(t, "token-uri");
    if ((rc = p11t_tool_open_hsm(t)) != P11T_TOOL_OK)
        return rc;
    p11t_err_clear(&err);
    rv = p11t_hsm_slots(t->hsm, &slots, &n, &err);
    if (rv != CKR_OK)
        return p11t_tool_report(cmd->name, rv, &err);

    for (size_t i = 0; i < n; i++)
        selected += slots[i].selected != 0;
    if (json) {
        print_json(module, uri, slots, n, selected);
    } else {
        printf("module     %s\ntoken-uri  %s\n", module, uri);
        for (size_t i = 0; i < n; i++)
            print_slot(&slots[i]);
        if (n == 0)
            printf("\n(the module offers no slot)\n");
    }
    rc = verdict(uri, slots, n, selected, json);
    free(slots);
    return rc;
}

const p11t_tool_cmd p11t_tool_cmd_tokens = {
    .name = "tokens",
    .summary = "the module's tokens and which one token-uri selects (no "
               "PIN)",
    .run = run,
    .usage = usage,
};
