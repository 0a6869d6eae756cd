#include <arpa/inet.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "bug.h"
#include "log.h"

#define BACKOFF_FIRST_S 0.25
#define BACKOFF_MAX_S   30.0

/* The registry's key: the address in a canonical form (no padding or
 * scope bytes of a sockaddr). */
struct be_key {
    uint8_t family;
    uint8_t pad;
    uint16_t port;
    uint8_t ip[16];
};

static void
make_key(const struct saddr *a, struct be_key *k)
{
    memset(k, 0, sizeof(*k));
    k->family = (uint8_t)a->u.sa.sa_family;
    k->port = saddr_port(a);
    if (a->u.sa.sa_family == AF_INET)
        memcpy(k->ip, &a->u.in.sin_addr, 4);
    else if (a->u.sa.sa_family == AF_INET6)
        memcpy(k->ip, &a->u.in6.sin6_addr, 16);
}

/*
 * The backends, found by address. They live in slabs of SLAB_N, each
 * with a number (its slab's times SLAB_N plus its place there), and the
 * map is chained through those numbers: a bucket is the number of its
 * first backend plus one (0: none), and each backend holds the next.
 * At 250,000 endpoints this is 1 MB of buckets where a pointer per slot
 * of an open-addressed map, three quarters full at most, took 4 MB; and
 * a backend is 40 bytes where malloc() would take 48. A freed backend
 * goes on a free list, chained through the same numbers, that the next
 * one takes; slabs are never given back (a cluster that once had N
 * endpoints may have them again). Built with AddressSanitizer, a free
 * backend is poisoned but for its first 8 bytes (the free list's link)
 * until it is taken again, so that a use after free is still caught.
 *
 * One mutex guards the buckets, the slabs and the free list; it is taken
 * to find, create or forget a backend, never per connection. A backend
 * whose count has reached zero is never revived: its owner is freeing
 * it, so backend_get() unlinks it and makes a new one for the address,
 * and the owner then frees it without finding it in the map.
 */
#if defined(__SANITIZE_ADDRESS__)
#define BACKEND_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BACKEND_ASAN 1
#endif
#endif
#ifdef BACKEND_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n)   ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define SLAB_SHIFT  10
#define SLAB_N      (1u << SLAB_SHIFT)
#define MIN_BUCKETS 64u

/* A slab and its number, in tab.by_addr. */
struct slab_at {
    struct backend *base;
    uint32_t idx;
};

static struct {
    pthread_mutex_t mu;
    struct backend **slabs;  /* nslabs of SLAB_N */
    struct slab_at *by_addr; /* the same, by address (id_of()) */
    uint32_t nslabs;
    uint32_t free;     /* the first free backend's number plus one, or 0 */
    uint32_t *buckets; /* nbuckets, a power of two, or none */
    uint32_t nbuckets;
    atomic_uint n; /* backends alive */
} tab = {.mu = PTHREAD_MUTEX_INITIALIZER};

static struct backend *
at(uint32_t id)
{
    return &tab.slabs[id >> SLAB_SHIFT][id & (SLAB_N - 1)];
}

static uint32_t
key_hash(const struct be_key *k)
{
    uint64_t w[3], h;

    /* The key is 20 bytes: mixed as three words (the last one padded),
     * a multiply and a shift each, instead of a step per byte. */
    memset(w, 0, sizeof(w));
    memcpy(w, k, sizeof(*k));
    h = (w[0] ^ 0x9E3779B97F4A7C15ull) * 0xBF58476D1CE4E5B9ull;
    h = (h ^ (h >> 29) ^ w[1]) * 0x94D049BB133111EBull;
    h = (h ^ (h >> 32) ^ w[2]) * 0xBF58476D1CE4E5B9ull;
    return (uint32_t)(h ^ (h >> 31) ^ (h >> 47));
}

static void
key_of(const struct backend *b, struct be_key *k)
{
    memset(k, 0, sizeof(*k));
    k->family = b->family;
    k->port = b->port;
    memcpy(k->ip, b->ip, sizeof(k->ip));
}

static int
matches(const struct backend *b, const struct be_key *k)
{
    return b->family == k->family && b->port == k->port
           && memcmp(b->ip, k->ip, sizeof(b->ip)) == 0;
}

static uint32_t *
bucket_of(const struct be_key *k)
{
    return &tab.buckets[key_hash(k) & (tab.nbuckets - 1)];
}

/* Chain every backend again into <n> buckets. Returns -1, the map
 * unchanged, when out of memory. */
static int
rechain(uint32_t n)
{
    uint32_t *old = tab.buckets, oldn = tab.nbuckets, i, id;
    struct be_key k;

    if ((tab.buckets = calloc(n, sizeof(*tab.buckets))) == NULL) {
        tab.buckets = old;
        return -1;
    }
    tab.nbuckets = n;
    for (i = 0; i < oldn; i++)
        for (id = old[i]; id != 0;) {
            struct backend *b = at(id - 1);
            uint32_t next = b->next, *head;

            key_of(b, &k);
            head = bucket_of(&k);
            b->next = *head;
            *head = id;
            id = next;
        }
    free(old);
    return 0;
}

