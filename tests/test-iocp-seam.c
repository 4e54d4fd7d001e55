/*
 * The iocp backend alone, through its seam (src/common/backend.h), on
 * real named pipes and TCP sockets: the test is the loop. It builds
 * src/iocp/loop.c into itself and keeps the completions that the backend
 * hands to cqw__loop_io_complete(), counting them per io, so that every
 * check can say "exactly once". What runs through the whole library (the
 * framers, cqw_submit/cqw_reap) is test-iocp-loop.c's.
 *
 * Covered: batch reaping past one GetQueuedCompletionStatusEx batch,
 * wake-ups from another thread, cancel of a pending read (once, with
 * CQW_ECANCELED; a storm of cancels racing messages), skip-on-success
 * completions inside start(), 0 B / 64 KiB / 1 MiB messages on a message
 * pipe and over TCP, ERROR_MORE_DATA (inline and pending) keeping the
 * rest of the message, socket peeks (also one whose bytes another reader
 * takes, with and without a cancel asked), end of file and broken pipes,
 * handles closed with reads pending, long waits that ask the thread's signal check, and
 * packets of calls on a duplicate of a bound handle.
 */
#ifndef _WIN32_WINNT
#define _WIN32_WINNT 0x0602
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#define CQW_HAVE_IOCP 1
#include "../src/iocp/loop.c"
/* The signal check the backend's sliced waits ask (cqw_set_signal_check). */
#include "../src/win/error.c"
#include "../src/common/signals.c"

/* Longest wait for a completion before the test calls it a hang. */
#define T_WAIT_MS 5000

/* ------------------------------------------------------------------
 * The loop side of the seam: completions queue on loop->iodone, as
 * src/common/loop.c does, and each io's count goes up.
 */

struct t_io {
	struct cqw__io io;
	int completions;
};

void
cqw__loop_io_complete(cqw_loop *loop, struct cqw__io *io, int64_t result,
		      unsigned flags)
{
	struct t_io *t = (struct t_io *)(void *)io;

	t->completions++;
	io->result = result;
	io->flags = flags;
	io->next = NULL;
	if (loop->iodone_tail != NULL) {
		loop->iodone_tail->next = io;
	} else {
		loop->iodone = io;
	}
	loop->iodone_tail = io;
}

static cqw_loop *
t_loop(void)
{
	cqw_loop *loop = calloc(1, sizeof(*loop));

	assert_non_null(loop);
	loop->ops = &cqw__iocp_backend;
	assert_int_equal(loop->ops->init(loop, 0), 0);
	return loop;
}

static void
t_loop_free(cqw_loop *loop)
{
	assert_null(loop->iodone);
	loop->ops->fini(loop);
	free(loop);
}

/* Take the completed ios off the loop's list: how many there were. */
static int
t_take(cqw_loop *loop)
{
	int n = 0;

	while (loop->iodone != NULL) {
		loop->iodone = loop->iodone->next;
		n++;
	}
	loop->iodone_tail = NULL;
	return n;
}

/* Wait until t has completed (at most T_WAIT_MS); then it is taken. */
static void
t_wait_for(cqw_loop *loop, struct t_io *t)
{
	DWORD start = GetTickCount();
	int r;

	while (t->completions == 0) {
		if (GetTickCount() - start > T_WAIT_MS) {
			fail_msg("no completion in %d ms", T_WAIT_MS);
		}
		r = loop->ops->wait(loop, 100);
		assert_true(r >= 0);
	}
	assert_int_equal(t->completions, 1);
	t_take(loop);
}

/* Nothing more comes within ms: no io completes twice. */
static void
t_quiet(cqw_loop *loop, int ms)
{
	int r = loop->ops->wait(loop, ms);

	assert_int_equal(r, 0);
	assert_null(loop->iodone);
}

static void
t_recv(struct t_io *t, cqw_fd h, int kind, void *buf, size_t len)
{
	memset(t, 0, sizeof(*t));
	t->io.op = CQW__IO_RECV;
	t->io.handle = h;
	t->io.kind = kind;
	t->io.buf = buf;
	t->io.len = len;
}

static void
t_peek(struct t_io *t, cqw_fd h, void *buf, size_t len)
{
	t_recv(t, h, CQW__FD_SOCK, buf, len);
	t->io.op = CQW__IO_PEEK;
}

static void
t_send(struct t_io *t, cqw__iov *v, cqw_fd h, int kind, void *buf, size_t len)
{
	memset(t, 0, sizeof(*t));
	CQW__IOV_BASE(v) = buf;
	CQW__IOV_LEN(v) = (unsigned long)len;
	t->io.op = CQW__IO_SEND;
	t->io.handle = h;
	t->io.kind = kind;
	t->io.iov = v;
	t->io.iovcnt = 1;
}

static unsigned char *
t_pattern(size_t len, unsigned seed)
{
	unsigned char *p = malloc(len ? len : 1);
	size_t i;

	assert_non_null(p);
	for (i = 0; i < len; i++) {
		p[i] = (unsigned char)(i * 31u + seed);
	}
	return p;
}

/* ------------------------------------------------------------------
 * Handles: message-mode named pipes as Python makes them (WIRE.md 7.1)
 * and a TCP pair on loopback.
 */

