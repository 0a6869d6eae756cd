/*
 * test_ctrace.c - the change records of "ferry explain --trace"
 * (watcher/ctrace.c): each stage fills the records that reached it, in
 * order; a Service's records are found newest first; the ring keeps a
 * fixed number, whatever comes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ctrace.h"

static int
reset(void **state)
{
    (void)state;
    ctrace_reset();
    return 0;
}

static void
test_stages(void **state)
{
    const struct ctrace_rec *r[CTRACE_PER_SVC];

    (void)state;
    ctrace_received(CTRACE_SERVICE, 0, "default", "web", "web", 0, 10.0);
    ctrace_received(CTRACE_SLICE, 1, "default", "web", "web-abc", 9.5, 10.1);
    ctrace_received(CTRACE_SLICE, 1, "default", "db", "db-1", 0, 10.2);
    ctrace_built(7, 10.3);
    ctrace_posted(7, 12, 10.4, 1, 1);
    assert_int_equal(ctrace_find("default", "web", r, CTRACE_PER_SVC), 2);
    /* Newest first. */
    assert_string_equal(r[0]->obj, "web-abc");
    assert_int_equal(r[0]->kind, CTRACE_SLICE);
    assert_int_equal(r[0]->modified, 1);
    assert_true(r[0]->trigger == 9.5 && r[0]->received == 10.1);
    assert_true(r[0]->built == 10.3 && r[0]->tgen == 7);
    assert_true(r[0]->posted == 10.4 && r[0]->gen == 12);
    assert_int_equal(r[0]->kernel, CTRACE_KERNEL_PENDING);
    assert_string_equal(r[1]->obj, "web");
    assert_true(r[1]->gen == 12);
    /* A failed transaction leaves them waiting; the next one ends it. */
    ctrace_received(CTRACE_SLICE, 1, "default", "web", "web-abc", 0, 11.0);
    ctrace_built(0, 11.1); /* found the table in force unchanged */
    ctrace_committed(11.5);
    assert_int_equal(ctrace_find("default", "web", r, CTRACE_PER_SVC), 3);
    assert_int_equal(r[0]->unchanged, 1);
    assert_true(r[0]->posted == 0 && r[0]->kernel == CTRACE_KERNEL_NONE);
    assert_int_equal(r[1]->kernel, CTRACE_KERNEL_DONE);
    assert_true(r[1]->committed == 11.5);
    assert_int_equal(ctrace_find("default", "db", r, CTRACE_PER_SVC), 1);
    assert_true(r[0]->committed == 11.5);
    assert_int_equal(ctrace_find("other", "web", r, CTRACE_PER_SVC), 0);
}

/* A table never posted (the merge failed) is part of the next one. */
static void
test_posted_later(void **state)
{
    const struct ctrace_rec *r[2];

    (void)state;
    ctrace_received(CTRACE_SLICE, 1, "ns", "a", "a-1", 0, 1.0);
    ctrace_built(3, 1.1);
    ctrace_received(CTRACE_SLICE, 1, "ns", "a", "a-2", 0, 2.0);
    ctrace_built(4, 2.1);
    ctrace_posted(4, 9, 2.2, 0, 0);
    assert_int_equal(ctrace_find("ns", "a", r, 2), 2);
    assert_true(r[0]->gen == 9 && r[1]->gen == 9);
    assert_int_equal(r[1]->tgen, 3);
    assert_int_equal(r[0]->apply_failed, 1);
    assert_int_equal(r[0]->kernel, CTRACE_KERNEL_NONE);
    /* Posting the same table again (a reload) changes nothing. */
    ctrace_posted(4, 10, 3.0, 1, 0);
    assert_true(r[0]->gen == 9 && r[0]->posted == 2.2);
}

/* The ring holds CTRACE_RING records, whatever the cluster sends; long
 * names are cut. */
static void
test_bounded(void **state)
{
    const struct ctrace_rec *r[CTRACE_PER_SVC];
    char name[32], longer[300];
    size_t i;

    (void)state;
    assert_int_equal(CTRACE_RING, 2048);   /* README: ferry explain */
    assert_int_equal(CTRACE_PER_SVC, 16);
    for (i = 0; i < 3 * CTRACE_RING; i++) {
        snprintf(name, sizeof(name), "s%zu", i % 100);
        ctrace_received(CTRACE_SERVICE, 1, "ns", name, name, 0, (double)i);
    }
    assert_int_equal(ctrace_find("ns", "s7", r, CTRACE_PER_SVC),
                     CTRACE_PER_SVC);
    assert_true(r[0]->seq > r[1]->seq);
    assert_true(r[CTRACE_PER_SVC - 1]->seq > 2 * CTRACE_RING);
    memset(longer, 'x', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    ctrace_received(CTRACE_SLICE, 1, "ns", "s7", longer, 0, 1.0);
    assert_int_equal(ctrace_find("ns", "s7", r, 1), 1);
    assert_int_equal(strlen(r[0]->obj), CTRACE_NAME - 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_stages, reset),
        cmocka_unit_test_setup(test_posted_later, reset),
        cmocka_unit_test_setup(test_bounded, reset),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
