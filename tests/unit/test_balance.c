/* Unit tests for the balancers and passive health (proxy/dataplane/balance.c,
 * proxy/dataplane/svc.c, proxy/dataplane/backend.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend.h"
#include "balance.h"
#include "svc-t.h"

#define NBES 200
static struct tbl_backend bes[NBES];
static char be_names[NBES][24];

/* Length of the round-robin order <s>'s workers share; 0 when each
 * worker keeps its own. */
static uint32_t
shared_period(const struct svc *s)
{
    return s->bal->shared_period(s->bal_state);
}

/* A service "t" of <n> backends on 127.0.0.1:9001... (in bes). */
static void
make_ts(struct tbl_service *ts, enum tbl_balance algo, const uint32_t *weights,
        size_t n)
{
    const char *why;
    size_t i;

    assert_true(n <= NBES);
    memset(ts, 0, sizeof(*ts));
    ts->name = "t";
    ts->balance = algo;
    ts->retries = 3;
    for (i = 0; i < n; i++) {
        char a[32];
        snprintf(a, sizeof(a), "127.0.0.1:%zu", 9001 + i);
        assert_int_equal(parse_hostport(a, &bes[i].addr, 0, &why), 0);
        snprintf(be_names[i], sizeof(be_names[i]), "b%zu", i);
        bes[i].name = be_names[i];
        bes[i].weight = weights[i];
        bes[i].flags = TBL_BE_READY | TBL_BE_SERVING;
    }
    ts->backends = bes;
    ts->nbackends = n;
}

static struct svc *
make_svc(enum tbl_balance algo, const uint32_t *weights, size_t n)
{
    struct tbl_service ts;

    make_ts(&ts, algo, weights, n);
    return svc_new(&ts);
}

static void
test_rr_equal_weights_exact_order(void **state)
{
    static const uint32_t w[] = {1, 1, 1};
    struct svc *s = make_svc(TBL_BAL_ROUNDROBIN, w, 3);
    struct svc_tried none = {0};
    int i;

    (void)state;
    for (i = 0; i < 12; i++)
        assert_int_equal(svc_pick(s, &none, 0), i % 3);
    svc_unref(s);
    assert_int_equal(backend_count(), 0);
}

static void
test_rr_smooth_sequence(void **state)
{
    static const uint32_t w[] = {5, 1, 1};
    static const int want[] = {0, 0, 1, 0, 2, 0, 0};
    struct svc *s = make_svc(TBL_BAL_ROUNDROBIN, w, 3);
    struct svc_tried none = {0};
    int round, i;

    (void)state;
    for (round = 0; round < 3; round++)
        for (i = 0; i < 7; i++)
            assert_int_equal(svc_pick(s, &none, 0), want[i]);
    svc_unref(s);
}

static void
test_rr_weights_proportional_and_zero(void **state)
{
    static const uint32_t w[] = {1, 2, 3, 0};
    struct svc *s = make_svc(TBL_BAL_ROUNDROBIN, w, 4);
    struct svc_tried none = {0};
    int counts[4] = {0}, i;

    (void)state;
    for (i = 0; i < 600; i++)
        counts[svc_pick(s, &none, 0)]++;
    assert_int_equal(counts[0], 100);
    assert_int_equal(counts[1], 200);
    assert_int_equal(counts[2], 300);
    assert_int_equal(counts[3], 0);
    svc_unref(s);
}

static void
test_tried_backends_are_skipped(void **state)
{
    static const uint32_t w[] = {1, 1, 1};
    struct svc *s = make_svc(TBL_BAL_ROUNDROBIN, w, 3);
    struct svc_tried t = {0};

    (void)state;
    svc_tried_set(&t, 0);
    svc_tried_set(&t, 2);
    assert_int_equal(svc_pick(s, &t, 0), 1);
    assert_int_equal(svc_pick(s, &t, 0), 1);
    svc_tried_set(&t, 1);
    assert_int_equal(svc_pick(s, &t, 0), -1);
    svc_unref(s);
}

