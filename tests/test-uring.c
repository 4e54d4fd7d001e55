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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
