#include <errno.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sock.h"

static int
set_int(int fd, int level, int name, int v)
{
    return setsockopt(fd, level, name, &v, sizeof(v));
}

static int
set_options(int fd, int family, unsigned flags)
{
    if (set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1) < 0)
        return -1;
    if ((flags & SOCK_F_NODELAY)
        && set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1) < 0)
        return -1;
    if ((flags & SOCK_F_REUSEPORT)
        && set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1) < 0)
        return -1;
    if (family == AF_INET6 && set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1) < 0)
        return -1;
    if (flags & SOCK_F_FREEBIND)
        return family == AF_INET
                   ? set_int(fd, IPPROTO_IP, IP_FREEBIND, 1)
                   : set_int(fd, IPPROTO_IPV6, IPV6_FREEBIND, 1);
    return 0;
}

int
sock_listen(const struct saddr *addr, unsigned flags, int backlog)
{
    int type = SOCK_STREAM | SOCK_CLOEXEC, fd, saved;

    if (!(flags & SOCK_F_BLOCKING))
        type |= SOCK_NONBLOCK;
    fd = socket(addr->u.sa.sa_family, type, 0);
    if (fd < 0)
        return -1;
    if (set_options(fd, addr->u.sa.sa_family, flags) < 0
        || bind(fd, &addr->u.sa, addr->len) < 0
        || (backlog > 0 && listen(fd, backlog) < 0)) {
        saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}
