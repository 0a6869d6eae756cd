#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bnet.h"
#include "lathist.h"
#include "parse.h"
#include "udpbench.h"

/* UB_SPIN_US: closer to its slot than this (--spin-us), the open loop
 * polls without sleeping: epoll's millisecond timeout would send queries
 * late, and the lateness would count as latency. */
#define UB_BATCH       32
#define UB_DGRAM_MAX   65536
#define UB_MAX_SLOTS   10000u
#define UB_TICK_MS     10
#define UB_MAX_THREADS 64u
#define UB_MAX_RATE    1e6
#define UB_SPIN_US     2000u

static volatile sig_atomic_t ub_stop;

static void
ub_on_signal(int sig)
{
    (void)sig;
    ub_stop = 1;
}

static void
ub_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = ub_on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

static int
ub_number(const char *s, uint64_t min, uint64_t max, uint64_t *out,
          const char *what)
{
    const char *why;

    if (parse_uint(s, min, max, out, &why) == 0)
        return 0;
    fprintf(stderr, "ferry-bench: --%s %s: %s\n", what, s, why);
    return -1;
}

static int
ub_seconds(const char *s, double *out, const char *what)
{
    char *end;

    errno = 0;
    *out = strtod(s, &end);
    if (errno == 0 && *end == '\0' && *out > 0 && *out <= 86400)
        return 0;
    fprintf(stderr, "ferry-bench: --%s %s: not a number of seconds\n", what,
            s);
    return -1;
}

static int
ub_addr(const char *s, struct saddr *a, const char *what)
{
    const char *why;

    if (parse_hostport(s, a, 0, &why) == 0)
        return 0;
    fprintf(stderr, "ferry-bench: --%s %s: %s\n", what, s, why);
    return -1;
}

/* ---- the backend --------------------------------------------------------- */

#define UB_MAX_LISTEN 8

struct ub_serve {
    struct saddr listen[UB_MAX_LISTEN];
    int nlisten;
    uint64_t reply_size;
    double max_seconds;
};

static int
ub_serve_args(int argc, char **argv, struct ub_serve *a)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"reply-size", required_argument, NULL, 'r'},
        {"max-seconds", required_argument, NULL, 'x'},
        {NULL, 0, NULL, 0},
    };
    int o;

    a->reply_size = 128;
    a->max_seconds = 3600;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (o == 'l' && a->nlisten == UB_MAX_LISTEN) {
            fprintf(stderr, "ferry-bench udp-serve: at most %d --listen\n",
                    UB_MAX_LISTEN);
            return -1;
        }
        if ((o == 'l'
             && ub_addr(optarg, &a->listen[a->nlisten++], "listen") < 0)
            || (o == 'r'
                && ub_number(optarg, 8, 65000, &a->reply_size, "reply-size")
                       < 0)
            || (o == 'x'
                && ub_seconds(optarg, &a->max_seconds, "max-seconds") < 0)
            || o == '?')
            return -1;
    }
    if (a->nlisten == 0)
        fprintf(stderr, "ferry-bench udp-serve: --listen is required\n");
    return a->nlisten > 0 ? 0 : -1;
}

/* What the backend saw: queries, and which source ports they came from
 * (one bit per port, whatever the address): a client with fresh source
 * ports shows many, one with pinned sockets as many as it has. */
struct ub_seen {
    uint64_t queries, ports;
    uint8_t bits[65536 / 8];
};

static void
ub_note_port(struct ub_seen *seen, const struct saddr *from)
{
    uint16_t port = from->u.sa.sa_family == AF_INET6
                        ? ntohs(from->u.in6.sin6_port)
                        : ntohs(from->u.in.sin_port);
    uint8_t bit = (uint8_t)(1u << (port & 7));

    seen->queries++;
    if (!(seen->bits[port >> 3] & bit)) {
        seen->bits[port >> 3] |= bit;
        seen->ports++;
    }
}

