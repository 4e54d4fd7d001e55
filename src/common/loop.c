/*
 * The loop: backend selection, op queueing and completion delivery.
 *
 * submit() only queues an op on its connection and puts the connection on
 * the loop's pending list; flush() kicks every pending connection (each
 * starts at most one gather write and one read); completed ios come back
 * from the backend into loop->iodone and are processed here, outside any
 * backend call, which completes ops into loop->done for reap().
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "transport.h"
#include "loop.h"
#include "platform.h"
#include "pool.h"
#include "server.h"

/* Loop ids, for connections a backend keeps bound (cqw_conn.bound_to). */
static atomic_uint_least64_t next_loop_id;

void
cqw__opq_push(struct cqw__opq *q, struct cqw_op *op)
{
	CQW__OP_SET_NEXT(op, NULL);
	if (q->tail != NULL) {
		CQW__OP_SET_NEXT(q->tail, op);
	} else {
		q->head = op;
	}
	q->tail = op;
}

struct cqw_op *
cqw__opq_pop(struct cqw__opq *q)
{
	struct cqw_op *op = q->head;

	if (op != NULL) {
		q->head = CQW__OP_NEXT(op);
		if (q->head == NULL) {
			q->tail = NULL;
		}
	}
	return op;
}

int
cqw__opq_remove(struct cqw__opq *q, struct cqw_op *op)
{
	struct cqw_op *prev = NULL, *it;

	for (it = q->head; it != NULL; prev = it, it = CQW__OP_NEXT(it)) {
		if (it != op) {
			continue;
		}
		if (prev != NULL) {
			CQW__OP_SET_NEXT(prev, CQW__OP_NEXT(it));
		} else {
			q->head = CQW__OP_NEXT(it);
		}
		if (q->tail == it) {
			q->tail = prev;
		}
		return 1;
	}
	return 0;
}

/*
 * c's first op on loop since it was let go: bind its handle to the
 * backend (backend.h), unless the backend kept it bound from before.
 */
static int
attach(cqw_loop *loop, cqw_conn *c)
{
	int r;

	if (c->bound_to != 0 && c->bound_to != loop->id) {
		return CQW_EBUSY; /* bound to another loop's port for good */
	}
	if (loop->ops->attach != NULL && c->bound_to == 0) {
		r = loop->ops->attach(loop, c->fd, c->kind);
		if (r < 0) {
			return r;
		}
	}
	c->loop = loop;
	c->loop_prev = NULL;
	c->loop_next = loop->conns;
	if (loop->conns != NULL) {
		loop->conns->loop_prev = c;
	}
	loop->conns = c;
	return 0;
}

/* Take c off its loop's list, whatever the backend would rather. */
static inline void
unlink_conn(cqw_loop *loop, cqw_conn *c)
{
	if (c->loop_prev != NULL) {
		c->loop_prev->loop_next = c->loop_next;
	} else {
		loop->conns = c->loop_next;
	}
	if (c->loop_next != NULL) {
		c->loop_next->loop_prev = c->loop_prev;
	}
	c->loop_next = c->loop_prev = NULL;
	c->loop = NULL;
}

/*
 * Out of line: cqw__loop_op_done() runs once per op, and a call it may
 * make would cost its fast path a stack frame (measured: 11 instructions
 * an op).
 */
CQW__NOINLINE void
cqw__loop_detach(cqw_conn *c)
{
	cqw_loop *loop = c->loop;

	/* A receive of the framer's own (a multishot) keeps it: quiesce. */
	if (loop == NULL || c->recv_busy) {
		return;
	}
	/*
	 * IOCP keeps a handle bound to its port: c may come back to this
	 * loop only. It is let go all the same, so that it may be closed
	 * from any thread and outlive the loop.
	 */
	if (loop->ops->detach != NULL &&
	    loop->ops->detach(loop, c->fd) == CQW_EBUSY) {
		c->bound_to = loop->id;
	}
	unlink_conn(loop, c);
}

void
cqw__loop_op_done(cqw_loop *loop, struct cqw_op *op, int64_t result)
{
	cqw_conn *c = op->conn;

	op->result = result;
	CQW__OP_SET_STATE(op, CQW__OPS_DONE);
	if (CQW__LIKELY(CQW__OP_HS(op) == NULL)) {
		cqw__opq_push(&loop->done, op);
	} else {
		cqw__srv_ready(loop, op); /* a handshake's frame */
	}
	/*
	 * A connection with nothing left on the loop is let go, so that it
	 * may outlive the loop or move to another one (last: a tail call).
	 */
	if (--c->inflight == 0 && !c->pending) {
		cqw__loop_detach(c);
	}
}

