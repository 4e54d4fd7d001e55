/*
 * The iocp backend through the whole library (cqw_submit, cqw_flush,
 * cqw_reap, cqw_cancel, cqw_loop_wake, cqw_conn_close): message-mode
 * named pipes through the message framer and TCP through the stream
 * framer. 0 B / 64 KiB / 1 MiB messages both ways, a message longer than
 * the receive kept whole (ERROR_MORE_DATA: CQW_ETOOSHORT and needed,
 * then the next receive, or a synchronous one, gets it), zero-length
 * messages never lost or doubled, cancel of a pending receive, closing
 * connections with receives pending, wake-ups from another thread, a
 * connection let go of its loop once its ops are reaped (closed and freed
 * from another thread; back on that loop; refused by any other), and
 * more completions than one port batch, each reaped exactly once.
 */
#ifndef _WIN32_WINNT
#define _WIN32_WINNT 0x0602
#endif
#include <winsock2.h>
#include <windows.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cqwire.h"

/* Longest wait for progress before a test calls it a hang. */
#define T_PROGRESS_MS 5000

#define T_RESULT(got, want) \
	t_result((int64_t)(got), (int64_t)(want), #got, __FILE__, __LINE__)

static void
t_result(int64_t got, int64_t want, const char *expr, const char *file,
	 int line)
{
	if (got != want) {
		fail_msg("%s:%d: %s = %lld (%s), expected %lld (%s)", file,
			 line, expr, (long long)got,
			 got < 0 ? cqw_err_name((int)got) : "OK",
			 (long long)want,
			 want < 0 ? cqw_err_name((int)want) : "OK");
	}
}

static cqw_loop *
t_loop(void)
{
	struct cqw_loop_opts o = { .backend = CQW_BACKEND_IOCP };
	cqw_loop *loop = NULL;

	T_RESULT(cqw_loop_new(&loop, &o), 0);
	assert_string_equal(cqw_loop_backend(loop), "iocp");
	return loop;
}

static void
t_op(struct cqw_op *op, int kind, cqw_conn *c, void *buf, size_t len)
{
	memset(op, 0, sizeof(*op));
	op->kind = kind;
	op->conn = c;
	op->buf = buf;
	op->len = len;
}

/*
 * Reap exactly want ops into out[] (T_PROGRESS_MS for each at most),
 * none twice, and then nothing more is ready: each completed once.
 */
static void
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
		got += r;
	}
	for (i = 0; i < got; i++) {
		for (j = 0; j < i; j++) {
			assert_ptr_not_equal(out[i], out[j]);
		}
	}
	T_RESULT(cqw_reap(loop, extra, 4, 0), 0);
}

static void
t_reap_one(cqw_loop *loop, struct cqw_op *op)
{
	struct cqw_op *done[2];

	t_reap_exact(loop, done, 1);
	assert_ptr_equal(done[0], op);
}

static unsigned char *
t_pattern(size_t len, unsigned seed)
{
	unsigned char *p = malloc(len ? len : 1);
	size_t i;

	assert_non_null(p);
	for (i = 0; i < len; i++) {
		p[i] = (unsigned char)(i * 131u + seed);
	}
	return p;
}

/* A duplex message pipe: what Python's Pipe() makes on Windows. */
static void
t_msgpipe(cqw_conn **a, cqw_conn **b)
{
	T_RESULT(cqw_pipe(a, b, CQW_DUPLEX), 0);
}

/* A TCP pair on loopback through a Listener without a key. */
static void
t_tcp(cqw_conn **a, cqw_conn **b)
{
	cqw_listener *l = NULL;
	const char *addr;

	T_RESULT(cqw_listen(&l, "tcp:127.0.0.1:0", NULL, 1), 0);
	addr = cqw_listener_address(l);
	assert_non_null(addr);
	T_RESULT(cqw_connect(b, addr, NULL), 0);
	T_RESULT(cqw_accept(l, a, T_PROGRESS_MS), 0);
	cqw_listener_free(l);
}

struct t_connect {
	const char *addr;
	const struct cqw_auth *auth;
	cqw_conn **out;
	int result;
};

static DWORD WINAPI
t_connector(void *arg)
{
	struct t_connect *t = arg;

	t->result = cqw_connect(t->out, t->addr, t->auth);
	return 0;
}

/*
 * A pair through a named pipe Listener (WIRE.md 7.1), with the HMAC
 * handshake when key is set: the handshake runs on the sync calls, then
 * the connection goes on the loop.
 */
