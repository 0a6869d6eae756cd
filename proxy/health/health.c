#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend.h"
#include "health.h"
#include "log.h"
#include "svc.h"

#define HC_BUF 256 /* enough for the status line */

enum hc_phase {
    HC_IDLE,
    HC_CONNECTING,
    HC_SENDING,
    HC_READING,
};

struct hc {
    struct hc *next;
    struct health *h;
    struct backend *b; /* reference */
    struct tbl_check spec; /* its path is <path> */
    char path[TBL_CHECK_PATH_MAX];
    char svc[TBL_NAME_MAX];  /* service whose check this is, for logs */
    char name[TBL_NAME_MAX]; /* backend name in that service */
    struct health_sm sm;
    struct ev_timer timer; /* next probe while idle, probe timeout else */
    struct ev_io io;
    enum hc_phase phase;
    double started, last_check;
    size_t len, sent, reqlen;
    char buf[HC_BUF];
    char req[TBL_CHECK_PATH_MAX + 128];
    char cause[128];
    int mark;     /* health_apply(): 0 none, 1 kept, 2 new */
    int mark_tgt; /* wanted by a target (health_set_targets) */
    int by_svc;   /* a proxy service sets its spec */
};

struct health {
    struct ev_loop *loop;
    struct hc *list;
    void (*on_change)(void *);
    void *on_change_arg;
    size_t svcs_checked; /* services with a check at the last apply */
};

/* ---- state machine ------------------------------------------------------ */

void
health_sm_init(struct health_sm *sm)
{
    sm->up = 1;
    sm->ok_run = 0;
    sm->fail_run = 0;
}

enum health_change
health_sm_feed(struct health_sm *sm, int ok, uint32_t rise, uint32_t fall)
{
    if (sm->up) {
        sm->ok_run = 0;
        if (ok) {
            sm->fail_run = 0;
            return HEALTH_SAME;
        }
        if (++sm->fail_run < (fall ? fall : 1))
            return HEALTH_SAME;
        sm->up = 0;
        sm->fail_run = 0;
        return HEALTH_WENT_DOWN;
    }
    sm->fail_run = 0;
    if (!ok) {
        sm->ok_run = 0;
        return HEALTH_SAME;
    }
    if (++sm->ok_run < (rise ? rise : 1))
        return HEALTH_SAME;
    sm->up = 1;
    sm->ok_run = 0;
    return HEALTH_WENT_UP;
}

double
health_spread(size_t index, size_t n, double interval)
{
    if (n <= 1 || index >= n)
        return 0;
    return interval * (double)index / (double)n;
}

int
health_http_status(const char *buf, size_t len)
{
    static const char pfx[] = "HTTP/1.";
    size_t i, p = sizeof(pfx) - 1;
    int code = 0;

    for (i = 0; i < len && i < p; i++)
        if (buf[i] != pfx[i])
            return -1;
    if (len < p + 6) /* "HTTP/1.x NNN" */
        return 0;
    if (buf[p] < '0' || buf[p] > '9' || buf[p + 1] != ' ')
        return -1;
    for (i = p + 2; i < p + 5; i++) {
        if (buf[i] < '0' || buf[i] > '9')
            return -1;
        code = code * 10 + (buf[i] - '0');
    }
    if (buf[p + 5] != ' ' && buf[p + 5] != '\r' && buf[p + 5] != '\n')
        return -1;
    return code >= 100 && code <= 599 ? code : -1;
}

/* ---- probes ------------------------------------------------------------- */

static void hc_on_timer(struct ev_loop *loop, struct ev_timer *t, int rev);
static void hc_on_io(struct ev_loop *loop, struct ev_io *io, int rev);

/* Count a transition of <b> to down (0) or up (1). */
static void
health_count(struct backend *b, int up)
{
    struct backend_ctr *k = backend_ctr(b);

    if (k != NULL)
        stats_inc(up ? &k->n_went_up : &k->n_went_down);
}

static void
hc_close(struct hc *c)
{
    ev_io_stop(c->h->loop, &c->io);
    if (c->io.fd >= 0)
        close(c->io.fd);
    ev_io_set(&c->io, -1, 0);
    c->phase = HC_IDLE;
}

