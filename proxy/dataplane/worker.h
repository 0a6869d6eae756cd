/*
 * worker.h - one event loop and everything it owns: listeners,
 * connections, pooled session objects and relay buffers.
 *
 * Every worker runs on a thread of its own (wthread.h); the main
 * (control) loop serves no connection. A worker's connections, pools and
 * listeners are touched by its own thread only. Shared with the others:
 * the connection count (read by the control loop for status and drain),
 * the splice settings and the descriptor budget of pipes, all atomics.
 */
#ifndef PROXY_DATAPLANE_WORKER_H
#define PROXY_DATAPLANE_WORKER_H

#include <ev.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define WORKER_BUF_SIZE     (32 * 1024) /* relay chunk and pending buffer */
#define WORKER_BUF_CACHE    256         /* idle relay buffers kept */
#define WORKER_CONN_CACHE   4096        /* idle session objects kept */
#define WORKER_ACCEPT_BATCH 64          /* accepts per readiness event */
#define WORKER_PIPE_CACHE   64          /* idle (empty) pipes kept */
#define WORKER_COMMITS      16          /* commits remembered (trace) */
#define WORKER_PIPE_SIZE    (256 * 1024) /* pipe capacity asked for; also
                                          * the most one splice() moves */

struct conn;
struct listener;
struct udp_worker;
struct ring;
struct sniroute_map;
struct sniroute_wait;

struct worker {
    struct ev_loop *loop;
    unsigned id;              /* 0..nworkers-1; also its svc slot */
    unsigned nworkers;
    struct conn *conns;       /* doubly linked list of open connections */
    atomic_size_t nconns;     /* written by the owner only */
    void *free_conns;         /* pooled session objects */
    size_t nfree_conns;
    void *free_bufs;          /* pooled relay buffers */
    size_t nfree_bufs;
    size_t nbufs_in_use;
    char *scratch;            /* WORKER_BUF_SIZE, for the copy path */
    struct listener *listeners;
    /* After a commit that claimed every address of its plan (apply.c):
     * the plan's addresses, the listener of each and the service it was
     * pointed at, in the plan's order, so that a plan on the same
     * addresses only re-points the listeners whose service changed.
     * nlorder 0: not known. */
    struct listener **lorder;
    struct saddr *laddrs;
    struct svc **lsvcs; /* borrowed: each listener holds its reference */
    size_t nlorder;
    int accept_paused;        /* out of descriptors: listeners stopped */
    struct ev_timer accept_resume;
    uint64_t next_conn_id;
    uint64_t n_accept_paused; /* times accepting was paused (EMFILE) */
    atomic_uint_fast64_t n_accepted;
    atomic_uint_fast64_t generation; /* of the table its listeners serve */
    /* The last WORKER_COMMITS commits, for "ferry explain --trace":
     * written by the owner (worker_note_commit()), read by the control
     * loop (worker_commit_of()). */
    struct worker_commit {
        atomic_uint_fast64_t gen;   /* 0 while being written */
        atomic_uint_fast64_t at_us; /* wall clock, microseconds */
    } commits[WORKER_COMMITS];
    unsigned commit_pos; /* the owner's */
    /* splice(): a pool of empty pipes; the descriptor budget is counted
     * across all workers (worker_pipe_fds). */
    int free_pipes[WORKER_PIPE_CACHE][2];
    size_t nfree_pipes;
    uint64_t n_pipe_denied;   /* a pipe was wanted but the budget or the
                               * descriptor limit said no: copied */
    /* Called when the last connection closes (drain). */
    void (*on_idle)(struct worker *w);
    /* The table this worker serves and its runtime services (references,
     * in table order), kept when the table has a DISPATCH service (a
     * connection the kernel redirected there goes to the service whose
     * frontend is its original destination) or server names, and on
     * worker 0 when a service has ClientIP affinity (the pins of a
     * changed service come from it). NULL otherwise. */
    struct table *dtable;
    struct svcv *dsvcs;
    /* drain.h: woken when a backend's drain deadline changes, and a
     * timer at the earliest deadline of its connections (<drain_at>, 0
     * when stopped); <drain_next> links drain.c's list of workers. */
    struct ev_async drain_kick;
    struct ev_timer drain_timer;
    double drain_at;
    struct worker *drain_next;
    /* SNI routing built from them (sniroute.h), or NULL; the clients
     * whose ClientHello is awaited (counted in nconns). */
    struct sniroute_map *sni;
    struct sniroute_wait *sni_waits;
    /* UDP frontends and flows (udp.h). */
    struct udp_worker *udp;
    /* relay.engine io_uring (ring.h): the ring, made at the first
     * connection that wants it; <ring_failed> once the kernel refused. */
    struct ring *ring;
    int ring_failed;
};

