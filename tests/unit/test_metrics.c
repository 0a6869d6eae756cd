/* Unit tests for the Prometheus text output (proxy/ops/metrics.c) and the
 * per-service stats registry (proxy/dataplane/stats.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend.h"
#include "metrics.h"
#include "sbuf.h"
#include "stats.h"
#include "svc.h"

static struct svc *
make_svc_from(const char *name, enum tbl_origin origin)
{
    struct tbl_backend bes[2];
    char names[2][16];
    struct tbl_service ts;
    const char *why;
    int i;

    memset(&ts, 0, sizeof(ts));
    memset(bes, 0, sizeof(bes));
    ts.name = name;
    for (i = 0; i < 2; i++) {
        char a[32];
        snprintf(a, sizeof(a), "127.0.0.1:%d", 9101 + i);
        assert_int_equal(parse_hostport(a, &bes[i].addr, 0, &why), 0);
        snprintf(names[i], sizeof(names[i]), "b%d", i);
        bes[i].name = names[i];
        bes[i].weight = 2;
    }
    ts.backends = bes;
    ts.nbackends = 2;
    ts.origin = origin;
    return svc_new(&ts);
}

static struct svc *
make_svc(const char *name)
{
    return make_svc_from(name, TBL_ORIGIN_FILE);
}

/* A UDP service with one backend. */
static struct svc *
make_udp_svc(const char *name)
{
    struct tbl_backend be;
    struct tbl_service ts;
    const char *why;

    memset(&ts, 0, sizeof(ts));
    memset(&be, 0, sizeof(be));
    ts.name = name;
    assert_int_equal(parse_hostport("127.0.0.1:9153", &be.addr, 0, &why), 0);
    be.name = "d0";
    be.weight = 1;
    ts.backends = &be;
    ts.nbackends = 1;
    ts.proto = TBL_PROTO_UDP;
    ts.udp_idle_timeout_ms = 30000;
    ts.max_flows = 10;
    return svc_new(&ts);
}

static void
assert_has(const char *text, const char *want)
{
    if (strstr(text, want) == NULL)
        fail_msg("missing \"%s\" in:\n%s", want, text);
}

static void
test_label_escaping(void **state)
{
    struct sbuf b;

    (void)state;
    sbuf_init(&b, 1024);
    metrics_label_value(&b, "a\"b\\c\nd");
    assert_string_equal(b.p, "a\\\"b\\\\c\\nd");
    sbuf_deinit(&b);
    /* Runs between escapes, at either end, and none at all. */
    sbuf_init(&b, 1024);
    metrics_label_value(&b, "\"x\"");
    metrics_label_value(&b, "|");
    metrics_label_value(&b, "");
    metrics_label_value(&b, "plain");
    assert_string_equal(b.p, "\\\"x\\\"|plain");
    sbuf_deinit(&b);
}

static void
test_histogram_cumulative(void **state)
{
    static struct hist h;
    struct sbuf b;

    (void)state;
    hist_observe(&h, &hist_connect, 0.0001); /* first bucket */
    hist_observe(&h, &hist_connect, 0.003);  /* le 0.005 */
    hist_observe(&h, &hist_connect, 0.003);
    hist_observe(&h, &hist_connect, 60);     /* +Inf only */
    hist_observe(&h, &hist_connect, -1);     /* clamped to 0 */
    sbuf_init(&b, 1 << 16);
    metrics_write_hist(&b, "x_seconds", "k=\"v\"", &h, &hist_connect);
    assert_has(b.p, "x_seconds_bucket{k=\"v\",le=\"0.0005\"} 2\n");
    assert_has(b.p, "x_seconds_bucket{k=\"v\",le=\"0.0025\"} 2\n");
    assert_has(b.p, "x_seconds_bucket{k=\"v\",le=\"0.005\"} 4\n");
    assert_has(b.p, "x_seconds_bucket{k=\"v\",le=\"10\"} 4\n");
    assert_has(b.p, "x_seconds_bucket{k=\"v\",le=\"+Inf\"} 5\n");
    assert_has(b.p, "x_seconds_count{k=\"v\"} 5\n");
    assert_has(b.p, "x_seconds_sum{k=\"v\"} 60.006100\n");
    sbuf_deinit(&b);
    /* Without labels. */
    sbuf_init(&b, 1 << 16);
    metrics_write_hist(&b, "y", "", &h, &hist_connect);
    assert_has(b.p, "y_bucket{le=\"+Inf\"} 5\n");
    assert_has(b.p, "y_count{} 5\n");
    sbuf_deinit(&b);
}

