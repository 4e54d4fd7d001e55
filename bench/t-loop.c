/*
 * cqwire's asynchronous API on a loop with a forced backend
 * (cqwire-uring, cqwire-poll): ops submitted, flushed and reaped.
 *
 *   rtt     parent: submit a SEND and a RECV, reap both; the peer echoes
 *           with its own loop
 *   stream  per-message: one SEND submitted and reaped at a time, one
 *           RECV at a time on the receiver; batch: a window of SENDs
 *           (one gather per flush) and as many RECVs queued
 *   fanout  K RECVs queued per worker; each response resubmits its RECV
 *           and sends the next request; the workers are the raw workers
 *
 * Over pipes (CQWB_V_PIPE, rtt and stream) each side has a read-only
 * connection on one pipe and a write-only one on the other: RECVs go to
 * the first, SENDs to the second.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cqwire.h>

#include "sess.h"

#define REAP_MAX 512
#define ECHO_SLOTS 4

struct fo_worker {
	cqw_conn *c;
	struct cqw_op *recv; /* k */
	struct cqw_op *send; /* 2k */
	struct cqw_op **free_send;
	int nfree;
	int owed; /* requests waiting for a free send op */
	uint64_t *ts;
	unsigned head, tail;
};

struct loop_sess {
	struct cqwb_session base;
	cqw_loop *loop;
	cqw_conn *c;   /* SENDs (and RECVs, on a socket pair) */
	cqw_conn *cin; /* pipes: RECVs */
	size_t size;
	uint8_t *buf;
	uint8_t *rx;
	struct cqw_op *ops; /* window */
	size_t window;
	struct cqw_op *done[REAP_MAX];
	/* fanout */
	int n, k;
	struct fo_worker *w;
	int sent; /* SENDs submitted since the last reap */
};

static int
new_loop(cqw_loop **loop, const struct cqwb_transport *t)
{
	struct cqw_loop_opts o = { .backend = (t->arg & CQWB_V_URING)
						  ? CQW_BACKEND_URING
						  : CQW_BACKEND_POLL };

	return cqw_loop_new(loop, &o);
}

const char *
cqwb__loop_unavailable(const struct cqwb_transport *t)
{
	static char why[2][96];
	static int checked[2];
	int u = (t->arg & CQWB_V_URING) != 0, r;
	cqw_loop *loop;

	/* Once per backend: making a ring is not free. */
	if (!checked[u]) {
		checked[u] = 1;
		r = new_loop(&loop, t);
		if (r < 0) {
			snprintf(why[u], sizeof(why[u]),
				 "cannot make a %s loop: %s",
				 u ? "uring" : "poll", cqw_strerror(r));
		} else {
			cqw_loop_free(loop);
		}
	}
	return why[u][0] != '\0' ? why[u] : NULL;
}

