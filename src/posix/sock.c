/*
 * Listener and Client sockets on POSIX: AF_UNIX (path and Linux abstract)
 * and TCP over IPv4 and IPv6, as Python's Listener makes them: SO_REUSEADDR
 * for TCP, and an abstract name's length exactly its bytes. Connected and
 * accepted sockets are blocking, as Python's are (they may be handed to a
 * Python peer); the listening socket is O_NONBLOCK, see cqw__sock_accept().
 * The endpoints Listener and Client use (common/platform.h) are at the end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <stdlib.h>

#include "common/address.h"
#include "common/internal.h"
#include "common/platform.h"
#include "posix/io.h"

/* Fill a sockaddr_un; returns its length or CQW_ENAMETOOLONG. */
static int
unix_sockaddr(const struct cqw__addr *a, struct sockaddr_un *sun)
{
	size_t off = a->kind == CQW__ADDR_UNIX_ABSTRACT ? 1 : 0;

	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	/* A path needs its terminator; an abstract name does not. */
	if (a->path_len + off + (off ? 0 : 1) > sizeof(sun->sun_path)) {
		return CQW_ENAMETOOLONG;
	}
	memcpy(sun->sun_path + off, a->path, a->path_len);
	return (int)(offsetof(struct sockaddr_un, sun_path) + off +
		     a->path_len + (off ? 0 : 1));
}

static int
resolve(const struct cqw__addr *a, int passive, struct addrinfo **res)
{
	struct addrinfo hints;
	char port[8];
	int r;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
	snprintf(port, sizeof(port), "%d", a->port);
	r = getaddrinfo(a->host, port, &hints, res);
	if (r == EAI_SYSTEM) {
		return -errno;
	}
	if (r == EAI_MEMORY) {
		return CQW_ENOMEM;
	}
	return r == 0 ? 0 : CQW_EADDRNOTAVAIL;
}

/*
 * Connect before deadline (-1: none). The socket is non-blocking for the
 * attempt, so that the wait can time out and ask the signal check; it is
 * blocking again once connected. An AF_UNIX listener with a full backlog
 * says EAGAIN (there is nothing to wait on): asked again every few
 * milliseconds until the deadline. CQW_EINTR if the thread's signal check
 * says stop: the caller closes the socket.
 */
static int
connect_retry(int fd, const struct sockaddr *sa, socklen_t len,
	      int64_t deadline)
{
	int err = 0, r, pause_ms = 1;
	socklen_t elen = sizeof(err);

	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
		return -errno;
	}
	for (;;) {
		if (connect(fd, sa, len) == 0 || errno == EISCONN) {
			break;
		}
		if (errno == EALREADY || errno == EINPROGRESS) {
			r = cqw__io_wait(fd, 1, cqw__remaining_ms(deadline));
			if (r == 0) {
				return CQW_ETIMEDOUT;
			}
			if (r < 0) {
				return r;
			}
			if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) !=
			    0) {
				return -errno;
			}
			if (err != 0) {
				return -err;
			}
			break;
		}
		if (errno == EAGAIN && sa->sa_family == AF_UNIX) {
			if (deadline >= 0 && cqw__remaining_ms(deadline) == 0) {
				return CQW_ETIMEDOUT;
			}
			if (poll(NULL, 0, pause_ms) < 0 && errno == EINTR &&
			    cqw__eintr_stop()) {
				return CQW_EINTR;
			}
			pause_ms = pause_ms < 16 ? pause_ms * 2 : 16;
			continue;
		}
		if (errno != EINTR) {
			return -errno;
		}
		if (cqw__eintr_stop()) {
			return CQW_EINTR;
		}
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) {
		return -errno;
	}
	return 0;
}

/*
 * A new socket for sa, bound and listening (backlog > 0) or connected
 * (backlog == 0). 0 and *out, or an error with nothing left open.
 */
static int
open_one(const struct sockaddr *sa, socklen_t len, int backlog,
	 int64_t deadline, int *out)
{
	/* A listener is ours and non-blocking; see cqw__sock_accept(). */
	int type =
	    SOCK_STREAM | SOCK_CLOEXEC | (backlog > 0 ? SOCK_NONBLOCK : 0);
	int fd = socket(sa->sa_family, type, 0);
	int r = 0, one = 1;

	if (fd < 0) {
		return -errno;
	}
	if (backlog == 0) {
		r = connect_retry(fd, sa, len, deadline);
		if (r == 0 && sa->sa_family != AF_UNIX) {
			/* Frames go out whole already; do not hold them. */
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
				   sizeof(one));
		}
	} else {
		/* As Python's Listener: SO_REUSEADDR for TCP only. */
		if (sa->sa_family != AF_UNIX) {
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one,
				   sizeof(one));
		}
		if (bind(fd, sa, len) != 0 || listen(fd, backlog) != 0) {
			r = -errno;
		}
	}
	if (r < 0) {
		close(fd);
		return r;
	}
	*out = fd;
	return 0;
}

