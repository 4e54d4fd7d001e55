/*
 * Servers on the loop: CQW_OP_ACCEPT and CQW_OP_CONNECT.
 *
 * Each op owns one struct cqw__hs from submit to completion: the accept
 * or connect io, then the new connection and the handshake run as a state
 * machine over two ops of the library's own (one frame sent, one
 * received, through the connection's framer like any other op), with a
 * deadline on the loop's timer list. Nothing blocks and nothing waits
 * for anything but its own peer: a thousand silent peers are a thousand
 * entries on the timer list.
 *
 *   QUEUED --flush--> IO (accept / connect io) --peer--> TALK --> done
 *     |                ^  |                               |
 *     +--> WAITING ----+  +-- error, deadline, cancel ----+--> done
 *          (EMFILE back-off; a full AF_UNIX backlog)
 *
 * The handshake is WIRE.md §4 with the server speaking first; its steps
 * are a table per role. A receive is always submitted together with the
 * send before it (the peer's answer may come before our send completes),
 * and a frame over 256 bytes is refused before it is read (the framer's
 * CQW_ETOOSHORT leaves it in the kernel). When the handshake fails, the
 * deadline passes or the op is cancelled, the connection's ops are
 * cancelled, and the op completes once they have (the kernel is done
 * with hs's buffers); only then are the connection and hs freed.
 *
 * fork(): in the child every op here ends with CQW_EFORK whatever its
 * phase (cqw__srv_fork): the handshake in progress is the parent's, which
 * goes on with it; the child closes only its own copies of the handles.
 */
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "backend.h"
#include "loop.h"
#include "platform.h"
#include "server.h"
#include "transport.h"

#define CONNECT_DEFAULT_TIMEOUT_MS 20000
#define EMFILE_BACKOFF_MS 100 /* no accept for this long after EMFILE */
#define BACKLOG_RETRY_MS 5    /* a full AF_UNIX backlog is asked again */

enum phase {
	HS_QUEUED,  /* submitted; the next flush starts it */
	HS_WAITING, /* on the timer list until it may try again */
	HS_IO,	    /* the accept or connect io is in flight */
	HS_TALK,    /* connected; the handshake's frames are going */
};

/* Handshake steps (WIRE.md §4). */
enum step {
	SEND_CHALLENGE,
	RECV_RESPONSE, /* then verify it */
	SEND_VERDICT,  /* #WELCOME# or #FAILURE# */
	RECV_CHALLENGE,
	SEND_RESPONSE,
	RECV_WELCOME,
};
static const unsigned char server_steps[] = {
	SEND_CHALLENGE, RECV_RESPONSE, SEND_VERDICT,
	RECV_CHALLENGE, SEND_RESPONSE, RECV_WELCOME,
};
static const unsigned char client_steps[] = {
	RECV_CHALLENGE, SEND_RESPONSE, RECV_WELCOME,
	SEND_CHALLENGE, RECV_RESPONSE, SEND_VERDICT,
};
#define NSTEPS 6

struct cqw__hs {
	struct cqw_op *op; /* the caller's */
	cqw_loop *loop;
	cqw_listener *l; /* ACCEPT; NULL for CONNECT */
	enum phase phase;
	int err;	  /* the first error, or 0 */
	int abort;	  /* why it is being stopped (a CQW_E*), or 0 */
	int io_busy;	  /* io is with the backend */
	int io_attached;  /* io's handle was attached for it */
	int have_handle;  /* CONNECT: io.handle is open and ours */
	int64_t deadline; /* this phase's (-1: none) */
	int64_t connect_deadline;
	int64_t accept_deadline;       /* the op's wait for a peer (-1: none) */
	int accept_started;	       /* accept_deadline is set */
	struct cqw__hs *prev, *next;   /* loop->hs */
	struct cqw__hs *tprev, *tnext; /* loop->timers, when timed */
	int timed;
	struct cqw__hs *next_queued; /* loop->hs_queued */
	struct cqw__hs *next_ready;  /* loop->hs_ready */
	int ready;
	struct cqw__io io;

