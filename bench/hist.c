/*
 * Log-linear histogram; see hist.h for the bucket layout. Bucket index of
 * a value v >= 2^S (S = CQWB_HIST_SUB_BITS) with top bit e: the row is
 * e - S + 1 and the column is the S bits below the top bit.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hist.h"

void
cqwb_hist_reset(struct cqwb_hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

struct cqwb_hist *
cqwb_hist_new(void)
{
	struct cqwb_hist *h = malloc(sizeof(*h));

	if (h != NULL) {
		cqwb_hist_reset(h);
	}
	return h;
}

size_t
cqwb_hist_index(uint64_t v)
{
	unsigned e;

	if (v < CQWB_HIST_SUB) {
		return (size_t)v;
	}
	e = 63u - (unsigned)__builtin_clzll(v);
	return (size_t)(e - CQWB_HIST_SUB_BITS + 1) * CQWB_HIST_SUB +
	       (size_t)((v >> (e - CQWB_HIST_SUB_BITS)) & (CQWB_HIST_SUB - 1));
}

uint64_t
cqwb_hist_bucket_lo(size_t idx)
{
	size_t row = idx / CQWB_HIST_SUB, col = idx % CQWB_HIST_SUB;
	unsigned shift;

	if (row == 0) {
		return (uint64_t)idx;
	}
	shift = (unsigned)row - 1;
	return ((uint64_t)CQWB_HIST_SUB + col) << shift;
}

uint64_t
cqwb_hist_bucket_hi(size_t idx)
{
	size_t row = idx / CQWB_HIST_SUB;

	if (row == 0) {
		return (uint64_t)idx;
	}
	/* Width 2^(row-1); the last bucket ends at UINT64_MAX. */
	return cqwb_hist_bucket_lo(idx) + ((uint64_t)1 << (row - 1)) - 1;
}

void
cqwb_hist_record_n(struct cqwb_hist *h, uint64_t v, uint64_t n)
{
	if (n == 0) {
		return;
	}
	h->counts[cqwb_hist_index(v)] += n;
	h->count += n;
	h->sum += (double)v * (double)n;
	if (v < h->min) {
		h->min = v;
	}
	if (v > h->max) {
		h->max = v;
	}
}

void
cqwb_hist_record(struct cqwb_hist *h, uint64_t v)
{
	cqwb_hist_record_n(h, v, 1);
}

void
cqwb_hist_merge(struct cqwb_hist *dst, const struct cqwb_hist *src)
{
	size_t i;

	if (src->count == 0) {
		return;
	}
	for (i = 0; i < CQWB_HIST_BUCKETS; i++) {
		dst->counts[i] += src->counts[i];
	}
	dst->count += src->count;
	dst->sum += src->sum;
	if (src->min < dst->min) {
		dst->min = src->min;
	}
	if (src->max > dst->max) {
		dst->max = src->max;
	}
}

uint64_t
cqwb_hist_quantile(const struct cqwb_hist *h, double q)
{
	uint64_t rank, seen = 0, lo, hi, mid;
	size_t i;

	if (h->count == 0) {
		return 0;
	}
	if (q <= 0) {
		return h->min;
	}
	if (q >= 1) {
		return h->max;
	}
	rank = (uint64_t)ceil(q * (double)h->count);
	if (rank == 0) {
		rank = 1;
	}
	for (i = 0; i < CQWB_HIST_BUCKETS; i++) {
		seen += h->counts[i];
		if (seen >= rank) {
			break;
		}
	}
	lo = cqwb_hist_bucket_lo(i);
	hi = cqwb_hist_bucket_hi(i);
	mid = lo + (hi - lo) / 2;
	if (mid < h->min) {
		mid = h->min;
	}
	if (mid > h->max) {
		mid = h->max;
	}
	return mid;
}

double
cqwb_hist_mean(const struct cqwb_hist *h)
{
	return h->count > 0 ? h->sum / (double)h->count : 0.0;
}
