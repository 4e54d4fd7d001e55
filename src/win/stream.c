/*
 * The stream transport's synchronous half on Winsock sockets: frames of
 * a 4- or 12-byte header and a payload (WIRE.md §2), as src/posix does
 * it, but simpler: Windows has sockets only here (no pipes, no tee), and
 * no EINTR.
 *
 * Frame-exact: nothing is consumed that is not handed up. At a frame
 * boundary the header is peeked (MSG_PEEK); a frame too big for the
 * caller stays in the kernel for any reader of the socket, and one that
 * fits is taken header and payload in one gather read with MSG_WAITALL
 * (with a signal check set, or a deadline, each piece is waited for in
 * slices and only what is queued is read: take_payload()).
 * A receive with a deadline first waits for a frame of up to 64 KiB to
 * be wholly queued, so that its timeout consumes nothing; a larger one is
 * read whole once its header is in (cqwire.h, cqw_recv_batch).
 *
 * Receive state (internal.h) between calls: c->dec holds the header
 * bytes consumed, c->pay_got the payload bytes consumed, which wait in
 * c->part when a receive failed part-way. Only an error in the middle of
 * a read leaves such state (or a header that stayed cut for 20 ms, which
 * is then read the consuming way); the next receive resumes from it.
 * The asynchronous half may also leave bytes it read ahead for a
 * CQW_EXCLUSIVE connection in c->stage: they are the stream's next bytes
 * and are taken first. This half itself never reads ahead.
 */
#include <stdlib.h>
#include <string.h>

#include "win/win.h"

/* A message bigger than this is received into memory grown as it comes. */
#define RECV_PREALLOC_MAX (16u * 1024 * 1024)
/* Largest piece one WSABUF takes here (its length is a ULONG). */
#define CHUNK 0x40000000u
/* How long a peeked header may stay cut before it is read consuming. */
#define CUT_HEADER_MS 20
/* Frames up to this size are waited for whole (see wait_whole()). */
#define EXACT_WHOLE_MIN 1024
/* Sync gathers go in chunks of this many messages (stack-sized). */
#define SYNC_CHUNK 128

static int
wsa_last(void)
{
	int r = cqw__win_error((DWORD)WSAGetLastError());

	return r == 0 ? CQW_EIO : r;
}

/*
 * Bytes the asynchronous half read ahead (CQW_EXCLUSIVE connections) and
 * nobody took yet: they come before anything still in the kernel.
 */
static size_t
staged(const cqw_conn *c)
{
	return c->stage_len - c->stage_off;
}

static int
at_boundary(const cqw_conn *c)
{
	return !cqw__dec_started(&c->dec) && c->pay_got == 0 &&
	       c->part == NULL && staged(c) == 0;
}

/* Take up to len staged bytes into dst: how many. */
static size_t
from_stage(cqw_conn *c, void *dst, size_t len)
{
	size_t n = staged(c) < len ? staged(c) : len;

	memcpy(dst, c->stage + c->stage_off, n);
	c->stage_off += n;
	if (c->stage_off == c->stage_len) {
		c->stage_off = c->stage_len = 0;
	}
	return n;
}

/*
 * Is the next frame whole in the stage and no longer than cap? (Then a
 * receive takes it without I/O.)
 */
static int
staged_whole(const cqw_conn *c, size_t cap)
{
	struct cqw__dec d = c->dec;
	size_t avail = staged(c);
	size_t took = cqw__dec_feed(&d, c->stage + c->stage_off, avail);

	if (cqw__dec_want(&d) > 0 || d.len > cap) {
		return 0;
	}
	return d.len - c->pay_got <= avail - took;
}

/* An error a batch owes the next receive (it handed up frames first). */
static int
take_deferred(cqw_conn *c)
{
	int r = c->deferred_err;

	c->deferred_err = 0;
	return r;
}

/* Bytes queued on the socket (FIONREAD), or an error. */
static int64_t
queued(SOCKET s)
{
	u_long n = 0;

	if (ioctlsocket(s, (long)FIONREAD, &n) != 0) {
		return wsa_last();
	}
	return (int64_t)n;
}

