/*
 * Accept on a listener shared by several processes (a prefork server).
 * The one that gets the client receives its message; each other must come
 * back with CQW_ETIMEDOUT within its timeout (at least 1400 ms, at most
 * 2500 ms of 1500), never asleep in an accept() whose connection another
 * process took.
 *
 * - traced: the race made certain. A child in cqw_accept() is stopped
 *   (ptrace) just after its poll() said a peer is there; the parent
 *   accepts that peer with cqw_accept(), then lets the child go on.
 * - herd: four children wait on one inherited listener and one client
 *   comes, as in a prefork server (the race may or may not happen).
 */
#include "t-util.h"

#include <fcntl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>

#define ACCEPTORS 4
#define TIMEOUT_MS 1500
#define ROUNDS 2

enum { WON = 10, LOST = 20 };

static const char hello[] = "to whoever accepts";

static int
acceptor(void *arg)
{
	cqw_listener *l = arg;
	cqw_conn *c;
	void *buf = NULL;
	int64_t t0 = t_now_ms(), dt;
	int r;

	r = cqw_accept(l, &c, TIMEOUT_MS);
	dt = t_now_ms() - t0;
	if (r == 0) {
		T_CHILD_CHECK(cqw_recv_bytes(c, &buf, CQW_NONE) ==
			      (int64_t)sizeof(hello));
		T_CHILD_CHECK(memcmp(buf, hello, sizeof(hello)) == 0);
		cqw_free(buf);
		cqw_conn_free(c);
		return WON;
	}
	fprintf(stderr, "acceptor %d: %s after %lld ms\n", (int)getpid(),
		cqw_err_name(r), (long long)dt);
	T_CHILD_CHECK(r == CQW_ETIMEDOUT);
	T_CHILD_CHECK(dt >= TIMEOUT_MS - 100 && dt <= TIMEOUT_MS + 1000);
	/* Exit without closing the listener: it is the parent's. */
	return LOST;
}

static void
one_round(cqw_listener *l, const char *address)
{
	pid_t pids[ACCEPTORS];
	int status, done = 0, won = 0, lost = 0, i;
	int64_t until;
	cqw_conn *c;
	pid_t r;

	for (i = 0; i < ACCEPTORS; i++) {
		pids[i] = t_fork_child(acceptor, l);
	}
	/* All of them are asleep in poll() when the client comes. */
	t_sleep_ms(300);
	assert_int_equal(cqw_connect(&c, address, NULL), 0);
	assert_int_equal(cqw_send_bytes(c, hello, sizeof(hello)), 0);

	until = t_now_ms() + TIMEOUT_MS + 3000;
	while (done < ACCEPTORS && t_now_ms() < until) {
		r = waitpid(-1, &status, WNOHANG);
		if (r <= 0) {
			t_sleep_ms(20);
			continue;
		}
		done++;
		if (WIFEXITED(status) && WEXITSTATUS(status) == WON) {
			won++;
		} else if (WIFEXITED(status) && WEXITSTATUS(status) == LOST) {
			lost++;
		}
	}
	if (done < ACCEPTORS) {
		/* Someone is asleep past its timeout: the bug. */
		for (i = 0; i < ACCEPTORS; i++) {
			kill(pids[i], SIGKILL);
		}
		while (waitpid(-1, &status, 0) > 0) {
		}
	}
	cqw_conn_free(c);
	print_message("round: %d won, %d timed out, %d stuck or failed\n", won,
		      lost, ACCEPTORS - won - lost);
	assert_int_equal(done, ACCEPTORS);
	assert_int_equal(won, 1);
	assert_int_equal(lost, ACCEPTORS - 1);
}

static void
test_shared_listener(void **state)
{
	const char *dir = getenv("TMPDIR");
	char prefix[96], path[128], address[160];
	cqw_listener *l;
	int i;

	(void)state;
	snprintf(prefix, sizeof(prefix), "%s/", dir != NULL ? dir : "/tmp");
	t_unique_name(path, sizeof(path), prefix, "accept.sock");
	snprintf(address, sizeof(address), "unix:%s", path);
	assert_int_equal(cqw_listen(&l, address, NULL, 8), 0);
	for (i = 0; i < ROUNDS; i++) {
		one_round(l, address);
	}
	cqw_listener_free(l);
}

static void
listen_unix(cqw_listener **l, char *address, size_t cap, const char *tag)
{
	const char *dir = getenv("TMPDIR");
	char prefix[96], path[128];

	snprintf(prefix, sizeof(prefix), "%s/", dir != NULL ? dir : "/tmp");
	t_unique_name(path, sizeof(path), prefix, tag);
	snprintf(address, cap, "unix:%s", path);
	assert_int_equal(cqw_listen(l, address, NULL, 8), 0);
}

