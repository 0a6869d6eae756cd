#include <linux/capability.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "backend.h"
#include "health.h"
#include "ctrace.h"
#include "kpmetrics.h"
#include "kube.h"
#include "log.h"
#include "nft.h"
#include "smap.h"
#include "stats.h"
#include "nodehealth.h"
#include "proxy.h"
#include "vip.h"
#include "watcher.h"

struct kube {
    struct ev_loop *loop;
    struct proxy *p;
    struct watcher *watcher;
    struct vip *vip;        /* NULL with vip_interface "none" */
    struct table *statics;  /* services of the file (reference) */
    struct table *api;      /* last table from the watcher (reference) */
    struct table *old_api;  /* the one before, while a new one is applied */
    /* The last merged table, the serial of the API table it was made
     * from, and whether it is that table copied whole with the dispatch
     * services after it: the next one is then made from it. */
    struct table *merged;
    uint64_t merged_api;
    int merged_copy;
    uint32_t aff_max;        /* dispatch_services(): the longest affinity */
    uint64_t aff_api;        /* ... of the REDIRECT services of this table */
    size_t kchecked;         /* kernel services with an active check */
    uint64_t *generation;
    struct saddr *nodeport; /* NodePort addresses, copied */
    size_t n_nodeport;
    uint64_t relists, restarts;
    struct ev_timer counters; /* copies watch counters into the metrics */
    /* A second after the last table, or TRIM_LATEST after the first of a
     * run of tables that leaves no such pause: give freed heap back
     * (kube_on_trim). */
    struct ev_timer trim, trim_due;
    struct nodehealth *nh;  /* kube-proxy's health endpoints */
    struct kpm *kpm;        /* kube-proxy's metrics, or NULL */
    int applied;            /* an API table is in force */
    double last_applied;    /* wall clock */
    double apply_failing;   /* first failed apply since the last success */
    double vip_pending;     /* VIPs asked for, not yet confirmed in sync */
    int refused;            /* the API server could not be trusted at
                             * start: the loop was stopped */
    struct skip_set *conflicts; /* API services the last merge left out */
    struct skip_set *nft_refused; /* kernel services the engine refused,
                                   * at the last feed (logged as they
                                   * start being refused) */
    uint64_t n_conflicts;       /* ... counted as they start */
    struct skip_log skip_log;
    /* The kernel dataplane (node.dataplane nftables), else NULL; while
     * kube-proxy's rules are on the node, NULL with want_nft set, and
     * kp_check looks again every few seconds. */
    struct nft *nft;
    int want_nft;
    /* node.dataplane proxy with redirect steering: the engine only
     * redirects TCP Service ports to the dispatch listener. */
    int steer;
    uint16_t proxy_port;    /* the dispatch listener's, node.proxy_port */
    struct nft_conf nft_conf;
    struct ev_timer kp_check;
    struct health *health;     /* checks of kernel services' endpoints */
    struct ev_timer khealth;   /* a checked endpoint went up or down */
    struct table *kfed;     /* the table whose kernel services nft wants */
    struct smap kidx;       /* "name/proto" -> 1 + index in kfed */
    /* Indices in kfed of the kernel services the engine refused, tried
     * again at each table (nft_svc_check(): a bad address, or one
     * another Service holds until it lets go). */
    size_t *krefused;
    size_t nkrefused;
    struct ev_timer kretry; /* a failed transaction, retried whole */
    double kretry_s;        /* its back-off */
    struct ev_timer kverify; /* someone else edited or flushed the table */
    double kfailing;        /* first failed transaction since a success */
    double kresync_at;      /* next full rewrite (hourly, as kube-proxy) */
};

/* How often the kernel's table is compared with what ferry wrote, and the
 * back-off of a failed transaction. */
#define KUBE_NFT_VERIFY_S    10.0
#define KUBE_NFT_VERIFY_SHARE 20.0 /* interval >= this x the check's time */
#define KUBE_NFT_RETRY_MIN_S 1.0
#define KUBE_NFT_RETRY_MAX_S 30.0
#define KUBE_NFT_RESYNC_S    3600.0
#define KUBE_KP_CHECK_S      2.0

/* kube-proxy fails /healthz when a change waits longer than twice its
 * sync period (2 x 30 s). */
#define KUBE_STALE_AFTER_S 60.0

int
kube_wanted(const struct conf *c, const struct kube_flags *f)
{
    return c->kube.enabled || f->kubeconfig != NULL || f->api_server != NULL;
}

static const char *
opt(const char *flag, const char *conf)
{
    if (flag != NULL && flag[0] != '\0')
        return flag;
    return conf[0] != '\0' ? conf : NULL;
}

/* This node's name: flag, config, $NODE_NAME (the downward API), then the
 * host name, as kube-proxy does. */
static int
node_name(const struct conf *c, const struct kube_flags *f, char *out,
          size_t outlen)
{
    const char *n = opt(f->node_name, c->kube.node_name);

    if (n == NULL)
        n = getenv("NODE_NAME");
    if (n != NULL && n[0] != '\0') {
        /* Node names are DNS subdomains: at most 253 characters. */
        if (strlen(n) >= outlen)
            return -1;
        memcpy(out, n, strlen(n) + 1);
        return 0;
    }
    if (gethostname(out, outlen) < 0 || out[0] == '\0')
        return -1;
    out[outlen - 1] = '\0';
    return 0;
}

static int
is_nodeport_addr(const struct saddr *nodeport, size_t n_nodeport,
                 const struct saddr *a)
{
    size_t i;

    for (i = 0; i < n_nodeport; i++) {
        struct saddr x = nodeport[i];
        saddr_set_port(&x, saddr_port(a));
        if (saddr_cmp(&x, a) == 0)
            return 1;
    }
    return 0;
}

static int
is_oom(const struct err *e)
{
    return strcmp(e->msg, "out of memory") == 0;
}

/* With <want_vips>, the addresses of <s> that are to be local. A
 * redirected service's connections come through the kernel: its
 * addresses stay off the node. Returns -1 only when memory runs out. */
static int
add_vips(struct table *t, const struct tbl_service *s,
         const struct saddr *nodeport, size_t n_nodeport, int want_vips,
         struct err *e)
{
    size_t j;

    for (j = 0; want_vips && s->reach != TBL_REACH_REDIRECT && j < s->nfrontends;
         j++)
        if (!is_nodeport_addr(nodeport, n_nodeport, &s->frontends[j])
            && table_add_vip(t, &s->frontends[j], e) < 0)
            return err_set(e, "out of memory");
    return 0;
}

/* Add one API service to <t>, or note why not. Returns -1 only when
 * memory runs out. */
static int
merge_api(struct table *t, const struct tbl_service *s,
          const struct saddr *nodeport, size_t n_nodeport, int want_vips,
          struct skip_set *refused, struct err *e)
{
    struct skip_note n;

    err_clear(e);
    if (table_add_service(t, s, e) < 0) {
        if (is_oom(e))
            return -1;
        n.kind = SKIP_KIND_SERVICE;
        n.reason = SKIP_CONFLICT;
        n.obj = s->name;
        n.what = e->msg;
        if (refused != NULL && skip_set_add(refused, &n) < 0)
            return err_set(e, "out of memory");
        err_clear(e);
        return 0;
    }
    return add_vips(t, s, nodeport, n_nodeport, want_vips, e);
}

