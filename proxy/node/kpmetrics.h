/*
 * kpmetrics.h - kube-proxy's metrics under kube-proxy's names, for the
 * dashboards and alerts written for it (node mode, node.metrics_listen,
 * like kube-proxy's metricsBindAddress, default 127.0.0.1:10249).
 *
 * GET /metrics answers in the Prometheus text format:
 *
 *   kubeproxy_sync_proxy_rules_duration_seconds        histogram
 *   kubeproxy_sync_proxy_rules_last_timestamp_seconds  gauge
 *   kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds  gauge
 *   kubeproxy_sync_proxy_rules_endpoint_changes_total  counter
 *   kubeproxy_sync_proxy_rules_endpoint_changes_pending  gauge
 *   kubeproxy_sync_proxy_rules_service_changes_total   counter
 *   kubeproxy_sync_proxy_rules_service_changes_pending gauge
 *   kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy}
 *                                                      gauge
 *   kubeproxy_network_programming_duration_seconds     histogram
 *   kubeproxy_proxy_healthz_total{code}                counter
 *   kubeproxy_proxy_livez_total{code}                  counter
 *
 * with kube-proxy's bucket bounds. The histograms are kept here; the
 * rest is asked of the caller at each request. Everything runs on the
 * loop given to kpm_new(); nothing is thread-safe.
 */
#ifndef PROXY_NODE_KPMETRICS_H
#define PROXY_NODE_KPMETRICS_H

#include <ev.h>
#include <stdint.h>

#include "err.h"
#include "parse.h"

struct sbuf;

/* What the caller knows; times are Unix seconds, 0 = never. */
struct kpm_state {
    double last_queued; /* arrival of the latest Service/slice change */
    uint64_t endpoint_changes, service_changes;
    uint64_t endpoint_pending, service_pending;
    uint64_t no_local_internal, no_local_external;
    uint64_t healthz[2], livez[2]; /* answers 200, 503 */
};

/* Fills <out> (zeroed before the call). */
typedef void (*kpm_state_fn)(void *arg, struct kpm_state *out);

struct kpm;

/* No listener yet. Returns new, or NULL when out of memory. */
struct kpm *kpm_new(struct ev_loop *loop, kpm_state_fn state, void *arg);

/* Close the listener and connections, free. NULL does nothing. */
void kpm_free(struct kpm *m);

/* Serve /metrics on <addr>. Returns 0, or -1 with <e> filled. */
int kpm_listen(struct kpm *m, const struct saddr *addr, struct err *e);

/* A sync took <duration_s>, from the start of translation to the table
 * in force; it succeeded at Unix time <wall_s>, or failed (<wall_s> 0). */
void kpm_sync(struct kpm *m, double duration_s, double wall_s);

/* An EndpointSlice change took <latency_s> from its trigger time to
 * being in force. */
void kpm_programming(struct kpm *m, double latency_s);

/* The exposition of <m>'s histograms and <st> into <out> (unit tests). */
void kpm_render(const struct kpm *m, const struct kpm_state *st,
                struct sbuf *out);

#endif
