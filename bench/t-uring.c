/*
 * io_uring: the fan-out parent one would write by hand with liburing, the
 * bar cqwire's loop is measured against. It talks to the same raw workers
 * (cqwb__raw_worker) over the same framing as every other C parent, so
 * only the parent differs:
 *
 *   - one ring, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN
 *     (falling back to COOP_TASKRUN, then to no flags, where the kernel
 *     refuses; cqwb__uring_note() says which), the worker sockets
 *     registered as fixed files, the ring fd registered;
 *   - one multishot receive per worker socket on a provided buffer ring
 *     (mmap'd here, io_uring_register_buf_ring); each completion's frames
 *     are parsed out of its buffer and the buffer goes back to the ring at
 *     once; a frame that spans buffers is stitched in a per-worker buffer;
 *   - the next requests of a worker as one IORING_OP_SEND of all of them
 *     (MSG_WAITALL, IOSQE_CQE_SKIP_SUCCESS: only a failure completes);
 *   - exactly one io_uring_submit_and_wait() per loop iteration, which
 *     submits the sends (and any re-armed receive) of the last one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sess.h"

static char note[96] = "no ring set up";

const char *
cqwb__uring_note(void)
{
	return note;
}

#ifndef CQWB_HAVE_LIBURING

const char *
cqwb__uring_unavailable(const struct cqwb_transport *t)
{
	(void)t;
	return "built without liburing (install liburing-dev and rebuild)";
}

int
cqwb__uring_open(struct cqwb_session **out, const struct cqwb_transport *t,
		 const struct cqwb_params *p)
{
	(void)out;
	(void)t;
	(void)p;
	return cqwb__fail(-ENOTSUP, "io_uring");
}

#else

#include <liburing.h>

#define BGID 0
/* user_data: the worker index, and what completed. */
#define UD_RECV 0x100000000ull
#define UD_SEND 0x200000000ull

struct uw {
	uint8_t *in; /* a frame's start, kept until the rest arrives */
	size_t inlen, incap;
	uint64_t *ts; /* send times of the requests in flight (a ring) */
	unsigned head, tail;
	int owed;	/* requests to send (responses parsed) */
	int dirty;	/* on the list of workers owed requests */
	int armed;	/* the multishot receive is live */
	size_t sending; /* bytes of the send in flight (tracked sends) */
};

struct uring_sess {
	struct cqwb_session base;
	struct io_uring ring;
	int ring_ok;
	int n, k;
	size_t fsz; /* one frame: header + payload */
	int *fds;
	struct uw *w;
	int *dirty; /* workers with requests owed, this iteration */
	int ndirty;
	uint8_t *reqs; /* k request frames back to back */
	struct io_uring_buf_ring *br;
	size_t br_len;
	uint8_t *bufs;
	unsigned nbufs, bufsz;
	unsigned sqe_flags; /* IOSQE_FIXED_FILE where registered */
	int skip;	    /* sends never wait: IOSQE_CQE_SKIP_SUCCESS */
};

static unsigned
pow2_at_least(size_t v)
{
	unsigned p = 1;

	while (p < v && p < (1u << 30)) {
		p <<= 1;
	}
	return p;
}

/*
 * The ring with the best setup flags this kernel takes; note says which
 * (and that it fell back).
 */
static int
ring_init(struct io_uring *ring, unsigned entries, unsigned cq_entries)
{
	static const struct {
		unsigned flags;
		const char *name;
	} tries[] = {
		{ IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		  "SINGLE_ISSUER|DEFER_TASKRUN" },
		{ IORING_SETUP_COOP_TASKRUN, "COOP_TASKRUN" },
		{ 0, "no setup flags" },
	};
	struct io_uring_params p;
	size_t i;
	int r = -EINVAL, first = 0;

	for (i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
		memset(&p, 0, sizeof(p));
		p.flags = tries[i].flags | IORING_SETUP_CQSIZE;
		p.cq_entries = cq_entries;
		r = io_uring_queue_init_params(entries, ring, &p);
		if (r == 0) {
			if (i == 0) {
				snprintf(note, sizeof(note), "%s",
					 tries[i].name);
			} else {
				snprintf(note, sizeof(note),
					 "%s (fallback: the kernel refused "
					 "DEFER_TASKRUN: %s)",
					 tries[i].name, strerror(-first));
			}
			return 0;
		}
		if (i == 0) {
			first = r;
		}
		if (r != -EINVAL) {
			break;
		}
	}
	snprintf(note, sizeof(note), "io_uring_queue_init: %s", strerror(-r));
	return r;
}

