#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "admin.h"
#include "backend.h"
#include "balance.h"
#include "drain.h"
#include "explain.h"
#include "health.h"
#include "httpd.h"
#include "httpreq.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "sbuf.h"
#include "stats.h"
#include "svc.h"
#include "watchq.h"

#define ADMIN_CONNS_MAX 64
/* Backends (or a kernel Service's endpoints) /status lists per service;
 * the count says how many there are. A Service of 100,000 endpoints
 * would be some 50 MB of JSON, refreshed every 2 s by the page. */
#define STATUS_LIST_MAX 1000
#define ADMIN_REPLY_MAX (64u << 20) /* metrics of a very large table */
#define ADMIN_LOG_BURST 10.0 /* action lines logged at once */
#define ADMIN_LOG_RATE  1.0  /* then this many a second */

enum admin_token_state {
    ADMIN_TOKEN_OFF = 0, /* no admin.token_file */
    ADMIN_TOKEN_ON,      /* token in force */
};

/* An operator's override of one backend of one service. */
struct ovr {
    char svc[TBL_NAME_MAX];
    struct saddr addr;
    int drained;
    int32_t weight; /* -1: none */
};

struct admin {
    struct proxy *p;
    struct health *h;
    struct conf_admin conf;
    struct conf_metrics metrics;
    struct httpd *srv;
    struct httpd_listener *l; /* NULL: not listening */
    char addr_str[SADDR_STR_MAX];
    int table_ready;
    double started;
    struct admin_hooks hooks;
    struct ovr *ovr;
    size_t novr;
    enum admin_token_state token_state;
    char token[CONF_TOKEN_MAX];
    size_t token_len;
    uint64_t n_actions, n_refused, log_skipped;
    double log_tokens, log_last; /* action_log()'s bucket */
};

/* ---- overrides ---------------------------------------------------------- */

static struct ovr *
ovr_find(struct admin *a, const char *svc, const struct saddr *addr)
{
    size_t i;

    for (i = 0; i < a->novr; i++)
        if (strcmp(a->ovr[i].svc, svc) == 0
            && saddr_cmp(&a->ovr[i].addr, addr) == 0)
            return &a->ovr[i];
    return NULL;
}

/* Record an override; drained < 0 or weight < -1 leave that part as is.
 * An entry that overrides nothing is removed. Returns 0 or -1 (memory). */
static int
ovr_set(struct admin *a, const char *svc, const struct saddr *addr,
        int drained, int32_t weight)
{
    struct ovr *o = ovr_find(a, svc, addr);

    if (o == NULL) {
        struct ovr *n = realloc(a->ovr, (a->novr + 1) * sizeof(*n));
        if (n == NULL)
            return -1;
        a->ovr = n;
        o = &a->ovr[a->novr++];
        memset(o, 0, sizeof(*o));
        snprintf(o->svc, sizeof(o->svc), "%s", svc);
        o->addr = *addr;
        o->weight = -1;
    }
    if (drained >= 0)
        o->drained = drained;
    if (weight >= -1)
        o->weight = weight;
    if (!o->drained && o->weight < 0)
        *o = a->ovr[--a->novr];
    return 0;
}

/* Push the overrides into the runtime services in force. Returns 0, or
 * -1 when memory ran out for a service's first drained backend (that
 * backend is not drained; the next table tries again). */
static int
ovr_apply(struct admin *a)
{
    size_t i, j;
    int rc = 0;

    for (i = 0; i < proxy_nsvcs(a->p); i++) {
        struct svc *s = proxy_svc(a->p, i);
        int changed = 0;
        for (j = 0; j < svc_nbackends(s); j++) {
            const struct ovr *o =
                a->novr ? ovr_find(a, svc_name(s), svc_backend_saddr(s, j))
                        : NULL;
            if (svc_set_drained(s, j, o ? o->drained : 0) < 0)
                rc = -1;
            int c = svc_set_weight_override(s, j, o ? o->weight : -1);
            if (c < 0)
                rc = -1;
            else
                changed |= c;
        }
        if (changed)
            svc_reweighted(s);
    }
    return rc;
}

/* ---- state shown -------------------------------------------------------- */

/* Backend <i> of service <s>, as the admin API names it. */
struct be_ref {
    struct svc *s;
    size_t i;
};

static const char *
be_state(struct be_ref e, double now)
{
    const struct backend *b = svc_backend(e.s, e.i);

    if (svc_backend_drained(e.s, e.i))
        return "draining";
    if (!backend_healthy(b))
        return "down";
    if (backend_ejected(b, now))
        return "ejected";
    return "up";
}

/* Nonzero when ready; otherwise <why> says what is missing. */
static int
admin_ready(struct admin *a, double now, char *why, size_t whylen)
{
    double failing;

    if (proxy_draining(a->p)) {
        snprintf(why, whylen, "shutting down");
        return 0;
    }
    if (!a->table_ready) {
        snprintf(why, whylen, "no service table in force yet");
        return 0;
    }
    if (a->hooks.synced != NULL && !a->hooks.synced(a->hooks.arg)) {
        snprintf(why, whylen, "waiting for the first full sync from the "
                              "API server");
        return 0;
    }
    if (a->hooks.api_failing_for != NULL) {
        failing = a->hooks.api_failing_for(a->hooks.arg, now);
        if (failing > a->conf.api_grace_ms / 1e3) {
            snprintf(why, whylen, "API watch failing for %.0f s (serving the "
                                  "last table known)",
                     failing);
            return 0;
        }
    }
    why[0] = '\0';
    return 1;
}

static json_t *
fail_obj(const atomic_uint_fast64_t *v, size_t n)
{
    json_t *o = json_object();
    size_t r;

    for (r = 0; r < n; r++)
        json_object_set_new(o, stats_fail_text[r],
                            json_integer((json_int_t)stats_get(&v[r])));
    return o;
}