void
cqw__loop_io_complete(cqw_loop *loop, struct cqw__io *io, int64_t result,
		      unsigned flags)
{
	io->result = result;
	io->flags = flags;
	io->queued = 1;
	io->next = NULL;
	if (loop->iodone_tail != NULL) {
		loop->iodone_tail->next = io;
	} else {
		loop->iodone = io;
	}
	loop->iodone_tail = io;
}

/*
 * Completed ios to their owners: a connection's framer, or server.c for
 * an accept or a connect (io->conn NULL); then the handshakes whose
 * frames completed take their next steps (which may complete more).
 */
static void
process_ios(cqw_loop *loop)
{
	struct cqw__io *io;

	do {
		while ((io = loop->iodone) != NULL) {
			loop->iodone = io->next;
			if (loop->iodone == NULL) {
				loop->iodone_tail = NULL;
			}
			io->queued = 0;
			if (io->conn != NULL) {
				io->conn->tp->framer->io_done(loop, io);
			} else {
				cqw__srv_io_done(loop, io);
			}
		}
		if (loop->hs_ready != NULL) {
			cqw__srv_run(loop);
		}
	} while (loop->iodone != NULL);
}

/*
 * Start what was submitted: accepts and connects, then every pending
 * connection's ops (one gather write, one read each); until handshakes
 * that took a step have nothing more to start. Then, with push, the
 * backend's push (a reap leaves it to the backend's wait, which pushes
 * and sleeps in one system call).
 */
static int
start_all(cqw_loop *loop, int push)
{
	cqw_conn *c;

	if (loop->timers != NULL) {
		cqw__srv_expire(loop);
	}
	do {
		if (loop->hs_queued != NULL) {
			cqw__srv_kick(loop);
		}
		while ((c = loop->pending) != NULL) {
			loop->pending = c->next_pending;
			c->pending = 0;
			c->tp->framer->kick(loop, c);
			if (c->inflight == 0) {
				cqw__loop_detach(c);
			}
		}
		process_ios(loop);
	} while (loop->pending != NULL || loop->hs_queued != NULL);
	return push ? loop->ops->flush(loop) : 0;
}

static const struct cqw__backend_ops *
backend_by_kind(enum cqw_backend kind)
{
	switch (kind) {
#ifdef CQW_HAVE_POLL
	case CQW_BACKEND_POLL:
		return &cqw__poll_backend;
#endif
#ifdef CQW_HAVE_URING
	case CQW_BACKEND_URING:
		return &cqw__uring_backend;
#endif
#ifdef CQW_HAVE_IOCP
	case CQW_BACKEND_IOCP:
		return &cqw__iocp_backend;
#endif
	default:
		return NULL;
	}
}

/* CQW_BACKEND from the environment: a kind, AUTO, or -1 if unknown. */
static int
backend_from_env(void)
{
	static const struct {
		const char *name;
		enum cqw_backend kind;
	} names[] = {
		{ "auto", CQW_BACKEND_AUTO },
		{ "poll", CQW_BACKEND_POLL },
		{ "uring", CQW_BACKEND_URING },
		{ "iocp", CQW_BACKEND_IOCP },
	};
	const char *s = getenv("CQW_BACKEND");
	size_t i;

	if (s == NULL || *s == '\0') {
		return CQW_BACKEND_AUTO;
	}
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(s, names[i].name) == 0) {
			return (int)names[i].kind;
		}
	}
	return -1;
}

