/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keyfile.c - parsers for other servers' ticket-key files (see keyfile.h).
 *
 * Everything that holds key bytes is either the caller's input, the
 * secure-heap key array, or a stack buffer cleansed before return.  Base64
 * is decoded without secret-dependent branches or table lookups; only the
 * validity of a character decides a branch.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "keyfile.h"

/* ---- formats ------------------------------------------------------------- */

typedef struct layout {
    p11t_keyfile_format fmt;
    const char *name;
    size_t size;
    size_t aes_off, aes_len;
    size_t hmac_off, hmac_len;
    const char *text;
} layout;

/* The binary formats, and HAProxy's two record sizes (name|aes|hmac). */
static const layout layouts[] = {
    {P11T_KEYFILE_OPENSSL80, "openssl80", 80, 48, 32, 16, 32,
     "name[16] | hmac[32] | aes[32], AES-256-CBC"},
    {P11T_KEYFILE_NGINX48, "nginx48", 48, 16, 16, 32, 16,
     "name[16] | aes[16] | hmac[16], AES-128-CBC"},
    {P11T_KEYFILE_NODE48, "node48", 48, 32, 16, 16, 16,
     "name[16] | hmac[16] | aes[16], AES-128-CBC"},
};
static const layout haproxy128 = {
    P11T_KEYFILE_HAPROXY, "haproxy", 48, 16, 16, 32, 16, NULL};
static const layout haproxy256 = {
    P11T_KEYFILE_HAPROXY, "haproxy", 80, 16, 32, 48, 32, NULL};

static const struct {
    const char *name;
    p11t_keyfile_format fmt;
} format_names[] = {
    {"openssl80", P11T_KEYFILE_OPENSSL80}, {"nginx80", P11T_KEYFILE_OPENSSL80},
    {"envoy", P11T_KEYFILE_OPENSSL80},     {"nginx48", P11T_KEYFILE_NGINX48},
    {"haproxy", P11T_KEYFILE_HAPROXY},     {"node48", P11T_KEYFILE_NODE48},
    {"apache48", P11T_KEYFILE_NODE48},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

int p11t_keyfile_format_parse(const char *s, p11t_keyfile_format *fmt)
{
    if (s == NULL || fmt == NULL)
        return 0;
    for (size_t i = 0; i < COUNT(format_names); i++) {
        if (strcmp(s, format_names[i].name) == 0) {
            *fmt = format_names[i].fmt;
            return 1;
        }
    }
    return 0;
}

static const layout *binary_layout(p11t_keyfile_format fmt)
{
    for (size_t i = 0; i < COUNT(layouts); i++)
        if (layouts[i].fmt == fmt)
            return &layouts[i];
    return NULL;
}

const char *p11t_keyfile_format_name(p11t_keyfile_format fmt)
{
    const layout *l = binary_layout(fmt);

    if (l != NULL)
        return l->name;
    return fmt == P11T_KEYFILE_HAPROXY ? "haproxy" : NULL;
}

const char *p11t_keyfile_format_layout(p11t_keyfile_format fmt)
{
    const layout *l = binary_layout(fmt);

    if (l != NULL)
        return l->text;
    if (fmt == P11T_KEYFILE_HAPROXY)
        return "base64 lines of 48 bytes (name[16] | aes[16] | hmac[16], "
               "AES-128-CBC) or 80 bytes (name[16] | aes[32] | hmac[32], "
               "AES-256-CBC)";
    return NULL;
}

/* ---- helpers ------------------------------------------------------------- */

static void set_why(char *why, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_why(char *why, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, P11T_KEYFILE_WHY_LEN, fmt, ap);
    va_end(ap);
}

static p11t_keyfile_key *keys_new(size_t n)
{
    return OPENSSL_secure_zalloc(n * sizeof(p11t_keyfile_key));
}

void p11t_keyfile_free(p11t_keyfile *kf)
{
    if (kf == NULL)
        return;
    if (kf->keys != NULL)
        OPENSSL_secure_clear_free(kf->keys, kf->n * sizeof(*kf->keys));
    memset(kf, 0, sizeof(*kf));
}

static void split(const layout *l, const uint8_t *rec, p11t_keyfile_key *k)
{
    memcpy(k->name, rec, P11T_KEYFILE_NAME_LEN);
    memcpy(k->aes, rec + l->aes_off, l->aes_len);
    k->aes_len = l->aes_len;
    memcpy(k->hmac, rec + l->hmac_off, l->hmac_len);
    k->hmac_len = l->hmac_len;
}

/* Index of an earlier key with the same name, or -1.  Names are not secret
 * (every ticket carries one in clear) but are compared like the servers do. */
static long find_name(const p11t_keyfile_key *keys, size_t n,
                      const uint8_t name[P11T_KEYFILE_NAME_LEN])
{
    for (size_t i = 0; i < n; i++)
        if (CRYPTO_memcmp(keys[i].name, name, P11T_KEYFILE_NAME_LEN) == 0)
            return (long)i;
    return -1;
}

/* No control bytes but tab, CR and LF (bytes >= 0x80 may be UTF-8). */
static int looks_like_text(const uint8_t *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        uint8_t c = data[i];

        if ((c < 0x20 && c != '\n' && c != '\r' && c != '\t') || c == 0x7f)
            return 0;
    }
    return len > 0;
}

