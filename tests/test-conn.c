/*
 * The behavioural suite of the synchronous API (include/cqwire.h), after
 * CPython's _test_multiprocessing.py (WIRE.md §10.1): connections, simplex
 * and duplex pipes, send/receive argument rules, maxlength poisoning,
 * recv_bytes_into, close, handle passing, listeners, poll and wait,
 * signals, batches, CQW_EXCLUSIVE, large frames, end-of-file rules, fork,
 * and the authentication handshake between two cqwire ends.
 *
 * Where cqwire deliberately differs from Python the tests check cqwire:
 * EOF right after a complete header is CQW_ETRUNC, and recv_bytes_into()
 * keeps a message that does not fit.
 *
 * The second party is a forked child (see t-util.h: children check with
 * T_CHILD_CHECK and the parent asserts their exit status) or a thread.
 * Raw write() on a connection's descriptor puts exact bytes on the wire.
 */
#define _GNU_SOURCE /* tests use POSIX and Linux freely */
#include "t-util.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "cqwire.h"

/* ------------------------------------------------------------------
 * Helpers
 */

/* Fail with both codes' names unless got == want. */
static void
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

static void
t_pipe(cqw_conn **a, cqw_conn **b, unsigned flags)
{
	int r = cqw_pipe(a, b, flags);

	if (r != 0) {
		fail_msg("cqw_pipe(0x%x): %s", flags, cqw_err_name(r));
	}
}

static void
t_send_str(cqw_conn *c, const char *s)
{
	T_OK(cqw_send_bytes(c, s, strlen(s)));
}

/* Receive one message and compare it with want[0..len). */
static void
t_recv_expect(cqw_conn *c, const void *want, size_t len)
{
	void *buf = NULL;
	int64_t n = cqw_recv_bytes(c, &buf, CQW_NONE);

	T_EXPECT(n, (int64_t)len);
	assert_non_null(buf);
	if (len > 0) {
		assert_memory_equal(buf, want, len);
	}
	cqw_free(buf);
}

static void
t_recv_str(cqw_conn *c, const char *s)
{
	t_recv_expect(c, s, strlen(s));
}

/* Put raw bytes on the wire through c's descriptor. */
static void
t_raw(cqw_conn *c, const void *buf, size_t len)
{
	T_OK(t_write_all(cqw_conn_fileno(c), buf, len));
}

/* Unread bytes in the kernel buffer of c's descriptor. */
static int
t_unread(cqw_conn *c)
{
	int n = -1;

	assert_int_equal(ioctl(cqw_conn_fileno(c), FIONREAD, &n), 0);
	return n;
}

/* The four shapes of connection pair, for tests that run on each. */
static const unsigned t_pair_flags[] = {
	CQW_DUPLEX,
	0,
	CQW_DUPLEX | CQW_EXCLUSIVE,
	CQW_EXCLUSIVE,
};
#define T_NPAIRS (sizeof(t_pair_flags) / sizeof(t_pair_flags[0]))

/* A signal handler without SA_RESTART, counting deliveries. */
static volatile sig_atomic_t t_sig_count;

static void
t_sig_handler(int sig)
{
	(void)sig;
	t_sig_count++;
}

static void
t_sig_install(int sig, struct sigaction *old)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = t_sig_handler;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0; /* no SA_RESTART: blocking calls see EINTR */
	t_sig_count = 0;
	assert_int_equal(sigaction(sig, &sa, old), 0);
}

static void
t_sig_restore(int sig, const struct sigaction *old)
{
	assert_int_equal(sigaction(sig, old, NULL), 0);
}

/* ------------------------------------------------------------------
 * Connection (_TestConnection)
 */

static void
test_conn_send_recv(void **state)
{
	cqw_conn *a, *b;
	size_t i;

	(void)state;
	for (i = 0; i < T_NPAIRS; i++) {
		/* Simplex: a reads, b writes; duplex: either way. */
		t_pipe(&a, &b, t_pair_flags[i]);
		assert_true(cqw_conn_fileno(a) >= 0);
		assert_true(cqw_conn_fileno(b) >= 0);
		assert_false(cqw_conn_closed(a));
		t_send_str(b, "hello");
		t_send_str(b, "");
		t_send_str(b, "world");
		t_recv_str(a, "hello");
		t_recv_str(a, "");
		t_recv_str(a, "world");
		if (t_pair_flags[i] & CQW_DUPLEX) {
			t_send_str(a, "back");
			t_recv_str(b, "back");
		}
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

/* The wire bytes of WIRE.md §2.9, on both kinds of pipe. */
static void
test_conn_wire_bytes(void **state)
{
	static const uint8_t want[] = { 0,   0,	  0, 5, 'h', 'e', 'l',
					'l', 'o', 0, 0, 0,   0 };
	uint8_t got[sizeof(want) + 1];
	cqw_conn *a, *b;
	int i;

	(void)state;
	for (i = 0; i < 2; i++) {
		t_pipe(&a, &b, i ? 0 : CQW_DUPLEX);
		t_send_str(b, "hello");
		t_send_str(b, "");
		assert_int_equal(t_unread(a), sizeof(want));
		assert_int_equal(read(cqw_conn_fileno(a), got, sizeof(got)),
				 sizeof(want));
		assert_memory_equal(got, want, sizeof(want));
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

/* A child's connections: the ones it uses and the parent's it drops. */
struct t_child_conns {
	cqw_conn *use[2];
	cqw_conn *drop[2];
};

/*
 * The child holds copies of the parent's ends too: it closes them, or
 * it would never see end of file on its own.
 */
static void
t_child_drop(struct t_child_conns *cc)
{
	cqw_conn_close(cc->drop[0]);
	cqw_conn_close(cc->drop[1]);
}

static int
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

/* 16 MiB each way through a child that echoes (and test_spawn_close). */
static void
test_conn_round_trip_16mib(void **state)
{
	const size_t len = 16u << 20, big = (24u << 20) + 1;
	struct t_child_conns cc = { { NULL }, { NULL } };
	cqw_conn *a, *b;
	void *out, *in = NULL;
	pid_t pid;

	(void)state;
	out = malloc(big);
	assert_non_null(out);
	t_pattern_fill(out, big, 16);
	t_pipe(&a, &b, CQW_DUPLEX);
	cc.use[0] = b;
	cc.drop[0] = a;
	pid = t_fork_child(t_child_echo, &cc);
	/* The parent drops the child's end at once; echo still works. */
	cqw_conn_free(b);
	T_OK(cqw_send_bytes(a, out, len));
	T_EXPECT(cqw_recv_bytes(a, &in, CQW_NONE), (int64_t)len);
	assert_true(t_pattern_check(in, len, 16));
	cqw_free(in);
	/* Past 16 MiB the buffer grows as the payload comes in. */
	T_OK(cqw_send_bytes(a, out, big));
	T_EXPECT(cqw_recv_bytes(a, &in, CQW_NONE), (int64_t)big);
	assert_true(t_pattern_check(in, big, 16));
	cqw_free(in);
	cqw_conn_free(a);
	t_wait_child(pid);
	free(out);
}

static void
test_conn_peer_closed(void **state)
{
	cqw_conn *a, *b;
	uint8_t buf[8];
	void *p = NULL;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX);
	cqw_conn_free(b);
	/* As Python: the flags stay, reads see EOF. */
	assert_true(cqw_conn_readable(a));
	assert_true(cqw_conn_writable(a));
	assert_false(cqw_conn_closed(a));
	T_EXPECT(cqw_poll(a, 0), 1);
	T_EXPECT(cqw_recv_bytes(a, &p, CQW_NONE), CQW_EOF);
	T_EXPECT(cqw_recv_bytes_into(a, buf, sizeof(buf), 0, NULL), CQW_EOF);
	assert_true(cqw_send_bytes(a, "x", 1) < 0);
	cqw_conn_free(a);

	/* Simplex: the reader sees EOF when the writer goes. */
	t_pipe(&a, &b, 0);
	cqw_conn_free(b);
	T_EXPECT(cqw_poll(a, 0), 1);
	T_EXPECT(cqw_recv_bytes(a, &p, CQW_NONE), CQW_EOF);
	cqw_conn_free(a);

	/*
	 * The writer whose reader went gets CQW_EPIPE, and SIGPIPE (left
	 * at its default action by this test program) does not kill us.
	 */
	t_pipe(&a, &b, 0);
	cqw_conn_free(a);
	T_EXPECT(cqw_send_bytes(b, "x", 1), CQW_EPIPE);
	T_EXPECT(cqw_send_bytes(b, "x", 1), CQW_EPIPE);
	cqw_conn_free(b);
}

static void
test_conn_poll_timeouts(void **state)
{
	cqw_conn *a, *b;
	int64_t t0;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX);
	T_EXPECT(cqw_poll(a, 0), 0);
	t0 = t_now_ms();
	T_EXPECT(cqw_poll(a, 150), 0);
	assert_true(t_now_ms() - t0 >= 100);
	t_send_str(b, "x");
	T_EXPECT(cqw_poll(a, 0), 1);
	T_EXPECT(cqw_poll(a, -1), 1);
	t_recv_str(a, "x");
	T_EXPECT(cqw_poll(a, 0), 0);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

static void
test_conn_duplex_false(void **state)
{
	struct cqw_msg m = { .buf = "x", .cap = 1, .len = 1 };
	struct cqw_wait_item item = { .fd = -1 };
	cqw_conn *r, *w;
	uint8_t buf[4];
	void *p = NULL;

	(void)state;
	t_pipe(&r, &w, 0);
	assert_true(cqw_conn_readable(r));
	assert_false(cqw_conn_writable(r));
	assert_false(cqw_conn_readable(w));
	assert_true(cqw_conn_writable(w));

	T_EXPECT(cqw_send_bytes(r, "x", 1), CQW_EREADONLY);
	T_EXPECT(cqw_send_bytes_at(r, "x", 1, 0, CQW_NONE), CQW_EREADONLY);
	T_EXPECT(cqw_send_batch(r, &m, 1), CQW_EREADONLY);
	T_EXPECT(cqw_recv_bytes(w, &p, CQW_NONE), CQW_EWRITEONLY);
	T_EXPECT(cqw_recv_bytes_into(w, buf, sizeof(buf), 0, NULL),
		 CQW_EWRITEONLY);
	T_EXPECT(cqw_recv_batch(w, &m, 1, 0), CQW_EWRITEONLY);
	T_EXPECT(cqw_poll(w, 0), CQW_EWRITEONLY);
	/* Python's wait() watches a write end too: not ready, no error. */
	item.conn = w;
	T_EXPECT(cqw_wait(&item, 1, 0), 0);

	/* Nothing of that reached the pipe; the right way round works. */
	T_EXPECT(cqw_poll(r, 0), 0);
	t_send_str(w, "ok");
	t_recv_str(r, "ok");
	cqw_conn_free(r);
	cqw_conn_free(w);
}

/* Python's test_sendbytes: offsets and sizes in bytes (WIRE.md §2.6). */
static void
test_conn_sendbytes_offsets(void **state)
{
	static const char msg[] = "abcdefghijklmnopqrstuvwxyz";
	const size_t len = sizeof(msg) - 1;
	cqw_conn *a, *b;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX);
	T_OK(cqw_send_bytes_at(a, msg, len, 0, CQW_NONE));
	t_recv_str(b, msg);
	T_OK(cqw_send_bytes_at(a, msg, len, 5, CQW_NONE));
	t_recv_str(b, msg + 5);
	T_OK(cqw_send_bytes_at(a, msg, len, 7, 8));
	t_recv_expect(b, msg + 7, 8);
	T_OK(cqw_send_bytes_at(a, msg, len, 0, (int64_t)len));
	t_recv_str(b, msg);
	T_OK(cqw_send_bytes_at(a, msg, len, 22, 4));
	t_recv_str(b, "wxyz");
	/* offset == len sends an empty message. */
	T_OK(cqw_send_bytes_at(a, msg, len, (int64_t)len, CQW_NONE));
	t_recv_expect(b, "", 0);
	T_OK(cqw_send_bytes_at(a, msg, len, (int64_t)len, 0));
	t_recv_expect(b, "", 0);

	/* The five ValueError cases, and nothing is sent for them. */
	T_EXPECT(cqw_send_bytes_at(a, msg, len, (int64_t)len + 1, CQW_NONE),
		 CQW_EINVAL);
	T_EXPECT(cqw_send_bytes_at(a, msg, len, 22, 5), CQW_EINVAL);
	T_EXPECT(cqw_send_bytes_at(a, msg, len, (int64_t)len, 1), CQW_EINVAL);
	T_EXPECT(cqw_send_bytes_at(a, msg, len, -1, CQW_NONE), CQW_EINVAL);
	T_EXPECT(cqw_send_bytes_at(a, msg, len, 4, -2), CQW_EINVAL);
	/* Sizes that would wrap around. */
	T_EXPECT(cqw_send_bytes_at(a, msg, len, 1, INT64_MAX), CQW_EINVAL);
	T_EXPECT(cqw_send_bytes_at(a, msg, len, INT64_MAX, 1), CQW_EINVAL);
	T_EXPECT(cqw_send_bytes(a, NULL, 3), CQW_EINVAL);
	T_EXPECT(cqw_poll(b, 0), 0);
	assert_int_equal(t_unread(b), 0);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

static void
test_conn_recv_bytes_maxlength_equal(void **state)
{
	cqw_conn *a, *b;
	void *p = NULL;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX);
	t_send_str(a, "0123456789");
	T_EXPECT(cqw_recv_bytes(b, &p, 10), 10);
	assert_memory_equal(p, "0123456789", 10);
	cqw_free(p);
	t_send_str(a, "");
	T_EXPECT(cqw_recv_bytes(b, &p, 0), 0);
	cqw_free(p);
	/* Negative values other than CQW_NONE are refused before I/O. */
	t_send_str(a, "still here");
	T_EXPECT(cqw_recv_bytes(b, &p, -2), CQW_EINVAL);
	T_EXPECT(cqw_recv_bytes(b, &p, INT64_MIN), CQW_EINVAL);
	assert_true(cqw_conn_readable(b));
	t_recv_str(b, "still here");
	cqw_conn_free(a);
	cqw_conn_free(b);
}

/* Over maxlength, a duplex end keeps only its writing half. */
static void
test_conn_recv_bytes_maxlength_duplex(void **state)
{
	cqw_conn *a, *b;
	void *p = (void *)&p;
	uint8_t buf[4];

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX);
	t_send_str(a, "0123456789A");
	t_send_str(a, "next");
	T_EXPECT(cqw_recv_bytes(b, &p, 10), CQW_EMSGSIZE);
	assert_ptr_equal(p, (void *)&p); /* nothing handed out */
	assert_false(cqw_conn_closed(b));
	assert_false(cqw_conn_readable(b));
	assert_true(cqw_conn_writable(b));
	T_EXPECT(cqw_recv_bytes(b, &p, CQW_NONE), CQW_EWRITEONLY);
	T_EXPECT(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, NULL),
		 CQW_EWRITEONLY);
	T_EXPECT(cqw_poll(b, 0), CQW_EWRITEONLY);
	t_send_str(b, "still writable");
	t_recv_str(a, "still writable");
	cqw_conn_free(a);
	cqw_conn_free(b);
}

