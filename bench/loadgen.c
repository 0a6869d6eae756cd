#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bnet.h"
#include "lathist.h"
#include "loadgen.h"
#include "parse.h"

#define LG_IO_ROUNDS    16
#define LG_RBUF         (256 * 1024)
#define LG_MAX_SLOTS    60000u
#define LG_MAX_SIZE     (64u * 1024)
#define LG_MAX_THREADS  64u
#define LG_MAX_RATE     1e6
/* Closer to its slot than this (--spin-us), the open loop polls without
 * sleeping: epoll's millisecond timeout would otherwise start units up to
 * 1 ms late and that lateness would be counted as latency. */
#define LG_SPIN_US      2000u

enum lg_mode {
    LG_CONNRATE = 0,
    LG_RR,
    LG_STREAM,
    LG_IDLE,
};

static const char *const lg_mode_names[] = {
    [LG_CONNRATE] = "connrate",
    [LG_RR] = "rr",
    [LG_STREAM] = "stream",
    [LG_IDLE] = "idle",
};

/* What one unit of --count is, per mode. */
static const char *const lg_unit_names[] = {
    [LG_CONNRATE] = "conn",
    [LG_RR] = "req",
    [LG_STREAM] = "byte",
    [LG_IDLE] = "conn",
};

enum lg_dir {
    LG_DIR_DOWN = 0,
    LG_DIR_UP,
    LG_DIR_BOTH,
};

static const char *const lg_dir_names[] = {
    [LG_DIR_DOWN] = "down",
    [LG_DIR_UP] = "up",
    [LG_DIR_BOTH] = "both",
};

enum lc_state {
    LC_FREE = 0,  /* no fd, not queued */
    LC_PENDING,   /* no fd, queued for a new connection */
    LC_CONNECTING,
    LC_SENDING,
    LC_RECEIVING,
    LC_STREAM,
    LC_HELD,      /* idle: checked and held */
    LC_IDLE,      /* rr --rate: connected, waiting for its next request */
};

struct lconn {
    ev_io io;
    int fd;
    enum lc_state state;
    uint64_t t0;        /* start of the timed operation, ns */
    size_t sent, recvd; /* within the current request */
    ev_tstamp deadline; /* loop time after which the sweep times it out */
    int unit;           /* --rate: carries a scheduled unit */
};

struct lg_opts {
    enum lg_mode mode;
    struct saddr target;
    char target_str[SADDR_STR_MAX];
    const char *label;
    double duration, timeout;
    uint64_t count, max_errors;
    unsigned concurrency, connections;
    size_t size, reply_size;
    enum lg_dir dir;
    double rate;      /* --rate: units per second, 0 = closed loop */
    uint64_t spin_ns; /* --spin-us */
    unsigned threads; /* -t */
    int quiet;
};

struct lg {
    struct ev_loop *loop;
    struct lg_opts o;
    struct lconn *c;
    unsigned nslots, busy;
    unsigned *queue; /* slot indexes waiting for lg_on_prepare */
    unsigned *batch; /* the queue as lg_drain_queue took it */
    unsigned nqueue;
    unsigned next_launch; /* idle: next slot to open */
    unsigned inflight;    /* idle: handshakes under way */
    uint64_t launched, done, held;
    uint64_t errors[BNET_ERR__COUNT], errors_total;
    uint64_t bytes_sent, bytes_recv;
    uint64_t t_start, t_end, t_established;
    int stopping, finished, holding_said;
    ev_timer dur_timer, sweep;
    ev_prepare prepare;
    ev_idle kick;
    ev_signal sigint, sigterm;
    struct lathist hist;
    /* Open loop (--rate): unit k is due at t_start + phase + k * every_ns
     * and timed from then, whether or not a connection was free. */
    uint64_t every_ns, phase_ns;
    uint64_t due;     /* units whose slot has come */
    uint64_t started; /* units begun; due - started are waiting */
    uint64_t missed;  /* units that found no free connection at their slot */
    uint64_t ol_inflight;
    int ol_ready; /* rr: the schedule starts once every connection is up */
    unsigned *free;   /* slots free (connrate) or connected and idle (rr) */
    unsigned nfree;
    ev_timer tick;
    ev_idle spin;
    ev_async stop;
    pthread_t thread;
    char rbuf[LG_RBUF];
};

/* All the run's threads; written before any starts, then only read. */
static struct lg **lg_all;
static unsigned lg_nall;


static void lg_on_io(struct ev_loop *loop, ev_io *w, int revents);

static void
lg_finish(struct lg *lg)
{
    if (lg->finished)
        return;
    lg->finished = 1;
    lg->stopping = 1;
    lg->t_end = bnet_now_ns();
    ev_break(lg->loop, EVBREAK_ALL);
}

static void
lg_watch(struct lg *lg, struct lconn *c, int events)
{
    ev_io_stop(lg->loop, &c->io);
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(lg->loop, &c->io);
}

