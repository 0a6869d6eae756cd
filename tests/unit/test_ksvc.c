/* Services kept decoded (ksvc.c) in the cache (kcache.c). JSON uses '
 * for " to stay legible. */
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "intern.h"
#include "kcache.h"
#include "ksvc.h"
#include "sqjson.h"

/* A Service with every field translation reads, some of them bad, and
 * what it does not read (a last-applied copy, managedFields, other
 * labels and annotations). */
#define FULL                                                                   \
    "{'kind':'Service','metadata':{'namespace':'shop','name':'web',"           \
    "'labels':{'app':'web','service.kubernetes.io/service-proxy-name':"        \
    "'ferry'},'annotations':{'ferry.dev/balance':'leastconn',"                 \
    "'ferry.dev/retries':'x','ferry.dev/dataplane':7,"                         \
    "'kubectl.kubernetes.io/last-applied-configuration':'{\\\"a\\\":1}'},"     \
    "'managedFields':[{'manager':'kubectl'}]},"                                \
    "'spec':{'type':'LoadBalancer','clusterIP':'198.18.0.10',"                 \
    "'clusterIPs':['198.18.0.10',5],'externalIPs':['198.18.9.1'],"             \
    "'loadBalancerSourceRanges':['198.18.0.0/16',null],"                       \
    "'externalTrafficPolicy':'Local','internalTrafficPolicy':'Cluster',"       \
    "'sessionAffinity':'ClientIP','sessionAffinityConfig':{'clientIP':"        \
    "{'timeoutSeconds':60}},'healthCheckNodePort':32000,"                      \
    "'selector':{'app':'web'},'ipFamilies':['IPv4'],"                          \
    "'ports':[{'name':'http','port':80,'targetPort':8080,'nodePort':31080},"   \
    "{'port':'x','protocol':'UDP','nodePort':null},{'protocol':5},7]},"        \
    "'status':{'loadBalancer':{'ingress':[{'ip':'198.18.8.1'},"                \
    "{'ip':'198.18.8.2','ipMode':'Proxy'},{'hostname':'lb.example'},"          \
    "{'ip':null}]}}}"

static void
test_decode(void **state)
{
    json_t *o = obj(FULL);
    struct ksvc *s = ksvc_decode(o);

    (void)state;
    json_decref(o);
    assert_non_null(s);
    assert_string_equal(s->ns, "shop");
    assert_string_equal(s->name, "web");
    assert_true(s->has_spec && s->ports_ok && !s->headless);
    assert_int_equal(s->type, KSVC_TYPE_LOAD_BALANCER);
    assert_true(s->etp_local && !s->itp_local && s->client_ip);
    assert_int_equal(s->affinity_timeout, 60);
    assert_int_equal(s->hc_node_port, 32000);
    assert_string_equal(s->cluster_ip, "198.18.0.10");
    assert_int_equal(s->cluster_ips.n, 2);
    assert_string_equal(s->cluster_ips.v[0], "198.18.0.10");
    assert_null(s->cluster_ips.v[1]); /* not a string */
    assert_int_equal(s->external_ips.n, 1);
    assert_string_equal(s->external_ips.v[0], "198.18.9.1");
    assert_int_equal(s->source_ranges.n, 2);
    assert_string_equal(s->source_ranges.v[0], "198.18.0.0/16");
    assert_null(s->source_ranges.v[1]);
    assert_string_equal(s->proxy_name, "ferry");
    assert_string_equal(s->ann[KSVC_ANN_BALANCE], "leastconn");
    assert_string_equal(s->ann[KSVC_ANN_RETRIES], "x");
    assert_null(s->ann[KSVC_ANN_DATAPLANE]); /* not a string */
    assert_null(s->ann[KSVC_ANN_HEALTH_CHECK]);
    assert_int_equal(s->ningress, 4);
    assert_string_equal(s->ingress[0].ip, "198.18.8.1");
    assert_true(s->ingress[0].has_ip && !s->ingress[0].proxy);
    assert_true(s->ingress[1].proxy);
    assert_true(!s->ingress[2].has_ip && s->ingress[2].ip == NULL);
    assert_true(s->ingress[3].has_ip && s->ingress[3].ip == NULL);
    assert_int_equal(s->nports, 4);
    assert_string_equal(s->ports[0].name, "http");
    assert_string_equal(s->ports[0].proto, "TCP");
    assert_true(s->ports[0].port_is_int && s->ports[0].port == 80);
    assert_true(s->ports[0].has_node_port && s->ports[0].node_port == 31080);
    assert_string_equal(s->ports[1].name, "");
    assert_string_equal(s->ports[1].proto, "UDP");
    assert_true(!s->ports[1].port_is_int && s->ports[1].port == 0);
    assert_false(s->ports[1].has_node_port);
    assert_string_equal(s->ports[2].proto, "");    /* not a string */
    assert_string_equal(s->ports[3].proto, "TCP"); /* not an object */
    assert_false(s->ports[3].port_is_int);
    /* Interned: one copy of the namespace and of each port string. */
    assert_ptr_equal(s->ns, intern_str("shop"));
    intern_put(s->ns);
    ksvc_free(s);
    assert_int_equal(intern_count(), 0); /* every reference given back */
}

