/*
 * POSIX I/O primitives for src/common (see common/io.h).
 *
 * Pipes: preadv2/pwritev2 with RWF_NOWAIT give a non-blocking attempt on a
 * blocking pipe (Linux >= 5.8 for pipes). A file that answers EOPNOTSUPP
 * (a FIFO opened by name, a tty, older kernels) becomes CQW__FD_PIPE_POLL
 * on that connection only: readiness first, then a read, or a write of at
 * most PIPE_BUF bytes, which a pipe or FIFO that polls writable takes
 * whole without sleeping (POLLOUT means a free page, and PIPE_BUF fits in
 * one). A tty promises less: such a write may sleep until it has room.
 *
 * SIGPIPE: sockets use MSG_NOSIGNAL; pipe writes go through the guard of
 * posix/sigpipe.h. The guard's cost is chosen by a hint (sigpipe_hint):
 * while the last look found SIGPIPE ignored, a guard looks (sigaction) and
 * blocks nothing, one call more than the write; once it was not, a guard
 * blocks without looking (pthread_sigmask before and after), two calls
 * more, and looks at what is
 * pending only when the write failed with EPIPE or wrote short. Blocking
 * is right whatever the disposition, so the hint can only cost a call,
 * never let a signal through. The one window left is the look itself: a
 * thread that stops ignoring SIGPIPE between another's look and its write.
 * A zero-cost guard does not exist: the signal is raised synchronously and
 * acted on before write() returns, so it must be blocked or ignored at
 * that moment, and blocking it for good would change the program's mask.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/internal.h"
#include "common/platform.h"
#include "posix/io.h"
#include "posix/sigpipe.h"

/* iovecs a CQW__FD_PIPE_POLL write takes at most (PIPE_BUF bytes). */
#define PIPE_POLL_IOV 128

int
cqw__io_fd_kind(cqw_fd fd)
{
	struct stat st;

	if (fd < 0 || fstat(fd, &st) != 0) {
		return CQW_EBADF;
	}
	return S_ISSOCK(st.st_mode) ? CQW__FD_SOCK : CQW__FD_PIPE;
}

int64_t
cqw__now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
cqw__now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * poll() that retries EINTR with the time left; a wait that may sleep
 * (timeout_ms != 0) asks the thread's signal check on each EINTR first.
 */
static int
poll_eintr(struct pollfd *p, nfds_t n, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : cqw__now_ms() + timeout_ms;
	int blocking = timeout_ms != 0;
	int r;

	for (;;) {
		r = poll(p, n, timeout_ms);
		if (r >= 0) {
			return r;
		}
		if (errno != EINTR) {
			return -errno;
		}
		if (blocking && cqw__eintr_stop()) {
			return CQW_EINTR;
		}
		timeout_ms = cqw__remaining_ms(deadline);
	}
}

int
cqw__io_wait(cqw_fd fd, int want_write, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = want_write ? POLLOUT : POLLIN };
	int r = poll_eintr(&p, 1, timeout_ms);

	if (r <= 0) {
		return r;
	}
	if (p.revents & POLLNVAL) {
		return CQW_EBADF;
	}
	return 1;
}

int
cqw__io_wait_many(const cqw_fd *fds, int *ready, size_t n, int timeout_ms)
{
	struct pollfd stackp[64], *p = stackp;
	size_t i;
	int r, count = 0;

	if (n > 64) {
		p = calloc(n, sizeof(*p));
		if (p == NULL) {
			return CQW_ENOMEM;
		}
	}
	for (i = 0; i < n; i++) {
		p[i].fd = fds[i];
		p[i].events = POLLIN;
		p[i].revents = 0;
	}
	r = poll_eintr(p, (nfds_t)n, timeout_ms);
	if (r < 0) {
		count = r;
		goto out_free;
	}
	for (i = 0; i < n; i++) {
		if (p[i].revents & POLLNVAL) {
			count = CQW_EBADF;
			goto out_free;
		}
		ready[i] = p[i].revents != 0;
		count += ready[i];
	}
out_free:
	if (p != stackp) {
		free(p);
	}
	return count;
}

/* The kernel cannot do RWF_NOWAIT on this file (or has no preadv2). */
static int
nowait_refused(int err)
{
	return err == EOPNOTSUPP || err == ENOSYS;
}

