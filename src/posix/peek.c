/*
 * Looking at what a descriptor holds without consuming it, for the
 * frame-exact receive (common/io.h): a frame-exact connection may share
 * its descriptor with other readers, so it decides what to do with the
 * next frame before it takes a byte of it.
 *
 * Sockets peek with MSG_PEEK. Pipes have no peek, but Linux's tee(2)
 * duplicates what a pipe holds into another pipe without consuming it:
 * the header is tee'd into a small private pipe and read back from there.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/internal.h"
#include "common/platform.h"
#include "posix/io.h"

/* EINTR in a blocking call: stop (CQW_EINTR) if the thread's check says. */
static int
interrupted(void)
{
	return cqw__eintr_stop() ? CQW_EINTR : 0;
}

int64_t
cqw__io_peek_wait(cqw_fd sock, void *buf, size_t len)
{
	ssize_t r;

	for (;;) {
		r = recv(sock, buf, len, MSG_PEEK);
		if (r >= 0) {
			return r;
		}
		if (errno != EINTR) {
			return errno == EWOULDBLOCK ? CQW_EAGAIN : -errno;
		}
		if (interrupted()) {
			return CQW_EINTR;
		}
	}
}

#ifdef __linux__
/*
 * The private pipe a thread tees headers into. Per thread, not per
 * connection (a parent with hundreds of worker pipes would pay two
 * descriptors each): every use leaves it empty, and no two calls of one
 * thread overlap. A forked child makes its own rather than share the
 * parent's, which the parent may be using at that very moment.
 */
static _Thread_local cqw_fd scratch[2] = { -1, -1 };
static _Thread_local unsigned scratch_gen;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void
drop_scratch(void)
{
	if (scratch[0] >= 0) {
		close(scratch[0]);
		close(scratch[1]);
	}
	scratch[0] = scratch[1] = -1;
}

/* At thread exit (the key's value only marks that there is one). */
static void
scratch_exit(void *unused)
{
	(void)unused;
	drop_scratch();
}

/*
 * In a child, at once, while the numbers still name the parent's pipe
 * (the child may later close and reuse them): give the child a pipe of
 * its own under the same numbers, so that it neither shares the parent's
 * nor seems to gain descriptors. Other threads' pipes do not exist in
 * the child; their descriptors are close-on-exec.
 */
static void
scratch_child(void)
{
	int fresh[2];

	if (scratch[0] < 0) {
		return;
	}
	if (pipe2(fresh, O_CLOEXEC) != 0) {
		drop_scratch();
		return;
	}
	if (dup3(fresh[0], scratch[0], O_CLOEXEC) < 0 ||
	    dup3(fresh[1], scratch[1], O_CLOEXEC) < 0) {
		close(fresh[0]);
		close(fresh[1]);
		drop_scratch();
		return;
	}
	close(fresh[0]);
	close(fresh[1]);
	scratch_gen = cqw__fork_gen();
}

static void
make_scratch_key(void)
{
	if (pthread_key_create(&scratch_key, scratch_exit) != 0) {
		scratch_key = (pthread_key_t)-1;
	}
	pthread_atfork(NULL, NULL, scratch_child);
}

static int
ensure_scratch(void)
{
	unsigned gen = cqw__fork_gen();

	if (scratch[0] >= 0 && scratch_gen == gen) {
		return 0;
	}
	/*
	 * Made before a fork whose handlers did not run (a raw clone): the
	 * numbers may mean something else by now; forget, do not close.
	 */
	scratch[0] = scratch[1] = -1;
	if (pipe2(scratch, O_CLOEXEC) != 0) {
		scratch[0] = scratch[1] = -1;
		return -errno;
	}
	scratch_gen = gen;
	pthread_once(&scratch_once, make_scratch_key);
	if (scratch_key != (pthread_key_t)-1) {
		pthread_setspecific(scratch_key, scratch);
	}
	return 0;
}
#endif

int64_t
cqw__io_pipe_peek(cqw_fd fd, void *buf, size_t len, int wait)
{
#ifdef __linux__
	ssize_t n, r;
	int err = ensure_scratch();

	if (err < 0) {
		return err;
	}
	for (;;) {
		n = tee(fd, scratch[1], len, wait ? 0 : SPLICE_F_NONBLOCK);
		if (n >= 0) {
			break;
		}
		if (errno == EINVAL) {
			return CQW_EOPNOTSUPP; /* not a pipe: cannot peek */
		}
		if (errno != EINTR) {
			return errno == EWOULDBLOCK ? CQW_EAGAIN : -errno;
		}
		if (wait && interrupted()) {
			return CQW_EINTR;
		}
	}
	if (n == 0) {
		return 0; /* no writer left and nothing queued: end of file */
	}
	/* The copy is ours alone: read all of it back. */
	do {
		r = read(scratch[0], buf, (size_t)n);
	} while (r < 0 && errno == EINTR);
	if (r != n) {
		err = r < 0 ? -errno : CQW_EIO;
		drop_scratch(); /* it may hold a stray copy */
		return err;
	}
	return n;
#else
	(void)fd;
	(void)buf;
	(void)len;
	(void)wait;
	return CQW_EOPNOTSUPP;
#endif
}

int
cqw__io_hup(cqw_fd fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int r;

#ifdef POLLRDHUP
	p.events |= POLLRDHUP;
#endif
	do {
		r = poll(&p, 1, 0);
	} while (r < 0 && errno == EINTR);
	if (r < 0) {
		return -errno;
	}
	if (p.revents & POLLNVAL) {
		return CQW_EBADF;
	}
#ifdef POLLRDHUP
	if (p.revents & POLLRDHUP) {
		return 1;
	}
#endif
	return (p.revents & (POLLHUP | POLLERR)) != 0;
}

int64_t
cqw__io_readv_wait(cqw_fd fd, int kind, cqw__iov *iov, int cnt)
{
	struct msghdr m;
	ssize_t r;

	for (;;) {
		if (kind == CQW__FD_SOCK) {
			memset(&m, 0, sizeof(m));
			m.msg_iov = iov;
			m.msg_iovlen = (size_t)cnt;
			r = recvmsg(fd, &m, MSG_WAITALL);
		} else {
			r = readv(fd, iov, cnt);
		}
		if (r >= 0) {
			return r;
		}
		if (errno != EINTR) {
			return errno == EWOULDBLOCK ? CQW_EAGAIN : -errno;
		}
		if (interrupted()) {
			return CQW_EINTR;
		}
	}
}

int
cqw__sleep_us(unsigned us)
{
	struct timespec ts = { (time_t)(us / 1000000),
			       (long)(us % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
		if (interrupted()) {
			return CQW_EINTR;
		}
	}
	return 0;
}

int64_t
cqw__io_queue_cap(cqw_fd fd, int kind)
{
	int v = 0;

	if (kind == CQW__FD_SOCK) {
		socklen_t len = sizeof(v);

		if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, &len) != 0) {
			return -errno;
		}
		/* The kernel doubles what was set, for its own overhead. */
		return v / 4;
	}
#ifdef F_GETPIPE_SZ
	v = fcntl(fd, F_GETPIPE_SZ);
	return v < 0 ? -errno : v;
#else
	return CQW_EOPNOTSUPP;
#endif
}