int
cqw_loop_new(cqw_loop **out, const struct cqw_loop_opts *opts)
{
	/* Best first: auto takes the first one whose init succeeds. */
	static const enum cqw_backend order[] = { CQW_BACKEND_URING,
						  CQW_BACKEND_IOCP,
						  CQW_BACKEND_POLL };
	int kind = opts != NULL ? (int)opts->backend : CQW_BACKEND_AUTO;
	unsigned entries = opts != NULL && opts->entries ? opts->entries : 256;
	cqw_loop *loop;
	size_t i;
	int r = CQW_ENOSYS;

	if (out == NULL) {
		return CQW_EINVAL;
	}
	if (kind == CQW_BACKEND_AUTO) {
		kind = backend_from_env();
		if (kind < 0) {
			return CQW_EINVAL;
		}
	}
	loop = calloc(1, sizeof(*loop));
	if (loop == NULL) {
		return CQW_ENOMEM;
	}
	loop->fork_gen = cqw__fork_gen();
	loop->wait_want = 1;
	loop->id = atomic_fetch_add(&next_loop_id, 1) + 1;
	for (i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		if (kind != CQW_BACKEND_AUTO && (int)order[i] != kind) {
			continue;
		}
		loop->ops = backend_by_kind(order[i]);
		if (loop->ops == NULL) {
			continue;
		}
		/* A ring refused (ENOSYS, EPERM...) falls through to poll. */
		r = loop->ops->init(loop, entries);
		if (r == 0) {
			*out = loop;
			return 0;
		}
		/*
		 * A bad setting (CQW_URING_SETUP=bogus) is the caller's to
		 * hear, not a reason to run silently on another backend.
		 */
		if (r == CQW_EINVAL) {
			break;
		}
	}
	free(loop);
	return r;
}

void
cqw_loop_free(cqw_loop *loop)
{
	if (loop == NULL) {
		return;
	}
	/*
	 * With every op reaped no connection is on the list; should one be
	 * (a caller that broke that rule), it must not point at freed memory.
	 */
	while (loop->conns != NULL) {
		cqw_conn *c = loop->conns;

		/*
		 * A multishot armed with no op: ended and waited for, so that
		 * every byte it took stays with c; from a thread that may not
		 * use the loop, only what it reported (the ring's end cancels
		 * it).
		 */
		if (c->recv_busy && c->inflight == 0 &&
		    cqw__loop_quiesce(c) == 0 && c->loop != loop) {
			continue; /* let go */
		}
		if (c->tp->framer->quiesce != NULL) {
			c->tp->framer->quiesce(loop, c, 1);
		}
		unlink_conn(loop, c);
	}
	/* Completions never processed: their ios may go on another loop. */
	for (struct cqw__io *io = loop->iodone; io != NULL; io = io->next) {
		io->queued = 0;
	}
	loop->ops->fini(loop);
	cqw__pool_fini(loop);
	free(loop);
}

const char *
cqw_loop_backend(const cqw_loop *loop)
{
	return loop != NULL ? loop->ops->name : NULL;
}

const char *
cqw_loop_features(const cqw_loop *loop)
{
	if (loop == NULL) {
		return NULL;
	}
	return loop->ops->features != NULL ? loop->ops->features(loop) : "";
}

static CQW__NOINLINE int check_fork(cqw_loop *loop);

/*
 * A loop belongs to the thread that first flushes or reaps it (an
 * io_uring ring has one issuer; the lists here have no locks). Others get
 * CQW_EBUSY. claim: make the caller the owner if there is none yet.
 */
static CQW__INLINE int
check_thread(cqw_loop *loop, int claim)
{
	uint64_t self = cqw__thread_id();

	if (!loop->owned) {
		if (claim) {
			loop->owner = self;
			loop->owned = 1;
		}
		return 0;
	}
	return loop->owner == self ? 0 : CQW_EBUSY;
}

int
cqw_loop_wake(cqw_loop *loop)
{
	int r;

	if (loop == NULL) {
		return CQW_EINVAL;
	}
	/* A child must wake its own loop, never the parent's copy. */
	r = check_fork(loop);
	return r < 0 ? r : loop->ops->wake(loop);
}

/*
 * In a child after fork(): every op the loop held at the fork is the
 * parent's, whatever its state, and ends here with CQW_EFORK, so that
 * nothing is sent or read twice. Queued ops end now; ios in flight end
 * through the backend's after_fork(), which also rebuilds what the child
 * must not share (an io_uring ring); done ops not yet reaped keep their
 * place in the done queue but report CQW_EFORK. Connections stay usable,
 * except where an io was in flight (its position in the stream is lost:
 * the channel makes that side fail with CQW_EFORK).
 */
