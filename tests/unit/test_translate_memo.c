/* The translator's memo: thousands of random Service and EndpointSlice
 * changes, and after each batch the table built through the memo (which
 * translates only what changed) must equal the table built from scratch
 * from the same objects: every service, kernel service, counter and skip
 * note. The objects are drawn to collide (shared ClusterIPs and external
 * IPs, ports renamed under their slices, bad annotations, endpoints on
 * other nodes and zones) so that conflicts between Services and every
 * selection rule are played through both paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "failalloc.h"
#include "translate.h"

#define NSVC   24
#define NROUND 400

static unsigned rng_state = 12345;

static unsigned
rnd(unsigned n)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return (rng_state >> 8) % n;
}

static const char *const namespaces[] = {"default", "shop", "kube-system"};

static void
svc_ident(unsigned i, const char **ns, char *name, size_t len)
{
    *ns = namespaces[i % 3];
    snprintf(name, len, "svc-%u", i);
}

/* A random Service number <i>, at a random version. */
static json_t *
make_service(unsigned i)
{
    static const char *const types[] = {"ClusterIP", "NodePort",
                                        "LoadBalancer"};
    static const char *const balance[] = {"leastconn", "maglev", "bogus"};
    const char *ns;
    char name[32], ip[32], ext[32];
    json_t *ports = json_array(), *ann = json_object(), *spec, *svc;
    unsigned k, np = 1 + rnd(3);

    svc_ident(i, &ns, name, sizeof(name));
    /* Few addresses, so that Services collide now and then. */
    snprintf(ip, sizeof(ip), "198.18.0.%u", 1 + rnd(NSVC + 4));
    snprintf(ext, sizeof(ext), "198.18.9.%u", 1 + rnd(4));
    for (k = 0; k < np; k++) {
        json_t *p = json_pack("{s:s, s:i, s:s}", "name",
                              rnd(4) == 0 ? "other" : (k ? "b" : "a"), "port",
                              80 + (int)k, "protocol",
                              rnd(5) == 0 ? "UDP" : "TCP");
        if (rnd(2))
            json_object_set_new(p, "nodePort",
                                json_integer(30000 + (int)(i * 4 + k)));
        json_array_append_new(ports, p);
    }
    if (rnd(3) == 0)
        json_object_set_new(ann, "ferry.dev/balance",
                            json_string(balance[rnd(3)]));
    if (rnd(4) == 0)
        json_object_set_new(ann, "ferry.dev/dataplane", json_string("proxy"));
    spec = json_pack("{s:s, s:[s], s:s, s:o}", "clusterIP", ip, "clusterIPs",
                     ip, "type", types[rnd(3)], "ports", ports);
    if (rnd(3) == 0)
        json_object_set_new(spec, "externalIPs", json_pack("[s]", ext));
    if (rnd(3) == 0)
        json_object_set_new(spec, "externalTrafficPolicy",
                            json_string("Local"));
    if (rnd(4) == 0)
        json_object_set_new(spec, "internalTrafficPolicy",
                            json_string("Local"));
    if (rnd(4) == 0)
        json_object_set_new(spec, "sessionAffinity", json_string("ClientIP"));
    if (rnd(8) == 0)
        json_object_set_new(spec, "clusterIP", json_string("None"));
    svc = json_pack("{s:s, s:{s:s, s:s, s:o}, s:o}", "kind", "Service",
                    "metadata", "namespace", ns, "name", name, "annotations",
                    ann, "spec", spec);
    assert_non_null(svc);
    return svc;
}

