/*
 * io_uring specifics: a forced ring really is io_uring, a tiny SQ
 * overflows into the internal FIFO without losing or reordering anything,
 * and a pipe write to a closed reader raises no SIGPIPE through the ring.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <fcntl.h>
#include <termios.h>

#include <cqwire.h>

#include "t-util.h"

static cqw_loop *
t_ring(unsigned entries)
{
	struct cqw_loop_opts o = { .backend = CQW_BACKEND_URING,
				   .entries = entries };
	cqw_loop *loop = NULL;
	int r = cqw_loop_new(&loop, &o);

	if (r == CQW_EPERM || r == CQW_ENOSYS) {
		const char *req = getenv("CQW_REQUIRE_PEERS");

		/* Where io_uring must run (CI here), refusal is a failure. */
		if (req != NULL && strstr(req, "uring") != NULL) {
			fail_msg("io_uring refused: %s", cqw_strerror(r));
		}
		printf("skip: io_uring refused here: %s\n", cqw_strerror(r));
		return NULL;
	}
	assert_int_equal(r, 0);
	return loop;
}

/* Env knobs are read at ring setup: set them for one cqw_loop_new(). */
struct t_env {
	char *setup, *no_ext;
};

static char *
t_getenv_dup(const char *name)
{
	const char *v = getenv(name);

	return v != NULL ? strdup(v) : NULL;
}

static void
t_env_set(struct t_env *saved, const char *setup, const char *no_ext)
{
	saved->setup = t_getenv_dup("CQW_URING_SETUP");
	saved->no_ext = t_getenv_dup("CQW_URING_NO_EXT_ARG");
	if (setup != NULL) {
		setenv("CQW_URING_SETUP", setup, 1);
	} else {
		unsetenv("CQW_URING_SETUP");
	}
	if (no_ext != NULL) {
		setenv("CQW_URING_NO_EXT_ARG", no_ext, 1);
	} else {
		unsetenv("CQW_URING_NO_EXT_ARG");
	}
}

static void
t_env_restore(struct t_env *saved)
{
	if (saved->setup != NULL) {
		setenv("CQW_URING_SETUP", saved->setup, 1);
	} else {
		unsetenv("CQW_URING_SETUP");
	}
	if (saved->no_ext != NULL) {
		setenv("CQW_URING_NO_EXT_ARG", saved->no_ext, 1);
	} else {
		unsetenv("CQW_URING_NO_EXT_ARG");
	}
	free(saved->setup);
	free(saved->no_ext);
}

/*
 * A ring with flag set setup ("defer", "coop", "none", NULL: auto) and
 * the extended argument masked if no_ext; *err gets cqw_loop_new()'s
 * result. NULL if the kernel refuses.
 */
static cqw_loop *
t_ring_with(unsigned entries, const char *setup, int no_ext, int *err)
{
	struct cqw_loop_opts o = { .backend = CQW_BACKEND_URING,
				   .entries = entries };
	struct t_env saved;
	cqw_loop *loop = NULL;

	t_env_set(&saved, setup, no_ext ? "1" : NULL);
	*err = cqw_loop_new(&loop, &o);
	t_env_restore(&saved);
	return *err == 0 ? loop : NULL;
}

static const char *const t_setups[] = { "defer", "coop", "none" };
#define T_NSETUPS (sizeof(t_setups) / sizeof(t_setups[0]))

