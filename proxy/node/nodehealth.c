#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uthash.h>

#include "httpd.h"
#include "httpreq.h"
#include "log.h"
#include "nodehealth.h"
#include "sbuf.h"
#include "stats.h"

#define NH_CONNS_MAX 128 /* 32 per client address */
/* Whole exchange. Probes send their request at once; anything slower is
 * holding a slot, and the kubelet's probe timeout is 1 s by default. */
#define NH_TIMEOUT_S 2.0
#define NH_REPLY_MAX 4096
#define NH_ADDRS_MAX 16 /* addresses a responder listens on */

struct nh_listener {
    struct nh_listener *next;
    struct httpd_listener *hl;
    struct saddr addr;
};

/* One healthCheckNodePort and the Service it answers for. */
struct nh_port {
    struct nh_port *next;
    uint16_t port;
    char ns[TBL_K8S_NAME_MAX], name[TBL_K8S_NAME_MAX];
    unsigned local; /* local ready endpoints (distinct pod IPs) */
    struct nh_listener *ls;
    int mark;
    int complete; /* a listener on every address (port_listen()) */
    UT_hash_handle hh; /* nodehealth.byport */
    /* Positions of the services and kernel services with this port in
     * the table last followed. */
    size_t *spos, nspos, scap;
    size_t *kpos, nkpos, kcap;
};

struct nodehealth {
    struct ev_loop *loop;
    nodehealth_state_fn state;
    void *arg;
    double stale_after;
    struct nh_listener *node; /* /healthz, /livez, /readyz */
    struct nh_port *ports;
    /* The same by port (a request's lookup, a change's), and how many
     * miss a listener: a change retries those only. */
    struct nh_port *byport;
    size_t nincomplete;
    struct httpd *srv;
    struct nodehealth_counts counts;
    /* The table last followed (a reference) and the addresses then. */
    struct table *table;
    struct saddr addrs[NH_ADDRS_MAX];
    size_t naddrs;
};

/* ---- replies ------------------------------------------------------------ */

