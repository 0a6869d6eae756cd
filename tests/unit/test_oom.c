/*
 * test_oom.c - what the watcher's caches, the JSON parser and the table
 * do when memory runs out: each allocation of an operation is made to
 * fail in turn (failalloc.h), and the operation must say so and leave
 * what it was given as it was. Under ASan the same runs also show that
 * nothing leaks on any of those paths.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "failalloc.h"
#include "intern.h"
#include "jdoc.h"
#include "kcache.h"
#include "kslice.h"
#include "ksvc.h"
#include "sqjson.h"
#include "table.h"
#include "tblfix.h"

/* Past this many allocations an operation is taken to loop. */
#define MAX_STEPS 2000

#define SLICE(name, rv, eps)                                                   \
    "{'kind':'EndpointSlice','metadata':{'namespace':'shop','name':'" name     \
    "','resourceVersion':'" rv "','labels':{'kubernetes.io/service-name':"     \
    "'web'}},'addressType':'IPv4','ports':[{'name':'http','port':8080}],"      \
    "'endpoints':" eps "}"

#define EPS_A                                                                  \
    "[{'addresses':['198.18.0.1'],'nodeName':'node-a','zone':'z1',"            \
    "'targetRef':{'name':'web-1'},'conditions':{'ready':true},"                \
    "'hints':{'forZones':[{'name':'z1'}]}},"                                   \
    "{'addresses':['198.18.0.2'],'nodeName':'node-b','zone':'z2'}]"

#define EPS_B                                                                  \
    "[{'addresses':['198.18.0.3'],'nodeName':'node-c','zone':'z3',"            \
    "'targetRef':{'name':'web-3'}},{'addresses':['198.18.0.4']},"              \
    "{'addresses':['198.18.0.5'],'nodeName':'node-c'}]"

#define SERVICE(rv, ip)                                                        \
    "{'kind':'Service','metadata':{'namespace':'shop','name':'web',"           \
    "'resourceVersion':'" rv "','labels':{'app':'web'},'annotations':{"        \
    "'ferry.dev/balance':'leastconn'}},'spec':{'type':'NodePort',"             \
    "'clusterIP':'" ip "','clusterIPs':['" ip "'],'ports':[{'name':'http',"   \
    "'port':80,'targetPort':8080,'nodePort':31080}],'selector':{'app':"       \
    "'web'},'sessionAffinity':'None'}}"

/* A watch line of event <type> carrying <sqobj>. */
static char *
line_of(const char *type, const char *sqobj)
{
    char *s = NULL;

    assert_true(asprintf(&s, "{\"type\":\"%s\",\"object\":%s}", type,
                         dq(sqobj))
                > 0);
    return s;
}

/* Every allocation of a parse refused in turn: the parse fails and says
 * memory ran out, not that the text is wrong; then it succeeds. */
static void
test_jdoc(void **state)
{
    const char *text = dq(SLICE("web-x", "5", EPS_A));
    struct jdoc d = {0};
    struct err e;
    char *copy;
    long k;
    int rc;

    (void)state;
    for (k = 0; k < MAX_STEPS; k++) {
        copy = strdup(text);
        assert_non_null(copy);
        failalloc_at(k);
        err_clear(&e);
        rc = jdoc_parse(&d, copy, strlen(copy), &e);
        failalloc_at(-1);
        if (!failalloc_failed()) {
            assert_int_equal(rc, 0);
            assert_int_equal(d.nomem, 0);
            assert_true(jdoc_get(&d, 0, "endpoints") > 0);
            free(copy);
            break;
        }
        assert_int_equal(rc, -1);
        assert_int_equal(d.nomem, 1);
        assert_non_null(strstr(e.msg, "out of memory"));
        jdoc_free(&d);
        free(copy);
    }
    assert_true(k > 0 && k < MAX_STEPS);
    jdoc_free(&d);
    /* A text at fault is not taken for memory. */
    copy = strdup("{\"a\":");
    assert_int_equal(jdoc_parse(&d, copy, strlen(copy), &e), -1);
    assert_int_equal(d.nomem, 0);
    jdoc_free(&d);
    free(copy);
}