static void
t_msgpipe(cqw_fd h[2])
{
	static LONG seq;
	wchar_t name[96];
	DWORD mode = PIPE_READMODE_MESSAGE;
	HANDLE s, c;
	OVERLAPPED ov;
	BOOL ok;

	swprintf(name, 96, L"\\\\.\\pipe\\cqw-iocp-seam-%lu-%ld",
		 (unsigned long)GetCurrentProcessId(),
		 (long)InterlockedIncrement(&seq));
	s = CreateNamedPipeW(name,
			     PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED |
				 FILE_FLAG_FIRST_PIPE_INSTANCE,
			     PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE |
				 PIPE_WAIT,
			     1, 8192, 8192, 0, NULL);
	assert_true(s != INVALID_HANDLE_VALUE);
	memset(&ov, 0, sizeof(ov));
	ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
	ok = ConnectNamedPipe(s, &ov);
	assert_false(ok);
	assert_true(GetLastError() == ERROR_IO_PENDING ||
		    GetLastError() == ERROR_PIPE_CONNECTED);
	c = CreateFileW(name, GENERIC_READ | GENERIC_WRITE, 0, NULL,
			OPEN_EXISTING, FILE_FLAG_OVERLAPPED, NULL);
	assert_true(c != INVALID_HANDLE_VALUE);
	assert_true(SetNamedPipeHandleState(c, &mode, NULL, NULL));
	assert_int_equal(WaitForSingleObject(ov.hEvent, T_WAIT_MS),
			 WAIT_OBJECT_0);
	CloseHandle(ov.hEvent);
	h[0] = (cqw_fd)s;
	h[1] = (cqw_fd)c;
}

static void
t_tcp(cqw_fd h[2])
{
	struct sockaddr_in a;
	int alen = sizeof(a);
	SOCKET l, c, s;

	l = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
	assert_true(l != INVALID_SOCKET);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(l, 1), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&a, &alen), 0);
	c = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
	assert_true(c != INVALID_SOCKET);
	assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof(a)), 0);
	s = accept(l, NULL, NULL);
	assert_true(s != INVALID_SOCKET);
	closesocket(l);
	h[0] = (cqw_fd)s;
	h[1] = (cqw_fd)c;
}

/*
 * Write a whole message (pipe) or buffer (socket) with a blocking call of
 * the test's own, not through the loop. The event's low bit keeps the
 * completion off a port the handle is bound to.
 */
static void
t_write_sync(cqw_fd h, const void *buf, size_t len)
{
	OVERLAPPED ov;
	DWORD n = 0;
	HANDLE ev = CreateEventW(NULL, TRUE, FALSE, NULL);
	BOOL ok;

	assert_non_null(ev);
	memset(&ov, 0, sizeof(ov));
	ov.hEvent = (HANDLE)((ULONG_PTR)ev | 1);
	ok = WriteFile((HANDLE)h, buf, (DWORD)len, NULL, &ov);
	if (!ok) {
		assert_int_equal(GetLastError(), ERROR_IO_PENDING);
		assert_int_equal(WaitForSingleObject(ev, T_WAIT_MS),
				 WAIT_OBJECT_0);
	}
	assert_true(GetOverlappedResult((HANDLE)h, &ov, &n, FALSE));
	assert_int_equal(n, len);
	CloseHandle(ev);
}

/* ------------------------------------------------------------------
 * Tests
 */

static void
t_msg_roundtrip(cqw_loop *loop, cqw_fd h[2], size_t len)
{
	unsigned char *out = t_pattern(len, (unsigned)len);
	unsigned char *in = malloc(len + 16);
	struct t_io r, w;
	cqw__iov v;

	assert_non_null(in);
	t_recv(&r, h[0], CQW__FD_MSGPIPE, in, len + 16);
	t_send(&w, &v, h[1], CQW__FD_MSGPIPE, out, len);
	loop->ops->start(loop, &r.io);
	loop->ops->start(loop, &w.io);
	t_wait_for(loop, &w);
	if (r.completions == 0) {
		t_wait_for(loop, &r);
	}
	assert_int_equal(w.completions, 1);
	assert_int_equal(w.io.result, (int64_t)len);
	assert_int_equal(r.completions, 1);
	/* 0 with no MORE flag is a zero-length message, not end of file. */
	assert_int_equal(r.io.result, (int64_t)len);
	assert_int_equal(r.io.flags, 0);
	assert_memory_equal(in, out, len);
	t_take(loop);
	free(in);
	free(out);
}

static void
test_iocp_msgpipe_sizes(void **state)
{
	static const size_t sizes[] = { 0, 5, 64 * 1024, 1024 * 1024, 0 };
	cqw_loop *loop = t_loop();
	cqw_fd h[2];
	size_t i;

	(void)state;
	t_msgpipe(h);
	assert_int_equal(loop->ops->attach(loop, h[0], CQW__FD_MSGPIPE), 0);
	assert_int_equal(loop->ops->attach(loop, h[1], CQW__FD_MSGPIPE), 0);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		t_msg_roundtrip(loop, h, sizes[i]);
	}
	t_quiet(loop, 20);
	CloseHandle((HANDLE)h[0]);
	CloseHandle((HANDLE)h[1]);
	t_loop_free(loop);
}

/* Bytes over TCP: one SEND of the whole buffer, RECVs until it is in. */
static void
t_tcp_roundtrip(cqw_loop *loop, cqw_fd h[2], size_t len)
{
	unsigned char *out = t_pattern(len, (unsigned)len + 7);
	unsigned char *in = malloc(len + 1);
	struct t_io r, w;
	size_t got = 0;
	cqw__iov v;

	assert_non_null(in);
	t_send(&w, &v, h[1], CQW__FD_SOCK, out, len);
	loop->ops->start(loop, &w.io);
	while (got < len) {
		t_recv(&r, h[0], CQW__FD_SOCK, in + got, len - got);
		loop->ops->start(loop, &r.io);
		t_wait_for(loop, &r);
		assert_true(r.io.result > 0);
		got += (size_t)r.io.result;
	}
	if (w.completions == 0) {
		t_wait_for(loop, &w);
	}
	assert_int_equal(w.completions, 1);
	assert_int_equal(w.io.result, (int64_t)len);
	assert_memory_equal(in, out, len);
	t_take(loop);
	free(in);
	free(out);
}