/* Each forced flag set is what the loop reports, with and without ext_arg. */
static void
test_uring_setup_knob_features(void **state)
{
	static const char *const want[] = {
		"single_issuer,defer_taskrun",
		"coop_taskrun",
		"",
	};
	char expect[96];
	cqw_loop *loop;
	size_t i;
	int no_ext, err, ran = 0;

	(void)state;
	for (i = 0; i < T_NSETUPS; i++) {
		for (no_ext = 0; no_ext <= 1; no_ext++) {
			loop = t_ring_with(0, t_setups[i], no_ext, &err);
			if (loop == NULL) {
				printf("note: setup %s refused here: %s\n",
				       t_setups[i], cqw_strerror(err));
				continue;
			}
			snprintf(expect, sizeof(expect), "%s%s%s", want[i],
				 !no_ext && want[i][0] != '\0' ? "," : "",
				 no_ext ? "" : "ext_arg");
			/* A kernel without EXT_ARG (5.10) never reports it. */
			if (!no_ext && strstr(cqw_loop_features(loop),
					      "ext_arg") == NULL) {
				snprintf(expect, sizeof(expect), "%s", want[i]);
			}
			/*
			 * The kernel's minimum wait (6.12) goes with ext_arg;
			 * without it, never reported.
			 */
			if (strstr(expect, "ext_arg") != NULL &&
			    strstr(cqw_loop_features(loop), "min_wait") !=
				NULL) {
				strcat(expect, ",min_wait");
			}
			assert_string_equal(cqw_loop_features(loop), expect);
			cqw_loop_free(loop);
			ran++;
		}
	}
	if (ran == 0) {
		T_SKIP("io_uring refused here");
	}
	/* An unknown flag set is the caller's mistake, not a fallback. */
	assert_null(t_ring_with(0, "bogus", 0, &err));
	assert_int_equal(err, CQW_EINVAL);
}

static void
test_uring_forced_backend_is_uring(void **state)
{
	cqw_loop *loop = t_ring(0);

	(void)state;
	if (loop == NULL) {
		skip(); /* io_uring refused here; the seccomp test covers it */
	}
	assert_string_equal(cqw_loop_backend(loop), "uring");
	cqw_loop_free(loop);
}

#define CONNS 64
#define PER_CONN 40

/* 8 SQ entries against 64 connections x 40 queued messages each way. */
static void
test_uring_full_sq_keeps_order(void **state)
{
	cqw_conn *a[CONNS], *b[CONNS];
	static struct cqw_op send[CONNS][PER_CONN], recv[CONNS][PER_CONN];
	static uint32_t out[CONNS][PER_CONN], in[CONNS][PER_CONN];
	struct cqw_op *done[256];
	cqw_loop *loop = t_ring(8);
	int i, k, n, total = 0;

	(void)state;
	if (loop == NULL) {
		skip();
	}
	for (i = 0; i < CONNS; i++) {
		assert_int_equal(cqw_pipe(&a[i], &b[i], CQW_DUPLEX), 0);
		for (k = 0; k < PER_CONN; k++) {
			out[i][k] = (uint32_t)(i * 1000 + k);
			send[i][k] = (struct cqw_op){ .kind = CQW_OP_SEND,
						      .conn = a[i],
						      .buf = &out[i][k],
						      .len = 4 };
			recv[i][k] = (struct cqw_op){ .kind = CQW_OP_RECV,
						      .conn = b[i],
						      .buf = &in[i][k],
						      .len = 4 };
			assert_int_equal(cqw_submit(loop, &recv[i][k]), 0);
			assert_int_equal(cqw_submit(loop, &send[i][k]), 0);
		}
	}
	while (total < 2 * CONNS * PER_CONN) {
		n = cqw_reap(loop, done, 256, 5000);
		assert_true(n > 0);
		for (k = 0; k < n; k++) {
			assert_true(done[k]->result >= 0);
		}
		total += n;
	}
	for (i = 0; i < CONNS; i++) {
		for (k = 0; k < PER_CONN; k++) {
			assert_int_equal(in[i][k], out[i][k]);
			assert_int_equal(recv[i][k].result, 4);
		}
		cqw_conn_free(a[i]);
		cqw_conn_free(b[i]);
	}
	cqw_loop_free(loop);
}

static void
test_uring_pipe_epipe_no_signal(void **state)
{
	cqw_conn *r, *w;
	struct cqw_op op = { .kind = CQW_OP_SEND, .buf = "x", .len = 1 };
	struct cqw_op *done[1];
	cqw_loop *loop = t_ring(0);

	(void)state;
	if (loop == NULL) {
		skip();
	}
	/* Default SIGPIPE disposition: a raised signal would kill us. */
	signal(SIGPIPE, SIG_DFL);
	assert_int_equal(cqw_pipe(&r, &w, 0), 0);
	cqw_conn_free(r);
	op.conn = w;
	assert_int_equal(cqw_submit(loop, &op), 0);
	assert_int_equal(cqw_reap(loop, done, 1, 5000), 1);
	assert_int_equal(op.result, CQW_EPIPE);
	cqw_conn_free(w);
	cqw_loop_free(loop);
}

