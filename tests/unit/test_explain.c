/*
 * test_explain.c - the question of "ferry explain": GET /explain's query
 * values (explain_parse()) and the command's arguments
 * (explaincli_args()): good ones taken, bad ones refused with a reason.
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

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_cli_args),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
