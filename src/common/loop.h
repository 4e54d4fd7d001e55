/* The loop, as src/common and the backends see it. */
#ifndef CQW_LOOP_H
#define CQW_LOOP_H

#include "internal.h"

struct cqw__backend_ops;
struct cqw__io;

struct cqw_loop {
	const struct cqw__backend_ops *ops;
	void *backend;		/* the backend's private state */
	unsigned fork_gen;	/* cqw__fork_gen when the backend was made */
	struct cqw__io *iodone; /* completed ios, not yet processed */
	struct cqw__io *iodone_tail;
	struct cqw__opq done; /* completed ops, not yet reaped */
	cqw_conn *pending;    /* conns with ops not yet started */
	cqw_conn *conns;      /* every conn with c->loop == this loop */
	unsigned inflight;    /* ops submitted and not reaped */
	/*
	 * How many completions the reap that calls wait() still wants (1
	 * outside cqw_reap_min): a backend may sleep until that many come,
	 * if it bounds the wait for more than the first (see
	 * cqw_reap_min).
	 */
	unsigned wait_want;
	uint64_t owner; /* the thread that flushes and reaps it... */
	int owned;	/* ...once one has */
	uint64_t id;	/* unique in the process, never reused */

	/* Accepts and connects (server.c): each op's handshake state. */
	struct cqw__hs *hs;	   /* all of them */
	struct cqw__hs *hs_queued; /* submitted, started by the next flush */
	struct cqw__hs *hs_ready;  /* a frame of theirs completed */
	struct cqw__hs *timers;	   /* those with a deadline, soonest first */
	struct cqw__hs *timers_tail;
	/* The pool of send blocks and stages, per kind (pool.h). */
	void *pool_free[2];
	unsigned pool_nfree[2];
};

/*
 * Queue an op of the library's own (a handshake frame) on its
 * connection, as cqw_submit() does, but invisible to cqw_reap(): it ends
 * through cqw__srv_ready(). On the loop's thread only.
 */
int cqw__loop_submit_internal(cqw_loop *loop, struct cqw_op *op);
/* 0 if the calling thread may use loop now (see loop.c), else CQW_EBUSY. */
int cqw__loop_check_thread(cqw_loop *loop);

/*
 * Cancel every op of c and wait until the kernel is done with its
 * buffers, then detach it from the loop (cqw_conn_close). 0, or an error
 * with c still attached and nothing freed (CQW_EBUSY: not the loop's
 * thread).
 */
int cqw__loop_conn_close(cqw_loop *loop, cqw_conn *c);
/*
 * c has no op on its loop but a receive of the framer's own (a multishot)
 * is armed: end it and wait, so that the synchronous half may read. 0 (c
 * let go of its loop, its bytes kept), or CQW_EBUSY if the calling thread
 * may not use the loop now.
 */
int cqw__loop_quiesce(cqw_conn *c);
/*
 * c has nothing left on its loop: let it go (it may move or outlive it),
 * unless the backend keeps its handle (backend.h: detach).
 */
void cqw__loop_detach(cqw_conn *c);

void cqw__loop_op_done(cqw_loop *loop, struct cqw_op *op, int64_t result);

#endif
