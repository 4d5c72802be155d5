/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keytool.c - t_keytool, the tests' own provisioning helper.
 *
 *   t_keytool KEY=VALUE... create EF EU DU   prints the new key name in hex
 *   t_keytool KEY=VALUE... destroy HEXNAME
 *   t_keytool KEY=VALUE... list              one line per object
 *   t_keytool KEY=VALUE... import FILE EF EU DU
 *                                            prints the key name in hex
 *
 * import reads FILE, exactly 80 bytes: the 16-byte name, the 32-byte HMAC
 * key and the 32-byte AES key, and stores them with p11t_hsm_import (known
 * key bytes, for known-answer tests).  Key bytes never travel on argv; FILE
 * must be a regular file that neither group nor others can read.
 *
 * KEY=VALUE pairs are provider-section keys (pkcs11-module, token-uri,
 * pin-source, ...).  Times are unix seconds or "-" for never.  It drives
 * hsm/ directly (p11t_hsm_create/destroy/list) and runs as its own process,
 * so a test process never has a second copy of the PKCS#11 layer next to
 * the provider's.  Exit status 0 on success.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "hsm.h"

/* name | HMAC key | AES key, as `import` reads them. */
#define IMPORT_HMAC_LEN 32
#define IMPORT_AES_LEN 32
#define IMPORT_LEN (P11T_NAME_LEN + IMPORT_HMAC_LEN + IMPORT_AES_LEN)

static int parse_time(const char *s, int64_t *out)
{
    char *end;
    long long v;

    if (strcmp(s, "-") == 0) {
        *out = P11T_TIME_NEVER;
        return 1;
    }
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || end == s)
        return 0;
    *out = v;
    return 1;
}

/* EF EU DU from three arguments. */
static int parse_times(char **args, p11t_times *t)
{
    if (parse_time(args[0], &t->encrypt_from) &&
        parse_time(args[1], &t->encrypt_until) &&
        parse_time(args[2], &t->decrypt_until))
        return 1;
    fputs("t_keytool: bad time\n", stderr);
    return 0;
}

/*
 * Reads exactly IMPORT_LEN bytes from path into buf (which has room for one
 * more, to detect a longer file).  Returns 1, or 0 with a message; buf may
 * hold part of the file either way: the caller cleanses it.
 */
static int read_key_file(const char *path, unsigned char *buf, size_t cap)
{
    struct stat st;
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

    if (fd < 0) {
        fprintf(stderr, "t_keytool: %s: %s\n", path, strerror(errno));
        return 0;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        fprintf(stderr,
                "t_keytool: %s: not a regular file of mode 0600 or "
                "stricter\n",
                path);
        close(fd);
        return 0;
    }
    while (got < cap) {
        ssize_t r = read(fd, buf + got, cap - got);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fprintf(stderr, "t_keytool: %s: %s\n", path, strerror(errno));
            close(fd);
            return 0;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != IMPORT_LEN) {
        fprintf(stderr, "t_keytool: %s: %zu%s bytes, want exactly %d\n", path,
                got, got == cap ? " or more" : "", IMPORT_LEN);
        return 0;
    }
    return 1;
}

static int fail(const char *what, CK_RV rv, const p11t_err *err)
{
    fprintf(stderr, "t_keytool: %s: %s (%s)\n", what, err->msg,
            p11t_rv_name(rv));
    return 1;
}

