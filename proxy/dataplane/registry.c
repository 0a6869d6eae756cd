#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "registry.h"

struct reg_entry {
    void *obj;
    UT_hash_handle hh;
    size_t klen;
    unsigned char key[]; /* klen bytes */
};

static atomic_uint *
refs_of(const struct registry *r, void *obj)
{
    return (atomic_uint *)(void *)((char *)obj + r->refs_off);
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

void *
registry_get(struct registry *r, const void *key, size_t klen,
             registry_new_fn *mk, void *arg)
{
    struct reg_entry *e;
    void *obj;

    pthread_mutex_lock(&r->mu);
    HASH_FIND(hh, r->map, key, klen, e);
    if (e != NULL) {
        if (ref_if_alive(r, e->obj)) {
            obj = e->obj;
            pthread_mutex_unlock(&r->mu);
            return obj;
        }
        /* Dying: its owner frees it without the entry, which goes now. */
        HASH_DEL(r->map, e);
        free(e);
    }
    e = malloc(sizeof(*e) + klen);
    obj = e != NULL ? mk(key, klen, arg) : NULL;
    if (obj == NULL) {
        pthread_mutex_unlock(&r->mu);
        free(e);
        return NULL;
    }
    e->obj = obj;
    e->klen = klen;
    memcpy(e->key, key, klen);
    HASH_ADD_KEYPTR(hh, r->map, e->key, e->klen, e);
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
    struct reg_entry *e;

    if (atomic_fetch_sub_explicit(refs_of(r, obj), 1, memory_order_acq_rel)
        != 1)
        return 0;
    pthread_mutex_lock(&r->mu);
    HASH_FIND(hh, r->map, key, klen, e);
    if (e != NULL && e->obj == obj) {
        HASH_DEL(r->map, e);
        free(e);
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
