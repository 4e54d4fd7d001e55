/*
 * cqwire: completion-based message passing between processes, speaking the
 * wire format of Python's multiprocessing.connection (and billiard).
 *
 * Conventions used by every function below:
 * - Functions return 0 or a count on success and a negative CQW_E* code on
 *   failure. On POSIX, CQW_EFOO == -EFOO, so kernel errors pass through.
 * - Timeouts are milliseconds: a negative value waits forever, 0 does not
 *   block. (Python's poll(-1) is a non-blocking check; pass 0 for that.)
 * - Optional Python arguments that take None use -1 here (CQW_NONE).
 * - Objects are opaque and allocated by the library; struct cqw_op is owned
 *   by the caller and lent to the loop between submit and reap.
 */
#ifndef CQWIRE_H
#define CQWIRE_H

#include <stddef.h>
#include <stdint.h>

#ifndef _WIN32
#include <errno.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(CQW_BUILDING_DLL)
#define CQW_EXTERN __declspec(dllexport)
#elif defined(__GNUC__)
#define CQW_EXTERN __attribute__((visibility("default")))
#else
#define CQW_EXTERN
#endif

#define CQW_VERSION_MAJOR 0
#define CQW_VERSION_MINOR 1
#define CQW_VERSION_PATCH 0

#ifdef _WIN32
typedef intptr_t cqw_fd; /* HANDLE or SOCKET */
#else
typedef int cqw_fd;
#endif

/* ----------------------------------------------------------------------
 * Errors
 *
 * One list generates the codes, cqw_strerror() and cqw_err_name(). System
 * errors keep their errno value (negated); cqwire's own codes live below
 * -4000 where no errno reaches. Windows maps its codes onto these in the
 * iocp backend, using the Linux numbers.
 */
#ifdef _WIN32
#define CQW__SYS(name, linux_value) (-(linux_value))
#else
#define CQW__SYS(name, linux_value) (-(name))
#endif

#define CQW_ERRNO_MAP(X)                                                       \
	X(EPERM, CQW__SYS(EPERM, 1), "operation not permitted")                \
	X(ENOENT, CQW__SYS(ENOENT, 2), "no such file or directory")            \
	X(EINTR, CQW__SYS(EINTR, 4), "interrupted system call")                \
	X(EIO, CQW__SYS(EIO, 5), "i/o error")                                  \
	X(EBADF, CQW__SYS(EBADF, 9), "bad file descriptor")                    \
	X(EAGAIN, CQW__SYS(EAGAIN, 11), "resource temporarily unavailable")    \
	X(ENOMEM, CQW__SYS(ENOMEM, 12), "not enough memory")                   \
	X(EACCES, CQW__SYS(EACCES, 13), "permission denied")                   \
	X(EFAULT, CQW__SYS(EFAULT, 14), "bad address")                         \
	X(EBUSY, CQW__SYS(EBUSY, 16), "resource busy")                         \
	X(EEXIST, CQW__SYS(EEXIST, 17), "file exists")                         \
	X(EINVAL, CQW__SYS(EINVAL, 22), "invalid argument")                    \
	X(ENFILE, CQW__SYS(ENFILE, 23), "too many open files in system")       \
	X(EMFILE, CQW__SYS(EMFILE, 24), "too many open files")                 \
	X(ENOSPC, CQW__SYS(ENOSPC, 28), "no space left on device")             \
	X(EPIPE, CQW__SYS(EPIPE, 32), "broken pipe")                           \
	X(ENAMETOOLONG, CQW__SYS(ENAMETOOLONG, 36), "name too long")           \
	X(ENOSYS, CQW__SYS(ENOSYS, 38), "function not implemented")            \
	X(EPROTO, CQW__SYS(EPROTO, 71), "protocol error")                      \
	X(ENOTSOCK, CQW__SYS(ENOTSOCK, 88), "not a socket")                    \
	X(EMSGSIZE, CQW__SYS(EMSGSIZE, 90), "message too long")                \
	X(EOPNOTSUPP, CQW__SYS(EOPNOTSUPP, 95), "operation not supported")     \
	X(EAFNOSUPPORT, CQW__SYS(EAFNOSUPPORT, 97),                            \
	  "address family not supported")                                      \
	X(EADDRINUSE, CQW__SYS(EADDRINUSE, 98), "address already in use")      \
	X(EADDRNOTAVAIL, CQW__SYS(EADDRNOTAVAIL, 99), "address not available") \
	X(ENETUNREACH, CQW__SYS(ENETUNREACH, 101), "network is unreachable")   \
	X(ECONNABORTED, CQW__SYS(ECONNABORTED, 103), "connection aborted")     \
	X(ECONNRESET, CQW__SYS(ECONNRESET, 104), "connection reset by peer")   \
	X(ENOBUFS, CQW__SYS(ENOBUFS, 105), "no buffer space available")        \
	X(ENOTCONN, CQW__SYS(ENOTCONN, 107), "socket is not connected")        \
	X(ETIMEDOUT, CQW__SYS(ETIMEDOUT, 110), "timed out")                    \
	X(ECONNREFUSED, CQW__SYS(ECONNREFUSED, 111), "connection refused")     \
	X(EHOSTUNREACH, CQW__SYS(EHOSTUNREACH, 113), "host is unreachable")    \
	X(ECANCELED, CQW__SYS(ECANCELED, 125), "operation canceled")

