/*
 * The channel: a connection's receive and send state, and the synchronous
 * frame primitives built on it.
 *
 * Receive state is one frame in progress: the header decoder (c->dec) and
 * how much of the payload was consumed (c->pay_got). It survives between
 * calls, which is what lets recv_bytes_into() refuse a too-small buffer
 * and keep the message: the header was read, the payload was not.
 *
 * Frame-exact (default): every read asks for at most the rest of the
 * current header or payload, so no byte past the frame is consumed and
 * another process may read the next frame (Python's rule, WIRE.md §2.3).
 * CQW_EXCLUSIVE: reads smaller than the staging buffer fill it instead,
 * so many small frames cost one system call; large payloads still go
 * straight into the caller's buffer.
 *
 * Sends gather [hdr0, p0, hdr1, p1, ...] into one write and resume after
 * partial writes from (iov index, offset).
 */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "loop.h"

int
cqw__conn_init(cqw_conn *c, cqw_fd fd, int kind, unsigned flags)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->kind = kind;
	c->flags = flags & CQW__CONN_FLAGS;
	cqw__dec_reset(&c->dec);
	return 0;
}

void
cqw__chan_release(cqw_conn *c)
{
	free(c->part);
	c->part = NULL;
	free(c->stage);
	c->stage = NULL;
	c->stage_off = c->stage_len = 0;
	free(c->siov);
	free(c->shdr);
	c->siov = NULL;
	c->shdr = NULL;
}

int
cqw__chan_has_buffered(const cqw_conn *c)
{
	return c->stage_len > c->stage_off || cqw__dec_want(&c->dec) == 0 ||
	       cqw__dec_started(&c->dec);
}

/*
 * Read up to len bytes of the current frame: >0, 0 at EOF, CQW_EAGAIN or
 * an error. Never blocks.
 */
int
cqw__chan_read(cqw_conn *c, void *buf, size_t len)
{
	size_t avail = c->stage_len - c->stage_off;
	int64_t r;

	if (len > 0x40000000) {
		len = 0x40000000; /* keep the count inside an int */
	}
	if (avail == 0 && (c->flags & CQW_EXCLUSIVE) && len < CQW__STAGE_SIZE) {
		if (c->stage == NULL) {
			c->stage = malloc(CQW__STAGE_SIZE);
			if (c->stage == NULL) {
				return CQW_ENOMEM;
			}
		}
		r = cqw__io_read(c->fd, &c->kind, c->stage, CQW__STAGE_SIZE);
		if (r <= 0) {
			return (int)r;
		}
		c->stage_off = 0;
		c->stage_len = (size_t)r;
		avail = (size_t)r;
	}
	if (avail > 0) {
		if (len > avail) {
			len = avail;
		}
		if (len == 0) {
			return 0;
		}
		memcpy(buf, c->stage + c->stage_off, len);
		c->stage_off += len;
		return (int)len;
	}
	return (int)cqw__io_read(c->fd, &c->kind, buf, len);
}

/* Wait for readability before the deadline: 0, CQW_ETIMEDOUT or error. */
static int
wait_readable(cqw_conn *c, int64_t deadline)
{
	int r;

	if (c->spin_us > 0) {
		/* Opt-in: look without sleeping before paying a wake-up. */
		int64_t until = cqw__now_us() + c->spin_us;

		do {
			r = cqw__io_wait(c->fd, 0, 0);
			if (r != 0) {
				return r < 0 ? r : 0;
			}
		} while (cqw__now_us() < until);
	}
	r = cqw__io_wait(c->fd, 0, cqw__remaining_ms(deadline));

	if (r == 0) {
		return CQW_ETIMEDOUT;
	}
	return r < 0 ? r : 0;
}

/*
 * Wait for the first bytes of a header. Without a deadline or spinning,
 * sleep inside the read itself (one system call, as a raw blocking loop
 * does); otherwise wait for readiness. Bytes read are fed to the decoder.
 */
