/*
 * Frames over real descriptors: the large-frame marker, negative
 * lengths read as empty messages, and end of file at every position of
 * a frame (boundary, inside a header or its 8-byte extension, right after
 * a header, inside a payload), on every shape of pair, by both receive
 * calls. The pairs are byte streams (t_stream_pair: POSIX pipes; TCP on
 * Windows, where pipes carry messages and no headers). Where cqwire deliberately differs from Python the tests check
 * cqwire: EOF right after a complete header is CQW_ETRUNC.
 *
 * The exact bytes go on the wire with raw write(); the receives go
 * through the I/O layer of t-conn.h (sync, then loop ops per backend).
 * The pure decoder is tested in test-frame.c.
 */
#include "t-conn.h"

/* ------------------------------------------------------------------
 * Frames on the wire: large-frame marker, negative lengths, EOF rules
 */

static void
test_frame_io_large_marker_received(void **state)
{
	static const uint8_t wire[] = {
		0xff, 0xff, 0xff, 0xff, 0,   0,	  0,	0,    0,    0,	  0,
		5,    'h',  'e',  'l',	'l', 'o', 0xff, 0xff, 0xff, 0xff, 0,
		0,    0,    0,	  0,	0,   0,	  2,	'h',  'i'
	};
	uint8_t buf[8];
	cqw_conn *a, *b;
	size_t i;

	(void)state;
	for (i = 0; i < T_NSTREAMS; i++) {
		t_stream_pair(&a, &b, t_pair_flags[i]);
		t_raw(b, wire, sizeof(wire));
		t_send_str(b, "after");
		t_recv_str(a, "hello");
		T_EXPECT(t_recv_into(a, buf, sizeof(buf), 0, NULL), 2);
		assert_memory_equal(buf, "hi", 2);
		t_recv_str(a, "after");
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

/* ff ff ff fe: an empty message, and the next frame reads normally. */
static void
test_frame_io_negative_length_is_empty(void **state)
{
	static const uint8_t wire[] = { 0xff, 0xff, 0xff, 0xfe, 0,    0,  0,
					3,    'a',  'b',  'c',	0x80, 0,  0,
					0,    0,    0,	  0,	1,    'z' };
	cqw_conn *a, *b;
	size_t i;

	(void)state;
	for (i = 0; i < T_NSTREAMS; i++) {
		t_stream_pair(&a, &b, t_pair_flags[i]);
		t_raw(b, wire, sizeof(wire));
		t_recv_expect(a, "", 0);
		t_recv_str(a, "abc");
		t_recv_expect(a, "", 0);
		t_recv_str(a, "z");
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

/*
 * Put wire[0..len) on a fresh pair, close the writer and expect the
 * first receive to return want (after `frames` whole messages).
 */
static void
t_eof_case(const uint8_t *wire, size_t len, int frames, int want)
{
	uint8_t buf[64];
	cqw_conn *a, *b;
	void *p = NULL;
	size_t i;
	int k, into;

	for (i = 0; i < T_NSTREAMS; i++) {
		for (into = 0; into < 2; into++) {
			t_stream_pair(&a, &b, t_pair_flags[i]);
			t_raw(b, wire, len);
			cqw_conn_free(b);
			for (k = 0; k < frames; k++) {
				assert_true(t_recv_into(a, buf, sizeof(buf), 0,
							NULL) >= 0);
			}
			if (into) {
				T_EXPECT(
				    t_recv_into(a, buf, sizeof(buf), 0, NULL),
				    want);
			} else {
				T_EXPECT(t_recv(a, &p, CQW_NONE), want);
			}
			cqw_conn_free(a);
		}
	}
}

static void
test_frame_io_eof_at_boundary(void **state)
{
	static const uint8_t wire[] = { 0, 0, 0, 2, 'h', 'i' };

	(void)state;
	t_eof_case(wire, 0, 0, CQW_EOF);
	t_eof_case(wire, sizeof(wire), 1, CQW_EOF);
}

static void
test_frame_io_eof_mid_header(void **state)
{
	static const uint8_t wire[] = { 0, 0, 0, 2, 'h', 'i', 0, 0 };
	static const uint8_t mark[] = { 0xff, 0xff, 0xff, 0xff, 0, 0, 0 };

	(void)state;
	t_eof_case(wire, 1, 0, CQW_ETRUNC);
	t_eof_case(wire, 3, 0, CQW_ETRUNC);
	t_eof_case(wire, sizeof(wire), 1, CQW_ETRUNC);
	/* Inside the 8-byte extension. */
	t_eof_case(mark, sizeof(mark), 0, CQW_ETRUNC);
}

/* Our choice (Python says EOFError here): a cut frame is a cut frame. */
static void
test_frame_io_eof_after_header(void **state)
{
	static const uint8_t wire[] = { 0, 0, 0, 5 };
	static const uint8_t mark[] = { 0xff, 0xff, 0xff, 0xff };
	static const uint8_t ext[] = { 0xff, 0xff, 0xff, 0xff, 0, 0,
				       0,    0,	   0,	 0,    0, 5 };

	(void)state;
	t_eof_case(wire, sizeof(wire), 0, CQW_ETRUNC);
	t_eof_case(mark, sizeof(mark), 0, CQW_ETRUNC);
	t_eof_case(ext, sizeof(ext), 0, CQW_ETRUNC);
}

static void
test_frame_io_eof_mid_payload(void **state)
{
	static const uint8_t wire[] = { 0, 0, 0, 5, 'h', 'e' };
	static const uint8_t two[] = { 0, 0, 0, 1, 'a', 0, 0, 0, 5, 'h' };

	(void)state;
	t_eof_case(wire, sizeof(wire), 0, CQW_ETRUNC);
	t_eof_case(two, sizeof(two), 1, CQW_ETRUNC);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame_io_large_marker_received),
		cmocka_unit_test(test_frame_io_negative_length_is_empty),
		cmocka_unit_test(test_frame_io_eof_at_boundary),
		cmocka_unit_test(test_frame_io_eof_mid_header),
		cmocka_unit_test(test_frame_io_eof_after_header),
		cmocka_unit_test(test_frame_io_eof_mid_payload),
	};

	t_io_setup();
	return cmocka_run_group_tests(tests, NULL, t_io_teardown);
}
