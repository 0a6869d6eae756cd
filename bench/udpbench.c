#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bnet.h"
#include "lathist.h"
#include "parse.h"
#include "udpbench.h"

#define UB_BATCH     32
#define UB_DGRAM_MAX 65536
#define UB_MAX_SLOTS 10000u
#define UB_TICK_MS   10

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

struct ub_serve {
    struct saddr listen;
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
    int o, have = 0;

    a->reply_size = 128;
    a->max_seconds = 3600;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if ((o == 'l' && ub_addr(optarg, &a->listen, "listen") < 0)
            || (o == 'r'
                && ub_number(optarg, 8, 65000, &a->reply_size, "reply-size")
                       < 0)
            || (o == 'x' && ub_seconds(optarg, &a->max_seconds, "max-seconds")
                                < 0)
            || o == '?')
            return -1;
        have |= o == 'l';
    }
    if (!have)
        fprintf(stderr, "ferry-bench udp-serve: --listen is required\n");
    return have ? 0 : -1;
}

/* Answer what <fd> holds, a batch at a time: reply slot i (of
 * <reply_size> bytes in <reply>) gets the tag of query i. */
static void
ub_answer(int fd, size_t reply_size, char *bufs, char *reply)
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
    uint64_t end;
    char *bufs, *reply;
    int fd, i;

    memset(&a, 0, sizeof(a));
    if (ub_serve_args(argc, argv, &a) < 0)
        return 2;
    fd = socket(a.listen.u.sa.sa_family,
                SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, &a.listen.u.sa, a.listen.len) < 0) {
        fprintf(stderr, "ferry-bench udp-serve: %s\n", strerror(errno));
        return 1;
    }
    bufs = malloc((size_t)UB_BATCH * UB_DGRAM_MAX);
    reply = malloc((size_t)UB_BATCH * a.reply_size);
    if (bufs == NULL || reply == NULL) {
        fprintf(stderr, "ferry-bench udp-serve: out of memory\n");
        return 1;
    }
    for (i = 0; i < UB_BATCH; i++) {
        size_t plen;
        const char *p = bnet_pattern(&plen);
        memcpy(reply + (size_t)i * a.reply_size, p,
               a.reply_size < plen ? a.reply_size : plen);
    }
    ub_signals();
    printf("ready\n");
    fflush(stdout);
    end = bnet_now_ns() + (uint64_t)(a.max_seconds * 1e9);
    while (!ub_stop && bnet_now_ns() < end) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) > 0)
            ub_answer(fd, a.reply_size, bufs, reply);
    }
    close(fd);
    free(bufs);
    free(reply);
    return 0;
}

/* ---- the client ---------------------------------------------------------- */

struct ub_slot {
    int fd;
    uint64_t tag; /* of the query in flight; 0: none */
    uint64_t t0;  /* when it was sent, ns */
};

struct ub_client {
    struct saddr target;
    char target_str[SADDR_STR_MAX];
    const char *label;
    uint64_t concurrency, size, reply_size, count;
    double duration, timeout;
    int quiet;
    struct ub_slot *s;
    uint64_t next_tag, done, launched;
    uint64_t errors[BNET_ERR__COUNT], errors_total;
    uint64_t bytes_sent, bytes_recv;
    struct lathist hist;
    char qbuf[UB_DGRAM_MAX], rbuf[UB_DGRAM_MAX];
};

