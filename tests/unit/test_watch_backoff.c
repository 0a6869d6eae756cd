/* Backoff sequence and Retry-After parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "backoff.h"

static void
test_sequence(void **state)
{
    const double want[] = {0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30, 30, 30};
    struct backoff b;
    double now = 1000, d;
    size_t i;

    (void)state;
    backoff_init(&b);
    for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_float_equal(backoff_peek(&b, now), want[i], 1e-9);
        d = backoff_next(&b, now, 0);
        assert_float_equal(d, want[i], 1e-9);
        now += d;
    }
    assert_int_equal(b.failures, 9);
}

static void
test_jitter(void **state)
{
    struct backoff b;
    double d;
    int i;

    (void)state;
    backoff_init(&b);
    assert_float_equal(backoff_next(&b, 0, 0.999999), 1.6, 1e-5);
    assert_float_equal(backoff_next(&b, 0, 0.5), 2.4, 1e-9);
    for (i = 0; i < 1000; i++) {
        double r = backoff_rand();
        assert_true(r >= 0 && r < 1);
        backoff_init(&b);
        backoff_next(&b, 0, 0); /* base now 1.6 */
        d = backoff_next(&b, 0, r);
        assert_true(d >= 1.6 && d < 3.2);
    }
    backoff_init(&b);
    assert_float_equal(backoff_next(&b, 0, 7.0), 0.8, 1e-9); /* bad rnd */
}

static void
test_reset(void **state)
{
    struct backoff b;

    (void)state;
    backoff_init(&b);
    backoff_next(&b, 0, 0);
    backoff_next(&b, 1, 0);
    backoff_next(&b, 3, 0);
    assert_float_equal(backoff_peek(&b, 10), 6.4, 1e-9);
    /* Healthy, but not for long enough. */
    backoff_healthy(&b, 10);
    backoff_healthy(&b, 100); /* does not restart the period */
    assert_float_equal(backoff_peek(&b, 129), 6.4, 1e-9);
    assert_float_equal(backoff_next(&b, 129, 0), 6.4, 1e-9);
    /* Two minutes healthy: back to the start. */
    backoff_healthy(&b, 200);
    assert_float_equal(backoff_peek(&b, 319.9), 12.8, 1e-9);
    assert_float_equal(backoff_peek(&b, 320), 0.8, 1e-9);
    assert_float_equal(backoff_next(&b, 400, 0), 0.8, 1e-9);
    assert_float_equal(backoff_next(&b, 401, 0), 1.6, 1e-9);
}

static void
test_retry_after(void **state)
{
    double s = -1;
    /* Wed, 21 Oct 2015 07:28:00 GMT */
    const double t0 = 1445412480;

    (void)state;
    assert_int_equal(backoff_retry_after("3", 0, &s), 0);
    assert_float_equal(s, 3, 1e-9);
    assert_int_equal(backoff_retry_after(" 0 ", 0, &s), 0);
    assert_float_equal(s, 0, 1e-9);
    assert_int_equal(backoff_retry_after("999999", 0, &s), 0);
    assert_float_equal(s, RETRY_AFTER_MAX_S, 1e-9);
    assert_int_equal(
        backoff_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", t0 - 5, &s), 0);
    assert_float_equal(s, 5, 1e-9);
    assert_int_equal(
        backoff_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", t0 + 5, &s), 0);
    assert_float_equal(s, 0, 1e-9);
    assert_int_equal(backoff_retry_after("", 0, &s), -1);
    assert_int_equal(backoff_retry_after("-1", 0, &s), -1);
    assert_int_equal(backoff_retry_after("1.5", 0, &s), -1);
    assert_int_equal(backoff_retry_after("soon", 0, &s), -1);
    assert_int_equal(backoff_retry_after(NULL, 0, &s), -1);
    assert_int_equal(backoff_retry_after("Wed, 21 Oct 2015 07:28:00", 0, &s),
                     -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sequence),
        cmocka_unit_test(test_jitter),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_retry_after),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
