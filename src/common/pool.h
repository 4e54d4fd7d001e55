/*
 * A loop's pool of the large buffers connections borrow while they move
 * data, so that an idle connection holds none (issue 9, item 4): gather
 * blocks for the send in flight (struct cqw__sendbuf) and CQW__STAGE_SIZE
 * stages for read-ahead and peeks. A block is plain malloc() memory, so
 * it may be given back to any loop, or freed; each list keeps at most
 * CQW__POOL_KEEP free blocks, so that a burst of connections all sending
 * at once leaves no lasting cost. Only the loop's thread calls these.
 */
#ifndef CQW_POOL_H
#define CQW_POOL_H

#include "internal.h"

/* Free blocks a loop keeps per kind (the rest go back to malloc). */
#define CQW__POOL_KEEP 32

enum { CQW__POOL_SEND = 0, CQW__POOL_STAGE = 1, CQW__POOL_KINDS };

/*
 * The send state of one gather of up to CQW__GATHER_MSGS messages: the
 * area holds small frames copied whole and the headers of large ones
 * (hdr those of messages the area had no room for). The kernel may read
 * the area and hdr until the write completes: nothing writes them while
 * the connection's send is in flight, and the block goes back to the
 * pool only after.
 */
struct cqw__sendbuf {
	struct cqw_op *ops[CQW__GATHER_MSGS];
	cqw__iov iov[2 * CQW__GATHER_MSGS];
	uint8_t hdr[CQW__GATHER_MSGS][CQW__HDR_LARGE];
	uint8_t area[CQW__SEND_AREA];
};

/* A block of kind (struct cqw__sendbuf, or a stage), or NULL. */
void *cqw__pool_get(cqw_loop *loop, int kind);
/* Give back a block of kind that no io is using any more. */
void cqw__pool_put(cqw_loop *loop, int kind, void *blk);
/* Free what the loop keeps (cqw_loop_free). */
void cqw__pool_fini(cqw_loop *loop);

#endif