static void
test_iocp_tcp_sizes(void **state)
{
	static const size_t sizes[] = { 1, 64 * 1024, 1024 * 1024 };
	cqw_loop *loop = t_loop();
	struct t_io w;
	cqw__iov v;
	cqw_fd h[2];
	size_t i;

	(void)state;
	t_tcp(h);
	assert_int_equal(loop->ops->attach(loop, h[0], CQW__FD_SOCK), 0);
	assert_int_equal(loop->ops->attach(loop, h[1], CQW__FD_SOCK), 0);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		t_tcp_roundtrip(loop, h, sizes[i]);
	}
	/* A zero-byte send completes with 0 and sends nothing. */
	t_send(&w, &v, h[1], CQW__FD_SOCK, NULL, 0);
	w.io.iovcnt = 0;
	loop->ops->start(loop, &w.io);
	t_wait_for(loop, &w);
	assert_int_equal(w.io.result, 0);
	t_quiet(loop, 20);
	closesocket((SOCKET)h[0]);
	closesocket((SOCKET)h[1]);
	t_loop_free(loop);
}

/*
 * A message longer than the read: the bytes read come with
 * CQW__CF_MSG_MORE and io->more counts the rest, which stays first in
 * the pipe for the next read. first_data: the message is there before
 * the read starts (ReadFile says ERROR_MORE_DATA at once), else after.
 */
static void
t_more_data(int data_first)
{
	cqw_loop *loop = t_loop();
	unsigned char *out = t_pattern(1000, 3), in[1000], one[4];
	struct t_io r;
	cqw_fd h[2];

	t_msgpipe(h);
	assert_int_equal(loop->ops->attach(loop, h[0], CQW__FD_MSGPIPE), 0);
	if (data_first) {
		t_write_sync(h[1], out, 1000);
	}
	t_recv(&r, h[0], CQW__FD_MSGPIPE, in, 100);
	loop->ops->start(loop, &r.io);
	if (!data_first) {
		t_write_sync(h[1], out, 1000);
	}
	t_wait_for(loop, &r);
	assert_int_equal(r.io.result, 100);
	assert_int_equal(r.io.flags, CQW__CF_MSG_MORE);
	assert_int_equal(r.io.more, 900);
	/* A zero-byte read of the rest consumes nothing. */
	t_recv(&r, h[0], CQW__FD_MSGPIPE, one, 0);
	loop->ops->start(loop, &r.io);
	t_wait_for(loop, &r);
	assert_int_equal(r.io.result, 0);
	assert_int_equal(r.io.flags, CQW__CF_MSG_MORE);
	assert_int_equal(r.io.more, 900);
	t_recv(&r, h[0], CQW__FD_MSGPIPE, in + 100, 900);
	loop->ops->start(loop, &r.io);
	t_wait_for(loop, &r);
	assert_int_equal(r.io.result, 900);
	assert_int_equal(r.io.flags, 0);
	assert_memory_equal(in, out, 1000);
	t_quiet(loop, 20);
	CloseHandle((HANDLE)h[0]);
	CloseHandle((HANDLE)h[1]);
	t_loop_free(loop);
	free(out);
}

static void
test_iocp_more_data_inline(void **state)
{
	(void)state;
	t_more_data(1);
}

static void
test_iocp_more_data_pending(void **state)
{
	(void)state;
	t_more_data(0);
}

/*
 * Skip-on-success: on a socket, a read whose data is there and a send
 * that fits complete inside start(), and no packet follows (a second
 * completion would show in t_quiet). Message pipes are bound without the
 * mode (src/iocp/loop.c says why): the same calls complete through their
 * packet, once.
 */
static void
test_iocp_skip_on_success(void **state)
{
	cqw_loop *loop = t_loop();
	unsigned char buf[64];
	struct t_io r, w;
	cqw__iov v;
	cqw_fd p[2], s[2];

	(void)state;
	t_msgpipe(p);
	t_tcp(s);
	assert_int_equal(loop->ops->attach(loop, p[0], CQW__FD_MSGPIPE), 0);
	assert_int_equal(loop->ops->attach(loop, p[1], CQW__FD_MSGPIPE), 0);
	assert_int_equal(loop->ops->attach(loop, s[0], CQW__FD_SOCK), 0);
	assert_int_equal(loop->ops->attach(loop, s[1], CQW__FD_SOCK), 0);
	assert_string_equal(loop->ops->features(loop), "skip_on_success");

	t_send(&w, &v, s[1], CQW__FD_SOCK, "tcp", 3);
	loop->ops->start(loop, &w.io);
	assert_int_equal(w.completions, 1);
	assert_int_equal(w.io.result, 3);
	assert_int_equal(t_take(loop), 1);
	Sleep(50); /* loopback delivery */
	t_recv(&r, s[0], CQW__FD_SOCK, buf, sizeof(buf));
	loop->ops->start(loop, &r.io);
	assert_int_equal(r.completions, 1);
	assert_int_equal(r.io.result, 3);
	assert_memory_equal(buf, "tcp", 3);
	assert_int_equal(t_take(loop), 1);
	t_quiet(loop, 50);

	t_write_sync(p[1], "hello", 5);
	t_recv(&r, p[0], CQW__FD_MSGPIPE, buf, sizeof(buf));
	loop->ops->start(loop, &r.io);
	assert_int_equal(r.completions, 0);
	t_wait_for(loop, &r);
	assert_int_equal(r.io.result, 5);
	t_quiet(loop, 50);
	t_send(&w, &v, p[1], CQW__FD_MSGPIPE, "again", 5);
	loop->ops->start(loop, &w.io);
	t_wait_for(loop, &w);
	assert_int_equal(w.io.result, 5);
	t_recv(&r, p[0], CQW__FD_MSGPIPE, buf, sizeof(buf));
	loop->ops->start(loop, &r.io);
	t_wait_for(loop, &r);
	assert_int_equal(r.io.result, 5);
	assert_memory_equal(buf, "again", 5);
	t_quiet(loop, 50);

	CloseHandle((HANDLE)p[0]);
	CloseHandle((HANDLE)p[1]);
	closesocket((SOCKET)s[0]);
	closesocket((SOCKET)s[1]);
	t_loop_free(loop);
}

