/*
 * Small helpers shared by the tests: child processes, payload patterns,
 * raw descriptor I/O and clocks. Everything is static inline so that a
 * test includes only what it uses, without warnings for the rest.
 *
 * Children never call cmocka's assertions (a failed assertion would
 * long-jump into the parent's runner inside the child): they check with
 * T_CHILD_CHECK(), which reports and exits non-zero, and the parent
 * asserts the exit status with t_wait_child().
 *
 * On Windows (mingw-w64) the same helpers exist where Windows has the
 * thing (clocks, sleeps, raw writes on a pipe or socket handle, the
 * watchdog, on a timer-queue thread); fork() and wait statuses do not, so
 * t_fork*() and t_wait_*() are POSIX-only, as are the tests that use them
 * (tests/CMakeLists.txt lists those).
 */
#ifndef CQW_T_UTIL_H
#define CQW_T_UTIL_H

/* Include this first: the helpers need POSIX and Linux declarations. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
/* winsock2.h before windows.h, or windows.h brings the old winsock.h. */
#include <winsock2.h>
#include <windows.h>
#include <process.h>
#endif

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#ifndef _WIN32
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "cqwire.h"

#ifdef _WIN32
#define t_getpid() ((int)GetCurrentProcessId())
#else
#define t_getpid() ((int)getpid())
#endif

/* In a forked child: report the failed condition and exit with 1. */
#define T_CHILD_CHECK(cond)                                                    \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "child %d: %s:%d: check failed: %s\n", \
				t_getpid(), __FILE__, __LINE__, #cond);        \
			fflush(stderr);                                        \
			_exit(1);                                              \
		}                                                              \
	} while (0)

#ifndef _WIN32
/*
 * Fork a child that runs fn(arg) and exits with its return value (0 for
 * success). Returns the child's pid in the parent.
 */
static inline pid_t
t_fork_child(int (*fn)(void *arg), void *arg)
{
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* An orphan left by a failed parent must not live forever. */
		signal(SIGALRM, SIG_DFL);
		alarm(30);
		_exit(fn(arg));
	}
	return pid;
}

/*
 * fork(); in the child, crashes kill the child instead of reaching
 * cmocka's handlers (which would go on running tests in it), and an
 * orphan left by a failed parent dies within 30 s.
 */
static inline pid_t
t_fork(void)
{
	static const int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGSYS };
	pid_t pid;
	size_t i;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
			signal(sigs[i], SIG_DFL);
		}
		signal(SIGALRM, SIG_DFL);
		alarm(30);
	}
	return pid;
}
#endif /* !_WIN32 */

/*
 * A peer that runs fn(arg) beside the test and is joined with
 * t_peer_join(), which fails the test unless fn returned 0: a forked
 * child on POSIX (t_fork_child), a thread on Windows, which has no fork.
 * A thread shares the test's memory and connections: give each peer its
 * own arg, and close nothing a peer still uses before joining it.
 */
#ifdef _WIN32
typedef HANDLE t_peer;

struct t__peer_start {
	int (*fn)(void *arg);
	void *arg;
};

static inline unsigned __stdcall t__peer_main(void *p)
{
	struct t__peer_start st = *(struct t__peer_start *)p;

	free(p);
	return (unsigned)st.fn(st.arg);
}

static inline t_peer
t_peer_start(int (*fn)(void *arg), void *arg)
{
	struct t__peer_start *st = malloc(sizeof(*st));
	uintptr_t h;

	assert_non_null(st);
	st->fn = fn;
	st->arg = arg;
	h = _beginthreadex(NULL, 0, t__peer_main, st, 0, NULL);
	assert_true(h != 0);
	return (t_peer)h;
}

static inline void
t_peer_join(t_peer p)
{
	DWORD code = 1;

	assert_int_equal(WaitForSingleObject(p, INFINITE), WAIT_OBJECT_0);
	assert_true(GetExitCodeThread(p, &code));
	CloseHandle(p);
	assert_int_equal(code, 0);
}
#else
typedef pid_t t_peer;
#define t_peer_start(fn, arg) t_fork_child((fn), (arg))
#define t_peer_join(p) t_wait_child(p)
#endif

/*
 * 1 if the comma-separated list have contains name exactly (not as a
 * prefix of another name).
 */
