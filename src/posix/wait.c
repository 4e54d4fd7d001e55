/*
 * cqw_wait() on POSIX: poll() over every descriptor, connections' and raw
 * ones alike, with no limit on how many. A connection whose next receive
 * returns at once (a frame read ahead, an error owed) is ready without
 * asking the kernel.
 */
#include <stdlib.h>

#include "common/internal.h"
#include "common/platform.h"
#include "common/transport.h"
#include "posix/io.h"

int
cqw__os_wait(struct cqw_wait_item *items, size_t n, int timeout_ms)
{
	cqw_fd stackfds[64], *fds = stackfds;
	int stackready[64], *ready = stackready;
	size_t i;
	int r, buffered = 0;

	if (n > 64) {
		fds = malloc(n * sizeof(*fds));
		ready = malloc(n * sizeof(*ready));
		if (fds == NULL || ready == NULL) {
			r = CQW_ENOMEM;
			goto out_free;
		}
	}
	for (i = 0; i < n; i++) {
		cqw_conn *c = items[i].conn;

		if (c == NULL) {
			fds[i] = items[i].fd;
			continue;
		}
		fds[i] = c->fd; /* open: conn.c checked */
		/*
		 * A write-only, poisoned or busy connection is watched like
		 * any descriptor (Python's wait() looks at fileno() alone).
		 * One whose next receive returns at once (a frame or an
		 * error already here) is ready now; a busy one's state is
		 * its loop's, so only its descriptor is asked.
		 */
		if (c->inflight == 0 && (c->flags & CQW_READABLE) &&
		    (c->tp->ready_now(c) || c->recv_error < 0 ||
		     c->deferred_err < 0)) {
			items[i].ready = 1;
			buffered++;
		}
	}
	/* Frames already buffered are ready: only look, do not wait. */
	r = cqw__io_wait_many(fds, ready, n, buffered ? 0 : timeout_ms);
	if (r < 0) {
		goto out_free;
	}
	r = 0;
	for (i = 0; i < n; i++) {
		items[i].ready |= ready[i];
		r += items[i].ready;
	}
out_free:
	if (fds != stackfds) {
		free(fds);
	}
	if (ready != stackready) {
		free(ready);
	}
	return r;
}