/* cqwire's own codes. */
#define CQW_OWN_ERRORS(X)                                          \
	X(EOF, -4001, "end of file at a message boundary")         \
	X(ETRUNC, -4002, "end of file during message")             \
	X(EAUTH, -4003, "authentication failed")                   \
	X(ETOOSHORT, -4004, "buffer too short for the message")    \
	X(ECLOSED, -4005, "handle is closed")                      \
	X(EWRITEONLY, -4006, "connection is write-only")           \
	X(EREADONLY, -4007, "connection is read-only")             \
	X(ENOHANDLE, -4008, "no handle received with the message") \
	X(EADDRESS, -4009, "address not recognized")               \
	X(EFORK, -4010, "object belongs to another process")

enum cqw_errno {
#define CQW__ENUM(name, value, text) CQW_##name = (value),
	CQW_ERRNO_MAP(CQW__ENUM) CQW_OWN_ERRORS(CQW__ENUM)
#undef CQW__ENUM
};

/* A static message for err ("unknown error" for codes not in the list). */
CQW_EXTERN const char *cqw_strerror(int err);
/* The code's name without the CQW_ prefix, e.g. "EOF" or "EPIPE". */
CQW_EXTERN const char *cqw_err_name(int err);

/* ----------------------------------------------------------------------
 * Flags
 */
#define CQW_READABLE 0x01u /* connection may receive */
#define CQW_WRITABLE 0x02u /* connection may send */
#define CQW_DUPLEX (CQW_READABLE | CQW_WRITABLE)
/*
 * The connection is the only reader of its descriptor: it may read past the
 * current frame into a staging buffer and hand up many frames per system
 * call. Never set it on a descriptor that another process or a Python
 * Connection also reads, nor on one that receives handles.
 */
#define CQW_EXCLUSIVE 0x04u
/*
 * billiard mode: refuse (CQW_EMSGSIZE) to send payloads over 0x7fffffff
 * bytes, which need the large-frame header that billiard, celery and
 * CPython <= 3.7 cannot read.
 */
#define CQW_NO_LARGE_FRAMES 0x08u

/* "None" for the optional arguments of Python's API. */
#define CQW_NONE (-1)

/* ----------------------------------------------------------------------
 * Connections: the synchronous API (Python's Connection)
 *
 * A connection is one thread's at a time, as Python's is: calls on one
 * connection from two threads at once (two receives, say) tear its
 * frames and its state. Different connections are independent.
 */
typedef struct cqw_conn cqw_conn;

/*
 * Python's Pipe(duplex). With CQW_DUPLEX in flags, *a and *b are both ends
 * of a stream socket pair. Without it, *a is the read end and *b the write
 * end of a pipe(), as Pipe(duplex=False) returns (reader, writer).
 * CQW_EXCLUSIVE and CQW_NO_LARGE_FRAMES apply to both ends. On Windows, as
 * Python's: both ends of one message-mode named pipe instance, inbound
 * only when not duplex (one pipe message per message, no header).
 */
CQW_EXTERN int cqw_pipe(cqw_conn **a, cqw_conn **b, unsigned flags);

/*
 * Wrap an open descriptor (socket or pipe). The connection owns fd from
 * now on, also on failure. On Windows fd is a socket or a message-mode
 * named pipe, opened for overlapped I/O (WSA_FLAG_OVERLAPPED,
 * FILE_FLAG_OVERLAPPED: timeouts need it); anything else is
 * CQW_EOPNOTSUPP. flags must hold CQW_READABLE and/or
 * CQW_WRITABLE. fd < 0: CQW_EINVAL. The descriptor's blocking mode is left
 * as it is (other processes may share it).
 */
