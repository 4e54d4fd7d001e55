/*
 * EINTR storms: a timer raises a signal every 100 us (SIGUSR1 from
 * timer_create(), handler without SA_RESTART) in every process of a case,
 * while they block in send, receive (large messages, so that calls are
 * long), accept, connect, the handshake (listener with an authkey),
 * cqw_poll(), cqw_wait() and cqw_reap() on each backend. No signal check
 * is set, so every call must retry: nothing lost, torn or duplicated, no
 * error, timeouts neither cut short nor stretched. Each case counts the
 * signals delivered and requires a minimum, or it would prove nothing.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cqwire.h"
#include "t-util.h"

/* Fewer than this many signals in a process: the storm did not happen. */
#define T_MIN_SIGNALS 50

/*
 * The storm's period. Under TSan a signal costs its runtime far more
 * than the 100 us between them (it defers and replays each one), so the
 * processes would do little else: there, one per millisecond.
 */
#if defined(__SANITIZE_THREAD__)
#define T_STORM_NS 1000000L
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define T_STORM_NS 1000000L
#endif
#endif
#ifndef T_STORM_NS
#define T_STORM_NS 100000L
#endif

static volatile sig_atomic_t t_signals;
static timer_t t_timer;

static void
t_on_signal(int sig)
{
	(void)sig;
	t_signals++;
}

/* Start this process's storm (a child starts its own). */
static int
t_storm_start(void)
{
	struct sigevent ev;
	struct itimerspec its = { { 0, T_STORM_NS }, { 0, T_STORM_NS } };
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = t_on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0; /* no SA_RESTART: blocking calls see EINTR */
	if (sigaction(SIGUSR1, &sa, NULL) != 0) {
		return -1;
	}
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGUSR1;
	t_signals = 0;
	if (timer_create(CLOCK_MONOTONIC, &ev, &t_timer) != 0) {
		return -1;
	}
	return timer_settime(t_timer, 0, &its, NULL);
}

static long
t_storm_stop(void)
{
	timer_delete(t_timer);
	signal(SIGUSR1, SIG_IGN);
	return (long)t_signals;
}

/*
 * Message seq of len bytes: its sequence number in the first 8 bytes
 * (when it has them), then the pattern named seq.
 */
static void
t_msg_make(uint8_t *buf, size_t len, uint64_t seq)
{
	t_pattern_fill(buf, len, (unsigned)seq);
	if (len >= 8) {
		memcpy(buf, &seq, 8);
	}
}

static int
t_msg_check(const uint8_t *buf, size_t len, uint64_t seq)
{
	size_t i = 0;

	if (len >= 8) {
		if (memcmp(buf, &seq, 8) != 0) {
			return 0;
		}
		i = 8;
	}
	for (; i < len; i++) {
		if (buf[i] != t_pattern_byte(i, (unsigned)seq)) {
			return 0;
		}
	}
	return 1;
}

/* The sizes sent in each stream, in order: small and large mixed. */
static const size_t t_sizes[] = {
	0,	   1,	    8,	      100, 4096,
	65536 + 3, 1 << 20, 8u << 20, 5,   (16u << 20) + 7,
	0,	   300000,  3u << 20, 17,
};
#define T_NSIZES (sizeof(t_sizes) / sizeof(t_sizes[0]))
#define T_ROUNDS 2

/* Send the stream on c: T_ROUNDS x every size; 0 or an error. */
static int
t_send_stream(cqw_conn *c, uint8_t *buf, uint64_t seq0)
{
	size_t r, i;
	int e;

	for (r = 0; r < T_ROUNDS; r++) {
		for (i = 0; i < T_NSIZES; i++) {
			uint64_t seq = seq0 + r * T_NSIZES + i;

			t_msg_make(buf, t_sizes[i], seq);
			e = cqw_send_bytes(c, buf, t_sizes[i]);
			if (e != 0) {
				return e;
			}
		}
	}
	return 0;
}

/*
 * Receive the stream on c, alternating recv_bytes and recv_bytes_into;
 * 0, an error, or 1 for a wrong message (lost, torn, duplicated).
 */