static int
wait_first(cqw_conn *c, uint8_t *tmp, int64_t deadline)
{
	int64_t r;

	if (deadline >= 0 || c->spin_us > 0) {
		return wait_readable(c, deadline);
	}
	if (c->flags & CQW_EXCLUSIVE) {
		/* Sleep in a read of the staging buffer, which is empty. */
		if (c->stage == NULL &&
		    (c->stage = malloc(CQW__STAGE_SIZE)) == NULL) {
			return CQW_ENOMEM;
		}
		r = cqw__io_read_wait(c->fd, c->kind, c->stage, CQW__STAGE_SIZE,
				      0);
		if (r > 0) {
			c->stage_off = 0;
			c->stage_len = (size_t)r;
			return 0;
		}
	} else {
		r = cqw__io_read_wait(c->fd, c->kind, tmp,
				      cqw__dec_want(&c->dec), 0);
		if (r > 0) {
			cqw__dec_feed(&c->dec, tmp, (size_t)r);
			return 0;
		}
	}
	if (r == 0) {
		return 0; /* the read below sees the EOF again */
	}
	return r == CQW_EAGAIN ? wait_readable(c, deadline) : (int)r;
}

/* An error a batch owes this receive (it handed up frames first). */
static int
take_deferred(cqw_conn *c)
{
	int r = c->deferred_err;

	c->deferred_err = 0;
	return r;
}

int
cqw__chan_recv_header(cqw_conn *c, int64_t deadline)
{
	uint8_t tmp[CQW__HDR_LARGE];
	size_t want;
	int r;

	/*
	 * When the last frame had to be waited for (ping-pong), the next one
	 * most likely must be too: wait first and spare the read that would
	 * only say EAGAIN. Streams, where frames are already there, keep
	 * reading straight away.
	 */
	r = take_deferred(c);
	if (r < 0) {
		return r;
	}
	if (c->waited && !cqw__chan_has_buffered(c)) {
		/* Still ping-pong: the flag stays set for the next frame. */
		r = wait_first(c, tmp, deadline);
		if (r < 0) {
			return r;
		}
	} else {
		c->waited = 0;
	}
	while ((want = cqw__dec_want(&c->dec)) > 0) {
		r = cqw__chan_read(c, tmp, want);
		if (r > 0) {
			cqw__dec_feed(&c->dec, tmp, (size_t)r);
			continue;
		}
		if (r == 0) {
			r = cqw__dec_eof(&c->dec);
			cqw__dec_reset(&c->dec);
			return r;
		}
		if (r != CQW_EAGAIN) {
			return r;
		}
		c->waited = 1;
		r = wait_readable(c, deadline);
		if (r < 0) {
			return r;
		}
	}
	return 0;
}

/*
 * The payload is not all here. Without a deadline or spinning, and when
 * it goes straight into the caller's buffer, sleep in one read for all of
 * it (a large message then costs one system call); otherwise wait for
 * readiness and let the caller read.
 */
static int
wait_payload(cqw_conn *c, uint8_t *p, uint64_t len, int64_t deadline)
{
	uint64_t left = len - c->pay_got;
	int64_t r;

	if (deadline >= 0 || c->spin_us > 0 ||
	    ((c->flags & CQW_EXCLUSIVE) && left < CQW__STAGE_SIZE)) {
		return wait_readable(c, deadline);
	}
	r = cqw__io_read_wait(c->fd, c->kind, p + c->pay_got,
			      left > 0x40000000 ? 0x40000000 : (size_t)left, 1);
	if (r > 0) {
		c->pay_got += (uint64_t)r;
		return 0;
	}
	if (r == 0) {
		return 0; /* the next read sees the end of file again */
	}
	return r == CQW_EAGAIN ? wait_readable(c, deadline) : (int)r;
}

/*
 * A receive failed after consuming pay_got bytes of the payload into dst,
 * which the caller may not pass again: keep them for the next receive.
 * (At most what the caller's buffer held, so never more than it allowed.)
 * Without memory the stream position is lost for good.
 */
static void
keep_part(cqw_conn *c, const void *dst)
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
static void
restore_part(cqw_conn *c, void *dst)
{
	if (c->part != NULL) {
		memcpy(dst, c->part, (size_t)c->pay_got);
		free(c->part);
		c->part = NULL;
	}
}

int
cqw__chan_recv_payload(cqw_conn *c, void *dst, uint64_t len, int64_t deadline)
{
	uint8_t *p = dst;
	int r;

	restore_part(c, dst);
	while (c->pay_got < len) {
		r = cqw__chan_read(c, p + c->pay_got,
				   (size_t)(len - c->pay_got));
		if (r > 0) {
			c->pay_got += (uint64_t)r;
			continue;
		}
		if (r == 0) {
			/* A header promised more: the frame was cut. */
			cqw__dec_reset(&c->dec);
			c->pay_got = 0;
			return CQW_ETRUNC;
		}
		if (r == CQW_EAGAIN) {
			r = wait_payload(c, p, len, deadline);
		}
		if (r < 0) {
			keep_part(c, dst);
			return r;
		}
	}
	if (len == c->dec.len) {
		cqw__dec_reset(&c->dec);
		c->pay_got = 0;
	}
	return 0;
}

