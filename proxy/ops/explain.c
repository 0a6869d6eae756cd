#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "explain.h"
#include "health.h"
#include "proxy.h"
#include "svc.h"

/* Same family and IP, ports aside. */
static int
same_ip(const struct saddr *a, const struct saddr *b)
{
    struct saddr x = *a, y = *b;

    saddr_set_port(&x, 0);
    saddr_set_port(&y, 0);
    return saddr_cmp(&x, &y) == 0;
}

static int
fe_matches(const struct saddr *fe, const struct saddr *q)
{
    if (saddr_cmp(fe, q) == 0)
        return 1;
    return saddr_is_any(fe) && saddr_port(fe) == saddr_port(q)
           && fe->u.sa.sa_family == q->u.sa.sa_family;
}

long
explain_find_service(const struct table *t, const struct explain_req *q)
{
    size_t i, j;

    for (i = 0; t != NULL && i < t->nservices; i++) {
        const struct tbl_service *ts = table_service(t, i);
        if (ts->proto != q->proto || ts->reach == TBL_REACH_DISPATCH)
            continue;
        for (j = 0; j < ts->nfrontends; j++)
            if (fe_matches(&ts->frontends[j], &q->addr))
                return (long)i;
    }
    return -1;
}

static int
ip_in(const struct saddr *v, size_t n, const struct saddr *a)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (same_ip(&v[i], a))
            return 1;
    return 0;
}

/* The kind of frontend <q> is of kernel service <k>, or NULL when it is
 * not one. */
static const char *
ksvc_kind(const struct tbl_ksvc *k, const struct saddr *q)
{
    uint16_t port = saddr_port(q);

    if (port == k->port && ip_in(k->cluster_ips, k->ncluster_ips, q))
        return "ClusterIP";
    if (port == k->port && ip_in(k->external_ips, k->nexternal_ips, q))
        return "externalIP";
    if (port == k->port && ip_in(k->lb_ips, k->nlb_ips, q))
        return "LoadBalancer IP";
    if (k->node_port != 0 && port == k->node_port)
        return "NodePort";
    return NULL;
}

static const struct tbl_ksvc *
find_ksvc(const struct table *t, const struct explain_req *q, const char **kind)
{
    size_t i;

    for (i = 0; t != NULL && t->kernel != NULL && i < t->kernel->nksvcs; i++) {
        const struct tbl_ksvc *k = table_ksvc(t->kernel, i);
        if (k->proto == q->proto && (*kind = ksvc_kind(k, &q->addr)) != NULL)
            return k;
    }
    return NULL;
}

/* "ns/name:port[/suffix]" into its parts, for Kubernetes services. */
static void
set_k8s_names(json_t *o, const char *full)
{
    char buf[TBL_NAME_MAX], *slash, *colon, *suffix;

    snprintf(buf, sizeof(buf), "%s", full);
    if ((slash = strchr(buf, '/')) == NULL
        || (colon = strchr(slash, ':')) == NULL)
        return;
    *slash = '\0';
    *colon = '\0';
    if ((suffix = strchr(colon + 1, '/')) != NULL)
        *suffix = '\0';
    json_object_set_new(o, "namespace", json_string(buf));
    json_object_set_new(o, "service", json_string(slash + 1));
    json_object_set_new(o, "port_name", json_string(colon + 1));
}

/* Nonzero when a frontend of <ts> has the port of <q>. */
static int
has_port(const struct tbl_service *ts, const struct saddr *q)
{
    size_t j;

    for (j = 0; j < ts->nfrontends; j++)
        if (saddr_port(&ts->frontends[j]) == saddr_port(q))
            return 1;
    return 0;
}

/* A proxy service's frontend kind, from what the translator names: the
 * kernel service of the same address when there is one; else
 * "ns/name:port" holds the ClusterIPs (and, under one traffic policy, the
 * external addresses too), "/external" the externalIPs, LoadBalancer IPs
 * and NodePorts, "/lb" LoadBalancer IPs with source ranges. A NodePort is
 * the one whose port is not the Service port the ClusterIPs listen on. */
