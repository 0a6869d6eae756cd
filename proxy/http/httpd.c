#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "httpd.h"
#include "httpreq.h"
#include "log.h"
#include "sbuf.h"
#include "sock.h"

#define HTTPD_LINGER_S   1.0 /* read and drop after the reply */
#define HTTPD_ACCEPT_MAX 16  /* accepts per wakeup */
#define HTTPD_NAME_MAX   32
#define HTTPD_BACKLOG    1024 /* a flood of connects must not drop a probe */
#define HTTPD_PAUSE_S    0.1  /* no accept for this long after EMFILE */

enum hconn_phase {
    HC_READING,
    HC_WRITING,
    HC_LINGER, /* reply sent and FIN out: drain what the client still sends */
};

struct hconn {
    struct httpd *h;
    struct hconn *prev, *next; /* oldest first */
    struct saddr peer;         /* the client, for the per-source cap */
    httpd_handler_fn fn;       /* copied from the listener at accept */
    void *arg;
    unsigned tag;
    struct ev_io io;
    struct ev_timer timer;
    enum hconn_phase phase;
    size_t inlen, sent;
    struct sbuf out;
    char in[HTTPREQ_MAX];
};

struct httpd_listener {
    struct httpd *h;
    struct httpd_listener *prev, *next;
    struct ev_io io;
    httpd_handler_fn fn;
    void *arg;
    unsigned tag;
};

struct httpd {
    struct ev_loop *loop;
    char name[HTTPD_NAME_MAX];
    size_t reply_max;
    unsigned max_conns, max_per_source;
    double timeout;
    struct httpd_listener *listeners;
    struct hconn *conns, *last; /* oldest first */
    unsigned nconns;
    int paused; /* out of descriptors: listeners stopped */
    struct ev_timer resume;
    void (*on_pause)(void);
    /* Per server, so that the admin and node health servers each say
     * what happens to them. */
    struct log_ratelimit rl_pause, rl_evict_own, rl_evict_all;
};

/* log_rl() against a limiter of the server's own. */
#define httpd_log_rl(h, rl, level, ...)                                        \
    do {                                                                       \
        uint64_t sup_;                                                         \
        if (log_enabled(level)                                                 \
            && log_ratelimit_pass(&(h)->rl, ev_now((h)->loop), &sup_)) {       \
            log_write(level, __VA_ARGS__);                                     \
            if (sup_ > 0)                                                      \
                log_write(level, "%s: (%llu similar messages suppressed)",     \
                          (h)->name, (unsigned long long)sup_);                \
        }                                                                      \
    } while (0)

/* ---- replies ------------------------------------------------------------ */