/*
 * Has the peer closed or reset the connection? (Then what is queued is
 * all that will come.) WSAPoll reports it as POLLHUP without consuming
 * anything, which a peek cannot tell.
 */
static int
sock_hup(SOCKET s)
{
	/*
	 * wine: WSAPoll reports only POLLRDNORM after a peer's FIN (and has
	 * no SIO_TCP_INFO), so there a small frame cut by a peer that left
	 * times out under a deadline; a receive without one reads it and
	 * says CQW_ETRUNC.
	 */
	WSAPOLLFD p = { .fd = s, .events = POLLRDNORM };

	if (WSAPoll(&p, 1, 0) == SOCKET_ERROR) {
		return 1; /* the read will say what is wrong */
	}
	return (p.revents & (POLLHUP | POLLERR | POLLNVAL)) != 0;
}

/* Wait until readable before deadline: 0, CQW_ETIMEDOUT, or an error. */
static int
wait_readable(SOCKET s, int64_t deadline)
{
	int r = cqw__sock_wait(s, 0, cqw__remaining_ms(deadline));

	if (r == 0) {
		return CQW_ETIMEDOUT;
	}
	return r < 0 ? r : 0;
}

/* A short sleep while part of something is queued; the check is asked. */
static int
nap(int64_t deadline)
{
	if (deadline >= 0 && cqw__remaining_ms(deadline) == 0) {
		return CQW_ETIMEDOUT;
	}
	Sleep(1);
	return cqw__signal_check_set() && cqw__eintr_stop() ? CQW_EINTR : 0;
}

/*
 * See the next header without consuming it: 1 with it in *d, 0 if it
 * stayed cut (read it the consuming way: only that sees an end of file
 * after part of a header), CQW_EOF, CQW_ETIMEDOUT, CQW_EINTR, or an
 * error. Without a deadline or a signal check, sleeps in the peek itself.
 */
static int
peek_header(cqw_conn *c, struct cqw__dec *d, int64_t deadline)
{
	SOCKET s = (SOCKET)c->fd;
	uint8_t b[CQW__HDR_LARGE];
	int64_t cut_since = -1;
	int n, r;

	if (c->spin_us > 0) {
		/* cqw_conn_set_spin(): look without sleeping for a while. */
		int64_t until = cqw__now_us() + c->spin_us;

		while (queued(s) == 0 && cqw__now_us() < until) {
		}
	}
	for (;;) {
		if (deadline >= 0 || cqw__signal_check_set()) {
			r = wait_readable(s, deadline);
			if (r < 0) {
				return r;
			}
		}
		n = recv(s, (char *)b, sizeof(b), MSG_PEEK);
		if (n == SOCKET_ERROR) {
			if (WSAGetLastError() != WSAEWOULDBLOCK) {
				return wsa_last();
			}
			/* Its owner made it non-blocking: wait, then look. */
			r = wait_readable(s, deadline);
			if (r < 0) {
				return r;
			}
			continue;
		}
		if (n == 0) {
			return CQW_EOF;
		}
		cqw__dec_reset(d);
		cqw__dec_feed(d, b, (size_t)n);
		if (cqw__dec_want(d) == 0) {
			return 1;
		}
		/* A header cut short: the rest is coming, or never. */
		if (sock_hup(s)) {
			return 0; /* never: the consuming read says CQW_ETRUNC */
		}
		if (cut_since < 0) {
			cut_since = cqw__now_ms();
		} else if (cqw__now_ms() - cut_since >= CUT_HEADER_MS) {
			return 0;
		}
		r = nap(deadline);
		if (r < 0) {
			return r;
		}
	}
}

/*
 * A read failed after c->pay_got payload bytes went into dst: keep them
 * for the next receive (dst may not come back). At end of file the frame
 * is cut for good: CQW_ETRUNC, and the next receive sees the end.
 */
static int
fail_mid(cqw_conn *c, const uint8_t *dst, int r)
{
	if (r == CQW_ETRUNC) {
		cqw__dec_reset(&c->dec);
		c->pay_got = 0;
		return r;
	}
	if (c->pay_got > 0 && c->part == NULL) {
		c->part = malloc((size_t)c->pay_got);
		if (c->part == NULL) {
			c->recv_error = CQW_ENOMEM; /* the position is lost */
		} else {
			memcpy(c->part, dst, (size_t)c->pay_got);
		}
	}
	return r;
}

