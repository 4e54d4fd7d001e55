/*
 * CQW_EXCLUSIVE receives on the loop (issue 11, item 1). On io_uring they
 * use one multishot receive per connection on the loop's provided
 * buffers (src/common/stream.c, src/uring/loop.c); the test checks that
 * it does (the loop's features say recv_multishot), unless the run sets
 * CQW_URING_NO_MULTISHOT=1, the fallback a kernel without it takes. On
 * poll the same bodies check the plain exclusive receive.
 *
 * What is checked: frames of every size arrive whole and in order
 * (spanning buffers, and large payloads read straight into the op's
 * buffer), a too-small receive keeps its frame, bytes that came while no
 * op asked are kept (for the next op, for the synchronous API, across
 * cqw_loop_free()), end of file after queued frames, cancel, close with
 * the receive armed, fork, and more connections than the loop has
 * buffers.
 */
#include "t-conn.h"

#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define BIG (300u * 1024)

static cqw_loop *
new_loop(void)
{
	cqw_loop *loop;

	T_OK(cqw_loop_new(&loop, NULL));
	return loop;
}

/* Should this run's loop receive with a multishot? */
static int
want_multishot(cqw_loop *loop)
{
	const char *no = getenv("CQW_URING_NO_MULTISHOT");

	return strcmp(cqw_loop_backend(loop), "uring") == 0 &&
	       !(no != NULL && strcmp(no, "1") == 0);
}

/* The loop must say it used a multishot receive when it should have. */
static void
check_multishot(cqw_loop *loop)
{
	int want = want_multishot(loop);
	int has = strstr(cqw_loop_features(loop), "recv_multishot") != NULL;

	if (want != has) {
		fail_msg("backend %s, features \"%s\": multishot %s",
			 cqw_loop_backend(loop), cqw_loop_features(loop),
			 want ? "expected" : "not expected");
	}
}

/* Message i's length and bytes, so the receiver can check each. */
static size_t
msg_len(unsigned i)
{
	static const size_t sizes[] = { 0,    1,    3,	   64,	 1000,
					4095, 4096, 4097,  9000, 70000,
					BIG,  17,   65536, 2,	 8191 };

	return sizes[(i * 7u) % (sizeof(sizes) / sizeof(sizes[0]))];
}

/* Small frames only (a bulk stream fills every buffer it gets). */
static size_t
small_len(unsigned i)
{
	return (i * 37u) % 300u;
}

static void
fill(uint8_t *p, size_t len, unsigned i)
{
	size_t k;

	for (k = 0; k < len; k++) {
		p[k] = (uint8_t)(i * 131u + k * 7u);
	}
}

static void
check(const uint8_t *p, size_t len, unsigned i)
{
	size_t k;

	for (k = 0; k < len; k++) {
		if (p[k] != (uint8_t)(i * 131u + k * 7u)) {
			fail_msg("message %u byte %zu of %zu wrong", i, k, len);
		}
	}
}

/* A forked writer of n messages on c (sync), then exit (closes c). */
static pid_t
writer(cqw_conn *c, cqw_conn *other, unsigned n, size_t (*len)(unsigned))
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		uint8_t *buf = malloc(BIG);
		unsigned i;

		cqw_conn_free(other);
		for (i = 0; i < n; i++) {
			fill(buf, len(i), i);
			if (cqw_send_bytes(c, buf, len(i)) != 0) {
				_exit(1);
			}
		}
		_exit(0);
	}
	return pid;
}

