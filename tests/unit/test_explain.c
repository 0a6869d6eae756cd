/*
 * test_explain.c - the question of "ferry explain": GET /explain's query
 * values (explain_parse()), those of GET /explain/trace and
 * /explain/watch, and the command's arguments (explaincli_args()): good
 * ones taken, bad ones refused with a reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "explaincli.h"
#include "explainq.h"

static void
test_parse_good(void **state)
{
    struct explain_req q;
    char why[160], buf[SADDR_STR_MAX];

    (void)state;
    assert_int_equal(
        explain_parse("198.18.0.10:80", NULL, NULL, &q, why, sizeof(why)), 0);
    assert_string_equal(saddr_str(&q.addr, buf, sizeof(buf)), "198.18.0.10:80");
    assert_int_equal(q.proto, TBL_PROTO_TCP);
    assert_int_equal(q.has_from, 0);
    assert_int_equal(
        explain_parse("[::1]:53", "udp", "2001:2::7", &q, why, sizeof(why)), 0);
    assert_int_equal(q.proto, TBL_PROTO_UDP);
    assert_int_equal(q.has_from, 1);
    assert_string_equal(saddr_ip_str(&q.from, buf, sizeof(buf)), "2001:2::7");
}

static void
test_parse_bad(void **state)
{
    static const struct {
        const char *addr, *proto, *from, *why;
    } bad[] = {
        {NULL, NULL, NULL, "addr is missing (ADDRESS:PORT)"},
        {"", NULL, NULL, "addr is missing (ADDRESS:PORT)"},
        {"198.18.0.10", NULL, NULL, "addr \"198.18.0.10\": "},
        {"198.18.0.10:0", NULL, NULL, "addr \"198.18.0.10:0\": "},
        {"198.18.0.10:65536", NULL, NULL, "addr \"198.18.0.10:65536\": "},
        {"web:80", NULL, NULL, "addr \"web:80\": "},
        {"198.18.0.10:80", "sctp", NULL, "proto \"sctp\": tcp or udp"},
        {"198.18.0.10:80", "", NULL, "proto \"\": tcp or udp"},
        {"198.18.0.10:80", NULL, "198.18.0.1:5", "from \"198.18.0.1:5\": "},
        {"198.18.0.10:80", NULL, "", "from \"\": "},
    };
    struct explain_req q;
    char why[160];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        if (explain_parse(bad[i].addr, bad[i].proto, bad[i].from, &q, why,
                          sizeof(why))
            != -1)
            fail_msg("case %zu accepted", i);
        if (strncmp(why, bad[i].why, strlen(bad[i].why)) != 0)
            fail_msg("case %zu: \"%s\", want \"%s...\"", i, why, bad[i].why);
    }
}

static void
test_cli_args(void **state)
{
    const char *good[] = {"127.0.0.1:80", "--proto", "udp",        "--from",
                          "127.0.0.9",    "--admin", "[::1]:9990", "--json"};
    const char *no_val[] = {"127.0.0.1:80", "--from"};
    const char *two[] = {"127.0.0.1:80", "127.0.0.1:81"};
    const char *unknown[] = {"127.0.0.1:80", "--watch"};
    const char *bad_admin[] = {"127.0.0.1:80", "--admin", "localhost:9990"};
    struct explaincli_opts o;
    char why[160], buf[SADDR_STR_MAX];

    (void)state;
    assert_int_equal(explaincli_args(8, (char **)good, &o, why, sizeof(why)),
                     0);
    assert_string_equal(o.addr, "127.0.0.1:80");
    assert_string_equal(o.proto, "udp");
    assert_string_equal(o.from, "127.0.0.9");
    assert_string_equal(saddr_str(&o.admin, buf, sizeof(buf)), "[::1]:9990");
    assert_int_equal(o.json, 1);
    assert_int_equal(explaincli_args(1, (char **)good, &o, why, sizeof(why)),
                     0);
    assert_string_equal(saddr_str(&o.admin, buf, sizeof(buf)),
                        "127.0.0.1:9990");
    assert_int_equal(explaincli_args(0, (char **)good, &o, why, sizeof(why)),
                     -1);
    assert_string_equal(why, "addr is missing (ADDRESS:PORT)");
    assert_int_equal(explaincli_args(2, (char **)no_val, &o, why, sizeof(why)),
                     -1);
    assert_string_equal(why, "--from: unknown option, or its value is missing");
    assert_int_equal(explaincli_args(2, (char **)two, &o, why, sizeof(why)),
                     -1);
    assert_string_equal(why, "one ADDRESS:PORT only (\"127.0.0.1:81\")");
    assert_int_equal(explaincli_args(2, (char **)unknown, &o, why, sizeof(why)),
                     -1);
    assert_string_equal(why,
                        "--watch: unknown option, or its value is missing");
    assert_int_equal(
        explaincli_args(3, (char **)bad_admin, &o, why, sizeof(why)), -1);
    assert_true(strncmp(why, "--admin \"localhost:9990\": ", 26) == 0);
}

static void
test_parse_service(void **state)
{
    static const struct {
        const char *s;
        const char *why;
    } bad[] = {
        {NULL, "service is missing (NAMESPACE/NAME)"},
        {"", "service is missing (NAMESPACE/NAME)"},
        {"web", "service \"web\": not NAMESPACE/NAME"},
        {"default/", "service \"default/\": not"},
        {"/web", "service \"/web\": not"},
        {"default/web/x", "service \"default/web/x\": not"},
        {"Default/web", "service \"Default/web\": not"},
        {"default/-web", "service \"default/-web\": not"},
        {"default/web-", "service \"default/web-\": not"},
        {"default/we_b", "service \"default/we_b\": not"},
        {"default/we.b", "service \"default/we.b\": not"},
    };
    struct explain_svc q;
    char why[160], long_name[80];
    size_t i;

    (void)state;
    assert_int_equal(
        explain_parse_service("kube-system/kube-dns", &q, why, sizeof(why)), 0);
    assert_string_equal(q.ns, "kube-system");
    assert_string_equal(q.name, "kube-dns");
    memset(long_name, 'a', sizeof(long_name));
    memcpy(long_name, "ns/", 3);
    long_name[3 + 63] = '\0'; /* 63: the longest label */
    assert_int_equal(explain_parse_service(long_name, &q, why, sizeof(why)), 0);
    assert_int_equal(strlen(q.name), 63);
    long_name[3 + 63] = 'a';
    long_name[3 + 64] = '\0';
    assert_int_equal(explain_parse_service(long_name, &q, why, sizeof(why)),
                     -1);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        if (explain_parse_service(bad[i].s, &q, why, sizeof(why)) != -1)
            fail_msg("case %zu accepted", i);
        if (strncmp(why, bad[i].why, strlen(bad[i].why)) != 0)
            fail_msg("case %zu: \"%s\", want \"%s...\"", i, why, bad[i].why);
    }
}

