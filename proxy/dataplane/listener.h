/*
 * listener.h - a listening socket serving one runtime service.
 */
#ifndef PROXY_DATAPLANE_LISTENER_H
#define PROXY_DATAPLANE_LISTENER_H

#include <ev.h>

#include "err.h"
#include "parse.h"
#include "table.h"

struct svc;
struct svcv;
struct worker;

/* Where a listener stands while a worker commits a table (apply.c). */
enum listener_mark {
    LISTENER_STALE = 0, /* held before: closed unless the table names it */
    LISTENER_FRESH,     /* opened for this table: likewise */
    LISTENER_KEPT,      /* the table names it: serving */
    LISTENER_REPLACED,  /* held before, but a fresh one on the same
                         * address serves instead: closed quietly */
};

struct listener {
    struct ev_io io;
    struct saddr addr;
    char addr_str[SADDR_STR_MAX];
    struct svc *svc; /* reference */
    struct worker *w;
    struct listener *next;   /* in the worker's list */
    enum listener_mark mark; /* scratch for apply_plan_commit() */
};

enum listener_flag {
    LISTENER_F_FREEBIND = 1u << 0, /* bind before the address exists */
    LISTENER_F_OURS = 1u << 1,     /* worker 0: sockets of our own
                                    * workers may listen there still, so
                                    * do not check that no one does */
};

/* Open, bind and listen on <addr> (not yet accepting), with <flags>
 * (enum listener_flag bits). Returns a new listener or NULL with <e>
 * filled. */
struct listener *listener_new(struct worker *w, const struct saddr *addr,
                              unsigned flags, struct err *e);

/* A listener for <addr> on the listening socket <fd> a previous process
 * held (--takeover), after checking that it is one: a TCP socket
 * listening on <addr>. Returns it (not accepting yet), or NULL with <e>
 * filled; <fd> is then left to the caller. */
struct listener *listener_adopt(struct worker *w, const struct saddr *addr,
                                int fd, struct err *e);

/* Duplicates of <w>'s listening sockets, appended to <*v> (<*n> entries;
 * realloc'd). Returns 0, or -1 when out of memory or descriptors (what
 * was added stays). Owner's loop. */
struct proxy_sock;
int listener_export(struct worker *w, struct proxy_sock **v, size_t *n);

/* Keep <t> and its runtime services <svcs> (new references) on <w> for
 * redirected connections and SNI routing (sniroute.h), in place of the
 * previous ones, when <dispatch> (it has a DISPATCH service or a service
 * with server names); worker 0 also keeps one with <affinity> (a service
 * with ClientIP affinity), for the pins the next table's services take
 * over. Otherwise nothing is kept. Clear drops them. Owner's loop. */
void listener_dispatch_set(struct worker *w, struct table *t,
                           struct svcv *svcs, int dispatch,
                           int affinity);
void listener_dispatch_clear(struct worker *w);

/* Point <l> at <s> (takes a new reference, drops the old one). */
void listener_set_svc(struct listener *l, struct svc *s);

void listener_start(struct listener *l);
void listener_stop(struct listener *l);

/* Close and free; the caller has unlinked it from the worker's list. */
void listener_free(struct listener *l);

/* Free every listener of the list at <*head> (linked by ->next), and
 * leave it empty. */
void listener_free_list(struct listener **head);

#endif
