/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_keyfile.c - unit tests of the key-file parsers (keyfile.c): every
 * layout byte for byte, the exact-size rule, HAProxy's lines and which of
 * them encrypts, and every refusal with its message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "keyfile.h"
#include "test_util.h"

static void seq(uint8_t *p, size_t n, uint8_t start)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(start + i);
}

/*
 * A parsed key: AES and HMAC keys of `len` bytes counting up from `aes` and
 * `hmac`, and unless `name` < 0 a name counting up from `name`.
 */
static void key_at(const p11t_keyfile_key *k, size_t len, int name, int aes,
                   int hmac, int line)
{
    uint8_t expect[32];

    if (name >= 0) {
        seq(expect, 16, (uint8_t)name);
        CHECK_AT(memcmp(k->name, expect, 16) == 0, line);
    }
    seq(expect, len, (uint8_t)aes);
    CHECK_AT(k->aes_len == len, line);
    CHECK_AT(memcmp(k->aes, expect, len) == 0, line);
    seq(expect, len, (uint8_t)hmac);
    CHECK_AT(k->hmac_len == len, line);
    CHECK_AT(memcmp(k->hmac, expect, len) == 0, line);
}
#define CHECK_KEY(k, len, name, aes, hmac)                                     \
    key_at(k, len, name, aes, hmac, __LINE__)

static int parse(p11t_keyfile_format fmt, const void *data, size_t len,
                 p11t_keyfile *kf, char *why)
{
    return p11t_keyfile_parse(fmt, data, len, kf, why);
}

static int parse_str(p11t_keyfile_format fmt, const char *s, p11t_keyfile *kf,
                     char *why)
{
    return parse(fmt, s, strlen(s), kf, why);
}

/* A parse that must fail, with `expect` in the reason. */
static void refused(p11t_keyfile_format fmt, const void *data, size_t len,
                    const char *expect, int line)
{
    char why[P11T_KEYFILE_WHY_LEN];
    p11t_keyfile kf;

    if (parse(fmt, data, len, &kf, why)) {
        fprintf(stderr, "%s:%d: accepted, expected refusal '%s'\n", __FILE__,
                line, expect);
        failures++;
        p11t_keyfile_free(&kf);
        return;
    }
    if (kf.keys != NULL || kf.n != 0) {
        fprintf(stderr, "%s:%d: refusal left keys behind\n", __FILE__, line);
        failures++;
    }
    if (strstr(why, expect) == NULL) {
        fprintf(stderr, "%s:%d: reason '%s' lacks '%s'\n", __FILE__, line, why,
                expect);
        failures++;
    }
}

#define REFUSED(fmt, data, len, expect)                                        \
    refused(fmt, data, len, expect, __LINE__)
#define REFUSED_STR(fmt, s, expect) refused(fmt, s, strlen(s), expect, __LINE__)

/* base64 of 48 or 80 bytes: name = 16 x `tag`, the rest a sequence. */
static void b64_key(char *out, size_t size, uint8_t tag)
{
    uint8_t raw[80];

    memset(raw, tag, 16);
    seq(raw + 16, size - 16, (uint8_t)(tag * 3));
    EVP_EncodeBlock((unsigned char *)out, raw, (int)size);
}

static void test_format_names(void)
{
    static const struct {
        const char *name;
        p11t_keyfile_format fmt;
    } ok[] = {
        {"openssl80", P11T_KEYFILE_OPENSSL80},
        {"nginx80", P11T_KEYFILE_OPENSSL80},
        {"envoy", P11T_KEYFILE_OPENSSL80},
        {"nginx48", P11T_KEYFILE_NGINX48},
        {"haproxy", P11T_KEYFILE_HAPROXY},
        {"node48", P11T_KEYFILE_NODE48},
        {"apache48", P11T_KEYFILE_NODE48},
    };
    p11t_keyfile_format fmt;

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        CHECK(p11t_keyfile_format_parse(ok[i].name, &fmt) == 1);
        CHECK(fmt == ok[i].fmt);
        CHECK(p11t_keyfile_format_name(fmt) != NULL);
        CHECK(p11t_keyfile_format_layout(fmt) != NULL);
    }
    CHECK(strcmp(p11t_keyfile_format_name(P11T_KEYFILE_OPENSSL80),
                 "openssl80") == 0);
    CHECK(strcmp(p11t_keyfile_format_name(P11T_KEYFILE_NODE48), "node48") == 0);
    CHECK(p11t_keyfile_format_parse("auto", &fmt) == 0);
    CHECK(p11t_keyfile_format_parse("OPENSSL80", &fmt) == 0);
    CHECK(p11t_keyfile_format_parse("", &fmt) == 0);
    CHECK(p11t_keyfile_format_parse(NULL, &fmt) == 0);
    CHECK(p11t_keyfile_format_parse("nginx48", NULL) == 0);
    CHECK(p11t_keyfile_format_name((p11t_keyfile_format)0) == NULL);
    CHECK(p11t_keyfile_format_layout((p11t_keyfile_format)42) == NULL);
}