static void
reply(struct sbuf *out, int code, const char *ctype, const char *extra,
      const char *body, int head)
{
    httpd_reply(out, code, ctype, extra, body, strlen(body), head);
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

int
nodehealth_reply_node(const struct nodehealth_state *st, double stale_after_s,
                      const struct httpreq *r, double now, struct sbuf *out)
{
    int head = r->method == HTTPREQ_HEAD, ok, livez;
    char body[256], lu[32], ct[32];

    if (strcmp(r->path, "/healthz") != 0 && strcmp(r->path, "/livez") != 0
        && strcmp(r->path, "/readyz") != 0) {
        reply(out, 404, "text/plain; charset=utf-8", "", "not found\n", head);
        return 404;
    }
    if (r->method != HTTPREQ_GET && !head) {
        reply(out, 405, "text/plain; charset=utf-8", "Allow: GET, HEAD\r\n",
              "use GET\n", 0);
        return 405;
    }
    if (strcmp(r->path, "/readyz") == 0) {
        ok = st->synced && !st->shutting_down;
        reply(out, ok ? 200 : 503, "text/plain; charset=utf-8", "",
              ok                  ? "ready\n"
              : st->shutting_down ? "not ready: shutting down\n"
                                  : "not ready: waiting for the first full "
                                    "sync from the API server\n",
              head);
        return ok ? 200 : 503;
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
    return ok ? 200 : 503;
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

    HASH_FIND(hh, nh->byport, &port, sizeof(port), p);
    return p;
}

/* The handler of every listener; <tag> is the healthCheckNodePort, 0 for
 * the node endpoints. */
static void
nh_on_request(void *arg, unsigned tag, const struct httpreq *r, double now,
              struct sbuf *out)
{
    struct nodehealth *nh = arg;
    struct nodehealth_state st;
    const struct nh_port *p;

    now = ev_time(); /* kube-proxy's bodies carry wall-clock times */
    memset(&st, 0, sizeof(st));
    nh->state(nh->arg, &st);
    if (tag == 0) {
        int code = nodehealth_reply_node(&st, nh->stale_after, r, now, out);
        uint64_t *c = strcmp(r->path, "/healthz") == 0 ? nh->counts.healthz
                      : strcmp(r->path, "/livez") == 0 ? nh->counts.livez
                                                        : NULL;
        if (c != NULL && (code == 200 || code == 503))
            c[code == 503]++;
        return;
    }
    /* The Service may have left the table since the accept. */
    p = port_find(nh, (uint16_t)tag);
    nodehealth_reply_service(&st, nh->stale_after, p ? p->ns : "",
                             p ? p->name : "", p ? p->local : 0, r, now, out);
}

/* ---- listeners ---------------------------------------------------------- */

static struct nh_listener *
nh_listener_new(struct nodehealth *nh, const struct saddr *addr, uint16_t port,
             struct err *e)
{
    struct nh_listener *l = calloc(1, sizeof(*l));

    if (l == NULL) {
        err_set(e, "out of memory");
        return NULL;
    }
    l->hl = httpd_listen(nh->srv, addr, nh_on_request, nh, port, e);
    if (l->hl == NULL) {
        free(l);
        return NULL;
    }
    l->addr = *addr;
    return l;
}

static void
nh_listeners_free(struct nodehealth *nh, struct nh_listener *l)
{
    struct nh_listener *next;

    for (; l != NULL; l = next) {
        next = l->next;
        httpd_unlisten(nh->srv, l->hl);
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
    nh->srv = httpd_new(loop, "healthz", NH_REPLY_MAX, NH_CONNS_MAX);
    if (nh->srv == NULL) {
        free(nh);
        return NULL;
    }
    httpd_set_timeout(nh->srv, NH_TIMEOUT_S);
    httpd_set_on_pause(nh->srv, stats_accept_paused);
    nh->loop = loop;
    nh->state = state;
    nh->arg = arg;
    nh->stale_after = stale_after_s;
    return nh;
}

static void
port_free(struct nodehealth *nh, struct nh_port *p)
{
    HASH_DEL(nh->byport, p);
    if (!p->complete)
        nh->nincomplete--;
    nh_listeners_free(nh, p->ls);
    free(p->spos);
    free(p->kpos);
    free(p);
}

void
nodehealth_free(struct nodehealth *nh)
{
    struct nh_port *p;

    if (nh == NULL)
        return;
    nh_listeners_free(nh, nh->node);
    while ((p = nh->ports) != NULL) {
        nh->ports = p->next;
        port_free(nh, p);
    }
    httpd_free(nh->srv);
    table_unref(nh->table);
    free(nh);
}

int
nodehealth_listen(struct nodehealth *nh, const struct saddr *addr,
                  struct err *e)
{
    char s[SADDR_STR_MAX];

    nh_listeners_free(nh, nh->node);
    nh->node = nh_listener_new(nh, addr, 0, e);
    if (nh->node == NULL)
        return -1;
    log_info("healthz: /healthz, /livez and /readyz on http://%s/",
             saddr_str(addr, s, sizeof(s)));
    return 0;
}

/* Add the local ready endpoints of <be> to <seen> (once per pod IP). */
static void
add_local(const struct tbl_backend *be, size_t nbe, struct saddr *seen,
          unsigned *n, unsigned *extra)
{
    size_t j, k;

    for (j = 0; j < nbe; j++) {
        struct saddr ip = be[j].addr;
        if ((be[j].flags & (TBL_BE_READY | TBL_BE_LOCAL))
            != (TBL_BE_READY | TBL_BE_LOCAL))
            continue;
        if (*n == 64) {
            (*extra)++; /* more local pods than a node runs: count all */
            continue;
        }
        saddr_set_port(&ip, 0);
        for (k = 0; k < *n && saddr_cmp(&seen[k], &ip) != 0; k++)
            ;
        if (k < *n)
            continue;
        seen[(*n)++] = ip;
    }
}

/* Local ready endpoints of the services of <t> (proxied or kernel) with
 * health check port <port>, counted once per pod IP (a pod serving two
 * ports is one endpoint for a load balancer). */
static unsigned
count_local(const struct table *t, const struct nh_port *p)
{
    struct saddr seen[64];
    unsigned n = 0, extra = 0;
    size_t i;

    for (i = 0; i < p->nspos; i++) {
        const struct tbl_service *s = table_service(t, p->spos[i]);
        add_local(s->backends, s->nbackends, seen, &n, &extra);
    }
    for (i = 0; i < p->nkpos; i++) {
        const struct tbl_ksvc *k = table_ksvc(t, p->kpos[i]);
        add_local(k->local_eps, k->nlocal_eps, seen, &n, &extra);
    }
    return n + extra;
}


/* Open what is missing of <p>'s listeners, one per address; whether it
 * has them all since into p->complete (and nh->nincomplete). */
static void
port_listen(struct nodehealth *nh, struct nh_port *p, const struct saddr *addrs,
            size_t naddrs)
{
    struct nh_listener *l;
    struct saddr a;
    struct err e;
    size_t i;
    int complete = 1;

    for (i = 0; i < naddrs && i < NH_ADDRS_MAX; i++) {
        a = addrs[i];
        saddr_set_port(&a, p->port);
        for (l = p->ls; l != NULL && saddr_cmp(&l->addr, &a) != 0; l = l->next)
            ;
        if (l != NULL)
            continue;
        err_clear(&e);
        l = nh_listener_new(nh, &a, p->port, &e);
        if (l == NULL) {
            log_rl(LOG_WARN, ev_now(nh->loop),
                   "healthz: health check port of %s/%s: %s", p->ns, p->name,
                   e.msg);
            complete = 0;
            continue;
        }
        l->next = p->ls;
        p->ls = l;
        log_info("healthz: answering load balancer health checks for %s/%s "
                 "on %s",
                 p->ns, p->name, saddr_str(&a, e.msg, sizeof(e.msg)));
    }
    if (complete != p->complete) {
        if (complete)
            nh->nincomplete--;
        else
            nh->nincomplete++;
        p->complete = complete;
    }
}

/* The namespace and name of the Service a table or kernel service with a
 * health check port was translated from, into <p>: its name starts
 * "namespace/name:" (a namespace holds no '/', a Service name no ':'). */
static void
owner_of(const char *full, struct nh_port *p)
{
    size_t ns = strcspn(full, "/"), name = 0;

    if (full[ns] == '/')
        name = strcspn(full + ns + 1, ":");
    snprintf(p->ns, sizeof(p->ns), "%.*s", (int)ns, full);
    snprintf(p->name, sizeof(p->name), "%.*s", (int)name,
             full[ns] == '/' ? full + ns + 1 : "");
}

/* Follow <t>, made from the table last followed (table_derive()): only
 * the ports of the entries it changed are counted again, so a change
 * costs the same however many ports the node answers on. Returns 0, or
 * -1 when it cannot be done so (an entry's port changed). */
static int
set_table_delta(struct nodehealth *nh, const struct table *t)
{
    const struct table *old = nh->table;
    struct nh_port *p;
    size_t i, k;

    /* First the check, then the counts: nothing counted when it fails. */
    for (i = 0; i < t->ndsvcs + t->ndksvcs; i++) {
        if (i < t->ndsvcs) {
            k = t->dsvcs[i];
            if (table_service(old, k)->hc_node_port
                != table_service(t, k)->hc_node_port)
                return -1;
        } else {
            k = t->dksvcs[i - t->ndsvcs];
            if (table_ksvc(old, k)->hc_node_port
                != table_ksvc(t, k)->hc_node_port)
                return -1;
        }
    }
    for (i = 0; i < t->ndsvcs + t->ndksvcs; i++) {
        uint16_t now = i < t->ndsvcs
                           ? table_service(t, t->dsvcs[i])->hc_node_port
                           : table_ksvc(t, t->dksvcs[i - t->ndsvcs])
                                 ->hc_node_port;

        /* A port that several changed entries share is counted once for
         * each of them: the same count again, a few times at worst. */
        if (now != 0 && (p = port_find(nh, now)) != NULL)
            p->local = count_local(t, p);
    }
    return 0;
}

void
nodehealth_set_table(struct nodehealth *nh, const struct table *t,
                     const struct saddr *addrs, size_t naddrs)
{
    struct nh_port *p, **pp;
    size_t i;
    int delta;

    if (naddrs > NH_ADDRS_MAX)
        naddrs = NH_ADDRS_MAX;
    delta = t != NULL && nh->table != NULL && t->base == nh->table->serial
            && t->nservices == nh->table->nservices
            && t->nksvcs == nh->table->nksvcs && naddrs == nh->naddrs
            && (naddrs == 0
                || memcmp(addrs, nh->addrs, naddrs * sizeof(*addrs)) == 0);
    if (delta && set_table_delta(nh, t) == 0) {
        for (p = nh->ports; p != NULL && nh->nincomplete > 0; p = p->next)
            if (!p->complete)
                port_listen(nh, p, addrs, naddrs); /* retry what failed */
        table_unref(nh->table);
        nh->table = table_ref((struct table *)t);
        return;
    }
    for (p = nh->ports; p != NULL; p = p->next) {
        p->mark = 0;
        p->nspos = p->nkpos = 0;
    }
    for (i = 0; t != NULL && i < t->nservices + t->nksvcs; i++) {
        uint16_t hc;
        const char *full;
        int rc;
        if (i < t->nservices) {
            hc = table_service(t, i)->hc_node_port;
            full = table_service(t, i)->name;
        } else {
            hc = table_ksvc(t, i - t->nservices)->hc_node_port;
            full = table_ksvc(t, i - t->nservices)->name;
        }
        if (hc == 0)
            continue;
        p = port_find(nh, hc);
        if (p == NULL) {
            if ((p = calloc(1, sizeof(*p))) == NULL) {
                log_error("healthz: out of memory");
                continue;
            }
            p->port = hc;
            p->next = nh->ports;
            nh->ports = p;
            HASH_ADD(hh, nh->byport, port, sizeof(p->port), p);
            nh->nincomplete++; /* no listener yet */
        }
        if (!p->mark) /* the first; others: more ports of the Service */
            owner_of(full, p);
        p->mark = 1;
        rc = i < t->nservices
                 ? table_pos_push(&p->spos, &p->nspos, &p->scap, i)
                 : table_pos_push(&p->kpos, &p->nkpos, &p->kcap,
                                  i - t->nservices);
        if (rc < 0)
            log_error("healthz: out of memory");
    }
    for (p = nh->ports; p != NULL; p = p->next) {
        if (!p->mark)
            continue;
        p->local = count_local(t, p);
        port_listen(nh, p, addrs, naddrs);
    }
    table_unref(nh->table);
    nh->table = t != NULL ? table_ref((struct table *)t) : NULL;
    if (naddrs > 0)
        memcpy(nh->addrs, addrs, naddrs * sizeof(*addrs));
    nh->naddrs = naddrs;
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

void
nodehealth_counts(const struct nodehealth *nh, struct nodehealth_counts *out)
{
    *out = nh->counts;
}