/* The provided buffer ring: nbufs buffers of bufsz bytes, all given. */
static int
bufs_init(struct io_uring *ring, struct io_uring_buf_ring **brp, size_t *br_len,
	  uint8_t **bufs, unsigned nbufs, unsigned bufsz)
{
	struct io_uring_buf_reg reg;
	struct io_uring_buf_ring *br;
	unsigned i;
	int r;

	*br_len = nbufs * sizeof(struct io_uring_buf);
	br = mmap(NULL, *br_len, PROT_READ | PROT_WRITE,
		  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (br == MAP_FAILED) {
		return -errno;
	}
	*bufs = malloc((size_t)nbufs * bufsz);
	if (*bufs == NULL) {
		munmap(br, *br_len);
		return -ENOMEM;
	}
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (unsigned long)(uintptr_t)br;
	reg.ring_entries = nbufs;
	reg.bgid = BGID;
	r = io_uring_register_buf_ring(ring, &reg, 0);
	if (r < 0) {
		free(*bufs);
		*bufs = NULL;
		munmap(br, *br_len);
		return r;
	}
	io_uring_buf_ring_init(br);
	for (i = 0; i < nbufs; i++) {
		io_uring_buf_ring_add(br, *bufs + (size_t)i * bufsz, bufsz,
				      (unsigned short)i,
				      io_uring_buf_ring_mask(nbufs), (int)i);
	}
	io_uring_buf_ring_advance(br, (int)nbufs);
	*brp = br;
	return 0;
}

static struct io_uring_sqe *
get_sqe(struct io_uring *ring)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	if (sqe == NULL) {
		/* The SQ is sized not to fill up; if it does, submit. */
		io_uring_submit(ring);
		sqe = io_uring_get_sqe(ring);
	}
	return sqe;
}

static void
prep_recv(struct io_uring_sqe *sqe, int fd, unsigned sqe_flags)
{
	io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT | sqe_flags;
	sqe->buf_group = BGID;
}

/*
 * Can the hand-written parent run here? A real multishot receive on a
 * provided buffer ring over a socket pair, once.
 */
const char *
cqwb__uring_unavailable(const struct cqwb_transport *t)
{
	static char why[160];
	static int checked;
	struct io_uring_buf_ring *br = NULL;
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe;
	struct io_uring ring;
	uint8_t *bufs = NULL;
	size_t br_len = 0;
	int sv[2] = { -1, -1 }, r;

	(void)t;
	if (checked) {
		return why[0] ? why : NULL;
	}
	checked = 1;
	r = ring_init(&ring, 8, 16);
	if (r < 0) {
		snprintf(why, sizeof(why), "%s", note);
		return why;
	}
	r = bufs_init(&ring, &br, &br_len, &bufs, 8, 64);
	if (r < 0) {
		snprintf(why, sizeof(why),
			 "no provided buffer rings (io_uring_register_buf_ring:"
			 " %s)",
			 strerror(-r));
		goto out;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 ||
	    write(sv[1], "x", 1) != 1) {
		snprintf(why, sizeof(why), "socketpair: %s", strerror(errno));
		goto out;
	}
	sqe = io_uring_get_sqe(&ring);
	prep_recv(sqe, sv[0], 0);
	r = io_uring_submit_and_wait(&ring, 1);
	if (r >= 0) {
		r = io_uring_peek_cqe(&ring, &cqe);
	}
	if (r < 0) {
		snprintf(why, sizeof(why), "io_uring_submit_and_wait: %s",
			 strerror(-r));
	} else if (cqe->res != 1 || !(cqe->flags & IORING_CQE_F_MORE)) {
		snprintf(why, sizeof(why),
			 "no multishot receive (a probe completed with %d, "
			 "flags 0x%x)",
			 cqe->res, cqe->flags);
	}
out:
	io_uring_queue_exit(&ring);
	if (br != NULL) {
		munmap(br, br_len);
	}
	free(bufs);
	if (sv[0] >= 0) {
		close(sv[0]);
		close(sv[1]);
	}
	return why[0] ? why : NULL;
}

static int
arm(struct uring_sess *us, int i)
{
	struct io_uring_sqe *sqe = get_sqe(&us->ring);

	if (sqe == NULL) {
		return cqwb__fail(-EBUSY, "io_uring: no SQE");
	}
	prep_recv(sqe, us->sqe_flags ? i : us->fds[i], us->sqe_flags);
	io_uring_sqe_set_data64(sqe, UD_RECV | (unsigned)i);
	us->w[i].armed = 1;
	return 0;
}

