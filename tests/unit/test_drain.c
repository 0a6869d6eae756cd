/*
 * The deadlines drain.c gives backends taken away (README "Removing a
 * backend"): left out of the next table, their service removed, drained
 * through the admin server; given back; no limit; and every object freed
 * once the last reference goes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "drain.h"
#include "stats.h"
#include "svc-t.h"
#include "table.h"

#define TMO_MS 1000

/* A runtime service <name> with the backends 127.0.0.1:<ports>
 * (0-ended), and the same as a one-service table in <t> (NULL: none). */
static struct svc *
make(const char *name, const int *ports, uint32_t tmo_ms, struct table **t)
{
    struct tbl_backend bes[8];
    char names[8][32];
    struct tbl_service ts;
    struct saddr fe;
    const char *why;
    struct err e;
    int i;

    memset(&ts, 0, sizeof(ts));
    memset(bes, 0, sizeof(bes));
    ts.name = name;
    for (i = 0; ports[i] != 0; i++) {
        char a[32];
        snprintf(a, sizeof(a), "127.0.0.1:%d", ports[i]);
        assert_int_equal(parse_hostport(a, &bes[i].addr, 0, &why), 0);
        snprintf(names[i], sizeof(names[i]), "%s", a);
        bes[i].name = names[i];
        bes[i].weight = 1;
    }
    ts.backends = bes;
    ts.nbackends = (size_t)i;
    ts.drain_timeout_ms = tmo_ms;
    assert_int_equal(parse_hostport("127.0.0.1:80", &fe, 0, &why), 0);
    ts.frontends = &fe;
    ts.nfrontends = 1;
    if (t != NULL) {
        *t = table_new();
        assert_non_null(*t);
        assert_int_equal(table_add_service(*t, &ts, &e), 0);
        table_freeze(*t, 1);
    }
    return svc_new(&ts);
}

static struct table *
empty_table(void)
{
    struct table *t = table_new();

    assert_non_null(t);
    table_freeze(t, 2);
    return t;
}

/* A vector of the <n> services of <v> (new references). */
static struct svcv *
vec(struct svc *const *v, size_t n)
{
    struct svcv *r = svcv_new(n);
    size_t i;

    assert_non_null(r);
    for (i = 0; i < n; i++)
        assert_int_equal(svcv_set(r, i, svc_ref(v[i])), 0);
    return r;
}

/* drain_swap() from the <nold> services of <oldv> to the <nnew> of
 * <newv>, serving <t>. */
static void
swap(struct svc *const *oldv, size_t nold, struct svc *const *newv,
     size_t nnew, const struct table *t)
{
    struct svcv *o = vec(oldv, nold), *n = vec(newv, nnew);

    drain_swap(o, n, t);
    svcv_unref(o);
    svcv_unref(n);
}

static double
deadline(const struct svc *s, size_t i)
{
    return svc_be_deadline(s, i);
}

/* A deadline <tmo_ms> after some moment within [<t0>, now]. */
static void
assert_due(const struct svc *s, size_t i, double t0, uint32_t tmo_ms)
{
    double dl = deadline(s, i);

    assert_true(dl >= t0 + tmo_ms / 1e3);
    assert_true(dl <= drain_now() + tmo_ms / 1e3);
}

static void
test_left_out_then_given_back(void **state)
{
    static const int both[] = {9301, 9302, 0}, one[] = {9301, 0};
    struct table *t1, *t2, *t3;
    struct svc *s1 = make("web", both, TMO_MS, &t1);
    struct svc *s2 = make("web", one, TMO_MS, &t2);
    struct svc *s3 = make("web", both, TMO_MS, &t3);
    double t0 = drain_now();

    (void)state;
    /* 9302 left out: only its entry gets a deadline, in the old svc. */
    swap(&s1, 1, &s2, 1, t2);
    drain_refresh();
    assert_true(deadline(s1, 0) == 0);
    assert_due(s1, 1, t0, TMO_MS);
    assert_true(deadline(s2, 0) == 0);
    /* Given back: no deadline any more. */
    swap(&s2, 1, &s3, 1, t3);
    drain_refresh();
    assert_true(deadline(s1, 1) == 0);
    assert_true(deadline(s2, 0) == 0);
    assert_ptr_equal(s1->succ, s3);
    assert_ptr_equal(s2->succ, s3);
    /* The retired ones go with their last reference; so does what they
     * held. */
    svc_unref(s1);
    svc_unref(s2);
    svc_unref(s3);
    table_unref(t1);
    table_unref(t2);
    table_unref(t3);
    assert_int_equal(backend_count(), 0);
    assert_int_equal(svc_stats_count(), 0);
}

