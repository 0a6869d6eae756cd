/* Skip sets (what one build skipped, de-duplicated) and the per-reason
 * log limiter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "skip.h"

static void
test_text_tables(void **state)
{
    int i;

    (void)state;
    for (i = 0; i < SKIP_KIND__COUNT; i++)
        assert_non_null(skip_kind_text[i]);
    for (i = 0; i < SKIP__COUNT; i++) {
        const char *t = skip_reason_text[i];
        assert_non_null(t);
        /* snake_case label values */
        for (; *t; t++)
            assert_true((*t >= 'a' && *t <= 'z') || *t == '_');
    }
    assert_string_equal(skip_kind_text[SKIP_KIND_ENDPOINTSLICE],
                        "EndpointSlice");
    assert_string_equal(skip_reason_text[SKIP_BAD_PORT], "bad_port");
    assert_true(skip_quiet(SKIP_HEADLESS));
    assert_true(skip_quiet(SKIP_EXTERNAL_NAME));
    assert_false(skip_quiet(SKIP_BAD_PORT));
    assert_false(skip_quiet(SKIP_UNSUPPORTED_PROTOCOL));
}

struct seen {
    int n;
    char last[256];
};

static void
on_new(void *arg, const struct skip_note *n)
{
    struct seen *s = arg;

    s->n++;
    snprintf(s->last, sizeof(s->last), "%s %s %s %s", skip_kind_text[n->kind],
             n->obj, skip_reason_text[n->reason], n->what);
}

static void
test_set_dedup_and_diff(void **state)
{
    struct skip_set *a = skip_set_new(), *b = skip_set_new();
    struct skip_note n = {SKIP_KIND_SERVICE, SKIP_BAD_PORT, "shop/web",
                          "port \"http\""};
    struct skip_note m = {SKIP_KIND_ENDPOINTSLICE, SKIP_BAD_ADDRESS,
                          "shop/web-1", "endpoints[0]"};
    /* A field cut inside a UTF-8 sequence is still a key. */
    struct skip_note cut = {SKIP_KIND_SERVICE, SKIP_BAD_PORT, "shop/web",
                            "port \"\xc3\""};
    struct seen s = {0};

    (void)state;
    assert_int_equal(skip_set_add(a, &n), 1);
    assert_int_equal(skip_set_add(a, &n), 0);
    assert_int_equal(skip_set_add(a, &m), 1);
    assert_int_equal(skip_set_add(a, &cut), 1);
    assert_int_equal(skip_set_size(a), 3);
    assert_int_equal(skip_set_count(a, SKIP_KIND_SERVICE, SKIP_BAD_PORT), 2);
    assert_int_equal(
        skip_set_count(a, SKIP_KIND_ENDPOINTSLICE, SKIP_BAD_ADDRESS), 1);
    assert_int_equal(skip_set_count(a, SKIP_KIND_NODE, SKIP_BAD_PORT), 0);

    /* Against nothing: everything is new. */
    assert_int_equal(skip_set_each_new(a, NULL, on_new, &s), 3);
    /* The next build skips n again and something else: only that. */
    assert_int_equal(skip_set_add(b, &n), 1);
    n.reason = SKIP_CONFLICT; /* same object and field, other reason */
    assert_int_equal(skip_set_add(b, &n), 1);
    s.n = 0;
    assert_int_equal(skip_set_each_new(b, a, on_new, &s), 1);
    assert_string_equal(s.last, "Service shop/web conflict port \"http\"");
    skip_set_free(a);
    skip_set_free(b);
    skip_set_free(NULL);
}

static void
test_log_limiter(void **state)
{
    struct skip_log l;
    uint64_t held = 99;
    int i, passed = 0;

    (void)state;
    memset(&l, 0, sizeof(l));
    /* A storm: SKIP_LOG_BURST lines per reason and window, no more. */
    for (i = 0; i < 1000; i++)
        passed += skip_log_pass(&l, SKIP_MALFORMED, 100.0 + i * 0.001, &held);
    assert_int_equal(passed, SKIP_LOG_BURST);
    /* Another reason has its own budget. */
    assert_int_equal(skip_log_pass(&l, SKIP_BAD_PORT, 101.0, &held), 1);
    assert_int_equal(held, 0);
    /* A new window: the first line learns how many were held back. */
    assert_int_equal(
        skip_log_pass(&l, SKIP_MALFORMED, 100.0 + SKIP_LOG_WINDOW, &held), 1);
    assert_int_equal(held, 1000 - SKIP_LOG_BURST);
    assert_int_equal(
        skip_log_pass(&l, SKIP_MALFORMED, 100.5 + SKIP_LOG_WINDOW, &held), 1);
    assert_int_equal(held, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_tables),
        cmocka_unit_test(test_set_dedup_and_diff),
        cmocka_unit_test(test_log_limiter),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