static void
reap_child(pid_t pid)
{
	int st;

	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static struct cqw_op *
reap_one(cqw_loop *loop)
{
	struct cqw_op *done[1];

	assert_int_equal(cqw_reap(loop, done, 1, T_IO_DEADLINE_MS), 1);
	return done[0];
}

/*
 * n messages of len(i) bytes in order through a window of receives, then
 * end of file.
 */
static void
window_in_order(unsigned n, size_t (*len)(unsigned))
{
	enum { WIN = 6 };
	struct cqw_op ops[WIN], *op;
	uint8_t *bufs[WIN];
	cqw_conn *a, *b;
	cqw_loop *loop = new_loop();
	unsigned next = 0, i;
	pid_t pid;

	T_OK(cqw_pipe(&a, &b, CQW_DUPLEX | CQW_EXCLUSIVE));
	pid = writer(a, b, n, len);
	cqw_conn_free(a);
	for (i = 0; i < WIN; i++) {
		bufs[i] = malloc(BIG);
		t_io_op(&ops[i], CQW_OP_RECV, b, bufs[i], BIG);
		ops[i].user_data = bufs[i];
		T_OK(cqw_submit(loop, &ops[i]));
	}
	for (; next < n; next++) {
		op = reap_one(loop);
		T_EXPECT(op->result, (int64_t)len(next));
		check(op->buf, (size_t)op->result, next);
		T_OK(cqw_submit(loop, op));
	}
	check_multishot(loop);
	/* The writer is gone: every queued receive says end of file. */
	for (i = 0; i < WIN; i++) {
		op = reap_one(loop);
		T_EXPECT(op->result, CQW_EOF);
	}
	reap_child(pid);
	cqw_conn_free(b);
	cqw_loop_free(loop);
	for (i = 0; i < WIN; i++) {
		free(bufs[i]);
	}
}

/* Every size, large ones among them (the receive stops and restarts). */
static void
test_sizes_in_order(void **state)
{
	(void)state;
	window_in_order(300, msg_len);
}

/*
 * Many small frames at once: buffers fill, plain reads take over, and
 * the armed receive comes back when they drain the socket.
 */
static void
test_bulk_in_order(void **state)
{
	(void)state;
	window_in_order(60000, small_len);
}

/* A receive too small for the frame keeps it for the next. */
static void
test_too_short_keeps_frame(void **state)
{
	struct cqw_op op, *d;
	cqw_conn *a, *b;
	cqw_loop *loop = new_loop();
	uint8_t small[1024], *big = malloc(16384);

	(void)state;
	T_OK(cqw_pipe(&a, &b, CQW_DUPLEX | CQW_EXCLUSIVE));
	fill(big, 100, 0);
	T_OK(cqw_send_bytes(a, big, 100));
	fill(big, 10240, 1);
	T_OK(cqw_send_bytes(a, big, 10240));
	fill(big, 50, 2);
	T_OK(cqw_send_bytes(a, big, 50));
	t_io_op(&op, CQW_OP_RECV, b, small, sizeof(small));
	T_OK(cqw_submit(loop, &op));
	d = reap_one(loop);
	T_EXPECT(d->result, 100);
	check(small, 100, 0);
	T_OK(cqw_submit(loop, &op));
	d = reap_one(loop);
	T_EXPECT(d->result, CQW_ETOOSHORT);
	T_EXPECT((int64_t)d->needed, 10240);
	t_io_op(&op, CQW_OP_RECV, b, big, 16384);
	T_OK(cqw_submit(loop, &op));
	d = reap_one(loop);
	T_EXPECT(d->result, 10240);
	check(big, 10240, 1);
	T_OK(cqw_submit(loop, &op));
	d = reap_one(loop);
	T_EXPECT(d->result, 50);
	check(big, 50, 2);
	check_multishot(loop);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
	free(big);
}

/*
 * Frames that came while no op asked (the receive stays armed between
 * ops) go to the next op, to the synchronous API, and survive the loop.
 */
static void
test_bytes_kept_between_ops(void **state)
{
	struct cqw_op op, *d, *none[1];
	cqw_conn *a, *b;
	cqw_loop *loop = new_loop();
	uint8_t buf[256];
	int i;

	(void)state;
	T_OK(cqw_pipe(&a, &b, CQW_DUPLEX | CQW_EXCLUSIVE));
	T_OK(cqw_send_bytes(a, "one", 3));
	t_io_op(&op, CQW_OP_RECV, b, buf, sizeof(buf));
	T_OK(cqw_submit(loop, &op));
	d = reap_one(loop);
	T_EXPECT(d->result, 3);
	/* Nothing queued; these arrive on the armed receive (if any). */
	for (i = 0; i < 5; i++) {
		T_OK(cqw_send_bytes(a, "abcdefgh", (size_t)(i + 1)));
	}
	usleep(20000);
	assert_int_equal(cqw_reap(loop, none, 1, 20), 0);
	/* The next op takes the first of them. */
	T_OK(cqw_submit(loop, &op));
	d = reap_one(loop);
	T_EXPECT(d->result, 1);
	/* The synchronous API takes the next (the receive ends first). */
	T_EXPECT(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, NULL), 2);
	assert_memory_equal(buf, "ab", 2);
	T_EXPECT(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, NULL), 3);
	/* It ended: a frame sent now waits for the synchronous reader. */
	T_OK(cqw_send_bytes(a, "later", 5));
	usleep(20000);
	assert_int_equal(cqw_reap(loop, none, 1, 20), 0);
	T_EXPECT(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, NULL), 4);
	T_EXPECT(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, NULL), 5);
	assert_memory_equal(buf, "abcde", 5);
	T_EXPECT(cqw_poll(b, 5000), 1);
	T_EXPECT(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, NULL), 5);
	assert_memory_equal(buf, "later", 5);
	/* On the loop again, then the loop goes with bytes still kept. */
	T_OK(cqw_send_bytes(a, "again", 5));
	T_OK(cqw_submit(loop, &op));
	d = reap_one(loop);
	T_EXPECT(d->result, 5);
	T_OK(cqw_send_bytes(a, "kept", 4));
	usleep(20000);
	assert_int_equal(cqw_reap(loop, none, 1, 20), 0);
	check_multishot(loop);
	cqw_loop_free(loop);
	T_EXPECT(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, NULL), 4);
	assert_memory_equal(buf, "kept", 4);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

