/*
 * POSIX I/O primitives for src/common (see common/io.h).
 *
 * Pipes: preadv2/pwritev2 with RWF_NOWAIT give a non-blocking attempt on a
 * blocking pipe (Linux >= 5.8 for pipes). Where the kernel answers
 * EOPNOTSUPP we remember it and fall back to poll() before a blocking
 * read; a write then may block, which only the asynchronous API notices.
 *
 * SIGPIPE: sockets use MSG_NOSIGNAL. A pipe write to a closed reader raises
 * SIGPIPE on the calling thread, so unless the process ignores SIGPIPE we
 * block it around the write and take back a signal that our write caused.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/internal.h"
#include "posix/sigpipe.h"

static int no_rwf_nowait; /* set once the kernel says EOPNOTSUPP */

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

int
cqw__remaining_ms(int64_t deadline)
{
	int64_t left;

	if (deadline < 0) {
		return -1;
	}
	left = deadline - cqw__now_ms();
	if (left <= 0) {
		return 0;
	}
	return left > 0x7fffffff ? 0x7fffffff : (int)left;
}

int
cqw__io_wait(cqw_fd fd, int want_write, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = want_write ? POLLOUT : POLLIN };
	int64_t deadline = timeout_ms < 0 ? -1 : cqw__now_ms() + timeout_ms;
	int r;

	for (;;) {
		r = poll(&p, 1, timeout_ms);
		if (r >= 0) {
			break;
		}
		if (errno != EINTR) {
			return -errno;
		}
		timeout_ms = cqw__remaining_ms(deadline);
	}
	if (r == 0) {
		return 0;
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
	int64_t deadline = timeout_ms < 0 ? -1 : cqw__now_ms() + timeout_ms;
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
	for (;;) {
		r = poll(p, (nfds_t)n, timeout_ms);
		if (r >= 0 || errno != EINTR) {
			break;
		}
		timeout_ms = cqw__remaining_ms(deadline);
	}
	if (r < 0) {
		count = -errno;
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

int64_t
cqw__io_read(cqw_fd fd, int kind, void *buf, size_t len)
{
	struct iovec v = { .iov_base = buf, .iov_len = len };
	ssize_t r;

	for (;;) {
		if (kind == CQW__FD_SOCK) {
			r = recv(fd, buf, len, MSG_DONTWAIT);
		} else if (!no_rwf_nowait) {
			r = preadv2(fd, &v, 1, -1, RWF_NOWAIT);
			if (r < 0 && errno == EOPNOTSUPP) {
				no_rwf_nowait = 1;
				continue;
			}
		} else {
			int ready = cqw__io_wait(fd, 0, 0);

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

	do {
		r = kind == CQW__FD_SOCK
			? recv(fd, buf, len, all ? MSG_WAITALL : 0)
			: read(fd, buf, len);
	} while (r < 0 && errno == EINTR);
	if (r >= 0) {
		return r;
	}
	return errno == EWOULDBLOCK ? CQW_EAGAIN : -errno;
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
cqw__io_readv_all(cqw_fd sock, cqw__iov *iov, int cnt)
{
	struct msghdr m;
	ssize_t r;

	while (cnt > 0) {
		memset(&m, 0, sizeof(m));
		m.msg_iov = iov;
		m.msg_iovlen =
		    (size_t)(cnt > CQW__IOV_MAX ? CQW__IOV_MAX : cnt);
		r = recvmsg(sock, &m, MSG_WAITALL);
		if (r < 0) {
			if (errno == EINTR) {
				continue;
			}
			return -errno;
		}
		if (r == 0) {
			return CQW_ETRUNC;
		}
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

int
cqw__sigpipe_block(struct cqw__sigpipe_guard *g)
{
	sigset_t pending;

	g->active = !sigpipe_ignored();
	if (!g->active) {
		return 0;
	}
	sigemptyset(&g->pipeset);
	sigaddset(&g->pipeset, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &g->pipeset, &g->old);
	sigpending(&pending);
	g->was_pending = sigismember(&pending, SIGPIPE);
	return 1;
}

void
cqw__sigpipe_restore(struct cqw__sigpipe_guard *g)
{
	static const struct timespec zero = { 0, 0 };
	sigset_t pending;
	int saved = errno;

	if (!g->active) {
		return;
	}
	sigpending(&pending);
	if (!g->was_pending && sigismember(&pending, SIGPIPE)) {
		/* Take back the signal that our own write raised. */
		while (sigtimedwait(&g->pipeset, NULL, &zero) < 0 &&
		       errno == EINTR) {
		}
	}
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
	errno = saved;
}

static ssize_t
pipe_write(cqw_fd fd, const struct iovec *iov, int cnt)
{
	struct cqw__sigpipe_guard g;
	ssize_t r;

	cqw__sigpipe_block(&g);
	if (no_rwf_nowait) {
		r = writev(fd, iov, cnt);
	} else {
		r = pwritev2(fd, iov, cnt, -1, RWF_NOWAIT);
	}
	cqw__sigpipe_restore(&g);
	return r;
}

int64_t
cqw__io_writev_wait(cqw_fd fd, int kind, const cqw__iov *iov, int cnt)
{
	struct cqw__sigpipe_guard g;
	ssize_t r;

	for (;;) {
		if (kind == CQW__FD_SOCK) {
			struct msghdr m = { .msg_iov = (struct iovec *)iov,
					    .msg_iovlen = (size_t)cnt };

			r = sendmsg(fd, &m, MSG_NOSIGNAL);
		} else {
			cqw__sigpipe_block(&g);
			r = writev(fd, iov, cnt);
			cqw__sigpipe_restore(&g);
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
cqw__io_writev(cqw_fd fd, int kind, const cqw__iov *iov, int cnt)
{
	ssize_t r;

	for (;;) {
		if (kind == CQW__FD_SOCK) {
			struct msghdr m = { .msg_iov = (struct iovec *)iov,
					    .msg_iovlen = (size_t)cnt };

			r = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
		} else {
			r = pipe_write(fd, iov, cnt);
			if (r < 0 && errno == EOPNOTSUPP && !no_rwf_nowait) {
				no_rwf_nowait = 1;
				continue;
			}
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
cqw__io_socketpair(cqw_fd fds[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
		return -errno;
	}
	return 0;
}

int
cqw__io_pipe(cqw_fd fds[2])
{
	if (pipe2(fds, O_CLOEXEC) != 0) {
		return -errno;
	}
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