int64_t
cqw__io_read(cqw_fd fd, int *kind, void *buf, size_t len)
{
	struct iovec v = { .iov_base = buf, .iov_len = len };
	ssize_t r;
	int ready;

	for (;;) {
		if (*kind == CQW__FD_SOCK) {
			r = recv(fd, buf, len, MSG_DONTWAIT);
		} else if (*kind == CQW__FD_PIPE) {
			r = preadv2(fd, &v, 1, -1, RWF_NOWAIT);
			if (r < 0 && nowait_refused(errno)) {
				/* This file only: ask for readiness from now. */
				*kind = CQW__FD_PIPE_POLL;
				continue;
			}
		} else {
			ready = cqw__io_wait(fd, 0, 0);
			if (ready <= 0) {
				return ready == 0 ? CQW_EAGAIN : ready;
			}
			r = read(fd, buf, len);
		}
		if (r >= 0) {
			return r;
		}
		if (errno != EINTR) {
			return errno == EWOULDBLOCK ? CQW_EAGAIN : -errno;
		}
	}
}

int64_t
cqw__io_read_wait(cqw_fd fd, int kind, void *buf, size_t len, int all)
{
	ssize_t r;

	for (;;) {
		r = kind == CQW__FD_SOCK
			? recv(fd, buf, len, all ? MSG_WAITALL : 0)
			: read(fd, buf, len);
		if (r >= 0) {
			return r;
		}
		if (errno != EINTR) {
			return errno == EWOULDBLOCK ? CQW_EAGAIN : -errno;
		}
		/* Nothing was read: the kernel returns a short count else. */
		if (cqw__eintr_stop()) {
			return CQW_EINTR;
		}
	}
}

int64_t
cqw__io_nread(cqw_fd fd)
{
	int n = 0;

	if (ioctl(fd, FIONREAD, &n) != 0) {
		return -errno;
	}
	return n;
}

int64_t
cqw__io_peek(cqw_fd sock, void *buf, size_t len)
{
	ssize_t r;

	do {
		r = recv(sock, buf, len, MSG_PEEK | MSG_DONTWAIT);
	} while (r < 0 && errno == EINTR);
	if (r >= 0) {
		return r;
	}
	return errno == EWOULDBLOCK ? CQW_EAGAIN : -errno;
}

int
cqw__io_readv_all(cqw_fd sock, cqw__iov *iov, int cnt, int *consumed)
{
	struct msghdr m;
	ssize_t r;

	*consumed = 0;

	while (cnt > 0) {
		memset(&m, 0, sizeof(m));
		m.msg_iov = iov;
		m.msg_iovlen =
		    (size_t)(cnt > CQW__IOV_MAX ? CQW__IOV_MAX : cnt);
		r = recvmsg(sock, &m, MSG_WAITALL);
		if (r < 0) {
			if (errno != EINTR) {
				return -errno;
			}
			/* Once bytes are taken, stopping would lose them. */
			if (!*consumed && cqw__eintr_stop()) {
				return CQW_EINTR;
			}
			continue;
		}
		if (r == 0) {
			return CQW_ETRUNC;
		}
		*consumed = 1;
		while (cnt > 0 && (size_t)r >= iov->iov_len) {
			r -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (char *)iov->iov_base + r;
			iov->iov_len -= (size_t)r;
		}
	}
	return 0;
}

/*
 * 1 while the last look found SIGPIPE ignored (so guards look first), 0
 * once one did not (guards block without looking). Starts at 1: look.
 */
static atomic_int sigpipe_hint = 1;

/* Is SIGPIPE's disposition "ignore"? Then a pipe write needs no guard. */
static int
sigpipe_ignored(void)
{
	struct sigaction sa;

	if (sigaction(SIGPIPE, NULL, &sa) != 0) {
		return 0;
	}
	return sa.sa_handler == SIG_IGN;
}

static int
sigpipe_pending(void)
{
	sigset_t pending;

	return sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
}

int
cqw__sigpipe_block(struct cqw__sigpipe_guard *g)
{
	sigset_t pipeset;

	g->active = 0;
	if (atomic_load_explicit(&sigpipe_hint, memory_order_relaxed)) {
		if (sigpipe_ignored()) {
			return 0;
		}
		atomic_store_explicit(&sigpipe_hint, 0, memory_order_relaxed);
	}
	sigemptyset(&pipeset);
	sigaddset(&pipeset, SIGPIPE);
	if (pthread_sigmask(SIG_BLOCK, &pipeset, &g->old) != 0) {
		return 0; /* cannot fail with these arguments */
	}
	g->active = 1;
	g->was_blocked = sigismember(&g->old, SIGPIPE);
	/*
	 * Only a thread that blocks SIGPIPE itself can have one pending
	 * here (else it would have been delivered): that one is the
	 * program's, and one our write raises merges into it.
	 */
	g->was_pending = g->was_blocked && sigpipe_pending();
	return 1;
}

