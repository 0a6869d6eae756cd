/*
 * proxy.h - the data plane as the control loop sees it: apply a table
 * snapshot, drain, shut down.
 */
#ifndef PROXY_DATAPLANE_PROXY_H
#define PROXY_DATAPLANE_PROXY_H

#include <ev.h>

#include "config.h"
#include "err.h"
#include "table.h"
#include "worker.h"

struct svc;
struct wthread;

#define PROXY_WORKERS_MAX 64

/*
 * Workers 0..nworkers-1 are threads, each with its own loop, its own
 * SO_REUSEPORT listeners on the same addresses (the kernel spreads new
 * connections across them) and its own connections; the control loop
 * serves no connection, so that decoding, translating and applying a
 * table never holds a connection up. proxy_apply() opens a worker's new
 * listening sockets on the control loop (so that a reload still fails as
 * a whole) and posts the table to the worker; the worker points its
 * listeners at the new services and closes the ones no longer wanted. Runtime services (svc.h)
 * and backends are shared; nothing on the per-connection path takes a
 * lock. struct proxy is private to the data plane (proxy-t.h).
 */
struct proxy;

/* Returns a new proxy controlled from <loop> (no worker yet:
 * proxy_start_workers()), or NULL when out of memory. */
struct proxy *proxy_new(struct ev_loop *loop);
/* Stop the workers, reset every connection, free; NULL does nothing. */
void proxy_free(struct proxy *p);

/* Called once, on the control loop, when a drain has ended
 * (proxy_drain()). */
typedef void proxy_drained_fn(struct proxy *p, void *arg);
void proxy_on_drained(struct proxy *p, proxy_drained_fn *fn, void *arg);

/* Called after every successful proxy_apply(), once the new runtime
 * services are in force: health checks and admin overrides follow the
 * table. One hook; NULL removes it. */
typedef void proxy_applied_fn(struct proxy *p, void *arg);
void proxy_on_applied(struct proxy *p, proxy_applied_fn *fn, void *arg);

/* The table in force (borrowed; NULL before the first apply) and its
 * runtime services, in table order: proxy_svc(p, i) serves
 * table_service(proxy_table(p), i). Control loop. */
const struct table *proxy_table(const struct proxy *p);
size_t proxy_nsvcs(const struct proxy *p);
struct svc *proxy_svc(const struct proxy *p, size_t i);
/* The runtime services as an array of proxy_nsvcs() (borrowed; valid
 * until the next proxy_apply()). */
/* The runtime services as one array (proxy_nsvcs() of them, borrowed;
 * free() the array), or NULL when out of memory. */
struct svc **proxy_svcs_flat(const struct proxy *p);
/* Nonzero when the last apply's table was made from the one before it
 * (table_derive()): only the services at proxy_table(p)->dsvcs changed. */
int proxy_applied_delta(const struct proxy *p);

unsigned proxy_nworkers(const struct proxy *p);

/* How every worker relays bytes (relay.splice, relay.pipe_budget,
 * relay.engine); takes effect for new transfers (the engine: for
 * connections that start relaying) at once. Control loop. */
void proxy_set_relay(struct proxy *p, const struct conf_relay *r);
/* Nonzero once proxy_drain() was called. */
int proxy_draining(const struct proxy *p);

/* Run <n> workers (0: one per CPU this process may run on; at most
 * PROXY_WORKERS_MAX). Call once, after proxy_new() and before the first
 * proxy_apply(). Returns the number of workers, or -1 with <e> filled
 * (then none runs, and proxy_apply() fails). */
int proxy_start_workers(struct proxy *p, unsigned n, struct err *e);
/* Stop and join the worker threads, resetting their connections. */
void proxy_stop_workers(struct proxy *p);

/* Open connections across all workers. */
size_t proxy_nconns(struct proxy *p);
/* Worker <k> (0..nworkers-1), or NULL; its counters may be read from the
 * control loop (worker_nconns(), n_accepted). */
struct worker *proxy_worker(struct proxy *p, unsigned k);

/* A listening socket handed from one ferry process to the next
 * (--takeover): which worker held it, on what address. */
struct proxy_sock {
    unsigned worker;
    struct saddr addr;
    int fd;
};

/*
 * Duplicates of every worker's listening sockets, for a process taking
 * over. Each worker lists its own on its loop; the control loop waits
 * for them (at most 2 s in all). Returns the count, with the array in
 * <*out> (the caller closes the descriptors and frees it), or -1 with <e>
 * filled. Control loop.
 */
int proxy_export(struct proxy *p, struct proxy_sock **out, size_t *n,
                 struct err *e);

/* The listening sockets now serve the process that took over: the next
 * proxy_drain() stops accepting on them but keeps them open until the
 * workers stop. */
void proxy_hand_over(struct proxy *p);

/*
 * Before the first proxy_apply(): listening sockets from the previous
 * process (taken, descriptors included). That apply uses them where
 * worker and address match instead of opening new ones, so connections
 * waiting in their queues are served here, and closes the rest.
 */
void proxy_inherit(struct proxy *p, struct proxy_sock *v, size_t n);

/* What proxy_apply() does with a frontend that cannot be opened. */
enum proxy_apply_mode {
    PROXY_APPLY_SKIP_FAILING = 0, /* log it and apply the rest (tables
                                   * from the API; binds before the
                                   * address exists) */
    PROXY_APPLY_STRICT = 1,       /* fail, changing nothing (a reload of a
                                   * file must not half-apply) */
};

/*
 * Make <t> (frozen; borrowed, the proxy takes its own reference) the table
 * in force on every worker. Listeners are opened for new frontends,
 * pointed at the new runtime service for kept ones and closed for removed
 * ones; established connections are never touched. <mode> says what a
 * frontend that cannot be opened does; a strict apply that fails returns
 * -1 with <e> filled and nothing changed, as does any apply out of memory
 * or while draining. Returns 0 on success. Worker threads follow on their
 * own loops (worker_generation() says when). Control loop.
 */
int proxy_apply(struct proxy *p, struct table *t, enum proxy_apply_mode mode,
                struct err *e);

/* Stop accepting and call the drained hook once no connection is left or
 * <timeout_s> has passed (remaining connections are then reset). */
void proxy_drain(struct proxy *p, double timeout_s);

#endif
