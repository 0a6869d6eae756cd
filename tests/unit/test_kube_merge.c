/* Kubernetes mode's merge of the file's services with the API's
 * (kube_merge() in proxy/node/kube.c): what wins a clash, what is noted,
 * the order, the VIPs and the generation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "failalloc.h"
#include "kube.h"

/* A table of services "name=fe1,fe2;name2=fe" (frontends IP:port),
 * frozen at <gen>. */
static struct table *
mk(const char *spec, uint64_t gen)
{
    struct table *t = table_new();
    char buf[1024], *svc, *save1;

    assert_non_null(t);
    snprintf(buf, sizeof(buf), "%s", spec);
    for (svc = strtok_r(buf, ";", &save1); svc != NULL;
         svc = strtok_r(NULL, ";", &save1)) {
        struct tbl_service s;
        struct saddr fe[8];
        char *eq = strchr(svc, '='), *a, *save2;
        const char *why;
        struct err e;

        assert_non_null(eq);
        *eq = '\0';
        memset(&s, 0, sizeof(s));
        s.name = svc;
        for (a = strtok_r(eq + 1, ",", &save2); a != NULL;
             a = strtok_r(NULL, ",", &save2)) {
            assert_true(s.nfrontends < 8);
            assert_int_equal(parse_hostport(a, &fe[s.nfrontends], 0, &why), 0);
            s.nfrontends++;
        }
        s.frontends = fe;
        err_clear(&e);
        assert_int_equal(table_add_service(t, &s, &e), 0);
    }
    table_freeze(t, gen);
    return t;
}

/* "name,name,..." of <t>'s services in order. */
static const char *
names(const struct table *t)
{
    static char out[1024];
    size_t i, n = 0;

    out[0] = '\0';
    for (i = 0; i < t->nservices; i++)
        n += (size_t)snprintf(out + n, sizeof(out) - n, "%s%s", i ? "," : "",
                              table_service(t, i)->name);
    return out;
}

/* The VIPs' IPs, in order. */
static const char *
vips(const struct table *t)
{
    static char out[1024];
    size_t i, n = 0;

    out[0] = '\0';
    for (i = 0; i < t->nvips; i++) {
        char a[SADDR_STR_MAX];
        n += (size_t)snprintf(out + n, sizeof(out) - n, "%s%s", i ? "," : "",
                              saddr_ip_str(&t->vips[i], a, sizeof(a)));
    }
    return out;
}

struct seen {
    int n;
    char text[1024];
};

static void
on_note(void *arg, const struct skip_note *n)
{
    struct seen *s = arg;
    size_t l = strlen(s->text);

    s->n++;
    snprintf(s->text + l, sizeof(s->text) - l, "%s%s %s %s: %s", l ? "|" : "",
             skip_kind_text[n->kind], skip_reason_text[n->reason], n->obj,
             n->what);
}

static struct table *
merge(const struct table *st, const struct table *api, int want_vips,
      uint64_t gen, struct skip_set *refused)
{
    struct saddr np[1];
    const char *why;
    struct table *t;
    struct err e;

    assert_int_equal(parse_ip("198.18.1.1", 0, &np[0], &why), 0);
    err_clear(&e);
    t = kube_merge(st, api, np, 1, want_vips, NULL, 0, gen, refused, &e);
    assert_non_null(t);
    assert_true(t->frozen);
    assert_int_equal(t->generation, gen);
    return t;
}

static void
test_both_empty(void **state)
{
    struct table *st = mk("", 3), *api = mk("", 4), *t;
    struct skip_set *ref = skip_set_new();

    (void)state;
    t = merge(NULL, NULL, 1, 7, ref);
    assert_int_equal(t->nservices, 0);
    assert_int_equal(t->nvips, 0);
    table_unref(t);
    t = merge(st, api, 1, 8, ref);
    assert_int_equal(t->nservices, 0);
    assert_int_equal(skip_set_size(ref), 0);
    table_unref(t);
    table_unref(st);
    table_unref(api);
    skip_set_free(ref);
}

static void
test_statics_only(void **state)
{
    struct table *st = mk("web=198.18.0.10:80;db=198.18.0.11:5432", 2), *t;

    (void)state;
    /* Before the first sync there is no API table (NULL); an empty one
     * after a sync of an empty cluster is the same. The file's services
     * never become VIPs: the file names addresses the host has. */
    t = merge(st, NULL, 1, 3, NULL);
    assert_string_equal(names(t), "web,db");
    assert_int_equal(t->nvips, 0);
    assert_int_equal(table_find(t, "web")->nfrontends, 1);
    table_unref(t);
    table_unref(st);
}

