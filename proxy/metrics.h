/*
 * metrics.h - the Prometheus text exposition (format 0.0.4) of ferry's
 * counters, and the process-wide metrics that the control plane feeds.
 *
 * Names follow kube-proxy where the meaning is the same, with ferry_ in
 * place of kubeproxy_ (README, "Metrics"). The feed functions may be
 * called from any thread; main.c wires the watcher's events to them.
 */
#ifndef PROXY_METRICS_H
#define PROXY_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "stats.h"

struct health;
struct sbuf;
struct svc;

/* ---- feeds ---- */

/* The table generation in force. */
void metrics_set_generation(uint64_t generation);

/* A sync of the service table (API objects to a table in force) took
 * <duration_s> and finished at wall-clock time <wall_s> (Unix seconds). */
void metrics_sync_done(double duration_s, double wall_s);

/* An API change took <latency_s> from its object's change time to being
 * served by ferry. */
void metrics_network_programming(double latency_s);
/* A worker thread took <delay_s> after worker 0 to serve a table. */
void metrics_worker_delay(double delay_s);

/* The API watch stream was restarted; a full relist happened. */
void metrics_watch_restart(void);
void metrics_watch_relist(void);

/* A worker stopped accepting for a moment: out of descriptors (EMFILE,
 * ENFILE). May be called from any worker thread. */
void metrics_accept_paused(void);

/* splice() pipes: <delta> pipes opened (+) or closed (-); a pipe wanted
 * but refused (descriptor budget or limit), so the bytes were copied.
 * From any worker thread. */
void metrics_pipes(int delta);
void metrics_pipe_denied(void);

/* ---- exposition ---- */

/* Append every metric family to <b>: process-wide ones, then per service
 * and per backend of <svcs> (borrowed; control loop) at loop time <now>.
 * A backend listed by several services reports its counters (which
 * belong to its address) under each. <h> may be NULL. */
void metrics_write(struct sbuf *b, struct svc *const *svcs, size_t n,
                   const struct health *h, int ready, double now);

/* Helpers, exported for the unit tests. */

/* <s> as a label value: backslash, double quote and newline escaped. */
void metrics_label_value(struct sbuf *b, const char *s);

/* One histogram's samples: name_bucket{<labels>,le=...} cumulative, then
 * _sum and _count. <labels> is "" or 'k="v",...' (already escaped). */
void metrics_write_hist(struct sbuf *b, const char *name, const char *labels,
                        const struct hist *h, const struct hist_spec *sp);

#endif
