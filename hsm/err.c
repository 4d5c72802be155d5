/* SPDX-License-Identifier: Apache-2.0 */
/*
 * err.c - error records and small helpers shared by the whole hsm/ layer.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "hsm.h"

void p11t_err_set(p11t_err *err, CK_RV rv, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || err->rv != CKR_OK)
        return; /* the first error is the cause; keep it */
    err->rv = rv == CKR_OK ? CKR_GENERAL_ERROR : rv;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}

void p11t_err_clear(p11t_err *err)
{
    if (err == NULL)
        return;
    err->rv = CKR_OK;
    err->msg[0] = '\0';
}

const char *p11t_rv_name(CK_RV rv)
{
    switch (rv) {
#define RV(x)                                                                  \
    case x:                                                                    \
        return #x
        RV(CKR_OK);
        RV(CKR_CANCEL);
        RV(CKR_HOST_MEMORY);
        RV(CKR_SLOT_ID_INVALID);
        RV(CKR_GENERAL_ERROR);
        RV(CKR_FUNCTION_FAILED);
        RV(CKR_ARGUMENTS_BAD);
        RV(CKR_ATTRIBUTE_SENSITIVE);
        RV(CKR_ATTRIBUTE_TYPE_INVALID);
        RV(CKR_ATTRIBUTE_VALUE_INVALID);
        RV(CKR_DATA_INVALID);
        RV(CKR_DATA_LEN_RANGE);
        RV(CKR_DEVICE_ERROR);
        RV(CKR_DEVICE_MEMORY);
        RV(CKR_DEVICE_REMOVED);
        RV(CKR_ENCRYPTED_DATA_INVALID);
        RV(CKR_ENCRYPTED_DATA_LEN_RANGE);
        RV(CKR_FUNCTION_NOT_SUPPORTED);
        RV(CKR_KEY_HANDLE_INVALID);
        RV(CKR_KEY_SIZE_RANGE);
        RV(CKR_KEY_TYPE_INCONSISTENT);
        RV(CKR_KEY_FUNCTION_NOT_PERMITTED);
        RV(CKR_MECHANISM_INVALID);
        RV(CKR_MECHANISM_PARAM_INVALID);
        RV(CKR_OBJECT_HANDLE_INVALID);
        RV(CKR_OPERATION_ACTIVE);
        RV(CKR_OPERATION_NOT_INITIALIZED);
        RV(CKR_PIN_INCORRECT);
        RV(CKR_PIN_INVALID);
        RV(CKR_PIN_LEN_RANGE);
        RV(CKR_PIN_EXPIRED);
        RV(CKR_PIN_LOCKED);
        RV(CKR_SESSION_CLOSED);
        RV(CKR_SESSION_COUNT);
        RV(CKR_SESSION_HANDLE_INVALID);
        RV(CKR_SESSION_READ_ONLY);
        RV(CKR_TEMPLATE_INCOMPLETE);
        RV(CKR_TEMPLATE_INCONSISTENT);
        RV(CKR_TOKEN_NOT_PRESENT);
        RV(CKR_TOKEN_NOT_RECOGNIZED);
        RV(CKR_TOKEN_WRITE_PROTECTED);
        RV(CKR_USER_ALREADY_LOGGED_IN);
        RV(CKR_USER_NOT_LOGGED_IN);
        RV(CKR_USER_PIN_NOT_INITIALIZED);
        RV(CKR_USER_TYPE_INVALID);
        RV(CKR_BUFFER_TOO_SMALL);
        RV(CKR_CRYPTOKI_NOT_INITIALIZED);
        RV(CKR_CRYPTOKI_ALREADY_INITIALIZED);
        RV(P11T_CKR_CONFIG);
        RV(P11T_CKR_NO_TOKEN);
        RV(P11T_CKR_UNKNOWN_KEY);
        RV(P11T_CKR_NO_ACTIVE_KEY);
        RV(P11T_CKR_BACKOFF);
#undef RV
    default:
        return "CKR_(unknown)";
    }
}

void p11t_hex(const uint8_t name[static P11T_NAME_LEN], char out[static 33])
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < P11T_NAME_LEN; i++) {
        out[2 * i] = digits[name[i] >> 4];
        out[2 * i + 1] = digits[name[i] & 0xf];
    }
    out[32] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int p11t_unhex(const char *hex, uint8_t name[static P11T_NAME_LEN])
{
    if (hex == NULL || strlen(hex) != 2 * P11T_NAME_LEN)
        return 0;
    for (size_t i = 0; i < P11T_NAME_LEN; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return 0;
        name[i] = (uint8_t)(hi << 4 | lo);
    }
    return 1;
}
