#include <string.h>

#include "lathist.h"

void
lathist_init(struct lathist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

unsigned
lathist_index(uint64_t ns)
{
    unsigned msb, e, idx;

    if (ns < 2 * LATHIST_SUB)
        return (unsigned)ns;
    msb = 63u - (unsigned)__builtin_clzll(ns);
    e = msb - LATHIST_SUB_BITS; /* >= 1: ns >> e lies in [SUB, 2*SUB) */
    idx = 2 * LATHIST_SUB + (e - 1) * LATHIST_SUB
          + (unsigned)((ns >> e) - LATHIST_SUB);
    return idx < LATHIST_BUCKETS ? idx : LATHIST_BUCKETS - 1;
}

void
lathist_bucket_range(unsigned idx, uint64_t *lo, uint64_t *hi)
{
    unsigned e, m;

    if (idx < 2 * LATHIST_SUB) {
        *lo = *hi = idx;
        return;
    }
    e = (idx - 2 * LATHIST_SUB) / LATHIST_SUB + 1;
    m = (idx - 2 * LATHIST_SUB) % LATHIST_SUB + LATHIST_SUB;
    *lo = (uint64_t)m << e;
    *hi = *lo + ((uint64_t)1 << e) - 1;
}

void
lathist_add(struct lathist *h, uint64_t ns)
{
    h->b[lathist_index(ns)]++;
    h->count++;
    h->sum += (double)ns;
    if (ns < h->min)
        h->min = ns;
    if (ns > h->max)
        h->max = ns;
}

uint64_t
lathist_quantile(const struct lathist *h, double q)
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
    for (i = 0; i < LATHIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank)
            break;
    }
    lathist_bucket_range(i < LATHIST_BUCKETS ? i : LATHIST_BUCKETS - 1, &lo, &hi);
    mid = lo + (hi - lo) / 2;
    if (mid < h->min)
        mid = h->min;
    if (mid > h->max)
        mid = h->max;
    return mid;
}

double
lathist_mean(const struct lathist *h)
{
    return h->count > 0 ? h->sum / (double)h->count : 0;
}

void
lathist_merge(struct lathist *dst, const struct lathist *src)
{
    unsigned i;

    if (src->count == 0)
        return;
    for (i = 0; i < LATHIST_BUCKETS; i++)
        dst->b[i] += src->b[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}
