/*
 * Descriptors exhausted (EMFILE). With RLIMIT_NOFILE lowered and the
 * table filled up: cqw_accept() returns CQW_EMFILE promptly instead of
 * waiting out its timeout, the listener stays usable, and the client that
 * was waiting is accepted (not lost) once a descriptor is free again, and
 * with nobody waiting it waits out its timeout as usual;
 * cqw_pipe(), cqw_loop_new() (each backend) and cqw_connect() fail
 * cleanly with a few descriptors left, leaking none (/proc/self/fd is
 * counted before and after).
 *
 * Each case runs in a forked child, so that the lowered limit and the
 * filler descriptors die with it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cqwire.h"
#include "t-util.h"

#define T_FILL_MAX 256

static int
t_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (d == NULL) {
		return -1;
	}
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] != '.') {
			n++;
		}
	}
	closedir(d);
	return n - 1; /* the directory's own */
}

/*
 * In a child: lower the limit to what is open now plus a little, then
 * fill every slot but `spare` with copies of /dev/null. Returns how many
 * fillers were opened (their numbers in fill[]).
 */
static int
t_exhaust(int *fill, int spare)
{
	struct rlimit rl;
	int n = 0, fd, open_now = t_count_fds();

	T_CHILD_CHECK(open_now > 0);
	rl.rlim_cur = rl.rlim_max = (rlim_t)open_now + 32;
	T_CHILD_CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
	while (n < T_FILL_MAX && (fd = open("/dev/null", O_RDONLY)) >= 0) {
		fill[n++] = fd;
	}
	T_CHILD_CHECK(errno == EMFILE);
	while (spare-- > 0 && n > 0) {
		close(fill[--n]);
	}
	return n;
}

/* 1 if fd turns readable within ms. */
static int
t_wait_readable_fd(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int r;

	do {
		r = poll(&p, 1, ms);
	} while (r < 0 && errno == EINTR);
	return r == 1;
}

/* Run fn in a child; fail unless it exits 0. */
static void
t_in_child(int (*fn)(void *), void *arg)
{
	pid_t pid = t_fork_child(fn, arg);

	t_wait_child(pid);
}

/* The client: connect, send one message, wait for the reply. */
static int
t_client(const char *address)
{
	cqw_conn *c = NULL;
	char buf[16];
	int64_t n;

	T_CHILD_CHECK(cqw_connect(&c, address, NULL) == 0);
	T_CHILD_CHECK(cqw_send_bytes(c, "still here", 10) == 0);
	n = cqw_recv_bytes_into(c, buf, sizeof(buf), 0, NULL);
	T_CHILD_CHECK(n == 2 && memcmp(buf, "ok", 2) == 0);
	cqw_conn_free(c);
	return 0;
}

struct t_accept_case {
	const char *address; /* unix:@... or tcp:127.0.0.1:0 */
};

static int
t_accept_child(void *arg)
{
	struct t_accept_case *ac = arg;
	int fill[T_FILL_MAX], nfill, i, before, tries;
	cqw_listener *l = NULL;
	cqw_conn *c = NULL;
	const char *bound;
	char buf[16];
	int64_t t0, dt, n, worst = 0;
	pid_t client;
	int r;

	T_CHILD_CHECK(cqw_listen(&l, ac->address, NULL, 4) == 0);
	bound = cqw_listener_address(l);
	T_CHILD_CHECK(bound != NULL);
	/* The client is its own process, with its own descriptor table. */
	fflush(stderr);
	client = fork();
	T_CHILD_CHECK(client >= 0);
	if (client == 0) {
		alarm(20);
		_exit(t_client(bound));
	}
	/* Let its connection land in the backlog: readable listener. */
	T_CHILD_CHECK(t_wait_readable_fd(cqw_listener_fileno(l), 5000));
	nfill = t_exhaust(fill, 0);
	before = t_count_fds();
	/*
	 * A connection is pending and no descriptor is free: the accept
	 * fails at once with EMFILE (it must not wait out 1 s, nor spin
	 * on a listener that stays readable).
	 */
	for (tries = 0; tries < 3; tries++) {
		t0 = t_now_ms();
		r = cqw_accept(l, &c, 1000);
		dt = t_now_ms() - t0;
		T_CHILD_CHECK(r == CQW_EMFILE);
		T_CHILD_CHECK(dt >= 0 && dt < 500);
		worst = dt > worst ? dt : worst;
		T_CHILD_CHECK(t_count_fds() == before);
	}
	fprintf(stderr,
		"[  EMFILE  ] %s: 3 accepts with a client waiting and no "
		"descriptor free: CQW_EMFILE in at most %lld ms (timeout "
		"1000 ms)\n",
		ac->address, (long long)worst);
	/* With timeout 0 too. */
	T_CHILD_CHECK(cqw_accept(l, &c, 0) == CQW_EMFILE);
	/* Free descriptors: the waiting client is accepted, not lost. */
	for (i = 0; i < nfill; i++) {
		close(fill[i]);
	}
	t0 = t_now_ms();
	T_CHILD_CHECK(cqw_accept(l, &c, 5000) == 0);
	T_CHILD_CHECK(t_now_ms() - t0 < 1000);
	fprintf(stderr,
		"[  EMFILE  ] %s: after closing the fillers the waiting "
		"client was accepted in %lld ms and its message read\n",
		ac->address, (long long)(t_now_ms() - t0));
	n = cqw_recv_bytes_into(c, buf, sizeof(buf), 0, NULL);
	T_CHILD_CHECK(n == 10 && memcmp(buf, "still here", 10) == 0);
	T_CHILD_CHECK(cqw_send_bytes(c, "ok", 2) == 0);
	cqw_conn_free(c);
	cqw_listener_free(l);
	T_CHILD_CHECK(waitpid(client, &r, 0) == client);
	T_CHILD_CHECK(WIFEXITED(r) && WEXITSTATUS(r) == 0);
	return 0;
}