/* Arm the timer for the next probe, one interval after the last start
 * (never in the past, so a slow probe does not cause a burst). */
static void
hc_schedule(struct hc *c, double delay)
{
    ev_timer_stop(c->h->loop, &c->timer);
    ev_timer_set(&c->timer, delay > 0 ? delay : 0.001, 0.);
    ev_timer_start(c->h->loop, &c->timer);
}

/* <c> checks as <spec> says, with a copy of its path (the table that
 * lent it may go before the next apply). */
static void
hc_set_spec(struct hc *c, const struct tbl_check *spec)
{
    c->spec = *spec;
    snprintf(c->path, sizeof(c->path), "%s",
             spec->path != NULL ? spec->path : "");
    c->spec.path = c->path;
}

static const char *
hc_type_name(const struct hc *c)
{
    return c->spec.type == TBL_CHECK_HTTP ? "HTTP" : "TCP";
}

static void
hc_done(struct hc *c, int ok, const char *cause)
{
    struct ev_loop *loop = c->h->loop;
    enum health_change ch;
    uint32_t runs;
    double next;

    hc_close(c);
    c->last_check = ev_now(loop);
    if (ok) {
        c->cause[0] = '\0';
        backend_on_probe_ok(c->b);
    } else {
        snprintf(c->cause, sizeof(c->cause), "%s", cause);
    }
    runs = c->sm.up ? c->sm.fail_run + 1 : c->sm.ok_run + 1;
    ch = health_sm_feed(&c->sm, ok, c->spec.rise, c->spec.fall);
    if (ch == HEALTH_WENT_DOWN) {
        atomic_store(&c->b->health, BACKEND_HEALTH_DOWN);
        health_count(c->b, 0);
        log_warn("health: backend %s (%s) of service %s is DOWN: %s "
                 "(%u failed %s check(s) in a row)",
                 c->name, BACKEND_ADDR(c->b), c->svc, cause, runs,
                 hc_type_name(c));
    } else if (ch == HEALTH_WENT_UP) {
        atomic_store(&c->b->health, BACKEND_HEALTH_UP);
        health_count(c->b, 1);
        log_info("health: backend %s (%s) of service %s is UP: %u passed %s "
                 "check(s) in a row",
                 c->name, BACKEND_ADDR(c->b), c->svc, runs, hc_type_name(c));
    }
    if (ch != HEALTH_SAME && c->h->on_change != NULL)
        c->h->on_change(c->h->on_change_arg);
    next = c->started + c->spec.interval_ms / 1e3 - ev_now(loop);
    hc_schedule(c, next);
}

static void
hc_fail_errno(struct hc *c, const char *what, int err)
{
    char m[96];

    snprintf(m, sizeof(m), "%s: %s", what, strerror(err));
    hc_done(c, 0, m);
}

static void
hc_start(struct hc *c)
{
    struct ev_loop *loop = c->h->loop;
    struct saddr a;
    int fd;

    backend_saddr(c->b, &a);
    c->started = ev_now(loop);
    c->len = c->sent = 0;
    if (c->spec.port != 0)
        saddr_set_port(&a, c->spec.port);
    ev_timer_stop(loop, &c->timer);
    ev_timer_set(&c->timer, c->spec.timeout_ms / 1e3, 0.);
    ev_timer_start(loop, &c->timer);
    fd = socket(a.u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    if (fd < 0) {
        hc_fail_errno(c, "socket", errno);
        return;
    }
    ev_io_set(&c->io, fd, EV_WRITE);
    c->phase = HC_CONNECTING;
    if (connect(fd, &a.u.sa, a.len) < 0 && errno != EINPROGRESS) {
        hc_fail_errno(c, "connect", errno);
        return;
    }
    ev_io_start(loop, &c->io);
}

static void
hc_on_timer(struct ev_loop *loop, struct ev_timer *t, int rev)
{
    struct hc *c = t->data;
    char m[64];

    (void)loop;
    (void)rev;
    if (c->phase == HC_IDLE) {
        hc_start(c);
        return;
    }
    snprintf(m, sizeof(m), "no answer within %u ms", c->spec.timeout_ms);
    hc_done(c, 0, m);
}

/* Connected: a TCP check has passed; an HTTP check sends its request. */
static void
hc_connected(struct hc *c)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        hc_fail_errno(c, "connect", err);
        return;
    }
    if (c->spec.type != TBL_CHECK_HTTP) {
        hc_done(c, 1, "");
        return;
    }
    c->reqlen = (size_t)snprintf(c->req, sizeof(c->req),
                                 "GET %s HTTP/1.1\r\nHost: %s\r\n"
                                 "User-Agent: ferry-health-check\r\n"
                                 "Connection: close\r\n\r\n",
                                 c->spec.path, BACKEND_ADDR(c->b));
    if (c->reqlen >= sizeof(c->req))
        c->reqlen = sizeof(c->req) - 1;
    c->phase = HC_SENDING;
}

