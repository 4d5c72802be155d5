/* SPDX-License-Identifier: Apache-2.0 */
/*
 * slots.c - the slots and tokens the configured module offers, and which of
 * them token-uri selects, for the setup tool's `tokens`: an operator whose
 * token-uri finds no token, or several, sees why and what to write instead.
 *
 * No session is opened and nobody logs in, so no PIN is ever read.  The
 * module is loaded and initialised like module.c does it, but outside its
 * registry (module.c keeps that private): the same path dlopen()s to the
 * same library, and a p11t_hsm that later initialises it in this process
 * gets CKR_CRYPTOKI_ALREADY_INITIALIZED and shares it (module.c's
 * "adopted"), which is harmless in a process that only inspects.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* What P11T_CALL needs: the function list behind a pointer. */
typedef struct slots_module {
    CK_FUNCTION_LIST_PTR f;
} slots_module;

/* Never dlclose()d nor C_Finalize()d (docs/design.md, "Never C_Finalize at
 * exit"); messages as module.c's load_module() words them. */
static CK_RV load(const p11t_config *cfg, slots_module *m, p11t_err *err)
{
    CK_C_GetFunctionList getfl;
    CK_C_INITIALIZE_ARGS args = {0};
    void *dl;
    CK_RV rv;

    dl = dlopen(cfg->module_path, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        const char *why = dlerror();

        p11t_err_set(err, P11T_CKR_CONFIG,
                     "pkcs11-module: cannot load %.200s: %.200s",
                     cfg->module_path, why ? why : "unknown error");
        return P11T_CKR_CONFIG;
    }
    getfl = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
    if (getfl == NULL) {
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "pkcs11-module: %.200s is not a PKCS#11 module "
                     "(no C_GetFunctionList)",
                     cfg->module_path);
        return P11T_CKR_CONFIG;
    }
    rv = getfl(&m->f);
    if (rv != CKR_OK || m->f == NULL) {
        p11t_err_set(err, rv, "pkcs11-module: C_GetFunctionList failed: %s",
                     p11t_rv_name(rv));
        return rv == CKR_OK ? CKR_GENERAL_ERROR : rv;
    }
    args.flags = CKF_OS_LOCKING_OK;
    p11t_gate_exclusive(1);
    rv = m->f->C_Initialize(&args);
    p11t_gate_exclusive(0);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        p11t_err_set(err, rv, "pkcs11-module: C_Initialize failed: %s",
                     p11t_rv_name(rv));
        return rv;
    }
    return CKR_OK;
}

/*
 * The rules of the login's slot search (module.c, find_slot_once): an
 * initialised token whose token and slot information match the URI, in the
 * URI's slot-id if it names one (p11_kit_uri_match_slot_info ignores it).
 */
static int uri_selects(const p11t_config *cfg, const p11t_slotinfo *s)
{
    CK_SLOT_ID want = p11_kit_uri_get_slot_id(cfg->uri);

    return s->token_rv == CKR_OK && (s->token.flags & CKF_TOKEN_INITIALIZED) &&
           p11_kit_uri_match_token_info(cfg->uri, &s->token) == 1 &&
           p11_kit_uri_match_slot_info(cfg->uri, &s->slot) == 1 &&
           (want == (CK_SLOT_ID)-1 || want == s->id);
}

static CK_RV slot_list(slots_module *m, CK_SLOT_ID **ids, CK_ULONG *n,
                       p11t_err *err)
{
    CK_RV rv;

    *ids = NULL;
    for (;;) {
        CK_SLOT_ID *p;

        rv = P11T_CALL(m, C_GetSlotList, CK_FALSE, NULL, n);
        if (rv != CKR_OK || *n == 0)
            break;
        p = realloc(*ids, *n * sizeof(*p));
        if (p == NULL) {
            rv = CKR_HOST_MEMORY;
            break;
        }
        *ids = p;
        rv = P11T_CALL(m, C_GetSlotList, CK_FALSE, *ids, n);
        if (rv != CKR_BUFFER_TOO_SMALL) /* a slot appeared meanwhile */
            break;
    }
    if (rv != CKR_OK) {
        free(*ids);
        *ids = NULL;
        *n = 0;
        p11t_err_set(err, rv, "pkcs11-module: C_GetSlotList failed: %s",
                     p11t_rv_name(rv));
    }
    return rv;
}

CK_RV p11t_hsm_slots(p11t_hsm *h, p11t_slotinfo **out, size_t *n_out,
                     p11t_err *err)
{
    const p11t_config *cfg = h->cfg;
    slots_module m = {NULL};
    CK_SLOT_ID *ids = NULL;
    CK_ULONG n = 0;
    p11t_slotinfo *s;
    CK_RV rv;

    *out = NULL;
    *n_out = 0;
    if (cfg->err.rv != CKR_OK) {
        p11t_err_set(err, cfg->err.rv, "%s", cfg->err.msg);
        return cfg->err.rv;
    }
    if ((rv = load(cfg, &m, err)) != CKR_OK ||
        (rv = slot_list(&m, &ids, &n, err)) != CKR_OK)
        return rv;
    s = calloc(n ? n : 1, sizeof(*s));
    if (s == NULL) {
        free(ids);
        p11t_err_set(err, CKR_HOST_MEMORY, "out of memory");
        return CKR_HOST_MEMORY;
    }
    for (CK_ULONG i = 0; i < n; i++) {
        s[i].id = ids[i];
        /* A slot that cannot describe itself is still listed, empty. */
        if (P11T_CALL(&m, C_GetSlotInfo, ids[i], &s[i].slot) != CKR_OK)
            memset(&s[i].slot, 0, sizeof(s[i].slot));
        s[i].token_rv = (s[i].slot.flags & CKF_TOKEN_PRESENT)
                            ? P11T_CALL(&m, C_GetTokenInfo, ids[i], &s[i].token)
                            : CKR_TOKEN_NOT_PRESENT;
        s[i].selected = uri_selects(cfg, &s[i]);
    }
    free(ids);
    *out = s;
    *n_out = n;
    return CKR_OK;
}
