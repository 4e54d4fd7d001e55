/*
 * Send coalescing and the exclusive batch receive: small frames are
 * copied into one contiguous area before they are written, large ones
 * go from the caller's buffer, and an exclusive receiver walks many
 * frames per read. The bytes on the wire must be exactly Python's
 * framing of the messages in order, through partial writes (tiny socket
 * and pipe buffers), signals, fork() and close with the write in flight.
 *
 * The sends go through the I/O layer of t-conn.h (sync, then loop ops
 * per backend); the receivers are raw reads of the descriptor, a CPython
 * reader, or the sync batch receive. POSIX only (fork, pipes' sizes).
 */
#include "t-conn.h"
#include "t-loop.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>

/* The plan: message k's length; its payload is t_pattern_fill(.., k). */
#define T_PLAN_N 3000

static size_t
t_plan_len(size_t k)
{
	static const size_t first[] = { 0,     1,     3,    4,	    5,
					63,    64,    65,   511,    512,
					513,   1025,  1024, 4096,   0,
					65536, 70000, 2,    100000, 7 };

	if (k < sizeof(first) / sizeof(first[0])) {
		return first[k];
	}
	if (k % 499 == 0) {
		return 100000;
	}
	if (k % 97 == 0) {
		return 3000;
	}
	if (k % 7 == 0) {
		return k % 513;
	}
	return 64;
}

/* The messages of the plan, and Python's framing of them (*wire). */
static uint8_t **
t_plan_make(struct cqw_msg *msgs, size_t n, uint8_t **wire, size_t *wlen)
{
	uint8_t **bufs = calloc(n, sizeof(*bufs));
	size_t k, off = 0, len;
	uint8_t *w;

	assert_non_null(bufs);
	for (k = 0, *wlen = 0; k < n; k++) {
		*wlen += 4 + t_plan_len(k);
	}
	w = malloc(*wlen);
	assert_non_null(w);
	for (k = 0; k < n; k++) {
		len = t_plan_len(k);
		bufs[k] = malloc(len > 0 ? len : 1);
		assert_non_null(bufs[k]);
		t_pattern_fill(bufs[k], len, (unsigned)k);
		msgs[k] = (struct cqw_msg){ .buf = bufs[k], .len = len };
		w[off] = (uint8_t)(len >> 24);
		w[off + 1] = (uint8_t)(len >> 16);
		w[off + 2] = (uint8_t)(len >> 8);
		w[off + 3] = (uint8_t)len;
		memcpy(w + off + 4, bufs[k], len);
		off += 4 + len;
	}
	*wire = w;
	return bufs;
}

static void
t_plan_free(uint8_t **bufs, size_t n, uint8_t *wire)
{
	size_t k;

	for (k = 0; k < n; k++) {
		free(bufs[k]);
	}
	free(bufs);
	free(wire);
}

/* The smallest kernel buffers, so that every write is cut short. */
static void
t_tiny_buffers(cqw_conn *tx, cqw_conn *rx, unsigned flags)
{
	int small = 4096, fd = (int)cqw_conn_fileno(tx);

	if (flags & CQW_DUPLEX) {
		assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small,
					    sizeof(small)),
				 0);
		assert_int_equal(setsockopt((int)cqw_conn_fileno(rx),
					    SOL_SOCKET, SO_RCVBUF, &small,
					    sizeof(small)),
				 0);
	} else {
		assert_true(fcntl(fd, F_SETPIPE_SZ, small) >= 4096);
	}
}

/* A raw reader of fd: reads of odd sizes, every byte checked. */
struct t_reader {
	pthread_t th;
	int fd;
	const uint8_t *want;
	size_t len;  /* bytes it must see, then end of file (if eof) */
	int eof;     /* 0: stop after len bytes */
	size_t got;  /* bytes it saw */
	long bad_at; /* -1, or the offset of the first wrong byte */
};

