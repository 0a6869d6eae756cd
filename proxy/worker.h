/*
 * worker.h - one event loop and everything it owns: listeners,
 * connections, pooled session objects and relay buffers.
 *
 * With one worker (today's default) the worker's loop is the main loop.
 * Nothing here is shared with another thread except backend counters,
 * which are atomics.
 */
#ifndef PROXY_WORKER_H
#define PROXY_WORKER_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#define WORKER_BUF_SIZE     (32 * 1024) /* relay chunk and pending buffer */
#define WORKER_BUF_CACHE    256         /* idle relay buffers kept */
#define WORKER_CONN_CACHE   4096        /* idle session objects kept */
#define WORKER_ACCEPT_BATCH 64          /* accepts per readiness event */

struct conn;
struct listener;

struct worker {
    struct ev_loop *loop;
    struct conn *conns;       /* doubly linked list of open connections */
    size_t nconns;
    void *free_conns;         /* pooled session objects */
    size_t nfree_conns;
    void *free_bufs;          /* pooled relay buffers */
    size_t nfree_bufs;
    size_t nbufs_in_use;
    char *scratch;            /* WORKER_BUF_SIZE, for the copy path */
    struct listener *listeners;
    int accept_paused;        /* out of descriptors: listeners stopped */
    struct ev_timer accept_resume;
    uint64_t next_conn_id;
    uint64_t n_accept_paused; /* times accepting was paused (EMFILE) */
    uint64_t n_accepted;
    /* Called when the last connection closes (drain). */
    void (*on_idle)(struct worker *w);
};

int worker_init(struct worker *w, struct ev_loop *loop);
void worker_deinit(struct worker *w);

/* Relay buffers (WORKER_BUF_SIZE bytes). worker_buf_get() returns NULL
 * when out of memory. */
char *worker_buf_get(struct worker *w);
void worker_buf_put(struct worker *w, char *buf);

/* Session objects of <size> bytes. */
void *worker_conn_alloc(struct worker *w, size_t size);
void worker_conn_release(struct worker *w, void *p);

/* Out of descriptors: stop every listener for a moment. Resumes after a
 * short delay or as soon as a connection closes, whichever comes first. */
void worker_pause_accept(struct worker *w);
void worker_resume_accept(struct worker *w);

#endif
