/*
 * A signal in the middle of a frame, with a signal check that asks to
 * stop (what a Python binding sets for Ctrl-C): the receive returns
 * CQW_EINTR and keeps what it consumed, so that the next receive, into
 * another buffer, hands up the whole message, with no byte that nobody
 * wrote; a send returns CQW_EINTR only before its first byte.
 *
 * The signal comes from an interval timer, with a handler installed
 * without SA_RESTART, so that blocking calls really see EINTR.
 */
#include "t-util.h"
#include "t-loop.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/time.h>

static volatile sig_atomic_t t_signals;

static void
t_on_alarm(int sig)
{
	(void)sig;
	t_signals++;
}

static int
t_stop(void *arg)
{
	(void)arg;
	return 1;
}

/* SIGALRM every ms milliseconds, interrupting (no SA_RESTART). */
static void
t_alarms(int ms)
{
	struct itimerval it = { { 0, ms * 1000 }, { 0, ms * 1000 } };
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = t_on_alarm;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGALRM, &sa, NULL), 0);
	assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
}

static void
t_alarms_off(void)
{
	struct itimerval it;

	memset(&it, 0, sizeof(it));
	assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
	signal(SIGALRM, SIG_DFL);
}

/* A header for len bytes and the first half of the payload, raw. */
static void
t_half_frame(int fd, const uint8_t *payload, uint32_t len)
{
	uint8_t h[4] = { (uint8_t)(len >> 24), (uint8_t)(len >> 16),
			 (uint8_t)(len >> 8), (uint8_t)len };

	assert_int_equal(t_write_all(fd, h, sizeof(h)), 0);
	assert_int_equal(t_write_all(fd, payload, len / 2), 0);
}

static const unsigned t_kinds[] = { 0, CQW_DUPLEX };

/* recv_bytes_into: interrupted mid-payload, then into a fresh buffer. */
static void
test_signal_frames_into_keeps_part(void **state)
{
	enum { LEN = 1000 };
	uint8_t payload[LEN], first[LEN], second[LEN];
	cqw_conn *rx, *tx;
	int64_t t0;
	size_t i;
	int wfd;

	(void)state;
	t_pattern_fill(payload, sizeof(payload), 5);
	for (i = 0; i < 2; i++) {
		T_RESULT(cqw_pipe(&rx, &tx, t_kinds[i]), 0);
		wfd = (int)cqw_conn_fileno(tx);
		t_half_frame(wfd, payload, LEN);
		cqw_set_signal_check(t_stop, NULL);
		t_signals = 0;
		t_alarms(20);
		t0 = t_now_ms();
		T_RESULT(cqw_recv_bytes_into(rx, first, sizeof(first), 0, NULL),
			 CQW_EINTR);
		t_alarms_off();
		cqw_set_signal_check(NULL, NULL);
		assert_in_range(t_now_ms() - t0, 0, 2000);
		assert_true(t_signals > 0);
		/* The caller's first buffer is gone; a new one gets it all. */
		memset(first, 0xee, sizeof(first));
		memset(second, 0xee, sizeof(second));
		assert_int_equal(t_write_all(wfd, payload + LEN / 2, LEN / 2),
				 0);
		T_RESULT(
		    cqw_recv_bytes_into(rx, second, sizeof(second), 0, NULL),
		    LEN);
		assert_memory_equal(second, payload, LEN);
		cqw_conn_free(rx);
		cqw_conn_free(tx);
	}
}