static void
t_named(cqw_conn **a, cqw_conn **b, const char *key)
{
	struct cqw_auth auth = { .key = key,
				 .keylen = key != NULL ? strlen(key) : 0 };
	static LONG seq;
	char addr[96];
	struct t_connect t = { .out = b, .result = 1 };
	cqw_listener *l = NULL;
	HANDLE th;

	snprintf(addr, sizeof(addr), "\\\\.\\pipe\\cqw-iocp-loop-%lu-%ld",
		 (unsigned long)GetCurrentProcessId(),
		 (long)InterlockedIncrement(&seq));
	T_RESULT(cqw_listen(&l, addr, key != NULL ? &auth : NULL, 1), 0);
	t.addr = cqw_listener_address(l);
	t.auth = key != NULL ? &auth : NULL;
	assert_non_null(t.addr);
	th = CreateThread(NULL, 0, t_connector, &t, 0, NULL);
	assert_non_null(th);
	T_RESULT(cqw_accept(l, a, T_PROGRESS_MS), 0);
	assert_int_equal(WaitForSingleObject(th, T_PROGRESS_MS), WAIT_OBJECT_0);
	CloseHandle(th);
	T_RESULT(t.result, 0);
	cqw_listener_free(l);
}

static void
t_free_pair(cqw_conn *a, cqw_conn *b)
{
	cqw_conn_free(a);
	cqw_conn_free(b);
}

static void
test_iocp_loop_backend(void **state)
{
	cqw_loop *loop = t_loop();
	struct cqw_op s, r;
	cqw_conn *a, *b;
	char buf[8];

	(void)state;
	/* A socket on the loop runs with skip-on-success. */
	t_tcp(&a, &b);
	t_op(&s, CQW_OP_SEND, b, "ping", 4);
	t_op(&r, CQW_OP_RECV, a, buf, sizeof(buf));
	T_RESULT(cqw_submit(loop, &s), 0);
	T_RESULT(cqw_submit(loop, &r), 0);
	{
		struct cqw_op *done[2];

		t_reap_exact(loop, done, 2);
	}
	T_RESULT(s.result, 0);
	T_RESULT(r.result, 4);
	assert_string_equal(cqw_loop_features(loop), "skip_on_success");
	t_free_pair(a, b);
	cqw_loop_free(loop);
}

/* One message tx -> rx through the loop, SEND and RECV in flight at once. */
static void
t_roundtrip(cqw_loop *loop, cqw_conn *tx, cqw_conn *rx, size_t len)
{
	unsigned char *out = t_pattern(len, (unsigned)len);
	unsigned char *in = malloc(len + 1);
	struct cqw_op s, r, *done[2];

	assert_non_null(in);
	t_op(&s, CQW_OP_SEND, tx, out, len);
	t_op(&r, CQW_OP_RECV, rx, in, len + 1);
	T_RESULT(cqw_submit(loop, &r), 0);
	T_RESULT(cqw_submit(loop, &s), 0);
	t_reap_exact(loop, done, 2);
	T_RESULT(s.result, 0);
	T_RESULT(r.result, len);
	assert_memory_equal(in, out, len);
	free(in);
	free(out);
}

static void
t_sizes(void (*mk)(cqw_conn **, cqw_conn **))
{
	static const size_t sizes[] = { 0, 5, 64 * 1024, 1024 * 1024, 0 };
	cqw_loop *loop = t_loop();
	cqw_conn *a, *b;
	size_t i;

	mk(&a, &b);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		t_roundtrip(loop, a, b, sizes[i]);
		t_roundtrip(loop, b, a, sizes[i]);
	}
	t_free_pair(a, b);
	cqw_loop_free(loop);
}

static void
test_iocp_loop_msgpipe_sizes(void **state)
{
	(void)state;
	t_sizes(t_msgpipe);
}

static void
test_iocp_loop_tcp_sizes(void **state)
{
	(void)state;
	t_sizes(t_tcp);
}

static void
t_named_plain(cqw_conn **a, cqw_conn **b)
{
	t_named(a, b, NULL);
}

static void
t_named_keyed(cqw_conn **a, cqw_conn **b)
{
	t_named(a, b, "secret");
}

/* Listener and Client pipes (with and without the handshake) on the loop. */
static void
test_iocp_loop_named_pipe(void **state)
{
	(void)state;
	t_sizes(t_named_plain);
	t_sizes(t_named_keyed);
}

/*
 * Many messages queued at once keep their order, and zero-length ones
 * among them are neither lost nor doubled.
 */
#define T_MANY 200