static int
wrap_as(cqw_conn **c, int fd, const struct cqwb_transport *t, unsigned flags)
{
	return cqw_conn_from_fd(
	    c, fd, flags | ((t->arg & CQWB_V_EXCL) ? CQW_EXCLUSIVE : 0));
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

static void
set_op(struct cqw_op *op, int kind, cqw_conn *c, void *buf, size_t len)
{
	op->kind = kind;
	op->conn = c;
	op->buf = buf;
	op->len = len;
}

/* ------------------------------------------------------------------
 * Peers (each builds its own loop after the fork)
 */

static void __attribute__((noreturn))
echo_peer(struct loop_sess *ls, cqw_conn *c, cqw_conn *in)
{
	struct cqw_op rop, sop[ECHO_SLOTS], *done[8];
	int busy[ECHO_SLOTS] = { 0 }, slot = 0, i, n, j;
	uint8_t *bufs[ECHO_SLOTS];

	for (i = 0; i < ECHO_SLOTS; i++) {
		bufs[i] = malloc(ls->size);
		if (bufs[i] == NULL) {
			_exit(1);
		}
	}
	memset(&rop, 0, sizeof(rop));
	memset(sop, 0, sizeof(sop));
	set_op(&rop, CQW_OP_RECV, in, bufs[slot], ls->size);
	if (cqw_submit(ls->loop, &rop) < 0) {
		_exit(1);
	}
	for (;;) {
		n = cqw_reap(ls->loop, done, 8, -1);
		if (n < 0) {
			_exit(1);
		}
		for (i = 0; i < n; i++) {
			if (done[i] != &rop) {
				busy[done[i] - sop] = 0;
				if (done[i]->result < 0) {
					cqwb__peer_end(done[i]->result);
				}
				continue;
			}
			if (rop.result < 0) {
				cqwb__peer_end(rop.result);
			}
			set_op(&sop[slot], CQW_OP_SEND, c, bufs[slot],
			       (size_t)rop.result);
			busy[slot] = 1;
			if (cqw_submit(ls->loop, &sop[slot]) < 0) {
				_exit(1);
			}
			/* The next receive lands in a buffer no send owns. */
			for (j = 1; j <= ECHO_SLOTS && busy[slot]; j++) {
				slot = (slot + 1) % ECHO_SLOTS;
			}
			if (busy[slot]) {
				_exit(2);
			}
			set_op(&rop, CQW_OP_RECV, in, bufs[slot], ls->size);
			if (cqw_submit(ls->loop, &rop) < 0) {
				_exit(1);
			}
		}
	}
}

/* Count messages; a 0-length one asks for the count (8 bytes). */
static void __attribute__((noreturn))
stream_peer(struct loop_sess *ls, cqw_conn *c, cqw_conn *in, size_t nrecv)
{
	struct cqw_op *rops = calloc(nrecv, sizeof(*rops)), ack[2], *op;
	int ack_busy[2] = { 0, 0 }, a = 0, i, n;
	uint64_t count = 0, sent_count[2];
	size_t j;

	if (rops == NULL) {
		_exit(1);
	}
	memset(ack, 0, sizeof(ack));
	for (j = 0; j < nrecv; j++) {
		set_op(&rops[j], CQW_OP_RECV, in, ls->rx, ls->size);
		if (cqw_submit(ls->loop, &rops[j]) < 0) {
			_exit(1);
		}
	}
	for (;;) {
		n = cqw_reap(ls->loop, ls->done, REAP_MAX, -1);
		if (n < 0) {
			_exit(1);
		}
		for (i = 0; i < n; i++) {
			op = ls->done[i];
			if (op == &ack[0] || op == &ack[1]) {
				ack_busy[op - ack] = 0;
				if (op->result < 0) {
					cqwb__peer_end(op->result);
				}
				continue;
			}
			if (op->result < 0) {
				cqwb__peer_end(op->result);
			}
			if (op->result > 0) {
				count++;
			} else {
				/* The marker: acknowledge with the count. */
				a = ack_busy[a] ? !a : a;
				if (ack_busy[a]) {
					_exit(2);
				}
				sent_count[a] = count;
				set_op(&ack[a], CQW_OP_SEND, c, &sent_count[a],
				       sizeof(count));
				ack_busy[a] = 1;
				if (cqw_submit(ls->loop, &ack[a]) < 0) {
					_exit(1);
				}
			}
			if (cqw_submit(ls->loop, op) < 0) {
				_exit(1);
			}
		}
	}
}

/* ------------------------------------------------------------------
 * Parent side
 */

/*
 * Reap until every op in want[] has completed, waiting for all that are
 * left at once (cqw_reap_min: one system call on io_uring).
 */
static int
reap_all(struct loop_sess *ls, struct cqw_op **want, int nwant)
{
	int left = nwant, i, j, n;

	while (left > 0) {
		n = cqw_reap_min(ls->loop, ls->done, left, REAP_MAX, -1);
		if (n < 0) {
			return cqwb__fail(-EIO, "cqw_reap: %s",
					  cqw_strerror(n));
		}
		for (i = 0; i < n; i++) {
			if (ls->done[i]->result < 0) {
				return cqwb__fail(
				    -EIO, "op: %s",
				    cqw_strerror((int)ls->done[i]->result));
			}
			for (j = 0; j < nwant; j++) {
				if (want[j] == ls->done[i]) {
					left--;
				}
			}
		}
	}
	return 0;
}

static int
rtt_once(struct cqwb_session *s)
{
	struct loop_sess *ls = (struct loop_sess *)s;
	struct cqw_op *sop = &ls->ops[0], *rop = &ls->ops[1];
	struct cqw_op *want[2] = { sop, rop };
	int r;

	set_op(sop, CQW_OP_SEND, ls->c, ls->buf, ls->size);
	set_op(rop, CQW_OP_RECV, ls->cin, ls->rx, ls->size);
	if (cqw_submit(ls->loop, sop) < 0 || cqw_submit(ls->loop, rop) < 0) {
		return cqwb__fail(-EIO, "cqw_submit");
	}
	r = reap_all(ls, want, 2);
	return r < 0 ? r : 0;
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
	struct loop_sess *ls = (struct loop_sess *)s;
	uint64_t start = cqwb_now_ns(), sent = 0, completed = 0, count;
	struct cqw_op mark, ack, *want[2] = { &mark, &ack };
	int stop = 0, i, n, r;
	size_t j;

	(void)lat;
	memset(&mark, 0, sizeof(mark));
	memset(&ack, 0, sizeof(ack));
	/* Fill the window, then refill as sends complete. */
	for (j = 0; j < ls->window && sent < max_ops; j++, sent++) {
		set_op(&ls->ops[j], CQW_OP_SEND, ls->c, ls->buf, ls->size);
		if (cqw_submit(ls->loop, &ls->ops[j]) < 0) {
			return cqwb__fail(-EIO, "cqw_submit");
		}
	}
	while (completed < sent) {
		n = cqw_reap(ls->loop, ls->done, REAP_MAX, -1);
		if (n < 0) {
			return cqwb__fail(-EIO, "cqw_reap: %s",
					  cqw_strerror(n));
		}
		if (!stop && cqwb_now_ns() - start >= max_ns) {
			stop = 1;
		}
		for (i = 0; i < n; i++) {
			if (ls->done[i]->result < 0) {
				return cqwb__fail(
				    -EIO, "send: %s",
				    cqw_strerror((int)ls->done[i]->result));
			}
			completed++;
			if (stop || sent >= max_ops) {
				continue;
			}
			if (cqw_submit(ls->loop, ls->done[i]) < 0) {
				return cqwb__fail(-EIO, "cqw_submit");
			}
			sent++;
		}
	}
	set_op(&mark, CQW_OP_SEND, ls->c, ls->buf, 0);
	set_op(&ack, CQW_OP_RECV, ls->cin, &count, sizeof(count));
	if (cqw_submit(ls->loop, &mark) < 0 || cqw_submit(ls->loop, &ack) < 0) {
		return cqwb__fail(-EIO, "cqw_submit");
	}
	r = reap_all(ls, want, 2);
	out->ops = sent;
	out->ns = cqwb_now_ns() - start;
	return r;
}

/* Record a request's send time and send it (or owe it to a free op). */
static int
fo_send(struct loop_sess *ls, struct fo_worker *w, uint64_t now)
{
	struct cqw_op *op;

	if (now != 0) {
		w->ts[w->tail++ % (unsigned)ls->k] = now;
	}
	if (w->nfree == 0) {
		w->owed++;
		return 0;
	}
	op = w->free_send[--w->nfree];
	set_op(op, CQW_OP_SEND, w->c, ls->buf, ls->size);
	op->user_data = w;
	ls->sent++;
	return cqw_submit(ls->loop, op);
}

static int
fanout_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	    struct cqwb_hist *lat, struct cqwb_step *out)
{
	struct loop_sess *ls = (struct loop_sess *)s;
	uint64_t start = cqwb_now_ns(), now = start, done = 0;
	int i, n, r, min;

	while (done < max_ops && now - start < max_ns) {
		/*
		 * The sends just submitted and at least one response: what
		 * a parent waits for (on io_uring the kernel counts them,
		 * so that the sends' completions do not end the sleep).
		 */
		min = ls->sent + 1 < REAP_MAX ? ls->sent + 1 : REAP_MAX;
		ls->sent = 0;
		n = cqw_reap_min(ls->loop, ls->done, min, REAP_MAX, -1);
		if (n < 0) {
			return cqwb__fail(-EIO, "cqw_reap: %s",
					  cqw_strerror(n));
		}
		now = cqwb_now_ns();
		for (i = 0; i < n; i++) {
			struct cqw_op *op = ls->done[i];
			struct fo_worker *w = op->user_data;

			if (op->result < 0) {
				return cqwb__fail(
				    -EIO, "fanout op: %s",
				    cqw_strerror((int)op->result));
			}
			if (op->kind == CQW_OP_SEND) {
				w->free_send[w->nfree++] = op;
				if (w->owed > 0) {
					w->owed--;
					r = fo_send(ls, w, 0);
					if (r < 0) {
						return cqwb__fail(-EIO,
								  "submit");
					}
				}
				continue;
			}
			if (lat != NULL) {
				cqwb_hist_record(
				    lat,
				    now - w->ts[w->head % (unsigned)ls->k]);
			}
			w->head++;
			done++;
			if (cqw_submit(ls->loop, op) < 0 ||
			    fo_send(ls, w, now) < 0) {
				return cqwb__fail(-EIO, "fanout submit");
			}
		}
	}
	out->ops = done;
	out->ns = now - start;
	return 0;
}

