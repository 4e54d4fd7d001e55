/*
 * The message framer: the message transport's asynchronous half (see
 * transport.h), for Windows message-mode named pipes (WIRE.md §7). There
 * is no header: one send op is one SEND io of one buffer, which the
 * backend writes as one pipe message, and one receive op is one RECV io
 * into the op's buffer. At most one send and one receive are in flight
 * per connection; ops wait in c->sendq / c->recvq.
 *
 * A receive completes with the message's bytes, or with CQW__CF_MSG_MORE
 * when the message is longer than the buffer (io->more bytes of it are
 * still first in the pipe). A result of 0 without that flag is a
 * zero-length message, never end of file: the backend says CQW_EOF for
 * that. The receive state is the one the synchronous half (src/win's
 * pipe.c) keeps, so the two agree between messages:
 *
 *   AT A BOUNDARY  msg_len == 0: the next receive reads into its op's
 *                  buffer (RT_FRESH).
 *   EMPTY PENDING  c->empty_pending: a readiness probe consumed a
 *                  zero-length message; the next receive returns it
 *                  without I/O.
 *   PART KEPT      msg_len > 0: the msg_got bytes of a longer message
 *                  wait in c->part. A receive with less room than msg_len
 *                  ends with CQW_ETOOSHORT (needed = msg_len) and no I/O;
 *                  one with room gets the part copied first and reads
 *                  exactly the rest, which is queued already (RT_REST).
 *                  The part is let go only once the rest has come, so a
 *                  cancelled or failed rest read keeps the message.
 *
 * A fresh read that meets a longer message moves to PART KEPT and its op
 * ends with CQW_ETOOSHORT: nothing read is ever dropped, and the part is
 * at most the op's own length. A rest that does not match (another
 * reader of the handle raced this one) makes the receive side fail with
 * CQW_EPROTO for good, as the synchronous half does.
 */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "loop.h"
#include "transport.h"

enum { RT_FRESH = 1, RT_REST };

/* One pipe message is one write of at most a DWORD's count (WIRE.md 7.2). */
#define MSG_MAX 0xffffffffu

static void
start_read(cqw_loop *loop, cqw_conn *c, int target, void *buf, size_t len)
{
	c->rio.op = CQW__IO_RECV;
	c->rio.handle = c->fd;
	c->rio.kind = c->kind;
	c->rio.conn = c;
	c->rio.buf = buf;
	c->rio.len = len > MSG_MAX ? MSG_MAX : len;
	c->rio.iov = NULL;
	c->rio.iovcnt = 0;
	c->rtarget = target;
	c->recv_busy = 1;
	loop->ops->start(loop, &c->rio);
}

static void
send_kick(cqw_loop *loop, cqw_conn *c)
{
	struct cqw_op *op;

	while (!c->send_busy && !c->closing &&
	       (op = cqw__opq_pop(&c->sendq)) != NULL) {
		if (c->send_error < 0) {
			cqw__loop_op_done(loop, op, c->send_error);
			continue;
		}
		if (op->len > MSG_MAX) {
			/* Refused before any byte went: the pipe is fine. */
			cqw__loop_op_done(loop, op, CQW_EMSGSIZE);
			continue;
		}
		/* The gather of one, the connection's own. */
		c->gather = c->gather1;
		c->siov = c->siov1;
		CQW__IOV_BASE(&c->siov[0]) = op->buf;
		CQW__IOV_LEN(&c->siov[0]) = (unsigned long)op->len;
		CQW__OP_SET_STATE(op, CQW__OPS_SENDING);
		c->gather[0] = op;
		c->ngather = 1;
		c->wio.op = CQW__IO_SEND;
		c->wio.handle = c->fd;
		c->wio.kind = c->kind;
		c->wio.conn = c;
		c->wio.buf = NULL;
		c->wio.len = 0;
		c->wio.iov = c->siov;
		c->wio.iovcnt = 1;
		c->send_busy = 1;
		loop->ops->start(loop, &c->wio);
	}
}

static void
send_done(cqw_loop *loop, cqw_conn *c, int64_t r)
{
	struct cqw_op *op = c->gather[0];

	c->send_busy = 0;
	c->ngather = 0;
	if (r >= 0 && (uint64_t)r != op->len) {
		r = CQW_EIO; /* a message is written whole or not at all */
	}
	if (r < 0) {
		/*
		 * The pipe is broken (or its write was cut by a close):
		 * what follows would not reach the peer as it was sent.
		 */
		c->send_error = (int)r;
		cqw__loop_op_done(loop, op, r);
		cqw__chan_fail_queue(loop, &c->sendq, (int)r);
		return;
	}
	cqw__loop_op_done(loop, op, 0);
	send_kick(loop, c);
}

static void
drop_part(cqw_conn *c)
{
	free(c->part);
	c->part = NULL;
	c->msg_got = c->msg_len = 0;
}

