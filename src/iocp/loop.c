/*
 * The IOCP backend: one I/O completion port per loop. Every handle that
 * carries ios is bound to the port once (attach). Sockets and byte pipes
 * get FILE_SKIP_COMPLETION_PORT_ON_SUCCESS, so a call that succeeds at
 * once queues no packet and start() completes its io there. Message
 * pipes do not (see attach): every io of theirs completes by its packet.
 * A handle stays bound to its port for good (Windows has no call to undo
 * it), so detach() says CQW_EBUSY: the connection is this loop's until it
 * closes.
 *
 * The OVERLAPPED of an io lives in io->backend_priv; a packet's
 * lpOverlapped names it (see below). io->backend_state:
 *
 *   IO_IDLE     not started here, or completed (cqw__loop_io_complete)
 *   IO_PENDING  the kernel has it: exactly one packet will come
 *   IO_PROBE    a socket PEEK waits on a zero-byte receive: one packet
 *
 * and, or'ed into the last two, IO_CANCELLING: cancel() was asked.
 *
 * start() moves IO_IDLE to IO_PENDING / IO_PROBE, or completes the io at
 * once (skip-on-success, or a call that failed and so queues nothing).
 * A packet in wait() completes IO_PENDING; for IO_PROBE it peeks (which
 * may need one more probe). cancel() is CancelIoEx on the io's own
 * OVERLAPPED: the io still completes once, through its packet. A cancel
 * that comes after a probe's packet is queued finds nothing to cancel,
 * so the bit is what stops a peek that finds the bytes gone from probing
 * again: it completes with CQW_ECANCELED instead. done() clears it.
 *
 * The port gets the completions of every overlapped call on a bound
 * handle's file object, also those of a duplicate of the handle in
 * another process (CreateIoCompletionPort's documentation warns of it:
 * Python's processes share pipe handles so), whose OVERLAPPED this
 * process must never touch. So the ios with a packet to come are kept
 * in a hash of their OVERLAPPED addresses (chained through io->next,
 * which is the backend's while it has the io: no memory per io), and a
 * packet whose OVERLAPPED is not there, or not complete, is dropped.
 *
 * The accepts and connects of servers on the loop (CQW__IO_ACCEPT,
 * CQW__IO_CONNECT: src/common/server.c) are ios like the others: AcceptEx
 * on the listening socket, ConnectNamedPipe on a new pipe instance,
 * ConnectEx on a bound socket, each from what src/win put in io->buf
 * (struct cqw__win_srv), each completing once through its packet, at once
 * on skip-on-success, or at once when the call failed; cancel() is the
 * same CancelIoEx. What an accept leaves (the accepted socket, a
 * cancelled instance) is src/win's to keep or close.
 *
 * Handles must be open for overlapped I/O (FILE_FLAG_OVERLAPPED, or
 * sockets from socket()/WSASocket with WSA_FLAG_OVERLAPPED): I/O on a
 * synchronous handle would block in start(). Overlapped I/O that is not
 * the loop's on a bound handle (the synchronous half in src/win) must use
 * an OVERLAPPED whose hEvent has its low bit set, so that it queues no
 * packet here, and must not wait on the handle itself (the
 * FILE_SKIP_SET_EVENT_ON_HANDLE mode set here stops signalling it).
 */
#include "win/win.h" /* Windows headers, the signal check's slices */

#include <assert.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/backend.h"
#include "common/loop.h"

/* STATUS_HANDLES_CLOSED as a Win32 code; not in every mingw-w64. */
#ifndef ERROR_HANDLES_CLOSED
#define ERROR_HANDLES_CLOSED 676L
#endif

/* Completions taken per GetQueuedCompletionStatusEx call. */
#define IOCP_BATCH 64

/*
 * Buckets of the in-flight hash: a start, then doubled by attach() to
 * stay at least half the handles bound (two ios each at most: one send,
 * one receive), up to a limit past which chains just grow longer.
 */
#define IOCP_BUCKETS_MIN 64
#define IOCP_BUCKETS_MAX (64 * 1024)

/* Completion keys: every bound handle has IOCP_KEY_IO. */
#define IOCP_KEY_IO ((ULONG_PTR)1)
#define IOCP_KEY_WAKE ((ULONG_PTR)2)

