/*
 * src/win's Winsock TCP: the endpoints (IPv4, IPv6, unix: refused, a
 * port in use) and the stream transport's synchronous half: frames of
 * 0 B .. 16 MiB both ways with the bytes on the wire checked, a frame too
 * big for the buffer left whole in the kernel (frame-exact, MSG_PEEK),
 * recv_alloc and maxlength, a deadline that consumes nothing while a
 * frame is partly queued, batches, EOF at and inside a frame, wait() on
 * sockets, and a raw socket from elsewhere.
 *
 * Links: the library's sources as a static archive (internal calls are
 * hidden in the DLL), cmocka.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "win/win.h"

static cqw_conn *
t_conn(cqw_fd h, int kind)
{
	cqw_conn *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->fd = h;
	c->kind = kind;
	c->flags = CQW_DUPLEX;
	c->tp = cqw__transport_for(kind);
	assert_non_null(c->tp);
	cqw__dec_reset(&c->dec);
	return c;
}

static void
t_free(cqw_conn *c)
{
	c->tp->release(c);
	if (!c->closed) {
		assert_int_equal(cqw__io_close(c->fd), 0);
	}
	free(c);
}

/* A connected pair over loopback: *a the client, *b the accepted. */
static int
t_tcp_pair(const char *addr, cqw_conn **a, cqw_conn **b)
{
	struct cqw__lsock *l;
	struct cqw__addr ad, bound;
	cqw_fd h1, h2;
	int kind, r;

	assert_int_equal(cqw__addr_parse(&ad, addr), 0);
	r = cqw__listen_open(&l, &ad, 4, &bound);
	if (r < 0) {
		return r;
	}
	assert_int_equal(bound.kind, CQW__ADDR_TCP);
	assert_true(bound.port > 0);
	assert_int_equal(cqw__listen_accept(l, &h2, &kind, 0), CQW_ETIMEDOUT);
	assert_int_equal(cqw__os_connect(&bound, &h1, &kind, -1), 0);
	assert_int_equal(kind, CQW__FD_SOCK);
	assert_int_equal(cqw__listen_accept(l, &h2, &kind, 5000), 0);
	assert_int_equal(kind, CQW__FD_SOCK);
	assert_int_equal(cqw__io_fd_kind(h1), CQW__FD_SOCK);
	assert_int_equal(cqw__io_fd_kind(h2), CQW__FD_SOCK);
	assert_int_equal(cqw__listen_close(l), 0);
	*a = t_conn(h1, kind);
	*b = t_conn(h2, kind);
	return 0;
}

static void
t_fill(uint8_t *p, size_t len, unsigned seed)
{
	size_t i;

	for (i = 0; i < len; i++) {
		p[i] = (uint8_t)(i * 131 + seed + (i >> 12));
	}
}

static int
t_check(const uint8_t *p, size_t len, unsigned seed)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (p[i] != (uint8_t)(i * 131 + seed + (i >> 12))) {
			return 0;
		}
	}
	return 1;
}

static int
t_send(cqw_conn *c, const void *buf, size_t len)
{
	struct cqw_msg m = { .buf = (void *)buf, .len = len };

	return c->tp->send(c, &m, 1);
}

/* Raw bytes, as a peer that is not cqwire would write them. */
static void
t_raw(cqw_conn *c, const void *p, int n)
{
	assert_int_equal(send((SOCKET)c->fd, p, n, 0), n);
}

struct t_sender {
	cqw_conn *c;
	size_t len;
	int count;
	int result;
	HANDLE thread;
};

static DWORD WINAPI
t_sender_main(void *arg)
{
	struct t_sender *s = arg;
	uint8_t *buf = malloc(s->len > 0 ? s->len : 1);
	int i;

	if (buf == NULL) {
		s->result = CQW_ENOMEM;
		return 0;
	}
	for (i = 0; i < s->count && s->result == 0; i++) {
		t_fill(buf, s->len, (unsigned)i);
		s->result = t_send(s->c, buf, s->len);
	}
	free(buf);
	return 0;
}

