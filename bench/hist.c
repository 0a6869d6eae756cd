#include <string.h>

#include "hist.h"

void
hist_init(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

unsigned
hist_index(uint64_t ns)
{
    unsigned msb, e, idx;

    if (ns < 2 * HIST_SUB)
        return (unsigned)ns;
    msb = 63u - (unsigned)__builtin_clzll(ns);
    e = msb - HIST_SUB_BITS; /* >= 1: ns >> e lies in [SUB, 2*SUB) */
    idx = 2 * HIST_SUB + (e - 1) * HIST_SUB
          + (unsigned)((ns >> e) - HIST_SUB);
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

void
hist_bucket_range(unsigned idx, uint64_t *lo, uint64_t *hi)
{
    unsigned e, m;

    if (idx < 2 * HIST_SUB) {
        *lo = *hi = idx;
        return;
    }
    e = (idx - 2 * HIST_SUB) / HIST_SUB + 1;
    m = (idx - 2 * HIST_SUB) % HIST_SUB + HIST_SUB;
    *lo = (uint64_t)m << e;
    *hi = *lo + ((uint64_t)1 << e) - 1;
}

void
hist_add(struct hist *h, uint64_t ns)
{
    h->b[hist_index(ns)]++;
    h->count++;
    h->sum += (double)ns;
    if (ns < h->min)
        h->min = ns;
    if (ns > h->max)
        h->max = ns;
}

uint64_t
hist_quantile(const struct hist *h, double q)
{
    uint64_t rank, seen = 0, lo, hi, mid;
    unsigned i;

    if (h->count == 0)
        return 0;
    if (q <= 0)
        return h->min;
    if (q >= 1)
        return h->max;
    /* The smallest value with at least q of the samples at or below it. */
    rank = (uint64_t)(q * (double)h->count);
    if ((double)rank < q * (double)h->count)
        rank++;
    if (rank == 0)
        rank = 1;
    for (i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank)
            break;
    }
    hist_bucket_range(i < HIST_BUCKETS ? i : HIST_BUCKETS - 1, &lo, &hi);
    mid = lo + (hi - lo) / 2;
    if (mid < h->min)
        mid = h->min;
    if (mid > h->max)
        mid = h->max;
    return mid;
}

double
hist_mean(const struct hist *h)
{
    return h->count > 0 ? h->sum / (double)h->count : 0;
}
