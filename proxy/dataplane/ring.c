/*
 * ring.c - the io_uring relay engine (ring.h).
 *
 * Each entry's user_data is the connection's address with the operation
 * in its low 3 bits (objects are 8-aligned); 0 marks an entry whose
 * completion nobody waits for (a cancel, a close). A connection counts
 * its entries in flight (ring_inflight): a multishot receive counts once,
 * until the completion without IORING_CQE_F_MORE.
 *
 * A cancel or a close names a connection or a descriptor that may have
 * been reused by the time the kernel reads it (an entry queued in one
 * loop turn is submitted at the next prepare). Both are harmless: a
 * receive or a send cancelled under a live connection is armed again; a
 * connect (only if its object was closed and reused within that one
 * turn) ends as a failed attempt, and the next backend is tried.
 *
 * liburing 2.3 (Debian 12) has no io_uring_setup_buf_ring(): the buffer
 * ring is mapped here and registered with io_uring_register_buf_ring().
 */
#include <errno.h>
#include <liburing.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "conn-t.h"
#include "log.h"
#include "ring.h"
#include "stats.h"
#include "worker.h"

#define RING_ENTRIES 1024 /* submission queue; completions twice that */
#define RING_NBUF    64   /* provided buffers; a power of two */
#define RING_BGID    0
#define RING_HIGH    4 /* buffers waiting in one direction: stop it */

/* struct half's rflags. */
#define RF_ARMED   0x01 /* a receive is in flight */
#define RF_CANCEL  0x02 /* ... and its cancel asked for */
#define RF_SENDING 0x04 /* a send is in flight */
#define RF_STARVED 0x08 /* the receive ended for want of a buffer */
#define RF_OWNBUF  0x10 /* the send in flight is from <buf> */

enum ring_op {
    OP_NONE = 0,
    OP_RECV = 2, /* + direction: 0 client to backend, 1 back */
    OP_SEND = 4, /* + direction */
    OP_CONNECT = 6,
};

struct ring {
    struct io_uring ring;
    struct io_uring_buf_ring *br;
    char *bufs;
    uint32_t blen[RING_NBUF];
    uint16_t next[RING_NBUF];
    unsigned added; /* buffers given back since the last advance */
    unsigned freed; /* ... since the starved were last served */
    struct ev_io io;
    struct ev_prepare prep;
    struct worker *w;
    struct conn *parked; /* closed, an operation still in flight */
    /* Connections a receive of which ended for want of a buffer, in the
     * order they did: served first as buffers come back. */
    struct conn *starved, *starved_tail;
};

static atomic_int engine = CONF_ENGINE_EPOLL;
static atomic_flag refusal_said = ATOMIC_FLAG_INIT;

void
ring_set_engine(enum conf_engine e)
{
    atomic_store_explicit(&engine, (int)e, memory_order_relaxed);
}

enum conf_engine
ring_engine(void)
{
    return (enum conf_engine)atomic_load_explicit(&engine,
                                                  memory_order_relaxed);
}

static void ring_drive(struct conn *c, int i);
static void cancel(struct ring *r, struct conn *c, int op);

static struct half *
half_of(struct conn *c, int i)
{
    return i == 0 ? &c->c2b : &c->b2c;
}

/* The socket direction <i> reads from, and the one it writes to. */
static int
src_fd(const struct conn *c, int i)
{
    return i == 0 ? c->cio.fd : c->bio.fd;
}

static int
dst_fd(const struct conn *c, int i)
{
    return i == 0 ? c->bio.fd : c->cio.fd;
}

static struct io_uring_sqe *
sqe_get(struct ring *r)
{
    struct io_uring_sqe *sqe;

    while ((sqe = io_uring_get_sqe(&r->ring)) == NULL)
        io_uring_submit(&r->ring);
    return sqe;
}

/* An entry for <c>'s operation <op> (counted in flight), or for nobody
 * (<c> NULL). */
static struct io_uring_sqe *
sqe_for(struct ring *r, struct conn *c, enum ring_op op)
{
    struct io_uring_sqe *sqe = sqe_get(r);

    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | (uint64_t)op);
    if (c != NULL)
        c->ring_inflight++;
    return sqe;
}