static void test_edge_arguments(void)
{
    char why[P11T_KEYFILE_WHY_LEN];
    p11t_keyfile kf;

    CHECK(p11t_keyfile_parse(P11T_KEYFILE_OPENSSL80, (const uint8_t *)"x", 1,
                             NULL, why) == 0);
    CHECK(why[0] != '\0');
    CHECK(p11t_keyfile_parse(P11T_KEYFILE_OPENSSL80, NULL, 5, &kf, why) == 0);
    CHECK(kf.keys == NULL && kf.n == 0);
    REFUSED(P11T_KEYFILE_OPENSSL80, NULL, 0, "empty");
    REFUSED(P11T_KEYFILE_HAPROXY, NULL, 0, "empty");
    REFUSED((p11t_keyfile_format)0, "x", 1, "unknown key-file format");
    REFUSED((p11t_keyfile_format)7, "x", 1, "unknown key-file format");
    p11t_keyfile_free(NULL);
    memset(&kf, 0, sizeof(kf));
    p11t_keyfile_free(&kf);
}

static void test_openssl80(void)
{
    char why[P11T_KEYFILE_WHY_LEN];
    uint8_t f[80];
    p11t_keyfile kf;

    seq(f, sizeof(f), 0);
    CHECK(parse(P11T_KEYFILE_OPENSSL80, f, 80, &kf, why) == 1);
    CHECK(kf.n == 1 && kf.encrypt_index == 0);
    /* name: bytes 0..15, aes: 48..79, hmac: 16..47 */
    CHECK_KEY(&kf.keys[0], 32, 0, 48, 16);
    CHECK(kf.keys[0].line == 0);
    p11t_keyfile_free(&kf);
    CHECK(kf.keys == NULL && kf.n == 0);

    /* Exact size only, with a hint where one helps. */
    REFUSED(P11T_KEYFILE_OPENSSL80, f, 48, "exactly 80 bytes");
    REFUSED(P11T_KEYFILE_OPENSSL80, f, 48, "nginx48 or node48");
    REFUSED(P11T_KEYFILE_OPENSSL80, f, 79, "this one has 79 bytes");
    REFUSED(P11T_KEYFILE_OPENSSL80, f, 1, "exactly 80 bytes");
    REFUSED(P11T_KEYFILE_OPENSSL80, f, 0, "empty");
    {
        uint8_t g[81];

        memcpy(g, f, 80);
        g[80] = '\n';
        REFUSED(P11T_KEYFILE_OPENSSL80, g, 81, "this one has 81");
    }
    REFUSED_STR(
        P11T_KEYFILE_OPENSSL80,
        "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
        "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\n",
        "--format haproxy");
}

static void test_nginx48(void)
{
    char why[P11T_KEYFILE_WHY_LEN];
    uint8_t f[80];
    p11t_keyfile kf;

    seq(f, sizeof(f), 100);
    CHECK(parse(P11T_KEYFILE_NGINX48, f, 48, &kf, why) == 1);
    CHECK(kf.n == 1);
    /* name: bytes 0..15, aes: 16..31, hmac: 32..47 */
    CHECK_KEY(&kf.keys[0], 16, 100, 116, 132);
    p11t_keyfile_free(&kf);

    REFUSED(P11T_KEYFILE_NGINX48, f, 80, "exactly 48 bytes");
    REFUSED(P11T_KEYFILE_NGINX48, f, 80, "openssl80");
    REFUSED(P11T_KEYFILE_NGINX48, f, 47, "this one has 47");
}

