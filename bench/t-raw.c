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
 *   raw-writev512 stream ceiling: one gather write of 512 frames
 *                 ([header, payload] x 512); the receiver reads 1 MiB at a
 *                 time and walks the headers (a frame may span reads)
 *   raw-contig    stream ceiling: 512 frames copied into one contiguous
 *                 buffer per write() (what coalescing small sends can
 *                 reach); the same 1 MiB receiver
 *   epoll         fanout: an epoll parent, read() into a buffer per worker,
 *                 one write() of all the new requests of a worker
 *
 * raw (rtt, stream) also runs over pipe()s (CQWB_V_PIPE): one write()
 * and two read()s per message as on the socket pair.
 *
 * The raw fan-out worker, which every C fan-out parent talks to, is here
 * too, and cqwb__chan_open(), the socket pair or pipes of every C
 * transport with one peer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cqwire.h"
#include "sess.h"

#define WRITEV_FRAMES 64
/* The ceilings: frames per write, and the receiver's read size. */
#define CEIL_FRAMES 512
#define BULK_READ (1u << 20)

struct fo_worker {
	int fd;
	uint8_t *in; /* responses read and not yet parsed */
	size_t inlen, incap;
	uint64_t *ts; /* send times of the requests in flight (a ring) */
	unsigned head, tail;
};

struct raw_sess {
	struct cqwb_session base;
	int fd;	 /* rtt, stream: what the parent reads */
	int wfd; /* and writes (fd on a socket pair) */
	int variant;
	int pipe; /* CQWB_V_PIPE */
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
	/* stream ceilings */
	uint8_t *contig; /* raw-contig: the frames of one write */
	struct iovec *iov;
	size_t ceil_n;
	uint64_t total; /* messages sent in the session (stream) */
};

static void
set_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/*
 * A whole write: cqwb__write_full() tries send() first, which costs a
 * failed system call per write on a pipe.
 */
