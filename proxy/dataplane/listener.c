#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "listener.h"
#include "log.h"
#include "proxy.h"
#include "sniroute.h"
#include "sock.h"
#include "stats.h"
#include "svc-t.h"
#include "worker.h"

#define LISTEN_BACKLOG 4096

/* Netfilter's getsockopt names for a NATed connection's original
 * destination (linux/netfilter_ipv4.h, linux/netfilter_ipv6/ip6_tables.h;
 * spelled out to keep the kernel headers out). */
#define FERRY_SO_ORIGINAL_DST      80
#define FERRY_IP6T_SO_ORIGINAL_DST 80

static void listener_on_accept(struct ev_loop *loop, struct ev_io *io,
                               int revents);

/* A listener of <w> on the listening socket <fd> (not accepting yet), or
 * NULL when out of memory. */
static struct listener *
listener_wrap(struct worker *w, const struct saddr *addr, int fd)
{
    struct listener *l = calloc(1, sizeof(*l));

    if (l == NULL)
        return NULL;
    l->addr = *addr;
    l->w = w;
    saddr_str(addr, l->addr_str, sizeof(l->addr_str));
    ev_io_init(&l->io, listener_on_accept, fd, EV_READ);
    l->io.data = l;
    return l;
}

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
    if ((l = listener_wrap(w, addr, fd)) == NULL) {
        errno = ENOMEM;
        goto fail;
    }
    return l;
fail:
    err_set(e, "cannot listen on %s: %s", saddr_str(addr, a, sizeof(a)),
            strerror(errno));
    if (fd >= 0)
        close(fd);
    return NULL;
}

struct listener *
listener_adopt(struct worker *w, const struct saddr *addr, int fd,
               struct err *e)
{
    char a[SADDR_STR_MAX];
    struct saddr got;
    struct listener *l;
    int type = 0, acc = 0, fl;
    socklen_t len = sizeof(type);

    memset(&got, 0, sizeof(got));
    got.len = sizeof(got.u);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0
        || (len = sizeof(acc),
            getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0)
        || getsockname(fd, &got.u.sa, &got.len) < 0) {
        err_set(e, "inherited socket for %s: %s",
                saddr_str(addr, a, sizeof(a)), strerror(errno));
        return NULL;
    }
    if (type != SOCK_STREAM || !acc || saddr_cmp(&got, addr) != 0) {
        err_set(e, "inherited socket for %s is not a TCP socket listening "
                   "there",
                saddr_str(addr, a, sizeof(a)));
        return NULL;
    }
    if ((fl = fcntl(fd, F_GETFL)) < 0
        || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0
        || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        err_set(e, "inherited socket for %s: %s",
                saddr_str(addr, a, sizeof(a)), strerror(errno));
        return NULL;
    }
    if ((l = listener_wrap(w, addr, fd)) == NULL)
        err_set(e, "out of memory");
    return l;
}

