/*
 * uring.c - ferry-uring: ferry-floor's relay on io_uring instead of epoll
 * (issue 18: go below the epoll floor), to measure what the ring saves.
 *
 *   ferry-uring LISTEN_ADDR:PORT BACKEND_ADDR:PORT
 *
 * Same command line and semantics as ferry-floor (floor.c), and the same
 * omissions: one backend, no retries, no timeouts, no limits, no logging.
 * A refused backend closes the client; a FIN is passed on with a shutdown
 * of the other side's write half once every byte before it is through;
 * the connection closes when both FINs are through or on any error.
 *
 * How it uses the ring (kernel 6.0 or later; checked at start):
 *  - one ring, one thread; one io_uring_submit_and_wait() per loop turn
 *    submits everything the last batch of completions queued and waits for
 *    the next ones. With IORING_SETUP_DEFER_TASKRUN (6.1) the kernel runs
 *    completion work only inside that call, not on every interrupt;
 *  - one multishot accept on the listener: each new connection is a
 *    completion, no system call;
 *  - the backend socket is made with socket() and setsockopt(TCP_NODELAY)
 *    (two system calls, as the floor), and connected by IORING_OP_CONNECT;
 *  - one multishot receive per socket into a shared ring of provided
 *    buffers (RELAY_NBUF buffers of RELAY_BUF_SIZE): a socket holds a
 *    buffer only while its bytes wait to be sent, so an idle connection
 *    holds none;
 *  - the received buffer is sent as it is (no copy); one send in flight
 *    per direction keeps the order. A short send is resubmitted from where
 *    it stopped;
 *  - back-pressure: when RELAY_HIGH buffers wait in one direction, its
 *    receive is cancelled (the buffers that were already on their way are
 *    queued too) and re-armed once the queue is empty; a receive ended by
 *    ENOBUFS (no free buffer) waits for a buffer to come back;
 *  - the closing of a connection: a shutdown(SHUT_RDWR) of both sockets
 *    wakes what is still in flight, and the two close() go through the
 *    ring once nothing refers to the connection any more.
 *
 * liburing 2.3 (Debian 12) has no io_uring_setup_buf_ring(): the buffer
 * ring is mapped here and registered with io_uring_register_buf_ring().
 */
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "raddr.h"

#define RELAY_BUF_SIZE (32 * 1024) /* as the floor's and ferry's */
#define RELAY_NBUF     256         /* power of two, at most 32768 */
#define RELAY_BGID     1
#define RELAY_HIGH     8    /* buffers queued in one direction: stop it */
#define RELAY_ENTRIES  4096 /* submission queue; completions twice that */
#define RELAY_NONE     0xffff

/* user_data: a struct conn pointer (8-aligned) with the operation in the
 * low 3 bits; the pointer is NULL for the listener and for operations
 * whose completion nobody waits for. */
enum relay_op {
    OP_IGNORE = 0,
    OP_CONNECT = 1,
    OP_RECV = 2,  /* + half */
    OP_SEND = 4,  /* + half */
    OP_SHUT = 6,
    OP_ACCEPT = 7,
};

/* One direction: half 0 client -> backend, half 1 backend -> client.
 * <head>..<tail> is a list of buffer ids through rl.next[]. */
struct half {
    uint16_t head, tail;
    uint16_t queued;
    uint32_t off; /* bytes of <head> already sent */
    uint8_t recv_armed;
    uint8_t cancelling;
    uint8_t sending;
    uint8_t eof;     /* the FIN was received */
    uint8_t shut;    /* the FIN was passed on */
    uint8_t starved; /* the receive ended for want of a buffer */
};

struct conn {
    int fd[2]; /* client, backend */
    struct half h[2];
    unsigned inflight; /* operations whose last completion has not come */
    uint8_t connected;
    uint8_t closing;
    struct conn *next;         /* free list */
    struct conn *sprev, *snext; /* list of connections out of buffers */
} __attribute__((aligned(8)));

static struct {
    struct io_uring ring;
    struct io_uring_buf_ring *br;
    char *bufs;
    uint32_t blen[RELAY_NBUF];
    uint16_t next[RELAY_NBUF];
    unsigned recycled; /* buffers handed back in this batch */
    int lsn;
    struct sockaddr_storage be_addr;
    socklen_t be_len;
    struct conn *free_conns;
    int accept_armed;
    int accept_blocked; /* out of descriptors: re-arm when one frees */
    struct conn *starved; /* connections waiting for a buffer */
} rl;

static void conn_drive(struct conn *c, int i);
static void starve(struct conn *c, int i);
static void unstarve(struct conn *c);

