/*
 * watcher.h - follow Services and EndpointSlices (and this Node's zone)
 * on the Kubernetes API and publish ferry's service table.
 *
 * Everything runs on the caller's libev loop; nothing blocks after
 * watcher_new() (which reads the kubeconfig or service-account files).
 * The first table is published only once both Services and
 * EndpointSlices have been listed completely; after that a table is
 * published as soon as the events that arrived together have been
 * applied (no fixed delay), and only when it differs from the last one.
 * If the API server goes away the last table stays in force (nothing is
 * published) and the logs say so.
 */
#ifndef WATCHER_WATCHER_H
#define WATCHER_WATCHER_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "parse.h"
#include "skip.h"
#include "table.h"

struct watcher_conf {
    const char *kubeconfig; /* path or NULL */
    const char *api_server; /* "https://198.18.0.1:6443" or NULL: explicit
                             * URL wins (over the kubeconfig's too) */
    const char *sa_dir;     /* service-account dir, default
                             * /var/run/secrets/kubernetes.io/serviceaccount */
    const char *node_name;  /* this node, for Local policies and NodePorts;
                             * NULL in edge mode */
    const struct saddr *node_addrs; /* NodePort frontends listen on these
                                     * IPs (port from nodePort) */
    size_t n_node_addrs;
    const char *service_proxy_name; /* NULL: skip every service carrying
                                     * the label; else serve only those
                                     * with this value */
    const char *label_selector;     /* extra selector for Services (edge
                                     * mode), or NULL */
    int insecure_skip_tls_verify;
    int edge; /* serve only externalIPs and LoadBalancer IPs */
    int kernel; /* node mode: Service ports to the kernel dataplane
                 * (translate_opts.kernel) */
    int redirect; /* node mode, proxy dataplane: TCP ports steered by the
                   * kernel (translate_opts.redirect) */
    const struct saddr *edge_nodes; /* edge: to these nodes' NodePorts */
    size_t n_edge_nodes;
    /* Called (with the publish callback's <arg>) when, before the first
     * full sync, the API server's TLS certificate does not verify: the
     * caller refuses to start rather than wait on a server it must not
     * trust. Later such failures only retry with back-off, keeping the
     * table in force. NULL: always retry. */
    void (*on_untrusted)(void *arg, const char *why);
    /* Called (with the publish callback's <arg>) when a build of the
     * table came out the same as the table in force, so nothing is
     * published: a sync that changed nothing (kube-proxy still counts
     * it). watcher_current_build() tells about it. NULL: not told. */
    void (*on_unchanged)(void *arg);
    const struct tbl_service *policy; /* template: balance, timeouts,
                                       * retries, max_conns copied into
                                       * each generated service; NULL =
                                       * zeros */
};

/* Receives a frozen table and one reference to it (drop it with
 * table_unref()). Called on the loop, from a timer callback. */
typedef void (*watcher_publish_fn)(struct table *t, void *arg);

struct watcher;

/*
 * Load credentials, start listing and watching. <wc> and everything it
 * points to is copied. Reads files with blocking I/O (start-up only).
 * Returns a new watcher or NULL with <e> filled (a kubeconfig error is
 * FILE:LINE:COL). Not from inside a callback of another watcher.
 */
struct watcher *watcher_new(struct ev_loop *loop, const struct watcher_conf *wc,
                            watcher_publish_fn publish, void *arg,
                            struct err *e);

/* Stop everything and free. NULL does nothing. Not from inside the
 * publish callback. */
void watcher_free(struct watcher *w);

/* Both kinds listed at least once (a table has been or is about to be
 * published). */
int watcher_synced(const struct watcher *w);

/* Status for /readyz, /status and /metrics. Times are loop times
 * (ev_now()), 0 = never. */