CQW_EXTERN int cqw_conn_from_fd(cqw_conn **out, cqw_fd fd, unsigned flags);

/*
 * Close the descriptor. Idempotent; afterwards every operation returns
 * CQW_ECLOSED. The object stays valid until cqw_conn_free(). With ops on
 * a loop, they are cancelled and waited for first (they are reaped later,
 * mostly as CQW_ECANCELED); that must happen on the loop's thread: from
 * another, CQW_EBUSY and nothing is closed. If the wait fails, its error
 * is returned and the connection stays open, its ops cancelled.
 */
CQW_EXTERN int cqw_conn_close(cqw_conn *c);
/*
 * Close (if open) and free. NULL is a no-op. A connection that cannot be
 * closed (see above) is not freed either: memory the kernel may still
 * write is never given back.
 */
CQW_EXTERN void cqw_conn_free(cqw_conn *c);

/* Give up the descriptor without closing it; the connection is closed. */
CQW_EXTERN cqw_fd cqw_conn_detach(cqw_conn *c);

/* The descriptor, or CQW_ECLOSED. */
CQW_EXTERN cqw_fd cqw_conn_fileno(const cqw_conn *c);
CQW_EXTERN int cqw_conn_closed(const cqw_conn *c);
CQW_EXTERN int cqw_conn_readable(const cqw_conn *c);
CQW_EXTERN int cqw_conn_writable(const cqw_conn *c);

/*
 * Send one message of len bytes, blocking until it is all written. The
 * buffer is the caller's again when this returns. Returns 0.
 */
CQW_EXTERN int cqw_send_bytes(cqw_conn *c, const void *buf, size_t len);

/*
 * Python's send_bytes(buf, offset, size) on a buffer of buflen bytes:
 * size == CQW_NONE sends from offset to the end. Negative offset or size,
 * offset > buflen or offset + size > buflen: CQW_EINVAL, nothing sent.
 */
CQW_EXTERN int cqw_send_bytes_at(cqw_conn *c, const void *buf, size_t buflen,
				 int64_t offset, int64_t size);

/*
 * Receive one message into a buffer allocated with malloc(); the caller
 * frees it with cqw_free(). maxlength == CQW_NONE: no limit; other
 * negative values: CQW_EINVAL. A message longer than maxlength returns
 * CQW_EMSGSIZE without allocating, and poisons the connection as Python
 * does: a duplex end stops being readable, a read-only end is closed.
 * Returns the message length. Beyond 16 MiB, memory is allocated only as
 * the payload arrives, so a header that lies costs little.
 */
CQW_EXTERN int64_t cqw_recv_bytes(cqw_conn *c, void **buf, int64_t maxlength);

/*
 * Receive one message into buf[offset..cap). Returns its length. If it
 * does not fit, returns CQW_ETOOSHORT, stores the message length in
 * *needed (if not NULL) and keeps the message: the next receive gets it.
 * A frame-exact connection (the default) consumes nothing then: the header
 * is peeked (sockets: MSG_PEEK; pipes: tee(2)), so any other reader of the
 * descriptor may take the message instead. (A descriptor that can be
 * neither peeked nor teed, such as a tty, has its header read: the
 * message is then kept by this connection only.) offset > cap: CQW_EINVAL.
 */
CQW_EXTERN int64_t cqw_recv_bytes_into(cqw_conn *c, void *buf, size_t cap,
				       size_t offset, size_t *needed);

/*
 * 1 if a message (or EOF, or part of a message) can be read, 0 if not
 * within timeout_ms, or an error (CQW_EWRITEONLY, CQW_ECLOSED...).
 */
CQW_EXTERN int cqw_poll(cqw_conn *c, int timeout_ms);

/*
 * Opt-in spin-then-sleep: before a blocking receive sleeps, check for data
 * without sleeping for up to usec microseconds. Trades a busy CPU for the
 * cost of a wake-up (5-6 us on a 2-vCPU VM). 0 (the default) turns it off.
 */
CQW_EXTERN int cqw_conn_set_spin(cqw_conn *c, unsigned usec);

/* Free memory that cqwire allocated for the caller. */
CQW_EXTERN void cqw_free(void *p);