static void
test_shapes(void **state)
{
    static const struct {
        const char *svc;
        int has_spec, ports_ok, headless, type;
    } cases[] = {
        {"{'metadata':{'namespace':'a','name':'b'}}", 0, 1, 0, KSVC_TYPE_OTHER},
        {"{'metadata':{'namespace':'a','name':'b'},'spec':[]}", 0, 1, 0,
         KSVC_TYPE_OTHER},
        {"{'metadata':{'namespace':'a','name':'b'},'spec':{'ports':null,"
         "'type':'ExternalName'}}",
         1, 1, 0, KSVC_TYPE_EXTERNAL_NAME},
        {"{'metadata':{'namespace':'a','name':'b','labels':{"
         "'service.kubernetes.io/headless':''}},'spec':{'ports':{}}}",
         1, 0, 1, KSVC_TYPE_OTHER},
        {"{'metadata':{'namespace':'a','name':'b','labels':{"
         "'service.kubernetes.io/headless':1}},'spec':{'ports':'x',"
         "'clusterIPs':'198.18.0.1','status':5}}",
         1, 0, 0, KSVC_TYPE_OTHER},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *o = obj(cases[i].svc);
        struct ksvc *s = ksvc_decode(o);
        json_decref(o);
        assert_non_null(s);
        assert_int_equal(s->has_spec, cases[i].has_spec);
        assert_int_equal(s->ports_ok, cases[i].ports_ok);
        assert_int_equal(s->headless, cases[i].headless);
        assert_int_equal(s->type, cases[i].type);
        assert_int_equal(s->nports + s->cluster_ips.n + s->ningress, 0);
        assert_null(s->cluster_ip);
        ksvc_free(s);
    }
    /* Not an object at all (fuzz_translate found one returned NULL, out
     * of memory, once JSON went to the decoder through its text): an
     * empty Service, as before. */
    {
        json_t *seven = json_integer(7);
        struct ksvc *s = ksvc_decode(seven);

        json_decref(seven);
        assert_non_null(s);
        assert_int_equal(s->has_spec, 0);
        assert_string_equal(s->name, "");
        ksvc_free(s);
    }
    assert_int_equal(intern_count(), 0);
}

/* What translation reads makes Services differ; what it does not, not. */
static void
test_equal(void **state)
{
    static const char *const other[] = {
        "'type':'LoadBalancer'",
        "'198.18.9.1'",
        "'timeoutSeconds':60",
        "'nodePort':31080",
        "'ipMode':'Proxy'",
        "'ferry.dev/balance'",
        "'port':80,",
    };
    static const char *const repl[] = {
        "'type':'NodePort'", "'198.18.9.2'",   "'timeoutSeconds':61",
        "'nodePort':31081",  "'ipMode':'VIP'", "'ferry.dev/balanced'",
        "'port':81,",
    };
    json_t *o = obj(FULL);
    struct ksvc *a = ksvc_decode(o), *b;
    char buf[4096];
    size_t i;

    (void)state;
    json_decref(o);
    /* Labels, annotations and fields not read: dropped. */
    snprintf(buf, sizeof(buf), "%s", FULL);
    memcpy(strstr(buf, "'app':'web'"), "'app':'WEB'", 11);
    memcpy(strstr(buf, "{'manager':'kubectl'}"), "{'manager':'kubecto'}", 21);
    memcpy(strstr(buf, "'targetPort':8080"), "'targetPort':8081", 17);
    o = obj(buf);
    b = ksvc_decode(o);
    json_decref(o);
    assert_true(ksvc_equal(a, b));
    assert_true(a->stamp != b->stamp);
    assert_int_equal(ksvc_bytes(a), ksvc_bytes(b));
    ksvc_free(b);
    for (i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        char *at;
        snprintf(buf, sizeof(buf), "%s", FULL);
        at = strstr(buf, other[i]);
        assert_non_null(at);
        memmove(at + strlen(repl[i]), at + strlen(other[i]),
                strlen(at + strlen(other[i])) + 1);
        memcpy(at, repl[i], strlen(repl[i]));
        o = obj(buf);
        b = ksvc_decode(o);
        json_decref(o);
        assert_non_null(b);
        if (ksvc_equal(a, b))
            fail_msg("case %zu: %s -> %s made no difference", i, other[i],
                     repl[i]);
        ksvc_free(b);
    }
    ksvc_free(a);
    assert_int_equal(intern_count(), 0);
}