static void
test_fault_emfile_accept_unix(void **state)
{
	char addr[108];
	struct t_accept_case ac = {
		t_unique_name(addr, sizeof(addr), "unix:@", "emfile"),
	};

	(void)state;
	t_in_child(t_accept_child, &ac);
}

static void
test_fault_emfile_accept_tcp(void **state)
{
	struct t_accept_case ac = { "tcp:127.0.0.1:0" };

	(void)state;
	t_in_child(t_accept_child, &ac);
}

/*
 * With 0..5 descriptors left: each call either works (and its objects
 * free every descriptor they took) or fails with CQW_EMFILE, leaving
 * the table as it was.
 */
struct t_tally {
	int ok, emfile;
};

static int
t_exhausted_calls(void *arg)
{
	static const enum cqw_backend backends[] = { CQW_BACKEND_POLL,
						     CQW_BACKEND_URING,
						     CQW_BACKEND_AUTO };
	int fill[T_FILL_MAX], nfill, spare, before, i, r;
	int *report = arg;
	struct t_tally t = { 0, 0 };
	char addr[108], idle_addr[108];
	cqw_listener *l = NULL, *idle = NULL;

	(void)report;
	/* A listener to connect to, made while descriptors are plenty. */
	t_unique_name(addr, sizeof(addr), "unix:@", "emfile-c");
	T_CHILD_CHECK(cqw_listen(&l, addr, NULL, 64) == 0);
	/* And one nobody connects to. */
	t_unique_name(idle_addr, sizeof(idle_addr), "unix:@", "emfile-i");
	T_CHILD_CHECK(cqw_listen(&idle, idle_addr, NULL, 1) == 0);
	for (spare = 0; spare <= 5; spare++) {
		cqw_conn *a = NULL, *b = NULL, *c = NULL;
		int64_t t0, dt;

		nfill = t_exhaust(fill, spare);
		before = t_count_fds();
		/* No client waiting: the accept waits out its timeout. */
		t0 = t_now_ms();
		r = cqw_accept(idle, &c, 100);
		dt = t_now_ms() - t0;
		T_CHILD_CHECK(r == CQW_ETIMEDOUT);
		T_CHILD_CHECK(dt >= 99 && dt < 600);
		T_CHILD_CHECK(t_count_fds() == before);
		for (i = 0; i < 2; i++) {
			r = cqw_pipe(&a, &b, i ? 0 : CQW_DUPLEX);
			T_CHILD_CHECK(r == 0 || r == CQW_EMFILE);
			if (r == 0) {
				t.ok++;
				cqw_conn_free(a);
				cqw_conn_free(b);
			} else {
				t.emfile++;
			}
			T_CHILD_CHECK(t_count_fds() == before);
		}
		for (i = 0; i < 3; i++) {
			struct cqw_loop_opts o = { .backend = backends[i] };
			cqw_loop *loop = NULL;

			r = cqw_loop_new(&loop, &o);
			/* A ring this kernel or sandbox refuses: ENOSYS/EPERM. */
			T_CHILD_CHECK(r == 0 || r == CQW_EMFILE ||
				      (backends[i] == CQW_BACKEND_URING &&
				       (r == CQW_ENOSYS || r == CQW_EPERM)));
			if (r == 0) {
				t.ok++;
				cqw_loop_free(loop);
			} else if (r == CQW_EMFILE) {
				t.emfile++;
			}
			T_CHILD_CHECK(t_count_fds() == before);
		}
		r = cqw_connect(&c, addr, NULL);
		T_CHILD_CHECK(r == 0 || r == CQW_EMFILE);
		if (r == 0) {
			t.ok++;
			cqw_conn_free(c);
		} else {
			t.emfile++;
		}
		T_CHILD_CHECK(t_count_fds() == before);
		for (i = 0; i < nfill; i++) {
			close(fill[i]);
		}
	}
	cqw_listener_free(l);
	cqw_listener_free(idle);
	/* Both outcomes must have happened, or the case proved nothing. */
	T_CHILD_CHECK(t.ok > 0 && t.emfile > 0);
	fprintf(stderr,
		"[  EMFILE  ] 6 limits x 6 calls: %d worked, %d "
		"CQW_EMFILE, no descriptor leaked\n",
		t.ok, t.emfile);
	return 0;
}

static void
test_fault_emfile_pipe_loop_connect(void **state)
{
	(void)state;
	t_in_child(t_exhausted_calls, NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fault_emfile_accept_unix),
		cmocka_unit_test(test_fault_emfile_accept_tcp),
		cmocka_unit_test(test_fault_emfile_pipe_loop_connect),
	};

	signal(SIGPIPE, SIG_DFL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
