/*
 * cqw_wait() with items Python's wait() accepts but a strict reading would
 * refuse: a write-only end, a poisoned duplex end, a connection busy on a
 * loop. None of them fails the call (Python watches fileno() alone); the
 * ready ones are reported. A closed connection (Python's fileno() raises)
 * and a raw descriptor that is not open (billiard's ValueError) do fail it.
 */
#include "t-util.h"
#include "t-loop.h"

/* Every kind of item at once; only the one with data is ready. */
static void
test_wait_items_odd_ones_do_not_fail(void **state)
{
	struct cqw_wait_item it[4];
	cqw_conn *pr, *pw, *da, *db, *ba, *bb;
	struct cqw_op op;
	cqw_loop *loop;
	char buf[8];
	void *msg;

	(void)state;
	T_RESULT(cqw_pipe(&pr, &pw, 0), 0);	     /* pw: write-only */
	T_RESULT(cqw_pipe(&da, &db, CQW_DUPLEX), 0); /* db: poisoned */
	T_RESULT(cqw_pipe(&ba, &bb, CQW_DUPLEX), 0); /* bb: busy */
	T_RESULT(cqw_send_bytes(da, "too long", 8), 0);
	T_RESULT(cqw_recv_bytes(db, &msg, 2), CQW_EMSGSIZE);
	assert_false(cqw_conn_readable(db));
	loop = t_loop_new();
	t_op(&op, CQW_OP_RECV, bb, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &op), 0);
	T_RESULT(cqw_flush(loop), 0);
	T_RESULT(cqw_send_bytes(pw, "x", 1), 0);
	memset(it, 0, sizeof(it));
	it[0].conn = pw;
	it[1].conn = db;
	it[2].conn = bb;
	it[3].conn = pr;
	/* db still has the payload it refused queued: readable, as Python. */
	T_RESULT(cqw_wait(it, 4, 1000), 2);
	assert_int_equal(it[0].ready, 0);
	assert_int_equal(it[1].ready, 1);
	assert_int_equal(it[2].ready, 0);
	assert_int_equal(it[3].ready, 1);
	/* And with nothing ready, a timeout, not an error. */
	T_RESULT(cqw_recv_bytes_into(pr, buf, sizeof(buf), 0, NULL), 1);
	T_RESULT(cqw_wait(it + 2, 2, 50), 0);
	T_RESULT(cqw_conn_close(bb), 0);
	t_reap_one(loop, &op);
	T_RESULT(op.result, CQW_ECANCELED);
	cqw_conn_free(pr);
	cqw_conn_free(pw);
	cqw_conn_free(da);
	cqw_conn_free(db);
	cqw_conn_free(ba);
	cqw_conn_free(bb);
	cqw_loop_free(loop);
}

/* Closed connection: CQW_ECLOSED; a raw fd that is not open: CQW_EBADF. */
static void
test_wait_items_closed_and_invalid_fail(void **state)
{
	struct cqw_wait_item it[2];
	cqw_conn *a, *b;

	(void)state;
	T_RESULT(cqw_pipe(&a, &b, CQW_DUPLEX), 0);
	T_RESULT(cqw_send_bytes(b, "x", 1), 0);
	T_RESULT(cqw_conn_close(b), 0);
	memset(it, 0, sizeof(it));
	it[0].conn = a;
	it[1].conn = b;
	T_RESULT(cqw_wait(it, 2, 0), CQW_ECLOSED);
	it[1].conn = NULL;
	it[1].fd = t_closed_fd();
	T_RESULT(cqw_wait(it, 2, 0), CQW_EBADF);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wait_items_odd_ones_do_not_fail),
		cmocka_unit_test(test_wait_items_closed_and_invalid_fail),
	};

	t_backend_or_skip();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