/*
 * With 8 SQ entries, 40 pipe writes to closed readers overflow the SQ: the
 * submit that makes room must hold SIGPIPE off as well.
 */
static void
test_uring_full_sq_pipe_epipe_no_signal(void **state)
{
	cqw_conn *r[40], *w[40];
	struct cqw_op ops[40], *done[40];
	cqw_loop *loop = t_ring(8);
	int i, n, total = 0;

	(void)state;
	if (loop == NULL) {
		skip();
	}
	signal(SIGPIPE, SIG_DFL);
	for (i = 0; i < 40; i++) {
		assert_int_equal(cqw_pipe(&r[i], &w[i], 0), 0);
		cqw_conn_free(r[i]);
		ops[i] = (struct cqw_op){
			.kind = CQW_OP_SEND, .conn = w[i], .buf = "x", .len = 1
		};
		assert_int_equal(cqw_submit(loop, &ops[i]), 0);
	}
	while (total < 40) {
		n = cqw_reap(loop, done, 40, 5000);
		assert_true(n > 0);
		total += n;
	}
	for (i = 0; i < 40; i++) {
		assert_int_equal(ops[i].result, CQW_EPIPE);
		cqw_conn_free(w[i]);
	}
	cqw_loop_free(loop);
}

struct t_other {
	cqw_loop *loop;
	cqw_conn *a, *b;
	int64_t result;
};

static void *
t_other_main(void *arg)
{
	struct t_other *o = arg;
	struct cqw_op op = { .kind = CQW_OP_RECV, .conn = o->b };
	struct cqw_op *done[1];
	char buf[8];

	op.buf = buf;
	op.len = sizeof(buf);
	o->result = -1;
	if (cqw_submit(o->loop, &op) == 0 &&
	    cqw_send_bytes(o->a, "hi", 2) == 0 &&
	    cqw_reap(o->loop, done, 1, 5000) == 1) {
		o->result = op.result;
	}
	return NULL;
}

