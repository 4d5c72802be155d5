/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_keyfile.c - p11t_keyfile_parse() on arbitrary bytes, in every
 * format.  A key file comes from another system and may be truncated,
 * mis-labelled or hostile; the parser must stay inside len, never accept
 * what its format does not describe, and map the bytes exactly as the
 * server that wrote the file does.  Invariants (abort() on violation):
 *
 *   1. a refused input leaves no keys behind and a printable, terminated
 *      reason;
 *   2. an accepted input has 1..MAX keys with AES and HMAC keys of 16 or
 *      32 bytes, unique names, and an encrypt_index inside the array;
 *   3. binary formats: exactly one record of the format's size, and the
 *      key fields put back in the format's layout give the input again;
 *   4. haproxy: every key decodes, with an independent table-driven
 *      decoder, from the line it names, in HAProxy's name|aes|hmac layout;
 *      all keys have the same size; the penultimate key encrypts.
 *
 * libFuzzer drives it (clang -fsanitize=fuzzer, P11T_FUZZ=ON).  Ordinary
 * builds define P11T_FUZZ_REPLAY and get a main() that replays the seed
 * corpus (tools/p11ticket/corpus/keyfile) as a ctest regression test.
 */
#include <stdlib.h>
#include <string.h>

#include "keyfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const p11t_keyfile_format formats[] = {
    P11T_KEYFILE_OPENSSL80, P11T_KEYFILE_NGINX48,   P11T_KEYFILE_HAPROXY,
    P11T_KEYFILE_NODE48,    (p11t_keyfile_format)0, (p11t_keyfile_format)99};

static void check(int cond)
{
    if (!cond)
        abort();
}

static void check_refused(const p11t_keyfile *kf, const char *why)
{
    size_t len = strnlen(why, P11T_KEYFILE_WHY_LEN);

    check(kf->keys == NULL && kf->n == 0);
    check(len > 0 && len < P11T_KEYFILE_WHY_LEN);
    for (size_t i = 0; i < len; i++)
        check(why[i] >= 0x20 && why[i] < 0x7f);
}

static void check_common(const p11t_keyfile *kf)
{
    check(kf->keys != NULL && kf->n >= 1 && kf->n <= P11T_KEYFILE_MAX_KEYS);
    check(kf->encrypt_index < kf->n);
    for (size_t i = 0; i < kf->n; i++) {
        const p11t_keyfile_key *k = &kf->keys[i];

        check(k->aes_len == 16 || k->aes_len == 32);
        check(k->hmac_len == 16 || k->hmac_len == 32);
        for (size_t j = 0; j < i; j++)
            check(memcmp(kf->keys[j].name, k->name, 16) != 0);
    }
}

static void check_binary(p11t_keyfile_format fmt, const p11t_keyfile *kf,
                         const uint8_t *data, size_t size)
{
    const p11t_keyfile_key *k = &kf->keys[0];
    uint8_t rec[80];
    size_t n;

    check(kf->n == 1 && kf->encrypt_index == 0 && k->line == 0);
    memcpy(rec, k->name, 16);
    switch (fmt) {
    case P11T_KEYFILE_OPENSSL80: /* name | hmac32 | aes32 */
        check(k->aes_len == 32 && k->hmac_len == 32);
        memcpy(rec + 16, k->hmac, 32);
        memcpy(rec + 48, k->aes, 32);
        n = 80;
        break;
    case P11T_KEYFILE_NGINX48: /* name | aes16 | hmac16 */
        check(k->aes_len == 16 && k->hmac_len == 16);
        memcpy(rec + 16, k->aes, 16);
        memcpy(rec + 32, k->hmac, 16);
        n = 48;
        break;
    case P11T_KEYFILE_NODE48: /* name | hmac16 | aes16 */
        check(k->aes_len == 16 && k->hmac_len == 16);
        memcpy(rec + 16, k->hmac, 16);
        memcpy(rec + 32, k->aes, 16);
        n = 48;
        break;
    default:
        abort();
    }
    check(size == n && memcmp(rec, data, n) == 0);
}

/* Reference decoder: plain, table-driven, independent of keyfile.c. */
static long ref_b64(const uint8_t *s, size_t len, uint8_t *out, size_t cap)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0, pad = 0;

    if (len == 0 || len % 4 != 0)
        return -1;
    while (pad < 2 && s[len - 1 - pad] == '=')
        pad++;
    for (size_t i = 0; i < len; i += 4) {
        unsigned long acc = 0;

        for (size_t j = 0; j < 4; j++) {
            const char *p;

            if (i + j >= len - pad) {
                acc <<= 6;
                continue;
            }
            if (s[i + j] == '\0' || (p = strchr(alphabet, s[i + j])) == NULL)
                return -1;
            acc = acc << 6 | (unsigned long)(p - alphabet);
        }
        for (size_t j = 0; j < 3; j++) {
            if (o >= len / 4 * 3 - pad)
                break;
            if (o >= cap)
                return -1;
            out[o++] = (uint8_t)(acc >> (16 - 8 * j));
        }
    }
    return (long)o;
}

