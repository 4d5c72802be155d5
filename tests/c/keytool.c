/*
 * keytool.c - t_keytool, the tests' own provisioning helper.
 *
 *   t_keytool KEY=VALUE... create EF EU DU   prints the new key name in hex
 *   t_keytool KEY=VALUE... destroy HEXNAME
 *   t_keytool KEY=VALUE... list              one line per object
 *
 * KEY=VALUE pairs are provider-section keys (pkcs11-module, token-uri,
 * pin-source, ...).  Times are unix seconds or "-" for never.  It drives
 * hsm/ directly (p11t_hsm_create/destroy/list) and runs as its own process,
 * so a test process never has a second copy of the PKCS#11 layer next to
 * the provider's.  Exit status 0 on success.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hsm.h"

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
        fputs("usage: t_keytool KEY=VALUE... create|destroy|list ...\n",
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
    rv = p11t_hsm_ensure(h, &err);
    if (rv != CKR_OK) {
        rc = fail("init", rv, &err);
        goto done;
    }

    if (strcmp(argv[i], "create") == 0 && argc - i == 4) {
        p11t_times t;
        uint8_t name[P11T_NAME_LEN];
        char hex[33];

        if (!parse_time(argv[i + 1], &t.encrypt_from) ||
            !parse_time(argv[i + 2], &t.encrypt_until) ||
            !parse_time(argv[i + 3], &t.decrypt_until)) {
            fputs("t_keytool: bad time\n", stderr);
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
     * when finalised at process exit (DESIGN.md §2). _exit skips atexit. */
    _Exit(rc);
}
