/*
 * test_table.c - the service table: building, lookups, the checks that
 * keep names and frontends unique, references, and service equality.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "table.h"
#include "tblfix.h"

static void
test_add_find(void **state)
{
    struct tbl_backend bes[2];
    struct tbl_service s;
    const struct tbl_service *got;
    struct saddr fes[1], probe;
    struct table *t = table_new();
    const char *why;
    struct err e;
    char name[16];
    int i;

    (void)state;
    assert_non_null(t);
    assert_int_equal(t->nservices, 0);
    assert_null(table_find(t, "a"));
    /* More than the initial capacity, to exercise growth. */
    for (i = 0; i < 20; i++) {
        char fe[32];
        snprintf(name, sizeof(name), "svc%d", i);
        snprintf(fe, sizeof(fe), "127.0.0.1:%d", 1000 + i);
        make_service(&s, name, fe, fes, bes, 9000);
        assert_int_equal(table_add_service(t, &s, &e), 0);
    }
    assert_int_equal(t->nservices, 20);
    got = table_find(t, "svc7");
    assert_non_null(got);
    assert_string_equal(got->name, "svc7");
    /* The table holds its own copies of the arrays. */
    assert_ptr_not_equal(got->frontends, fes);
    assert_ptr_not_equal(got->backends, bes);
    assert_int_equal(got->nbackends, 2);
    /* ...so reusing the caller's arrays for svc19 did not change svc7. */
    assert_string_equal(got->backends[1].name, "svc7-1");
    assert_int_equal(saddr_port(&got->frontends[0]), 1007);
    assert_null(table_find(t, "svc20"));

    assert_int_equal(parse_hostport("127.0.0.1:1013", &probe, 0, &why), 0);
    got = table_find_frontend(t, &probe);
    assert_non_null(got);
    assert_string_equal(got->name, "svc13");
    assert_int_equal(parse_hostport("127.0.0.2:1013", &probe, 0, &why), 0);
    assert_null(table_find_frontend(t, &probe));

    table_freeze(t, 42);
    assert_true(t->frozen);
    assert_int_equal(t->generation, 42);
    make_service(&s, "late", "127.0.0.1:2000", fes, bes, 9000);
    assert_int_equal(table_add_service(t, &s, &e), -1);
    assert_non_null(strstr(e.msg, "frozen"));
    table_unref(t);
}

static void
test_add_rejects(void **state)
{
    struct tbl_backend bes[2];
    struct tbl_service s;
    struct saddr fes[1];
    struct table *t = table_new();
    struct err e;

    (void)state;
    make_service(&s, "web", "127.0.0.1:80", fes, bes, 9000);
    assert_int_equal(table_add_service(t, &s, &e), 0);

    err_clear(&e);
    make_service(&s, "web", "127.0.0.1:81", fes, bes, 9000);
    assert_int_equal(table_add_service(t, &s, &e), -1);
    assert_string_equal(e.msg, "duplicate service name \"web\"");

    err_clear(&e);
    make_service(&s, "api", "127.0.0.1:80", fes, bes, 9000);
    assert_int_equal(table_add_service(t, &s, &e), -1);
    assert_string_equal(e.msg,
                        "listen address 127.0.0.1:80 already used by service "
                        "\"web\"");

    err_clear(&e);
    make_service(&s, "", "127.0.0.1:82", fes, bes, 9000);
    assert_int_equal(table_add_service(t, &s, &e), -1);
    assert_non_null(strstr(e.msg, "no name"));

    /* A failed add leaves the table as it was. */
    assert_int_equal(t->nservices, 1);
    make_service(&s, "api", "127.0.0.1:81", fes, bes, 9000);
    assert_int_equal(table_add_service(t, &s, NULL), 0);
    assert_int_equal(t->nservices, 2);
    table_unref(t);
}

static void
test_refs(void **state)
{
    struct tbl_backend bes[2];
    struct tbl_service s;
    struct saddr fes[1];
    struct table *t = table_new();

    (void)state;
    make_service(&s, "web", "127.0.0.1:80", fes, bes, 9000);
    assert_int_equal(table_add_service(t, &s, NULL), 0);
    table_freeze(t, 1);
    assert_ptr_equal(table_ref(t), t);
    assert_int_equal(atomic_load(&t->refs), 2);
    table_unref(t);
    assert_int_equal(atomic_load(&t->refs), 1);
    /* Still usable by the last holder. */
    assert_non_null(table_find(t, "web"));
    table_unref(t); /* frees; ASan reports a leak if anything is left */
    table_unref(NULL);
    assert_null(table_ref(NULL));
}

