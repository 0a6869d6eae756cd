#include <arpa/inet.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "log.h"
#include "registry.h"

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

static int
backend_match(const void *obj, const void *key, size_t klen)
{
    const struct backend *b = obj;
    const struct be_key *k = key;

    return klen == sizeof(*k) && b->family == k->family && b->port == k->port
           && memcmp(b->ip, k->ip, sizeof(b->ip)) == 0;
}

static struct registry backends =
    REGISTRY_INIT(struct backend, refs, reg_hash, backend_match);

/*
 * Backends come from slabs of SLAB_N, not one malloc() each: a chunk of
 * malloc's is 48 bytes for these 40, 2 MB at 250,000 endpoints. A freed
 * backend goes on a free list that the next one takes; slabs are never
 * given back (a cluster that once had N endpoints may have them again).
 * Built with AddressSanitizer, each backend is its own allocation, so
 * that a use after free is still caught.
 */
#if defined(__SANITIZE_ADDRESS__)
#define BACKEND_SLAB 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BACKEND_SLAB 0
#endif
#endif
#ifndef BACKEND_SLAB
#define BACKEND_SLAB 1
#endif

#define SLAB_N 1024

union slot {
    struct backend b;
    union slot *next_free;
};

static pthread_mutex_t slab_mu = PTHREAD_MUTEX_INITIALIZER;
static union slot *slab_free;

static struct backend *
slot_alloc(void)
{
    union slot *s, *page;
    size_t i;

    if (!BACKEND_SLAB)
        return calloc(1, sizeof(struct backend));
    pthread_mutex_lock(&slab_mu);
    if (slab_free == NULL && (page = malloc(SLAB_N * sizeof(*page))) != NULL) {
        for (i = 0; i < SLAB_N; i++)
            page[i].next_free = i + 1 < SLAB_N ? &page[i + 1] : NULL;
        slab_free = page;
    }
    if ((s = slab_free) != NULL)
        slab_free = s->next_free;
    pthread_mutex_unlock(&slab_mu);
    if (s != NULL)
        memset(s, 0, sizeof(*s));
    return s != NULL ? &s->b : NULL;
}

static void
slot_free(struct backend *b)
{
    union slot *s = (union slot *)(void *)b;

    if (!BACKEND_SLAB) {
        free(b);
        return;
    }
    pthread_mutex_lock(&slab_mu);
    s->next_free = slab_free;
    slab_free = s;
    pthread_mutex_unlock(&slab_mu);
}

static void *
backend_make(const void *key, size_t klen, void *arg)
{
    const struct be_key *k = key;
    struct backend *b;

    (void)klen;
    (void)arg;
    if ((b = slot_alloc()) == NULL)
        return NULL;
    b->family = k->family;
    b->port = k->port;
    memcpy(b->ip, k->ip, sizeof(b->ip));
    atomic_init(&b->refs, 1);
    return b;
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

    make_key(addr, &k);
    return registry_get(&backends, &k, sizeof(k), backend_make, NULL);
}

struct backend *
backend_ref(struct backend *b)
{
    registry_ref(&backends, b);
    return b;
}

void
backend_unref(struct backend *b)
{
    struct be_key k;

    if (b == NULL)
        return;
    memset(&k, 0, sizeof(k));
    k.family = b->family;
    k.port = b->port;
    memcpy(k.ip, b->ip, sizeof(k.ip));
    if (registry_unref(&backends, b, &k, sizeof(k))) {
        free(atomic_load_explicit(&b->ctr, memory_order_acquire));
        slot_free(b);
    }
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
    return registry_count(&backends);
}