/* recv_bytes: the same through the allocating receive. */
static void
test_signal_frames_bytes_keeps_part(void **state)
{
	enum { LEN = 3000 };
	uint8_t payload[LEN];
	cqw_conn *rx, *tx;
	void *msg = NULL, *hog;
	size_t i;
	int wfd;

	(void)state;
	t_pattern_fill(payload, sizeof(payload), 9);
	for (i = 0; i < 2; i++) {
		T_RESULT(cqw_pipe(&rx, &tx, t_kinds[i]), 0);
		wfd = (int)cqw_conn_fileno(tx);
		t_half_frame(wfd, payload, LEN);
		cqw_set_signal_check(t_stop, NULL);
		t_alarms(20);
		T_RESULT(cqw_recv_bytes(rx, &msg, CQW_NONE), CQW_EINTR);
		t_alarms_off();
		cqw_set_signal_check(NULL, NULL);
		/* Whatever the failed call freed is not the next one's. */
		hog = malloc(LEN);
		assert_non_null(hog);
		memset(hog, 0xee, LEN);
		assert_int_equal(t_write_all(wfd, payload + LEN / 2, LEN / 2),
				 0);
		T_RESULT(cqw_recv_bytes(rx, &msg, CQW_NONE), LEN);
		assert_memory_equal(msg, payload, LEN);
		cqw_free(msg);
		free(hog);
		cqw_conn_free(rx);
		cqw_conn_free(tx);
	}
}

/* At a frame boundary, CQW_EINTR consumes nothing at all. */
static void
test_signal_frames_boundary_consumes_nothing(void **state)
{
	uint8_t buf[16];
	cqw_conn *rx, *tx;
	size_t i;

	(void)state;
	for (i = 0; i < 2; i++) {
		T_RESULT(cqw_pipe(&rx, &tx, t_kinds[i]), 0);
		cqw_set_signal_check(t_stop, NULL);
		t_alarms(20);
		T_RESULT(cqw_recv_bytes_into(rx, buf, sizeof(buf), 0, NULL),
			 CQW_EINTR);
		t_alarms_off();
		cqw_set_signal_check(NULL, NULL);
		T_RESULT(cqw_send_bytes(tx, "after", 5), 0);
		T_RESULT(cqw_recv_bytes_into(rx, buf, sizeof(buf), 0, NULL), 5);
		assert_memory_equal(buf, "after", 5);
		cqw_conn_free(rx);
		cqw_conn_free(tx);
	}
}

static int t_stop_calls;

/* Says stop once, then no more (as PyErr_CheckSignals after a signal). */
static int
t_stop_once(void *arg)
{
	(void)arg;
	return t_stop_calls++ == 0;
}

/* A reap interrupted by a signal returns CQW_EINTR: the check is asked once. */
static void
test_signal_frames_reap_asks_check_once(void **state)
{
	static const enum cqw_backend backends[] = { CQW_BACKEND_POLL,
						     CQW_BACKEND_URING };
	struct cqw_loop_opts opts = { 0 };
	struct cqw_op op, *done[2];
	cqw_conn *a, *b;
	cqw_loop *loop;
	char buf[8];
	int64_t t0;
	size_t i;

	(void)state;
	for (i = 0; i < 2; i++) {
		opts.backend = backends[i];
		if (cqw_loop_new(&loop, &opts) != 0) {
			continue; /* not built here: the other backend runs */
		}
		T_RESULT(cqw_pipe(&a, &b, CQW_DUPLEX), 0);
		t_op(&op, CQW_OP_RECV, b, buf, sizeof(buf), NULL);
		T_RESULT(cqw_submit(loop, &op), 0);
		t_stop_calls = 0;
		cqw_set_signal_check(t_stop_once, NULL);
		t_alarms(100);
		t0 = t_now_ms();
		T_RESULT(cqw_reap(loop, done, 2, 3000), CQW_EINTR);
		t_alarms_off();
		cqw_set_signal_check(NULL, NULL);
		assert_in_range(t_now_ms() - t0, 50, 2500);
		assert_int_equal(t_stop_calls, 1);
		/* The receive is still in flight and still gets its message. */
		T_RESULT(cqw_send_bytes(a, "late", 4), 0);
		t_reap_one(loop, &op);
		T_RESULT(op.result, 4);
		cqw_conn_free(a);
		cqw_conn_free(b);
		cqw_loop_free(loop);
	}
}