static void test_node48(void)
{
    char why[P11T_KEYFILE_WHY_LEN];
    uint8_t f[48];
    p11t_keyfile kf;

    seq(f, sizeof(f), 7);
    CHECK(parse(P11T_KEYFILE_NODE48, f, 48, &kf, why) == 1);
    /* name: bytes 0..15, aes: 32..47, hmac: 16..31 */
    CHECK_KEY(&kf.keys[0], 16, 7, 39, 23);
    p11t_keyfile_free(&kf);
    REFUSED(P11T_KEYFILE_NODE48, f, 32, "exactly 48 bytes");
}

static void test_haproxy_layout(void)
{
    char why[P11T_KEYFILE_WHY_LEN], file[1024], k1[128], k2[128], k3[128];
    uint8_t expect[32];
    p11t_keyfile kf;

    /* 80-byte keys: name | aes32 | hmac32. */
    b64_key(k1, 80, 1);
    b64_key(k2, 80, 2);
    b64_key(k3, 80, 3);
    snprintf(file, sizeof(file),
             "# ticket keys, oldest first\n%s\n\n  %s\t\r\n# next\n%s", k1, k2,
             k3);
    CHECK(parse_str(P11T_KEYFILE_HAPROXY, file, &kf, why) == 1);
    CHECK(kf.n == 3);
    CHECK(kf.encrypt_index == 1); /* the penultimate line encrypts */
    CHECK(kf.keys[0].line == 2 && kf.keys[1].line == 4 && kf.keys[2].line == 6);
    memset(expect, 2, 16);
    CHECK(memcmp(kf.keys[1].name, expect, 16) == 0);
    /* aes: bytes 16..47, starting at tag * 3; hmac: 48..79 */
    CHECK_KEY(&kf.keys[1], 32, -1, 6, 6 + 32);
    p11t_keyfile_free(&kf);

    /* 48-byte keys: name | aes16 | hmac16. */
    b64_key(k1, 48, 9);
    snprintf(file, sizeof(file), "%s\r\n", k1);
    CHECK(parse_str(P11T_KEYFILE_HAPROXY, file, &kf, why) == 1);
    CHECK(kf.n == 1 && kf.encrypt_index == 0 && kf.keys[0].line == 1);
    CHECK_KEY(&kf.keys[0], 16, -1, 27, 43);
    p11t_keyfile_free(&kf);
}

static void test_haproxy_encrypt_index(void)
{
    char why[P11T_KEYFILE_WHY_LEN], file[2048], k[128];
    p11t_keyfile kf;

    /* HAProxy: i -= 2; enc = i < 0 ? 0 : i (cfgparse-ssl.c). */
    for (int n = 1; n <= 6; n++) {
        file[0] = '\0';
        for (int i = 0; i < n; i++) {
            b64_key(k, 48, (uint8_t)(i + 1));
            strcat(file, k);
            strcat(file, "\n");
        }
        CHECK(parse_str(P11T_KEYFILE_HAPROXY, file, &kf, why) == 1);
        CHECK(kf.n == (size_t)n);
        CHECK(kf.encrypt_index == (size_t)(n >= 2 ? n - 2 : 0));
        p11t_keyfile_free(&kf);
    }
}