/* A new table with room for the services of <statics> and <api> and
 * <ndispatch> dispatch services, or NULL with <e>. */
static struct table *
merge_new(const struct table *statics, const struct table *api,
          size_t ndispatch, struct err *e)
{
    struct table *t = table_new();

    if (t == NULL
        || table_reserve(t, (statics != NULL ? statics->nservices : 0)
                                + (api != NULL ? api->nservices : 0)
                                + ndispatch)
               < 0) {
        table_unref(t);
        err_set(e, "out of memory");
        return NULL;
    }
    return t;
}

/* Nothing but the API's services and the <ndispatch> of <dispatch>: the
 * API's table copied whole into the empty <t> (the translator let none of
 * its services conflict with another), then <dispatch>. Returns 0, 1 when
 * an API service holds a dispatch address, -1 when memory runs out. */
static int
merge_copy(struct table *t, const struct table *api,
           const struct saddr *nodeport, size_t n_nodeport, int want_vips,
           const struct tbl_service *dispatch, size_t ndispatch,
           struct err *e)
{
    size_t i;

    if (table_add_services_of(t, api, e) < 0)
        return -1;
    err_clear(e);
    for (i = 0; i < ndispatch; i++)
        if (table_add_service(t, &dispatch[i], e) < 0) {
            if (is_oom(e))
                return -1;
            err_clear(e);
            return 1;
        }
    for (i = 0; i < api->nservices; i++)
        if (add_vips(t, table_service(api, i), nodeport, n_nodeport, want_vips, e)
            < 0)
            return -1;
    return 0;
}

struct table *
kube_merge(const struct table *statics, const struct table *api,
           const struct saddr *nodeport, size_t n_nodeport, int want_vips,
           const struct tbl_service *dispatch, size_t ndispatch,
           uint64_t generation, struct skip_set *refused, struct err *e)
{
    struct table *t = merge_new(statics, api, ndispatch, e);
    size_t i;
    int rc;

    if (t == NULL)
        return NULL;
    if ((statics == NULL
         || (statics->nservices == 0 && statics->nlisteners == 0))
        && api != NULL) {
        rc = merge_copy(t, api, nodeport, n_nodeport, want_vips, dispatch,
                        ndispatch, e);
        if (rc < 0)
            goto fail;
        if (rc == 0)
            goto done;
        /* An API service holds the dispatch address: one service at a
         * time, the dispatch service first (that one is left out). */
        table_unref(t);
        if ((t = merge_new(statics, api, ndispatch, e)) == NULL)
            return NULL;
    }
    /* The file's table was built by the same rules: only memory fails. */
    for (i = 0; statics != NULL && i < statics->nlisteners; i++)
        if (table_add_listener(t, &statics->listeners[i], e) < 0)
            goto fail;
    for (i = 0; statics != NULL && i < statics->nservices; i++)
        if (table_add_service(t, table_service(statics, i), e) < 0)
            goto fail;
    for (i = 0; i < ndispatch; i++)
        if (merge_api(t, &dispatch[i], NULL, 0, 0, refused, e) < 0)
            goto fail;
    for (i = 0; api != NULL && i < api->nservices; i++)
        if (merge_api(t, table_service(api, i), nodeport, n_nodeport, want_vips,
                      refused, e)
            < 0)
            goto fail;
done:
    /* Status pages list the kernel's services beside the proxy's. */
    if (ndispatch > 0 && api != NULL && api->nksvcs > 0)
        t->kernel = table_ref((struct table *)api);
    table_freeze(t, generation);
    return t;
fail:
    table_unref(t);
    return NULL;
}

/* An API service a file service keeps out: counted and logged when it
 * starts being left out. */
static void
kube_on_conflict(void *arg, const struct skip_note *n)
{
    struct kube *k = arg;

    k->n_conflicts++;
    skip_log(&k->skip_log, ev_now(k->loop), "kubernetes", n);
}

/* The port the kernel redirects a Service with ClientIP affinity to: the
 * one next to node.proxy_port. */
static uint16_t
affinity_port(const struct kube *k)
{
    return k->proxy_port < 65535 ? (uint16_t)(k->proxy_port + 1)
                                 : (uint16_t)(k->proxy_port - 1);
}

static uint32_t
svc_affinity(const struct tbl_service *s)
{
    return s->reach == TBL_REACH_REDIRECT ? s->affinity_timeout_ms : 0;
}

/* The longest ClientIP affinity of the API table's REDIRECT services:
 * from the table before's and the services that changed, when the API
 * table was made from it and none of them held the longest. */
static uint32_t
redirect_affinity(struct kube *k)
{
    const struct table *api = k->api, *old = k->old_api;
    uint32_t aff = k->aff_max;
    size_t i;

    if (api == NULL)
        return 0;
    if (k->aff_api == api->serial)
        return aff;
    if (old != NULL && k->aff_api == old->serial && api->base == old->serial
        && api->nservices == old->nservices) {
        for (i = 0; i < api->ndsvcs; i++) {
            size_t j = api->dsvcs[i];
            uint32_t was = svc_affinity(table_service(old, j));
            uint32_t now = svc_affinity(table_service(api, j));
            if (was == aff && now < aff && aff > 0)
                break; /* the longest may be gone: look at all */
            if (now > aff)
                aff = now;
        }
        if (i == api->ndsvcs)
            goto out;
    }
    for (aff = 0, i = 0; i < api->nservices; i++)
        if (svc_affinity(table_service(api, i)) > aff)
            aff = svc_affinity(table_service(api, i));
out:
    k->aff_max = aff;
    k->aff_api = api->serial;
    return aff;
}

/* Under the nftables dataplane (or the proxy's redirect steering), the
 * proxy's listening addresses (per family) for the connections the kernel
 * redirects, into <d> (room for two): one on node.proxy_port, which every
 * worker serves, and, while a redirected service has ClientIP affinity,
 * one on affinity_port() for those, which worker 0 alone serves (an
 * affinity table is not shared between threads; the longest of their
 * timeouts makes it so). Returns how many. */
static size_t
dispatch_services(struct kube *k, struct tbl_service d[2])
{
    static struct saddr fe[2][2];
    const char *why;
    uint32_t aff = 0;
    size_t i, n;

    if (!k->want_nft)
        return 0;
    aff = redirect_affinity(k);
    n = aff > 0 ? 2 : 1;
    for (i = 0; i < n; i++) {
        uint16_t port = i == 0 ? k->proxy_port : affinity_port(k);
        memset(&d[i], 0, sizeof(d[i]));
        d[i].name = i == 0 ? KUBE_DISPATCH_NAME : KUBE_DISPATCH_AFFINITY_NAME;
        d[i].origin = TBL_ORIGIN_API;
        d[i].reach = TBL_REACH_DISPATCH;
        parse_ip("0.0.0.0", port, &fe[i][0], &why);
        parse_ip("::", port, &fe[i][1], &why);
        d[i].frontends = fe[i];
        d[i].nfrontends = 2;
        d[i].affinity_timeout_ms = i == 0 ? 0 : aff;
    }
    return n;
}

/* The merged table made from the last one: the API table is the one it
 * was made from with some services changed in place, and the dispatch
 * services are the same. NULL when it cannot be. */