	/* The handshake. */
	cqw_conn *conn;
	const unsigned char *steps;
	int step;	  /* the next to take */
	int rstep;	  /* what the receive in flight is for */
	int verdict;	  /* RECV_RESPONSE's: 0 or CQW_EAUTH */
	int sbusy, rbusy; /* sop, rop submitted and not yet back */
	struct cqw_op sop, rop;
	struct cqw_auth auth; /* the key: the listener's, or keybuf */
	uint8_t *keybuf;      /* CONNECT: a copy of the caller's key */
	size_t chal_len;
	size_t out_len;
	uint8_t chal[64]; /* the challenge we deliver */
	uint8_t out[64];  /* our response to theirs */
	uint8_t in[CQW__AUTH_MAX_FRAME];
	union {
		uint64_t align;
		uint8_t b[CQW__SRV_SCRATCH];
	} scratch;		/* the platform's (platform.h) */
	struct cqw__addr *addr; /* CONNECT (an accept has none to carry) */
};

static void finish(struct cqw__hs *hs);
static void start(struct cqw__hs *hs);

/* --- lists ---------------------------------------------------------------- */

static void
timer_remove(struct cqw__hs *hs)
{
	cqw_loop *loop = hs->loop;

	if (!hs->timed) {
		return;
	}
	if (hs->tprev != NULL) {
		hs->tprev->tnext = hs->tnext;
	} else {
		loop->timers = hs->tnext;
	}
	if (hs->tnext != NULL) {
		hs->tnext->tprev = hs->tprev;
	} else {
		loop->timers_tail = hs->tprev;
	}
	hs->tprev = hs->tnext = NULL;
	hs->timed = 0;
}

/*
 * Put hs on the timer list at deadline (-1: take it off). Searched from
 * the tail: deadlines made with one timeout arrive in order, so a
 * thousand handshakes cost a thousand O(1) inserts.
 */
static void
timer_set(struct cqw__hs *hs, int64_t deadline)
{
	cqw_loop *loop = hs->loop;
	struct cqw__hs *it;

	timer_remove(hs);
	hs->deadline = deadline;
	if (deadline < 0) {
		return;
	}
	for (it = loop->timers_tail; it != NULL && it->deadline > deadline;
	     it = it->tprev) {
	}
	hs->tprev = it;
	hs->tnext = it != NULL ? it->tnext : loop->timers;
	if (hs->tnext != NULL) {
		hs->tnext->tprev = hs;
	} else {
		loop->timers_tail = hs;
	}
	if (it != NULL) {
		it->tnext = hs;
	} else {
		loop->timers = hs;
	}
	hs->timed = 1;
}

static int64_t
after_ms(int ms)
{
	return cqw__now_ms() + ms;
}

/* --- submit --------------------------------------------------------------- */

static int
copy_auth(struct cqw__hs *hs, const struct cqw_auth *auth)
{
	int r = cqw__check_auth(auth);

	if (r < 0 || auth == NULL || auth->key == NULL) {
		return r; /* no key: no handshake */
	}
	hs->keybuf = malloc(auth->keylen ? auth->keylen : 1);
	if (hs->keybuf == NULL) {
		return CQW_ENOMEM;
	}
	memcpy(hs->keybuf, auth->key, auth->keylen);
	hs->auth = *auth;
	hs->auth.key = hs->keybuf;
	return 0;
}

static void
hs_free(struct cqw__hs *hs)
{
	if (hs->keybuf != NULL) {
		cqw__wipe(hs->keybuf, hs->auth.keylen);
		free(hs->keybuf);
	}
	cqw__wipe(hs->in, sizeof(hs->in));
	free(hs->addr);
	free(hs);
}

