/*
 * Bad input: truncated and lying frames, hostile handshakes on both sides,
 * peers that die mid-message or go away while we write, and bad
 * arguments. Each case must end in a defined CQW_E* code, without a
 * crash, a leak (the suite also runs under ASan+UBSan), a SIGPIPE, or an
 * allocation sized by what a peer claims.
 *
 * Memory checks run in a forked child whose address space is capped
 * (RLIMIT_AS), so that an allocation of what a header claims would fail.
 * ASan reserves terabytes of address space, so under ASan the cap is
 * left out (the rest of each check still runs).
 *
 * Children never use cmocka's assertions (a failure would long-jump into
 * the runner's copy inside the child): they check with T_CHILD_CHECK()
 * and the parent asserts their exit status.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cqwire.h"
#include "t-util.h"

/*
 * ASan and TSan reserve terabytes of shadow memory, so an address-space
 * cap (RLIMIT_AS) cannot be used under them: T_ASAN covers both.
 */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define T_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define T_ASAN 1
#endif
#endif
#ifndef T_ASAN
#define T_ASAN 0
#endif

#define T_MIB (1024 * 1024)
/* ff ff ff ff + an 8-byte length. */
#define T_LARGE_HDR 12
/* The cap on a memory-checking child's address space, over its size. */
#define T_AS_HEADROOM ((size_t)448 * T_MIB)

/* ------------------------------------------------------------------
 * Helpers
 */

/* What the current check is about, for failure messages. */
static const char *t_ctx = "";

static const char *
t_name(int64_t v)
{
	return v < 0 ? cqw_err_name((int)v) : "OK";
}

/* Fail, naming both codes, unless got == want. */
#define T_RESULT(got, want) \
	t_result((int64_t)(got), (int64_t)(want), #got, __FILE__, __LINE__)

static void
t_result(int64_t got, int64_t want, const char *expr, const char *file,
	 int line)
{
	if (got != want) {
		fail_msg("%s:%d: [%s] %s = %lld (%s), expected %lld (%s)", file,
			 line, t_ctx, expr, (long long)got, t_name(got),
			 (long long)want, t_name(want));
	}
}

/* Fail unless got is one of the two codes. */
#define T_RESULT2(got, w1, w2) \
	t_result2((int64_t)(got), (w1), (w2), #got, __FILE__, __LINE__)

static void
t_result2(int64_t got, int64_t w1, int64_t w2, const char *expr,
	  const char *file, int line)
{
	if (got != w1 && got != w2) {
		fail_msg("%s:%d: [%s] %s = %lld (%s), expected %s or %s", file,
			 line, t_ctx, expr, (long long)got, t_name(got),
			 t_name(w1), t_name(w2));
	}
}

/* In a forked child: report the failed condition and exit with 1. */

/* As T_CHILD_CHECK, for a result code: print what came. */
#define T_CHILD_RESULT(got, want)                                        \
	do {                                                             \
		int64_t t_got_ = (int64_t)(got);                         \
		if (t_got_ != (int64_t)(want)) {                         \
			fprintf(stderr,                                  \
				"child %d: %s:%d: %s = %lld (%s), "      \
				"expected %s\n",                         \
				(int)getpid(), __FILE__, __LINE__, #got, \
				(long long)t_got_, t_name(t_got_),       \
				t_name((int64_t)(want)));                \
			fflush(stderr);                                  \
			_exit(1);                                        \
		}                                                        \
	} while (0)

static void
t_write(int fd, const void *buf, size_t len)
{
	T_RESULT(t_write_all(fd, buf, len), 0);
}

/* A frame: 4-byte big-endian length, then the payload. */
static size_t
t_frame(uint8_t *out, const void *payload, size_t len)
{
	out[0] = (uint8_t)(len >> 24);
	out[1] = (uint8_t)(len >> 16);
	out[2] = (uint8_t)(len >> 8);
	out[3] = (uint8_t)len;
	memmove(out + 4, payload, len); /* payload may already be in place */
	return len + 4;
}

/* Read up to cap bytes until EOF, an error or timeout_ms; the count. */
static size_t
t_read_until_eof(int fd, uint8_t *buf, size_t cap, int timeout_ms)
{
	int64_t deadline = t_now_ms() + timeout_ms;
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint8_t sink[512];
	size_t got = 0;
	ssize_t r;

	for (;;) {
		int left = (int)(deadline - t_now_ms());

		if (left <= 0 || poll(&p, 1, left) <= 0) {
			break;
		}
		if (got < cap) {
			r = read(fd, buf + got, cap - got);
		} else {
			r = read(fd, sink, sizeof(sink));
		}
		if (r <= 0) {
			break;
		}
		if (got < cap) {
			got += (size_t)r;
		}
	}
	return got;
}

/* The kinds of descriptor a connection can sit on. */
struct t_mode {
	const char *name;
	int pipe;	/* a pipe (read end) instead of a socket pair */
	unsigned flags; /* extra connection flags */
};

static const struct t_mode t_modes[] = {
	{ "socketpair", 0, 0 },
	{ "socketpair exclusive", 0, CQW_EXCLUSIVE },
	{ "pipe", 1, 0 },
	{ "pipe exclusive", 1, CQW_EXCLUSIVE },
};

#define T_NMODES (sizeof(t_modes) / sizeof(t_modes[0]))

/*
 * *c receives on one end; *raw is the other end's descriptor, which the
 * test drives with raw system calls.
 */
static int
t_raw_pair(const struct t_mode *m, cqw_conn **c, int *raw)
{
	int fds[2], r;

	if (m->pipe) {
		if (pipe2(fds, O_CLOEXEC) != 0) {
			return -errno;
		}
		r = cqw_conn_from_fd(c, fds[0], CQW_READABLE | m->flags);
	} else {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) !=
		    0) {
			return -errno;
		}
		r = cqw_conn_from_fd(c, fds[0], CQW_DUPLEX | m->flags);
	}
	if (r < 0) {
		close(fds[1]);
		return r;
	}
	*raw = fds[1];
	return 0;
}

static void
t_pair(const struct t_mode *m, cqw_conn **c, int *raw)
{
	t_ctx = m->name;
	T_RESULT(t_raw_pair(m, c, raw), 0);
}

#if !T_ASAN
/* Address-space size of this process, from /proc. */
static size_t
t_vm_size(void)
{
	unsigned long pages = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f == NULL) {
		return 0;
	}
	if (fscanf(f, "%lu", &pages) != 1) {
		pages = 0;
	}
	fclose(f);
	return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}
#endif

/*
 * In a child: cap the address space a little above what it uses, so that
 * an allocation of 2 GiB fails. Returns 1 if capped, 0 if not (ASan).
 */
