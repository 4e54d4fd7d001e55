/*
 * cqw_wait() on Windows (platform.h: cqw__os_wait), as Python's wait()
 * (WIRE.md §5.2) but with no limit on the number of items.
 *
 * Each item becomes something to wait on:
 *   - a connection whose next receive returns at once: ready now;
 *   - a message pipe connection: PeekNamedPipe, then a zero-byte
 *     overlapped read (§7.4) on an event of its own. At the end every
 *     probe still pending is cancelled and waited for; one that consumed
 *     a zero-length message sets c->empty_pending, so the message is
 *     returned by the next receive, never lost or seen twice;
 *   - a socket (connection or raw): a zero-byte overlapped WSARecv,
 *     which consumes nothing;
 *   - any other raw handle: waited on as an object (a process, an
 *     event...), as Python waits on an int;
 *   - a pipe connection that has ops on a loop: only peeked, again every
 *     20 ms (a probe could take a zero-length message from its loop's
 *     receive, so one of those is not seen); a listening socket, which
 *     takes no receive, or one made without WSA_FLAG_OVERLAPPED, where
 *     the probe would block: select() every 20 ms; a write-only pipe end:
 *     never ready (nothing to read).
 *
 * Up to 64 handles (MAXIMUM_WAIT_OBJECTS) go to WaitForMultipleObjects.
 * More (CPython gh-89240) are waited on by the system thread pool
 * (RegisterWaitForSingleObject), each wait marking its item and setting
 * one event; UnregisterWaitEx with INVALID_HANDLE_VALUE waits for the
 * callbacks to finish before their memory goes. Like Python's
 * _exhaustive_wait, every item ready at the end is reported, not only
 * the first. An auto-reset object (an event) a wait took is reported
 * ready, as in Python, and is then reset.
 */
#include <stdlib.h>
#include <string.h>

#include "win/win.h"

enum {
	S_READY = 1, /* ready before any wait */
	S_PIPE,	     /* a pipe probe pending on ov */
	S_SOCK,	     /* a socket probe pending on ov */
	S_RAW,	     /* a raw handle, waited on as an object */
	S_PEEK,	     /* a busy pipe connection: peeked every slice */
	S_SELECT,    /* a listening socket: select() every slice */
	S_NEVER,     /* cannot become ready (write-only pipe end) */
};

/* How often busy pipe connections are peeked again. */
#define PEEK_SLICE_MS 20

struct slot {
	int state;
	int ready;
	HANDLE h; /* what the waits wait on (S_PIPE, S_SOCK: ov.ev) */
	struct cqw__win_ov ov;
	/* The thread pool's wait, for more than 64 handles. */
	HANDLE wait;
	HANDLE wake;
	volatile LONG fired;
};

static void CALLBACK
pool_fired(void *arg, BOOLEAN timed_out)
{
	struct slot *s = arg;

	(void)timed_out;
	InterlockedExchange(&s->fired, 1);
	SetEvent(s->wake);
}

/* A fresh event for a probe of its own; the low bit keeps ports out. */
static int
probe_ov(struct slot *s)
{
	memset(&s->ov.ov, 0, sizeof(s->ov.ov));
	s->ov.ev = CreateEventW(NULL, TRUE, FALSE, NULL);
	if (s->ov.ev == NULL) {
		return cqw__win_last();
	}
	s->ov.ov.hEvent = (HANDLE)((uintptr_t)s->ov.ev | 1);
	s->h = s->ov.ev;
	return 0;
}

static void
probe_close(struct slot *s)
{
	if (s->ov.ev != NULL) {
		CloseHandle(s->ov.ev);
		s->ov.ev = NULL;
	}
}