static struct table *
merge_delta(struct kube *k, const struct tbl_service *disp, size_t ndisp)
{
    const struct table *api = k->api, *prev = k->merged;
    struct table *t;
    struct err e;
    size_t i;

    if (prev == NULL || !k->merged_copy || api->base == 0
        || (k->statics != NULL
            && (k->statics->nservices != 0 || k->statics->nlisteners != 0))
        || api->base != k->merged_api
        || prev->nservices != api->nservices + ndisp)
        return NULL;
    for (i = 0; i < ndisp; i++)
        if (!tbl_service_equal(table_service(prev, api->nservices + i),
                               &disp[i]))
            return NULL;
    if ((t = table_derive(prev)) == NULL)
        return NULL;
    for (i = 0; i < api->ndsvcs; i++) {
        size_t j = api->dsvcs[i];
        err_clear(&e);
        if (table_replace_service(t, j, table_service(api, j), &e) < 0) {
            table_unref(t);
            return NULL;
        }
    }
    table_unref(t->kernel);
    t->kernel = ndisp > 0 && api->nksvcs > 0 ? table_ref(k->api) : NULL;
    table_freeze(t, ++*k->generation);
    return t;
}

/* One table from the file's services and the API's. */
static struct table *
merge(struct kube *k)
{
    struct tbl_service disp[2];
    struct skip_set *refused;
    size_t ndisp = dispatch_services(k, disp);
    struct table *t;
    struct err e;

    if (k->api != NULL && (t = merge_delta(k, disp, ndisp)) != NULL)
        return t;
    refused = skip_set_new();
    err_clear(&e);
    t = refused == NULL
            ? NULL
            : kube_merge(k->statics, k->api, k->nodeport, k->n_nodeport,
                         k->vip != NULL, disp, ndisp, ++*k->generation,
                         refused, &e);
    if (t == NULL) {
        log_error("kubernetes: cannot merge the file's services with the "
                  "API's: %s",
                  refused == NULL ? "out of memory" : e.msg);
        skip_set_free(refused);
        return NULL;
    }
    skip_set_each_new(refused, k->conflicts, kube_on_conflict, k);
    skip_set_free(k->conflicts);
    k->conflicts = refused;
    /* Copied whole: the API's services first, then the dispatch ones. */
    k->merged_copy = k->api != NULL
                     && (k->statics == NULL
                         || (k->statics->nservices == 0
                             && k->statics->nlisteners == 0))
                     && t->nservices == k->api->nservices + ndisp
                     && (ndisp == 0
                         || strcmp(table_service(t, k->api->nservices)->name,
                                   disp[0].name)
                                == 0);
    return t;
}

/* ---- kernel dataplane --------------------------------------------------- */

_Static_assert((int)NFT_TCP == (int)TBL_PROTO_TCP
                   && (int)NFT_UDP == (int)TBL_PROTO_UDP
                   && (int)NFT_SCTP == (int)TBL_PROTO_SCTP,
               "one protocol numbering");

static void
ksvc_key(const struct tbl_ksvc *ks, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/%s", ks->name, tbl_proto_names[ks->proto]);
}

/* Nonzero unless active checks found the endpoint at <a> down. */
static int
ep_healthy(const struct saddr *a)
{
    struct backend *b = backend_get(a);
    int ok = b == NULL || backend_healthy(b);

    backend_unref(b);
    return ok;
}

/* The endpoints of <be> (<n>) as the engine's, into <out> (room for n),
 * without those checks found down when <checked>. Returns how many. */
static size_t
to_eps(const struct tbl_backend *be, size_t n, int checked,
       struct nft_ep *out)
{
    size_t i, k = 0;

    for (i = 0; i < n; i++) {
        if (checked && !ep_healthy(&be[i].addr))
            continue;
        out[k].addr = be[i].addr;
        out[k].weight = be[i].weight;
        out[k].remote = (be[i].flags & TBL_BE_REMOTE) != 0;
        k++;
    }
    return k;
}

/* Want <ks> in the kernel. A refusal (a frontend another Service holds,
 * a cap, an endpoint the kernel cannot send to) goes into <refused>
 * (NULL: a first try, said nowhere); the Service is then not served by
 * the kernel. Returns 0, or -1 when not put. */
static int
nft_put_ksvc(struct kube *k, const struct tbl_ksvc *ks,
             struct skip_set *refused)
{
    struct nft_ep *eps = calloc(ks->ncluster_eps + ks->nlocal_eps + 1,
                                sizeof(*eps));
    struct nft_svc s;
    struct err e;
    int n, checked;

    if (eps == NULL) {
        log_error("nftables: %s: out of memory", ks->name);
        return -1;
    }
    memset(&s, 0, sizeof(s));
    s.id = ks->name;
    if (strlen(ks->name) >= NFT_ID_MAX) {
        log_warn("nftables: %s: name too long for the kernel table",
                 ks->name);
        free(eps);
        return -1;
    }
    s.proto = (enum nft_proto)ks->proto;
    s.port = ks->port;
    s.node_port = ks->node_port;
    s.cluster_ips = ks->cluster_ips;
    s.ncluster_ips = ks->ncluster_ips;
    s.external_ips = ks->external_ips;
    s.nexternal_ips = ks->nexternal_ips;
    s.lb_ips = ks->lb_ips;
    s.nlb_ips = ks->nlb_ips;
    s.source_ranges = ks->source_ranges;
    s.nsource_ranges = ks->nsource_ranges;
    s.affinity_s = ks->affinity_s;
    s.external_local = ks->external_local;
    s.redirect_port = ks->redirect == TBL_REDIRECT_AFFINITY ? affinity_port(k)
                      : ks->redirect                        ? k->proxy_port
                                                            : 0;
    checked = k->health != NULL && ks->check.type != TBL_CHECK_NONE;
    s.cluster_eps = eps;
    s.ncluster_eps = to_eps(ks->cluster_eps, ks->ncluster_eps, checked, eps);
    s.local_eps = eps + s.ncluster_eps;
    s.nlocal_eps = to_eps(ks->local_eps, ks->nlocal_eps, checked, s.local_eps);
    err_clear(&e);
    n = nft_svc_put(k->nft, &s, &e);
    if (n < 0) {
        struct skip_note note = {SKIP_KIND_SERVICE, SKIP_CONFLICT, ks->name,
                                 e.msg};
        if (refused != NULL && skip_set_add(refused, &note) < 0)
            skip_log(&k->skip_log, ev_now(k->loop), "nftables", &note);
        /* Not served: take out what an earlier version left wanted. */
        (void)nft_svc_del(k->nft, ks->name, s.proto);
    }
    free(eps);
    return n < 0 ? -1 : 0;
}

/* The engine's counters to the metrics. */
static void
kube_nft_stats(struct kube *k)
{
    struct nft_stats st;

    nft_get_stats(k->nft, &st);
    atomic_store(&stats_proc.nft_services, st.services);
    atomic_store(&stats_proc.nft_transactions, st.transactions);
    atomic_store(&stats_proc.nft_failures, st.failures);
    atomic_store(&stats_proc.nft_restores, st.restores);
    atomic_store(&stats_proc.nft_ct_deleted, st.ct_deleted);
}