/*
 * Consume the payload into dst up to byte upto (from c->pay_got). With a
 * deadline or a signal check set, each piece waits for readability (which
 * times out or asks the check) and reads only what is there, so that
 * CQW_ETIMEDOUT or CQW_EINTR keeps the part read; without either, one
 * read sleeps for all of it.
 */
static int
take_payload(cqw_conn *c, uint8_t *dst, uint64_t upto, int64_t deadline)
{
	SOCKET s = (SOCKET)c->fd;
	cqw__iov v;
	uint64_t left;
	int consumed, r;

	while (c->pay_got < upto) {
		left = upto - c->pay_got;
		if (staged(c) > 0) {
			c->pay_got +=
			    from_stage(c, dst + c->pay_got,
				       left > CHUNK ? CHUNK : (size_t)left);
			continue;
		}
		if (deadline >= 0 || cqw__signal_check_set()) {
			/*
			 * Readable: one recv() without MSG_WAITALL takes what
			 * is there (or sees the end or an error) and never
			 * sleeps past the wait that asked the deadline.
			 */
			r = wait_readable(s, deadline);
			if (r < 0) {
				return fail_mid(c, dst, r);
			}
			r = recv(s, (char *)dst + c->pay_got,
				 left > CHUNK ? (int)CHUNK : (int)left, 0);
			if (r > 0) {
				c->pay_got += (uint64_t)r;
				continue;
			}
			if (r == 0) {
				return fail_mid(c, dst, CQW_ETRUNC);
			}
			if (WSAGetLastError() == WSAEWOULDBLOCK) {
				continue; /* non-blocking, and taken first */
			}
			return fail_mid(c, dst, wsa_last());
		}
		v.base = (char *)dst + c->pay_got;
		v.len = left > CHUNK ? CHUNK : (unsigned long)left;
		r = cqw__io_readv_all(c->fd, &v, 1, &consumed);
		c->pay_got += (uint64_t)(v.base - ((char *)dst + c->pay_got));
		if (r < 0) {
			return fail_mid(c, dst, r);
		}
	}
	return 0;
}

/* The frame is done: the next receive starts at a boundary. */
static void
frame_done(cqw_conn *c)
{
	cqw__dec_reset(&c->dec);
	c->pay_got = 0;
}

/* Consume a peeked header of hdrlen bytes into c->dec (it is queued). */
static int
take_header(cqw_conn *c, size_t hdrlen)
{
	uint8_t hdr[CQW__HDR_LARGE];
	cqw__iov v = { .len = (unsigned long)hdrlen, .base = (char *)hdr };
	int consumed, r = cqw__io_readv_all(c->fd, &v, 1, &consumed);

	cqw__dec_feed(&c->dec, hdr, hdrlen - v.len);
	if (r == CQW_ETRUNC) {
		cqw__dec_reset(&c->dec);
	}
	return r;
}

/*
 * Consume a peeked frame (header hdrlen bytes, payload len) into dst:
 * one gather read [header, payload] that waits for all of it, then the
 * rest of a payload over 1 GiB. With a signal check set, the header
 * alone (it is queued), then the payload as take_payload() reads it, so
 * that a sender stalled mid-payload cannot keep the check from being
 * asked. 0, or an error with what was consumed kept in the receive state.
 */