/* 200 backends: the tried set is exact, so backends whose indexes are 64
 * apart are told apart (a 64-bit mask folding indexes would take 69 for
 * tried once 5 was). */
static void
test_tried_exact_in_large_service(void **state)
{
    static uint32_t w[NBES];
    struct svc *s;
    struct svc_tried t = {0};
    int seen69 = 0, i, k;

    (void)state;
    for (i = 0; i < NBES; i++)
        w[i] = 1;
    s = make_svc(TBL_BAL_ROUNDROBIN, w, NBES);
    /* Backend 5 failed: every other backend still comes in turn. */
    assert_int_equal(svc_tried_set(&t, 5), 0);
    for (i = 0; i < 2 * NBES; i++) {
        k = svc_pick(s, &t, 0);
        assert_int_not_equal(k, 5);
        seen69 += k == 69;
    }
    assert_int_equal(seen69, 2);
    /* Only 5 and 69 open: the retry after 5 failed goes to 69. */
    for (i = 0; i < NBES; i++)
        svc_set_drained(s, (size_t)i, i != 5 && i != 69);
    assert_int_equal(svc_pick(s, &t, 0), 69);
    assert_int_equal(svc_tried_set(&t, 69), 0);
    assert_int_equal(svc_pick(s, &t, 0), -1);
    svc_unref(s);
}

/* The set holds what a connection may try (retries + 1 at the cap) and
 * refuses more; unset forgets one backend. */
static void
test_tried_capacity(void **state)
{
    struct svc_tried t = {0};
    size_t i;

    (void)state;
    for (i = 0; i < SVC_TRIED_MAX; i++) {
        assert_false(svc_tried_full(&t));
        assert_int_equal(svc_tried_set(&t, i * 64), 0);
    }
    assert_int_equal(svc_tried_set(&t, 0), 0); /* already there */
    assert_true(svc_tried_full(&t));
    assert_int_equal(svc_tried_set(&t, 1), -1);
    assert_false(svc_tried_has(&t, 1));
    for (i = 0; i < SVC_TRIED_MAX; i++)
        assert_true(svc_tried_has(&t, i * 64));
    svc_tried_unset(&t, 64);
    assert_false(svc_tried_has(&t, 64));
    assert_true(svc_tried_has(&t, 0));
    assert_true(svc_tried_has(&t, (SVC_TRIED_MAX - 1) * 64));
    assert_false(svc_tried_full(&t));
    assert_int_equal(svc_tried_set(&t, 1), 0);
    assert_true(svc_tried_has(&t, 1));
}

static void
test_passive_health_backoff(void **state)
{
    static const uint32_t w[] = {1, 1};
    struct svc *s = make_svc(TBL_BAL_ROUNDROBIN, w, 2);
    struct svc_tried none = {0};
    double until1, until2;
    int i;

    (void)state;
    backend_on_fail(s->be[0].b, 100.0);
    assert_true(backend_ejected(s->be[0].b, 100.1));
    for (i = 0; i < 5; i++)
        assert_int_equal(svc_pick(s, &none, 100.1), 1);
    until1 = backend_eject_until(s->be[0].b);
    /* A second failure doubles the back-off. */
    backend_on_fail(s->be[0].b, 100.0);
    until2 = backend_eject_until(s->be[0].b);
    assert_true(until2 - 100.0 > 1.9 * (until1 - 100.0));
    /* Back-off is capped. */
    for (i = 0; i < 40; i++)
        backend_on_fail(s->be[0].b, 100.0);
    assert_true(backend_eject_until(s->be[0].b) <= 130.0 + 1e-9);
    /* Everyone ejected: pick anyway rather than refuse. */
    backend_on_fail(s->be[1].b, 100.0);
    assert_true(svc_pick(s, &none, 100.1) >= 0);
    /* Success clears it. */
    backend_on_success(s->be[0].b);
    assert_false(backend_ejected(s->be[0].b, 100.1));
    svc_unref(s);
}

