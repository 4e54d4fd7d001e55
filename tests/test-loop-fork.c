/*
 * What becomes of a loop's ops across fork(), whatever state they are in
 * (submitted but not flushed, queued behind an io in flight, in flight,
 * done but not reaped): in the child every one of them ends with
 * CQW_EFORK, in the parent it goes on, and the peer sees each message
 * once. Also: a loop belongs to one thread, and a close from another is
 * refused rather than done under the owner's feet.
 *
 * Run on the backend CQW_BACKEND names. Children check with
 * T_CHILD_CHECK() and exit; the parent asserts their status.
 */
#include "t-util.h"
#include "t-loop.h"

#include <pthread.h>

/* Read every message rx has within ms; they must be want[0..n), once. */
static void
t_expect_exactly(cqw_conn *rx, const char *const *want, size_t n, int ms)
{
	char buf[64];
	size_t i;

	for (i = 0; i < n; i++) {
		size_t len = strlen(want[i]);

		T_RESULT(cqw_poll(rx, T_PROGRESS_MS), 1);
		T_RESULT(cqw_recv_bytes_into(rx, buf, sizeof(buf), 0, NULL),
			 (int64_t)len);
		assert_memory_equal(buf, want[i], len);
	}
	/* ...and nothing after them: not sent twice. */
	T_RESULT(cqw_poll(rx, ms), 0);
}

/* Submitted, not flushed: the child's first reap must not send it. */
static void
test_loop_fork_unflushed_send_goes_once(void **state)
{
	static const char *const want[] = { "once" };
	struct cqw_op send, *done[4];
	cqw_conn *a, *b;
	cqw_loop *loop;
	pid_t pid;

	(void)state;
	loop = t_loop_new();
	T_RESULT(cqw_pipe(&a, &b, CQW_DUPLEX), 0);
	t_op(&send, CQW_OP_SEND, a, "once", 4, NULL);
	T_RESULT(cqw_submit(loop, &send), 0);
	pid = t_fork();
	if (pid == 0) {
		T_CHILD_CHECK(cqw_reap(loop, done, 4, T_PROGRESS_MS) == 1);
		T_CHILD_CHECK(done[0] == &send && send.result == CQW_EFORK);
		T_CHILD_CHECK(cqw_reap(loop, done, 4, 0) == 0);
		_exit(0);
	}
	t_wait_child(pid);
	t_reap_one(loop, &send);
	T_RESULT(send.result, 0);
	t_expect_exactly(b, want, 1, 200);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
}

/* Done but not reaped: the child reaps CQW_EFORK, the parent the result. */
static void
test_loop_fork_done_unreaped_is_efork_in_child(void **state)
{
	static const char *const want[] = { "m1", "m2" };
	struct cqw_op s1, s2, *done[4], *left;
	cqw_conn *a, *b;
	cqw_loop *loop;
	pid_t pid;

	(void)state;
	loop = t_loop_new();
	T_RESULT(cqw_pipe(&a, &b, CQW_DUPLEX), 0);
	t_op(&s1, CQW_OP_SEND, a, "m1", 2, NULL);
	t_op(&s2, CQW_OP_SEND, a, "m2", 2, NULL);
	T_RESULT(cqw_submit(loop, &s1), 0);
	T_RESULT(cqw_submit(loop, &s2), 0);
	/* Both go in one gather and complete together; take one of them. */
	T_RESULT(cqw_reap(loop, done, 1, T_PROGRESS_MS), 1);
	left = done[0] == &s1 ? &s2 : &s1;
	T_RESULT(done[0]->result, 0);
	pid = t_fork();
	if (pid == 0) {
		T_CHILD_CHECK(cqw_reap(loop, done, 4, T_PROGRESS_MS) == 1);
		T_CHILD_CHECK(done[0] == left && left->result == CQW_EFORK);
		_exit(0);
	}
	t_wait_child(pid);
	t_reap_one(loop, left);
	T_RESULT(left->result, 0);
	t_expect_exactly(b, want, 2, 200);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
}

/*
 * Receives in flight and queued behind it, and one submitted but not
 * flushed on another connection: all end in the child; the parent gets
 * every message that comes afterwards.
 */
