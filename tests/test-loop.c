/*
 * The asynchronous API (cqw_loop_new, cqw_submit, cqw_flush, cqw_reap,
 * cqw_cancel, cqw_loop_wake) on the backend that CQW_BACKEND names:
 * order and integrity of many messages over sockets and pipes, partial
 * transfers, too-small receives, frame-exact reads and the hand-over to
 * the sync calls, exactly-once completion, reap timeouts, cancellation,
 * close with ops in flight, the sync calls' CQW_EBUSY, end of file, bad
 * ops, wake-ups from another thread, fork(), lifetimes and backend
 * selection.
 *
 * Children never use cmocka's assertions (a failure would long-jump into
 * the runner's copy inside the child): they check with T_CHILD_CHECK()
 * and the parent asserts their exit status.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifndef _WIN32
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "cqwire.h"
#include "t-util.h"
#include "t-loop.h"

/* As cqw_pipe(): with CQW_DUPLEX two ends, else (reader, writer). */
static void
t_pipe(cqw_conn **a, cqw_conn **b, unsigned flags)
{
	T_RESULT(cqw_pipe(a, b, flags), 0);
}

/*
 * A pair on a byte stream, for the cases that put raw frame bytes on the
 * wire: cqw_pipe() on POSIX; on Windows, whose cqw_pipe() is a message
 * pipe without headers, TCP on loopback (always duplex).
 */
static void
t_stream(cqw_conn **a, cqw_conn **b, unsigned flags)
{
#ifdef _WIN32
	cqw_listener *l = NULL;

	(void)flags;
	T_RESULT(cqw_listen(&l, "tcp:127.0.0.1:0", NULL, 1), 0);
	T_RESULT(cqw_connect(a, cqw_listener_address(l), NULL), 0);
	T_RESULT(cqw_accept(l, b, 5000), 0);
	cqw_listener_free(l);
#else
	t_pipe(a, b, flags);
#endif
}

/* tx: the end that sends to rx (a duplex pair can go either way). */
static void
t_ends(cqw_conn *a, cqw_conn *b, unsigned flags, cqw_conn **tx, cqw_conn **rx)
{
	if ((flags & CQW_DUPLEX) == CQW_DUPLEX) {
		*tx = a;
		*rx = b;
	} else {
		*tx = b;
		*rx = a;
	}
}

#ifdef _WIN32
/*
 * Shrink the kernel's buffers of c's socket, so that big messages need
 * many partial reads and writes. A named pipe's buffer sizes are fixed
 * when the pipe is made (cqw_pipe() picks them): left as they are.
 */
static void
t_shrink(cqw_conn *c)
{
	cqw_fd h = cqw_conn_fileno(c);
	int one = 1, got = 0, len = (int)sizeof(got);

	assert_true(h >= 0);
	if (!t_is_socket(h)) {
		return;
	}
	assert_int_equal(setsockopt((SOCKET)h, SOL_SOCKET, SO_SNDBUF,
				    (const char *)&one, sizeof(one)),
			 0);
	assert_int_equal(setsockopt((SOCKET)h, SOL_SOCKET, SO_RCVBUF,
				    (const char *)&one, sizeof(one)),
			 0);
	assert_int_equal(
	    getsockopt((SOCKET)h, SOL_SOCKET, SO_SNDBUF, (char *)&got, &len),
	    0);
	assert_true(got < 64 * 1024);
}
#else
static int
t_is_socket(int fd)
{
	struct stat st;

	assert_int_equal(fstat(fd, &st), 0);
	return S_ISSOCK(st.st_mode);
}

/*
 * Shrink the kernel's buffers of c's descriptor as far as it allows, so
 * that big messages need many partial reads and writes.
 */
static void
t_shrink(cqw_conn *c)
{
	int fd = (int)cqw_conn_fileno(c), one = 1, got = 0;
	socklen_t len = sizeof(got);

	assert_true(fd >= 0);
	if (t_is_socket(fd)) {
		assert_int_equal(
		    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &one, sizeof(one)),
		    0);
		assert_int_equal(
		    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &one, sizeof(one)),
		    0);
		assert_int_equal(
		    getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &got, &len), 0);
		assert_true(got < 64 * 1024);
	} else {
		got = fcntl(fd, F_SETPIPE_SZ, 4096);
		assert_true(got > 0 && got < 64 * 1024);
	}
}
#endif

/* Send a message with the sync API and receive it with one RECV op. */
static void
t_check_stream(cqw_loop *loop, cqw_conn *tx, cqw_conn *rx, const char *msg)
{
	char buf[256];
	struct cqw_op op;
	size_t len = strlen(msg);

	T_RESULT(cqw_send_bytes(tx, msg, len), 0);
	t_op(&op, CQW_OP_RECV, rx, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &op), 0);
	t_reap_one(loop, &op);
	T_RESULT(op.result, len);
	assert_memory_equal(buf, msg, len);
}

/* ------------------------------------------------------------------
 * Message contents: length, bytes and checksum derived from a sequence
 * number, so that the receiver knows what each message must be.
 */

static uint32_t
t_hash(uint32_t x)
{
	x ^= x >> 16;
	x *= 0x7feb352dU;
	x ^= x >> 15;
	x *= 0x846ca68bU;
	x ^= x >> 16;
	return x;
}

/*
 * Mostly small, some empty or shorter than the sequence field, some
 * around the 64 KiB staging size and some up to max.
 */
static size_t
t_msg_len(uint32_t seq, size_t max)
{
	uint32_t h = t_hash(seq * 2 + 1), k = t_hash(seq * 2 + 2);
	size_t len;

	switch (h % 16) {
	case 0:
		len = 0;
		break;
	case 1:
		len = k % 4;
		break;
	case 2:
	case 3:
		len = k % (max + 1);
		break;
	case 4:
		len = 65536 - 16 + k % 32;
		break;
	default:
		len = k % 600;
		break;
	}
	if (seq % 1000 == 999) {
		len = max;
	}
	return len > max ? max : len;
}

/* Pseudo-random bytes; the first four carry seq when there is room. */
static void
t_msg_fill(uint8_t *p, size_t len, uint32_t seq)
{
	uint32_t x = t_hash(seq) | 1;
	size_t i;

	for (i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (uint8_t)x;
	}
	if (len >= sizeof(seq)) {
		memcpy(p, &seq, sizeof(seq));
	}
}

/* FNV-1a. */
static uint32_t
t_sum(const uint8_t *p, size_t len)
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; i < len; i++) {
		h = (h ^ p[i]) * 16777619u;
	}
	return h;
}

/* ------------------------------------------------------------------
 * Many messages in order
 */

struct t_slot {
	struct cqw_op op;
	uint8_t *buf;
	uint32_t seq; /* the message this op carries or must receive */
	int is_send;
	int busy; /* submitted and not yet reaped */
};

struct t_stream_opts {
	unsigned flags; /* for cqw_pipe() */
	uint32_t count; /* messages */
	size_t max_len;
	int window; /* sends and receives in flight, each */
	int batch;  /* cqw_reap()'s max */
	int shrink; /* tiny kernel buffers */
};

struct t_stream {
	const struct t_stream_opts *o;
	struct t_slot *slots; /* window sends, then window receives */
	int *free_send, nfree_send;
	int *free_recv, nfree_recv;
	uint32_t *sums; /* checksum of each message, by seq */
	uint32_t next_send, next_recv, sent, received;
};

static void
t_stream_complete(struct t_stream *s, struct cqw_op *op)
{
	struct t_slot *slot = op->user_data;
	size_t want;
	uint32_t seq;

	assert_non_null(slot);
	assert_ptr_equal(&slot->op, op);
	if (!slot->busy) {
		fail_msg("op for seq %u completed twice", slot->seq);
	}
	slot->busy = 0;
	if (slot->is_send) {
		T_RESULT(op->result, 0);
		s->sent++;
		s->free_send[s->nfree_send++] = (int)(slot - s->slots);
		return;
	}
	want = t_msg_len(slot->seq, s->o->max_len);
	if (op->result != (int64_t)want) {
		fail_msg("receive %u: result %lld (%s), expected %zu",
			 slot->seq, (long long)op->result, t_name(op->result),
			 want);
	}
	if (want >= sizeof(seq)) {
		memcpy(&seq, slot->buf, sizeof(seq));
		if (seq != slot->seq) {
			fail_msg("receive %u got message %u", slot->seq, seq);
		}
	}
	if (t_sum(slot->buf, want) != s->sums[slot->seq]) {
		fail_msg("receive %u: checksum mismatch", slot->seq);
	}
	s->received++;
	s->free_recv[s->nfree_recv++] = (int)(slot - s->slots);
}