static void
test_leastconn_fewest_then_rotation(void **state)
{
    static const uint32_t w[] = {1, 1, 1};
    struct svc *s = make_svc(TBL_BAL_LEASTCONN, w, 3);
    struct svc_tried none = {0};
    int a, b, c;

    (void)state;
    a = svc_pick(s, &none, 0);
    atomic_fetch_add(&s->be[a].b->active, 1);
    b = svc_pick(s, &none, 0);
    atomic_fetch_add(&s->be[b].b->active, 1);
    c = svc_pick(s, &none, 0);
    atomic_fetch_add(&s->be[c].b->active, 1);
    assert_int_not_equal(a, b);
    assert_int_not_equal(b, c);
    assert_int_not_equal(a, c);
    /* Backend 1 loses its connection: it has the fewest now. */
    atomic_fetch_sub(&s->be[1].b->active, 1);
    assert_int_equal(svc_pick(s, &none, 0), 1);
    assert_int_equal(svc_pick(s, &none, 0), 1);
    svc_unref(s);
}

static void
test_leastconn_weighted(void **state)
{
    static const uint32_t w[] = {1, 3};
    struct svc *s = make_svc(TBL_BAL_LEASTCONN, w, 2);
    struct svc_tried none = {0};
    int counts[2] = {0}, i, k;

    (void)state;
    for (i = 0; i < 40; i++) {
        k = svc_pick(s, &none, 0);
        counts[k]++;
        atomic_fetch_add(&s->be[k].b->active, 1);
    }
    assert_int_equal(counts[0], 10);
    assert_int_equal(counts[1], 30);
    atomic_store(&s->be[0].b->active, 0);
    atomic_store(&s->be[1].b->active, 0);
    svc_unref(s);
}

static void
test_random_weighted(void **state)
{
    static const uint32_t w[] = {1, 0, 3};
    struct svc *s = make_svc(TBL_BAL_RANDOM, w, 3);
    struct svc_tried none = {0};
    int counts[3] = {0}, i;

    (void)state;
    for (i = 0; i < 4000; i++)
        counts[svc_pick(s, &none, 0)]++;
    assert_int_equal(counts[1], 0);
    /* Expected 1000 and 3000; far outside chance if the weights are
     * ignored (2000 each). */
    assert_in_range(counts[0], 800, 1200);
    assert_in_range(counts[2], 2800, 3200);
    svc_unref(s);
}

/* Power of two choices: the less loaded of two distinct picks. A backend
 * far more loaded than the rest loses every comparison, so it gets
 * nothing; the others share evenly. */
static void
test_p2c_avoids_the_loaded_and_spreads(void **state)
{
    static const uint32_t w[] = {1, 1, 1, 1};
    struct svc *s = make_svc(TBL_BAL_P2C, w, 4);
    struct svc_tried none = {0};
    int counts[4] = {0}, i;

    (void)state;
    atomic_store(&s->be[2].b->active, 50);
    for (i = 0; i < 4000; i++)
        counts[svc_pick(s, &none, 0)]++;
    assert_int_equal(counts[2], 0);
    /* The three others evenly: 1333 each expected. */
    for (i = 0; i < 4; i++)
        if (i != 2)
            assert_in_range(counts[i], 1100, 1570);
    atomic_store(&s->be[2].b->active, 0);
    svc_unref(s);
}

/* With connections that stay open, p2c keeps the load level (unlike
 * random), and follows the weights (active over weight). */