static void
kube_nft_schedule_retry(struct kube *k)
{
    k->kretry_s = k->kretry_s <= 0 ? KUBE_NFT_RETRY_MIN_S
                                   : k->kretry_s * 2 > KUBE_NFT_RETRY_MAX_S
                                         ? KUBE_NFT_RETRY_MAX_S
                                         : k->kretry_s * 2;
    ev_timer_stop(k->loop, &k->kretry);
    ev_timer_set(&k->kretry, k->kretry_s, 0.);
    ev_timer_start(k->loop, &k->kretry);
}

/* Write what is pending in one transaction. */
static void
kube_nft_commit(struct kube *k)
{
    struct err e;
    double t0 = ev_time();
    int rc;

    if (ev_now(k->loop) >= k->kresync_at) {
        nft_resync(k->nft);
        k->kresync_at = ev_now(k->loop) + KUBE_NFT_RESYNC_S;
    }
    if (!nft_pending(k->nft)) {
        kube_nft_stats(k);
        ctrace_committed(ev_time()); /* nothing the kernel lacks */
        return;
    }
    err_clear(&e);
    rc = nft_apply(k->nft, &e);
    kube_nft_stats(k);
    if (rc < 0) {
        log_error("nftables: transaction failed, retrying in %.0f s: %s",
                  k->kretry_s <= 0 ? KUBE_NFT_RETRY_MIN_S : k->kretry_s * 2,
                  e.msg);
        if (k->kfailing <= 0)
            k->kfailing = ev_time();
        kube_nft_schedule_retry(k);
        return;
    }
    log_debug("nftables: table in force in %.1f ms",
              (ev_time() - t0) * 1e3);
    k->kfailing = 0;
    k->kretry_s = 0;
    ev_timer_stop(k->loop, &k->kretry);
    ctrace_committed(ev_time());
}

static void
kube_on_kretry(struct ev_loop *loop, struct ev_timer *t, int rev)
{
    (void)loop;
    (void)rev;
    kube_nft_commit(t->data);
}

static void
kube_on_kverify(struct ev_loop *loop, struct ev_timer *t, int rev)
{
    struct kube *k = t->data;
    double t0 = ev_time(), every;
    struct err e;

    (void)rev;
    if (k->kfed == NULL || k->kfailing > 0)
        return; /* nothing committed yet, or a retry is on its way */
    err_clear(&e);
    if (nft_verify(k->nft, &e) < 0)
        log_error("nftables: cannot check the table: %s", e.msg);
    /* At scale the check lists tens of thousands of chains, seconds of
     * the control loop's time during which API events wait: it gets at
     * most a twentieth of that time. */
    every = (ev_time() - t0) * KUBE_NFT_VERIFY_SHARE;
    if (every < KUBE_NFT_VERIFY_S)
        every = KUBE_NFT_VERIFY_S;
    if (every > 1.5 * t->repeat || every < t->repeat / 1.5) {
        if (every > t->repeat)
            log_info("nftables: checking the table took %.1f s: checking "
                     "it every %.0f s",
                     every / KUBE_NFT_VERIFY_SHARE, every);
        t->repeat = every;
        ev_timer_again(loop, t);
    }
    kube_nft_commit(k); /* what verify left pending, or the hourly rewrite */
}

/* Tell the checkers which endpoints of the kernel services to check;
 * <old>: the table fed before, when k->kfed was made from it. */
static void
kube_health_targets(struct kube *k, const struct table *old)
{
    struct health_target *t = NULL;
    size_t i, j, n = 0, cap = 0;

    if (k->health == NULL)
        return;
    if (k->kchecked == 0 && k->kfed != NULL && old != NULL
        && k->kfed->base == old->serial) {
        /* None was checked: only the changed ones may be now. */
        for (i = 0; i < k->kfed->ndksvcs; i++)
            if (table_ksvc(k->kfed, k->kfed->dksvcs[i])->check.type
                != TBL_CHECK_NONE)
                break;
        if (i == k->kfed->ndksvcs)
            return;
    }
    k->kchecked = 0;
    for (i = 0; k->kfed != NULL && i < k->kfed->nksvcs; i++) {
        const struct tbl_ksvc *ks = table_ksvc(k->kfed, i);
        size_t nall = ks->ncluster_eps + ks->nlocal_eps;
        if (ks->check.type == TBL_CHECK_NONE)
            continue;
        k->kchecked++;
        for (j = 0; j < nall; j++) {
            const struct tbl_backend *be = j < ks->ncluster_eps
                                               ? &ks->cluster_eps[j]
                                               : &ks->local_eps[j - ks->ncluster_eps];
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                struct health_target *nt = realloc(t, ncap * sizeof(*t));
                if (nt == NULL)
                    goto out;
                t = nt;
                cap = ncap;
            }
            if ((t[n].b = backend_get(&be->addr)) == NULL)
                goto out;
            t[n].spec = ks->check;
            snprintf(t[n].svc, sizeof(t[n].svc), "%s", ks->name);
            snprintf(t[n].name, sizeof(t[n].name), "%s", be->name);
            n++;
        }
    }
    health_set_targets(k->health, t, n);
out:
    if (i < (k->kfed != NULL ? k->kfed->nksvcs : 0)) {
        log_error("health: out of memory for the kernel services' checks");
        k->kchecked = 1; /* the next table looks at every one again */
    }
    for (j = 0; j < n; j++)
        backend_unref(t[j].b);
    free(t);
}

/* A checked endpoint went up or down: the kernel services with checks
 * are put again (each put filters its endpoints by their health), in one
 * transaction after the current loop iteration. */
static void
kube_on_health_change(void *arg)
{
    struct kube *k = arg;

    if (!ev_is_active(&k->khealth))
        ev_timer_start(k->loop, &k->khealth);
}

/* A kernel service the engine starts refusing: said once, while it
 * stays refused for the same reason. */
static void
kube_on_nft_refused(void *arg, const struct skip_note *n)
{
    struct kube *k = arg;

    skip_log(&k->skip_log, ev_now(k->loop), "nftables", n);
}

static void
kube_on_khealth(struct ev_loop *loop, struct ev_timer *t, int rev)
{
    struct kube *k = t->data;
    struct skip_set *said;
    size_t i;

    (void)loop;
    (void)rev;
    if (k->nft == NULL || k->kfed == NULL)
        return;
    said = skip_set_new();
    for (i = 0; i < k->kfed->nksvcs; i++)
        if (table_ksvc(k->kfed, i)->check.type != TBL_CHECK_NONE)
            nft_put_ksvc(k, table_ksvc(k->kfed, i), said);
    if (said != NULL)
        skip_set_each_new(said, k->nft_refused, kube_on_nft_refused, k);
    skip_set_free(said);
    kube_nft_commit(k);
}

void
kube_set_health(struct kube *k, struct health *h)
{
    if (k->health != NULL) {
        health_on_change(k->health, NULL, NULL);
        health_set_targets(k->health, NULL, 0);
    }
    k->health = h;
    ev_timer_init(&k->khealth, kube_on_khealth, 0., 0.);
    k->khealth.data = k;
    if (h != NULL)
        health_on_change(h, kube_on_health_change, k);
}

/* Nonzero when index <i> of the table fed was refused by the engine. */
static int
kfed_refused(const struct kube *k, size_t i)
{
    size_t j;

    for (j = 0; j < k->nkrefused; j++)
        if (k->krefused[j] == i)
            return 1;
    return 0;
}