/* A ring made on one thread serves the thread that uses it. */
static void
test_uring_loop_used_on_another_thread(void **state)
{
	struct t_other o = { .loop = t_ring(0) };
	pthread_t th;

	(void)state;
	if (o.loop == NULL) {
		skip();
	}
	assert_int_equal(cqw_pipe(&o.a, &o.b, CQW_DUPLEX), 0);
	assert_int_equal(pthread_create(&th, NULL, t_other_main, &o), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(o.result, 2);
	cqw_conn_free(o.a);
	cqw_conn_free(o.b);
	cqw_loop_free(o.loop);
}

struct t_late_send {
	cqw_conn *a;
	int delay_ms;
};

static void *
t_late_send_main(void *arg)
{
	struct t_late_send *ls = arg;

	t_sleep_ms(ls->delay_ms);
	(void)cqw_send_bytes(ls->a, "late", 4);
	return NULL;
}

/*
 * Timed reaps on one flag set with the extended argument masked: the
 * wait's timeout is then an SQE of ours, and its completions (fired, or
 * ended early by a message) must never be taken for an io.
 */
static int
t_timed_reaps(const char *setup)
{
	struct t_late_send ls = { .delay_ms = 30 };
	struct cqw_op op = { .kind = CQW_OP_RECV };
	struct cqw_op *done[1];
	char buf[16];
	cqw_conn *b;
	cqw_loop *loop;
	pthread_t th;
	int64_t t0, dt;
	int i, err;

	loop = t_ring_with(8, setup, 1, &err);
	if (loop == NULL) {
		printf("note: setup %s refused here: %s\n", setup,
		       cqw_strerror(err));
		return 0;
	}
	assert_null(strstr(cqw_loop_features(loop), "ext_arg"));
	assert_int_equal(cqw_pipe(&ls.a, &b, CQW_DUPLEX), 0);
	op.conn = b;
	op.buf = buf;
	op.len = sizeof(buf);
	assert_int_equal(cqw_submit(loop, &op), 0);

	/* Nothing comes: 0 ms returns at once, 50 ms returns after 50. */
	t0 = t_now_ms();
	assert_int_equal(cqw_reap(loop, done, 1, 0), 0);
	dt = t_now_ms() - t0;
	assert_true(dt >= 0 && dt < 40);
	t0 = t_now_ms();
	assert_int_equal(cqw_reap(loop, done, 1, 50), 0);
	dt = t_now_ms() - t0;
	assert_true(dt >= 49 && dt < 400);
	/* Many short waits: their timeouts must all be reaped as ours. */
	for (i = 0; i < 50; i++) {
		assert_int_equal(cqw_reap(loop, done, 1, 1), 0);
	}

	/* A message 30 ms into a 2 s wait ends it early, as the op. */
	assert_int_equal(pthread_create(&th, NULL, t_late_send_main, &ls), 0);
	t0 = t_now_ms();
	assert_int_equal(cqw_reap(loop, done, 1, 2000), 1);
	dt = t_now_ms() - t0;
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_ptr_equal(done[0], &op);
	assert_int_equal(op.result, 4);
	assert_memory_equal(buf, "late", 4);
	assert_true(dt >= 20 && dt < 1500);

	/* The timeout that message cut short completes later: still ours. */
	assert_int_equal(cqw_submit(loop, &op), 0);
	for (i = 0; i < 5; i++) {
		assert_int_equal(cqw_reap(loop, done, 1, 20), 0);
	}
	assert_int_equal(cqw_send_bytes(ls.a, "again", 5), 0);
	assert_int_equal(cqw_reap(loop, done, 1, 2000), 1);
	assert_int_equal(op.result, 5);
	cqw_conn_free(ls.a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
	return 1;
}

static void
test_uring_no_ext_arg_timed_reaps(void **state)
{
	size_t i;
	int ran = 0;

	(void)state;
	for (i = 0; i < T_NSETUPS; i++) {
		ran += t_timed_reaps(t_setups[i]);
	}
	if (ran == 0) {
		T_SKIP("io_uring refused here");
	}
}

static volatile sig_atomic_t t_sigpipes;

static void
t_count_sigpipe(int sig)
{
	(void)sig;
	t_sigpipes++;
}

/*
 * The subject, in its own process so that a SIGPIPE that gets through
 * kills only it: a loop write blocked on a full pipe (the reader, a
 * child, reads nothing) when the reader dies must end with CQW_EPIPE and
 * no signal, with SIGPIPE at its default disposition (mode 0) or caught
 * by a handler that must never run (mode 1).
 */
struct t_blocked {
	const char *setup;
	int mode;
};

static int
t_blocked_write_main(void *arg)
{
	static char big[1 << 20];
	struct t_blocked *tb = arg;
	struct cqw_op op = { .kind = CQW_OP_SEND,
			     .buf = big,
			     .len = sizeof(big) };
	struct cqw_op *done[1];
	cqw_conn *w;
	cqw_loop *loop;
	int fds[2], status, err, n;
	pid_t reader;

	signal(SIGPIPE, tb->mode == 0 ? SIG_DFL : t_count_sigpipe);
	loop = t_ring_with(0, tb->setup, 0, &err);
	if (loop == NULL) {
		return 77;
	}
	T_CHILD_CHECK(pipe(fds) == 0);
	reader = fork();
	T_CHILD_CHECK(reader >= 0);
	if (reader == 0) {
		close(fds[1]);
		alarm(30);
		pause(); /* holds the read end, reads nothing */
		_exit(0);
	}
	close(fds[0]);
	T_CHILD_CHECK(cqw_conn_from_fd(&w, fds[1], CQW_WRITABLE) == 0);
	op.conn = w;
	T_CHILD_CHECK(cqw_submit(loop, &op) == 0);
	/* 1 MiB does not fit a pipe: the write is now blocked. */
	n = cqw_reap(loop, done, 1, 200);
	T_CHILD_CHECK(n == 0);
	T_CHILD_CHECK(kill(reader, SIGKILL) == 0);
	/* Other system calls come first: task work may run at any of them. */
	T_CHILD_CHECK(waitpid(reader, &status, 0) == reader);
	t_sleep_ms(20);
	n = cqw_reap(loop, done, 1, 5000);
	T_CHILD_CHECK(n == 1);
	T_CHILD_CHECK(op.result == CQW_EPIPE);
	T_CHILD_CHECK(t_sigpipes == 0);
	cqw_conn_free(w);
	cqw_loop_free(loop);
	return 0;
}

static void
test_uring_blocked_pipe_write_reader_dies(void **state)
{
	struct t_blocked tb;
	size_t i;
	int mode, status, ran = 0;

	(void)state;
	for (i = 0; i < T_NSETUPS; i++) {
		for (mode = 0; mode <= 1; mode++) {
			tb.setup = t_setups[i];
			tb.mode = mode;
			status = t_wait_status(
			    t_fork_child(t_blocked_write_main, &tb));
			if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
				printf("note: setup %s refused here\n",
				       t_setups[i]);
				continue;
			}
			if (WIFSIGNALED(status)) {
				fail_msg("setup %s, mode %d: killed by "
					 "signal %d",
					 t_setups[i], mode, WTERMSIG(status));
			}
			assert_true(WIFEXITED(status));
			assert_int_equal(WEXITSTATUS(status), 0);
			ran++;
		}
	}
	if (ran == 0) {
		T_SKIP("io_uring refused here");
	}
}

/*
 * A SIGPIPE the program gets while a loop pipe write is in flight (here
 * sent by another process during a reap) is the program's: the guard
 * must not take it back.
 */
static int
t_own_sigpipe_main(void *arg)
{
	static char big[1 << 20];
	const char *setup = arg;
	struct cqw_op op = { .kind = CQW_OP_SEND,
			     .buf = big,
			     .len = sizeof(big) };
	struct cqw_op *done[1];
	cqw_conn *r, *w;
	cqw_loop *loop;
	pid_t self = getpid(), sender;
	int err, n, status;

	signal(SIGPIPE, t_count_sigpipe);
	loop = t_ring_with(0, setup, 0, &err);
	if (loop == NULL) {
		return 77;
	}
	T_CHILD_CHECK(cqw_pipe(&r, &w, 0) == 0);
	op.conn = w;
	T_CHILD_CHECK(cqw_submit(loop, &op) == 0);
	T_CHILD_CHECK(cqw_reap(loop, done, 1, 50) == 0); /* blocked */
	sender = fork();
	T_CHILD_CHECK(sender >= 0);
	if (sender == 0) {
		t_sleep_ms(50);
		kill(self, SIGPIPE);
		_exit(0);
	}
	n = cqw_reap(loop, done, 1, 300);
	T_CHILD_CHECK(n == 0);
	T_CHILD_CHECK(waitpid(sender, &status, 0) == sender);
	T_CHILD_CHECK(t_sigpipes == 1);
	/* Let the write finish: the reader takes everything. */
	cqw_conn_free(r);
	T_CHILD_CHECK(cqw_reap(loop, done, 1, 5000) == 1);
	T_CHILD_CHECK(op.result == CQW_EPIPE);
	T_CHILD_CHECK(t_sigpipes == 1);
	cqw_conn_free(w);
	cqw_loop_free(loop);
	return 0;
}

static void
test_uring_own_sigpipe_not_swallowed(void **state)
{
	size_t i;
	int status, ran = 0;

	(void)state;
	for (i = 0; i < T_NSETUPS; i++) {
		status = t_wait_status(t_fork_child(
		    t_own_sigpipe_main, (void *)(uintptr_t)t_setups[i]));
		if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
			continue;
		}
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
		ran++;
	}
	if (ran == 0) {
		T_SKIP("io_uring refused here");
	}
}

