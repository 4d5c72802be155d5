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

/* Reason codes (see prov.c for the strings). */
#define P11T_R_TOKEN 1
#define P11T_R_UNKNOWN_KEY 2
#define P11T_R_CONFIG 3
#define P11T_R_NO_ACTIVE_KEY 4
#define P11T_R_KEY_EXPIRED 5
#define P11T_R_BAD_PARAM 6
#define P11T_R_UNSUPPORTED 7
#define P11T_R_NO_DEFAULT_HMAC 8

typedef struct p11t_provctx {
    const OSSL_CORE_HANDLE *handle;
    OSSL_LIB_CTX *libctx; /* child of the loading libctx */
    p11t_hsm *hsm;
    pthread_mutex_t lock;
    EVP_MAC *default_hmac; /* fetched lazily, "provider=default" */
} p11t_provctx;

void p11t_prov_raise(p11t_provctx *pc, int reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Converts an hsm/ error (CK_RV + message) into an OpenSSL error. */
void p11t_prov_raise_hsm(p11t_provctx *pc, const p11t_err *e);
/*
 * Reads P11TICKET_PARAM_KEY_NAME from params if present: returns 1 and sets
 * *found (copying the name), or 0 with an error raised if it is not a
 * 16-byte octet string.  Shared by the MAC and the cipher.
 */
int p11t_prov_key_name_param(p11t_provctx *pc, const OSSL_PARAM params[],
                             uint8_t name[P11T_NAME_LEN], int *found);
/* The default provider's HMAC, for the raw-key proxy. */
EVP_MAC *p11t_prov_default_hmac(p11t_provctx *pc);

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
