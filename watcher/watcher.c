#include "watcher.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctrace.h"
#include "kapi.h"
#include "kcred.h"
#include "log.h"
#include "reflector.h"
#include "translate.h"
#include "util.h"

#define SEL_HEADLESS "!service.kubernetes.io/headless"
#define SEL_PROXY    "service.kubernetes.io/service-proxy-name"
#define ANN_TRIGGER  "endpoints.kubernetes.io/last-change-trigger-time"

#define WATCHER_BUILD_RETRY_S 1.0 /* after a build that ran out of memory */

const double watcher_latency_bounds[WATCHER_LAT_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};

struct watcher {
    struct ev_loop *loop;
    watcher_publish_fn publish;
    void *arg;
    struct kcred *cred;
    struct kapi *api;
    struct reflector *svc, *eps, *node;

    /* copies of the configuration */
    char *node_name, *proxy_name;
    struct saddr *node_addrs;
    size_t n_node_addrs;
    struct tbl_service policy;
    int has_policy;
    int edge;
    int kernel, redirect;
    struct saddr *edge_nodes;
    size_t n_edge_nodes;
    char zone[64];
    int node_seen, node_deleting;

    ev_timer publish_timer; /* zero-delay: after the current batch */
    int dirty;
    /* The Services and slices changed since the last table, by cache key,
     * for translate_patch(); dirty_all: not all known (a relist,
     * too many, a change not seen as an event), build in full. */
    char *dkeys[2][WATCHER_DIRTY_MAX]; /* [0] Services, [1] slices */
    size_t ndkeys[2];
    int dirty_all;
    uint64_t seen_changes[2]; /* kcache_changes() accounted for */
    uint64_t patched;         /* tables made by translate_patch() */
    uint64_t nomem_builds;    /* builds that ran out of memory */
    double oldest; /* arrival of the oldest unpublished change */
    struct table *last;
    uint64_t generation;
    uint64_t tables;
    double last_publish;
    size_t conflicts;
    int api_healthy;
    void (*on_untrusted)(void *arg, const char *why);
    void (*on_unchanged)(void *arg);
    int untrusted_said;

    /* kube-proxy's view (watcher_status, watcher_current_build). */
    double started;    /* ev_time() at watcher_new */
    double last_change;
    uint64_t built_svc_changes, built_eps_changes; /* at the last build */
    size_t no_local_internal, no_local_external;
    double build_started;
    /* CPU time of the loop's thread in watcher_on_publish(): building
     * tables and the publish callback (applying them). */
    uint64_t table_cpu_ns;
    /* The lines of tables patched into the last one (publish_table()). */
    struct log_ratelimit publish_rl;
    double *triggers; /* WATCHER_TRIGGERS_MAX, pending trigger times */
    size_t ntriggers;
    uint64_t triggers_dropped;

    double lat[WATCHER_LAT_RING];
    size_t lat_n, lat_pos;
    struct watcher_latency_hist hist;

    struct skip_set *skips; /* what the last build skipped */
    /* Each Service's translation, reused while it and its slices stay the
     * same; how many the last build translated, and all builds. */
    struct translate_memo *memo;
    size_t translated_last;
    uint64_t translated;
    uint64_t skipped[SKIP_KIND__COUNT][SKIP__COUNT];
    struct skip_log skip_log;
};

static void
count_skip(void *arg, const struct skip_note *n)
{
    struct watcher *w = arg;

    w->skipped[n->kind][n->reason]++;
    skip_log(&w->skip_log, ev_now(w->loop), "watcher", n);
}

static void
record_latency(struct watcher *w, double d)
{
    size_t i;

    w->lat[w->lat_pos] = d;
    w->lat_pos = (w->lat_pos + 1) % WATCHER_LAT_RING;
    if (w->lat_n < WATCHER_LAT_RING)
        w->lat_n++;
    w->hist.count++;
    w->hist.sum += d;
    for (i = 0; i < WATCHER_LAT_BUCKETS; i++)
        if (d <= watcher_latency_bounds[i])
            w->hist.buckets[i]++;
    w->hist.buckets[WATCHER_LAT_BUCKETS]++;
}

static void
dirty_clear(struct watcher *w)
{
    size_t k, i;

    for (k = 0; k < 2; k++) {
        for (i = 0; i < w->ndkeys[k]; i++)
            free(w->dkeys[k][i]);
        w->ndkeys[k] = 0;
    }
    w->dirty_all = 0;
}