/* A table built from another's services shares their arrays; a copy
 * whose arrays were replaced gets copies of its own; each table frees
 * what it holds (ASan checks both ways). */
static void
test_shared_arrays(void **state)
{
    struct tbl_backend bes[2], other[2];
    struct tbl_service s, c;
    struct saddr fes[1], ofes[1];
    struct tbl_ksvc k;
    struct table *a = table_new(), *b = table_new(), *d = table_new();

    (void)state;
    make_service(&s, "web", "127.0.0.1:80", fes, bes, 9000);
    memset(&k, 0, sizeof(k));
    k.name = "ns/web:80";
    k.cluster_eps = bes;
    k.ncluster_eps = 2;
    assert_int_equal(table_add_service(a, &s, NULL), 0);
    assert_int_equal(table_add_ksvc(a, &k, NULL), 0);
    assert_ptr_not_equal(table_service(a, 0)->backends, bes);
    assert_non_null(table_service(a, 0)->arrays);
    table_freeze(a, 1);

    assert_int_equal(table_add_service(b, table_service(a, 0), NULL), 0);
    assert_int_equal(table_add_ksvc(b, table_ksvc(a, 0), NULL), 0);
    assert_ptr_equal(table_service(b, 0)->backends, table_service(a, 0)->backends);
    assert_ptr_equal(table_service(b, 0)->arrays, table_service(a, 0)->arrays);
    assert_ptr_equal(table_ksvc(b, 0)->cluster_eps, table_ksvc(a, 0)->cluster_eps);
    assert_true(tbl_service_equal(table_service(a, 0), table_service(b, 0)));
    assert_true(tbl_ksvc_equal(table_ksvc(a, 0), table_ksvc(b, 0)));

    /* A copy with other backends but the same owner is not shared, and
     * compares by content. */
    c = *table_service(a, 0);
    make_service(&s, "web2", "127.0.0.1:81", ofes, other, 9000);
    other[1].weight = 7;
    c.backends = other;
    assert_false(tbl_service_equal(&c, table_service(a, 0)));
    c.name = "web2";
    c.frontends = ofes;
    assert_int_equal(table_add_service(d, &c, NULL), 0);
    assert_ptr_not_equal(table_service(d, 0)->backends, other);
    assert_ptr_not_equal(table_service(d, 0)->arrays, table_service(a, 0)->arrays);
    assert_int_equal(table_service(d, 0)->backends[1].weight, 7);

    table_unref(a);
    /* b's arrays outlive a. */
    assert_int_equal(table_service(b, 0)->backends[0].weight,
                     bes[0].weight);
    table_unref(b);
    table_unref(d);
}

static void
test_service_equal(void **state)
{
    struct tbl_backend ba[2], bb[2];
    struct tbl_service a, b;
    struct saddr fa[1], fb[1];
    const char *why;

    (void)state;
    make_service(&a, "web", "127.0.0.1:80", fa, ba, 9000);
    make_service(&b, "web", "127.0.0.1:80", fb, bb, 9000);
    assert_true(tbl_service_equal(&a, &b));
    assert_true(tbl_service_equal(&a, &a));

    bb[1].weight = 2;
    assert_false(tbl_service_equal(&a, &b));
    bb[1].weight = 1;
    bb[0].flags |= TBL_BE_TERMINATING;
    assert_false(tbl_service_equal(&a, &b));
    bb[0].flags = ba[0].flags;
    bb[0].name = "other";
    assert_false(tbl_service_equal(&a, &b));
    bb[0].name = ba[0].name;
    assert_int_equal(parse_ip("127.0.0.2", 9000, &bb[0].addr, &why), 0);
    assert_false(tbl_service_equal(&a, &b));
    bb[0].addr = ba[0].addr;
    assert_true(tbl_service_equal(&a, &b));

    b.nbackends = 1;
    assert_false(tbl_service_equal(&a, &b));
    b.nbackends = 2;
    assert_int_equal(parse_hostport("127.0.0.1:81", &fb[0], 0, &why), 0);
    assert_false(tbl_service_equal(&a, &b));
    fb[0] = fa[0];

    b.balance = TBL_BAL_RANDOM;
    assert_false(tbl_service_equal(&a, &b));
    b.balance = a.balance;
    b.connect_timeout_ms++;
    assert_false(tbl_service_equal(&a, &b));
    b.connect_timeout_ms--;
    b.idle_timeout_ms++;
    assert_false(tbl_service_equal(&a, &b));
    b.idle_timeout_ms--;
    b.hc_node_port = 32100;
    assert_false(tbl_service_equal(&a, &b));
    a.hc_node_port = 32100;
    assert_true(tbl_service_equal(&a, &b));
    b.retries = 0;
    assert_false(tbl_service_equal(&a, &b));
    b.retries = a.retries;
    b.max_conns = 10;
    assert_false(tbl_service_equal(&a, &b));
    b.max_conns = 0;
    b.affinity_timeout_ms = 10800000;
    assert_false(tbl_service_equal(&a, &b));
    b.affinity_timeout_ms = 0;
    b.name = "api";
    assert_false(tbl_service_equal(&a, &b));
    b.name = "web";
    assert_true(tbl_service_equal(&a, &b));
}