static json_t *
status_backend(struct admin *a, struct be_ref e, double now)
{
    const struct backend *b = svc_backend(e.s, e.i);
    const struct backend_ctr *k = backend_ctr_read(b);
    struct health_info hi;
    char ab[SADDR_STR_MAX];
    json_t *o, *h;

    health_info(a->h, b, &hi);
    h = json_object();
    json_object_set_new(h, "checked", json_boolean(hi.checked));
    json_object_set_new(h, "up", json_boolean(backend_healthy(b)));
    json_object_set_new(h, "last_failure", json_string(hi.cause));
    json_object_set_new(h, "last_check_age_seconds",
                        hi.last_check > 0 ? json_real(now - hi.last_check)
                                          : json_null());
    json_object_set_new(h, "went_down",
                        json_integer((json_int_t)stats_get(&k->n_went_down)));
    json_object_set_new(h, "went_up",
                        json_integer((json_int_t)stats_get(&k->n_went_up)));
    o = json_object();
    json_object_set_new(o, "name", json_string(svc_backend_name(e.s, e.i)));
    json_object_set_new(o, "address", json_string(backend_addr(b, ab)));
    json_object_set_new(o, "state", json_string(be_state(e, now)));
    json_object_set_new(o, "weight",
                        json_integer(svc_backend_weight(e.s, e.i)));
    json_object_set_new(o, "config_weight",
                        json_integer(svc_backend_config_weight(e.s, e.i)));
    json_object_set_new(o, "drained",
                        json_boolean(svc_backend_drained(e.s, e.i)));
    json_object_set_new(o, "active", json_integer(atomic_load(&b->active)));
    json_object_set_new(o, "connections",
                        json_integer((json_int_t)stats_get(&k->n_connects)));
    json_object_set_new(o, "connect_failures",
                        fail_obj(k->n_fail, STATS_FAIL_CONNECT_COUNT));
    json_object_set_new(o, "consecutive_failures",
                        json_integer(backend_fails(b)));
    json_object_set_new(o, "ejected", json_boolean(backend_ejected(b, now)));
    json_object_set_new(o, "ejections",
                        json_integer((json_int_t)stats_get(&k->n_ejections)));
    json_object_set_new(o, "bytes_in",
                        json_integer((json_int_t)stats_get(&k->bytes_in)));
    json_object_set_new(o, "bytes_out",
                        json_integer((json_int_t)stats_get(&k->bytes_out)));
    json_object_set_new(o, "health", h);
    return o;
}

/* A UDP service's flows and datagrams (README: UDP services). */
static json_t *
status_udp(const struct svc_stats *gauges, const struct svc_ctr *st)
{
    json_t *o = json_object(), *d = json_object();
    size_t r;

    json_object_set_new(o, "flows_active",
                        json_integer(atomic_load(&gauges->udp_active)));
    json_object_set_new(o, "flows",
                        json_integer((json_int_t)stats_get(&st->udp_flows)));
    json_object_set_new(
        o, "datagrams_in",
        json_integer((json_int_t)stats_get(&st->udp_dgrams_in)));
    json_object_set_new(
        o, "datagrams_out",
        json_integer((json_int_t)stats_get(&st->udp_dgrams_out)));
    for (r = 0; r < STATS_UDP__COUNT; r++)
        json_object_set_new(
            d, stats_udp_text[r],
            json_integer((json_int_t)stats_get(&st->udp_drops[r])));
    json_object_set_new(o, "dropped", d);
    return o;
}

static json_t *
status_service(struct admin *a, size_t i, double now)
{
    struct svc *s = proxy_svc(a->p, i);
    const struct tbl_service *ts = table_service(proxy_table(a->p), i);
    const struct svc_stats *gauges = svc_counters(s);
    const struct svc_ctr *st = svc_counts(s);
    json_t *o = json_object(), *fe = json_array(), *be = json_array();
    json_t *cnt = json_object(), *hc;
    char buf[SADDR_STR_MAX];
    size_t j;

    for (j = 0; j < ts->nfrontends; j++)
        json_array_append_new(
            fe, json_string(saddr_str(&ts->frontends[j], buf, sizeof(buf))));
    for (j = 0; j < svc_nbackends(s) && j < STATUS_LIST_MAX; j++)
        json_array_append_new(be, status_backend(a, (struct be_ref){s, j},
                                                 now));
    json_object_set_new(cnt, "accepted",
                        json_integer((json_int_t)stats_get(&st->accepted)));
    json_object_set_new(cnt, "active",
                        json_integer(atomic_load(&gauges->active)));
    json_object_set_new(cnt, "retries",
                        json_integer((json_int_t)stats_get(&st->retries)));
    json_object_set_new(cnt, "bytes_in",
                        json_integer((json_int_t)stats_get(&st->bytes_in)));
    json_object_set_new(cnt, "bytes_out",
                        json_integer((json_int_t)stats_get(&st->bytes_out)));
    json_object_set_new(cnt, "failed", fail_obj(st->fail, STATS_FAIL__COUNT));
    if (ts->proto == TBL_PROTO_UDP)
        json_object_set_new(cnt, "udp", status_udp(gauges, st));
    hc = json_object();
    json_object_set_new(hc, "type",
                        json_string(tbl_check_type_name(ts->check.type)));
    if (ts->check.type != TBL_CHECK_NONE) {
        json_object_set_new(hc, "interval_ms",
                            json_integer(ts->check.interval_ms));
        json_object_set_new(hc, "rise", json_integer(ts->check.rise));
        json_object_set_new(hc, "fall", json_integer(ts->check.fall));
        if (ts->check.type == TBL_CHECK_HTTP)
            json_object_set_new(hc, "path", json_string(ts->check.path != NULL ? ts->check.path : ""));
    }
    json_object_set_new(o, "name", json_string(svc_name(s)));
    json_object_set_new(o, "dataplane", json_string("proxy"));
    json_object_set_new(o, "protocol", json_string(tbl_proto_names[ts->proto]));
    json_object_set_new(o, "balance", json_string(svc_balance_name(s)));
    json_object_set_new(o, "frontends", fe);
    if (ts->nsni > 0) {
        json_t *sni = json_array();
        for (j = 0; j < ts->nsni; j++)
            json_array_append_new(sni, json_string(ts->sni[j].name));
        json_object_set_new(o, "sni", sni);
        json_object_set_new(
            cnt, "sni_routed",
            json_pack("{s:I, s:I}", "name",
                      (json_int_t)stats_get(&st->sni_routed[0]), "default",
                      (json_int_t)stats_get(&st->sni_routed[1])));
    }
    json_object_set_new(o, "health_check", hc);
    json_object_set_new(o, "counters", cnt);
    json_object_set_new(o, "backends", be);
    json_object_set_new(o, "backends_total",
                        json_integer((json_int_t)svc_nbackends(s)));
    return o;
}