/* The quick way for kube_feed_nft(), when <api>'s kernel services are
 * those of the last table fed, by name and in the same order (as after
 * changes to endpoints): only those that differ are put, then those the
 * engine refused last time are tried again (a put may have freed the
 * address one wanted), and the index stays. A Service refused for good
 * (the API server's own endpoint on loopback, in a simulated cluster)
 * thus costs one put a table, not the whole way (a lookup of every
 * kernel service by name: a third of ferry's CPU per change at 10,000).
 * Returns 0, or -1 when the whole way must run (a put refused is put
 * again there). */
static int
kube_feed_same(struct kube *k, const struct table *api)
{
    const struct table *old = k->kfed;
    size_t i, n = 0;

    if (old == NULL || old->nksvcs != api->nksvcs)
        return -1;
    if (api->base == old->serial) {
        /* Made from the table fed: only the kernel services it says. */
        for (i = 0; i < api->ndksvcs; i++) {
            const struct tbl_ksvc *ks = table_ksvc(api, api->dksvcs[i]);
            if (!tbl_ksvc_equal(table_ksvc(old, api->dksvcs[i]), ks)
                && nft_put_ksvc(k, ks, NULL) < 0
                && !kfed_refused(k, api->dksvcs[i]))
                return -1;
        }
    } else {
        for (i = 0; i < api->nksvcs; i++)
            if (table_ksvc(api, i)->proto != table_ksvc(old, i)->proto
                || strcmp(table_ksvc(api, i)->name, table_ksvc(old, i)->name)
                       != 0)
                return -1;
        for (i = 0; i < api->nksvcs; i++)
            if (!tbl_ksvc_equal(table_ksvc(old, i), table_ksvc(api, i))
                && nft_put_ksvc(k, table_ksvc(api, i), NULL) < 0
                && !kfed_refused(k, i))
                return -1;
    }
    for (i = 0; i < k->nkrefused; i++)
        if (nft_put_ksvc(k, table_ksvc(api, k->krefused[i]), NULL) < 0)
            k->krefused[n++] = k->krefused[i];
    k->nkrefused = n;
    return 0;
}

/* Make the engine want the kernel services of <api>: only those that
 * changed since the last table are put, those gone are deleted. */
static void
kube_feed_nft(struct kube *k, struct table *api)
{
    struct smap idx = {0};
    char key[TBL_NAME_MAX + 16];
    size_t i, nrefused = 0, nleft = 0, *refused = NULL;
    struct skip_set *said = skip_set_new();

    if (kube_feed_same(k, api) == 0) {
        struct table *was = k->kfed;
        skip_set_free(said);
        k->kfed = table_ref(api);
        kube_health_targets(k, was);
        table_unref(was);
        kube_nft_commit(k);
        return;
    }

    for (i = 0; i < api->nksvcs; i++) {
        const struct tbl_ksvc *ks = table_ksvc(api, i);
        uintptr_t old;

        ksvc_key(ks, key, sizeof(key));
        if (smap_put(&idx, key, (void *)(uintptr_t)(i + 1)) < 0)
            goto oom;
        old = (uintptr_t)smap_get(&k->kidx, key);
        if (old != 0 && tbl_ksvc_equal(table_ksvc(k->kfed, old - 1), ks))
            continue;
        if (nft_put_ksvc(k, ks, NULL) == 0)
            continue;
        /* Refused (an address another Service holds): tried again once
         * the Services gone are deleted, and not counted as fed, so
         * that the next table tries it too. */
        if (refused == NULL
            && (refused = calloc(api->nksvcs, sizeof(*refused))) == NULL)
            goto oom;
        refused[nrefused++] = i;
        smap_del(&idx, key);
    }
    for (i = 0; k->kfed != NULL && i < k->kfed->nksvcs; i++) {
        const struct tbl_ksvc *ks = table_ksvc(k->kfed, i);
        ksvc_key(ks, key, sizeof(key));
        if (smap_get(&idx, key) == NULL)
            (void)nft_svc_del(k->nft, ks->name, (enum nft_proto)ks->proto);
    }
    for (i = 0; i < nrefused; i++) {
        const struct tbl_ksvc *ks = table_ksvc(api, refused[i]);
        if (nft_put_ksvc(k, ks, said) < 0) {
            refused[nleft++] = refused[i];
            continue;
        }
        ksvc_key(ks, key, sizeof(key));
        if (smap_put(&idx, key, (void *)(uintptr_t)(refused[i] + 1)) < 0)
            goto oom;
    }
    free(k->krefused);
    k->krefused = refused;
    k->nkrefused = nleft;
    if (said != NULL) {
        skip_set_each_new(said, k->nft_refused, kube_on_nft_refused, k);
        skip_set_free(k->nft_refused);
        k->nft_refused = said;
    }
    smap_deinit(&k->kidx);
    k->kidx = idx;
    table_unref(k->kfed);
    k->kfed = table_ref(api);
    kube_health_targets(k, NULL);
    kube_nft_commit(k);
    return;
oom:
    /* Feed everything again next time, from scratch. */
    log_error("nftables: out of memory; the kernel keeps the last table");
    free(refused);
    skip_set_free(said);
    smap_deinit(&idx);
    smap_deinit(&k->kidx);
    table_unref(k->kfed);
    k->kfed = NULL;
    free(k->krefused);
    k->krefused = NULL;
    k->nkrefused = 0;
}

/* Start the engine unless kube-proxy still programs the node. Returns 0
 * when started, 1 when kube-proxy is there (logged), -1 with <e>. */
static int
kube_nft_try(struct kube *k, struct err *e)
{
    char why[512];
    int rc = nft_kube_proxy_found(why, sizeof(why), e);

    if (rc < 0)
        return -1;
    if (rc > 0) {
        err_set(e, "kube-proxy is programming this node (%s)", why);
        if (!ev_is_active(&k->kp_check) && !k->steer)
            log_error("kubernetes: kube-proxy is programming this node (%s): "
                      "ferry will not add its own rules beside them; stop "
                      "kube-proxy and remove its rules (kube-proxy "
                      "--cleanup), or set node.dataplane: proxy. Checking "
                      "again every %.0f s",
                      why, KUBE_KP_CHECK_S);
        return 1;
    }
    k->nft = nft_new(&k->nft_conf, e);
    if (k->nft == NULL)
        return -1;
    ev_timer_start(k->loop, &k->kverify);
    k->kresync_at = ev_now(k->loop) + KUBE_NFT_RESYNC_S;
    if (k->steer)
        log_info("kubernetes: the kernel (table inet " NFT_TABLE ") "
                 "redirects Services' TCP ports to the proxy on port %u "
                 "(node.proxy_steering); UDP ports listen on their addresses",
                 (unsigned)k->proxy_port);
    else
        log_info("kubernetes: Services are carried by the kernel (table inet "
                 NFT_TABLE "), except those annotated ferry.dev/dataplane: "
                 "proxy");
    return 0;
}