/* Cancel of a queued receive, and close with the receive armed. */
static void
test_cancel_and_close(void **state)
{
	struct cqw_op op, op2, *d;
	cqw_conn *a, *b;
	cqw_loop *loop = new_loop();
	uint8_t buf[64];

	(void)state;
	T_OK(cqw_pipe(&a, &b, CQW_DUPLEX | CQW_EXCLUSIVE));
	T_OK(cqw_send_bytes(a, "x", 1));
	t_io_op(&op, CQW_OP_RECV, b, buf, sizeof(buf));
	T_OK(cqw_submit(loop, &op));
	T_EXPECT(reap_one(loop)->result, 1);
	T_OK(cqw_submit(loop, &op));
	T_OK(cqw_flush(loop));
	T_OK(cqw_cancel(loop, &op));
	d = reap_one(loop);
	assert_ptr_equal(d, &op);
	T_EXPECT(d->result, CQW_ECANCELED);
	/* Nothing was lost by it. */
	T_OK(cqw_send_bytes(a, "yz", 2));
	t_io_op(&op2, CQW_OP_RECV, b, buf, sizeof(buf));
	T_OK(cqw_submit(loop, &op2));
	T_EXPECT(reap_one(loop)->result, 2);
	assert_memory_equal(buf, "yz", 2);
	/* Armed with no op, and bytes waiting: close. */
	T_OK(cqw_send_bytes(a, "w", 1));
	usleep(10000);
	cqw_conn_free(b);
	cqw_conn_free(a);
	cqw_loop_free(loop);
}

/*
 * fork() with the receive armed: the child's ends with CQW_EFORK (the
 * bytes it may have taken are the parent's), the parent goes on. Without
 * a multishot nothing is in flight at the fork, and the child is left
 * alone (it could read the parent's next frame, as any process could).
 */