int
cqw__srv_submit(cqw_loop *loop, struct cqw_op *op)
{
	struct cqw__hs *hs;
	cqw_listener *l = op->listener;
	int r;

	if (op->kind == CQW_OP_ACCEPT) {
		if (l == NULL) {
			return CQW_EINVAL;
		}
		if (l->closed) {
			return CQW_ECLOSED;
		}
		if (l->loop != NULL && l->loop != loop) {
			return CQW_EBUSY; /* one loop at a time */
		}
	} else if (op->address == NULL) {
		return CQW_EINVAL;
	}
	hs = calloc(1, sizeof(*hs));
	if (hs == NULL) {
		return CQW_ENOMEM;
	}
	hs->op = op;
	hs->loop = loop;
	hs->deadline = -1;
	if (op->kind == CQW_OP_ACCEPT) {
		hs->l = l;
		hs->auth = l->auth; /* the listener's key outlives its ops */
	} else {
		hs->addr = malloc(sizeof(*hs->addr));
		r = hs->addr != NULL ? cqw__addr_parse(hs->addr, op->address)
				     : CQW_ENOMEM;
		if (r == 0) {
			r = copy_auth(hs, op->auth);
		}
		if (r < 0) {
			hs_free(hs);
			return r;
		}
	}
	if (l != NULL) {
		l->loop = loop;
		l->nops++;
	}
	op->conn = NULL;
	op->priv[2] = hs;
	hs->phase = HS_QUEUED;
	hs->next = loop->hs;
	if (loop->hs != NULL) {
		loop->hs->prev = hs;
	}
	loop->hs = hs;
	hs->next_queued = loop->hs_queued;
	loop->hs_queued = hs;
	return 0;
}

/* --- completion ----------------------------------------------------------- */

/* Close what hs holds of a connection not handed up. */
static void
drop_handles(struct cqw__hs *hs)
{
	if (hs->conn != NULL) {
		cqw_conn_free(hs->conn); /* detached: no op of it is left */
		hs->conn = NULL;
	} else if (hs->have_handle) {
		cqw__io_close(hs->io.handle);
	}
	hs->have_handle = 0;
}

static void
finish(struct cqw__hs *hs)
{
	cqw_loop *loop = hs->loop;
	struct cqw_op *op = hs->op;
	cqw_listener *l = hs->l;
	int r = hs->abort ? hs->abort : hs->err;

	timer_remove(hs);
	if (r < 0) {
		drop_handles(hs);
	}
	op->conn = r < 0 ? NULL : hs->conn;
	op->result = r;
	op->priv[2] = NULL;
	CQW__OP_SET_STATE(op, CQW__OPS_DONE);
	cqw__opq_push(&loop->done, op);
	if (hs->prev != NULL) {
		hs->prev->next = hs->next;
	} else {
		loop->hs = hs->next;
	}
	if (hs->next != NULL) {
		hs->next->prev = hs->prev;
	}
	hs_free(hs);
	if (l != NULL && --l->nops == 0) {
		l->loop = NULL;
		if (l->close_pending) {
			cqw__listener_close_now(l);
		}
		if (l->free_pending) {
			cqw__listener_free_now(l);
		}
	}
}

static void
fail(struct cqw__hs *hs, int err)
{
	if (hs->err == 0) {
		hs->err = err;
	}
}

/* --- the handshake -------------------------------------------------------- */

static int
submit_frame(struct cqw__hs *hs, struct cqw_op *op, int kind, void *buf,
	     size_t len)
{
	int r;

	memset(op, 0, sizeof(*op));
	op->kind = kind;
	op->conn = hs->conn;
	op->buf = buf;
	op->len = len;
	op->priv[5] = hs;
	r = cqw__loop_submit_internal(hs->loop, op);
	if (r < 0) {
		fail(hs, r);
	}
	return r;
}