static int
t_drain_later(void *arg)
{
	cqw_conn **ends = arg, *rx = ends[0];
	char buf[64];
	int n = 0;

	cqw_conn_free(ends[1]); /* the end of file must come from the parent */
	t_sleep_ms(300);
	while (cqw_recv_bytes_into(rx, buf, sizeof(buf), 0, NULL) == 28) {
		n++;
	}
	return n == 256 ? 0 : 1;
}

/*
 * A batch whose first chunk (128 messages) is out when a signal comes
 * finishes: CQW_EINTR would tell the caller to send all again (review:
 * 128 messages were on the wire when it said CQW_EINTR).
 */
static void
test_signal_frames_batch_after_first_chunk_finishes(void **state)
{
	static char payload[28];
	struct cqw_msg m[256];
	cqw_conn *rx, *tx, *ends[2];
	pid_t pid;
	size_t i;

	(void)state;
	T_RESULT(cqw_pipe(&rx, &tx, 0), 0);
	/* 128 frames of 32 bytes fill a one-page pipe exactly. */
	assert_int_equal(fcntl((int)cqw_conn_fileno(tx), F_SETPIPE_SZ, 4096),
			 4096);
	for (i = 0; i < 256; i++) {
		m[i].buf = payload;
		m[i].len = sizeof(payload);
	}
	ends[0] = rx;
	ends[1] = tx;
	pid = t_fork_child(t_drain_later, ends);
	cqw_conn_free(rx);
	cqw_set_signal_check(t_stop, NULL);
	t_alarms(20);
	T_RESULT(cqw_send_batch(tx, m, 256), 0);
	t_alarms_off();
	cqw_set_signal_check(NULL, NULL);
	cqw_conn_free(tx);
	t_wait_child(pid);
}

/*
 * A batch without a deadline waiting for a frame that stalls half-way
 * can be interrupted, and loses nothing (review: it napped forever and
 * never asked the check).
 */
static void
test_signal_frames_batch_stalled_frame_interruptible(void **state)
{
	uint8_t payload[100], bufs[2][128];
	struct cqw_msg m[2];
	cqw_conn *rx, *tx;
	int64_t t0;
	size_t i;
	int wfd;

	(void)state;
	t_pattern_fill(payload, sizeof(payload), 13);
	for (i = 0; i < 2; i++) {
		T_RESULT(cqw_pipe(&rx, &tx, t_kinds[i]), 0);
		wfd = (int)cqw_conn_fileno(tx);
		t_half_frame(wfd, payload, sizeof(payload));
		m[0].buf = bufs[0];
		m[0].cap = sizeof(bufs[0]);
		m[1].buf = bufs[1];
		m[1].cap = sizeof(bufs[1]);
		cqw_set_signal_check(t_stop, NULL);
		t_alarms(200);
		t0 = t_now_ms();
		T_RESULT(cqw_recv_batch(rx, m, 2, -1), CQW_EINTR);
		t_alarms_off();
		cqw_set_signal_check(NULL, NULL);
		assert_in_range(t_now_ms() - t0, 100, 3000);
		assert_int_equal(t_write_all(wfd, payload + sizeof(payload) / 2,
					     sizeof(payload) / 2),
				 0);
		T_RESULT(cqw_recv_batch(rx, m, 2, 2000), 1);
		assert_int_equal(m[0].len, sizeof(payload));
		assert_memory_equal(bufs[0], payload, sizeof(payload));
		cqw_conn_free(rx);
		cqw_conn_free(tx);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_signal_frames_into_keeps_part),
		cmocka_unit_test(test_signal_frames_bytes_keeps_part),
		cmocka_unit_test(test_signal_frames_boundary_consumes_nothing),
		cmocka_unit_test(test_signal_frames_reap_asks_check_once),
		cmocka_unit_test(
		    test_signal_frames_batch_after_first_chunk_finishes),
		cmocka_unit_test(
		    test_signal_frames_batch_stalled_frame_interruptible),
	};

	signal(SIGPIPE, SIG_DFL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