static int
t_child_cap_memory(void)
{
#if T_ASAN
	return 0; /* main() said why */
#else
	struct rlimit rl;
	size_t cap = t_vm_size() + T_AS_HEADROOM;
	void *volatile big;

	T_CHILD_CHECK(cap > T_AS_HEADROOM && cap < (size_t)1536 * T_MIB);
	rl.rlim_cur = rl.rlim_max = cap;
	T_CHILD_CHECK(setrlimit(RLIMIT_AS, &rl) == 0);
	/* The cap has teeth: what a lying header claims cannot be had. */
	big = malloc((size_t)2048 * T_MIB);
	T_CHILD_CHECK(big == NULL);
	return 1;
#endif
}

/* ------------------------------------------------------------------
 * Truncated frames and end of file
 */

/* raw sends bytes then closes; the sync receive gets want. */
static void
t_cut(const struct t_mode *m, const void *bytes, size_t len, int64_t want)
{
	uint8_t buf[256];
	cqw_conn *c;
	void *p = NULL;
	int raw;

	t_pair(m, &c, &raw);
	t_write(raw, bytes, len);
	close(raw);
	T_RESULT(cqw_recv_bytes(c, &p, CQW_NONE), want);
	assert_null(p);
	/* Nothing follows: the end, whether or not it is sticky. */
	T_RESULT2(cqw_recv_bytes(c, &p, CQW_NONE), CQW_EOF, CQW_ETRUNC);
	cqw_conn_free(c);

	t_pair(m, &c, &raw);
	t_write(raw, bytes, len);
	close(raw);
	T_RESULT(cqw_recv_bytes_into(c, buf, sizeof(buf), 0, NULL), want);
	cqw_conn_free(c);
}

static void
test_badinput_truncated_header(void **state)
{
	static const uint8_t half[] = { 0, 0 };
	static const uint8_t three[] = { 0, 0, 0 };
	static const uint8_t large_cut[] = { 0xff, 0xff, 0xff, 0xff, 0, 0, 0 };
	static const uint8_t marker_only[] = { 0xff, 0xff, 0xff, 0xff };
	size_t i;

	(void)state;
	for (i = 0; i < T_NMODES; i++) {
		t_cut(&t_modes[i], half, sizeof(half), CQW_ETRUNC);
		t_cut(&t_modes[i], three, sizeof(three), CQW_ETRUNC);
		t_cut(&t_modes[i], large_cut, sizeof(large_cut), CQW_ETRUNC);
		t_cut(&t_modes[i], marker_only, sizeof(marker_only),
		      CQW_ETRUNC);
	}
}

static void
test_badinput_truncated_payload(void **state)
{
	static const uint8_t header_only[] = { 0, 0, 0, 5 };
	static const char large_only[] = "\xff\xff\xff\xff\0\0\0\0\0\0\0\5";
	uint8_t cut[4 + 50];
	size_t i;

	(void)state;
	/* A header promising 100 bytes, and 50 of them. */
	memset(cut, 'p', sizeof(cut));
	cut[0] = cut[1] = cut[2] = 0;
	cut[3] = 100;
	for (i = 0; i < T_NMODES; i++) {
		t_cut(&t_modes[i], cut, sizeof(cut), CQW_ETRUNC);
		/* End of file inside the message, if before its payload. */
		t_cut(&t_modes[i], header_only, sizeof(header_only),
		      CQW_ETRUNC);
		t_cut(&t_modes[i], large_only, T_LARGE_HDR, CQW_ETRUNC);
	}
}

static void
test_badinput_clean_close_at_boundary_eof(void **state)
{
	uint8_t wire[64], buf[16];
	size_t n, i;
	cqw_conn *c;
	void *p = NULL;
	int raw;

	(void)state;
	n = t_frame(wire, "abc", 3);
	n += t_frame(wire + n, "", 0);
	for (i = 0; i < T_NMODES; i++) {
		t_pair(&t_modes[i], &c, &raw);
		t_write(raw, wire, n);
		close(raw);
		T_RESULT(cqw_recv_bytes(c, &p, CQW_NONE), 3);
		assert_memory_equal(p, "abc", 3);
		cqw_free(p);
		p = NULL;
		T_RESULT(cqw_recv_bytes(c, &p, CQW_NONE), 0);
		cqw_free(p);
		p = NULL;
		/* At the end: readable, and every receive says so. */
		T_RESULT(cqw_poll(c, 0), 1);
		T_RESULT(cqw_recv_bytes(c, &p, CQW_NONE), CQW_EOF);
		T_RESULT(cqw_recv_bytes_into(c, buf, sizeof(buf), 0, NULL),
			 CQW_EOF);
		T_RESULT(cqw_recv_bytes(c, &p, 10), CQW_EOF);
		assert_null(p);
		cqw_conn_free(c);
	}
}

/* The same cuts seen by RECV ops. */
static void
test_badinput_truncated_async(void **state)
{
	uint8_t cut[4 + 50], buf[256];
	struct cqw_op op[2], *done[2];
	cqw_loop *loop;
	cqw_conn *c;
	size_t i;
	int raw, got, n;

	(void)state;
	memset(cut, 'p', sizeof(cut));
	cut[0] = cut[1] = cut[2] = 0;
	cut[3] = 100;
	T_RESULT(cqw_loop_new(&loop, NULL), 0);
	for (i = 0; i < T_NMODES; i++) {
		size_t lens[] = { 2, 4, sizeof(cut) };
		size_t k;

		for (k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
			t_pair(&t_modes[i], &c, &raw);
			t_write(raw, cut, lens[k]);
			memset(op, 0, sizeof(op));
			op[0].kind = op[1].kind = CQW_OP_RECV;
			op[0].conn = op[1].conn = c;
			op[0].buf = op[1].buf = buf;
			op[0].len = op[1].len = sizeof(buf);
			T_RESULT(cqw_submit(loop, &op[0]), 0);
			T_RESULT(cqw_submit(loop, &op[1]), 0);
			T_RESULT(cqw_reap(loop, done, 2, 10), 0);
			close(raw);
			for (got = 0; got < 2; got += n) {
				n = cqw_reap(loop, done + got, 2 - got, 5000);
				assert_true(n > 0);
			}
			T_RESULT(op[0].result, CQW_ETRUNC);
			T_RESULT(op[1].result, CQW_EOF);
			cqw_conn_free(c);
		}
	}
	cqw_loop_free(loop);
}

/* ------------------------------------------------------------------
 * Headers that lie about the length
 */

static const uint8_t t_hdr_2gib[] = { 0x7f, 0xff, 0xff, 0xff };