static void
test_fork_armed(void **state)
{
	struct cqw_op op, *d;
	cqw_conn *a, *b;
	cqw_loop *loop = new_loop();
	uint8_t buf[64];
	pid_t pid;
	int st;

	(void)state;
	T_OK(cqw_pipe(&a, &b, CQW_DUPLEX | CQW_EXCLUSIVE));
	T_OK(cqw_send_bytes(a, "1", 1));
	t_io_op(&op, CQW_OP_RECV, b, buf, sizeof(buf));
	T_OK(cqw_submit(loop, &op));
	T_EXPECT(reap_one(loop)->result, 1);
	T_OK(cqw_send_bytes(a, "22", 2));
	usleep(10000);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct cqw_op *cd[1];
		int r;

		if (!want_multishot(loop)) {
			_exit(0);
		}
		/* The position is the parent's: the child gets EFORK. */
		T_OK(cqw_submit(loop, &op));
		r = cqw_reap(loop, cd, 1, 5000);
		_exit(r == 1 && cd[0]->result == CQW_EFORK ? 0 : 10 + r);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	T_OK(cqw_submit(loop, &op));
	d = reap_one(loop);
	T_EXPECT(d->result, 2);
	assert_memory_equal(buf, "22", 2);
	T_OK(cqw_send_bytes(a, "333", 3));
	T_OK(cqw_submit(loop, &op));
	T_EXPECT(reap_one(loop)->result, 3);
	check_multishot(loop);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
}

/* What the kernel still queues on c's socket. */
static int
queued_in_kernel(cqw_conn *c)
{
	int queued = -1;

	assert_int_equal(ioctl(cqw_conn_fileno(c), FIONREAD, &queued), 0);
	return queued;
}

/*
 * Until the armed receive (if any) has taken every byte the socket had:
 * they then wait in the loop's buffers, where poll() cannot see them. A
 * reap with no op in flight does not enter the kernel, so a one-byte
 * send on tx (another connection) is what makes the loop go each time.
 */
static void
drain_into_loop(cqw_loop *loop, cqw_conn *c, cqw_conn *tx)
{
	struct cqw_op sop;
	int queued = 1, i;

	if (!want_multishot(loop)) {
		return;
	}
	for (i = 0; i < 2000 && queued > 0; i++) {
		t_io_op(&sop, CQW_OP_SEND, tx, "t", 1);
		T_OK(cqw_submit(loop, &sop));
		assert_ptr_equal(reap_one(loop), &sop);
		queued = queued_in_kernel(c);
		if (queued > 0) {
			usleep(1000);
		}
	}
	assert_int_equal(queued, 0);
}

/* Send message i (len bytes) from tx and receive it on rx, on loop. */
static void
loop_one(cqw_loop *loop, cqw_conn *tx, cqw_conn *rx, uint8_t *bufs[2],
	 size_t len, unsigned i)
{
	struct cqw_op sop, rop, *d[2];
	int n = 0, r;

	fill(bufs[0], len, i);
	t_io_op(&sop, CQW_OP_SEND, tx, bufs[0], len);
	t_io_op(&rop, CQW_OP_RECV, rx, bufs[1], BIG);
	T_OK(cqw_submit(loop, &sop));
	T_OK(cqw_submit(loop, &rop));
	while (n < 2) {
		r = cqw_reap(loop, d + n, 2 - n, T_IO_DEADLINE_MS);
		assert_true(r > 0);
		n += r;
	}
	T_EXPECT(sop.result, 0);
	T_EXPECT(rop.result, (int64_t)len);
	check(bufs[1], len, i);
}

/* Make the loop enter the kernel n times (one-byte sends on tx). */
static void
loop_goes(cqw_loop *loop, cqw_conn *tx, int n)
{
	struct cqw_op sop;

	while (n-- > 0) {
		t_io_op(&sop, CQW_OP_SEND, tx, "t", 1);
		T_OK(cqw_submit(loop, &sop));
		assert_ptr_equal(reap_one(loop), &sop);
		usleep(500);
	}
}

/* One receive of up to BIG bytes into buf on loop: its result. */
static int64_t
recv_one(cqw_loop *loop, cqw_conn *rx, uint8_t *buf)
{
	struct cqw_op rop;

	t_io_op(&rop, CQW_OP_RECV, rx, buf, BIG);
	T_OK(cqw_submit(loop, &rop));
	assert_ptr_equal(reap_one(loop), &rop);
	return rop.result;
}

/*
 * After large payloads nothing reads ahead (armed, the receive would put
 * the next large payload in the loop's buffers: a second copy; a 300 KiB
 * frame ends it both as large and as a run of full buffers); after small
 * frames the armed receive is back.
 */