static void
add_ips(json_t *arr, const struct saddr *v, size_t n)
{
    char buf[SADDR_STR_MAX];
    size_t i;

    for (i = 0; i < n; i++)
        json_array_append_new(arr,
                              json_string(saddr_ip_str(&v[i], buf, sizeof(buf))));
}

/* One endpoint of a kernel service: its health from the checkers. */
static json_t *
status_kernel_ep(struct admin *a, const struct tbl_backend *be, int local)
{
    char buf[SADDR_STR_MAX];
    struct backend *b = backend_get(&be->addr);
    struct health_info hi;
    const char *state = "not checked";

    if (b != NULL && health_info(a->h, b, &hi) == 0)
        state = hi.up ? "up" : "down";
    backend_unref(b);
    return json_pack("{s:s, s:s, s:b, s:b, s:s}", "name", be->name, "address",
                     saddr_str(&be->addr, buf, sizeof(buf)), "ready",
                     (be->flags & TBL_BE_READY) != 0, "local", local, "health",
                     state);
}

/* The Services the kernel carries (node mode, nftables): what each is
 * reached on and the endpoints it may send to. */
static json_t *
status_kernel(struct admin *a)
{
    const struct table *t = proxy_table(a->p);
    json_t *v = json_array();
    size_t i, j;

    for (i = 0; t != NULL && t->kernel != NULL && i < t->kernel->nksvcs; i++) {
        const struct tbl_ksvc *k = table_ksvc(t->kernel, i);
        json_t *o = json_object(), *ips = json_array(), *eps = json_array();

        add_ips(ips, k->cluster_ips, k->ncluster_ips);
        add_ips(ips, k->external_ips, k->nexternal_ips);
        add_ips(ips, k->lb_ips, k->nlb_ips);
        for (j = 0; j < k->ncluster_eps + k->nlocal_eps && j < STATUS_LIST_MAX;
             j++)
            json_array_append_new(
                eps, j < k->ncluster_eps
                         ? status_kernel_ep(a, &k->cluster_eps[j], 0)
                         : status_kernel_ep(
                               a, &k->local_eps[j - k->ncluster_eps], 1));
        json_object_set_new(o, "name", json_string(k->name));
        json_object_set_new(o, "protocol",
                            json_string(tbl_proto_names[k->proto]));
        /* A proxied Service's addresses are redirected to the proxy, which
         * lists it among "services". */
        json_object_set_new(o, "dataplane",
                            json_string(k->redirect ? "proxy" : "nftables"));
        json_object_set_new(o, "port", json_integer(k->port));
        json_object_set_new(o, "node_port", json_integer(k->node_port));
        json_object_set_new(o, "addresses", ips);
        json_object_set_new(o, "external_traffic_policy",
                            json_string(k->external_local ? "Local"
                                                          : "Cluster"));
        json_object_set_new(o, "session_affinity_seconds",
                            json_integer(k->affinity_s));
        json_object_set_new(o, "health_check",
                            json_string(tbl_check_type_name(k->check.type)));
        json_object_set_new(o, "endpoints", eps);
        json_object_set_new(
            o, "endpoints_total",
            json_integer((json_int_t)(k->ncluster_eps + k->nlocal_eps)));
        json_array_append_new(v, o);
    }
    return v;
}

static json_t *
status_workers(struct proxy *p)
{
    json_t *v = json_array();
    unsigned k;

    for (k = 0; k < proxy_nworkers(p); k++) {
        struct worker *w = proxy_worker(p, k);
        json_array_append_new(
            v, json_pack("{s:I, s:I, s:I, s:I}", "id", (json_int_t)k,
                         "connections_open", (json_int_t)worker_nconns(w),
                         "accepted",
                         (json_int_t)worker_naccepted(w),
                         "generation",
                         (json_int_t)worker_generation(w)));
    }
    return v;
}

static char *
status_json(struct admin *a, double now)
{
    json_t *root = json_object(), *svcs = json_array();
    char why[160];
    char *txt;
    size_t i;
    int ready = admin_ready(a, now, why, sizeof(why));

    for (i = 0; i < proxy_nsvcs(a->p); i++)
        json_array_append_new(svcs, status_service(a, i, now));
    json_object_set_new(root, "ready", json_boolean(ready));
    json_object_set_new(root, "not_ready_reason", json_string(why));
    json_object_set_new(root, "generation",
                        json_integer(proxy_table(a->p)
                                         ? (json_int_t)proxy_table(a->p)->generation
                                         : 0));
    json_object_set_new(root, "uptime_seconds", json_real(now - a->started));
    json_object_set_new(root, "connections_open",
                        json_integer((json_int_t)proxy_nconns(a->p)));
    json_object_set_new(root, "workers", status_workers(a->p));
    json_object_set_new(root, "backend_objects", json_integer(backend_count()));
    json_object_set_new(root, "services", svcs);
    json_object_set_new(root, "kernel_services", status_kernel(a));
    txt = json_dumps(root, JSON_INDENT(1) | JSON_ENSURE_ASCII);
    json_decref(root);
    return txt;
}

