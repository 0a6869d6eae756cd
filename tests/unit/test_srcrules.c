#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "srcrules.h"

static struct saddr
ip(const char *s)
{
    struct saddr a;
    const char *why;

    assert_int_equal(parse_ip(s, 1234, &a, &why), 0);
    return a;
}

static struct cidr
pfx(const char *s)
{
    struct cidr c;
    const char *why;

    assert_int_equal(parse_cidr(s, 0, &c, &why), 0);
    return c;
}

/* The client as conn.c hands it over: a mapped address made IPv4. */
static int
match(const struct cidr *allow, size_t na, const struct cidr *deny,
      size_t nd, const char *client)
{
    struct saddr c = ip(client), norm;

    srcrules_client_ip(&c, &norm);
    return srcrules_match(allow, na, deny, nd, &norm);
}

static void
test_match(void **state)
{
    struct cidr allow[] = {pfx("198.18.0.0/15"), pfx("2001:2::/48")};
    struct cidr deny[] = {pfx("198.18.0.7/32"), pfx("2001:2::bad/128")};

    (void)state;
    /* Nothing listed: everyone. */
    assert_int_equal(match(NULL, 0, NULL, 0, "203.0.113.1"), -1);
    assert_int_equal(match(NULL, 0, NULL, 0, "::1"), -1);
    /* An allow list lets in only what it lists, both families. */
    assert_int_equal(match(allow, 2, NULL, 0, "198.19.255.255"), -1);
    assert_int_equal(match(allow, 2, NULL, 0, "2001:2::1"), -1);
    assert_int_equal(match(allow, 2, NULL, 0, "198.20.0.0"),
                     STATS_SRC_NOT_ALLOWED);
    assert_int_equal(match(allow, 2, NULL, 0, "2001:3::1"),
                     STATS_SRC_NOT_ALLOWED);
    /* An IPv4 prefix never holds an IPv6 client, and the other way. */
    assert_int_equal(match(allow, 1, NULL, 0, "::1"), STATS_SRC_NOT_ALLOWED);
    /* Deny wins over allow; with no allow list, only deny counts. */
    assert_int_equal(match(allow, 2, deny, 2, "198.18.0.7"), STATS_SRC_DENY);
    assert_int_equal(match(allow, 2, deny, 2, "2001:2::bad"),
                     STATS_SRC_DENY);
    assert_int_equal(match(allow, 2, deny, 2, "198.18.0.8"), -1);
    assert_int_equal(match(NULL, 0, deny, 2, "198.18.0.7"), STATS_SRC_DENY);
    assert_int_equal(match(NULL, 0, deny, 2, "203.0.113.1"), -1);
    /* An IPv4 client of a dual-stack socket matches IPv4 prefixes. */
    assert_int_equal(match(NULL, 0, deny, 2, "::ffff:198.18.0.7"),
                     STATS_SRC_DENY);
    assert_int_equal(match(allow, 2, NULL, 0, "::ffff:198.18.0.9"), -1);
}

static void
test_client_ip(void **state)
{
    struct saddr in = ip("::ffff:127.0.0.2"), out;
    char b[SADDR_STR_MAX];

    (void)state;
    srcrules_client_ip(&in, &out);
    assert_int_equal(out.u.sa.sa_family, AF_INET);
    assert_string_equal(saddr_str(&out, b, sizeof(b)), "127.0.0.2:1234");
    in = ip("2001:2::1");
    srcrules_client_ip(&in, &out);
    assert_int_equal(saddr_cmp(&in, &out), 0);
}

/* At most <max> open per address; a close makes room; other addresses
 * (and other ports of the same one) count apart / together. */
static void
test_max_per_source(void **state)
{
    struct srcrules_table *t = srcrules_table_new();
    struct saddr a = ip("198.18.0.1"), a2 = a, b = ip("2001:2::1");
    struct saddr b2 = ip("2001:2::2");

    (void)state;
    assert_non_null(t);
    saddr_set_port(&a2, 999);
    assert_int_equal(srcrules_admit(t, &a, 2, 0, 0), SRCRULES_COUNTED);
    assert_int_equal(srcrules_admit(t, &a2, 2, 0, 0), SRCRULES_COUNTED);
    assert_int_equal(srcrules_admit(t, &a, 2, 0, 0), SRCRULES_MAX);
    assert_int_equal(srcrules_admit(t, &b, 1, 0, 0), SRCRULES_COUNTED);
    assert_int_equal(srcrules_admit(t, &b, 1, 0, 0), SRCRULES_MAX);
    /* Another address of the same /64 is another source. */
    assert_int_equal(srcrules_admit(t, &b2, 1, 0, 0), SRCRULES_COUNTED);
    srcrules_release(t, &b2);
    assert_int_equal(srcrules_table_live(t, 0, 0), 2);
    srcrules_release(t, &a);
    assert_int_equal(srcrules_admit(t, &a, 2, 0, 0), SRCRULES_COUNTED);
    srcrules_release(t, &a);
    srcrules_release(t, &a);
    srcrules_release(t, &b);
    /* Nothing open and no rate: nothing kept. */
    assert_int_equal(srcrules_table_live(t, 0, 0), 0);
    srcrules_table_free(t);
    srcrules_table_free(NULL);
}