/* The longest transfer one call takes (DWORD / ULONG counts). */
#define IOCP_MAX_XFER 0xffffffffu

enum { IO_IDLE = 0, IO_PENDING = 1, IO_PROBE = 2, IO_CANCELLING = 4 };

/* The io's state without the IO_CANCELLING bit. */
#define IO_STATE(io) ((io)->backend_state & ~IO_CANCELLING)

/* What an io keeps in io->backend_priv. */
struct iocp_ov {
	OVERLAPPED ov; /* first: a packet's lpOverlapped is the io's */
	DWORD flags;   /* WSARecv's flags, which it may write back */
};

_Static_assert(sizeof(struct iocp_ov) <=
		   sizeof(((struct cqw__io *)0)->backend_priv),
	       "the OVERLAPPED must fit in io->backend_priv");
_Static_assert(_Alignof(struct iocp_ov) <= _Alignof(uint64_t),
	       "io->backend_priv must be aligned for an OVERLAPPED");
/* The gather is handed to WSASend as it is (src/win/os.h). */
_Static_assert(sizeof(cqw__iov) == sizeof(WSABUF) &&
		   offsetof(cqw__iov, len) == offsetof(WSABUF, len) &&
		   offsetof(cqw__iov, base) == offsetof(WSABUF, buf),
	       "cqw__iov must have WSABUF's layout");

struct iocp_state {
	HANDLE port;
	volatile LONG wake_posted; /* a wake packet is on the port */
	/*
	 * Sockets and byte pipes that run without skip-on-success (the
	 * mode was refused, or a socket of a non-IFS provider): their
	 * inline successes still queue a packet. Nearly always empty.
	 */
	cqw_fd *noskip;
	size_t nnoskip, capnoskip;
	/* The ios with a packet to come, by OVERLAPPED address. */
	struct cqw__io **bucket;
	size_t nbucket; /* a power of two */
	size_t nbound;	/* handles attached, which never leave */
	OVERLAPPED_ENTRY ents[IOCP_BATCH];
};

static char zero_byte; /* a valid address for zero-length buffers */

static struct iocp_state *
state(cqw_loop *loop)
{
	return loop->backend;
}

static struct iocp_ov *
io_ov(struct cqw__io *io)
{
	return (struct iocp_ov *)(void *)io->backend_priv;
}

/*
 * A Win32 or Winsock error as a CQW_E* code: src/win's map, except that
 * an aborted or interrupted io is CQW_ECANCELED (the synchronous calls
 * never see those: they wait for what they cancel).
 */
static int
map_error(DWORD err)
{
	switch (err) {
	case ERROR_OPERATION_ABORTED: /* == WSA_OPERATION_ABORTED */
	case ERROR_HANDLES_CLOSED:    /* wine: see finish() */
	case WSAEINTR:
		return CQW_ECANCELED;
	default:
		return cqw__win_error(err);
	}
}

/*
 * The error an io ends with. A pipe whose writer is gone ends a receive:
 * a stream's with 0 bytes (end of file, as a socket's), a message pipe's
 * with CQW_EOF, since 0 there is a zero-length message (internal.h).
 */
static int64_t
io_error(const struct cqw__io *io, DWORD err)
{
	int r;

	if (io->op == CQW__IO_ACCEPT || io->op == CQW__IO_CONNECT) {
		r = map_error(err);
		/*
		 * A peer that reset or gave up before AcceptEx took it
		 * (ERROR_NETNAME_DELETED) ends that peer, not the listener:
		 * "aborted" is what server.c accepts again after.
		 */
		return io->op == CQW__IO_ACCEPT && r == CQW_ECONNRESET
			   ? CQW_ECONNABORTED
			   : r;
	}
	if (io->op != CQW__IO_SEND &&
	    (err == ERROR_BROKEN_PIPE || err == ERROR_NO_DATA ||
	     err == ERROR_PIPE_NOT_CONNECTED || err == ERROR_HANDLE_EOF)) {
		return io->kind == CQW__FD_MSGPIPE ? CQW_EOF : 0;
	}
	return map_error(err);
}

