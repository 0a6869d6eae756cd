/*
 * drain.h - a bound on how long a backend taken away keeps its
 * connections (a service's drain_timeout).
 *
 * A backend is taken away from a service when a new table leaves it out
 * (or leaves the whole service out), or when the admin server drains it.
 * Its open connections go on, as before, unless the service sets
 * drain_timeout: then, that long after it was taken away, each worker
 * resets the ones it holds and counts them (svc_stats.drain_closed). A
 * backend given back before then (same address, same service name) keeps
 * them.
 *
 * The control loop keeps the deadlines: per backend entry of every
 * runtime service (svc-t.h), an atomic the workers read. A service
 * replaced by a new table is "retired": it stays on a list, pointing at
 * the service of its name in force, until its last connection ends, and
 * its deadlines follow what that one lists. The workers keep the
 * connections: when a deadline changes, each worker is woken (ev_async)
 * and scans its own connections once, then sleeps on a timer until the
 * earliest deadline among them. Nothing is done per connection while no
 * service sets drain_timeout.
 */
#ifndef PROXY_DATAPLANE_DRAIN_H
#define PROXY_DATAPLANE_DRAIN_H

#include <stddef.h>

struct svc;
struct svcv;
struct table;
struct worker;

/* A table was applied: the services of <oldv> (NULL: none) give way to
 * those of <newv>, which serve <newt> in its order. Each old service not kept
 * is retired (a new one of its name takes over when its backends were
 * drained), and every retired service now follows the one of its name in
 * <newv>. Call before the references of <oldv> are dropped, and before
 * the admin's drains are set on <newv>. Control loop. */
void drain_swap(const struct svcv *oldv, const struct svcv *newv,
                const struct table *newt);

/* drain_swap() when <newv> was made from <oldv> (svcv_derive()) and only
 * the services at the <npos> positions <pos> may differ. */
void drain_swap_some(const struct svcv *oldv, const struct svcv *newv,
                     const struct table *newt, const size_t *pos,
                     size_t npos);

/* Recompute the deadlines of the retired services from those they follow
 * (after a table was applied and the admin overrides set on it, or after
 * an admin action), and wake the workers if a deadline changed. Control
 * loop. */
void drain_refresh(void);

/* svc.c: a deadline of a service in force changed (svc_set_drained()). */
void drain_mark_changed(void);

/* svc.c, as <s> is freed (any thread): take it off the retired list.
 * Returns the reference to its successor the caller must drop, or NULL. */
struct svc *drain_forget(struct svc *s);

/* The loop time the control loop stamps a backend taken away with. */
double drain_now(void);

/* A worker's part: its wake-up and its timer, on its loop. Init before
 * the worker's loop runs, deinit after it stopped (or on its thread). */
void drain_worker_init(struct worker *w);
void drain_worker_deinit(struct worker *w);

/* A connection of <w> uses a backend due to be closed at <deadline>
 * (> 0): make sure <w>'s timer fires by then. <w>'s thread. */
void drain_worker_note(struct worker *w, double deadline);

#endif