int64_t
cqw__chan_recv_small(cqw_conn *c, void *buf, size_t cap, int64_t deadline)
{
	int r = cqw__chan_recv_header(c, deadline);
	uint64_t len;

	if (r < 0) {
		return r;
	}
	len = c->dec.len;
	if (len > cap) {
		cqw__conn_poison(c);
		return CQW_EMSGSIZE;
	}
	r = cqw__chan_recv_payload(c, buf, len, deadline);
	return r < 0 ? r : (int64_t)len;
}

int
cqw__chan_exact_boundary(const cqw_conn *c)
{
	return !(c->flags & CQW_EXCLUSIVE) && !cqw__dec_started(&c->dec) &&
	       c->pay_got == 0 && c->stage_len == c->stage_off;
}

/*
 * See the next header without consuming it: 1 (in *p), 0 if no whole
 * header is queued (*partial if part of one is), CQW_EOF, CQW_EOPNOTSUPP
 * if fd cannot be peeked, or an error. wait: sleep until bytes come.
 */
static int
peek_header(cqw_conn *c, struct cqw__peek *p, int wait, int *partial)
{
	uint8_t b[CQW__HDR_LARGE];
	struct cqw__dec d;
	int64_t r;

	*partial = 0;
	if (c->kind == CQW__FD_SOCK) {
		r = wait ? cqw__io_peek_wait(c->fd, b, sizeof(b))
			 : cqw__io_peek(c->fd, b, sizeof(b));
	} else {
		r = cqw__io_pipe_peek(c->fd, b, sizeof(b), wait);
	}
	if (r == CQW_EAGAIN) {
		return 0;
	}
	if (r <= 0) {
		return r == 0 ? CQW_EOF : (int)r;
	}
	cqw__dec_reset(&d);
	cqw__dec_feed(&d, b, (size_t)r);
	if (cqw__dec_want(&d) > 0) {
		*partial = 1;
		return 0;
	}
	p->len = d.len;
	p->hdrlen = d.got;
	return 1;
}

/* Sleep a little while part of a frame is queued: poll() cannot tell. */
static int
nap(unsigned *us, int64_t deadline)
{
	if (deadline >= 0 && cqw__remaining_ms(deadline) == 0) {
		return CQW_ETIMEDOUT;
	}
	cqw__sleep_us(*us);
	if (*us < 2000) {
		*us *= 2;
	}
	return 0;
}

int
cqw__chan_wait_header(cqw_conn *c, struct cqw__peek *p, int64_t deadline)
{
	unsigned us = 50, still = 0;
	int partial, r = take_deferred(c);

	if (r < 0) {
		return r;
	}
	for (;;) {
		/* Without a deadline or spinning, sleep inside the peek. */
		r = peek_header(c, p, deadline < 0 && c->spin_us == 0,
				&partial);
		if (r != 0) {
			return r == CQW_EOPNOTSUPP ? 0 : r;
		}
		if (!partial) {
			r = wait_readable(c, deadline);
		} else {
			/*
			 * A header cut short: more is coming, or nothing. Only
			 * a frame too big for one atomic write (over PIPE_BUF)
			 * is cut inside its header, and its writer may be
			 * blocked until this part is read (a pipe of one page
			 * merges it into a buffer that must drain first): if
			 * it stays cut for 20 ms, read it the consuming way.
			 */
			r = cqw__io_hup(c->fd);
			if (r != 0 || still >= 20000) {
				return r < 0 ? r : 0; /* read: CQW_ETRUNC */
			}
			still += us;
			r = nap(&us, deadline);
		}
		if (r < 0) {
			return r;
		}
	}
}

