/*
 * Internal shapes shared by src/common: the connection (whose receive and
 * send state is the channel) and the loop.
 */
#ifndef CQW_INTERNAL_H
#define CQW_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cqwire.h"
#include "frame.h"
#include "io.h"

#if defined(__GNUC__)
#define CQW__NOINLINE __attribute__((noinline))
#define CQW__INLINE inline __attribute__((always_inline))
#define CQW__LIKELY(x) __builtin_expect(!!(x), 1)
#else
#define CQW__LIKELY(x) (x)
#define CQW__NOINLINE
#define CQW__INLINE inline
#endif

/* Read-ahead staging for CQW_EXCLUSIVE connections. */
#define CQW__STAGE_SIZE (64 * 1024)
/*
 * The stage every connection carries: what the loop reads ahead or peeks
 * into when nothing says more is queued, so that a connection waiting
 * for its next message holds no CQW__STAGE_SIZE block (see stream.c). A
 * round trip of up to 1 KiB fits it whole.
 */
#define CQW__STAGE_SMALL 1536
/* Messages per gather write: two iovecs each, within IOV_MAX. */
#define CQW__GATHER_MSGS (CQW__IOV_MAX / 2)
/*
 * Send coalescing: payloads up to CQW__COPY_MAX bytes are copied with
 * their headers into one contiguous area of CQW__SEND_AREA bytes (the
 * loop's send block, pool.h; the sync sender's, borrowed for the call),
 * so that a gather of many small messages is a handful of iovecs: the
 * kernel copies each iovec segment on its own. Larger payloads go from
 * the caller's buffer. 1 KiB: copying still saved CPU per message at
 * 768 B and 1 KiB (both processes: 205 and 265 ns against 225 and 300
 * uncopied), and no longer at 2 KiB (cqwire-stream --api batch
 * --exclusive --size S under /usr/bin/time).
 */
#define CQW__COPY_MAX 1024
#define CQW__SEND_AREA (64 * 1024)

struct cqw__opq {
	struct cqw_op *head;
	struct cqw_op *tail;
};

/* What an io is for; the backend picks the system call from it and the kind. */
enum cqw__io_op {
	CQW__IO_RECV = 1,    /* stream: read up to len bytes into buf (0: end of
			     file). message: read one message into buf; one
			     longer than len fills buf and completes with
			     CQW__CF_MSG_MORE, io->more bytes of it still
			     queued (0: not known). 0 without the flag is a
			     zero-length message; end of file is CQW_EOF */
	CQW__IO_SEND = 2,    /* stream: write the gather iov[0..iovcnt) (may be
			     partial). message: the gather is one message,
			     written whole */
	CQW__IO_PEEK = 3,    /* stream sockets: copy up to len queued bytes into
			     buf without consuming them */
	CQW__IO_ACCEPT = 4,  /* listeners: take one peer; the result is its
				handle (platform: cqw__listen_accept_io) */
	CQW__IO_CONNECT = 5, /* finish connecting handle (platform:
				cqw__os_connect_begin); the result is 0 */
	CQW__IO_RECV_MULTI = 6, /* stream sockets, backends with buf_next():
				   receive again and again into buffers the
				   backend provides. A completion with
				   CQW__CF_MORE says bytes wait (buf_next());
				   the last has none: 0 end of file, an
				   error, or 1: it ended with nothing wrong
				   (no buffer was free; arm it again) */
};

/* Completion flags (io->flags). */
#define CQW__CF_MORE 0x1u     /* multishot: more completions follow */
#define CQW__CF_MSG_MORE 0x2u /* a message longer than the buffer */
#define CQW__CF_BUFFER 0x4u   /* the bytes are in provided buffer buf_id */