/* Build and send the frame of step st. */
static void
send_step(struct cqw__hs *hs, int st)
{
	uint8_t rnd[CQW__AUTH_MODERN_RANDOM];
	const void *buf;
	size_t len;
	int r;

	switch (st) {
	case SEND_CHALLENGE:
		r = cqw__random(rnd, cqw__auth_random_len(hs->auth.flags));
		if (r == 0) {
			r = cqw__auth_make_challenge(
			    hs->auth.flags, rnd, hs->chal, sizeof(hs->chal));
		}
		if (r < 0) {
			fail(hs, r);
			return;
		}
		hs->chal_len = (size_t)r;
		buf = hs->chal;
		len = hs->chal_len;
		break;
	case SEND_VERDICT:
		buf = hs->verdict ? CQW__AUTH_FAILURE : CQW__AUTH_WELCOME;
		len = strlen(buf);
		break;
	default: /* SEND_RESPONSE */
		buf = hs->out;
		len = hs->out_len;
		break;
	}
	if (submit_frame(hs, &hs->sop, CQW_OP_SEND, (void *)buf, len) == 0) {
		hs->sbusy = 1;
	}
	if (st == SEND_VERDICT && hs->verdict) {
		fail(hs, hs->verdict); /* #FAILURE# goes, then we stop */
	}
}

/* The frame of step st arrived: n bytes in hs->in. */
static void
received(struct cqw__hs *hs, int st, size_t n)
{
	int r;

	switch (st) {
	case RECV_RESPONSE:
		hs->verdict = cqw__auth_verify(hs->auth.key, hs->auth.keylen,
					       hs->auth.flags, hs->chal,
					       hs->chal_len, hs->in, n) < 0
				  ? CQW_EAUTH
				  : 0;
		break;
	case RECV_CHALLENGE:
		r = cqw__auth_answer(hs->auth.key, hs->auth.keylen,
				     hs->auth.flags, hs->in, n, hs->out,
				     sizeof(hs->out));
		if (r < 0) {
			fail(hs, cqw__auth_peer_failed(
				     r)); /* Python answers nothing */
			return;
		}
		hs->out_len = (size_t)r;
		break;
	default: /* RECV_WELCOME */
		r = cqw__auth_check_welcome(hs->in, n);
		if (r < 0) {
			fail(hs, r);
		}
		break;
	}
}

/*
 * Take every step the frames in flight allow: sends as soon as the one
 * before has gone, a receive together with them. Ends hs once there is
 * nothing more to do and nothing in flight.
 */
static void
talk(struct cqw__hs *hs)
{
	int st;

	while (hs->err == 0 && hs->abort == 0 && !hs->rbusy &&
	       hs->step < NSTEPS) {
		st = hs->steps[hs->step];
		if (st == RECV_RESPONSE || st == RECV_CHALLENGE ||
		    st == RECV_WELCOME) {
			if (submit_frame(hs, &hs->rop, CQW_OP_RECV, hs->in,
					 sizeof(hs->in)) == 0) {
				hs->rbusy = 1;
				hs->rstep = st;
			}
		} else {
			if (hs->sbusy) {
				break; /* one frame out at a time */
			}
			send_step(hs, st);
		}
		hs->step++;
	}
	if (hs->sbusy || hs->rbusy) {
		/*
		 * Stopped, or failed with a receive in flight (the peer may
		 * never send): cancel the frames. A send alone may finish
		 * (#FAILURE# goes out, as Python sends it); the deadline
		 * bounds it.
		 */
		if ((hs->abort != 0 || (hs->err != 0 && hs->rbusy)) &&
		    !hs->conn->closing) {
			hs->conn->closing = 1;
			hs->conn->tp->framer->cancel_all(hs->loop, hs->conn);
		}
		return;
	}
	if (hs->err == 0 && hs->abort == 0 && hs->step < NSTEPS) {
		fail(hs,
		     CQW_EPROTO); /* cannot be: a step is always in flight */
	}
	finish(hs);
}

