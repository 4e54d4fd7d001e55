/*
 * cqwire's synchronous API (no loop; it does not depend on the backend):
 *
 *   rtt     cqw_send_bytes() + cqw_recv_bytes_into() on both sides,
 *           optionally with cqw_conn_set_spin() (spin-then-sleep)
 *   stream  per-message: cqw_send_bytes() / cqw_recv_bytes_into();
 *           batch: cqw_send_batch() / cqw_recv_batch()
 *   fanout  a cqw_wait() parent: for each ready worker, cqw_recv_batch()
 *           of what is there and one cqw_send_batch() of new requests
 *
 * Receive mode (frame-exact or CQW_EXCLUSIVE) applies to every connection
 * that cqwire drives; fan-out workers are the shared raw workers.
 * Over pipes (CQWB_V_PIPE) each side has a read-only connection on one
 * pipe and a write-only one on the other, as two Pipe(duplex=False).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cqwire.h>

#include "sess.h"

#define SPIN_US 50

struct cqw_sess {
	struct cqwb_session base;
	cqw_conn *c;   /* sends (and receives, on a socket pair) */
	cqw_conn *cin; /* pipes: receives */
	unsigned flags;
	size_t size;
	uint8_t *buf;
	uint8_t *rx;
	struct cqw_msg *msgs;
	size_t batch;
	/* fanout */
	int n, k;
	cqw_conn **conns;
	struct cqw_wait_item *items;
	uint64_t *ts; /* n rings of k send times */
	unsigned *head, *tail;
};

static int
wrap_as(cqw_conn **c, int fd, const struct cqwb_transport *t, unsigned flags)
{
	int r;

	if (t->arg & CQWB_V_EXCL) {
		flags |= CQW_EXCLUSIVE;
	}
	r = cqw_conn_from_fd(c, fd, flags);
	if (r == 0 && (t->arg & CQWB_V_SPIN)) {
		cqw_conn_set_spin(*c, SPIN_US);
	}
	return r;
}

static int
wrap(cqw_conn **c, int fd, const struct cqwb_transport *t)
{
	return wrap_as(c, fd, t, CQW_DUPLEX);
}

/*
 * One side's connections: *out sends, *in receives (the same connection
 * on a socket pair). The connections own the descriptors, also on failure.
 */
static int
wrap_chan(cqw_conn **out, cqw_conn **in, struct cqwb__chan *ch,
	  const struct cqwb_transport *t)
{
	int r;

	if (ch->rd == ch->wr) {
		r = wrap(out, ch->rd, t);
		*in = r == 0 ? *out : NULL;
		return r;
	}
	r = wrap_as(in, ch->rd, t, CQW_READABLE);
	if (r < 0) {
		close(ch->wr);
		return r;
	}
	return wrap_as(out, ch->wr, t, CQW_WRITABLE);
}

static void __attribute__((noreturn))
echo_peer(struct cqw_sess *cs, cqw_conn *c, cqw_conn *in)
{
	int64_t n;

	for (;;) {
		n = cqw_recv_bytes_into(in, cs->buf, cs->size, 0, NULL);
		if (n < 0) {
			cqwb__peer_end(n);
		}
		n = cqw_send_bytes(c, cs->buf, (size_t)n);
		if (n < 0) {
			cqwb__peer_end(n);
		}
	}
}

/* Count messages; a 0-length one asks for the count (8 bytes). */
static void __attribute__((noreturn))
stream_peer(struct cqw_sess *cs, cqw_conn *c, cqw_conn *in, int batch)
{
	uint64_t count = 0;
	size_t i;
	int64_t n;
	int got;

	for (;;) {
		if (batch) {
			got = cqw_recv_batch(in, cs->msgs, cs->batch, -1);
			if (got < 0) {
				cqwb__peer_end(got);
			}
			for (i = 0; i < (size_t)got; i++) {
				if (cs->msgs[i].len > 0) {
					count++;
				} else {
					n = cqw_send_bytes(c, &count,
							   sizeof(count));
					if (n < 0) {
						cqwb__peer_end(n);
					}
				}
			}
			continue;
		}
		n = cqw_recv_bytes_into(in, cs->rx, cs->size, 0, NULL);
		if (n < 0) {
			cqwb__peer_end(n);
		}
		if (n > 0) {
			count++;
		} else {
			n = cqw_send_bytes(c, &count, sizeof(count));
			if (n < 0) {
				cqwb__peer_end(n);
			}
		}
	}
}

static int
rtt_once(struct cqwb_session *s)
{
	struct cqw_sess *cs = (struct cqw_sess *)s;
	int64_t r = cqw_send_bytes(cs->c, cs->buf, cs->size);

	if (r == 0) {
		r = cqw_recv_bytes_into(cs->cin, cs->rx, cs->size, 0, NULL);
	}
	if (r < 0) {
		return cqwb__fail(-EIO, "cqwire rtt: %s", cqw_strerror((int)r));
	}
	return 0;
}

