/*
 * translate.h - turn cached Services and EndpointSlices into a service
 * table, selecting endpoints exactly as kube-proxy does.
 *
 * A pure function over the caches: no I/O, no clock, no loop, so it is
 * unit-tested and fuzzed directly.
 *
 * A Service port the kernel serves (node mode, node.dataplane nftables)
 * becomes one kernel service (struct tbl_ksvc) named
 * "namespace/name:portname" (the port number when it has no name), of any
 * protocol, with its addresses by kind and two endpoint lists.
 *
 * A Service port the proxy serves becomes, when TCP, one table service
 * named "namespace/name:portname"; when the external frontends (NodePort,
 * LoadBalancer ingress, externalIPs) need another endpoint set than the
 * ClusterIPs (a Local traffic policy on one side only) they go to a
 * second service "namespace/name:portname/external". The proxy serves no
 * UDP or SCTP. Both paths select endpoints with the same code.
 */
#ifndef WATCHER_TRANSLATE_H
#define WATCHER_TRANSLATE_H

#include <stddef.h>

#include "err.h"
#include "kcache.h"
#include "parse.h"
#include "skip.h"
#include "table.h"

#define TRANSLATE_AFFINITY_DEFAULT_S 10800 /* ClientIP timeout default */

#define TRANSLATE_LABEL_SERVICE_NAME "kubernetes.io/service-name"
#define TRANSLATE_LABEL_PROXY_NAME   "service.kubernetes.io/service-proxy-name"
#define TRANSLATE_LABEL_HEADLESS     "service.kubernetes.io/headless"
#define TRANSLATE_LABEL_ZONE         "topology.kubernetes.io/zone"

/* "proxy": the Service is served by ferry's proxy although the node's
 * dataplane is nftables ("nftables", the default, says so explicitly). */
#define TRANSLATE_ANN_DATAPLANE "ferry.dev/dataplane"

/* Proxy features per Service, over the config's "defaults:" (values as
 * in a file service): "roundrobin", "leastconn", "random"; a number of
 * extra attempts; "tcp" or "http:/path"; "v1" or "v2". A bad value is
 * noted (bad_annotation) and the default kept. The health check also
 * reaches kernel-served Services. */
#define TRANSLATE_ANN_BALANCE      "ferry.dev/balance"
#define TRANSLATE_ANN_RETRIES      "ferry.dev/retries"
#define TRANSLATE_ANN_HEALTH_CHECK "ferry.dev/health-check"
#define TRANSLATE_ANN_SEND_PROXY   "ferry.dev/send-proxy"
/* A duration ("30s", "0" = no limit) bounding how long a backend taken
 * away keeps its connections (the service's drain_timeout). */
#define TRANSLATE_ANN_DRAIN_TIMEOUT "ferry.dev/drain-timeout"

/* Counters of one build, for logs and metrics. */
struct translate_stats {
    size_t services;      /* Service objects that produced something */
    size_t skipped;       /* Service objects skipped (headless, ...) */
    size_t ports_skipped; /* ports not TCP or without a good number */
    size_t conflicts;     /* table services refused (frontend taken) */
    size_t emitted;       /* table services emitted */
    size_t kernel;        /* kernel services emitted */
    /* Service ports with endpoints, a Local traffic policy and none of
     * them on this node, by policy (kube-proxy's
     * sync_proxy_rules_no_local_endpoints_total). */
    size_t no_local_internal, no_local_external;
    /* Services translated by this build; with a memo, the others' records
     * were reused. */
    size_t translated;
    char first_conflict[ERR_MSG_MAX + 256];
};

