/*
 * ctl.h - the operator-facing side of the control loop, in one piece for
 * main.c: active health checks, the admin server and the table metrics,
 * kept in step with every table the proxy applies.
 */
#ifndef PROXY_OPS_CTL_H
#define PROXY_OPS_CTL_H

#include <ev.h>

#include "config.h"

struct admin;
struct health;
struct proxy;

struct ctl {
    struct proxy *p;
    struct health *health;
    struct admin *admin; /* Kubernetes mode: admin_set_hooks(c->admin, ...)
                            gives /readyz the watcher's sync and API state */
};

/* Set up on <loop> for <p> (borrowed) and hook into p->on_applied, so
 * that every later proxy_apply() updates checks, overrides and metrics.
 * Call before the first proxy_apply(). Returns 0 or -1 (out of memory). */
int ctl_init(struct ctl *c, struct ev_loop *loop, struct proxy *p);

/* Apply the settings of <conf> (borrowed) that are not the table: the
 * admin listener. A listener that cannot be opened is logged, not fatal:
 * the data plane never depends on the admin port. */
void ctl_configure(struct ctl *c, const struct conf *conf);

/* Stop checks and the admin server; before proxy_deinit(). */
void ctl_deinit(struct ctl *c);

#endif
