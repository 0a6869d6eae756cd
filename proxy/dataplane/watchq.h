/*
 * watchq.h - connections someone is watching ("ferry explain --watch",
 * README: ferry explain): the workers put a record of each watched
 * connection's failed attempts and of its end into one bounded queue, and
 * the control loop serves them to the admin server's GET /explain/watch.
 *
 * Nobody watching costs one relaxed atomic load per accepted connection
 * (watchq_watching()). A watched connection's records are formatted by
 * the worker (the end is the access log's JSON line, accesslog_format())
 * into a fixed ring under a mutex held for a copy: a worker never waits
 * for a reader. A slot overwritten before a watch read it is counted as
 * dropped for that watch.
 *
 * At most WATCHQ_WATCHES watches at once, each on one service, each
 * ending after its count of connections, its time, or WATCHQ_IDLE_S
 * without a reader.
 */
#ifndef PROXY_DATAPLANE_WATCHQ_H
#define PROXY_DATAPLANE_WATCHQ_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "accesslog.h"

#define WATCHQ_SLOTS       1024 /* records queued, all watches together */
#define WATCHQ_WATCHES     4    /* watches at once (a bit each) */
#define WATCHQ_IDLE_S      10.  /* a watch nobody read for this long ends */
#define WATCHQ_COUNT_MAX   10000
#define WATCHQ_SECONDS_MAX 600.

/* Nonzero while some watch is on (relaxed load: a connection accepted
 * as a watch starts may be missed, never a crash). */
extern atomic_int watchq_on;

/* The watches (a bit each) that want a connection of service <svc>
 * accepted at wall-clock time <now>; 0 when none. Any worker. */
unsigned watchq_match(const char *svc, double now);

static inline unsigned
watchq_watching(const char *svc, double now)
{
    if (atomic_load_explicit(&watchq_on, memory_order_relaxed) == 0)
        return 0;
    return watchq_match(svc, now);
}

/* Connection <id> of watches <mask> failed to connect to <backend>
 * (errno <err>). Never blocks on a reader. Any worker. */
void watchq_attempt(unsigned mask, uint64_t id, const char *backend, int err);

/* Connection <r> of watches <mask> ended. Any worker. */
void watchq_end(unsigned mask, const struct accesslog_rec *r);

/* Start a watch of service <svc> (copied) for <count> connections and
 * <seconds>, at wall-clock time <now>. Returns its id (> 0), or 0 when
 * WATCHQ_WATCHES are on already. Control loop. */
uint64_t watchq_start(const char *svc, unsigned count, double seconds,
                      double now);

/* What a read found. */
struct watchq_read {
    uint64_t dropped; /* records lost for want of room, in all */
    unsigned ended;   /* connections ended, in all */
    int done;         /* the watch is over (count or time reached) */
};

/* Call <fn>(<arg>, line, len) for each record of watch <id> not read
 * yet, oldest first, and fill <out>. Returns 0, or -1 if there is no
 * such watch (it ended and was read to the end, or idled out). A watch
 * whose count was reached or whose time is up is "done": this read is
 * its last. Control loop. */
int watchq_read(uint64_t id, double now,
                void (*fn)(void *arg, const char *line, size_t len), void *arg,
                struct watchq_read *out);

/* Records queued since start (all watches). Any thread. */
uint64_t watchq_queued(void);

/* Free the ring (shutdown). */
void watchq_shutdown(void);

#endif