static void
recv_kick(cqw_loop *loop, cqw_conn *c)
{
	struct cqw_op *op;
	int owed;

	while (!c->recv_busy && (op = c->recvq.head) != NULL) {
		owed = cqw__chan_recv_owed(c);
		if (owed < 0) {
			cqw__opq_pop(&c->recvq);
			cqw__loop_op_done(loop, op, owed);
			continue;
		}
		if (c->empty_pending) {
			c->empty_pending = 0;
			cqw__opq_pop(&c->recvq);
			cqw__loop_op_done(loop, op, 0);
			continue;
		}
		if (c->msg_len == 0) {
			start_read(loop, c, RT_FRESH, op->buf, op->len);
			continue;
		}
		if (c->msg_len > op->len) {
			/* Too small: the kept message waits for the next. */
			op->needed = c->msg_len > SIZE_MAX ? SIZE_MAX
							   : (size_t)c->msg_len;
			cqw__opq_pop(&c->recvq);
			cqw__loop_op_done(loop, op, CQW_ETOOSHORT);
			continue;
		}
		memcpy(op->buf, c->part, (size_t)c->msg_got);
		start_read(loop, c, RT_REST, (char *)op->buf + c->msg_got,
			   (size_t)(c->msg_len - c->msg_got));
	}
}

/* A fresh read got the first got bytes of a longer message into op->buf. */
static int64_t
keep_part(cqw_conn *c, struct cqw_op *op, size_t got, uint64_t more)
{
	if (more == 0) {
		/*
		 * The backend could not count the rest (the pipe broke, or
		 * another reader took it). With bytes of it taken, where the
		 * next message starts is unknown; with none, the pipe is as
		 * it was.
		 */
		if (got == 0) {
			return CQW_EIO;
		}
		c->recv_error = CQW_EPROTO;
		return CQW_EPROTO;
	}
	if (got > 0) {
		c->part = malloc(got);
		if (c->part == NULL) {
			c->recv_error = CQW_ENOMEM; /* its bytes are gone */
			return CQW_ENOMEM;
		}
		memcpy(c->part, op->buf, got);
		c->msg_got = got;
		c->msg_len = got + more;
	}
	/* A zero-byte read consumed nothing: the message is the pipe's. */
	op->needed = got + more > SIZE_MAX ? SIZE_MAX : (size_t)(got + more);
	return CQW_ETOOSHORT;
}

static void
recv_done(cqw_loop *loop, cqw_conn *c, const struct cqw__io *io)
{
	struct cqw_op *op = c->recvq.head;
	int64_t r = io->result;
	int more = (io->flags & CQW__CF_MSG_MORE) != 0;
	uint64_t rest;

	c->recv_busy = 0;
	if (r == CQW_EFORK) {
		c->recv_error = CQW_EFORK; /* the position is the parent's */
	}
	if (r >= 0 && c->closing) {
		r = CQW_ECANCELED; /* what was read goes with the conn */
	} else if (r >= 0 && c->rtarget == RT_REST) {
		rest = c->msg_len - c->msg_got;
		if (more || (uint64_t)r != rest) {
			/* Not the rest of that message: a reader raced us. */
			drop_part(c);
			c->recv_error = CQW_EPROTO;
			r = CQW_EPROTO;
		} else {
			r = (int64_t)c->msg_len;
			drop_part(c);
		}
	} else if (r >= 0 && more) {
		r = keep_part(c, op, (size_t)r, io->more);
	} else if (r == CQW_EOF && c->rtarget == RT_REST) {
		/* The writer went between the part and its rest. */
		drop_part(c);
		r = CQW_ETRUNC;
	}
	/* Any other error read nothing: a kept part stays kept. */
	cqw__opq_pop(&c->recvq);
	cqw__loop_op_done(loop, op, r);
	recv_kick(loop, c);
}

static void
message_kick(cqw_loop *loop, cqw_conn *c)
{
	send_kick(loop, c);
	recv_kick(loop, c);
}

static void
message_io_done(cqw_loop *loop, struct cqw__io *io)
{
	cqw_conn *c = io->conn;

	if (io == &c->wio) {
		send_done(loop, c, io->result);
	} else {
		recv_done(loop, c, io);
	}
}

static int
message_cancel(cqw_loop *loop, struct cqw_op *op)
{
	/*
	 * A fresh read has consumed nothing until it completes, and a rest
	 * read leaves the part kept if it is cancelled: a receive in flight
	 * may always be cancelled, and completes once, with ECANCELED or
	 * its message.
	 */
	return cqw__chan_cancel(loop, op, 0);
}

const struct cqw__framer cqw__message_framer = {
	.kick = message_kick,
	.io_done = message_io_done,
	.cancel = message_cancel,
	.cancel_all = cqw__chan_cancel_all,
	.fork_fail = cqw__chan_fork_fail,
};
