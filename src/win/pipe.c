/*
 * Named pipes exactly as Python makes them (WIRE.md §7): endpoints (a
 * listener's pre-created instances, the client's retries, Pipe()), and
 * the message transport's synchronous half.
 *
 * A message pipe carries no header: one send is one WriteFile, one pipe
 * message. A receive must hand up whole messages and never lose one, so
 * its state (internal.h) is:
 *
 *   AT A BOUNDARY   nothing of the next message is ours. PeekNamedPipe
 *                   shows the head message's size: one too big for the
 *                   caller stays in the pipe (CQW_ETOOSHORT, nothing
 *                   read) for any reader of the handle.
 *   EMPTY PENDING   a readiness probe (a zero-byte read, §7.4) consumed
 *                   a zero-length message: c->empty_pending, and the
 *                   next receive returns it without I/O.
 *   PART KEPT       a read that had to wait got a message longer than
 *                   the caller's buffer (ERROR_MORE_DATA): the msg_got
 *                   bytes read wait in c->part, msg_len is the whole
 *                   length (PeekNamedPipe's bytes left in the message),
 *                   and the next receive big enough takes the part and
 *                   reads the rest, which is queued already.
 *
 * A read that times out or is stopped is cancelled and waited for; if it
 * completed anyway, its message is kept as above, never dropped.
 *
 * Every overlapped call here uses an event with its low bit set, so a
 * handle bound to the iocp backend's port gets no completion packet for
 * it (see win.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "win/win.h"

#define PIPE_BUFSIZE 8192	 /* Python's in and out buffer sizes */
#define CONNECT_TIMEOUT_MS 20000 /* Python's CONNECTION_TIMEOUT */
#define FIRST_READ 128		 /* Python's first read if it waits */

/* A pointer for zero-byte calls, which should not be handed NULL. */
static char zero_buf[1];

/*
 * Since Windows 8 a zero-byte read that completes at once consumes a
 * zero-length message at the head of the pipe; before, it did not
 * (§7.4; Python tests the same version). VerifyVersionInfo answers
 * truthfully for this question without a manifest: it only hides
 * versions after 8.
 */
static INIT_ONCE version_once = INIT_ONCE_STATIC_INIT;
static int zero_read_takes;

static BOOL CALLBACK
version_check(INIT_ONCE *once, void *param, void **ctx)
{
	OSVERSIONINFOEXW vi;
	DWORDLONG mask = 0;

	(void)once;
	(void)param;
	(void)ctx;
	memset(&vi, 0, sizeof(vi));
	vi.dwOSVersionInfoSize = sizeof(vi);
	vi.dwMajorVersion = 6;
	vi.dwMinorVersion = 2;
	mask = VerSetConditionMask(mask, VER_MAJORVERSION, VER_GREATER_EQUAL);
	mask = VerSetConditionMask(mask, VER_MINORVERSION, VER_GREATER_EQUAL);
	zero_read_takes =
	    VerifyVersionInfoW(&vi, VER_MAJORVERSION | VER_MINORVERSION, mask);
	return TRUE;
}

static int
zero_read_consumes(void)
{
	InitOnceExecuteOnce(&version_once, version_check, NULL, NULL);
	return zero_read_takes;
}

wchar_t *
cqw__pipe_wname(const char *path, int *err)
{
	int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1,
				    NULL, 0);
	wchar_t *w;

	if (n <= 0) {
		*err = CQW_EINVAL;
		return NULL;
	}
	w = malloc((size_t)n * sizeof(*w));
	if (w == NULL) {
		*err = CQW_ENOMEM;
		return NULL;
	}
	MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, w, n);
	return w;
}

/*
 * One server instance, as Python's: overlapped, message type and read
 * mode, blocking, default security (so not inheritable).
 */
static HANDLE
new_instance(const wchar_t *name, DWORD access, DWORD max, DWORD obuf,
	     int first)
{
	DWORD open = access | FILE_FLAG_OVERLAPPED |
		     (first ? FILE_FLAG_FIRST_PIPE_INSTANCE : 0);

	return CreateNamedPipeW(
	    name, open, PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE | PIPE_WAIT,
	    max, obuf, PIPE_BUFSIZE, NMPWAIT_WAIT_FOREVER, NULL);
}

