/*
 * The poll backend on epoll: the hazards epoll adds to poll(2). An
 * interest list keyed on open files, not descriptor numbers, survives a
 * close when another copy of the file lives (a forked child), forgets a
 * registration silently when the last copy goes, and is shared with a
 * child after fork(). Here: numbers closed and reused between waits, a
 * receive and a send waiting on one descriptor, the child's loop running
 * beside the parent's, and the features it reports.
 *
 * Run on the backend CQW_BACKEND names (poll).
 */
#include "t-util.h"
#include "t-loop.h"

#include <fcntl.h>
#include <sys/socket.h>

/* A connection on one end of a fresh socket pair; the other end raw. */
static cqw_conn *
t_pair(int *peer)
{
	cqw_conn *c;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
			 0);
	T_RESULT(cqw_conn_from_fd(&c, sv[0], CQW_DUPLEX), 0);
	*peer = sv[1];
	return c;
}

/* One framed message from the raw end (4-byte big-endian length). */
static void
t_send_raw(int fd, const char *msg)
{
	uint32_t n = (uint32_t)strlen(msg);
	unsigned char hdr[4] = { (unsigned char)(n >> 24),
				 (unsigned char)(n >> 16),
				 (unsigned char)(n >> 8), (unsigned char)n };

	t_write_all(fd, hdr, 4);
	t_write_all(fd, msg, n);
}

/* A receive on c that has to wait (the loop registers c), then msg. */
static void
t_recv_waited(cqw_loop *loop, cqw_conn *c, int peer, const char *msg)
{
	struct cqw_op r, *done[4];
	char buf[64];

	t_op(&r, CQW_OP_RECV, c, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &r), 0);
	T_RESULT(cqw_flush(loop), 0);
	T_RESULT(cqw_reap(loop, done, 4, 0), 0); /* waiting: nothing there */
	t_send_raw(peer, msg);
	t_reap_one(loop, &r);
	T_RESULT(r.result, (int64_t)strlen(msg));
	assert_memory_equal(buf, msg, strlen(msg));
}

/*
 * Read the frame of total bytes that send s (on the loop) is writing to
 * peer, reaping whenever the socket runs dry, until s completed once.
 */
static void
t_drain_send(cqw_loop *loop, struct cqw_op *s, int peer, size_t total)
{
	static unsigned char sink[1 << 16];
	struct cqw_op *done[4];
	size_t got = 0;
	int sent = 0, k;

	while (!sent || got < total) {
		ssize_t n = recv(peer, sink, sizeof(sink), MSG_DONTWAIT);

		if (n > 0) {
			got += (size_t)n;
			continue;
		}
		assert_true(n < 0 && errno == EAGAIN);
		k = cqw_reap(loop, done, 4, 1);
		assert_true(k == 0 || k == 1);
		if (k == 1) {
			assert_ptr_equal(done[0], s);
			assert_false(sent);
			sent = 1;
		}
	}
	T_RESULT(got, total);
	T_RESULT(s->result, 0);
}

/* Put fd's file under number want (the number a closed one had). */
static int
t_renumber(int fd, int want)
{
	if (fd == want) {
		return fd;
	}
	assert_int_equal(dup3(fd, want, O_CLOEXEC), want);
	close(fd);
	return want;
}

/*
 * The loop registered a descriptor; it is closed (the registration goes
 * with the last copy of the file) and its number comes back as another
 * socket. A receive there must be registered anew, not taken for the old
 * one: it would wait forever.
 */
