/*
 * What every fuzz target shares: the libFuzzer entry point's prototype
 * (the targets are also built without libFuzzer, into the replay test),
 * a check that reports and aborts, and a small input reader.
 *
 * A failed check calls abort(): libFuzzer then saves the input as a
 * crash, and the replay test fails with the target's message on stderr.
 */
#ifndef CQW_FUZZ_H
#define CQW_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK_MSG(cond, msg)                                        \
	do {                                                             \
		if (!(cond)) {                                           \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", \
				__FILE__, __LINE__, msg);                \
			abort();                                         \
		}                                                        \
	} while (0)
#define FUZZ_CHECK(cond) FUZZ_CHECK_MSG(cond, #cond)

/* The input, taken from the front; reads past its end give zeros. */
struct fuzz_in {
	const uint8_t *p;
	size_t n;
};

static inline uint8_t
fuzz_byte(struct fuzz_in *in)
{
	uint8_t b = 0;

	if (in->n > 0) {
		b = in->p[0];
		in->p++;
		in->n--;
	}
	return b;
}

/* Up to want bytes: returns how many were there (*out points at them). */
static inline size_t
fuzz_take(struct fuzz_in *in, size_t want, const uint8_t **out)
{
	size_t n = want < in->n ? want : in->n;

	*out = in->p;
	in->p += n;
	in->n -= n;
	return n;
}

/*
 * A deterministic pseudo-random stream (xorshift32) for choices that
 * follow from a seed in the input, such as chunk sizes.
 */
static inline uint32_t
fuzz_rand(uint32_t *s)
{
	uint32_t x = *s ? *s : 0x9e3779b9u;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*s = x;
	return x;
}

#endif
