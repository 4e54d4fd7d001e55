/*
 * The behavioural suite of a connection (include/cqwire.h), after
 * CPython's _TestConnection (WIRE.md §10.1): messages both ways on every
 * shape of pair, the exact wire bytes, 16 MiB and beyond through a child,
 * a peer that went, send_bytes offsets, maxlength poisoning,
 * recv_bytes_into with offsets and buffers too short (cqwire keeps the
 * message, where Python raises), close, detach, from_fd, descriptors'
 * blocking mode, and CQW_NO_LARGE_FRAMES.
 *
 * The bodies run twice (see t-conn.h): with the sync calls
 * (test-conn-sync) and with messages moved through loop ops on each
 * backend (test-conn-poll, test-conn-uring...). Argument rules (offsets,
 * maxlength, closed connections, descriptors) have no loop form and stay
 * sync in both runs.
 *
 * The second party is a forked child (see t-util.h: children check with
 * T_CHILD_CHECK and the parent asserts their exit status) or a thread.
 * Raw write() on a connection's descriptor puts exact bytes on the wire.
 *
 * On Windows (iocp) the pairs are message-mode named pipes: the wire
 * bytes are one pipe message per send, no header (and the framed bytes
 * are checked over TCP), the echoing peer is a thread, and the two tests
 * about POSIX descriptors' modes and a 2 GiB mapping are left out.
 */
#include "t-conn.h"

#ifdef _WIN32
#include <pthread.h>
#else
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#endif

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
#ifdef _WIN32
		/* A pipe message per send, the zero-length one too. */
		t_pipe(&a, &b, i ? 0 : CQW_DUPLEX);
		t_send_str(b, "hello");
		t_send_str(b, "");
		assert_int_equal(t_unread(a), 5);
		assert_int_equal(
		    t_read_raw(cqw_conn_fileno(a), got, sizeof(got)), 5);
		assert_memory_equal(got, "hello", 5);
		assert_int_equal(
		    t_read_raw(cqw_conn_fileno(a), got, sizeof(got)), 0);
		assert_int_equal(t_unread(a), 0);
		cqw_conn_free(a);
		cqw_conn_free(b);
		/* The framed bytes, on a byte stream. */
		t_stream_pair(&a, &b, CQW_DUPLEX);
#else
		t_pipe(&a, &b, i ? 0 : CQW_DUPLEX);
#endif
		t_send_str(b, "hello");
		t_send_str(b, "");
		assert_int_equal(t_unread(a), sizeof(want));
		assert_int_equal(
		    t_read_raw(cqw_conn_fileno(a), got, sizeof(got)),
		    sizeof(want));
		assert_memory_equal(got, want, sizeof(want));
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

#ifdef _WIN32
static void *
t_thread_echo(void *arg)
{
	return (void *)(intptr_t)t_child_echo(arg);
}
#endif

/* 16 MiB each way through a child that echoes (and test_spawn_close). */
static void
test_conn_round_trip_16mib(void **state)
{
	const size_t len = 16u << 20, big = (24u << 20) + 1;
	struct t_child_conns cc = { { NULL }, { NULL } };
	cqw_conn *a, *b;
	void *out, *in = NULL;
#ifdef _WIN32
	pthread_t th;
	void *rc;
#else
	pid_t pid;
#endif

	(void)state;
	out = malloc(big);
	assert_non_null(out);
	t_pattern_fill(out, big, 16);
	t_pipe(&a, &b, CQW_DUPLEX);
	cc.use[0] = b;
#ifdef _WIN32
	/* A thread shares our ends: it drops none, and b stays ours. */
	assert_int_equal(pthread_create(&th, NULL, t_thread_echo, &cc), 0);
#else
	cc.drop[0] = a;
	pid = t_fork_child(t_child_echo, &cc);
	/* The parent drops the child's end at once; echo still works. */
	cqw_conn_free(b);
#endif
	T_OK(t_send(a, out, len));
	T_EXPECT(t_recv(a, &in, CQW_NONE), (int64_t)len);
	assert_true(t_pattern_check(in, len, 16));
	cqw_free(in);
	/* Past 16 MiB the buffer grows as the payload comes in. */
	T_OK(t_send(a, out, big));
	T_EXPECT(t_recv(a, &in, CQW_NONE), (int64_t)big);
	assert_true(t_pattern_check(in, big, 16));
	cqw_free(in);
#ifdef _WIN32
	/* The thread sees end of file and ends with 0. */
	T_OK(cqw_conn_close(a));
	assert_int_equal(pthread_join(th, &rc), 0);
	assert_int_equal((intptr_t)rc, 0);
	cqw_conn_free(b);
	cqw_conn_free(a);
#else
	cqw_conn_free(a);
	t_wait_child(pid);
#endif
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
	T_EXPECT(t_recv(a, &p, CQW_NONE), CQW_EOF);
	T_EXPECT(t_recv_into(a, buf, sizeof(buf), 0, NULL), CQW_EOF);
	assert_true(t_send(a, "x", 1) < 0);
	cqw_conn_free(a);

	/* Simplex: the reader sees EOF when the writer goes. */
	t_pipe(&a, &b, 0);
	cqw_conn_free(b);
	T_EXPECT(cqw_poll(a, 0), 1);
	T_EXPECT(t_recv(a, &p, CQW_NONE), CQW_EOF);
	cqw_conn_free(a);

	/*
	 * The writer whose reader went gets CQW_EPIPE, and SIGPIPE (left
	 * at its default action by this test program) does not kill us.
	 */
	t_pipe(&a, &b, 0);
	cqw_conn_free(a);
	T_EXPECT(t_send(b, "x", 1), CQW_EPIPE);
	T_EXPECT(t_send(b, "x", 1), CQW_EPIPE);
	cqw_conn_free(b);
}

