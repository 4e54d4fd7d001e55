/*
 * The few I/O calls that src/common itself makes, the same on every
 * platform; the rest of the platform's I/O is its own business (the
 * transports' synchronous halves, src/posix/io.h, src/win). Every call
 * returns a count or a negative CQW_E* code.
 *
 * os.h is the platform's (src/posix/os.h, src/win/os.h: the one on the
 * include path): it defines cqw__iov, the gather element the OS takes
 * (struct iovec, WSABUF), with CQW__IOV_BASE(v), CQW__IOV_LEN(v) and
 * CQW__IOV_MAX.
 */
#ifndef CQW_IO_H
#define CQW_IO_H

#include <stddef.h>
#include <stdint.h>

#include "cqwire.h"
#include "os.h"

/*
 * What a connection's handle is (c->kind). It is per handle, not per
 * process: one file that refuses RWF_NOWAIT says nothing of the others.
 * Test "is it a socket" with == CQW__FD_SOCK. The stream transport takes
 * every kind but CQW__FD_MSGPIPE.
 */
enum cqw__fd_kind {
	CQW__FD_SOCK = 1,      /* a stream socket: send/recv with flags */
	CQW__FD_PIPE = 2,      /* POSIX: anything else read/write works on */
	CQW__FD_PIPE_POLL = 3, /* POSIX: a CQW__FD_PIPE that refused
				  RWF_NOWAIT: readiness (poll, timeout 0)
				  first, then a read, or a write of at most
				  PIPE_BUF bytes. Only the non-blocking calls
				  downgrade CQW__FD_PIPE to it, the first
				  time the kernel answers EOPNOTSUPP (a FIFO
				  opened by name, a tty, Linux < 5.8) */
	CQW__FD_MSGPIPE = 4,   /* Windows: a message-mode named pipe */
};

/*
 * BLOCKING. Fill iov[0..cnt) whole from a stream socket, sleeping if it
 * must (the caller knows the bytes are there: a peek saw them). 0 or an
 * error; CQW_EINTR only before the first byte is consumed (after it,
 * signals are retried: the rest is queued already, and stopping would
 * lose the position). *consumed says whether any byte was taken, also on
 * error.
 */
int cqw__io_readv_all(cqw_fd sock, cqw__iov *iov, int cnt, int *consumed);

int cqw__io_close(cqw_fd handle);

/* Monotonic milliseconds, and microseconds. */
int64_t cqw__now_ms(void);
int64_t cqw__now_us(void);

/* Milliseconds left until deadline (-1: none), for a wait call. */
int cqw__remaining_ms(int64_t deadline);

#endif