static CQW__NOINLINE int
check_fork(cqw_loop *loop)
{
	unsigned gen = cqw__fork_gen();
	struct cqw_op *op;
	cqw_conn *c, *next;
	int r;

	if (gen == loop->fork_gen) {
		return 0;
	}
	r = loop->ops->after_fork(loop);
	if (r < 0) {
		return r;
	}
	loop->fork_gen = gen;
	loop->owned = 0; /* the child's first flusher owns the new backend */
	for (c = loop->pending; c != NULL; c = c->next_pending) {
		c->pending = 0;
	}
	loop->pending = NULL;
	for (c = loop->conns; c != NULL; c = next) {
		next = c->loop_next; /* c may be detached below */
		c->tp->framer->fork_fail(loop, c);
	}
	cqw__srv_fork(loop); /* accepts, connects, handshakes: CQW_EFORK */
	/* The backend's CQW_EFORK completions end the ios in flight. */
	process_ios(loop);
	/*
	 * Every op done, whatever it ended with before (a cancel too). An
	 * accept or connect that had its connection goes without it: the
	 * child's copy of the handle closes (the parent keeps its own).
	 */
	for (op = loop->done.head; op != NULL; op = CQW__OP_NEXT(op)) {
		op->result = CQW_EFORK;
		if ((op->kind == CQW_OP_ACCEPT || op->kind == CQW_OP_CONNECT) &&
		    op->conn != NULL) {
			cqw_conn_free(op->conn);
			op->conn = NULL;
		}
	}
	/* A connection left with nothing (its ops all ended) is let go. */
	for (c = loop->conns; c != NULL; c = next) {
		next = c->loop_next;
		if (c->inflight == 0) {
			cqw__loop_detach(c);
		}
	}
	return 0;
}

/*
 * May the caller use loop now? In a child the fork is dealt with first,
 * so that the loop has no owner yet there, whichever thread forked; then
 * the thread (claim: the first flusher becomes the owner).
 */
static CQW__INLINE int
check_use(cqw_loop *loop, int claim)
{
	int r;

	/* Every op's path: the fork check's common case inline. */
	if (!CQW__LIKELY(cqw__fork_gen() == loop->fork_gen)) {
		r = check_fork(loop);
		if (r < 0) {
			return r;
		}
	}
	return check_thread(loop, claim);
}

/*
 * Queue op on its connection, attached to loop; start_all() kicks it.
 * Inlined: it is every op's path (measured: 23 instructions an op as a
 * call).
 */
static CQW__INLINE int
queue_op(cqw_loop *loop, struct cqw_op *op)
{
	cqw_conn *c = op->conn;
	int r;

	if (c->loop == NULL) {
		r = attach(loop, c);
		if (r < 0) {
			return r;
		}
	}
	op->result = 0;
	op->needed = 0;
	CQW__OP_SET_STATE(op, CQW__OPS_QUEUED);
	cqw__opq_push(op->kind == CQW_OP_SEND ? &c->sendq : &c->recvq, op);
	c->inflight++;
	if (!c->pending) {
		c->pending = 1;
		c->next_pending = loop->pending;
		loop->pending = c;
	}
	return 0;
}

/* cqw_submit() of an ACCEPT or CONNECT (out of line: not every op's path). */
static CQW__NOINLINE int
submit_server(cqw_loop *loop, struct cqw_op *op)
{
	int r;

	if (op->kind != CQW_OP_ACCEPT && op->kind != CQW_OP_CONNECT) {
		return CQW_EINVAL;
	}
	if (CQW__OP_STATE(op) != CQW__OPS_IDLE) {
		return CQW_EBUSY;
	}
	r = check_use(loop, 0);
	if (r == 0) {
		r = cqw__srv_submit(loop, op);
	}
	if (r < 0) {
		return r;
	}
	op->result = 0;
	CQW__OP_SET_STATE(op, CQW__OPS_QUEUED);
	loop->inflight++;
	return 0;
}