static void *
t_reader_main(void *arg)
{
	struct t_reader *r = arg;
	uint8_t buf[6007];
	size_t chunk, i = 0;
	sigset_t mask;
	ssize_t n;

	/* Signals are for the sending thread (see the signal test). */
	sigemptyset(&mask);
	sigaddset(&mask, SIGALRM);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	r->bad_at = -1;
	for (;;) {
		chunk = 1 + (i++ * 7919) % sizeof(buf);
		if (!r->eof && chunk > r->len - r->got) {
			chunk = r->len - r->got;
		}
		if (chunk == 0) {
			break;
		}
		n = read(r->fd, buf, chunk);
		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n <= 0) {
			break;
		}
		if (r->got + (size_t)n > r->len ||
		    memcmp(buf, r->want + r->got, (size_t)n) != 0) {
			r->bad_at = (long)r->got;
			break;
		}
		r->got += (size_t)n;
	}
	return NULL;
}

static void
t_reader_start(struct t_reader *r, int fd, const uint8_t *want, size_t len,
	       int eof)
{
	memset(r, 0, sizeof(*r));
	r->fd = fd;
	r->want = want;
	r->len = len;
	r->eof = eof;
	assert_int_equal(pthread_create(&r->th, NULL, t_reader_main, r), 0);
}

static void
t_reader_join(struct t_reader *r)
{
	assert_int_equal(pthread_join(r->th, NULL), 0);
	if (r->bad_at >= 0) {
		fail_msg("wire bytes differ from the reference at offset %ld",
			 r->bad_at);
	}
}

/*
 * Batches of many sizes (one message: the stack area; hundreds: the
 * borrowed one, filled several times) of mixed small and large messages,
 * through buffers of one page: the bytes on the wire are Python's framing
 * of every message, in order, once.
 */
static void
test_coalesce_wire_bytes_exact(void **state)
{
	static const unsigned flags[] = { CQW_DUPLEX, 0 };
	static const size_t batch[] = { 1, 2, 37, 300, 1, 700, 5, T_PLAN_N };
	struct cqw_msg *msgs = calloc(T_PLAN_N, sizeof(*msgs));
	struct t_reader rd;
	uint8_t **bufs, *wire;
	size_t f, k, b, m, wlen;
	cqw_conn *rx, *tx;

	(void)state;
	assert_non_null(msgs);
	bufs = t_plan_make(msgs, T_PLAN_N, &wire, &wlen);
	for (f = 0; f < 2; f++) {
		t_pipe(&rx, &tx, flags[f]);
		t_tiny_buffers(tx, rx, flags[f]);
		t_reader_start(&rd, (int)cqw_conn_fileno(rx), wire, wlen, 1);
		for (k = 0, b = 0; k < T_PLAN_N; k += m, b++) {
			m = batch[b % (sizeof(batch) / sizeof(batch[0]))];
			if (m > T_PLAN_N - k) {
				m = T_PLAN_N - k;
			}
			T_OK(t_send_batch(tx, msgs + k, m));
		}
		cqw_conn_free(tx);
		t_reader_join(&rd);
		assert_int_equal(rd.got, wlen);
		cqw_conn_free(rx);
	}
	t_plan_free(bufs, T_PLAN_N, wire);
	free(msgs);
}

/* CPython's Connection reads every message and checks its bytes. */
static const char t_py_reader[] =
    "import sys\n"
    "from multiprocessing.connection import Connection\n"
    "n, duplex = int(sys.argv[1]), sys.argv[2] == '1'\n"
    "c = Connection(3, readable=True, writable=duplex)\n"
    "first = [0, 1, 3, 4, 5, 63, 64, 65, 511, 512, 513, 1025, 1024, 4096,\n"
    "         0, 65536, 70000, 2, 100000, 7]\n"
    "def plan_len(k):\n"
    "    if k < len(first): return first[k]\n"
    "    if k % 499 == 0: return 100000\n"
    "    if k % 97 == 0: return 3000\n"
    "    if k % 7 == 0: return k % 513\n"
    "    return 64\n"
    "def pattern(n, seed):\n"
    "    return bytes((i * 131 + (i >> 8) * 7 + seed * 29) & 0xff\n"
    "                 for i in range(n))\n"
    "for k in range(n):\n"
    "    b = c.recv_bytes()\n"
    "    if b != pattern(plan_len(k), k):\n"
    "        print('message', k, 'differs: length', len(b))\n"
    "        sys.exit(1)\n"
    "try:\n"
    "    c.recv_bytes()\n"
    "    print('a message more than was sent')\n"
    "    sys.exit(1)\n"
    "except EOFError:\n"
    "    pass\n";