static int
t_recv_stream(cqw_conn *c, uint8_t *buf, size_t cap, uint64_t seq0)
{
	size_t r, i;
	int64_t n;

	for (r = 0; r < T_ROUNDS; r++) {
		for (i = 0; i < T_NSIZES; i++) {
			uint64_t seq = seq0 + r * T_NSIZES + i;
			void *got = NULL;
			int ok;

			if ((i + r) % 2 == 0) {
				n = cqw_recv_bytes(c, &got, CQW_NONE);
				if (n < 0) {
					return (int)n;
				}
				ok = (size_t)n == t_sizes[i] &&
				     t_msg_check(got, (size_t)n, seq);
				cqw_free(got);
			} else {
				n = cqw_recv_bytes_into(c, buf, cap, 0, NULL);
				if (n < 0) {
					return (int)n;
				}
				ok = (size_t)n == t_sizes[i] &&
				     t_msg_check(buf, (size_t)n, seq);
			}
			if (!ok) {
				fprintf(stderr,
					"message %llu: %lld bytes, wanted "
					"%zu, or not intact\n",
					(unsigned long long)seq, (long long)n,
					t_sizes[i]);
				return 1;
			}
		}
	}
	return 0;
}

/* A child's result and its signal count, through a pipe. */
struct t_child_report {
	int result;
	long signals;
	int64_t ms;
};

static void
t_report(int fd, int result, long signals, int64_t ms)
{
	struct t_child_report rep = { result, signals, ms };

	T_CHILD_CHECK(write(fd, &rep, sizeof(rep)) == sizeof(rep));
}

static void
t_collect(int fd, pid_t pid, struct t_child_report *rep)
{
	ssize_t r;

	do {
		r = read(fd, rep, sizeof(*rep));
	} while (r < 0 && errno == EINTR);
	close(fd);
	t_wait_child(pid);
	assert_int_equal(r, (ssize_t)sizeof(*rep));
}

#define T_BUF_CAP ((16u << 20) + 64)

/*
 * Sync send and receive under a storm in both processes: the parent
 * sends the stream, the child receives it and (duplex) sends its own
 * back, which the parent receives.
 */
static void
t_stream_case(unsigned flags, long *sig_parent, long *sig_child)
{
	struct t_child_report rep;
	cqw_conn *a, *b, *mine, *theirs;
	uint8_t *buf = malloc(T_BUF_CAP);
	int fds[2], duplex = (flags & CQW_DUPLEX) == CQW_DUPLEX;
	long sigs;
	pid_t pid;

	assert_non_null(buf);
	assert_int_equal(cqw_pipe(&a, &b, flags), 0);
	/* Simplex: a reads, b writes; the child reads. */
	mine = duplex ? a : b;
	theirs = duplex ? b : a;
	assert_int_equal(pipe(fds), 0);
	pid = t_fork();
	if (pid == 0) {
		int64_t t0 = t_now_ms();
		int r;

		close(fds[0]);
		cqw_conn_free(mine);
		T_CHILD_CHECK(t_storm_start() == 0);
		r = t_recv_stream(theirs, buf, T_BUF_CAP, 0);
		if (r == 0 && duplex) {
			r = t_send_stream(theirs, buf, 1000);
		}
		t_report(fds[1], r, t_storm_stop(), t_now_ms() - t0);
		_exit(0);
	}
	close(fds[1]);
	cqw_conn_free(theirs);
	assert_int_equal(t_storm_start(), 0);
	assert_int_equal(t_send_stream(mine, buf, 0), 0);
	if (duplex) {
		assert_int_equal(t_recv_stream(mine, buf, T_BUF_CAP, 1000), 0);
	}
	sigs = t_storm_stop();
	t_collect(fds[0], pid, &rep);
	assert_int_equal(rep.result, 0);
	*sig_parent += sigs;
	*sig_child += rep.signals;
	assert_true(sigs >= T_MIN_SIGNALS);
	assert_true(rep.signals >= T_MIN_SIGNALS);
	cqw_conn_free(mine);
	free(buf);
}

static void
test_fault_eintr_send_recv(void **state)
{
	static const unsigned kinds[] = { CQW_DUPLEX,
					  CQW_DUPLEX | CQW_EXCLUSIVE, 0,
					  CQW_EXCLUSIVE };
	long sp = 0, sc = 0;
	size_t i;

	(void)state;
	for (i = 0; i < 4; i++) {
		t_stream_case(kinds[i], &sp, &sc);
	}
	print_message("[  EINTR   ] storm period %ld us; send/recv: 4 pair "
		      "kinds, %zu messages "
		      "each way (0 B..16 MiB): intact, in order; signals "
		      "delivered: %ld in senders/receivers (parent), %ld "
		      "(child)\n",
		      T_STORM_NS / 1000, T_ROUNDS * T_NSIZES, sp, sc);
}

/* Listener with an authkey; the child connects T_CONNECTS times. */
#define T_CONNECTS 20

static const struct cqw_auth t_auth = { .key = "storm", .keylen = 5 };

