#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "backend.h"
#include "log.h"

#define BACKOFF_FIRST_S 0.25
#define BACKOFF_MAX_S   30.0

/* The registry maps a canonical address key to the live object. */
struct be_key {
    uint8_t family;
    uint8_t pad;
    uint16_t port;
    uint8_t ip[16];
};

struct be_entry {
    struct be_key key;
    struct backend *b;
    UT_hash_handle hh;
};

/* The registry is shared by the control loop (backend_get) and every
 * worker (the last backend_unref may happen on any): a mutex guards it.
 * It is taken only when a backend is created or freed, never per
 * connection. */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct be_entry *registry;
static atomic_uint n_backends;

/* A reference to <b> unless its count already reached zero (it is being
 * freed by another thread). */
static int
ref_if_alive(struct backend *b)
{
    unsigned r = atomic_load_explicit(&b->refs, memory_order_relaxed);

    while (r != 0)
        if (atomic_compare_exchange_weak_explicit(&b->refs, &r, r + 1,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
            return 1;
    return 0;
}

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

struct backend *
backend_get(const struct saddr *addr)
{
    struct be_entry *e;
    struct be_key k;
    struct backend *b;

    make_key(addr, &k);
    pthread_mutex_lock(&registry_mu);
    HASH_FIND(hh, registry, &k, sizeof(k), e);
    if (e != NULL) {
        if (ref_if_alive(e->b)) {
            pthread_mutex_unlock(&registry_mu);
            return e->b;
        }
        /* Dying: its owner frees it without the entry, which goes now. */
        HASH_DEL(registry, e);
        free(e);
    }
    b = calloc(1, sizeof(*b));
    e = calloc(1, sizeof(*e));
    if (b == NULL || e == NULL) {
        pthread_mutex_unlock(&registry_mu);
        free(b);
        free(e);
        return NULL;
    }
    b->addr = *addr;
    saddr_str(addr, b->addr_str, sizeof(b->addr_str));
    atomic_init(&b->refs, 1);
    e->key = k;
    e->b = b;
    HASH_ADD(hh, registry, key, sizeof(e->key), e);
    atomic_fetch_add(&n_backends, 1);
    pthread_mutex_unlock(&registry_mu);
    return b;
}

struct backend *
backend_ref(struct backend *b)
{
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    return b;
}

void
backend_unref(struct backend *b)
{
    struct be_entry *e;
    struct be_key k;

    if (b == NULL)
        return;
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    make_key(&b->addr, &k);
    pthread_mutex_lock(&registry_mu);
    HASH_FIND(hh, registry, &k, sizeof(k), e);
    if (e != NULL && e->b == b) {
        HASH_DEL(registry, e);
        free(e);
    }
    pthread_mutex_unlock(&registry_mu);
    atomic_fetch_sub(&n_backends, 1);
    free(b);
}

void
backend_on_fail(struct backend *b, double now)
{
    unsigned f = atomic_fetch_add(&b->fails, 1) + 1;
    double d = BACKOFF_FIRST_S;

    while (--f > 0 && d < BACKOFF_MAX_S)
        d *= 2;
    if (d > BACKOFF_MAX_S)
        d = BACKOFF_MAX_S;
    if (atomic_load_explicit(&b->eject_until, memory_order_relaxed) <= now)
        atomic_fetch_add_explicit(&b->n_ejections, 1, memory_order_relaxed);
    atomic_store(&b->eject_until, now + d);
    atomic_fetch_add(&b->n_failures, 1);
}

void
backend_on_success(struct backend *b)
{
    if (atomic_load_explicit(&b->fails, memory_order_relaxed) != 0) {
        atomic_store(&b->fails, 0);
        atomic_store(&b->eject_until, 0.0);
    }
    atomic_fetch_add_explicit(&b->n_connects, 1, memory_order_relaxed);
}

void
backend_on_probe_ok(struct backend *b)
{
    if (atomic_load_explicit(&b->fails, memory_order_relaxed) != 0) {
        atomic_store(&b->fails, 0);
        atomic_store(&b->eject_until, 0.0);
    }
}

int
backend_ejected(const struct backend *b, double now)
{
    return atomic_load_explicit(&b->eject_until, memory_order_relaxed) > now;
}

unsigned
backend_count(void)
{
    return n_backends;
}