/* Cancel a pending read: one completion, CQW_ECANCELED, then nothing. */
static void
test_iocp_cancel_pending_read(void **state)
{
	cqw_loop *loop = t_loop();
	unsigned char buf[64];
	struct t_io r, k;
	cqw_fd p[2], s[2];

	(void)state;
	t_msgpipe(p);
	t_tcp(s);
	assert_int_equal(loop->ops->attach(loop, p[0], CQW__FD_MSGPIPE), 0);
	assert_int_equal(loop->ops->attach(loop, s[0], CQW__FD_SOCK), 0);

	t_recv(&r, p[0], CQW__FD_MSGPIPE, buf, sizeof(buf));
	loop->ops->start(loop, &r.io);
	t_quiet(loop, 20);
	assert_int_equal(r.completions, 0);
	loop->ops->cancel(loop, &r.io);
	t_wait_for(loop, &r);
	assert_int_equal(r.io.result, CQW_ECANCELED);
	/* A second cancel of a completed io does nothing. */
	loop->ops->cancel(loop, &r.io);
	t_quiet(loop, 50);
	assert_int_equal(r.completions, 1);

	t_recv(&r, s[0], CQW__FD_SOCK, buf, sizeof(buf));
	loop->ops->start(loop, &r.io);
	t_peek(&k, s[0], buf, sizeof(buf));
	t_quiet(loop, 20);
	loop->ops->cancel(loop, &r.io);
	t_wait_for(loop, &r);
	assert_int_equal(r.io.result, CQW_ECANCELED);

	/* A peek waiting on its probe cancels the same way. */
	loop->ops->start(loop, &k.io);
	t_quiet(loop, 20);
	loop->ops->cancel(loop, &k.io);
	t_wait_for(loop, &k);
	assert_int_equal(k.io.result, CQW_ECANCELED);
	t_quiet(loop, 50);

	/* The pipe still works: nothing of a later message was lost. */
	t_write_sync(p[1], "after", 5);
	t_recv(&r, p[0], CQW__FD_MSGPIPE, buf, sizeof(buf));
	loop->ops->start(loop, &r.io);
	t_wait_for(loop, &r);
	assert_int_equal(r.io.result, 5);
	assert_memory_equal(buf, "after", 5);

	CloseHandle((HANDLE)p[0]);
	CloseHandle((HANDLE)p[1]);
	closesocket((SOCKET)s[0]);
	closesocket((SOCKET)s[1]);
	t_loop_free(loop);
}

/* A cancel that races the completion: still exactly one, with the data. */
static void
test_iocp_cancel_after_data(void **state)
{
	cqw_loop *loop = t_loop();
	unsigned char buf[64];
	struct t_io r;
	cqw_fd p[2];

	(void)state;
	t_msgpipe(p);
	assert_int_equal(loop->ops->attach(loop, p[0], CQW__FD_MSGPIPE), 0);
	t_recv(&r, p[0], CQW__FD_MSGPIPE, buf, sizeof(buf));
	loop->ops->start(loop, &r.io);
	t_write_sync(p[1], "raced", 5);
	Sleep(20); /* the packet is on the port now */
	loop->ops->cancel(loop, &r.io);
	t_wait_for(loop, &r);
	assert_int_equal(r.io.result, 5);
	assert_memory_equal(buf, "raced", 5);
	t_quiet(loop, 50);
	CloseHandle((HANDLE)p[0]);
	CloseHandle((HANDLE)p[1]);
	t_loop_free(loop);
}

/*
 * More completions than one GetQueuedCompletionStatusEx batch: the first
 * wait takes IOCP_BATCH of them, the next ones the rest, each io once.
 */
#define T_BATCH_PIPES (IOCP_BATCH * 2 + 8)

static void
test_iocp_batch_reaping(void **state)
{
	cqw_loop *loop = t_loop();
	static struct t_io r[T_BATCH_PIPES];
	static unsigned char buf[T_BATCH_PIPES][16];
	static cqw_fd h[T_BATCH_PIPES][2];
	int i, n, total = 0, first;

	(void)state;
	for (i = 0; i < T_BATCH_PIPES; i++) {
		t_msgpipe(h[i]);
		assert_int_equal(
		    loop->ops->attach(loop, h[i][0], CQW__FD_MSGPIPE), 0);
		t_recv(&r[i], h[i][0], CQW__FD_MSGPIPE, buf[i], 16);
		loop->ops->start(loop, &r[i].io);
	}
	t_quiet(loop, 20);
	for (i = 0; i < T_BATCH_PIPES; i++) {
		t_write_sync(h[i][1], &i, sizeof(i));
	}
	Sleep(50);
	assert_int_equal(loop->ops->wait(loop, T_WAIT_MS), 0);
	first = t_take(loop);
	assert_int_equal(first, IOCP_BATCH);
	total = first;
	while (total < T_BATCH_PIPES) {
		assert_int_equal(loop->ops->wait(loop, T_WAIT_MS), 0);
		n = t_take(loop);
		assert_true(n > 0 && n <= IOCP_BATCH);
		total += n;
	}
	assert_int_equal(total, T_BATCH_PIPES);
	for (i = 0; i < T_BATCH_PIPES; i++) {
		assert_int_equal(r[i].completions, 1);
		assert_int_equal(r[i].io.result, (int64_t)sizeof(i));
		assert_memory_equal(buf[i], &i, sizeof(i));
		CloseHandle((HANDLE)h[i][0]);
		CloseHandle((HANDLE)h[i][1]);
	}
	t_quiet(loop, 20);
	t_loop_free(loop);
}