/* Per worker: how the kernel spread the connections (SO_REUSEPORT). */
static void
write_worker_metrics(struct sbuf *m, struct proxy *p)
{
    unsigned k;

    sbuf_printf(m, "# HELP ferry_workers Data-plane worker threads "
                   "(relay.workers).\n# TYPE ferry_workers gauge\n"
                   "ferry_workers %u\n",
                proxy_nworkers(p));
    sbuf_printf(m, "# HELP ferry_worker_connections Open proxied "
                   "connections, by worker.\n"
                   "# TYPE ferry_worker_connections gauge\n");
    for (k = 0; k < proxy_nworkers(p); k++)
        sbuf_printf(m, "ferry_worker_connections{worker=\"%u\"} %zu\n", k,
                    worker_nconns(proxy_worker(p, k)));
    sbuf_printf(m, "# HELP ferry_worker_accepted_total Connections "
                   "accepted, by worker.\n"
                   "# TYPE ferry_worker_accepted_total counter\n");
    for (k = 0; k < proxy_nworkers(p); k++)
        sbuf_printf(m, "ferry_worker_accepted_total{worker=\"%u\"} %llu\n", k,
                    (unsigned long long)worker_naccepted(proxy_worker(p, k)));
}

/* ---- replies ------------------------------------------------------------ */

/* Find backend <which> (name or address) of service <svc>. Returns 0 with
 * <out> set, or -1. */
static int
find_be(struct admin *a, const char *svc, const char *which,
        struct be_ref *out)
{
    char ab[SADDR_STR_MAX];
    size_t i, j;

    for (i = 0; i < proxy_nsvcs(a->p); i++) {
        struct svc *s = proxy_svc(a->p, i);
        if (strcmp(svc_name(s), svc) != 0)
            continue;
        for (j = 0; j < svc_nbackends(s); j++)
            if (strcmp(svc_backend_name(s, j), which) == 0
                || strcmp(backend_addr(svc_backend(s, j), ab), which) == 0) {
                out->s = s;
                out->i = j;
                return 0;
            }
    }
    return -1;
}

static void
control_reply(struct sbuf *out, const char *svc, struct be_ref e, double now)
{
    json_t *o = json_object();
    char ab[SADDR_STR_MAX];
    char *txt;

    json_object_set_new(o, "service", json_string(svc));
    json_object_set_new(o, "backend", json_string(svc_backend_name(e.s, e.i)));
    json_object_set_new(o, "address",
                        json_string(backend_addr(svc_backend(e.s, e.i), ab)));
    json_object_set_new(o, "state", json_string(be_state(e, now)));
    json_object_set_new(o, "drained",
                        json_boolean(svc_backend_drained(e.s, e.i)));
    json_object_set_new(o, "weight",
                        json_integer(svc_backend_weight(e.s, e.i)));
    json_object_set_new(o, "config_weight",
                        json_integer(svc_backend_config_weight(e.s, e.i)));
    txt = json_dumps(o, JSON_ENSURE_ASCII);
    json_decref(o);
    if (txt == NULL) {
        httpd_reply_text(out, 500, "out of memory\n", 0);
        return;
    }
    httpd_reply(out, 200, "application/json", "", txt, strlen(txt), 0);
    free(txt);
}

/* ---- who may control ---------------------------------------------------- */

/*
 * Reads (probes, metrics, status, the page) are open to whoever reaches the
 * port: the listener's address is the access control. Control requests
 * change what the data plane does, so they must also come from a client
 * that chose to talk to this server, not from a web page that a browser on
 * the admin host happens to show:
 *
 *   - no Origin other than the admin's own (a browser adds Origin to a
 *     cross-site POST);
 *   - a Host naming the admin address (a DNS-rebinding page reaches us
 *     under its own host name);
 *   - the header X-Ferry-Control: 1, which no cross-site page can add
 *     without a CORS preflight that we never grant;
 *   - with admin.token_file, Authorization: Bearer <token>.
 */

/* <ip> (port ignored) is a loopback address. */
static int
is_loopback(const struct saddr *ip)
{
    if (ip->u.sa.sa_family == AF_INET)
        return (ntohl(ip->u.in.sin_addr.s_addr) >> 24) == 127;
    return ip->u.sa.sa_family == AF_INET6
           && IN6_IS_ADDR_LOOPBACK(&ip->u.in6.sin6_addr);
}

static int
is_wildcard(const struct saddr *ip)
{
    if (ip->u.sa.sa_family == AF_INET)
        return ip->u.in.sin_addr.s_addr == htonl(INADDR_ANY);
    return ip->u.sa.sa_family == AF_INET6
           && IN6_IS_ADDR_UNSPECIFIED(&ip->u.in6.sin6_addr);
}

/* Nonzero when <host> (<len> bytes, a Host value or what follows "http://"
 * in an Origin) names the admin listener: its IP literal (any of ours
 * when it listens on a wildcard address) or "localhost" when it listens
 * on loopback or a wildcard, with its port (none means 80, as browsers
 * write it). Names other than localhost are refused: a page can make any
 * other name resolve to us (DNS rebinding). */