static void
lg_close_fd(struct lg *lg, struct lconn *c)
{
    ev_io_stop(lg->loop, &c->io);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* Queue slot <c> for lg_on_prepare, which starts its next connection (or
 * for idle, the next slot's). Never starts one here: a refused connect
 * would otherwise recurse. */
static void
lg_requeue(struct lg *lg, struct lconn *c)
{
    lg_close_fd(lg, c);
    if (c->state != LC_HELD)
        c->state = LC_PENDING;
    lg->queue[lg->nqueue++] = (unsigned)(c - lg->c);
    if (!ev_is_active(&lg->kick))
        ev_idle_start(lg->loop, &lg->kick);
}

static void
lg_fail(struct lg *lg, struct lconn *c, enum bnet_err kind)
{
    lg->errors[kind]++;
    lg->errors_total++;
    if (c->unit) {
        c->unit = 0;
        lg->ol_inflight--;
    }
    if (lg->errors_total >= lg->o.max_errors)
        lg->stopping = 1;
    if (lg->o.mode == LG_IDLE) {
        if (c->state == LC_HELD)
            lg->held--;
        else
            lg->inflight--;
    }
    c->state = LC_PENDING;
    lg_requeue(lg, c);
}

/* Claim one unit of work, or say the run has enough. */
static int
lg_take_unit(struct lg *lg)
{
    if (lg->stopping || lg->launched >= lg->o.count)
        return 0;
    lg->launched++;
    return 1;
}

static size_t
lg_req_len(const struct lg *lg)
{
    return lg->o.mode == LG_IDLE ? 1 : lg->o.size;
}

static size_t
lg_rep_len(const struct lg *lg)
{
    return lg->o.mode == LG_IDLE ? 1 : lg->o.reply_size;
}

static void
lg_send(struct lg *lg, struct lconn *c)
{
    size_t plen, want = lg_req_len(lg);
    const char *pat = bnet_pattern(&plen);

    while (c->sent < want) {
        size_t n = want - c->sent < plen ? want - c->sent : plen;
        ssize_t w = send(c->fd, pat, n, MSG_NOSIGNAL);

        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                if (c->state != LC_SENDING) {
                    c->state = LC_SENDING;
                    lg_watch(lg, c, EV_WRITE);
                }
                return;
            }
            lg_fail(lg, c, bnet_err_from_errno(-errno));
            return;
        }
        c->sent += (size_t)w;
        lg->bytes_sent += (uint64_t)w;
    }
    c->state = LC_RECEIVING;
    lg_watch(lg, c, EV_READ);
}

static void
lg_begin_request(struct lg *lg, struct lconn *c, uint64_t t0)
{
    c->t0 = t0;
    c->sent = c->recvd = 0;
    c->deadline = ev_now(lg->loop) + lg->o.timeout;
    lg_send(lg, c);
}

static void
lg_reply_done(struct lg *lg, struct lconn *c)
{
    lathist_add(&lg->hist, bnet_now_ns() - c->t0);
    lg->done++;
    if (c->unit) {
        c->unit = 0;
        lg->ol_inflight--;
        if (lg->o.mode == LG_RR) { /* back to the pool; the pump sends */
            ev_io_stop(lg->loop, &c->io);
            c->state = LC_IDLE;
            c->deadline = INFINITY;
            lg->free[lg->nfree++] = (unsigned)(c - lg->c);
            return;
        }
    }
    switch (lg->o.mode) {
    case LG_CONNRATE:
        lg_requeue(lg, c);
        break;
    case LG_RR:
        if (lg_take_unit(lg)) {
            lg_begin_request(lg, c, bnet_now_ns());
        } else {
            c->state = LC_PENDING;
            lg_requeue(lg, c); /* lg_on_prepare frees it */
        }
        break;
    case LG_IDLE:
        c->state = LC_HELD;
        c->deadline = INFINITY;
        lg->held++;
        lg_watch(lg, c, EV_READ); /* to notice the proxy closing it */
        lg->inflight--;
        lg->queue[lg->nqueue++] = (unsigned)(c - lg->c);
        if (!ev_is_active(&lg->kick))
            ev_idle_start(lg->loop, &lg->kick);
        break;
    default:
        break;
    }
}

static void
lg_recv(struct lg *lg, struct lconn *c)
{
    size_t want = lg_rep_len(lg);
    int round;

    for (round = 0; round < LG_IO_ROUNDS; round++) {
        ssize_t r = recv(c->fd, lg->rbuf, sizeof(lg->rbuf), 0);

        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            lg_fail(lg, c, bnet_err_from_errno(-errno));
            return;
        }
        if (r == 0) {
            lg_fail(lg, c, BNET_ERR_SHORT_READ);
            return;
        }
        lg->bytes_recv += (uint64_t)r;
        c->recvd += (size_t)r;
        if (c->recvd >= want) {
            lg_reply_done(lg, c);
            return;
        }
    }
}

static void
lg_stream_io(struct lg *lg, struct lconn *c, int revents)
{
    size_t plen;
    const char *pat = bnet_pattern(&plen);
    size_t chunk = lg->o.size < plen ? lg->o.size : plen;
    int round;

    c->deadline = ev_now(lg->loop) + lg->o.timeout;
    for (round = 0; (revents & EV_READ) && round < LG_IO_ROUNDS; round++) {
        ssize_t r = recv(c->fd, lg->rbuf, sizeof(lg->rbuf), 0);

        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            lg_fail(lg, c, bnet_err_from_errno(-errno));
            return;
        }
        if (r == 0) {
            lg_fail(lg, c, BNET_ERR_SHORT_READ);
            return;
        }
        lg->bytes_recv += (uint64_t)r;
        lg->done += (uint64_t)r;
    }
    for (round = 0; (revents & EV_WRITE) && round < LG_IO_ROUNDS; round++) {
        ssize_t w = send(c->fd, pat, chunk, MSG_NOSIGNAL);

        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            lg_fail(lg, c, bnet_err_from_errno(-errno));
            return;
        }
        lg->bytes_sent += (uint64_t)w;
        lg->done += (uint64_t)w;
    }
    if (lg->done >= lg->o.count)
        lg_finish(lg);
}