/* Take <b> (number <id>) out of its chain, if it is there. */
static void
unlink_id(const struct be_key *k, uint32_t id)
{
    uint32_t *link;

    if (tab.nbuckets == 0)
        return;
    for (link = bucket_of(k); *link != 0; link = &at(*link - 1)->next)
        if (*link == id) {
            *link = at(id - 1)->next;
            return;
        }
}

/* Put backend <id> on the free list, poisoned but for the link. */
static void
give_back(uint32_t id)
{
    struct backend *b = at(id);

    b->next = tab.free;
    tab.free = id + 1;
    POISON((char *)b + 8, sizeof(*b) - 8);
}

/* A free backend, zeroed, with its number in *<id>; NULL when out of
 * memory. */
static struct backend *
take(uint32_t *id)
{
    struct backend **slabs, *slab;
    struct slab_at *by;
    uint32_t i;

    if (tab.free == 0) {
        if (tab.nslabs >= (UINT32_MAX >> SLAB_SHIFT) - 1)
            return NULL;
        if ((slab = malloc(SLAB_N * sizeof(*slab))) == NULL)
            return NULL;
        if ((slabs = realloc(tab.slabs, (tab.nslabs + 1) * sizeof(*slabs)))
            == NULL) {
            free(slab);
            return NULL;
        }
        tab.slabs = slabs;
        if ((by = realloc(tab.by_addr, (tab.nslabs + 1) * sizeof(*by)))
            == NULL) {
            free(slab);
            return NULL;
        }
        tab.by_addr = by;
        tab.slabs[tab.nslabs] = slab;
        for (i = tab.nslabs;
             i > 0 && (uintptr_t)by[i - 1].base > (uintptr_t)slab; i--)
            by[i] = by[i - 1];
        by[i].base = slab;
        by[i].idx = tab.nslabs;
        tab.nslabs++;
        for (i = SLAB_N; i-- > 0;) /* the lowest taken first */
            give_back(tab.nslabs * SLAB_N - SLAB_N + i);
    }
    *id = tab.free - 1;
    tab.free = at(*id)->next;
    UNPOISON(at(*id), sizeof(struct backend));
    memset(at(*id), 0, sizeof(struct backend));
    return at(*id);
}

struct saddr *
backend_saddr(const struct backend *b, struct saddr *out)
{
    memset(out, 0, sizeof(*out));
    if (b->family == AF_INET6) {
        out->u.in6.sin6_family = AF_INET6;
        memcpy(&out->u.in6.sin6_addr, b->ip, 16);
        out->u.in6.sin6_port = htons(b->port);
        out->len = sizeof(out->u.in6);
    } else {
        out->u.in.sin_family = AF_INET;
        memcpy(&out->u.in.sin_addr, b->ip, 4);
        out->u.in.sin_port = htons(b->port);
        out->len = sizeof(out->u.in);
    }
    return out;
}

