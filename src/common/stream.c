/*
 * The stream framer: the stream transport's asynchronous half (see
 * transport.h), the same for every backend and platform. Ops wait in
 * c->sendq / c->recvq; kick() starts at most one send (a gather of
 * everything queued: [hdr0, p0, hdr1, p1, ...]) and one receive; when the
 * backend completes one, io_done() advances the state and kicks again.
 * The frame state is the one the synchronous half uses, so the two agree
 * on framing and a connection may go from one to the other between
 * frames.
 *
 * A gather of several messages is built in a send block from the loop's
 * pool (pool.h): small frames (payloads up to CQW__COPY_MAX) are copied
 * whole into its area, so that the kernel copies one segment for many
 * of them; large payloads go from the op's buffer. The wire bytes are
 * the same either way. Every op of a gather completes when the whole
 * gather is written, copied or not: completing a copied op at copy time
 * would report success for bytes a later failed write never delivered.
 *
 * The receive in flight reads into one of (c->rtarget):
 *   RT_PEEK     frame-exact socket at a boundary: see what is queued, then
 *               take the whole frames that fit with one exact read
 *   RT_HDR      the header, into c->rhdr (the decoder takes it)
 *   RT_STAGE    CQW_EXCLUSIVE: up to the staging buffer, many frames
 *   RT_PAYLOAD  the payload, straight into the op's buffer
 *   RT_MULTI    CQW_EXCLUSIVE sockets on a backend with buf_next(): one
 *               multishot receive into the backend's buffers, armed
 *               while c->ms_on, also between ops (so the connection
 *               stays the loop's until it ends: see quiesce below)
 *
 * With RT_MULTI, c->stage is the oldest of the io's buffers
 * (c->stage_pbuf) while its bytes are taken, and each buffer goes back
 * the moment the last byte is out. The multishot is stopped (ms_stop)
 * for a payload of CQW__STAGE_SIZE or more that nothing holds yet (it
 * is then read straight into the op's buffer, once), when bytes nobody
 * asked for pile up (MS_HOLD_MAX buffers), and after a frame of that
 * size: plain reads serve until a smaller one comes (ms_large); and
 * after MS_BULK_RUN full buffers in a row, until a plain read does not
 * fill its stage (ms_bulk: a bulk stream reads 64 KiB per read). Armed,
 * the kernel fills the buffers with the next large payload before its
 * header is seen, and each byte is copied twice (1 MiB stream on the
 * loop: 2.1 GB/s, against 3.2 with plain reads). When it ends, what its
 * buffers still hold is copied into a stage block (flatten()), so that
 * no buffer outlives it; an end of file or error it ended with is owed
 * (ms_final) until those bytes are taken. After the kernel ran out of
 * buffers (ENOBUFS) the next read is a plain one (ms_once).
 */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "loop.h"
#include "pool.h"
#include "transport.h"

enum { RT_HDR = 1, RT_STAGE, RT_PAYLOAD, RT_PEEK, RT_MULTI };

/* Buffers a multishot may hold with no receive queued before it stops. */
#define MS_HOLD_MAX 8u
/* Full buffers in a row after which plain reads serve (ms_bulk). */
#define MS_BULK_RUN 4u
/* ms_final for an end of file (0 means nothing owed). */
#define MS_EOF 1

static void
start_read(cqw_loop *loop, cqw_conn *c, int target, void *buf, size_t len)
{
	c->rio.op = target == RT_PEEK	 ? CQW__IO_PEEK
		    : target == RT_MULTI ? CQW__IO_RECV_MULTI
					 : CQW__IO_RECV;
	c->rio.handle = c->fd;
	c->rio.kind = c->kind;
	c->rio.conn = c;
	c->rio.buf = buf;
	c->rio.len = len > 0x40000000 ? 0x40000000 : len;
	c->rio.all = target == RT_PAYLOAD;
	c->rtarget = target;
	c->recv_busy = 1;
	loop->ops->start(loop, &c->rio);
}

