/*
 * svc.h - a runtime service: one table service plus its live balancing
 * state.
 *
 * Built on the control loop from a frozen tbl_service when a table is
 * applied. A service whose definition did not change keeps its svc (and so
 * its round-robin position); a changed one gets a new svc, and the old one
 * is "retired": it takes no new connections and is freed when its last
 * connection ends. Refcounted: one reference for the proxy's current set,
 * one per listener pointing at it, one per connection.
 */
#ifndef PROXY_SVC_H
#define PROXY_SVC_H

#include <stdint.h>

#include "backend.h"
#include "parse.h"
#include "table.h"

struct affinity;

/* Retry state of one connection: which backends were tried. Indices at 64
 * and beyond share bits (mod 64), which can only make a retry skip an
 * untried backend, never try one twice. */
struct svc_tried {
    uint64_t bits;
};

struct svc_be {
    struct backend *b; /* reference */
    uint32_t weight;   /* from the table; see svc_be_weight() */
    /* Admin overrides (control loop writes, pick reads): a weight, or -1
     * for none, and "drained": no new connections. */
    _Atomic int32_t ovr_weight;
    atomic_uint drained;
    int32_t cur;       /* smooth round-robin running weight */
    char name[TBL_NAME_MAX];
    uint32_t flags;
};

struct svc {
    unsigned refs;
    int retired;
    char name[TBL_NAME_MAX];
    struct tbl_service spec; /* copy; spec.frontends/backends not owned */
    struct svc_be *be;
    size_t nbe;
    uint32_t active;   /* open connections, for max_conns */
    unsigned lc_next;  /* leastconn tie-break rotation */
    uint64_t rng;      /* random balancer state */
    uint64_t n_accepted, n_refused_limit, n_no_backend;
    const struct bal_ops *bal;
    struct svc_stats *st; /* reference; counters surviving reloads */
    struct affinity *aff; /* ClientIP pins; NULL when affinity is off */
};

/* Returns a new svc with one reference built from <ts>, or NULL (out of
 * memory). */
struct svc *svc_new(const struct tbl_service *ts);
struct svc *svc_ref(struct svc *s);
void svc_unref(struct svc *s);

/* Nonzero if <s> was built from a service equal to <ts>. */
int svc_matches(const struct svc *s, const struct tbl_service *ts);

/* Choose a backend for a new connection at loop time <now>, skipping those
 * in <tried>, drained ones and those active checks hold down. Backends
 * in passive-health back-off are skipped unless every
 * candidate is in back-off (then they are tried anyway: better a likely
 * failure than a certain one). Returns an index into s->be, or -1. Never
 * allocates. */
int svc_pick(struct svc *s, const struct svc_tried *tried, double now);

/* svc_pick() for a connection from <client> (borrowed): with ClientIP
 * affinity on, the backend the client's IP is pinned to is chosen if it
 * is still eligible (not tried, drained, down or in back-off), else the
 * balancer picks and the client is pinned to its choice. Allocates only
 * when the affinity table must grow (bounded; see affinity.h). */
int svc_pick_client(struct svc *s, const struct saddr *client,
                    const struct svc_tried *tried, double now);

/* <to> replaces <from> (same service, changed definition): carry the
 * ClientIP pins over to the backends both list. Control loop. */
void svc_inherit(struct svc *to, const struct svc *from, double now);

/* The weight the balancers use: the admin override, else the table's. */
static inline uint32_t
svc_be_weight(const struct svc_be *e)
{
    int32_t w = atomic_load_explicit(&e->ovr_weight, memory_order_relaxed);

    return w >= 0 ? (uint32_t)w : e->weight;
}

static inline void
svc_tried_set(struct svc_tried *t, size_t i)
{
    t->bits |= 1ull << (i & 63);
}

static inline int
svc_tried_has(const struct svc_tried *t, size_t i)
{
    return (t->bits >> (i & 63)) & 1;
}

#endif
