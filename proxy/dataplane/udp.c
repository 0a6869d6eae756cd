#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "accesslog.h"
#include "clienthash.h"
#include "log.h"
#include "srcrules.h"
#include "stats.h"
#include "svc-t.h"
#include "udp-t.h"
#include "worker.h"

/* Flows and datagrams: everything here runs on the worker's own loop. */

static void udp_on_backend(struct ev_loop *loop, struct ev_io *io, int rev);
static void udp_on_idle(struct ev_loop *loop, struct ev_timer *t, int rev);

/* ---- flows: the hash ------------------------------------------------------ */

/* Seeded per worker, so that clients cannot choose ports that share a
 * chain. */
static uint32_t
flow_hash(const struct udp_worker *u, const struct saddr *client,
          const struct saddr *local)
{
    unsigned char kc[16], kl[16];
    uint64_t h;

    client_key(client, kc);
    client_key(local, kl);
    h = client_hash(u->seed, kc);
    h = client_hash(h ^ ((uint64_t)saddr_port(client) << 16
                         | saddr_port(local)),
                    kl);
    return (uint32_t)(h ^ (h >> 32));
}

static struct udp_flow *
flow_find(struct udp_worker *u, const struct saddr *client,
          const struct saddr *local, uint32_t h)
{
    struct udp_flow *f;

    for (f = u->buckets[h & (u->nbuckets - 1)]; f != NULL; f = f->hnext)
        if (f->hash == h && saddr_cmp(&f->client, client) == 0
            && saddr_cmp(&f->local, local) == 0)
            return f;
    return NULL;
}

/* Twice the buckets once there are more flows than buckets; a table that
 * cannot grow stays as it is (longer chains, still correct). */
static void
hash_grow(struct udp_worker *u)
{
    size_t n = u->nbuckets * 2, i;
    struct udp_flow **b, *f, *next;

    if (atomic_load_explicit(&u->nflows, memory_order_relaxed) < u->nbuckets
        || (b = calloc(n, sizeof(*b))) == NULL)
        return;
    for (i = 0; i < u->nbuckets; i++) {
        for (f = u->buckets[i]; f != NULL; f = next) {
            next = f->hnext;
            f->hnext = b[f->hash & (n - 1)];
            b[f->hash & (n - 1)] = f;
        }
    }
    free(u->buckets);
    u->buckets = b;
    u->nbuckets = n;
}

static void
hash_remove(struct udp_worker *u, struct udp_flow *f)
{
    struct udp_flow **pp = &u->buckets[f->hash & (u->nbuckets - 1)];

    while (*pp != NULL && *pp != f)
        pp = &(*pp)->hnext;
    if (*pp == f)
        *pp = f->hnext;
}

static void
nflows_add(struct udp_worker *u, int d)
{
    atomic_store_explicit(&u->nflows,
                          atomic_load_explicit(&u->nflows,
                                               memory_order_relaxed)
                              + (size_t)(ptrdiff_t)d,
                          memory_order_relaxed);
}

/* ---- flows: life --------------------------------------------------------- */

static void
flow_access_log(struct udp_flow *f, enum accesslog_cause cause)
{
    struct accesslog_rec r;

    memset(&r, 0, sizeof(r));
    r.start = f->start;
    r.end = ev_now(f->l->u->w->loop);
    r.connect = 0; /* a UDP socket is connected at once */
    r.id = f->id;
    r.bytes_up = f->bytes_up;
    r.bytes_down = f->bytes_down;
    r.client = &f->client;
    r.service = f->svc->spec.name;
    r.backend = BACKEND_ADDR(f->be);
    r.attempts = 1;
    r.cause = cause;
    accesslog_emit(f->l->u->w->id, &r);
}

/* End <f> for <cause> and free it; <log>: write its access log line. */
void
udp_flow_end(struct udp_flow *f, enum accesslog_cause cause, int log)
{
    struct udp_listener *l = f->l;
    struct udp_worker *u = l->u;
    struct ev_loop *loop = u->w->loop;

    ev_io_stop(loop, &f->io);
    ev_timer_stop(loop, &f->idle);
    close(f->io.fd);
    hash_remove(u, f);
    if (f->lprev != NULL)
        f->lprev->lnext = f->lnext;
    else
        l->flows = f->lnext;
    if (f->lnext != NULL)
        f->lnext->lprev = f->lprev;
    if (log && accesslog_enabled())
        flow_access_log(f, cause);
    atomic_fetch_sub_explicit(&f->be->active, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&f->svc->st->udp_active, 1,
                              memory_order_relaxed);
    backend_unref(f->be);
    svc_unref(f->svc);
    nflows_add(u, -1);
    if (u->nfree < UDP_FLOW_CACHE) {
        f->hnext = u->free_flows;
        u->free_flows = f;
        u->nfree++;
    } else {
        free(f);
    }
}

