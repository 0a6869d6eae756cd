/*
 * backend.h - live state of a backend, shared across table generations.
 *
 * A table snapshot says which backends exist; this registry says how they
 * are doing: active connections, consecutive connect failures and the
 * passive-health back-off. Objects are keyed by address, so a backend that
 * appears in the next table keeps its state, and they are refcounted: one
 * reference per runtime service that lists it and one per connection
 * using it. A backend removed from the table lives on until its last
 * connection ends. Counters are atomics so that several workers may share
 * one backend.
 */
#ifndef PROXY_DATAPLANE_BACKEND_H
#define PROXY_DATAPLANE_BACKEND_H

#include <stdatomic.h>
#include <stdint.h>

#include "parse.h"
#include "stats.h"

/* Result of active health checks. UNCHECKED (no check configured) counts
 * as up. */
enum backend_health {
    BACKEND_HEALTH_UNCHECKED = 0,
    BACKEND_HEALTH_UP,
    BACKEND_HEALTH_DOWN,
};

/* What a backend counts. Made at its first event (a connect tried, a
 * health transition): most endpoints of a large cluster never see a
 * connection through the proxy, and these are 224 of what would be 300
 * bytes a backend. Until then every counter reads 0. */
struct backend_ctr {
    /* Passive health: consecutive connect failures, and the ev_now()
     * time before which new connections skip it (a failure makes the
     * counters first, so a backend that never failed needs neither). */
    atomic_uint fails;
    _Atomic double eject_until;
    atomic_uint_fast64_t n_connects, n_failures;
    /* Connect failures by reason (STATS_FAIL_REFUSED..ERROR), times a
     * back-off began, bytes each way, connect latency. */
    atomic_uint_fast64_t n_fail[STATS_FAIL_CONNECT_COUNT];
    atomic_uint_fast64_t n_ejections;
    atomic_uint_fast64_t bytes_in, bytes_out;
    /* Active health transitions (health.c, control loop). */
    atomic_uint_fast64_t n_went_down, n_went_up;
    struct hist connect_hist;
};

struct backend {
    uint32_t next; /* the map's chain, or the free list (backend.c) */
    /* The address, compact: a struct saddr is 32 bytes, and a backend of
     * 40 fits malloc's 48-byte chunks where 56 took 64 (4 MB at 250,000
     * endpoints). Scope ids are refused by the parsers, so nothing is
     * lost; backend_saddr() makes the socket address. */
    uint8_t family; /* AF_INET or AF_INET6 */
    /* Active health: written on the control loop by health.c only. */
    atomic_uchar health; /* enum backend_health */
    uint16_t port;       /* host order */
    uint8_t ip[16];      /* 4 bytes used for AF_INET */
    atomic_uint refs;
    atomic_uint active;                /* open proxied connections */
    _Atomic(struct backend_ctr *) ctr; /* NULL until the first event */
};

/* <b>'s socket address into <out>, which it returns. */
struct saddr *backend_saddr(const struct backend *b, struct saddr *out);

/* <b>'s address as text ("10.0.0.7:8080", "[fd00::7]:8080") in <buf>,
 * which it returns. Formatted when asked (for logs, the admin server,
 * the access log): kept in each backend it cost 16 bytes of every one,
 * 4 MB at 250,000 endpoints. */
static inline const char *
backend_addr(const struct backend *b, char buf[SADDR_STR_MAX])
{
    struct saddr a;

    return saddr_str(backend_saddr(b, &a), buf, SADDR_STR_MAX);
}

/* The same in a buffer of the enclosing block (a compound literal): for a
 * log line or a record used before the block ends. */
#define BACKEND_ADDR(b) backend_addr((b), (char[SADDR_STR_MAX]){0})

/* Find or create the state of <addr>. Returns a new reference, or NULL
 * when out of memory. Control loop only. */
struct backend *backend_get(const struct saddr *addr);

/* Make the map's room for <n> backends at once, where a table that
 * brings many is about to get them (a first table of 250,000 endpoints
 * grew it 12 times). Any thread. */
void backend_reserve(size_t n);

struct backend *backend_ref(struct backend *b);

/* Drop a reference; the last one frees it. backend_unref(NULL) is fine. */
void backend_unref(struct backend *b);

/* Record a failed connect at loop time <now>: the backend is skipped for
 * new connections for a back-off that doubles with each consecutive
 * failure (250 ms up to 30 s). */
void backend_on_fail(struct backend *b, double now);

/* Record a successful connect: the back-off is cleared. */
void backend_on_success(struct backend *b);

/* A successful active probe: ends a passive ejection (without counting a
 * connection). Control loop. */
void backend_on_probe_ok(struct backend *b);

/* The counters of <b> to add to, made on first use (two threads may
 * race: one block is kept). NULL when out of memory: the event goes
 * uncounted, nothing else. Any thread. */
struct backend_ctr *backend_ctr(struct backend *b);

/* The counters of <b> to read: all zeros before its first event. Never
 * NULL. Any thread. */
const struct backend_ctr *backend_ctr_read(const struct backend *b);

/* Record a connect that took <seconds>. Any thread. */
void backend_observe_connect(struct backend *b, double seconds);

/* Nonzero unless active checks say the backend is down. */
static inline int
backend_healthy(const struct backend *b)
{
    return atomic_load_explicit(&b->health, memory_order_relaxed)
           != BACKEND_HEALTH_DOWN;
}

/* Nonzero when <b> is in back-off at <now>. */
int backend_ejected(const struct backend *b, double now);

/* Its consecutive connect failures, and the end of its back-off (0:
 * none). */
unsigned backend_fails(const struct backend *b);
double backend_eject_until(const struct backend *b);

/* Number of live backend objects (for tests and status). */
unsigned backend_count(void);

#endif
