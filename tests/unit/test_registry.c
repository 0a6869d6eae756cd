/* Unit tests for the refcounted registry (proxy/dataplane/registry.c)
 * shared by backends and per-service counters. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "registry.h"
#include "threads.h"

struct obj {
    char tag[16];
    atomic_uint refs;
    uint32_t hash;
};

static int made;

static int
match(const void *obj, const void *key, size_t klen)
{
    const char *tag = ((const struct obj *)obj)->tag;

    return strlen(tag) == klen && memcmp(tag, key, klen) == 0;
}

static void *
mk(const void *key, size_t klen, void *arg)
{
    struct obj *o = calloc(1, sizeof(*o));

    (void)arg;
    if (o == NULL)
        return NULL;
    memcpy(o->tag, key, klen < sizeof(o->tag) ? klen : sizeof(o->tag) - 1);
    atomic_init(&o->refs, 1);
    made++;
    return o;
}

/* Not inlined: gcc -O2 and above would see the free() of a drop that,
 * by the count, is not the last, and warn of a use after free. */
static __attribute__((noinline)) void
drop(struct registry *r, struct obj *o)
{
    if (registry_unref(r, o, o->tag, strlen(o->tag)))
        free(o);
}

static void
test_one_object_per_key(void **state)
{
    struct registry r = REGISTRY_INIT(struct obj, refs, hash, match);
    struct obj *a, *b, *c;

    (void)state;
    made = 0;
    a = registry_get(&r, "a", 1, mk, NULL);
    b = registry_get(&r, "a", 1, mk, NULL);
    c = registry_get(&r, "c", 1, mk, NULL);
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c);
    assert_int_equal(made, 2);
    assert_int_equal(registry_count(&r), 2);
    assert_int_equal(atomic_load(&a->refs), 2);
    drop(&r, a);
    assert_int_equal(registry_count(&r), 2);
    drop(&r, b); /* the last: gone */
    assert_int_equal(registry_count(&r), 1);
    a = registry_get(&r, "a", 1, mk, NULL);
    assert_int_equal(made, 3);
    registry_ref(&r, a);
    drop(&r, a);
    drop(&r, a);
    drop(&r, c);
    assert_int_equal(registry_count(&r), 0);
}

/* An object whose count reached zero is being freed by another thread:
 * a get for its key must make a new object, never revive it, and the
 * dying one's unref must not remove the new entry. */
static void
test_dying_object_is_not_revived(void **state)
{
    struct registry r = REGISTRY_INIT(struct obj, refs, hash, match);
    struct obj *dying, *fresh, *again;

    (void)state;
    dying = registry_get(&r, "k", 1, mk, NULL);
    /* What registry_unref's first step does in the other thread. */
    atomic_store(&dying->refs, 0);
    fresh = registry_get(&r, "k", 1, mk, NULL);
    assert_ptr_not_equal(fresh, dying);
    assert_int_equal(atomic_load(&fresh->refs), 1);
    /* The other thread's second step: the entry is not its own. */
    atomic_store(&dying->refs, 1);
    assert_true(registry_unref(&r, dying, "k", 1));
    free(dying);
    again = registry_get(&r, "k", 1, mk, NULL);
    assert_ptr_equal(again, fresh);
    drop(&r, again);
    drop(&r, fresh);
}

/* Many keys, dropped in a scrambled order: every live key is found as
 * the map grows, and again after each removal moved its neighbours back
 * and the map shrank. */
static void
test_many_keys(void **state)
{
    enum { N = 5000 };
    struct registry r = REGISTRY_INIT(struct obj, refs, hash, match);
    static struct obj *o[N];
    char k[16];
    int i, j, step = 2003; /* coprime with N: a scrambled order */

    (void)state;
    made = 0;
    for (i = 0; i < N; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        o[i] = registry_get(&r, k, strlen(k), mk, NULL);
        assert_non_null(o[i]);
    }
    assert_int_equal(made, N);
    assert_int_equal(registry_count(&r), N);
    for (i = 0, j = 0; i < N; i++, j = (j + step) % N) {
        struct obj *again;

        drop(&r, o[j]);
        o[j] = NULL;
        if (i % 97 != 0)
            continue;
        /* Each key still held is the same object. */
        for (int m = 0; m < N; m++) {
            if (o[m] == NULL)
                continue;
            snprintf(k, sizeof(k), "k%d", m);
            again = registry_get(&r, k, strlen(k), mk, NULL);
            assert_ptr_equal(again, o[m]);
            drop(&r, again);
        }
        assert_int_equal(made, N);
    }
    assert_int_equal(registry_count(&r), 0);
    assert_null(r.slots);
}

static struct registry shared = REGISTRY_INIT(struct obj, refs, hash, match);

static void *
churn(void *arg)
{
    const char *keys[] = {"x", "y", "z"};
    int i;

    (void)arg;
    for (i = 0; i < 20000; i++) {
        const char *k = keys[i % 3];
        struct obj *o = registry_get(&shared, k, 1, mk, NULL);
        if (o == NULL || strcmp(o->tag, k) != 0)
            return (void *)1;
        drop(&shared, o);
    }
    return NULL;
}

static void
test_threads_get_and_drop(void **state)
{
    (void)state;
    assert_int_equal(threads_run(churn, 4), 0);
    assert_int_equal(registry_count(&shared), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_object_per_key),
        cmocka_unit_test(test_dying_object_is_not_revived),
        cmocka_unit_test(test_threads_get_and_drop),
        cmocka_unit_test(test_many_keys),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
