/*
 * reflector.h - keep a local cache of one resource in step with the API
 * server: LIST (paginated), then WATCH from the list's resourceVersion.
 *
 *   LIST --ok--> WATCH --clean end--> WATCH (same RV)
 *     ^            |--410, ERROR event, RV regression, 401/403/4xx--> BACKOFF
 * --> LIST |            '--refused, 429, 5xx--> BACKOFF --> WATCH (same RV)
 *     '--- any list failure --> BACKOFF ---'
 *
 * Backoff is 800 ms doubling to 30 s with jitter, reset after 2 minutes
 * healthy; Retry-After is honoured. A list replaces the cache and drops
 * what vanished. Runs on the loop; all callbacks are loop callbacks.
 */
#ifndef WATCHER_REFLECTOR_H
#define WATCHER_REFLECTOR_H

#include <ev.h>
#include <stdint.h>

#include "kapi.h"
#include "kcache.h"
#include "skip.h"

#define REFLECTOR_PAGE       500
#define REFLECTOR_LIST_MAX   (256u << 20) /* bytes of one list page */
#define REFLECTOR_LINE_MAX   (16u << 20)  /* bytes of one watch event */
#define REFLECTOR_LIST_TIME  120.0        /* list request deadline, s */
#define REFLECTOR_WATCH_IDLE 150.0        /* no byte for this long: rewatch */

/* A resource to follow. */
struct reflector_kind {
    const char *kind;     /* "Service" */
    const char *path;     /* "/api/v1/services" */
    const char *resource; /* "services", for RBAC messages */
    const char *group;    /* "" (core) or "discovery.k8s.io" */
    int namespaced;
    enum skip_kind skip_kind; /* for skip notes */
};

extern const struct reflector_kind reflector_services;
extern const struct reflector_kind reflector_slices;
extern const struct reflector_kind reflector_nodes;

struct reflector_stats {
    uint64_t lists;          /* completed lists */
    uint64_t relists;        /* lists after the first */
    uint64_t watches;        /* watch requests started */
    uint64_t watch_restarts; /* watches started after the first */
    uint64_t events;         /* watch events applied */
    /* Objects changed, as kube-proxy's informers report them: each
     * ADDED, MODIFIED or DELETED watch event, and for each LIST every
     * object listed plus every one that vanished. */
    uint64_t changes;
    uint64_t bad_lines;      /* lines or list items skipped (also
                              * reported through on_skip) */
    uint64_t errors;         /* failed requests */
    uint64_t nomem;          /* watch events and list pages refused for
                              * want of memory (taken again) */
    double last_sync;        /* loop time of the last completed list */
    double failing_since;    /* loop time of the first failure of the
                              * current streak, 0 when healthy */
    int cert_unverified;     /* the latest failure: the server's TLS
                              * certificate did not verify */
    char last_error[256];
};

struct reflector;

struct reflector_ops {
    /* The cache changed (objects, not just the RV). */
    void (*on_change)(void *arg, struct reflector *r);
    /* Health changed: ok = 0 on the first failure of a streak, 1 when
     * a list or watch works again. */
    void (*on_health)(void *arg, struct reflector *r, int ok);
    /* A LIST completed at resourceVersion <rv> (the server's revision
     * then: one counter for all kinds). */
    void (*on_list)(void *arg, struct reflector *r, const char *rv);
    /* A request failed because the server's TLS certificate did not
     * verify (after the failure was logged). May be NULL. */
    void (*on_cert_failure)(void *arg, struct reflector *r);
    /* A watch line or list item was skipped (not decoded, too long, no
     * name...); nothing is logged here. May be NULL. */
    void (*on_skip)(void *arg, struct reflector *r, const struct skip_note *n);
    /* A watch event ADDED, MODIFIED or DELETED was applied (before
     * on_change); ev->obj is the cached object, NULL for DELETED. May
     * be NULL. */
    void (*on_object)(void *arg, struct reflector *r,
                      const struct kcache_event *ev);
};

/* New reflector (not started). Selectors are raw (unescaped) or NULL.
 * Borrows <loop>, <api>, <kind>, <ops>. Returns NULL on no memory. */
struct reflector *reflector_new(struct ev_loop *loop, struct kapi *api,
                                const struct reflector_kind *kind,
                                const char *label_selector,
                                const char *field_selector,
                                const struct reflector_ops *ops, void *arg);
void reflector_free(struct reflector *r);

/* Start with a LIST. */
void reflector_start(struct reflector *r);

/* The server's revision is <server_rv> (from a LIST of any kind): if
 * this reflector's RV is ahead of it, the store went back (etcd restore):
 * relist now. May be called from another reflector's callbacks. */
void reflector_check_rv(struct reflector *r, const char *server_rv);

const struct kcache *reflector_cache(const struct reflector *r);

/* Listed completely at least once. */
int reflector_synced(const struct reflector *r);

const struct reflector_stats *reflector_stats(const struct reflector *r);

#endif
