#include <dirent.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "backend.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "sbuf.h"
#include "svc.h"

/* ---- formatting --------------------------------------------------------- */

void
metrics_label_value(struct sbuf *b, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            sbuf_add(b, "\\\\", 2);
        else if (*s == '"')
            sbuf_add(b, "\\\"", 2);
        else if (*s == '\n')
            sbuf_add(b, "\\n", 2);
        else
            sbuf_add(b, s, 1);
    }
}

static void
family(struct sbuf *b, const char *name, const char *type, const char *help)
{
    sbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A bound as Prometheus prints it ("0.005", "1", "2.5"). */
static void
le_str(double v, char *out, size_t outlen)
{
    snprintf(out, outlen, "%.6g", v);
}

void
metrics_write_hist(struct sbuf *b, const char *name, const char *labels,
                   const struct hist *h, const struct hist_spec *sp)
{
    const char *sep = labels[0] ? "," : "";
    uint64_t cum = 0;
    char le[32];
    size_t i;

    for (i = 0; i < sp->n; i++) {
        cum += stats_get(&h->bucket[i]);
        le_str(sp->le[i], le, sizeof(le));
        sbuf_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, sep,
                    le, (unsigned long long)cum);
    }
    cum += stats_get(&h->bucket[sp->n]);
    sbuf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                (unsigned long long)cum);
    sbuf_printf(b, "%s_sum{%s} %.6f\n", name, labels,
                (double)stats_get(&h->sum_us) / 1e6);
    sbuf_printf(b, "%s_count{%s} %llu\n", name, labels,
                (unsigned long long)cum);
}

/* 'service="web"' into <out> (a small sbuf). */
static void
svc_labels(struct sbuf *out, const struct svc *s)
{
    out->len = 0;
    sbuf_puts(out, "service=\"");
    metrics_label_value(out, svc_name(s));
    sbuf_puts(out, "\"");
}

static void
be_labels(struct sbuf *out, const struct svc *s, size_t i)
{
    svc_labels(out, s);
    sbuf_puts(out, ",backend=\"");
    metrics_label_value(out, svc_backend_name(s, i));
    sbuf_puts(out, "\",address=\"");
    metrics_label_value(out, svc_backend(s, i)->addr_str);
    sbuf_puts(out, "\"");
}

/* ---- process-wide ------------------------------------------------------- */

static long
count_fds(void)
{
    struct dirent *d;
    long n = 0;
    DIR *dir = opendir("/proc/self/fd");

    if (dir == NULL)
        return -1;
    while ((d = readdir(dir)) != NULL)
        if (d->d_name[0] != '.')
            n++;
    closedir(dir);
    return n - 1; /* the directory's own descriptor */
}