/* One cache of <kind> holding <sq_before> at resourceVersion 5. */
static struct kcache *
cache_with(const char *kind, const char *sq_before)
{
    struct kcache *c = kcache_new(kind, 1);
    struct kcache_event ev;
    struct err e;
    char *l;

    assert_non_null(c);
    l = line_of("ADDED", sq_before);
    assert_int_equal(kcache_apply_line(c, l, strlen(l), &ev, &e),
                     KCACHE_APPLIED);
    free(l);
    assert_string_equal(kcache_rv(c), "5");
    return c;
}

/* The cached object at <key>, decoded or JSON. */
static const void *
find(const struct kcache *c, const char *key)
{
    return kcache_decoded(c) ? kcache_find(c, key)
                             : (const void *)kcache_get(c, key);
}

/*
 * Watch line <line> applied to a cache holding <sq_before> (key
 * shop/<key>) with each allocation refused in turn. A refused line is
 * SKIP_NO_MEMORY, and the cache is as it was: the same object at the
 * same key, the same size, the RV still 5 (so that the reflector's next
 * watch brings the event again). Returns how many runs failed.
 */
static long
each_failure(const char *kind, const char *sq_before, const char *key,
             const char *line)
{
    struct kcache_event ev;
    struct err e;
    long k, failures = 0;

    for (k = 0; k < MAX_STEPS; k++) {
        struct kcache *c = cache_with(kind, sq_before);
        const void *before = find(c, key);
        size_t n = kcache_size(c);
        uint64_t changes = kcache_changes(c);
        int rc;

        assert_non_null(before);
        failalloc_at(k);
        err_clear(&e);
        rc = kcache_apply_line(c, line, strlen(line), &ev, &e);
        failalloc_at(-1);
        if (!failalloc_failed()) {
            assert_int_equal(rc, KCACHE_APPLIED);
            assert_string_equal(kcache_rv(c), "6");
            kcache_free(c);
            break;
        }
        failures++;
        if (rc == KCACHE_APPLIED) {
            /* Only an allocation the cache can do without was refused. */
            if (strcmp(kcache_rv(c), "6") != 0)
                fail_msg("step %ld: applied, but the RV is %s", k,
                         kcache_rv(c));
            assert_string_equal(kcache_rv(c), "6");
        } else {
            assert_int_equal(rc, -1);
            if (ev.skip != SKIP_NO_MEMORY)
                fail_msg("step %ld: %s", k, e.msg);
            assert_non_null(strstr(e.msg, "out of memory"));
            assert_string_equal(kcache_rv(c), "5");
            assert_int_equal(kcache_size(c), n);
            assert_int_equal(kcache_changes(c), changes);
            assert_ptr_equal(find(c, key), before);
        }
        kcache_free(c);
    }
    assert_true(k < MAX_STEPS);
    assert_int_equal(intern_count(), 0);
    return failures;
}

static void
test_slice_lines(void **state)
{
    char *l;

    (void)state;
    l = line_of("MODIFIED", SLICE("web-x", "6", EPS_B));
    assert_true(each_failure("EndpointSlice", SLICE("web-x", "5", EPS_A),
                             "shop/web-x", l)
                > 0);
    free(l);
    l = line_of("ADDED", SLICE("web-y", "6", EPS_B));
    assert_true(each_failure("EndpointSlice", SLICE("web-x", "5", EPS_A),
                             "shop/web-x", l)
                > 0);
    free(l);
    l = line_of("DELETED", SLICE("web-x", "6", EPS_A));
    assert_true(each_failure("EndpointSlice", SLICE("web-x", "5", EPS_A),
                             "shop/web-x", l)
                > 0);
    free(l);
}

static void
test_service_lines(void **state)
{
    char *l;

    (void)state;
    l = line_of("MODIFIED", SERVICE("6", "198.18.0.11"));
    assert_true(each_failure("Service", SERVICE("5", "198.18.0.10"),
                             "shop/web", l)
                > 0);
    free(l);
}

/* A kind kept as JSON (jansson's allocations refused as well). */
static void
test_json_kind_lines(void **state)
{
    char *l;

    (void)state;
    l = line_of("MODIFIED", "{'kind':'Node','metadata':{'namespace':'x',"
                            "'name':'n1','resourceVersion':'6'},"
                            "'spec':{'podCIDR':'198.18.4.0/24'}}");
    assert_true(each_failure("Node",
                             "{'kind':'Node','metadata':{'namespace':'x',"
                             "'name':'n1','resourceVersion':'5'}}",
                             "x/n1", l)
                > 0);
    free(l);
}

