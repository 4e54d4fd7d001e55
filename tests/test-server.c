/*
 * Servers on the loop (issue 9): CQW_OP_ACCEPT and CQW_OP_CONNECT with
 * the handshake as ops, and the synchronous split (cqw_accept_raw,
 * cqw_deliver_challenge, cqw_answer_challenge, cqw_connect_timeout). Run
 * once per backend (CQW_BACKEND).
 *
 * No peer may hold up another: silent and slow peers sit beside an honest
 * client (CPython's own Client) that is served meanwhile; deadlines drop
 * them; cancels and fork() end every op exactly once; EMFILE at accept is
 * survived.
 */
#include "t-conn.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static const struct cqw_auth key_auth = { .key = "server-key", .keylen = 10 };

/* A listener on a fresh address (abstract, or a path); auth may be NULL. */
static cqw_listener *
listen_at(const struct cqw_auth *auth, int backlog, int path)
{
	static int seq;
	cqw_listener *l;
	char addr[96];

	snprintf(addr, sizeof(addr), "unix:%scqw-server-%d-%d",
		 path ? "/tmp/" : "@", (int)getpid(), seq++);
	T_OK(cqw_listen(&l, addr, auth, backlog));
	return l;
}

static cqw_listener *
listen_on(const struct cqw_auth *auth, int backlog)
{
	return listen_at(auth, backlog, 0);
}

static cqw_loop *
new_loop(void)
{
	cqw_loop *loop;

	T_OK(cqw_loop_new(&loop, NULL));
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

/*
 * A raw AF_UNIX client of l (no cqwire on its side), flags for socket():
 * connect()'s result, and the descriptor in *fd.
 */
static int
raw_connect_try(cqw_listener *l, int flags, int *fd)
{
	const char *a = cqw_listener_address(l) + strlen("unix:");
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	size_t off = a[0] == '@' ? 1 : 0, n = strlen(a) - off;

	*fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
	assert_true(*fd >= 0);
	memcpy(sun.sun_path + off, a + off, n);
	return connect(*fd, (struct sockaddr *)&sun,
		       (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
				   off + n + (off ? 0 : 1)));
}

static int
raw_connect(cqw_listener *l)
{
	int fd;

	if (raw_connect_try(l, 0, &fd) != 0) {
		fail_msg("connect: %s", strerror(errno));
	}
	return fd;
}

/* Round trip one message over a (sync) and b (sync). */
static void
check_pair(cqw_conn *a, cqw_conn *b)
{
	char buf[16];

	T_OK(cqw_send_bytes(a, "hello", 5));
	assert_int_equal(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, NULL), 5);
	assert_memory_equal(buf, "hello", 5);
	T_OK(cqw_send_bytes(b, "back", 4));
	assert_int_equal(cqw_recv_bytes_into(a, buf, sizeof(buf), 0, NULL), 4);
}

/* ------------------------------------------------------------------ */

/* Accepts and connects on one loop: both handshakes run as ops at once. */
static void
test_accept_connect_one_loop(void **state)
{
	enum { N = 8 };
	struct cqw_op acc[N], con[N], *op;
	cqw_conn *server[N] = { 0 }, *client[N] = { 0 };
	cqw_listener *l = listen_on(&key_auth, 64);
	cqw_loop *loop = new_loop();
	int i, got = 0;

	(void)state;
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
		i = (int)(op - (op->kind == CQW_OP_ACCEPT ? acc : con));
		assert_true(i >= 0 && i < N);
		if (op->kind == CQW_OP_ACCEPT) {
			server[i] = op->conn;
		} else {
			client[i] = op->conn;
		}
		got++;
	}
	/* Pairs are unknown (accept order): send on each client, find it. */
	for (i = 0; i < N; i++) {
		char buf[8];
		int j, found = 0;

		T_OK(cqw_send_bytes(client[i], &i, sizeof(i)));
		for (j = 0; j < N && !found; j++) {
			if (cqw_poll(server[j], 0) == 1) {
				assert_int_equal(
				    cqw_recv_bytes_into(server[j], buf,
							sizeof(buf), 0, NULL),
				    (int)sizeof(i));
				assert_memory_equal(buf, &i, sizeof(i));
				check_pair(server[j], client[i]);
				found = 1;
			}
		}
		assert_true(found);
	}
	for (i = 0; i < N; i++) {
		cqw_conn_free(server[i]);
		cqw_conn_free(client[i]);
	}
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

