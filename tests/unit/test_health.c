/* Unit tests for the health-check state machine, check scheduling and
 * the HTTP status-line reader (proxy/health/health.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "health.h"

static void
test_fall_then_rise(void **state)
{
    struct health_sm sm;
    int i;

    (void)state;
    health_sm_init(&sm);
    assert_true(sm.up);
    /* fall = 3: two failures are not enough, the third takes it down. */
    assert_int_equal(health_sm_feed(&sm, 0, 2, 3), HEALTH_SAME);
    assert_int_equal(health_sm_feed(&sm, 0, 2, 3), HEALTH_SAME);
    assert_true(sm.up);
    assert_int_equal(health_sm_feed(&sm, 0, 2, 3), HEALTH_WENT_DOWN);
    assert_false(sm.up);
    /* Further failures are no new transition (logged once). */
    for (i = 0; i < 10; i++)
        assert_int_equal(health_sm_feed(&sm, 0, 2, 3), HEALTH_SAME);
    /* rise = 2. */
    assert_int_equal(health_sm_feed(&sm, 1, 2, 3), HEALTH_SAME);
    assert_false(sm.up);
    assert_int_equal(health_sm_feed(&sm, 1, 2, 3), HEALTH_WENT_UP);
    assert_true(sm.up);
    assert_int_equal(health_sm_feed(&sm, 1, 2, 3), HEALTH_SAME);
}

static void
test_runs_must_be_consecutive(void **state)
{
    struct health_sm sm;
    int i;

    (void)state;
    health_sm_init(&sm);
    /* Alternating results never reach fall = 2. */
    for (i = 0; i < 20; i++)
        assert_int_equal(health_sm_feed(&sm, i & 1, 2, 2), HEALTH_SAME);
    assert_true(sm.up);
    assert_int_equal(health_sm_feed(&sm, 0, 3, 2), HEALTH_SAME);
    assert_int_equal(health_sm_feed(&sm, 0, 3, 2), HEALTH_WENT_DOWN);
    /* While down, a failure resets the success run: rise = 3. */
    assert_int_equal(health_sm_feed(&sm, 1, 3, 2), HEALTH_SAME);
    assert_int_equal(health_sm_feed(&sm, 1, 3, 2), HEALTH_SAME);
    assert_int_equal(health_sm_feed(&sm, 0, 3, 2), HEALTH_SAME);
    assert_int_equal(health_sm_feed(&sm, 1, 3, 2), HEALTH_SAME);
    assert_int_equal(health_sm_feed(&sm, 1, 3, 2), HEALTH_SAME);
    assert_int_equal(health_sm_feed(&sm, 1, 3, 2), HEALTH_WENT_UP);
}

static void
test_rise_fall_one(void **state)
{
    struct health_sm sm;

    (void)state;
    health_sm_init(&sm);
    assert_int_equal(health_sm_feed(&sm, 0, 1, 1), HEALTH_WENT_DOWN);
    assert_int_equal(health_sm_feed(&sm, 1, 1, 1), HEALTH_WENT_UP);
    /* 0 behaves as 1 rather than never changing. */
    assert_int_equal(health_sm_feed(&sm, 0, 0, 0), HEALTH_WENT_DOWN);
}

static void
test_spread(void **state)
{
    double prev = -1, d;
    size_t i;

    (void)state;
    assert_true(health_spread(0, 1, 5.0) == 0);
    assert_true(health_spread(3, 0, 5.0) == 0);
    /* 10 checkers over 5 s: 0, 0.5, 1.0 ... 4.5, all inside the interval
     * and evenly apart. */
    for (i = 0; i < 10; i++) {
        d = health_spread(i, 10, 5.0);
        assert_true(d >= 0 && d < 5.0);
        if (i > 0)
            assert_true(d - prev > 0.499 && d - prev < 0.501);
        prev = d;
    }
}

static void
test_http_status(void **state)
{
    (void)state;
    assert_int_equal(health_http_status("HTTP/1.1 200 OK\r\n", 17), 200);
    assert_int_equal(health_http_status("HTTP/1.0 503 Busy\r\n", 19), 503);
    assert_int_equal(health_http_status("HTTP/1.1 204\r\n", 14), 204);
    /* Not enough bytes yet. */
    assert_int_equal(health_http_status("HTTP/1.1 20", 11), 0);
    assert_int_equal(health_http_status("HT", 2), 0);
    assert_int_equal(health_http_status("", 0), 0);
    /* Not HTTP. */
    assert_int_equal(health_http_status("SSH-2.0-OpenSSH\r\n", 17), -1);
    assert_int_equal(health_http_status("HTTP/1.1 2x0 OK\r\n", 17), -1);
    assert_int_equal(health_http_status("HTTP/1.1 999 OK\r\n", 17), -1);
    assert_int_equal(health_http_status("HTTP/1.1 2000 OK\r\n", 18), -1);
    assert_int_equal(health_http_status("abcdefghijklmnop", 16), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fall_then_rise),
        cmocka_unit_test(test_runs_must_be_consecutive),
        cmocka_unit_test(test_rise_fall_one),
        cmocka_unit_test(test_spread),
        cmocka_unit_test(test_http_status),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