static inline int
t_list_has(const char *have, const char *name, size_t len)
{
	const char *p = have;

	while (p != NULL && *p != '\0') {
		const char *end = strchr(p, ',');
		size_t n = end != NULL ? (size_t)(end - p) : strlen(p);

		if (n == len && strncmp(p, name, len) == 0) {
			return 1;
		}
		p = end != NULL ? end + 1 : NULL;
	}
	return 0;
}

/*
 * Check loop against what the run asked for, and say what is wrong in
 * why[0..cap) (returning 0) if it is not what was asked:
 * - CQW_EXPECT_BACKEND (else CQW_BACKEND unless "auto"): the backend
 *   cqw_loop_backend() reports;
 * - CQW_EXPECT_FEATURES, a comma list: each name must appear in
 *   cqw_loop_features(), each "!name" must not.
 * A run named for a backend or a ring flag set must really be one, or it
 * tests something else under that name.
 */
static inline int
t_loop_is_expected(const cqw_loop *loop, char *why, size_t cap)
{
	const char *want = getenv("CQW_EXPECT_BACKEND");
	const char *feat = getenv("CQW_EXPECT_FEATURES");
	const char *have = cqw_loop_features(loop);
	const char *p;

	if (want == NULL || *want == '\0') {
		want = getenv("CQW_BACKEND");
	}
	if (want != NULL && *want != '\0' && strcmp(want, "auto") != 0 &&
	    strcmp(cqw_loop_backend(loop), want) != 0) {
		snprintf(why, cap,
			 "loop backend is \"%s\", the run expects \"%s\"",
			 cqw_loop_backend(loop), want);
		return 0;
	}
	for (p = feat; p != NULL && *p != '\0';) {
		const char *end = strchr(p, ',');
		size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
		int neg = n > 0 && *p == '!';

		if (n > (size_t)neg &&
		    t_list_has(have, p + neg, n - (size_t)neg) == neg) {
			snprintf(why, cap,
				 "loop features \"%s\" %s \"%.*s\" "
				 "(CQW_EXPECT_FEATURES=%s)",
				 have, neg ? "contain" : "lack",
				 (int)(n - (size_t)neg), p + neg, feat);
			return 0;
		}
		p = end != NULL ? end + 1 : NULL;
	}
	return 1;
}

/*
 * For a suite run once per backend (CQW_BACKEND): exit 77 with the reason
 * when that backend is not built or is refused here (seccomp); exit 1,
 * loudly, when the loop made is not the backend or ring flag set the run
 * is named for (t_loop_is_expected). cqwire promises no SIGPIPE, so keep
 * its default, which would kill.
 */
static inline void
t_backend_or_skip(void)
{
	const char *want = getenv("CQW_BACKEND");
	cqw_loop *loop;
	char why[256];
	int r;

#ifdef SIGPIPE
	signal(SIGPIPE, SIG_DFL);
#endif
	r = cqw_loop_new(&loop, NULL);
	if (r == CQW_ENOSYS || r == CQW_EPERM || r == CQW_EACCES) {
		printf("skip: backend \"%s\" cannot run here: %s\n",
		       want != NULL ? want : "auto", cqw_strerror(r));
		exit(77);
	}
	if (r != 0) {
		fprintf(stderr, "FAIL: cqw_loop_new: %s\n", cqw_err_name(r));
		exit(1);
	}
	if (!t_loop_is_expected(loop, why, sizeof(why))) {
		fprintf(stderr, "FAIL: %s\n", why);
		cqw_loop_free(loop);
		exit(1);
	}
	printf("loop: backend %s, features \"%s\"\n", cqw_loop_backend(loop),
	       cqw_loop_features(loop));
	cqw_loop_free(loop);
}

/*
 * Skip the running test, saying why (STYLE.md: skips carry a reason), in
 * a line that scripts/test.sh parses from ctest's log:
 *   [  SKIP    ] <test>: <reason>
 * Call it from the test function itself: <test> is its name. cmocka's
 * own "[  SKIPPED ] <test>" follows; test.sh fails the run for any skip
 * that is not in its list of allowed ones.
 */
#define T_SKIP(reason)                                                      \
	do {                                                                \
		print_message("[  SKIP    ] %s: %s\n", __func__, (reason)); \
		skip();                                                     \
	} while (0)