static void
t_stream_run(const struct t_stream_opts *o)
{
	struct t_stream s = { .o = o };
	struct cqw_op **done = calloc((size_t)o->batch, sizeof(*done));
	cqw_loop *loop = t_loop_new();
	cqw_conn *a, *b, *tx, *rx;
	struct t_slot *slot;
	int i, r, w = o->window;

	assert_non_null(done);
	t_pipe(&a, &b, o->flags);
	t_ends(a, b, o->flags, &tx, &rx);
	if (o->shrink) {
		t_shrink(tx);
		t_shrink(rx);
	}
	s.slots = calloc((size_t)w * 2, sizeof(*s.slots));
	s.free_send = calloc((size_t)w, sizeof(int));
	s.free_recv = calloc((size_t)w, sizeof(int));
	s.sums = calloc(o->count, sizeof(*s.sums));
	assert_non_null(s.slots);
	assert_non_null(s.free_send);
	assert_non_null(s.free_recv);
	assert_non_null(s.sums);
	for (i = 0; i < 2 * w; i++) {
		s.slots[i].buf = malloc(o->max_len > 0 ? o->max_len : 1);
		assert_non_null(s.slots[i].buf);
		s.slots[i].is_send = i < w;
		if (i < w) {
			s.free_send[s.nfree_send++] = i;
		} else {
			s.free_recv[s.nfree_recv++] = i;
		}
	}
	while (s.sent < o->count || s.received < o->count) {
		while (s.next_send < o->count && s.nfree_send > 0) {
			size_t len = t_msg_len(s.next_send, o->max_len);

			slot = &s.slots[s.free_send[--s.nfree_send]];
			slot->seq = s.next_send++;
			t_msg_fill(slot->buf, len, slot->seq);
			s.sums[slot->seq] = t_sum(slot->buf, len);
			t_op(&slot->op, CQW_OP_SEND, tx, slot->buf, len, slot);
			slot->busy = 1;
			T_RESULT(cqw_submit(loop, &slot->op), 0);
		}
		while (s.next_recv < o->count && s.nfree_recv > 0) {
			slot = &s.slots[s.free_recv[--s.nfree_recv]];
			slot->seq = s.next_recv++;
			t_op(&slot->op, CQW_OP_RECV, rx, slot->buf, o->max_len,
			     slot);
			slot->busy = 1;
			T_RESULT(cqw_submit(loop, &slot->op), 0);
		}
		r = cqw_reap(loop, done, o->batch, T_PROGRESS_MS);
		if (r <= 0) {
			fail_msg("reap: %d (%s) after %u sent, %u received", r,
				 t_name(r), s.sent, s.received);
		}
		assert_true(r <= o->batch);
		for (i = 0; i < r; i++) {
			t_stream_complete(&s, done[i]);
		}
	}
	assert_int_equal(s.sent, o->count);
	assert_int_equal(s.received, o->count);
	T_RESULT(cqw_reap(loop, done, o->batch, 0), 0);
	for (i = 0; i < 2 * w; i++) {
		assert_false(s.slots[i].busy);
		free(s.slots[i].buf);
	}
	free(s.slots);
	free(s.free_send);
	free(s.free_recv);
	free(s.sums);
	free(done);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
}

static void
test_loop_backend_matches_env(void **state)
{
	cqw_loop *loop;

	(void)state;
	loop = t_loop_new();
	assert_non_null(cqw_loop_backend(loop));
	cqw_loop_free(loop);
}

static void
test_loop_stream_socketpair_in_order(void **state)
{
	struct t_stream_opts o = { .flags = CQW_DUPLEX,
				   .count = 10000,
				   .max_len = 70000,
				   .window = 64,
				   .batch = 37 };

	(void)state;
	t_stream_run(&o);
}

static void
test_loop_stream_pipe_in_order(void **state)
{
	struct t_stream_opts o = { .flags = 0,
				   .count = 10000,
				   .max_len = 70000,
				   .window = 64,
				   .batch = 37 };

	(void)state;
	t_stream_run(&o);
}

static void
test_loop_stream_exclusive_in_order(void **state)
{
	struct t_stream_opts o = { .flags = CQW_DUPLEX | CQW_EXCLUSIVE,
				   .count = 10000,
				   .max_len = 70000,
				   .window = 64,
				   .batch = 37 };

	(void)state;
	t_stream_run(&o);
}

static void
test_loop_stream_exclusive_pipe_in_order(void **state)
{
	struct t_stream_opts o = { .flags = CQW_EXCLUSIVE,
				   .count = 10000,
				   .max_len = 70000,
				   .window = 64,
				   .batch = 37 };

	(void)state;
	t_stream_run(&o);
}

/* Tiny kernel buffers: gathers resume mid-iovec, receives mid-frame. */
static void
test_loop_stream_tiny_buffers_in_order(void **state)
{
	static const unsigned flags[] = { CQW_DUPLEX, 0,
					  CQW_DUPLEX | CQW_EXCLUSIVE,
					  CQW_EXCLUSIVE };
	struct t_stream_opts o = { .count = 2000,
				   .max_len = 70000,
				   .window = 16,
				   .batch = 5,
				   .shrink = 1 };
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		o.flags = flags[i];
		t_stream_run(&o);
	}
}

/* Small, 4 MiB, small: each intact, with tiny kernel buffers. */
static void
t_big_partial(unsigned flags)
{
	enum { BIG = 4 << 20, SMALL = 100 };
	cqw_loop *loop = t_loop_new();
	cqw_conn *a, *b, *tx, *rx;
	uint8_t *big = malloc(BIG), *bigin = malloc(BIG);
	uint8_t s1[SMALL], s2[SMALL], in1[SMALL], in2[SMALL];
	struct cqw_op ops[6], *done[6];
	int i;

	assert_non_null(big);
	assert_non_null(bigin);
	t_pipe(&a, &b, flags);
	t_ends(a, b, flags, &tx, &rx);
	t_shrink(tx);
	t_shrink(rx);
	t_msg_fill(s1, SMALL, 1);
	t_msg_fill(big, BIG, 2);
	t_msg_fill(s2, SMALL, 3);
	memset(bigin, 0, BIG);
	t_op(&ops[0], CQW_OP_SEND, tx, s1, SMALL, NULL);
	t_op(&ops[1], CQW_OP_SEND, tx, big, BIG, NULL);
	t_op(&ops[2], CQW_OP_SEND, tx, s2, SMALL, NULL);
	t_op(&ops[3], CQW_OP_RECV, rx, in1, SMALL, NULL);
	t_op(&ops[4], CQW_OP_RECV, rx, bigin, BIG, NULL);
	t_op(&ops[5], CQW_OP_RECV, rx, in2, SMALL, NULL);
	for (i = 0; i < 6; i++) {
		T_RESULT(cqw_submit(loop, &ops[i]), 0);
	}
	t_reap_exact(loop, done, 6);
	for (i = 0; i < 3; i++) {
		T_RESULT(ops[i].result, 0);
	}
	T_RESULT(ops[3].result, SMALL);
	T_RESULT(ops[4].result, BIG);
	T_RESULT(ops[5].result, SMALL);
	assert_memory_equal(in1, s1, SMALL);
	assert_true(memcmp(bigin, big, BIG) == 0);
	assert_memory_equal(in2, s2, SMALL);
	t_check_stream(loop, tx, rx, "after");
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
	free(big);
	free(bigin);
}

static void
test_loop_partial_4mib_socketpair(void **state)
{
	(void)state;
	t_big_partial(CQW_DUPLEX);
	t_big_partial(CQW_DUPLEX | CQW_EXCLUSIVE);
}

static void
test_loop_partial_4mib_pipe(void **state)
{
	(void)state;
	t_big_partial(0);
	t_big_partial(CQW_EXCLUSIVE);
}

/*
 * count round trips tx -> rx through loop with checked contents; 0 or the
 * line that failed. No cmocka here: children use it.
 */
static int
t_exchange(cqw_loop *loop, cqw_conn *tx, cqw_conn *rx, uint32_t first,
	   uint32_t count)
{
	uint8_t out[3000], in[3000];
	struct cqw_op s, r, *done[2];
	uint32_t seq;
	size_t len;
	int got, n;

	for (seq = first; seq < first + count; seq++) {
		len = t_msg_len(seq, sizeof(out));
		t_msg_fill(out, len, seq);
		t_op(&s, CQW_OP_SEND, tx, out, len, NULL);
		t_op(&r, CQW_OP_RECV, rx, in, sizeof(in), NULL);
		if (cqw_submit(loop, &s) != 0 || cqw_submit(loop, &r) != 0) {
			return __LINE__;
		}
		for (got = 0; got < 2; got += n) {
			n = cqw_reap(loop, done + got, 2 - got, T_PROGRESS_MS);
			if (n <= 0) {
				return __LINE__;
			}
		}
		if (done[0] == done[1] || s.result != 0 ||
		    r.result != (int64_t)len ||
		    t_sum(in, len) != t_sum(out, len)) {
			return __LINE__;
		}
	}
	return 0;
}