struct cqw__io {
	int op;		/* enum cqw__io_op */
	cqw_fd handle;	/* what it acts on */
	int kind;	/* handle's kind; a backend may downgrade it
			     (CQW__FD_PIPE -> CQW__FD_PIPE_POLL) and the framer
			     keeps the downgrade for the connection */
	cqw_conn *conn; /* the owner: the framer's; backends never look */
	void *buf;
	size_t len;
	cqw__iov *iov;
	int iovcnt;
	int64_t result;
	unsigned flags;		  /* CQW__CF_* */
	unsigned buf_id;	  /* CQW__CF_BUFFER */
	uint64_t more;		  /* CQW__CF_MSG_MORE */
	struct cqw__io *next;	  /* the loop's and backend's list link */
	int backend_state;	  /* the backend's */
	uint64_t backend_priv[8]; /* the backend's (uring: a msghdr; iocp:
				     its OVERLAPPED) */
	int queued; /* on the loop's list of completed ios (loop.c) */
	int all;    /* stream receive: the len bytes are owed (a payload
		       already begun): a backend may complete only once all
		       are here, or at an end (MSG_WAITALL) */
};

struct cqw__transport;
struct cqw__sendbuf; /* pool.h */

struct cqw_conn {
	const struct cqw__transport *tp; /* framing: see transport.h */
	cqw_fd fd;
	unsigned flags; /* CQW_READABLE | CQW_WRITABLE | CQW_EXCLUSIVE ... */
	int kind;	/* enum cqw__fd_kind */
	int closed;
	unsigned spin_us; /* cqw_conn_set_spin() */
	int waited;	  /* the last header had to be waited for */
	int deferred_err; /* an error a batch owes the next receive */

	/* Receive: the frame in progress (shared by sync and async). */
	struct cqw__dec dec;
	uint64_t pay_got; /* payload bytes of the current frame consumed */
	/*
	 * CQW_EXCLUSIVE read-ahead, and what a peek saw: NULL, stage_small,
	 * or a CQW__STAGE_SIZE block from malloc() (a loop's pool keeps
	 * those, pool.h). The synchronous halves take a block
	 * (cqw__chan_stage()).
	 */
	uint8_t *stage;
	size_t stage_off;
	size_t stage_len;
	/*
	 * The pay_got bytes of a frame whose receive failed part-way (a
	 * signal, a timeout): the caller's buffer may not come back, so they
	 * wait here for the next receive.
	 */
	uint8_t *part;

	/* Asynchronous state; see channel.c. */
	struct cqw_loop *loop;
	unsigned inflight;     /* ops submitted and not yet completed */
	struct cqw__opq sendq; /* submitted, not yet in a gather */
	struct cqw__opq recvq; /* submitted receives, head is current */
	/*
	 * The send in flight: its ops, the gather [hdr0, p0, hdr1, p1, ...]
	 * and the headers. They point into gather1/siov1/shdr1 for a gather
	 * of one message, or into sbuf, a block of CQW__GATHER_MSGS taken
	 * from the loop's pool (pool.h) while more are queued; sbuf goes
	 * back when the write is done and nothing waits.
	 */
	struct cqw_op **gather;
	unsigned ngather;
	cqw__iov *siov;
	uint8_t (*shdr)[CQW__HDR_LARGE];
	unsigned siov_first; /* resume point after a partial write */
	unsigned siov_cnt;
	struct cqw__sendbuf *sbuf;
	struct cqw_op *gather1[1];
	cqw__iov siov1[2];
	uint8_t shdr1[1][CQW__HDR_LARGE];
	int rfull;	    /* the last read-ahead or peek filled its buffer */
	struct cqw__io wio; /* the send in flight */
	struct cqw__io rio; /* the receive in flight */
	uint8_t rhdr[CQW__HDR_LARGE]; /* frame-exact header reads land here */
	int no_peek;		      /* this frame takes the one-frame path */
	int rtarget;   /* what rio reads into: RT_* in channel.c */
	int send_busy; /* wio is started */
	int recv_busy; /* rio is started */
	/*
	 * CQW_EXCLUSIVE sockets on a backend with buf_next() (stream.c):
	 * rio is a CQW__IO_RECV_MULTI, armed while ms_on; c->stage is one
	 * of its buffers while stage_pbuf. ms_stop: the framer cancelled
	 * it (idle, a large payload next or done, a bulk stream);
	 * ms_final: how it ended, owed once the bytes it left are taken;
	 * no_multi: never again here;
	 * ms_large: the last frame was large (CQW__STAGE_SIZE or more):
	 * plain reads serve until a smaller one comes; ms_bulk: MS_BULK_RUN
	 * full buffers in a row came (ms_full counts them): plain reads
	 * serve until one does not fill the stage.
	 */
	uint8_t ms_on, ms_stop, stage_pbuf, no_multi, ms_once, ms_large;
	uint8_t ms_bulk, ms_full;
	int ms_final;
	int send_error; /* sticky: the stream is broken */
	int recv_error; /* sticky: the receive position is unknown (fork) */
	int closing;	/* cqw_conn_close() is cancelling: start nothing */
	int pending;	/* on the loop's list of conns with work */
	struct cqw_conn *next_pending;
	/* On the loop's list of conns it holds (c->loop != NULL). */
	struct cqw_conn *loop_next, *loop_prev;
	/*
	 * The loop (its id) whose backend keeps c's handle for good (IOCP
	 * binds a handle to one port), 0 if none: c may go to no other.
	 */
	uint64_t bound_to;