static void
start_write(cqw_loop *loop, cqw_conn *c)
{
	unsigned cnt = c->siov_cnt - c->siov_first;

	c->wio.op = CQW__IO_SEND;
	c->wio.handle = c->fd;
	c->wio.kind = c->kind;
	c->wio.conn = c;
	c->wio.iov = c->siov + c->siov_first;
	c->wio.iovcnt = (int)(cnt > CQW__IOV_MAX ? CQW__IOV_MAX : cnt);
	c->send_busy = 1;
	loop->ops->start(loop, &c->wio);
}

/* No write is in flight and none follows yet: the block goes back. */
static void
put_sendbuf(cqw_loop *loop, cqw_conn *c)
{
	if (c->sbuf != NULL) {
		cqw__pool_put(loop, CQW__POOL_SEND, c->sbuf);
		c->sbuf = NULL;
	}
}

/*
 * Where the next gather is built; returns how many messages it holds: in
 * a block from the loop's pool while more than one is queued (kept while
 * sends follow one another), else in the connection (a round trip's
 * one message; also when no block can be had: one write each).
 */
static unsigned
pick_gather(cqw_loop *loop, cqw_conn *c)
{
	if (CQW__OP_NEXT(c->sendq.head) != NULL) {
		if (c->sbuf == NULL) {
			c->sbuf = cqw__pool_get(loop, CQW__POOL_SEND);
		}
		if (c->sbuf != NULL) {
			c->gather = c->sbuf->ops;
			c->siov = c->sbuf->iov;
			c->shdr = c->sbuf->hdr;
			return CQW__GATHER_MSGS;
		}
	}
	put_sendbuf(loop, c);
	c->gather = c->gather1;
	c->siov = c->siov1;
	c->shdr = c->shdr1;
	return 1;
}

/* The gather's next iovec: area[*seg..used), if not empty. */
static inline unsigned
close_seg(cqw_conn *c, unsigned cnt, uint8_t *area, size_t *seg, size_t used)
{
	if (used > *seg) {
		CQW__IOV_BASE(&c->siov[cnt]) = (char *)area + *seg;
		CQW__IOV_LEN(&c->siov[cnt]) = used - *seg;
		cnt++;
		*seg = used;
	}
	return cnt;
}

/*
 * Put the frame of op (the gather's n-th) into the gather: copied whole
 * into the area (area[*seg..*used) is the segment not yet in siov) while
 * it has room and the payload is small; else its header there, or in
 * shdr[n] once the area is full, and the payload from the op's buffer.
 * Returns the iovec count.
 */
static unsigned
gather_op(cqw_conn *c, const struct cqw_op *op, unsigned n, unsigned cnt,
	  uint8_t *area, size_t *seg, size_t *used)
{
	size_t len = op->len;
	uint8_t *p;

	if (area != NULL && len <= CQW__COPY_MAX &&
	    CQW__SEND_AREA - *used >= CQW__HDR_SMALL + len) {
		p = area + *used;
		p[0] = (uint8_t)(len >> 24);
		p[1] = (uint8_t)(len >> 16);
		p[2] = (uint8_t)(len >> 8);
		p[3] = (uint8_t)len;
		if (len > 0) {
			memcpy(p + CQW__HDR_SMALL, op->buf, len);
		}
		*used += CQW__HDR_SMALL + len;
		return cnt;
	}
	if (area != NULL && CQW__SEND_AREA - *used >= CQW__HDR_LARGE) {
		*used += cqw__frame_header(area + *used, len);
		cnt = close_seg(c, cnt, area, seg, *used);
	} else {
		cnt = close_seg(c, cnt, area, seg, *used);
		CQW__IOV_BASE(&c->siov[cnt]) = (char *)c->shdr[n];
		CQW__IOV_LEN(&c->siov[cnt]) =
		    cqw__frame_header(c->shdr[n], len);
		cnt++;
	}
	if (len > 0) {
		CQW__IOV_BASE(&c->siov[cnt]) = op->buf;
		CQW__IOV_LEN(&c->siov[cnt]) = len;
		cnt++;
	}
	return cnt;
}

