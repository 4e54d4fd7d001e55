/*
 * The channel: a connection's receive and send state, shared by both
 * halves of every transport (transport.h) and by both platforms. What is
 * here only keeps that state; the I/O is the transports'.
 *
 * Receive state is one frame in progress: the header decoder (c->dec) and
 * how much of the payload was consumed (c->pay_got). It survives between
 * calls, so a receive cut short (a signal, a timeout) resumes where it
 * stopped; the payload bytes it had taken wait in c->part when the
 * caller's buffer may not come back. CQW_EXCLUSIVE connections read ahead
 * into c->stage; frame-exact ones use it only for what a peek showed. On
 * a loop the stage is the connection's small one or a block borrowed from
 * the loop (stream.c); the synchronous halves take a block of their own.
 */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "internal.h"
#include "loop.h"
#include "transport.h"

int
cqw__conn_init(cqw_conn *c, cqw_fd fd, int kind, unsigned flags)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->kind = kind;
	c->flags = flags & CQW__CONN_FLAGS;
	c->tp = cqw__transport_for(kind);
	cqw__dec_reset(&c->dec);
	return 0;
}

void
cqw__chan_release(cqw_conn *c)
{
	free(c->part);
	c->part = NULL;
	if (c->stage != c->stage_small) {
		free(c->stage);
	}
	c->stage = NULL;
	c->stage_off = c->stage_len = 0;
	/* A send block is the loop's again once its write is done. */
	free(c->sbuf);
	c->sbuf = NULL;
	c->gather = NULL;
	c->siov = NULL;
	c->shdr = NULL;
	if (c->tp->release != NULL) {
		c->tp->release(c);
	}
}

int
cqw__chan_stage_slow(cqw_conn *c)
{
	size_t n = c->stage_len - c->stage_off;
	uint8_t *blk = malloc(CQW__STAGE_SIZE);

	if (blk == NULL) {
		return CQW_ENOMEM;
	}
	if (n > 0) {
		memcpy(blk, c->stage + c->stage_off, n);
	}
	c->stage = blk;
	c->stage_off = 0;
	c->stage_len = n;
	return 0;
}

/*
 * A receive failed after consuming pay_got bytes of the payload into dst,
 * which the caller may not pass again: keep them for the next receive.
 * (At most what the caller's buffer held, so never more than it allowed.)
 * Without memory the stream position is lost for good.
 */
void
cqw__chan_keep_part(cqw_conn *c, const void *dst)
{
	if (c->pay_got == 0 || c->part != NULL) {
		return;
	}
	c->part = malloc((size_t)c->pay_got);
	if (c->part == NULL) {
		c->recv_error = CQW_ENOMEM;
		return;
	}
	memcpy(c->part, dst, (size_t)c->pay_got);
}

/* A kept part goes to the front of the new destination. */
void
cqw__chan_restore_part_slow(cqw_conn *c, void *dst)
{
	memcpy(dst, c->part, (size_t)c->pay_got);
	free(c->part);
	c->part = NULL;
}

static uint32_t
be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/*
 * Consume exactly iov[0..cnt), which a peek showed queued. Before the
 * first byte an error leaves everything in place; after it, the stream
 * position is lost, which is sticky (recv_error), since the frames cut
 * cannot be handed up and the next ones cannot be found. A signal once
 * bytes were taken does not stop it: the rest is already queued.
 */
static int
read_exact(cqw_conn *c, cqw__iov *iov, int cnt)
{
	int consumed = 0;
	int r = cqw__io_readv_all(c->fd, iov, cnt, &consumed);

	if (r < 0 && consumed) {
		c->recv_error = r;
	}
	return r;
}

/*
 * Take whole frames from what a peek showed (stage[0..avail), not yet
 * consumed): frame i goes to msgs[i] if it fits msgs[i].cap. Stops at a
 * frame that is partial, large-form, negative or too big (the one-frame
 * path deals with those). Consumes exactly the frames taken, with one
 * gather read. Returns how many (lengths in msgs[i].len), or an error.
 */
