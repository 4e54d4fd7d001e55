/*
 * The synchronous API: Python's Connection. Arguments and state are
 * checked here in the order Python checks them (closed, then direction,
 * then arguments); the channel does the framing.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "loop.h"

/* A message bigger than this is received into memory grown as it comes. */
#define RECV_PREALLOC_MAX (16u * 1024 * 1024)

int
cqw__conn_new(cqw_conn **out, cqw_fd fd, unsigned flags)
{
	cqw_conn *c;
	int kind = cqw__io_fd_kind(fd);

	if (kind < 0) {
		return kind;
	}
	c = malloc(sizeof(*c));
	if (c == NULL) {
		return CQW_ENOMEM;
	}
	cqw__conn_init(c, fd, kind, flags);
	*out = c;
	return 0;
}

int
cqw_conn_from_fd(cqw_conn **out, cqw_fd fd, unsigned flags)
{
	int r;

	if (fd < 0) {
		return CQW_EINVAL;
	}
	if (out == NULL || (flags & CQW_DUPLEX) == 0 ||
	    (flags & ~CQW__CONN_FLAGS) != 0) {
		r = CQW_EINVAL;
	} else {
		r = cqw__conn_new(out, fd, flags);
	}
	/* The descriptor is ours even when we fail: do not leak it. */
	if (r < 0 && r != CQW_EBADF) {
		cqw__io_close(fd);
	}
	return r;
}

int
cqw_pipe(cqw_conn **a, cqw_conn **b, unsigned flags)
{
	unsigned extra = flags & (CQW_EXCLUSIVE | CQW_NO_LARGE_FRAMES);
	unsigned fa = CQW_READABLE, fb = CQW_WRITABLE;
	cqw_fd fds[2];
	int r;

	if (a == NULL || b == NULL || (flags & ~CQW__CONN_FLAGS) != 0) {
		return CQW_EINVAL;
	}
	if ((flags & CQW_DUPLEX) == CQW_DUPLEX) {
		r = cqw__io_socketpair(fds);
		fa = fb = CQW_DUPLEX;
	} else {
		r = cqw__io_pipe(fds);
	}
	if (r < 0) {
		return r;
	}
	r = cqw__conn_new(a, fds[0], fa | extra);
	if (r < 0) {
		goto out_close_both;
	}
	r = cqw__conn_new(b, fds[1], fb | extra);
	if (r < 0) {
		free(*a);
		*a = NULL; /* a caller's cleanup must not free it again */
		goto out_close_both;
	}
	return 0;

out_close_both:
	cqw__io_close(fds[0]);
	cqw__io_close(fds[1]);
	return r;
}

int
cqw_conn_close(cqw_conn *c)
{
	int r;

	if (c == NULL) {
		return CQW_EINVAL;
	}
	if (c->closed) {
		return 0;
	}
	if (c->loop != NULL) {
		r = cqw__loop_conn_close(c->loop, c);
		if (r < 0) {
			return r; /* still open: the kernel may own its buffers */
		}
	}
	c->closed = 1;
	r = cqw__io_close(c->fd);
	cqw__chan_release(c);
	return r;
}

void
cqw_conn_free(cqw_conn *c)
{
	if (c == NULL) {
		return;
	}
	/*
	 * A connection that cannot be closed (its loop belongs to another
	 * thread, or the loop's wait failed) is left allocated rather than
	 * freed under the kernel's feet.
	 */
	if (cqw_conn_close(c) < 0 && !c->closed) {
		return;
	}
	free(c);
}

cqw_fd
cqw_conn_detach(cqw_conn *c)
{
	if (c == NULL) {
		return CQW_EINVAL;
	}
	if (c->closed) {
		return CQW_ECLOSED;
	}
	if (c->loop != NULL) {
		int r = cqw__loop_conn_close(c->loop, c);

		if (r < 0) {
			return r;
		}
	}
	c->closed = 1;
	cqw__chan_release(c);
	return c->fd;
}

cqw_fd
cqw_conn_fileno(const cqw_conn *c)
{
	if (c == NULL) {
		return CQW_EINVAL;
	}
	return c->closed ? CQW_ECLOSED : c->fd;
}

int
cqw_conn_closed(const cqw_conn *c)
{
	return c == NULL || c->closed;
}

int
cqw_conn_readable(const cqw_conn *c)
{
	return c != NULL && (c->flags & CQW_READABLE) != 0;
}

int
cqw_conn_writable(const cqw_conn *c)
{
	return c != NULL && (c->flags & CQW_WRITABLE) != 0;
}