static void
test_parse_watch(void **state)
{
    static const struct {
        const char *id, *addr, *proto, *count, *seconds, *why;
    } bad[] = {
        {NULL, NULL, NULL, NULL, NULL, "addr is missing"},
        {"0", NULL, NULL, NULL, NULL, "id \"0\": not a watch number"},
        {"x", NULL, NULL, NULL, NULL, "id \"x\": not a watch number"},
        {"-1", NULL, NULL, NULL, NULL, "id \"-1\": not"},
        {"1.5", NULL, NULL, NULL, NULL, "id \"1.5\": not"},
        {"1", "127.0.0.1:80", NULL, NULL, NULL, "id goes alone"},
        {"1", NULL, NULL, "3", NULL, "id goes alone"},
        {NULL, "127.0.0.1:80", "udp", NULL, NULL, "only TCP"},
        {NULL, "127.0.0.1:80", NULL, "0", NULL, "count \"0\": a whole"},
        {NULL, "127.0.0.1:80", NULL, "101", NULL, "count \"101\": a whole"},
        {NULL, "127.0.0.1:80", NULL, "2.5", NULL, "count \"2.5\": a whole"},
        {NULL, "127.0.0.1:80", NULL, " 2", NULL, "count \" 2\": a whole"},
        {NULL, "127.0.0.1:80", NULL, "", NULL, "count \"\": a whole"},
        {NULL, "127.0.0.1:80", NULL, NULL, "0", "seconds \"0\": a number"},
        {NULL, "127.0.0.1:80", NULL, NULL, "61", "seconds \"61\": a number"},
        {NULL, "127.0.0.1:80", NULL, NULL, "nan", "seconds \"nan\": a"},
        {NULL, "127.0.0.1:80", NULL, NULL, "inf", "seconds \"inf\": a"},
        {NULL, "127.0.0.1:80", NULL, NULL, "-1", "seconds \"-1\": a"},
        {NULL, "127.0.0.1:80", NULL, NULL, "1s", "seconds \"1s\": a"},
    };
    struct explain_watch w;
    char why[160];
    size_t i;

    (void)state;
    assert_int_equal(explain_parse_watch("42", NULL, NULL, NULL, NULL, 100, 60,
                                         &w, why, sizeof(why)),
                     0);
    assert_int_equal(w.id, 42);
    assert_int_equal(explain_parse_watch(NULL, "127.0.0.1:80", "tcp", NULL,
                                         NULL, 1000, 600, &w, why, sizeof(why)),
                     0);
    assert_int_equal(w.id, 0);
    assert_int_equal(w.count, 100); /* README: ferry explain */
    assert_true(w.seconds == 30);
    assert_int_equal(explain_parse_watch(NULL, "[::1]:80", NULL, "7", "0.5",
                                         1000, 600, &w, why, sizeof(why)),
                     0);
    assert_int_equal(w.count, 7);
    assert_true(w.seconds == 0.5);
    /* Defaults above the caps are cut to them. */
    assert_int_equal(explain_parse_watch(NULL, "[::1]:80", NULL, NULL, NULL, 10,
                                         5, &w, why, sizeof(why)),
                     0);
    assert_int_equal(w.count, 10);
    assert_true(w.seconds == 5);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        if (explain_parse_watch(bad[i].id, bad[i].addr, bad[i].proto,
                                bad[i].count, bad[i].seconds, 100, 60, &w, why,
                                sizeof(why))
            != -1)
            fail_msg("case %zu accepted", i);
        if (strncmp(why, bad[i].why, strlen(bad[i].why)) != 0)
            fail_msg("case %zu: \"%s\", want \"%s...\"", i, why, bad[i].why);
    }
}