int
cqw_submit(cqw_loop *loop, struct cqw_op *op)
{
	cqw_conn *c;
	unsigned need;
	int r;

	if (loop == NULL || op == NULL) {
		return CQW_EINVAL;
	}
	if (op->kind == CQW_OP_SEND) {
		need = CQW_WRITABLE;
	} else if (op->kind == CQW_OP_RECV) {
		need = CQW_READABLE;
	} else {
		return submit_server(loop, op);
	}
	c = op->conn;
	if (c == NULL || (op->buf == NULL && op->len > 0)) {
		return CQW_EINVAL;
	}
	if (c->closed) {
		return CQW_ECLOSED;
	}
	if ((c->flags & need) == 0) {
		return need == CQW_READABLE ? CQW_EWRITEONLY : CQW_EREADONLY;
	}
	if (c->loop != NULL && c->loop != loop) {
		/* Only a multishot the old loop kept armed: it ends first. */
		r = cqw__loop_quiesce(c);
		if (r < 0 || (c->loop != NULL && c->loop != loop)) {
			return CQW_EBUSY;
		}
	}
	if (CQW__OP_STATE(op) != CQW__OPS_IDLE) {
		return CQW_EBUSY; /* still the loop's, maybe not yet reaped */
	}
	/* A child's first op must not be taken for one of the parent's. */
	r = check_use(loop, 0);
	if (r < 0) {
		return r;
	}
	/* priv[5] stays NULL (ops come zeroed): the caller's, it is reaped. */
	r = queue_op(loop, op);
	if (r == 0) {
		loop->inflight++;
	}
	return r;
}

int
cqw__loop_submit_internal(cqw_loop *loop, struct cqw_op *op)
{
	if (op->conn->loop != NULL && op->conn->loop != loop) {
		return CQW_EBUSY;
	}
	return queue_op(loop, op);
}

int
cqw__loop_check_thread(cqw_loop *loop)
{
	return check_use(loop, 0);
}

int
cqw_flush(cqw_loop *loop)
{
	int r;

	if (loop == NULL) {
		return CQW_EINVAL;
	}
	r = check_use(loop, 1);
	if (r < 0) {
		return r;
	}
	return start_all(loop, 1);
}

/* Completed ops waiting in the done queue, counted up to limit. */
static unsigned
done_count(const cqw_loop *loop, unsigned limit)
{
	const struct cqw_op *op;
	unsigned n = 0;

	for (op = loop->done.head; op != NULL && n < limit;
	     op = CQW__OP_NEXT(op)) {
		n++;
	}
	return n;
}

/* How many more completions a reap for min waits for (0: none). */
static CQW__INLINE unsigned
still_wanted(const cqw_loop *loop, unsigned min)
{
	unsigned have;

	if (loop->inflight == 0) {
		return 0;
	}
	if (min <= 1) {
		return loop->done.head == NULL; /* cqw_reap: the common case */
	}
	have = done_count(loop, min);
	/* Ops still in flight bound what may yet come. */
	if (min > loop->inflight) {
		min = loop->inflight;
	}
	return have >= min ? 0 : min - have;
}

int
cqw_reap_min(cqw_loop *loop, struct cqw_op **ops, int min, int max,
	     int timeout_ms)
{
	int64_t deadline;
	struct cqw_op *op;
	unsigned want;
	int r, n = 0;

	if (loop == NULL || ops == NULL || max <= 0 || min > max) {
		return CQW_EINVAL;
	}
	r = check_use(loop, 1);
	if (r < 0) {
		return r;
	}
	/*
	 * What was submitted is started, but not pushed: the wait below
	 * pushes it and sleeps in one system call (io_uring_enter), and if
	 * there is no wait, the push at the end does it.
	 */
	start_all(loop, 0);
	deadline = timeout_ms < 0 ? -1 : cqw__now_ms() + timeout_ms;
	while ((want = still_wanted(loop, (unsigned)min)) > 0) {
		timeout_ms =
		    cqw__srv_wait_ms(loop, cqw__remaining_ms(deadline));
		/*
		 * The kernel may count the completions (io_uring's wait_nr)
		 * only where it also bounds the wait for more than the
		 * first (a minimum wait): a completion that needs a step of
		 * ours before the next can come (the rest of a partial
		 * write, of a partial frame) would otherwise sleep until
		 * the timeout. Elsewhere one completion at a time.
		 */
		loop->wait_want = want;
		r = loop->ops->wait(loop, timeout_ms);
		loop->wait_want = 1;
		/*
		 * CQW_EINTR: the backend asked the thread's signal check,
		 * which said stop (asked once: a second ask may say no). Ops
		 * stay in flight: nothing is lost by returning.
		 */
		if (r < 0) {
			return r;
		}
		process_ios(loop);
		if (r > 0) {
			break; /* cqw_loop_wake() */
		}
		start_all(loop, 0); /* handshakes' next frames, deadlines */
		if (deadline >= 0 && cqw__remaining_ms(deadline) == 0) {
			break;
		}
	}
	/* What the completions started (a gather's rest) goes out now. */
	r = loop->ops->flush(loop);
	if (r < 0) {
		return r; /* the completed ops stay for the next reap */
	}
	while (n < max && (op = cqw__opq_pop(&loop->done)) != NULL) {
		CQW__OP_SET_STATE(op, CQW__OPS_IDLE);
		loop->inflight--;
		ops[n++] = op;
	}
	return n;
}