static void
t_many(void (*mk)(cqw_conn **, cqw_conn **))
{
	static struct cqw_op s[T_MANY], r[T_MANY];
	static unsigned char in[T_MANY][64], out[T_MANY][64];
	static struct cqw_op *done[2 * T_MANY];
	cqw_loop *loop = t_loop();
	cqw_conn *a, *b;
	size_t len;
	int i;

	mk(&a, &b);
	for (i = 0; i < T_MANY; i++) {
		len = (size_t)(i % 3 == 0 ? 0 : i % 64);
		memset(out[i], i, sizeof(out[i]));
		t_op(&s[i], CQW_OP_SEND, a, out[i], len);
		t_op(&r[i], CQW_OP_RECV, b, in[i], sizeof(in[i]));
		T_RESULT(cqw_submit(loop, &s[i]), 0);
		T_RESULT(cqw_submit(loop, &r[i]), 0);
	}
	t_reap_exact(loop, done, 2 * T_MANY);
	for (i = 0; i < T_MANY; i++) {
		len = (size_t)(i % 3 == 0 ? 0 : i % 64);
		T_RESULT(s[i].result, 0);
		T_RESULT(r[i].result, len);
		assert_memory_equal(in[i], out[i], len);
	}
	t_free_pair(a, b);
	cqw_loop_free(loop);
}

static void
test_iocp_loop_msgpipe_many(void **state)
{
	(void)state;
	t_many(t_msgpipe);
}

static void
test_iocp_loop_tcp_many(void **state)
{
	(void)state;
	t_many(t_tcp);
}

/*
 * A message longer than the receive's buffer (ERROR_MORE_DATA): the op
 * ends with CQW_ETOOSHORT and needed, nothing is lost, and a receive
 * with room gets it whole, async or (second round) sync. pending: the
 * receive is in flight before the message comes.
 */
static void
t_too_short(int pending)
{
	cqw_loop *loop = t_loop();
	unsigned char *out = t_pattern(1000, 9), in[1000];
	struct cqw_op s, r, *done[2];
	cqw_conn *a, *b;
	size_t needed = 0;

	t_msgpipe(&a, &b);
	t_op(&s, CQW_OP_SEND, a, out, 1000);
	t_op(&r, CQW_OP_RECV, b, in, 100);
	if (pending) {
		T_RESULT(cqw_submit(loop, &r), 0);
		T_RESULT(cqw_flush(loop), 0);
		T_RESULT(cqw_reap(loop, done, 2, 50), 0);
		T_RESULT(cqw_submit(loop, &s), 0);
		t_reap_exact(loop, done, 2);
	} else {
		T_RESULT(cqw_submit(loop, &s), 0);
		t_reap_one(loop, &s);
		T_RESULT(cqw_submit(loop, &r), 0);
		t_reap_one(loop, &r);
	}
	T_RESULT(s.result, 0);
	T_RESULT(r.result, CQW_ETOOSHORT);
	T_RESULT(r.needed, 1000);
	/* Still too small: told again, without I/O. */
	t_op(&r, CQW_OP_RECV, b, in, 999);
	T_RESULT(cqw_submit(loop, &r), 0);
	t_reap_one(loop, &r);
	T_RESULT(r.result, CQW_ETOOSHORT);
	T_RESULT(r.needed, 1000);
	memset(in, 0, sizeof(in));
	t_op(&r, CQW_OP_RECV, b, in, sizeof(in));
	T_RESULT(cqw_submit(loop, &r), 0);
	t_reap_one(loop, &r);
	T_RESULT(r.result, 1000);
	assert_memory_equal(in, out, 1000);

	/* The same, then the synchronous half takes the kept message. */
	T_RESULT(cqw_submit(loop, &s), 0);
	t_reap_one(loop, &s);
	t_op(&r, CQW_OP_RECV, b, in, 10);
	T_RESULT(cqw_submit(loop, &r), 0);
	t_reap_one(loop, &r);
	T_RESULT(r.result, CQW_ETOOSHORT);
	memset(in, 0, sizeof(in));
	T_RESULT(cqw_recv_bytes_into(b, in, 500, 0, &needed), CQW_ETOOSHORT);
	T_RESULT(needed, 1000);
	T_RESULT(cqw_recv_bytes_into(b, in, sizeof(in), 0, &needed), 1000);
	assert_memory_equal(in, out, 1000);
	/* And the next message is whole too. */
	T_RESULT(cqw_send_bytes(a, "next", 4), 0);
	t_op(&r, CQW_OP_RECV, b, in, sizeof(in));
	T_RESULT(cqw_submit(loop, &r), 0);
	t_reap_one(loop, &r);
	T_RESULT(r.result, 4);
	assert_memory_equal(in, "next", 4);
	t_free_pair(a, b);
	cqw_loop_free(loop);
	free(out);
}

