#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "apply.h"
#include "drain.h"
#include "listener.h"
#include "log.h"
#include "proxy-t.h"
#include "stats.h"
#include "svc-t.h"
#include "udp.h"
#include "wthread.h"

/* Stage 2's work for one worker. */
struct apply_thread {
    struct apply_plan *plan;
    struct apply_addrs addrs; /* plan->addrs, for the control loop */
    struct apply_addrs stale; /* what it may listen on until it commits */
};

/* One apply in progress: what stages 1 and 2 built. apply_unwind()
 * releases whatever stage 3 did not take. */
struct apply {
    struct proxy *p;
    struct table *t;
    enum proxy_apply_mode mode;
    size_t naddrs;               /* frontends in the table */
    struct svcv *svcs;           /* stage 1: t's runtime services */
    int delta;                   /* ... made from the ones in force */
    struct apply_thread *thread; /* stage 2: workers 0..N-1 */
    enum apply_listen threads;   /* the descriptor guard's verdict, */
    size_t fd_limit;             /* against this limit */
};

/* ---- address sets ------------------------------------------------------ */

static int
saddr_pcmp(const void *a, const void *b)
{
    return saddr_cmp(a, b);
}

static int
addrs_has(const struct apply_addrs *s, const struct saddr *a)
{
    return s->n > 0 && bsearch(a, s->v, s->n, sizeof(*s->v), saddr_pcmp);
}

/* Room for <n> addresses in <s> (empty). Returns 0, or -1 when out of
 * memory. */
static int
addrs_alloc(struct apply_addrs *s, size_t n)
{
    s->n = 0;
    s->v = n > 0 ? malloc(n * sizeof(*s->v)) : NULL;
    return n > 0 && s->v == NULL ? -1 : 0;
}

/* Sort what was added, once each: services with server names share
 * frontends (README: SNI routing). */
static void
addrs_sort(struct apply_addrs *s)
{
    size_t i, n = 0;

    if (s->n > 1)
        qsort(s->v, s->n, sizeof(*s->v), saddr_pcmp);
    for (i = 0; i < s->n; i++)
        if (n == 0 || saddr_cmp(&s->v[n - 1], &s->v[i]) != 0)
            s->v[n++] = s->v[i];
    s->n = n;
}

/* <a> and <b> together, sorted, in <out>. */
static int
addrs_union(struct apply_addrs *out, const struct apply_addrs *a,
            const struct apply_addrs *b)
{
    size_t i = 0, j = 0;

    if (addrs_alloc(out, a->n + b->n) < 0)
        return -1;
    while (i < a->n && j < b->n) {
        int c = saddr_cmp(&a->v[i], &b->v[j]);
        out->v[out->n++] = c <= 0 ? a->v[i] : b->v[j];
        i += c <= 0;
        j += c >= 0;
    }
    while (i < a->n)
        out->v[out->n++] = a->v[i++];
    while (j < b->n)
        out->v[out->n++] = b->v[j++];
    return 0;
}

