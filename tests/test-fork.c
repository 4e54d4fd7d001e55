/*
 * fork(): connections made before the fork work in the child, and
 * the parent's copies closed in the child give both sides end of file
 * when they should. The parent's side moves its messages through the
 * I/O layer of t-conn.h (sync, then loop ops per backend); the child
 * uses the sync calls.
 */
#include "t-conn.h"

/* fork(): connections made before the fork work in the child. */
static int
t_child_fork_pipes(void *arg)
{
	struct t_child_conns *cc = arg;
	cqw_conn **c = cc->use; /* [0] duplex end, [1] simplex reader */
	void *buf = NULL;
	int64_t n;
	int i;

	t_child_drop(cc);
	for (i = 0; i < 3; i++) {
		n = cqw_recv_bytes(c[0], &buf, CQW_NONE);
		T_CHILD_CHECK(n >= 0);
		T_CHILD_CHECK(cqw_send_bytes(c[0], buf, (size_t)n) == 0);
		cqw_free(buf);
	}
	/* Forward what arrives on the simplex pipe. */
	n = cqw_recv_bytes(c[1], &buf, CQW_NONE);
	T_CHILD_CHECK(n >= 0);
	T_CHILD_CHECK(cqw_send_bytes(c[0], buf, (size_t)n) == 0);
	cqw_free(buf);
	T_CHILD_CHECK(cqw_recv_bytes(c[1], &buf, CQW_NONE) == CQW_EOF);
	return 0;
}

static void
test_fork_conns_work_in_child(void **state)
{
	struct t_child_conns cc;
	cqw_conn *a, *b, *r, *w;
	pid_t pid;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX);
	t_pipe(&r, &w, 0);
	cc.use[0] = b;
	cc.use[1] = r;
	cc.drop[0] = a;
	cc.drop[1] = w;
	pid = t_fork_child(t_child_fork_pipes, &cc);
	cqw_conn_free(b);
	cqw_conn_free(r);
	t_send_str(a, "one");
	t_send_str(a, "");
	t_send_str(a, "three");
	t_recv_str(a, "one");
	t_recv_str(a, "");
	t_recv_str(a, "three");
	t_send_str(w, "via the pipe");
	cqw_conn_free(w);
	t_recv_str(a, "via the pipe");
	t_wait_child(pid);
	T_EXPECT(t_recv(a, &(void *){ NULL }, CQW_NONE), CQW_EOF);
	cqw_conn_free(a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fork_conns_work_in_child),
	};

	t_io_setup();
	return cmocka_run_group_tests(tests, NULL, t_io_teardown);
}
