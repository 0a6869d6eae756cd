#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "httpreq.h"
#include "log.h"
#include "nodehealth.h"
#include "sbuf.h"

#define NH_CONNS_MAX 128
#define NH_TIMEOUT_S 5.0 /* whole exchange */
#define NH_LINGER_S  1.0 /* read and drop after the reply */
#define NH_REPLY_MAX 4096
#define NH_ADDRS_MAX 16 /* addresses a responder listens on */

struct nh_listener {
    struct nodehealth *nh;
    struct nh_listener *next;
    struct ev_io io;
    struct saddr addr;
    uint16_t port; /* healthCheckNodePort, 0 = the node endpoints */
};

/* One healthCheckNodePort and the Service it answers for. */
struct nh_port {
    struct nh_port *next;
    uint16_t port;
    char ns[TBL_K8S_NAME_MAX], name[TBL_K8S_NAME_MAX];
    unsigned local; /* local ready endpoints (distinct pod IPs) */
    struct nh_listener *ls;
    int mark;
};

enum nh_phase { NH_READING, NH_WRITING, NH_LINGER };

struct nh_conn {
    struct nodehealth *nh;
    struct nh_conn *prev, *next;
    struct ev_io io;
    struct ev_timer timer;
    enum nh_phase phase;
    uint16_t port;
    size_t inlen, sent;
    struct sbuf out;
    char in[HTTPREQ_MAX];
};

struct nodehealth {
    struct ev_loop *loop;
    nodehealth_state_fn state;
    void *arg;
    double stale_after;
    struct nh_listener *node; /* /healthz, /livez, /readyz */
    struct nh_port *ports;
    struct nh_conn *conns;
    size_t nconns;
};

static void conn_close(struct nh_conn *c);

/* ---- replies ------------------------------------------------------------ */

static void
reply(struct sbuf *out, int code, const char *ctype, const char *extra,
      const char *body, int head)
{
    sbuf_printf(out,
                "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                "X-Content-Type-Options: nosniff\r\nContent-Length: %zu\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                code,
                code == 200   ? "OK"
                : code == 404 ? "Not Found"
                : code == 405 ? "Method Not Allowed"
                              : "Service Unavailable",
                ctype, strlen(body), extra);
    if (!head)
        sbuf_puts(out, body);
}

