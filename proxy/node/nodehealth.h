/*
 * nodehealth.h - kube-proxy's health endpoints, for load balancers and
 * the kubelet's probes (Kubernetes mode).
 *
 * Two kinds of listener, both on the control loop, one request per
 * connection (Connection: close), HTTPREQ_MAX bytes and 2 s per exchange
 * at most, 128 connections (32 per client address; an idle one gives way
 * to a new one, see httpd.h):
 *
 *   node.healthz_listen (default 0.0.0.0:10256), with kube-proxy's
 *   meaning:
 *     GET /healthz  200, or 503 when a change from the API has waited
 *                   longer than the stale threshold to be in force, or
 *                   when this node is being deleted or tainted for
 *                   deletion (load balancers stop sending to it)
 *     GET /livez    the same without the node condition
 *     GET /readyz   200 once the first full sync is in force, 503 before
 *                   and while shutting down (the DaemonSet's readiness
 *                   probe; the admin port is loopback-only)
 *
 *   healthCheckNodePort of each LoadBalancer Service with
 *   externalTrafficPolicy Local (from the table, reconciled on every
 *   change): any request gets 200 when the node has a local ready
 *   endpoint for the Service and /healthz would pass, else 503, with
 *   kube-proxy's body and X-Load-Balancing-Endpoint-Weight header.
 */
#ifndef PROXY_NODE_NODEHEALTH_H
#define PROXY_NODE_NODEHEALTH_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "parse.h"
#include "table.h"

struct sbuf;
struct httpreq;

/* The proxy's state as the health endpoints see it. Times are wall
 * clock (ev_time()), 0 = never/none. */
struct nodehealth_state {
    int synced;           /* first full sync in force */
    int shutting_down;    /* draining: not ready */
    int node_deleting;    /* Node deleted or tainted for deletion */
    double pending_since; /* oldest change not yet in force, 0 = none */
    double last_applied;  /* last table put in force */
};

/* Fills <out>; called for every request. */
typedef void (*nodehealth_state_fn)(void *arg, struct nodehealth_state *out);

struct nodehealth;

/* A server with no listener yet; <stale_after_s> is the threshold for
 * pending changes. Returns NULL when out of memory. */
struct nodehealth *nodehealth_new(struct ev_loop *loop,
                                  nodehealth_state_fn state, void *arg,
                                  double stale_after_s);

/* Close every listener and connection. NULL does nothing. */
void nodehealth_free(struct nodehealth *nh);

/* Serve /healthz, /livez and /readyz on <addr>. Returns 0, or -1 with
 * <e> filled (the caller logs it; nothing else depends on it). */
int nodehealth_listen(struct nodehealth *nh, const struct saddr *addr,
                      struct err *e);

/* Follow <t> (a reference is kept: a table made from it next is followed
 * by looking at what changed): a responder per healthCheckNodePort found
 * in it, on each IP of <addrs> (ports ignored; copied), opened, kept or
 * closed as the table says; counts of local ready endpoints updated. Bind
 * failures are logged and retried on the next call. */
void nodehealth_set_table(struct nodehealth *nh, const struct table *t,
                          const struct saddr *addrs, size_t naddrs);

/* Number of healthCheckNodePort responders listening (tests, status). */
size_t nodehealth_ports(const struct nodehealth *nh);

/* Answers of /healthz and /livez by status, 200 then 503 (kube-proxy's
 * proxy_healthz_total and proxy_livez_total); GET and HEAD only. */
struct nodehealth_counts {
    uint64_t healthz[2], livez[2];
};

void nodehealth_counts(const struct nodehealth *nh,
                       struct nodehealth_counts *out);

/* Replies, exposed for unit tests. <now> is wall-clock time. The node
 * reply returns the status it wrote. */
int nodehealth_reply_node(const struct nodehealth_state *st,
                           double stale_after_s, const struct httpreq *r,
                           double now, struct sbuf *out);
void nodehealth_reply_service(const struct nodehealth_state *st,
                              double stale_after_s, const char *ns,
                              const char *name, unsigned local_endpoints,
                              const struct httpreq *r, double now,
                              struct sbuf *out);

#endif
