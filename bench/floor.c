/*
 * floor.c - ferry-floor: the least a TCP relay can do, so that ferry's cost
 * can be compared with the kernel's floor rather than only with other
 * proxies (issue: performance, "where ferry cannot reach a target, prove
 * where the floor is").
 *
 *   ferry-floor LISTEN_ADDR:PORT BACKEND_ADDR:PORT
 *
 * Addresses are IP literals, "127.0.0.1:18083" or "[::1]:18083". It runs
 * until killed (SIGTERM or SIGINT end it at once, open connections and
 * all).
 *
 * It is a measuring stick, not a proxy to deploy. Deliberately left out:
 * no health checks, no retries (a failed connect closes the client), no
 * timeouts of any kind (a silent peer holds its connection forever), no
 * balancing (one backend), no configuration, reload, drain, metrics,
 * logging or statistics, no limit on connections, no reset on errors (a
 * plain close), no fairness between connections (one is relayed until a
 * side would block), and no care for running out of descriptors beyond
 * retrying the accept when a connection closes.
 *
 * What it does, with the fewest system calls found:
 *  - one thread, one epoll set; every socket is added once, edge-triggered
 *    for reading, writing and the peer's FIN (EPOLLRDHUP), and never
 *    modified or deleted (close() removes it);
 *  - readiness is remembered per socket: a read shorter than the buffer
 *    means the socket is drained, so the read that would fail with EAGAIN
 *    is not made; with EPOLLRDHUP already seen, a short read also means the
 *    FIN follows, so the read that would return 0 is not made either;
 *  - accept4() with SOCK_NONBLOCK until the queue is empty; TCP_NODELAY is
 *    set once on the listener and inherited by every accepted socket (the
 *    backend socket needs its own setsockopt);
 *  - connect() without waiting, no getsockopt(SO_ERROR): the first event
 *    on the backend socket says whether it connected (EPOLLOUT) or failed
 *    (EPOLLERR);
 *  - recv() into one scratch buffer, send() straight on; only what the
 *    destination cannot take is copied aside, and that side is not read
 *    again until it has drained (back-pressure);
 *  - a FIN is passed on with shutdown(SHUT_WR), except the second one,
 *    which the close() that follows sends anyway.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "raddr.h"

#define FLOOR_BUF_SIZE  (32 * 1024) /* as ferry's WORKER_BUF_SIZE */
#define FLOOR_MAXEVENTS 256

struct conn;

/* One socket and what epoll last told about it. */
struct sock {
    struct conn *c; /* NULL for the listener */
    int fd;
    uint8_t in;    /* readable: bytes or FIN may wait */
    uint8_t out;   /* writable */
    uint8_t rdhup; /* the peer's FIN has arrived */
};

/* One direction. <buf> holds what the destination could not take yet. */
struct half {
    char *buf;
    uint32_t off, len;
    uint8_t eof;  /* the FIN was read */
    uint8_t shut; /* the FIN was passed on */
};

struct conn {
    struct sock cli, be;
    struct half c2b, b2c;
    uint8_t connected;
    uint8_t dead;      /* closed; freed once the event batch is done */
    struct conn *next; /* free list and dead list */
};

enum pump_rc {
    PUMP_OK = 0,
    PUMP_ERR,
};

static struct {
    int ep;
    struct sock lsn;
    struct sockaddr_storage be_addr;
    socklen_t be_len;
    char *scratch;
    struct conn *free_conns;
    struct conn *dead;  /* closed during the current batch */
    int accept_blocked; /* out of descriptors: accept when one frees */
} fl;

static int
watch(struct sock *s)
{
    struct epoll_event ev = {
        .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
        .data.ptr = s,
    };

    return epoll_ctl(fl.ep, EPOLL_CTL_ADD, s->fd, &ev);
}

static void
conn_close(struct conn *c)
{
    close(c->cli.fd);
    if (c->be.fd >= 0)
        close(c->be.fd);
    free(c->c2b.buf);
    free(c->b2c.buf);
    c->dead = 1;
    c->next = fl.dead;
    fl.dead = c;
}

/* Move what can move from <src> to <dst>; pass the FIN on once all bytes
 * before it are through. */