static int
admin_host_ok(const struct admin *a, const char *host, size_t len)
{
    const struct saddr *l = &a->conf.listen;
    char buf[80], *ip = buf, *port = NULL, *rb;
    struct saddr h;
    uint64_t pn = 80;
    const char *why;

    if (len == 0 || len >= sizeof(buf))
        return 0;
    memcpy(buf, host, len);
    buf[len] = '\0';
    if (buf[0] == '[') { /* [v6] or [v6]:port */
        rb = strchr(buf, ']');
        if (rb == NULL || (rb[1] != '\0' && rb[1] != ':'))
            return 0;
        *rb = '\0';
        ip = buf + 1;
        if (rb[1] == ':')
            port = rb + 2;
        if (strchr(ip, ':') == NULL)
            return 0;
    } else if ((port = strchr(buf, ':')) != NULL) {
        *port++ = '\0';
        if (strchr(port, ':') != NULL)
            return 0; /* a bare IPv6 address */
    }
    if (port != NULL && parse_uint(port, 1, 65535, &pn, &why) < 0)
        return 0;
    if (pn != saddr_port(l))
        return 0;
    if (strcasecmp(ip, "localhost") == 0)
        return is_loopback(l) || is_wildcard(l);
    if (parse_ip(ip, (uint16_t)pn, &h, &why) < 0
        || h.u.sa.sa_family != l->u.sa.sa_family)
        return 0;
    return is_wildcard(l) || saddr_cmp(&h, l) == 0;
}

/* Compare in time that depends on the token's length only. */
static int
token_equal(const char *got, size_t got_len, const char *tok, size_t tok_len)
{
    volatile unsigned char d = got_len != tok_len;
    size_t i;

    for (i = 0; i < tok_len; i++)
        d |= (unsigned char)((i < got_len ? got[i] : 0) ^ tok[i]);
    return d == 0;
}

/* The bearer token of <r> matches ours. */
static int
admin_token_ok(const struct admin *a, const struct httpreq *r)
{
    const char *v;
    size_t n;

    if (httpreq_header(r, "authorization", &v, &n) != 1 || n < 7
        || strncasecmp(v, "Bearer ", 7) != 0)
        return 0;
    v += 7, n -= 7;
    while (n > 0 && *v == ' ')
        v++, n--;
    return token_equal(v, n, a->token, a->token_len);
}

/* Refuse control request <r> unless it passes the rules above. Returns 0
 * when allowed; otherwise the reply is in <out>. */
static int
control_refused(struct admin *a, const struct httpreq *r, double now,
                struct sbuf *out)
{
    const char *v, *why = NULL;
    size_t n;
    unsigned k;
    int status = 403;

    k = httpreq_header(r, "origin", &v, &n);
    if (k > 1 || (k == 1 && (n < 7 || strncasecmp(v, "http://", 7) != 0
                             || !admin_host_ok(a, v + 7, n - 7))))
        why = "control requests from another origin are refused";
    else if (httpreq_header(r, "host", &v, &n) != 1 || !admin_host_ok(a, v, n))
        why = "control requests need a Host header naming the admin "
              "address";
    else if (httpreq_header(r, "x-ferry-control", &v, &n) != 1 || n != 1
             || v[0] != '1')
        why = "control requests need the header X-Ferry-Control: 1";
    else if (a->token_state == ADMIN_TOKEN_ON && !admin_token_ok(a, r))
        why = "control requests need Authorization: Bearer <token>",
        status = 401;
    if (why == NULL)
        return 0;
    a->n_refused++;
    log_rl(LOG_WARN, now, "admin: refused a control request: %s", why);
    if (status == 401) {
        char body[128];
        snprintf(body, sizeof(body), "%s\n", why);
        httpd_reply(out, 401, "text/plain; charset=utf-8",
                    "WWW-Authenticate: Bearer realm=\"ferry\"\r\n", body,
                    strlen(body), 0);
    } else {
        char body[128];
        snprintf(body, sizeof(body), "%s\n", why);
        httpd_reply_text(out, status, body, 0);
    }
    return 1;
}

/* Query parameters the action at the end of <path> takes: only weight
 * has one. Anything else, or a repeat, is refused: "value=5&value=300"
 * must not mean whichever of the two the parser meets first. */
static int
control_query_ok(const struct httpreq *r)
{
    static const char *const weight_keys[] = {"value"};
    size_t n = strlen(r->path);

    if (n >= 7 && strcmp(r->path + n - 7, "/weight") == 0)
        return httpreq_query_only(r, weight_keys, 1);
    return httpreq_query_only(r, NULL, 0);
}

/* Log one admin action, at most ADMIN_LOG_BURST lines at once and one a
 * second after that (a storm of control requests must not flood the log);
 * every action is counted all the same (ferry_admin_actions_total). */
static void __attribute__((format(printf, 3, 4)))
action_log(struct admin *a, double now, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    a->n_actions++;
    a->log_tokens += (now - a->log_last) * ADMIN_LOG_RATE;
    if (a->log_tokens > ADMIN_LOG_BURST)
        a->log_tokens = ADMIN_LOG_BURST;
    a->log_last = now;
    if (a->log_tokens < 1.0) {
        a->log_skipped++;
        return;
    }
    a->log_tokens -= 1.0;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (a->log_skipped > 0)
        log_info("admin: %llu action(s) not logged (rate limit); %llu in "
                 "all so far",
                 (unsigned long long)a->log_skipped,
                 (unsigned long long)a->n_actions);
    a->log_skipped = 0;
    log_info("%s", line);
}

/* Take the token the config loader read from admin.token_file (a file
 * that cannot be read fails the load, so a reload never leaves the admin
 * server without the token it was given). */
static void
admin_load_token(struct admin *a, const struct conf_admin *c)
{
    if (c->token_len == 0) {
        if (a->token_state != ADMIN_TOKEN_OFF)
            log_info("admin: control requests no longer need a token");
        a->token_state = ADMIN_TOKEN_OFF;
        a->token_len = 0;
        return;
    }
    if (a->token_state != ADMIN_TOKEN_ON)
        log_info("admin: control requests need the bearer token of %s",
                 c->token_file);
    memcpy(a->token, c->token, c->token_len);
    a->token_len = c->token_len;
    a->token_state = ADMIN_TOKEN_ON;
}

