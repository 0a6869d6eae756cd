#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clienthash.h"
#include "affinity.h"

enum aff_slot {
    AFF_SLOT_EMPTY = 0, /* never filled (calloc) */
    AFF_SLOT_FILLED,    /* holds a pin, live or expired (see live()) */
};

struct aff_entry {
    unsigned char key[16]; /* IPv6, or IPv4-mapped IPv6 */
    uint32_t idx;
    uint32_t state; /* enum aff_slot */
    double last;    /* loop time of the last confirmation */
};

struct affinity {
    /* Taken by the writers (the one worker that owns the table) and by
     * affinity_peek() on another thread; the owner's own reads need it
     * not, since nothing else writes. */
    pthread_mutex_t lock;
    struct aff_entry *slots;
    size_t nslots; /* a power of two */
    double timeout;
    uint64_t seed; /* per table, so clients cannot aim at one window */
};

static size_t
key_hash(const struct affinity *a, const unsigned char key[16])
{
    return client_hash(a->seed, key);
}

static int
live(const struct affinity *a, const struct aff_entry *e, double now)
{
    return e->state == AFF_SLOT_FILLED && now - e->last <= a->timeout;
}

struct affinity *
affinity_new(double timeout_s)
{
    struct affinity *a = calloc(1, sizeof(*a));

    if (a == NULL)
        return NULL;
    a->slots = calloc(AFFINITY_MIN_SLOTS, sizeof(*a->slots));
    if (a->slots == NULL) {
        free(a);
        return NULL;
    }
    pthread_mutex_init(&a->lock, NULL);
    a->nslots = AFFINITY_MIN_SLOTS;
    a->timeout = timeout_s;
    a->seed = client_seed(a);
    return a;
}

void
affinity_free(struct affinity *a)
{
    if (a == NULL)
        return;
    pthread_mutex_destroy(&a->lock);
    free(a->slots);
    free(a);
}

/* The slot holding <key>, whether live or not, or NULL. */
static struct aff_entry *
find(const struct affinity *a, const unsigned char key[16])
{
    size_t h = key_hash(a, key), i;

    for (i = 0; i < AFFINITY_WINDOW; i++) {
        struct aff_entry *e = &a->slots[(h + i) & (a->nslots - 1)];
        if (e->state == AFF_SLOT_FILLED && memcmp(e->key, key, 16) == 0)
            return e;
    }
    return NULL;
}

int
affinity_get(const struct affinity *a, const struct saddr *client, double now)
{
    unsigned char key[16];
    const struct aff_entry *e;

    client_key(client, key);
    e = find(a, key);
    return e != NULL && live(a, e, now) ? (int)e->idx : -1;
}

int
affinity_peek(struct affinity *a, const struct saddr *client, double now)
{
    int i;

    pthread_mutex_lock(&a->lock);
    i = affinity_get(a, client, now);
    pthread_mutex_unlock(&a->lock);
    return i;
}

/* A slot for a new key in its window: a free or expired one, else NULL
 * with <*lru> set to the least recently used live one. */
static struct aff_entry *
free_slot(struct affinity *a, const unsigned char key[16], double now,
          struct aff_entry **lru)
{
    size_t h = key_hash(a, key), i;

    *lru = NULL;
    for (i = 0; i < AFFINITY_WINDOW; i++) {
        struct aff_entry *e = &a->slots[(h + i) & (a->nslots - 1)];
        if (!live(a, e, now))
            return e;
        if (*lru == NULL || e->last < (*lru)->last)
            *lru = e;
    }
    return NULL;
}

static void
put(struct aff_entry *e, const unsigned char key[16], uint32_t idx, double now)
{
    memcpy(e->key, key, 16);
    e->idx = idx;
    e->state = AFF_SLOT_FILLED;
    e->last = now;
}

/* Double the table, keeping the live pins. A pin that finds no room in
 * the bigger table (a window still full) is dropped. */
static int
grow(struct affinity *a, double now)
{
    struct affinity old = *a;
    struct aff_entry *lru;
    size_t i;

    a->slots = calloc(old.nslots * 2, sizeof(*a->slots));
    if (a->slots == NULL) {
        a->slots = old.slots;
        return -1;
    }
    a->nslots = old.nslots * 2;
    for (i = 0; i < old.nslots; i++) {
        const struct aff_entry *o = &old.slots[i];
        struct aff_entry *e;
        if (!live(&old, o, now))
            continue;
        e = free_slot(a, o->key, now, &lru);
        if (e != NULL)
            *e = *o;
    }
    free(old.slots);
    return 0;
}

static int
set_locked(struct affinity *a, const struct saddr *client, uint32_t idx,
           double now)
{
    unsigned char key[16];
    struct aff_entry *e, *lru;

    client_key(client, key);
    if ((e = find(a, key)) != NULL) {
        put(e, key, idx, now);
        return 0;
    }
    while ((e = free_slot(a, key, now, &lru)) == NULL) {
        if (a->nslots >= AFFINITY_MAX_SLOTS || grow(a, now) < 0) {
            if (a->nslots < AFFINITY_MAX_SLOTS)
                return -1; /* out of memory: leave the others pinned */
            e = lru;       /* at the cap: the oldest pin of the window goes */
            break;
        }
    }
    put(e, key, idx, now);
    return 0;
}

int
affinity_set(struct affinity *a, const struct saddr *client, uint32_t idx,
             double now)
{
    int rc;

    pthread_mutex_lock(&a->lock);
    rc = set_locked(a, client, idx, now);
    pthread_mutex_unlock(&a->lock);
    return rc;
}

void
affinity_inherit(struct affinity *to, const struct affinity *from,
                 const int32_t *map, size_t nmap, double now)
{
    size_t i;

    pthread_mutex_lock(&to->lock);
    for (i = 0; i < from->nslots; i++) {
        const struct aff_entry *o = &from->slots[i];
        struct aff_entry *e, *lru;
        if (!live(from, o, now) || o->idx >= nmap || map[o->idx] < 0)
            continue;
        /* Inheriting happens on the control path, where growing is fine;
         * the LRU rule at the cap is the same as for a new pin. */
        while ((e = free_slot(to, o->key, now, &lru)) == NULL) {
            if (to->nslots >= AFFINITY_MAX_SLOTS || grow(to, now) < 0) {
                e = lru;
                break;
            }
        }
        put(e, o->key, (uint32_t)map[o->idx], o->last);
    }
    pthread_mutex_unlock(&to->lock);
}

size_t
affinity_count(const struct affinity *a, double now)
{
    size_t i, n = 0;

    for (i = 0; i < a->nslots; i++)
        n += live(a, &a->slots[i], now) != 0;
    return n;
}

size_t
affinity_slots(const struct affinity *a)
{
    return a->nslots;
}