static void
test_iocp_loop_more_data_queued(void **state)
{
	(void)state;
	t_too_short(0);
}

static void
test_iocp_loop_more_data_pending(void **state)
{
	(void)state;
	t_too_short(1);
}

/*
 * A 1 MiB message into a small receive: its SEND stays in flight (a
 * message write completes when the reader has it all) while the receive
 * ends with CQW_ETOOSHORT; a receive with room gets it whole, and only
 * then does the send complete.
 */
static void
test_iocp_loop_more_data_big(void **state)
{
	const size_t big = 1024 * 1024;
	unsigned char *out = t_pattern(big, 5), *in = malloc(big);
	struct cqw_op s, r, *done[2];
	cqw_loop *loop = t_loop();
	cqw_conn *a, *b;

	(void)state;
	assert_non_null(in);
	t_msgpipe(&a, &b);
	t_op(&s, CQW_OP_SEND, a, out, big);
	t_op(&r, CQW_OP_RECV, b, in, 100);
	T_RESULT(cqw_submit(loop, &s), 0);
	T_RESULT(cqw_submit(loop, &r), 0);
	t_reap_one(loop, &r);
	T_RESULT(r.result, CQW_ETOOSHORT);
	T_RESULT(r.needed, big);
	T_RESULT(cqw_reap(loop, done, 2, 50), 0); /* the send waits */
	t_op(&r, CQW_OP_RECV, b, in, big);
	T_RESULT(cqw_submit(loop, &r), 0);
	t_reap_exact(loop, done, 2);
	T_RESULT(r.result, big);
	T_RESULT(s.result, 0);
	assert_memory_equal(in, out, big);
	t_free_pair(a, b);
	cqw_loop_free(loop);
	free(in);
	free(out);
}

/*
 * A send into a pipe whose reader is gone fails with CQW_EPIPE, and so
 * does every send after it.
 */
static void
test_iocp_loop_send_broken_pipe(void **state)
{
	cqw_loop *loop = t_loop();
	struct cqw_op s[2], *done[2];
	cqw_conn *a, *b;

	(void)state;
	t_msgpipe(&a, &b);
	T_RESULT(cqw_conn_close(b), 0);
	t_op(&s[0], CQW_OP_SEND, a, "gone", 4);
	t_op(&s[1], CQW_OP_SEND, a, "", 0);
	T_RESULT(cqw_submit(loop, &s[0]), 0);
	T_RESULT(cqw_submit(loop, &s[1]), 0);
	t_reap_exact(loop, done, 2);
	T_RESULT(s[0].result, CQW_EPIPE);
	T_RESULT(s[1].result, CQW_EPIPE);
	t_free_pair(a, b);
	cqw_loop_free(loop);
}

/*
 * A connection outlives its loop and keeps working with the sync calls,
 * but its handle stays bound to that loop's completion port for good:
 * another loop refuses it with CQW_EBUSY (backend.h, detach).
 */
static void
test_iocp_loop_outlives_loop(void **state)
{
	cqw_loop *loop = t_loop(), *other;
	struct cqw_op r;
	cqw_conn *a, *b;
	size_t needed;
	char buf[8];

	(void)state;
	t_msgpipe(&a, &b);
	t_roundtrip(loop, a, b, 3);
	cqw_loop_free(loop);
	T_RESULT(cqw_send_bytes(a, "sync", 4), 0);
	T_RESULT(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, &needed), 4);
	assert_memory_equal(buf, "sync", 4);
	other = t_loop();
	t_op(&r, CQW_OP_RECV, b, buf, sizeof(buf));
	T_RESULT(cqw_submit(other, &r), CQW_EBUSY);
	/* Both ends were on the old loop. */
	t_op(&r, CQW_OP_SEND, a, "new", 3);
	T_RESULT(cqw_submit(other, &r), CQW_EBUSY);
	cqw_loop_free(other);
	t_free_pair(a, b);
}

/* What t_closer() does to a connection, from a thread not the loop's. */
struct t_close {
	cqw_conn *c;
	int free_only; /* cqw_conn_free without cqw_conn_close first */
	int result;
};

static DWORD WINAPI
t_closer(void *arg)
{
	struct t_close *t = arg;

	if (t->free_only) {
		cqw_conn_free(t->c);
		t->result = 0;
	} else {
		t->result = cqw_conn_close(t->c);
		if (t->result == 0) {
			cqw_conn_free(t->c);
		}
	}
	return 0;
}

