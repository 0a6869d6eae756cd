/*
 * explain.h - the admin server's answer to "where would a connection to
 * this address go, and why": the service that owns it, each backend's
 * verdict, and what the balancer would pick next (README: ferry explain).
 *
 * Computed on the control loop from the table in force and the shared
 * backend state, with the pick's own eligibility test and balancer
 * (svc_peek()): nothing is connected and no balancer state moves.
 */
#ifndef PROXY_OPS_EXPLAIN_H
#define PROXY_OPS_EXPLAIN_H

#include <jansson.h>
#include <stddef.h>

#include "explainq.h"

struct health;
struct proxy;

/* The answer to <q> at loop time <now> (returns new; NULL when out of
 * memory). <h> may be NULL. Control loop. */
json_t *explain_json(struct proxy *p, struct health *h,
                     const struct explain_req *q, double now);

/* The index in <t> (may be NULL) of the proxy service that owns <q>'s
 * address and protocol, or -1. */
struct table;
long explain_find_service(const struct table *t, const struct explain_req *q);

#endif
