#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "accesslog.h"
#include "apply.h"
#include "clienthash.h"
#include "log.h"
#include "srcrules.h"
#include "stats.h"
#include "svc-t.h"
#include "udp.h"
#include "worker.h"

#define UDP_BATCH       8     /* datagrams per recvmmsg() */
#define UDP_ROUNDS      4     /* recvmmsg() calls per readiness event */
#define UDP_REPLY_BATCH 16    /* replies read per readiness of a flow */
#define UDP_DGRAM_MAX   65536 /* larger than any UDP payload */
#define UDP_FLOW_CACHE  1024  /* idle flow objects kept */
#define UDP_BUCKETS_MIN 256
#define UDP_OUT_BATCH   32           /* replies per sendmmsg() */
#define UDP_OUT_BYTES   (256 * 1024) /* their bytes, at most */

/* Room for either family's packet info, aligned for its header. */
#define UDP_CMSG_SPACE CMSG_SPACE(sizeof(struct in6_pktinfo))

union udp_cmsg {
    char b[UDP_CMSG_SPACE];
    struct cmsghdr hdr;
};

struct udp_listener;

struct udp_flow {
    struct ev_io io; /* the connected socket to the backend */
    struct ev_timer idle;
    struct udp_flow *hnext;         /* hash chain */
    struct udp_flow *lprev, *lnext; /* in its listener's list */
    struct udp_listener *l;
    struct svc *svc;    /* reference */
    struct backend *be; /* reference */
    struct saddr client;
    struct saddr local; /* where the client sent to */
    uint32_t hash;
    uint32_t replies;
    uint64_t id;
    double start, last;
    uint64_t bytes_up, bytes_down;
};

struct udp_listener {
    struct ev_io io;
    struct saddr addr;
    char addr_str[SADDR_STR_MAX];
    int wildcard;    /* replies need the client's destination as source */
    struct svc *svc; /* reference */
    struct udp_worker *u;
    struct udp_listener *next;
    struct udp_flow *flows; /* its flows, to end when it closes */
};

/* A reply waiting for the worker's next sendmmsg() on its frontend. */
struct udp_out {
    struct udp_listener *l;
    struct svc *svc; /* reference, for the counters */
    struct saddr client, local;
    size_t off, len; /* in udp_worker.out_bytes */
};

/* A sorted set of addresses. */
struct udp_addrs {
    struct saddr *v;
    size_t n;
};

struct udp_worker {
    struct worker *w;
    struct udp_listener *listeners;
    struct udp_flow **buckets;
    size_t nbuckets; /* a power of two */
    uint64_t seed;   /* of flow_hash() */
    atomic_size_t nflows;
    struct udp_flow *free_flows; /* linked by hnext */
    size_t nfree;
    /* One recvmmsg() batch, and the datagram buffers. */
    struct mmsghdr msgs[UDP_BATCH];
    struct iovec iov[UDP_BATCH];
    struct saddr from[UDP_BATCH];
    union udp_cmsg cmsg[UDP_BATCH];
    char *bufs; /* UDP_BATCH * UDP_DGRAM_MAX */
    /* Replies queued by the flows during one loop iteration, sent in
     * one sendmmsg() per frontend before the loop polls again (or when
     * the queue is full, or before a commit may close a frontend). */
    struct udp_out out[UDP_OUT_BATCH];
    unsigned nout;
    size_t out_used;
    char *out_bytes; /* UDP_OUT_BYTES */
    struct mmsghdr out_msgs[UDP_OUT_BATCH];
    struct iovec out_iov[UDP_OUT_BATCH];
    union udp_cmsg out_cmsg[UDP_OUT_BATCH];
    struct ev_prepare flush;
    /* Control loop only: what the worker holds once it has taken the
     * newest plan posted to it, what it may still hold until then, and
     * that plan's generation; the others, for udp_plan_build(). */
    struct udp_addrs held, stale;
    uint64_t posted_gen;
    struct udp_worker *ctl_next;
};

struct udp_plan {
    struct udp_addrs addrs;  /* what the worker serves once committed */
    struct svc **svcs;       /* references, one per address */
    unsigned char *taken;    /* scratch for the commit, one per address */
    struct udp_listener *fresh; /* opened on the control loop */
    struct udp_addrs held, stale; /* the control loop's records, to post */
};

/* Every worker's UDP state, for the control loop. */
static struct udp_worker *ctl_workers;