/* A random slice number <j> of Service <i>. */
static json_t *
make_slice(unsigned i, unsigned j)
{
    static const char *const nodes[] = {"node-a", "node-b"};
    static const char *const zones[] = {"z1", "z2"};
    const char *ns;
    char name[32], sname[48];
    json_t *eps = json_array(), *ports = json_array();
    unsigned k, n = rnd(5);

    svc_ident(i, &ns, name, sizeof(name));
    snprintf(sname, sizeof(sname), "%s-%u", name, j);
    for (k = 0; k < n; k++) {
        char ip[32], pod[32];
        json_t *ep;
        snprintf(ip, sizeof(ip), "198.18.%u.%u", 10 + i, 1 + rnd(6));
        snprintf(pod, sizeof(pod), "pod-%u", rnd(6));
        ep = json_pack("{s:[s], s:{s:b, s:b, s:b}, s:s, s:s, s:{s:s}}",
                       "addresses", ip, "conditions", "ready", rnd(4) != 0,
                       "serving", rnd(3) != 0, "terminating", rnd(4) == 0,
                       "nodeName", nodes[rnd(2)], "zone", zones[rnd(2)],
                       "targetRef", "name", pod);
        if (rnd(4) == 0)
            json_object_set_new(ep, "hints",
                                json_pack("{s:[{s:s}]}", "forZones", "name",
                                          zones[rnd(2)]));
        json_array_append_new(eps, ep);
    }
    json_array_append_new(ports, json_pack("{s:s, s:i, s:s}", "name",
                                           rnd(5) == 0 ? "b" : "a", "port",
                                           8080 + (int)rnd(2), "protocol",
                                           rnd(6) == 0 ? "UDP" : "TCP"));
    return json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s}}, s:o, s:o}", "kind",
                     "EndpointSlice", "addressType", "IPv4", "metadata",
                     "namespace", ns, "name", sname, "labels",
                     "kubernetes.io/service-name", name, "endpoints", eps,
                     "ports", ports);
}

/* The JSON of the Services in the cache, by key: the cache keeps only
 * their decoded form, and a relist puts the same objects again. */
static json_t *shadow;

/* The keys of the objects a round changed, as the watcher collects them
 * for translate_patch(). */
struct touched {
    char svc[64][64], slice[64][64];
    size_t nsvc, nslice;
};

static struct touched touched;

static void
touch(const json_t *o, int service)
{
    const json_t *md = json_object_get(o, "metadata");
    char(*v)[64] = service ? touched.svc : touched.slice;
    size_t *n = service ? &touched.nsvc : &touched.nslice;

    if (*n == 64)
        return;
    snprintf(v[*n], 64, "%s/%s",
             json_string_value(json_object_get(md, "namespace")),
             json_string_value(json_object_get(md, "name")));
    ++*n;
}

/* A slice deleted: the watcher names its Service too (from the slice's
 * last state). */
static void
touch_owner(const json_t *o)
{
    const json_t *md = json_object_get(o, "metadata");

    if (touched.nsvc == 64)
        return;
    snprintf(touched.svc[touched.nsvc++], 64, "%s/%s",
             json_string_value(json_object_get(md, "namespace")),
             json_string_value(json_object_get(
                 json_object_get(md, "labels"), "kubernetes.io/service-name")));
}

static int
is_service(const json_t *o)
{
    const char *k = json_string_value(json_object_get(o, "kind"));

    return k != NULL && strcmp(k, "Service") == 0;
}

static void
shadow_key(const json_t *o, char *key, size_t len)
{
    const json_t *md = json_object_get(o, "metadata");

    snprintf(key, len, "%s/%s",
             json_string_value(json_object_get(md, "namespace")),
             json_string_value(json_object_get(md, "name")));
}

static void
put(struct kcache *c, json_t *o)
{
    struct err e;
    char key[128];

    touch(o, is_service(o));
    if (is_service(o)) {
        if (shadow == NULL)
            shadow = json_object();
        shadow_key(o, key, sizeof(key));
        json_object_set(shadow, key, o);
    }
    err_clear(&e);
    assert_int_equal(kcache_put(c, o, &e), 0);
}

static void
del(struct kcache *c, json_t *o)
{
    struct err e;
    char key[128];

    touch(o, is_service(o));
    if (!is_service(o))
        touch_owner(o);
    if (is_service(o) && shadow != NULL) {
        shadow_key(o, key, sizeof(key));
        json_object_del(shadow, key);
    }
    err_clear(&e);
    assert_true(kcache_del(c, o, &e) >= 0);
    json_decref(o);
}

/* Every Service of the cache decoded anew, as a relist does. */
static void
relist(struct kcache *svcs)
{
    json_t *copies = json_array(), *v;
    const char *key;
    size_t x;

    json_object_foreach(shadow, key, v)
    {
        json_array_append_new(copies, json_deep_copy(v));
    }
    assert_int_equal(json_array_size(copies), kcache_size(svcs));
    json_array_foreach(copies, x, v) put(svcs, json_incref(v));
    json_decref(copies);
}

static void
shadow_clear(void)
{
    json_decref(shadow);
    shadow = NULL;
}

struct build {
    struct table *t;
    struct skip_set *skips;
    struct translate_stats st;
};