static void
t_round(cqw_conn *from, cqw_conn *to, size_t len, int count)
{
	struct t_sender s = { .c = from, .len = len, .count = count };
	uint8_t *buf = malloc(len + 16);
	size_t needed = 0;
	void *got = NULL;
	int64_t n;
	int i;

	assert_non_null(buf);
	s.thread = CreateThread(NULL, 0, t_sender_main, &s, 0, NULL);
	assert_non_null(s.thread);
	for (i = 0; i < count; i++) {
		if (i % 2 == 0) {
			n = to->tp->recv_into(to, buf, len + 16, &needed, -1);
			assert_int_equal(n, (int64_t)len);
			assert_true(t_check(buf, len, (unsigned)i));
		} else {
			n = to->tp->recv_alloc(to, &got, CQW_NONE);
			assert_int_equal(n, (int64_t)len);
			assert_true(t_check(got, len, (unsigned)i));
			free(got);
		}
	}
	assert_int_equal(WaitForSingleObject(s.thread, 60000), WAIT_OBJECT_0);
	CloseHandle(s.thread);
	assert_int_equal(s.result, 0);
	free(buf);
}

static void
test_win_sock_sizes_both_ways(void **state)
{
	static const size_t sizes[] = { 0,	 5,	   65536,
					1 << 20, 16 << 20, (16 << 20) + 1 };
	cqw_conn *a, *b;
	size_t i;

	(void)state;
	assert_int_equal(t_tcp_pair("tcp:127.0.0.1:0", &a, &b), 0);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		t_round(a, b, sizes[i], sizes[i] >= (16 << 20) ? 2 : 4);
		t_round(b, a, sizes[i], sizes[i] >= (16 << 20) ? 2 : 4);
	}
	t_free(a);
	t_free(b);
}

/* The bytes on the wire are Python's: a 4-byte big-endian length. */
static void
test_win_sock_wire_bytes(void **state)
{
	static const uint8_t want[] = { 0,   0,	  0, 5, 'h', 'e', 'l',
					'l', 'o', 0, 0, 0,   0 };
	uint8_t got[sizeof(want)];
	struct cqw_msg m[2] = { { .buf = "hello", .len = 5 },
				{ .buf = NULL, .len = 0 } };
	cqw_conn *a, *b;
	int n = 0, r;

	(void)state;
	assert_int_equal(t_tcp_pair("tcp:127.0.0.1:0", &a, &b), 0);
	assert_int_equal(a->tp->send(a, m, 2), 0);
	while (n < (int)sizeof(got)) {
		r = recv((SOCKET)b->fd, (char *)got + n, sizeof(got) - n, 0);
		assert_true(r > 0);
		n += r;
	}
	assert_memory_equal(got, want, sizeof(want));
	t_free(a);
	t_free(b);
}

/* Too short: nothing consumed, the frame stays whole in the kernel. */
static void
test_win_sock_too_short_stays(void **state)
{
	uint8_t msg[300], buf[300], hdr[4];
	cqw_conn *a, *b;
	size_t needed = 0;
	void *got = NULL;
	u_long q = 0;

	(void)state;
	assert_int_equal(t_tcp_pair("tcp:127.0.0.1:0", &a, &b), 0);
	t_fill(msg, sizeof(msg), 3);
	assert_int_equal(t_send(a, msg, sizeof(msg)), 0);
	assert_int_equal(t_send(a, "next", 4), 0);
	assert_int_equal(b->tp->recv_into(b, buf, 10, &needed, -1),
			 CQW_ETOOSHORT);
	assert_int_equal(needed, sizeof(msg));
	Sleep(50);
	assert_int_equal(ioctlsocket((SOCKET)b->fd, (long)FIONREAD, &q), 0);
	assert_int_equal(q, 4 + 300 + 4 + 4);
	assert_int_equal(recv((SOCKET)b->fd, (char *)hdr, 4, MSG_PEEK), 4);
	assert_int_equal(hdr[3], (uint8_t)300);
	assert_false(b->tp->ready_now(b));
	assert_int_equal(b->tp->recv_into(b, buf, sizeof(buf), &needed, -1),
			 300);
	assert_true(t_check(buf, 300, 3));
	/* maxlength: refused without consuming, poisoned as Python does. */
	assert_int_equal(b->tp->recv_alloc(b, &got, 3), CQW_EMSGSIZE);
	assert_null(got);
	assert_int_equal(b->flags & CQW_READABLE, 0);
	t_free(a);
	t_free(b);
}

/*
 * A deadline while a frame is partly queued consumes nothing; once the
 * rest comes the frame is whole. A header cut for long is read the
 * consuming way and still ends in one frame.
 */