static void
send_kick(cqw_loop *loop, cqw_conn *c)
{
	struct cqw_op *op;
	unsigned n = 0, cnt = 0, max;
	uint8_t *area;
	size_t seg = 0, used = 0;

	if (c->send_busy || (c->sendq.head == NULL && c->sbuf == NULL)) {
		return;
	}
	if (c->sendq.head == NULL || c->closing) {
		put_sendbuf(loop, c);
		return;
	}
	if (c->send_error < 0) {
		cqw__chan_fail_queue(loop, &c->sendq, c->send_error);
		return;
	}
	max = pick_gather(loop, c);
	/* A gather of one (a round trip's) goes as [hdr, payload]. */
	area = max > 1 ? c->sbuf->area : NULL;
	while (n < max && (op = cqw__opq_pop(&c->sendq)) != NULL) {
		if ((c->flags & CQW_NO_LARGE_FRAMES) &&
		    op->len > CQW__SMALL_MAX) {
			cqw__loop_op_done(loop, op, CQW_EMSGSIZE);
			continue;
		}
		cnt = gather_op(c, op, n, cnt, area, &seg, &used);
		CQW__OP_SET_STATE(op, CQW__OPS_SENDING);
		c->gather[n++] = op;
	}
	if (n == 0) {
		put_sendbuf(loop, c); /* every op was refused */
		return;
	}
	cnt = close_seg(c, cnt, area, &seg, used);
	c->ngather = n;
	c->siov_first = 0;
	c->siov_cnt = cnt;
	start_write(loop, c);
}

static void
send_fail(cqw_loop *loop, cqw_conn *c, int err)
{
	unsigned i;

	/* The stream may be torn: nothing more may follow. */
	c->send_error = err;
	for (i = 0; i < c->ngather; i++) {
		cqw__loop_op_done(loop, c->gather[i], err);
	}
	c->ngather = 0;
	cqw__chan_fail_queue(loop, &c->sendq, err);
	put_sendbuf(loop, c);
}

static void
send_done(cqw_loop *loop, cqw_conn *c, int64_t r)
{
	unsigned i;

	c->send_busy = 0;
	if (r < 0) {
		send_fail(loop, c, (int)r);
		return;
	}
	while (c->siov_first < c->siov_cnt &&
	       (size_t)r >= CQW__IOV_LEN(&c->siov[c->siov_first])) {
		r -= (int64_t)CQW__IOV_LEN(&c->siov[c->siov_first]);
		c->siov_first++;
	}
	if (c->siov_first < c->siov_cnt) {
		/* A partial write: resume from (iov index, offset)... */
		cqw__iov *v = &c->siov[c->siov_first];

		if (c->closing) {
			/* ...unless closing: the peer sees a cut frame. */
			send_fail(loop, c, CQW_ECANCELED);
			return;
		}
		CQW__IOV_BASE(v) = (char *)CQW__IOV_BASE(v) + r;
		CQW__IOV_LEN(v) -= (size_t)r;
		start_write(loop, c);
		return;
	}
	for (i = 0; i < c->ngather; i++) {
		cqw__loop_op_done(loop, c->gather[i], 0);
	}
	c->ngather = 0;
	send_kick(loop, c);
}

/* Move staged bytes into the header or payload; 1 if any moved. */
static int
take_staged(cqw_conn *c, struct cqw_op *op)
{
	size_t avail = c->stage_len - c->stage_off, n;

	if (avail == 0) {
		return 0;
	}
	if (cqw__dec_want(&c->dec) > 0) {
		n = cqw__dec_feed(&c->dec, c->stage + c->stage_off, avail);
	} else {
		n = (size_t)(c->dec.len - c->pay_got);
		if (n > avail) {
			n = avail;
		}
		if (n > 0) {
			memcpy((char *)op->buf + c->pay_got,
			       c->stage + c->stage_off, n);
		}
		c->pay_got += n;
	}
	c->stage_off += n;
	return n > 0;
}

/* An empty stage block no read uses goes back to the loop's pool. */
static void
put_stage(cqw_loop *loop, cqw_conn *c)
{
	if (c->stage_pbuf) {
		loop->ops->buf_put(loop, &c->rio);
		c->stage_pbuf = 0;
	} else if (c->stage != NULL && c->stage != c->stage_small) {
		cqw__pool_put(loop, CQW__POOL_STAGE, c->stage);
	}
	c->stage = NULL;
	c->stage_off = c->stage_len = 0;
}