static void
buf_give(struct ring *r, uint16_t bid)
{
    io_uring_buf_ring_add(r->br, r->bufs + (size_t)bid * WORKER_BUF_SIZE,
                          WORKER_BUF_SIZE, bid,
                          io_uring_buf_ring_mask(RING_NBUF), (int)r->added);
    r->added++;
    r->freed++;
}

/* Publish the buffers given back (before the kernel may use them). */
static void
buf_publish(struct ring *r)
{
    if (r->added > 0) {
        io_uring_buf_ring_advance(r->br, (int)r->added);
        r->added = 0;
    }
}

/* ---- the ring's life ----------------------------------------------------- */

static void ring_on_cqes(struct ev_loop *loop, struct ev_io *io, int rev);

/* Before the loop sleeps: submit what the turn queued, with one system
 * call. (Reading here the completions of entries the kernel finished as
 * it took them, a send with room, saved no CPU for one busy connection
 * and cost batching with many: measured, not kept.) */
static void
ring_on_prepare(struct ev_loop *loop, struct ev_prepare *p, int rev)
{
    struct ring *r = p->data;

    (void)loop;
    (void)rev;
    buf_publish(r);
    if (io_uring_sq_ready(&r->ring) > 0)
        io_uring_submit(&r->ring);
}

/* Multishot receive into provided buffers needs 6.0. */
static int
kernel_ok(void)
{
    struct utsname u;
    int major = 0, minor = 0;

    if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &major, &minor) != 2)
        return 0;
    return major > 6 || (major == 6 && minor >= 0);
}

