/*
 * svc-t.h - the inside of a runtime service, for the data plane only.
 *
 * Everything else reads a service through the functions of svc.h; this
 * header refuses to compile outside proxy/dataplane/ (and its white-box
 * unit tests), so that a field can change without touching operations or
 * node code.
 */
#ifndef PROXY_DATAPLANE_SVC_T_H
#define PROXY_DATAPLANE_SVC_T_H

#ifndef FERRY_DATAPLANE_INTERNAL
#error "svc-t.h is private to proxy/dataplane: use the accessors of svc.h"
#endif

#include <stdatomic.h>
#include <stdint.h>

#include "svc.h"

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

/* The calling worker's slot. */
static inline union svc_slot *
svc_slot_self(struct svc *s)
{
    return &s->slot[svc_worker_self < s->nslots ? svc_worker_self : 0];
}

/* The weight the balancers use: the admin override, else the table's. */
static inline uint32_t
svc_be_weight(const struct svc_be *e)
{
    int32_t w = atomic_load_explicit(&e->ovr_weight, memory_order_relaxed);

    return w >= 0 ? (uint32_t)w : e->weight;
}

#endif