static void
kube_on_kp_check(struct ev_loop *loop, struct ev_timer *t, int rev)
{
    struct kube *k = t->data;
    struct err e;
    int rc;

    (void)loop;
    (void)rev;
    err_clear(&e);
    rc = kube_nft_try(k, &e);
    if (rc == 1)
        return;
    ev_timer_stop(k->loop, &k->kp_check);
    if (rc < 0) {
        log_error("kubernetes: the kernel dataplane cannot start: %s", e.msg);
        return;
    }
    log_info("kubernetes: kube-proxy's rules are gone: programming the node");
    if (k->api != NULL)
        kube_feed_nft(k, k->api);
}

/* Nonzero when the process may program nftables (CAP_NET_ADMIN in its
 * effective set), or when it cannot tell. */
static int
may_net_admin(void)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

    if (syscall(SYS_capget, &h, d) < 0)
        return 1;
    return (d[CAP_TO_INDEX(CAP_NET_ADMIN)].effective
            & CAP_TO_MASK(CAP_NET_ADMIN))
           != 0;
}

/* Under node.dataplane proxy, nftables cannot be used (<e> says why):
 * with redirect steering ferry refuses to start; with auto it listens on
 * every Service address, as with listen. */
static int
kube_steer_fallback(struct kube *k, const struct conf *c, struct err *e)
{
    char why[ERR_MSG_MAX];

    snprintf(why, sizeof(why), "%s", e->msg);
    if (c->node.proxy_steering == CONF_STEER_REDIRECT)
        return err_set(e, "node.proxy_steering: redirect: nftables cannot "
                          "be used: %s",
                       why);
    log_info("kubernetes: the proxy listens on every Service address "
             "(node.proxy_steering: auto): nftables cannot be used: %s",
             why);
    err_clear(e);
    k->steer = 0;
    k->want_nft = 0;
    return 0;
}

static int
kube_start_nft(struct kube *k, const struct conf *c, struct err *e)
{
    static const enum nft_masq masq[] = {
        [CONF_MASQ_AUTO] = NFT_MASQ_CIDR,
        [CONF_MASQ_ALL] = NFT_MASQ_ALL,
        [CONF_MASQ_NONE] = NFT_MASQ_NONE,
    };
    struct nft_conf *nc = &k->nft_conf;
    int rc;

    if (c->kube.mode != CONF_KUBE_NODE)
        return 0;
    if (c->node.dataplane == CONF_DATAPLANE_PROXY) {
        if (c->node.proxy_steering == CONF_STEER_LISTEN)
            return 0;
        k->steer = 1;
    }
    memset(nc, 0, sizeof(*nc));
    nc->masq = masq[c->node.masquerade];
    memcpy(nc->cluster_cidrs, c->node.cluster_cidrs,
           c->node.n_cluster_cidrs * sizeof(struct cidr));
    nc->ncluster_cidrs = c->node.n_cluster_cidrs;
    memcpy(nc->service_cidrs, c->node.service_cidrs,
           c->node.n_service_cidrs * sizeof(struct cidr));
    nc->nservice_cidrs = c->node.n_service_cidrs;
    if (c->node.n_nodeport_addrs > NFT_IPS_MAX) {
        err_set(e, "node.node_port_addresses: at most %d with the "
                   "nftables dataplane",
                NFT_IPS_MAX);
        return k->steer ? kube_steer_fallback(k, c, e) : -1;
    }
    if (c->node.n_nodeport_addrs > 0)
        memcpy(nc->nodeport_addrs, c->node.nodeport_addrs,
               c->node.n_nodeport_addrs * sizeof(struct saddr));
    nc->nnodeport_addrs = c->node.n_nodeport_addrs;
    k->proxy_port = c->node.proxy_port;
    nc->redirect_ports[0] = k->proxy_port;
    nc->redirect_ports[1] = affinity_port(k);
    if (nft_conf_check(nc, e) < 0)
        return k->steer ? kube_steer_fallback(k, c, e) : -1;
    if (k->steer && !may_net_admin()) {
        err_set(e, "no CAP_NET_ADMIN");
        return kube_steer_fallback(k, c, e);
    }
    k->want_nft = 1;
    ev_timer_init(&k->kretry, kube_on_kretry, 1., 0.);
    k->kretry.data = k;
    ev_timer_init(&k->kverify, kube_on_kverify, KUBE_NFT_VERIFY_S,
                  KUBE_NFT_VERIFY_S);
    k->kverify.data = k;
    ev_timer_init(&k->kp_check, kube_on_kp_check, KUBE_KP_CHECK_S,
                  KUBE_KP_CHECK_S);
    k->kp_check.data = k;
    rc = kube_nft_try(k, e);
    if (k->steer && rc != 0)
        return kube_steer_fallback(k, c, e);
    if (rc == 1)
        ev_timer_start(k->loop, &k->kp_check);
    return rc < 0 ? -1 : 0;
}

static void
kube_apply(struct kube *k)
{
    struct table *t;
    struct err e;
    double posted;

    if (k->api == NULL)
        return; /* static stability: nothing from the API before a sync */
    t = merge(k);
    if (t == NULL)
        return;
    table_unref(k->merged);
    k->merged = table_ref(t);
    k->merged_api = k->api->serial;
    err_clear(&e);
    posted = ev_time();
    if (proxy_apply(k->p, t, PROXY_APPLY_SKIP_FAILING, &e) < 0) {
        log_error("kubernetes: table not applied: %s", e.msg);
        if (k->apply_failing <= 0)
            k->apply_failing = ev_time();
    } else {
        k->applied = 1;
        k->apply_failing = 0;
        k->last_applied = ev_time();
        if (k->vip != NULL) {
            vip_set(k->vip, t->vips, t->nvips);
            if (k->vip_pending <= 0)
                k->vip_pending = k->last_applied;
        }
    }
    ctrace_posted(k->api->generation, t->generation, posted,
                  k->apply_failing <= 0, k->nft != NULL);
    if (k->nft != NULL)
        kube_feed_nft(k, k->api);
    if (k->nh != NULL)
        nodehealth_set_table(k->nh, k->api, k->nodeport, k->n_nodeport);
    table_unref(t);
}

/* Before the first full sync ferry serves the file's services alone, as
 * at start: a reload changes them at once (the API's join at the sync).
 * Service addresses and health ports wait for the sync, so that what an
 * earlier process left on the node is not taken away meanwhile. */
static void
kube_apply_statics(struct kube *k)
{
    struct table *t = merge(k);
    struct err e;

    if (t == NULL)
        return;
    err_clear(&e);
    if (proxy_apply(k->p, t, PROXY_APPLY_SKIP_FAILING, &e) < 0)
        log_error("kubernetes: the file's services not applied: %s", e.msg);
    table_unref(t);
}

static double
earliest(double a, double b)
{
    if (a <= 0)
        return b;
    return b <= 0 || a < b ? a : b;
}

/* What kube-proxy's health endpoints report. A change is pending from
 * the watcher's receiving it until the table is in force and its service
 * IPs are on the interface. */
static void
kube_health_state(void *arg, struct nodehealth_state *out)
{
    struct kube *k = arg;
    struct watcher_status st;
    double pending;

    watcher_status(k->watcher, &st);
    if (k->vip != NULL && vip_in_sync(k->vip))
        k->vip_pending = 0;
    /* The watcher reports loop times; the health view is wall clock. */
    pending = st.pending_since > 0
                  ? ev_time() - (ev_now(k->loop) - st.pending_since)
                  : 0;
    /* Not ready while kube-proxy keeps the kernel dataplane out. */
    out->synced = k->applied && (!k->want_nft || k->nft != NULL);
    out->shutting_down = proxy_draining(k->p);
    out->node_deleting = st.node_deleting;
    out->pending_since =
        earliest(earliest(earliest(pending, k->apply_failing), k->vip_pending),
                 k->kfailing);
    out->last_applied = k->last_applied;
}