#define CANCEL_CONNS 64

/*
 * 8 SQ entries, 64 receives in flight, then 64 cancels with no flush
 * between them (most find the SQ full) and a close of each connection:
 * every close returns and every receive completes exactly once.
 */
static void
test_uring_cancels_beyond_sq(void **state)
{
	cqw_conn *a[CANCEL_CONNS], *b[CANCEL_CONNS];
	struct cqw_op ops[CANCEL_CONNS], *done[CANCEL_CONNS];
	int seen[CANCEL_CONNS] = { 0 };
	char bufs[CANCEL_CONNS][8];
	cqw_loop *loop = t_ring(8);
	int i, n, total = 0;

	(void)state;
	if (loop == NULL) {
		skip();
	}
	for (i = 0; i < CANCEL_CONNS; i++) {
		assert_int_equal(cqw_pipe(&a[i], &b[i], CQW_DUPLEX), 0);
		ops[i] = (struct cqw_op){ .kind = CQW_OP_RECV,
					  .conn = b[i],
					  .buf = bufs[i],
					  .len = sizeof(bufs[i]) };
		assert_int_equal(cqw_submit(loop, &ops[i]), 0);
	}
	assert_int_equal(cqw_flush(loop), 0);
	assert_int_equal(cqw_reap(loop, done, CANCEL_CONNS, 20), 0);
	for (i = 0; i < CANCEL_CONNS; i++) {
		assert_int_equal(cqw_cancel(loop, &ops[i]), 0);
	}
	for (i = 0; i < CANCEL_CONNS; i++) {
		assert_int_equal(cqw_conn_close(b[i]), 0);
	}
	while (total < CANCEL_CONNS) {
		n = cqw_reap(loop, done, CANCEL_CONNS, 1000);
		assert_true(n > 0);
		for (i = 0; i < n; i++) {
			int k = (int)(done[i] - ops);

			assert_true(k >= 0 && k < CANCEL_CONNS);
			assert_int_equal(seen[k], 0);
			seen[k] = 1;
			assert_int_equal(done[i]->result, CQW_ECANCELED);
		}
		total += n;
	}
	/* Nothing more comes: nothing completed twice. */
	assert_int_equal(cqw_reap(loop, done, CANCEL_CONNS, 50), 0);
	for (i = 0; i < CANCEL_CONNS; i++) {
		cqw_conn_free(a[i]);
		cqw_conn_free(b[i]);
	}
	cqw_loop_free(loop);
}