static int
ub_client_args(int argc, char **argv, struct ub_client *c)
{
    static const struct option opts[] = {
        {"target", required_argument, NULL, 't'},
        {"concurrency", required_argument, NULL, 'c'},
        {"size", required_argument, NULL, 's'},
        {"reply-size", required_argument, NULL, 'r'},
        {"duration", required_argument, NULL, 'd'},
        {"count", required_argument, NULL, 'n'},
        {"timeout", required_argument, NULL, 'T'},
        {"label", required_argument, NULL, 'L'},
        {"quiet", no_argument, NULL, 'q'},
        {NULL, 0, NULL, 0},
    };
    int o, have = 0;

    c->concurrency = 32;
    c->size = 64;
    c->reply_size = 128;
    c->duration = 10;
    c->timeout = 1;
    c->count = UINT64_MAX;
    c->label = "";
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int bad = 0;
        switch (o) {
        case 't':
            bad = ub_addr(optarg, &c->target, "target");
            have = 1;
            break;
        case 'c':
            bad = ub_number(optarg, 1, UB_MAX_SLOTS, &c->concurrency,
                            "concurrency");
            break;
        case 's':
            bad = ub_number(optarg, 8, 65000, &c->size, "size");
            break;
        case 'r':
            bad = ub_number(optarg, 8, 65000, &c->reply_size, "reply-size");
            break;
        case 'd':
            bad = ub_seconds(optarg, &c->duration, "duration");
            break;
        case 'n':
            bad = ub_number(optarg, 1, UINT64_MAX - 1, &c->count, "count");
            break;
        case 'T':
            bad = ub_seconds(optarg, &c->timeout, "timeout");
            break;
        case 'L':
            c->label = optarg;
            break;
        case 'q':
            c->quiet = 1;
            break;
        default:
            return -1;
        }
        if (bad < 0)
            return -1;
    }
    if (!have)
        fprintf(stderr, "ferry-bench udp: --target is required\n");
    return have ? 0 : -1;
}

/* Send slot <i>'s next query. */
static void
ub_send(struct ub_client *c, struct ub_slot *s)
{
    if (c->launched >= c->count) {
        s->tag = 0;
        return;
    }
    s->tag = ++c->next_tag;
    memcpy(c->qbuf, &s->tag, 8);
    s->t0 = bnet_now_ns();
    if (send(s->fd, c->qbuf, c->size, 0) < 0) {
        c->errors[bnet_err_from_errno(-errno)]++;
        c->errors_total++;
        return; /* the sweep sends it again after the timeout */
    }
    c->launched++;
    c->bytes_sent += c->size;
}

static void
ub_on_readable(struct ub_client *c, struct ub_slot *s)
{
    ssize_t n;
    uint64_t tag;

    while ((n = recv(s->fd, c->rbuf, sizeof(c->rbuf), MSG_DONTWAIT)) >= 0
           || errno == EINTR || errno == ECONNREFUSED) {
        if (n < 0) {
            if (errno == ECONNREFUSED) {
                c->errors[BNET_ERR_REFUSED]++;
                c->errors_total++;
            }
            continue;
        }
        c->bytes_recv += (uint64_t)n;
        if (n < 8)
            continue;
        memcpy(&tag, c->rbuf, 8);
        if (tag != s->tag || s->tag == 0)
            continue; /* an answer after its timeout */
        if ((uint64_t)n != c->reply_size) {
            c->errors[BNET_ERR_SHORT_READ]++;
            c->errors_total++;
        }
        lathist_add(&c->hist, bnet_now_ns() - s->t0);
        c->done++;
        ub_send(c, s);
    }
}

/* Queries unanswered for --timeout: counted, and sent again. */
static void
ub_sweep(struct ub_client *c)
{
    uint64_t now = bnet_now_ns(), limit = (uint64_t)(c->timeout * 1e9);
    uint64_t i;

    for (i = 0; i < c->concurrency; i++) {
        struct ub_slot *s = &c->s[i];
        if (s->tag != 0 && now - s->t0 < limit)
            continue;
        if (s->tag != 0) {
            c->errors[BNET_ERR_TIMEOUT]++;
            c->errors_total++;
        }
        ub_send(c, s);
    }
}