/* Without a key ACCEPT completes at once; the conn may go on the loop. */
static void
test_accept_no_auth(void **state)
{
	struct cqw_op acc = { .kind = CQW_OP_ACCEPT }, *op;
	struct cqw_op rx = { .kind = CQW_OP_RECV };
	cqw_listener *l = listen_on(NULL, 4);
	cqw_loop *loop = new_loop();
	cqw_conn *c;
	char buf[8];

	(void)state;
	acc.listener = l;
	T_OK(cqw_submit(loop, &acc));
	reap_none(loop, 20);
	T_OK(cqw_connect(&c, cqw_listener_address(l), NULL));
	op = reap_one(loop, T_IO_DEADLINE_MS);
	assert_ptr_equal(op, &acc);
	T_EXPECT(op->result, 0);
	rx.conn = acc.conn;
	rx.buf = buf;
	rx.len = sizeof(buf);
	T_OK(cqw_submit(loop, &rx));
	T_OK(cqw_send_bytes(c, "abc", 3));
	op = reap_one(loop, T_IO_DEADLINE_MS);
	assert_ptr_equal(op, &rx);
	T_EXPECT(op->result, 3);
	cqw_conn_free(acc.conn);
	cqw_conn_free(c);
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

/* A wrong key: both sides CQW_EAUTH, nothing handed up. */
static void
test_wrong_key(void **state)
{
	struct cqw_auth other = { .key = "other", .keylen = 5 };
	struct cqw_op acc = { .kind = CQW_OP_ACCEPT };
	struct cqw_op con = { .kind = CQW_OP_CONNECT }, *op;
	cqw_listener *l = listen_on(&key_auth, 4);
	cqw_loop *loop = new_loop();
	int i;

	(void)state;
	acc.listener = l;
	con.address = cqw_listener_address(l);
	con.auth = &other;
	T_OK(cqw_submit(loop, &acc));
	T_OK(cqw_submit(loop, &con));
	for (i = 0; i < 2; i++) {
		op = reap_one(loop, T_IO_DEADLINE_MS);
		if (op == &acc) {
			T_EXPECT(op->result, CQW_EAUTH);
		} else {
			/* #FAILURE# comes to the client's response. */
			T_EXPECT(op->result, CQW_EAUTH);
		}
		assert_null(op->conn);
	}
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

/* Run CPython's own Client against address with the key; its exit code. */
static pid_t
python_client(const char *address, int out_fd)
{
	static const char script[] =
	    "import sys, time\n"
	    "from multiprocessing.connection import Client\n"
	    "t = time.monotonic()\n"
	    "c = Client(sys.argv[1], authkey=b'server-key')\n"
	    "c.send_bytes(b'ping')\n"
	    "assert c.recv_bytes() == b'ping'\n"
	    "print(round((time.monotonic() - t) * 1000, 1), flush=True)\n";
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(out_fd, 1);
		execlp("python3", "python3", "-c", script, address, (char *)0);
		_exit(127);
	}
	return pid;
}

/*
 * 1,000 peers connect and never say a word; CPython's Client, arriving
 * last, is authenticated and echoed while every one of them is still
 * held; then the deadline drops them all, each once.
 */
static void
test_silent_peers_honest_client(void **state)
{
	enum { SILENT = 1000 };
	struct cqw_auth auth = key_auth;
	struct cqw_op *acc, rx = { .kind = CQW_OP_RECV };
	struct cqw_op tx = { .kind = CQW_OP_SEND }, *op;
	cqw_listener *l;
	cqw_loop *loop = new_loop();
	int *fds, pipefd[2], status, timedout = 0, i, echoed = 0;
	int64_t t0;
	cqw_conn *honest = NULL;
	char pyaddr[128], buf[64], ms[32] = "";
	ssize_t n;
	pid_t py;

	(void)state;
	auth.timeout_ms = 8000; /* long enough for python3 to start */
	l = listen_at(&auth, SILENT + 64, 1);
	acc = calloc(SILENT + 8, sizeof(*acc));
	fds = calloc(SILENT, sizeof(*fds));
	for (i = 0; i < SILENT + 8; i++) {
		acc[i].kind = CQW_OP_ACCEPT;
		acc[i].listener = l;
		T_OK(cqw_submit(loop, &acc[i]));
	}
	for (i = 0; i < SILENT; i++) {
		fds[i] = raw_connect(l);
	}
	reap_none(loop, 50); /* every silent one is in its handshake */
	t0 = t_now_ms();
	snprintf(pyaddr, sizeof(pyaddr), "%s",
		 cqw_listener_address(l) + strlen("unix:"));
	assert_int_equal(pipe(pipefd), 0);
	py = python_client(pyaddr, pipefd[1]);
	close(pipefd[1]);
	while (!echoed) {
		op = reap_one(loop, 10000);
		if (op->kind == CQW_OP_ACCEPT) {
			/* The honest one; no silent peer has been dropped. */
			T_EXPECT(op->result, 0);
			assert_null(honest);
			honest = op->conn;
			rx.conn = honest;
			rx.buf = buf;
			rx.len = sizeof(buf);
			T_OK(cqw_submit(loop, &rx));
		} else if (op == &rx) {
			assert_int_equal(op->result, 4);
			tx.conn = honest;
			tx.buf = buf;
			tx.len = 4;
			T_OK(cqw_submit(loop, &tx));
		} else {
			T_EXPECT(op->result, 0);
			echoed = 1;
		}
	}
	print_message("honest client served in %lld ms of the server's time "
		      "beside %d silent peers\n",
		      (long long)(t_now_ms() - t0), SILENT);
	n = read(pipefd[0], ms, sizeof(ms) - 1);
	assert_true(n > 0);
	ms[n] = '\0';
	ms[strcspn(ms, "\n")] = '\0';
	print_message("CPython's Client: connect + handshake + echo %s ms\n",
		      ms);
	assert_int_equal(waitpid(py, &status, 0), py);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(pipefd[0]);
	/* The deadline drops the silent ones, each exactly once. */
	while (timedout < SILENT) {
		op = reap_one(loop, 20000);
		T_EXPECT(op->result, CQW_ETIMEDOUT);
		assert_null(op->conn);
		timedout++;
	}
	for (i = 0; i < SILENT + 8; i++) {
		cqw_cancel(loop, &acc[i]);
	}
	/* The 8 spare ACCEPT ops, cancelled: once each. */
	for (i = 0; i < 7; i++) {
		op = reap_one(loop, T_IO_DEADLINE_MS);
		T_EXPECT(op->result, CQW_ECANCELED);
	}
	reap_none(loop, 20);
	for (i = 0; i < SILENT; i++) {
		close(fds[i]);
	}
	cqw_conn_free(honest);
	cqw_loop_free(loop);
	cqw_listener_free(l);
	free(fds);
	free(acc);
}

/* Slow drip: a byte every 100 ms is dropped at the deadline. */
static void
test_slow_drip(void **state)
{
	struct cqw_auth auth = key_auth;
	struct cqw_op acc = { .kind = CQW_OP_ACCEPT }, *op = NULL;
	cqw_listener *l;
	cqw_loop *loop = new_loop();
	static const uint8_t frame[] = { 0, 0, 0, 20, 'x', 'x', 'x', 'x' };
	int64_t t0;
	size_t i = 0;
	int fd, n;

	(void)state;
	auth.timeout_ms = 600;
	l = listen_on(&auth, 4);
	acc.listener = l;
	T_OK(cqw_submit(loop, &acc));
	fd = raw_connect(l);
	t0 = t_now_ms();
	for (;;) {
		n = cqw_reap(loop, &op, 1, 100);
		assert_true(n >= 0);
		if (n == 1) {
			break;
		}
		if (i < sizeof(frame)) {
			(void)!write(fd, &frame[i++], 1);
		}
		assert_true(t_now_ms() - t0 < 10000);
	}
	T_EXPECT(op->result, CQW_ETIMEDOUT);
	print_message("slow drip dropped after %lld ms, %zu bytes\n",
		      (long long)(t_now_ms() - t0), i);
	close(fd);
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

/* Cancelled accepts and connects complete exactly once. */
static void
test_cancel_once(void **state)
{
	struct cqw_op acc = { .kind = CQW_OP_ACCEPT };
	struct cqw_op con = { .kind = CQW_OP_CONNECT }, *op;
	struct cqw_op queued = { .kind = CQW_OP_ACCEPT };
	cqw_listener *l = listen_on(&key_auth, 4);
	cqw_listener *mute = listen_on(&key_auth, 4); /* never accepts */
	cqw_loop *loop = new_loop();
	int i, seen_acc = 0, seen_con = 0, seen_q = 0;

	(void)state;
	acc.listener = l;
	queued.listener = l;
	con.address = cqw_listener_address(mute);
	con.auth = &key_auth;
	T_OK(cqw_submit(loop, &acc));
	T_OK(cqw_submit(loop, &con));
	reap_none(loop, 30); /* accept waiting, connect in its handshake */
	T_OK(cqw_submit(loop, &queued));
	T_OK(cqw_cancel(loop, &queued)); /* before it ever started */
	T_OK(cqw_cancel(loop, &acc));
	T_OK(cqw_cancel(loop, &con));
	T_OK(cqw_cancel(loop, &con)); /* twice: still one completion */
	for (i = 0; i < 3; i++) {
		op = reap_one(loop, T_IO_DEADLINE_MS);
		T_EXPECT(op->result, CQW_ECANCELED);
		seen_acc += op == &acc;
		seen_con += op == &con;
		seen_q += op == &queued;
	}
	assert_int_equal(seen_acc + seen_con + seen_q, 3);
	assert_int_equal(seen_acc * seen_con * seen_q, 1);
	reap_none(loop, 30);
	T_OK(cqw_cancel(loop, &acc)); /* reaped: nothing to cancel */
	cqw_loop_free(loop);
	cqw_listener_free(l);
	cqw_listener_free(mute);
}

/* Connect to nothing, to silence, and to a server that hangs up. */
static void
test_connect_failures(void **state)
{
	struct cqw_auth quick = key_auth;
	struct cqw_op con = { .kind = CQW_OP_CONNECT }, *op;
	cqw_listener *mute, *l;
	cqw_loop *loop = new_loop();
	cqw_conn *raw;
	char buf[128];

	(void)state;
	/* Nobody there. */
	con.address = "unix:@cqw-server-nobody-here";
	T_OK(cqw_submit(loop, &con));
	op = reap_one(loop, T_IO_DEADLINE_MS);
	T_EXPECT(op->result, CQW_ECONNREFUSED);
	con.address = "tcp:127.0.0.1:1"; /* a closed port */
	T_OK(cqw_submit(loop, &con));
	op = reap_one(loop, T_IO_DEADLINE_MS);
	T_EXPECT(op->result, CQW_ECONNREFUSED);
	T_EXPECT(cqw_connect_timeout(&raw, "unix:@cqw-server-nobody-here", NULL,
				     100),
		 CQW_ECONNREFUSED);

	/* A listener that never answers: the handshake's deadline. */
	quick.timeout_ms = 200;
	mute = listen_on(&key_auth, 4);
	con.address = cqw_listener_address(mute);
	con.auth = &quick;
	T_OK(cqw_submit(loop, &con));
	op = reap_one(loop, T_IO_DEADLINE_MS);
	T_EXPECT(op->result, CQW_ETIMEDOUT);

	/* A server that sends its challenge and hangs up. */
	l = listen_on(NULL, 4);
	con.address = cqw_listener_address(l);
	con.auth = &key_auth;
	T_OK(cqw_submit(loop, &con));
	reap_none(loop, 20);
	T_OK(cqw_accept(l, &raw, T_IO_DEADLINE_MS));
	memcpy(buf, "#CHALLENGE#{sha256}", 19);
	memset(buf + 19, 'r', 40);
	T_OK(cqw_send_bytes(raw, buf, 59));
	cqw_conn_free(raw);
	op = reap_one(loop, T_IO_DEADLINE_MS);
	assert_true(op->result == CQW_EOF || op->result == CQW_ETRUNC ||
		    op->result == CQW_ECONNRESET || op->result == CQW_EPIPE);
	assert_null(op->conn);

	/* A full backlog: the connect's own timeout, then nothing open. */
	{
		cqw_listener *full = listen_on(NULL, 1);
		int fds[8], i, nfd = 0, r = 0;

		while (nfd < 8 && r == 0) {
			r = raw_connect_try(full, SOCK_NONBLOCK, &fds[nfd++]);
		}
		assert_int_equal(r, -1); /* the backlog is full now */
		assert_int_equal(errno, EAGAIN);
		T_EXPECT(cqw_connect_timeout(&raw, cqw_listener_address(full),
					     NULL, 150),
			 CQW_ETIMEDOUT);
		con.address = cqw_listener_address(full);
		con.auth = NULL;
		con.timeout_ms = 150;
		T_OK(cqw_submit(loop, &con));
		op = reap_one(loop, T_IO_DEADLINE_MS);
		T_EXPECT(op->result, CQW_ETIMEDOUT);
		for (i = 0; i < nfd; i++) {
			close(fds[i]);
		}
		cqw_listener_free(full);
	}
	cqw_loop_free(loop);
	cqw_listener_free(mute);
	cqw_listener_free(l);
}

static int
count_fds(void)
{
	int fd, n = 0;

	for (fd = 0; fd < 4096; fd++) {
		n += fcntl(fd, F_GETFD) != -1;
	}
	return n;
}

/* 10,000 connections opened and closed as fast as a client can. */
static void
test_open_close_storm(void **state)
{
	enum { TOTAL = 10000, SLOTS = 64 };
	struct cqw_op acc[SLOTS], *ops[SLOTS];
	int before = count_fds(), i, n, done = 0, errors = 0, out = 0;
	cqw_listener *l = listen_on(NULL, 256);
	cqw_loop *loop = new_loop();
	pid_t pid;

	(void)state;
	memset(acc, 0, sizeof(acc));
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		for (i = 0; i < TOTAL; i++) {
			cqw_conn *c;

			if (cqw_connect(&c, cqw_listener_address(l), NULL) !=
			    0) {
				_exit(1);
			}
			cqw_conn_free(c);
		}
		_exit(0);
	}
	for (i = 0; i < SLOTS; i++) {
		acc[i].kind = CQW_OP_ACCEPT;
		acc[i].listener = l;
		T_OK(cqw_submit(loop, &acc[i]));
		out++;
	}
	while (done + errors < TOTAL) {
		n = cqw_reap(loop, ops, SLOTS, 30000);
		assert_true(n > 0);
		for (i = 0; i < n; i++) {
			out--;
			if (ops[i]->result == 0) {
				cqw_conn_free(ops[i]->conn);
				done++;
			} else {
				errors++;
			}
			if (done + errors + out < TOTAL) {
				T_OK(cqw_submit(loop, ops[i]));
				out++;
			}
		}
	}
	t_wait_child(pid);
	assert_int_equal(out, 0);
	print_message("%d accepted, %d failed\n", done, errors);
	assert_int_equal(errors, 0);
	cqw_loop_free(loop);
	cqw_listener_free(l);
	assert_int_equal(count_fds(), before); /* nothing leaked */
}

/* fork() in mid-handshake: EFORK in the child, finished in the parent. */
static void
test_fork_mid_handshake(void **state)
{
	struct cqw_op acc = { .kind = CQW_OP_ACCEPT }, *op;
	cqw_listener *l = listen_on(&key_auth, 4);
	cqw_loop *loop = new_loop();
	int go[2], status;
	pid_t client, child;
	char buf[8];

	(void)state;
	assert_int_equal(pipe(go), 0);
	acc.listener = l;
	T_OK(cqw_submit(loop, &acc));
	client = fork();
	assert_true(client >= 0);
	if (client == 0) {
		cqw_conn *c;
		char b;

		close(go[1]);
		if (cqw_connect(&c, cqw_listener_address(l), NULL) != 0 ||
		    read(go[0], &b, 1) != 1 ||
		    cqw_answer_challenge(c, &key_auth) != 0 ||
		    cqw_deliver_challenge(c, &key_auth) != 0 ||
		    cqw_send_bytes(c, "hi", 2) != 0) {
			_exit(1);
		}
		cqw_conn_free(c);
		_exit(0);
	}
	close(go[0]);
	reap_none(loop, 100); /* accepted; the challenge went out */
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		struct cqw_op *cop;
		int n = cqw_reap(loop, &cop, 1, 1000);

		_exit(n == 1 && cop == &acc && cop->result == CQW_EFORK ? 0
									: 1);
	}
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(write(go[1], "x", 1), 1);
	op = reap_one(loop, T_IO_DEADLINE_MS);
	T_EXPECT(op->result, 0);
	assert_int_equal(
	    cqw_recv_bytes_into(op->conn, buf, sizeof(buf), 0, NULL), 2);
	t_wait_child(client);
	cqw_conn_free(op->conn);
	close(go[1]);
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

/*
 * EMFILE at accept: the server, in a child with a low descriptor limit,
 * serves the connections it holds, frees some and accepts the rest.
 */
static int
emfile_server(void *arg)
{
	enum { CLIENTS = 24 };
	cqw_listener *l = arg;
	struct cqw_op acc[4], *op;
	cqw_conn *held[CLIENTS];
	struct rlimit rl;
	cqw_loop *loop;
	int i, nheld = 0, emfile = 0, served = 0;

	if (cqw_loop_new(&loop, NULL) != 0) {
		return 1;
	}
	/* Room for exactly 6 more descriptors. */
	rl.rlim_cur = 0;
	for (i = 0, nheld = 0; nheld < 6; i++) {
		if (fcntl(i, F_GETFD) == -1) {
			nheld++;
		}
		rl.rlim_cur = (rlim_t)i + 1;
	}
	nheld = 0;
	rl.rlim_max = rl.rlim_cur;
	memset(acc, 0, sizeof(acc));
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
		return 2;
	}
	for (i = 0; i < 4; i++) {
		acc[i].kind = CQW_OP_ACCEPT;
		acc[i].listener = l;
		cqw_submit(loop, &acc[i]);
	}
	while (served < CLIENTS) {
		if (cqw_reap(loop, &op, 1, 20000) != 1) {
			return 3;
		}
		if (op->result == CQW_EMFILE) {
			emfile++;
			/* Serve and let go of what we hold, then go on. */
			while (nheld > 0) {
				char b[8];
				cqw_conn *c = held[--nheld];

				if (cqw_recv_bytes_into(c, b, sizeof(b), 0,
							NULL) != 1 ||
				    cqw_send_bytes(c, b, 1) != 0) {
					return 4;
				}
				cqw_conn_free(c);
				served++;
			}
		} else if (op->result == 0) {
			held[nheld++] = op->conn;
			if (served + nheld == CLIENTS) {
				while (nheld > 0) {
					char b[8];
					cqw_conn *c = held[--nheld];

					if (cqw_recv_bytes_into(c, b, sizeof(b),
								0, NULL) != 1 ||
					    cqw_send_bytes(c, b, 1) != 0) {
						return 5;
					}
					cqw_conn_free(c);
					served++;
				}
				break;
			}
		} else {
			return 6;
		}
		cqw_submit(loop, op);
	}
	for (i = 0; i < 4; i++) {
		cqw_cancel(loop, &acc[i]);
	}
	while (cqw_reap(loop, &op, 1, 50) > 0) {
	}
	cqw_loop_free(loop);
	return emfile > 0 ? 0 : 7;
}

