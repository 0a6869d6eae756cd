#include <sched.h>
#include <stdlib.h>

#include "apply.h"
#include "bug.h"
#include "conn.h"
#include "drain.h"
#include "listener.h"
#include "log.h"
#include "proxy-t.h"
#include "svc-t.h"
#include "util.h"
#include "wthread.h"

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
        if (!wthread_idle(&p->threads[k - 1]))
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
        wthread_post(&p->threads[k - 1], WTHREAD_STOP);
    p->drained = 1;
    if (p->on_drained != NULL)
        p->on_drained(p, p->on_drained_arg);
}

static void
proxy_on_idle(struct worker *w)
{
    struct proxy *p = container_of(w, struct proxy, w);

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
    unsigned k, got;

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
    for (k = 1; k < n; k++) {
        if (wthread_start(&p->threads[k - 1], k, n, p->w.loop, &p->wake) < 0)
            break;
        p->nworkers = k + 1;
    }
    if (p->nworkers == n)
        return (int)n;
    got = p->nworkers;
    proxy_stop_workers(p);
    return err_set(e, "cannot start worker %u of %u (got %u)", got + 1, n, got);
}

void
proxy_stop_workers(struct proxy *p)
{
    unsigned k;

    for (k = 1; k < p->nworkers; k++)
        wthread_stop(&p->threads[k - 1]);
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
    listener_free_list(&p->w.listeners);
    p->w.on_idle = NULL;
    conn_close_all(&p->w);
    svc_unref_array(p->svcs, p->nsvcs);
    p->svcs = NULL;
    p->nsvcs = 0;
    table_unref(p->table);
    p->table = NULL;
    worker_deinit(&p->w);
    free(p);
}

int
proxy_apply(struct proxy *p, struct table *t, enum proxy_apply_mode mode,
            struct err *e)
{
    if (p->draining)
        return err_set(e, "draining: no new table is applied");
    if (apply_table(p, t, mode, e) < 0)
        return -1;
    if (p->on_applied != NULL)
        p->on_applied(p, p->on_applied_arg);
    drain_refresh(); /* after the admin's drains were set again */
    return 0;
}

void
proxy_drain(struct proxy *p, double timeout_s)
{
    unsigned k;

    if (p->draining)
        return;
    p->draining = 1;
    listener_free_list(&p->w.listeners);
    for (k = 1; k < p->nworkers; k++)
        wthread_post(&p->threads[k - 1], WTHREAD_DRAIN);
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
