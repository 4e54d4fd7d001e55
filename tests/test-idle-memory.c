/*
 * What an idle connection costs on a loop (issue 9, item 4): 1,000
 * connection pairs each move messages both ways (one at a time, a burst
 * gathered into one write, one larger than a connection's own stage),
 * then every connection waits with one receive submitted. The library's
 * heap in use per waiting connection must be at most 4 KiB, so that
 * 100,000 idle workers fit in 400 MiB. Bytes in use are glibc's count
 * (mallinfo2()), so the figure is exact and the same on every run.
 *
 * The loop keeps a bounded pool of the blocks connections borrow while
 * they move data: a fixed cost per loop, not per connection. So the pairs
 * come in two halves, and the assertion is on the second half, which
 * finds the pool filled already; the total with the pool is printed too.
 */
#include "t-util.h"
#include "t-loop.h"

#if defined(__GLIBC__)
#include <malloc.h>
#include <sys/resource.h>
#define T_HAVE_MALLINFO2 1
#endif

#define PAIRS 1000
#define IDLE_MAX 4096  /* bytes per idle connection */
#define KEPT_MAX 16384 /* bytes still in use once all is freed */
#define SMALL 64
#define BURST 16
#define LARGE 8192 /* more than a connection's own stage */
/* Per side: three round trips, a burst, one large message. */
#define MSGS (3 + BURST + 1)

struct pair {
	cqw_conn *c[2];
	struct cqw_op idle[2]; /* the receive each end waits in */
	uint8_t idle_buf[2][SMALL];
};

static struct pair *pairs;
static uint8_t tx[MSGS][LARGE], rx[2][MSGS][LARGE];
static struct cqw_op ops[2][2 * MSGS];

#ifdef T_HAVE_MALLINFO2
static size_t
heap_in_use(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}
#endif

static size_t
msg_len(int i)
{
	return i == MSGS - 1 ? LARGE : SMALL;
}

/* Reap n ops, each of which must succeed. */
static void
reap_ok(cqw_loop *loop, int n)
{
	struct cqw_op *done[4 * MSGS];
	int i;

	assert_true(n <= 4 * MSGS);
	t_reap_exact(loop, done, n);
	for (i = 0; i < n; i++) {
		if (done[i]->kind == CQW_OP_SEND) {
			T_RESULT(done[i]->result, 0);
		} else {
			assert_true(done[i]->result >= 0);
		}
	}
}

/* Submit on both ends: sends i in [from, to), and their receives. */
static void
exchange(cqw_loop *loop, struct pair *p, int from, int to)
{
	int side, i;

	for (side = 0; side < 2; side++) {
		for (i = from; i < to; i++) {
			t_op(&ops[side][i], CQW_OP_SEND, p->c[side], tx[i],
			     msg_len(i), NULL);
			T_RESULT(cqw_submit(loop, &ops[side][i]), 0);
			t_op(&ops[side][MSGS + i], CQW_OP_RECV, p->c[!side],
			     rx[!side][i], LARGE, NULL);
			T_RESULT(cqw_submit(loop, &ops[side][MSGS + i]), 0);
		}
	}
	reap_ok(loop, 4 * (to - from));
	for (side = 0; side < 2; side++) {
		for (i = from; i < to; i++) {
			T_RESULT(ops[side][MSGS + i].result, msg_len(i));
			assert_true(t_pattern_check(rx[!side][i], msg_len(i),
						    (unsigned)i));
		}
	}
}

/* Open pairs [from, to), use them, and leave each end with a receive. */
static void
open_idle(cqw_loop *loop, unsigned flags, int from, int to)
{
	struct pair *p;
	int k, i;

	for (k = from; k < to; k++) {
		p = &pairs[k];
		T_RESULT(cqw_pipe(&p->c[0], &p->c[1], CQW_DUPLEX | flags), 0);
		for (i = 0; i < 3; i++) {
			exchange(loop, p, i, i + 1);
		}
		exchange(loop, p, 3, 3 + BURST);
		exchange(loop, p, MSGS - 1, MSGS);
		for (i = 0; i < 2; i++) {
			t_op(&p->idle[i], CQW_OP_RECV, p->c[i], p->idle_buf[i],
			     SMALL, NULL);
			T_RESULT(cqw_submit(loop, &p->idle[i]), 0);
		}
		T_RESULT(cqw_flush(loop), 0);
	}
}

