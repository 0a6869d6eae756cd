/*
 * explainq.h - the question "ferry explain" asks (GET /explain's query
 * values, the command's arguments), parsed apart from the answer so that
 * the fuzz target builds it without the data plane.
 */
#ifndef PROXY_OPS_EXPLAINQ_H
#define PROXY_OPS_EXPLAINQ_H

#include <stddef.h>

#include "parse.h"
#include "table.h"

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

#endif