int
cqw_conn_set_spin(cqw_conn *c, unsigned usec)
{
	if (c == NULL) {
		return CQW_EINVAL;
	}
	c->spin_us = usec;
	return 0;
}

void
cqw__conn_poison(cqw_conn *c)
{
	/*
	 * The header of a refused frame was consumed and its payload was
	 * not: nothing read from here on could be trusted. Python keeps a
	 * duplex end for writing and closes a read-only one.
	 */
	if (c->flags & CQW_WRITABLE) {
		c->flags &= ~CQW_READABLE;
	} else {
		cqw_conn_close(c);
	}
}

static int
check_read(const cqw_conn *c)
{
	if (c == NULL) {
		return CQW_EINVAL;
	}
	if (c->closed) {
		return CQW_ECLOSED;
	}
	if ((c->flags & CQW_READABLE) == 0) {
		return CQW_EWRITEONLY;
	}
	if (c->inflight) {
		return CQW_EBUSY;
	}
	return c->recv_error;
}

static int
check_write(const cqw_conn *c)
{
	if (c == NULL) {
		return CQW_EINVAL;
	}
	if (c->closed) {
		return CQW_ECLOSED;
	}
	if ((c->flags & CQW_WRITABLE) == 0) {
		return CQW_EREADONLY;
	}
	if (c->inflight) {
		return CQW_EBUSY;
	}
	/* An async send failed part-way: the stream may be torn. */
	return c->send_error;
}

int
cqw_send_bytes(cqw_conn *c, const void *buf, size_t len)
{
	struct cqw_msg m = { .buf = (void *)buf, .len = len };
	int r = check_write(c);

	if (r < 0) {
		return r;
	}
	if (buf == NULL && len > 0) {
		return CQW_EINVAL;
	}
	return cqw__chan_send(c, &m, 1);
}

int
cqw_send_bytes_at(cqw_conn *c, const void *buf, size_t buflen, int64_t offset,
		  int64_t size)
{
	int r = check_write(c);

	if (r < 0) {
		return r;
	}
	/* The checks and their order are Python's (WIRE.md §2.6). */
	if (offset < 0 || (uint64_t)offset > buflen) {
		return CQW_EINVAL;
	}
	if (size == CQW_NONE) {
		size = (int64_t)(buflen - (size_t)offset);
	} else if (size < 0 || (uint64_t)size > buflen - (size_t)offset) {
		return CQW_EINVAL;
	}
	return cqw_send_bytes(c, (const char *)buf + offset, (size_t)size);
}

int64_t
cqw_recv_bytes_into(cqw_conn *c, void *buf, size_t cap, size_t offset,
		    size_t *needed)
{
	int r = check_read(c);
	struct cqw__peek p;
	uint64_t len;

	if (r < 0) {
		return r;
	}
	if (offset > cap || (buf == NULL && cap > 0)) {
		return CQW_EINVAL;
	}
	if (cqw__chan_exact_boundary(c)) {
		/*
		 * Frame-exact: look at the header before taking a byte, so
		 * that a frame too big for buf stays in the kernel for any
		 * reader of the descriptor, not only for this connection.
		 */
		r = cqw__chan_wait_header(c, &p, -1);
		if (r < 0) {
			return r;
		}
		if (r == 1) {
			if (p.len > cap - offset || p.len > INT64_MAX) {
				goto out_too_short;
			}
			return cqw__chan_take_frame(c, &p, (char *)buf + offset,
						    cap - offset);
		}
		/* Not peekable: read the header the consuming way. */
	}
	r = cqw__chan_recv_header(c, -1);
	if (r < 0) {
		return r;
	}
	len = c->dec.len;
	if (len > cap - offset || len > INT64_MAX) {
		/* Keep the frame: the next receive starts at its payload. */
		p.len = len;
		goto out_too_short;
	}
	r = cqw__chan_recv_payload(c, (char *)buf + offset, len, -1);
	return r < 0 ? r : (int64_t)len;

out_too_short:
	if (needed != NULL) {
		*needed = p.len > SIZE_MAX ? SIZE_MAX : (size_t)p.len;
	}
	return CQW_ETOOSHORT;
}

