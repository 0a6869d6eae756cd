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
 *
 * One svc serves every worker thread. What a pick changes (round-robin
 * weights, the least-connections rotation, the random generator) lives in
 * one slot per worker, so picks never share a written cache line; the
 * connection count for max_connections and the counters are atomics. The
 * ClientIP affinity table is not thread-safe: a service with affinity is
 * served by worker 0 only (the proxy opens its listeners there alone).
 */
#ifndef PROXY_DATAPLANE_SVC_H
#define PROXY_DATAPLANE_SVC_H

#include <stdatomic.h>
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
    char name[TBL_NAME_MAX];
    uint32_t flags;
};

#define SVC_RR_OLD_MAX 32

/* A round-robin pick order, <period> picks long. */
struct rr_seq {
    uint32_t period;
    uint32_t idx[];
};

/* One worker's balancing state, a cache line of its own. */
union svc_slot {
    struct {
        int32_t *cur;     /* smooth round-robin running weights (nbe) */
        uint64_t rng;     /* random balancer state */
    };
    char pad_[64];
};

/* Worker threads that pick (slots per svc); set once at start, before the
 * first svc_new(). */
extern unsigned svc_nworkers;
/* The calling thread's worker index (0 on the control loop). */
extern _Thread_local unsigned svc_worker_self;

struct svc {
    atomic_uint refs;
    atomic_int retired;
    char name[TBL_NAME_MAX];
    struct tbl_service spec; /* copy; spec.frontends/backends not owned */
    struct svc_be *be;
    size_t nbe;
    atomic_uint active; /* open connections; counted only with max_conns */
    union svc_slot *slot;    /* nslots of them */
    unsigned nslots;
    /* Round-robin shared by the workers (balance.c): the pick order for
     * the weights in force, and the next ticket into it. Replaced
     * sequences wait in rr_old until the svc is freed. */
    _Atomic(struct rr_seq *) rr;
    struct rr_seq *rr_old[SVC_RR_OLD_MAX];
    unsigned nrr_old;
    atomic_uint_fast64_t rr_ticket;
    /* leastconn tie-break rotation, shared: a race between workers only
     * changes which of two tied backends wins. */
    atomic_uint lc_next;
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

/* The calling worker's slot. */
static inline union svc_slot *
svc_slot_self(struct svc *s)
{
    return &s->slot[svc_worker_self < s->nslots ? svc_worker_self : 0];
}

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

/* Set (<w> >= 0) or clear (-1) backend <i>'s admin weight override.
 * Returns nonzero if the weight in force changed; then call
 * svc_reweighted() once the service's overrides are all set. Control
 * loop. */
int svc_set_weight_override(struct svc *s, size_t i, int32_t w);
void svc_reweighted(struct svc *s);

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