/*
 * Point c->stage, which is empty, at what the next read-ahead or peek
 * fills; returns how much: the connection's small stage, unless the last
 * one filled its buffer (more is queued) or the frame's payload needs
 * more than that: then a block from the loop's pool. A block in hand is
 * kept while more than one receive is queued (a stream, whose next peek
 * would otherwise find the small stage full and peek again). So a
 * connection that waits with one receive holds no block. Without memory
 * for a block the small stage serves (more reads, nothing lost); rfull
 * is forgotten and the frame takes the one-frame path, so that a peek
 * does not ask again and again.
 */
static size_t
pick_stage_slow(cqw_loop *loop, cqw_conn *c, uint64_t need)
{
	int held = c->stage != NULL && c->stage != c->stage_small;

	if (c->rfull || need > CQW__STAGE_SMALL ||
	    (held && CQW__OP_NEXT(c->recvq.head) != NULL)) {
		if (c->stage == NULL || c->stage == c->stage_small) {
			c->stage = cqw__pool_get(loop, CQW__POOL_STAGE);
			c->stage_off = c->stage_len = 0;
		}
		if (c->stage != NULL) {
			return CQW__STAGE_SIZE;
		}
		c->rfull = 0;
		c->no_peek = !(c->flags & CQW_EXCLUSIVE);
	}
	if (c->stage != c->stage_small) {
		put_stage(loop, c);
		c->stage = c->stage_small;
	}
	return CQW__STAGE_SMALL;
}

static inline size_t
pick_stage(cqw_loop *loop, cqw_conn *c, uint64_t need)
{
	/* The common case, a round trip's: the small stage again. */
	if (c->stage == c->stage_small && !c->rfull &&
	    need <= CQW__STAGE_SMALL) {
		return CQW__STAGE_SMALL;
	}
	return pick_stage_slow(loop, c, need);
}

static inline int
multi_ok(const cqw_loop *loop, const cqw_conn *c)
{
	return loop->ops->buf_next != NULL && c->kind == CQW__FD_SOCK &&
	       !c->no_multi && (c->flags & CQW_EXCLUSIVE);
}

static void
start_multi(cqw_loop *loop, cqw_conn *c)
{
	c->ms_on = 1;
	c->ms_stop = 0;
	c->ms_full = 0;
	start_read(loop, c, RT_MULTI, NULL, 0); /* into the backend's buffers */
}

static void
stop_multi(cqw_loop *loop, cqw_conn *c)
{
	if (c->ms_on && !c->ms_stop) {
		c->ms_stop = 1;
		loop->ops->cancel(loop, &c->rio);
	}
}

/*
 * The stage is empty: give its buffer back and make the next one the
 * stage; 1 if there was one. *held: how many the io holds now.
 */
static int
next_pbuf(cqw_loop *loop, cqw_conn *c, unsigned *held)
{
	uint8_t *p;
	size_t n;

	put_stage(loop, c);
	n = loop->ops->buf_next(loop, &c->rio, &p, held);
	if (n == 0) {
		return 0;
	}
	c->stage = p;
	c->stage_off = 0;
	c->stage_len = n;
	c->stage_pbuf = 1;
	/* A stream that fills every buffer reads more per read plainly. */
	if (n < CQW__PBUF_SIZE) {
		c->ms_full = 0;
	} else if (c->ms_full < MS_BULK_RUN) {
		c->ms_full++;
	}
	if (c->ms_full >= MS_BULK_RUN) {
		c->ms_bulk = 1;
		stop_multi(loop, c);
	}
	return 1;
}

/*
 * The multishot ended: what its buffers hold moves into a stage block
 * (one from malloc() when more than a block), and every buffer goes
 * back. CQW_ENOMEM loses those bytes (the position is lost for good).
 */