int
listener_export(struct worker *w, struct proxy_sock **v, size_t *n)
{
    const struct listener *l;
    struct proxy_sock *nv;
    size_t k = 0;

    for (l = w->listeners; l != NULL; l = l->next)
        k++;
    if (k == 0)
        return 0;
    if ((nv = realloc(*v, (*n + k) * sizeof(*nv))) == NULL)
        return -1;
    *v = nv;
    for (l = w->listeners; l != NULL; l = l->next) {
        int fd = fcntl(l->io.fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        nv[*n].worker = w->id;
        nv[*n].addr = l->addr;
        nv[*n].fd = fd;
        (*n)++;
    }
    return 0;
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

void
listener_dispatch_clear(struct worker *w)
{
    sniroute_clear(w);
    svcv_unref(w->dsvcs);
    table_unref(w->dtable);
    w->dtable = NULL;
    w->dsvcs = NULL;
}

void
listener_dispatch_set(struct worker *w, struct table *t, struct svcv *svcs,
                      int dispatch, int affinity)
{
    /* Worker 0 keeps a table with ClientIP affinity: the next one's
     * services take their pins from it (apply.c). */
    int any = dispatch || (w->id == 0 && affinity);

    listener_dispatch_clear(w);
    if (!any)
        return;
    w->dtable = table_ref(t);
    w->dsvcs = svcv_ref(svcs);
    sniroute_build(w);
}

static void
reset_close(int fd)
{
    struct linger lg = {1, 0};

    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

/* The destination <fd>'s client asked for before the kernel redirected
 * it. Returns 0, or -1 with errno (ENOENT: not NATed). */
static int
original_dst(int fd, int family, struct saddr *out)
{
    socklen_t len;
    int rc;

    memset(out, 0, sizeof(*out));
    if (family == AF_INET6) {
        len = sizeof(out->u.in6);
        rc = getsockopt(fd, IPPROTO_IPV6, FERRY_IP6T_SO_ORIGINAL_DST,
                        &out->u.in6, &len);
    } else {
        len = sizeof(out->u.in);
        rc = getsockopt(fd, IPPROTO_IP, FERRY_SO_ORIGINAL_DST, &out->u.in,
                        &len);
    }
    out->len = len;
    return rc;
}

/* The REDIRECT service owning <dst>: its frontend exactly, or the
 * wildcard address of its family on its port (NodePorts on every
 * address). NULL if none. */
static struct svc *
dispatch_find(const struct worker *w, const struct saddr *dst)
{
    const struct tbl_service *ts;
    struct saddr any;
    const char *why;

    if (w->dtable == NULL)
        return NULL;
    ts = table_find_frontend(w->dtable, dst);
    if (ts == NULL) {
        parse_ip(dst->u.sa.sa_family == AF_INET6 ? "::" : "0.0.0.0",
                 saddr_port(dst), &any, &why);
        ts = table_find_frontend(w->dtable, &any);
    }
    if (ts == NULL || ts->reach != TBL_REACH_REDIRECT)
        return NULL;
    return svcv_get(w->dsvcs, ts->pos);
}

/* A connection on a DISPATCH listener: to the service of its original
 * destination, or reset (a client that reached the port directly). */
static void
dispatch(struct worker *w, struct listener *l, int fd,
         const struct saddr *client)
{
    char a[SADDR_STR_MAX], b[SADDR_STR_MAX];
    struct saddr dst;
    struct svc *s;

    if (original_dst(fd, l->addr.u.sa.sa_family, &dst) < 0) {
        stats_redirect_unmatched();
        log_rl(LOG_WARN, ev_now(w->loop),
               "%s: connection from %s not redirected by the kernel (%s): "
               "refused",
               l->addr_str, saddr_str(client, a, sizeof(a)), strerror(errno));
        reset_close(fd);
        return;
    }
    if ((s = dispatch_find(w, &dst)) == NULL) {
        stats_redirect_unmatched();
        log_rl(LOG_WARN, ev_now(w->loop),
               "%s: connection from %s for %s: no service there: refused",
               l->addr_str, saddr_str(client, a, sizeof(a)),
               saddr_str(&dst, b, sizeof(b)));
        reset_close(fd);
        return;
    }
    /* A Service with ClientIP affinity is redirected to worker 0's own
     * port; one that comes to another worker (its rules are changing)
     * would share the pins between threads: refused, and counted. */
    if (s->aff != NULL && w->id != 0) {
        stats_redirect_unmatched();
        log_rl(LOG_WARN, ev_now(w->loop),
               "%s: connection from %s for %s: a ClientIP-affinity service, "
               "served by worker 0 on the next port: refused",
               l->addr_str, saddr_str(client, a, sizeof(a)),
               saddr_str(&dst, b, sizeof(b)));
        reset_close(fd);
        return;
    }
    conn_accept(w, s, fd, client);
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
        if (l->svc->spec.reach == TBL_REACH_DISPATCH)
            dispatch(w, l, fd, &client);
        else if (w->sni == NULL || !sniroute_accept(w, &l->addr, fd, &client))
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
