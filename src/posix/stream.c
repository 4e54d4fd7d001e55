/*
 * The stream transport's synchronous half on POSIX descriptors (sockets
 * and pipes): Python's Connection framing (WIRE.md §2) with blocking
 * system calls, as a raw blocking program makes them. The loop's half is
 * common/stream.c; both share the channel's state (common/channel.c).
 *
 * Receiving one frame moves through these states, kept in the connection
 * so that a call cut short (a signal, a timeout) resumes where it stopped:
 *
 *            peek (frame-exact, at a boundary: nothing consumed)
 *   BOUNDARY ----------------------------------------------> BOUNDARY
 *      |  \  take_frame: header + payload in one read          ^
 *      |   \------------------------------------------------->|
 *      | recv_header (consuming: exclusive, unpeekable fds,      |
 *      v              the handshake, a committed frame)           |
 *   HEADER (c->dec wants bytes) --> PAYLOAD (c->pay_got < len) --+
 *                                      | failed part-way: the bytes
 *                                      v taken wait in c->part
 *
 * Frame-exact (default): no byte is consumed that is not handed up, so
 * another process may read the next frame (Python's rule, WIRE.md §2.3).
 * At a frame boundary the next header is peeked, not read (MSG_PEEK;
 * tee(2) on pipes): a frame too big for the caller's buffer, or not yet
 * wholly queued when a batch times out, stays in the kernel for any
 * reader. A frame is then taken header and payload in one read. (A frame
 * over 1 KiB that the kernel cannot hold whole, or that stalls, is
 * committed to: its writer may be blocked until it is read.)
 * CQW_EXCLUSIVE: reads smaller than the staging buffer fill it instead,
 * so many small frames cost one system call, and a batch receive walks
 * the staged frames in place (recv_staged()); large payloads still go
 * straight into the caller's buffer.
 *
 * Sends gather the frames into one write, small ones copied whole into
 * one contiguous area, large payloads from the caller's buffer, and
 * resume after partial writes from (iov index, offset).
 */
#include <stdlib.h>
#include <string.h>

#include "common/internal.h"
#include "common/transport.h"
#include "posix/io.h"

/* A message bigger than this is received into memory grown as it comes. */
#define RECV_PREALLOC_MAX (16u * 1024 * 1024)

/*
 * Read up to len bytes of the current frame: >0, 0 at EOF, CQW_EAGAIN or
 * an error. Never blocks.
 */
