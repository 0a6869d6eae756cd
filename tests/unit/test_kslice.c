/* EndpointSlices kept decoded (kslice.c) in the cache (kcache.c), and
 * the intern table under them. JSON uses ' for " to stay legible. */
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "intern.h"
#include "kcache.h"
#include "kslice.h"
#include "sqjson.h"

#define SLICE(name, eps)                                                       \
    "{'kind':'EndpointSlice','metadata':{'namespace':'shop','name':'" name     \
    "','labels':{'kubernetes.io/service-name':'web'}},'addressType':'IPv4',"   \
    "'ports':[{'name':'http','port':8080},{'port':70000,'protocol':'UDP'}],"   \
    "'endpoints':" eps "}"

#define EPS_A                                                                  \
    "[{'addresses':['198.18.0.1'],'nodeName':'node-a','zone':'z1',"            \
    "'targetRef':{'name':'web-1'},'conditions':{'ready':false,"                \
    "'terminating':true},'hints':{'forZones':[{'name':'z1'},{'x':1}]}},"       \
    "{'addresses':['not-an-ip']},{'conditions':{}},"                           \
    "{'addresses':['198.18.0.2'],'nodeName':'node-a'}]"

static void
test_decode(void **state)
{
    json_t *o = obj(SLICE("web-x", EPS_A));
    struct kslice *s = kslice_decode(o);
    const struct kslice_ep *e;

    (void)state;
    json_decref(o);
    assert_non_null(s);
    assert_string_equal(s->ns, "shop");
    assert_string_equal(s->name, "web-x");
    assert_string_equal(s->service, "web");
    assert_int_equal(s->skip, -1);
    assert_int_equal(s->family, AF_INET);
    assert_int_equal(s->nports, 2);
    assert_string_equal(s->ports[0].name, "http");
    assert_string_equal(s->ports[0].proto, "TCP");
    assert_int_equal(s->ports[0].port, 8080);
    assert_string_equal(s->ports[1].proto, "UDP");
    assert_int_equal(s->ports[1].port, 0); /* out of range */
    assert_int_equal(s->neps, 2);
    e = &s->eps[0];
    assert_int_equal(e->cond, KSLICE_SERVING | KSLICE_TERMINATING);
    assert_string_equal(e->node, "node-a");
    assert_ptr_equal(e->node, s->eps[1].node); /* interned */
    assert_string_equal(kslice_ep_pod(s, e), "web-1");
    assert_non_null(kslice_ep_hints(s, e));
    assert_int_equal(kslice_ep_hints(s, e)->nnodes, 0);
    assert_int_equal(kslice_ep_hints(s, e)->nzones, 2);
    assert_string_equal(kslice_ep_hints(s, e)->names[0], "z1");
    assert_null(kslice_ep_hints(s, e)->names[1]);
    assert_int_equal(s->eps[1].cond, KSLICE_READY | KSLICE_SERVING);
    assert_null(kslice_ep_pod(s, &s->eps[1]));
    assert_null(kslice_ep_hints(s, &s->eps[1]));
    /* The endpoints left out, as each build will note them. */
    assert_int_equal(s->nnotes, 2);
    assert_int_equal(s->notes[0].reason, SKIP_BAD_ADDRESS);
    assert_string_equal(s->notes[0].what,
                        "endpoints[1]: address \"not-an-ip\": not an IP "
                        "address (names are not resolved)");
    assert_string_equal(s->notes[1].what, "endpoints[2]: no address");
    kslice_free(s);
    assert_int_equal(intern_count(), 0); /* every reference given back */
}

static void
test_skipped_slice(void **state)
{
    json_t *o = obj("{'metadata':{'namespace':'shop','name':'f'},"
                    "'addressType':'FQDN','endpoints':[]}");
    struct kslice *s = kslice_decode(o);

    (void)state;
    json_decref(o);
    assert_non_null(s);
    assert_int_equal(s->skip, SKIP_NO_SERVICE);
    assert_string_equal(s->skip_why, "no kubernetes.io/service-name label");
    assert_int_equal(s->neps, 0);
    kslice_free(s);
    o = obj("{'metadata':{'namespace':'shop','name':'f','labels':{"
            "'kubernetes.io/service-name':'web'}},'addressType':'IPv6',"
            "'endpoints':{}}");
    s = kslice_decode(o);
    json_decref(o);
    assert_int_equal(s->skip, SKIP_MALFORMED);
    assert_string_equal(s->skip_why, "endpoints or ports not a list");
    kslice_free(s);
    assert_int_equal(intern_count(), 0);
}