static void
test_win_sock_deadline_partial(void **state)
{
	static const uint8_t part[] = { 0, 0, 0, 6, 'a', 'b', 'c' };
	uint8_t buf[16];
	cqw_conn *a, *b;
	size_t needed;
	u_long q = 0;

	(void)state;
	assert_int_equal(t_tcp_pair("tcp:127.0.0.1:0", &a, &b), 0);
	assert_int_equal(
	    b->tp->recv_into(b, buf, sizeof(buf), &needed, cqw__now_ms() + 50),
	    CQW_ETIMEDOUT);
	assert_int_equal(b->tp->poll(b, 0), 0);
	t_raw(a, part, sizeof(part));
	assert_int_equal(
	    b->tp->recv_into(b, buf, sizeof(buf), &needed, cqw__now_ms() + 100),
	    CQW_ETIMEDOUT);
	assert_int_equal(ioctlsocket((SOCKET)b->fd, (long)FIONREAD, &q), 0);
	assert_int_equal(q, sizeof(part));
	assert_int_equal(b->tp->poll(b, 0), 1);
	t_raw(a, "def", 3);
	assert_int_equal(b->tp->recv_into(b, buf, sizeof(buf), &needed,
					  cqw__now_ms() + 1000),
			 6);
	assert_memory_equal(buf, "abcdef", 6);
	/*
	 * Two bytes of a header: after 20 ms cut they are read into the
	 * connection's decoder (so that an end of file after them can be
	 * seen), and the next receive finishes that frame.
	 */
	t_raw(a, "\0\0", 2);
	assert_int_equal(
	    b->tp->recv_into(b, buf, sizeof(buf), &needed, cqw__now_ms() + 30),
	    CQW_ETIMEDOUT);
	t_raw(a, "\0\2xy", 4);
	assert_int_equal(b->tp->recv_into(b, buf, sizeof(buf), &needed, -1), 2);
	assert_memory_equal(buf, "xy", 2);
	t_free(a);
	t_free(b);
}

static void
test_win_sock_batch(void **state)
{
	struct cqw_msg m[8], out[5];
	uint8_t bufs[8][32];
	cqw_conn *a, *b;
	int i;

	(void)state;
	assert_int_equal(t_tcp_pair("tcp:127.0.0.1:0", &a, &b), 0);
	for (i = 0; i < 8; i++) {
		m[i].buf = bufs[i];
		m[i].cap = sizeof(bufs[i]);
		m[i].len = 0;
	}
	assert_int_equal(b->tp->recv_batch(b, m, 8, 30), 0);
	for (i = 0; i < 5; i++) {
		out[i].buf = "0123456789abcdefghijklmnopqrstuvwxyz";
		out[i].len = i == 3 ? 36 : (size_t)i * 3;
	}
	assert_int_equal(a->tp->send(a, out, 5), 0);
	Sleep(50);
	/* 0, 3, 6 fit; 36 > 32 stays for a bigger buffer. */
	assert_int_equal(b->tp->recv_batch(b, m, 8, 1000), 3);
	assert_int_equal(m[0].len, 0);
	assert_int_equal(m[1].len, 3);
	assert_int_equal(m[2].len, 6);
	assert_int_equal(b->tp->recv_batch(b, m, 8, 1000), CQW_ETOOSHORT);
	assert_int_equal(m[0].len, 36);
	m[0].cap = 0; /* the big one then: a buffer of its own */
	{
		uint8_t big[40];
		size_t needed;

		assert_int_equal(
		    b->tp->recv_into(b, big, sizeof(big), &needed, -1), 36);
	}
	m[0].cap = sizeof(bufs[0]);
	assert_int_equal(b->tp->recv_batch(b, m, 8, 1000), 1);
	assert_int_equal(m[0].len, 12);
	t_free(a);
	t_free(b);
}

/* EOF at a frame boundary, inside a header, inside a payload. */
static void
test_win_sock_eof(void **state)
{
	uint8_t buf[16];
	cqw_conn *a, *b;
	size_t needed;

	(void)state;
	assert_int_equal(t_tcp_pair("tcp:127.0.0.1:0", &a, &b), 0);
	assert_int_equal(t_send(a, "x", 1), 0);
	t_free(a);
	assert_int_equal(b->tp->recv_into(b, buf, 16, &needed, -1), 1);
	assert_int_equal(b->tp->poll(b, 1000), 1);
	assert_int_equal(b->tp->recv_into(b, buf, 16, &needed, -1), CQW_EOF);
	t_free(b);

	assert_int_equal(t_tcp_pair("tcp:127.0.0.1:0", &a, &b), 0);
	t_raw(a, "\0\0", 2);
	t_free(a);
	assert_int_equal(b->tp->recv_into(b, buf, 16, &needed, -1), CQW_ETRUNC);
	t_free(b);

	assert_int_equal(t_tcp_pair("tcp:127.0.0.1:0", &a, &b), 0);
	t_raw(a,
	      "\0\0\0\x09"
	      "abc",
	      7);
	t_free(a);
	assert_int_equal(b->tp->recv_into(b, buf, 16, &needed, -1), CQW_ETRUNC);
	assert_int_equal(b->tp->recv_into(b, buf, 16, &needed, -1), CQW_EOF);
	t_free(b);
}

