/*
 * CQW_EXCLUSIVE: a connection that may read ahead into its staging
 * buffer. Many small frames then a 4 MiB one then small ones again, and
 * staged frames still count as readable for poll and wait. The receives
 * and the batch send go through the I/O layer of t-conn.h (sync, then
 * loop ops per backend), so the loop and the sync calls share one
 * staging buffer in the loop runs; the sender thread and poll/wait are
 * sync.
 */
#include "t-conn.h"

#include <pthread.h>

/* ------------------------------------------------------------------
 * CQW_EXCLUSIVE and CQW_NO_LARGE_FRAMES
 */

#define T_EXCL_SMALL 2000
#define T_EXCL_LARGE (4u << 20)

static void *
t_thread_send_mixed(void *arg)
{
	struct t_batch_sender *s = arg;
	uint8_t small[64];
	uint8_t *large = malloc(T_EXCL_LARGE);
	uint32_t i;
	int r = 0;

	if (large == NULL) {
		s->result = CQW_ENOMEM;
		return NULL;
	}
	t_pattern_fill(large, T_EXCL_LARGE, 77);
	for (i = 0; i < T_EXCL_SMALL && r == 0; i++) {
		t_pattern_fill(small, i % 61, i);
		r = cqw_send_bytes(s->c, small, i % 61);
	}
	if (r == 0) {
		r = cqw_send_bytes(s->c, large, T_EXCL_LARGE);
	}
	for (i = 0; i < 10 && r == 0; i++) {
		t_pattern_fill(small, i, i + 5000);
		r = cqw_send_bytes(s->c, small, i);
	}
	free(large);
	s->result = r;
	return NULL;
}

/*
 * Many small frames (read ahead), one large one, small ones again. The
 * sender thread uses the sync calls; the receives go through the I/O
 * layer.
 */
static void
test_exclusive_small_then_large(void **state)
{
	static const unsigned flags[] = { CQW_DUPLEX | CQW_EXCLUSIVE,
					  CQW_EXCLUSIVE };
	struct t_batch_sender s;
	uint8_t small[64];
	cqw_conn *a, *b;
	pthread_t th;
	void *p = NULL;
	uint32_t i;
	size_t f;

	(void)state;
	for (f = 0; f < 2; f++) {
		t_pipe(&a, &b, flags[f]);
		s.c = b;
		s.result = 1;
		assert_int_equal(
		    pthread_create(&th, NULL, t_thread_send_mixed, &s), 0);
		for (i = 0; i < T_EXCL_SMALL; i++) {
			T_EXPECT(t_recv_into(a, small, sizeof(small), 0, NULL),
				 i % 61);
			assert_true(t_pattern_check(small, i % 61, i));
		}
		T_EXPECT(t_recv(a, &p, CQW_NONE), T_EXCL_LARGE);
		assert_true(t_pattern_check(p, T_EXCL_LARGE, 77));
		cqw_free(p);
		for (i = 0; i < 10; i++) {
			T_EXPECT(t_recv_into(a, small, sizeof(small), 0, NULL),
				 i);
			assert_true(t_pattern_check(small, i, i + 5000));
		}
		assert_int_equal(pthread_join(th, NULL), 0);
		T_OK(s.result);
		cqw_conn_free(a);
		cqw_conn_free(b);
	}
}

/* Frames read ahead into the staging buffer still count as readable. */
static void
test_exclusive_poll_sees_staged(void **state)
{
	struct cqw_msg m[3] = { { .buf = "a", .len = 1 },
				{ .buf = "bb", .len = 2 },
				{ .buf = "", .len = 0 } };
	struct cqw_wait_item it = { 0 };
	cqw_conn *a, *b;

	(void)state;
	t_pipe(&a, &b, CQW_DUPLEX | CQW_EXCLUSIVE);
	T_OK(t_send_batch(b, m, 3));
	t_recv_str(a, "a");
	it.conn = a;
	T_EXPECT(cqw_poll(a, 0), 1);
	T_EXPECT(cqw_wait(&it, 1, 0), 1);
	assert_int_equal(it.ready, 1);
	t_recv_str(a, "bb");
	T_EXPECT(cqw_poll(a, 0), 1);
	T_EXPECT(cqw_wait(&it, 1, 1000), 1);
	t_recv_str(a, "");
	T_EXPECT(cqw_poll(a, 0), 0);
	T_EXPECT(cqw_wait(&it, 1, 0), 0);
	cqw_conn_free(a);
	cqw_conn_free(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exclusive_small_then_large),
		cmocka_unit_test(test_exclusive_poll_sees_staged),
	};

	t_io_setup();
	return cmocka_run_group_tests(tests, NULL, t_io_teardown);
}