static void
drop(struct svc *s, enum stats_udp_drop why)
{
    stats_inc(&svc_ctr(s->st)->udp_drops[why]);
}

/* A connected socket to backend <b>, or -1 with errno. */
static int
backend_socket(const struct backend *b)
{
    struct saddr a;
    int fd = socket(backend_saddr(b, &a)->u.sa.sa_family,
                    SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int saved;

    if (fd < 0)
        return -1;
    if (connect(fd, &a.u.sa, a.len) < 0) {
        saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* Nonzero if the service's source rules let <client> in; counts a
 * refusal. */
static int
source_ok(struct svc *s, const struct saddr *client)
{
    const struct tbl_service *sp = &s->spec;
    struct saddr ip;
    int r;

    if (sp->nallow == 0 && sp->ndeny == 0)
        return 1;
    srcrules_client_ip(client, &ip);
    r = srcrules_match(sp->allow, sp->nallow, sp->deny, sp->ndeny, &ip);
    if (r < 0)
        return 1;
    stats_inc(&svc_ctr(s->st)->src_refused[r]);
    return 0;
}

/* Reserve one of the service's max_flows. */
static int
flow_reserve(struct svc *s)
{
    unsigned max = s->spec.max_flows ? s->spec.max_flows : TBL_UDP_MAX_FLOWS;

    if (atomic_fetch_add_explicit(&s->st->udp_active, 1, memory_order_relaxed)
        < max)
        return 0;
    atomic_fetch_sub_explicit(&s->st->udp_active, 1, memory_order_relaxed);
    drop(s, STATS_UDP_MAX_FLOWS);
    return -1;
}

static struct udp_flow *
flow_alloc(struct udp_worker *u)
{
    struct udp_flow *f = u->free_flows;

    if (f != NULL) {
        u->free_flows = f->hnext;
        u->nfree--;
        return f;
    }
    return malloc(sizeof(*f));
}

/* A new flow on <l> from <client> to <local>, or NULL (counted). */
static struct udp_flow *
flow_new(struct udp_listener *l, const struct saddr *client,
         const struct saddr *local, uint32_t h)
{
    struct udp_worker *u = l->u;
    struct ev_loop *loop = u->w->loop;
    struct svc_tried tried = {0};
    struct svc *s = l->svc;
    struct udp_flow *f;
    struct backend *b;
    double now = ev_now(loop);
    int i, fd;

    if (!source_ok(s, client) || flow_reserve(s) < 0)
        return NULL;
    if ((i = svc_pick_client(s, client, &tried, now)) < 0) {
        drop(s, STATS_UDP_NO_BACKEND);
        goto unreserve;
    }
    b = s->be[i].b;
    if ((fd = backend_socket(b)) < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS
            || errno == ENOMEM) {
            drop(s, STATS_UDP_RESOURCE);
        } else {
            backend_on_fail(b, now);
            drop(s, STATS_UDP_SEND_ERROR);
        }
        goto unreserve;
    }
    if ((f = flow_alloc(u)) == NULL) {
        close(fd);
        drop(s, STATS_UDP_RESOURCE);
        goto unreserve;
    }
    memset(f, 0, sizeof(*f));
    f->l = l;
    f->svc = svc_ref(s);
    f->be = backend_ref(b);
    f->client = *client;
    f->local = *local;
    f->hash = h;
    f->id = worker_next_id(u->w);
    f->start = f->last = now;
    atomic_fetch_add_explicit(&b->active, 1, memory_order_relaxed);
    stats_inc(&svc_ctr(s->st)->udp_flows);
    f->hnext = u->buckets[h & (u->nbuckets - 1)];
    u->buckets[h & (u->nbuckets - 1)] = f;
    f->lnext = l->flows;
    if (l->flows != NULL)
        l->flows->lprev = f;
    l->flows = f;
    nflows_add(u, 1);
    ev_io_init(&f->io, udp_on_backend, fd, EV_READ);
    f->io.data = f;
    ev_io_start(loop, &f->io);
    ev_timer_init(&f->idle, udp_on_idle, s->spec.udp_idle_timeout_ms / 1e3,
                  0.);
    f->idle.data = f;
    ev_timer_start(loop, &f->idle);
    hash_grow(u);
    return f;
unreserve:
    atomic_fetch_sub_explicit(&s->st->udp_active, 1, memory_order_relaxed);
    return NULL;
}

/* The backend's port is closed (an ICMP port unreachable came back): a
 * failure for passive health, and the flow ends, so that the client's
 * next datagram picks another backend. */
static void
flow_refused(struct udp_flow *f)
{
    struct backend_ctr *k;

    backend_on_fail(f->be, ev_now(f->l->u->w->loop));
    if ((k = backend_ctr(f->be)) != NULL)
        stats_inc(&k->n_fail[STATS_FAIL_REFUSED]);
    drop(f->svc, STATS_UDP_REFUSED);
    udp_flow_end(f, ACCESSLOG_CONNECT_FAILURE, 1);
}

/* Lazy idle timer (libev's "be smart about timeouts"): a datagram only
 * moves f->last; the timer, when it fires, starts again for what is
 * left. */
static void
udp_on_idle(struct ev_loop *loop, struct ev_timer *t, int rev)
{
    struct udp_flow *f = t->data;
    double left =
        f->last + f->svc->spec.udp_idle_timeout_ms / 1e3 - ev_now(loop);

    (void)rev;
    if (left > 0.001) {
        ev_timer_set(t, left, 0.);
        ev_timer_start(loop, t);
        return;
    }
    udp_flow_end(f, ACCESSLOG_IDLE_TIMEOUT, 1);
}

/* ---- datagrams ------------------------------------------------------------ */

/* The destination of a datagram received on a wildcard socket, from its
 * packet info, into <local> (which holds the listener's address, and so
 * its port). */
static void
pktinfo_dst(struct msghdr *m, struct saddr *local)
{
    struct cmsghdr *c;

    for (c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO
            && local->u.sa.sa_family == AF_INET) {
            struct in_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof(pi));
            local->u.in.sin_addr = pi.ipi_addr;
        } else if (c->cmsg_level == IPPROTO_IPV6
                   && c->cmsg_type == IPV6_PKTINFO
                   && local->u.sa.sa_family == AF_INET6) {
            struct in6_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof(pi));
            local->u.in6.sin6_addr = pi.ipi6_addr;
        }
    }
}