/* Allocations the last build or patch made (failalloc.h): where a
 * refused one is drawn from. */
static long last_allocs = 1;

/* The allocation to refuse next (-1: none), and the count after. */
static void
arm(long k)
{
    failalloc_at(k);
}

static void
disarm(void)
{
    long n = failalloc_count();

    failalloc_at(-1);
    if (n > 0)
        last_allocs = n;
}

/* A build through <memo> (or from scratch) with allocation <fail_at>
 * refused (-1: none). Returns 0, or -1 when the refusal made it fail
 * (<b> then holds nothing). */
static int
build_failing(struct kcache *svcs, struct kcache *slices,
              const struct translate_opts *base, struct translate_memo *memo,
              struct build *b, long fail_at)
{
    struct translate_opts o = *base;
    struct err e;
    int rc;

    memset(b, 0, sizeof(*b));
    b->t = table_new();
    b->skips = skip_set_new();
    assert_non_null(b->t);
    assert_non_null(b->skips);
    o.skips = b->skips;
    o.stats = &b->st;
    o.memo = memo;
    err_clear(&e);
    arm(fail_at);
    rc = translate_build(svcs, slices, &o, b->t, &e);
    disarm();
    if (rc == 0)
        return 0;
    assert_int_equal(rc, -1);
    assert_true(fail_at >= 0 && failalloc_failed());
    table_unref(b->t);
    skip_set_free(b->skips);
    memset(b, 0, sizeof(*b));
    return -1;
}

static void
build(struct kcache *svcs, struct kcache *slices,
      const struct translate_opts *base, struct translate_memo *memo,
      struct build *b)
{
    assert_int_equal(build_failing(svcs, slices, base, memo, b, -1), 0);
}

static void
copy_note(void *arg, const struct skip_note *n)
{
    assert_true(skip_set_add(arg, n) >= 0);
}

/* translate_patch() from <prev> with the keys touched and allocation
 * <fail_at> refused (-1: none): 1 with <b> made (its skip notes those of
 * <prev>, as the watcher keeps them), 0, or -1 when the refusal made it
 * fail (<b> then holds nothing). */
static int
patch_failing(struct kcache *svcs, struct kcache *slices,
              const struct translate_opts *base, struct translate_memo *memo,
              const struct build *prev, struct build *b, long fail_at)
{
    struct translate_opts o = *base;
    const char *sk[64], *lk[64];
    struct err e;
    size_t i, j;
    int rc;

    memset(b, 0, sizeof(*b));
    for (i = 0; i < touched.nsvc; i++)
        sk[i] = touched.svc[i];
    for (i = 0; i < touched.nslice; i++)
        lk[i] = touched.slice[i];
    b->skips = skip_set_new();
    skip_set_each_new(prev->skips, NULL, copy_note, b->skips);
    o.skips = b->skips;
    o.stats = &b->st;
    o.memo = memo;
    err_clear(&e);
    arm(fail_at);
    rc = translate_patch(svcs, slices, &o, prev->t, sk, touched.nsvc, lk,
                         touched.nslice, &b->t, &e);
    disarm();
    if (rc < 0) {
        assert_true(fail_at >= 0 && failalloc_failed());
        assert_null(b->t);
        skip_set_free(b->skips);
        memset(b, 0, sizeof(*b));
        return -1;
    }
    if (rc == 0) {
        assert_null(b->t);
        skip_set_free(b->skips);
        return 0;
    }
    /* What is not noted as changed is the table before's, shared. */
    assert_int_equal(b->t->base, prev->t->serial);
    assert_int_equal(b->t->nservices, prev->t->nservices);
    assert_int_equal(b->t->nksvcs, prev->t->nksvcs);
    for (i = 0; i < b->t->nservices; i++) {
        for (j = 0; j < b->t->ndsvcs && b->t->dsvcs[j] != i; j++)
            ;
        if (j == b->t->ndsvcs)
            assert_ptr_equal(table_service(b->t, i)->arrays,
                             table_service(prev->t, i)->arrays);
    }
    for (i = 0; i < b->t->nksvcs; i++) {
        for (j = 0; j < b->t->ndksvcs && b->t->dksvcs[j] != i; j++)
            ;
        if (j == b->t->ndksvcs)
            assert_ptr_equal(table_ksvc(b->t, i)->arrays, table_ksvc(prev->t, i)->arrays);
    }
    return 1;
}

