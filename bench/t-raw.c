/*
 * The raw system-call baselines, on an AF_UNIX stream socket pair with the
 * multiprocessing.connection framing done by hand:
 *
 *   raw           blocking write() of a whole frame; read() of the header,
 *                 then of the payload (what Python's framing costs)
 *   raw-buffered  rtt: one buffered read() per message (reads ahead)
 *   raw-spin      rtt: non-blocking reads spinning on EAGAIN
 *   raw-writev    stream: one gather write of up to 64 frames; buffered
 *                 reads on the receiving side
 *   epoll         fanout: an epoll parent, read() into a buffer per worker,
 *                 one write() of all the new requests of a worker
 *
 * The raw fan-out worker, which every C fan-out parent talks to, is here
 * too.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sess.h"

#define WRITEV_FRAMES 64

struct fo_worker {
	int fd;
	uint8_t *in; /* responses read and not yet parsed */
	size_t inlen, incap;
	uint64_t *ts; /* send times of the requests in flight (a ring) */
	unsigned head, tail;
};

struct raw_sess {
	struct cqwb_session base;
	int fd;
	int variant;
	size_t size;
	uint8_t *frame; /* header + payload */
	uint8_t *rx;	/* receive buffer (size bytes) */
	struct cqwb__rbuf rb;
	/* fanout */
	int ep;
	int n, k;
	struct fo_worker *w;
	uint8_t *reqs; /* k request frames back to back */
	struct epoll_event *evs;
};

static void
set_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Receive one frame the variant's way; payload into dst. */
static int64_t
raw_recv(struct raw_sess *rs, int fd, uint8_t *dst, size_t cap)
{
	uint8_t hdr[4];
	uint32_t len;
	int r;

	if (rs->variant == CQWB_RAW_BUFFERED ||
	    rs->variant == CQWB_RAW_WRITEV || rs->variant == CQWB_RAW_SPIN) {
		return cqwb__rbuf_frame(&rs->rb, fd, dst, cap);
	}
	r = cqwb__read_full(fd, hdr, 4);
	if (r < 0) {
		return r;
	}
	len = cqwb__get_hdr(hdr);
	if (len > cap) {
		return -EMSGSIZE;
	}
	r = cqwb__read_full(fd, dst, len);
	return r < 0 ? r : (int64_t)len;
}

/* ------------------------------------------------------------------
 * Peers
 */

static void __attribute__((noreturn)) echo_peer(struct raw_sess *rs, int fd)
{
	int64_t n;

	for (;;) {
		n = raw_recv(rs, fd, rs->frame + 4, rs->size);
		if (n < 0) {
			cqwb__peer_end(n);
		}
		cqwb__put_hdr(rs->frame, (uint32_t)n);
		n = cqwb__write_full(fd, rs->frame, 4 + (size_t)n);
		if (n < 0) {
			cqwb__peer_end(n);
		}
	}
}

/* Count frames; a 0-length frame asks for the count as an 8-byte ack. */
static void __attribute__((noreturn)) stream_peer(struct raw_sess *rs, int fd)
{
	uint64_t count = 0;
	int64_t n;

	for (;;) {
		n = raw_recv(rs, fd, rs->rx, rs->size);
		if (n < 0) {
			cqwb__peer_end(n);
		}
		if (n > 0) {
			count++;
			continue;
		}
		n = cqwb__write_full(fd, &count, sizeof(count));
		if (n < 0) {
			cqwb__peer_end(n);
		}
	}
}

/* Append a response frame (an echo of payload p, len bytes) to out. */
static void
append(uint8_t **out, size_t *cap, size_t *used, const uint8_t *p, uint32_t len)
{
	if (*used + 4 + len > *cap) {
		while (*used + 4 + len > *cap) {
			*cap *= 2;
		}
		*out = realloc(*out, *cap);
		if (*out == NULL) {
			_exit(1);
		}
	}
	cqwb__put_hdr(*out + *used, len);
	memcpy(*out + *used + 4, p, len);
	*used += 4 + len;
}