void
cqw__sigpipe_end(struct cqw__sigpipe_guard *g, int may_have_raised)
{
	static const struct timespec zero = { 0, 0 };
	sigset_t pipeset;
	int saved = errno;

	if (!g->active) {
		return;
	}
	if (may_have_raised && !g->was_pending && sigpipe_pending()) {
		/*
		 * Take back the signal our write raised. It is pending on
		 * this thread, and sigtimedwait() takes a thread's own
		 * signals before the process's.
		 */
		sigemptyset(&pipeset);
		sigaddset(&pipeset, SIGPIPE);
		while (sigtimedwait(&pipeset, NULL, &zero) < 0 &&
		       errno == EINTR) {
		}
		/* Rare: look again, the program may ignore SIGPIPE now. */
		if (sigpipe_ignored()) {
			atomic_store_explicit(&sigpipe_hint, 1,
					      memory_order_relaxed);
		}
	}
	if (!g->was_blocked) {
		pthread_sigmask(SIG_SETMASK, &g->old, NULL);
	}
	errno = saved;
}

void
cqw__sigpipe_restore(struct cqw__sigpipe_guard *g)
{
	cqw__sigpipe_end(g, 1);
}

static size_t
iov_bytes(const struct iovec *iov, int cnt)
{
	size_t n = 0;
	int i;

	for (i = 0; i < cnt; i++) {
		n += iov[i].iov_len;
	}
	return n;
}

/*
 * One write to a pipe under the SIGPIPE guard: writev(), or pwritev2()
 * with RWF_NOWAIT if nowait. Returns as write() does, errno kept.
 */
static ssize_t
pipe_write(cqw_fd fd, const struct iovec *iov, int cnt, int nowait)
{
	struct cqw__sigpipe_guard g;
	ssize_t r;
	int err, raised;

	cqw__sigpipe_block(&g);
	if (nowait) {
		r = pwritev2(fd, iov, cnt, -1, RWF_NOWAIT);
	} else {
		r = writev(fd, iov, cnt);
	}
	err = errno;
	/*
	 * Only a write that finds the reader gone raises SIGPIPE: it fails
	 * with EPIPE, or, if it slept and wrote part first, returns short.
	 * A RWF_NOWAIT write never sleeps, so its short counts are only a
	 * full pipe.
	 */
	if (r < 0) {
		raised = err == EPIPE;
	} else {
		raised = !nowait && (size_t)r < iov_bytes(iov, cnt);
	}
	cqw__sigpipe_end(&g, raised);
	errno = err;
	return r;
}

/*
 * A CQW__FD_PIPE_POLL write: if the file polls writable, write at most
 * PIPE_BUF bytes of iov (see the head of this file). -1 with EAGAIN if it
 * is full.
 */
static ssize_t
pipe_write_ready(cqw_fd fd, const struct iovec *iov, int cnt)
{
	struct iovec part[PIPE_POLL_IOV];
	size_t room = PIPE_BUF;
	int n, r;

	r = cqw__io_wait(fd, 1, 0);
	if (r <= 0) {
		errno = r == 0 ? EAGAIN : -r;
		return -1;
	}
	for (n = 0; n < cnt && n < PIPE_POLL_IOV && room > 0; n++) {
		part[n] = iov[n];
		if (part[n].iov_len > room) {
			part[n].iov_len = room;
		}
		room -= part[n].iov_len;
	}
	return pipe_write(fd, part, n, 0);
}

int64_t
cqw__io_writev_wait(cqw_fd fd, int kind, const cqw__iov *iov, int cnt)
{
	ssize_t r;

	for (;;) {
		if (kind == CQW__FD_SOCK) {
			struct msghdr m = { .msg_iov = (struct iovec *)iov,
					    .msg_iovlen = (size_t)cnt };

			r = sendmsg(fd, &m, MSG_NOSIGNAL);
		} else {
			r = pipe_write(fd, iov, cnt, 0);
		}
		if (r >= 0) {
			return r;
		}
		if (errno != EINTR) {
			return errno == EWOULDBLOCK ? CQW_EAGAIN : -errno;
		}
		/* Nothing was written: the kernel returns a short count else. */
		if (cqw__eintr_stop()) {
			return CQW_EINTR;
		}
	}
}

int64_t
cqw__io_writev(cqw_fd fd, int *kind, const cqw__iov *iov, int cnt)
{
	ssize_t r;

	for (;;) {
		if (*kind == CQW__FD_SOCK) {
			struct msghdr m = { .msg_iov = (struct iovec *)iov,
					    .msg_iovlen = (size_t)cnt };

			r = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
		} else if (*kind == CQW__FD_PIPE) {
			r = pipe_write(fd, iov, cnt, 1);
			if (r < 0 && nowait_refused(errno)) {
				/* This file only: readiness from now on. */
				*kind = CQW__FD_PIPE_POLL;
				continue;
			}
		} else {
			r = pipe_write_ready(fd, iov, cnt);
		}
		if (r >= 0) {
			return r;
		}
		if (errno != EINTR) {
			return errno == EWOULDBLOCK ? CQW_EAGAIN : -errno;
		}
	}
}