static int
patch(struct kcache *svcs, struct kcache *slices,
      const struct translate_opts *base, struct translate_memo *memo,
      const struct build *prev, struct build *b)
{
    return patch_failing(svcs, slices, base, memo, prev, b, -1);
}

static void
build_free(struct build *b)
{
    table_unref(b->t);
    skip_set_free(b->skips);
}

static void
count_note(void *arg, const struct skip_note *n)
{
    fprintf(stderr, "only one has: %s: %s\n", n->obj, n->what);
    ++*(size_t *)arg;
}

static void
assert_same(const struct build *a, const struct build *b, unsigned round)
{
    size_t i;

    if (a->t->nservices != b->t->nservices || a->t->nksvcs != b->t->nksvcs)
        fail_msg("round %u: %zu/%zu services through the memo, %zu/%zu "
                 "from scratch",
                 round, a->t->nservices, a->t->nksvcs, b->t->nservices,
                 b->t->nksvcs);
    for (i = 0; i < a->t->nservices; i++)
        if (!tbl_service_equal(table_service(a->t, i), table_service(b->t, i)))
            fail_msg("round %u: service %zu (%s) differs", round, i,
                     table_service(a->t, i)->name);
    for (i = 0; i < a->t->nksvcs; i++)
        if (!tbl_ksvc_equal(table_ksvc(a->t, i), table_ksvc(b->t, i)))
            fail_msg("round %u: kernel service %zu (%s) differs", round, i,
                     table_ksvc(a->t, i)->name);
    assert_int_equal(a->st.services, b->st.services);
    assert_int_equal(a->st.skipped, b->st.skipped);
    assert_int_equal(a->st.ports_skipped, b->st.ports_skipped);
    assert_int_equal(a->st.conflicts, b->st.conflicts);
    assert_int_equal(a->st.emitted, b->st.emitted);
    assert_int_equal(a->st.kernel, b->st.kernel);
    assert_int_equal(a->st.no_local_internal, b->st.no_local_internal);
    assert_int_equal(a->st.no_local_external, b->st.no_local_external);
    assert_string_equal(a->st.first_conflict, b->st.first_conflict);
    assert_int_equal(skip_set_size(a->skips), skip_set_size(b->skips));
    {
        size_t extra = 0;
        skip_set_each_new(a->skips, b->skips, count_note, &extra);
        skip_set_each_new(b->skips, a->skips, count_note, &extra);
        assert_int_equal(extra, 0);
    }
}

/* Services whose arrays <b> shares with <a>. */
static size_t
shared(const struct build *a, const struct build *b)
{
    size_t i, n = 0;

    for (i = 0; i < b->t->nservices && i < a->t->nservices; i++)
        n += table_service(b->t, i)->backends != NULL
             && table_service(b->t, i)->backends == table_service(a->t, i)->backends;
    return n;
}

/* <kernel>: 0 the proxy dataplane listening, 1 the nftables dataplane,
 * 2 the proxy dataplane with redirect steering. */
