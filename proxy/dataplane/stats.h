/*
 * stats.h - counters that outlive table generations: connection failure
 * reasons, latency histograms, and the per-service statistics registry.
 *
 * Per-service counters are kept in a registry keyed by service name, so a
 * reload that rebuilds a service's runtime object (struct svc) keeps its
 * counts. Every counter is an atomic updated with relaxed increments: the
 * workers bump them on the hot path, the admin server reads them on the
 * control loop, and nobody needs them to be mutually consistent.
 */
#ifndef PROXY_DATAPLANE_STATS_H
#define PROXY_DATAPLANE_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Why a connection (or one connect attempt) failed. The first three are
 * connect attempts and are also counted per backend. */
enum stats_fail {
    STATS_FAIL_REFUSED = 0, /* the backend refused the connect */
    STATS_FAIL_TIMEOUT,     /* connect_timeout passed */
    STATS_FAIL_ERROR,       /* any other connect error */
    STATS_FAIL_NO_BACKEND,  /* no backend left to try: client reset */
    STATS_FAIL_LIMIT,       /* max_connections reached: client reset */
    STATS_FAIL_RESOURCE,    /* out of descriptors or memory */
    STATS_FAIL__COUNT
};

#define STATS_FAIL_CONNECT_COUNT 3 /* reasons counted per backend */

/* "refused", "timeout", ... (metric label values). */
extern const char *const stats_fail_text[STATS_FAIL__COUNT];

/* Why a client's PROXY protocol header was refused (accept_proxy): the
 * connection is reset. */
enum stats_pp_refusal {
    STATS_PP_TIMEOUT = 0, /* no whole header within accept_proxy_timeout */
    STATS_PP_INVALID,     /* not a valid header, or larger than ferry takes */
    STATS_PP_CLOSED,      /* the client closed or reset before its end */
    STATS_PP__COUNT
};

/* "timeout", "invalid", "closed" (metric label values). */
extern const char *const stats_pp_text[STATS_PP__COUNT];

/* Why a source rule refused a client (README: Source rules): the
 * connection is reset. */
enum stats_src_refusal {
    STATS_SRC_DENY = 0,      /* its address is in a deny: prefix */
    STATS_SRC_NOT_ALLOWED,   /* ... in no allow: prefix */
    STATS_SRC_MAX,           /* max_connections_per_source open already */
    STATS_SRC_RATE,          /* connection_rate_per_source exceeded */
    STATS_SRC__COUNT
};

/* "deny", "not_allowed", "max_per_source", "rate_per_source". */
extern const char *const stats_src_text[STATS_SRC__COUNT];

/* Why a UDP datagram from a client was dropped (README: UDP services). */
enum stats_udp_drop {
    STATS_UDP_MAX_FLOWS = 0, /* a new flow, and max_flows are open */
    STATS_UDP_NO_BACKEND,    /* a new flow, and no backend to pick */
    STATS_UDP_SEND_ERROR,    /* the kernel would not send it on (either way) */
    STATS_UDP_REFUSED,       /* the backend's port is closed (ICMP) */
    STATS_UDP_RESOURCE,      /* out of descriptors or memory */
    STATS_UDP_TOO_LARGE,     /* larger than ferry takes (64 KiB) */
    STATS_UDP__COUNT
};

/* "max_flows", "no_backend", ... (metric label values). */
extern const char *const stats_udp_text[STATS_UDP__COUNT];

/* Map a connect errno to a reason. */
enum stats_fail stats_fail_from_errno(int err);

/* ---- histograms ---- */

#define HIST_BUCKETS_MAX 16

/* Upper bounds (seconds), increasing. */
struct hist_spec {
    size_t n;
    double le[HIST_BUCKETS_MAX];
};

/* Per-bucket (not cumulative) counts; the last slot is +Inf. The sum is
 * kept in microseconds so that it can be an integer atomic. */
struct hist {
    atomic_uint_fast64_t bucket[HIST_BUCKETS_MAX + 1];
    atomic_uint_fast64_t sum_us;
};

