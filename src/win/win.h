/*
 * What the files of src/win share: Windows headers in the right order,
 * error mapping, Winsock start-up, the signal check's time slice, the
 * overlapped helpers every blocking call uses, and the two synchronous
 * transports (stream.c on Winsock sockets, pipe.c on message-mode named
 * pipes).
 *
 * Windows has no EINTR. A blocking call here that may wait long (a
 * receive waiting for its first byte, accept, connect, poll, wait) waits
 * in slices of CQW__WIN_SLICE_MS while the thread has a signal check set
 * (cqw_set_signal_check) and asks it between slices; when it says stop,
 * the call cancels what it started, keeps anything that completed anyway,
 * and returns CQW_EINTR with nothing consumed. Without a check the wait
 * is one system call.
 */
#ifndef CQW_WIN_H
#define CQW_WIN_H

#ifndef _WIN32_WINNT
#define _WIN32_WINNT 0x0602 /* Windows 8: see pipe.c on empty messages */
#endif
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif

#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>

#include "common/internal.h"
#include "common/platform.h"
#include "common/transport.h"

/* How often a long wait asks the thread's signal check (see above). */
#define CQW__WIN_SLICE_MS 100

/* io.c: a GetLastError() or WSAGetLastError() code as a CQW_E* code. */
int cqw__win_error(DWORD err);
/* The same for GetLastError() now. */
int cqw__win_last(void);
/* 1 if handle is a socket (Winsock answers for it), else 0. */
int cqw__win_is_socket(cqw_fd handle);
/*
 * 1 if h was opened for synchronous I/O (no FILE_FLAG_OVERLAPPED, or a
 * socket made without WSA_FLAG_OVERLAPPED), 0 if overlapped or unknown.
 */
int cqw__win_is_sync(HANDLE h);

/* sock.c: WSAStartup, once per process, thread-safe. 0 or an error. */
int cqw__wsa_init(void);
/*
 * sock.c: BLOCKING. Wait up to timeout_ms until s is readable (or
 * writable with write; failed counts as ready), as cqw__win_wait_one
 * (slices, CQW__WIN_NOSTOP): 1, 0 at the timeout, CQW_EINTR, or an error.
 */
int cqw__sock_wait(SOCKET s, int write, int timeout_ms);

/*
 * BLOCKING. Wait for one handle up to timeout_ms (-1: forever), in slices
 * while a signal check is set: 1 signalled, 0 timed out, CQW_EINTR, or an
 * error. CQW__WIN_NOSTOP: forever, never asking the check (for what is
 * known to be queued, or a write that must not be cut).
 */
#define CQW__WIN_NOSTOP (-2)
int cqw__win_wait_one(HANDLE h, int timeout_ms);

/*
 * An OVERLAPPED for one synchronous call, with this thread's event
 * (manual reset, created on first use, kept for the thread's life). The
 * event handle in ov.hEvent has its low bit set, so that a completion of
 * a handle bound to an I/O completion port (the iocp backend's) is not
 * queued to the port: documented for GetQueuedCompletionStatus. ev is
 * the plain handle to wait on.
 */
struct cqw__win_ov {
	OVERLAPPED ov;
	HANDLE ev;
};
int cqw__win_ov_init(struct cqw__win_ov *o);

/*
 * An overlapped call on h returned FALSE with GetLastError() == err. Wait
 * up to timeout_ms (-1: forever; see cqw__win_wait_one) for it. On time
 * out or a stop, CancelIoEx() and then wait for the completion whatever
 * it is, so o is free when this returns. Stores the bytes in *n and the
 * call's result in *werr (0 or a Windows error code). Returns 0 when the
 * operation completed (*werr tells how), CQW_ETIMEDOUT or CQW_EINTR when
 * it was cancelled before completing.
 */
int cqw__win_ov_finish(HANDLE h, struct cqw__win_ov *o, DWORD err,
		       int timeout_ms, DWORD *n, DWORD *werr);
/*
 * Wait for an overlapped operation on o to complete, first cancelling it
 * (CancelIoEx) with cancel, and return its result: 0 or a Windows error
 * code, the bytes in *n. o is free when this returns, on every path.
 */
DWORD cqw__win_ov_reap(HANDLE h, struct cqw__win_ov *o, int cancel, DWORD *n);

/*
 * The synchronous transports (cqw__transport_for() picks one). Functions,
 * not extern tables: mingw-w64 reaches another file's data through a
 * .refptr stub, which the DLL would export.
 */
const struct cqw__transport *cqw__win_stream_transport(void);
const struct cqw__transport *cqw__win_message_transport(void);

/*
 * pipe.c, for wait.c: a readiness probe on a message pipe connection, as
 * WIRE.md §7.4: a zero-byte overlapped read. probe_start returns 1 if the
 * connection is ready now (possibly setting c->empty_pending), 0 if the
 * probe is pending on o (wait for o->ev, then call probe_end), or an
 * error. probe_end cancels a probe still pending, waits for it, and
 * returns 1 if the connection turned out ready.
 */
int cqw__pipe_probe_start(cqw_conn *c, struct cqw__win_ov *o);
int cqw__pipe_probe_end(cqw_conn *c, struct cqw__win_ov *o);
/* 1 if a named pipe handle has bytes queued or its peer is gone. */
int cqw__pipe_peek_ready(HANDLE h);

/*
 * The same for a socket: a zero-byte overlapped WSARecv, which consumes
 * nothing and completes when the socket is readable (data, end of file
 * or an error).
 */
int cqw__sock_probe_start(SOCKET s, struct cqw__win_ov *o);
int cqw__sock_probe_end(SOCKET s, struct cqw__win_ov *o);

/*
 * A listening endpoint (platform.h): a TCP socket (sock.c), or a named
 * pipe's pre-created instances (pipe.c), as Python's PipeListener keeps
 * them.
 */
struct cqw__lsock {
	int is_pipe;
	SOCKET sock;
	wchar_t *name; /* pipe: its name */
	HANDLE inst;   /* pipe: the instance the next accept connects */
	HANDLE spare;  /* pipe: created ahead, for the accept after */
};

/* pipe.c: the pipe halves of the endpoint calls (sock.c dispatches). */
int cqw__pipe_listen(struct cqw__lsock *l, const struct cqw__addr *a);
int cqw__pipe_accept(struct cqw__lsock *l, cqw_fd *h, int timeout_ms);
void cqw__pipe_listen_close(struct cqw__lsock *l);
int cqw__pipe_connect(const struct cqw__addr *a, cqw_fd *h, int64_t deadline);

/*
 * pipe.c: the name of a pipe address as UTF-16, allocated, or NULL
 * (*err set).
 */
wchar_t *cqw__pipe_wname(const char *path, int *err);

#endif
