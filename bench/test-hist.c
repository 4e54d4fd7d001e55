/*
 * The latency histogram behind every percentile that bench/ and
 * cqwire-perf print: bucket layout, accuracy against exact sorted
 * percentiles, merging, and the extremes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "hist.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

/* xorshift64*: reproducible values without libc's rand(). */
static uint64_t
rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void
test_hist_small_values_exact(void **state)
{
	struct cqwb_hist *h = cqwb_hist_new();
	uint64_t v;

	(void)state;
	assert_non_null(h);
	/* Below 2 * CQWB_HIST_SUB every bucket holds one value. */
	for (v = 0; v < 2 * CQWB_HIST_SUB; v++) {
		size_t i = cqwb_hist_index(v);

		assert_int_equal(cqwb_hist_bucket_lo(i), v);
		assert_int_equal(cqwb_hist_bucket_hi(i), v);
	}
	cqwb_hist_record(h, 3);
	cqwb_hist_record(h, 5);
	cqwb_hist_record(h, 200);
	assert_int_equal(cqwb_hist_quantile(h, 0.0), 3);
	assert_int_equal(cqwb_hist_quantile(h, 0.5), 5);
	assert_int_equal(cqwb_hist_quantile(h, 1.0), 200);
	assert_int_equal(cqwb_hist_quantile(h, 0.99), 200);
	free(h);
}

static void
test_hist_buckets_tile(void **state)
{
	size_t i;

	(void)state;
	/* Buckets are contiguous, ordered, and each maps back to itself. */
	for (i = 1; i < CQWB_HIST_BUCKETS; i++) {
		uint64_t lo = cqwb_hist_bucket_lo(i);
		uint64_t hi = cqwb_hist_bucket_hi(i);

		assert_true(lo <= hi);
		assert_int_equal(lo, cqwb_hist_bucket_hi(i - 1) + 1);
		assert_int_equal(cqwb_hist_index(lo), i);
		assert_int_equal(cqwb_hist_index(hi), i);
		/* Relative width stays under 1/CQWB_HIST_SUB. */
		assert_true((double)(hi - lo) <= (double)lo / CQWB_HIST_SUB);
	}
	assert_int_equal(cqwb_hist_bucket_hi(CQWB_HIST_BUCKETS - 1),
			 UINT64_MAX);
	assert_int_equal(cqwb_hist_index(UINT64_MAX), CQWB_HIST_BUCKETS - 1);
}

static void
test_hist_quantiles_accurate(void **state)
{
	static const double qs[] = { 0.01, 0.25, 0.5, 0.9, 0.99, 0.999 };
	enum { N = 100000 };
	uint64_t *vals = malloc(N * sizeof(*vals));
	struct cqwb_hist *h = cqwb_hist_new();
	size_t i, k;

	(void)state;
	assert_non_null(vals);
	assert_non_null(h);
	/* Log-uniform from 100 ns to about 10 ms: a latency-like spread. */
	for (i = 0; i < N; i++) {
		unsigned e = 7 + (unsigned)(rng() % 17);

		vals[i] = ((uint64_t)1 << e) + rng() % ((uint64_t)1 << e);
		cqwb_hist_record(h, vals[i]);
	}
	qsort(vals, N, sizeof(*vals), cmp_u64);
	assert_int_equal(h->count, N);
	assert_int_equal(h->min, vals[0]);
	assert_int_equal(h->max, vals[N - 1]);
	for (k = 0; k < sizeof(qs) / sizeof(qs[0]); k++) {
		size_t rank = (size_t)(qs[k] * N + 0.999999);
		double exact = (double)vals[rank - 1];
		double got = (double)cqwb_hist_quantile(h, qs[k]);

		assert_true(got >= exact * (1.0 - 1.0 / CQWB_HIST_SUB));
		assert_true(got <= exact * (1.0 + 1.0 / CQWB_HIST_SUB));
	}
	free(vals);
	free(h);
}

static void
test_hist_merge_equals_pooled(void **state)
{
	struct cqwb_hist *a = cqwb_hist_new(), *b = cqwb_hist_new();
	struct cqwb_hist *all = cqwb_hist_new();
	size_t i;

	(void)state;
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(all);
	for (i = 0; i < 5000; i++) {
		uint64_t v = rng() % 1000000;

		cqwb_hist_record(i % 3 ? a : b, v);
		cqwb_hist_record(all, v);
	}
	cqwb_hist_merge(a, b);
	assert_int_equal(a->count, all->count);
	assert_int_equal(a->min, all->min);
	assert_int_equal(a->max, all->max);
	assert_memory_equal(a->counts, all->counts, sizeof(a->counts));
	assert_int_equal(cqwb_hist_quantile(a, 0.999),
			 cqwb_hist_quantile(all, 0.999));
	/* Merging an empty histogram changes nothing, min included. */
	cqwb_hist_reset(b);
	cqwb_hist_merge(a, b);
	assert_int_equal(a->min, all->min);
	free(a);
	free(b);
	free(all);
}

static void
test_hist_extremes(void **state)
{
	struct cqwb_hist *h = cqwb_hist_new();

	(void)state;
	assert_non_null(h);
	assert_int_equal(cqwb_hist_quantile(h, 0.5), 0);
	assert_true(cqwb_hist_mean(h) == 0.0);
	cqwb_hist_record(h, UINT64_MAX);
	cqwb_hist_record_n(h, 0, 3);
	cqwb_hist_record_n(h, 42, 0);
	assert_int_equal(h->count, 4);
	assert_int_equal(cqwb_hist_quantile(h, 0.75), 0);
	assert_true(cqwb_hist_quantile(h, 0.76) >=
		    cqwb_hist_bucket_lo(CQWB_HIST_BUCKETS - 1));
	assert_int_equal(cqwb_hist_quantile(h, 1.0), UINT64_MAX);
	free(h);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hist_small_values_exact),
		cmocka_unit_test(test_hist_buckets_tile),
		cmocka_unit_test(test_hist_quantiles_accurate),
		cmocka_unit_test(test_hist_merge_equals_pooled),
		cmocka_unit_test(test_hist_extremes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
