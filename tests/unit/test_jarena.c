/* Unit tests for the region jansson allocates from while a list page is
 * decoded (watcher/jarena.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "jarena.h"

static const char doc[] =
    "{\"items\":[{\"a\":\"a string long enough to be its own allocation\"},"
    "{\"b\":[1,2,3,{\"c\":null}]},{\"d\":1.5}]}";

/* Inside a window jansson's nodes come from the region; freeing them
 * there gives nothing back until the reset, which takes all. */
static void
test_window_allocates_from_region(void **state)
{
    json_t *v;

    (void)state;
    jarena_reset(1);
    assert_int_equal(jarena_begin(), 0);
    assert_int_equal(jarena_begin(), -1); /* not nested */
    v = json_loads(doc, 0, NULL);
    assert_non_null(v);
    assert_true(jarena_used() > sizeof(doc));
    assert_string_equal(
        json_string_value(json_object_get(
            json_array_get(json_object_get(v, "items"), 0), "a")),
        "a string long enough to be its own allocation");
    json_decref(v);
    jarena_end();
    assert_true(jarena_used() > 0); /* frees inside did nothing */
    jarena_reset(0);
    assert_int_equal(jarena_used(), 0);
}

/* A value made before the window may be freed inside it (it was the
 * heap's), and one made after the window is the heap's again. Under
 * ASan a wrong free of either would be reported. */
static void
test_heap_values_stay_heap(void **state)
{
    json_t *before = json_loads(doc, 0, NULL), *after, *inside;

    (void)state;
    assert_non_null(before);
    jarena_reset(1);
    assert_int_equal(jarena_begin(), 0);
    inside = json_pack("{s:s}", "k", "v");
    json_decref(before);
    json_decref(inside);
    jarena_end();
    jarena_reset(1);
    after = json_loads(doc, 0, NULL);
    assert_non_null(after);
    assert_int_equal(jarena_used(), 0);
    json_decref(after);
    jarena_end(); /* no window: nothing to end */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_allocates_from_region),
        cmocka_unit_test(test_heap_values_stay_heap),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