/* Note <key> changed in cache <k> (0: Services, 1: slices), once. */
static void
dirty_key(struct watcher *w, int k, const char *key)
{
    size_t i;

    for (i = 0; i < w->ndkeys[k]; i++)
        if (strcmp(w->dkeys[k][i], key) == 0)
            return;
    if (w->ndkeys[k] == WATCHER_DIRTY_MAX
        || (w->dkeys[k][w->ndkeys[k]] = strdup(key)) == NULL) {
        w->dirty_all = 1;
        return;
    }
    w->ndkeys[k]++;
}

/* Note the change of the object of <ev> in cache <k> (0: Services, 1:
 * slices). */
static void
dirty_note(struct watcher *w, int k, const struct kcache *c,
           const struct kcache_event *ev)
{
    const json_t *obj = ev->obj != NULL ? ev->obj : ev->gone;
    char key[512];
    struct err e;
    uint64_t ch = kcache_changes(c);

    /* One event, one change of the cache: anything else is a change the
     * keys would not tell. */
    if (ch != w->seen_changes[k] + 1)
        w->dirty_all = 1;
    w->seen_changes[k] = ch;
    if (w->dirty_all)
        return;
    if (obj == NULL || kcache_key(c, obj, key, sizeof(key), &e) < 0) {
        w->dirty_all = 1;
        return;
    }
    dirty_key(w, k, key);
    /* A slice gone: its Service must be translated again too, and only
     * the slice's last state tells which it was. */
    if (k == 1 && ev->obj == NULL && !w->dirty_all) {
        const json_t *md = json_object_get(obj, "metadata");
        const char *ns = json_string_value(json_object_get(md, "namespace"));
        const char *svc = json_string_value(json_object_get(
            json_object_get(md, "labels"), TRANSLATE_LABEL_SERVICE_NAME));
        int n = ns != NULL && svc != NULL
                    ? snprintf(key, sizeof(key), "%s/%s", ns, svc)
                    : -1;
        if (n > 0 && (size_t)n < sizeof(key))
            dirty_key(w, 0, key);
        /* Without a label it was skipped: no Service held it. */
    }
}

static int
tables_equal(const struct table *a, const struct table *b)
{
    size_t i;

    if (a == NULL || b == NULL || a->nservices != b->nservices
        || a->nksvcs != b->nksvcs)
        return 0;
    for (i = 0; i < a->nservices; i++)
        if (!tbl_service_equal(table_service(a, i), table_service(b, i)))
            return 0;
    for (i = 0; i < a->nksvcs; i++)
        if (!tbl_ksvc_equal(table_ksvc(a, i), table_ksvc(b, i)))
            return 0;
    return 1;
}

static struct table *
build_table(struct watcher *w)
{
    struct translate_opts o;
    struct translate_stats st;
    struct table *t = table_new();
    struct skip_set *skips = skip_set_new();
    struct err e;

    memset(&o, 0, sizeof(o));
    o.node_name = w->node_name;
    o.node_zone = w->zone[0] ? w->zone : NULL;
    o.node_addrs = w->node_addrs;
    o.n_node_addrs = w->n_node_addrs;
    o.service_proxy_name = w->proxy_name;
    o.policy = w->has_policy ? &w->policy : NULL;
    o.stats = &st;
    o.edge = w->edge;
    o.kernel = w->kernel;
    o.redirect = w->redirect;
    o.edge_nodes = w->edge_nodes;
    o.n_edge_nodes = w->n_edge_nodes;
    o.skips = skips;
    o.memo = w->memo;
    err_clear(&e);
    if (!w->dirty_all && w->last != NULL && t != NULL && skips != NULL) {
        struct table *pt = NULL;
        /* A patch writes no note into <skips>: the notes of the table
         * before stay (w->skips). */
        int rc = translate_patch(reflector_cache(w->svc),
                                 reflector_cache(w->eps), &o, w->last,
                                 (const char *const *)w->dkeys[0],
                                 w->ndkeys[0],
                                 (const char *const *)w->dkeys[1],
                                 w->ndkeys[1], &pt, &e);
        if (rc < 0) {
            log_error("watcher: cannot build the service table: %s", e.msg);
            table_unref(t);
            skip_set_free(skips);
            return NULL;
        }
        if (rc > 0) {
            table_unref(t);
            skip_set_free(skips);
            w->patched++;
            dirty_clear(w);
            w->translated_last = st.translated;
            w->translated += st.translated;
            w->no_local_internal = st.no_local_internal;
            w->no_local_external = st.no_local_external;
            return pt;
        }
    }
    if (t == NULL || skips == NULL
        /* The table grows once: about as large as the last one. */
        || table_reserve(t, w->last != NULL ? w->last->nservices + 16 : 0)
               < 0
        || table_reserve_ksvcs(t, w->last != NULL ? w->last->nksvcs + 16 : 0)
               < 0
        || translate_build(reflector_cache(w->svc), reflector_cache(w->eps), &o,
                           t, &e)
               < 0) {
        log_error("watcher: cannot build the service table: %s",
                  e.msg[0] != '\0' ? e.msg : "out of memory");
        table_unref(t);
        skip_set_free(skips);
        return NULL;
    }
    /* Count and log what starts being skipped; the rest was said. */
    skip_set_each_new(skips, w->skips, count_skip, w);
    skip_set_free(w->skips);
    w->skips = skips;
    dirty_clear(w);
    w->conflicts = st.conflicts; /* each one was logged as a skip */
    w->translated_last = st.translated;
    w->translated += st.translated;
    w->no_local_internal = st.no_local_internal;
    w->no_local_external = st.no_local_external;
    return t;
}