/* The watcher's counts of skipped API objects, plus the API services a
 * file service keeps out, to the process counters (the metrics). */
static void
feed_skips(const struct kube *k, const struct watcher_status *st)
{
    size_t i, j;

    for (i = 0; i < SKIP_KIND__COUNT; i++)
        for (j = 0; j < SKIP__COUNT; j++) {
            uint64_t n = st->skipped[i][j];
            if (i == SKIP_KIND_SERVICE && j == SKIP_CONFLICT)
                n += k->n_conflicts;
            if (n > 0)
                stats_api_skipped(skip_kind_text[i], skip_reason_text[j], n);
        }
}

/* Watch restarts and relists happen without a new table (a resumed
 * watch, a relist that changed nothing), so they are copied on a timer
 * rather than at publication. */
static void
kube_on_counters(struct ev_loop *loop, struct ev_timer *t, int rev)
{
    struct kube *k = t->data;
    struct watcher_status st;

    (void)loop;
    (void)rev;
    watcher_status(k->watcher, &st);
    for (; k->relists < st.relists; k->relists++)
        stats_watch_relist();
    for (; k->restarts < st.watch_restarts; k->restarts++)
        stats_watch_restart();
    atomic_store(&stats_proc.translated, st.translated);
    atomic_store(&stats_proc.patched, st.patched);
    atomic_store(&stats_proc.api_cpu_ns, st.api_cpu_ns);
    atomic_store(&stats_proc.table_cpu_ns, st.table_cpu_ns);
    atomic_store(&stats_proc.nomem_api, st.nomem_api);
    atomic_store(&stats_proc.nomem_tables, st.nomem_builds);
    feed_skips(k, &st);
}

/* A sync ended: the watcher's build is in force now, unless the proxy
 * or the kernel refused it. Measured as kube-proxy measures it: from
 * the start of translation, and network programming from each changed
 * EndpointSlice's trigger time, on success only. */
static void
feed_metrics(struct kube *k)
{
    struct watcher_build b;
    double now = ev_time(), dur;
    int ok = k->apply_failing <= 0 && k->kfailing <= 0;
    size_t i;

    watcher_current_build(k->watcher, &b);
    dur = b.started > 0 && now > b.started ? now - b.started : 0;
    stats_sync_done(dur, ok ? now : 0);
    if (k->kpm != NULL)
        kpm_sync(k->kpm, dur, ok ? now : 0);
    for (i = 0; ok && i < b.ntriggers; i++) {
        stats_network_programming(now - b.triggers[i]);
        if (k->kpm != NULL)
            kpm_programming(k->kpm, now - b.triggers[i]);
    }
    kube_on_counters(k->loop, &k->counters, 0);
}

/* The build matched the table in force: a sync with nothing to do. */
static void kube_trim_soon(struct kube *k);

static void
kube_on_unchanged(void *arg)
{
    struct kube *k = arg;

    feed_metrics(k);
    /* A table built whole and found equal to the last (a relist) freed
     * as much as a new one: give it back as after a new one. */
    kube_trim_soon(k);
}

static void
kube_kpm_state(void *arg, struct kpm_state *out)
{
    struct kube *k = arg;
    struct watcher_status st;
    struct nodehealth_counts hc;

    watcher_status(k->watcher, &st);
    /* Loop time, as wall clock (see kube_health_state). */
    out->last_queued = st.last_change > 0
                           ? ev_time() - (ev_now(k->loop) - st.last_change)
                           : 0;
    out->endpoint_changes = st.endpoint_changes;
    out->service_changes = st.service_changes;
    out->endpoint_pending = st.endpoint_pending;
    out->service_pending = st.service_pending;
    out->no_local_internal = st.no_local_internal;
    out->no_local_external = st.no_local_external;
    if (k->nh != NULL) {
        nodehealth_counts(k->nh, &hc);
        memcpy(out->healthz, hc.healthz, sizeof(out->healthz));
        memcpy(out->livez, hc.livez, sizeof(out->livez));
    }
}

/* Before the first sync the API server's certificate did not verify:
 * waiting would only hide a wrong CA, so ferry stops (exit status 1). */
static void
kube_on_untrusted(void *arg, const char *why)
{
    struct kube *k = arg;

    log_error("kubernetes: refusing to start: the API server's TLS "
              "certificate does not verify (%s); give ferry the cluster's "
              "CA (certificate-authority in the kubeconfig, ca.crt in the "
              "service-account directory) or, for a test cluster only, "
              "set insecure-skip-tls-verify",
              why);
    k->refused = 1;
    ev_break(k->loop, EVBREAK_ALL);
}

/* Tables and a large Service's runtime state are replaced whole at each
 * change, and glibc keeps what they freed in its heap, fragmented (one
 * Service of 100,000 endpoints: 128 MiB at the first table, 227 MiB
 * during changes). Once changes pause for a second, its free pages go
 * back to the kernel; changes that never pause (a rolling update of a
 * large cluster) give them back every TRIM_LATEST seconds: at 10,000
 * Services of 25 endpoints and 20 changes a second, the heap held 15 MB
 * more than it used until the churn stopped. A trim there takes 1 to 2
 * ms (10 ms after the first table). Fixing glibc's mmap threshold instead (so that large
 * arrays are mapped and unmapped) kept it at 161 MiB, but made every
 * table's large arrays fresh pages: tables took two to three times
 * longer at 10,000 Services and at 100,000 endpoints. */
#define TRIM_LATEST 5.0

static void
kube_on_trim(struct ev_loop *loop, struct ev_timer *t, int rev)
{
    struct kube *k = t->data;

    (void)rev;
    /* Once per pause, or per TRIM_LATEST. */
    ev_timer_stop(loop, &k->trim);
    ev_timer_stop(loop, &k->trim_due);
    malloc_trim(0);
}

/* Trim a second after the last table, or TRIM_LATEST after the first of
 * a run that leaves no such pause. */
static void
kube_trim_soon(struct kube *k)
{
    ev_timer_again(k->loop, &k->trim);
    if (!ev_is_active(&k->trim_due)) {
        ev_timer_set(&k->trim_due, TRIM_LATEST, 0.0);
        ev_timer_start(k->loop, &k->trim_due);
    }
}

static void
kube_on_publish(struct table *t, void *arg)
{
    struct kube *k = arg;
    int first = k->api == NULL;

    k->old_api = k->api;
    k->api = t;
    if (first)
        log_info("kubernetes: first full sync: %zu service(s) from the API",
                 t->nservices);
    kube_apply(k);
    table_unref(k->old_api);
    k->old_api = NULL;
    feed_metrics(k);
    kube_trim_soon(k);
}

int
kube_synced(void *arg)
{
    const struct kube *k = arg;

    return k->api != NULL;
}

