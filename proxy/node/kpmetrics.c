#include <stdlib.h>
#include <string.h>

#include "httpd.h"
#include "httpreq.h"
#include "kpmetrics.h"
#include "log.h"
#include "sbuf.h"
#include "stats.h"

#define KPM_CONNS_MAX 32
#define KPM_TIMEOUT_S 5.0
#define KPM_REPLY_MAX (64u << 10) /* the exposition is about 8 KiB */

/* kube-proxy's bounds: the sync histogram doubles from 1 ms (15
 * buckets); network programming goes by quarter seconds to 0.5 s, by
 * seconds to 59 s, by 5 s to 115 s, then by 30 s to 5 minutes. */
#define KPM_SYNC_BUCKETS 15
#define KPM_PROG_BUCKETS (2 + 59 + 12 + 7)

struct kpm_hist {
    const double *le;
    size_t n;
    uint64_t count;
    double sum;
    uint64_t b[KPM_PROG_BUCKETS + 1]; /* per bucket, last = +Inf */
};

struct kpm {
    struct ev_loop *loop;
    kpm_state_fn state;
    void *arg;
    struct httpd *srv;
    struct httpd_listener *l;
    double le_sync[KPM_SYNC_BUCKETS];
    double le_prog[KPM_PROG_BUCKETS];
    struct kpm_hist sync, prog;
    double last_sync; /* Unix time of the last successful sync */
};

static void
hist_add(struct kpm_hist *h, double v)
{
    size_t i = 0;

    if (!(v >= 0)) /* also NaN */
        v = 0;
    while (i < h->n && v > h->le[i])
        i++;
    h->b[i]++;
    h->count++;
    h->sum += v;
}

void
kpm_sync(struct kpm *m, double duration_s, double wall_s)
{
    hist_add(&m->sync, duration_s);
    if (wall_s > 0)
        m->last_sync = wall_s;
}

void
kpm_programming(struct kpm *m, double latency_s)
{
    hist_add(&m->prog, latency_s);
}

/* ---- exposition --------------------------------------------------------- */

static void
head(struct sbuf *b, const char *name, const char *type, const char *help)
{
    sbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
one(struct sbuf *b, const char *name, const char *type, const char *help,
    double v)
{
    head(b, name, type, help);
    sbuf_printf(b, "%s %.17g\n", name, v);
}

/* Two series of <name> with label <label> = <v0>, <v1>. */
static void
two(struct sbuf *b, const char *name, const char *type, const char *help,
    const char *label, const char *v0, uint64_t n0, const char *v1, uint64_t n1)
{
    head(b, name, type, help);
    sbuf_printf(b, "%s{%s=\"%s\"} %llu\n%s{%s=\"%s\"} %llu\n", name, label, v0,
                (unsigned long long)n0, name, label, v1,
                (unsigned long long)n1);
}

static void
hist(struct sbuf *b, const char *name, const char *help,
     const struct kpm_hist *h)
{
    uint64_t cum = 0;
    size_t i;

    head(b, name, "histogram", help);
    for (i = 0; i < h->n; i++) {
        cum += h->b[i];
        sbuf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->le[i],
                    (unsigned long long)cum);
    }
    cum += h->b[h->n];
    sbuf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n",
                name, (unsigned long long)cum, name, h->sum, name,
                (unsigned long long)h->count);
}