/*
 * ConnectNamedPipe on an instance, waiting up to timeout_ms. A client
 * that came before the call (ERROR_PIPE_CONNECTED), or came, wrote and
 * left (ERROR_NO_DATA: its data is still readable, Python's issue14725)
 * is connected too. 0, CQW_ETIMEDOUT or CQW_EINTR (cancelled; the
 * instance can be connected again), or an error.
 */
static int
connect_instance(HANDLE h, int timeout_ms)
{
	struct cqw__win_ov o;
	DWORD n, err, werr;
	int r = cqw__win_ov_init(&o);

	if (r < 0) {
		return r;
	}
	if (ConnectNamedPipe(h, &o.ov)) {
		return 0;
	}
	err = GetLastError();
	if (err == ERROR_PIPE_CONNECTED || err == ERROR_NO_DATA) {
		return 0;
	}
	r = cqw__win_ov_finish(h, &o, err, timeout_ms, &n, &werr);
	if (r < 0) {
		return r;
	}
	if (werr == 0 || werr == ERROR_PIPE_CONNECTED ||
	    werr == ERROR_NO_DATA) {
		return 0;
	}
	return cqw__win_error(werr);
}

int
cqw__pipe_listen(struct cqw__lsock *l, const struct cqw__addr *a)
{
	int r = 0;

	l->is_pipe = 1;
	l->name = cqw__pipe_wname(a->path, &r);
	if (l->name == NULL) {
		return r;
	}
	/*
	 * wine: FILE_FLAG_FIRST_PIPE_INSTANCE is ignored, so a second
	 * listener on one name succeeds there (WINDOWS.md); Windows refuses
	 * it with ERROR_ACCESS_DENIED, which is "address in use".
	 */
	l->inst = new_instance(l->name, PIPE_ACCESS_DUPLEX,
			       PIPE_UNLIMITED_INSTANCES, PIPE_BUFSIZE, 1);
	if (l->inst == INVALID_HANDLE_VALUE) {
		r = GetLastError() == ERROR_ACCESS_DENIED ? CQW_EADDRINUSE
							  : cqw__win_last();
		free(l->name);
		l->name = NULL;
		return r;
	}
	return 0;
}

int
cqw__pipe_accept(struct cqw__lsock *l, cqw_fd *h, int timeout_ms)
{
	int r;

	/*
	 * As PipeListener.accept(): make the next instance first, so that
	 * a client coming while this one is handed over finds one.
	 */
	if (l->spare == NULL) {
		l->spare =
		    new_instance(l->name, PIPE_ACCESS_DUPLEX,
				 PIPE_UNLIMITED_INSTANCES, PIPE_BUFSIZE, 0);
		if (l->spare == INVALID_HANDLE_VALUE) {
			l->spare = NULL;
			return cqw__win_last();
		}
	}
	r = connect_instance(l->inst, timeout_ms);
	if (r == CQW_ETIMEDOUT || r == CQW_EINTR) {
		/*
		 * wine: an instance whose ConnectNamedPipe was cancelled
		 * takes a new one, and a client that came meanwhile is then
		 * ERROR_PIPE_CONNECTED (test-win-pipe early_client). The
		 * documentation does not say what a cancelled listen leaves;
		 * should a later call fail, the broken instance is replaced
		 * (below) and only that accept fails.
		 */
		return r;
	}
	if (r < 0) {
		/* This instance is broken: the next accept uses the spare. */
		CloseHandle(l->inst);
		l->inst = l->spare;
		l->spare = NULL;
		return r;
	}
	*h = (cqw_fd)l->inst;
	l->inst = l->spare;
	l->spare = NULL;
	return 0;
}

void
cqw__pipe_listen_close(struct cqw__lsock *l)
{
	if (l->inst != NULL && l->inst != INVALID_HANDLE_VALUE) {
		CloseHandle(l->inst);
	}
	if (l->spare != NULL) {
		CloseHandle(l->spare);
	}
	free(l->name);
	l->inst = l->spare = NULL;
	l->name = NULL;
}

/* The client's end is in message read mode, as Python's Client makes it. */
static int
message_mode(HANDLE h)
{
	DWORD mode = PIPE_READMODE_MESSAGE;

	return SetNamedPipeHandleState(h, &mode, NULL, NULL) ? 0
							     : cqw__win_last();
}