	/* Message transports (Windows pipes): see message.c, src/win. */
	int empty_pending; /* a readiness probe consumed a zero-length
			      message: the next receive returns it */
	uint64_t msg_got;  /* bytes of a longer message already in c->part */
	uint64_t msg_len;  /* that message's whole length */

	uint8_t stage_small[CQW__STAGE_SMALL]; /* see CQW__STAGE_SMALL */
};

/* Which flags a connection keeps from the caller. */
#define CQW__CONN_FLAGS \
	(CQW_READABLE | CQW_WRITABLE | CQW_EXCLUSIVE | CQW_NO_LARGE_FRAMES)

/* Op bookkeeping in the op's private area. */
#define CQW__OP_NEXT(op) ((struct cqw_op *)(op)->priv[0])
#define CQW__OP_SET_NEXT(op, n) ((op)->priv[0] = (n))
#define CQW__OP_STATE(op) ((uintptr_t)(op)->priv[1])
#define CQW__OP_SET_STATE(op, s) ((op)->priv[1] = (void *)(uintptr_t)(s))
enum {
	CQW__OPS_IDLE = 0,    /* not the loop's */
	CQW__OPS_QUEUED = 1,  /* in a connection's sendq or recvq */
	CQW__OPS_SENDING = 2, /* part of the gather being written */
	CQW__OPS_DONE = 3,    /* in the loop's done queue */
};

void cqw__opq_push(struct cqw__opq *q, struct cqw_op *op);
struct cqw_op *cqw__opq_pop(struct cqw__opq *q);
int cqw__opq_remove(struct cqw__opq *q, struct cqw_op *op);

/* Bumped in the child after every fork(); see loop.c. */
unsigned cqw__fork_gen(void);

/* channel.c: the state a connection's transports share. */
int cqw__conn_init(cqw_conn *c, cqw_fd fd, int kind, unsigned flags);
/*
 * Part of the next frame is in the connection already (read ahead, or a
 * header begun): a receive starts without waiting. Inline, as the next
 * few: they are on every receive's path, and calls across files cost
 * measurably (see BENCHMARKS.md, the seam's before/after).
 */
static inline int
cqw__chan_has_buffered(const cqw_conn *c)
{
	return c->stage_len > c->stage_off || cqw__dec_want(&c->dec) == 0 ||
	       cqw__dec_started(&c->dec);
}

/* The next frame's header as a peek saw it, still in the kernel. */
struct cqw__peek {
	uint64_t len;  /* payload length */
	size_t hdrlen; /* 4 or 12 */
};

/*
 * Frame-exact and at a frame boundary: nothing of the next frame has been
 * consumed, so what happens to it can still be decided by looking.
 */
static inline int
cqw__chan_exact_boundary(const cqw_conn *c)
{
	return !(c->flags & CQW_EXCLUSIVE) && !cqw__dec_started(&c->dec) &&
	       c->pay_got == 0 && c->stage_len == c->stage_off;
}
void cqw__chan_release(cqw_conn *c);
/*
 * For the synchronous halves: make c->stage a CQW__STAGE_SIZE block,
 * what it held kept at its front (stage_off 0). 0 or CQW_ENOMEM.
 */
