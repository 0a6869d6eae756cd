#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "drain.h"
#include "listener.h"
#include "log.h"
#include "ring.h"
#include "stats.h"
#include "udp.h"
#include "worker.h"

#define ACCEPT_PAUSE_S 0.1

atomic_int worker_splice_mode = CONF_SPLICE_AUTO;
static atomic_size_t pipe_budget = 1024; /* descriptors, all workers */
static atomic_size_t pipe_fds;           /* held now, all workers */

/* A pooled object while it sits in a free list. */
struct free_node {
    struct free_node *next;
};

static void
worker_on_resume(struct ev_loop *loop, struct ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    worker_resume_accept(t->data);
}

int
worker_init(struct worker *w, struct ev_loop *loop)
{
    w->loop = loop;
    w->scratch = malloc(WORKER_BUF_SIZE);
    if (w->scratch == NULL)
        return -1;
    if (udp_worker_init(w) < 0) {
        free(w->scratch);
        w->scratch = NULL;
        return -1;
    }
    ev_timer_init(&w->accept_resume, worker_on_resume, ACCEPT_PAUSE_S, 0.);
    w->accept_resume.data = w;
    w->nworkers = 1;
    drain_worker_init(w);
    return 0;
}

static size_t
default_pipe_budget(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
        return 1024;
    return (size_t)rl.rlim_cur / 8;
}

size_t
worker_pipe_fds(void)
{
    return atomic_load_explicit(&pipe_fds, memory_order_relaxed);
}

static void
pipe_close(int p[2])
{
    close(p[0]);
    close(p[1]);
    atomic_fetch_sub_explicit(&pipe_fds, 2, memory_order_relaxed);
    stats_pipes(-1);
}

void
worker_set_splice(enum conf_splice mode, size_t budget)
{
    atomic_store(&worker_splice_mode, (int)mode);
    atomic_store(&pipe_budget, budget != 0 ? budget : default_pipe_budget());
}

int
worker_pipe_get(struct worker *w, int p[2])
{
    size_t budget = atomic_load_explicit(&pipe_budget, memory_order_relaxed);

    /* A budget lowered since: the pool gives back what is over it. */
    while (w->nfree_pipes > 0 && worker_pipe_fds() > budget)
        pipe_close(w->free_pipes[--w->nfree_pipes]);
    if (w->nfree_pipes > 0) {
        w->nfree_pipes--;
        p[0] = w->free_pipes[w->nfree_pipes][0];
        p[1] = w->free_pipes[w->nfree_pipes][1];
        return 0;
    }
    /* Reserve the two descriptors first, so that workers racing for the
     * last of the budget cannot both take it. */
    if (atomic_fetch_add_explicit(&pipe_fds, 2, memory_order_relaxed) + 2
        > budget) {
        atomic_fetch_sub_explicit(&pipe_fds, 2, memory_order_relaxed);
        goto denied;
    }
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) {
        atomic_fetch_sub_explicit(&pipe_fds, 2, memory_order_relaxed);
        goto denied;
    }
    stats_pipes(1);
    /* Bigger than the default 64 KiB: fewer splice() calls and wake-ups
     * per byte (about 15 % less CPU per GB on loopback). Pages are taken
     * only while bytes wait; if the kernel refuses, 64 KiB still works. */
    (void)fcntl(p[1], F_SETPIPE_SZ, WORKER_PIPE_SIZE);
    return 0;
denied:
    w->n_pipe_denied++;
    stats_pipe_denied();
    return -1;
}

void
worker_pipe_put(struct worker *w, int p[2], int empty)
{
    if (empty && w->nfree_pipes < WORKER_PIPE_CACHE
        && worker_pipe_fds()
               <= atomic_load_explicit(&pipe_budget, memory_order_relaxed)) {
        w->free_pipes[w->nfree_pipes][0] = p[0];
        w->free_pipes[w->nfree_pipes][1] = p[1];
        w->nfree_pipes++;
        return;
    }
    pipe_close(p);
}

static void
free_list(void **head, size_t *n)
{
    struct free_node *f = *head, *next;

    for (; f != NULL; f = next) {
        next = f->next;
        free(f);
    }
    *head = NULL;
    *n = 0;
}

void
worker_forget_order(struct worker *w)
{
    free(w->lorder);
    free(w->laddrs);
    free(w->lsvcs);
    w->lorder = NULL;
    w->laddrs = NULL;
    w->lsvcs = NULL;
    w->nlorder = 0;
}

