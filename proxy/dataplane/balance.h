/*
 * balance.h - balancing algorithms as ops structs.
 *
 * Every algorithm fills one struct bal_ops in the static table in
 * balance.c; its state is its own, private to balance.c, allocated by
 * init() and freed by release(). A service holds the ops and that state
 * and knows nothing else about balancing.
 *
 * A state serves every worker thread of the service. What a pick writes
 * is either in the calling worker's slot (a cache line, or a run of cache
 * lines, of its own) or a deliberately shared atomic (round-robin's ticket
 * counter, the least-connections rotation), so picks on two workers never
 * write the same line by accident.
 */
#ifndef PROXY_DATAPLANE_BALANCE_H
#define PROXY_DATAPLANE_BALANCE_H

#include <stddef.h>
#include <stdint.h>

#include "parse.h"
#include "table.h"

struct svc;

#define BAL_PEEK_UNKNOWN (-2)

/* Returns nonzero when backend <i> of <s> may take a new connection. */
typedef int (*bal_eligible_fn)(const struct svc *s, size_t i, void *arg);

struct bal_ops {
    /* Returns new state for <s>, whose backends and weights are set, with
     * one slot for each of <nslots> workers; NULL when out of memory.
     * Control loop. */
    void *(*init)(const struct svc *s, unsigned nslots);
    /* Index of the chosen backend among those <ok> accepts, or -1. <k>
     * (below init's <nslots>) is the calling worker: its slot is the only
     * per-worker state the pick writes. <client> is the connection's
     * client, or NULL when the caller has none (only hashing algorithms
     * read it). Never allocates, never fails when a candidate exists. */
    int (*pick)(void *st, const struct svc *s, unsigned k,
                const struct saddr *client, bal_eligible_fn ok, void *arg);
    /* The index pick() would return next for <client>, changing nothing
     * (no ticket taken, no generator drawn, no rotation moved): for the
     * admin server's explanations, on the control loop. -1 when no
     * candidate exists, BAL_PEEK_UNKNOWN when this pick cannot be known
     * ahead; the op is NULL when no pick can (random draws). */
    int (*peek)(const void *st, const struct svc *s,
                const struct saddr *client, bal_eligible_fn ok, void *arg);
    /* Effective weights of <s> changed (admin override); NULL when the
     * algorithm reads the weights at each pick. Control loop, while
     * workers pick. */
    void (*reweight)(void *st, const struct svc *s);
    /* Frees <st> (NULL: nothing). No pick runs any more. */
    void (*release)(void *st);
    /* Picks in the order the workers share (0: each worker has its own
     * order); NULL when the algorithm has no order. For status and
     * tests. */
    uint32_t (*shared_period)(const void *st);
};

/* The ops of <algo>; round-robin's for a value out of range. */
const struct bal_ops *bal_get(enum tbl_balance algo);

#endif
