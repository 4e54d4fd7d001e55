/*
 * A write to a pipe whose reader is gone raises SIGPIPE on the writing
 * thread (also through io_uring, where the write runs in our task). Unless
 * the process ignores SIGPIPE, block it around such writes and take back a
 * signal they raised. For src/posix and the Linux backends, which are
 * compiled with _GNU_SOURCE.
 */
#ifndef CQW_SIGPIPE_H
#define CQW_SIGPIPE_H

#include <signal.h>

struct cqw__sigpipe_guard {
	sigset_t pipeset, old;
	int active, was_pending;
};

/* Returns 1 if SIGPIPE is now held off, 0 if the process ignores it. */
int cqw__sigpipe_block(struct cqw__sigpipe_guard *g);
void cqw__sigpipe_restore(struct cqw__sigpipe_guard *g);

#endif
