/*
 * src/win's named pipes through the message transport's synchronous half
 * and the platform calls: Pipe() both ways with 0 B .. 16 MiB messages,
 * a message longer than the buffer (queued: nothing consumed; arriving
 * while the read waits: ERROR_MORE_DATA, the part kept), recv_alloc and
 * maxlength, zero-length messages through poll and wait (never lost or
 * doubled), timeouts that consume nothing, the listener (a client that
 * connects, writes and closes before accept; many clients at once), a
 * peer process killed in the middle of a message, wait() on 200 items,
 * and handle passing.
 *
 * The connections are made here from handles, as conn.c makes them
 * (t_conn), and driven through their transport's table.
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

static char t_self[MAX_PATH];

/* A connection on handle h, as conn.c makes one. */
static cqw_conn *
t_conn(cqw_fd h, int kind, unsigned flags)
{
	cqw_conn *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->fd = h;
	c->kind = kind;
	c->flags = flags;
	c->tp = cqw__transport_for(kind);
	assert_non_null(c->tp);
	cqw__dec_reset(&c->dec);
	return c;
}

static void
t_free(cqw_conn *c)
{
	if (c == NULL) {
		return;
	}
	c->tp->release(c);
	if (!c->closed) {
		assert_int_equal(cqw__io_close(c->fd), 0);
	}
	free(c);
}

static void
t_pipe(cqw_conn **a, cqw_conn **b, int duplex)
{
	cqw_fd h[2];
	int kind[2];

	assert_int_equal(cqw__os_pipe(h, kind, duplex), 0);
	assert_int_equal(kind[0], CQW__FD_MSGPIPE);
	assert_int_equal(kind[1], CQW__FD_MSGPIPE);
	/* What cqw__io_fd_kind says of them, as cqw_conn_from_fd asks. */
	assert_int_equal(cqw__io_fd_kind(h[0]), CQW__FD_MSGPIPE);
	assert_int_equal(cqw__io_fd_kind(h[1]), CQW__FD_MSGPIPE);
	*a = t_conn(h[0], kind[0], duplex ? CQW_DUPLEX : CQW_READABLE);
	*b = t_conn(h[1], kind[1], duplex ? CQW_DUPLEX : CQW_WRITABLE);
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

/* A sender on another thread: count messages of len bytes, after delay. */
struct t_sender {
	cqw_conn *c;
	size_t len;
	int count;
	unsigned delay_ms;
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
	Sleep(s->delay_ms);
	for (i = 0; i < s->count && s->result == 0; i++) {
		t_fill(buf, s->len, (unsigned)i);
		s->result = t_send(s->c, buf, s->len);
	}
	free(buf);
	return 0;
}

static void
t_sender_start(struct t_sender *s, cqw_conn *c, size_t len, int count,
	       unsigned delay_ms)
{
	memset(s, 0, sizeof(*s));
	s->c = c;
	s->len = len;
	s->count = count;
	s->delay_ms = delay_ms;
	s->thread = CreateThread(NULL, 0, t_sender_main, s, 0, NULL);
	assert_non_null(s->thread);
}

static void
t_sender_join(struct t_sender *s)
{
	assert_int_equal(WaitForSingleObject(s->thread, 60000), WAIT_OBJECT_0);
	CloseHandle(s->thread);
	assert_int_equal(s->result, 0);
}

/* Send count messages of len from one end, receive them at the other. */
static void
t_round(cqw_conn *from, cqw_conn *to, size_t len, int count)
{
	struct t_sender s;
	uint8_t *buf = malloc(len + 16);
	size_t needed = 0;
	void *got = NULL;
	int64_t n;
	int i;

	assert_non_null(buf);
	t_sender_start(&s, from, len, count, 0);
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
	t_sender_join(&s);
	free(buf);
}

static void
test_win_pipe_sizes_both_ways(void **state)
{
	static const size_t sizes[] = { 0, 5, 65536, 1 << 20, 16 << 20 };
	cqw_conn *a, *b;
	size_t i;

	(void)state;
	t_pipe(&a, &b, 1);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		t_round(a, b, sizes[i], sizes[i] > (1 << 20) ? 2 : 4);
		t_round(b, a, sizes[i], sizes[i] > (1 << 20) ? 2 : 4);
	}
	t_free(a);
	t_free(b);
}

static void
test_win_pipe_simplex(void **state)
{
	cqw_conn *r, *w;

	(void)state;
	t_pipe(&r, &w, 0);
	t_round(w, r, 5, 3);
	t_round(w, r, 1 << 20, 2);
	/* The reader cannot write, the writer cannot read. */
	assert_true(t_send(r, "x", 1) < 0);
	assert_int_equal(cqw__pipe_peek_ready((HANDLE)w->fd), 0);
	t_free(r);
	t_free(w);
}