static void
hc_send(struct hc *c)
{
    ssize_t n = send(c->io.fd, c->req + c->sent, c->reqlen - c->sent,
                     MSG_NOSIGNAL);

    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            hc_fail_errno(c, "send", errno);
        return;
    }
    c->sent += (size_t)n;
    if (c->sent == c->reqlen) {
        c->phase = HC_READING;
        ev_io_stop(c->h->loop, &c->io);
        ev_io_set(&c->io, c->io.fd, EV_READ);
        ev_io_start(c->h->loop, &c->io);
    }
}

static void
hc_read(struct hc *c)
{
    ssize_t n = recv(c->io.fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    char m[64];
    int st;

    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            hc_fail_errno(c, "recv", errno);
        return;
    }
    c->len += (size_t)n;
    st = health_http_status(c->buf, c->len);
    if (st == 0 && n > 0 && c->len < sizeof(c->buf))
        return;
    if (st <= 0) {
        hc_done(c, 0, n == 0 && st == 0 ? "connection closed before a status"
                                        : "not an HTTP response");
        return;
    }
    if (st < c->spec.status_min || st > c->spec.status_max) {
        snprintf(m, sizeof(m), "HTTP status %d (expected %u-%u)", st,
                 c->spec.status_min, c->spec.status_max);
        hc_done(c, 0, m);
        return;
    }
    hc_done(c, 1, "");
}

static void
hc_on_io(struct ev_loop *loop, struct ev_io *io, int rev)
{
    struct hc *c = io->data;

    (void)loop;
    (void)rev;
    if (c->phase == HC_CONNECTING) {
        hc_connected(c);
        if (c->phase != HC_SENDING)
            return;
    }
    if (c->phase == HC_SENDING)
        hc_send(c);
    else if (c->phase == HC_READING)
        hc_read(c);
}

/* ---- the set ------------------------------------------------------------ */

struct health *
health_new(struct ev_loop *loop)
{
    struct health *h = calloc(1, sizeof(*h));

    if (h != NULL)
        h->loop = loop;
    return h;
}

static void
hc_free(struct hc *c)
{
    hc_close(c);
    ev_timer_stop(c->h->loop, &c->timer);
    atomic_store(&c->b->health, BACKEND_HEALTH_UNCHECKED);
    backend_unref(c->b);
    free(c);
}

void
health_free(struct health *h)
{
    struct hc *c, *next;

    if (h == NULL)
        return;
    for (c = h->list; c != NULL; c = next) {
        next = c->next;
        hc_free(c);
    }
    free(h);
}

static struct hc *
hc_find(struct health *h, const struct backend *b)
{
    struct hc *c;

    for (c = h->list; c != NULL; c = c->next)
        if (c->b == b)
            return c;
    return NULL;
}

static struct hc *
hc_new(struct health *h, struct backend *b)
{
    struct hc *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->h = h;
    c->b = backend_ref(b);
    health_sm_init(&c->sm);
    ev_init(&c->timer, hc_on_timer);
    ev_io_init(&c->io, hc_on_io, -1, 0);
    c->timer.data = c->io.data = c;
    c->next = h->list;
    h->list = c;
    atomic_store(&b->health, BACKEND_HEALTH_UP);
    return c;
}

/* Mark (and create) the checker of every checked backend; new ones get
 * mark 2 so that their first probes can be spread. Returns how many are
 * new. */
