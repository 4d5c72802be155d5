/* SPDX-License-Identifier: Apache-2.0 */
/*
 * provision.c - creating, listing and destroying key generations (the
 * setup tool's side of hsm/).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "internal.h"

/*
 * One secret-key object of a generation, generated (value == NULL: len is
 * CKA_VALUE_LEN) or imported (value of len bytes).  Non-extractable and
 * sensitive from birth; SoftHSM will not loosen either flag later
 * (docs/design.md, "Key generations").  Each key does one job only; the
 * label stays modifiable because it carries the lifecycle times.
 */
static CK_RV make_key(p11t_hsm *h, CK_SESSION_HANDLE s, p11t_role role,
                      const uint8_t *value, CK_ULONG len, const uint8_t *id,
                      const char *label, CK_OBJECT_HANDLE *out)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = role == P11T_ROLE_AES ? CKK_AES : CKK_GENERIC_SECRET;
    CK_BBOOL t = CK_TRUE, f = CK_FALSE;
    CK_BBOOL is_aes = role == P11T_ROLE_AES ? CK_TRUE : CK_FALSE;
    CK_BBOOL is_mac = role == P11T_ROLE_HMAC ? CK_TRUE : CK_FALSE;
    CK_MECHANISM mech = {role == P11T_ROLE_AES ? CKM_AES_KEY_GEN
                                               : CKM_GENERIC_SECRET_KEY_GEN,
                         NULL, 0};
    CK_ATTRIBUTE tmpl[] = {
        value != NULL ? (CK_ATTRIBUTE){CKA_VALUE, (void *)value, len}
                      : (CK_ATTRIBUTE){CKA_VALUE_LEN, &len, sizeof(len)},
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_KEY_TYPE, &kt, sizeof(kt)},
        {CKA_TOKEN, &t, sizeof(t)},
        {CKA_PRIVATE, &t, sizeof(t)},
        {CKA_SENSITIVE, &t, sizeof(t)},
        {CKA_EXTRACTABLE, &f, sizeof(f)},
        {CKA_MODIFIABLE, &t, sizeof(t)},
        {CKA_ENCRYPT, &is_aes, sizeof(is_aes)},
        {CKA_DECRYPT, &is_aes, sizeof(is_aes)},
        {CKA_SIGN, &is_mac, sizeof(is_mac)},
        {CKA_VERIFY, &is_mac, sizeof(is_mac)},
        {CKA_WRAP, &f, sizeof(f)},
        {CKA_UNWRAP, &f, sizeof(f)},
        {CKA_DERIVE, &f, sizeof(f)},
        {CKA_ID, (void *)id, P11T_NAME_LEN},
        {CKA_LABEL, (void *)label, (CK_ULONG)strlen(label)},
    };
    CK_ULONG n = sizeof(tmpl) / sizeof(*tmpl);

    if (value != NULL)
        return P11T_CALL(h, C_CreateObject, s, tmpl, n, out);
    return P11T_CALL(h, C_GenerateKey, s, &mech, tmpl, n, out);
}

/* Logged in, with a session from the pool. */
static CK_RV ready_session(p11t_hsm *h, CK_SESSION_HANDLE *s, unsigned *ep,
                           p11t_err *err)
{
    CK_RV rv = p11t_hsm_ready(h, err);

    return rv == CKR_OK ? p11t_session_get(h, s, ep, err) : rv;
}

/* The CKA_LABELs of a generation's two objects (128 bytes each). */
static int format_labels(const p11t_times *times, char aes_label[128],
                         char mac_label[128], p11t_err *err)
{
    if (p11t_label_format(aes_label, 128, P11T_ROLE_AES, times) < 0 ||
        p11t_label_format(mac_label, 128, P11T_ROLE_HMAC, times) < 0) {
        p11t_err_set(err, CKR_ARGUMENTS_BAD, "invalid key times");
        return 0;
    }
    return 1;
}

