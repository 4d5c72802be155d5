/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11ticket.h - TLS session-ticket keys inside a PKCS#11 token.
 *
 * This header is the public C API of libp11ticket (the TLS integration
 * library) and the contract between that library and the p11ticket
 * OpenSSL provider: property strings, algorithm names and parameter names.
 *
 * Data flow of one ticket: libssl -> ticket callback installed by
 * p11ticket_enable() -> EVP cipher/MAC of the p11ticket provider ->
 * PKCS#11 token (C_Encrypt / C_Sign).  The key bytes never leave the token.
 */
#ifndef P11TICKET_H
#define P11TICKET_H

#include <openssl/ssl.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The project's version; CMake fills it in from project(VERSION) in the
 * build tree's and the installed copy of this header. */
#define P11TICKET_VERSION_STR "@PROJECT_VERSION@"

/*
 * Property attached to every algorithm the provider offers.  An SSL_CTX
 * created with P11TICKET_PROPQ (an optional query) fetches the provider's
 * "HMAC" and therefore lets libssl's ticket HMAC context reach the token:
 * libssl creates that context itself with EVP_MAC_fetch(libctx, "HMAC",
 * propq) (ssl/t1_lib.c ssl_hmac_new), so routing by property query is the
 * only way in.  OpenSSL only accepts user-defined property names that
 * contain a dot, hence "p11ticket.token".  P11TICKET_PROPQ may also be used as default_properties in
 * openssl.cnf for servers that call plain SSL_CTX_new().
 */
#define P11TICKET_PROPERTY "p11ticket.token=yes"
#define P11TICKET_PROPQ "?p11ticket.token=yes"

/*
 * Token cipher: AES-CBC with PKCS#7 padding (CKM_AES_CBC_PAD) on a named
 * token key.  Deliberately not a standard name, so that nothing else in the
 * process (SoftHSM's own OpenSSL use included) can route AES into us.
 * The whole message must be passed in ONE update call, as libssl does.
 */
#define P11TICKET_CIPHER_NAME "P11TICKET-AES-CBC"

/*
 * Parameters.
 *
 * P11TICKET_PARAM_KEY_NAME (octet string, exactly 16 bytes)
 *   MAC ctx, settable: selects the token HMAC key of that generation; the MAC
 *     then computes CKM_SHA256_HMAC in the token instead of proxying.
 *   Cipher ctx, settable at decrypt init: selects the token AES key.
 *   Cipher ctx, gettable after encrypt init: the name of the generation the
 *     provider chose for encryption (encrypt init without a name selects the
 *     current encrypting key).
 *
 * P11TICKET_PARAM_KEY_RENEW (int, cipher ctx, gettable after init)
 *   1 if the selected key is not the current encrypting key (a ticket under
 *   it should be renewed), else 0.
 *
 * P11TICKET_PARAM_ROUTED (int, MAC ctx, gettable)
 *   Always 1 on the provider's HMAC.  Other HMAC implementations leave it
 *   untouched, which is how libp11ticket tells whether libssl's ticket HMAC
 *   context really belongs to the provider.
 *
 * Provider-level (OSSL_PROVIDER_get_params), all gettable:
 * P11TICKET_PARAM_STATUS (UTF8 string): "ok", or a one-line error naming the
 *   configuration key at fault.  Asking for it triggers the lazy token
 *   initialisation if it has not happened yet.
 * P11TICKET_PARAM_CURRENT_KEY (UTF8 string): hex name of the current
 *   encrypting key, or "" when there is none.
 * P11TICKET_PARAM_TOKEN_ERRORS (uint64): token operations that failed since
 *   load (each one degraded to a full handshake).
 */
#define P11TICKET_PARAM_KEY_NAME "p11ticket-key-name"
#define P11TICKET_PARAM_KEY_RENEW "p11ticket-key-renew"
#define P11TICKET_PARAM_ROUTED "p11ticket-routed"
#define P11TICKET_PARAM_STATUS "p11ticket-status"
#define P11TICKET_PARAM_CURRENT_KEY "p11ticket-current-key"
#define P11TICKET_PARAM_TOKEN_ERRORS "p11ticket-token-errors"

/*
 * Reason codes of the errors the provider raises, for ERR_GET_REASON().
 *
 * A provider's errors carry a library number that OpenSSL allocates when it
 * loads the provider (core_vset_error() in crypto/provider_core.c), so it
 * is not a constant: it is at least ERR_LIB_USER, and ERR_lib_error_string()
 * gives the provider's name as loaded (OSSL_PROVIDER_get0_name(); the
 * openssl.cnf provider_sect key, "p11ticket" by convention).  Compare the
 * reason only after checking both, as libp11ticket does:
 *
 *   const char *lib = ERR_lib_error_string(e);
 *
 *   ERR_GET_LIB(e) >= ERR_LIB_USER && lib != NULL &&
 *   strcmp(lib, OSSL_PROVIDER_get0_name(prov)) == 0 &&
 *   ERR_GET_REASON(e) == P11TICKET_R_UNKNOWN_KEY
 *
 * P11TICKET_R_TOKEN          a PKCS#11 operation or the token itself failed
 *                            (transient: device error, token lost, ...).
 * P11TICKET_R_UNKNOWN_KEY    no key generation of that name in the token:
 *                            normal after rotation, or a ticket from
 *                            another deployment.
 * P11TICKET_R_CONFIG         the configuration cannot work: module, token
 *                            URI, PIN source, a wrong or locked PIN, a bad
 *                            openssl.cnf value.  The error data names the
 *                            openssl.cnf key at fault.
 * P11TICKET_R_NO_ACTIVE_KEY  encrypting without a name, and no generation
 *                            is active now.
 * P11TICKET_R_KEY_EXPIRED    the named generation may not be used for this
 *                            operation now (past its decrypt-until, or not
 *                            active when encrypting).
 * P11TICKET_R_BAD_PARAM      a parameter of the wrong type, length or value.
 * P11TICKET_R_UNSUPPORTED    the call is outside what the algorithm does
 *                            (raw cipher keys, padding off, two updates).
 * P11TICKET_R_NO_DEFAULT_HMAC  no HMAC from another provider to forward
 *                            raw-key HMAC to (the default provider is not
 *                            active).
 */
