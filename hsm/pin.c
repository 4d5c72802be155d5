/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pin.c - PIN sources.  A PIN read for one login lives in a buffer that is
 * cleansed on release; it never appears in an error message.
 *
 * Servers read their configuration as root and serve in workers that run as
 * another user (nginx, Apache httpd), and the PIN file stays readable by
 * root only.  So the provider reads the PIN once when the configuration is
 * loaded (p11t_pin_preload) and keeps it for every later login, including
 * re-logins in forked workers, in one page of its own: locked in RAM
 * (mlock), left out of core dumps (MADV_DONTDUMP), and cleansed at exit.
 * An env: PIN is also wiped from the environment once it is held there, so
 * it is neither inherited by child processes nor readable in
 * /proc/PID/environ.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "internal.h"

#define PIN_MAX 256
#define PIN_SLOTS 4

extern char **environ;

/* The held PINs: one locked, never-dumped mapping. */
struct pin_store {
    char pin[PIN_SLOTS][PIN_MAX + 1];
    size_t len[PIN_SLOTS];
};
static struct pin_store *store;
static char *store_source[PIN_SLOTS]; /* the pin-source each slot is for */
static pthread_mutex_t store_lock = PTHREAD_MUTEX_INITIALIZER;

void p11t_pin_free(char *pin, size_t pin_len)
{
    if (pin == NULL)
        return;
    OPENSSL_secure_clear_free(pin, PIN_MAX + 1);
    (void)pin_len;
}

static CK_RV pin_finish(char *buf, size_t len, char **pin, size_t *pin_len,
                        p11t_err *err, const char *what)
{
    char *eol = memchr(buf, '\n', len);

    /* The PIN is the first line; whatever follows is ignored (and wiped). */
    if (eol != NULL) {
        size_t keep = (size_t)(eol - buf);

        OPENSSL_cleanse(eol, len - keep);
        len = keep;
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        buf[--len] = '\0';
    if (len == 0) {
        p11t_pin_free(buf, 0);
        p11t_err_set(err, P11T_CKR_CONFIG, "pin-source: %s is empty", what);
        return P11T_CKR_CONFIG;
    }
    *pin = buf;
    *pin_len = len;
    return CKR_OK;
}

static CK_RV pin_from_file(const char *path, char **pin, size_t *pin_len,
                           p11t_err *err)
{
    struct stat st;
    char *buf;
    size_t len = 0;
    int fd;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        p11t_err_set(err, P11T_CKR_CONFIG, "pin-source: cannot open %.200s: %s",
                     path, strerror(errno));
        return P11T_CKR_CONFIG;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "pin-source: %.200s is not a regular file", path);
        return P11T_CKR_CONFIG;
    }
    if (st.st_uid != geteuid() && st.st_uid != 0) {
        close(fd);
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "pin-source: %.200s belongs to uid %u, not to this "
                     "process's user (uid %u) or root; run chown on it",
                     path, (unsigned)st.st_uid, (unsigned)geteuid());
        return P11T_CKR_CONFIG;
    }
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        close(fd);
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "pin-source: %.200s is accessible by group or others "
                     "(mode %03o); run chmod 600 on it",
                     path, (unsigned)(st.st_mode & 0777));
        return P11T_CKR_CONFIG;
    }
    buf = OPENSSL_secure_zalloc(PIN_MAX + 1);
    if (buf == NULL) {
        close(fd);
        return CKR_HOST_MEMORY;
    }
    for (;;) {
        ssize_t r = read(fd, buf + len, PIN_MAX + 1 - len);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;

            close(fd);
            p11t_pin_free(buf, 0);
            p11t_err_set(err, P11T_CKR_CONFIG,
                         "pin-source: cannot read %.200s: %s", path,
                         strerror(e));
            return P11T_CKR_CONFIG;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len > PIN_MAX) {
            close(fd);
            p11t_pin_free(buf, 0);
            p11t_err_set(err, P11T_CKR_CONFIG,
                         "pin-source: %.200s is longer than %d bytes", path,
                         PIN_MAX);
            return P11T_CKR_CONFIG;
        }
    }
    close(fd);
    buf[len] = '\0';
    if (memchr(buf, '\0', len) != NULL) {
        p11t_pin_free(buf, 0);
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "pin-source: %.200s contains a NUL byte", path);
        return P11T_CKR_CONFIG;
    }
    return pin_finish(buf, len, pin, pin_len, err, path);
}

static CK_RV pin_from_env(const char *var, char **pin, size_t *pin_len,
                          p11t_err *err)
{
    const char *v = getenv(var);
    size_t len;
    char *buf;

    if (v == NULL) {
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "pin-source: environment variable %.64s is not set", var);
        return P11T_CKR_CONFIG;
    }
    len = strlen(v);
    if (len > PIN_MAX) {
        p11t_err_set(err, P11T_CKR_CONFIG,
                     "pin-source: environment variable %.64s is longer than "
                     "%d bytes", var, PIN_MAX);
        return P11T_CKR_CONFIG;
    }
    buf = OPENSSL_secure_zalloc(PIN_MAX + 1);
    if (buf == NULL)
        return CKR_HOST_MEMORY;
    memcpy(buf, v, len);
    return pin_finish(buf, len, pin, pin_len, err, var);
}