/* In the child: 2 GiB claimed, maxlength 1024; per mode. */
static void
t_child_2gib_maxlength(const struct t_mode *m)
{
	uint8_t got[6], buf[1024];
	size_t needed = 0;
	int64_t t0;
	cqw_conn *c;
	void *p = NULL;
	int raw;

	T_CHILD_CHECK(t_raw_pair(m, &c, &raw) == 0);
	T_CHILD_CHECK(t_write_all(raw, t_hdr_2gib, 4) == 0);
	/* At once: no payload is coming, and none is waited for. */
	t0 = t_now_ms();
	T_CHILD_RESULT(cqw_recv_bytes(c, &p, 1024), CQW_EMSGSIZE);
	T_CHILD_CHECK(t_now_ms() - t0 < 1000);
	T_CHILD_CHECK(p == NULL);
	if (m->pipe) {
		/* A read-only end is closed, as Python does. */
		T_CHILD_CHECK(cqw_conn_closed(c));
		T_CHILD_RESULT(cqw_recv_bytes(c, &p, 1024), CQW_ECLOSED);
	} else {
		/* A duplex end stops reading and can still send. */
		T_CHILD_CHECK(!cqw_conn_readable(c));
		T_CHILD_CHECK(cqw_conn_writable(c));
		T_CHILD_RESULT(cqw_recv_bytes(c, &p, 1024), CQW_EWRITEONLY);
		T_CHILD_RESULT(cqw_poll(c, 0), CQW_EWRITEONLY);
		T_CHILD_RESULT(cqw_send_bytes(c, "ok", 2), 0);
		T_CHILD_CHECK(read(raw, got, sizeof(got)) == 6);
		T_CHILD_CHECK(memcmp(got, "\0\0\0\2ok", 6) == 0);
	}
	cqw_conn_free(c);
	close(raw);

	/* recv_bytes_into: the size is reported, nothing allocated. */
	T_CHILD_CHECK(t_raw_pair(m, &c, &raw) == 0);
	T_CHILD_CHECK(t_write_all(raw, t_hdr_2gib, 4) == 0);
	T_CHILD_RESULT(cqw_recv_bytes_into(c, buf, sizeof(buf), 0, &needed),
		       CQW_ETOOSHORT);
	T_CHILD_CHECK(needed == 0x7fffffff);
	needed = 0;
	T_CHILD_RESULT(cqw_recv_bytes_into(c, buf, sizeof(buf), 0, &needed),
		       CQW_ETOOSHORT);
	T_CHILD_CHECK(needed == 0x7fffffff);
	cqw_conn_free(c);
	close(raw);

	/* No limit: the payload is taken as it comes, then cut. */
	T_CHILD_CHECK(t_raw_pair(m, &c, &raw) == 0);
	T_CHILD_CHECK(t_write_all(raw, t_hdr_2gib, 4) == 0);
	T_CHILD_CHECK(t_write_all(raw, "0123456789", 10) == 0);
	close(raw);
	T_CHILD_RESULT(cqw_recv_bytes(c, &p, CQW_NONE), CQW_ETRUNC);
	T_CHILD_CHECK(p == NULL);
	cqw_conn_free(c);
}

/* In the child: a RECV op too small for a 2 GiB claim. */
static void
t_child_2gib_async(const struct t_mode *m)
{
	struct cqw_op op, *done[1];
	uint8_t buf[1024];
	cqw_loop *loop;
	cqw_conn *c;
	int raw;

	T_CHILD_CHECK(cqw_loop_new(&loop, NULL) == 0);
	T_CHILD_CHECK(t_raw_pair(m, &c, &raw) == 0);
	T_CHILD_CHECK(t_write_all(raw, t_hdr_2gib, 4) == 0);
	memset(&op, 0, sizeof(op));
	op.kind = CQW_OP_RECV;
	op.conn = c;
	op.buf = buf;
	op.len = sizeof(buf);
	T_CHILD_CHECK(cqw_submit(loop, &op) == 0);
	T_CHILD_CHECK(cqw_reap(loop, done, 1, 5000) == 1);
	T_CHILD_RESULT(op.result, CQW_ETOOSHORT);
	T_CHILD_CHECK(op.needed == 0x7fffffff);
	cqw_conn_free(c);
	close(raw);
	cqw_loop_free(loop);
}

static void
test_badinput_2gib_header_maxlength_emsgsize(void **state)
{
	pid_t pid;
	size_t i;

	(void)state;
	pid = t_fork();
	if (pid == 0) {
		t_child_cap_memory();
		for (i = 0; i < T_NMODES; i++) {
			t_child_2gib_maxlength(&t_modes[i]);
			t_child_2gib_async(&t_modes[i]);
		}
		_exit(0);
	}
	t_wait_child(pid);
}

/* maxlength is inclusive; one byte more is refused. */
static void
test_badinput_maxlength_boundary(void **state)
{
	uint8_t *wire = malloc(4 + 1024);
	cqw_conn *c;
	void *p = NULL;
	size_t i, n;
	int raw;

	(void)state;
	assert_non_null(wire);
	memset(wire, 'm', 4 + 1024);
	for (i = 0; i < T_NMODES; i++) {
		t_pair(&t_modes[i], &c, &raw);
		n = t_frame(wire, wire + 4, 1024);
		t_write(raw, wire, n);
		T_RESULT(cqw_recv_bytes(c, &p, 1024), 1024);
		cqw_free(p);
		p = NULL;
		n = t_frame(wire, wire + 4, 1024);
		t_write(raw, wire, n);
		T_RESULT(cqw_recv_bytes(c, &p, 1023), CQW_EMSGSIZE);
		assert_null(p);
		cqw_conn_free(c);
		close(raw);
	}
	free(wire);
}

/* ff ff ff ff + 2^62, then 10 bytes, then the end. */
static const char t_hdr_2p62[] = "\xff\xff\xff\xff\x40\0\0\0\0\0\0\0";

