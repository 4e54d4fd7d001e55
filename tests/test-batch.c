/*
 * Batches: cqw_recv_batch() takes every whole message that is there,
 * in order, after waiting for the first; its timeout; end of file and a
 * cut frame after messages; buffers too short for the first or a later
 * message; a frame whose tail is late (neither waited for nor torn); and
 * frames of every shape in one stream. cqw_send_batch() in a thread
 * feeds 1000 messages.
 *
 * The receive batch has no loop form; the messages the main thread sends
 * and the single receives between batches go through the I/O layer of
 * t-conn.h, so the batch reads frames written by loop ops in the loop
 * runs (test-batch-poll, test-batch-uring...) and by sync calls in
 * test-batch-sync.
 *
 * On Windows the message-level cases run on named pipes and the cases
 * of raw frame bytes on a byte stream (t_stream_pair: TCP).
 */
#include "t-conn.h"

#include <pthread.h>
#ifndef _WIN32
#include <sys/time.h>
#endif

/* ------------------------------------------------------------------
 * Batches
 */

#define T_BATCH_N 1000

/*
 * Message i: its sequence number, then i % 23 bytes of pattern i. A
 * thread sends: it uses the sync call (a loop has one issuer, the main
 * thread), whatever the run's mode.
 */
static void *
t_thread_send_batch(void *arg)
{
	struct t_batch_sender *s = arg;
	static uint8_t bufs[T_BATCH_N][4 + 23];
	struct cqw_msg *m = calloc(T_BATCH_N, sizeof(*m));
	uint32_t i;

	if (m == NULL) {
		s->result = CQW_ENOMEM;
		return NULL;
	}
	for (i = 0; i < T_BATCH_N; i++) {
		memcpy(bufs[i], &i, 4);
		t_pattern_fill(bufs[i] + 4, i % 23, i);
		m[i].buf = bufs[i];
		m[i].len = 4 + i % 23;
	}
	s->result = cqw_send_batch(s->c, m, T_BATCH_N);
	free(m);
	return NULL;
}

