/*
 * Listener and Client endpoints on Windows (platform.h): Winsock TCP over
 * IPv4 and IPv6 here, named pipes in pipe.c (this file dispatches), and
 * unix: addresses refused with CQW_EAFNOSUPPORT (Python's AF_UNIX is
 * not offered on Windows either).
 *
 * Sockets are made with WSA_FLAG_OVERLAPPED, so the iocp backend can
 * use them, and WSA_FLAG_NO_HANDLE_INHERIT, so a child process started
 * meanwhile does not keep them open. As Python's, connected and accepted
 * sockets are blocking; the listening socket is non-blocking, so that an
 * accept that loses a race with another process sharing it goes back to
 * waiting (see cqw__listen_accept below). No SO_REUSEADDR: on Windows it
 * would let a second listener steal the port, and Python does not set it
 * there.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "win/win.h"

#ifndef WSA_FLAG_NO_HANDLE_INHERIT
#define WSA_FLAG_NO_HANDLE_INHERIT 0x80
#endif

static INIT_ONCE wsa_once = INIT_ONCE_STATIC_INIT;
static int wsa_result;

static BOOL CALLBACK
wsa_start(INIT_ONCE *once, void *param, void **ctx)
{
	WSADATA data;
	int r;

	(void)once;
	(void)param;
	(void)ctx;
	/* Never WSACleanup()'d: the process's sockets need it to its end. */
	r = WSAStartup(MAKEWORD(2, 2), &data);
	wsa_result = r == 0 ? 0 : cqw__win_error((DWORD)r);
	return TRUE;
}

int
cqw__wsa_init(void)
{
	InitOnceExecuteOnce(&wsa_once, wsa_start, NULL, NULL);
	return wsa_result;
}

static int
wsa_last(void)
{
	int r = cqw__win_error((DWORD)WSAGetLastError());

	return r == 0 ? CQW_EIO : r;
}

static int
set_blocking(SOCKET s, int blocking)
{
	u_long nb = blocking ? 0 : 1;

	return ioctlsocket(s, (long)FIONBIO, &nb) == 0 ? 0 : wsa_last();
}

static void
set_nodelay(SOCKET s)
{
	BOOL one = TRUE;

	/* Frames go out whole already; do not hold them back. */
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, (const char *)&one,
		   sizeof(one));
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
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
	snprintf(port, sizeof(port), "%d", a->port);
	r = getaddrinfo(a->host, port, &hints, res);
	if (r == 0) {
		return 0;
	}
	if (r == EAI_MEMORY) {
		return CQW_ENOMEM;
	}
	return CQW_EADDRNOTAVAIL;
}

int
cqw__sock_wait(SOCKET s, int write, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : cqw__now_ms() + timeout_ms;
	int sliced = cqw__signal_check_set() && timeout_ms != CQW__WIN_NOSTOP;
	struct timeval tv, *tvp;
	fd_set set, ex;
	int ms, r;

	for (;;) {
		ms = cqw__remaining_ms(deadline);
		if (sliced && (ms < 0 || ms > CQW__WIN_SLICE_MS)) {
			ms = CQW__WIN_SLICE_MS;
		}
		tvp = NULL;
		if (ms >= 0) {
			tv.tv_sec = ms / 1000;
			tv.tv_usec = (ms % 1000) * 1000;
			tvp = &tv;
		}
		FD_ZERO(&set);
		FD_ZERO(&ex);
		FD_SET(s, &set);
		FD_SET(s, &ex);
		r = select(0, write ? NULL : &set, write ? &set : NULL, &ex,
			   tvp);
		if (r == SOCKET_ERROR) {
			return wsa_last();
		}
		if (r > 0) {
			return 1;
		}
		if (deadline >= 0 && cqw__remaining_ms(deadline) == 0) {
			return 0;
		}
		if (sliced && cqw__eintr_stop()) {
			return CQW_EINTR;
		}
	}
}

/*
 * Connect s to sa: non-blocking, so that the wait (up to the system's
 * SYN retries) can ask the signal check; blocking again once connected.
 */
static int
connect_wait(SOCKET s, const struct sockaddr *sa, int len, int64_t deadline)
{
	int err = 0, elen = sizeof(err), r;

	r = set_blocking(s, 0);
	if (r < 0) {
		return r;
	}
	if (connect(s, sa, len) != 0) {
		if (WSAGetLastError() != WSAEWOULDBLOCK) {
			return wsa_last();
		}
		r = cqw__sock_wait(s, 1, cqw__remaining_ms(deadline));
		if (r == 0) {
			return CQW_ETIMEDOUT;
		}
		if (r < 0) {
			return r;
		}
		if (getsockopt(s, SOL_SOCKET, SO_ERROR, (char *)&err, &elen) !=
		    0) {
			return wsa_last();
		}
		if (err != 0) {
			return cqw__win_error((DWORD)err);
		}
	}
	return set_blocking(s, 1);
}