int
cqw_reap(cqw_loop *loop, struct cqw_op **ops, int max, int timeout_ms)
{
	return cqw_reap_min(loop, ops, 1, max, timeout_ms);
}

int
cqw_cancel(cqw_loop *loop, struct cqw_op *op)
{
	int r;

	if (loop == NULL || op == NULL) {
		return CQW_EINVAL;
	}
	if (CQW__OP_STATE(op) == CQW__OPS_IDLE ||
	    CQW__OP_STATE(op) == CQW__OPS_DONE) {
		return 0; /* completed already: nothing to cancel */
	}
	if (op->kind == CQW_OP_ACCEPT || op->kind == CQW_OP_CONNECT) {
		r = check_use(loop, 0);
		if (r < 0) {
			return r;
		}
		/* In a forked child the check may have ended it. */
		if (CQW__OP_STATE(op) == CQW__OPS_DONE) {
			return 0;
		}
		return cqw__srv_cancel(loop, op);
	}
	if (op->conn == NULL) {
		return CQW_EINVAL;
	}
	if (op->conn->loop != loop) {
		return CQW_EINVAL;
	}
	r = check_use(loop, 0);
	return r < 0 ? r : op->conn->tp->framer->cancel(loop, op);
}

int
cqw__loop_quiesce(cqw_conn *c)
{
	cqw_loop *loop = c->loop;
	int r;

	if (loop == NULL || c->inflight != 0 || !c->recv_busy) {
		return 0;
	}
	r = check_use(loop, 0);
	if (r < 0) {
		return r;
	}
	/* In a forked child the check may have ended it. */
	if (c->loop == NULL || !c->recv_busy) {
		return 0;
	}
	if (c->tp->framer->quiesce == NULL) {
		return CQW_EBUSY;
	}
	c->tp->framer->quiesce(loop, c, 0);
	while (c->recv_busy) {
		r = loop->ops->flush(loop);
		if (r == 0) {
			r = loop->ops->wait(loop, -1);
		}
		if (r < 0 && r != CQW_EINTR) {
			return r;
		}
		process_ios(loop);
	}
	return 0;
}

int
cqw__loop_conn_close(cqw_loop *loop, cqw_conn *c)
{
	cqw_conn **pp;
	int r;

	/*
	 * In a child after fork() the ios are the parent's: after_fork()
	 * completes them here with CQW_EFORK, and nothing reaches the
	 * parent's ring.
	 */
	r = check_use(loop, 0);
	if (r < 0) {
		return r; /* nothing touched: the kernel may own c's buffers */
	}
	for (pp = &loop->pending; *pp != NULL; pp = &(*pp)->next_pending) {
		if (*pp == c) {
			*pp = c->next_pending;
			c->pending = 0;
			break;
		}
	}
	/* No new io on c from here: kicks stop, resumptions are refused. */
	c->closing = 1;
	c->tp->framer->cancel_all(loop, c);
	/*
	 * The descriptor may close, and the buffers go, only when no io on
	 * them is in flight. A wait that fails leaves c attached and
	 * closing: the caller may try again; its ios still complete (as
	 * CQW_ECANCELED) in a later reap.
	 */
	for (;;) {
		process_ios(loop);
		if (!c->send_busy && !c->recv_busy) {
			break;
		}
		r = loop->ops->flush(loop);
		if (r == 0) {
			r = loop->ops->wait(loop, -1);
		}
		if (r == CQW_EINTR) {
			r = 0; /* the cancels are on their way: wait them out */
		}
		if (r < 0) {
			/* Still open and usable; its queued ops were failed. */
			c->closing = 0;
			return r;
		}
	}
	unlink_conn(loop, c); /* the handle closes next */
	return 0;
}
