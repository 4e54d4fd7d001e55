/*
 * Small helpers shared by the tests: child processes, payload patterns,
 * raw descriptor I/O and clocks. Everything is static inline so that a
 * test includes only what it uses, without warnings for the rest.
 *
 * Children never call cmocka's assertions (a failed assertion would
 * long-jump into the parent's runner inside the child): they check with
 * T_CHILD_CHECK(), which reports and exits non-zero, and the parent
 * asserts the exit status with t_wait_child().
 */
#ifndef CQW_T_UTIL_H
#define CQW_T_UTIL_H

/* Include this first: the helpers need POSIX and Linux declarations. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cqwire.h"

/* In a forked child: report the failed condition and exit with 1. */
#define T_CHILD_CHECK(cond)                                                    \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "child %d: %s:%d: check failed: %s\n", \
				(int)getpid(), __FILE__, __LINE__, #cond);     \
			fflush(stderr);                                        \
			_exit(1);                                              \
		}                                                              \
	} while (0)

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

/*
 * For a suite run once per backend (CQW_BACKEND): exit 77 with the reason
 * when that backend is not built or is refused here (seccomp); cqwire
 * promises no SIGPIPE, so keep its default, which would kill.
 */
static inline void
t_backend_or_skip(void)
{
	const char *want = getenv("CQW_BACKEND");
	cqw_loop *loop;
	int r;

	signal(SIGPIPE, SIG_DFL);
	r = cqw_loop_new(&loop, NULL);
	if (r == CQW_ENOSYS || r == CQW_EPERM || r == CQW_EACCES) {
		printf("skip: backend \"%s\" cannot run here: %s\n",
		       want != NULL ? want : "auto", cqw_strerror(r));
		exit(77);
	}
	if (r == 0) {
		cqw_loop_free(loop);
	}
}

/* Skip the running test, saying why (STYLE.md: skips carry a reason). */
#define T_SKIP(reason)                                        \
	do {                                                  \
		print_message("[  SKIP    ] %s\n", (reason)); \
		skip();                                       \
	} while (0)

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

/* A name unique to this process and call, for sockets and files. */
static inline const char *
t_unique_name(char *buf, size_t cap, const char *prefix, const char *tag)
{
	static unsigned counter;

	snprintf(buf, cap, "%scqw-test-%d-%u-%s", prefix, (int)getpid(),
		 counter++, tag);
	return buf;
}

#endif
