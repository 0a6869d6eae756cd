/*
 * ktrace.h - GET /explain/trace's answer: the watcher's change records
 * (ctrace.h) of one Service joined with each worker's commits (worker.h)
 * by table generation (README: ferry explain).
 */
#ifndef PROXY_NODE_KTRACE_H
#define PROXY_NODE_KTRACE_H

#include <jansson.h>

struct proxy;

/* The last changes of Service <ns>/<name> (borrowed), newest first, each
 * with its stages in order: trigger (EndpointSlice annotation), received,
 * built, posted, each worker, kernel. Returns a new object, or NULL when
 * out of memory. Control loop. */
json_t *ktrace_json(struct proxy *p, const char *ns, const char *name);

#endif
