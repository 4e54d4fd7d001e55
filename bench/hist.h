/*
 * A latency histogram in the HDR style: log-linear buckets, so every
 * recorded value keeps about two significant digits (a relative error
 * below 1/128) from nanoseconds to hours, with constant memory and O(1)
 * recording. Histograms of the same shape merge by adding counts, so
 * rounds and processes can be pooled before percentiles are taken.
 *
 * Values below 2^CQWB_HIST_SUB_BITS are kept exactly. Above, each power of
 * two [2^e, 2^(e+1)) is cut into 2^CQWB_HIST_SUB_BITS equal sub-buckets.
 */
#ifndef CQWB_HIST_H
#define CQWB_HIST_H

#include <stddef.h>
#include <stdint.h>

#define CQWB_HIST_SUB_BITS 7
#define CQWB_HIST_SUB (1u << CQWB_HIST_SUB_BITS)
/* Exact values, then one row of sub-buckets per exponent up to 63. */
#define CQWB_HIST_BUCKETS ((64 - CQWB_HIST_SUB_BITS + 1) * CQWB_HIST_SUB)

struct cqwb_hist {
	uint64_t count;
	uint64_t min;
	uint64_t max;
	double sum;
	uint64_t counts[CQWB_HIST_BUCKETS];
};

/* Empty the histogram. */
void cqwb_hist_reset(struct cqwb_hist *h);
/* A new empty histogram from malloc(), or NULL. Free it with free(). */
struct cqwb_hist *cqwb_hist_new(void);

/* The bucket that holds v, and the range [lo, hi] of values it holds. */
size_t cqwb_hist_index(uint64_t v);
uint64_t cqwb_hist_bucket_lo(size_t idx);
uint64_t cqwb_hist_bucket_hi(size_t idx);

void cqwb_hist_record(struct cqwb_hist *h, uint64_t v);
void cqwb_hist_record_n(struct cqwb_hist *h, uint64_t v, uint64_t n);
/* dst += src. */
void cqwb_hist_merge(struct cqwb_hist *dst, const struct cqwb_hist *src);

/*
 * The value at quantile q (0 <= q <= 1): the middle of the bucket that
 * holds the ceil(q * count)-th smallest value, clamped to [min, max].
 * 0 for an empty histogram.
 */
uint64_t cqwb_hist_quantile(const struct cqwb_hist *h, double q);
double cqwb_hist_mean(const struct cqwb_hist *h);

#endif
