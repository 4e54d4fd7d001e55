/*
 * Windows I/O primitives for src/common (see common/io.h) and the helpers
 * the rest of src/win shares (win.h): error mapping, clocks, what kind a
 * handle is, closing it, and the overlapped wait that every blocking call
 * of a message pipe uses.
 *
 * Each thread keeps one manual-reset event for its synchronous overlapped
 * calls (one call at a time per thread). It lives in fiber-local storage
 * whose destructor closes it when the thread ends, so threads that come
 * and go leak nothing.
 */
#include <limits.h>

#include "win/win.h"

#include <winternl.h>

int
cqw__win_is_socket(cqw_fd handle)
{
	int type = 0, len = sizeof(type);

	if (cqw__wsa_init() < 0) {
		return 0;
	}
	return getsockopt((SOCKET)handle, SOL_SOCKET, SO_TYPE, (char *)&type,
			  &len) == 0;
}

typedef NTSTATUS(NTAPI *query_file_fn)(HANDLE, PIO_STATUS_BLOCK, PVOID, ULONG,
				       FILE_INFORMATION_CLASS);

static INIT_ONCE query_once = INIT_ONCE_STATIC_INIT;
static query_file_fn query_file;

static BOOL CALLBACK
query_load(INIT_ONCE *once, void *param, void **ctx)
{
	HMODULE nt = GetModuleHandleW(L"ntdll.dll");

	(void)once;
	(void)param;
	(void)ctx;
	if (nt != NULL) {
		query_file = (query_file_fn)(void (*)(void))GetProcAddress(
		    nt, "NtQueryInformationFile");
	}
	return TRUE;
}

int
cqw__win_is_sync(HANDLE h)
{
	/* FILE_MODE_INFORMATION's flags for a handle opened without
	   FILE_FLAG_OVERLAPPED (ntifs.h, ZwQueryInformationFile). */
	const ULONG sync_io = 0x10 | 0x20;
	IO_STATUS_BLOCK io;
	ULONG mode = 0;

	InitOnceExecuteOnce(&query_once, query_load, NULL, NULL);
	if (query_file == NULL ||
	    query_file(h, &io, &mode, sizeof(mode), FileModeInformation) < 0) {
		return 0; /* cannot tell: take it for overlapped */
	}
	return (mode & sync_io) != 0;
}

int64_t
cqw__now_ms(void)
{
	return (int64_t)GetTickCount64();
}

int64_t
cqw__now_us(void)
{
	LARGE_INTEGER freq, now;

	/* Fixed at boot; reading it is cheap (no system call). */
	QueryPerformanceFrequency(&freq);
	QueryPerformanceCounter(&now);
	return (int64_t)(now.QuadPart / freq.QuadPart * 1000000 +
			 now.QuadPart % freq.QuadPart * 1000000 /
			     freq.QuadPart);
}

int
cqw__io_close(cqw_fd handle)
{
	if (cqw__win_is_socket(handle)) {
		return closesocket((SOCKET)handle) == 0
			   ? 0
			   : cqw__win_error((DWORD)WSAGetLastError());
	}
	return CloseHandle((HANDLE)handle) ? 0 : cqw__win_last();
}

