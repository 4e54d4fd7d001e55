/*
 * Servers on the loop on Windows (issue 9), on the iocp backend: CQW_OP_ACCEPT
 * as AcceptEx (TCP) and ConnectNamedPipe (named pipes), CQW_OP_CONNECT as
 * ConnectEx and a named pipe's CreateFile, each followed by the handshake
 * as ops. Every test runs over TCP and over named pipes.
 *
 * Covered: accepts and connects on one loop with a key, their connections
 * then carrying ops on the same loop (each accepted handle bound to the
 * port); no key; a wrong key; 1,000 silent peers while an honest client is
 * served; a slow drip dropped at the deadline; cancels of accepts and
 * connects in every phase, each completing exactly once; connect to
 * nothing (ECONNREFUSED / ENOENT) and to a listener that never answers
 * (ETIMEDOUT); a busy pipe, with cqw_connect_timeout and with a CONNECT
 * op that gets through once the server accepts; synchronous and loop
 * accepts mixed; a listener's accepts on a second loop; a pipe client
 * gone before the accept (ERROR_NO_DATA); IPv6.
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

#include "t-conn.h"

static const struct cqw_auth key_auth = { .key = "server-key", .keylen = 10 };

enum { TCP = 0, PIPE = 1 };

/* A listener on a fresh address of transport tp; auth may be NULL. */
static cqw_listener *
listen_on(int tp, const struct cqw_auth *auth, int backlog)
{
	static int seq;
	cqw_listener *l;
	char addr[96];

	if (tp == PIPE) {
		snprintf(addr, sizeof(addr),
			 "pipe:\\\\.\\pipe\\cqw-win-server-%lu-%d",
			 (unsigned long)GetCurrentProcessId(), seq++);
	} else {
		snprintf(addr, sizeof(addr), "tcp:127.0.0.1:0");
	}
	T_OK(cqw_listen(&l, addr, auth, backlog));
	return l;
}

static cqw_loop *
new_loop(void)
{
	struct cqw_loop_opts o = { .backend = CQW_BACKEND_IOCP };
	cqw_loop *loop;

	T_OK(cqw_loop_new(&loop, &o));
	assert_string_equal(cqw_loop_backend(loop), "iocp");
	return loop;
}

/* Reap exactly one op within timeout_ms (fails the test otherwise). */
static struct cqw_op *
reap_one(cqw_loop *loop, int timeout_ms)
{
	struct cqw_op *op = NULL;
	int64_t end = t_now_ms() + timeout_ms;
	int n;

	do {
		n = cqw_reap(loop, &op, 1, (int)(end - t_now_ms()));
		if (n < 0) {
			fail_msg("cqw_reap: %s", cqw_err_name(n));
		}
	} while (n == 0 && t_now_ms() < end);
	if (n != 1) {
		fail_msg("no completion within %d ms", timeout_ms);
	}
	return op;
}

/* Nothing completes within ms. */
static void
reap_none(cqw_loop *loop, int ms)
{
	struct cqw_op *op;

	assert_int_equal(cqw_reap(loop, &op, 1, ms), 0);
}

/* --- raw peers: no cqwire on their side ------------------------------ */

struct raw {
	int tp;
	SOCKET s;
	HANDLE h;
};

static int
listener_port(cqw_listener *l)
{
	const char *a = strrchr(cqw_listener_address(l), ':');

	assert_non_null(a);
	return atoi(a + 1);
}