static int
t_connector(const char *address)
{
	int i;

	for (i = 0; i < T_CONNECTS; i++) {
		cqw_conn *c = NULL;
		char buf[32];
		int64_t n;
		int r;

		/* Let the parent block in accept first. */
		t_sleep_ms(3);
		r = cqw_connect(&c, address, &t_auth);
		if (r != 0) {
			fprintf(stderr, "connect %d: %s\n", i, cqw_err_name(r));
			return r;
		}
		snprintf(buf, sizeof(buf), "hello %d", i);
		r = cqw_send_bytes(c, buf, strlen(buf));
		n = cqw_recv_bytes_into(c, buf, sizeof(buf), 0, NULL);
		cqw_conn_free(c);
		if (r != 0 || n != 2 || memcmp(buf, "ok", 2) != 0) {
			fprintf(stderr, "exchange %d: %s / %lld\n", i,
				cqw_err_name(r), (long long)n);
			return 1;
		}
	}
	return 0;
}

static void
t_accept_case(const char *address_in, long *sp, long *sc)
{
	struct t_child_report rep;
	cqw_listener *l;
	char want[32], buf[32];
	const char *address;
	int fds[2], i;
	long sigs;
	pid_t pid;

	assert_int_equal(cqw_listen(&l, address_in, &t_auth, 4), 0);
	address = cqw_listener_address(l);
	assert_non_null(address);
	assert_int_equal(pipe(fds), 0);
	pid = t_fork();
	if (pid == 0) {
		int64_t t0 = t_now_ms();
		int r;

		close(fds[0]);
		T_CHILD_CHECK(t_storm_start() == 0);
		r = t_connector(address);
		t_report(fds[1], r, t_storm_stop(), t_now_ms() - t0);
		_exit(0);
	}
	close(fds[1]);
	assert_int_equal(t_storm_start(), 0);
	for (i = 0; i < T_CONNECTS; i++) {
		cqw_conn *c = NULL;
		int64_t n;

		assert_int_equal(cqw_accept(l, &c, -1), 0);
		n = cqw_recv_bytes_into(c, buf, sizeof(buf), 0, NULL);
		snprintf(want, sizeof(want), "hello %d", i);
		assert_int_equal(n, (int64_t)strlen(want));
		assert_memory_equal(buf, want, (size_t)n);
		assert_int_equal(cqw_send_bytes(c, "ok", 2), 0);
		cqw_conn_free(c);
	}
	sigs = t_storm_stop();
	t_collect(fds[0], pid, &rep);
	assert_int_equal(rep.result, 0);
	assert_true(sigs >= T_MIN_SIGNALS);
	assert_true(rep.signals >= T_MIN_SIGNALS);
	*sp += sigs;
	*sc += rep.signals;
	cqw_listener_free(l);
}

static void
test_fault_eintr_accept_connect_handshake(void **state)
{
	char addr[108];
	long sp = 0, sc = 0;

	(void)state;
	t_accept_case(t_unique_name(addr, sizeof(addr), "unix:@", "storm"), &sp,
		      &sc);
	t_accept_case("tcp:127.0.0.1:0", &sp, &sc);
	print_message("[  EINTR   ] accept/connect/handshake: 2 x %d "
		      "authenticated connections (unix, tcp), each one "
		      "exchange; signals delivered: %ld (listener), %ld "
		      "(client)\n",
		      T_CONNECTS, sp, sc);
}

/*
 * cqw_poll(), cqw_wait() and, per backend, cqw_reap(): block with no
 * timeout until the child sends, and time out on the dot with none.
 */
#define T_WAKES 20

static int
t_slow_sender(cqw_conn *c)
{
	char msg[8];
	int i, r;

	for (i = 0; i < T_WAKES; i++) {
		t_sleep_ms(5);
		snprintf(msg, sizeof(msg), "w%d", i);
		r = cqw_send_bytes(c, msg, strlen(msg));
		if (r != 0) {
			return r;
		}
	}
	return 0;
}

/* A timed wait of 60 ms must last 60 ms, neither less nor much more. */
static void
t_check_timeout(int64_t t0, int r)
{
	int64_t dt = t_now_ms() - t0;

	assert_int_equal(r, 0);
	assert_true(dt >= 59);
	assert_true(dt < 600);
}

enum t_waiter { T_POLL, T_WAIT, T_REAP_POLL, T_REAP_URING };

static const char *const t_waiter_names[] = { "cqw_poll", "cqw_wait",
					      "cqw_reap (poll)",
					      "cqw_reap (uring)" };

