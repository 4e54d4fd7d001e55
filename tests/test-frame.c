/*
 * Frame headers (src/common/frame.c, WIRE.md §2.1): the encoder's bytes at
 * the size boundaries, the incremental decoder fed whole and byte by byte,
 * the -1 large-frame marker, negative lengths, end of file at and inside a
 * header, and that feed() takes only the header's bytes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "cqwire.h"
#include "common/frame.h"

/* Encode n and compare with the expected bytes. */
static void
t_expect_header(uint64_t n, const uint8_t *want, size_t want_len)
{
	uint8_t out[CQW__HDR_LARGE];
	size_t len;

	memset(out, 0xaa, sizeof(out));
	len = cqw__frame_header(out, n);
	assert_int_equal(len, want_len);
	assert_memory_equal(out, want, want_len);
}

/* Feed the whole of hdr in one call; it must take all and complete. */
static void
t_decode_whole(const uint8_t *hdr, size_t len, uint64_t want)
{
	struct cqw__dec d;

	cqw__dec_reset(&d);
	assert_int_equal(cqw__dec_feed(&d, hdr, len), len);
	assert_int_equal(cqw__dec_want(&d), 0);
	assert_true(cqw__dec_started(&d));
	assert_true(d.len == want);
}

/*
 * Feed hdr one byte at a time: each call takes exactly one byte and the
 * header is complete only after the last.
 */
static void
t_decode_bytewise(const uint8_t *hdr, size_t len, uint64_t want)
{
	struct cqw__dec d;
	size_t i;

	cqw__dec_reset(&d);
	for (i = 0; i < len; i++) {
		assert_true(cqw__dec_want(&d) > 0);
		assert_int_equal(cqw__dec_feed(&d, hdr + i, 1), 1);
	}
	assert_int_equal(cqw__dec_want(&d), 0);
	assert_true(d.len == want);
}

static void
test_frame_header_zero(void **state)
{
	static const uint8_t want[] = { 0, 0, 0, 0 };

	(void)state;
	t_expect_header(0, want, sizeof(want));
}

static void
test_frame_header_five(void **state)
{
	static const uint8_t want[] = { 0, 0, 0, 5 };

	(void)state;
	t_expect_header(5, want, sizeof(want));
}

static void
test_frame_header_16384(void **state)
{
	static const uint8_t want[] = { 0x00, 0x00, 0x40, 0x00 };

	(void)state;
	t_expect_header(16384, want, sizeof(want));
}

/* Exactly 0x7fffffff still fits the 4-byte form (WIRE.md §2.1). */
static void
test_frame_header_small_max(void **state)
{
	static const uint8_t want[] = { 0x7f, 0xff, 0xff, 0xff };

	(void)state;
	t_expect_header(0x7fffffffu, want, sizeof(want));
}

static void
test_frame_header_large_min(void **state)
{
	static const uint8_t want[] = { 0xff, 0xff, 0xff, 0xff, 0x00, 0x00,
					0x00, 0x00, 0x80, 0x00, 0x00, 0x00 };

	(void)state;
	t_expect_header(0x80000000u, want, sizeof(want));
}

/* Both halves of the 8-byte length land in the right place. */
static void
test_frame_header_large_high_bits(void **state)
{
	static const uint8_t want[] = { 0xff, 0xff, 0xff, 0xff, 0x01, 0x02,
					0x03, 0x04, 0x05, 0x06, 0x07, 0x08 };

	(void)state;
	t_expect_header(0x0102030405060708ull, want, sizeof(want));
}

static void
test_frame_decode_whole(void **state)
{
	static const uint8_t h0[] = { 0, 0, 0, 0 };
	static const uint8_t h5[] = { 0, 0, 0, 5 };
	static const uint8_t h16k[] = { 0x00, 0x00, 0x40, 0x00 };
	static const uint8_t hmax[] = { 0x7f, 0xff, 0xff, 0xff };
	static const uint8_t hbig[] = { 0xff, 0xff, 0xff, 0xff, 0x00, 0x00,
					0x00, 0x00, 0x80, 0x00, 0x00, 0x00 };

	(void)state;
	t_decode_whole(h0, sizeof(h0), 0);
	t_decode_whole(h5, sizeof(h5), 5);
	t_decode_whole(h16k, sizeof(h16k), 16384);
	t_decode_whole(hmax, sizeof(hmax), 0x7fffffffu);
	t_decode_whole(hbig, sizeof(hbig), 0x80000000u);
}