static const char *
status_text(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

void
httpd_reply(struct sbuf *out, int status, const char *ctype,
            const char *extra, const char *body, size_t len, int head_only)
{
    sbuf_printf(out,
                "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                "X-Content-Type-Options: nosniff\r\nContent-Length: %zu\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                status, status_text(status), ctype, len, extra);
    if (!head_only)
        sbuf_add(out, body, len);
}

void
httpd_reply_text(struct sbuf *out, int status, const char *text,
                 int head_only)
{
    httpd_reply(out, status, "text/plain; charset=utf-8", "", text,
                strlen(text), head_only);
}

/* ---- connections -------------------------------------------------------- */

static void
hconn_want(struct hconn *c, int events)
{
    ev_io_stop(c->h->loop, &c->io);
    ev_io_set(&c->io, c->io.fd, events);
    ev_io_start(c->h->loop, &c->io);
}

static void httpd_resume(struct httpd *h);

static void
hconn_close(struct hconn *c)
{
    struct httpd *h = c->h;

    ev_io_stop(h->loop, &c->io);
    ev_timer_stop(h->loop, &c->timer);
    close(c->io.fd);
    sbuf_deinit(&c->out);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    else
        h->last = c->prev;
    h->nconns--;
    free(c);
    /* A descriptor is free again: worth trying the accept. */
    httpd_resume(h);
}

/* The reply is in c->out: start writing it. */
static void
hconn_start_reply(struct hconn *c)
{
    if (c->out.overflow) {
        c->out.len = 0;
        c->out.overflow = 0;
        httpd_reply_text(&c->out, 500, "reply too large\n", 0);
    }
    c->phase = HC_WRITING;
    hconn_want(c, EV_WRITE);
}

static void
hconn_bad(struct hconn *c, const char *why)
{
    char body[128];

    snprintf(body, sizeof(body), "bad request: %s\n", why);
    httpd_reply_text(&c->out, 400, body, 0);
    hconn_start_reply(c);
}

static void
hconn_read(struct hconn *c)
{
    struct httpreq r;
    const char *why = "malformed request";
    enum httpreq_rc rc;
    ssize_t n;

    if (c->inlen == sizeof(c->in)) {
        hconn_bad(c, "request too large");
        return;
    }
    n = recv(c->io.fd, c->in + c->inlen, sizeof(c->in) - c->inlen, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            hconn_close(c);
        return;
    }
    if (n == 0) { /* the client gave up before a whole request */
        hconn_close(c);
        return;
    }
    c->inlen += (size_t)n;
    rc = httpreq_parse(c->in, c->inlen, &r, &why);
    if (rc == HTTPREQ_AGAIN && c->inlen < sizeof(c->in))
        return;
    if (rc == HTTPREQ_AGAIN || rc == HTTPREQ_TOO_LARGE) {
        hconn_bad(c, "request too large");
        return;
    }
    if (rc == HTTPREQ_BAD) {
        hconn_bad(c, why);
        return;
    }
    c->fn(c->arg, c->tag, &r, ev_now(c->h->loop), &c->out);
    hconn_start_reply(c);
}

static void
hconn_write(struct hconn *c)
{
    struct ev_loop *loop = c->h->loop;
    ssize_t n = send(c->io.fd, c->out.p + c->sent, c->out.len - c->sent,
                     MSG_NOSIGNAL);

    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            hconn_close(c);
        return;
    }
    c->sent += (size_t)n;
    if (c->sent < c->out.len)
        return;
    /* Send our FIN, then read until the client's, so that unread request
     * bytes do not turn our close into a reset that loses the reply. */
    shutdown(c->io.fd, SHUT_WR);
    c->phase = HC_LINGER;
    hconn_want(c, EV_READ);
    ev_timer_stop(loop, &c->timer);
    ev_timer_set(&c->timer, HTTPD_LINGER_S, 0.);
    ev_timer_start(loop, &c->timer);
}