/* Connected: wrap the handle and begin the handshake (or finish). */
static void
connected(struct cqw__hs *hs, cqw_fd h, int kind)
{
	cqw_conn *c;
	int r;

	hs->have_handle = 0;
	r = cqw__conn_new(&c, h, kind, CQW_DUPLEX);
	if (r < 0) {
		cqw__io_close(h);
		fail(hs, r);
		finish(hs);
		return;
	}
	/* The backend bound the handle already (IOCP): it stays this loop's. */
	if (hs->io_attached && hs->io.handle == h &&
	    hs->loop->ops->detach != NULL) {
		c->bound_to = hs->loop->id;
	}
	hs->conn = c;
	if (hs->auth.key == NULL) {
		finish(hs);
		return;
	}
	hs->phase = HS_TALK;
	hs->steps = hs->l != NULL ? server_steps : client_steps;
	hs->step = 0;
	timer_set(hs, cqw__auth_deadline(&hs->auth));
	talk(hs);
}

void
cqw__srv_ready(cqw_loop *loop, struct cqw_op *op)
{
	struct cqw__hs *hs = CQW__OP_HS(op);

	CQW__OP_SET_STATE(op, CQW__OPS_IDLE); /* never reaped */
	if (!hs->ready) {
		hs->ready = 1;
		hs->next_ready = loop->hs_ready;
		loop->hs_ready = hs;
	}
}

void
cqw__srv_run(cqw_loop *loop)
{
	struct cqw__hs *hs;

	while ((hs = loop->hs_ready) != NULL) {
		loop->hs_ready = hs->next_ready;
		hs->ready = 0;
		if (hs->sbusy && CQW__OP_STATE(&hs->sop) == CQW__OPS_IDLE) {
			hs->sbusy = 0;
			if (hs->sop.result < 0) {
				fail(hs, (int)hs->sop.result);
			}
		}
		if (hs->rbusy && CQW__OP_STATE(&hs->rop) == CQW__OPS_IDLE) {
			hs->rbusy = 0;
			if (hs->rop.result < 0) {
				fail(hs, cqw__auth_peer_failed(
					     (int)hs->rop.result));
			} else if (hs->err == 0 && hs->abort == 0) {
				received(hs, hs->rstep, (size_t)hs->rop.result);
			}
		}
		talk(hs);
	}
}

/* --- accept and connect ios ---------------------------------------------- */

static void
start_io(struct cqw__hs *hs, int attach)
{
	cqw_loop *loop = hs->loop;
	int r;

	if (attach && loop->ops->attach != NULL) {
		r = loop->ops->attach(loop, hs->io.handle, hs->io.kind);
		if (r < 0) {
			if (hs->l != NULL) { /* what accept_io made goes */
				cqw__listen_accept_drop(hs->l->ls, &hs->io);
			}
			fail(hs, r);
			finish(hs);
			return;
		}
		hs->io_attached = 1;
		if (hs->l != NULL &&
		    hs->io.handle == cqw__listen_fileno(hs->l->ls)) {
			hs->l->bound_to = loop->id; /* the listener's own */
		}
	}
	hs->phase = HS_IO;
	hs->io.conn = NULL; /* an io of server.c's (loop.c: process_ios) */
	hs->io_busy = 1;
	loop->ops->start(loop, &hs->io);
}

static void
start_accept(struct cqw__hs *hs)
{
	cqw_listener *l = hs->l;
	int r, attach;

	/* The op's own wait for a peer, once: retries do not extend it. */
	if (!hs->accept_started) {
		hs->accept_started = 1;
		hs->accept_deadline =
		    hs->op->timeout_ms > 0 ? after_ms(hs->op->timeout_ms) : -1;
	}
	if (l->retry_at > cqw__now_ms()) {
		hs->phase = HS_WAITING; /* the EMFILE back-off */
		timer_set(hs, hs->accept_deadline >= 0 &&
				      hs->accept_deadline < l->retry_at
				  ? hs->accept_deadline
				  : l->retry_at);
		return;
	}
	r = cqw__listen_accept_io(l->ls, &hs->io, hs->scratch.b);
	if (r < 0) {
		fail(hs, r);
		finish(hs);
		return;
	}
	/* The listener's own handle is attached once per loop. */
	attach = r == 1 || l->bound_to != hs->loop->id;
	timer_set(hs, hs->accept_deadline);
	start_io(hs, attach);
}