/* Listen (backlog > 0) or connect (backlog == 0) on the address a. */
static int
open_addr(const struct cqw__addr *a, int backlog, int64_t deadline, cqw_fd *out)
{
	struct addrinfo *res, *ai;
	struct sockaddr_un sun;
	int r;

	if (a->kind == CQW__ADDR_UNIX || a->kind == CQW__ADDR_UNIX_ABSTRACT) {
		r = unix_sockaddr(a, &sun);
		if (r < 0) {
			return r;
		}
		return open_one((struct sockaddr *)&sun, (socklen_t)r, backlog,
				deadline, out);
	}
	if (a->kind != CQW__ADDR_TCP) {
		return CQW_EAFNOSUPPORT;
	}
	r = resolve(a, backlog > 0, &res);
	if (r < 0) {
		return r;
	}
	/* The first address that works, as socket.create_connection. */
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		r = open_one(ai->ai_addr, ai->ai_addrlen, backlog, deadline,
			     out);
		if (r == 0 || r == CQW_EINTR || r == CQW_ETIMEDOUT) {
			break; /* the caller decides, not us; or out of time */
		}
	}
	freeaddrinfo(res);
	return r;
}

int
cqw__sock_listen(const struct cqw__addr *a, int backlog, cqw_fd *out)
{
	return open_addr(a, backlog > 0 ? backlog : 1, -1, out);
}

int
cqw__sock_connect(const struct cqw__addr *a, int64_t deadline, cqw_fd *out)
{
	return open_addr(a, 0, deadline, out);
}

/*
 * The listener may be shared by several processes (a prefork server): all
 * of them wake when a peer comes, and only one gets it. So the listener is
 * O_NONBLOCK, and a loser's accept4() says EAGAIN and goes back to poll()
 * with the time left, where a blocking accept4() would sleep past the
 * timeout, maybe for ever. accept4() gives the new socket only the flags
 * asked for (not the listener's O_NONBLOCK), so it comes out blocking, as
 * Python's accept() makes it: it may be handed to a Python peer.
 */
int
cqw__sock_accept(cqw_fd lfd, cqw_fd *out, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : cqw__now_ms() + timeout_ms;
	struct sockaddr_storage ss = { .ss_family = AF_UNSPEC };
	socklen_t len;
	int fd, r, one = 1;

	for (;;) {
		r = cqw__io_wait(lfd, 0, cqw__remaining_ms(deadline));
		if (r == 0) {
			return CQW_ETIMEDOUT;
		}
		if (r < 0) {
			return r;
		}
		len = sizeof(ss);
		fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
		if (fd >= 0) {
			break;
		}
		/* Another process took it, or the peer gave up: wait again. */
		if (errno != EINTR && errno != EAGAIN &&
		    errno != ECONNABORTED) {
			return -errno;
		}
	}
	if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	*out = fd;
	return 0;
}

int
cqw__sock_name(cqw_fd fd, struct cqw__addr *a)
{
	struct sockaddr_storage ss = { .ss_family = AF_UNSPEC };
	socklen_t len = sizeof(ss);

	memset(a, 0, sizeof(*a));
	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
		return -errno;
	}
	if (ss.ss_family == AF_UNIX) {
		const struct sockaddr_un *sun = (const void *)&ss;
		size_t n = len - offsetof(struct sockaddr_un, sun_path);

		if (n > 0 && sun->sun_path[0] == '\0') {
			a->kind = CQW__ADDR_UNIX_ABSTRACT;
			n--;
			memcpy(a->path, sun->sun_path + 1, n);
		} else {
			a->kind = CQW__ADDR_UNIX;
			n = strnlen(sun->sun_path, n);
			memcpy(a->path, sun->sun_path, n);
		}
		a->path[n] = '\0';
		a->path_len = n;
		return 0;
	}
	a->kind = CQW__ADDR_TCP;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)&ss;

		inet_ntop(AF_INET, &sin->sin_addr, a->host, sizeof(a->host));
		a->port = ntohs(sin->sin_port);
	} else {
		const struct sockaddr_in6 *sin6 = (const void *)&ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, a->host, sizeof(a->host));
		a->port = ntohs(sin6->sin6_port);
		a->ipv6_literal = 1;
	}
	return 0;
}

int
cqw__unlink(const char *path)
{
	return unlink(path) == 0 ? 0 : -errno;
}

struct cqw__lsock {
	cqw_fd fd;
	int unlink_path;      /* a filesystem socket we made... */
	uint64_t creator_pid; /* ...in this process (not a forked child) */
	char path[CQW__ADDR_PATH_MAX];
};

int
cqw__listen_open(struct cqw__lsock **out, const struct cqw__addr *a,
		 int backlog, struct cqw__addr *bound)
{
	struct cqw__lsock *l;
	int r;

	if (a->kind == CQW__ADDR_PIPE) {
		return CQW_EAFNOSUPPORT; /* Windows named pipes */
	}
	l = calloc(1, sizeof(*l));
	if (l == NULL) {
		return CQW_ENOMEM;
	}
	r = cqw__sock_listen(a, backlog, &l->fd);
	if (r < 0) {
		free(l);
		return r;
	}
	if (a->kind == CQW__ADDR_UNIX) {
		l->unlink_path = 1;
		l->creator_pid = cqw__process_id();
		memcpy(l->path, a->path, sizeof(l->path));
	}
	r = cqw__sock_name(l->fd, bound);
	if (r < 0) {
		cqw__listen_close(l);
		return r;
	}
	*out = l;
	return 0;
}