/*
 * A cancel of a receive whose data is already in: the read completes
 * with it, and the next receive on the connection (the same io struct
 * in the channel) is not hit by that cancel.
 */
static void
test_uring_late_cancel_spares_next_read(void **state)
{
	struct cqw_op first = { .kind = CQW_OP_RECV },
		      second = { .kind = CQW_OP_RECV };
	struct cqw_op *done[2];
	char b1[8], b2[8];
	cqw_conn *a, *b;
	size_t i;
	int err, n, got;

	(void)state;
	for (i = 0; i < T_NSETUPS; i++) {
		cqw_loop *loop = t_ring_with(8, t_setups[i], 0, &err);

		if (loop == NULL) {
			continue;
		}
		assert_int_equal(cqw_pipe(&a, &b, CQW_DUPLEX), 0);
		first.conn = second.conn = b;
		first.buf = b1;
		second.buf = b2;
		first.len = second.len = sizeof(b1);
		assert_int_equal(cqw_submit(loop, &first), 0);
		assert_int_equal(cqw_submit(loop, &second), 0);
		assert_int_equal(cqw_flush(loop), 0);
		assert_int_equal(cqw_send_bytes(a, "one", 3), 0);
		t_sleep_ms(20);
		assert_int_equal(cqw_cancel(loop, &first), 0);
		n = cqw_reap(loop, done, 1, 1000);
		assert_int_equal(n, 1);
		assert_ptr_equal(done[0], &first);
		got = (int)first.result;
		/* Either the data won or the cancel did; never both. */
		assert_true(got == 3 || got == CQW_ECANCELED);
		if (got == 3) {
			assert_memory_equal(b1, "one", 3);
		}
		if (got == CQW_ECANCELED) {
			/* "one" is still there: the next receive gets it. */
			assert_int_equal(cqw_reap(loop, done, 1, 1000), 1);
			assert_ptr_equal(done[0], &second);
			assert_int_equal(second.result, 3);
			assert_memory_equal(b2, "one", 3);
			goto next;
		}
		/* The next read now runs on the same io; the cancel is old. */
		n = cqw_reap(loop, done, 1, 50);
		if (n != 0) {
			fail_msg("setup %s: the next receive ended early: %s",
				 t_setups[i], cqw_strerror((int)second.result));
		}
		assert_int_equal(cqw_send_bytes(a, "two", 3), 0);
		assert_int_equal(cqw_reap(loop, done, 1, 1000), 1);
		assert_ptr_equal(done[0], &second);
		assert_int_equal(second.result, 3);
		assert_memory_equal(b2, "two", 3);
	next:
		cqw_conn_free(a);
		cqw_conn_free(b);
		cqw_loop_free(loop);
	}
}