/* Answer what <fd> holds, a batch at a time: reply slot i (of
 * <reply_size> bytes in <reply>) gets the tag of query i. */
static void
ub_answer(int fd, size_t reply_size, char *bufs, char *reply,
          struct ub_seen *seen)
{
    struct mmsghdr in[UB_BATCH], out[UB_BATCH];
    struct iovec iov[UB_BATCH], riov[UB_BATCH];
    struct saddr from[UB_BATCH];
    int i, n;

    memset(in, 0, sizeof(in));
    memset(out, 0, sizeof(out));
    for (i = 0; i < UB_BATCH; i++) {
        iov[i].iov_base = bufs + (size_t)i * UB_DGRAM_MAX;
        iov[i].iov_len = UB_DGRAM_MAX;
        in[i].msg_hdr.msg_iov = &iov[i];
        in[i].msg_hdr.msg_iovlen = 1;
        in[i].msg_hdr.msg_name = &from[i].u;
        in[i].msg_hdr.msg_namelen = sizeof(from[i].u);
    }
    n = recvmmsg(fd, in, UB_BATCH, MSG_DONTWAIT, NULL);
    for (i = 0; i < n; i++) {
        char *slot = reply + (size_t)i * reply_size;
        ub_note_port(seen, &from[i]);
        memcpy(slot, iov[i].iov_base, in[i].msg_len < 8 ? in[i].msg_len : 8);
        riov[i].iov_base = slot;
        riov[i].iov_len = reply_size;
        out[i].msg_hdr.msg_name = &from[i].u;
        out[i].msg_hdr.msg_namelen = in[i].msg_hdr.msg_namelen;
        out[i].msg_hdr.msg_iov = &riov[i];
        out[i].msg_hdr.msg_iovlen = 1;
    }
    if (n > 0)
        (void)sendmmsg(fd, out, (unsigned)n, MSG_DONTWAIT);
}

