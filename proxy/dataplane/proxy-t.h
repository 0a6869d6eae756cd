/*
 * proxy-t.h - the inside of struct proxy, for the data plane only.
 */
#ifndef PROXY_DATAPLANE_PROXY_T_H
#define PROXY_DATAPLANE_PROXY_T_H

#ifndef FERRY_DATAPLANE_INTERNAL
#error "proxy-t.h is private to proxy/dataplane: use the functions of proxy.h"
#endif

#include <ev.h>

#include "apply.h"
#include "proxy.h"
#include "worker.h"

struct proxy {
    struct ev_loop *loop;    /* the control loop: serves no connection */
    struct wthread *threads; /* workers 0..nworkers-1 (wthread.h) */
    unsigned nworkers;       /* 0 until proxy_start_workers() */
    struct ev_async wake; /* a worker went idle while draining */
    int drained;          /* on_drained was called */
    /* What the descriptor guard said last (apply.c), and the descriptor
     * limit it read (at most once a second: a change costs getrlimit()
     * otherwise, a system call per change). */
    enum apply_listen threads_listen;
    size_t fd_cap;
    double fd_cap_at;
    struct table *table; /* the snapshot in force (reference) */
    /* proxy_inherit(): sockets of the previous process, until the first
     * apply has taken what it uses (a taken one has fd -1). */
    struct proxy_sock *inherited;
    size_t ninherited;
    int handed_over; /* proxy_hand_over() */
    int taking_over; /* proxy_inherit() was called, first apply not done */
    struct svcv *svcs;   /* runtime services of <table>, same order */
    size_t nsvcs;
    int delta; /* the last apply changed only table->dsvcs' services */
    int draining;
    struct ev_timer drain_timer;
    proxy_drained_fn *on_drained;
    void *on_drained_arg;
    proxy_applied_fn *on_applied;
    void *on_applied_arg;
};

#endif
