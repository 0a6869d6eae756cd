#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "apply.h"
#include "bug.h"
#include "conn.h"
#include "drain.h"
#include "listener.h"
#include "log.h"
#include "proxy-t.h"
#include "ring.h"
#include "svc-t.h"
#include "util.h"
#include "wthread.h"

static void proxy_inherit_done(struct proxy *p);

struct worker *
proxy_worker(struct proxy *p, unsigned k)
{
    return k < p->nworkers ? &p->threads[k].w : NULL;
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

/* Drained once every worker has no connection left. */
static void
proxy_check_drained(struct proxy *p)
{
    unsigned k;

    if (!p->draining || p->drained)
        return;
    for (k = 0; k < p->nworkers; k++)
        if (!wthread_idle(&p->threads[k]))
            return;
    p->drained = 1;
    ev_timer_stop(p->loop, &p->drain_timer);
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
    for (k = 0; k < p->nworkers; k++)
        wthread_post(&p->threads[k], WTHREAD_STOP);
    p->drained = 1;
    if (p->on_drained != NULL)
        p->on_drained(p, p->on_drained_arg);
}

struct proxy *
proxy_new(struct ev_loop *loop)
{
    struct proxy *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    p->loop = loop;
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
    if (p->nworkers != 0 || p->table != NULL)
        return err_set(e, "workers must start once, before the first table");
    svc_nworkers = n;
    p->threads = calloc(n, sizeof(*p->threads));
    if (p->threads == NULL)
        return err_set(e, "out of memory starting %u workers", n);
    for (k = 0; k < n; k++) {
        if (wthread_start(&p->threads[k], k, n, p->loop, &p->wake) < 0)
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

    for (k = 0; k < p->nworkers; k++)
        wthread_stop(&p->threads[k]);
    free(p->threads);
    p->threads = NULL;
    p->nworkers = 0;
}

void
proxy_free(struct proxy *p)
{
    if (p == NULL)
        return;
    ev_timer_stop(p->loop, &p->drain_timer);
    ev_async_stop(p->loop, &p->wake);
    proxy_stop_workers(p);
    proxy_inherit_done(p);
    svcv_unref(p->svcs);
    p->svcs = NULL;
    p->nsvcs = 0;
    table_unref(p->table);
    p->table = NULL;
    free(p);
}

int
proxy_apply(struct proxy *p, struct table *t, enum proxy_apply_mode mode,
            struct err *e)
{
    if (p->draining)
        return err_set(e, "draining: no new table is applied");
    if (p->nworkers == 0)
        return err_set(e, "no worker is running");
    if (apply_table(p, t, mode, e) < 0)
        return -1;
    if (p->inherited != NULL || p->taking_over)
        proxy_inherit_done(p);
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
    for (k = 0; k < p->nworkers; k++)
        wthread_post(&p->threads[k],
                     WTHREAD_DRAIN | (p->handed_over ? WTHREAD_HANDED : 0));
    log_info("draining: %s, %zu connection(s) open, waiting up to %.1f s",
             p->handed_over ? "the new process accepts on the sockets"
                            : "listeners closed",
             proxy_nconns(p), timeout_s);
    ev_timer_set(&p->drain_timer, timeout_s, 0.);
    ev_timer_start(p->loop, &p->drain_timer);
    proxy_check_drained(p);
}

/* ---- takeover ------------------------------------------------------------ */

#define EXPORT_WAIT_S 2

int
proxy_export(struct proxy *p, struct proxy_sock **out, size_t *n,
             struct err *e)
{
    struct proxy_sock *v = NULL;
    struct timespec until;
    unsigned k;
    int rc = 0;

    *out = NULL;
    *n = 0;
    for (k = 0; k < p->nworkers; k++) {
        struct wthread *t = &p->threads[k];
        pthread_mutex_lock(&t->mu);
        while (t->nexported > 0) /* an older answer nobody took */
            close(t->exported[--t->nexported].fd);
        free(t->exported);
        t->exported = NULL;
        t->exported_done = 0;
        pthread_mutex_unlock(&t->mu);
        wthread_post(t, WTHREAD_EXPORT);
    }
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += EXPORT_WAIT_S;
    for (k = 0; k < p->nworkers && rc == 0; k++) {
        struct wthread *t = &p->threads[k];
        struct proxy_sock *nv;
        pthread_mutex_lock(&t->mu);
        while (!t->exported_done && rc == 0)
            if (pthread_cond_timedwait(&t->cond, &t->mu, &until) != 0)
                rc = err_set(e, "worker %u did not list its sockets within "
                                "%d s", k, EXPORT_WAIT_S);
        if (rc == 0 && t->nexported > 0) {
            nv = realloc(v, (*n + t->nexported) * sizeof(*v));
            if (nv == NULL) {
                rc = err_set(e, "out of memory");
            } else {
                v = nv;
                memcpy(v + *n, t->exported, t->nexported * sizeof(*v));
                *n += t->nexported;
                free(t->exported);
                t->exported = NULL;
                t->nexported = 0;
            }
        }
        pthread_mutex_unlock(&t->mu);
    }
    if (rc < 0) {
        while (*n > 0)
            close(v[--*n].fd);
        free(v);
        return -1;
    }
    *out = v;
    return 0;
}

void
proxy_hand_over(struct proxy *p)
{
    p->handed_over = 1;
}

void
proxy_inherit(struct proxy *p, struct proxy_sock *v, size_t n)
{
    p->inherited = v;
    p->ninherited = n;
    p->taking_over = 1;
}

/* After the first apply: what it did not take is closed. */
static void
proxy_inherit_done(struct proxy *p)
{
    size_t i, left = 0;

    for (i = 0; i < p->ninherited; i++)
        if (p->inherited[i].fd >= 0) {
            close(p->inherited[i].fd);
            left++;
        }
    if (left > 0)
        log_warn("takeover: closed %zu inherited socket(s) this process "
                 "has no use for (an address no longer served, or a "
                 "worker of the previous process beyond this one's %u)",
                 left, p->nworkers);
    free(p->inherited);
    p->inherited = NULL;
    p->ninherited = 0;
    p->taking_over = 0;
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
    return svcv_get(p->svcs, i);
}

struct svc **
proxy_svcs_flat(const struct proxy *p)
{
    struct svc **v = malloc((p->nsvcs ? p->nsvcs : 1) * sizeof(*v));
    size_t i;

    for (i = 0; v != NULL && i < p->nsvcs; i++)
        v[i] = svcv_get(p->svcs, i);
    return v;
}

int
proxy_applied_delta(const struct proxy *p)
{
    return p->delta;
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
proxy_set_relay(struct proxy *p, const struct conf_relay *r)
{
    (void)p;
    worker_set_splice(r->splice, r->pipe_budget);
    ring_set_engine(r->engine);
}