struct t_intruder {
	cqw_loop *loop;
	int flush, reap0, reap50;
};

static void *
t_intruder_main(void *arg)
{
	struct t_intruder *ti = arg;
	struct cqw_op *done[1];

	ti->flush = cqw_flush(ti->loop);
	ti->reap0 = cqw_reap(ti->loop, done, 1, 0);
	ti->reap50 = cqw_reap(ti->loop, done, 1, 50);
	return NULL;
}

/*
 * A loop entered from a thread other than its own (the ring's single
 * issuer) says CQW_EBUSY at every call that would enter the ring, on
 * every flag set, and still works for its own thread after.
 */
static void
test_uring_wrong_thread_is_busy(void **state)
{
	struct cqw_op op = { .kind = CQW_OP_RECV };
	struct cqw_op *done[1];
	struct t_intruder ti;
	char buf[8];
	cqw_conn *a, *b;
	pthread_t th;
	size_t i;
	int err;

	(void)state;
	for (i = 0; i < T_NSETUPS; i++) {
		memset(&ti, 0, sizeof(ti));
		ti.loop = t_ring_with(0, t_setups[i], 0, &err);
		if (ti.loop == NULL) {
			continue;
		}
		assert_int_equal(cqw_pipe(&a, &b, CQW_DUPLEX), 0);
		op.conn = b;
		op.buf = buf;
		op.len = sizeof(buf);
		assert_int_equal(cqw_submit(ti.loop, &op), 0);
		/* This thread now owns the ring. */
		assert_int_equal(cqw_reap(ti.loop, done, 1, 0), 0);
		assert_int_equal(cqw_send_bytes(a, "hi", 2), 0);
		assert_int_equal(
		    pthread_create(&th, NULL, t_intruder_main, &ti), 0);
		assert_int_equal(pthread_join(th, NULL), 0);
		assert_int_equal(ti.flush, CQW_EBUSY);
		assert_int_equal(ti.reap0, CQW_EBUSY);
		assert_int_equal(ti.reap50, CQW_EBUSY);
		assert_int_equal(cqw_reap(ti.loop, done, 1, 1000), 1);
		assert_int_equal(op.result, 2);
		cqw_conn_free(a);
		cqw_conn_free(b);
		cqw_loop_free(ti.loop);
	}
}

#define FORK_CONNS 32

/*
 * Cancels that did not fit the SQ are queued when the process forks: in
 * the child every receive ends once with CQW_EFORK and no queued cancel
 * reaches anything; in the parent each ends once, cancelled.
 */
static void
test_uring_fork_with_queued_cancels(void **state)
{
	cqw_conn *a[FORK_CONNS], *b[FORK_CONNS];
	struct cqw_op ops[FORK_CONNS], *done[FORK_CONNS];
	int seen[FORK_CONNS] = { 0 };
	char bufs[FORK_CONNS][8];
	cqw_loop *loop = t_ring(8);
	int i, k, n, total;
	pid_t pid;

	(void)state;
	if (loop == NULL) {
		skip();
	}
	for (i = 0; i < FORK_CONNS; i++) {
		assert_int_equal(cqw_pipe(&a[i], &b[i], CQW_DUPLEX), 0);
		ops[i] = (struct cqw_op){ .kind = CQW_OP_RECV,
					  .conn = b[i],
					  .buf = bufs[i],
					  .len = sizeof(bufs[i]) };
		assert_int_equal(cqw_submit(loop, &ops[i]), 0);
	}
	assert_int_equal(cqw_reap(loop, done, FORK_CONNS, 20), 0);
	for (i = 0; i < FORK_CONNS; i++) {
		assert_int_equal(cqw_cancel(loop, &ops[i]), 0);
	}
	pid = t_fork();
	if (pid == 0) {
		for (total = 0; total < FORK_CONNS; total += n) {
			n = cqw_reap(loop, done, FORK_CONNS, 2000);
			T_CHILD_CHECK(n > 0);
			for (i = 0; i < n; i++) {
				k = (int)(done[i] - ops);
				T_CHILD_CHECK(k >= 0 && k < FORK_CONNS);
				T_CHILD_CHECK(seen[k]++ == 0);
				T_CHILD_CHECK(done[i]->result == CQW_EFORK);
			}
		}
		T_CHILD_CHECK(cqw_reap(loop, done, FORK_CONNS, 20) == 0);
		_exit(0);
	}
	t_wait_child(pid);
	for (total = 0; total < FORK_CONNS; total += n) {
		n = cqw_reap(loop, done, FORK_CONNS, 2000);
		assert_true(n > 0);
		for (i = 0; i < n; i++) {
			k = (int)(done[i] - ops);
			assert_true(k >= 0 && k < FORK_CONNS);
			assert_int_equal(seen[k]++, 0);
			assert_int_equal(done[i]->result, CQW_ECANCELED);
		}
	}
	assert_int_equal(cqw_reap(loop, done, FORK_CONNS, 20), 0);
	for (i = 0; i < FORK_CONNS; i++) {
		cqw_conn_free(a[i]);
		cqw_conn_free(b[i]);
	}
	cqw_loop_free(loop);
}