static void
hconn_on_io(struct ev_loop *loop, struct ev_io *io, int rev)
{
    struct hconn *c = io->data;
    char sink[4096];
    ssize_t n;

    (void)loop;
    (void)rev;
    switch (c->phase) {
    case HC_READING:
        hconn_read(c);
        break;
    case HC_WRITING:
        hconn_write(c);
        break;
    case HC_LINGER:
        n = recv(c->io.fd, sink, sizeof(sink), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            hconn_close(c);
        break;
    }
}

static void
hconn_on_timer(struct ev_loop *loop, struct ev_timer *t, int rev)
{
    struct hconn *c = t->data;

    (void)rev;
    if (c->phase == HC_READING)
        log_rl(LOG_INFO, ev_now(loop),
               "%s: closing a connection that sent no complete request "
               "within %.0f ms",
               c->h->name, c->h->timeout * 1e3);
    hconn_close(c);
}

/* Same client for the per-source cap: the same IPv4 address, or the same
 * IPv6 /64 (one host may hold a whole /64). */
static int
same_source(const struct saddr *a, const struct saddr *b)
{
    if (a->u.sa.sa_family != b->u.sa.sa_family)
        return 0;
    if (a->u.sa.sa_family == AF_INET)
        return a->u.in.sin_addr.s_addr == b->u.in.sin_addr.s_addr;
    if (a->u.sa.sa_family == AF_INET6)
        return memcmp(&a->u.in6.sin6_addr, &b->u.in6.sin6_addr, 8) == 0;
    return 1;
}

/* The connection to give way to a new one: the oldest that has not sent a
 * whole request, else the oldest that only waits for the client's FIN
 * (its reply is out), among those of <src> (NULL: all). NULL when every
 * candidate is still writing a reply. */
static struct hconn *
hconn_victim(struct httpd *h, const struct saddr *src)
{
    struct hconn *c, *linger = NULL;

    for (c = h->conns; c != NULL; c = c->next) {
        if (src != NULL && !same_source(&c->peer, src))
            continue;
        if (c->phase == HC_READING)
            return c;
        if (c->phase == HC_LINGER && linger == NULL)
            linger = c;
    }
    return linger;
}

/* Make room for a connection from <src>: within the per-source cap, then
 * the total cap, an older idle connection is closed. Returns 0, or -1
 * when nothing can give way (the new connection is refused). */
static int
hconn_make_room(struct httpd *h, const struct saddr *src)
{
    struct hconn *c, *victim = NULL;
    unsigned same = 0;

    for (c = h->conns; c != NULL; c = c->next)
        same += same_source(&c->peer, src);
    if (same >= h->max_per_source) {
        victim = hconn_victim(h, src);
        if (victim == NULL)
            return -1;
    } else if (h->nconns >= h->max_conns) {
        victim = hconn_victim(h, NULL);
        if (victim == NULL)
            return -1;
    }
    if (victim != NULL) {
        if (same >= h->max_per_source)
            httpd_log_rl(h, rl_evict_own, LOG_INFO,
                         "%s: per-client cap of %u connections reached: "
                         "closing the oldest idle one for a new one",
                         h->name, h->max_per_source);
        else
            httpd_log_rl(h, rl_evict_all, LOG_INFO,
                         "%s: cap of %u connections reached: closing the "
                         "oldest idle one for a new one",
                         h->name, h->max_conns);
        hconn_close(victim);
    }
    return 0;
}

/* Take over accepted socket <fd> from <peer> for listener <l>. Returns 0,
 * or -1 (the caps or memory) with <fd> left to the caller. */
static int
hconn_new(struct httpd_listener *l, int fd, const struct saddr *peer)
{
    struct httpd *h = l->h;
    struct hconn *c;

    if (hconn_make_room(h, peer) < 0 || (c = calloc(1, sizeof(*c))) == NULL)
        return -1;
    c->h = h;
    c->peer = *peer;
    c->fn = l->fn;
    c->arg = l->arg;
    c->tag = l->tag;
    sbuf_init(&c->out, h->reply_max);
    ev_io_init(&c->io, hconn_on_io, fd, EV_READ);
    ev_timer_init(&c->timer, hconn_on_timer, h->timeout, 0.);
    c->io.data = c->timer.data = c;
    c->prev = h->last;
    if (h->last != NULL)
        h->last->next = c;
    else
        h->conns = c;
    h->last = c;
    h->nconns++;
    ev_io_start(h->loop, &c->io);
    ev_timer_start(h->loop, &c->timer);
    return 0;
}

/* Out of descriptors (or kernel memory): a pending connection would wake
 * the loop again at once and fail the same way. Stop accepting for
 * HTTPD_PAUSE_S, or until one of our connections closes. */
static void
httpd_pause(struct httpd *h, int err)
{
    struct httpd_listener *l;

    if (h->paused)
        return;
    h->paused = 1;
    for (l = h->listeners; l != NULL; l = l->next)
        ev_io_stop(h->loop, &l->io);
    ev_timer_set(&h->resume, HTTPD_PAUSE_S, 0.);
    ev_timer_start(h->loop, &h->resume);
    if (h->on_pause != NULL)
        h->on_pause();
    httpd_log_rl(h, rl_pause, LOG_WARN,
                 "%s: accept: %s: accepting paused for %.0f ms (%u "
                 "connections open)",
                 h->name, strerror(err), HTTPD_PAUSE_S * 1e3, h->nconns);
}

static void
httpd_resume(struct httpd *h)
{
    struct httpd_listener *l;

    if (!h->paused)
        return;
    h->paused = 0;
    ev_timer_stop(h->loop, &h->resume);
    for (l = h->listeners; l != NULL; l = l->next)
        ev_io_start(h->loop, &l->io);
}

static void
httpd_on_resume(struct ev_loop *loop, struct ev_timer *t, int rev)
{
    (void)loop;
    (void)rev;
    httpd_resume(t->data);
}

static void
listener_on_accept(struct ev_loop *loop, struct ev_io *io, int rev)
{
    struct httpd_listener *l = io->data;
    struct saddr peer;
    int fd, i;

    (void)rev;
    for (i = 0; i < HTTPD_ACCEPT_MAX; i++) {
        memset(&peer, 0, sizeof(peer));
        peer.len = sizeof(peer.u);
        fd = accept4(io->fd, &peer.u.sa, &peer.len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS
                || errno == ENOMEM)
                httpd_pause(l->h, errno);
            else if (errno != EAGAIN && errno != EINTR
                     && errno != ECONNABORTED)
                log_rl(LOG_WARN, ev_now(loop), "%s: accept: %s", l->h->name,
                       strerror(errno));
            return;
        }
        if (hconn_new(l, fd, &peer) < 0) {
            log_rl(LOG_WARN, ev_now(loop),
                   "%s: too many connections still writing a reply, "
                   "closing a new one",
                   l->h->name);
            close(fd);
        }
    }
}