int
cqw__pipe_connect(const struct cqw__addr *a, cqw_fd *out, int64_t deadline)
{
	HANDLE h = INVALID_HANDLE_VALUE;
	DWORD err, ms;
	wchar_t *name;
	int r = 0;

	if (deadline < 0) {
		deadline = cqw__now_ms() + CONNECT_TIMEOUT_MS;
	}
	name = cqw__pipe_wname(a->path, &r);
	if (name == NULL) {
		return r;
	}
	/*
	 * Python's Client: wait for a free instance a second at a time and
	 * open it, retrying busy pipes (another client took the instance
	 * between the two calls) for up to 20 s. With a signal check set,
	 * the waits are shorter so that it is asked often enough.
	 */
	for (;;) {
		ms = cqw__signal_check_set() ? CQW__WIN_SLICE_MS : 1000;
		if ((int64_t)ms > deadline - cqw__now_ms()) {
			ms = deadline > cqw__now_ms()
				 ? (DWORD)(deadline - cqw__now_ms())
				 : 1;
		}
		if (WaitNamedPipeW(name, ms)) {
			h = CreateFileW(name, GENERIC_READ | GENERIC_WRITE, 0,
					NULL, OPEN_EXISTING,
					FILE_FLAG_OVERLAPPED, NULL);
			if (h != INVALID_HANDLE_VALUE) {
				break;
			}
		}
		err = GetLastError();
		if ((err != ERROR_SEM_TIMEOUT && err != ERROR_PIPE_BUSY) ||
		    cqw__now_ms() >= deadline) {
			r = err == ERROR_SEM_TIMEOUT || err == ERROR_PIPE_BUSY
				? CQW_ETIMEDOUT
				: cqw__win_error(err);
			goto out_free;
		}
		if (cqw__signal_check_set() && cqw__eintr_stop()) {
			r = CQW_EINTR;
			goto out_free;
		}
	}
	r = message_mode(h);
	if (r < 0) {
		CloseHandle(h);
		goto out_free;
	}
	*out = (cqw_fd)h;
out_free:
	free(name);
	return r;
}

int
cqw__os_pipe(cqw_fd h[2], int kind[2], int duplex)
{
	static volatile LONG counter;
	DWORD access = duplex ? PIPE_ACCESS_DUPLEX : PIPE_ACCESS_INBOUND;
	DWORD cmode = duplex ? GENERIC_READ | GENERIC_WRITE : GENERIC_WRITE;
	wchar_t name[96];
	HANDLE h1, h2;
	uint32_t rnd[2];
	int r;

	r = cqw__random(rnd, sizeof(rnd));
	if (r < 0) {
		return r;
	}
	/* Python names its pipes pyc-<pid>-<counter>-<random>. */
	swprintf(name, sizeof(name) / sizeof(name[0]),
		 L"\\\\.\\pipe\\cqw-%lu-%ld-%08lx%08lx",
		 (unsigned long)GetCurrentProcessId(),
		 (long)InterlockedIncrement(&counter), (unsigned long)rnd[0],
		 (unsigned long)rnd[1]);
	/*
	 * As Python's Pipe(): one instance; a simplex pipe is inbound for
	 * the server end (the reader) and has no out-buffer.
	 */
	h1 = new_instance(name, access, 1, duplex ? PIPE_BUFSIZE : 0, 1);
	if (h1 == INVALID_HANDLE_VALUE) {
		return cqw__win_last();
	}
	h2 = CreateFileW(name, cmode, 0, NULL, OPEN_EXISTING,
			 FILE_FLAG_OVERLAPPED, NULL);
	if (h2 == INVALID_HANDLE_VALUE) {
		r = cqw__win_last();
		goto out_close_h1;
	}
	r = message_mode(h2);
	if (r < 0) {
		goto out_close_both;
	}
	r = connect_instance(h1, CQW__WIN_NOSTOP);
	if (r < 0) {
		goto out_close_both;
	}
	h[0] = (cqw_fd)h1;
	h[1] = (cqw_fd)h2;
	kind[0] = kind[1] = CQW__FD_MSGPIPE;
	return 0;

out_close_both:
	CloseHandle(h2);
out_close_h1:
	CloseHandle(h1);
	return r;
}

