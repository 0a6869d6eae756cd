/* Unit tests for ClientIP session affinity (proxy/dataplane/affinity.c and its use
 * in proxy/dataplane/svc.c: svc_pick_client, svc_inherit). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "affinity.h"
#include "backend.h"
#include "svc-t.h"

static struct saddr
ip(const char *s)
{
    struct saddr a;
    const char *why;

    assert_int_equal(parse_ip(s, 40000, &a, &why), 0);
    return a;
}

static struct saddr
ip4(unsigned n)
{
    char s[32];

    snprintf(s, sizeof(s), "198.18.%u.%u", (n >> 8) & 0xff, n & 0xff);
    return ip(s);
}

static void
test_pin_and_expire(void **state)
{
    struct affinity *a = affinity_new(10.0);
    struct saddr c = ip("198.18.0.7"), d = ip("198.18.0.8");

    (void)state;
    assert_non_null(a);
    assert_int_equal(affinity_get(a, &c, 0), -1);
    assert_int_equal(affinity_set(a, &c, 3, 100.0), 0);
    assert_int_equal(affinity_get(a, &c, 100.0), 3);
    assert_int_equal(affinity_get(a, &c, 110.0), 3); /* within timeout */
    assert_int_equal(affinity_get(a, &d, 100.0), -1);
    /* The client's port does not matter. */
    c.u.in.sin_port = htons(1234);
    assert_int_equal(affinity_get(a, &c, 105.0), 3);
    /* Inactivity beyond the timeout ends the pin... */
    assert_int_equal(affinity_get(a, &c, 110.5), -1);
    assert_int_equal(affinity_count(a, 110.5), 0);
    /* ...and a refresh restarts it; a move re-pins. */
    assert_int_equal(affinity_set(a, &c, 1, 108.0), 0);
    assert_int_equal(affinity_get(a, &c, 117.0), 1);
    assert_int_equal(affinity_set(a, &c, 2, 117.0), 0);
    assert_int_equal(affinity_get(a, &c, 126.0), 2);
    assert_int_equal(affinity_count(a, 126.0), 1);
    affinity_free(a);
    affinity_free(NULL);
}

static void
test_ipv6_and_ipv4_distinct(void **state)
{
    struct affinity *a = affinity_new(60.0);
    struct saddr v4 = ip("198.18.0.1"), v6 = ip("2001:2::1");
    struct saddr mapped = ip("::ffff:198.18.0.1");

    (void)state;
    assert_int_equal(affinity_set(a, &v4, 0, 1.0), 0);
    assert_int_equal(affinity_set(a, &v6, 1, 1.0), 0);
    assert_int_equal(affinity_get(a, &v4, 2.0), 0);
    assert_int_equal(affinity_get(a, &v6, 2.0), 1);
    /* A v4-mapped client is the same client as its IPv4 form. */
    assert_int_equal(affinity_get(a, &mapped, 2.0), 0);
    affinity_free(a);
}

static void
test_grows_then_caps(void **state)
{
    struct affinity *a = affinity_new(1000.0);
    unsigned i, n = AFFINITY_MAX_SLOTS * 2, kept = 0;

    (void)state;
    assert_int_equal(affinity_slots(a), AFFINITY_MIN_SLOTS);
    for (i = 0; i < n; i++) {
        struct saddr c = ip4(i);
        c.u.in.sin_addr.s_addr ^= htonl((i >> 16) << 20);
        assert_int_equal(affinity_set(a, &c, i & 7, (double)i * 1e-3), 0);
    }
    /* Bounded: never beyond the cap, and full up to a good fraction. */
    assert_int_equal(affinity_slots(a), AFFINITY_MAX_SLOTS);
    assert_true(affinity_count(a, n * 1e-3) <= AFFINITY_MAX_SLOTS);
    assert_true(affinity_count(a, n * 1e-3) > AFFINITY_MAX_SLOTS / 2);
    /* The most recent clients are the ones kept (LRU within a window). */
    for (i = n - 100; i < n; i++) {
        struct saddr c = ip4(i);
        c.u.in.sin_addr.s_addr ^= htonl((i >> 16) << 20);
        kept += affinity_get(a, &c, n * 1e-3) == (int)(i & 7);
    }
    assert_int_equal(kept, 100);
    affinity_free(a);
}

static void
test_expired_slots_reused_without_growth(void **state)
{
    struct affinity *a = affinity_new(1.0);
    unsigned round, i;

    (void)state;
    /* 200 clients at a time, each batch after the last one expired:
     * 10,000 clients in all, yet the table stays near the size 200 live
     * pins need (a window of 16 can fill by chance at 200/256 and, rarely,
     * at 200/512, so one or two doublings are allowed; without reuse of
     * expired slots it would need 16,384). */
    for (round = 0; round < 50; round++)
        for (i = 0; i < 200; i++) {
            struct saddr c = ip4(round * 200 + i);
            assert_int_equal(affinity_set(a, &c, 0, round * 2.0), 0);
        }
    assert_true(affinity_slots(a) <= 4 * AFFINITY_MIN_SLOTS);
    assert_int_equal(affinity_count(a, 98.0), 200);
    affinity_free(a);
}

static struct tbl_backend bes[8];
static char be_names[8][24];

static void
fill_backends(size_t first, size_t n)
{
    const char *why;
    size_t i;

    for (i = 0; i < n; i++) {
        char a[32];
        snprintf(a, sizeof(a), "127.0.0.1:%zu", 9001 + first + i);
        assert_int_equal(parse_hostport(a, &bes[i].addr, 0, &why), 0);
        snprintf(be_names[i], sizeof(be_names[i]), "b%zu", first + i);
        bes[i].name = be_names[i];
        bes[i].weight = 1;
        bes[i].flags = TBL_BE_READY | TBL_BE_SERVING;
    }
}