static void
test_large_then_small(void **state)
{
	uint8_t *bufs[2] = { malloc(BIG), malloc(BIG) };
	cqw_conn *a, *b, *c, *e;
	cqw_loop *loop = new_loop();
	unsigned i;

	(void)state;
	assert_non_null(bufs[0]);
	assert_non_null(bufs[1]);
	T_OK(cqw_pipe(&a, &b, CQW_DUPLEX | CQW_EXCLUSIVE));
	/* A pipe: thousands of the one-byte sends fit unread. */
	T_OK(cqw_pipe(&e, &c, 0));
	for (i = 0; i < 3; i++) {
		loop_one(loop, a, b, bufs, BIG - i, i);
	}
	T_OK(cqw_send_bytes(a, "idle", 4));
	loop_goes(loop, c, 20);
	T_EXPECT(queued_in_kernel(b), 8);
	T_EXPECT(recv_one(loop, b, bufs[1]), 4);
	assert_memory_equal(bufs[1], "idle", 4);
	/* Small frames again: the receive stays armed after them. */
	for (i = 3; i < 5; i++) {
		loop_one(loop, a, b, bufs, i, i);
	}
	T_OK(cqw_send_bytes(a, "kept", 4));
	if (want_multishot(loop)) {
		drain_into_loop(loop, b, c);
	} else {
		loop_goes(loop, c, 20);
		T_EXPECT(queued_in_kernel(b), 8);
	}
	T_EXPECT(recv_one(loop, b, bufs[1]), 4);
	assert_memory_equal(bufs[1], "kept", 4);
	check_multishot(loop);
	cqw_loop_free(loop);
	for (i = 0; i < 2; i++) {
		free(bufs[i]);
	}
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_conn_free(c);
	cqw_conn_free(e);
}

/*
 * cqw_wait() on a connection whose armed receive took a frame while no
 * op asked: it is ready (the bytes are the connection's, not the
 * socket's), and the synchronous read that follows gets it.
 */
static void
test_wait_sees_held_bytes(void **state)
{
	struct cqw_op op;
	struct cqw_wait_item it;
	cqw_conn *a, *b, *c, *e;
	cqw_loop *loop = new_loop();
	uint8_t buf[64];

	(void)state;
	T_OK(cqw_pipe(&a, &b, CQW_DUPLEX | CQW_EXCLUSIVE));
	T_OK(cqw_pipe(&c, &e, CQW_DUPLEX));
	T_OK(cqw_send_bytes(a, "one", 3));
	t_io_op(&op, CQW_OP_RECV, b, buf, sizeof(buf));
	T_OK(cqw_submit(loop, &op));
	T_EXPECT(reap_one(loop)->result, 3);
	T_OK(cqw_send_bytes(a, "two", 3));
	drain_into_loop(loop, b, c);
	memset(&it, 0, sizeof(it));
	it.conn = b;
	T_EXPECT(cqw_wait(&it, 1, 0), 1);
	assert_int_equal(it.ready, 1);
	T_EXPECT(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, NULL), 3);
	assert_memory_equal(buf, "two", 3);
	check_multishot(loop);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_conn_free(c);
	cqw_conn_free(e);
	cqw_loop_free(loop);
}

/*
 * fork() while a completion of the armed receive was taken from the ring
 * but not yet handed to the framer (a flush takes completions too): the
 * child ends that receive once, and every op it has still comes back
 * once (with CQW_EFORK).
 */