void p11t_pin_fork_lock(int on)
{
    if (on) {
        pthread_mutex_lock(&store_lock);
    } else {
        pthread_mutex_unlock(&store_lock);
    }
    /* Memory locks are not inherited across fork() (mlock(2)): lock the
     * page again (harmless in the parent, where it already is). */
    if (on == 0 && store != NULL)
        (void)mlock(store, sizeof(*store));
}

/* A copy of the PIN held for source, in a fresh buffer. */
static int pin_held(const char *source, char **pin, size_t *pin_len)
{
    int found = 0;

    pthread_mutex_lock(&store_lock);
    for (int i = 0; i < PIN_SLOTS && store != NULL; i++) {
        if (store_source[i] == NULL || strcmp(store_source[i], source) != 0)
            continue;
        *pin = OPENSSL_secure_zalloc(PIN_MAX + 1);
        if (*pin != NULL) {
            memcpy(*pin, store->pin[i], store->len[i]);
            *pin_len = store->len[i];
            found = 1;
        }
        break;
    }
    pthread_mutex_unlock(&store_lock);
    return found;
}

static void store_wipe(void)
{
    pthread_mutex_lock(&store_lock);
    if (store != NULL)
        OPENSSL_cleanse(store, sizeof(*store));
    pthread_mutex_unlock(&store_lock);
}

/* Called with store_lock held. */
static int store_ready(void)
{
    void *p;

    if (store != NULL)
        return 1;
    p = mmap(NULL, sizeof(*store), PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return 0;
    /* Best effort: without CAP_IPC_LOCK the small default RLIMIT_MEMLOCK
     * still covers one page; a refusal leaves the PIN swappable, not lost. */
    (void)mlock(p, sizeof(*store));
#ifdef MADV_DONTDUMP
    (void)madvise(p, sizeof(*store), MADV_DONTDUMP);
#endif
    store = p;
    (void)atexit(store_wipe);
    return 1;
}

/* Overwrites the value of environment variable var in place, then removes
 * the variable: unsetenv() alone leaves the bytes in the process image. */
static void env_wipe(const char *var)
{
    size_t n = strlen(var);

    for (char **e = environ; e != NULL && *e != NULL; e++)
        if (strncmp(*e, var, n) == 0 && (*e)[n] == '=')
            OPENSSL_cleanse(*e + n + 1, strlen(*e + n + 1));
    (void)unsetenv(var);
}

CK_RV p11t_pin_preload(const char *source, p11t_err *err)
{
    char *pin = NULL;
    size_t len = 0;
    CK_RV rv;
    int slot = -1;

    if (source == NULL || strcmp(source, "prompt") == 0)
        return CKR_OK;
    if (pin_held(source, &pin, &len)) {
        p11t_pin_free(pin, len);
        return CKR_OK;
    }
    rv = p11t_pin_read(source, &pin, &len, err);
    if (rv != CKR_OK)
        return rv;
    pthread_mutex_lock(&store_lock);
    for (int i = 0; i < PIN_SLOTS && slot < 0; i++)
        if (store_source[i] == NULL)
            slot = i;
    if (slot >= 0 && store_ready() &&
        (store_source[slot] = strdup(source)) != NULL) {
        memcpy(store->pin[slot], pin, len);
        store->len[slot] = len;
    } else {
        slot = -1;
    }
    pthread_mutex_unlock(&store_lock);
    p11t_pin_free(pin, len);
    if (slot < 0) {
        p11t_err_set(err, CKR_HOST_MEMORY,
                     "pin-source: cannot keep the PIN in locked memory");
        return CKR_HOST_MEMORY;
    }
    if (strncmp(source, "env:", 4) == 0)
        env_wipe(source + 4);
    return CKR_OK;
}

CK_RV p11t_pin_read(const char *source, char **pin, size_t *pin_len,
                    p11t_err *err)
{
    if (source == NULL || pin == NULL || pin_len == NULL) {
        p11t_err_set(err, CKR_ARGUMENTS_BAD, "pin-source: missing");
        return CKR_ARGUMENTS_BAD;
    }
    *pin = NULL;
    *pin_len = 0;
    if (pin_held(source, pin, pin_len))
        return CKR_OK;
    if (strncmp(source, "file:", 5) == 0 && source[5] == '/')
        return pin_from_file(source + 5, pin, pin_len, err);
    if (strncmp(source, "env:", 4) == 0 && source[4] != '\0')
        return pin_from_env(source + 4, pin, pin_len, err);
    p11t_err_set(err, P11T_CKR_CONFIG,
                 "pin-source: must be file:/PATH or env:VARIABLE");
    return P11T_CKR_CONFIG;
}
