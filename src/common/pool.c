/*
 * The loop's pool of send blocks and stages (pool.h). A free block's
 * first bytes link it to the next one; a block in use is wholly its
 * connection's.
 */
#include <stdlib.h>

#include "loop.h"
#include "pool.h"

static size_t
block_size(int kind)
{
	return kind == CQW__POOL_SEND ? sizeof(struct cqw__sendbuf)
				      : CQW__STAGE_SIZE;
}

void *
cqw__pool_get(cqw_loop *loop, int kind)
{
	void **blk = loop->pool_free[kind];

	if (blk == NULL) {
		return malloc(block_size(kind));
	}
	loop->pool_free[kind] = *blk;
	loop->pool_nfree[kind]--;
	return blk;
}

void
cqw__pool_put(cqw_loop *loop, int kind, void *blk)
{
	if (loop->pool_nfree[kind] >= CQW__POOL_KEEP) {
		free(blk);
		return;
	}
	*(void **)blk = loop->pool_free[kind];
	loop->pool_free[kind] = blk;
	loop->pool_nfree[kind]++;
}

void
cqw__pool_fini(cqw_loop *loop)
{
	void **blk;
	int kind;

	for (kind = 0; kind < CQW__POOL_KINDS; kind++) {
		while ((blk = loop->pool_free[kind]) != NULL) {
			loop->pool_free[kind] = *blk;
			free(blk);
		}
		loop->pool_nfree[kind] = 0;
	}
}
