/*
 * kube.h - Kubernetes mode: the watcher's tables, merged with the static
 * services of the file, applied to the proxy, with the service IPs put on
 * the host (vip) unless node.vip_interface is "none".
 *
 * Two roles, from "kubernetes.mode":
 *   node  - in place of kube-proxy: ClusterIPs, NodePorts, externalIPs and
 *           LoadBalancer IPs of every Service, with this node's name for
 *           Local traffic policies; service IPs go on "node.vip_interface".
 *   edge  - outside the cluster, in front of it: only externalIPs and
 *           LoadBalancer IPs of the Services "service_selector" picks,
 *           spread straight to their ready pods.
 */
#ifndef PROXY_NODE_KUBE_H
#define PROXY_NODE_KUBE_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"
#include "parse.h"
#include "skip.h"
#include "table.h"

struct health;
struct proxy;
struct kube;

/* Command-line overrides of the "kubernetes:" section; NULL = unset. */
struct kube_flags {
    const char *kubeconfig;
    const char *api_server;
    const char *node_name;
};

/* Start following the API for <p> (borrowed, outlives the kube) as <c>
 * (borrowed, copied) says; <generation> is the daemon's counter, bumped
 * for every table applied. Nothing is served from the API before its
 * first full sync. Returns NULL with <e> filled on bad credentials or
 * netlink trouble. Start-up only (reads credential files). */
struct kube *kube_new(struct ev_loop *loop, struct proxy *p,
                      const struct conf *c, const struct kube_flags *f,
                      uint64_t *generation, struct err *e);
void kube_free(struct kube *k);

/* Use <h> (borrowed, outlives the kube) for the active checks of kernel
 * services' endpoints (ferry.dev/health-check): an endpoint found down
 * leaves the kernel's maps until it passes again. NULL: none. */
void kube_set_health(struct kube *k, struct health *h);

/* Nonzero when <k> stopped the loop because the API server's certificate
 * did not verify before the first sync (ferry then exits with status 1).
 * NULL gives 0. */
int kube_refused(const struct kube *k);

/* A reload changed the file: <c>'s static services and policy are merged
 * with the last API table from now on (the API connection settings are
 * kept; changing them needs a restart). */
void kube_reconfigure(struct kube *k, const struct conf *c);

/* For /readyz: the first full sync is in force; how long the API has been
 * failing (0 = healthy). <arg> is the struct kube. */
int kube_synced(void *arg);
double kube_api_failing_for(void *arg, double now);

/* Nonzero when the "kubernetes:" section or a flag asks for it. */
int kube_wanted(const struct conf *c, const struct kube_flags *f);

/*
 * The table Kubernetes mode applies: the file's services <statics>, then
 * the API's <api>, each in its own order (either may be NULL: none).
 * A file service wins a service name or a frontend (address and port)
 * that both claim: the API service is left out whole, with all its
 * frontends, and noted in <refused> (if not NULL) as a Service
 * "conflict". Frontends that only share an IP, or a port, do not clash.
 * With <want_vips>, the IPs of the API services' frontends, except the
 * NodePort addresses <nodeport> (<n_nodeport> of them; ports ignored)
 * and those of services of reach REDIRECT, become the table's VIPs; file
 * services add none. The <ndispatch> services of <dispatch>, the proxy's
 * listeners for connections the kernel redirects, are added after the
 * file's services (refused like an API service if one holds an address). The table is frozen
 * with <generation>, whatever the inputs' generations. Returns a new
 * table (one reference), or NULL with <e> filled when memory runs out.
 * Borrows everything; no log, no clock.
 */
struct table *kube_merge(const struct table *statics, const struct table *api,
                         const struct saddr *nodeport, size_t n_nodeport,
                         int want_vips, const struct tbl_service *dispatch,
                         size_t ndispatch, uint64_t generation,
                         struct skip_set *refused, struct err *e);

/* The names of the proxy's listeners for redirected connections: every
 * worker's, and worker 0's for Services with ClientIP affinity. */
#define KUBE_DISPATCH_NAME          "ferry/redirect"
#define KUBE_DISPATCH_AFFINITY_NAME "ferry/redirect-affinity"

#endif