static int
flatten(cqw_loop *loop, cqw_conn *c)
{
	size_t cap = CQW__STAGE_SIZE, used = 0, n;
	uint8_t *blk = NULL, *p, *nb;
	unsigned held;
	int r = 0;

	if (!c->stage_pbuf &&
	    loop->ops->buf_next(loop, &c->rio, &p, &held) == 0) {
		return 0;
	}
	for (;;) {
		if (c->stage_pbuf) {
			p = c->stage + c->stage_off;
			n = c->stage_len - c->stage_off;
		} else {
			n = loop->ops->buf_next(loop, &c->rio, &p, &held);
			if (n == 0) {
				break;
			}
			c->stage_pbuf = 1;
		}
		if (r == 0 && n > 0 && (blk == NULL || used + n > cap)) {
			while (used + n > cap) {
				cap *= 2;
			}
			nb = blk == NULL ? cqw__pool_get(loop, CQW__POOL_STAGE)
					 : NULL;
			if (nb == NULL || cap > CQW__STAGE_SIZE) {
				if (nb != NULL) {
					cqw__pool_put(loop, CQW__POOL_STAGE,
						      nb);
				}
				nb = realloc(blk, cap);
			}
			if (nb == NULL) {
				r = CQW_ENOMEM;
			} else {
				blk = nb;
			}
		}
		if (r == 0 && n > 0) {
			memcpy(blk + used, p, n);
			used += n;
		}
		loop->ops->buf_put(loop, &c->rio);
		c->stage_pbuf = 0;
	}
	c->stage = r == 0 ? blk : NULL;
	c->stage_off = 0;
	c->stage_len = r == 0 ? used : 0;
	if (r < 0) {
		free(blk);
		c->recv_error = r;
	}
	return r;
}

/* A read ended with r <= 0 (0: end of file) for the head op. */
static void
recv_failed(cqw_loop *loop, cqw_conn *c, int64_t r)
{
	struct cqw_op *op = c->recvq.head;

	if (r == 0) {
		r = cqw__dec_want(&c->dec) > 0 ? cqw__dec_eof(&c->dec)
					       : CQW_ETRUNC;
		cqw__dec_reset(&c->dec);
		c->pay_got = 0;
	} else if (!c->closing && op != NULL) {
		/* The part read so far is in this op's buffer only. */
		cqw__chan_keep_part(c, op->buf);
	}
	if (op != NULL) {
		cqw__opq_pop(&c->recvq);
		cqw__loop_op_done(loop, op, r);
	}
}

/*
 * The receive's next bytes, with a multishot: 1 if the stage has some
 * again, 0 to wait for it, -1 if it is not armed (start a read).
 */
static int
multi_more(cqw_loop *loop, cqw_conn *c, uint64_t rest)
{
	unsigned held;

	if (!c->ms_on) {
		return -1;
	}
	if (next_pbuf(loop, c, &held)) {
		return 1;
	}
	if (rest >= CQW__STAGE_SIZE) {
		stop_multi(loop, c); /* it goes straight into the op's buffer */
	}
	return 0;
}

/*
 * The stream's common case: at a frame boundary, the stage holds a whole
 * small frame that fits op: hand it up without the decoder. 1 if it did.
 */
static inline int
take_whole(cqw_loop *loop, cqw_conn *c, struct cqw_op *op)
{
	size_t avail = c->stage_len - c->stage_off;
	const uint8_t *p;
	uint32_t len;

	if (avail < CQW__HDR_SMALL) {
		return 0; /* also before there is a stage: c->stage is NULL */
	}
	p = c->stage + c->stage_off;
	len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	      (uint32_t)p[2] << 8 | (uint32_t)p[3];
	/* Large and negative lengths take the decoder's path. */
	if (len > CQW__SMALL_MAX || len > op->len ||
	    len > avail - CQW__HDR_SMALL) {
		return 0;
	}
	if (len > 0) {
		memcpy(op->buf, p + CQW__HDR_SMALL, len);
	}
	c->stage_off += CQW__HDR_SMALL + (size_t)len;
	c->no_peek = 0;
	c->ms_large = len >= CQW__STAGE_SIZE; /* a stage grown by flatten() */
	cqw__opq_pop(&c->recvq);
	cqw__loop_op_done(loop, op, (int64_t)len);
	return 1;
}