int main(int argc, char **argv)
{
    p11t_config *cfg = p11t_config_new();
    p11t_hsm *h = NULL;
    p11t_err err;
    CK_RV rv;
    int i, rc = 1;

    p11t_err_clear(&err);
    if (cfg == NULL)
        return 1;
    for (i = 1; i < argc && strchr(argv[i], '=') != NULL; i++) {
        char *eq = strchr(argv[i], '=');

        *eq = '\0';
        rv = p11t_config_set(cfg, argv[i], eq + 1, &err);
        if (rv != CKR_OK) {
            p11t_config_free(cfg);
            return fail("config", rv, &err);
        }
    }
    if (i >= argc) {
        fputs("usage: t_keytool KEY=VALUE... create|destroy|list|import ...\n",
              stderr);
        p11t_config_free(cfg);
        return 2;
    }
    rv = p11t_config_check(cfg, &err);
    if (rv != CKR_OK) {
        p11t_config_free(cfg);
        return fail("config", rv, &err);
    }
    rv = p11t_hsm_new(cfg, &h, &err); /* owns cfg from here */
    if (rv != CKR_OK)
        return fail("open", rv, &err);
    rv = p11t_hsm_ready(h, &err);
    if (rv != CKR_OK) {
        rc = fail("init", rv, &err);
        goto done;
    }

    if (strcmp(argv[i], "create") == 0 && argc - i == 4) {
        p11t_times t;
        uint8_t name[P11T_NAME_LEN];
        char hex[33];

        if (!parse_times(argv + i + 1, &t)) {
            rc = 2;
            goto done;
        }
        rv = p11t_hsm_create(h, 32, &t, name, &err);
        if (rv != CKR_OK) {
            rc = fail("create", rv, &err);
            goto done;
        }
        p11t_hex(name, hex);
        printf("%s\n", hex);
        rc = 0;
    } else if (strcmp(argv[i], "destroy") == 0 && argc - i == 2) {
        uint8_t name[P11T_NAME_LEN];

        if (!p11t_unhex(argv[i + 1], name)) {
            fputs("t_keytool: bad key name\n", stderr);
            rc = 2;
            goto done;
        }
        rv = p11t_hsm_destroy(h, name, &err);
        if (rv != CKR_OK) {
            rc = fail("destroy", rv, &err);
            goto done;
        }
        rc = 0;
    } else if (strcmp(argv[i], "import") == 0 && argc - i == 5) {
        /* One spare byte: a longer file is an error, not a truncation. */
        unsigned char buf[IMPORT_LEN + 1];
        const unsigned char *name = buf, *hmac = buf + P11T_NAME_LEN,
                            *aes = buf + P11T_NAME_LEN + IMPORT_HMAC_LEN;
        p11t_times t;
        char hex[33];

        if (!parse_times(argv + i + 2, &t)) {
            rc = 2;
            goto done;
        }
        if (!read_key_file(argv[i + 1], buf, sizeof(buf))) {
            OPENSSL_cleanse(buf, sizeof(buf));
            rc = 2;
            goto done;
        }
        rv = p11t_hsm_import(h, name, aes, IMPORT_AES_LEN, hmac,
                             IMPORT_HMAC_LEN, &t, &err);
        p11t_hex(name, hex);
        OPENSSL_cleanse(buf, sizeof(buf));
        if (rv != CKR_OK) {
            rc = fail("import", rv, &err);
            goto done;
        }
        printf("%s\n", hex);
        rc = 0;
    } else if (strcmp(argv[i], "list") == 0 && argc - i == 1) {
        p11t_objinfo *objs = NULL;
        size_t n = 0;

        rv = p11t_hsm_list(h, &objs, &n, &err);
        if (rv != CKR_OK) {
            rc = fail("list", rv, &err);
            goto done;
        }
        for (size_t k = 0; k < n; k++) {
            char hex[33];

            p11t_hex(objs[k].name, hex);
            printf("%s %s ef=%" PRId64 " eu=%" PRId64 " du=%" PRId64 "\n", hex,
                   objs[k].role == P11T_ROLE_AES ? "aes" : "hmac",
                   objs[k].times.encrypt_from, objs[k].times.encrypt_until,
                   objs[k].times.decrypt_until);
        }
        free(objs);
        rc = 0;
    } else {
        fputs("t_keytool: bad command\n", stderr);
        rc = 2;
    }
done:
    fflush(stdout);
    /* No p11t_hsm_free(): it may finalise the module, and SoftHSM crashes
     * when finalised at process exit; _exit skips atexit (docs/design.md,
     * "Never C_Finalize at exit"). */
    _Exit(rc);
}