static void
addrs_free(struct apply_addrs *s)
{
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

/* ---- plans ------------------------------------------------------------- */

void
apply_plan_free(struct apply_plan *pl)
{
    if (pl == NULL)
        return;
    listener_free_list(&pl->fresh);
    udp_plan_free(pl->udp);
    free(pl->index);
    free(pl->lsvc);
    addrs_free(&pl->addrs);
    svcv_unref(pl->svcs);
    table_unref(pl->t);
    free(pl);
}

void
apply_plan_adopt(struct apply_plan *pl, struct apply_plan *older)
{
    struct listener **tail = &pl->fresh;

    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = older->fresh;
    older->fresh = NULL;
    udp_plan_adopt(pl->udp, older->udp);
}

/* A plan for <a>'s table, with its own references. */
static struct apply_plan *
plan_new(struct apply *a)
{
    struct apply_plan *pl = calloc(1, sizeof(*pl));

    if (pl == NULL)
        return NULL;
    pl->svcs = svcv_ref(a->svcs);
    pl->t = table_ref(a->t);
    return pl;
}

static int
listener_cmp(const void *a, const void *b)
{
    return saddr_cmp(&(*(struct listener *const *)a)->addr,
                     &(*(struct listener *const *)b)->addr);
}

/* pl->index: <w>'s listeners and pl->fresh, sorted by address. Returns
 * 0, or -1 when out of memory. */
static int
plan_index(struct apply_plan *pl, const struct worker *w)
{
    struct listener *lists[2] = {w->listeners, pl->fresh}, *l;
    size_t n = 0, i;

    for (i = 0; i < 2; i++)
        for (l = lists[i]; l != NULL; l = l->next)
            n++;
    free(pl->index);
    pl->index = malloc((n ? n : 1) * sizeof(*pl->index));
    if (pl->index == NULL)
        return -1;
    n = 0;
    for (i = 0; i < 2; i++)
        for (l = lists[i]; l != NULL; l = l->next)
            pl->index[n++] = l;
    qsort(pl->index, n, sizeof(*pl->index), listener_cmp);
    pl->nindex = n;
    return 0;
}

/* The first position in pl->index of a listener on <a>, or where one
 * would be. */
static size_t
plan_lower(const struct apply_plan *pl, const struct saddr *a)
{
    size_t lo = 0, hi = pl->nindex;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (saddr_cmp(&pl->index[mid]->addr, a) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ---- commit: listeners follow the plan (on the worker's own loop) ------ */

/* Room for the order of <n> listeners; out of memory, the order stays
 * unknown (the next plan takes the full path). */
static void
order_room(struct worker *w, size_t n)
{
    if (n == 0)
        return;
    w->lorder = malloc(n * sizeof(*w->lorder));
    w->laddrs = malloc(n * sizeof(*w->laddrs));
    w->lsvcs = malloc(n * sizeof(*w->lsvcs));
    if (w->lorder == NULL || w->laddrs == NULL || w->lsvcs == NULL)
        worker_forget_order(w);
    else
        w->nlorder = n;
}

static void
order_note(struct worker *w, size_t i, struct listener *l,
           const struct saddr *a, struct svc *s)
{
    if (w->nlorder == 0)
        return;
    w->lorder[i] = l;
    w->laddrs[i] = *a;
    w->lsvcs[i] = s;
}

/* The listener to serve <a> from now on, or NULL. A worker thread may
 * hold two for a moment: an old one, and a fresh one opened while the
 * plan closing the old one was on its way. The fresh one stays: nobody
 * accepted from it yet, so more connections may wait in its queue; the
 * old one is LISTENER_REPLACED. */
static struct listener *
claim_one(struct apply_plan *pl, const struct saddr *a)
{
    struct listener *l = NULL, *c;
    size_t i;

    for (i = plan_lower(pl, a);
         i < pl->nindex && saddr_cmp(&(c = pl->index[i])->addr, a) == 0; i++) {
        if (l == NULL || c->mark == LISTENER_FRESH) {
            if (l != NULL)
                l->mark = LISTENER_REPLACED;
            l = c;
        } else {
            c->mark = LISTENER_REPLACED;
        }
    }
    return l;
}

/* Point the listener of every address of <pl> at its service and start
 * it; it is then LISTENER_KEPT. */
static void
claim_listeners(struct worker *w, struct apply_plan *pl)
{
    struct listener *l;
    size_t i;

    worker_forget_order(w);
    order_room(w, pl->addrs.n);
    for (i = 0; i < pl->addrs.n; i++) {
        struct svc *s = pl->lsvc[i];
        /* None only if a thread failed to commit an earlier plan (out of
         * memory) and lost what it opened: the next table opens it. */
        if ((l = claim_one(pl, &pl->addrs.v[i])) == NULL) {
            worker_forget_order(w);
            continue;
        }
        order_note(w, i, l, &pl->addrs.v[i], s);
        listener_set_svc(l, s);
        if (l->mark == LISTENER_FRESH && w->id == 0)
            log_info("listening on %s for service %s", l->addr_str,
                     s->spec.name);
        l->mark = LISTENER_KEPT;
        listener_start(l);
    }
}

/* Close every listener of <w> the plan did not claim. Each address is
 * logged once, by worker 0; a thread logs only what it held before (a
 * fresh listener no longer wanted was never announced). */
static void
close_unclaimed(struct worker *w)
{
    struct listener *l, **pl;

    for (pl = &w->listeners; (l = *pl) != NULL;) {
        if (l->mark == LISTENER_KEPT) {
            pl = &l->next;
            continue;
        }
        if (w->id == 0 || l->mark == LISTENER_STALE)
            log_info("%sclosing listener %s (service %s removed or moved)",
                     w->id == 0 ? "" : "worker: ", l->addr_str,
                     l->svc ? l->svc->spec.name : "-");
        *pl = l->next;
        listener_free(l);
    }
}

/* Worker 0 serves the services with ClientIP affinity, alone (svc.h): a
 * changed one takes over the pins of the one it replaces here, on the
 * thread that writes them, from the service of the same name in the
 * table it served until now. */
static void
inherit_pins(struct worker *w, struct apply_plan *pl)
{
    const struct table *t = pl->t;
    size_t i;

    if (w->id != 0 || w->dtable == NULL || !pl->affinity)
        return;
    for (i = 0; i < t->nservices; i++) {
        const struct tbl_service *was;
        struct svc *from;
        if (svcv_get(pl->svcs, i)->aff == NULL)
            continue;
        if ((was = table_find(w->dtable, table_service(t, i)->name)) == NULL)
            continue;
        from = svcv_get(w->dsvcs, was->pos);
        if (from != svcv_get(pl->svcs, i))
            svc_inherit(svcv_get(pl->svcs, i), from, ev_now(w->loop));
    }
}

/* <pl>'s fresh listeners join <w>'s, the table's are claimed and the
 * rest closed. pl->index is built. Cannot fail. */
static void
reconcile(struct worker *w, struct apply_plan *pl)
{
    struct listener *l;

    inherit_pins(w, pl);
    for (l = w->listeners; l != NULL; l = l->next)
        l->mark = LISTENER_STALE;
    while ((l = pl->fresh) != NULL) {
        pl->fresh = l->next;
        l->next = w->listeners;
        w->listeners = l;
        l->mark = LISTENER_FRESH;
    }
    claim_listeners(w, pl);
    close_unclaimed(w);
    listener_dispatch_set(w, pl->t, pl->svcs, pl->dispatch,
                          pl->affinity);
    udp_plan_commit(w, pl->udp);
    free(pl->index);
    pl->index = NULL;
    pl->nindex = 0;
}

/* Nonzero when <pl> listens on exactly what <w> listens on since its
 * last full commit, and opened nothing for it: the common case of a
 * Kubernetes change, an endpoint's. A walk of two arrays, no sort. */
static int
same_addresses(const struct worker *w, const struct apply_plan *pl)
{
    size_t i;

    if (pl->fresh != NULL || w->nlorder != pl->addrs.n || w->nlorder == 0)
        return 0;
    for (i = 0; i < pl->addrs.n; i++)
        if (saddr_cmp(&w->laddrs[i], &pl->addrs.v[i]) != 0)
            return 0;
    return 1;
}

/* reconcile() for a plan on the same addresses: each listener whose
 * service changed is pointed at the new one; nothing opens or closes. */
static void
repoint(struct worker *w, struct apply_plan *pl)
{
    size_t i;

    inherit_pins(w, pl);
    for (i = 0; i < pl->addrs.n; i++) {
        if (w->lsvcs[i] == pl->lsvc[i])
            continue;
        listener_set_svc(w->lorder[i], pl->lsvc[i]);
        w->lsvcs[i] = pl->lsvc[i];
    }
    listener_dispatch_set(w, pl->t, pl->svcs, pl->dispatch,
                          pl->affinity);
    udp_plan_commit(w, pl->udp);
}

int
apply_plan_commit(struct worker *w, struct apply_plan *pl)
{
    double now;

    if (same_addresses(w, pl)) {
        repoint(w, pl);
    } else {
        if (plan_index(pl, w) < 0)
            return -1;
        reconcile(w, pl);
    }
    now = ev_time();
    atomic_store(&w->generation, pl->t->generation);
    worker_note_commit(w, pl->t->generation, now);
    stats_worker_delay(now - pl->posted);
    return 0;
}

/* ---- stage 1: runtime services ----------------------------------------- */

/* Runtime services for the table: kept from the current set when
 * unchanged (so round-robin positions survive a reload), new otherwise.
 * Names are unique in a table, so the current service of the same name
 * is found through the current table's name index (p->svcs[i] serves
 * *table_service(p->table, i)): O(N) for a table of N services, which the
 * Kubernetes side rebuilds on every change. */
/* The runtime service of table service <i>. */
static int
stage_one(struct apply *a, size_t i, struct err *e)
{
    struct proxy *p = a->p;
    const struct tbl_service *ts = table_service(a->t, i);
    const struct tbl_service *cur =
        p->table != NULL ? table_find(p->table, ts->name) : NULL;
    struct svc *old = NULL;

    struct svc *s;

    if (cur != NULL && cur->pos < p->nsvcs)
        old = svcv_get(p->svcs, cur->pos);
    if (old != NULL && svc_matches(old, ts))
        s = svc_ref(old);
    else if ((s = svc_new_like(ts, old)) == NULL)
        return err_set(e, "out of memory building services");
    if (svcv_set(a->svcs, i, s) < 0)
        return err_set(e, "out of memory building services");
    return 0;
}

static int
stage_services(struct apply *a, struct err *e)
{
    struct proxy *p = a->p;
    const struct table *t = a->t;
    size_t i, n;

    /* A table made from the one in force (table_derive()) says which
     * services changed: every other one keeps its runtime service, in
     * the chunks they share. */
    if (p->table != NULL && t->base == p->table->serial
        && t->nservices == p->nsvcs) {
        if ((a->svcs = svcv_derive(p->svcs)) == NULL)
            return err_set(e, "out of memory building services");
        a->delta = 1;
        for (i = 0; i < t->ndsvcs; i++)
            if (stage_one(a, t->dsvcs[i], e) < 0)
                return -1;
        return 0;
    }
    if ((a->svcs = svcv_new(t->nservices)) == NULL)
        return err_set(e, "out of memory building services");
    for (n = 0, i = 0; i < t->nservices; i++)
        n += table_service(t, i)->nbackends;
    backend_reserve(n);
    for (i = 0; i < t->nservices; i++)
        if (stage_one(a, i, e) < 0)
            return -1;
    return 0;
}

/* ---- stage 2: plans, with their sockets opened -------------------------- */

/* Nonzero if a worker may listen on <addr>: an earlier table closed it,
 * and a worker has not committed that table yet. Worker 0 opening it
 * again must not take that socket for someone else's. */
static int
workers_hold(const struct apply *a, const struct saddr *addr)
{
    unsigned k;

    for (k = 0; k < a->p->nworkers; k++) {
        const struct wthread *th = &a->p->threads[k];
        if (addrs_has(&th->addrs, addr) || addrs_has(&th->stale, addr))
            return 1;
    }
    return 0;
}

/* A worker that committed the newest plan posted to it listens on its
 * addresses alone. */
static void
forget_committed(struct apply *a)
{
    unsigned k;

    for (k = 0; k < a->p->nworkers; k++) {
        struct wthread *th = &a->p->threads[k];
        if (atomic_load(&th->w.generation) == th->posted_gen)
            addrs_free(&th->stale);
    }
}

/* The socket the previous process's worker <worker> held on <addr>
 * (proxy_inherit()), or NULL; with <worker> -1, any worker's. */
static struct proxy_sock *
inherited(const struct apply *a, int worker, const struct saddr *addr)
{
    size_t i;

    for (i = 0; i < a->p->ninherited; i++) {
        struct proxy_sock *s = &a->p->inherited[i];
        if (s->fd >= 0 && (worker < 0 || s->worker == (unsigned)worker)
            && saddr_cmp(&s->addr, addr) == 0)
            return s;
    }
    return NULL;
}

static unsigned
open_flags(const struct apply *a, const struct worker *w,
           const struct saddr *addr)
{
    unsigned flags = a->mode == PROXY_APPLY_STRICT ? 0 : LISTENER_F_FREEBIND;

    /* The previous process listens there until it has handed over. */
    if (w->id == 0 && (workers_hold(a, addr) || inherited(a, -1, addr)))
        flags |= LISTENER_F_OURS;
    return flags;
}

/* A listener for <w> on <addr>: the previous process's socket for the
 * same worker and address if there is one (the connections waiting in
 * its queue are served here), else a new one. */
static struct listener *
open_one(struct apply *a, struct worker *w, const struct saddr *addr,
         struct err *e)
{
    struct proxy_sock *s = inherited(a, (int)w->id, addr);
    struct listener *l;

    if (s != NULL) {
        if ((l = listener_adopt(w, addr, s->fd, e)) != NULL) {
            s->fd = -1;
            return l;
        }
        log_warn("takeover: %s; opening a new one", e->msg);
    }
    return listener_new(w, addr, open_flags(a, w, addr), e);
}

/* Open on <w> a listener for each address of pl->addrs not in <have>,
 * into pl->fresh. A strict apply fails at the first that cannot be
 * opened (-1, <e> filled); otherwise it is logged and left out of
 * pl->addrs. */
static int
open_missing(struct apply *a, struct worker *w, struct apply_plan *pl,
             const struct apply_addrs *have, struct err *e)
{
    size_t i, kept = 0, failed = 0;
    char m[ERR_STR_MAX];

    for (i = 0; i < pl->addrs.n; i++) {
        const struct saddr *addr = &pl->addrs.v[i];
        struct listener *l;
        if (addrs_has(have, addr)) {
            pl->addrs.v[kept++] = *addr;
            continue;
        }
        if ((l = open_one(a, w, addr, e)) == NULL) {
            if (a->mode == PROXY_APPLY_STRICT)
                return -1;
            if (w->id == 0)
                log_error("service %s: %s",
                          table_find_frontend(a->t, addr)->name,
                          err_str(e, m, sizeof(m)));
            failed++;
            continue;
        }
        l->next = pl->fresh;
        pl->fresh = l;
        pl->addrs.v[kept++] = *addr;
    }
    pl->addrs.n = kept;
    /* A thread that cannot open what worker 0 could (out of descriptors)
     * tries again with every table: say so, but not every time. */
    if (failed > 0 && w->id != 0)
        log_rl(LOG_WARN, ev_now(a->p->loop),
               "worker %u: %zu address(es) left to the other workers: %s",
               w->id, failed, err_str(e, m, sizeof(m)));
    return 0;
}

/* Each worker thread holds one socket per address it serves: with many
 * services (a Kubernetes node with thousands) that is the address count
 * times the threads. Past a quarter of the descriptor limit the threads
 * listen on nothing and worker 0 serves every address alone: slower, but
 * every service stays up and connections keep their descriptors. */
static void
descriptor_guard(struct apply *a)
{
    struct proxy *p = a->p;
    struct rlimit rl;
    size_t cap;

    if (p->fd_cap == 0 || ev_now(p->loop) - p->fd_cap_at >= 1.0) {
        p->fd_cap = 4096;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
            p->fd_cap = (size_t)rl.rlim_cur / 4;
        p->fd_cap_at = ev_now(p->loop);
    }
    cap = p->fd_cap;
    a->fd_limit = cap * 4;
    a->threads = a->naddrs * (a->p->nworkers - 1) > cap ? APPLY_LISTEN_NONE
                                                        : APPLY_LISTEN_SERVED;
}

/* What every other worker is to listen on: the frontends of services
 * without ClientIP affinity (svc.h), where worker 0 listens. */
static int
thread_addrs(struct apply *a, struct apply_addrs *out)
{
    const struct apply_addrs *w0 = &a->thread[0].plan->addrs;
    const struct table *t = a->t;
    size_t i, j;

    if (addrs_alloc(out, a->naddrs) < 0)
        return -1;
    /* Only a service that is not REDIRECT can have an address in w0. */
    for (i = 0; i < t->nlpos && a->threads == APPLY_LISTEN_SERVED; i++) {
        const struct tbl_service *ts = table_service(t, t->lpos[i]);
        if (ts->affinity_timeout_ms != 0 || ts->proto != TBL_PROTO_TCP)
            continue;
        for (j = 0; j < ts->nfrontends; j++)
            if (addrs_has(w0, &ts->frontends[j]))
                out->v[out->n++] = ts->frontends[j];
    }
    addrs_sort(out);
    return 0;
}

static int
addrs_copy(struct apply_addrs *to, const struct apply_addrs *from)
{
    if (addrs_alloc(to, from->n) < 0)
        return -1;
    if (from->n > 0)
        memcpy(to->v, from->v, from->n * sizeof(*from->v));
    to->n = from->n;
    return 0;
}

/* The UDP frontends worker <w> serves: all of them for worker 0, like
 * its TCP frontends; the others those of services without affinity,
 * unless the descriptor guard says none. */
static enum udp_serve
udp_serve(const struct apply *a, const struct worker *w)
{
    if (w->id == 0)
        return UDP_SERVE_ALL;
    return a->threads == APPLY_LISTEN_SERVED ? UDP_SERVE_SHARED
                                             : UDP_SERVE_NONE;
}

static unsigned
udp_flags(const struct apply *a)
{
    return (a->mode == PROXY_APPLY_STRICT ? UDP_PLAN_STRICT : 0)
           | (a->p->taking_over ? UDP_PLAN_TAKEOVER : 0);
}

/* A plan for worker <at>. */
static int
plan_for(struct apply *a, struct apply_thread *at)
{
    return (at->plan = plan_new(a)) == NULL ? -1 : 0;
}

/* Open what worker <th> lacks of at->plan->addrs, and keep the control
 * loop's copy of what it will listen on. */
static int
open_worker(struct apply *a, struct apply_thread *at, struct wthread *th,
            struct err *e)
{
    struct apply_plan *pl = at->plan;
    size_t i;

    if (open_missing(a, &th->w, pl, &th->addrs, e) < 0
        || udp_plan_build(&th->w, pl, udp_serve(a, &th->w), udp_flags(a), e)
               < 0)
        return -1;
    if (addrs_copy(&at->addrs, &pl->addrs) < 0
        || addrs_union(&at->stale, &th->stale, &th->addrs) < 0
        || (pl->lsvc = calloc(pl->addrs.n ? pl->addrs.n : 1,
                              sizeof(*pl->lsvc)))
               == NULL)
        return err_set(e, "out of memory opening listeners");
    for (i = 0; i < pl->addrs.n; i++) {
        const struct tbl_service *ts =
            table_find_frontend(a->t, &pl->addrs.v[i]);
        pl->lsvc[i] = svcv_get(a->svcs, ts->pos);
    }
    pl->dispatch = a->t->ndispatch > 0 || a->t->nsnisvcs > 0;
    pl->affinity = a->t->naffinity > 0;
    return 0;
}

/* Worker 0's plan: every frontend of the table, which it is the first
 * to open (listener.c checks that no one else listens there). */
static int
open_worker0(struct apply *a, struct err *e)
{
    const struct table *t = a->t;
    size_t i, j;

    if (plan_for(a, &a->thread[0]) < 0
        || addrs_alloc(&a->thread[0].plan->addrs, a->naddrs) < 0)
        return err_set(e, "out of memory opening listeners");
    for (i = 0; i < t->nlpos; i++) {
        const struct tbl_service *ts = table_service(t, t->lpos[i]);
        for (j = 0; j < ts->nfrontends && ts->proto == TBL_PROTO_TCP; j++)
            a->thread[0].plan->addrs.v[a->thread[0].plan->addrs.n++] =
                ts->frontends[j];
    }
    addrs_sort(&a->thread[0].plan->addrs);
    return open_worker(a, &a->thread[0], &a->p->threads[0], e);
}

/* Worker 0 first: another worker's listeners open only where worker 0's
 * already do. */
static int
stage_open(struct apply *a, struct err *e)
{
    unsigned k, n = a->p->nworkers;
    struct apply_addrs want;
    int rc = 0;

    forget_committed(a);
    a->thread = calloc(n, sizeof(*a->thread));
    if (a->thread == NULL)
        return err_set(e, "out of memory opening listeners");
    if (open_worker0(a, e) < 0)
        return -1;
    descriptor_guard(a);
    if (n == 1)
        return 0;
    if (thread_addrs(a, &want) < 0)
        return err_set(e, "out of memory opening listeners");
    for (k = 1; k < n && rc == 0; k++) {
        if (plan_for(a, &a->thread[k]) < 0
            || addrs_copy(&a->thread[k].plan->addrs, &want) < 0)
            rc = err_set(e, "out of memory opening listeners");
        else
            rc = open_worker(a, &a->thread[k], &a->p->threads[k], e);
    }
    addrs_free(&want);
    return rc;
}

/* ---- stage 3: commit ---------------------------------------------------- */

static void
log_guard_change(struct apply *a)
{
    struct proxy *p = a->p;

    if (a->threads == p->threads_listen)
        return;
    if (a->threads == APPLY_LISTEN_NONE)
        log_warn("workers: %zu listening addresses on %u worker threads "
                 "would take more than a quarter of the descriptor limit "
                 "(%zu); worker 0 serves them alone",
                 a->naddrs, p->nworkers - 1, a->fd_limit);
    else
        log_info("workers: %zu listening addresses: every worker serves "
                 "them again",
                 a->naddrs);
    p->threads_listen = a->threads;
}

/* The proxy's services and table become the new ones. A service left
 * behind takes no new connection (no listener points at it any more) and
 * is freed with its last connection. */
static void
swap_table(struct apply *a)
{
    struct proxy *p = a->p;

    if (a->delta)
        drain_swap_some(p->svcs, a->svcs, a->t, a->t->dsvcs, a->t->ndsvcs);
    else
        drain_swap(p->svcs, a->svcs, a->t);
    svcv_unref(p->svcs);
    p->svcs = a->svcs;
    p->nsvcs = a->t->nservices;
    p->delta = a->delta;
    a->svcs = NULL;
    table_unref(p->table);
    p->table = table_ref(a->t);
}

/* Every worker gets its plan through its mailbox and commits it on its
 * own loop (wthread.c). */
static void
stage_commit(struct apply *a)
{
    struct proxy *p = a->p;
    unsigned k;
    double now;

    now = ev_time();
    for (k = 0; k < p->nworkers; k++) {
        struct wthread *th = &p->threads[k];
        struct apply_thread *at = &a->thread[k];
        addrs_free(&th->addrs);
        addrs_free(&th->stale);
        th->addrs = at->addrs;
        th->stale = at->stale;
        th->posted_gen = a->t->generation;
        memset(&at->addrs, 0, sizeof(at->addrs));
        memset(&at->stale, 0, sizeof(at->stale));
        at->plan->posted = now;
        udp_plan_posted(&th->w, at->plan->udp, a->t->generation);
        wthread_post_plan(th, at->plan);
        at->plan = NULL;
    }
    log_guard_change(a);
    swap_table(a);
}

static void
apply_unwind(struct apply *a)
{
    unsigned k;

    for (k = 0; a->thread != NULL && k < a->p->nworkers; k++) {
        apply_plan_free(a->thread[k].plan);
        addrs_free(&a->thread[k].addrs);
        addrs_free(&a->thread[k].stale);
    }
    free(a->thread);
    svcv_unref(a->svcs);
}

int
apply_table(struct proxy *p, struct table *t, enum proxy_apply_mode mode,
            struct err *e)
{
    struct apply a = {.p = p, .t = t, .mode = mode};
    size_t i;
    int rc = -1;

    /* A REDIRECT service's frontends are reached through the DISPATCH
     * listener: nothing is bound on them. */
    for (i = 0; i < t->nlpos; i++)
        a.naddrs += table_service(t, t->lpos[i])->nfrontends;
    if (stage_services(&a, e) == 0 && stage_open(&a, e) == 0) {
        stage_commit(&a);
        rc = 0;
    }
    apply_unwind(&a);
    return rc;
}