static void
recv_kick(cqw_loop *loop, cqw_conn *c)
{
	struct cqw_op *op;
	int exclusive = (c->flags & CQW_EXCLUSIVE) != 0;
	uint64_t len;
	size_t want, slen;
	int owed, m;

	while ((op = c->recvq.head) != NULL && (!c->recv_busy || c->ms_on)) {
		owed = cqw__chan_recv_owed(c);
		if (owed < 0) {
			cqw__opq_pop(&c->recvq);
			cqw__loop_op_done(loop, op, owed);
			continue;
		}
		if (!cqw__dec_started(&c->dec) && take_whole(loop, c, op)) {
			continue;
		}
		want = cqw__dec_want(&c->dec);
		if (want == 0 && c->dec.len > op->len) {
			/* Too small: keep the frame for the next receive. */
			op->needed = c->dec.len > SIZE_MAX ? SIZE_MAX
							   : (size_t)c->dec.len;
			cqw__opq_pop(&c->recvq);
			cqw__loop_op_done(loop, op, CQW_ETOOSHORT);
			continue;
		}
		if (want == 0) {
			/* A part a failed receive kept goes first. */
			cqw__chan_restore_part(c, op->buf);
		}
		if (take_staged(c, op)) {
			continue;
		}
		len = c->dec.len;
		if (want == 0 && c->pay_got == len) {
			/* After a large one, the next is likely large too. */
			c->ms_large = len >= CQW__STAGE_SIZE;
			if (c->ms_large) {
				stop_multi(loop, c);
			}
			cqw__dec_reset(&c->dec);
			c->pay_got = 0;
			c->no_peek = 0;
			cqw__opq_pop(&c->recvq);
			cqw__loop_op_done(loop, op, (int64_t)len);
			continue;
		}
		m = multi_more(loop, c, want > 0 ? 0 : len - c->pay_got);
		if (m > 0) {
			continue;
		}
		if (m == 0 || c->recv_busy) {
			break; /* the multishot brings more, or is ending */
		}
		if (c->ms_final != 0) {
			/* How the multishot ended, now that its bytes are out. */
			int64_t r = c->ms_final == MS_EOF ? 0 : c->ms_final;

			c->ms_final = 0;
			recv_failed(loop, c, r);
			continue;
		}
		if (multi_ok(loop, c) && !c->ms_once && !c->ms_large &&
		    !c->ms_bulk &&
		    (want > 0 || len - c->pay_got < CQW__STAGE_SIZE)) {
			put_stage(loop, c); /* empty: the buffers serve now */
			start_multi(loop, c);
			continue;
		}
		c->ms_once = 0;
		if (exclusive &&
		    (want > 0 || len - c->pay_got < CQW__STAGE_SIZE)) {
			slen = pick_stage(loop, c,
					  want > 0 ? 0 : len - c->pay_got);
			start_read(loop, c, RT_STAGE, c->stage, slen);
		} else if (want > 0 && !cqw__dec_started(&c->dec) &&
			   c->kind == CQW__FD_SOCK && !c->no_peek) {
			/*
			 * Frame-exact socket at a frame boundary: peek, then
			 * take every whole frame that the queued receives
			 * can hold with one exact gather read.
			 */
			slen = pick_stage(loop, c, 0);
			start_read(loop, c, RT_PEEK, c->stage, slen);
		} else if (want > 0) {
			start_read(loop, c, RT_HDR, c->rhdr, want);
		} else {
			start_read(loop, c, RT_PAYLOAD,
				   (char *)op->buf + c->pay_got,
				   (size_t)(len - c->pay_got));
		}
	}
	/* No receive needs the stage: an empty block goes back. */
	if ((!c->recv_busy || c->stage_pbuf) && c->stage != NULL &&
	    c->stage != c->stage_small && c->stage_off == c->stage_len) {
		put_stage(loop, c);
	}
}

/*
 * Would a stage block show the frame that hdr (4 bytes a peek saw) begins
 * whole, for a receive of cap bytes to take it?
 */
static int
fits_stage(const uint8_t *hdr, size_t cap)
{
	uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
		       (uint32_t)hdr[2] << 8 | (uint32_t)hdr[3];

	return len <= CQW__SMALL_MAX && len <= cap &&
	       len <= CQW__STAGE_SIZE - CQW__HDR_SMALL;
}