/* A raw client of l: a connected socket, or an open pipe instance. */
static struct raw
raw_connect(cqw_listener *l)
{
	struct raw r = { .s = INVALID_SOCKET, .h = INVALID_HANDLE_VALUE };
	const char *a = cqw_listener_address(l);

	if (strncmp(a, "pipe:", 5) == 0) {
		r.tp = PIPE;
		r.h = CreateFileA(a + 5, GENERIC_READ | GENERIC_WRITE, 0, NULL,
				  OPEN_EXISTING, 0, NULL);
		if (r.h == INVALID_HANDLE_VALUE) {
			fail_msg("CreateFile: %lu", GetLastError());
		}
	} else {
		struct sockaddr_in sin = { .sin_family = AF_INET };

		r.tp = TCP;
		sin.sin_port = htons((u_short)listener_port(l));
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		r.s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
		assert_true(r.s != INVALID_SOCKET);
		if (connect(r.s, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
			fail_msg("connect: %d", WSAGetLastError());
		}
	}
	return r;
}

static void
raw_write(struct raw *r, const void *buf, int len)
{
	DWORD n = 0;

	if (r->tp == TCP) {
		assert_int_equal(send(r->s, buf, len, 0), len);
	} else {
		assert_true(WriteFile(r->h, buf, (DWORD)len, &n, NULL));
		assert_int_equal((int)n, len);
	}
}

static void
raw_close(struct raw *r)
{
	if (r->tp == TCP) {
		closesocket(r->s);
	} else {
		CloseHandle(r->h);
	}
}

/* A free TCP port: bound once, then let go. */
static int
dead_port(void)
{
	cqw_listener *l;
	int port;

	T_OK(cqw_listen(&l, "tcp:127.0.0.1:0", NULL, 1));
	port = listener_port(l);
	cqw_listener_free(l);
	return port;
}

/* Round trip one message over a and b (sync calls). */
static void
check_pair(cqw_conn *a, cqw_conn *b)
{
	char buf[16];

	T_OK(cqw_send_bytes(a, "hello", 5));
	assert_int_equal(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, NULL), 5);
	assert_memory_equal(buf, "hello", 5);
	T_OK(cqw_send_bytes(b, "back", 4));
	assert_int_equal(cqw_recv_bytes_into(a, buf, sizeof(buf), 0, NULL), 4);
	assert_memory_equal(buf, "back", 4);
}

/* A receive op on the loop gets what peer sends: c's handle is bound. */
static void
check_loop_recv(cqw_loop *loop, cqw_conn *c, cqw_conn *peer)
{
	struct cqw_op rx = { .kind = CQW_OP_RECV }, *op;
	char buf[8];

	rx.conn = c;
	rx.buf = buf;
	rx.len = sizeof(buf);
	T_OK(cqw_submit(loop, &rx));
	T_OK(cqw_send_bytes(peer, "abc", 3));
	op = reap_one(loop, T_IO_DEADLINE_MS);
	assert_ptr_equal(op, &rx);
	T_EXPECT(op->result, 3);
	assert_memory_equal(buf, "abc", 3);
}

/* ------------------------------------------------------------------ */

/*
 * Accepts and connects on one loop with a key: all the handshakes at
 * once. Then each accepted and each connected connection carries a
 * receive op on that loop.
 */