static int
loop_close(struct cqwb_session *s)
{
	struct loop_sess *ls = (struct loop_sess *)s;
	int i, r;

	if (ls->cin != ls->c) {
		cqw_conn_free(ls->cin);
	}
	cqw_conn_free(ls->c);
	for (i = 0; ls->w != NULL && i < ls->n; i++) {
		cqw_conn_free(ls->w[i].c);
	}
	/* Closing cancelled what was in flight: reap it all. */
	if (ls->loop != NULL) {
		while (cqw_reap(ls->loop, ls->done, REAP_MAX, 0) > 0) {
		}
		cqw_loop_free(ls->loop);
	}
	r = cqwb__reap_peers(s, 10000);
	for (i = 0; ls->w != NULL && i < ls->n; i++) {
		free(ls->w[i].recv);
		free(ls->w[i].send);
		free(ls->w[i].free_send);
		free(ls->w[i].ts);
	}
	free(ls->w);
	free(ls->ops);
	free(ls->buf);
	free(ls->rx);
	cqwb__sess_free(s);
	return r;
}

static const struct cqwb_session_ops rtt_ops = { rtt_step, loop_close };
static const struct cqwb_session_ops stream_ops = { stream_step, loop_close };
static const struct cqwb_session_ops fanout_ops = { fanout_step, loop_close };