static void
t_child_2p62(const struct t_mode *m)
{
	static const char hdr_2p63[] = "\xff\xff\xff\xff\x80\0\0\0\0\0\0\0";
	uint8_t buf[64];
	size_t needed = 0;
	cqw_conn *c;
	void *p = NULL;
	int64_t r;
	int raw;

	T_CHILD_CHECK(t_raw_pair(m, &c, &raw) == 0);
	T_CHILD_CHECK(t_write_all(raw, t_hdr_2p62, T_LARGE_HDR) == 0);
	T_CHILD_CHECK(t_write_all(raw, "0123456789", 10) == 0);
	close(raw);
	T_CHILD_RESULT(cqw_recv_bytes(c, &p, CQW_NONE), CQW_ETRUNC);
	T_CHILD_CHECK(p == NULL);
	cqw_conn_free(c);

	/* With a limit: refused at once. */
	T_CHILD_CHECK(t_raw_pair(m, &c, &raw) == 0);
	T_CHILD_CHECK(t_write_all(raw, t_hdr_2p62, T_LARGE_HDR) == 0);
	T_CHILD_RESULT(cqw_recv_bytes(c, &p, 1024), CQW_EMSGSIZE);
	cqw_conn_free(c);
	close(raw);

	/* Into a buffer: the claimed size is reported. */
	T_CHILD_CHECK(t_raw_pair(m, &c, &raw) == 0);
	T_CHILD_CHECK(t_write_all(raw, t_hdr_2p62, T_LARGE_HDR) == 0);
	T_CHILD_RESULT(cqw_recv_bytes_into(c, buf, sizeof(buf), 0, &needed),
		       CQW_ETOOSHORT);
	T_CHILD_CHECK(needed == (size_t)1 << 62);
	cqw_conn_free(c);
	close(raw);

	/* 2^63 does not fit the int64_t result: refused, whatever the limit. */
	T_CHILD_CHECK(t_raw_pair(m, &c, &raw) == 0);
	T_CHILD_CHECK(t_write_all(raw, hdr_2p63, T_LARGE_HDR) == 0);
	T_CHILD_CHECK(t_write_all(raw, "0123456789", 10) == 0);
	r = cqw_recv_bytes(c, &p, CQW_NONE);
	T_CHILD_CHECK(r == CQW_EMSGSIZE || r == CQW_EPROTO);
	T_CHILD_CHECK(p == NULL);
	cqw_conn_free(c);
	close(raw);
}

static void
test_badinput_huge_large_frame_truncated(void **state)
{
	pid_t pid;
	size_t i;

	(void)state;
	pid = t_fork();
	if (pid == 0) {
		t_child_cap_memory();
		for (i = 0; i < T_NMODES; i++) {
			t_child_2p62(&t_modes[i]);
		}
		_exit(0);
	}
	t_wait_child(pid);
}

/*
 * A 2^62 claim followed by 48 MiB of real payload, then the end: the
 * receiver (a child under the cap) grows its buffer only as the bytes
 * come, and ends with CQW_ETRUNC, not CQW_ENOMEM.
 */
static void
test_badinput_huge_claim_memory_follows_data(void **state)
{
	enum { CHUNK = 1 << 20, CHUNKS = 48 };
	uint8_t *chunk = malloc(CHUNK);
	size_t i, k;
	pid_t pid;

	(void)state;
	assert_non_null(chunk);
	memset(chunk, 'd', CHUNK);
	for (i = 0; i < T_NMODES; i++) {
		cqw_conn *c;
		int raw;

		t_pair(&t_modes[i], &c, &raw);
		pid = t_fork();
		if (pid == 0) {
			void *p = NULL;

			close(raw);
			t_child_cap_memory();
			T_CHILD_RESULT(cqw_recv_bytes(c, &p, CQW_NONE),
				       CQW_ETRUNC);
			T_CHILD_CHECK(p == NULL);
			cqw_conn_free(c);
			_exit(0);
		}
		cqw_conn_free(c);
		t_write(raw, t_hdr_2p62, T_LARGE_HDR);
		for (k = 0; k < CHUNKS; k++) {
			t_write(raw, chunk, CHUNK);
		}
		close(raw);
		t_wait_child(pid);
	}
	free(chunk);
}

/* Python reads negative lengths other than -1 as empty messages. */
static void
test_badinput_negative_length_no_desync(void **state)
{
	/*
	 * -2, "abc", INT32_MIN, "z", and the large marker with a small
	 * length, "hello".
	 */
	static const char wire[] = "\xff\xff\xff\xfe"
				   "\0\0\0\3abc"
				   "\x80\0\0\0"
				   "\0\0\0\1z"
				   "\xff\xff\xff\xff\0\0\0\0\0\0\0\5hello";
	static const char *const want[] = { "abc", "z", "hello" };
	cqw_conn *c;
	void *p = NULL;
	int64_t r;
	size_t i, k;
	int raw;

	(void)state;
	for (i = 0; i < T_NMODES; i++) {
		t_pair(&t_modes[i], &c, &raw);
		t_write(raw, wire, sizeof(wire) - 1);
		for (k = 0; k < 3; k++) {
			if (k < 2) {
				/* Taken as empty, or refused: never desync. */
				r = cqw_recv_bytes(c, &p, CQW_NONE);
				T_RESULT2(r, 0, CQW_EPROTO);
				cqw_free(p);
				p = NULL;
			}
			T_RESULT(cqw_recv_bytes(c, &p, CQW_NONE),
				 strlen(want[k]));
			assert_memory_equal(p, want[k], strlen(want[k]));
			cqw_free(p);
			p = NULL;
		}
		cqw_conn_free(c);
		close(raw);
	}
}

/* ------------------------------------------------------------------
 * Handshakes: a listener against junk clients
 */

static const char t_key[] = "secret";

struct t_server {
	cqw_listener *l;
	const char *addr;
	int port;
};

static void
t_listen(struct t_server *s)
{
	struct cqw_auth auth = { .key = t_key,
				 .keylen = sizeof(t_key) - 1,
				 .timeout_ms = 300 };
	const char *colon;

	T_RESULT(cqw_listen(&s->l, "tcp:127.0.0.1:0", &auth, 16), 0);
	s->addr = cqw_listener_address(s->l);
	assert_non_null(s->addr);
	colon = strrchr(s->addr, ':');
	assert_non_null(colon);
	s->port = atoi(colon + 1);
	assert_true(s->port > 0);
}

static int
t_tcp_socket(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	return fd;
}

static int
t_raw_connect(int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_port = htons((uint16_t)port) };
	int fd = t_tcp_socket();

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	return fd;
}

struct t_client {
	pthread_t th;
	const char *addr;
	int result;
};

static void *
t_client_main(void *arg)
{
	struct t_client *cl = arg;
	struct cqw_auth auth = { .key = t_key,
				 .keylen = sizeof(t_key) - 1,
				 .timeout_ms = 5000 };
	char buf[16];
	cqw_conn *c;
	int r;

	r = cqw_connect(&c, cl->addr, &auth);
	if (r < 0) {
		cl->result = r;
		return NULL;
	}
	r = cqw_send_bytes(c, "ping", 4);
	if (r == 0) {
		int64_t n = cqw_recv_bytes_into(c, buf, sizeof(buf), 0, NULL);

		if (n < 0) {
			r = (int)n;
		} else if (n != 4 || memcmp(buf, "pong", 4) != 0) {
			r = CQW_EPROTO;
		}
	}
	cqw_conn_free(c);
	cl->result = r;
	return NULL;
}

