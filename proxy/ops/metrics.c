#include <dirent.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "accesslog.h"
#include "backend.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "sbuf.h"
#include "sniroute.h"
#include "svc.h"
#include "util.h"

/* ---- formatting --------------------------------------------------------- */

/* The exposition of a large table is millions of short lines: every
 * sample below is appended piece by piece (no printf), label sets are
 * built once per scrape, and bucket bounds once per histogram kind. */

void
metrics_label_value(struct sbuf *b, const char *s)
{
    const char *run = s;

    for (; *s != '\0'; s++) {
        const char *esc = *s == '\\'  ? "\\\\"
                          : *s == '"' ? "\\\""
                          : *s == '\n' ? "\\n"
                                       : NULL;
        if (esc == NULL)
            continue;
        sbuf_add(b, run, (size_t)(s - run));
        sbuf_add(b, esc, 2);
        run = s + 1;
    }
    sbuf_add(b, run, (size_t)(s - run));
}

static void
put_u64(struct sbuf *b, uint64_t v)
{
    char t[20];
    size_t i = sizeof(t);

    do {
        t[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    sbuf_add(b, t + i, sizeof(t) - i);
}

/* A label set (already escaped, without braces), borrowed. */
struct lab {
    const char *p;
    size_t n;
};

/* name{<l>[,<extra>]} <v> */
static void
sample(struct sbuf *b, const char *name, struct lab l, const char *extra,
       uint64_t v)
{
    sbuf_puts(b, name);
    sbuf_add(b, "{", 1);
    sbuf_add(b, l.p, l.n);
    if (extra != NULL) {
        if (l.n != 0)
            sbuf_add(b, ",", 1);
        sbuf_puts(b, extra);
    }
    sbuf_add(b, "} ", 2);
    put_u64(b, v);
    sbuf_add(b, "\n", 1);
}

static void
family(struct sbuf *b, const char *name, const char *type, const char *help)
{
    sbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A histogram kind's bounds as Prometheus prints them ("0.005", "1"),
 * each as the label 'le="..."'. */
struct le_text {
    char le[HIST_BUCKETS_MAX][40];
};

static void
le_text_init(struct le_text *t, const struct hist_spec *sp)
{
    size_t i;

    for (i = 0; i < sp->n; i++)
        snprintf(t->le[i], sizeof(t->le[i]), "le=\"%.6g\"", sp->le[i]);
}

static void
write_hist(struct sbuf *b, const char *name, struct lab l,
           const struct hist *h, const struct hist_spec *sp,
           const struct le_text *t)
{
    char nb[128];
    uint64_t cum = 0, sum;
    size_t i;

    snprintf(nb, sizeof(nb), "%s_bucket", name);
    for (i = 0; i < sp->n; i++) {
        cum += stats_get(&h->bucket[i]);
        sample(b, nb, l, t->le[i], cum);
    }
    cum += stats_get(&h->bucket[sp->n]);
    sample(b, nb, l, "le=\"+Inf\"", cum);
    /* The sum in seconds with six decimals, from whole microseconds. */
    sum = stats_get(&h->sum_us);
    sbuf_puts(b, name);
    sbuf_add(b, "_sum{", 5);
    sbuf_add(b, l.p, l.n);
    sbuf_add(b, "} ", 2);
    put_u64(b, sum / 1000000);
    snprintf(nb, sizeof(nb), ".%06llu\n",
             (unsigned long long)(sum % 1000000));
    sbuf_puts(b, nb);
    snprintf(nb, sizeof(nb), "%s_count", name);
    sample(b, nb, l, NULL, cum);
}

void
metrics_write_hist(struct sbuf *b, const char *name, const char *labels,
                   const struct hist *h, const struct hist_spec *sp)
{
    struct lab l = {labels, strlen(labels)};
    struct le_text t;

    le_text_init(&t, sp);
    write_hist(b, name, l, h, sp, &t);
}

/* Every label set of one scrape, built once: 'service="web"' for each
 * service, then 'service="web",backend="b0",address="..."' for each
 * backend of the services that get per-backend series. */
struct labels {
    struct sbuf text;
    size_t *off;     /* start of set k in text; off[k + 1] ends it */
    size_t *be_base; /* per service: index of its first backend set, or
                      * SIZE_MAX when it gets no per-backend series */
    size_t nbe;      /* backend sets in all */
};

static struct lab
lab_get(const struct labels *ls, size_t k)
{
    struct lab l = {ls->text.p + ls->off[k], ls->off[k + 1] - ls->off[k]};
    return l;
}

static int
want_backends(const struct svc *s, enum conf_per_backend pb)
{
    if (pb == CONF_PER_BACKEND_TRUE)
        return 1;
    if (pb == CONF_PER_BACKEND_FALSE)
        return 0;
    return svc_spec(s)->origin == TBL_ORIGIN_FILE;
}

static void
svc_label(struct sbuf *out, const struct svc *s)
{
    sbuf_add(out, "service=\"", 9);
    metrics_label_value(out, svc_name(s));
    sbuf_add(out, "\"", 1);
}

/* Returns 0, or -1 when out of memory or over <max> bytes of labels (the
 * reply could not hold them either). */
static int
labels_build(struct labels *ls, struct svc *const *svcs, size_t n,
             enum conf_per_backend pb, size_t max)
{
    size_t i, j, k = 0, nsets = n;

    memset(ls, 0, sizeof(*ls));
    ls->be_base = calloc(n ? n : 1, sizeof(*ls->be_base));
    if (ls->be_base == NULL)
        return -1;
    for (i = 0; i < n; i++) {
        ls->be_base[i] = SIZE_MAX;
        if (want_backends(svcs[i], pb)) {
            ls->be_base[i] = n + ls->nbe;
            ls->nbe += svc_nbackends(svcs[i]);
        }
    }
    nsets += ls->nbe;
    ls->off = calloc(nsets + 1, sizeof(*ls->off));
    if (ls->off == NULL)
        return -1;
    sbuf_init(&ls->text, max);
    for (i = 0; i < n; i++) {
        ls->off[k++] = ls->text.len;
        svc_label(&ls->text, svcs[i]);
    }
    for (i = 0; i < n; i++) {
        if (ls->be_base[i] == SIZE_MAX)
            continue;
        for (j = 0; j < svc_nbackends(svcs[i]); j++) {
            char ab[SADDR_STR_MAX];
            ls->off[k++] = ls->text.len;
            svc_label(&ls->text, svcs[i]);
            sbuf_add(&ls->text, ",backend=\"", 10);
            metrics_label_value(&ls->text, svc_backend_name(svcs[i], j));
            sbuf_add(&ls->text, "\",address=\"", 11);
            metrics_label_value(&ls->text,
                                backend_addr(svc_backend(svcs[i], j), ab));
            sbuf_add(&ls->text, "\"", 1);
        }
    }
    ls->off[k] = ls->text.len;
    return ls->text.overflow ? -1 : 0;
}

static void
labels_free(struct labels *ls)
{
    sbuf_deinit(&ls->text);
    free(ls->off);
    free(ls->be_base);
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

/* Process-wide values that are one unlabelled number each. */
static const struct {
    const char *name, *type, *help;
    const atomic_uint_fast64_t *v;
} proc_counters[] = {
    {"ferry_api_watch_restarts_total", "counter",
     "API watch streams started again after they ended or failed.",
     &stats_proc.watch_restarts},
    {"ferry_api_relists_total", "counter",
     "Full relists of API resources (after 410 Gone or a failure).",
     &stats_proc.relists},
    {"ferry_api_services_translated_total", "counter",
     "Services translated into the service table; a change translates "
     "only the Services it touched.",
     &stats_proc.translated},
    {"ferry_api_tables_patched_total", "counter",
     "Service tables made by putting the Services a change touched into "
     "the table in force, instead of building every Service's entries "
     "again.",
     &stats_proc.patched},
    {"ferry_accept_paused_total", "counter",
     "Times accepting was paused because descriptors ran out "
     "(EMFILE/ENFILE).",
     &stats_proc.accept_paused},
    {"ferry_relay_pipes_denied_total", "counter",
     "Times a connection wanted a splice() pipe but the descriptor budget "
     "or limit refused it (its bytes were copied instead).",
     &stats_proc.pipes_denied},
    {"ferry_relay_io_uring_connections_total", "counter",
     "Connections whose bytes an io_uring ring relayed (relay.engine "
     "io_uring).",
     &stats_proc.ring_conns},
    {"ferry_relay_io_uring_to_splice_total", "counter",
     "Connections that left the io_uring ring for epoll and splice() "
     "once a direction moved bulk data (relay.splice auto).",
     &stats_proc.ring_left},
    {"ferry_relay_io_uring_buffer_waits_total", "counter",
     "Receives on an io_uring ring that found every buffer taken and "
     "waited for one (the bytes wait in the socket meanwhile).",
     &stats_proc.ring_waits},
    {"ferry_relay_io_uring_refused_total", "counter",
     "Workers that wanted an io_uring ring and were refused one by the "
     "kernel (they relay with epoll).",
     &stats_proc.ring_refused},
    {"ferry_node_addresses", "gauge",
     "Service addresses ferry holds on the node's interface (Kubernetes "
     "mode, node.vip_interface).",
     &stats_proc.vip_owned},
    {"ferry_node_address_errors_total", "counter",
     "Netlink requests for service addresses that failed or went "
     "unanswered.",
     &stats_proc.vip_errors},
    {"ferry_node_address_resyncs_total", "counter",
     "Full dumps of the interface's addresses (start, errors, lost "
     "notifications).",
     &stats_proc.vip_resyncs},
    {"ferry_nftables_services", "gauge",
     "Service ports and protocols ferry wants in table inet ferry (node "
     "mode, node.dataplane nftables).",
     &stats_proc.nft_services},
    {"ferry_nftables_transactions_total", "counter",
     "nftables transactions committed to table inet ferry.",
     &stats_proc.nft_transactions},
    {"ferry_nftables_transaction_failures_total", "counter",
     "nftables transactions the kernel or libnftables refused (each is "
     "retried whole).",
     &stats_proc.nft_failures},
    {"ferry_nftables_restores_total", "counter",
     "Times table inet ferry was found changed by someone else and "
     "restored.",
     &stats_proc.nft_restores},
    {"ferry_nftables_conntrack_deleted_total", "counter",
     "UDP conntrack entries deleted because their endpoint went away.",
     &stats_proc.nft_ct_deleted},
    {"ferry_redirect_unmatched_total", "counter",
     "Connections on the proxy path's redirect port that no Service "
     "owned (not redirected by the kernel, or its Service gone): reset.",
     &stats_proc.redirect_unmatched},
};

static void
write_proc_counters(struct sbuf *b)
{
    size_t i;

    for (i = 0; i < ARRAY_SIZE(proc_counters); i++) {
        family(b, proc_counters[i].name, proc_counters[i].type,
               proc_counters[i].help);
        sbuf_printf(b, "%s %llu\n", proc_counters[i].name,
                    (unsigned long long)stats_get(proc_counters[i].v));
    }
    family(b, "ferry_access_log_lines_total", "counter",
           "Access log lines written to the sink.");
    sbuf_printf(b, "ferry_access_log_lines_total %llu\n",
                (unsigned long long)accesslog_lines());
    family(b, "ferry_access_log_dropped_total", "counter",
           "Access log lines dropped: a worker's buffer was full (the sink "
           "too slow or blocked) or the sink failed.");
    sbuf_printf(b, "ferry_access_log_dropped_total %llu\n",
                (unsigned long long)accesslog_dropped());
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
    family(b, "ferry_control_cpu_seconds_total", "counter",
           "CPU time of ferry's API work, by part: \"api\" receiving, "
           "decoding and caching lists and watch events, \"tables\" "
           "building tables and putting them in force (the kernel's rules "
           "included) on the control loop, \"workers\" the workers "
           "taking each table's plan.");
    sbuf_printf(b,
                "ferry_control_cpu_seconds_total{part=\"api\"} %.6f\n"
                "ferry_control_cpu_seconds_total{part=\"tables\"} %.6f\n"
                "ferry_control_cpu_seconds_total{part=\"workers\"} %.6f\n",
                (double)stats_get(&stats_proc.api_cpu_ns) / 1e9,
                (double)stats_get(&stats_proc.table_cpu_ns) / 1e9,
                (double)stats_get(&stats_proc.apply_cpu_ns) / 1e9);
    family(b, "ferry_out_of_memory_total", "counter",
           "Work refused for want of memory and taken again, by part: "
           "\"api\" watch events (the watch starts again from the last "
           "resourceVersion) and list pages (the list is made again), "
           "\"tables\" table builds (tried again a second later), "
           "\"workers\" a worker's taking of a table (again half a "
           "second later).");
    sbuf_printf(b,
                "ferry_out_of_memory_total{part=\"api\"} %llu\n"
                "ferry_out_of_memory_total{part=\"tables\"} %llu\n"
                "ferry_out_of_memory_total{part=\"workers\"} %llu\n",
                (unsigned long long)stats_get(&stats_proc.nomem_api),
                (unsigned long long)stats_get(&stats_proc.nomem_tables),
                (unsigned long long)stats_get(&stats_proc.nomem_workers));
    family(b, "ferry_network_programming_duration_seconds", "histogram",
           "From an API object's change to ferry serving it (kube-proxy's "
           "kubeproxy_network_programming_duration_seconds).");
    metrics_write_hist(b, "ferry_network_programming_duration_seconds", "",
                       &stats_proc.programming, &hist_programming);
    family(b, "ferry_worker_table_delay_seconds", "histogram",
           "From the control thread posting a table to a worker serving "
           "it; add it to the two above for the time to every worker.");
    metrics_write_hist(b, "ferry_worker_table_delay_seconds", "",
                       &stats_proc.worker_delay, &hist_connect);
    write_proc_counters(b);
    family(b, "ferry_relay_pipes", "gauge",
           "Pipes open for splice() relaying (in use or pooled; two "
           "descriptors each).");
    sbuf_printf(b, "ferry_relay_pipes %lld\n",
                (long long)atomic_load_explicit(&stats_proc.pipes,
                                                memory_order_relaxed));
    family(b, "ferry_node_address_changes_total", "counter",
           "Service addresses added to or removed from the interface.");
    sbuf_printf(b, "ferry_node_address_changes_total{op=\"add\"} %llu\n",
                (unsigned long long)stats_get(&stats_proc.vip_added));
    sbuf_printf(b, "ferry_node_address_changes_total{op=\"remove\"} %llu\n",
                (unsigned long long)stats_get(&stats_proc.vip_removed));
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

/* PROXY protocol headers read and refused, for the services that expect
 * them (accept_proxy) only: the others would write zeros. */
static void
write_proxy_headers(struct sbuf *b, struct svc *const *svcs, size_t n,
                    const struct labels *ls)
{
    static const char *const versions[2] = {"version=\"v1\"",
                                            "version=\"v2\""};
    const struct svc_ctr *st;
    char reason[64];
    size_t i, r, any = 0;

    for (i = 0; i < n; i++)
        any += svc_spec(svcs[i])->accept_proxy != 0;
    if (any == 0)
        return;
    family(b, "ferry_service_proxy_headers_total", "counter",
           "PROXY protocol headers read from clients (accept_proxy), by "
           "version.");
    for (i = 0; i < n; i++) {
        if (!svc_spec(svcs[i])->accept_proxy)
            continue;
        st = svc_counts(svcs[i]);
        for (r = 0; r < 2; r++)
            sample(b, "ferry_service_proxy_headers_total", lab_get(ls, i),
                   versions[r], stats_get(&st->pp_accepted[r]));
    }
    family(b, "ferry_service_proxy_headers_refused_total", "counter",
           "Clients reset for their PROXY protocol header (accept_proxy): "
           "none whole within accept_proxy_timeout, an invalid one, or the "
           "client closed before its end.");
    for (i = 0; i < n && !b->overflow; i++) {
        if (!svc_spec(svcs[i])->accept_proxy)
            continue;
        st = svc_counts(svcs[i]);
        for (r = 0; r < STATS_PP__COUNT; r++) {
            snprintf(reason, sizeof(reason), "reason=\"%s\"",
                     stats_pp_text[r]);
            sample(b, "ferry_service_proxy_headers_refused_total",
                   lab_get(ls, i), reason, stats_get(&st->pp_refused[r]));
        }
    }
}

static int
has_source_rules(const struct tbl_service *sp)
{
    return sp->nallow > 0 || sp->ndeny > 0 || sp->max_conns_per_source > 0
           || sp->conn_rate_per_source > 0;
}

static int
has_source_limits(const struct tbl_service *sp)
{
    return sp->max_conns_per_source > 0 || sp->conn_rate_per_source > 0;
}

/* Clients refused by source rules, for the services that have some; and
 * those let in uncounted (per-source table full), for those with a
 * per-source limit. */
static void
write_source_rules(struct sbuf *b, struct svc *const *svcs, size_t n,
                   const struct labels *ls)
{
    const struct svc_ctr *st;
    char reason[64];
    size_t i, r, any = 0, limited = 0;

    for (i = 0; i < n; i++) {
        any += has_source_rules(svc_spec(svcs[i]));
        limited += has_source_limits(svc_spec(svcs[i]));
    }
    if (any == 0)
        return;
    family(b, "ferry_service_source_refused_total", "counter",
           "Clients reset by the service's source rules: address denied, "
           "not allowed, max_connections_per_source open already, or over "
           "connection_rate_per_source.");
    for (i = 0; i < n && !b->overflow; i++) {
        if (!has_source_rules(svc_spec(svcs[i])))
            continue;
        st = svc_counts(svcs[i]);
        for (r = 0; r < STATS_SRC__COUNT; r++) {
            snprintf(reason, sizeof(reason), "reason=\"%s\"",
                     stats_src_text[r]);
            sample(b, "ferry_service_source_refused_total", lab_get(ls, i),
                   reason, stats_get(&st->src_refused[r]));
        }
    }
    if (limited == 0)
        return;
    family(b, "ferry_service_source_uncounted_total", "counter",
           "Clients let in without per-source limits because the "
           "per-source table had no room for their address.");
    for (i = 0; i < n && !b->overflow; i++)
        if (has_source_limits(svc_spec(svcs[i])))
            sample(b, "ferry_service_source_uncounted_total", lab_get(ls, i),
                   NULL, stats_get(&svc_counts(svcs[i])->src_uncounted));
}

static int
is_udp(const struct svc *s)
{
    return svc_spec(s)->proto == TBL_PROTO_UDP;
}

/* Whether <s> has series: a Kubernetes Service only once it has had a
 * connection or a flow (a node follows every Service of the cluster, and
 * 10,000 idle ones would write 20 MB of zeros); a file's service always. */
static int
svc_shown(const struct svc *s)
{
    const struct svc_stats *st = svc_counters(s);
    const struct svc_ctr *k = svc_counts(s);

    return svc_spec(s)->origin != TBL_ORIGIN_API || stats_get(&k->accepted)
           || atomic_load_explicit(&st->active, memory_order_relaxed)
           || stats_get(&k->udp_flows)
           || atomic_load_explicit(&st->udp_active, memory_order_relaxed);
}

/* Flows and datagrams of the UDP services, if there are any. */
static void
write_udp(struct sbuf *b, struct svc *const *svcs, size_t n,
          const struct labels *ls)
{
    const struct svc_ctr *st;
    char reason[64];
    size_t i, r, any = 0;

    for (i = 0; i < n; i++)
        any += is_udp(svcs[i]);
    if (any == 0)
        return;
    family(b, "ferry_service_udp_flows_active", "gauge",
           "UDP flows (client address and port) open now.");
    for (i = 0; i < n; i++)
        if (is_udp(svcs[i]))
            sample(b, "ferry_service_udp_flows_active", lab_get(ls, i), NULL,
                   atomic_load_explicit(&svc_counters(svcs[i])->udp_active,
                                        memory_order_relaxed));
    family(b, "ferry_service_udp_flows_total", "counter",
           "UDP flows made, each with the backend its first datagram "
           "picked.");
    for (i = 0; i < n; i++)
        if (is_udp(svcs[i]))
            sample(b, "ferry_service_udp_flows_total", lab_get(ls, i), NULL,
                   stats_get(&svc_counts(svcs[i])->udp_flows));
    family(b, "ferry_service_udp_datagrams_total", "counter",
           "UDP datagrams relayed: direction=\"in\" from clients to "
           "backends, \"out\" from backends to clients.");
    for (i = 0; i < n && !b->overflow; i++) {
        if (!is_udp(svcs[i]))
            continue;
        st = svc_counts(svcs[i]);
        sample(b, "ferry_service_udp_datagrams_total", lab_get(ls, i),
               "direction=\"in\"", stats_get(&st->udp_dgrams_in));
        sample(b, "ferry_service_udp_datagrams_total", lab_get(ls, i),
               "direction=\"out\"", stats_get(&st->udp_dgrams_out));
    }
    family(b, "ferry_service_udp_dropped_total", "counter",
           "UDP datagrams dropped: a new flow over max_flows or without a "
           "backend, a send the kernel refused, a backend port closed "
           "(ICMP), out of resources, too large.");
    for (i = 0; i < n && !b->overflow; i++) {
        if (!is_udp(svcs[i]))
            continue;
        st = svc_counts(svcs[i]);
        for (r = 0; r < STATS_UDP__COUNT; r++) {
            snprintf(reason, sizeof(reason), "reason=\"%s\"",
                     stats_udp_text[r]);
            sample(b, "ferry_service_udp_dropped_total", lab_get(ls, i),
                   reason, stats_get(&st->udp_drops[r]));
        }
    }
}

/* SNI routing (README: SNI routing): per service, clients routed to it by
 * their server name or as an address's default, for the services that
 * had some; per address, every ClientHello by reason and outcome. */
static void
write_sni(struct sbuf *b, struct svc *const *svcs, size_t n,
          const struct labels *ls)
{
    static const char *const via[2] = {"via=\"name\"", "via=\"default\""};
    struct sniroute_count *c;
    size_t i, k, r, o, nc, any = 0;

    for (i = 0; i < n; i++)
        any += stats_get(&svc_counts(svcs[i])->sni_routed[0])
                   + stats_get(&svc_counts(svcs[i])->sni_routed[1])
               > 0;
    if (any > 0) {
        family(b, "ferry_service_sni_routed_total", "counter",
               "Clients sent to the service by the server name of their "
               "ClientHello (via=\"name\") or as their address's "
               "default_service (via=\"default\").");
        for (i = 0; i < n; i++) {
            const struct svc_ctr *st = svc_counts(svcs[i]);
            if (stats_get(&st->sni_routed[0]) + stats_get(&st->sni_routed[1])
                == 0)
                continue;
            for (k = 0; k < 2; k++)
                sample(b, "ferry_service_sni_routed_total", lab_get(ls, i),
                       via[k], stats_get(&st->sni_routed[k]));
        }
    }
    if ((c = calloc(256, sizeof(*c))) == NULL) {
        b->overflow = 1;
        return;
    }
    if ((nc = sniroute_counts(c, 256)) > 0)
        family(b, "ferry_sni_client_hellos_total", "counter",
               "Clients of addresses shared through server names, by "
               "listen address, reason (name, no_match, no_sni, malformed, "
               "timeout, closed, proxy_header) and outcome (routed, "
               "default, refused).");
    for (i = 0; i < nc; i++) {
        for (r = 0; r < SNIROUTE__COUNT; r++) {
            for (o = 0; o < SNIROUTE_OUTCOME__COUNT; o++) {
                /* Only the pairs that can happen. */
                if ((r == SNIROUTE_NAME) != (o == SNIROUTE_ROUTED)
                    || ((r == SNIROUTE_CLOSED || r == SNIROUTE_PROXY)
                        && o != SNIROUTE_REFUSED))
                    continue;
                sbuf_printf(b, "ferry_sni_client_hellos_total{listen=\"");
                metrics_label_value(b, c[i].listen);
                sbuf_printf(b, "\",reason=\"%s\",outcome=\"%s\"} %llu\n",
                            sniroute_reason_text[r], sniroute_outcome_text[o],
                            (unsigned long long)c[i].n[r][o]);
            }
        }
    }
    free(c);
}

static void
write_services(struct sbuf *b, struct svc *const *svcs, size_t n,
               const struct labels *ls, const struct le_text *lc)
{
    char reason[64];
    size_t i, r;

    family(b, "ferry_service_connections_accepted_total", "counter",
           "Client connections accepted.");
    for (i = 0; i < n; i++)
        sample(b, "ferry_service_connections_accepted_total", lab_get(ls, i),
               NULL, stats_get(&svc_counts(svcs[i])->accepted));
    family(b, "ferry_service_connections_active", "gauge",
           "Client connections open now.");
    for (i = 0; i < n; i++)
        sample(b, "ferry_service_connections_active", lab_get(ls, i), NULL,
               atomic_load_explicit(&svc_counters(svcs[i])->active,
                                    memory_order_relaxed));
    family(b, "ferry_service_connections_failed_total", "counter",
           "Failures by reason: connect attempts refused, timed out or in "
           "error; clients reset for lack of a backend, for the connection "
           "limit, or for lack of resources.");
    for (i = 0; i < n && !b->overflow; i++) {
        for (r = 0; r < STATS_FAIL__COUNT; r++) {
            snprintf(reason, sizeof(reason), "reason=\"%s\"",
                     stats_fail_text[r]);
            sample(b, "ferry_service_connections_failed_total", lab_get(ls, i),
                   reason, stats_get(&svc_counts(svcs[i])->fail[r]));
        }
    }
    family(b, "ferry_drain_closed_total", "counter",
           "Connections reset because their backend was taken away (gone "
           "from the table, or drained) longer than drain_timeout ago.");
    for (i = 0; i < n; i++)
        sample(b, "ferry_drain_closed_total", lab_get(ls, i), NULL,
               stats_get(&svc_counts(svcs[i])->drain_closed));
    family(b, "ferry_service_connect_retries_total", "counter",
           "Connect attempts beyond the first, on another backend.");
    for (i = 0; i < n; i++)
        sample(b, "ferry_service_connect_retries_total", lab_get(ls, i), NULL,
               stats_get(&svc_counts(svcs[i])->retries));
    family(b, "ferry_service_bytes_total", "counter",
           "Bytes relayed: direction=\"in\" from clients to backends, "
           "\"out\" from backends to clients.");
    for (i = 0; i < n; i++) {
        sample(b, "ferry_service_bytes_total", lab_get(ls, i),
               "direction=\"in\"", stats_get(&svc_counts(svcs[i])->bytes_in));
        sample(b, "ferry_service_bytes_total", lab_get(ls, i),
               "direction=\"out\"", stats_get(&svc_counts(svcs[i])->bytes_out));
    }
    family(b, "ferry_service_connect_duration_seconds", "histogram",
           "Time from the start of a connect attempt to its success.");
    for (i = 0; i < n && !b->overflow; i++)
        write_hist(b, "ferry_service_connect_duration_seconds", lab_get(ls, i),
                   &svc_counts(svcs[i])->connect, &hist_connect, lc);
    write_proxy_headers(b, svcs, n, ls);
    write_source_rules(b, svcs, n, ls);
    write_udp(b, svcs, n, ls);
    write_sni(b, svcs, n, ls);
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

/* Every backend value is a count or a flag. */
static uint64_t
be_value(enum be_metric m, const struct svc *s, size_t i, double now)
{
    const struct backend *bk = svc_backend(s, i);

    switch (m) {
    case BM_CONNECTS:
        return stats_get(&backend_ctr_read(bk)->n_connects);
    case BM_ACTIVE:
        return atomic_load_explicit(&bk->active, memory_order_relaxed);
    case BM_EJECTIONS:
        return stats_get(&backend_ctr_read(bk)->n_ejections);
    case BM_CONSEC:
        return backend_fails(bk);
    case BM_WEIGHT:
        return svc_backend_weight(s, i);
    case BM_DRAINED:
        return svc_backend_drained(s, i) != 0;
    case BM_HEALTH_UP:
        return backend_healthy(bk) != 0;
    case BM_HEALTH_CHECKED:
        return atomic_load_explicit(&bk->health, memory_order_relaxed)
               != BACKEND_HEALTH_UNCHECKED;
    case BM_EJECTED:
        return backend_ejected(bk, now) != 0;
    default:
        return 0;
    }
}

static void
write_backends(struct sbuf *b, struct svc *const *svcs, size_t n,
               const struct labels *ls, const struct le_text *lc, double now)
{
    char reason[64];
    size_t i, j, r;
    int m;

    if (ls->nbe == 0)
        return;
    for (m = 0; m < BM__COUNT; m++) {
        family(b, be_metrics[m].name, be_metrics[m].type, be_metrics[m].help);
        for (i = 0; i < n && !b->overflow; i++) {
            if (ls->be_base[i] == SIZE_MAX)
                continue;
            for (j = 0; j < svc_nbackends(svcs[i]); j++)
                sample(b, be_metrics[m].name, lab_get(ls, ls->be_base[i] + j),
                       NULL, be_value((enum be_metric)m, svcs[i], j, now));
        }
    }
    family(b, "ferry_backend_connect_failures_total", "counter",
           "Failed connects to the backend, by reason.");
    for (i = 0; i < n && !b->overflow; i++) {
        if (ls->be_base[i] == SIZE_MAX)
            continue;
        for (j = 0; j < svc_nbackends(svcs[i]); j++) {
            for (r = 0; r < STATS_FAIL_CONNECT_COUNT; r++) {
                snprintf(reason, sizeof(reason), "reason=\"%s\"",
                         stats_fail_text[r]);
                sample(b, "ferry_backend_connect_failures_total",
                       lab_get(ls, ls->be_base[i] + j), reason,
                       stats_get(&backend_ctr_read(svc_backend(svcs[i], j))
                                       ->n_fail[r]));
            }
        }
    }
    family(b, "ferry_backend_health_transitions_total", "counter",
           "Active-check state changes, by the state entered.");
    for (i = 0; i < n && !b->overflow; i++) {
        if (ls->be_base[i] == SIZE_MAX)
            continue;
        for (j = 0; j < svc_nbackends(svcs[i]); j++) {
            const struct backend_ctr *bk =
                backend_ctr_read(svc_backend(svcs[i], j));
            struct lab l = lab_get(ls, ls->be_base[i] + j);
            sample(b, "ferry_backend_health_transitions_total", l,
                   "to=\"down\"", stats_get(&bk->n_went_down));
            sample(b, "ferry_backend_health_transitions_total", l,
                   "to=\"up\"", stats_get(&bk->n_went_up));
        }
    }
    family(b, "ferry_backend_bytes_total", "counter",
           "Bytes relayed: direction=\"in\" to the backend, \"out\" from it.");
    for (i = 0; i < n && !b->overflow; i++) {
        if (ls->be_base[i] == SIZE_MAX)
            continue;
        for (j = 0; j < svc_nbackends(svcs[i]); j++) {
            const struct backend_ctr *bk =
                backend_ctr_read(svc_backend(svcs[i], j));
            struct lab l = lab_get(ls, ls->be_base[i] + j);
            sample(b, "ferry_backend_bytes_total", l, "direction=\"in\"",
                   stats_get(&bk->bytes_in));
            sample(b, "ferry_backend_bytes_total", l, "direction=\"out\"",
                   stats_get(&bk->bytes_out));
        }
    }
    family(b, "ferry_backend_connect_duration_seconds", "histogram",
           "Time from the start of a connect attempt to its success.");
    for (i = 0; i < n && !b->overflow; i++) {
        if (ls->be_base[i] == SIZE_MAX)
            continue;
        for (j = 0; j < svc_nbackends(svcs[i]); j++)
            write_hist(b, "ferry_backend_connect_duration_seconds",
                       lab_get(ls, ls->be_base[i] + j),
                       &backend_ctr_read(svc_backend(svcs[i], j))->connect_hist,
                       &hist_connect,
                       lc);
    }
}

void
metrics_write(struct sbuf *b, struct svc *const *svcs, size_t n,
              const struct health *h, int ready, double now,
              enum conf_per_backend per_backend)
{
    struct labels ls;
    struct le_text lc;

    struct svc **shown;
    size_t i, m = 0;

    (void)h;
    write_process(b, ready);
    write_api_skipped(b);
    if ((shown = malloc((n ? n : 1) * sizeof(*shown))) == NULL) {
        b->overflow = 1;
        return;
    }
    for (i = 0; i < n; i++)
        if (svc_shown(svcs[i]))
            shown[m++] = svcs[i];
    if (labels_build(&ls, shown, m, per_backend, b->max) < 0) {
        /* Out of memory, or labels alone larger than the reply may be. */
        b->overflow = 1;
        labels_free(&ls);
        free(shown);
        return;
    }
    le_text_init(&lc, &hist_connect);
    write_services(b, shown, m, &ls, &lc);
    write_backends(b, shown, m, &ls, &lc, now);
    labels_free(&ls);
    free(shown);
}
