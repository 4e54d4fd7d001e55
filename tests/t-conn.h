/*
 * Helpers of the behavioural suites of connections (tests/test-conn.c,
 * test-frame-io.c, test-batch.c, test-exclusive.c, test-fork.c, ...):
 * result checks that name the codes, connection pairs, exact bytes on the
 * wire, the child and thread peers several suites share, and the I/O
 * layer that runs one test body through either API.
 *
 * The I/O layer: t_send(), t_send_batch(), t_recv() and t_recv_into()
 * move one message (or several) through the synchronous API or, when the
 * run sets CQW_TEST_IO=loop, through CQW_OP_SEND / CQW_OP_RECV ops on a
 * loop of the backend CQW_BACKEND names, submitted and reaped at once.
 * Either way the call returns what the sync call would, so one body
 * checks both paths. t_send_str(), t_recv_str() and t_recv_expect() go
 * through the layer. Calls a body makes directly (cqw_send_bytes_at,
 * maxlength, poll, batches...) have no loop form and stay sync.
 *
 * The loop belongs to the test's main thread (a loop has one issuer):
 * threads and forked children that play the peer use the sync API.
 */
#ifndef CQW_T_CONN_H
#define CQW_T_CONN_H

#include "t-util.h"

#ifndef _WIN32
#include <sys/ioctl.h>
#endif

/* Fail with both codes' names unless got == want. */
static inline void
t_expect(int64_t got, int64_t want, const char *what, int line)
{
	if (got != want) {
		fail_msg("line %d: %s: got %s (%lld), want %s (%lld)", line,
			 what, got < 0 ? cqw_err_name((int)got) : "count",
			 (long long)got,
			 want < 0 ? cqw_err_name((int)want) : "count",
			 (long long)want);
	}
}

#define T_EXPECT(expr, want) t_expect((expr), (want), #expr, __LINE__)
#define T_OK(expr) T_EXPECT((expr), 0)

/* ------------------------------------------------------------------
 * The I/O layer: sync, or through a loop (CQW_TEST_IO=loop)
 */

/* Longest an op may take before the test calls it a hang. */
#define T_IO_DEADLINE_MS 60000

/* 1 if this run moves messages through a loop. */
static inline int
t_io_loop_mode(void)
{
	const char *mode = getenv("CQW_TEST_IO");

	return mode != NULL && strcmp(mode, "loop") == 0;
}

/*
 * The run's loop, made on first use and checked against what the run is
 * named for (backend, ring features); t_io_teardown() frees it. NULL
 * with free_it set frees it.
 */
static inline cqw_loop *
t__io_loop(int free_it)
{
	static cqw_loop *loop;
	char why[256];
	int r;

	if (free_it) {
		cqw_loop_free(loop);
		loop = NULL;
		return NULL;
	}
	if (loop == NULL) {
		r = cqw_loop_new(&loop, NULL);
		if (r != 0) {
			fail_msg("cqw_loop_new: %s", cqw_err_name(r));
		}
		if (!t_loop_is_expected(loop, why, sizeof(why))) {
			fail_msg("%s", why);
		}
	}
	return loop;
}

/*
 * Submit n ops (made by t_io_op: user_data NULL) and reap them all; each
 * must come back exactly once (user_data marks the ones seen).
 */
static inline void
t_io_run(struct cqw_op *ops, size_t n)
{
	cqw_loop *loop = t__io_loop(0);
	int64_t deadline = t_now_ms() + T_IO_DEADLINE_MS;
	struct cqw_op *done[16];
	size_t i, left = n;
	int r, k;

	for (i = 0; i < n; i++) {
		r = cqw_submit(loop, &ops[i]);
		if (r != 0) {
			fail_msg("cqw_submit(op %zu of %zu): %s", i, n,
				 cqw_err_name(r));
		}
	}
	while (left > 0) {
		r = cqw_reap(loop, done, 16, 1000);
		if (r < 0) {
			fail_msg("cqw_reap: %s", cqw_err_name(r));
		}
		for (k = 0; k < r; k++) {
			if (done[k] < ops || done[k] >= ops + n ||
			    done[k]->user_data != NULL) {
				fail_msg("cqw_reap returned an op twice or one "
					 "not submitted");
			}
			done[k]->user_data = done[k];
			left--;
		}
		if (left > 0 && t_now_ms() > deadline) {
			fail_msg("%zu of %zu ops not done after %d ms", left, n,
				 T_IO_DEADLINE_MS);
		}
	}
}

static inline void
t_io_op(struct cqw_op *op, int kind, cqw_conn *c, void *buf, size_t len)
{
	memset(op, 0, sizeof(*op));
	op->kind = kind;
	op->conn = c;
	op->buf = buf;
	op->len = len;
}