static void
test_win_sock_ipv6(void **state)
{
	cqw_conn *a, *b;
	uint8_t buf[8];
	size_t needed;
	int r;

	(void)state;
	r = t_tcp_pair("tcp:[::1]:0", &a, &b);
	if (r < 0) {
		print_message("skip: no IPv6 loopback here (%s)\n",
			      cqw_err_name(r));
		skip();
	}
	assert_int_equal(t_send(a, "six", 3), 0);
	assert_int_equal(b->tp->recv_into(b, buf, 8, &needed, -1), 3);
	t_free(a);
	t_free(b);
}

static void
test_win_sock_endpoints(void **state)
{
	struct cqw__lsock *l, *l2 = NULL;
	struct cqw__addr a, bound;
	cqw_fd h;
	int kind;

	(void)state;
	assert_int_equal(cqw__addr_parse(&a, "unix:/tmp/x"), 0);
	assert_int_equal(cqw__listen_open(&l, &a, 1, &bound), CQW_EAFNOSUPPORT);
	assert_int_equal(cqw__os_connect(&a, &h, &kind, -1), CQW_EAFNOSUPPORT);
	assert_int_equal(cqw__addr_parse(&a, "tcp:127.0.0.1:0"), 0);
	assert_int_equal(cqw__listen_open(&l, &a, 1, &bound), 0);
	assert_true(cqw__listen_fileno(l) > 0);
	/* The same port again: in use (Python's test_multiple_bind). */
	assert_int_equal(cqw__listen_open(&l2, &bound, 1, &a), CQW_EADDRINUSE);
	assert_int_equal(cqw__listen_close(l), 0);
	/* Nobody there now. */
	assert_int_equal(cqw__os_connect(&bound, &h, &kind, -1),
			 CQW_ECONNREFUSED);
	/* Handles that are not sockets nor message pipes. */
	assert_int_equal(cqw__io_fd_kind((cqw_fd)INVALID_HANDLE_VALUE),
			 CQW_EBADF);
	{
		HANDLE ev = CreateEventW(NULL, TRUE, FALSE, NULL);

		assert_true(cqw__io_fd_kind((cqw_fd)ev) < 0);
		CloseHandle(ev);
	}
}

/* wait() on sockets: data, EOF, and a probe that consumes nothing. */
static void
test_win_sock_wait(void **state)
{
	struct cqw_wait_item it[3];
	cqw_conn *a, *b, *c, *d;
	uint8_t buf[8];
	size_t needed;

	(void)state;
	assert_int_equal(t_tcp_pair("tcp:127.0.0.1:0", &a, &b), 0);
	assert_int_equal(t_tcp_pair("tcp:127.0.0.1:0", &c, &d), 0);
	memset(it, 0, sizeof(it));
	it[0].conn = b;
	it[1].conn = d;
	it[2].fd = a->fd; /* a raw socket */
	assert_int_equal(cqw__os_wait(it, 3, 50), 0);
	assert_int_equal(t_send(c, "hey", 3), 0);
	assert_int_equal(cqw__os_wait(it, 3, 2000), 1);
	assert_int_equal(it[1].ready, 1);
	assert_int_equal(cqw__os_wait(it, 3, 0), 1); /* nothing consumed */
	assert_int_equal(d->tp->recv_into(d, buf, 8, &needed, -1), 3);
	assert_int_equal(t_send(b, "", 0), 0);
	assert_int_equal(cqw__os_wait(it, 3, 2000), 1);
	assert_int_equal(it[2].ready, 1);
	t_free(c);
	assert_int_equal(cqw__os_wait(it, 3, 2000), 2);
	assert_int_equal(it[1].ready, 1);
	t_free(a);
	t_free(b);
	t_free(d);
}

/* A listening socket in wait(): ready when a peer is there to accept. */
static void
test_win_sock_wait_listener(void **state)
{
	struct cqw__lsock *l;
	struct cqw__addr a, bound;
	struct cqw_wait_item it[1];
	cqw_fd h1, h2;
	int kind;

	(void)state;
	assert_int_equal(cqw__addr_parse(&a, "tcp:127.0.0.1:0"), 0);
	assert_int_equal(cqw__listen_open(&l, &a, 4, &bound), 0);
	memset(it, 0, sizeof(it));
	it[0].fd = cqw__listen_fileno(l);
	assert_int_equal(cqw__os_wait(it, 1, 60), 0);
	assert_int_equal(cqw__os_connect(&bound, &h1, &kind, -1), 0);
	assert_int_equal(cqw__os_wait(it, 1, 2000), 1);
	assert_int_equal(cqw__listen_accept(l, &h2, &kind, 1000), 0);
	assert_int_equal(cqw__os_wait(it, 1, 0), 0);
	cqw__io_close(h1);
	cqw__io_close(h2);
	assert_int_equal(cqw__listen_close(l), 0);
}

