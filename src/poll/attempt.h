/*
 * What both builds of the poll backend (epoll.c, loop.c: readiness) do
 * when an io may go ahead: try its non-blocking system call.
 */
#ifndef CQW_POLL_ATTEMPT_H
#define CQW_POLL_ATTEMPT_H

#include "common/loop.h"
#include "posix/io.h"

/* Try the io's system call: 1 if it completed, 0 if it must wait. */
static inline int
cqw__poll_attempt(cqw_loop *loop, struct cqw__io *io)
{
	int64_t r;

	if (io->op == CQW__IO_RECV) {
		r = cqw__io_read(io->handle, &io->kind, io->buf, io->len);
	} else if (io->op == CQW__IO_PEEK) {
		r = cqw__io_peek(io->handle, io->buf, io->len);
	} else if (io->op == CQW__IO_ACCEPT) {
		r = cqw__io_accept(io->handle);
	} else if (io->op == CQW__IO_CONNECT) {
		r = cqw__io_connected(io->handle);
	} else {
		r = cqw__io_writev(io->handle, &io->kind, io->iov, io->iovcnt);
	}
	if (r == CQW_EAGAIN) {
		return 0;
	}
	cqw__loop_io_complete(loop, io, r, 0);
	return 1;
}

#endif