extern const struct hist_spec hist_connect;    /* 0.5 ms .. 10 s */
extern const struct hist_spec hist_sync;       /* 1 ms .. 16 s */
extern const struct hist_spec hist_programming; /* 10 ms .. 5 min */

/* Record <v> seconds. Never allocates; any thread. */
void hist_observe(struct hist *h, const struct hist_spec *sp, double v);

/* ---- per-service registry ---- */

struct srcrules_table;

#define SVC_STATS_NAME_MAX 128 /* with its NUL; longer names are cut */

/* What a service counts, made at its first event (svc_ctr()): at 10,000
 * Services most never see a connection through the proxy, and these are
 * about 370 of the 430 bytes a service's stats took. Until then every
 * counter reads 0 (svc_ctr_read()). */
struct svc_ctr {
    atomic_uint_fast64_t accepted;
    atomic_uint_fast64_t retries;   /* extra connect attempts */
    atomic_uint_fast64_t bytes_in;  /* client to backend */
    atomic_uint_fast64_t bytes_out; /* backend to client */
    atomic_uint_fast64_t fail[STATS_FAIL__COUNT];
    struct hist connect; /* connect latency of successful attempts */
    /* PROXY protocol headers read from clients (v1, v2) and refused. */
    atomic_uint_fast64_t pp_accepted[2];
    atomic_uint_fast64_t pp_refused[STATS_PP__COUNT];
    /* Source rules: clients refused, and clients let in uncounted for
     * want of room in the per-source table (srcrules.h). */
    atomic_uint_fast64_t src_refused[STATS_SRC__COUNT];
    atomic_uint_fast64_t src_uncounted;
    /* Connections reset because their backend was taken away longer
     * than drain_timeout ago (drain.h). */
    atomic_uint_fast64_t drain_closed;
    /* SNI routing (sniroute.h): clients sent here by the server name of
     * their ClientHello [0], or as an address's default_service [1]. */
    atomic_uint_fast64_t sni_routed[2];
    /* UDP services (udp.c): flows made, datagrams each way (client to
     * backend, and back; the bytes are bytes_in and bytes_out), and
     * datagrams dropped. */
    atomic_uint_fast64_t udp_flows;
    atomic_uint_fast64_t udp_dgrams_in, udp_dgrams_out;
    atomic_uint_fast64_t udp_drops[STATS_UDP__COUNT];
};

struct svc_stats {
    atomic_uint refs;
    uint32_t reg_hash; /* the registry's (registry.h) */
    /* Gauges, here because an increment and its decrement must meet the
     * same counter: open connections, and open UDP flows. */
    atomic_uint active;
    atomic_uint udp_active;
    _Atomic(struct svc_ctr *) ctr; /* NULL until the first event */
    /* The per-source table, made by svc_new() on the control loop for
     * the first runtime service of this name with a per-source limit,
     * before any worker sees that service; kept until the stats go, so
     * that a reload keeps counting. NULL until then. */
    struct srcrules_table *src;
    char name[]; /* as long as it needs */
};

/* The counters of <st> to add to, made on first use (two threads may
 * race: one block is kept). Out of memory, a shared block nobody reads:
 * the event goes uncounted. Never NULL; any thread. */
struct svc_ctr *svc_ctr(struct svc_stats *st);

/* The counters of <st> to read: all zeros before its first event. Never
 * NULL; any thread. */
const struct svc_ctr *svc_ctr_read(const struct svc_stats *st);

/* Find or create the stats of service <name>. Returns a new reference or
 * NULL (out of memory). Control loop only. */
struct svc_stats *svc_stats_get(const char *name);

/* Drop a reference; the last one frees. NULL is fine. */
void svc_stats_unref(struct svc_stats *st);

/* Number of live entries (tests). */
unsigned svc_stats_count(void);

