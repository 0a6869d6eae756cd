/* Unit tests for kube-proxy's metrics (proxy/node/kpmetrics.c): names,
 * types, labels and bucket bounds of the exposition; the trigger-time
 * parser they are measured from (watcher_parse_time); the process-wide
 * sync counters a failed sync leaves alone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kpmetrics.h"
#include "sbuf.h"
#include "stats.h"
#include "watcher.h"

static void
assert_has(const char *text, const char *want)
{
    if (strstr(text, want) == NULL)
        fail_msg("missing \"%s\" in:\n%s", want, text);
}

static size_t
count_lines(const char *text, const char *prefix)
{
    size_t n = 0, len = strlen(prefix);
    const char *p = text;

    while (p != NULL && *p != '\0') {
        if (strncmp(p, prefix, len) == 0)
            n++;
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return n;
}

static void
no_state(void *arg, struct kpm_state *out)
{
    (void)arg;
    (void)out;
}

static void
test_render(void **state)
{
    struct kpm *m = kpm_new(EV_DEFAULT, no_state, NULL);
    struct kpm_state st;
    struct sbuf b;

    (void)state;
    assert_non_null(m);
    memset(&st, 0, sizeof(st));
    st.last_queued = 1700000001.25;
    st.endpoint_changes = 7;
    st.service_changes = 3;
    st.endpoint_pending = 2;
    st.no_local_internal = 4;
    st.no_local_external = 5;
    st.healthz[0] = 10;
    st.healthz[1] = 1;
    st.livez[0] = 6;
    kpm_sync(m, 0.003, 1700000000.5);
    kpm_sync(m, 0.05, 0); /* failed: counted, timestamp kept */
    kpm_programming(m, 0.3);
    kpm_programming(m, 400);
    sbuf_init(&b, 1 << 20);
    kpm_render(m, &st, &b);
    assert_false(b.overflow);
    assert_has(b.p, "# TYPE kubeproxy_sync_proxy_rules_duration_seconds "
                    "histogram\n");
    assert_has(b.p, "kubeproxy_sync_proxy_rules_duration_seconds_bucket"
                    "{le=\"0.002\"} 0\n");
    assert_has(b.p, "kubeproxy_sync_proxy_rules_duration_seconds_bucket"
                    "{le=\"0.004\"} 1\n");
    assert_has(b.p, "kubeproxy_sync_proxy_rules_duration_seconds_bucket"
                    "{le=\"16.384\"} 2\n");
    assert_has(b.p, "kubeproxy_sync_proxy_rules_duration_seconds_count 2\n");
    assert_int_equal(count_lines(b.p, "kubeproxy_sync_proxy_rules_duration_"
                                      "seconds_bucket"),
                     16);
    assert_has(b.p, "# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds "
                    "gauge\nkubeproxy_sync_proxy_rules_last_timestamp_seconds "
                    "1700000000.5\n");
    assert_has(b.p, "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds "
                    "1700000001.25\n");
    assert_has(b.p, "# TYPE kubeproxy_sync_proxy_rules_endpoint_changes_total "
                    "counter\nkubeproxy_sync_proxy_rules_endpoint_changes_total "
                    "7\n");
    assert_has(b.p, "kubeproxy_sync_proxy_rules_endpoint_changes_pending 2\n");
    assert_has(b.p, "kubeproxy_sync_proxy_rules_service_changes_total 3\n");
    assert_has(b.p, "kubeproxy_sync_proxy_rules_service_changes_pending 0\n");
    assert_has(b.p, "# TYPE kubeproxy_sync_proxy_rules_no_local_endpoints_total"
                    " gauge\n");
    assert_has(b.p, "kubeproxy_sync_proxy_rules_no_local_endpoints_total"
                    "{traffic_policy=\"internal\"} 4\n");
    assert_has(b.p, "kubeproxy_sync_proxy_rules_no_local_endpoints_total"
                    "{traffic_policy=\"external\"} 5\n");
    /* kube-proxy's programming bounds: 0.25, 0.5, 1..59, 60..115 by 5,
     * 120..300 by 30, then +Inf. */
    assert_int_equal(count_lines(b.p, "kubeproxy_network_programming_duration_"
                                      "seconds_bucket"),
                     81);
    assert_has(b.p, "kubeproxy_network_programming_duration_seconds_bucket"
                    "{le=\"0.25\"} 0\n");
    assert_has(b.p, "kubeproxy_network_programming_duration_seconds_bucket"
                    "{le=\"0.5\"} 1\n");
    assert_has(b.p, "kubeproxy_network_programming_duration_seconds_bucket"
                    "{le=\"59\"} 1\n");
    assert_has(b.p, "kubeproxy_network_programming_duration_seconds_bucket"
                    "{le=\"115\"} 1\n");
    assert_has(b.p, "kubeproxy_network_programming_duration_seconds_bucket"
                    "{le=\"300\"} 1\n");
    assert_has(b.p, "kubeproxy_network_programming_duration_seconds_bucket"
                    "{le=\"+Inf\"} 2\n");
    assert_has(b.p, "kubeproxy_network_programming_duration_seconds_sum "
                    "400.3\n");
    assert_has(b.p, "# TYPE kubeproxy_proxy_healthz_total counter\n"
                    "kubeproxy_proxy_healthz_total{code=\"200\"} 10\n"
                    "kubeproxy_proxy_healthz_total{code=\"503\"} 1\n");
    assert_has(b.p, "kubeproxy_proxy_livez_total{code=\"200\"} 6\n"
                    "kubeproxy_proxy_livez_total{code=\"503\"} 0\n");
    sbuf_deinit(&b);
    kpm_free(m);
    kpm_free(NULL);
}

