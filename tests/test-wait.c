/*
 * Readiness: cqw_poll() (after CPython's _TestPoll: a poll consumes
 * nothing, a partial header is readiness, frames never merge, empty
 * messages) and cqw_wait() (TestWait: timeouts, a connection and a raw
 * descriptor in one call, every ready item reported, bad items, four
 * readers to end of file). Readiness is a sync-only call: runs once.
 *
 * On Windows the pairs are message-mode named pipes (empty messages are
 * WIRE.md §7.4's case there), the tests of raw header bytes use a byte
 * stream (t_stream_pair: TCP), the peers are threads (t_peer_start), and
 * the raw waitable item is an event.
 */
#include "t-conn.h"

/* ------------------------------------------------------------------
 * poll() (_TestPoll)
 */

static int
t_child_poll_only(void *arg)
{
	T_CHILD_CHECK(cqw_poll(arg, 5000) == 1);
	return 0;
}

/* test_boundaries: a child that only polls consumes nothing. */
static void
test_poll_boundaries(void **state)
{
	static const uint8_t frame[] = { 0,   0,   0,	10,  'a', 'b', 'c',
					 'd', 'e', 'f', 'g', 'h', 'i', 'j' };
	cqw_conn *a, *b;
	t_peer peer;
	size_t i;

	(void)state;
	/* Duplex and simplex pipes; on Windows the one stream (TCP). */
	for (i = 0; i < (T_NSTREAMS > 1 ? 2 : 1); i++) {
#ifdef _WIN32
		t_stream_pair(&a, &b, CQW_DUPLEX);
#else
		t_pipe(&a, &b, i ? 0 : CQW_DUPLEX);
#endif
		t_raw(b, frame, 7);
		peer = t_peer_start(t_child_poll_only, a);
		t_peer_join(peer);
		assert_int_equal(t_unread(a), 7);
		t_raw(b, frame + 7, sizeof(frame) - 7);
		t_recv_str(a, "abcdefghij");
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

/* A partial header makes poll() true; recv then waits for the rest. */
static void
test_poll_partial_header(void **state)
{
	cqw_conn *a, *b;

	(void)state;
	t_stream_pair(&a, &b, CQW_DUPLEX);
	t_raw(b, "\0\0", 2);
	T_EXPECT(cqw_poll(a, 0), 1);
	T_EXPECT(cqw_poll(a, 0), 1);
	t_raw(b, "\0\1z", 3);
	t_recv_str(a, "z");
	T_EXPECT(cqw_poll(a, 0), 0);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

static void
test_poll_dont_merge(void **state)
{
	cqw_conn *a, *b;
	size_t i;

	(void)state;
	for (i = 0; i < T_NPAIRS; i++) {
		t_pipe(&a, &b, t_pair_flags[i]);
		t_send_str(b, "a");
		t_send_str(b, "b");
		t_send_str(b, "cd");
		T_EXPECT(cqw_poll(a, 0), 1);
		t_recv_str(a, "a");
		T_EXPECT(cqw_poll(a, 0), 1);
		t_recv_str(a, "b");
		T_EXPECT(cqw_poll(a, 0), 1);
		t_recv_str(a, "cd");
		T_EXPECT(cqw_poll(a, 0), 0);
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

static void
test_poll_empty_string(void **state)
{
	cqw_conn *a, *b;
	size_t i;

	(void)state;
	for (i = 0; i < T_NPAIRS; i++) {
		t_pipe(&a, &b, t_pair_flags[i]);
		T_EXPECT(cqw_poll(a, 0), 0);
		t_send_str(b, "");
		T_EXPECT(cqw_poll(a, 0), 1);
		T_EXPECT(cqw_poll(a, 0), 1);
		t_recv_expect(a, "", 0);
		T_EXPECT(cqw_poll(a, 0), 0);
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

/* test_strings: a sequence with empty strings, paced by poll. */
static void
test_poll_strings(void **state)
{
	static const char *const strs[] = { "hello", "", "a",  "b", "cd",
					    "",	     "", "ef", "",  "" };
	cqw_conn *a, *b;
	size_t i;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX);
	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		t_send_str(b, strs[i]);
	}
	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		T_EXPECT(cqw_poll(a, 1000), 1);
		t_recv_str(a, strs[i]);
	}
	T_EXPECT(cqw_poll(a, 10), 0);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

static void
test_poll_timeouts(void **state)
{
	cqw_conn *a, *b;
	int64_t t0;
	int r;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX);
	T_EXPECT(cqw_poll(a, 0), 0);
	t0 = t_timed_start(150 + 2000, "cqw_poll(150 ms)");
	r = cqw_poll(a, 150);
	t_timed_check(t0, 100, 150 + 2000);
	T_EXPECT(r, 0);
	t_send_str(b, "x");
	T_EXPECT(cqw_poll(a, 0), 1);
	T_EXPECT(cqw_poll(a, -1), 1);
	t_recv_str(a, "x");
	T_EXPECT(cqw_poll(a, 0), 0);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

/* ------------------------------------------------------------------
 * wait() (TestWait)
 */

static void
test_wait_timeout(void **state)
{
	struct cqw_wait_item it[2];
	cqw_conn *r1, *w1, *r2, *w2;
	int64_t t0;
	int r;

	(void)state;
	t_pipe(&r1, &w1, 0);
	t_pipe(&r2, &w2, 0);
	memset(it, 0, sizeof(it));
	it[0].conn = r1;
	it[1].conn = r2;
	it[0].ready = it[1].ready = 7;
	t0 = t_timed_start(200 + 2000, "cqw_wait(200 ms)");
	r = cqw_wait(it, 2, 200);
	t_timed_check(t0, 150, 200 + 2000);
	T_EXPECT(r, 0);
	assert_int_equal(it[0].ready, 0);
	assert_int_equal(it[1].ready, 0);
	t_send_str(w1, "x");
	T_EXPECT(cqw_wait(it, 2, 200), 1);
	assert_int_equal(it[0].ready, 1);
	assert_int_equal(it[1].ready, 0);
	cqw_conn_free(r1);
	cqw_conn_free(w1);
	cqw_conn_free(r2);
	cqw_conn_free(w2);
}

/* Python's wait(timeout=-1) is our 0: it returns at once. */
static void
test_wait_zero_timeout(void **state)
{
	struct cqw_wait_item it = { 0 };
	cqw_conn *r, *w;

	(void)state;
	t_pipe(&r, &w, 0);
	it.conn = r;
	T_EXPECT(cqw_wait(&it, 1, 0), 0);
	assert_int_equal(it.ready, 0);
	t_send_str(w, "");
	T_EXPECT(cqw_wait(&it, 1, 0), 1);
	assert_int_equal(it.ready, 1);
	cqw_conn_free(r);
	cqw_conn_free(w);
}

/* test_wait_integer: a connection and a raw descriptor in one call. */
static void
test_wait_conn_and_raw_fd(void **state)
{
	struct cqw_wait_item it[2];
	cqw_conn *r, *w;
#ifdef _WIN32
	/* Windows' wait() takes waitable handles: an event. */
	HANDLE ev = CreateEventW(NULL, TRUE, FALSE, NULL);
#else
	char byte;
	int p[2];
#endif

	(void)state;
	t_pipe(&r, &w, 0);
	memset(it, 0, sizeof(it));
	it[0].conn = r;
#ifdef _WIN32
	assert_non_null(ev);
	it[1].fd = (cqw_fd)ev;
	T_EXPECT(cqw_wait(it, 2, 0), 0);
	assert_true(SetEvent(ev));
#else
	assert_int_equal(pipe(p), 0);
	it[1].fd = p[0];
	T_EXPECT(cqw_wait(it, 2, 0), 0);
	assert_int_equal(write(p[1], "x", 1), 1);
#endif
	T_EXPECT(cqw_wait(it, 2, 1000), 1);
	assert_int_equal(it[0].ready, 0);
	assert_int_equal(it[1].ready, 1);
	t_send_str(w, "m");
	T_EXPECT(cqw_wait(it, 2, 1000), 2);
	assert_int_equal(it[0].ready, 1);
	assert_int_equal(it[1].ready, 1);
#ifdef _WIN32
	/* A signalled handle stays ready (a process sentinel). */
	t_recv_str(r, "m");
#else
	/* A raw descriptor at EOF is ready too (a process sentinel). */
	assert_int_equal(read(p[0], &byte, 1), 1);
	close(p[1]);
	t_recv_str(r, "m");
#endif
	T_EXPECT(cqw_wait(it, 2, 1000), 1);
	assert_int_equal(it[0].ready, 0);
	assert_int_equal(it[1].ready, 1);
#ifdef _WIN32
	CloseHandle(ev);
#else
	close(p[0]);
#endif
	cqw_conn_free(r);
	cqw_conn_free(w);
}

static void
test_wait_returns_every_ready(void **state)
{
	struct cqw_wait_item it[3];
	cqw_conn *a[3], *b[3];
	int i;

	(void)state;
	memset(it, 0, sizeof(it));
	for (i = 0; i < 3; i++) {
		t_pipe(&a[i], &b[i], CQW_DUPLEX);
		it[i].conn = a[i];
	}
	t_send_str(b[0], "0");
	t_send_str(b[2], "2");
	T_EXPECT(cqw_wait(it, 3, 1000), 2);
	assert_int_equal(it[0].ready, 1);
	assert_int_equal(it[1].ready, 0);
	assert_int_equal(it[2].ready, 1);
	/* The peer of the middle one closes: EOF is readiness. */
	cqw_conn_close(b[1]);
	T_EXPECT(cqw_wait(it, 3, 1000), 3);
	for (i = 0; i < 3; i++) {
		cqw_conn_free(a[i]);
		cqw_conn_free(b[i]);
	}
}

static void
test_wait_bad_items(void **state)
{
	struct cqw_wait_item it[2];
	cqw_conn *r, *w;

	(void)state;
	t_pipe(&r, &w, 0);
	memset(it, 0, sizeof(it));
	it[0].conn = r;
	it[1].fd = t_closed_fd(); /* not open */
	T_EXPECT(cqw_wait(it, 2, 0), CQW_EBADF);
	it[1].conn = w; /* a write-only end is watched, not refused */
	T_EXPECT(cqw_wait(it, 2, 0), 0);
	cqw_conn_close(r);
	T_EXPECT(cqw_wait(it, 1, 0), CQW_ECLOSED);
	cqw_conn_free(r);
	cqw_conn_free(w);
}

struct t_writer {
	cqw_conn *w;
	int id;
};

static int
t_child_write_ten(void *arg)
{
	struct t_writer *tw = arg;
	char msg[32];
	int j;

	for (j = 0; j < 10; j++) {
		snprintf(msg, sizeof(msg), "%d:%d", tw->id, j);
		T_CHILD_CHECK(cqw_send_bytes(tw->w, msg, strlen(msg)) == 0);
		if (j % 3 == tw->id % 3) {
			t_sleep_ms(1);
		}
	}
#ifdef _WIN32
	/* A thread: its end of file is its close (a child's is its exit). */
	T_CHILD_CHECK(cqw_conn_close(tw->w) == 0);
#endif
	return 0;
}

/* test_wait: four simplex readers until all reach EOF; 40 messages. */
static void
test_wait_four_readers(void **state)
{
	struct cqw_wait_item it[4];
	struct t_writer tw[4];
	cqw_conn *r[4], *w[4];
	int next[4] = { 0 }, open_ids[4];
	int i, k, n, nopen = 4, total = 0;
	t_peer peers[4];

	(void)state;
	for (i = 0; i < 4; i++) {
		t_pipe(&r[i], &w[i], 0);
	}
	for (i = 0; i < 4; i++) {
		tw[i].w = w[i];
		tw[i].id = i;
		peers[i] = t_peer_start(t_child_write_ten, &tw[i]);
	}
	for (i = 0; i < 4; i++) {
#ifndef _WIN32
		/* The children have their copies; a thread closes ours. */
		cqw_conn_free(w[i]);
#endif
		open_ids[i] = i;
	}
	while (nopen > 0) {
		memset(it, 0, sizeof(it));
		for (k = 0; k < nopen; k++) {
			it[k].conn = r[open_ids[k]];
		}
		n = cqw_wait(it, (size_t)nopen, 5000);
		assert_true(n > 0);
		for (k = nopen - 1; k >= 0; k--) {
			int id = open_ids[k];
			char msg[32], want[32];
			int64_t len;

			if (!it[k].ready) {
				continue;
			}
			len = cqw_recv_bytes_into(r[id], msg, sizeof(msg) - 1,
						  0, NULL);
			if (len == CQW_EOF) {
				cqw_conn_free(r[id]);
				open_ids[k] = open_ids[--nopen];
				continue;
			}
			assert_true(len > 0);
			msg[len] = '\0';
			snprintf(want, sizeof(want), "%d:%d", id, next[id]++);
			assert_string_equal(msg, want);
			total++;
		}
	}
	assert_int_equal(total, 40);
	for (i = 0; i < 4; i++) {
		assert_int_equal(next[i], 10);
		t_peer_join(peers[i]);
#ifdef _WIN32
		cqw_conn_free(w[i]);
#endif
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_poll_boundaries),
		cmocka_unit_test(test_poll_partial_header),
		cmocka_unit_test(test_poll_dont_merge),
		cmocka_unit_test(test_poll_empty_string),
		cmocka_unit_test(test_poll_strings),
		cmocka_unit_test(test_poll_timeouts),
		cmocka_unit_test(test_wait_timeout),
		cmocka_unit_test(test_wait_zero_timeout),
		cmocka_unit_test(test_wait_conn_and_raw_fd),
		cmocka_unit_test(test_wait_returns_every_ready),
		cmocka_unit_test(test_wait_bad_items),
		cmocka_unit_test(test_wait_four_readers),
	};

	/*
	 * SIGPIPE keeps its default action: the library must not let a
	 * write to a closed peer kill the process. (Windows has no SIGPIPE.)
	 */
#ifdef SIGPIPE
	signal(SIGPIPE, SIG_DFL);
#endif
	return cmocka_run_group_tests(tests, NULL, NULL);
}