/* ---------------------------------------------------------------------
 * The message transport's synchronous half
 */

/*
 * One overlapped ReadFile of up to len bytes into buf, waiting up to
 * timeout_ms (see cqw__win_wait_one). 0 with *n and *more (the message
 * is longer: ERROR_MORE_DATA), CQW_EOF when the writer is gone, CQW_EINTR
 * or CQW_ETIMEDOUT (cancelled: nothing read), or an error.
 */
static int
pipe_read(HANDLE h, void *buf, DWORD len, int timeout_ms, DWORD *n, int *more)
{
	struct cqw__win_ov o;
	DWORD err = 0, werr;
	int r = cqw__win_ov_init(&o);

	*n = 0;
	*more = 0;
	if (r < 0) {
		return r;
	}
	if (!ReadFile(h, len > 0 ? buf : zero_buf, len, NULL, &o.ov)) {
		err = GetLastError();
	}
	if (err == ERROR_IO_PENDING) {
		r = cqw__win_ov_finish(h, &o, err, timeout_ms, n, &werr);
		if (r < 0) {
			return r;
		}
	} else if (err == 0 || err == ERROR_MORE_DATA) {
		/* Done at once; the count is in the OVERLAPPED. */
		werr = GetOverlappedResult(h, &o.ov, n, FALSE) ? 0
							       : GetLastError();
	} else {
		werr = err;
	}
	switch (werr) {
	case 0:
		return 0;
	case ERROR_MORE_DATA:
		*more = 1;
		return 0;
	case ERROR_BROKEN_PIPE:
	case ERROR_PIPE_NOT_CONNECTED:
		return CQW_EOF;
	default:
		return cqw__win_error(werr);
	}
}

/*
 * The head message: 1 with its length in *left if one with bytes is
 * queued, 0 if none (or a zero-length one: PeekNamedPipe cannot tell),
 * CQW_EOF if the writer is gone, or an error.
 */
static int
peek_head(HANDLE h, DWORD *left)
{
	DWORD avail = 0;

	*left = 0;
	if (!PeekNamedPipe(h, NULL, 0, NULL, &avail, left)) {
		DWORD err = GetLastError();

		/* As pipe_read() says it: a disconnected instance ended too. */
		return err == ERROR_BROKEN_PIPE ||
			       err == ERROR_PIPE_NOT_CONNECTED
			   ? CQW_EOF
			   : cqw__win_error(err);
	}
	return avail > 0;
}

/* An error a batch owes the next receive (it handed up messages first). */
static int
take_deferred(cqw_conn *c)
{
	int r = c->deferred_err;

	c->deferred_err = 0;
	return r;
}

/*
 * After ERROR_MORE_DATA took got bytes: how much of the message is still
 * in the pipe. With none taken (a zero-byte read) nothing is lost and the
 * pipe is as it was: CQW_EIO, or CQW_EOF if it ended. Else the message
 * is cut: CQW_ETRUNC if the pipe ended (a server that disconnected the
 * instance discarded the rest; the next receive sees the end), or, if
 * the rest is not there (another reader of the handle took it) or there
 * is no answer, where this connection stands is lost: CQW_EPROTO, sticky.
 */
static int
rest_left(cqw_conn *c, DWORD got, DWORD *left)
{
	int r = peek_head((HANDLE)c->fd, left);

	if (r == 1 && *left > 0) {
		return 0;
	}
	if (got == 0) {
		return r == CQW_EOF ? CQW_EOF : CQW_EIO;
	}
	if (r == CQW_EOF) {
		return CQW_ETRUNC;
	}
	c->recv_error = CQW_EPROTO;
	return CQW_EPROTO;
}

/*
 * A read that had to wait got n bytes of a longer message: keep them in
 * c->part with the message's length, for a receive with room.
 */
static int
keep_part(cqw_conn *c, const void *buf, DWORD n, size_t *needed)
{
	DWORD left = 0;
	int r = rest_left(c, n, &left);

	if (r < 0) {
		return r;
	}
	if (n == 0) {
		/* A zero-byte read consumes nothing of a longer message. */
		*needed = left;
		return CQW_ETOOSHORT;
	}
	c->part = malloc(n);
	if (c->part == NULL) {
		c->recv_error = CQW_ENOMEM; /* the message is lost for good */
		return CQW_ENOMEM;
	}
	memcpy(c->part, buf, n);
	c->msg_got = n;
	c->msg_len = (uint64_t)n + left;
	*needed = (size_t)c->msg_len;
	return CQW_ETOOSHORT;
}