/*
 * The policy fields of a service, each with a change that must make two
 * services unequal. FIELD() records where each sits, so that the test can
 * check the list covers struct tbl_service: a field added to the struct
 * and not here leaves a hole the test reports (unless it is small enough
 * to hide in the padding at the very end), and one added here must come
 * with its change, which tbl_service_policy_equal() (and so svc_matches())
 * must notice.
 */
static void
ch_name(struct tbl_service *s)
{
    s->name = "api";
}

static void
ch_origin(struct tbl_service *s)
{
    s->origin = TBL_ORIGIN_API;
}

static void
ch_balance(struct tbl_service *s)
{
    s->balance = TBL_BAL_RANDOM;
}

static void
ch_connect_timeout(struct tbl_service *s)
{
    s->connect_timeout_ms++;
}

static void
ch_idle_timeout(struct tbl_service *s)
{
    s->idle_timeout_ms++;
}

static void
ch_retries(struct tbl_service *s)
{
    s->retries = 0;
}

static void
ch_max_conns(struct tbl_service *s)
{
    s->max_conns = 10;
}

static void
ch_affinity(struct tbl_service *s)
{
    s->affinity_timeout_ms = 10800000;
}

static void
ch_check_type(struct tbl_service *s)
{
    s->check.type = TBL_CHECK_TCP;
}

static void
ch_check_interval(struct tbl_service *s)
{
    s->check.interval_ms++;
}

static void
ch_check_timeout(struct tbl_service *s)
{
    s->check.timeout_ms++;
}

static void
ch_check_rise(struct tbl_service *s)
{
    s->check.rise++;
}

static void
ch_check_fall(struct tbl_service *s)
{
    s->check.fall++;
}

static void
ch_check_port(struct tbl_service *s)
{
    s->check.port = 8081;
}

static void
ch_check_status_min(struct tbl_service *s)
{
    s->check.status_min = 201;
}

static void
ch_check_status_max(struct tbl_service *s)
{
    s->check.status_max = 204;
}

static void
ch_check_path(struct tbl_service *s)
{
    s->check.path = "/ready";
}

static void
ch_send_proxy(struct tbl_service *s)
{
    s->send_proxy = TBL_SEND_PROXY_V2;
}

static void
ch_accept_proxy(struct tbl_service *s)
{
    s->accept_proxy = 1;
}

static void
ch_accept_proxy_timeout(struct tbl_service *s)
{
    s->accept_proxy_timeout_ms = 250;
}

/* Source rules: policy_service() points at pol_allow and pol_deny (one
 * prefix each); the changes point elsewhere or count one more. */
static struct cidr pol_allow[2], pol_deny[2], alt_cidrs[2], same_allow[1];

static void
ch_allow(struct tbl_service *s)
{
    s->allow = alt_cidrs; /* 198.18.0.0/16 for /15 */
}

static void
ch_nallow(struct tbl_service *s)
{
    s->nallow = 2;
}

static void
ch_deny(struct tbl_service *s)
{
    s->deny = alt_cidrs;
}

