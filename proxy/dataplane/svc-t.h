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

/* One backend of a service as the picks read it: the table's name,
 * address and conditions are in svc.tbe, out of the way of the scans. */
struct svc_be {
    struct backend *b; /* reference */
    uint32_t weight;   /* from the table; see svc_be_weight() */
    /* Admin overrides (control loop writes, pick reads): a weight, or -1
     * for none, and "drained": no new connections (0 or 1). */
    _Atomic int32_t ovr_weight;
    atomic_uint drained;
    /* Taken away (drained here, or gone from the service that replaced
     * this one; drain.h): the loop time it was, control loop only, and
     * when its connections are to be closed, 0 for never (control loop
     * writes, the workers read). */
    double drain_since;
    _Atomic double drain_deadline;
};

/* Worker threads that pick (slots per svc); set once at start, before the
 * first svc_new(). */
extern unsigned svc_nworkers;
/* The calling thread's worker index (0 on the control loop). */
extern _Thread_local unsigned svc_worker_self;

struct svc {
    /* Written per connection. */
    atomic_uint refs;
    atomic_uint active; /* open connections; counted only with max_conns */
    char name[TBL_NAME_MAX];
    /* Read per pick. */
    struct svc_be *be;
    size_t nbe;
    const struct bal_ops *bal;
    void *bal_state;         /* the balancer's own (balance.h) */
    unsigned nslots;         /* workers bal_state has a slot for */
    struct affinity *aff;    /* ClientIP pins; NULL when affinity is off */
    struct svc_stats *st;    /* reference; counters surviving reloads */
    /* The table's backends (nbe) and spec.allow, spec.deny: borrowed
     * from the table service's arrays, of which <arrays> holds a
     * reference (a service not from a table holds copies made for it).
     * A service of the next table sharing them is unchanged. */
    const struct tbl_backend *tbe;
    struct tbl_arrays *arrays;
    struct tbl_service spec; /* copy; spec.frontends/backends not owned */
    /* Replaced or removed while connections may still use it: drain.c's
     * list of retired services, under its mutex. <succ> is the runtime
     * service of the same name in force now (a reference), or NULL when
     * the name is gone. */
    int retired;
    struct svc *succ;
    struct svc *rprev, *rnext;
};

/* The calling worker's balancer slot. */
static inline unsigned
svc_slot_self(const struct svc *s)
{
    return svc_worker_self < s->nslots ? svc_worker_self : 0;
}

/* The weight the balancers use: the admin override, else the table's. */
static inline uint32_t
svc_be_weight(const struct svc_be *e)
{
    int32_t w = atomic_load_explicit(&e->ovr_weight, memory_order_relaxed);

    return w >= 0 ? (uint32_t)w : e->weight;
}

#endif
