/*
 * Listener and Client without authentication (after CPython's
 * _TestListener, _TestListenerClient): binding an address in use (unix
 * path, abstract, TCP), the bound address, connect/accept on every
 * address family, a client gone before accept (issue 14725), accept's
 * timeout and a closed listener. Sync only: runs once.
 *
 * On Windows the same-host address is a named pipe (T_LOCAL_PREFIX, where
 * Linux uses an abstract socket), the client gone before accept is a
 * thread (the pipe's ERROR_NO_DATA case), and the unix path tests are
 * left out (no unix sockets there).
 */
#include "t-conn.h"

#ifdef _WIN32
#include <pthread.h>
#else
#include <fcntl.h>
#endif

/* ------------------------------------------------------------------
 * Listener / Client
 */

/* cqw_listen(address) must fail with want (and leave nothing open). */
static void
t_listen_fails(const char *address, int want)
{
	cqw_listener *l = NULL;
	int r = cqw_listen(&l, address, NULL, 1);

	if (r == 0) {
		cqw_listener_free(l);
	}
	T_EXPECT(r, want);
}

static void
t_multiple_bind(const char *address)
{
	cqw_listener *l1 = NULL;
	cqw_conn *c, *s;
	const char *bound;
	int r;

	r = cqw_listen(&l1, address, NULL, 0);
	if (r != 0) {
		fail_msg("listen(%s): %s", address, cqw_err_name(r));
	}
	bound = cqw_listener_address(l1);
	assert_non_null(bound);
	if (strncmp(bound, "pipe:", 5) == 0) {
		/* A set of pipe instances: no one handle (src/win/sock.c). */
		T_EXPECT(cqw_listener_fileno(l1), CQW_EOPNOTSUPP);
	} else {
		assert_true(cqw_listener_fileno(l1) >= 0);
	}
	if (strncmp(bound, "pipe:", 5) == 0 && t_under_wine()) {
		/*
		 * wine: FILE_FLAG_FIRST_PIPE_INSTANCE is ignored (WINDOWS.md),
		 * so a second listener on the name is made; Windows refuses
		 * it (checked when not under wine).
		 */
		cqw_listener *l2 = NULL;

		if (cqw_listen(&l2, bound, NULL, 0) == 0) {
			cqw_listener_free(l2);
		}
	} else {
		t_listen_fails(bound, CQW_EADDRINUSE);
	}
	/* The failed attempt left the first listener working. */
	T_OK(cqw_connect(&c, bound, NULL));
	T_OK(cqw_accept(l1, &s, 5000));
	t_send_str(c, "still there");
	t_recv_str(s, "still there");
	cqw_conn_free(c);
	cqw_conn_free(s);
	T_OK(cqw_listener_close(l1));
	T_OK(cqw_listener_close(l1));
	cqw_listener_free(l1);
}

#ifndef _WIN32
static void
test_listener_multiple_bind_unix(void **state)
{
	cqw_listener *l;
	char addr[128];
	const char *path;

	(void)state;
	path = t_unique_name(addr, sizeof(addr), "unix:/tmp/", "sock") + 5;
	t_multiple_bind(addr);
	/* close() unlinked the path: binding again works. */
	assert_true(access(path, F_OK) != 0 && errno == ENOENT);
	T_OK(cqw_listen(&l, addr, NULL, 1));
	assert_string_equal(cqw_listener_address(l), addr);
	/* A bare path names the same socket. */
	t_listen_fails(path, CQW_EADDRINUSE);
	cqw_listener_free(l);
	assert_true(access(path, F_OK) != 0);
}
#endif

static void
test_listener_multiple_bind_abstract(void **state)
{
	char addr[128];

	(void)state;
	t_multiple_bind(
	    t_unique_name(addr, sizeof(addr), T_LOCAL_PREFIX, "abs"));
}

static void
test_listener_multiple_bind_tcp(void **state)
{
	cqw_listener *l;

	(void)state;
	if (cqw_listen(&l, "tcp:127.0.0.1:0", NULL, 1) != 0) {
		T_SKIP("no IPv4 loopback here");
	}
	assert_true(strncmp(cqw_listener_address(l), "tcp:127.0.0.1:", 14) ==
		    0);
	assert_string_not_equal(cqw_listener_address(l), "tcp:127.0.0.1:0");
	cqw_listener_free(l);
	t_multiple_bind("tcp:127.0.0.1:0");
}

/* test_listener_client + test_issue16955 for one address. */
static void
t_listener_client(const char *address)
{
	cqw_listener *l;
	cqw_conn *c, *s;

	T_OK(cqw_listen(&l, address, NULL, 1));
	/* The backlog completes the connect before accept(). */
	T_OK(cqw_connect(&c, cqw_listener_address(l), NULL));
	T_OK(cqw_accept(l, &s, 5000));
	assert_true(cqw_conn_readable(s) && cqw_conn_writable(s));
	T_EXPECT(cqw_poll(c, 0), 0);
	t_send_str(s, "hello");
	T_EXPECT(cqw_poll(c, 1000), 1);
	t_recv_str(c, "hello");
	t_send_str(c, "world");
	t_recv_str(s, "world");
	cqw_conn_free(c);
	T_EXPECT(cqw_recv_bytes(s, &(void *){ NULL }, CQW_NONE), CQW_EOF);
	cqw_conn_free(s);
	cqw_listener_free(l);
}

