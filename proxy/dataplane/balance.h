/*
 * balance.h - balancing algorithms as ops structs.
 *
 * Every algorithm fills one struct bal_ops in the static table in
 * balance.c. pick() gets a candidate mask (which backends may be chosen
 * now) and returns one index; it allocates nothing and never fails when a
 * candidate exists.
 */
#ifndef PROXY_DATAPLANE_BALANCE_H
#define PROXY_DATAPLANE_BALANCE_H

#include <stddef.h>
#include <stdint.h>

#include "table.h"

struct svc;
union svc_slot;

/* Returns nonzero when backend <i> of <s> may take a new connection. */
typedef int (*bal_eligible_fn)(const struct svc *s, size_t i, void *arg);

struct bal_ops {
    const char *name;
    /* Reset worker <k>'s state <sl> of <s> (new service). */
    void (*init)(struct svc *s, union svc_slot *sl, unsigned k);
    /* Index of the chosen backend among those <ok> accepts, or -1; the
     * state a pick changes is in <sl>, the calling worker's slot. */
    int (*pick)(struct svc *s, union svc_slot *sl, bal_eligible_fn ok,
                void *arg);
    /* Effective weights changed (admin override); may be NULL. Control
     * loop. */
    void (*reweight)(struct svc *s);
};

/* The ops of <algo>; never NULL for a valid enum value. */
const struct bal_ops *bal_get(enum tbl_balance algo);

#endif
