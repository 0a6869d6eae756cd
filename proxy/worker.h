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
#define WORKER_PIPE_CACHE   64          /* idle (empty) pipes kept */
#define WORKER_PIPE_SIZE    (256 * 1024) /* pipe capacity asked for; also
                                          * the most one splice() moves */

/* How connections relay their bytes. */
enum worker_splice {
    WORKER_SPLICE_AUTO,   /* copy; a direction that moves bulk data (a
                           * read fills the whole buffer) switches to
                           * splice() through a pipe */
    WORKER_SPLICE_ALWAYS, /* splice() from the first byte */
    WORKER_SPLICE_NEVER,  /* always copy (recv/send) */
};

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
    /* splice(): a pool of pipes, within a budget of descriptors. */
    int splice_mode;          /* enum worker_splice */
    size_t pipe_budget;       /* descriptors pipes may hold (in use and
                               * pooled); 0 = no splice */
    size_t pipe_fds;          /* descriptors pipes hold now */
    int free_pipes[WORKER_PIPE_CACHE][2];
    size_t nfree_pipes;
    uint64_t n_pipe_denied;   /* a pipe was wanted but the budget or the
                               * descriptor limit said no: copied */
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

/* A pipe for splice() (both ends non-blocking), from the pool or new:
 * 0 with <p> filled, or -1 when the budget is spent or the kernel says
 * no (the caller copies instead). */
int worker_pipe_get(struct worker *w, int p[2]);
/* Return a pipe. Only an empty one goes back to the pool; one that may
 * still hold bytes is closed. */
void worker_pipe_put(struct worker *w, int p[2], int empty);

/* Splice settings: <mode> is an enum worker_splice; <budget> is in
 * descriptors (0: the default, an eighth of the descriptor limit). Pipes
 * beyond a lowered budget are closed as they come back. */
void worker_set_splice(struct worker *w, int mode, size_t budget);

/* Out of descriptors: stop every listener for a moment. Resumes after a
 * short delay or as soon as a connection closes, whichever comes first. */
void worker_pause_accept(struct worker *w);
void worker_resume_accept(struct worker *w);

#endif
