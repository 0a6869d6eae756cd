/*
 * proxy.h - the data plane as the control loop sees it: apply a table
 * snapshot, drain, shut down.
 */
#ifndef PROXY_PROXY_H
#define PROXY_PROXY_H

#include <ev.h>

#include "err.h"
#include "table.h"
#include "worker.h"

struct svc;

struct proxy {
    struct worker w;
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