static void
test_equal(void **state)
{
    json_t *a = obj(SLICE("web-x", EPS_A));
    json_t *b = obj(SLICE("web-x", EPS_A));
    struct kslice *sa, *sb;

    (void)state;
    /* Fields translation does not read make no difference. */
    json_object_set_new(json_object_get(b, "metadata"), "resourceVersion",
                        json_string("7"));
    sa = kslice_decode(a);
    sb = kslice_decode(b);
    assert_true(kslice_equal(sa, sb));
    kslice_free(sb);
    json_decref(b);
    b = obj(SLICE("web-x", "[{'addresses':['198.18.0.1']}]"));
    sb = kslice_decode(b);
    assert_false(kslice_equal(sa, sb));
    kslice_free(sa);
    kslice_free(sb);
    json_decref(a);
    json_decref(b);
}

static int
apply(struct kcache *c, const char *type, const char *slice,
      struct kcache_event *ev)
{
    char line[8192];
    struct err e;

    snprintf(line, sizeof(line), "{\"type\":\"%s\",\"object\":%s}", type,
             dq(slice));
    err_clear(&e);
    return kcache_apply_line(c, line, strlen(line), ev, &e);
}

/* The cache entry of <key> (kcache_iter.ent), or NULL. */
static const void *
ent_of(const struct kcache *c, const char *key)
{
    struct kcache_iter it = {0, NULL};
    const char *k;

    while (kcache_next(c, &it, &k) != NULL)
        if (strcmp(k, key) == 0)
            return it.ent;
    return NULL;
}

static void
test_cache(void **state)
{
    struct kcache *c = kcache_new("EndpointSlice", 1);
    struct kcache *n = kcache_new("EndpointSlice", 1);
    struct kcache_iter it = {0, NULL};
    const struct kslice *s, *old_obj;
    const void *old_ent;
    struct kcache_event ev;
    const char *key;
    uint64_t ch;
    char name[32];
    int i, seen = 0;

    (void)state;
    assert_true(kcache_decoded(c));
    for (i = 0; i < 200; i++) { /* past the first bucket growth */
        char sl[1024];
        snprintf(name, sizeof(name), "web-%d", i);
        snprintf(sl, sizeof(sl), SLICE("%s", EPS_A), name);
        assert_int_equal(apply(c, "ADDED", sl, &ev), KCACHE_APPLIED);
        /* The event's JSON outlives the line for the watcher's hooks. */
        assert_non_null(ev.obj);
        assert_string_equal(json_string_value(json_object_get(
                                json_object_get(ev.obj, "metadata"), "name")),
                            name);
    }
    assert_int_equal(kcache_size(c), 200);
    assert_null(kcache_get(c, "shop/web-7")); /* no JSON kept */
    s = kcache_find(c, "shop/web-7");
    assert_non_null(s);
    assert_string_equal(s->name, "web-7");
    while ((s = kcache_next(c, &it, &key)) != NULL) {
        assert_string_equal(key + strlen("shop/"), s->name);
        seen++;
    }
    assert_int_equal(seen, 200);
    assert_int_equal(apply(c, "DELETED", SLICE("web-7", "[]"), &ev),
                     KCACHE_APPLIED);
    assert_null(kcache_find(c, "shop/web-7"));
    assert_int_equal(kcache_size(c), 199);

    /* A relist with the same content is no change; one slice gone and
     * one changed are. */
    for (i = 0; i < 200; i++) {
        char sl[1024];
        if (i == 7)
            continue;
        snprintf(name, sizeof(name), "web-%d", i);
        snprintf(sl, sizeof(sl), SLICE("%s", EPS_A), name);
        assert_int_equal(kcache_put(n, obj(sl), NULL), 0);
    }
    ch = kcache_changes(c);
    old_obj = kcache_find(c, "shop/web-3");
    old_ent = ent_of(c, "shop/web-3");
    assert_int_equal(kcache_replace(c, n), 0);
    assert_int_equal(kcache_changes(c), ch);
    assert_int_equal(kcache_size(n), 0);
    /* What did not change stays as it was, entry and object: the new
     * ones, made during the list, are what a relist frees. */
    assert_ptr_equal(kcache_find(c, "shop/web-3"), old_obj);
    assert_ptr_equal(ent_of(c, "shop/web-3"), old_ent);
    assert_int_equal(kcache_size(c), 199);
    assert_int_equal(kcache_put(n, obj(SLICE("web-1", "[]")), NULL), 0);
    assert_int_equal(kcache_replace(c, n), 198);
    assert_int_equal(kcache_changes(c), ch + 1);
    assert_int_equal(kcache_size(c), 1);
    kcache_free(c);
    kcache_free(n);
    assert_int_equal(intern_count(), 0);
}