struct translate_opts {
    /* This node: Local policies, LOCAL flags and topology. NULL in edge
     * mode, where Local policies act as Cluster (there is no node). */
    const char *node_name;
    const char *node_zone; /* from the Node's zone label, or NULL */
    /* NodePort frontends listen on these IPs (their ports ignored). */
    const struct saddr *node_addrs;
    size_t n_node_addrs;
    /* NULL: skip every Service carrying the service-proxy-name label;
     * else serve only those whose label has this value. */
    const char *service_proxy_name;
    /* balance, timeouts, retries, max_conns copied into each service;
     * NULL = zeros. */
    const struct tbl_service *policy;
    struct translate_stats *stats; /* filled if not NULL */
    /* Every object and field skipped is added here if not NULL: the
     * Service or EndpointSlice as "ns/name", the field and why. A field
     * looked at for several ports is added once. */
    struct skip_set *skips;
    /* When <skips> is NULL and this is not: the set is made at the first
     * skip and put here (a Service's record: most skip nothing). */
    struct skip_set **skips_at;
    /* Set to 1 when a note could not be kept for want of memory (a
     * record of the memo then fails whole: see record()). */
    int *notes_lost;
    /* Edge balancer outside the cluster: serve only externalIPs and
     * LoadBalancer IPs (ClusterIPs mean nothing out there; NodePorts are
     * the nodes' business). */
    int edge;
    /* Edge mode, NodePort backends: spread to these nodes' NodePorts
     * instead of to the pods (kube-proxy on the nodes takes it from
     * there). Ports ignored; none = straight to the pods. */
    const struct saddr *edge_nodes;
    size_t n_edge_nodes;
    /* Node mode, node.dataplane nftables: Service ports go to the
     * table's kernel services unless annotated "ferry.dev/dataplane:
     * proxy"; an annotated TCP port becomes both a proxy service of reach
     * REDIRECT (nothing bound on its frontends) and a kernel service with
     * <redirect> set, which sends its connections to the proxy. 0:
     * everything to the proxy, whatever the annotation says, listening
     * on the frontends unless <redirect>. Ignored in edge mode, where
     * everything is proxied. */
    int kernel;
    /* Node mode, node.dataplane proxy with node.proxy_steering redirect
     * (<kernel> 0): every TCP port is steered as an annotated one is under
     * nftables (a proxy service of reach REDIRECT plus a kernel service
     * with <redirect> set); UDP ports listen on their frontends, as
     * without it. No port is served by the kernel itself. Ignored in edge
     * mode and with <kernel>. */
    int redirect;
    /* The records of the last build, reused for the Services that did not
     * change (translate_memo_new()); NULL: translate everything. A memo
     * serves one sequence of builds, on one thread. */
    struct translate_memo *memo;
};

struct translate_memo;

/* A new empty memo, or NULL; freeing NULL does nothing. */
struct translate_memo *translate_memo_new(void);
void translate_memo_free(struct translate_memo *m);

/* Services the memo holds a record of. */
size_t translate_memo_size(const struct translate_memo *m);

/*
 * Add the services for all Services in <services> with endpoints from
 * <slices> to <out> (unfrozen, normally empty). Objects and fields that
 * cannot be served are skipped and noted in o->skips (and o->stats);
 * nothing is logged. Returns 0, or -1 with <e> filled when memory runs
 * out (<out> is then partial). A note a Service's record cannot keep
 * fails the build (the memo would lose it for good); one not copied into
 * o->skips is only not counted. Borrows everything.
 */
int translate_build(const struct kcache *services, const struct kcache *slices,
                    const struct translate_opts *o, struct table *out,
                    struct err *e);

/*
 * The table translate_build() would make now, made from <prev> (the last
 * table built or patched through o->memo, frozen): <prev> with the
 * services of the Services named by <svc_keys> ("namespace/name") and of
 * the Services of the slices named by <slice_keys> translated again, in
 * their places (table_derive(); their positions are noted in the table).
 * The keys must name every object changed since <prev>, and the Service
 * of every slice deleted must be among <svc_keys>. It is done only when
 * that is provably the same table: no Service added or removed since, no
 * slice moved to another Service or skipped, no other option changed,
 * and each Service's services keep their names and frontends. Slices
 * added or deleted are followed, as long as the keys account for the
 * count of slices in the cache. o->stats are filled as a build fills them; o->skips must be
 * given (a build with the memo records its Services' notes through it)
 * but gets nothing: the skip notes are those of <prev>'s build.
 * Returns 1 with <*out> set, 0 (nothing made: build in full), or -1 with
 * <e> filled when memory runs out.
 */
int translate_patch(const struct kcache *services, const struct kcache *slices,
                    const struct translate_opts *o, const struct table *prev,
                    const char *const *svc_keys, size_t nsvc,
                    const char *const *slice_keys, size_t nslice,
                    struct table **out, struct err *e);

/* The last build through <m> made a table equal, entry for entry, to
 * <t>, which it then gave up for <t>: patch from <t> from now on. */
void translate_memo_adopt(struct translate_memo *m, const struct table *t);

/* Zone of a Node object (its topology label), or NULL. Borrowed. */
const char *translate_node_zone(const json_t *node);

/* Taint the cluster autoscaler puts on a Node it is about to remove. */
#define TRANSLATE_TAINT_TO_BE_DELETED "ToBeDeletedByClusterAutoscaler"

/* Nonzero when a Node object is being deleted (deletionTimestamp set) or
 * tainted for deletion: kube-proxy's /healthz then fails, so that load
 * balancers move traffic away before the node goes. */
int translate_node_deleting(const json_t *node);

#endif