static void
test_batch_thousand_in_order(void **state)
{
	struct t_batch_sender s;
	struct cqw_msg m[64];
	uint8_t bufs[64][32];
	cqw_conn *a, *b;
	pthread_t th;
	uint32_t next, seq;
	size_t i;
	int k, n;

	(void)state;
	for (i = 0; i < T_NPAIRS; i++) {
		t_pipe(&a, &b, t_pair_flags[i]);
		s.c = b;
		s.result = 1;
		assert_int_equal(
		    pthread_create(&th, NULL, t_thread_send_batch, &s), 0);
		next = 0;
		while (next < T_BATCH_N) {
			for (k = 0; k < 64; k++) {
				m[k].buf = bufs[k];
				m[k].cap = sizeof(bufs[k]);
				m[k].len = 0;
			}
			n = cqw_recv_batch(a, m, 64, 5000);
			assert_true(n > 0 && n <= 64);
			for (k = 0; k < n; k++, next++) {
				memcpy(&seq, bufs[k], 4);
				assert_int_equal(seq, next);
				assert_int_equal(m[k].len, 4 + next % 23);
				assert_true(t_pattern_check(bufs[k] + 4,
							    next % 23, next));
			}
		}
		assert_int_equal(pthread_join(th, NULL), 0);
		T_OK(s.result);
		T_EXPECT(cqw_poll(a, 0), 0);
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

static void
test_batch_recv_timeout(void **state)
{
	struct cqw_msg m[2];
	uint8_t buf[2][8];
	cqw_conn *a, *b;
	int64_t t0;
	int r;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX);
	m[0].buf = buf[0];
	m[1].buf = buf[1];
	m[0].cap = m[1].cap = 8;
	T_EXPECT(cqw_recv_batch(a, m, 2, 0), 0);
	t0 = t_timed_start(150 + 2000, "cqw_recv_batch(150 ms)");
	r = cqw_recv_batch(a, m, 2, 150);
	t_timed_check(t0, 100, 150 + 2000);
	T_EXPECT(r, 0);
	t_send_str(b, "x");
	T_EXPECT(cqw_recv_batch(a, m, 2, 150), 1);
	assert_int_equal(m[0].len, 1);
	assert_memory_equal(buf[0], "x", 1);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

/* Messages before end of file come first; the EOF comes next call. */
static void
test_batch_eof_after_messages(void **state)
{
	struct cqw_msg m[4];
	uint8_t bufs[4][8];
	cqw_conn *a, *b;
	size_t i;
	int k;

	(void)state;
	for (i = 0; i < T_NPAIRS; i++) {
		t_pipe(&a, &b, t_pair_flags[i]);
		for (k = 0; k < 4; k++) {
			m[k].buf = bufs[k];
			m[k].cap = sizeof(bufs[k]);
		}
		t_send_str(b, "a");
		t_send_str(b, "bc");
		cqw_conn_free(b);
		T_EXPECT(cqw_recv_batch(a, m, 4, 1000), 2);
		assert_int_equal(m[0].len, 1);
		assert_int_equal(m[1].len, 2);
		assert_memory_equal(bufs[1], "bc", 2);
		T_EXPECT(cqw_recv_batch(a, m, 4, 1000), CQW_EOF);
		cqw_conn_free(a);
	}
}

static void
test_batch_first_too_short(void **state)
{
	uint8_t msg[100], small[10], big[128];
	struct cqw_msg m[2];
	cqw_conn *a, *b;

	(void)state;
	t_pattern_fill(msg, sizeof(msg), 100);
	t_pipe(&a, &b, CQW_DUPLEX);
	T_OK(t_send(b, msg, sizeof(msg)));
	m[0].buf = small;
	m[0].cap = sizeof(small);
	m[0].len = 0;
	m[1] = m[0];
	T_EXPECT(cqw_recv_batch(a, m, 2, 1000), CQW_ETOOSHORT);
	assert_int_equal(m[0].len, 100);
	/* Kept: a big enough buffer gets it. */
	m[0].buf = big;
	m[0].cap = sizeof(big);
	T_EXPECT(cqw_recv_batch(a, m, 1, 1000), 1);
	assert_int_equal(m[0].len, 100);
	assert_memory_equal(big, msg, sizeof(msg));
	cqw_conn_free(a);
	cqw_conn_free(b);
}

/* A later message that does not fit ends the batch and is kept. */
static void
test_batch_later_too_short_kept(void **state)
{
	uint8_t msg[100], bufs[3][10];
	struct cqw_msg m[3];
	cqw_conn *a, *b;
	int k;

	(void)state;
	t_pattern_fill(msg, sizeof(msg), 7);
	t_pipe(&a, &b, CQW_DUPLEX);
	t_send_str(b, "abcde");
	T_OK(t_send(b, msg, sizeof(msg)));
	t_send_str(b, "z");
	for (k = 0; k < 3; k++) {
		m[k].buf = bufs[k];
		m[k].cap = sizeof(bufs[k]);
	}
	T_EXPECT(cqw_recv_batch(a, m, 3, 1000), 1);
	assert_int_equal(m[0].len, 5);
	assert_memory_equal(bufs[0], "abcde", 5);
	T_EXPECT(cqw_recv_batch(a, m, 3, 1000), CQW_ETOOSHORT);
	assert_int_equal(m[0].len, 100);
	t_recv_expect(a, msg, sizeof(msg));
	t_recv_str(a, "z");
	cqw_conn_free(a);
	cqw_conn_free(b);
}

/*
 * A SIGALRM that completes a frame later: tests that must not wait for a
 * frame's tail arm it, so that waiting shows up as a wrong count instead
 * of a hang. (On Windows a timer-queue timer writes the tail.)
 */
#ifdef _WIN32
static cqw_fd t_alarm_fd = -1;
static volatile LONG t_alarm_done;
static const char *t_alarm_tail;
static size_t t_alarm_len;

static VOID CALLBACK
t_alarm_complete_frame(PVOID arg, BOOLEAN fired)
{
	(void)arg;
	(void)fired;
	if (InterlockedCompareExchange(&t_alarm_done, 1, 0) == 0) {
		(void)t_write_all(t_alarm_fd, t_alarm_tail, t_alarm_len);
	}
}

static int
t_batch_alarm(cqw_conn *a, cqw_conn *b, struct cqw_msg *m, size_t n,
	      int timeout_ms, int alarm_ms, const char *tail)
{
	HANDLE timer;
	int r;

	t_alarm_fd = cqw_conn_fileno(b);
	t_alarm_tail = tail;
	t_alarm_len = strlen(tail);
	t_alarm_done = 0;
	assert_true(CreateTimerQueueTimer(&timer, NULL, t_alarm_complete_frame,
					  NULL, (DWORD)alarm_ms, 0,
					  WT_EXECUTEONLYONCE));
	r = cqw_recv_batch(a, m, n, timeout_ms);
	/* Returns once a callback under way has finished. */
	assert_true(DeleteTimerQueueTimer(NULL, timer, INVALID_HANDLE_VALUE));
	if (InterlockedCompareExchange(&t_alarm_done, 1, 0) == 0) {
		t_raw(b, tail, strlen(tail));
	}
	return r;
}
#else
static int t_alarm_fd = -1;
static volatile sig_atomic_t t_alarm_done;
static const char *t_alarm_tail;
static size_t t_alarm_len;

static void
t_alarm_complete_frame(int sig)
{
	(void)sig;
	if (!t_alarm_done) {
		t_alarm_done = 1;
		(void)!write(t_alarm_fd, t_alarm_tail, t_alarm_len);
	}
}

/*
 * cqw_recv_batch(a, m, n, timeout_ms) while SIGALRM writes tail through
 * b after alarm_ms; the tail is written now if the alarm did not fire.
 */
static int
t_batch_alarm(cqw_conn *a, cqw_conn *b, struct cqw_msg *m, size_t n,
	      int timeout_ms, int alarm_ms, const char *tail)
{
	struct itimerval tv = { { 0, 0 },
				{ alarm_ms / 1000, (alarm_ms % 1000) * 1000 } };
	struct itimerval off = { { 0, 0 }, { 0, 0 } };
	struct sigaction sa, old;
	int r;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = t_alarm_complete_frame;
	sigemptyset(&sa.sa_mask);
	t_alarm_fd = cqw_conn_fileno(b);
	t_alarm_tail = tail;
	t_alarm_len = strlen(tail);
	t_alarm_done = 0;
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
	assert_int_equal(setitimer(ITIMER_REAL, &tv, NULL), 0);
	r = cqw_recv_batch(a, m, n, timeout_ms);
	setitimer(ITIMER_REAL, &off, NULL);
	sigaction(SIGALRM, &old, NULL);
	if (!t_alarm_done) {
		t_alarm_done = 1;
		t_raw(b, tail, strlen(tail));
	}
	return r;
}
#endif

/*
 * "then take every further message that can be read without blocking":
 * a frame whose tail has not arrived must not make the batch wait. If
 * it does, the alarm completes the frame and the batch comes back with
 * 2 instead of 1.
 */
static void
test_batch_partial_frame_does_not_block(void **state)
{
	static const uint8_t wire[] = { 0, 0, 0, 3, 'o', 'n', 'e',
					0, 0, 0, 5, 't', 'w' };
	struct cqw_msg m[4];
	uint8_t bufs[4][8];
	cqw_conn *a, *b;
	int k, n, first_ok, second_ok;
	int64_t got;
	size_t i;

	(void)state;
	for (i = 0; i < T_NSTREAMS; i++) {
		t_stream_pair(&a, &b, t_pair_flags[i]);
		for (k = 0; k < 4; k++) {
			m[k].buf = bufs[k];
			m[k].cap = sizeof(bufs[k]);
		}
		t_raw(b, wire, sizeof(wire));
		n = t_batch_alarm(a, b, m, 4, 0, 500, "o!!");
		first_ok =
		    n >= 1 && m[0].len == 3 && memcmp(bufs[0], "one", 3) == 0;
		if (n == 1) {
			got = t_recv_into(a, bufs[1], sizeof(bufs[1]), 0, NULL);
			second_ok =
			    got == 5 && memcmp(bufs[1], "two!!", 5) == 0;
		} else {
			second_ok = n == 2 && m[1].len == 5;
		}
		cqw_conn_free(a);
		cqw_conn_free(b);
		T_EXPECT(n, 1);
		assert_true(first_ok);
		assert_true(second_ok);
	}
}

/*
 * "wait up to timeout_ms for the first": bytes of a frame are not yet a
 * message, so a first frame whose tail is late ends in a timeout (0),
 * and the frame is kept for the next call.
 */
static void
test_batch_timeout_bounds_partial_first(void **state)
{
	static const uint8_t wire[] = { 0, 0, 0, 5, 'h', 'e' };
	struct cqw_msg m[2];
	uint8_t bufs[2][8];
	cqw_conn *a, *b;
	int k, n, later_ok;
	size_t i;

	(void)state;
	for (i = 0; i < T_NSTREAMS; i++) {
		t_stream_pair(&a, &b, t_pair_flags[i]);
		for (k = 0; k < 2; k++) {
			m[k].buf = bufs[k];
			m[k].cap = sizeof(bufs[k]);
			m[k].len = 0;
		}
		t_raw(b, wire, sizeof(wire));
		n = t_batch_alarm(a, b, m, 2, 150, 800, "llo");
		if (n == 0) {
			later_ok = cqw_recv_batch(a, m, 2, 1000) == 1 &&
				   m[0].len == 5 &&
				   memcmp(bufs[0], "hello", 5) == 0;
		} else {
			later_ok = n == 1 && m[0].len == 5;
		}
		cqw_conn_free(a);
		cqw_conn_free(b);
		T_EXPECT(n, 0);
		assert_true(later_ok);
	}
}

/*
 * A frame cut by end of file after some whole messages: the messages
 * come first, and the next call reports the cut (CQW_ETRUNC), not a
 * clean CQW_EOF.
 */
static void
test_batch_truncated_frame_after_messages(void **state)
{
	static const uint8_t mid_header[] = { 0, 0 };
	static const uint8_t mid_payload[] = { 0, 0, 0, 5, 'h', 'e' };
	static const struct {
		const uint8_t *wire;
		size_t len;
		int wine_waits; /* see below */
	} cases[] = {
		{ mid_header, sizeof(mid_header), 0 },
		{ mid_payload, sizeof(mid_payload), 1 },
	};
	struct cqw_msg m[4];
	uint8_t bufs[4][8];
	cqw_conn *a, *b;
	size_t i, c;
	int k, first, second;

	(void)state;
	for (c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		for (i = 0; i < T_NSTREAMS; i++) {
			t_stream_pair(&a, &b, t_pair_flags[i]);
			for (k = 0; k < 4; k++) {
				m[k].buf = bufs[k];
				m[k].cap = sizeof(bufs[k]);
			}
			t_send_str(b, "a");
			t_send_str(b, "bc");
			t_raw(b, cases[c].wire, cases[c].len);
			cqw_conn_free(b);
			first = cqw_recv_batch(a, m, 4, 1000);
			second = cqw_recv_batch(a, m, 4, 1000);
			cqw_conn_free(a);
			T_EXPECT(first, 2);
			if (cases[c].wine_waits && t_under_wine()) {
				/*
				 * wine: WSAPoll reports no POLLHUP after the
				 * peer's FIN while bytes are queued (checked
				 * with a probe: POLLRDNORM only), so a small
				 * frame cut by a peer that left is waited for
				 * until the deadline (src/win/stream.c).
				 * Windows reports POLLHUP: CQW_ETRUNC there.
				 */
				T_EXPECT(second, 0);
			} else {
				T_EXPECT(second, CQW_ETRUNC);
			}
		}
	}
}

/*
 * Frames of every shape in one batch stream: empty, exactly the buffer,
 * a negative length (empty), the large-frame marker, then small ones.
 */
static void
test_batch_mixed_frames(void **state)
{
	static const uint8_t wire[] = {
		0,    0,    0,	  3,	'a', 'b', 'c', /* "abc" */
		0,    0,    0,	  0,		       /* "" */
		0,    0,    0,	  8,	'1', '2', '3',
		'4',  '5',  '6',  '7',	'8', /* exactly cap */
		0xff, 0xff, 0xff, 0xfe,	     /* "" */
		0xff, 0xff, 0xff, 0xff, 0,   0,	  0,
		0,    0,    0,	  0,	2,   'h', 'i', /* marker: "hi" */
		0,    0,    0,	  1,	'z',	       /* "z" */
	};
	static const char *const want[] = {
		"abc", "", "12345678", "", "hi", "z"
	};
	struct cqw_msg m[8];
	uint8_t bufs[8][8];
	cqw_conn *a, *b;
	size_t i, got;
	int k, n;

	(void)state;
	for (i = 0; i < T_NSTREAMS; i++) {
		t_stream_pair(&a, &b, t_pair_flags[i]);
		t_raw(b, wire, sizeof(wire));
		got = 0;
		while (got < 6) {
			for (k = 0; k < 8; k++) {
				m[k].buf = bufs[k];
				m[k].cap = sizeof(bufs[k]);
			}
			n = cqw_recv_batch(a, m, 8, 1000);
			assert_true(n > 0 && got + (size_t)n <= 6);
			for (k = 0; k < n; k++, got++) {
				assert_int_equal(m[k].len, strlen(want[got]));
				assert_memory_equal(bufs[k], want[got],
						    m[k].len);
			}
		}
		T_EXPECT(cqw_recv_batch(a, m, 8, 0), 0);
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_batch_thousand_in_order),
		cmocka_unit_test(test_batch_recv_timeout),
		cmocka_unit_test(test_batch_eof_after_messages),
		cmocka_unit_test(test_batch_first_too_short),
		cmocka_unit_test(test_batch_later_too_short_kept),
		cmocka_unit_test(test_batch_partial_frame_does_not_block),
		cmocka_unit_test(test_batch_timeout_bounds_partial_first),
		cmocka_unit_test(test_batch_truncated_frame_after_messages),
		cmocka_unit_test(test_batch_mixed_frames),
	};

	t_io_setup();
	return cmocka_run_group_tests(tests, NULL, t_io_teardown);
}