/* The listener still takes a good, authenticated client. */
static void
t_expect_good_client(struct t_server *s)
{
	struct t_client cl = { .addr = s->addr, .result = 1 };
	char buf[16];
	cqw_conn *c;
	int r;

	assert_int_equal(pthread_create(&cl.th, NULL, t_client_main, &cl), 0);
	r = cqw_accept(s->l, &c, 5000);
	if (r < 0) {
		/* The client writes into cl: never leave this frame before it. */
		assert_int_equal(pthread_join(cl.th, NULL), 0);
		T_RESULT(r, 0);
	}
	T_RESULT(cqw_recv_bytes_into(c, buf, sizeof(buf), 0, NULL), 4);
	assert_memory_equal(buf, "ping", 4);
	T_RESULT(cqw_send_bytes(c, "pong", 4), 0);
	assert_int_equal(pthread_join(cl.th, NULL), 0);
	T_RESULT(cl.result, 0);
	cqw_conn_free(c);
}

/*
 * A raw client sends junk (maybe nothing): cqw_accept() fails with want
 * (or want2) and returns what the client received until it was dropped.
 */
static size_t
t_junk_client(struct t_server *s, const void *junk, size_t len, int want,
	      int want2, uint8_t *got, size_t cap)
{
	cqw_conn *c = NULL;
	size_t n;
	int fd, r;

	fd = t_raw_connect(s->port);
	if (len > 0) {
		t_write(fd, junk, len);
	}
	r = cqw_accept(s->l, &c, 5000);
	T_RESULT2(r, want, want2);
	assert_null(c);
	n = t_read_until_eof(fd, got, cap, 1000);
	close(fd);
	return n;
}

static void
test_badinput_listener_oversized_frame(void **state)
{
	struct t_server s;
	uint8_t frame[4 + 300], got[512];
	size_t n;

	(void)state;
	t_listen(&s);
	memset(frame, 'j', sizeof(frame));
	t_frame(frame, frame + 4, 300);
	n = t_junk_client(&s, frame, sizeof(frame), CQW_EAUTH, CQW_EAUTH, got,
			  sizeof(got));
	/* The challenge came; no #FAILURE# for a frame over the cap. */
	assert_true(n >= 4 + 11);
	assert_memory_equal(got + 4, "#CHALLENGE#", 11);
	t_expect_good_client(&s);
	cqw_listener_free(s.l);
}

static void
test_badinput_listener_http_garbage(void **state)
{
	static const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n"
				   "User-Agent: curl/8.0\r\n\r\n";
	struct t_server s;
	uint8_t got[512];

	(void)state;
	t_listen(&s);
	/* "GET " is a length of 1195725856: far over the 256-byte cap. */
	t_junk_client(&s, http, sizeof(http) - 1, CQW_EAUTH, CQW_EAUTH, got,
		      sizeof(got));
	t_expect_good_client(&s);
	cqw_listener_free(s.l);
}

static void
test_badinput_listener_silent_client_timeout(void **state)
{
	static const uint8_t half[] = { 0, 0 };
	struct t_server s;
	uint8_t got[512];
	int64_t t0, dt;

	(void)state;
	t_listen(&s);
	t0 = t_now_ms();
	t_junk_client(&s, NULL, 0, CQW_ETIMEDOUT, CQW_ETIMEDOUT, got,
		      sizeof(got));
	dt = t_now_ms() - t0;
	if (dt < 250 || dt > 3000) {
		fail_msg("accept of a silent client took %lld ms (deadline "
			 "300)",
			 (long long)dt);
	}
	/* Half a header, then silence. */
	t0 = t_now_ms();
	t_junk_client(&s, half, sizeof(half), CQW_ETIMEDOUT, CQW_ETIMEDOUT, got,
		      sizeof(got));
	dt = t_now_ms() - t0;
	if (dt < 250 || dt > 3000) {
		fail_msg("accept of a half-header client took %lld ms",
			 (long long)dt);
	}
	t_expect_good_client(&s);
	cqw_listener_free(s.l);
}

static void
test_badinput_listener_bad_responses(void **state)
{
	uint8_t frame[4 + 256], got[512];
	struct t_server s;
	size_t n;
	int fd;
	cqw_conn *c = NULL;

	(void)state;
	t_listen(&s);

	/* 256 bytes of junk: judged, refused with #FAILURE#. */
	memset(frame, 'j', sizeof(frame));
	t_frame(frame, frame + 4, 256);
	n = t_junk_client(&s, frame, sizeof(frame), CQW_EAUTH, CQW_EAUTH, got,
			  sizeof(got));
	assert_true(n >= 13);
	assert_memory_equal(got + n - 13, "\0\0\0\x09#FAILURE#", 13);

	/* A wrong 16-byte (MD5-sized) digest. */
	memset(frame, 0x11, sizeof(frame));
	t_frame(frame, frame + 4, 16);
	n = t_junk_client(&s, frame, 4 + 16, CQW_EAUTH, CQW_EAUTH, got,
			  sizeof(got));
	assert_true(n >= 13);
	assert_memory_equal(got + n - 13, "\0\0\0\x09#FAILURE#", 13);

	/* A 2 GiB claim: refused at once, nothing allocated. */
	n = t_junk_client(&s, t_hdr_2gib, 4, CQW_EAUTH, CQW_EAUTH, got,
			  sizeof(got));

	/* Connects and leaves at once. */
	fd = t_raw_connect(s.port);
	close(fd);
	assert_true(cqw_accept(s.l, &c, 5000) < 0);
	assert_null(c);

	t_expect_good_client(&s);
	cqw_listener_free(s.l);
}

/* ------------------------------------------------------------------
 * Handshakes: a client against a hostile server
 */

enum t_srv_mode {
	T_SRV_SEND,    /* send the bytes, then drain until the end */
	T_SRV_FAILURE, /* a real legacy challenge, then #FAILURE# */
	T_SRV_CLOSE,   /* accept and close at once */
};

struct t_rawsrv {
	pthread_t th;
	int lfd;
	int port;
	enum t_srv_mode mode;
	const void *bytes;
	size_t len;
};

static void *
t_rawsrv_main(void *arg)
{
	struct t_rawsrv *s = arg;
	struct pollfd p = { .fd = s->lfd, .events = POLLIN };
	uint8_t buf[512], frame[64];
	int fd;

	if (poll(&p, 1, 5000) != 1) {
		return NULL;
	}
	fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		return NULL;
	}
	switch (s->mode) {
	case T_SRV_SEND:
		if (s->len > 0) {
			t_write_all(fd, s->bytes, s->len);
		}
		break;
	case T_SRV_FAILURE:
		memcpy(buf, "#CHALLENGE#", 11);
		memset(buf + 11, 0x42, 20);
		t_write_all(fd, frame, t_frame(frame, buf, 31));
		/* The client's 16-byte answer, then the verdict. */
		t_sleep_ms(50);
		t_write_all(fd, frame, t_frame(frame, "#FAILURE#", 9));
		break;
	case T_SRV_CLOSE:
		break;
	}
	if (s->mode != T_SRV_CLOSE) {
		t_read_until_eof(fd, buf, sizeof(buf), 3000);
	}
	close(fd);
	return NULL;
}

