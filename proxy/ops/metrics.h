/*
 * metrics.h - the Prometheus text exposition (format 0.0.4) of ferry's
 * counters, and the process-wide metrics that the control plane feeds.
 *
 * Names follow kube-proxy where the meaning is the same, with ferry_ in
 * place of kubeproxy_ (README, "Metrics"). The values themselves live in
 * the data plane's stats.h (counters fed from any thread); this file
 * only formats them.
 */
#ifndef PROXY_OPS_METRICS_H
#define PROXY_OPS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "stats.h"

struct health;
struct sbuf;
struct svc;

/* ---- exposition ---- */

/* Append every metric family to <b>: process-wide ones, then per service
 * of <svcs> (borrowed; control loop) at loop time <now>, then per backend
 * of the services <per_backend> selects (auto: those from the config
 * file, not the API). A backend listed by several services reports its
 * counters (which belong to its address) under each. <h> may be NULL.
 * Stops early, with b->overflow set, once <b> is full. */
void metrics_write(struct sbuf *b, struct svc *const *svcs, size_t n,
                   const struct health *h, int ready, double now,
                   enum conf_per_backend per_backend);

/* Helpers, exported for the unit tests. */

/* <s> as a label value: backslash, double quote and newline escaped. */
void metrics_label_value(struct sbuf *b, const char *s);

/* One histogram's samples: name_bucket{<labels>,le=...} cumulative, then
 * _sum and _count. <labels> is "" or 'k="v",...' (already escaped). */
void metrics_write_hist(struct sbuf *b, const char *name, const char *labels,
                        const struct hist *h, const struct hist_spec *sp);

#endif
