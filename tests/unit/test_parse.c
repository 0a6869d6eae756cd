/*
 * test_parse.c - the scalar parsers shared by the config and the API:
 * what each accepts, and that everything else is refused.
 */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "parse.h"

static void
accept_hostport(const char *s, int allow0, const char *want)
{
    char buf[SADDR_STR_MAX];
    const char *why = NULL;
    struct saddr a;

    if (parse_hostport(s, &a, allow0, &why) != 0)
        fail_msg("\"%s\" refused: %s", s, why);
    assert_string_equal(saddr_str(&a, buf, sizeof(buf)), want);
}

static void
reject_hostport(const char *s, int allow0, const char *why_part)
{
    const char *why = NULL;
    struct saddr a;

    if (parse_hostport(s, &a, allow0, &why) == 0)
        fail_msg("\"%s\" accepted", s);
    assert_non_null(why);
    if (why_part != NULL && strstr(why, why_part) == NULL)
        fail_msg("\"%s\": reason \"%s\", want \"%s\"", s, why, why_part);
}

static void
test_hostport_accept(void **state)
{
    struct saddr a;
    const char *why;

    (void)state;
    accept_hostport("127.0.0.1:80", 0, "127.0.0.1:80");
    accept_hostport("0.0.0.0:65535", 0, "0.0.0.0:65535");
    accept_hostport("198.18.0.1:1", 0, "198.18.0.1:1");
    accept_hostport("[::1]:8080", 0, "[::1]:8080");
    accept_hostport("[::]:443", 0, "[::]:443");
    accept_hostport("[2001:2:0:0::1]:53", 0, "[2001:2::1]:53");
    accept_hostport("127.0.0.1:0", 1, "127.0.0.1:0");
    accept_hostport("[::1]:0", 1, "[::1]:0");

    assert_int_equal(parse_hostport("10.0.0.1:8080", &a, 0, &why), 0);
    assert_int_equal(a.u.sa.sa_family, AF_INET);
    assert_int_equal(a.len, sizeof(struct sockaddr_in));
    assert_int_equal(saddr_port(&a), 8080);
    assert_int_equal(parse_hostport("[fe80::1]:9", &a, 0, &why), 0);
    assert_int_equal(a.u.sa.sa_family, AF_INET6);
    assert_int_equal(a.len, sizeof(struct sockaddr_in6));
    assert_int_equal(saddr_port(&a), 9);
}

static void
test_hostport_reject(void **state)
{
    (void)state;
    reject_hostport("localhost:80", 0, "not an IP address");
    reject_hostport("example.com:443", 0, "not an IP address");
    reject_hostport("127.0.0.1", 0, "missing :port");
    reject_hostport("127.0.0.1:", 0, "port must be 1-65535");
    reject_hostport("127.0.0.1:0", 0, "port must be 1-65535");
    reject_hostport("127.0.0.1:65536", 0, "port must be 1-65535");
    reject_hostport("127.0.0.1:70000", 1, "port must be 0-65535");
    reject_hostport("127.0.0.1:-1", 0, "port");
    reject_hostport("127.0.0.1:+80", 0, "port");
    reject_hostport("127.0.0.1:80 ", 0, "port");
    reject_hostport("127.0.0.1:0x50", 0, "port");
    reject_hostport("127.0.0.1:99999999999999999999999", 0, "port");
    reject_hostport(":80", 0, "missing");
    reject_hostport("::1:80", 0, "need brackets");
    reject_hostport("[1.2.3.4]:80", 0, "only for IPv6");
    reject_hostport("[::1]", 0, "expected [IPv6]:port");
    reject_hostport("[::1]80", 0, "expected [IPv6]:port");
    reject_hostport("[::1:80", 0, "expected [IPv6]:port");
    reject_hostport("[]:80", 0, "missing");
    reject_hostport("[fe80::1%eth0]:80", 0, NULL);
    reject_hostport("256.0.0.1:80", 0, "not an IP address");
    reject_hostport("1.2.3:80", 0, "not an IP address");
    reject_hostport(" 1.2.3.4:80", 0, "not an IP address");
    reject_hostport("", 0, NULL);
    reject_hostport("[0000:0000:0000:0000:0000:0000:0000:0000:0000]:80", 0,
                    NULL);
    reject_hostport("[::1]:99999999999999999999999", 0, "port");
    /* One spelling per port: no leading zeros, however many. */
    reject_hostport("127.0.0.1:09001", 0,
                    "port must be written without leading zeros");
    reject_hostport("127.0.0.1:00000000000000000009001", 0,
                    "without leading zeros");
    reject_hostport("[::1]:080", 0, "without leading zeros");
    reject_hostport("127.0.0.1:00", 1, "without leading zeros");
    /* One spelling per address: v4-mapped is written as IPv4. */
    reject_hostport("[::ffff:127.0.0.1]:8080", 0,
                    "an IPv4-mapped IPv6 address: write the IPv4 form");
    reject_hostport("[0:0:0:0:0:ffff:7f00:1]:8080", 0, "IPv4-mapped");
}

