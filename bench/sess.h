/*
 * Helpers for the transport implementations (t-*.c): session allocation,
 * forking peers, whole reads and writes, the frame header and a buffered
 * frame reader. Not part of what cqwire-perf sees.
 */
#ifndef CQWB_SESS_H
#define CQWB_SESS_H

#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "scenario.h"

/* Variant bits of the cqwire transports (struct cqwb_transport arg). */
#define CQWB_V_EXCL 0x1u  /* CQW_EXCLUSIVE receive mode */
#define CQWB_V_SPIN 0x2u  /* cqw_conn_set_spin() */
#define CQWB_V_BATCH 0x4u /* batch API (stream) */
#define CQWB_V_URING 0x8u /* loop: io_uring backend (else poll) */
/*
 * Fan-out rows whose workers are cqwire's synchronous API (t-raw.c
 * cqw_worker()) instead of the raw worker: frame-exact, or exclusive with
 * CQWB_V_CQWW_EX. The parent is the row's own.
 */
#define CQWB_V_CQWW 0x2000u
#define CQWB_V_CQWW_EX 0x4000u
#define CQWB_V_WORKERS (CQWB_V_CQWW | CQWB_V_CQWW_EX)

/* Variants of the raw transports (t-raw.c) and Python peers. */
enum {
	CQWB_RAW,
	CQWB_RAW_BUFFERED,
	CQWB_RAW_SPIN,
	CQWB_RAW_WRITEV,
	CQWB_RAW_EPOLL,
	CQWB_RAW_WRITEV512, /* stream ceilings (t-raw.c) */
	CQWB_RAW_CONTIG
};
enum { CQWB_PY_MP, CQWB_PY_BILLIARD };

/* Largest batch, and the bytes one batch may span. */
#define CQWB_BATCH_MAX 256
#define CQWB_BATCH_BYTES (4u << 20)
/* Read-ahead buffer of the buffered raw receivers. */
#define CQWB_RBUF_SIZE (64u * 1024)

/* A zeroed session of sz bytes (a struct that starts with the base). */
void *cqwb__sess_new(size_t sz, const struct cqwb_session_ops *ops,
		     const struct cqwb_transport *t,
		     const struct cqwb_params *p);
void cqwb__sess_free(struct cqwb_session *s);
int cqwb__add_peer(struct cqwb_session *s, pid_t pid);
/*
 * Record why (for cqwb_error(), with strerror(-err) appended when err is
 * an errno) and return err, or -EIO if err is not negative.
 */