/* Line `lineno` (1-based) of data, trimmed of blanks and CR. */
static int find_line(const uint8_t *data, size_t size, unsigned lineno,
                     const uint8_t **p, size_t *len)
{
    size_t start = 0, end;
    unsigned cur = 1;

    while (cur < lineno) {
        const uint8_t *nl = memchr(data + start, '\n', size - start);

        if (nl == NULL)
            return 0;
        start = (size_t)(nl - data) + 1;
        cur++;
    }
    {
        const uint8_t *nl = memchr(data + start, '\n', size - start);

        end = nl != NULL ? (size_t)(nl - data) : size;
    }
    while (start < end &&
           (data[start] == ' ' || data[start] == '\t' || data[start] == '\r'))
        start++;
    while (end > start && (data[end - 1] == ' ' || data[end - 1] == '\t' ||
                           data[end - 1] == '\r'))
        end--;
    *p = data + start;
    *len = end - start;
    return 1;
}

static void check_haproxy(const p11t_keyfile *kf, const uint8_t *data,
                          size_t size)
{
    check(kf->encrypt_index == (kf->n >= 2 ? kf->n - 2 : 0));
    for (size_t i = 0; i < kf->n; i++) {
        const p11t_keyfile_key *k = &kf->keys[i];
        const uint8_t *line;
        uint8_t dec[128];
        size_t len;
        long d;

        check(k->line >= 1);
        check(i == 0 || k->line > kf->keys[i - 1].line);
        check(k->aes_len == kf->keys[0].aes_len);
        check(k->aes_len == k->hmac_len);
        check(find_line(data, size, k->line, &line, &len));
        check(len > 0 && line[0] != '#');
        d = ref_b64(line, len, dec, sizeof(dec));
        check(d == (long)(16 + k->aes_len + k->hmac_len));
        check(memcmp(dec, k->name, 16) == 0);
        check(memcmp(dec + 16, k->aes, k->aes_len) == 0);
        check(memcmp(dec + 16 + k->aes_len, k->hmac, k->hmac_len) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char name[40];

    for (size_t f = 0; f < sizeof(formats) / sizeof(formats[0]); f++) {
        char why[P11T_KEYFILE_WHY_LEN];
        p11t_keyfile kf;

        memset(why, 'x', sizeof(why));
        if (!p11t_keyfile_parse(formats[f], data, size, &kf, why)) {
            check_refused(&kf, why);
            continue;
        }
        check(formats[f] >= P11T_KEYFILE_OPENSSL80 &&
              formats[f] <= P11T_KEYFILE_NODE48);
        check_common(&kf);
        if (formats[f] == P11T_KEYFILE_HAPROXY)
            check_haproxy(&kf, data, size);
        else
            check_binary(formats[f], &kf, data, size);
        p11t_keyfile_free(&kf);
        check(kf.keys == NULL && kf.n == 0);
    }

    /* Format names: whatever is accepted has a canonical name. */
    if (size < sizeof(name)) {
        p11t_keyfile_format fmt;

        memcpy(name, data, size);
        name[size] = '\0';
        if (p11t_keyfile_format_parse(name, &fmt))
            check(p11t_keyfile_format_name(fmt) != NULL &&
                  p11t_keyfile_format_layout(fmt) != NULL);
    }
    return 0;
}

#ifdef P11T_FUZZ_REPLAY
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

/* Feeds one file, as an exact-size heap copy so ASan sees overreads. */
static int replay_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    uint8_t *buf;
    long len;

    if (fp == NULL || fseek(fp, 0, SEEK_END) != 0 || (len = ftell(fp)) < 0 ||
        fseek(fp, 0, SEEK_SET) != 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        if (fp != NULL)
            fclose(fp);
        return 0;
    }
    buf = malloc(len > 0 ? (size_t)len : 1);
    if (buf == NULL || fread(buf, 1, (size_t)len, fp) != (size_t)len) {
        fprintf(stderr, "%s: cannot read\n", path);
        free(buf);
        fclose(fp);
        return 0;
    }
    fclose(fp);
    LLVMFuzzerTestOneInput(buf, (size_t)len);
    free(buf);
    return 1;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    unsigned count = 0;
    int ok = 1;

    for (int i = 1; i < argc; i++) {
        struct dirent *de;
        char **names = NULL;
        size_t n = 0;
        DIR *d = opendir(argv[i]);

        if (d == NULL) {
            ok &= replay_file(argv[i]);
            count++;
            continue;
        }
        while ((de = readdir(d)) != NULL) {
            char **nn;

            if (de->d_name[0] == '.')
                continue;
            nn = realloc(names, (n + 1) * sizeof(*names));
            if (nn == NULL)
                abort();
            names = nn;
            names[n] = malloc(strlen(argv[i]) + strlen(de->d_name) + 2);
            if (names[n] == NULL)
                abort();
            sprintf(names[n], "%s/%s", argv[i], de->d_name);
            n++;
        }
        closedir(d);
        if (n > 0)
            qsort(names, n, sizeof(*names), cmp_names);
        for (size_t j = 0; j < n; j++) {
            struct stat st;

            if (stat(names[j], &st) == 0 && S_ISREG(st.st_mode)) {
                ok &= replay_file(names[j]);
                count++;
            }
            free(names[j]);
        }
        free(names);
    }
    printf("%s: replayed %u inputs\n", argv[0], count);
    /* An empty corpus proves nothing: fail. */
    return ok && count > 0 ? 0 : 1;
}
#endif