int cqw__chan_stage_slow(cqw_conn *c);
static inline int
cqw__chan_stage(cqw_conn *c)
{
	if (c->stage != NULL && c->stage != c->stage_small) {
		return 0;
	}
	return cqw__chan_stage_slow(c);
}

/* Frames taken per peek; the peek is bounded by the stage size. */
#define CQW__PEEK_FRAMES 64
/* An error a batch owes the next receive (0 if none), taken once. */
static inline int
cqw__chan_take_deferred(cqw_conn *c)
{
	int r = c->deferred_err;

	c->deferred_err = 0;
	return r;
}
/*
 * A receive failed after consuming pay_got payload bytes into dst: keep
 * them for the next receive (restore puts them at the front of its
 * destination). Without memory the position is lost: recv_error.
 */
void cqw__chan_keep_part(cqw_conn *c, const void *dst);
/*
 * What the next receive op on a loop gets without any I/O: an error a
 * batch owes it, the connection's sticky error, or CQW_ECANCELED while it
 * closes; 0 if none (the framer reads).
 */
static inline int
cqw__chan_recv_owed(cqw_conn *c)
{
	if (c->deferred_err < 0 && !c->closing) {
		return cqw__chan_take_deferred(c);
	}
	if (c->recv_error < 0 || c->closing) {
		return c->closing ? CQW_ECANCELED : c->recv_error;
	}
	return 0;
}
/*
 * A synchronous send of msgs[0..n) on a stream: CQW_EMSGSIZE, before any
 * byte goes, if one needs the large-frame header that CQW_NO_LARGE_FRAMES
 * refuses; else 0.
 */
int cqw__chan_check_sizes(const cqw_conn *c, const struct cqw_msg *msgs,
			  size_t n);
void cqw__chan_restore_part_slow(cqw_conn *c, void *dst);
static inline void
cqw__chan_restore_part(cqw_conn *c, void *dst)
{
	if (c->part != NULL) {
		cqw__chan_restore_part_slow(c, dst);
	}
}
/*
 * Consume the whole frames a peek showed in c->stage[0..avail) that fit
 * msgs[i].cap, with one exact gather read: how many, or an error.
 */
int cqw__chan_take_peeked(cqw_conn *c, size_t avail, struct cqw_msg *msgs,
			  size_t n);

/* For the framers (transport.h): the queue handling they share. */
/* End every op of q with err. */
void cqw__chan_fail_queue(cqw_loop *loop, struct cqw__opq *q, int err);
/* cancel_all: queued ops end with CQW_ECANCELED, ios in flight are
 * cancelled. fork_fail: in a forked child, queued ops end with CQW_EFORK
 * and those of ios in flight when the backend ends them (loop.c). */
void cqw__chan_cancel_all(cqw_loop *loop, cqw_conn *c);
void cqw__chan_fork_fail(cqw_loop *loop, cqw_conn *c);
/*
 * cqw_cancel() of op: a queued op ends with CQW_ECANCELED; a send in
 * flight, or the receive in flight when recv_torn (the framer's say: it
 * has consumed part of its message), is CQW_EBUSY; the receive in flight
 * otherwise is asked to stop, and ends once.
 */
int cqw__chan_cancel(cqw_loop *loop, struct cqw_op *op, int recv_torn);

/* conn.c */
/*
 * Receive one whole message into buf (cap bytes) before deadline,
 * refusing larger ones with CQW_EMSGSIZE (the connection is then
 * poisoned as for maxlength). Used by the handshake.
 */
int64_t cqw__conn_recv_small(cqw_conn *c, void *buf, size_t cap,
			     int64_t deadline);
/* Wrap handle, of kind (enum cqw__fd_kind; < 0: find out). */
int cqw__conn_new(cqw_conn **out, cqw_fd fd, int kind, unsigned flags);
void cqw__conn_poison(cqw_conn *c);

#endif