/* Run t_closer(t) on a thread of its own and wait for it. */
static void
t_close_elsewhere(struct t_close *t)
{
	HANDLE th;

	t->result = 1;
	th = CreateThread(NULL, 0, t_closer, t, 0, NULL);
	assert_non_null(th);
	assert_int_equal(WaitForSingleObject(th, T_PROGRESS_MS), WAIT_OBJECT_0);
	CloseHandle(th);
}

/* 1 if h is an open handle of this process. */
static int
t_handle_open(cqw_fd h)
{
	DWORD info = 0;

	return GetHandleInformation((HANDLE)h, &info) != 0;
}

/*
 * A connection whose ops on loop L (this thread's) are all reaped is let
 * go of L, though its handle stays bound to L's port: another thread may
 * close and free it (its handle is closed then: nothing leaks), it may
 * come back to L (no second bind: that would fail) and work, and another
 * loop refuses it with CQW_EBUSY, also once L is freed and a new loop
 * may sit where L was. With a receive in flight on L, closing it from
 * another thread is CQW_EBUSY and closes nothing.
 */
static void
t_let_go(void (*mk)(cqw_conn **, cqw_conn **))
{
	cqw_loop *loop = t_loop(), *l2 = t_loop(), *l3;
	struct t_close t = { 0 };
	struct cqw_op r, *done[2];
	cqw_conn *a, *b, *c, *d;
	cqw_fd hc, hd, ha;
	size_t needed;
	char buf[16];

	mk(&a, &b);
	mk(&c, &d);
	t_roundtrip(loop, a, b, 5);
	t_roundtrip(loop, b, a, 5);
	t_roundtrip(loop, c, d, 5);
	T_RESULT(cqw_reap(loop, done, 2, 0), 0);

	/* A receive in flight: not closed from another thread. */
	t_op(&r, CQW_OP_RECV, a, buf, sizeof(buf));
	T_RESULT(cqw_submit(loop, &r), 0);
	T_RESULT(cqw_flush(loop), 0);
	t.c = a;
	t_close_elsewhere(&t);
	T_RESULT(t.result, CQW_EBUSY);
	assert_int_equal(cqw_conn_closed(a), 0);
	T_RESULT(cqw_cancel(loop, &r), 0);
	t_reap_one(loop, &r);
	T_RESULT(r.result, CQW_ECANCELED);

	/* All reaped: close and free from another thread, then free only. */
	hd = cqw_conn_fileno(d);
	hc = cqw_conn_fileno(c);
	assert_true(t_handle_open(hd));
	assert_true(t_handle_open(hc));
	t.c = d;
	t.free_only = 0;
	t_close_elsewhere(&t);
	T_RESULT(t.result, 0);
	assert_false(t_handle_open(hd));
	t.c = c;
	t.free_only = 1;
	t_close_elsewhere(&t);
	assert_false(t_handle_open(hc));

	/* Back to L, which binds nothing again; another loop refuses. */
	t_roundtrip(loop, a, b, 1000);
	t_op(&r, CQW_OP_RECV, a, buf, sizeof(buf));
	T_RESULT(cqw_submit(l2, &r), CQW_EBUSY);
	t_op(&r, CQW_OP_SEND, b, "x", 1);
	T_RESULT(cqw_submit(l2, &r), CQW_EBUSY);
	T_RESULT(cqw_reap(l2, done, 2, 0), 0);
	t_roundtrip(loop, b, a, 3);

	/* L freed: still refused, by l2 and by a loop made after it. */
	cqw_loop_free(loop);
	l3 = t_loop();
	t_op(&r, CQW_OP_RECV, a, buf, sizeof(buf));
	T_RESULT(cqw_submit(l2, &r), CQW_EBUSY);
	T_RESULT(cqw_submit(l3, &r), CQW_EBUSY);
	t_op(&r, CQW_OP_SEND, b, "x", 1);
	T_RESULT(cqw_submit(l3, &r), CQW_EBUSY);
	T_RESULT(cqw_reap(l3, done, 2, 0), 0);
	/* The synchronous calls go on. */
	T_RESULT(cqw_send_bytes(b, "sync", 4), 0);
	T_RESULT(cqw_recv_bytes_into(a, buf, sizeof(buf), 0, &needed), 4);
	assert_memory_equal(buf, "sync", 4);

	/* Outliving every loop, freed from another thread. */
	ha = cqw_conn_fileno(a);
	t.c = a;
	t.free_only = 0;
	t_close_elsewhere(&t);
	T_RESULT(t.result, 0);
	assert_false(t_handle_open(ha));
	cqw_conn_free(b);
	cqw_loop_free(l2);
	cqw_loop_free(l3);
}