/* ------------------------------------------------------------------
 * Too-small receive buffers
 */

/* A blocking sync send in a thread: the message may exceed the buffers. */
struct t_sender {
	pthread_t th;
	cqw_conn *c;
	const void *buf;
	size_t len;
	int result;
};

static void *
t_sender_main(void *arg)
{
	struct t_sender *s = arg;

	s->result = cqw_send_bytes(s->c, s->buf, s->len);
	return NULL;
}

static void
t_send_start(struct t_sender *s, cqw_conn *c, const void *buf, size_t len)
{
	s->c = c;
	s->buf = buf;
	s->len = len;
	s->result = 1;
	assert_int_equal(pthread_create(&s->th, NULL, t_sender_main, s), 0);
}

static void
t_send_join(struct t_sender *s)
{
	assert_int_equal(pthread_join(s->th, NULL), 0);
	T_RESULT(s->result, 0);
}

static void
t_too_short(unsigned flags, size_t msglen)
{
	cqw_loop *loop = t_loop_new();
	cqw_conn *a, *b, *tx, *rx;
	uint8_t *msg = malloc(msglen), *in = malloc(msglen), small[10];
	struct cqw_op op1, op2, op3, *done[2];
	struct t_sender snd;

	assert_non_null(msg);
	assert_non_null(in);
	t_pipe(&a, &b, flags);
	t_ends(a, b, flags, &tx, &rx);
	t_msg_fill(msg, msglen, 42);

	/* Queued together: the small one fails, the big one gets it. */
	t_send_start(&snd, tx, msg, msglen);
	t_op(&op1, CQW_OP_RECV, rx, small, sizeof(small), NULL);
	t_op(&op2, CQW_OP_RECV, rx, in, msglen, NULL);
	T_RESULT(cqw_submit(loop, &op1), 0);
	T_RESULT(cqw_submit(loop, &op2), 0);
	t_reap_exact(loop, done, 2);
	t_send_join(&snd);
	T_RESULT(op1.result, CQW_ETOOSHORT);
	T_RESULT(op1.needed, msglen);
	T_RESULT(op2.result, msglen);
	assert_true(memcmp(in, msg, msglen) == 0);

	/* Alone, the header not there yet; then a zero-capacity op. */
	t_op(&op1, CQW_OP_RECV, rx, small, sizeof(small), NULL);
	T_RESULT(cqw_submit(loop, &op1), 0);
	T_RESULT(cqw_flush(loop), 0);
	t_send_start(&snd, tx, msg, msglen);
	t_reap_one(loop, &op1);
	T_RESULT(op1.result, CQW_ETOOSHORT);
	T_RESULT(op1.needed, msglen);
	t_op(&op3, CQW_OP_RECV, rx, NULL, 0, NULL);
	T_RESULT(cqw_submit(loop, &op3), 0);
	t_reap_one(loop, &op3);
	T_RESULT(op3.result, CQW_ETOOSHORT);
	T_RESULT(op3.needed, msglen);

	/* The message waited for a big enough receive. */
	memset(in, 0, msglen);
	t_op(&op2, CQW_OP_RECV, rx, in, msglen, NULL);
	T_RESULT(cqw_submit(loop, &op2), 0);
	t_reap_one(loop, &op2);
	t_send_join(&snd);
	T_RESULT(op2.result, msglen);
	assert_true(memcmp(in, msg, msglen) == 0);

	/* And the sync API gets a message kept by an async refusal. */
	t_send_start(&snd, tx, msg, msglen);
	t_op(&op1, CQW_OP_RECV, rx, small, sizeof(small), NULL);
	T_RESULT(cqw_submit(loop, &op1), 0);
	t_reap_one(loop, &op1);
	T_RESULT(op1.result, CQW_ETOOSHORT);
	memset(in, 0, msglen);
	T_RESULT(cqw_recv_bytes_into(rx, in, msglen, 0, NULL), msglen);
	t_send_join(&snd);
	assert_true(memcmp(in, msg, msglen) == 0);

	t_check_stream(loop, tx, rx, "next");
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
	free(msg);
	free(in);
}

static void
test_loop_recv_too_short_keeps_message(void **state)
{
	static const unsigned flags[] = { CQW_DUPLEX, 0,
					  CQW_DUPLEX | CQW_EXCLUSIVE,
					  CQW_EXCLUSIVE };
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		t_too_short(flags[i], 1000);
		t_too_short(flags[i], 100000);
	}
}

/* Empty messages, also from and into a NULL buffer of capacity 0. */
static void
test_loop_zero_length_messages(void **state)
{
	static const unsigned flags[] = { CQW_DUPLEX, 0 };
	struct cqw_op ops[4], *done[4];
	cqw_conn *a, *b, *tx, *rx;
	cqw_loop *loop;
	char buf[8];
	size_t i;

	(void)state;
	loop = t_loop_new();
	for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		t_pipe(&a, &b, flags[i]);
		t_ends(a, b, flags[i], &tx, &rx);
		t_op(&ops[0], CQW_OP_SEND, tx, NULL, 0, NULL);
		t_op(&ops[1], CQW_OP_SEND, tx, buf, 0, NULL);
		t_op(&ops[2], CQW_OP_RECV, rx, NULL, 0, NULL);
		t_op(&ops[3], CQW_OP_RECV, rx, buf, sizeof(buf), NULL);
		T_RESULT(cqw_submit(loop, &ops[0]), 0);
		T_RESULT(cqw_submit(loop, &ops[1]), 0);
		T_RESULT(cqw_submit(loop, &ops[2]), 0);
		T_RESULT(cqw_submit(loop, &ops[3]), 0);
		t_reap_exact(loop, done, 4);
		T_RESULT(ops[0].result, 0);
		T_RESULT(ops[1].result, 0);
		T_RESULT(ops[2].result, 0);
		T_RESULT(ops[3].result, 0);
		t_check_stream(loop, tx, rx, "x");
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
	cqw_loop_free(loop);
}

/*
 * The same on CQW_EXCLUSIVE connections, whose receives copy out of the
 * staging buffer. In a child: under UBSan a bad call aborts the process.
 */
static void
test_loop_zero_length_messages_exclusive(void **state)
{
	static const unsigned flags[] = { CQW_DUPLEX | CQW_EXCLUSIVE,
					  CQW_EXCLUSIVE };
#ifdef _WIN32
	/* No fork: the body runs here (T_CHILD_CHECK ends the process). */
	const int pid = 0;
#else
	pid_t pid;
#endif

	(void)state;
#ifndef _WIN32
	pid = t_fork();
#endif
	if (pid == 0) {
		struct cqw_op ops[4], *done[4];
		cqw_conn *a, *b, *tx, *rx;
		cqw_loop *loop;
		char buf[8];
		size_t i;
		int got, n;

#ifndef _WIN32
		alarm(30);
#endif
		T_CHILD_CHECK(cqw_loop_new(&loop, NULL) == 0);
		for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
			T_CHILD_CHECK(cqw_pipe(&a, &b, flags[i]) == 0);
			t_ends(a, b, flags[i], &tx, &rx);
			t_op(&ops[0], CQW_OP_SEND, tx, NULL, 0, NULL);
			t_op(&ops[1], CQW_OP_SEND, tx, buf, 0, NULL);
			t_op(&ops[2], CQW_OP_RECV, rx, NULL, 0, NULL);
			t_op(&ops[3], CQW_OP_RECV, rx, buf, sizeof(buf), NULL);
			for (n = 0; n < 4; n++) {
				T_CHILD_CHECK(cqw_submit(loop, &ops[n]) == 0);
			}
			for (got = 0; got < 4; got += n) {
				n = cqw_reap(loop, done + got, 4 - got,
					     T_PROGRESS_MS);
				T_CHILD_CHECK(n > 0);
			}
			for (n = 0; n < 4; n++) {
				T_CHILD_CHECK(ops[n].result == 0);
			}
			T_CHILD_CHECK(cqw_reap(loop, done, 4, 0) == 0);
			T_CHILD_CHECK(t_exchange(loop, tx, rx, 0, 3) == 0);
			cqw_conn_free(a);
			cqw_conn_free(b);
		}
		cqw_loop_free(loop);
#ifdef _WIN32
		return;
#else
		_exit(0);
#endif
	}
#ifndef _WIN32
	t_wait_child(pid);
#endif
}

/*
 * Without CQW_EXCLUSIVE a RECV never consumes a byte past its frame
 * (WIRE.md 2.3): what follows is still in the kernel for another reader.
 */