/*
 * The rest of a message whose first got bytes are in dst already: it is
 * queued (message writes are whole), so the read does not wait. Returns
 * 0, or an error: CQW_ETRUNC if the pipe ended first (a server that
 * disconnected the instance discarded the rest: the message is cut, and
 * the next receive sees the end); CQW_EPROTO (sticky) if what came is
 * not that rest, which only another reader of the handle racing this one
 * can cause.
 */
static int
read_rest(cqw_conn *c, uint8_t *dst, uint64_t got, uint64_t len)
{
	DWORD n;
	int more, r;

	if (got == len) {
		return 0;
	}
	r = pipe_read((HANDLE)c->fd, dst + got, (DWORD)(len - got),
		      CQW__WIN_NOSTOP, &n, &more);
	if (r == CQW_EOF) {
		return CQW_ETRUNC;
	}
	if (r < 0) {
		return r;
	}
	if (more || n != len - got) {
		c->recv_error = CQW_EPROTO;
		return CQW_EPROTO;
	}
	return 0;
}

static void
drop_part(cqw_conn *c)
{
	free(c->part);
	c->part = NULL;
	c->msg_got = c->msg_len = 0;
}

/* Hand up a kept message into buf (cap bytes), reading its rest. */
static int64_t
take_kept(cqw_conn *c, void *buf, size_t cap, size_t *needed)
{
	uint64_t total = c->msg_len;
	int r;

	if (total > cap) {
		*needed = (size_t)total;
		return CQW_ETOOSHORT;
	}
	memcpy(buf, c->part, (size_t)c->msg_got);
	r = read_rest(c, buf, c->msg_got, total);
	if (r < 0) {
		if (r == CQW_EPROTO || r == CQW_ETRUNC) {
			drop_part(c); /* the message is gone either way */
		}
		return r; /* anything else read nothing: the part stays */
	}
	drop_part(c);
	return (int64_t)total;
}

static int64_t
msg_recv_into(cqw_conn *c, void *buf, size_t cap, size_t *needed,
	      int64_t deadline)
{
	HANDLE h = (HANDLE)c->fd;
	size_t unused;
	DWORD left, n;
	int more, r;

	if (needed == NULL) {
		needed = &unused; /* the caller does not ask */
	}
	r = take_deferred(c);
	if (r < 0) {
		return r;
	}
	if (c->empty_pending) {
		c->empty_pending = 0;
		return 0;
	}
	if (c->msg_len > 0) {
		return take_kept(c, buf, cap, needed);
	}
	/* Look first: a message that does not fit stays for any reader. */
	r = peek_head(h, &left);
	if (r < 0 && r != CQW_EOF) {
		return r;
	}
	if (r == 1 && left > cap) {
		*needed = left;
		return CQW_ETOOSHORT;
	}
	if (r == 0 && c->spin_us > 0) {
		/* cqw_conn_set_spin(): look without sleeping for a while. */
		int64_t until = cqw__now_us() + c->spin_us;

		do {
			r = peek_head(h, &left);
		} while (r == 0 && cqw__now_us() < until);
		if (r == 1 && left > cap) {
			*needed = left;
			return CQW_ETOOSHORT;
		}
	}
	/* Queued already (r == 1, it fits), or wait for the next message. */
	r = pipe_read(h, buf, cap > MAXDWORD ? MAXDWORD : (DWORD)cap,
		      cqw__remaining_ms(deadline), &n, &more);
	if (r < 0) {
		return r;
	}
	if (more) {
		/* It came while we waited and is longer than buf: keep it. */
		return keep_part(c, buf, n, needed);
	}
	return n;
}