/*
 * Bytes the asynchronous half read ahead for a CQW_EXCLUSIVE connection
 * (left in c->stage) come first: whole frames from them, then a frame
 * split between the stage and the kernel, then the kernel's.
 */
static void
test_win_sock_staged_bytes_first(void **state)
{
	static const uint8_t ahead[] = { 0, 0, 0, 3,   'o', 'n', 'e', 0,
					 0, 0, 4, 't', 'w', 'o', '!', 0,
					 0, 0, 5, 't', 'h', 'r' };
	struct cqw_msg m[4];
	uint8_t bufs[4][8];
	cqw_conn *a, *b;
	size_t needed;
	void *got;
	int i;

	(void)state;
	assert_int_equal(t_tcp_pair("tcp:127.0.0.1:0", &a, &b), 0);
	b->flags |= CQW_EXCLUSIVE;
	b->stage = malloc(CQW__STAGE_SIZE);
	assert_non_null(b->stage);
	memcpy(b->stage, ahead, sizeof(ahead));
	b->stage_off = 0;
	b->stage_len = sizeof(ahead);
	t_raw(a, "ee", 2);
	assert_int_equal(t_send(a, "four", 4), 0);
	assert_true(b->tp->ready_now(b));
	for (i = 0; i < 4; i++) {
		m[i].buf = bufs[i];
		m[i].cap = sizeof(bufs[i]);
	}
	assert_int_equal(b->tp->recv_batch(b, m, 4, 1000), 2);
	assert_int_equal(m[0].len, 3);
	assert_memory_equal(bufs[0], "one", 3);
	assert_int_equal(m[1].len, 4);
	assert_memory_equal(bufs[1], "two!", 4);
	assert_int_equal(b->tp->recv_into(b, bufs[0], 8, &needed, -1), 5);
	assert_memory_equal(bufs[0], "three", 5);
	assert_int_equal(b->stage_len, 0);
	assert_int_equal(b->tp->recv_alloc(b, &got, CQW_NONE), 4);
	assert_memory_equal(got, "four", 4);
	free(got);
	assert_int_equal(b->tp->poll(b, 0), 0);
	t_free(a);
	t_free(b);
}

/*
 * A socket made without WSA_FLAG_OVERLAPPED (a zero-byte overlapped
 * receive would block on it): not a connection's, but wait() on it still
 * times out and sees data.
 */
static void
test_win_sock_wait_sync_socket(void **state)
{
	struct cqw__lsock *l;
	struct cqw__addr a, bound;
	struct cqw_wait_item it[1];
	struct sockaddr_in sin;
	SOCKET s, s2;
	cqw_conn *c = NULL;
	cqw_fd h;
	int kind;
	int64_t t0;

	(void)state;
	assert_int_equal(cqw__addr_parse(&a, "tcp:127.0.0.1:0"), 0);
	assert_int_equal(cqw__listen_open(&l, &a, 4, &bound), 0);
	s = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, 0);
	assert_true(s != INVALID_SOCKET);
	assert_int_equal(cqw__win_is_sync((HANDLE)s), 1);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((u_short)bound.port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(cqw__listen_accept(l, &h, &kind, 5000), 0);
	assert_int_equal(cqw__win_is_sync((HANDLE)h), 0);
	/*
	 * Not a connection's: an I/O completion port refuses it (the iocp
	 * backend would say CQW_EBUSY), and every overlapped call on it
	 * would wait. cqw_conn_from_fd() refuses it and closes it, as it
	 * does a synchronous pipe; wait() on it as a raw socket still works.
	 */
	assert_int_equal(cqw__io_fd_kind((cqw_fd)s), CQW_EOPNOTSUPP);
	assert_int_equal(cqw__io_fd_kind(h), CQW__FD_SOCK);
	s2 = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, 0);
	assert_true(s2 != INVALID_SOCKET);
	assert_int_equal(cqw_conn_from_fd(&c, (cqw_fd)s2, CQW_DUPLEX),
			 CQW_EOPNOTSUPP);
	assert_int_equal(closesocket(s2), SOCKET_ERROR); /* closed already */
	memset(it, 0, sizeof(it));
	it[0].fd = (cqw_fd)s;
	t0 = cqw__now_ms();
	assert_int_equal(cqw__os_wait(it, 1, 80), 0);
	assert_true(cqw__now_ms() - t0 < 5000);
	assert_int_equal(send((SOCKET)h, "z", 1, 0), 1);
	assert_int_equal(cqw__os_wait(it, 1, 5000), 1);
	closesocket(s);
	cqw__io_close(h);
	assert_int_equal(cqw__listen_close(l), 0);
}

