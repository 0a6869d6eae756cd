/* Unit tests for the load generator's latency histogram (bench/lathist.c):
 * percentiles must be within the bucket resolution of the exact ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "lathist.h"

/* Relative width of a bucket: 1 / LATHIST_SUB, with slack for the middle. */
#define REL_ERR (1.0 / LATHIST_SUB + 1e-9)

static void
test_buckets_cover_values(void **state)
{
    uint64_t v, lo, hi;
    unsigned i, prev = 0;

    (void)state;
    for (v = 0; v < (1ull << 40); v = v * 3 / 2 + 1) {
        i = lathist_index(v);
        assert_true(i < LATHIST_BUCKETS);
        assert_true(i >= prev); /* monotonic */
        prev = i;
        lathist_bucket_range(i, &lo, &hi);
        assert_true(lo <= v && v <= hi);
    }
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static void
test_quantiles_close_to_exact(void **state)
{
    static uint64_t v[100000];
    static const double qs[] = {0.5, 0.9, 0.99, 0.999};
    struct lathist *h = malloc(sizeof(*h));
    size_t i, n = sizeof(v) / sizeof(v[0]);
    uint64_t x = 88172645463325252ull;

    (void)state;
    assert_non_null(h);
    lathist_init(h);
    for (i = 0; i < n; i++) {
        /* A long-tailed spread from 1 us to ~10 ms. */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v[i] = 1000 + (x % 1000) * (x % 1000) * (x % 10 + 1);
        lathist_add(h, v[i]);
    }
    qsort(v, n, sizeof(v[0]), cmp_u64);
    assert_int_equal(h->count, n);
    assert_int_equal(h->min, v[0]);
    assert_int_equal(h->max, v[n - 1]);
    for (i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        double exact = (double)v[(size_t)(qs[i] * (double)(n - 1))];
        double got = (double)lathist_quantile(h, qs[i]);
        assert_true(got >= exact * (1 - REL_ERR) - 1);
        assert_true(got <= exact * (1 + REL_ERR) + 1);
    }
    free(h);
}

static void
test_empty_and_single(void **state)
{
    struct lathist h;

    (void)state;
    lathist_init(&h);
    assert_int_equal(h.count, 0);
    lathist_add(&h, 12345);
    assert_int_equal(h.count, 1);
    assert_in_range(lathist_quantile(&h, 0.5), 12345 * (1 - REL_ERR),
                    12345 * (1 + REL_ERR));
    assert_in_range(lathist_mean(&h), 12344, 12346);
}

/* Two halves merged must give exactly the histogram of the whole, and
 * the merge's p99 must be that of all samples, not the mean of the two. */
static void
test_merge_is_exact(void **state)
{
    struct lathist *all = malloc(sizeof(*all));
    struct lathist *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
    uint64_t i;

    (void)state;
    assert_non_null(all);
    assert_non_null(a);
    assert_non_null(b);
    lathist_init(all);
    lathist_init(a);
    lathist_init(b);
    for (i = 0; i < 10000; i++) {
        /* a: fast and many; b: slow and few. */
        uint64_t v = i % 10 == 0 ? 5000000 + i : 10000 + i;

        lathist_add(all, v);
        lathist_add(i % 10 == 0 ? b : a, v);
    }
    lathist_merge(a, b);
    assert_int_equal(a->count, all->count);
    assert_int_equal(a->min, all->min);
    assert_int_equal(a->max, all->max);
    assert_memory_equal(a->b, all->b, sizeof(a->b));
    assert_int_equal(lathist_quantile(a, 0.5), lathist_quantile(all, 0.5));
    assert_int_equal(lathist_quantile(a, 0.99), lathist_quantile(all, 0.99));
    assert_true(lathist_quantile(a, 0.95) > 4000000); /* the slow tenth */
    /* Merging an empty one changes nothing. */
    lathist_init(b);
    lathist_merge(a, b);
    assert_int_equal(a->count, all->count);
    assert_int_equal(a->min, all->min);
    free(all);
    free(a);
    free(b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets_cover_values),
        cmocka_unit_test(test_quantiles_close_to_exact),
        cmocka_unit_test(test_empty_and_single),
        cmocka_unit_test(test_merge_is_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