/* A queued message longer than the buffer: refused, nothing consumed. */
static void
test_win_pipe_too_short_keeps_queued(void **state)
{
	uint8_t msg[300], buf[300];
	cqw_conn *a, *b;
	size_t needed = 0;
	int64_t n;

	(void)state;
	t_pipe(&a, &b, 1);
	t_fill(msg, sizeof(msg), 9);
	assert_int_equal(t_send(a, msg, sizeof(msg)), 0);
	assert_int_equal(t_send(a, "next", 4), 0);
	n = b->tp->recv_into(b, buf, 10, &needed, -1);
	assert_int_equal(n, CQW_ETOOSHORT);
	assert_int_equal(needed, sizeof(msg));
	/* Still whole in the pipe, for any reader of the handle. */
	assert_int_equal(b->msg_len, 0);
	assert_int_equal(b->part, NULL);
	n = b->tp->recv_into(b, buf, 0, &needed, -1);
	assert_int_equal(n, CQW_ETOOSHORT);
	n = b->tp->recv_into(b, buf, sizeof(buf), &needed, -1);
	assert_int_equal(n, sizeof(msg));
	assert_true(t_check(buf, sizeof(msg), 9));
	n = b->tp->recv_into(b, buf, sizeof(buf), &needed, -1);
	assert_int_equal(n, 4);
	assert_memory_equal(buf, "next", 4);
	t_free(a);
	t_free(b);
}

/*
 * The message arrives while a read of 10 bytes waits: ERROR_MORE_DATA.
 * Its part is kept, the needed size is right, and the next receive with
 * room gets the whole message; the one after it follows.
 */
static void
test_win_pipe_more_data_keeps_part(void **state)
{
	struct t_sender s;
	uint8_t buf[5000];
	cqw_conn *a, *b;
	size_t needed = 0;
	void *got;
	int64_t n;

	(void)state;
	t_pipe(&a, &b, 1);
	t_sender_start(&s, a, 4000, 2, 200);
	n = b->tp->recv_into(b, buf, 10, &needed, -1);
	assert_int_equal(n, CQW_ETOOSHORT);
	assert_int_equal(needed, 4000);
	assert_int_equal(b->msg_got, 10);
	assert_true(b->tp->ready_now(b));
	assert_int_equal(b->tp->poll(b, 0), 1);
	/* Still too short: kept again, nothing lost. */
	n = b->tp->recv_into(b, buf, 3999, &needed, -1);
	assert_int_equal(n, CQW_ETOOSHORT);
	assert_int_equal(needed, 4000);
	n = b->tp->recv_into(b, buf, sizeof(buf), &needed, -1);
	assert_int_equal(n, 4000);
	assert_true(t_check(buf, 4000, 0));
	assert_false(b->tp->ready_now(b));
	t_sender_join(&s);
	n = b->tp->recv_alloc(b, &got, CQW_NONE);
	assert_int_equal(n, 4000);
	assert_true(t_check(got, 4000, 1));
	free(got);

	/* The same through recv_alloc's small first read (128 bytes). */
	t_sender_start(&s, a, 3000, 1, 200);
	n = b->tp->recv_alloc(b, &got, CQW_NONE);
	assert_int_equal(n, 3000);
	assert_true(t_check(got, 3000, 0));
	free(got);
	t_sender_join(&s);
	t_free(a);
	t_free(b);
}

/*
 * The writer goes between a kept part and its rest. A writer that closes
 * its end leaves the message readable (it is DisconnectNamedPipe that
 * discards unread data): the receive gets it whole. A server that
 * disconnects the instance takes the rest with it: the message is cut,
 * CQW_ETRUNC (as the stream transport says of a cut frame, and the async
 * framer of this one), not sticky, and the next receive sees the end.
 * how: 0 the server closes, 1 the client closes, 2 the server
 * disconnects; into a buffer and through recv_alloc.
 */
static void
t_writer_gone_case(int how, int alloc)
{
	struct t_sender s;
	uint8_t buf[5000];
	cqw_conn *a, *b, *w, *r;
	size_t needed = 0;
	void *got = NULL;
	int64_t n;

	t_pipe(&a, &b, 1);
	w = how == 1 ? b : a;
	r = how == 1 ? a : b;
	t_sender_start(&s, w, 4000, 1, 200);
	n = r->tp->recv_into(r, buf, 10, &needed, -1);
	assert_int_equal(n, CQW_ETOOSHORT);
	assert_int_equal(needed, 4000);
	assert_int_equal(r->msg_got, 10);
	t_sender_join(&s);
	if (how == 2) {
		assert_true(DisconnectNamedPipe((HANDLE)w->fd));
	} else {
		assert_int_equal(cqw__io_close(w->fd), 0);
		w->closed = 1;
	}
	if (alloc) {
		n = r->tp->recv_alloc(r, &got, CQW_NONE);
	} else {
		n = r->tp->recv_into(r, buf, sizeof(buf), &needed, -1);
	}
	if (how == 2) {
		assert_int_equal(n, CQW_ETRUNC);
		assert_int_equal(r->recv_error, 0);
	} else {
		assert_int_equal(n, 4000);
		assert_true(t_check(alloc ? got : buf, 4000, 0));
		free(got);
	}
	assert_int_equal(r->msg_len, 0);
	assert_false(r->tp->ready_now(r));
	assert_int_equal(r->tp->recv_into(r, buf, sizeof(buf), &needed, -1),
			 CQW_EOF);
	t_free(a);
	t_free(b);
}

