/*
 * proxy.h - the data plane as the control loop sees it: apply a table
 * snapshot, drain, shut down.
 */
#ifndef PROXY_DATAPLANE_PROXY_H
#define PROXY_DATAPLANE_PROXY_H

#include <ev.h>

#include "err.h"
#include "table.h"
#include "worker.h"

struct svc;
struct wthread;

#define PROXY_WORKERS_MAX 64

/*
 * Workers: worker 0 is <w>, on the control loop; workers 1..nworkers-1 are
 * threads, each with its own loop, its own SO_REUSEPORT listeners on the
 * same addresses (the kernel spreads new connections across them) and its
 * own connections. proxy_apply() opens a thread's new listening sockets on
 * the control loop (so that a reload still fails as a whole) and posts the
 * table to the thread (ev_async); the thread points its listeners at the
 * new services and closes the ones no longer wanted. Runtime services
 * (svc.h) and backends are shared; nothing on the per-connection path
 * takes a lock.
 */
struct proxy {
    struct worker w;
    struct wthread *threads; /* workers 1..nworkers-1 */
    unsigned nworkers;
    struct ev_async wake;    /* a worker thread went idle while draining */
    int drained;             /* on_drained was called */
    int threads_off;         /* too many addresses: threads listen on none */
    struct table *table; /* the snapshot in force (reference) */
    struct svc **svcs;   /* runtime services of <table>, same order */
    size_t nsvcs;
    int draining;
    struct ev_timer drain_timer;
    void (*on_drained)(struct proxy *p);
    /* Called after every successful proxy_apply(), once p->svcs is the
     * new set: health checks and admin overrides follow the table. */
    void (*on_applied)(struct proxy *p, void *arg);
    void *on_applied_arg;
};

int proxy_init(struct proxy *p, struct ev_loop *loop);
void proxy_deinit(struct proxy *p);

/* Run <n> workers (0: one per CPU this process may run on; at most
 * PROXY_WORKERS_MAX). Call once, after proxy_init() and before the first
 * proxy_apply(). Returns the number of workers, or -1 with <e> filled
 * (then only worker 0 runs). */
int proxy_start_workers(struct proxy *p, unsigned n, struct err *e);
/* Stop and join the worker threads, resetting their connections. */
void proxy_stop_workers(struct proxy *p);

/* Open connections across all workers. */
size_t proxy_nconns(struct proxy *p);
/* Worker <k> (0..nworkers-1), or NULL; its counters may be read from the
 * control loop (worker_nconns(), n_accepted). */
struct worker *proxy_worker(struct proxy *p, unsigned k);

/*
 * Make <t> (frozen; borrowed, the proxy takes its own reference) the table
 * in force. Listeners are opened for new frontends, pointed at the new
 * runtime service for kept ones and closed for removed ones; established
 * connections are never touched. With <strict>, the change is all or
 * nothing: if any listener cannot be opened, nothing changes and -1 is
 * returned with <e> filled (a reload of a file must not half-apply).
 * Without it (tables from the API), failing frontends are logged and
 * skipped. Returns 0 on success.
 */
int proxy_apply(struct proxy *p, struct table *t, int strict, struct err *e);

/* Stop accepting and call p->on_drained once no connection is left or
 * <timeout_s> has passed (remaining connections are then reset). */
void proxy_drain(struct proxy *p, double timeout_s);

#endif