static void
test_emfile_recovers(void **state)
{
	enum { CLIENTS = 24 };
	cqw_listener *l = listen_on(NULL, 64);
	cqw_conn *c[CLIENTS];
	pid_t pid;
	char b;
	int i;

	(void)state;
	pid = t_fork_child(emfile_server, l);
	for (i = 0; i < CLIENTS; i++) {
		T_OK(cqw_connect(&c[i], cqw_listener_address(l), NULL));
		T_OK(cqw_send_bytes(c[i], "e", 1));
	}
	for (i = 0; i < CLIENTS; i++) {
		assert_int_equal(cqw_recv_bytes_into(c[i], &b, 1, 0, NULL), 1);
		cqw_conn_free(c[i]);
	}
	t_wait_child(pid);
	cqw_listener_free(l);
}

/* The synchronous split: accept raw, handshake in another process. */
static void
test_sync_split(void **state)
{
	cqw_listener *l = listen_on(NULL, 4);
	struct cqw_auth bad = { .key = "nope", .keylen = 4 };
	cqw_conn *s, *c;
	pid_t pid;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		cqw_conn *cc;

		if (cqw_connect(&cc, cqw_listener_address(l), &key_auth) != 0) {
			_exit(1);
		}
		cqw_conn_free(cc);
		if (cqw_connect(&cc, cqw_listener_address(l), &key_auth) !=
		    CQW_EAUTH) {
			_exit(2);
		}
		_exit(0);
	}
	T_OK(cqw_accept_raw(l, &s, T_IO_DEADLINE_MS));
	T_OK(cqw_deliver_challenge(s, &key_auth));
	T_OK(cqw_answer_challenge(s, &key_auth));
	cqw_conn_free(s);
	T_OK(cqw_accept_raw(l, &s, T_IO_DEADLINE_MS));
	T_EXPECT(cqw_deliver_challenge(s, &bad), CQW_EAUTH);
	cqw_conn_free(s);
	t_wait_child(pid);
	T_EXPECT(cqw_deliver_challenge(NULL, &key_auth), CQW_EINVAL);
	T_EXPECT(cqw_connect(&c, "unix:@cqw-split-none-x", NULL),
		 CQW_ECONNREFUSED);
	cqw_listener_free(l);
}