/* A peek of avail bytes completed: hand whole frames to queued ops. */
static void
recv_peeked(cqw_loop *loop, cqw_conn *c, size_t avail)
{
	struct cqw_msg msgs[CQW__PEEK_FRAMES];
	struct cqw_op *ops[CQW__PEEK_FRAMES], *op = c->recvq.head;
	size_t n = 0, i, taken = 0;
	int k;

	for (; op != NULL && n < CQW__PEEK_FRAMES; op = CQW__OP_NEXT(op), n++) {
		ops[n] = op;
		msgs[n].buf = op->buf;
		msgs[n].cap = op->len;
	}
	k = cqw__chan_take_peeked(c, avail, msgs, n);
	if (k == 0) {
		if (c->rfull && c->stage == c->stage_small &&
		    fits_stage(c->stage, ops[0]->len)) {
			return; /* a stage block shows it whole: peek again */
		}
		/* The first frame needs the one-frame path (see cqw__chan_take_peeked). */
		c->no_peek = 1;
		c->rfull = 0; /* after it, what is queued is not known */
		return;
	}
	if (k < 0) {
		/* Nothing was consumed, or the stream is lost: say so once. */
		cqw__opq_pop(&c->recvq);
		cqw__loop_op_done(loop, ops[0], k);
		return;
	}
	for (i = 0; i < (size_t)k; i++) {
		cqw__opq_pop(&c->recvq);
		cqw__loop_op_done(loop, ops[i], (int64_t)msgs[i].len);
	}
	if (c->rfull) {
		/* Bytes seen, not taken, are queued still; if all were taken,
		 * what is queued is not known. */
		for (i = 0; i < (size_t)k; i++) {
			taken += CQW__HDR_SMALL + msgs[i].len;
		}
		c->rfull = taken < avail;
	}
}

/* A completion of the multishot (RT_MULTI). */
static void
multi_done(cqw_loop *loop, cqw_conn *c, int64_t r)
{
	unsigned held;
	uint8_t *p;
	int stop = c->ms_stop;

	if (c->rio.flags & CQW__CF_MORE) {
		recv_kick(loop, c);
		if (c->recvq.head == NULL && !c->ms_stop &&
		    loop->ops->buf_next(loop, &c->rio, &p, &held) > 0 &&
		    held >= MS_HOLD_MAX) {
			stop_multi(loop, c); /* nobody takes them: stop */
		}
		return;
	}
	c->recv_busy = 0;
	c->ms_on = 0;
	c->ms_stop = 0;
	if (r == CQW_EFORK) {
		/* The backend took the buffers back; the position is lost. */
		c->stage_pbuf = 0;
		c->stage = NULL;
		c->stage_off = c->stage_len = 0;
		c->recv_error = CQW_EFORK;
		recv_failed(loop, c, r);
	} else if (c->closing) {
		put_stage(loop, c);
		while (next_pbuf(loop, c, &held)) {
			put_stage(loop, c);
		}
		c->stage = NULL;
		c->stage_off = c->stage_len = 0;
		if (r > 0) {
			r = CQW_ECANCELED;
		}
		recv_failed(loop, c, r < 0 ? r : CQW_ECANCELED);
	} else {
		if (r == CQW_EOPNOTSUPP) {
			c->no_multi = 1; /* this kernel: never again */
		}
		if (flatten(loop, c) < 0) {
			recv_failed(loop, c, c->recv_error);
		} else if (r == 1) {
			c->ms_once = 1; /* no buffer was free: read once */
		} else if (r <= 0 && r != CQW_EOPNOTSUPP &&
			   !(r == CQW_ECANCELED && stop)) {
			c->ms_final = r == 0 ? MS_EOF : (int)r;
		}
	}
	recv_kick(loop, c);
	if (c->inflight == 0 && !c->pending && !c->recv_busy) {
		cqw__loop_detach(c);
	}
}

