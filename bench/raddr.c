/*
 * raddr.c - the command line and the listener the bench's minimal relays
 * share: ferry-floor, ferry-uring and ferry-sockmap take the same two
 * addresses and listen the same way, so that they differ only in how they
 * move bytes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "raddr.h"

#define RADDR_BACKLOG 4096 /* as ferry's listeners */

int
raddr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[INET6_ADDRSTRLEN + 2];
    const char *colon = strrchr(s, ':');
    size_t n;
    char *end;
    long port;

    if (colon == NULL || (n = (size_t)(colon - s)) >= sizeof(host))
        return -1;
    port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || end == colon + 1 || port < 1 || port > 65535)
        return -1;
    memcpy(host, s, n);
    host[n] = '\0';
    memset(ss, 0, sizeof(*ss));
    if (n > 2 && host[0] == '[' && host[n - 1] == ']') {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
        host[n - 1] = '\0';
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a6);
        return inet_pton(AF_INET6, host + 1, &a6->sin6_addr) == 1 ? 0 : -1;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *len = sizeof(*a4);
    return inet_pton(AF_INET, host, &a4->sin_addr) == 1 ? 0 : -1;
}

int
raddr_listen(const struct sockaddr_storage *a, socklen_t len, int nonblock)
{
    int fd, one = 1;

    fd = socket(a->ss_family, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        return -1;
    /* Inherited by every accepted socket: no setsockopt per client. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0
        || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0
        || bind(fd, (const struct sockaddr *)a, len) < 0
        || listen(fd, RADDR_BACKLOG) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int
raddr_accept_all(int lsn, void (*start)(int fd))
{
    int fd;

    for (;;) {
        fd = accept4(lsn, NULL, NULL, SOCK_NONBLOCK);
        if (fd >= 0) {
            start(fd);
            continue;
        }
        if (errno == EAGAIN)
            return 0;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS
            || errno == ENOMEM)
            return 1;
    }
}