static void
test_poll_epoll_number_reused_after_close(void **state)
{
	cqw_loop *loop;
	cqw_conn *a, *b;
	int pa, pb, num;

	(void)state;
	loop = t_loop_new();
	a = t_pair(&pa);
	num = (int)cqw_conn_fileno(a);
	t_recv_waited(loop, a, pa, "first");
	cqw_conn_free(a); /* detached and closed between waits */
	close(pa);
	b = t_pair(&pb);
	T_RESULT(t_renumber((int)cqw_conn_fileno(b), num), num);
	cqw_conn_free(b);
	/* The same number under a new file, wrapped anew. */
	{
		int sv[2];

		assert_int_equal(
		    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
		t_renumber(sv[0], num);
		T_RESULT(cqw_conn_from_fd(&b, num, CQW_DUPLEX), 0);
		pb = sv[1];
	}
	t_recv_waited(loop, b, pb, "second");
	t_recv_waited(loop, b, pb, "third");
	cqw_conn_free(b);
	close(pb);
	cqw_loop_free(loop);
}

/*
 * As above, but a forked child keeps a copy of the old file, so epoll
 * keeps its registration under the old number, out of reach of any
 * EPOLL_CTL_DEL; the child then writes to it and hangs it up. The new
 * socket under that number gets its own messages, each once, and the
 * old file's events complete nothing.
 */
static void
test_poll_epoll_number_reused_while_old_file_lives(void **state)
{
	struct cqw_op r, *done[4];
	int pa, pb, num, sv[2], go[2];
	cqw_loop *loop;
	cqw_conn *a, *b;
	char buf[64], c = 0;
	pid_t pid;

	(void)state;
	loop = t_loop_new();
	a = t_pair(&pa);
	num = (int)cqw_conn_fileno(a);
	t_recv_waited(loop, a, pa, "old");
	assert_int_equal(pipe(go), 0);
	pid = t_fork();
	if (pid == 0) {
		/* Holds the old file (num) and its peer (pa) open. */
		close(go[1]);
		T_CHILD_CHECK(read(go[0], &c, 1) == 1);
		t_send_raw(pa, "stale");
		close(pa);
		T_CHILD_CHECK(read(go[0], &c, 1) == 0);
		_exit(0);
	}
	close(go[0]);
	cqw_conn_free(a);
	close(pa);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
			 0);
	t_renumber(sv[0], num);
	T_RESULT(cqw_conn_from_fd(&b, num, CQW_DUPLEX), 0);
	pb = sv[1];
	t_op(&r, CQW_OP_RECV, b, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &r), 0);
	T_RESULT(cqw_flush(loop), 0);
	/* The old file gets a message and a hang-up: none of b's business. */
	assert_int_equal(write(go[1], &c, 1), 1);
	T_RESULT(cqw_reap(loop, done, 4, 200), 0);
	t_send_raw(pb, "new");
	t_reap_one(loop, &r);
	T_RESULT(r.result, 3);
	assert_memory_equal(buf, "new", 3);
	t_recv_waited(loop, b, pb, "again");
	close(go[1]);
	t_wait_child(pid);
	cqw_conn_free(b);
	close(pb);
	cqw_loop_free(loop);
}

/*
 * A connection closed by its user while its receive waits: the receive
 * ends (cancelled), and the number's next owner works.
 */
static void
test_poll_epoll_closed_while_waiting(void **state)
{
	struct cqw_op r, *done[4];
	cqw_loop *loop;
	cqw_conn *a, *b;
	int pa, pb, num, sv[2];
	char buf[16];

	(void)state;
	loop = t_loop_new();
	a = t_pair(&pa);
	num = (int)cqw_conn_fileno(a);
	t_op(&r, CQW_OP_RECV, a, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &r), 0);
	T_RESULT(cqw_flush(loop), 0);
	T_RESULT(cqw_reap(loop, done, 4, 0), 0);
	T_RESULT(cqw_conn_close(a), 0);
	t_reap_one(loop, &r);
	T_RESULT(r.result, CQW_ECANCELED);
	cqw_conn_free(a);
	close(pa);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
			 0);
	t_renumber(sv[0], num);
	T_RESULT(cqw_conn_from_fd(&b, num, CQW_DUPLEX), 0);
	pb = sv[1];
	t_recv_waited(loop, b, pb, "after");
	cqw_conn_free(b);
	close(pb);
	cqw_loop_free(loop);
}

/*
 * Edge-triggered, a message that arrived while no receive was waiting
 * has had its edge: a receive that does not try first must still find
 * it. Here the connection's last receive had to wait, it was let go and
 * comes back with a message queued (and again with EOF queued).
 */
static void
test_poll_epoll_queued_before_resubmit(void **state)
{
	struct cqw_op r;
	cqw_loop *loop;
	cqw_conn *c;
	char buf[16];
	int peer, i;

	(void)state;
	loop = t_loop_new();
	c = t_pair(&peer);
	for (i = 0; i < 3; i++) {
		t_recv_waited(loop, c, peer, "waited");
		t_send_raw(peer, "queued");
		/* Let the loop see the edge with nobody waiting. */
		T_RESULT(cqw_reap(loop, (struct cqw_op *[4]){ 0 }, 4, 0), 0);
		t_op(&r, CQW_OP_RECV, c, buf, sizeof(buf), NULL);
		T_RESULT(cqw_submit(loop, &r), 0);
		t_reap_one(loop, &r);
		T_RESULT(r.result, 6);
		assert_memory_equal(buf, "queued", 6);
	}
	t_recv_waited(loop, c, peer, "waited");
	close(peer);
	t_op(&r, CQW_OP_RECV, c, buf, sizeof(buf), NULL);
	T_RESULT(cqw_submit(loop, &r), 0);
	t_reap_one(loop, &r);
	T_RESULT(r.result, CQW_EOF);
	cqw_conn_free(c);
	cqw_loop_free(loop);
}

