/*
 * The backend seam: what a completion-queue backend (src/poll, src/uring,
 * src/iocp) implements for src/common/loop.c. A loop holds a pointer to
 * one const ops table; two can coexist in one process (uring, with poll
 * as its fallback).
 *
 * The unit of work is a struct cqw__io. It says what it is for (receive,
 * send a gather, peek), names the handle it acts on and that handle's
 * kind, and comes back with a result and completion flags. The backend
 * picks the system call from the op and the kind; it never looks inside
 * the connection that owns the io. The transport's framer (stream.c,
 * message.c) owns every io and the memory it points at until the backend
 * completes it.
 *
 * Rules every backend keeps:
 * - attach() binds a handle to the loop before its first io there, and
 *   detach() lets it go once none is in flight. Both may be NULL. A
 *   backend that cannot let a handle go (IOCP binds a handle to one port
 *   for good) says so by returning CQW_EBUSY from detach: the connection
 *   then stays the loop's until it is closed.
 * - start() never fails and never blocks, and needs no memory: an io that
 *   is part of a send already half on the wire must not end early. It may
 *   complete the io at once (the poll backend tries the system call first;
 *   IOCP's skip-on-success completions) by calling cqw__loop_io_complete();
 *   it never calls back into the channel.
 * - Every started io completes exactly once through cqw__loop_io_complete()
 *   with result >= 0 (bytes; 0 is end of file for stream receives) or a
 *   CQW_E* code, and flags (CQW__CF_*). CQW_EAGAIN is never a result:
 *   waiting for readiness is the backend's job. An io that completes more
 *   than once (multishot) sets CQW__CF_MORE on every completion but the
 *   last. While an io waits on the loop's list (io->queued), a backend
 *   folds its next completions into that one (result and flags updated)
 *   instead of queueing it twice.
 * - A backend with buf_next() takes CQW__IO_RECV_MULTI on stream sockets
 *   (internal.h); one without never sees it. Its bytes wait in the
 *   backend's buffers, oldest first, until the framer gives each back
 *   (buf_put), also after the io's last completion; a buffer given back
 *   may be written by the kernel at once.
 *   The buffers are CQW__PBUF_SIZE bytes each.
 * - cancel() asks; the io still completes once (maybe CQW_ECANCELED).
 * - All calls come from the loop's thread. wake() may come from any.
 * - after_fork() runs in a child on the loop's first use there. It must
 *   not touch kernel state shared with the parent (an io_uring ring);
 *   every io started before the fork, in the kernel or queued in the
 *   backend, completes once in the child with CQW_EFORK (loop.c ends the
 *   ops that never reached the backend).
 * - wait() returns CQW_EINTR only when the thread's signal check asked
 *   to stop (cqw__eintr_stop()); the ios stay in flight.
 */
#ifndef CQW_BACKEND_H
#define CQW_BACKEND_H

#include "internal.h"

/* The size of each buffer of a backend with buf_next(). */
#define CQW__PBUF_SIZE 4096u

struct cqw__backend_ops {
	const char *name;
	int (*init)(cqw_loop *loop, unsigned entries);
	void (*fini)(cqw_loop *loop);
	/* Optional. handle (of kind) will carry ios on this loop. */
	int (*attach)(cqw_loop *loop, cqw_fd handle, int kind);
	/* Optional. No io of handle is in flight: 0, or CQW_EBUSY to keep it. */
	int (*detach)(cqw_loop *loop, cqw_fd handle);
	void (*start)(cqw_loop *loop, struct cqw__io *io);
	/*
	 * Push started ios to the kernel (no-op for poll); may also take
	 * completions already there into loop->iodone (queue only).
	 */
	int (*flush)(cqw_loop *loop);
	/*
	 * Push what flush() would, then wait up to timeout_ms for at least
	 * one completion or a wake(), in one system call where the backend
	 * can (cqw_reap() calls wait() without a flush() first);
	 * completions go through cqw__loop_io_complete(). 0, 1 if a wake()
	 * arrived, or an error.
	 */
	int (*wait)(cqw_loop *loop, int timeout_ms);
	void (*cancel)(cqw_loop *loop, struct cqw__io *io);
	int (*wake)(cqw_loop *loop);
	int (*after_fork)(cqw_loop *loop);
	/*
	 * Optional, CQW__IO_RECV_MULTI: the oldest bytes io received that
	 * were not given back (their length, *p their start; 0: none; *held
	 * how many buffers io holds), and giving that buffer back.
	 */
	size_t (*buf_next)(cqw_loop *loop, struct cqw__io *io, uint8_t **p,
			   unsigned *held); /* each of CQW__PBUF_SIZE */
	void (*buf_put)(cqw_loop *loop, struct cqw__io *io);
	/* Optional: what cqw_loop_features() reports (NULL: ""). */
	const char *(*features)(const cqw_loop *loop);
};

#ifdef CQW_HAVE_POLL
extern const struct cqw__backend_ops cqw__poll_backend;
#endif
#ifdef CQW_HAVE_URING
extern const struct cqw__backend_ops cqw__uring_backend;
#endif
#ifdef CQW_HAVE_IOCP
extern const struct cqw__backend_ops cqw__iocp_backend;
#endif

/*
 * For backends: an io is done with result and flags (CQW__CF_*). Only
 * queues it; never calls back.
 */
void cqw__loop_io_complete(cqw_loop *loop, struct cqw__io *io, int64_t result,
			   unsigned flags);

#endif