static void
write_process(struct sbuf *b, int ready)
{
    struct rlimit rl;
    long fds = count_fds();

    family(b, "ferry_ready", "gauge",
           "1 when /readyz answers ready, else 0.");
    sbuf_printf(b, "ferry_ready %d\n", ready ? 1 : 0);
    family(b, "ferry_table_generation", "gauge",
           "Generation of the service table in force.");
    sbuf_printf(b, "ferry_table_generation %llu\n",
                (unsigned long long)stats_get(&stats_proc.generation));
    family(b, "ferry_sync_proxy_rules_last_timestamp_seconds", "gauge",
           "Unix time of the last successful sync of the table from the "
           "API (kube-proxy's kubeproxy_sync_proxy_rules_last_timestamp_"
           "seconds); 0 before the first.");
    sbuf_printf(b, "ferry_sync_proxy_rules_last_timestamp_seconds %.3f\n",
                atomic_load_explicit(&stats_proc.last_sync, memory_order_relaxed));
    family(b, "ferry_sync_proxy_rules_duration_seconds", "histogram",
           "Time to turn API changes into a table in force (kube-proxy's "
           "kubeproxy_sync_proxy_rules_duration_seconds).");
    metrics_write_hist(b, "ferry_sync_proxy_rules_duration_seconds", "",
                       &stats_proc.sync, &hist_sync);
    family(b, "ferry_network_programming_duration_seconds", "histogram",
           "From an API object's change to ferry serving it (kube-proxy's "
           "kubeproxy_network_programming_duration_seconds).");
    metrics_write_hist(b, "ferry_network_programming_duration_seconds", "",
                       &stats_proc.programming, &hist_programming);
    family(b, "ferry_worker_table_delay_seconds", "histogram",
           "From worker 0 applying a table to a worker thread serving it "
           "(relay.workers > 1); add it to the two above for the time to "
           "every worker.");
    metrics_write_hist(b, "ferry_worker_table_delay_seconds", "",
                       &stats_proc.worker_delay, &hist_connect);
    family(b, "ferry_api_watch_restarts_total", "counter",
           "API watch streams started again after they ended or failed.");
    sbuf_printf(b, "ferry_api_watch_restarts_total %llu\n",
                (unsigned long long)stats_get(&stats_proc.watch_restarts));
    family(b, "ferry_api_relists_total", "counter",
           "Full relists of API resources (after 410 Gone or a failure).");
    sbuf_printf(b, "ferry_api_relists_total %llu\n",
                (unsigned long long)stats_get(&stats_proc.relists));
    family(b, "ferry_accept_paused_total", "counter",
           "Times accepting was paused because descriptors ran out "
           "(EMFILE/ENFILE).");
    sbuf_printf(b, "ferry_accept_paused_total %llu\n",
                (unsigned long long)stats_get(&stats_proc.accept_paused));
    family(b, "ferry_relay_pipes", "gauge",
           "Pipes open for splice() relaying (in use or pooled; two "
           "descriptors each).");
    sbuf_printf(b, "ferry_relay_pipes %lld\n",
                (long long)atomic_load_explicit(&stats_proc.pipes,
                                                memory_order_relaxed));
    family(b, "ferry_relay_pipes_denied_total", "counter",
           "Times a connection wanted a splice() pipe but the descriptor "
           "budget or limit refused it (its bytes were copied instead).");
    sbuf_printf(b, "ferry_relay_pipes_denied_total %llu\n",
                (unsigned long long)stats_get(&stats_proc.pipes_denied));
    family(b, "ferry_node_addresses", "gauge",
           "Service addresses ferry holds on the node's interface "
           "(Kubernetes mode, node.vip_interface).");
    sbuf_printf(b, "ferry_node_addresses %llu\n",
                (unsigned long long)stats_get(&stats_proc.vip_owned));
    family(b, "ferry_node_address_changes_total", "counter",
           "Service addresses added to or removed from the interface.");
    sbuf_printf(b, "ferry_node_address_changes_total{op=\"add\"} %llu\n",
                (unsigned long long)stats_get(&stats_proc.vip_added));
    sbuf_printf(b, "ferry_node_address_changes_total{op=\"remove\"} %llu\n",
                (unsigned long long)stats_get(&stats_proc.vip_removed));
    family(b, "ferry_node_address_errors_total", "counter",
           "Netlink requests for service addresses that failed or went "
           "unanswered.");
    sbuf_printf(b, "ferry_node_address_errors_total %llu\n",
                (unsigned long long)stats_get(&stats_proc.vip_errors));
    family(b, "ferry_node_address_resyncs_total", "counter",
           "Full dumps of the interface's addresses (start, errors, "
           "lost notifications).");
    sbuf_printf(b, "ferry_node_address_resyncs_total %llu\n",
                (unsigned long long)stats_get(&stats_proc.vip_resyncs));
    family(b, "ferry_log_lines_dropped_total", "counter",
           "Log lines dropped because stderr would have blocked.");
    sbuf_printf(b, "ferry_log_lines_dropped_total %llu\n",
                (unsigned long long)log_dropped());
    if (fds >= 0) {
        family(b, "process_open_fds", "gauge",
               "Number of open file descriptors.");
        sbuf_printf(b, "process_open_fds %ld\n", fds);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        family(b, "process_max_fds", "gauge",
               "Maximum number of open file descriptors.");
        sbuf_printf(b, "process_max_fds %llu\n",
                    (unsigned long long)rl.rlim_cur);
    }
}

/* API objects and fields the Kubernetes side did not serve, by kind and
 * reason; only the pairs seen so far (none in static mode). */
static void
write_api_skipped(struct sbuf *b)
{
    struct stats_api_skip sk[STATS_API_SKIP_MAX];
    size_t i, n = stats_api_skips(sk, STATS_API_SKIP_MAX);

    if (n == 0)
        return;
    family(b, "ferry_api_objects_skipped_total", "counter",
           "API objects or fields not served (malformed, out of range, "
           "unsupported, taken by another service, or ignored as by "
           "kube-proxy), by kind and reason.");
    for (i = 0; i < n; i++) {
        sbuf_printf(b, "ferry_api_objects_skipped_total{kind=\"");
        metrics_label_value(b, sk[i].kind);
        sbuf_printf(b, "\",reason=\"");
        metrics_label_value(b, sk[i].reason);
        sbuf_printf(b, "\"} %llu\n", (unsigned long long)sk[i].total);
    }
}

/* ---- per service -------------------------------------------------------- */

static void
write_services(struct sbuf *b, struct svc *const *svcs, size_t n,
               struct sbuf *lb)
{
    size_t i, r;