/* cqw_send_bytes(), or one CQW_OP_SEND. */
static inline int
t_send(cqw_conn *c, const void *buf, size_t len)
{
	struct cqw_op op;

	if (!t_io_loop_mode()) {
		return cqw_send_bytes(c, buf, len);
	}
	t_io_op(&op, CQW_OP_SEND, c, (void *)buf, len);
	t_io_run(&op, 1);
	return (int)op.result;
}

/*
 * cqw_send_batch(), or one CQW_OP_SEND per message submitted together
 * (the loop writes what is queued on a connection in one gather). The
 * loop form returns the first error of the ops, in order.
 */
static inline int
t_send_batch(cqw_conn *c, const struct cqw_msg *msgs, size_t n)
{
	struct cqw_op *ops;
	size_t i;
	int r = 0;

	if (!t_io_loop_mode()) {
		return cqw_send_batch(c, msgs, n);
	}
	ops = calloc(n > 0 ? n : 1, sizeof(*ops));
	assert_non_null(ops);
	for (i = 0; i < n; i++) {
		t_io_op(&ops[i], CQW_OP_SEND, c, msgs[i].buf, msgs[i].len);
	}
	t_io_run(ops, n);
	for (i = 0; i < n && r == 0; i++) {
		r = (int)ops[i].result;
	}
	free(ops);
	return r;
}

/*
 * cqw_recv_bytes_into(), or one CQW_OP_RECV into buf[offset..cap).
 * offset > cap is an argument error the sync call reports; an op has no
 * offset, so that case stays sync.
 */
static inline int64_t
t_recv_into(cqw_conn *c, void *buf, size_t cap, size_t offset, size_t *needed)
{
	struct cqw_op op;

	if (!t_io_loop_mode() || offset > cap) {
		return cqw_recv_bytes_into(c, buf, cap, offset, needed);
	}
	t_io_op(&op, CQW_OP_RECV, c, (char *)buf + offset, cap - offset);
	t_io_run(&op, 1);
	if (op.result == CQW_ETOOSHORT && needed != NULL) {
		*needed = op.needed;
	}
	return op.result;
}

/*
 * cqw_recv_bytes(c, buf, CQW_NONE), or a CQW_OP_RECV into a small buffer
 * and, if the message does not fit (CQW_ETOOSHORT keeps it), one into a
 * buffer of the size it needs. *buf is for cqw_free(). A maxlength has no
 * loop form (the sync call poisons the connection): those stay sync.
 */
static inline int64_t
t_recv(cqw_conn *c, void **buf, int64_t maxlength)
{
	size_t cap = 4096, needed = 0;
	void *p;
	int64_t n;

	if (!t_io_loop_mode() || maxlength != CQW_NONE) {
		return cqw_recv_bytes(c, buf, maxlength);
	}
	p = malloc(cap);
	assert_non_null(p);
	n = t_recv_into(c, p, cap, 0, &needed);
	if (n == CQW_ETOOSHORT) {
		free(p);
		cap = needed;
		p = malloc(cap > 0 ? cap : 1);
		assert_non_null(p);
		n = t_recv_into(c, p, cap, 0, NULL);
	}
	if (n < 0) {
		free(p);
		return n;
	}
	*buf = p;
	return n;
}

/*
 * main() of a suite whose bodies run in both modes: SIGPIPE at its
 * default (cqwire must never raise it), and in loop mode the backend
 * check (or exit 77 if it cannot run here).
 */
static inline void
t_io_setup(void)
{
#ifdef SIGPIPE
	signal(SIGPIPE, SIG_DFL);
#endif
	if (t_io_loop_mode()) {
		t_backend_or_skip();
	}
	printf("i/o: %s\n", t_io_loop_mode() ? "loop ops" : "sync calls");
}

/* The group teardown of such a suite: the loop goes. */
static inline int
t_io_teardown(void **state)
{
	(void)state;
	t__io_loop(1);
	return 0;
}

/* ------------------------------------------------------------------
 * Connections and bytes
 */

static inline void
t_pipe(cqw_conn **a, cqw_conn **b, unsigned flags)
{
	int r = cqw_pipe(a, b, flags);

	if (r != 0) {
		fail_msg("cqw_pipe(0x%x): %s", flags, cqw_err_name(r));
	}
}

/*
 * A connected pair on a byte-stream transport, the one the stream framer
 * (headers on the wire) serves: cqw_pipe() on POSIX; on Windows, whose
 * cqw_pipe() is a message-mode named pipe without headers, a TCP
 * connection on loopback (a connects, b is accepted: both duplex, so
 * only the duplex shape exists there: T_NSTREAMS).
 */
static inline void
t_stream_pair(cqw_conn **a, cqw_conn **b, unsigned flags)
{
#ifdef _WIN32
	cqw_listener *l = NULL;

	assert_int_equal(flags & CQW_DUPLEX, CQW_DUPLEX);
	T_OK(cqw_listen(&l, "tcp:127.0.0.1:0", NULL, 1));
	T_OK(cqw_connect(a, cqw_listener_address(l), NULL));
	T_OK(cqw_accept(l, b, 5000));
	cqw_listener_free(l);
#else
	t_pipe(a, b, flags);
#endif
}