static void
test_p2c_balances_open_connections(void **state)
{
    static const uint32_t w[] = {1, 1, 2};
    struct svc *s = make_svc(TBL_BAL_P2C, w, 3);
    struct svc_tried none = {0};
    int i, k;

    (void)state;
    for (i = 0; i < 400; i++) {
        k = svc_pick(s, &none, 0);
        atomic_fetch_add(&s->be[k].b->active, 1);
    }
    /* Expected 100, 100, 200; p2c stays within a few of it, where
     * random would stray by about 9 (one standard deviation). */
    assert_in_range(atomic_load(&s->be[0].b->active), 96, 104);
    assert_in_range(atomic_load(&s->be[1].b->active), 96, 104);
    assert_in_range(atomic_load(&s->be[2].b->active), 192, 208);
    for (i = 0; i < 3; i++)
        atomic_store(&s->be[i].b->active, 0);
    svc_unref(s);
}

/* One candidate left (the others tried): found by the scan. None: -1. */
static void
test_p2c_few_candidates(void **state)
{
    static const uint32_t w[] = {1, 1, 1, 0};
    struct svc *s = make_svc(TBL_BAL_P2C, w, 4);
    struct svc_tried tried = {0};
    int i;

    (void)state;
    svc_tried_set(&tried, 0);
    svc_tried_set(&tried, 2);
    for (i = 0; i < 50; i++)
        assert_int_equal(svc_pick(s, &tried, 0), 1);
    svc_tried_set(&tried, 1);
    assert_int_equal(svc_pick(s, &tried, 0), -1);
    svc_unref(s);
}

/* Client <i> of a test population: 198.18.(i/250).(i%250+1). */
static struct saddr
client_n(int i)
{
    struct saddr a;
    char ip[32];
    const char *why;

    snprintf(ip, sizeof(ip), "198.18.%d.%d", (i / 250) % 256, i % 250 + 1);
    assert_int_equal(parse_ip(ip, 40000, &a, &why), 0);
    return a;
}

/* Maglev: a client keeps its backend; two services with the same
 * backends (two ferry instances) agree; the spread is even. */