/*
 * A new socket for ai: listening (backlog > 0) or connected (backlog ==
 * 0). 0 and *out, or an error with nothing left open.
 */
static int
open_one(const struct addrinfo *ai, int backlog, int64_t deadline, SOCKET *out)
{
	SOCKET s = WSASocketW(ai->ai_family, SOCK_STREAM, IPPROTO_TCP, NULL, 0,
			      WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
	int r = 0;

	if (s == INVALID_SOCKET) {
		return wsa_last();
	}
	if (backlog == 0) {
		r = connect_wait(s, ai->ai_addr, (int)ai->ai_addrlen, deadline);
		if (r == 0) {
			set_nodelay(s);
		}
	} else if (bind(s, ai->ai_addr, (int)ai->ai_addrlen) != 0 ||
		   listen(s, backlog) != 0) {
		r = wsa_last();
	} else {
		r = set_blocking(s, 0);
	}
	if (r < 0) {
		closesocket(s);
		return r;
	}
	*out = s;
	return 0;
}

static int
open_addr(const struct cqw__addr *a, int backlog, int64_t deadline, SOCKET *out)
{
	struct addrinfo *res, *ai;
	int r = cqw__wsa_init();

	if (r < 0) {
		return r;
	}
	r = resolve(a, backlog > 0, &res);
	if (r < 0) {
		return r;
	}
	/* The first address that works, as socket.create_connection. */
	r = CQW_EADDRNOTAVAIL;
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		r = open_one(ai, backlog, deadline, out);
		if (r == 0 || r == CQW_EINTR || r == CQW_ETIMEDOUT) {
			break; /* the caller decides, not us; or out of time */
		}
	}
	freeaddrinfo(res);
	return r;
}

/* The address s is bound to, as a struct cqw__addr. */
static int
sock_name(SOCKET s, struct cqw__addr *a)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	const void *ip;

	memset(a, 0, sizeof(*a));
	memset(&ss, 0, sizeof(ss));
	if (getsockname(s, (struct sockaddr *)&ss, &len) != 0) {
		return wsa_last();
	}
	a->kind = CQW__ADDR_TCP;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)&ss;

		ip = &sin->sin_addr;
		a->port = ntohs(sin->sin_port);
	} else {
		const struct sockaddr_in6 *sin6 = (const void *)&ss;

		ip = &sin6->sin6_addr;
		a->port = ntohs(sin6->sin6_port);
		a->ipv6_literal = 1;
	}
	if (inet_ntop(ss.ss_family, ip, a->host, sizeof(a->host)) == NULL) {
		return wsa_last();
	}
	return 0;
}

int
cqw__listen_open(struct cqw__lsock **out, const struct cqw__addr *a,
		 int backlog, struct cqw__addr *bound)
{
	struct cqw__lsock *l;
	int r;

	if (a->kind == CQW__ADDR_UNIX || a->kind == CQW__ADDR_UNIX_ABSTRACT) {
		return CQW_EAFNOSUPPORT;
	}
	l = calloc(1, sizeof(*l));
	if (l == NULL) {
		return CQW_ENOMEM;
	}
	l->sock = INVALID_SOCKET;
	if (a->kind == CQW__ADDR_PIPE) {
		r = cqw__pipe_listen(l, a);
		if (r < 0) {
			goto out_free;
		}
		*bound = *a;
	} else if (a->kind == CQW__ADDR_TCP) {
		r = open_addr(a, backlog > 0 ? backlog : 1, -1, &l->sock);
		if (r < 0) {
			goto out_free;
		}
		r = sock_name(l->sock, bound);
		if (r < 0) {
			closesocket(l->sock);
			goto out_free;
		}
	} else {
		r = CQW_EAFNOSUPPORT;
		goto out_free;
	}
	*out = l;
	return 0;

out_free:
	free(l);
	return r;
}