static void
recv_done(cqw_loop *loop, cqw_conn *c, int64_t r)
{
	struct cqw_op *op = c->recvq.head;

	if (c->rtarget == RT_MULTI) {
		multi_done(loop, c, r);
		return;
	}
	c->recv_busy = 0;
	if (r == CQW_EFORK) {
		/* The parent may have read for it: the position is lost. */
		c->recv_error = CQW_EFORK;
	}
	if (r > 0 && c->closing) {
		r = CQW_ECANCELED; /* what was read is dropped with the conn */
	}
	if (r <= 0) {
		if (r == 0) {
			r = cqw__dec_want(&c->dec) > 0 ? cqw__dec_eof(&c->dec)
						       : CQW_ETRUNC;
			cqw__dec_reset(&c->dec);
			c->pay_got = 0;
		} else if (!c->closing) {
			/* The part read so far is in this op's buffer only. */
			cqw__chan_keep_part(c, op->buf);
		}
		cqw__opq_pop(&c->recvq);
		cqw__loop_op_done(loop, op, r);
		recv_kick(loop, c);
		return;
	}
	switch (c->rtarget) {
	case RT_PEEK:
		c->rfull = (size_t)r == c->rio.len;
		recv_peeked(loop, c, (size_t)r);
		break;
	case RT_HDR:
		cqw__dec_feed(&c->dec, c->rhdr, (size_t)r);
		break;
	case RT_STAGE:
		c->rfull = (size_t)r == c->rio.len;
		c->ms_bulk = c->ms_bulk && c->rfull; /* drained: arm again */
		c->stage_off = 0;
		c->stage_len = (size_t)r;
		break;
	default:
		c->pay_got += (uint64_t)r;
		break;
	}
	recv_kick(loop, c);
}

static void
stream_kick(cqw_loop *loop, cqw_conn *c)
{
	send_kick(loop, c);
	recv_kick(loop, c);
}

static void
stream_io_done(cqw_loop *loop, struct cqw__io *io)
{
	cqw_conn *c = io->conn;

	/* What the backend learnt of the descriptor holds for the next io. */
	c->kind = io->kind;
	if (io == &c->wio) {
		send_done(loop, c, io->result);
	} else {
		recv_done(loop, c, io->result);
	}
}

static int
stream_cancel(cqw_loop *loop, struct cqw_op *op)
{
	cqw_conn *c = op->conn;

	if (c->ms_on && op == c->recvq.head &&
	    CQW__OP_STATE(op) == CQW__OPS_QUEUED) {
		/* The multishot reads into its own buffers, not the op's. */
		if (c->pay_got > 0) {
			return CQW_EBUSY;
		}
		cqw__opq_pop(&c->recvq);
		cqw__loop_op_done(loop, op, CQW_ECANCELED);
		return 0;
	}

	/* A receive whose frame is partly read cannot stop: it would tear. */
	return cqw__chan_cancel(loop, op,
				c->pay_got > 0 || c->rtarget == RT_PAYLOAD);
}

static void
stream_cancel_all(cqw_loop *loop, cqw_conn *c)
{
	cqw__chan_cancel_all(loop, c);
	if (c->ms_on && c->recvq.head == NULL) {
		loop->ops->cancel(loop, &c->rio); /* armed with no op */
	}
}

static void
stream_fork_fail(cqw_loop *loop, cqw_conn *c)
{
	cqw__chan_fork_fail(loop, c);
	if (c->stage_pbuf) {
		/* The backend's buffers are the kernel's again in the child. */
		c->stage_pbuf = 0;
		c->stage = NULL;
		c->stage_off = c->stage_len = 0;
		c->recv_error = CQW_EFORK;
	}
}

/*
 * The multishot armed with no op: asked to end (the loop waits for its
 * last completion), or, with gone, forgotten now (the loop goes, and its
 * backend with every io): its bytes move into a stage block first.
 */
static void
stream_quiesce(cqw_loop *loop, cqw_conn *c, int gone)
{
	if (!c->ms_on) {
		return;
	}
	if (!gone) {
		stop_multi(loop, c);
		return;
	}
	c->ms_on = 0;
	c->ms_stop = 0;
	c->recv_busy = 0;
	flatten(loop, c);
}

const struct cqw__framer cqw__stream_framer = {
	.kick = stream_kick,
	.io_done = stream_io_done,
	.cancel = stream_cancel,
	.cancel_all = stream_cancel_all,
	.fork_fail = stream_fork_fail,
	.quiesce = stream_quiesce,
};