/* ---- the server --------------------------------------------------------- */

struct httpd *
httpd_new(struct ev_loop *loop, const char *name, size_t reply_max,
          unsigned max_conns)
{
    struct httpd *h = calloc(1, sizeof(*h));

    if (h == NULL)
        return NULL;
    h->loop = loop;
    snprintf(h->name, sizeof(h->name), "%s", name);
    h->reply_max = reply_max;
    h->max_conns = max_conns > 0 ? max_conns : 1;
    h->max_per_source = h->max_conns / 4 > 0 ? h->max_conns / 4 : 1;
    h->timeout = 5.0;
    ev_timer_init(&h->resume, httpd_on_resume, HTTPD_PAUSE_S, 0.);
    h->resume.data = h;
    return h;
}

void
httpd_free(struct httpd *h)
{
    if (h == NULL)
        return;
    while (h->listeners != NULL)
        httpd_unlisten(h, h->listeners);
    while (h->conns != NULL)
        hconn_close(h->conns);
    ev_timer_stop(h->loop, &h->resume);
    free(h);
}

void
httpd_set_timeout(struct httpd *h, double seconds)
{
    h->timeout = seconds;
}

void
httpd_set_per_source(struct httpd *h, unsigned max)
{
    h->max_per_source = max > 0 ? max : 1;
}

void
httpd_set_on_pause(struct httpd *h, void (*fn)(void))
{
    h->on_pause = fn;
}

/* A bound, listening, non-blocking socket, or -1 with <e> filled. */
static int
listen_socket(const struct saddr *addr, struct err *e)
{
    char s[SADDR_STR_MAX];
    int fd = sock_listen(addr, 0, HTTPD_BACKLOG);

    if (fd < 0)
        err_set(e, "cannot listen on %s: %s",
                saddr_str(addr, s, sizeof(s)), strerror(errno));
    return fd;
}

struct httpd_listener *
httpd_listen(struct httpd *h, const struct saddr *addr, httpd_handler_fn fn,
             void *arg, unsigned tag, struct err *e)
{
    struct httpd_listener *l;
    int fd = listen_socket(addr, e);

    if (fd < 0)
        return NULL;
    if ((l = calloc(1, sizeof(*l))) == NULL) {
        close(fd);
        err_set(e, "out of memory");
        return NULL;
    }
    l->h = h;
    l->fn = fn;
    l->arg = arg;
    l->tag = tag;
    ev_io_init(&l->io, listener_on_accept, fd, EV_READ);
    l->io.data = l;
    if (!h->paused)
        ev_io_start(h->loop, &l->io);
    l->next = h->listeners;
    if (h->listeners != NULL)
        h->listeners->prev = l;
    h->listeners = l;
    return l;
}

void
httpd_unlisten(struct httpd *h, struct httpd_listener *l)
{
    if (l == NULL)
        return;
    ev_io_stop(h->loop, &l->io);
    close(l->io.fd);
    if (l->prev != NULL)
        l->prev->next = l->next;
    else
        h->listeners = l->next;
    if (l->next != NULL)
        l->next->prev = l->prev;
    free(l);
}
