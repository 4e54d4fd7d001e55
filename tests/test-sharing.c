/*
 * Descriptors shared between processes: a frame-exact connection never
 * consumes a byte it does not hand up, also when it times out or the
 * buffer is too small, so that another reader of the same pipe or socket
 * (a forked worker, a Python process) finds the next frame whole; and a
 * listener inherited by a child stays the parent's.
 *
 * Every body runs over a pipe and over a socket pair. Children check with
 * T_CHILD_CHECK() and exit; the parent asserts their status.
 */
#include "t-util.h"
#include "t-loop.h"

#include <sys/ioctl.h>
#include <sys/stat.h>

static const unsigned t_kinds[] = { 0, CQW_DUPLEX };

static const char *
t_kind_name(unsigned flags)
{
	return flags ? "socket" : "pipe";
}

/* Bytes queued on fd (FIONREAD). */
static int
t_queued(int fd)
{
	int n = -1;

	assert_int_equal(ioctl(fd, FIONREAD, &n), 0);
	return n;
}

/* A header promising len bytes, raw. */
static void
t_raw_header(int fd, uint32_t len)
{
	uint8_t h[4] = { (uint8_t)(len >> 24), (uint8_t)(len >> 16),
			 (uint8_t)(len >> 8), (uint8_t)len };

	assert_int_equal(t_write_all(fd, h, sizeof(h)), 0);
}

/*
 * The review's case: a header promising 20 bytes and 10 of them written.
 * A batch with a timeout returns 0 at its deadline and leaves all 14
 * bytes queued; a second reader of the same descriptor then gets the
 * whole frame once the rest is written.
 */
static void
test_sharing_batch_timeout_consumes_nothing(void **state)
{
	uint8_t payload[20], bufs[4][32], got[32];
	struct cqw_msg m[4];
	cqw_conn *rx, *tx, *other;
	int64_t t0, ms;
	size_t i, k;
	int wfd, rfd;

	(void)state;
	t_pattern_fill(payload, sizeof(payload), 7);
	for (i = 0; i < 2; i++) {
		print_message("  over a %s\n", t_kind_name(t_kinds[i]));
		T_RESULT(cqw_pipe(&rx, &tx, t_kinds[i]), 0);
		wfd = (int)cqw_conn_fileno(tx);
		rfd = (int)cqw_conn_fileno(rx);
		t_raw_header(wfd, sizeof(payload));
		assert_int_equal(t_write_all(wfd, payload, 10), 0);
		for (k = 0; k < 4; k++) {
			m[k].buf = bufs[k];
			m[k].cap = sizeof(bufs[k]);
		}
		t0 = t_now_ms();
		T_RESULT(cqw_recv_batch(rx, m, 4, 100), 0);
		ms = t_now_ms() - t0;
		assert_in_range(ms, 90, 2000);
		assert_int_equal(t_queued(rfd), 14);
		/* Another reader of the same open descriptor. */
		T_RESULT(cqw_conn_from_fd(&other, dup(rfd), CQW_READABLE), 0);
		assert_int_equal(t_write_all(wfd, payload + 10, 10), 0);
		T_RESULT(cqw_recv_bytes_into(other, got, sizeof(got), 0, NULL),
			 sizeof(payload));
		assert_memory_equal(got, payload, sizeof(payload));
		assert_int_equal(t_queued(rfd), 0);
		cqw_conn_free(other);
		cqw_conn_free(rx);
		cqw_conn_free(tx);
	}
}

/*
 * A frame that does not fit: CQW_ETOOSHORT with its size, and nothing
 * consumed. A reader in another process, with room, gets it whole; the
 * first reader then gets the next one.
 */
struct t_short_arg {
	cqw_conn *rx;
};

static int
t_short_child(void *arg)
{
	struct t_short_arg *a = arg;
	uint8_t small[10];
	size_t needed = 0;

	T_CHILD_CHECK(cqw_recv_bytes_into(a->rx, small, sizeof(small), 0,
					  &needed) == CQW_ETOOSHORT);
	T_CHILD_CHECK(needed == 100);
	return 0;
}