void
kpm_render(const struct kpm *m, const struct kpm_state *st, struct sbuf *out)
{
    hist(out, "kubeproxy_sync_proxy_rules_duration_seconds",
         "Time from the start of a table's translation to the table in force "
         "(proxy and kernel).",
         &m->sync);
    one(out, "kubeproxy_sync_proxy_rules_last_timestamp_seconds", "gauge",
        "Unix time of the last sync that put a table in force.", m->last_sync);
    one(out, "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
        "gauge", "Unix time of the latest Service or EndpointSlice change.",
        st->last_queued);
    one(out, "kubeproxy_sync_proxy_rules_endpoint_changes_total", "counter",
        "EndpointSlice changes received from the API.",
        (double)st->endpoint_changes);
    one(out, "kubeproxy_sync_proxy_rules_endpoint_changes_pending", "gauge",
        "EndpointSlice changes received since the last sync started.",
        (double)st->endpoint_pending);
    one(out, "kubeproxy_sync_proxy_rules_service_changes_total", "counter",
        "Service changes received from the API.", (double)st->service_changes);
    one(out, "kubeproxy_sync_proxy_rules_service_changes_pending", "gauge",
        "Service changes received since the last sync started.",
        (double)st->service_pending);
    two(out, "kubeproxy_sync_proxy_rules_no_local_endpoints_total", "gauge",
        "Service ports with endpoints, a Local traffic policy and no "
        "endpoint on this node.",
        "traffic_policy", "internal", st->no_local_internal, "external",
        st->no_local_external);
    hist(out, "kubeproxy_network_programming_duration_seconds",
         "Time from an EndpointSlice's last-change-trigger-time to the change "
         "in force.",
         &m->prog);
    two(out, "kubeproxy_proxy_healthz_total", "counter",
        "Answers of /healthz by status.", "code", "200", st->healthz[0], "503",
        st->healthz[1]);
    two(out, "kubeproxy_proxy_livez_total", "counter",
        "Answers of /livez by status.", "code", "200", st->livez[0], "503",
        st->livez[1]);
}

static void
kpm_on_request(void *arg, unsigned tag, const struct httpreq *r, double now,
               struct sbuf *out)
{
    struct kpm *m = arg;
    int head_only = r->method == HTTPREQ_HEAD;
    struct kpm_state st;
    struct sbuf body;

    (void)tag;
    (void)now;
    if (strcmp(r->path, "/metrics") != 0) {
        httpd_reply_text(out, 404, "not found\n", head_only);
        return;
    }
    if (r->method != HTTPREQ_GET && !head_only) {
        httpd_reply(out, 405, "text/plain; charset=utf-8",
                    "Allow: GET, HEAD\r\n", "use GET\n", 8, 0);
        return;
    }
    memset(&st, 0, sizeof(st));
    m->state(m->arg, &st);
    sbuf_init(&body, KPM_REPLY_MAX - 512);
    kpm_render(m, &st, &body);
    if (body.overflow)
        httpd_reply_text(out, 500, "metrics too large\n", head_only);
    else
        httpd_reply(out, 200, "text/plain; version=0.0.4; charset=utf-8", "",
                    body.p ? body.p : "", body.len, head_only);
    sbuf_deinit(&body);
}

/* ---- life --------------------------------------------------------------- */

struct kpm *
kpm_new(struct ev_loop *loop, kpm_state_fn state, void *arg)
{
    struct kpm *m = calloc(1, sizeof(*m));
    size_t i, n = 0;

    if (m == NULL)
        return NULL;
    m->srv = httpd_new(loop, "metrics", KPM_REPLY_MAX, KPM_CONNS_MAX);
    if (m->srv == NULL) {
        free(m);
        return NULL;
    }
    httpd_set_timeout(m->srv, KPM_TIMEOUT_S);
    httpd_set_on_pause(m->srv, stats_accept_paused);
    m->loop = loop;
    m->state = state;
    m->arg = arg;
    for (i = 0; i < KPM_SYNC_BUCKETS; i++)
        m->le_sync[i] = 0.001 * (double)(1u << i);
    for (i = 0; i < 2; i++)
        m->le_prog[n++] = 0.25 * (double)(i + 1);
    for (i = 1; i <= 59; i++)
        m->le_prog[n++] = (double)i;
    for (i = 0; i < 12; i++)
        m->le_prog[n++] = 60.0 + 5.0 * (double)i;
    for (i = 0; i < 7; i++)
        m->le_prog[n++] = 120.0 + 30.0 * (double)i;
    m->sync.le = m->le_sync;
    m->sync.n = KPM_SYNC_BUCKETS;
    m->prog.le = m->le_prog;
    m->prog.n = n;
    return m;
}

void
kpm_free(struct kpm *m)
{
    if (m == NULL)
        return;
    httpd_free(m->srv);
    free(m);
}

int
kpm_listen(struct kpm *m, const struct saddr *addr, struct err *e)
{
    char s[SADDR_STR_MAX];

    httpd_unlisten(m->srv, m->l);
    m->l = httpd_listen(m->srv, addr, kpm_on_request, m, 0, e);
    if (m->l == NULL)
        return -1;
    log_info("metrics: kube-proxy's metrics on http://%s/metrics",
             saddr_str(addr, s, sizeof(s)));
    return 0;
}