int
cqw__listen_accept(struct cqw__lsock *l, cqw_fd *h, int *kind, int timeout_ms)
{
	*kind = CQW__FD_SOCK;
	return cqw__sock_accept(l->fd, h, timeout_ms);
}

cqw_fd
cqw__listen_fileno(const struct cqw__lsock *l)
{
	return l->fd;
}

int
cqw__listen_close(struct cqw__lsock *l)
{
	int r;

	/*
	 * Only the process that bound the path removes it, as CPython's
	 * Finalize does: in a prefork server a worker that closes its
	 * inherited copy must not make the service unreachable.
	 */
	if (l->unlink_path && l->creator_pid == cqw__process_id()) {
		cqw__unlink(l->path);
	}
	r = cqw__io_close(l->fd);
	free(l);
	return r;
}

int
cqw__os_connect(const struct cqw__addr *a, cqw_fd *h, int *kind,
		int64_t deadline)
{
	if (a->kind == CQW__ADDR_PIPE) {
		return CQW_EAFNOSUPPORT; /* Windows named pipes */
	}
	*kind = CQW__FD_SOCK;
	return cqw__sock_connect(a, deadline, h);
}

/* --- servers on the loop ------------------------------------------------ */

int
cqw__listen_accept_io(struct cqw__lsock *l, struct cqw__io *io, void *scratch)
{
	(void)scratch;
	io->op = CQW__IO_ACCEPT;
	io->handle = l->fd;
	io->kind = CQW__FD_SOCK;
	io->buf = NULL;
	io->len = 0;
	return 0;
}

int
cqw__listen_accept_done(struct cqw__lsock *l, struct cqw__io *io, cqw_fd *h,
			int *kind)
{
	struct sockaddr_storage ss = { .ss_family = AF_UNSPEC };
	socklen_t len = sizeof(ss);
	int fd = (int)io->result, one = 1;

	(void)l;
	/* A backend's accept gives a blocking socket, as cqw__sock_accept. */
	if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 &&
	    (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)) {
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	*h = fd;
	*kind = CQW__FD_SOCK;
	return 0;
}

void
cqw__listen_accept_drop(struct cqw__lsock *l, struct cqw__io *io)
{
	(void)l;
	(void)io;
}

/* connect() once more on io's socket, to the sockaddr in scratch. */
static int
connect_step(struct cqw__io *io, void *scratch)
{
	const struct sockaddr *sa = scratch;

	for (;;) {
		if (connect(io->handle, sa, (socklen_t)io->len) == 0 ||
		    errno == EISCONN) {
			return 1;
		}
		if (errno == EINPROGRESS || errno == EALREADY) {
			io->op = CQW__IO_CONNECT;
			return 0;
		}
		if (errno == EAGAIN && sa->sa_family == AF_UNIX) {
			return CQW_EAGAIN; /* a full backlog: later */
		}
		if (errno != EINTR) {
			return -errno;
		}
	}
}

int
cqw__os_connect_begin(const struct cqw__addr *a, struct cqw__io *io,
		      void *scratch)
{
	struct addrinfo *res = NULL;
	const struct sockaddr *sa;
	socklen_t len;
	int fd, r;

	if (a->kind == CQW__ADDR_UNIX || a->kind == CQW__ADDR_UNIX_ABSTRACT) {
		r = unix_sockaddr(a, scratch);
		if (r < 0) {
			return r;
		}
		len = (socklen_t)r;
	} else if (a->kind == CQW__ADDR_TCP) {
		/* The first address only: one attempt per op. */
		r = resolve(a, 0, &res);
		if (r < 0) {
			return r;
		}
		if (res->ai_addrlen > CQW__SRV_SCRATCH) {
			freeaddrinfo(res);
			return CQW_EAFNOSUPPORT;
		}
		memcpy(scratch, res->ai_addr, res->ai_addrlen);
		len = res->ai_addrlen;
		freeaddrinfo(res);
	} else {
		return CQW_EAFNOSUPPORT; /* Windows named pipes */
	}
	sa = scratch;
	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
		    0);
	if (fd < 0) {
		return -errno;
	}
	io->handle = fd;
	io->kind = CQW__FD_SOCK;
	io->buf = scratch;
	io->len = len;
	r = connect_step(io, scratch);
	if (r < 0 && r != CQW_EAGAIN) {
		close(fd);
	}
	return r;
}

int
cqw__os_connect_again(struct cqw__io *io, void *scratch)
{
	return connect_step(io, scratch);
}

int
cqw__os_connect_done(struct cqw__io *io, int *kind)
{
	const struct sockaddr *sa = io->buf;
	int fd = io->handle, one = 1;

	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) {
		return -errno;
	}
	if (sa->sa_family != AF_UNIX) {
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	*kind = CQW__FD_SOCK;
	return 0;
}