/* The cache keeps Services decoded: no JSON of them, found by key, the
 * event's object still there for the callback; a list of the same
 * Services again changes nothing. */
static void
test_cache(void **state)
{
    struct kcache *c = kcache_new("Service", 1), *n;
    struct kcache_event ev;
    const struct ksvc *s;
    struct err e;
    char line[4200];
    uint64_t ch;

    (void)state;
    assert_true(kcache_decoded(c));
    snprintf(line, sizeof(line), "{\"type\":\"ADDED\",\"object\":%s}",
             dq(FULL));
    err_clear(&e);
    assert_int_equal(kcache_apply_line(c, line, strlen(line), &ev, &e),
                     KCACHE_APPLIED);
    assert_non_null(ev.obj);
    assert_non_null(json_object_get(
        json_object_get(json_object_get(ev.obj, "metadata"), "annotations"),
        "kubectl.kubernetes.io/last-applied-configuration"));
    assert_null(kcache_get(c, "shop/web")); /* no JSON kept */
    assert_int_equal(json_object_size(kcache_map(c)), 0);
    s = kcache_find(c, "shop/web");
    assert_non_null(s);
    assert_string_equal(s->ann[KSVC_ANN_BALANCE], "leastconn");
    n = kcache_new("Service", 1);
    assert_int_equal(kcache_put(n, obj(FULL), &e), 0);
    ch = kcache_changes(c);
    assert_int_equal(kcache_replace(c, n), 0);
    assert_int_equal(kcache_changes(c), ch); /* the same Service */
    assert_ptr_equal(kcache_find(c, "shop/web"), s); /* kept as it was */
    assert_int_equal(kcache_put(n,
                                obj("{'metadata':{'namespace':'shop',"
                                    "'name':'web'},'spec':{}}"),
                                &e),
                     0);
    assert_int_equal(kcache_replace(c, n), 0);
    assert_true(kcache_changes(c) > ch);
    kcache_free(n);
    kcache_free(c);
    assert_int_equal(intern_count(), 0);
}

/* What a typical Service costs in the cache, its key included: about
 * 350 bytes, where its JSON took about 6.6 KB (kubectl's last-applied
 * copy included). Counted by glibc's allocator: under a sanitizer, which
 * brings its own, there is nothing to count. */
static void
test_bytes_per_service(void **state)
{
    struct kcache *c = kcache_new("Service", 1);
    size_t before = mallinfo2().uordblks, after;
    struct err e;
    int i;

    (void)state;
    for (i = 0; i < 1000; i++) {
        char name[32], ip[32], last[512];
        json_t *o;
        snprintf(name, sizeof(name), "svc-%05d", i);
        snprintf(ip, sizeof(ip), "198.19.%d.%d", i >> 8, i & 255);
        snprintf(last, sizeof(last),
                 "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":"
                 "{\"name\":\"%s\",\"namespace\":\"bench\"},\"spec\":{"
                 "\"ports\":[{\"name\":\"http\",\"port\":80,\"targetPort\":"
                 "8080}],\"selector\":{\"app\":\"%s\"}}}",
                 name, name);
        o = json_pack(
            "{s:s,s:s,s:{s:s,s:s,s:s,s:s,s:{s:s},s:{s:s}},s:{s:s,s:[s],"
            "s:[s],s:s,s:s,s:s,s:s,s:{s:s},s:[{s:s,s:s,s:i,s:i}]},s:{s:{}}}",
            "apiVersion", "v1", "kind", "Service", "metadata", "name", name,
            "namespace", "bench", "uid", "4f1c1c2e-6a39-4a57-9a43-0c3a8d1e2f00",
            "creationTimestamp", "2026-12-06T10:00:00Z", "labels", "app", name,
            "annotations", "kubectl.kubernetes.io/last-applied-configuration",
            last, "spec", "clusterIP", ip, "clusterIPs", ip, "ipFamilies",
            "IPv4", "ipFamilyPolicy", "SingleStack", "sessionAffinity", "None",
            "type", "ClusterIP", "internalTrafficPolicy", "Cluster", "selector",
            "app", name, "ports", "name", "http", "protocol", "TCP", "port", 80,
            "targetPort", 8080, "status", "loadBalancer");
        assert_non_null(o);
        assert_int_equal(kcache_put(c, o, &e), 0);
    }
    after = mallinfo2().uordblks;
    if (after > before)
        assert_in_range((after - before) / 1000, 150, 400);
    kcache_free(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_equal),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_bytes_per_service),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
