#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "conn.h"
#include "bug.h"
#include "listener.h"
#include "log.h"
#include "stats.h"
#include "proxy-t.h"
#include "svc-t.h"

/* A table for a worker thread: what its listeners serve from now on. */
struct plan {
    struct table *t;        /* reference */
    struct svc **v;         /* references, t->nservices of them */
    struct listener *fresh; /* opened for it by the control loop */
    int off;                /* listen on nothing (descriptor guard) */
    double posted;          /* ev_time() when worker 0 applied it */
};

/* Worker 1..N-1: a thread with its own loop (see proxy.h). */
struct wthread {
    struct worker w;        /* first: on_idle finds the wthread from it */
    struct proxy *p;
    pthread_t tid;
    struct ev_async wake;   /* the control loop posted something */
    pthread_mutex_t mu;
    struct plan *plan;      /* under mu: the newest table not yet applied */
    int drain, stop;        /* under mu */
    int draining;           /* the thread's own copy of drain */
    atomic_int idle;        /* draining and without connections */
    /* Control loop only: the sorted addresses it will listen on once the
     * posted plans are applied. */
    struct saddr *addrs;
    size_t naddrs;
};

static void
close_listeners(struct worker *w)
{
    struct listener *l;

    while ((l = w->listeners) != NULL) {
        w->listeners = l->next;
        listener_free(l);
    }
}

static void
free_fresh(struct listener *l)
{
    struct listener *next;

    for (; l != NULL; l = next) {
        next = l->next;
        listener_free(l);
    }
}

static void
free_svcs(struct svc **v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        svc_unref(v[i]);
    free(v);
}

static void
plan_free(struct plan *pl)
{
    if (pl == NULL)
        return;
    free_fresh(pl->fresh);
    free_svcs(pl->v, pl->t->nservices);
    table_unref(pl->t);
    free(pl);
}

struct worker *
proxy_worker(struct proxy *p, unsigned k)
{
    if (k == 0)
        return &p->w;
    return k < p->nworkers ? &p->threads[k - 1].w : NULL;
}

size_t
proxy_nconns(struct proxy *p)
{
    size_t n = 0;
    unsigned k;

    for (k = 0; k < p->nworkers; k++)
        n += worker_nconns(proxy_worker(p, k));
    return n;
}

/* Drained once worker 0 and every thread have no connection left. */
static void
proxy_check_drained(struct proxy *p)
{
    unsigned k;

    if (!p->draining || p->drained || worker_nconns(&p->w) != 0)
        return;
    for (k = 1; k < p->nworkers; k++)
        if (!atomic_load(&p->threads[k - 1].idle))
            return;
    p->drained = 1;
    ev_timer_stop(p->w.loop, &p->drain_timer);
    if (p->on_drained != NULL)
        p->on_drained(p, p->on_drained_arg);
}

static void
proxy_on_wake(struct ev_loop *loop, struct ev_async *a, int rev)
{
    (void)loop;
    (void)rev;
    proxy_check_drained(a->data);
}

/* Post to worker thread <t>: under its lock, then wake it. */
static void
wthread_post(struct wthread *t, struct plan *pl, int drain, int stop)
{
    struct plan *old = NULL;

    pthread_mutex_lock(&t->mu);
    if (pl != NULL) {
        old = t->plan;
        if (old != NULL) {
            /* Not applied yet: its fresh listeners are in the control
             * loop's idea of the thread's set, so they go on with the new
             * plan (which closes those it does not serve). */
            struct listener **tail = &pl->fresh;
            while (*tail != NULL)
                tail = &(*tail)->next;
            *tail = old->fresh;
            old->fresh = NULL;
        }
        t->plan = pl;
    }
    t->drain |= drain;
    t->stop |= stop;
    pthread_mutex_unlock(&t->mu);
    plan_free(old); /* svc and table references are atomic */
    ev_async_send(t->w.loop, &t->wake);
}

static void
proxy_on_drain_timeout(struct ev_loop *loop, struct ev_timer *t, int rev)
{
    struct proxy *p = t->data;
    unsigned k;

    (void)loop;
    (void)rev;
    log_warn("drain timeout: resetting %zu remaining connection(s)",
             proxy_nconns(p));
    p->w.on_idle = NULL;
    conn_close_all(&p->w);
    for (k = 1; k < p->nworkers; k++)
        wthread_post(&p->threads[k - 1], NULL, 0, 1);
    p->drained = 1;
    if (p->on_drained != NULL)
        p->on_drained(p, p->on_drained_arg);
}