static void
test_iocp_loop_let_go_msgpipe(void **state)
{
	(void)state;
	t_let_go(t_msgpipe);
}

static void
test_iocp_loop_let_go_tcp(void **state)
{
	(void)state;
	t_let_go(t_tcp);
}

/*
 * Cancels around a kept message: a receive cancelled before it starts
 * leaves the part kept, and one cancelled while it reads the rest either
 * gets the message or is cancelled with the part still kept. Either way
 * the message is handed up exactly once, whole.
 */
static void
test_iocp_loop_cancel_keeps_part(void **state)
{
	unsigned char *out = t_pattern(1000, 1), in[1000];
	struct cqw_op s, r, *done[2];
	cqw_loop *loop = t_loop();
	cqw_conn *a, *b;
	int round, got = 0;

	(void)state;
	t_msgpipe(&a, &b);
	for (round = 0; round < 20; round++) {
		t_op(&s, CQW_OP_SEND, a, out, 1000);
		t_op(&r, CQW_OP_RECV, b, in, 10);
		T_RESULT(cqw_submit(loop, &s), 0);
		T_RESULT(cqw_submit(loop, &r), 0);
		t_reap_exact(loop, done, 2);
		T_RESULT(r.result, CQW_ETOOSHORT);
		/* Cancelled while queued: no I/O, the part stays. */
		t_op(&r, CQW_OP_RECV, b, in, sizeof(in));
		T_RESULT(cqw_submit(loop, &r), 0);
		T_RESULT(cqw_cancel(loop, &r), 0);
		t_reap_one(loop, &r);
		T_RESULT(r.result, CQW_ECANCELED);
		/* Cancelled with its rest read started. */
		memset(in, 0, sizeof(in));
		t_op(&r, CQW_OP_RECV, b, in, sizeof(in));
		T_RESULT(cqw_submit(loop, &r), 0);
		T_RESULT(cqw_flush(loop), 0);
		T_RESULT(cqw_cancel(loop, &r), 0);
		t_reap_one(loop, &r);
		if (r.result == CQW_ECANCELED) {
			t_op(&r, CQW_OP_RECV, b, in, sizeof(in));
			T_RESULT(cqw_submit(loop, &r), 0);
			t_reap_one(loop, &r);
		} else {
			got++;
		}
		T_RESULT(r.result, 1000);
		assert_memory_equal(in, out, 1000);
	}
	printf("rest reads that won against their cancel: %d of 20\n", got);
	/* Nothing is left over: the next message is the next one sent. */
	T_RESULT(cqw_send_bytes(a, "end", 3), 0);
	t_op(&r, CQW_OP_RECV, b, in, sizeof(in));
	T_RESULT(cqw_submit(loop, &r), 0);
	t_reap_one(loop, &r);
	T_RESULT(r.result, 3);
	t_free_pair(a, b);
	cqw_loop_free(loop);
	free(out);
}

/* A zero-length buffer and a zero-length message meet without loss. */
static void
test_iocp_loop_zero_length(void **state)
{
	cqw_loop *loop = t_loop();
	struct cqw_op r;
	cqw_conn *a, *b;
	char buf[16];

	(void)state;
	t_msgpipe(&a, &b);
	T_RESULT(cqw_send_bytes(a, "", 0), 0);
	T_RESULT(cqw_send_bytes(a, "abc", 3), 0);
	T_RESULT(cqw_send_bytes(a, "", 0), 0);
	/* A receive with no room takes the empty message: it fits. */
	t_op(&r, CQW_OP_RECV, b, buf, 0);
	T_RESULT(cqw_submit(loop, &r), 0);
	t_reap_one(loop, &r);
	T_RESULT(r.result, 0);
	/* No room for "abc": told so, and it stays. */
	t_op(&r, CQW_OP_RECV, b, buf, 0);
	T_RESULT(cqw_submit(loop, &r), 0);
	t_reap_one(loop, &r);
	T_RESULT(r.result, CQW_ETOOSHORT);
	T_RESULT(r.needed, 3);
	t_op(&r, CQW_OP_RECV, b, buf, sizeof(buf));
	T_RESULT(cqw_submit(loop, &r), 0);
	t_reap_one(loop, &r);
	T_RESULT(r.result, 3);
	assert_memory_equal(buf, "abc", 3);
	t_op(&r, CQW_OP_RECV, b, buf, sizeof(buf));
	T_RESULT(cqw_submit(loop, &r), 0);
	t_reap_one(loop, &r);
	T_RESULT(r.result, 0);
	/* Nothing more: a receive now waits. */
	t_op(&r, CQW_OP_RECV, b, buf, sizeof(buf));
	T_RESULT(cqw_submit(loop, &r), 0);
	{
		struct cqw_op *done[1];

		T_RESULT(cqw_reap(loop, done, 1, 50), 0);
	}
	T_RESULT(cqw_cancel(loop, &r), 0);
	t_reap_one(loop, &r);
	T_RESULT(r.result, CQW_ECANCELED);
	t_free_pair(a, b);
	cqw_loop_free(loop);
}