/*
 * A descriptor that refuses RWF_NOWAIT (a pty says EOPNOTSUPP) is still
 * written through the loop, whole and in order, on every flag set.
 */
static void
test_uring_write_where_nowait_is_refused(void **state)
{
	/* Headers are 4-byte big-endian lengths (WIRE.md). */
	static const char want[] = "\0\0\0\5first\0\0\0\6second";
	struct cqw_op op1 = { .kind = CQW_OP_SEND, .buf = "first", .len = 5 };
	struct cqw_op op2 = { .kind = CQW_OP_SEND, .buf = "second", .len = 6 };
	struct cqw_op *done[2];
	char got[sizeof(want) - 1];
	struct termios tio;
	size_t i, have;
	cqw_conn *w;
	ssize_t r;
	int m, sl, err, n, total;

	(void)state;
	for (i = 0; i < T_NSETUPS; i++) {
		cqw_loop *loop = t_ring_with(0, t_setups[i], 0, &err);

		if (loop == NULL) {
			continue;
		}
		m = posix_openpt(O_RDWR | O_NOCTTY);
		if (m < 0 || grantpt(m) != 0 || unlockpt(m) != 0) {
			cqw_loop_free(loop);
			T_SKIP("no pseudo-terminals here");
		}
		sl = open(ptsname(m), O_RDWR | O_NOCTTY);
		assert_true(sl >= 0);
		assert_int_equal(tcgetattr(sl, &tio), 0);
		cfmakeraw(&tio);
		assert_int_equal(tcsetattr(sl, TCSANOW, &tio), 0);
		assert_int_equal(cqw_conn_from_fd(&w, sl, CQW_WRITABLE), 0);
		op1.conn = op2.conn = w;
		assert_int_equal(cqw_submit(loop, &op1), 0);
		assert_int_equal(cqw_submit(loop, &op2), 0);
		for (total = 0; total < 2; total += n) {
			n = cqw_reap(loop, done, 2, 5000);
			assert_true(n > 0);
		}
		assert_int_equal(op1.result, 0);
		assert_int_equal(op2.result, 0);
		for (have = 0; have < sizeof(got); have += (size_t)r) {
			r = read(m, got + have, sizeof(got) - have);
			assert_true(r > 0);
		}
		assert_memory_equal(got, want, sizeof(got));
		cqw_conn_free(w);
		close(m);
		cqw_loop_free(loop);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_uring_forced_backend_is_uring),
		cmocka_unit_test(test_uring_setup_knob_features),
		cmocka_unit_test(test_uring_full_sq_keeps_order),
		cmocka_unit_test(test_uring_pipe_epipe_no_signal),
		cmocka_unit_test(test_uring_full_sq_pipe_epipe_no_signal),
		cmocka_unit_test(test_uring_loop_used_on_another_thread),
		cmocka_unit_test(test_uring_no_ext_arg_timed_reaps),
		cmocka_unit_test(test_uring_blocked_pipe_write_reader_dies),
		cmocka_unit_test(test_uring_own_sigpipe_not_swallowed),
		cmocka_unit_test(test_uring_cancels_beyond_sq),
		cmocka_unit_test(test_uring_late_cancel_spares_next_read),
		cmocka_unit_test(test_uring_wrong_thread_is_busy),
		cmocka_unit_test(test_uring_fork_with_queued_cancels),
		cmocka_unit_test(test_uring_write_where_nowait_is_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