CK_RV p11t_gen_create(p11t_hsm *h, CK_SESSION_HANDLE s, CK_ULONG aes_len,
                      const p11t_times *times, uint8_t name[P11T_NAME_LEN],
                      p11t_err *err)
{
    CK_OBJECT_HANDLE aes, mac;
    char aes_label[128], mac_label[128];
    CK_RV rv;

    if (aes_len != 16 && aes_len != 32) {
        p11t_err_set(err, CKR_ARGUMENTS_BAD, "AES key length must be 16 or 32");
        return CKR_ARGUMENTS_BAD;
    }
    if (!format_labels(times, aes_label, mac_label, err))
        return CKR_ARGUMENTS_BAD;
    /* The name comes from the token's RNG, like the keys themselves. */
    rv = P11T_CALL(h, C_GenerateRandom, s, name, P11T_NAME_LEN);
    if (rv != CKR_OK) {
        p11t_err_set(err, rv, "C_GenerateRandom failed: %s", p11t_rv_name(rv));
        return rv;
    }
    rv = make_key(h, s, P11T_ROLE_AES, NULL, aes_len, name, aes_label, &aes);
    if (rv != CKR_OK) {
        p11t_err_set(err, rv, "generating the AES key failed: %s",
                     p11t_rv_name(rv));
        return rv;
    }
    rv = make_key(h, s, P11T_ROLE_HMAC, NULL, P11T_HMAC_LEN, name, mac_label,
                  &mac);
    if (rv != CKR_OK) {
        p11t_err_set(err, rv, "generating the HMAC key failed: %s",
                     p11t_rv_name(rv));
        P11T_CALL(h, C_DestroyObject, s, aes); /* nothing half-made stays behind */
    }
    return rv;
}

CK_RV p11t_hsm_create(p11t_hsm *h, CK_ULONG aes_len, const p11t_times *times,
                      uint8_t name_out[static P11T_NAME_LEN], p11t_err *err)
{
    CK_SESSION_HANDLE s;
    unsigned ep;
    CK_RV rv;

    rv = ready_session(h, &s, &ep, err);
    if (rv != CKR_OK)
        return rv;
    rv = p11t_gen_create(h, s, aes_len, times, name_out, err);
    p11t_session_put(h, s, ep, p11t_rv_is_token_lost(rv));
    if (rv == CKR_OK)
        (void)p11t_cache_refresh(h, &(p11t_err){0});
    return rv;
}

CK_RV p11t_hsm_list(p11t_hsm *h, p11t_objinfo **objs, size_t *n, p11t_err *err)
{
    CK_SESSION_HANDLE s;
    unsigned ep;
    CK_RV rv;

    *objs = NULL;
    *n = 0;
    rv = ready_session(h, &s, &ep, err);
    if (rv != CKR_OK)
        return rv;
    rv = p11t_scan_objects(h, s, 1, objs, n, err);
    p11t_session_put(h, s, ep, p11t_rv_is_token_lost(rv));
    return rv;
}

/* Applies op to every object of generation `name`, then refreshes the
 * cache; P11T_CKR_UNKNOWN_KEY if op succeeded on none of them.  With
 * skip_vanished, an object destroyed meanwhile by someone else is skipped
 * rather than an error. */
typedef CK_RV (*object_op)(p11t_hsm *h, CK_SESSION_HANDLE s,
                           const p11t_objinfo *o, const void *arg,
                           p11t_err *err);

static CK_RV for_generation(p11t_hsm *h, const uint8_t name[P11T_NAME_LEN],
                            object_op op, const void *arg, int skip_vanished,
                            p11t_err *err)
{
    p11t_objinfo *objs;
    CK_SESSION_HANDLE s;
    size_t n, done = 0;
    unsigned ep;
    CK_RV rv;

    rv = ready_session(h, &s, &ep, err);
    if (rv != CKR_OK)
        return rv;
    rv = p11t_scan_objects(h, s, 0, &objs, &n, err);
    for (size_t i = 0; rv == CKR_OK && i < n; i++) {
        if (memcmp(objs[i].name, name, P11T_NAME_LEN) != 0)
            continue;
        rv = op(h, s, &objs[i], arg, err);
        if (rv == CKR_OK)
            done++;
        else if (skip_vanished && rv == CKR_OBJECT_HANDLE_INVALID)
            rv = CKR_OK;
    }
    free(objs);
    p11t_session_put(h, s, ep, p11t_rv_is_token_lost(rv));
    if (rv == CKR_OK && done == 0) {
        char hex[33];

        p11t_hex(name, hex);
        p11t_err_set(err, P11T_CKR_UNKNOWN_KEY, "no key named %s", hex);
        return P11T_CKR_UNKNOWN_KEY;
    }
    if (rv == CKR_OK)
        (void)p11t_cache_refresh(h, &(p11t_err){0});
    return rv;
}

static CK_RV destroy_op(p11t_hsm *h, CK_SESSION_HANDLE s, const p11t_objinfo *o,
                        const void *arg, p11t_err *err)
{
    CK_RV rv = P11T_CALL(h, C_DestroyObject, s, o->handle);

    if (rv != CKR_OK && rv != CKR_OBJECT_HANDLE_INVALID)
        p11t_err_set(err, rv, "C_DestroyObject failed: %s", p11t_rv_name(rv));
    return rv;
}