/* Every family appears once, as HELP then TYPE, before its samples. */
static void
check_families(const char *text)
{
    char *copy = strdup(text), *line, *save = NULL;
    char seen[64][96];
    size_t nseen = 0, i;

    assert_non_null(copy);
    for (line = strtok_r(copy, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char name[96];
        if (strncmp(line, "# TYPE ", 7) != 0)
            continue;
        assert_int_equal(sscanf(line + 7, "%95s", name), 1);
        for (i = 0; i < nseen; i++)
            if (strcmp(seen[i], name) == 0)
                fail_msg("family %s declared twice", name);
        assert_true(nseen < 64);
        snprintf(seen[nseen++], sizeof(seen[0]), "%s", name);
    }
    assert_true(nseen > 20);
    free(copy);
}

static void
test_write_services(void **state)
{
    struct svc *s = make_svc("we\"b"), *v[1];
    struct sbuf b;

    (void)state;
    assert_non_null(s);
    v[0] = s;
    stats_inc(&svc_ctr(svc_counters(s))->accepted);
    stats_inc(&svc_ctr(svc_counters(s))->accepted);
    stats_inc(&svc_ctr(svc_counters(s))->fail[STATS_FAIL_TIMEOUT]);
    stats_add(&svc_ctr(svc_counters(s))->drain_closed, 3);
    stats_add(&backend_ctr(svc_backend(s, 1))->bytes_in, 1234);
    stats_inc(&backend_ctr(svc_backend(s, 0))->n_fail[STATS_FAIL_REFUSED]);
    svc_set_weight_override(s, 1, 7);
    svc_reweighted(s);
    svc_set_drained(s, 0, 1);
    atomic_store(&svc_backend(s, 1)->health, BACKEND_HEALTH_DOWN);
    stats_set_generation(42);
    stats_sync_done(0.003, 1700000000.5);
    stats_watch_relist();
    sbuf_init(&b, 1 << 20);
    metrics_write(&b, v, 1, NULL, 1, 100.0, CONF_PER_BACKEND_AUTO);
    assert_false(b.overflow);
    check_families(b.p);
    assert_has(b.p, "ferry_table_generation 42\n");
    assert_has(b.p, "ferry_ready 1\n");
    assert_has(b.p, "ferry_sync_proxy_rules_last_timestamp_seconds "
                    "1700000000.500\n");
    assert_has(b.p, "ferry_sync_proxy_rules_duration_seconds_count{} 1\n");
    assert_has(b.p, "ferry_api_relists_total 1\n");
    assert_has(b.p, "ferry_out_of_memory_total{part=\"api\"} 0\n"
                    "ferry_out_of_memory_total{part=\"tables\"} 0\n"
                    "ferry_out_of_memory_total{part=\"workers\"} 0\n");
    assert_has(b.p, "ferry_service_connections_accepted_total"
                    "{service=\"we\\\"b\"} 2\n");
    assert_has(b.p, "ferry_service_connections_failed_total"
                    "{service=\"we\\\"b\",reason=\"timeout\"} 1\n");
    assert_has(b.p, "# TYPE ferry_drain_closed_total counter\n"
                    "ferry_drain_closed_total{service=\"we\\\"b\"} 3\n");
    assert_has(b.p, "ferry_backend_bytes_total{service=\"we\\\"b\","
                    "backend=\"b1\",address=\"127.0.0.1:9102\","
                    "direction=\"in\"} 1234\n");
    assert_has(b.p, "ferry_backend_connect_failures_total{service=\"we\\\"b\","
                    "backend=\"b0\",address=\"127.0.0.1:9101\","
                    "reason=\"refused\"} 1\n");
    assert_has(b.p, "ferry_backend_weight{service=\"we\\\"b\",backend=\"b1\","
                    "address=\"127.0.0.1:9102\"} 7\n");
    assert_has(b.p, "ferry_backend_weight{service=\"we\\\"b\",backend=\"b0\","
                    "address=\"127.0.0.1:9101\"} 2\n");
    assert_has(b.p, "ferry_backend_drained{service=\"we\\\"b\",backend=\"b0\","
                    "address=\"127.0.0.1:9101\"} 1\n");
    assert_has(b.p, "ferry_backend_health_up{service=\"we\\\"b\","
                    "backend=\"b1\",address=\"127.0.0.1:9102\"} 0\n");
    /* No UDP service: no UDP family. */
    assert_null(strstr(b.p, "ferry_service_udp_"));
    /* Drained and down backends are not picked; b0 and b1 both out. */
    {
        struct svc_tried t = {0};
        assert_int_equal(svc_pick(s, &t, 100.0), -1);
        svc_set_drained(s, 0, 0);
        assert_int_equal(svc_pick(s, &t, 100.0), 0);
    }
    sbuf_deinit(&b);
    svc_unref(s);
    assert_int_equal(backend_count(), 0);
    assert_int_equal(svc_stats_count(), 0);
}

/* UDP services get their flows, datagrams and drops; TCP ones beside
 * them do not. */
static void
test_write_udp(void **state)
{
    struct svc *v[2] = {make_svc("web"), make_udp_svc("dns")};
    struct svc_stats *st;
    struct sbuf b;

    (void)state;
    assert_non_null(v[0]);
    assert_non_null(v[1]);
    st = svc_counters(v[1]);
    atomic_store(&st->udp_active, 3);
    stats_add(&svc_ctr(st)->udp_flows, 5);
    stats_add(&svc_ctr(st)->udp_dgrams_in, 7);
    stats_add(&svc_ctr(st)->udp_dgrams_out, 6);
    stats_inc(&svc_ctr(st)->udp_drops[STATS_UDP_MAX_FLOWS]);
    stats_add(&svc_ctr(st)->udp_drops[STATS_UDP_REFUSED], 2);
    sbuf_init(&b, 1 << 20);
    metrics_write(&b, v, 2, NULL, 1, 100.0, CONF_PER_BACKEND_AUTO);
    assert_false(b.overflow);
    check_families(b.p);
    assert_has(b.p, "ferry_service_udp_flows_active{service=\"dns\"} 3\n");
    assert_has(b.p, "ferry_service_udp_flows_total{service=\"dns\"} 5\n");
    assert_has(b.p, "ferry_service_udp_datagrams_total{service=\"dns\","
                    "direction=\"in\"} 7\n");
    assert_has(b.p, "ferry_service_udp_datagrams_total{service=\"dns\","
                    "direction=\"out\"} 6\n");
    assert_has(b.p, "ferry_service_udp_dropped_total{service=\"dns\","
                    "reason=\"max_flows\"} 1\n");
    assert_has(b.p, "ferry_service_udp_dropped_total{service=\"dns\","
                    "reason=\"refused\"} 2\n");
    assert_has(b.p, "ferry_service_udp_dropped_total{service=\"dns\","
                    "reason=\"too_large\"} 0\n");
    assert_null(strstr(b.p, "ferry_service_udp_flows_total{service=\"web\""));
    sbuf_deinit(&b);
    svc_unref(v[0]);
    svc_unref(v[1]);
    assert_int_equal(backend_count(), 0);
    assert_int_equal(svc_stats_count(), 0);
}

static int
count_of(const char *text, const char *what)
{
    int n = 0;

    for (; (text = strstr(text, what)) != NULL; text++)
        n++;
    return n;
}

/* metrics.per_backend: auto writes per-backend series for the file's
 * services only, true for every service, false for none; per-service
 * series are written for every service whatever it says. */
static void
test_per_backend(void **state)
{
    struct svc *v[3];
    struct sbuf b;
    static const struct {
        enum conf_per_backend pb;
        int file, api;
    } cases[] = {
        {CONF_PER_BACKEND_AUTO, 1, 0},
        {CONF_PER_BACKEND_TRUE, 1, 1},
        {CONF_PER_BACKEND_FALSE, 0, 0},
    };
    size_t k;

    (void)state;
    v[0] = make_svc_from("file", TBL_ORIGIN_FILE);
    v[1] = make_svc_from("ns/api:http", TBL_ORIGIN_API);
    assert_int_equal(svc_spec(v[1])->origin, TBL_ORIGIN_API);
    /* A Kubernetes Service has series once it has had a connection. */
    stats_inc(&svc_ctr(svc_counters(v[1]))->accepted);
    v[2] = make_svc_from("ns/idle:http", TBL_ORIGIN_API);
    for (k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        int nbe = 2 * (cases[k].file + cases[k].api);
        sbuf_init(&b, 1 << 20);
        metrics_write(&b, v, 3, NULL, 1, 100.0, cases[k].pb);
        assert_false(b.overflow);
        check_families(b.p);
        assert_has(b.p, "ferry_service_connections_accepted_total"
                        "{service=\"file\"} 0\n");
        assert_has(b.p, "ferry_service_connections_accepted_total"
                        "{service=\"ns/api:http\"} 1\n");
        assert_int_equal(count_of(b.p, "ns/idle:http"), 0);
        assert_has(b.p, "ferry_service_connect_duration_seconds_count"
                        "{service=\"ns/api:http\"} 0\n");
        assert_int_equal(count_of(b.p, "ferry_backend_weight{service=\"file\""),
                         2 * cases[k].file);
        assert_int_equal(
            count_of(b.p, "ferry_backend_weight{service=\"ns/api:http\""),
            2 * cases[k].api);
        assert_int_equal(count_of(b.p, "\nferry_backend_connections_total{"),
                         nbe);
        assert_int_equal(
            count_of(b.p, "\nferry_backend_connect_duration_seconds_count{"),
            nbe);
        /* No backend family at all, not even its HELP, when none has
         * series. */
        assert_int_equal(count_of(b.p, "# TYPE ferry_backend_"),
                         nbe ? 13 : 0);
        sbuf_deinit(&b);
    }
    svc_unref(v[0]);
    svc_unref(v[1]);
    svc_unref(v[2]);
    assert_int_equal(backend_count(), 0);
}

/* A reply cap smaller than the exposition: overflow, never a crash. */
static void
test_write_overflow(void **state)
{
    struct svc *v[1];
    struct sbuf b;
    size_t cap;

    (void)state;
    v[0] = make_svc("small");
    for (cap = 16; cap < (1u << 16); cap *= 4) {
        sbuf_init(&b, cap);
        metrics_write(&b, v, 1, NULL, 0, 100.0, CONF_PER_BACKEND_TRUE);
        assert_true(b.overflow);
        assert_true(b.len <= cap);
        sbuf_deinit(&b);
    }
    svc_unref(v[0]);
}

static void
test_stats_survive_rebuild(void **state)
{
    struct svc *a = make_svc("keep"), *b;

    (void)state;
    stats_inc(&svc_ctr(svc_counters(a))->accepted);
    b = make_svc("keep"); /* a reload builds the new one first */
    assert_ptr_equal(svc_counters(a), svc_counters(b));
    svc_unref(a);
    assert_int_equal(stats_get(&svc_counts(b)->accepted), 1);
    svc_unref(b);
    assert_int_equal(svc_stats_count(), 0);
}

static void
test_sbuf_cap(void **state)
{
    struct sbuf b;
    int i;

    (void)state;
    sbuf_init(&b, 100);
    for (i = 0; i < 60; i++)
        sbuf_printf(&b, "%d,", i);
    assert_true(b.overflow);
    assert_true(b.len <= 100);
    sbuf_deinit(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_histogram_cumulative),
        cmocka_unit_test(test_write_services),
        cmocka_unit_test(test_per_backend),
        cmocka_unit_test(test_write_udp),
        cmocka_unit_test(test_write_overflow),
        cmocka_unit_test(test_stats_survive_rebuild),
        cmocka_unit_test(test_sbuf_cap),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