/*
 * Python's test_sendbytes: offsets and sizes in bytes (WIRE.md §2.6).
 * cqw_send_bytes_at() has no loop form (an op sends buf[0..len)): the
 * sends stay sync, the receives go through the I/O layer.
 */
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

/* maxlength has no loop form (an op has a capacity, not a limit). */
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
	T_OK(t_send(a, msg, sizeof(msg)));
	T_OK(t_send(a, msg, sizeof(msg)));
	T_OK(t_send(a, msg, 0));

	memset(buf, 0xee, sizeof(buf));
	memcpy(before, buf, sizeof(buf));
	T_EXPECT(t_recv_into(b, buf, sizeof(buf), 0, &needed), 20);
	assert_memory_equal(buf, msg, 20);
	assert_memory_equal(buf + 20, before + 20, 20);

	/* With a byte offset (Python's 3 * itemsize): returns the length. */
	memset(buf, 0xee, sizeof(buf));
	T_EXPECT(t_recv_into(b, buf, sizeof(buf), 12, NULL), 20);
	assert_memory_equal(buf, before, 12);
	assert_memory_equal(buf + 12, msg, 20);
	assert_memory_equal(buf + 32, before + 32, 8);

	/*
	 * offset == cap fits an empty message; offset > cap never (an
	 * argument rule of the sync call: it stays sync).
	 */
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
		T_OK(t_send(b, msg, sizeof(msg)));
		T_OK(t_send(b, msg, 30));
		t_send_str(b, "next");

		memset(buf, 0xee, sizeof(buf));
		memcpy(before, buf, sizeof(buf));
		T_EXPECT(t_recv_into(a, buf, sizeof(buf), 0, &needed),
			 CQW_ETOOSHORT);
		assert_int_equal(needed, 110);
#ifdef _WIN32
		/*
		 * A loop receive on a message pipe reads into the op's
		 * buffer and meets ERROR_MORE_DATA (src/common/message.c:
		 * the part read is kept in the connection): the buffer
		 * holds the message's first bytes then. cqwire.h promises
		 * the message kept, not the buffer untouched.
		 */
		if (t_io_loop_mode()) {
			memcpy(before, msg, sizeof(before));
		}
#endif
		assert_memory_equal(buf, before, sizeof(buf));
		assert_true(cqw_conn_readable(a));
		T_EXPECT(cqw_poll(a, 0), 1);
		/* Asking again gets the same answer; needed may be NULL. */
		T_EXPECT(t_recv_into(a, buf, sizeof(buf), 5, NULL),
			 CQW_ETOOSHORT);
		t_recv_expect(a, msg, sizeof(msg));

		/* 30 bytes at offset 12 of 40 do not fit; at 10 they do. */
		needed = 0;
		T_EXPECT(t_recv_into(a, buf, sizeof(buf), 12, &needed),
			 CQW_ETOOSHORT);
		assert_int_equal(needed, 30);
		T_EXPECT(t_recv_into(a, buf, sizeof(buf), 10, NULL), 30);
		assert_memory_equal(buf + 10, msg, 30);
		t_recv_str(a, "next");
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

/* What every call on a closed connection returns: the sync calls'. */
static void
test_conn_close_idempotent(void **state)
{
	struct cqw_msg m = { .buf = "x", .cap = 1, .len = 1 };
	struct cqw_wait_item item = { .fd = -1 };
	cqw_conn *a, *b;
	uint8_t buf[4];
	void *p = NULL;
	cqw_fd fd = -1;

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
	T_EXPECT(t_recv(b, &p, CQW_NONE), CQW_EOF);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_conn_free(NULL);
}