/*
 * Cancels racing completions: reads pending on many pipes, half of them
 * given a message, then every read cancelled. Each completes once, with
 * its message or CQW_ECANCELED; a cancelled read took nothing, so its
 * message is still there for the next read.
 */
#define T_STORM 48

static void
test_iocp_cancel_storm(void **state)
{
	static struct t_io r[T_STORM];
	static unsigned char buf[T_STORM][16];
	static cqw_fd h[T_STORM][2];
	cqw_loop *loop = t_loop();
	int i, total = 0, won = 0;
	DWORD start = GetTickCount();

	(void)state;
	for (i = 0; i < T_STORM; i++) {
		t_msgpipe(h[i]);
		assert_int_equal(
		    loop->ops->attach(loop, h[i][0], CQW__FD_MSGPIPE), 0);
		t_recv(&r[i], h[i][0], CQW__FD_MSGPIPE, buf[i], 16);
		loop->ops->start(loop, &r[i].io);
	}
	for (i = 0; i < T_STORM; i += 2) {
		t_write_sync(h[i][1], &i, sizeof(i));
	}
	for (i = 0; i < T_STORM; i++) {
		loop->ops->cancel(loop, &r[i].io);
	}
	while (total < T_STORM) {
		assert_true(GetTickCount() - start < T_WAIT_MS);
		assert_true(loop->ops->wait(loop, 100) >= 0);
		total += t_take(loop);
	}
	t_quiet(loop, 50);
	for (i = 0; i < T_STORM; i++) {
		assert_int_equal(r[i].completions, 1);
		if (r[i].io.result == (int64_t)sizeof(i)) {
			assert_true(i % 2 == 0);
			assert_memory_equal(buf[i], &i, sizeof(i));
			won++;
			continue;
		}
		assert_int_equal(r[i].io.result, CQW_ECANCELED);
		if (i % 2 == 0) {
			/* Cancelled before it took the message: still queued. */
			t_recv(&r[i], h[i][0], CQW__FD_MSGPIPE, buf[i], 16);
			loop->ops->start(loop, &r[i].io);
			t_wait_for(loop, &r[i]);
			assert_int_equal(r[i].io.result, (int64_t)sizeof(i));
			assert_memory_equal(buf[i], &i, sizeof(i));
		}
	}
	print_message("reads that beat their cancel: %d of %d\n", won,
		      T_STORM / 2);
	for (i = 0; i < T_STORM; i++) {
		CloseHandle((HANDLE)h[i][0]);
		CloseHandle((HANDLE)h[i][1]);
	}
	t_quiet(loop, 20);
	t_loop_free(loop);
}

static DWORD WINAPI
t_waker(void *arg)
{
	cqw_loop *loop = arg;

	Sleep(100);
	return loop->ops->wake(loop) == 0 ? 0 : 1;
}

/* wake() from another thread ends a wait without timeout. */
static void
test_iocp_wake_from_thread(void **state)
{
	cqw_loop *loop = t_loop();
	DWORD start, code = 9;
	HANDLE th;

	(void)state;
	th = CreateThread(NULL, 0, t_waker, loop, 0, NULL);
	assert_non_null(th);
	start = GetTickCount();
	assert_int_equal(loop->ops->wait(loop, T_WAIT_MS), 1);
	assert_true(GetTickCount() - start < T_WAIT_MS);
	assert_int_equal(WaitForSingleObject(th, T_WAIT_MS), WAIT_OBJECT_0);
	assert_true(GetExitCodeThread(th, &code));
	assert_int_equal(code, 0);
	CloseHandle(th);
	/* Wakes that pile up before a wait are one wake-up, not three. */
	assert_int_equal(loop->ops->wake(loop), 0);
	assert_int_equal(loop->ops->wake(loop), 0);
	assert_int_equal(loop->ops->wake(loop), 0);
	assert_int_equal(loop->ops->wait(loop, T_WAIT_MS), 1);
	assert_int_equal(loop->ops->wait(loop, 20), 0);
	t_loop_free(loop);
}

static int t_checks;

static int
t_check(void *arg)
{
	t_checks++;
	return t_checks >= *(int *)arg;
}

/*
 * With a signal check set, a wait without timeout asks it between slices
 * and returns CQW_EINTR when it says stop, the ios still in flight; one
 * that never says stop leaves the timeout as it was.
 */
static void
test_iocp_wait_asks_signal_check(void **state)
{
	cqw_loop *loop = t_loop();
	unsigned char buf[8];
	int stop_at = 2, never = 1000000;
	struct t_io r;
	DWORD start, took;
	cqw_fd p[2];

	(void)state;
	t_msgpipe(p);
	assert_int_equal(loop->ops->attach(loop, p[0], CQW__FD_MSGPIPE), 0);
	t_recv(&r, p[0], CQW__FD_MSGPIPE, buf, sizeof(buf));
	loop->ops->start(loop, &r.io);
	t_checks = 0;
	cqw_set_signal_check(t_check, &stop_at);
	start = GetTickCount();
	assert_int_equal(loop->ops->wait(loop, -1), CQW_EINTR);
	took = GetTickCount() - start;
	assert_int_equal(t_checks, 2);
	assert_true(took < T_WAIT_MS);
	/* A zero timeout never asks. */
	assert_int_equal(loop->ops->wait(loop, 0), 0);
	assert_int_equal(t_checks, 2);
	t_checks = 0;
	cqw_set_signal_check(t_check, &never);
	start = GetTickCount();
	assert_int_equal(loop->ops->wait(loop, 350), 0);
	took = GetTickCount() - start;
	assert_true(took >= 300 && took < T_WAIT_MS);
	assert_true(t_checks >= 2);
	cqw_set_signal_check(NULL, NULL);
	/* The read stayed in flight and completes once, with its message. */
	assert_int_equal(r.completions, 0);
	t_write_sync(p[1], "late", 4);
	t_wait_for(loop, &r);
	assert_int_equal(r.io.result, 4);
	t_quiet(loop, 20);
	CloseHandle((HANDLE)p[0]);
	CloseHandle((HANDLE)p[1]);
	t_loop_free(loop);
}