static void test_haproxy_refusals(void)
{
    char file[1024], k1[128], k2[128];
    static const char secretish[] =
        "SECRETSECRETSECRETSECRETSECRETSECRETSECRETSECRETSECRETSECRET!!!!\n";

    REFUSED_STR(P11T_KEYFILE_HAPROXY, "", "empty");
    REFUSED_STR(P11T_KEYFILE_HAPROXY, "\n\n# only a comment\n  \n", "no keys");
    REFUSED(P11T_KEYFILE_HAPROXY, "AAAA\0AAA\n", 9, "is binary");
    REFUSED_STR(P11T_KEYFILE_HAPROXY, "AAAA\001AAA\n", "is binary");
    REFUSED_STR(P11T_KEYFILE_HAPROXY, "\x7f", "is binary");

    /* The reason names the line and column, never the content. */
    REFUSED_STR(P11T_KEYFILE_HAPROXY, secretish, "line 1: not valid base64");
    REFUSED_STR(P11T_KEYFILE_HAPROXY, secretish, "column 61");
    {
        char why[P11T_KEYFILE_WHY_LEN];
        p11t_keyfile kf;

        CHECK(parse_str(P11T_KEYFILE_HAPROXY, secretish, &kf, why) == 0);
        CHECK(strstr(why, "SECRET") == NULL);
    }

    b64_key(k1, 48, 1);
    snprintf(file, sizeof(file), "%s\n%.63s\n", k1, k1);
    REFUSED_STR(P11T_KEYFILE_HAPROXY, file, "line 2: not valid base64: 63");

    /* Valid base64 of the wrong size. */
    REFUSED_STR(P11T_KEYFILE_HAPROXY, "QUFB\n", "line 1: decodes to 3 bytes");
    snprintf(file, sizeof(file), "%.60s\n", k1); /* 45 bytes */
    REFUSED_STR(P11T_KEYFILE_HAPROXY, file, "decodes to 45 bytes");

    /* Padding only at the end, at most two. */
    REFUSED_STR(P11T_KEYFILE_HAPROXY, "QU==QUFB\n", "not valid base64");
    REFUSED_STR(P11T_KEYFILE_HAPROXY, "Q===\n", "too much '=' padding");
    REFUSED_STR(P11T_KEYFILE_HAPROXY, "====\n", "too much '=' padding");

    /* No mixing of sizes. */
    b64_key(k2, 80, 2);
    snprintf(file, sizeof(file), "%s\n%s\n", k1, k2);
    REFUSED_STR(P11T_KEYFILE_HAPROXY, file,
                "line 2: a 80-byte key after the 48-byte key of line 1");

    /* Duplicate names in one file. */
    snprintf(file, sizeof(file), "# x\n%s\n%s\n", k1, k1);
    REFUSED_STR(P11T_KEYFILE_HAPROXY, file,
                "line 3: key name repeats the one of line 2");

    /* Binary data is not a HAProxy file. */
    {
        uint8_t bin[80];

        seq(bin, sizeof(bin), 0);
        REFUSED(P11T_KEYFILE_HAPROXY, bin, sizeof(bin), "is binary");
    }
}

static void test_limits(void)
{
    size_t big = P11T_KEYFILE_MAX_SIZE + 1;
    char *file = malloc(big + 1), k[128];
    size_t off = 0;

    if (file == NULL) {
        failures++;
        return;
    }
    memset(file, '#', big);
    REFUSED(P11T_KEYFILE_HAPROXY, file, big, "at most 65536 bytes");
    REFUSED(P11T_KEYFILE_OPENSSL80, file, big, "at most 65536 bytes");

    /* One key line too many. */
    for (int i = 0; i <= P11T_KEYFILE_MAX_KEYS; i++) {
        b64_key(k, 48, (uint8_t)i);
        off += (size_t)sprintf(file + off, "%s\n", k);
    }
    REFUSED(P11T_KEYFILE_HAPROXY, file, off, "at most 256");
    /* Exactly the maximum, with unique names, is fine... except that names
     * are 16 x tag, so tags 0..255 are unique. */
    {
        char why[P11T_KEYFILE_WHY_LEN];
        p11t_keyfile kf;
        size_t last = off - 65; /* drop the last line (64 + '\n') */

        CHECK(parse(P11T_KEYFILE_HAPROXY, file, last, &kf, why) == 1);
        CHECK(kf.n == P11T_KEYFILE_MAX_KEYS);
        CHECK(kf.encrypt_index == P11T_KEYFILE_MAX_KEYS - 2);
        p11t_keyfile_free(&kf);
    }
    free(file);
}

int main(void)
{
    test_format_names();
    test_edge_arguments();
    test_openssl80();
    test_nginx48();
    test_node48();
    test_haproxy_layout();
    test_haproxy_encrypt_index();
    test_haproxy_refusals();
    test_limits();
    return test_report("test_keyfile");
}
