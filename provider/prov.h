/* SPDX-License-Identifier: Apache-2.0 */
/*
 * prov.h - private to provider/: the provider context and the single place
 * where hsm/ errors become OpenSSL errors.
 */
#ifndef P11T_PROV_H
#define P11T_PROV_H

#include <pthread.h>

#include <openssl/core.h>
#include <openssl/evp.h>

#include "hsm.h"
#include "p11ticket.h" /* the reason codes, P11TICKET_R_* */

typedef struct p11t_provctx {
    const OSSL_CORE_HANDLE *handle;
    OSSL_LIB_CTX *libctx; /* child of the loading libctx */
    p11t_hsm *hsm;
    pthread_mutex_t lock;
    EVP_MAC *inner_hmac; /* fetched lazily; see p11t_prov_inner_hmac() */
} p11t_provctx;

/*
 * Raise an OpenSSL error with a P11TICKET_R_* reason and a printf message.
 * Macros, as pkcs11-provider's P11PROV_raise, so that ERR_get_error_all()
 * reports the file, line and function that raised it, not this helper's.
 */
#define p11t_prov_raise(pc, reason, ...)                                       \
    p11t_prov_raise_at((pc), OPENSSL_FILE, OPENSSL_LINE, OPENSSL_FUNC,         \
                       (reason), __VA_ARGS__)
/* Converts an hsm/ error (CK_RV + message) into an OpenSSL error. */
#define p11t_prov_raise_hsm(pc, e)                                             \
    p11t_prov_raise_hsm_at((pc), OPENSSL_FILE, OPENSSL_LINE, OPENSSL_FUNC, (e))

void p11t_prov_raise_at(p11t_provctx *pc, const char *file, int line,
                        const char *func, int reason, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
void p11t_prov_raise_hsm_at(p11t_provctx *pc, const char *file, int line,
                            const char *func, const p11t_err *e);
/*
 * Reads P11TICKET_PARAM_KEY_NAME from params if present: returns 1 and sets
 * *found (copying the name), or 0 with an error raised if it is not a
 * 16-byte octet string.  Shared by the MAC and the cipher.
 */
int p11t_prov_key_name_param(p11t_provctx *pc, const OSSL_PARAM params[],
                             uint8_t name[P11T_NAME_LEN], int *found);
/* The HMAC the raw-key proxy forwards to: any provider's but ours. */
EVP_MAC *p11t_prov_inner_hmac(p11t_provctx *pc);

/*
 * auto-enable (prov_auto.c): when the provider was loaded into the default
 * library context of a process that has libssl mapped and wanted (the
 * section's auto-enable) is set, hands over to libp11ticket's p11ticket_enable_all(),
 * once per process.  Returns 1 if the hand-over happened (now or before).
 * p11t_prov_auto_problem() copies why it failed, returning 0 if it did not.
 */
int p11t_prov_auto_enable(OSSL_LIB_CTX *loaded_in, int wanted);
int p11t_prov_auto_problem(char *buf, size_t len);

extern const OSSL_DISPATCH p11t_prov_hmac_functions[];
extern const OSSL_DISPATCH p11t_prov_cipher_functions[];

#endif