/* Closing a listener with ACCEPT ops in flight cancels them. */
static void
test_listener_close_cancels(void **state)
{
	struct cqw_op acc[3], *op;
	cqw_listener *l = listen_on(&key_auth, 4);
	cqw_loop *loop = new_loop();
	int i;

	(void)state;
	memset(acc, 0, sizeof(acc));
	for (i = 0; i < 3; i++) {
		acc[i].kind = CQW_OP_ACCEPT;
		acc[i].listener = l;
		T_OK(cqw_submit(loop, &acc[i]));
	}
	reap_none(loop, 20);
	T_OK(cqw_listener_close(l));
	T_EXPECT(cqw_submit(loop, &acc[0]), CQW_EBUSY); /* still the loop's */
	for (i = 0; i < 3; i++) {
		op = reap_one(loop, T_IO_DEADLINE_MS);
		T_EXPECT(op->result, CQW_ECANCELED);
	}
	T_EXPECT(cqw_submit(loop, &acc[0]), CQW_ECLOSED);
	cqw_listener_free(l);
	cqw_loop_free(loop);
}

/*
 * fork() with accepts in flight: the child closes its copy of the
 * listener (a prefork server does), and an accept that completed in the
 * parent but was not reaped ends in the child with CQW_EFORK and no
 * connection (the child's copy of it closed).
 */
