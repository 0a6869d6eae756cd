#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "backend.h"
#include "balance.h"
#include "health.h"
#include "httpd.h"
#include "httpreq.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "sbuf.h"
#include "svc.h"

#define ADMIN_CONNS_MAX   64
#define ADMIN_REPLY_MAX   (64u << 20) /* metrics of a very large table */

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
    struct httpd *srv;
    struct httpd_listener *l; /* NULL: not listening */
    char addr_str[SADDR_STR_MAX];
    int table_ready;
    double started;
    struct admin_hooks hooks;
    struct ovr *ovr;
    size_t novr;
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

/* Push the overrides into the runtime services in force. */
static void
ovr_apply(struct admin *a)
{
    size_t i, j;

    for (i = 0; i < a->p->nsvcs; i++) {
        struct svc *s = a->p->svcs[i];
        int changed = 0;
        for (j = 0; j < s->nbe; j++) {
            const struct ovr *o =
                a->novr ? ovr_find(a, s->name, &s->be[j].b->addr) : NULL;
            atomic_store(&s->be[j].drained, o ? (unsigned)o->drained : 0u);
            changed |= svc_set_weight_override(s, j, o ? o->weight : -1);
        }
        if (changed)
            svc_reweighted(s);
    }
}

/* ---- state shown -------------------------------------------------------- */

static const char *
be_state(const struct svc_be *e, double now)
{
    if (atomic_load_explicit(&e->drained, memory_order_relaxed))
        return "draining";
    if (!backend_healthy(e->b))
        return "down";
    if (backend_ejected(e->b, now))
        return "ejected";
    return "up";
}