static const char *
t_python(void)
{
	const char *py = getenv("CQW_PYTHON");

	return py != NULL && *py != '\0' ? py : "/usr/bin/python3";
}

static void
test_coalesce_python_reads_every_message(void **state)
{
	static const unsigned flags[] = { CQW_DUPLEX, 0 };
	struct cqw_msg *msgs = calloc(T_PLAN_N, sizeof(*msgs));
	uint8_t **bufs, *wire;
	char count[16], duplex[2];
	cqw_conn *rx, *tx;
	size_t f, wlen;
	pid_t pid;

	(void)state;
	if (access(t_python(), X_OK) != 0) {
		skip(); /* no Python interpreter here (CQW_PYTHON) */
	}
	assert_non_null(msgs);
	bufs = t_plan_make(msgs, T_PLAN_N, &wire, &wlen);
	snprintf(count, sizeof(count), "%d", T_PLAN_N);
	for (f = 0; f < 2; f++) {
		t_pipe(&rx, &tx, flags[f]);
		t_tiny_buffers(tx, rx, flags[f]);
		duplex[0] = flags[f] & CQW_DUPLEX ? '1' : '0';
		duplex[1] = '\0';
		pid = t_fork();
		if (pid == 0) {
			int fd = (int)cqw_conn_fileno(rx);

			/* Python's end as fd 3, inherited; not the writer. */
			close((int)cqw_conn_fileno(tx));
			if ((fd != 3 && dup2(fd, 3) < 0) ||
			    fcntl(3, F_SETFD, 0) < 0) {
				_exit(2);
			}
			execl(t_python(), t_python(), "-c", t_py_reader, count,
			      duplex, (char *)NULL);
			_exit(127);
		}
		cqw_conn_free(rx);
		T_OK(t_send_batch(tx, msgs, 1));
		T_OK(t_send_batch(tx, msgs + 1, T_PLAN_N - 1));
		cqw_conn_free(tx);
		t_wait_child(pid);
	}
	t_plan_free(bufs, T_PLAN_N, wire);
	free(msgs);
}

/*
 * What an exclusive batch receive must hand up from a raw stream: the
 * plan's frames with odd ones between them (negative lengths Python
 * reads as empty, an 8-byte length for a small payload, a frame too big
 * for the batch's buffers), split across reads everywhere.
 */
struct t_item {
	size_t len;    /* payload length handed up */
	unsigned seed; /* its pattern */
};

#define T_RECV_CAP (128u * 1024)
#define T_RECV_HUGE (200u * 1024)

static uint8_t *
t_odd_stream(struct t_item *items, size_t *nitems, size_t *slen)
{
	size_t cap = 8u << 20, off = 0, k, n = 0, len;
	uint8_t *s = malloc(cap);

	assert_non_null(s);
	for (k = 0; k < T_PLAN_N; k++) {
		len = k == 1500 ? T_RECV_HUGE : t_plan_len(k);
		assert_true(off + 12 + len <= cap);
		if (k % 301 == 5) {
			/* -2 and INT32_MIN: empty messages, as Python reads. */
			memcpy(s + off,
			       k % 2 ? "\xff\xff\xff\xfe" : "\x80\0\0\0", 4);
			off += 4;
			items[n++] = (struct t_item){ 0, 0 };
		}
		if (k % 211 == 3) {
			/* The large form for a small payload. */
			memcpy(s + off, "\xff\xff\xff\xff\0\0\0\0", 8);
			off += 8;
		}
		s[off] = (uint8_t)(len >> 24);
		s[off + 1] = (uint8_t)(len >> 16);
		s[off + 2] = (uint8_t)(len >> 8);
		s[off + 3] = (uint8_t)len;
		t_pattern_fill(s + off + 4, len, (unsigned)k);
		off += 4 + len;
		items[n++] = (struct t_item){ len, (unsigned)k };
	}
	*nitems = n;
	*slen = off;
	return s;
}