int
cqw__listen_accept(struct cqw__lsock *l, cqw_fd *h, int *kind, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : cqw__now_ms() + timeout_ms;
	SOCKET s;
	int r;

	if (l->is_pipe) {
		r = cqw__pipe_accept(l, h, timeout_ms);
		if (r == 0) {
			*kind = CQW__FD_MSGPIPE;
		}
		return r;
	}
	for (;;) {
		r = cqw__sock_wait(l->sock, 0, cqw__remaining_ms(deadline));
		if (r == 0) {
			return CQW_ETIMEDOUT;
		}
		if (r < 0) {
			return r;
		}
		s = accept(l->sock, NULL, NULL);
		if (s != INVALID_SOCKET) {
			break;
		}
		/* Another process took it, or the peer gave up: wait again. */
		r = WSAGetLastError();
		if (r != WSAEWOULDBLOCK && r != WSAECONNRESET &&
		    r != WSAEINTR) {
			return cqw__win_error((DWORD)r);
		}
	}
	/*
	 * An accepted socket takes the listener's properties: overlapped
	 * (wanted) and non-blocking (not: Python's accept() is blocking).
	 * Inheritance is set again in case it was not inherited.
	 */
	r = set_blocking(s, 1);
	if (r < 0) {
		closesocket(s);
		return r;
	}
	SetHandleInformation((HANDLE)s, HANDLE_FLAG_INHERIT, 0);
	set_nodelay(s);
	*h = (cqw_fd)s;
	*kind = CQW__FD_SOCK;
	return 0;
}

cqw_fd
cqw__listen_fileno(const struct cqw__lsock *l)
{
	/* A pipe listener is a set of instances: no one handle is it. */
	return l->is_pipe ? (cqw_fd)CQW_EOPNOTSUPP : (cqw_fd)l->sock;
}

int
cqw__listen_close(struct cqw__lsock *l)
{
	int r = 0;

	if (l->is_pipe) {
		cqw__pipe_listen_close(l);
	} else if (closesocket(l->sock) != 0) {
		r = wsa_last();
	}
	free(l);
	return r;
}

int
cqw__os_connect(const struct cqw__addr *a, cqw_fd *h, int *kind,
		int64_t deadline)
{
	SOCKET s;
	int r;

	switch (a->kind) {
	case CQW__ADDR_PIPE:
		r = cqw__pipe_connect(a, h, deadline);
		if (r == 0) {
			*kind = CQW__FD_MSGPIPE;
		}
		return r;
	case CQW__ADDR_TCP:
		r = open_addr(a, 0, deadline, &s);
		if (r == 0) {
			*h = (cqw_fd)s;
			*kind = CQW__FD_SOCK;
		}
		return r;
	default:
		return CQW_EAFNOSUPPORT;
	}
}

int
cqw__sock_probe_start(SOCKET s, struct cqw__win_ov *o)
{
	WSABUF b = { 0, NULL };
	DWORD n = 0, flags = 0;
	int err;

	ResetEvent(o->ev);
	if (WSARecv(s, &b, 1, &n, &flags, &o->ov, NULL) == 0) {
		return 1; /* readable now; a zero-byte receive takes nothing */
	}
	err = WSAGetLastError();
	if (err == WSA_IO_PENDING) {
		return 0;
	}
	/*
	 * A socket that is not connected (a listener: "readable" is a peer
	 * to accept) cannot take a receive: the caller asks select().
	 */
	if (err == WSAENOTCONN || err == WSAEINVAL) {
		return CQW_ENOTCONN;
	}
	/* An error is readable too: the receive will report it. */
	return err == WSAENOTSOCK ? CQW_ENOTSOCK : 1;
}

int
cqw__sock_probe_end(SOCKET s, struct cqw__win_ov *o)
{
	DWORD n, err = cqw__win_ov_reap((HANDLE)s, o, 1, &n);

	/* Cancelled: not ready. Any other end is for the receive to say. */
	return err != ERROR_OPERATION_ABORTED;
}

/*
 * --- servers on the loop -------------------------------------------------
 * Not yet on Windows: AcceptEx / ConnectNamedPipe / ConnectEx fill these
 * (issue 9). Until then CQW_OP_ACCEPT and CQW_OP_CONNECT complete with
 * CQW_EOPNOTSUPP there; the synchronous calls work.
 */
int
cqw__listen_accept_io(struct cqw__lsock *l, struct cqw__io *io, void *scratch)
{
	(void)l;
	(void)io;
	(void)scratch;
	return CQW_EOPNOTSUPP;
}

int
cqw__listen_accept_done(struct cqw__lsock *l, struct cqw__io *io, cqw_fd *h,
			int *kind)
{
	(void)l;
	(void)io;
	(void)h;
	(void)kind;
	return CQW_EOPNOTSUPP;
}

void
cqw__listen_accept_drop(struct cqw__lsock *l, struct cqw__io *io)
{
	(void)l;
	(void)io;
}

int
cqw__os_connect_begin(const struct cqw__addr *a, struct cqw__io *io,
		      void *scratch)
{
	(void)a;
	(void)io;
	(void)scratch;
	return CQW_EOPNOTSUPP;
}

int
cqw__os_connect_again(struct cqw__io *io, void *scratch)
{
	(void)io;
	(void)scratch;
	return CQW_EOPNOTSUPP;
}

int
cqw__os_connect_done(struct cqw__io *io, int *kind)
{
	(void)io;
	(void)kind;
	return CQW_EOPNOTSUPP;
}
