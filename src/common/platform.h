/*
 * What src/common needs from the operating system, implemented once per
 * platform with the same file names: src/posix (sockets, pipes, OpenSSL's
 * libcrypto, getrandom) and src/win (Winsock, named pipes, BCrypt). The
 * transports' synchronous halves are the platform's too (transport.h).
 * Blocking calls return CQW_EINTR only when the thread's signal check
 * says stop (cqw__eintr_stop()).
 */
#ifndef CQW_PLATFORM_H
#define CQW_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

#include "address.h"
#include "auth.h"
#include "io.h"

#define CQW__HMAC_MAX 64 /* longest digest we compute (SHA-384: 48) */

/* --- crypto.c ---------------------------------------------------------- */

/*
 * HMAC-<digest>(key, msg) into out (CQW__HMAC_MAX bytes). Returns the
 * digest length, or CQW_ENOSYS if the digest is not available (FIPS, or
 * SHA-3 on a Windows without it).
 */
int cqw__hmac(enum cqw__digest digest, const void *key, size_t keylen,
	      const void *msg, size_t msglen, uint8_t *out);

/* len bytes from the system's CSPRNG. 0 or an error. */
int cqw__random(void *buf, size_t len);

/* Constant-time comparison of a[0..n) and b[0..n): 0 when equal. */
int cqw__memeq_ct(const void *a, const void *b, size_t n);

/* Zero a secret in a way the compiler may not optimise away. */
void cqw__wipe(void *p, size_t n);

/* --- proc.c; signals.c (common: the same everywhere) -------------------- */

/*
 * A blocking wait was interrupted: 1 if the thread's signal check
 * (cqw_set_signal_check) says to stop and return CQW_EINTR, 0 to retry.
 */
int cqw__eintr_stop(void);
/* 1 if the calling thread has a signal check set (Windows slices waits). */
int cqw__signal_check_set(void);

/* The calling process, and thread, as numbers to compare for equality. */
uint64_t cqw__process_id(void);
uint64_t cqw__thread_id(void);

/* --- conn: handles for connections -------------------------------------- */

/* What handle is (enum cqw__fd_kind), or CQW_EBADF. */
int cqw__io_fd_kind(cqw_fd handle);

/*
 * Python's Pipe(duplex): h[0] and h[1] connected, with their kinds. Not
 * duplex: h[0] only reads and h[1] only writes.
 */
int cqw__os_pipe(cqw_fd h[2], int kind[2], int duplex);

/*
 * cqw_wait() (conn.c checked items and n): sets items[i].ready, returns
 * how many are ready (0 at the timeout) or an error. No limit on n.
 */
int cqw__os_wait(struct cqw_wait_item *items, size_t n, int timeout_ms);

/*
 * Handle passing (multiprocessing.reduction). c is open and writable /
 * readable, with no op on a loop. target_pid: the process that will
 * receive it (Windows duplicates the handle into it; 0: the peer of a
 * named pipe; POSIX ignores it).
 */
int cqw__os_send_handle(cqw_conn *c, cqw_fd handle, uint64_t target_pid);
int cqw__os_recv_handle(cqw_conn *c, cqw_fd *handle);

/* --- sock.c, pipe.c: Listener and Client endpoints ---------------------- */

/* A listening endpoint: a socket, or a set of named pipe instances. */
struct cqw__lsock;

/*
 * Listen on a. The address really bound (port resolved) goes to bound.
 * A unix path that exists: CQW_EADDRINUSE.
 */
int cqw__listen_open(struct cqw__lsock **out, const struct cqw__addr *a,
		     int backlog, struct cqw__addr *bound);
/*
 * BLOCKING. Wait up to timeout_ms (-1: forever) for a peer: its handle
 * and kind. CQW_ETIMEDOUT if none came (also when another process
 * sharing the endpoint took it).
 */
int cqw__listen_accept(struct cqw__lsock *l, cqw_fd *h, int *kind,
		       int timeout_ms);
/* What cqw_listener_fileno() returns. */
cqw_fd cqw__listen_fileno(const struct cqw__lsock *l);
/*
 * Close and free. A unix path is unlinked only in the process that
 * opened it (a forked child's close leaves it to the parent).
 */
int cqw__listen_close(struct cqw__lsock *l);

/*
 * BLOCKING. Connect to a before deadline (absolute, cqw__now_ms(); -1:
 * none): the handle and its kind. Named pipes retry a busy pipe until the
 * deadline, or for 20 s without one, as Python's Client does. A full
 * AF_UNIX backlog is retried until the deadline. CQW_ETIMEDOUT and
 * CQW_EINTR leave nothing half-connected.
 */
int cqw__os_connect(const struct cqw__addr *a, cqw_fd *h, int *kind,
		    int64_t deadline);

/*
 * --- servers on the loop (server.c): accepts and connects as ios --------
 *
 * Each accept or connect op lends the platform an io and a scratch area
 * of CQW__SRV_SCRATCH bytes that live until the io is over (Windows keeps
 * AcceptEx's addresses and the socket it accepts into there; POSIX a
 * sockaddr).
 */
struct cqw__io;
#define CQW__SRV_SCRATCH 320

/*
 * Make io an accept on l (op, handle, kind set). 1 if io->handle is a new
 * handle that the loop must attach before starting io (a pipe instance),
 * 0 if it is the listener's own, or an error.
 */
int cqw__listen_accept_io(struct cqw__lsock *l, struct cqw__io *io,
			  void *scratch);
/*
 * io completed with io->result >= 0: the new connection's handle and
 * kind, ready to wrap. An error (the accepted handle then closed) ends
 * this accept only; the listener goes on.
 */
int cqw__listen_accept_done(struct cqw__lsock *l, struct cqw__io *io, cqw_fd *h,
			    int *kind);
/* io ended without a peer (an error, a cancel): free what accept_io made. */
void cqw__listen_accept_drop(struct cqw__lsock *l, struct cqw__io *io);

/*
 * Begin connecting to a, without blocking: 1 if connected already (the
 * handle is io->handle), 0 if io (CQW__IO_CONNECT, handle set) must run
 * to finish it, CQW_EAGAIN if the peer cannot take it now (a full AF_UNIX
 * backlog: ask cqw__os_connect_again later; io->handle is open), or an
 * error with nothing open. Name resolution, where a host name needs it,
 * blocks.
 */
int cqw__os_connect_begin(const struct cqw__addr *a, struct cqw__io *io,
			  void *scratch);
/* After CQW_EAGAIN: the same answers as cqw__os_connect_begin. */
int cqw__os_connect_again(struct cqw__io *io, void *scratch);
/*
 * Connected (begin said 1, or io completed with 0): make io->handle what
 * a connection wraps (blocking again, TCP_NODELAY): its kind, or an error.
 */
int cqw__os_connect_done(struct cqw__io *io, int *kind);

#endif