static void
write_admin_metrics(struct sbuf *m, const struct admin *a)
{
    sbuf_printf(m, "# HELP ferry_admin_actions_total Control requests that "
                   "changed a backend (drain, enable, weight, reset).\n"
                   "# TYPE ferry_admin_actions_total counter\n"
                   "ferry_admin_actions_total %llu\n",
                (unsigned long long)a->n_actions);
    sbuf_printf(m, "# HELP ferry_admin_control_refused_total Control "
                   "requests refused (origin, host, header, token).\n"
                   "# TYPE ferry_admin_control_refused_total counter\n"
                   "ferry_admin_control_refused_total %llu\n",
                (unsigned long long)a->n_refused);
}

/* POST /backends/SERVICE/BACKEND/ACTION. <rest> follows "/backends/". */
static void
control(struct admin *a, const struct httpreq *r, const char *rest,
        double now, struct sbuf *out)
{
    char svc[TBL_NAME_MAX], which[TBL_NAME_MAX], val[16], ab[SADDR_STR_MAX];
    const char *s1 = NULL, *s2 = strrchr(rest, '/'), *p;
    struct be_ref e;
    const struct backend *b;
    const char *bname;
    int drained = -1, rc;
    int32_t weight = -2;
    uint64_t w;
    const char *why;

    /* Split from the right: Kubernetes service names hold slashes
     * ("default/web:http"); backend names and actions never do. */
    for (p = s2; p != NULL && p > rest && s1 == NULL; p--)
        if (p[-1] == '/')
            s1 = p - 1;
    if (s1 == NULL || s2 == s1 || (size_t)(s1 - rest) >= sizeof(svc)
        || (size_t)(s2 - s1 - 1) >= sizeof(which) || s1 == rest
        || s2 == s1 + 1) {
        httpd_reply_text(out, 404, "not found\n", 0);
        return;
    }
    memcpy(svc, rest, (size_t)(s1 - rest));
    svc[s1 - rest] = '\0';
    memcpy(which, s1 + 1, (size_t)(s2 - s1 - 1));
    which[s2 - s1 - 1] = '\0';
    if (strcmp(s2 + 1, "drain") == 0)
        drained = 1;
    else if (strcmp(s2 + 1, "enable") == 0)
        drained = 0;
    else if (strcmp(s2 + 1, "reset") == 0)
        drained = 0, weight = -1;
    else if (strcmp(s2 + 1, "weight") == 0) {
        if (httpreq_query(r, "value", val, sizeof(val)) < 0
            || parse_uint(val, 0, TBL_WEIGHT_MAX, &w, &why) < 0) {
            httpd_reply_text(out, 400,
                             "weight needs ?value=N with N in 0..256\n", 0);
            return;
        }
        weight = (int32_t)w;
    } else {
        httpd_reply_text(out, 404, "not found\n", 0);
        return;
    }
    if (r->method != HTTPREQ_POST) {
        httpd_reply(out, 405, "text/plain; charset=utf-8", "Allow: POST\r\n",
                    "use POST\n", 9, r->method == HTTPREQ_HEAD);
        return;
    }
    if (find_be(a, svc, which, &e) < 0) {
        httpd_reply_text(out, 404, "no such service or backend\n", 0);
        return;
    }
    b = svc_backend(e.s, e.i);
    bname = svc_backend_name(e.s, e.i);
    rc = ovr_set(a, svc, svc_backend_saddr(e.s, e.i), drained, weight);
    if (rc < 0 || ovr_apply(a) < 0) {
        drain_refresh();
        httpd_reply_text(out, 500, "out of memory\n", 0);
        return;
    }
    drain_refresh();
    if (drained == 1)
        action_log(a, now,
                   "admin: backend %s (%s) of service %s drained: no new "
                   "connections, %u open continue",
                   bname, backend_addr(b, ab), svc, atomic_load(&b->active));
    else if (weight == -1)
        action_log(a, now,
                   "admin: backend %s (%s) of service %s reset to its "
                   "configuration (weight %u)",
                   bname, backend_addr(b, ab), svc,
                   svc_backend_config_weight(e.s, e.i));
    else if (drained == 0)
        action_log(a, now, "admin: backend %s (%s) of service %s enabled",
                   bname, backend_addr(b, ab), svc);
    else
        action_log(a, now,
                   "admin: backend %s (%s) of service %s weight set to %d",
                   bname, backend_addr(b, ab), svc, weight);
    control_reply(out, svc, e, now);
}

/* Reply with <o> (taken) as JSON. */
static void
reply_json(struct sbuf *out, json_t *o, int head)
{
    char *txt = o != NULL ? json_dumps(o, JSON_INDENT(1)) : NULL;

    json_decref(o);
    if (txt == NULL)
        httpd_reply_text(out, 500, "out of memory\n", head);
    else
        httpd_reply(out, 200, "application/json", "", txt, strlen(txt), head);
    free(txt);
}

/* GET /explain?addr=IP:PORT[&proto=tcp|udp][&from=IP] (README: ferry
 * explain): 400 with the reason for a bad question. */
static void
explain_page(struct admin *a, const struct httpreq *r, double now, int head,
             struct sbuf *out)
{
    static const char *const keys[] = {"addr", "proto", "from"};
    char addr[HTTPREQ_PATH_MAX], proto[16], from[HTTPREQ_PATH_MAX];
    char why[160], msg[200];
    struct explain_req q;
    int has_proto, has_from;