int cqwb__fail(int err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * fork() for a peer: in the child, die with the parent, and sit on the
 * peer CPUs if pinning is on (idx spreads several peers). idx < 0: a
 * process that plays the parent (a driver, a Python parent): it stays on
 * the parent's CPU.
 */
pid_t cqwb__fork(int idx);
/*
 * The peer CPUs as "1" or "1,2,3" for a process that forks its own peers
 * (pypeer.py), or "-" if pinning is off.
 */
const char *cqwb__peer_cpus(char *buf, size_t len);
/*
 * A peer's end: exit 0 when err says the parent went away (end of file,
 * EPIPE, ECONNRESET: the harness closes sessions with data in flight),
 * 1 on anything else.
 */
void cqwb__peer_end(int64_t err) __attribute__((noreturn));
/* Wait for pid, killing it after timeout_ms; 0 if it exited 0. */
int cqwb__reap(pid_t pid, int timeout_ms);
/* Reap every peer of s (after its connections are closed). */
int cqwb__reap_peers(struct cqwb_session *s, int timeout_ms);

/*
 * The timed round-trip loop every transport shares: call once(s) up to
 * max_ops times or until max_ns have passed, recording each call's time
 * in lat (if not NULL); fill out. once() returns 0 or a cqwb__fail() code,
 * which ends the loop and is returned.
 */
int cqwb__rtt_loop(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
		   struct cqwb_hist *lat, struct cqwb_step *out,
		   int (*once)(struct cqwb_session *s));

/* Whole transfers on a blocking descriptor: 0, or -errno (-EPIPE at EOF). */
int cqwb__read_full(int fd, void *buf, size_t n);
int cqwb__write_full(int fd, const void *buf, size_t n);
int cqwb__writev_full(int fd, struct iovec *iov, int cnt);
/*
 * The connection of a session with one peer: a socket pair, or two pipes
 * for a CQWB_V_PIPE transport. end[0] is the parent's, end[1] the peer's;
 * rd and wr are one descriptor on a socket. (t-raw.c)
 */
struct cqwb__chan {
	int rd, wr;
};
int cqwb__chan_open(const struct cqwb_transport *t, struct cqwb__chan end[2]);
/* Close both descriptors of one end (once if they are the same). */
void cqwb__chan_close(struct cqwb__chan *e);
/* Poll for POLLIN (-1: forever); then a non-blocking fd can be read. */
int cqwb__wait_in(int fd);

/* The 4-byte big-endian frame header of multiprocessing.connection. */
void cqwb__put_hdr(uint8_t *p, uint32_t len);
uint32_t cqwb__get_hdr(const uint8_t *p);

/* Messages per batch for payloads of size bytes. */
size_t cqwb__batch(size_t size);

/*
 * A buffered frame reader: one read() fetches as many frames as the
 * kernel has; payloads that do not fit the buffer go straight into the
 * destination.
 */
struct cqwb__rbuf {
	uint8_t *buf;
	size_t off, len;
	int spin; /* non-blocking reads, spinning on EAGAIN */
};

int cqwb__rbuf_init(struct cqwb__rbuf *rb);
void cqwb__rbuf_free(struct cqwb__rbuf *rb);
/*
 * Read one whole frame; its payload goes to dst (cap bytes, the rest is
 * dropped). Returns the payload length, or -errno (-EPIPE at EOF).
 */
int64_t cqwb__rbuf_frame(struct cqwb__rbuf *rb, int fd, void *dst, size_t cap);
/*
 * Keep the unread tail, then one read() of what is there (waiting in
 * poll() on a non-blocking descriptor if nothing is). 0 or -errno.
 */
int cqwb__rbuf_fill(struct cqwb__rbuf *rb, int fd);
/* 1 if a whole frame is buffered (reading it will not block). */
int cqwb__rbuf_has_frame(const struct cqwb__rbuf *rb);

/*
 * A session in another process, driven over pipes (ctl.c; the protocol is
 * described there and in peers/pypeer.py).
 */
struct cqwb__ctl {
	pid_t pid;
	FILE *to, *from;
	char *line;
	size_t cap;
};

/* Fork with pipes on stdin/stdout; the child execs argv or runs fn. */
int cqwb__ctl_spawn(struct cqwb__ctl *ctl, char *const argv[],
		    void (*fn)(void *arg), void *arg);
/* The same, forked with cqwb__fork(idx): idx >= 0 sits on a peer CPU. */
int cqwb__ctl_spawn_at(struct cqwb__ctl *ctl, int idx, char *const argv[],
		       void (*fn)(void *arg), void *arg);
/* Read a line that must start with want; "error TEXT" becomes the error. */
int cqwb__ctl_line(struct cqwb__ctl *ctl, const char *who, const char *want);
/* Wait for "ready PID PEERS..." and take the pids into s. */
int cqwb__ctl_ready(struct cqwb__ctl *ctl, struct cqwb_session *s,
		    const char *who);
int cqwb__ctl_step(struct cqwb__ctl *ctl, const char *who, uint64_t max_ops,
		   uint64_t max_ns, struct cqwb_hist *lat,
		   struct cqwb_step *out);
/*
 * cqwb__ctl_step() in two halves, so that several sessions in other
 * processes (the clients of a server scenario) run their steps at once:
 * send every "run", then collect every "done".
 */
int cqwb__ctl_run(struct cqwb__ctl *ctl, const char *who, uint64_t max_ops,
		  uint64_t max_ns, int want_lat);
int cqwb__ctl_done(struct cqwb__ctl *ctl, const char *who,
		   struct cqwb_hist *lat, struct cqwb_step *out);
int cqwb__ctl_close(struct cqwb__ctl *ctl);
/*
 * The other side, in a forked child whose stdin and stdout are the pipes
 * (after it said "ready"): answer every "run" with a step of s, close s
 * at "quit" and _exit (1 if a step or the close failed).
 */
void cqwb__ctl_answer(struct cqwb_session *s) __attribute__((noreturn));
/* Open the session with open() in a fresh forked driver process. */
int cqwb__remote_open(struct cqwb_session **out, const struct cqwb_transport *t,
		      const struct cqwb_params *p,
		      int (*open)(struct cqwb_session **out,
				  const struct cqwb_transport *t,
				  const struct cqwb_params *p));

/* bench/peers/pypeer.py, embedded by embed.cmake (pypeer-src.c). */
extern const char cqwb_pypeer_src[];

/* Implementations (one per file). */
int cqwb__raw_open(struct cqwb_session **out, const struct cqwb_transport *t,
		   const struct cqwb_params *p);
int cqwb__cqw_open(struct cqwb_session **out, const struct cqwb_transport *t,
		   const struct cqwb_params *p);
int cqwb__loop_open(struct cqwb_session **out, const struct cqwb_transport *t,
		    const struct cqwb_params *p);
int cqwb__zmq_open(struct cqwb_session **out, const struct cqwb_transport *t,
		   const struct cqwb_params *p);
int cqwb__nng_open(struct cqwb_session **out, const struct cqwb_transport *t,
		   const struct cqwb_params *p);
int cqwb__py_open(struct cqwb_session **out, const struct cqwb_transport *t,
		  const struct cqwb_params *p);
int cqwb__uring_open(struct cqwb_session **out, const struct cqwb_transport *t,
		     const struct cqwb_params *p);
const char *cqwb__loop_unavailable(const struct cqwb_transport *t);
const char *cqwb__uring_unavailable(const struct cqwb_transport *t);
/*
 * The setup flags of the last ring t-uring.c made in this process
 * ("SINGLE_ISSUER|DEFER_TASKRUN", or the fallback and why).
 */
const char *cqwb__uring_note(void);
const char *cqwb__zmq_unavailable(const struct cqwb_transport *t);
const char *cqwb__nng_unavailable(const struct cqwb_transport *t);
const char *cqwb__py_unavailable(const struct cqwb_transport *t);

/*
 * Server scenarios (accept, echo-clients; t-fleet.c, t-accept.c,
 * t-echo.c): the transport's arg is the server kind, with CQWB_V_NOAUTH
 * for connections without the HMAC handshake.
 */
enum {
	CQWB_SRV_SYNC,	     /* forked C server: cqw_accept() in a loop */
	CQWB_SRV_LOOP_URING, /* forked C server: CQW_OP_ACCEPT on a loop */
	CQWB_SRV_LOOP_POLL,
	CQWB_SRV_ECHO,	 /* the cqwire-echo program */
	CQWB_SRV_PYTHON, /* multiprocessing.connection.Listener */
	CQWB_SRV_ZMQ	 /* a ZeroMQ ROUTER */
};
#define CQWB_SRV_KIND(arg) ((arg)&0xff)
#define CQWB_V_NOAUTH 0x100u
#define CQWB_V_CCLIENTS 0x200u /* accept: C clients for the python server */
int cqwb__accept_open(struct cqwb_session **out, const struct cqwb_transport *t,
		      const struct cqwb_params *p);
int cqwb__echo_open(struct cqwb_session **out, const struct cqwb_transport *t,
		    const struct cqwb_params *p);
const char *cqwb__srv_unavailable(const struct cqwb_transport *t);
/* bench/peers/pyserve.py, embedded like pypeer.py. */
extern const char cqwb_pyserve_src[];

/*
 * The raw fan-out worker that every C fan-out parent talks to, so that
 * only the parent differs: wait in poll() (keyed wake-ups, DESIGN §6),
 * read what is there, answer every whole request with one write. Returns
 * when the parent closes; never returns to the caller's code (_exit).
 */
void cqwb__raw_worker(int fd) __attribute__((noreturn));
/*
 * Make N socket pairs and fork a raw worker on each; fds[i] is the
 * parent's end. Workers close every end but their own.
 */
int cqwb__spawn_workers(struct cqwb_session *s, int *fds, int n);

#endif