/* Socket peeks: nothing consumed, pending until data, 0 at end of file. */
static void
test_iocp_peek(void **state)
{
	cqw_loop *loop = t_loop();
	unsigned char buf[64], again[64];
	struct t_io k, r;
	cqw_fd s[2];

	(void)state;
	t_tcp(s);
	assert_int_equal(loop->ops->attach(loop, s[0], CQW__FD_SOCK), 0);
	t_peek(&k, s[0], buf, sizeof(buf));
	loop->ops->start(loop, &k.io);
	t_quiet(loop, 20);
	assert_int_equal(send((SOCKET)s[1], "0123456789", 10, 0), 10);
	t_wait_for(loop, &k);
	assert_true(k.io.result > 0 && k.io.result <= 10);
	Sleep(50);
	/* Peek again, now inline; then the same bytes come to a receive. */
	t_peek(&k, s[0], buf, 4);
	loop->ops->start(loop, &k.io);
	t_wait_for(loop, &k);
	assert_int_equal(k.io.result, 4);
	assert_memory_equal(buf, "0123", 4);
	t_recv(&r, s[0], CQW__FD_SOCK, again, sizeof(again));
	loop->ops->start(loop, &r.io);
	t_wait_for(loop, &r);
	assert_int_equal(r.io.result, 10);
	assert_memory_equal(again, "0123456789", 10);
	/* End of file: a peek says 0, and so does a receive. */
	shutdown((SOCKET)s[1], SD_SEND);
	t_peek(&k, s[0], buf, sizeof(buf));
	loop->ops->start(loop, &k.io);
	t_wait_for(loop, &k);
	assert_int_equal(k.io.result, 0);
	t_recv(&r, s[0], CQW__FD_SOCK, again, sizeof(again));
	loop->ops->start(loop, &r.io);
	t_wait_for(loop, &r);
	assert_int_equal(r.io.result, 0);
	t_quiet(loop, 20);
	closesocket((SOCKET)s[0]);
	closesocket((SOCKET)s[1]);
	t_loop_free(loop);
}

/*
 * Wait (T_WAIT_MS at most) until the kernel has finished t's call: its
 * packet is on the port, not yet taken by wait().
 */
static void
t_kernel_done(struct t_io *t)
{
	DWORD start = GetTickCount();

	while (!HasOverlappedIoCompleted(&io_ov(&t->io)->ov)) {
		if (GetTickCount() - start > T_WAIT_MS) {
			fail_msg("the call did not finish in %d ms", T_WAIT_MS);
		}
		Sleep(1);
	}
}

/*
 * Another reader of the socket (here a plain recv() on it: a duplicate
 * would be the same socket object) takes the bytes a peek's zero-byte
 * probe said were there, after the probe's packet is queued and before
 * wait() takes it. Without a cancel the peek waits again and ends with
 * the next bytes. With a cancel asked in between, CancelIoEx finds the
 * probe done and cancels nothing: the peek must still end, with
 * CQW_ECANCELED, and not probe again (the loop's close would wait for
 * it until bytes came).
 */
static void
t_peek_bytes_taken(cqw_loop *loop, cqw_fd s[2], struct t_io *k)
{
	u_long avail = 0;
	DWORD start;

	loop->ops->start(loop, &k->io);
	assert_int_equal(k->completions, 0);
	assert_int_equal(k->io.backend_state, IO_PROBE);
	assert_int_equal(send((SOCKET)s[1], "abc", 3, 0), 3);
	t_kernel_done(k);
	start = GetTickCount();
	while (avail < 3) {
		assert_int_equal(ioctlsocket((SOCKET)s[0], FIONREAD, &avail),
				 0);
		if (GetTickCount() - start > T_WAIT_MS) {
			fail_msg("3 bytes not queued in %d ms", T_WAIT_MS);
		}
	}
	assert_int_equal(k->completions, 0);
}