static int
chan_read(cqw_conn *c, void *buf, size_t len)
{
	size_t avail = c->stage_len - c->stage_off;
	int64_t r;

	if (len > 0x40000000) {
		len = 0x40000000; /* keep the count inside an int */
	}
	if (avail == 0 && (c->flags & CQW_EXCLUSIVE) && len < CQW__STAGE_SIZE) {
		if (cqw__chan_stage(c) < 0) {
			return CQW_ENOMEM;
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

/* Sleep until readable or the deadline: 0, CQW_ETIMEDOUT or error. */
static int
wait_ready(cqw_conn *c, int64_t deadline)
{
	int r = cqw__io_wait(c->fd, 0, cqw__remaining_ms(deadline));

	if (r == 0) {
		return CQW_ETIMEDOUT;
	}
	return r < 0 ? r : 0;
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
	return wait_ready(c, deadline);
}

/*
 * Opt-in spin for the first bytes of a header: retry the non-blocking
 * read itself (as a raw spin loop does: one system call per look, and
 * the bytes are in hand when they come) for c->spin_us. 0 when bytes (or
 * the end of file) came, 1 if the time ran out, or an error.
 */
static int
spin_first(cqw_conn *c, uint8_t *tmp)
{
	int64_t until = cqw__now_us() + c->spin_us, r;
	int excl = (c->flags & CQW_EXCLUSIVE) != 0;

	if (excl && cqw__chan_stage(c) < 0) {
		return CQW_ENOMEM;
	}
	do {
		if (excl) {
			r = cqw__io_read(c->fd, &c->kind, c->stage,
					 CQW__STAGE_SIZE);
			if (r > 0) {
				c->stage_off = 0;
				c->stage_len = (size_t)r;
			}
		} else {
			r = cqw__io_read(c->fd, &c->kind, tmp,
					 cqw__dec_want(&c->dec));
			if (r > 0) {
				cqw__dec_feed(&c->dec, tmp, (size_t)r);
			}
		}
		if (r >= 0) {
			return 0; /* at 0 the read below sees the EOF again */
		}
		if (r != CQW_EAGAIN) {
			return (int)r;
		}
	} while (cqw__now_us() < until);
	return 1;
}

/*
 * Wait for the first bytes of a header. Without a deadline, sleep inside
 * the read itself (one system call, as a raw blocking loop does);
 * otherwise wait for readiness. An opt-in spin comes first. Bytes read
 * are fed to the decoder (or fill the stage).
 *
 * Sleeping inside the read (and inside the peek, wait_header()) was
 * measured against waiting in poll() first (issue 11, item 6; Linux 6.18,
 * 2 vCPUs, `cqwire-perf --only fanout --transport epoll,cqwire-uring` and
 * `--only rtt`, with the poll-first switch of commit "bench: fan-out rows
 * with cqwire sync workers"). The write-space wake-up that a reader in
 * read() shares did not cost a second sleep: cqwire sync workers switched
 * 0.97-1.05 times per response at 64x1 and 256x1 either way, under both
 * the epoll and cqwire-uring parents, frame-exact and exclusive (the poll()
 * worker of bench/ also 1.00). poll() first adds a system call per message
 * (rtt 64 B, sync: 2 -> 3 exclusive, 3 -> 4 frame-exact; pipes 3 -> 4 and
 * 5 -> 6) and raised socket RTT p50 (three alternated runs, same load:
 * 34-40 -> 55-61 us exclusive, 45 -> 56-63 us frame-exact; pipes level).
 * Fan-out responses/s and worker CPU went either way by more than their
 * round-to-round spread (30-220% on the shared machine). Neither wins on
 * wake-ups, so the read keeps the sleep in every case.
 */
static int
wait_first(cqw_conn *c, uint8_t *tmp, int64_t deadline)
{
	int64_t r;

	if (c->spin_us > 0) {
		r = spin_first(c, tmp);
		if (r <= 0) {
			return (int)r;
		}
	}
	if (deadline >= 0) {
		return wait_ready(c, deadline);
	}
	if (c->flags & CQW_EXCLUSIVE) {
		/* Sleep in a read of the staging buffer, which is empty. */
		if (cqw__chan_stage(c) < 0) {
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
	return r == CQW_EAGAIN ? wait_ready(c, deadline) : (int)r;
}

static int
recv_header(cqw_conn *c, int64_t deadline)
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
	r = cqw__chan_take_deferred(c);
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
		r = chan_read(c, tmp, want);
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

static int
recv_payload(cqw_conn *c, void *dst, uint64_t len, int64_t deadline)
{
	uint8_t *p = dst;
	int r;

	cqw__chan_restore_part(c, dst);
	while (c->pay_got < len) {
		r = chan_read(c, p + c->pay_got, (size_t)(len - c->pay_got));
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
			cqw__chan_keep_part(c, dst);
			return r;
		}
	}
	if (len == c->dec.len) {
		cqw__dec_reset(&c->dec);
		c->pay_got = 0;
	}
	return 0;
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
	if (r == 0 && c->kind != CQW__FD_SOCK && cqw__io_hup(c->fd) == 0) {
		/* tee() says 0 when a racing reader emptied the pipe. */
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

/*
 * Sleep *us microseconds while part of a frame is queued (poll() cannot
 * tell when the rest comes), doubling *us up to 2 ms for the next nap.
 * 0, CQW_ETIMEDOUT once deadline (ms or -1) has passed, or CQW_EINTR.
 */
static int
nap(unsigned *us, int64_t deadline)
{
	int r;

	if (deadline >= 0 && cqw__remaining_ms(deadline) == 0) {
		return CQW_ETIMEDOUT;
	}
	r = cqw__sleep_us(*us);
	if (*us < 2000) {
		*us *= 2;
	}
	return r;
}

/*
 * At an exact boundary, wait until the next header is queued and see it
 * without consuming: 1 (in *p), CQW_EOF, CQW_ETIMEDOUT, 0 if this frame
 * must be read the consuming way (a descriptor that cannot be peeked, or
 * a header cut by end of file), or an error.
 */
static int
wait_header(cqw_conn *c, struct cqw__peek *p, int64_t deadline)
{
	int64_t until = c->spin_us > 0 ? cqw__now_us() + c->spin_us : 0;
	unsigned us = 50, still = 0;
	int partial, spin, r = cqw__chan_take_deferred(c);

	if (r < 0) {
		return r;
	}
	for (;;) {
		/*
		 * An opt-in spin retries the peek itself; after it, and
		 * without a deadline, sleep inside the peek.
		 */
		spin = until != 0 && cqw__now_us() < until;
		r = peek_header(c, p, deadline < 0 && !spin, &partial);
		if (r != 0) {
			return r == CQW_EOPNOTSUPP ? 0 : r;
		}
		if (!partial && spin) {
			continue;
		}
		if (!partial) {
			r = wait_ready(c, deadline);
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

/*
 * Consume the peeked frame p into dst (cap bytes), sleeping for the rest
 * of it as needed. Its length, or an error (the connection then holds
 * what was consumed, for the next receive). CQW_EPROTO, sticky, if the
 * frame read is not the one peeked (another reader raced this one) and
 * does not fit: nothing is ever written past cap.
 */
static int64_t
take_frame(cqw_conn *c, const struct cqw__peek *p, void *dst, size_t cap)
{
	uint8_t hdr[CQW__HDR_LARGE];
	cqw__iov iov[2];
	uint64_t len;
	int64_t n;
	int cnt = 1, r;

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
		return n; /* nothing consumed */
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
		r = recv_header(c, -1);
		if (r < 0) {
			return r;
		}
	}
	if (c->dec.len != p->len &&
	    (c->dec.len > cap || c->dec.len < c->pay_got)) {
		/*
		 * Another reader took the peeked frame between the peek and
		 * this read (readers of one descriptor must take turns, as
		 * Python's take a lock): what was read is not one frame, and
		 * nothing may go past cap. The position is lost for good.
		 */
		c->recv_error = CQW_EPROTO;
		return CQW_EPROTO;
	}
	len = c->dec.len; /* the payload's end resets the decoder */
	r = recv_payload(c, dst, len, -1);
	return r < 0 ? r : (int64_t)len;
}

/*
 * Frames this small always fit the kernel's smallest buffers whole, so a
 * frame-exact connection waits for them whole however long; larger ones
 * may be committed to (see frame_ready()).
 */
#define EXACT_WHOLE_MIN 1024

/*
 * 1 if the next frame can be read now: its header is in and it is wholly
 * queued, or it does not fit cap (CQW_ETOOSHORT needs no payload), or,
 * with first, it is too big ever to be wholly queued. 0 if not, with
 * *partial non-zero if part of it is queued (readiness will not say when
 * the rest comes): at a frame-exact boundary, how many bytes. Frame-exact
 * connections consume nothing here, except for a frame over 1 KiB that
 * the kernel's buffer cannot hold whole, or, with commit, one whose
 * queue stopped growing (commit > 1: of any size): its header is then
 * read, and the frame is this connection's to finish. Or an error such
 * as CQW_EOF.
 */
static int
frame_ready(cqw_conn *c, size_t cap, int first, int commit, uint64_t *partial)
{
	struct cqw__peek p = { 0, 0 };
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
			if ((p.hdrlen + p.len > EXACT_WHOLE_MIN &&
			     ((qcap > 0 && p.hdrlen + p.len > (uint64_t)qcap) ||
			      commit)) ||
			    commit > 1) {
				goto out_consuming;
			}
			*partial = (uint64_t)queued;
		} else if (commit) {
			goto out_consuming; /* see wait_header() */
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
		r = recv_header(c, cqw__now_ms());
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

/*
 * With a whole header in, move what has come of the payload into the
 * staging buffer (never past the frame unless CQW_EXCLUSIVE). 1 if bytes
 * moved, 0 at end of file, CQW_EAGAIN if none were there, or an error.
 */
static int
stage_payload(cqw_conn *c)
{
	size_t staged = c->stage_len - c->stage_off;
	uint64_t need = c->dec.len - c->pay_got - staged;
	int64_t r;

	if (cqw__chan_stage(c) < 0) {
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

/*
 * Frame-exact batch receive on a socket: up to n whole frames that are
 * already queued and fit msgs[i].cap, in two system calls. Returns how
 * many (0: use the one-frame path) or an error.
 */
static int
recv_peeked(cqw_conn *c, struct cqw_msg *msgs, size_t n)
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
	for (k = 0; k < n && k < CQW__PEEK_FRAMES && want < CQW__STAGE_SIZE;
	     k++) {
		want += CQW__HDR_SMALL + msgs[k].cap;
	}
	want = want < CQW__STAGE_SIZE ? want : CQW__STAGE_SIZE;
	if (cqw__chan_stage(c) < 0) {
		return CQW_ENOMEM;
	}
	r = cqw__io_peek(c->fd, c->stage, want);
	if (r <= 0) {
		return r == CQW_EAGAIN || r == 0 ? 0 : (int)r;
	}
	return cqw__chan_take_peeked(c, (size_t)r, msgs, n);
}

/*
 * Write iov[0..cnt) whole, waiting for space as needed; on a descriptor
 * its owner made non-blocking, wait in poll().
 */
static int
write_all(cqw_conn *c, cqw__iov *iov, int cnt, int wrote)
{
	int first = 0, n;
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

/*
 * Small frames are copied, header and payload, into one contiguous area,
 * so that a write of hundreds of them is a handful of iovecs: the kernel
 * copies each segment on its own, and two segments per 64-byte message
 * cost several times what one contiguous buffer does (see BENCHMARKS.md,
 * "One-way stream"). Payloads over CQW__COPY_MAX go from the caller's
 * buffer, their header in the area. The area is on the stack for a few
 * messages (a round trip's) and borrowed from malloc() for the call when
 * a batch needs more, so an idle connection holds none of it.
 */
#define COPY_MAX CQW__COPY_MAX
#define AREA_STACK 2048
#define AREA_HEAP CQW__SEND_AREA
/* iovecs per write (stack-sized): two per large message at most. */
#define SYNC_IOV 256

_Static_assert(AREA_STACK >= CQW__HDR_LARGE + COPY_MAX, "a frame fits");

/* Bytes of small frames in msgs[0..n), counted only as far as over cap. */
static size_t
small_bytes(const struct cqw_msg *msgs, size_t n, size_t cap)
{
	size_t i, sum = 0;

	for (i = 0; i < n && sum <= cap; i++) {
		if (msgs[i].len <= COPY_MAX) {
			sum += CQW__HDR_SMALL + msgs[i].len;
		}
	}
	return sum;
}

/* The gather's next iovec: area[*seg..used), if not empty. */
static inline int
close_seg(cqw__iov *iov, int cnt, uint8_t *area, size_t *seg, size_t used)
{
	if (used > *seg) {
		CQW__IOV_BASE(&iov[cnt]) = (char *)area + *seg;
		CQW__IOV_LEN(&iov[cnt]) = used - *seg;
		cnt++;
		*seg = used;
	}
	return cnt;
}

static int
stream_send(cqw_conn *c, const struct cqw_msg *msgs, size_t n)
{
	uint8_t stack_area[AREA_STACK], *area = stack_area, *heap = NULL, *p;
	cqw__iov iov[SYNC_IOV];
	size_t cap = sizeof(stack_area), used, seg, len, i = 0;
	int cnt, wrote = 0, r;

	r = cqw__chan_check_sizes(c, msgs, n);
	if (r < 0) {
		return r;
	}
	if (n > 1 && small_bytes(msgs, n, AREA_STACK) > AREA_STACK) {
		/* Without memory the stack area serves: more writes. */
		heap = malloc(AREA_HEAP);
		if (heap != NULL) {
			area = heap;
			cap = AREA_HEAP;
		}
	}
	while (i < n) {
		/* area[seg..used) is the segment not yet in iov. */
		cnt = 0;
		used = seg = 0;
		for (; i < n; i++) {
			len = msgs[i].len;
			if (len <= COPY_MAX) {
				if (cap - used < CQW__HDR_SMALL + len) {
					break; /* full: write this part first */
				}
				p = area + used;
				p[0] = (uint8_t)(len >> 24);
				p[1] = (uint8_t)(len >> 16);
				p[2] = (uint8_t)(len >> 8);
				p[3] = (uint8_t)len;
				if (len > 0) {
					memcpy(p + CQW__HDR_SMALL, msgs[i].buf,
					       len);
				}
				used += CQW__HDR_SMALL + len;
				continue;
			}
			if (cnt + 3 > SYNC_IOV || cap - used < CQW__HDR_LARGE) {
				break;
			}
			used += cqw__frame_header(area + used, len);
			cnt = close_seg(iov, cnt, area, &seg, used);
			CQW__IOV_BASE(&iov[cnt]) = msgs[i].buf;
			CQW__IOV_LEN(&iov[cnt]) = len;
			cnt++;
		}
		cnt = close_seg(iov, cnt, area, &seg, used);
		/* After a first part, a signal must not stop the call. */
		r = write_all(c, iov, cnt, wrote);
		if (r < 0) {
			break;
		}
		wrote = 1;
	}
	free(heap);
	return r < 0 ? r : 0;
}

/*
 * With a deadline (the handshake's), the header is read the consuming way
 * and both waits are bounded; without, a frame-exact connection peeks.
 */
static int64_t
stream_recv_into(cqw_conn *c, void *buf, size_t cap, size_t *needed,
		 int64_t deadline)
{
	struct cqw__peek p;
	uint64_t len;
	int r;

	if (c->recv_error < 0) {
		return c->recv_error; /* a batch's earlier frame lost it */
	}
	if (deadline < 0 && cqw__chan_exact_boundary(c)) {
		/*
		 * Frame-exact: look at the header before taking a byte, so
		 * that a frame too big for buf stays in the kernel for any
		 * reader of the descriptor, not only for this connection.
		 */
		r = wait_header(c, &p, -1);
		if (r < 0) {
			return r;
		}
		if (r == 1) {
			if (p.len > cap || p.len > INT64_MAX) {
				goto out_too_short;
			}
			return take_frame(c, &p, buf, cap);
		}
		/* Not peekable: read the header the consuming way. */
	}
	r = recv_header(c, deadline);
	if (r < 0) {
		return r;
	}
	len = c->dec.len;
	if (len > cap || len > INT64_MAX) {
		/* Keep the frame: the next receive starts at its payload. */
		p.len = len;
		goto out_too_short;
	}
	r = recv_payload(c, buf, len, deadline);
	return r < 0 ? r : (int64_t)len;

out_too_short:
	if (needed != NULL) {
		*needed = p.len > SIZE_MAX ? SIZE_MAX : (size_t)p.len;
	}
	return CQW_ETOOSHORT;
}

static int64_t
stream_recv_alloc(cqw_conn *c, void **out, int64_t maxlength)
{
	uint64_t len, have;
	uint8_t *buf, *bigger;
	int r;

	r = recv_header(c, -1);
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
		r = recv_payload(c, buf, have, -1);
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

static int
stream_poll(cqw_conn *c, int timeout_ms)
{
	if (cqw__chan_has_buffered(c) || c->deferred_err < 0) {
		return 1; /* the next receive returns at once */
	}
	return cqw__io_wait(c->fd, 0, timeout_ms);
}

/*
 * Wait until the next frame can be read without sleeping (see
 * frame_ready()). 1 ready, 0 at the deadline, or an error.
 */
static int
wait_frame(cqw_conn *c, size_t cap, int64_t deadline)
{
	uint64_t partial, last = 0;
	unsigned us = 50, still = 0;
	int r, commit = 0;

	for (;;) {
		r = frame_ready(c, cap, 1, commit, &partial);
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
			r = stage_payload(c);
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
			r = nap(&us, deadline);
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

/*
 * CQW_EXCLUSIVE, at a frame boundary: the read-ahead path of a batch. Hand
 * up the whole frames the stage holds that fit their buffers, walking the
 * headers in place (one length load, two compares and a copy per frame);
 * when the stage runs short, move the frame it ends with to its front and
 * read more without waiting (with read, or once a frame was taken). How
 * many were taken; *r is then 1 if the next frame needs the one-frame path
 * (not at a clean boundary, a large or negative header, a payload that
 * goes straight to the caller's buffer, a buffer too small), 0 if nothing
 * more is queued now (or end of file, which the next call sees), or an
 * error of the read.
 */
static size_t
recv_staged(cqw_conn *c, struct cqw_msg *msgs, size_t n, int read, int *r)
{
	const uint8_t *p, *end;
	size_t k = 0, rest;
	uint32_t len = 0;
	int64_t got;

	*r = 1;
	if (cqw__dec_started(&c->dec) || c->deferred_err < 0 ||
	    c->recv_error < 0) {
		return 0;
	}
	for (;;) {
		if (c->stage_len > c->stage_off) {
			p = c->stage + c->stage_off;
			end = c->stage + c->stage_len;
			for (; k < n && end - p >= CQW__HDR_SMALL; k++) {
				len = (uint32_t)p[0] << 24 |
				      (uint32_t)p[1] << 16 |
				      (uint32_t)p[2] << 8 | (uint32_t)p[3];
				/* A large or negative header fails both. */
				if (len > (size_t)(end - p) - CQW__HDR_SMALL ||
				    len > msgs[k].cap) {
					break;
				}
				memcpy(msgs[k].buf, p + CQW__HDR_SMALL, len);
				msgs[k].len = len;
				p += CQW__HDR_SMALL + len;
			}
			c->stage_off = (size_t)(p - c->stage);
			if (k == n) {
				return k;
			}
			rest = (size_t)(end - p);
			if (rest >= CQW__HDR_SMALL &&
			    (len > msgs[k].cap ||
			     len > CQW__STAGE_SIZE - CQW__HDR_SMALL)) {
				return k; /* the one-frame path takes it */
			}
		} else {
			rest = 0;
		}
		if (!read && k == 0) {
			return k; /* the caller waits first */
		}
		if (cqw__chan_stage(c) < 0) {
			*r = CQW_ENOMEM;
			return k;
		}
		if (c->stage_off > 0) {
			memmove(c->stage, c->stage + c->stage_off, rest);
			c->stage_off = 0;
			c->stage_len = rest;
		}
		got = cqw__io_read(c->fd, &c->kind, c->stage + rest,
				   CQW__STAGE_SIZE - rest);
		if (got <= 0) {
			*r = got == CQW_EAGAIN ? 0 : (int)got;
			return k;
		}
		c->stage_len += (size_t)got;
	}
}

static int
stream_recv_batch(cqw_conn *c, struct cqw_msg *msgs, size_t n, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : cqw__now_ms() + timeout_ms;
	uint64_t partial;
	size_t got = 0;
	int64_t len;
	int r;

	if (c->flags & CQW_EXCLUSIVE) {
		/* What is staged already needs no wait. */
		got = recv_staged(c, msgs, n, 0, &r);
		if (got == 0 && r < 0) {
			return r;
		}
	}
	if (got == 0) {
		r = stream_poll(c, timeout_ms);
		if (r > 0) {
			r = wait_frame(c, msgs[0].cap, deadline);
		}
	}
	while (r > 0 && got < n) {
		if (c->flags & CQW_EXCLUSIVE) {
			got += recv_staged(c, msgs + got, n - got, 1, &r);
			if (got == n || r < 0 || (r == 0 && got > 0)) {
				break;
			}
			r = 1; /* the one-frame path: it waits if it must */
		} else {
			r = recv_peeked(c, msgs + got, n - got);
			if (r > 0) {
				got += (size_t)r;
				r = stream_poll(c, 0);
				continue;
			}
			if (r < 0) {
				break;
			}
		}
		/* After the first, take only frames that are wholly here. */
		if (got > 0) {
			r = frame_ready(c, msgs[got].cap, 0, 0, &partial);
			if (r <= 0) {
				break;
			}
		}
		len = stream_recv_into(c, msgs[got].buf, msgs[got].cap,
				       &msgs[got].len, -1);
		if (len < 0) {
			r = (int)len;
			break;
		}
		msgs[got++].len = (size_t)len;
		r = stream_poll(c, 0);
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

static int
stream_ready_now(const cqw_conn *c)
{
	return cqw__chan_has_buffered(c);
}

/* Sockets and pipes, with a 4- or 12-byte header before each payload. */
static const struct cqw__transport stream_transport = {
	.name = "stream",
	.send = stream_send,
	.recv_into = stream_recv_into,
	.recv_alloc = stream_recv_alloc,
	.poll = stream_poll,
	.recv_batch = stream_recv_batch,
	.ready_now = stream_ready_now,
	.framer = &cqw__stream_framer,
};

const struct cqw__transport *
cqw__transport_for(int kind)
{
	(void)kind; /* every POSIX descriptor is a stream */
	return &stream_transport;
}