int
cqw__chan_take_frame(cqw_conn *c, const struct cqw__peek *p, void *dst)
{
	uint8_t hdr[CQW__HDR_LARGE];
	cqw__iov iov[2];
	int64_t n;
	int cnt = 1;

	CQW__IOV_BASE(&iov[0]) = (char *)hdr;
	CQW__IOV_LEN(&iov[0]) = p->hdrlen;
	if (p->len > 0) {
		CQW__IOV_BASE(&iov[1]) = dst;
		CQW__IOV_LEN(&iov[1]) =
		    p->len > 0x40000000 ? 0x40000000 : (size_t)p->len;
		cnt = 2;
	}
	/* Header and payload in one read (a socket waits for all of it). */
	n = cqw__io_readv_wait(c->fd, c->kind, iov, cnt);
	if (n == CQW_EAGAIN) {
		n = 0; /* made non-blocking by its owner: wait below */
	} else if (n < 0) {
		return (int)n; /* nothing consumed */
	} else if (n == 0) {
		return CQW_EOF; /* another reader took it, and the peer left */
	}
	/* What was taken is this connection's now: finish it the usual way. */
	cqw__dec_feed(&c->dec, hdr,
		      (size_t)n < p->hdrlen ? (size_t)n : p->hdrlen);
	if ((size_t)n > p->hdrlen) {
		c->pay_got = (uint64_t)n - p->hdrlen;
	}
	if (cqw__dec_want(&c->dec) > 0) {
		int r = cqw__chan_recv_header(c, -1);

		if (r < 0) {
			return r;
		}
	}
	return cqw__chan_recv_payload(c, dst, c->dec.len, -1);
}

/*
 * Frames this small always fit the kernel's smallest buffers whole, so a
 * frame-exact connection waits for them whole however long; larger ones
 * may be committed to (see cqw__chan_frame_ready()).
 */
#define EXACT_WHOLE_MIN 1024

int
cqw__chan_frame_ready(cqw_conn *c, size_t cap, int first, int commit,
		      uint64_t *partial)
{
	struct cqw__peek p;
	int64_t queued, qcap;
	size_t staged;
	int r, part;

	*partial = 0;
	if (c->deferred_err < 0) {
		return 1; /* the receive returns it */
	}
	if (cqw__chan_exact_boundary(c)) {
		/* Frame-exact: decide by looking; consume nothing. */
		r = peek_header(c, &p, 0, &part);
		if (r == CQW_EOF) {
			/* The read says so; after messages, the next call. */
			return first;
		}
		if (r == CQW_EOPNOTSUPP) {
			goto out_consuming; /* cannot be peeked */
		}
		if (r < 0 || (r == 0 && !part)) {
			return r;
		}
		if (r == 1) {
			if (p.len > cap || (first && p.len > CQW__STAGE_SIZE)) {
				return 1;
			}
			queued = cqw__io_nread(c->fd);
			if (queued < 0) {
				return (int)queued;
			}
			if ((uint64_t)queued >= p.hdrlen + p.len) {
				return 1;
			}
			/*
			 * A frame bigger than the kernel will ever hold, or
			 * one the caller gave up waiting for whole (commit,
			 * after the queue stopped growing), is read as it
			 * comes, by this connection: commit to it.
			 */
			qcap = cqw__io_queue_cap(c->fd, c->kind);
			if (p.hdrlen + p.len > EXACT_WHOLE_MIN &&
			    ((qcap > 0 && p.hdrlen + p.len > (uint64_t)qcap) ||
			     commit)) {
				goto out_consuming;
			}
			*partial = (uint64_t)queued;
		} else if (commit) {
			goto out_consuming; /* see cqw__chan_wait_header() */
		} else {
			*partial = 1; /* part of a header */
		}
		/*
		 * Cut short, and the peer gone: the read says so, or after
		 * messages the next call (nothing of it is taken now).
		 */
		r = cqw__io_hup(c->fd);
		return r != 0 ? (r < 0 ? r : first) : 0;
	}
out_consuming:
	if (cqw__dec_want(&c->dec) > 0) {
		/* Take what header bytes are here; they stay in the decoder. */
		r = cqw__chan_recv_header(c, cqw__now_ms());
		if (r == CQW_ETIMEDOUT) {
			*partial = cqw__dec_started(&c->dec);
			return 0;
		}
		if (r < 0) {
			return r;
		}
	}
	if (c->dec.len > cap || (first && c->dec.len > CQW__STAGE_SIZE)) {
		return 1;
	}
	staged = c->stage_len - c->stage_off;
	if (staged >= c->dec.len - c->pay_got) {
		return 1; /* read ahead already: no need to ask the kernel */
	}
	queued = cqw__io_nread(c->fd);
	if (queued < 0) {
		return (int)queued;
	}
	if ((uint64_t)queued + staged < c->dec.len - c->pay_got) {
		*partial = 1;
		return 0;
	}
	return 1;
}