#ifndef _WIN32
/* Wait for pid (retrying EINTR); returns its raw wait status. */
static inline int
t_wait_status(pid_t pid)
{
	int status = 0;
	pid_t r;

	do {
		r = waitpid(pid, &status, 0);
	} while (r < 0 && errno == EINTR);
	assert_int_equal(r, pid);
	return status;
}

/* Reap pid and fail the test unless it exited with status 0. */
static inline void
t_wait_child(pid_t pid)
{
	int status = t_wait_status(pid);

	if (!WIFEXITED(status)) {
		fail_msg("child %d died by signal %d", (int)pid,
			 WIFSIGNALED(status) ? WTERMSIG(status) : -1);
	}
	assert_int_equal(WEXITSTATUS(status), 0);
}
#endif /* !_WIN32 */

/* Byte i of the pattern named seed: cheap, and differs per position. */
static inline uint8_t
t_pattern_byte(size_t i, unsigned seed)
{
	return (uint8_t)((i * 131u + (i >> 8) * 7u + seed * 29u) & 0xffu);
}

static inline void
t_pattern_fill(void *buf, size_t len, unsigned seed)
{
	uint8_t *p = buf;
	size_t i;

	for (i = 0; i < len; i++) {
		p[i] = t_pattern_byte(i, seed);
	}
}

/* 1 if buf holds exactly the pattern, else 0. */
static inline int
t_pattern_check(const void *buf, size_t len, unsigned seed)
{
	const uint8_t *p = buf;
	size_t i;

	for (i = 0; i < len; i++) {
		if (p[i] != t_pattern_byte(i, seed)) {
			return 0;
		}
	}
	return 1;
}

#ifdef _WIN32
/* Monotonic milliseconds. */
static inline int64_t
t_now_ms(void)
{
	return (int64_t)GetTickCount64();
}

static inline void
t_sleep_ms(int ms)
{
	Sleep((DWORD)ms);
}

/* 1 if h is a socket, 0 if another handle (a pipe). */
static inline int
t_is_socket(cqw_fd h)
{
	int type = 0, len = (int)sizeof(type);

	return getsockopt((SOCKET)h, SOL_SOCKET, SO_TYPE, (char *)&type,
			  &len) == 0;
}

/*
 * Write all of buf to h with raw system calls: send() on a socket,
 * WriteFile on a pipe handle (one call: a message on a message-mode
 * pipe). The handle may be overlapped and bound to a completion port: the
 * write waits on an event of its own, whose low bit keeps the completion
 * off the port (documented for GetQueuedCompletionStatus). 0 or a
 * negative Windows error.
 */
static inline int
t_write_all(cqw_fd h, const void *buf, size_t len)
{
	const char *p = buf;
	OVERLAPPED ov;
	DWORD done = 0;
	int r = 0;

	if (t_is_socket(h)) {
		while (len > 0) {
			int n = send((SOCKET)h, p,
				     len > INT32_MAX ? INT32_MAX : (int)len, 0);

			if (n == SOCKET_ERROR) {
				return -WSAGetLastError();
			}
			p += n;
			len -= (size_t)n;
		}
		return 0;
	}
	memset(&ov, 0, sizeof(ov));
	ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
	if (ov.hEvent == NULL) {
		return -(int)GetLastError();
	}
	ov.hEvent = (HANDLE)((uintptr_t)ov.hEvent | 1);
	if (!WriteFile((HANDLE)h, p, (DWORD)len, NULL, &ov) &&
	    GetLastError() != ERROR_IO_PENDING) {
		r = -(int)GetLastError();
	} else if (!GetOverlappedResult((HANDLE)h, &ov, &done, TRUE)) {
		r = -(int)GetLastError();
	} else if (done != len) {
		r = -(int)ERROR_WRITE_FAULT;
	}
	CloseHandle((HANDLE)((uintptr_t)ov.hEvent & ~(uintptr_t)1));
	return r;
}
#else
/* Monotonic milliseconds. */
static inline int64_t
t_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void
t_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

/* write() all of buf to fd with raw system calls; 0 or -errno. */
static inline int
t_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	ssize_t r;

	while (len > 0) {
		r = write(fd, p, len);
		if (r < 0) {
			if (errno == EINTR) {
				continue;
			}
			return -errno;
		}
		p += r;
		len -= (size_t)r;
	}
	return 0;
}
#endif /* _WIN32 */