/* Nonzero when ready; otherwise <why> says what is missing. */
static int
admin_ready(struct admin *a, double now, char *why, size_t whylen)
{
    double failing;

    if (a->p->draining) {
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
status_backend(struct admin *a, const struct svc_be *e, double now)
{
    const struct backend *b = e->b;
    struct health_info hi;
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
                        json_integer((json_int_t)stats_get(&b->n_went_down)));
    json_object_set_new(h, "went_up",
                        json_integer((json_int_t)stats_get(&b->n_went_up)));
    o = json_object();
    json_object_set_new(o, "name", json_string(e->name));
    json_object_set_new(o, "address", json_string(b->addr_str));
    json_object_set_new(o, "state", json_string(be_state(e, now)));
    json_object_set_new(o, "weight", json_integer(svc_be_weight(e)));
    json_object_set_new(o, "config_weight", json_integer(e->weight));
    json_object_set_new(o, "drained",
                        json_boolean(atomic_load(&e->drained) != 0));
    json_object_set_new(o, "active", json_integer(atomic_load(&b->active)));
    json_object_set_new(o, "connections",
                        json_integer((json_int_t)stats_get(&b->n_connects)));
    json_object_set_new(o, "connect_failures",
                        fail_obj(b->n_fail, STATS_FAIL_CONNECT_COUNT));
    json_object_set_new(o, "consecutive_failures",
                        json_integer(atomic_load(&b->fails)));
    json_object_set_new(o, "ejected", json_boolean(backend_ejected(b, now)));
    json_object_set_new(o, "ejections",
                        json_integer((json_int_t)stats_get(&b->n_ejections)));
    json_object_set_new(o, "bytes_in",
                        json_integer((json_int_t)stats_get(&b->bytes_in)));
    json_object_set_new(o, "bytes_out",
                        json_integer((json_int_t)stats_get(&b->bytes_out)));
    json_object_set_new(o, "health", h);
    return o;
}

static json_t *
status_service(struct admin *a, size_t i, double now)
{
    const struct svc *s = a->p->svcs[i];
    const struct tbl_service *ts = &a->p->table->services[i];
    json_t *o = json_object(), *fe = json_array(), *be = json_array();
    json_t *cnt = json_object(), *hc;
    char buf[SADDR_STR_MAX];
    size_t j;

    for (j = 0; j < ts->nfrontends; j++)
        json_array_append_new(
            fe, json_string(saddr_str(&ts->frontends[j], buf, sizeof(buf))));
    for (j = 0; j < s->nbe; j++)
        json_array_append_new(be, status_backend(a, &s->be[j], now));
    json_object_set_new(cnt, "accepted",
                        json_integer((json_int_t)stats_get(&s->st->accepted)));
    json_object_set_new(cnt, "active", json_integer(atomic_load(&s->st->active)));
    json_object_set_new(cnt, "retries",
                        json_integer((json_int_t)stats_get(&s->st->retries)));
    json_object_set_new(cnt, "bytes_in",
                        json_integer((json_int_t)stats_get(&s->st->bytes_in)));
    json_object_set_new(cnt, "bytes_out",
                        json_integer((json_int_t)stats_get(&s->st->bytes_out)));
    json_object_set_new(cnt, "failed", fail_obj(s->st->fail, STATS_FAIL__COUNT));
    hc = json_object();
    json_object_set_new(hc, "type",
                        json_string(s->spec.check.type == TBL_CHECK_HTTP ? "http"
                                    : s->spec.check.type == TBL_CHECK_TCP
                                        ? "tcp"
                                        : "none"));
    if (s->spec.check.type != TBL_CHECK_NONE) {
        json_object_set_new(hc, "interval_ms",
                            json_integer(s->spec.check.interval_ms));
        json_object_set_new(hc, "rise", json_integer(s->spec.check.rise));
        json_object_set_new(hc, "fall", json_integer(s->spec.check.fall));
        if (s->spec.check.type == TBL_CHECK_HTTP)
            json_object_set_new(hc, "path", json_string(s->spec.check.path));
    }
    json_object_set_new(o, "name", json_string(s->name));
    json_object_set_new(o, "balance", json_string(s->bal->name));
    json_object_set_new(o, "frontends", fe);
    json_object_set_new(o, "health_check", hc);
    json_object_set_new(o, "counters", cnt);
    json_object_set_new(o, "backends", be);
    return o;
}

static json_t *
status_workers(struct proxy *p)
{
    json_t *v = json_array();
    unsigned k;

    for (k = 0; k < p->nworkers; k++) {
        struct worker *w = proxy_worker(p, k);
        json_array_append_new(
            v, json_pack("{s:I, s:I, s:I, s:I}", "id", (json_int_t)k,
                         "connections_open", (json_int_t)worker_nconns(w),
                         "accepted",
                         (json_int_t)atomic_load_explicit(&w->n_accepted,
                                                          memory_order_relaxed),
                         "generation",
                         (json_int_t)atomic_load(&w->generation)));
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

    for (i = 0; i < a->p->nsvcs && a->p->table != NULL; i++)
        json_array_append_new(svcs, status_service(a, i, now));
    json_object_set_new(root, "ready", json_boolean(ready));
    json_object_set_new(root, "not_ready_reason", json_string(why));
    json_object_set_new(root, "generation",
                        json_integer(a->p->table ? (json_int_t)a->p->table->generation
                                                 : 0));
    json_object_set_new(root, "uptime_seconds", json_real(now - a->started));
    json_object_set_new(root, "connections_open",
                        json_integer((json_int_t)proxy_nconns(a->p)));
    json_object_set_new(root, "workers", status_workers(a->p));
    json_object_set_new(root, "backend_objects", json_integer(backend_count()));
    json_object_set_new(root, "services", svcs);
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
                p->nworkers);
    sbuf_printf(m, "# HELP ferry_worker_connections Open proxied "
                   "connections, by worker.\n"
                   "# TYPE ferry_worker_connections gauge\n");
    for (k = 0; k < p->nworkers; k++)
        sbuf_printf(m, "ferry_worker_connections{worker=\"%u\"} %zu\n", k,
                    worker_nconns(proxy_worker(p, k)));
    sbuf_printf(m, "# HELP ferry_worker_accepted_total Connections "
                   "accepted, by worker.\n"
                   "# TYPE ferry_worker_accepted_total counter\n");
    for (k = 0; k < p->nworkers; k++)
        sbuf_printf(m, "ferry_worker_accepted_total{worker=\"%u\"} %llu\n", k,
                    (unsigned long long)atomic_load_explicit(
                        &proxy_worker(p, k)->n_accepted, memory_order_relaxed));
}

/* ---- replies ------------------------------------------------------------ */

/* Find backend <which> (name or address) of service <svc>. */
static struct svc_be *
find_be(struct admin *a, const char *svc, const char *which)
{
    size_t i, j;

    for (i = 0; i < a->p->nsvcs; i++) {
        struct svc *s = a->p->svcs[i];
        if (strcmp(s->name, svc) != 0)
            continue;
        for (j = 0; j < s->nbe; j++)
            if (strcmp(s->be[j].name, which) == 0
                || strcmp(s->be[j].b->addr_str, which) == 0)
                return &s->be[j];
    }
    return NULL;
}

static void
control_reply(struct sbuf *out, const char *svc, const struct svc_be *e,
              double now)
{
    json_t *o = json_object();
    char *txt;

    json_object_set_new(o, "service", json_string(svc));
    json_object_set_new(o, "backend", json_string(e->name));
    json_object_set_new(o, "address", json_string(e->b->addr_str));
    json_object_set_new(o, "state", json_string(be_state(e, now)));
    json_object_set_new(o, "drained", json_boolean(atomic_load(&e->drained)));
    json_object_set_new(o, "weight", json_integer(svc_be_weight(e)));
    json_object_set_new(o, "config_weight", json_integer(e->weight));
    txt = json_dumps(o, JSON_ENSURE_ASCII);
    json_decref(o);
    if (txt == NULL) {
        httpd_reply_text(out, 500, "out of memory\n", 0);
        return;
    }
    httpd_reply(out, 200, "application/json", "", txt, strlen(txt), 0);
    free(txt);
}

/* POST /backends/SERVICE/BACKEND/ACTION. <rest> follows "/backends/". */
static void
control(struct admin *a, const struct httpreq *r, const char *rest,
        double now, struct sbuf *out)
{
    char svc[TBL_NAME_MAX], which[TBL_NAME_MAX], val[16];
    const char *s1 = NULL, *s2 = strrchr(rest, '/'), *p;
    struct svc_be *e;
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
    e = find_be(a, svc, which);
    if (e == NULL) {
        httpd_reply_text(out, 404, "no such service or backend\n", 0);
        return;
    }
    rc = ovr_set(a, svc, &e->b->addr, drained, weight);
    if (rc < 0) {
        httpd_reply_text(out, 500, "out of memory\n", 0);
        return;
    }
    ovr_apply(a);
    if (drained == 1)
        log_info("admin: backend %s (%s) of service %s drained: no new "
                 "connections, %u open continue",
                 e->name, e->b->addr_str, svc, atomic_load(&e->b->active));
    else if (weight == -1)
        log_info("admin: backend %s (%s) of service %s reset to its "
                 "configuration (weight %u)",
                 e->name, e->b->addr_str, svc, e->weight);
    else if (drained == 0)
        log_info("admin: backend %s (%s) of service %s enabled", e->name,
                 e->b->addr_str, svc);
    else
        log_info("admin: backend %s (%s) of service %s weight set to %d",
                 e->name, e->b->addr_str, svc, weight);
    control_reply(out, svc, e, now);
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
        && strcmp(p, "/") != 0)
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
        sbuf_init(&m, ADMIN_REPLY_MAX - 4096);
        metrics_write(&m, a->p->svcs, a->p->nsvcs, a->h,
                      admin_ready(a, now, why, sizeof(why)), now);
        write_worker_metrics(&m, a->p);
        if (m.overflow)
            httpd_reply_text(out, 500, "metrics too large\n", head);
        else
            httpd_reply(out, 200, "text/plain; version=0.0.4; charset=utf-8",
                        "", m.p ? m.p : "", m.len, head);
        sbuf_deinit(&m);
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
    if (same)
        return 0;
    admin_close_listener(a);
    if (!c->enabled)
        return 0;
    return admin_listen(a, &c->listen, e);
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
    ovr_apply(a);
}
