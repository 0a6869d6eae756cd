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
    struct be_key k;

    make_key(&((const struct backend *)obj)->addr, &k);
    return klen == sizeof(k) && memcmp(&k, key, klen) == 0;
}

static struct registry backends =
    REGISTRY_INIT(struct backend, refs, reg_hash, backend_match);

static void *
backend_make(const void *key, size_t klen, void *arg)
{
    const struct saddr *addr = arg;
    struct backend *b;

    (void)key;
    (void)klen;
    if ((b = calloc(1, sizeof(*b))) == NULL)
        return NULL;
    b->addr = *addr;
    atomic_init(&b->refs, 1);
    return b;
}

struct backend *
backend_get(const struct saddr *addr)
{
    struct be_key k;

    make_key(addr, &k);
    return registry_get(&backends, &k, sizeof(k), backend_make,
                        (void *)addr);
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
    make_key(&b->addr, &k);
    if (registry_unref(&backends, b, &k, sizeof(k))) {
        free(atomic_load_explicit(&b->ctr, memory_order_acquire));
        free(b);
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