static int
put(int fd, int pipe, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	ssize_t r;

	if (!pipe) {
		return cqwb__write_full(fd, buf, n);
	}
	while (n > 0) {
		r = write(fd, p, n);
		if (r >= 0) {
			p += r;
			n -= (size_t)r;
		} else if (errno != EINTR) {
			return -errno;
		}
	}
	return 0;
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

static void __attribute__((noreturn))
echo_peer(struct raw_sess *rs, struct cqwb__chan *ch)
{
	int64_t n;

	for (;;) {
		n = raw_recv(rs, ch->rd, rs->frame + 4, rs->size);
		if (n < 0) {
			cqwb__peer_end(n);
		}
		cqwb__put_hdr(rs->frame, (uint32_t)n);
		n = put(ch->wr, rs->pipe, rs->frame, 4 + (size_t)n);
		if (n < 0) {
			cqwb__peer_end(n);
		}
	}
}

/* Count frames; a 0-length frame asks for the count as an 8-byte ack. */
static void __attribute__((noreturn))
stream_peer(struct raw_sess *rs, struct cqwb__chan *ch)
{
	uint64_t count = 0;
	int64_t n;

	for (;;) {
		n = raw_recv(rs, ch->rd, rs->rx, rs->size);
		if (n < 0) {
			cqwb__peer_end(n);
		}
		if (n > 0) {
			count++;
			continue;
		}
		n = put(ch->wr, rs->pipe, &count, sizeof(count));
		if (n < 0) {
			cqwb__peer_end(n);
		}
	}
}

/*
 * The ceilings' receiver: read() 1 MiB at a time and walk the headers
 * without copying a payload anywhere. A header or a payload may span two
 * reads: want is what is left of the current payload, hdr collects a
 * header cut in two. Frames are counted at their header; the 0-length
 * marker comes after every frame it acknowledges.
 */
static void __attribute__((noreturn)) bulk_peer(struct cqwb__chan *ch)
{
	uint8_t *buf = malloc(BULK_READ), hdr[4];
	uint64_t count = 0, want = 0;
	size_t p, n, k, nh = 0;
	uint32_t len;
	ssize_t r;
	int e;

	if (buf == NULL) {
		_exit(1);
	}
	for (;;) {
		r = read(ch->rd, buf, BULK_READ);
		if (r <= 0) {
			if (r < 0 && errno == EINTR) {
				continue;
			}
			cqwb__peer_end(r == 0 ? -EPIPE : -errno);
		}
		n = (size_t)r;
		p = 0;
		while (p < n) {
			if (want > 0) {
				k = want < n - p ? (size_t)want : n - p;
				want -= k;
				p += k;
				continue;
			}
			if (nh == 0 && n - p >= 4) {
				len = cqwb__get_hdr(buf + p);
				p += 4;
			} else {
				hdr[nh++] = buf[p++];
				if (nh < 4) {
					continue;
				}
				nh = 0;
				len = cqwb__get_hdr(hdr);
			}
			if (len > 0) {
				count++;
				want = len;
				continue;
			}
			e = cqwb__write_full(ch->wr, &count, sizeof(count));
			if (e < 0) {
				cqwb__peer_end(e);
			}
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

/*
 * A fan-out worker on cqwire's synchronous API, as a pool worker written
 * with cqwire is: cqw_recv_bytes_into() then cqw_send_bytes(), one message
 * at a time, on a blocking descriptor (CQWB_V_CQWW; CQWB_V_CQWW_EX:
 * exclusive, else frame-exact).
 */
static void __attribute__((noreturn)) cqw_worker(int fd, unsigned v)
{
	unsigned flags = CQW_READABLE | CQW_WRITABLE;
	size_t cap = CQWB_RBUF_SIZE, need = 0;
	cqw_conn *c = NULL;
	uint8_t *buf;
	int64_t n;
	int r;

	if ((v & CQWB_V_CQWW_EX) != 0) {
		flags |= CQW_EXCLUSIVE;
	}
	buf = malloc(cap);
	if (buf == NULL || cqw_conn_from_fd(&c, fd, flags) != 0) {
		_exit(1);
	}
	for (;;) {
		n = cqw_recv_bytes_into(c, buf, cap, 0, &need);
		if (n == CQW_ETOOSHORT) {
			free(buf);
			cap = need;
			buf = malloc(cap);
			if (buf == NULL) {
				_exit(1);
			}
			continue;
		}
		if (n < 0) {
			_exit(n == CQW_EOF || n == CQW_ECONNRESET ? 0 : 1);
		}
		r = cqw_send_bytes(c, buf, (size_t)n);
		if (r != 0) {
			_exit(r == CQW_EPIPE || r == CQW_ECONNRESET ? 0 : 1);
		}
	}
}

int
cqwb__spawn_workers(struct cqwb_session *s, int *fds, int n)
{
	unsigned v = (unsigned)s->t->arg;
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
			if ((v & CQWB_V_CQWW) != 0) {
				cqw_worker(sv[1], v);
			}
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

	if (put(rs->wfd, rs->pipe, rs->frame, 4 + rs->size) < 0) {
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

/*
 * Send the 0-length marker and wait for the receiver's count, which must
 * be every message sent in the session so far (the ceilings' receiver
 * walks headers across reads: a slip there shows here).
 */
static int
stream_sync(struct raw_sess *rs)
{
	uint8_t hdr[4] = { 0, 0, 0, 0 };
	uint64_t count;
	int r = put(rs->wfd, rs->pipe, hdr, 4);

	if (r == 0) {
		r = cqwb__read_full(rs->fd, &count, sizeof(count));
	}
	if (r < 0) {
		return cqwb__fail(r, "raw stream ack");
	}
	if (count != rs->total) {
		return cqwb__fail(-EPROTO,
				  "raw stream: the receiver counted %llu of "
				  "%llu messages",
				  (unsigned long long)count,
				  (unsigned long long)rs->total);
	}
	return 0;
}

/*
 * raw-contig's write: copy m frames into one buffer, as a library that
 * coalesces small sends would, and write it.
 */
static int
contig_write(struct raw_sess *rs, size_t m)
{
	size_t fsz = 4 + rs->size, i;

	for (i = 0; i < m; i++) {
		cqwb__put_hdr(rs->contig + i * fsz, (uint32_t)rs->size);
		memcpy(rs->contig + i * fsz + 4, rs->frame + 4, rs->size);
	}
	return cqwb__write_full(rs->wfd, rs->contig, m * fsz);
}

static int
stream_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	    struct cqwb_hist *lat, struct cqwb_step *out)
{
	struct raw_sess *rs = (struct raw_sess *)s;
	struct iovec iov[2 * WRITEV_FRAMES];
	uint64_t start = cqwb_now_ns(), sent = 0;
	size_t batch = cqwb__batch(rs->size), i, m;
	int ceil =
	    rs->variant == CQWB_RAW_WRITEV512 || rs->variant == CQWB_RAW_CONTIG;
	int r;

	(void)lat;
	if (ceil) {
		batch = rs->ceil_n;
	} else if (batch > WRITEV_FRAMES) {
		batch = WRITEV_FRAMES;
	}
	while (sent < max_ops) {
		m = max_ops - sent < batch ? (size_t)(max_ops - sent) : batch;
		if (rs->variant == CQWB_RAW_WRITEV ||
		    rs->variant == CQWB_RAW_WRITEV512) {
			struct iovec *v = ceil ? rs->iov : iov;

			for (i = 0; i < m; i++) {
				v[2 * i].iov_base = rs->frame;
				v[2 * i].iov_len = 4;
				v[2 * i + 1].iov_base = rs->frame + 4;
				v[2 * i + 1].iov_len = rs->size;
			}
			r = cqwb__writev_full(rs->wfd, v, (int)(2 * m));
		} else if (rs->variant == CQWB_RAW_CONTIG) {
			r = contig_write(rs, m);
		} else {
			/* One write() per message. */
			for (i = 0, r = 0; i < m && r == 0; i++) {
				r = put(rs->wfd, rs->pipe, rs->frame,
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
	rs->total += sent;
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

	if (rs->wfd >= 0 && rs->wfd != rs->fd) {
		close(rs->wfd);
	}
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
	free(rs->contig);
	free(rs->iov);
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
cqwb__chan_open(const struct cqwb_transport *t, struct cqwb__chan end[2])
{
	int sv[2], back[2];

	if ((t->arg & CQWB_V_PIPE) == 0) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) !=
		    0) {
			return cqwb__fail(-errno, "socketpair");
		}
		end[0] = (struct cqwb__chan){ sv[0], sv[0] };
		end[1] = (struct cqwb__chan){ sv[1], sv[1] };
		return 0;
	}
	/* sv: parent to peer; back: peer to parent. */
	if (pipe2(sv, O_CLOEXEC) != 0) {
		return cqwb__fail(-errno, "pipe");
	}
	if (pipe2(back, O_CLOEXEC) != 0) {
		int e = errno;

		close(sv[0]);
		close(sv[1]);
		return cqwb__fail(-e, "pipe");
	}
	end[0] = (struct cqwb__chan){ back[0], sv[1] };
	end[1] = (struct cqwb__chan){ sv[0], back[1] };
	return 0;
}

void
cqwb__chan_close(struct cqwb__chan *e)
{
	if (e->wr >= 0 && e->wr != e->rd) {
		close(e->wr);
	}
	if (e->rd >= 0) {
		close(e->rd);
	}
	e->rd = e->wr = -1;
}

/* raw-writev512 and raw-contig: frames per write, and their buffers. */
static int
ceil_open(struct raw_sess *rs)
{
	size_t n = CQWB_BATCH_BYTES / (4 + rs->size);

	rs->ceil_n = n < 1 ? 1 : n > CEIL_FRAMES ? CEIL_FRAMES : n;
	if (rs->variant == CQWB_RAW_CONTIG) {
		rs->contig = malloc(rs->ceil_n * (4 + rs->size));
		return rs->contig != NULL ? 0 : -ENOMEM;
	}
	rs->iov = calloc(2 * rs->ceil_n, sizeof(*rs->iov));
	return rs->iov != NULL ? 0 : -ENOMEM;
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
	struct cqwb__chan ch[2];
	int r;
	pid_t pid;

	if (rs == NULL) {
		return cqwb__fail(-ENOMEM, "session");
	}
	rs->fd = -1;
	rs->wfd = -1;
	rs->ep = -1;
	rs->variant = (int)((unsigned)t->arg & ~(CQWB_V_PIPE | CQWB_V_WORKERS));
	rs->pipe = ((unsigned)t->arg & CQWB_V_PIPE) != 0;
	rs->size = p->size;
	rs->frame = calloc(1, 4 + p->size);
	rs->rx = malloc(p->size);
	if (rs->frame == NULL || rs->rx == NULL ||
	    cqwb__rbuf_init(&rs->rb) < 0 ||
	    ((rs->variant == CQWB_RAW_WRITEV512 ||
	      rs->variant == CQWB_RAW_CONTIG) &&
	     ceil_open(rs) < 0)) {
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
	r = cqwb__chan_open(t, ch);
	if (r < 0) {
		raw_close(&rs->base);
		return r;
	}
	pid = cqwb__fork(0);
	if (pid == 0) {
		cqwb__chan_close(&ch[0]);
		if (p->scn == CQWB_RTT) {
			echo_peer(rs, &ch[1]);
		}
		if (rs->iov != NULL || rs->contig != NULL) {
			bulk_peer(&ch[1]);
		}
		stream_peer(rs, &ch[1]);
	}
	cqwb__chan_close(&ch[1]);
	rs->fd = ch[0].rd;
	rs->wfd = ch[0].wr;
	if (pid < 0 || cqwb__add_peer(&rs->base, pid) < 0) {
		r = cqwb__fail(-errno, "fork");
		raw_close(&rs->base);
		return r;
	}
	*out = &rs->base;
	return 0;
}
