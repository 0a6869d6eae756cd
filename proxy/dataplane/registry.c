#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"

#define MIN_CAP 64

static atomic_uint *
refs_of(const struct registry *r, void *obj)
{
    return (atomic_uint *)(void *)((char *)obj + r->refs_off);
}

static uint32_t *
hash_of(const struct registry *r, void *obj)
{
    return (uint32_t *)(void *)((char *)obj + r->hash_off);
}

/* A reference to <obj> unless its count already reached zero. */
static int
ref_if_alive(const struct registry *r, void *obj)
{
    atomic_uint *refs = refs_of(r, obj);
    unsigned n = atomic_load_explicit(refs, memory_order_relaxed);

    while (n != 0)
        if (atomic_compare_exchange_weak_explicit(
                refs, &n, n + 1, memory_order_relaxed, memory_order_relaxed))
            return 1;
    return 0;
}

/* FNV-1a, folded: keys are a few dozen bytes. */
static uint32_t
hash_key(const void *key, size_t klen)
{
    const unsigned char *p = key;
    uint64_t h = 1469598103934665603ull;
    size_t i;

    for (i = 0; i < klen; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return (uint32_t)(h ^ (h >> 32));
}

/* Put <obj> in the first free slot of its probe run (no resize). */
static void
place(void **slots, size_t cap, void *obj, uint32_t hash)
{
    size_t i = hash & (cap - 1);

    while (slots[i] != NULL)
        i = (i + 1) & (cap - 1);
    slots[i] = obj;
}

/* Rehash into <cap> slots. Returns -1, the map unchanged, when out of
 * memory. */
static int
rehash(struct registry *r, size_t cap)
{
    void **slots = calloc(cap, sizeof(*slots));
    size_t i;

    if (slots == NULL)
        return -1;
    for (i = 0; i < r->cap; i++)
        if (r->slots[i] != NULL)
            place(slots, cap, r->slots[i], *hash_of(r, r->slots[i]));
    free(r->slots);
    r->slots = slots;
    r->cap = cap;
    return 0;
}

/* Empty slot <i>, moving back the entries of the run after it that
 * would no longer be found (linear probing needs no tombstones). */
static void
remove_at(struct registry *r, size_t i)
{
    size_t mask = r->cap - 1, j = i, home;

    r->slots[i] = NULL;
    r->used--;
    for (;;) {
        j = (j + 1) & mask;
        if (r->slots[j] == NULL)
            break;
        home = *hash_of(r, r->slots[j]) & mask;
        /* Move j back to i unless its home lies cyclically in (i, j]. */
        if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
            r->slots[i] = r->slots[j];
            r->slots[j] = NULL;
            i = j;
        }
    }
    if (r->used == 0) {
        free(r->slots);
        r->slots = NULL;
        r->cap = 0;
    } else if (r->cap > MIN_CAP && r->used < r->cap / 8) {
        (void)rehash(r, r->cap / 2); /* out of memory: stays larger */
    }
}

void *
registry_get(struct registry *r, const void *key, size_t klen,
             registry_new_fn *mk, void *arg)
{
    uint32_t hash = hash_key(key, klen);
    void *obj;
    size_t i;

    pthread_mutex_lock(&r->mu);
    for (i = r->cap ? hash & (r->cap - 1) : 0; r->cap != 0;
         i = (i + 1) & (r->cap - 1)) {
        obj = r->slots[i];
        if (obj == NULL)
            break;
        if (*hash_of(r, obj) != hash || !r->match(obj, key, klen))
            continue;
        if (ref_if_alive(r, obj)) {
            pthread_mutex_unlock(&r->mu);
            return obj;
        }
        /* Dying: its owner frees it without the slot, which goes now. */
        remove_at(r, i);
        break;
    }
    if ((r->used + 1) * 4 > r->cap * 3
        && rehash(r, r->cap ? r->cap * 2 : MIN_CAP) != 0) {
        pthread_mutex_unlock(&r->mu);
        return NULL;
    }
    if ((obj = mk(key, klen, arg)) == NULL) {
        pthread_mutex_unlock(&r->mu);
        return NULL;
    }
    *hash_of(r, obj) = hash;
    place(r->slots, r->cap, obj, hash);
    r->used++;
    atomic_fetch_add(&r->n, 1);
    pthread_mutex_unlock(&r->mu);
    return obj;
}

void
registry_ref(struct registry *r, void *obj)
{
    atomic_fetch_add_explicit(refs_of(r, obj), 1, memory_order_relaxed);
}

int
registry_unref(struct registry *r, void *obj, const void *key, size_t klen)
{
    size_t i;

    if (atomic_fetch_sub_explicit(refs_of(r, obj), 1, memory_order_acq_rel)
        != 1)
        return 0;
    pthread_mutex_lock(&r->mu);
    /* The slot of this very object, if a newer one for the key has not
     * already taken its place. */
    for (i = r->cap ? hash_key(key, klen) & (r->cap - 1) : 0; r->cap != 0;
         i = (i + 1) & (r->cap - 1)) {
        if (r->slots[i] == NULL)
            break;
        if (r->slots[i] == obj) {
            remove_at(r, i);
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    atomic_fetch_sub(&r->n, 1);
    return 1;
}

unsigned
registry_count(struct registry *r)
{
    return atomic_load(&r->n);
}
