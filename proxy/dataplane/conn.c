#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "accesslog.h"
#include "bug.h"
#include "conn.h"
#include "conn-t.h"
#include "drain.h"
#include "listener.h"
#include "log.h"
#include "proxyproto.h"
#include "ring.h"
#include "sniroute.h"
#include "srcrules.h"
#include "stats.h"
#include "svc-t.h"
#include "watchq.h"
#include "worker.h"

#define CONN_FD_RETRY_S 0.05

_Static_assert(sizeof(struct svc_tried) <= 2 * sizeof(struct half),
               "the retry set must fit in the relay's room");
/* Refusals map onto the access log's causes by offset. */
_Static_assert(ACCESSLOG_SOURCE_RATE - ACCESSLOG_SOURCE_DENY
                       == STATS_SRC_RATE - STATS_SRC_DENY
                   && STATS_SRC__COUNT == 4,
               "source refusals and access log causes in the same order");
_Static_assert(ACCESSLOG_PROXY_CLOSED - ACCESSLOG_PROXY_TIMEOUT
                       == STATS_PP_CLOSED - STATS_PP_TIMEOUT
                   && STATS_PP__COUNT == 3,
               "PROXY refusals and access log causes in the same order");

static void conn_on_client(struct ev_loop *loop, struct ev_io *io, int rev);
static void conn_on_backend(struct ev_loop *loop, struct ev_io *io, int rev);
static void conn_on_timer(struct ev_loop *loop, struct ev_timer *t, int rev);
static void conn_try_connect(struct conn *c);