static void
test_frame_decode_bytewise(void **state)
{
	static const uint8_t h5[] = { 0, 0, 0, 5 };
	static const uint8_t hmax[] = { 0x7f, 0xff, 0xff, 0xff };
	static const uint8_t hbig[] = { 0xff, 0xff, 0xff, 0xff, 0x01, 0x02,
					0x03, 0x04, 0x05, 0x06, 0x07, 0x08 };

	(void)state;
	t_decode_bytewise(h5, sizeof(h5), 5);
	t_decode_bytewise(hmax, sizeof(hmax), 0x7fffffffu);
	t_decode_bytewise(hbig, sizeof(hbig), 0x0102030405060708ull);
}

/* What the decoder asks for, step by step, across the -1 marker. */
static void
test_frame_decode_want_steps(void **state)
{
	static const uint8_t hbig[] = { 0xff, 0xff, 0xff, 0xff, 0, 0,
					0,    0,    0,	  0,	0, 9 };
	struct cqw__dec d;

	(void)state;
	cqw__dec_reset(&d);
	assert_int_equal(cqw__dec_want(&d), 4);
	assert_false(cqw__dec_started(&d));
	assert_int_equal(cqw__dec_feed(&d, hbig, 3), 3);
	assert_int_equal(cqw__dec_want(&d), 1);
	assert_true(cqw__dec_started(&d));
	assert_int_equal(cqw__dec_feed(&d, hbig + 3, 1), 1);
	assert_int_equal(cqw__dec_want(&d), 8);
	assert_int_equal(cqw__dec_feed(&d, hbig + 4, 5), 5);
	assert_int_equal(cqw__dec_want(&d), 3);
	assert_int_equal(cqw__dec_feed(&d, hbig + 9, 3), 3);
	assert_int_equal(cqw__dec_want(&d), 0);
	assert_true(d.len == 9);
}

/* CPython >= 3.8 accepts the marker for any size, even a tiny one. */
static void
test_frame_decode_marker_small_length(void **state)
{
	static const uint8_t h[] = { 0xff, 0xff, 0xff, 0xff, 0, 0,
				     0,	   0,	 0,    0,    0, 5 };
	static const uint8_t h0[] = { 0xff, 0xff, 0xff, 0xff, 0, 0,
				      0,    0,	  0,	0,    0, 0 };

	(void)state;
	t_decode_whole(h, sizeof(h), 5);
	t_decode_bytewise(h, sizeof(h), 5);
	t_decode_whole(h0, sizeof(h0), 0);
}

/* Negative lengths other than -1 are an empty message (as Python). */
static void
test_frame_decode_negative_is_empty(void **state)
{
	static const uint8_t fe[] = { 0xff, 0xff, 0xff, 0xfe };
	static const uint8_t min[] = { 0x80, 0x00, 0x00, 0x00 };
	static const uint8_t fe_then[] = { 0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 3 };
	struct cqw__dec d;

	(void)state;
	t_decode_whole(fe, sizeof(fe), 0);
	t_decode_bytewise(fe, sizeof(fe), 0);
	t_decode_whole(min, sizeof(min), 0);

	/* It is a 4-byte header: the next frame's header is not taken. */
	cqw__dec_reset(&d);
	assert_int_equal(cqw__dec_feed(&d, fe_then, sizeof(fe_then)), 4);
	assert_int_equal(cqw__dec_want(&d), 0);
	assert_true(d.len == 0);
	cqw__dec_reset(&d);
	assert_int_equal(cqw__dec_feed(&d, fe_then + 4, 4), 4);
	assert_true(d.len == 3);
}

static void
test_frame_eof_at_boundary(void **state)
{
	static const uint8_t h5[] = { 0, 0, 0, 5 };
	struct cqw__dec d;

	(void)state;
	cqw__dec_reset(&d);
	assert_int_equal(cqw__dec_eof(&d), CQW_EOF);

	/* After a frame, reset brings us back to a boundary. */
	cqw__dec_feed(&d, h5, sizeof(h5));
	cqw__dec_reset(&d);
	assert_false(cqw__dec_started(&d));
	assert_int_equal(cqw__dec_want(&d), 4);
	assert_int_equal(cqw__dec_eof(&d), CQW_EOF);
}

static void
test_frame_eof_inside_header(void **state)
{
	static const uint8_t h5[] = { 0, 0, 0, 5 };
	struct cqw__dec d;
	size_t i;

	(void)state;
	for (i = 1; i < sizeof(h5); i++) {
		cqw__dec_reset(&d);
		cqw__dec_feed(&d, h5, i);
		assert_int_equal(cqw__dec_eof(&d), CQW_ETRUNC);
	}
}