static void
test_fork_close_listener_and_unreaped(void **state)
{
	struct cqw_op acc[2], *op;
	cqw_listener *l = listen_on(NULL, 4);
	cqw_loop *loop = new_loop();
	cqw_conn *c;
	int status, i;
	pid_t child;

	(void)state;
	memset(acc, 0, sizeof(acc));
	for (i = 0; i < 2; i++) {
		acc[i].kind = CQW_OP_ACCEPT;
		acc[i].listener = l;
		T_OK(cqw_submit(loop, &acc[i]));
	}
	T_OK(cqw_connect(&c, cqw_listener_address(l), NULL));
	/*
	 * The flushes start the accepts (poll: accept4 at once; io_uring:
	 * the SQE completes as it is submitted) and take the completion in:
	 * one op is done with its connection, not reaped.
	 */
	T_OK(cqw_flush(loop));
	t_sleep_ms(20);
	T_OK(cqw_flush(loop));
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		struct cqw_op *got[2];
		int n, ok = 1;

		/* Closing first runs the fork's check: no op is left. */
		ok &= cqw_listener_close(l) == 0;
		n = cqw_reap(loop, got, 2, 1000);
		ok &= n == 2;
		for (i = 0; i < n; i++) {
			ok &=
			    got[i]->result == CQW_EFORK && got[i]->conn == NULL;
		}
		_exit(ok ? 0 : 1);
	}
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* The parent goes on: one accept has the client, one waits. */
	op = reap_one(loop, T_IO_DEADLINE_MS);
	T_EXPECT(op->result, 0);
	check_pair(c, op->conn);
	cqw_conn_free(op->conn);
	T_OK(cqw_cancel(loop, op == &acc[0] ? &acc[1] : &acc[0]));
	op = reap_one(loop, T_IO_DEADLINE_MS);
	T_EXPECT(op->result, CQW_ECANCELED);
	cqw_conn_free(c);
	cqw_loop_free(loop);
	cqw_listener_free(l);
}

