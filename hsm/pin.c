/*
 * pin.c - PIN sources.  The PIN lives only in a secure-heap buffer that is
 * cleansed on release; it never appears in an error message.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "hsm.h"

#define PIN_MAX 256

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

CK_RV p11t_pin_read(const char *source, char **pin, size_t *pin_len,
                    p11t_err *err)
{
    if (source == NULL || pin == NULL || pin_len == NULL) {
        p11t_err_set(err, CKR_ARGUMENTS_BAD, "pin-source: missing");
        return CKR_ARGUMENTS_BAD;
    }
    *pin = NULL;
    *pin_len = 0;
    if (strncmp(source, "file:", 5) == 0 && source[5] == '/')
        return pin_from_file(source + 5, pin, pin_len, err);
    if (strncmp(source, "env:", 4) == 0 && source[4] != '\0')
        return pin_from_env(source + 4, pin, pin_len, err);
    p11t_err_set(err, P11T_CKR_CONFIG,
                 "pin-source: must be file:/PATH or env:VARIABLE");
    return P11T_CKR_CONFIG;
}