static void
proxy_on_idle(struct worker *w)
{
    struct proxy *p = (struct proxy *)(void *)((char *)w - offsetof(struct proxy, w));

    proxy_check_drained(p);
}

struct proxy *
proxy_new(struct ev_loop *loop)
{
    struct proxy *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    if (worker_init(&p->w, loop) < 0) {
        free(p);
        return NULL;
    }
    p->nworkers = 1;
    ev_init(&p->drain_timer, proxy_on_drain_timeout);
    p->drain_timer.data = p;
    ev_async_init(&p->wake, proxy_on_wake);
    p->wake.data = p;
    ev_async_start(loop, &p->wake);
    return p;
}

/* ---- worker threads ---------------------------------------------------- */

static int reconcile_listeners(struct worker *w, const struct table *t,
                               struct svc **v, struct listener *fresh,
                               int off);

static void
wthread_on_idle(struct worker *w)
{
    struct wthread *t = (struct wthread *)(void *)w;

    if (atomic_exchange(&t->idle, 1) == 0)
        ev_async_send(t->p->w.loop, &t->p->wake);
}

static void
wthread_on_wake(struct ev_loop *loop, struct ev_async *a, int rev)
{
    struct wthread *t = a->data;
    struct plan *pl;
    int drain, stop;

    (void)rev;
    pthread_mutex_lock(&t->mu);
    pl = t->plan;
    t->plan = NULL;
    drain = t->drain;
    stop = t->stop;
    pthread_mutex_unlock(&t->mu);
    if (pl != NULL && !t->draining && !stop) {
        if (reconcile_listeners(&t->w, pl->t, pl->v, pl->fresh, pl->off)
            == 0) {
            pl->fresh = NULL; /* taken over (or closed) */
            atomic_store(&t->w.generation, pl->t->generation);
            stats_worker_delay(ev_time() - pl->posted);
        }
        else
            log_error("worker %u: out of memory applying a table; it keeps "
                      "its listeners", t->w.id);
    }
    plan_free(pl);
    if (stop) {
        close_listeners(&t->w);
        t->w.on_idle = NULL;
        conn_close_all(&t->w);
        ev_async_stop(loop, &t->wake);
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    if (drain && !t->draining) {
        t->draining = 1;
        close_listeners(&t->w);
        t->w.on_idle = wthread_on_idle;
        if (worker_nconns(&t->w) == 0)
            wthread_on_idle(&t->w);
    }
}

static void *
wthread_main(void *arg)
{
    struct wthread *t = arg;

    svc_worker_self = t->w.id;
    ev_run(t->w.loop, 0);
    return NULL;
}

static unsigned
cpus_available(void)
{
    cpu_set_t set;
    int n;

    if (sched_getaffinity(0, sizeof(set), &set) < 0
        || (n = CPU_COUNT(&set)) < 1)
        return 1;
    return (unsigned)n;
}

int
proxy_start_workers(struct proxy *p, unsigned n, struct err *e)
{
    sigset_t all, old;
    unsigned k;
    int rc;

    if (n == 0)
        n = cpus_available();
    if (n > PROXY_WORKERS_MAX)
        n = PROXY_WORKERS_MAX;
    if (p->nworkers != 1 || p->table != NULL)
        return err_set(e, "workers must start before the first table");
    svc_nworkers = n;
    p->w.nworkers = n;
    if (n == 1)
        return 1;
    p->threads = calloc(n - 1, sizeof(*p->threads));
    if (p->threads == NULL)
        return err_set(e, "out of memory starting %u workers", n);
    /* Signals are for the control loop: the threads block them all. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (k = 1; k < n; k++) {
        struct wthread *t = &p->threads[k - 1];
        struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
        if (loop == NULL || worker_init(&t->w, loop) < 0) {
            if (loop != NULL)
                ev_loop_destroy(loop);
            break;
        }
        t->p = p;
        t->w.id = k;
        t->w.nworkers = n;
        pthread_mutex_init(&t->mu, NULL);
        ev_async_init(&t->wake, wthread_on_wake);
        t->wake.data = t;
        ev_async_start(loop, &t->wake);
        if ((rc = pthread_create(&t->tid, NULL, wthread_main, t)) != 0) {
            ev_async_stop(loop, &t->wake);
            worker_deinit(&t->w);
            ev_loop_destroy(loop);
            pthread_mutex_destroy(&t->mu);
            break;
        }
        p->nworkers = k + 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (p->nworkers != n) {
        unsigned got = p->nworkers;
        proxy_stop_workers(p);
        return err_set(e, "cannot start worker %u of %u (got %u)", got + 1, n,
                       got);
    }
    return (int)n;
}

void
proxy_stop_workers(struct proxy *p)
{
    unsigned k;

    for (k = 1; k < p->nworkers; k++) {
        struct wthread *t = &p->threads[k - 1];
        struct ev_loop *loop = t->w.loop;
        wthread_post(t, NULL, 0, 1);
        pthread_join(t->tid, NULL);
        plan_free(t->plan);
        t->plan = NULL;
        worker_deinit(&t->w);
        ev_loop_destroy(loop);
        pthread_mutex_destroy(&t->mu);
        free(t->addrs);
    }
    free(p->threads);
    p->threads = NULL;
    p->nworkers = 1;
}

void
proxy_free(struct proxy *p)
{
    if (p == NULL)
        return;
    ev_timer_stop(p->w.loop, &p->drain_timer);
    ev_async_stop(p->w.loop, &p->wake);
    proxy_stop_workers(p);
    close_listeners(&p->w);
    p->w.on_idle = NULL;
    conn_close_all(&p->w);
    free_svcs(p->svcs, p->nsvcs);
    p->svcs = NULL;
    p->nsvcs = 0;
    table_unref(p->table);
    p->table = NULL;
    worker_deinit(&p->w);
    free(p);
}

/* Runtime services for <t>: kept from the current set when unchanged
 * (so round-robin positions survive a reload), new otherwise. Names are
 * unique in a table, so the current service of the same name is found
 * through the current table's name index (p->svcs[i] serves
 * p->table->services[i]): O(N) for a table of N services, which the
 * Kubernetes side rebuilds on every change. */
static struct svc **
build_svcs(struct proxy *p, const struct table *t)
{
    struct svc **v = calloc(t->nservices ? t->nservices : 1, sizeof(*v));
    size_t i;

    if (v == NULL)
        return NULL;
    for (i = 0; i < t->nservices; i++) {
        const struct tbl_service *ts = &t->services[i];
        const struct tbl_service *cur =
            p->table != NULL ? table_find(p->table, ts->name) : NULL;
        struct svc *old = NULL;
        if (cur != NULL && (size_t)(cur - p->table->services) < p->nsvcs)
            old = p->svcs[cur - p->table->services];
        if (old != NULL && svc_matches(old, ts)) {
            v[i] = svc_ref(old);
            continue;
        }
        if ((v[i] = svc_new(ts)) == NULL) {
            free_svcs(v, i);
            return NULL;
        }
        if (old != NULL)
            svc_inherit(v[i], old, ev_now(p->w.loop));
    }
    return v;
}

static int
listener_cmp(const void *a, const void *b)
{
    return saddr_cmp(&(*(struct listener *const *)a)->addr,
                     &(*(struct listener *const *)b)->addr);
}

/* The listeners of <w> and then those of <more> (a list), sorted by
 * address for find_listener(); NULL with *n = 0 when there are none.
 * Returns -1 when out of memory. */
static int
sorted_listeners(const struct worker *w, struct listener *more,
                 struct listener ***out, size_t *n)
{
    struct listener *lists[2] = {w->listeners, more}, *l, **v;
    size_t k = 0, i;

    *out = NULL;
    *n = 0;
    for (i = 0; i < 2; i++)
        for (l = lists[i]; l != NULL; l = l->next)
            k++;
    if (k == 0)
        return 0;
    if ((v = malloc(k * sizeof(*v))) == NULL)
        return -1;
    k = 0;
    for (i = 0; i < 2; i++)
        for (l = lists[i]; l != NULL; l = l->next)
            v[k++] = l;
    qsort(v, k, sizeof(*v), listener_cmp);
    *out = v;
    *n = k;
    return 0;
}

static struct listener *
find_listener(struct listener **v, size_t n, const struct saddr *a)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = saddr_cmp(&v[mid]->addr, a);
        if (c == 0)
            return v[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Open listeners for frontends that have none yet; they are collected in
 * <fresh> (not yet started). A table's frontends are unique, so one
 * frontend never needs two fresh listeners. */
static int
open_new_listeners(struct proxy *p, const struct table *t, int strict,
                   struct listener **fresh, struct err *e)
{
    struct listener **cur;
    size_t i, j, ncur;

    if (sorted_listeners(&p->w, NULL, &cur, &ncur) < 0)
        return err_set(e, "out of memory opening listeners");
    for (i = 0; i < t->nservices; i++) {
        const struct tbl_service *ts = &t->services[i];
        for (j = 0; j < ts->nfrontends; j++) {
            const struct saddr *a = &ts->frontends[j];
            struct listener *l;
            if (find_listener(cur, ncur, a))
                continue;
            l = listener_new(&p->w, a, !strict, e);
            if (l == NULL) {
                if (strict) {
                    free(cur);
                    return -1;
                }
                char m[512];
                log_error("service %s: %s", ts->name, err_str(e, m, sizeof(m)));
                continue;
            }
            l->next = *fresh;
            *fresh = l;
        }
    }
    free(cur);
    return 0;
}

/* Point every listener of <t> at its service and close the others.
 * Returns -1, having changed nothing, when out of memory. */
/* Worker threads do not serve services with ClientIP affinity: the
 * affinity table belongs to worker 0 (svc.h). */
static int
served_by(const struct worker *w, const struct tbl_service *ts)
{
    return w->id == 0 || ts->affinity_timeout_ms == 0;
}

/* Make <w>'s listeners those of <t>: <fresh> (a list) joins them, each
 * listener is pointed at its service in <v>, and those <t> does not name
 * (for <w>) are closed. Runs on <w>'s own loop. Returns -1 when out of
 * memory, with nothing changed and <fresh> still the caller's. */
static int
reconcile_listeners(struct worker *w, const struct table *t, struct svc **v,
                    struct listener *fresh, int off)
{
    struct listener *l, **pl, **all;
    size_t i, j, nall;

    if (sorted_listeners(w, fresh, &all, &nall) < 0)
        return -1;
    for (l = w->listeners; l != NULL; l = l->next)
        l->mark = 0;
    while ((l = fresh) != NULL) {
        fresh = l->next;
        l->next = w->listeners;
        w->listeners = l;
        l->mark = 2;
    }
    for (i = 0; i < t->nservices; i++) {
        if (off || !served_by(w, &t->services[i]))
            continue;
        for (j = 0; j < t->services[i].nfrontends; j++) {
            l = find_listener(all, nall, &t->services[i].frontends[j]);
            if (l == NULL)
                continue;
            listener_set_svc(l, v[i]);
            if (l->mark == 2 && w->id == 0)
                log_info("listening on %s for service %s", l->addr_str,
                         v[i]->name);
            l->mark = 1;
            listener_start(l);
        }
    }
    free(all);
    for (pl = &w->listeners; (l = *pl) != NULL;) {
        if (l->mark != 1) {
            if (w->id == 0 || l->mark == 0)
                log_info("%sclosing listener %s (service %s removed or moved)",
                         w->id == 0 ? "" : "worker: ", l->addr_str,
                         l->svc ? l->svc->name : "-");
            *pl = l->next;
            listener_free(l);
        } else {
            pl = &l->next;
        }
    }
    return 0;
}

static int
saddr_pcmp(const void *a, const void *b)
{
    return saddr_cmp(a, b);
}

/* For worker thread <t>: open what it lacks of <t>'s frontends (those it
 * serves, and that worker 0 listens on: <w0>, sorted) into *fresh, and
 * compute in *addrs the set it will listen on. With <strict>, any failure
 * fails it all (-1, <e> filled); without, failing addresses are left out
 * (worker 0 logs them). An address worker 0 could not open is never
 * opened here: only worker 0 checks that no one else holds it. */
static int
thread_listeners(struct wthread *th, const struct table *t, int strict,
                 int off, struct listener **w0, size_t nw0,
                 struct listener **fresh, struct saddr **addrs,
                 size_t *naddrs, struct err *e)
{
    struct saddr *want;
    size_t i, j, n = 0, k = 0;

    *fresh = NULL;
    *addrs = NULL;
    *naddrs = 0;
    for (i = 0; i < t->nservices && !off; i++)
        if (served_by(&th->w, &t->services[i]))
            n += t->services[i].nfrontends;
    if (n == 0)
        return 0;
    if ((want = malloc(n * sizeof(*want))) == NULL)
        return err_set(e, "out of memory opening listeners");
    for (i = 0; i < t->nservices; i++)
        if (served_by(&th->w, &t->services[i]))
            for (j = 0; j < t->services[i].nfrontends; j++)
                want[k++] = t->services[i].frontends[j];
    qsort(want, n, sizeof(*want), saddr_pcmp);
    for (i = j = 0; i < n; i++) {
        struct listener *l;
        if (j > 0 && saddr_cmp(&want[j - 1], &want[i]) == 0)
            continue; /* the same address twice */
        if (find_listener(w0, nw0, &want[i]) == NULL)
            continue;
        if (th->naddrs == 0
            || !bsearch(&want[i], th->addrs, th->naddrs, sizeof(*th->addrs),
                        saddr_pcmp)) {
            l = listener_new(&th->w, &want[i], !strict, e);
            if (l == NULL) {
                if (strict) {
                    free_fresh(*fresh);
                    *fresh = NULL;
                    free(want);
                    return -1;
                }
                continue;
            }
            l->next = *fresh;
            *fresh = l;
        }
        want[j++] = want[i];
    }
    *addrs = want;
    *naddrs = j;
    return 0;
}

/* Each worker thread holds one socket per address it serves: with many
 * services (a Kubernetes node with thousands) that is the address count
 * times the threads. Past a quarter of the descriptor limit the threads
 * listen on nothing and worker 0 serves every address alone: slower, but
 * every service stays up and connections keep their descriptors. */
static int
threads_off(struct proxy *p, const struct table *t, size_t *naddrs,
            size_t *limit)
{
    struct rlimit rl;
    size_t i, n = 0, cap = 4096;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        cap = (size_t)rl.rlim_cur / 4;
    for (i = 0; i < t->nservices; i++)
        n += t->services[i].nfrontends;
    *naddrs = n;
    *limit = cap * 4;
    return p->nworkers > 1 && n * (p->nworkers - 1) > cap;
}

int
proxy_apply(struct proxy *p, struct table *t, int strict, struct err *e)
{
    struct listener *fresh = NULL, **tfresh = NULL, **w0 = NULL;
    struct saddr **taddrs = NULL;
    size_t *tn = NULL;
    unsigned k, nt = p->nworkers - 1;
    struct svc **v;
    size_t i, naddrs, limit, nw0 = 0;
    int off;

    if (p->draining)
        return err_set(e, "draining: no new table is applied");
    v = build_svcs(p, t);
    if (v == NULL)
        return err_set(e, "out of memory building services");
    if (nt > 0
        && ((tfresh = calloc(nt, sizeof(*tfresh))) == NULL
            || (taddrs = calloc(nt, sizeof(*taddrs))) == NULL
            || (tn = calloc(nt, sizeof(*tn))) == NULL)) {
        err_set(e, "out of memory opening listeners");
        goto fail;
    }
    if (open_new_listeners(p, t, strict, &fresh, e) < 0)
        goto fail;
    off = threads_off(p, t, &naddrs, &limit);
    if (nt > 0 && sorted_listeners(&p->w, fresh, &w0, &nw0) < 0) {
        err_set(e, "out of memory opening listeners");
        goto fail;
    }
    for (k = 0; k < nt; k++)
        if (thread_listeners(&p->threads[k], t, strict, off, w0, nw0,
                             &tfresh[k], &taddrs[k], &tn[k], e) < 0)
            goto fail;
    free(w0);
    w0 = NULL;
    if (reconcile_listeners(&p->w, t, v, fresh, 0) < 0) {
        err_set(e, "out of memory reconciling listeners");
        goto fail;
    }
    /* Worker 0 has the table: post it to the others. A plan that cannot
     * be allocated leaves that worker on its old listeners and services
     * (still correct for what it serves, though possibly stale). */
    for (k = 0; k < nt; k++) {
        struct wthread *th = &p->threads[k];
        struct plan *pl = calloc(1, sizeof(*pl));
        struct svc **tv = calloc(t->nservices ? t->nservices : 1, sizeof(*tv));
        if (pl == NULL || tv == NULL) {
            free(pl);
            free(tv);
            free_fresh(tfresh[k]);
            free(taddrs[k]);
            log_error("worker %u: out of memory; it keeps its previous table",
                      k + 1);
            continue;
        }
        for (i = 0; i < t->nservices; i++)
            tv[i] = svc_ref(v[i]);
        pl->t = table_ref(t);
        pl->v = tv;
        pl->fresh = tfresh[k];
        pl->off = off;
        pl->posted = ev_time();
        free(th->addrs);
        th->addrs = taddrs[k];
        th->naddrs = tn[k];
        wthread_post(th, pl, 0, 0);
    }
    free(tfresh);
    free(taddrs);
    free(tn);
    if (off && !p->threads_off)
        log_warn("workers: %zu listening addresses on %u worker threads would "
                 "take more than a quarter of the descriptor limit (%zu); "
                 "worker 0 serves them alone",
                 naddrs, nt, limit);
    else if (!off && p->threads_off)
        log_info("workers: %zu listening addresses: every worker serves "
                 "them again", naddrs);
    p->threads_off = off;
    for (i = 0; i < p->nsvcs; i++)
        p->svcs[i]->retired = 1;
    for (i = 0; i < t->nservices; i++)
        v[i]->retired = 0;
    free_svcs(p->svcs, p->nsvcs);
    p->svcs = v;
    p->nsvcs = t->nservices;
    table_unref(p->table);
    p->table = table_ref(t);
    atomic_store(&p->w.generation, t->generation);
    if (p->on_applied != NULL)
        p->on_applied(p, p->on_applied_arg);
    return 0;
fail:
    free(w0);
    free_fresh(fresh);
    for (k = 0; k < nt && tfresh != NULL; k++) {
        free_fresh(tfresh[k]);
        if (taddrs != NULL)
            free(taddrs[k]);
    }
    free(tfresh);
    free(taddrs);
    free(tn);
    free_svcs(v, t->nservices);
    return -1;
}

void
proxy_drain(struct proxy *p, double timeout_s)
{
    unsigned k;

    if (p->draining)
        return;
    p->draining = 1;
    close_listeners(&p->w);
    for (k = 1; k < p->nworkers; k++)
        wthread_post(&p->threads[k - 1], NULL, 1, 0);
    p->w.on_idle = proxy_on_idle;
    log_info("draining: listeners closed, %zu connection(s) open, "
             "waiting up to %.1f s",
             proxy_nconns(p), timeout_s);
    ev_timer_set(&p->drain_timer, timeout_s, 0.);
    ev_timer_start(p->w.loop, &p->drain_timer);
    proxy_check_drained(p);
}

/* ---- accessors ---------------------------------------------------------- */

void
proxy_on_drained(struct proxy *p, proxy_drained_fn *fn, void *arg)
{
    p->on_drained = fn;
    p->on_drained_arg = arg;
}

void
proxy_on_applied(struct proxy *p, proxy_applied_fn *fn, void *arg)
{
    p->on_applied = fn;
    p->on_applied_arg = arg;
}

const struct table *
proxy_table(const struct proxy *p)
{
    return p->table;
}

size_t
proxy_nsvcs(const struct proxy *p)
{
    return p->nsvcs;
}

struct svc *
proxy_svc(const struct proxy *p, size_t i)
{
    BUG_ON(i >= p->nsvcs);
    return p->svcs[i];
}

struct svc *const *
proxy_svcs(const struct proxy *p)
{
    return p->svcs;
}

unsigned
proxy_nworkers(const struct proxy *p)
{
    return p->nworkers;
}

int
proxy_draining(const struct proxy *p)
{
    return p->draining;
}

void
proxy_set_relay(struct proxy *p, enum conf_splice mode, size_t pipe_budget)
{
    worker_set_splice(&p->w, mode, pipe_budget);
}