/* A bucket of <rate> tokens refilled at <rate> per second: a burst of
 * <rate>, then one per 1/rate s. Refusals take no token. */
static void
test_rate_per_source(void **state)
{
    struct srcrules_table *t = srcrules_table_new();
    struct saddr a = ip("198.18.0.1"), b = ip("198.18.0.2");
    int i;

    (void)state;
    for (i = 0; i < 4; i++) {
        assert_int_equal(srcrules_admit(t, &a, 0, 4, 100.0), SRCRULES_COUNTED);
        srcrules_release(t, &a);
    }
    assert_int_equal(srcrules_admit(t, &a, 0, 4, 100.0), SRCRULES_RATE);
    assert_int_equal(srcrules_admit(t, &a, 0, 4, 100.1), SRCRULES_RATE);
    /* Another address has its own bucket. */
    assert_int_equal(srcrules_admit(t, &b, 0, 4, 100.1), SRCRULES_COUNTED);
    srcrules_release(t, &b);
    /* A quarter of a second brings one token back, and only one. */
    assert_int_equal(srcrules_admit(t, &a, 0, 4, 100.26), SRCRULES_COUNTED);
    srcrules_release(t, &a);
    assert_int_equal(srcrules_admit(t, &a, 0, 4, 100.27), SRCRULES_RATE);
    /* Until its bucket is full again, an address stays in the table. */
    assert_int_equal(srcrules_table_live(t, 4, 100.3), 2);
    assert_int_equal(srcrules_table_live(t, 4, 102.0), 0);
    /* A clock a worker reads a little behind takes no token back. */
    assert_int_equal(srcrules_admit(t, &a, 0, 1, 200.0), SRCRULES_COUNTED);
    assert_int_equal(srcrules_admit(t, &a, 0, 1, 199.9), SRCRULES_RATE);
    srcrules_release(t, &a);
    srcrules_table_free(t);
}

/* Both limits: max is checked first and a refusal for it takes no token. */
static void
test_both_limits(void **state)
{
    struct srcrules_table *t = srcrules_table_new();
    struct saddr a = ip("198.18.0.1");

    (void)state;
    assert_int_equal(srcrules_admit(t, &a, 1, 2, 0), SRCRULES_COUNTED);
    assert_int_equal(srcrules_admit(t, &a, 1, 2, 0), SRCRULES_MAX);
    srcrules_release(t, &a);
    assert_int_equal(srcrules_admit(t, &a, 1, 2, 0), SRCRULES_COUNTED);
    srcrules_release(t, &a);
    assert_int_equal(srcrules_admit(t, &a, 1, 2, 0), SRCRULES_RATE);
    srcrules_table_free(t);
}

/* An IPv4 client and the same one IPv4-mapped are one source. */
static void
test_mapped_is_same_source(void **state)
{
    struct srcrules_table *t = srcrules_table_new();
    struct saddr a = ip("127.0.0.2"), m = ip("::ffff:127.0.0.2");

    (void)state;
    assert_int_equal(srcrules_admit(t, &a, 1, 0, 0), SRCRULES_COUNTED);
    assert_int_equal(srcrules_admit(t, &m, 1, 0, 0), SRCRULES_MAX);
    srcrules_release(t, &m);
    assert_int_equal(srcrules_table_live(t, 0, 0), 0);
    srcrules_table_free(t);
}

/* The table never holds more than SRCRULES_SLOTS live sources: past
 * that, new ones are let in uncounted, and entries freed are reused. */
static void
test_bounded(void **state)
{
    struct srcrules_table *t = srcrules_table_new();
    size_t i, n = 2 * SRCRULES_SLOTS, counted = 0, uncounted = 0;
    char s[64];

    (void)state;
    for (i = 0; i < n; i++) {
        struct saddr a;
        snprintf(s, sizeof(s), "2001:2::%zx:%zx", i >> 16, i & 0xffff);
        a = ip(s);
        switch (srcrules_admit(t, &a, 5, 0, 0)) {
        case SRCRULES_COUNTED:
            counted++;
            break;
        case SRCRULES_UNCOUNTED:
            uncounted++;
            break;
        default:
            fail_msg("a new address refused");
        }
    }
    assert_int_equal(counted + uncounted, n);
    assert_true(counted <= SRCRULES_SLOTS);
    assert_true(counted >= SRCRULES_SLOTS / 2); /* windows fill well */
    assert_int_equal(srcrules_table_live(t, 0, 0), counted);
    /* Release everything counted: the slots come back. */
    for (i = 0; i < n; i++) {
        struct saddr a;
        snprintf(s, sizeof(s), "2001:2::%zx:%zx", i >> 16, i & 0xffff);
        a = ip(s);
        srcrules_release(t, &a);
    }
    assert_int_equal(srcrules_table_live(t, 0, 0), 0);
    {
        struct saddr a = ip("198.18.0.1");
        assert_int_equal(srcrules_admit(t, &a, 1, 0, 0), SRCRULES_COUNTED);
    }
    srcrules_table_free(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_client_ip),
        cmocka_unit_test(test_max_per_source),
        cmocka_unit_test(test_rate_per_source),
        cmocka_unit_test(test_both_limits),
        cmocka_unit_test(test_mapped_is_same_source),
        cmocka_unit_test(test_bounded),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
