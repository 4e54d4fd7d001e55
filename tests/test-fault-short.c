/*
 * Short reads and writes: both ends of every socket pair and pipe get the
 * smallest kernel buffers Linux allows (SO_SNDBUF/SO_RCVBUF of 1, which
 * the kernel rounds up to its minimum; F_SETPIPE_SZ of one page), so a
 * message of more than a few KiB needs many partial writes and reads, and
 * headers split across calls. A child sends a stream of 0 B..4 MiB
 * messages (send_bytes, send_batch or loop ops) and the parent receives
 * it (recv_bytes, recv_bytes_into, recv_batch or loop ops), on frame-exact
 * and exclusive socket pairs and pipes. Every message must arrive intact
 * and in order. The loop runs on the backend CQW_BACKEND names.
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
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cqwire.h"
#include "t-util.h"

static const size_t t_sizes[] = {
	0,
	1,
	2,
	3,
	4,
	5,
	7,
	8,
	9,
	12,
	13,
	255,
	256,
	4095,
	4096,
	4097,
	65535,
	65536,
	65537,
	0,
	1,
	262143,
	(1u << 20) + 1,
	4u << 20,
};
#define T_N (sizeof(t_sizes) / sizeof(t_sizes[0]))

/* How long any one step may take before the case is called a hang. */
#define T_PROGRESS_MS 10000

enum t_send_mode { S_SYNC, S_BATCH, S_LOOP };
enum t_recv_mode { R_SYNC, R_INTO, R_BATCH, R_LOOP };

static const char *const t_send_names[] = { "send_bytes", "send_batch",
					    "loop send ops" };
static const char *const t_recv_names[] = { "recv_bytes", "recv_bytes_into",
					    "recv_batch", "loop recv ops" };

/* Message i: the pattern named i, its index in the first 4 bytes. */
static void
t_make(uint8_t *buf, size_t len, unsigned i)
{
	t_pattern_fill(buf, len, i);
	if (len >= 4) {
		memcpy(buf, &i, 4);
	}
}

static int
t_check(const uint8_t *buf, size_t len, unsigned i)
{
	size_t k = 0;

	if (len >= 4) {
		if (memcmp(buf, &i, 4) != 0) {
			return 0;
		}
		k = 4;
	}
	for (; k < len; k++) {
		if (buf[k] != t_pattern_byte(k, i)) {
			return 0;
		}
	}
	return 1;
}

/* The smallest buffers the kernel gives this descriptor. */
static int
t_shrink(cqw_conn *c)
{
	int fd = (int)cqw_conn_fileno(c), one = 1;
	struct stat st;

	if (fstat(fd, &st) != 0) {
		return -1;
	}
	if (S_ISSOCK(st.st_mode)) {
		int got = 0;
		socklen_t len = sizeof(got);

		if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &one, sizeof(one)) ||
		    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &one, sizeof(one)) ||
		    getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &got, &len)) {
			return -1;
		}
		/* The kernel's minimum is a few KiB (4608 on Linux 6.x). */
		return got > 0 && got <= 16384 ? 0 : -1;
	}
	/* One page: the smallest pipe. */
	return fcntl(fd, F_SETPIPE_SZ, 4096) == 4096 ? 0 : -1;
}

static uint8_t **
t_alloc_bufs(int fill)
{
	uint8_t **bufs = calloc(T_N, sizeof(*bufs));
	size_t i;

	if (bufs == NULL) {
		return NULL;
	}
	for (i = 0; i < T_N; i++) {
		bufs[i] = malloc(t_sizes[i] + 16);
		if (bufs[i] == NULL) {
			return NULL;
		}
		if (fill) {
			t_make(bufs[i], t_sizes[i], (unsigned)i);
		}
	}
	return bufs;
}

static void
t_free_bufs(uint8_t **bufs)
{
	size_t i;

	for (i = 0; bufs != NULL && i < T_N; i++) {
		free(bufs[i]);
	}
	free(bufs);
}

/* Submit n ops and reap them all; 0, or the first error. */
static int
t_loop_run(struct cqw_op *ops, size_t n)
{
	struct cqw_op *done[T_N];
	cqw_loop *loop = NULL;
	size_t i, got = 0;
	int r;

	r = cqw_loop_new(&loop, NULL);
	if (r < 0) {
		return r;
	}
	for (i = 0; i < n && r == 0; i++) {
		r = cqw_submit(loop, &ops[i]);
	}
	while (r == 0 && got < n) {
		int k = cqw_reap(loop, done, (int)(n - got), T_PROGRESS_MS);

		if (k <= 0) {
			fprintf(stderr, "reap: %s after %zu of %zu\n",
				k < 0 ? cqw_err_name(k) : "no progress", got,
				n);
			r = k < 0 ? k : CQW_ETIMEDOUT;
			break;
		}
		got += (size_t)k;
	}
	if (r == 0) {
		cqw_loop_free(loop);
	}
	return r;
}

