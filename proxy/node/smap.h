/*
 * smap.h - a hash map from strings to pointers, for the kernel dataplane's
 * indexes (services by key, destinations by owner, names by object).
 *
 * Open addressing with linear probing and deletion by backward shift: no
 * tombstones, so lookups stay short under churn. Keys are copied; values
 * are borrowed. The slots are public so that a caller can walk them (a
 * slot is in use when its key is not NULL); do not change the map while
 * walking it. Not thread-safe.
 */
#ifndef PROXY_NODE_SMAP_H
#define PROXY_NODE_SMAP_H

#include <stddef.h>
#include <stdint.h>

struct smap_slot {
    char *key;
    void *val;
    uint64_t h;
};

struct smap {
    struct smap_slot *v;
    size_t cap, n; /* cap is a power of two (or 0) */
};

/* The value of <k>, or NULL when absent. */
void *smap_get(const struct smap *m, const char *k);

/* Set <k> to <val>. Returns 0, or -1 when out of memory (the map is then
 * as it was). */
int smap_put(struct smap *m, const char *k, void *val);

/* Remove <k> if present. */
void smap_del(struct smap *m, const char *k);

/* Free the keys and the slots (not the values); the map is empty after. */
void smap_deinit(struct smap *m);

#endif