/*
 * Two messages come in one write while a receive waits: the edge is
 * taken by the receive that gets the first, the second stays queued, and
 * the connection is let go. The next receive (the last ones waited) may
 * not try first: the check it makes instead must report the second.
 */
static void
test_poll_epoll_second_of_one_edge(void **state)
{
	static const unsigned char two[] = { 0, 0, 0, 1, 'a', 0, 0, 0, 1, 'b' };
	struct cqw_op r, *done[4];
	cqw_loop *loop;
	cqw_conn *c;
	char buf[16];
	int peer, i;

	(void)state;
	loop = t_loop_new();
	c = t_pair(&peer);
	/* Receives that wait, several in a row: the next ones skip. */
	for (i = 0; i < 4; i++) {
		t_recv_waited(loop, c, peer, "waited");
	}
	for (i = 0; i < 16; i++) {
		t_op(&r, CQW_OP_RECV, c, buf, sizeof(buf), NULL);
		T_RESULT(cqw_submit(loop, &r), 0);
		T_RESULT(cqw_flush(loop), 0);
		T_RESULT(cqw_reap(loop, done, 4, 0), 0); /* waiting */
		t_write_all(peer, two, sizeof(two));
		t_reap_one(loop, &r);
		T_RESULT(r.result, 1);
		assert_int_equal(buf[0], 'a');
		t_op(&r, CQW_OP_RECV, c, buf, sizeof(buf), NULL);
		T_RESULT(cqw_submit(loop, &r), 0);
		t_reap_one(loop, &r);
		T_RESULT(r.result, 1);
		assert_int_equal(buf[0], 'b');
	}
	cqw_conn_free(c);
	close(peer);
	cqw_loop_free(loop);
}

/*
 * A receive and a send wait on one descriptor at once (the interest is
 * their union): the peer's message completes the receive while the send
 * still waits for room; draining completes the send. Each once.
 */
static void
test_poll_epoll_send_and_recv_on_one_fd(void **state)
{
	enum { BIG = 4 << 20 };
	struct cqw_op r, s, *done[4];
	unsigned char *big;
	cqw_loop *loop;
	cqw_conn *c;
	char buf[16];
	int peer;

	(void)state;
	big = malloc(BIG);
	assert_non_null(big);
	memset(big, 0x5a, BIG);
	loop = t_loop_new();
	c = t_pair(&peer);
	t_op(&r, CQW_OP_RECV, c, buf, sizeof(buf), NULL);
	t_op(&s, CQW_OP_SEND, c, big, BIG, NULL);
	T_RESULT(cqw_submit(loop, &r), 0);
	T_RESULT(cqw_submit(loop, &s), 0);
	T_RESULT(cqw_flush(loop), 0);
	T_RESULT(cqw_reap(loop, done, 4, 0), 0); /* both wait */
	t_send_raw(peer, "ping");
	t_reap_one(loop, &r);
	T_RESULT(r.result, 4);
	assert_memory_equal(buf, "ping", 4);
	/* The send still waits: drain its frame (4-byte header + BIG). */
	t_drain_send(loop, &s, peer, BIG + 4);
	T_RESULT(cqw_reap(loop, done, 4, 0), 0);
	cqw_conn_free(c);
	close(peer);
	cqw_loop_free(loop);
	free(big);
}

/*
 * fork(): the child's loop must not touch the parent's epoll instance,
 * which it shares. The child's copies of the parent's waiting receives
 * end with CQW_EFORK; then the child runs its own receive and send on
 * the same connections, closes them and frees its loop (EPOLL_CTL_DEL
 * there, on the instance it shares, would remove the parent's
 * registrations). The parent, waiting
 * all along, still receives on every connection afterwards.
 */
