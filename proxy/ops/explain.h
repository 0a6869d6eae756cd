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

#include "parse.h"
#include "table.h"

struct health;
struct proxy;

/* A question, as GET /explain?addr=IP:PORT&proto=tcp|udp&from=IP asks. */
struct explain_req {
    struct saddr addr;
    enum tbl_proto proto;
    int has_from;
    struct saddr from; /* port 0 */
};

/* Parse the three values (<proto> and <from> may be NULL: tcp, no
 * client). Returns 0, or -1 with <why> saying what is wrong. */
int explain_parse(const char *addr, const char *proto, const char *from,
                  struct explain_req *out, char *why, size_t whylen);

/* The answer to <q> at loop time <now> (returns new; NULL when out of
 * memory). <h> may be NULL. Control loop. */
json_t *explain_json(struct proxy *p, struct health *h,
                     const struct explain_req *q, double now);

#endif