static void
ch_ndeny(struct tbl_service *s)
{
    s->ndeny = 2;
}

static void
ch_max_per_source(struct tbl_service *s)
{
    s->max_conns_per_source = 4;
}

static void
ch_rate_per_source(struct tbl_service *s)
{
    s->conn_rate_per_source = 4;
}

static void
ch_drain_timeout(struct tbl_service *s)
{
    s->drain_timeout_ms = 1000;
}

static void
ch_hc_node_port(struct tbl_service *s)
{
    s->hc_node_port = 32100;
}

static void
ch_reach(struct tbl_service *s)
{
    s->reach = TBL_REACH_REDIRECT;
}

static void
ch_proto(struct tbl_service *s)
{
    s->proto = TBL_PROTO_UDP;
}

static void
ch_udp_idle(struct tbl_service *s)
{
    s->udp_idle_timeout_ms = 1234;
}

static void
ch_udp_responses(struct tbl_service *s)
{
    s->udp_responses = 1;
}

static void
ch_max_flows(struct tbl_service *s)
{
    s->max_flows = 7;
}

struct field {
    const char *name;
    size_t off, size, align;
    /* NULL for the frontend and backend lists (not policy). */
    void (*change)(struct tbl_service *s);
};

#define FIELD(f, ch)                                                           \
    {                                                                          \
        #f, offsetof(struct tbl_service, f),                                   \
            sizeof(((struct tbl_service *)0)->f),                              \
            _Alignof(__typeof__(((struct tbl_service *)0)->f)), ch             \
    }

/* In declaration order. */
static const struct field service_fields[] = {
    FIELD(name, ch_name),
    FIELD(pos, NULL), /* where a table holds it: not compared */
    FIELD(origin, ch_origin),
    FIELD(frontends, NULL),
    FIELD(nfrontends, NULL),
    FIELD(backends, NULL),
    FIELD(nbackends, NULL),
    FIELD(balance, ch_balance),
    FIELD(connect_timeout_ms, ch_connect_timeout),
    FIELD(idle_timeout_ms, ch_idle_timeout),
    FIELD(retries, ch_retries),
    FIELD(max_conns, ch_max_conns),
    FIELD(affinity_timeout_ms, ch_affinity),
    FIELD(drain_timeout_ms, ch_drain_timeout),
    FIELD(check, ch_check_type),
    FIELD(send_proxy, ch_send_proxy),
    FIELD(accept_proxy, ch_accept_proxy),
    FIELD(accept_proxy_timeout_ms, ch_accept_proxy_timeout),
    FIELD(allow, ch_allow),
    FIELD(nallow, ch_nallow),
    FIELD(deny, ch_deny),
    FIELD(ndeny, ch_ndeny),
    FIELD(max_conns_per_source, ch_max_per_source),
    FIELD(conn_rate_per_source, ch_rate_per_source),
    FIELD(hc_node_port, ch_hc_node_port),
    FIELD(reach, ch_reach),
    FIELD(sni, NULL),
    FIELD(nsni, NULL),
    FIELD(proto, ch_proto),
    FIELD(udp_idle_timeout_ms, ch_udp_idle),
    FIELD(udp_responses, ch_udp_responses),
    FIELD(max_flows, ch_max_flows),
    FIELD(excluded, NULL),
    FIELD(nexcluded, NULL),
    FIELD(arrays, NULL),
};

/* The parts of the check, which counts as one field above. */
static void (*const check_changes[])(struct tbl_service *s) = {
    ch_check_type,       ch_check_interval,   ch_check_timeout,
    ch_check_rise,       ch_check_fall,       ch_check_port,
    ch_check_status_min, ch_check_status_max, ch_check_path,
};

/* The list above covers struct tbl_service: between two fields, and after
 * the last, there is only padding (less than the next one's alignment). */
static void
test_service_fields_listed(void **state)
{
    size_t i, end = 0, n = sizeof(service_fields) / sizeof(service_fields[0]);

    (void)state;
    for (i = 0; i < n; i++) {
        const struct field *f = &service_fields[i];
        if (f->off < end || f->off - end >= f->align)
            fail_msg("struct tbl_service has a field before \"%s\" that "
                     "service_fields does not list",
                     f->name);
        end = f->off + f->size;
    }
    if (sizeof(struct tbl_service) - end >= _Alignof(struct tbl_service))
        fail_msg("struct tbl_service has a field after \"%s\" that "
                 "service_fields does not list",
                 service_fields[n - 1].name);
}