struct t_writer {
	pthread_t th;
	cqw_conn *tx;
	const uint8_t *s;
	size_t len;
	int result;
};

static void *
t_writer_main(void *arg)
{
	struct t_writer *w = arg;
	size_t off = 0, chunk, i = 0;

	w->result = 0;
	while (off < w->len && w->result == 0) {
		chunk = 1 + (i++ * 4099) % 9000;
		if (chunk > w->len - off) {
			chunk = w->len - off;
		}
		w->result =
		    t_write_all(cqw_conn_fileno(w->tx), w->s + off, chunk);
		off += chunk;
	}
	cqw_conn_close(w->tx);
	return NULL;
}

static void
test_coalesce_exclusive_batch_receive(void **state)
{
	static const unsigned flags[] = { CQW_DUPLEX | CQW_EXCLUSIVE,
					  CQW_EXCLUSIVE };
	struct t_item *items = calloc(2 * T_PLAN_N, sizeof(*items));
	uint8_t *slots = malloc(64 * T_RECV_CAP), *huge = malloc(T_RECV_HUGE);
	struct cqw_msg msgs[64];
	struct t_writer w;
	size_t f, i, k, nitems, slen;
	cqw_conn *rx, *tx;
	uint8_t *s;
	int r;

	(void)state;
	assert_non_null(items);
	assert_non_null(slots);
	assert_non_null(huge);
	s = t_odd_stream(items, &nitems, &slen);
	for (f = 0; f < 2; f++) {
		t_pipe(&rx, &tx, flags[f]);
		t_tiny_buffers(tx, rx, flags[f] & CQW_DUPLEX);
		w.tx = tx;
		w.s = s;
		w.len = slen;
		assert_int_equal(pthread_create(&w.th, NULL, t_writer_main, &w),
				 0);
		for (k = 0; k < nitems;) {
			/* Batches of 1..64 receives. */
			size_t n = 1 + (k * 13) % 64;

			for (i = 0; i < n; i++) {
				msgs[i] = (struct cqw_msg){
					.buf = slots + i * T_RECV_CAP,
					.cap = T_RECV_CAP,
				};
			}
			r = cqw_recv_batch(rx, msgs, n, -1);
			if (r == CQW_ETOOSHORT) {
				/* The frame stays for a bigger buffer. */
				assert_int_equal(items[k].len, T_RECV_HUGE);
				assert_int_equal(msgs[0].len, T_RECV_HUGE);
				T_EXPECT(cqw_recv_bytes_into(
					     rx, huge, T_RECV_HUGE, 0, NULL),
					 T_RECV_HUGE);
				assert_true(t_pattern_check(huge, T_RECV_HUGE,
							    items[k].seed));
				k++;
				continue;
			}
			if (r <= 0) {
				fail_msg("message %zu of %zu: %s", k, nitems,
					 cqw_err_name(r));
			}
			assert_true((size_t)r <= n && k + (size_t)r <= nitems);
			for (i = 0; i < (size_t)r; i++, k++) {
				if (msgs[i].len != items[k].len ||
				    !t_pattern_check(msgs[i].buf, msgs[i].len,
						     items[k].seed)) {
					fail_msg("message %zu: length %zu, "
						 "want %zu, or other bytes",
						 k, msgs[i].len, items[k].len);
				}
			}
		}
		msgs[0] = (struct cqw_msg){ .buf = slots, .cap = T_RECV_CAP };
		T_EXPECT(cqw_recv_batch(rx, msgs, 1, -1), CQW_EOF);
		assert_int_equal(pthread_join(w.th, NULL), 0);
		T_OK(w.result);
		cqw_conn_free(tx);
		cqw_conn_free(rx);
	}
	free(s);
	free(huge);
	free(slots);
	free(items);
}