/* Over maxlength, a read-only end is closed. */
static void
test_conn_recv_bytes_maxlength_simplex(void **state)
{
	cqw_conn *r, *w;
	void *p = NULL;

	(void)state;
	t_pipe(&r, &w, 0);
	t_send_str(w, "0123456789A");
	T_EXPECT(cqw_recv_bytes(r, &p, 10), CQW_EMSGSIZE);
	assert_true(cqw_conn_closed(r));
	T_EXPECT(cqw_recv_bytes(r, &p, CQW_NONE), CQW_ECLOSED);
	T_EXPECT(cqw_poll(r, 0), CQW_ECLOSED);
	T_EXPECT(cqw_conn_fileno(r), CQW_ECLOSED);
	T_OK(cqw_conn_close(r));
	cqw_conn_free(r);
	cqw_conn_free(w);
}

static void
test_conn_recv_bytes_into_offset(void **state)
{
	uint8_t msg[20], buf[40], before[40];
	size_t needed = 12345;
	cqw_conn *a, *b;

	(void)state;
	t_pattern_fill(msg, sizeof(msg), 3);
	t_pipe(&a, &b, CQW_DUPLEX);
	T_OK(cqw_send_bytes(a, msg, sizeof(msg)));
	T_OK(cqw_send_bytes(a, msg, sizeof(msg)));
	T_OK(cqw_send_bytes(a, msg, 0));

	memset(buf, 0xee, sizeof(buf));
	memcpy(before, buf, sizeof(buf));
	T_EXPECT(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, &needed), 20);
	assert_memory_equal(buf, msg, 20);
	assert_memory_equal(buf + 20, before + 20, 20);

	/* With a byte offset (Python's 3 * itemsize): returns the length. */
	memset(buf, 0xee, sizeof(buf));
	T_EXPECT(cqw_recv_bytes_into(b, buf, sizeof(buf), 12, NULL), 20);
	assert_memory_equal(buf, before, 12);
	assert_memory_equal(buf + 12, msg, 20);
	assert_memory_equal(buf + 32, before + 32, 8);

	/* offset == cap fits an empty message; offset > cap never. */
	T_EXPECT(
	    cqw_recv_bytes_into(b, buf, sizeof(buf), sizeof(buf) + 1, NULL),
	    CQW_EINVAL);
	T_EXPECT(cqw_recv_bytes_into(b, buf, sizeof(buf), sizeof(buf), NULL),
		 0);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

/* BufferTooShort, our way: the message stays for the next receive. */
static void
test_conn_recv_bytes_into_too_short_keeps(void **state)
{
	uint8_t msg[110], buf[40], before[40];
	size_t needed = 0;
	cqw_conn *a, *b;
	size_t i;

	(void)state;
	for (i = 0; i < T_NPAIRS; i++) {
		t_pattern_fill(msg, sizeof(msg), 110);
		t_pipe(&a, &b, t_pair_flags[i]);
		T_OK(cqw_send_bytes(b, msg, sizeof(msg)));
		T_OK(cqw_send_bytes(b, msg, 30));
		t_send_str(b, "next");

		memset(buf, 0xee, sizeof(buf));
		memcpy(before, buf, sizeof(buf));
		T_EXPECT(cqw_recv_bytes_into(a, buf, sizeof(buf), 0, &needed),
			 CQW_ETOOSHORT);
		assert_int_equal(needed, 110);
		assert_memory_equal(buf, before, sizeof(buf));
		assert_true(cqw_conn_readable(a));
		T_EXPECT(cqw_poll(a, 0), 1);
		/* Asking again gets the same answer; needed may be NULL. */
		T_EXPECT(cqw_recv_bytes_into(a, buf, sizeof(buf), 5, NULL),
			 CQW_ETOOSHORT);
		t_recv_expect(a, msg, sizeof(msg));

		/* 30 bytes at offset 12 of 40 do not fit; at 10 they do. */
		needed = 0;
		T_EXPECT(cqw_recv_bytes_into(a, buf, sizeof(buf), 12, &needed),
			 CQW_ETOOSHORT);
		assert_int_equal(needed, 30);
		T_EXPECT(cqw_recv_bytes_into(a, buf, sizeof(buf), 10, NULL),
			 30);
		assert_memory_equal(buf + 10, msg, 30);
		t_recv_str(a, "next");
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

static void
test_conn_close_idempotent(void **state)
{
	struct cqw_msg m = { .buf = "x", .cap = 1, .len = 1 };
	struct cqw_wait_item item = { .fd = -1 };
	cqw_conn *a, *b;
	uint8_t buf[4];
	void *p = NULL;
	int fd = -1;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX);
	T_OK(cqw_conn_close(a));
	T_OK(cqw_conn_close(a));
	assert_true(cqw_conn_closed(a));

	T_EXPECT(cqw_send_bytes(a, "x", 1), CQW_ECLOSED);
	T_EXPECT(cqw_send_bytes_at(a, "x", 1, 0, CQW_NONE), CQW_ECLOSED);
	T_EXPECT(cqw_send_batch(a, &m, 1), CQW_ECLOSED);
	T_EXPECT(cqw_recv_bytes(a, &p, CQW_NONE), CQW_ECLOSED);
	T_EXPECT(cqw_recv_bytes_into(a, buf, sizeof(buf), 0, NULL),
		 CQW_ECLOSED);
	T_EXPECT(cqw_recv_batch(a, &m, 1, 0), CQW_ECLOSED);
	T_EXPECT(cqw_poll(a, 0), CQW_ECLOSED);
	T_EXPECT(cqw_conn_fileno(a), CQW_ECLOSED);
	T_EXPECT(cqw_conn_detach(a), CQW_ECLOSED);
	T_EXPECT(cqw_send_handle(a, 0), CQW_ECLOSED);
	T_EXPECT(cqw_recv_handle(a, &fd), CQW_ECLOSED);
	item.conn = a;
	T_EXPECT(cqw_wait(&item, 1, 0), CQW_ECLOSED);

	/* The peer sees a clean end of file. */
	T_EXPECT(cqw_recv_bytes(b, &p, CQW_NONE), CQW_EOF);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_conn_free(NULL);
}

static void
test_conn_detach(void **state)
{
	cqw_conn *a, *b, *c;
	int fd;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX);
	fd = cqw_conn_detach(a);
	assert_true(fd >= 0);
	assert_true(cqw_conn_closed(a));
	cqw_conn_free(a); /* must not close fd */
	assert_true(fcntl(fd, F_GETFD) >= 0);
	T_OK(cqw_conn_from_fd(&c, fd, CQW_DUPLEX));
	t_send_str(c, "again");
	t_recv_str(b, "again");
	cqw_conn_free(c);
	cqw_conn_free(b);
}

