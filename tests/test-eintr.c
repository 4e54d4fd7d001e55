/*
 * Signals (after CPython's TestIgnoreEINTR and _TestPollEintr): a
 * signal without SA_RESTART while recv, poll, wait, a blocked send and
 * accept wait; the call retries EINTR and returns what it would have.
 * These are the sync calls' waits: runs once.
 */
#include "t-conn.h"

/* A signal handler without SA_RESTART, counting deliveries. */
static volatile sig_atomic_t t_sig_count;

static void
t_sig_handler(int sig)
{
	(void)sig;
	t_sig_count++;
}

static void
t_sig_install(int sig, struct sigaction *old)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = t_sig_handler;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0; /* no SA_RESTART: blocking calls see EINTR */
	t_sig_count = 0;
	assert_int_equal(sigaction(sig, &sa, old), 0);
}

static void
t_sig_restore(int sig, const struct sigaction *old)
{
	assert_int_equal(sigaction(sig, old, NULL), 0);
}

/* ------------------------------------------------------------------
 * Signals (TestIgnoreEINTR, _TestPollEintr): EINTR is retried inside.
 */

struct t_signaller {
	pid_t parent;
	cqw_conn *c;
	const char *address;
	size_t len; /* for the slow reader */
};

static void
t_signal_parent_twice(pid_t parent)
{
	t_sleep_ms(60);
	kill(parent, SIGUSR1);
	t_sleep_ms(60);
	kill(parent, SIGUSR1);
	t_sleep_ms(30);
}

static int
t_child_signal_then_send(void *arg)
{
	struct t_signaller *s = arg;

	t_signal_parent_twice(s->parent);
	T_CHILD_CHECK(cqw_send_bytes(s->c, "ok", 2) == 0);
	return 0;
}

static int
t_child_signal_then_send_twice(void *arg)
{
	struct t_signaller *s = arg;

	t_signal_parent_twice(s->parent);
	T_CHILD_CHECK(cqw_send_bytes(s->c, "ok", 2) == 0);
	t_signal_parent_twice(s->parent);
	T_CHILD_CHECK(cqw_send_bytes(s->c, "again", 5) == 0);
	return 0;
}

/*
 * A signal while recv waits. The second receive follows one that had to
 * wait, which may take another waiting path: both must retry EINTR.
 */
static void
test_eintr_recv(void **state)
{
	struct t_signaller s = { .parent = getpid() };
	struct sigaction old;
	cqw_conn *a, *b;
	pid_t pid;
	size_t i;

	(void)state;
	for (i = 0; i < T_NPAIRS; i++) {
		t_sig_install(SIGUSR1, &old);
		t_pipe(&a, &b, t_pair_flags[i]);
		s.c = b;
		pid = t_fork_child(t_child_signal_then_send_twice, &s);
		cqw_conn_free(b);
		t_recv_str(a, "ok");
		t_recv_str(a, "again");
		t_wait_child(pid);
		t_sig_restore(SIGUSR1, &old);
		assert_true(t_sig_count >= 2);
		cqw_conn_free(a);
	}
}

static void
test_eintr_poll_and_wait(void **state)
{
	struct t_signaller s = { .parent = getpid() };
	struct cqw_wait_item it = { 0 };
	struct sigaction old;
	cqw_conn *a, *b;
	pid_t pid;

	(void)state;
	t_sig_install(SIGUSR1, &old);
	t_pipe(&a, &b, CQW_DUPLEX);
	s.c = b;
	pid = t_fork_child(t_child_signal_then_send, &s);
	T_EXPECT(cqw_poll(a, -1), 1);
	t_wait_child(pid);
	t_recv_str(a, "ok");

	it.conn = a;
	pid = t_fork_child(t_child_signal_then_send, &s);
	T_EXPECT(cqw_wait(&it, 1, -1), 1);
	t_wait_child(pid);
	t_recv_str(a, "ok");
	t_sig_restore(SIGUSR1, &old);
	assert_true(t_sig_count >= 2);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

static int
t_child_signal_then_read(void *arg)
{
	struct t_signaller *s = arg;
	void *buf = NULL;
	int64_t n;

	t_signal_parent_twice(s->parent);
	n = cqw_recv_bytes(s->c, &buf, CQW_NONE);
	T_CHILD_CHECK(n == (int64_t)s->len);
	T_CHILD_CHECK(t_pattern_check(buf, s->len, 9));
	cqw_free(buf);
	return 0;
}

/* A send too big for the kernel's buffer, interrupted while blocked. */
static void
test_eintr_send(void **state)
{
	struct t_signaller s = { .parent = getpid(), .len = 8u << 20 };
	struct sigaction old;
	cqw_conn *a, *b;
	void *buf;
	pid_t pid;
	int i;

	(void)state;
	buf = malloc(s.len);
	assert_non_null(buf);
	t_pattern_fill(buf, s.len, 9);
	for (i = 0; i < 2; i++) {
		t_sig_install(SIGUSR1, &old);
		t_pipe(&a, &b, i ? 0 : CQW_DUPLEX);
		s.c = a; /* simplex: a reads, b writes */
		pid = t_fork_child(t_child_signal_then_read, &s);
		T_OK(cqw_send_bytes(b, buf, s.len));
		t_wait_child(pid);
		t_sig_restore(SIGUSR1, &old);
		assert_true(t_sig_count >= 1);
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
	free(buf);
}

static int
t_child_signal_then_connect(void *arg)
{
	struct t_signaller *s = arg;

	t_signal_parent_twice(s->parent);
	return t_child_connect_send_exit((void *)s->address);
}

static void
test_eintr_accept(void **state)
{
	struct t_signaller s = { .parent = getpid() };
	struct sigaction old;
	char addr[128];
	cqw_listener *l;
	cqw_conn *c;
	pid_t pid;

	(void)state;
	s.address = t_unique_name(addr, sizeof(addr), "unix:@", "eintr");
	T_OK(cqw_listen(&l, addr, NULL, 1));
	t_sig_install(SIGUSR1, &old);
	pid = t_fork_child(t_child_signal_then_connect, &s);
	T_OK(cqw_accept(l, &c, -1));
	t_recv_str(c, "hello");
	t_wait_child(pid);
	t_sig_restore(SIGUSR1, &old);
	assert_true(t_sig_count >= 1);
	cqw_conn_free(c);
	cqw_listener_free(l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_eintr_recv),
		cmocka_unit_test(test_eintr_poll_and_wait),
		cmocka_unit_test(test_eintr_send),
		cmocka_unit_test(test_eintr_accept),
	};

	/*
	 * SIGPIPE keeps its default action: the library must not let a
	 * write to a closed peer kill the process.
	 */
	signal(SIGPIPE, SIG_DFL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
