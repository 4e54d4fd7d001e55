/*
 * src/win through the public API (cqwire.h) on Windows: Pipe() both ways
 * with 0 B .. 16 MiB messages, recv_bytes_into too short (kept), poll and
 * wait with zero-length messages, batches, a named pipe and a TCP
 * Listener with the HMAC handshake (and a wrong key), and a handle
 * duplicated into another process (this program started again with an
 * argument) that the child then uses.
 *
 * Links: the library (cqwire), cmocka.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <windows.h>

#include "cqwire.h"

static char t_self[MAX_PATH];

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

	for (i = 0; buf != NULL && i < s->count && s->result == 0; i++) {
		t_fill(buf, s->len, (unsigned)i);
		s->result = cqw_send_bytes(s->c, buf, s->len);
	}
	if (buf == NULL) {
		s->result = CQW_ENOMEM;
	}
	free(buf);
	return 0;
}

/* count messages of len from one end to the other, both receive calls. */
static void
t_round(cqw_conn *from, cqw_conn *to, size_t len, int count)
{
	struct t_sender s = { .c = from, .len = len, .count = count };
	uint8_t *buf = malloc(len + 1);
	void *got;
	int64_t n;
	int i;

	assert_non_null(buf);
	s.thread = CreateThread(NULL, 0, t_sender_main, &s, 0, NULL);
	assert_non_null(s.thread);
	for (i = 0; i < count; i++) {
		if (i % 2 == 0) {
			n = cqw_recv_bytes_into(to, buf, len + 1, 0, NULL);
			assert_int_equal(n, (int64_t)len);
			assert_true(t_check(buf, len, (unsigned)i));
		} else {
			n = cqw_recv_bytes(to, &got, CQW_NONE);
			assert_int_equal(n, (int64_t)len);
			assert_true(t_check(got, len, (unsigned)i));
			cqw_free(got);
		}
	}
	assert_int_equal(WaitForSingleObject(s.thread, 60000), WAIT_OBJECT_0);
	CloseHandle(s.thread);
	assert_int_equal(s.result, 0);
	free(buf);
}

static void
test_win_api_pipe_sizes(void **state)
{
	static const size_t sizes[] = { 0, 5, 65536, 1 << 20, 16 << 20 };
	cqw_conn *a, *b;
	size_t i;

	(void)state;
	assert_int_equal(cqw_pipe(&a, &b, CQW_DUPLEX), 0);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		t_round(a, b, sizes[i], 2);
		t_round(b, a, sizes[i], 2);
	}
	/* With spinning before a receive sleeps: the same messages. */
	assert_int_equal(cqw_conn_set_spin(a, 300), 0);
	assert_int_equal(cqw_conn_set_spin(b, 300), 0);
	t_round(a, b, 5, 6);
	t_round(b, a, 70000, 2);
	cqw_conn_free(a);
	cqw_conn_free(b);

	/* Pipe(duplex=False): (reader, writer). */
	assert_int_equal(cqw_pipe(&a, &b, 0), 0);
	assert_true(cqw_conn_readable(a) && !cqw_conn_writable(a));
	assert_true(cqw_conn_writable(b) && !cqw_conn_readable(b));
	t_round(b, a, 5, 2);
	t_round(b, a, 1 << 20, 2);
	assert_int_equal(cqw_send_bytes(a, "x", 1), CQW_EREADONLY);
	assert_int_equal(cqw_poll(b, 0), CQW_EWRITEONLY);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