static void
test_saddr_kinds(void **state)
{
    struct saddr a;
    const char *why;

    (void)state;
    assert_int_equal(parse_ip("::ffff:1.2.3.4", 1, &a, &why), 0);
    assert_true(saddr_is_v4mapped(&a));
    assert_int_equal(parse_ip("1.2.3.4", 1, &a, &why), 0);
    assert_false(saddr_is_v4mapped(&a));
    assert_false(saddr_is_any(&a));
    assert_int_equal(parse_ip("0.0.0.0", 1, &a, &why), 0);
    assert_true(saddr_is_any(&a));
    assert_int_equal(parse_ip("::", 1, &a, &why), 0);
    assert_true(saddr_is_any(&a));
    assert_false(saddr_is_v4mapped(&a));
    assert_int_equal(parse_ip("::1", 1, &a, &why), 0);
    assert_false(saddr_is_any(&a));
}

static void
test_ip(void **state)
{
    char buf[SADDR_STR_MAX];
    const char *why = NULL;
    struct saddr a;

    (void)state;
    assert_int_equal(parse_ip("1.2.3.4", 99, &a, &why), 0);
    assert_string_equal(saddr_str(&a, buf, sizeof(buf)), "1.2.3.4:99");
    assert_string_equal(saddr_ip_str(&a, buf, sizeof(buf)), "1.2.3.4");
    assert_int_equal(parse_ip("::1", 7, &a, &why), 0);
    assert_string_equal(saddr_str(&a, buf, sizeof(buf)), "[::1]:7");
    assert_string_equal(saddr_ip_str(&a, buf, sizeof(buf)), "::1");
    assert_int_equal(parse_ip("[::1]", 7, &a, &why), -1);
    assert_int_equal(parse_ip("1.2.3.4:80", 7, &a, &why), -1);
    assert_int_equal(parse_ip("host", 7, &a, &why), -1);
    assert_int_equal(parse_ip("", 7, &a, &why), -1);
    assert_non_null(strstr(why, "not an IP address"));
}

/* IPv4 is written by hand: every octet value in every position, against
 * inet_ntop(); a buffer too short goes through inet_ntop(), which
 * writes nothing past it. */
static void
test_ip4_text(void **state)
{
    struct saddr a;
    char got[INET6_ADDRSTRLEN], want[INET_ADDRSTRLEN];
    unsigned v, pos;

    (void)state;
    memset(&a, 0, sizeof(a));
    a.u.in.sin_family = AF_INET;
    for (pos = 0; pos < 4; pos++)
        for (v = 0; v < 256; v++) {
            unsigned char *b = (unsigned char *)&a.u.in.sin_addr.s_addr;

            memset(b, 0, 4);
            b[pos] = (unsigned char)v;
            b[(pos + 1) % 4] = (unsigned char)(255 - v);
            inet_ntop(AF_INET, &a.u.in.sin_addr, want, sizeof(want));
            assert_string_equal(saddr_ip_str(&a, got, sizeof(got)), want);
        }
    memset(got, 'x', sizeof(got));
    saddr_ip_str(&a, got, 4);
    for (v = 4; v < sizeof(got); v++)
        assert_int_equal(got[v], 'x'); /* nothing past the 4 bytes given */
}

