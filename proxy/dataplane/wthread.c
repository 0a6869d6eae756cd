#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "listener.h"
#include "log.h"
#include "stats.h"
#include "svc-t.h"
#include "util.h"
#include "ring.h"
#include "wthread.h"

/* Tell the control loop, once, that this draining thread is idle. */
static void
wthread_on_idle(struct worker *w)
{
    struct wthread *t = container_of(w, struct wthread, w);

    if (atomic_exchange(&t->idle, 1) == 0)
        ev_async_send(t->ctl, t->ctl_wake);
}

#define WTHREAD_RETRY_S 0.5 /* a plan that ran out of memory, again */

/* Commit <pl>. Returns 1 when the thread keeps it to try again (out of
 * memory: the listeners it has stay as they are until then), else 0 (the
 * caller frees it). */
static int
take_plan(struct wthread *t, struct apply_plan *pl)
{
    uint64_t t0;
    int rc;

    if (t->draining)
        return 0; /* its listeners are closed for good */
    t0 = thread_cpu_ns();
    rc = apply_plan_commit(&t->w, pl);
    atomic_fetch_add_explicit(&stats_proc.apply_cpu_ns, thread_cpu_ns() - t0,
                              memory_order_relaxed);
    if (rc == 0)
        return 0;
    log_error("worker %u: out of memory applying table %llu; it keeps its "
              "listeners and tries again in %.1f s",
              t->w.id, (unsigned long long)pl->t->generation,
              WTHREAD_RETRY_S);
    atomic_fetch_add_explicit(&stats_proc.nomem_workers, 1,
                              memory_order_relaxed);
    t->retry = pl;
    ev_timer_set(&t->retry_timer, WTHREAD_RETRY_S, 0.);
    ev_timer_start(t->w.loop, &t->retry_timer);
    return 1;
}

/* A newer plan came, or the thread stops: the one kept for a retry goes
 * (into <newer>, which takes over its fresh listeners, when given). */
static void
drop_retry(struct wthread *t, struct apply_plan *newer)
{
    if (t->retry == NULL)
        return;
    ev_timer_stop(t->w.loop, &t->retry_timer);
    if (newer != NULL)
        apply_plan_adopt(newer, t->retry);
    apply_plan_free(t->retry);
    t->retry = NULL;
}

static void
wthread_on_retry(struct ev_loop *loop, struct ev_timer *tm, int rev)
{
    struct wthread *t = tm->data;
    struct apply_plan *pl = t->retry;

    (void)loop;
    (void)rev;
    t->retry = NULL;
    if (pl != NULL && !take_plan(t, pl))
        apply_plan_free(pl);
}

static void
take_stop(struct ev_loop *loop, struct wthread *t)
{
    drop_retry(t, NULL);
    listener_free_list(&t->w.listeners);
    worker_forget_order(&t->w);
    t->w.on_idle = NULL;
    conn_close_all(&t->w);
    ev_async_stop(loop, &t->wake);
    ev_break(loop, EVBREAK_ALL);
}

/* Connections already open run to their end; the control loop learns
 * from wthread_on_idle() when the last one is gone. */
static void
take_drain(struct wthread *t, int handed)
{
    struct listener *l;

    if (t->draining)
        return;
    t->draining = 1;
    /* Handed over, the sockets live on in the new process. Closed here,
     * epoll (which watches the socket, not the descriptor) would still
     * report them under a number another thread may have reused, and
     * libev, finding no watcher, would remove that one: stopped, they
     * stay ours until the thread ends, and libev unregisters them at the
     * first event. */
    if (handed)
        for (l = t->w.listeners; l != NULL; l = l->next)
            listener_stop(l);
    else
        listener_free_list(&t->w.listeners);
    worker_forget_order(&t->w);
    t->w.on_idle = wthread_on_idle;
    if (worker_nconns(&t->w) == 0)
        wthread_on_idle(&t->w);
}

/* List this worker's listening sockets for proxy_export(), which waits
 * on the condition variable. */