static long
t_wait_case(enum t_waiter how)
{
	struct t_child_report rep;
	struct cqw_loop_opts opts = {
		.backend =
		    how == T_REAP_URING ? CQW_BACKEND_URING : CQW_BACKEND_POLL,
	};
	cqw_loop *loop = NULL;
	struct cqw_op op, *done[1];
	cqw_conn *a, *b;
	char buf[16], want[16];
	int fds[2], i, r;
	int64_t t0, n;
	long sigs;
	pid_t pid;

	if (how >= T_REAP_POLL) {
		r = cqw_loop_new(&loop, &opts);
		if (r == CQW_ENOSYS || r == CQW_EPERM) {
			return -1; /* no ring here: said by the caller */
		}
		assert_int_equal(r, 0);
	}
	assert_int_equal(cqw_pipe(&a, &b, CQW_DUPLEX), 0);
	assert_int_equal(pipe(fds), 0);
	pid = t_fork();
	if (pid == 0) {
		int64_t c0 = t_now_ms();

		close(fds[0]);
		cqw_conn_free(a);
		T_CHILD_CHECK(t_storm_start() == 0);
		r = t_slow_sender(b);
		t_report(fds[1], r, t_storm_stop(), t_now_ms() - c0);
		_exit(0);
	}
	close(fds[1]);
	assert_int_equal(t_storm_start(), 0);
	for (i = 0; i < T_WAKES; i++) {
		struct cqw_wait_item it = { .conn = a, .fd = -1 };

		switch (how) {
		case T_POLL:
			assert_int_equal(cqw_poll(a, -1), 1);
			break;
		case T_WAIT:
			assert_int_equal(cqw_wait(&it, 1, -1), 1);
			assert_int_equal(it.ready, 1);
			break;
		default:
			break;
		}
		snprintf(want, sizeof(want), "w%d", i);
		if (how >= T_REAP_POLL) {
			memset(&op, 0, sizeof(op));
			op.kind = CQW_OP_RECV;
			op.conn = a;
			op.buf = buf;
			op.len = sizeof(buf);
			assert_int_equal(cqw_submit(loop, &op), 0);
			assert_int_equal(cqw_reap(loop, done, 1, -1), 1);
			assert_ptr_equal(done[0], &op);
			n = op.result;
		} else {
			n = cqw_recv_bytes_into(a, buf, sizeof(buf), 0, NULL);
		}
		assert_int_equal(n, (int64_t)strlen(want));
		assert_memory_equal(buf, want, (size_t)n);
	}
	/*
	 * Nothing more comes: timed waits last their time. A reap with
	 * nothing in flight returns at once, so a receive waits in it.
	 */
	if (how >= T_REAP_POLL) {
		memset(&op, 0, sizeof(op));
		op.kind = CQW_OP_RECV;
		op.conn = a;
		op.buf = buf;
		op.len = sizeof(buf);
		assert_int_equal(cqw_submit(loop, &op), 0);
	}
	for (i = 0; i < 3; i++) {
		struct cqw_wait_item it = { .conn = a, .fd = -1 };

		t0 = t_now_ms();
		if (how == T_POLL) {
			t_check_timeout(t0, cqw_poll(a, 60));
		} else if (how == T_WAIT) {
			t_check_timeout(t0, cqw_wait(&it, 1, 60));
		} else {
			t_check_timeout(t0, cqw_reap(loop, done, 1, 60));
		}
	}
	if (how >= T_REAP_POLL) {
		assert_int_equal(cqw_cancel(loop, &op), 0);
		assert_int_equal(cqw_reap(loop, done, 1, 1000), 1);
		assert_int_equal(op.result, CQW_ECANCELED);
	}
	sigs = t_storm_stop();
	t_collect(fds[0], pid, &rep);
	assert_int_equal(rep.result, 0);
	assert_true(sigs >= T_MIN_SIGNALS);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
	return sigs;
}

static void
test_fault_eintr_poll_wait_reap(void **state)
{
	enum t_waiter how;
	long sigs;

	(void)state;
	for (how = T_POLL; how <= T_REAP_URING; how++) {
		sigs = t_wait_case(how);
		if (sigs < 0) {
			print_message("[  EINTR   ] %s: skipped, io_uring "
				      "cannot run here\n",
				      t_waiter_names[how]);
			continue;
		}
		print_message("[  EINTR   ] %s: %d blocking waits woken by "
			      "data, 3 timeouts of 60 ms on time; %ld signals "
			      "delivered to the waiter\n",
			      t_waiter_names[how], T_WAKES, sigs);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fault_eintr_send_recv),
		cmocka_unit_test(test_fault_eintr_accept_connect_handshake),
		cmocka_unit_test(test_fault_eintr_poll_wait_reap),
	};

	signal(SIGPIPE, SIG_DFL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
