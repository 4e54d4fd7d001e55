/*
 * Interop against real Python interpreters, over real sockets and pipes.
 *
 *   test-interop PEER             PEER: py311, py312, py313 or billiard
 *   test-interop worker FD [WFD]  (internal) a pool worker for peer.py
 *
 * Every test drives tests/interop/peer.py (CQW_INTEROP_DIR) with the
 * interpreter of PEER; billiard runs it with billiard.connection in place
 * of multiprocessing.connection. A missing interpreter skips the whole
 * binary (exit 77) unless CQW_REQUIRE_PEERS names the peer.
 *
 * The conversation of run_conversation() and peer.py's conversation() is
 * the heart of it: exact bytes of several sizes both ways, pickles against
 * the captures of WIRE.md §2.9, hand-written large-frame headers, and the
 * raw wire bytes of a C send. Each test runs it across a different
 * transport or handshake.
 *
 * Nothing may hang: every wait has a timeout, Python children kill
 * themselves after 30 s, and an alarm ends this process as a last resort.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2, F_DUPFD_CLOEXEC, usleep */
#endif
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cqwire.h"

#define T_IO_MS 20000	/* one message, accept or connect */
#define T_PROC_MS 30000 /* a child process from start to exit */
#define T_ALARM_S 300	/* the whole binary, as a last resort */
#define T_OUT_MAX 65536 /* stdout kept per child */
#define T_MIB (1u << 20)
#define T_KEY "secret"
#define T_KEY_HEX "736563726574"
#define T_WRONG_HEX "77726f6e6721" /* "wrong!" */
#define T_KEY_ENV "CQW_T_KEY"
#define T_POOL_WORKERS 4
#define T_POOL_TASKS 40

/* The message sizes of the byte-for-byte checks (as peer.py's SIZES). */
static const size_t t_sizes[] = { 0, 1, 16384, 16385, T_MIB };
#define T_NSIZES (sizeof(t_sizes) / sizeof(t_sizes[0]))

/* WIRE.md §2.9: the payloads of send(None), send('ok') and the dict. */
static const uint8_t pickle_none[] = { 0x80, 0x04, 0x4e, 0x2e };
static const uint8_t pickle_ok[] = { 0x80, 0x04, 0x95, 0x06, 0x00, 0x00,
				     0x00, 0x00, 0x00, 0x00, 0x00, 0x8c,
				     0x02, 0x6f, 0x6b, 0x94, 0x2e };
static const uint8_t pickle_ping[] = { 0x80, 0x04, 0x95, 0x17, 0x00, 0x00, 0x00,
				       0x00, 0x00, 0x00, 0x00, 0x7d, 0x94, 0x28,
				       0x8c, 0x02, 0x6f, 0x70, 0x94, 0x8c, 0x04,
				       0x70, 0x69, 0x6e, 0x67, 0x94, 0x8c, 0x01,
				       0x6e, 0x94, 0x4b, 0x2a, 0x75, 0x2e };

static struct {
	const char *peer;
	char python[PATH_MAX];
	const char *lib;       /* peer.py --lib: "mp" or "billiard" */
	int minor;	       /* 3.minor */
	int modern;	       /* >= 3.12: "{sha256}" handshake */
	char script[PATH_MAX]; /* peer.py */
	const char *echo;      /* cqwire-echo, or NULL */
	char self[PATH_MAX];   /* this binary, for "worker" */
	unsigned serial;       /* unique socket names */
	cqw_loop *loop;	       /* for run_loop_ops(), made on first use */
	int send_handle;       /* the peer has reduction.send_handle */
} T;

/* ----------------------------------------------------------------------
 * Small helpers
 */
#define T_EQ(got, want) \
	t_eq((int64_t)(got), (int64_t)(want), #got, __FILE__, __LINE__)

static void
t_eq(int64_t got, int64_t want, const char *expr, const char *file, int line)
{
	if (got == want) {
		return;
	}
	print_error("%s is %lld (%s), want %lld (%s)\n", expr, (long long)got,
		    got < 0 ? cqw_err_name((int)got) : "-", (long long)want,
		    want < 0 ? cqw_err_name((int)want) : "-");
	_fail(file, line);
}

static int64_t
t_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Byte i of message k is (i*31 + k*7) & 0xff, as cqwire-echo and peer.py. */
static void
t_pattern(uint8_t *buf, size_t n, unsigned k)
{
	size_t i;

	for (i = 0; i < n; i++) {
		buf[i] = (uint8_t)((i * 31 + k * 7) & 0xff);
	}
}

/*
 * Children not yet reaped. A failed assertion leaves its test at once;
 * the teardown then kills what that test started.
 */
#define T_LIVE_MAX 32
static pid_t t_live[T_LIVE_MAX];

static void
t_track(pid_t pid, int on)
{
	size_t i;

	for (i = 0; i < T_LIVE_MAX; i++) {
		if (on && t_live[i] == 0) {
			t_live[i] = pid;
			return;
		}
		if (!on && t_live[i] == pid) {
			t_live[i] = 0;
			return;
		}
	}
}

static int
t_teardown(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < T_LIVE_MAX; i++) {
		if (t_live[i] > 0) {
			kill(t_live[i], SIGKILL);
			waitpid(t_live[i], NULL, 0);
			t_live[i] = 0;
		}
	}
	return 0;
}

static void
t_unix_path(char *buf, size_t cap)
{
	snprintf(buf, cap, "unix:/tmp/cqw-interop-%d-%u.sock", (int)getpid(),
		 T.serial++);
}

static void
t_abstract_name(char *buf, size_t cap)
{
	snprintf(buf, cap, "cqw-interop-%d-%u", (int)getpid(), T.serial++);
}

/* ----------------------------------------------------------------------
 * Child processes with captured stdout
 */
struct t_proc {
	pid_t pid;
	int out; /* read end of its stdout; -1 at EOF */
	char buf[T_OUT_MAX];
	size_t len; /* bytes in buf (NUL-terminated) */
	size_t pos; /* where t_read_line() goes on */
};

/*
 * Start argv (PATH searched). stdout is captured; stderr goes to err_fd,
 * or stays ours (visible in the test log) if err_fd < 0.
 */