/* ---- binary formats ------------------------------------------------------ */

static int parse_binary(const layout *l, const uint8_t *data, size_t len,
                        p11t_keyfile *out, char *why)
{
    const char *hint = "";

    if (len != l->size) {
        if (len == 0)
            hint = "; the file is empty";
        else if (l->size == 80 && len == 48)
            hint = "; 48-byte files are nginx48 or node48, whose layouts "
                   "differ: check which server wrote it";
        else if (l->size == 48 && len == 80)
            hint = "; 80-byte files are openssl80";
        else if (looks_like_text(data, len))
            hint = "; it looks like text (HAProxy's base64 lines are "
                   "--format haproxy)";
        set_why(why,
                "%s key files are exactly %zu bytes (%s), this one has "
                "%zu bytes%s",
                l->name, l->size, l->text, len, hint);
        return 0;
    }
    out->keys = keys_new(1);
    if (out->keys == NULL) {
        set_why(why, "out of secure memory");
        return 0;
    }
    out->n = 1;
    out->encrypt_index = 0;
    split(l, data, &out->keys[0]);
    return 1;
}

/* ---- HAProxy's base64 lines ---------------------------------------------- */

/*
 * 0..63 for a base64 character, -1 otherwise, in constant time with
 * respect to the character (arithmetic on sign bits instead of a table).
 */
static int b64_value(uint8_t ch)
{
    int c = ch, v = -1;

    v += (((0x40 - c) & (c - 0x5b)) >> 8) & (c - 64); /* A-Z -> 0..25 */
    v += (((0x60 - c) & (c - 0x7b)) >> 8) & (c - 70); /* a-z -> 26..51 */
    v += (((0x2f - c) & (c - 0x3a)) >> 8) & (c + 5);  /* 0-9 -> 52..61 */
    v += (((0x2a - c) & (c - 0x2c)) >> 8) & 63;       /* +   -> 62 */
    v += (((0x2e - c) & (c - 0x30)) >> 8) & 64;       /* /   -> 63 */
    return v;
}

typedef struct text_line {
    const uint8_t *p;
    size_t len; /* after trimming */
    unsigned lineno;
} text_line;