static void
lg_connected(struct lg *lg, struct lconn *c)
{
    switch (lg->o.mode) {
    case LG_CONNRATE:
    case LG_IDLE:
        c->sent = c->recvd = 0;
        lg_send(lg, c); /* timed from the connect */
        break;
    case LG_RR:
        if (lg->o.rate > 0) {
            c->state = LC_IDLE;
            ev_io_stop(lg->loop, &c->io);
            c->deadline = INFINITY;
            lg->free[lg->nfree++] = (unsigned)(c - lg->c);
        } else if (lg_take_unit(lg)) {
            lg_begin_request(lg, c, bnet_now_ns());
        } else {
            c->state = LC_PENDING;
            lg_requeue(lg, c);
        }
        break;
    case LG_STREAM:
        c->state = LC_STREAM;
        c->deadline = ev_now(lg->loop) + lg->o.timeout;
        lg_watch(lg, c,
                 lg->o.dir == LG_DIR_DOWN ? EV_READ : EV_READ | EV_WRITE);
        break;
    }
}

static void
lg_start_connect(struct lg *lg, struct lconn *c, uint64_t t0)
{
    int done = 0, fd;

    c->t0 = t0;
    c->deadline = ev_now(lg->loop) + lg->o.timeout;
    fd = bnet_connect(&lg->o.target, &done);
    if (fd < 0) {
        c->fd = -1;
        lg_fail(lg, c, bnet_err_from_errno(fd));
        return;
    }
    c->fd = fd;
    ev_io_set(&c->io, fd, EV_WRITE);
    if (done) {
        c->state = LC_SENDING;
        lg_connected(lg, c);
        return;
    }
    c->state = LC_CONNECTING;
    ev_io_start(lg->loop, &c->io);
}

static void
lg_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct lg *lg = ev_userdata(loop);
    struct lconn *c = (struct lconn *)w;
    int r;

    if (lg->finished)
        return;
    switch (c->state) {
    case LC_CONNECTING:
        r = bnet_connect_result(c->fd);
        if (r < 0) {
            lg_fail(lg, c, bnet_err_from_errno(r));
            return;
        }
        c->state = LC_SENDING;
        lg_connected(lg, c);
        break;
    case LC_SENDING:
        lg_send(lg, c);
        break;
    case LC_RECEIVING:
        lg_recv(lg, c);
        break;
    case LC_STREAM:
        lg_stream_io(lg, c, revents);
        break;
    case LC_HELD:
        r = (int)recv(c->fd, lg->rbuf, sizeof(lg->rbuf), 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
            lg_fail(lg, c, r == 0 ? BNET_ERR_RESET
                                  : bnet_err_from_errno(-errno));
        break;
    default:
        ev_io_stop(loop, w);
        break;
    }
}

static void
lg_idle_say_holding(struct lg *lg)
{
    double secs;

    if (lg->holding_said || lg->next_launch < lg->nslots || lg->inflight > 0)
        return;
    lg->holding_said = 1;
    lg->t_established = bnet_now_ns();
    secs = (double)(lg->t_established - lg->t_start) / 1e9;
    printf("{\"event\":\"holding\",\"mode\":\"idle\",\"target\":\"%s\","
           "\"held\":%llu,\"errors_total\":%llu,\"open_s\":%.3f}\n",
           lg->o.target_str, (unsigned long long)lg->held,
           (unsigned long long)lg->errors_total, secs);
    fflush(stdout);
    if (lg->held == 0)
        lg_finish(lg);
}

/* idle: open the next slots while fewer than --concurrency handshakes run. */
static void
lg_idle_launch(struct lg *lg)
{
    while (!lg->stopping && lg->next_launch < lg->nslots
           && lg->inflight < lg->o.concurrency) {
        struct lconn *c = &lg->c[lg->next_launch++];

        lg->launched++;
        lg->inflight++;
        lg->busy++;
        lg_start_connect(lg, c, bnet_now_ns());
    }
}

static void
lg_restart_one(struct lg *lg, struct lconn *c)
{
    if (lg->o.mode == LG_IDLE) {
        if (c->state == LC_PENDING) { /* failed handshake or dropped hold */
            c->state = LC_FREE;
            lg->busy--;
        }
        return;
    }
    if (c->state != LC_PENDING)
        return;
    if (lg->o.rate > 0 && lg->o.mode == LG_CONNRATE) {
        c->state = LC_FREE; /* the pump starts the next unit on it */
        lg->busy--;
        lg->free[lg->nfree++] = (unsigned)(c - lg->c);
        return;
    }
    if (lg->o.rate > 0) { /* rr: reconnect while the run goes on */
        if (!lg->stopping) {
            lg_start_connect(lg, c, bnet_now_ns());
            return;
        }
    } else if (lg->o.mode == LG_CONNRATE ? lg_take_unit(lg)
                                  : !lg->stopping
                                        && lg->launched < lg->o.count) {
        lg_start_connect(lg, c, bnet_now_ns());
        return;
    }
    c->state = LC_FREE;
    lg->busy--;
}

/* Before the loop sleeps: start the connections that were queued. Only
 * the entries present on entry are handled; a connect that fails at once
 * queues again and waits for the next iteration. */