/* Decide what item i is, starting a probe if it needs one. */
static int
setup(struct cqw_wait_item *it, struct slot *s)
{
	cqw_conn *c = it->conn;
	cqw_fd fd = c != NULL ? c->fd : it->fd;
	DWORD flags;
	int r;

	if (c != NULL && c->inflight == 0 && (c->flags & CQW_READABLE) &&
	    c->tp != NULL && c->tp->ready_now(c)) {
		s->state = S_READY;
		return 0;
	}
	if (c != NULL && c->kind == CQW__FD_MSGPIPE) {
		r = cqw__pipe_peek_ready((HANDLE)fd);
		if (r != 0) {
			s->state = r > 0 ? S_READY : S_NEVER;
			return 0;
		}
		if (c->inflight) {
			s->state = S_PEEK;
			return 0;
		}
		r = probe_ov(s);
		if (r < 0) {
			return r;
		}
		r = cqw__pipe_probe_start(c, &s->ov);
		s->state = r == 0 ? S_PIPE : r > 0 ? S_READY : S_NEVER;
		return 0;
	}
	if ((c != NULL && c->kind == CQW__FD_SOCK) ||
	    (c == NULL && cqw__win_is_socket(fd))) {
		if (cqw__win_is_sync((HANDLE)fd)) {
			/* A probe would block on it: look every slice. */
			s->state = S_SELECT;
			return 0;
		}
		r = probe_ov(s);
		if (r < 0) {
			return r;
		}
		r = cqw__sock_probe_start((SOCKET)fd, &s->ov);
		if (r == CQW_ENOTCONN) {
			probe_close(s);
			s->state = S_SELECT;
			return 0;
		}
		if (r < 0) {
			return r;
		}
		s->state = r == 0 ? S_SOCK : S_READY;
		return 0;
	}
	if (c != NULL) {
		s->state = S_NEVER; /* no other kind of connection exists */
		return 0;
	}
	/* A handle that is not open: refused before anything waits. */
	if (!GetHandleInformation((HANDLE)fd, &flags)) {
		return CQW_EBADF;
	}
	s->state = S_RAW;
	s->h = (HANDLE)fd;
	return 0;
}

/* Finish item i: collect a probe (cancelling it), look at a raw handle. */
static void
finish(struct cqw_wait_item *it, struct slot *s)
{
	cqw_fd fd = it->conn != NULL ? it->conn->fd : it->fd;

	switch (s->state) {
	case S_READY:
		s->ready = 1;
		break;
	case S_PIPE:
		s->ready = cqw__pipe_probe_end(it->conn, &s->ov) == 1;
		break;
	case S_SOCK:
		s->ready = cqw__sock_probe_end((SOCKET)fd, &s->ov) == 1;
		break;
	case S_RAW:
		s->ready = s->ready || s->fired ||
			   WaitForSingleObject(s->h, 0) == WAIT_OBJECT_0;
		break;
	case S_PEEK:
		s->ready = cqw__pipe_peek_ready((HANDLE)fd) > 0;
		break;
	case S_SELECT:
		s->ready = cqw__sock_wait((SOCKET)fd, 0, 0) == 1;
		break;
	default:
		break;
	}
	probe_close(s);
}

/* A slot that is looked at every slice: is it ready now? */
static int
polled_ready(const struct cqw_wait_item *it, const struct slot *s)
{
	cqw_fd fd = it->conn != NULL ? it->conn->fd : it->fd;

	if (s->state == S_PEEK) {
		return cqw__pipe_peek_ready((HANDLE)fd) > 0;
	}
	if (s->state == S_SELECT) {
		return cqw__sock_wait((SOCKET)fd, 0, 0) == 1;
	}
	return 0;
}

/*
 * Wait for the handles hs[0..nh) up to timeout_ms, in slices when a
 * signal check is set or busy pipes are peeked. 0 when something may be
 * ready (*which: the handle that was signalled, or nh), CQW_ETIMEDOUT,
 * CQW_EINTR, or an error.
 */
static int
wait_handles(const HANDLE *hs, DWORD nh, int timeout_ms, DWORD *which,
	     const struct slot *slots, const struct cqw_wait_item *items,
	     size_t n, int peeking)
{
	int64_t deadline = timeout_ms < 0 ? -1 : cqw__now_ms() + timeout_ms;
	int sliced = cqw__signal_check_set();
	DWORD w, ms;
	size_t i;

	*which = nh;
	for (;;) {
		ms = timeout_ms < 0 ? INFINITE
				    : (DWORD)cqw__remaining_ms(deadline);
		if (sliced && ms > CQW__WIN_SLICE_MS) {
			ms = CQW__WIN_SLICE_MS;
		}
		if (peeking && ms > PEEK_SLICE_MS) {
			ms = PEEK_SLICE_MS;
		}
		if (nh > 0) {
			w = WaitForMultipleObjects(nh, hs, FALSE, ms);
		} else {
			Sleep(ms == INFINITE ? CQW__WIN_SLICE_MS : ms);
			w = WAIT_TIMEOUT;
		}
		if (w < WAIT_OBJECT_0 + nh) {
			*which = w - WAIT_OBJECT_0;
			return 0;
		}
		if (w >= WAIT_ABANDONED_0 && w < WAIT_ABANDONED_0 + nh) {
			*which = w - WAIT_ABANDONED_0;
			return 0;
		}
		if (w == WAIT_FAILED) {
			return cqw__win_last();
		}
		for (i = 0; peeking && i < n; i++) {
			if (polled_ready(&items[i], &slots[i])) {
				return 0;
			}
		}
		if (deadline >= 0 && cqw__remaining_ms(deadline) == 0) {
			return CQW_ETIMEDOUT;
		}
		if (sliced && cqw__eintr_stop()) {
			return CQW_EINTR;
		}
	}
}