/* What cqw__os_connect_begin/again said. */
static void
connect_step(struct cqw__hs *hs, int r)
{
	int kind;

	if (r == CQW_EAGAIN) {
		hs->have_handle = 1;
		hs->phase = HS_WAITING;
		timer_set(hs, hs->connect_deadline >= 0 &&
				      hs->connect_deadline <
					  after_ms(BACKLOG_RETRY_MS)
				  ? hs->connect_deadline
				  : after_ms(BACKLOG_RETRY_MS));
		return;
	}
	if (r < 0) {
		if (hs->have_handle) {
			cqw__io_close(hs->io.handle);
			hs->have_handle = 0;
		}
		fail(hs, r);
		finish(hs);
		return;
	}
	hs->have_handle = 1;
	if (r == 0) {
		timer_set(hs, hs->connect_deadline);
		start_io(hs, 1);
		return;
	}
	r = cqw__os_connect_done(&hs->io, &kind);
	if (r < 0) {
		fail(hs, r);
		finish(hs);
		return;
	}
	connected(hs, hs->io.handle, kind);
}

static void
start_connect(struct cqw__hs *hs)
{
	int t = hs->op->timeout_ms;

	hs->connect_deadline =
	    t < 0 ? -1 : after_ms(t ? t : CONNECT_DEFAULT_TIMEOUT_MS);
	connect_step(hs,
		     cqw__os_connect_begin(hs->addr, &hs->io, hs->scratch.b));
}

static void
start(struct cqw__hs *hs)
{
	if (hs->l != NULL) {
		start_accept(hs);
	} else {
		start_connect(hs);
	}
}

void
cqw__srv_kick(cqw_loop *loop)
{
	struct cqw__hs *hs;

	while ((hs = loop->hs_queued) != NULL) {
		loop->hs_queued = hs->next_queued;
		if (hs->abort) {
			finish(hs); /* cancelled before it began */
		} else {
			start(hs);
		}
	}
}

/* Resource exhaustion at accept: the listener backs off. */
static int
accept_exhausted(int r)
{
	return r == CQW_EMFILE || r == CQW_ENFILE || r == CQW_ENOBUFS ||
	       r == CQW_ENOMEM;
}

static void
accept_done(struct cqw__hs *hs, int64_t result)
{
	cqw_listener *l = hs->l;
	cqw_fd h;
	int r, kind;

	if (result >= 0) {
		r = cqw__listen_accept_done(l->ls, &hs->io, &h, &kind);
		if (r < 0) {
			fail(hs, r);
			finish(hs);
			return;
		}
		if (hs->abort) {
			cqw__io_close(h); /* cancelled meanwhile: not wanted */
			finish(hs);
			return;
		}
		connected(hs, h, kind);
		return;
	}
	cqw__listen_accept_drop(l->ls, &hs->io);
	/* The peer gave up, or another process took it: wait on. */
	if ((result == CQW_EAGAIN || result == CQW_ECONNABORTED) &&
	    !hs->abort) {
		start_accept(hs); /* drop freed the io's handles: anew */
		return;
	}
	if (accept_exhausted((int)result)) {
		l->retry_at = after_ms(EMFILE_BACKOFF_MS);
	}
	fail(hs, (int)result);
	finish(hs);
}

static void
connect_done(struct cqw__hs *hs, int64_t result)
{
	if (hs->abort) {
		finish(hs);
		return;
	}
	if (result == CQW_EAGAIN) {
		start_io(hs, 0); /* woken, but not connected yet: wait on */
		return;
	}
	if (result < 0) {
		fail(hs, (int)result);
		finish(hs);
		return;
	}
	connect_step(hs, 1);
}

void
cqw__srv_io_done(cqw_loop *loop, struct cqw__io *io)
{
	struct cqw__hs *hs =
	    (struct cqw__hs *)((char *)io - offsetof(struct cqw__hs, io));

	(void)loop;
	hs->io_busy = 0;
	if (hs->l != NULL) {
		accept_done(hs, io->result);
	} else {
		connect_done(hs, io->result);
	}
}