/* The packet info that makes <local> the source of a reply, into <cb>;
 * returns its length. */
static size_t
pktinfo_src(const struct saddr *local, union udp_cmsg *cb)
{
    struct cmsghdr *c = &cb->hdr;

    memset(cb, 0, sizeof(*cb));
    if (local->u.sa.sa_family == AF_INET) {
        struct in_pktinfo pi;
        memset(&pi, 0, sizeof(pi));
        pi.ipi_spec_dst = local->u.in.sin_addr;
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(pi));
        memcpy(CMSG_DATA(c), &pi, sizeof(pi));
        return CMSG_SPACE(sizeof(pi));
    }
    struct in6_pktinfo pi6;
    memset(&pi6, 0, sizeof(pi6));
    pi6.ipi6_addr = local->u.in6.sin6_addr;
    c->cmsg_level = IPPROTO_IPV6;
    c->cmsg_type = IPV6_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(pi6));
    memcpy(CMSG_DATA(c), &pi6, sizeof(pi6));
    return CMSG_SPACE(sizeof(pi6));
}

/* Send the queued replies: one sendmmsg() per run of replies through
 * the same frontend. A reply the kernel refuses is dropped and counted;
 * the rest still go. */
void
udp_out_flush(struct udp_worker *u)
{
    unsigned i = 0, j, k;
    int r;

    for (k = 0; k < u->nout; k++) {
        struct udp_out *o = &u->out[k];
        struct msghdr *m = &u->out_msgs[k].msg_hdr;
        memset(m, 0, sizeof(*m));
        u->out_iov[k].iov_base = u->out_bytes + o->off;
        u->out_iov[k].iov_len = o->len;
        m->msg_name = &o->client.u.sa;
        m->msg_namelen = o->client.len;
        m->msg_iov = &u->out_iov[k];
        m->msg_iovlen = 1;
        if (o->l->wildcard) {
            m->msg_control = u->out_cmsg[k].b;
            m->msg_controllen = pktinfo_src(&o->local, &u->out_cmsg[k]);
        }
    }
    while (i < u->nout) {
        for (j = i + 1; j < u->nout && u->out[j].l == u->out[i].l; j++)
            ;
        r = sendmmsg(u->out[i].l->io.fd, &u->out_msgs[i], j - i,
                     MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        for (k = i; k < i + (r > 0 ? (unsigned)r : 0); k++) {
            struct svc_ctr *st = svc_ctr(u->out[k].svc->st);
            stats_inc(&st->udp_dgrams_out);
            stats_add(&st->bytes_out, u->out[k].len);
        }
        if (r <= 0) {
            drop(u->out[i].svc, STATS_UDP_SEND_ERROR);
            k = i + 1; /* skip the one refused, send the rest */
        }
        i = k;
    }
    for (k = 0; k < u->nout; k++)
        svc_unref(u->out[k].svc);
    u->nout = 0;
    u->out_used = 0;
    ev_prepare_stop(u->w->loop, &u->flush);
}

void
udp_on_flush(struct ev_loop *loop, struct ev_prepare *p, int rev)
{
    (void)loop;
    (void)rev;
    udp_out_flush(p->data);
}

/* Queue <len> bytes of <buf> for <f>'s client, from the address it sent
 * to. */
static void
reply_queue(struct udp_flow *f, const char *buf, size_t len)
{
    struct udp_worker *u = f->l->u;
    struct udp_out *o;

    if (u->nout == UDP_OUT_BATCH || u->out_used + len > UDP_OUT_BYTES)
        udp_out_flush(u);
    if (u->nout == 0)
        ev_prepare_start(u->w->loop, &u->flush);
    o = &u->out[u->nout++];
    o->l = f->l;
    o->svc = svc_ref(f->svc);
    o->client = f->client;
    o->local = f->local;
    o->off = u->out_used;
    o->len = len;
    memcpy(u->out_bytes + u->out_used, buf, len);
    u->out_used += len;
}

/* One datagram from a client: to its flow's backend, the flow made
 * first if it is new. */
static void
from_client(struct udp_listener *l, struct mmsghdr *mm)
{
    struct udp_worker *u = l->u;
    struct msghdr *m = &mm->msg_hdr;
    struct saddr client, local = l->addr;
    struct udp_flow *f;
    uint32_t h;

    if (m->msg_flags & MSG_TRUNC) {
        drop(l->svc, STATS_UDP_TOO_LARGE);
        return;
    }
    memset(&client, 0, sizeof(client));
    memcpy(&client.u, m->msg_name,
           m->msg_namelen < sizeof(client.u) ? m->msg_namelen
                                             : sizeof(client.u));
    client.len = m->msg_namelen;
    if (l->wildcard)
        pktinfo_dst(m, &local);
    h = flow_hash(u, &client, &local);
    if ((f = flow_find(u, &client, &local, h)) == NULL
        && (f = flow_new(l, &client, &local, h)) == NULL)
        return;
    if (send(f->io.fd, m->msg_iov->iov_base, mm->msg_len, MSG_DONTWAIT) < 0) {
        if (errno == ECONNREFUSED)
            flow_refused(f);
        else
            drop(f->svc, STATS_UDP_SEND_ERROR);
        return;
    }
    f->last = ev_now(u->w->loop);
    f->bytes_up += mm->msg_len;
    stats_inc(&svc_ctr(f->svc->st)->udp_dgrams_in);
    stats_add(&svc_ctr(f->svc->st)->bytes_in, mm->msg_len);
}

void
udp_on_client(struct ev_loop *loop, struct ev_io *io, int rev)
{
    struct udp_listener *l = io->data;
    struct udp_worker *u = l->u;
    int round, n, i;

    (void)rev;
    for (round = 0; round < UDP_ROUNDS; round++) {
        for (i = 0; i < UDP_BATCH; i++) {
            struct msghdr *m = &u->msgs[i].msg_hdr;
            m->msg_namelen = sizeof(u->from[i].u);
            m->msg_control = l->wildcard ? u->cmsg[i].b : NULL;
            m->msg_controllen = l->wildcard ? sizeof(u->cmsg[i].b) : 0;
            m->msg_flags = 0;
        }
        n = recvmmsg(io->fd, u->msgs, UDP_BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR)
                log_rl(LOG_WARN, ev_now(loop), "udp %s: %s", l->addr_str,
                       strerror(errno));
            return;
        }
        for (i = 0; i < n; i++)
            from_client(l, &u->msgs[i]);
        if (n < UDP_BATCH)
            return;
    }
}

/* Replies from <f>'s backend, to its client. */
static void
udp_on_backend(struct ev_loop *loop, struct ev_io *io, int rev)
{
    struct udp_flow *f = io->data;
    char *buf = f->l->u->bufs;
    const struct tbl_service *sp = &f->svc->spec;
    ssize_t n;
    int k;

    (void)rev;
    for (k = 0; k < UDP_REPLY_BATCH; k++) {
        n = recv(io->fd, buf, UDP_DGRAM_MAX, MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0 && errno == ECONNREFUSED) {
            flow_refused(f);
            return;
        }
        if (n < 0) {
            udp_flow_end(f, ACCESSLOG_RELAY_ERROR, 1);
            return;
        }
        f->last = ev_now(loop);
        if (f->replies++ == 0)
            backend_on_success(f->be);
        if (n > UDP_DGRAM_MAX) {
            drop(f->svc, STATS_UDP_TOO_LARGE);
        } else {
            reply_queue(f, buf, (size_t)n);
            f->bytes_down += (uint64_t)n;
        }
        if (sp->udp_responses > 0 && f->replies >= sp->udp_responses) {
            udp_flow_end(f, ACCESSLOG_SERVER_CLOSE, 1);
            return;
        }
    }
}