static int64_t
msg_recv_alloc(cqw_conn *c, void **out, int64_t maxlength)
{
	HANDLE h = (HANDLE)c->fd;
	uint64_t total;
	DWORD left, first, n;
	uint8_t *buf, *bigger;
	size_t needed;
	int64_t kept;
	int more, r;

	r = take_deferred(c);
	if (r < 0) {
		return r;
	}
	if (c->empty_pending) {
		buf = malloc(1);
		if (buf == NULL) {
			return CQW_ENOMEM; /* the flag stays: nothing lost */
		}
		c->empty_pending = 0;
		*out = buf;
		return 0;
	}
	if (c->msg_len > 0) {
		if (maxlength >= 0 && c->msg_len > (uint64_t)maxlength) {
			goto out_too_long;
		}
		buf = malloc((size_t)c->msg_len);
		if (buf == NULL) {
			return CQW_ENOMEM; /* the part stays */
		}
		kept = take_kept(c, buf, (size_t)c->msg_len, &needed);
		if (kept < 0) {
			free(buf);
			return kept;
		}
		*out = buf;
		return kept;
	}
	/*
	 * A message queued already has its real length: allocate that (it
	 * is there, so a liar costs nothing). Else read as Python does, a
	 * small first piece, then the rest once its length is known.
	 */
	r = peek_head(h, &left);
	if (r < 0 && r != CQW_EOF) {
		return r;
	}
	if (r == 1) {
		if (maxlength >= 0 && left > (uint64_t)maxlength) {
			goto out_too_long; /* nothing read: it stays */
		}
		first = left;
	} else {
		first = maxlength >= 0 && maxlength < FIRST_READ
			    ? (DWORD)maxlength
			    : FIRST_READ;
	}
	buf = malloc(first > 0 ? first : 1);
	if (buf == NULL) {
		return CQW_ENOMEM;
	}
	r = pipe_read(h, buf, first, -1, &n, &more);
	if (r < 0) {
		goto out_free;
	}
	if (!more) {
		*out = buf;
		return n;
	}
	r = rest_left(c, n, &left);
	if (r < 0) {
		goto out_free;
	}
	total = (uint64_t)n + left;
	if (maxlength >= 0 && total > (uint64_t)maxlength) {
		/* As Python: its start is read, the rest stays; poisoned. */
		free(buf);
		goto out_too_long;
	}
	bigger = realloc(buf, (size_t)total);
	if (bigger == NULL) {
		c->part = buf; /* keep what was read: the message stays ours */
		c->msg_got = n;
		c->msg_len = total;
		return CQW_ENOMEM;
	}
	buf = bigger;
	r = read_rest(c, buf, n, total);
	if (r < 0 && r != CQW_EPROTO && r != CQW_ETRUNC) {
		/* Nothing of the rest was taken: keep the start, as above. */
		c->part = buf;
		c->msg_got = n;
		c->msg_len = total;
		return r;
	}
	if (r < 0) {
		goto out_free;
	}
	*out = buf;
	return (int64_t)total;

out_free:
	free(buf);
	return r;
out_too_long:
	cqw__conn_poison(c);
	return CQW_EMSGSIZE;
}

int
cqw__pipe_peek_ready(HANDLE h)
{
	DWORD avail = 0;

	if (PeekNamedPipe(h, NULL, 0, NULL, &avail, NULL)) {
		return avail > 0;
	}
	/* No read access (a write-only end): never readable. */
	return GetLastError() != ERROR_ACCESS_DENIED;
}

int
cqw__pipe_probe_start(cqw_conn *c, struct cqw__win_ov *o)
{
	DWORD err;

	if (ReadFile((HANDLE)c->fd, zero_buf, 0, NULL, &o->ov)) {
		/* A zero-length message was at the head (and consumed). */
		if (zero_read_consumes()) {
			c->empty_pending = 1;
		}
		return 1;
	}
	err = GetLastError();
	switch (err) {
	case ERROR_IO_PENDING:
		return 0;
	case ERROR_ACCESS_DENIED:
		return CQW_EACCES; /* a write-only end: nothing to wait for */
	default:
		/* Data (ERROR_MORE_DATA), the end, or an error: all ready. */
		return 1;
	}
}

int
cqw__pipe_probe_end(cqw_conn *c, struct cqw__win_ov *o)
{
	DWORD n, err = cqw__win_ov_reap((HANDLE)c->fd, o, 1, &n);

	if (err == 0) {
		/* It completed: a zero-length message came, and it took it. */
		c->empty_pending = 1;
		return 1;
	}
	return err != ERROR_OPERATION_ABORTED;
}