/* Cancel a pending receive: once, CQW_ECANCELED; the next message is whole. */
static void
t_cancel(void (*mk)(cqw_conn **, cqw_conn **))
{
	cqw_loop *loop = t_loop();
	struct cqw_op r, *done[2];
	cqw_conn *a, *b;
	char buf[16];

	mk(&a, &b);
	t_op(&r, CQW_OP_RECV, b, buf, sizeof(buf));
	T_RESULT(cqw_submit(loop, &r), 0);
	T_RESULT(cqw_reap(loop, done, 2, 50), 0);
	T_RESULT(cqw_cancel(loop, &r), 0);
	t_reap_one(loop, &r);
	T_RESULT(r.result, CQW_ECANCELED);
	T_RESULT(cqw_cancel(loop, &r), 0); /* done: nothing to cancel */
	T_RESULT(cqw_reap(loop, done, 2, 50), 0);
	T_RESULT(cqw_send_bytes(a, "whole", 5), 0);
	t_op(&r, CQW_OP_RECV, b, buf, sizeof(buf));
	T_RESULT(cqw_submit(loop, &r), 0);
	t_reap_one(loop, &r);
	T_RESULT(r.result, 5);
	assert_memory_equal(buf, "whole", 5);
	t_free_pair(a, b);
	cqw_loop_free(loop);
}

static void
test_iocp_loop_cancel_msgpipe(void **state)
{
	(void)state;
	t_cancel(t_msgpipe);
}

static void
test_iocp_loop_cancel_tcp(void **state)
{
	(void)state;
	t_cancel(t_tcp);
}

/*
 * Close with receives pending (one in flight, more queued): close waits
 * for the cancels, and every op is reaped once, cancelled.
 */
static void
t_close_pending(void (*mk)(cqw_conn **, cqw_conn **))
{
	cqw_loop *loop = t_loop();
	struct cqw_op r[3], *done[4];
	cqw_conn *a, *b;
	char buf[3][16];
	int i;

	mk(&a, &b);
	for (i = 0; i < 3; i++) {
		t_op(&r[i], CQW_OP_RECV, b, buf[i], sizeof(buf[i]));
		T_RESULT(cqw_submit(loop, &r[i]), 0);
	}
	T_RESULT(cqw_flush(loop), 0);
	T_RESULT(cqw_conn_close(b), 0);
	t_reap_exact(loop, done, 3);
	for (i = 0; i < 3; i++) {
		T_RESULT(r[i].result, CQW_ECANCELED);
	}
	T_RESULT(cqw_submit(loop, &r[0]), CQW_ECLOSED);
	t_free_pair(a, b);
	cqw_loop_free(loop);
}

static void
test_iocp_loop_close_pending_msgpipe(void **state)
{
	(void)state;
	t_close_pending(t_msgpipe);
}

static void
test_iocp_loop_close_pending_tcp(void **state)
{
	(void)state;
	t_close_pending(t_tcp);
}

/* The peer closes: a pipe's pending receive says CQW_EOF, a socket's too. */
static void
t_peer_closes(void (*mk)(cqw_conn **, cqw_conn **))
{
	cqw_loop *loop = t_loop();
	struct cqw_op r, *done[2];
	cqw_conn *a, *b;
	char buf[16];

	mk(&a, &b);
	t_op(&r, CQW_OP_RECV, b, buf, sizeof(buf));
	T_RESULT(cqw_submit(loop, &r), 0);
	T_RESULT(cqw_reap(loop, done, 2, 50), 0);
	T_RESULT(cqw_conn_close(a), 0);
	t_reap_one(loop, &r);
	T_RESULT(r.result, CQW_EOF);
	t_free_pair(a, b);
	cqw_loop_free(loop);
}