static void
test_win_api_too_short_and_empty(void **state)
{
	struct cqw_wait_item it[2];
	uint8_t buf[64];
	size_t needed = 0;
	cqw_conn *a, *b;
	void *got;

	(void)state;
	assert_int_equal(cqw_pipe(&a, &b, CQW_DUPLEX), 0);
	assert_int_equal(cqw_send_bytes(a, "0123456789abcdef", 16), 0);
	assert_int_equal(cqw_recv_bytes_into(b, buf, 20, 10, &needed),
			 CQW_ETOOSHORT);
	assert_int_equal(needed, 16);
	assert_int_equal(cqw_recv_bytes_into(b, buf, 26, 10, &needed), 16);
	assert_memory_equal(buf + 10, "0123456789abcdef", 16);

	assert_int_equal(cqw_poll(b, 0), 0);
	assert_int_equal(cqw_send_bytes(a, "", 0), 0);
	memset(it, 0, sizeof(it));
	it[0].conn = b;
	it[1].conn = a;
	assert_int_equal(cqw_wait(it, 2, 1000), 1);
	assert_int_equal(it[0].ready, 1);
	assert_int_equal(cqw_poll(b, 0), 1);
	assert_int_equal(cqw_recv_bytes(b, &got, 0), 0);
	cqw_free(got);
	assert_int_equal(cqw_poll(b, 50), 0);
	assert_int_equal(cqw_wait(it, 2, 50), 0);
	/* maxlength refuses without allocating; the end is poisoned. */
	assert_int_equal(cqw_send_bytes(a, "toolong", 7), 0);
	assert_int_equal(cqw_recv_bytes(b, &got, 6), CQW_EMSGSIZE);
	assert_int_equal(cqw_recv_bytes(b, &got, 100), CQW_EWRITEONLY);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

static void
test_win_api_batch(void **state)
{
	struct cqw_msg out[3] = { { .buf = "a", .len = 1 },
				  { .buf = "", .len = 0 },
				  { .buf = "ccc", .len = 3 } };
	struct cqw_msg in[4];
	uint8_t bufs[4][8];
	cqw_conn *a, *b;
	int i;

	(void)state;
	assert_int_equal(cqw_pipe(&a, &b, CQW_DUPLEX), 0);
	for (i = 0; i < 4; i++) {
		in[i].buf = bufs[i];
		in[i].cap = sizeof(bufs[i]);
	}
	assert_int_equal(cqw_recv_batch(b, in, 4, 30), 0);
	assert_int_equal(cqw_send_batch(a, out, 3), 0);
	assert_int_equal(cqw_recv_batch(b, in, 4, 1000), 3);
	assert_int_equal(in[0].len, 1);
	assert_int_equal(in[1].len, 0);
	assert_int_equal(in[2].len, 3);
	assert_memory_equal(bufs[2], "ccc", 3);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

struct t_client {
	const char *addr;
	const char *key;
	int result;
};

static DWORD WINAPI
t_client_main(void *arg)
{
	struct t_client *t = arg;
	struct cqw_auth auth = { .key = t->key,
				 .keylen = t->key ? strlen(t->key) : 0 };
	uint8_t buf[16];
	cqw_conn *c;
	int64_t n;

	t->result = cqw_connect(&c, t->addr, t->key ? &auth : NULL);
	if (t->result < 0) {
		return 0;
	}
	t->result = cqw_send_bytes(c, "ping", 4);
	if (t->result == 0) {
		n = cqw_recv_bytes_into(c, buf, sizeof(buf), 0, NULL);
		t->result = n == 4 && memcmp(buf, "pong", 4) == 0 ? 0 : -1;
	}
	cqw_conn_free(c);
	return 0;
}

/* A Listener with an authkey: the handshake, then a round trip. */
static void
t_listen_round(const char *address)
{
	struct cqw_auth auth = { .key = "secret", .keylen = 6 };
	struct t_client cl = { .key = "secret" };
	struct t_client bad = { .key = "wrong" };
	cqw_listener *l;
	uint8_t buf[16];
	cqw_conn *s;
	HANDLE th;

	assert_int_equal(cqw_listen(&l, address, &auth, 4), 0);
	cl.addr = bad.addr = cqw_listener_address(l);
	assert_non_null(cl.addr);
	print_message("listening on %s\n", cl.addr);
	th = CreateThread(NULL, 0, t_client_main, &cl, 0, NULL);
	assert_non_null(th);
	assert_int_equal(cqw_accept(l, &s, 20000), 0);
	assert_int_equal(cqw_recv_bytes_into(s, buf, sizeof(buf), 0, NULL), 4);
	assert_memory_equal(buf, "ping", 4);
	assert_int_equal(cqw_send_bytes(s, "pong", 4), 0);
	assert_int_equal(WaitForSingleObject(th, 20000), WAIT_OBJECT_0);
	CloseHandle(th);
	assert_int_equal(cl.result, 0);
	cqw_conn_free(s);

	th = CreateThread(NULL, 0, t_client_main, &bad, 0, NULL);
	assert_int_equal(cqw_accept(l, &s, 20000), CQW_EAUTH);
	assert_int_equal(WaitForSingleObject(th, 20000), WAIT_OBJECT_0);
	CloseHandle(th);
	assert_int_equal(bad.result, CQW_EAUTH);
	assert_int_equal(cqw_accept(l, &s, 50), CQW_ETIMEDOUT);
	assert_int_equal(cqw_listener_close(l), 0);
	cqw_listener_free(l);
}

static void
test_win_api_listener_pipe(void **state)
{
	char addr[96];

	(void)state;
	snprintf(addr, sizeof(addr), "pipe:\\\\.\\pipe\\cqw-api-%lu",
		 (unsigned long)GetCurrentProcessId());
	t_listen_round(addr);
}

static void
test_win_api_listener_tcp(void **state)
{
	(void)state;
	t_listen_round("tcp:127.0.0.1:0");
	assert_int_equal(cqw_listen(NULL, "unix:/x", NULL, 1), CQW_EINVAL);
}

/* cqw_wait() on 200 pipe connections and a process; a bad handle. */
static void
test_win_api_wait_many(void **state)
{
	enum { N = 200 };
	struct cqw_wait_item it[N + 1];
	cqw_conn *r[N], *w[N];
	HANDLE ev;
	void *got;
	int i;

	(void)state;
	memset(it, 0, sizeof(it));
	for (i = 0; i < N; i++) {
		assert_int_equal(cqw_pipe(&r[i], &w[i], 0), 0);
		it[i].conn = r[i];
	}
	ev = CreateEventW(NULL, FALSE, FALSE, NULL); /* auto-reset */
	assert_non_null(ev);
	it[N].fd = (cqw_fd)ev;
	assert_int_equal(cqw_wait(it, N + 1, 30), 0);
	assert_int_equal(cqw_send_bytes(w[0], "x", 1), 0);
	assert_int_equal(cqw_send_bytes(w[N - 1], "", 0), 0);
	SetEvent(ev);
	assert_int_equal(cqw_wait(it, N + 1, 5000), 3);
	assert_int_equal(it[0].ready, 1);
	assert_int_equal(it[N - 1].ready, 1);
	assert_int_equal(it[N].ready, 1);
	assert_int_equal(cqw_recv_bytes(r[N - 1], &got, CQW_NONE), 0);
	cqw_free(got);
	assert_int_equal(cqw_recv_bytes(r[0], &got, CQW_NONE), 1);
	cqw_free(got);
	assert_int_equal(cqw_wait(it, N + 1, 0), 0);
	/* A writer gone is readable: the receive says CQW_EOF. */
	cqw_conn_free(w[5]);
	w[5] = NULL;
	assert_int_equal(cqw_wait(it, N + 1, 5000), 1);
	assert_int_equal(it[5].ready, 1);
	assert_int_equal(cqw_recv_bytes(r[5], &got, CQW_NONE), CQW_EOF);
	for (i = 0; i < N; i++) {
		cqw_conn_free(r[i]);
		cqw_conn_free(w[i]);
	}
	/* A handle that is not open: CQW_EBADF, nothing reported. */
	CloseHandle(ev);
	memset(it, 0, sizeof(it));
	it[0].fd = (cqw_fd)ev;
	assert_int_equal(cqw_wait(it, 1, 100), CQW_EBADF);
	assert_int_equal(it[0].ready, 0);
}

/* The child: connect, take the handle, set the event it names, exit. */
static int
t_child_handle(const char *addr)
{
	cqw_conn *c;
	cqw_fd h = 0;
	int r;

	if (cqw_connect(&c, addr, NULL) != 0) {
		return 2;
	}
	r = cqw_recv_handle(c, &h);
	if (r != 0) {
		return 3;
	}
	if (!SetEvent((HANDLE)h)) {
		return 4;
	}
	CloseHandle((HANDLE)h);
	cqw_send_bytes(c, "done", 4);
	cqw_conn_free(c);
	return 0;
}

/* A handle duplicated into another process: the pipe's peer (pid 0). */
static void
test_win_api_handle_to_child(void **state)
{
	HANDLE ev = CreateEventW(NULL, TRUE, FALSE, NULL);
	PROCESS_INFORMATION pi;
	STARTUPINFOA si;
	cqw_listener *l;
	char addr[96], cmd[MAX_PATH + 128];
	uint8_t buf[8];
	DWORD code = 99;
	cqw_conn *s;

	(void)state;
	assert_non_null(ev);
	snprintf(addr, sizeof(addr), "pipe:\\\\.\\pipe\\cqw-api-h-%lu",
		 (unsigned long)GetCurrentProcessId());
	assert_int_equal(cqw_listen(&l, addr, NULL, 1), 0);
	snprintf(cmd, sizeof(cmd), "\"%s\" child-handle %s", t_self, addr);
	memset(&si, 0, sizeof(si));
	si.cb = sizeof(si);
	assert_true(CreateProcessA(NULL, cmd, NULL, NULL, FALSE, 0, NULL, NULL,
				   &si, &pi));
	assert_int_equal(cqw_accept(l, &s, 20000), 0);
	assert_int_equal(cqw_send_handle(s, (cqw_fd)ev), 0);
	assert_int_equal(cqw_recv_bytes_into(s, buf, sizeof(buf), 0, NULL), 4);
	assert_int_equal(WaitForSingleObject(ev, 5000), WAIT_OBJECT_0);
	assert_int_equal(WaitForSingleObject(pi.hProcess, 10000),
			 WAIT_OBJECT_0);
	assert_true(GetExitCodeProcess(pi.hProcess, &code));
	assert_int_equal(code, 0);
	CloseHandle(pi.hProcess);
	CloseHandle(pi.hThread);
	cqw_conn_free(s);
	cqw_listener_free(l);
	CloseHandle(ev);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_win_api_pipe_sizes),
		cmocka_unit_test(test_win_api_too_short_and_empty),
		cmocka_unit_test(test_win_api_batch),
		cmocka_unit_test(test_win_api_listener_pipe),
		cmocka_unit_test(test_win_api_listener_tcp),
		cmocka_unit_test(test_win_api_handle_to_child),
		cmocka_unit_test(test_win_api_wait_many),
	};

	if (argc == 3 && strcmp(argv[1], "child-handle") == 0) {
		return t_child_handle(argv[2]);
	}
	GetModuleFileNameA(NULL, t_self, sizeof(t_self));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