/* ----------------------------------------------------------------------
 * Batches: many messages per call, one gather system call where possible
 */
struct cqw_msg {
	void *buf;  /* payload (send) or destination (receive) */
	size_t cap; /* receive: capacity of buf; unused for send */
	size_t len; /* send: payload length; receive: message length */
};

/*
 * Send n messages in order, in gather writes of up to 128 frames each.
 * Blocks until all are written. Returns 0 or an error; on error a prefix
 * of msgs reached the peer, the last of it maybe cut (CQW_ETRUNC there).
 */
CQW_EXTERN int cqw_send_batch(cqw_conn *c, const struct cqw_msg *msgs,
			      size_t n);

/*
 * Receive up to n messages: wait up to timeout_ms for the first, then take
 * every further message that is wholly there. Returns the count (0 on
 * timeout). The timeout bounds the wait for the first message's header
 * and, up to 64 KiB, its payload; a larger first message is read whole
 * once its header is in. If message i does not fit msgs[i].cap, the batch
 * ends before it (it is kept); if i == 0, CQW_ETOOSHORT is returned with
 * the needed size in msgs[0].len. An error after some messages is
 * returned by the next call. Frame-exact sockets take the queued frames
 * with one peek and one exact gather read. A frame-exact connection
 * consumes only what it returns: at the timeout a frame partly queued is
 * left whole in the kernel, for this or any other reader.
 */
CQW_EXTERN int cqw_recv_batch(cqw_conn *c, struct cqw_msg *msgs, size_t n,
			      int timeout_ms);

/* ----------------------------------------------------------------------
 * wait(): readiness of many connections and raw descriptors
 */
struct cqw_wait_item {
	cqw_conn *conn; /* a connection, or NULL to use fd */
	cqw_fd fd;	/* a raw descriptor (sockets, pipes, pidfds) */
	int ready;	/* out: 1 if readable (data, EOF or error) */
};

/*
 * Python's connection.wait(): wait up to timeout_ms until at least one item
 * is readable (data, end of file, an error, or a receive that would fail
 * at once); return how many are (0 on timeout). As in Python, any open
 * connection may be waited on: a write-only, poisoned or busy one is
 * watched through its descriptor like a raw one. A closed connection is
 * CQW_ECLOSED (Python's fileno() raises) and a raw descriptor that is not
 * open CQW_EBADF (billiard's ValueError); the call then reports nothing.
 */
CQW_EXTERN int cqw_wait(struct cqw_wait_item *items, size_t n, int timeout_ms);

/* ----------------------------------------------------------------------
 * Handles (multiprocessing.reduction.send_handle / recv_handle). POSIX: on
 * AF_UNIX stream sockets, one byte 0x01 with the descriptor attached, as
 * Python sends it. Windows: the handle is duplicated into the receiving
 * process (DuplicateHandle) and its value sent as a message.
 */
CQW_EXTERN int cqw_send_handle(cqw_conn *c, cqw_fd fd);
/*
 * Python's send_handle(conn, handle, destination_pid): on Windows pid is
 * the process that will receive it (0: the other end of a named pipe);
 * POSIX ignores it.
 */
CQW_EXTERN int cqw_send_handle_to(cqw_conn *c, cqw_fd fd, uint64_t pid);
/* The new descriptor is the caller's. No descriptor attached: ENOHANDLE. */
CQW_EXTERN int cqw_recv_handle(cqw_conn *c, cqw_fd *fd);

/* ----------------------------------------------------------------------
 * Listener / Client with the HMAC handshake
 *
 * Addresses: "unix:/path", "unix:@name" (Linux abstract), a bare path,
 * "tcp:host:port", "tcp:[v6addr]:port" (port 0 picks one), and on Windows
 * "pipe:\\.\pipe\NAME" or a bare "\\.\pipe\NAME" (Python's AF_PIPE:
 * message-mode named pipes; a Client retries a busy pipe for 20 s).
 * unix: on Windows, and pipe: on POSIX, are CQW_EAFNOSUPPORT.
 */
#define CQW_AUTH_REFUSE_MD5 0x01u	/* never accept or send HMAC-MD5 */
#define CQW_AUTH_LEGACY_CHALLENGE 0x02u /* send 20 raw bytes, as <= 3.11 */

struct cqw_auth {
	const void *key; /* NULL: no authentication; an empty key is used */
	size_t keylen;
	unsigned flags; /* CQW_AUTH_* */
	int timeout_ms; /* handshake deadline; 0 means the default (20 s) */
};