int64_t
cqw_recv_bytes(cqw_conn *c, void **out, int64_t maxlength)
{
	int r = check_read(c);
	uint64_t len, have;
	uint8_t *buf, *bigger;

	if (r < 0) {
		return r;
	}
	if (out == NULL || maxlength < CQW_NONE) {
		return CQW_EINVAL;
	}
	r = cqw__chan_recv_header(c, -1);
	if (r < 0) {
		return r;
	}
	len = c->dec.len;
	if ((maxlength >= 0 && len > (uint64_t)maxlength) ||
	    len > (uint64_t)INT64_MAX || len > SIZE_MAX - 1) {
		cqw__conn_poison(c);
		return CQW_EMSGSIZE;
	}
	/*
	 * Allocate as the payload arrives beyond 16 MiB: a hostile header
	 * costs at most that (or maxlength) more than its sender really
	 * sends, never what it claims.
	 */
	have = len < RECV_PREALLOC_MAX ? len : RECV_PREALLOC_MAX;
	if (have < c->pay_got) {
		have = c->pay_got; /* a part kept from an interrupted call */
	}
	buf = malloc(have > 0 ? (size_t)have : 1);
	if (buf == NULL) {
		goto out_nomem;
	}
	for (;;) {
		r = cqw__chan_recv_payload(c, buf, have, -1);
		if (r < 0) {
			free(buf);
			return r;
		}
		if (have == len) {
			break;
		}
		have = have * 2 < len ? have * 2 : len;
		bigger = realloc(buf, (size_t)have);
		if (bigger == NULL) {
			free(buf);
			goto out_nomem;
		}
		buf = bigger;
	}
	*out = buf;
	return (int64_t)len;

out_nomem:
	cqw__conn_poison(c);
	return CQW_ENOMEM;
}

void
cqw_free(void *p)
{
	free(p);
}

int
cqw_poll(cqw_conn *c, int timeout_ms)
{
	int r = check_read(c);

	if (r < 0) {
		return r;
	}
	if (cqw__chan_has_buffered(c) || c->deferred_err < 0) {
		return 1; /* the next receive returns at once */
	}
	return cqw__io_wait(c->fd, 0, timeout_ms);
}

int
cqw_send_batch(cqw_conn *c, const struct cqw_msg *msgs, size_t n)
{
	int r = check_write(c);
	size_t i;

	if (r < 0) {
		return r;
	}
	if (msgs == NULL && n > 0) {
		return CQW_EINVAL;
	}
	for (i = 0; i < n; i++) {
		if (msgs[i].buf == NULL && msgs[i].len > 0) {
			return CQW_EINVAL;
		}
	}
	return cqw__chan_send(c, msgs, n);
}

/*
 * Wait until the next frame can be read without sleeping (see
 * cqw__chan_frame_ready()). 1 ready, 0 at the deadline, or an error.
 */
static int
wait_frame(cqw_conn *c, size_t cap, int64_t deadline)
{
	uint64_t partial, last = 0;
	unsigned us = 50, still = 0;
	int r, commit = 0;

	for (;;) {
		r = cqw__chan_frame_ready(c, cap, 1, commit, &partial);
		if (r != 0) {
			return r;
		}
		if (partial && cqw__dec_want(&c->dec) == 0) {
			/*
			 * A frame this connection has begun: hold what came
			 * of its payload in the staging buffer (never past
			 * the frame unless exclusive), so that poll() sleeps
			 * until more arrives.
			 */
			r = cqw__chan_stage_payload(c);
			if (r > 0) {
				continue; /* is it whole now? */
			}
			if (r != CQW_EAGAIN) {
				return r < 0 ? r
					     : 1; /* EOF: the read says so */
			}
			partial = 0;
		}
		if (partial && cqw__chan_exact_boundary(c)) {
			/*
			 * Frame-exact: part of the next frame is queued and
			 * stays there (another reader may take it), so poll()
			 * would not sleep: nap instead. A queue that stops
			 * growing for 20 ms holds a frame the kernel may
			 * never hold whole (a sender's small buffer): commit.
			 */
			still = partial == last ? still + us : 0;
			last = partial;
			/*
			 * Without a deadline nothing is gained by waiting
			 * for the whole frame: commit to any stalled one, and
			 * let the read sleep (no more naps).
			 */
			commit = still < 20000 ? 0 : deadline < 0 ? 2 : 1;
			r = cqw__chan_nap(&us, deadline);
			if (r < 0) {
				return r == CQW_ETIMEDOUT ? 0 : r;
			}
			continue;
		}
		r = cqw__io_wait(c->fd, 0, cqw__remaining_ms(deadline));
		if (r <= 0) {
			return r;
		}
	}
}