#define conn_log(level, c, fmt, ...)                                           \
    do {                                                                       \
        if (log_enabled(level)) {                                              \
            char cl_[SADDR_STR_MAX];                                           \
            log_write(level, "conn %llu %s -> %s/%s: " fmt,                    \
                      (unsigned long long)(c)->id,                             \
                      saddr_str(&(c)->client, cl_, sizeof(cl_)),               \
                      (c)->svc->spec.name,                                     \
                      (c)->be ? BACKEND_ADDR((c)->be) : "-", ##__VA_ARGS__);   \
        }                                                                      \
    } while (0)

/* Close <fd> so that the peer sees a reset rather than a clean end. */
static void
close_reset(int fd)
{
    struct linger lg = {1, 0};

    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

static void
io_want(struct ev_loop *loop, struct ev_io *io, int events)
{
    if ((io->events & (EV_READ | EV_WRITE)) == events && ev_is_active(io))
        return;
    ev_io_stop(loop, io);
    ev_io_modify(io, events);
    if (events != 0)
        ev_io_start(loop, io);
}

/* Recompute which events each socket waits for: read a side only while
 * the other side has room (back-pressure), write a side only while bytes
 * wait for it. */
void
conn_update_io(struct conn *c)
{
    struct ev_loop *loop = c->w->loop;
    int ce = 0, be = 0;

    if (c->state == CONN_CONNECTING) {
        io_want(loop, &c->cio, 0);
        io_want(loop, &c->bio, EV_WRITE);
        return;
    }
    if (c->state == CONN_PROXY_HDR) {
        io_want(loop, &c->cio, EV_READ);
        return;
    }
    if (c->on_ring) {
        io_want(loop, &c->cio, 0);
        io_want(loop, &c->bio, 0);
        return;
    }
    if (!c->c2b.eof && c->c2b.len == 0)
        ce |= EV_READ;
    if (c->b2c.len > 0)
        ce |= EV_WRITE;
    if (!c->b2c.eof && c->b2c.len == 0)
        be |= EV_READ;
    if (c->c2b.len > 0)
        be |= EV_WRITE;
    io_want(loop, &c->cio, ce);
    io_want(loop, &c->bio, be);
}

static void
conn_release_backend(struct conn *c)
{
    if (c->be == NULL)
        return;
    atomic_fetch_sub_explicit(&c->be->active, 1, memory_order_relaxed);
    backend_unref(c->be);
    c->be = NULL;
}

/* Log <c>'s line (README: Access log) as it ends by <cause>, and give it
 * to the watches that want it. */
static void
conn_access_log(struct conn *c, enum accesslog_cause cause)
{
    struct accesslog_rec r;

    if (!accesslog_enabled() && !c->watched)
        return;
    r.start = c->accepted;
    r.end = ev_now(c->w->loop);
    r.connect = c->connect_took;
    r.id = c->id;
    r.bytes_up = c->bytes_c2b;
    r.bytes_down = c->bytes_b2c;
    r.client = &c->client;
    r.service = c->svc->spec.name;
    r.backend = c->be != NULL ? BACKEND_ADDR(c->be) : NULL;
    r.attempts = c->attempts + (c->connect_took >= 0 ? 1u : 0u);
    r.cause = cause;
    if (accesslog_enabled())
        accesslog_emit(c->w->id, &r);
    if (c->watched)
        watchq_end(c->watched, &r);
}

/* A client refused before it had a connection object: log it all the
 * same. */
static void
conn_access_log_refused(struct worker *w, struct svc *s,
                        const struct saddr *client, enum accesslog_cause cause)
{
    struct accesslog_rec r;

    memset(&r, 0, sizeof(r));
    r.start = r.end = ev_now(w->loop);
    r.connect = -1;
    r.client = client;
    r.service = s->spec.name;
    r.cause = cause;
    accesslog_emit(w->id, &r);
}

static void
conn_close(struct conn *c, int reset, enum accesslog_cause cause)
{
    struct worker *w = c->w;

    int later = 0;

    ev_io_stop(w->loop, &c->cio);
    ev_io_stop(w->loop, &c->bio);
    ev_timer_stop(w->loop, &c->timer);
    if (c->on_ring) {
        /* The ring closes the sockets and gives the object back once no
         * operation refers to them (ring_conn_close). */
        later = ring_conn_close(c, reset);
    } else if (reset) {
        close_reset(c->cio.fd);
        if (c->bio.fd >= 0)
            close_reset(c->bio.fd);
    } else {
        close(c->cio.fd);
        if (c->bio.fd >= 0)
            close(c->bio.fd);
    }
    if (c->state == CONN_RELAY && c->on_ring) {
        /* The ring gives its buffers back with the sockets. */
    } else if (c->state == CONN_RELAY) {
        if (c->c2b.buf != NULL)
            worker_buf_put(w, c->c2b.buf);
        if (c->b2c.buf != NULL)
            worker_buf_put(w, c->b2c.buf);
        if (c->c2b.spliced)
            worker_pipe_put(w, c->c2b.pipe, c->c2b.len == 0);
        if (c->b2c.spliced)
            worker_pipe_put(w, c->b2c.pipe, c->b2c.len == 0);
    } else {
        if (c->state == CONN_PROXY_HDR && c->hdr.buf != NULL)
            worker_buf_put(w, c->hdr.buf);
        if (c->pp_out.buf != NULL)
            worker_buf_put(w, c->pp_out.buf);
        c->bytes_c2b = c->bytes_b2c = 0;
    }
    conn_log(LOG_DEBUG, c, "closed%s, %llu bytes up, %llu down",
             reset ? " (reset)" : "", (unsigned long long)c->bytes_c2b,
             (unsigned long long)c->bytes_b2c);
    if (accesslog_enabled() || c->watched)
        conn_access_log(c, cause);
    conn_release_backend(c);
    if (c->src_counted)
        srcrules_release(c->svc->st->src, &c->client);
    atomic_fetch_sub_explicit(&c->svc->st->active, 1, memory_order_relaxed);
    if (c->svc->spec.max_conns != 0)
        atomic_fetch_sub_explicit(&c->svc->active, 1, memory_order_relaxed);
    svc_unref(c->svc);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (later)
        ring_park(c);
    else
        conn_reaped(w, c);
}

void
conn_reaped(struct worker *w, struct conn *c)
{
    worker_nconns_add(w, -1);
    worker_conn_release(w, c);
    /* A descriptor was freed: if accepting was paused for lack of them,
     * try again now rather than at the end of the pause. */
    if (w->accept_paused)
        worker_resume_accept(w);
    if (worker_nconns(w) == 0 && w->on_idle != NULL)
        w->on_idle(w);
}

void
conn_finish(struct conn *c, enum conn_rc rc)
{
    if (rc == CONN_ABORT)
        conn_close(c, 1, ACCESSLOG_RELAY_ERROR);
    else if (rc == CONN_DONE)
        conn_close(c, 0,
                   c->first_eof == 2 ? ACCESSLOG_SERVER_CLOSE
                                     : ACCESSLOG_CLIENT_CLOSE);
}

/* ---- source rules -------------------------------------------------------- */

/*
 * Service <s>'s source rules for a client whose address is final
 * (<client>: after its PROXY header with accept_proxy), at loop time
 * <now>. Returns -1 when it may go on, with <*counted> set when the
 * per-source table counted it (srcrules_release() at close); else the
 * reason it was refused (enum stats_src_refusal), counted and logged: the
 * caller resets it.
 */
static int
conn_check_source(struct svc *s, const struct saddr *client, double now,
                  uint8_t *counted)
{
    const struct tbl_service *sp = &s->spec;
    struct saddr ip;
    char a[SADDR_STR_MAX];
    int r = -1;

    *counted = 0;
    if (sp->nallow == 0 && sp->ndeny == 0 && sp->max_conns_per_source == 0
        && sp->conn_rate_per_source == 0)
        return -1;
    srcrules_client_ip(client, &ip);
    r = srcrules_match(sp->allow, sp->nallow, sp->deny, sp->ndeny, &ip);
    if (r < 0
        && (sp->max_conns_per_source > 0 || sp->conn_rate_per_source > 0)) {
        switch (srcrules_admit(s->st->src, &ip, sp->max_conns_per_source,
                               sp->conn_rate_per_source, now)) {
        case SRCRULES_COUNTED:
            *counted = 1;
            break;
        case SRCRULES_UNCOUNTED:
            stats_inc(&svc_ctr(s->st)->src_uncounted);
            log_rl(LOG_WARN, now,
                   "service %s: per-source table full, %s let in uncounted",
                   s->spec.name, saddr_ip_str(&ip, a, sizeof(a)));
            break;
        case SRCRULES_MAX:
            r = STATS_SRC_MAX;
            break;
        case SRCRULES_RATE:
            r = STATS_SRC_RATE;
            break;
        }
    }
    if (r >= 0) {
        stats_inc(&svc_ctr(s->st)->src_refused[r]);
        log_rl(LOG_INFO, now, "service %s: %s refused by source rules (%s)",
               s->spec.name, saddr_ip_str(&ip, a, sizeof(a)),
               stats_src_text[r]);
    }
    return r;
}

/* ---- PROXY protocol ------------------------------------------------------ */

/*
 * send_proxy: write the header for the backend into <buf> (a relay buffer
 * this takes; NULL: take a new one) and keep it in pp_out until the
 * connect succeeds. It names the client and the address the client
 * reached: the one its own header named (<in>, accept_proxy; NULL or
 * without addresses: none), else the socket's. Returns 0, or -1 with the
 * connection closed (out of memory).
 */
static int
conn_prepare_proxy_hdr(struct conn *c, const struct proxyproto_hdr *in,
                       char *buf)
{
    struct saddr dst;
    const struct saddr *d = NULL;
    int version = c->svc->spec.send_proxy == TBL_SEND_PROXY_V1 ? 1 : 2;

    if (in != NULL && in->has_addrs) {
        dst = in->dst;
        d = &dst;
    } else {
        dst.len = sizeof(dst.u);
        if (getsockname(c->cio.fd, &dst.u.sa, &dst.len) == 0)
            d = &dst;
    }
    if (buf == NULL && (buf = worker_buf_get(c->w)) == NULL) {
        stats_inc(&svc_ctr(c->svc->st)->fail[STATS_FAIL_RESOURCE]);
        log_rl(LOG_ERROR, ev_now(c->w->loop),
               "out of memory: refusing a connection");
        conn_close(c, 1, ACCESSLOG_RESOURCE);
        return -1;
    }
    c->pp_out.buf = buf;
    c->pp_out.len = (uint32_t)proxyproto_write(version, &c->client, d, buf,
                                               WORKER_BUF_SIZE);
    BUG_ON(c->pp_out.len == 0); /* the buffer is far larger than any */
    return 0;
}

/* accept_proxy: the client's header is missing, malformed or cut short.
 * Count it by <r>, log <why> (rate-limited) and reset the client. */
static void
conn_refuse_proxy(struct conn *c, enum stats_pp_refusal r, const char *why)
{
    char a[SADDR_STR_MAX];

    stats_inc(&svc_ctr(c->svc->st)->pp_refused[r]);
    log_rl(LOG_WARN, ev_now(c->w->loop),
           "service %s: PROXY header from %s refused (%s): %s",
           c->svc->spec.name, saddr_str(&c->client, a, sizeof(a)),
           stats_pp_text[r], why);
    conn_close(c, 1, (enum accesslog_cause)(ACCESSLOG_PROXY_TIMEOUT + r));
}

/* A whole header <h> was read: from now on the client is the one it names
 * (logs, affinity, the header ferry sends on), then connect as usual. */
static void
conn_proxy_hdr_done(struct conn *c, const struct proxyproto_hdr *h)
{
    struct ev_loop *loop = c->w->loop;
    struct saddr peer = c->client;
    char *buf = c->hdr.buf;
    char pb[SADDR_STR_MAX];
    int r;

    stats_inc(&svc_ctr(c->svc->st)->pp_accepted[h->version - 1]);
    if (h->has_addrs)
        c->client = h->src;
    conn_log(LOG_DEBUG, c, "PROXY v%u header from %s%s", h->version,
             saddr_str(&peer, pb, sizeof(pb)),
             h->has_addrs ? "" : " without addresses: keeping the peer's");
    /* The client is final now: its source rules apply. */
    r = conn_check_source(c->svc, &c->client, ev_now(loop), &c->src_counted);
    if (r >= 0) {
        conn_close(c, 1, (enum accesslog_cause)(ACCESSLOG_SOURCE_DENY + r));
        return;
    }
    ev_timer_stop(loop, &c->timer);
    /* The header's room becomes the retry set's. */
    memset(&c->tried, 0, sizeof(c->tried));
    c->state = CONN_CONNECTING;
    c->last_active = ev_now(loop);
    if (c->svc->spec.send_proxy != TBL_SEND_PROXY_NONE) {
        if (conn_prepare_proxy_hdr(c, h, buf) < 0)
            return;
    } else if (buf != NULL) {
        worker_buf_put(c->w, buf);
    }
    conn_try_connect(c);
}

/*
 * accept_proxy: read what came of the client's header. The bytes are
 * peeked, and only the header's are taken off the socket, so that what
 * follows stays there for the backend. Until the header is whole, what
 * came of it is kept (a relay buffer, taken only when it comes in
 * pieces); a header larger than that buffer is refused.
 */
static void
conn_read_proxy_hdr(struct conn *c)
{
    char *base = c->hdr.buf != NULL ? c->hdr.buf : c->w->scratch;
    size_t have = c->hdr.len;
    struct proxyproto_hdr h;
    enum proxyproto_status st;
    enum proxyproto_err perr;
    ssize_t n, take;
    char why[64];

    n = recv(c->cio.fd, base + have, WORKER_BUF_SIZE - have, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_refuse_proxy(c, STATS_PP_CLOSED,
                          n == 0 ? "closed before a whole header"
                                 : strerror(errno));
        return;
    }
    st = proxyproto_parse(base, have + (size_t)n, &h, &perr);
    if (st == PROXYPROTO_ERROR) {
        conn_refuse_proxy(c, STATS_PP_INVALID, proxyproto_err_text[perr]);
        return;
    }
    if (st == PROXYPROTO_NEED && have + (size_t)n == WORKER_BUF_SIZE) {
        snprintf(why, sizeof(why), "header longer than %d bytes",
                 WORKER_BUF_SIZE);
        conn_refuse_proxy(c, STATS_PP_INVALID, why);
        return;
    }
    take = st == PROXYPROTO_DONE ? (ssize_t)(h.len - have) : n;
    if (recv(c->cio.fd, base + have, (size_t)take, 0) != take) {
        conn_refuse_proxy(c, STATS_PP_CLOSED, "header lost while read");
        return;
    }
    if (st == PROXYPROTO_DONE) {
        conn_proxy_hdr_done(c, &h);
        return;
    }
    if (c->hdr.buf == NULL) {
        if ((c->hdr.buf = worker_buf_get(c->w)) == NULL) {
            stats_inc(&svc_ctr(c->svc->st)->fail[STATS_FAIL_RESOURCE]);
            log_rl(LOG_ERROR, ev_now(c->w->loop),
                   "out of memory: refusing a connection");
            conn_close(c, 1, ACCESSLOG_RESOURCE);
            return;
        }
        memcpy(c->hdr.buf, base, (size_t)take);
    }
    c->hdr.len = (uint32_t)(have + (size_t)take);
}

/*
 * Admit a client of <s> on <fd>: its source rules when <check_source>
 * (with accept_proxy they wait for its header), the connection cap, a
 * session object. Returns the new connection, counted and listed, or
 * NULL with the client reset and counted.
 */
static struct conn *
conn_admit(struct worker *w, struct svc *s, int fd,
           const struct saddr *client, int check_source)
{
    struct conn *c;
    double now = ev_now(w->loop);
    uint8_t counted = 0;
    int r;

    /* The source rules come first, so that a refused client is counted
     * for what it is; with accept_proxy, once its header names it. */
    if (check_source
        && (r = conn_check_source(s, client, now, &counted)) >= 0) {
        close_reset(fd);
        if (accesslog_enabled())
            conn_access_log_refused(
                w, s, client,
                (enum accesslog_cause)(ACCESSLOG_SOURCE_DENY + r));
        return NULL;
    }
    /* Only a capped service counts (one shared atomic less per connection
     * otherwise), and it counts first: with several workers, checking and
     * counting in two steps would let them overshoot the limit together. */
    if (s->spec.max_conns != 0
        && atomic_fetch_add_explicit(&s->active, 1, memory_order_relaxed)
               >= s->spec.max_conns) {
        char a[SADDR_STR_MAX];
        atomic_fetch_sub_explicit(&s->active, 1, memory_order_relaxed);
        stats_inc(&svc_ctr(s->st)->fail[STATS_FAIL_LIMIT]);
        log_rl(LOG_WARN, now,
               "service %s: connection limit %u reached, refusing %s",
               s->spec.name, s->spec.max_conns,
               saddr_str(client, a, sizeof(a)));
        if (counted)
            srcrules_release(s->st->src, client);
        close_reset(fd);
        if (accesslog_enabled())
            conn_access_log_refused(w, s, client, ACCESSLOG_LIMIT);
        return NULL;
    }
    c = worker_conn_alloc(w, sizeof(*c));
    if (c == NULL) {
        if (counted)
            srcrules_release(s->st->src, client);
        if (s->spec.max_conns != 0)
            atomic_fetch_sub_explicit(&s->active, 1, memory_order_relaxed);
        stats_inc(&svc_ctr(s->st)->fail[STATS_FAIL_RESOURCE]);
        log_rl(LOG_ERROR, now, "out of memory: refusing a connection");
        close_reset(fd);
        if (accesslog_enabled())
            conn_access_log_refused(w, s, client, ACCESSLOG_RESOURCE);
        return NULL;
    }
    memset(c, 0, sizeof(*c));
    c->w = w;
    c->svc = svc_ref(s);
    c->client = *client;
    c->src_counted = counted;
    c->id = worker_next_id(w);
    c->last_active = now;
    c->accepted = now;
    c->connect_took = -1;
    c->watched = (uint8_t)watchq_watching(s->spec.name, now);
    ev_io_init(&c->cio, conn_on_client, fd, 0);
    ev_io_init(&c->bio, conn_on_backend, -1, 0);
    ev_init(&c->timer, conn_on_timer);
    c->cio.data = c->bio.data = c->timer.data = c;
    c->next = w->conns;
    if (w->conns != NULL)
        w->conns->prev = c;
    w->conns = c;
    worker_nconns_add(w, 1);
    stats_inc(&svc_ctr(s->st)->accepted);
    atomic_fetch_add_explicit(&s->st->active, 1, memory_order_relaxed);
    return c;
}

void
conn_accept(struct worker *w, struct svc *s, int fd,
            const struct saddr *client)
{
    struct conn *c = conn_admit(w, s, fd, client, !s->spec.accept_proxy);

    if (c == NULL)
        return;
    if (s->spec.accept_proxy) {
        double t = s->spec.accept_proxy_timeout_ms;
        c->state = CONN_PROXY_HDR;
        ev_timer_set(&c->timer, (t > 0 ? t : TBL_ACCEPT_PROXY_TIMEOUT_MS) / 1e3,
                     0.);
        ev_timer_start(w->loop, &c->timer);
        conn_update_io(c);
        return;
    }
    if (s->spec.send_proxy != TBL_SEND_PROXY_NONE
        && conn_prepare_proxy_hdr(c, NULL, NULL) < 0)
        return;
    conn_try_connect(c);
}

void
conn_accept_read(struct worker *w, struct svc *s, int fd,
                 const struct saddr *client,
                 const struct proxyproto_hdr *pp, char *buf, uint32_t len)
{
    struct conn *c = conn_admit(w, s, fd, client, 1);

    BUG_ON(len > WORKER_BUF_SIZE - PROXYPROTO_WRITE_MAX);
    if (c == NULL) {
        if (buf != NULL)
            worker_buf_put(w, buf);
        return;
    }
    if (pp != NULL)
        stats_inc(&svc_ctr(s->st)->pp_accepted[pp->version - 1]);
    if (buf == NULL) {
        if (s->spec.send_proxy != TBL_SEND_PROXY_NONE
            && conn_prepare_proxy_hdr(c, pp, NULL) < 0)
            return;
        conn_try_connect(c);
        return;
    }
    c->early = (uint16_t)len;
    /* The header for the backend, if any, goes before the bytes read:
     * they move out of its way (its length is known once written), and
     * back against it. Given a buffer, the header cannot fail. */
    if (s->spec.send_proxy != TBL_SEND_PROXY_NONE) {
        memmove(buf + PROXYPROTO_WRITE_MAX, buf, len);
        (void)conn_prepare_proxy_hdr(c, pp, buf);
        memmove(buf + c->pp_out.len, buf + PROXYPROTO_WRITE_MAX, len);
        len += c->pp_out.len;
    }
    c->pp_out.buf = buf;
    c->pp_out.len = len;
    conn_try_connect(c);
}

/* Count a failed connect attempt (errno <err>) against the backend. */
static void
conn_blame(struct conn *c, int err)
{
    enum stats_fail r = stats_fail_from_errno(err);
    struct backend_ctr *k;

    backend_on_fail(c->be, ev_now(c->w->loop));
    if (c->watched)
        watchq_attempt(c->watched, c->id, BACKEND_ADDR(c->be), err);
    if ((k = backend_ctr(c->be)) != NULL)
        stats_inc(&k->n_fail[r]);
    stats_inc(&svc_ctr(c->svc->st)->fail[r]);
}

/* The current attempt failed: blame the backend and try another one. */
static void
conn_attempt_failed(struct conn *c, int err)
{
    struct ev_loop *loop = c->w->loop;
    const char *why = err == ETIMEDOUT ? "connect timeout" : strerror(err);

    conn_log(LOG_DEBUG, c, "connect failed: %s", why);
    conn_blame(c, err);
    ev_timer_stop(loop, &c->timer);
    ev_io_stop(loop, &c->bio);
    close(c->bio.fd);
    ev_io_set(&c->bio, -1, 0);
    log_rl(LOG_WARN, ev_now(loop), "service %s: backend %s failed: %s",
           c->svc->spec.name, BACKEND_ADDR(c->be), why);
    conn_release_backend(c);
    c->attempts++;
    conn_try_connect(c);
}

/* Add <n> bytes relayed to (<up>) or from the backend <b>. */
static void
be_count_bytes(struct backend *b, int up, size_t n)
{
    struct backend_ctr *k = backend_ctr(b);

    if (k != NULL)
        stats_add(up ? &k->bytes_in : &k->bytes_out, n);
}

static void
conn_connected(struct conn *c)
{
    struct ev_loop *loop = c->w->loop;
    char *pp = c->pp_out.buf;
    uint32_t pp_len = c->pp_out.len;
    double took = ev_now(loop) - c->attempt_start, dl;

    backend_on_success(c->be);
    c->connect_took = ev_now(loop) - c->accepted;
    backend_observe_connect(c->be, took);
    hist_observe(&svc_ctr(c->svc->st)->connect, &hist_connect, took);
    /* The retry set is done with; its bytes become the relay's. */
    memset(&c->c2b, 0, sizeof(c->c2b));
    memset(&c->b2c, 0, sizeof(c->b2c));
    c->bytes_c2b = c->bytes_b2c = 0;
    if (c->early > 0) {
        c->bytes_c2b = c->early;
        stats_add(&svc_ctr(c->svc->st)->bytes_in, c->early);
        be_count_bytes(c->be, 1, c->early);
    }
    /* The PROXY header, if any, waits in c2b: the backend gets it first,
     * and the client is not read until it is all out (conn_update_io).
     * So do bytes read before the connect (conn_accept_read). */
    c->c2b.buf = pp;
    c->c2b.len = pp_len;
    c->state = CONN_RELAY;
    c->last_active = ev_now(loop);
    /* Picked from a service retired a moment ago (this worker had not
     * taken its new table yet): the deadline may already run. */
    dl = svc_be_deadline(c->svc, c->be_idx);
    if (dl > 0)
        drain_worker_note(c->w, dl);
    ev_timer_stop(loop, &c->timer);
    ev_timer_set(&c->timer, c->svc->spec.idle_timeout_ms / 1e3, 0.);
    ev_timer_start(loop, &c->timer);
    /* relay.engine io_uring: the ring takes the bytes from here on. */
    if (ring_relay_start(c) == 0)
        return;
    conn_update_io(c);
}

/* Give up: no backend could take the connection. */
static void
conn_no_backend(struct conn *c)
{
    stats_inc(&svc_ctr(c->svc->st)->fail[STATS_FAIL_NO_BACKEND]);
    log_rl(LOG_WARN, ev_now(c->w->loop),
           "service %s: no backend available after %u attempt(s), "
           "resetting client",
           c->svc->spec.name, c->attempts);
    conn_close(c, 1,
               c->attempts > 0 ? ACCESSLOG_CONNECT_FAILURE
                               : ACCESSLOG_NO_BACKEND);
}

/*
 * The client was accepted with the last free descriptor and its backend
 * socket cannot be made. Rather than reset it, stop accepting and try
 * again shortly: descriptors come back as other connections end. Gives up
 * (returns 0) once the connect timeout since the accept has passed.
 */
static int
conn_wait_fd(struct conn *c, size_t i)
{
    struct ev_loop *loop = c->w->loop;

    worker_pause_accept(c->w);
    if (ev_now(loop) - c->last_active >= c->svc->spec.connect_timeout_ms / 1e3)
        return 0;
    svc_tried_unset(&c->tried, i);
    conn_release_backend(c);
    c->state = CONN_WAIT_FD;
    ev_timer_stop(loop, &c->timer);
    ev_timer_set(&c->timer, CONN_FD_RETRY_S, 0.);
    ev_timer_start(loop, &c->timer);
    return 1;
}

static void
conn_try_connect(struct conn *c)
{
    struct ev_loop *loop = c->w->loop;
    struct svc *s = c->svc;
    int i, fd, one = 1;

    for (;;) {
        if (c->attempts > s->spec.retries || svc_tried_full(&c->tried)
            || (i = svc_pick_client(s, &c->client, &c->tried, ev_now(loop)))
                   < 0) {
            conn_no_backend(c);
            return;
        }
        svc_tried_set(&c->tried, (size_t)i);
        if (c->attempts > 0)
            stats_inc(&svc_ctr(s->st)->retries);
        c->attempt_start = ev_now(loop);
        c->be = backend_ref(s->be[i].b);
        c->be_idx = (uint32_t)i;
        atomic_fetch_add_explicit(&c->be->active, 1, memory_order_relaxed);
        /* The table's copy of the address: it outlives the connect
         * (an io_uring entry reads it when the turn submits). */
        fd = socket(s->tbe[i].addr.u.sa.sa_family,
                    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            if ((errno == EMFILE || errno == ENFILE)
                && conn_wait_fd(c, (size_t)i))
                return;
            stats_inc(&svc_ctr(s->st)->fail[STATS_FAIL_RESOURCE]);
            log_rl(LOG_WARN, ev_now(loop), "service %s: socket: %s",
                   s->spec.name, strerror(errno));
            conn_release_backend(c);
            conn_close(c, 1, ACCESSLOG_RESOURCE);
            return;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        ev_io_set(&c->bio, fd, 0);
        c->state = CONN_CONNECTING;
        if (ring_connect(c) == 0) {
            /* relay.engine io_uring: the connect is a ring entry, and the
             * socket never joins the epoll set. */
            ev_timer_set(&c->timer, s->spec.connect_timeout_ms / 1e3, 0.);
            ev_timer_start(loop, &c->timer);
            return;
        }
        if (connect(fd, &s->tbe[i].addr.u.sa, s->tbe[i].addr.len) == 0) {
            conn_connected(c);
            return;
        }
        if (errno == EINPROGRESS) {
            c->state = CONN_CONNECTING;
            ev_timer_set(&c->timer, s->spec.connect_timeout_ms / 1e3, 0.);
            ev_timer_start(loop, &c->timer);
            conn_update_io(c);
            return;
        }
        /* Refused at once (common on loopback): next backend. */
        conn_blame(c, errno);
        log_rl(LOG_WARN, ev_now(loop), "service %s: backend %s failed: %s",
               s->spec.name, BACKEND_ADDR(c->be), strerror(errno));
        close(fd);
        ev_io_set(&c->bio, -1, 0);
        conn_release_backend(c);
        c->attempts++;
    }
}

/* Pass the FIN on once everything before it has been written. */
static enum conn_rc
half_maybe_shut(struct conn *c, struct half *h, int dst)
{
    const struct half *other = h == &c->c2b ? &c->b2c : &c->c2b;

    if (h->eof && h->len == 0 && !h->shut) {
        /* When the other direction is already over, the close that follows
         * sends this FIN: one system call fewer per connection. */
        if (!other->shut)
            shutdown(dst, SHUT_WR);
        h->shut = 1;
    }
    if (c->c2b.shut && c->b2c.shut)
        return CONN_DONE;
    return CONN_OK;
}

/* Write what waits in <h> to <dst>. */
static enum conn_rc
half_flush(struct conn *c, struct half *h, int dst)
{
    ssize_t n;

    if (h->spliced) {
        n = splice(h->pipe[0], NULL, dst, NULL, h->len,
                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? CONN_OK : CONN_ABORT;
        h->len -= (uint32_t)n;
        c->last_active = ev_now(c->w->loop);
        return half_maybe_shut(c, h, dst);
    }
    n = send(dst, h->buf + h->off, h->len, MSG_NOSIGNAL);

    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? CONN_OK : CONN_ABORT;
    h->off += (uint32_t)n;
    h->len -= (uint32_t)n;
    if (h->len == 0) {
        worker_buf_put(c->w, h->buf);
        h->buf = NULL;
        h->off = 0;
    }
    c->last_active = ev_now(c->w->loop);
    return half_maybe_shut(c, h, dst);
}

void
conn_count(struct conn *c, int up, size_t n)
{
    struct svc_ctr *k = svc_ctr(c->svc->st);

    *(up ? &c->bytes_c2b : &c->bytes_b2c) += n;
    stats_add(up ? &k->bytes_in : &k->bytes_out, n);
    be_count_bytes(c->be, up, n);
    c->last_active = ev_now(c->w->loop);
}

/* Move bytes from <src> to <dst> through the half's pipe, without copying
 * them through user space; what <dst> cannot take now stays in the pipe,
 * and reading <src> stops until it drains. */
static enum conn_rc
half_splice(struct conn *c, struct half *h, int src, int dst, int up)
{
    ssize_t n, m;

    n = splice(src, NULL, h->pipe[1], NULL, WORKER_PIPE_SIZE,
               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? CONN_OK : CONN_ABORT;
    if (n == 0) {
        h->eof = 1;
        if (c->first_eof == 0)
            c->first_eof = up ? 1 : 2;
        return half_maybe_shut(c, h, dst);
    }
    conn_count(c, up, (size_t)n);
    /* Counted in the pipe before it is passed on: a connection that ends
     * on an error here must not give the pipe back to the pool as empty
     * (the next connection to take it would send these bytes first). */
    h->len = (uint32_t)n;
    m = splice(h->pipe[0], NULL, dst, NULL, (size_t)n,
               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (m < 0) {
        if (errno != EAGAIN && errno != EINTR)
            return CONN_ABORT;
        m = 0;
    }
    h->len -= (uint32_t)m;
    return CONN_OK;
}

/* Whether <h> should splice from now on; takes a pipe if so. Called only
 * while nothing waits in <h>. */
static int
half_want_splice(struct conn *c, struct half *h)
{
    struct worker *w = c->w;
    int mode = atomic_load_explicit(&worker_splice_mode, memory_order_relaxed);

    if (mode == CONF_SPLICE_NEVER || h->nopipe
        || (mode == CONF_SPLICE_AUTO && !h->bulk))
        return 0;
    if (worker_pipe_get(w, h->pipe) < 0) {
        h->nopipe = 1; /* asked once per direction */
        return 0;
    }
    h->spliced = 1;
    return 1;
}

/* Read from <src> and write straight to <dst> through the worker's
 * scratch buffer; only what <dst> cannot take now is copied into a
 * per-connection buffer, and reading <src> stops until it drains. */
static enum conn_rc
half_relay(struct conn *c, struct half *h, int src, int dst, int up)
{
    char *scratch = c->w->scratch;
    ssize_t n, m;

    if (h->spliced || half_want_splice(c, h))
        return half_splice(c, h, src, dst, up);
    n = recv(src, scratch, WORKER_BUF_SIZE, 0);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? CONN_OK : CONN_ABORT;
    if (n == 0) {
        h->eof = 1;
        if (c->first_eof == 0)
            c->first_eof = up ? 1 : 2;
        return half_maybe_shut(c, h, dst);
    }
    conn_count(c, up, (size_t)n);
    if (n == WORKER_BUF_SIZE)
        h->bulk = 1;
    m = send(dst, scratch, (size_t)n, MSG_NOSIGNAL);
    if (m < 0) {
        if (errno != EAGAIN && errno != EINTR)
            return CONN_ABORT;
        m = 0;
    }
    if (m < n) {
        h->buf = worker_buf_get(c->w);
        if (h->buf == NULL)
            return CONN_ABORT;
        h->off = 0;
        h->len = (uint32_t)(n - m);
        memcpy(h->buf, scratch + m, h->len);
    }
    return CONN_OK;
}

static void
conn_on_client(struct ev_loop *loop, struct ev_io *io, int rev)
{
    struct conn *c = io->data;
    enum conn_rc rc = CONN_OK;

    (void)loop;
    if (c->state == CONN_PROXY_HDR) {
        conn_read_proxy_hdr(c);
        return;
    }
    if (rev & EV_WRITE)
        rc = half_flush(c, &c->b2c, c->cio.fd);
    if (rc == CONN_OK && (rev & EV_READ) && c->c2b.len == 0 && !c->c2b.eof)
        rc = half_relay(c, &c->c2b, c->cio.fd, c->bio.fd, 1);
    if (rc != CONN_OK) {
        conn_finish(c, rc);
        return;
    }
    conn_update_io(c);
}

void
conn_ring_connected(struct conn *c, int err)
{
    if (err != 0)
        conn_attempt_failed(c, err);
    else
        conn_connected(c);
}

static void
conn_on_connect(struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(c->bio.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        conn_attempt_failed(c, err);
        return;
    }
    conn_connected(c);
}

static void
conn_on_backend(struct ev_loop *loop, struct ev_io *io, int rev)
{
    struct conn *c = io->data;
    enum conn_rc rc = CONN_OK;

    (void)loop;
    if (c->state == CONN_CONNECTING) {
        conn_on_connect(c);
        return;
    }
    if (rev & EV_WRITE)
        rc = half_flush(c, &c->c2b, c->bio.fd);
    if (rc == CONN_OK && (rev & EV_READ) && c->b2c.len == 0 && !c->b2c.eof)
        rc = half_relay(c, &c->b2c, c->bio.fd, c->cio.fd, 0);
    if (rc != CONN_OK) {
        conn_finish(c, rc);
        return;
    }
    conn_update_io(c);
}

static void
conn_on_timer(struct ev_loop *loop, struct ev_timer *t, int rev)
{
    struct conn *c = t->data;
    double idle, left;

    (void)rev;
    if (c->state == CONN_CONNECTING) {
        /* A connect on the ring is cancelled first; its completion says
         * how it ended (conn_ring_connected). */
        if (c->ring_connect) {
            ring_cancel_connect(c);
            return;
        }
        conn_attempt_failed(c, ETIMEDOUT);
        return;
    }
    if (c->state == CONN_WAIT_FD) {
        conn_try_connect(c);
        return;
    }
    if (c->state == CONN_PROXY_HDR) {
        conn_refuse_proxy(c, STATS_PP_TIMEOUT, "no whole header in time");
        return;
    }
    /* The timer is not pushed on every read; it fires at the earliest
     * possible expiry and re-arms for what is left (libev's "be smart
     * about timeouts"). */
    idle = c->svc->spec.idle_timeout_ms / 1e3;
    left = c->last_active + idle - ev_now(loop);
    if (left > 0.001) {
        ev_timer_set(t, left, 0.);
        ev_timer_start(loop, t);
        return;
    }
    conn_log(LOG_DEBUG, c, "idle for %.3f s, closing", idle);
    conn_close(c, 0, ACCESSLOG_IDLE_TIMEOUT);
}

double
conn_drain_scan(struct worker *w, double now)
{
    struct conn *c, *next;
    double dl, first = 0;
    unsigned n = 0;

    for (c = w->conns; c != NULL; c = next) {
        next = c->next;
        if (c->be == NULL)
            continue; /* no backend yet, or between two */
        dl = svc_be_deadline(c->svc, c->be_idx);
        if (dl <= 0)
            continue;
        if (dl > now) {
            if (first == 0 || dl < first)
                first = dl;
            continue;
        }
        stats_inc(&svc_ctr(c->svc->st)->drain_closed);
        conn_log(LOG_DEBUG, c, "backend taken away %u ms ago: resetting",
                 c->svc->spec.drain_timeout_ms);
        conn_close(c, 1, ACCESSLOG_DRAIN_TIMEOUT);
        n++;
    }
    if (n > 0)
        log_info("drain_timeout: reset %u connection(s) to backends taken "
                 "away",
                 n);
    return first;
}

size_t
conn_object_size(void)
{
    return sizeof(struct conn);
}

void
conn_close_all(struct worker *w)
{
    sniroute_close_all(w);
    while (w->conns != NULL)
        conn_close(w->conns, 1, ACCESSLOG_DRAIN_RESET);
}
