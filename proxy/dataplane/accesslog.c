#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"
#include "log.h"

const char *const accesslog_cause_text[ACCESSLOG__COUNT] = {
    [ACCESSLOG_CLIENT_CLOSE] = "client_close",
    [ACCESSLOG_SERVER_CLOSE] = "server_close",
    [ACCESSLOG_IDLE_TIMEOUT] = "idle_timeout",
    [ACCESSLOG_RELAY_ERROR] = "relay_error",
    [ACCESSLOG_CONNECT_FAILURE] = "connect_failure",
    [ACCESSLOG_NO_BACKEND] = "no_backend",
    [ACCESSLOG_DRAIN_RESET] = "drain_reset",
    [ACCESSLOG_LIMIT] = "limit",
    [ACCESSLOG_SOURCE_DENY] = "source_deny",
    [ACCESSLOG_SOURCE_NOT_ALLOWED] = "source_not_allowed",
    [ACCESSLOG_SOURCE_MAX] = "source_max_per_source",
    [ACCESSLOG_SOURCE_RATE] = "source_rate_per_source",
    [ACCESSLOG_PROXY_TIMEOUT] = "proxy_header_timeout",
    [ACCESSLOG_PROXY_INVALID] = "proxy_header_invalid",
    [ACCESSLOG_PROXY_CLOSED] = "proxy_header_closed",
    [ACCESSLOG_RESOURCE] = "resource",
    [ACCESSLOG_DRAIN_TIMEOUT] = "drain_timeout",
    [ACCESSLOG_SNI_NO_MATCH] = "sni_no_match",
    [ACCESSLOG_SNI_NO_SNI] = "sni_no_sni",
    [ACCESSLOG_SNI_MALFORMED] = "sni_malformed",
    [ACCESSLOG_SNI_TIMEOUT] = "sni_timeout",
    [ACCESSLOG_SNI_CLOSED] = "sni_closed",
};

/* ---- formatting ---------------------------------------------------------- */

#define ACCESSLOG_NAME_CUT 160 /* service names are at most 127 bytes */

/* Append <s> (at most <max> bytes of it) to <out> at <n>, escaped for a
 * JSON string when <json>, else as is. Returns the new length. */
