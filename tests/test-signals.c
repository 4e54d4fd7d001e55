/*
 * The signal check (cqw_set_signal_check): a real SIGALRM, from a thread
 * that sends it to the test's thread every 50 ms (handler installed
 * without SA_RESTART, so blocking system calls return EINTR), during
 * blocking calls of the sync API and of the poll loop's reap.
 *
 * - A check that returns 1 makes the call return CQW_EINTR soon after the
 *   first signal (at least the first signal's delay, at most 2 s).
 * - A check that returns 0 keeps it waiting; it completes normally when
 *   the data (or peer) comes, which the thread sends once the check was
 *   asked twice (two signals met the call and were retried).
 * - No check: as before, the call waits and completes.
 *
 * A call that would never come back (EINTR retried for ever) is rescued
 * after 5 s by the same thread doing what the call waits for, so that the
 * test fails on its result and time instead of hanging. Receives are
 * interrupted at a frame boundary only (nothing consumed yet).
 */
#include "t-util.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/un.h>

#define T_RESULT(expr, want)                                               \
	do {                                                               \
		int64_t t_r_ = (int64_t)(expr);                            \
		if (t_r_ != (int64_t)(want)) {                             \
			fail_msg("%s = %lld (%s), expected %lld", #expr,   \
				 (long long)t_r_,                          \
				 t_r_ < 0 ? cqw_err_name((int)t_r_) : "-", \
				 (long long)(want));                       \
		}                                                          \
	} while (0)

#define FIRST_MS 100 /* the first signal */
#define PERIOD_MS 50 /* then one every */
#define RESCUE_MS 5000
#define STOP_MAX_MS 4000 /* a stop comes back within this */
#define GOES_ON 2	 /* go on: the data comes after this many asks */

static atomic_int alarms; /* lock-free: safe in a handler */

static void
on_alarm(int sig)
{
	(void)sig;
	atomic_fetch_add(&alarms, 1);
}

/* What the check says, and how often it was asked. */
struct check {
	int stop;
	atomic_int asked;
};

static int
check_fn(void *arg)
{
	struct check *k = arg;

	atomic_fetch_add(&k->asked, 1);
	return k->stop;
}

static void
check_init(struct check *k, int stop)
{
	k->stop = stop;
	atomic_init(&k->asked, 0);
}

/*
 * The thread that pokes the test's thread with SIGALRM and does act(arg)
 * (writes the awaited data, connects, accepts) once *gate reaches gate_n,
 * or after RESCUE_MS.
 */
struct poker {
	pthread_t target;
	pthread_t th;
	atomic_int *gate;
	int gate_n;
	void (*act)(void *arg);
	void *arg;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stop;
	int acted;
};