static void
policy_service(struct tbl_service *s, struct saddr *fes,
               struct tbl_backend *bes)
{
    const char *why;

    make_service(s, "web", "127.0.0.1:80", fes, bes, 9000);
    s->max_conns = 100;
    s->check.type = TBL_CHECK_HTTP;
    s->check.interval_ms = 5000;
    s->check.timeout_ms = 2000;
    s->check.rise = 2;
    s->check.fall = 3;
    s->check.status_min = 200;
    s->check.status_max = 399;
    s->check.path = "/healthz";
    assert_int_equal(parse_cidr("198.18.0.0/15", 0, &pol_allow[0], &why), 0);
    assert_int_equal(parse_cidr("2001:2::/48", 0, &pol_allow[1], &why), 0);
    assert_int_equal(parse_cidr("198.18.0.7/32", 0, &pol_deny[0], &why), 0);
    assert_int_equal(parse_cidr("::1/128", 0, &pol_deny[1], &why), 0);
    assert_int_equal(parse_cidr("198.18.0.0/16", 0, &alt_cidrs[0], &why), 0);
    assert_int_equal(parse_cidr("198.18.0.7/32", 0, &alt_cidrs[1], &why), 0);
    s->allow = pol_allow;
    s->nallow = 1;
    s->deny = pol_deny;
    s->ndeny = 1;
}

/* Changing any one policy field makes two services unequal, by policy and
 * as a whole; frontends and backends count only as a whole. */
static void
test_service_policy_each_field(void **state)
{
    struct tbl_backend ba[2], bb[2];
    struct tbl_service a, b;
    struct saddr fa[1], fb[1];
    size_t i;

    (void)state;
    policy_service(&a, fa, ba);
    for (i = 0; i < sizeof(service_fields) / sizeof(service_fields[0]); i++) {
        if (service_fields[i].change == NULL)
            continue;
        policy_service(&b, fb, bb);
        assert_true(tbl_service_policy_equal(&a, &b));
        service_fields[i].change(&b);
        if (tbl_service_policy_equal(&a, &b) || tbl_service_equal(&a, &b))
            fail_msg("changing \"%s\" left the services equal",
                     service_fields[i].name);
    }
    for (i = 0; i < sizeof(check_changes) / sizeof(check_changes[0]); i++) {
        policy_service(&b, fb, bb);
        check_changes[i](&b);
        if (tbl_service_policy_equal(&a, &b))
            fail_msg("changing health check part %zu left the services "
                     "equal",
                     i);
    }
    /* Prefix lists compare by content, not by where they are. */
    policy_service(&b, fb, bb);
    same_allow[0] = pol_allow[0];
    b.allow = same_allow;
    assert_true(tbl_service_equal(&a, &b));
    /* The lists are not policy. */
    policy_service(&b, fb, bb);
    bb[1].weight = 3;
    b.nfrontends = 0;
    assert_true(tbl_service_policy_equal(&a, &b));
    assert_false(tbl_service_equal(&a, &b));
}

/* The endpoints the translator left out are no policy, but a table whose
 * list or reasons differ is another table (so that it is published); the
 * table keeps a copy of its own. */
static void
test_service_excluded(void **state)
{
    struct tbl_backend ba[2], bb[2];
    struct tbl_excluded xa[1], xb[1];
    struct tbl_service a, b;
    struct saddr fa[1], fb[1];
    struct table *t;
    struct err e;
    const char *why;

    (void)state;
    policy_service(&a, fa, ba);
    policy_service(&b, fb, bb);
    memset(xa, 0, sizeof(xa));
    assert_int_equal(parse_hostport("198.18.0.9:80", &xa[0].addr, 0, &why), 0);
    snprintf(xa[0].name, sizeof(xa[0].name), "web-1");
    xa[0].reason = TBL_EXCL_NOT_READY;
    xb[0] = xa[0];
    a.excluded = xa;
    a.nexcluded = 1;
    assert_false(tbl_service_equal(&a, &b));
    b.excluded = xb;
    b.nexcluded = 1;
    assert_true(tbl_service_equal(&a, &b));
    xb[0].reason = TBL_EXCL_TERMINATING;
    assert_true(tbl_service_policy_equal(&a, &b));
    assert_false(tbl_service_equal(&a, &b));
    assert_string_equal(tbl_excl_text[TBL_EXCL_TERMINATING],
                        "terminating while ready endpoints exist");
    t = table_new();
    assert_non_null(t);
    assert_int_equal(table_add_service(t, &a, &e), 0);
    xa[0].reason = TBL_EXCL_TOPOLOGY;
    assert_int_equal(table_service(t, 0)->nexcluded, 1);
    assert_ptr_not_equal(table_service(t, 0)->excluded, xa);
    assert_int_equal(table_service(t, 0)->excluded[0].reason, TBL_EXCL_NOT_READY);
    table_unref(t);
}

