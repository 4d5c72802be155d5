/* SPDX-License-Identifier: Apache-2.0 */
/*
 * setup.c - the openssl.cnf provider section, and everything the bench adds
 * to the token.
 *
 * The section is found the way the setup tool finds it (p11t_conffile_load,
 * hsm/conffile.c): openssl_conf -> [init] providers -> [providers] NAME ->
 * section, reading each section's own values only, as OpenSSL does.
 *
 * What the bench adds, it removes: its own encrypting generation and the
 * decrypt-only generations of the ring test.  Every name is recorded the
 * moment p11t_hsm_create() returns it, and bench_setup_cleanup() runs on
 * every exit path of main(), including SIGINT/SIGTERM/SIGHUP (the handlers
 * only set bench_stop; the loops notice it and unwind).  A SIGKILL leaves
 * keys behind, but they expire by themselves within two hours (see the
 * times in bench_setup_key and bench_setup_ring).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/conf.h>
#include <openssl/err.h>

#include "bench.h"

/* The bench key encrypts for an hour and decrypts for two; extra ring keys
 * are decrypt-only and expire within the hour.  Either way nothing the bench
 * leaves behind after a SIGKILL stays usable for long. */
#define KEY_ENCRYPT_S 3600
#define KEY_DECRYPT_S 7200
#define RING_EXPIRE_S 3600

/* ---- signals --------------------------------------------------------------- */

static void on_signal(int sig)
{
    static const char first[] =
        "\np11ticket-bench: interrupted; removing the bench's keys...\n";
    static const char again[] =
        "\np11ticket-bench: still removing the bench's keys, please wait\n";
    ssize_t w;

    (void)sig;
    if (bench_stop)
        w = write(STDERR_FILENO, again, sizeof(again) - 1);
    else
        w = write(STDERR_FILENO, first, sizeof(first) - 1);
    (void)w;
    bench_stop = 1;
}