static struct io_uring_sqe *
sqe_get(void)
{
    struct io_uring_sqe *sqe;

    while ((sqe = io_uring_get_sqe(&rl.ring)) == NULL)
        io_uring_submit(&rl.ring);
    return sqe;
}

static struct io_uring_sqe *
sqe_conn(struct conn *c, enum relay_op op)
{
    struct io_uring_sqe *sqe = sqe_get();

    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | op);
    if (c != NULL && op != OP_IGNORE)
        c->inflight++;
    return sqe;
}

static void
accept_arm(void)
{
    struct io_uring_sqe *sqe = sqe_get();

    io_uring_prep_multishot_accept(sqe, rl.lsn, NULL, NULL, 0);
    io_uring_sqe_set_data64(sqe, OP_ACCEPT);
    rl.accept_armed = 1;
}

static void
buf_recycle(uint16_t bid)
{
    io_uring_buf_ring_add(rl.br, rl.bufs + (size_t)bid * RELAY_BUF_SIZE,
                          RELAY_BUF_SIZE, bid,
                          io_uring_buf_ring_mask(RELAY_NBUF), (int)rl.recycled);
    rl.recycled++;
}

static void
recv_arm(struct conn *c, int i)
{
    struct io_uring_sqe *sqe = sqe_conn(c, OP_RECV + i);

    io_uring_prep_recv_multishot(sqe, c->fd[i], NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = RELAY_BGID;
    c->h[i].recv_armed = 1;
}

static void
send_head(struct conn *c, int i)
{
    struct half *h = &c->h[i];
    struct io_uring_sqe *sqe = sqe_conn(c, OP_SEND + i);

    io_uring_prep_send(sqe, c->fd[!i],
                       rl.bufs + (size_t)h->head * RELAY_BUF_SIZE + h->off,
                       rl.blen[h->head] - h->off, MSG_NOSIGNAL);
    h->sending = 1;
}

/* Start closing <c>: wake what is in flight; conn_free() ends it. */
static void
conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (!c->connected || c->h[0].recv_armed || c->h[1].recv_armed
        || c->h[0].sending || c->h[1].sending) {
        shutdown(c->fd[0], SHUT_RDWR);
        shutdown(c->fd[1], SHUT_RDWR);
    }
}

static void
conn_free(struct conn *c)
{
    int i;

    for (i = 0; i < 2; i++) {
        struct half *h = &c->h[i];
        while (h->head != RELAY_NONE) {
            buf_recycle(h->head);
            h->head = rl.next[h->head];
        }
        if (c->fd[i] >= 0)
            io_uring_prep_close(sqe_conn(NULL, OP_IGNORE), c->fd[i]);
    }
    unstarve(c);
    c->next = rl.free_conns;
    rl.free_conns = c;
    if (rl.accept_blocked && !rl.accept_armed) {
        rl.accept_blocked = 0;
        accept_arm();
    }
}

/* After each completion about <c>: queue what can go now. */
static void
conn_drive(struct conn *c, int i)
{
    struct half *h = &c->h[i];

    if (c->closing || !c->connected)
        return;
    if (h->head != RELAY_NONE && !h->sending)
        send_head(c, i);
    if (h->queued >= RELAY_HIGH && h->recv_armed && !h->cancelling) {
        io_uring_prep_cancel64(sqe_conn(NULL, OP_IGNORE),
                               (uint64_t)(uintptr_t)c | (OP_RECV + i), 0);
        h->cancelling = 1;
    }
    if (h->queued == 0 && !h->recv_armed && !h->eof && !h->starved)
        recv_arm(c, i);
    if (h->eof && h->queued == 0 && !h->shut) {
        /* The second FIN goes out with the close() that follows. */
        if (!c->h[!i].shut)
            io_uring_prep_shutdown(sqe_conn(c, OP_SHUT), c->fd[!i], SHUT_WR);
        h->shut = 1;
    }
    if (c->h[0].shut && c->h[1].shut)
        conn_close(c);
}

static void
on_recv(struct conn *c, int i, const struct io_uring_cqe *cqe)
{
    struct half *h = &c->h[i];

    if (cqe->flags & IORING_CQE_F_BUFFER) {
        uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        if (cqe->res <= 0 || c->closing) {
            buf_recycle(bid);
        } else {
            rl.blen[bid] = (uint32_t)cqe->res;
            rl.next[bid] = RELAY_NONE;
            if (h->head == RELAY_NONE)
                h->head = bid;
            else
                rl.next[h->tail] = bid;
            h->tail = bid;
            h->queued++;
        }
    }
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        h->recv_armed = 0;
        h->cancelling = 0;
    }
    if (cqe->res == 0)
        h->eof = 1;
    else if (cqe->res == -ENOBUFS)
        starve(c, i);
    else if (cqe->res < 0 && cqe->res != -ECANCELED && cqe->res != -ENOBUFS)
        conn_close(c);
}