/* The child: send the stream; 0 or an error. */
static int
t_send(cqw_conn *c, enum t_send_mode mode)
{
	uint8_t **bufs = t_alloc_bufs(1);
	struct cqw_msg msgs[T_N];
	struct cqw_op ops[T_N];
	size_t i;
	int r = 0;

	if (bufs == NULL) {
		return CQW_ENOMEM;
	}
	switch (mode) {
	case S_SYNC:
		for (i = 0; i < T_N && r == 0; i++) {
			r = cqw_send_bytes(c, bufs[i], t_sizes[i]);
		}
		break;
	case S_BATCH:
		for (i = 0; i < T_N; i++) {
			msgs[i].buf = bufs[i];
			msgs[i].len = t_sizes[i];
			msgs[i].cap = 0;
		}
		r = cqw_send_batch(c, msgs, T_N);
		break;
	case S_LOOP:
		memset(ops, 0, sizeof(ops));
		for (i = 0; i < T_N; i++) {
			ops[i].kind = CQW_OP_SEND;
			ops[i].conn = c;
			ops[i].buf = bufs[i];
			ops[i].len = t_sizes[i];
		}
		r = t_loop_run(ops, T_N);
		for (i = 0; i < T_N && r == 0; i++) {
			r = (int)ops[i].result;
		}
		break;
	}
	t_free_bufs(bufs);
	return r;
}

/* The parent: receive and check the stream. */
static void
t_recv(cqw_conn *c, enum t_recv_mode mode, const char *what)
{
	uint8_t **bufs = t_alloc_bufs(0);
	struct cqw_msg msgs[T_N];
	struct cqw_op ops[T_N];
	size_t i, got = 0;
	int64_t n;
	void *p;

	assert_non_null(bufs);
	switch (mode) {
	case R_SYNC:
		for (i = 0; i < T_N; i++) {
			p = NULL;
			n = cqw_recv_bytes(c, &p, CQW_NONE);
			if (n != (int64_t)t_sizes[i] ||
			    !t_check(p, t_sizes[i], (unsigned)i)) {
				fail_msg("%s: message %zu: %lld (%s), wanted "
					 "%zu intact",
					 what, i, (long long)n,
					 n < 0 ? cqw_err_name((int)n) : "",
					 t_sizes[i]);
			}
			cqw_free(p);
		}
		break;
	case R_INTO:
		for (i = 0; i < T_N; i++) {
			/* Exact capacity for some, room to spare for others. */
			size_t cap = t_sizes[i] + (i % 2 ? 16 : 0);

			n = cqw_recv_bytes_into(c, bufs[i], cap, 0, NULL);
			if (n != (int64_t)t_sizes[i] ||
			    !t_check(bufs[i], t_sizes[i], (unsigned)i)) {
				fail_msg("%s: message %zu: %lld (%s), wanted "
					 "%zu intact",
					 what, i, (long long)n,
					 n < 0 ? cqw_err_name((int)n) : "",
					 t_sizes[i]);
			}
		}
		break;
	case R_BATCH:
		for (i = 0; i < T_N; i++) {
			msgs[i].buf = bufs[i];
			msgs[i].cap = t_sizes[i] + 16;
			msgs[i].len = 0;
		}
		while (got < T_N) {
			int k = cqw_recv_batch(c, msgs + got, T_N - got,
					       T_PROGRESS_MS);

			if (k <= 0) {
				fail_msg("%s: recv_batch: %s after %zu", what,
					 k < 0 ? cqw_err_name(k) : "timeout",
					 got);
			}
			got += (size_t)k;
		}
		for (i = 0; i < T_N; i++) {
			if (msgs[i].len != t_sizes[i] ||
			    !t_check(bufs[i], t_sizes[i], (unsigned)i)) {
				fail_msg("%s: message %zu: %zu bytes, wanted "
					 "%zu intact",
					 what, i, msgs[i].len, t_sizes[i]);
			}
		}
		break;
	case R_LOOP:
		memset(ops, 0, sizeof(ops));
		for (i = 0; i < T_N; i++) {
			ops[i].kind = CQW_OP_RECV;
			ops[i].conn = c;
			ops[i].buf = bufs[i];
			ops[i].len = t_sizes[i] + (i % 2 ? 16 : 0);
		}
		n = t_loop_run(ops, T_N);
		if (n != 0) {
			fail_msg("%s: loop: %s", what, cqw_err_name((int)n));
		}
		for (i = 0; i < T_N; i++) {
			if (ops[i].result != (int64_t)t_sizes[i] ||
			    !t_check(bufs[i], t_sizes[i], (unsigned)i)) {
				fail_msg("%s: message %zu: %lld, wanted %zu "
					 "intact",
					 what, i, (long long)ops[i].result,
					 t_sizes[i]);
			}
		}
		break;
	}
	t_free_bufs(bufs);
}