static const char *
proxy_kind(const struct table *t, const struct tbl_service *ts,
           const struct explain_req *q)
{
    const struct tbl_service *in;
    const char *kind = NULL, *sfx;
    char base[TBL_NAME_MAX];

    if (ts->origin == TBL_ORIGIN_FILE)
        return "file listener";
    if (find_ksvc(t, q, &kind) != NULL)
        return kind;
    sfx = strrchr(ts->name, '/');
    if (sfx == NULL || strchr(ts->name, '/') == sfx) /* no suffix */
        return "ClusterIP, or an address sharing its endpoints";
    if (strcmp(sfx, "/lb") == 0)
        return "LoadBalancer IP";
    snprintf(base, sizeof(base), "%.*s", (int)(sfx - ts->name), ts->name);
    in = table_find(t, base);
    if (in != NULL && !has_port(in, &q->addr))
        return "NodePort";
    return "externalIP or LoadBalancer IP";
}

/* Backend <i>'s verdict: NULL when it may take new connections, else
 * why not, into <buf>. */
static const char *
be_excluded(struct svc *s, size_t i, struct health *h, double now, char *buf,
            size_t len)
{
    const struct backend *b = svc_backend(s, i);
    struct health_info hi;
    double until;

    if (svc_backend_weight(s, i) == 0) {
        snprintf(buf, len, "weight 0%s",
                 svc_backend_config_weight(s, i) != 0 ? " (admin override)"
                                                      : "");
        return buf;
    }
    if (svc_backend_drained(s, i))
        return "drained by the admin API";
    if (!backend_healthy(b)) {
        health_info(h, b, &hi);
        snprintf(buf, len, "health check down%s%s",
                 hi.cause[0] != '\0' ? ": " : "", hi.cause);
        return buf;
    }
    if (backend_ejected(b, now)) {
        until = backend_eject_until(b);
        snprintf(buf, len,
                 "ejected (passive back-off after %u failed connects) "
                 "for %.1f s more; tried only if every backend is",
                 backend_fails(b), until - now);
        return buf;
    }
    return NULL;
}

/* The endpoints the translator left out, after the backends: they are
 * none of the data plane's. */
static void
add_excluded(json_t *v, const struct tbl_excluded *xs, size_t n)
{
    char ab[SADDR_STR_MAX];
    size_t i;

    for (i = 0; i < n; i++) {
        const struct tbl_excluded *x = &xs[i];
        json_array_append_new(
            v, json_pack("{s:s, s:s, s:i, s:s, s:s}", "name", x->name,
                         "address", saddr_str(&x->addr, ab, sizeof(ab)),
                         "weight", 0, "verdict", "excluded", "reason",
                         x->reason < TBL_EXCL__COUNT ? tbl_excl_text[x->reason]
                                                     : "?"));
    }
}

static json_t *
proxy_backends(const struct tbl_service *ts, struct svc *s, struct health *h,
               double now)
{
    json_t *v = json_array();
    size_t i;

    for (i = 0; i < svc_nbackends(s); i++) {
        const struct backend *b = svc_backend(s, i);
        char ab[SADDR_STR_MAX];
        uint32_t fl = svc_backend_flags(s, i);
        char buf[256];
        const char *why = be_excluded(s, i, h, now, buf, sizeof(buf));
        json_t *o = json_object();

        json_object_set_new(o, "name", json_string(svc_backend_name(s, i)));
        json_object_set_new(o, "address", json_string(backend_addr(b, ab)));
        json_object_set_new(o, "weight",
                            json_integer(svc_backend_weight(s, i)));
        json_object_set_new(o, "verdict",
                            json_string(why ? "excluded" : "serving"));
        if (why != NULL)
            json_object_set_new(o, "reason", json_string(why));
        else if (fl & TBL_BE_TERMINATING)
            json_object_set_new(
                o, "note",
                json_string("terminating: serves because no endpoint is "
                            "ready"));
        json_array_append_new(v, o);
    }
    add_excluded(v, ts->excluded, ts->nexcluded);
    return v;
}