static void
publish_table(struct watcher *w, struct ev_loop *loop)
{
    struct table *t;
    uint64_t quiet = 0;
    char more[64] = "";
    double lat;

    if (!w->dirty || !watcher_synced(w))
        return;
    w->build_started = ev_time();
    t = build_table(w);
    if (t == NULL) {
        /* Out of memory: the table in force stays, and the build is
         * tried again in a second (a change meanwhile waits for it). */
        w->nomem_builds++;
        ev_timer_stop(loop, &w->publish_timer);
        ev_timer_set(&w->publish_timer, WATCHER_BUILD_RETRY_S, 0.);
        ev_timer_start(loop, &w->publish_timer);
        return;
    }
    w->dirty = 0;
    w->built_svc_changes = reflector_stats(w->svc)->changes;
    w->built_eps_changes = reflector_stats(w->eps)->changes;
    if (t->base != 0 ? t->ndsvcs == 0 && t->ndksvcs == 0
                     : tables_equal(t, w->last)) {
        /* The same table: the memo goes on from the one in force. */
        translate_memo_adopt(w->memo, w->last);
        table_unref(t);
        ctrace_built(0, ev_time());
        if (w->on_unchanged != NULL)
            w->on_unchanged(w->arg);
        w->ntriggers = 0;
        return;
    }
    table_freeze(t, ++w->generation);
    ctrace_built(t->generation, ev_time());
    ev_now_update(loop);
    lat = ev_now(loop) - w->oldest;
    record_latency(w, lat < 0 ? 0 : lat);
    w->last_publish = ev_now(loop);
    w->tables++;
    /* A table patched into the last one (one change, most often) is
     * logged at most once a second, with how many were not; one built
     * whole, or a change that took a second or more, always is. A line
     * each was 100 lines a second at 100 changes a second, and its
     * write a fifth of the control loop's work for a change. */
    if (t->base == 0 || lat >= 1.0
        || log_ratelimit_pass(&w->publish_rl, ev_now(loop), &quiet)) {
        if (quiet > 0)
            snprintf(more, sizeof(more), "; %llu more since the last line",
                     (unsigned long long)quiet);
        log_info("watcher: publishing table %llu: %zu proxied and %zu "
                 "kernel service(s), %zu Service(s) translated%s (change "
                 "latency %.1f ms)%s",
                 (unsigned long long)t->generation, t->nservices, t->nksvcs,
                 w->translated_last,
                 t->base != 0 ? " into the last table" : "", lat * 1e3, more);
    } else
        log_debug("watcher: publishing table %llu: %zu Service(s) "
                  "translated into the last table (change latency %.1f ms)",
                  (unsigned long long)t->generation, w->translated_last,
                  lat * 1e3);
    table_unref(w->last);
    w->last = table_ref(t);
    w->publish(t, w->arg);
    w->ntriggers = 0; /* taken by the callback */
}

static void
watcher_on_publish(struct ev_loop *loop, ev_timer *tm, int revents)
{
    struct watcher *w = tm->data;
    uint64_t t0 = thread_cpu_ns();

    (void)revents;
    publish_table(w, loop);
    w->table_cpu_ns += thread_cpu_ns() - t0;
}