static int
rtt_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	 struct cqwb_hist *lat, struct cqwb_step *out)
{
	return cqwb__rtt_loop(s, max_ops, max_ns, lat, out, rtt_once);
}

static int
stream_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	    struct cqwb_hist *lat, struct cqwb_step *out)
{
	struct cqw_sess *cs = (struct cqw_sess *)s;
	uint64_t start = cqwb_now_ns(), sent = 0, count;
	size_t m, i;
	int64_t r = 0;

	(void)lat;
	while (sent < max_ops) {
		m = max_ops - sent < cs->batch ? (size_t)(max_ops - sent)
					       : cs->batch;
		if (cs->base.t->arg & CQWB_V_BATCH) {
			r = cqw_send_batch(cs->c, cs->msgs, m);
		} else {
			for (i = 0; i < m && r == 0; i++) {
				r = cqw_send_bytes(cs->c, cs->buf, cs->size);
			}
		}
		if (r < 0) {
			return cqwb__fail(-EIO, "cqwire stream: %s",
					  cqw_strerror((int)r));
		}
		sent += m;
		if (cqwb_now_ns() - start >= max_ns) {
			break;
		}
	}
	r = cqw_send_bytes(cs->c, cs->buf, 0);
	if (r == 0) {
		r = cqw_recv_bytes_into(cs->cin, &count, sizeof(count), 0,
					NULL);
	}
	if (r < 0) {
		return cqwb__fail(-EIO, "cqwire stream ack: %s",
				  cqw_strerror((int)r));
	}
	out->ops = sent;
	out->ns = cqwb_now_ns() - start;
	return 0;
}

static int
fanout_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	    struct cqwb_hist *lat, struct cqwb_step *out)
{
	struct cqw_sess *cs = (struct cqw_sess *)s;
	uint64_t start = cqwb_now_ns(), now = start, done = 0;
	unsigned k = (unsigned)cs->k;
	int i, j, r, got;

	while (done < max_ops && now - start < max_ns) {
		for (i = 0; i < cs->n; i++) {
			cs->items[i].conn = cs->conns[i];
		}
		r = cqw_wait(cs->items, (size_t)cs->n, -1);
		if (r < 0) {
			return cqwb__fail(-EIO, "cqw_wait: %s",
					  cqw_strerror(r));
		}
		now = cqwb_now_ns();
		for (i = 0; i < cs->n; i++) {
			uint64_t *ts = cs->ts + (size_t)i * k;

			if (!cs->items[i].ready) {
				continue;
			}
			got = cqw_recv_batch(cs->conns[i], cs->msgs, k, 0);
			if (got < 0) {
				return cqwb__fail(-EIO, "fanout receive: %s",
						  cqw_strerror(got));
			}
			for (j = 0; j < got; j++) {
				if (lat != NULL) {
					cqwb_hist_record(
					    lat, now - ts[cs->head[i]++ % k]);
				} else {
					cs->head[i]++;
				}
				ts[cs->tail[i]++ % k] = now;
			}
			r = cqw_send_batch(cs->conns[i], cs->msgs + k,
					   (size_t)got);
			if (r < 0) {
				return cqwb__fail(-EIO, "fanout send: %s",
						  cqw_strerror(r));
			}
			done += (uint64_t)got;
		}
	}
	out->ops = done;
	out->ns = now - start;
	return 0;
}

static int
cqw_close(struct cqwb_session *s)
{
	struct cqw_sess *cs = (struct cqw_sess *)s;
	int i, r;

	if (cs->cin != cs->c) {
		cqw_conn_free(cs->cin);
	}
	cqw_conn_free(cs->c);
	for (i = 0; cs->conns != NULL && i < cs->n; i++) {
		cqw_conn_free(cs->conns[i]);
	}
	r = cqwb__reap_peers(s, 10000);
	free(cs->conns);
	free(cs->items);
	free(cs->ts);
	free(cs->head);
	free(cs->tail);
	free(cs->msgs);
	free(cs->buf);
	free(cs->rx);
	cqwb__sess_free(s);
	return r;
}

static const struct cqwb_session_ops rtt_ops = { rtt_step, cqw_close };
static const struct cqwb_session_ops stream_ops = { stream_step, cqw_close };
static const struct cqwb_session_ops fanout_ops = { fanout_step, cqw_close };

