/*
 * A write to a pipe whose reader is gone raises SIGPIPE on the writing
 * thread (also through io_uring, where the write runs in our task) before
 * the write returns: unless SIGPIPE is blocked or ignored there and then,
 * its default action kills the process. So a guard blocks it around such
 * writes (one pthread_sigmask each way) and, only when a write may have
 * raised one, takes back a signal that the write raised. It never takes a
 * SIGPIPE that was pending before (the program's own), and leaves the
 * thread's mask as it found it. Where the process ignores SIGPIPE (Python
 * does), a guard costs one look at the disposition and blocks nothing.
 * For src/posix and the Linux backends, which are compiled with
 * _GNU_SOURCE.
 */
#ifndef CQW_SIGPIPE_H
#define CQW_SIGPIPE_H

#include <signal.h>

struct cqw__sigpipe_guard {
	sigset_t old;	 /* the thread's mask before the guard */
	int active;	 /* SIGPIPE is held off by this guard */
	int was_blocked; /* the program blocks SIGPIPE itself */
	int was_pending; /* ...and one was pending before the guard */
};

/* Returns 1 if SIGPIPE is now held off, 0 if the process ignores it. */
int cqw__sigpipe_block(struct cqw__sigpipe_guard *g);
/*
 * End the guard. may_have_raised: a write under it failed with EPIPE or
 * wrote short (the only writes that raise SIGPIPE); then a SIGPIPE now
 * pending that was not before is taken back. Keeps errno.
 */
void cqw__sigpipe_end(struct cqw__sigpipe_guard *g, int may_have_raised);
/* cqw__sigpipe_end(g, 1): for writes whose results come later (a ring). */
void cqw__sigpipe_restore(struct cqw__sigpipe_guard *g);

#endif