static void
test_loop_recv_frame_exact(void **state)
{
	static const unsigned flags[] = { CQW_DUPLEX, 0 };
	static const uint8_t next[] = { 0, 0, 0, 4, 'n', 'e', 'x', 't' };
	struct cqw_op op;
	cqw_conn *a, *b, *tx, *rx;
	cqw_loop *loop;
	uint8_t buf[64];
	size_t i;

	(void)state;
	loop = t_loop_new();
	for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		t_pipe(&a, &b, flags[i]);
		t_ends(a, b, flags[i], &tx, &rx);
		T_RESULT(cqw_send_bytes(tx, "first", 5), 0);
		T_RESULT(cqw_send_bytes(tx, "next", 4), 0);
		t_op(&op, CQW_OP_RECV, rx, buf, sizeof(buf), NULL);
		T_RESULT(cqw_submit(loop, &op), 0);
		t_reap_one(loop, &op);
		T_RESULT(op.result, 5);
		assert_memory_equal(buf, "first", 5);
		/* The second frame is whole, read here with read(2). */
		memset(buf, 0, sizeof(buf));
#ifdef _WIN32
		/* A message pipe: the next message, without a header. */
		assert_int_equal(
		    t_read_raw(cqw_conn_fileno(rx), buf, sizeof(buf)), 4);
		assert_memory_equal(buf, next + 4, 4);
#else
		assert_int_equal(
		    read((int)cqw_conn_fileno(rx), buf, sizeof(buf)),
		    sizeof(next));
		assert_memory_equal(buf, next, sizeof(next));
#endif
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
	cqw_loop_free(loop);
}

/*
 * The sync calls continue the stream where the ops left it, also when a
 * CQW_EXCLUSIVE receive read ahead: poll(), wait() and receive see the
 * frames already staged.
 */
static void
test_loop_async_then_sync_same_stream(void **state)
{
	static const unsigned flags[] = { CQW_DUPLEX, 0,
					  CQW_DUPLEX | CQW_EXCLUSIVE,
					  CQW_EXCLUSIVE };
	struct cqw_msg msg;
	struct cqw_wait_item item;
	struct cqw_op op;
	cqw_conn *a, *b, *tx, *rx;
	cqw_loop *loop;
	char buf[16];
	size_t i;

	(void)state;
	loop = t_loop_new();
	for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		t_pipe(&a, &b, flags[i]);
		t_ends(a, b, flags[i], &tx, &rx);
		T_RESULT(cqw_send_bytes(tx, "one", 3), 0);
		T_RESULT(cqw_send_bytes(tx, "two", 3), 0);
		T_RESULT(cqw_send_bytes(tx, "three", 5), 0);
		t_op(&op, CQW_OP_RECV, rx, buf, sizeof(buf), NULL);
		T_RESULT(cqw_submit(loop, &op), 0);
		t_reap_one(loop, &op);
		T_RESULT(op.result, 3);
		assert_memory_equal(buf, "one", 3);
		T_RESULT(cqw_poll(rx, 0), 1);
		memset(&item, 0, sizeof(item));
		item.conn = rx;
		T_RESULT(cqw_wait(&item, 1, 0), 1);
		T_RESULT(cqw_recv_bytes_into(rx, buf, sizeof(buf), 0, NULL), 3);
		assert_memory_equal(buf, "two", 3);
		memset(&msg, 0, sizeof(msg));
		msg.buf = buf;
		msg.cap = sizeof(buf);
		T_RESULT(cqw_recv_batch(rx, &msg, 1, 0), 1);
		T_RESULT(msg.len, 5);
		assert_memory_equal(buf, "three", 5);
		T_RESULT(cqw_poll(rx, 0), 0);
		/* And back to ops. */
		t_check_stream(loop, tx, rx, "four");
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
	cqw_loop_free(loop);
}

/* ------------------------------------------------------------------
 * Exactly once
 */

enum { T_ONCE_PAIRS = 5, T_ONCE_OPS = 40 };

struct t_once {
	struct cqw_op op;
	char buf[2048];
	int seen;
};

/*
 * Sends and receives on several connections, some cancelled while
 * queued, some while in flight, one pair closed midway and the rest at
 * the end with receives still waiting: every op comes back exactly once,
 * with a result that fits.
 */
static void
test_loop_every_op_completes_once(void **state)
{
	static const unsigned flags[T_ONCE_PAIRS] = {
		CQW_DUPLEX, CQW_DUPLEX | CQW_EXCLUSIVE, 0, CQW_EXCLUSIVE,
		CQW_DUPLEX,
	};
	/* Per pair: the sends and receives, then two more receives. */
	enum { PER = T_ONCE_OPS * 2 + 2, N = T_ONCE_PAIRS * PER };
	struct t_once *ops = calloc(N, sizeof(*ops));
	cqw_conn *a[T_ONCE_PAIRS], *b[T_ONCE_PAIRS], *tx, *rx;
	struct cqw_op *done[N];
	cqw_loop *loop = t_loop_new();
	int i, p, k, r, total = 0, quiet;

	(void)state;
	assert_non_null(ops);
	for (p = 0; p < T_ONCE_PAIRS; p++) {
		struct t_once *s = &ops[p * PER];

		t_pipe(&a[p], &b[p], flags[p]);
		t_ends(a[p], b[p], flags[p], &tx, &rx);
		for (k = 0; k < T_ONCE_OPS * 2; k += 2) {
			size_t len = t_hash((uint32_t)(p * 1000 + k)) % 2048;

			t_op(&s[k].op, CQW_OP_SEND, tx, s[k].buf, len, &s[k]);
			t_op(&s[k + 1].op, CQW_OP_RECV, rx, s[k + 1].buf,
			     sizeof(s[k + 1].buf), &s[k + 1]);
			T_RESULT(cqw_submit(loop, &s[k].op), 0);
			T_RESULT(cqw_submit(loop, &s[k + 1].op), 0);
		}
		/* On a duplex pair, one receive that nothing will feed. */
		if ((flags[p] & CQW_DUPLEX) == CQW_DUPLEX) {
			rx = tx;
		}
		for (; k < PER; k++) {
			t_op(&s[k].op, CQW_OP_RECV, rx, s[k].buf,
			     sizeof(s[k].buf), &s[k]);
			T_RESULT(cqw_submit(loop, &s[k].op), 0);
		}
	}
	/* Cancel some while still queued. */
	for (i = 0; i < N; i += 7) {
		T_RESULT(cqw_cancel(loop, &ops[i].op), 0);
	}
	T_RESULT(cqw_flush(loop), 0);
	/* Cancel others once started: refused only for a send under way. */
	for (i = 3; i < N; i += 11) {
		r = cqw_cancel(loop, &ops[i].op);
		if (r != 0 && r != CQW_EBUSY) {
			fail_msg("cqw_cancel: %s", t_name(r));
		}
	}
	for (quiet = 0; quiet < 3 && total < N;) {
		r = cqw_reap(loop, done + total, N - total, 100);
		if (r < 0) {
			fail_msg("cqw_reap: %s after %d", t_name(r), total);
		}
		quiet = r == 0 ? quiet + 1 : 0;
		total += r;
		if (total > N / 3 && a[4] != NULL) {
			cqw_conn_free(a[4]);
			cqw_conn_free(b[4]);
			a[4] = b[4] = NULL;
		}
	}
	/* The unfed receives are still out: closing must end them. */
	assert_true(total < N);
	for (p = 0; p < T_ONCE_PAIRS; p++) {
		cqw_conn_free(a[p]);
		cqw_conn_free(b[p]);
	}
	r = cqw_reap(loop, done + total, N - total, 0);
	assert_true(r >= 0);
	total += r;
	T_RESULT(total, N);
	T_RESULT(cqw_reap(loop, done, 4, 0), 0);
	for (i = 0; i < total; i++) {
		struct t_once *s = done[i]->user_data;

		assert_ptr_equal(&s->op, done[i]);
		s->seen++;
	}
	for (i = 0; i < N; i++) {
		int64_t res = ops[i].op.result;

		if (ops[i].seen != 1) {
			fail_msg("op %d completed %d times", i, ops[i].seen);
		}
		if (res < 0 && res != CQW_ECANCELED && res != CQW_EOF &&
		    res != CQW_ETRUNC && res != CQW_EPIPE &&
		    res != CQW_ECONNRESET) {
			fail_msg("op %d: unexpected %s", i, t_name(res));
		}
	}
	/* The receives on the duplex pairs' sending ends were unfed. */
	T_RESULT(ops[PER - 1].op.result, CQW_ECANCELED);
	T_RESULT(ops[2 * PER - 1].op.result, CQW_ECANCELED);
	free(ops);
	cqw_loop_free(loop);
}

/* ------------------------------------------------------------------
 * Timeouts and wake-ups
 */