#ifndef _WIN32
static void
test_listener_client_unix(void **state)
{
	char addr[128];

	(void)state;
	t_listener_client(t_unique_name(addr, sizeof(addr), "unix:/tmp/", "s"));
}
#endif

static void
test_listener_client_abstract(void **state)
{
	char addr[128];
	cqw_listener *l;

	(void)state;
	t_unique_name(addr, sizeof(addr), T_LOCAL_PREFIX, "abstract");
	/* The bound address comes back as given. */
	T_OK(cqw_listen(&l, addr, NULL, 1));
	assert_string_equal(cqw_listener_address(l), addr);
	cqw_listener_free(l);
	t_listener_client(addr);
}

static void
test_listener_client_tcp(void **state)
{
	(void)state;
	if (!t_have_tcp()) {
		T_SKIP("no IPv4 loopback here");
	}
	t_listener_client("tcp:127.0.0.1:0");
}

#ifndef _WIN32
/* A unix path that exists (any file) is in use, as for Python. */
static void
test_listener_existing_file(void **state)
{
	char addr[128];
	const char *path;
	int fd;

	(void)state;
	path = t_unique_name(addr, sizeof(addr), "unix:/tmp/", "file") + 5;
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	t_listen_fails(addr, CQW_EADDRINUSE);
	/* And the failed listener did not remove what was there. */
	assert_int_equal(access(path, F_OK), 0);
	unlink(path);
}
#endif

static void
test_listener_client_tcp6(void **state)
{
	cqw_listener *l = NULL;

	(void)state;
	if (cqw_listen(&l, "tcp:[::1]:0", NULL, 1) != 0) {
		T_SKIP("no IPv6 loopback here");
	}
	assert_true(strncmp(cqw_listener_address(l), "tcp:[::1]:", 10) == 0);
	cqw_listener_free(l);
	t_listener_client("tcp:[::1]:0");
}

#ifdef _WIN32
static void *
t_thread_connect_send_exit(void *arg)
{
	return (void *)(intptr_t)t_child_connect_send_exit(arg);
}
#endif

/* Issue 14725: the client is gone before accept(); its data is not. */
static void
test_listener_issue14725(void **state)
{
	char addr[128];
	cqw_listener *l;
	cqw_conn *s;
#ifdef _WIN32
	pthread_t th;
	void *rc;
#else
	pid_t pid;
#endif

	(void)state;
#ifdef _WIN32
	/* The pipe's instance sees the client connect, write, close. */
	t_unique_name(addr, sizeof(addr), T_LOCAL_PREFIX, "14725");
	T_OK(cqw_listen(&l, addr, NULL, 1));
	assert_int_equal(
	    pthread_create(&th, NULL, t_thread_connect_send_exit, addr), 0);
	assert_int_equal(pthread_join(th, &rc), 0);
	assert_int_equal((intptr_t)rc, 0);
#else
	t_unique_name(addr, sizeof(addr), "unix:/tmp/", "14725");
	T_OK(cqw_listen(&l, addr, NULL, 1));
	pid = t_fork_child(t_child_connect_send_exit, addr);
	t_wait_child(pid);
#endif
	T_OK(cqw_accept(l, &s, 5000));
	t_recv_str(s, "hello");
	T_EXPECT(cqw_recv_bytes(s, &(void *){ NULL }, CQW_NONE), CQW_EOF);
	cqw_conn_free(s);
	cqw_listener_free(l);
}

static void
test_listener_accept_timeout_and_close(void **state)
{
	char addr[128];
	cqw_listener *l;
	cqw_conn *s = NULL;
	int64_t t0;
	int r;

	(void)state;
	T_OK(cqw_listen(&l,
			t_unique_name(addr, sizeof(addr), T_LOCAL_PREFIX, "to"),
			NULL, 1));
	T_EXPECT(cqw_accept(l, &s, 0), CQW_ETIMEDOUT);
	t0 = t_timed_start(150 + 2000, "cqw_accept(150 ms)");
	r = cqw_accept(l, &s, 150);
	t_timed_check(t0, 100, 150 + 2000);
	T_EXPECT(r, CQW_ETIMEDOUT);
	assert_null(s);
	T_OK(cqw_listener_close(l));
	T_EXPECT(cqw_accept(l, &s, 0), CQW_ECLOSED);
	T_EXPECT(cqw_listener_fileno(l), CQW_ECLOSED);
	cqw_listener_free(l);
	/* Nobody listens there any more. */
	assert_true(cqw_connect(&s, addr, NULL) < 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#ifndef _WIN32
		/* Unix socket paths. */
		cmocka_unit_test(test_listener_multiple_bind_unix),
#endif
		cmocka_unit_test(test_listener_multiple_bind_abstract),
		cmocka_unit_test(test_listener_multiple_bind_tcp),
#ifndef _WIN32
		cmocka_unit_test(test_listener_client_unix),
#endif
		cmocka_unit_test(test_listener_client_abstract),
		cmocka_unit_test(test_listener_client_tcp),
#ifndef _WIN32
		cmocka_unit_test(test_listener_existing_file),
#endif
		cmocka_unit_test(test_listener_client_tcp6),
		cmocka_unit_test(test_listener_issue14725),
		cmocka_unit_test(test_listener_accept_timeout_and_close),
	};

	/*
	 * SIGPIPE keeps its default action: the library must not let a
	 * write to a closed peer kill the process. (Windows has no SIGPIPE.)
	 */
#ifdef SIGPIPE
	signal(SIGPIPE, SIG_DFL);
#endif
	return cmocka_run_group_tests(tests, NULL, NULL);
}