static void
test_api_only_and_vips(void **state)
{
    struct table *api = mk("shop/web:http=198.18.0.10:80,198.18.5.5:80,"
                           "198.18.1.1:31080;"
                           "shop/db:pg=198.18.0.11:5432,198.18.0.10:5432",
                           9),
                 *t;

    (void)state;
    t = merge(NULL, api, 1, 10, NULL);
    assert_string_equal(names(t), "shop/web:http,shop/db:pg");
    /* Every frontend IP but the NodePort address, once. */
    assert_string_equal(vips(t), "198.18.0.10,198.18.5.5,198.18.0.11");
    table_unref(t);
    /* vip_interface none: no VIPs. */
    t = merge(NULL, api, 0, 11, NULL);
    assert_int_equal(t->nvips, 0);
    assert_int_equal(t->nservices, 2);
    table_unref(t);
    table_unref(api);
}

/* Nothing but the API's services: the merge copies the API table whole
 * (table_add_services_of()). Every service is found again by name and
 * by each frontend, shares its arrays with the API's, and the merged
 * table takes more services as any other does. */
static void
test_api_only_is_a_copy(void **state)
{
    struct table *api = mk("shop/web:http=198.18.0.10:80,198.18.5.5:80;"
                           "shop/db:pg=198.18.0.11:5432,198.18.0.10:5432;"
                           "shop/q:amqp=198.18.0.12:5672",
                           9),
                 *t, *st;
    struct err e;
    size_t i, j;

    (void)state;
    t = merge(NULL, api, 1, 10, NULL);
    assert_int_equal(t->nservices, api->nservices);
    for (i = 0; i < api->nservices; i++) {
        const struct tbl_service *a = table_service(api, i);
        const struct tbl_service *m = table_find(t, a->name);
        assert_ptr_equal(m, table_service(t, i));
        assert_ptr_equal(m->arrays, a->arrays);
        assert_true(tbl_service_equal(m, a));
        for (j = 0; j < a->nfrontends; j++)
            assert_ptr_equal(table_find_frontend(t, &a->frontends[j]), m);
    }
    assert_null(table_find(t, "shop/none:x"));
    assert_string_equal(vips(t), "198.18.0.10,198.18.5.5,198.18.0.11,"
                                 "198.18.0.12");
    table_unref(t);
    /* Into a table that is not empty, it refuses. */
    st = mk("a/b:c=127.0.0.1:8080", 1);
    t = table_new();
    assert_non_null(t);
    err_clear(&e);
    assert_int_equal(table_add_service(t, table_service(st, 0), &e), 0);
    assert_int_equal(table_add_services_of(t, api, &e), -1);
    table_unref(t);
    /* A copy takes a service more, and refuses a clash, as a table
     * built one service at a time does. */
    t = table_new();
    assert_non_null(t);
    assert_int_equal(table_add_services_of(t, api, &e), 0);
    assert_int_equal(table_add_service(t, table_service(st, 0), &e), 0);
    assert_ptr_equal(table_find(t, "a/b:c"), table_service(t, 3));
    assert_int_equal(table_add_service(t, table_service(api, 1), &e), -1);
    assert_int_equal(t->nservices, 4);
    table_unref(t);
    table_unref(st);
    table_unref(api);
}

/* The API's table with the dispatch service (the kernel's redirect
 * under the proxy dataplane): still a copy, the dispatch service added;
 * an API service on the dispatch address is the one left out. */
static void
test_api_with_dispatch(void **state)
{
    struct table *api = mk("shop/web:http=198.18.0.10:80;"
                           "shop/np:http=0.0.0.0:30080",
                           9),
                 *clash = mk("shop/web:http=198.18.0.10:80;"
                             "shop/odd:http=0.0.0.0:10263",
                             9),
                 *t;
    struct skip_set *ref = skip_set_new();
    struct tbl_service d, d2[2];
    struct saddr fe[1], fe2[1], np[1];
    const char *why;
    struct err e;

    (void)state;
    memset(&d, 0, sizeof(d));
    d.name = "ferry/redirect";
    d.reach = TBL_REACH_DISPATCH;
    assert_int_equal(parse_hostport("0.0.0.0:10263", &fe[0], 0, &why), 0);
    d.frontends = fe;
    d.nfrontends = 1;
    assert_int_equal(parse_ip("198.18.1.1", 0, &np[0], &why), 0);
    err_clear(&e);
    t = kube_merge(NULL, api, np, 1, 1, &d, 1, 10, ref, &e);
    assert_non_null(t);
    assert_string_equal(names(t), "shop/web:http,shop/np:http,ferry/redirect");
    assert_ptr_equal(table_find(t, "shop/web:http")->arrays,
                     table_service(api, 0)->arrays);
    assert_ptr_equal(table_find_frontend(t, &fe[0]),
                     table_find(t, "ferry/redirect"));
    assert_int_equal(skip_set_size(ref), 0);
    table_unref(t);
    t = kube_merge(NULL, clash, np, 1, 1, &d, 1, 11, ref, &e);
    assert_non_null(t);
    assert_string_equal(names(t), "ferry/redirect,shop/web:http");
    assert_int_equal(skip_set_size(ref), 1);
    table_unref(t);
    /* Two dispatch services (the second for ClientIP affinity): both
     * after the API's, each on its own port. */
    memcpy(&d2[0], &d, sizeof(d));
    memset(&d2[1], 0, sizeof(d2[1]));
    d2[1].name = "ferry/redirect-affinity";
    d2[1].reach = TBL_REACH_DISPATCH;
    d2[1].affinity_timeout_ms = 10800000;
    assert_int_equal(parse_hostport("0.0.0.0:10264", &fe2[0], 0, &why), 0);
    d2[1].frontends = fe2;
    d2[1].nfrontends = 1;
    t = kube_merge(NULL, api, np, 1, 1, d2, 2, 12, ref, &e);
    assert_non_null(t);
    assert_string_equal(names(t), "shop/web:http,shop/np:http,"
                                  "ferry/redirect,ferry/redirect-affinity");
    assert_ptr_equal(table_find_frontend(t, &fe2[0]),
                     table_find(t, "ferry/redirect-affinity"));
    table_unref(t);
    skip_set_free(ref);
    table_unref(clash);
    table_unref(api);
}