/*
 * A frame over 1 KiB whose queue stops growing is committed to (its
 * sender may be blocked until it is read): a deadline then keeps what was
 * read in the connection, and the next receive finishes the frame whole.
 */
static void
test_win_sock_stalled_large_frame(void **state)
{
	uint8_t hdr[4] = { 0, 0, 0x13, 0x88 }; /* 5000 */
	uint8_t *msg = malloc(5000), *buf = malloc(5000);
	cqw_conn *a, *b;
	size_t needed;
	u_long q = 1;

	(void)state;
	assert_non_null(msg);
	assert_non_null(buf);
	t_fill(msg, 5000, 77);
	assert_int_equal(t_tcp_pair("tcp:127.0.0.1:0", &a, &b), 0);
	t_raw(a, hdr, 4);
	t_raw(a, msg, 2000);
	Sleep(20);
	assert_int_equal(
	    b->tp->recv_into(b, buf, 5000, &needed, cqw__now_ms() + 200),
	    CQW_ETIMEDOUT);
	/* Taken by this connection: the kernel holds none of it now. */
	assert_int_equal(ioctlsocket((SOCKET)b->fd, (long)FIONREAD, &q), 0);
	assert_int_equal(q, 0);
	assert_int_equal(b->pay_got, 2000);
	assert_true(b->tp->ready_now(b));
	memset(buf, 0, 5000);
	t_raw(a, msg + 2000, 3000);
	assert_int_equal(b->tp->recv_into(b, buf, 5000, &needed, -1), 5000);
	assert_true(t_check(buf, 5000, 77));
	assert_false(b->tp->ready_now(b));
	t_free(a);
	t_free(b);
	free(msg);
	free(buf);
}

/*
 * The receiver's owner made its SO_RCVBUF smaller than a frame (then
 * handed the socket over): the frame is never queued whole, and its
 * sender blocks until it is read. A receive with a deadline must still
 * take it (it commits once the queue stops growing), never time out
 * again and again while poll() says readable.
 */