/* A list page's items put with each allocation refused in turn: the
 * item is refused as SKIP_NO_MEMORY and the cache keeps what it had. */
static void
test_list_page(void **state)
{
    char page[2 * 4096 + 16];
    struct jdoc d = {0};
    struct err e;
    long k;

    (void)state;
    snprintf(page, sizeof(page), "{\"items\":[%s,", dq(SLICE("a", "7", EPS_A)));
    snprintf(page + strlen(page), sizeof(page) - strlen(page), "%s]}",
             dq(SLICE("b", "8", EPS_B)));
    assert_int_equal(jdoc_parse(&d, page, strlen(page), &e), 0);
    for (k = 0; k < MAX_STEPS; k++) {
        struct kcache *c = kcache_new("EndpointSlice", 1);
        int items = jdoc_get(&d, 0, "items"), it, ok = 1, rc;
        enum skip_reason why;
        size_t n;

        failalloc_at(k);
        jdoc_foreach(&d, items, it)
        {
            n = kcache_size(c);
            err_clear(&e);
            rc = kcache_put_doc(c, &d, it, &why, &e);
            if (rc < 0) {
                ok = 0;
                assert_int_equal(why, SKIP_NO_MEMORY);
                assert_int_equal(kcache_size(c), n);
            }
        }
        failalloc_at(-1);
        if (!failalloc_failed()) {
            assert_true(ok);
            assert_int_equal(kcache_size(c), 2);
            kcache_free(c);
            break;
        }
        assert_false(ok && kcache_size(c) != 2);
        kcache_free(c);
    }
    assert_true(k > 0 && k < MAX_STEPS);
    jdoc_free(&d);
    assert_int_equal(intern_count(), 0);
}

/* A table derived from another, a service replaced in it and one added,
 * each allocation refused in turn: the step fails, and the table it came
 * from is untouched and still whole. */
static void
test_table_derive(void **state)
{
    enum { N = TBL_CHUNK * TBL_PAGE + 10 };
    static struct saddr fes[N + 2][1];
    static struct tbl_backend bes[N + 2][2];
    static char names[N + 2][32];
    struct tbl_service s;
    struct table *a = table_new();
    struct err e;
    size_t at = N - 3;
    char fe[32];
    long k;

    (void)state;
    assert_non_null(a);
    fill_table(a, N, names, fes, bes);
    snprintf(names[N + 1], sizeof(names[N + 1]), "svc-new");
    for (k = 0; k < MAX_STEPS; k++) {
        struct table *b;
        int ok = 0;

        failalloc_at(k);
        b = table_derive(a);
        if (b != NULL) {
            snprintf(fe, sizeof(fe), "127.0.%zu.%zu:80", at / 200,
                     at % 200 + 1);
            make_service(&s, names[at], fe, fes[N], bes[N], 40000);
            if (table_replace_service(b, at, &s, &e) == 0) {
                make_service(&s, names[N + 1], "127.0.99.1:80", fes[N + 1],
                        bes[N + 1], 41000);
                ok = table_add_service(b, &s, &e) == 0;
            }
        }
        failalloc_at(-1);
        /* a as it was, whatever happened to b. */
        assert_int_equal(a->nservices, N);
        assert_int_equal(
            saddr_port(&table_service(a, at)->backends[0].addr), 30000);
        assert_null(table_find(a, "svc-new"));
        assert_ptr_equal(table_find(a, names[at]), table_service(a, at));
        if (!failalloc_failed()) {
            assert_true(ok);
            assert_int_equal(b->nservices, N + 1);
            assert_int_equal(
                saddr_port(&table_service(b, at)->backends[0].addr), 40000);
            assert_non_null(table_find(b, "svc-new"));
            table_unref(b);
            break;
        }
        if (b != NULL && ok) /* only what it could do without */
            assert_non_null(table_find(b, "svc-new"));
        table_unref(b);
    }
    assert_true(k > 0 && k < MAX_STEPS);
    table_unref(a);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jdoc),
        cmocka_unit_test(test_slice_lines),
        cmocka_unit_test(test_service_lines),
        cmocka_unit_test(test_json_kind_lines),
        cmocka_unit_test(test_list_page),
        cmocka_unit_test(test_table_derive),
    };

    json_set_alloc_funcs(failalloc_malloc, free);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