void
cqwb__raw_worker(int fd)
{
	struct cqwb__rbuf rb;
	size_t cap = 4096, used;
	uint8_t *out, *big;
	uint32_t len;
	int64_t n;
	int r;

	set_nonblock(fd);
	out = malloc(cap);
	if (out == NULL || cqwb__rbuf_init(&rb) < 0) {
		_exit(1);
	}
	for (;;) {
		/* Sleep in poll(), not in read(): fewer wake-ups. */
		if (!cqwb__rbuf_has_frame(&rb)) {
			if (cqwb__wait_in(fd) < 0) {
				_exit(1);
			}
			r = cqwb__rbuf_fill(&rb, fd);
			if (r < 0) {
				cqwb__peer_end(r);
			}
		}
		used = 0;
		while (cqwb__rbuf_has_frame(&rb)) {
			len = cqwb__get_hdr(rb.buf + rb.off);
			append(&out, &cap, &used, rb.buf + rb.off + 4, len);
			rb.off += 4 + (size_t)len;
		}
		if (rb.len - rb.off >= 4 &&
		    cqwb__get_hdr(rb.buf + rb.off) + 4 > CQWB_RBUF_SIZE) {
			/* Larger than the buffer: read it whole. */
			len = cqwb__get_hdr(rb.buf + rb.off);
			big = malloc(len);
			n = big ? cqwb__rbuf_frame(&rb, fd, big, len) : -ENOMEM;
			if (n < 0) {
				cqwb__peer_end(n);
			}
			append(&out, &cap, &used, big, len);
			free(big);
		}
		r = used > 0 ? cqwb__write_full(fd, out, used) : 0;
		if (r < 0) {
			cqwb__peer_end(r);
		}
	}
}

int
cqwb__spawn_workers(struct cqwb_session *s, int *fds, int n)
{
	int i, j, sv[2], r;
	pid_t pid;

	for (i = 0; i < n; i++) {
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
			r = cqwb__fail(-errno, "socketpair");
			goto out_close;
		}
		pid = cqwb__fork(i);
		if (pid < 0) {
			r = cqwb__fail(-errno, "fork");
			close(sv[0]);
			close(sv[1]);
			goto out_close;
		}
		if (pid == 0) {
			for (j = 0; j < i; j++) {
				close(fds[j]);
			}
			close(sv[0]);
			cqwb__raw_worker(sv[1]);
		}
		close(sv[1]);
		fds[i] = sv[0];
		if (cqwb__add_peer(s, pid) < 0) {
			r = cqwb__fail(-ENOMEM, "workers");
			close(sv[0]);
			goto out_close;
		}
	}
	return 0;

out_close:
	for (j = 0; j < i; j++) {
		close(fds[j]);
	}
	cqwb__reap_peers(s, 5000);
	return r;
}

/* ------------------------------------------------------------------
 * Parent side
 */

static int
rtt_once(struct cqwb_session *s)
{
	struct raw_sess *rs = (struct raw_sess *)s;
	int64_t n;

	if (cqwb__write_full(rs->fd, rs->frame, 4 + rs->size) < 0) {
		return cqwb__fail(-errno, "raw send");
	}
	n = raw_recv(rs, rs->fd, rs->rx, rs->size);
	if (n < 0) {
		return cqwb__fail((int)n, "raw receive");
	}
	return 0;
}

static int
rtt_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	 struct cqwb_hist *lat, struct cqwb_step *out)
{
	return cqwb__rtt_loop(s, max_ops, max_ns, lat, out, rtt_once);
}

/* Send the 0-length marker and wait for the receiver's count. */
static int
stream_sync(struct raw_sess *rs)
{
	uint8_t hdr[4] = { 0, 0, 0, 0 };
	uint64_t count;
	int r = cqwb__write_full(rs->fd, hdr, 4);

	if (r == 0) {
		r = cqwb__read_full(rs->fd, &count, sizeof(count));
	}
	return r < 0 ? cqwb__fail(r, "raw stream ack") : 0;
}