static void
lg_drain_queue(struct lg *lg)
{
    unsigned n = lg->nqueue, i;

    if (n == 0)
        return;
    memcpy(lg->batch, lg->queue, n * sizeof(*lg->batch));
    lg->nqueue = 0;
    for (i = 0; i < n && !lg->finished; i++)
        lg_restart_one(lg, &lg->c[lg->batch[i]]);
    if (lg->o.mode == LG_IDLE) {
        lg_idle_launch(lg);
        lg_idle_say_holding(lg);
    }
    if (lg->o.rate > 0)
        return;
    if (lg->busy == 0 && lg->nqueue == 0)
        lg_finish(lg);
}

static uint64_t
lg_slot_ns(const struct lg *lg, uint64_t k)
{
    return lg->t_start + lg->phase_ns + k * lg->every_ns;
}

/* Begin waiting units, oldest first, while a connection is free. Each is
 * timed from its slot, so time spent waiting counts as latency. */
static void
lg_ol_pump(struct lg *lg)
{
    while (!lg->finished && lg->started < lg->due && lg->nfree > 0) {
        struct lconn *c = &lg->c[lg->free[--lg->nfree]];
        uint64_t t0 = lg_slot_ns(lg, lg->started++);

        lg->launched++;
        lg->ol_inflight++;
        c->unit = 1;
        if (lg->o.mode == LG_CONNRATE) {
            lg->busy++;
            lg_start_connect(lg, c, t0);
        } else {
            lg_begin_request(lg, c, t0);
        }
    }
}

/* The open loop's clock: count the slots that have come, start what can
 * start, and wake up again for the next slot. */
static void
lg_ol_tick(struct lg *lg)
{
    uint64_t now = bnet_now_ns(), due = lg->due, waiting, next;

    if (lg->finished)
        return;
    if (!lg->ol_ready) {
        /* rr: connecting is not part of a request; start the clock when
         * every connection is up (or failed and counted). */
        if (lg->o.mode == LG_RR && lg->nfree < lg->nslots
            && !lg->stopping && now < lg->t_start + 1000000000u)
            return;
        lg->ol_ready = 1;
        if (lg->o.mode == LG_RR)
            lg->t_start = now;
    }
    if (!lg->stopping && now >= lg->t_start + lg->phase_ns) {
        due = (now - lg->t_start - lg->phase_ns) / lg->every_ns + 1;
        if (due > lg->o.count)
            due = lg->o.count;
    }
    if (due > lg->due) {
        uint64_t fresh = due - lg->due;

        lg->due = due;
        lg_ol_pump(lg);
        waiting = lg->due - lg->started;
        lg->missed += waiting < fresh ? waiting : fresh;
    } else {
        lg_ol_pump(lg);
    }
    if (lg->stopping || lg->due >= lg->o.count) {
        if (lg->ol_inflight == 0
            && (lg->stopping || lg->started >= lg->due))
            lg_finish(lg);
        ev_idle_stop(lg->loop, &lg->spin);
        return;
    }
    next = lg_slot_ns(lg, lg->due);
    if (next <= now + lg->o.spin_ns) {
        ev_timer_stop(lg->loop, &lg->tick);
        ev_idle_start(lg->loop, &lg->spin);
    } else {
        ev_idle_stop(lg->loop, &lg->spin);
        ev_timer_stop(lg->loop, &lg->tick);
        ev_timer_set(&lg->tick, (double)(next - now - lg->o.spin_ns) / 1e9,
                     0.);
        ev_timer_start(lg->loop, &lg->tick);
    }
}

static void
lg_on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    lg_ol_tick(ev_userdata(loop));
}

static void
lg_on_spin(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)w;
    (void)revents;
    lg_ol_tick(ev_userdata(loop));
    sched_yield(); /* a backend on this core gets its turn */
}

static void
lg_on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct lg *lg = ev_userdata(loop);

    (void)w;
    (void)revents;
    lg_drain_queue(lg);
    if (lg->o.rate > 0)
        lg_ol_tick(lg);
}

static void
lg_on_kick(struct ev_loop *loop, ev_idle *w, int revents)
{
    struct lg *lg = ev_userdata(loop);

    (void)revents;
    lg_drain_queue(lg);
    if (lg->nqueue == 0)
        ev_idle_stop(loop, w);
}

static void
lg_on_sweep(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct lg *lg = ev_userdata(loop);
    ev_tstamp now = ev_now(loop);

    (void)w;
    (void)revents;
    for (unsigned i = 0; i < lg->nslots && !lg->finished; i++) {
        struct lconn *c = &lg->c[i];

        if (c->state >= LC_CONNECTING && c->state <= LC_STREAM
            && c->deadline < now)
            lg_fail(lg, c, BNET_ERR_TIMEOUT);
    }
}

static void
lg_on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    lg_finish(ev_userdata(loop));
}

static void
lg_on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    lg_finish(ev_userdata(loop));
    for (unsigned i = 1; i < lg_nall; i++)
        ev_async_send(lg_all[i]->loop, &lg_all[i]->stop);
}

static void
lg_on_stop(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)w;
    (void)revents;
    lg_finish(ev_userdata(loop));
}

static double
lg_us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