static int is_blank(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/*
 * Next line from *pos: trimmed of blanks and CR on both ends.  Returns 0 at
 * the end of the data.
 */
static int next_line(const uint8_t *data, size_t len, size_t *pos,
                     unsigned *lineno, text_line *tl)
{
    const uint8_t *nl;
    size_t start = *pos, end;

    if (start >= len)
        return 0;
    nl = memchr(data + start, '\n', len - start);
    end = nl != NULL ? (size_t)(nl - data) : len;
    *pos = nl != NULL ? end + 1 : len;
    ++*lineno;
    while (start < end && is_blank(data[start]))
        start++;
    while (end > start && is_blank(data[end - 1]))
        end--;
    tl->p = data + start;
    tl->len = end - start;
    tl->lineno = *lineno;
    return 1;
}

static int is_key_line(const text_line *tl)
{
    return tl->len > 0 && tl->p[0] != '#';
}

/*
 * Checks the characters and padding of a line and returns the decoded
 * length, or -1 with why set.  Padding must come last ("xx==" or "xxx=").
 * Like HAProxy's base64dec(), the unused low bits of the last character are
 * ignored.
 */
static long b64_check(const text_line *tl, char *why)
{
    size_t pad = 0;

    if (tl->len % 4 != 0) {
        set_why(why,
                "line %u: not valid base64: %zu characters, not a "
                "multiple of 4",
                tl->lineno, tl->len);
        return -1;
    }
    if (tl->len >= 1 && tl->p[tl->len - 1] == '=')
        pad++;
    if (tl->len >= 2 && tl->p[tl->len - 2] == '=')
        pad++;
    if (pad == 2 && tl->len % 4 == 0 && tl->len >= 4 &&
        tl->p[tl->len - 3] == '=') {
        set_why(why, "line %u: not valid base64: too much '=' padding",
                tl->lineno);
        return -1;
    }
    for (size_t i = 0; i < tl->len - pad; i++) {
        if (b64_value(tl->p[i]) < 0) {
            set_why(why,
                    "line %u: not valid base64: unexpected character "
                    "at column %zu",
                    tl->lineno, i + 1);
            return -1;
        }
    }
    return (long)(tl->len / 4 * 3 - pad);
}

/* Decodes a line that b64_check() accepted into out (room for its length). */
static void b64_decode(const text_line *tl, uint8_t *out, size_t out_len)
{
    uint32_t acc = 0;
    size_t o = 0;

    for (size_t i = 0; i < tl->len; i += 4) {
        acc = 0;
        for (size_t j = 0; j < 4; j++) {
            uint8_t c = tl->p[i + j];
            int v = c == '=' ? 0 : b64_value(c);

            acc = (acc << 6) | (uint32_t)v;
        }
        for (size_t j = 0; j < 3 && o < out_len; j++)
            out[o++] = (uint8_t)(acc >> (16 - 8 * j));
    }
    OPENSSL_cleanse(&acc, sizeof(acc));
}

static int parse_haproxy(const uint8_t *data, size_t len, p11t_keyfile *out,
                         char *why)
{
    const layout *first = NULL;
    unsigned first_line = 0, lineno = 0;
    size_t pos = 0, count = 0;
    uint8_t raw[80];
    text_line tl;

    if (len == 0) {
        set_why(why, "the file is empty");
        return 0;
    }
    if (!looks_like_text(data, len)) {
        set_why(why, "HAProxy key files are text, but this one is binary "
                     "(binary key files need --format openssl80, nginx48 or "
                     "node48)");
        return 0;
    }
    /* Pass 1: count key lines, so the secure array is allocated once. */
    while (next_line(data, len, &pos, &lineno, &tl))
        count += is_key_line(&tl);
    if (count == 0) {
        set_why(why, "no keys: only blank lines and comments");
        return 0;
    }
    if (count > P11T_KEYFILE_MAX_KEYS) {
        set_why(why,
                "%zu keys; at most %d are accepted (HAProxy uses the "
                "last 3)",
                count, P11T_KEYFILE_MAX_KEYS);
        return 0;
    }
    out->keys = keys_new(count);
    if (out->keys == NULL) {
        set_why(why, "out of secure memory");
        return 0;
    }
    out->n = 0;

    /* Pass 2: validate and decode. */
    pos = 0;
    lineno = 0;
    while (next_line(data, len, &pos, &lineno, &tl)) {
        const layout *l;
        p11t_keyfile_key *k;
        long dec, dup;

        if (!is_key_line(&tl))
            continue;
        dec = b64_check(&tl, why);
        if (dec < 0)
            goto fail;
        if (dec != 48 && dec != 80) {
            set_why(why,
                    "line %u: decodes to %ld bytes; HAProxy keys are 48 "
                    "(AES-128) or 80 (AES-256) bytes",
                    tl.lineno, dec);
            goto fail;
        }
        l = dec == 48 ? &haproxy128 : &haproxy256;
        if (first == NULL) {
            first = l;
            first_line = tl.lineno;
        } else if (l != first) {
            set_why(why,
                    "line %u: a %ld-byte key after the %zu-byte key of "
                    "line %u; HAProxy cannot mix AES-128 and AES-256 "
                    "keys in one file",
                    tl.lineno, dec, first->size, first_line);
            goto fail;
        }
        b64_decode(&tl, raw, (size_t)dec);
        k = &out->keys[out->n];
        split(l, raw, k);
        OPENSSL_cleanse(raw, sizeof(raw));
        k->line = tl.lineno;
        dup = find_name(out->keys, out->n, k->name);
        out->n++;
        if (dup >= 0) {
            set_why(why, "line %u: key name repeats the one of line %u",
                    tl.lineno, out->keys[dup].line);
            goto fail;
        }
    }
    /* HAProxy: "Last TLS_TICKETS_NO keys will be used for decryption and
     * the penultimate one for encryption" (one key: that key). */
    out->encrypt_index = out->n >= 2 ? out->n - 2 : 0;
    return 1;

fail:
    OPENSSL_cleanse(raw, sizeof(raw));
    /* Free the whole allocation, not just the keys filled so far. */
    out->n = count;
    p11t_keyfile_free(out);
    return 0;
}

/* ---- entry point --------------------------------------------------------- */

int p11t_keyfile_parse(p11t_keyfile_format fmt, const uint8_t *data, size_t len,
                       p11t_keyfile *out, char why[static P11T_KEYFILE_WHY_LEN])
{
    const layout *l;

    why[0] = '\0';
    if (out == NULL) {
        set_why(why, "internal error: no output");
        return 0;
    }
    memset(out, 0, sizeof(*out));
    if (data == NULL && len > 0) {
        set_why(why, "internal error: no input");
        return 0;
    }
    if (data == NULL)
        data = (const uint8_t *)"";
    if (len > P11T_KEYFILE_MAX_SIZE) {
        set_why(why, "%zu bytes; ticket-key files are at most %d bytes", len,
                P11T_KEYFILE_MAX_SIZE);
        return 0;
    }
    if (fmt == P11T_KEYFILE_HAPROXY)
        return parse_haproxy(data, len, out, why);
    l = binary_layout(fmt);
    if (l == NULL) {
        set_why(why, "unknown key-file format");
        return 0;
    }
    return parse_binary(l, data, len, out, why);
}
