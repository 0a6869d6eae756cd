#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"
#include "srcrules.h"
#include "stats.h"

const char *const stats_fail_text[STATS_FAIL__COUNT] = {
    [STATS_FAIL_REFUSED] = "refused",
    [STATS_FAIL_TIMEOUT] = "timeout",
    [STATS_FAIL_ERROR] = "error",
    [STATS_FAIL_NO_BACKEND] = "no_backend",
    [STATS_FAIL_LIMIT] = "limit",
    [STATS_FAIL_RESOURCE] = "resource",
};

const char *const stats_pp_text[STATS_PP__COUNT] = {
    [STATS_PP_TIMEOUT] = "timeout",
    [STATS_PP_INVALID] = "invalid",
    [STATS_PP_CLOSED] = "closed",
};

/* kube-proxy's sync histogram is exponential from 1 ms; its network
 * programming one is coarse, up to minutes. Ours follow the same shape. */
const char *const stats_src_text[STATS_SRC__COUNT] = {
    [STATS_SRC_DENY] = "deny",
    [STATS_SRC_NOT_ALLOWED] = "not_allowed",
    [STATS_SRC_MAX] = "max_per_source",
    [STATS_SRC_RATE] = "rate_per_source",
};

const char *const stats_udp_text[STATS_UDP__COUNT] = {
    [STATS_UDP_MAX_FLOWS] = "max_flows",
    [STATS_UDP_NO_BACKEND] = "no_backend",
    [STATS_UDP_SEND_ERROR] = "send_error",
    [STATS_UDP_REFUSED] = "refused",
    [STATS_UDP_RESOURCE] = "resource",
    [STATS_UDP_TOO_LARGE] = "too_large",
};

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

static int
svc_stats_match(const void *obj, const void *key, size_t klen)
{
    const char *name = ((const struct svc_stats *)obj)->name;

    return strlen(name) == klen && memcmp(name, key, klen) == 0;
}

static struct registry stats_reg =
    REGISTRY_INIT(struct svc_stats, refs, reg_hash, svc_stats_match);

static void *
svc_stats_make(const void *key, size_t klen, void *arg)
{
    struct svc_stats *st = calloc(1, sizeof(*st) + klen + 1);

    (void)arg;
    if (st == NULL)
        return NULL;
    memcpy(st->name, key, klen); /* the NUL is calloc's */
    atomic_init(&st->refs, 1);
    return st;
}

struct svc_stats *
svc_stats_get(const char *name)
{
    size_t n = strnlen(name, SVC_STATS_NAME_MAX - 1);

    return registry_get(&stats_reg, name, n, svc_stats_make, NULL);
}

void
svc_stats_unref(struct svc_stats *st)
{
    if (st != NULL
        && registry_unref(&stats_reg, st, st->name, strlen(st->name))) {
        srcrules_table_free(st->src);
        free(atomic_load_explicit(&st->ctr, memory_order_acquire));
        free(st);
    }
}

struct svc_ctr *
svc_ctr(struct svc_stats *st)
{
    static struct svc_ctr sink;
    struct svc_ctr *k = atomic_load_explicit(&st->ctr, memory_order_acquire);
    struct svc_ctr *fresh;

    if (k != NULL)
        return k;
    if ((fresh = calloc(1, sizeof(*fresh))) == NULL)
        return &sink;
    if (atomic_compare_exchange_strong_explicit(
            &st->ctr, &k, fresh, memory_order_acq_rel, memory_order_acquire))
        return fresh;
    free(fresh); /* another thread's came first: <k> is it */
    return k;
}

const struct svc_ctr *
svc_ctr_read(const struct svc_stats *st)
{
    static const struct svc_ctr zero;
    const struct svc_ctr *k =
        atomic_load_explicit(&st->ctr, memory_order_acquire);

    return k != NULL ? k : &zero;
}

unsigned
svc_stats_count(void)
{
    return registry_count(&stats_reg);
}

/* ---- process-wide counters ---------------------------------------------- */

struct stats_proc stats_proc;

void
stats_set_generation(uint64_t generation)
{
    atomic_store_explicit(&stats_proc.generation, generation,
                          memory_order_relaxed);
}

void
stats_sync_done(double duration_s, double wall_s)
{
    hist_observe(&stats_proc.sync, &hist_sync, duration_s);
    if (wall_s > 0)
        atomic_store_explicit(&stats_proc.last_sync, wall_s,
                              memory_order_relaxed);
}

void
stats_network_programming(double latency_s)
{
    hist_observe(&stats_proc.programming, &hist_programming, latency_s);
}

void
stats_worker_delay(double delay_s)
{
    hist_observe(&stats_proc.worker_delay, &hist_connect, delay_s);
}

void
stats_redirect_unmatched(void)
{
    stats_inc(&stats_proc.redirect_unmatched);
}

void
stats_accept_paused(void)
{
    stats_inc(&stats_proc.accept_paused);
}

void
stats_pipes(int delta)
{
    atomic_fetch_add_explicit(&stats_proc.pipes, delta, memory_order_relaxed);
}

void
stats_pipe_denied(void)
{
    stats_inc(&stats_proc.pipes_denied);
}

void
stats_watch_restart(void)
{
    stats_inc(&stats_proc.watch_restarts);
}

void
stats_watch_relist(void)
{
    stats_inc(&stats_proc.relists);
}

/* ---- API objects skipped ------------------------------------------------ */

/* Entries are appended (strings first, then the published count) and
 * never removed, so a reader sees only complete entries. */
static struct {
    const char *kind, *reason;
    atomic_uint_fast64_t total;
} api_skips[STATS_API_SKIP_MAX];
static atomic_size_t n_api_skips;

int
stats_api_skipped(const char *kind, const char *reason, uint64_t total)
{
    size_t i, n = atomic_load_explicit(&n_api_skips, memory_order_relaxed);

    for (i = 0; i < n; i++)
        if (strcmp(api_skips[i].kind, kind) == 0
            && strcmp(api_skips[i].reason, reason) == 0)
            break;
    if (i == STATS_API_SKIP_MAX)
        return -1;
    if (i == n) {
        api_skips[i].kind = kind;
        api_skips[i].reason = reason;
        atomic_store_explicit(&api_skips[i].total, total,
                              memory_order_relaxed);
        atomic_store_explicit(&n_api_skips, n + 1, memory_order_release);
        return 0;
    }
    atomic_store_explicit(&api_skips[i].total, total, memory_order_relaxed);
    return 0;
}

size_t
stats_api_skips(struct stats_api_skip *out, size_t max)
{
    size_t i, n = atomic_load_explicit(&n_api_skips, memory_order_acquire);

    for (i = 0; i < n && i < max; i++) {
        out[i].kind = api_skips[i].kind;
        out[i].reason = api_skips[i].reason;
        out[i].total = stats_get(&api_skips[i].total);
    }
    return i;
}