/* Queue one send of m requests to worker i (submitted by the next wait). */
static int
send_reqs(struct uring_sess *us, int i, int m, uint64_t now)
{
	struct uw *w = &us->w[i];
	struct io_uring_sqe *sqe = get_sqe(&us->ring);
	int j;

	if (sqe == NULL) {
		return cqwb__fail(-EBUSY, "io_uring: no SQE");
	}
	for (j = 0; j < m; j++) {
		w->ts[w->tail++ % (unsigned)us->k] = now;
	}
	/*
	 * The k frames never change, so the buffer outlives the send.
	 * MSG_WAITALL: the kernel finishes a partial send itself, so one
	 * completes whole or fails.
	 */
	io_uring_prep_send(sqe, us->sqe_flags ? i : us->fds[i], us->reqs,
			   (size_t)m * us->fsz, MSG_WAITALL | MSG_NOSIGNAL);
	sqe->flags |= us->sqe_flags;
	if (us->skip) {
		sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	} else {
		w->sending = (size_t)m * us->fsz;
	}
	io_uring_sqe_set_data64(sqe, UD_SEND | (unsigned)i);
	return 0;
}

/* Room for a frame of want bytes in w->in. */
static int
reserve(struct uw *w, size_t want)
{
	uint8_t *n;

	if (want <= w->incap) {
		return 0;
	}
	n = realloc(w->in, want);
	if (n == NULL) {
		return -ENOMEM;
	}
	w->in = n;
	w->incap = want;
	return 0;
}

/* A whole response: its latency, and one request fewer in flight. */
static void
got_one(struct uring_sess *us, struct uw *w, struct cqwb_hist *lat,
	uint64_t now)
{
	if (lat != NULL) {
		cqwb_hist_record(lat, now - w->ts[w->head % (unsigned)us->k]);
	}
	w->head++;
}

/*
 * The frames in p (len bytes) from worker w: whole ones are taken where
 * they lie; a frame that goes on in the next buffer is stitched in w->in.
 * Returns the number of whole frames, or -ENOMEM.
 */
static int
parse(struct uring_sess *us, struct uw *w, const uint8_t *p, size_t len,
      struct cqwb_hist *lat, uint64_t now)
{
	size_t pos = 0, total, take;
	int m = 0;

	if (w->inlen > 0) {
		while (w->inlen < 4 && pos < len) {
			w->in[w->inlen++] = p[pos++];
		}
		if (w->inlen < 4) {
			return 0;
		}
		total = 4 + (size_t)cqwb__get_hdr(w->in);
		if (reserve(w, total) < 0) {
			return -ENOMEM;
		}
		take =
		    total - w->inlen < len - pos ? total - w->inlen : len - pos;
		memcpy(w->in + w->inlen, p + pos, take);
		w->inlen += take;
		pos += take;
		if (w->inlen < total) {
			return 0;
		}
		w->inlen = 0;
		got_one(us, w, lat, now);
		m++;
	}
	while (len - pos >= 4 && len - pos - 4 >= cqwb__get_hdr(p + pos)) {
		pos += 4 + (size_t)cqwb__get_hdr(p + pos);
		got_one(us, w, lat, now);
		m++;
	}
	if (pos < len) {
		total = len - pos >= 4 ? 4 + (size_t)cqwb__get_hdr(p + pos) : 4;
		if (reserve(w, total) < 0) {
			return -ENOMEM;
		}
		memcpy(w->in, p + pos, len - pos);
		w->inlen = len - pos;
	}
	return m;
}