static void
run(int kernel, int edge)
{
    struct kcache *svcs = kcache_new("Service", 1);
    struct kcache *slices = kcache_new("EndpointSlice", 1);
    struct translate_memo *memo = translate_memo_new();
    struct translate_opts o;
    struct saddr node[1];
    struct translate_memo *memo2 = translate_memo_new();
    struct build prev = {0}, prev2 = {0};
    const char *why;
    unsigned i, j, round, conflicts = 0, shares = 0, one = 0, patched = 0;
    unsigned adopted = 0, refused = 0;

    assert_non_null(memo);
    assert_non_null(memo2);
    memset(&o, 0, sizeof(o));
    parse_ip("198.18.1.1", 0, &node[0], &why);
    o.node_name = edge ? NULL : "node-a";
    o.node_zone = "z1";
    o.node_addrs = node;
    o.n_node_addrs = 1;
    o.kernel = kernel == 1;
    o.redirect = kernel == 2;
    o.edge = edge;
    for (i = 0; i < NSVC; i++) {
        put(svcs, make_service(i));
        for (j = 0; j < rnd(3); j++)
            put(slices, make_slice(i, j));
    }
    for (round = 0; round < NROUND; round++) {
        struct build inc = {0}, full, pat;
        unsigned k, n = 1 + rnd(3), single = rnd(3) == 0;
        touched.nsvc = touched.nslice = 0;
        if (single)
            n = 1;
        for (k = 0; k < n; k++) {
            unsigned what = rnd(10), s = rnd(NSVC);
            if (what < 4)
                put(slices, make_slice(s, rnd(3)));
            else if (what < 5)
                del(slices, make_slice(s, rnd(3)));
            else if (what < 8)
                put(svcs, make_service(s));
            else if (what < 9 && !single)
                del(svcs, make_service(s));
            else if (!single && rnd(10) == 0)
                /* The node's zone changes: every record is stale. */
                o.node_zone = o.node_zone[1] == '1' ? "z2" : "z1";
            else
                put(svcs, make_service(s));
        }
        if (rnd(40) == 0 && !single)
            relist(svcs); /* the same Services again, decoded anew */
        /* Now and then memory runs out in the first try (the watcher
         * keeps the table before and tries again at the next change):
         * the memo must not remember anything of the try. */
        if (rnd(3) == 0
            && build_failing(svcs, slices, &o, memo, &inc,
                             (long)rnd((unsigned)last_allocs))
                   < 0) {
            refused++;
            build(svcs, slices, &o, memo, &inc);
        } else if (inc.t != NULL && failalloc_failed()) {
            /* Made without one of its skip notes (translate.h): only
             * the note is missing, and the counters agree without it. */
            build_free(&inc);
            build(svcs, slices, &o, memo, &inc);
        } else if (inc.t == NULL) {
            build(svcs, slices, &o, memo, &inc);
        }
        build(svcs, slices, &o, NULL, &full);
        assert_same(&inc, &full, round);
        /* The watcher's way: a patch of the last table when the change
         * allows, a build through the memo otherwise; a table equal to
         * the last is given up for it. */
        memset(&pat, 0, sizeof(pat));
        if (prev2.t != NULL && rnd(3) == 0
            && patch_failing(svcs, slices, &o, memo2, &prev2, &pat,
                             (long)rnd((unsigned)last_allocs))
                   < 0)
            refused++;
        if (pat.t != NULL)
            patched++;
        else if (prev2.t != NULL && patch(svcs, slices, &o, memo2, &prev2, &pat))
            patched++;
        else
            build(svcs, slices, &o, memo2, &pat);
        table_freeze(pat.t, round + 1);
        assert_same(&pat, &full, round);
        if (prev2.t != NULL && pat.t->nservices == prev2.t->nservices
            && pat.t->nksvcs == prev2.t->nksvcs && rnd(2) == 0) {
            int same = 1;
            for (k = 0; k < pat.t->nservices; k++)
                same &= tbl_service_equal(table_service(pat.t, k),
                                          table_service(prev2.t, k));
            for (k = 0; k < pat.t->nksvcs; k++)
                same &= tbl_ksvc_equal(table_ksvc(pat.t, k), table_ksvc(prev2.t, k));
            if (same) { /* the new notes and counters stay */
                translate_memo_adopt(memo2, prev2.t);
                table_unref(pat.t);
                pat.t = prev2.t;
                prev2.t = NULL;
                adopted++;
            }
        }
        build_free(&prev2);
        prev2 = pat;
        conflicts += inc.st.conflicts > 0;
        if (single && prev.t != NULL) {
            /* One object changed: at most one Service translated, and
             * the others' services share the arrays of the table
             * before. */
            assert_true(inc.st.translated <= 1);
            one++;
            shares += shared(&prev, &inc) > 0;
        }
        build_free(&full);
        build_free(&prev);
        prev = inc;
    }
    build_free(&prev);
    build_free(&prev2);
    /* The draw did exercise what it is for. */
    assert_true(conflicts > 0);
    assert_true(one > 0 && shares > 0);
    assert_true(patched > 0 && patched < NROUND);
    assert_true(adopted > 0);
    assert_true(refused > 0);
    translate_memo_free(memo2);
    assert_true(translate_memo_size(memo) <= NSVC);
    translate_memo_free(memo);
    kcache_free(svcs);
    kcache_free(slices);
    shadow_clear();
}

/* A relist (every Service decoded anew, nothing changed) translates each
 * one again, and the table after it shares every service's and kernel
 * service's arrays with the table before: nothing changes downstream. */