/* --- stopping: deadlines, cancels, fork ---------------------------------- */

/* Stop hs for reason; it completes once nothing of it is in flight. */
static void
stop(struct cqw__hs *hs, int reason)
{
	if (hs->abort == 0) {
		hs->abort = reason;
	}
	timer_remove(hs);
	switch (hs->phase) {
	case HS_QUEUED:
		break; /* cqw__srv_kick() finds it aborted */
	case HS_WAITING:
		finish(hs);
		break;
	case HS_IO:
		if (hs->io_busy) {
			hs->loop->ops->cancel(hs->loop, &hs->io);
		}
		break;
	case HS_TALK:
		talk(hs); /* cancels the frames in flight, or finishes */
		break;
	}
}

int
cqw__srv_wait_ms(cqw_loop *loop, int timeout_ms)
{
	int64_t left;

	if (loop->timers == NULL) {
		return timeout_ms;
	}
	left = loop->timers->deadline - cqw__now_ms();
	if (left < 0) {
		left = 0;
	}
	return timeout_ms < 0 || left < timeout_ms ? (int)left : timeout_ms;
}

void
cqw__srv_expire(cqw_loop *loop)
{
	struct cqw__hs *hs;
	int64_t now;

	if (loop->timers == NULL) {
		return;
	}
	now = cqw__now_ms();
	while ((hs = loop->timers) != NULL && hs->deadline <= now) {
		timer_remove(hs);
		if (hs->phase != HS_WAITING) {
			stop(hs, CQW_ETIMEDOUT);
		} else if (hs->l != NULL) {
			if (hs->accept_deadline >= 0 &&
			    hs->accept_deadline <= now) {
				stop(hs, CQW_ETIMEDOUT);
			} else {
				start_accept(hs); /* the back-off is over */
			}
		} else if (hs->connect_deadline >= 0 &&
			   hs->connect_deadline <= now) {
			stop(hs, CQW_ETIMEDOUT);
		} else {
			connect_step(
			    hs, cqw__os_connect_again(&hs->io, hs->scratch.b));
		}
	}
}

int
cqw__srv_cancel(cqw_loop *loop, struct cqw_op *op)
{
	struct cqw__hs *hs = CQW__OP_SRV(op);

	if (hs == NULL || hs->loop != loop) {
		return CQW_EINVAL;
	}
	if (hs->phase == HS_QUEUED) {
		hs->abort = CQW_ECANCELED;
		return 0; /* ends at the next flush, without I/O */
	}
	stop(hs, CQW_ECANCELED);
	return 0;
}

void
cqw__srv_fork(cqw_loop *loop)
{
	struct cqw__hs *hs, *next;

	/*
	 * Mark them all first: a handshake whose frame completed before
	 * the fork must not take its next step in the child.
	 */
	for (hs = loop->hs; hs != NULL; hs = hs->next) {
		hs->abort = CQW_EFORK;
	}
	loop->hs_queued = NULL;
	for (hs = loop->hs; hs != NULL; hs = next) {
		next = hs->next;
		/* ios in flight end through the backend, frames through
		 * their connection's fork_fail. */
		if (hs->phase == HS_QUEUED || hs->phase == HS_WAITING) {
			finish(hs);
		}
	}
}

int
cqw__srv_listener_close(cqw_listener *l)
{
	struct cqw__hs *hs, *next;
	int r = cqw__loop_check_thread(l->loop);

	if (r < 0) {
		return r;
	}
	/* In a forked child the check ended them all (CQW_EFORK). */
	if (l->nops == 0) {
		return 1;
	}
	l->close_pending = 1;
	for (hs = l->loop->hs; hs != NULL; hs = next) {
		next = hs->next;
		if (hs->l == l) {
			if (hs->phase == HS_QUEUED) {
				hs->abort = CQW_ECANCELED;
			} else {
				stop(hs, CQW_ECANCELED);
			}
		}
	}
	return 0;
}