static void
test_iocp_peek_bytes_taken(void **state)
{
	cqw_loop *loop = t_loop();
	unsigned char buf[16], got[8];
	struct t_io k;
	cqw_fd s[2];

	(void)state;
	t_tcp(s);
	assert_int_equal(loop->ops->attach(loop, s[0], CQW__FD_SOCK), 0);

	/* No cancel: the peek probes again and gets the next bytes. */
	t_peek(&k, s[0], buf, sizeof(buf));
	t_peek_bytes_taken(loop, s, &k);
	assert_int_equal(recv((SOCKET)s[0], (char *)got, 3, 0), 3);
	assert_memory_equal(got, "abc", 3);
	t_quiet(loop, 50);
	assert_int_equal(k.completions, 0);
	assert_int_equal(k.io.backend_state, IO_PROBE);
	assert_int_equal(send((SOCKET)s[1], "defg", 4, 0), 4);
	t_wait_for(loop, &k);
	assert_true(k.io.result > 0 && k.io.result <= 4);
	assert_memory_equal(buf, "defg", (size_t)k.io.result);
	Sleep(20);
	assert_int_equal(recv((SOCKET)s[0], (char *)got, 4, 0), 4);

	/* A cancel asked after the probe finished, then the bytes taken. */
	t_peek(&k, s[0], buf, sizeof(buf));
	t_peek_bytes_taken(loop, s, &k);
	loop->ops->cancel(loop, &k.io);
	assert_int_equal(recv((SOCKET)s[0], (char *)got, 3, 0), 3);
	assert_memory_equal(got, "abc", 3);
	t_wait_for(loop, &k);
	assert_int_equal(k.io.result, CQW_ECANCELED);
	t_quiet(loop, 50);

	/* The same io again: a new start forgets the cancel. */
	k.completions = 0;
	loop->ops->start(loop, &k.io);
	assert_int_equal(k.io.backend_state, IO_PROBE);
	t_quiet(loop, 20);
	assert_int_equal(send((SOCKET)s[1], "hi", 2, 0), 2);
	t_wait_for(loop, &k);
	assert_true(k.io.result > 0 && k.io.result <= 2);
	assert_memory_equal(buf, "hi", (size_t)k.io.result);
	t_quiet(loop, 20);
	closesocket((SOCKET)s[0]);
	closesocket((SOCKET)s[1]);
	t_loop_free(loop);
}

/*
 * The peer goes away with a read pending: a message pipe's read ends
 * with CQW_EOF (0 would be a zero-length message), a socket's with 0,
 * and a write into the broken pipe with CQW_EPIPE.
 */
static void
test_iocp_peer_gone(void **state)
{
	cqw_loop *loop = t_loop();
	unsigned char buf[64];
	struct t_io r, w;
	cqw__iov v;
	cqw_fd p[2], s[2];

	(void)state;
	t_msgpipe(p);
	t_tcp(s);
	assert_int_equal(loop->ops->attach(loop, p[0], CQW__FD_MSGPIPE), 0);
	assert_int_equal(loop->ops->attach(loop, s[0], CQW__FD_SOCK), 0);
	t_recv(&r, p[0], CQW__FD_MSGPIPE, buf, sizeof(buf));
	loop->ops->start(loop, &r.io);
	t_quiet(loop, 20);
	CloseHandle((HANDLE)p[1]);
	t_wait_for(loop, &r);
	assert_int_equal(r.io.result, CQW_EOF);
	t_send(&w, &v, p[0], CQW__FD_MSGPIPE, "x", 1);
	loop->ops->start(loop, &w.io);
	t_wait_for(loop, &w);
	assert_int_equal(w.io.result, CQW_EPIPE);
	t_recv(&r, p[0], CQW__FD_MSGPIPE, buf, sizeof(buf));
	loop->ops->start(loop, &r.io);
	t_wait_for(loop, &r);
	assert_int_equal(r.io.result, CQW_EOF);

	t_recv(&r, s[0], CQW__FD_SOCK, buf, sizeof(buf));
	loop->ops->start(loop, &r.io);
	t_quiet(loop, 20);
	closesocket((SOCKET)s[1]);
	t_wait_for(loop, &r);
	assert_int_equal(r.io.result, 0);
	t_quiet(loop, 20);
	CloseHandle((HANDLE)p[0]);
	closesocket((SOCKET)s[0]);
	t_loop_free(loop);
}

/*
 * Our own handle closed with a read pending (the loop cancels and waits
 * before it closes, but a handle closed under it must still complete
 * once, as a cancel).
 */
static void
test_iocp_closed_with_read_pending(void **state)
{
	cqw_loop *loop = t_loop();
	unsigned char buf[64];
	struct t_io r, q;
	cqw_fd p[2], s[2];

	(void)state;
	t_msgpipe(p);
	t_tcp(s);
	assert_int_equal(loop->ops->attach(loop, p[0], CQW__FD_MSGPIPE), 0);
	assert_int_equal(loop->ops->attach(loop, s[0], CQW__FD_SOCK), 0);
	t_recv(&r, s[0], CQW__FD_SOCK, buf, sizeof(buf));
	loop->ops->start(loop, &r.io);
	t_recv(&q, p[0], CQW__FD_MSGPIPE, buf, sizeof(buf));
	loop->ops->start(loop, &q.io);
	t_quiet(loop, 20);
	closesocket((SOCKET)s[0]);
	t_wait_for(loop, &r);
	assert_int_equal(r.io.result, CQW_ECANCELED);
	/*
	 * A pipe end closed with its own read pending: wine completes it as
	 * a broken pipe (STATUS_PIPE_BROKEN); Windows may say aborted. Once
	 * either way.
	 */
	CloseHandle((HANDLE)p[0]);
	t_wait_for(loop, &q);
	assert_true(q.io.result == CQW_ECANCELED || q.io.result == CQW_EOF);
	t_quiet(loop, 50);
	CloseHandle((HANDLE)p[1]);
	closesocket((SOCKET)s[1]);
	t_loop_free(loop);
}