int
cqw__chan_stage_payload(cqw_conn *c)
{
	size_t staged = c->stage_len - c->stage_off;
	uint64_t need = c->dec.len - c->pay_got - staged;
	int64_t r;

	if (c->stage == NULL && (c->stage = malloc(CQW__STAGE_SIZE)) == NULL) {
		return CQW_ENOMEM;
	}
	if (c->stage_off > 0) {
		memmove(c->stage, c->stage + c->stage_off, staged);
		c->stage_off = 0;
		c->stage_len = staged;
	}
	/* Frame-exact: never past this frame. Exclusive: all that fits. */
	if ((c->flags & CQW_EXCLUSIVE) || need > CQW__STAGE_SIZE - staged) {
		need = CQW__STAGE_SIZE - staged;
	}
	r = cqw__io_read(c->fd, &c->kind, c->stage + staged, (size_t)need);
	if (r > 0) {
		c->stage_len += (size_t)r;
		return 1;
	}
	return r == 0 ? 0 : (int)r;
}

/* Frames taken per peek; the peek is bounded by the stage size. */
#define PEEK_FRAMES 64

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
	uint64_t taken = 0;
	int64_t r;

	while (cnt > 0) {
		r = cqw__io_readv_wait(c->fd, CQW__FD_SOCK, iov,
				       cnt > CQW__IOV_MAX ? CQW__IOV_MAX : cnt);
		if (r == CQW_EINTR && taken > 0) {
			continue;
		}
		if (r <= 0) {
			r = r == 0 ? CQW_ETRUNC : r;
			if (taken > 0) {
				c->recv_error = (int)r;
			}
			return (int)r;
		}
		taken += (uint64_t)r;
		while (cnt > 0 && (size_t)r >= CQW__IOV_LEN(iov)) {
			r -= (int64_t)CQW__IOV_LEN(iov);
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			CQW__IOV_BASE(iov) = (char *)CQW__IOV_BASE(iov) + r;
			CQW__IOV_LEN(iov) -= (size_t)r;
		}
	}
	return 0;
}

/*
 * Take whole frames from what a peek showed (stage[0..avail), not yet
 * consumed): frame i goes to msgs[i] if it fits msgs[i].cap. Stops at a
 * frame that is partial, large-form, negative or too big (the one-frame
 * path deals with those). Consumes exactly the frames taken, with one
 * gather read. Returns how many (lengths in msgs[i].len), or an error.
 */