static struct svc *
make_svc(size_t first, size_t n, uint32_t affinity_ms)
{
    struct tbl_service ts;

    memset(&ts, 0, sizeof(ts));
    ts.name = "web";
    ts.balance = TBL_BAL_ROUNDROBIN;
    ts.retries = 3;
    ts.affinity_timeout_ms = affinity_ms;
    fill_backends(first, n);
    ts.backends = bes;
    ts.nbackends = n;
    return svc_new(&ts);
}

static void
test_svc_pins_client(void **state)
{
    struct svc *s = make_svc(0, 3, 10800 * 1000);
    struct svc_tried none = {0};
    struct saddr a = ip("198.18.1.1"), b = ip("198.18.1.2");
    int pa, pb, i;

    (void)state;
    assert_non_null(s->aff);
    pa = svc_pick_client(s, &a, &none, 1.0);
    pb = svc_pick_client(s, &b, &none, 1.0);
    assert_true(pa >= 0 && pb >= 0 && pa != pb);
    for (i = 0; i < 20; i++) {
        assert_int_equal(svc_pick_client(s, &a, &none, 2.0 + i), pa);
        assert_int_equal(svc_pick_client(s, &b, &none, 2.0 + i), pb);
    }
    /* The balancer is not consulted for pinned clients: a new client
     * still gets the next backend in the rotation. */
    svc_unref(s);
    assert_int_equal(backend_count(), 0);
}

static void
test_svc_without_affinity_rotates(void **state)
{
    struct svc *s = make_svc(0, 3, 0);
    struct svc_tried none = {0};
    struct saddr a = ip("198.18.1.1");
    int i;

    (void)state;
    assert_null(s->aff);
    for (i = 0; i < 9; i++)
        assert_int_equal(svc_pick_client(s, &a, &none, 1.0), i % 3);
    svc_unref(s);
}

static void
test_svc_skips_ineligible_pin(void **state)
{
    struct svc *s = make_svc(0, 3, 60 * 1000);
    struct svc_tried none = {0}, tried = {0};
    struct saddr a = ip("198.18.1.1");
    int p, q;

    (void)state;
    p = svc_pick_client(s, &a, &none, 1.0);
    /* Tried already (a retry after a failed connect): another backend,
     * and the client moves there. */
    svc_tried_set(&tried, (size_t)p);
    q = svc_pick_client(s, &a, &tried, 1.0);
    assert_true(q >= 0 && q != p);
    assert_int_equal(svc_pick_client(s, &a, &none, 2.0), q);
    /* Drained. */
    assert_int_equal(svc_set_drained(s, (size_t)q, 1), 0);
    p = svc_pick_client(s, &a, &none, 3.0);
    assert_true(p != q);
    assert_int_equal(svc_set_drained(s, (size_t)q, 0), 0);
    assert_int_equal(svc_pick_client(s, &a, &none, 4.0), p);
    /* Down by active checks. */
    atomic_store(&s->be[p].b->health, BACKEND_HEALTH_DOWN);
    q = svc_pick_client(s, &a, &none, 5.0);
    assert_true(q != p);
    atomic_store(&s->be[p].b->health, BACKEND_HEALTH_UNCHECKED);
    /* In passive back-off. */
    backend_on_fail(s->be[q].b, 6.0);
    p = svc_pick_client(s, &a, &none, 6.0);
    assert_true(p != q);
    backend_on_success(s->be[q].b);
    /* Expired: the balancer decides again. */
    assert_int_equal(svc_pick_client(s, &a, &none, 60.0), p);
    q = svc_pick_client(s, &a, &none, 200.0);
    assert_true(q >= 0);
    svc_unref(s);
    assert_int_equal(backend_count(), 0);
}

static void
test_svc_inherit_across_table_change(void **state)
{
    /* b0 b1 b2, then the table drops b0 and adds b3: the pins to b1 and
     * b2 follow their backends to their new indices; the pin to b0 goes. */
    struct svc *old = make_svc(0, 3, 60 * 1000), *nw;
    struct svc_tried none = {0};
    struct saddr c[3] = {ip("198.18.1.1"), ip("198.18.1.2"), ip("198.18.1.3")};
    int pin[3], i;

    (void)state;
    for (i = 0; i < 3; i++)
        pin[i] = svc_pick_client(old, &c[i], &none, 1.0);
    nw = make_svc(1, 3, 60 * 1000); /* b1 b2 b3 */
    svc_inherit(nw, old, 2.0);
    assert_int_equal(affinity_count(nw->aff, 2.0), 2);
    for (i = 0; i < 3; i++) {
        int got = affinity_get(nw->aff, &c[i], 2.0);
        if (pin[i] == 0)
            assert_int_equal(got, -1);
        else
            assert_int_equal(got, pin[i] - 1);
    }
    /* Inheriting keeps the pins' age: they expire on the old schedule. */
    assert_int_equal(affinity_count(nw->aff, 61.5), 0);
    svc_unref(old);
    svc_unref(nw);
    assert_int_equal(backend_count(), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pin_and_expire),
        cmocka_unit_test(test_ipv6_and_ipv4_distinct),
        cmocka_unit_test(test_grows_then_caps),
        cmocka_unit_test(test_expired_slots_reused_without_growth),
        cmocka_unit_test(test_svc_pins_client),
        cmocka_unit_test(test_svc_without_affinity_rotates),
        cmocka_unit_test(test_svc_skips_ineligible_pin),
        cmocka_unit_test(test_svc_inherit_across_table_change),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