int
cqw__io_close(cqw_fd fd)
{
	/*
	 * Linux closes the descriptor even when close() reports EINTR, so
	 * retrying could close a descriptor another thread just opened.
	 */
	if (close(fd) != 0 && errno != EINTR) {
		return -errno;
	}
	return 0;
}

int
cqw__os_pipe(cqw_fd h[2], int kind[2], int duplex)
{
	/* Python's Pipe(): a stream socket pair, or a pipe (reader first). */
	if (duplex) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, h) !=
		    0) {
			return -errno;
		}
		kind[0] = kind[1] = CQW__FD_SOCK;
		return 0;
	}
	if (pipe2(h, O_CLOEXEC) != 0) {
		return -errno;
	}
	kind[0] = kind[1] = CQW__FD_PIPE;
	return 0;
}

int
cqw__io_send_fd(cqw_fd sock, cqw_fd fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	unsigned char one = 1; /* len(fds) % 256, as reduction.sendfds */
	struct iovec v = { .iov_base = &one, .iov_len = 1 };
	struct msghdr m = { .msg_iov = &v,
			    .msg_iovlen = 1,
			    .msg_control = ctl.buf,
			    .msg_controllen = sizeof(ctl.buf) };
	struct cmsghdr *c;
	ssize_t r;

	memset(&ctl, 0, sizeof(ctl));
	c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	for (;;) {
		r = sendmsg(sock, &m, MSG_NOSIGNAL);
		if (r >= 0) {
			return 0;
		}
		if (errno != EINTR) {
			return -errno;
		}
		if (cqw__eintr_stop()) {
			return CQW_EINTR;
		}
	}
}

int
cqw__io_recv_fd(cqw_fd sock, cqw_fd *out)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} ctl;
	unsigned char byte = 0;
	struct iovec v = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr m;
	struct cmsghdr *c;
	int fds[4], nfds, i;
	ssize_t r;

	for (;;) {
		memset(&m, 0, sizeof(m));
		m.msg_iov = &v;
		m.msg_iovlen = 1;
		m.msg_control = ctl.buf;
		m.msg_controllen = sizeof(ctl.buf);
		r = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
		if (r >= 0) {
			break;
		}
		if (errno != EINTR) {
			return -errno;
		}
		if (cqw__eintr_stop()) {
			return CQW_EINTR;
		}
	}
	c = CMSG_FIRSTHDR(&m);
	if (r == 0 && c == NULL) {
		return CQW_EOF;
	}
	if (c == NULL || c->cmsg_level != SOL_SOCKET ||
	    c->cmsg_type != SCM_RIGHTS) {
		return CQW_ENOHANDLE;
	}
	nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
	if (nfds > 4) {
		nfds = 4;
	}
	memcpy(fds, CMSG_DATA(c), sizeof(int) * (size_t)nfds);
	if (nfds != 1 || r != 1 || byte != 1 ||
	    (m.msg_flags & MSG_CTRUNC) != 0) {
		/* Python raises RuntimeError here; never leak what came. */
		for (i = 0; i < nfds; i++) {
			close(fds[i]);
		}
		return CQW_EPROTO;
	}
	*out = fds[0];
	return 0;
}

static unsigned fork_gen;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void
on_fork_child(void)
{
	fork_gen++;
}

static void
register_fork_handler(void)
{
	pthread_atfork(NULL, NULL, on_fork_child);
}

unsigned
cqw__fork_gen(void)
{
	/*
	 * getpid() is a system call on current glibc; a generation bumped by
	 * an atfork handler tells a loop it is in a new process for free.
	 */
	pthread_once(&fork_once, register_fork_handler);
	return fork_gen;
}

int
cqw__io_accept(cqw_fd lfd)
{
	int fd;

	for (;;) {
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0) {
			return fd;
		}
		/* Taken by another process, or the peer gave up: wait on. */
		if (errno == EAGAIN || errno == EWOULDBLOCK ||
		    errno == ECONNABORTED) {
			return CQW_EAGAIN;
		}
		if (errno != EINTR) {
			return -errno;
		}
	}
}

int
cqw__io_connected(cqw_fd fd)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	int err = 0;
	socklen_t len = sizeof(err);

	if (poll(&p, 1, 0) <= 0) {
		return CQW_EAGAIN; /* not yet (or EINTR: look again later) */
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
		return -errno;
	}
	return -err;
}