static void
mark_dirty(struct watcher *w)
{
    if (!w->dirty) {
        w->dirty = 1;
        w->oldest = ev_now(w->loop);
    }
    if (watcher_synced(w) && !ev_is_active(&w->publish_timer)) {
        ev_timer_set(&w->publish_timer, 0., 0.);
        ev_timer_start(w->loop, &w->publish_timer);
    }
}

static void
on_change(void *arg, struct reflector *r)
{
    struct watcher *w = arg;

    if (r != w->node)
        w->last_change = ev_now(w->loop);
    if (r != w->node) {
        int k = r == w->eps;
        uint64_t ch = kcache_changes(reflector_cache(r));
        if (ch != w->seen_changes[k]) /* a relist: no events */
            w->dirty_all = 1;
        w->seen_changes[k] = ch;
    }

    if (r == w->node) {
        const json_t *n = kcache_get(reflector_cache(r), w->node_name);
        const char *z = n ? translate_node_zone(n) : NULL;
        int del = n != NULL ? translate_node_deleting(n) : w->node_seen;
        w->node_seen |= n != NULL;
        if (del != w->node_deleting)
            log_info("watcher: node %s %s", w->node_name,
                     del ? "is being deleted (or tainted for deletion)"
                         : "is no longer being deleted");
        w->node_deleting = del;
        if (strcmp(z ? z : "", w->zone) == 0)
            return;
        snprintf(w->zone, sizeof(w->zone), "%s", z ? z : "");
        log_info("watcher: node %s is in zone \"%s\"", w->node_name, w->zone);
    }
    mark_dirty(w);
}

static int
all_healthy(const struct watcher *w)
{
    /* The Node is optional (zone hints only): it does not count. */
    const struct reflector *rs[] = {w->svc, w->eps};
    size_t i;

    for (i = 0; i < 2; i++)
        if (rs[i] != NULL && reflector_stats(rs[i])->failing_since != 0)
            return 0;
    return 1;
}

static void
on_health(void *arg, struct reflector *r, int ok)
{
    struct watcher *w = arg;
    int now_ok = all_healthy(w);

    (void)r;
    (void)ok;
    if (now_ok == w->api_healthy)
        return;
    w->api_healthy = now_ok;
    if (!now_ok && w->last != NULL)
        log_warn("watcher: lost the API server; keeping the last table "
                 "(generation %llu, %zu services) until it is back",
                 (unsigned long long)w->last->generation, w->last->nservices);
    else if (!now_ok)
        log_warn("watcher: cannot reach the API server yet; no table "
                 "published");
    else
        log_info("watcher: API server reachable again");
}

/* The RV is one counter for all kinds: a fresh list of one kind tells
 * the others whether the store went back. */
static void
on_list(void *arg, struct reflector *r, const char *rv)
{
    struct watcher *w = arg;
    struct reflector *rs[] = {w->svc, w->eps, w->node};
    size_t i;

    for (i = 0; i < 3; i++)
        if (rs[i] != NULL && rs[i] != r)
            reflector_check_rv(rs[i], rv);
}

static void
on_cert_failure(void *arg, struct reflector *r)
{
    struct watcher *w = arg;

    if (w->on_untrusted == NULL || w->untrusted_said || w->last != NULL
        || watcher_synced(w))
        return;
    w->untrusted_said = 1;
    w->on_untrusted(w->arg, reflector_stats(r)->last_error);
}

static void
on_skip(void *arg, struct reflector *r, const struct skip_note *n)
{
    (void)r;
    count_skip(arg, n);
}

/* A record for "ferry explain --trace" (ctrace.h). */
static void
trace_object(int slice, const struct kcache_event *ev, double trigger)
{
    const json_t *md = json_object_get(ev->obj ? ev->obj : ev->gone,
                                       "metadata");
    const char *ns = json_string_value(json_object_get(md, "namespace"));
    const char *name = json_string_value(json_object_get(md, "name"));
    const char *svc = name;

    if (slice)
        svc = json_string_value(json_object_get(json_object_get(md, "labels"),
                                                TRANSLATE_LABEL_SERVICE_NAME));
    if (ns != NULL && name != NULL && svc != NULL)
        ctrace_received(slice ? CTRACE_SLICE : CTRACE_SERVICE,
                        ev->type == KCACHE_EV_DELETED    ? CTRACE_DELETED
                        : ev->type == KCACHE_EV_MODIFIED ? CTRACE_MODIFIED
                                                         : CTRACE_ADDED,
                        ns, svc, name, trigger, ev_time());
}