/* Our choice: EOF right after a complete header is a cut frame. */
static void
test_frame_eof_after_header(void **state)
{
	static const uint8_t h5[] = { 0, 0, 0, 5 };
	struct cqw__dec d;

	(void)state;
	cqw__dec_reset(&d);
	cqw__dec_feed(&d, h5, sizeof(h5));
	assert_int_equal(cqw__dec_want(&d), 0);
	assert_int_equal(cqw__dec_eof(&d), CQW_ETRUNC);
}

static void
test_frame_eof_inside_extension(void **state)
{
	static const uint8_t h[] = { 0xff, 0xff, 0xff, 0xff, 0, 0,
				     0,	   0,	 0,    0,    0, 5 };
	struct cqw__dec d;
	size_t i;

	(void)state;
	/* Right after the marker and after each extension byte. */
	for (i = 4; i < sizeof(h); i++) {
		cqw__dec_reset(&d);
		assert_int_equal(cqw__dec_feed(&d, h, i), i);
		assert_true(cqw__dec_want(&d) > 0);
		assert_int_equal(cqw__dec_eof(&d), CQW_ETRUNC);
	}
}

/* Bytes after the header belong to the payload: feed must leave them. */
static void
test_frame_feed_takes_only_header(void **state)
{
	static const uint8_t small[] = { 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o' };
	static const uint8_t large[] = { 0xff, 0xff, 0xff, 0xff, 0,  0,
					 0,    0,    0,	   0,	 0,  5,
					 'h',  'e',  'l',  'l',	 'o' };
	struct cqw__dec d;

	(void)state;
	cqw__dec_reset(&d);
	assert_int_equal(cqw__dec_feed(&d, small, sizeof(small)), 4);
	assert_true(d.len == 5);

	cqw__dec_reset(&d);
	assert_int_equal(cqw__dec_feed(&d, large, sizeof(large)), 12);
	assert_true(d.len == 5);

	/* In two pieces: the second call takes only what is missing. */
	cqw__dec_reset(&d);
	assert_int_equal(cqw__dec_feed(&d, small, 2), 2);
	assert_int_equal(cqw__dec_feed(&d, small + 2, sizeof(small) - 2), 2);
	assert_true(d.len == 5);

	cqw__dec_reset(&d);
	assert_int_equal(cqw__dec_feed(&d, large, 6), 6);
	assert_int_equal(cqw__dec_feed(&d, large + 6, sizeof(large) - 6), 6);
	assert_true(d.len == 5);

	/* A complete header takes nothing more. */
	assert_int_equal(cqw__dec_feed(&d, small, sizeof(small)), 0);
	assert_true(d.len == 5);

	/* Feeding nothing takes nothing and changes nothing. */
	cqw__dec_reset(&d);
	assert_int_equal(cqw__dec_feed(&d, small, 0), 0);
	assert_int_equal(cqw__dec_want(&d), 4);
	assert_false(cqw__dec_started(&d));
}

/* Whatever the encoder writes, the decoder reads back. */
static void
test_frame_round_trip(void **state)
{
	static const uint64_t sizes[] = {
		0,	     1,		  255,	       256,
		16383,	     16384,	  16385,       0x7ffffffeu,
		0x7fffffffu, 0x80000000u, 0xffffffffu, 0x100000000ull,
		UINT64_MAX,
	};
	uint8_t hdr[CQW__HDR_LARGE];
	size_t i, len;

	(void)state;
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		len = cqw__frame_header(hdr, sizes[i]);
		assert_int_equal(len, sizes[i] > 0x7fffffffu ? 12 : 4);
		t_decode_whole(hdr, len, sizes[i]);
		t_decode_bytewise(hdr, len, sizes[i]);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame_header_zero),
		cmocka_unit_test(test_frame_header_five),
		cmocka_unit_test(test_frame_header_16384),
		cmocka_unit_test(test_frame_header_small_max),
		cmocka_unit_test(test_frame_header_large_min),
		cmocka_unit_test(test_frame_header_large_high_bits),
		cmocka_unit_test(test_frame_decode_whole),
		cmocka_unit_test(test_frame_decode_bytewise),
		cmocka_unit_test(test_frame_decode_want_steps),
		cmocka_unit_test(test_frame_decode_marker_small_length),
		cmocka_unit_test(test_frame_decode_negative_is_empty),
		cmocka_unit_test(test_frame_eof_at_boundary),
		cmocka_unit_test(test_frame_eof_inside_header),
		cmocka_unit_test(test_frame_eof_after_header),
		cmocka_unit_test(test_frame_eof_inside_extension),
		cmocka_unit_test(test_frame_feed_takes_only_header),
		cmocka_unit_test(test_frame_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