static void
test_win_pipe_writer_gone_after_part(void **state)
{
	int how;

	(void)state;
	for (how = 0; how < 3; how++) {
		t_writer_gone_case(how, 0);
		t_writer_gone_case(how, 1);
	}
}

/* A server end that writes one message, then disconnects the instance. */
struct t_dropper {
	cqw_conn *c;
	int result;
	HANDLE thread;
};

static DWORD WINAPI
t_dropper_main(void *arg)
{
	struct t_dropper *d = arg;
	uint8_t *buf = malloc(4000);

	if (buf == NULL) {
		d->result = CQW_ENOMEM;
		return 0;
	}
	t_fill(buf, 4000, 9);
	Sleep(50); /* the receive is waiting by now */
	d->result = t_send(d->c, buf, 4000);
	if (d->result == 0 && !DisconnectNamedPipe((HANDLE)d->c->fd)) {
		d->result = CQW_EIO;
	}
	free(buf);
	return 0;
}

/*
 * A message arrives while a read waits (ERROR_MORE_DATA) and the server
 * disconnects right after writing it: the look at its rest races the
 * disconnect. Either way nothing is sticky: a part taken is a cut
 * message (CQW_ETRUNC) and then the end; a zero-byte read took nothing
 * and the end follows (CQW_EOF). Rounds, to meet both orders.
 */
static void
test_win_pipe_disconnect_races_rest(void **state)
{
	struct t_dropper d;
	uint8_t buf[5000];
	cqw_conn *a, *b;
	size_t needed, cap;
	int64_t n;
	int i, early = 0;

	(void)state;
	for (i = 0; i < 40; i++) {
		cap = i % 2 == 0 ? 10 : 0;
		t_pipe(&a, &b, 1);
		memset(&d, 0, sizeof(d));
		d.c = a;
		d.thread = CreateThread(NULL, 0, t_dropper_main, &d, 0, NULL);
		assert_non_null(d.thread);
		needed = 0;
		n = b->tp->recv_into(b, buf, cap, &needed, -1);
		assert_int_equal(WaitForSingleObject(d.thread, 10000),
				 WAIT_OBJECT_0);
		CloseHandle(d.thread);
		assert_int_equal(d.result, 0);
		if (n == CQW_ETOOSHORT) {
			/* The rest was seen: the part (if any) is kept. */
			assert_int_equal(needed, 4000);
			n = b->tp->recv_into(b, buf, sizeof(buf), &needed, -1);
		} else {
			early++;
		}
		assert_int_equal(n, cap > 0 ? CQW_ETRUNC : CQW_EOF);
		assert_int_equal(b->recv_error, 0);
		assert_int_equal(b->msg_len, 0);
		assert_int_equal(
		    b->tp->recv_into(b, buf, sizeof(buf), &needed, -1),
		    CQW_EOF);
		t_free(a);
		t_free(b);
	}
	print_message("the disconnect came first in %d of 40 rounds\n", early);
}

/* maxlength: refused without allocating it, the connection poisoned. */
static void
test_win_pipe_maxlength(void **state)
{
	uint8_t msg[1000];
	cqw_conn *a, *b;
	void *got = NULL;

	(void)state;
	t_pipe(&a, &b, 1);
	t_fill(msg, sizeof(msg), 1);
	assert_int_equal(t_send(a, msg, sizeof(msg)), 0);
	assert_int_equal(b->tp->recv_alloc(b, &got, 999), CQW_EMSGSIZE);
	assert_null(got);
	assert_int_equal(b->flags & CQW_READABLE, 0);
	t_free(a);
	t_free(b);
}

/*
 * Zero-length messages (WIRE.md §7.4): poll's zero-byte probe consumes
 * one on Windows 8+, and the next receive must return it, once.
 */
