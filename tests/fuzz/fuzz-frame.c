/*
 * Fuzz the frame header decoder (src/common/frame.c, WIRE.md §2.1) as the
 * channel drives it: a byte stream of frames, handed over in chunks whose
 * sizes follow from the first two input bytes. Payloads are skipped, as a
 * caller that reads them straight into its buffer does.
 *
 * Each chunk is copied into a buffer of exactly its size, so that ASan
 * sees a feed that reads past what it was given. A reference decoder,
 * written from WIRE.md and not from frame.c, says where every header
 * starts and ends and what length it carries; the decoder must agree
 * header by header, take no more than it wants, and re-encoding its
 * length with cqw__frame_header() must decode to the same length (and
 * give back the very bytes, for a header in the canonical form).
 */
#include <string.h>

#include "fuzz.h"

#include "cqwire.h"
#include "common/frame.h"

/* One header as WIRE.md §2.1 reads it. */
struct ref_hdr {
	size_t hdr_len; /* 4 or 12 */
	uint64_t len;	/* payload length */
	int canonical;	/* cqw__frame_header(len) writes these bytes */
	int incomplete; /* the stream ends inside this header */
};

static uint64_t
be(const uint8_t *p, size_t n)
{
	uint64_t v = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		v = v << 8 | p[i];
	}
	return v;
}

/* The header at p[0..n) (n may be short: then it is incomplete). */
static void
ref_header(const uint8_t *p, size_t n, struct ref_hdr *h)
{
	uint32_t small;

	memset(h, 0, sizeof(*h));
	h->hdr_len = 4;
	if (n < 4) {
		h->incomplete = 1;
		return;
	}
	small = (uint32_t)be(p, 4);
	if (small == 0xffffffffu) {
		/* -1: the large form, an 8-byte unsigned length follows. */
		h->hdr_len = 12;
		if (n < 12) {
			h->incomplete = 1;
			return;
		}
		h->len = be(p + 4, 8);
		h->canonical = h->len > 0x7fffffffu;
	} else if (small & 0x80000000u) {
		/* Any other negative length is an empty message. */
		h->len = 0;
	} else {
		h->len = small;
		h->canonical = 1;
	}
}

/* Re-encode len and decode it again in one feed. */
static void
check_reencode(const uint8_t *orig, const struct ref_hdr *h)
{
	uint8_t out[CQW__HDR_LARGE + 1];
	struct cqw__dec d;
	size_t n;

	memset(out, 0x5a, sizeof(out));
	n = cqw__frame_header(out, h->len);
	FUZZ_CHECK(n ==
		   (h->len > CQW__SMALL_MAX ? CQW__HDR_LARGE : CQW__HDR_SMALL));
	FUZZ_CHECK(out[CQW__HDR_LARGE] == 0x5a);
	if (h->canonical) {
		FUZZ_CHECK(n == h->hdr_len && memcmp(out, orig, n) == 0);
	}
	cqw__dec_reset(&d);
	/* Offer a byte more than the header: feed must leave it. */
	FUZZ_CHECK(cqw__dec_feed(&d, out, n + 1) == n);
	FUZZ_CHECK(cqw__dec_want(&d) == 0 && d.len == h->len);
}

static void
check_state(const struct cqw__dec *d)
{
	FUZZ_CHECK(d->need == CQW__HDR_SMALL || d->need == CQW__HDR_LARGE);
	FUZZ_CHECK(d->got <= d->need);
	FUZZ_CHECK(cqw__dec_want(d) == (size_t)(d->need - d->got));
	FUZZ_CHECK(cqw__dec_started(d) == (d->got != 0));
}

/* Chunk sizes: the seed picks a bound, then each size is random below it. */
static size_t
next_chunk(uint32_t *seed, unsigned mode, size_t left)
{
	static const size_t bound[8] = { 1, 2, 3, 5, 13, 64, 4096, 0 };
	size_t b = bound[mode & 7];
	size_t k;

	if (b == 0) {
		return left; /* the whole rest at once */
	}
	k = 1 + fuzz_rand(seed) % b;
	return k < left ? k : left;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	uint32_t seed;
	unsigned mode;
	const uint8_t *s;
	size_t n, pos = 0, hdr_at = 0;
	uint64_t pay_left = 0;
	struct cqw__dec d;
	struct ref_hdr h;
	int in_payload = 0;

	mode = fuzz_byte(&in);
	seed = (uint32_t)fuzz_byte(&in) << 8 | mode;
	n = fuzz_take(&in, in.n, &s);

	cqw__dec_reset(&d);
	check_state(&d);
	FUZZ_CHECK(cqw__dec_eof(&d) == CQW_EOF);
	while (pos < n) {
		size_t k = next_chunk(&seed, mode, n - pos), off = 0;
		uint8_t *chunk = malloc(k);

		FUZZ_CHECK(chunk != NULL);
		memcpy(chunk, s + pos, k);
		while (off < k) {
			size_t want, take;

			if (in_payload) {
				take = pay_left < k - off ? (size_t)pay_left
							  : k - off;
				pay_left -= take;
				off += take;
				if (pay_left == 0) {
					in_payload = 0;
					cqw__dec_reset(&d);
					hdr_at = pos + off;
				}
				continue;
			}
			want = cqw__dec_want(&d);
			FUZZ_CHECK(want > 0);
			/* An empty feed takes nothing and changes nothing. */
			if (mode & 0x80) {
				FUZZ_CHECK(cqw__dec_feed(&d, chunk + off, 0) ==
					   0);
				FUZZ_CHECK(cqw__dec_want(&d) == want);
			}
			take = cqw__dec_feed(&d, chunk + off, k - off);
			check_state(&d);
			FUZZ_CHECK(take > 0 && take <= k - off);
			/* The -1 marker may pull the 8 length bytes in too. */
			FUZZ_CHECK(take <=
				   want + CQW__HDR_LARGE - CQW__HDR_SMALL);
			FUZZ_CHECK(memcmp(d.hdr, s + hdr_at, d.got) == 0);
			off += take;
			if (cqw__dec_want(&d) > 0) {
				/* Not done: then this chunk is used up. */
				FUZZ_CHECK(off == k);
				continue;
			}
			ref_header(s + hdr_at, n - hdr_at, &h);
			FUZZ_CHECK(!h.incomplete);
			FUZZ_CHECK(pos + off == hdr_at + h.hdr_len);
			FUZZ_CHECK(d.got == h.hdr_len && d.len == h.len);
			check_reencode(s + hdr_at, &h);
			pay_left = d.len;
			in_payload = 1;
			if (pay_left == 0) {
				in_payload = 0;
				cqw__dec_reset(&d);
				hdr_at = pos + off;
			}
		}
		free(chunk);
		pos += k;
	}
	/* End of input: at a boundary, inside a header or a payload. */
	if (in_payload) {
		FUZZ_CHECK(cqw__dec_eof(&d) == CQW_ETRUNC);
	} else if (hdr_at == n) {
		FUZZ_CHECK(!cqw__dec_started(&d));
		FUZZ_CHECK(cqw__dec_eof(&d) == CQW_EOF);
	} else {
		ref_header(s + hdr_at, n - hdr_at, &h);
		FUZZ_CHECK(h.incomplete);
		FUZZ_CHECK(cqw__dec_started(&d));
		FUZZ_CHECK(cqw__dec_eof(&d) == CQW_ETRUNC);
	}
	return 0;
}