    if (!httpreq_query_only(r, keys, 3)) {
        httpd_reply_text(out, 400, "unknown or repeated query parameter\n",
                         head);
        return;
    }
    if (httpreq_query(r, "addr", addr, sizeof(addr)) < 0)
        addr[0] = '\0';
    has_proto = httpreq_query(r, "proto", proto, sizeof(proto)) == 0;
    has_from = httpreq_query(r, "from", from, sizeof(from)) == 0;
    if (explain_parse(addr, has_proto ? proto : NULL, has_from ? from : NULL,
                      &q, why, sizeof(why))
        < 0) {
        snprintf(msg, sizeof(msg), "bad question: %s\n", why);
        httpd_reply_text(out, 400, msg, head);
        return;
    }
    reply_json(out, explain_json(a->p, a->h, &q, now), head);
}

/* GET /explain/trace?service=NAMESPACE/NAME (README: ferry explain). */
static void
trace_page(struct admin *a, const struct httpreq *r, int head, struct sbuf *out)
{
    static const char *const keys[] = {"service"};
    char svc[HTTPREQ_PATH_MAX], why[200], msg[240];
    struct explain_svc q;

    if (!httpreq_query_only(r, keys, 1)) {
        httpd_reply_text(out, 400, "unknown or repeated query parameter\n",
                         head);
        return;
    }
    if (httpreq_query(r, "service", svc, sizeof(svc)) < 0)
        svc[0] = '\0';
    if (explain_parse_service(svc, &q, why, sizeof(why)) < 0) {
        snprintf(msg, sizeof(msg), "bad question: %s\n", why);
        httpd_reply_text(out, 400, msg, head);
        return;
    }
    if (a->hooks.trace == NULL) {
        httpd_reply_text(out, 404,
                         "no Kubernetes API watch in this ferry: changes "
                         "are traced for API Services only\n",
                         head);
        return;
    }
    reply_json(out, a->hooks.trace(a->p, q.ns, q.name), head);
}

static void
watch_add_line(void *arg, const char *line, size_t len)
{
    json_t *v = json_loadb(line, len, 0, NULL);

    if (v != NULL)
        json_array_append_new(arg, v);
}

/* GET /explain/watch?addr=IP:PORT[&proto=tcp][&count=N][&seconds=T]
 * starts a watch of the service that owns the address; ?id=N reads what
 * it saw since (README: ferry explain --watch). */
static void
watch_page(struct admin *a, const struct httpreq *r, double now, int head,
           struct sbuf *out)
{
    static const char *const keys[] = {"id", "addr", "proto", "count",
                                       "seconds"};
    char v[5][HTTPREQ_PATH_MAX], why[200], msg[240];
    const char *p[5];
    struct explain_watch q;
    struct watchq_read rd;
    const struct table *t = proxy_table(a->p);
    json_t *recs;
    long i;
    size_t k;

    if (!httpreq_query_only(r, keys, 5)) {
        httpd_reply_text(out, 400, "unknown or repeated query parameter\n",
                         head);
        return;
    }
    for (k = 0; k < 5; k++)
        p[k] = httpreq_query(r, keys[k], v[k], sizeof(v[k])) == 0 ? v[k] : NULL;
    if (explain_parse_watch(p[0], p[1], p[2], p[3], p[4], WATCHQ_COUNT_MAX,
                            WATCHQ_SECONDS_MAX, &q, why, sizeof(why))
        < 0) {
        snprintf(msg, sizeof(msg), "bad question: %s\n", why);
        httpd_reply_text(out, 400, msg, head);
        return;
    }
    if (q.id == 0) {
        uint64_t id;
        if ((i = explain_find_service(t, &q.q)) < 0) {
            httpd_reply_text(out, 404, "no service owns this address\n", head);
            return;
        }
        id = watchq_start(table_service(t, i)->name, q.count, q.seconds, now);
        if (id == 0) {
            httpd_reply_text(out, 503, "too many watches at once\n", head);
            return;
        }
        reply_json(out,
                   json_pack("{s:I, s:s, s:i, s:f, s:I}", "id", (json_int_t)id,
                             "service", table_service(t, i)->name, "count",
                             (int)q.count, "seconds", q.seconds, "queued_total",
                             (json_int_t)watchq_queued()),
                   head);
        return;
    }
    if ((recs = json_array()) == NULL) {
        httpd_reply_text(out, 500, "out of memory\n", head);
        return;
    }
    if (watchq_read(q.id, now, watch_add_line, recs, &rd) < 0) {
        json_decref(recs);
        httpd_reply_text(out, 404,
                         "no such watch: it ended, or nobody read it for "
                         "10 s\n",
                         head);
        return;
    }
    reply_json(out,
               json_pack("{s:I, s:o, s:I, s:i, s:b, s:I}", "id",
                         (json_int_t)q.id, "records", recs, "dropped",
                         (json_int_t)rd.dropped, "ended", (int)rd.ended, "done",
                         rd.done, "queued_total", (json_int_t)watchq_queued()),
               head);
}

/* GET-only pages; returns 0 when <path> is not one. */
static int
get_page(struct admin *a, const struct httpreq *r, double now,
         struct sbuf *out)
{
    int head = r->method == HTTPREQ_HEAD;
    const char *p = r->path;
    char why[160];