static int
take_frame(cqw_conn *c, size_t hdrlen, uint8_t *dst, uint64_t len)
{
	uint8_t hdr[CQW__HDR_LARGE];
	cqw__iov iov[2];
	unsigned long first = 0;
	int cnt = 1, consumed, r;

	if (cqw__signal_check_set()) {
		r = take_header(c, hdrlen);
		if (r < 0) {
			return r;
		}
		goto out_payload;
	}

	iov[0].base = (char *)hdr;
	iov[0].len = (unsigned long)hdrlen;
	if (len > 0) {
		first = len > CHUNK ? CHUNK : (unsigned long)len;
		iov[1].base = (char *)dst;
		iov[1].len = first;
		cnt = 2;
	}
	r = cqw__io_readv_all(c->fd, iov, cnt, &consumed);
	if (consumed) {
		cqw__dec_feed(&c->dec, hdr, hdrlen - iov[0].len);
		if (cnt == 2) {
			c->pay_got = first - iov[1].len;
		}
	}
	if (r < 0) {
		if (!consumed) {
			return r;
		}
		if (cqw__dec_want(&c->dec) > 0) {
			/* Cut inside the header: nothing of the payload yet. */
			if (r == CQW_ETRUNC) {
				cqw__dec_reset(&c->dec);
			}
			return r;
		}
		return fail_mid(c, dst, r);
	}
out_payload:
	r = take_payload(c, dst, len, -1);
	if (r < 0) {
		return r;
	}
	frame_done(c);
	return 0;
}

/*
 * Finish a header begun (or cut) in c->dec, consuming: 0 with c->dec.len
 * set, CQW_EOF / CQW_ETRUNC at end of file, CQW_ETIMEDOUT, or an error.
 */
static int
finish_header(cqw_conn *c, int64_t deadline)
{
	SOCKET s = (SOCKET)c->fd;
	uint8_t tmp[CQW__HDR_LARGE];
	size_t want;
	int n, r;

	while ((want = cqw__dec_want(&c->dec)) > 0) {
		if (staged(c) > 0) {
			c->stage_off += cqw__dec_feed(
			    &c->dec, c->stage + c->stage_off, staged(c));
			if (c->stage_off == c->stage_len) {
				c->stage_off = c->stage_len = 0;
			}
			continue;
		}
		if (deadline >= 0 || cqw__signal_check_set()) {
			r = wait_readable(s, deadline);
			if (r < 0) {
				return r;
			}
		}
		n = recv(s, (char *)tmp, (int)want, 0);
		if (n == SOCKET_ERROR) {
			if (WSAGetLastError() != WSAEWOULDBLOCK) {
				return wsa_last();
			}
			r = wait_readable(s, deadline);
			if (r < 0) {
				return r;
			}
			continue;
		}
		if (n == 0) {
			r = cqw__dec_eof(&c->dec);
			cqw__dec_reset(&c->dec);
			return r;
		}
		cqw__dec_feed(&c->dec, tmp, (size_t)n);
	}
	return 0;
}

/* Put a kept part at the front of dst (its pay_got bytes). */
static void
restore_part(cqw_conn *c, void *dst)
{
	if (c->part != NULL) {
		memcpy(dst, c->part, (size_t)c->pay_got);
		free(c->part);
		c->part = NULL;
	}
}

/* The consuming way: a frame begun by an earlier call, or a cut header. */
static int64_t
recv_consuming(cqw_conn *c, void *buf, size_t cap, size_t *needed,
	       int64_t deadline)
{
	uint64_t len;
	int r = finish_header(c, deadline);

	if (r < 0) {
		return r;
	}
	len = c->dec.len;
	if (len > cap || len > INT64_MAX) {
		/* Kept: the header stays decoded, a part stays in c->part. */
		*needed = len > SIZE_MAX ? SIZE_MAX : (size_t)len;
		return CQW_ETOOSHORT;
	}
	restore_part(c, buf);
	r = take_payload(c, buf, len, deadline);
	if (r < 0) {
		return r;
	}
	frame_done(c);
	return (int64_t)len;
}

/*
 * With a deadline, wait until the whole frame (total bytes) is queued, so
 * that a timeout consumes nothing: 1, CQW_ETIMEDOUT, or an error. 0 when
 * the rest may never come, and the frame is then read as it comes, by
 * this connection: the peer has gone (WSAPoll's POLLHUP), or a frame over
 * 1 KiB stopped growing for 20 ms (its sender may be blocked until it is
 * read: src/posix's rule). A smaller frame always fits the socket's
 * buffers whole, so it is waited for whole, however long. Unlike
 * src/posix, SO_RCVBUF is not compared with the frame: unless its owner
 * set it, Windows reports a default while receive window auto-tuning may
 * queue more, so it does not say what can be held; an owner's small
 * SO_RCVBUF is met by the 20 ms rule (test-win-sock small_rcvbuf).
 */
