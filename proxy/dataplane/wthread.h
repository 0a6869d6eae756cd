/*
 * wthread.h - a worker thread (every worker is one) and its mailbox.
 *
 * Each worker thread runs its own loop with its own listeners and
 * connections (worker.h). The control loop talks to it only through its
 * mailbox: the newest plan to commit (apply.h) and orders (drain, stop),
 * under a mutex, then an ev_async wake-up. The thread answers through an
 * atomic (idle) and the control loop's ev_async, and through its
 * worker's generation.
 */
#ifndef PROXY_DATAPLANE_WTHREAD_H
#define PROXY_DATAPLANE_WTHREAD_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "apply.h"
#include "proxy.h"
#include "worker.h"

enum wthread_order {
    WTHREAD_DRAIN = 1u << 0, /* close the listeners; say when idle */
    WTHREAD_HANDED = 1u << 3, /* with DRAIN: the listening sockets are
                               * another process's now (takeover): stop
                               * them, close them only at the end */
    WTHREAD_STOP = 1u << 1,  /* reset every connection, end the thread */
    WTHREAD_EXPORT = 1u << 2, /* list the listening sockets (duplicates)
                               * into <exported> */
};

struct wthread {
    struct worker w; /* on_idle finds the wthread (container_of) */
    pthread_t tid;
    struct ev_async wake; /* the mailbox has something */
    /* The control loop, and what tells it the thread went idle. */
    struct ev_loop *ctl;
    struct ev_async *ctl_wake;
    pthread_mutex_t mu;
    struct apply_plan *plan; /* under mu: the newest not yet taken */
    unsigned orders;         /* under mu: enum wthread_order bits */
    int draining;            /* the thread's own: drain taken */
    /* WTHREAD_EXPORT's answer, under mu: set <exported_done> and signal
     * <cond> (proxy_export() waits on it). */
    pthread_cond_t cond;
    struct proxy_sock *exported;
    size_t nexported;
    int exported_done;
    atomic_int idle;         /* draining and without connections */
    /* The thread's own: a plan it could not commit (out of memory),
     * tried again when <retry_timer> fires unless a newer one comes. */
    struct apply_plan *retry;
    struct ev_timer retry_timer;
    /* Control loop only (apply.c): the addresses the thread listens on
     * once the plans posted so far are committed; those it may still
     * listen on until then; the generation of the newest plan posted. */
    struct apply_addrs addrs;
    struct apply_addrs stale;
    uint64_t posted_gen;
};

/* Start worker <id> of <nworkers> in <t> (zeroed by the caller), which
 * wakes <ctl_wake> on <ctl> when it goes idle while draining. Returns 0,
 * or -1 with nothing left to undo. Control loop. */
int wthread_start(struct wthread *t, unsigned id, unsigned nworkers,
                  struct ev_loop *ctl, struct ev_async *ctl_wake);
/* Stop and join the thread (its connections are reset), then free what
 * it holds. Control loop. */
void wthread_stop(struct wthread *t);

/* Post <pl> (taken) to the thread, replacing a plan it has not taken
 * yet (apply_plan_adopt()). Control loop. */
void wthread_post_plan(struct wthread *t, struct apply_plan *pl);
/* Post <order> (enum wthread_order). Control loop. */
void wthread_post(struct wthread *t, enum wthread_order order);

/* Nonzero once a draining thread has no connection left; any thread. */
static inline int
wthread_idle(struct wthread *t)
{
    return atomic_load(&t->idle);
}

#endif