static inline void
t_send_str(cqw_conn *c, const char *s)
{
	T_OK(t_send(c, s, strlen(s)));
}

/* Receive one message and compare it with want[0..len). */
static inline void
t_recv_expect(cqw_conn *c, const void *want, size_t len)
{
	void *buf = NULL;
	int64_t n = t_recv(c, &buf, CQW_NONE);

	T_EXPECT(n, (int64_t)len);
	assert_non_null(buf);
	if (len > 0) {
		assert_memory_equal(buf, want, len);
	}
	cqw_free(buf);
}

static inline void
t_recv_str(cqw_conn *c, const char *s)
{
	t_recv_expect(c, s, strlen(s));
}

/* Put raw bytes on the wire through c's descriptor. */
static inline void
t_raw(cqw_conn *c, const void *buf, size_t len)
{
	T_OK(t_write_all(cqw_conn_fileno(c), buf, len));
}

/*
 * Unread bytes in the kernel buffer of c's descriptor (on Windows: of a
 * socket, or every message waiting in a pipe, PeekNamedPipe's total).
 */
static inline int
t_unread(cqw_conn *c)
{
#ifdef _WIN32
	cqw_fd h = cqw_conn_fileno(c);
	u_long avail = 0;
	DWORD total = 0;

	if (t_is_socket(h)) {
		assert_int_equal(ioctlsocket((SOCKET)h, FIONREAD, &avail), 0);
		return (int)avail;
	}
	assert_true(PeekNamedPipe((HANDLE)h, NULL, 0, NULL, &total, NULL));
	return (int)total;
#else
	int n = -1;

	assert_int_equal(ioctl(cqw_conn_fileno(c), FIONREAD, &n), 0);
	return n;
#endif
}

/*
 * The four shapes of connection pair, for tests that run on each
 * (an array behind a function: a header cannot define an object that
 * some including files leave unused).
 */
static inline const unsigned *
t__pair_flags(void)
{
	static const unsigned flags[] = {
		CQW_DUPLEX,
		0,
		CQW_DUPLEX | CQW_EXCLUSIVE,
		CQW_EXCLUSIVE,
	};

	return flags;
}
#define t_pair_flags (t__pair_flags())
#define T_NPAIRS ((size_t)4)
/* The shapes t_stream_pair() makes: the first T_NSTREAMS of the above. */
#ifdef _WIN32
#define T_NSTREAMS ((size_t)1)
#else
#define T_NSTREAMS T_NPAIRS
#endif

/* 1 if a TCP listener on IPv4 loopback can be made here. */
static inline int
t_have_tcp(void)
{
	cqw_listener *l = NULL;

	if (cqw_listen(&l, "tcp:127.0.0.1:0", NULL, 1) != 0) {
		return 0;
	}
	cqw_listener_free(l);
	return 1;
}

/* ------------------------------------------------------------------
 * Peers shared by several suites
 */

/* A child's connections: the ones it uses and the parent's it drops. */
struct t_child_conns {
	cqw_conn *use[2];
	cqw_conn *drop[2];
};

/*
 * The child holds copies of the parent's ends too: it closes them, or
 * it would never see end of file on its own.
 */
static inline void
t_child_drop(struct t_child_conns *cc)
{
	if (cc->drop[0] != NULL) {
		cqw_conn_close(cc->drop[0]);
	}
	if (cc->drop[1] != NULL) {
		cqw_conn_close(cc->drop[1]);
	}
}

/* A child that echoes every message on use[0] until end of file. */
static inline int
t_child_echo(void *arg)
{
	struct t_child_conns *cc = arg;
	cqw_conn *c = cc->use[0];
	void *buf = NULL;
	int64_t n;

	t_child_drop(cc);
	for (;;) {
		n = cqw_recv_bytes(c, &buf, CQW_NONE);
		if (n == CQW_EOF) {
			return 0;
		}
		T_CHILD_CHECK(n >= 0);
		T_CHILD_CHECK(cqw_send_bytes(c, buf, (size_t)n) == 0);
		cqw_free(buf);
	}
}

/* A child that connects to the address arg, sends "hello" and exits. */
static inline int
t_child_connect_send_exit(void *arg)
{
	cqw_conn *c;

	T_CHILD_CHECK(cqw_connect(&c, arg, NULL) == 0);
	T_CHILD_CHECK(cqw_send_bytes(c, "hello", 5) == 0);
	cqw_conn_free(c);
	return 0;
}

/* A sender thread's connection and the result of what it sent. */
struct t_batch_sender {
	cqw_conn *c;
	int result;
};

#endif