static void
test_win_pipe_empty_through_poll(void **state)
{
	struct t_sender s;
	uint8_t buf[8];
	cqw_conn *a, *b;
	size_t needed;
	void *got;

	(void)state;
	t_pipe(&a, &b, 1);
	assert_int_equal(b->tp->poll(b, 0), 0);
	assert_int_equal(t_send(a, "", 0), 0);
	assert_int_equal(t_send(a, "abc", 3), 0);
	assert_int_equal(b->tp->poll(b, 0), 1);
	assert_int_equal(b->tp->poll(b, 100), 1); /* still: not doubled */
	assert_int_equal(b->tp->recv_into(b, buf, sizeof(buf), &needed, -1), 0);
	assert_int_equal(b->tp->recv_into(b, buf, sizeof(buf), &needed, -1), 3);
	assert_memory_equal(buf, "abc", 3);
	assert_int_equal(b->tp->poll(b, 0), 0);

	/* One that arrives while poll waits (the probe pending). */
	t_sender_start(&s, a, 0, 1, 150);
	assert_int_equal(b->tp->poll(b, 5000), 1);
	t_sender_join(&s);
	assert_int_equal(b->tp->poll(b, 0), 1);
	assert_int_equal(b->tp->recv_alloc(b, &got, CQW_NONE), 0);
	free(got);
	assert_int_equal(b->tp->poll(b, 50), 0);

	/* A non-empty one arriving during poll is not consumed by it. */
	t_sender_start(&s, a, 7, 1, 100);
	assert_int_equal(b->tp->poll(b, 5000), 1);
	t_sender_join(&s);
	assert_int_equal(b->tp->recv_into(b, buf, sizeof(buf), &needed, -1), 7);
	assert_true(t_check(buf, 7, 0));
	t_free(a);
	t_free(b);
}

static void
test_win_pipe_empty_through_wait(void **state)
{
	struct cqw_wait_item it[2];
	uint8_t buf[8];
	cqw_conn *a, *b, *c, *d;
	size_t needed;

	(void)state;
	t_pipe(&a, &b, 1);
	t_pipe(&c, &d, 1);
	memset(it, 0, sizeof(it));
	it[0].conn = b;
	it[1].conn = d;
	assert_int_equal(cqw__os_wait(it, 2, 0), 0);
	assert_int_equal(t_send(c, "", 0), 0);
	assert_int_equal(cqw__os_wait(it, 2, 1000), 1);
	assert_int_equal(it[0].ready, 0);
	assert_int_equal(it[1].ready, 1);
	/* The probe took it; the connection owes it: ready, not lost. */
	assert_int_equal(cqw__os_wait(it, 2, 0), 1);
	assert_int_equal(d->tp->recv_into(d, buf, sizeof(buf), &needed, -1), 0);
	assert_int_equal(cqw__os_wait(it, 2, 50), 0);
	t_free(a);
	t_free(b);
	t_free(c);
	t_free(d);
}

/* Timeouts consume nothing; a batch takes what is there. */
static void
test_win_pipe_timeout_and_batch(void **state)
{
	struct cqw_msg m[4];
	uint8_t bufs[4][16];
	cqw_conn *a, *b;
	size_t needed;
	int64_t t0;
	int i;

	(void)state;
	t_pipe(&a, &b, 1);
	t0 = cqw__now_ms();
	assert_int_equal(
	    b->tp->recv_into(b, bufs[0], 16, &needed, cqw__now_ms() + 100),
	    CQW_ETIMEDOUT);
	assert_true(cqw__now_ms() - t0 >= 90);
	for (i = 0; i < 4; i++) {
		m[i].buf = bufs[i];
		m[i].cap = sizeof(bufs[i]);
		m[i].len = 0;
	}
	assert_int_equal(b->tp->recv_batch(b, m, 4, 50), 0);
	assert_int_equal(t_send(a, "one", 3), 0);
	assert_int_equal(t_send(a, "", 0), 0);
	assert_int_equal(t_send(a, "three", 5), 0);
	assert_int_equal(t_send(a, "a message too long for 16", 25), 0);
	assert_int_equal(b->tp->recv_batch(b, m, 4, 1000), 3);
	assert_int_equal(m[0].len, 3);
	assert_int_equal(m[1].len, 0);
	assert_int_equal(m[2].len, 5);
	assert_memory_equal(bufs[2], "three", 5);
	/* The long one is kept for a buffer with room. */
	assert_int_equal(b->tp->recv_batch(b, m, 4, 1000), CQW_ETOOSHORT);
	assert_int_equal(m[0].len, 25);
	t_free(a);
	t_free(b);
}

/* The writer goes: EOF after what it wrote, a write to a gone reader. */
static void
test_win_pipe_eof(void **state)
{
	cqw_conn *a, *b;
	uint8_t buf[8];
	size_t needed;

	(void)state;
	t_pipe(&a, &b, 1);
	assert_int_equal(t_send(a, "bye", 3), 0);
	t_free(a);
	assert_int_equal(b->tp->poll(b, 0), 1);
	assert_int_equal(b->tp->recv_into(b, buf, sizeof(buf), &needed, -1), 3);
	assert_int_equal(b->tp->poll(b, 1000), 1);
	assert_int_equal(b->tp->recv_into(b, buf, sizeof(buf), &needed, -1),
			 CQW_EOF);
	assert_int_equal(t_send(b, "x", 1), CQW_EPIPE);
	t_free(b);
}