static void
test_poll_epoll_parent_receives_after_child_loop(void **state)
{
	enum { N = 4, BIG = 1 << 20 };
	struct cqw_op r[N], *done[N + 2];
	cqw_loop *loop;
	cqw_conn *c[N];
	char buf[N][16];
	int peer[N], i;
	pid_t pid;

	(void)state;
	loop = t_loop_new();
	for (i = 0; i < N; i++) {
		c[i] = t_pair(&peer[i]);
		t_op(&r[i], CQW_OP_RECV, c[i], buf[i], sizeof(buf[i]), NULL);
		T_RESULT(cqw_submit(loop, &r[i]), 0);
	}
	T_RESULT(cqw_flush(loop), 0);
	T_RESULT(cqw_reap(loop, done, N, 0), 0); /* all registered, waiting */
	pid = t_fork();
	if (pid == 0) {
		static char big[BIG], sink[1 << 16];
		struct cqw_op cr, cs;
		cqw_conn *mine;
		char cb[16];
		int n = 0, k, mypeer, sent = 0;
		size_t got = 0;

		while (n < N) {
			k = cqw_reap(loop, done, N, T_PROGRESS_MS);
			T_CHILD_CHECK(k > 0);
			for (i = 0; i < k; i++) {
				T_CHILD_CHECK(done[i]->result == CQW_EFORK);
			}
			n += k;
		}
		/*
		 * Its own ops: a send on connection 0 (its receive side
		 * lost its place in the stream) that has to wait for room,
		 * the child draining it; and a receive that waits, on a
		 * pair of its own. Both register descriptors with the
		 * child's epoll instance, and end by detaching them.
		 */
		t_op(&cs, CQW_OP_SEND, c[0], big, BIG, NULL);
		T_CHILD_CHECK(cqw_submit(loop, &cs) == 0);
		T_CHILD_CHECK(cqw_reap(loop, done, 1, 0) == 0);
		while (!sent || got < BIG + 4) {
			ssize_t m =
			    recv(peer[0], sink, sizeof(sink), MSG_DONTWAIT);

			if (m > 0) {
				got += (size_t)m;
				continue;
			}
			T_CHILD_CHECK(m < 0 && errno == EAGAIN && !sent);
			k = cqw_reap(loop, done, 1, 1);
			T_CHILD_CHECK(k == 0 || (k == 1 && done[0] == &cs));
			sent = k;
		}
		T_CHILD_CHECK(cs.result == 0 && got == BIG + 4);
		mine = t_pair(&mypeer);
		t_op(&cr, CQW_OP_RECV, mine, cb, sizeof(cb), NULL);
		T_CHILD_CHECK(cqw_submit(loop, &cr) == 0);
		T_CHILD_CHECK(cqw_reap(loop, done, 1, 0) == 0);
		t_send_raw(mypeer, "to-child");
		T_CHILD_CHECK(cqw_reap(loop, done, 1, T_PROGRESS_MS) == 1);
		T_CHILD_CHECK(done[0] == &cr && cr.result == 8);
		T_CHILD_CHECK(memcmp(cb, "to-child", 8) == 0);
		cqw_conn_free(mine);
		for (i = 0; i < N; i++) {
			cqw_conn_free(c[i]);
		}
		cqw_loop_free(loop);
		_exit(0);
	}
	t_wait_child(pid);
	/* The parent's receives were waiting all along: they still work. */
	for (i = 0; i < N; i++) {
		t_send_raw(peer[i], "parent");
	}
	t_reap_exact(loop, done, N);
	for (i = 0; i < N; i++) {
		T_RESULT(r[i].result, 6);
		assert_memory_equal(buf[i], "parent", 6);
	}
	/* And again, through waits of their own. */
	for (i = 0; i < N; i++) {
		t_recv_waited(loop, c[i], peer[i], "more");
	}
	for (i = 0; i < N; i++) {
		cqw_conn_free(c[i]);
		close(peer[i]);
	}
	cqw_loop_free(loop);
}

/* The backend keeps its name (a contract) and says what it waits with. */
static void
test_poll_epoll_features(void **state)
{
	cqw_loop *loop;

	(void)state;
	loop = t_loop_new();
	assert_string_equal(cqw_loop_backend(loop), "poll");
	assert_non_null(strstr(cqw_loop_features(loop), "epoll"));
	cqw_loop_free(loop);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_poll_epoll_features),
		cmocka_unit_test(test_poll_epoll_number_reused_after_close),
		cmocka_unit_test(
		    test_poll_epoll_number_reused_while_old_file_lives),
		cmocka_unit_test(test_poll_epoll_closed_while_waiting),
		cmocka_unit_test(test_poll_epoll_queued_before_resubmit),
		cmocka_unit_test(test_poll_epoll_second_of_one_edge),
		cmocka_unit_test(test_poll_epoll_send_and_recv_on_one_fd),
		cmocka_unit_test(
		    test_poll_epoll_parent_receives_after_child_loop),
	};

	t_backend_or_skip();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
