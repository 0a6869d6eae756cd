/*
 * listener.h - a listening socket serving one runtime service.
 */
#ifndef PROXY_DATAPLANE_LISTENER_H
#define PROXY_DATAPLANE_LISTENER_H

#include <ev.h>

#include "err.h"
#include "parse.h"

struct svc;
struct worker;

struct listener {
    struct ev_io io;
    struct saddr addr;
    char addr_str[SADDR_STR_MAX];
    struct svc *svc; /* reference */
    struct worker *w;
    struct listener *next; /* in the worker's list */
    int mark;              /* scratch for reconciliation */
};

/* Open, bind and listen on <addr> (not yet accepting). Returns a new
 * listener or NULL with <e> filled. */
struct listener *listener_new(struct worker *w, const struct saddr *addr,
                              int freebind, struct err *e);

/* Point <l> at <s> (takes a new reference, drops the old one). */
void listener_set_svc(struct listener *l, struct svc *s);

void listener_start(struct listener *l);
void listener_stop(struct listener *l);

/* Close and free; the caller has unlinked it from the worker's list. */
void listener_free(struct listener *l);

#endif