/* 1 if io's handle has skip-on-success: a success at once queues nothing. */
static int
skips(const struct iocp_state *s, const struct cqw__io *io)
{
	size_t i;

	if (io->kind == CQW__FD_MSGPIPE) {
		return 0; /* see iocp_attach */
	}
	for (i = 0; i < s->nnoskip; i++) {
		if (s->noskip[i] == io->handle) {
			return 0;
		}
	}
	return 1;
}

static size_t
bucket_of(const struct iocp_state *s, const OVERLAPPED *ov)
{
	uint64_t h = (uint64_t)(uintptr_t)ov * 0x9e3779b97f4a7c15u;

	return (size_t)(h >> 32) & (s->nbucket - 1);
}

/* io has a packet to come: its OVERLAPPED goes in the hash. */
static void
track(struct iocp_state *s, struct cqw__io *io)
{
	struct cqw__io **b = &s->bucket[bucket_of(s, &io_ov(io)->ov)];

	io->next = *b;
	*b = io;
}

/*
 * The io whose OVERLAPPED a packet names, taken out of the hash, or NULL
 * if none of ours is at that address. Only addresses are compared: ov is
 * never read.
 */
static struct cqw__io *
untrack(struct iocp_state *s, const OVERLAPPED *ov)
{
	struct cqw__io **pp = &s->bucket[bucket_of(s, ov)], *io;

	for (; (io = *pp) != NULL; pp = &io->next) {
		if (&io_ov(io)->ov == ov) {
			*pp = io->next;
			io->next = NULL;
			return io;
		}
	}
	return NULL;
}

/* Room for one more bound handle's ios; CQW_ENOMEM changes nothing. */
static int
grow_buckets(struct iocp_state *s)
{
	struct cqw__io **old = s->bucket, *io, *next;
	size_t n = s->nbucket, i;

	if (s->nbound + 1 <= 2 * n || n >= IOCP_BUCKETS_MAX) {
		return 0;
	}
	s->bucket = calloc(2 * n, sizeof(*s->bucket));
	if (s->bucket == NULL) {
		s->bucket = old;
		return CQW_ENOMEM;
	}
	s->nbucket = 2 * n;
	for (i = 0; i < n; i++) {
		for (io = old[i]; io != NULL; io = next) {
			next = io->next;
			track(s, io);
		}
	}
	free(old);
	return 0;
}

static void
done(cqw_loop *loop, struct cqw__io *io, int64_t result, unsigned flags)
{
	io->backend_state = IO_IDLE;
	cqw__loop_io_complete(loop, io, result, flags);
}

static void probe(cqw_loop *loop, struct cqw__io *io);

/*
 * A socket PEEK after its zero-byte receive said "readable": copy what is
 * queued without consuming it. 1 if the io completed, 0 if the bytes went
 * to another reader meanwhile and it must wait again.
 *
 * MSG_PEEK is documented for non-overlapped receives only, so the peek
 * itself is a plain recv(). It cannot block: it asks for at most what
 * FIONREAD counted, and with nothing counted it runs only if select()
 * says the socket is readable, which then means end of file or an error,
 * which recv() reports at once. (A reader in another process taking the
 * bytes between FIONREAD and recv() would make it wait for the next
 * ones: sharing a socket between readers needs their lock anyway.)
 */
static int
peek_now(cqw_loop *loop, struct cqw__io *io)
{
	SOCKET s = (SOCKET)io->handle;
	struct timeval tv = { 0, 0 };
	u_long avail = 0;
	size_t len = io->len;
	fd_set rd;
	int n;

	if (ioctlsocket(s, FIONREAD, &avail) != 0) {
		done(loop, io, map_error((DWORD)WSAGetLastError()), 0);
		return 1;
	}
	if (avail == 0) {
		FD_ZERO(&rd);
		FD_SET(s, &rd);
		n = select(0, &rd, NULL, NULL, &tv);
		if (n < 0) {
			done(loop, io, map_error((DWORD)WSAGetLastError()), 0);
			return 1;
		}
		if (n == 0) {
			return 0;
		}
	} else if (len > avail) {
		len = avail;
	}
	if (len > INT_MAX) {
		len = INT_MAX;
	}
	n = recv(s, len > 0 ? io->buf : &zero_byte, (int)len, MSG_PEEK);
	if (n < 0) {
		done(loop, io, map_error((DWORD)WSAGetLastError()), 0);
	} else {
		done(loop, io, n, 0);
	}
	return 1;
}