/* One JSON object on stdout: the machine-readable result. */
static void
lg_print_json(const struct lg *lg, double secs)
{
    const struct lg_opts *o = &lg->o;
    double rate = secs > 0 ? (double)lg->done / secs : 0;
    double moved = (double)(lg->bytes_sent + lg->bytes_recv);

    if (o->mode == LG_IDLE && lg->t_established > lg->t_start)
        rate = (double)lg->done
               / ((double)(lg->t_established - lg->t_start) / 1e9);
    printf("{\"mode\":\"%s\",\"target\":\"%s\",\"label\":\"%s\","
           "\"duration_s\":%.3f,\"concurrency\":%u,\"connections\":%u,"
           "\"size\":%zu,\"reply_size\":%zu,",
           lg_mode_names[o->mode], o->target_str, o->label, secs,
           o->concurrency, o->connections, o->size, o->reply_size);
    if (o->mode == LG_STREAM)
        printf("\"direction\":\"%s\",", lg_dir_names[o->dir]);
    printf("\"threads\":%u,", o->threads);
    if (o->rate > 0)
        printf("\"offered_rate\":%.1f,\"scheduled\":%llu,\"missed\":%llu,"
               "\"unsent\":%llu,",
               o->rate, (unsigned long long)lg->due,
               (unsigned long long)lg->missed,
               (unsigned long long)(lg->due - lg->started));
    printf("\"unit\":\"%s\",\"count\":%llu,\"rate\":%.1f,\"errors\":{",
           lg_unit_names[o->mode], (unsigned long long)lg->done, rate);
    for (int e = 0; e < BNET_ERR__COUNT; e++)
        printf("%s\"%s\":%llu", e ? "," : "", bnet_err_name(e),
               (unsigned long long)lg->errors[e]);
    printf("},\"errors_total\":%llu,\"bytes_sent\":%llu,\"bytes_recv\":%llu,"
           "\"throughput_mbit_s\":%.1f,",
           (unsigned long long)lg->errors_total,
           (unsigned long long)lg->bytes_sent,
           (unsigned long long)lg->bytes_recv,
           secs > 0 ? moved * 8 / secs / 1e6 : 0);
    if (o->mode == LG_IDLE)
        printf("\"held\":%llu,", (unsigned long long)lg->held);
    printf("\"samples\":%llu,\"min_us\":%.1f,\"mean_us\":%.1f,"
           "\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,"
           "\"p999_us\":%.1f,\"p9999_us\":%.1f,\"max_us\":%.1f}\n",
           (unsigned long long)lg->hist.count,
           lg_us(lg->hist.count ? lg->hist.min : 0),
           lathist_mean(&lg->hist) / 1000.0,
           lg_us(lathist_quantile(&lg->hist, 0.50)),
           lg_us(lathist_quantile(&lg->hist, 0.90)),
           lg_us(lathist_quantile(&lg->hist, 0.99)),
           lg_us(lathist_quantile(&lg->hist, 0.999)),
           lg_us(lathist_quantile(&lg->hist, 0.9999)), lg_us(lg->hist.max));
    fflush(stdout);
}

/* The same, for people, on stderr. */
static void
lg_print_summary(const struct lg *lg, double secs)
{
    const struct lg_opts *o = &lg->o;
    double rate = secs > 0 ? (double)lg->done / secs : 0;
    double moved = (double)(lg->bytes_sent + lg->bytes_recv);

    fprintf(stderr, "%s %s (%s): %.2f s, ", lg_mode_names[o->mode],
            o->target_str, o->label, secs);
    if (o->mode == LG_STREAM)
        fprintf(stderr, "%s, %.1f MB moved, %.1f Mbit/s", lg_dir_names[o->dir],
                moved / 1e6, secs > 0 ? moved * 8 / secs / 1e6 : 0);
    else if (o->mode == LG_IDLE)
        fprintf(stderr, "%llu held", (unsigned long long)lg->held);
    else
        fprintf(stderr, "%llu %s, %.1f %s/s", (unsigned long long)lg->done,
                lg_unit_names[o->mode], rate, lg_unit_names[o->mode]);
    if (o->rate > 0)
        fprintf(stderr, " (offered %.1f), %llu missed their slot, %llu unsent",
                o->rate, (unsigned long long)lg->missed,
                (unsigned long long)(lg->due - lg->started));
    if (o->threads > 1)
        fprintf(stderr, ", %u threads", o->threads);
    fprintf(stderr, ", %llu errors", (unsigned long long)lg->errors_total);
    for (int e = 0; e < BNET_ERR__COUNT; e++) {
        if (lg->errors[e] > 0)
            fprintf(stderr, " %s=%llu", bnet_err_name(e),
                    (unsigned long long)lg->errors[e]);
    }
    fprintf(stderr, "\n");
    if (lg->hist.count > 0)
        fprintf(stderr,
                "  latency us: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  "
                "p99.99 %.1f  max %.1f  (%llu samples)\n",
                lg_us(lathist_quantile(&lg->hist, 0.50)),
                lg_us(lathist_quantile(&lg->hist, 0.90)),
                lg_us(lathist_quantile(&lg->hist, 0.99)),
                lg_us(lathist_quantile(&lg->hist, 0.999)),
                lg_us(lathist_quantile(&lg->hist, 0.9999)),
                lg_us(lg->hist.max), (unsigned long long)lg->hist.count);
}