static size_t
put_str(char *out, size_t cap, size_t n, const char *s, size_t max, int json)
{
    size_t i;

    for (i = 0; s[i] != '\0' && i < max && n + 7 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (json && (ch == '"' || ch == '\\')) {
            out[n++] = '\\';
            out[n++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            n += (size_t)snprintf(out + n, cap - n, json ? "\\u%04x" : "?", ch);
        } else {
            out[n++] = (char)ch;
        }
    }
    return n;
}

static size_t put_fmt(char *out, size_t cap, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static size_t
put_fmt(char *out, size_t cap, size_t n, const char *fmt, ...)
{
    va_list ap;
    int k;

    if (n >= cap)
        return n;
    va_start(ap, fmt);
    k = vsnprintf(out + n, cap - n, fmt, ap);
    va_end(ap);
    if (k < 0)
        return n;
    return n + (size_t)k < cap ? n + (size_t)k : cap - 1;
}

/* "2026-01-02T03:04:05.678Z" for Unix time <t>. */
static void
fmt_time(double t, char out[64])
{
    time_t s;
    struct tm tm;
    int ms;

    if (!(t >= 0))
        t = 0;
    s = (time_t)t;
    ms = (int)((t - (double)s) * 1000);
    if (ms > 999)
        ms = 999;
    gmtime_r(&s, &tm);
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

size_t
accesslog_format(const struct accesslog_rec *r,
                 enum conf_access_log_format format, char *out)
{
    const size_t cap = ACCESSLOG_LINE_MAX - 1; /* room for the newline */
    int json = format == CONF_ACCESS_LOG_JSON;
    char ts[64], cl[SADDR_STR_MAX];
    const char *be = r->backend != NULL ? r->backend : "-";
    const char *cause = (unsigned)r->cause < ACCESSLOG__COUNT
                            ? accesslog_cause_text[r->cause]
                            : "unknown";
    double dur = r->end - r->start;
    size_t n;

    fmt_time(r->end, ts);
    saddr_str(r->client, cl, sizeof(cl));
    if (!(dur >= 0))
        dur = 0;
    if (json) {
        n = put_fmt(out, cap, 0,
                    "{\"time\":\"%s\",\"id\":%llu,"
                    "\"client\":\"%s\",\"service\":\"",
                    ts, (unsigned long long)r->id, cl);
        n = put_str(out, cap, n, r->service, ACCESSLOG_NAME_CUT, 1);
        n = put_fmt(out, cap, n, "\",\"backend\":");
        if (r->backend != NULL) {
            n = put_fmt(out, cap, n, "\"");
            n = put_str(out, cap, n, be, ACCESSLOG_NAME_CUT, 1);
            n = put_fmt(out, cap, n, "\"");
        } else {
            n = put_fmt(out, cap, n, "null");
        }
        n = put_fmt(out, cap, n,
                    ",\"attempts\":%u,\"connect_ms\":", r->attempts);
        if (r->connect >= 0)
            n = put_fmt(out, cap, n, "%.3f", r->connect * 1e3);
        else
            n = put_fmt(out, cap, n, "null");
        n = put_fmt(out, cap, n,
                    ",\"duration_ms\":%.3f,\"bytes_up\":%llu,"
                    "\"bytes_down\":%llu,\"cause\":\"%s\"}",
                    dur * 1e3, (unsigned long long)r->bytes_up,
                    (unsigned long long)r->bytes_down, cause);
    } else {
        n = put_fmt(out, cap, 0, "%s id=%llu client=%s service=", ts,
                    (unsigned long long)r->id, cl);
        n = put_str(out, cap, n, r->service, ACCESSLOG_NAME_CUT, 0);
        n = put_fmt(out, cap, n, " backend=");
        n = put_str(out, cap, n, be, ACCESSLOG_NAME_CUT, 0);
        n = put_fmt(out, cap, n, " attempts=%u connect_ms=", r->attempts);
        if (r->connect >= 0)
            n = put_fmt(out, cap, n, "%.3f", r->connect * 1e3);
        else
            n = put_fmt(out, cap, n, "-");
        n = put_fmt(out, cap, n,
                    " duration_ms=%.3f bytes_up=%llu bytes_down=%llu "
                    "cause=%s",
                    dur * 1e3, (unsigned long long)r->bytes_up,
                    (unsigned long long)r->bytes_down, cause);
    }
    out[n++] = '\n';
    return n;
}

/* ---- rings --------------------------------------------------------------- */

/* One producer (a worker), one consumer (the writer). <head> counts the
 * lines pushed, <tail> those popped; each on a cache line of its own. */
struct accesslog_ring {
    _Alignas(64) atomic_size_t head;
    _Alignas(64) atomic_size_t tail;
    size_t n;
    uint16_t *len;
    char *slots; /* n * ACCESSLOG_LINE_MAX */
};

struct accesslog_ring *
accesslog_ring_new(size_t lines)
{
    struct accesslog_ring *rg;

    if (lines == 0 || lines > (SIZE_MAX / ACCESSLOG_LINE_MAX))
        return NULL;
    rg = aligned_alloc(64, sizeof(*rg));
    if (rg == NULL)
        return NULL;
    memset(rg, 0, sizeof(*rg));
    rg->n = lines;
    rg->len = calloc(lines, sizeof(*rg->len));
    rg->slots = malloc(lines * ACCESSLOG_LINE_MAX);
    if (rg->len == NULL || rg->slots == NULL) {
        accesslog_ring_free(rg);
        return NULL;
    }
    return rg;
}

void
accesslog_ring_free(struct accesslog_ring *rg)
{
    if (rg == NULL)
        return;
    free(rg->len);
    free(rg->slots);
    free(rg);
}

char *
accesslog_ring_slot(struct accesslog_ring *rg)
{
    size_t h = atomic_load_explicit(&rg->head, memory_order_relaxed);
    size_t t = atomic_load_explicit(&rg->tail, memory_order_acquire);

    if (h - t >= rg->n)
        return NULL;
    return rg->slots + (h % rg->n) * ACCESSLOG_LINE_MAX;
}

void
accesslog_ring_push(struct accesslog_ring *rg, size_t len)
{
    size_t h = atomic_load_explicit(&rg->head, memory_order_relaxed);

    rg->len[h % rg->n] = (uint16_t)len;
    atomic_store_explicit(&rg->head, h + 1, memory_order_release);
}

const char *
accesslog_ring_peek(struct accesslog_ring *rg, size_t *len)
{
    size_t t = atomic_load_explicit(&rg->tail, memory_order_relaxed);
    size_t h = atomic_load_explicit(&rg->head, memory_order_acquire);

    if (h == t)
        return NULL;
    *len = rg->len[t % rg->n];
    return rg->slots + (t % rg->n) * ACCESSLOG_LINE_MAX;
}

void
accesslog_ring_pop(struct accesslog_ring *rg)
{
    size_t t = atomic_load_explicit(&rg->tail, memory_order_relaxed);

    atomic_store_explicit(&rg->tail, t + 1, memory_order_release);
}

/* ---- the writer ---------------------------------------------------------- */

#define ACCESSLOG_BATCH      (64 * 1024) /* bytes per write() to a stream */
#define ACCESSLOG_IDLE_MS    500 /* the writer's sleep when woken by none */
#define ACCESSLOG_BLOCKED_MS 100 /* wait for a full sink, then look again */
#define ACCESSLOG_STOP_S     1.0 /* at exit, give a stuck sink this long */

/* What the writer writes to. */
struct accesslog_sink {
    int fd; /* -1: none */
    enum conf_access_log_target target;
    int facility; /* syslog */
};

static struct {
    pthread_mutex_t mu;
    pthread_t tid;
    int started; /* control loop */
    int efd;     /* wakes the writer */
    atomic_int sleeping;
    struct accesslog_ring **rings; /* one per worker, set once */
    unsigned nrings;
    atomic_int format;
    struct conf_access_log conf; /* control loop: in force */
    /* Under mu: a sink to switch to, and the order to stop. */
    struct accesslog_sink next;
    atomic_int have_next; /* also read without mu, by the writer */
    int stop;
    atomic_uint_fast64_t lines, dropped;
    /* The writer's own. */
    struct accesslog_sink sink;
    char host[256];
    int pid;
    uint64_t reported; /* drops already reported */
    double report_at;
} al = {.mu = PTHREAD_MUTEX_INITIALIZER, .efd = -1};

atomic_int accesslog_enabled_flag;

uint64_t
accesslog_lines(void)
{
    return atomic_load(&al.lines);
}

uint64_t
accesslog_dropped(void)
{
    return atomic_load(&al.dropped);
}

static double
now_s(int clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
writer_wake(void)
{
    uint64_t one = 1;

    if (al.efd >= 0 && write(al.efd, &one, sizeof(one)) < 0) {
        /* the counter is already nonzero: the writer will wake */
    }
}

/* Wait for <fd> to take more (or the wake-up), at most <ms>. */
static void
writer_wait(int fd, short events, int ms)
{
    struct pollfd p[2] = {{al.efd, POLLIN, 0}, {fd, events, 0}};
    uint64_t v;

    if (poll(p, fd >= 0 ? 2 : 1, ms) > 0 && (p[0].revents & POLLIN)
        && read(al.efd, &v, sizeof(v)) < 0) {
        /* nothing to take */
    }
}

static int
writer_stopping(void)
{
    int s;

    pthread_mutex_lock(&al.mu);
    s = al.stop;
    pthread_mutex_unlock(&al.mu);
    return s;
}

/* Switch to the sink the control loop posted, if it posted one (mu
 * held). Returns nonzero when it did. */
static int
writer_switch_locked(void)
{
    if (!atomic_load(&al.have_next))
        return 0;
    if (al.sink.fd >= 0)
        close(al.sink.fd);
    al.sink = al.next;
    atomic_store(&al.have_next, 0);
    return 1;
}

/* Take a new sink if the control loop posted one. Returns nonzero when
 * told to stop. */
static int
writer_take_orders(void)
{
    int stop;

    pthread_mutex_lock(&al.mu);
    writer_switch_locked();
    stop = al.stop;
    pthread_mutex_unlock(&al.mu);
    return stop;
}

/* A sink posted since this round took its orders (a SIGUSR1 while the
 * writer was busy or not yet scheduled): taken before the next line, so
 * that a line written after "access log: reopened" goes to the new sink,
 * not to a syslog socket whose daemon is gone. Returns nonzero when the
 * sink changed. */
static int
writer_newer_sink(int surely)
{
    int took;

    if (!surely && !atomic_load_explicit(&al.have_next, memory_order_relaxed))
        return 0;
    pthread_mutex_lock(&al.mu);
    took = writer_switch_locked();
    pthread_mutex_unlock(&al.mu);
    return took;
}

/* Write <n> bytes of whole lines (<nlines> of them) to a stream sink. */
static void
writer_stream(const char *buf, size_t n, uint64_t nlines, double give_up)
{
    size_t off = 0;
    ssize_t k;

    while (off < n) {
        k = write(al.sink.fd, buf + off, n - off);
        if (k > 0) {
            off += (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == EAGAIN
            && (!writer_stopping() || now_s(CLOCK_MONOTONIC) < give_up)) {
            writer_wait(al.sink.fd, POLLOUT, ACCESSLOG_BLOCKED_MS);
            continue;
        }
        log_rl(LOG_ERROR, now_s(CLOCK_MONOTONIC),
               "access log: write failed: %s; %llu line(s) lost",
               k < 0 ? strerror(errno) : "nothing written",
               (unsigned long long)nlines);
        atomic_fetch_add(&al.dropped, nlines);
        return;
    }
    atomic_fetch_add(&al.lines, nlines);
}

/* Send one line to syslog (RFC 5424, over a datagram socket). Returns 0
 * when it is done with (sent, or lost and counted), -EAGAIN when the
 * socket is full: the caller keeps the line and waits; 1 when the send
 * failed but a new sink was posted meanwhile: the caller writes the line
 * again, to that one. */
static int
writer_syslog(const char *line, size_t len)
{
    char msg[ACCESSLOG_LINE_MAX + 512], ts[64];
    int n;

    fmt_time(now_s(CLOCK_REALTIME), ts);
    n = snprintf(msg, sizeof(msg), "<%d>1 %s %s ferry %d - - ",
                 al.sink.facility * 8 + 6, ts, al.host, al.pid);
    if (n < 0 || (size_t)n + len > sizeof(msg))
        n = 0;
    memcpy(msg + n, line, len - 1); /* without the newline */
    if (send(al.sink.fd, msg, (size_t)n + len - 1, MSG_DONTWAIT | MSG_NOSIGNAL)
        >= 0) {
        atomic_fetch_add(&al.lines, 1);
        return 0;
    }
    if (errno == EAGAIN || errno == ENOBUFS)
        return -EAGAIN;
    if (writer_newer_sink(1))
        return 1;
    log_rl(LOG_ERROR, now_s(CLOCK_MONOTONIC),
           "access log: syslog send failed: %s (SIGUSR1 reconnects)",
           strerror(errno));
    atomic_fetch_add(&al.dropped, 1);
    return 0;
}

/* Move what ring <rg> holds to the sink. Returns the lines taken, or -1
 * when the sink is full (syslog). */
static long
writer_drain_ring(struct accesslog_ring *rg, char *batch, double give_up)
{
    const char *line;
    size_t len, n = 0;
    uint64_t nl = 0;
    long taken = 0;
    int r;

    while ((line = accesslog_ring_peek(rg, &len)) != NULL) {
        if (n > 0
            && atomic_load_explicit(&al.have_next, memory_order_relaxed)) {
            writer_stream(batch, n, nl, give_up); /* before the switch */
            n = 0;
            nl = 0;
        }
        writer_newer_sink(0);
        if (al.sink.fd < 0) {
            atomic_fetch_add(&al.dropped, 1);
        } else if (al.sink.target == CONF_ACCESS_LOG_SYSLOG) {
            r = writer_syslog(line, len);
            if (r < 0)
                return -1;
            if (r > 0)
                continue; /* the same line, to the new sink */
        } else {
            if (n + len > ACCESSLOG_BATCH) {
                writer_stream(batch, n, nl, give_up);
                n = 0;
                nl = 0;
            }
            memcpy(batch + n, line, len);
            n += len;
            nl++;
        }
        accesslog_ring_pop(rg);
        taken++;
    }
    if (n > 0)
        writer_stream(batch, n, nl, give_up);
    return taken;
}

/* Tell the operator, at most once a second, that lines were dropped. */
static void
writer_report(void)
{
    uint64_t d = accesslog_dropped();
    double t = now_s(CLOCK_MONOTONIC);

    if (d == al.reported || t < al.report_at)
        return;
    log_warn("access log: %llu line(s) dropped (buffer full or sink "
             "failing), %llu in all",
             (unsigned long long)(d - al.reported), (unsigned long long)d);
    al.reported = d;
    al.report_at = t + 1;
}

static void *
writer_main(void *arg)
{
    static char batch[ACCESSLOG_BATCH];
    double give_up = 0;
    int stop, full;
    unsigned i;
    long k, moved;

    (void)arg;
    for (;;) {
        stop = writer_take_orders();
        if (stop && give_up == 0)
            give_up = now_s(CLOCK_MONOTONIC) + ACCESSLOG_STOP_S;
        moved = 0;
        full = 0;
        for (i = 0; i < al.nrings; i++) {
            k = writer_drain_ring(al.rings[i], batch, give_up);
            if (k < 0)
                full = 1;
            else
                moved += k;
        }
        writer_report();
        if (stop && (!full || now_s(CLOCK_MONOTONIC) >= give_up))
            break;
        if (full) {
            writer_wait(al.sink.fd, POLLOUT, ACCESSLOG_BLOCKED_MS);
            continue;
        }
        if (moved > 0)
            continue;
        /* Going to sleep: producers wake us from now on. A line pushed
         * before the flag was seen is caught by the look below. */
        atomic_store(&al.sleeping, 1);
        for (i = 0; i < al.nrings; i++)
            if (accesslog_ring_peek(al.rings[i], &(size_t){0}) != NULL)
                break;
        if (i == al.nrings)
            writer_wait(-1, 0, ACCESSLOG_IDLE_MS);
        atomic_store(&al.sleeping, 0);
    }
    return NULL;
}

/* ---- control ------------------------------------------------------------- */

static const int facility_code[] = {
    [CONF_SYSLOG_USER] = 1,    [CONF_SYSLOG_DAEMON] = 3,
    [CONF_SYSLOG_LOCAL0] = 16, [CONF_SYSLOG_LOCAL1] = 17,
    [CONF_SYSLOG_LOCAL2] = 18, [CONF_SYSLOG_LOCAL3] = 19,
    [CONF_SYSLOG_LOCAL4] = 20, [CONF_SYSLOG_LOCAL5] = 21,
    [CONF_SYSLOG_LOCAL6] = 22, [CONF_SYSLOG_LOCAL7] = 23,
};

/* Open the sink <c> names into <s>. Returns 0, or -1 with <e> set. */
static int
sink_open(const struct conf_access_log *c, struct accesslog_sink *s,
          struct err *e)
{
    struct sockaddr_un sun;
    int fd, err;

    s->target = c->target;
    s->facility = facility_code[c->syslog_facility];
    switch (c->target) {
    case CONF_ACCESS_LOG_STDERR:
        fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
            return err_set(e, "access_log: cannot use stderr: %s",
                           strerror(errno));
        break;
    case CONF_ACCESS_LOG_FILE:
        /* Non-blocking so that a FIFO cannot hold the writer forever. */
        fd = open(c->path,
                  O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY
                      | O_NONBLOCK,
                  0640);
        if (fd < 0)
            return err_set(e, "access_log: cannot open %s: %s", c->path,
                           strerror(errno));
        break;
    default:
        memset(&sun, 0, sizeof(sun));
        sun.sun_family = AF_UNIX;
        if (strlen(c->syslog_socket) >= sizeof(sun.sun_path))
            return err_set(e, "access_log: syslog_socket %s is too long",
                           c->syslog_socket);
        strcpy(sun.sun_path, c->syslog_socket);
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return err_set(e, "access_log: socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
            err = errno;
            close(fd);
            return err_set(e, "access_log: cannot reach syslog at %s: %s",
                           c->syslog_socket, strerror(err));
        }
        break;
    }
    s->fd = fd;
    return 0;
}

static void
post_sink(const struct accesslog_sink *s)
{
    pthread_mutex_lock(&al.mu);
    if (al.have_next && al.next.fd >= 0)
        close(al.next.fd); /* never taken */
    al.next = *s;
    al.have_next = 1;
    pthread_mutex_unlock(&al.mu);
    writer_wake();
}

static int
writer_start(const struct conf_access_log *c, unsigned nworkers, struct err *e)
{
    unsigned i;
    int rc;

    al.rings = calloc(nworkers, sizeof(*al.rings));
    if (al.rings == NULL)
        return err_set(e, "access_log: out of memory");
    for (i = 0; i < nworkers; i++)
        if ((al.rings[i] = accesslog_ring_new(c->buffer)) == NULL)
            goto nomem;
    al.nrings = nworkers;
    al.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (al.efd < 0) {
        err_set(e, "access_log: eventfd: %s", strerror(errno));
        goto fail;
    }
    if (gethostname(al.host, sizeof(al.host) - 1) < 0 || al.host[0] == '\0')
        strcpy(al.host, "-");
    al.pid = (int)getpid();
    al.sink.fd = -1;
    rc = pthread_create(&al.tid, NULL, writer_main, NULL);
    if (rc != 0) {
        err_set(e, "access_log: cannot start its thread: %s", strerror(rc));
        goto fail;
    }
    al.started = 1;
    return 0;
nomem:
    err_set(e, "access_log: out of memory for %u ring(s) of %u lines", nworkers,
            c->buffer);
fail:
    if (al.efd >= 0)
        close(al.efd);
    al.efd = -1;
    for (i = 0; i < nworkers; i++)
        accesslog_ring_free(al.rings[i]);
    free(al.rings);
    al.rings = NULL;
    al.nrings = 0;
    return -1;
}

int
accesslog_configure(const struct conf_access_log *c, unsigned nworkers,
                    struct err *e)
{
    struct accesslog_sink s;

    if (al.started && c->buffer != al.rings[0]->n)
        log_warn("access_log: buffer changed (%zu to %u lines): it takes "
                 "effect at the next start",
                 al.rings[0]->n, c->buffer);
    if (!c->enabled) {
        atomic_store(&accesslog_enabled_flag, 0);
        al.conf = *c;
        return 0;
    }
    if (sink_open(c, &s, e) < 0)
        return -1;
    if (!al.started && writer_start(c, nworkers, e) < 0) {
        close(s.fd);
        return -1;
    }
    post_sink(&s);
    al.conf = *c;
    atomic_store(&al.format, (int)c->format);
    atomic_store_explicit(&accesslog_enabled_flag, 1, memory_order_release);
    return 0;
}

void
accesslog_reopen(void)
{
    struct accesslog_sink s;
    char msg[ERR_STR_MAX];
    struct err e;

    if (!al.started || !al.conf.enabled)
        return;
    err_clear(&e);
    if (sink_open(&al.conf, &s, &e) < 0) {
        log_error("%s; keeping the old one", err_str(&e, msg, sizeof(msg)));
        return;
    }
    post_sink(&s);
    log_info("access log: reopened");
}

void
accesslog_emit(unsigned worker, const struct accesslog_rec *r)
{
    struct accesslog_ring *rg;
    char *slot;

    /* Pairs with the release store of the flag: the rings are there. */
    atomic_thread_fence(memory_order_acquire);
    if (worker >= al.nrings || (rg = al.rings[worker]) == NULL
        || (slot = accesslog_ring_slot(rg)) == NULL) {
        atomic_fetch_add_explicit(&al.dropped, 1, memory_order_relaxed);
        return;
    }
    accesslog_ring_push(
        rg, accesslog_format(r,
                             (enum conf_access_log_format)atomic_load_explicit(
                                 &al.format, memory_order_relaxed),
                             slot));
    if (atomic_load_explicit(&al.sleeping, memory_order_relaxed)
        && atomic_exchange(&al.sleeping, 0))
        writer_wake();
}

void
accesslog_shutdown(void)
{
    struct timespec ts;
    unsigned i;

    atomic_store(&accesslog_enabled_flag, 0);
    if (!al.started)
        return;
    pthread_mutex_lock(&al.mu);
    al.stop = 1;
    pthread_mutex_unlock(&al.mu);
    writer_wake();
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 3;
    /* A sink that blocks for good (a stuck pipe on stderr) must not keep
     * the process from exiting: leave the thread and what it uses. */
    if (pthread_timedjoin_np(al.tid, NULL, &ts) != 0) {
        log_warn("access log: the writer is stuck; exiting without it");
        return;
    }
    al.started = 0;
    if (al.sink.fd >= 0)
        close(al.sink.fd);
    if (al.have_next && al.next.fd >= 0)
        close(al.next.fd);
    al.have_next = 0;
    al.sink.fd = -1;
    close(al.efd);
    al.efd = -1;
    for (i = 0; i < al.nrings; i++)
        accesslog_ring_free(al.rings[i]);
    free(al.rings);
    al.rings = NULL;
    al.nrings = 0;
}