/* Descriptors are never switched to O_NONBLOCK (a Python peer shares). */
static void
test_conn_blocking_mode_untouched(void **state)
{
	cqw_conn *a, *b;
	size_t i;

	(void)state;
	for (i = 0; i < T_NPAIRS; i++) {
		t_pipe(&a, &b, t_pair_flags[i]);
		t_send_str(b, "x");
		t_recv_str(a, "x");
		T_EXPECT(cqw_poll(a, 0), 0);
		T_EXPECT(cqw_recv_batch(a, &(struct cqw_msg){ 0 }, 1, 0), 0);
		assert_int_equal(
		    fcntl(cqw_conn_fileno(a), F_GETFL) & O_NONBLOCK, 0);
		assert_int_equal(
		    fcntl(cqw_conn_fileno(b), F_GETFL) & O_NONBLOCK, 0);
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

struct t_slow_peer {
	cqw_conn *c;
	size_t len;
};

static int
t_child_slow_echo_len(void *arg)
{
	struct t_slow_peer *sp = arg;
	void *buf = NULL;

	t_sleep_ms(100);
	T_CHILD_CHECK(cqw_recv_bytes(sp->c, &buf, CQW_NONE) ==
		      (int64_t)sp->len);
	T_CHILD_CHECK(t_pattern_check(buf, sp->len, 5));
	cqw_free(buf);
	t_sleep_ms(100);
	T_CHILD_CHECK(cqw_send_bytes(sp->c, "late", 4) == 0);
	return 0;
}

/*
 * A descriptor that the caller made non-blocking keeps its mode, and
 * the calls still block: a full buffer or no data is not CQW_EAGAIN.
 */
static void
test_conn_nonblocking_fd_still_blocks(void **state)
{
	struct t_slow_peer sp = { .len = 4u << 20 };
	cqw_conn *a, *b;
	void *buf;
	int sv[2];
	pid_t pid;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX,
				    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
				    0, sv),
			 0);
	T_OK(cqw_conn_from_fd(&a, sv[0], CQW_DUPLEX));
	T_OK(cqw_conn_from_fd(&b, sv[1], CQW_DUPLEX));
	buf = malloc(sp.len);
	assert_non_null(buf);
	t_pattern_fill(buf, sp.len, 5);
	sp.c = b;
	pid = t_fork_child(t_child_slow_echo_len, &sp);
	T_OK(cqw_send_bytes(a, buf, sp.len));
	t_recv_str(a, "late");
	t_wait_child(pid);
	assert_true(fcntl(sv[0], F_GETFL) & O_NONBLOCK);
	free(buf);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

/* TestInvalidHandle. */
static void
test_conn_invalid_handle(void **state)
{
	cqw_conn *c = NULL;
	int p[2];

	(void)state;
	T_EXPECT(cqw_conn_from_fd(&c, -1, CQW_DUPLEX), CQW_EINVAL);
	assert_int_equal(pipe(p), 0);
	close(p[0]);
	close(p[1]);
	/* A descriptor number that is not open. */
	assert_true(cqw_conn_from_fd(&c, p[0], CQW_READABLE) < 0);
	assert_true(cqw_conn_from_fd(&c, 44977608, CQW_DUPLEX) < 0);
}

/* "The connection owns fd from now on, also on failure." */
static void
test_conn_from_fd_owns_fd_on_failure(void **state)
{
	cqw_conn *c = NULL;
	int p[2];
	int leaked_flags, leaked_out;

	(void)state;
	assert_int_equal(pipe(p), 0);
	close(p[1]);
	T_EXPECT(cqw_conn_from_fd(&c, p[0], 0), CQW_EINVAL);
	leaked_flags = fcntl(p[0], F_GETFD) >= 0;
	if (leaked_flags) {
		close(p[0]);
	}

	assert_int_equal(pipe(p), 0);
	close(p[1]);
	T_EXPECT(cqw_conn_from_fd(NULL, p[0], CQW_READABLE), CQW_EINVAL);
	leaked_out = fcntl(p[0], F_GETFD) >= 0;
	if (leaked_out) {
		close(p[0]);
	}
	assert_false(leaked_flags);
	assert_false(leaked_out);
}

/* fork(): connections made before the fork work in the child. */
static int
t_child_fork_pipes(void *arg)
{
	struct t_child_conns *cc = arg;
	cqw_conn **c = cc->use; /* [0] duplex end, [1] simplex reader */
	void *buf = NULL;
	int64_t n;
	int i;

	t_child_drop(cc);
	for (i = 0; i < 3; i++) {
		n = cqw_recv_bytes(c[0], &buf, CQW_NONE);
		T_CHILD_CHECK(n >= 0);
		T_CHILD_CHECK(cqw_send_bytes(c[0], buf, (size_t)n) == 0);
		cqw_free(buf);
	}
	/* Forward what arrives on the simplex pipe. */
	n = cqw_recv_bytes(c[1], &buf, CQW_NONE);
	T_CHILD_CHECK(n >= 0);
	T_CHILD_CHECK(cqw_send_bytes(c[0], buf, (size_t)n) == 0);
	cqw_free(buf);
	T_CHILD_CHECK(cqw_recv_bytes(c[1], &buf, CQW_NONE) == CQW_EOF);
	return 0;
}

static void
test_conn_fork_child(void **state)
{
	struct t_child_conns cc;
	cqw_conn *a, *b, *r, *w;
	pid_t pid;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX);
	t_pipe(&r, &w, 0);
	cc.use[0] = b;
	cc.use[1] = r;
	cc.drop[0] = a;
	cc.drop[1] = w;
	pid = t_fork_child(t_child_fork_pipes, &cc);
	cqw_conn_free(b);
	cqw_conn_free(r);
	t_send_str(a, "one");
	t_send_str(a, "");
	t_send_str(a, "three");
	t_recv_str(a, "one");
	t_recv_str(a, "");
	t_recv_str(a, "three");
	t_send_str(w, "via the pipe");
	cqw_conn_free(w);
	t_recv_str(a, "via the pipe");
	t_wait_child(pid);
	T_EXPECT(cqw_recv_bytes(a, &(void *){ NULL }, CQW_NONE), CQW_EOF);
	cqw_conn_free(a);
}

/* ------------------------------------------------------------------
 * Frames on the wire: large-frame marker, negative lengths, EOF rules
 */