#define P11TICKET_R_TOKEN 1
#define P11TICKET_R_UNKNOWN_KEY 2
#define P11TICKET_R_CONFIG 3
#define P11TICKET_R_NO_ACTIVE_KEY 4
#define P11TICKET_R_KEY_EXPIRED 5
#define P11TICKET_R_BAD_PARAM 6
#define P11TICKET_R_UNSUPPORTED 7
#define P11TICKET_R_NO_DEFAULT_HMAC 8

/* Length of a ticket key name (RFC 5077 section 4 key_name). */
#define P11TICKET_KEY_NAME_LEN 16

/* Log levels passed to the log callback. */
#define P11TICKET_LOG_ERROR 0
#define P11TICKET_LOG_WARNING 1
#define P11TICKET_LOG_INFO 2

/*
 * Log callback.  libp11ticket never prints; it reports through this callback.
 * The message is one line without a trailing newline and never contains a
 * secret.  The default (cb == NULL) writes "p11ticket: <msg>" to stderr for
 * errors and warnings only.  The callback may be called from any thread that
 * runs a handshake; it must be thread-safe.
 */
typedef void (*p11ticket_log_cb)(int level, const char *msg, void *arg);
void p11ticket_set_log_callback(p11ticket_log_cb cb, void *arg);

/*
 * Create an SSL_CTX whose ticket HMAC resolves to the p11ticket provider:
 * SSL_CTX_new_ex(libctx, P11TICKET_PROPQ, method).  The property query is
 * optional, so every other algorithm still comes from the default provider.
 * Returns NULL on failure (see the OpenSSL error queue).
 */
SSL_CTX *p11ticket_SSL_CTX_new(OSSL_LIB_CTX *libctx, const SSL_METHOD *method);

/*
 * Install the ticket callback on ctx (SSL_CTX_set_tlsext_ticket_key_evp_cb).
 * With SNI, call it on the initial SSL_CTX: libssl uses s->session_ctx.
 *
 * Tickets are then issued under the token's current key and accepted under
 * every key the token still holds.  Whatever goes wrong with the token, the
 * callback degrades to "no ticket" / "full handshake"; it never asks libssl
 * for a fatal alert.  If libssl's HMAC context turns out not to belong to the
 * provider (no routing), tickets are refused and one error is logged.
 *
 * The call also probes the token once and logs a configuration error naming
 * the openssl.cnf key at fault.  Returns 1 when the provider is loaded and
 * the token is usable now, 0 otherwise.  In both cases the callback is
 * installed, so the server never silently falls back to in-memory keys; a
 * token that becomes usable later is picked up without a restart.
 */
int p11ticket_enable(SSL_CTX *ctx);

/*
 * As p11ticket_enable(), for an SSL_CTX that lives in the private library
 * context libctx but was not made by p11ticket_SSL_CTX_new() (for example
 * SSL_CTX_new_ex(libctx, NULL, method) with default_properties set in that
 * libctx).  OpenSSL 3.0 cannot tell which libctx an SSL_CTX belongs to, so
 * the caller says it.  libctx NULL is the default library context.
 */
int p11ticket_enable_ex(SSL_CTX *ctx, OSSL_LIB_CTX *libctx);

/*
 * Install the ticket callback, as p11ticket_enable() does, on every SSL_CTX
 * this process creates from now on, in any library context (an SSL_CTX
 * ex_data "new" callback registered once per process).  Nothing touches the
 * token here or in SSL_CTX_new(): the first handshake does, in the process
 * that serves it, so a server may create its SSL_CTXs before it forks.  An
 * SSL_CTX whose ticket HMAC is not routed to the provider then issues no
 * tickets and logs one error; an application that wants OpenSSL's own
 * in-memory keys on one SSL_CTX clears the callback with
 * SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, NULL).
 *
 * The provider calls this itself when it is loaded from openssl.cnf into the
 * default library context of a process that uses libssl, unless its section
 * says auto-enable = no: that is how unmodified servers get token tickets.
 * Returns 1 on success (also when already registered), 0 on failure.
 */
int p11ticket_enable_all(void);

/*
 * Statistics kept by the callback of ctx (all counters since enable).
 * Returns 0 if p11ticket_enable() was not called on ctx.
 */
typedef struct p11ticket_stats {
    unsigned long long issued;       /* tickets issued under a token key */
    unsigned long long resumed;      /* tickets accepted */
    unsigned long long renewed;      /* accepted and re-issued */
    unsigned long long unknown_key;  /* presented with an unknown key name */
    unsigned long long refused;      /* no ticket issued (token unusable) */
    unsigned long long errors;       /* token errors, all degraded */
} p11ticket_stats;
int p11ticket_get_stats(SSL_CTX *ctx, p11ticket_stats *out);

/*
 * One-line status of the provider behind ctx ("ok" or an error naming the
 * configuration key) and the hex name of the current key.  Either output may
 * be NULL.  Returns 1 if the provider is loaded.
 */
int p11ticket_status(SSL_CTX *ctx, char *status, size_t status_len,
                     char *current_key_hex, size_t key_hex_len);

#ifdef __cplusplus
}
#endif
#endif /* P11TICKET_H */
