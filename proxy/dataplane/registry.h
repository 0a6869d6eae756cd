/*
 * registry.h - shared, refcounted objects found by key: one per key at a
 * time, created on first use and freed with the last reference.
 *
 * Per-service counters (by name) outlive table generations this way: a
 * new table finds the object the old one used. (Backends follow the
 * same rules with a map of their own, in backend.c, made to be small at
 * hundreds of thousands.)
 * Any thread may drop the last reference, so a mutex guards the map; it
 * is taken only to find, create or forget an object, never per
 * connection. An object whose count has reached zero is never revived:
 * its owner is freeing it, so registry_get() makes a new one for the key
 * and the dying one is freed without its entry.
 */
#ifndef PROXY_DATAPLANE_REGISTRY_H
#define PROXY_DATAPLANE_REGISTRY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

/* Nonzero when <obj> is the object of <key> (<klen> bytes): the map
 * keeps no copy of the keys, each object knows its own. */
typedef int registry_match_fn(const void *obj, const void *key, size_t klen);

struct registry {
    pthread_mutex_t mu;
    /* Open addressing with linear probing: a pointer a slot, the key's
     * hash kept in the object. */
    void **slots;
    size_t cap;  /* a power of two, or 0 */
    size_t used; /* slots holding an object */
    atomic_uint n;
    size_t refs_off; /* offset of the objects' atomic_uint count */
    size_t hash_off; /* offset of the objects' uint32_t hash (ours) */
    registry_match_fn *match;
};

/* A registry of <type> objects whose reference count is <field>, with
 * a uint32_t <hash> the registry sets and reads, whose keys <match>
 * compares. */
#define REGISTRY_INIT(type, field, hash, match)                             \
    {                                                                       \
        PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, 0, offsetof(type, field),    \
            offsetof(type, hash), (match)                                   \
    }

/* Make a new object for <key> (<klen> bytes) with its count at 1, or
 * NULL (out of memory). Called with the registry's mutex held. */
typedef void *registry_new_fn(const void *key, size_t klen, void *arg);

/* Returns the live object of <key> with a new reference, or a new one
 * made by <mk>; NULL when out of memory. Any thread. */
void *registry_get(struct registry *r, const void *key, size_t klen,
                   registry_new_fn *mk, void *arg);

/* Take a reference to <obj>; the caller already holds one. */
void registry_ref(struct registry *r, void *obj);

/* Drop a reference to <obj> (of <key>). Returns nonzero when it was the
 * last: the entry is gone and the caller frees the object. */
int registry_unref(struct registry *r, void *obj, const void *key,
                   size_t klen);

/* Objects alive. */
unsigned registry_count(struct registry *r);

#endif