/*
 * Raw descriptors for the tests, the same calls on both platforms:
 * t_os_pipe() an anonymous pipe (h[0] reads, h[1] writes), t_os_close(),
 * t_fd_is_open() whether the process still holds h, and t_read_raw() one
 * read() / recv() / ReadFile of up to cap bytes (on a message-mode pipe:
 * one message; -1 on error).
 */
#ifdef _WIN32
static inline void
t_os_pipe(cqw_fd h[2])
{
	HANDLE r, w;

	assert_true(CreatePipe(&r, &w, NULL, 0));
	h[0] = (cqw_fd)r;
	h[1] = (cqw_fd)w;
}

static inline void
t_os_close(cqw_fd h)
{
	CloseHandle((HANDLE)h);
}

static inline int
t_fd_is_open(cqw_fd h)
{
	DWORD flags;

	return GetHandleInformation((HANDLE)h, &flags) != 0;
}

/* As t_write_all: the read waits on its own event, off any port. */
static inline long long
t_read_raw(cqw_fd h, void *buf, size_t cap)
{
	OVERLAPPED ov;
	DWORD done = 0;
	long long r;

	if (t_is_socket(h)) {
		int n = recv((SOCKET)h, buf, (int)cap, 0);

		return n == SOCKET_ERROR ? -1 : n;
	}
	memset(&ov, 0, sizeof(ov));
	ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
	assert_non_null(ov.hEvent);
	ov.hEvent = (HANDLE)((uintptr_t)ov.hEvent | 1);
	if (!ReadFile((HANDLE)h, buf, (DWORD)cap, NULL, &ov) &&
	    GetLastError() != ERROR_IO_PENDING) {
		r = -1;
	} else if (!GetOverlappedResult((HANDLE)h, &ov, &done, TRUE)) {
		r = -1;
	} else {
		r = (long long)done;
	}
	CloseHandle((HANDLE)((uintptr_t)ov.hEvent & ~(uintptr_t)1));
	return r;
}
#else
static inline void
t_os_pipe(cqw_fd h[2])
{
	assert_int_equal(pipe(h), 0);
}

static inline void
t_os_close(cqw_fd h)
{
	close(h);
}

static inline int
t_fd_is_open(cqw_fd h)
{
	return fcntl(h, F_GETFD) >= 0;
}

static inline long long
t_read_raw(cqw_fd h, void *buf, size_t cap)
{
	return (long long)read(h, buf, cap);
}
#endif

/*
 * A descriptor or handle value this process does not have open. POSIX:
 * one just closed. Windows gives a closed handle's value to the next
 * handle made, at once (the library's own events, inside the call under
 * test), so there it is a value far past any this process makes.
 */
static inline cqw_fd
t_closed_fd(void)
{
#ifdef _WIN32
	return (cqw_fd)0x40000000;
#else
	cqw_fd p[2];

	t_os_pipe(p);
	t_os_close(p[0]);
	t_os_close(p[1]);
	return p[0];
#endif
}

/*
 * 1 when the program runs under wine (ntdll exports wine_get_version
 * there), where a test of behaviour wine does not copy (WINDOWS.md) says
 * so and checks what wine does instead; 0 on Windows and POSIX.
 */
static inline int
t_under_wine(void)
{
#ifdef _WIN32
	HMODULE nt = GetModuleHandleW(L"ntdll.dll");

	return nt != NULL && GetProcAddress(nt, "wine_get_version") != NULL;
#else
	return 0;
#endif
}

/*
 * The prefix of a same-host listener's address for t_unique_name(): a
 * Linux abstract unix socket, or a Windows named pipe (WIRE.md §7).
 */
#ifdef _WIN32
#define T_LOCAL_PREFIX "pipe:\\\\.\\pipe\\"
#else
#define T_LOCAL_PREFIX "unix:@"
#endif

/* A name unique to this process and call, for sockets and files. */
static inline const char *
t_unique_name(char *buf, size_t cap, const char *prefix, const char *tag)
{
	static unsigned counter;

	snprintf(buf, cap, "%scqw-test-%d-%u-%s", prefix, t_getpid(), counter++,
		 tag);
	return buf;
}