static void
t_pipe_addr(struct cqw__addr *a, const char *tag)
{
	char s[128];

	snprintf(s, sizeof(s), "pipe:\\\\.\\pipe\\cqw-test-%s-%lu", tag,
		 (unsigned long)GetCurrentProcessId());
	assert_int_equal(cqw__addr_parse(a, s), 0);
	assert_int_equal(a->kind, CQW__ADDR_PIPE);
}

/* Python's issue14725: connect, write and close before the accept. */
static void
test_win_pipe_listener_early_client(void **state)
{
	struct cqw__lsock *l;
	struct cqw__addr a, bound;
	cqw_conn *c, *s;
	cqw_fd h;
	uint8_t buf[16];
	size_t needed;
	int kind;

	(void)state;
	t_pipe_addr(&a, "early");
	assert_int_equal(cqw__listen_open(&l, &a, 1, &bound), 0);
	assert_string_equal(bound.path, a.path);
	assert_int_equal(cqw__listen_accept(l, &h, &kind, 50), CQW_ETIMEDOUT);
	assert_int_equal(cqw__os_connect(&a, &h, &kind, -1), 0);
	assert_int_equal(kind, CQW__FD_MSGPIPE);
	c = t_conn(h, kind, CQW_DUPLEX);
	assert_int_equal(t_send(c, "hello", 5), 0);
	t_free(c);
	assert_int_equal(cqw__listen_accept(l, &h, &kind, 5000), 0);
	s = t_conn(h, kind, CQW_DUPLEX);
	assert_int_equal(s->tp->recv_into(s, buf, sizeof(buf), &needed, -1), 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(s->tp->recv_into(s, buf, sizeof(buf), &needed, -1),
			 CQW_EOF);
	t_free(s);
	assert_int_equal(cqw__listen_close(l), 0);
}

struct t_client {
	struct cqw__addr *a;
	int id;
	int result;
};

static DWORD WINAPI
t_client_main(void *arg)
{
	struct t_client *t = arg;
	cqw_conn *c;
	uint8_t buf[8];
	size_t needed;
	cqw_fd h;
	int kind;
	int64_t n;

	t->result = cqw__os_connect(t->a, &h, &kind, -1);
	if (t->result < 0) {
		return 0;
	}
	c = calloc(1, sizeof(*c));
	c->fd = h;
	c->kind = kind;
	c->flags = CQW_DUPLEX;
	c->tp = cqw__transport_for(kind);
	t->result = t_send(c, &t->id, sizeof(t->id));
	if (t->result == 0) {
		/* The server echoes it: the pairing is right. */
		n = c->tp->recv_into(c, buf, sizeof(buf), &needed, -1);
		t->result = n == sizeof(t->id) &&
				    memcmp(buf, &t->id, sizeof(t->id)) == 0
				? 0
				: -1;
	}
	c->tp->release(c);
	cqw__io_close(c->fd);
	free(c);
	return 0;
}

/* Many clients at once: busy pipes are retried, every one is served. */
static void
test_win_pipe_listener_many_clients(void **state)
{
	enum { N = 24 };
	struct t_client cl[N];
	HANDLE th[N];
	struct cqw__lsock *l;
	struct cqw__addr a, bound;
	uint8_t buf[8];
	size_t needed;
	cqw_conn *s;
	cqw_fd h;
	int i, kind, seen[N];

	(void)state;
	t_pipe_addr(&a, "many");
	assert_int_equal(cqw__listen_open(&l, &a, 1, &bound), 0);
	memset(seen, 0, sizeof(seen));
	for (i = 0; i < N; i++) {
		cl[i].a = &a;
		cl[i].id = i;
		cl[i].result = 1;
		th[i] = CreateThread(NULL, 0, t_client_main, &cl[i], 0, NULL);
		assert_non_null(th[i]);
	}
	for (i = 0; i < N; i++) {
		int id;

		assert_int_equal(cqw__listen_accept(l, &h, &kind, 20000), 0);
		s = t_conn(h, kind, CQW_DUPLEX);
		assert_int_equal(s->tp->recv_into(s, buf, sizeof(buf), &needed,
						  cqw__now_ms() + 20000),
				 (int64_t)sizeof(id));
		memcpy(&id, buf, sizeof(id));
		assert_true(id >= 0 && id < N && !seen[id]);
		seen[id] = 1;
		assert_int_equal(t_send(s, &id, sizeof(id)), 0);
		/* Read the client's close, so our close never cuts the echo. */
		assert_int_equal(
		    s->tp->recv_into(s, buf, sizeof(buf), &needed, -1),
		    CQW_EOF);
		t_free(s);
	}
	for (i = 0; i < N; i++) {
		assert_int_equal(WaitForSingleObject(th[i], 30000),
				 WAIT_OBJECT_0);
		CloseHandle(th[i]);
		assert_int_equal(cl[i].result, 0);
	}
	assert_int_equal(cqw__listen_close(l), 0);
}

static int
t_is_wine(void)
{
	HMODULE nt = GetModuleHandleW(L"ntdll.dll");

	return nt != NULL && GetProcAddress(nt, "wine_get_version") != NULL;
}

/* A second listener on one name is refused (not under wine). */
static void
test_win_pipe_listener_in_use(void **state)
{
	struct cqw__lsock *l, *l2 = NULL;
	struct cqw__addr a, bound;
	int r;

	(void)state;
	t_pipe_addr(&a, "inuse");
	assert_int_equal(cqw__listen_open(&l, &a, 1, &bound), 0);
	r = cqw__listen_open(&l2, &a, 1, &bound);
	if (t_is_wine()) {
		/* wine ignores FILE_FLAG_FIRST_PIPE_INSTANCE (WINDOWS.md). */
		if (r == 0) {
			cqw__listen_close(l2);
		}
	} else {
		assert_int_equal(r, CQW_EADDRINUSE);
	}
	assert_int_equal(cqw__listen_close(l), 0);
	/* A name nobody listens on: not found, at once (no 20 s wait). */
	{
		cqw_fd h;
		int kind;
		int64_t t0 = cqw__now_ms();

		assert_int_equal(cqw__os_connect(&a, &h, &kind, -1),
				 CQW_ENOENT);
		assert_true(cqw__now_ms() - t0 < 5000);
	}
}

/*
 * The child of test_win_pipe_peer_killed: connect, say "ready", then send
 * one 8 MiB message, which blocks in WriteFile until it is read (it is
 * not: the parent kills this process in the middle of it).
 */
static int
t_child_kill(const char *addr)
{
	struct cqw__addr a;
	cqw_conn *c;
	uint8_t *big = malloc(8 << 20);
	cqw_fd h;
	int kind;

	if (big == NULL || cqw__addr_parse(&a, addr) != 0 ||
	    cqw__os_connect(&a, &h, &kind, -1) != 0) {
		return 2;
	}
	c = t_conn(h, kind, CQW_DUPLEX);
	t_fill(big, 8 << 20, 5);
	if (t_send(c, "ready", 5) != 0) {
		return 3;
	}
	t_send(c, big, 8 << 20);
	Sleep(INFINITE);
	return 4;
}

/*
 * A peer killed mid-message: the receiver gets either the whole message
 * or an error, never a torn message handed up as whole, and then the end.
 */
static void
test_win_pipe_peer_killed(void **state)
{
	STARTUPINFOW si;
	PROCESS_INFORMATION pi;
	struct cqw__lsock *l;
	struct cqw__addr a, bound;
	wchar_t cmd[1024];
	char addr[128];
	uint8_t buf[16];
	size_t needed;
	cqw_conn *s;
	void *got = NULL;
	cqw_fd h;
	int kind, i;
	int64_t n;

	(void)state;
	t_pipe_addr(&a, "kill");
	snprintf(addr, sizeof(addr), "pipe:%s", a.path);
	assert_int_equal(cqw__listen_open(&l, &a, 1, &bound), 0);
	swprintf(cmd, sizeof(cmd) / sizeof(cmd[0]), L"\"%hs\" child-kill %hs",
		 t_self, addr);
	memset(&si, 0, sizeof(si));
	si.cb = sizeof(si);
	assert_true(CreateProcessW(NULL, cmd, NULL, NULL, FALSE, 0, NULL, NULL,
				   &si, &pi));
	assert_int_equal(cqw__listen_accept(l, &h, &kind, 20000), 0);
	s = t_conn(h, kind, CQW_DUPLEX);
	assert_int_equal(s->tp->recv_into(s, buf, sizeof(buf), &needed,
					  cqw__now_ms() + 20000),
			 5);
	assert_memory_equal(buf, "ready", 5);
	/* Wait until part of the big message is in the pipe, then kill. */
	for (i = 0; i < 2000 && !cqw__pipe_peek_ready((HANDLE)s->fd); i++) {
		Sleep(5);
	}
	assert_true(TerminateProcess(pi.hProcess, 9));
	assert_int_equal(WaitForSingleObject(pi.hProcess, 10000),
			 WAIT_OBJECT_0);
	n = s->tp->recv_alloc(s, &got, CQW_NONE);
	if (n >= 0) {
		assert_int_equal(n, 8 << 20);
		assert_true(t_check(got, 8 << 20, 5));
		free(got);
		n = s->tp->recv_alloc(s, &got, CQW_NONE);
	}
	/* Gone: the end (or an error), and it stays so. */
	assert_true(n < 0);
	print_message("after the kill: %s\n", cqw_err_name((int)n));
	assert_true(s->tp->poll(s, 1000) != 0);
	CloseHandle(pi.hProcess);
	CloseHandle(pi.hThread);
	t_free(s);
	assert_int_equal(cqw__listen_close(l), 0);
}

/* wait() on 200 connections and 200 events: beyond 64 handles. */
static void
test_win_pipe_wait_200(void **state)
{
	enum { N = 200 };
	cqw_conn *r[N], *w[N];
	HANDLE ev[N];
	struct cqw_wait_item *it = calloc(2 * N, sizeof(*it));
	uint8_t buf[8];
	size_t needed;
	int64_t t0;
	int i;

	(void)state;
	assert_non_null(it);
	for (i = 0; i < N; i++) {
		t_pipe(&r[i], &w[i], 1);
		ev[i] = CreateEventW(NULL, TRUE, FALSE, NULL);
		assert_non_null(ev[i]);
		it[i].conn = r[i];
		it[N + i].fd = (cqw_fd)ev[i];
	}
	t0 = cqw__now_ms();
	assert_int_equal(cqw__os_wait(it, 2 * N, 100), 0);
	assert_true(cqw__now_ms() - t0 >= 90);
	assert_int_equal(t_send(w[7], "a", 1), 0);
	assert_int_equal(t_send(w[150], "", 0), 0);
	assert_int_equal(t_send(w[199], "abc", 3), 0);
	SetEvent(ev[70]);
	SetEvent(ev[199]);
	assert_int_equal(cqw__os_wait(it, 2 * N, 5000), 5);
	for (i = 0; i < 2 * N; i++) {
		int want = i == 7 || i == 150 || i == 199 || i == N + 70 ||
			   i == N + 199;

		assert_int_equal(it[i].ready, want);
	}
	/* The empty message the probe took is owed, then gone. */
	assert_int_equal(
	    r[150]->tp->recv_into(r[150], buf, sizeof(buf), &needed, -1), 0);
	assert_int_equal(r[7]->tp->recv_into(r[7], buf, 8, &needed, -1), 1);
	assert_int_equal(r[199]->tp->recv_into(r[199], buf, 8, &needed, -1), 3);
	ResetEvent(ev[70]);
	ResetEvent(ev[199]);
	assert_int_equal(cqw__os_wait(it, 2 * N, 0), 0);
	/* One that comes while the pool waits wakes it. */
	{
		struct t_sender s;

		t_sender_start(&s, w[123], 2, 1, 100);
		assert_int_equal(cqw__os_wait(it, 2 * N, 5000), 1);
		assert_int_equal(it[123].ready, 1);
		t_sender_join(&s);
	}
	for (i = 0; i < N; i++) {
		t_free(r[i]);
		t_free(w[i]);
		CloseHandle(ev[i]);
	}
	free(it);
}

/* A handle duplicated into the pipe's peer (ourselves here) and used. */
static void
test_win_pipe_handle_passing(void **state)
{
	HANDLE ev = CreateEventW(NULL, TRUE, FALSE, NULL);
	cqw_conn *a, *b;
	cqw_fd got = 0;

	(void)state;
	assert_non_null(ev);
	t_pipe(&a, &b, 1);
	assert_int_equal(cqw__os_send_handle(a, (cqw_fd)ev, 0), 0);
	assert_int_equal(cqw__os_recv_handle(b, &got), 0);
	assert_true(got != 0 && (HANDLE)got != ev);
	assert_true(SetEvent((HANDLE)got));
	assert_int_equal(WaitForSingleObject(ev, 0), WAIT_OBJECT_0);
	CloseHandle((HANDLE)got);
	/* Something else on the wire is not a handle. */
	assert_int_equal(t_send(a, "not a handle", 12), 0);
	assert_int_equal(cqw__os_recv_handle(b, &got), CQW_ENOHANDLE);
	t_free(a);
	t_free(b);
	CloseHandle(ev);
}

/*
 * Handles the message transport cannot serve: a message pipe opened for
 * synchronous I/O (its reads would block past any deadline), a byte
 * pipe, an event. Refused by kind, never a connection that hangs.
 */
static void
test_win_pipe_kinds_refused(void **state)
{
	wchar_t name[96];
	HANDLE srv, cli, rd, wr, ev;

	(void)state;
	swprintf(name, 96, L"\\\\.\\pipe\\cqw-test-sync-%lu",
		 (unsigned long)GetCurrentProcessId());
	srv = CreateNamedPipeW(name, PIPE_ACCESS_DUPLEX,
			       PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE |
				   PIPE_WAIT,
			       1, 8192, 8192, 0, NULL);
	assert_true(srv != INVALID_HANDLE_VALUE);
	cli = CreateFileW(name, GENERIC_READ | GENERIC_WRITE, 0, NULL,
			  OPEN_EXISTING, FILE_FLAG_OVERLAPPED, NULL);
	assert_true(cli != INVALID_HANDLE_VALUE);
	assert_int_equal(cqw__io_fd_kind((cqw_fd)srv), CQW_EOPNOTSUPP);
	CloseHandle(cli);
	CloseHandle(srv);
	assert_true(CreatePipe(&rd, &wr, NULL, 0));
	assert_true(cqw__io_fd_kind((cqw_fd)rd) < 0);
	assert_true(cqw__io_fd_kind((cqw_fd)wr) < 0);
	CloseHandle(rd);
	CloseHandle(wr);
	ev = CreateEventW(NULL, TRUE, FALSE, NULL);
	assert_int_equal(cqw__io_fd_kind((cqw_fd)ev), CQW_EOPNOTSUPP);
	CloseHandle(ev);
	assert_int_equal(cqw__io_fd_kind((cqw_fd)0), CQW_EBADF);
}

static int t_stop_calls;

/* A signal check that says stop from its *arg-th call on. */
static int
t_stop_after(void *arg)
{
	return ++t_stop_calls >= *(int *)arg;
}

/*
 * Windows has no EINTR: with a signal check set, long waits ask it every
 * 100 ms (signals.c), and a stop returns CQW_EINTR with nothing consumed.
 */
static void
test_win_pipe_signal_check_stops(void **state)
{
	struct cqw_wait_item it[1];
	struct cqw__lsock *l;
	struct cqw__addr a, bound;
	cqw_conn *x, *y;
	uint8_t buf[8];
	size_t needed;
	int after = 3, never = 1 << 30, kind;
	int64_t t0;
	cqw_fd h;

	(void)state;
	t_pipe(&x, &y, 1);
	t_stop_calls = 0;
	cqw_set_signal_check(t_stop_after, &after);
	t0 = cqw__now_ms();
	assert_int_equal(y->tp->recv_into(y, buf, sizeof(buf), &needed, -1),
			 CQW_EINTR);
	assert_int_equal(t_stop_calls, 3);
	assert_true(cqw__now_ms() - t0 >= 200);
	t_stop_calls = 0;
	assert_int_equal(y->tp->poll(y, -1), CQW_EINTR);
	t_stop_calls = 0;
	memset(it, 0, sizeof(it));
	it[0].conn = y;
	assert_int_equal(cqw__os_wait(it, 1, -1), CQW_EINTR);
	t_pipe_addr(&a, "eintr");
	assert_int_equal(cqw__listen_open(&l, &a, 1, &bound), 0);
	t_stop_calls = 0;
	assert_int_equal(cqw__listen_accept(l, &h, &kind, -1), CQW_EINTR);
	assert_int_equal(cqw__listen_close(l), 0);
	/* A check that never says stop: the deadline ends the wait. */
	cqw_set_signal_check(t_stop_after, &never);
	t_stop_calls = 0;
	assert_int_equal(
	    y->tp->recv_into(y, buf, sizeof(buf), &needed, cqw__now_ms() + 250),
	    CQW_ETIMEDOUT);
	assert_true(t_stop_calls >= 1);
	cqw_set_signal_check(NULL, NULL);
	/* Nothing was lost or half-read by the stopped calls. */
	assert_int_equal(t_send(x, "ok", 2), 0);
	assert_int_equal(y->tp->recv_into(y, buf, sizeof(buf), &needed, -1), 2);
	assert_memory_equal(buf, "ok", 2);
	t_free(x);
	t_free(y);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_win_pipe_sizes_both_ways),
		cmocka_unit_test(test_win_pipe_simplex),
		cmocka_unit_test(test_win_pipe_too_short_keeps_queued),
		cmocka_unit_test(test_win_pipe_more_data_keeps_part),
		cmocka_unit_test(test_win_pipe_writer_gone_after_part),
		cmocka_unit_test(test_win_pipe_disconnect_races_rest),
		cmocka_unit_test(test_win_pipe_maxlength),
		cmocka_unit_test(test_win_pipe_empty_through_poll),
		cmocka_unit_test(test_win_pipe_empty_through_wait),
		cmocka_unit_test(test_win_pipe_timeout_and_batch),
		cmocka_unit_test(test_win_pipe_eof),
		cmocka_unit_test(test_win_pipe_listener_early_client),
		cmocka_unit_test(test_win_pipe_listener_many_clients),
		cmocka_unit_test(test_win_pipe_listener_in_use),
		cmocka_unit_test(test_win_pipe_peer_killed),
		cmocka_unit_test(test_win_pipe_wait_200),
		cmocka_unit_test(test_win_pipe_handle_passing),
		cmocka_unit_test(test_win_pipe_signal_check_stops),
		cmocka_unit_test(test_win_pipe_kinds_refused),
	};

	if (argc == 3 && strcmp(argv[1], "child-kill") == 0) {
		return t_child_kill(argv[2]);
	}
	GetModuleFileNameA(NULL, t_self, sizeof(t_self));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