static void
t_spawn(struct t_proc *p, char *const argv[], int err_fd)
{
	int fds[2];

	memset(p, 0, sizeof(*p));
	if (pipe2(fds, O_CLOEXEC) != 0) {
		fail_msg("pipe2: %s", strerror(errno));
	}
	p->pid = fork();
	if (p->pid < 0) {
		fail_msg("fork: %s", strerror(errno));
	}
	if (p->pid == 0) {
		dup2(fds[1], STDOUT_FILENO);
		if (err_fd >= 0) {
			dup2(err_fd, STDERR_FILENO);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	close(fds[1]);
	p->out = fds[0];
	t_track(p->pid, 1);
}

/* Read what is there within timeout_ms: 1 data, 0 EOF, -1 timeout. */
static int
t_fill(struct t_proc *p, int timeout_ms)
{
	struct pollfd pfd = { .fd = p->out, .events = POLLIN };
	char scratch[4096];
	ssize_t n;
	int r;

	if (p->out < 0) {
		return 0;
	}
	r = poll(&pfd, 1, timeout_ms);
	if (r <= 0) {
		return -1;
	}
	if (p->len + 1 < sizeof(p->buf)) {
		n = read(p->out, p->buf + p->len, sizeof(p->buf) - 1 - p->len);
	} else {
		n = read(p->out, scratch, sizeof(scratch)); /* keep the head */
	}
	if (n < 0 && errno == EINTR) {
		return 1;
	}
	if (n <= 0) {
		close(p->out);
		p->out = -1;
		return 0;
	}
	if (p->len + 1 < sizeof(p->buf)) {
		p->len += (size_t)n;
		p->buf[p->len] = '\0';
	}
	return 1;
}

static int
t_remaining(int64_t deadline)
{
	int64_t left = deadline - t_now_ms();

	return left > 0 ? (int)left : 0;
}

/* The next line of stdout (without '\n'): 0, or -1 on EOF or timeout. */
static int
t_read_line(struct t_proc *p, char *line, size_t cap, int timeout_ms)
{
	int64_t deadline = t_now_ms() + timeout_ms;
	char *nl;
	size_t n;

	for (;;) {
		nl = memchr(p->buf + p->pos, '\n', p->len - p->pos);
		if (nl != NULL) {
			n = (size_t)(nl - (p->buf + p->pos));
			if (n >= cap) {
				n = cap - 1;
			}
			memcpy(line, p->buf + p->pos, n);
			line[n] = '\0';
			p->pos = (size_t)(nl - p->buf) + 1;
			return 0;
		}
		if (t_fill(p, t_remaining(deadline)) <= 0) {
			return -1;
		}
	}
}

/*
 * Collect the rest of stdout and the exit status: the exit code, 128 +
 * signal, or -1 if it had to be killed after timeout_ms.
 */
static int
t_finish(struct t_proc *p, int timeout_ms)
{
	int64_t deadline = t_now_ms() + timeout_ms;
	int status;
	pid_t r;

	while (p->out >= 0 && t_remaining(deadline) > 0) {
		t_fill(p, t_remaining(deadline));
	}
	for (;;) {
		r = waitpid(p->pid, &status, WNOHANG);
		if (r == p->pid) {
			break;
		}
		if (r < 0 && errno != EINTR) {
			status = -1; /* not ours, or already reaped */
			break;
		}
		if (t_remaining(deadline) == 0) {
			print_error("pid %d did not exit in %d ms: killed\n",
				    (int)p->pid, timeout_ms);
			kill(p->pid, SIGKILL);
			waitpid(p->pid, &status, 0);
			status = -1;
			break;
		}
		usleep(5000);
	}
	t_track(p->pid, 0);
	if (p->out >= 0) {
		close(p->out);
		p->out = -1;
	}
	if (status == -1) {
		return -1;
	}
	if (WIFSIGNALED(status)) {
		return 128 + WTERMSIG(status);
	}
	return WEXITSTATUS(status);
}

/* The rest of the first stdout line that starts with prefix, or NULL. */
static const char *
t_find(const struct t_proc *p, const char *prefix, char *line, size_t cap)
{
	const char *s = p->buf, *end;
	size_t n, plen = strlen(prefix);

	while (s != NULL && *s != '\0') {
		end = strchr(s, '\n');
		n = end != NULL ? (size_t)(end - s) : strlen(s);
		if (n >= plen && memcmp(s, prefix, plen) == 0) {
			n -= plen;
			if (n >= cap) {
				n = cap - 1;
			}
			memcpy(line, s + plen, n);
			line[n] = '\0';
			return line;
		}
		s = end != NULL ? end + 1 : NULL;
	}
	return NULL;
}

static void
t_assert_line(const struct t_proc *p, const char *prefix, const char *want)
{
	char line[512];

	if (t_find(p, prefix, line, sizeof(line)) == NULL) {
		fail_msg("no line \"%s...\" in the output of pid %d:\n%s",
			 prefix, (int)p->pid, p->buf);
	}
	if (want != NULL && strcmp(line, want) != 0) {
		fail_msg("\"%s%s\", want \"%s%s\"", prefix, line, prefix, want);
	}
}

#define T_ARGV_MAX 16

/* Start peer.py MODE args... (NULL-terminated) with the peer's Python. */
static void
t_py(struct t_proc *p, const char *mode, ...)
{
	char *argv[T_ARGV_MAX];
	const char *a;
	va_list ap;
	int n = 0;

	argv[n++] = T.python;
	argv[n++] = T.script;
	argv[n++] = (char *)"--lib";
	argv[n++] = (char *)T.lib;
	argv[n++] = (char *)mode;
	va_start(ap, mode);
	while ((a = va_arg(ap, const char *)) != NULL && n < T_ARGV_MAX - 1) {
		argv[n++] = (char *)a;
	}
	va_end(ap);
	argv[n] = NULL;
	t_spawn(p, argv, -1);
}

/* t_py() with "--key HEX" added when key_hex is not NULL. */
static void
t_py_keyed(struct t_proc *p, const char *mode, const char *address,
	   const char *key_hex)
{
	if (key_hex != NULL) {
		t_py(p, mode, address, "--key", key_hex, (char *)NULL);
	} else {
		t_py(p, mode, address, (char *)NULL);
	}
}

/* ----------------------------------------------------------------------
 * The C half of peer.py's conversation()
 */
static int64_t
t_recv(cqw_conn *c, void **buf)
{
	int r = cqw_poll(c, T_IO_MS);

	if (r == 0) {
		fail_msg("no message from the peer within %d ms", T_IO_MS);
	}
	if (r < 0) {
		return r;
	}
	return cqw_recv_bytes(c, buf, CQW_NONE);
}

static void
t_recv_expect(cqw_conn *c, const void *want, size_t len, const char *what)
{
	void *buf = NULL;
	int64_t n = t_recv(c, &buf);

	if (n != (int64_t)len) {
		cqw_free(buf);
		fail_msg("%s: received %lld (%s), want %zu bytes", what,
			 (long long)n, n < 0 ? cqw_err_name((int)n) : "bytes",
			 len);
	}
	if (len > 0 && (buf == NULL || memcmp(buf, want, len) != 0)) {
		cqw_free(buf);
		fail_msg("%s: the %zu bytes differ", what, len);
	}
	cqw_free(buf);
}

/* A gather write of three messages; then three received in batches. */
static void
run_batches(cqw_conn *c)
{
	static const char *const want[] = { "x", "", "yz" };
	char bufs[3][16];
	struct cqw_msg out[3] = {
		{ .buf = (void *)"", .len = 0 },
		{ .buf = (void *)"batch", .len = 5 },
		{ .len = 20000 },
	};
	struct cqw_msg in[3];
	int i, got = 0, r;

	out[2].buf = malloc(out[2].len);
	assert_non_null(out[2].buf);
	t_pattern(out[2].buf, out[2].len, 7);
	T_EQ(cqw_send_batch(c, out, 3), 0);
	free(out[2].buf);
	for (i = 0; i < 3; i++) {
		in[i].buf = bufs[i];
		in[i].cap = sizeof(bufs[i]);
		in[i].len = 0;
	}
	/* A batch takes what has arrived: maybe not all three at once. */
	while (got < 3) {
		r = cqw_recv_batch(c, in + got, (size_t)(3 - got), T_IO_MS);
		if (r <= 0) {
			fail_msg("cqw_recv_batch: %s",
				 r == 0 ? "timeout" : cqw_err_name(r));
		}
		got += r;
	}
	for (i = 0; i < 3; i++) {
		T_EQ(in[i].len, strlen(want[i]));
		assert_memory_equal(in[i].buf, want[i], in[i].len);
	}
}

/*
 * The asynchronous API on the same connection: a SEND and a RECV op in
 * flight together. One loop serves the whole run (test-loop.c checks
 * that connections may outlive their loop).
 */
static cqw_loop *
t_loop(void)
{
	static int unavailable;
	int r;

	if (T.loop == NULL && !unavailable) {
		r = cqw_loop_new(&T.loop, NULL);
		if (r == CQW_ENOSYS) {
			/* CQW_BACKEND names a backend not built in. */
			print_message("[ NOTE ] no loop (CQW_BACKEND=%s): "
				      "loop ops not exercised\n",
				      getenv("CQW_BACKEND"));
			unavailable = 1;
		} else {
			T_EQ(r, 0);
			print_message("[ NOTE ] loop backend: %s\n",
				      cqw_loop_backend(T.loop));
		}
	}
	return T.loop;
}

static void
run_loop_ops(cqw_conn *c)
{
	char rbuf[32];
	struct cqw_op send = { .kind = CQW_OP_SEND,
			       .conn = c,
			       .buf = (void *)"loop-send",
			       .len = 9 };
	struct cqw_op recv = {
		.kind = CQW_OP_RECV, .conn = c, .buf = rbuf, .len = sizeof(rbuf)
	};
	struct cqw_op *done[2];
	cqw_loop *loop = t_loop();
	int n, got = 0;

	if (loop == NULL) {
		/* peer.py still waits for the exchange: do it synchronously. */
		T_EQ(cqw_send_bytes(c, "loop-send", 9), 0);
		t_recv_expect(c, "loop-reply", 10, "loop-reply");
		return;
	}
	T_EQ(cqw_submit(loop, &send), 0);
	T_EQ(cqw_submit(loop, &recv), 0);
	while (got < 2) {
		n = cqw_reap(loop, done + got, 2 - got, T_IO_MS);
		if (n <= 0) {
			fail_msg("cqw_reap (%s backend): %s",
				 cqw_loop_backend(loop),
				 n == 0 ? "timeout" : cqw_err_name(n));
		}
		got += n;
	}
	T_EQ(send.result, 0);
	T_EQ(recv.result, 10);
	assert_memory_equal(rbuf, "loop-reply", 10);
}

static void
run_conversation(cqw_conn *c)
{
	static const char hello[] = "hello";
	uint8_t *pat = malloc(T_MIB);
	void *buf = NULL;
	unsigned k;

	assert_non_null(pat);
	/* 1. Python's send_bytes() of every size, byte for byte. */
	for (k = 0; k < T_NSIZES; k++) {
		t_pattern(pat, t_sizes[k], k);
		t_recv_expect(c, pat, t_sizes[k], "python send_bytes");
	}
	/* 2. Ours; peer.py compares what its recv_bytes() returns. */
	for (k = 0; k < T_NSIZES; k++) {
		t_pattern(pat, t_sizes[k], k + 100);
		T_EQ(cqw_send_bytes(c, pat, t_sizes[k]), 0);
	}
	free(pat);
	/* 3. send(obj) arrives as the exact pickle bytes. */
	t_recv_expect(c, pickle_none, sizeof(pickle_none), "send(None)");
	t_recv_expect(c, pickle_ok, sizeof(pickle_ok), "send('ok')");
	t_recv_expect(c, pickle_ping, sizeof(pickle_ping), "send(dict)");
	/* 4. Python's recv() turns ours into the dict. */
	T_EQ(cqw_send_bytes(c, pickle_ping, sizeof(pickle_ping)), 0);
	/*
	 * 5. The large-frame header (ff ff ff ff + 8-byte length) that
	 * CPython >= 3.8 sends above 2 GiB, here written by hand around
	 * small payloads. Real > 2 GiB frames are not exercised: they need
	 * gigabytes of memory on both sides and many seconds per run.
	 */
	t_recv_expect(c, "large", 5, "large-frame header, 5 bytes");
	t_recv_expect(c, "", 0, "large-frame header, 0 bytes");
	/* Python reads ff ff ff fe as an empty message; the stream goes on. */
	t_recv_expect(c, "", 0, "negative length");
	/* 6. peer.py reads our frame raw: 00 00 00 05 68 65 6c 6c 6f. */
	T_EQ(cqw_send_bytes(c, hello, 5), 0);
	/* 7-9. Batches and the loop API, on the same stream. */
	run_batches(c);
	run_loop_ops(c);
	/* 10. The last message, then EOF at a frame boundary. */
	t_recv_expect(c, "bye", 3, "bye");
	T_EQ(t_recv(c, &buf), CQW_EOF);
}

/* ----------------------------------------------------------------------
 * Handshakes: what each side does, and what peer.py saw
 */

/*
 * The lengths of the six handshake frames as peer.py logs them ("s" sent,
 * "r" received), WIRE.md §4.3-4.5: a challenge frame is 31 bytes (legacy,
 * 20 random) or 59 ("{sha256}" + 40); a response 16 (raw HMAC-MD5, the
 * answer to any 20-byte challenge and everything a legacy peer sends) or
 * 40 ("{sha256}" + HMAC-SHA256); #WELCOME# 9.
 */
static void
t_authlog(char *out, size_t cap, int py_server, int c_legacy)
{
	int c_chal = c_legacy ? 31 : 59;
	int py_chal = T.modern ? 59 : 31;
	int py_resp = T.modern && !c_legacy ? 40 : 16;
	int c_resp = py_chal == 59 ? 40 : 16;

	if (py_server) {
		snprintf(out, cap, "s%d r%d s9 r%d s%d r9", py_chal, c_resp,
			 c_chal, py_resp);
	} else {
		snprintf(out, cap, "r%d s%d r9 s%d r%d s9", c_chal, py_resp,
			 py_chal, c_resp);
	}
}

/*
 * A C Listener on address (in this process) and a Python Client. want_c:
 * 0 (then the conversation runs) or the error cqw_accept() must return;
 * want_py: peer.py's exit code; authlog: peer.py's "AUTH" line or NULL.
 */
static void
t_c_listener(const char *address, const struct cqw_auth *auth,
	     const char *py_key, int want_c, int want_py, const char *authlog)
{
	struct t_proc p;
	cqw_listener *l;
	cqw_conn *c = NULL;
	int r;

	T_EQ(cqw_listen(&l, address, auth, 1), 0);
	t_py_keyed(&p, "client", cqw_listener_address(l), py_key);
	r = cqw_accept(l, &c, T_IO_MS);
	T_EQ(r, want_c);
	if (r == 0) {
		run_conversation(c);
		cqw_conn_free(c);
	}
	T_EQ(t_finish(&p, T_PROC_MS), want_py);
	if (want_py == 0) {
		t_assert_line(&p, "DONE", "");
	}
	if (want_py == 3) {
		t_assert_line(&p, "AUTHFAIL ", NULL);
	}
	if (authlog != NULL) {
		t_assert_line(&p, "AUTH ", authlog);
	}
	cqw_listener_free(l);
}

/* A Python Listener on address and a C Client (cqw_connect here). */
static void
t_py_listener(const char *address, const struct cqw_auth *auth,
	      const char *py_key, int want_c, int want_py, const char *authlog,
	      const char *want_addr)
{
	char line[512];
	struct t_proc p;
	cqw_conn *c = NULL;
	int r;

	t_py_keyed(&p, "listen", address, py_key);
	if (t_read_line(&p, line, sizeof(line), T_IO_MS) != 0 ||
	    strncmp(line, "ADDR ", 5) != 0) {
		t_finish(&p, 1000);
		fail_msg("peer.py listen: no address line");
	}
	if (want_addr != NULL) {
		assert_string_equal(line + 5, want_addr);
	}
	r = cqw_connect(&c, line + 5, auth);
	T_EQ(r, want_c);
	if (r == 0) {
		run_conversation(c);
		cqw_conn_free(c);
	}
	T_EQ(t_finish(&p, T_PROC_MS), want_py);
	if (want_py == 0) {
		t_assert_line(&p, "DONE", "");
	}
	if (want_py == 3) {
		t_assert_line(&p, "AUTHFAIL ", NULL);
	}
	if (authlog != NULL) {
		t_assert_line(&p, "AUTH ", authlog);
	}
}

static struct cqw_auth
t_auth(const char *key, unsigned flags)
{
	struct cqw_auth a = {
		.key = key,
		.keylen = key != NULL ? strlen(key) : 0,
		.flags = flags,
		.timeout_ms = T_IO_MS,
	};

	return a;
}

/* ----------------------------------------------------------------------
 * C Listener <-> Python Client
 */
static void
test_interop_c_listener_tcp(void **state)
{
	(void)state;
	t_c_listener("tcp:127.0.0.1:0", NULL, NULL, 0, 0, "");
}

static void
test_interop_c_listener_unix(void **state)
{
	char addr[128];

	(void)state;
	t_unix_path(addr, sizeof(addr));
	t_c_listener(addr, NULL, NULL, 0, 0, "");
}

static void
test_interop_c_listener_auth_modern(void **state)
{
	struct cqw_auth a = t_auth(T_KEY, 0);
	char log[64];

	(void)state;
	t_authlog(log, sizeof(log), 0, 0);
	t_c_listener("tcp:127.0.0.1:0", &a, T_KEY_HEX, 0, 0, log);
}

static void
test_interop_c_listener_auth_legacy(void **state)
{
	struct cqw_auth a = t_auth(T_KEY, CQW_AUTH_LEGACY_CHALLENGE);
	char log[64], addr[128];

	(void)state;
	t_authlog(log, sizeof(log), 0, 1);
	t_c_listener("tcp:127.0.0.1:0", &a, T_KEY_HEX, 0, 0, log);
	t_unix_path(addr, sizeof(addr));
	t_c_listener(addr, &a, T_KEY_HEX, 0, 0, log);
}

static void
test_interop_c_listener_wrong_key(void **state)
{
	struct cqw_auth modern = t_auth(T_KEY, 0);
	struct cqw_auth legacy = t_auth(T_KEY, CQW_AUTH_LEGACY_CHALLENGE);

	(void)state;
	/* We say #FAILURE#; Python raises AuthenticationError. */
	t_c_listener("tcp:127.0.0.1:0", &modern, T_WRONG_HEX, CQW_EAUTH, 3,
		     NULL);
	t_c_listener("tcp:127.0.0.1:0", &legacy, T_WRONG_HEX, CQW_EAUTH, 3,
		     NULL);
}

/* ----------------------------------------------------------------------
 * Python Listener <-> C Client
 */
static void
test_interop_py_listener_tcp(void **state)
{
	(void)state;
	t_py_listener("tcp:127.0.0.1:0", NULL, NULL, 0, 0, "", NULL);
}

static void
test_interop_py_listener_unix(void **state)
{
	char addr[128];

	(void)state;
	t_unix_path(addr, sizeof(addr));
	t_py_listener(addr, NULL, NULL, 0, 0, "", addr);
}

static void
test_interop_py_listener_auth_modern(void **state)
{
	struct cqw_auth a = t_auth(T_KEY, 0);
	char log[64];

	(void)state;
	t_authlog(log, sizeof(log), 1, 0);
	t_py_listener("tcp:127.0.0.1:0", &a, T_KEY_HEX, 0, 0, log, NULL);
}

static void
test_interop_py_listener_auth_legacy(void **state)
{
	struct cqw_auth a = t_auth(T_KEY, CQW_AUTH_LEGACY_CHALLENGE);
	char log[64];

	(void)state;
	t_authlog(log, sizeof(log), 1, 1);
	t_py_listener("tcp:127.0.0.1:0", &a, T_KEY_HEX, 0, 0, log, NULL);
}

static void
test_interop_py_listener_wrong_key(void **state)
{
	struct cqw_auth modern = t_auth(T_KEY, 0);
	struct cqw_auth legacy = t_auth(T_KEY, CQW_AUTH_LEGACY_CHALLENGE);

	(void)state;
	/* Python says #FAILURE# to our answer and raises. */
	t_py_listener("tcp:127.0.0.1:0", &modern, T_WRONG_HEX, CQW_EAUTH, 3,
		      NULL, NULL);
	t_py_listener("tcp:127.0.0.1:0", &legacy, T_WRONG_HEX, CQW_EAUTH, 3,
		      NULL, NULL);
}

/*
 * CQW_AUTH_REFUSE_MD5 works with modern peers only: a legacy peer
 * challenges with 20 bytes (MD5 only) and answers with raw MD5.
 */
static void
test_interop_refuse_md5(void **state)
{
	struct cqw_auth a = t_auth(T_KEY, CQW_AUTH_REFUSE_MD5);
	char log[64];

	(void)state;
	if (T.modern) {
		t_authlog(log, sizeof(log), 0, 0);
		t_c_listener("tcp:127.0.0.1:0", &a, T_KEY_HEX, 0, 0, log);
		t_authlog(log, sizeof(log), 1, 0);
		t_py_listener("tcp:127.0.0.1:0", &a, T_KEY_HEX, 0, 0, log,
			      NULL);
		return;
	}
	/* Its raw MD5 answer gets #FAILURE#. */
	t_c_listener("tcp:127.0.0.1:0", &a, T_KEY_HEX, CQW_EAUTH, 3, NULL);
	/* We do not answer its 20-byte challenge; it sees EOF (exit 5). */
	t_py_listener("tcp:127.0.0.1:0", &a, T_KEY_HEX, CQW_EAUTH, 5, NULL,
		      NULL);
}

/*
 * authkey=b'' authenticates on 3.13+ only; older Pythons hang by design
 * (the server skips the handshake, the client waits for a challenge).
 */
static void
test_interop_empty_key(void **state)
{
	struct cqw_auth a = t_auth("", 0);
	struct t_proc p, srv;
	char line[512], log[64];

	(void)state;
	if (T.minor < 13 || strcmp(T.lib, "billiard") == 0) {
		print_message("[ SKIP ] %s: authkey=b'' hangs by design on "
			      "CPython <= 3.12 and billiard (WIRE.md §4.7)\n",
			      T.peer);
		skip();
	}
	t_authlog(log, sizeof(log), 0, 0);
	t_c_listener("tcp:127.0.0.1:0", &a, "", 0, 0, log);
	t_authlog(log, sizeof(log), 1, 0);
	t_py_listener("tcp:127.0.0.1:0", &a, "", 0, 0, log, NULL);
	if (T.echo == NULL) {
		return;
	}
	/* cqwire-echo: a set-but-empty variable is the empty key. */
	setenv(T_KEY_ENV, "", 1);
	{
		char *argv[] = { (char *)T.echo,
				 (char *)"serve",
				 (char *)"tcp:127.0.0.1:0",
				 (char *)"--once",
				 (char *)"--authkey-env",
				 (char *)T_KEY_ENV,
				 NULL };

		t_spawn(&srv, argv, -1);
	}
	assert_int_equal(t_read_line(&srv, line, sizeof(line), T_IO_MS), 0);
	t_py(&p, "echo-client", line, "--key", "", (char *)NULL);
	T_EQ(t_finish(&p, T_PROC_MS), 0);
	t_assert_line(&p, "ECHO OK", NULL);
	T_EQ(t_finish(&srv, T_PROC_MS), 0);
}

/* ----------------------------------------------------------------------
 * Abstract unix sockets (WIRE.md §3.2)
 */
static void
test_interop_abstract(void **state)
{
	char name[96], addr[128];
	struct cqw_auth a = t_auth(T_KEY, 0);
	struct t_proc p;

	(void)state;
	t_abstract_name(name, sizeof(name));
	snprintf(addr, sizeof(addr), "unix:@%s", name);
	if (strcmp(T.lib, "billiard") == 0) {
		/*
		 * billiard rejects abstract addresses: the bytes address its
		 * Listener reports is "unrecognized", and close() fails to
		 * unlink it.
		 */
		t_py(&p, "abstract-reject", name, (char *)NULL);
		T_EQ(t_finish(&p, T_PROC_MS), 0);
		t_assert_line(&p, "CLIENT ", "REJECTED");
		t_assert_line(&p, "CLOSE ", "REJECTED");
		return;
	}
	t_c_listener(addr, NULL, NULL, 0, 0, "");
	t_c_listener(addr, &a, T_KEY_HEX, 0, 0, NULL);
	/* Python's Listener reports b'\0name': it must come back as ours. */
	t_abstract_name(name, sizeof(name));
	snprintf(addr, sizeof(addr), "unix:@%s", name);
	t_py_listener(addr, NULL, NULL, 0, 0, "", addr);
}

/* ----------------------------------------------------------------------
 * Handle passing (WIRE.md §8.1), both ways, between framed messages
 */
static void
run_handles(cqw_conn *c)
{
	char data[64];
	int fd = -1, big, pfd[2];
	ssize_t n, got = 0;

	/* Python -> C: a pipe's read end (fd 300 there) with a message. */
	t_recv_expect(c, "fd-next", 7, "before the handle");
	T_EQ(cqw_recv_handle(c, &fd), 0);
	assert_true(fd >= 0);
	while ((n = read(fd, data + got, sizeof(data) - 1 - (size_t)got)) > 0) {
		got += n;
	}
	close(fd);
	data[got] = '\0';
	assert_string_equal(data, "from python");
	/* C -> Python, from a descriptor >= 256 as test_large_fd_transfer. */
	assert_int_equal(pipe(pfd), 0);
	assert_int_equal(write(pfd[1], "from c", 6), 6);
	close(pfd[1]);
	big = fcntl(pfd[0], F_DUPFD_CLOEXEC, 300);
	assert_true(big >= 300);
	close(pfd[0]);
	T_EQ(cqw_send_bytes(c, "fd-next", 7), 0);
	T_EQ(cqw_send_handle(c, big), 0);
	close(big);
	t_recv_expect(c, "done", 4, "after the handles");
}

static void
test_interop_handles(void **state)
{
	char addr[128], line[512];
	struct t_proc p;
	cqw_listener *l;
	cqw_conn *c;

	(void)state;
	/* billiard 4.1 has it too; an older one might not. */
	if (!T.send_handle) {
		print_message("[ SKIP ] %s: reduction has no send_handle\n",
			      T.peer);
		skip();
	}
	t_unix_path(addr, sizeof(addr));
	T_EQ(cqw_listen(&l, addr, NULL, 1), 0);
	t_py(&p, "handles-client", cqw_listener_address(l), (char *)NULL);
	T_EQ(cqw_accept(l, &c, T_IO_MS), 0);
	run_handles(c);
	cqw_conn_free(c);
	T_EQ(t_finish(&p, T_PROC_MS), 0);
	t_assert_line(&p, "HANDLES OK", "");
	cqw_listener_free(l);

	t_unix_path(addr, sizeof(addr));
	t_py(&p, "handles-listen", addr, (char *)NULL);
	assert_int_equal(t_read_line(&p, line, sizeof(line), T_IO_MS), 0);
	assert_memory_equal(line, "ADDR ", 5);
	T_EQ(cqw_connect(&c, line + 5, NULL), 0);
	run_handles(c);
	cqw_conn_free(c);
	T_EQ(t_finish(&p, T_PROC_MS), 0);
	t_assert_line(&p, "HANDLES OK", "");
}

/* ----------------------------------------------------------------------
 * Worker pools across fork/exec
 */
static int
t_waitpid(pid_t pid, int timeout_ms)
{
	struct t_proc p;

	memset(&p, 0, sizeof(p));
	p.pid = pid;
	p.out = -1;
	return t_finish(&p, timeout_ms);
}

/* The reply of a pool worker: "PID:" + the task reversed. */
static size_t
t_pool_reply(uint8_t *out, pid_t pid, const uint8_t *task, size_t len)
{
	int n = sprintf((char *)out, "%d:", (int)pid);
	size_t i;

	for (i = 0; i < len; i++) {
		out[(size_t)n + i] = task[len - 1 - i];
	}
	return (size_t)n + len;
}

static size_t
t_task_size(unsigned k)
{
	return k == 0 ? T_MIB : 100 + (size_t)k * 997;
}

/*
 * A C parent with cqw_pipe(CQW_DUPLEX) pairs forks and execs Python
 * workers; each wraps its inherited descriptor in Connection(fd). One task
 * is in flight per worker, as in billiard's pool.
 */
static void
test_interop_c_pool(void **state)
{
	cqw_conn *parent[T_POOL_WORKERS], *child[T_POOL_WORKERS];
	struct cqw_wait_item items[T_POOL_WORKERS];
	unsigned busy[T_POOL_WORKERS];
	pid_t pids[T_POOL_WORKERS];
	char fdarg[T_POOL_WORKERS][16], want[64];
	char *argv[T_POOL_WORKERS][8];
	unsigned flags = CQW_DUPLEX, sent = 0, done = 0;
	uint8_t *task, *reply;
	size_t tlen, rlen;
	void *buf;
	int64_t n;
	int i, fd;

	(void)state;
	/* billiard cannot read large frames: the flag keeps us from them. */
	if (strcmp(T.lib, "billiard") == 0) {
		flags |= CQW_NO_LARGE_FRAMES;
	}
	task = malloc(T_MIB);
	reply = malloc(T_MIB + 32);
	assert_true(task != NULL && reply != NULL);
	for (i = 0; i < T_POOL_WORKERS; i++) {
		T_EQ(cqw_pipe(&parent[i], &child[i], flags), 0);
	}
	for (i = 0; i < T_POOL_WORKERS; i++) {
		fd = cqw_conn_fileno(child[i]);
		snprintf(fdarg[i], sizeof(fdarg[i]), "%d", fd);
		argv[i][0] = T.python;
		argv[i][1] = T.script;
		argv[i][2] = (char *)"--lib";
		argv[i][3] = (char *)T.lib;
		argv[i][4] = (char *)"worker";
		argv[i][5] = fdarg[i];
		argv[i][6] = NULL;
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			/* Only this end survives exec. */
			int fl = fcntl(fd, F_GETFD);

			if (fl < 0 || fcntl(fd, F_SETFD, fl & ~FD_CLOEXEC)) {
				_exit(126);
			}
			execv(argv[i][0], argv[i]);
			_exit(127);
		}
		t_track(pids[i], 1);
		cqw_conn_free(child[i]);
		busy[i] = UINT_MAX;
	}
	/* Each worker first announces itself with a large-frame header. */
	for (i = 0; i < T_POOL_WORKERS; i++) {
		snprintf(want, sizeof(want), "ready %d", (int)pids[i]);
		t_recv_expect(parent[i], want, strlen(want), "ready");
	}
	while (done < T_POOL_TASKS) {
		for (i = 0; i < T_POOL_WORKERS; i++) {
			if (busy[i] != UINT_MAX || sent == T_POOL_TASKS) {
				continue;
			}
			t_pattern(task, t_task_size(sent), sent);
			T_EQ(cqw_send_bytes(parent[i], task, t_task_size(sent)),
			     0);
			busy[i] = sent++;
		}
		for (i = 0; i < T_POOL_WORKERS; i++) {
			items[i].conn = parent[i];
			items[i].fd = -1;
		}
		n = cqw_wait(items, T_POOL_WORKERS, T_IO_MS);
		if (n <= 0) {
			fail_msg("cqw_wait: %s",
				 n == 0 ? "timeout" : cqw_err_name((int)n));
		}
		for (i = 0; i < T_POOL_WORKERS; i++) {
			if (!items[i].ready) {
				continue;
			}
			assert_true(busy[i] != UINT_MAX);
			n = cqw_recv_bytes(parent[i], &buf, CQW_NONE);
			assert_true(n >= 0);
			tlen = t_task_size(busy[i]);
			t_pattern(task, tlen, busy[i]);
			rlen = t_pool_reply(reply, pids[i], task, tlen);
			T_EQ(n, rlen);
			assert_memory_equal(buf, reply, rlen);
			cqw_free(buf);
			busy[i] = UINT_MAX;
			done++;
		}
	}
	/* EOF ends the workers. */
	for (i = 0; i < T_POOL_WORKERS; i++) {
		cqw_conn_free(parent[i]);
	}
	for (i = 0; i < T_POOL_WORKERS; i++) {
		T_EQ(t_waitpid(pids[i], T_PROC_MS), 0);
	}
	free(task);
	free(reply);
}

/*
 * The other way round: a Python parent with Pipe() pairs (duplex, and
 * Pipe(duplex=False) twice) runs this binary as "worker FD [WFD]".
 */
static void
test_interop_py_pool(void **state)
{
	char nw[16], nt[16], want[64];
	struct t_proc p;

	(void)state;
	snprintf(nw, sizeof(nw), "%d", T_POOL_WORKERS);
	snprintf(nt, sizeof(nt), "%d", T_POOL_TASKS);
	t_py(&p, "pool", T.self, nw, nt, (char *)NULL);
	T_EQ(t_finish(&p, T_PROC_MS), 0);
	snprintf(want, sizeof(want), "%d %d", T_POOL_WORKERS, T_POOL_TASKS);
	t_assert_line(&p, "POOL OK ", want);
}

/* "test-interop worker FD [WFD]": serve peer.py's pool until EOF. */
static int
worker_main(int argc, char **argv)
{
	cqw_conn *rc, *wc;
	char hello[32];
	uint8_t *reply;
	void *buf;
	int64_t n;
	int r, rfd, wfd = -1;

	alarm(60);
	rfd = atoi(argv[2]);
	if (argc > 3) {
		wfd = atoi(argv[3]);
	}
	r = cqw_conn_from_fd(&rc, rfd, wfd < 0 ? CQW_DUPLEX : CQW_READABLE);
	if (r < 0) {
		fprintf(stderr, "worker: fd %d: %s\n", rfd, cqw_strerror(r));
		return 1;
	}
	wc = rc;
	if (wfd >= 0) {
		r = cqw_conn_from_fd(&wc, wfd, CQW_WRITABLE);
		if (r < 0) {
			fprintf(stderr, "worker: fd %d: %s\n", wfd,
				cqw_strerror(r));
			return 1;
		}
	}
	snprintf(hello, sizeof(hello), "ready %d", (int)getpid());
	r = cqw_send_bytes(wc, hello, strlen(hello));
	for (;;) {
		if (r < 0) {
			fprintf(stderr, "worker: %s\n", cqw_strerror(r));
			return 1;
		}
		n = cqw_recv_bytes(rc, &buf, CQW_NONE);
		if (n == CQW_EOF) {
			break;
		}
		if (n < 0) {
			r = (int)n;
			continue;
		}
		reply = malloc((size_t)n + 32);
		if (reply == NULL) {
			return 1;
		}
		r = cqw_send_bytes(
		    wc, reply, t_pool_reply(reply, getpid(), buf, (size_t)n));
		free(reply);
		cqw_free(buf);
	}
	if (wc != rc) {
		cqw_conn_free(wc);
	}
	cqw_conn_free(rc);
	return 0;
}

/* ----------------------------------------------------------------------
 * cqwire-echo against Python
 */
static void
t_need_echo(void)
{
	if (T.echo == NULL) {
		print_message("[ SKIP ] CQW_ECHO is not set\n");
		skip();
	}
}

/* Start "cqwire-echo serve ADDRESS extra..." and read its address. */
static void
t_echo_serve(struct t_proc *srv, char *addr, size_t cap, int err_fd,
	     const char *address, const char *const extra[])
{
	char *argv[T_ARGV_MAX];
	int n = 0;

	argv[n++] = (char *)T.echo;
	argv[n++] = (char *)"serve";
	argv[n++] = (char *)address;
	while (extra != NULL && *extra != NULL && n < T_ARGV_MAX - 1) {
		argv[n++] = (char *)*extra++;
	}
	argv[n] = NULL;
	t_spawn(srv, argv, err_fd);
	if (t_read_line(srv, addr, cap, T_IO_MS) != 0) {
		fail_msg("cqwire-echo serve printed no address");
	}
}

static int
t_count_lines(int fd, const char *needle, char *text, size_t cap)
{
	ssize_t n = pread(fd, text, cap - 1, 0);
	const char *s = text;
	int count = 0;

	text[n > 0 ? n : 0] = '\0';
	while ((s = strstr(s, needle)) != NULL) {
		count++;
		s += strlen(needle);
	}
	return count;
}

static void
test_interop_echo_serve(void **state)
{
	static const char *const extra[] = { "--authkey-env", T_KEY_ENV,
					     "--max-size", "2000000", NULL };
	char addr[256], errpath[] = "/tmp/cqw-interop-err-XXXXXX";
	char text[4096];
	struct t_proc srv, a, b, bad, big;
	int errfd, lines, nl = 0;
	const char *s;

	(void)state;
	t_need_echo();
	errfd = mkstemp(errpath);
	assert_true(errfd >= 0);
	unlink(errpath);
	setenv(T_KEY_ENV, T_KEY, 1);
	t_echo_serve(&srv, addr, sizeof(addr), errfd, "tcp:127.0.0.1:0", extra);
	/* Two good clients at once, then a wrong key, then a big message. */
	t_py(&a, "echo-client", addr, "--key", T_KEY_HEX, (char *)NULL);
	t_py(&b, "echo-client", addr, "--key", T_KEY_HEX, (char *)NULL);
	t_py(&bad, "echo-client", addr, "--key", T_WRONG_HEX, (char *)NULL);
	T_EQ(t_finish(&a, T_PROC_MS), 0);
	t_assert_line(&a, "ECHO OK ", NULL);
	T_EQ(t_finish(&b, T_PROC_MS), 0);
	t_assert_line(&b, "ECHO OK ", NULL);
	T_EQ(t_finish(&bad, T_PROC_MS), 3);
	t_assert_line(&bad, "AUTHFAIL ", NULL);
	t_py(&big, "echo-client", addr, "--key", T_KEY_HEX, "--oversize",
	     "2000001", (char *)NULL);
	T_EQ(t_finish(&big, T_PROC_MS), 0);
	t_assert_line(&big, "DROPPED ", NULL);
	/* The server is still up, and serves. */
	t_py(&a, "echo-client", addr, "--key", T_KEY_HEX, (char *)NULL);
	T_EQ(t_finish(&a, T_PROC_MS), 0);
	t_assert_line(&a, "ECHO OK ", NULL);
	kill(srv.pid, SIGTERM);
	T_EQ(t_finish(&srv, T_PROC_MS), 128 + SIGTERM);
	/* One line per bad peer, and nothing else. */
	lines = t_count_lines(errfd, "cqwire-echo: dropped peer: ", text,
			      sizeof(text));
	for (s = text; *s != '\0'; s++) {
		nl += *s == '\n';
	}
	if (lines != 2 || nl != 2) {
		fail_msg("cqwire-echo stderr, want two drop lines:\n%s", text);
	}
	assert_non_null(strstr(text, "authentication failed"));
	close(errfd);
}

static void
test_interop_echo_once(void **state)
{
	static const char *const extra[] = { "--once", NULL };
	char addr[256], path[128];
	struct t_proc srv, p;

	(void)state;
	t_need_echo();
	t_unix_path(path, sizeof(path));
	t_echo_serve(&srv, addr, sizeof(addr), -1, path, extra);
	assert_string_equal(addr, path);
	t_py(&p, "echo-client", addr, (char *)NULL);
	T_EQ(t_finish(&p, T_PROC_MS), 0);
	t_assert_line(&p, "ECHO OK ", NULL);
	T_EQ(t_finish(&srv, T_PROC_MS), 0);
	/* It closed its listener on the way out: the path is gone. */
	assert_true(access(path + strlen("unix:"), F_OK) != 0);
}

static void
test_interop_echo_call(void **state)
{
	char line[512], errpath[] = "/tmp/cqw-interop-err-XXXXXX";
	char text[4096];
	struct t_proc p, call;
	int errfd;

	(void)state;
	t_need_echo();
	setenv(T_KEY_ENV, T_KEY, 1);
	t_py(&p, "echo-listen", "tcp:127.0.0.1:0", "--key", T_KEY_HEX,
	     (char *)NULL);
	assert_int_equal(t_read_line(&p, line, sizeof(line), T_IO_MS), 0);
	assert_memory_equal(line, "ADDR ", 5);
	{
		char *argv[] = { (char *)T.echo,    (char *)"call",
				 line + 5,	    (char *)"--authkey-env",
				 (char *)T_KEY_ENV, (char *)"--count",
				 (char *)"200",	    (char *)"--size",
				 (char *)"3000",    NULL };

		t_spawn(&call, argv, -1);
	}
	T_EQ(t_finish(&call, T_PROC_MS), 0);
	t_assert_line(&call, "cqwire-echo: ",
		      "200/200 messages of 3000 bytes echoed intact");
	T_EQ(t_finish(&p, T_PROC_MS), 0);
	t_assert_line(&p, "ECHOED ", "200");

	/* A wrong key: both sides say so. */
	errfd = mkstemp(errpath);
	assert_true(errfd >= 0);
	unlink(errpath);
	setenv(T_KEY_ENV, "wrong!", 1);
	t_py(&p, "echo-listen", "tcp:127.0.0.1:0", "--key", T_KEY_HEX,
	     (char *)NULL);
	assert_int_equal(t_read_line(&p, line, sizeof(line), T_IO_MS), 0);
	{
		char *argv[] = { (char *)T.echo,    (char *)"call",
				 line + 5,	    (char *)"--authkey-env",
				 (char *)T_KEY_ENV, NULL };

		t_spawn(&call, argv, errfd);
	}
	T_EQ(t_finish(&call, T_PROC_MS), 1);
	T_EQ(t_count_lines(errfd, "authentication failed", text, sizeof(text)),
	     1);
	close(errfd);
	T_EQ(t_finish(&p, T_PROC_MS), 3);
	t_assert_line(&p, "AUTHFAIL ", NULL);
}

/* ----------------------------------------------------------------------
 * Finding the interpreter
 */

/* Run argv, keep its first three output lines. 0 if it exited 0. */
static int
t_probe(char *const argv[], char lines[3][PATH_MAX])
{
	struct t_proc p;
	int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	int i, rc;

	t_spawn(&p, argv, devnull);
	if (devnull >= 0) {
		close(devnull);
	}
	rc = t_finish(&p, T_PROC_MS);
	for (i = 0; rc == 0 && i < 3; i++) {
		if (t_read_line(&p, lines[i], PATH_MAX, 0) != 0) {
			rc = -1;
		}
	}
	return rc == 0 ? 0 : -1;
}

/* Prints the executable, "3.minor", and 1 if send_handle exists. */
static const char t_probe_code[] = "import sys, multiprocessing.connection\n"
				   "import multiprocessing.reduction as r\n"
				   "print(sys.executable)\n"
				   "print('%d.%d' % sys.version_info[:2])\n"
				   "print(int(hasattr(r, 'send_handle')))\n";

static const char t_probe_billiard[] =
    "import sys, billiard.connection\n"
    "import billiard.reduction as r\n"
    "print(sys.executable)\n"
    "print('%d.%d' % sys.version_info[:2])\n"
    "print(int(hasattr(r, 'send_handle')))\n";

static void
t_pyenv_root(char *out, size_t cap)
{
	char *argv[] = { (char *)"pyenv", (char *)"root", NULL };
	const char *env = getenv("PYENV_ROOT"), *home = getenv("HOME");
	struct t_proc p;
	int devnull;

	if (env != NULL && *env != '\0') {
		snprintf(out, cap, "%s", env);
		return;
	}
	devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	t_spawn(&p, argv, devnull);
	if (devnull >= 0) {
		close(devnull);
	}
	if (t_finish(&p, 10000) == 0 && t_read_line(&p, out, cap, 0) == 0 &&
	    out[0] == '/') {
		return;
	}
	snprintf(out, cap, "%s/.pyenv", home != NULL ? home : "/root");
}

/* 0, or -1 with why filled in. */
static int
t_find_python(const char *peer, char *why, size_t cap)
{
	char lines[3][PATH_MAX], pattern[PATH_MAX + 64], root[PATH_MAX];
	char *argv[4] = { NULL, (char *)"-c", (char *)t_probe_code, NULL };
	const char *want, *dot;
	glob_t g;

	T.lib = "mp";
	if (strcmp(peer, "py311") == 0) {
		want = "3.11";
		argv[0] = (char *)"python3";
	} else if (strcmp(peer, "py312") == 0 || strcmp(peer, "py313") == 0) {
		want = strcmp(peer, "py312") == 0 ? "3.12" : "3.13";
		t_pyenv_root(root, sizeof(root));
		snprintf(pattern, sizeof(pattern),
			 "%s/versions/%s.*/bin/python3", root, want);
		if (glob(pattern, 0, NULL, &g) != 0 || g.gl_pathc == 0) {
			snprintf(why, cap, "no interpreter matches %s",
				 pattern);
			return -1;
		}
		snprintf(T.python, sizeof(T.python), "%s",
			 g.gl_pathv[g.gl_pathc - 1]);
		globfree(&g);
		argv[0] = T.python;
	} else {
		want = NULL;
		T.lib = "billiard";
		argv[0] = (char *)"/usr/bin/python3";
		argv[2] = (char *)t_probe_billiard;
	}
	if (t_probe(argv, lines) != 0) {
		snprintf(why, cap, "%s %s", argv[0],
			 want != NULL ? "does not run"
				      : "cannot import billiard");
		return -1;
	}
	if (want != NULL && strcmp(lines[1], want) != 0) {
		snprintf(why, cap, "%s is Python %s, not %s", argv[0], lines[1],
			 want);
		return -1;
	}
	snprintf(T.python, sizeof(T.python), "%s", lines[0]);
	dot = strchr(lines[1], '.');
	T.minor = dot != NULL ? atoi(dot + 1) : 0;
	T.modern = want != NULL && T.minor >= 12;
	T.send_handle = strcmp(lines[2], "1") == 0;
	return 0;
}

static int
t_required(const char *peer)
{
	const char *list = getenv("CQW_REQUIRE_PEERS");
	size_t n = strlen(peer);
	const char *s;

	if (list == NULL) {
		return 0;
	}
	for (s = list; *s != '\0';) {
		size_t len = strcspn(s, ", ");

		if (len == n && strncmp(s, peer, n) == 0) {
			return 1;
		}
		s += len;
		s += strspn(s, ", ");
	}
	return 0;
}

static void
usage(FILE *f)
{
	fprintf(f,
		"usage: test-interop PEER\n"
		"  PEER: py311 (python3 on PATH), py312, py313 (pyenv), or\n"
		"        billiard (/usr/bin/python3 with billiard)\n"
		"Environment: CQW_INTEROP_DIR (peer.py's folder), CQW_ECHO\n"
		"(cqwire-echo), CQW_REQUIRE_PEERS (comma list: fail instead\n"
		"of skipping, exit 77, when those interpreters are missing).\n"
		"Internal: test-interop worker FD [WFD] is peer.py's pool"
		" worker.\n");
}

int
main(int argc, char **argv)
{
	static const char *const peers[] = { "py311", "py312", "py313",
					     "billiard" };
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_interop_c_listener_tcp,
					  t_teardown),
		cmocka_unit_test_teardown(test_interop_c_listener_unix,
					  t_teardown),
		cmocka_unit_test_teardown(test_interop_c_listener_auth_modern,
					  t_teardown),
		cmocka_unit_test_teardown(test_interop_c_listener_auth_legacy,
					  t_teardown),
		cmocka_unit_test_teardown(test_interop_c_listener_wrong_key,
					  t_teardown),
		cmocka_unit_test_teardown(test_interop_py_listener_tcp,
					  t_teardown),
		cmocka_unit_test_teardown(test_interop_py_listener_unix,
					  t_teardown),
		cmocka_unit_test_teardown(test_interop_py_listener_auth_modern,
					  t_teardown),
		cmocka_unit_test_teardown(test_interop_py_listener_auth_legacy,
					  t_teardown),
		cmocka_unit_test_teardown(test_interop_py_listener_wrong_key,
					  t_teardown),
		cmocka_unit_test_teardown(test_interop_refuse_md5, t_teardown),
		cmocka_unit_test_teardown(test_interop_empty_key, t_teardown),
		cmocka_unit_test_teardown(test_interop_abstract, t_teardown),
		cmocka_unit_test_teardown(test_interop_handles, t_teardown),
		cmocka_unit_test_teardown(test_interop_c_pool, t_teardown),
		cmocka_unit_test_teardown(test_interop_py_pool, t_teardown),
		cmocka_unit_test_teardown(test_interop_echo_serve, t_teardown),
		cmocka_unit_test_teardown(test_interop_echo_once, t_teardown),
		cmocka_unit_test_teardown(test_interop_echo_call, t_teardown),
	};
	const char *dir;
	char why[PATH_MAX + 128];
	ssize_t n;
	size_t i;
	int r;

	if (argc >= 3 && strcmp(argv[1], "worker") == 0) {
		return worker_main(argc, argv);
	}
	if (argc == 2 && strcmp(argv[1], "--help") == 0) {
		usage(stdout);
		return 0;
	}
	for (i = 0; argc == 2 && i < sizeof(peers) / sizeof(peers[0]); i++) {
		if (strcmp(argv[1], peers[i]) == 0) {
			T.peer = peers[i];
		}
	}
	if (T.peer == NULL) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	alarm(T_ALARM_S);
	if (t_find_python(T.peer, why, sizeof(why)) != 0) {
		if (t_required(T.peer)) {
			fprintf(stderr,
				"test-interop %s: required by "
				"CQW_REQUIRE_PEERS, but %s\n",
				T.peer, why);
			return 1;
		}
		printf("test-interop %s: skipped: %s\n", T.peer, why);
		return 77;
	}
	dir = getenv("CQW_INTEROP_DIR");
	if (dir == NULL || *dir == '\0') {
		fprintf(stderr, "test-interop: CQW_INTEROP_DIR is not set\n");
		return 1;
	}
	snprintf(T.script, sizeof(T.script), "%s/peer.py", dir);
	if (access(T.script, R_OK) != 0) {
		fprintf(stderr, "test-interop: cannot read %s\n", T.script);
		return 1;
	}
	T.echo = getenv("CQW_ECHO");
	if (T.echo != NULL && *T.echo == '\0') {
		T.echo = NULL;
	}
	n = readlink("/proc/self/exe", T.self, sizeof(T.self) - 1);
	if (n <= 0) {
		fprintf(stderr, "test-interop: /proc/self/exe: %s\n",
			strerror(errno));
		return 1;
	}
	T.self[n] = '\0';
	printf("test-interop %s: %s (Python 3.%d, %s)\n", T.peer, T.python,
	       T.minor, T.lib);
	r = cmocka_run_group_tests_name(T.peer, tests, NULL, NULL);
	cqw_loop_free(T.loop);
	return r;
}