void bench_signals_install(void)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: blocking reads return */
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(*sigs); i++)
        sigaction(sigs[i], &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* ---- the provider section ------------------------------------------------- */

const char *bench_setup_value(const bench_setup *s, const char *key)
{
    return p11t_conffile_value(&s->file, key);
}

int bench_setup_load(bench_setup *s, char *err, size_t errlen)
{
    p11t_config *cfg;
    p11t_err e = {0};
    CK_RV rv;

    if (p11t_conffile_load(s->config_file, s->provider_name, &s->file, &e) !=
        CKR_OK) {
        snprintf(err, errlen, "%s", e.msg);
        return 0;
    }
    cfg = s->file.cfg;
    s->file.cfg = NULL; /* p11t_hsm_new() owns it from here */
    s->refresh_s = p11t_config_refresh_interval(cfg);
    s->auto_rotate = p11t_config_auto_rotate(cfg);
    s->session_copies = p11t_config_session_copies(cfg);
    /*
     * The bench's own handle only provisions: no session copies (it never
     * encrypts) and never auto-rotate (it must not change the token beyond
     * what it adds and removes).
     */
    p11t_config_set(cfg, "session-copies", "no", &e);
    p11t_config_set(cfg, "auto-rotate", "no", &e);
    rv = p11t_hsm_new(cfg, &s->hsm, &e);
    if (rv == CKR_OK)
        rv = p11t_hsm_ready(s->hsm, &e);
    if (rv != CKR_OK) {
        snprintf(err, errlen, "%s: [%s] %s", s->config_file, s->file.section,
                 e.msg);
        return 0;
    }
    return 1;
}

/* ---- the alternative configuration ---------------------------------------- */

/* NCONF would expand $var, strip # comments and eat quotes and escapes. */
static void put_escaped(FILE *fp, const char *v)
{
    for (; *v != '\0'; v++) {
        if (strchr("\\$#\"'", *v) != NULL)
            fputc('\\', fp);
        fputc(*v, fp);
    }
}

int bench_setup_write_alt(bench_setup *s, char *err, size_t errlen)
{
    const char *tmp = getenv("TMPDIR");
    STACK_OF(CONF_VALUE) *sk = NCONF_get_section(s->file.conf, s->file.section);
    FILE *fp;
    int fd;

    if (s->tmpdir[0] == '\0') {
        snprintf(s->tmpdir, sizeof(s->tmpdir), "%s/p11ticket-bench-XXXXXX",
                 tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
        if (mkdtemp(s->tmpdir) == NULL) {
            snprintf(err, errlen, "mkdtemp %s: %s", s->tmpdir, strerror(errno));
            s->tmpdir[0] = '\0';
            return 0;
        }
    }
    snprintf(s->alt_config, sizeof(s->alt_config), "%s/alt.cnf", s->tmpdir);
    fd = open(s->alt_config, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (fp = fdopen(fd, "w")) == NULL) {
        snprintf(err, errlen, "%s: %s", s->alt_config, strerror(errno));
        if (fd >= 0)
            close(fd);
        return 0;
    }
    /*
     * The same provider section, under the same provider name, with only
     * session-copies flipped.  The default provider is activated as every
     * working p11ticket configuration must
     * (docs/design.md, "Provider order and the default provider").
     */
    fprintf(fp, "openssl_conf = bench_init\n\n[bench_init]\n"
                "providers = bench_providers\n\n[bench_providers]\n"
                "default = bench_default\n%s = bench_p11ticket\n\n"
                "[bench_default]\nactivate = 1\n\n[bench_p11ticket]\n",
            s->provider_name);
    for (int i = 0; i < sk_CONF_VALUE_num(sk); i++) {
        const CONF_VALUE *v = sk_CONF_VALUE_value(sk, i);

        if (strcmp(v->name, "session-copies") == 0 ||
            strcmp(v->name, "activate") == 0)
            continue;
        fprintf(fp, "%s = ", v->name);
        put_escaped(fp, v->value);
        fputc('\n', fp);
    }
    fprintf(fp, "session-copies = %s\nactivate = 1\n",
            s->session_copies ? "no" : "yes");
    if (fclose(fp) != 0) {
        snprintf(err, errlen, "%s: %s", s->alt_config, strerror(errno));
        return 0;
    }
    return 1;
}

/* ---- provisioning ---------------------------------------------------------- */

typedef struct gen {
    uint8_t name[P11T_NAME_LEN];
    p11t_times times;
    int roles; /* bit 1: AES, bit 2: HMAC */
} gen;

/* The token's p11ticket generations (complete or not). */
static int list_gens(bench_setup *s, gen **out, size_t *n, char *err,
                     size_t errlen)
{
    p11t_objinfo *objs = NULL;
    size_t no = 0, k = 0;
    p11t_err e;
    gen *g;
    CK_RV rv;

    p11t_err_clear(&e);
    rv = p11t_hsm_list(s->hsm, &objs, &no, &e);
    if (rv != CKR_OK) {
        snprintf(err, errlen, "listing the token: %s", e.msg);
        return 0;
    }
    g = calloc(no ? no : 1, sizeof(*g));
    if (g == NULL) {
        free(objs);
        snprintf(err, errlen, "out of memory");
        return 0;
    }
    for (size_t i = 0; i < no; i++) {
        size_t j;

        for (j = 0; j < k; j++)
            if (memcmp(g[j].name, objs[i].name, P11T_NAME_LEN) == 0)
                break;
        if (j == k) {
            memcpy(g[k].name, objs[i].name, P11T_NAME_LEN);
            g[k++].times = objs[i].times;
        }
        g[j].roles |= (int)objs[i].role;
    }
    free(objs);
    *out = g;
    *n = k;
    return 1;
}

int bench_setup_count(bench_setup *s, size_t *n, char *err, size_t errlen)
{
    gen *g;
    size_t k;

    if (!list_gens(s, &g, &k, err, errlen))
        return 0;
    *n = 0;
    for (size_t i = 0; i < k; i++)
        *n += g[i].roles == 3;
    free(g);
    return 1;
}

static int remember(bench_setup *s, const uint8_t name[P11T_NAME_LEN])
{
    if (s->n_created == s->cap_created) {
        size_t cap = s->cap_created ? s->cap_created * 2 : 16;
        uint8_t(*p)[P11T_NAME_LEN] = realloc(s->created, cap * sizeof(*p));

        if (p == NULL)
            return 0;
        s->created = p;
        s->cap_created = cap;
    }
    memcpy(s->created[s->n_created++], name, P11T_NAME_LEN);
    return 1;
}

static int create(bench_setup *s, const p11t_times *t, uint8_t name[P11T_NAME_LEN],
                  char *err, size_t errlen)
{
    p11t_err e;
    CK_RV rv;

    p11t_err_clear(&e);
    rv = p11t_hsm_create(s->hsm, 32, t, name, &e);
    if (rv != CKR_OK) {
        snprintf(err, errlen, "creating a key generation: %s", e.msg);
        return 0;
    }
    if (!remember(s, name)) {
        /* Not recorded means not removed later: remove it now. */
        p11t_hsm_destroy(s->hsm, name, &e);
        snprintf(err, errlen, "out of memory");
        return 0;
    }
    return 1;
}

int bench_setup_key(bench_setup *s, char *err, size_t errlen)
{
    int64_t now = (int64_t)time(NULL), latest = INT64_MIN, soonest = INT64_MAX;
    p11t_times t;
    gen *g;
    size_t n;

    if (!list_gens(s, &g, &n, err, errlen))
        return 0;
    s->gens_before = 0;
    for (size_t i = 0; i < n; i++) {
        p11t_state st = p11t_lifecycle_state(&g[i].times, now);

        if (g[i].roles != 3)
            continue;
        s->gens_before++;
        if (st == P11T_STATE_ACTIVE && g[i].times.encrypt_from > latest)
            latest = g[i].times.encrypt_from;
        if (st == P11T_STATE_PENDING &&
            g[i].times.encrypt_from < g[i].times.encrypt_until &&
            g[i].times.encrypt_from < soonest)
            soonest = g[i].times.encrypt_from;
    }
    free(g);
    /*
     * p11t_lifecycle_pick takes the ACTIVE generation with the latest
     * encrypt_from; ties go to the greatest name, which is random.  So the
     * bench's key starts strictly after every active key.
     */
    while (latest >= now && !bench_stop) {
        struct timespec ts = {0, 200 * 1000 * 1000};

        nanosleep(&ts, NULL);
        now = (int64_t)time(NULL);
    }
    if (bench_stop) {
        snprintf(err, errlen, "interrupted");
        return 0;
    }
    if (soonest != INT64_MAX && soonest < now + 600)
        fprintf(stderr, "p11ticket-bench: warning: a pending key on the token "
                "starts encrypting in %lld s and will replace the bench's "
                "key; the run fails if that happens\n",
                (long long)(soonest - now));
    t.encrypt_from = now;
    t.encrypt_until = now + KEY_ENCRYPT_S;
    t.decrypt_until = now + KEY_DECRYPT_S;
    return create(s, &t, s->key, err, errlen);
}

int bench_setup_ring(bench_setup *s, size_t total, size_t *have, char *err,
                     size_t errlen)
{
    int64_t now = (int64_t)time(NULL);
    /* Decrypt-only: never becomes the encrypting key. */
    p11t_times t = {now - 2 * RING_EXPIRE_S, now - RING_EXPIRE_S,
                    now + RING_EXPIRE_S};

    if (!bench_setup_count(s, have, err, errlen))
        return 0;
    while (*have < total) {
        uint8_t name[P11T_NAME_LEN];

        if (bench_stop) {
            snprintf(err, errlen, "interrupted");
            return 0;
        }
        if (!create(s, &t, name, err, errlen))
            return 0;
        (*have)++;
    }
    return 1;
}

int bench_setup_unring(bench_setup *s, size_t keep, char *err, size_t errlen)
{
    while (s->n_created > keep) {
        p11t_err e;

        p11t_err_clear(&e);
        if (p11t_hsm_destroy(s->hsm, s->created[s->n_created - 1], &e) !=
            CKR_OK) {
            snprintf(err, errlen, "removing a ring generation: %s", e.msg);
            return 0;
        }
        s->n_created--;
    }
    return 1;
}

void bench_setup_cleanup(bench_setup *s)
{
    size_t failed = 0;

    for (size_t i = s->n_created; i-- > 0;) {
        p11t_err e;

        p11t_err_clear(&e);
        if (p11t_hsm_destroy(s->hsm, s->created[i], &e) != CKR_OK) {
            char hex[33];

            p11t_hex(s->created[i], hex);
            fprintf(stderr, "p11ticket-bench: could not remove key %s: %s "
                    "(remove it with 'p11ticket purge' or let it expire)\n",
                    hex, e.msg);
            failed++;
        }
    }
    if (s->n_created > 0 && failed == 0)
        fprintf(stderr, "p11ticket-bench: removed the %zu key generation%s "
                "the bench created\n", s->n_created,
                s->n_created == 1 ? "" : "s");
    free(s->created);
    s->created = NULL;
    s->n_created = s->cap_created = 0;
    if (s->alt_config[0] != '\0')
        unlink(s->alt_config);
    if (s->tmpdir[0] != '\0')
        rmdir(s->tmpdir);
    s->alt_config[0] = s->tmpdir[0] = '\0';
    /* No C_Finalize: SoftHSM crashes when finalized at exit
     * (docs/design.md, "Never C_Finalize at exit"). */
    p11t_hsm_free(s->hsm);
    s->hsm = NULL;
    p11t_conffile_free(&s->file);
}