static void
test_service_removed(void **state)
{
    static const int ports[] = {9311, 9312, 0};
    struct svc *bounded = make("a", ports, TMO_MS, NULL);
    struct svc *unbounded = make("b", ports, 0, NULL);
    struct svc *old[2] = {bounded, unbounded};
    struct table *none = empty_table();
    double t0 = drain_now();

    (void)state;
    swap(old, 2, NULL, 0, none);
    drain_refresh();
    assert_null(bounded->succ);
    assert_due(bounded, 0, t0, TMO_MS);
    assert_due(bounded, 1, t0, TMO_MS);
    /* drain_timeout 0: no limit. */
    assert_true(deadline(unbounded, 0) == 0);
    assert_true(deadline(unbounded, 1) == 0);
    svc_unref(bounded);
    svc_unref(unbounded);
    table_unref(none);
    assert_int_equal(backend_count(), 0);
}

/* A table made from the one before with one service changed: only that
 * position is looked at, and its old service is retired and follows the
 * new one; the services both vectors share stay as they are. */
static void
test_swap_some(void **state)
{
    static const int ports[] = {9331, 9332, 0}, fewer[] = {9331, 0};
    struct table *t1, *t2;
    struct svc *a = make("web", ports, TMO_MS, &t1);
    struct svc *b = make("web", fewer, TMO_MS, &t2);
    struct svcv *o = vec(&a, 1), *n = svcv_derive(o);
    const size_t pos = 0;
    double t0 = drain_now();

    (void)state;
    assert_int_equal(svcv_set(n, 0, svc_ref(b)), 0);
    assert_ptr_equal(svcv_get(o, 0), a); /* the chunk was copied */
    drain_swap_some(o, n, t2, &pos, 0); /* no position: nothing retired */
    assert_false(a->retired);
    drain_swap_some(o, n, t2, &pos, 1);
    drain_refresh();
    assert_true(a->retired);
    assert_ptr_equal(a->succ, b);
    assert_true(deadline(a, 0) == 0);
    assert_due(a, 1, t0, TMO_MS);
    svcv_unref(o);
    svcv_unref(n);
    svc_unref(a);
    svc_unref(b);
    table_unref(t1);
    table_unref(t2);
    assert_int_equal(backend_count(), 0);
}

static void
test_admin_drain(void **state)
{
    static const int ports[] = {9321, 9322, 0}, moved[] = {9322, 9321, 0};
    struct table *t1, *t2, *t3;
    struct svc *s1 = make("web", ports, TMO_MS, &t1);
    struct svc *s2 = make("web", moved, TMO_MS, &t2);
    struct svc *s3 = make("web", ports, TMO_MS, &t3);
    double t0 = drain_now(), dl;

    (void)state;
    svc_set_drained(s1, 1, 1);
    drain_refresh();
    assert_due(s1, 1, t0, TMO_MS);
    dl = deadline(s1, 1);
    /* Drained again (the overrides are set again after every table):
     * the deadline stays. */
    svc_set_drained(s1, 1, 1);
    assert_true(deadline(s1, 1) == dl);
    /* A new svc for the same service (the backends in another order)
     * keeps when it was drained; the old one follows it. */
    swap(&s1, 1, &s2, 1, t2);
    svc_set_drained(s2, 0, 1); /* the admin's drains, set again */
    drain_refresh();
    assert_true(deadline(s2, 0) == dl);
    assert_true(deadline(s1, 1) == dl);
    assert_true(deadline(s1, 0) == 0);
    /* Enabled again: no deadline, in either. */
    svc_set_drained(s2, 0, 0);
    drain_refresh();
    assert_true(deadline(s2, 0) == 0);
    assert_true(deadline(s1, 1) == 0);
    /* Drained without a drain_timeout: no deadline. */
    swap(&s2, 1, &s3, 1, t3);
    s3->spec.drain_timeout_ms = 0;
    svc_set_drained(s3, 0, 1);
    drain_refresh();
    assert_true(deadline(s3, 0) == 0);
    svc_unref(s1);
    svc_unref(s2);
    svc_unref(s3);
    table_unref(t1);
    table_unref(t2);
    table_unref(t3);
    assert_int_equal(backend_count(), 0);
    assert_int_equal(svc_stats_count(), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_left_out_then_given_back),
        cmocka_unit_test(test_service_removed),
        cmocka_unit_test(test_admin_drain),
        cmocka_unit_test(test_swap_some),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