static void
close_all(cqw_loop *loop)
{
	struct cqw_op *done[64];
	int k, n, left = 2 * PAIRS;

	for (k = 0; k < PAIRS; k++) {
		cqw_conn_free(pairs[k].c[0]);
		cqw_conn_free(pairs[k].c[1]);
	}
	/* Closing cancelled the idle receives: each completes once. */
	while (left > 0) {
		n = cqw_reap(loop, done, 64, 0);
		assert_true(n > 0);
		for (k = 0; k < n; k++) {
			T_RESULT(done[k]->result, CQW_ECANCELED);
		}
		left -= n;
	}
}

static void
idle_memory(unsigned flags, const char *what)
{
	size_t base = 0, half = 0, full = 0, after = 0;
	int countable = 0, i;
	cqw_loop *loop;

#ifdef T_HAVE_MALLINFO2
	/* The count must see allocations (a sanitizer's allocator hides them). */
	void *probe;

	base = heap_in_use();
	probe = malloc(1 << 20);
	assert_non_null(probe);
	countable = heap_in_use() >= base + (1 << 20);
	free(probe);
#endif
	for (i = 0; i < MSGS; i++) {
		t_pattern_fill(tx[i], msg_len(i), (unsigned)i);
	}
	pairs = calloc(PAIRS, sizeof(*pairs));
	assert_non_null(pairs);
#ifdef T_HAVE_MALLINFO2
	base = heap_in_use();
#endif
	loop = t_loop_new();
	open_idle(loop, flags, 0, PAIRS / 2);
#ifdef T_HAVE_MALLINFO2
	half = heap_in_use();
#endif
	open_idle(loop, flags, PAIRS / 2, PAIRS);
#ifdef T_HAVE_MALLINFO2
	full = heap_in_use();
#endif
	if (countable) {
		printf("%s on %s: %zu bytes per idle connection (%d "
		       "connections; %zu with the loop and its pool)\n",
		       what, cqw_loop_backend(loop), (full - half) / PAIRS,
		       PAIRS, (full - base) / (2 * PAIRS));
		assert_true((full - half) / PAIRS <= IDLE_MAX);
	}
	close_all(loop);
	cqw_loop_free(loop);
	free(pairs);
	pairs = NULL;
#ifdef T_HAVE_MALLINFO2
	after = heap_in_use();
#endif
	if (!countable) {
		skip(); /* the traffic ran; its bytes cannot be counted here */
	}
	/*
	 * Everything went back: no send block (26 KiB) or stage (64 KiB)
	 * outlives its loop. (glibc counts what its thread cache keeps of
	 * freed small chunks as in use: a few hundred bytes here.)
	 */
	assert_true(after < base + KEPT_MAX);
}

static void
test_idle_memory_frame_exact(void **state)
{
	(void)state;
	idle_memory(0, "frame-exact");
}

static void
test_idle_memory_exclusive(void **state)
{
	(void)state;
	idle_memory(CQW_EXCLUSIVE, "exclusive");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_idle_memory_frame_exact),
		cmocka_unit_test(test_idle_memory_exclusive),
	};
#ifdef T_HAVE_MALLINFO2
	struct rlimit rl;

	/* Two descriptors a pair, and the loop's. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    rl.rlim_cur < 2 * PAIRS + 64) {
		rl.rlim_cur = rl.rlim_max;
		if (rl.rlim_cur < 2 * PAIRS + 64 ||
		    setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			printf(
			    "skip: %d descriptors needed, the limit is %llu\n",
			    2 * PAIRS + 64, (unsigned long long)rl.rlim_max);
			return 77;
		}
	}
#endif
	t_backend_or_skip();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