static void
test_saddr_cmp(void **state)
{
    struct saddr a, b, c, d;
    const char *why;

    (void)state;
    assert_int_equal(parse_hostport("1.2.3.4:80", &a, 0, &why), 0);
    assert_int_equal(parse_hostport("1.2.3.4:80", &b, 0, &why), 0);
    assert_int_equal(parse_hostport("1.2.3.4:81", &c, 0, &why), 0);
    assert_int_equal(parse_ip("::ffff:1.2.3.4", 80, &d, &why), 0);
    assert_int_equal(saddr_cmp(&a, &b), 0);
    assert_true(saddr_cmp(&a, &c) < 0);
    assert_true(saddr_cmp(&c, &a) > 0);
    /* A v4-mapped v6 address is a different socket address. */
    assert_true(saddr_cmp(&a, &d) != 0);
    assert_true(saddr_cmp(&a, &d) == -saddr_cmp(&d, &a));
}

static void
accept_duration(const char *s, uint64_t want)
{
    const char *why = NULL;
    uint64_t ms = 12345;

    if (parse_duration_ms(s, &ms, &why) != 0)
        fail_msg("\"%s\" refused: %s", s, why);
    assert_int_equal(ms, want);
}

static void
reject_duration(const char *s, const char *why_part)
{
    const char *why = NULL;
    uint64_t ms;

    if (parse_duration_ms(s, &ms, &why) == 0)
        fail_msg("\"%s\" accepted as %llu ms", s, (unsigned long long)ms);
    assert_non_null(why);
    if (strstr(why, why_part) == NULL)
        fail_msg("\"%s\": reason \"%s\", want \"%s\"", s, why, why_part);
}

static void
test_duration(void **state)
{
    (void)state;
    accept_duration("0", 0);
    accept_duration("0s", 0);
    accept_duration("0.0", 0);
    accept_duration("250ms", 250);
    accept_duration("1ms", 1);
    accept_duration("2s", 2000);
    accept_duration("1.5s", 1500);
    accept_duration(".5s", 500);
    accept_duration("5m", 300000);
    accept_duration("1h", 3600000);
    accept_duration("720h", 720ull * 3600000); /* 30 days, the maximum */
    accept_duration("43200m", 720ull * 3600000);

    reject_duration("10", "needs a unit");
    reject_duration("1.5", "needs a unit");
    reject_duration("5 parsecs", "unknown duration unit");
    reject_duration("5parsecs", "unknown duration unit");
    reject_duration("1d", "unknown duration unit");
    reject_duration("2S", "unknown duration unit");
    reject_duration("2s ", "unknown duration unit");
    reject_duration("1h30m", "unknown duration unit");
    reject_duration("-1s", "expected a duration");
    reject_duration("+1s", "expected a duration");
    reject_duration(" 1s", "expected a duration");
    reject_duration("s", "expected a duration");
    reject_duration("", "expected a duration");
    reject_duration("inf", "expected a duration");
    reject_duration("nan", "expected a duration");
    reject_duration("721h", "too long");
    reject_duration("1e300h", "too long");
    reject_duration("99999999999999999999999999999999s", "too long");
    reject_duration("1e999s", "expected a duration"); /* strtod overflows */
}

