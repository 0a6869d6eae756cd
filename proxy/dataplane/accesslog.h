/*
 * accesslog.h - one line per connection at its close (README: Access log).
 *
 * The workers format each line into a ring of their own (one producer, one
 * consumer, no lock); a writer thread drains the rings to the sink (stderr,
 * a file, or syslog over a Unix datagram socket). A worker never waits for
 * the sink: when its ring is full the line is dropped and counted. Off, it
 * costs one relaxed load per connection.
 */
#ifndef PROXY_DATAPLANE_ACCESSLOG_H
#define PROXY_DATAPLANE_ACCESSLOG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"
#include "parse.h"

/* How a connection ended: the "cause" field. */
enum accesslog_cause {
    ACCESSLOG_CLIENT_CLOSE = 0, /* the client ended first, cleanly */
    ACCESSLOG_SERVER_CLOSE,     /* the backend ended first, cleanly */
    ACCESSLOG_IDLE_TIMEOUT,     /* idle_timeout passed */
    ACCESSLOG_RELAY_ERROR,      /* a socket error or reset while relaying */
    ACCESSLOG_CONNECT_FAILURE,  /* every attempt (retries) failed */
    ACCESSLOG_NO_BACKEND,       /* no backend to try at all */
    ACCESSLOG_DRAIN_RESET,      /* still open when drain_timeout ended */
    ACCESSLOG_LIMIT,            /* max_connections reached */
    ACCESSLOG_SOURCE_DENY,      /* source rules (stats_src_refusal order) */
    ACCESSLOG_SOURCE_NOT_ALLOWED,
    ACCESSLOG_SOURCE_MAX,
    ACCESSLOG_SOURCE_RATE,
    ACCESSLOG_PROXY_TIMEOUT, /* accept_proxy (stats_pp_refusal order) */
    ACCESSLOG_PROXY_INVALID,
    ACCESSLOG_PROXY_CLOSED,
    ACCESSLOG_RESOURCE,      /* out of descriptors or memory */
    ACCESSLOG_DRAIN_TIMEOUT, /* its backend was taken away drain_timeout
                              * ago (a service's, drain.h) */
    /* SNI routing refused it before a service was chosen
     * (sniroute_reason order, from no_match to closed). */
    ACCESSLOG_SNI_NO_MATCH,
    ACCESSLOG_SNI_NO_SNI,
    ACCESSLOG_SNI_MALFORMED,
    ACCESSLOG_SNI_TIMEOUT,
    ACCESSLOG_SNI_CLOSED,
    ACCESSLOG__COUNT
};

/* "client_close", "server_close", ... indexed by the enum. */
extern const char *const accesslog_cause_text[ACCESSLOG__COUNT];

/* One connection, as the line tells it. Borrowed strings. */
struct accesslog_rec {
    double start, end; /* accept and close, wall-clock seconds (ev_now) */
    double connect;    /* accept to backend connected, seconds; < 0: never */
    uint64_t id;       /* 0: refused before it got one */
    uint64_t bytes_up, bytes_down; /* client to backend, and back */
    const struct saddr *client;
    const char *service;
    const char *backend; /* NULL: none */
    unsigned attempts;   /* connect attempts made */
    enum accesslog_cause cause;
};

/* Longest line, newline included; longer fields are cut. */
#define ACCESSLOG_LINE_MAX 640

/* Format <r> as a line of <format> into <out> (ACCESSLOG_LINE_MAX bytes),
 * newline-terminated. Returns its length. Allocates nothing; any thread. */
size_t accesslog_format(const struct accesslog_rec *r,
                        enum conf_access_log_format format, char *out);

/* ---- the rings ---- */

struct accesslog_ring;

/* A ring of <lines> slots. Returns new, or NULL (out of memory). */
struct accesslog_ring *accesslog_ring_new(size_t lines);
void accesslog_ring_free(struct accesslog_ring *rg);
/* The slot to fill next, or NULL when full (producer only). */
char *accesslog_ring_slot(struct accesslog_ring *rg);
/* Publish the slot just filled, <len> bytes (producer only). */
void accesslog_ring_push(struct accesslog_ring *rg, size_t len);
/* The oldest line and its length, or NULL when empty (consumer only). */
const char *accesslog_ring_peek(struct accesslog_ring *rg, size_t *len);
/* Free the oldest line (consumer only). */
void accesslog_ring_pop(struct accesslog_ring *rg);

/* ---- the process's access log ---- */

extern atomic_int accesslog_enabled_flag;

/* An acquire load (free on x86): it pairs with the release store that
 * turns the log on, so that a worker which sees it on also sees the
 * rings (ThreadSanitizer does not follow the fence in accesslog_emit()
 * alone). */
static inline int
accesslog_enabled(void)
{
    return atomic_load_explicit(&accesslog_enabled_flag, memory_order_acquire);
}

/* Apply the "access_log:" section <c> for <nworkers> workers: opens the
 * sink, and on first use makes the rings and starts the writer thread.
 * Returns 0, or -1 with <e> set (the previous settings stay). Control
 * loop (start, reload). */
int accesslog_configure(const struct conf_access_log *c, unsigned nworkers,
                        struct err *e);

/* Reopen the file (or reconnect the syslog socket): SIGUSR1. Errors are
 * logged; the old sink is kept. Control loop. */
void accesslog_reopen(void);

/* Log <r> from worker <worker> if the access log is on. Never blocks:
 * a full ring drops the line (counted). The worker's thread only. */
void accesslog_emit(unsigned worker, const struct accesslog_rec *r);

/* Flush what the rings hold (bounded wait), stop the writer, free. */
void accesslog_shutdown(void);

/* Lines written to the sink, and lines dropped (ring full, or the sink
 * failed). Any thread. */
uint64_t accesslog_lines(void);
uint64_t accesslog_dropped(void);

#endif