static void
test_loop_reap_timeouts(void **state)
{
	struct cqw_op op, *done[4];
	cqw_conn *a, *b;
	cqw_loop *loop;
	int64_t t0, dt;
	char buf[16];

	(void)state;
	loop = t_loop_new();
	t_pipe(&a, &b, CQW_DUPLEX);

	/* Nothing submitted. */
	t0 = t_now_ms();
	T_RESULT(cqw_reap(loop, done, 4, 0), 0);
	assert_true(t_now_ms() - t0 < 50);

	/* A receive with nothing to read. */
	t_op(&op, CQW_OP_RECV, b, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &op), 0);
	t0 = t_now_ms();
	T_RESULT(cqw_reap(loop, done, 4, 0), 0);
	dt = t_now_ms() - t0;
	if (dt >= 50) {
		fail_msg("reap(0) took %lld ms", (long long)dt);
	}
	t0 = t_now_ms();
	T_RESULT(cqw_reap(loop, done, 4, 100), 0);
	dt = t_now_ms() - t0;
	if (dt < 80 || dt > 2000) {
		fail_msg("reap(100) returned after %lld ms", (long long)dt);
	}

	/* Data arrives: it completes, once. */
	T_RESULT(cqw_send_bytes(a, "hi", 2), 0);
	t_reap_one(loop, &op);
	T_RESULT(op.result, 2);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
}

struct t_waker {
	cqw_loop *loop;
	cqw_conn *rescue; /* sends here if the wake-up did not work */
	atomic_int returned;
	int wake_result;
};

static void *
t_waker_main(void *arg)
{
	struct t_waker *w = arg;
	int i;

	t_sleep_ms(100);
	w->wake_result = cqw_loop_wake(w->loop);
	for (i = 0; i < 300 && !atomic_load(&w->returned); i++) {
		t_sleep_ms(10);
	}
	if (!atomic_load(&w->returned)) {
		/* Unblock the test so that it fails instead of hanging. */
		cqw_send_bytes(w->rescue, "rescue", 6);
	}
	return NULL;
}

static void
test_loop_wake_from_other_thread(void **state)
{
	struct t_waker w = { 0 };
	struct cqw_op op, *done[4];
	cqw_conn *a, *b;
	pthread_t th;
	int64_t t0, dt;
	char buf[16];
	int r;

	(void)state;
	w.loop = t_loop_new();
	t_pipe(&a, &b, CQW_DUPLEX);
	w.rescue = a;
	t_op(&op, CQW_OP_RECV, b, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(w.loop, &op), 0);
	T_RESULT(cqw_flush(w.loop), 0);
	assert_int_equal(pthread_create(&th, NULL, t_waker_main, &w), 0);
	t0 = t_now_ms();
	r = cqw_reap(w.loop, done, 4, -1);
	dt = t_now_ms() - t0;
	atomic_store(&w.returned, 1);
	assert_int_equal(pthread_join(th, NULL), 0);
	T_RESULT(w.wake_result, 0);
	T_RESULT(r, 0);
	if (dt < 80 || dt > 100 + 2000) {
		fail_msg("reap(-1) returned after %lld ms; the wake came at "
			 "100 ms",
			 (long long)dt);
	}
	T_RESULT(cqw_cancel(w.loop, &op), 0);
	t_reap_one(w.loop, &op);
	T_RESULT(op.result, CQW_ECANCELED);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(w.loop);
}

/* ------------------------------------------------------------------
 * Cancellation
 */

static void
test_loop_cancel_queued_recv(void **state)
{
	struct cqw_op op, send, *done[4];
	cqw_conn *a, *b;
	cqw_loop *loop;
	char buf[16];

	(void)state;
	loop = t_loop_new();
	t_pipe(&a, &b, CQW_DUPLEX);

	t_op(&op, CQW_OP_RECV, b, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &op), 0);
	T_RESULT(cqw_cancel(loop, &op), 0);
	t_reap_one(loop, &op);
	T_RESULT(op.result, CQW_ECANCELED);
	/* Cancelling a reaped op is a no-op: no second completion. */
	T_RESULT(cqw_cancel(loop, &op), 0);
	T_RESULT(cqw_reap(loop, done, 4, 0), 0);

	/* A queued send, cancelled, never reaches the peer. */
	t_op(&send, CQW_OP_SEND, a, "lost", 4, NULL);
	T_RESULT(cqw_submit(loop, &send), 0);
	T_RESULT(cqw_cancel(loop, &send), 0);
	t_reap_one(loop, &send);
	T_RESULT(send.result, CQW_ECANCELED);
	T_RESULT(cqw_poll(b, 50), 0);

	t_check_stream(loop, a, b, "after cancel");
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
}

static void
t_cancel_waiting(unsigned flags)
{
	static const uint8_t part[] = { 0, 0 };
	static const uint8_t rest[] = { 0, 5, 'h', 'e', 'l', 'l', 'o' };
	struct cqw_op op, *done[4];
	cqw_conn *a, *b, *tx, *rx;
	cqw_loop *loop;
	char buf[16];
	cqw_fd fd;
	int r;

	loop = t_loop_new();
	t_stream(&a, &b, flags);
#ifdef _WIN32
	flags = CQW_DUPLEX; /* what t_stream made */
#endif
	t_ends(a, b, flags, &tx, &rx);

	/* Nothing on the wire: the op is waiting in the backend. */
	t_op(&op, CQW_OP_RECV, rx, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &op), 0);
	T_RESULT(cqw_flush(loop), 0);
	T_RESULT(cqw_reap(loop, done, 4, 20), 0);
	T_RESULT(cqw_cancel(loop, &op), 0);
	t_reap_one(loop, &op);
	T_RESULT(op.result, CQW_ECANCELED);
	t_check_stream(loop, tx, rx, "still in step");

	/*
	 * Half a header arrived: cancelling may be refused, but the op
	 * completes once and the frame is not lost.
	 */
	fd = cqw_conn_fileno(tx);
	assert_int_equal(t_write_all(fd, part, sizeof(part)), 0);
	memset(buf, 0, sizeof(buf));
	t_op(&op, CQW_OP_RECV, rx, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &op), 0);
	T_RESULT(cqw_reap(loop, done, 4, 20), 0);
	r = cqw_cancel(loop, &op);
	if (r != 0 && r != CQW_EBUSY) {
		fail_msg("cqw_cancel: %s", t_name(r));
	}
	if (r == 0) {
		t_reap_one(loop, &op);
		T_RESULT(op.result, CQW_ECANCELED);
		t_op(&op, CQW_OP_RECV, rx, buf, sizeof(buf), NULL);
		T_RESULT(cqw_submit(loop, &op), 0);
	}
	assert_int_equal(t_write_all(fd, rest, sizeof(rest)), 0);
	t_reap_one(loop, &op);
	T_RESULT(op.result, 5);
	assert_memory_equal(buf, "hello", 5);
	t_check_stream(loop, tx, rx, "and again");

	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
}

static void
test_loop_cancel_waiting_recv(void **state)
{
	(void)state;
	t_cancel_waiting(CQW_DUPLEX);
	t_cancel_waiting(CQW_DUPLEX | CQW_EXCLUSIVE);
	t_cancel_waiting(0);
	t_cancel_waiting(CQW_EXCLUSIVE);
}

/* ------------------------------------------------------------------
 * Close, busy, end of file
 */

static void
test_loop_close_with_ops_in_flight(void **state)
{
	enum { BIG = 1 << 20 };
	uint8_t *big = malloc(BIG);
	struct cqw_op ops[5], *done[8];
	char in[3][16];
	cqw_conn *a, *b;
	cqw_loop *loop;
	void *msg = NULL;
	int i;

	(void)state;
	assert_non_null(big);
	memset(big, 0x5a, BIG);
	loop = t_loop_new();
	/* A torn frame is a byte stream's (on Windows: TCP). */
	t_stream(&a, &b, CQW_DUPLEX);
	t_shrink(b);

	/*
	 * Three receives (one waiting), a send stuck half written (a reads
	 * nothing) and one queued behind it.
	 */
	for (i = 0; i < 3; i++) {
		t_op(&ops[i], CQW_OP_RECV, b, in[i], sizeof(in[i]), &ops[i]);
	}
	t_op(&ops[3], CQW_OP_SEND, b, big, BIG, &ops[3]);
	t_op(&ops[4], CQW_OP_SEND, b, "behind", 6, &ops[4]);
	for (i = 0; i < 5; i++) {
		T_RESULT(cqw_submit(loop, &ops[i]), 0);
	}
	T_RESULT(cqw_reap(loop, done, 8, 50), 0);

	T_RESULT(cqw_conn_close(b), 0);
	assert_true(cqw_conn_closed(b));
	/* All five on the next reap, without waiting. */
	T_RESULT(cqw_reap(loop, done, 8, 0), 5);
	for (i = 0; i < 5; i++) {
		T_RESULT(ops[i].result, CQW_ECANCELED);
	}
	T_RESULT(cqw_reap(loop, done, 8, 0), 0);
	T_RESULT(cqw_submit(loop, &ops[0]), CQW_ECLOSED);
	T_RESULT(cqw_reap(loop, done, 8, 0), 0);

	/* The peer sees the torn frame, then nothing more. */
	T_RESULT(cqw_recv_bytes(a, &msg, CQW_NONE), CQW_ETRUNC);
	assert_null(msg);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
	free(big);
}

