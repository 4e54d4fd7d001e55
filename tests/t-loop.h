/*
 * Helpers for tests of the asynchronous API: a loop on the backend the
 * run names, ops, and reaping that checks exactly-once completion.
 * Include after t-util.h.
 */
#ifndef CQW_T_LOOP_H
#define CQW_T_LOOP_H

#include "t-util.h"

/* Longest wait for progress before a test calls it a hang. */
#define T_PROGRESS_MS 5000

static inline const char *
t_name(int64_t v)
{
	return v < 0 ? cqw_err_name((int)v) : "OK";
}

/* Fail, naming both codes, unless got == want. */
#define T_RESULT(got, want) \
	t_result((int64_t)(got), (int64_t)(want), #got, __FILE__, __LINE__)

static inline void
t_result(int64_t got, int64_t want, const char *expr, const char *file,
	 int line)
{
	if (got != want) {
		fail_msg("%s:%d: %s = %lld (%s), expected %lld (%s)", file,
			 line, expr, (long long)got, t_name(got),
			 (long long)want, t_name(want));
	}
}

/*
 * A loop on the default backend, which must be the one CQW_BACKEND names,
 * or CQW_EXPECT_BACKEND where "auto" must have chosen (the seccomp run).
 */
static inline cqw_loop *
t_loop_new(void)
{
	const char *want = getenv("CQW_EXPECT_BACKEND");
	cqw_loop *loop = NULL;

	if (want == NULL || *want == '\0') {
		want = getenv("CQW_BACKEND");
	}
	T_RESULT(cqw_loop_new(&loop, NULL), 0);
	assert_non_null(loop);
	if (want != NULL && *want != '\0' && strcmp(want, "auto") != 0) {
		assert_string_equal(cqw_loop_backend(loop), want);
	}
	return loop;
}

static inline void
t_op(struct cqw_op *op, int kind, cqw_conn *c, void *buf, size_t len,
     void *user_data)
{
	memset(op, 0, sizeof(*op));
	op->kind = kind;
	op->conn = c;
	op->buf = buf;
	op->len = len;
	op->user_data = user_data;
}

/*
 * Reap exactly want completions into out[] (waiting up to T_PROGRESS_MS
 * for each), check that no op came twice, and that nothing more is ready
 * afterwards: every op completes exactly once.
 */
static inline void
t_reap_exact(cqw_loop *loop, struct cqw_op **out, int want)
{
	struct cqw_op *extra[4];
	int got = 0, r, i, j;

	while (got < want) {
		r = cqw_reap(loop, out + got, want - got, T_PROGRESS_MS);
		if (r < 0) {
			fail_msg("cqw_reap: %s", cqw_err_name(r));
		}
		if (r == 0) {
			fail_msg("no completion in %d ms (%d of %d)",
				 T_PROGRESS_MS, got, want);
		}
		if (r > want - got) {
			fail_msg("cqw_reap returned %d, more than %d asked", r,
				 want - got);
			return;
		}
		got += r;
	}
	for (i = 0; i < got; i++) {
		for (j = 0; j < i; j++) {
			assert_ptr_not_equal(out[i], out[j]);
		}
	}
	T_RESULT(cqw_reap(loop, extra, 4, 0), 0);
}

/* Reap one op, which must be op. */
static inline void
t_reap_one(cqw_loop *loop, struct cqw_op *op)
{
	struct cqw_op *done[4]; /* room gcc cannot see that reap respects */

	t_reap_exact(loop, done, 1);
	assert_ptr_equal(done[0], op);
}

#endif
