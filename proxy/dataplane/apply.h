/*
 * apply.h - the apply step: moving every worker to a new table.
 *
 * proxy_apply() runs it on the control loop, in three stages:
 *
 *  1. services: one runtime service per table service; an unchanged one
 *     keeps its svc (and its round-robin position), a changed one gets a
 *     new svc;
 *  2. open: one plan per worker (struct apply_plan). The listening
 *     sockets a worker lacks, its threads' included, are opened here on
 *     the control loop, so that a strict apply fails as a whole before
 *     any worker changed: a failure unwinds every plan;
 *  3. commit: each worker gets its plan through its mailbox (wthread.h)
 *     and commits it on its own thread; the proxy's table and services
 *     are swapped. Nothing here can fail.
 *
 * Every worker is a thread; the control loop serves no connection. Only
 * worker 0 makes sure that no one else listens on an address (see
 * listener.c), so another worker listens only where worker 0 does. The
 * others do not serve services with ClientIP affinity: the affinity
 * table belongs to worker 0 (svc.h), which also moves a changed
 * service's pins over when it commits.
 */
#ifndef PROXY_DATAPLANE_APPLY_H
#define PROXY_DATAPLANE_APPLY_H

#include <stddef.h>

#include "err.h"
#include "parse.h"
#include "proxy.h"
#include "table.h"

struct listener;
struct svc;
struct udp_plan;
struct worker;

/* Addresses, sorted by saddr_cmp() and without duplicates. */
struct apply_addrs {
    struct saddr *v;
    size_t n;
};

/* Which frontends of a table the worker threads listen on. */
enum apply_listen {
    APPLY_LISTEN_SERVED = 0, /* those of the services they serve */
    APPLY_LISTEN_NONE,       /* none: too many addresses for the
                              * descriptor limit, worker 0 serves alone */
};

/* One worker's part of a table: what its listeners serve from now on. */
struct apply_plan {
    struct table *t;         /* reference */
    struct svcv *svcs;       /* a reference: t's runtime services */
    struct listener *fresh;  /* opened for it on the control loop; not
                              * accepting yet */
    struct listener **index; /* its listeners and <fresh>, sorted by
                              * address: built on the worker's loop */
    size_t nindex;
    struct apply_addrs addrs; /* what it listens on once committed */
    /* The runtime service each of addrs.v serves (borrowed from <svcs>),
     * found on the control loop: the worker's commit does no lookup. */
    struct svc **lsvc;
    /* The table has a DISPATCH service or one with server names: every
     * worker keeps it (listener_dispatch_set()). Found on the control
     * loop, once. */
    int dispatch;
    /* Some service has ClientIP affinity: worker 0 keeps the table, for
     * the pins the next table's services take over. */
    int affinity;
    struct udp_plan *udp;     /* its UDP frontends (udp.h), or NULL */
    double posted;            /* ev_time() when it was posted */
};

/*
 * Make <t> (frozen; borrowed) the table in force across every worker, as
 * proxy_apply() documents (<p> is not draining). Returns 0, or -1 with <e>
 * filled and nothing changed. Control loop.
 */
int apply_table(struct proxy *p, struct table *t, enum proxy_apply_mode mode,
                struct err *e);

/*
 * Worker side: commit <pl> (borrowed) on <w>'s own loop: its fresh
 * listeners join <w>'s, every listener the table names for <w> serves
 * its new service and the others close. Returns 0, or -1 when out of
 * memory: <w> keeps its listeners and <pl> its fresh ones.
 */
int apply_plan_commit(struct worker *w, struct apply_plan *pl);


/*
 * <older> was posted to a worker that never took it: <pl>, which
 * replaces it, takes over its fresh listeners, since the control loop
 * already counts them among the thread's (<pl> closes those it does not
 * name). Any thread, under the mailbox lock.
 */
void apply_plan_adopt(struct apply_plan *pl, struct apply_plan *older);

/* Close what <pl> still holds and free it; NULL does nothing. Any thread:
 * the svc and table references are atomic. */
void apply_plan_free(struct apply_plan *pl);

#endif
