/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_init_token.c - initialise a development token (SoftHSM) for p11ticket.
 *
 * hsm/ deliberately has no token initialisation: servers must never be able
 * to wipe a token.  This command talks to the configured PKCS#11 module
 * directly, exactly like softhsm2-util --init-token --free does.
 */
#include <dlfcn.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/uri.h>

#include "tool.h"

#define LABEL_LEN 32 /* CK_TOKEN_INFO.label, blank padded */
#define OPT_LABEL P11T_TOOL_OPT_LONG

static void usage(FILE *fp)
{
    fputs("usage: p11ticket [global options] init-token --so-pin-source SRC "
          "[--label LABEL]\n"
          "\n"
          "Initialise a free slot of the configured PKCS#11 module "
          "(pkcs11-module) as a\n"
          "new token for development and tests, e.g. with SoftHSM: set its "
          "label and\n"
          "security-officer PIN, then set the user PIN from the section's "
          "pin-source.\n"
          "This erases nothing: it only uses a slot whose token is not "
          "initialised, and\n"
          "refuses if a token with the label exists already.  Production "
          "tokens are\n"
          "initialised with their vendor's tools.\n"
          "\n"
          "Options:\n"
          "      --label LABEL        token label, at most 32 bytes (default: "
          "the token=\n"
          "                           attribute of the section's token-uri)\n"
          "  -S, --so-pin-source SRC  where to read the new SO PIN: "
          "file:PATH, env:VAR\n"
          "                           or prompt (asks twice on /dev/tty)\n"
          "  -h, --help               show this help\n"
          "\n"
          "A user pin-source of 'prompt' also asks twice for the new user "
          "PIN.\n",
          fp);
}

typedef struct init_ctx {
    p11t_tool *t;
    const char *module_path;
    CK_FUNCTION_LIST *f;
    P11KitUri *uri;
    CK_UTF8CHAR label[LABEL_LEN];
    CK_SLOT_ID slot;
    CK_ULONG min_pin, max_pin; /* of the free slot's token */
} init_ctx;

static int p11_fail(const char *call, CK_RV rv)
{
    p11t_tool_error("init-token: %s failed: %s", call, p11t_rv_name(rv));
    return rv == CKR_PIN_LEN_RANGE || rv == CKR_PIN_INVALID ? P11T_TOOL_USAGE
                                                            : P11T_TOOL_FAIL;
}

/* Label from --label, or from token-uri's token= attribute. */
static int pick_label(init_ctx *c, const char *opt_label)
{
    const char *uri_s = p11t_tool_conf_value(c->t, "token-uri");
    CK_TOKEN_INFO *ti = NULL;
    size_t len;

    c->uri = p11_kit_uri_new();
    if (c->uri == NULL) {
        p11t_tool_error("out of memory");
        return P11T_TOOL_FAIL;
    }
    if (uri_s != NULL && p11_kit_uri_parse(uri_s, P11_KIT_URI_FOR_TOKEN,
                                           c->uri) == P11_KIT_URI_OK)
        ti = p11_kit_uri_get_token_info(c->uri);

    if (opt_label != NULL) {
        len = strlen(opt_label);
        if (len == 0 || len > LABEL_LEN) {
            p11t_tool_error("init-token: --label must be 1 to %d bytes",
                            LABEL_LEN);
            return P11T_TOOL_USAGE;
        }
        memset(c->label, ' ', LABEL_LEN);
        memcpy(c->label, opt_label, len);
        return P11T_TOOL_OK;
    }
    /* p11-kit leaves unset URI fields zeroed, and blank-pads set ones. */
    if (ti == NULL || ti->label[0] == 0) {
        p11t_tool_error("init-token: no --label given and %s: [%s] token-uri "
                        "has no token= attribute",
                        c->t->config_file, c->t->file.section);
        return P11T_TOOL_USAGE;
    }
    memcpy(c->label, ti->label, LABEL_LEN);
    return P11T_TOOL_OK;
}

static void label_str(const CK_UTF8CHAR label[static LABEL_LEN],
                      char out[static LABEL_LEN + 1])
{
    int n = LABEL_LEN;

    memcpy(out, label, LABEL_LEN);
    while (n > 0 && out[n - 1] == ' ')
        n--;
    out[n] = '\0';
}