static int
fanout_open(struct cqw_sess *cs, const struct cqwb_transport *t)
{
	int i, r, *fds;
	size_t k;

	cs->n = cs->base.p.workers;
	cs->k = cs->base.p.inflight;
	k = (size_t)cs->k;
	cs->conns = calloc((size_t)cs->n, sizeof(*cs->conns));
	cs->items = calloc((size_t)cs->n, sizeof(*cs->items));
	cs->ts = calloc((size_t)cs->n * k, sizeof(*cs->ts));
	cs->head = calloc((size_t)cs->n, sizeof(*cs->head));
	cs->tail = calloc((size_t)cs->n, sizeof(*cs->tail));
	/* k receive slots, then k requests to send. */
	cs->msgs = calloc(2 * k, sizeof(*cs->msgs));
	fds = calloc((size_t)cs->n, sizeof(*fds));
	if (cs->conns == NULL || cs->items == NULL || cs->ts == NULL ||
	    cs->head == NULL || cs->tail == NULL || cs->msgs == NULL ||
	    fds == NULL) {
		free(fds);
		return cqwb__fail(-ENOMEM, "fanout");
	}
	for (i = 0; i < cs->k; i++) {
		cs->msgs[i] = (struct cqw_msg){ cs->rx, cs->size, 0 };
		cs->msgs[k + (size_t)i] =
		    (struct cqw_msg){ cs->buf, 0, cs->size };
	}
	r = cqwb__spawn_workers(&cs->base, fds, cs->n);
	if (r < 0) {
		free(fds);
		return r;
	}
	for (i = 0; i < cs->n; i++) {
		r = wrap(&cs->conns[i], fds[i], t);
		if (r < 0) {
			for (; i < cs->n; i++) {
				close(fds[i]);
			}
			free(fds);
			return cqwb__fail(-EIO, "cqw_conn_from_fd: %s",
					  cqw_strerror(r));
		}
	}
	free(fds);
	for (i = 0; i < cs->n; i++) {
		uint64_t now = cqwb_now_ns();
		unsigned j;

		for (j = 0; j < k; j++) {
			cs->ts[(size_t)i * k + cs->tail[i]++ % k] = now;
		}
		r = cqw_send_batch(cs->conns[i], cs->msgs + k, k);
		if (r < 0) {
			return cqwb__fail(-EIO, "fanout first requests: %s",
					  cqw_strerror(r));
		}
	}
	return 0;
}

int
cqwb__cqw_open(struct cqwb_session **out, const struct cqwb_transport *t,
	       const struct cqwb_params *p)
{
	const struct cqwb_session_ops *ops = p->scn == CQWB_RTT ? &rtt_ops
					     : p->scn == CQWB_STREAM
						 ? &stream_ops
						 : &fanout_ops;
	struct cqw_sess *cs = cqwb__sess_new(sizeof(*cs), ops, t, p);
	struct cqwb__chan ch[2];
	size_t i;
	int r;
	pid_t pid;

	if (cs == NULL) {
		return cqwb__fail(-ENOMEM, "session");
	}
	cs->size = p->size;
	cs->batch = cqwb__batch(p->size);
	cs->buf = calloc(1, p->size);
	cs->rx = malloc(p->size);
	if (cs->buf == NULL || cs->rx == NULL) {
		cqw_close(&cs->base);
		return cqwb__fail(-ENOMEM, "session");
	}
	if (p->scn == CQWB_FANOUT) {
		r = fanout_open(cs, t);
		if (r < 0) {
			cqw_close(&cs->base);
			return r;
		}
		*out = &cs->base;
		return 0;
	}
	cs->msgs = calloc(cs->batch, sizeof(*cs->msgs));
	if (cs->msgs == NULL) {
		cqw_close(&cs->base);
		return cqwb__fail(-ENOMEM, "session");
	}
	r = cqwb__chan_open(t, ch);
	if (r < 0) {
		cqw_close(&cs->base);
		return r;
	}
	pid = cqwb__fork(0);
	if (pid == 0) {
		cqw_conn *c, *in;

		cqwb__chan_close(&ch[0]);
		if (wrap_chan(&c, &in, &ch[1], t) < 0) {
			_exit(1);
		}
		/* The receiver's batch slots all land in one buffer. */
		for (i = 0; i < cs->batch; i++) {
			cs->msgs[i] = (struct cqw_msg){ cs->rx, cs->size, 0 };
		}
		if (p->scn == CQWB_RTT) {
			echo_peer(cs, c, in);
		}
		stream_peer(cs, c, in, (t->arg & CQWB_V_BATCH) != 0);
	}
	cqwb__chan_close(&ch[1]);
	if (pid < 0 || cqwb__add_peer(&cs->base, pid) < 0) {
		cqwb__chan_close(&ch[0]);
		cqw_close(&cs->base);
		return cqwb__fail(-ECHILD, "fork");
	}
	r = wrap_chan(&cs->c, &cs->cin, &ch[0], t);
	if (r < 0) {
		cqw_close(&cs->base);
		return cqwb__fail(-EIO, "cqw_conn_from_fd: %s",
				  cqw_strerror(r));
	}
	for (i = 0; i < cs->batch; i++) {
		cs->msgs[i] = (struct cqw_msg){ cs->buf, 0, cs->size };
	}
	*out = &cs->base;
	return 0;
}