static size_t t_cases, t_messages;
static uint64_t t_bytes;

static void
t_case(unsigned flags, enum t_send_mode sm, enum t_recv_mode rm)
{
	cqw_conn *a, *b, *tx, *rx;
	char what[160];
	pid_t pid;
	size_t i;

	snprintf(what, sizeof(what), "%s%s, %s -> %s",
		 (flags & CQW_DUPLEX) == CQW_DUPLEX ? "socketpair" : "pipe",
		 (flags & CQW_EXCLUSIVE) ? " exclusive" : " frame-exact",
		 t_send_names[sm], t_recv_names[rm]);
	assert_int_equal(cqw_pipe(&a, &b, flags), 0);
	/* Simplex: a reads, b writes. */
	tx = (flags & CQW_DUPLEX) == CQW_DUPLEX ? a : b;
	rx = tx == a ? b : a;
	assert_int_equal(t_shrink(tx), 0);
	assert_int_equal(t_shrink(rx), 0);
	pid = t_fork();
	if (pid == 0) {
		int r;

		cqw_conn_free(rx);
		r = t_send(tx, sm);
		if (r != 0) {
			fprintf(stderr, "%s: sender: %s\n", what,
				cqw_err_name(r));
		}
		cqw_conn_free(tx);
		_exit(r == 0 ? 0 : 1);
	}
	cqw_conn_free(tx);
	t_recv(rx, rm, what);
	/* Then a clean end of stream: nothing more, nothing torn. */
	{
		void *p = NULL;

		assert_int_equal(cqw_recv_bytes(rx, &p, CQW_NONE), CQW_EOF);
	}
	t_wait_child(pid);
	cqw_conn_free(rx);
	t_cases++;
	t_messages += T_N;
	for (i = 0; i < T_N; i++) {
		t_bytes += t_sizes[i];
	}
}

static const struct {
	enum t_send_mode s;
	enum t_recv_mode r;
} t_modes[] = {
	{ S_SYNC, R_SYNC },  { S_SYNC, R_INTO },  { S_BATCH, R_BATCH },
	{ S_LOOP, R_LOOP },  { S_SYNC, R_LOOP },  { S_LOOP, R_SYNC },
	{ S_BATCH, R_LOOP }, { S_LOOP, R_BATCH }, { S_BATCH, R_INTO },
};
#define T_NMODES (sizeof(t_modes) / sizeof(t_modes[0]))

static void
t_all_modes(unsigned flags)
{
	size_t m;

	for (m = 0; m < T_NMODES; m++) {
		t_case(flags, t_modes[m].s, t_modes[m].r);
	}
}

static void
test_fault_short_socketpair_exact(void **state)
{
	(void)state;
	t_all_modes(CQW_DUPLEX);
}

static void
test_fault_short_socketpair_exclusive(void **state)
{
	(void)state;
	t_all_modes(CQW_DUPLEX | CQW_EXCLUSIVE);
}

static void
test_fault_short_pipe_exact(void **state)
{
	(void)state;
	t_all_modes(0);
}

static void
test_fault_short_pipe_exclusive(void **state)
{
	(void)state;
	t_all_modes(CQW_EXCLUSIVE);
}

static int
t_report(void **state)
{
	(void)state;
	print_message("[  SHORT   ] %zu cases (4 pair kinds x %zu send/recv "
		      "modes), %zu messages of 0 B..4 MiB, %llu bytes, "
		      "all intact and in order\n",
		      t_cases, T_NMODES, t_messages,
		      (unsigned long long)t_bytes);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fault_short_socketpair_exact),
		cmocka_unit_test(test_fault_short_socketpair_exclusive),
		cmocka_unit_test(test_fault_short_pipe_exact),
		cmocka_unit_test(test_fault_short_pipe_exclusive),
	};

	t_backend_or_skip();
	return cmocka_run_group_tests(tests, NULL, t_report);
}