double
kube_api_failing_for(void *arg, double now)
{
    const struct kube *k = arg;
    struct watcher_status st;

    watcher_status(k->watcher, &st);
    if (st.api_healthy || st.failing_since <= 0)
        return 0;
    return now - st.failing_since;
}

static int
kube_start_vip(struct kube *k, const struct conf *c, struct err *e)
{
    const char *ifname = c->node.vip_interface;

    /* An edge balancer receives its LoadBalancer IPs either because the
     * network routes them to it (vip_interface: none) or because it holds
     * them on an interface, like a node. */
    if (strcmp(ifname, "none") == 0) {
        log_info("kubernetes: service addresses are not managed "
                 "(vip_interface: none)");
        return 0;
    }
    k->vip = vip_new(k->loop, ifname, e);
    return k->vip != NULL ? 0 : -1;
}

/* The health endpoints are optional: a port taken is logged, not fatal
 * (as for the admin server). */
static void
kube_start_health(struct kube *k, const struct conf *c)
{
    struct err e;

    k->nh = nodehealth_new(k->loop, kube_health_state, k, KUBE_STALE_AFTER_S);
    if (k->nh == NULL) {
        log_error("kubernetes: out of memory for the health endpoints");
        return;
    }
    err_clear(&e);
    if (c->node.healthz_listen.u.sa.sa_family != 0
        && nodehealth_listen(k->nh, &c->node.healthz_listen, &e) < 0)
        log_warn("kubernetes: no /healthz, /livez, /readyz: %s", e.msg);
    if (c->kube.mode != CONF_KUBE_NODE
        || c->node.metrics_listen.u.sa.sa_family == 0)
        return;
    k->kpm = kpm_new(k->loop, kube_kpm_state, k);
    err_clear(&e);
    if (k->kpm == NULL)
        log_error("kubernetes: out of memory for kube-proxy's metrics");
    else if (kpm_listen(k->kpm, &c->node.metrics_listen, &e) < 0)
        log_warn("kubernetes: no kube-proxy metrics: %s", e.msg);
}

static int
kube_copy_nodeports(struct kube *k, const struct conf *c)
{
    static const char *const any[] = {"0.0.0.0"};
    const char *why;
    size_t n = c->node.n_nodeport_addrs;

    if (c->kube.mode == CONF_KUBE_EDGE)
        return 0;
    k->nodeport = calloc(n > 0 ? n : 1, sizeof(*k->nodeport));
    if (k->nodeport == NULL)
        return -1;
    if (n > 0) {
        memcpy(k->nodeport, c->node.nodeport_addrs, n * sizeof(*k->nodeport));
        k->n_nodeport = n;
    } else {
        /* kube-proxy's default: NodePorts on every address of the node. */
        parse_ip(any[0], 0, &k->nodeport[0], &why);
        k->n_nodeport = 1;
    }
    return 0;
}

struct kube *
kube_new(struct ev_loop *loop, struct proxy *p, const struct conf *c,
         const struct kube_flags *f, uint64_t *generation, struct err *e)
{
    struct watcher_conf wc;
    char node[256];
    struct kube *k = calloc(1, sizeof(*k));

    if (k == NULL) {
        err_set(e, "out of memory");
        return NULL;
    }
    k->loop = loop;
    k->p = p;
    k->generation = generation;
    k->statics = table_ref(c->table);
    memset(&wc, 0, sizeof(wc));
    wc.kubeconfig = opt(f->kubeconfig, c->kube.kubeconfig);
    wc.api_server = opt(f->api_server, c->kube.api_server);
    wc.sa_dir = c->kube.sa_dir;
    wc.service_proxy_name = opt(NULL, c->kube.service_proxy_name);
    wc.label_selector = opt(NULL, c->kube.service_selector);
    wc.insecure_skip_tls_verify = c->kube.insecure_skip_tls_verify;
    wc.edge = c->kube.mode == CONF_KUBE_EDGE;
    if (wc.edge && c->kube.edge_backends == CONF_EDGE_NODEPORTS) {
        wc.edge_nodes = c->kube.edge_nodes;
        wc.n_edge_nodes = c->kube.n_edge_nodes;
    }
    wc.policy = &c->defaults;
    if (kube_copy_nodeports(k, c) < 0) {
        err_set(e, "out of memory");
        goto fail;
    }
    wc.node_addrs = k->nodeport;
    wc.n_node_addrs = k->n_nodeport;
    if (!wc.edge) {
        if (node_name(c, f, node, sizeof(node)) < 0) {
            err_set(e, "kubernetes: no node name (set kubernetes.node_name, "
                       "--node-name or NODE_NAME)");
            goto fail;
        }
        wc.node_name = node;
    }
    if (kube_start_nft(k, c, e) < 0 || kube_start_vip(k, c, e) < 0)
        goto fail;
    wc.kernel = k->want_nft && !k->steer;
    wc.redirect = k->steer;
    kube_start_health(k, c);
    wc.on_untrusted = kube_on_untrusted;
    wc.on_unchanged = kube_on_unchanged;
    k->watcher = watcher_new(loop, &wc, kube_on_publish, k, e);
    if (k->watcher == NULL)
        goto fail;
    ev_timer_init(&k->counters, kube_on_counters, 1.0, 1.0);
    k->counters.data = k;
    ev_timer_start(loop, &k->counters);
    ev_init(&k->trim, kube_on_trim);
    k->trim.repeat = 1.0;
    k->trim.data = k;
    ev_timer_init(&k->trim_due, kube_on_trim, TRIM_LATEST, 0.0);
    k->trim_due.data = k;
    log_info("kubernetes: %s mode%s%s, waiting for the first full sync",
             wc.edge ? "edge" : "node", wc.edge ? "" : " on node ",
             wc.edge ? "" : node);
    return k;
fail:
    kube_free(k);
    return NULL;
}

int
kube_refused(const struct kube *k)
{
    return k != NULL && k->refused;
}

void
kube_reconfigure(struct kube *k, const struct conf *c)
{
    table_unref(k->statics);
    k->statics = table_ref(c->table);
    k->merged_copy = 0; /* a reload: the next merge is made whole */
    if (k->api == NULL) {
        kube_apply_statics(k);
        return;
    }
    kube_apply(k);
}

void
kube_free(struct kube *k)
{
    if (k == NULL)
        return;
    if (k->loop != NULL) {
        ev_timer_stop(k->loop, &k->counters);
        ev_timer_stop(k->loop, &k->trim);
        ev_timer_stop(k->loop, &k->trim_due);
        ev_timer_stop(k->loop, &k->kretry);
        ev_timer_stop(k->loop, &k->kverify);
        ev_timer_stop(k->loop, &k->kp_check);
        ev_timer_stop(k->loop, &k->khealth);
        kube_set_health(k, NULL);
    }
    /* The kernel's rules stay: a restart adopts them; `ferry cleanup`
     * removes them. */
    nft_free(k->nft);
    table_unref(k->kfed);
    smap_deinit(&k->kidx);
    free(k->krefused);
    kpm_free(k->kpm);
    nodehealth_free(k->nh);
    watcher_free(k->watcher);
    vip_free(k->vip);
    table_unref(k->statics);
    table_unref(k->api);
    table_unref(k->merged);
    skip_set_free(k->conflicts);
    skip_set_free(k->nft_refused);
    free(k->nodeport);
    free(k);
}
