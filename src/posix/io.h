/*
 * POSIX I/O for the stream transport's synchronous half (stream.c), the
 * platform calls (sock.c, wait.c) and the POSIX backends (src/poll,
 * src/uring). Every call returns a count or a negative CQW_E* code.
 * Descriptors are never switched to O_NONBLOCK: another process (a
 * Python peer that inherited the pipe) may share the open file and
 * expects it blocking. Sockets use MSG_DONTWAIT per call; pipes use
 * RWF_NOWAIT, or readiness first where the file refuses it (see
 * CQW__FD_PIPE_POLL in common/io.h).
 *
 * Signals. A call is non-blocking unless it says BLOCKING; non-blocking
 * calls retry EINTR themselves. A BLOCKING call that a signal interrupts
 * asks cqw__eintr_stop() (the thread's cqw_set_signal_check()): if it says
 * stop, the call returns CQW_EINTR, and it does so only when that call has
 * consumed or written nothing (a read or write cut short after some bytes
 * returns the short count, as the kernel does); otherwise it retries with
 * what is left of its timeout. With no check set, CQW_EINTR never comes.
 */
#ifndef CQW_POSIX_IO_H
#define CQW_POSIX_IO_H

#include <stddef.h>
#include <stdint.h>

#include "common/io.h"

/*
 * >0 bytes read, 0 at end of file, CQW_EAGAIN, or an error. May downgrade
 * *kind (see enum cqw__fd_kind); the caller keeps it for the next call.
 */
int64_t cqw__io_read(cqw_fd fd, int *kind, void *buf, size_t len);

/*
 * BLOCKING. A read that sleeps until data, EOF or an error: >0, 0 or an
 * error; CQW_EINTR (nothing read); CQW_EAGAIN if the descriptor was made
 * non-blocking by its owner. With all, a socket read waits for all len
 * bytes (MSG_WAITALL; a signal or EOF may still cut it short); a pipe
 * read returns what has come.
 */
int64_t cqw__io_read_wait(cqw_fd fd, int kind, void *buf, size_t len, int all);

/* Bytes waiting to be read on a socket or pipe (FIONREAD). */
int64_t cqw__io_nread(cqw_fd fd);

/*
 * BLOCKING. A write that sleeps until all of iov is written, as a blocking
 * write() does (fewer bytes when a signal cuts it short or the reader
 * goes); CQW_EINTR only when nothing was written. CQW_EAGAIN or a short
 * count if the owner made the descriptor non-blocking. Never SIGPIPE.
 */
int64_t cqw__io_writev_wait(cqw_fd fd, int kind, const cqw__iov *iov, int cnt);

/* Copy up to len bytes of a socket's queue without consuming them. */
int64_t cqw__io_peek(cqw_fd sock, void *buf, size_t len);

/*
 * Bytes written (maybe fewer than asked: at most PIPE_BUF on a
 * CQW__FD_PIPE_POLL), CQW_EAGAIN, or an error (CQW_EPIPE when the reader
 * is gone; never SIGPIPE). May downgrade *kind as cqw__io_read() does.
 */
int64_t cqw__io_writev(cqw_fd fd, int *kind, const cqw__iov *iov, int cnt);

/*
 * Wait up to timeout_ms until fd is readable (or at EOF or in error), or
 * writable with want_write. 1 ready, 0 timed out, or an error (CQW_EBADF
 * for a descriptor that is not open). BLOCKING unless timeout_ms is 0:
 * CQW_EINTR.
 */
int cqw__io_wait(cqw_fd fd, int want_write, int timeout_ms);

/*
 * Readiness of many descriptors for reading: sets ready[i], returns how
 * many are ready, 0 on timeout. BLOCKING unless timeout_ms is 0: CQW_EINTR.
 */
int cqw__io_wait_many(const cqw_fd *fds, int *ready, size_t n, int timeout_ms);

/* A connected stream socket pair. */
int cqw__io_socketpair(cqw_fd fds[2]);
/* A pipe: fds[0] reads, fds[1] writes. */
int cqw__io_pipe(cqw_fd fds[2]);

/* BLOCKING. One byte 0x01 with fd attached (SCM_RIGHTS). CQW_EINTR. */
int cqw__io_send_fd(cqw_fd sock, cqw_fd fd);
/*
 * BLOCKING. The counterpart. CQW_EOF, CQW_ENOHANDLE, CQW_EPROTO, CQW_EINTR
 * (nothing received).
 */
int cqw__io_recv_fd(cqw_fd sock, cqw_fd *out);

/*
 * Sockets for Listener / Client, close-on-exec. A listening socket is
 * O_NONBLOCK (it is ours, and accept must not sleep: see sock.c); the
 * sockets that connect and accept return are blocking.
 */
struct cqw__addr;
int cqw__sock_listen(const struct cqw__addr *a, int backlog, cqw_fd *out);
/*
 * BLOCKING. CQW_EINTR: the socket that was connecting is closed, nothing
 * is left half-connected; the caller may try again.
 */
int cqw__sock_connect(const struct cqw__addr *a, int64_t deadline,
		      cqw_fd *out);
/*
 * BLOCKING. Wait up to timeout_ms for a peer: CQW_ETIMEDOUT if none came
 * (also when another process sharing the listener took it), CQW_EINTR.
 */
int cqw__sock_accept(cqw_fd lfd, cqw_fd *out, int timeout_ms);
/* The address a socket is bound to. */
int cqw__sock_name(cqw_fd fd, struct cqw__addr *a);
int cqw__unlink(const char *path);

/*
 * Peeking, for frame-exact receives (src/posix/peek.c). Blocking calls
 * return CQW_EINTR when the thread's signal check says so.
 */
/* As cqw__io_peek(), but sleeps until something is queued (or EOF). */
int64_t cqw__io_peek_wait(cqw_fd sock, void *buf, size_t len);
/*
 * Copy up to len bytes queued in pipe fd without consuming them (tee(2)
 * into a private pipe, one per thread, empty before and after). wait:
 * sleep until something is queued. 0 at EOF, CQW_EAGAIN, CQW_EOPNOTSUPP
 * where fd cannot be peeked (not a pipe), or an error.
 */
int64_t cqw__io_pipe_peek(cqw_fd fd, void *buf, size_t len, int wait);
/* 1 if the peer closed its end (reads would end), 0 if not, or an error. */
int cqw__io_hup(cqw_fd fd);
/*
 * Non-blocking, for the poll backend's accept and connect ios: the next
 * peer on listener lfd (its descriptor, blocking, close-on-exec), or
 * CQW_EAGAIN if none is there (another process took it, or it gave up);
 * whether the connect begun on fd has finished: 0, its error, or
 * CQW_EAGAIN while it is still going.
 */
int cqw__io_accept(cqw_fd lfd);
int cqw__io_connected(cqw_fd fd);
/*
 * One gather read that sleeps until data: a socket waits for all of iov
 * (MSG_WAITALL), a pipe returns what is there. Bytes read, or an error.
 */
int64_t cqw__io_readv_wait(cqw_fd fd, int kind, cqw__iov *iov, int cnt);
/* Sleep; CQW_EINTR if a signal came and the thread's check said stop. */
int cqw__sleep_us(unsigned us);
/*
 * About how many bytes fd's kernel buffer can hold for a reader (pipes:
 * F_GETPIPE_SZ; sockets: a share of SO_RCVBUF), or an error.
 */
int64_t cqw__io_queue_cap(cqw_fd fd, int kind);

#endif