struct watcher_status {
    int synced;
    int api_healthy;         /* every reflector's last request worked */
    double failing_since;    /* start of the current failure, or 0 */
    double last_sync;        /* latest completed LIST of any kind */
    double last_publish;     /* latest table published */
    uint64_t generation;     /* of the latest table published */
    uint64_t tables;         /* tables published */
    uint64_t relists;        /* LISTs after the first, all kinds */
    uint64_t watch_restarts; /* WATCHes after the first, all kinds */
    uint64_t events;         /* watch events applied */
    uint64_t bad_objects;    /* malformed lines/objects skipped */
    uint64_t errors;         /* failed API requests */
    /* Refused for want of memory, each taken again: watch events and
     * list pages, and table builds. */
    uint64_t nomem_api, nomem_builds;
    size_t services, slices; /* objects cached */
    size_t table_services;   /* services in the latest table */
    size_t conflicts;        /* table services refused last build */
    /* Services the latest build translated (the others' translations
     * were reused: they and their slices had not changed), and all
     * builds together. */
    size_t translated_last;
    uint64_t translated;
    /* Tables made by putting the changed Services into the last one
     * (translate_patch()) rather than built whole. */
    uint64_t patched;
    /* CPU time of the control loop's thread, in nanoseconds: in the API
     * client's callbacks (receiving and decoding lists and watch
     * events, caching them), and in building tables and applying them
     * (the publish callback included). Periodic work (the kernel's
     * check, health answers, admin) is in neither. */
    uint64_t api_cpu_ns, table_cpu_ns;
    char node_zone[64];      /* this node's zone, "" if unknown */
    /* This node's Node object is being deleted, tainted for deletion, or
     * gone after it was seen (kube-proxy's "node not eligible"). */
    int node_deleting;
    /* Arrival of the oldest API change not yet in a published table
     * (loop time), or 0 when every change seen is published. */
    double pending_since;
    char last_error[256];
    /* Objects changed, as kube-proxy counts them (reflector.h), by kind,
     * in all and since the latest build of the table started. */
    uint64_t service_changes, endpoint_changes;
    uint64_t service_pending, endpoint_pending;
    /* Loop time of the latest change to a Service or EndpointSlice (a
     * watch event, or a list that changed the cache), 0 = none. */
    double last_change;
    /* Of the latest build: Service ports with endpoints, a Local policy
     * and none of them on this node (translate_stats). */
    size_t no_local_internal, no_local_external;
    /* API objects and fields not served, by kind and reason: lines and
     * list items that did not decode each time they arrive; what the
     * table build skips once when it starts being skipped (again after
     * it was fixed or gone). Each is logged, a few lines per reason and
     * SKIP_LOG_WINDOW. */
    uint64_t skipped[SKIP_KIND__COUNT][SKIP__COUNT];
};

void watcher_status(const struct watcher *w, struct watcher_status *out);

/* Change latency: for each published table, the time from the arrival of
 * the oldest event it contains to its publication. */
#define WATCHER_LAT_RING    128
#define WATCHER_LAT_BUCKETS 12

/* Upper bounds in seconds of the histogram buckets; a last bucket
 * (+Inf) follows them. */
extern const double watcher_latency_bounds[WATCHER_LAT_BUCKETS];

struct watcher_latency_hist {
    uint64_t count;
    double sum;                                /* seconds */
    uint64_t buckets[WATCHER_LAT_BUCKETS + 1]; /* cumulative, as in
                                                * Prometheus; last = +Inf */
};

/* Copy up to <max> latest latencies (seconds), newest first. Returns how
 * many were copied. */
size_t watcher_latencies(const struct watcher *w, double *out, size_t max);

void watcher_latency_hist(const struct watcher *w,
                          struct watcher_latency_hist *h);

/* EndpointSlice trigger times kept until a build takes them; more are
 * dropped (and counted in watcher_build.triggers_dropped). */
#define WATCHER_TRIGGERS_MAX 4096
/* Changed objects remembered by key between two tables; beyond, the
 * next table is built in full. */
#define WATCHER_DIRTY_MAX 256

/* The build of the table being published (or found unchanged). */
struct watcher_build {
    double started; /* ev_time() when the build (translation) began */
    /* endpoints.kubernetes.io/last-change-trigger-time of the
     * EndpointSlices changed by the watch events in this build (Unix
     * seconds), as kube-proxy takes them: ADDED and MODIFIED only, and
     * only times after the watcher started. Borrowed. */
    const double *triggers;
    size_t ntriggers;
    uint64_t triggers_dropped; /* in all, for want of room */
};

/* Fill <out>; meaningful only inside the publish and on_unchanged
 * callbacks (the trigger times are gone once they return). */
void watcher_current_build(const struct watcher *w, struct watcher_build *out);

/* Parse an RFC 3339 time ("2026-12-06T08:00:00Z", fraction and offset
 * optional: "...00.5+01:00") into Unix seconds. Returns 0, or -1 when
 * <s> is not of that form. */
int watcher_parse_time(const char *s, double *out);

#endif
