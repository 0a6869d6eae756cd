#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "stats.h"

const char *const stats_fail_text[STATS_FAIL__COUNT] = {
    [STATS_FAIL_REFUSED] = "refused",
    [STATS_FAIL_TIMEOUT] = "timeout",
    [STATS_FAIL_ERROR] = "error",
    [STATS_FAIL_NO_BACKEND] = "no_backend",
    [STATS_FAIL_LIMIT] = "limit",
    [STATS_FAIL_RESOURCE] = "resource",
};

/* kube-proxy's sync histogram is exponential from 1 ms; its network
 * programming one is coarse, up to minutes. Ours follow the same shape. */
const struct hist_spec hist_connect = {
    14,
    {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
     5, 10}};
const struct hist_spec hist_sync = {
    15,
    {0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512,
     1.024, 2.048, 4.096, 8.192, 16.384}};
const struct hist_spec hist_programming = {
    14, {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 300}};

enum stats_fail
stats_fail_from_errno(int err)
{
    switch (err) {
    case ECONNREFUSED:
    case ECONNRESET:
        return STATS_FAIL_REFUSED;
    case ETIMEDOUT:
        return STATS_FAIL_TIMEOUT;
    default:
        return STATS_FAIL_ERROR;
    }
}

void
hist_observe(struct hist *h, const struct hist_spec *sp, double v)
{
    size_t i = 0;

    if (!(v >= 0)) /* also NaN */
        v = 0;
    while (i < sp->n && v > sp->le[i])
        i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    if (v > 1e9)
        v = 1e9;
    atomic_fetch_add_explicit(&h->sum_us, (uint64_t)(v * 1e6 + 0.5),
                              memory_order_relaxed);
}

struct st_entry {
    struct svc_stats *st;
    UT_hash_handle hh;
};

static struct st_entry *registry;
static unsigned n_stats;

struct svc_stats *
svc_stats_get(const char *name)
{
    struct st_entry *e;
    struct svc_stats *st;

    HASH_FIND_STR(registry, name, e);
    if (e != NULL) {
        atomic_fetch_add_explicit(&e->st->refs, 1, memory_order_relaxed);
        return e->st;
    }
    st = calloc(1, sizeof(*st));
    e = calloc(1, sizeof(*e));
    if (st == NULL || e == NULL) {
        free(st);
        free(e);
        return NULL;
    }
    snprintf(st->name, sizeof(st->name), "%s", name);
    atomic_init(&st->refs, 1);
    e->st = st;
    HASH_ADD_KEYPTR(hh, registry, st->name, strlen(st->name), e);
    n_stats++;
    return st;
}

void
svc_stats_unref(struct svc_stats *st)
{
    struct st_entry *e;

    if (st == NULL
        || atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) != 1)
        return;
    HASH_FIND_STR(registry, st->name, e);
    if (e != NULL && e->st == st) {
        HASH_DEL(registry, e);
        free(e);
    }
    n_stats--;
    free(st);
}

unsigned
svc_stats_count(void)
{
    return n_stats;
}