static void
test_balance_names(void **state)
{
    enum tbl_balance b;
    int i;

    (void)state;
    for (i = 0; i < TBL_BAL__COUNT; i++) {
        assert_int_equal(tbl_balance_parse(tbl_balance_name(i), &b), 0);
        assert_int_equal(b, i);
    }
    assert_string_equal(tbl_balance_name(TBL_BAL_LEASTCONN), "leastconn");
    assert_string_equal(tbl_balance_name(TBL_BAL__COUNT), "?");
    assert_int_equal(tbl_balance_parse("RoundRobin", &b), -1);
    assert_int_equal(tbl_balance_parse("", &b), -1);
    /* One table, ended by NULL, as the config decoder reads it. */
    assert_null(tbl_balance_names[TBL_BAL__COUNT]);
    assert_ptr_equal(tbl_balance_name(TBL_BAL_RANDOM),
                     tbl_balance_names[TBL_BAL_RANDOM]);
    assert_string_equal(tbl_check_type_name(TBL_CHECK_HTTP), "http");
    assert_string_equal(tbl_check_type_name(TBL_CHECK__COUNT), "?");
    assert_null(tbl_check_type_names[TBL_CHECK__COUNT]);
}

/* A frontend is (protocol, address, port): a UDP and a TCP service may
 * share an address and port, two of one protocol may not. */
static void
test_frontend_protocols(void **state)
{
    struct table *t = table_new();
    struct saddr fes[1], probe;
    struct tbl_backend bes[2];
    struct tbl_service s;
    struct err e;
    const char *why;

    (void)state;
    make_service(&s, "web", "127.0.0.1:53", fes, bes, 9000);
    assert_int_equal(table_add_service(t, &s, &e), 0);
    make_service(&s, "dns", "127.0.0.1:53", fes, bes, 9000);
    s.proto = TBL_PROTO_UDP;
    assert_int_equal(table_add_service(t, &s, &e), 0);
    make_service(&s, "dns2", "127.0.0.1:53", fes, bes, 9000);
    s.proto = TBL_PROTO_UDP;
    assert_int_equal(table_add_service(t, &s, &e), -1);
    assert_non_null(strstr(e.msg, "already used by service \"dns\""));
    assert_int_equal(parse_hostport("127.0.0.1:53", &probe, 0, &why), 0);
    assert_string_equal(table_find_frontend(t, &probe)->name, "web");
    assert_string_equal(
        table_find_frontend_proto(t, TBL_PROTO_UDP, &probe)->name, "dns");
    assert_null(table_find_frontend_proto(t, TBL_PROTO_SCTP, &probe));
    table_unref(t);
}

/* The first entry of chunk <ci> of a table, which is where the chunk
 * is: equal for two tables that share it. */
#define SCHUNK(t, ci) ((const void *)table_service((t), (ci) * TBL_CHUNK))
#define KCHUNK(t, ci) ((const void *)table_ksvc((t), (ci) * TBL_CHUNK))

/* A table made from another shares its chunks and indexes; replacing an
 * entry copies only that entry's chunk, notes its position, and leaves
 * the table it came from as it was; appending to a shared last chunk, or
 * writing a shared index, copies them first. */