/* kube-proxy measures network programming from the trigger time the
 * EndpointSlice controller writes on a slice it changes; a deletion's
 * annotation is that of the last update, so it is not taken, and
 * neither is a time before the watcher started. */
static void
on_object(void *arg, struct reflector *r, const struct kcache_event *ev)
{
    struct watcher *w = arg;
    const char *s;
    double t;

    w->last_change = ev_now(w->loop);
    if (r != w->eps && r != w->svc)
        return;
    dirty_note(w, r == w->eps, reflector_cache(r), ev);
    if (ev->obj == NULL) { /* a deletion: traced, no trigger time */
        if (ev->gone != NULL)
            trace_object(r == w->eps, ev, 0);
        return;
    }
    s = json_string_value(json_object_get(
        json_object_get(json_object_get(ev->obj, "metadata"), "annotations"),
        ANN_TRIGGER));
    if (s == NULL || watcher_parse_time(s, &t) < 0 || r != w->eps)
        t = 0;
    trace_object(r == w->eps, ev, t);
    if (t <= w->started)
        return;
    if (w->ntriggers == WATCHER_TRIGGERS_MAX) {
        w->triggers_dropped++;
        return;
    }
    w->triggers[w->ntriggers++] = t;
}

static const struct reflector_ops refl_ops = {
    on_change, on_health, on_list, on_cert_failure, on_skip, on_object};

static struct kcred *
load_cred(const struct watcher_conf *wc, struct err *e)
{
    struct kcred *c;

    if (wc->kubeconfig != NULL)
        c = kcred_from_kubeconfig(wc->kubeconfig, e);
    else
        c = kcred_in_cluster(wc->api_server, wc->sa_dir, e);
    if (c == NULL)
        return NULL;
    if (wc->kubeconfig != NULL && wc->api_server != NULL) {
        free(c->server);
        c->server = strdup(wc->api_server);
    }
    if (c->server == NULL
        || (strncmp(c->server, "https://", 8) != 0
            && strncmp(c->server, "http://", 7) != 0)) {
        err_set(e, "API server must be an http:// or https:// URL");
        kcred_free(c);
        return NULL;
    }
    if (wc->insecure_skip_tls_verify)
        c->insecure = 1;
    if (strncmp(c->server, "http://", 7) == 0)
        log_warn("watcher: talking to the API server %s without TLS",
                 c->server);
    return c;
}

/* kube-proxy's selector: no headless, and the proxy-name rule. */
static char *
make_selector(const struct watcher_conf *wc, int with_extra)
{
    const char *extra = with_extra ? wc->label_selector : NULL;
    char *s;
    int n;

    if (wc->service_proxy_name != NULL)
        n = asprintf(&s, "%s,%s=%s%s%s", SEL_HEADLESS, SEL_PROXY,
                     wc->service_proxy_name, extra ? "," : "",
                     extra ? extra : "");
    else
        n = asprintf(&s, "%s,!%s%s%s", SEL_HEADLESS, SEL_PROXY,
                     extra ? "," : "", extra ? extra : "");
    return n < 0 ? NULL : s;
}

static int
copy_conf(struct watcher *w, const struct watcher_conf *wc)
{
    w->edge = wc->edge;
    w->kernel = wc->kernel;
    w->redirect = wc->redirect;
    if (wc->n_edge_nodes > 0) {
        w->edge_nodes = calloc(wc->n_edge_nodes, sizeof(*w->edge_nodes));
        if (w->edge_nodes == NULL)
            return -1;
        memcpy(w->edge_nodes, wc->edge_nodes,
               wc->n_edge_nodes * sizeof(*w->edge_nodes));
        w->n_edge_nodes = wc->n_edge_nodes;
    }
    if (wc->node_name != NULL && (w->node_name = strdup(wc->node_name)) == NULL)
        return -1;
    if (wc->service_proxy_name != NULL
        && (w->proxy_name = strdup(wc->service_proxy_name)) == NULL)
        return -1;
    if (wc->n_node_addrs > 0) {
        w->node_addrs = calloc(wc->n_node_addrs, sizeof(*w->node_addrs));
        if (w->node_addrs == NULL)
            return -1;
        memcpy(w->node_addrs, wc->node_addrs,
               wc->n_node_addrs * sizeof(*w->node_addrs));
        w->n_node_addrs = wc->n_node_addrs;
    }
    if (wc->policy != NULL) {
        /* A copy with its own arrays (source rules, health check path):
         * nothing borrowed from the config. */
        struct tbl_service tmpl = *wc->policy;
        tmpl.frontends = NULL;
        tmpl.nfrontends = 0;
        tmpl.backends = NULL;
        tmpl.nbackends = 0;
        tmpl.arrays = NULL;
        if (tbl_service_hold(&w->policy, &tmpl) < 0)
            return -1;
        w->has_policy = 1;
    }
    return 0;
}