/*
 * The io's call finished (its packet came, or it succeeded at once with
 * no packet to come): read its status from its OVERLAPPED and complete
 * it, or, for a PEEK's probe, peek.
 */
static void
finish(cqw_loop *loop, struct cqw__io *io)
{
	struct iocp_ov *o = io_ov(io);
	DWORD n = 0, flags = 0, err = 0;
	DWORD left = 0;
	BOOL ok;

	if (io->kind == CQW__FD_SOCK) {
		ok = WSAGetOverlappedResult((SOCKET)io->handle, &o->ov, &n,
					    FALSE, &flags);
		if (!ok) {
			err = (DWORD)WSAGetLastError();
			/*
			 * The socket was closed under the io (the loop
			 * never does that: it cancels and waits first), so
			 * its status cannot be asked for: it was aborted.
			 * wine: such an io completes with status 0x8000000A
			 * (STATUS_HANDLES_CLOSED, ERROR_HANDLES_CLOSED)
			 * where Windows says WSA_OPERATION_ABORTED, and
			 * asking for it then says WSAENOTSOCK.
			 */
			if (err == WSAENOTSOCK) {
				err = ERROR_OPERATION_ABORTED;
			}
		}
	} else {
		ok = GetOverlappedResult((HANDLE)io->handle, &o->ov, &n, FALSE);
		err = ok ? 0 : GetLastError();
	}
	if (ok && IO_STATE(io) == IO_PROBE) {
		/*
		 * Readable, but the bytes went to another reader before the
		 * peek: wait again, unless a cancel was asked meanwhile (it
		 * found this probe done, so nothing else would end the io).
		 */
		if (peek_now(loop, io)) {
			return;
		}
		if (io->backend_state & IO_CANCELLING) {
			done(loop, io, CQW_ECANCELED, 0);
			return;
		}
		probe(loop, io);
		return;
	}
	if (ok) {
		done(loop, io, n, 0);
		return;
	}
	if (io->op == CQW__IO_ACCEPT && io->kind == CQW__FD_MSGPIPE &&
	    (err == ERROR_PIPE_CONNECTED || err == ERROR_NO_DATA)) {
		done(loop, io, 0, 0); /* connected: see srv_start */
		return;
	}
	if (err == ERROR_MORE_DATA && io->kind == CQW__FD_MSGPIPE &&
	    io->op == CQW__IO_RECV) {
		/*
		 * The message is longer than buf: n bytes of it are in buf,
		 * the rest is still first in the pipe. If the count cannot
		 * be had, io->more stays 0: "unknown, at least one byte".
		 */
		if (PeekNamedPipe((HANDLE)io->handle, NULL, 0, NULL, NULL,
				  &left)) {
			io->more = left;
		}
		done(loop, io, n, CQW__CF_MSG_MORE);
		return;
	}
	done(loop, io, io_error(io, err), 0);
}

/*
 * What a call that takes an OVERLAPPED said: ok is its success, err its
 * error otherwise. Pending: a packet comes. Success: complete now, unless
 * the handle runs without skip-on-success (then a packet comes too).
 * ERROR_MORE_DATA on a message pipe, which has no skip-on-success: the
 * read completed with a warning, and its packet is queued as for a
 * success (asyncio's proactor relies on that packet too). Any other
 * error: the io never started and queues nothing.
 */
static void
issued(cqw_loop *loop, struct cqw__io *io, int ok, DWORD err, int st)
{
	io->backend_state = st | (io->backend_state & IO_CANCELLING);
	if (ok && skips(state(loop), io)) {
		finish(loop, io);
		return;
	}
	if (ok || err == ERROR_IO_PENDING || err == WSA_IO_PENDING ||
	    (err == ERROR_MORE_DATA && io->kind == CQW__FD_MSGPIPE)) {
		track(state(loop), io);
		return;
	}
	done(loop, io, io_error(io, err), 0);
}

