/*
 * The I/O that src/common asks of the platform (src/posix on Unix). Every
 * call is non-blocking unless it says otherwise, retries EINTR itself, and
 * returns a count or a negative CQW_E* code. Descriptors are never switched
 * to O_NONBLOCK: another process (a Python peer that inherited the pipe)
 * may share the open file and expects it blocking. Sockets use
 * MSG_DONTWAIT per call; pipes use RWF_NOWAIT, or readiness first where the
 * kernel lacks it.
 */
#ifndef CQW_IO_H
#define CQW_IO_H

#include <stddef.h>
#include <stdint.h>

#include "cqwire.h"

#ifdef _WIN32
typedef struct cqw__iov {
	unsigned long len;
	char *base;
} cqw__iov;
#define CQW__IOV_BASE(v) ((v)->base)
#define CQW__IOV_LEN(v) ((v)->len)
#define CQW__IOV_MAX 1024
#else
#include <sys/uio.h>
typedef struct iovec cqw__iov;
#define CQW__IOV_BASE(v) ((v)->iov_base)
#define CQW__IOV_LEN(v) ((v)->iov_len)
#define CQW__IOV_MAX 1024
#endif

enum cqw__fd_kind {
	CQW__FD_SOCK = 1, /* a stream socket: send/recv with flags */
	CQW__FD_PIPE = 2, /* anything else read/write works on */
};

/* What fd is: a CQW__FD_* kind, or CQW_EBADF. */
int cqw__io_fd_kind(cqw_fd fd);

/* >0 bytes read, 0 at end of file, CQW_EAGAIN, or an error. */
int64_t cqw__io_read(cqw_fd fd, int kind, void *buf, size_t len);

/*
 * A read that sleeps until data, EOF or an error: >0, 0 or an error;
 * CQW_EAGAIN if the descriptor was made non-blocking by its owner. With
 * all, a socket read waits for all len bytes (MSG_WAITALL; a signal or
 * EOF may still cut it short); a pipe read returns what has come.
 */
int64_t cqw__io_read_wait(cqw_fd fd, int kind, void *buf, size_t len, int all);

/* Bytes waiting to be read on a socket or pipe (FIONREAD). */
int64_t cqw__io_nread(cqw_fd fd);

/*
 * A write that sleeps until all of iov is written, as a blocking write()
 * does (fewer bytes only when a signal cuts it short). CQW_EAGAIN or a
 * short count if the owner made the descriptor non-blocking.
 */
int64_t cqw__io_writev_wait(cqw_fd fd, int kind, const cqw__iov *iov, int cnt);

/* Copy up to len bytes of a socket's queue without consuming them. */
int64_t cqw__io_peek(cqw_fd sock, void *buf, size_t len);

/*
 * Fill iov[0..cnt) whole from a socket, sleeping if it must (the caller
 * knows the bytes are there). 0 or an error.
 */
int cqw__io_readv_all(cqw_fd sock, cqw__iov *iov, int cnt);

/* Bytes written (maybe fewer than asked), CQW_EAGAIN, or an error. */
int64_t cqw__io_writev(cqw_fd fd, int kind, const cqw__iov *iov, int cnt);

/*
 * Wait up to timeout_ms until fd is readable (or at EOF or in error), or
 * writable with want_write. 1 ready, 0 timed out, or an error (CQW_EBADF
 * for a descriptor that is not open).
 */
int cqw__io_wait(cqw_fd fd, int want_write, int timeout_ms);

/*
 * Readiness of many descriptors for reading: sets ready[i], returns how
 * many are ready, 0 on timeout.
 */
int cqw__io_wait_many(const cqw_fd *fds, int *ready, size_t n, int timeout_ms);

/* Monotonic milliseconds, and microseconds. */
int64_t cqw__now_ms(void);
int64_t cqw__now_us(void);

/* Milliseconds left until deadline (-1: none), for a wait call. */
int cqw__remaining_ms(int64_t deadline);

int cqw__io_close(cqw_fd fd);
/* A connected stream socket pair. */
int cqw__io_socketpair(cqw_fd fds[2]);
/* A pipe: fds[0] reads, fds[1] writes. */
int cqw__io_pipe(cqw_fd fds[2]);

/* One byte 0x01 with fd attached (SCM_RIGHTS); blocking. */
int cqw__io_send_fd(cqw_fd sock, cqw_fd fd);
/* The counterpart; blocking. CQW_EOF, CQW_ENOHANDLE, CQW_EPROTO. */
int cqw__io_recv_fd(cqw_fd sock, cqw_fd *out);

/* Sockets for Listener / Client (blocking, close-on-exec). */
struct cqw__addr;
int cqw__sock_listen(const struct cqw__addr *a, int backlog, cqw_fd *out);
int cqw__sock_connect(const struct cqw__addr *a, cqw_fd *out);
/* Wait up to timeout_ms for a peer: CQW_ETIMEDOUT if none came. */
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
 * Copy up to len bytes queued in pipe fd without consuming them, through
 * scratch (a private pipe, empty before and after). wait: sleep until
 * something is queued. 0 at EOF, CQW_EAGAIN, CQW_EOPNOTSUPP where fd
 * cannot be peeked (not a pipe), or an error (scratch must then be
 * remade).
 */
int64_t cqw__io_pipe_peek(cqw_fd fd, cqw_fd scratch[2], void *buf, size_t len,
			  int wait);
/* 1 if the peer closed its end (reads would end), 0 if not, or an error. */
int cqw__io_hup(cqw_fd fd);
/*
 * One gather read that sleeps until data: a socket waits for all of iov
 * (MSG_WAITALL), a pipe returns what is there. Bytes read, or an error.
 */
int64_t cqw__io_readv_wait(cqw_fd fd, int kind, cqw__iov *iov, int cnt);
void cqw__sleep_us(unsigned us);
/*
 * About how many bytes fd's kernel buffer can hold for a reader (pipes:
 * F_GETPIPE_SZ; sockets: a share of SO_RCVBUF), or an error.
 */
int64_t cqw__io_queue_cap(cqw_fd fd, int kind);

#endif
