/*
 * lathist.h - a log-linear latency histogram in the manner of HdrHistogram.
 *
 * Values are nanoseconds. Below 256 ns every value has its own bucket;
 * above, each power of two is split into 128 buckets, so a reported
 * percentile is within 0.8% of the true sample. Recording is O(1) and
 * allocates nothing; the struct is about 36 KiB, embed or allocate it once.
 */
#ifndef BENCH_LATHIST_H
#define BENCH_LATHIST_H

#include <stdint.h>

#define LATHIST_SUB_BITS 7
#define LATHIST_SUB      (1u << LATHIST_SUB_BITS)
#define LATHIST_MAX_EXP  41 /* values up to 2^41 ns (about 36 min) */
#define LATHIST_BUCKETS  (2 * LATHIST_SUB + (LATHIST_MAX_EXP - LATHIST_SUB_BITS) * LATHIST_SUB)

struct lathist {
    uint64_t count;
    uint64_t min, max;
    double sum;
    uint64_t b[LATHIST_BUCKETS];
};

void lathist_init(struct lathist *h);

/* Record one sample; values beyond the range land in the last bucket. */
void lathist_add(struct lathist *h, uint64_t ns);

/* The value at quantile <q> (0..1): the middle of the bucket that holds
 * it, clamped to [min, max]. 0 when the histogram is empty. */
uint64_t lathist_quantile(const struct lathist *h, double q);

double lathist_mean(const struct lathist *h);

/* Add <src>'s samples to <dst> bucket by bucket, so percentiles of the
 * merge are those of all samples together (never an average of
 * percentiles). <src> is borrowed and left as it was. */
void lathist_merge(struct lathist *dst, const struct lathist *src);

/* For tests: bucket index of a value and the range a bucket covers. */
unsigned lathist_index(uint64_t ns);
void lathist_bucket_range(unsigned idx, uint64_t *lo, uint64_t *hi);

#endif