/* The sync handshake refuses a connection whose ops are on a loop. */
static void
test_split_refuses_loop_conn(void **state)
{
	struct cqw_op rx = { .kind = CQW_OP_RECV };
	cqw_conn *a, *b;
	cqw_loop *loop = new_loop();
	char buf[8];

	(void)state;
	T_OK(cqw_pipe(&a, &b, CQW_DUPLEX));
	rx.conn = a;
	rx.buf = buf;
	rx.len = sizeof(buf);
	T_OK(cqw_submit(loop, &rx));
	T_EXPECT(cqw_deliver_challenge(a, &key_auth), CQW_EBUSY);
	T_EXPECT(cqw_answer_challenge(a, &key_auth), CQW_EBUSY);
	T_OK(cqw_cancel(loop, &rx));
	assert_int_equal(reap_one(loop, T_IO_DEADLINE_MS)->result,
			 CQW_ECANCELED);
	cqw_conn_free(a);
	cqw_conn_free(b);
	cqw_loop_free(loop);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accept_connect_one_loop),
		cmocka_unit_test(test_accept_no_auth),
		cmocka_unit_test(test_wrong_key),
		cmocka_unit_test(test_silent_peers_honest_client),
		cmocka_unit_test(test_slow_drip),
		cmocka_unit_test(test_cancel_once),
		cmocka_unit_test(test_connect_failures),
		cmocka_unit_test(test_open_close_storm),
		cmocka_unit_test(test_fork_mid_handshake),
		cmocka_unit_test(test_emfile_recovers),
		cmocka_unit_test(test_sync_split),
		cmocka_unit_test(test_listener_close_cancels),
		cmocka_unit_test(test_fork_close_listener_and_unreaped),
		cmocka_unit_test(test_split_refuses_loop_conn),
	};

	t_backend_or_skip();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