static int
wait_whole(cqw_conn *c, uint64_t total, int64_t deadline)
{
	int64_t q, last = -1, since = 0;
	int r;

	for (;;) {
		q = queued((SOCKET)c->fd);
		if (q < 0) {
			return (int)q;
		}
		if ((uint64_t)q >= total) {
			return 1;
		}
		if (sock_hup((SOCKET)c->fd)) {
			return 0;
		}
		if (q != last) {
			last = q;
			since = cqw__now_ms();
		} else if (total > EXACT_WHOLE_MIN &&
			   cqw__now_ms() - since >= CUT_HEADER_MS) {
			return 0;
		}
		r = nap(deadline);
		if (r < 0) {
			return r;
		}
	}
}

static int64_t
stream_recv_into(cqw_conn *c, void *buf, size_t cap, size_t *needed,
		 int64_t deadline)
{
	struct cqw__dec d;
	size_t unused;
	int r = take_deferred(c);

	if (needed == NULL) {
		needed = &unused; /* the caller does not ask */
	}
	if (r < 0) {
		return r;
	}
	if (!at_boundary(c)) {
		return recv_consuming(c, buf, cap, needed, deadline);
	}
	r = peek_header(c, &d, deadline);
	if (r == 0) {
		return recv_consuming(c, buf, cap, needed, deadline);
	}
	if (r < 0) {
		return r;
	}
	if (d.len > cap || d.len > INT64_MAX) {
		*needed = d.len > SIZE_MAX ? SIZE_MAX : (size_t)d.len;
		return CQW_ETOOSHORT; /* nothing consumed */
	}
	if (deadline >= 0 && d.len <= CQW__STAGE_SIZE) {
		r = wait_whole(c, d.got + d.len, deadline);
		if (r < 0) {
			return r;
		}
		if (r == 0) {
			r = take_header(c, d.got);
			if (r < 0) {
				return r;
			}
			return recv_consuming(c, buf, cap, needed, deadline);
		}
	}
	r = take_frame(c, d.got, buf, d.len);
	return r < 0 ? r : (int64_t)d.len;
}

static int64_t
stream_recv_alloc(cqw_conn *c, void **out, int64_t maxlength)
{
	uint64_t len, have;
	uint8_t *buf, *bigger;
	struct cqw__dec d;
	int r = take_deferred(c);

	if (r < 0) {
		return r;
	}
	if (at_boundary(c)) {
		r = peek_header(c, &d, -1);
		if (r < 0) {
			return r;
		}
		if (r == 1) {
			len = d.len;
			if ((maxlength >= 0 && len > (uint64_t)maxlength) ||
			    len > INT64_MAX || len > SIZE_MAX - 1) {
				goto out_too_long; /* nothing consumed */
			}
			if (len <= RECV_PREALLOC_MAX) {
				buf = malloc(len > 0 ? (size_t)len : 1);
				if (buf == NULL) {
					return CQW_ENOMEM; /* nothing lost */
				}
				r = take_frame(c, d.got, buf, len);
				if (r < 0) {
					free(buf); /* a part was copied */
					return r;
				}
				*out = buf;
				return (int64_t)len;
			}
			/* Large: read the header, then grow as it comes. */
		}
	}
	r = finish_header(c, -1);
	if (r < 0) {
		return r;
	}
	len = c->dec.len;
	if ((maxlength >= 0 && len > (uint64_t)maxlength) || len > INT64_MAX ||
	    len > SIZE_MAX - 1) {
		goto out_too_long;
	}
	/*
	 * Beyond 16 MiB, allocate as the payload arrives: a hostile header
	 * costs at most that more than its sender really sends.
	 */
	have = len < RECV_PREALLOC_MAX ? len : RECV_PREALLOC_MAX;
	if (have < c->pay_got) {
		have = c->pay_got;
	}
	buf = malloc(have > 0 ? (size_t)have : 1);
	if (buf == NULL) {
		return CQW_ENOMEM; /* the state stays for the next call */
	}
	restore_part(c, buf);
	for (;;) {
		r = take_payload(c, buf, have, -1);
		if (r < 0) {
			free(buf); /* fail_mid copied what was read */
			return r;
		}
		if (have == len) {
			break;
		}
		have = have * 2 < len ? have * 2 : len;
		bigger = realloc(buf, (size_t)have);
		if (bigger == NULL) {
			fail_mid(c, buf, CQW_ENOMEM);
			free(buf);
			return CQW_ENOMEM;
		}
		buf = bigger;
	}
	frame_done(c);
	*out = buf;
	return (int64_t)len;

out_too_long:
	cqw__conn_poison(c);
	return CQW_EMSGSIZE;
}

