#include <errno.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "listener.h"
#include "log.h"
#include "svc-t.h"
#include "worker.h"

#define LISTEN_BACKLOG 4096

static void listener_on_accept(struct ev_loop *loop, struct ev_io *io,
                               int revents);

static int
set_freebind(int fd, int family)
{
    int one = 1;

    return family == AF_INET
               ? setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof(one))
               : setsockopt(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one,
                            sizeof(one));
}

/* 0 if <addr> can be bound without SO_REUSEPORT (no one listens there),
 * else -1 with errno set (EADDRINUSE). */
static int
probe_free(const struct saddr *addr, int freebind)
{
    int fd, one = 1, rc, saved;

    fd = socket(addr->u.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    rc = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (rc == 0 && addr->u.sa.sa_family == AF_INET6)
        rc = setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (rc == 0 && freebind)
        rc = set_freebind(fd, addr->u.sa.sa_family);
    if (rc == 0)
        rc = bind(fd, &addr->u.sa, addr->len);
    saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

struct listener *
listener_new(struct worker *w, const struct saddr *addr, int freebind,
             struct err *e)
{
    struct listener *l;
    int fd, one = 1;

    fd = socket(addr->u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK
                                          | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    /* Accepted sockets inherit TCP_NODELAY from the listener: one system
     * call here instead of one per connection. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0
        || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        goto fail;
    /* Several workers: one socket each on the same address, the kernel
     * spreads connections across them. SO_REUSEPORT would also let
     * another process (same user) share the port unnoticed, so worker
     * 0, which opens an address first, makes sure that nobody holds it. */
    if (w->nworkers > 1) {
        if (w->id == 0 && probe_free(addr, freebind) < 0)
            goto fail;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
            goto fail;
    }
    if (addr->u.sa.sa_family == AF_INET6
        && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
        goto fail;
    /* Tables from the API name service IPs that the netlink side adds a
     * moment later: bind before the address exists. */
    if (freebind && set_freebind(fd, addr->u.sa.sa_family) < 0)
        goto fail;
    if (bind(fd, &addr->u.sa, addr->len) < 0 || listen(fd, LISTEN_BACKLOG) < 0)
        goto fail;
    l = calloc(1, sizeof(*l));
    if (l == NULL) {
        errno = ENOMEM;
        goto fail;
    }
    l->addr = *addr;
    l->w = w;
    saddr_str(addr, l->addr_str, sizeof(l->addr_str));
    ev_io_init(&l->io, listener_on_accept, fd, EV_READ);
    l->io.data = l;
    return l;
fail: {
    char a[SADDR_STR_MAX];
    int saved = errno;
    if (fd >= 0)
        close(fd);
    err_set(e, "cannot listen on %s: %s", saddr_str(addr, a, sizeof(a)),
            strerror(saved));
    return NULL;
}
}

void
listener_set_svc(struct listener *l, struct svc *s)
{
    struct svc *old = l->svc;

    l->svc = svc_ref(s);
    svc_unref(old);
}

void
listener_start(struct listener *l)
{
    if (!l->w->accept_paused)
        ev_io_start(l->w->loop, &l->io);
}

void
listener_stop(struct listener *l)
{
    ev_io_stop(l->w->loop, &l->io);
}

void
listener_free(struct listener *l)
{
    if (l == NULL)
        return;
    listener_stop(l);
    close(l->io.fd);
    svc_unref(l->svc);
    free(l);
}

static void
listener_on_accept(struct ev_loop *loop, struct ev_io *io, int revents)
{
    struct listener *l = io->data;
    struct worker *w = l->w;
    struct saddr client;
    int i, fd;

    (void)revents;
    for (i = 0; i < WORKER_ACCEPT_BATCH; i++) {
        client.len = sizeof(client.u);
        fd = accept4(io->fd, &client.u.sa, &client.len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS
                || errno == ENOMEM)
                worker_pause_accept(w);
            else if (errno != EAGAIN && errno != EINTR
                     && errno != ECONNABORTED)
                log_rl(LOG_WARN, ev_now(loop), "accept on %s: %s",
                       l->addr_str, strerror(errno));
            return;
        }
        atomic_store_explicit(&w->n_accepted, w->n_accepted + 1,
                              memory_order_relaxed);
        conn_accept(w, l->svc, fd, &client);
    }
}
