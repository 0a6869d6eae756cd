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
 * One svc serves every worker thread. What a pick changes is its
 * balancer's state (balance.h): per-worker slots (round-robin's running
 * weights, the random generator) each on cache lines of their own, so
 * picks never share a written line, and a few deliberately shared atomics
 * (round-robin's ticket into the order all workers follow, the
 * least-connections rotation); the connection count for max_connections
 * and the counters are atomics. The
 * ClientIP affinity table is not thread-safe: a service with affinity is
 * served by worker 0 only (the proxy opens its listeners there alone).
 */
#ifndef PROXY_DATAPLANE_SVC_H
#define PROXY_DATAPLANE_SVC_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "parse.h"
#include "table.h"

struct affinity;

/* Retry state of one connection: the backends it tried, exactly. A
 * connection tries at most retries + 1 backends, and retries is at most
 * TBL_RETRIES_MAX, so a small array records them whatever the size of
 * the service, without allocating (a bitmap sized to the backends would
 * need an allocation per connection). A lookup costs nothing before the
 * first failure and at most SVC_TRIED_MAX compares after. It is 64
 * bytes, so that a connection can keep it in the room its relay uses
 * once connected (conn.c). All zeroes is the empty set. */
#define SVC_TRIED_MAX (TBL_RETRIES_MAX + 1)

struct svc_tried {
    uint32_t idx[SVC_TRIED_MAX];
    uint8_t n;
};

/* Returns a new svc with one reference built from <ts>, or NULL (out of
 * memory). */
struct svc *svc_new(const struct tbl_service *ts);

/* svc_new() for the successor of <prev> (the runtime service of the same
 * name in the last table, or NULL): the backends both have are found
 * from <prev>'s. Control loop. */
struct svc *svc_new_like(const struct tbl_service *ts, const struct svc *prev);
struct svc *svc_ref(struct svc *s);
void svc_unref(struct svc *s);
/* svc_unref() each of the <n> services of <v>, then free(v). */
void svc_unref_array(struct svc **v, size_t n);

/* ---- a table's runtime services ----
 *
 * The runtime services of a table, in its order (svcv_get(v, i) serves
 * table_service(t, i)), in chunks of SVCV_CHUNK pointers. Each chunk
 * holds a reference to its services and is shared by the vectors made
 * from one another (svcv_derive()): a table that changes K services
 * costs K chunks, not a reference per service, on the control loop and
 * on every worker that keeps it. A vector is not changed once handed
 * to a worker; the reference counts are thread-safe. */
#define SVCV_CHUNK 32

struct svcv_chunk {
    atomic_uint refs;
    struct svc *v[SVCV_CHUNK];
};

struct svcv {
    atomic_uint refs;
    size_t n;
    struct svcv_chunk *c[];
};

/* A vector of <n> services, all NULL; NULL when out of memory. */
struct svcv *svcv_new(size_t n);
/* A vector holding what <from> holds, its chunks shared; NULL when out
 * of memory. */
struct svcv *svcv_derive(const struct svcv *from);
/* Put <s> (its reference taken) at <i>, releasing what was there.
 * Returns 0, or -1 when out of memory (<s> released, nothing else
 * changed). */
int svcv_set(struct svcv *v, size_t i, struct svc *s);
struct svcv *svcv_ref(struct svcv *v);
/* NULL does nothing. */
void svcv_unref(struct svcv *v);

static inline struct svc *
svcv_get(const struct svcv *v, size_t i)
{
    return v->c[i / SVCV_CHUNK]->v[i % SVCV_CHUNK];
}

/* Nonzero if <s> was built from a service equal to <ts>. */
int svc_matches(const struct svc *s, const struct tbl_service *ts);

/* ---- what the control loop reads and sets ----
 *
 * struct svc is opaque outside the data plane (svc-t.h). Backends are
 * numbered 0..svc_nbackends()-1 in table order; <i> must be in range. */

const char *svc_name(const struct svc *s);
/* The policy of the table service it was built from (borrowed): name,
 * balance, timeouts, check. Its frontend and backend lists are empty: the
 * backends are svc_backend(), the frontends are in the table. */
const struct tbl_service *svc_spec(const struct svc *s);
/* "roundrobin", "leastconn", "random" (tbl_balance_names). */
const char *svc_balance_name(const struct svc *s);
/* The counters that outlive reloads (stats.h): the service's stats
 * (gauges, per-source table), and its counters to read (zeros before its
 * first event). */
