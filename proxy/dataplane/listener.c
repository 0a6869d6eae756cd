#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "listener.h"
#include "log.h"
#include "sock.h"
#include "svc-t.h"
#include "worker.h"

#define LISTEN_BACKLOG 4096

static void listener_on_accept(struct ev_loop *loop, struct ev_io *io,
                               int revents);

/* 0 if <addr> can be bound without SO_REUSEPORT (no one listens there),
 * else -1 with errno set (EADDRINUSE). */
static int
probe_free(const struct saddr *addr, unsigned flags)
{
    int fd = sock_listen(addr, flags & SOCK_F_FREEBIND, 0);

    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

struct listener *
listener_new(struct worker *w, const struct saddr *addr, unsigned flags,
             struct err *e)
{
    /* Accepted sockets inherit TCP_NODELAY from the listener: one system
     * call here instead of one per connection. Tables from the API name
     * service IPs that the netlink side adds a moment later: bind before
     * the address exists. */
    unsigned sflags =
        SOCK_F_NODELAY | (flags & LISTENER_F_FREEBIND ? SOCK_F_FREEBIND : 0);
    char a[SADDR_STR_MAX];
    struct listener *l;
    int fd = -1;

    /* Several workers: one socket each on the same address, the kernel
     * spreads connections across them. SO_REUSEPORT would also let
     * another process (same user) share the port unnoticed, so worker
     * 0, which opens an address first, makes sure that nobody holds it
     * (unless our own threads may still: LISTENER_F_OURS). */
    if (w->nworkers > 1) {
        if (w->id == 0 && !(flags & LISTENER_F_OURS)
            && probe_free(addr, sflags) < 0)
            goto fail;
        sflags |= SOCK_F_REUSEPORT;
    }
    fd = sock_listen(addr, sflags, LISTEN_BACKLOG);
    if (fd < 0)
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
fail:
    err_set(e, "cannot listen on %s: %s", saddr_str(addr, a, sizeof(a)),
            strerror(errno));
    if (fd >= 0)
        close(fd);
    return NULL;
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

void
listener_free_list(struct listener **head)
{
    struct listener *l;

    while ((l = *head) != NULL) {
        *head = l->next;
        listener_free(l);
    }
}