static void
test_conn_detach(void **state)
{
	cqw_conn *a, *b, *c;
	cqw_fd fd;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX);
	fd = cqw_conn_detach(a);
	assert_true(fd >= 0);
	assert_true(cqw_conn_closed(a));
	cqw_conn_free(a); /* must not close fd */
	assert_true(t_fd_is_open(fd));
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
#ifndef _WIN32
		assert_int_equal(
		    fcntl(cqw_conn_fileno(a), F_GETFL) & O_NONBLOCK, 0);
		assert_int_equal(
		    fcntl(cqw_conn_fileno(b), F_GETFL) & O_NONBLOCK, 0);
#endif
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

#ifndef _WIN32
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
	T_OK(t_send(a, buf, sp.len));
	t_recv_str(a, "late");
	t_wait_child(pid);
	assert_true(fcntl(sv[0], F_GETFL) & O_NONBLOCK);
	free(buf);
	cqw_conn_free(a);
	cqw_conn_free(b);
}
#endif /* !_WIN32 */

/* TestInvalidHandle. */
static void
test_conn_invalid_handle(void **state)
{
	cqw_conn *c = NULL;
	cqw_fd p[2];

	(void)state;
	T_EXPECT(cqw_conn_from_fd(&c, -1, CQW_DUPLEX), CQW_EINVAL);
	t_os_pipe(p);
	t_os_close(p[0]);
	t_os_close(p[1]);
	/* A descriptor number that is not open. */
	assert_true(cqw_conn_from_fd(&c, p[0], CQW_READABLE) < 0);
	assert_true(cqw_conn_from_fd(&c, 44977608, CQW_DUPLEX) < 0);
}

/* "The connection owns fd from now on, also on failure." */
static void
test_conn_from_fd_owns_fd_on_failure(void **state)
{
	cqw_conn *c = NULL;
	cqw_fd p[2];
	int leaked_flags, leaked_out;

	(void)state;
	t_os_pipe(p);
	t_os_close(p[1]);
	T_EXPECT(cqw_conn_from_fd(&c, p[0], 0), CQW_EINVAL);
	leaked_flags = t_fd_is_open(p[0]);
	if (leaked_flags) {
		t_os_close(p[0]);
	}

	t_os_pipe(p);
	t_os_close(p[1]);
	T_EXPECT(cqw_conn_from_fd(NULL, p[0], CQW_READABLE), CQW_EINVAL);
	leaked_out = t_fd_is_open(p[0]);
	if (leaked_out) {
		t_os_close(p[0]);
	}
	assert_false(leaked_flags);
	assert_false(leaked_out);
}

#ifndef _WIN32
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
	T_EXPECT(t_send(a, p, big), CQW_EMSGSIZE);
	T_EXPECT(t_send(a, p, big + 1), CQW_EMSGSIZE);
	m[0].buf = p;
	m[0].len = 1;
	m[1].buf = p;
	m[1].len = big;
	/*
	 * The batch refuses as a whole before writing; loop ops are sent
	 * one by one, so this stays sync.
	 */
	T_EXPECT(cqw_send_batch(a, m, 2), CQW_EMSGSIZE);
	cqw_conn_free(a);

	/* Without the flag the same send goes to the wire (and fails). */
	t_pipe(&a, &b, CQW_DUPLEX);
	cqw_conn_free(b);
	r = t_send(a, p, big);
	assert_true(r < 0 && r != CQW_EMSGSIZE);
	cqw_conn_free(a);
	munmap(p, big + 1);
}
#endif /* !_WIN32 */

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conn_send_recv),
		cmocka_unit_test(test_conn_wire_bytes),
		cmocka_unit_test(test_conn_round_trip_16mib),
		cmocka_unit_test(test_conn_peer_closed),
		cmocka_unit_test(test_conn_sendbytes_offsets),
		cmocka_unit_test(test_conn_recv_bytes_maxlength_equal),
		cmocka_unit_test(test_conn_recv_bytes_maxlength_duplex),
		cmocka_unit_test(test_conn_recv_bytes_maxlength_simplex),
		cmocka_unit_test(test_conn_recv_bytes_into_offset),
		cmocka_unit_test(test_conn_recv_bytes_into_too_short_keeps),
		cmocka_unit_test(test_conn_close_idempotent),
		cmocka_unit_test(test_conn_detach),
		cmocka_unit_test(test_conn_blocking_mode_untouched),
#ifndef _WIN32
		/* POSIX descriptors' O_NONBLOCK, and a 2 GiB mmap. */
		cmocka_unit_test(test_conn_nonblocking_fd_still_blocks),
#endif
		cmocka_unit_test(test_conn_invalid_handle),
		cmocka_unit_test(test_conn_from_fd_owns_fd_on_failure),
#ifndef _WIN32
		cmocka_unit_test(test_conn_no_large_frames),
#endif
	};

	t_io_setup();
	return cmocka_run_group_tests(tests, NULL, t_io_teardown);
}