static int
start_reflectors(struct watcher *w, const struct watcher_conf *wc)
{
    char *ssel = make_selector(wc, 1), *esel = make_selector(wc, 0);
    char *nsel = NULL;
    int rc = -1;

    if (ssel == NULL || esel == NULL)
        goto out;
    w->svc = reflector_new(w->loop, w->api, &reflector_services, ssel, NULL,
                           &refl_ops, w);
    w->eps = reflector_new(w->loop, w->api, &reflector_slices, esel, NULL,
                           &refl_ops, w);
    if (w->svc == NULL || w->eps == NULL)
        goto out;
    if (w->node_name != NULL) {
        /* Only for the zone (topology hints): not needed to be synced. */
        if (asprintf(&nsel, "metadata.name=%s", w->node_name) < 0)
            goto out;
        w->node = reflector_new(w->loop, w->api, &reflector_nodes, NULL, nsel,
                                &refl_ops, w);
        if (w->node == NULL)
            goto out;
        reflector_start(w->node);
    }
    reflector_start(w->svc);
    reflector_start(w->eps);
    rc = 0;
out:
    free(ssel);
    free(esel);
    free(nsel);
    return rc;
}

struct watcher *
watcher_new(struct ev_loop *loop, const struct watcher_conf *wc,
            watcher_publish_fn publish, void *arg, struct err *e)
{
    struct watcher *w = calloc(1, sizeof(*w));

    if (w == NULL) {
        err_set(e, "out of memory");
        return NULL;
    }
    w->loop = loop;
    w->publish = publish;
    w->arg = arg;
    w->on_untrusted = wc->on_untrusted;
    w->on_unchanged = wc->on_unchanged;
    w->api_healthy = 1;
    w->started = ev_time();
    ev_timer_init(&w->publish_timer, watcher_on_publish, 0., 0.);
    w->publish_timer.data = w;
    w->triggers = calloc(WATCHER_TRIGGERS_MAX, sizeof(*w->triggers));
    w->memo = translate_memo_new();
    if (w->triggers == NULL || w->memo == NULL || copy_conf(w, wc) < 0) {
        err_set(e, "out of memory");
        goto fail;
    }
    w->cred = load_cred(wc, e);
    if (w->cred == NULL)
        goto fail;
    w->api = kapi_new(loop, w->cred, e);
    if (w->api == NULL)
        goto fail;
    log_info("watcher: following %s (%s credentials)%s%s", w->cred->server,
             w->cred->source, w->node_name ? " as node " : " in edge mode",
             w->node_name ? w->node_name : "");
    if (start_reflectors(w, wc) < 0) {
        err_set(e, "out of memory");
        goto fail;
    }
    return w;
fail:
    watcher_free(w);
    return NULL;
}

void
watcher_free(struct watcher *w)
{
    if (w == NULL)
        return;
    ev_timer_stop(w->loop, &w->publish_timer);
    reflector_free(w->svc);
    reflector_free(w->eps);
    reflector_free(w->node);
    kapi_free(w->api);
    kcred_free(w->cred);
    table_unref(w->last);
    skip_set_free(w->skips);
    translate_memo_free(w->memo);
    dirty_clear(w);
    free(w->node_name);
    free(w->proxy_name);
    free(w->node_addrs);
    free(w->edge_nodes);
    free(w->triggers);
    if (w->has_policy)
        tbl_service_release(&w->policy);
    free(w);
}

int
watcher_synced(const struct watcher *w)
{
    return w->svc != NULL && w->eps != NULL && reflector_synced(w->svc)
           && reflector_synced(w->eps);
}