static int
is_poll(uint64_t nr)
{
#ifdef SYS_poll
	if (nr == SYS_poll) {
		return 1;
	}
#endif
	return nr == SYS_ppoll;
}

/* Wait for pid to stop or end, until the deadline: 1, or 0 if it did not. */
static int
wait_stop(pid_t pid, int *status, int64_t until)
{
	pid_t r;

	while ((r = waitpid(pid, status, WNOHANG)) == 0) {
		if (t_now_ms() > until) {
			return 0;
		}
		t_sleep_ms(2);
	}
	assert_int_equal(r, pid);
	return 1;
}

static void
test_accept_race_traced(void **state)
{
	struct __ptrace_syscall_info info;
	char address[160];
	cqw_listener *l;
	cqw_conn *c, *a;
	void *buf = NULL;
	uint64_t last_nr = (uint64_t)-1;
	int status, sig = 0, stolen = 0;
	int64_t until;
	pid_t pid;

	(void)state;
	listen_unix(&l, address, sizeof(address), "accept-t.sock");
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		signal(SIGALRM, SIG_DFL);
		alarm(30);
		if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0) {
			_exit(77);
		}
		raise(SIGSTOP);
		_exit(acceptor(l));
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
		cqw_listener_free(l);
		T_SKIP("ptrace is refused here");
		return;
	}
	assert_true(WIFSTOPPED(status));
	assert_int_equal(
	    ptrace(PTRACE_SETOPTIONS, pid, NULL,
		   (void *)(long)(PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL)),
	    0);
	/* The peer is queued before the child looks: its poll() says so. */
	assert_int_equal(cqw_connect(&c, address, NULL), 0);
	assert_int_equal(cqw_send_bytes(c, hello, sizeof(hello)), 0);

	until = t_now_ms() + TIMEOUT_MS + 3000;
	for (;;) {
		assert_int_equal(
		    ptrace(PTRACE_SYSCALL, pid, NULL, (void *)(long)sig), 0);
		sig = 0;
		if (!wait_stop(pid, &status, until)) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			fail_msg("the loser is asleep past its timeout");
		}
		if (WIFEXITED(status) || WIFSIGNALED(status)) {
			break;
		}
		if (WSTOPSIG(status) != (SIGTRAP | 0x80)) {
			sig = WSTOPSIG(status); /* not ours: deliver it */
			continue;
		}
		assert_true(ptrace(PTRACE_GET_SYSCALL_INFO, pid,
				   (void *)sizeof(info), &info) > 0);
		if (info.op == PTRACE_SYSCALL_INFO_ENTRY) {
			last_nr = info.entry.nr;
		} else if (info.op == PTRACE_SYSCALL_INFO_EXIT && !stolen &&
			   is_poll(last_nr) && info.exit.rval >= 1) {
			/* Between the child's poll() and its accept(). */
			assert_int_equal(cqw_accept(l, &a, 1000), 0);
			assert_int_equal(cqw_recv_bytes(a, &buf, CQW_NONE),
					 sizeof(hello));
			assert_memory_equal(buf, hello, sizeof(hello));
			cqw_free(buf);
			cqw_conn_free(a);
			stolen = 1;
		}
	}
	assert_true(stolen);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), LOST);
	cqw_conn_free(c);
	cqw_listener_free(l);
}

/* What accept hands out is blocking, as Python's accept() makes it. */
static void
test_accepted_blocking(void **state)
{
	const char *dir = getenv("TMPDIR");
	char prefix[96], path[128], address[160];
	cqw_listener *l;
	cqw_conn *a, *c;

	(void)state;
	snprintf(prefix, sizeof(prefix), "%s/", dir != NULL ? dir : "/tmp");
	t_unique_name(path, sizeof(path), prefix, "accept-b.sock");
	snprintf(address, sizeof(address), "unix:%s", path);
	assert_int_equal(cqw_listen(&l, address, NULL, 1), 0);
	assert_int_equal(cqw_connect(&c, address, NULL), 0);
	assert_int_equal(cqw_accept(l, &a, 1000), 0);
	assert_int_equal(fcntl(cqw_conn_fileno(a), F_GETFL) & O_NONBLOCK, 0);
	assert_int_equal(fcntl(cqw_conn_fileno(c), F_GETFL) & O_NONBLOCK, 0);
	cqw_conn_free(a);
	cqw_conn_free(c);
	cqw_listener_free(l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accept_race_traced),
		cmocka_unit_test(test_shared_listener),
		cmocka_unit_test(test_accepted_blocking),
	};

	signal(SIGPIPE, SIG_DFL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