static int
fanout_open(struct loop_sess *ls, const struct cqwb_transport *t)
{
	int i, j, r, *fds;
	size_t k;

	ls->n = ls->base.p.workers;
	ls->k = ls->base.p.inflight;
	k = (size_t)ls->k;
	ls->w = calloc((size_t)ls->n, sizeof(*ls->w));
	fds = calloc((size_t)ls->n, sizeof(*fds));
	if (ls->w == NULL || fds == NULL) {
		free(fds);
		return cqwb__fail(-ENOMEM, "fanout");
	}
	r = cqwb__spawn_workers(&ls->base, fds, ls->n);
	if (r < 0) {
		free(fds);
		return r;
	}
	r = new_loop(&ls->loop, t);
	for (i = 0; i < ls->n; i++) {
		struct fo_worker *w = &ls->w[i];

		if (r == 0) {
			r = wrap(&w->c, fds[i], t);
		} else {
			close(fds[i]);
		}
		w->recv = calloc(k, sizeof(*w->recv));
		w->send = calloc(2 * k, sizeof(*w->send));
		w->free_send = calloc(2 * k, sizeof(*w->free_send));
		w->ts = calloc(k, sizeof(*w->ts));
		if (w->recv == NULL || w->send == NULL ||
		    w->free_send == NULL || w->ts == NULL) {
			r = CQW_ENOMEM;
		}
		for (j = 0; r == 0 && j < 2 * ls->k; j++) {
			w->free_send[w->nfree++] = &w->send[j];
		}
	}
	free(fds);
	if (r < 0) {
		return cqwb__fail(-EIO, "fanout setup: %s", cqw_strerror(r));
	}
	for (i = 0; i < ls->n; i++) {
		struct fo_worker *w = &ls->w[i];

		for (j = 0; j < ls->k; j++) {
			set_op(&w->recv[j], CQW_OP_RECV, w->c, ls->rx,
			       ls->size);
			w->recv[j].user_data = w;
			if (cqw_submit(ls->loop, &w->recv[j]) < 0 ||
			    fo_send(ls, w, cqwb_now_ns()) < 0) {
				return cqwb__fail(-EIO, "fanout submit");
			}
		}
	}
	r = cqw_flush(ls->loop);
	return r < 0 ? cqwb__fail(-EIO, "cqw_flush: %s", cqw_strerror(r)) : 0;
}

