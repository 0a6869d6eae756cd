#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "apply.h"
#include "clienthash.h"
#include "log.h"
#include "svc-t.h"
#include "udp-t.h"
#include "worker.h"

/* Frontend sockets, each worker's UDP state, and the apply step's plans:
 * built on the control loop, committed on the worker's. */

/* Every worker's UDP state, for the control loop. */
static struct udp_worker *ctl_workers;

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
              unsigned flags, struct err *e)
{
    int freebind = !(flags & UDP_PLAN_STRICT), fd = -1;
    char s[SADDR_STR_MAX];
    struct udp_listener *l;

    /* SO_REUSEPORT, with one worker too: a takeover's successor opens
     * its sockets beside ours. It would also let another process of the
     * same user share the port unnoticed: the first of our sockets on an
     * address makes sure that nobody holds it, unless the previous ferry
     * does. */
    if (w->id == 0 && !ours(a) && !(flags & UDP_PLAN_TAKEOVER)) {
        if ((fd = frontend_socket(a, 0, freebind)) < 0)
            goto fail;
        close(fd);
    }
    if ((fd = frontend_socket(a, 1, freebind)) < 0)
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
        udp_flow_end(l->flows, ACCESSLOG_DRAIN_RESET, log);
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

    /* Only a LISTEN service is served here: one that is not REDIRECT. */
    for (i = 0; i < t->nlpos; i++)
        if (table_service(t, t->lpos[i])->proto == TBL_PROTO_UDP)
            n += table_service(t, t->lpos[i])->nfrontends;
    if (n == 0 || serve == UDP_SERVE_NONE)
        return 0;
    if ((v = malloc(n * sizeof(*v))) == NULL)
        return -1;
    for (n = 0, i = 0; i < t->nlpos; i++) {
        const struct tbl_service *ts = table_service(t, t->lpos[i]);
        if (ts->proto != TBL_PROTO_UDP || ts->reach != TBL_REACH_LISTEN
            || (serve == UDP_SERVE_SHARED && ts->affinity_timeout_ms != 0))
            continue;
        for (j = 0; j < ts->nfrontends; j++) {
            v[n].a = ts->frontends[j];
            v[n++].s = svcv_get(pl->svcs, ts->pos);
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
               unsigned flags, struct err *e)
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
            if ((l = listener_open(w, u, a, flags, e)) == NULL) {
                if (flags & UDP_PLAN_STRICT)
                    return -1;
                if (w->id == 0)
                    log_error("service %s: %s", up->svcs[i]->spec.name,
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
                 l->svc->spec.name);
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
        udp_out_flush(u);
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
                     l->addr_str, l->svc->spec.name);
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

