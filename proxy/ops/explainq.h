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

/* A Service, as GET /explain/trace?service=NAMESPACE/NAME names it:
 * both DNS labels (1 to 63 of a-z, 0-9 and '-'). */
#define EXPLAIN_NAME_MAX 64

struct explain_svc {
    char ns[EXPLAIN_NAME_MAX];
    char name[EXPLAIN_NAME_MAX];
};

/* Parse <s> (NULL: missing). Returns 0, or -1 with <why>. */
int explain_parse_service(const char *s, struct explain_svc *out, char *why,
                          size_t whylen);

/* A watch, as GET /explain/watch asks for one: either <id> (a watch
 * started before: read what came since) or an address to start one
 * with, for <count> connections and <seconds>. */
#define EXPLAIN_WATCH_COUNT   100 /* defaults */
#define EXPLAIN_WATCH_SECONDS 30.

struct explain_watch {
    unsigned long long id; /* 0: start one */
    struct explain_req q;
    unsigned count;
    double seconds;
};

/* Parse the query values (each NULL when absent): <id> alone, or <addr>
 * with optional <proto>, <count> (1 to <count_max>) and <seconds> (above
 * 0, at most <seconds_max>). Returns 0, or -1 with <why>. */
int explain_parse_watch(const char *id, const char *addr, const char *proto,
                        const char *count, const char *seconds,
                        unsigned count_max, double seconds_max,
                        struct explain_watch *out, char *why, size_t whylen);

#endif