static int
msg_ready_now(const cqw_conn *c)
{
	return c->empty_pending || c->msg_len > 0 || c->deferred_err < 0 ||
	       c->recv_error < 0;
}

static int
msg_poll(cqw_conn *c, int timeout_ms)
{
	struct cqw__win_ov o;
	int r, w;

	if (msg_ready_now(c)) {
		return 1;
	}
	r = cqw__pipe_peek_ready((HANDLE)c->fd);
	if (r != 0) {
		return r;
	}
	r = cqw__win_ov_init(&o);
	if (r < 0) {
		return r;
	}
	r = cqw__pipe_probe_start(c, &o);
	if (r != 0) {
		return r;
	}
	w = cqw__win_wait_one(o.ev, timeout_ms);
	r = cqw__pipe_probe_end(c, &o);
	if (r != 0) {
		return r;
	}
	return w < 0 ? w : 0;
}

static int
msg_recv_batch(cqw_conn *c, struct cqw_msg *msgs, size_t n, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : cqw__now_ms() + timeout_ms;
	size_t got = 0, needed = 0;
	int64_t r;

	while (got < n) {
		/*
		 * The first waits up to the deadline; the others only take
		 * what is there (a deadline of now: a read that would wait
		 * is cancelled, and kept if it completed anyway).
		 */
		r = msg_recv_into(c, msgs[got].buf, msgs[got].cap, &needed,
				  got == 0 ? deadline : cqw__now_ms());
		if (r < 0) {
			if (got == 0) {
				if (r == CQW_ETOOSHORT) {
					msgs[0].len = needed;
					return CQW_ETOOSHORT;
				}
				return r == CQW_ETIMEDOUT ? 0 : (int)r;
			}
			if (r != CQW_ETIMEDOUT && r != CQW_ETOOSHORT) {
				/* Hand up what we have; the error is next. */
				c->deferred_err = (int)r;
			}
			break;
		}
		msgs[got++].len = (size_t)r;
	}
	return (int)got;
}

static int
msg_send(cqw_conn *c, const struct cqw_msg *msgs, size_t n)
{
	HANDLE h = (HANDLE)c->fd;
	struct cqw__win_ov o;
	DWORD err, werr, done;
	size_t i;
	int r;

	/* A pipe message is one WriteFile: its length is a DWORD. */
	for (i = 0; i < n; i++) {
		if (msgs[i].len > MAXDWORD) {
			return CQW_EMSGSIZE;
		}
	}
	for (i = 0; i < n; i++) {
		r = cqw__win_ov_init(&o);
		if (r < 0) {
			return r;
		}
		err = 0;
		if (!WriteFile(h, msgs[i].len > 0 ? msgs[i].buf : zero_buf,
			       (DWORD)msgs[i].len, NULL, &o.ov)) {
			err = GetLastError();
		}
		done = 0;
		if (err == ERROR_IO_PENDING) {
			/*
			 * Never cut: the reader may hold part of it already,
			 * and the rest could not follow as the same message.
			 */
			cqw__win_ov_finish(h, &o, err, CQW__WIN_NOSTOP, &done,
					   &werr);
		} else if (err == 0) {
			werr = GetOverlappedResult(h, &o.ov, &done, FALSE)
				   ? 0
				   : GetLastError();
		} else {
			werr = err;
		}
		if (werr != 0) {
			/* The reader is gone: ERROR_NO_DATA, BROKEN_PIPE. */
			return cqw__win_error(werr);
		}
		if (done != msgs[i].len) {
			return CQW_EIO; /* Python asserts this cannot be */
		}
	}
	return 0;
}

static void
msg_release(cqw_conn *c)
{
	drop_part(c);
	c->empty_pending = 0;
}

static const struct cqw__transport message_tp = {
	.name = "message",
	.send = msg_send,
	.recv_into = msg_recv_into,
	.recv_alloc = msg_recv_alloc,
	.poll = msg_poll,
	.recv_batch = msg_recv_batch,
	.ready_now = msg_ready_now,
	.release = msg_release,
	.framer = &cqw__message_framer,
};

const struct cqw__transport *
cqw__win_message_transport(void)
{
	return &message_tp;
}