/* The zero-byte receive a socket PEEK waits on for readability. */
static void
probe(cqw_loop *loop, struct cqw__io *io)
{
	struct iocp_ov *o = io_ov(io);
	WSABUF b = { 0, &zero_byte };
	int r;

	memset(&o->ov, 0, sizeof(o->ov));
	o->flags = 0;
	r = WSARecv((SOCKET)io->handle, &b, 1, NULL, &o->flags, &o->ov, NULL);
	issued(loop, io, r == 0, r == 0 ? 0 : (DWORD)WSAGetLastError(),
	       IO_PROBE);
}

static void
sock_start(cqw_loop *loop, struct cqw__io *io)
{
	struct iocp_ov *o = io_ov(io);
	WSABUF b;
	int r;

	switch (io->op) {
	case CQW__IO_RECV:
		b.buf = io->len > 0 ? io->buf : &zero_byte;
		b.len =
		    io->len > IOCP_MAX_XFER ? IOCP_MAX_XFER : (ULONG)io->len;
		r = WSARecv((SOCKET)io->handle, &b, 1, NULL, &o->flags, &o->ov,
			    NULL);
		break;
	case CQW__IO_SEND:
		if (io->iovcnt < 0 || io->iovcnt > CQW__IOV_MAX ||
		    (io->iovcnt > 0 && io->iov == NULL)) {
			done(loop, io, CQW_EINVAL, 0);
			return;
		}
		if (io->iovcnt == 0) {
			done(loop, io, 0, 0); /* nothing to send */
			return;
		}
		/* WSASend captures the WSABUFs before it returns. */
		r = WSASend((SOCKET)io->handle, (WSABUF *)(void *)io->iov,
			    (DWORD)io->iovcnt, NULL, 0, &o->ov, NULL);
		break;
	case CQW__IO_PEEK:
		probe(loop, io);
		return;
	default:
		done(loop, io, CQW_EINVAL, 0);
		return;
	}
	issued(loop, io, r == 0, r == 0 ? 0 : (DWORD)WSAGetLastError(),
	       IO_PENDING);
}

/*
 * The one buffer a file write takes from the gather: a message pipe's
 * message is one WriteFile, so at most one element may hold bytes (the
 * message framer gives one; more would need a copy, and start() takes no
 * memory: CQW_EINVAL). A byte pipe writes the first element that holds
 * bytes; the stream framer resumes after a short write.
 */
static int
file_gather(const struct cqw__io *io, char **base, size_t *len)
{
	int i, found = 0;

	*base = &zero_byte;
	*len = 0;
	if (io->iovcnt < 0 || (io->iovcnt > 0 && io->iov == NULL)) {
		return CQW_EINVAL;
	}
	for (i = 0; i < io->iovcnt; i++) {
		if (CQW__IOV_LEN(&io->iov[i]) == 0) {
			continue;
		}
		if (found && io->kind == CQW__FD_MSGPIPE) {
			return CQW_EINVAL;
		}
		if (!found) {
			*base = CQW__IOV_BASE(&io->iov[i]);
			*len = CQW__IOV_LEN(&io->iov[i]);
			found = 1;
		}
	}
	return 0;
}

static void
file_start(cqw_loop *loop, struct cqw__io *io)
{
	struct iocp_ov *o = io_ov(io);
	HANDLE h = (HANDLE)io->handle;
	size_t len;
	char *base;
	BOOL ok;
	int r;

	switch (io->op) {
	case CQW__IO_RECV:
		/*
		 * A zero-byte read of a message pipe takes a zero-length
		 * message at its head (Windows 8 and later, the version
		 * cqwire builds for: WIRE.md 7.4) and leaves a longer one
		 * whole (ERROR_MORE_DATA).
		 */
		len = io->len > IOCP_MAX_XFER ? IOCP_MAX_XFER : io->len;
		ok = ReadFile(h, len > 0 ? io->buf : &zero_byte, (DWORD)len,
			      NULL, &o->ov);
		break;
	case CQW__IO_SEND:
		r = file_gather(io, &base, &len);
		if (r == 0 && len > IOCP_MAX_XFER) {
			if (io->kind == CQW__FD_MSGPIPE) {
				r = CQW_EMSGSIZE; /* WIRE.md 7.2: < 4 GiB */
			}
			len = IOCP_MAX_XFER;
		}
		if (r < 0) {
			done(loop, io, r, 0);
			return;
		}
		ok = WriteFile(h, base, (DWORD)len, NULL, &o->ov);
		break;
	default:
		/* PEEK is for sockets; a pipe's readiness is src/win's. */
		done(loop, io, CQW_EOPNOTSUPP, 0);
		return;
	}
	issued(loop, io, ok, ok ? 0 : GetLastError(), IO_PENDING);
}