static void
on_send(struct conn *c, int i, int res)
{
    struct half *h = &c->h[i];

    h->sending = 0;
    if (res < 0 || c->closing) {
        conn_close(c);
        return;
    }
    h->off += (uint32_t)res;
    if (h->off < rl.blen[h->head])
        return; /* short send: the rest goes next */
    buf_recycle(h->head);
    h->head = rl.next[h->head];
    h->off = 0;
    if (--h->queued == 0)
        h->tail = RELAY_NONE;
}

static struct conn *
conn_new(int cfd)
{
    struct conn *c = rl.free_conns;
    int one = 1, i;

    if (c != NULL)
        rl.free_conns = c->next;
    else if ((c = malloc(sizeof(*c))) == NULL) {
        close(cfd);
        return NULL;
    }
    memset(c, 0, sizeof(*c));
    for (i = 0; i < 2; i++)
        c->h[i].head = c->h[i].tail = RELAY_NONE;
    c->fd[0] = cfd;
    c->fd[1] = socket(rl.be_addr.ss_family, SOCK_STREAM, 0);
    if (c->fd[1] < 0) {
        rl.accept_blocked = errno == EMFILE || errno == ENFILE;
        conn_free(c);
        return NULL;
    }
    setsockopt(c->fd[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    io_uring_prep_connect(sqe_conn(c, OP_CONNECT), c->fd[1],
                          (struct sockaddr *)&rl.be_addr, rl.be_len);
    return c;
}

static void
on_accept(const struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE))
        rl.accept_armed = 0;
    if (cqe->res >= 0)
        conn_new(cqe->res);
    else if (cqe->res == -EMFILE || cqe->res == -ENFILE
             || cqe->res == -ENOBUFS || cqe->res == -ENOMEM)
        rl.accept_blocked = 1;
    if (!rl.accept_armed && !rl.accept_blocked)
        accept_arm();
}

static void
on_cqe(const struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    struct conn *c = (struct conn *)(uintptr_t)(ud & ~(uint64_t)7);
    unsigned op = ud & 7;
    int last = !(cqe->flags & IORING_CQE_F_MORE);

    if (op == OP_ACCEPT) {
        on_accept(cqe);
        return;
    }
    if (c == NULL)
        return;
    switch (op) {
    case OP_CONNECT:
        if (cqe->res < 0)
            conn_close(c);
        c->connected = 1;
        break;
    case OP_RECV:
    case OP_RECV + 1:
        on_recv(c, op - OP_RECV, cqe);
        break;
    case OP_SEND:
    case OP_SEND + 1:
        on_send(c, op - OP_SEND, cqe->res);
        break;
    case OP_SHUT:
        if (cqe->res < 0)
            conn_close(c);
        break;
    }
    if (last)
        c->inflight--;
    conn_drive(c, 0);
    conn_drive(c, 1);
    /* Closing takes no new operation: the last completion frees. */
    if (c->closing && c->inflight == 0)
        conn_free(c);
}

static void
starve(struct conn *c, int i)
{
    if (c->h[i].starved)
        return;
    c->h[i].starved = 1;
    if (c->h[!i].starved)
        return; /* already listed */
    c->sprev = NULL;
    c->snext = rl.starved;
    if (rl.starved != NULL)
        rl.starved->sprev = c;
    rl.starved = c;
}

static void
unstarve(struct conn *c)
{
    c->h[0].starved = c->h[1].starved = 0;
    if (c->sprev != NULL)
        c->sprev->snext = c->snext;
    else if (rl.starved == c)
        rl.starved = c->snext;
    if (c->snext != NULL)
        c->snext->sprev = c->sprev;
    c->sprev = c->snext = NULL;
}

/* Buffers came back: the receives that ran out of them try again. */
static void
feed_starved(void)
{
    struct conn *c;

    while ((c = rl.starved) != NULL) {
        unstarve(c);
        conn_drive(c, 0);
        conn_drive(c, 1);
    }
}

static void
run(void)
{
    struct io_uring_cqe *cqe;
    unsigned head, n;
    int rc;

    for (;;) {
        rc = io_uring_submit_and_wait(&rl.ring, 1);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            fprintf(stderr, "ferry-uring: io_uring_enter: %s\n", strerror(-rc));
            exit(1);
        }
        n = 0;
        io_uring_for_each_cqe(&rl.ring, head, cqe) {
            on_cqe(cqe);
            n++;
        }
        io_uring_cq_advance(&rl.ring, n);
        if (rl.recycled > 0) {
            io_uring_buf_ring_advance(rl.br, (int)rl.recycled);
            rl.recycled = 0;
            feed_starved();
        }
    }
}