static int
stream_ready_now(const cqw_conn *c)
{
	return !at_boundary(c) || c->deferred_err < 0 || c->recv_error < 0;
}

static int
stream_poll(cqw_conn *c, int timeout_ms)
{
	if (stream_ready_now(c)) {
		return 1;
	}
	return cqw__sock_wait((SOCKET)c->fd, 0, timeout_ms);
}

static uint32_t
be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/*
 * Frame-exact batching: peek what is queued (up to 64 KiB), take the
 * whole small frames in it that fit msgs[i].cap, and consume exactly
 * those with one gather read. How many (0: none whole), or an error.
 */
static int
take_queued(cqw_conn *c, struct cqw_msg *msgs, size_t n)
{
	uint8_t hdr[CQW__PEEK_FRAMES][CQW__HDR_SMALL];
	cqw__iov iov[2 * CQW__PEEK_FRAMES];
	SOCKET s = (SOCKET)c->fd;
	size_t off = 0, avail, want = 0, k, cnt = 0;
	int64_t q;
	int consumed, r;

	if (!at_boundary(c)) {
		return 0;
	}
	q = queued(s);
	if (q < CQW__HDR_SMALL) {
		return q < 0 ? (int)q : 0;
	}
	if (n > CQW__PEEK_FRAMES) {
		n = CQW__PEEK_FRAMES;
	}
	for (k = 0; k < n && want < CQW__STAGE_SIZE; k++) {
		want += CQW__HDR_SMALL + msgs[k].cap;
	}
	if (want > CQW__STAGE_SIZE) {
		want = CQW__STAGE_SIZE;
	}
	if ((uint64_t)q < want) {
		want = (size_t)q;
	}
	if (cqw__chan_stage(c) < 0) {
		return CQW_ENOMEM;
	}
	/* Bytes are queued: this peek does not wait. */
	r = recv(s, (char *)c->stage, (int)want, MSG_PEEK);
	if (r == SOCKET_ERROR) {
		return wsa_last();
	}
	avail = (size_t)r;
	for (k = 0; k < n && off + CQW__HDR_SMALL <= avail; k++) {
		uint32_t len = be32(c->stage + off);

		/* Large-form and negative headers take the one-frame path. */
		if (len > CQW__SMALL_MAX || len > msgs[k].cap ||
		    off + CQW__HDR_SMALL + len > avail) {
			break;
		}
		iov[cnt].base = (char *)hdr[k];
		iov[cnt++].len = CQW__HDR_SMALL;
		if (len > 0) {
			iov[cnt].base = msgs[k].buf;
			iov[cnt++].len = len;
		}
		msgs[k].len = len;
		off += CQW__HDR_SMALL + len;
	}
	if (k == 0) {
		return 0;
	}
	r = cqw__io_readv_all(c->fd, iov, (int)cnt, &consumed);
	if (r < 0 && consumed) {
		/* Frames cut that cannot be handed up: the position is lost. */
		c->recv_error = r;
	}
	return r < 0 ? r : (int)k;
}