/*
 * Servers on the loop (src/common/server.c): the accept or connect call
 * that src/win set up in io->buf (struct cqw__win_srv, win.h).
 *
 * A pipe instance's ConnectNamedPipe that finds its client there already
 * (ERROR_PIPE_CONNECTED), or gone again after writing (ERROR_NO_DATA: its
 * data can still be read, as Python's PipeListener takes it) has
 * connected; both are failures of the call, so no packet comes.
 */
static void
srv_start(cqw_loop *loop, struct cqw__io *io)
{
	struct cqw__win_srv *w = io->buf;
	struct iocp_ov *o = io_ov(io);
	DWORD n = 0, err;
	BOOL ok;

	if (io->kind == CQW__FD_MSGPIPE && io->op == CQW__IO_ACCEPT) {
		ok = ConnectNamedPipe((HANDLE)io->handle, &o->ov);
		err = ok ? 0 : GetLastError();
		if (err == ERROR_PIPE_CONNECTED || err == ERROR_NO_DATA) {
			done(loop, io, 0, 0);
			return;
		}
		issued(loop, io, ok, err, IO_PENDING);
		return;
	}
	if (io->kind != CQW__FD_SOCK || w == NULL) {
		done(loop, io, CQW_EINVAL, 0);
		return;
	}
	if (io->op == CQW__IO_ACCEPT) {
		/* No bytes with the peer: the handshake reads its own. */
		ok = w->accept_ex((SOCKET)io->handle, w->sock, w->u.addrs, 0,
				  CQW__WIN_ACCEPT_ADDR, CQW__WIN_ACCEPT_ADDR,
				  &n, &o->ov);
	} else {
		ok = w->connect_ex((SOCKET)io->handle,
				   (const struct sockaddr *)&w->u.target,
				   w->target_len, NULL, 0, NULL, &o->ov);
	}
	issued(loop, io, ok, ok ? 0 : (DWORD)WSAGetLastError(), IO_PENDING);
}

static void
iocp_start(cqw_loop *loop, struct cqw__io *io)
{
	struct iocp_ov *o = io_ov(io);

	assert(io->backend_state == IO_IDLE);
	io->backend_state = IO_IDLE; /* no cancel asked of this one yet */
	memset(o, 0, sizeof(*o));
	io->flags = 0;
	io->more = 0;
	if (io->op == CQW__IO_ACCEPT || io->op == CQW__IO_CONNECT) {
		srv_start(loop, io);
		return;
	}
	switch (io->kind) {
	case CQW__FD_SOCK:
		sock_start(loop, io);
		break;
	case CQW__FD_MSGPIPE:
	case CQW__FD_PIPE:
		file_start(loop, io);
		break;
	default:
		done(loop, io, CQW_EBADF, 0);
		break;
	}
}

static int
iocp_init(cqw_loop *loop, unsigned entries)
{
	struct iocp_state *s;
	WSADATA wsa;
	int r;

	(void)entries; /* a port has no fixed depth */
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		return CQW_ENOMEM;
	}
	/* Counted: the platform's own WSAStartup may come before or after. */
	r = WSAStartup(MAKEWORD(2, 2), &wsa);
	if (r != 0) {
		r = map_error((DWORD)r);
		goto out_free;
	}
	s->nbucket = IOCP_BUCKETS_MIN;
	s->bucket = calloc(s->nbucket, sizeof(*s->bucket));
	if (s->bucket == NULL) {
		r = CQW_ENOMEM;
		goto out_cleanup;
	}
	s->port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 1);
	if (s->port == NULL) {
		r = map_error(GetLastError());
		goto out_free_buckets;
	}
	loop->backend = s;
	return 0;

out_free_buckets:
	free(s->bucket);