static void udp_on_client(struct ev_loop *loop, struct ev_io *io, int rev);
static void udp_on_backend(struct ev_loop *loop, struct ev_io *io, int rev);
static void udp_on_idle(struct ev_loop *loop, struct ev_timer *t, int rev);
static void udp_on_flush(struct ev_loop *loop, struct ev_prepare *p,
                         int rev);

/* ---- address sets ------------------------------------------------------- */

static int
saddr_pcmp(const void *a, const void *b)
{
    return saddr_cmp(a, b);
}

static int
addrs_has(const struct udp_addrs *s, const struct saddr *a)
{
    return s->n > 0 && bsearch(a, s->v, s->n, sizeof(*s->v), saddr_pcmp);
}

static void
addrs_free(struct udp_addrs *s)
{
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

/* ---- per-worker state ---------------------------------------------------- */

int
udp_worker_init(struct worker *w)
{
    struct udp_worker *u = calloc(1, sizeof(*u));

    if (u == NULL)
        return -1;
    u->buckets = calloc(UDP_BUCKETS_MIN, sizeof(*u->buckets));
    if (u->buckets == NULL) {
        free(u);
        return -1;
    }
    u->nbuckets = UDP_BUCKETS_MIN;
    u->seed = client_seed(u);
    u->w = w;
    ev_prepare_init(&u->flush, udp_on_flush);
    u->flush.data = u;
    u->ctl_next = ctl_workers;
    ctl_workers = u;
    w->udp = u;
    return 0;
}

/* The datagram buffers, made by the control loop for the first plan
 * with a UDP frontend, before the worker can read a datagram: 512 KiB
 * that a worker without UDP does without. Returns 0, or -1 when out of
 * memory. */
static int
udp_worker_bufs(struct udp_worker *u)
{
    size_t i;

    if (u->bufs != NULL)
        return 0;
    u->bufs = malloc((size_t)UDP_BATCH * UDP_DGRAM_MAX);
    u->out_bytes = malloc(UDP_OUT_BYTES);
    if (u->bufs == NULL || u->out_bytes == NULL) {
        free(u->bufs);
        free(u->out_bytes);
        u->bufs = u->out_bytes = NULL;
        return -1;
    }
    for (i = 0; i < UDP_BATCH; i++) {
        u->iov[i].iov_base = u->bufs + i * UDP_DGRAM_MAX;
        u->iov[i].iov_len = UDP_DGRAM_MAX;
        u->msgs[i].msg_hdr.msg_iov = &u->iov[i];
        u->msgs[i].msg_hdr.msg_iovlen = 1;
        u->msgs[i].msg_hdr.msg_name = &u->from[i].u;
    }
    return 0;
}

size_t
udp_worker_nflows(struct worker *w)
{
    return w->udp == NULL
               ? 0
               : atomic_load_explicit(&w->udp->nflows, memory_order_relaxed);
}

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
    r.service = f->svc->name;
    r.backend = f->be->addr_str;
    r.attempts = 1;
    r.cause = cause;
    accesslog_emit(f->l->u->w->id, &r);
}

/* End <f> for <cause> and free it; <log>: write its access log line. */
static void
flow_end(struct udp_flow *f, enum accesslog_cause cause, int log)
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
    stats_inc(&s->st->udp_drops[why]);
}

/* A connected socket to backend <b>, or -1 with errno. */
static int
backend_socket(const struct backend *b)
{
    int fd = socket(b->addr.u.sa.sa_family,
                    SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int saved;

    if (fd < 0)
        return -1;
    if (connect(fd, &b->addr.u.sa, b->addr.len) < 0) {
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
    stats_inc(&s->st->src_refused[r]);
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
    stats_inc(&s->st->udp_flows);
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
    backend_on_fail(f->be, ev_now(f->l->u->w->loop));
    stats_inc(&f->be->n_fail[STATS_FAIL_REFUSED]);
    drop(f->svc, STATS_UDP_REFUSED);
    flow_end(f, ACCESSLOG_CONNECT_FAILURE, 1);
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
    flow_end(f, ACCESSLOG_IDLE_TIMEOUT, 1);
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
static void
out_flush(struct udp_worker *u)
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
            struct svc_stats *st = u->out[k].svc->st;
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

static void
udp_on_flush(struct ev_loop *loop, struct ev_prepare *p, int rev)
{
    (void)loop;
    (void)rev;
    out_flush(p->data);
}

/* Queue <len> bytes of <buf> for <f>'s client, from the address it sent
 * to. */
static void
reply_queue(struct udp_flow *f, const char *buf, size_t len)
{
    struct udp_worker *u = f->l->u;
    struct udp_out *o;

    if (u->nout == UDP_OUT_BATCH || u->out_used + len > UDP_OUT_BYTES)
        out_flush(u);
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
    stats_inc(&f->svc->st->udp_dgrams_in);
    stats_add(&f->svc->st->bytes_in, mm->msg_len);
}

static void
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
            flow_end(f, ACCESSLOG_RELAY_ERROR, 1);
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
            flow_end(f, ACCESSLOG_SERVER_CLOSE, 1);
            return;
        }
    }
}