static int
fanout_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	    struct cqwb_hist *lat, struct cqwb_step *out)
{
	struct uring_sess *us = (struct uring_sess *)s;
	int mask = io_uring_buf_ring_mask(us->nbufs);
	uint64_t start = cqwb_now_ns(), now = start, done = 0;
	struct io_uring_cqe *cqe;
	unsigned head, seen, bufs;
	int r, i, m, rearm;

	while (done < max_ops && now - start < max_ns) {
		r = io_uring_submit_and_wait(&us->ring, 1);
		if (r < 0) {
			if (r == -EINTR) {
				continue;
			}
			return cqwb__fail(r, "io_uring_submit_and_wait");
		}
		now = cqwb_now_ns();
		seen = bufs = 0;
		rearm = 0;
		io_uring_for_each_cqe(&us->ring, head, cqe)
		{
			uint64_t ud = io_uring_cqe_get_data64(cqe);
			struct uw *w;
			unsigned bid;

			seen++;
			i = (int)(ud & 0xffffffffu);
			w = &us->w[i];
			if (ud & UD_SEND) {
				/* Skipped sends complete only on failure. */
				if (us->skip || cqe->res < 0 ||
				    (size_t)cqe->res != w->sending) {
					return cqwb__fail(
					    cqe->res < 0 ? cqe->res : -EIO,
					    "io_uring send");
				}
				w->sending = 0;
				if (w->owed > 0 && !w->dirty) {
					w->dirty = 1;
					us->dirty[us->ndirty++] = i;
				}
				continue;
			}
			if (!(cqe->flags & IORING_CQE_F_MORE)) {
				w->armed = 0;
				rearm = 1;
			}
			if (cqe->res == -ENOBUFS) {
				continue; /* re-armed below */
			}
			if (cqe->res <= 0) {
				return cqwb__fail(cqe->res ? cqe->res : -EPIPE,
						  "io_uring receive");
			}
			bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
			m = parse(us, w, us->bufs + (size_t)bid * us->bufsz,
				  (size_t)cqe->res, lat, now);
			/* The buffer goes back at once. */
			io_uring_buf_ring_add(
			    us->br, us->bufs + (size_t)bid * us->bufsz,
			    us->bufsz, (unsigned short)bid, mask, (int)bufs);
			bufs++;
			if (m < 0) {
				return cqwb__fail(m, "io_uring parse");
			}
			if (m > 0 && !w->dirty) {
				w->dirty = 1;
				us->dirty[us->ndirty++] = i;
			}
			w->owed += m;
			done += (uint64_t)m;
		}
		io_uring_buf_ring_advance(us->br, (int)bufs);
		io_uring_cq_advance(&us->ring, seen);
		/*
		 * One send per worker of everything it is owed; one send at
		 * a time per worker (two could interleave their bytes), so a
		 * worker with a tracked send in flight waits for it.
		 */
		for (m = 0; m < us->ndirty; m++) {
			struct uw *w = &us->w[us->dirty[m]];

			w->dirty = 0;
			if (w->sending > 0) {
				continue;
			}
			r = send_reqs(us, us->dirty[m], w->owed, now);
			w->owed = 0;
			if (r < 0) {
				return r;
			}
		}
		us->ndirty = 0;
		/*
		 * A multishot receive that ended (no buffer left: -ENOBUFS,
		 * or the CQ overflowed): arm it again.
		 */
		if (rearm) {
			for (i = 0; i < us->n; i++) {
				if (!us->w[i].armed && (r = arm(us, i)) < 0) {
					return r;
				}
			}
		}
	}
	out->ops = done;
	out->ns = now - start;
	return 0;
}

static int
uring_close(struct cqwb_session *s)
{
	struct uring_sess *us = (struct uring_sess *)s;
	int i, r;

	if (us->ring_ok) {
		io_uring_queue_exit(&us->ring);
	}
	for (i = 0; us->fds != NULL && i < us->n; i++) {
		if (us->fds[i] >= 0) {
			close(us->fds[i]);
		}
	}
	r = cqwb__reap_peers(s, 10000);
	for (i = 0; us->w != NULL && i < us->n; i++) {
		free(us->w[i].in);
		free(us->w[i].ts);
	}
	if (us->br != NULL) {
		munmap(us->br, us->br_len);
	}
	free(us->bufs);
	free(us->w);
	free(us->fds);
	free(us->dirty);
	free(us->reqs);
	cqwb__sess_free(s);
	return r;
}

static const struct cqwb_session_ops uring_ops = { fanout_step, uring_close };

