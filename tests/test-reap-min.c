/*
 * cqw_reap_min: a reap that waits for several completions (issue 11,
 * "one enter per reap"). Run per backend and ring flag set: on io_uring
 * with the kernel's minimum wait (6.12) the kernel counts the completions
 * (wait_nr), elsewhere the loop does.
 */
#include "t-conn.h"

static cqw_loop *
new_loop(void)
{
	cqw_loop *loop;

	T_OK(cqw_loop_new(&loop, NULL));
	return loop;
}

/* A SEND and the RECV of it: both come back from one call. */
static void
test_send_and_recv_at_once(void **state)
{
	struct cqw_op s, r, *done[4];
	cqw_conn *a, *b;
	cqw_loop *loop = new_loop();
	char out[8] = "ping", in[8];
	int round, n;

	(void)state;
	T_OK(cqw_pipe(&a, &b, CQW_DUPLEX));
	for (round = 0; round < 100; round++) {
		t_io_op(&r, CQW_OP_RECV, b, in, sizeof(in));
		t_io_op(&s, CQW_OP_SEND, a, out, 4);
		T_OK(cqw_submit(loop, &r));
		T_OK(cqw_submit(loop, &s));
		n = cqw_reap_min(loop, done, 2, 4, T_IO_DEADLINE_MS);
		assert_int_equal(n, 2);
		T_EXPECT(r.result, 4);
		T_EXPECT(s.result, 0);
	}
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
}

/* min above what is in flight: bounded by it, no wait for the absent. */
static void
test_min_bounded_by_inflight(void **state)
{
	struct cqw_op s, r, *done[4];
	cqw_conn *a, *b;
	cqw_loop *loop = new_loop();
	char out[8] = "x", in[8];

	(void)state;
	T_OK(cqw_pipe(&a, &b, CQW_DUPLEX));
	t_io_op(&s, CQW_OP_SEND, a, out, 1);
	T_OK(cqw_submit(loop, &s));
	assert_int_equal(cqw_reap_min(loop, done, 3, 4, T_IO_DEADLINE_MS), 1);
	/* Nothing in flight: 0 at once, whatever min says. */
	assert_int_equal(cqw_reap_min(loop, done, 3, 4, T_IO_DEADLINE_MS), 0);
	/* One that completes and one that never does: the timeout ends it. */
	t_io_op(&s, CQW_OP_SEND, a, out, 1);
	t_io_op(&r, CQW_OP_RECV, a, in, sizeof(in)); /* b never answers */
	T_OK(cqw_submit(loop, &s));
	T_OK(cqw_submit(loop, &r));
	assert_int_equal(cqw_reap_min(loop, done, 2, 4, 50), 1);
	assert_ptr_equal(done[0], &s);
	T_OK(cqw_cancel(loop, &r));
	assert_int_equal(cqw_reap_min(loop, done, 1, 4, T_IO_DEADLINE_MS), 1);
	T_EXPECT(r.result, CQW_ECANCELED);
	/* What b got is still there, whole. */
	assert_int_equal(cqw_recv_bytes_into(b, in, sizeof(in), 0, NULL), 1);
	T_EXPECT(cqw_reap_min(loop, done, 5, 4, 0), CQW_EINVAL);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
}

/*
 * An accept and a connect with a key on one loop, reaped two at a time
 * with no timeout: each handshake step is a completion that needs a step
 * of ours (the next frame) before the next can come, so a wait that let
 * the kernel count to two without a bound would never end (the test's
 * own time limit would fail it).
 */
static void
test_steps_between_completions(void **state)
{
	static const struct cqw_auth key = { .key = "reap-key", .keylen = 8 };
	struct cqw_op acc, con, *done[4];
	cqw_listener *l;
	cqw_loop *loop = new_loop();
	int round, n, got;

	(void)state;
	T_OK(cqw_listen(&l, "tcp:127.0.0.1:0", &key, 8)); /* every platform */
	for (round = 0; round < 20; round++) {
		memset(&acc, 0, sizeof(acc));
		memset(&con, 0, sizeof(con));
		acc.kind = CQW_OP_ACCEPT;
		acc.listener = l;
		con.kind = CQW_OP_CONNECT;
		con.address = cqw_listener_address(l);
		con.auth = &key;
		T_OK(cqw_submit(loop, &acc));
		T_OK(cqw_submit(loop, &con));
		for (got = 0; got < 2; got += n) {
			n = cqw_reap_min(loop, done, 2 - got, 4, -1);
			assert_true(n > 0);
		}
		T_EXPECT(acc.result, 0);
		T_EXPECT(con.result, 0);
		cqw_conn_free(acc.conn);
		cqw_conn_free(con.conn);
	}
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

/* Many receives, a batch of sends: min of them in one reap, max caps. */
static void
test_batch_min(void **state)
{
	enum { N = 32 };
	struct cqw_op s[N], r[N], *done[2 * N];
	char out[N][4], in[N][8];
	cqw_conn *a, *b;
	cqw_loop *loop = new_loop();
	int i, got = 0, n;

	(void)state;
	T_OK(cqw_pipe(&a, &b, CQW_DUPLEX));
	for (i = 0; i < N; i++) {
		t_io_op(&r[i], CQW_OP_RECV, b, in[i], sizeof(in[i]));
		T_OK(cqw_submit(loop, &r[i]));
	}
	for (i = 0; i < N; i++) {
		memcpy(out[i], &i, sizeof(i));
		t_io_op(&s[i], CQW_OP_SEND, a, out[i], sizeof(i));
		T_OK(cqw_submit(loop, &s[i]));
	}
	while (got < 2 * N) {
		n = cqw_reap_min(loop, done, 2 * N - got > 8 ? 8 : 2 * N - got,
				 2 * N, T_IO_DEADLINE_MS);
		assert_true(n >= (2 * N - got > 8 ? 8 : 2 * N - got));
		got += n;
	}
	for (i = 0; i < N; i++) {
		T_EXPECT(r[i].result, (int64_t)sizeof(i));
		assert_memory_equal(in[i], &i, sizeof(i));
	}
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_send_and_recv_at_once),
		cmocka_unit_test(test_min_bounded_by_inflight),
		cmocka_unit_test(test_batch_min),
		cmocka_unit_test(test_steps_between_completions),
	};

	t_backend_or_skip();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