struct backend *
backend_get(const struct saddr *addr)
{
    struct be_key k;
    struct backend *b;
    uint32_t *link, id;

    make_key(addr, &k);
    pthread_mutex_lock(&tab.mu);
    for (link = tab.nbuckets ? bucket_of(&k) : NULL; link != NULL && *link;) {
        b = at(*link - 1);
        if (!matches(b, &k)) {
            link = &b->next;
            continue;
        }
        unsigned n = atomic_load_explicit(&b->refs, memory_order_relaxed);
        while (n != 0)
            if (atomic_compare_exchange_weak_explicit(&b->refs, &n, n + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
                pthread_mutex_unlock(&tab.mu);
                return b;
            }
        *link = b->next; /* dying: its owner frees it without the link */
        break;
    }
    if ((atomic_load_explicit(&tab.n, memory_order_relaxed) + 1 > tab.nbuckets
         && rechain(tab.nbuckets ? tab.nbuckets * 2 : MIN_BUCKETS) < 0
         && tab.nbuckets == 0)
        || (b = take(&id)) == NULL) {
        pthread_mutex_unlock(&tab.mu);
        return NULL;
    }
    b->family = k.family;
    b->port = k.port;
    memcpy(b->ip, k.ip, sizeof(b->ip));
    atomic_init(&b->refs, 1);
    link = bucket_of(&k);
    b->next = *link;
    *link = id + 1;
    atomic_fetch_add(&tab.n, 1);
    pthread_mutex_unlock(&tab.mu);
    return b;
}

void
backend_reserve(size_t n)
{
    uint32_t want = MIN_BUCKETS;

    if (n > UINT32_MAX / 2)
        return;
    while (want < n)
        want *= 2;
    pthread_mutex_lock(&tab.mu);
    if (want > tab.nbuckets)
        (void)rechain(want); /* out of memory: grows as it goes */
    pthread_mutex_unlock(&tab.mu);
}

struct backend *
backend_ref(struct backend *b)
{
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    return b;
}

/* The number of <b>, a backend of a slab: its slab found by address
 * (slabs hold no number, and a backend has no room for its own). */
static uint32_t
id_of(const struct backend *b)
{
    uint32_t lo = 0, hi = tab.nslabs;

    BUG_ON(tab.nslabs == 0);
    while (hi - lo > 1) { /* the last slab starting at or before b */
        uint32_t mid = lo + (hi - lo) / 2;
        if ((uintptr_t)tab.by_addr[mid].base <= (uintptr_t)b)
            lo = mid;
        else
            hi = mid;
    }
    return tab.by_addr[lo].idx * SLAB_N + (uint32_t)(b - tab.by_addr[lo].base);
}

void
backend_unref(struct backend *b)
{
    struct be_key k;
    uint32_t id;

    if (b == NULL
        || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(atomic_load_explicit(&b->ctr, memory_order_acquire));
    key_of(b, &k);
    pthread_mutex_lock(&tab.mu);
    id = id_of(b);
    unlink_id(&k, id + 1);
    give_back(id);
    atomic_fetch_sub(&tab.n, 1);
    if (tab.nbuckets > MIN_BUCKETS
        && atomic_load_explicit(&tab.n, memory_order_relaxed)
               < tab.nbuckets / 8)
        (void)rechain(tab.nbuckets / 2); /* out of memory: stays larger */
    pthread_mutex_unlock(&tab.mu);
}

struct backend_ctr *
backend_ctr(struct backend *b)
{
    struct backend_ctr *k =
        atomic_load_explicit(&b->ctr, memory_order_acquire);
    struct backend_ctr *fresh;

    if (k != NULL)
        return k;
    if ((fresh = calloc(1, sizeof(*fresh))) == NULL)
        return NULL;
    if (atomic_compare_exchange_strong_explicit(&b->ctr, &k, fresh,
                                                memory_order_acq_rel,
                                                memory_order_acquire))
        return fresh;
    free(fresh); /* another thread's came first: <k> is it */
    return k;
}

const struct backend_ctr *
backend_ctr_read(const struct backend *b)
{
    static const struct backend_ctr zero;
    const struct backend_ctr *k =
        atomic_load_explicit(&b->ctr, memory_order_acquire);

    return k != NULL ? k : &zero;
}

void
backend_observe_connect(struct backend *b, double seconds)
{
    struct backend_ctr *k = backend_ctr(b);

    if (k != NULL)
        hist_observe(&k->connect_hist, &hist_connect, seconds);
}

void
backend_on_fail(struct backend *b, double now)
{
    struct backend_ctr *k = backend_ctr(b);
    double d = BACKOFF_FIRST_S;
    unsigned f;

    if (k == NULL)
        return; /* out of memory: neither counted nor backed off */
    f = atomic_fetch_add(&k->fails, 1) + 1;
    while (--f > 0 && d < BACKOFF_MAX_S)
        d *= 2;
    if (d > BACKOFF_MAX_S)
        d = BACKOFF_MAX_S;
    if (atomic_load_explicit(&k->eject_until, memory_order_relaxed) <= now)
        atomic_fetch_add_explicit(&k->n_ejections, 1, memory_order_relaxed);
    atomic_store(&k->eject_until, now + d);
    atomic_fetch_add(&k->n_failures, 1);
}

/* The back-off of <k> (NULL: none) ends now. */
static void
clear_backoff(struct backend_ctr *k)
{
    if (k != NULL && atomic_load_explicit(&k->fails, memory_order_relaxed)) {
        atomic_store(&k->fails, 0);
        atomic_store(&k->eject_until, 0.0);
    }
}

void
backend_on_success(struct backend *b)
{
    struct backend_ctr *k = backend_ctr(b);

    clear_backoff(k);
    if (k != NULL)
        atomic_fetch_add_explicit(&k->n_connects, 1, memory_order_relaxed);
}

void
backend_on_probe_ok(struct backend *b)
{
    clear_backoff(atomic_load_explicit(&b->ctr, memory_order_acquire));
}

int
backend_ejected(const struct backend *b, double now)
{
    return backend_eject_until(b) > now;
}

unsigned
backend_fails(const struct backend *b)
{
    return atomic_load_explicit(&backend_ctr_read(b)->fails,
                                memory_order_relaxed);
}

double
backend_eject_until(const struct backend *b)
{
    return atomic_load_explicit(&backend_ctr_read(b)->eject_until,
                                memory_order_relaxed);
}

unsigned
backend_count(void)
{
    return atomic_load(&tab.n);
}