/* Put slice shop/<name> at resourceVersion <rv>, its one endpoint at <ip>,
 * into <c>. */
static void
put_rv(struct kcache *c, const char *name, const char *rv, const char *ip)
{
    char sl[1024];

    snprintf(sl, sizeof(sl),
             "{'kind':'EndpointSlice','metadata':{'namespace':'shop','name':"
             "'%s','resourceVersion':'%s','labels':{'kubernetes.io/"
             "service-name':'web'}},'addressType':'IPv4','ports':[{'port':"
             "80}],'endpoints':[{'addresses':['%s']}]}",
             name, rv, ip);
    assert_int_equal(kcache_put(c, obj(sl), NULL), 0);
}

/* One slice of a list: name, resourceVersion, address. */
struct item {
    const char *name, *rv, *ip;
};

/* A list of <n> items (a fresh cache on base <c>) that then replaces
 * <c>; the keys that vanished. */
static size_t
relist(struct kcache *c, const struct item *v, size_t n)
{
    struct kcache *l = kcache_new("EndpointSlice", 1);
    size_t i, gone;

    assert_non_null(l);
    kcache_set_base(l, c);
    for (i = 0; i < n; i++)
        put_rv(l, v[i].name, v[i].rv, v[i].ip);
    gone = kcache_replace(c, l);
    kcache_free(l);
    return gone;
}

/* The first endpoint's address of the slice at <key> in <c>. */
static const uint8_t *
ip_of(const struct kcache *c, const char *key)
{
    const struct kslice *sl = kcache_find(c, key);

    assert_non_null(sl);
    assert_true(sl->neps > 0);
    return sl->eps[0].ip;
}

/* A list on a base keeps the base's object for what it lists at the same
 * resourceVersion, without decoding it again (shown here by a listed
 * copy whose content differs: the server never sends one), and takes
 * what it lists at another version; what the base lost meanwhile goes. */
static void
test_list_on_base(void **state)
{
    /* a: same version, other content; b: a new version; x: a version
     * that is not a number, other content; c: new. */
    static const struct item first[] = {{"a", "10", "198.18.1.1"},
                                        {"b", "12", "198.18.1.2"},
                                        {"x", "x1", "198.18.1.9"},
                                        {"c", "13", "198.18.1.3"}};
    /* a at a new version, its content the same as held. */
    static const struct item second[] = {{"a", "20", "198.18.0.1"},
                                         {"b", "12", "198.18.1.2"},
                                         {"x", "x1", "198.18.1.9"},
                                         {"c", "13", "198.18.1.3"}};
    /* a at that version, other content. */
    static const struct item third[] = {{"a", "20", "198.18.3.1"},
                                        {"b", "12", "198.18.1.2"},
                                        {"x", "x1", "198.18.1.9"},
                                        {"c", "13", "198.18.1.3"}};
    struct kcache *c = kcache_new("EndpointSlice", 1);
    struct kcache *n;
    const struct kslice *a, *b, *x;
    json_t *gone;

    (void)state;
    put_rv(c, "a", "10", "198.18.0.1");
    put_rv(c, "b", "11", "198.18.0.2");
    put_rv(c, "x", "x1", "198.18.0.9");
    a = kcache_find(c, "shop/a");
    b = kcache_find(c, "shop/b");
    x = kcache_find(c, "shop/x");
    assert_int_equal(relist(c, first, 4), 0);
    assert_int_equal(kcache_size(c), 4);
    assert_ptr_equal(kcache_find(c, "shop/a"), a);
    assert_int_equal(ip_of(c, "shop/a")[3], 1);
    assert_int_equal(ip_of(c, "shop/a")[2], 0); /* kept */
    assert_ptr_not_equal(kcache_find(c, "shop/b"), b);
    assert_int_equal(ip_of(c, "shop/b")[2], 1); /* new */
    assert_ptr_not_equal(kcache_find(c, "shop/x"), x);
    assert_int_equal(ip_of(c, "shop/x")[2], 1);
    assert_int_equal(ip_of(c, "shop/c")[2], 1);

    /* An object listed at a new version with the same content keeps its
     * old memory and takes the new version: the list after that one
     * reuses it at that version. */
    assert_int_equal(relist(c, second, 4), 0);
    assert_ptr_equal(kcache_find(c, "shop/a"), a);
    assert_int_equal(relist(c, third, 4), 0);
    assert_ptr_equal(kcache_find(c, "shop/a"), a);
    assert_int_equal(ip_of(c, "shop/a")[2], 0); /* not decoded again */

    /* The base loses a listed object before the list ends (no watch runs
     * while a list does, but the cache must not keep a mark): it goes. */
    n = kcache_new("EndpointSlice", 1);
    kcache_set_base(n, c);
    put_rv(n, "a", "20", "198.18.2.1");
    put_rv(n, "c", "13", "198.18.2.3");
    gone = obj("{'kind':'EndpointSlice','metadata':{'namespace':'shop',"
               "'name':'a'}}");
    assert_int_equal(kcache_del(c, gone, NULL), 1);
    json_decref(gone);
    assert_int_equal(kcache_replace(c, n), 2); /* b and x vanished */
    assert_int_equal(kcache_size(c), 1);
    assert_null(kcache_find(c, "shop/a"));
    assert_non_null(kcache_find(c, "shop/c"));
    kcache_free(c);
    kcache_free(n);
    assert_int_equal(intern_count(), 0);
}