static const char *
rfc3339(double t, char *buf, size_t len)
{
    time_t s = (time_t)t;
    struct tm tm;

    if (t <= 0) {
        buf[0] = '\0';
        return buf;
    }
    gmtime_r(&s, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/* kube-proxy's health: no change waiting too long to be in force. */
static int
proxy_healthy(const struct nodehealth_state *st, double stale_after, double now)
{
    return st->pending_since <= 0 || now - st->pending_since <= stale_after;
}

void
nodehealth_reply_node(const struct nodehealth_state *st, double stale_after_s,
                      const struct httpreq *r, double now, struct sbuf *out)
{
    int head = r->method == HTTPREQ_HEAD, ok, livez;
    char body[256], lu[32], ct[32];

    if (strcmp(r->path, "/healthz") != 0 && strcmp(r->path, "/livez") != 0
        && strcmp(r->path, "/readyz") != 0) {
        reply(out, 404, "text/plain; charset=utf-8", "", "not found\n", head);
        return;
    }
    if (r->method != HTTPREQ_GET && !head) {
        reply(out, 405, "text/plain; charset=utf-8", "Allow: GET, HEAD\r\n",
              "use GET\n", 0);
        return;
    }
    if (strcmp(r->path, "/readyz") == 0) {
        ok = st->synced && !st->shutting_down;
        reply(out, ok ? 200 : 503, "text/plain; charset=utf-8", "",
              ok                  ? "ready\n"
              : st->shutting_down ? "not ready: shutting down\n"
                                  : "not ready: waiting for the first full "
                                    "sync from the API server\n",
              head);
        return;
    }
    livez = strcmp(r->path, "/livez") == 0;
    ok = proxy_healthy(st, stale_after_s, now);
    if (livez)
        snprintf(body, sizeof(body),
                 "{\"lastUpdated\":\"%s\",\"currentTime\":\"%s\"}\n",
                 rfc3339(st->last_applied, lu, sizeof(lu)),
                 rfc3339(now, ct, sizeof(ct)));
    else
        snprintf(body, sizeof(body),
                 "{\"lastUpdated\":\"%s\",\"currentTime\":\"%s\","
                 "\"nodeEligible\":%s}\n",
                 rfc3339(st->last_applied, lu, sizeof(lu)),
                 rfc3339(now, ct, sizeof(ct)),
                 st->node_deleting ? "false" : "true");
    if (!livez && st->node_deleting)
        ok = 0;
    reply(out, ok ? 200 : 503, "application/json", "", body, head);
}

void
nodehealth_reply_service(const struct nodehealth_state *st,
                         double stale_after_s, const char *ns, const char *name,
                         unsigned local_endpoints, const struct httpreq *r,
                         double now, struct sbuf *out)
{
    int healthy = proxy_healthy(st, stale_after_s, now) && !st->node_deleting;
    char body[512], extra[80];

    /* Namespaces and names are DNS labels: nothing to escape. */
    snprintf(body, sizeof(body),
             "{\"service\":{\"namespace\":\"%s\",\"name\":\"%s\"},"
             "\"localEndpoints\":%u,\"serviceProxyHealthy\":%s}\n",
             ns, name, local_endpoints, healthy ? "true" : "false");
    snprintf(extra, sizeof(extra), "X-Load-Balancing-Endpoint-Weight: %u\r\n",
             local_endpoints);
    reply(out, local_endpoints > 0 && healthy ? 200 : 503, "application/json",
          extra, body, r->method == HTTPREQ_HEAD);
}

/* ---- connections -------------------------------------------------------- */

static struct nh_port *
port_find(struct nodehealth *nh, uint16_t port)
{
    struct nh_port *p;

    for (p = nh->ports; p != NULL; p = p->next)
        if (p->port == port)
            return p;
    return NULL;
}

static void
conn_want(struct nh_conn *c, int events)
{
    ev_io_stop(c->nh->loop, &c->io);
    ev_io_set(&c->io, c->io.fd, events);
    ev_io_start(c->nh->loop, &c->io);
}

static void
conn_close(struct nh_conn *c)
{
    struct nodehealth *nh = c->nh;

    ev_io_stop(nh->loop, &c->io);
    ev_timer_stop(nh->loop, &c->timer);
    close(c->io.fd);
    sbuf_deinit(&c->out);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        nh->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    nh->nconns--;
    free(c);
}

static void
conn_respond(struct nh_conn *c, const struct httpreq *r)
{
    struct nodehealth *nh = c->nh;
    struct nodehealth_state st;
    const struct nh_port *p;

    memset(&st, 0, sizeof(st));
    nh->state(nh->arg, &st);
    if (c->port == 0) {
        nodehealth_reply_node(&st, nh->stale_after, r, ev_time(), &c->out);
        return;
    }
    /* The Service may have left the table since the accept. */
    p = port_find(nh, c->port);
    nodehealth_reply_service(&st, nh->stale_after, p ? p->ns : "",
                             p ? p->name : "", p ? p->local : 0, r, ev_time(),
                             &c->out);
}

static void
conn_read(struct nh_conn *c)
{
    struct httpreq r;
    const char *why = "malformed request";
    enum httpreq_rc rc;
    ssize_t n;

    n = recv(c->io.fd, c->in + c->inlen, sizeof(c->in) - c->inlen, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            conn_close(c);
        return;
    }
    if (n == 0) {
        conn_close(c);
        return;
    }
    c->inlen += (size_t)n;
    rc = httpreq_parse(c->in, c->inlen, &r, &why);
    if (rc == HTTPREQ_AGAIN && c->inlen < sizeof(c->in))
        return;
    if (rc == HTTPREQ_OK)
        conn_respond(c, &r);
    else
        sbuf_printf(&c->out,
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                    "Content-Length: 12\r\nConnection: close\r\n\r\n"
                    "bad request\n");
    c->phase = NH_WRITING;
    conn_want(c, EV_WRITE);
}

static void
conn_write(struct nh_conn *c)
{
    ssize_t n =
        send(c->io.fd, c->out.p + c->sent, c->out.len - c->sent, MSG_NOSIGNAL);

    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            conn_close(c);
        return;
    }
    c->sent += (size_t)n;
    if (c->sent < c->out.len)
        return;
    /* Our FIN, then read until the client's: unread request bytes must
     * not turn the close into a reset that loses the reply. */
    shutdown(c->io.fd, SHUT_WR);
    c->phase = NH_LINGER;
    conn_want(c, EV_READ);
    ev_timer_stop(c->nh->loop, &c->timer);
    ev_timer_set(&c->timer, NH_LINGER_S, 0.);
    ev_timer_start(c->nh->loop, &c->timer);
}

static void
conn_on_io(struct ev_loop *loop, struct ev_io *io, int rev)
{
    struct nh_conn *c = io->data;
    char sink[1024];
    ssize_t n;

    (void)loop;
    (void)rev;
    if (c->phase == NH_READING) {
        conn_read(c);
    } else if (c->phase == NH_WRITING) {
        conn_write(c);
    } else {
        n = recv(c->io.fd, sink, sizeof(sink), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            conn_close(c);
    }
}

static void
conn_on_timer(struct ev_loop *loop, struct ev_timer *t, int rev)
{
    (void)loop;
    (void)rev;
    conn_close(t->data);
}

static void
listener_on_accept(struct ev_loop *loop, struct ev_io *io, int rev)
{
    struct nh_listener *l = io->data;
    struct nodehealth *nh = l->nh;
    struct nh_conn *c;
    int fd, i;

    (void)rev;
    for (i = 0; i < 16; i++) {
        fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                log_rl(LOG_WARN, ev_now(loop), "healthz: accept: %s",
                       strerror(errno));
            return;
        }
        if (nh->nconns >= NH_CONNS_MAX || (c = calloc(1, sizeof(*c))) == NULL) {
            log_rl(LOG_WARN, ev_now(loop),
                   "healthz: too many connections, closing a new one");
            close(fd);
            continue;
        }
        c->nh = nh;
        c->port = l->port;
        sbuf_init(&c->out, NH_REPLY_MAX);
        ev_io_init(&c->io, conn_on_io, fd, EV_READ);
        ev_timer_init(&c->timer, conn_on_timer, NH_TIMEOUT_S, 0.);
        c->io.data = c->timer.data = c;
        c->next = nh->conns;
        if (nh->conns != NULL)
            nh->conns->prev = c;
        nh->conns = c;
        nh->nconns++;
        ev_io_start(loop, &c->io);
        ev_timer_start(loop, &c->timer);
    }
}

/* ---- listeners ---------------------------------------------------------- */

static struct nh_listener *
listener_new(struct nodehealth *nh, const struct saddr *addr, uint16_t port,
             struct err *e)
{
    struct nh_listener *l;
    char s[SADDR_STR_MAX];
    int fd, one = 1, err;

    saddr_str(addr, s, sizeof(s));
    fd = socket(addr->u.sa.sa_family,
                SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err_set(e, "socket: %s", strerror(errno));
        return NULL;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (addr->u.sa.sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, &addr->u.sa, addr->len) < 0 || listen(fd, 64) < 0) {
        err = errno;
        close(fd);
        err_set(e, "cannot listen on %s: %s", s, strerror(err));
        return NULL;
    }
    if ((l = calloc(1, sizeof(*l))) == NULL) {
        close(fd);
        err_set(e, "out of memory");
        return NULL;
    }
    l->nh = nh;
    l->addr = *addr;
    l->port = port;
    ev_io_init(&l->io, listener_on_accept, fd, EV_READ);
    l->io.data = l;
    ev_io_start(nh->loop, &l->io);
    return l;
}

static void
listeners_free(struct nodehealth *nh, struct nh_listener *l)
{
    struct nh_listener *next;

    for (; l != NULL; l = next) {
        next = l->next;
        ev_io_stop(nh->loop, &l->io);
        close(l->io.fd);
        free(l);
    }
}

struct nodehealth *
nodehealth_new(struct ev_loop *loop, nodehealth_state_fn state, void *arg,
               double stale_after_s)
{
    struct nodehealth *nh = calloc(1, sizeof(*nh));

    if (nh == NULL)
        return NULL;
    nh->loop = loop;
    nh->state = state;
    nh->arg = arg;
    nh->stale_after = stale_after_s;
    return nh;
}

static void
port_free(struct nodehealth *nh, struct nh_port *p)
{
    listeners_free(nh, p->ls);
    free(p);
}

void
nodehealth_free(struct nodehealth *nh)
{
    struct nh_port *p;

    if (nh == NULL)
        return;
    listeners_free(nh, nh->node);
    while ((p = nh->ports) != NULL) {
        nh->ports = p->next;
        port_free(nh, p);
    }
    while (nh->conns != NULL)
        conn_close(nh->conns);
    free(nh);
}

int
nodehealth_listen(struct nodehealth *nh, const struct saddr *addr,
                  struct err *e)
{
    char s[SADDR_STR_MAX];

    listeners_free(nh, nh->node);
    nh->node = listener_new(nh, addr, 0, e);
    if (nh->node == NULL)
        return -1;
    log_info("healthz: /healthz, /livez and /readyz on http://%s/",
             saddr_str(addr, s, sizeof(s)));
    return 0;
}

/* Local ready endpoints of the services of <t> with health check port
 * <port>, counted once per pod IP (a pod serving two ports is one
 * endpoint for a load balancer). */
static unsigned
count_local(const struct table *t, uint16_t port)
{
    struct saddr seen[64];
    unsigned n = 0, extra = 0;
    size_t i, j, k;

    for (i = 0; i < t->nservices; i++) {
        const struct tbl_service *s = &t->services[i];
        if (s->hc_node_port != port)
            continue;
        for (j = 0; j < s->nbackends; j++) {
            struct saddr ip = s->backends[j].addr;
            if ((s->backends[j].flags & (TBL_BE_READY | TBL_BE_LOCAL))
                != (TBL_BE_READY | TBL_BE_LOCAL))
                continue;
            if (ip.u.sa.sa_family == AF_INET)
                ip.u.in.sin_port = 0;
            else
                ip.u.in6.sin6_port = 0;
            for (k = 0; k < n && saddr_cmp(&seen[k], &ip) != 0; k++)
                ;
            if (k < n)
                continue;
            if (n < sizeof(seen) / sizeof(seen[0]))
                seen[n++] = ip;
            else
                extra++; /* more local pods than a node runs: count all */
        }
    }
    return n + extra;
}

/* Open what is missing of <p>'s listeners, one per address. */
static void
port_listen(struct nodehealth *nh, struct nh_port *p, const struct saddr *addrs,
            size_t naddrs)
{
    struct nh_listener *l;
    struct saddr a;
    struct err e;
    size_t i;

    for (i = 0; i < naddrs && i < NH_ADDRS_MAX; i++) {
        a = addrs[i];
        if (a.u.sa.sa_family == AF_INET)
            a.u.in.sin_port = htons(p->port);
        else
            a.u.in6.sin6_port = htons(p->port);
        for (l = p->ls; l != NULL && saddr_cmp(&l->addr, &a) != 0; l = l->next)
            ;
        if (l != NULL)
            continue;
        err_clear(&e);
        l = listener_new(nh, &a, p->port, &e);
        if (l == NULL) {
            log_rl(LOG_WARN, ev_now(nh->loop),
                   "healthz: health check port of %s/%s: %s", p->ns, p->name,
                   e.msg);
            continue;
        }
        l->next = p->ls;
        p->ls = l;
        log_info("healthz: answering load balancer health checks for %s/%s "
                 "on %s",
                 p->ns, p->name, saddr_str(&a, e.msg, sizeof(e.msg)));
    }
}

void
nodehealth_set_table(struct nodehealth *nh, const struct table *t,
                     const struct saddr *addrs, size_t naddrs)
{
    struct nh_port *p, **pp;
    size_t i;

    for (p = nh->ports; p != NULL; p = p->next)
        p->mark = 0;
    for (i = 0; t != NULL && i < t->nservices; i++) {
        const struct tbl_service *s = &t->services[i];
        if (s->hc_node_port == 0)
            continue;
        p = port_find(nh, s->hc_node_port);
        if (p != NULL && p->mark)
            continue; /* another port of the same Service */
        if (p == NULL) {
            if ((p = calloc(1, sizeof(*p))) == NULL) {
                log_error("healthz: out of memory");
                continue;
            }
            p->port = s->hc_node_port;
            p->next = nh->ports;
            nh->ports = p;
        }
        memcpy(p->ns, s->hc_ns, sizeof(p->ns));
        memcpy(p->name, s->hc_name, sizeof(p->name));
        p->local = count_local(t, p->port);
        p->mark = 1;
        port_listen(nh, p, addrs, naddrs);
    }
    for (pp = &nh->ports; (p = *pp) != NULL;) {
        if (p->mark) {
            pp = &p->next;
            continue;
        }
        log_info("healthz: health check port %u of %s/%s closed", p->port,
                 p->ns, p->name);
        *pp = p->next;
        port_free(nh, p);
    }
}

size_t
nodehealth_ports(const struct nodehealth *nh)
{
    const struct nh_port *p;
    size_t n = 0;

    for (p = nh->ports; p != NULL; p = p->next)
        n += p->ls != NULL;
    return n;
}