typedef struct cqw_listener cqw_listener;

/*
 * Bind and listen. auth may be NULL. A unix path that exists:
 * CQW_EADDRINUSE (as Python). backlog <= 0 means 1.
 */
CQW_EXTERN int cqw_listen(cqw_listener **out, const char *address,
			  const struct cqw_auth *auth, int backlog);

/*
 * Accept one connection and, with an authkey, run the handshake (server
 * speaks first). A failed handshake closes that connection and returns
 * CQW_EAUTH (or the transport error); the listener stays usable.
 * timeout_ms bounds the wait for a peer (the handshake has its own
 * deadline).
 */
CQW_EXTERN int cqw_accept(cqw_listener *l, cqw_conn **out, int timeout_ms);

/* The bound address in the syntax above (port resolved), or NULL. */
CQW_EXTERN const char *cqw_listener_address(const cqw_listener *l);
/*
 * The listening socket. It is non-blocking (O_NONBLOCK), so that an
 * accept that loses a race with another process sharing it (prefork)
 * goes back to waiting instead of sleeping past its timeout; a Python
 * socket made from it has timeout 0. Accepted connections are blocking.
 * A named pipe listener has no one handle: CQW_EOPNOTSUPP.
 */
CQW_EXTERN cqw_fd cqw_listener_fileno(const cqw_listener *l);
/*
 * Close the socket. A unix path it created is unlinked, but only in the
 * process that called cqw_listen(): a forked child closing its inherited
 * copy leaves the path to the parent. Idempotent. With CQW_OP_ACCEPT ops
 * in flight it must come from their loop's thread (else CQW_EBUSY): they
 * are cancelled, and the socket closes once the last has completed (the
 * kernel may hold it until then). cqw_listener_free likewise frees the
 * listener with the last of them; from another thread, reap them first.
 */
CQW_EXTERN int cqw_listener_close(cqw_listener *l);
CQW_EXTERN void cqw_listener_free(cqw_listener *l);

/*
 * Connect and, with an authkey, answer then deliver a challenge. The
 * connect itself waits as long as the system lets it (a TCP SYN is
 * retried for minutes; a named pipe that stays busy, 20 s as Python).
 */
CQW_EXTERN int cqw_connect(cqw_conn **out, const char *address,
			   const struct cqw_auth *auth);
/*
 * cqw_connect with the connect bounded by timeout_ms (0: 20 s; < 0: as
 * long as the system lets it): a listener whose backlog is full, a host
 * that does not answer, a busy pipe. CQW_ETIMEDOUT leaves nothing open.
 * The handshake then has its own deadline (auth->timeout_ms).
 */
CQW_EXTERN int cqw_connect_timeout(cqw_conn **out, const char *address,
				   const struct cqw_auth *auth, int timeout_ms);

/*
 * The split for servers that run a thread per connection: accept without
 * the handshake (the acceptor stays free), then run it on the new
 * connection in its own thread. cqw_deliver_challenge and
 * cqw_answer_challenge are Python's functions of the same names (WIRE.md
 * §4): a server delivers then answers, a client answers then delivers.
 * Each has the deadline auth->timeout_ms (0: 20 s; < 0: none), reads at
 * most 256 bytes a frame and consumes nothing after its last frame.
 * CQW_EAUTH for a wrong key or a peer that breaks the protocol (a frame
 * over the cap, a lying length); CQW_ETIMEDOUT at the deadline. auth
 * must have a key.
 */
CQW_EXTERN int cqw_accept_raw(cqw_listener *l, cqw_conn **out, int timeout_ms);
CQW_EXTERN int cqw_deliver_challenge(cqw_conn *c, const struct cqw_auth *auth);
CQW_EXTERN int cqw_answer_challenge(cqw_conn *c, const struct cqw_auth *auth);

/* ----------------------------------------------------------------------
 * Signals
 *
 * A blocking call interrupted by a signal (EINTR) retries, as a C program
 * expects. A language binding that must run its signal handlers first
 * (Python's PEP 475) sets a check for the calling thread: on each EINTR,
 * cqwire calls check(arg); nonzero makes the call return CQW_EINTR, 0
 * retries. CQW_EINTR loses nothing: a receive keeps what it consumed for
 * the next call on that connection, and a send returns it only before any
 * byte of it was written (once part of it is on the wire, it finishes).
 * NULL removes the check. Per thread; the check runs on that thread.
 */