static int load_module(init_ctx *c)
{
    CK_C_GetFunctionList get_list;
    CK_C_INITIALIZE_ARGS args;
    void *dl;
    CK_RV rv;

    c->module_path = p11t_tool_conf_value(c->t, "pkcs11-module");
    if (c->module_path == NULL || *c->module_path == '\0') {
        p11t_tool_error("%s: [%s] pkcs11-module is not set", c->t->config_file,
                        c->t->file.section);
        return P11T_TOOL_USAGE;
    }
    /* Deliberately never dlclose()d nor C_Finalize()d (docs/design.md,
     * "Never C_Finalize at exit"). */
    dl = dlopen(c->module_path, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        p11t_tool_error("%s: [%s] pkcs11-module: cannot load %s: %s",
                        c->t->config_file, c->t->file.section, c->module_path,
                        dlerror());
        return P11T_TOOL_USAGE;
    }
    get_list = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
    if (get_list == NULL) {
        p11t_tool_error("%s: [%s] pkcs11-module: %s is not a PKCS#11 "
                        "module (no C_GetFunctionList)",
                        c->t->config_file, c->t->file.section, c->module_path);
        return P11T_TOOL_USAGE;
    }
    rv = get_list(&c->f);
    if (rv != CKR_OK)
        return p11_fail("C_GetFunctionList", rv);

    memset(&args, 0, sizeof(args));
    args.flags = CKF_OS_LOCKING_OK;
    rv = c->f->C_Initialize(&args);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
        return p11_fail("C_Initialize", rv);
    return P11T_TOOL_OK;
}

/* Refuse a duplicate label, and choose the first free slot. */
static int find_free_slot(init_ctx *c)
{
    CK_SLOT_ID *slots = NULL;
    CK_ULONG n = 0, i;
    int found = 0, rc = P11T_TOOL_OK;
    char lbl[LABEL_LEN + 1];
    CK_RV rv;

    rv = c->f->C_GetSlotList(CK_FALSE, NULL, &n);
    if (rv != CKR_OK)
        return p11_fail("C_GetSlotList", rv);
    slots = calloc(n ? n : 1, sizeof(*slots));
    if (slots == NULL) {
        p11t_tool_error("out of memory");
        return P11T_TOOL_FAIL;
    }
    rv = c->f->C_GetSlotList(CK_FALSE, slots, &n);
    if (rv != CKR_OK) {
        free(slots);
        return p11_fail("C_GetSlotList", rv);
    }

    label_str(c->label, lbl);
    for (i = 0; i < n && rc == P11T_TOOL_OK; i++) {
        CK_TOKEN_INFO ti;

        rv = c->f->C_GetTokenInfo(slots[i], &ti);
        if (rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_TOKEN_NOT_RECOGNIZED)
            continue;
        if (rv != CKR_OK) {
            rc = p11_fail("C_GetTokenInfo", rv);
            break;
        }
        if (!(ti.flags & CKF_TOKEN_INITIALIZED)) {
            if (!found) {
                c->slot = slots[i];
                c->min_pin = ti.ulMinPinLen;
                c->max_pin = ti.ulMaxPinLen;
                found = 1;
            }
            continue;
        }
        if (memcmp(ti.label, c->label, LABEL_LEN) == 0) {
            p11t_tool_error("init-token: a token labelled '%s' exists "
                            "already (slot %lu); refusing to create a "
                            "second one",
                            lbl, (unsigned long)slots[i]);
            rc = P11T_TOOL_FAIL;
        }
    }
    free(slots);
    if (rc == P11T_TOOL_OK && !found) {
        p11t_tool_error("init-token: %s has no slot with an uninitialised "
                        "token",
                        c->module_path);
        rc = P11T_TOOL_FAIL;
    }
    return rc;
}

/*
 * Check the PIN lengths against the token's limits before C_InitToken:
 * a user PIN rejected by C_InitPIN afterwards would leave an initialised
 * token that nobody can log in to.
 */
static int check_pin_len(const init_ctx *c, const p11t_tool_pin *pin,
                         const char *what)
{
    if (c->min_pin == 0 && c->max_pin == 0)
        return P11T_TOOL_OK; /* limits not reported */
    if (pin->len < c->min_pin || pin->len > c->max_pin) {
        p11t_tool_error("init-token: the token wants a %s of %lu to %lu "
                        "characters; the one given has %zu",
                        what, (unsigned long)c->min_pin,
                        (unsigned long)c->max_pin, pin->len);
        return P11T_TOOL_USAGE;
    }
    return P11T_TOOL_OK;
}

static int init_token(init_ctx *c, const p11t_tool_pin *so,
                      const p11t_tool_pin *user)
{
    CK_SESSION_HANDLE s;
    CK_RV rv;
    int rc;

    if ((rc = check_pin_len(c, so, "SO PIN")) != P11T_TOOL_OK ||
        (rc = check_pin_len(c, user, "user PIN")) != P11T_TOOL_OK)
        return rc;

    rv = c->f->C_InitToken(c->slot, (CK_UTF8CHAR *)so->buf, so->len, c->label);
    if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LEN_RANGE ||
        rv == CKR_PIN_INVALID) {
        /* SoftHSM reports a bad new SO PIN length as CKR_PIN_INCORRECT. */
        p11t_tool_error("init-token: C_InitToken rejected the SO PIN (%s)",
                        p11t_rv_name(rv));
        return P11T_TOOL_USAGE;
    }
    if (rv != CKR_OK)
        return p11_fail("C_InitToken", rv);

    /* The slot id stays valid in this process until C_Finalize. */
    rv = c->f->C_OpenSession(c->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
                             NULL, &s);
    if (rv == CKR_OK) {
        rv = c->f->C_Login(s, CKU_SO, (CK_UTF8CHAR *)so->buf, so->len);
        if (rv == CKR_OK) {
            rv = c->f->C_InitPIN(s, (CK_UTF8CHAR *)user->buf, user->len);
            rc = rv == CKR_OK ? P11T_TOOL_OK : p11_fail("C_InitPIN", rv);
            c->f->C_Logout(s);
        } else {
            rc = p11_fail("C_Login (security officer)", rv);
        }
        c->f->C_CloseSession(s);
    } else {
        rc = p11_fail("C_OpenSession", rv);
    }
    if (rc != P11T_TOOL_OK) {
        char lbl[LABEL_LEN + 1];

        label_str(c->label, lbl);
        p11t_tool_error("init-token: token '%s' is initialised but has no "
                        "user PIN; delete it (softhsm2-util --delete-token "
                        "--token '%s') and try again",
                        lbl, lbl);
    }
    return rc;
}