static struct ring *
ring_new(struct worker *w, char *why, size_t whylen)
{
    struct io_uring_params p;
    struct io_uring_buf_reg reg;
    struct ring *r;
    size_t brlen = RING_NBUF * sizeof(struct io_uring_buf);
    int rc;
    uint16_t i;

    if (!kernel_ok()) {
        snprintf(why, whylen, "the kernel is older than 6.0");
        return NULL;
    }
    if ((r = calloc(1, sizeof(*r))) == NULL) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    memset(&p, 0, sizeof(p));
    /* One thread submits; the kernel's completion work waits for the
     * next system call rather than interrupting the worker. */
    p.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER;
    rc = io_uring_queue_init_params(RING_ENTRIES, &r->ring, &p);
    if (rc == -EINVAL) {
        memset(&p, 0, sizeof(p));
        rc = io_uring_queue_init_params(RING_ENTRIES, &r->ring, &p);
    }
    if (rc < 0) {
        snprintf(why, whylen, "io_uring_setup: %s%s", strerror(-rc),
                 rc == -EPERM ? " (kernel.io_uring_disabled?)" : "");
        free(r);
        return NULL;
    }
    r->br = mmap(NULL, brlen, PROT_READ | PROT_WRITE,
                 MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    r->bufs = mmap(NULL, (size_t)RING_NBUF * WORKER_BUF_SIZE,
                   PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (r->br == MAP_FAILED || r->bufs == MAP_FAILED) {
        snprintf(why, whylen, "mmap: %s", strerror(errno));
        goto fail;
    }
    io_uring_buf_ring_init(r->br);
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)r->br;
    reg.ring_entries = RING_NBUF;
    reg.bgid = RING_BGID;
    if ((rc = io_uring_register_buf_ring(&r->ring, &reg, 0)) < 0) {
        snprintf(why, whylen, "buffer ring: %s", strerror(-rc));
        goto fail;
    }
    for (i = 0; i < RING_NBUF; i++)
        buf_give(r, i);
    buf_publish(r);
    r->w = w;
    ev_io_init(&r->io, ring_on_cqes, r->ring.ring_fd, EV_READ);
    r->io.data = r;
    ev_io_start(w->loop, &r->io);
    ev_prepare_init(&r->prep, ring_on_prepare);
    r->prep.data = r;
    ev_prepare_start(w->loop, &r->prep);
    return r;
fail:
    if (r->br != MAP_FAILED && r->br != NULL)
        munmap(r->br, brlen);
    if (r->bufs != MAP_FAILED && r->bufs != NULL)
        munmap(r->bufs, (size_t)RING_NBUF * WORKER_BUF_SIZE);
    io_uring_queue_exit(&r->ring);
    free(r);
    return NULL;
}

/* ThreadSanitizer follows descriptors through close(), not through the
 * ring: a number closed by the ring and reused by another thread would
 * look like a race. Its builds close with the system call. */
#if defined(__SANITIZE_THREAD__)
#define RING_SYNC_CLOSE 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RING_SYNC_CLOSE 1
#endif
#endif

static void
sock_close(struct ring *r, int fd)
{
#ifdef RING_SYNC_CLOSE
    (void)r;
    close(fd);
#else
    io_uring_prep_close(sqe_for(r, NULL, OP_NONE), fd);
#endif
}

/* Close <c>'s sockets through the ring and give back what it holds; its
 * operations are all done. */
static void
conn_release(struct ring *r, struct conn *c)
{
    int i;

    for (i = 0; c->state == CONN_RELAY && i < 2; i++) {
        struct half *h = half_of(c, i);
        while (h->r.queued > 0) {
            buf_give(r, h->r.head);
            h->r.head = r->next[h->r.head];
            h->r.queued--;
        }
        if (h->buf != NULL) {
            worker_buf_put(r->w, h->buf);
            h->buf = NULL;
        }
    }
    sock_close(r, c->cio.fd);
    if (c->bio.fd >= 0)
        sock_close(r, c->bio.fd);
}

void
ring_worker_free(struct worker *w)
{
    struct ring *r = w->ring;
    struct conn *c, *next;
    int i;

    if (r == NULL)
        return;
    ev_io_stop(w->loop, &r->io);
    ev_prepare_stop(w->loop, &r->prep);
    /* The kernel cancels what is in flight as the ring goes. */
    io_uring_queue_exit(&r->ring);
    for (c = r->parked; c != NULL; c = next) {
        next = c->next;
        for (i = 0; c->state == CONN_RELAY && i < 2; i++)
            if (half_of(c, i)->buf != NULL)
                worker_buf_put(w, half_of(c, i)->buf);
        close(c->cio.fd);
        if (c->bio.fd >= 0)
            close(c->bio.fd);
        worker_nconns_add(w, -1);
        worker_conn_release(w, c);
    }
    munmap(r->br, RING_NBUF * sizeof(struct io_uring_buf));
    munmap(r->bufs, (size_t)RING_NBUF * WORKER_BUF_SIZE);
    free(r);
    w->ring = NULL;
}

/* ---- a connection on the ring -------------------------------------------- */

/* <w>'s ring, made now if it has none: NULL when the kernel refused one
 * (said once). */
static struct ring *
ring_of(struct worker *w)
{
    char why[160];

    if (w->ring != NULL || w->ring_failed)
        return w->ring;
    if ((w->ring = ring_new(w, why, sizeof(why))) == NULL) {
        w->ring_failed = 1;
        stats_inc(&stats_proc.ring_refused);
        /* One line for the process: every worker meets the same refusal. */
        if (!atomic_flag_test_and_set(&refusal_said))
            log_warn("relay.engine io_uring: %s; relaying with epoll", why);
        return NULL;
    }
    log_info("worker %u: relaying on io_uring (%d entries, %d buffers of %d "
             "KiB)",
             w->id, RING_ENTRIES, RING_NBUF, WORKER_BUF_SIZE / 1024);
    return w->ring;
}

void
ring_worker_start(struct worker *w)
{
    if (ring_engine() == CONF_ENGINE_IO_URING)
        (void)ring_of(w);
}

/* Whether connections that start now go on the ring. */
static int
ring_wanted(struct conn *c)
{
    return ring_engine() == CONF_ENGINE_IO_URING
           && atomic_load_explicit(&worker_splice_mode, memory_order_relaxed)
                  != CONF_SPLICE_ALWAYS
           && ring_of(c->w) != NULL;
}

int
ring_connect(struct conn *c)
{
    struct ring *r;
    struct io_uring_sqe *sqe;
    const struct saddr *a;

    if (!ring_wanted(c)) {
        c->on_ring = 0; /* an earlier attempt's, before a reload */
        return -1;
    }
    r = c->w->ring;
    c->on_ring = 1;
    c->ring_closed = c->ring_leave = c->ring_timeout = 0;
    c->ring_inflight = 0;
    sqe = sqe_for(r, c, OP_CONNECT);
    a = &c->svc->tbe[c->be_idx].addr;
    io_uring_prep_connect(sqe, c->bio.fd, &a->u.sa, a->len);
    c->ring_connect = 1;
    /* Submitted at the end of the turn with the rest. The kernel copies
     * the address as it takes the entry: a close before then submits at
     * once (ring_conn_close), while the service (the connection holds
     * it) still holds its table's copy. */
    return 0;
}

void
ring_cancel_connect(struct conn *c)
{
    if (!c->ring_connect || c->ring_timeout)
        return;
    c->ring_timeout = 1;
    cancel(c->w->ring, c, OP_CONNECT);
}

static void
on_connect(struct conn *c, int res)
{
    c->ring_connect = 0;
    if (res == 0)
        conn_ring_connected(c, 0);
    else
        conn_ring_connected(c, c->ring_timeout && res == -ECANCELED
                                   ? ETIMEDOUT
                                   : -res);
}

int
ring_relay_start(struct conn *c)
{
    if (!ring_wanted(c)) {
        c->on_ring = 0; /* connected on the ring, relayed with epoll */
        return -1;
    }
    c->on_ring = 1;
    c->ring_closed = c->ring_leave = 0;
    c->ring_inflight = 0;
    c->c2b.rflags = c->b2c.rflags = 0;
    memset(&c->c2b.r, 0, sizeof(c->c2b.r));
    memset(&c->b2c.r, 0, sizeof(c->b2c.r));
    stats_inc(&stats_proc.ring_conns);
    conn_update_io(c); /* no readiness watched from now on */
    ring_drive(c, 1);
    ring_drive(c, 0); /* may end it: nothing after */
    return 0;
}

static void
recv_arm(struct ring *r, struct conn *c, int i)
{
    struct half *h = half_of(c, i);
    struct io_uring_sqe *sqe = sqe_for(r, c, OP_RECV + i);

    io_uring_prep_recv_multishot(sqe, src_fd(c, i), NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = RING_BGID;
    h->rflags |= RF_ARMED;
}

/* A receive of <c> ended for want of a buffer: wait in line for one. */
static void
starve(struct ring *r, struct conn *c, int i)
{
    int queued = (c->c2b.rflags | c->b2c.rflags) & RF_STARVED;

    half_of(c, i)->rflags |= RF_STARVED;
    stats_inc(&stats_proc.ring_waits);
    if (queued)
        return;
    c->snext = NULL;
    c->sprev = r->starved_tail;
    if (r->starved_tail != NULL)
        r->starved_tail->snext = c;
    else
        r->starved = c;
    r->starved_tail = c;
}

static void
unstarve(struct ring *r, struct conn *c)
{
    if (!((c->c2b.rflags | c->b2c.rflags) & RF_STARVED))
        return;
    c->c2b.rflags &= (uint8_t)~RF_STARVED;
    c->b2c.rflags &= (uint8_t)~RF_STARVED;
    if (c->sprev != NULL)
        c->sprev->snext = c->snext;
    else
        r->starved = c->snext;
    if (c->snext != NULL)
        c->snext->sprev = c->sprev;
    else
        r->starved_tail = c->sprev;
}

/* Buffers came back: as many starved connections receive again. A
 * starved direction has neither ended nor passed its FIN on, so driving
 * it cannot end the connection. */
static void
serve_starved(struct ring *r)
{
    struct conn *c;
    unsigned n = r->freed;
    uint8_t f0, f1;

    r->freed = 0;
    while (n-- > 0 && (c = r->starved) != NULL) {
        f0 = c->c2b.rflags & RF_STARVED;
        f1 = c->b2c.rflags & RF_STARVED;
        unstarve(r, c);
        if (f1)
            ring_drive(c, 1);
        if (f0)
            ring_drive(c, 0);
    }
}

static void
send_next(struct ring *r, struct conn *c, int i)
{
    struct half *h = half_of(c, i);
    struct io_uring_sqe *sqe = sqe_for(r, c, OP_SEND + i);

    if (h->len > 0) {
        io_uring_prep_send(sqe, dst_fd(c, i), h->buf + h->off, h->len,
                           MSG_NOSIGNAL);
        h->rflags |= RF_OWNBUF;
    } else {
        io_uring_prep_send(sqe, dst_fd(c, i),
                           r->bufs + (size_t)h->r.head * WORKER_BUF_SIZE
                               + h->off,
                           r->blen[h->r.head] - h->off, MSG_NOSIGNAL);
    }
    h->rflags |= RF_SENDING;
}

static void
cancel(struct ring *r, struct conn *c, int op)
{
    io_uring_prep_cancel64(sqe_for(r, NULL, OP_NONE),
                           (uint64_t)(uintptr_t)c | (uint64_t)op, 0);
}

/* Back to epoll once nothing is in flight: the epoll relay splices. */
static void
ring_leave(struct conn *c)
{
    unstarve(c->w->ring, c);
    c->on_ring = 0;
    c->c2b.rflags = c->b2c.rflags = 0;
    memset(&c->c2b.r, 0, sizeof(c->c2b.r));
    memset(&c->b2c.r, 0, sizeof(c->b2c.r));
    stats_inc(&stats_proc.ring_left);
    conn_update_io(c);
}

/* After a completion about <c>'s direction <i>: queue what can go now.
 * May end <c>. */
static void
ring_drive(struct conn *c, int i)
{
    struct ring *r = c->w->ring;
    struct half *h = half_of(c, i);
    const struct half *o = half_of(c, !i);
    int waiting = h->len > 0 || h->r.queued > 0;

    if (waiting && !(h->rflags & RF_SENDING))
        send_next(r, c, i);
    if ((h->r.queued >= RING_HIGH || c->ring_leave)
        && (h->rflags & (RF_ARMED | RF_CANCEL)) == RF_ARMED) {
        cancel(r, c, OP_RECV + i);
        h->rflags |= RF_CANCEL;
    }
    if (!waiting && !h->eof && !c->ring_leave
        && !(h->rflags & (RF_ARMED | RF_STARVED)))
        recv_arm(r, c, i);
    if (h->eof && !waiting && !h->shut) {
        /* The second FIN goes out with the close that follows. A system
         * call: the ring would hand a shutdown to one of its worker
         * threads (it may block), a thread switch per connection. */
        if (!o->shut)
            shutdown(dst_fd(c, i), SHUT_WR);
        h->shut = 1;
    }
    if (c->c2b.shut && c->b2c.shut) {
        conn_finish(c, CONN_DONE);
        return;
    }
    if (c->ring_leave && c->ring_inflight == 0)
        ring_leave(c);
}

/* A receive completed: <res> bytes into provided buffer <bid> (-1: none),
 * or into <buf>. */
static void
on_recv(struct ring *r, struct conn *c, int i, const struct io_uring_cqe *cqe)
{
    struct half *h = half_of(c, i);
    int res = cqe->res;

    if (!(cqe->flags & IORING_CQE_F_MORE))
        h->rflags &= (uint8_t)~(RF_ARMED | RF_CANCEL);
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        if (res <= 0) {
            buf_give(r, bid);
        } else {
            r->blen[bid] = (uint32_t)res;
            if (h->r.queued++ == 0)
                h->r.head = bid;
            else
                r->next[h->r.tail] = bid;
            h->r.tail = bid;
        }
    }
    if (res > 0) {
        conn_count(c, i == 0, (size_t)res);
        /* Bulk under relay.splice auto: back to epoll, which splices. */
        if (res == WORKER_BUF_SIZE && !c->ring_leave
            && atomic_load_explicit(&worker_splice_mode, memory_order_relaxed)
                   == CONF_SPLICE_AUTO) {
            h->bulk = 1;
            c->ring_leave = 1;
            if ((half_of(c, !i)->rflags & (RF_ARMED | RF_CANCEL))
                == RF_ARMED) {
                cancel(r, c, OP_RECV + !i);
                half_of(c, !i)->rflags |= RF_CANCEL;
            }
        }
    } else if (res == 0) {
        h->eof = 1;
        if (c->first_eof == 0)
            c->first_eof = i == 0 ? 1 : 2;
    } else if (res == -ENOBUFS) {
        starve(r, c, i);
    } else if (res != -ECANCELED) {
        conn_finish(c, CONN_ABORT);
        return;
    }
    ring_drive(c, i);
}

static void
on_send(struct ring *r, struct conn *c, int i, int res)
{
    struct half *h = half_of(c, i);

    h->rflags &= (uint8_t)~RF_SENDING;
    if (h->len > 0)
        h->rflags &= (uint8_t)~RF_OWNBUF;
    if (res == -ECANCELED) {
        ring_drive(c, i); /* a stale cancel: send it again */
        return;
    }
    if (res <= 0) { /* nothing sent of a non-empty buffer: give up */
        conn_finish(c, CONN_ABORT);
        return;
    }
    c->last_active = ev_now(c->w->loop);
    h->off += (uint32_t)res;
    if (h->len > 0) {
        h->len -= (uint32_t)res;
        if (h->len == 0) {
            worker_buf_put(c->w, h->buf);
            h->buf = NULL;
            h->off = 0;
        }
    } else if (h->off >= r->blen[h->r.head]) {
        buf_give(r, h->r.head);
        h->r.head = r->next[h->r.head];
        h->r.queued--;
        h->off = 0;
    }
    ring_drive(c, i);
}

/* A completion for a connection closed already: give back what it
 * brought; the last one releases the connection. */
static void
on_parked(struct ring *r, struct conn *c, const struct io_uring_cqe *cqe)
{
    if (cqe->flags & IORING_CQE_F_BUFFER)
        buf_give(r, (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT));
    if (c->ring_inflight > 0)
        return;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        r->parked = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    conn_release(r, c);
    conn_reaped(r->w, c);
}

static void
ring_on_cqes(struct ev_loop *loop, struct ev_io *io, int rev)
{
    struct ring *r = io->data;
    struct io_uring_cqe *cqe;
    unsigned seen = 0, head;

    (void)loop;
    (void)rev;
    /* Completions the full queue could not take wait in the kernel, and
     * keep the descriptor readable: bring them in. */
    if (io_uring_cq_has_overflow(&r->ring))
        io_uring_submit_and_get_events(&r->ring);
    io_uring_for_each_cqe(&r->ring, head, cqe)
    {
        uint64_t ud = io_uring_cqe_get_data64(cqe);
        struct conn *c = (struct conn *)(uintptr_t)(ud & ~(uint64_t)7);
        int op = (int)(ud & 7);

        seen++;
        if (c == NULL)
            continue;
        if (!(cqe->flags & IORING_CQE_F_MORE))
            c->ring_inflight--;
        if (c->ring_closed) {
            on_parked(r, c, cqe);
            continue;
        }
        if (op == OP_RECV || op == OP_RECV + 1)
            on_recv(r, c, op - OP_RECV, cqe);
        else if (op == OP_SEND || op == OP_SEND + 1)
            on_send(r, c, op - OP_SEND, cqe->res);
        else
            on_connect(c, cqe->res);
    }
    io_uring_cq_advance(&r->ring, seen);
    serve_starved(r);
    buf_publish(r);
}

int
ring_conn_close(struct conn *c, int reset)
{
    struct ring *r = c->w->ring;
    struct linger lg = {1, 0};
    int i;

    c->ring_closed = 1;
    if (c->state == CONN_RELAY)
        unstarve(r, c);
    if (reset) {
        setsockopt(c->cio.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        if (c->bio.fd >= 0)
            setsockopt(c->bio.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    if (c->ring_inflight == 0) {
        conn_release(r, c);
        return 0;
    }
    if (c->ring_connect && io_uring_sq_ready(&r->ring) > 0)
        io_uring_submit(&r->ring); /* see ring_connect() */
    if (c->ring_connect && !c->ring_timeout)
        cancel(r, c, OP_CONNECT);
    for (i = 0; c->state == CONN_RELAY && i < 2; i++) {
        const struct half *h = half_of(c, i);
        if ((h->rflags & (RF_ARMED | RF_CANCEL)) == RF_ARMED)
            cancel(r, c, OP_RECV + i);
        if (h->rflags & RF_SENDING)
            cancel(r, c, OP_SEND + i);
    }
    return 1;
}

void
ring_park(struct conn *c)
{
    struct ring *r = c->w->ring;

    c->prev = NULL;
    c->next = r->parked;
    if (r->parked != NULL)
        r->parked->prev = c;
    r->parked = c;
}