static void
accept_connect_one_loop(int tp)
{
	enum { N = 8 };
	struct cqw_op acc[N], con[N], *op;
	cqw_conn *server[N] = { 0 }, *client[N] = { 0 };
	cqw_listener *l = listen_on(tp, &key_auth, 64);
	cqw_loop *loop = new_loop();
	int i, got = 0;

	memset(acc, 0, sizeof(acc));
	memset(con, 0, sizeof(con));
	for (i = 0; i < N; i++) {
		acc[i].kind = CQW_OP_ACCEPT;
		acc[i].listener = l;
		T_OK(cqw_submit(loop, &acc[i]));
		con[i].kind = CQW_OP_CONNECT;
		con[i].address = cqw_listener_address(l);
		con[i].auth = &key_auth;
		T_OK(cqw_submit(loop, &con[i]));
	}
	while (got < 2 * N) {
		op = reap_one(loop, T_IO_DEADLINE_MS);
		T_EXPECT(op->result, 0);
		assert_non_null(op->conn);
		if (op->kind == CQW_OP_ACCEPT) {
			i = (int)(op - acc);
			assert_true(i >= 0 && i < N && server[i] == NULL);
			server[i] = op->conn;
		} else {
			i = (int)(op - con);
			assert_true(i >= 0 && i < N && client[i] == NULL);
			client[i] = op->conn;
		}
		got++;
	}
	reap_none(loop, 20); /* each op completed once */
	/* Pairs are unknown (accept order): send on each client, find it. */
	for (i = 0; i < N; i++) {
		char buf[8];
		int j, found = -1;

		T_OK(cqw_send_bytes(client[i], &i, sizeof(i)));
		for (j = 0; j < N && found < 0; j++) {
			if (cqw_poll(server[j], 100) == 1) {
				assert_int_equal(
				    cqw_recv_bytes_into(server[j], buf,
							sizeof(buf), 0, NULL),
				    (int)sizeof(i));
				assert_memory_equal(buf, &i, sizeof(i));
				found = j;
			}
		}
		assert_true(found >= 0);
		check_pair(server[found], client[i]);
		check_loop_recv(loop, server[found], client[i]);
		check_loop_recv(loop, client[i], server[found]);
	}
	for (i = 0; i < N; i++) {
		cqw_conn_free(server[i]);
		cqw_conn_free(client[i]);
	}
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

static void
test_accept_connect_tcp(void **state)
{
	(void)state;
	accept_connect_one_loop(TCP);
}

static void
test_accept_connect_pipe(void **state)
{
	(void)state;
	accept_connect_one_loop(PIPE);
}

/* Without a key: ACCEPT completes when the peer comes; ops run on it. */
static void
no_key(int tp)
{
	struct cqw_op acc = { .kind = CQW_OP_ACCEPT }, *op;
	cqw_listener *l = listen_on(tp, NULL, 4);
	cqw_loop *loop = new_loop();
	cqw_conn *c;

	acc.listener = l;
	T_OK(cqw_submit(loop, &acc));
	reap_none(loop, 20);
	T_OK(cqw_connect(&c, cqw_listener_address(l), NULL));
	op = reap_one(loop, T_IO_DEADLINE_MS);
	assert_ptr_equal(op, &acc);
	T_EXPECT(op->result, 0);
	check_loop_recv(loop, acc.conn, c);
	check_pair(acc.conn, c);
	cqw_conn_free(acc.conn);
	cqw_conn_free(c);
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

static void
test_no_key_tcp(void **state)
{
	(void)state;
	no_key(TCP);
}

static void
test_no_key_pipe(void **state)
{
	(void)state;
	no_key(PIPE);
}

/*
 * A client that came before any accept (the pipe's pre-created instance:
 * ERROR_PIPE_CONNECTED; TCP: the backlog) is accepted by the first op.
 */
static void
early_client(int tp)
{
	struct cqw_op acc = { .kind = CQW_OP_ACCEPT }, *op;
	cqw_listener *l = listen_on(tp, &key_auth, 4);
	cqw_loop *loop = new_loop();
	struct cqw_op con = { .kind = CQW_OP_CONNECT };

	con.address = cqw_listener_address(l);
	con.auth = &key_auth;
	T_OK(cqw_submit(loop, &con));
	T_OK(cqw_flush(loop));
	t_sleep_ms(50);
	acc.listener = l;
	T_OK(cqw_submit(loop, &acc));
	op = reap_one(loop, T_IO_DEADLINE_MS);
	T_EXPECT(op->result, 0);
	op = reap_one(loop, T_IO_DEADLINE_MS);
	T_EXPECT(op->result, 0);
	check_pair(acc.conn, con.conn);
	cqw_conn_free(acc.conn);
	cqw_conn_free(con.conn);
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

static void
test_early_client_tcp(void **state)
{
	(void)state;
	early_client(TCP);
}

static void
test_early_client_pipe(void **state)
{
	(void)state;
	early_client(PIPE);
}

/* A wrong key: both sides CQW_EAUTH, nothing handed up. */
static void
wrong_key(int tp)
{
	struct cqw_auth other = { .key = "other", .keylen = 5 };
	struct cqw_op acc = { .kind = CQW_OP_ACCEPT };
	struct cqw_op con = { .kind = CQW_OP_CONNECT }, *op;
	cqw_listener *l = listen_on(tp, &key_auth, 4);
	cqw_loop *loop = new_loop();
	int i;

	acc.listener = l;
	con.address = cqw_listener_address(l);
	con.auth = &other;
	T_OK(cqw_submit(loop, &acc));
	T_OK(cqw_submit(loop, &con));
	for (i = 0; i < 2; i++) {
		op = reap_one(loop, T_IO_DEADLINE_MS);
		assert_true(op == &acc || op == &con);
		T_EXPECT(op->result, CQW_EAUTH);
		assert_null(op->conn);
	}
	reap_none(loop, 20);
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

static void
test_wrong_key_tcp(void **state)
{
	(void)state;
	wrong_key(TCP);
}

static void
test_wrong_key_pipe(void **state)
{
	(void)state;
	wrong_key(PIPE);
}

/*
 * 1,000 peers connect and never answer; an honest client that comes after
 * them is served meanwhile (its handshake and a round trip), and the
 * silent ones' accepts are then cancelled, each ending exactly once.
 */
#define STORM 10000

static void
silent_peers(int tp)
{
	enum { SILENT = 1000 };
	static struct cqw_op acc[SILENT + 1];
	static struct raw peer[SILENT];
	struct cqw_op con = { .kind = CQW_OP_CONNECT }, *op;
	cqw_listener *l = listen_on(tp, &key_auth, SILENT + 64);
	cqw_loop *loop = new_loop();
	int seen[SILENT + 1] = { 0 };
	cqw_conn *server = NULL;
	int i, left;

	memset(acc, 0, sizeof(acc));
	for (i = 0; i <= SILENT; i++) {
		acc[i].kind = CQW_OP_ACCEPT;
		acc[i].listener = l;
		T_OK(cqw_submit(loop, &acc[i]));
	}
	T_OK(cqw_flush(loop)); /* every pipe accept has its instance */
	for (i = 0; i < SILENT; i++) {
		peer[i] = raw_connect(l);
	}
	reap_none(loop, 100); /* the silent are held, none completes */
	con.address = cqw_listener_address(l);
	con.auth = &key_auth;
	T_OK(cqw_submit(loop, &con));
	/* The honest pair completes; no silent accept does. */
	for (left = 2; left > 0; left--) {
		op = reap_one(loop, T_IO_DEADLINE_MS);
		T_EXPECT(op->result, 0);
		if (op->kind == CQW_OP_ACCEPT) {
			i = (int)(op - acc);
			assert_true(i >= 0 && i <= SILENT && !seen[i]);
			seen[i] = 1;
			server = op->conn;
		} else {
			assert_ptr_equal(op, &con);
		}
	}
	assert_non_null(server);
	check_pair(server, con.conn);
	for (i = 0; i <= SILENT; i++) {
		if (!seen[i]) {
			T_OK(cqw_cancel(loop, &acc[i]));
		}
	}
	for (left = SILENT; left > 0; left--) {
		op = reap_one(loop, T_IO_DEADLINE_MS);
		i = (int)(op - acc);
		assert_true(i >= 0 && i <= SILENT && !seen[i]);
		seen[i] = 1;
		T_EXPECT(op->result, CQW_ECANCELED);
		assert_null(op->conn);
	}
	reap_none(loop, 20);
	for (i = 0; i < SILENT; i++) {
		raw_close(&peer[i]);
	}
	cqw_conn_free(server);
	cqw_conn_free(con.conn);
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

static void
test_silent_peers_tcp(void **state)
{
	(void)state;
	silent_peers(TCP);
}

static void
test_silent_peers_pipe(void **state)
{
	(void)state;
	silent_peers(PIPE);
}

/*
 * A peer that sends its response one byte every 100 ms is dropped at the
 * handshake's deadline with CQW_ETIMEDOUT. (A message pipe has no slow
 * frame: each write is a whole message; the drip is a stream's.)
 */
static void
test_slow_drip_tcp(void **state)
{
	struct cqw_auth a = key_auth;
	struct cqw_op acc = { .kind = CQW_OP_ACCEPT }, *op = NULL;
	static const char hdr[4] = { 0, 0, 0, (char)200 };
	cqw_listener *l;
	cqw_loop *loop = new_loop();
	struct raw peer;
	int n, sent = 0;

	(void)state;
	a.timeout_ms = 500;
	l = listen_on(TCP, &a, 4);
	acc.listener = l;
	T_OK(cqw_submit(loop, &acc));
	T_OK(cqw_flush(loop));
	peer = raw_connect(l);
	for (;;) {
		/* A header that promises 200 bytes, then a byte at a time. */
		raw_write(&peer, sent < 4 ? &hdr[sent] : "x", 1);
		sent++;
		n = cqw_reap(loop, &op, 1, 100);
		assert_true(n >= 0);
		if (n == 1) {
			break;
		}
		assert_true(sent < T_IO_DEADLINE_MS / 100);
	}
	assert_ptr_equal(op, &acc);
	T_EXPECT(op->result, CQW_ETIMEDOUT);
	assert_null(op->conn);
	reap_none(loop, 20);
	raw_close(&peer);
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

/* Reap n ops of ops[0..n): each once, with want, and no conn. */
static void
reap_each_once(cqw_loop *loop, struct cqw_op **ops, int n, int64_t want)
{
	int seen[8] = { 0 };
	struct cqw_op *op;
	int i, k;

	assert_true(n <= 8);
	for (k = 0; k < n; k++) {
		op = reap_one(loop, T_IO_DEADLINE_MS);
		for (i = 0; i < n && ops[i] != op; i++) {
		}
		assert_true(i < n);
		assert_false(seen[i]);
		seen[i] = 1;
		T_EXPECT(op->result, want);
		assert_null(op->conn);
	}
	reap_none(loop, 20);
}

/*
 * Cancels end each op exactly once with CQW_ECANCELED, whatever its
 * phase: an accept before its flush, one waiting for a peer (AcceptEx or
 * ConnectNamedPipe pending), one in its handshake with a silent peer; a
 * connect before its flush, one just flushed (connecting or in its
 * handshake), one with a server that never answers (a pipe's is busy by
 * then: it waits to try again). The listener then still accepts.
 */
static void
cancels(int tp)
{
	struct cqw_op a1 = { .kind = CQW_OP_ACCEPT };
	struct cqw_op a2 = { .kind = CQW_OP_ACCEPT };
	struct cqw_op a3 = { .kind = CQW_OP_ACCEPT };
	struct cqw_op c1 = { .kind = CQW_OP_CONNECT };
	struct cqw_op c2 = { .kind = CQW_OP_CONNECT };
	struct cqw_op c3 = { .kind = CQW_OP_CONNECT };
	struct cqw_op a4 = { .kind = CQW_OP_ACCEPT };
	struct cqw_op c4 = { .kind = CQW_OP_CONNECT };
	struct cqw_op *first[] = { &a1, &c1, &a2, &c2 };
	struct cqw_op *second[] = { &a3, &c3 };
	struct cqw_op *op;
	cqw_listener *l = listen_on(tp, &key_auth, 8);
	cqw_listener *q = listen_on(tp, &key_auth, 8);
	cqw_listener *mute = listen_on(tp, &key_auth, 8);
	cqw_loop *loop = new_loop();
	struct raw peer;
	int i;

	a1.listener = a2.listener = a4.listener = l;
	a3.listener = q;
	c1.address = c2.address = c3.address = cqw_listener_address(mute);
	c1.auth = c2.auth = c3.auth = &key_auth;

	T_OK(cqw_submit(loop, &a1)); /* queued */
	T_OK(cqw_cancel(loop, &a1));
	T_OK(cqw_submit(loop, &c1)); /* queued */
	T_OK(cqw_cancel(loop, &c1));
	T_OK(cqw_submit(loop, &a2));
	T_OK(cqw_submit(loop, &c2));
	T_OK(cqw_flush(loop));
	T_OK(cqw_cancel(loop, &a2));
	T_OK(cqw_cancel(loop, &c2));
	reap_each_once(loop, first, 4, CQW_ECANCELED);

	T_OK(cqw_submit(loop, &a3));
	T_OK(cqw_submit(loop, &c3));
	T_OK(cqw_flush(loop));
	peer = raw_connect(q);
	reap_none(loop, 100); /* a3 and c3 are in their handshakes */
	T_OK(cqw_cancel(loop, &a3));
	T_OK(cqw_cancel(loop, &c3));
	reap_each_once(loop, second, 2, CQW_ECANCELED);
	raw_close(&peer);

	/* l goes on: a new accept and a connect meet. */
	c4.address = cqw_listener_address(l);
	c4.auth = &key_auth;
	T_OK(cqw_submit(loop, &a4));
	T_OK(cqw_submit(loop, &c4));
	for (i = 0; i < 2; i++) {
		op = reap_one(loop, T_IO_DEADLINE_MS);
		assert_true(op == &a4 || op == &c4);
		T_EXPECT(op->result, 0);
	}
	check_pair(a4.conn, c4.conn);
	cqw_conn_free(a4.conn);
	cqw_conn_free(c4.conn);
	reap_none(loop, 20);
	cqw_loop_free(loop);
	cqw_listener_free(mute);
	cqw_listener_free(q);
	cqw_listener_free(l);
}

static void
test_cancels_tcp(void **state)
{
	(void)state;
	cancels(TCP);
}

static void
test_cancels_pipe(void **state)
{
	(void)state;
	cancels(PIPE);
}

/* Nothing there: a TCP port nobody listens on, a pipe nobody made. */
static void
test_connect_to_nothing(void **state)
{
	struct cqw_op con = { .kind = CQW_OP_CONNECT }, *op;
	cqw_loop *loop = new_loop();
	char addr[96];

	(void)state;
	snprintf(addr, sizeof(addr), "tcp:127.0.0.1:%d", dead_port());
	con.address = addr;
	con.auth = &key_auth;
	T_OK(cqw_submit(loop, &con));
	op = reap_one(loop, T_IO_DEADLINE_MS);
	T_EXPECT(op->result, CQW_ECONNREFUSED);
	assert_null(op->conn);

	snprintf(addr, sizeof(addr), "pipe:\\\\.\\pipe\\cqw-win-none-%lu",
		 (unsigned long)GetCurrentProcessId());
	memset(&con, 0, sizeof(con));
	con.kind = CQW_OP_CONNECT;
	con.address = addr;
	T_OK(cqw_submit(loop, &con));
	op = reap_one(loop, T_IO_DEADLINE_MS);
	T_EXPECT(op->result, CQW_ENOENT);
	assert_null(op->conn);
	reap_none(loop, 20);
	cqw_loop_free(loop);
}

/* A listener that never accepts: the handshake's deadline ends it. */
static void
never_answers(int tp)
{
	struct cqw_auth a = key_auth;
	struct cqw_op con = { .kind = CQW_OP_CONNECT }, *op;
	cqw_listener *l = listen_on(tp, &key_auth, 4);
	cqw_loop *loop = new_loop();

	a.timeout_ms = 300;
	con.address = cqw_listener_address(l);
	con.auth = &a;
	T_OK(cqw_submit(loop, &con));
	op = reap_one(loop, T_IO_DEADLINE_MS);
	T_EXPECT(op->result, CQW_ETIMEDOUT);
	assert_null(op->conn);
	reap_none(loop, 20);
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

static void
test_never_answers_tcp(void **state)
{
	(void)state;
	never_answers(TCP);
}

static void
test_never_answers_pipe(void **state)
{
	(void)state;
	never_answers(PIPE);
}

/*
 * A busy pipe: the listener's one instance has a client and nobody
 * accepts. cqw_connect_timeout and a CONNECT op with a timeout end with
 * CQW_ETIMEDOUT, leaving nothing open; a CONNECT op that waits longer
 * gets through once an accept makes the next instance.
 */
static void
test_busy_pipe(void **state)
{
	struct cqw_op con = { .kind = CQW_OP_CONNECT };
	struct cqw_op acc = { .kind = CQW_OP_ACCEPT }, *op;
	cqw_listener *l = listen_on(PIPE, NULL, 4);
	cqw_loop *loop = new_loop();
	cqw_conn *first, *c = NULL;
	int i;

	(void)state;
	T_OK(cqw_connect(&first, cqw_listener_address(l), NULL));
	T_EXPECT(cqw_connect_timeout(&c, cqw_listener_address(l), NULL, 300),
		 CQW_ETIMEDOUT);
	assert_null(c);

	con.address = cqw_listener_address(l);
	con.timeout_ms = 300;
	T_OK(cqw_submit(loop, &con));
	op = reap_one(loop, T_IO_DEADLINE_MS);
	assert_ptr_equal(op, &con);
	T_EXPECT(op->result, CQW_ETIMEDOUT);
	assert_null(op->conn);

	memset(&con, 0, sizeof(con));
	con.kind = CQW_OP_CONNECT;
	con.address = cqw_listener_address(l);
	con.timeout_ms = T_IO_DEADLINE_MS;
	T_OK(cqw_submit(loop, &con));
	reap_none(loop, 100); /* still busy */
	acc.listener = l;
	T_OK(cqw_submit(loop, &acc)); /* takes first's, makes the next */
	for (i = 0; i < 2; i++) {
		op = reap_one(loop, T_IO_DEADLINE_MS);
		assert_true(op == &acc || op == &con);
		T_EXPECT(op->result, 0);
	}
	check_pair(acc.conn, first);
	cqw_conn_free(acc.conn);
	cqw_conn_free(con.conn);
	cqw_conn_free(first);
	reap_none(loop, 20);
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

/*
 * A listener's accepts on the loop and synchronous ones mix: the loop's,
 * then cqw_accept, then the loop's again (a pipe listener's instances
 * rotate through both).
 */
static void
sync_and_loop(int tp)
{
	struct cqw_op acc = { .kind = CQW_OP_ACCEPT }, *op;
	cqw_listener *l = listen_on(tp, NULL, 4);
	cqw_loop *loop = new_loop();
	cqw_conn *c[3], *s;
	int i;

	for (i = 0; i < 3; i++) {
		T_OK(cqw_connect(&c[i], cqw_listener_address(l), NULL));
		if (i == 1) {
			T_OK(cqw_accept(l, &s, T_IO_DEADLINE_MS));
		} else {
			memset(&acc, 0, sizeof(acc));
			acc.kind = CQW_OP_ACCEPT;
			acc.listener = l;
			T_OK(cqw_submit(loop, &acc));
			op = reap_one(loop, T_IO_DEADLINE_MS);
			T_EXPECT(op->result, 0);
			s = op->conn;
			check_loop_recv(loop, s, c[i]);
		}
		check_pair(s, c[i]);
		cqw_conn_free(s);
		cqw_conn_free(c[i]);
	}
	reap_none(loop, 20);
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

static void
test_sync_and_loop_tcp(void **state)
{
	(void)state;
	sync_and_loop(TCP);
}

static void
test_sync_and_loop_pipe(void **state)
{
	(void)state;
	sync_and_loop(PIPE);
}

/*
 * After one loop's accepts are over, another loop's: a pipe listener
 * gives each accept a new instance, so it may; a TCP listener's socket is
 * bound to the first loop's port for good (IOCP has no unbinding), so the
 * other loop's accept ends with CQW_EBUSY and the first loop still works.
 */
static void
second_loop(int tp)
{
	struct cqw_op acc = { .kind = CQW_OP_ACCEPT }, *op;
	cqw_listener *l = listen_on(tp, NULL, 4);
	cqw_loop *loop[2] = { new_loop(), new_loop() };
	cqw_conn *c;
	int i, k;

	for (k = 0; k < 3; k++) {
		i = k == 1 ? 1 : 0;
		memset(&acc, 0, sizeof(acc));
		acc.kind = CQW_OP_ACCEPT;
		acc.listener = l;
		T_OK(cqw_submit(loop[i], &acc));
		if (tp == TCP && i == 1) {
			op = reap_one(loop[i], T_IO_DEADLINE_MS);
			T_EXPECT(op->result, CQW_EBUSY);
			continue;
		}
		T_OK(cqw_connect(&c, cqw_listener_address(l), NULL));
		op = reap_one(loop[i], T_IO_DEADLINE_MS);
		T_EXPECT(op->result, 0);
		check_loop_recv(loop[i], op->conn, c);
		cqw_conn_free(op->conn);
		cqw_conn_free(c);
	}
	cqw_loop_free(loop[0]);
	cqw_loop_free(loop[1]);
	cqw_listener_free(l);
}

static void
test_second_loop_tcp(void **state)
{
	(void)state;
	second_loop(TCP);
}

static void
test_second_loop_pipe(void **state)
{
	(void)state;
	second_loop(PIPE);
}

/*
 * A pipe client that connected, wrote and left before any accept
 * (ERROR_NO_DATA, Python's issue 14725) is still accepted, and what it
 * wrote is read before the end of file.
 */
static void
test_pipe_client_gone(void **state)
{
	struct cqw_op acc = { .kind = CQW_OP_ACCEPT }, *op;
	cqw_listener *l = listen_on(PIPE, NULL, 4);
	cqw_loop *loop = new_loop();
	struct raw peer;
	char buf[8];

	(void)state;
	peer = raw_connect(l);
	raw_write(&peer, "abc", 3);
	raw_close(&peer);
	acc.listener = l;
	T_OK(cqw_submit(loop, &acc));
	op = reap_one(loop, T_IO_DEADLINE_MS);
	T_EXPECT(op->result, 0);
	assert_int_equal(
	    cqw_recv_bytes_into(acc.conn, buf, sizeof(buf), 0, NULL), 3);
	assert_memory_equal(buf, "abc", 3);
	T_EXPECT(cqw_recv_bytes_into(acc.conn, buf, sizeof(buf), 0, NULL),
		 CQW_EOF);
	cqw_conn_free(acc.conn);
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

/* Over IPv6: AcceptEx into, and ConnectEx from, an AF_INET6 socket. */
static void
test_ipv6(void **state)
{
	struct cqw_op acc = { .kind = CQW_OP_ACCEPT };
	struct cqw_op con = { .kind = CQW_OP_CONNECT }, *op;
	cqw_loop *loop = new_loop();
	cqw_listener *l;
	int i, r;

	(void)state;
	r = cqw_listen(&l, "tcp:[::1]:0", &key_auth, 4);
	if (r < 0) {
		cqw_loop_free(loop);
		print_message("skip: no IPv6 loopback here (%s)\n",
			      cqw_err_name(r));
		skip();
	}
	acc.listener = l;
	con.address = cqw_listener_address(l);
	con.auth = &key_auth;
	T_OK(cqw_submit(loop, &acc));
	T_OK(cqw_submit(loop, &con));
	for (i = 0; i < 2; i++) {
		op = reap_one(loop, T_IO_DEADLINE_MS);
		assert_true(op == &acc || op == &con);
		T_EXPECT(op->result, 0);
	}
	check_pair(acc.conn, con.conn);
	check_loop_recv(loop, acc.conn, con.conn);
	cqw_conn_free(acc.conn);
	cqw_conn_free(con.conn);
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

/* A client that opens and closes connections as fast as it can. */
static int
storm_client(void *arg)
{
	const char *address = arg;
	cqw_conn *c;
	int i;

	for (i = 0; i < STORM; i++) {
		if (cqw_connect(&c, address, NULL) != 0) {
			return 1;
		}
		cqw_conn_free(c);
	}
	return 0;
}

/* 10,000 connections opened and closed, 64 accepts kept in flight. */
static void
storm(int tp)
{
	enum { SLOTS = 64 };
	static struct cqw_op acc[SLOTS];
	struct cqw_op *ops[SLOTS];
	cqw_listener *l = listen_on(tp, NULL, 256);
	cqw_loop *loop = new_loop();
	int i, n, done = 0, errors = 0, out = 0;
	t_peer peer;

	memset(acc, 0, sizeof(acc));
	for (i = 0; i < SLOTS; i++) {
		acc[i].kind = CQW_OP_ACCEPT;
		acc[i].listener = l;
		T_OK(cqw_submit(loop, &acc[i]));
		out++;
	}
	peer = t_peer_start(storm_client, (void *)cqw_listener_address(l));
	while (done + errors < STORM) {
		n = cqw_reap(loop, ops, SLOTS, T_IO_DEADLINE_MS);
		assert_true(n > 0);
		for (i = 0; i < n; i++) {
			out--;
			if (ops[i]->result == 0) {
				cqw_conn_free(ops[i]->conn);
				done++;
			} else {
				errors++;
			}
			if (done + errors + out < STORM) {
				T_OK(cqw_submit(loop, ops[i]));
				out++;
			}
		}
	}
	t_peer_join(peer);
	print_message("%d accepted, %d failed\n", done, errors);
	assert_int_equal(errors, 0);
	assert_int_equal(out, 0);
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

static void
test_storm_tcp(void **state)
{
	(void)state;
	storm(TCP);
}

static void
test_storm_pipe(void **state)
{
	(void)state;
	storm(PIPE);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accept_connect_tcp),
		cmocka_unit_test(test_accept_connect_pipe),
		cmocka_unit_test(test_no_key_tcp),
		cmocka_unit_test(test_no_key_pipe),
		cmocka_unit_test(test_early_client_tcp),
		cmocka_unit_test(test_early_client_pipe),
		cmocka_unit_test(test_wrong_key_tcp),
		cmocka_unit_test(test_wrong_key_pipe),
		cmocka_unit_test(test_silent_peers_tcp),
		cmocka_unit_test(test_silent_peers_pipe),
		cmocka_unit_test(test_slow_drip_tcp),
		cmocka_unit_test(test_cancels_tcp),
		cmocka_unit_test(test_cancels_pipe),
		cmocka_unit_test(test_connect_to_nothing),
		cmocka_unit_test(test_never_answers_tcp),
		cmocka_unit_test(test_never_answers_pipe),
		cmocka_unit_test(test_busy_pipe),
		cmocka_unit_test(test_sync_and_loop_tcp),
		cmocka_unit_test(test_sync_and_loop_pipe),
		cmocka_unit_test(test_second_loop_tcp),
		cmocka_unit_test(test_second_loop_pipe),
		cmocka_unit_test(test_pipe_client_gone),
		cmocka_unit_test(test_ipv6),
		cmocka_unit_test(test_storm_tcp),
		cmocka_unit_test(test_storm_pipe),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