static void
test_uint(void **state)
{
    const char *why = NULL;
    uint64_t v = 0;

    (void)state;
    assert_int_equal(parse_uint("0", 0, 10, &v, &why), 0);
    assert_int_equal(v, 0);
    assert_int_equal(parse_uint("10", 0, 10, &v, &why), 0);
    assert_int_equal(v, 10);
    /* One spelling per number (YAML 1.1 reads 010 as octal). */
    assert_int_equal(parse_uint("007", 0, 10, &v, &why), -1);
    assert_string_equal(why, "write the number without leading zeros");
    assert_int_equal(parse_uint("00", 0, 10, &v, &why), -1);
    assert_int_equal(parse_uint("18446744073709551615", 0, UINT64_MAX, &v,
                                &why),
                     0);
    assert_true(v == UINT64_MAX);

    assert_int_equal(parse_uint("11", 0, 10, &v, &why), -1);
    assert_string_equal(why, "out of range");
    assert_int_equal(parse_uint("4", 5, 10, &v, &why), -1);
    assert_string_equal(why, "out of range");
    /* One past UINT64_MAX overflows strtoull. */
    assert_int_equal(parse_uint("18446744073709551616", 0, UINT64_MAX, &v,
                                &why),
                     -1);
    assert_int_equal(parse_uint("-1", 0, 10, &v, &why), -1);
    assert_string_equal(why, "expected a non-negative integer");
    assert_int_equal(parse_uint("+1", 0, 10, &v, &why), -1);
    assert_int_equal(parse_uint(" 1", 0, 10, &v, &why), -1);
    assert_int_equal(parse_uint("1 ", 0, 10, &v, &why), -1);
    assert_int_equal(parse_uint("1.0", 0, 10, &v, &why), -1);
    assert_int_equal(parse_uint("0x1", 0, 10, &v, &why), -1);
    assert_int_equal(parse_uint("abc", 0, 10, &v, &why), -1);
    assert_int_equal(parse_uint("", 0, 10, &v, &why), -1);
    assert_int_equal(parse_uint(NULL, 0, 10, &v, &why), -1);
}

static void
test_cidr(void **state)
{
    struct cidr c;
    struct saddr a;
    const char *why;
    char ip[SADDR_STR_MAX];

    (void)state;
    assert_int_equal(parse_cidr("198.18.0.0/15", 0, &c, &why), 0);
    assert_int_equal(c.prefix, 15);
    assert_true(cidr_canonical(&c));
    parse_ip("198.19.255.255", 0, &a, &why);
    assert_true(cidr_contains(&c, &a));
    parse_ip("198.20.0.0", 0, &a, &why);
    assert_false(cidr_contains(&c, &a));
    parse_ip("2001:2::1", 0, &a, &why);
    assert_false(cidr_contains(&c, &a)); /* another family */
    assert_int_equal(parse_cidr("2001:2::/48", 0, &c, &why), 0);
    assert_true(cidr_contains(&c, &a));
    assert_int_equal(parse_cidr("0.0.0.0/0", 0, &c, &why), 0);
    parse_ip("203.0.113.9", 0, &a, &why);
    assert_true(cidr_contains(&c, &a));

    assert_int_equal(parse_cidr("198.18.0.1/15", 0, &c, &why), -1);
    assert_string_equal(why, "host bits set after the prefix");
    assert_int_equal(parse_cidr("198.18.0.1/15", PARSE_CIDR_MASK, &c, &why),
                     0);
    assert_string_equal(saddr_ip_str(&c.ip, ip, sizeof(ip)), "198.18.0.0");
    assert_int_equal(parse_cidr("2001:2::1/127", PARSE_CIDR_MASK, &c, &why),
                     0);
    assert_string_equal(saddr_ip_str(&c.ip, ip, sizeof(ip)), "2001:2::");
    c.ip.u.in6.sin6_addr.s6_addr[15] = 1;
    assert_false(cidr_canonical(&c));

    assert_int_equal(parse_cidr("198.18.0.0/33", 0, &c, &why), -1);
    assert_int_equal(parse_cidr("2001:2::/129", 0, &c, &why), -1);
    assert_int_equal(parse_cidr("198.18.0.0/015", 0, &c, &why), -1);
    assert_int_equal(parse_cidr("198.18.0.0/", 0, &c, &why), -1);
    assert_int_equal(parse_cidr("198.18.0.0", 0, &c, &why), -1);
    assert_string_equal(why, "not an address/prefix");
    assert_int_equal(parse_cidr("host/8", 0, &c, &why), -1);
    assert_int_equal(parse_cidr("/8", 0, &c, &why), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostport_accept),
        cmocka_unit_test(test_cidr),
        cmocka_unit_test(test_hostport_reject),
        cmocka_unit_test(test_ip),
        cmocka_unit_test(test_saddr_kinds),
        cmocka_unit_test(test_saddr_cmp),
        cmocka_unit_test(test_ip4_text),
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_uint),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