    family(b, "ferry_service_connections_accepted_total", "counter",
           "Client connections accepted.");
    for (i = 0; i < n; i++) {
        svc_labels(lb, svcs[i]);
        sbuf_printf(b, "ferry_service_connections_accepted_total{%s} %llu\n",
                    lb->p, (unsigned long long)stats_get(&svc_counters(svcs[i])->accepted));
    }
    family(b, "ferry_service_connections_active", "gauge",
           "Client connections open now.");
    for (i = 0; i < n; i++) {
        svc_labels(lb, svcs[i]);
        sbuf_printf(b, "ferry_service_connections_active{%s} %u\n", lb->p,
                    atomic_load_explicit(&svc_counters(svcs[i])->active,
                                         memory_order_relaxed));
    }
    family(b, "ferry_service_connections_failed_total", "counter",
           "Failures by reason: connect attempts refused, timed out or in "
           "error; clients reset for lack of a backend, for the connection "
           "limit, or for lack of resources.");
    for (i = 0; i < n; i++) {
        svc_labels(lb, svcs[i]);
        for (r = 0; r < STATS_FAIL__COUNT; r++)
            sbuf_printf(b,
                        "ferry_service_connections_failed_total{%s,reason=\"%s\"}"
                        " %llu\n",
                        lb->p, stats_fail_text[r],
                        (unsigned long long)stats_get(&svc_counters(svcs[i])->fail[r]));
    }
    family(b, "ferry_service_connect_retries_total", "counter",
           "Connect attempts beyond the first, on another backend.");
    for (i = 0; i < n; i++) {
        svc_labels(lb, svcs[i]);
        sbuf_printf(b, "ferry_service_connect_retries_total{%s} %llu\n", lb->p,
                    (unsigned long long)stats_get(&svc_counters(svcs[i])->retries));
    }
    family(b, "ferry_service_bytes_total", "counter",
           "Bytes relayed: direction=\"in\" from clients to backends, "
           "\"out\" from backends to clients.");
    for (i = 0; i < n; i++) {
        svc_labels(lb, svcs[i]);
        sbuf_printf(b, "ferry_service_bytes_total{%s,direction=\"in\"} %llu\n",
                    lb->p, (unsigned long long)stats_get(&svc_counters(svcs[i])->bytes_in));
        sbuf_printf(b, "ferry_service_bytes_total{%s,direction=\"out\"} %llu\n",
                    lb->p,
                    (unsigned long long)stats_get(&svc_counters(svcs[i])->bytes_out));
    }
    family(b, "ferry_service_connect_duration_seconds", "histogram",
           "Time from the start of a connect attempt to its success.");
    for (i = 0; i < n; i++) {
        svc_labels(lb, svcs[i]);
        metrics_write_hist(b, "ferry_service_connect_duration_seconds", lb->p,
                           &svc_counters(svcs[i])->connect, &hist_connect);
    }
}

/* ---- per backend -------------------------------------------------------- */

enum be_metric {
    BM_CONNECTS,
    BM_ACTIVE,
    BM_EJECTIONS,
    BM_CONSEC,
    BM_WEIGHT,
    BM_DRAINED,
    BM_HEALTH_UP,
    BM_HEALTH_CHECKED,
    BM_EJECTED,
    BM__COUNT
};

static const struct {
    const char *name, *type, *help;
} be_metrics[BM__COUNT] = {
    [BM_CONNECTS] = {"ferry_backend_connections_total", "counter",
                     "Successful connects to the backend."},
    [BM_ACTIVE] = {"ferry_backend_connections_active", "gauge",
                   "Connections open to (or connecting to) the backend."},
    [BM_EJECTIONS] = {"ferry_backend_ejections_total", "counter",
                      "Times passive health put the backend in back-off."},
    [BM_CONSEC] = {"ferry_backend_consecutive_failures", "gauge",
                   "Connect failures since the last success."},
    [BM_WEIGHT] = {"ferry_backend_weight", "gauge",
                   "Weight in force (the admin override, else the table's)."},
    [BM_DRAINED] = {"ferry_backend_drained", "gauge",
                    "1 when drained through the admin API."},
    [BM_HEALTH_UP] = {"ferry_backend_health_up", "gauge",
                      "0 when active checks hold the backend down, else 1."},
    [BM_HEALTH_CHECKED] = {"ferry_backend_health_checked", "gauge",
                           "1 when active checks run for the backend."},
    [BM_EJECTED] = {"ferry_backend_ejected", "gauge",
                    "1 while in passive-health back-off."},
};