/* enum worker_splice in force, for every worker. */
extern atomic_int worker_splice_mode;

int worker_init(struct worker *w, struct ev_loop *loop);

/* Open connections of <w>: any thread may read; only the owner adds. */
static inline size_t
worker_nconns(struct worker *w)
{
    return atomic_load_explicit(&w->nconns, memory_order_relaxed);
}

/* Connections accepted so far, and the generation of the table its
 * listeners serve; any thread. */
static inline uint64_t
worker_naccepted(struct worker *w)
{
    return atomic_load_explicit(&w->n_accepted, memory_order_relaxed);
}

static inline uint64_t
worker_generation(struct worker *w)
{
    return atomic_load_explicit(&w->generation, memory_order_relaxed);
}

/* The owner committed the table of generation <gen> at wall-clock time
 * <at> (seconds); remembered for the control loop's trace. */
void worker_note_commit(struct worker *w, uint64_t gen, double at);

/* The first commit of a generation at least <gen> that <w> remembers:
 * 1 with <*got> and <*at> (wall-clock seconds) filled, or 0 if none is
 * (not committed yet, or forgotten). Any thread. */
int worker_commit_of(struct worker *w, uint64_t gen, uint64_t *got, double *at);

static inline void
worker_nconns_add(struct worker *w, int d)
{
    atomic_store_explicit(&w->nconns, worker_nconns(w) + (size_t)(ptrdiff_t)d,
                          memory_order_relaxed);
}

/* A connection id unique across workers: worker k of N hands out
 * k+1, k+1+N, k+1+2N, ... (1, 2, 3, ... with one worker). */
static inline uint64_t
worker_next_id(struct worker *w)
{
    return w->next_conn_id++ * w->nworkers + w->id + 1;
}

/* Descriptors all workers' pipes hold now. */
size_t worker_pipe_fds(void);
void worker_deinit(struct worker *w);

/* Forget the order of <w>'s listeners (apply.c): they were closed or
 * changed outside a plan, and the next plan takes the full path. Owner's
 * loop, or once the worker has stopped. */
void worker_forget_order(struct worker *w);

/* Relay buffers (WORKER_BUF_SIZE bytes). worker_buf_get() returns NULL
 * when out of memory. */
char *worker_buf_get(struct worker *w);
void worker_buf_put(struct worker *w, char *buf);

/* Session objects of <size> bytes. */
void *worker_conn_alloc(struct worker *w, size_t size);
void worker_conn_release(struct worker *w, void *p);

/* A pipe for splice() (both ends non-blocking), from the pool or new:
 * 0 with <p> filled, or -1 when the budget is spent or the kernel says
 * no (the caller copies instead). */
int worker_pipe_get(struct worker *w, int p[2]);
/* Return a pipe. Only an empty one goes back to the pool; one that may
 * still hold bytes is closed. */
void worker_pipe_put(struct worker *w, int p[2], int empty);

/* Splice settings, for every worker: <mode> is how connections relay
 * their bytes (config.h: CONF_SPLICE_AUTO copies until a direction moves
 * bulk data, a read filling the whole buffer, then splices);
 * <budget> is in descriptors, all workers together (0: the default, an
 * eighth of the descriptor limit). Pipes beyond a lowered budget are
 * closed as they come back. Any thread. */
void worker_set_splice(enum conf_splice mode, size_t budget);

/* Out of descriptors: stop every listener for a moment. Resumes after a
 * short delay or as soon as a connection closes, whichever comes first. */
void worker_pause_accept(struct worker *w);
void worker_resume_accept(struct worker *w);

#endif