int
cqw__io_fd_kind(cqw_fd handle)
{
	HANDLE h = (HANDLE)handle;
	DWORD type, state = 0, flags = 0;

	if (handle == 0 || h == INVALID_HANDLE_VALUE) {
		return CQW_EBADF;
	}
	if (cqw__win_is_socket(handle)) {
		/*
		 * A socket made without WSA_FLAG_OVERLAPPED (socket() sets
		 * it; WSASocket() without it does not) is a file handle for
		 * synchronous I/O: an I/O completion port refuses it, and an
		 * overlapped call on it (a readiness probe) would wait.
		 * Winsock has no per-socket query of the flag; the handle's
		 * file mode tells it where the socket is a file handle (a
		 * layered provider's may not be: then it is taken as given).
		 * wine: there FileModeInformation of such a socket has
		 * FILE_SYNCHRONOUS_IO_NONALERT (test-win-sock
		 * wait_sync_socket); Windows documents the flag for files
		 * opened without FILE_FLAG_OVERLAPPED, not for sockets.
		 */
		return cqw__win_is_sync(h) ? CQW_EOPNOTSUPP : CQW__FD_SOCK;
	}
	type = GetFileType(h);
	if (type == FILE_TYPE_UNKNOWN && GetLastError() != NO_ERROR) {
		/*
		 * Not a file: an open handle of another kind (an event, a
		 * process) is refused as such, so that the caller still owns
		 * and closes it; only one that is not open is CQW_EBADF.
		 */
		return GetHandleInformation(h, &flags) ? CQW_EOPNOTSUPP
						       : CQW_EBADF;
	}
	if (type != FILE_TYPE_PIPE) {
		return CQW_EOPNOTSUPP; /* files, consoles: not a transport */
	}
	/*
	 * The message transport waits with deadlines, probes and cancels:
	 * it needs overlapped I/O, and on a handle opened without it every
	 * ReadFile would block. Python's pipe handles are all overlapped.
	 */
	if (cqw__win_is_sync(h)) {
		return CQW_EOPNOTSUPP;
	}
	if (GetNamedPipeHandleStateW(h, &state, NULL, NULL, NULL, NULL, 0)) {
		return (state & PIPE_READMODE_MESSAGE) ? CQW__FD_MSGPIPE
						       : CQW_EOPNOTSUPP;
	}
	if (GetLastError() != ERROR_ACCESS_DENIED) {
		return cqw__win_last();
	}
	/*
	 * Queries need FILE_READ_ATTRIBUTES, which a write-only end opened
	 * GENERIC_WRITE (Python's Pipe(duplex=False) writer) lacks. For a
	 * write-only end only the pipe's type matters: ask GetNamedPipeInfo,
	 * and if that is refused too, take it for a message pipe, the only
	 * kind of write-only pipe Python hands out.
	 */
	if (GetNamedPipeInfo(h, &flags, NULL, NULL, NULL)) {
		return (flags & PIPE_TYPE_MESSAGE) ? CQW__FD_MSGPIPE
						   : CQW_EOPNOTSUPP;
	}
	return GetLastError() == ERROR_ACCESS_DENIED ? CQW__FD_MSGPIPE
						     : cqw__win_last();
}

int
cqw__io_readv_all(cqw_fd sock, cqw__iov *iov, int cnt, int *consumed)
{
	SOCKET s = (SOCKET)sock;
	DWORD n, flags;
	int r, err;

	*consumed = 0;
	/*
	 * Winsock has no EINTR, so nothing here asks the signal check or a
	 * deadline: callers read only bytes they know are queued, unless
	 * they have neither (then one call sleeps for all of it).
	 */
	while (cnt > 0) {
		n = 0;
		flags = MSG_WAITALL;
		r = WSARecv(s, (WSABUF *)iov,
			    (DWORD)(cnt > CQW__IOV_MAX ? CQW__IOV_MAX : cnt),
			    &n, &flags, NULL, NULL);
		if (r == SOCKET_ERROR) {
			err = WSAGetLastError();
			if (err != WSAEOPNOTSUPP && err != WSAEWOULDBLOCK) {
				return cqw__win_error((DWORD)err);
			}
			/*
			 * Its owner made the socket non-blocking, where
			 * MSG_WAITALL is refused: wait, then take what came.
			 */
			r = cqw__sock_wait(s, 0, CQW__WIN_NOSTOP);
			if (r < 0) {
				return r;
			}
			n = 0;
			flags = 0;
			if (WSARecv(s, (WSABUF *)iov, 1, &n, &flags, NULL,
				    NULL) == SOCKET_ERROR) {
				err = WSAGetLastError();
				if (err == WSAEWOULDBLOCK) {
					continue;
				}
				return cqw__win_error((DWORD)err);
			}
		}
		if (n == 0) {
			return CQW_ETRUNC;
		}
		*consumed = 1;
		/* Entries taken whole are left empty: callers count on it. */
		while (cnt > 0 && n >= iov->len) {
			n -= iov->len;
			iov->base += iov->len;
			iov->len = 0;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->base += n;
			iov->len -= n;
		}
	}
	return 0;
}