static void
test_name_clash_file_wins(void **state)
{
    struct table *st = mk("shop/web:http=127.0.0.1:8080", 1);
    struct table *api = mk(
                     "shop/web:http=198.18.0.10:80;shop/db:pg=198.18.0.11:5432",
                     2),
                 *t;
    struct skip_set *ref = skip_set_new();
    struct seen s = {0};

    (void)state;
    t = merge(st, api, 1, 3, ref);
    assert_string_equal(names(t), "shop/web:http,shop/db:pg");
    /* The file's service kept its frontend; the API one is left out
     * whole, VIPs included. */
    assert_int_equal(saddr_port(&table_find(t, "shop/web:http")->frontends[0]),
                     8080);
    assert_string_equal(vips(t), "198.18.0.11");
    assert_int_equal(skip_set_each_new(ref, NULL, on_note, &s), 1);
    assert_string_equal(s.text, "Service conflict shop/web:http: duplicate "
                                "service name \"shop/web:http\"");
    table_unref(t);
    table_unref(st);
    table_unref(api);
    skip_set_free(ref);
}

static void
test_address_overlap(void **state)
{
    /* The file holds 198.18.0.10:80. API web wants it and another
     * address: web is not served at all. API other shares only the IP
     * (another port) and alt only the port (another IP): both served. */
    struct table *st = mk("file=198.18.0.10:80", 1);
    struct table *api = mk("shop/web:http=198.18.5.5:80,198.18.0.10:80;"
                           "shop/other:x=198.18.0.10:81;"
                           "shop/alt:y=198.18.0.12:80",
                           2),
                 *t;
    struct skip_set *ref = skip_set_new(), *ref2 = skip_set_new();
    struct seen s = {0};

    (void)state;
    t = merge(st, api, 1, 3, ref);
    assert_string_equal(names(t), "file,shop/other:x,shop/alt:y");
    assert_null(table_find(t, "shop/web:http"));
    assert_non_null(table_find_frontend(t, &table_service(st, 0)->frontends[0]));
    assert_string_equal(
        table_find_frontend(t, &table_service(st, 0)->frontends[0])->name, "file");
    /* 198.18.5.5 (web's other frontend) is no VIP: web is out. */
    assert_string_equal(vips(t), "198.18.0.10,198.18.0.12");
    assert_int_equal(skip_set_each_new(ref, NULL, on_note, &s), 1);
    assert_string_equal(s.text,
                        "Service conflict shop/web:http: listen address "
                        "198.18.0.10:80 already used by service \"file\"");
    table_unref(t);
    /* The same merge again notes the same thing: nothing new to say. */
    t = merge(st, api, 1, 4, ref2);
    assert_int_equal(skip_set_each_new(ref2, ref, on_note, &s), 0);
    table_unref(t);
    table_unref(st);
    table_unref(api);
    skip_set_free(ref);
    skip_set_free(ref2);
}

static void
test_order_and_generation(void **state)
{
    struct table *st = mk("zeta=127.0.0.1:1;alpha=127.0.0.1:2", 40);
    struct table *api = mk("b/z:p=198.18.0.1:1;a/a:p=198.18.0.2:1", 50), *t,
                 *t2;

    (void)state;
    /* File services first in file order, then the API's in table order;
     * nothing is sorted. The generation is the one given, not the
     * inputs'. */
    t = merge(st, api, 0, 7, NULL);
    assert_string_equal(names(t), "zeta,alpha,b/z:p,a/a:p");
    assert_int_equal(t->generation, 7);
    t2 = merge(st, api, 0, 8, NULL);
    assert_string_equal(names(t2), names(t));
    assert_int_equal(t2->generation, 8);
    /* The inputs are only borrowed. */
    assert_int_equal(st->generation, 40);
    assert_int_equal(api->nservices, 2);
    table_unref(t);
    table_unref(t2);
    table_unref(st);
    table_unref(api);
}