static void
test_intern(void **state)
{
    const char *a, *b, *c;

    (void)state;
    a = intern_str("node-a");
    b = intern_get("node-a-and-more", 6);
    c = intern_str("node-b");
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c);
    assert_int_equal(intern_count(), 2);
    assert_ptr_equal(intern_ref(a), a);
    intern_put(a);
    intern_put(b);
    assert_int_equal(intern_count(), 2); /* one reference left */
    intern_put(a);
    intern_put(c);
    intern_put(NULL);
    assert_int_equal(intern_count(), 0);
    assert_int_equal(intern_bytes(), 0);
}

/* README: "about 80 bytes per endpoint in the cache", for slices shaped
 * like the control-plane bench's (address, three conditions, nodeName,
 * targetRef). Counted by glibc's allocator: under a sanitizer, which
 * brings its own, there is nothing to count. */
static void
test_bytes_per_endpoint(void **state)
{
    struct kcache *c = kcache_new("EndpointSlice", 1);
    size_t before = mallinfo2().uordblks, after;
    struct err e;
    int i, j;

    (void)state;
    for (i = 0; i < 400; i++) {
        char svc[32], name[40], addr[32], pod[48];
        json_t *eps = json_array(), *o;
        snprintf(svc, sizeof(svc), "svc-%05d", i);
        snprintf(name, sizeof(name), "%s-x", svc);
        for (j = 0; j < 25; j++) {
            snprintf(addr, sizeof(addr), "198.19.%d.%d", (i * 25 + j) >> 8,
                     (i * 25 + j) & 255);
            snprintf(pod, sizeof(pod), "%s-%d", svc, j);
            json_array_append_new(
                eps, json_pack("{s:[s],s:{s:b,s:b,s:b},s:s,s:{s:s,s:s,s:s}}",
                               "addresses", addr, "conditions", "ready", 1,
                               "serving", 1, "terminating", 0, "nodeName",
                               "node-1", "targetRef", "kind", "Pod",
                               "namespace", "bench", "name", pod));
        }
        o = json_pack("{s:{s:s,s:s,s:{s:s}},s:s,s:o,s:[{s:s,s:s,s:i}]}",
                      "metadata", "name", name, "namespace", "bench", "labels",
                      "kubernetes.io/service-name", svc, "addressType", "IPv4",
                      "endpoints", eps, "ports", "name", "http", "protocol",
                      "TCP", "port", 8080);
        assert_int_equal(kcache_put(c, o, &e), 0);
    }
    after = mallinfo2().uordblks;
    if (after > before)
        assert_in_range((after - before) / (400 * 25), 40, 100);
    kcache_free(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_skipped_slice),
        cmocka_unit_test(test_equal),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_list_on_base),
        cmocka_unit_test(test_intern),
        cmocka_unit_test(test_bytes_per_endpoint),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