static void
lg_usage(FILE *f)
{
    fprintf(f,
        "usage: ferry-bench connrate|rr|stream|idle --target ADDR:PORT\n"
        "  [--label NAME]       tag copied into the JSON result\n"
        "  [--duration S]       stop after S seconds (default 5)\n"
        "  [--count N]          stop after N units: connections (connrate,\n"
        "                       idle), requests (rr) or bytes (stream)\n"
        "  [--concurrency N]    connrate: connections in flight (16);\n"
        "                       idle: handshakes in flight (256)\n"
        "  [--connections N]    rr (16), stream (4), idle (1000)\n"
        "  [--size N]           request bytes (64); stream: write size\n"
        "                       (65536)\n"
        "  [--reply-size N]     reply bytes to wait for (= --size)\n"
        "  [--direction D]      stream: down, up or both (down)\n"
        "  [--timeout S]        per connection / request (5)\n"
        "  [--max-errors N]     stop the run after N errors (100000)\n"
        "  [--rate R]           connrate, rr: open loop, R units per second\n"
        "                       on a fixed schedule, each timed from its\n"
        "                       slot; --concurrency (connrate) or\n"
        "                       --connections (rr) bounds those in flight\n"
        "  [--spin-us N]        --rate: poll without sleeping when the next\n"
        "                       slot is under N us away (2000); 0 sleeps\n"
        "                       in epoll, whose 1 ms steps then count as\n"
        "                       latency\n"
        "  [-t, --threads N]    N load threads, each with its own loop and\n"
        "                       share of connections, count and rate (1)\n"
        "  [--quiet]            no summary on stderr\n"
        "Backends: connrate needs echo (or fixed with --size = reply size),\n"
        "rr echo, stream down source, up sink, both echo; idle echo.\n");
}

static int
lg_parse_secs(const char *v, double *out)
{
    char *end;
    double d;

    errno = 0;
    d = strtod(v, &end);
    if (errno != 0 || *end != '\0' || !(d > 0) || d > 1e6)
        return -1;
    *out = d;
    return 0;
}

static int
lg_parse_mode(const char *v, enum lg_mode *out)
{
    for (size_t i = 0; i < sizeof(lg_mode_names) / sizeof(*lg_mode_names);
         i++) {
        if (strcmp(v, lg_mode_names[i]) == 0) {
            *out = (enum lg_mode)i;
            return 0;
        }
    }
    return -1;
}

static int
lg_parse_dir(const char *v, enum lg_dir *out)
{
    for (size_t i = 0; i < sizeof(lg_dir_names) / sizeof(*lg_dir_names);
         i++) {
        if (strcmp(v, lg_dir_names[i]) == 0) {
            *out = (enum lg_dir)i;
            return 0;
        }
    }
    return -1;
}

static int
lg_parse_opt(struct lg_opts *o, int opt, const char *v, int *have_target)
{
    const char *why = "bad value";
    uint64_t u;

    switch (opt) {
    case 'A':
        if (parse_hostport(v, &o->target, 0, &why) < 0)
            break;
        saddr_str(&o->target, o->target_str, sizeof(o->target_str));
        *have_target = 1;
        return 0;
    case 'L':
        if (strlen(v) > 64 || strpbrk(v, "\"\\") != NULL)
            break;
        o->label = v;
        return 0;
    case 'd':
    case 'T':
        if (lg_parse_secs(v, opt == 'd' ? &o->duration : &o->timeout) < 0)
            break;
        return 0;
    case 'n':
    case 'e':
        if (parse_uint(v, 1, UINT64_MAX,
                       opt == 'n' ? &o->count : &o->max_errors, &why)
            < 0)
            break;
        return 0;
    case 'c':
    case 'C':
        if (parse_uint(v, 1, LG_MAX_SLOTS, &u, &why) < 0)
            break;
        *(opt == 'c' ? &o->concurrency : &o->connections) = (unsigned)u;
        return 0;
    case 's':
    case 'r':
        if (parse_uint(v, 1, opt == 's' ? LG_MAX_SIZE : 1u << 30, &u, &why)
            < 0)
            break;
        *(opt == 's' ? &o->size : &o->reply_size) = (size_t)u;
        return 0;
    case 'D':
        return lg_parse_dir(v, &o->dir);
    case 't':
        if (parse_uint(v, 1, LG_MAX_THREADS, &u, &why) < 0)
            break;
        o->threads = (unsigned)u;
        return 0;
    case 'S':
        if (parse_uint(v, 0, 1000000, &u, &why) < 0)
            break;
        o->spin_ns = u * 1000;
        return 0;
    case 'R':
        if (lg_parse_secs(v, &o->rate) < 0 || o->rate > LG_MAX_RATE)
            break;
        return 0;
    default:
        break;
    }
    fprintf(stderr, "ferry-bench: '%s': %s\n", v, why);
    return -1;
}

