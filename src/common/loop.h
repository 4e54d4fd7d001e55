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
	unsigned inflight;    /* ops submitted and not reaped */
};

/* Cancel every op of c and detach it from the loop (cqw_conn_close). */
void cqw__loop_conn_close(cqw_loop *loop, cqw_conn *c);

/* channel.c: the asynchronous side of a connection. */
void cqw__chan_kick(cqw_loop *loop, cqw_conn *c);
void cqw__chan_io_done(cqw_loop *loop, struct cqw__io *io);
int cqw__chan_cancel(cqw_loop *loop, struct cqw_op *op);
void cqw__chan_cancel_all(cqw_loop *loop, cqw_conn *c);
void cqw__loop_op_done(cqw_loop *loop, struct cqw_op *op, int64_t result);

#endif