CQW_EXTERN void cqw_set_signal_check(int (*check)(void *arg), void *arg);

/* ----------------------------------------------------------------------
 * Loops and ops: the asynchronous API
 *
 * Ops are submitted to a loop, go out at cqw_flush() (one gather per
 * connection for everything queued on it), and come back from cqw_reap()
 * exactly once each. A connection belongs to the loop it is submitted on
 * while it has ops there (submitting it to another loop meanwhile is
 * CQW_EBUSY, and so are its synchronous calls); once they are all
 * completed it is free again and may outlive the loop. On the POSIX
 * backends it may then be submitted to another loop. On iocp its handle
 * stays bound to the first loop's completion port for good (Windows
 * cannot move a handle between ports): it may go on with synchronous
 * calls, be closed from any thread, and come back to that loop, but
 * submitting it to another loop returns CQW_EBUSY, also after that loop
 * is freed.
 *
 * A CQW_EXCLUSIVE socket on an io_uring loop receives with one multishot
 * receive, which stays armed between its ops, so the connection stays the
 * loop's after its last op: its next synchronous receive (from the loop's
 * thread), closing it, and cqw_loop_free() end that receive first and keep
 * every byte it took; until then, submitting it to another loop is
 * CQW_EBUSY, and so is a synchronous receive from another thread. Bytes
 * that arrive while it has no op wait in the loop's buffers until the next
 * receive (bounded: past a few buffers the receive stops, and the peer
 * waits in the kernel).
 *
 * A loop belongs to the thread that first flushes or reaps it (io_uring
 * rings are made for one issuer); from other threads, submit, flush, reap,
 * cancel and closing one of its connections return CQW_EBUSY. Only
 * cqw_loop_wake() may come from anywhere.
 *
 * fork(): the child's loop builds its own backend on first use, and every
 * op the loop held at the fork ends in the child with CQW_EFORK, whatever
 * its state: submitted but not flushed, queued, in flight, or done but not
 * yet reaped. They are the parent's, which goes on with them: nothing is
 * sent or read twice. The child's own ops, submitted after the fork, run
 * normally. A connection that had a send or a receive in flight at the
 * fork returns CQW_EFORK for sends or receives in the child (its position
 * in the stream is the parent's); other connections work in both.
 *
 * Ops must be zeroed before their first submit (the loop keeps its state
 * in priv); a reaped op may be submitted again as it is.
 */
typedef struct cqw_loop cqw_loop;

enum cqw_backend {
	CQW_BACKEND_AUTO = 0, /* CQW_BACKEND in the environment, else best */
	CQW_BACKEND_POLL = 1,
	CQW_BACKEND_URING = 2,
	CQW_BACKEND_IOCP = 3,
};

struct cqw_loop_opts {
	enum cqw_backend backend;
	unsigned entries; /* queue depth hint; 0 = default */
};

/* opts may be NULL. CQW_ENOSYS if a forced backend is not available. */
CQW_EXTERN int cqw_loop_new(cqw_loop **out, const struct cqw_loop_opts *opts);
/* Every op must have been reaped. */
CQW_EXTERN void cqw_loop_free(cqw_loop *loop);
/* "poll", "uring" or "iocp". */
CQW_EXTERN const char *cqw_loop_backend(const cqw_loop *loop);
/*
 * The backend features this loop runs with, comma-separated, "" if none
 * to report. uring: its setup flags ("single_issuer", "defer_taskrun",
 * "coop_taskrun") and "ext_arg" when timed waits use the extended
 * argument. For logs, benchmarks and tests; the string lives as long as
 * the loop.
 */
CQW_EXTERN const char *cqw_loop_features(const cqw_loop *loop);
/* Make a cqw_reap() blocked in another thread return. */
CQW_EXTERN int cqw_loop_wake(cqw_loop *loop);

enum cqw_op_kind {
	CQW_OP_SEND = 1,    /* send buf[0..len) as one message */
	CQW_OP_RECV = 2,    /* receive one message into buf[0..len) */
	CQW_OP_ACCEPT = 3,  /* accept one peer on listener, run the handshake */
	CQW_OP_CONNECT = 4, /* connect to address, run the handshake */
};