static void
test_fork_completion_taken(void **state)
{
	struct cqw_op op, sop, *d;
	cqw_conn *a, *b, *c, *e;
	cqw_loop *loop = new_loop();
	uint8_t buf[64];
	pid_t pid;
	int st;

	(void)state;
	T_OK(cqw_pipe(&a, &b, CQW_DUPLEX | CQW_EXCLUSIVE));
	T_OK(cqw_pipe(&c, &e, CQW_DUPLEX));
	T_OK(cqw_send_bytes(a, "1", 1));
	t_io_op(&op, CQW_OP_RECV, b, buf, sizeof(buf));
	T_OK(cqw_submit(loop, &op));
	T_EXPECT(reap_one(loop)->result, 1);
	T_OK(cqw_send_bytes(a, "22", 2));
	usleep(20000);
	/* A send to push: the flush takes the receive's completion too. */
	t_io_op(&sop, CQW_OP_SEND, c, "s", 1);
	T_OK(cqw_submit(loop, &sop));
	T_OK(cqw_flush(loop));
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct cqw_op *cd[2];
		int r, n = 0, seen_send = 0, seen_recv = 0;

		if (!want_multishot(loop)) {
			_exit(0); /* it would read the parent's frame */
		}
		alarm(20); /* a child that spins is killed, and fails */
		T_OK(cqw_submit(loop, &op));
		while (n < 2) {
			r = cqw_reap(loop, cd + n, 2 - n, 2000);
			if (r <= 0) {
				_exit(10);
			}
			n += r;
		}
		for (r = 0; r < n; r++) {
			seen_send += cd[r] == &sop;
			seen_recv += cd[r] == &op;
		}
		if (seen_send != 1 || seen_recv != 1) {
			_exit(11);
		}
		_exit(op.result == CQW_EFORK && sop.result == CQW_EFORK ? 0
									: 12);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	d = reap_one(loop);
	assert_ptr_equal(d, &sop);
	T_EXPECT(d->result, 0);
	T_OK(cqw_submit(loop, &op));
	d = reap_one(loop);
	T_EXPECT(d->result, 2);
	assert_memory_equal(buf, "22", 2);
	check_multishot(loop);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_conn_free(c);
	cqw_conn_free(e);
	cqw_loop_free(loop);
}

/*
 * A connection whose ops are all reaped is free again (cqwire.h): it may
 * be submitted to another loop, even with the first loop's receive armed
 * and a frame taken by it.
 */
static void
test_moves_to_another_loop(void **state)
{
	struct cqw_op op;
	cqw_conn *a, *b;
	cqw_loop *loop = new_loop(), *loop2 = new_loop();
	uint8_t buf[64];

	(void)state;
	T_OK(cqw_pipe(&a, &b, CQW_DUPLEX | CQW_EXCLUSIVE));
	T_OK(cqw_send_bytes(a, "1", 1));
	t_io_op(&op, CQW_OP_RECV, b, buf, sizeof(buf));
	T_OK(cqw_submit(loop, &op));
	T_EXPECT(reap_one(loop)->result, 1);
	T_OK(cqw_send_bytes(a, "22", 2));
	usleep(10000);
	T_OK(cqw_submit(loop2, &op));
	T_EXPECT(reap_one(loop2)->result, 2);
	assert_memory_equal(buf, "22", 2);
	T_OK(cqw_send_bytes(a, "333", 3));
	T_OK(cqw_submit(loop2, &op));
	T_EXPECT(reap_one(loop2)->result, 3);
	assert_memory_equal(buf, "333", 3);
	check_multishot(loop);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop2);
	cqw_loop_free(loop);
}

/*
 * The armed receive took a frame and then the peer's reset (it closed
 * with bytes it never read), with no op queued: the synchronous reads get
 * the frame, then CQW_ECONNRESET, as without a multishot (not an end of
 * file: the socket said the reset once, to the multishot).
 */
static void
test_reset_owed_to_sync_read(void **state)
{
	cqw_conn *a, *b, *c, *e;
	cqw_loop *loop = new_loop();
	struct cqw_op op;
	uint8_t buf[64];

	(void)state;
	T_OK(cqw_pipe(&a, &b, CQW_DUPLEX | CQW_EXCLUSIVE));
	T_OK(cqw_pipe(&c, &e, CQW_DUPLEX));
	T_OK(cqw_send_bytes(a, "1", 1));
	t_io_op(&op, CQW_OP_RECV, b, buf, sizeof(buf));
	T_OK(cqw_submit(loop, &op));
	T_EXPECT(reap_one(loop)->result, 1);
	T_OK(cqw_send_bytes(b, "unread", 6));
	T_OK(cqw_send_bytes(a, "x", 1));
	cqw_conn_free(a); /* with "unread" queued: b's next read is a reset */
	drain_into_loop(loop, b, c);
	T_EXPECT(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, NULL), 1);
	assert_memory_equal(buf, "x", 1);
	T_EXPECT(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, NULL),
		 CQW_ECONNRESET);
	check_multishot(loop);
	cqw_conn_free(b);
	cqw_conn_free(c);
	cqw_conn_free(e);
	cqw_loop_free(loop);
}