/*
 * Both sides of a time bound. A check of "at least lo ms" alone passes a
 * call that never returns until ctest kills the binary minutes later, so
 * a timed call goes
 *	t0 = t_timed_start(hi_ms, "what");
 *	r = the_call(...);
 *	t_timed_check(t0, lo_ms, hi_ms);
 * t_timed_check() fails the test unless lo_ms <= elapsed <= hi_ms (or
 * dt = t_timed_stop(t0) now, t_elapsed_within(dt, lo, hi) later), and
 * a watchdog ends the process (exit 1, saying which call) if the call has
 * not returned hi_ms + 1000 ms after it started. The watchdog runs on a
 * timer thread (SIGEV_THREAD; on Windows a timer-queue timer): no signal
 * reaches the call under test.
 * Upper bounds are generous (machines running the suite are loaded) but
 * finite. One timed call at a time, from one thread.
 */
static const char *t__timed_what;
static int t__timed_hi;

static inline void
t__timed_fail(void)
{
	fprintf(stderr,
		"FAIL: %s did not return within %d ms (watchdog): a call "
		"with a deadline hangs\n",
		t__timed_what != NULL ? t__timed_what : "a timed call",
		t__timed_hi);
	fflush(stderr);
	_exit(1);
}

#ifdef _WIN32
static HANDLE t__timed_timer;

static inline VOID CALLBACK
t__timed_fire(PVOID arg, BOOLEAN timer_fired)
{
	(void)arg;
	(void)timer_fired;
	t__timed_fail();
}

static inline int64_t
t_timed_start(int hi_ms, const char *what)
{
	t__timed_what = what;
	t__timed_hi = hi_ms;
	assert_true(CreateTimerQueueTimer(&t__timed_timer, NULL, t__timed_fire,
					  NULL, (DWORD)hi_ms + 1000, 0,
					  WT_EXECUTEONLYONCE));
	return t_now_ms();
}

/* Disarm the watchdog (waiting for a callback under way); ms since t0. */
static inline int64_t
t_timed_stop(int64_t t0)
{
	int64_t dt = t_now_ms() - t0;

	assert_true(
	    DeleteTimerQueueTimer(NULL, t__timed_timer, INVALID_HANDLE_VALUE));
	t__timed_timer = NULL;
	return dt;
}
#else
static inline void
t__timed_fire(union sigval v)
{
	(void)v;
	t__timed_fail();
}

/* The process's watchdog timer, made on first use. */
static inline timer_t *
t__timed_timer(void)
{
	static timer_t id;
	static int made;
	struct sigevent ev;

	if (!made) {
		memset(&ev, 0, sizeof(ev));
		ev.sigev_notify = SIGEV_THREAD;
		ev.sigev_notify_function = t__timed_fire;
		assert_int_equal(timer_create(CLOCK_MONOTONIC, &ev, &id), 0);
		made = 1;
	}
	return &id;
}

static inline int64_t
t_timed_start(int hi_ms, const char *what)
{
	struct itimerspec its;
	int ms = hi_ms + 1000;

	memset(&its, 0, sizeof(its));
	its.it_value.tv_sec = ms / 1000;
	its.it_value.tv_nsec = (long)(ms % 1000) * 1000000L;
	t__timed_what = what;
	t__timed_hi = hi_ms;
	assert_int_equal(timer_settime(*t__timed_timer(), 0, &its, NULL), 0);
	return t_now_ms();
}

/* Disarm the watchdog; the ms since t0. */
static inline int64_t
t_timed_stop(int64_t t0)
{
	struct itimerspec off;
	int64_t dt = t_now_ms() - t0;

	memset(&off, 0, sizeof(off));
	assert_int_equal(timer_settime(*t__timed_timer(), 0, &off, NULL), 0);
	return dt;
}
#endif /* _WIN32 */

/* Fail unless lo_ms <= dt <= hi_ms. */
static inline void
t_elapsed_within(int64_t dt, int lo_ms, int hi_ms)
{
	if (dt < lo_ms || dt > hi_ms) {
		fail_msg("%s returned after %lld ms, want %d..%d ms",
			 t__timed_what != NULL ? t__timed_what : "timed call",
			 (long long)dt, lo_ms, hi_ms);
	}
}

static inline void
t_timed_check(int64_t t0, int lo_ms, int hi_ms)
{
	t_elapsed_within(t_timed_stop(t0), lo_ms, hi_ms);
}

#endif
