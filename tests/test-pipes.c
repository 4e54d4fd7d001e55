/*
 * Pipes and pipe-like files, on the loop named by CQW_BACKEND:
 *
 * - RWF_NOWAIT is known per descriptor. A FIFO opened by name and a pty
 *   refuse it (EOPNOTSUPP); after a connection on one met that, a loop
 *   write to a full ordinary pipe must still not block the loop thread,
 *   and the FIFO or pty connection must still carry messages whole.
 * - SIGPIPE never reaches the program for a write of ours to a pipe whose
 *   reader is gone (its default action would kill us), a SIGPIPE that is
 *   the program's own is never taken, and the thread's signal mask is the
 *   same after the call as before. Also for a write the loop has waiting
 *   when the reader dies, and a blocking write the reader leaves midway.
 *
 * Every SIGPIPE case runs in a child, so that a failure shows as "child
 * died by signal 13" instead of killing the runner.
 */
#include "t-util.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <termios.h>

#define T_RESULT(expr, want)                                               \
	do {                                                               \
		int64_t t_r_ = (int64_t)(expr);                            \
		if (t_r_ != (int64_t)(want)) {                             \
			fail_msg("%s = %lld (%s), expected %lld", #expr,   \
				 (long long)t_r_,                          \
				 t_r_ < 0 ? cqw_err_name((int)t_r_) : "-", \
				 (long long)(want));                       \
		}                                                          \
	} while (0)

/* A reader end (r) and a writer end (w); they may be one duplex pair. */
struct pair {
	cqw_conn *r;
	cqw_conn *w;
	char path[128]; /* a FIFO's, to unlink */
};

static void
op_init(struct cqw_op *op, int kind, cqw_conn *c, void *buf, size_t len)
{
	memset(op, 0, sizeof(*op));
	op->kind = kind;
	op->conn = c;
	op->buf = buf;
	op->len = len;
}

/* Reap until every op in want[0..n) has completed, or fail after 10 s. */
static void
reap_all(cqw_loop *loop, struct cqw_op **want, int n)
{
	int64_t until = t_now_ms() + 10000;
	struct cqw_op *done[8];
	int left = n, r, i, j;

	while (left > 0) {
		if (t_now_ms() > until) {
			fail_msg("%d of %d ops never completed", left, n);
		}
		r = cqw_reap(loop, done, 8, 500);
		assert_true(r >= 0);
		for (i = 0; i < r; i++) {
			for (j = 0; j < n; j++) {
				if (done[i] == want[j]) {
					want[j] = NULL;
					left--;
				}
			}
		}
	}
}

/*
 * A FIFO made in the temporary directory: read end r, write end w. 0 or
 * an error (no cmocka assertions: children call it too).
 */