out_cleanup:
	WSACleanup();
out_free:
	free(s);
	return r;
}

/*
 * Every io has completed (cqw_loop_free's rule). Handles bound to the
 * port stay bound to it: the port object lives on, unused, until they
 * close.
 */
static void
iocp_fini(cqw_loop *loop)
{
	struct iocp_state *s = state(loop);

	CloseHandle(s->port);
	WSACleanup();
	free(s->bucket);
	free(s->noskip);
	free(s);
	loop->backend = NULL;
}

/* A socket whose provider is not IFS: skip-on-success is unreliable. */
static int
non_ifs_socket(cqw_fd handle)
{
	WSAPROTOCOL_INFOW info;
	int len = sizeof(info);

	if (getsockopt((SOCKET)handle, SOL_SOCKET, SO_PROTOCOL_INFOW,
		       (char *)&info, &len) != 0) {
		return 1;
	}
	return (info.dwServiceFlags1 & XP1_IFS_HANDLES) == 0;
}

/*
 * Bind handle to the port, for good. Skip-on-success is left off message
 * pipes: a ReadFile of a message longer than its buffer returns FALSE
 * with ERROR_MORE_DATA (a warning status), and whether that at-once
 * completion queues a packet under the mode is not documented (the mode
 * speaks of calls that "return success"; wine queues none). Without the
 * mode every completion of theirs, warning or success, queues one, which
 * is documented and unambiguous. Sockets and byte pipes never complete
 * with a warning, so they take the mode.
 */
static int
iocp_attach(cqw_loop *loop, cqw_fd handle, int kind)
{
	struct iocp_state *s = state(loop);
	UCHAR modes = FILE_SKIP_SET_EVENT_ON_HANDLE;
	HANDLE h = (HANDLE)handle;
	size_t i;
	DWORD err;

	/* Room first, so that nothing fails once the handle is bound. */
	if (grow_buckets(s) < 0) {
		return CQW_ENOMEM;
	}
	if (s->nnoskip == s->capnoskip) {
		size_t cap = s->capnoskip ? 2 * s->capnoskip : 4;
		cqw_fd *p = realloc(s->noskip, cap * sizeof(*p));

		if (p == NULL) {
			return CQW_ENOMEM;
		}
		s->noskip = p;
		s->capnoskip = cap;
	}
	if (CreateIoCompletionPort(h, s->port, IOCP_KEY_IO, 0) == NULL) {
		err = GetLastError();
		/* Bound to another port already (another loop's): for good. */
		return err == ERROR_INVALID_PARAMETER ? CQW_EBUSY
						      : map_error(err);
	}
	s->nbound++;
	/* A handle value of a closed handle may come back: forget it. */
	for (i = 0; i < s->nnoskip; i++) {
		if (s->noskip[i] == handle) {
			s->noskip[i] = s->noskip[--s->nnoskip];
			break;
		}
	}
	if (kind != CQW__FD_MSGPIPE &&
	    !(kind == CQW__FD_SOCK && non_ifs_socket(handle))) {
		modes |= FILE_SKIP_COMPLETION_PORT_ON_SUCCESS;
	}
	/* The event mode is only a saving: its refusal changes nothing. */
	if (!SetFileCompletionNotificationModes(h, modes)) {
		modes = 0;
	}
	if (kind != CQW__FD_MSGPIPE &&
	    !(modes & FILE_SKIP_COMPLETION_PORT_ON_SUCCESS)) {
		s->noskip[s->nnoskip++] = handle;
	}
	return 0;
}

static int
iocp_detach(cqw_loop *loop, cqw_fd handle)
{
	(void)loop;
	(void)handle;
	return CQW_EBUSY; /* a handle stays bound to its port for good */
}

static int
iocp_flush(cqw_loop *loop)
{
	(void)loop;
	return 0; /* start() handed every io to the kernel already */
}

/*
 * With a signal check set (cqw_set_signal_check), a long wait goes in
 * slices of CQW__WIN_SLICE_MS and asks the check between them, as the
 * blocking calls of src/win do: Windows has no EINTR to ask it on.
 */
