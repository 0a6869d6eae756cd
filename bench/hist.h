/*
 * hist.h - a log-linear latency histogram in the manner of HdrHistogram.
 *
 * Values are nanoseconds. Below 256 ns every value has its own bucket;
 * above, each power of two is split into 128 buckets, so a reported
 * percentile is within 0.8% of the true sample. Recording is O(1) and
 * allocates nothing; the struct is about 36 KiB, embed or allocate it once.
 */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 7
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_MAX_EXP  41 /* values up to 2^41 ns (about 36 min) */
#define HIST_BUCKETS  (2 * HIST_SUB + (HIST_MAX_EXP - HIST_SUB_BITS) * HIST_SUB)

struct hist {
    uint64_t count;
    uint64_t min, max;
    double sum;
    uint64_t b[HIST_BUCKETS];
};

void hist_init(struct hist *h);

/* Record one sample; values beyond the range land in the last bucket. */
void hist_add(struct hist *h, uint64_t ns);

/* The value at quantile <q> (0..1): the middle of the bucket that holds
 * it, clamped to [min, max]. 0 when the histogram is empty. */
uint64_t hist_quantile(const struct hist *h, double q);

double hist_mean(const struct hist *h);

/* For tests: bucket index of a value and the range a bucket covers. */
unsigned hist_index(uint64_t ns);
void hist_bucket_range(unsigned idx, uint64_t *lo, uint64_t *hi);

#endif