/* ---- frontend sockets ---------------------------------------------------- */

static int
set_int(int fd, int level, int name, int v)
{
    return setsockopt(fd, level, name, &v, sizeof(v));
}

/* A UDP socket bound to <a>. No SO_REUSEADDR: for UDP it would let any
 * socket of the same user share the port. Returns it, or -1 with errno. */
static int
frontend_socket(const struct saddr *a, int reuseport, int freebind)
{
    int fam = a->u.sa.sa_family, v6 = fam == AF_INET6, fd, saved;

    fd = socket(fam, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if ((reuseport && set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1) < 0)
        || (v6 && set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1) < 0)
        || (freebind
            && set_int(fd, v6 ? IPPROTO_IPV6 : IPPROTO_IP,
                       v6 ? IPV6_FREEBIND : IP_FREEBIND, 1)
                   < 0)
        || (saddr_is_any(a)
            && set_int(fd, v6 ? IPPROTO_IPV6 : IPPROTO_IP,
                       v6 ? IPV6_RECVPKTINFO : IP_PKTINFO, 1)
                   < 0)
        || bind(fd, &a->u.sa, a->len) < 0) {
        saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* Nonzero if some worker of ours may hold a socket on <a>. */
static int
ours(const struct saddr *a)
{
    const struct udp_worker *u;

    for (u = ctl_workers; u != NULL; u = u->ctl_next)
        if (addrs_has(&u->held, a) || addrs_has(&u->stale, a))
            return 1;
    return 0;
}

static struct udp_listener *
listener_open(struct worker *w, struct udp_worker *u, const struct saddr *a,
              int strict, struct err *e)
{
    int reuse = w->nworkers > 1, fd = -1;
    char s[SADDR_STR_MAX];
    struct udp_listener *l;

    /* SO_REUSEPORT would also let another process of the same user share
     * the port unnoticed: the first of our sockets on an address makes
     * sure that nobody holds it. */
    if (reuse && w->id == 0 && !ours(a)) {
        if ((fd = frontend_socket(a, 0, !strict)) < 0)
            goto fail;
        close(fd);
    }
    if ((fd = frontend_socket(a, reuse, !strict)) < 0)
        goto fail;
    if ((l = calloc(1, sizeof(*l))) == NULL) {
        close(fd);
        errno = ENOMEM;
        goto fail;
    }
    l->addr = *a;
    l->wildcard = saddr_is_any(a);
    l->u = u;
    saddr_str(a, l->addr_str, sizeof(l->addr_str));
    ev_io_init(&l->io, udp_on_client, fd, EV_READ);
    l->io.data = l;
    return l;
fail:
    err_set(e, "cannot listen on udp %s: %s", saddr_str(a, s, sizeof(s)),
            strerror(errno));
    return NULL;
}

/* Close <l> and end its flows (without access log lines when <log> is
 * 0). The caller unlinked it. */
static void
listener_close(struct udp_listener *l, int log)
{
    while (l->flows != NULL)
        flow_end(l->flows, ACCESSLOG_DRAIN_RESET, log);
    ev_io_stop(l->u->w->loop, &l->io);
    close(l->io.fd);
    svc_unref(l->svc);
    free(l);
}

static void
listener_free_chain(struct udp_listener *l)
{
    struct udp_listener *next;

    for (; l != NULL; l = next) {
        next = l->next;
        close(l->io.fd);
        free(l);
    }
}

/* ---- plans ----------------------------------------------------------------- */

void
udp_plan_free(struct udp_plan *up)
{
    size_t i;

    if (up == NULL)
        return;
    listener_free_chain(up->fresh);
    for (i = 0; up->svcs != NULL && i < up->addrs.n; i++)
        svc_unref(up->svcs[i]);
    free(up->svcs);
    free(up->taken);
    addrs_free(&up->addrs);
    addrs_free(&up->held);
    addrs_free(&up->stale);
    free(up);
}

void
udp_plan_adopt(struct udp_plan *up, struct udp_plan *older)
{
    struct udp_listener **tail;

    if (up == NULL || older == NULL)
        return;
    for (tail = &up->fresh; *tail != NULL; tail = &(*tail)->next)
        ;
    *tail = older->fresh;
    older->fresh = NULL;
}

/* One frontend and its service, for sorting. */
struct fe {
    struct saddr a;
    struct svc *s;
};

static int
fe_cmp(const void *x, const void *y)
{
    return saddr_cmp(&((const struct fe *)x)->a, &((const struct fe *)y)->a);
}

/* The UDP frontends of pl->t that <serve> names, sorted, without
 * duplicates, into up->addrs and up->svcs. */
static int
plan_frontends(struct udp_plan *up, const struct apply_plan *pl,
               enum udp_serve serve)
{
    const struct table *t = pl->t;
    struct fe *v;
    size_t i, j, n = 0;

    for (i = 0; i < t->nservices; i++)
        if (t->services[i].proto == TBL_PROTO_UDP)
            n += t->services[i].nfrontends;
    if (n == 0 || serve == UDP_SERVE_NONE)
        return 0;
    if ((v = malloc(n * sizeof(*v))) == NULL)
        return -1;
    for (n = 0, i = 0; i < t->nservices; i++) {
        const struct tbl_service *ts = &t->services[i];
        if (ts->proto != TBL_PROTO_UDP || ts->reach != TBL_REACH_LISTEN
            || (serve == UDP_SERVE_SHARED && ts->affinity_timeout_ms != 0))
            continue;
        for (j = 0; j < ts->nfrontends; j++) {
            v[n].a = ts->frontends[j];
            v[n++].s = pl->svcs[i];
        }
    }
    qsort(v, n, sizeof(*v), fe_cmp);
    up->addrs.v = malloc((n ? n : 1) * sizeof(*up->addrs.v));
    up->svcs = calloc(n ? n : 1, sizeof(*up->svcs));
    up->taken = calloc(n ? n : 1, 1);
    if (up->addrs.v == NULL || up->svcs == NULL || up->taken == NULL) {
        free(v);
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (up->addrs.n > 0 && saddr_cmp(&up->addrs.v[up->addrs.n - 1],
                                         &v[i].a) == 0)
            continue;
        up->addrs.v[up->addrs.n] = v[i].a;
        up->svcs[up->addrs.n++] = svc_ref(v[i].s);
    }
    free(v);
    return 0;
}

/* The records to post with <up>: it holds up->addrs, and may still hold
 * what it held, and what it was still allowed, until it commits. */
static int
plan_records(struct udp_plan *up, const struct worker *w,
             const struct udp_worker *u)
{
    int committed = atomic_load(&w->generation) == u->posted_gen;
    size_t ns = (committed ? 0 : u->stale.n) + u->held.n;

    up->held.v = malloc((up->addrs.n ? up->addrs.n : 1) * sizeof(struct saddr));
    up->stale.v = malloc((ns ? ns : 1) * sizeof(struct saddr));
    if (up->held.v == NULL || up->stale.v == NULL)
        return -1;
    if (up->addrs.n > 0)
        memcpy(up->held.v, up->addrs.v, up->addrs.n * sizeof(struct saddr));
    up->held.n = up->addrs.n;
    if (!committed && u->stale.n > 0)
        memcpy(up->stale.v, u->stale.v, u->stale.n * sizeof(struct saddr));
    up->stale.n = committed ? 0 : u->stale.n;
    if (u->held.n > 0)
        memcpy(up->stale.v + up->stale.n, u->held.v,
               u->held.n * sizeof(struct saddr));
    up->stale.n += u->held.n;
    if (up->stale.n > 1)
        qsort(up->stale.v, up->stale.n, sizeof(struct saddr), saddr_pcmp);
    return 0;
}

int
udp_plan_build(struct worker *w, struct apply_plan *pl, enum udp_serve serve,
               int strict, struct err *e)
{
    struct udp_plan *up = calloc(1, sizeof(*up));
    struct udp_worker *u = w->udp;
    size_t i, kept = 0;
    char m[ERR_STR_MAX];

    if ((pl->udp = up) == NULL || plan_frontends(up, pl, serve) < 0
        || plan_records(up, w, u) < 0
        || (up->addrs.n > 0 && udp_worker_bufs(u) < 0))
        return err_set(e, "out of memory opening udp listeners");
    for (i = 0; i < up->addrs.n; i++) {
        const struct saddr *a = &up->addrs.v[i];
        struct udp_listener *l;
        if (!addrs_has(&u->held, a)) {
            if ((l = listener_open(w, u, a, strict, e)) == NULL) {
                if (strict)
                    return -1;
                if (w->id == 0)
                    log_error("service %s: %s", up->svcs[i]->name,
                              err_str(e, m, sizeof(m)));
                svc_unref(up->svcs[i]);
                continue;
            }
            l->next = up->fresh;
            up->fresh = l;
        }
        up->addrs.v[kept] = *a;
        up->svcs[kept++] = up->svcs[i];
    }
    up->addrs.n = kept;
    up->held.n = 0; /* what opened */
    for (i = 0; i < kept; i++)
        up->held.v[up->held.n++] = up->addrs.v[i];
    return 0;
}

void
udp_plan_posted(struct worker *w, struct udp_plan *up, uint64_t generation)
{
    struct udp_worker *u = w->udp;

    if (up == NULL || up->held.v == NULL)
        return;
    addrs_free(&u->held);
    addrs_free(&u->stale);
    u->held = up->held;
    u->stale = up->stale;
    memset(&up->held, 0, sizeof(up->held));
    memset(&up->stale, 0, sizeof(up->stale));
    u->posted_gen = generation;
}

/* Position of <a> in up->addrs, or -1. */
static long
plan_find(const struct udp_plan *up, const struct saddr *a)
{
    const struct saddr *p;

    if (up->addrs.n == 0)
        return -1;
    p = bsearch(a, up->addrs.v, up->addrs.n, sizeof(*p), saddr_pcmp);
    return p != NULL ? p - up->addrs.v : -1;
}

/* Keep <l> for its address if the plan wants it and no other listener
 * took it yet: serving the plan's service and started. Returns nonzero
 * if kept. */
static int
claim(struct udp_plan *up, struct udp_listener *l, int fresh)
{
    long i = plan_find(up, &l->addr);
    struct svc *old = l->svc;

    if (i < 0 || up->taken[i])
        return 0;
    up->taken[i] = 1;
    l->svc = svc_ref(up->svcs[i]);
    svc_unref(old);
    if (fresh && l->u->w->id == 0)
        log_info("listening on udp %s for service %s", l->addr_str,
                 l->svc->name);
    ev_io_start(l->u->w->loop, &l->io);
    return 1;
}

void
udp_plan_commit(struct worker *w, struct udp_plan *up)
{
    struct udp_worker *u = w->udp;
    struct udp_listener *l, **pp, *next;

    if (up == NULL)
        return;
    /* Queued replies name their frontend, which may close below. */
    if (u->nout > 0)
        out_flush(u);
    if (up->addrs.n > 0)
        memset(up->taken, 0, up->addrs.n);
    /* Those held before first: their flows keep going. */
    for (pp = &u->listeners; (l = *pp) != NULL;) {
        if (claim(up, l, 0)) {
            pp = &l->next;
            continue;
        }
        if (w->id == 0)
            log_info("closing udp listener %s (service %s removed or moved)",
                     l->addr_str, l->svc->name);
        *pp = l->next;
        listener_close(l, 1);
    }
    for (l = up->fresh; l != NULL; l = next) {
        next = l->next;
        if (claim(up, l, 1)) {
            l->next = u->listeners;
            u->listeners = l;
        } else {
            close(l->io.fd);
            free(l);
        }
    }
    up->fresh = NULL;
}

void
udp_worker_free(struct worker *w)
{
    struct udp_worker *u = w->udp, **pu;
    struct udp_listener *l;
    struct udp_flow *f;

    if (u == NULL)
        return;
    /* Replies not sent yet are dropped with the sockets. */
    while (u->nout > 0)
        svc_unref(u->out[--u->nout].svc);
    ev_prepare_stop(w->loop, &u->flush);
    while ((l = u->listeners) != NULL) {
        u->listeners = l->next;
        listener_close(l, 0);
    }
    while ((f = u->free_flows) != NULL) {
        u->free_flows = f->hnext;
        free(f);
    }
    for (pu = &ctl_workers; *pu != NULL; pu = &(*pu)->ctl_next) {
        if (*pu == u) {
            *pu = u->ctl_next;
            break;
        }
    }
    addrs_free(&u->held);
    addrs_free(&u->stale);
    free(u->buckets);
    free(u->bufs);
    free(u->out_bytes);
    free(u);
    w->udp = NULL;
}