static void *
poke(void *arg)
{
	struct poker *p = arg;
	int64_t start = t_now_ms(), next = start + FIRST_MS;
	struct timespec until;
	int64_t now;

	pthread_mutex_lock(&p->mu);
	while (!p->stop) {
		now = t_now_ms();
		if (!p->acted && p->act != NULL &&
		    ((p->gate != NULL && atomic_load(p->gate) >= p->gate_n) ||
		     now >= start + RESCUE_MS)) {
			p->acted = 1;
			pthread_mutex_unlock(&p->mu);
			p->act(p->arg);
			pthread_mutex_lock(&p->mu);
			continue;
		}
		if (now >= next) {
			pthread_kill(p->target, SIGALRM);
			next = now + PERIOD_MS;
		}
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 10 * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&p->cv, &p->mu, &until);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* gate NULL: act only as a rescue. */
static void
poker_start(struct poker *p, atomic_int *gate, int gate_n, void (*act)(void *),
	    void *arg)
{
	memset(p, 0, sizeof(*p));
	p->target = pthread_self();
	p->gate = gate;
	p->gate_n = gate_n;
	p->act = act;
	p->arg = arg;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	assert_int_equal(pthread_create(&p->th, NULL, poke, p), 0);
}

/* Stop poking; returns whether act ran. */
static int
poker_stop(struct poker *p)
{
	int acted;

	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	pthread_join(p->th, NULL);
	acted = p->acted;
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	return acted;
}

static int
setup(void **state)
{
	struct sigaction sa;

	(void)state;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0; /* no SA_RESTART: blocking calls see EINTR */
	return sigaction(SIGALRM, &sa, NULL);
}

static int
teardown_one(void **state)
{
	(void)state;
	cqw_set_signal_check(NULL, NULL);
	return 0;
}

/* ------------------------------------------------------------------
 * Receive on an empty pipe or socket
 */

static const char msg[] = "after the signals";

static void
act_send(void *arg)
{
	cqw_conn *w = arg;

	/* The raw frame, so that this thread never shares the channel. */
	uint8_t frame[4 + sizeof(msg)];

	frame[0] = frame[1] = frame[2] = 0;
	frame[3] = (uint8_t)sizeof(msg);
	memcpy(frame + 4, msg, sizeof(msg));
	if (t_write_all(cqw_conn_fileno(w), frame, sizeof(frame)) != 0) {
		abort();
	}
}

static void
expect_msg(cqw_conn *r)
{
	void *buf = NULL;

	T_RESULT(cqw_recv_bytes(r, &buf, CQW_NONE), sizeof(msg));
	assert_memory_equal(buf, msg, sizeof(msg));
	cqw_free(buf);
}

/* The check says stop: CQW_EINTR, and the connection still works. */
static void
recv_stop(unsigned flags)
{
	struct check k;
	struct poker p;
	cqw_conn *r, *w;
	void *buf = NULL;
	int64_t t0, dt, got;

	T_RESULT(cqw_pipe(&r, &w, flags), 0);
	check_init(&k, 1);
	cqw_set_signal_check(check_fn, &k);
	poker_start(&p, NULL, 0, act_send, w);
	t0 = t_now_ms();
	got = cqw_recv_bytes(r, &buf, CQW_NONE);
	dt = t_now_ms() - t0;
	assert_false(poker_stop(&p));
	print_message("recv: %s after %lld ms, check asked %d\n",
		      got < 0 ? cqw_err_name((int)got) : "data", (long long)dt,
		      atomic_load(&k.asked));
	T_RESULT(got, CQW_EINTR);
	assert_true(dt >= FIRST_MS - 10 && dt <= STOP_MAX_MS);
	assert_int_equal(atomic_load(&k.asked), 1);
	/* Nothing was lost: the next frame comes whole. */
	act_send(w);
	expect_msg(r);
	cqw_conn_free(r);
	cqw_conn_free(w);
}

/* The check says go on (or there is none): the data comes after 400 ms. */
static void
recv_goes_on(unsigned flags, int with_check)
{
	struct check k;
	struct poker p;
	cqw_conn *r, *w;
	int64_t t0, dt;
	int before = atomic_load(&alarms);

	T_RESULT(cqw_pipe(&r, &w, flags), 0);
	check_init(&k, 0);
	if (with_check) {
		cqw_set_signal_check(check_fn, &k);
		poker_start(&p, &k.asked, GOES_ON, act_send, w);
	} else {
		/* Signals handled meanwhile; most met the call. */
		poker_start(&p, &alarms, before + GOES_ON + 1, act_send, w);
	}
	t0 = t_now_ms();
	expect_msg(r);
	dt = t_now_ms() - t0;
	assert_true(poker_stop(&p));
	print_message("recv: data after %lld ms, %d signals, check asked %d\n",
		      (long long)dt, atomic_load(&alarms) - before,
		      atomic_load(&k.asked));
	assert_true(dt >= FIRST_MS + PERIOD_MS - 10 && dt < RESCUE_MS);
	assert_true(atomic_load(&alarms) - before >= GOES_ON);
	if (with_check) {
		assert_true(atomic_load(&k.asked) >= GOES_ON);
	}
	cqw_conn_free(r);
	cqw_conn_free(w);
}

static void
test_recv_pipe_stop(void **state)
{
	(void)state;
	recv_stop(0);
}

static void
test_recv_socket_stop(void **state)
{
	(void)state;
	recv_stop(CQW_DUPLEX);
}

static void
test_recv_pipe_goes_on(void **state)
{
	(void)state;
	recv_goes_on(0, 1);
}

static void
test_recv_socket_goes_on(void **state)
{
	(void)state;
	recv_goes_on(CQW_DUPLEX, 1);
}

static void
test_recv_no_check(void **state)
{
	(void)state;
	recv_goes_on(0, 0);
	recv_goes_on(CQW_DUPLEX, 0);
}

/* ------------------------------------------------------------------
 * cqw_poll and cqw_wait with a long timeout
 */

static void
waits(int use_wait, int stop)
{
	struct check k;
	struct cqw_wait_item item;
	struct poker p;
	cqw_conn *r, *w;
	int64_t t0, dt;
	int got;

	T_RESULT(cqw_pipe(&r, &w, 0), 0);
	check_init(&k, stop);
	cqw_set_signal_check(check_fn, &k);
	poker_start(&p, stop ? NULL : &k.asked, GOES_ON, act_send, w);
	t0 = t_now_ms();
	if (use_wait) {
		memset(&item, 0, sizeof(item));
		item.conn = r;
		got = cqw_wait(&item, 1, 10000);
	} else {
		got = cqw_poll(r, 10000);
	}
	dt = t_now_ms() - t0;
	poker_stop(&p);
	print_message("%s: %d (%s) after %lld ms, check asked %d\n",
		      use_wait ? "wait" : "poll", got,
		      got < 0 ? cqw_err_name(got) : "-", (long long)dt,
		      atomic_load(&k.asked));
	if (stop) {
		T_RESULT(got, CQW_EINTR);
		assert_true(dt >= FIRST_MS - 10 && dt <= STOP_MAX_MS);
	} else {
		T_RESULT(got, 1);
		assert_true(dt >= FIRST_MS + PERIOD_MS - 10 && dt < RESCUE_MS);
		assert_true(atomic_load(&k.asked) >= GOES_ON);
	}
	cqw_conn_free(r);
	cqw_conn_free(w);
}

static void
test_poll_stop(void **state)
{
	(void)state;
	waits(0, 1);
}

static void
test_poll_goes_on(void **state)
{
	(void)state;
	waits(0, 0);
}

static void
test_wait_stop(void **state)
{
	(void)state;
	waits(1, 1);
}

static void
test_wait_goes_on(void **state)
{
	(void)state;
	waits(1, 0);
}

/* ------------------------------------------------------------------
 * cqw_accept and cqw_connect
 */

static void
unix_address(char *buf, size_t cap)
{
	char path[108];
	const char *dir = getenv("TMPDIR");
	char prefix[80];

	snprintf(prefix, sizeof(prefix), "%s/", dir != NULL ? dir : "/tmp");
	t_unique_name(path, sizeof(path), prefix, "sig.sock");
	snprintf(buf, cap, "unix:%s", path);
}

/* A raw non-blocking client of address ("unix:/path"): fd, or -1. */
static int
raw_connect(const char *address, int nonblock)
{
	struct sockaddr_un sun;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(address + 5) >= sizeof(sun.sun_path)) {
		return -1;
	}
	memcpy(sun.sun_path, address + 5, strlen(address + 5));
	fd = socket(AF_UNIX,
		    SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0),
		    0);
	if (fd < 0) {
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

struct peer {
	const char *address;
	cqw_listener *l;
	int fds[16];
	int nfds;
};

static void
act_connect(void *arg)
{
	struct peer *pe = arg;

	pe->fds[pe->nfds++] = raw_connect(pe->address, 0);
}

static void
test_accept(void **state)
{
	struct check k;
	struct peer pe;
	struct poker p;
	char address[160];
	cqw_listener *l;
	cqw_conn *c = NULL;
	int64_t t0, dt;
	int stop, r, i;

	(void)state;
	unix_address(address, sizeof(address));
	T_RESULT(cqw_listen(&l, address, NULL, 4), 0);
	for (stop = 1; stop >= 0; stop--) {
		memset(&pe, 0, sizeof(pe));
		pe.address = address;
		check_init(&k, stop);
		cqw_set_signal_check(check_fn, &k);
		poker_start(&p, stop ? NULL : &k.asked, GOES_ON, act_connect,
			    &pe);
		t0 = t_now_ms();
		r = cqw_accept(l, &c, 10000);
		dt = t_now_ms() - t0;
		poker_stop(&p);
		print_message("accept (check %d): %s after %lld ms\n", stop,
			      r < 0 ? cqw_err_name(r) : "ok", (long long)dt);
		if (stop) {
			T_RESULT(r, CQW_EINTR);
			assert_true(dt >= FIRST_MS - 10 && dt <= STOP_MAX_MS);
		} else {
			T_RESULT(r, 0);
			assert_true(dt >= FIRST_MS + PERIOD_MS - 10 &&
				    dt < RESCUE_MS);
			assert_true(atomic_load(&k.asked) >= GOES_ON);
			cqw_conn_free(c);
		}
		for (i = 0; i < pe.nfds; i++) {
			if (pe.fds[i] >= 0) {
				close(pe.fds[i]);
			}
		}
	}
	cqw_listener_free(l);
}

static void
act_accept_all(void *arg)
{
	struct peer *pe = arg;
	int lfd = cqw_listener_fileno(pe->l), fd;

	struct pollfd pfd = { .fd = lfd, .events = POLLIN };

	/* Take what is queued, never waiting. */
	while (pe->nfds < 16 && poll(&pfd, 1, 0) == 1 &&
	       (fd = accept4(lfd, NULL, NULL, 0)) >= 0) {
		pe->fds[pe->nfds++] = fd;
	}
}

/*
 * A unix connect sleeps while the listener's backlog is full. Interrupted
 * with the check saying stop: CQW_EINTR (the socket closed, nothing half
 * connected); saying go on: it connects once the listener accepts.
 */
static void
test_connect(void **state)
{
	struct check k;
	struct peer pe;
	struct poker p;
	char address[160];
	int queued[16], nqueued, stop, r, i;
	cqw_listener *l;
	cqw_conn *c = NULL;
	int64_t t0, dt;

	(void)state;
	unix_address(address, sizeof(address));
	T_RESULT(cqw_listen(&l, address, NULL, 1), 0);
	for (stop = 1; stop >= 0; stop--) {
		/* Fill the backlog with clients nobody accepts. */
		for (nqueued = 0; nqueued < 16; nqueued++) {
			queued[nqueued] = raw_connect(address, 1);
			if (queued[nqueued] < 0) {
				break;
			}
		}
		assert_true(nqueued > 0 && nqueued < 16);
		memset(&pe, 0, sizeof(pe));
		pe.l = l;
		check_init(&k, stop);
		cqw_set_signal_check(check_fn, &k);
		poker_start(&p, stop ? NULL : &k.asked, GOES_ON, act_accept_all,
			    &pe);
		t0 = t_now_ms();
		r = cqw_connect(&c, address, NULL);
		dt = t_now_ms() - t0;
		poker_stop(&p);
		print_message(
		    "connect (check %d): %s after %lld ms, %d queued\n", stop,
		    r < 0 ? cqw_err_name(r) : "ok", (long long)dt, nqueued);
		if (stop) {
			T_RESULT(r, CQW_EINTR);
			assert_true(dt >= FIRST_MS - 10 && dt <= STOP_MAX_MS);
		} else {
			T_RESULT(r, 0);
			assert_true(dt >= FIRST_MS + PERIOD_MS - 10 &&
				    dt < RESCUE_MS);
			assert_true(atomic_load(&k.asked) >= GOES_ON);
			/* Really connected, not left half-way by the signal. */
			T_RESULT(cqw_send_bytes(c, "hi", 2), 0);
			cqw_conn_free(c);
		}
		for (i = 0; i < nqueued; i++) {
			close(queued[i]);
		}
		act_accept_all(&pe); /* what connected since */
		for (i = 0; i < pe.nfds; i++) {
			close(pe.fds[i]);
		}
	}
	cqw_listener_free(l);
}

/* ------------------------------------------------------------------
 * The poll backend's wait, under cqw_reap
 */

static void
test_reap_poll(void **state)
{
	struct cqw_loop_opts opts = { .backend = CQW_BACKEND_POLL };
	struct cqw_op op, *done[1];
	struct check k;
	struct poker p;
	char buf[64];
	cqw_loop *loop;
	cqw_conn *r, *w;
	int64_t t0, dt;
	int stop, got;

	(void)state;
	T_RESULT(cqw_loop_new(&loop, &opts), 0);
	T_RESULT(cqw_pipe(&r, &w, 0), 0);
	memset(&op, 0, sizeof(op));
	op.kind = CQW_OP_RECV;
	op.conn = r;
	op.buf = buf;
	op.len = sizeof(buf);
	T_RESULT(cqw_submit(loop, &op), 0);
	for (stop = 1; stop >= 0; stop--) {
		check_init(&k, stop);
		cqw_set_signal_check(check_fn, &k);
		poker_start(&p, stop ? NULL : &k.asked, GOES_ON, act_send, w);
		t0 = t_now_ms();
		got = cqw_reap(loop, done, 1, 10000);
		dt = t_now_ms() - t0;
		poker_stop(&p);
		print_message("reap (check %d): %d (%s) after %lld ms\n", stop,
			      got, got < 0 ? cqw_err_name(got) : "-",
			      (long long)dt);
		if (stop) {
			/* The receive stays submitted: nothing lost. */
			T_RESULT(got, CQW_EINTR);
			assert_true(dt >= FIRST_MS - 10 && dt <= STOP_MAX_MS);
		} else {
			T_RESULT(got, 1);
			assert_ptr_equal(done[0], &op);
			T_RESULT(op.result, sizeof(msg));
			assert_memory_equal(buf, msg, sizeof(msg));
			assert_true(dt >= FIRST_MS + PERIOD_MS - 10 &&
				    dt < RESCUE_MS);
			assert_true(atomic_load(&k.asked) >= GOES_ON);
		}
	}
	cqw_conn_free(r);
	cqw_conn_free(w);
	cqw_loop_free(loop);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_recv_pipe_stop, teardown_one),
		cmocka_unit_test_teardown(test_recv_socket_stop, teardown_one),
		cmocka_unit_test_teardown(test_recv_pipe_goes_on, teardown_one),
		cmocka_unit_test_teardown(test_recv_socket_goes_on,
					  teardown_one),
		cmocka_unit_test_teardown(test_recv_no_check, teardown_one),
		cmocka_unit_test_teardown(test_poll_stop, teardown_one),
		cmocka_unit_test_teardown(test_poll_goes_on, teardown_one),
		cmocka_unit_test_teardown(test_wait_stop, teardown_one),
		cmocka_unit_test_teardown(test_wait_goes_on, teardown_one),
		cmocka_unit_test_teardown(test_accept, teardown_one),
		cmocka_unit_test_teardown(test_connect, teardown_one),
		cmocka_unit_test_teardown(test_reap_poll, teardown_one),
	};

	signal(SIGPIPE, SIG_DFL);
	return cmocka_run_group_tests(tests, setup, NULL);
}