/* The file's services sharing an address through server names stay
 * together, with their listener entry; an API service on that address
 * is kept out (README: SNI routing). */
static void
test_sni_address_kept(void **state)
{
    static const char yaml[] =
        "listeners: [{listen: 198.18.0.1:443, default_service: dflt}]\n"
        "services:\n"
        "  - {name: a, listen: 198.18.0.1:443, sni: a.example,\n"
        "     backends: [{address: 198.18.2.1:443}]}\n"
        "  - {name: b, listen: 198.18.0.1:443, sni: b.example,\n"
        "     backends: [{address: 198.18.2.2:443}]}\n"
        "  - {name: dflt, listen: 198.18.0.1:443,\n"
        "     backends: [{address: 198.18.2.3:443}]}\n";
    struct table *api = mk("ns/x=198.18.0.1:443", 4), *t;
    struct skip_set *ref = skip_set_new();
    struct seen seen = {0, ""};
    struct saddr at;
    const char *why;
    struct err e;
    struct conf *c = conf_load_buf("test.yaml", yaml, strlen(yaml), &e);

    (void)state;
    if (c == NULL)
        fail_msg("%d:%d %s", e.line, e.col, e.msg);
    t = merge(c->table, api, 0, 9, ref);
    assert_string_equal(names(t), "a,b,dflt");
    assert_int_equal(parse_hostport("198.18.0.1:443", &at, 0, &why), 0);
    assert_non_null(table_find_listener(t, &at));
    assert_string_equal(table_find_listener(t, &at)->default_service,
                        "dflt");
    assert_int_equal(skip_set_each_new(ref, NULL, on_note, &seen), 1);
    assert_non_null(strstr(seen.text, "ns/x"));
    table_unref(t);
    table_unref(api);
    skip_set_free(ref);
    conf_free(c);
}

/* Each allocation of a merge refused in turn (failalloc.h): no table
 * and a reason, or the table made without refusals (a conflict's note
 * may go missing: it is then only not counted). */
static void
test_out_of_memory(void **state)
{
    struct table *st = mk("web=198.18.0.10:80;db=198.18.0.11:5432", 2);
    struct table *api = mk("shop/web:http=198.18.0.10:80,198.18.5.5:80;"
                           "shop/db:pg=198.18.0.12:5432",
                           9);
    struct skip_set *ref = skip_set_new();
    struct saddr np[1];
    char want_names[1024], want_vips[1024];
    const char *why;
    struct table *t;
    struct err e;
    size_t want_notes;
    long k, refused = 0;

    (void)state;
    assert_int_equal(parse_ip("198.18.1.1", 0, &np[0], &why), 0);
    t = merge(st, api, 1, 5, ref);
    snprintf(want_names, sizeof(want_names), "%s", names(t));
    snprintf(want_vips, sizeof(want_vips), "%s", vips(t));
    want_notes = skip_set_size(ref);
    assert_true(want_notes > 0); /* shop/web:http's clash */
    table_unref(t);
    skip_set_free(ref);
    for (k = 0; k < 5000; k++) {
        ref = skip_set_new();
        err_clear(&e);
        failalloc_at(k);
        t = kube_merge(st, api, np, 1, 1, NULL, 0, 6, ref, &e);
        failalloc_at(-1);
        if (t == NULL) {
            refused++;
            assert_true(failalloc_failed());
            assert_true(e.msg[0] != '\0');
        } else {
            assert_true(t->frozen);
            assert_string_equal(names(t), want_names);
            assert_string_equal(vips(t), want_vips);
            assert_true(skip_set_size(ref) <= want_notes);
            table_unref(t);
        }
        skip_set_free(ref);
        if (!failalloc_failed())
            break;
    }
    assert_true(k < 5000 && refused > 0);
    table_unref(st);
    table_unref(api);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_both_empty),
        cmocka_unit_test(test_statics_only),
        cmocka_unit_test(test_api_only_and_vips),
        cmocka_unit_test(test_api_only_is_a_copy),
        cmocka_unit_test(test_api_with_dispatch),
        cmocka_unit_test(test_name_clash_file_wins),
        cmocka_unit_test(test_address_overlap),
        cmocka_unit_test(test_order_and_generation),
        cmocka_unit_test(test_sni_address_kept),
        cmocka_unit_test(test_out_of_memory),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
