/* Services + EndpointSlices -> service table, by kube-proxy's rules for
 * selecting endpoints. JSON fixtures use ' for " to stay legible. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "translate.h"

struct fx {
    struct kcache *svcs, *slices;
    struct translate_opts o;
    struct translate_stats st;
    struct saddr node[2];
    struct table *t;
    struct skip_set *skips; /* of the last build */
};

static void
put(struct kcache *c, const char *sq)
{
    char *s = strdup(sq), *p;
    json_error_t je;
    json_t *o;
    struct err e;

    for (p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    o = json_loads(s, 0, &je);
    if (o == NULL)
        fail_msg("fixture: %s: %s", je.text, sq);
    err_clear(&e);
    assert_int_equal(kcache_put(c, o, &e), 0);
    free(s);
}

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    const char *why;

    f->svcs = kcache_new("Service", 1);
    f->slices = kcache_new("EndpointSlice", 1);
    parse_ip("198.18.1.1", 0, &f->node[0], &why);
    parse_ip("198.18.1.2", 0, &f->node[1], &why);
    f->o.node_name = "node-a";
    f->o.node_zone = "z1";
    f->o.node_addrs = f->node;
    f->o.n_node_addrs = 2;
    f->o.stats = &f->st;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;

    kcache_free(f->svcs);
    kcache_free(f->slices);
    table_unref(f->t);
    skip_set_free(f->skips);
    free(f);
    return 0;
}

static void
build(struct fx *f)
{
    struct err e;

    table_unref(f->t);
    f->t = table_new();
    skip_set_free(f->skips);
    f->skips = skip_set_new();
    f->o.skips = f->skips;
    err_clear(&e);
    assert_int_equal(translate_build(f->svcs, f->slices, &f->o, f->t, &e), 0);
}

static void
add_note(void *arg, const struct skip_note *n)
{
    char *out = arg;
    size_t l = strlen(out);

    snprintf(out + l, 4096 - l, "%s%s %s %s: %s", l ? "\n" : "",
             skip_kind_text[n->kind], n->obj, skip_reason_text[n->reason],
             n->what);
}

/* Every skip of the last build, one per line (for failure messages). */
static const char *
notes(const struct fx *f)
{
    static char out[4096];

    out[0] = '\0';
    skip_set_each_new(f->skips, NULL, add_note, out);
    return out;
}

