/*
 * Python's Pipe(duplex=False): the read end refuses every send and
 * the write end every receive, poll and wait, before any I/O. Argument
 * rules only: runs once, with the sync calls.
 */
#include "t-conn.h"

static void
test_pipe_duplex_false(void **state)
{
	struct cqw_msg m = { .buf = "x", .cap = 1, .len = 1 };
	struct cqw_wait_item item = { .fd = -1 };
	cqw_conn *r, *w;
	uint8_t buf[4];
	void *p = NULL;

	(void)state;
	t_pipe(&r, &w, 0);
	assert_true(cqw_conn_readable(r));
	assert_false(cqw_conn_writable(r));
	assert_false(cqw_conn_readable(w));
	assert_true(cqw_conn_writable(w));

	T_EXPECT(cqw_send_bytes(r, "x", 1), CQW_EREADONLY);
	T_EXPECT(cqw_send_bytes_at(r, "x", 1, 0, CQW_NONE), CQW_EREADONLY);
	T_EXPECT(cqw_send_batch(r, &m, 1), CQW_EREADONLY);
	T_EXPECT(cqw_recv_bytes(w, &p, CQW_NONE), CQW_EWRITEONLY);
	T_EXPECT(cqw_recv_bytes_into(w, buf, sizeof(buf), 0, NULL),
		 CQW_EWRITEONLY);
	T_EXPECT(cqw_recv_batch(w, &m, 1, 0), CQW_EWRITEONLY);
	T_EXPECT(cqw_poll(w, 0), CQW_EWRITEONLY);
	/* Python's wait() watches a write end too: not ready, no error. */
	item.conn = w;
	T_EXPECT(cqw_wait(&item, 1, 0), 0);

	/* Nothing of that reached the pipe; the right way round works. */
	T_EXPECT(cqw_poll(r, 0), 0);
	t_send_str(w, "ok");
	t_recv_str(r, "ok");
	cqw_conn_free(r);
	cqw_conn_free(w);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pipe_duplex_false),
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