static void
test_loop_fork_receives_end_in_child(void **state)
{
	char buf[3][16];
	struct cqw_op r1, r2, r3, *done[4];
	cqw_conn *a, *b, *c, *d;
	cqw_loop *loop;
	pid_t pid;
	int i;

	(void)state;
	loop = t_loop_new();
	T_RESULT(cqw_pipe(&a, &b, CQW_DUPLEX), 0);
	T_RESULT(cqw_pipe(&c, &d, CQW_DUPLEX), 0);
	t_op(&r1, CQW_OP_RECV, b, buf[0], sizeof(buf[0]), NULL);
	t_op(&r2, CQW_OP_RECV, b, buf[1], sizeof(buf[1]), NULL);
	t_op(&r3, CQW_OP_RECV, d, buf[2], sizeof(buf[2]), NULL);
	T_RESULT(cqw_submit(loop, &r1), 0);
	T_RESULT(cqw_submit(loop, &r2), 0);
	T_RESULT(cqw_flush(loop), 0);	    /* r1 in flight, r2 queued */
	T_RESULT(cqw_submit(loop, &r3), 0); /* not flushed */
	pid = t_fork();
	if (pid == 0) {
		T_CHILD_CHECK(cqw_reap(loop, done, 4, T_PROGRESS_MS) == 3);
		for (i = 0; i < 3; i++) {
			T_CHILD_CHECK(done[i]->result == CQW_EFORK);
		}
		T_CHILD_CHECK(cqw_reap(loop, done, 4, 0) == 0);
		_exit(0);
	}
	t_wait_child(pid);
	T_RESULT(cqw_send_bytes(a, "first", 5), 0);
	T_RESULT(cqw_send_bytes(a, "second", 6), 0);
	T_RESULT(cqw_send_bytes(c, "third", 5), 0);
	t_reap_exact(loop, done, 3);
	T_RESULT(r1.result, 5);
	T_RESULT(r2.result, 6);
	T_RESULT(r3.result, 5);
	assert_memory_equal(buf[0], "first", 5);
	assert_memory_equal(buf[1], "second", 6);
	assert_memory_equal(buf[2], "third", 5);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_conn_free(c);
	cqw_conn_free(d);
	cqw_loop_free(loop);
}

/* The child's own ops, submitted after the fork, run normally. */
static void
test_loop_fork_child_ops_run(void **state)
{
	static const char *const want[] = { "child" };
	struct cqw_op send, *done[4];
	cqw_conn *a, *b;
	cqw_loop *loop;
	pid_t pid;

	(void)state;
	loop = t_loop_new();
	T_RESULT(cqw_pipe(&a, &b, CQW_DUPLEX), 0);
	t_op(&send, CQW_OP_SEND, a, "parent", 6, NULL);
	T_RESULT(cqw_submit(loop, &send), 0);
	t_reap_one(loop, &send); /* the loop has been used before the fork */
	T_RESULT(cqw_recv_bytes_into(b, (char[8]){ 0 }, 8, 0, NULL), 6);
	pid = t_fork();
	if (pid == 0) {
		t_op(&send, CQW_OP_SEND, a, "child", 5, NULL);
		T_CHILD_CHECK(cqw_submit(loop, &send) == 0);
		T_CHILD_CHECK(cqw_reap(loop, done, 4, T_PROGRESS_MS) == 1);
		T_CHILD_CHECK(done[0] == &send && send.result == 0);
		_exit(0);
	}
	t_wait_child(pid);
	t_expect_exactly(b, want, 1, 100);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
}

struct t_other {
	cqw_loop *loop;
	cqw_conn *conn;
	int close_r, submit_r, flush_r;
};

static void *
t_other_thread(void *arg)
{
	struct t_other *o = arg;
	struct cqw_op op;

	o->close_r = cqw_conn_close(o->conn);
	t_op(&op, CQW_OP_SEND, o->conn, "x", 1, NULL);
	o->submit_r = cqw_submit(o->loop, &op);
	o->flush_r = cqw_flush(o->loop);
	return NULL;
}

/*
 * A loop belongs to the thread that flushed it: a close from another
 * thread while a receive is in flight is CQW_EBUSY and closes nothing
 * (closing the descriptor under the kernel's read would free its buffer
 * while the kernel may still write it); submit and flush are refused too.
 */