static void
test_win_sock_small_rcvbuf(void **state)
{
	struct t_sender s = { .len = 32768, .count = 1 };
	uint8_t *buf = malloc(32768);
	struct cqw__addr ad, bound;
	struct cqw__lsock *l;
	struct sockaddr_in sa;
	int rb = 4096, i, kind;
	int64_t n = 0;
	cqw_conn *a, *b;
	cqw_fd h;
	SOCKET raw;
	size_t needed;

	(void)state;
	assert_non_null(buf);
	assert_int_equal(cqw__addr_parse(&ad, "tcp:127.0.0.1:0"), 0);
	assert_int_equal(cqw__listen_open(&l, &ad, 4, &bound), 0);
	/* Set before connect(), so that the window is small from the start. */
	raw = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
	assert_true(raw != INVALID_SOCKET);
	assert_int_equal(setsockopt(raw, SOL_SOCKET, SO_RCVBUF,
				    (const char *)&rb, sizeof(rb)),
			 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((u_short)bound.port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(raw, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(cqw__listen_accept(l, &h, &kind, 5000), 0);
	assert_int_equal(cqw__listen_close(l), 0);
	assert_int_equal(cqw__io_fd_kind((cqw_fd)raw), CQW__FD_SOCK);
	a = t_conn(h, kind);
	b = t_conn((cqw_fd)raw, CQW__FD_SOCK);
	s.c = a;
	s.thread = CreateThread(NULL, 0, t_sender_main, &s, 0, NULL);
	assert_non_null(s.thread);
	for (i = 0; i < 5; i++) {
		n = b->tp->recv_into(b, buf, 32768, &needed,
				     cqw__now_ms() + 300);
		if (n != CQW_ETIMEDOUT) {
			break;
		}
	}
	if (n == CQW_ETIMEDOUT) {
		/* Unblock the sender before failing. */
		n = b->tp->recv_into(b, buf, 32768, &needed, -1);
		assert_int_equal(i, 0);
	}
	assert_int_equal(n, 32768);
	assert_true(t_check(buf, 32768, 0));
	assert_int_equal(WaitForSingleObject(s.thread, 10000), WAIT_OBJECT_0);
	CloseHandle(s.thread);
	assert_int_equal(s.result, 0);
	t_free(a);
	t_free(b);
	free(buf);
}

/* cqw_conn_set_spin(): a receive looks before it sleeps; same messages. */
static void
test_win_sock_spin(void **state)
{
	cqw_conn *a, *b;

	(void)state;
	assert_int_equal(t_tcp_pair("tcp:127.0.0.1:0", &a, &b), 0);
	a->spin_us = 300;
	b->spin_us = 300;
	t_round(a, b, 5, 6);
	t_round(b, a, 70000, 2);
	t_free(a);
	t_free(b);
}

/* Handles over TCP: a socket names no peer, so the target pid is given. */
static void
test_win_sock_handle_to_pid(void **state)
{
	HANDLE ev = CreateEventW(NULL, TRUE, FALSE, NULL);
	cqw_conn *a, *b;
	cqw_fd got = 0;
	uint8_t buf[64];
	size_t needed;

	(void)state;
	assert_non_null(ev);
	assert_int_equal(t_tcp_pair("tcp:127.0.0.1:0", &a, &b), 0);
	assert_int_equal(cqw__os_send_handle(a, (cqw_fd)ev, 0), CQW_EINVAL);
	assert_int_equal(
	    cqw__os_send_handle(a, (cqw_fd)ev, GetCurrentProcessId()), 0);
	assert_int_equal(cqw__os_recv_handle(b, &got), 0);
	assert_true(SetEvent((HANDLE)got));
	assert_int_equal(WaitForSingleObject(ev, 0), WAIT_OBJECT_0);
	CloseHandle((HANDLE)got);
	/* A longer frame is not a handle and stays for a receive. */
	memset(buf, 'x', sizeof(buf));
	assert_int_equal(t_send(a, buf, sizeof(buf)), 0);
	assert_int_equal(cqw__os_recv_handle(b, &got), CQW_ENOHANDLE);
	assert_int_equal(b->tp->recv_into(b, buf, sizeof(buf), &needed, -1),
			 64);
	t_free(a);
	t_free(b);
	CloseHandle(ev);
}

static int t_stop_calls;

static int
t_stop_third(void *arg)
{
	(void)arg;
	return ++t_stop_calls >= 3;
}

/* With a signal check set, a receive waiting on a socket can be stopped. */
static void
test_win_sock_signal_check_stops(void **state)
{
	uint8_t buf[8];
	cqw_conn *a, *b;
	size_t needed;
	void *got;

	(void)state;
	assert_int_equal(t_tcp_pair("tcp:127.0.0.1:0", &a, &b), 0);
	cqw_set_signal_check(t_stop_third, NULL);
	t_stop_calls = 0;
	assert_int_equal(b->tp->recv_into(b, buf, 8, &needed, -1), CQW_EINTR);
	t_stop_calls = 0;
	assert_int_equal(b->tp->recv_alloc(b, &got, CQW_NONE), CQW_EINTR);
	t_stop_calls = 0;
	assert_int_equal(b->tp->poll(b, -1), CQW_EINTR);
	cqw_set_signal_check(NULL, NULL);
	assert_int_equal(t_send(a, "ok", 2), 0);
	assert_int_equal(b->tp->recv_into(b, buf, 8, &needed, -1), 2);
	t_free(a);
	t_free(b);
}

static int64_t t_stop_at;

/* Stop once the time has come (asked every 1 ms in a cut header's nap). */
static int
t_stop_late(void *arg)
{
	(void)arg;
	return cqw__now_ms() >= t_stop_at;
}

/* A peer that sends the head of a 20-byte frame, then stalls. */
struct t_staller {
	cqw_conn *c;
	const uint8_t *msg;
	int cut;      /* the header in two pieces, 60 ms apart */
	HANDLE go_on; /* set by the test: send the rest now */
	HANDLE thread;
};

static DWORD WINAPI
t_staller_main(void *arg)
{
	struct t_staller *s = arg;
	uint8_t hdr[4] = { 0, 0, 0, 20 };

	/* Raw send(), not t_raw(): cmocka's asserts are the main thread's. */
	if (s->cut) {
		send((SOCKET)s->c->fd, (const char *)hdr, 2, 0);
		Sleep(60); /* past CUT_HEADER_MS: the receive goes consuming */
		send((SOCKET)s->c->fd, (const char *)hdr + 2, 2, 0);
	} else {
		send((SOCKET)s->c->fd, (const char *)hdr, 4, 0);
	}
	send((SOCKET)s->c->fd, (const char *)s->msg, 1, 0);
	/* Unstick a receive that cannot be stopped: the test then fails. */
	WaitForSingleObject(s->go_on, 3000);
	send((SOCKET)s->c->fd, (const char *)s->msg + 1, 19, 0);
	return 0;
}

/*
 * A sender stalls in the middle of a payload and the receive has no
 * deadline: the signal check stops it (CQW_EINTR, the part kept), and the
 * next receive hands up the whole frame once its rest comes. Through a
 * peeked header (the one gather read) and a cut one (read consuming),
 * into a buffer and allocated. With dl, no check but a deadline, after a
 * cut header (the frame is then read as it comes): CQW_ETIMEDOUT at the
 * deadline, the part kept (a peer could hold cqw_accept's handshake so).
 */
static void
t_stall_case(int cut, int alloc, int dl)
{
	struct t_staller s = { .cut = cut };
	uint8_t msg[20], buf[64];
	cqw_conn *a, *b;
	size_t needed;
	void *got = NULL;
	int64_t n, t0;

	t_fill(msg, sizeof(msg), 5);
	s.msg = msg;
	assert_int_equal(t_tcp_pair("tcp:127.0.0.1:0", &a, &b), 0);
	s.c = a;
	s.go_on = CreateEventW(NULL, TRUE, FALSE, NULL);
	assert_non_null(s.go_on);
	s.thread = CreateThread(NULL, 0, t_staller_main, &s, 0, NULL);
	assert_non_null(s.thread);
	if (!cut) {
		Sleep(50); /* the header and a byte are queued: peeked whole */
	}
	t0 = cqw__now_ms();
	t_stop_at = t0 + 400;
	if (dl) {
		n = b->tp->recv_into(b, buf, sizeof(buf), &needed, t0 + 400);
	} else {
		cqw_set_signal_check(t_stop_late, NULL);
		if (alloc) {
			n = b->tp->recv_alloc(b, &got, CQW_NONE);
		} else {
			n = b->tp->recv_into(b, buf, sizeof(buf), &needed, -1);
		}
	}
	cqw_set_signal_check(NULL, NULL);
	SetEvent(s.go_on);
	assert_int_equal(WaitForSingleObject(s.thread, 10000), WAIT_OBJECT_0);
	CloseHandle(s.thread);
	CloseHandle(s.go_on);
	if (n >= 0) {
		free(got);
	}
	assert_int_equal(n, dl ? CQW_ETIMEDOUT : CQW_EINTR);
	assert_true(cqw__now_ms() - t0 < 2000);
	/* The part read is kept: the frame is whole on the next receive. */
	assert_true(b->tp->ready_now(b));
	memset(buf, 0, sizeof(buf));
	if (alloc) {
		assert_int_equal(b->tp->recv_alloc(b, &got, CQW_NONE), 20);
		assert_memory_equal(got, msg, 20);
		free(got);
	} else {
		assert_int_equal(
		    b->tp->recv_into(b, buf, sizeof(buf), &needed, -1), 20);
		assert_memory_equal(buf, msg, 20);
	}
	assert_false(b->tp->ready_now(b));
	t_free(a);
	t_free(b);
}

static void
test_win_sock_signal_check_mid_payload(void **state)
{
	(void)state;
	t_stall_case(0, 0, 0);
	t_stall_case(0, 1, 0);
	t_stall_case(1, 0, 0);
	t_stall_case(1, 1, 0);
	t_stall_case(1, 0, 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_win_sock_sizes_both_ways),
		cmocka_unit_test(test_win_sock_wire_bytes),
		cmocka_unit_test(test_win_sock_too_short_stays),
		cmocka_unit_test(test_win_sock_deadline_partial),
		cmocka_unit_test(test_win_sock_batch),
		cmocka_unit_test(test_win_sock_eof),
		cmocka_unit_test(test_win_sock_ipv6),
		cmocka_unit_test(test_win_sock_endpoints),
		cmocka_unit_test(test_win_sock_wait),
		cmocka_unit_test(test_win_sock_wait_listener),
		cmocka_unit_test(test_win_sock_wait_sync_socket),
		cmocka_unit_test(test_win_sock_staged_bytes_first),
		cmocka_unit_test(test_win_sock_stalled_large_frame),
		cmocka_unit_test(test_win_sock_small_rcvbuf),
		cmocka_unit_test(test_win_sock_spin),
		cmocka_unit_test(test_win_sock_handle_to_pid),
		cmocka_unit_test(test_win_sock_signal_check_stops),
		cmocka_unit_test(test_win_sock_signal_check_mid_payload),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
