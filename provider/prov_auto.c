/* SPDX-License-Identifier: Apache-2.0 */
/*
 * prov_auto.c - auto-enable: the hand-over from the provider, loaded from
 * openssl.cnf, to libp11ticket, which owns the ticket callback.
 *
 * An unmodified server (nginx, HAProxy, Apache httpd, openssl s_server)
 * never calls p11ticket_enable().  It does load openssl.cnf into the default
 * library context, which loads this provider.  So when the provider finds
 * itself in the default library context of a process that already has
 * libssl mapped, it opens libp11ticket and calls p11ticket_enable_all()
 * once, which registers an SSL_CTX ex_data "new" callback: from then on
 * every SSL_CTX the process creates carries the ticket callback
 * (docs/design.md, "Unmodified servers").
 *
 * The provider itself stays free of libssl: it only looks up whether
 * libssl is mapped and opens the library that knows it.  Nothing here
 * touches the token; the callback does its work in the first handshake of
 * the process that serves it (nginx makes its SSL_CTXs in the master and
 * serves in forked workers).
 */
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "prov.h"

/* The SONAME of OpenSSL 3's libssl and of our TLS integration library. */
#define LIBSSL_SONAME "libssl.so.3"
#define LIBP11TICKET_SONAME "libp11ticket.so.0"
#define ENABLE_ALL_SYMBOL "p11ticket_enable_all"

#ifndef P11T_INSTALL_LIBDIR
#define P11T_INSTALL_LIBDIR "/usr/local/lib"
#endif

typedef int (*enable_all_fn)(void);

static pthread_mutex_t auto_lock = PTHREAD_MUTEX_INITIALIZER;
static int auto_done;           /* under auto_lock: handed over */
static char auto_problem[300];  /* under auto_lock: why not, "" if fine */

/*
 * Where libp11ticket is: beside the provider first (the build tree puts both
 * in lib/), then the library directory of the installation, then the
 * dynamic linker's own search path.  Returns the handle or NULL with the
 * last dlerror() in why.
 */
static void *open_libp11ticket(char *why, size_t why_len)
{
    Dl_info info;
    char self[PATH_MAX], path[PATH_MAX];
    const char *err;
    void *dl;

    why[0] = '\0';
    if (dladdr((void *)open_libp11ticket, &info) != 0 &&
        info.dli_fname != NULL &&
        snprintf(self, sizeof(self), "%s", info.dli_fname) <
            (int)sizeof(self) &&
        snprintf(path, sizeof(path), "%s/%s", dirname(self),
                 LIBP11TICKET_SONAME) < (int)sizeof(path) &&
        (dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) != NULL)
        return dl;
    dl = dlopen(P11T_INSTALL_LIBDIR "/" LIBP11TICKET_SONAME,
                RTLD_NOW | RTLD_LOCAL);
    if (dl != NULL)
        return dl;
    dl = dlopen(LIBP11TICKET_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (dl != NULL)
        return dl;
    err = dlerror();
    snprintf(why, why_len, "%s", err != NULL ? err : "not found");
    return NULL;
}

/* 1 if libssl is mapped in this process (the process is a TLS user). */
static int libssl_loaded(void)
{
    void *dl = dlopen(LIBSSL_SONAME, RTLD_LAZY | RTLD_NOLOAD);

    if (dl == NULL)
        return 0;
    dlclose(dl);
    return 1;
}

/* 1 if libctx is the process's default library context: the one plain
 * SSL_CTX_new() uses.  OSSL_LIB_CTX_set0_default(NULL) returns it without
 * changing anything. */
static int is_default_libctx(OSSL_LIB_CTX *libctx)
{
    return libctx != NULL && libctx == OSSL_LIB_CTX_set0_default(NULL);
}

int p11t_prov_auto_enable(OSSL_LIB_CTX *loaded_in, int wanted)
{
    char why[256];
    void *dl;
    enable_all_fn enable_all;
    int ret = 0;

    if (!wanted || !is_default_libctx(loaded_in) ||
        !libssl_loaded())
        return 0;

    pthread_mutex_lock(&auto_lock);
    if (auto_done) {
        pthread_mutex_unlock(&auto_lock);
        return 1;
    }
    dl = open_libp11ticket(why, sizeof(why));
    if (dl == NULL) {
        snprintf(auto_problem, sizeof(auto_problem),
                 "auto-enable: cannot load " LIBP11TICKET_SONAME ": %.200s",
                 why);
        goto out;
    }
    /* Keep dl open for the life of the process: libssl will call into it
     * (libp11ticket is also linked with -z nodelete). */
    enable_all = (enable_all_fn)dlsym(dl, ENABLE_ALL_SYMBOL);
    if (enable_all == NULL) {
        snprintf(auto_problem, sizeof(auto_problem),
                 "auto-enable: " LIBP11TICKET_SONAME " has no "
                 ENABLE_ALL_SYMBOL " (an older version?)");
        goto out;
    }
    if (enable_all() != 1) {
        snprintf(auto_problem, sizeof(auto_problem),
                 "auto-enable: " ENABLE_ALL_SYMBOL " failed");
        goto out;
    }
    auto_problem[0] = '\0';
    auto_done = 1;
    ret = 1;
out:
    pthread_mutex_unlock(&auto_lock);
    return ret;
}

int p11t_prov_auto_problem(char *buf, size_t len)
{
    int have;

    pthread_mutex_lock(&auto_lock);
    have = auto_problem[0] != '\0';
    if (have)
        snprintf(buf, len, "%s", auto_problem);
    pthread_mutex_unlock(&auto_lock);
    return have;
}