/* More than 64 handles: the thread pool waits, one event wakes us. */
static int
wait_pool(struct slot *slots, size_t n, int timeout_ms, int peeking,
	  const struct cqw_wait_item *items)
{
	HANDLE wake = CreateEventW(NULL, TRUE, FALSE, NULL);
	DWORD which;
	size_t i;
	int r = 0;

	if (wake == NULL) {
		return cqw__win_last();
	}
	for (i = 0; i < n; i++) {
		struct slot *s = &slots[i];

		if (s->state != S_PIPE && s->state != S_SOCK &&
		    s->state != S_RAW) {
			continue;
		}
		s->wake = wake;
		if (!RegisterWaitForSingleObject(&s->wait, s->h, pool_fired, s,
						 INFINITE,
						 WT_EXECUTEONLYONCE)) {
			s->wait = NULL;
			r = cqw__win_last();
			goto out_unregister;
		}
	}
	r = wait_handles(&wake, 1, timeout_ms, &which, slots, items, n,
			 peeking);
out_unregister:
	for (i = 0; i < n; i++) {
		if (slots[i].wait != NULL) {
			/* Returns once its callback, if any, has finished. */
			UnregisterWaitEx(slots[i].wait, INVALID_HANDLE_VALUE);
			slots[i].wait = NULL;
		}
	}
	CloseHandle(wake);
	return r;
}

int
cqw__os_wait(struct cqw_wait_item *items, size_t n, int timeout_ms)
{
	HANDLE hs[MAXIMUM_WAIT_OBJECTS] = { NULL };
	size_t idx[MAXIMUM_WAIT_OBJECTS];
	struct slot *slots;
	DWORD which;
	size_t i, nwait = 0, nready = 0;
	int r = 0, peeking = 0, count = 0;

	slots = calloc(n > 0 ? n : 1, sizeof(*slots));
	if (slots == NULL) {
		return CQW_ENOMEM;
	}
	for (i = 0; i < n; i++) {
		items[i].ready = 0;
		r = setup(&items[i], &slots[i]);
		if (r < 0) {
			n = i + 1; /* finish what was set up, then fail */
			goto out_finish;
		}
		switch (slots[i].state) {
		case S_READY:
			nready++;
			break;
		case S_PEEK:
		case S_SELECT:
			peeking = 1;
			break;
		case S_PIPE:
		case S_SOCK:
		case S_RAW:
			if (nwait < MAXIMUM_WAIT_OBJECTS) {
				hs[nwait] = slots[i].h;
				idx[nwait] = i;
			}
			nwait++;
			break;
		default:
			break;
		}
	}
	/* Something is ready already: only look at the others. */
	if (nready > 0) {
		timeout_ms = 0;
	}
	if (timeout_ms == 0) {
		r = 0; /* finish() below looks at each one */
	} else if (nwait <= MAXIMUM_WAIT_OBJECTS) {
		r = wait_handles(hs, (DWORD)nwait, timeout_ms, &which, slots,
				 items, n, peeking);
		if (r == 0 && which < nwait) {
			/* It may be an auto-reset object: remember it. */
			slots[idx[which]].ready = 1;
		}
	} else {
		r = wait_pool(slots, n, timeout_ms, peeking, items);
	}
	if (r == CQW_ETIMEDOUT) {
		r = 0;
	}
out_finish:
	/* Every probe is collected, whatever happened: the kernel's ovs. */
	for (i = 0; i < n; i++) {
		finish(&items[i], &slots[i]);
		items[i].ready = slots[i].ready;
		count += slots[i].ready;
	}
	free(slots);
	if (r < 0) {
		for (i = 0; i < n; i++) {
			items[i].ready = 0;
		}
		return r;
	}
	return count;
}