static void
t_rawsrv_start(struct t_rawsrv *s, enum t_srv_mode mode, const void *bytes,
	       size_t len)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t slen = sizeof(sin);

	s->mode = mode;
	s->bytes = bytes;
	s->len = len;
	s->lfd = t_tcp_socket();
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(s->lfd, 4), 0);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&sin, &slen),
			 0);
	s->port = ntohs(sin.sin_port);
	assert_int_equal(pthread_create(&s->th, NULL, t_rawsrv_main, s), 0);
}

/* cqw_connect() to a raw server; returns its result, *ms the time. */
static int
t_connect_raw(enum t_srv_mode mode, const void *bytes, size_t len, int64_t *ms)
{
	struct cqw_auth auth = { .key = t_key,
				 .keylen = sizeof(t_key) - 1,
				 .timeout_ms = 300 };
	struct t_rawsrv s;
	char addr[64];
	cqw_conn *c = NULL;
	int64_t t0;
	int r;

	t_rawsrv_start(&s, mode, bytes, len);
	snprintf(addr, sizeof(addr), "tcp:127.0.0.1:%d", s.port);
	t0 = t_now_ms();
	r = cqw_connect(&c, addr, &auth);
	if (ms != NULL) {
		*ms = t_now_ms() - t0;
	}
	if (r == 0) {
		cqw_conn_free(c);
	} else {
		assert_null(c);
	}
	assert_int_equal(pthread_join(s.th, NULL), 0);
	close(s.lfd);
	return r;
}

static void
test_badinput_client_bad_challenges(void **state)
{
	uint8_t frame[4 + 300], payload[300];
	size_t n;

	(void)state;
	/* No #CHALLENGE# prefix. */
	t_ctx = "no prefix";
	memcpy(payload, "#HELLO#", 7);
	memset(payload + 7, 0x33, 40);
	n = t_frame(frame, payload, 47);
	T_RESULT(t_connect_raw(T_SRV_SEND, frame, n, NULL), CQW_EAUTH);

	/* A 10-byte challenge after the prefix: under the 20 minimum. */
	t_ctx = "short challenge";
	memcpy(payload, "#CHALLENGE#0123456789", 21);
	n = t_frame(frame, payload, 21);
	T_RESULT(t_connect_raw(T_SRV_SEND, frame, n, NULL), CQW_EAUTH);

	/* A 10-byte frame in all. */
	t_ctx = "10-byte frame";
	n = t_frame(frame, "0123456789", 10);
	T_RESULT(t_connect_raw(T_SRV_SEND, frame, n, NULL), CQW_EAUTH);

	/* A digest not in the allowed set. */
	t_ctx = "{sha1}";
	memcpy(payload, "#CHALLENGE#{sha1}", 17);
	memset(payload + 17, 0x44, 40);
	n = t_frame(frame, payload, 57);
	T_RESULT(t_connect_raw(T_SRV_SEND, frame, n, NULL), CQW_EAUTH);

	/* Over the 256-byte cap. */
	t_ctx = "300-byte challenge";
	memcpy(payload, "#CHALLENGE#", 11);
	memset(payload + 11, 0x55, sizeof(payload) - 11);
	n = t_frame(frame, payload, 300);
	T_RESULT(t_connect_raw(T_SRV_SEND, frame, n, NULL), CQW_EAUTH);

	/* A 2 GiB claim. */
	t_ctx = "2 GiB claim";
	T_RESULT(t_connect_raw(T_SRV_SEND, t_hdr_2gib, 4, NULL), CQW_EAUTH);

	/* A fair challenge, and then our answer is refused. */
	t_ctx = "#FAILURE#";
	T_RESULT(t_connect_raw(T_SRV_FAILURE, NULL, 0, NULL), CQW_EAUTH);

	/* The server hangs up at once. */
	t_ctx = "hang-up";
	assert_true(t_connect_raw(T_SRV_CLOSE, NULL, 0, NULL) < 0);
}

static void
test_badinput_client_silent_server_timeout(void **state)
{
	static const uint8_t half[] = { 0, 0 };
	int64_t ms;

	(void)state;
	t_ctx = "silent server";
	T_RESULT(t_connect_raw(T_SRV_SEND, NULL, 0, &ms), CQW_ETIMEDOUT);
	if (ms < 250 || ms > 3000) {
		fail_msg("connect to a silent server took %lld ms (deadline "
			 "300)",
			 (long long)ms);
	}
	t_ctx = "half a header";
	T_RESULT(t_connect_raw(T_SRV_SEND, half, sizeof(half), &ms),
		 CQW_ETIMEDOUT);
	if (ms < 250 || ms > 3000) {
		fail_msg("connect took %lld ms", (long long)ms);
	}
}

/* ------------------------------------------------------------------
 * Peers that die or leave
 */

/* A child writes a header promising 1 MiB and 1000 bytes, then dies. */
static pid_t
t_spawn_killed_writer(int raw, cqw_conn *c)
{
	pid_t pid = t_fork();

	if (pid == 0) {
		static const uint8_t hdr[] = { 0, 0x10, 0, 0 };
		uint8_t part[1000];

		close((int)cqw_conn_fileno(c));
		memset(part, 'k', sizeof(part));
		T_CHILD_CHECK(t_write_all(raw, hdr, sizeof(hdr)) == 0);
		T_CHILD_CHECK(t_write_all(raw, part, sizeof(part)) == 0);
		kill(getpid(), SIGKILL);
		_exit(1);
	}
	close(raw);
	return pid;
}

static void
t_expect_killed(pid_t pid)
{
	int status = t_wait_status(pid);

	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
}

static void
test_badinput_peer_killed_mid_message(void **state)
{
	uint8_t *buf = malloc(T_MIB);
	struct cqw_op op, *done[1];
	cqw_loop *loop;
	cqw_conn *c;
	void *p = NULL;
	size_t i;
	pid_t pid;
	int raw;

	(void)state;
	assert_non_null(buf);
	T_RESULT(cqw_loop_new(&loop, NULL), 0);
	for (i = 0; i < T_NMODES; i++) {
		t_pair(&t_modes[i], &c, &raw);
		pid = t_spawn_killed_writer(raw, c);
		T_RESULT(cqw_recv_bytes(c, &p, CQW_NONE), CQW_ETRUNC);
		assert_null(p);
		t_expect_killed(pid);
		cqw_conn_free(c);

		t_pair(&t_modes[i], &c, &raw);
		pid = t_spawn_killed_writer(raw, c);
		T_RESULT(cqw_recv_bytes_into(c, buf, T_MIB, 0, NULL),
			 CQW_ETRUNC);
		t_expect_killed(pid);
		cqw_conn_free(c);

		t_pair(&t_modes[i], &c, &raw);
		pid = t_spawn_killed_writer(raw, c);
		memset(&op, 0, sizeof(op));
		op.kind = CQW_OP_RECV;
		op.conn = c;
		op.buf = buf;
		op.len = T_MIB;
		T_RESULT(cqw_submit(loop, &op), 0);
		T_RESULT(cqw_reap(loop, done, 1, 10000), 1);
		T_RESULT(op.result, CQW_ETRUNC);
		t_expect_killed(pid);
		cqw_conn_free(c);
	}
	cqw_loop_free(loop);
	free(buf);
}