static enum pump_rc
pump(struct conn *c, struct half *h, struct sock *src, struct sock *dst)
{
    const struct half *other = h == &c->c2b ? &c->b2c : &c->c2b;
    ssize_t n, m;

    if (h->len > 0 && dst->out) {
        n = send(dst->fd, h->buf + h->off, h->len, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN)
            return PUMP_ERR;
        n = n < 0 ? 0 : n;
        h->off += (uint32_t)n;
        h->len -= (uint32_t)n;
        if (h->len > 0)
            dst->out = 0;
    }
    while (h->len == 0 && !h->eof && src->in && dst->out) {
        n = recv(src->fd, fl.scratch, FLOOR_BUF_SIZE, 0);
        if (n < 0) {
            if (errno != EAGAIN)
                return PUMP_ERR;
            src->in = 0;
            break;
        }
        if (n < FLOOR_BUF_SIZE) {
            /* Drained: the next bytes bring a new edge. */
            src->in = 0;
            h->eof = n == 0 || src->rdhup;
            if (n == 0)
                break;
        }
        m = send(dst->fd, fl.scratch, (size_t)n, MSG_NOSIGNAL);
        if (m < 0 && errno != EAGAIN)
            return PUMP_ERR;
        m = m < 0 ? 0 : m;
        if (m < n) {
            dst->out = 0;
            if (h->buf == NULL && (h->buf = malloc(FLOOR_BUF_SIZE)) == NULL)
                return PUMP_ERR;
            h->off = 0;
            h->len = (uint32_t)(n - m);
            memcpy(h->buf, fl.scratch + m, h->len);
        }
    }
    if (h->eof && h->len == 0 && !h->shut) {
        /* The second FIN goes out with the close() that follows. */
        if (!other->shut && shutdown(dst->fd, SHUT_WR) < 0)
            return PUMP_ERR;
        h->shut = 1;
    }
    return PUMP_OK;
}

static void
conn_on_event(struct sock *s, uint32_t ev)
{
    struct conn *c = s->c;

    if (c->dead)
        return;
    if (ev & EPOLLERR) {
        conn_close(c);
        return;
    }
    s->in |= (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) != 0;
    s->rdhup |= (ev & (EPOLLRDHUP | EPOLLHUP)) != 0;
    s->out |= (ev & EPOLLOUT) != 0;
    if (s == &c->be && s->out)
        c->connected = 1;
    if (!c->connected)
        return;
    if (pump(c, &c->c2b, &c->cli, &c->be) != PUMP_OK
        || pump(c, &c->b2c, &c->be, &c->cli) != PUMP_OK
        || (c->c2b.shut && c->b2c.shut))
        conn_close(c);
}

static struct conn *
conn_new(int cfd)
{
    struct conn *c = fl.free_conns;

    if (c != NULL)
        fl.free_conns = c->next;
    else if ((c = malloc(sizeof(*c))) == NULL)
        return NULL;
    memset(c, 0, sizeof(*c));
    c->cli.c = c->be.c = c;
    c->cli.fd = cfd;
    c->be.fd = -1;
    return c;
}

static void
conn_start(int cfd)
{
    struct conn *c = conn_new(cfd);
    int one = 1, fd;

    if (c == NULL) {
        close(cfd);
        return;
    }
    fd = socket(fl.be_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        fl.accept_blocked = errno == EMFILE || errno == ENFILE;
        conn_close(c);
        return;
    }
    c->be.fd = fd;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if ((connect(fd, (struct sockaddr *)&fl.be_addr, fl.be_len) < 0
         && errno != EINPROGRESS)
        || watch(&c->cli) < 0 || watch(&c->be) < 0)
        conn_close(c);
}

static void
accept_all(void)
{
    if (raddr_accept_all(fl.lsn.fd, conn_start))
        fl.accept_blocked = 1;
}

/* Free what the batch closed: later events of the batch may still have
 * pointed at it. */
static void
reap(void)
{
    struct conn *c;

    while ((c = fl.dead) != NULL) {
        fl.dead = c->next;
        c->next = fl.free_conns;
        fl.free_conns = c;
        if (fl.accept_blocked) {
            fl.accept_blocked = 0;
            accept_all();
        }
    }
}

static void
run(void)
{
    struct epoll_event evs[FLOOR_MAXEVENTS];
    int i, n;

    for (;;) {
        n = epoll_wait(fl.ep, evs, FLOOR_MAXEVENTS, -1);
        for (i = 0; i < n; i++) {
            struct sock *s = evs[i].data.ptr;
            if (s->c == NULL)
                accept_all();
            else
                conn_on_event(s, evs[i].events);
        }
        reap();
    }
}

int
main(int argc, char **argv)
{
    struct sockaddr_storage la;
    socklen_t llen;

    if (argc != 3 || raddr_parse(argv[1], &la, &llen) < 0
        || raddr_parse(argv[2], &fl.be_addr, &fl.be_len) < 0) {
        fprintf(stderr, "usage: ferry-floor LISTEN_ADDR:PORT "
                        "BACKEND_ADDR:PORT (IP literals)\n");
        return 2;
    }
    fl.scratch = malloc(FLOOR_BUF_SIZE);
    fl.ep = epoll_create1(0);
    fl.lsn.fd = raddr_listen(&la, llen, 1);
    if (fl.scratch == NULL || fl.ep < 0 || fl.lsn.fd < 0
        || watch(&fl.lsn) < 0) {
        fprintf(stderr, "ferry-floor: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    fprintf(stderr, "ferry-floor: %s -> %s\n", argv[1], argv[2]);
    run();
    return 0;
}