static int
stream_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	    struct cqwb_hist *lat, struct cqwb_step *out)
{
	struct raw_sess *rs = (struct raw_sess *)s;
	struct iovec iov[2 * WRITEV_FRAMES];
	uint64_t start = cqwb_now_ns(), sent = 0;
	size_t batch = cqwb__batch(rs->size), i, m;
	int r;

	(void)lat;
	if (batch > WRITEV_FRAMES) {
		batch = WRITEV_FRAMES;
	}
	while (sent < max_ops) {
		m = max_ops - sent < batch ? (size_t)(max_ops - sent) : batch;
		if (rs->variant == CQWB_RAW_WRITEV) {
			for (i = 0; i < m; i++) {
				iov[2 * i].iov_base = rs->frame;
				iov[2 * i].iov_len = 4;
				iov[2 * i + 1].iov_base = rs->frame + 4;
				iov[2 * i + 1].iov_len = rs->size;
			}
			r = cqwb__writev_full(rs->fd, iov, (int)(2 * m));
		} else {
			/* One write() per message. */
			for (i = 0, r = 0; i < m && r == 0; i++) {
				r = cqwb__write_full(rs->fd, rs->frame,
						     4 + rs->size);
			}
		}
		if (r < 0) {
			return cqwb__fail(r, "raw stream send");
		}
		sent += m;
		if (cqwb_now_ns() - start >= max_ns) {
			break;
		}
	}
	r = stream_sync(rs);
	out->ops = sent;
	out->ns = cqwb_now_ns() - start;
	return r;
}

/* Requests go out in one write per worker; their send times are kept. */
static int
fo_send(struct raw_sess *rs, struct fo_worker *w, int m, uint64_t now)
{
	int i;

	for (i = 0; i < m; i++) {
		w->ts[w->tail++ % (unsigned)rs->k] = now;
	}
	return cqwb__write_full(w->fd, rs->reqs, (size_t)m * (4 + rs->size));
}

static int
fanout_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	    struct cqwb_hist *lat, struct cqwb_step *out)
{
	struct raw_sess *rs = (struct raw_sess *)s;
	uint64_t start = cqwb_now_ns(), now = start, done = 0;
	int i, n, m, r;

	while (done < max_ops && now - start < max_ns) {
		n = epoll_wait(rs->ep, rs->evs, rs->n, -1);
		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			return cqwb__fail(-errno, "epoll_wait");
		}
		now = cqwb_now_ns();
		for (i = 0; i < n; i++) {
			struct fo_worker *w = &rs->w[rs->evs[i].data.u32];
			ssize_t k =
			    read(w->fd, w->in + w->inlen, w->incap - w->inlen);
			size_t pos = 0;

			if (k <= 0) {
				if (k < 0 && errno == EAGAIN) {
					continue;
				}
				return cqwb__fail(k ? -errno : -EPIPE,
						  "epoll read");
			}
			w->inlen += (size_t)k;
			m = 0;
			while (w->inlen - pos >= 4 &&
			       w->inlen - pos - 4 >=
				   cqwb__get_hdr(w->in + pos)) {
				pos += 4 + cqwb__get_hdr(w->in + pos);
				if (lat != NULL) {
					cqwb_hist_record(
					    lat, now - w->ts[w->head %
							     (unsigned)rs->k]);
				}
				w->head++;
				m++;
			}
			memmove(w->in, w->in + pos, w->inlen - pos);
			w->inlen -= pos;
			done += (uint64_t)m;
			if (m > 0) {
				r = fo_send(rs, w, m, now);
				if (r < 0) {
					return cqwb__fail(r, "epoll write");
				}
			}
		}
	}
	out->ops = done;
	out->ns = now - start;
	return 0;
}

static int
raw_close(struct cqwb_session *s)
{
	struct raw_sess *rs = (struct raw_sess *)s;
	int i, r;

	if (rs->fd >= 0) {
		close(rs->fd);
	}
	for (i = 0; rs->w != NULL && i < rs->n; i++) {
		if (rs->w[i].fd >= 0) {
			close(rs->w[i].fd);
		}
		free(rs->w[i].in);
		free(rs->w[i].ts);
	}
	if (rs->ep >= 0) {
		close(rs->ep);
	}
	r = cqwb__reap_peers(s, 10000);
	free(rs->w);
	free(rs->evs);
	free(rs->reqs);
	free(rs->frame);
	free(rs->rx);
	cqwb__rbuf_free(&rs->rb);
	cqwb__sess_free(s);
	return r;
}

static const struct cqwb_session_ops rtt_ops = { rtt_step, raw_close };
static const struct cqwb_session_ops stream_ops = { stream_step, raw_close };
static const struct cqwb_session_ops fanout_ops = { fanout_step, raw_close };