int
cqw_recv_batch(cqw_conn *c, struct cqw_msg *msgs, size_t n, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : cqw__now_ms() + timeout_ms;
	int r = check_read(c);
	uint64_t partial;
	size_t got = 0;
	int64_t len;

	if (r < 0) {
		return r;
	}
	if (msgs == NULL || n == 0) {
		return CQW_EINVAL;
	}
	r = cqw_poll(c, timeout_ms);
	if (r > 0) {
		r = wait_frame(c, msgs[0].cap, deadline);
	}
	while (r > 0 && got < n) {
		if (!(c->flags & CQW_EXCLUSIVE)) {
			r = cqw__chan_recv_peeked(c, msgs + got, n - got);
			if (r > 0) {
				got += (size_t)r;
				r = cqw_poll(c, 0);
				continue;
			}
			if (r < 0) {
				break;
			}
		}
		/* After the first, take only frames that are wholly here. */
		if (got > 0) {
			r = cqw__chan_frame_ready(c, msgs[got].cap, 0, 0,
						  &partial);
			if (r <= 0) {
				break;
			}
		}
		len = cqw_recv_bytes_into(c, msgs[got].buf, msgs[got].cap, 0,
					  &msgs[got].len);
		if (len < 0) {
			r = (int)len;
			break;
		}
		msgs[got++].len = (size_t)len;
		r = cqw_poll(c, 0);
	}
	if (r < 0 && got == 0) {
		return r;
	}
	if (r < 0 && r != CQW_ETOOSHORT) {
		/* Hand up what we have; the error is the next call's. */
		c->deferred_err = r;
	}
	return (int)got;
}

int
cqw_wait(struct cqw_wait_item *items, size_t n, int timeout_ms)
{
	cqw_fd stackfds[64], *fds = stackfds;
	int stackready[64], *ready = stackready;
	size_t i;
	int r, buffered = 0;

	if (items == NULL && n > 0) {
		return CQW_EINVAL;
	}
	if (n > 64) {
		fds = malloc(n * sizeof(*fds));
		ready = malloc(n * sizeof(*ready));
		if (fds == NULL || ready == NULL) {
			r = CQW_ENOMEM;
			goto out_free;
		}
	}
	for (i = 0; i < n; i++) {
		cqw_conn *c = items[i].conn;

		items[i].ready = 0;
		if (c == NULL) {
			fds[i] = items[i].fd;
			continue;
		}
		/* Python's fileno() raises for a closed connection, only. */
		if (c->closed) {
			r = CQW_ECLOSED;
			goto out_free;
		}
		fds[i] = c->fd;
		/*
		 * A write-only, poisoned or busy connection is watched like
		 * any descriptor (Python's wait() looks at fileno() alone).
		 * One whose next receive returns at once (a frame or an
		 * error already here) is ready now; a busy one's state is
		 * its loop's, so only its descriptor is asked.
		 */
		if (c->inflight == 0 && (c->flags & CQW_READABLE) &&
		    (cqw__chan_has_buffered(c) || c->recv_error < 0 ||
		     c->deferred_err < 0)) {
			items[i].ready = 1;
			buffered++;
		}
	}
	/* Frames already buffered are ready: only look, do not wait. */
	r = cqw__io_wait_many(fds, ready, n, buffered ? 0 : timeout_ms);
	if (r < 0) {
		goto out_free;
	}
	r = 0;
	for (i = 0; i < n; i++) {
		items[i].ready |= ready[i];
		r += items[i].ready;
	}
out_free:
	if (fds != stackfds) {
		free(fds);
	}
	if (ready != stackready) {
		free(ready);
	}
	return r;
}

int
cqw_send_handle(cqw_conn *c, cqw_fd fd)
{
	int r = check_write(c);

	if (r < 0) {
		return r;
	}
	if (c->kind != CQW__FD_SOCK) {
		return CQW_ENOTSOCK;
	}
	return cqw__io_send_fd(c->fd, fd);
}

int
cqw_recv_handle(cqw_conn *c, cqw_fd *fd)
{
	int r = check_read(c);

	if (r < 0) {
		return r;
	}
	if (fd == NULL) {
		return CQW_EINVAL;
	}
	if (c->kind != CQW__FD_SOCK) {
		return CQW_ENOTSOCK;
	}
	/*
	 * The handle's byte must be the next byte on the socket: not inside
	 * a frame, not already read ahead (its descriptor would be lost).
	 */
	if (cqw__chan_has_buffered(c)) {
		return CQW_EPROTO;
	}
	return cqw__io_recv_fd(c->fd, fd);
}
