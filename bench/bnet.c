#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bnet.h"

#define PATTERN_LEN (64 * 1024)

static char pattern[PATTERN_LEN];
static int pattern_ready;

static void
set_nodelay(int fd)
{
    int one = 1;

    /* Best effort: a failure only changes timing, never correctness. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int
bnet_listen(const struct saddr *a, int backlog)
{
    int fd, one = 1, e;

    fd = socket(a->u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0
        || bind(fd, &a->u.sa, a->len) < 0 || listen(fd, backlog) < 0) {
        e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int
bnet_connect(const struct saddr *a, int *done)
{
    int fd, e;

    fd = socket(a->u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    if (fd < 0)
        return -errno;
    set_nodelay(fd);
    if (connect(fd, &a->u.sa, a->len) == 0) {
        *done = 1;
        return fd;
    }
    if (errno == EINPROGRESS) {
        *done = 0;
        return fd;
    }
    e = errno;
    close(fd);
    return -e;
}

int
bnet_connect_result(int fd)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return -errno;
    return -err;
}

int
bnet_accept(int lfd)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (fd < 0)
        return -errno;
    set_nodelay(fd);
    return fd;
}

enum bnet_err
bnet_err_from_errno(int neg_errno)
{
    switch (-neg_errno) {
    case ECONNREFUSED:
        return BNET_ERR_REFUSED;
    case ECONNRESET:
    case EPIPE:
    case ECONNABORTED:
        return BNET_ERR_RESET;
    case ETIMEDOUT:
        return BNET_ERR_TIMEOUT;
    case EADDRNOTAVAIL:
    case EADDRINUSE:
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM:
        return BNET_ERR_LOCAL;
    default:
        return BNET_ERR_OTHER;
    }
}

static const char *const err_names[BNET_ERR__COUNT] = {
    [BNET_ERR_REFUSED] = "refused",
    [BNET_ERR_RESET] = "reset",
    [BNET_ERR_TIMEOUT] = "timeout",
    [BNET_ERR_SHORT_READ] = "short_read",
    [BNET_ERR_LOCAL] = "local",
    [BNET_ERR_OTHER] = "other",
};

const char *
bnet_err_name(enum bnet_err e)
{
    return (unsigned)e < BNET_ERR__COUNT ? err_names[e] : "?";
}

const char *
bnet_pattern(size_t *len)
{
    size_t i;

    if (!pattern_ready) {
        for (i = 0; i < PATTERN_LEN; i++)
            pattern[i] = (char)('a' + i % 26);
        pattern_ready = 1;
    }
    *len = PATTERN_LEN;
    return pattern;
}

uint64_t
bnet_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