static void
test_relist_changes_nothing(void **state)
{
    struct kcache *svcs = kcache_new("Service", 1);
    struct kcache *slices = kcache_new("EndpointSlice", 1);
    struct translate_memo *memo = translate_memo_new();
    struct translate_opts o;
    struct build a, b;
    size_t i;
    int kernel;

    (void)state;
    for (kernel = 0; kernel < 2; kernel++) {
        memset(&o, 0, sizeof(o));
        o.node_name = "node-a";
        o.kernel = kernel;
        for (i = 0; i < NSVC; i++) {
            put(svcs, make_service((unsigned)i));
            put(slices, make_slice((unsigned)i, 0));
        }
        build(svcs, slices, &o, memo, &a);
        relist(svcs);
        build(svcs, slices, &o, memo, &b);
        assert_int_equal(b.st.translated, kcache_size(svcs));
        assert_int_equal(a.t->nservices, b.t->nservices);
        assert_int_equal(a.t->nksvcs, b.t->nksvcs);
        assert_true(a.t->nservices + a.t->nksvcs > 0);
        for (i = 0; i < a.t->nservices; i++)
            assert_ptr_equal(table_service(a.t, i)->arrays, table_service(b.t, i)->arrays);
        for (i = 0; i < a.t->nksvcs; i++)
            assert_ptr_equal(table_ksvc(a.t, i)->arrays, table_ksvc(b.t, i)->arrays);
        build_free(&a);
        build_free(&b);
    }
    translate_memo_free(memo);
    kcache_free(svcs);
    kcache_free(slices);
    shadow_clear();
}

/* A relist as the reflector applies it (a staging cache that replaces
 * the cache) with one Service changed: every other Service keeps its
 * decoded object, and the build after it translates the changed one
 * only, with the table a build from scratch makes. */
static void
test_relist_translates_changes(void **state)
{
    struct kcache *svcs = kcache_new("Service", 1);
    struct kcache *slices = kcache_new("EndpointSlice", 1);
    struct kcache *staging = kcache_new("Service", 1);
    struct translate_memo *memo = translate_memo_new();
    struct translate_opts o;
    struct build a, b, full;
    const void *before, *other;
    const char *key;
    json_t *v;
    unsigned i;

    (void)state;
    memset(&o, 0, sizeof(o));
    o.node_name = "node-a";
    for (i = 0; i < NSVC; i++) {
        put(svcs, make_service(i));
        put(slices, make_slice(i, 0));
    }
    build(svcs, slices, &o, memo, &a);
    before = kcache_find(svcs, "shop/svc-1");
    other = kcache_find(svcs, "default/svc-0");
    assert_non_null(before);
    json_object_foreach(shadow, key, v)
    {
        json_t *c = json_deep_copy(v);
        struct err e;
        if (strcmp(key, "default/svc-0") == 0)
            json_object_set_new(
                json_object_get(json_object_get(c, "metadata"), "annotations"),
                "ferry.dev/retries", json_string("1"));
        assert_int_equal(kcache_put(staging, c, &e), 0);
    }
    assert_int_equal(kcache_replace(svcs, staging), 0);
    assert_ptr_equal(kcache_find(svcs, "shop/svc-1"), before);
    assert_ptr_not_equal(kcache_find(svcs, "default/svc-0"), other);
    build(svcs, slices, &o, memo, &b);
    assert_int_equal(b.st.translated, 1);
    build(svcs, slices, &o, NULL, &full);
    assert_same(&b, &full, 0);
    build_free(&a);
    build_free(&b);
    build_free(&full);
    translate_memo_free(memo);
    kcache_free(staging);
    kcache_free(svcs);
    kcache_free(slices);
    shadow_clear();
}

static void
test_memo_proxy(void **state)
{
    (void)state;
    run(0, 0);
}

static void
test_memo_kernel(void **state)
{
    (void)state;
    run(1, 0);
}

static void
test_memo_redirect(void **state)
{
    (void)state;
    run(2, 0);
}

static void
test_memo_edge(void **state)
{
    (void)state;
    run(0, 1);
}

int
main(void)
{
    const char *seed = getenv("FERRY_TEST_SEED");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memo_proxy),
        cmocka_unit_test(test_memo_kernel),
        cmocka_unit_test(test_memo_redirect),
        cmocka_unit_test(test_memo_edge),
        cmocka_unit_test(test_relist_changes_nothing),
        cmocka_unit_test(test_relist_translates_changes),
    };

    if (seed != NULL)
        rng_state = (unsigned)strtoul(seed, NULL, 10);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