/*
 * More connections than the loop has buffers, half of them with bytes
 * that no op takes for a while: every frame still arrives, once.
 */
static void
test_more_conns_than_buffers(void **state)
{
	enum { NC = 400, PER = 3 };
	cqw_conn **a = calloc(NC, sizeof(*a)), **b = calloc(NC, sizeof(*b));
	struct cqw_op *ops = calloc(NC, sizeof(*ops)), *done[64];
	uint8_t(*bufs)[5000] = calloc(NC, sizeof(*bufs));
	unsigned *got = calloc(NC, sizeof(*got));
	cqw_loop *loop = new_loop();
	unsigned i, k, left;
	int n, j;

	(void)state;
	for (i = 0; i < NC; i++) {
		T_OK(cqw_pipe(&a[i], &b[i], CQW_DUPLEX | CQW_EXCLUSIVE));
		t_io_op(&ops[i], CQW_OP_RECV, b[i], bufs[i], sizeof(bufs[i]));
		ops[i].user_data = (void *)(uintptr_t)i;
	}
	/* One round each, so every receive is armed. */
	for (i = 0; i < NC; i++) {
		T_OK(cqw_send_bytes(a[i], "arm", 3));
		T_OK(cqw_submit(loop, &ops[i]));
	}
	for (left = NC; left > 0; left -= (unsigned)n) {
		n = cqw_reap(loop, done, 64, T_IO_DEADLINE_MS);
		assert_true(n > 0);
		for (j = 0; j < n; j++) {
			T_EXPECT(done[j]->result, 3);
		}
	}
	/* PER frames of 4000 B each, with no op queued anywhere. */
	for (i = 0; i < NC; i++) {
		for (k = 0; k < PER; k++) {
			fill(bufs[i], 4000, i * PER + k);
			T_OK(cqw_send_bytes(a[i], bufs[i], 4000));
		}
	}
	usleep(20000);
	assert_int_equal(cqw_reap(loop, done, 64, 50), 0);
	for (i = 0; i < NC; i++) {
		T_OK(cqw_submit(loop, &ops[i]));
	}
	for (left = NC * PER; left > 0; left -= (unsigned)n) {
		n = cqw_reap(loop, done, 64, T_IO_DEADLINE_MS);
		assert_true(n > 0);
		for (j = 0; j < n; j++) {
			i = (unsigned)(uintptr_t)done[j]->user_data;
			T_EXPECT(done[j]->result, 4000);
			check(done[j]->buf, 4000, i * PER + got[i]);
			if (++got[i] < PER) {
				T_OK(cqw_submit(loop, done[j]));
			}
		}
	}
	for (i = 0; i < NC; i++) {
		assert_int_equal(got[i], PER);
		cqw_conn_free(a[i]);
		cqw_conn_free(b[i]);
	}
	check_multishot(loop);
	cqw_loop_free(loop);
	free(a);
	free(b);
	free(ops);
	free(bufs);
	free(got);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sizes_in_order),
		cmocka_unit_test(test_bulk_in_order),
		cmocka_unit_test(test_too_short_keeps_frame),
		cmocka_unit_test(test_bytes_kept_between_ops),
		cmocka_unit_test(test_cancel_and_close),
		cmocka_unit_test(test_fork_armed),
		cmocka_unit_test(test_more_conns_than_buffers),
		cmocka_unit_test(test_wait_sees_held_bytes),
		cmocka_unit_test(test_fork_completion_taken),
		cmocka_unit_test(test_moves_to_another_loop),
		cmocka_unit_test(test_reset_owed_to_sync_read),
		cmocka_unit_test(test_large_then_small),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
