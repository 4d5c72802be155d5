/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keyfile.h - parsers for the ticket-key files of other TLS servers, for
 * `p11ticket import`.
 *
 * The parser is a pure function from bytes to keys: no I/O, no token, no
 * printing, so it can be unit-tested (test_keyfile.c) and fuzzed
 * (fuzz_keyfile.c).  Every buffer that holds key bytes comes from OpenSSL's
 * secure heap and is cleansed when freed; error messages never contain key
 * bytes, only sizes, line numbers and layouts.
 *
 * The layouts differ between servers even where the sizes agree
 * (docs/design.md, "Key files and rotation elsewhere"), so the format is
 * always named by the caller and never guessed:
 *
 *   openssl80  80 bytes  name[16] | hmac[32] | aes[32]   AES-256-CBC
 *              (SSL_CTX_set_tlsext_ticket_keys; also nginx's 80-byte
 *              ssl_session_ticket_key and Envoy's session_ticket_keys)
 *   nginx48    48 bytes  name[16] | aes[16]  | hmac[16]  AES-128-CBC
 *   node48     48 bytes  name[16] | hmac[16] | aes[16]   AES-128-CBC
 *              (Node.js ticketKeys, Apache SSLSessionTicketKeyFile)
 *   haproxy    text, one base64 key per line, each decoding to
 *              48 bytes  name[16] | aes[16]  | hmac[16]  AES-128-CBC or
 *              80 bytes  name[16] | aes[32]  | hmac[32]  AES-256-CBC
 *              (tls-ticket-keys; HAProxy's struct tls_sess_key_128/256)
 */
#ifndef P11T_KEYFILE_H
#define P11T_KEYFILE_H

#include <stddef.h>
#include <stdint.h>

#define P11T_KEYFILE_NAME_LEN 16
#define P11T_KEYFILE_MAX_AES 32
#define P11T_KEYFILE_MAX_HMAC 32
/* Largest file accepted: far more than any server loads (HAProxy uses the
 * last three lines), small enough for the secure heap. */
#define P11T_KEYFILE_MAX_SIZE 65536
/* Most keys in one HAProxy file. */
#define P11T_KEYFILE_MAX_KEYS 256
#define P11T_KEYFILE_WHY_LEN 256

typedef enum p11t_keyfile_format {
    P11T_KEYFILE_OPENSSL80 = 1,
    P11T_KEYFILE_NGINX48 = 2,
    P11T_KEYFILE_HAPROXY = 3,
    P11T_KEYFILE_NODE48 = 4,
} p11t_keyfile_format;

typedef struct p11t_keyfile_key {
    uint8_t name[P11T_KEYFILE_NAME_LEN];
    uint8_t aes[P11T_KEYFILE_MAX_AES];
    size_t aes_len; /* 16 or 32 */
    uint8_t hmac[P11T_KEYFILE_MAX_HMAC];
    size_t hmac_len; /* 16 or 32 */
    unsigned line;   /* 1-based line of a text file; 0 for binary files */
} p11t_keyfile_key;

typedef struct p11t_keyfile {
    p11t_keyfile_key *keys; /* secure heap; p11t_keyfile_free() */
    size_t n;               /* at least 1 after a successful parse */
    /*
     * The key the source server encrypts new tickets with: 0 for the
     * single-key binary formats.  For HAProxy it is the penultimate line
     * (the only line if there is one): HAProxy keeps the last
     * TLS_TICKETS_NO lines (default 3) in a ring, encrypts with the
     * penultimate and accepts all of them, so that the last line is the
     * "next" key every instance knows before anyone encrypts with it
     * (doc/configuration.txt "tls-ticket-keys", src/cfgparse-ssl.c).
     */
    size_t encrypt_index;
} p11t_keyfile;

/*
 * Format by name: "openssl80" (aliases "nginx80", "envoy"), "nginx48",
 * "haproxy", "node48" (alias "apache48").  Returns 1 and sets *fmt, or 0.
 */
int p11t_keyfile_format_parse(const char *s, p11t_keyfile_format *fmt);
/* Canonical name of a format, or NULL. */
const char *p11t_keyfile_format_name(p11t_keyfile_format fmt);
/* The byte layout in one line ("name[16] | hmac[32] | aes[32], ..."). */
const char *p11t_keyfile_format_layout(p11t_keyfile_format fmt);

/*
 * Parse and validate a whole key file held in data[0..len).  On success
 * returns 1 and fills *out (free it with p11t_keyfile_free()).  On failure
 * returns 0, leaves *out empty and writes a one-line reason (no key bytes)
 * to why: a binary file of the wrong size names the expected size; a text
 * file names the line.  Duplicate key names within one file are an error.
 * HAProxy files: text only (no control bytes but tab, CR, LF); blank lines
 * and lines starting with '#' are skipped, leading and trailing blanks and
 * a CR are ignored, padding '=' is required and keys of 48 and 80 bytes
 * cannot be mixed (HAProxy refuses that too).
 */
int p11t_keyfile_parse(p11t_keyfile_format fmt, const uint8_t *data, size_t len,
                       p11t_keyfile *out,
                       char why[static P11T_KEYFILE_WHY_LEN]);
/* Cleanses and frees the keys; safe on an empty or NULL keyfile. */
void p11t_keyfile_free(p11t_keyfile *kf);

#endif /* P11T_KEYFILE_H */
