/* SPDX-License-Identifier: Apache-2.0 */
/*
 * listen.c - -accept HOST:PORT: parsing, binding, and the printable address
 * actually bound (port 0 asks the kernel for an ephemeral port).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server.h"

#define LISTEN_BACKLOG 128

/*
 * "HOST:PORT", "[V6ADDR]:PORT", ":PORT" or "*:PORT".  Brackets are required
 * around an IPv6 address, else its last group would read as the port.
 * An empty host or "*" means every local address.
 */
int p11t_srv_parse_hostport(const char *spec, char *host, size_t host_len,
                            char *port, size_t port_len)
{
    const char *colon;
    size_t hlen;

    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');

        if (close == NULL || close[1] != ':')
            return 0;
        spec++;
        hlen = (size_t)(close - spec);
        colon = close + 1;
    } else {
        colon = strrchr(spec, ':');
        if (colon == NULL || memchr(spec, ':', (size_t)(colon - spec)) != NULL)
            return 0;
        hlen = (size_t)(colon - spec);
    }
    if (hlen >= host_len || strlen(colon + 1) >= port_len || colon[1] == '\0')
        return 0;
    if (strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
        strtol(colon + 1, NULL, 10) > 65535)
        return 0;
    memcpy(host, spec, hlen);
    host[hlen] = '\0';
    if (strcmp(host, "*") == 0)
        host[0] = '\0';
    snprintf(port, port_len, "%s", colon + 1);
    return 1;
}

static int bind_one(const struct addrinfo *ai)
{
    int one = 1;
    int fd =
        socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);

    if (fd < 0)
        return -1;
    /* A restarted server must not wait out TIME_WAIT of the old one. */
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
        listen(fd, LISTEN_BACKLOG) != 0) {
        int saved = errno;

        close(fd);
        errno = saved;
        return -1;
    }
    /* Non-blocking so that a client resetting between poll() and accept()
     * cannot block the accept loop. */
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void describe_bound(int fd, char *bound, size_t bound_len)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[NI_MAXHOST], serv[NI_MAXSERV];

    snprintf(bound, bound_len, "?");
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 ||
        getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), serv,
                    sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return;
    if (ss.ss_family == AF_INET6)
        snprintf(bound, bound_len, "[%s]:%s", host, serv);
    else
        snprintf(bound, bound_len, "%s:%s", host, serv);
}

int p11t_srv_listen(const char *host, const char *port, char *bound,
                    size_t bound_len)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
    };
    struct addrinfo *res = NULL;
    int fd = -1, err, saved = 0;

    err = getaddrinfo(host[0] != '\0' ? host : NULL, port, &hints, &res);
    if (err != 0) {
        fprintf(stderr, P11T_SRV_NAME ": cannot resolve '%s': %s\n", host,
                gai_strerror(err));
        return -1;
    }
    for (const struct addrinfo *ai = res; ai != NULL && fd < 0;
         ai = ai->ai_next) {
        fd = bind_one(ai);
        if (fd < 0)
            saved = errno;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        fprintf(stderr, P11T_SRV_NAME ": cannot listen on %s:%s: %s\n",
                host[0] != '\0' ? host : "*", port, strerror(saved));
        return -1;
    }
    describe_bound(fd, bound, bound_len);
    return fd;
}
