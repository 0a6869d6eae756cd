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
 * address, weight and conditions are in svc.tbe, out of the way of the
 * scans. */
struct svc_be {
    struct backend *b; /* reference */
};

/* A backend taken away (drained through the admin server, or gone from
 * the service that replaced this one: drain.h), or given a weight by the
 * admin server. Few services ever have one, so these are not in struct
 * svc_be (8 bytes of 40 at 250,000 endpoints): a service's array of
 * them, one per backend, is made at the first, on the control loop, and
 * stays until the service goes. */
struct svc_drain {
    atomic_uint drained; /* no new connections (0 or 1); admin's */
    /* An admin's weight (control loop writes, picks read), or -1 for
     * none. */
    _Atomic int32_t ovr_weight;
    /* The loop time it was taken away, 0 for not; control loop only. */
    double since;
    /* When its connections are to be closed, 0 for never (control loop
     * writes, the workers read). */
    _Atomic double deadline;
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
    /* Read per pick. */
    struct svc_be *be;
    size_t nbe;
    const struct bal_ops *bal;
    void *bal_state;         /* the balancer's own (balance.h) */
    unsigned nslots;         /* workers bal_state has a slot for */
    struct affinity *aff;    /* ClientIP pins; NULL when affinity is off */
    struct svc_stats *st;    /* reference; counters surviving reloads */
    /* Per backend, NULL while none was ever taken away (svc_drain). */
    _Atomic(struct svc_drain *) drain;
    /* The table's backends (nbe) and spec.allow, spec.deny: borrowed
     * from the table service's arrays, of which <arrays> holds a
     * reference (a service not from a table holds copies made for it).
     * A service of the next table sharing them is unchanged. */
    const struct tbl_backend *tbe;
    struct tbl_arrays *arrays;
    /* A copy (its name is the service's); spec.frontends/backends not
     * owned. */
    struct tbl_service spec;
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

/* The drain state of backend <i>, or NULL when none of <s>'s backends
 * was ever taken away (then none is drained and no deadline runs). Any
 * thread. */
static inline const struct svc_drain *
svc_drain_at(const struct svc *s, size_t i)
{
    const struct svc_drain *d =
        atomic_load_explicit(&s->drain, memory_order_acquire);

    return d != NULL ? &d[i] : NULL;
}

/* Nonzero when backend <i> is drained (no new connections). */
static inline int
svc_be_drained(const struct svc *s, size_t i)
{
    const struct svc_drain *d = svc_drain_at(s, i);

    return d != NULL
           && atomic_load_explicit(&d->drained, memory_order_relaxed) != 0;
}

/* When backend <i>'s connections are to be closed, 0 for never. */
static inline double
svc_be_deadline(const struct svc *s, size_t i)
{
    const struct svc_drain *d = svc_drain_at(s, i);

    return d != NULL
           ? atomic_load_explicit(&d->deadline, memory_order_relaxed) : 0;
}

/* When backend <i> was taken away, 0 for not. Control loop. */
static inline double
svc_be_since(const struct svc *s, size_t i)
{
    const struct svc_drain *d = svc_drain_at(s, i);

    return d != NULL ? d->since : 0;
}

/* <s>'s drain array, made (all zeros) if it was not yet; NULL when out of
 * memory. Control loop. */
struct svc_drain *svc_drain_make(struct svc *s);

/* The weight the balancers use for backend <i>: the admin override,
 * else the table's. */
static inline uint32_t
svc_be_weight(const struct svc *s, size_t i)
{
    const struct svc_drain *d = svc_drain_at(s, i);
    int32_t w = d != NULL
                    ? atomic_load_explicit(&d->ovr_weight, memory_order_relaxed)
                    : -1;

    return w >= 0 ? (uint32_t)w : s->tbe[i].weight;
}

#endif
