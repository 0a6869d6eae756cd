/* Unit tests for the backends' map and slabs (proxy/dataplane/backend.c):
 * one backend per address, found again while held, never revived once
 * its count reached zero, and its memory taken again once freed. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend.h"
#include "threads.h"

static struct saddr
addr(const char *ip, uint16_t port)
{
    struct saddr a;

    assert_int_equal(parse_ip(ip, port, &a, NULL), 0);
    return a;
}

/* 198.18.x.y:port for <i>. */
static struct saddr
nth(int i)
{
    char ip[32];

    snprintf(ip, sizeof(ip), "198.18.%d.%d", (i >> 8) & 255, i & 255);
    return addr(ip, (uint16_t)(1000 + i / 65536));
}

static void
test_one_backend_per_address(void **state)
{
    struct saddr a4 = addr("198.18.0.7", 80),
                 a6 = addr("::ffff:198.18.0.7", 80);
    struct saddr p81 = addr("198.18.0.7", 81), back;
    struct backend *a, *b, *c, *d;
    char buf[SADDR_STR_MAX];

    (void)state;
    a = backend_get(&a4);
    b = backend_get(&a4);
    c = backend_get(&a6);
    d = backend_get(&p81);
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c); /* same bytes, another family */
    assert_ptr_not_equal(a, d);
    assert_int_equal(backend_count(), 3);
    assert_int_equal(atomic_load(&a->refs), 2);
    assert_string_equal(backend_addr(a, buf), "198.18.0.7:80");
    assert_string_equal(backend_addr(c, buf), "[::ffff:198.18.0.7]:80");
    assert_int_equal(saddr_cmp(backend_saddr(d, &back), &p81), 0);
    backend_unref(a);
    assert_int_equal(backend_count(), 3);
    backend_unref(b); /* the last: gone */
    assert_int_equal(backend_count(), 2);
    a = backend_get(&a4);
    assert_int_equal(atomic_load(&a->refs), 1);
    backend_unref(a);
    backend_unref(c);
    backend_unref(d);
    assert_int_equal(backend_count(), 0);
}

/* A backend whose count reached zero is being freed by another thread: a
 * get for its address must make a new one, never revive it, and the
 * dying one's free must not take the new one out of the map. */
static void
test_dying_backend_is_not_revived(void **state)
{
    struct saddr k = addr("198.18.1.1", 443);
    struct backend *dying, *fresh, *again;

    (void)state;
    dying = backend_get(&k);
    /* What backend_unref's first step does in the other thread. */
    atomic_store(&dying->refs, 0);
    fresh = backend_get(&k);
    assert_ptr_not_equal(fresh, dying);
    assert_int_equal(atomic_load(&fresh->refs), 1);
    assert_int_equal(backend_count(), 2);
    /* The other thread's second step, as a last reference. */
    atomic_store(&dying->refs, 1);
    backend_unref(dying);
    assert_int_equal(backend_count(), 1);
    again = backend_get(&k);
    assert_ptr_equal(again, fresh);
    backend_unref(again);
    backend_unref(fresh);
    assert_int_equal(backend_count(), 0);
}

/* Many addresses over several slabs, dropped in a scrambled order: every
 * one still held is found as the map grows and shrinks, and the freed
 * backends are taken again before any new slab. */
static void
test_many_backends(void **state)
{
    enum { N = 5000 };
    static struct backend *b[N];
    struct backend *last = NULL;
    int i, j, m, step = 2003; /* coprime with N: a scrambled order */

    (void)state;
    for (i = 0; i < N; i++) {
        struct saddr a = nth(i);
        assert_non_null(b[i] = backend_get(&a));
    }
    assert_int_equal(backend_count(), N);
    for (i = 0, j = 0; i < N; i++, j = (j + step) % N) {
        last = b[j];
        backend_unref(b[j]);
        b[j] = NULL;
        if (i % 97 != 0)
            continue;
        for (m = 0; m < N; m++) {
            struct saddr a = nth(m);
            struct backend *again;
            if (b[m] == NULL)
                continue;
            again = backend_get(&a);
            assert_ptr_equal(again, b[m]);
            backend_unref(again);
        }
    }
    assert_int_equal(backend_count(), 0);
    /* The same number again, zeroed: the last freed is the first taken
     * (the free list is a stack). */
    for (i = 0; i < N; i++) {
        struct saddr a = nth(N + i);
        assert_non_null(b[i] = backend_get(&a));
        assert_int_equal(atomic_load(&b[i]->refs), 1);
        assert_null(atomic_load(&b[i]->ctr));
        assert_int_equal(atomic_load(&b[i]->active), 0);
        if (i == 0)
            assert_ptr_equal(b[0], last);
    }
    for (i = 0; i < N; i++)
        backend_unref(b[i]);
    assert_int_equal(backend_count(), 0);
}

static void *
churn(void *arg)
{
    static const char *const ips[] = {"198.18.2.1", "198.18.2.2", "198.18.2.3"};
    int i;

    (void)arg;
    for (i = 0; i < 20000; i++) {
        struct saddr a = addr(ips[i % 3], 8080), got;
        struct backend *b = backend_get(&a);
        if (b == NULL || saddr_cmp(backend_saddr(b, &got), &a) != 0)
            return (void *)1;
        backend_unref(b);
    }
    return NULL;
}

static void
test_threads_get_and_drop(void **state)
{
    (void)state;
    assert_int_equal(threads_run(churn, 4), 0);
    assert_int_equal(backend_count(), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_backend_per_address),
        cmocka_unit_test(test_dying_backend_is_not_revived),
        cmocka_unit_test(test_many_backends),
        cmocka_unit_test(test_threads_get_and_drop),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