static int
uring_setup(struct uring_sess *us)
{
	struct io_uring_probe *probe;
	size_t burst = (size_t)us->k * us->fsz;
	socklen_t optlen = sizeof(int);
	unsigned sq, i;
	int r, sndbuf = 0;

	/*
	 * Buffers: one holds a worker's whole answer (k frames); about four
	 * per worker, so that the kernel rarely runs out between two reaps
	 * (when it does, that receive ends with -ENOBUFS and is re-armed),
	 * and few enough that the ring's buffers stay in cache.
	 */
	us->bufsz = pow2_at_least(burst < 512 ? 512 : burst);
	if (us->bufsz > 65536) {
		us->bufsz = 65536;
	}
	us->nbufs = pow2_at_least((size_t)us->n * 4);
	if (us->nbufs < 64) {
		us->nbufs = 64;
	}
	if (us->nbufs > 32768) {
		us->nbufs = 32768;
	}
	/* Sends and re-arms of one iteration: two SQEs per worker. */
	sq = pow2_at_least((size_t)us->n * 2 + 8);
	/* Completions: a receive per buffer at most, and the sends' errors. */
	r = ring_init(&us->ring, sq,
		      pow2_at_least((size_t)us->nbufs * 2 + (size_t)sq));
	if (r < 0) {
		return cqwb__fail(r, "io_uring: %s", note);
	}
	us->ring_ok = 1;
	io_uring_register_ring_fd(&us->ring); /* an optimisation only */
	if (io_uring_register_files(&us->ring, us->fds, (unsigned)us->n) == 0) {
		us->sqe_flags = IOSQE_FIXED_FILE;
	}
	/*
	 * At most k requests are in flight to a worker. When they fit a
	 * socket buffer many times over (an skb costs about 1 KiB besides
	 * its data), a send never waits, so no two sends to a worker are
	 * ever in flight and a successful one need not complete. Larger
	 * ones are tracked.
	 */
	if ((us->ring.features & IORING_FEAT_CQE_SKIP) &&
	    getsockopt(us->fds[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, &optlen) ==
		0 &&
	    (size_t)us->k * (us->fsz + 1024) <= (size_t)sndbuf / 4) {
		us->skip = 1;
	}
	probe = io_uring_get_probe_ring(&us->ring);
	if (probe == NULL ||
	    !io_uring_opcode_supported(probe, IORING_OP_SEND)) {
		io_uring_free_probe(probe);
		return cqwb__fail(-ENOTSUP, "io_uring: no IORING_OP_SEND");
	}
	io_uring_free_probe(probe);
	r = bufs_init(&us->ring, &us->br, &us->br_len, &us->bufs, us->nbufs,
		      us->bufsz);
	if (r < 0) {
		return cqwb__fail(r, "io_uring_register_buf_ring");
	}
	for (i = 0; i < (unsigned)us->n; i++) {
		r = arm(us, (int)i);
		if (r == 0) {
			r = send_reqs(us, (int)i, us->k, cqwb_now_ns());
		}
		if (r < 0) {
			return r;
		}
	}
	r = io_uring_submit(&us->ring);
	return r < 0 ? cqwb__fail(r, "io_uring_submit") : 0;
}

int
cqwb__uring_open(struct cqwb_session **out, const struct cqwb_transport *t,
		 const struct cqwb_params *p)
{
	struct uring_sess *us = cqwb__sess_new(sizeof(*us), &uring_ops, t, p);
	int i, r;

	if (us == NULL) {
		return cqwb__fail(-ENOMEM, "session");
	}
	us->n = p->workers;
	us->k = p->inflight;
	us->fsz = 4 + p->size;
	us->w = calloc((size_t)us->n, sizeof(*us->w));
	us->fds = malloc(sizeof(*us->fds) * (size_t)us->n);
	us->dirty = calloc((size_t)us->n, sizeof(*us->dirty));
	us->reqs = calloc((size_t)us->k, us->fsz);
	if (us->w == NULL || us->fds == NULL || us->dirty == NULL ||
	    us->reqs == NULL) {
		uring_close(&us->base);
		return cqwb__fail(-ENOMEM, "session");
	}
	for (i = 0; i < us->n; i++) {
		us->fds[i] = -1;
	}
	for (i = 0; i < us->k; i++) {
		cqwb__put_hdr(us->reqs + (size_t)i * us->fsz,
			      (uint32_t)p->size);
	}
	for (i = 0; i < us->n; i++) {
		us->w[i].incap = us->fsz < 4096 ? 4096 : us->fsz;
		us->w[i].in = malloc(us->w[i].incap);
		us->w[i].ts = calloc((size_t)us->k, sizeof(*us->w[i].ts));
		if (us->w[i].in == NULL || us->w[i].ts == NULL) {
			uring_close(&us->base);
			return cqwb__fail(-ENOMEM, "session");
		}
	}
	/* Workers first: they do not inherit the ring. */
	r = cqwb__spawn_workers(&us->base, us->fds, us->n);
	if (r < 0) {
		/* It closed the sockets and reaped the workers. */
		for (i = 0; i < us->n; i++) {
			us->fds[i] = -1;
		}
		us->base.npeers = 0;
	} else {
		r = uring_setup(us);
	}
	if (r < 0) {
		uring_close(&us->base);
		return r;
	}
	*out = &us->base;
	return 0;
}

#endif