static int
take_peeked(cqw_conn *c, size_t avail, struct cqw_msg *msgs, size_t n)
{
	uint8_t hdr[PEEK_FRAMES][CQW__HDR_SMALL];
	cqw__iov iov[2 * PEEK_FRAMES];
	size_t off = 0, k, cnt = 0;
	int r;

	if (n > PEEK_FRAMES) {
		n = PEEK_FRAMES;
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

int
cqw__chan_recv_peeked(cqw_conn *c, struct cqw_msg *msgs, size_t n)
{
	size_t want = 0, k;
	int64_t r;

	/*
	 * Frame-exact batching on a socket: look at what is queued, take
	 * only whole frames that fit their buffers, and consume exactly
	 * those bytes with one gather read. Nothing past them is touched.
	 */
	if (c->kind != CQW__FD_SOCK || cqw__chan_has_buffered(c) || n < 2 ||
	    c->deferred_err < 0) {
		return 0; /* one frame: the plain path costs the same */
	}
	for (k = 0; k < n && k < PEEK_FRAMES && want < CQW__STAGE_SIZE; k++) {
		want += CQW__HDR_SMALL + msgs[k].cap;
	}
	want = want < CQW__STAGE_SIZE ? want : CQW__STAGE_SIZE;
	if (c->stage == NULL && (c->stage = malloc(CQW__STAGE_SIZE)) == NULL) {
		return CQW_ENOMEM;
	}
	r = cqw__io_peek(c->fd, c->stage, want);
	if (r <= 0) {
		return r == CQW_EAGAIN || r == 0 ? 0 : (int)r;
	}
	return take_peeked(c, (size_t)r, msgs, n);
}

/*
 * Write iov[0..cnt) whole, waiting for space as needed; on a descriptor
 * its owner made non-blocking, wait in poll().
 */
static int
write_all(cqw_conn *c, cqw__iov *iov, int cnt)
{
	int first = 0, n, wrote = 0;
	int64_t r;

	while (first < cnt) {
		n = cnt - first;
		if (n > CQW__IOV_MAX) {
			n = CQW__IOV_MAX;
		}
		/*
		 * Sleep in the write itself, as a raw blocking loop does: a
		 * large message then costs one system call, not a round of
		 * partial write, EAGAIN and poll() per socket buffer.
		 */
		r = cqw__io_writev_wait(c->fd, c->kind, iov + first, n);
		if (r == CQW_EAGAIN) {
			r = cqw__io_wait(c->fd, 1, -1);
			if (r < 0 && !(r == CQW_EINTR && wrote)) {
				return (int)r;
			}
			continue;
		}
		if (r == CQW_EINTR && wrote) {
			/* Part of a frame is out: finish it rather than tear. */
			continue;
		}
		if (r < 0) {
			return (int)r;
		}
		wrote |= r > 0;
		while (first < cnt && (size_t)r >= CQW__IOV_LEN(&iov[first])) {
			r -= (int64_t)CQW__IOV_LEN(&iov[first]);
			first++;
		}
		if (first < cnt && r > 0) {
			CQW__IOV_BASE(&iov[first]) =
			    (char *)CQW__IOV_BASE(&iov[first]) + r;
			CQW__IOV_LEN(&iov[first]) -= (size_t)r;
		}
	}
	return 0;
}

/* Sync gathers go in chunks of this many messages (stack-sized). */
#define SYNC_CHUNK 128

int
cqw__chan_send(cqw_conn *c, const struct cqw_msg *msgs, size_t n)
{
	uint8_t hdr[SYNC_CHUNK][CQW__HDR_LARGE];
	cqw__iov iov[2 * SYNC_CHUNK];
	size_t i, done = 0;
	int cnt, r;

	if (c->flags & CQW_NO_LARGE_FRAMES) {
		for (i = 0; i < n; i++) {
			if (msgs[i].len > CQW__SMALL_MAX) {
				return CQW_EMSGSIZE;
			}
		}
	}
	while (done < n) {
		cnt = 0;
		for (i = 0; i < SYNC_CHUNK && done + i < n; i++) {
			const struct cqw_msg *m = &msgs[done + i];

			CQW__IOV_BASE(&iov[cnt]) = (char *)hdr[i];
			CQW__IOV_LEN(&iov[cnt]) =
			    cqw__frame_header(hdr[i], m->len);
			cnt++;
			if (m->len > 0) {
				CQW__IOV_BASE(&iov[cnt]) = m->buf;
				CQW__IOV_LEN(&iov[cnt]) = m->len;
				cnt++;
			}
		}
		r = write_all(c, iov, cnt);
		if (r < 0) {
			return r;
		}
		done += i;
	}
	return 0;
}

/* ------------------------------------------------------------------
 * The asynchronous side. Ops wait in c->sendq / c->recvq; kick() starts
 * at most one write (a gather of everything queued) and one read; when a
 * backend completes one, io_done() advances the state and kicks again.
 */

enum { RT_HDR = 1, RT_STAGE, RT_PAYLOAD, RT_PEEK };

static void
start_read(cqw_loop *loop, cqw_conn *c, int target, void *buf, size_t len)
{
	c->rio.kind = target == RT_PEEK ? CQW__IO_PEEK : CQW__IO_READ;
	c->rio.conn = c;
	c->rio.buf = buf;
	c->rio.len = len > 0x40000000 ? 0x40000000 : len;
	c->rtarget = target;
	c->recv_busy = 1;
	loop->ops->start(loop, &c->rio);
}

static void
start_write(cqw_loop *loop, cqw_conn *c)
{
	unsigned cnt = c->siov_cnt - c->siov_first;

	c->wio.kind = CQW__IO_WRITEV;
	c->wio.conn = c;
	c->wio.iov = c->siov + c->siov_first;
	c->wio.iovcnt = (int)(cnt > CQW__IOV_MAX ? CQW__IOV_MAX : cnt);
	c->send_busy = 1;
	loop->ops->start(loop, &c->wio);
}

static void
fail_queue(cqw_loop *loop, struct cqw__opq *q, int err)
{
	struct cqw_op *op;

	while ((op = cqw__opq_pop(q)) != NULL) {
		cqw__loop_op_done(loop, op, err);
	}
}

static int
ensure_gather(cqw_conn *c)
{
	if (c->siov != NULL) {
		return 0;
	}
	c->siov = malloc(sizeof(*c->siov) * 2 * CQW__GATHER_MSGS);
	c->shdr = malloc(sizeof(*c->shdr) * CQW__GATHER_MSGS);
	if (c->siov == NULL || c->shdr == NULL) {
		free(c->siov);
		free(c->shdr);
		c->siov = NULL;
		c->shdr = NULL;
		return CQW_ENOMEM;
	}
	return 0;
}

static void
send_kick(cqw_loop *loop, cqw_conn *c)
{
	struct cqw_op *op;
	unsigned n = 0, cnt = 0;
	int r;

	if (c->send_busy || c->sendq.head == NULL || c->closing) {
		return;
	}
	r = c->send_error ? c->send_error : ensure_gather(c);
	if (r < 0) {
		fail_queue(loop, &c->sendq, r);
		return;
	}
	while (n < CQW__GATHER_MSGS && (op = cqw__opq_pop(&c->sendq)) != NULL) {
		if ((c->flags & CQW_NO_LARGE_FRAMES) &&
		    op->len > CQW__SMALL_MAX) {
			cqw__loop_op_done(loop, op, CQW_EMSGSIZE);
			continue;
		}
		CQW__IOV_BASE(&c->siov[cnt]) = (char *)c->shdr[n];
		CQW__IOV_LEN(&c->siov[cnt]) =
		    cqw__frame_header(c->shdr[n], op->len);
		cnt++;
		if (op->len > 0) {
			CQW__IOV_BASE(&c->siov[cnt]) = op->buf;
			CQW__IOV_LEN(&c->siov[cnt]) = op->len;
			cnt++;
		}
		CQW__OP_SET_STATE(op, CQW__OPS_SENDING);
		c->gather[n++] = op;
	}
	if (n == 0) {
		return;
	}
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
	fail_queue(loop, &c->sendq, err);
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

static int
ensure_stage(cqw_conn *c)
{
	if (c->stage == NULL) {
		c->stage = malloc(CQW__STAGE_SIZE);
	}
	return c->stage != NULL ? 0 : CQW_ENOMEM;
}

static void
recv_kick(cqw_loop *loop, cqw_conn *c)
{
	struct cqw_op *op;
	int exclusive = (c->flags & CQW_EXCLUSIVE) != 0;
	uint64_t len;
	size_t want;

	while (!c->recv_busy && (op = c->recvq.head) != NULL) {
		if (c->deferred_err < 0 && !c->closing) {
			/* What a batch owes: the next receive, on any path. */
			cqw__opq_pop(&c->recvq);
			cqw__loop_op_done(loop, op, take_deferred(c));
			continue;
		}
		if (c->recv_error < 0 || c->closing) {
			cqw__opq_pop(&c->recvq);
			cqw__loop_op_done(loop, op,
					  c->closing ? CQW_ECANCELED
						     : c->recv_error);
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
			restore_part(c, op->buf);
		}
		if (take_staged(c, op)) {
			continue;
		}
		len = c->dec.len;
		if (want == 0 && c->pay_got == len) {
			cqw__dec_reset(&c->dec);
			c->pay_got = 0;
			c->no_peek = 0;
			cqw__opq_pop(&c->recvq);
			cqw__loop_op_done(loop, op, (int64_t)len);
			continue;
		}
		if (exclusive &&
		    (want > 0 || len - c->pay_got < CQW__STAGE_SIZE)) {
			if (ensure_stage(c) < 0) {
				cqw__opq_pop(&c->recvq);
				cqw__loop_op_done(loop, op, CQW_ENOMEM);
				continue;
			}
			start_read(loop, c, RT_STAGE, c->stage,
				   CQW__STAGE_SIZE);
		} else if (want > 0 && !cqw__dec_started(&c->dec) &&
			   c->kind == CQW__FD_SOCK && !c->no_peek) {
			/*
			 * Frame-exact socket at a frame boundary: peek, then
			 * take every whole frame that the queued receives
			 * can hold with one exact gather read.
			 */
			if (ensure_stage(c) < 0) {
				cqw__opq_pop(&c->recvq);
				cqw__loop_op_done(loop, op, CQW_ENOMEM);
				continue;
			}
			start_read(loop, c, RT_PEEK, c->stage, CQW__STAGE_SIZE);
		} else if (want > 0) {
			start_read(loop, c, RT_HDR, c->rhdr, want);
		} else {
			start_read(loop, c, RT_PAYLOAD,
				   (char *)op->buf + c->pay_got,
				   (size_t)(len - c->pay_got));
		}
	}
}

/* A peek of avail bytes completed: hand whole frames to queued ops. */
static void
recv_peeked(cqw_loop *loop, cqw_conn *c, size_t avail)
{
	struct cqw_msg msgs[PEEK_FRAMES];
	struct cqw_op *ops[PEEK_FRAMES], *op = c->recvq.head;
	size_t n = 0, i;
	int k;

	for (; op != NULL && n < PEEK_FRAMES; op = CQW__OP_NEXT(op), n++) {
		ops[n] = op;
		msgs[n].buf = op->buf;
		msgs[n].cap = op->len;
	}
	k = take_peeked(c, avail, msgs, n);
	if (k == 0) {
		/* The first frame needs the one-frame path (see take_peeked). */
		c->no_peek = 1;
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
}

static void
recv_done(cqw_loop *loop, cqw_conn *c, int64_t r)
{
	struct cqw_op *op = c->recvq.head;

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
			keep_part(c, op->buf);
		}
		cqw__opq_pop(&c->recvq);
		cqw__loop_op_done(loop, op, r);
		recv_kick(loop, c);
		return;
	}
	switch (c->rtarget) {
	case RT_PEEK:
		recv_peeked(loop, c, (size_t)r);
		break;
	case RT_HDR:
		cqw__dec_feed(&c->dec, c->rhdr, (size_t)r);
		break;
	case RT_STAGE:
		c->stage_off = 0;
		c->stage_len = (size_t)r;
		break;
	default:
		c->pay_got += (uint64_t)r;
		break;
	}
	recv_kick(loop, c);
}

void
cqw__chan_kick(cqw_loop *loop, cqw_conn *c)
{
	send_kick(loop, c);
	recv_kick(loop, c);
}

void
cqw__chan_io_done(cqw_loop *loop, struct cqw__io *io)
{
	cqw_conn *c = io->conn;

	if (io == &c->wio) {
		send_done(loop, c, io->result);
	} else {
		recv_done(loop, c, io->result);
	}
}

int
cqw__chan_cancel(cqw_loop *loop, struct cqw_op *op)
{
	cqw_conn *c = op->conn;

	switch (CQW__OP_STATE(op)) {
	case CQW__OPS_QUEUED:
		break;
	case CQW__OPS_SENDING:
		/* Part of it may be on the wire; cutting it would tear. */
		return CQW_EBUSY;
	default:
		return 0; /* already done: nothing to cancel */
	}
	if (op == c->recvq.head && c->recv_busy) {
		if (c->pay_got > 0 || c->rtarget == RT_PAYLOAD) {
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

void
cqw__chan_fork_fail(cqw_loop *loop, cqw_conn *c)
{
	struct cqw_op *head = c->recv_busy ? cqw__opq_pop(&c->recvq) : NULL;

	/*
	 * In a child after fork(): queued ops end with CQW_EFORK, except the
	 * ones an io in flight belongs to (the gather being written, the
	 * receive at the head), which end when the backend ends that io.
	 */
	fail_queue(loop, &c->sendq, CQW_EFORK);
	fail_queue(loop, &c->recvq, CQW_EFORK);
	if (head != NULL) {
		cqw__opq_push(&c->recvq, head);
	}
}

void
cqw__chan_cancel_all(cqw_loop *loop, cqw_conn *c)
{
	struct cqw_op *head = c->recv_busy ? cqw__opq_pop(&c->recvq) : NULL;

	fail_queue(loop, &c->sendq, CQW_ECANCELED);
	fail_queue(loop, &c->recvq, CQW_ECANCELED);
	if (head != NULL) {
		/* Put back the op that the read in flight belongs to. */
		cqw__opq_push(&c->recvq, head);
		loop->ops->cancel(loop, &c->rio);
	}
	if (c->send_busy) {
		loop->ops->cancel(loop, &c->wio);
	}
}