CK_RV p11t_hsm_destroy(p11t_hsm *h, const uint8_t name[static P11T_NAME_LEN],
                       p11t_err *err)
{
    return for_generation(h, name, destroy_op, NULL, 1, err);
}

static CK_RV relabel_op(p11t_hsm *h, CK_SESSION_HANDLE s, const p11t_objinfo *o,
                        const void *arg, p11t_err *err)
{
    char label[128];
    CK_ATTRIBUTE a = {CKA_LABEL, label, 0};
    int len = p11t_label_format(label, sizeof(label), o->role, arg);
    CK_RV rv;

    if (len < 0) {
        p11t_err_set(err, CKR_ARGUMENTS_BAD, "invalid key times");
        return CKR_ARGUMENTS_BAD;
    }
    a.ulValueLen = (CK_ULONG)len;
    rv = P11T_CALL(h, C_SetAttributeValue, s, o->handle, &a, 1);
    if (rv != CKR_OK)
        p11t_err_set(err, rv, "C_SetAttributeValue(CKA_LABEL) failed: %s",
                     p11t_rv_name(rv));
    return rv;
}

CK_RV p11t_hsm_set_times(p11t_hsm *h, const uint8_t name[static P11T_NAME_LEN],
                         const p11t_times *times, p11t_err *err)
{
    return for_generation(h, name, relabel_op, times, 0, err);
}

CK_RV p11t_hsm_import(p11t_hsm *h, const uint8_t name[static P11T_NAME_LEN],
                      const uint8_t *aes, size_t aes_len, const uint8_t *hmac,
                      size_t hmac_len, const p11t_times *times, p11t_err *err)
{
    char aes_label[128], mac_label[128];
    uint8_t mac_buf[64];
    size_t mac_len = hmac_len < 32 ? 32 : hmac_len;
    CK_OBJECT_HANDLE ao, mo;
    CK_SESSION_HANDLE s;
    unsigned ep;
    CK_RV rv;

    if ((aes_len != 16 && aes_len != 32) || hmac_len < 16 || hmac_len > 64) {
        p11t_err_set(err, CKR_ARGUMENTS_BAD,
                     "import: AES key must be 16 or 32 bytes, HMAC key 16-64");
        return CKR_ARGUMENTS_BAD;
    }
    if (!format_labels(times, aes_label, mac_label, err))
        return CKR_ARGUMENTS_BAD;
    rv = ready_session(h, &s, &ep, err);
    if (rv != CKR_OK)
        return rv;
    {
        p11t_objinfo *objs;
        size_t n, dup = 0;

        rv = p11t_scan_objects(h, s, 0, &objs, &n, err);
        for (size_t i = 0; rv == CKR_OK && i < n; i++)
            dup |= memcmp(objs[i].name, name, P11T_NAME_LEN) == 0;
        free(objs);
        if (rv == CKR_OK && dup) {
            char hex[33];

            p11t_hex(name, hex);
            rv = CKR_ARGUMENTS_BAD;
            p11t_err_set(err, rv, "a key named %s is already on the token",
                         hex);
        }
        if (rv != CKR_OK) {
            p11t_session_put(h, s, ep, p11t_rv_is_token_lost(rv));
            return rv;
        }
    }
    memset(mac_buf, 0, sizeof(mac_buf));
    memcpy(mac_buf, hmac, hmac_len);
    rv = make_key(h, s, P11T_ROLE_AES, aes, (CK_ULONG)aes_len, name,
                    aes_label, &ao);
    if (rv != CKR_OK) {
        p11t_err_set(err, rv, "storing the AES key failed: %s",
                     p11t_rv_name(rv));
    } else {
        rv = make_key(h, s, P11T_ROLE_HMAC, mac_buf, (CK_ULONG)mac_len, name,
                        mac_label, &mo);
        if (rv != CKR_OK) {
            p11t_err_set(err, rv, "storing the HMAC key failed: %s",
                         p11t_rv_name(rv));
            P11T_CALL(h, C_DestroyObject, s, ao);
        }
    }
    OPENSSL_cleanse(mac_buf, sizeof(mac_buf));
    p11t_session_put(h, s, ep, p11t_rv_is_token_lost(rv));
    if (rv == CKR_OK)
        (void)p11t_cache_refresh(h, &(p11t_err){0});
    return rv;
}