struct cqw_op {
	int kind; /* enum cqw_op_kind */
	cqw_conn *conn;
	void *buf;
	size_t len; /* SEND: payload size; RECV: capacity */
	void *user_data;
	/*
	 * Out: SEND: 0; RECV: message length; or a CQW_E* code. A RECV
	 * whose message does not fit gets CQW_ETOOSHORT and needed holds
	 * the size; the message stays for the next RECV. (On a Windows
	 * named pipe the buffer then holds the message's first len bytes:
	 * the kernel hands them over to learn the size. They are kept, and
	 * the next RECV gets the whole message.)
	 */
	int64_t result;
	size_t needed;
	/*
	 * ACCEPT and CONNECT. Each op is one connection: it completes with
	 * result 0 and conn set to a new connection that has finished the
	 * handshake (the caller's, to free with cqw_conn_free; on no loop
	 * until it is submitted to one), or with CQW_EAUTH, CQW_ETIMEDOUT,
	 * CQW_ECANCELED, CQW_EMFILE or the transport's error, conn NULL.
	 * Every handshake runs on the loop beside all the others, with its
	 * own deadline (auth->timeout_ms; the listener's for ACCEPT), reads
	 * at most 256 bytes a frame, and consumes nothing after its last
	 * frame. A server that wants 64 handshakes at once keeps 64 ACCEPT
	 * ops submitted; one at its connection limit submits none, and new
	 * peers wait in the kernel's backlog. A listener's ops go to one
	 * loop at a time (another: CQW_EBUSY); on Windows a TCP listener
	 * stays with the first loop it accepted on (IOCP binds the socket
	 * to that loop's port for good), a pipe listener does not. A
	 * CONNECT to a host name resolves it when the op starts, blocking
	 * the loop for that long: loops that must not wait use numbers. After CQW_EMFILE (or ENFILE,
	 * ENOBUFS, ENOMEM) the listener's next accept waits 100 ms, so a
	 * server that resubmits at once does not spin.
	 */
	cqw_listener *listener;	     /* ACCEPT */
	const char *address;	     /* CONNECT; read at submit */
	const struct cqw_auth *auth; /* CONNECT, NULL for none; copied */
	/*
	 * ACCEPT: how long to wait for a peer (<= 0: no limit), then
	 * CQW_ETIMEDOUT. CONNECT: the connect itself (0: 20 s; < 0: no
	 * limit); the handshake's deadline follows from auth.
	 */
	int timeout_ms;
	void *priv[6]; /* the loop's; do not touch while submitted */
};

/* Queue op. Never fails for lack of space; CQW_EINVAL for a bad op. */
CQW_EXTERN int cqw_submit(cqw_loop *loop, struct cqw_op *op);
/* Start the I/O for everything submitted. Returns 0 or an error. */
CQW_EXTERN int cqw_flush(cqw_loop *loop);
/*
 * Flush, then wait up to timeout_ms for completions; store up to max
 * completed ops in ops[] and return how many (0 on timeout). With no op
 * submitted and not yet reaped there is nothing to wait for: 0 at once.
 * CQW_EINTR if a signal came and the thread's signal check said to stop
 * (the ops stay in flight); CQW_EBUSY from a thread not the loop's.
 */
CQW_EXTERN int cqw_reap(cqw_loop *loop, struct cqw_op **ops, int max,
			int timeout_ms);
/*
 * cqw_reap, but wait until min ops have completed (or the timeout, or
 * fewer ops are left in flight than min, or a cqw_loop_wake()): a
 * round trip reaps its SEND and its RECV in one call, a fan-out parent
 * sleeps until a batch is worth waking for. On io_uring with the
 * kernel's minimum wait (6.12; cqw_loop_features() says "min_wait") the
 * kernel counts them, and returns with what there is once 50 us have
 * passed; elsewhere the loop counts them (each completion is still a
 * wake-up). min <= 1 is cqw_reap; min > max is CQW_EINVAL.
 */
CQW_EXTERN int cqw_reap_min(cqw_loop *loop, struct cqw_op **ops, int min,
			    int max, int timeout_ms);
/*
 * Ask to cancel op. It still completes exactly once, with CQW_ECANCELED
 * unless it finished first. A send already partly written, or a receive
 * whose frame is partly read, is not cancelled: CQW_EBUSY (that would
 * tear the stream); it completes when its frame does.
 */
CQW_EXTERN int cqw_cancel(cqw_loop *loop, struct cqw_op *op);

#ifdef __cplusplus
}
#endif

#endif /* CQWIRE_H */