/* Bad ios end with a code, once, and touch nothing. */
static void
test_iocp_bad_ios(void **state)
{
	cqw_loop *loop = t_loop();
	unsigned char buf[8];
	struct t_io r, w;
	cqw__iov v[2];
	cqw_fd p[2];

	(void)state;
	t_msgpipe(p);
	assert_int_equal(loop->ops->attach(loop, p[1], CQW__FD_MSGPIPE), 0);
	/* A message is one write: two buffers with bytes are refused. */
	t_send(&w, v, p[1], CQW__FD_MSGPIPE, "ab", 2);
	CQW__IOV_BASE(&v[1]) = "cd";
	CQW__IOV_LEN(&v[1]) = 2;
	w.io.iovcnt = 2;
	loop->ops->start(loop, &w.io);
	assert_int_equal(w.completions, 1);
	assert_int_equal(w.io.result, CQW_EINVAL);
	assert_int_equal(t_take(loop), 1);
	/* Peeks are for sockets. */
	t_recv(&r, p[1], CQW__FD_MSGPIPE, buf, sizeof(buf));
	r.io.op = CQW__IO_PEEK;
	loop->ops->start(loop, &r.io);
	assert_int_equal(r.completions, 1);
	assert_int_equal(r.io.result, CQW_EOPNOTSUPP);
	assert_int_equal(t_take(loop), 1);
	/* An unknown kind. */
	t_recv(&r, p[1], 99, buf, sizeof(buf));
	loop->ops->start(loop, &r.io);
	assert_int_equal(r.completions, 1);
	assert_int_equal(r.io.result, CQW_EBADF);
	assert_int_equal(t_take(loop), 1);
	/* Detach keeps the handle: it is bound to the port for good. */
	assert_int_equal(loop->ops->detach(loop, p[1]), CQW_EBUSY);
	assert_int_equal(loop->ops->after_fork(loop), 0);
	t_quiet(loop, 20);
	CloseHandle((HANDLE)p[0]);
	CloseHandle((HANDLE)p[1]);
	t_loop_free(loop);
}

/*
 * The port also gets the completions of calls on a duplicate of a bound
 * handle (another process's, in Python's way of sharing pipes; here this
 * process's own, with a plain event). Their OVERLAPPED is not the
 * backend's to read: it lives in a page that is gone by the time the
 * packet is reaped, so touching it would crash the test. The packet is
 * dropped, and the loop's own ios go on.
 */
static void
test_iocp_foreign_packets_dropped(void **state)
{
	cqw_loop *loop = t_loop();
	unsigned char buf[16];
	OVERLAPPED *fov;
	HANDLE dup, ev;
	struct t_io r;
	cqw_fd p[2];
	DWORD n = 0;
	int i;

	(void)state;
	t_msgpipe(p);
	assert_int_equal(loop->ops->attach(loop, p[0], CQW__FD_MSGPIPE), 0);
	assert_int_equal(loop->ops->attach(loop, p[1], CQW__FD_MSGPIPE), 0);
	assert_true(DuplicateHandle(GetCurrentProcess(), (HANDLE)p[1],
				    GetCurrentProcess(), &dup, 0, FALSE,
				    DUPLICATE_SAME_ACCESS));
	ev = CreateEventW(NULL, TRUE, FALSE, NULL);
	assert_non_null(ev);
	for (i = 0; i < 3; i++) {
		fov = VirtualAlloc(NULL, 4096, MEM_COMMIT | MEM_RESERVE,
				   PAGE_READWRITE);
		assert_non_null(fov);
		fov->hEvent = ev; /* no low bit: a packet goes to the port */
		ResetEvent(ev);
		if (!WriteFile(dup, "dup", 3, NULL, fov)) {
			assert_int_equal(GetLastError(), ERROR_IO_PENDING);
		}
		assert_int_equal(WaitForSingleObject(ev, T_WAIT_MS),
				 WAIT_OBJECT_0);
		assert_true(GetOverlappedResult(dup, fov, &n, FALSE));
		assert_int_equal(n, 3);
		assert_true(VirtualFree(fov, 0, MEM_RELEASE));
	}
	/* Three packets on the port, none of them the loop's. */
	t_quiet(loop, 50);
	for (i = 0; i < 3; i++) {
		t_recv(&r, p[0], CQW__FD_MSGPIPE, buf, sizeof(buf));
		loop->ops->start(loop, &r.io);
		t_wait_for(loop, &r);
		assert_int_equal(r.io.result, 3);
		assert_memory_equal(buf, "dup", 3);
	}
	t_quiet(loop, 20);
	CloseHandle(ev);
	CloseHandle(dup);
	CloseHandle((HANDLE)p[0]);
	CloseHandle((HANDLE)p[1]);
	t_loop_free(loop);
}

/* A handle bound to one loop's port cannot join another's. */
static void
test_iocp_bound_for_good(void **state)
{
	cqw_loop *a = t_loop(), *b = t_loop();
	cqw_fd p[2];

	(void)state;
	t_msgpipe(p);
	assert_int_equal(a->ops->attach(a, p[0], CQW__FD_MSGPIPE), 0);
	assert_int_equal(b->ops->attach(b, p[0], CQW__FD_MSGPIPE), CQW_EBUSY);
	CloseHandle((HANDLE)p[0]);
	CloseHandle((HANDLE)p[1]);
	t_loop_free(a);
	t_loop_free(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_iocp_msgpipe_sizes),
		cmocka_unit_test(test_iocp_tcp_sizes),
		cmocka_unit_test(test_iocp_more_data_inline),
		cmocka_unit_test(test_iocp_more_data_pending),
		cmocka_unit_test(test_iocp_skip_on_success),
		cmocka_unit_test(test_iocp_cancel_pending_read),
		cmocka_unit_test(test_iocp_cancel_after_data),
		cmocka_unit_test(test_iocp_batch_reaping),
		cmocka_unit_test(test_iocp_cancel_storm),
		cmocka_unit_test(test_iocp_wake_from_thread),
		cmocka_unit_test(test_iocp_wait_asks_signal_check),
		cmocka_unit_test(test_iocp_peek),
		cmocka_unit_test(test_iocp_peek_bytes_taken),
		cmocka_unit_test(test_iocp_peer_gone),
		cmocka_unit_test(test_iocp_closed_with_read_pending),
		cmocka_unit_test(test_iocp_bad_ios),
		cmocka_unit_test(test_iocp_foreign_packets_dropped),
		cmocka_unit_test(test_iocp_bound_for_good),
	};
	WSADATA wsa;

	if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0) {
		return 1;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