static void
test_maglev_consistent_and_even(void **state)
{
    static const uint32_t w[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    struct svc *a = make_svc(TBL_BAL_MAGLEV, w, 10);
    struct svc *b = make_svc(TBL_BAL_MAGLEV, w, 10);
    struct svc_tried none = {0};
    int counts[10] = {0}, i;

    (void)state;
    for (i = 0; i < 20000; i++) {
        struct saddr c = client_n(i);
        int x = svc_pick_client(a, &c, &none, 0);
        assert_int_equal(svc_pick_client(a, &c, &none, 0), x);
        assert_int_equal(svc_pick_client(b, &c, &none, 0), x);
        counts[x]++;
    }
    /* 2000 each expected; Maglev's table keeps them within a few %. */
    for (i = 0; i < 10; i++)
        assert_in_range(counts[i], 1700, 2300);
    svc_unref(a);
    svc_unref(b);
}

/* One of N backends leaves: its clients move, and few of the others do
 * (the paper's bound: about 1/N, plus a little). */
static void
test_maglev_small_disruption(void **state)
{
    static const uint32_t w[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    struct tbl_service ts;
    struct svc *before, *after;
    struct svc_tried none = {0};
    int i, moved = 0, on_gone = 0, n = 20000;

    (void)state;
    before = make_svc(TBL_BAL_MAGLEV, w, 10);
    /* The same backends but the fourth (addresses 9001.. kept). */
    make_ts(&ts, TBL_BAL_MAGLEV, w, 10);
    memmove(&bes[3], &bes[4], 6 * sizeof(bes[0]));
    ts.nbackends = 9;
    after = svc_new(&ts);
    for (i = 0; i < n; i++) {
        struct saddr c = client_n(i);
        int x = svc_pick_client(before, &c, &none, 0);
        int y = svc_pick_client(after, &c, &none, 0);
        /* Index x of before is index x (x < 3) or x - 1 (x > 3) after. */
        if (x == 3) {
            on_gone++;
            continue;
        }
        if (y != (x < 3 ? x : x - 1))
            moved++;
    }
    assert_in_range(on_gone, 1700, 2300);
    /* In all, at most 1/N + 3 % of the clients move (a plain hash mod N
     * would move 90 %): those of the backend gone, and a few others. */
    assert_true(on_gone + moved <= n / 10 + n * 3 / 100);
    assert_true(moved <= n * 3 / 100);
    svc_unref(before);
    svc_unref(after);
}

/* Weights, a backend that may not take the connection, and no client. */
static void
test_maglev_weights_and_detours(void **state)
{
    static const uint32_t w[] = {3, 1, 0};
    struct svc *s = make_svc(TBL_BAL_MAGLEV, w, 3);
    struct svc_tried none = {0}, tried = {0};
    int counts[3] = {0}, i;

    (void)state;
    for (i = 0; i < 8000; i++) {
        struct saddr c = client_n(i);
        counts[svc_pick_client(s, &c, &none, 0)]++;
    }
    assert_int_equal(counts[2], 0);
    assert_in_range(counts[0], 5600, 6400);
    /* Backend 0 tried: every client goes to 1, the only other. */
    svc_tried_set(&tried, 0);
    for (i = 0; i < 100; i++) {
        struct saddr c = client_n(i);
        assert_int_equal(svc_pick_client(s, &c, &tried, 0), 1);
    }
    /* No client (a health probe's view): still a backend. */
    assert_true(svc_pick(s, &none, 0) >= 0);
    svc_unref(s);
}

static void
test_backend_state_shared_by_address(void **state)
{
    static const uint32_t w[] = {1, 1};
    struct svc *s1 = make_svc(TBL_BAL_ROUNDROBIN, w, 2);
    struct svc *s2 = make_svc(TBL_BAL_LEASTCONN, w, 2);

    (void)state;
    assert_ptr_equal(s1->be[0].b, s2->be[0].b);
    assert_int_equal(backend_count(), 2);
    assert_true(svc_matches(s1, &(struct tbl_service){
                                    .name = "t",
                                    .backends = bes,
                                    .nbackends = 2,
                                    .retries = 3,
                                }));
    svc_unref(s1);
    assert_int_equal(backend_count(), 2);
    svc_unref(s2);
    assert_int_equal(backend_count(), 0);
}

/* A svc matches the table service it was built from, and no longer once
 * any policy field or backend differs (the policy through the table's one
 * field list, tests/unit/test_table.c). */
static void
test_svc_matches(void **state)
{
    static const uint32_t w[] = {1, 2};
    struct tbl_backend other[2];
    struct tbl_service ts, t2;
    struct svc *s;

    (void)state;
    make_ts(&ts, TBL_BAL_LEASTCONN, w, 2);
    s = svc_new(&ts);
    assert_non_null(s);
    assert_true(svc_matches(s, &ts));
    assert_string_equal(svc_balance_name(s), "leastconn");
    assert_string_equal(svc_backend_name(s, 1), "b1");
    t2 = ts;
    t2.hc_node_port = 32100;
    assert_false(svc_matches(s, &t2));
    t2 = ts;
    t2.check.type = TBL_CHECK_TCP;
    assert_false(svc_matches(s, &t2));
    t2 = ts;
    t2.idle_timeout_ms = 1;
    assert_false(svc_matches(s, &t2));
    t2 = ts;
    t2.nbackends = 1;
    assert_false(svc_matches(s, &t2));
    memcpy(other, bes, sizeof(other));
    t2 = ts;
    t2.backends = other;
    assert_true(svc_matches(s, &t2));
    other[1].flags |= TBL_BE_TERMINATING;
    assert_false(svc_matches(s, &t2));
    other[1].flags = bes[1].flags;
    other[0].name = "renamed";
    assert_false(svc_matches(s, &t2));
    svc_unref(s);
}

/* Three workers (slots) taking turns share one round-robin order: the
 * same smooth sequence as one worker, whoever picks. */
static void
test_rr_order_shared_by_workers(void **state)
{
    static const uint32_t w[] = {5, 1, 1};
    static const int want[] = {0, 0, 1, 0, 2, 0, 0};
    struct svc_tried none = {0};
    struct svc *s;
    int i;

    (void)state;
    svc_nworkers = 3;
    s = make_svc(TBL_BAL_ROUNDROBIN, w, 3);
    assert_int_equal(s->nslots, 3);
    for (i = 0; i < 21; i++) {
        svc_worker_self = (unsigned)(i * 7 % 3);
        assert_int_equal(svc_pick(s, &none, 0), want[i % 7]);
    }
    svc_worker_self = 0;
    svc_nworkers = 1;
    svc_unref(s);
}

/* An admin weight override rebuilds the shared order; past the kept
 * sequences the workers fall back to their own, still in proportion. */
static void
test_rr_override_rebuilds_then_falls_back(void **state)
{
    static const uint32_t w[] = {1, 1};
    static const int want[] = {0, 0, 1, 0}; /* smooth order of 3, 1 */
    struct svc *s;
    struct svc_tried none = {0};
    int counts[2] = {0}, i, k;

    (void)state;
    svc_nworkers = 2;
    s = make_svc(TBL_BAL_ROUNDROBIN, w, 2);
    assert_int_equal(shared_period(s), 2);
    assert_true(svc_set_weight_override(s, 0, 3));
    svc_reweighted(s);
    assert_false(svc_set_weight_override(s, 0, 3)); /* no change */
    assert_int_equal(shared_period(s), 4);
    /* Two workers taking turns follow the one new order. */
    for (i = 0; i < 40; i++) {
        svc_worker_self = (unsigned)i % 2;
        k = svc_pick(s, &none, 0);
        assert_int_equal(k, want[i % 4]);
        counts[k]++;
    }
    svc_worker_self = 0;
    assert_int_equal(counts[0], 30);
    assert_int_equal(counts[1], 10);
    /* More overrides than the balancer keeps replaced orders for (32). */
    for (k = 0; k < 64; k++) {
        assert_true(svc_set_weight_override(s, 1, k % 2 ? 1 : 2));
        svc_reweighted(s);
    }
    assert_int_equal(shared_period(s), 0);
    counts[0] = counts[1] = 0;
    for (i = 0; i < 40; i++)
        counts[svc_pick(s, &none, 0)]++;
    assert_int_equal(counts[0], 30); /* weights 3 and 1 */
    assert_int_equal(counts[1], 10);
    svc_nworkers = 1;
    svc_unref(s);
}

/* Weights adding up past the shared sequence's length: one worker still
 * gets the exact smooth proportions. A drained heavy backend leaves the
 * light one every pick (the scan after a few refused tickets). */
static void
test_rr_long_period_and_drained_heavy(void **state)
{
    static const uint32_t w[] = {4000, 1000};
    static const uint32_t w2[] = {1000, 1};
    struct svc_tried none = {0};
    struct svc *s = make_svc(TBL_BAL_ROUNDROBIN, w, 2);
    int counts[2] = {0}, i;

    (void)state;
    assert_int_equal(shared_period(s), 0);
    for (i = 0; i < 5000; i++)
        counts[svc_pick(s, &none, 0)]++;
    assert_int_equal(counts[0], 4000);
    assert_int_equal(counts[1], 1000);
    svc_unref(s);
    s = make_svc(TBL_BAL_ROUNDROBIN, w2, 2);
    assert_int_equal(shared_period(s), 1001);
    assert_int_equal(svc_set_drained(s, 0, 1), 0);
    for (i = 0; i < 50; i++)
        assert_int_equal(svc_pick(s, &none, 0), 1);
    svc_unref(s);
}

/* svc_peek() names what svc_pick_client() picks next, for every
 * algorithm that can know it, and moves nothing itself: random weights,
 * a drained backend, random clients; with affinity, the pin. */
static void
test_peek_is_next_pick(void **state)
{
    static const enum tbl_balance algos[] = {
        TBL_BAL_ROUNDROBIN, TBL_BAL_LEASTCONN, TBL_BAL_MAGLEV};
    struct svc_tried none = {0};
    uint32_t w[12];
    size_t a, i, n;
    int pinned;

    (void)state;
    srand(7);
    for (a = 0; a < sizeof(algos) / sizeof(algos[0]); a++) {
        struct tbl_service ts;
        struct svc *s;
        n = 3 + (size_t)(rand() % 9);
        for (i = 0; i < n; i++)
            w[i] = (uint32_t)(rand() % 4);
        w[0] = 1;
        make_ts(&ts, algos[a], w, n);
        ts.affinity_timeout_ms = a == 2 ? 0 : 10000;
        s = svc_new(&ts);
        assert_non_null(s);
        svc_set_drained(s, n - 1, 1);
        for (i = 0; i < 200; i++) {
            struct saddr c;
            char ip[32];
            const char *why;
            int p1, p2;
            snprintf(ip, sizeof(ip), "198.18.%d.%d", rand() % 256,
                     1 + rand() % 254);
            assert_int_equal(parse_ip(ip, 0, &c, &why), 0);
            p1 = svc_peek(s, &c, 0, &pinned);
            p2 = svc_peek(s, &c, 0, &pinned);
            assert_int_equal(p1, p2);
            assert_int_equal(svc_pick_client(s, &c, &none, 0), p1);
            assert_true(p1 >= 0 && (size_t)p1 != n - 1);
            if (ts.affinity_timeout_ms > 0) {
                /* Pinned now: the peek says so. */
                assert_int_equal(svc_peek(s, &c, 0, &pinned), p1);
                assert_int_equal(pinned, 1);
            }
        }
        svc_unref(s);
    }
    /* Random draws cannot be known ahead. */
    w[0] = w[1] = 1;
    {
        struct svc *s = make_svc(TBL_BAL_RANDOM, w, 2);
        assert_int_equal(svc_peek(s, NULL, 0, &pinned), SVC_PEEK_UNKNOWN);
        svc_set_drained(s, 0, 1);
        svc_set_drained(s, 1, 1);
        assert_int_equal(svc_peek(s, NULL, 0, &pinned), SVC_PEEK_UNKNOWN);
        svc_unref(s);
        s = make_svc(TBL_BAL_ROUNDROBIN, w, 2);
        svc_set_drained(s, 0, 1);
        svc_set_drained(s, 1, 1);
        assert_int_equal(svc_peek(s, NULL, 0, &pinned), SVC_PEEK_NONE);
        svc_unref(s);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rr_equal_weights_exact_order),
        cmocka_unit_test(test_rr_smooth_sequence),
        cmocka_unit_test(test_rr_weights_proportional_and_zero),
        cmocka_unit_test(test_rr_order_shared_by_workers),
        cmocka_unit_test(test_rr_override_rebuilds_then_falls_back),
        cmocka_unit_test(test_rr_long_period_and_drained_heavy),
        cmocka_unit_test(test_tried_backends_are_skipped),
        cmocka_unit_test(test_tried_exact_in_large_service),
        cmocka_unit_test(test_tried_capacity),
        cmocka_unit_test(test_passive_health_backoff),
        cmocka_unit_test(test_leastconn_fewest_then_rotation),
        cmocka_unit_test(test_leastconn_weighted),
        cmocka_unit_test(test_random_weighted),
        cmocka_unit_test(test_p2c_avoids_the_loaded_and_spreads),
        cmocka_unit_test(test_p2c_balances_open_connections),
        cmocka_unit_test(test_p2c_few_candidates),
        cmocka_unit_test(test_maglev_consistent_and_even),
        cmocka_unit_test(test_maglev_small_disruption),
        cmocka_unit_test(test_maglev_weights_and_detours),
        cmocka_unit_test(test_backend_state_shared_by_address),
        cmocka_unit_test(test_svc_matches),
        cmocka_unit_test(test_peek_is_next_pick),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