static void
test_parse_time(void **state)
{
    double t;

    (void)state;
    assert_int_equal(watcher_parse_time("2023-11-14T22:13:20Z", &t), 0);
    assert_true(t == 1700000000.0);
    assert_int_equal(watcher_parse_time("2023-11-14T22:13:20.25Z", &t), 0);
    assert_true(t == 1700000000.25);
    assert_int_equal(watcher_parse_time("2023-11-14T23:13:20.5+01:00", &t), 0);
    assert_true(t == 1700000000.5);
    assert_int_equal(watcher_parse_time("2023-11-14T20:13:20-02:00", &t), 0);
    assert_true(t == 1700000000.0);
    assert_int_equal(watcher_parse_time("2023-11-14T22:13:20.123456789Z", &t),
                     0);
    assert_true(t > 1700000000.1234 && t < 1700000000.1235);
    assert_int_equal(watcher_parse_time("", &t), -1);
    assert_int_equal(watcher_parse_time("2023-11-14 22:13:20Z", &t), -1);
    assert_int_equal(watcher_parse_time("2023-11-14T22:13:20", &t), -1);
    assert_int_equal(watcher_parse_time("2023-11-14T22:13:20.Z", &t), -1);
    assert_int_equal(watcher_parse_time("2023-13-14T22:13:20Z", &t), -1);
    assert_int_equal(watcher_parse_time("2023-11-14T22:13:20Zjunk", &t), -1);
    assert_int_equal(watcher_parse_time("2023-11-14T22:13:20+0100", &t), -1);
    assert_int_equal(watcher_parse_time("yesterday-at-noon-ish", &t), -1);
}

static void
test_stats_failed_sync(void **state)
{
    (void)state;
    stats_sync_done(0.01, 1700000000.0);
    stats_sync_done(0.02, 0);
    assert_true(atomic_load(&stats_proc.last_sync) == 1700000000.0);
    assert_int_equal(stats_get(&stats_proc.sync.bucket[4]), 1); /* 16 ms */
    assert_int_equal(stats_get(&stats_proc.sync.bucket[5]), 1); /* 32 ms */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_parse_time),
        cmocka_unit_test(test_stats_failed_sync),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