static int
fifo_pair(struct pair *p)
{
	const char *dir = getenv("TMPDIR");
	char prefix[96];
	int rfd, wfd, err;

	snprintf(prefix, sizeof(prefix), "%s/", dir != NULL ? dir : "/tmp");
	t_unique_name(p->path, sizeof(p->path), prefix, "fifo");
	if (mkfifo(p->path, 0600) != 0) {
		return -errno;
	}
	/* Open both ends without waiting, then make the reader blocking. */
	rfd = open(p->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (rfd < 0) {
		return -errno;
	}
	wfd = open(p->path, O_WRONLY | O_CLOEXEC);
	if (wfd < 0 || fcntl(rfd, F_SETFL, 0) != 0) {
		err = -errno;
		close(rfd);
		return err;
	}
	err = cqw_conn_from_fd(&p->r, rfd, CQW_READABLE);
	if (err < 0) {
		close(wfd);
		return err;
	}
	return cqw_conn_from_fd(&p->w, wfd, CQW_WRITABLE);
}

/* A pty in raw mode: w on the master, r on the terminal side. */
static int
pty_pair(struct pair *p)
{
	struct termios tio;
	int m, s, err;

	p->path[0] = '\0';
	m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (m < 0) {
		return -errno;
	}
	if (grantpt(m) != 0 || unlockpt(m) != 0 ||
	    (s = open(ptsname(m), O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
		err = -errno;
		close(m);
		return err;
	}
	/* Bytes as they are: no line editing, echo or newline mapping. */
	if (tcgetattr(s, &tio) == 0) {
		cfmakeraw(&tio);
	}
	if (tcsetattr(s, TCSANOW, &tio) != 0) {
		err = -errno;
		close(s);
		close(m);
		return err;
	}
	err = cqw_conn_from_fd(&p->r, s, CQW_DUPLEX);
	if (err < 0) {
		close(m);
		return err;
	}
	return cqw_conn_from_fd(&p->w, m, CQW_DUPLEX);
}

static void
pair_free(struct pair *p)
{
	cqw_conn_free(p->r);
	cqw_conn_free(p->w);
	if (p->path[0] != '\0') {
		unlink(p->path);
	}
}

/*
 * Does this kernel refuse RWF_NOWAIT on the write end fd (what the test
 * relies on)? If it takes it, a byte went in, and the test skips.
 */
static int
refuses_nowait(int fd)
{
	char byte = 0;
	struct iovec v = { .iov_base = &byte, .iov_len = 1 };

	return pwritev2(fd, &v, 1, -1, RWF_NOWAIT) < 0 && errno == EOPNOTSUPP;
}

/* Send each size through the loop from p->w to p->r: whole, in order. */
static void
carry(cqw_loop *loop, struct pair *p, const size_t *sizes, int n)
{
	static uint8_t out[80000], in[80000];
	struct cqw_op s, r, *want[2];
	int i;

	for (i = 0; i < n; i++) {
		assert_true(sizes[i] <= sizeof(out));
		t_pattern_fill(out, sizes[i], (unsigned)i + 1);
		memset(in, 0, sizes[i]);
		op_init(&s, CQW_OP_SEND, p->w, out, sizes[i]);
		op_init(&r, CQW_OP_RECV, p->r, in, sizeof(in));
		T_RESULT(cqw_submit(loop, &s), 0);
		T_RESULT(cqw_submit(loop, &r), 0);
		want[0] = &s;
		want[1] = &r;
		reap_all(loop, want, 2);
		T_RESULT(s.result, 0);
		T_RESULT(r.result, sizes[i]);
		assert_true(t_pattern_check(in, sizes[i], (unsigned)i + 1));
	}
}

struct drainer {
	int fd;
	int delay_ms;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stop;
	int drained;
};

/*
 * Unless told to stop within delay_ms, read the pipe until it stays empty
 * for 500 ms. As the watchdog of a test that must not block, it lets a
 * write blocked in the kernel return, so that the test fails on its time
 * bound instead of hanging.
 */
static void *
drain_after(void *arg)
{
	struct drainer *d = arg;
	struct timespec until;
	struct pollfd pfd;
	char buf[65536];
	int r = 0;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += d->delay_ms / 1000;
	until.tv_nsec += (long)(d->delay_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&d->mu);
	while (!d->stop && r == 0) {
		r = pthread_cond_timedwait(&d->cv, &d->mu, &until);
	}
	d->drained = !d->stop;
	pthread_mutex_unlock(&d->mu);
	if (!d->drained) {
		return NULL;
	}
	pfd.fd = d->fd;
	pfd.events = POLLIN;
	while (poll(&pfd, 1, 500) > 0 && read(d->fd, buf, sizeof(buf)) > 0) {
	}
	return NULL;
}

static void
drainer_start(struct drainer *d, pthread_t *th, int delay_ms)
{
	d->delay_ms = delay_ms;
	d->stop = 0;
	d->drained = 0;
	assert_int_equal(pthread_create(th, NULL, drain_after, d), 0);
}

static void
drainer_stop(struct drainer *d, pthread_t th)
{
	pthread_mutex_lock(&d->mu);
	d->stop = 1;
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
	pthread_join(th, NULL);
}

/*
 * A loop send to an ordinary pipe that nobody reads: the first part fills
 * the pipe, the rest must wait in the loop, not in the kernel. cqw_reap()
 * with a 200 ms timeout returns no completion after 200 ms, not later.
 */
static void
full_pipe_does_not_block(cqw_loop *loop)
{
	static uint8_t big[1 << 20];
	struct drainer d;
	struct cqw_op op, *done[1], *want[1];
	cqw_conn *rd, *wr;
	pthread_t th;
	int64_t t0, dt;
	int r;

	T_RESULT(cqw_pipe(&rd, &wr, 0), 0);
	memset(&d, 0, sizeof(d));
	d.fd = cqw_conn_fileno(rd);
	pthread_mutex_init(&d.mu, NULL);
	pthread_cond_init(&d.cv, NULL);
	drainer_start(&d, &th, 3000);

	op_init(&op, CQW_OP_SEND, wr, big, sizeof(big));
	t0 = t_now_ms();
	T_RESULT(cqw_submit(loop, &op), 0);
	r = cqw_reap(loop, done, 1, 200);
	dt = t_now_ms() - t0;
	drainer_stop(&d, th);
	print_message("full pipe: reap %d after %lld ms (%s)\n", r,
		      (long long)dt, d.drained ? "blocked" : "did not block");
	assert_false(d.drained);
	T_RESULT(r, 0);
	assert_true(dt >= 190 && dt <= 1500);

	/* Let it finish: the send is partly out, so it is not cancelled. */
	drainer_start(&d, &th, 0);
	want[0] = &op;
	reap_all(loop, want, 1);
	T_RESULT(op.result, 0);
	drainer_stop(&d, th);
	pthread_mutex_destroy(&d.mu);
	pthread_cond_destroy(&d.cv);
	cqw_conn_free(rd);
	cqw_conn_free(wr);
}

/*
 * sizes and big: the messages to carry. A pty holds about 20 KiB and
 * polls writable with less than PIPE_BUF free, so a write there may sleep
 * until its reader takes some: its messages stay well below that.
 */
static void
nowait_refused_then(int (*make)(struct pair *p), const char *what, size_t big)
{
	const size_t first[] = { 100 };
	const size_t sizes[] = { 0, 1, 4095, 4096, 4097, big, 3 };
	struct pair p;
	cqw_loop *loop;
	int r;

	memset(&p, 0, sizeof(p));
	r = make(&p);
	if (r < 0) {
		print_message("no %s here: %s\n", what, cqw_strerror(r));
		T_SKIP("cannot make the descriptor");
		return;
	}
	if (!refuses_nowait(cqw_conn_fileno(p.w))) {
		pair_free(&p);
		T_SKIP("this kernel takes RWF_NOWAIT on it: nothing to test");
		return;
	}
	T_RESULT(cqw_loop_new(&loop, NULL), 0);
	print_message("%s on the %s loop\n", what, cqw_loop_backend(loop));
	/* Both ends meet EOPNOTSUPP here. */
	carry(loop, &p, first, 1);
	/* The process-wide switch of old: this would now block. */
	full_pipe_does_not_block(loop);
	/* And the refusing descriptor still works, messages whole. */
	carry(loop, &p, sizes, (int)(sizeof(sizes) / sizeof(sizes[0])));
	cqw_loop_free(loop);
	pair_free(&p);
}

static void
test_nowait_refused_fifo(void **state)
{
	(void)state;
	nowait_refused_then(fifo_pair, "FIFO", 70000);
}

static void
test_nowait_refused_pty(void **state)
{
	(void)state;
	nowait_refused_then(pty_pair, "pty", 8000);
}

/* ------------------------------------------------------------------
 * SIGPIPE
 */

static int
sigpipe_pending(void)
{
	sigset_t set;

	T_CHILD_CHECK(sigpending(&set) == 0);
	return sigismember(&set, SIGPIPE);
}

static void
mask_now(sigset_t *set)
{
	T_CHILD_CHECK(pthread_sigmask(SIG_SETMASK, NULL, set) == 0);
}

static int
same_mask(const sigset_t *a, const sigset_t *b)
{
	int s;

	for (s = 1; s < NSIG; s++) {
		if (sigismember(a, s) != sigismember(b, s)) {
			return 0;
		}
	}
	return 1;
}

static void
block_sigpipe(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	T_CHILD_CHECK(pthread_sigmask(SIG_BLOCK, &set, NULL) == 0);
}

/* Take one pending SIGPIPE: 1 if there was one. */
static int
take_sigpipe(void)
{
	static const struct timespec zero = { 0, 0 };
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	return sigtimedwait(&set, NULL, &zero) == SIGPIPE;
}

/* A pipe whose reader is gone: returns the writer. */
static cqw_conn *
widowed_pipe(void)
{
	cqw_conn *r, *w;

	T_CHILD_CHECK(cqw_pipe(&r, &w, 0) == 0);
	cqw_conn_free(r);
	return w;
}

/* One send to a widowed pipe: CQW_EPIPE, and the mask as it was. */
static void
send_epipe(void)
{
	sigset_t before, after;
	cqw_conn *w = widowed_pipe();

	mask_now(&before);
	T_CHILD_CHECK(cqw_send_bytes(w, "x", 1) == CQW_EPIPE);
	mask_now(&after);
	T_CHILD_CHECK(same_mask(&before, &after));
	cqw_conn_free(w);
}

static volatile sig_atomic_t handled;

static void
on_sigpipe(int sig)
{
	(void)sig;
	handled++;
}

/* Default disposition: the process would die; it gets CQW_EPIPE. */
static int
child_default(void *arg)
{
	(void)arg;
	signal(SIGPIPE, SIG_DFL);
	send_epipe();
	send_epipe();
	T_CHILD_CHECK(!sigpipe_pending());
	return 0;
}

/* The program blocks SIGPIPE itself: ours is not left pending. */
static int
child_blocked(void *arg)
{
	(void)arg;
	signal(SIGPIPE, SIG_DFL);
	block_sigpipe();
	send_epipe();
	T_CHILD_CHECK(!sigpipe_pending());
	return 0;
}

/* The program's own pending SIGPIPE stays, through failing sends too. */
static int
child_program_pending(void *arg)
{
	cqw_conn *r, *w;
	char buf[8];
	size_t need;

	(void)arg;
	signal(SIGPIPE, SIG_DFL);
	block_sigpipe();
	T_CHILD_CHECK(raise(SIGPIPE) == 0);
	T_CHILD_CHECK(sigpipe_pending());
	send_epipe();
	T_CHILD_CHECK(sigpipe_pending());
	/* And through a send that works. */
	T_CHILD_CHECK(cqw_pipe(&r, &w, 0) == 0);
	T_CHILD_CHECK(cqw_send_bytes(w, "abc", 3) == 0);
	T_CHILD_CHECK(sigpipe_pending());
	T_CHILD_CHECK(cqw_recv_bytes_into(r, buf, sizeof(buf), 0, &need) == 3);
	cqw_conn_free(r);
	cqw_conn_free(w);
	T_CHILD_CHECK(take_sigpipe());
	T_CHILD_CHECK(!sigpipe_pending());
	return 0;
}

/* A handler of the program's never sees our SIGPIPE; its own, it does. */
static int
child_handler(void *arg)
{
	struct sigaction sa;

	(void)arg;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigpipe;
	sigemptyset(&sa.sa_mask);
	T_CHILD_CHECK(sigaction(SIGPIPE, &sa, NULL) == 0);
	send_epipe();
	T_CHILD_CHECK(handled == 0);
	T_CHILD_CHECK(raise(SIGPIPE) == 0);
	T_CHILD_CHECK(handled == 1);
	return 0;
}

/*
 * Ignored, then not: a guard that saw "ignored" once must look again and
 * hold the signal off when the program goes back to the default.
 */
static int
child_ignored_then_default(void *arg)
{
	(void)arg;
	signal(SIGPIPE, SIG_IGN);
	send_epipe();
	send_epipe();
	signal(SIGPIPE, SIG_DFL);
	send_epipe();
	signal(SIGPIPE, SIG_IGN);
	send_epipe();
	signal(SIGPIPE, SIG_DFL);
	send_epipe();
	T_CHILD_CHECK(!sigpipe_pending());
	return 0;
}

static void
test_sigpipe_default(void **state)
{
	(void)state;
	t_wait_child(t_fork_child(child_default, NULL));
}

static void
test_sigpipe_blocked(void **state)
{
	(void)state;
	t_wait_child(t_fork_child(child_blocked, NULL));
}

static void
test_sigpipe_program_pending(void **state)
{
	(void)state;
	t_wait_child(t_fork_child(child_program_pending, NULL));
}

static void
test_sigpipe_handler(void **state)
{
	(void)state;
	t_wait_child(t_fork_child(child_handler, NULL));
}

static void
test_sigpipe_ignored_then_default(void **state)
{
	(void)state;
	t_wait_child(t_fork_child(child_ignored_then_default, NULL));
}

/*
 * Hand the read end of p to a grandchild that reads nothing (or skip
 * bytes), waits ms and exits: the reader dies while we write.
 */
static pid_t
reader_dies_after(cqw_conn *rd, size_t skip, int ms)
{
	pid_t pid;
	int fd = cqw_conn_fileno(rd);

	pid = fork();
	T_CHILD_CHECK(pid >= 0);
	if (pid == 0) {
		char buf[4096];
		size_t got = 0;
		ssize_t n;

		while (got < skip) {
			n = read(fd, buf,
				 skip - got < sizeof(buf) ? skip - got
							  : sizeof(buf));
			if (n <= 0) {
				_exit(1);
			}
			got += (size_t)n;
		}
		t_sleep_ms(ms);
		_exit(0);
	}
	cqw_conn_free(rd); /* only the grandchild reads now */
	return pid;
}

static void
reap_grandchild(pid_t pid)
{
	int status;

	T_CHILD_CHECK(waitpid(pid, &status, 0) == pid);
	T_CHILD_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/*
 * A loop send of 1 MiB that fills the pipe and waits; the reader dies
 * 300 ms later. The send completes with CQW_EPIPE, the process lives.
 */
static int
child_loop_reader_dies(void *arg)
{
	static uint8_t big[1 << 20];
	int fifo = arg != NULL; /* else an ordinary pipe */
	struct cqw_op op, *done[1];
	sigset_t before, after;
	struct pair p;
	cqw_loop *loop;
	int64_t t0, dt;
	pid_t pid;
	int r;

	signal(SIGPIPE, SIG_DFL);
	memset(&p, 0, sizeof(p));
	if (fifo) {
		T_CHILD_CHECK(fifo_pair(&p) == 0);
	} else {
		T_CHILD_CHECK(cqw_pipe(&p.r, &p.w, 0) == 0);
	}
	T_CHILD_CHECK(cqw_loop_new(&loop, NULL) == 0);
	mask_now(&before);
	pid = reader_dies_after(p.r, 0, 300);
	p.r = NULL;
	memset(&op, 0, sizeof(op));
	op.kind = CQW_OP_SEND;
	op.conn = p.w;
	op.buf = big;
	op.len = sizeof(big);
	t0 = t_now_ms();
	T_CHILD_CHECK(cqw_submit(loop, &op) == 0);
	r = cqw_reap(loop, done, 1, 5000);
	dt = t_now_ms() - t0;
	fprintf(stderr,
		"loop (%s: %s) send, reader died: reap %d, %s after %lld ms\n",
		cqw_loop_backend(loop), cqw_loop_features(loop), r,
		r == 1 ? cqw_err_name((int)op.result) : "-", (long long)dt);
	T_CHILD_CHECK(r == 1 && done[0] == &op);
	T_CHILD_CHECK(op.result == CQW_EPIPE);
	T_CHILD_CHECK(dt >= 250 && dt <= 4000);
	mask_now(&after);
	T_CHILD_CHECK(same_mask(&before, &after));
	T_CHILD_CHECK(!sigpipe_pending());
	reap_grandchild(pid);
	cqw_loop_free(loop);
	pair_free(&p);
	return 0;
}

static void
test_sigpipe_loop_reader_dies(void **state)
{
	(void)state;
	t_wait_child(t_fork_child(child_loop_reader_dies, NULL));
}

static void
test_sigpipe_loop_reader_dies_fifo(void **state)
{
	(void)state;
	t_wait_child(t_fork_child(child_loop_reader_dies, "fifo"));
}

/*
 * A blocking send of 1 MiB; the reader takes 1000 bytes and dies. The
 * write asleep in the kernel returns short (and raises SIGPIPE), the next
 * one fails: CQW_EPIPE, and the process lives.
 */
static int
child_sync_reader_dies(void *arg)
{
	static uint8_t big[1 << 20];
	sigset_t before, after;
	cqw_conn *rd, *wr;
	int64_t t0, dt;
	pid_t pid;
	int r;

	(void)arg;
	signal(SIGPIPE, SIG_DFL);
	T_CHILD_CHECK(cqw_pipe(&rd, &wr, 0) == 0);
	mask_now(&before);
	pid = reader_dies_after(rd, 1000, 300);
	t0 = t_now_ms();
	r = cqw_send_bytes(wr, big, sizeof(big));
	dt = t_now_ms() - t0;
	T_CHILD_CHECK(r == CQW_EPIPE);
	T_CHILD_CHECK(dt >= 250 && dt <= 4000);
	mask_now(&after);
	T_CHILD_CHECK(same_mask(&before, &after));
	T_CHILD_CHECK(!sigpipe_pending());
	reap_grandchild(pid);
	cqw_conn_free(wr);
	return 0;
}

static void
test_sigpipe_sync_reader_dies(void **state)
{
	(void)state;
	t_wait_child(t_fork_child(child_sync_reader_dies, NULL));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nowait_refused_fifo),
		cmocka_unit_test(test_nowait_refused_pty),
		cmocka_unit_test(test_sigpipe_default),
		cmocka_unit_test(test_sigpipe_blocked),
		cmocka_unit_test(test_sigpipe_program_pending),
		cmocka_unit_test(test_sigpipe_handler),
		cmocka_unit_test(test_sigpipe_ignored_then_default),
		cmocka_unit_test(test_sigpipe_sync_reader_dies),
		cmocka_unit_test(test_sigpipe_loop_reader_dies),
		cmocka_unit_test(test_sigpipe_loop_reader_dies_fifo),
	};

	t_backend_or_skip();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