static volatile sig_atomic_t t_sigpipes;

static void
t_on_sigpipe(int sig)
{
	(void)sig;
	t_sigpipes++;
}

struct t_closer {
	pthread_t th;
	cqw_conn *c;
};

static void *
t_closer_main(void *arg)
{
	struct t_closer *cl = arg;

	t_sleep_ms(50);
	cqw_conn_free(cl->c);
	return NULL;
}

/* In the child: every way of writing to a reader that left. */
static void
t_child_write_to_gone(unsigned flags)
{
	static const size_t big = 4 * T_MIB;
	uint8_t *buf = calloc(1, big);
	struct cqw_op op, *done[1];
	struct t_closer cl;
	cqw_conn *a, *b, *tx, *rx;
	cqw_loop *loop;
	int64_t r;

	T_CHILD_CHECK(buf != NULL);
	T_CHILD_CHECK(cqw_loop_new(&loop, NULL) == 0);

	/* Small and big messages after the reader closed. */
	T_CHILD_CHECK(cqw_pipe(&a, &b, flags) == 0);
	tx = (flags & CQW_DUPLEX) == CQW_DUPLEX ? a : b;
	rx = tx == a ? b : a;
	cqw_conn_free(rx);
	r = cqw_send_bytes(tx, "x", 1);
	T_CHILD_CHECK(r == CQW_EPIPE || r == CQW_ECONNRESET);
	r = cqw_send_bytes(tx, buf, T_MIB);
	T_CHILD_CHECK(r == CQW_EPIPE || r == CQW_ECONNRESET);
	/* Through the loop too. */
	memset(&op, 0, sizeof(op));
	op.kind = CQW_OP_SEND;
	op.conn = tx;
	op.buf = buf;
	op.len = 100;
	T_CHILD_CHECK(cqw_submit(loop, &op) == 0);
	T_CHILD_CHECK(cqw_reap(loop, done, 1, 5000) == 1);
	T_CHILD_CHECK(op.result == CQW_EPIPE || op.result == CQW_ECONNRESET);
	cqw_conn_free(tx);

	/* The reader leaves while a big send is blocked. */
	T_CHILD_CHECK(cqw_pipe(&a, &b, flags) == 0);
	tx = (flags & CQW_DUPLEX) == CQW_DUPLEX ? a : b;
	cl.c = tx == a ? b : a;
	T_CHILD_CHECK(pthread_create(&cl.th, NULL, t_closer_main, &cl) == 0);
	r = cqw_send_bytes(tx, buf, big);
	T_CHILD_CHECK(pthread_join(cl.th, NULL) == 0);
	T_CHILD_CHECK(r == CQW_EPIPE || r == CQW_ECONNRESET);
	cqw_conn_free(tx);

	cqw_loop_free(loop);
	free(buf);
}

static int
t_sigpipe_pending(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigpending(&set);
	return sigismember(&set, SIGPIPE);
}

static void
test_badinput_write_to_closed_peer_no_sigpipe(void **state)
{
	pid_t pid;

	(void)state;
	pid = t_fork();
	if (pid == 0) {
		struct sigaction sa;
		sigset_t set;

		/* The default disposition: a stray SIGPIPE kills us. */
		signal(SIGPIPE, SIG_DFL);
		sigemptyset(&set);
		sigaddset(&set, SIGPIPE);
		pthread_sigmask(SIG_UNBLOCK, &set, NULL);
		t_child_write_to_gone(CQW_DUPLEX);
		t_child_write_to_gone(0);

		/* Blocked by the caller: none left pending afterwards. */
		pthread_sigmask(SIG_BLOCK, &set, NULL);
		t_child_write_to_gone(CQW_DUPLEX);
		t_child_write_to_gone(0);
		T_CHILD_CHECK(!t_sigpipe_pending());
		pthread_sigmask(SIG_UNBLOCK, &set, NULL);

		/* A handler: it never runs for our writes. */
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = t_on_sigpipe;
		sigemptyset(&sa.sa_mask);
		T_CHILD_CHECK(sigaction(SIGPIPE, &sa, NULL) == 0);
		t_child_write_to_gone(CQW_DUPLEX);
		t_child_write_to_gone(0);
		T_CHILD_CHECK(t_sigpipes == 0);
		_exit(0);
	}
	{
		int status = t_wait_status(pid);

		if (WIFSIGNALED(status) && WTERMSIG(status) == SIGPIPE) {
			fail_msg("a write to a closed peer raised SIGPIPE");
		}
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fail_msg("child failed (status 0x%x)", status);
		}
	}
}

/* ------------------------------------------------------------------
 * Bad arguments
 */

static void
test_badinput_recv_negative_maxlength_einval(void **state)
{
	static const int64_t bad[] = { -5, -2, INT64_MIN };
	cqw_conn *a, *b;
	void *p = NULL;
	size_t i;

	(void)state;
	T_RESULT(cqw_pipe(&a, &b, CQW_DUPLEX), 0);
	T_RESULT(cqw_send_bytes(a, "abc", 3), 0);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		T_RESULT(cqw_recv_bytes(b, &p, bad[i]), CQW_EINVAL);
		assert_null(p);
	}
	T_RESULT(cqw_recv_bytes(b, NULL, CQW_NONE), CQW_EINVAL);
	/* Nothing was read: the message is whole, the conn usable. */
	assert_true(cqw_conn_readable(b));
	T_RESULT(cqw_recv_bytes(b, &p, CQW_NONE), 3);
	assert_memory_equal(p, "abc", 3);
	cqw_free(p);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

