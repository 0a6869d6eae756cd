/*
 * test_ipcount.c - the engine's counted address sets (proxy/node/ipcount.c)
 * against a model: random additions and removals over a few IPv4 and
 * IPv6 addresses (so that the tables grow, entries are removed from the
 * middle of probe runs and come back), random commits; after each step
 * every count, the touched list (each address once, exactly those whose
 * wanted state differs from the kernel's), the walk of wanted addresses
 * and the kernel's counts agree with the model.
 */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ipcount.h"

#define NADDR 300 /* 200 IPv4, 100 IPv6 */

struct model {
    unsigned want[NADDR];
    int have[NADDR];
};

static void
addr(int i, struct saddr *a)
{
    char text[64];
    const char *why;

    if (i < 200)
        snprintf(text, sizeof(text), "198.18.%d.%d", i / 50, i % 50 + 1);
    else
        snprintf(text, sizeof(text), "2001:2::%x", i);
    assert_int_equal(parse_ip(text, 0, a, &why), 0);
}

static int
index_of(const struct saddr *a)
{
    struct saddr b;
    int i;

    for (i = 0; i < NADDR; i++) {
        addr(i, &b);
        if (saddr_cmp(a, &b) == 0)
            return i;
    }
    fail_msg("an address that was never added");
    return -1;
}

static void
check(const struct ipcount *c, const struct model *m)
{
    int seen[NADDR] = {0}, i, want, have;
    size_t k, at = 0, held[2] = {0, 0};
    struct saddr a;

    for (k = 0; k < ipcount_ntouched(c); k++) {
        ipcount_touched(c, k, &a, &want, &have);
        i = index_of(&a);
        assert_int_equal(seen[i], 0); /* once */
        seen[i] = 1;
        assert_int_equal(want, m->want[i] > 0);
        assert_int_equal(have, m->have[i]);
    }
    for (i = 0; i < NADDR; i++) {
        if ((m->want[i] > 0) != m->have[i])
            assert_int_equal(seen[i], 1);
        held[i >= 200] += (size_t)m->have[i];
        seen[i] = 0;
    }
    while (ipcount_next(c, &at, &a)) {
        i = index_of(&a);
        assert_int_equal(seen[i], 0);
        seen[i] = 1;
        assert_true(m->want[i] > 0);
    }
    for (i = 0; i < NADDR; i++) {
        assert_int_equal(seen[i], m->want[i] > 0);
        seen[i] = 0;
    }
    /* The held ones (what the verify step samples): wanted or not. */
    for (at = 0; ipcount_next_held(c, &at, &a);) {
        i = index_of(&a);
        assert_int_equal(seen[i], 0);
        seen[i] = 1;
    }
    for (i = 0; i < NADDR; i++)
        assert_int_equal(seen[i], m->have[i]);
    assert_int_equal(ipcount_held(c, 0), held[0]);
    assert_int_equal(ipcount_held(c, 1), held[1]);
}

static void
test_random(void **state)
{
    struct ipcount c;
    struct model m;
    struct saddr a;
    unsigned seed;
    int step, i, d;

    (void)state;
    for (seed = 1; seed <= 6; seed++) {
        srandom(seed);
        memset(&m, 0, sizeof(m));
        ipcount_init(&c);
        for (step = 0; step < 6000; step++) {
            int r = (int)(random() % 100);

            if (r < 2) {
                int all = random() % 2;

                assert_int_equal(ipcount_commit(&c, all), 0);
                for (i = 0; i < NADDR; i++)
                    m.have[i] = m.want[i] > 0;
                assert_int_equal(ipcount_ntouched(&c), 0);
            } else {
                /* Skewed toward a few addresses at a time, so that
                 * counts also reach 0. */
                i = (int)(random() % (r < 60 ? 40 : NADDR));
                i = (i + step / 500 * 37) % NADDR;
                d = random() % 2 ? 1 : -1;
                addr(i, &a);
                assert_int_equal(ipcount_add(&c, &a, d), 0);
                if (d > 0)
                    m.want[i]++;
                else if (m.want[i] > 0)
                    m.want[i]--;
            }
            if (step % 97 == 0)
                check(&c, &m);
        }
        check(&c, &m);
        ipcount_deinit(&c);
    }
}

/* Taking away what was never added changes nothing; an empty set walks
 * nothing and holds nothing. */
static void
test_empty(void **state)
{
    struct ipcount c;
    struct saddr a;
    size_t at = 0;

    (void)state;
    ipcount_init(&c);
    addr(3, &a);
    assert_int_equal(ipcount_add(&c, &a, -1), 0);
    assert_int_equal(ipcount_ntouched(&c), 0);
    assert_int_equal(ipcount_next(&c, &at, &a), 0);
    assert_int_equal(ipcount_held(&c, 0), 0);
    assert_int_equal(ipcount_commit(&c, 1), 0);
    ipcount_deinit(&c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_empty),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