/* Skips of <kind> for <reason> in the last build. */
#define NSKIP(f, kind, reason)                                                 \
    skip_set_count((f)->skips, SKIP_KIND_##kind, SKIP_##reason)

/* The one skip note of the last build that mentions <text>. */
static void
assert_note(const struct fx *f, const char *text)
{
    const char *all = notes(f), *p = strstr(all, text);

    if (p == NULL)
        fail_msg("no skip note with \"%s\" in:\n%s", text, all);
    if (strstr(p + 1, text) != NULL)
        fail_msg("two skip notes with \"%s\" in:\n%s", text, all);
}

/* "name=flags" for each backend, comma separated; flags as letters
 * R(eady) S(erving) T(erminating) L(ocal). */
static const char *
bes(const struct tbl_service *s)
{
    static char out[1024];
    size_t i, n = 0;

    out[0] = '\0';
    for (i = 0; i < s->nbackends; i++) {
        const struct tbl_backend *b = &s->backends[i];
        char a[SADDR_STR_MAX];
        n += (size_t)snprintf(out + n, sizeof(out) - n, "%s%s@%s=%s%s%s%s",
                              i ? "," : "", b->name,
                              saddr_str(&b->addr, a, sizeof(a)),
                              b->flags & TBL_BE_READY ? "R" : "",
                              b->flags & TBL_BE_SERVING ? "S" : "",
                              b->flags & TBL_BE_TERMINATING ? "T" : "",
                              b->flags & TBL_BE_LOCAL ? "L" : "");
        assert_int_equal(b->weight, 1);
    }
    return out;
}

static const char *
fes(const struct tbl_service *s)
{
    static char out[1024];
    size_t i, n = 0;

    out[0] = '\0';
    for (i = 0; i < s->nfrontends; i++) {
        char a[SADDR_STR_MAX];
        n += (size_t)snprintf(out + n, sizeof(out) - n, "%s%s", i ? "," : "",
                              saddr_str(&s->frontends[i], a, sizeof(a)));
    }
    return out;
}

static const struct tbl_service *
get(struct fx *f, const char *name)
{
    const struct tbl_service *s = table_find(f->t, name);

    if (s == NULL)
        fail_msg("no service %s (have %zu)", name, f->t->nservices);
    /* /metrics tells the API's services from the file's by this. */
    assert_int_equal(s->origin, TBL_ORIGIN_API);
    return s;
}

#define WEB_SVC(spec_extra)                                                    \
    "{'metadata':{'namespace':'shop','name':'web'},'spec':{'type':"            \
    "'ClusterIP','clusterIP':'198.18.0.10','clusterIPs':['198.18.0.10'],"      \
    "'ports':[{'name':'http','protocol':'TCP','port':80}]" spec_extra "}}"

#define EP(ip, node, zone, cond)                                               \
    "{'addresses':['" ip "'],'nodeName':'" node "','zone':'" zone "',"         \
    "'targetRef':{'kind':'Pod','name':'pod-" ip "'}" cond "}"

#define READY ",'conditions':{'ready':true,'serving':true,'terminating':false}"
#define TERMINATING                                                            \
    ",'conditions':{'ready':false,'serving':true,'terminating':true}"
#define NOTREADY                                                               \
    ",'conditions':{'ready':false,'serving':false,'terminating':false}"

#define SLICE(name, svc, ports, eps)                                           \
    "{'metadata':{'namespace':'shop','name':'" name "','labels':{"             \
    "'kubernetes.io/service-name':'" svc "'}},'addressType':'IPv4',"           \
    "'ports':" ports ",'endpoints':" eps "}"

#define HTTP_8080 "[{'name':'http','protocol':'TCP','port':8080}]"

static void
test_basic(void **state)
{
    struct fx *f = *state;
    const struct tbl_service *s;
    struct tbl_service pol;

    memset(&pol, 0, sizeof(pol));
    pol.balance = TBL_BAL_LEASTCONN;
    pol.connect_timeout_ms = 1234;
    pol.retries = 2;
    f->o.policy = &pol;
    put(f->svcs, WEB_SVC(""));
    put(f->slices, SLICE("web-1", "web", HTTP_8080,
                         "[" EP("198.18.2.2", "node-b", "z2", READY) "," EP(
                             "198.18.2.1", "node-a", "z1", "") "]"));
    build(f);
    assert_int_equal(f->t->nservices, 1);
    s = get(f, "shop/web:http");
    assert_string_equal(fes(s), "198.18.0.10:80");
    assert_string_equal(bes(s), "pod-198.18.2.1@198.18.2.1:8080=RSL,"
                                "pod-198.18.2.2@198.18.2.2:8080=RS");
    assert_int_equal(s->balance, TBL_BAL_LEASTCONN);
    assert_int_equal(s->connect_timeout_ms, 1234);
    assert_int_equal(s->retries, 2);
    assert_int_equal(s->affinity_timeout_ms, 0);
    assert_int_equal(f->st.services, 1);
    assert_int_equal(f->st.emitted, 1);
}

static void
test_skipped_kinds(void **state)
{
    struct fx *f = *state;

    put(f->svcs, "{'metadata':{'namespace':'a','name':'headless'},'spec':{"
                 "'clusterIP':'None','ports':[{'port':80}]}}");
    put(f->svcs, "{'metadata':{'namespace':'a','name':'noip'},'spec':{"
                 "'ports':[{'port':80}]}}");
    put(f->svcs, "{'metadata':{'namespace':'a','name':'ext'},'spec':{"
                 "'type':'ExternalName','externalName':'example.org',"
                 "'ports':[{'port':80}]}}");
    put(f->svcs, "{'metadata':{'namespace':'a','name':'other','labels':{"
                 "'service.kubernetes.io/service-proxy-name':'other'}},"
                 "'spec':{'clusterIP':'198.18.0.1','ports':[{'port':80}]}}");
    put(f->svcs, "{'metadata':{'namespace':'a','name':'mine','labels':{"
                 "'service.kubernetes.io/service-proxy-name':'ferry'}},"
                 "'spec':{'clusterIP':'198.18.0.2','ports':[{'port':80}]}}");
    put(f->svcs, "{'metadata':{'namespace':'a','name':'plain'},"
                 "'spec':{'clusterIP':'198.18.0.3','ports':[{'port':80}]}}");
    build(f);
    assert_int_equal(f->t->nservices, 1);
    get(f, "a/plain:"); /* unnamed port: empty port name */
    assert_int_equal(f->st.skipped, 5);
    /* All quiet reasons: counted, logged at debug level only. */
    assert_int_equal(NSKIP(f, SERVICE, HEADLESS), 2);
    assert_int_equal(NSKIP(f, SERVICE, EXTERNAL_NAME), 1);
    assert_int_equal(NSKIP(f, SERVICE, OTHER_PROXY), 2);
    assert_int_equal(skip_set_size(f->skips), 5);
    assert_note(f, "Service a/ext external_name: type ExternalName");

    f->o.service_proxy_name = "ferry";
    build(f);
    assert_int_equal(f->t->nservices, 1);
    get(f, "a/mine:");
}

/* Where the proxy listens (node.dataplane: proxy, edge mode), a UDP
 * port is a UDP service beside the TCP one on the same address and
 * port; SCTP is skipped; and so is UDP the kernel would have to
 * redirect to the proxy. */
static void
test_udp_served_sctp_skipped(void **state)
{
    struct fx *f = *state;
    const struct tbl_service *u, *t;
    struct saddr a;
    const char *why;

    put(f->svcs, "{'metadata':{'namespace':'kube-system','name':'dns',"
                 "'annotations':{'ferry.dev/send-proxy':'v1'}},"
                 "'spec':{'clusterIP':'198.18.0.53','ports':["
                 "{'name':'dns','protocol':'UDP','port':53},"
                 "{'name':'dns-tcp','protocol':'TCP','port':53},"
                 "{'name':'x','protocol':'SCTP','port':99}]}}");
    build(f);
    assert_int_equal(f->t->nservices, 2);
    u = get(f, "kube-system/dns:dns");
    t = get(f, "kube-system/dns:dns-tcp");
    assert_int_equal(u->proto, TBL_PROTO_UDP);
    assert_int_equal(u->udp_idle_timeout_ms, TBL_UDP_IDLE_TIMEOUT_MS);
    assert_int_equal(u->max_flows, TBL_UDP_MAX_FLOWS);
    assert_int_equal(u->send_proxy, TBL_SEND_PROXY_NONE);
    assert_int_equal(t->proto, TBL_PROTO_TCP);
    assert_int_equal(t->send_proxy, TBL_SEND_PROXY_V1);
    assert_int_equal(parse_ip("198.18.0.53", 53, &a, &why), 0);
    assert_ptr_equal(table_find_frontend_proto(f->t, TBL_PROTO_UDP, &a), u);
    assert_ptr_equal(table_find_frontend(f->t, &a), t);
    assert_int_equal(f->st.ports_skipped, 1);
    assert_int_equal(NSKIP(f, SERVICE, UNSUPPORTED_PROTOCOL), 1);
    assert_note(f, "Service kube-system/dns unsupported_protocol: port "
                   "\"x\": the proxy serves no SCTP (the nftables "
                   "dataplane does)");
}

/* The kernel services of the last build, by name and protocol. */
static const struct tbl_ksvc *
kget(struct fx *f, const char *name, enum tbl_proto proto)
{
    size_t i;

    for (i = 0; i < f->t->nksvcs; i++)
        if (strcmp(table_ksvc(f->t, i)->name, name) == 0
            && table_ksvc(f->t, i)->proto == proto)
            return table_ksvc(f->t, i);
    fail_msg("no kernel service %s/%s (have %zu)", name,
             tbl_proto_names[proto], f->t->nksvcs);
    return NULL;
}

static const char *
ips(const struct saddr *v, size_t n)
{
    static char out[4][512];
    static int k;
    size_t i, len = 0;
    char a[SADDR_STR_MAX];

    k = (k + 1) % 4;
    out[k][0] = '\0';
    for (i = 0; i < n; i++) {
        assert_int_equal(saddr_port(&v[i]), 0);
        len += (size_t)snprintf(out[k] + len, sizeof(out[k]) - len, "%s%s",
                                i ? "," : "",
                                saddr_ip_str(&v[i], a, sizeof(a)));
    }
    return out[k];
}

static const char *
eps(const struct tbl_backend *b, size_t n)
{
    struct tbl_service s;

    memset(&s, 0, sizeof(s));
    s.backends = (struct tbl_backend *)b;
    s.nbackends = n;
    return bes(&s);
}

/* node.dataplane nftables: every protocol, addresses by kind, both
 * families' endpoints, both endpoint sets, nothing for the proxy. */
static void
test_kernel_services(void **state)
{
    struct fx *f = *state;
    const struct tbl_ksvc *k;

    f->o.kernel = 1;
    put(f->svcs,
        "{'metadata':{'namespace':'kube-system','name':'dns'},"
        "'spec':{'clusterIP':'198.18.0.53','clusterIPs':['198.18.0.53',"
        "'2001:2::53'],'ports':[{'name':'dns','protocol':'UDP','port':53},"
        "{'name':'dns-tcp','protocol':'TCP','port':53},"
        "{'protocol':'SCTP','port':99}]}}");
    put(f->slices,
        "{'metadata':{'namespace':'kube-system','name':'dns-4','labels':{"
        "'kubernetes.io/service-name':'dns'}},'addressType':'IPv4',"
        "'ports':[{'name':'dns','protocol':'UDP','port':5353},"
        "{'name':'dns-tcp','protocol':'TCP','port':5353}],"
        "'endpoints':[" EP("198.18.2.1", "node-a", "z1", READY) "]}");
    put(f->slices,
        "{'metadata':{'namespace':'kube-system','name':'dns-6','labels':{"
        "'kubernetes.io/service-name':'dns'}},'addressType':'IPv6',"
        "'ports':[{'name':'dns','protocol':'UDP','port':5353}],"
        "'endpoints':[{'addresses':['2001:2::2:1'],'nodeName':'node-b',"
        "'conditions':{'ready':true}}]}");
    put(f->svcs,
        "{'metadata':{'namespace':'shop','name':'web'},'spec':{'type':"
        "'LoadBalancer','clusterIP':'198.18.0.10','ports':[{'name':'http',"
        "'protocol':'TCP','port':80}],'externalIPs':['198.18.9.9'],"
        "'externalTrafficPolicy':'Local','healthCheckNodePort':32000,"
        "'loadBalancerSourceRanges':['198.18.0.1/8','bogus','2001:2::/48'],"
        "'sessionAffinity':'ClientIP'},'status':{'loadBalancer':{'ingress':"
        "[{'ip':'198.18.7.7'}]}}}");
    put(f->svcs,
        "{'metadata':{'namespace':'shop','name':'np'},'spec':{'type':"
        "'NodePort','clusterIP':'198.18.0.11','ports':[{'protocol':'TCP',"
        "'port':81,'nodePort':30081}]}}");
    put(f->slices, SLICE("web-1", "web", HTTP_8080,
                         "[" EP("198.18.2.1", "node-a", "z1", READY) ","
                         EP("198.18.2.2", "node-b", "z1", READY) "]"));
    build(f);
    assert_int_equal(f->t->nservices, 0);
    assert_int_equal(f->t->nksvcs, 5);
    assert_int_equal(f->st.kernel, 5);

    k = kget(f, "kube-system/dns:dns", TBL_PROTO_UDP);
    assert_int_equal(k->port, 53);
    assert_string_equal(ips(k->cluster_ips, k->ncluster_ips),
                        "198.18.0.53,2001:2::53");
    /* Each family's endpoints: the kernel sends each to its own. */
    assert_string_equal(eps(k->cluster_eps, k->ncluster_eps),
                        "pod-198.18.2.1@198.18.2.1:5353=RSL,"
                        "2001:2::2:1@[2001:2::2:1]:5353=RS");
    assert_int_equal(k->external_local, 0);
    k = kget(f, "kube-system/dns:dns-tcp", TBL_PROTO_TCP);
    assert_int_equal(k->ncluster_eps, 1);
    /* An unnamed port is named by its number. */
    k = kget(f, "kube-system/dns:99", TBL_PROTO_SCTP);
    assert_int_equal(k->ncluster_eps, 0);

    k = kget(f, "shop/web:http", TBL_PROTO_TCP);
    assert_string_equal(ips(k->external_ips, k->nexternal_ips), "198.18.9.9");
    assert_string_equal(ips(k->lb_ips, k->nlb_ips), "198.18.7.7");
    assert_int_equal(k->nsource_ranges, 2);
    /* Host bits cleared, as Kubernetes reads the field. */
    assert_string_equal(ips(&k->source_ranges[0].ip, 1), "198.0.0.0");
    assert_int_equal(k->source_ranges[0].prefix, 8);
    assert_note(f, "loadBalancerSourceRanges[1] \"bogus\"");
    assert_int_equal(k->affinity_s, TRANSLATE_AFFINITY_DEFAULT_S);
    assert_int_equal(k->external_local, 1);
    assert_int_equal(k->ncluster_eps, 2);
    assert_string_equal(eps(k->local_eps, k->nlocal_eps),
                        "pod-198.18.2.1@198.18.2.1:8080=RSL");
    assert_int_equal(k->hc_node_port, 32000);

    k = kget(f, "shop/np:81", TBL_PROTO_TCP);
    assert_int_equal(k->node_port, 30081);
    assert_int_equal(k->nexternal_ips + k->nlb_ips, 0);
}

/* ferry.dev/dataplane: proxy keeps a Service on the proxy; a bad value
 * is noted and the node's default kept; under node.dataplane proxy (and
 * in edge mode) the annotation changes nothing. */
static void
test_kernel_annotation(void **state)
{
    struct fx *f = *state;

    put(f->svcs,
        "{'metadata':{'namespace':'shop','name':'p','annotations':{"
        "'ferry.dev/dataplane':'proxy'}},'spec':{'clusterIP':'198.18.0.12',"
        "'ports':[{'name':'http','protocol':'TCP','port':80},"
        "{'name':'u','protocol':'UDP','port':53}]}}");
    put(f->svcs,
        "{'metadata':{'namespace':'shop','name':'k','annotations':{"
        "'ferry.dev/dataplane':'nftables'}},'spec':{'clusterIP':"
        "'198.18.0.13','ports':[{'name':'http','protocol':'TCP','port':80}]}}");
    put(f->svcs,
        "{'metadata':{'namespace':'shop','name':'b','annotations':{"
        "'ferry.dev/dataplane':'ebpf'}},'spec':{'clusterIP':'198.18.0.14',"
        "'ports':[{'name':'http','protocol':'TCP','port':80}]}}");
    f->o.kernel = 1;
    build(f);
    assert_int_equal(f->t->nservices, 1);
    /* The proxy serves it, reached by redirection: nothing to bind. */
    assert_int_equal(get(f, "shop/p:http")->reach, TBL_REACH_REDIRECT);
    assert_int_equal(NSKIP(f, SERVICE, UNSUPPORTED_PROTOCOL), 1);
    assert_int_equal(f->t->nksvcs, 3);
    assert_false(kget(f, "shop/k:http", TBL_PROTO_TCP)->redirect);
    assert_false(kget(f, "shop/b:http", TBL_PROTO_TCP)->redirect);
    /* The kernel's side of the proxied port: its addresses, redirected,
     * no endpoints (the proxy has them). */
    assert_int_equal(kget(f, "shop/p:http", TBL_PROTO_TCP)->redirect,
                     TBL_REDIRECT_PLAIN);
    assert_int_equal(kget(f, "shop/p:http", TBL_PROTO_TCP)->ncluster_eps, 0);
    assert_string_equal(ips(kget(f, "shop/p:http", TBL_PROTO_TCP)->cluster_ips,
                            1),
                        "198.18.0.12");
    assert_note(f, "Service shop/b bad_annotation: ferry.dev/dataplane "
                   "\"ebpf\"");

    assert_note(f, "Service shop/p unsupported_protocol: port \"u\": the "
                   "proxy serves UDP only where it listens");

    f->o.kernel = 0;
    build(f);
    assert_int_equal(f->t->nservices, 4); /* shop/p:u too */
    assert_int_equal(get(f, "shop/p:u")->proto, TBL_PROTO_UDP);
    assert_int_equal(f->t->nksvcs, 0);
    assert_int_equal(get(f, "shop/p:http")->reach, TBL_REACH_LISTEN);
    assert_int_equal(NSKIP(f, SERVICE, BAD_ANNOTATION), 0);
}

/* node.dataplane proxy with redirect steering: every TCP port is steered
 * as an annotated one under nftables (the proxy's service reached by
 * redirection, the kernel's side with its addresses and no endpoints),
 * whatever the annotation says; UDP ports listen; nothing is served by
 * the kernel itself. */
static void
test_redirect_steering(void **state)
{
    struct fx *f = *state;
    const struct tbl_ksvc *k;
    const struct tbl_service *s;

    put(f->svcs,
        "{'metadata':{'namespace':'shop','name':'web','annotations':{"
        "'ferry.dev/dataplane':'nftables'}},'spec':{'type':'LoadBalancer',"
        "'clusterIP':'198.18.0.10','ports':[{'name':'http','protocol':'TCP',"
        "'port':80,'nodePort':30080},{'name':'dns','protocol':'UDP',"
        "'port':53}],'externalIPs':['198.18.9.9'],"
        "'externalTrafficPolicy':'Local','healthCheckNodePort':32000,"
        "'sessionAffinity':'ClientIP'},'status':{'loadBalancer':{'ingress':"
        "[{'ip':'198.18.7.7'}]}}}");
    put(f->slices,
        SLICE("web-1", "web",
              "[{'name':'http','protocol':'TCP','port':8080},"
              "{'name':'dns','protocol':'UDP','port':5353}]",
              "[" EP("198.18.2.1", "node-a", "z1", READY) ","
              EP("198.18.2.2", "node-b", "z1", READY) "]"));
    f->o.redirect = 1;
    build(f);
    /* The ClusterIP and the external frontends (a Local policy on one
     * side only) are two services, both reached by redirection. */
    s = get(f, "shop/web:http");
    assert_int_equal(s->reach, TBL_REACH_REDIRECT);
    assert_string_equal(fes(s), "198.18.0.10:80");
    assert_int_equal(s->nbackends, 2);
    assert_true(s->affinity_timeout_ms > 0);
    s = get(f, "shop/web:http/external");
    assert_int_equal(s->reach, TBL_REACH_REDIRECT);
    assert_string_equal(bes(s), "pod-198.18.2.1@198.18.2.1:8080=RSL");
    s = get(f, "shop/web:dns");
    assert_int_equal(s->proto, TBL_PROTO_UDP);
    assert_int_equal(s->reach, TBL_REACH_LISTEN);
    assert_int_equal(NSKIP(f, SERVICE, UNSUPPORTED_PROTOCOL), 0);
    assert_int_equal(NSKIP(f, SERVICE, BAD_ANNOTATION), 0);
    /* The kernel's side: the TCP port only, redirected, with every
     * address and the health check port, no endpoints. */
    assert_int_equal(f->t->nksvcs, 1);
    k = kget(f, "shop/web:http", TBL_PROTO_TCP);
    /* ClientIP affinity: to worker 0's own port. */
    assert_int_equal(k->redirect, TBL_REDIRECT_AFFINITY);
    assert_int_equal(k->ncluster_eps + k->nlocal_eps, 0);
    assert_string_equal(ips(k->cluster_ips, k->ncluster_ips), "198.18.0.10");
    assert_string_equal(ips(k->external_ips, k->nexternal_ips), "198.18.9.9");
    assert_string_equal(ips(k->lb_ips, k->nlb_ips), "198.18.7.7");
    assert_int_equal(k->node_port, 30080);
    assert_int_equal(k->affinity_s, 0);
    assert_int_equal(k->hc_node_port, 32000);

    /* Edge mode ignores it. */
    f->o.edge = 1;
    build(f);
    assert_int_equal(f->t->nksvcs, 0);
    assert_true(f->t->nservices > 0);
    for (size_t i = 0; i < f->t->nservices; i++)
        assert_int_equal(table_service(f->t, i)->reach, TBL_REACH_LISTEN);
}

/* loadBalancerSourceRanges on the proxy path: the LoadBalancer IPs are
 * served apart, allowed from the ranges only; the other frontends are
 * not limited. No valid range left: the LoadBalancer IPs are not served. */
static void
test_source_ranges_proxy(void **state)
{
    struct fx *f = *state;
    const struct tbl_service *s;
    char ip[SADDR_STR_MAX];

    put(f->svcs,
        "{'metadata':{'namespace':'shop','name':'web'},'spec':{'type':"
        "'LoadBalancer','clusterIP':'198.18.0.10','externalTrafficPolicy':"
        "'Local','ports':[{'name':'http','protocol':'TCP','port':80,"
        "'nodePort':30080}],'loadBalancerSourceRanges':['198.18.9.1/24']},"
        "'status':{'loadBalancer':{'ingress':[{'ip':'198.18.7.7'}]}}}");
    put(f->slices, SLICE("web-1", "web", HTTP_8080,
                         "[" EP("198.18.2.1", "node-a", "z1", READY) ","
                         EP("198.18.2.2", "node-b", "z1", READY) "]"));
    build(f);
    s = get(f, "shop/web:http/lb");
    assert_string_equal(fes(s), "198.18.7.7:80");
    assert_int_equal(s->nallow, 1);
    assert_string_equal(saddr_ip_str(&s->allow[0].ip, ip, sizeof(ip)),
                        "198.18.9.0");
    /* The external (Local) set, like the NodePort's. */
    assert_string_equal(bes(s), "pod-198.18.2.1@198.18.2.1:8080=RSL");
    s = get(f, "shop/web:http/external");
    assert_string_equal(fes(s), "198.18.1.1:30080,198.18.1.2:30080");
    assert_int_equal(s->nallow, 0);
    assert_int_equal(get(f, "shop/web:http")->nallow, 0);

    /* Edge mode: the same split. */
    f->o.edge = 1;
    f->o.node_name = NULL;
    build(f);
    s = get(f, "shop/web:http/lb");
    assert_int_equal(s->nallow, 1);

    /* Nothing valid left: no LoadBalancer IP served. */
    f->o.edge = 0;
    f->o.node_name = "node-a";
    put(f->svcs,
        "{'metadata':{'namespace':'shop','name':'web'},'spec':{'type':"
        "'LoadBalancer','clusterIP':'198.18.0.10','ports':[{'name':'http',"
        "'protocol':'TCP','port':80}],'loadBalancerSourceRanges':['x']},"
        "'status':{'loadBalancer':{'ingress':[{'ip':'198.18.7.7'}]}}}");
    build(f);
    assert_null(table_find(f->t, "shop/web:http/lb"));
    assert_string_equal(fes(get(f, "shop/web:http")), "198.18.0.10:80");
    assert_note(f, "loadBalancerSourceRanges[0] \"x\"");
}

/* Proxy features per Service, over the policy; bad values noted. */
static void
test_feature_annotations(void **state)
{
    struct fx *f = *state;
    struct tbl_service pol;
    const struct tbl_service *s;
    const struct tbl_ksvc *k;

    memset(&pol, 0, sizeof(pol));
    pol.balance = TBL_BAL_ROUNDROBIN;
    pol.retries = 1;
    pol.check.interval_ms = 700;
    pol.check.timeout_ms = 300;
    pol.check.rise = 4;
    pol.check.fall = 5;
    pol.drain_timeout_ms = 9000;
    f->o.policy = &pol;
    put(f->svcs,
        "{'metadata':{'namespace':'shop','name':'good','annotations':{"
        "'ferry.dev/balance':'leastconn','ferry.dev/retries':'3',"
        "'ferry.dev/send-proxy':'v2','ferry.dev/health-check':'http:/hz',"
        "'ferry.dev/drain-timeout':'1.5s'}},"
        "'spec':{'clusterIP':'198.18.0.12','ports':[{'name':'http',"
        "'protocol':'TCP','port':80}]}}");
    put(f->svcs,
        "{'metadata':{'namespace':'shop','name':'bad','annotations':{"
        "'ferry.dev/balance':'fastest','ferry.dev/retries':'15',"
        "'ferry.dev/send-proxy':'v3','ferry.dev/health-check':'udp',"
        "'ferry.dev/drain-timeout':'25h'}},"
        "'spec':{'clusterIP':'198.18.0.13','ports':[{'name':'http',"
        "'protocol':'TCP','port':80}]}}");
    put(f->svcs,
        "{'metadata':{'namespace':'shop','name':'tcp','annotations':{"
        "'ferry.dev/health-check':'tcp','ferry.dev/drain-timeout':'0'}},"
        "'spec':{'clusterIP':"
        "'198.18.0.14','ports':[{'name':'http','protocol':'TCP','port':80}]}}");
    build(f);
    s = get(f, "shop/good:http");
    assert_int_equal(s->balance, TBL_BAL_LEASTCONN);
    assert_int_equal(s->retries, 3);
    assert_int_equal(s->send_proxy, TBL_SEND_PROXY_V2);
    assert_int_equal(s->check.type, TBL_CHECK_HTTP);
    assert_string_equal(s->check.path, "/hz");
    assert_int_equal(s->check.interval_ms, 700); /* from the policy */
    assert_int_equal(s->check.fall, 5);
    assert_int_equal(s->drain_timeout_ms, 1500);
    s = get(f, "shop/bad:http");
    assert_int_equal(s->drain_timeout_ms, 9000); /* the policy's */
    assert_int_equal(s->balance, TBL_BAL_ROUNDROBIN);
    assert_int_equal(s->retries, 1);
    assert_int_equal(s->send_proxy, TBL_SEND_PROXY_NONE);
    assert_int_equal(s->check.type, TBL_CHECK_NONE);
    assert_int_equal(NSKIP(f, SERVICE, BAD_ANNOTATION), 5);
    assert_note(f, "ferry.dev/balance \"fastest\"");
    assert_note(f, "ferry.dev/retries \"15\": not 0 to 14");
    assert_note(f, "ferry.dev/send-proxy \"v3\"");
    assert_note(f, "ferry.dev/health-check \"udp\"");
    assert_note(f, "ferry.dev/drain-timeout \"25h\": not a duration");
    assert_int_equal(get(f, "shop/tcp:http")->check.type, TBL_CHECK_TCP);
    assert_int_equal(get(f, "shop/tcp:http")->drain_timeout_ms, 0);

    /* The health check also reaches kernel services. */
    f->o.kernel = 1;
    build(f);
    k = kget(f, "shop/good:http", TBL_PROTO_TCP);
    assert_int_equal(k->check.type, TBL_CHECK_HTTP);
    assert_int_equal(kget(f, "shop/bad:http", TBL_PROTO_TCP)->check.type,
                     TBL_CHECK_NONE);
}

static void
test_merge_dedup(void **state)
{
    struct fx *f = *state;

    put(f->svcs, WEB_SVC(""));
    put(f->slices, SLICE("web-a", "web", HTTP_8080,
                         "[" EP("198.18.2.1", "node-b", "z2", READY) "," EP(
                             "198.18.2.3", "node-b", "z2", NOTREADY) "]"));
    put(f->slices,
        SLICE("web-b", "web", HTTP_8080,
              "[" EP("198.18.2.2", "node-b", "z2", READY) "," EP(
                  "198.18.2.3", "node-b", "z2",
                  READY) "," EP("198.18.2.1", "node-b", "z2", READY) "]"));
    /* Same IP, other port: a different backend. */
    put(f->slices,
        SLICE("web-c", "web", "[{'name':'http','protocol':'TCP','port':8081}]",
              "[" EP("198.18.2.1", "node-b", "z2", READY) "]"));
    /* Other service, no label, FQDN: all ignored. */
    put(f->slices, SLICE("db-a", "db", HTTP_8080,
                         "[" EP("198.18.2.9", "node-b", "z2", READY) "]"));
    put(f->slices, "{'metadata':{'namespace':'shop','name':'nolabel'},"
                   "'addressType':'IPv4','ports':" HTTP_8080 ","
                   "'endpoints':[" EP("198.18.2.8", "node-b", "z2", "") "]}");
    put(f->slices, "{'metadata':{'namespace':'shop','name':'fq','labels':{"
                   "'kubernetes.io/service-name':'web'}},'addressType':"
                   "'FQDN','ports':" HTTP_8080 ",'endpoints':[{'addresses':"
                   "['web.example.org']}]}");
    put(f->slices, "{'metadata':{'namespace':'shop','name':'empty','labels':{"
                   "'kubernetes.io/service-name':'web'}},'addressType':"
                   "'IPv4','ports':null,'endpoints':null}");
    build(f);
    assert_string_equal(bes(get(f, "shop/web:http")),
                        "pod-198.18.2.1@198.18.2.1:8080=RS,"
                        "pod-198.18.2.1@198.18.2.1:8081=RS,"
                        "pod-198.18.2.2@198.18.2.2:8080=RS,"
                        "pod-198.18.2.3@198.18.2.3:8080=RS");
    /* kube-proxy ignores these silently: quiet reasons. A slice of a
     * Service that does not exist (db) is no skip. */
    assert_int_equal(NSKIP(f, ENDPOINTSLICE, NO_SERVICE), 1);
    assert_int_equal(NSKIP(f, ENDPOINTSLICE, ADDRESS_TYPE), 1);
    assert_int_equal(skip_set_size(f->skips), 2);
}

static void
test_port_matching(void **state)
{
    struct fx *f = *state;

    put(f->svcs, "{'metadata':{'namespace':'shop','name':'web'},'spec':{"
                 "'clusterIP':'198.18.0.10','ports':["
                 "{'name':'http','port':80},{'name':'metrics','port':9100},"
                 "{'name':'grpc','protocol':'TCP','port':81}]}}");
    put(f->slices, SLICE("web-1", "web",
                         "[{'name':'http','port':8080},"
                         "{'name':'metrics','protocol':'TCP','port':9090},"
                         "{'name':'grpc','protocol':'UDP','port':81},"
                         "{'name':'zero','port':0}]",
                         "[" EP("198.18.2.1", "n", "z", "") "]"));
    build(f);
    assert_int_equal(f->t->nservices, 3);
    assert_string_equal(bes(get(f, "shop/web:http")),
                        "pod-198.18.2.1@198.18.2.1:8080=RS");
    assert_string_equal(bes(get(f, "shop/web:metrics")),
                        "pod-198.18.2.1@198.18.2.1:9090=RS");
    assert_string_equal(fes(get(f, "shop/web:metrics")), "198.18.0.10:9100");
    assert_int_equal(get(f, "shop/web:grpc")->nbackends, 0);
    /* Slice ports no Service port asks for are not skips. */
    assert_int_equal(skip_set_size(f->skips), 0);
}

static void
test_conditions(void **state)
{
    struct fx *f = *state;

    put(f->svcs, WEB_SVC(""));
    put(f->slices,
        SLICE("web-1", "web", HTTP_8080,
              "[{'addresses':['198.18.2.1']},"
              "{'addresses':['198.18.2.2'],'conditions':{'ready':null}},"
              "{'addresses':['198.18.2.3'],'conditions':{'ready':false}},"
              "{'addresses':[]},{'addresses':['not-an-ip']}]"));
    build(f);
    /* Nil conditions: ready, serving, not terminating; no targetRef: the
     * IP names the backend. */
    assert_string_equal(bes(get(f, "shop/web:http")),
                        "198.18.2.1@198.18.2.1:8080=RS,"
                        "198.18.2.2@198.18.2.2:8080=RS");
}

static void
test_terminating_fallback(void **state)
{
    struct fx *f = *state;

    put(f->svcs, WEB_SVC(""));
    put(f->slices,
        SLICE(
            "web-1", "web", HTTP_8080,
            "[" EP("198.18.2.1", "node-b", "z2", TERMINATING) "," EP(
                "198.18.2.2", "node-b", "z2",
                NOTREADY) "," EP("198.18.2.3", "node-b", "z2",
                                 ",'conditions':{'ready':false,'serving':false,"
                                 "'terminating':true}") "]"));
    build(f);
    assert_string_equal(bes(get(f, "shop/web:http")),
                        "pod-198.18.2.1@198.18.2.1:8080=ST");
    /* One ready endpoint: the terminating one is no longer used. */
    put(f->slices, SLICE("web-2", "web", HTTP_8080,
                         "[" EP("198.18.2.9", "node-b", "z2", READY) "]"));
    build(f);
    assert_string_equal(bes(get(f, "shop/web:http")),
                        "pod-198.18.2.9@198.18.2.9:8080=RS");
}

/* "name=reason,..." of the endpoints a service left out. */
static const char *
excl(const struct tbl_service *s)
{
    static char out[1024];
    size_t i, n = 0;

    out[0] = '\0';
    for (i = 0; i < s->nexcluded; i++)
        n += (size_t)snprintf(out + n, sizeof(out) - n, "%s%s=%u",
                              i ? "," : "", s->excluded[i].name,
                              s->excluded[i].reason);
    return out;
}

#define ZONE_HINT_Z1 ",'hints':{'forZones':[{'name':'z1'}]}" READY
#define ZONE_HINT_Z2 ",'hints':{'forZones':[{'name':'z2'}]}" READY

/* The endpoints left out of a service, each with kube-proxy's reason. */
static void
test_excluded_reasons(void **state)
{
    struct fx *f = *state;
    char want[512];

    put(f->svcs, WEB_SVC(""));
    put(f->slices,
        SLICE("web-1", "web", HTTP_8080,
              "[" EP("198.18.2.1", "node-b", "z1", READY) "," EP(
                  "198.18.2.2", "node-b", "z1",
                  TERMINATING) "," EP("198.18.2.3", "node-b", "z1",
                                      NOTREADY) "]"));
    build(f);
    snprintf(want, sizeof(want), "pod-198.18.2.2=%d,pod-198.18.2.3=%d",
             TBL_EXCL_TERMINATING, TBL_EXCL_NOT_READY);
    assert_string_equal(excl(get(f, "shop/web:http")), want);
    /* Under the fallback, the not-serving one alone is left out. */
    put(f->slices,
        SLICE("web-1", "web", HTTP_8080,
              "[" EP("198.18.2.2", "node-b", "z1", TERMINATING) "," EP(
                  "198.18.2.3", "node-b", "z1", NOTREADY) "]"));
    build(f);
    snprintf(want, sizeof(want), "pod-198.18.2.3=%d", TBL_EXCL_NOT_READY);
    assert_string_equal(excl(get(f, "shop/web:http")), want);
    /* Local policy: another node's endpoint; hints: another zone's. */
    put(f->svcs, WEB_SVC(",'internalTrafficPolicy':'Local'"));
    put(f->slices,
        SLICE("web-1", "web", HTTP_8080,
              "[" EP("198.18.2.1", "node-a", "z1", READY) "," EP(
                  "198.18.2.4", "node-b", "z1", READY) "]"));
    build(f);
    snprintf(want, sizeof(want), "pod-198.18.2.4=%d", TBL_EXCL_OTHER_NODE);
    assert_string_equal(excl(get(f, "shop/web:http")), want);
    put(f->svcs, WEB_SVC(""));
    put(f->slices, SLICE("web-1", "web", HTTP_8080,
                         "[" EP("198.18.2.1", "node-b", "z1", ZONE_HINT_Z1)
                         "," EP("198.18.2.5", "node-c", "z2",
                                ZONE_HINT_Z2) "]"));
    build(f);
    snprintf(want, sizeof(want), "pod-198.18.2.5=%d", TBL_EXCL_TOPOLOGY);
    assert_string_equal(excl(get(f, "shop/web:http")), want);
}

static void
test_itp_local(void **state)
{
    struct fx *f = *state;

    put(f->svcs, WEB_SVC(",'internalTrafficPolicy':'Local'"));
    put(f->slices,
        SLICE("web-1", "web", HTTP_8080,
              "[" EP("198.18.2.1", "node-a", "z1", TERMINATING) "," EP(
                  "198.18.2.2", "node-b", "z1", READY) "]"));
    build(f);
    assert_int_equal(f->t->nservices, 1);
    /* No local ready endpoint: local serving+terminating one. */
    assert_string_equal(bes(get(f, "shop/web:http")),
                        "pod-198.18.2.1@198.18.2.1:8080=STL");
    put(f->slices, SLICE("web-1", "web", HTTP_8080,
                         "[" EP("198.18.2.2", "node-b", "z1", READY) "]"));
    build(f);
    assert_int_equal(get(f, "shop/web:http")->nbackends, 0); /* drop */
}

static void
test_etp_local(void **state)
{
    struct fx *f = *state;
    const struct tbl_service *in, *ex;

    put(f->svcs,
        "{'metadata':{'namespace':'shop','name':'web'},'spec':{'type':"
        "'LoadBalancer','clusterIP':'198.18.0.10','ports':[{'name':'http',"
        "'port':80,'nodePort':31080}],'externalIPs':['198.18.5.5'],"
        "'externalTrafficPolicy':'Local','healthCheckNodePort':32100},"
        "'status':{'loadBalancer':{"
        "'ingress':[{'ip':'198.18.9.1','ipMode':'VIP'},{'ip':'198.18.9.2',"
        "'ipMode':'Proxy'},{'hostname':'lb.example.org'}]}}}");
    put(f->slices, SLICE("web-1", "web", HTTP_8080,
                         "[" EP("198.18.2.1", "node-a", "z1", READY) "," EP(
                             "198.18.2.2", "node-b", "z1", READY) "]"));
    build(f);
    assert_int_equal(f->t->nservices, 2);
    in = get(f, "shop/web:http");
    ex = get(f, "shop/web:http/external");
    assert_string_equal(fes(in), "198.18.0.10:80");
    assert_string_equal(bes(in), "pod-198.18.2.1@198.18.2.1:8080=RSL,"
                                 "pod-198.18.2.2@198.18.2.2:8080=RS");
    assert_string_equal(fes(ex), "198.18.5.5:80,198.18.9.1:80,"
                                 "198.18.1.1:31080,198.18.1.2:31080");
    assert_string_equal(bes(ex), "pod-198.18.2.1@198.18.2.1:8080=RSL");
    /* The health check port goes with the local set only. */
    assert_int_equal(in->hc_node_port, 0);
    assert_int_equal(ex->hc_node_port, 32100);

    /* Edge mode: no node, Local means nothing: one service. */
    f->o.node_name = NULL;
    f->o.n_node_addrs = 0;
    build(f);
    assert_int_equal(f->t->nservices, 1);
    assert_string_equal(fes(get(f, "shop/web:http")),
                        "198.18.0.10:80,198.18.5.5:80,198.18.9.1:80");
    assert_int_equal(get(f, "shop/web:http")->hc_node_port, 0);
}

static void
test_both_local(void **state)
{
    struct fx *f = *state;

    put(f->svcs, "{'metadata':{'namespace':'shop','name':'web'},'spec':{"
                 "'type':'NodePort','clusterIP':'198.18.0.10','ports':[{"
                 "'name':'http','port':80,'nodePort':31080}],"
                 "'externalTrafficPolicy':'Local',"
                 "'internalTrafficPolicy':'Local'}}");
    put(f->slices, SLICE("web-1", "web", HTTP_8080,
                         "[" EP("198.18.2.1", "node-a", "z1", READY) "," EP(
                             "198.18.2.2", "node-b", "z1", READY) "]"));
    build(f);
    assert_int_equal(f->t->nservices, 1);
    assert_string_equal(fes(get(f, "shop/web:http")),
                        "198.18.0.10:80,198.18.1.1:31080,198.18.1.2:31080");
    assert_string_equal(bes(get(f, "shop/web:http")),
                        "pod-198.18.2.1@198.18.2.1:8080=RSL");
    /* NodePort, not LoadBalancer: no health check port. */
    assert_int_equal(get(f, "shop/web:http")->hc_node_port, 0);
}

/* kube-proxy's no_local_endpoints_total: Service ports with an
 * endpoint, a Local policy and no endpoint on this node, by policy, on
 * either dataplane. */
static void
test_no_local_count(void **state)
{
    struct fx *f = *state;
    int kernel;

    for (kernel = 0; kernel < 2; kernel++) {
        f->o.kernel = kernel;
        kcache_free(f->svcs);
        kcache_free(f->slices);
        f->svcs = kcache_new("Service", 1);
        f->slices = kcache_new("EndpointSlice", 1);
        put(f->svcs, "{'metadata':{'namespace':'shop','name':'web'},'spec':{"
                     "'type':'NodePort','clusterIP':'198.18.0.10','ports':[{"
                     "'name':'http','port':80,'nodePort':31080}],"
                     "'externalTrafficPolicy':'Local',"
                     "'internalTrafficPolicy':'Local'}}");
        put(f->svcs, "{'metadata':{'namespace':'shop','name':'api'},'spec':{"
                     "'type':'ClusterIP','clusterIP':'198.18.0.11','ports':[{"
                     "'name':'http','port':80}],"
                     "'internalTrafficPolicy':'Local'}}");
        put(f->svcs, "{'metadata':{'namespace':'shop','name':'db'},'spec':{"
                     "'type':'ClusterIP','clusterIP':'198.18.0.12','ports':[{"
                     "'name':'http','port':80}]}}");
        /* web: no endpoint at all yet; api: a local one; db: Cluster. */
        put(f->slices, SLICE("api-1", "api", HTTP_8080,
                             "[" EP("198.18.2.1", "node-a", "z1", READY) "]"));
        put(f->slices, SLICE("db-1", "db", HTTP_8080,
                             "[" EP("198.18.2.3", "node-b", "z1", READY) "]"));
        build(f);
        assert_int_equal(f->st.no_local_internal, 0);
        assert_int_equal(f->st.no_local_external, 0);
        /* web gets endpoints elsewhere only (a terminating one counts
         * as an endpoint, a not-ready one does not matter). */
        put(f->slices,
            SLICE("web-1", "web", HTTP_8080,
                  "[" EP("198.18.2.2", "node-b", "z1", TERMINATING) "," EP(
                      "198.18.2.4", "node-a", "z1", NOTREADY) "]"));
        build(f);
        assert_int_equal(f->st.no_local_internal, 1);
        assert_int_equal(f->st.no_local_external, 1);
        /* api loses its local endpoint to another node. */
        put(f->slices, SLICE("api-1", "api", HTTP_8080,
                             "[" EP("198.18.2.1", "node-b", "z1", READY) "]"));
        build(f);
        assert_int_equal(f->st.no_local_internal, 2);
        assert_int_equal(f->st.no_local_external, 1);
    }
}

#define ZH(z) ",'hints':{'forZones':[{'name':'" z "'}]}" READY
#define NH(n)                                                                  \
    ",'hints':{'forNodes':[{'name':'" n "'}],'forZones':[{'name':"             \
    "'z9'}]}" READY

static void
test_hints(void **state)
{
    struct fx *f = *state;

    put(f->svcs, WEB_SVC(""));
    put(f->slices, SLICE("web-1", "web", HTTP_8080,
                         "[" EP("198.18.2.1", "node-b", "z1", ZH("z1")) "," EP(
                             "198.18.2.2", "node-c", "z2",
                             ZH("z2")) "," EP("198.18.2.3", "node-d", "z2",
                                              TERMINATING) "]"));
    build(f);
    assert_string_equal(bes(get(f, "shop/web:http")),
                        "pod-198.18.2.1@198.18.2.1:8080=RS");
    /* No endpoint for our zone: hints ignored. */
    f->o.node_zone = "z3";
    build(f);
    assert_int_equal(get(f, "shop/web:http")->nbackends, 2);
    /* Zone unknown: hints ignored. */
    f->o.node_zone = NULL;
    build(f);
    assert_int_equal(get(f, "shop/web:http")->nbackends, 2);
    /* One ready endpoint without hints: hints ignored. */
    f->o.node_zone = "z1";
    put(f->slices, SLICE("web-2", "web", HTTP_8080,
                         "[" EP("198.18.2.4", "node-b", "z1", READY) "]"));
    build(f);
    assert_int_equal(get(f, "shop/web:http")->nbackends, 3);
}

static void
test_node_hints(void **state)
{
    struct fx *f = *state;

    put(f->svcs, WEB_SVC(""));
    put(f->slices,
        SLICE("web-1", "web", HTTP_8080,
              "[" EP("198.18.2.1", "node-a", "z1", NH("node-a")) "," EP(
                  "198.18.2.2", "node-b", "z1", NH("node-b")) "]"));
    build(f);
    assert_string_equal(bes(get(f, "shop/web:http")),
                        "pod-198.18.2.1@198.18.2.1:8080=RSL");
    /* No node hint for us: fall to zone hints (z9: not ours): all. */
    f->o.node_name = "node-x";
    build(f);
    assert_int_equal(get(f, "shop/web:http")->nbackends, 2);
}

static void
test_ipv6_and_affinity(void **state)
{
    struct fx *f = *state;
    const struct tbl_service *s;

    put(f->svcs, "{'metadata':{'namespace':'v6','name':'web'},'spec':{"
                 "'clusterIP':'2001:2::10','clusterIPs':['2001:2::10'],"
                 "'ipFamilies':['IPv6'],'sessionAffinity':'ClientIP',"
                 "'ports':[{'name':'http','port':80}]}}");
    put(f->svcs, "{'metadata':{'namespace':'v6','name':'short'},'spec':{"
                 "'clusterIP':'198.18.0.11','sessionAffinity':'ClientIP',"
                 "'sessionAffinityConfig':{'clientIP':{'timeoutSeconds':60}},"
                 "'ports':[{'name':'http','port':80}]}}");
    put(f->slices, "{'metadata':{'namespace':'v6','name':'web-1','labels':{"
                   "'kubernetes.io/service-name':'web'}},'addressType':"
                   "'IPv6','ports':" HTTP_8080 ",'endpoints':[{'addresses':"
                   "['2001:2:1::1']}]}");
    /* A v4 slice of the same service is another family: not used. */
    put(f->slices, "{'metadata':{'namespace':'v6','name':'web-2','labels':{"
                   "'kubernetes.io/service-name':'web'}},'addressType':"
                   "'IPv4','ports':" HTTP_8080 ",'endpoints':[{'addresses':"
                   "['198.18.2.1']}]}");
    build(f);
    s = get(f, "v6/web:http");
    assert_string_equal(fes(s), "[2001:2::10]:80");
    assert_string_equal(bes(s), "2001:2:1::1@[2001:2:1::1]:8080=RS");
    assert_int_equal(s->affinity_timeout_ms, 10800u * 1000u);
    assert_int_equal(get(f, "v6/short:http")->affinity_timeout_ms, 60000);
}

static void
test_conflict(void **state)
{
    struct fx *f = *state;

    put(f->svcs, "{'metadata':{'namespace':'a','name':'one'},'spec':{"
                 "'clusterIP':'198.18.0.1','externalIPs':['198.18.5.5'],"
                 "'ports':[{'name':'http','port':80}]}}");
    put(f->svcs, "{'metadata':{'namespace':'a','name':'two'},'spec':{"
                 "'clusterIP':'198.18.0.2','externalIPs':['198.18.5.5'],"
                 "'ports':[{'name':'http','port':80}]}}");
    build(f);
    assert_int_equal(f->t->nservices, 1);
    get(f, "a/one:http");
    assert_int_equal(f->st.conflicts, 1);
    assert_non_null(strstr(f->st.first_conflict, "a/two:http"));
    assert_int_equal(NSKIP(f, SERVICE, CONFLICT), 1);
    assert_note(f, "Service a/two conflict: a/two:http not served: listen "
                   "address 198.18.5.5:80 already used by service "
                   "\"a/one:http\"");
}

static void
test_edge(void **state)
{
    struct fx *f = *state;
    struct saddr nodes[2];
    const char *why;

    put(f->svcs,
        "{'metadata':{'namespace':'shop','name':'web'},'spec':{'type':"
        "'LoadBalancer','clusterIP':'198.18.0.10','ports':[{'name':'http',"
        "'port':80,'nodePort':31080},{'name':'admin','port':81}],"
        "'externalIPs':['198.18.5.5']},"
        "'status':{'loadBalancer':{'ingress':[{'ip':'198.18.9.1'}]}}}");
    put(f->slices, SLICE("web-1", "web", HTTP_8080,
                         "[" EP("198.18.2.1", "node-a", "z1", READY) "]"));
    f->o.node_name = NULL;
    f->o.n_node_addrs = 0;
    f->o.edge = 1;
    build(f);
    /* Edge: no ClusterIP frontend; straight to the pods. */
    assert_string_equal(fes(get(f, "shop/web:http")),
                        "198.18.5.5:80,198.18.9.1:80");
    assert_string_equal(bes(get(f, "shop/web:http")),
                        "pod-198.18.2.1@198.18.2.1:8080=RS");
    /* Edge to the nodes' NodePorts: a port without one is not served. */
    parse_ip("198.18.0.11", 0, &nodes[0], &why);
    parse_ip("198.18.0.12", 0, &nodes[1], &why);
    f->o.edge_nodes = nodes;
    f->o.n_edge_nodes = 2;
    build(f);
    assert_int_equal(f->t->nservices, 1);
    assert_string_equal(fes(get(f, "shop/web:http")),
                        "198.18.5.5:80,198.18.9.1:80");
    assert_string_equal(bes(get(f, "shop/web:http")),
                        "198.18.0.11:31080@198.18.0.11:31080=RS,"
                        "198.18.0.12:31080@198.18.0.12:31080=RS");
    assert_int_equal(NSKIP(f, SERVICE, NO_NODE_PORT), 1);
    assert_note(f, "Service shop/web no_node_port: port \"admin\"");
}

/* Bad API objects: each skipped field is noted once (kind, object,
 * reason), and what is good in the same object and table is served. */
static void
test_bad_ports(void **state)
{
    struct fx *f = *state;

    put(f->svcs, "{'metadata':{'namespace':'shop','name':'web'},'spec':{"
                 "'clusterIP':'198.18.0.10','ports':["
                 "{'name':'zero','port':0},{'name':'big','port':70000},"
                 "{'name':'str','port':'80'},{'name':'neg','port':-1},"
                 "{'name':'http','port':80,'nodePort':70000}]}}");
    put(f->svcs, "{'metadata':{'namespace':'shop','name':'db'},'spec':{"
                 "'clusterIP':'198.18.0.11','ports':[{'name':'pg',"
                 "'port':5432}]}}");
    put(f->slices, SLICE("web-1", "web", HTTP_8080,
                         "[" EP("198.18.2.1", "node-a", "z1", READY) "]"));
    build(f);
    assert_int_equal(f->t->nservices, 2);
    assert_string_equal(fes(get(f, "shop/web:http")), "198.18.0.10:80");
    assert_string_equal(bes(get(f, "shop/web:http")),
                        "pod-198.18.2.1@198.18.2.1:8080=RSL");
    get(f, "shop/db:pg");
    assert_int_equal(f->st.ports_skipped, 4);
    assert_int_equal(NSKIP(f, SERVICE, BAD_PORT), 5);
    assert_int_equal(skip_set_size(f->skips), 5);
    assert_note(f, "Service shop/web bad_port: port \"zero\": 0 not in "
                   "1-65535");
    assert_note(f, "port \"big\": 70000 not in 1-65535");
    assert_note(f, "port \"neg\": -1 not in 1-65535");
    assert_note(f, "port \"str\": no number");
    assert_note(f, "port \"http\": nodePort 70000 not in 1-65535");
    /* The same objects again: the same notes, no more (the watcher
     * counts them once). */
    build(f);
    assert_int_equal(skip_set_size(f->skips), 5);
}

static void
test_bad_endpoints(void **state)
{
    struct fx *f = *state;

    put(f->svcs, "{'metadata':{'namespace':'shop','name':'web'},'spec':{"
                 "'clusterIP':'198.18.0.10','ports':["
                 "{'name':'http','port':80},{'name':'alt','port':81}]}}");
    put(f->slices,
        SLICE("web-1", "web",
              "[{'name':'http','port':8080},"
              "{'name':'alt','port':8081}]",
              "[" EP("198.18.2.1", "node-a", "z1",
                     READY) ","
                            "{'addresses':['not-an-ip']},{'addresses':[]},"
                            "{'addresses':['198.18.2.999']},"
                            "{'addresses':[7]},7," EP("198.18.2.2", "node-b",
                                                      "z1", READY) "]"));
    /* A slice port that matches but has no usable number. */
    put(f->slices, SLICE("web-2", "web", "[{'name':'http','port':0}]",
                         "[" EP("198.18.2.3", "node-b", "z1", READY) "]"));
    build(f);
    assert_string_equal(bes(get(f, "shop/web:http")),
                        "pod-198.18.2.1@198.18.2.1:8080=RSL,"
                        "pod-198.18.2.2@198.18.2.2:8080=RS");
    assert_string_equal(bes(get(f, "shop/web:alt")),
                        "pod-198.18.2.1@198.18.2.1:8081=RSL,"
                        "pod-198.18.2.2@198.18.2.2:8081=RS");
    /* Looked at for both ports, noted once each. */
    assert_int_equal(NSKIP(f, ENDPOINTSLICE, BAD_ADDRESS), 5);
    assert_int_equal(NSKIP(f, ENDPOINTSLICE, BAD_PORT), 1);
    assert_int_equal(skip_set_size(f->skips), 6);
    assert_note(f, "EndpointSlice shop/web-1 bad_address: endpoints[1]: "
                   "address \"not-an-ip\"");
    assert_note(f, "endpoints[2]: no address");
    assert_note(f, "endpoints[3]: address \"198.18.2.999\"");
    assert_note(f, "EndpointSlice shop/web-2 bad_port: port \"http\"");
}

static void
test_bad_protocols(void **state)
{
    struct fx *f = *state;

    put(f->svcs, "{'metadata':{'namespace':'shop','name':'web'},'spec':{"
                 "'clusterIP':'198.18.0.10','ports':["
                 "{'name':'u','protocol':'UDP','port':53},"
                 "{'name':'s','protocol':'SCTP','port':54},"
                 "{'name':'foo','protocol':'FOO','port':55},"
                 "{'name':'num','protocol':6,'port':56},"
                 "{'name':'http','protocol':'TCP','port':80}]}}");
    build(f);
    assert_int_equal(f->t->nservices, 2); /* http, and u (UDP) */
    assert_string_equal(fes(get(f, "shop/web:http")), "198.18.0.10:80");
    assert_int_equal(NSKIP(f, SERVICE, UNSUPPORTED_PROTOCOL), 1);
    assert_int_equal(NSKIP(f, SERVICE, BAD_PROTOCOL), 2);
    /* Kubernetes spells protocols in capitals only. */
    put(f->svcs, "{'metadata':{'namespace':'shop','name':'low'},'spec':{"
                 "'clusterIP':'198.18.0.11','ports':["
                 "{'name':'t','protocol':'tcp','port':80}]}}");
    f->o.kernel = 1;
    build(f);
    assert_note(f, "port \"t\": protocol \"tcp\"");
    assert_int_equal(f->t->nksvcs, 3);
    assert_note(f, "port \"foo\": protocol \"FOO\"");
    assert_note(f, "port \"num\": protocol \"\"");
}

static void
test_bad_addresses_and_shapes(void **state)
{
    struct fx *f = *state;

    /* A bad ClusterIP: nothing of the Service can be served. */
    put(f->svcs, "{'metadata':{'namespace':'a','name':'badip'},'spec':{"
                 "'clusterIP':'999.1.2.3','ports':[{'port':80}]}}");
    /* Bad externalIPs, ingress IP and second ClusterIP: the rest is. */
    put(f->svcs,
        "{'metadata':{'namespace':'a','name':'ext'},'spec':{'type':"
        "'LoadBalancer','clusterIP':'198.18.0.20','clusterIPs':["
        "'198.18.0.20','nope'],'externalIPs':['198.18.5.5','x.y'],"
        "'ports':[{'name':'http','port':80}]},'status':{'loadBalancer':{"
        "'ingress':[{'ip':'198.18.9.1'},{'ip':'bad'},{'hostname':'lb.example'}"
        "]}}}");
    put(f->svcs, "{'metadata':{'namespace':'a','name':'noports'},'spec':{"
                 "'clusterIP':'198.18.0.21','ports':{'port':80}}}");
    put(f->svcs, "{'metadata':{'namespace':'a','name':'nospec'},'spec':7}");
    put(f->slices, "{'metadata':{'namespace':'a','name':'ext-1','labels':{"
                   "'kubernetes.io/service-name':'ext'}},'ports':" HTTP_8080
                   ",'endpoints':[{'addresses':['198.18.2.1']}]}");
    put(f->slices, "{'metadata':{'namespace':'a','name':'ext-2','labels':{"
                   "'kubernetes.io/service-name':'ext'}},'addressType':"
                   "'IPv4','ports':" HTTP_8080 ",'endpoints':{'x':1}}");
    put(f->slices, "{'metadata':{'namespace':'a','name':'ext-3','labels':{"
                   "'kubernetes.io/service-name':'ext'}},'addressType':"
                   "'IPv4','ports':" HTTP_8080 ",'endpoints':[{"
                   "'addresses':['198.18.2.3']}]}");
    build(f);
    assert_int_equal(f->t->nservices, 1);
    assert_string_equal(fes(get(f, "a/ext:http")),
                        "198.18.0.20:80,198.18.5.5:80,198.18.9.1:80");
    assert_string_equal(bes(get(f, "a/ext:http")),
                        "198.18.2.3@198.18.2.3:8080=RS");
    assert_int_equal(NSKIP(f, SERVICE, BAD_ADDRESS), 4);
    assert_int_equal(NSKIP(f, SERVICE, MALFORMED), 2);
    assert_int_equal(NSKIP(f, ENDPOINTSLICE, MALFORMED), 2);
    assert_note(f, "Service a/badip bad_address: clusterIP \"999.1.2.3\"");
    assert_note(f, "clusterIPs[1] \"nope\"");
    assert_note(f, "externalIPs[1] \"x.y\"");
    assert_note(f, "status.loadBalancer.ingress[1] \"bad\"");
    assert_note(f, "Service a/noports malformed: spec.ports is not a list");
    assert_note(f, "Service a/nospec malformed: no spec");
    assert_note(f, "EndpointSlice a/ext-1 malformed: addressType");
    assert_note(f, "EndpointSlice a/ext-2 malformed: endpoints or ports");
}

static void
test_node_deleting(void **state)
{
    static const char *const cases[][2] = {
        {"{'metadata':{'name':'n1'},'spec':{}}", "0"},
        {"{'metadata':{'name':'n1','deletionTimestamp':"
         "'2026-01-01T00:00:00Z'}}",
         "1"},
        {"{'metadata':{'name':'n1'},'spec':{'taints':[{'key':'other',"
         "'effect':'NoSchedule'},{'key':'ToBeDeletedByClusterAutoscaler',"
         "'value':'1700000000','effect':'NoSchedule'}]}}",
         "1"},
        {"{'metadata':{'name':'n1'},'spec':{'taints':[{'key':"
         "'node.kubernetes.io/unschedulable','effect':'NoSchedule'}]}}",
         "0"},
        {"{'metadata':{'name':'n1','deletionTimestamp':null},'spec':{"
         "'taints':'bad'}}",
         "0"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *s = strdup(cases[i][0]), *p;
        json_error_t je;
        json_t *o;
        for (p = s; *p; p++)
            if (*p == '\'')
                *p = '"';
        o = json_loads(s, 0, &je);
        assert_non_null(o);
        assert_int_equal(translate_node_deleting(o), cases[i][1][0] - '0');
        json_decref(o);
        free(s);
    }
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_basic),
        T(test_skipped_kinds),
        T(test_udp_served_sctp_skipped),
        T(test_kernel_services),
        T(test_kernel_annotation),
        T(test_redirect_steering),
        T(test_feature_annotations),
        T(test_source_ranges_proxy),
        T(test_merge_dedup),
        T(test_port_matching),
        T(test_conditions),
        T(test_terminating_fallback),
        T(test_excluded_reasons),
        T(test_itp_local),
        T(test_no_local_count),
        T(test_etp_local),
        T(test_edge),
        T(test_node_deleting),
        T(test_both_local),
        T(test_hints),
        T(test_node_hints),
        T(test_ipv6_and_affinity),
        T(test_conflict),
        T(test_bad_ports),
        T(test_bad_endpoints),
        T(test_bad_protocols),
        T(test_bad_addresses_and_shapes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