int
udpbench_serve_main(int argc, char **argv)
{
    struct ub_serve a;
    struct ub_seen *seen = calloc(1, sizeof(*seen));
    struct pollfd p[UB_MAX_LISTEN];
    uint64_t end;
    char *bufs = NULL, *reply = NULL;
    int i, k, rc = 1;

    memset(&a, 0, sizeof(a));
    for (i = 0; i < UB_MAX_LISTEN; i++)
        p[i].fd = -1;
    if (ub_serve_args(argc, argv, &a) < 0) {
        free(seen);
        return 2;
    }
    for (i = 0; i < a.nlisten; i++) {
        p[i].fd = socket(a.listen[i].u.sa.sa_family,
                         SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        p[i].events = POLLIN;
        if (p[i].fd < 0
            || bind(p[i].fd, &a.listen[i].u.sa, a.listen[i].len) < 0) {
            fprintf(stderr, "ferry-bench udp-serve: %s\n", strerror(errno));
            goto out;
        }
    }
    bufs = malloc((size_t)UB_BATCH * UB_DGRAM_MAX);
    reply = malloc((size_t)UB_BATCH * a.reply_size);
    if (bufs == NULL || reply == NULL || seen == NULL) {
        fprintf(stderr, "ferry-bench udp-serve: out of memory\n");
        goto out;
    }
    for (i = 0; i < UB_BATCH; i++) {
        size_t plen;
        const char *pat = bnet_pattern(&plen);
        memcpy(reply + (size_t)i * a.reply_size, pat,
               a.reply_size < plen ? a.reply_size : plen);
    }
    ub_signals();
    printf("ready\n");
    fflush(stdout);
    end = bnet_now_ns() + (uint64_t)(a.max_seconds * 1e9);
    while (!ub_stop && bnet_now_ns() < end) {
        if (poll(p, (nfds_t)a.nlisten, 100) <= 0)
            continue;
        for (k = 0; k < a.nlisten; k++)
            if (p[k].revents & POLLIN)
                ub_answer(p[k].fd, a.reply_size, bufs, reply, seen);
    }
    printf("{\"served\":%llu,\"source_ports\":%llu}\n",
           (unsigned long long)seen->queries, (unsigned long long)seen->ports);
    fflush(stdout);
    rc = 0;
out:
    for (i = 0; i < a.nlisten; i++)
        if (p[i].fd >= 0)
            close(p[i].fd);
    free(seen);
    free(bufs);
    free(reply);
    return rc;
}

/* ---- the client ---------------------------------------------------------- */

/* The run's options; each thread gets a copy with its share of
 * --concurrency, --count and --rate. */
struct ub_opts {
    struct saddr target;
    char target_str[SADDR_STR_MAX];
    const char *label;
    uint64_t concurrency, size, reply_size, count, threads;
    double duration, timeout, rate;
    uint64_t spin_ns;
    int fresh; /* --source-port fresh: a new socket per query */
    int quiet;
};

struct ub_slot {
    int fd;
    uint64_t tag;  /* of the query in flight; 0: none */
    uint64_t t0;   /* latency origin: its slot (--rate) or when sent, ns */
    uint64_t sent; /* when it was sent, ns (for --timeout) */
};

/* One load thread: its own epoll, sockets, counters and histogram. */
struct ub_client {
    struct ub_opts o;
    unsigned id;
    pthread_t thread;
    int ep;
    struct ub_slot *s;
    uint64_t *free, nfree; /* --rate: slots with no query in flight */
    uint64_t next_tag, done, launched, inflight, sockets;
    uint64_t errors[BNET_ERR__COUNT], errors_total;
    uint64_t bytes_sent, bytes_recv;
    /* --rate: unit k is due at t_start + phase_ns + k * every_ns */
    uint64_t t_start, t_end, every_ns, phase_ns;
    uint64_t due, started, missed;
    int stopping;
    struct lathist hist;
    char qbuf[UB_DGRAM_MAX], rbuf[UB_DGRAM_MAX];
};

static void
ub_client_usage(FILE *f)
{
    fprintf(f, "usage: ferry-bench udp --target ADDR:PORT [--concurrency N]\n"
               "  [--size N] [--reply-size N] [--duration S] [--count N]\n"
               "  [--timeout S] [--rate R] [--spin-us N] [-t N]\n"
               "  [--source-port fresh|pinned] [--label L] [--quiet]\n");
}

static int
ub_client_opt(struct ub_opts *o, int opt, const char *v)
{
    uint64_t u;

    switch (opt) {
    case 'A':
        return ub_addr(v, &o->target, "target");
    case 'c':
        return ub_number(v, 1, UB_MAX_SLOTS, &o->concurrency, "concurrency");
    case 's':
        return ub_number(v, 8, 65000, &o->size, "size");
    case 'r':
        return ub_number(v, 8, 65000, &o->reply_size, "reply-size");
    case 'd':
        return ub_seconds(v, &o->duration, "duration");
    case 'n':
        return ub_number(v, 1, UINT64_MAX - 1, &o->count, "count");
    case 'T':
        return ub_seconds(v, &o->timeout, "timeout");
    case 't':
        return ub_number(v, 1, UB_MAX_THREADS, &o->threads, "threads");
    case 'R':
        if (ub_seconds(v, &o->rate, "rate") < 0)
            return -1;
        if (o->rate > UB_MAX_RATE) {
            fprintf(stderr, "ferry-bench: --rate %s: at most %.0f\n", v,
                    UB_MAX_RATE);
            return -1;
        }
        return 0;
    case 'S':
        if (ub_number(v, 0, 1000000, &u, "spin-us") < 0)
            return -1;
        o->spin_ns = u * 1000;
        return 0;
    case 'P':
        if (strcmp(v, "fresh") == 0 || strcmp(v, "pinned") == 0) {
            o->fresh = v[0] == 'f';
            return 0;
        }
        fprintf(stderr, "ferry-bench: --source-port %s: fresh or pinned\n", v);
        return -1;
    case 'L':
        if (strlen(v) > 64 || strpbrk(v, "\"\\") != NULL) {
            fprintf(stderr, "ferry-bench: --label: at most 64 characters, "
                            "no quotes or backslashes\n");
            return -1;
        }
        o->label = v;
        return 0;
    case 'q':
        o->quiet = 1;
        return 0;
    default:
        return -1;
    }
}

static int
ub_client_args(int argc, char **argv, struct ub_opts *o)
{
    static const struct option opts[] = {
        {"target", required_argument, NULL, 'A'},
        {"concurrency", required_argument, NULL, 'c'},
        {"size", required_argument, NULL, 's'},
        {"reply-size", required_argument, NULL, 'r'},
        {"duration", required_argument, NULL, 'd'},
        {"count", required_argument, NULL, 'n'},
        {"timeout", required_argument, NULL, 'T'},
        {"threads", required_argument, NULL, 't'},
        {"rate", required_argument, NULL, 'R'},
        {"spin-us", required_argument, NULL, 'S'},
        {"source-port", required_argument, NULL, 'P'},
        {"label", required_argument, NULL, 'L'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;

    o->concurrency = 32;
    o->size = 64;
    o->reply_size = 128;
    o->duration = 10;
    o->timeout = 1;
    o->count = UINT64_MAX;
    o->threads = 1;
    o->spin_ns = (uint64_t)UB_SPIN_US * 1000;
    o->label = "";
    while ((opt = getopt_long(argc, argv, "t:", opts, NULL)) != -1) {
        if (opt == 'h') {
            ub_client_usage(stdout);
            exit(0);
        }
        if (opt == '?' || ub_client_opt(o, opt, optarg) < 0) {
            ub_client_usage(stderr);
            return -1;
        }
    }
    if (optind != argc || o->target.len == 0) {
        fprintf(stderr, "ferry-bench udp: --target ADDR:PORT is required\n");
        return -1;
    }
    if (o->threads > o->concurrency || o->threads > o->count) {
        fprintf(stderr,
                "ferry-bench udp: %llu threads need at least %llu "
                "--concurrency and --count %llu\n",
                (unsigned long long)o->threads, (unsigned long long)o->threads,
                (unsigned long long)o->threads);
        return -1;
    }
    saddr_str(&o->target, o->target_str, sizeof(o->target_str));
    return 0;
}

/* Every socket needs an fd; raise the soft limit toward the hard one. */
static int
ub_check_fds(uint64_t fds)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -1;
    if (rl.rlim_cur >= (rlim_t)fds)
        return 0;
    if (rl.rlim_max < (rlim_t)fds)
        return -1;
    rl.rlim_cur = (rlim_t)fds;
    return setrlimit(RLIMIT_NOFILE, &rl);
}

static void
ub_error(struct ub_client *c, enum bnet_err e)
{
    c->errors[e]++;
    c->errors_total++;
}

/* A socket connected to the target, watched for slot <i>: -1 on failure
 * (counted). */
static int
ub_socket(struct ub_client *c, uint64_t i)
{
    struct epoll_event ev = {EPOLLIN, {.u64 = i}};
    int fd = socket(c->o.target.u.sa.sa_family,
                    SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        ub_error(c, bnet_err_from_errno(-errno));
        return -1;
    }
    if (connect(fd, &c->o.target.u.sa, c->o.target.len) < 0
        || epoll_ctl(c->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        ub_error(c, bnet_err_from_errno(-errno));
        close(fd);
        return -1;
    }
    c->sockets++;
    return fd;
}

/* Slot <i>'s query is over (answered, timed out or never sent): the slot
 * is free again, and with fresh source ports its socket goes. */
static void
ub_release(struct ub_client *c, uint64_t i)
{
    struct ub_slot *s = &c->s[i];

    s->tag = 0;
    c->inflight--;
    if (c->o.fresh && s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    if (c->o.rate > 0)
        c->free[c->nfree++] = i;
}

/* Send a query from slot <i>, latency counted from <t0>. */
static void
ub_launch(struct ub_client *c, uint64_t i, uint64_t t0)
{
    struct ub_slot *s = &c->s[i];

    c->launched++;
    c->inflight++;
    s->tag = ((uint64_t)c->id << 48) | ++c->next_tag;
    s->t0 = t0;
    s->sent = bnet_now_ns();
    if (s->fd < 0 && (s->fd = ub_socket(c, i)) < 0) {
        ub_release(c, i);
        return;
    }
    memcpy(c->qbuf, &s->tag, 8);
    if (send(s->fd, c->qbuf, c->o.size, 0) < 0) {
        ub_error(c, bnet_err_from_errno(-errno));
        ub_release(c, i);
        return;
    }
    c->bytes_sent += c->o.size;
}

/* Closed loop: slot <i> sends its next query at once, while the run
 * lasts. */
static void
ub_next(struct ub_client *c, uint64_t i)
{
    if (c->o.rate == 0 && !c->stopping && c->launched < c->o.count)
        ub_launch(c, i, bnet_now_ns());
}

static void
ub_on_readable(struct ub_client *c, uint64_t i)
{
    struct ub_slot *s = &c->s[i];
    ssize_t n;
    uint64_t tag;

    while (s->fd >= 0) {
        n = recv(s->fd, c->rbuf, sizeof(c->rbuf), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ECONNREFUSED && s->tag != 0) {
                /* The query failed; the closed loop sends the slot's next
                 * one at the sweep, not at once (no busy loop against a
                 * closed port). */
                ub_error(c, BNET_ERR_REFUSED);
                ub_release(c, i);
                continue;
            }
            if (errno == ECONNREFUSED)
                continue;
            return;
        }
        c->bytes_recv += (uint64_t)n;
        if (n < 8)
            continue;
        memcpy(&tag, c->rbuf, 8);
        if (s->tag == 0 || tag != s->tag)
            continue; /* an answer after its timeout */
        if ((uint64_t)n != c->o.reply_size)
            ub_error(c, BNET_ERR_SHORT_READ);
        lathist_add(&c->hist, bnet_now_ns() - s->t0);
        c->done++;
        ub_release(c, i);
        ub_next(c, i);
    }
}

/* Queries unanswered for --timeout are counted and given up; the closed
 * loop sends the slot's next one. */
static void
ub_sweep(struct ub_client *c)
{
    uint64_t now = bnet_now_ns(), limit = (uint64_t)(c->o.timeout * 1e9);
    uint64_t i;

    for (i = 0; i < c->o.concurrency; i++) {
        struct ub_slot *s = &c->s[i];

        if (s->tag != 0 && now - s->sent >= limit) {
            ub_error(c, BNET_ERR_TIMEOUT);
            ub_release(c, i);
        }
        if (s->tag == 0)
            ub_next(c, i);
    }
}

static uint64_t
ub_slot_ns(const struct ub_client *c, uint64_t k)
{
    return c->t_start + c->phase_ns + k * c->every_ns;
}

/* The open loop's clock: count the slots that have come, send what a free
 * slot can carry (each timed from its slot, so waiting for a free one
 * counts as latency), and return the time of the next slot. */
static uint64_t
ub_tick(struct ub_client *c, uint64_t now)
{
    uint64_t due = c->due;

    if (!c->stopping && now >= c->t_start + c->phase_ns) {
        due = (now - c->t_start - c->phase_ns) / c->every_ns + 1;
        if (due > c->o.count)
            due = c->o.count;
    }
    if (due > c->due) {
        uint64_t fresh = due - c->due, waiting;

        c->due = due;
        while (c->started < c->due && c->nfree > 0)
            ub_launch(c, c->free[--c->nfree], ub_slot_ns(c, c->started++));
        waiting = c->due - c->started;
        c->missed += waiting < fresh ? waiting : fresh;
    } else {
        while (c->started < c->due && c->nfree > 0)
            ub_launch(c, c->free[--c->nfree], ub_slot_ns(c, c->started++));
    }
    return ub_slot_ns(c, c->due);
}

/* How long epoll may sleep: to the next slot less --spin-us (polling
 * without sleeping closer than that), at most one sweep tick. */
static int
ub_wait_ms(const struct ub_client *c, uint64_t now, uint64_t next)
{
    if (c->o.rate == 0 || c->stopping || c->due >= c->o.count)
        return UB_TICK_MS;
    if (next <= now + c->o.spin_ns)
        return 0;
    if (next - now - c->o.spin_ns >= UB_TICK_MS * 1000000ull)
        return UB_TICK_MS;
    return (int)((next - now - c->o.spin_ns) / 1000000u);
}

static void
ub_run(struct ub_client *c)
{
    struct epoll_event evs[64];
    uint64_t end, now, next = 0, last_sweep, i;
    int n, k;

    c->t_start = last_sweep = bnet_now_ns();
    end = c->t_start + (uint64_t)(c->o.duration * 1e9);
    if (c->o.rate == 0)
        for (i = 0; i < c->o.concurrency; i++)
            ub_next(c, i);
    for (;;) {
        now = bnet_now_ns();
        if (ub_stop || now >= end)
            c->stopping = 1;
        if (c->o.rate > 0)
            next = ub_tick(c, now);
        /* The closed loop ends at once; the open loop waits for what is
         * in flight (--timeout bounds it). */
        if ((c->o.rate == 0 && c->stopping)
            || (c->inflight == 0 && (c->stopping || c->launched >= c->o.count)))
            break;
        n = epoll_wait(c->ep, evs, 64, ub_wait_ms(c, now, next));
        for (k = 0; k < n; k++)
            ub_on_readable(c, evs[k].data.u64);
        if (n <= 0 && c->o.rate > 0 && ub_wait_ms(c, now, next) == 0)
            sched_yield(); /* a backend on this core gets its turn */
        if (bnet_now_ns() - last_sweep >= UB_TICK_MS * 1000000ull) {
            ub_sweep(c);
            last_sweep = bnet_now_ns();
        }
    }
    c->t_end = bnet_now_ns();
}

static void *
ub_thread_main(void *arg)
{
    ub_run(arg);
    return NULL;
}

static uint64_t
ub_share(uint64_t total, uint64_t i, uint64_t n)
{
    if (total == UINT64_MAX)
        return total;
    return total / n + (i < total % n ? 1 : 0);
}

static struct ub_client *
ub_client_new(const struct ub_opts *o, unsigned id)
{
    struct ub_client *c = calloc(1, sizeof(*c));
    uint64_t i;

    if (c == NULL)
        return NULL;
    c->o = *o;
    c->id = id;
    c->o.concurrency = ub_share(o->concurrency, id, o->threads);
    c->o.count = ub_share(o->count, id, o->threads);
    c->o.rate = o->rate / (double)o->threads;
    lathist_init(&c->hist);
    c->ep = epoll_create1(EPOLL_CLOEXEC);
    c->s = calloc(c->o.concurrency, sizeof(*c->s));
    c->free = calloc(c->o.concurrency, sizeof(*c->free));
    if (c->ep < 0 || c->s == NULL || c->free == NULL) {
        fprintf(stderr, "ferry-bench udp: %s\n", strerror(errno));
        goto fail;
    }
    for (i = 0; i < c->o.concurrency; i++) {
        c->s[i].fd = -1;
        c->free[c->nfree++] = c->o.concurrency - 1 - i;
    }
    if (c->o.rate > 0) {
        c->every_ns = (uint64_t)(1e9 / c->o.rate);
        if (c->every_ns == 0)
            c->every_ns = 1;
        /* Threads' slots interleave rather than coincide. */
        c->phase_ns = c->every_ns * id / o->threads;
    }
    /* Pinned: every slot's socket, and so its source port, for the whole
     * run. */
    for (i = 0; !o->fresh && i < c->o.concurrency; i++) {
        if ((c->s[i].fd = ub_socket(c, i)) < 0) {
            fprintf(stderr, "ferry-bench udp: socket %llu: %s\n",
                    (unsigned long long)i, strerror(errno));
            goto fail;
        }
    }
    return c;
fail:
    if (c->ep >= 0)
        close(c->ep);
    free(c->s);
    free(c->free);
    free(c);
    return NULL;
}

static void
ub_client_free(struct ub_client *c)
{
    uint64_t i;

    if (c == NULL)
        return;
    for (i = 0; i < c->o.concurrency; i++)
        if (c->s[i].fd >= 0)
            close(c->s[i].fd);
    close(c->ep);
    free(c->s);
    free(c->free);
    free(c);
}

/* Sum every thread's counters and histogram into <t>, whose options are
 * the run's. */
static void
ub_merge(struct ub_client *t, struct ub_client *const *all, unsigned n)
{
    unsigned i;
    int e;

    lathist_init(&t->hist);
    t->t_start = UINT64_MAX;
    for (i = 0; i < n; i++) {
        const struct ub_client *c = all[i];

        t->done += c->done;
        t->sockets += c->sockets;
        t->errors_total += c->errors_total;
        for (e = 0; e < BNET_ERR__COUNT; e++)
            t->errors[e] += c->errors[e];
        t->bytes_sent += c->bytes_sent;
        t->bytes_recv += c->bytes_recv;
        t->due += c->due;
        t->started += c->started;
        t->missed += c->missed;
        lathist_merge(&t->hist, &c->hist);
        if (c->t_start < t->t_start)
            t->t_start = c->t_start;
        if (c->t_end > t->t_end)
            t->t_end = c->t_end;
    }
}

static double
ub_q(const struct lathist *h, double q)
{
    return (double)lathist_quantile(h, q) / 1e3;
}

static void
ub_print(const struct ub_client *c, double secs)
{
    const struct ub_opts *o = &c->o;
    double rate = secs > 0 ? (double)c->done / secs : 0;
    double moved = (double)(c->bytes_sent + c->bytes_recv);
    int e;

    printf("{\"mode\":\"udp\",\"target\":\"%s\",\"label\":\"%s\","
           "\"duration_s\":%.3f,\"concurrency\":%llu,\"connections\":%llu,"
           "\"size\":%llu,\"reply_size\":%llu,\"threads\":%llu,"
           "\"source_port\":\"%s\",\"sockets\":%llu,",
           o->target_str, o->label, secs, (unsigned long long)o->concurrency,
           (unsigned long long)o->concurrency, (unsigned long long)o->size,
           (unsigned long long)o->reply_size, (unsigned long long)o->threads,
           o->fresh ? "fresh" : "pinned", (unsigned long long)c->sockets);
    if (o->rate > 0)
        printf("\"offered_rate\":%.1f,\"scheduled\":%llu,\"missed\":%llu,"
               "\"unsent\":%llu,",
               o->rate, (unsigned long long)c->due,
               (unsigned long long)c->missed,
               (unsigned long long)(c->due - c->started));
    printf("\"unit\":\"req\",\"count\":%llu,\"rate\":%.1f,\"errors\":{",
           (unsigned long long)c->done, rate);
    for (e = 0; e < BNET_ERR__COUNT; e++)
        printf("%s\"%s\":%llu", e ? "," : "", bnet_err_name(e),
               (unsigned long long)c->errors[e]);
    printf("},\"errors_total\":%llu,\"bytes_sent\":%llu,\"bytes_recv\":%llu,"
           "\"throughput_mbit_s\":%.1f,\"samples\":%llu,\"min_us\":%.1f,"
           "\"mean_us\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,"
           "\"p99_us\":%.1f,\"p999_us\":%.1f,\"p9999_us\":%.1f,"
           "\"max_us\":%.1f}\n",
           (unsigned long long)c->errors_total,
           (unsigned long long)c->bytes_sent, (unsigned long long)c->bytes_recv,
           secs > 0 ? moved * 8 / secs / 1e6 : 0,
           (unsigned long long)c->hist.count,
           c->hist.count ? (double)c->hist.min / 1e3 : 0,
           lathist_mean(&c->hist) / 1e3, ub_q(&c->hist, 0.50),
           ub_q(&c->hist, 0.90), ub_q(&c->hist, 0.99), ub_q(&c->hist, 0.999),
           ub_q(&c->hist, 0.9999), (double)c->hist.max / 1e3);
    fflush(stdout);
    if (o->quiet)
        return;
    fprintf(stderr, "udp %s (%s): %.2f s, %llu req, %.1f req/s", o->target_str,
            o->label, secs, (unsigned long long)c->done, rate);
    if (o->rate > 0)
        fprintf(stderr, " (offered %.1f), %llu missed their slot, %llu unsent",
                o->rate, (unsigned long long)c->missed,
                (unsigned long long)(c->due - c->started));
    if (o->threads > 1)
        fprintf(stderr, ", %llu threads", (unsigned long long)o->threads);
    fprintf(stderr, ", %s source ports, %llu errors",
            o->fresh ? "fresh" : "pinned", (unsigned long long)c->errors_total);
    for (e = 0; e < BNET_ERR__COUNT; e++)
        if (c->errors[e] > 0)
            fprintf(stderr, " %s=%llu", bnet_err_name(e),
                    (unsigned long long)c->errors[e]);
    fprintf(stderr, "\n");
    if (c->hist.count > 0)
        fprintf(stderr,
                "  latency us: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  "
                "p99.99 %.1f  max %.1f  (%llu samples)\n",
                ub_q(&c->hist, 0.50), ub_q(&c->hist, 0.90),
                ub_q(&c->hist, 0.99), ub_q(&c->hist, 0.999),
                ub_q(&c->hist, 0.9999), (double)c->hist.max / 1e3,
                (unsigned long long)c->hist.count);
}

int
udpbench_client_main(int argc, char **argv)
{
    struct ub_opts o;
    struct ub_client **all = NULL, *total = NULL;
    sigset_t block, old;
    unsigned n, i, started = 1;
    int rc = 1;

    memset(&o, 0, sizeof(o));
    if (ub_client_args(argc, argv, &o) < 0)
        return 2;
    n = (unsigned)o.threads;
    all = calloc(n, sizeof(*all));
    total = calloc(1, sizeof(*total));
    if (all == NULL || total == NULL)
        goto out;
    if (ub_check_fds(o.concurrency + 8 * n) < 0) {
        fprintf(stderr,
                "ferry-bench udp: %llu sockets need more open files "
                "than the limit allows\n",
                (unsigned long long)o.concurrency);
        goto out;
    }
    for (i = 0; i < n; i++)
        if ((all[i] = ub_client_new(&o, i)) == NULL)
            goto out;
    bnet_pattern(&(size_t){0});
    ub_signals();
    /* Thread 0 (this one) takes SIGINT and SIGTERM; ub_stop stops all. */
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    for (; started < n; started++)
        if (pthread_create(&all[started]->thread, NULL, ub_thread_main,
                           all[started])
            != 0) {
            fprintf(stderr, "ferry-bench udp: cannot start thread %u\n",
                    started);
            ub_stop = 1;
            break;
        }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (started == n)
        ub_run(all[0]);
    for (i = 1; i < started; i++)
        pthread_join(all[i]->thread, NULL);
    if (started == n) {
        total->o = o;
        ub_merge(total, all, n);
        ub_print(total, (double)(total->t_end - total->t_start) / 1e9);
        rc = 0;
    }
out:
    for (i = 0; all != NULL && i < n; i++)
        ub_client_free(all[i]);
    free(all);
    free(total);
    return rc;
}