static size_t
mark_checked(struct health *h, struct svc *const *svcs, size_t n)
{
    size_t i, j, fresh = 0;

    h->svcs_checked = 0;
    for (i = 0; i < n; i++) {
        const struct svc *s = svcs[i];
        const struct tbl_check *spec = &svc_spec(s)->check;
        if (spec->type == TBL_CHECK_NONE)
            continue;
        h->svcs_checked++;
        for (j = 0; j < svc_nbackends(s); j++) {
            struct backend *b = svc_backend(s, j);
            struct hc *c = hc_find(h, b);
            if (c != NULL && c->mark)
                continue; /* an earlier service checks it */
            if (c == NULL) {
                if ((c = hc_new(h, b)) == NULL) {
                    log_error("health: out of memory for backend %s",
                              BACKEND_ADDR(b));
                    continue;
                }
                c->mark = 2;
                fresh++;
            } else {
                c->mark = 1;
            }
            c->by_svc = 1;
            hc_set_spec(c, spec);
            snprintf(c->svc, sizeof(c->svc), "%s", svc_name(s));
            snprintf(c->name, sizeof(c->name), "%s", svc_backend_name(s, j));
        }
    }
    return fresh;
}

size_t
health_svcs_checked(const struct health *h)
{
    return h->svcs_checked;
}

void
health_apply(struct health *h, struct svc *const *svcs, size_t n)
{
    struct hc *c, **pc;
    size_t fresh, k = 0;

    for (c = h->list; c != NULL; c = c->next) {
        c->mark = 0;
        c->by_svc = 0;
    }
    fresh = mark_checked(h, svcs, n);
    for (pc = &h->list; (c = *pc) != NULL;) {
        if (c->mark == 0 && c->mark_tgt)
            c->mark = 1; /* a target still wants it */
        if (c->mark == 0) {
            log_info("health: checks of backend %s stopped",
                     BACKEND_ADDR(c->b));
            *pc = c->next;
            hc_free(c);
            continue;
        }
        if (c->mark == 2)
            hc_schedule(c, health_spread(k++, fresh,
                                         c->spec.interval_ms / 1e3));
        pc = &c->next;
    }
}

void
health_set_targets(struct health *h, const struct health_target *t, size_t n)
{
    struct hc *c, **pc;
    size_t i, fresh = 0, k = 0;

    for (c = h->list; c != NULL; c = c->next)
        c->mark_tgt = 0;
    for (i = 0; i < n; i++) {
        if (t[i].spec.type == TBL_CHECK_NONE)
            continue;
        c = hc_find(h, t[i].b);
        if (c != NULL && c->mark_tgt)
            continue; /* an earlier target checks it */
        if (c == NULL) {
            if ((c = hc_new(h, t[i].b)) == NULL) {
                log_error("health: out of memory for backend %s",
                          BACKEND_ADDR(t[i].b));
                continue;
            }
            c->mark = 2; /* spread below, then kept like any */
            fresh++;
        }
        c->mark_tgt = 1;
        if (c->by_svc)
            continue;
        hc_set_spec(c, &t[i].spec);
        snprintf(c->svc, sizeof(c->svc), "%s", t[i].svc);
        snprintf(c->name, sizeof(c->name), "%s", t[i].name);
    }
    for (pc = &h->list; (c = *pc) != NULL;) {
        if (!c->mark_tgt && !c->by_svc) {
            log_info("health: checks of backend %s stopped",
                     BACKEND_ADDR(c->b));
            *pc = c->next;
            hc_free(c);
            continue;
        }
        if (c->mark == 2) {
            c->mark = 1;
            hc_schedule(c, health_spread(k++, fresh,
                                         c->spec.interval_ms / 1e3));
        }
        pc = &c->next;
    }
}

void
health_on_change(struct health *h, void (*fn)(void *), void *arg)
{
    h->on_change = fn;
    h->on_change_arg = arg;
}

int
health_info(const struct health *h, const struct backend *b,
            struct health_info *out)
{
    const struct hc *c;

    memset(out, 0, sizeof(*out));
    out->cause = "";
    for (c = h != NULL ? h->list : NULL; c != NULL; c = c->next) {
        if (c->b != b)
            continue;
        out->checked = 1;
        out->up = c->sm.up;
        out->ok_run = c->sm.ok_run;
        out->fail_run = c->sm.fail_run;
        out->last_check = c->last_check;
        out->cause = c->cause;
        return 0;
    }
    return -1;
}