static void
test_sharing_too_short_leaves_frame_for_others(void **state)
{
	uint8_t big[100], got[200];
	struct t_short_arg a;
	cqw_conn *rx, *tx;
	size_t i;
	int rfd;

	(void)state;
	t_pattern_fill(big, sizeof(big), 3);
	for (i = 0; i < 2; i++) {
		print_message("  over a %s\n", t_kind_name(t_kinds[i]));
		T_RESULT(cqw_pipe(&rx, &tx, t_kinds[i]), 0);
		rfd = (int)cqw_conn_fileno(rx);
		T_RESULT(cqw_send_bytes(tx, big, sizeof(big)), 0);
		T_RESULT(cqw_send_bytes(tx, "next", 4), 0);
		a.rx = rx;
		t_wait_child(t_fork_child(t_short_child, &a));
		/* Nothing was taken: 4 + 100 + 4 + 4 bytes still queued. */
		assert_int_equal(t_queued(rfd), 112);
		T_RESULT(cqw_recv_bytes_into(rx, got, sizeof(got), 0, NULL),
			 sizeof(big));
		assert_memory_equal(got, big, sizeof(big));
		T_RESULT(cqw_recv_bytes_into(rx, got, sizeof(got), 0, NULL), 4);
		assert_memory_equal(got, "next", 4);
		cqw_conn_free(rx);
		cqw_conn_free(tx);
	}
}

/* A too-short receive in this process, then the same frame with room. */
static void
test_sharing_too_short_then_room(void **state)
{
	uint8_t msg[64], got[64];
	size_t i, needed;
	cqw_conn *rx, *tx;

	(void)state;
	t_pattern_fill(msg, sizeof(msg), 11);
	for (i = 0; i < 2; i++) {
		T_RESULT(cqw_pipe(&rx, &tx, t_kinds[i]), 0);
		T_RESULT(cqw_send_bytes(tx, msg, sizeof(msg)), 0);
		needed = 0;
		T_RESULT(cqw_recv_bytes_into(rx, got, 63, 0, &needed),
			 CQW_ETOOSHORT);
		assert_int_equal(needed, sizeof(msg));
		T_RESULT(cqw_recv_bytes_into(rx, got, sizeof(got), 0, NULL),
			 sizeof(msg));
		assert_memory_equal(got, msg, sizeof(msg));
		cqw_conn_free(rx);
		cqw_conn_free(tx);
	}
}

static int
t_listener_child(void *arg)
{
	/* A prefork worker that exits: its copy goes, the path stays. */
	cqw_listener_free(arg);
	return 0;
}

/* Only the process that bound a unix path unlinks it. */
static void
test_sharing_listener_child_leaves_path(void **state)
{
	char path[128], addr[160];
	cqw_listener *l;
	cqw_conn *c, *s;
	struct stat st;

	(void)state;
	t_unique_name(path, sizeof(path), "/tmp/", "listener");
	snprintf(addr, sizeof(addr), "unix:%s", path);
	T_RESULT(cqw_listen(&l, addr, NULL, 4), 0);
	t_wait_child(t_fork_child(t_listener_child, l));
	assert_int_equal(stat(path, &st), 0);
	T_RESULT(cqw_connect(&c, addr, NULL), 0);
	T_RESULT(cqw_accept(l, &s, 1000), 0);
	T_RESULT(cqw_send_bytes(c, "hi", 2), 0);
	T_RESULT(cqw_recv_bytes_into(s, addr, sizeof(addr), 0, NULL), 2);
	cqw_conn_free(c);
	cqw_conn_free(s);
	cqw_listener_free(l);
	/* The creator's close does unlink. */
	assert_int_equal(stat(path, &st), -1);
	assert_int_equal(errno, ENOENT);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sharing_batch_timeout_consumes_nothing),
		cmocka_unit_test(
		    test_sharing_too_short_leaves_frame_for_others),
		cmocka_unit_test(test_sharing_too_short_then_room),
		cmocka_unit_test(test_sharing_listener_child_leaves_path),
	};

	signal(SIGPIPE, SIG_DFL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