static void
test_frame_large_marker_received(void **state)
{
	static const uint8_t wire[] = {
		0xff, 0xff, 0xff, 0xff, 0,   0,	  0,	0,    0,    0,	  0,
		5,    'h',  'e',  'l',	'l', 'o', 0xff, 0xff, 0xff, 0xff, 0,
		0,    0,    0,	  0,	0,   0,	  2,	'h',  'i'
	};
	uint8_t buf[8];
	cqw_conn *a, *b;
	size_t i;

	(void)state;
	for (i = 0; i < T_NPAIRS; i++) {
		t_pipe(&a, &b, t_pair_flags[i]);
		t_raw(b, wire, sizeof(wire));
		t_send_str(b, "after");
		t_recv_str(a, "hello");
		T_EXPECT(cqw_recv_bytes_into(a, buf, sizeof(buf), 0, NULL), 2);
		assert_memory_equal(buf, "hi", 2);
		t_recv_str(a, "after");
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

/* ff ff ff fe: an empty message, and the next frame reads normally. */
static void
test_frame_negative_length_is_empty(void **state)
{
	static const uint8_t wire[] = { 0xff, 0xff, 0xff, 0xfe, 0,    0,  0,
					3,    'a',  'b',  'c',	0x80, 0,  0,
					0,    0,    0,	  0,	1,    'z' };
	cqw_conn *a, *b;
	size_t i;

	(void)state;
	for (i = 0; i < T_NPAIRS; i++) {
		t_pipe(&a, &b, t_pair_flags[i]);
		t_raw(b, wire, sizeof(wire));
		t_recv_expect(a, "", 0);
		t_recv_str(a, "abc");
		t_recv_expect(a, "", 0);
		t_recv_str(a, "z");
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

/*
 * Put wire[0..len) on a fresh pair, close the writer and expect the
 * first receive to return want (after `frames` whole messages).
 */
static void
t_eof_case(const uint8_t *wire, size_t len, int frames, int want)
{
	uint8_t buf[64];
	cqw_conn *a, *b;
	void *p = NULL;
	size_t i;
	int k, into;

	for (i = 0; i < T_NPAIRS; i++) {
		for (into = 0; into < 2; into++) {
			t_pipe(&a, &b, t_pair_flags[i]);
			t_raw(b, wire, len);
			cqw_conn_free(b);
			for (k = 0; k < frames; k++) {
				assert_true(cqw_recv_bytes_into(a, buf,
								sizeof(buf), 0,
								NULL) >= 0);
			}
			if (into) {
				T_EXPECT(cqw_recv_bytes_into(
					     a, buf, sizeof(buf), 0, NULL),
					 want);
			} else {
				T_EXPECT(cqw_recv_bytes(a, &p, CQW_NONE), want);
			}
			cqw_conn_free(a);
		}
	}
}

static void
test_frame_eof_at_boundary(void **state)
{
	static const uint8_t wire[] = { 0, 0, 0, 2, 'h', 'i' };

	(void)state;
	t_eof_case(wire, 0, 0, CQW_EOF);
	t_eof_case(wire, sizeof(wire), 1, CQW_EOF);
}

static void
test_frame_eof_mid_header(void **state)
{
	static const uint8_t wire[] = { 0, 0, 0, 2, 'h', 'i', 0, 0 };
	static const uint8_t mark[] = { 0xff, 0xff, 0xff, 0xff, 0, 0, 0 };

	(void)state;
	t_eof_case(wire, 1, 0, CQW_ETRUNC);
	t_eof_case(wire, 3, 0, CQW_ETRUNC);
	t_eof_case(wire, sizeof(wire), 1, CQW_ETRUNC);
	/* Inside the 8-byte extension. */
	t_eof_case(mark, sizeof(mark), 0, CQW_ETRUNC);
}

/* Our choice (Python says EOFError here): a cut frame is a cut frame. */
static void
test_frame_eof_after_header(void **state)
{
	static const uint8_t wire[] = { 0, 0, 0, 5 };
	static const uint8_t mark[] = { 0xff, 0xff, 0xff, 0xff };
	static const uint8_t ext[] = { 0xff, 0xff, 0xff, 0xff, 0, 0,
				       0,    0,	   0,	 0,    0, 5 };

	(void)state;
	t_eof_case(wire, sizeof(wire), 0, CQW_ETRUNC);
	t_eof_case(mark, sizeof(mark), 0, CQW_ETRUNC);
	t_eof_case(ext, sizeof(ext), 0, CQW_ETRUNC);
}

static void
test_frame_eof_mid_payload(void **state)
{
	static const uint8_t wire[] = { 0, 0, 0, 5, 'h', 'e' };
	static const uint8_t two[] = { 0, 0, 0, 1, 'a', 0, 0, 0, 5, 'h' };

	(void)state;
	t_eof_case(wire, sizeof(wire), 0, CQW_ETRUNC);
	t_eof_case(two, sizeof(two), 1, CQW_ETRUNC);
}

/* ------------------------------------------------------------------
 * Handles (test_fd_transfer, test_large_fd_transfer, missing fd)
 */

struct t_fd_child {
	cqw_conn *c;
	const char *text;
};

static int
t_child_write_received_fd(void *arg)
{
	struct t_fd_child *f = arg;
	int fd = -1;

	T_CHILD_CHECK(cqw_recv_handle(f->c, &fd) == 0);
	T_CHILD_CHECK(fd >= 0);
	T_CHILD_CHECK(t_write_all(fd, f->text, strlen(f->text)) == 0);
	close(fd);
	T_CHILD_CHECK(cqw_send_bytes(f->c, "done", 4) == 0);
	return 0;
}

/* Send fd (or its copy at number at, if at >= 0) to a child that writes. */
static void
t_fd_transfer(int at)
{
	struct t_fd_child f = { .text = "written by the child" };
	char path[128], got[64];
	cqw_conn *a, *b;
	int fd, sent;
	ssize_t n;
	pid_t pid;

	t_unique_name(path, sizeof(path), "/tmp/", "fd");
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	sent = fd;
	if (at >= 0) {
		assert_true(fcntl(at, F_GETFD) < 0); /* must be free */
		assert_int_equal(dup2(fd, at), at);
		sent = at;
	}
	t_pipe(&a, &b, CQW_DUPLEX);
	f.c = b;
	pid = t_fork_child(t_child_write_received_fd, &f);
	cqw_conn_free(b);
	T_OK(cqw_send_handle(a, sent));
	if (at >= 0) {
		close(at);
	}
	t_recv_str(a, "done");
	t_wait_child(pid);
	n = pread(fd, got, sizeof(got), 0);
	assert_int_equal(n, strlen(f.text));
	assert_memory_equal(got, f.text, (size_t)n);
	close(fd);
	unlink(path);
	cqw_conn_free(a);
}

static void
test_handle_fd_transfer(void **state)
{
	(void)state;
	t_fd_transfer(-1);
}

static void
test_handle_large_fd_transfer(void **state)
{
	(void)state;
	t_fd_transfer(300);
}

/* Handles after frames: frame-exact reads leave the handle's byte. */
static void
test_handle_after_frames(void **state)
{
	struct stat s1, s2;
	cqw_conn *a, *b;
	int p[2], fd = -1;
	char byte = 0;

	(void)state;
	assert_int_equal(pipe(p), 0);
	t_pipe(&a, &b, CQW_DUPLEX);
	t_send_str(a, "first");
	T_OK(cqw_send_handle(a, p[1]));
	t_send_str(a, "after");
	t_recv_str(b, "first");
	T_OK(cqw_recv_handle(b, &fd));
	assert_true(fd >= 0 && fd != p[1]);
	assert_int_equal(fstat(fd, &s1), 0);
	assert_int_equal(fstat(p[1], &s2), 0);
	assert_true(s1.st_ino == s2.st_ino && s1.st_dev == s2.st_dev);
	t_recv_str(b, "after");
	/* The new descriptor is the caller's, and close-on-exec is fine. */
	assert_int_equal(write(fd, "!", 1), 1);
	close(fd);
	close(p[1]);
	assert_int_equal(read(p[0], &byte, 1), 1);
	assert_int_equal(byte, '!');
	close(p[0]);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

/* test_missing_fd_transfer: a plain byte, no descriptor attached. */
static void
test_handle_missing_fd(void **state)
{
	cqw_conn *a, *b;
	int fd = -1, r;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX);
	t_raw(a, "\x01", 1);
	r = cqw_recv_handle(b, &fd);
	if (r != CQW_ENOHANDLE && r != CQW_EPROTO) {
		fail_msg("recv_handle: %s, want ENOHANDLE or EPROTO",
			 cqw_err_name(r));
	}
	assert_int_equal(fd, -1);
	/* The peer gone: end of file. */
	cqw_conn_free(a);
	T_EXPECT(cqw_recv_handle(b, &fd), CQW_EOF);
	cqw_conn_free(b);
}

/* ------------------------------------------------------------------
 * Listener / Client
 */

/* cqw_listen(address) must fail with want (and leave nothing open). */
static void
t_listen_fails(const char *address, int want)
{
	cqw_listener *l = NULL;
	int r = cqw_listen(&l, address, NULL, 1);

	if (r == 0) {
		cqw_listener_free(l);
	}
	T_EXPECT(r, want);
}

/* 1 if a TCP listener on IPv4 loopback can be made here. */
static int
t_have_tcp(void)
{
	cqw_listener *l = NULL;

	if (cqw_listen(&l, "tcp:127.0.0.1:0", NULL, 1) != 0) {
		return 0;
	}
	cqw_listener_free(l);
	return 1;
}

static void
t_multiple_bind(const char *address)
{
	cqw_listener *l1 = NULL;
	cqw_conn *c, *s;
	const char *bound;
	int r;

	r = cqw_listen(&l1, address, NULL, 0);
	if (r != 0) {
		fail_msg("listen(%s): %s", address, cqw_err_name(r));
	}
	bound = cqw_listener_address(l1);
	assert_non_null(bound);
	assert_true(cqw_listener_fileno(l1) >= 0);
	t_listen_fails(bound, CQW_EADDRINUSE);
	/* The failed attempt left the first listener working. */
	T_OK(cqw_connect(&c, bound, NULL));
	T_OK(cqw_accept(l1, &s, 5000));
	t_send_str(c, "still there");
	t_recv_str(s, "still there");
	cqw_conn_free(c);
	cqw_conn_free(s);
	T_OK(cqw_listener_close(l1));
	T_OK(cqw_listener_close(l1));
	cqw_listener_free(l1);
}

static void
test_listener_multiple_bind_unix(void **state)
{
	cqw_listener *l;
	char addr[128];
	const char *path;

	(void)state;
	path = t_unique_name(addr, sizeof(addr), "unix:/tmp/", "sock") + 5;
	t_multiple_bind(addr);
	/* close() unlinked the path: binding again works. */
	assert_true(access(path, F_OK) != 0 && errno == ENOENT);
	T_OK(cqw_listen(&l, addr, NULL, 1));
	assert_string_equal(cqw_listener_address(l), addr);
	/* A bare path names the same socket. */
	t_listen_fails(path, CQW_EADDRINUSE);
	cqw_listener_free(l);
	assert_true(access(path, F_OK) != 0);
}

static void
test_listener_multiple_bind_abstract(void **state)
{
	char addr[128];

	(void)state;
	t_multiple_bind(t_unique_name(addr, sizeof(addr), "unix:@", "abs"));
}

static void
test_listener_multiple_bind_tcp(void **state)
{
	cqw_listener *l;

	(void)state;
	if (cqw_listen(&l, "tcp:127.0.0.1:0", NULL, 1) != 0) {
		T_SKIP("no IPv4 loopback here");
	}
	assert_true(strncmp(cqw_listener_address(l), "tcp:127.0.0.1:", 14) ==
		    0);
	assert_string_not_equal(cqw_listener_address(l), "tcp:127.0.0.1:0");
	cqw_listener_free(l);
	t_multiple_bind("tcp:127.0.0.1:0");
}

/* test_listener_client + test_issue16955 for one address. */
static void
t_listener_client(const char *address)
{
	cqw_listener *l;
	cqw_conn *c, *s;

	T_OK(cqw_listen(&l, address, NULL, 1));
	/* The backlog completes the connect before accept(). */
	T_OK(cqw_connect(&c, cqw_listener_address(l), NULL));
	T_OK(cqw_accept(l, &s, 5000));
	assert_true(cqw_conn_readable(s) && cqw_conn_writable(s));
	T_EXPECT(cqw_poll(c, 0), 0);
	t_send_str(s, "hello");
	T_EXPECT(cqw_poll(c, 1000), 1);
	t_recv_str(c, "hello");
	t_send_str(c, "world");
	t_recv_str(s, "world");
	cqw_conn_free(c);
	T_EXPECT(cqw_recv_bytes(s, &(void *){ NULL }, CQW_NONE), CQW_EOF);
	cqw_conn_free(s);
	cqw_listener_free(l);
}

static void
test_listener_client_unix(void **state)
{
	char addr[128];

	(void)state;
	t_listener_client(t_unique_name(addr, sizeof(addr), "unix:/tmp/", "s"));
}

static void
test_listener_client_abstract(void **state)
{
	char addr[128];
	cqw_listener *l;

	(void)state;
	t_unique_name(addr, sizeof(addr), "unix:@", "abstract");
	/* The bound address comes back as given. */
	T_OK(cqw_listen(&l, addr, NULL, 1));
	assert_string_equal(cqw_listener_address(l), addr);
	cqw_listener_free(l);
	t_listener_client(addr);
}

static void
test_listener_client_tcp(void **state)
{
	(void)state;
	if (!t_have_tcp()) {
		T_SKIP("no IPv4 loopback here");
	}
	t_listener_client("tcp:127.0.0.1:0");
}

/* A unix path that exists (any file) is in use, as for Python. */
static void
test_listener_existing_file(void **state)
{
	char addr[128];
	const char *path;
	int fd;

	(void)state;
	path = t_unique_name(addr, sizeof(addr), "unix:/tmp/", "file") + 5;
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	t_listen_fails(addr, CQW_EADDRINUSE);
	/* And the failed listener did not remove what was there. */
	assert_int_equal(access(path, F_OK), 0);
	unlink(path);
}

static void
test_listener_client_tcp6(void **state)
{
	cqw_listener *l = NULL;

	(void)state;
	if (cqw_listen(&l, "tcp:[::1]:0", NULL, 1) != 0) {
		T_SKIP("no IPv6 loopback here");
	}
	assert_true(strncmp(cqw_listener_address(l), "tcp:[::1]:", 10) == 0);
	cqw_listener_free(l);
	t_listener_client("tcp:[::1]:0");
}

static int
t_child_connect_send_exit(void *arg)
{
	cqw_conn *c;

	T_CHILD_CHECK(cqw_connect(&c, arg, NULL) == 0);
	T_CHILD_CHECK(cqw_send_bytes(c, "hello", 5) == 0);
	cqw_conn_free(c);
	return 0;
}

/* Issue 14725: the client is gone before accept(); its data is not. */
static void
test_listener_issue14725(void **state)
{
	char addr[128];
	cqw_listener *l;
	cqw_conn *s;
	pid_t pid;

	(void)state;
	t_unique_name(addr, sizeof(addr), "unix:/tmp/", "14725");
	T_OK(cqw_listen(&l, addr, NULL, 1));
	pid = t_fork_child(t_child_connect_send_exit, addr);
	t_wait_child(pid);
	T_OK(cqw_accept(l, &s, 5000));
	t_recv_str(s, "hello");
	T_EXPECT(cqw_recv_bytes(s, &(void *){ NULL }, CQW_NONE), CQW_EOF);
	cqw_conn_free(s);
	cqw_listener_free(l);
}

static void
test_listener_accept_timeout_and_close(void **state)
{
	char addr[128];
	cqw_listener *l;
	cqw_conn *s = NULL;
	int64_t t0;

	(void)state;
	T_OK(cqw_listen(&l, t_unique_name(addr, sizeof(addr), "unix:@", "to"),
			NULL, 1));
	T_EXPECT(cqw_accept(l, &s, 0), CQW_ETIMEDOUT);
	t0 = t_now_ms();
	T_EXPECT(cqw_accept(l, &s, 150), CQW_ETIMEDOUT);
	assert_true(t_now_ms() - t0 >= 100);
	assert_null(s);
	T_OK(cqw_listener_close(l));
	T_EXPECT(cqw_accept(l, &s, 0), CQW_ECLOSED);
	T_EXPECT(cqw_listener_fileno(l), CQW_ECLOSED);
	cqw_listener_free(l);
	/* Nobody listens there any more. */
	assert_true(cqw_connect(&s, addr, NULL) < 0);
}

/* ------------------------------------------------------------------
 * poll() (_TestPoll)
 */

static int
t_child_poll_only(void *arg)
{
	T_CHILD_CHECK(cqw_poll(arg, 5000) == 1);
	return 0;
}

/* test_boundaries: a child that only polls consumes nothing. */
static void
test_poll_boundaries(void **state)
{
	static const uint8_t frame[] = { 0,   0,   0,	10,  'a', 'b', 'c',
					 'd', 'e', 'f', 'g', 'h', 'i', 'j' };
	cqw_conn *a, *b;
	pid_t pid;
	int i;

	(void)state;
	for (i = 0; i < 2; i++) {
		t_pipe(&a, &b, i ? 0 : CQW_DUPLEX);
		t_raw(b, frame, 7);
		pid = t_fork_child(t_child_poll_only, a);
		t_wait_child(pid);
		assert_int_equal(t_unread(a), 7);
		t_raw(b, frame + 7, sizeof(frame) - 7);
		t_recv_str(a, "abcdefghij");
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

/* A partial header makes poll() true; recv then waits for the rest. */
static void
test_poll_partial_header(void **state)
{
	cqw_conn *a, *b;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX);
	t_raw(b, "\0\0", 2);
	T_EXPECT(cqw_poll(a, 0), 1);
	T_EXPECT(cqw_poll(a, 0), 1);
	t_raw(b, "\0\1z", 3);
	t_recv_str(a, "z");
	T_EXPECT(cqw_poll(a, 0), 0);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

static void
test_poll_dont_merge(void **state)
{
	cqw_conn *a, *b;
	size_t i;

	(void)state;
	for (i = 0; i < T_NPAIRS; i++) {
		t_pipe(&a, &b, t_pair_flags[i]);
		t_send_str(b, "a");
		t_send_str(b, "b");
		t_send_str(b, "cd");
		T_EXPECT(cqw_poll(a, 0), 1);
		t_recv_str(a, "a");
		T_EXPECT(cqw_poll(a, 0), 1);
		t_recv_str(a, "b");
		T_EXPECT(cqw_poll(a, 0), 1);
		t_recv_str(a, "cd");
		T_EXPECT(cqw_poll(a, 0), 0);
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

static void
test_poll_empty_string(void **state)
{
	cqw_conn *a, *b;
	size_t i;

	(void)state;
	for (i = 0; i < T_NPAIRS; i++) {
		t_pipe(&a, &b, t_pair_flags[i]);
		T_EXPECT(cqw_poll(a, 0), 0);
		t_send_str(b, "");
		T_EXPECT(cqw_poll(a, 0), 1);
		T_EXPECT(cqw_poll(a, 0), 1);
		t_recv_expect(a, "", 0);
		T_EXPECT(cqw_poll(a, 0), 0);
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

/* test_strings: a sequence with empty strings, paced by poll. */
static void
test_poll_strings(void **state)
{
	static const char *const strs[] = { "hello", "", "a",  "b", "cd",
					    "",	     "", "ef", "",  "" };
	cqw_conn *a, *b;
	size_t i;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX);
	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		t_send_str(b, strs[i]);
	}
	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		T_EXPECT(cqw_poll(a, 1000), 1);
		t_recv_str(a, strs[i]);
	}
	T_EXPECT(cqw_poll(a, 10), 0);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

/* ------------------------------------------------------------------
 * wait() (TestWait)
 */

static void
test_wait_timeout(void **state)
{
	struct cqw_wait_item it[2];
	cqw_conn *r1, *w1, *r2, *w2;
	int64_t t0;

	(void)state;
	t_pipe(&r1, &w1, 0);
	t_pipe(&r2, &w2, 0);
	memset(it, 0, sizeof(it));
	it[0].conn = r1;
	it[1].conn = r2;
	it[0].ready = it[1].ready = 7;
	t0 = t_now_ms();
	T_EXPECT(cqw_wait(it, 2, 200), 0);
	assert_true(t_now_ms() - t0 >= 150);
	assert_int_equal(it[0].ready, 0);
	assert_int_equal(it[1].ready, 0);
	t_send_str(w1, "x");
	T_EXPECT(cqw_wait(it, 2, 200), 1);
	assert_int_equal(it[0].ready, 1);
	assert_int_equal(it[1].ready, 0);
	cqw_conn_free(r1);
	cqw_conn_free(w1);
	cqw_conn_free(r2);
	cqw_conn_free(w2);
}

/* Python's wait(timeout=-1) is our 0: it returns at once. */
static void
test_wait_zero_timeout(void **state)
{
	struct cqw_wait_item it = { 0 };
	cqw_conn *r, *w;

	(void)state;
	t_pipe(&r, &w, 0);
	it.conn = r;
	T_EXPECT(cqw_wait(&it, 1, 0), 0);
	assert_int_equal(it.ready, 0);
	t_send_str(w, "");
	T_EXPECT(cqw_wait(&it, 1, 0), 1);
	assert_int_equal(it.ready, 1);
	cqw_conn_free(r);
	cqw_conn_free(w);
}

/* test_wait_integer: a connection and a raw descriptor in one call. */
static void
test_wait_conn_and_raw_fd(void **state)
{
	struct cqw_wait_item it[2];
	cqw_conn *r, *w;
	char byte;
	int p[2];

	(void)state;
	t_pipe(&r, &w, 0);
	assert_int_equal(pipe(p), 0);
	memset(it, 0, sizeof(it));
	it[0].conn = r;
	it[1].fd = p[0];
	T_EXPECT(cqw_wait(it, 2, 0), 0);
	assert_int_equal(write(p[1], "x", 1), 1);
	T_EXPECT(cqw_wait(it, 2, 1000), 1);
	assert_int_equal(it[0].ready, 0);
	assert_int_equal(it[1].ready, 1);
	t_send_str(w, "m");
	T_EXPECT(cqw_wait(it, 2, 1000), 2);
	assert_int_equal(it[0].ready, 1);
	assert_int_equal(it[1].ready, 1);
	/* A raw descriptor at EOF is ready too (a process sentinel). */
	assert_int_equal(read(p[0], &byte, 1), 1);
	close(p[1]);
	t_recv_str(r, "m");
	T_EXPECT(cqw_wait(it, 2, 1000), 1);
	assert_int_equal(it[0].ready, 0);
	assert_int_equal(it[1].ready, 1);
	close(p[0]);
	cqw_conn_free(r);
	cqw_conn_free(w);
}

static void
test_wait_returns_every_ready(void **state)
{
	struct cqw_wait_item it[3];
	cqw_conn *a[3], *b[3];
	int i;

	(void)state;
	memset(it, 0, sizeof(it));
	for (i = 0; i < 3; i++) {
		t_pipe(&a[i], &b[i], CQW_DUPLEX);
		it[i].conn = a[i];
	}
	t_send_str(b[0], "0");
	t_send_str(b[2], "2");
	T_EXPECT(cqw_wait(it, 3, 1000), 2);
	assert_int_equal(it[0].ready, 1);
	assert_int_equal(it[1].ready, 0);
	assert_int_equal(it[2].ready, 1);
	/* The peer of the middle one closes: EOF is readiness. */
	cqw_conn_close(b[1]);
	T_EXPECT(cqw_wait(it, 3, 1000), 3);
	for (i = 0; i < 3; i++) {
		cqw_conn_free(a[i]);
		cqw_conn_free(b[i]);
	}
}

static void
test_wait_bad_items(void **state)
{
	struct cqw_wait_item it[2];
	cqw_conn *r, *w;
	int p[2];

	(void)state;
	t_pipe(&r, &w, 0);
	assert_int_equal(pipe(p), 0);
	close(p[0]);
	close(p[1]);
	memset(it, 0, sizeof(it));
	it[0].conn = r;
	it[1].fd = p[0]; /* not open */
	T_EXPECT(cqw_wait(it, 2, 0), CQW_EBADF);
	it[1].conn = w; /* a write-only end is watched, not refused */
	T_EXPECT(cqw_wait(it, 2, 0), 0);
	cqw_conn_close(r);
	T_EXPECT(cqw_wait(it, 1, 0), CQW_ECLOSED);
	cqw_conn_free(r);
	cqw_conn_free(w);
}

struct t_writer {
	cqw_conn *w;
	int id;
};

static int
t_child_write_ten(void *arg)
{
	struct t_writer *tw = arg;
	char msg[32];
	int j;

	for (j = 0; j < 10; j++) {
		snprintf(msg, sizeof(msg), "%d:%d", tw->id, j);
		T_CHILD_CHECK(cqw_send_bytes(tw->w, msg, strlen(msg)) == 0);
		if (j % 3 == tw->id % 3) {
			t_sleep_ms(1);
		}
	}
	return 0;
}

/* test_wait: four simplex readers until all reach EOF; 40 messages. */
static void
test_wait_four_readers(void **state)
{
	struct cqw_wait_item it[4];
	struct t_writer tw;
	cqw_conn *r[4], *w[4];
	int next[4] = { 0 }, open_ids[4];
	int i, k, n, nopen = 4, total = 0;
	pid_t pids[4];

	(void)state;
	for (i = 0; i < 4; i++) {
		t_pipe(&r[i], &w[i], 0);
	}
	for (i = 0; i < 4; i++) {
		tw.w = w[i];
		tw.id = i;
		pids[i] = t_fork_child(t_child_write_ten, &tw);
	}
	for (i = 0; i < 4; i++) {
		cqw_conn_free(w[i]);
		open_ids[i] = i;
	}
	while (nopen > 0) {
		memset(it, 0, sizeof(it));
		for (k = 0; k < nopen; k++) {
			it[k].conn = r[open_ids[k]];
		}
		n = cqw_wait(it, (size_t)nopen, 5000);
		assert_true(n > 0);
		for (k = nopen - 1; k >= 0; k--) {
			int id = open_ids[k];
			char msg[32], want[32];
			int64_t len;

			if (!it[k].ready) {
				continue;
			}
			len = cqw_recv_bytes_into(r[id], msg, sizeof(msg) - 1,
						  0, NULL);
			if (len == CQW_EOF) {
				cqw_conn_free(r[id]);
				open_ids[k] = open_ids[--nopen];
				continue;
			}
			assert_true(len > 0);
			msg[len] = '\0';
			snprintf(want, sizeof(want), "%d:%d", id, next[id]++);
			assert_string_equal(msg, want);
			total++;
		}
	}
	assert_int_equal(total, 40);
	for (i = 0; i < 4; i++) {
		assert_int_equal(next[i], 10);
		t_wait_child(pids[i]);
	}
}

/* ------------------------------------------------------------------
 * Signals (TestIgnoreEINTR, _TestPollEintr): EINTR is retried inside.
 */

struct t_signaller {
	pid_t parent;
	cqw_conn *c;
	const char *address;
	size_t len; /* for the slow reader */
};

static void
t_signal_parent_twice(pid_t parent)
{
	t_sleep_ms(60);
	kill(parent, SIGUSR1);
	t_sleep_ms(60);
	kill(parent, SIGUSR1);
	t_sleep_ms(30);
}

static int
t_child_signal_then_send(void *arg)
{
	struct t_signaller *s = arg;

	t_signal_parent_twice(s->parent);
	T_CHILD_CHECK(cqw_send_bytes(s->c, "ok", 2) == 0);
	return 0;
}

static int
t_child_signal_then_send_twice(void *arg)
{
	struct t_signaller *s = arg;

	t_signal_parent_twice(s->parent);
	T_CHILD_CHECK(cqw_send_bytes(s->c, "ok", 2) == 0);
	t_signal_parent_twice(s->parent);
	T_CHILD_CHECK(cqw_send_bytes(s->c, "again", 5) == 0);
	return 0;
}

/*
 * A signal while recv waits. The second receive follows one that had to
 * wait, which may take another waiting path: both must retry EINTR.
 */
static void
test_eintr_recv(void **state)
{
	struct t_signaller s = { .parent = getpid() };
	struct sigaction old;
	cqw_conn *a, *b;
	pid_t pid;
	size_t i;

	(void)state;
	for (i = 0; i < T_NPAIRS; i++) {
		t_sig_install(SIGUSR1, &old);
		t_pipe(&a, &b, t_pair_flags[i]);
		s.c = b;
		pid = t_fork_child(t_child_signal_then_send_twice, &s);
		cqw_conn_free(b);
		t_recv_str(a, "ok");
		t_recv_str(a, "again");
		t_wait_child(pid);
		t_sig_restore(SIGUSR1, &old);
		assert_true(t_sig_count >= 2);
		cqw_conn_free(a);
	}
}

static void
test_eintr_poll_and_wait(void **state)
{
	struct t_signaller s = { .parent = getpid() };
	struct cqw_wait_item it = { 0 };
	struct sigaction old;
	cqw_conn *a, *b;
	pid_t pid;

	(void)state;
	t_sig_install(SIGUSR1, &old);
	t_pipe(&a, &b, CQW_DUPLEX);
	s.c = b;
	pid = t_fork_child(t_child_signal_then_send, &s);
	T_EXPECT(cqw_poll(a, -1), 1);
	t_wait_child(pid);
	t_recv_str(a, "ok");

	it.conn = a;
	pid = t_fork_child(t_child_signal_then_send, &s);
	T_EXPECT(cqw_wait(&it, 1, -1), 1);
	t_wait_child(pid);
	t_recv_str(a, "ok");
	t_sig_restore(SIGUSR1, &old);
	assert_true(t_sig_count >= 2);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

static int
t_child_signal_then_read(void *arg)
{
	struct t_signaller *s = arg;
	void *buf = NULL;
	int64_t n;

	t_signal_parent_twice(s->parent);
	n = cqw_recv_bytes(s->c, &buf, CQW_NONE);
	T_CHILD_CHECK(n == (int64_t)s->len);
	T_CHILD_CHECK(t_pattern_check(buf, s->len, 9));
	cqw_free(buf);
	return 0;
}

/* A send too big for the kernel's buffer, interrupted while blocked. */
static void
test_eintr_send(void **state)
{
	struct t_signaller s = { .parent = getpid(), .len = 8u << 20 };
	struct sigaction old;
	cqw_conn *a, *b;
	void *buf;
	pid_t pid;
	int i;

	(void)state;
	buf = malloc(s.len);
	assert_non_null(buf);
	t_pattern_fill(buf, s.len, 9);
	for (i = 0; i < 2; i++) {
		t_sig_install(SIGUSR1, &old);
		t_pipe(&a, &b, i ? 0 : CQW_DUPLEX);
		s.c = a; /* simplex: a reads, b writes */
		pid = t_fork_child(t_child_signal_then_read, &s);
		T_OK(cqw_send_bytes(b, buf, s.len));
		t_wait_child(pid);
		t_sig_restore(SIGUSR1, &old);
		assert_true(t_sig_count >= 1);
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
	free(buf);
}

static int
t_child_signal_then_connect(void *arg)
{
	struct t_signaller *s = arg;

	t_signal_parent_twice(s->parent);
	return t_child_connect_send_exit((void *)s->address);
}

static void
test_eintr_accept(void **state)
{
	struct t_signaller s = { .parent = getpid() };
	struct sigaction old;
	char addr[128];
	cqw_listener *l;
	cqw_conn *c;
	pid_t pid;

	(void)state;
	s.address = t_unique_name(addr, sizeof(addr), "unix:@", "eintr");
	T_OK(cqw_listen(&l, addr, NULL, 1));
	t_sig_install(SIGUSR1, &old);
	pid = t_fork_child(t_child_signal_then_connect, &s);
	T_OK(cqw_accept(l, &c, -1));
	t_recv_str(c, "hello");
	t_wait_child(pid);
	t_sig_restore(SIGUSR1, &old);
	assert_true(t_sig_count >= 1);
	cqw_conn_free(c);
	cqw_listener_free(l);
}

/* ------------------------------------------------------------------
 * Batches
 */

#define T_BATCH_N 1000

struct t_batch_sender {
	cqw_conn *c;
	int result;
};

/* Message i: its sequence number, then i % 23 bytes of pattern i. */
static void *
t_thread_send_batch(void *arg)
{
	struct t_batch_sender *s = arg;
	static uint8_t bufs[T_BATCH_N][4 + 23];
	struct cqw_msg *m = calloc(T_BATCH_N, sizeof(*m));
	uint32_t i;

	if (m == NULL) {
		s->result = CQW_ENOMEM;
		return NULL;
	}
	for (i = 0; i < T_BATCH_N; i++) {
		memcpy(bufs[i], &i, 4);
		t_pattern_fill(bufs[i] + 4, i % 23, i);
		m[i].buf = bufs[i];
		m[i].len = 4 + i % 23;
	}
	s->result = cqw_send_batch(s->c, m, T_BATCH_N);
	free(m);
	return NULL;
}

static void
test_batch_thousand_in_order(void **state)
{
	struct t_batch_sender s;
	struct cqw_msg m[64];
	uint8_t bufs[64][32];
	cqw_conn *a, *b;
	pthread_t th;
	uint32_t next, seq;
	size_t i;
	int k, n;

	(void)state;
	for (i = 0; i < T_NPAIRS; i++) {
		t_pipe(&a, &b, t_pair_flags[i]);
		s.c = b;
		s.result = 1;
		assert_int_equal(
		    pthread_create(&th, NULL, t_thread_send_batch, &s), 0);
		next = 0;
		while (next < T_BATCH_N) {
			for (k = 0; k < 64; k++) {
				m[k].buf = bufs[k];
				m[k].cap = sizeof(bufs[k]);
				m[k].len = 0;
			}
			n = cqw_recv_batch(a, m, 64, 5000);
			assert_true(n > 0 && n <= 64);
			for (k = 0; k < n; k++, next++) {
				memcpy(&seq, bufs[k], 4);
				assert_int_equal(seq, next);
				assert_int_equal(m[k].len, 4 + next % 23);
				assert_true(t_pattern_check(bufs[k] + 4,
							    next % 23, next));
			}
		}
		assert_int_equal(pthread_join(th, NULL), 0);
		T_OK(s.result);
		T_EXPECT(cqw_poll(a, 0), 0);
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

static void
test_batch_recv_timeout(void **state)
{
	struct cqw_msg m[2];
	uint8_t buf[2][8];
	cqw_conn *a, *b;
	int64_t t0;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX);
	m[0].buf = buf[0];
	m[1].buf = buf[1];
	m[0].cap = m[1].cap = 8;
	T_EXPECT(cqw_recv_batch(a, m, 2, 0), 0);
	t0 = t_now_ms();
	T_EXPECT(cqw_recv_batch(a, m, 2, 150), 0);
	assert_true(t_now_ms() - t0 >= 100);
	t_send_str(b, "x");
	T_EXPECT(cqw_recv_batch(a, m, 2, 150), 1);
	assert_int_equal(m[0].len, 1);
	assert_memory_equal(buf[0], "x", 1);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

/* Messages before end of file come first; the EOF comes next call. */
static void
test_batch_eof_after_messages(void **state)
{
	struct cqw_msg m[4];
	uint8_t bufs[4][8];
	cqw_conn *a, *b;
	size_t i;
	int k;

	(void)state;
	for (i = 0; i < T_NPAIRS; i++) {
		t_pipe(&a, &b, t_pair_flags[i]);
		for (k = 0; k < 4; k++) {
			m[k].buf = bufs[k];
			m[k].cap = sizeof(bufs[k]);
		}
		t_send_str(b, "a");
		t_send_str(b, "bc");
		cqw_conn_free(b);
		T_EXPECT(cqw_recv_batch(a, m, 4, 1000), 2);
		assert_int_equal(m[0].len, 1);
		assert_int_equal(m[1].len, 2);
		assert_memory_equal(bufs[1], "bc", 2);
		T_EXPECT(cqw_recv_batch(a, m, 4, 1000), CQW_EOF);
		cqw_conn_free(a);
	}
}

static void
test_batch_first_too_short(void **state)
{
	uint8_t msg[100], small[10], big[128];
	struct cqw_msg m[2];
	cqw_conn *a, *b;

	(void)state;
	t_pattern_fill(msg, sizeof(msg), 100);
	t_pipe(&a, &b, CQW_DUPLEX);
	T_OK(cqw_send_bytes(b, msg, sizeof(msg)));
	m[0].buf = small;
	m[0].cap = sizeof(small);
	m[0].len = 0;
	m[1] = m[0];
	T_EXPECT(cqw_recv_batch(a, m, 2, 1000), CQW_ETOOSHORT);
	assert_int_equal(m[0].len, 100);
	/* Kept: a big enough buffer gets it. */
	m[0].buf = big;
	m[0].cap = sizeof(big);
	T_EXPECT(cqw_recv_batch(a, m, 1, 1000), 1);
	assert_int_equal(m[0].len, 100);
	assert_memory_equal(big, msg, sizeof(msg));
	cqw_conn_free(a);
	cqw_conn_free(b);
}

/* A later message that does not fit ends the batch and is kept. */
static void
test_batch_later_too_short_kept(void **state)
{
	uint8_t msg[100], bufs[3][10];
	struct cqw_msg m[3];
	cqw_conn *a, *b;
	int k;

	(void)state;
	t_pattern_fill(msg, sizeof(msg), 7);
	t_pipe(&a, &b, CQW_DUPLEX);
	t_send_str(b, "abcde");
	T_OK(cqw_send_bytes(b, msg, sizeof(msg)));
	t_send_str(b, "z");
	for (k = 0; k < 3; k++) {
		m[k].buf = bufs[k];
		m[k].cap = sizeof(bufs[k]);
	}
	T_EXPECT(cqw_recv_batch(a, m, 3, 1000), 1);
	assert_int_equal(m[0].len, 5);
	assert_memory_equal(bufs[0], "abcde", 5);
	T_EXPECT(cqw_recv_batch(a, m, 3, 1000), CQW_ETOOSHORT);
	assert_int_equal(m[0].len, 100);
	t_recv_expect(a, msg, sizeof(msg));
	t_recv_str(a, "z");
	cqw_conn_free(a);
	cqw_conn_free(b);
}

/*
 * A SIGALRM that completes a frame later: tests that must not wait for a
 * frame's tail arm it, so that waiting shows up as a wrong count instead
 * of a hang.
 */
static int t_alarm_fd = -1;
static volatile sig_atomic_t t_alarm_done;
static const char *t_alarm_tail;
static size_t t_alarm_len;

static void
t_alarm_complete_frame(int sig)
{
	(void)sig;
	if (!t_alarm_done) {
		t_alarm_done = 1;
		(void)!write(t_alarm_fd, t_alarm_tail, t_alarm_len);
	}
}

/*
 * cqw_recv_batch(a, m, n, timeout_ms) while SIGALRM writes tail through
 * b after alarm_ms; the tail is written now if the alarm did not fire.
 */
static int
t_batch_alarm(cqw_conn *a, cqw_conn *b, struct cqw_msg *m, size_t n,
	      int timeout_ms, int alarm_ms, const char *tail)
{
	struct itimerval tv = { { 0, 0 },
				{ alarm_ms / 1000, (alarm_ms % 1000) * 1000 } };
	struct itimerval off = { { 0, 0 }, { 0, 0 } };
	struct sigaction sa, old;
	int r;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = t_alarm_complete_frame;
	sigemptyset(&sa.sa_mask);
	t_alarm_fd = cqw_conn_fileno(b);
	t_alarm_tail = tail;
	t_alarm_len = strlen(tail);
	t_alarm_done = 0;
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
	assert_int_equal(setitimer(ITIMER_REAL, &tv, NULL), 0);
	r = cqw_recv_batch(a, m, n, timeout_ms);
	setitimer(ITIMER_REAL, &off, NULL);
	sigaction(SIGALRM, &old, NULL);
	if (!t_alarm_done) {
		t_alarm_done = 1;
		t_raw(b, tail, strlen(tail));
	}
	return r;
}

/*
 * "then take every further message that can be read without blocking":
 * a frame whose tail has not arrived must not make the batch wait. If
 * it does, the alarm completes the frame and the batch comes back with
 * 2 instead of 1.
 */
static void
test_batch_partial_frame_does_not_block(void **state)
{
	static const uint8_t wire[] = { 0, 0, 0, 3, 'o', 'n', 'e',
					0, 0, 0, 5, 't', 'w' };
	struct cqw_msg m[4];
	uint8_t bufs[4][8];
	cqw_conn *a, *b;
	int k, n, first_ok, second_ok;
	int64_t got;
	size_t i;

	(void)state;
	for (i = 0; i < T_NPAIRS; i++) {
		t_pipe(&a, &b, t_pair_flags[i]);
		for (k = 0; k < 4; k++) {
			m[k].buf = bufs[k];
			m[k].cap = sizeof(bufs[k]);
		}
		t_raw(b, wire, sizeof(wire));
		n = t_batch_alarm(a, b, m, 4, 0, 500, "o!!");
		first_ok =
		    n >= 1 && m[0].len == 3 && memcmp(bufs[0], "one", 3) == 0;
		if (n == 1) {
			got = cqw_recv_bytes_into(a, bufs[1], sizeof(bufs[1]),
						  0, NULL);
			second_ok =
			    got == 5 && memcmp(bufs[1], "two!!", 5) == 0;
		} else {
			second_ok = n == 2 && m[1].len == 5;
		}
		cqw_conn_free(a);
		cqw_conn_free(b);
		T_EXPECT(n, 1);
		assert_true(first_ok);
		assert_true(second_ok);
	}
}

/*
 * "wait up to timeout_ms for the first": bytes of a frame are not yet a
 * message, so a first frame whose tail is late ends in a timeout (0),
 * and the frame is kept for the next call.
 */
static void
test_batch_timeout_bounds_partial_first(void **state)
{
	static const uint8_t wire[] = { 0, 0, 0, 5, 'h', 'e' };
	struct cqw_msg m[2];
	uint8_t bufs[2][8];
	cqw_conn *a, *b;
	int k, n, later_ok;
	size_t i;

	(void)state;
	for (i = 0; i < T_NPAIRS; i++) {
		t_pipe(&a, &b, t_pair_flags[i]);
		for (k = 0; k < 2; k++) {
			m[k].buf = bufs[k];
			m[k].cap = sizeof(bufs[k]);
			m[k].len = 0;
		}
		t_raw(b, wire, sizeof(wire));
		n = t_batch_alarm(a, b, m, 2, 150, 800, "llo");
		if (n == 0) {
			later_ok = cqw_recv_batch(a, m, 2, 1000) == 1 &&
				   m[0].len == 5 &&
				   memcmp(bufs[0], "hello", 5) == 0;
		} else {
			later_ok = n == 1 && m[0].len == 5;
		}
		cqw_conn_free(a);
		cqw_conn_free(b);
		T_EXPECT(n, 0);
		assert_true(later_ok);
	}
}

/*
 * A frame cut by end of file after some whole messages: the messages
 * come first, and the next call reports the cut (CQW_ETRUNC), not a
 * clean CQW_EOF.
 */
static void
test_batch_truncated_frame_after_messages(void **state)
{
	static const uint8_t mid_header[] = { 0, 0 };
	static const uint8_t mid_payload[] = { 0, 0, 0, 5, 'h', 'e' };
	static const struct {
		const uint8_t *wire;
		size_t len;
	} cases[] = {
		{ mid_header, sizeof(mid_header) },
		{ mid_payload, sizeof(mid_payload) },
	};
	struct cqw_msg m[4];
	uint8_t bufs[4][8];
	cqw_conn *a, *b;
	size_t i, c;
	int k, first, second;

	(void)state;
	for (c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		for (i = 0; i < T_NPAIRS; i++) {
			t_pipe(&a, &b, t_pair_flags[i]);
			for (k = 0; k < 4; k++) {
				m[k].buf = bufs[k];
				m[k].cap = sizeof(bufs[k]);
			}
			t_send_str(b, "a");
			t_send_str(b, "bc");
			t_raw(b, cases[c].wire, cases[c].len);
			cqw_conn_free(b);
			first = cqw_recv_batch(a, m, 4, 1000);
			second = cqw_recv_batch(a, m, 4, 1000);
			cqw_conn_free(a);
			T_EXPECT(first, 2);
			T_EXPECT(second, CQW_ETRUNC);
		}
	}
}

/*
 * Frames of every shape in one batch stream: empty, exactly the buffer,
 * a negative length (empty), the large-frame marker, then small ones.
 */
static void
test_batch_mixed_frames(void **state)
{
	static const uint8_t wire[] = {
		0,    0,    0,	  3,	'a', 'b', 'c', /* "abc" */
		0,    0,    0,	  0,		       /* "" */
		0,    0,    0,	  8,	'1', '2', '3',
		'4',  '5',  '6',  '7',	'8', /* exactly cap */
		0xff, 0xff, 0xff, 0xfe,	     /* "" */
		0xff, 0xff, 0xff, 0xff, 0,   0,	  0,
		0,    0,    0,	  0,	2,   'h', 'i', /* marker: "hi" */
		0,    0,    0,	  1,	'z',	       /* "z" */
	};
	static const char *const want[] = {
		"abc", "", "12345678", "", "hi", "z"
	};
	struct cqw_msg m[8];
	uint8_t bufs[8][8];
	cqw_conn *a, *b;
	size_t i, got;
	int k, n;

	(void)state;
	for (i = 0; i < T_NPAIRS; i++) {
		t_pipe(&a, &b, t_pair_flags[i]);
		t_raw(b, wire, sizeof(wire));
		got = 0;
		while (got < 6) {
			for (k = 0; k < 8; k++) {
				m[k].buf = bufs[k];
				m[k].cap = sizeof(bufs[k]);
			}
			n = cqw_recv_batch(a, m, 8, 1000);
			assert_true(n > 0 && got + (size_t)n <= 6);
			for (k = 0; k < n; k++, got++) {
				assert_int_equal(m[k].len, strlen(want[got]));
				assert_memory_equal(bufs[k], want[got],
						    m[k].len);
			}
		}
		T_EXPECT(cqw_recv_batch(a, m, 8, 0), 0);
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

/* ------------------------------------------------------------------
 * CQW_EXCLUSIVE and CQW_NO_LARGE_FRAMES
 */

#define T_EXCL_SMALL 2000
#define T_EXCL_LARGE (4u << 20)

static void *
t_thread_send_mixed(void *arg)
{
	struct t_batch_sender *s = arg;
	uint8_t small[64];
	uint8_t *large = malloc(T_EXCL_LARGE);
	uint32_t i;
	int r = 0;

	if (large == NULL) {
		s->result = CQW_ENOMEM;
		return NULL;
	}
	t_pattern_fill(large, T_EXCL_LARGE, 77);
	for (i = 0; i < T_EXCL_SMALL && r == 0; i++) {
		t_pattern_fill(small, i % 61, i);
		r = cqw_send_bytes(s->c, small, i % 61);
	}
	if (r == 0) {
		r = cqw_send_bytes(s->c, large, T_EXCL_LARGE);
	}
	for (i = 0; i < 10 && r == 0; i++) {
		t_pattern_fill(small, i, i + 5000);
		r = cqw_send_bytes(s->c, small, i);
	}
	free(large);
	s->result = r;
	return NULL;
}

/* Many small frames (read ahead), one large one, small ones again. */
static void
test_exclusive_small_then_large(void **state)
{
	static const unsigned flags[] = { CQW_DUPLEX | CQW_EXCLUSIVE,
					  CQW_EXCLUSIVE };
	struct t_batch_sender s;
	uint8_t small[64];
	cqw_conn *a, *b;
	pthread_t th;
	void *p = NULL;
	uint32_t i;
	size_t f;

	(void)state;
	for (f = 0; f < 2; f++) {
		t_pipe(&a, &b, flags[f]);
		s.c = b;
		s.result = 1;
		assert_int_equal(
		    pthread_create(&th, NULL, t_thread_send_mixed, &s), 0);
		for (i = 0; i < T_EXCL_SMALL; i++) {
			T_EXPECT(cqw_recv_bytes_into(a, small, sizeof(small), 0,
						     NULL),
				 i % 61);
			assert_true(t_pattern_check(small, i % 61, i));
		}
		T_EXPECT(cqw_recv_bytes(a, &p, CQW_NONE), T_EXCL_LARGE);
		assert_true(t_pattern_check(p, T_EXCL_LARGE, 77));
		cqw_free(p);
		for (i = 0; i < 10; i++) {
			T_EXPECT(cqw_recv_bytes_into(a, small, sizeof(small), 0,
						     NULL),
				 i);
			assert_true(t_pattern_check(small, i, i + 5000));
		}
		assert_int_equal(pthread_join(th, NULL), 0);
		T_OK(s.result);
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

/* Frames read ahead into the staging buffer still count as readable. */
static void
test_exclusive_poll_sees_staged(void **state)
{
	struct cqw_msg m[3] = { { .buf = "a", .len = 1 },
				{ .buf = "bb", .len = 2 },
				{ .buf = "", .len = 0 } };
	struct cqw_wait_item it = { 0 };
	cqw_conn *a, *b;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX | CQW_EXCLUSIVE);
	T_OK(cqw_send_batch(b, m, 3));
	t_recv_str(a, "a");
	it.conn = a;
	T_EXPECT(cqw_poll(a, 0), 1);
	T_EXPECT(cqw_wait(&it, 1, 0), 1);
	assert_int_equal(it.ready, 1);
	t_recv_str(a, "bb");
	T_EXPECT(cqw_poll(a, 0), 1);
	T_EXPECT(cqw_wait(&it, 1, 1000), 1);
	t_recv_str(a, "");
	T_EXPECT(cqw_poll(a, 0), 0);
	T_EXPECT(cqw_wait(&it, 1, 0), 0);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

/*
 * CQW_NO_LARGE_FRAMES refuses payloads over 0x7fffffff before writing.
 * A 2 GiB + 1 read-only mapping costs no memory; the peer is closed, so
 * an attempt to write shows up as CQW_EPIPE instead of a hang. Sending
 * exactly 0x7fffffff (allowed) would need 2 GiB through a socket: not
 * tested here.
 */
static void
test_conn_no_large_frames(void **state)
{
	const size_t big = (size_t)0x80000000u;
	struct cqw_msg m[2];
	cqw_conn *a, *b;
	void *p;
	int r;

	(void)state;
	if (sizeof(size_t) < 8) {
		T_SKIP("size_t cannot describe a 2 GiB + 1 buffer");
	}
	p = mmap(NULL, big + 1, PROT_READ,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		T_SKIP("no 2 GiB of address space for the mapping");
	}
	t_pipe(&a, &b, CQW_DUPLEX | CQW_NO_LARGE_FRAMES);
	cqw_conn_free(b);
	T_EXPECT(cqw_send_bytes(a, p, big), CQW_EMSGSIZE);
	T_EXPECT(cqw_send_bytes(a, p, big + 1), CQW_EMSGSIZE);
	m[0].buf = p;
	m[0].len = 1;
	m[1].buf = p;
	m[1].len = big;
	T_EXPECT(cqw_send_batch(a, m, 2), CQW_EMSGSIZE);
	cqw_conn_free(a);

	/* Without the flag the same send goes to the wire (and fails). */
	t_pipe(&a, &b, CQW_DUPLEX);
	cqw_conn_free(b);
	r = cqw_send_bytes(a, p, big);
	assert_true(r < 0 && r != CQW_EMSGSIZE);
	cqw_conn_free(a);
	munmap(p, big + 1);
}

/* ------------------------------------------------------------------
 * Authentication between two cqwire ends
 */

struct t_server {
	cqw_listener *l;
	int result;
	int echo; /* 1: echo one message; 2: hold the connection until EOF */
};

static void *
t_thread_accept(void *arg)
{
	struct t_server *s = arg;
	cqw_conn *c = NULL;
	void *buf = NULL;
	int64_t n;

	s->result = cqw_accept(s->l, &c, 5000);
	if (s->result == 0 && s->echo == 2) {
		n = cqw_recv_bytes(c, &buf, CQW_NONE);
		if (n != CQW_EOF) {
			s->result = n < 0 ? (int)n : CQW_EPROTO;
		}
		if (n >= 0) {
			cqw_free(buf);
		}
	} else if (s->result == 0 && s->echo) {
		n = cqw_recv_bytes(c, &buf, CQW_NONE);
		if (n < 0) {
			s->result = (int)n;
		} else {
			s->result = cqw_send_bytes(c, buf, (size_t)n);
			cqw_free(buf);
		}
	}
	cqw_conn_free(c);
	return NULL;
}

/*
 * Listen at address with server auth, connect with client auth, return
 * the client's result in *client and the server's in *server. On success
 * a message makes the round trip.
 */
static void
t_auth_pair(const char *address, const struct cqw_auth *sa,
	    const struct cqw_auth *ca, int *server, int *client)
{
	struct t_server s = { .echo = 1 };
	cqw_conn *c = NULL;
	pthread_t th;

	T_OK(cqw_listen(&s.l, address, sa, 1));
	assert_int_equal(pthread_create(&th, NULL, t_thread_accept, &s), 0);
	*client = cqw_connect(&c, cqw_listener_address(s.l), ca);
	if (*client == 0) {
		t_send_str(c, "ping");
		t_recv_str(c, "ping");
	}
	cqw_conn_free(c);
	assert_int_equal(pthread_join(th, NULL), 0);
	*server = s.result;
	cqw_listener_free(s.l);
}

static void
test_auth_same_key(void **state)
{
	struct cqw_auth auth = { .key = "secret",
				 .keylen = 6,
				 .timeout_ms = 5000 };
	char addr[128];
	int srv, cli;

	(void)state;
	t_auth_pair(t_unique_name(addr, sizeof(addr), "unix:@", "auth"), &auth,
		    &auth, &srv, &cli);
	T_OK(cli);
	T_OK(srv);
	/* Legacy challenges both ways (what <= 3.11 sends). */
	auth.flags = CQW_AUTH_LEGACY_CHALLENGE;
	t_auth_pair(t_unique_name(addr, sizeof(addr), "unix:@", "auth"), &auth,
		    &auth, &srv, &cli);
	T_OK(cli);
	T_OK(srv);
	/* And over TCP. */
	auth.flags = 0;
	if (t_have_tcp()) {
		t_auth_pair("tcp:127.0.0.1:0", &auth, &auth, &srv, &cli);
		T_OK(cli);
		T_OK(srv);
	}
}

static void
test_auth_wrong_key(void **state)
{
	struct cqw_auth sa = { .key = "secret",
			       .keylen = 6,
			       .timeout_ms = 5000 };
	struct cqw_auth ca = { .key = "Secret",
			       .keylen = 6,
			       .timeout_ms = 5000 };
	struct t_server s = { .echo = 1 };
	char addr[128];
	cqw_conn *c = NULL;
	pthread_t th;
	int srv, cli;

	(void)state;
	t_auth_pair(t_unique_name(addr, sizeof(addr), "unix:@", "auth"), &sa,
		    &ca, &srv, &cli);
	T_EXPECT(cli, CQW_EAUTH);
	T_EXPECT(srv, CQW_EAUTH);

	/* After a failed handshake the listener still serves others. */
	T_OK(cqw_listen(&s.l, addr, &sa, 1));
	s.echo = 0;
	assert_int_equal(pthread_create(&th, NULL, t_thread_accept, &s), 0);
	T_EXPECT(cqw_connect(&c, addr, &ca), CQW_EAUTH);
	assert_int_equal(pthread_join(th, NULL), 0);
	T_EXPECT(s.result, CQW_EAUTH);
	s.echo = 1;
	assert_int_equal(pthread_create(&th, NULL, t_thread_accept, &s), 0);
	T_OK(cqw_connect(&c, addr, &sa));
	t_send_str(c, "ok");
	t_recv_str(c, "ok");
	cqw_conn_free(c);
	assert_int_equal(pthread_join(th, NULL), 0);
	T_OK(s.result);
	cqw_listener_free(s.l);
}

/*
 * A server that refuses MD5 cannot answer a legacy (20-byte) challenge:
 * both ends fail. The client sees the server drop the connection.
 */
static void
test_auth_refuse_md5_vs_legacy(void **state)
{
	struct cqw_auth sa = { .key = "secret",
			       .keylen = 6,
			       .flags = CQW_AUTH_REFUSE_MD5,
			       .timeout_ms = 5000 };
	struct cqw_auth ca = { .key = "secret",
			       .keylen = 6,
			       .flags = CQW_AUTH_LEGACY_CHALLENGE,
			       .timeout_ms = 5000 };
	char addr[128];
	int srv, cli;

	(void)state;
	t_auth_pair(t_unique_name(addr, sizeof(addr), "unix:@", "auth"), &sa,
		    &ca, &srv, &cli);
	T_EXPECT(srv, CQW_EAUTH);
	if (cli >= 0) {
		fail_msg("client: %d, want a failure", cli);
	}
	/* The same server accepts a modern client. */
	ca.flags = 0;
	t_auth_pair(t_unique_name(addr, sizeof(addr), "unix:@", "auth"), &sa,
		    &ca, &srv, &cli);
	T_OK(cli);
	T_OK(srv);
}

/* test_empty_authkey: an empty key still authenticates (as 3.13). */
static void
test_auth_empty_key(void **state)
{
	struct cqw_auth auth = { .key = "", .keylen = 0, .timeout_ms = 5000 };
	struct cqw_auth other = { .key = "x", .keylen = 1, .timeout_ms = 5000 };
	char addr[128];
	int srv, cli;

	(void)state;
	t_auth_pair(t_unique_name(addr, sizeof(addr), "unix:@", "auth"), &auth,
		    &auth, &srv, &cli);
	T_OK(cli);
	T_OK(srv);
	/* Empty is a key, not "no key": a non-empty one does not match. */
	t_auth_pair(t_unique_name(addr, sizeof(addr), "unix:@", "auth"), &auth,
		    &other, &srv, &cli);
	T_EXPECT(cli, CQW_EAUTH);
	T_EXPECT(srv, CQW_EAUTH);
}

/* Server without a key, client with one: the handshake deadline ends it. */
static void
test_auth_deadline(void **state)
{
	struct cqw_auth ca = { .key = "secret",
			       .keylen = 6,
			       .timeout_ms = 200 };
	struct t_server s = { .echo = 2 };
	char addr[128];
	cqw_conn *c = NULL;
	pthread_t th;
	int64_t t0;
	int r;

	(void)state;
	T_OK(cqw_listen(&s.l, t_unique_name(addr, sizeof(addr), "unix:@", "dl"),
			NULL, 1));
	assert_int_equal(pthread_create(&th, NULL, t_thread_accept, &s), 0);
	t0 = t_now_ms();
	r = cqw_connect(&c, addr, &ca);
	t0 = t_now_ms() - t0;
	if (r >= 0) {
		cqw_conn_free(c);
	}
	assert_int_equal(pthread_join(th, NULL), 0);
	cqw_listener_free(s.l);
	if (r >= 0) {
		fail_msg("connect without a challenge: %d, want a failure", r);
	}
	assert_true(t0 >= 150);
	T_OK(s.result);
}

/*
 * Server with a key, client without: the client's first message is
 * taken as the response, and the client is told #FAILURE#.
 */
static void
test_auth_client_without_key(void **state)
{
	struct cqw_auth sa = { .key = "secret",
			       .keylen = 6,
			       .timeout_ms = 5000 };
	struct t_server s = { .echo = 0 };
	char addr[128], chal[64];
	cqw_conn *c = NULL;
	pthread_t th;
	int64_t n;

	(void)state;
	T_OK(cqw_listen(&s.l, t_unique_name(addr, sizeof(addr), "unix:@", "nk"),
			&sa, 1));
	assert_int_equal(pthread_create(&th, NULL, t_thread_accept, &s), 0);
	T_OK(cqw_connect(&c, addr, NULL));
	n = cqw_recv_bytes_into(c, chal, sizeof(chal), 0, NULL);
	assert_true(n > 11);
	assert_memory_equal(chal, "#CHALLENGE#", 11);
	t_send_str(c, "ping");
	t_recv_str(c, "#FAILURE#");
	assert_int_equal(pthread_join(th, NULL), 0);
	T_EXPECT(s.result, CQW_EAUTH);
	cqw_conn_free(c);
	cqw_listener_free(s.l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conn_send_recv),
		cmocka_unit_test(test_conn_wire_bytes),
		cmocka_unit_test(test_conn_round_trip_16mib),
		cmocka_unit_test(test_conn_peer_closed),
		cmocka_unit_test(test_conn_poll_timeouts),
		cmocka_unit_test(test_conn_duplex_false),
		cmocka_unit_test(test_conn_sendbytes_offsets),
		cmocka_unit_test(test_conn_recv_bytes_maxlength_equal),
		cmocka_unit_test(test_conn_recv_bytes_maxlength_duplex),
		cmocka_unit_test(test_conn_recv_bytes_maxlength_simplex),
		cmocka_unit_test(test_conn_recv_bytes_into_offset),
		cmocka_unit_test(test_conn_recv_bytes_into_too_short_keeps),
		cmocka_unit_test(test_conn_close_idempotent),
		cmocka_unit_test(test_conn_detach),
		cmocka_unit_test(test_conn_blocking_mode_untouched),
		cmocka_unit_test(test_conn_nonblocking_fd_still_blocks),
		cmocka_unit_test(test_conn_invalid_handle),
		cmocka_unit_test(test_conn_from_fd_owns_fd_on_failure),
		cmocka_unit_test(test_conn_fork_child),
		cmocka_unit_test(test_conn_no_large_frames),
		cmocka_unit_test(test_frame_large_marker_received),
		cmocka_unit_test(test_frame_negative_length_is_empty),
		cmocka_unit_test(test_frame_eof_at_boundary),
		cmocka_unit_test(test_frame_eof_mid_header),
		cmocka_unit_test(test_frame_eof_after_header),
		cmocka_unit_test(test_frame_eof_mid_payload),
		cmocka_unit_test(test_handle_fd_transfer),
		cmocka_unit_test(test_handle_large_fd_transfer),
		cmocka_unit_test(test_handle_after_frames),
		cmocka_unit_test(test_handle_missing_fd),
		cmocka_unit_test(test_listener_multiple_bind_unix),
		cmocka_unit_test(test_listener_multiple_bind_abstract),
		cmocka_unit_test(test_listener_multiple_bind_tcp),
		cmocka_unit_test(test_listener_client_unix),
		cmocka_unit_test(test_listener_client_abstract),
		cmocka_unit_test(test_listener_client_tcp),
		cmocka_unit_test(test_listener_client_tcp6),
		cmocka_unit_test(test_listener_existing_file),
		cmocka_unit_test(test_listener_issue14725),
		cmocka_unit_test(test_listener_accept_timeout_and_close),
		cmocka_unit_test(test_poll_boundaries),
		cmocka_unit_test(test_poll_partial_header),
		cmocka_unit_test(test_poll_dont_merge),
		cmocka_unit_test(test_poll_empty_string),
		cmocka_unit_test(test_poll_strings),
		cmocka_unit_test(test_wait_timeout),
		cmocka_unit_test(test_wait_zero_timeout),
		cmocka_unit_test(test_wait_conn_and_raw_fd),
		cmocka_unit_test(test_wait_returns_every_ready),
		cmocka_unit_test(test_wait_bad_items),
		cmocka_unit_test(test_wait_four_readers),
		cmocka_unit_test(test_eintr_recv),
		cmocka_unit_test(test_eintr_poll_and_wait),
		cmocka_unit_test(test_eintr_send),
		cmocka_unit_test(test_eintr_accept),
		cmocka_unit_test(test_batch_thousand_in_order),
		cmocka_unit_test(test_batch_recv_timeout),
		cmocka_unit_test(test_batch_eof_after_messages),
		cmocka_unit_test(test_batch_first_too_short),
		cmocka_unit_test(test_batch_later_too_short_kept),
		cmocka_unit_test(test_batch_partial_frame_does_not_block),
		cmocka_unit_test(test_batch_timeout_bounds_partial_first),
		cmocka_unit_test(test_batch_truncated_frame_after_messages),
		cmocka_unit_test(test_batch_mixed_frames),
		cmocka_unit_test(test_exclusive_small_then_large),
		cmocka_unit_test(test_exclusive_poll_sees_staged),
		cmocka_unit_test(test_auth_same_key),
		cmocka_unit_test(test_auth_wrong_key),
		cmocka_unit_test(test_auth_refuse_md5_vs_legacy),
		cmocka_unit_test(test_auth_empty_key),
		cmocka_unit_test(test_auth_deadline),
		cmocka_unit_test(test_auth_client_without_key),
	};

	/*
	 * SIGPIPE keeps its default action: the library must not let a
	 * write to a closed peer kill the process.
	 */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