const struct cqw__transport *
cqw__transport_for(int kind)
{
	switch (kind) {
	case CQW__FD_SOCK:
		return cqw__win_stream_transport();
	case CQW__FD_MSGPIPE:
		return cqw__win_message_transport();
	default:
		return NULL;
	}
}

int
cqw__win_wait_one(HANDLE h, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : cqw__now_ms() + timeout_ms;
	int sliced = cqw__signal_check_set();
	DWORD ms, w;

	if (timeout_ms == CQW__WIN_NOSTOP) {
		/* What is waited for is queued already: do not ask. */
		timeout_ms = -1;
		sliced = 0;
	}
	for (;;) {
		ms = timeout_ms < 0 ? INFINITE
				    : (DWORD)cqw__remaining_ms(deadline);
		if (sliced && (ms == INFINITE || ms > CQW__WIN_SLICE_MS)) {
			ms = CQW__WIN_SLICE_MS;
		}
		w = WaitForSingleObject(h, ms);
		if (w == WAIT_OBJECT_0 || w == WAIT_ABANDONED) {
			return 1;
		}
		if (w == WAIT_FAILED) {
			return cqw__win_last();
		}
		if (deadline >= 0 && cqw__remaining_ms(deadline) == 0) {
			return 0;
		}
		if (sliced && cqw__eintr_stop()) {
			return CQW_EINTR;
		}
	}
}

static INIT_ONCE ev_once = INIT_ONCE_STATIC_INIT;
static DWORD ev_slot = FLS_OUT_OF_INDEXES;

static void WINAPI
ev_free(void *ev)
{
	if (ev != NULL) {
		CloseHandle(ev);
	}
}

static BOOL CALLBACK
ev_slot_alloc(INIT_ONCE *once, void *param, void **ctx)
{
	(void)once;
	(void)param;
	(void)ctx;
	ev_slot = FlsAlloc(ev_free);
	return ev_slot != FLS_OUT_OF_INDEXES;
}

int
cqw__win_ov_init(struct cqw__win_ov *o)
{
	HANDLE ev;

	if (!InitOnceExecuteOnce(&ev_once, ev_slot_alloc, NULL, NULL)) {
		return CQW_ENOMEM;
	}
	ev = FlsGetValue(ev_slot);
	if (ev == NULL) {
		ev = CreateEventW(NULL, TRUE, FALSE, NULL);
		if (ev == NULL) {
			return cqw__win_last();
		}
		if (!FlsSetValue(ev_slot, ev)) {
			CloseHandle(ev);
			return CQW_ENOMEM;
		}
	}
	memset(&o->ov, 0, sizeof(o->ov));
	o->ev = ev;
	o->ov.hEvent = (HANDLE)((uintptr_t)ev | 1);
	return 0;
}

DWORD
cqw__win_ov_reap(HANDLE h, struct cqw__win_ov *o, int cancel, DWORD *n)
{
	DWORD err;

	if (cancel && WaitForSingleObject(o->ev, 0) != WAIT_OBJECT_0) {
		CancelIoEx(h, &o->ov);
	}
	/*
	 * The kernel owns o until the operation completes, cancelled or not:
	 * wait for that without a limit and without asking the signal check.
	 * The event is set once the status is written. Should the wait on it
	 * fail, look at the status itself until it is no longer pending.
	 */
	WaitForSingleObject(o->ev, INFINITE);
	for (;;) {
		*n = 0;
		if (GetOverlappedResult(h, &o->ov, n, FALSE)) {
			return 0;
		}
		err = GetLastError();
		if (err != ERROR_IO_INCOMPLETE) {
			return err;
		}
		Sleep(1);
	}
}

int
cqw__win_ov_finish(HANDLE h, struct cqw__win_ov *o, DWORD err, int timeout_ms,
		   DWORD *n, DWORD *werr)
{
	int w;

	*n = 0;
	if (err != ERROR_IO_PENDING) {
		*werr = err; /* failed at once: nothing is in flight */
		return 0;
	}
	w = cqw__win_wait_one(o->ev, timeout_ms);
	*werr = cqw__win_ov_reap(h, o, w != 1, n);
	if (w != 1 && *werr == ERROR_OPERATION_ABORTED) {
		return w == 0 ? CQW_ETIMEDOUT : w < 0 ? w : CQW_EINTR;
	}
	return 0;
}