    if (strcmp(p, "/healthz") != 0 && strcmp(p, "/readyz") != 0
        && strcmp(p, "/metrics") != 0 && strcmp(p, "/status") != 0
        && strcmp(p, "/") != 0 && strcmp(p, "/explain") != 0
        && strcmp(p, "/explain/trace") != 0 && strcmp(p, "/explain/watch") != 0)
        return 0;
    if (r->method != HTTPREQ_GET && !head) {
        httpd_reply(out, 405, "text/plain; charset=utf-8",
                    "Allow: GET, HEAD\r\n", "use GET\n", 8, 0);
        return 1;
    }
    if (strcmp(p, "/healthz") == 0) {
        httpd_reply_text(out, 200, "ok\n", head);
    } else if (strcmp(p, "/readyz") == 0) {
        char msg[200];
        int ok = admin_ready(a, now, why, sizeof(why));
        snprintf(msg, sizeof(msg), ok ? "ready\n" : "not ready: %s\n", why);
        httpd_reply_text(out, ok ? 200 : 503, msg, head);
    } else if (strcmp(p, "/metrics") == 0) {
        struct sbuf m;
        struct svc **flat = proxy_svcs_flat(a->p);
        sbuf_init(&m, ADMIN_REPLY_MAX - 4096);
        if (flat == NULL)
            m.overflow = 1;
        else
            metrics_write(&m, flat, proxy_nsvcs(a->p), a->h,
                          admin_ready(a, now, why, sizeof(why)), now,
                          a->metrics.per_backend);
        free(flat);
        write_worker_metrics(&m, a->p);
        write_admin_metrics(&m, a);
        if (m.overflow)
            httpd_reply_text(out, 500, "metrics too large\n", head);
        else
            httpd_reply(out, 200, "text/plain; version=0.0.4; charset=utf-8",
                        "", m.p ? m.p : "", m.len, head);
        sbuf_deinit(&m);
    } else if (strcmp(p, "/explain") == 0) {
        explain_page(a, r, now, head, out);
    } else if (strcmp(p, "/explain/trace") == 0) {
        trace_page(a, r, head, out);
    } else if (strcmp(p, "/explain/watch") == 0) {
        watch_page(a, r, now, head, out);
    } else if (strcmp(p, "/status") == 0) {
        char *txt = status_json(a, now);
        if (txt == NULL)
            httpd_reply_text(out, 500, "out of memory\n", head);
        else
            httpd_reply(out, 200, "application/json", "", txt, strlen(txt),
                        head);
        free(txt);
    } else {
        httpd_reply(out, 200, "text/html; charset=utf-8", "", admin_page_html,
                    admin_page_html_len, head);
    }
    return 1;
}

void
admin_respond(struct admin *a, const struct httpreq *r, double now,
              struct sbuf *out)
{
    if (get_page(a, r, now, out))
        return;
    if (strncmp(r->path, "/backends/", 10) == 0) {
        if (r->method == HTTPREQ_POST && control_refused(a, r, now, out))
            return;
        if (r->method == HTTPREQ_POST && !control_query_ok(r)) {
            httpd_reply_text(out, 400,
                             "unknown or repeated query parameter\n", 0);
            return;
        }
        control(a, r, r->path + 10, now, out);
        return;
    }
    /* Never echo the path: it is the client's text. */
    httpd_reply_text(out, 404, "not found\n", r->method == HTTPREQ_HEAD);
}

static void
admin_on_request(void *arg, unsigned tag, const struct httpreq *r, double now,
                 struct sbuf *out)
{
    (void)tag;
    admin_respond(arg, r, now, out);
}

/* ---- the server --------------------------------------------------------- */

struct admin *
admin_new(struct ev_loop *loop, struct proxy *p, struct health *h)
{
    struct admin *a = calloc(1, sizeof(*a));

    if (a == NULL)
        return NULL;
    a->srv = httpd_new(loop, "admin", ADMIN_REPLY_MAX, ADMIN_CONNS_MAX);
    if (a->srv == NULL) {
        free(a);
        return NULL;
    }
    a->p = p;
    a->h = h;
    a->started = ev_now(loop);
    a->conf.request_timeout_ms = 5000;
    httpd_set_timeout(a->srv, a->conf.request_timeout_ms / 1e3);
    httpd_set_on_pause(a->srv, stats_accept_paused);
    return a;
}

static void
admin_close_listener(struct admin *a)
{
    if (a->l == NULL)
        return;
    httpd_unlisten(a->srv, a->l);
    a->l = NULL;
    log_info("admin: stopped listening on %s", a->addr_str);
}

void
admin_free(struct admin *a)
{
    if (a == NULL)
        return;
    admin_close_listener(a);
    httpd_free(a->srv);
    free(a->ovr);
    free(a);
}

static int
admin_listen(struct admin *a, const struct saddr *addr, struct err *e)
{
    struct err le;

    err_clear(&le);
    a->l = httpd_listen(a->srv, addr, admin_on_request, a, 0, &le);
    if (a->l == NULL)
        return err_set(e, "admin: %s", le.msg);
    saddr_str(addr, a->addr_str, sizeof(a->addr_str));
    log_info("admin: listening on http://%s/", a->addr_str);
    return 0;
}

int
admin_configure(struct admin *a, const struct conf_admin *c, struct err *e)
{
    int same = a->l != NULL && c->enabled
               && saddr_cmp(&a->conf.listen, &c->listen) == 0;

    a->conf = *c;
    httpd_set_timeout(a->srv, c->request_timeout_ms / 1e3);
    if (c->enabled)
        admin_load_token(a, c);
    if (same)
        return 0;
    admin_close_listener(a);
    if (!c->enabled)
        return 0;
    return admin_listen(a, &c->listen, e);
}

void
admin_set_metrics(struct admin *a, const struct conf_metrics *m)
{
    a->metrics = *m;
}

void
admin_set_hooks(struct admin *a, const struct admin_hooks *hooks)
{
    a->hooks = *hooks;
}

void
admin_on_applied(struct admin *a)
{
    a->table_ready = 1;
    /* Without overrides there is nothing to push: a new runtime service
     * starts undrained at its table weights, and a kept one was reset
     * when the last override went. A Kubernetes node applies a table per
     * change, and this would touch every backend of the cluster. */
    if (a->novr > 0 && ovr_apply(a) < 0)
        log_warn("admin: out of memory: a backend the admin server drained "
                 "is not drained in the new table");
}