static void
take_export(struct wthread *t)
{
    struct proxy_sock *v = NULL;
    size_t n = 0;

    if (listener_export(&t->w, &v, &n) < 0)
        log_error("worker %u: listing its sockets for a takeover: %s",
                  t->w.id, strerror(errno));
    pthread_mutex_lock(&t->mu);
    t->exported = v;
    t->nexported = n;
    t->exported_done = 1;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

/* The mailbox has something: empty it under the lock, then act on it
 * without holding the lock. A stop wins over a plan; a plan comes before
 * a drain posted with it (it is older). */
static void
wthread_on_wake(struct ev_loop *loop, struct ev_async *a, int rev)
{
    struct wthread *t = a->data;
    struct apply_plan *pl;
    unsigned orders;

    (void)rev;
    pthread_mutex_lock(&t->mu);
    pl = t->plan;
    t->plan = NULL;
    orders = t->orders;
    t->orders = 0;
    pthread_mutex_unlock(&t->mu);
    if (pl != NULL && !(orders & WTHREAD_STOP)) {
        drop_retry(t, pl);
        if (take_plan(t, pl))
            pl = NULL; /* kept for a retry */
    }
    apply_plan_free(pl);
    if (orders & WTHREAD_EXPORT)
        take_export(t);
    if (orders & WTHREAD_STOP)
        take_stop(loop, t);
    else if (orders & WTHREAD_DRAIN)
        take_drain(t, (orders & WTHREAD_HANDED) != 0);
}

static void *
wthread_main(void *arg)
{
    struct wthread *t = arg;

    char name[16];

    /* "top -H" and /proc/PID/task/TID/comm tell the workers apart. */
    snprintf(name, sizeof(name), "ferry-w%u", t->w.id);
    pthread_setname_np(pthread_self(), name);
    svc_worker_self = t->w.id;
    ring_worker_start(&t->w);
    ev_run(t->w.loop, 0);
    return NULL;
}

int
wthread_start(struct wthread *t, unsigned id, unsigned nworkers,
              struct ev_loop *ctl, struct ev_async *ctl_wake)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    sigset_t all, old;
    int rc;

    if (loop == NULL)
        return -1;
    if (worker_init(&t->w, loop) < 0) {
        ev_loop_destroy(loop);
        return -1;
    }
    t->w.id = id;
    t->w.nworkers = nworkers;
    t->ctl = ctl;
    t->ctl_wake = ctl_wake;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cond, NULL);
    ev_async_init(&t->wake, wthread_on_wake);
    t->wake.data = t;
    ev_timer_init(&t->retry_timer, wthread_on_retry, WTHREAD_RETRY_S, 0.);
    t->retry_timer.data = t;
    ev_async_start(loop, &t->wake);
    /* Signals are for the control loop: the thread blocks them all. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&t->tid, NULL, wthread_main, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        ev_async_stop(loop, &t->wake);
        worker_deinit(&t->w);
        ev_loop_destroy(loop);
        pthread_mutex_destroy(&t->mu);
        pthread_cond_destroy(&t->cond);
        return -1;
    }
    return 0;
}

void
wthread_stop(struct wthread *t)
{
    struct ev_loop *loop = t->w.loop;

    wthread_post(t, WTHREAD_STOP);
    pthread_join(t->tid, NULL);
    apply_plan_free(t->plan); /* posted after the stop was taken */
    t->plan = NULL;
    worker_deinit(&t->w);
    ev_loop_destroy(loop);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cond);
    /* An export answered after proxy_export() gave up waiting. */
    while (t->nexported > 0)
        close(t->exported[--t->nexported].fd);
    free(t->exported);
    t->exported = NULL;
    free(t->addrs.v);
    free(t->stale.v);
    t->addrs.v = t->stale.v = NULL;
    t->addrs.n = t->stale.n = 0;
}

void
wthread_post_plan(struct wthread *t, struct apply_plan *pl)
{
    struct apply_plan *old;

    pthread_mutex_lock(&t->mu);
    old = t->plan;
    if (old != NULL)
        apply_plan_adopt(pl, old);
    t->plan = pl;
    pthread_mutex_unlock(&t->mu);
    apply_plan_free(old);
    ev_async_send(t->w.loop, &t->wake);
}

void
wthread_post(struct wthread *t, enum wthread_order order)
{
    pthread_mutex_lock(&t->mu);
    t->orders |= (unsigned)order;
    pthread_mutex_unlock(&t->mu);
    ev_async_send(t->w.loop, &t->wake);
}