/* What this relay needs beyond io_uring itself, checked before it
 * listens, so that a missing feature is named rather than seen as relay
 * errors. Returns 0, or -1 having said why. */
static int
check_kernel(void)
{
    static const struct {
        int op;
        const char *name;
    } ops[] = {
        {IORING_OP_ACCEPT, "ACCEPT"},     {IORING_OP_CONNECT, "CONNECT"},
        {IORING_OP_RECV, "RECV"},         {IORING_OP_SEND, "SEND"},
        {IORING_OP_SHUTDOWN, "SHUTDOWN"}, {IORING_OP_CLOSE, "CLOSE"},
        {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
    };
    struct io_uring_probe *probe = io_uring_get_probe_ring(&rl.ring);
    struct utsname u;
    int major = 0, minor = 0, bad = 0;
    size_t i;

    if (probe == NULL) {
        fprintf(stderr, "ferry-uring: cannot probe io_uring opcodes\n");
        return -1;
    }
    for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        if (!io_uring_opcode_supported(probe, ops[i].op)) {
            fprintf(stderr, "ferry-uring: this kernel lacks IORING_OP_%s\n",
                    ops[i].name);
            bad = 1;
        }
    }
    io_uring_free_probe(probe);
    /* Multishot receive (6.0) has no opcode of its own to probe. */
    if (uname(&u) == 0 && sscanf(u.release, "%d.%d", &major, &minor) == 2
        && major < 6) {
        fprintf(stderr, "ferry-uring: kernel %s: multishot receive needs "
                        "6.0 or later\n", u.release);
        bad = 1;
    }
    return bad ? -1 : 0;
}

static int
ring_init(void)
{
    struct io_uring_params p;
    struct io_uring_buf_reg reg;
    size_t brsize = RELAY_NBUF * sizeof(struct io_uring_buf);
    unsigned i;
    int rc;

    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL
              | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER
              | IORING_SETUP_DEFER_TASKRUN;
    p.cq_entries = 2 * RELAY_ENTRIES;
    rc = io_uring_queue_init_params(RELAY_ENTRIES, &rl.ring, &p);
    if (rc == -EINVAL) {
        /* Before 6.1: without deferred task work. */
        fprintf(stderr, "ferry-uring: no IORING_SETUP_DEFER_TASKRUN "
                        "(kernel before 6.1): completions run on interrupt\n");
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = 2 * RELAY_ENTRIES;
        rc = io_uring_queue_init_params(RELAY_ENTRIES, &rl.ring, &p);
    }
    if (rc < 0) {
        fprintf(stderr, "ferry-uring: io_uring_setup: %s%s\n", strerror(-rc),
                rc == -EPERM || rc == -ENOSYS
                    ? " (io_uring disabled: kernel.io_uring_disabled, "
                      "seccomp, or a kernel built without it)"
                    : "");
        return -1;
    }
    if (check_kernel() < 0)
        return -1;
    rl.br = mmap(NULL, brsize, PROT_READ | PROT_WRITE,
                 MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    rl.bufs = malloc((size_t)RELAY_NBUF * RELAY_BUF_SIZE);
    if (rl.br == MAP_FAILED || rl.bufs == NULL) {
        fprintf(stderr, "ferry-uring: out of memory\n");
        return -1;
    }
    io_uring_buf_ring_init(rl.br);
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)rl.br;
    reg.ring_entries = RELAY_NBUF;
    reg.bgid = RELAY_BGID;
    rc = io_uring_register_buf_ring(&rl.ring, &reg, 0);
    if (rc < 0) {
        fprintf(stderr, "ferry-uring: registering the buffer ring: %s "
                        "(needs kernel 5.19 or later)\n", strerror(-rc));
        return -1;
    }
    for (i = 0; i < RELAY_NBUF; i++)
        buf_recycle((uint16_t)i);
    io_uring_buf_ring_advance(rl.br, (int)rl.recycled);
    rl.recycled = 0;
    return 0;
}

int
main(int argc, char **argv)
{
    struct sockaddr_storage la;
    socklen_t llen;

    if (argc != 3 || raddr_parse(argv[1], &la, &llen) < 0
        || raddr_parse(argv[2], &rl.be_addr, &rl.be_len) < 0) {
        fprintf(stderr, "usage: ferry-uring LISTEN_ADDR:PORT "
                        "BACKEND_ADDR:PORT (IP literals)\n");
        return 2;
    }
    if (ring_init() < 0)
        return 1;
    rl.lsn = raddr_listen(&la, llen, 0);
    if (rl.lsn < 0) {
        fprintf(stderr, "ferry-uring: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    accept_arm();
    fprintf(stderr, "ferry-uring: %s -> %s\n", argv[1], argv[2]);
    run();
    return 0;
}
