/*
 * Transports: how a connection's bytes become messages. A connection has
 * one (c->tp), chosen by its handle's kind when it is made:
 *
 *   stream   sockets and POSIX pipes, Winsock sockets: a 4- or 12-byte
 *            header before each payload (WIRE.md §2); many messages
 *            gathered into one write; at most one send in flight.
 *   message  Windows message-mode named pipes (WIRE.md §7): no header,
 *            one pipe message per frame, one write per message.
 *
 * (A same-host shared-memory ring would be one more.)
 *
 * Each transport has two halves. The synchronous half makes the
 * platform's blocking calls directly (src/posix, src/win): it is what the
 * synchronous API in conn.c calls once Python's argument checks passed.
 * The asynchronous half, the framer, turns a connection's queued ops into
 * ios for the loop's backend and completed ios back into finished ops;
 * it is platform-neutral (src/common/stream.c, message.c) and calls only
 * the seam (backend.h) and the neutral io calls (io.h). Both halves share
 * the connection's receive state, so a connection may go from one to the
 * other between messages.
 */
#ifndef CQW_TRANSPORT_H
#define CQW_TRANSPORT_H

#include "internal.h"

struct cqw__framer {
	/* Start what the queued ops allow (at most one send, one receive). */
	void (*kick)(cqw_loop *loop, cqw_conn *c);
	/* c->wio or c->rio completed (io->result, io->flags). */
	void (*io_done)(cqw_loop *loop, struct cqw__io *io);
	/* cqw_cancel() of an op of c: 0, or CQW_EBUSY if it cannot be. */
	int (*cancel)(cqw_loop *loop, struct cqw_op *op);
	/* End every queued op with CQW_ECANCELED and cancel the ios. */
	void (*cancel_all)(cqw_loop *loop, cqw_conn *c);
	/* In a forked child: end queued ops with CQW_EFORK (see loop.c). */
	void (*fork_fail)(cqw_loop *loop, cqw_conn *c);
	/*
	 * Optional. c has no op, and a receive of the framer's own is in
	 * flight (stream.c's multishot): ask it to end (the loop waits for
	 * that), or with gone, the loop is going: forget it now, keeping
	 * every byte it received for the connection.
	 */
	void (*quiesce)(cqw_loop *loop, cqw_conn *c, int gone);
};

/*
 * The synchronous half. Arguments are checked already (conn.c): c is
 * open, has the direction asked for, and has no op on a loop. deadline
 * is absolute (cqw__now_ms()) or -1.
 */
struct cqw__transport {
	const char *name;
	/* Send msgs[0..n) in order, blocking; as cqw_send_batch(). */
	int (*send)(cqw_conn *c, const struct cqw_msg *msgs, size_t n);
	/*
	 * Receive one message into buf[0..cap): its length, or
	 * CQW_ETOOSHORT with *needed set and the message kept, or an
	 * error (CQW_ETIMEDOUT at the deadline, nothing lost).
	 */
	int64_t (*recv_into)(cqw_conn *c, void *buf, size_t cap, size_t *needed,
			     int64_t deadline);
	/*
	 * Receive one message into memory allocated with malloc(): its
	 * length. Longer than maxlength (CQW_NONE: no limit): CQW_EMSGSIZE,
	 * nothing allocated for it, and the connection poisoned
	 * (cqw__conn_poison()), as Python does.
	 */
	int64_t (*recv_alloc)(cqw_conn *c, void **out, int64_t maxlength);
	/* As cqw_poll() and cqw_recv_batch(). */
	int (*poll)(cqw_conn *c, int timeout_ms);
	int (*recv_batch)(cqw_conn *c, struct cqw_msg *msgs, size_t n,
			  int timeout_ms);
	/* 1 if the next receive returns at once without I/O (cqw_wait). */
	int (*ready_now)(const cqw_conn *c);
	/* Free what the transport allocated for c (c is being closed). */
	void (*release)(cqw_conn *c);
	const struct cqw__framer *framer;
};

/* The platform's transport for a handle of this kind (enum cqw__fd_kind). */
const struct cqw__transport *cqw__transport_for(int kind);

/* The framers (src/common). */
extern const struct cqw__framer cqw__stream_framer;
extern const struct cqw__framer cqw__message_framer;

#endif