static void
test_loop_sync_call_with_ops_in_flight_busy(void **state)
{
	struct cqw_op op, *done[4];
	struct cqw_msg m = { .buf = "m", .cap = 1, .len = 1 };
	cqw_conn *a, *b;
	cqw_loop *loop;
	char buf[16];
	void *p = NULL;

	(void)state;
	loop = t_loop_new();
	t_pipe(&a, &b, CQW_DUPLEX);
	t_op(&op, CQW_OP_RECV, b, buf, sizeof(buf), NULL);

	/* Queued, then started: both count as in flight. */
	T_RESULT(cqw_submit(loop, &op), 0);
	T_RESULT(cqw_recv_bytes(b, &p, CQW_NONE), CQW_EBUSY);
	T_RESULT(cqw_send_bytes(b, "x", 1), CQW_EBUSY);
	T_RESULT(cqw_flush(loop), 0);
	T_RESULT(cqw_recv_bytes(b, &p, CQW_NONE), CQW_EBUSY);
	T_RESULT(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, NULL), CQW_EBUSY);
	T_RESULT(cqw_send_bytes(b, "x", 1), CQW_EBUSY);
	T_RESULT(cqw_send_bytes_at(b, "xy", 2, 0, CQW_NONE), CQW_EBUSY);
	T_RESULT(cqw_send_batch(b, &m, 1), CQW_EBUSY);
	T_RESULT(cqw_recv_batch(b, &m, 1, 0), CQW_EBUSY);
	T_RESULT(cqw_poll(b, 0), CQW_EBUSY);
	assert_null(p);

	/* The op is not disturbed, and afterwards sync calls work. */
	T_RESULT(cqw_send_bytes(a, "z", 1), 0);
	t_reap_one(loop, &op);
	T_RESULT(op.result, 1);
	assert_int_equal(buf[0], 'z');
	T_RESULT(cqw_send_bytes(b, "back", 4), 0);
	T_RESULT(cqw_recv_bytes(a, &p, CQW_NONE), 4);
	assert_memory_equal(p, "back", 4);
	cqw_free(p);
	T_RESULT(cqw_reap(loop, done, 4, 0), 0);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
}

static void
test_loop_peer_close_eof(void **state)
{
	static const uint8_t cut[] = { 0, 0, 0, 10, 'a', 'b', 'c' };
	struct cqw_op ops[2], *done[2];
	cqw_conn *a, *b;
	cqw_loop *loop;
	char buf[2][16];
	cqw_fd fd;

	(void)state;
	loop = t_loop_new();

	/* Socket pair: both waiting receives see the end. */
	t_pipe(&a, &b, CQW_DUPLEX);
	t_op(&ops[0], CQW_OP_RECV, b, buf[0], sizeof(buf[0]), NULL);
	t_op(&ops[1], CQW_OP_RECV, b, buf[1], sizeof(buf[1]), NULL);
	T_RESULT(cqw_submit(loop, &ops[0]), 0);
	T_RESULT(cqw_submit(loop, &ops[1]), 0);
	T_RESULT(cqw_reap(loop, done, 2, 20), 0);
	cqw_conn_free(a);
	t_reap_exact(loop, done, 2);
	T_RESULT(ops[0].result, CQW_EOF);
	T_RESULT(ops[1].result, CQW_EOF);
	cqw_conn_free(b);

	/* Pipe: the writer goes away. */
	t_pipe(&a, &b, 0);
	t_op(&ops[0], CQW_OP_RECV, a, buf[0], sizeof(buf[0]), NULL);
	T_RESULT(cqw_submit(loop, &ops[0]), 0);
	T_RESULT(cqw_reap(loop, done, 2, 20), 0);
	cqw_conn_free(b);
	t_reap_one(loop, &ops[0]);
	T_RESULT(ops[0].result, CQW_EOF);
	cqw_conn_free(a);

	/* A frame cut short, then the end (on a byte stream). */
	t_stream(&a, &b, CQW_DUPLEX);
	fd = cqw_conn_fileno(a);
	assert_int_equal(t_write_all(fd, cut, sizeof(cut)), 0);
	cqw_conn_free(a);
	t_op(&ops[0], CQW_OP_RECV, b, buf[0], sizeof(buf[0]), NULL);
	t_op(&ops[1], CQW_OP_RECV, b, buf[1], sizeof(buf[1]), NULL);
	T_RESULT(cqw_submit(loop, &ops[0]), 0);
	T_RESULT(cqw_submit(loop, &ops[1]), 0);
	t_reap_exact(loop, done, 2);
	T_RESULT(ops[0].result, CQW_ETRUNC);
	T_RESULT(ops[1].result, CQW_EOF);
	cqw_conn_free(b);
	cqw_loop_free(loop);
}

/* ------------------------------------------------------------------
 * Bad ops
 */

static void
test_loop_submit_bad_ops_queue_nothing(void **state)
{
	struct cqw_op op, dup, *done[4];
	cqw_conn *a, *b, *r, *w, *closed, *x;
	cqw_loop *loop, *other;
	char buf[16];

	(void)state;
	loop = t_loop_new();
	other = t_loop_new();
	t_pipe(&a, &b, CQW_DUPLEX);
	t_pipe(&r, &w, 0);
	t_pipe(&closed, &x, CQW_DUPLEX);
	T_RESULT(cqw_conn_close(closed), 0);

	t_op(&op, 0, b, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &op), CQW_EINVAL);
	t_op(&op, 3, b, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &op), CQW_EINVAL);
	t_op(&op, -1, b, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &op), CQW_EINVAL);
	t_op(&op, CQW_OP_SEND, NULL, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &op), CQW_EINVAL);
	t_op(&op, CQW_OP_RECV, NULL, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &op), CQW_EINVAL);
	t_op(&op, CQW_OP_SEND, a, NULL, 5, NULL);
	T_RESULT(cqw_submit(loop, &op), CQW_EINVAL);
	t_op(&op, CQW_OP_RECV, b, NULL, 5, NULL);
	T_RESULT(cqw_submit(loop, &op), CQW_EINVAL);
	T_RESULT(cqw_submit(loop, NULL), CQW_EINVAL);
	t_op(&op, CQW_OP_RECV, b, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(NULL, &op), CQW_EINVAL);
	t_op(&op, CQW_OP_RECV, w, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &op), CQW_EWRITEONLY);
	t_op(&op, CQW_OP_SEND, r, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &op), CQW_EREADONLY);
	t_op(&op, CQW_OP_SEND, closed, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &op), CQW_ECLOSED);

	/* Nothing was queued: no completion, and no conn is busy. */
	T_RESULT(cqw_reap(loop, done, 4, 0), 0);
	T_RESULT(cqw_send_bytes(a, "ok", 2), 0);
	T_RESULT(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, NULL), 2);
	T_RESULT(cqw_send_bytes(w, "ok", 2), 0);
	T_RESULT(cqw_recv_bytes_into(r, buf, sizeof(buf), 0, NULL), 2);

	/* The same op twice: the second is refused, one completion. */
	t_op(&dup, CQW_OP_RECV, b, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &dup), 0);
	T_RESULT(cqw_submit(loop, &dup), CQW_EBUSY);
	/* b is now bound to loop: another loop may not take it. */
	t_op(&op, CQW_OP_SEND, b, "no", 2, NULL);
	T_RESULT(cqw_submit(other, &op), CQW_EBUSY);
	T_RESULT(cqw_reap(other, done, 4, 0), 0);
	T_RESULT(cqw_send_bytes(a, "one", 3), 0);
	t_reap_one(loop, &dup);
	T_RESULT(dup.result, 3);

	/* Other calls' bad arguments. */
	T_RESULT(cqw_loop_new(NULL, NULL), CQW_EINVAL);
	T_RESULT(cqw_reap(loop, NULL, 4, 0), CQW_EINVAL);
	T_RESULT(cqw_reap(loop, done, 0, 0), CQW_EINVAL);
	T_RESULT(cqw_reap(NULL, done, 4, 0), CQW_EINVAL);
	T_RESULT(cqw_flush(NULL), CQW_EINVAL);
	T_RESULT(cqw_cancel(NULL, &dup), CQW_EINVAL);
	T_RESULT(cqw_cancel(loop, NULL), CQW_EINVAL);
	/* An op in flight on one loop is not another loop's to cancel. */
	t_op(&dup, CQW_OP_RECV, b, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &dup), 0);
	T_RESULT(cqw_cancel(other, &dup), CQW_EINVAL);
	T_RESULT(cqw_cancel(loop, &dup), 0);
	t_reap_one(loop, &dup);
	T_RESULT(dup.result, CQW_ECANCELED);
	/* A completed op is no loop's: cancelling it is a no-op. */
	T_RESULT(cqw_cancel(other, &dup), 0);
	T_RESULT(cqw_loop_wake(NULL), CQW_EINVAL);
	T_RESULT(cqw_reap(loop, done, 4, 0), 0);

	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_conn_free(r);
	cqw_conn_free(w);
	cqw_conn_free(closed);
	cqw_conn_free(x);
	cqw_loop_free(other);
	cqw_loop_free(loop);
}