static json_t *
proxy_next(struct svc *s, const struct explain_req *q, double now)
{
    int pinned = 0;
    int i = svc_peek(s, q->has_from ? &q->from : NULL, now, &pinned);
    const struct tbl_service *ts = svc_spec(s);
    json_t *o = json_object();
    char ab[SADDR_STR_MAX];

    if (i >= 0) {
        json_object_set_new(o, "backend", json_string(svc_backend_name(s, i)));
        json_object_set_new(
            o, "address",
            json_string(backend_addr(svc_backend(s, (size_t)i), ab)));
        json_object_set_new(o, "pinned", json_boolean(pinned));
    } else {
        json_object_set_new(o, "backend", json_null());
    }
    if (i == SVC_PEEK_NONE)
        json_object_set_new(o, "note",
                            json_string("no backend may take a connection: "
                                        "it would be refused"));
    else if (i == SVC_PEEK_UNKNOWN)
        json_object_set_new(o, "note",
                            json_string("the balancer draws at random: any "
                                        "serving backend"));
    else if (!q->has_from
             && (ts->balance == TBL_BAL_MAGLEV || ts->affinity_timeout_ms > 0))
        json_object_set_new(o, "note",
                            json_string("depends on the client: give --from"));
    return o;
}

static json_t *
explain_proxy(struct proxy *p, struct health *h, size_t i,
              const struct explain_req *q, double now)
{
    const struct table *t = proxy_table(p);
    const struct tbl_service *ts = table_service(t, i);
    struct svc *s = proxy_svc(p, i);
    json_t *o = json_object();

    json_object_set_new(o, "name", json_string(ts->name));
    json_object_set_new(
        o, "origin",
        json_string(ts->origin == TBL_ORIGIN_FILE ? "file" : "api"));
    if (ts->origin == TBL_ORIGIN_API)
        set_k8s_names(o, ts->name);
    json_object_set_new(o, "dataplane",
                        json_string(ts->reach == TBL_REACH_REDIRECT
                                        ? "proxy (redirected by the kernel)"
                                        : "proxy"));
    json_object_set_new(o, "frontend_kind", json_string(proxy_kind(t, ts, q)));
    json_object_set_new(o, "balance", json_string(svc_balance_name(s)));
    json_object_set_new(o, "affinity_seconds",
                        json_integer(ts->affinity_timeout_ms / 1000));
    json_object_set_new(o, "backends", proxy_backends(ts, s, h, now));
    json_object_set_new(o, "next", proxy_next(s, q, now));
    return o;
}