struct svc_stats *svc_counters(const struct svc *s);
const struct svc_ctr *svc_counts(const struct svc *s);

size_t svc_nbackends(const struct svc *s);
struct backend *svc_backend(const struct svc *s, size_t i);
const char *svc_backend_name(const struct svc *s, size_t i);
/* Backend <i>'s socket address, as the table gives it. */
const struct saddr *svc_backend_saddr(const struct svc *s, size_t i);
/* The table's conditions of backend <i> (TBL_BE_*). */
uint32_t svc_backend_flags(const struct svc *s, size_t i);
/* The weight in force (the admin override, else the table's), and the
 * table's. */
uint32_t svc_backend_weight(const struct svc *s, size_t i);
uint32_t svc_backend_config_weight(const struct svc *s, size_t i);

/* The admin's "drained": no new connections to backend <i>; with the
 * service's drain_timeout, its open ones are closed that long after it
 * was first drained (drain.h; call drain_refresh() once done). Control
 * loop writes, workers read. svc_set_drained() returns 0, or -1 when
 * memory runs out for the service's first drained backend (it is left
 * as it was). */
int svc_backend_drained(const struct svc *s, size_t i);
int svc_set_drained(struct svc *s, size_t i, int drained);

/* Choose a backend for a new connection at loop time <now>, skipping those
 * in <tried>, drained ones and those active checks hold down. Backends
 * in passive-health back-off are skipped unless every
 * candidate is in back-off (then they are tried anyway: better a likely
 * failure than a certain one). Returns a backend index, or -1. Never
 * allocates. */
int svc_pick(struct svc *s, const struct svc_tried *tried, double now);

/* svc_pick() for a connection from <client> (borrowed): with ClientIP
 * affinity on, the backend the client's IP is pinned to is chosen if it
 * is still eligible (not tried, drained, down or in back-off), else the
 * balancer picks and the client is pinned to its choice. Allocates only
 * when the affinity table must grow (bounded; see affinity.h). */
int svc_pick_client(struct svc *s, const struct saddr *client,
                    const struct svc_tried *tried, double now);

/* What svc_pick_client() would choose for <client> (borrowed) at <now>,
 * changing nothing: no pin set, no round-robin ticket taken. The same
 * eligibility test and balancer as a pick (balance.h's peek op). Returns
 * a backend index, SVC_PEEK_NONE when no backend may take it, or
 * SVC_PEEK_UNKNOWN when the balancer draws at random; <*pinned> is set to
 * 1 when the answer is the client's affinity pin. Control loop (the pin
 * is read under the affinity table's lock). */
#define SVC_PEEK_NONE    (-1)
#define SVC_PEEK_UNKNOWN (-2)
int svc_peek(struct svc *s, const struct saddr *client, double now,
             int *pinned);

/* <to> replaces <from> (same service, changed definition): carry the
 * ClientIP pins over to the backends both list. Control loop. */
void svc_inherit(struct svc *to, const struct svc *from, double now);

/* Set (<w> >= 0) or clear (-1) backend <i>'s admin weight override.
 * Returns 1 if the weight in force changed (then call svc_reweighted()
 * once the service's overrides are all set), 0 if not, -1 when memory
 * runs out for the service's first override (nothing changed). Control
 * loop. */
int svc_set_weight_override(struct svc *s, size_t i, int32_t w);
void svc_reweighted(struct svc *s);

/* Nonzero when <t> holds SVC_TRIED_MAX backends: no retry may follow. */
static inline int
svc_tried_full(const struct svc_tried *t)
{
    return t->n >= SVC_TRIED_MAX;
}

static inline int
svc_tried_has(const struct svc_tried *t, size_t i)
{
    uint32_t k;

    for (k = 0; k < t->n; k++)
        if (t->idx[k] == i)
            return 1;
    return 0;
}

/* Record backend <i> as tried. Returns 0, or -1 (nothing recorded) when
 * <t> is full. */
static inline int
svc_tried_set(struct svc_tried *t, size_t i)
{
    if (svc_tried_has(t, i))
        return 0;
    if (svc_tried_full(t))
        return -1;
    t->idx[t->n++] = (uint32_t)i;
    return 0;
}

/* Forget that backend <i> was tried (its attempt never started). */
static inline void
svc_tried_unset(struct svc_tried *t, size_t i)
{
    uint32_t k;

    for (k = 0; k < t->n; k++) {
        if (t->idx[k] == i) {
            t->idx[k] = t->idx[--t->n];
            return;
        }
    }
}

#endif