void
worker_deinit(struct worker *w)
{
    ev_timer_stop(w->loop, &w->accept_resume);
    drain_worker_deinit(w);
    listener_dispatch_clear(w);
    worker_forget_order(w);
    udp_worker_free(w);
    ring_worker_free(w);
    free_list(&w->free_bufs, &w->nfree_bufs);
    free_list(&w->free_conns, &w->nfree_conns);
    while (w->nfree_pipes > 0)
        pipe_close(w->free_pipes[--w->nfree_pipes]);
    free(w->scratch);
    w->scratch = NULL;
}

static void *
pool_get(void **head, size_t *n)
{
    struct free_node *f = *head;

    if (f == NULL)
        return NULL;
    *head = f->next;
    (*n)--;
    return f;
}

static void
pool_put(void **head, size_t *n, size_t cap, void *p)
{
    struct free_node *f = p;

    if (*n >= cap) {
        free(p);
        return;
    }
    f->next = *head;
    *head = f;
    (*n)++;
}

char *
worker_buf_get(struct worker *w)
{
    char *b = pool_get(&w->free_bufs, &w->nfree_bufs);

    if (b == NULL)
        b = malloc(WORKER_BUF_SIZE);
    if (b != NULL)
        w->nbufs_in_use++;
    return b;
}

void
worker_buf_put(struct worker *w, char *buf)
{
    w->nbufs_in_use--;
    pool_put(&w->free_bufs, &w->nfree_bufs, WORKER_BUF_CACHE, buf);
}

void *
worker_conn_alloc(struct worker *w, size_t size)
{
    void *p = pool_get(&w->free_conns, &w->nfree_conns);

    return p != NULL ? p : malloc(size);
}

void
worker_conn_release(struct worker *w, void *p)
{
    pool_put(&w->free_conns, &w->nfree_conns, WORKER_CONN_CACHE, p);
}

void
worker_pause_accept(struct worker *w)
{
    struct listener *l;

    if (w->accept_paused)
        return;
    w->accept_paused = 1;
    w->n_accept_paused++;
    stats_accept_paused();
    for (l = w->listeners; l != NULL; l = l->next)
        listener_stop(l);
    ev_timer_set(&w->accept_resume, ACCEPT_PAUSE_S, 0.);
    ev_timer_start(w->loop, &w->accept_resume);
    log_rl(LOG_WARN, ev_now(w->loop),
           "out of file descriptors: accepting paused for %.0f ms "
           "(%zu connections open)",
           ACCEPT_PAUSE_S * 1e3, worker_nconns(w));
}

void
worker_resume_accept(struct worker *w)
{
    struct listener *l;

    if (!w->accept_paused)
        return;
    w->accept_paused = 0;
    ev_timer_stop(w->loop, &w->accept_resume);
    for (l = w->listeners; l != NULL; l = l->next)
        listener_start(l);
}

/* A slot is a tiny seqlock: its generation is 0 while the time is
 * written, so a reader that sees the same non-zero generation before and
 * after reading the time has a matching pair. */
void
worker_note_commit(struct worker *w, uint64_t gen, double at)
{
    struct worker_commit *c = &w->commits[w->commit_pos];

    w->commit_pos = (w->commit_pos + 1) % WORKER_COMMITS;
    atomic_store_explicit(&c->gen, 0, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&c->at_us, (uint64_t)(at * 1e6),
                          memory_order_relaxed);
    atomic_store_explicit(&c->gen, gen, memory_order_release);
}

int
worker_commit_of(struct worker *w, uint64_t gen, uint64_t *got, double *at)
{
    uint64_t best = 0, best_us = 0;
    size_t i;

    for (i = 0; i < WORKER_COMMITS; i++) {
        struct worker_commit *c = &w->commits[i];
        uint64_t g = atomic_load_explicit(&c->gen, memory_order_acquire);
        uint64_t us = atomic_load_explicit(&c->at_us, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (g == 0 || g < gen
            || atomic_load_explicit(&c->gen, memory_order_relaxed) != g)
            continue;
        if (best == 0 || g < best) {
            best = g;
            best_us = us;
        }
    }
    if (best == 0)
        return 0;
    *got = best;
    *at = (double)best_us / 1e6;
    return 1;
}