static json_t *
explain_kernel(const struct tbl_ksvc *k, const char *kind, struct health *h)
{
    int external = strcmp(kind, "ClusterIP") != 0;
    int local = external && k->external_local;
    const struct tbl_backend *eps = local ? k->local_eps : k->cluster_eps;
    size_t n = local ? k->nlocal_eps : k->ncluster_eps, i, down = 0;
    json_t *o = json_object(), *v = json_array(), *nx = json_object();
    char buf[SADDR_STR_MAX];

    json_object_set_new(o, "name", json_string(k->name));
    json_object_set_new(o, "origin", json_string("api"));
    set_k8s_names(o, k->name);
    json_object_set_new(o, "dataplane", json_string("kernel (nftables)"));
    json_object_set_new(o, "frontend_kind", json_string(kind));
    json_object_set_new(o, "endpoint_set",
                        json_string(local ? "local (externalTrafficPolicy: "
                                            "Local)"
                                          : "cluster"));
    for (i = 0; i < n; i++) {
        /* The kernel's rules leave out what active checks hold down
         * (node/kube.c): the same test here. */
        struct backend *b = backend_get(&eps[i].addr);
        json_t *e = json_pack("{s:s, s:s, s:i, s:s}", "name", eps[i].name,
                              "address",
                              saddr_str(&eps[i].addr, buf, sizeof(buf)),
                              "weight", 1, "verdict", "serving");
        if (b != NULL && !backend_healthy(b)) {
            struct health_info hi;
            char why[256];
            health_info(h, b, &hi);
            snprintf(why, sizeof(why), "health check down%s%s",
                     hi.cause[0] != '\0' ? ": " : "", hi.cause);
            json_object_set_new(e, "verdict", json_string("excluded"));
            json_object_set_new(e, "reason", json_string(why));
            json_object_set_new(e, "weight", json_integer(0));
            down++;
        }
        backend_unref(b);
        json_array_append_new(v, e);
    }
    add_excluded(v, local ? k->local_excluded : k->cluster_excluded,
                 local ? k->nlocal_excluded : k->ncluster_excluded);
    json_object_set_new(o, "backends", v);
    json_object_set_new(nx, "backend", json_null());
    json_object_set_new(
        nx, "note",
        json_string(n == down
                        ? "no endpoint: the kernel refuses the connection"
                        : "the kernel picks at random among the serving "
                          "endpoints"));
    json_object_set_new(o, "next", nx);
    return o;
}

/* Frontends sharing <q>'s IP or port, for an address no service owns. */
static json_t *
nearest(const struct table *t, const struct explain_req *q)
{
    json_t *v = json_array();
    char buf[SADDR_STR_MAX];
    size_t i, j;

    for (i = 0; t != NULL && i < t->nservices && json_array_size(v) < 8; i++) {
        const struct tbl_service *ts = table_service(t, i);
        if (ts->reach == TBL_REACH_DISPATCH)
            continue;
        for (j = 0; j < ts->nfrontends && json_array_size(v) < 8; j++) {
            const struct saddr *fe = &ts->frontends[j];
            const char *how;
            if (same_ip(fe, &q->addr) && ts->proto == q->proto)
                how = "same address, other port";
            else if (saddr_port(fe) == saddr_port(&q->addr))
                how = ts->proto == q->proto ? "same port, other address"
                                            : "other protocol";
            else
                continue;
            json_array_append_new(
                v, json_pack("{s:s, s:s, s:s, s:s}", "service", ts->name,
                             "frontend", saddr_str(fe, buf, sizeof(buf)),
                             "protocol", tbl_proto_names[ts->proto], "match",
                             how));
        }
    }
    return v;
}

json_t *
explain_json(struct proxy *p, struct health *h, const struct explain_req *q,
             double now)
{
    const struct table *t = proxy_table(p);
    const struct tbl_ksvc *k;
    const char *kind = NULL;
    char buf[SADDR_STR_MAX];
    json_t *o = json_object();
    long i;

    json_object_set_new(o, "address",
                        json_string(saddr_str(&q->addr, buf, sizeof(buf))));
    json_object_set_new(o, "protocol", json_string(tbl_proto_names[q->proto]));
    json_object_set_new(
        o, "from",
        q->has_from ? json_string(saddr_ip_str(&q->from, buf, sizeof(buf)))
                    : json_null());
    json_object_set_new(
        o, "generation",
        json_integer(t != NULL ? (json_int_t)t->generation : 0));
    if ((i = explain_find_service(t, q)) >= 0)
        json_object_set_new(o, "service",
                            explain_proxy(p, h, (size_t)i, q, now));
    else if ((k = find_ksvc(t, q, &kind)) != NULL && !k->redirect)
        json_object_set_new(o, "service", explain_kernel(k, kind, h));
    else
        json_object_set_new(o, "nearest", nearest(t, q));
    json_object_set_new(o, "found",
                        json_boolean(json_object_get(o, "service") != NULL));
    return o;
}