static void
test_iocp_loop_peer_closes_msgpipe(void **state)
{
	(void)state;
	t_peer_closes(t_msgpipe);
}

static void
test_iocp_loop_peer_closes_tcp(void **state)
{
	(void)state;
	t_peer_closes(t_tcp);
}

static DWORD WINAPI
t_waker(void *arg)
{
	Sleep(100);
	return cqw_loop_wake(arg) == 0 ? 0 : 1;
}

/* cqw_loop_wake() from another thread ends a reap that waits forever. */
static void
test_iocp_loop_wake(void **state)
{
	cqw_loop *loop = t_loop();
	struct cqw_op r, *done[2];
	cqw_conn *a, *b;
	DWORD code = 9;
	char buf[8];
	HANDLE th;

	(void)state;
	t_msgpipe(&a, &b);
	t_op(&r, CQW_OP_RECV, b, buf, sizeof(buf));
	T_RESULT(cqw_submit(loop, &r), 0);
	th = CreateThread(NULL, 0, t_waker, loop, 0, NULL);
	assert_non_null(th);
	T_RESULT(cqw_reap(loop, done, 2, -1), 0);
	assert_int_equal(WaitForSingleObject(th, T_PROGRESS_MS), WAIT_OBJECT_0);
	assert_true(GetExitCodeThread(th, &code));
	assert_int_equal(code, 0);
	CloseHandle(th);
	T_RESULT(cqw_cancel(loop, &r), 0);
	t_reap_one(loop, &r);
	T_RESULT(r.result, CQW_ECANCELED);
	t_free_pair(a, b);
	cqw_loop_free(loop);
}

/*
 * More pending receives than one GetQueuedCompletionStatusEx batch (64)
 * complete together: all reaped, each once, each with its message.
 */
#define T_PIPES 150

static void
test_iocp_loop_batch(void **state)
{
	static cqw_conn *a[T_PIPES], *b[T_PIPES];
	static struct cqw_op r[T_PIPES], *done[T_PIPES];
	static int in[T_PIPES];
	cqw_loop *loop = t_loop();
	int i;

	(void)state;
	for (i = 0; i < T_PIPES; i++) {
		t_msgpipe(&a[i], &b[i]);
		t_op(&r[i], CQW_OP_RECV, b[i], &in[i], sizeof(in[i]));
		T_RESULT(cqw_submit(loop, &r[i]), 0);
	}
	T_RESULT(cqw_flush(loop), 0);
	for (i = 0; i < T_PIPES; i++) {
		T_RESULT(cqw_send_bytes(a[i], &i, sizeof(i)), 0);
	}
	Sleep(50);
	t_reap_exact(loop, done, T_PIPES);
	for (i = 0; i < T_PIPES; i++) {
		T_RESULT(r[i].result, sizeof(i));
		T_RESULT(in[i], i);
		t_free_pair(a[i], b[i]);
	}
	cqw_loop_free(loop);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_iocp_loop_backend),
		cmocka_unit_test(test_iocp_loop_msgpipe_sizes),
		cmocka_unit_test(test_iocp_loop_tcp_sizes),
		cmocka_unit_test(test_iocp_loop_named_pipe),
		cmocka_unit_test(test_iocp_loop_msgpipe_many),
		cmocka_unit_test(test_iocp_loop_tcp_many),
		cmocka_unit_test(test_iocp_loop_more_data_queued),
		cmocka_unit_test(test_iocp_loop_more_data_pending),
		cmocka_unit_test(test_iocp_loop_more_data_big),
		cmocka_unit_test(test_iocp_loop_send_broken_pipe),
		cmocka_unit_test(test_iocp_loop_outlives_loop),
		cmocka_unit_test(test_iocp_loop_let_go_msgpipe),
		cmocka_unit_test(test_iocp_loop_let_go_tcp),
		cmocka_unit_test(test_iocp_loop_cancel_keeps_part),
		cmocka_unit_test(test_iocp_loop_zero_length),
		cmocka_unit_test(test_iocp_loop_cancel_msgpipe),
		cmocka_unit_test(test_iocp_loop_cancel_tcp),
		cmocka_unit_test(test_iocp_loop_close_pending_msgpipe),
		cmocka_unit_test(test_iocp_loop_close_pending_tcp),
		cmocka_unit_test(test_iocp_loop_peer_closes_msgpipe),
		cmocka_unit_test(test_iocp_loop_peer_closes_tcp),
		cmocka_unit_test(test_iocp_loop_wake),
		cmocka_unit_test(test_iocp_loop_batch),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