int
cqwb__loop_open(struct cqwb_session **out, const struct cqwb_transport *t,
		const struct cqwb_params *p)
{
	const struct cqwb_session_ops *ops = p->scn == CQWB_RTT ? &rtt_ops
					     : p->scn == CQWB_STREAM
						 ? &stream_ops
						 : &fanout_ops;
	struct loop_sess *ls = cqwb__sess_new(sizeof(*ls), ops, t, p);
	struct cqwb__chan ch[2];
	int r;
	size_t nrecv;
	pid_t pid;

	if (ls == NULL) {
		return cqwb__fail(-ENOMEM, "session");
	}
	ls->size = p->size;
	ls->window = (t->arg & CQWB_V_BATCH) ? cqwb__batch(p->size) : 1;
	ls->buf = calloc(1, p->size);
	ls->rx = malloc(p->size);
	ls->ops = calloc(ls->window < 2 ? 2 : ls->window, sizeof(*ls->ops));
	if (ls->buf == NULL || ls->rx == NULL || ls->ops == NULL) {
		loop_close(&ls->base);
		return cqwb__fail(-ENOMEM, "session");
	}
	if (p->scn == CQWB_FANOUT) {
		r = fanout_open(ls, t);
		if (r < 0) {
			loop_close(&ls->base);
			return r;
		}
		*out = &ls->base;
		return 0;
	}
	r = cqwb__chan_open(t, ch);
	if (r < 0) {
		loop_close(&ls->base);
		return r;
	}
	pid = cqwb__fork(0);
	if (pid == 0) {
		cqw_conn *c, *in;

		cqwb__chan_close(&ch[0]);
		if (new_loop(&ls->loop, t) < 0 ||
		    wrap_chan(&c, &in, &ch[1], t) < 0) {
			_exit(1);
		}
		if (p->scn == CQWB_RTT) {
			echo_peer(ls, c, in);
		}
		nrecv = ls->window;
		stream_peer(ls, c, in, nrecv);
	}
	cqwb__chan_close(&ch[1]);
	if (pid < 0 || cqwb__add_peer(&ls->base, pid) < 0) {
		cqwb__chan_close(&ch[0]);
		loop_close(&ls->base);
		return cqwb__fail(-ECHILD, "fork");
	}
	r = new_loop(&ls->loop, t);
	if (r == 0) {
		r = wrap_chan(&ls->c, &ls->cin, &ch[0], t);
	} else {
		cqwb__chan_close(&ch[0]);
	}
	if (r < 0) {
		loop_close(&ls->base);
		return cqwb__fail(-EIO, "loop: %s", cqw_strerror(r));
	}
	*out = &ls->base;
	return 0;
}