int
cqw__chan_take_peeked(cqw_conn *c, size_t avail, struct cqw_msg *msgs, size_t n)
{
	uint8_t hdr[CQW__PEEK_FRAMES][CQW__HDR_SMALL];
	cqw__iov iov[2 * CQW__PEEK_FRAMES];
	size_t off = 0, k, cnt = 0;
	int r;

	if (n > CQW__PEEK_FRAMES) {
		n = CQW__PEEK_FRAMES;
	}
	for (k = 0; k < n && off + CQW__HDR_SMALL <= avail; k++) {
		uint32_t len = be32(c->stage + off);

		if (len > CQW__SMALL_MAX || len > msgs[k].cap ||
		    off + CQW__HDR_SMALL + len > avail) {
			break;
		}
		CQW__IOV_BASE(&iov[cnt]) = (char *)hdr[k];
		CQW__IOV_LEN(&iov[cnt++]) = CQW__HDR_SMALL;
		if (len > 0) {
			CQW__IOV_BASE(&iov[cnt]) = msgs[k].buf;
			CQW__IOV_LEN(&iov[cnt++]) = len;
		}
		msgs[k].len = len;
		off += CQW__HDR_SMALL + len;
	}
	if (k == 0) {
		return 0;
	}
	r = read_exact(c, iov, (int)cnt);
	return r < 0 ? r : (int)k;
}

void
cqw__chan_fail_queue(cqw_loop *loop, struct cqw__opq *q, int err)
{
	struct cqw_op *op;

	while ((op = cqw__opq_pop(q)) != NULL) {
		cqw__loop_op_done(loop, op, err);
	}
}

/*
 * Queued ops end with err, except the ones an io in flight belongs to
 * (the send's are off the queue already; the receive's is the head),
 * which end when the backend ends that io; with cancel_ios, that is
 * asked for.
 */
static void
fail_all(cqw_loop *loop, cqw_conn *c, int err, int cancel_ios)
{
	struct cqw_op *head = c->recv_busy ? cqw__opq_pop(&c->recvq) : NULL;

	cqw__chan_fail_queue(loop, &c->sendq, err);
	cqw__chan_fail_queue(loop, &c->recvq, err);
	if (head != NULL) {
		cqw__opq_push(&c->recvq, head);
		if (cancel_ios) {
			loop->ops->cancel(loop, &c->rio);
		}
	}
	if (c->send_busy && cancel_ios) {
		loop->ops->cancel(loop, &c->wio);
	}
}

void
cqw__chan_cancel_all(cqw_loop *loop, cqw_conn *c)
{
	fail_all(loop, c, CQW_ECANCELED, 1);
}

void
cqw__chan_fork_fail(cqw_loop *loop, cqw_conn *c)
{
	fail_all(loop, c, CQW_EFORK, 0);
}

int
cqw__chan_cancel(cqw_loop *loop, struct cqw_op *op, int recv_torn)
{
	cqw_conn *c = op->conn;

	switch (CQW__OP_STATE(op)) {
	case CQW__OPS_QUEUED:
		break;
	case CQW__OPS_SENDING:
		/* Its write is in flight: cutting it would cut the message. */
		return CQW_EBUSY;
	default:
		return 0; /* already done: nothing to cancel */
	}
	if (op == c->recvq.head && c->recv_busy) {
		if (recv_torn) {
			return CQW_EBUSY;
		}
		/* The read completes (maybe ECANCELED) and ends the op. */
		loop->ops->cancel(loop, &c->rio);
		return 0;
	}
	if (cqw__opq_remove(&c->sendq, op) || cqw__opq_remove(&c->recvq, op)) {
		cqw__loop_op_done(loop, op, CQW_ECANCELED);
	}
	return 0;
}

int
cqw__chan_check_sizes(const cqw_conn *c, const struct cqw_msg *msgs, size_t n)
{
	size_t i;

	if (c->flags & CQW_NO_LARGE_FRAMES) {
		for (i = 0; i < n; i++) {
			if (msgs[i].len > CQW__SMALL_MAX) {
				return CQW_EMSGSIZE;
			}
		}
	}
	return 0;
}