static void
test_derive_shares_and_copies_on_write(void **state)
{
    enum { N = 70 }; /* three chunks: 32, 32 and 6 */
    static struct saddr fes[N + 2][1];
    static struct tbl_backend bes[N + 2][2];
    struct tbl_service s, r;
    struct tbl_ksvc k;
    struct table *a = table_new(), *b;
    char name[32], fe[32];
    struct err e;
    size_t i;

    (void)state;
    assert_non_null(a);
    for (i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "svc-%zu", i);
        snprintf(fe, sizeof(fe), "127.0.0.1:%zu", 20000 + i);
        make_service(&s, name, fe, fes[i], bes[i], (uint16_t)(30000 + 2 * i));
        s.affinity_timeout_ms = i == 40 ? 1000 : 0;
        assert_int_equal(table_add_service(a, &s, &e), 0);
        memset(&k, 0, sizeof(k));
        snprintf(name, sizeof(name), "ns/k-%zu:p", i);
        k.name = name; /* copied by the table */
        assert_int_equal(table_add_ksvc(a, &k, &e), 0);
    }
    table_freeze(a, 1);
    assert_int_equal(a->nlpos, N);
    assert_int_equal(a->naffinity, 1);
    assert_int_equal(table_service(a, 33)->pos, 33);

    b = table_derive(a);
    assert_non_null(b);
    assert_int_equal(b->base, a->serial);
    assert_int_equal(b->nservices, N);
    for (i = 0; i < 3; i++)
        assert_ptr_equal(SCHUNK(b, i), SCHUNK(a, i));
    assert_ptr_equal(b->spages[0], a->spages[0]);

    /* Service 40 with other backends and no affinity: chunk 1 only. */
    make_service(&r, "svc-40", "127.0.0.1:20040", fes[N], bes[N], 40000);
    assert_int_equal(table_replace_service(b, 40, &r, &e), 0);
    assert_ptr_equal(SCHUNK(b, 0), SCHUNK(a, 0));
    assert_ptr_not_equal(SCHUNK(b, 1), SCHUNK(a, 1));
    assert_ptr_equal(SCHUNK(b, 2), SCHUNK(a, 2));
    assert_int_equal(b->ndsvcs, 1);
    assert_int_equal(b->dsvcs[0], 40);
    assert_int_equal(b->naffinity, 0);
    assert_int_equal(a->naffinity, 1);
    assert_int_equal(saddr_port(&table_service(b, 40)->backends[0].addr),
                     40000);
    assert_int_equal(saddr_port(&table_service(a, 40)->backends[0].addr),
                     30080);
    /* The other entries of the copied chunk share their arrays. */
    assert_ptr_equal(table_service(b, 41)->arrays,
                     table_service(a, 41)->arrays);
    assert_ptr_equal(table_find(b, "svc-40"), table_service(b, 40));
    assert_ptr_equal(table_find(a, "svc-40"), table_service(a, 40));
    /* Noted once however often it is replaced. */
    assert_int_equal(table_replace_service(b, 40, &r, &e), 0);
    assert_int_equal(b->ndsvcs, 1);

    /* Not the same shape: refused, nothing changed. */
    make_service(&r, "svc-41", "127.0.0.1:29999", fes[N + 1], bes[N + 1],
                 41000);
    assert_int_equal(table_replace_service(b, 41, &r, &e), -1);
    assert_int_equal(b->ndsvcs, 1);
    make_service(&r, "other", "127.0.0.1:20041", fes[N + 1], bes[N + 1],
                 41000);
    assert_int_equal(table_replace_service(b, 41, &r, &e), -1);

    /* A kernel service: its chunk only. */
    memset(&k, 0, sizeof(k));
    k.name = "ns/k-5:p";
    k.port = 5;
    assert_int_equal(table_replace_ksvc(b, 5, &k, &e), 0);
    assert_ptr_not_equal(KCHUNK(b, 0), KCHUNK(a, 0));
    assert_ptr_equal(KCHUNK(b, 1), KCHUNK(a, 1));
    assert_int_equal(table_ksvc(b, 5)->port, 5);
    assert_int_equal(table_ksvc(a, 5)->port, 0);
    assert_int_equal(b->ndksvcs, 1);

    /* Appending writes the shared last chunk and the shared indexes:
     * copies of them, the first table unchanged. */
    make_service(&r, "svc-new", "127.0.0.1:21000", fes[N + 1], bes[N + 1],
                 42000);
    assert_int_equal(table_add_service(b, &r, &e), 0);
    assert_ptr_not_equal(SCHUNK(b, 2), SCHUNK(a, 2));
    assert_int_equal(a->nservices, N);
    assert_int_equal(b->nservices, N + 1);
    assert_non_null(table_find(b, "svc-new"));
    assert_null(table_find(a, "svc-new"));
    assert_null(table_find_frontend(a, &fes[N + 1][0]));
    assert_int_equal(b->nlpos, N + 1);
    table_freeze(b, 2);
    table_unref(a); /* b holds what it shares */
    assert_string_equal(table_service(b, 3)->name, "svc-3");
    assert_ptr_equal(table_find(b, "svc-69"), table_service(b, 69));
    table_unref(b);
}