static void
test_cli_trace_watch(void **state)
{
    const char *trace[] = {"--trace", "default/web", "--json"};
    const char *watch[] = {"--watch", "127.0.0.1:80", "--count",
                           "3",       "--seconds",    "2.5"};
    const char *both[] = {"--trace", "default/web", "--watch", "127.0.0.1:80"};
    const char *trace_addr[] = {"--trace", "default/web", "127.0.0.1:80"};
    const char *trace_proto[] = {"--trace", "default/web", "--proto", "tcp"};
    const char *count_alone[] = {"127.0.0.1:80", "--count", "3"};
    const char *watch_from[] = {"--watch", "127.0.0.1:80", "--from",
                                "127.0.0.2"};
    const char *bad_count[] = {"--watch", "127.0.0.1:80", "--count", "0"};
    const char *bad_svc[] = {"--trace", "web"};
    struct explaincli_opts o;
    char why[160];

    (void)state;
    assert_int_equal(explaincli_args(3, (char **)trace, &o, why, sizeof(why)),
                     0);
    assert_string_equal(o.trace, "default/web");
    assert_int_equal(o.json, 1);
    assert_int_equal(explaincli_args(6, (char **)watch, &o, why, sizeof(why)),
                     0);
    assert_int_equal(o.watch, 1);
    assert_string_equal(o.addr, "127.0.0.1:80");
    assert_int_equal(o.nwatch, 3);
    assert_true(o.watch_s == 2.5);
    assert_int_equal(explaincli_args(2, (char **)watch, &o, why, sizeof(why)),
                     0);
    assert_int_equal(o.nwatch, EXPLAIN_WATCH_COUNT);
    assert_int_equal(explaincli_args(4, (char **)both, &o, why, sizeof(why)),
                     -1);
    assert_string_equal(why, "one of ADDRESS:PORT, --trace and --watch");
    assert_int_equal(
        explaincli_args(3, (char **)trace_addr, &o, why, sizeof(why)), -1);
    assert_string_equal(why, "one of ADDRESS:PORT, --trace and --watch");
    assert_int_equal(
        explaincli_args(4, (char **)trace_proto, &o, why, sizeof(why)), -1);
    assert_string_equal(why, "--trace takes a Service, not an address");
    assert_int_equal(
        explaincli_args(3, (char **)count_alone, &o, why, sizeof(why)), -1);
    assert_string_equal(why, "--count and --seconds go with --watch");
    assert_int_equal(
        explaincli_args(4, (char **)watch_from, &o, why, sizeof(why)), -1);
    assert_string_equal(why, "--watch shows every client: no --from");
    assert_int_equal(
        explaincli_args(4, (char **)bad_count, &o, why, sizeof(why)), -1);
    assert_true(strncmp(why, "count \"0\": a whole number", 24) == 0);
    assert_int_equal(explaincli_args(2, (char **)bad_svc, &o, why, sizeof(why)),
                     -1);
    assert_true(strncmp(why, "service \"web\": not NAMESPACE/NAME", 33) == 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_cli_args),
        cmocka_unit_test(test_parse_service),
        cmocka_unit_test(test_parse_watch),
        cmocka_unit_test(test_cli_trace_watch),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
