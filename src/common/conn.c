/*
 * The synchronous API: Python's Connection. Arguments and state are
 * checked here in the order Python checks them (closed, then direction,
 * then arguments); the connection's transport (transport.h) does the
 * rest, with the platform's calls.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "loop.h"
#include "platform.h"
#include "transport.h"

int
cqw__conn_new(cqw_conn **out, cqw_fd fd, int kind, unsigned flags)
{
	cqw_conn *c;

	if (kind < 0) {
		kind = cqw__io_fd_kind(fd);
	}

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
		r = cqw__conn_new(out, fd, -1, flags);
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
	int duplex = (flags & CQW_DUPLEX) == CQW_DUPLEX, kind[2];
	cqw_fd fds[2];
	int r;

	if (a == NULL || b == NULL || (flags & ~CQW__CONN_FLAGS) != 0) {
		return CQW_EINVAL;
	}
	if (duplex) {
		fa = fb = CQW_DUPLEX;
	}
	r = cqw__os_pipe(fds, kind, duplex);
	if (r < 0) {
		return r;
	}
	r = cqw__conn_new(a, fds[0], kind[0], fa | extra);
	if (r < 0) {
		goto out_close_both;
	}
	r = cqw__conn_new(b, fds[1], kind[1], fb | extra);
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
check_read(cqw_conn *c)
{
	int r;

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
	/* A multishot the loop kept armed ends first (stream.c). */
	if (c->loop != NULL && c->recv_busy) {
		r = cqw__loop_quiesce(c);
		if (r < 0) {
			return r;
		}
	}
	/*
	 * An error the multishot ended with (the socket said it once, to
	 * it) is the next receive's once the bytes it took are out.
	 */
	if (c->ms_final < 0 && !c->recv_busy && c->stage_off == c->stage_len &&
	    c->deferred_err == 0) {
		c->deferred_err = c->ms_final;
		c->ms_final = 0;
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
	return c->tp->send(c, &m, 1);
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

	if (r < 0) {
		return r;
	}
	if (offset > cap || (buf == NULL && cap > 0)) {
		return CQW_EINVAL;
	}
	return c->tp->recv_into(c, (char *)buf + offset, cap - offset, needed,
				-1);
}

int64_t
cqw_recv_bytes(cqw_conn *c, void **out, int64_t maxlength)
{
	int r = check_read(c);

	if (r < 0) {
		return r;
	}
	if (out == NULL || maxlength < CQW_NONE) {
		return CQW_EINVAL;
	}
	return c->tp->recv_alloc(c, out, maxlength);
}

int64_t
cqw__conn_recv_small(cqw_conn *c, void *buf, size_t cap, int64_t deadline)
{
	size_t needed;
	int64_t r = c->tp->recv_into(c, buf, cap, &needed, deadline);

	if (r == CQW_ETOOSHORT) {
		cqw__conn_poison(c);
		return CQW_EMSGSIZE;
	}
	return r;
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
	if (c->deferred_err < 0) {
		return 1; /* the next receive returns it at once */
	}
	return c->tp->poll(c, timeout_ms);
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
	return c->tp->send(c, msgs, n);
}

int
cqw_recv_batch(cqw_conn *c, struct cqw_msg *msgs, size_t n, int timeout_ms)
{
	int r = check_read(c);

	if (r < 0) {
		return r;
	}
	if (msgs == NULL || n == 0) {
		return CQW_EINVAL;
	}
	return c->tp->recv_batch(c, msgs, n, timeout_ms);
}

int
cqw_wait(struct cqw_wait_item *items, size_t n, int timeout_ms)
{
	size_t i;

	if (items == NULL && n > 0) {
		return CQW_EINVAL;
	}
	for (i = 0; i < n; i++) {
		items[i].ready = 0;
	}
	for (i = 0; i < n; i++) {
		/* Python's fileno() raises for a closed connection, only. */
		if (items[i].conn != NULL && items[i].conn->closed) {
			return CQW_ECLOSED;
		}
	}
	for (i = 0; i < n; i++) {
		cqw_conn *c = items[i].conn;
		int r;

		/*
		 * A multishot the loop kept armed holds bytes the socket no
		 * longer shows: it ends first (as for a read), so that they
		 * are the connection's again (stream.c).
		 */
		if (c != NULL && c->loop != NULL && c->recv_busy &&
		    (c->flags & CQW_READABLE)) {
			r = cqw__loop_quiesce(c);
			if (r < 0) {
				return r;
			}
		}
	}
	return cqw__os_wait(items, n, timeout_ms);
}

int
cqw_send_handle(cqw_conn *c, cqw_fd fd)
{
	return cqw_send_handle_to(c, fd, 0);
}

int
cqw_send_handle_to(cqw_conn *c, cqw_fd fd, uint64_t pid)
{
	int r = check_write(c);

	if (r < 0) {
		return r;
	}
	return cqw__os_send_handle(c, fd, pid);
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
	return cqw__os_recv_handle(c, fd);
}