static double
be_value(enum be_metric m, const struct svc *s, size_t i, double now)
{
    const struct backend *bk = svc_backend(s, i);

    switch (m) {
    case BM_CONNECTS:
        return (double)stats_get(&bk->n_connects);
    case BM_ACTIVE:
        return atomic_load_explicit(&bk->active, memory_order_relaxed);
    case BM_EJECTIONS:
        return (double)stats_get(&bk->n_ejections);
    case BM_CONSEC:
        return atomic_load_explicit(&bk->fails, memory_order_relaxed);
    case BM_WEIGHT:
        return svc_backend_weight(s, i);
    case BM_DRAINED:
        return svc_backend_drained(s, i);
    case BM_HEALTH_UP:
        return backend_healthy(bk);
    case BM_HEALTH_CHECKED:
        return atomic_load_explicit(&bk->health, memory_order_relaxed)
               != BACKEND_HEALTH_UNCHECKED;
    case BM_EJECTED:
        return backend_ejected(bk, now);
    default:
        return 0;
    }
}

static void
write_backends(struct sbuf *b, struct svc *const *svcs, size_t n,
               struct sbuf *lb, double now)
{
    size_t i, j, r;
    int m;

    for (m = 0; m < BM__COUNT; m++) {
        family(b, be_metrics[m].name, be_metrics[m].type, be_metrics[m].help);
        for (i = 0; i < n; i++)
            for (j = 0; j < svc_nbackends(svcs[i]); j++) {
                be_labels(lb, svcs[i], j);
                sbuf_printf(b, "%s{%s} %.17g\n", be_metrics[m].name, lb->p,
                            be_value((enum be_metric)m, svcs[i], j, now));
            }
    }
    family(b, "ferry_backend_connect_failures_total", "counter",
           "Failed connects to the backend, by reason.");
    for (i = 0; i < n; i++)
        for (j = 0; j < svc_nbackends(svcs[i]); j++) {
            be_labels(lb, svcs[i], j);
            for (r = 0; r < STATS_FAIL_CONNECT_COUNT; r++)
                sbuf_printf(b, "ferry_backend_connect_failures_total{%s,"
                               "reason=\"%s\"} %llu\n",
                            lb->p, stats_fail_text[r],
                            (unsigned long long)stats_get(
                                &svc_backend(svcs[i], j)->n_fail[r]));
        }
    family(b, "ferry_backend_health_transitions_total", "counter",
           "Active-check state changes, by the state entered.");
    for (i = 0; i < n; i++)
        for (j = 0; j < svc_nbackends(svcs[i]); j++) {
            const struct backend *bk = svc_backend(svcs[i], j);
            be_labels(lb, svcs[i], j);
            sbuf_printf(b, "ferry_backend_health_transitions_total{%s,"
                           "to=\"down\"} %llu\n",
                        lb->p, (unsigned long long)stats_get(&bk->n_went_down));
            sbuf_printf(b, "ferry_backend_health_transitions_total{%s,"
                           "to=\"up\"} %llu\n",
                        lb->p, (unsigned long long)stats_get(&bk->n_went_up));
        }
    family(b, "ferry_backend_bytes_total", "counter",
           "Bytes relayed: direction=\"in\" to the backend, \"out\" from it.");
    for (i = 0; i < n; i++)
        for (j = 0; j < svc_nbackends(svcs[i]); j++) {
            const struct backend *bk = svc_backend(svcs[i], j);
            be_labels(lb, svcs[i], j);
            sbuf_printf(b, "ferry_backend_bytes_total{%s,direction=\"in\"} "
                           "%llu\n",
                        lb->p, (unsigned long long)stats_get(&bk->bytes_in));
            sbuf_printf(b, "ferry_backend_bytes_total{%s,direction=\"out\"} "
                           "%llu\n",
                        lb->p, (unsigned long long)stats_get(&bk->bytes_out));
        }
    family(b, "ferry_backend_connect_duration_seconds", "histogram",
           "Time from the start of a connect attempt to its success.");
    for (i = 0; i < n; i++)
        for (j = 0; j < svc_nbackends(svcs[i]); j++) {
            be_labels(lb, svcs[i], j);
            metrics_write_hist(b, "ferry_backend_connect_duration_seconds",
                               lb->p, &svc_backend(svcs[i], j)->connect_hist,
                               &hist_connect);
        }
}

void
metrics_write(struct sbuf *b, struct svc *const *svcs, size_t n,
              const struct health *h, int ready, double now)
{
    struct sbuf lb;

    (void)h;
    sbuf_init(&lb, 4096);
    write_process(b, ready);
    write_api_skipped(b);
    write_services(b, svcs, n, &lb);
    write_backends(b, svcs, n, &lb, now);
    sbuf_deinit(&lb);
}