/* ------------------------------------------------------------------
 * fork()
 */

#ifndef _WIN32
static void
test_loop_fork_child_uses_loop(void **state)
{
	struct cqw_op inherited, *done[4];
	cqw_conn *a0, *a1, *b0, *b1;
	cqw_loop *loop;
	char buf[64], go;
	int n, got, sync[2];
	pid_t pid;

	(void)state;
	loop = t_loop_new();
	t_pipe(&a0, &a1, CQW_DUPLEX);
	t_pipe(&b0, &b1, CQW_EXCLUSIVE);
	/* The parent uses the loop on both pairs before the fork... */
	T_RESULT(t_exchange(loop, a0, a1, 0, 20), 0);
	T_RESULT(t_exchange(loop, b1, b0, 100, 20), 0);
	/* ...and leaves a receive waiting across it. */
	t_op(&inherited, CQW_OP_RECV, b0, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &inherited), 0);
	T_RESULT(cqw_reap(loop, done, 4, 10), 0);
	/*
	 * The child sends only once the parent's receive is cancelled: on
	 * rings without DEFER_TASKRUN the kernel may complete that read as
	 * task work at any system call, and so hand it the child's message.
	 */
	assert_int_equal(pipe(sync), 0);

	pid = t_fork();
	if (pid == 0) {
		struct cqw_op s;

		cqw_conn *c0, *c1;

		alarm(30);
		/*
		 * The receive in flight at the fork is the parent's: the
		 * child's copy ends with CQW_EFORK, and that end can no
		 * longer be read here (its position is unknown).
		 */
		n = cqw_reap(loop, done, 4, T_PROGRESS_MS);
		T_CHILD_CHECK(n == 1 && done[0] == &inherited);
		T_CHILD_CHECK(inherited.result == CQW_EFORK);
		T_CHILD_CHECK(cqw_recv_bytes_into(b0, buf, sizeof(buf), 0,
						  NULL) == CQW_EFORK);
		/* Sending on the other end still works, through the loop. */
		T_CHILD_CHECK(read(sync[0], &go, 1) == 1);
		t_op(&s, CQW_OP_SEND, b1, "from child", 10, NULL);
		T_CHILD_CHECK(cqw_submit(loop, &s) == 0);
		for (got = 0; got < 1; got += n) {
			n = cqw_reap(loop, done + got, 4 - got, T_PROGRESS_MS);
			T_CHILD_CHECK(n > 0);
		}
		T_CHILD_CHECK(s.result == 0);
		/* The child's own loop serves new connections. */
		T_CHILD_CHECK(cqw_pipe(&c0, &c1, CQW_DUPLEX) == 0);
		T_CHILD_CHECK(t_exchange(loop, c0, c1, 1000, 2000) == 0);
		T_CHILD_CHECK(cqw_reap(loop, done, 4, 0) == 0);
		T_CHILD_CHECK(cqw_loop_wake(loop) == 0);
		_exit(0);
	}
	/*
	 * The parent's copy of the receive must not read what the child
	 * gets: cancel it before anything drives the loop.
	 */
	T_RESULT(cqw_cancel(loop, &inherited), 0);
	t_reap_one(loop, &inherited);
	T_RESULT(inherited.result, CQW_ECANCELED);
	go = 1;
	assert_int_equal(write(sync[1], &go, 1), 1);
	close(sync[0]);
	close(sync[1]);
	/* The parent goes on with its loop while the child runs. */
	T_RESULT(t_exchange(loop, a0, a1, 5000, 2000), 0);
	t_wait_child(pid);
	T_RESULT(t_exchange(loop, a1, a0, 9000, 20), 0);
	/* What the child sent arrives whole: the parent's stream is intact. */
	T_RESULT(cqw_recv_bytes_into(b0, buf, sizeof(buf), 0, NULL), 10);
	assert_memory_equal(buf, "from child", 10);
	cqw_conn_free(a0);
	cqw_conn_free(a1);
	cqw_conn_free(b0);
	cqw_conn_free(b1);
	cqw_loop_free(loop);
}
#endif /* !_WIN32 */

#ifndef _WIN32
/*
 * The worker-pool pattern: a child closes the ends it does not use, here
 * one with a receive in flight on the parent's loop. It must neither hang
 * nor touch the parent's op.
 */
static void
test_loop_fork_child_closes_inherited(void **state)
{
	struct cqw_op op;
	cqw_conn *a, *b;
	cqw_loop *loop;
	char buf[16];
	pid_t pid;

	(void)state;
	loop = t_loop_new();
	t_pipe(&a, &b, CQW_DUPLEX);
	t_op(&op, CQW_OP_RECV, b, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &op), 0);
	T_RESULT(cqw_flush(loop), 0);
	pid = t_fork();
	if (pid == 0) {
		alarm(10);
		T_CHILD_CHECK(cqw_conn_close(b) == 0);
		T_CHILD_CHECK(cqw_conn_close(a) == 0);
		_exit(0);
	}
	t_wait_child(pid);
	/* The parent's receive is still there and still works. */
	T_RESULT(cqw_send_bytes(a, "alive", 5), 0);
	t_reap_one(loop, &op);
	T_RESULT(op.result, 5);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
}
#endif /* !_WIN32 */

#ifndef _WIN32
/*
 * A send part-written when the process forks goes on in the parent only:
 * the peer gets the message once, whole, and nothing after it.
 */
static void
test_loop_fork_send_in_flight_goes_once(void **state)
{
	const size_t size = 1 << 20;
	struct cqw_op send, recv, *done[2];
	uint8_t *out = malloc(size), *in = malloc(size);
	cqw_conn *a, *b;
	cqw_loop *loop;
	pid_t pid;
	size_t i;

	(void)state;
	assert_non_null(out);
	assert_non_null(in);
	for (i = 0; i < size; i++) {
		out[i] = (uint8_t)(i * 7 + 3);
	}
	loop = t_loop_new();
	t_pipe(&a, &b, CQW_DUPLEX);
	t_op(&send, CQW_OP_SEND, a, out, size, NULL);
	T_RESULT(cqw_submit(loop, &send), 0);
	T_RESULT(cqw_flush(loop), 0);
	T_RESULT(cqw_reap(loop, done, 2, 0), 0); /* too big to be done */
	pid = t_fork();
	if (pid == 0) {
		alarm(10);
		T_CHILD_CHECK(cqw_reap(loop, done, 2, T_PROGRESS_MS) == 1);
		T_CHILD_CHECK(done[0] == &send && send.result == CQW_EFORK);
		_exit(0);
	}
	t_wait_child(pid);
	t_op(&recv, CQW_OP_RECV, b, in, size, NULL);
	T_RESULT(cqw_submit(loop, &recv), 0);
	t_reap_exact(loop, done, 2);
	T_RESULT(send.result, 0);
	T_RESULT(recv.result, (int64_t)size);
	assert_memory_equal(in, out, size);
	T_RESULT(cqw_poll(b, 100), 0);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
	free(out);
	free(in);
}
#endif /* !_WIN32 */

/* Closing while a send is part-written to a peer that never reads. */
static void
test_loop_close_with_partial_send(void **state)
{
	const size_t size = 4 << 20;
	uint8_t *out = calloc(1, size);
	struct cqw_op send;
	cqw_conn *a, *b;
	cqw_loop *loop;

	(void)state;
	assert_non_null(out);
	loop = t_loop_new();
	t_pipe(&a, &b, CQW_DUPLEX);
	t_op(&send, CQW_OP_SEND, a, out, size, NULL);
	T_RESULT(cqw_submit(loop, &send), 0);
	T_RESULT(cqw_flush(loop), 0);
#ifdef _WIN32
	{
		int64_t t0 = t_timed_start(10000, "cqw_conn_close");

		T_RESULT(cqw_conn_close(a), 0);
		t_timed_check(t0, 0, 10000);
	}
#else
	alarm(10); /* a hang here is the bug */
	T_RESULT(cqw_conn_close(a), 0);
	alarm(0);
#endif
	t_reap_one(loop, &send);
	T_RESULT(send.result, CQW_ECANCELED);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
	free(out);
}