static void
test_badinput_bad_arguments(void **state)
{
	struct cqw_wait_item item = { 0 };
	uint8_t buf[16];
	cqw_conn *a, *b, *r, *w;
	void *p = NULL;
	int fds[2];

	(void)state;
	/*
	 * Wrapping descriptors: refused, and the descriptor is taken all
	 * the same ("owns fd from now on, also on failure").
	 */
	T_RESULT(cqw_conn_from_fd(&a, -1, CQW_DUPLEX), CQW_EINVAL);
	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	T_RESULT(cqw_conn_from_fd(&a, fds[0], 0), CQW_EINVAL);
	assert_int_equal(fcntl(fds[0], F_GETFD), -1);
	assert_int_equal(errno, EBADF);
	T_RESULT(cqw_conn_from_fd(&a, fds[1], CQW_DUPLEX | 0x1000), CQW_EINVAL);
	assert_int_equal(fcntl(fds[1], F_GETFD), -1);
	/* A descriptor that is not open. */
	T_RESULT(cqw_conn_from_fd(&a, fds[0], CQW_DUPLEX), CQW_EBADF);
	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	close(fds[1]);
	T_RESULT(cqw_conn_from_fd(NULL, fds[0], CQW_DUPLEX), CQW_EINVAL);
	if (fcntl(fds[0], F_GETFD) != -1) {
		close(fds[0]);
		fail_msg("cqw_conn_from_fd(NULL, fd, ...) left fd open");
	}
	T_RESULT(cqw_pipe(NULL, &b, CQW_DUPLEX), CQW_EINVAL);
	T_RESULT(cqw_pipe(&a, &b, 0x1000), CQW_EINVAL);

	/* NULL connections. */
	T_RESULT(cqw_send_bytes(NULL, "x", 1), CQW_EINVAL);
	T_RESULT(cqw_recv_bytes(NULL, &p, CQW_NONE), CQW_EINVAL);
	T_RESULT(cqw_recv_bytes_into(NULL, buf, sizeof(buf), 0, NULL),
		 CQW_EINVAL);
	T_RESULT(cqw_poll(NULL, 0), CQW_EINVAL);
	T_RESULT(cqw_conn_close(NULL), CQW_EINVAL);
	cqw_conn_free(NULL);

	/* Buffers and offsets. */
	T_RESULT(cqw_pipe(&a, &b, CQW_DUPLEX), 0);
	T_RESULT(cqw_send_bytes(a, NULL, 5), CQW_EINVAL);
	T_RESULT(cqw_send_bytes_at(a, "abcdef", 6, -1, CQW_NONE), CQW_EINVAL);
	T_RESULT(cqw_send_bytes_at(a, "abcdef", 6, 7, CQW_NONE), CQW_EINVAL);
	T_RESULT(cqw_send_bytes_at(a, "abcdef", 6, 0, -2), CQW_EINVAL);
	T_RESULT(cqw_send_bytes_at(a, "abcdef", 6, 2, 5), CQW_EINVAL);
	T_RESULT(cqw_send_bytes_at(a, "abcdef", 6, 0, INT64_MAX), CQW_EINVAL);
	T_RESULT(
	    cqw_recv_bytes_into(b, buf, sizeof(buf), sizeof(buf) + 1, NULL),
	    CQW_EINVAL);
	T_RESULT(cqw_recv_bytes_into(b, NULL, 5, 0, NULL), CQW_EINVAL);
	/* None of that sent anything; offset == len sends an empty one. */
	T_RESULT(cqw_poll(b, 0), 0);
	T_RESULT(cqw_send_bytes_at(a, "abcdef", 6, 6, CQW_NONE), 0);
	T_RESULT(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, NULL), 0);

	/* Waiting on nothing sensible. */
	T_RESULT(cqw_wait(NULL, 1, 0), CQW_EINVAL);
	item.conn = NULL;
	item.fd = 1000000; /* not open */
	T_RESULT(cqw_wait(&item, 1, 0), CQW_EBADF);

	/* Closed connections. */
	T_RESULT(cqw_conn_close(b), 0);
	T_RESULT(cqw_conn_close(b), 0);
	T_RESULT(cqw_send_bytes(b, "x", 1), CQW_ECLOSED);
	T_RESULT(cqw_recv_bytes(b, &p, CQW_NONE), CQW_ECLOSED);
	T_RESULT(cqw_recv_bytes_into(b, buf, sizeof(buf), 0, NULL),
		 CQW_ECLOSED);
	T_RESULT(cqw_poll(b, 0), CQW_ECLOSED);
	T_RESULT(cqw_conn_fileno(b), CQW_ECLOSED);
	item.conn = b;
	T_RESULT(cqw_wait(&item, 1, 0), CQW_ECLOSED);
	assert_null(p);
	cqw_conn_free(a);
	cqw_conn_free(b);

	/* Directions. */
	T_RESULT(cqw_pipe(&r, &w, 0), 0);
	T_RESULT(cqw_send_bytes(r, "x", 1), CQW_EREADONLY);
	T_RESULT(cqw_recv_bytes(w, &p, CQW_NONE), CQW_EWRITEONLY);
	T_RESULT(cqw_poll(w, 0), CQW_EWRITEONLY);
	T_RESULT(cqw_send_handle(r, 0), CQW_EREADONLY);
	T_RESULT(cqw_send_handle(w, 0), CQW_ENOTSOCK);
	item.conn = w; /* watched, as Python's wait() does: not an error */
	T_RESULT(cqw_wait(&item, 1, 0), 0);
	cqw_conn_free(r);
	cqw_conn_free(w);

	/* Codes outside the list still have a name and a message. */
	assert_string_equal(cqw_strerror(-99999), "unknown error");
	assert_string_equal(cqw_err_name(-99999), "UNKNOWN");
	assert_string_equal(cqw_err_name(CQW_ETRUNC), "ETRUNC");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_badinput_truncated_header),
		cmocka_unit_test(test_badinput_truncated_payload),
		cmocka_unit_test(test_badinput_clean_close_at_boundary_eof),
		cmocka_unit_test(test_badinput_truncated_async),
		cmocka_unit_test(test_badinput_2gib_header_maxlength_emsgsize),
		cmocka_unit_test(test_badinput_maxlength_boundary),
		cmocka_unit_test(test_badinput_huge_large_frame_truncated),
		cmocka_unit_test(test_badinput_huge_claim_memory_follows_data),
		cmocka_unit_test(test_badinput_negative_length_no_desync),
		cmocka_unit_test(test_badinput_listener_oversized_frame),
		cmocka_unit_test(test_badinput_listener_http_garbage),
		cmocka_unit_test(test_badinput_listener_silent_client_timeout),
		cmocka_unit_test(test_badinput_listener_bad_responses),
		cmocka_unit_test(test_badinput_client_bad_challenges),
		cmocka_unit_test(test_badinput_client_silent_server_timeout),
		cmocka_unit_test(test_badinput_peer_killed_mid_message),
		cmocka_unit_test(test_badinput_write_to_closed_peer_no_sigpipe),
		cmocka_unit_test(test_badinput_recv_negative_maxlength_einval),
		cmocka_unit_test(test_badinput_bad_arguments),
	};

	t_backend_or_skip();
	if (T_ASAN) {
		printf("note: built with ASan: the RLIMIT_AS caps of the "
		       "memory checks are skipped (ASan needs the address "
		       "space); the checks themselves still run\n");
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
