/*
 * Handles (multiprocessing.reduction's send_handle/recv_handle, after
 * test_fd_transfer, test_large_fd_transfer, test_missing_fd_transfer):
 * a descriptor to a child, one at a high number, a handle between
 * frames, and a plain byte with no descriptor attached. Handles have no
 * loop op: runs once, with the sync calls.
 */
#include "t-conn.h"

#include <fcntl.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------
 * Handles (test_fd_transfer, test_large_fd_transfer, missing fd)
 */

struct t_fd_child {
	cqw_conn *c;
	const char *text;
};

static int
t_child_write_received_fd(void *arg)
{
	struct t_fd_child *f = arg;
	int fd = -1;

	T_CHILD_CHECK(cqw_recv_handle(f->c, &fd) == 0);
	T_CHILD_CHECK(fd >= 0);
	T_CHILD_CHECK(t_write_all(fd, f->text, strlen(f->text)) == 0);
	close(fd);
	T_CHILD_CHECK(cqw_send_bytes(f->c, "done", 4) == 0);
	return 0;
}

/* Send fd (or its copy at number at, if at >= 0) to a child that writes. */
static void
t_fd_transfer(int at)
{
	struct t_fd_child f = { .text = "written by the child" };
	char path[128], got[64];
	cqw_conn *a, *b;
	int fd, sent;
	ssize_t n;
	pid_t pid;

	t_unique_name(path, sizeof(path), "/tmp/", "fd");
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	sent = fd;
	if (at >= 0) {
		assert_true(fcntl(at, F_GETFD) < 0); /* must be free */
		assert_int_equal(dup2(fd, at), at);
		sent = at;
	}
	t_pipe(&a, &b, CQW_DUPLEX);
	f.c = b;
	pid = t_fork_child(t_child_write_received_fd, &f);
	cqw_conn_free(b);
	T_OK(cqw_send_handle(a, sent));
	if (at >= 0) {
		close(at);
	}
	t_recv_str(a, "done");
	t_wait_child(pid);
	n = pread(fd, got, sizeof(got), 0);
	assert_int_equal(n, strlen(f.text));
	assert_memory_equal(got, f.text, (size_t)n);
	close(fd);
	unlink(path);
	cqw_conn_free(a);
}

static void
test_handle_fd_transfer(void **state)
{
	(void)state;
	t_fd_transfer(-1);
}

static void
test_handle_large_fd_transfer(void **state)
{
	(void)state;
	t_fd_transfer(300);
}

/* Handles after frames: frame-exact reads leave the handle's byte. */
static void
test_handle_after_frames(void **state)
{
	struct stat s1, s2;
	cqw_conn *a, *b;
	int p[2], fd = -1;
	char byte = 0;

	(void)state;
	assert_int_equal(pipe(p), 0);
	t_pipe(&a, &b, CQW_DUPLEX);
	t_send_str(a, "first");
	T_OK(cqw_send_handle(a, p[1]));
	t_send_str(a, "after");
	t_recv_str(b, "first");
	T_OK(cqw_recv_handle(b, &fd));
	assert_true(fd >= 0 && fd != p[1]);
	assert_int_equal(fstat(fd, &s1), 0);
	assert_int_equal(fstat(p[1], &s2), 0);
	assert_true(s1.st_ino == s2.st_ino && s1.st_dev == s2.st_dev);
	t_recv_str(b, "after");
	/* The new descriptor is the caller's, and close-on-exec is fine. */
	assert_int_equal(write(fd, "!", 1), 1);
	close(fd);
	close(p[1]);
	assert_int_equal(read(p[0], &byte, 1), 1);
	assert_int_equal(byte, '!');
	close(p[0]);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

/* test_missing_fd_transfer: a plain byte, no descriptor attached. */
static void
test_handle_missing_fd(void **state)
{
	cqw_conn *a, *b;
	int fd = -1, r;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX);
	t_raw(a, "\x01", 1);
	r = cqw_recv_handle(b, &fd);
	if (r != CQW_ENOHANDLE && r != CQW_EPROTO) {
		fail_msg("recv_handle: %s, want ENOHANDLE or EPROTO",
			 cqw_err_name(r));
	}
	assert_int_equal(fd, -1);
	/* The peer gone: end of file. */
	cqw_conn_free(a);
	T_EXPECT(cqw_recv_handle(b, &fd), CQW_EOF);
	cqw_conn_free(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handle_fd_transfer),
		cmocka_unit_test(test_handle_large_fd_transfer),
		cmocka_unit_test(test_handle_after_frames),
		cmocka_unit_test(test_handle_missing_fd),
	};

	/*
	 * SIGPIPE keeps its default action: the library must not let a
	 * write to a closed peer kill the process.
	 */
	signal(SIGPIPE, SIG_DFL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
