/*
 * fuzz_translate.c - libFuzzer target for the translation of whole
 * Service and EndpointSlice objects into a service table
 * (watcher/translate.c, translate_build()).
 *
 * The input is a JSON array of objects. Each goes into the Service cache
 * or the EndpointSlice cache by its "kind" (without one: a slice if it has
 * "addressType" or "endpoints"), through kcache_put() as a list does.
 * The caches are then translated four ways: node mode with and without a
 * service-proxy-name and a policy, and edge mode. Every object also goes
 * through the Service decoder (ksvc.c) twice, whatever its kind: the two
 * decodings must be equal.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kcache.h"
#include "ksvc.h"
#include "log.h"
#include "translate.h"

#define MAX_OBJECTS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct saddr node_addrs[2];
static struct tbl_service policy;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *why;

    (void)argc;
    (void)argv;
    log_setup(LOG_ERROR, LOG_TEXT);
    if (parse_ip("198.18.1.1", 0, &node_addrs[0], &why) < 0
        || parse_ip("2001:2::1", 0, &node_addrs[1], &why) < 0)
        abort();
    policy.balance = TBL_BAL_LEASTCONN;
    policy.connect_timeout_ms = 1000;
    policy.idle_timeout_ms = 60000;
    policy.retries = 2;
    policy.max_conns = 100;
    return 0;
}

static int
is_slice(const json_t *o)
{
    const char *kind = json_string_value(json_object_get(o, "kind"));

    if (kind != NULL)
        return strcmp(kind, "EndpointSlice") == 0;
    return json_object_get(o, "addressType") != NULL
           || json_object_get(o, "endpoints") != NULL;
}

/* The memo's table, at its first build and at a second that reuses every
 * record, equals <want> (built without). */
static void
same_through_memo(const struct kcache *svcs, const struct kcache *eps,
                  const struct translate_opts *base, const struct table *want)
{
    struct translate_memo *m = translate_memo_new();
    struct translate_opts o = *base;
    struct translate_stats st;
    struct err e;
    int round;
    size_t i;

    if (m == NULL)
        return;
    o.stats = &st;
    o.memo = m;
    for (round = 0; round < 2; round++) {
        struct table *t = table_new();
        if (t == NULL || translate_build(svcs, eps, &o, t, &e) < 0)
            abort();
        if (t->nservices != want->nservices || t->nksvcs != want->nksvcs
            || (round == 1 && st.translated != 0))
            abort();
        for (i = 0; i < t->nservices; i++)
            if (!tbl_service_equal(table_service(t, i), table_service(want, i)))
                abort();
        for (i = 0; i < t->nksvcs; i++)
            if (!tbl_ksvc_equal(table_ksvc(t, i), table_ksvc(want, i)))
                abort();
        table_unref(t);
    }
    translate_memo_free(m);
}

/* ksvc_decode() is a function of the object alone. */
static void
check_ksvc(const json_t *o)
{
    struct ksvc *a = ksvc_decode(o), *b = ksvc_decode(o);

    if (a == NULL || b == NULL || !ksvc_equal(a, b) || a->stamp == b->stamp
        || ksvc_bytes(a) != ksvc_bytes(b))
        abort();
    ksvc_free(a);
    ksvc_free(b);
}

static void
build(const struct kcache *svcs, const struct kcache *eps, int variant)
{
    struct translate_opts o;
    struct translate_stats st;
    struct table *t = table_new();
    struct err e;
    size_t i;

    if (t == NULL)
        return;
    memset(&o, 0, sizeof(o));
    o.node_name = variant == 3 ? NULL : "node-a";
    o.node_zone = variant == 1 ? "z1" : NULL;
    o.node_addrs = node_addrs;
    o.n_node_addrs = variant == 2 ? 0 : 2;
    o.service_proxy_name = variant == 2 ? "ferry" : NULL;
    o.policy = variant == 1 ? &policy : NULL;
    o.stats = &st;
    o.edge = variant == 3;
    /* The kernel dataplane's paths (kernel services, redirected proxy
     * services, annotations) on two of the four variants. */
    o.kernel = variant == 0 || variant == 3;
    /* The proxy dataplane's redirect steering on a third. */
    o.redirect = variant == 2;
    err_clear(&e);
    if (translate_build(svcs, eps, &o, t, &e) < 0)
        abort(); /* only running out of memory fails a build */
    if (st.emitted != t->nservices || st.kernel != t->nksvcs)
        abort();
    for (i = 0; i < t->nksvcs; i++) {
        const struct tbl_ksvc *k = table_ksvc(t, i);
        if (k->name[0] == '\0' || k->port == 0
            || (k->redirect && (k->proto != TBL_PROTO_TCP || k->ncluster_eps
                                || k->nlocal_eps)))
            abort();
    }
    for (i = 0; i < t->nservices; i++) {
        const struct tbl_service *s = table_service(t, i);
        if (s->name[0] == '\0' || s->nfrontends == 0)
            abort();
    }
    same_through_memo(svcs, eps, &o, t);
    table_freeze(t, 1);
    table_unref(t);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kcache *svcs, *eps;
    json_error_t je;
    json_t *root, *o;
    struct err e;
    size_t i;
    int v;

    root = json_loadb((const char *)data, size, 0, &je);
    if (root == NULL)
        return 0;
    if (!json_is_array(root) || json_array_size(root) > MAX_OBJECTS) {
        json_decref(root);
        return 0;
    }
    svcs = kcache_new("Service", 1);
    eps = kcache_new("EndpointSlice", 1);
    if (svcs == NULL || eps == NULL)
        abort();
    json_array_foreach(root, i, o)
    {
        check_ksvc(o);
        err_clear(&e);
        json_incref(o); /* kcache_put() takes a reference */
        if (kcache_put(is_slice(o) ? eps : svcs, o, &e) < 0
            && e.msg[0] == '\0')
            abort();
    }
    json_decref(root);
    for (v = 0; v < 4; v++)
        build(svcs, eps, v);
    kcache_free(svcs);
    kcache_free(eps);
    return 0;
}