static int
lg_parse(struct lg_opts *o, int argc, char **argv)
{
    static const struct option opts[] = {
        {"target", required_argument, NULL, 'A'},
        {"threads", required_argument, NULL, 't'},
        {"rate", required_argument, NULL, 'R'},
        {"spin-us", required_argument, NULL, 'S'},
        {"label", required_argument, NULL, 'L'},
        {"duration", required_argument, NULL, 'd'},
        {"count", required_argument, NULL, 'n'},
        {"concurrency", required_argument, NULL, 'c'},
        {"connections", required_argument, NULL, 'C'},
        {"size", required_argument, NULL, 's'},
        {"reply-size", required_argument, NULL, 'r'},
        {"direction", required_argument, NULL, 'D'},
        {"timeout", required_argument, NULL, 'T'},
        {"max-errors", required_argument, NULL, 'e'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt, have_target = 0;

    if (lg_parse_mode(argv[0], &o->mode) < 0) {
        fprintf(stderr, "ferry-bench: unknown mode '%s'\n", argv[0]);
        lg_usage(stderr);
        return -1;
    }
    while ((opt = getopt_long(argc, argv, "t:", opts, NULL)) != -1) {
        if (opt == 'h') {
            lg_usage(stdout);
            exit(0);
        }
        if (opt == 'q') {
            o->quiet = 1;
            continue;
        }
        if (opt == '?' || lg_parse_opt(o, opt, optarg, &have_target) < 0) {
            lg_usage(stderr);
            return -1;
        }
    }
    if (optind != argc || !have_target) {
        fprintf(stderr, "ferry-bench: --target ADDR:PORT is required\n");
        return -1;
    }
    if (o->rate > 0 && o->mode != LG_CONNRATE && o->mode != LG_RR) {
        fprintf(stderr, "ferry-bench: --rate is for connrate and rr\n");
        return -1;
    }
    if (o->threads > 1 && o->mode == LG_IDLE) {
        fprintf(stderr, "ferry-bench: idle runs on one thread\n");
        return -1;
    }
    return 0;
}

static void
lg_defaults(struct lg_opts *o)
{
    static const unsigned conns[] = {
        [LG_CONNRATE] = 0, [LG_RR] = 16, [LG_STREAM] = 4, [LG_IDLE] = 1000};

    if (o->concurrency == 0)
        o->concurrency = o->mode == LG_IDLE ? 256 : 16;
    if (o->connections == 0)
        o->connections = conns[o->mode];
    if (o->size == 0)
        o->size = o->mode == LG_STREAM ? LG_MAX_SIZE : 64;
    if (o->reply_size == 0)
        o->reply_size = o->size;
    if (o->count == 0)
        o->count = o->mode == LG_IDLE ? o->connections : UINT64_MAX;
    if (o->mode == LG_IDLE && o->count < o->connections)
        o->connections = (unsigned)o->count;
    if (o->mode != LG_CONNRATE)
        o->concurrency = o->mode == LG_IDLE ? o->concurrency : 0;
    if (o->mode == LG_CONNRATE)
        o->connections = 0;
}

/* Each slot needs one fd; raise the soft limit toward the hard one. */
static int
lg_check_fds(unsigned slots)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -errno;
    if (rl.rlim_cur >= (rlim_t)slots + 32)
        return 0;
    if (rl.rlim_max < (rlim_t)slots + 32)
        return -EMFILE;
    rl.rlim_cur = (rlim_t)slots + 32;
    return setrlimit(RLIMIT_NOFILE, &rl) < 0 ? -errno : 0;
}

/* Thread <i> of <n>'s share of <total>: an even split, the remainder to
 * the first ones. */
static uint64_t
lg_share(uint64_t total, unsigned i, unsigned n)
{
    if (total == UINT64_MAX)
        return total;
    return total / n + (i < total % n ? 1 : 0);
}

/* Split the run's options across <n> threads; each must get at least one
 * connection, one unit and a rate above zero. */
static int
lg_split(const struct lg_opts *o, struct lg_opts *mine, unsigned i,
         unsigned n)
{
    *mine = *o;
    mine->concurrency = (unsigned)lg_share(o->concurrency, i, n);
    mine->connections = (unsigned)lg_share(o->connections, i, n);
    mine->count = lg_share(o->count, i, n);
    mine->rate = o->rate / n;
    if ((o->mode == LG_CONNRATE ? mine->concurrency : mine->connections) == 0
        || mine->count == 0) {
        fprintf(stderr, "ferry-bench: %u threads need at least %u %s and "
                        "--count %u\n", n, n,
                o->mode == LG_CONNRATE ? "--concurrency" : "--connections",
                n);
        return -1;
    }
    return 0;
}

static int
lg_setup(struct lg *lg, unsigned id, unsigned nthreads)
{
    const struct lg_opts *o = &lg->o;
    double every = o->timeout / 4 < 0.25 ? o->timeout / 4 : 0.25;
    int open_loop = o->rate > 0;

    lg->nslots = o->mode == LG_CONNRATE ? o->concurrency : o->connections;
    lg->c = calloc(lg->nslots, sizeof(*lg->c));
    lg->queue = calloc(lg->nslots, sizeof(*lg->queue));
    lg->batch = calloc(lg->nslots, sizeof(*lg->batch));
    lg->free = calloc(lg->nslots, sizeof(*lg->free));
    lg->loop = id == 0 ? ev_default_loop(EVFLAG_AUTO)
                       : ev_loop_new(EVFLAG_AUTO);
    if (lg->c == NULL || lg->queue == NULL || lg->batch == NULL
        || lg->free == NULL || lg->loop == NULL) {
        fprintf(stderr, "ferry-bench: out of memory\n");
        return -1;
    }
    ev_set_userdata(lg->loop, lg);
    lathist_init(&lg->hist);
    if (open_loop) {
        lg->every_ns = (uint64_t)(1e9 / o->rate);
        if (lg->every_ns == 0)
            lg->every_ns = 1;
        /* Threads' slots interleave rather than coincide. */
        lg->phase_ns = lg->every_ns * id / nthreads;
    }
    for (unsigned i = 0; i < lg->nslots; i++) {
        struct lconn *c = &lg->c[i];

        c->fd = -1;
        ev_io_init(&c->io, lg_on_io, -1, EV_READ);
        if (open_loop && o->mode == LG_CONNRATE) {
            lg->free[lg->nfree++] = i;
        } else if (o->mode != LG_IDLE) {
            c->state = LC_PENDING;
            lg->queue[lg->nqueue++] = i;
            lg->busy++;
        }
    }
    ev_timer_init(&lg->dur_timer, lg_on_deadline, o->duration, 0.);
    ev_timer_start(lg->loop, &lg->dur_timer);
    ev_timer_init(&lg->sweep, lg_on_sweep, every, every);
    ev_timer_start(lg->loop, &lg->sweep);
    ev_prepare_init(&lg->prepare, lg_on_prepare);
    ev_prepare_start(lg->loop, &lg->prepare);
    ev_idle_init(&lg->kick, lg_on_kick);
    ev_timer_init(&lg->tick, lg_on_tick, 0., 0.);
    ev_idle_init(&lg->spin, lg_on_spin);
    if (open_loop)
        ev_idle_start(lg->loop, &lg->spin);
    ev_async_init(&lg->stop, lg_on_stop);
    ev_async_start(lg->loop, &lg->stop);
    if (id == 0) {
        ev_signal_init(&lg->sigint, lg_on_signal, SIGINT);
        ev_signal_start(lg->loop, &lg->sigint);
        ev_signal_init(&lg->sigterm, lg_on_signal, SIGTERM);
        ev_signal_start(lg->loop, &lg->sigterm);
    }
    return 0;
}

static void
lg_free(struct lg *lg)
{
    if (lg == NULL)
        return;
    for (unsigned i = 0; lg->c != NULL && i < lg->nslots; i++) {
        if (lg->c[i].fd >= 0)
            close(lg->c[i].fd);
    }
    if (lg->loop != NULL)
        ev_loop_destroy(lg->loop);
    free(lg->c);
    free(lg->queue);
    free(lg->batch);
    free(lg->free);
    free(lg);
}

static void
lg_run(struct lg *lg)
{
    lg->t_start = bnet_now_ns();
    if (lg->o.mode == LG_IDLE)
        lg_idle_launch(lg);
    ev_run(lg->loop, 0);
    if (!lg->finished)
        lg_finish(lg);
}

static void *
lg_thread_main(void *arg)
{
    lg_run(arg);
    return NULL;
}

/* Sum every thread's counters and histogram into <t> (whose options are
 * the run's, not one thread's share). */
static void
lg_merge(struct lg *t, struct lg *const *all, unsigned n)
{
    lathist_init(&t->hist);
    t->t_start = UINT64_MAX;
    for (unsigned i = 0; i < n; i++) {
        const struct lg *l = all[i];

        t->done += l->done;
        t->held += l->held;
        t->errors_total += l->errors_total;
        for (int e = 0; e < BNET_ERR__COUNT; e++)
            t->errors[e] += l->errors[e];
        t->bytes_sent += l->bytes_sent;
        t->bytes_recv += l->bytes_recv;
        t->due += l->due;
        t->started += l->started;
        t->missed += l->missed;
        lathist_merge(&t->hist, &l->hist);
        if (l->t_start < t->t_start)
            t->t_start = l->t_start;
        if (l->t_end > t->t_end)
            t->t_end = l->t_end;
        if (l->t_established > t->t_established)
            t->t_established = l->t_established;
    }
}

static int
lg_start_all(struct lg_opts *o, unsigned n)
{
    unsigned slots = (o->mode == LG_CONNRATE ? o->concurrency
                                             : o->connections);

    if (lg_check_fds(slots + 8 * n) < 0) {
        fprintf(stderr, "ferry-bench: %u connections need more open files "
                        "than the limit allows\n", slots);
        return -1;
    }
    lg_all = calloc(n, sizeof(*lg_all));
    if (lg_all == NULL)
        return -1;
    lg_nall = n;
    for (unsigned i = 0; i < n; i++) {
        lg_all[i] = calloc(1, sizeof(**lg_all));
        if (lg_all[i] == NULL || lg_split(o, &lg_all[i]->o, i, n) < 0
            || lg_setup(lg_all[i], i, n) < 0)
            return -1;
    }
    return 0;
}

int
loadgen_main(int argc, char **argv)
{
    struct lg_opts o;
    struct lg *total = calloc(1, sizeof(*total));
    unsigned n, started = 1;
    sigset_t block, old;
    double secs;
    int rc = 0;

    if (total == NULL)
        return 1;
    memset(&o, 0, sizeof(o));
    o.duration = 5;
    o.timeout = 5;
    o.max_errors = 100000;
    o.label = "";
    o.threads = 1;
    o.spin_ns = (uint64_t)LG_SPIN_US * 1000;
    if (lg_parse(&o, argc, argv) < 0) {
        free(total);
        return 2;
    }
    lg_defaults(&o);
    n = o.threads;
    signal(SIGPIPE, SIG_IGN);
    if (lg_start_all(&o, n) < 0) {
        rc = 1;
        goto out;
    }
    /* Only thread 0 (this one) takes SIGINT and SIGTERM, and passes them
     * on to the others through their ev_async. */
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    for (; started < n; started++) {
        if (pthread_create(&lg_all[started]->thread, NULL, lg_thread_main,
                           lg_all[started])
            != 0) {
            fprintf(stderr, "ferry-bench: cannot start thread %u\n", started);
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (started < n) { /* stop those that run, report nothing */
        rc = 1;
        for (unsigned i = 1; i < started; i++)
            ev_async_send(lg_all[i]->loop, &lg_all[i]->stop);
    } else {
        lg_run(lg_all[0]);
    }
    for (unsigned i = 1; i < started; i++)
        pthread_join(lg_all[i]->thread, NULL);
    if (rc == 0) {
        total->o = o;
        lg_merge(total, lg_all, n);
        secs = (double)(total->t_end - total->t_start) / 1e9;
        lg_print_json(total, secs);
        if (!o.quiet)
            lg_print_summary(total, secs);
    }
out:
    for (unsigned i = 0; lg_all != NULL && i < lg_nall; i++)
        lg_free(lg_all[i]);
    free(lg_all);
    free(total);
    return rc;
}