static void
add_stats(struct watcher_status *s, const struct reflector *r)
{
    const struct reflector_stats *st;

    if (r == NULL)
        return;
    st = reflector_stats(r);
    s->relists += st->relists;
    s->watch_restarts += st->watch_restarts;
    s->events += st->events;
    s->bad_objects += st->bad_lines;
    s->errors += st->errors;
    s->nomem_api += st->nomem;
    if (st->last_sync > s->last_sync)
        s->last_sync = st->last_sync;
    if (st->failing_since != 0
        && (s->failing_since == 0 || st->failing_since < s->failing_since)) {
        s->failing_since = st->failing_since;
        snprintf(s->last_error, sizeof(s->last_error), "%s", st->last_error);
    }
}

void
watcher_status(const struct watcher *w, struct watcher_status *s)
{
    memset(s, 0, sizeof(*s));
    s->synced = watcher_synced(w);
    s->api_healthy = all_healthy(w);
    s->last_publish = w->last_publish;
    s->generation = w->generation;
    s->tables = w->tables;
    s->conflicts = w->conflicts;
    s->translated_last = w->translated_last;
    s->translated = w->translated;
    s->patched = w->patched;
    s->nomem_builds = w->nomem_builds;
    s->api_cpu_ns = w->api ? kapi_cpu_ns(w->api) : 0;
    s->table_cpu_ns = w->table_cpu_ns;
    add_stats(s, w->svc);
    add_stats(s, w->eps);
    add_stats(s, w->node);
    s->services = w->svc ? kcache_size(reflector_cache(w->svc)) : 0;
    s->slices = w->eps ? kcache_size(reflector_cache(w->eps)) : 0;
    s->table_services = w->last ? w->last->nservices : 0;
    snprintf(s->node_zone, sizeof(s->node_zone), "%s", w->zone);
    s->node_deleting = w->node_deleting;
    s->pending_since = w->dirty ? w->oldest : 0;
    if (w->svc != NULL && w->eps != NULL) {
        s->service_changes = reflector_stats(w->svc)->changes;
        s->endpoint_changes = reflector_stats(w->eps)->changes;
        s->service_pending = s->service_changes - w->built_svc_changes;
        s->endpoint_pending = s->endpoint_changes - w->built_eps_changes;
    }
    s->last_change = w->last_change;
    s->no_local_internal = w->no_local_internal;
    s->no_local_external = w->no_local_external;
    memcpy(s->skipped, w->skipped, sizeof(s->skipped));
}

size_t
watcher_latencies(const struct watcher *w, double *out, size_t max)
{
    size_t i, n = w->lat_n < max ? w->lat_n : max;

    for (i = 0; i < n; i++)
        out[i] =
            w->lat[(w->lat_pos + WATCHER_LAT_RING - 1 - i) % WATCHER_LAT_RING];
    return n;
}

void
watcher_latency_hist(const struct watcher *w, struct watcher_latency_hist *h)
{
    *h = w->hist;
}

void
watcher_current_build(const struct watcher *w, struct watcher_build *out)
{
    out->started = w->build_started;
    out->triggers = w->triggers;
    out->ntriggers = w->ntriggers;
    out->triggers_dropped = w->triggers_dropped;
}

/* <n> digits of <s> as a number; -1 if any is not a digit. */
static int
digits(const char *s, int n)
{
    int v = 0, i;

    for (i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

int
watcher_parse_time(const char *s, double *out)
{
    struct tm tm;
    double frac = 0, scale = 0.1;
    int y, mo, d, h, mi, sec, off = 0;
    time_t t;

    if (strlen(s) < 20 || s[4] != '-' || s[7] != '-'
        || (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':')
        return -1;
    y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
    h = digits(s + 11, 2), mi = digits(s + 14, 2), sec = digits(s + 17, 2);
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23
        || mi < 0 || mi > 59 || sec < 0 || sec > 60)
        return -1;
    s += 19;
    if (*s == '.') {
        if (!isdigit((unsigned char)*++s))
            return -1;
        for (; isdigit((unsigned char)*s); s++, scale /= 10)
            frac += (*s - '0') * scale;
    }
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        int oh = digits(s + 1, 2), om = oh < 0 ? -1 : digits(s + 4, 2);
        if (oh < 0 || oh > 23 || s[3] != ':' || om < 0 || om > 59)
            return -1;
        off = (oh * 60 + om) * 60 * (*s == '+' ? 1 : -1);
        s += 6;
    } else {
        return -1;
    }
    if (*s != '\0')
        return -1;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *out = (double)t - off + frac;
    return 0;
}