static int
iocp_wait(cqw_loop *loop, int timeout_ms)
{
	struct iocp_state *s = state(loop);
	ULONGLONG deadline =
	    timeout_ms < 0 ? 0 : GetTickCount64() + (ULONGLONG)timeout_ms;
	int sliced = timeout_ms != 0 && cqw__signal_check_set();
	ULONG n = 0, i;
	ULONGLONG now;
	DWORD tmo, err;
	int woken = 0;

	for (;;) {
		now = GetTickCount64();
		tmo = timeout_ms < 0	? INFINITE
		      : now >= deadline ? 0
					: (DWORD)(deadline - now);
		if (sliced && tmo > CQW__WIN_SLICE_MS) {
			tmo = CQW__WIN_SLICE_MS; /* INFINITE too */
		}
		/* Completions are already waiting to be processed. */
		if (loop->iodone != NULL) {
			tmo = 0;
		}
		if (GetQueuedCompletionStatusEx(s->port, s->ents, IOCP_BATCH,
						&n, tmo, FALSE)) {
			break;
		}
		err = GetLastError();
		if (err != WAIT_TIMEOUT) {
			return map_error(err);
		}
		if (tmo == 0 || !sliced ||
		    (timeout_ms >= 0 && GetTickCount64() >= deadline)) {
			return 0;
		}
		if (cqw__eintr_stop()) {
			return CQW_EINTR; /* the ios stay in flight */
		}
	}
	for (i = 0; i < n; i++) {
		OVERLAPPED_ENTRY *e = &s->ents[i];
		struct cqw__io *io;

		if (e->lpCompletionKey == IOCP_KEY_WAKE) {
			InterlockedExchange(&s->wake_posted, 0);
			woken = 1;
			continue;
		}
		/*
		 * Not one of ours (another process's call on a duplicate of
		 * a bound handle, or one of this process's without the
		 * event's low bit): dropped. One of ours must be complete;
		 * if not, the address only matched by chance.
		 */
		io = e->lpOverlapped != NULL ? untrack(s, e->lpOverlapped)
					     : NULL;
		if (io == NULL) {
			continue;
		}
		if (!HasOverlappedIoCompleted(&io_ov(io)->ov)) {
			track(s, io);
			continue;
		}
		assert(io->backend_state != IO_IDLE);
		finish(loop, io);
	}
	return woken;
}

static void
iocp_cancel(cqw_loop *loop, struct cqw__io *io)
{
	(void)loop;
	/* Completed already: it waits in loop->iodone. */
	if (io->backend_state == IO_IDLE) {
		return;
	}
	io->backend_state |= IO_CANCELLING;
	/*
	 * ERROR_NOT_FOUND: it completed meanwhile and its packet is on the
	 * port. Any other failure means the handle is gone, and closing it
	 * cancelled the io: its packet comes as well.
	 */
	(void)CancelIoEx((HANDLE)io->handle, &io_ov(io)->ov);
}

static int
iocp_wake(cqw_loop *loop)
{
	struct iocp_state *s = state(loop);

	/* One wake packet on the port at a time is enough. */
	if (InterlockedExchange(&s->wake_posted, 1) != 0) {
		return 0;
	}
	if (!PostQueuedCompletionStatus(s->port, 0, IOCP_KEY_WAKE, NULL)) {
		InterlockedExchange(&s->wake_posted, 0);
		return map_error(GetLastError());
	}
	return 0;
}

static int
iocp_after_fork(cqw_loop *loop)
{
	(void)loop;
	return 0; /* Windows has no fork(): a loop is never in a child */
}

/* "skip_on_success": every socket and byte pipe bound here has the mode. */
static const char *
iocp_features(const cqw_loop *loop)
{
	const struct iocp_state *s = loop->backend;

	return s->nnoskip == 0 ? "skip_on_success" : "";
}

const struct cqw__backend_ops cqw__iocp_backend = {
	.name = "iocp",
	.init = iocp_init,
	.fini = iocp_fini,
	.attach = iocp_attach,
	.detach = iocp_detach,
	.start = iocp_start,
	.flush = iocp_flush,
	.wait = iocp_wait,
	.cancel = iocp_cancel,
	.wake = iocp_wake,
	.after_fork = iocp_after_fork,
	.features = iocp_features,
};