static void
t_on_alarm(int sig)
{
	(void)sig; /* only there to cut blocking calls short (EINTR) */
}

static int
t_stop(void *arg)
{
	(void)arg;
	return 1;
}

/*
 * Signals every millisecond while a coalesced batch waits for a reader
 * that comes late: with a check that says stop, the batch still finishes
 * once its first byte is out (CQW_EINTR only before it), and the reader
 * sees every frame whole, once.
 */
static void
test_coalesce_signal_mid_write(void **state)
{
	static const unsigned flags[] = { CQW_DUPLEX, 0 };
	struct cqw_msg *msgs = calloc(T_PLAN_N, sizeof(*msgs));
	struct itimerval on = { { 0, 1000 }, { 0, 1000 } }, off;
	struct sigaction sa, old;
	uint8_t **bufs, *wire;
	struct t_reader rd;
	cqw_conn *rx, *tx;
	size_t f, wlen;
	int r;

	(void)state;
	assert_non_null(msgs);
	bufs = t_plan_make(msgs, T_PLAN_N, &wire, &wlen);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = t_on_alarm; /* no SA_RESTART: calls see EINTR */
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
	for (f = 0; f < 2; f++) {
		t_pipe(&rx, &tx, flags[f]);
		t_tiny_buffers(tx, rx, flags[f]);
		cqw_set_signal_check(t_stop, NULL);
		assert_int_equal(setitimer(ITIMER_REAL, &on, NULL), 0);
		do {
			r = cqw_send_batch(tx, msgs, 1);
		} while (r == CQW_EINTR);
		T_OK(r);
		t_reader_start(&rd, (int)cqw_conn_fileno(rx), wire, wlen, 1);
		do {
			r = cqw_send_batch(tx, msgs + 1, T_PLAN_N - 1);
			/* Before its first byte only: then send it all. */
		} while (r == CQW_EINTR);
		memset(&off, 0, sizeof(off));
		assert_int_equal(setitimer(ITIMER_REAL, &off, NULL), 0);
		cqw_set_signal_check(NULL, NULL);
		T_OK(r);
		cqw_conn_free(tx);
		t_reader_join(&rd);
		assert_int_equal(rd.got, wlen);
		cqw_conn_free(rx);
	}
	assert_int_equal(sigaction(SIGALRM, &old, NULL), 0);
	t_plan_free(bufs, T_PLAN_N, wire);
	free(msgs);
}

/*
 * Sends of the plan on a loop, started and stuck: the peer reads nothing
 * yet, so a coalesced write is in flight, cut short.
 */
static struct cqw_op *
t_stuck_sends(cqw_loop *loop, cqw_conn *tx, const struct cqw_msg *msgs,
	      size_t n)
{
	struct cqw_op *ops = calloc(n, sizeof(*ops)), *done[4];
	size_t k;

	assert_non_null(ops);
	for (k = 0; k < n; k++) {
		t_op(&ops[k], CQW_OP_SEND, tx, msgs[k].buf, msgs[k].len, NULL);
		T_RESULT(cqw_submit(loop, &ops[k]), 0);
	}
	T_RESULT(cqw_flush(loop), 0);
	/* The first gather cannot complete: nobody reads. */
	T_RESULT(cqw_reap(loop, done, 4, 50), 0);
	return ops;
}

/*
 * fork() with a coalesced write in flight: the child's ops end with
 * CQW_EFORK and write nothing; the parent's write goes on from where it
 * was, and the reader sees every frame once.
 */