static void report_done(init_ctx *c)
{
    CK_TOKEN_INFO ti;
    char lbl[LABEL_LEN + 1], serial[sizeof(ti.serialNumber) + 1];
    int n = (int)sizeof(ti.serialNumber);

    label_str(c->label, lbl);
    if (c->f->C_GetTokenInfo(c->slot, &ti) != CKR_OK) {
        printf("initialised token '%s'\n", lbl);
        return;
    }
    memcpy(serial, ti.serialNumber, sizeof(ti.serialNumber));
    while (n > 0 && serial[n - 1] == ' ')
        n--;
    serial[n] = '\0';
    printf("initialised token '%s' (serial %s)\n", lbl, serial);
    if (!p11_kit_uri_match_token_info(c->uri, &ti))
        p11t_tool_warn("%s: [%s] token-uri does not match the new token; "
                       "the servers will not find it",
                       c->t->config_file, c->t->file.section);
}

static int run(p11t_tool *t, int argc, char **argv)
{
    static const struct option opts[] = {
        {"label", required_argument, NULL, OPT_LABEL},
        {"so-pin-source", required_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *opt_label = NULL, *so_source = NULL;
    p11t_tool_pin so, user;
    char origin[512];
    init_ctx c;
    int ch, rc;

    p11t_tool_getopt_reset(&p11t_tool_cmd_init_token, argv);
    while ((ch = p11t_tool_getopt(t, &p11t_tool_cmd_init_token, argc, argv,
                                  "S:h", opts)) != -1) {
        switch (ch) {
        case OPT_LABEL:
            opt_label = optarg;
            break;
        case 'S':
            so_source = optarg;
            break;
        default:
            return p11t_tool_help_or_bad(&p11t_tool_cmd_init_token, ch);
        }
    }
    if (optind < argc)
        return p11t_tool_unexpected(&p11t_tool_cmd_init_token, argv[optind]);
    if (so_source == NULL || (strncmp(so_source, "file:/", 6) != 0 &&
                              strncmp(so_source, "env:", 4) != 0 &&
                              strcmp(so_source, "prompt") != 0)) {
        p11t_tool_error("init-token: --so-pin-source %s file:/PATH, "
                        "env:VARIABLE or prompt",
                        so_source == NULL ? "is required:" : "must be");
        return p11t_tool_bad_usage(&p11t_tool_cmd_init_token);
    }

    if ((rc = p11t_tool_load_config(t)) != P11T_TOOL_OK)
        return rc;

    memset(&c, 0, sizeof(c));
    memset(&so, 0, sizeof(so));
    memset(&user, 0, sizeof(user));
    c.t = t;
    if ((rc = pick_label(&c, opt_label)) != P11T_TOOL_OK)
        goto done;
    /* Read both PINs before touching the token, so a typo changes nothing. */
    snprintf(origin, sizeof(origin), "%s: [%s] pin-source", t->config_file,
             t->file.section);
    rc = p11t_tool_pin_get(so_source, "SO PIN", "init-token: --so-pin-source",
                           1, &so);
    if (rc != P11T_TOOL_OK)
        goto done;
    rc = p11t_tool_pin_get(p11t_tool_conf_value(t, "pin-source"), "user PIN",
                           origin, 1, &user);
    if (rc != P11T_TOOL_OK)
        goto done;
    if ((rc = load_module(&c)) != P11T_TOOL_OK)
        goto done;
    if ((rc = find_free_slot(&c)) != P11T_TOOL_OK)
        goto done;
    if ((rc = init_token(&c, &so, &user)) != P11T_TOOL_OK)
        goto done;
    report_done(&c);

done:
    p11t_tool_pin_release(&so);
    p11t_tool_pin_release(&user);
    if (c.uri != NULL)
        p11_kit_uri_free(c.uri);
    return rc;
}

const p11t_tool_cmd p11t_tool_cmd_init_token = {
    .name = "init-token",
    .summary = "initialise a development token (SoftHSM) with its PINs",
    .run = run,
    .usage = usage,
};