static inline void
stats_inc(atomic_uint_fast64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static inline void
stats_add(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static inline uint64_t
stats_get(const atomic_uint_fast64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* ---- process-wide counters ---- */

/* Values the control plane and the workers feed, any thread; the
 * operations side reads them (metrics). */
struct stats_proc {
    atomic_uint_fast64_t generation;
    _Atomic double last_sync;
    atomic_uint_fast64_t watch_restarts, relists, accept_paused;
    /* Services translated anew for a table (the watcher reuses the
     * translation of those that did not change). */
    atomic_uint_fast64_t translated;
    /* ... and tables made by patching the last one instead. */
    atomic_uint_fast64_t patched;
    /* CPU time in nanoseconds: the control loop's in the API client and
     * in building and applying tables (struct watcher_status), and the
     * workers' in taking the tables' plans (wthread.c). */
    atomic_uint_fast64_t api_cpu_ns, table_cpu_ns, apply_cpu_ns;
    /* What was refused for want of memory and taken again, by the same
     * parts: watch events and list pages, table builds, and the
     * workers' plans (wthread.c). */
    atomic_uint_fast64_t nomem_api, nomem_tables, nomem_workers;
    atomic_int_fast64_t pipes;
    atomic_uint_fast64_t pipes_denied;
    /* relay.engine io_uring (ring.c): connections that relayed on a
     * ring, went back to epoll to splice, receives that waited for a
     * free buffer, and workers whose ring the kernel refused. */
    atomic_uint_fast64_t ring_conns, ring_left, ring_waits, ring_refused;
    struct hist sync, programming, worker_delay;
    /* Service addresses on the node's interface (node/vip.c). */
    atomic_uint_fast64_t vip_added, vip_removed, vip_errors, vip_resyncs;
    atomic_uint_fast64_t vip_owned;
    /* The kernel dataplane's engine (node/nft.c), copied by node/kube.c
     * after each transaction and check. */
    atomic_uint_fast64_t nft_services, nft_transactions, nft_failures;
    atomic_uint_fast64_t nft_restores, nft_ct_deleted;
    /* Connections on a DISPATCH listener with no service to go to. */
    atomic_uint_fast64_t redirect_unmatched;
};

extern struct stats_proc stats_proc;

/* The table generation in force. */
void stats_set_generation(uint64_t generation);

/* A sync of the service table (from the start of its translation to
 * the table in force) took <duration_s>; it succeeded at wall-clock time
 * <wall_s> (Unix seconds), or failed with <wall_s> 0 (the duration is
 * still counted, the time of the last successful sync kept). */
void stats_sync_done(double duration_s, double wall_s);

/* An EndpointSlice change took <latency_s> from its trigger time (the
 * endpoints.kubernetes.io/last-change-trigger-time annotation) to being
 * in force. */
void stats_network_programming(double latency_s);
/* A worker took <delay_s> from the control loop posting a table to
 * serving it. */
void stats_worker_delay(double delay_s);

/* The API watch stream was restarted; a full relist happened. */
void stats_watch_restart(void);
void stats_watch_relist(void);

/* A connection reached the redirect listener without a service behind
 * its original destination (or without one). */
void stats_redirect_unmatched(void);

/* A worker stopped accepting for a moment: out of descriptors (EMFILE,
 * ENFILE). */
void stats_accept_paused(void);

/* splice() pipes: <delta> pipes opened (+) or closed (-); a pipe wanted
 * but refused (descriptor budget or limit), so the bytes were copied. */
void stats_pipes(int delta);
void stats_pipe_denied(void);

/* ---- API objects skipped (Kubernetes mode) ---- */

/* The Kubernetes side counts the API objects and fields it does not
 * serve by kind and reason (ferry_api_objects_skipped_total); it copies
 * its totals here, the metrics read them. The data plane does not know
 * the kinds and reasons: they are label values given as static strings. */
#define STATS_API_SKIP_MAX 64 /* (kind, reason) pairs */

struct stats_api_skip {
    const char *kind, *reason;
    uint64_t total;
};

/* The total for (<kind>, <reason>) is now <total>. Both strings must
 * live as long as the process. Control loop only. Returns 0, or -1 when
 * STATS_API_SKIP_MAX pairs are taken. */
int stats_api_skipped(const char *kind, const char *reason, uint64_t total);

/* Copy up to <max> totals, in the order the pairs first appeared.
 * Returns how many. Any thread. */
size_t stats_api_skips(struct stats_api_skip *out, size_t max);

#endif