static void
test_coalesce_fork_with_write_in_flight(void **state)
{
	struct cqw_msg *msgs = calloc(T_PLAN_N, sizeof(*msgs));
	struct cqw_op **done = calloc(T_PLAN_N, sizeof(*done)), *ops;
	uint8_t **bufs, *wire;
	struct t_reader rd;
	cqw_conn *rx, *tx;
	cqw_loop *loop;
	size_t k, wlen;
	pid_t pid;
	int n, got;

	(void)state;
	assert_non_null(msgs);
	assert_non_null(done);
	bufs = t_plan_make(msgs, T_PLAN_N, &wire, &wlen);
	loop = t_loop_new();
	t_pipe(&rx, &tx, CQW_DUPLEX);
	t_tiny_buffers(tx, rx, CQW_DUPLEX);
	ops = t_stuck_sends(loop, tx, msgs, T_PLAN_N);
	pid = t_fork();
	if (pid == 0) {
		for (got = 0; got < T_PLAN_N; got += n) {
			n = cqw_reap(loop, done, T_PLAN_N, T_PROGRESS_MS);
			T_CHILD_CHECK(n > 0);
			for (k = 0; k < (size_t)n; k++) {
				T_CHILD_CHECK(done[k]->result == CQW_EFORK);
			}
		}
		_exit(0);
	}
	t_wait_child(pid);
	t_reader_start(&rd, (int)cqw_conn_fileno(rx), wire, wlen, 0);
	t_reap_exact(loop, done, T_PLAN_N);
	for (k = 0; k < T_PLAN_N; k++) {
		T_RESULT(ops[k].result, 0);
	}
	t_reader_join(&rd);
	assert_int_equal(rd.got, wlen);
	cqw_conn_free(tx);
	cqw_conn_free(rx);
	cqw_loop_free(loop);
	free(ops);
	free(done);
	t_plan_free(bufs, T_PLAN_N, wire);
	free(msgs);
}

/*
 * Close with a coalesced write in flight: every op ends once (written,
 * or CQW_ECANCELED), and the peer sees a prefix of the stream holding
 * every op that was reported written.
 */
static void
test_coalesce_close_with_write_in_flight(void **state)
{
	struct cqw_msg *msgs = calloc(T_PLAN_N, sizeof(*msgs));
	struct cqw_op **done = calloc(T_PLAN_N, sizeof(*done)), *ops;
	uint8_t **bufs, *wire;
	size_t k, wlen, end = 0, written = 0;
	struct t_reader rd;
	int cancelled = 0;
	cqw_conn *rx, *tx;
	cqw_loop *loop;

	(void)state;
	assert_non_null(msgs);
	assert_non_null(done);
	bufs = t_plan_make(msgs, T_PLAN_N, &wire, &wlen);
	loop = t_loop_new();
	t_pipe(&rx, &tx, CQW_DUPLEX);
	t_tiny_buffers(tx, rx, CQW_DUPLEX);
	ops = t_stuck_sends(loop, tx, msgs, T_PLAN_N);
	T_OK(cqw_conn_close(tx));
	t_reap_exact(loop, done, T_PLAN_N);
	for (k = 0; k < T_PLAN_N; k++) {
		end += 4 + msgs[k].len;
		if (ops[k].result == 0) {
			/* Written ones come first: gathers go in order. */
			assert_false(cancelled);
			written = end;
			continue;
		}
		T_RESULT(ops[k].result, CQW_ECANCELED);
		cancelled = 1;
	}
	t_reader_start(&rd, (int)cqw_conn_fileno(rx), wire, wlen, 1);
	t_reader_join(&rd);
	assert_true(rd.got >= written);
	cqw_conn_free(tx);
	cqw_conn_free(rx);
	cqw_loop_free(loop);
	free(ops);
	free(done);
	t_plan_free(bufs, T_PLAN_N, wire);
	free(msgs);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_coalesce_wire_bytes_exact),
		cmocka_unit_test(test_coalesce_python_reads_every_message),
		cmocka_unit_test(test_coalesce_exclusive_batch_receive),
		cmocka_unit_test(test_coalesce_signal_mid_write),
		cmocka_unit_test(test_coalesce_fork_with_write_in_flight),
		cmocka_unit_test(test_coalesce_close_with_write_in_flight),
	};

	t_io_setup();
	return cmocka_run_group_tests(tests, NULL, t_io_teardown);
}