static void
ub_print(const struct ub_client *c, double secs)
{
    double rate = secs > 0 ? (double)c->done / secs : 0;
    double moved = (double)(c->bytes_sent + c->bytes_recv);
    int e;

    printf("{\"mode\":\"udp\",\"target\":\"%s\",\"label\":\"%s\","
           "\"duration_s\":%.3f,\"concurrency\":%llu,\"connections\":%llu,"
           "\"size\":%llu,\"reply_size\":%llu,\"unit\":\"req\","
           "\"count\":%llu,\"rate\":%.1f,\"errors\":{",
           c->target_str, c->label, secs, (unsigned long long)c->concurrency,
           (unsigned long long)c->concurrency, (unsigned long long)c->size,
           (unsigned long long)c->reply_size, (unsigned long long)c->done,
           rate);
    for (e = 0; e < BNET_ERR__COUNT; e++)
        printf("%s\"%s\":%llu", e ? "," : "", bnet_err_name(e),
               (unsigned long long)c->errors[e]);
    printf("},\"errors_total\":%llu,\"bytes_sent\":%llu,\"bytes_recv\":%llu,"
           "\"throughput_mbit_s\":%.1f,\"samples\":%llu,\"min_us\":%.1f,"
           "\"mean_us\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,"
           "\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f}\n",
           (unsigned long long)c->errors_total,
           (unsigned long long)c->bytes_sent,
           (unsigned long long)c->bytes_recv,
           secs > 0 ? moved * 8 / secs / 1e6 : 0,
           (unsigned long long)c->hist.count,
           c->hist.count ? c->hist.min / 1e3 : 0,
           lathist_mean(&c->hist) / 1e3,
           lathist_quantile(&c->hist, 0.50) / 1e3,
           lathist_quantile(&c->hist, 0.90) / 1e3,
           lathist_quantile(&c->hist, 0.99) / 1e3,
           lathist_quantile(&c->hist, 0.999) / 1e3, c->hist.max / 1e3);
    fflush(stdout);
    if (!c->quiet)
        fprintf(stderr,
                "udp %s (%s): %.2f s, %llu req, %.1f req/s, %llu errors, "
                "p50 %.1f us p99 %.1f us\n",
                c->target_str, c->label, secs, (unsigned long long)c->done,
                rate, (unsigned long long)c->errors_total,
                lathist_quantile(&c->hist, 0.50) / 1e3,
                lathist_quantile(&c->hist, 0.99) / 1e3);
}

static int
ub_open(struct ub_client *c, int ep)
{
    uint64_t i;

    for (i = 0; i < c->concurrency; i++) {
        struct epoll_event ev = {EPOLLIN, {.u64 = i}};
        int fd = socket(c->target.u.sa.sa_family,
                        SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        c->s[i].fd = fd;
        if (fd < 0 || connect(fd, &c->target.u.sa, c->target.len) < 0
            || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            fprintf(stderr, "ferry-bench udp: socket %llu: %s\n",
                    (unsigned long long)i, strerror(errno));
            return -1;
        }
    }
    return 0;
}

int
udpbench_client_main(int argc, char **argv)
{
    struct ub_client *c = calloc(1, sizeof(*c));
    struct epoll_event evs[64];
    uint64_t t0, end, i, last_sweep;
    int ep = -1, rc = 1, n, k;

    if (c == NULL)
        return 1;
    if (ub_client_args(argc, argv, c) < 0) {
        free(c);
        return 2;
    }
    saddr_str(&c->target, c->target_str, sizeof(c->target_str));
    lathist_init(&c->hist);
    c->s = calloc(c->concurrency, sizeof(*c->s));
    for (i = 0; c->s != NULL && i < c->concurrency; i++)
        c->s[i].fd = -1;
    if (c->s == NULL || (ep = epoll_create1(EPOLL_CLOEXEC)) < 0
        || ub_open(c, ep) < 0)
        goto out;
    bnet_pattern(&(size_t){0});
    ub_signals();
    t0 = last_sweep = bnet_now_ns();
    end = t0 + (uint64_t)(c->duration * 1e9);
    for (i = 0; i < c->concurrency; i++)
        ub_send(c, &c->s[i]);
    while (!ub_stop && c->done < c->count && bnet_now_ns() < end) {
        n = epoll_wait(ep, evs, 64, UB_TICK_MS);
        for (k = 0; k < n; k++)
            ub_on_readable(c, &c->s[evs[k].data.u64]);
        if (bnet_now_ns() - last_sweep >= UB_TICK_MS * 1000000ull) {
            ub_sweep(c);
            last_sweep = bnet_now_ns();
        }
    }
    ub_print(c, (double)(bnet_now_ns() - t0) / 1e9);
    rc = 0;
out:
    for (i = 0; c->s != NULL && i < c->concurrency; i++)
        if (c->s[i].fd >= 0)
            close(c->s[i].fd);
    if (ep >= 0)
        close(ep);
    free(c->s);
    free(c);
    return rc;
}