static void
test_loop_close_from_other_thread_busy(void **state)
{
	struct t_other o;
	char buf[16];
	struct cqw_op recv;
	cqw_conn *a, *b;
	pthread_t th;

	(void)state;
	o.loop = t_loop_new();
	T_RESULT(cqw_pipe(&a, &b, CQW_DUPLEX), 0);
	t_op(&recv, CQW_OP_RECV, b, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(o.loop, &recv), 0);
	T_RESULT(cqw_flush(o.loop), 0);
	o.conn = b;
	assert_int_equal(pthread_create(&th, NULL, t_other_thread, &o), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	T_RESULT(o.close_r, CQW_EBUSY);
	T_RESULT(o.submit_r, CQW_EBUSY);
	T_RESULT(o.flush_r, CQW_EBUSY);
	assert_false(cqw_conn_closed(b));
	/* The receive is still armed: a message still reaches it. */
	T_RESULT(cqw_send_bytes(a, "still", 5), 0);
	t_reap_one(o.loop, &recv);
	T_RESULT(recv.result, 5);
	assert_memory_equal(buf, "still", 5);
	/* On the owner's thread, close works and cancels. */
	T_RESULT(cqw_submit(o.loop, &recv), 0);
	T_RESULT(cqw_flush(o.loop), 0);
	T_RESULT(cqw_conn_close(b), 0);
	t_reap_one(o.loop, &recv);
	T_RESULT(recv.result, CQW_ECANCELED);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(o.loop);
}

/*
 * An op submitted and cancelled before any flush leaves its connection
 * with nothing on the loop: after a fork the child may free the loop and
 * then the connection (review: the connection stayed attached, and its
 * free read the freed loop).
 */
static int
t_cancelled_child(void *arg)
{
	struct cqw_op **pair = arg, *done[4];
	cqw_conn *c = pair[0]->conn;
	cqw_loop *loop = pair[1]->user_data;

	T_CHILD_CHECK(cqw_reap(loop, done, 4, 0) == 1);
	T_CHILD_CHECK(done[0] == pair[0] && pair[0]->result == CQW_EFORK);
	cqw_loop_free(loop);
	T_CHILD_CHECK(cqw_conn_close(c) == 0);
	cqw_conn_free(c);
	return 0;
}

static void
test_loop_fork_cancelled_before_flush_lets_conn_go(void **state)
{
	struct cqw_op op, holder, *pair[2] = { &op, &holder };
	cqw_conn *a, *b;
	cqw_loop *loop;
	char buf[8];

	(void)state;
	loop = t_loop_new();
	T_RESULT(cqw_pipe(&a, &b, CQW_DUPLEX), 0);
	t_op(&op, CQW_OP_RECV, b, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &op), 0);
	T_RESULT(cqw_cancel(loop, &op), 0);
	memset(&holder, 0, sizeof(holder));
	holder.user_data = loop;
	t_wait_child(t_fork_child(t_cancelled_child, pair));
	t_reap_one(loop, &op);
	T_RESULT(op.result, CQW_ECANCELED);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
}

struct t_owner {
	cqw_loop *loop;
	int r;
};

static void *
t_owner_thread(void *arg)
{
	struct t_owner *o = arg;

	o->r = cqw_flush(o->loop); /* this thread owns the loop now */
	return NULL;
}

static int
t_child_submits(void *arg)
{
	struct t_owner *o = arg;
	struct cqw_op send, *done[4];
	cqw_conn *a, *b;
	char buf[8];

	T_CHILD_CHECK(cqw_pipe(&a, &b, CQW_DUPLEX) == 0);
	t_op(&send, CQW_OP_SEND, a, "hi", 2, NULL);
	/* In the child the loop has no owner yet: its first submit works. */
	T_CHILD_CHECK(cqw_submit(o->loop, &send) == 0);
	T_CHILD_CHECK(cqw_reap(o->loop, done, 4, T_PROGRESS_MS) == 1);
	T_CHILD_CHECK(send.result == 0);
	T_CHILD_CHECK(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, NULL) == 2);
	return 0;
}

/* The loop's owner is another thread of the parent than the forking one. */
static void
test_loop_fork_child_submit_loop_owned_elsewhere(void **state)
{
	struct t_owner o = { 0 };
	pthread_t th;

	(void)state;
	o.loop = t_loop_new();
	assert_int_equal(pthread_create(&th, NULL, t_owner_thread, &o), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	T_RESULT(o.r, 0);
	t_wait_child(t_fork_child(t_child_submits, &o));
	cqw_loop_free(o.loop);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_loop_fork_unflushed_send_goes_once),
		cmocka_unit_test(
		    test_loop_fork_done_unreaped_is_efork_in_child),
		cmocka_unit_test(test_loop_fork_receives_end_in_child),
		cmocka_unit_test(test_loop_fork_child_ops_run),
		cmocka_unit_test(test_loop_close_from_other_thread_busy),
		cmocka_unit_test(
		    test_loop_fork_cancelled_before_flush_lets_conn_go),
		cmocka_unit_test(
		    test_loop_fork_child_submit_loop_owned_elsewhere),
	};

	t_backend_or_skip();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