static int
stream_recv_batch(cqw_conn *c, struct cqw_msg *msgs, size_t n, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : cqw__now_ms() + timeout_ms;
	size_t needed = 0, got = 1;
	int64_t r;
	int k;

	r = stream_recv_into(c, msgs[0].buf, msgs[0].cap, &needed, deadline);
	if (r == CQW_ETIMEDOUT) {
		return 0;
	}
	if (r == CQW_ETOOSHORT) {
		msgs[0].len = needed;
		return CQW_ETOOSHORT;
	}
	if (r < 0) {
		return (int)r;
	}
	msgs[0].len = (size_t)r;
	while (got < n) {
		if (staged(c) > 0) {
			/* Read ahead already: whole frames cost no I/O. */
			if (!staged_whole(c, msgs[got].cap)) {
				break;
			}
			r = recv_consuming(c, msgs[got].buf, msgs[got].cap,
					   &needed, -1);
			if (r < 0) {
				c->deferred_err = (int)r;
				break;
			}
			msgs[got++].len = (size_t)r;
			continue;
		}
		k = take_queued(c, msgs + got, n - got);
		if (k <= 0) {
			if (k < 0) {
				c->deferred_err = k; /* the next call's */
			}
			break;
		}
		got += (size_t)k;
	}
	return (int)got;
}

/*
 * Write iov[0..cnt) whole. A blocking socket takes it all in one call;
 * one its owner made non-blocking is waited on between pieces. Never
 * stopped by the signal check: part of a frame may be out already.
 */
static int
write_all(SOCKET s, cqw__iov *iov, int cnt)
{
	DWORD sent;
	int first = 0, r;

	while (first < cnt) {
		sent = 0;
		if (WSASend(s, (WSABUF *)(iov + first), (DWORD)(cnt - first),
			    &sent, 0, NULL, NULL) == SOCKET_ERROR) {
			if (WSAGetLastError() != WSAEWOULDBLOCK) {
				return wsa_last();
			}
			r = cqw__sock_wait(s, 1, CQW__WIN_NOSTOP);
			if (r < 0) {
				return r;
			}
			continue;
		}
		while (first < cnt && sent >= iov[first].len) {
			sent -= iov[first].len;
			first++;
		}
		if (first < cnt) {
			iov[first].base += sent;
			iov[first].len -= sent;
		}
	}
	return 0;
}

static int
stream_send(cqw_conn *c, const struct cqw_msg *msgs, size_t n)
{
	uint8_t hdr[SYNC_CHUNK][CQW__HDR_LARGE];
	cqw__iov iov[2 * SYNC_CHUNK];
	SOCKET s = (SOCKET)c->fd;
	size_t i, done = 0;
	uint64_t off, piece;
	int cnt, r;

	r = cqw__chan_check_sizes(c, msgs, n);
	if (r < 0) {
		return r;
	}
	while (done < n) {
		cnt = 0;
		for (i = 0; i < SYNC_CHUNK && done + i < n; i++) {
			const struct cqw_msg *m = &msgs[done + i];

			iov[cnt].base = (char *)hdr[i];
			iov[cnt++].len =
			    (unsigned long)cqw__frame_header(hdr[i], m->len);
			if (m->len > CHUNK) {
				i++;
				break; /* its payload goes in pieces below */
			}
			if (m->len > 0) {
				iov[cnt].base = m->buf;
				iov[cnt++].len = (unsigned long)m->len;
			}
		}
		r = write_all(s, iov, cnt);
		if (r < 0) {
			return r;
		}
		if (msgs[done + i - 1].len > CHUNK) {
			const struct cqw_msg *m = &msgs[done + i - 1];

			for (off = 0; off < m->len; off += piece) {
				piece =
				    m->len - off > CHUNK ? CHUNK : m->len - off;
				iov[0].base = (char *)m->buf + off;
				iov[0].len = (unsigned long)piece;
				r = write_all(s, iov, 1);
				if (r < 0) {
					return r;
				}
			}
		}
		done += i;
	}
	return 0;
}

static void
stream_release(cqw_conn *c)
{
	free(c->part);
	c->part = NULL;
	if (c->stage != c->stage_small) {
		free(c->stage);
	}
	c->stage = NULL;
	c->stage_off = c->stage_len = 0;
}

static const struct cqw__transport stream_tp = {
	.name = "stream",
	.send = stream_send,
	.recv_into = stream_recv_into,
	.recv_alloc = stream_recv_alloc,
	.poll = stream_poll,
	.recv_batch = stream_recv_batch,
	.ready_now = stream_ready_now,
	.release = stream_release,
	.framer = &cqw__stream_framer,
};

const struct cqw__transport *
cqw__win_stream_transport(void)
{
	return &stream_tp;
}