/* An op completed but not yet reaped is still the loop's. */
static void
test_loop_resubmit_unreaped_busy(void **state)
{
	struct cqw_op op, *done[4];
	cqw_conn *a, *b;
	cqw_loop *loop;

	(void)state;
	loop = t_loop_new();
	t_pipe(&a, &b, CQW_DUPLEX);
	t_op(&op, CQW_OP_SEND, a, "x", 1, NULL);
	T_RESULT(cqw_submit(loop, &op), 0);
	T_RESULT(cqw_flush(loop), 0); /* completes, waits to be reaped */
	T_RESULT(cqw_submit(loop, &op), CQW_EBUSY);
	t_reap_one(loop, &op);
	T_RESULT(op.result, 0);
	T_RESULT(cqw_reap(loop, done, 4, 0), 0);
	T_RESULT(cqw_submit(loop, &op), 0); /* reaped: its own again */
	t_reap_one(loop, &op);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
}

#ifndef _WIN32
/* A child's wake-up must not reach the parent's loop. */
static void
test_loop_fork_child_wake_stays_in_child(void **state)
{
	struct cqw_op op, *done[4];
	cqw_conn *a, *b;
	cqw_loop *loop;
	int64_t t0, dt;
	char buf[16];
	pid_t pid;

	(void)state;
	loop = t_loop_new();
	t_pipe(&a, &b, CQW_DUPLEX);
	t_op(&op, CQW_OP_RECV, b, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &op), 0);
	T_RESULT(cqw_reap(loop, done, 4, 0), 0);

	pid = t_fork();
	if (pid == 0) {
		/* The child's first use of the loop is a wake-up. */
		T_CHILD_CHECK(cqw_loop_wake(loop) == 0);
		_exit(0);
	}
	t_wait_child(pid);
	t0 = t_now_ms();
	T_RESULT(cqw_reap(loop, done, 4, 200), 0);
	dt = t_now_ms() - t0;
	if (dt < 150 || dt > 200 + 2000) {
		fail_msg("the parent's reap(200) returned after %lld ms "
			 "(< 150: woken by the child)",
			 (long long)dt);
	}
	T_RESULT(cqw_cancel(loop, &op), 0);
	t_reap_one(loop, &op);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
}
#endif /* !_WIN32 */

/* ------------------------------------------------------------------
 * Lifetimes
 */

#ifndef _WIN32
/*
 * Freeing a loop (every op reaped) and then its connections must be
 * safe. Run in a child: a use after free may crash. The freed memory is
 * reused with junk, as a busy program would, so that a dangling pointer
 * shows without a sanitizer too.
 */
static void
test_loop_free_before_conns(void **state)
{
	pid_t pid;

	(void)state;
	pid = t_fork();
	if (pid == 0) {
		cqw_conn *a, *b;
		cqw_loop *loop;
		void *junk[512];
		size_t i;

		alarm(30);
		T_CHILD_CHECK(cqw_loop_new(&loop, NULL) == 0);
		T_CHILD_CHECK(cqw_pipe(&a, &b, CQW_DUPLEX) == 0);
		T_CHILD_CHECK(t_exchange(loop, a, b, 0, 5) == 0);
		cqw_loop_free(loop);
		for (i = 0; i < 512; i++) {
			junk[i] = malloc(16 + 8 * (i % 32));
			T_CHILD_CHECK(junk[i] != NULL);
			memset(junk[i], 0xa5, 16 + 8 * (i % 32));
		}
		T_CHILD_CHECK(cqw_send_bytes(a, "x", 1) == 0);
		T_CHILD_CHECK(cqw_conn_close(a) == 0);
		cqw_conn_free(a);
		cqw_conn_free(b);
		for (i = 0; i < 512; i++) {
			free(junk[i]);
		}
		_exit(0);
	}
	t_wait_child(pid);
}
#endif /* !_WIN32 */

/* ------------------------------------------------------------------
 * Backend selection
 */

#ifdef _WIN32
/* The C runtime's environment, which getenv() reads. */
static int
setenv(const char *name, const char *value, int overwrite)
{
	(void)overwrite;
	return _putenv_s(name, value) == 0 ? 0 : -1;
}

static int
unsetenv(const char *name)
{
	return _putenv_s(name, "") == 0 ? 0 : -1;
}
#endif

/* Set CQW_BACKEND (NULL unsets it) and return the old value, copied. */
static char *
t_setenv_backend(const char *value)
{
	const char *old = getenv("CQW_BACKEND");
	char *copy = old != NULL ? strdup(old) : NULL;

	if (value != NULL) {
		assert_int_equal(setenv("CQW_BACKEND", value, 1), 0);
	} else {
		assert_int_equal(unsetenv("CQW_BACKEND"), 0);
	}
	return copy;
}

static void
t_restore_backend(char *old)
{
	if (old != NULL) {
		assert_int_equal(setenv("CQW_BACKEND", old, 1), 0);
	} else {
		assert_int_equal(unsetenv("CQW_BACKEND"), 0);
	}
	free(old);
}

static void
test_loop_backend_env_bogus_einval(void **state)
{
	struct cqw_loop_opts opts = { .backend = CQW_BACKEND_AUTO };
	cqw_loop *loop = NULL;
	char *old;
	int r1, r2;

	(void)state;
	old = t_setenv_backend("bogus");
	r1 = cqw_loop_new(&loop, NULL);
	r2 = cqw_loop_new(&loop, &opts);
	t_restore_backend(old);
	T_RESULT(r1, CQW_EINVAL);
	T_RESULT(r2, CQW_EINVAL);
	assert_null(loop);

	/* A backend forced in the options does not read the environment. */
	old = t_setenv_backend("bogus");
	opts.backend = CQW_BACKEND_POLL;
	r1 = cqw_loop_new(&loop, &opts);
	t_restore_backend(old);
	if (r1 == CQW_ENOSYS) {
		return; /* no poll backend in this build */
	}
	T_RESULT(r1, 0);
	assert_string_equal(cqw_loop_backend(loop), "poll");
	cqw_loop_free(loop);
}

static void
test_loop_backend_not_built_enosys(void **state)
{
#ifdef _WIN32
	/* Windows builds iocp only: a POSIX backend is the one not built. */
	struct cqw_loop_opts opts = { .backend = CQW_BACKEND_URING };
	const char *name = "uring";
#else
	struct cqw_loop_opts opts = { .backend = CQW_BACKEND_IOCP };
	const char *name = "iocp";
#endif
	cqw_loop *loop = NULL;
	char *old;
	int r;

	(void)state;
	T_RESULT(cqw_loop_new(&loop, &opts), CQW_ENOSYS);
	assert_null(loop);
	old = t_setenv_backend(name);
	r = cqw_loop_new(&loop, NULL);
	t_restore_backend(old);
	T_RESULT(r, CQW_ENOSYS);
	assert_null(loop);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_loop_backend_matches_env),
		cmocka_unit_test(test_loop_stream_socketpair_in_order),
		cmocka_unit_test(test_loop_stream_pipe_in_order),
		cmocka_unit_test(test_loop_stream_exclusive_in_order),
		cmocka_unit_test(test_loop_stream_exclusive_pipe_in_order),
		cmocka_unit_test(test_loop_stream_tiny_buffers_in_order),
		cmocka_unit_test(test_loop_partial_4mib_socketpair),
		cmocka_unit_test(test_loop_partial_4mib_pipe),
		cmocka_unit_test(test_loop_recv_too_short_keeps_message),
		cmocka_unit_test(test_loop_zero_length_messages),
		cmocka_unit_test(test_loop_zero_length_messages_exclusive),
		cmocka_unit_test(test_loop_recv_frame_exact),
		cmocka_unit_test(test_loop_async_then_sync_same_stream),
		cmocka_unit_test(test_loop_every_op_completes_once),
		cmocka_unit_test(test_loop_reap_timeouts),
		cmocka_unit_test(test_loop_wake_from_other_thread),
		cmocka_unit_test(test_loop_cancel_queued_recv),
		cmocka_unit_test(test_loop_cancel_waiting_recv),
		cmocka_unit_test(test_loop_close_with_ops_in_flight),
		cmocka_unit_test(test_loop_sync_call_with_ops_in_flight_busy),
		cmocka_unit_test(test_loop_peer_close_eof),
		cmocka_unit_test(test_loop_submit_bad_ops_queue_nothing),
#ifndef _WIN32
		/* fork(): the child is the subject, or holds a crash. */
		cmocka_unit_test(test_loop_fork_child_uses_loop),
#endif
#ifndef _WIN32
		cmocka_unit_test(test_loop_fork_child_wake_stays_in_child),
#endif
#ifndef _WIN32
		cmocka_unit_test(test_loop_fork_child_closes_inherited),
#endif
#ifndef _WIN32
		cmocka_unit_test(test_loop_fork_send_in_flight_goes_once),
#endif
		cmocka_unit_test(test_loop_close_with_partial_send),
		cmocka_unit_test(test_loop_resubmit_unreaped_busy),
#ifndef _WIN32
		cmocka_unit_test(test_loop_free_before_conns),
#endif
		cmocka_unit_test(test_loop_backend_env_bogus_einval),
		cmocka_unit_test(test_loop_backend_not_built_enosys),
	};

	t_backend_or_skip();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