static int
fanout_open(struct raw_sess *rs)
{
	int i, r, *fds;
	size_t fsz = 4 + rs->size;

	rs->n = rs->base.p.workers;
	rs->k = rs->base.p.inflight;
	rs->w = calloc((size_t)rs->n, sizeof(*rs->w));
	rs->evs = calloc((size_t)rs->n, sizeof(*rs->evs));
	rs->reqs = calloc((size_t)rs->k, fsz);
	fds = calloc((size_t)rs->n, sizeof(*fds));
	if (rs->w == NULL || rs->evs == NULL || rs->reqs == NULL ||
	    fds == NULL) {
		free(fds);
		return cqwb__fail(-ENOMEM, "fanout");
	}
	for (i = 0; i < rs->n; i++) {
		rs->w[i].fd = -1;
	}
	for (i = 0; i < rs->k; i++) {
		cqwb__put_hdr(rs->reqs + (size_t)i * fsz, (uint32_t)rs->size);
	}
	r = cqwb__spawn_workers(&rs->base, fds, rs->n);
	if (r < 0) {
		free(fds);
		return r;
	}
	rs->ep = epoll_create1(EPOLL_CLOEXEC);
	for (i = 0; i < rs->n; i++) {
		struct fo_worker *w = &rs->w[i];
		struct epoll_event ev = { .events = EPOLLIN };

		w->fd = fds[i];
		set_nonblock(w->fd);
		w->incap = (size_t)rs->k * fsz + 4096;
		w->in = malloc(w->incap);
		w->ts = calloc((size_t)rs->k, sizeof(*w->ts));
		ev.data.u32 = (uint32_t)i;
		if (w->in == NULL || w->ts == NULL || rs->ep < 0 ||
		    epoll_ctl(rs->ep, EPOLL_CTL_ADD, w->fd, &ev) != 0) {
			free(fds);
			return cqwb__fail(-ENOMEM, "fanout setup");
		}
	}
	free(fds);
	for (i = 0; i < rs->n; i++) {
		r = fo_send(rs, &rs->w[i], rs->k, cqwb_now_ns());
		if (r < 0) {
			return cqwb__fail(r, "fanout first requests");
		}
	}
	return 0;
}

int
cqwb__raw_open(struct cqwb_session **out, const struct cqwb_transport *t,
	       const struct cqwb_params *p)
{
	const struct cqwb_session_ops *ops = p->scn == CQWB_RTT ? &rtt_ops
					     : p->scn == CQWB_STREAM
						 ? &stream_ops
						 : &fanout_ops;
	struct raw_sess *rs = cqwb__sess_new(sizeof(*rs), ops, t, p);
	int sv[2], r;
	pid_t pid;

	if (rs == NULL) {
		return cqwb__fail(-ENOMEM, "session");
	}
	rs->fd = -1;
	rs->ep = -1;
	rs->variant = t->arg;
	rs->size = p->size;
	rs->frame = calloc(1, 4 + p->size);
	rs->rx = malloc(p->size);
	if (rs->frame == NULL || rs->rx == NULL ||
	    cqwb__rbuf_init(&rs->rb) < 0) {
		raw_close(&rs->base);
		return cqwb__fail(-ENOMEM, "session");
	}
	cqwb__put_hdr(rs->frame, (uint32_t)p->size);
	rs->rb.spin = rs->variant == CQWB_RAW_SPIN;
	if (p->scn == CQWB_FANOUT) {
		r = fanout_open(rs);
		if (r < 0) {
			raw_close(&rs->base);
			return r;
		}
		*out = &rs->base;
		return 0;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
		r = cqwb__fail(-errno, "socketpair");
		raw_close(&rs->base);
		return r;
	}
	pid = cqwb__fork(0);
	if (pid == 0) {
		close(sv[0]);
		if (p->scn == CQWB_RTT) {
			echo_peer(rs, sv[1]);
		}
		stream_peer(rs, sv[1]);
	}
	close(sv[1]);
	rs->fd = sv[0];
	if (pid < 0 || cqwb__add_peer(&rs->base, pid) < 0) {
		r = cqwb__fail(-errno, "fork");
		raw_close(&rs->base);
		return r;
	}
	*out = &rs->base;
	return 0;
}