/* Past one page: a derived table shares every page but the one it
 * changes, and in that page every chunk but the changed one; appending
 * at a page's end starts a page of its own. */
static void
test_derive_shares_pages(void **state)
{
    enum { PAGE = TBL_CHUNK * TBL_PAGE, N = 2 * PAGE };
    static struct saddr fes[N + 2][1];
    static struct tbl_backend bes[N + 2][2];
    static char names[N + 2][32];
    struct tbl_service s;
    struct table *a = table_new(), *b, *c;
    char fe[32];
    struct err e;
    size_t i, at = PAGE + 3 * TBL_CHUNK + 5; /* page 1, chunk 3 of it */

    (void)state;
    assert_non_null(a);
    fill_table(a, N, names, fes, bes);
    b = table_derive(a);
    assert_non_null(b);
    assert_ptr_equal(b->spages[0], a->spages[0]);
    assert_ptr_equal(b->spages[1], a->spages[1]);
    snprintf(fe, sizeof(fe), "127.0.%zu.%zu:80", at / 200, at % 200 + 1);
    make_service(&s, names[at], fe, fes[N], bes[N], 40000);
    assert_int_equal(table_replace_service(b, at, &s, &e), 0);
    assert_ptr_equal(b->spages[0], a->spages[0]);
    assert_ptr_not_equal(b->spages[1], a->spages[1]);
    for (i = PAGE / TBL_CHUNK; i < N / TBL_CHUNK; i++)
        if (i == at / TBL_CHUNK)
            assert_ptr_not_equal(SCHUNK(b, i), SCHUNK(a, i));
        else
            assert_ptr_equal(SCHUNK(b, i), SCHUNK(a, i));
    assert_int_equal(saddr_port(&table_service(b, at)->backends[0].addr),
                     40000);
    assert_int_equal(saddr_port(&table_service(a, at)->backends[0].addr),
                     30000);

    /* a ends at a page's end: an append gives b a third page. */
    c = table_derive(a);
    assert_non_null(c);
    snprintf(names[N + 1], sizeof(names[N + 1]), "svc-new");
    make_service(&s, names[N + 1], "127.0.99.1:80", fes[N + 1], bes[N + 1],
                 41000);
    assert_int_equal(table_add_service(c, &s, &e), 0);
    assert_non_null(c->spages[2]);
    assert_ptr_equal(c->spages[1], a->spages[1]);
    assert_ptr_equal(table_find(c, "svc-new"), table_service(c, N));
    assert_null(table_find(a, "svc-new"));
    table_freeze(b, 2);
    table_freeze(c, 3);
    table_unref(a); /* b and c hold what they share */
    assert_string_equal(table_service(b, PAGE + 1)->name, "svc-1025");
    assert_string_equal(table_service(c, at)->name, names[at]);
    assert_int_equal(saddr_port(&table_service(c, at)->backends[0].addr),
                     30000);
    table_unref(b);
    assert_string_equal(table_service(c, N - 1)->name, names[N - 1]);
    table_unref(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_find),
        cmocka_unit_test(test_add_rejects),
        cmocka_unit_test(test_frontend_protocols),
        cmocka_unit_test(test_refs),
        cmocka_unit_test(test_shared_arrays),
        cmocka_unit_test(test_service_equal),
        cmocka_unit_test(test_service_fields_listed),
        cmocka_unit_test(test_service_policy_each_field),
        cmocka_unit_test(test_service_excluded),
        cmocka_unit_test(test_balance_names),
        cmocka_unit_test(test_derive_shares_and_copies_on_write),
        cmocka_unit_test(test_derive_shares_pages),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
