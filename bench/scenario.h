/*
 * The measured scenarios, shared by cqwire-bench (bench/, Google
 * Benchmark) and cqwire-perf (tools/perf/): one implementation of every
 * transport, so both report the same thing.
 *
 * A transport opens a session: the processes of one scenario (a forked
 * echo peer, a forked receiver, N forked workers, or a Python interpreter
 * that runs both sides itself) connected and ready. A session is then
 * stepped: each step does up to max_ops operations or runs for about
 * max_ns, whichever ends first, and says how many it did and how long
 * they took. The operation is a round trip (rtt), a message delivered
 * (stream: the step ends when the receiver has acknowledged every
 * message) or a response received (fanout). Latencies of round trips and
 * requests go into a histogram when the caller passes one.
 *
 * Sessions keep their processes between steps, so a caller warms up with
 * a first step and measures the next ones; cqwb_measure() adds the CPU
 * time of every process involved and the parent's system calls.
 */
#ifndef CQWB_SCENARIO_H
#define CQWB_SCENARIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hist.h"

enum cqwb_scn {
	CQWB_RTT = 0,	 /* parent sends, a forked peer echoes */
	CQWB_STREAM = 1, /* parent sends one way, a forked peer receives */
	CQWB_FANOUT = 2, /* one parent, N forked workers, K requests each */
	/*
	 * Servers. The parent role is a server process (parent_pid) and
	 * the peers are its client processes, so the parent's CPU is the
	 * server's. accept: `workers` client processes each connect, run
	 * the handshake and one round trip, and close, over and over; one
	 * operation is one connection. echo-clients: `workers` concurrent
	 * client connections, one round trip in flight on each; one
	 * operation is one round trip.
	 */
	CQWB_ACCEPT = 3,
	CQWB_ECHO_CLIENTS = 4,
	CQWB_NSCN
};
#define CQWB_BIT(scn) (1u << (scn))

/*
 * "rtt", "stream", "fanout", "accept", "echo-clients"; and back (-1 if
 * unknown).
 */
const char *cqwb_scn_name(enum cqwb_scn scn);
int cqwb_scn_parse(const char *name);

struct cqwb_params {
	enum cqwb_scn scn;
	size_t size;  /* payload bytes per message (>= 1) */
	int workers;  /* fanout: N worker processes */
	int inflight; /* fanout: K requests in flight per worker */
};

struct cqwb_session;

struct cqwb_transport {
	const char *name; /* JSON "transport": "raw", "cqwire-uring"... */
	const char *api;  /* NULL, "sync", "per-message", "batch" */
	/*
	 * NULL, "frame-exact", "exclusive"; in the server scenarios how
	 * connections are set up: "hmac" (the handshake with an authkey)
	 * or "no-auth".
	 */
	const char *mode;
	const char *wait; /* NULL, or "spin" */
	unsigned scns;	  /* CQWB_BIT() of the scenarios it runs */
	int arg;	  /* the implementation's own variant number */
	/* NULL if it can run here, else the reason it cannot. */
	const char *(*unavailable)(const struct cqwb_transport *t);
	int (*open)(struct cqwb_session **out, const struct cqwb_transport *t,
		    const struct cqwb_params *p);
};

/*
 * An arg bit that means the same for every transport: the session runs
 * over pipe()s instead of a socket pair, as Python's Pipe(duplex=False)
 * (billiard's pool uses them): rtt over two pipes, one each way; stream
 * with the messages on one pipe and the receiver's count back on another.
 */
#define CQWB_V_PIPE 0x1000u
/* "pipe" for a CQWB_V_PIPE transport, NULL for a socket pair. */
const char *cqwb_channel(const struct cqwb_transport *t);
/*
 * Fan-out rows whose workers are not the raw worker: "cqwire-sync
 * frame-exact", "cqwire-sync exclusive" (JSON "worker"); NULL otherwise.
 */
const char *cqwb_worker(const struct cqwb_transport *t);

/* Every transport, in display order; the list ends with a NULL name. */
extern const struct cqwb_transport cqwb_transports[];

/* Why t cannot run params p here (NULL if it can). */
const char *cqwb_unavailable(const struct cqwb_transport *t,
			     const struct cqwb_params *p);
/*
 * "cqwire-uring batch exclusive": name, then api, mode, wait if set, then
 * "pipe" for a pipe transport.
 */
void cqwb_label(const struct cqwb_transport *t, char *buf, size_t len);

struct cqwb_step {
	uint64_t ops; /* operations done */
	uint64_t ns;  /* wall time they took */
};

struct cqwb_session_ops {
	int (*step)(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
		    struct cqwb_hist *lat, struct cqwb_step *out);
	/* Stop the processes and free the session; 0 if all ended well. */
	int (*close)(struct cqwb_session *s);
};

struct cqwb_session {
	const struct cqwb_session_ops *ops;
	const struct cqwb_transport *t;
	struct cqwb_params p;
	/*
	 * Whose CPU time and system calls count: the parent role is this
	 * process (parent_pid 0) or another one (a Python parent); peers
	 * are the echo peer, receiver or workers.
	 */
	pid_t parent_pid;
	pid_t *peers;
	int npeers;
};

/*
 * Open a session of t for p: fork the peers and connect. On failure
 * (a negative errno), cqwb_error() says why; -ENOTSUP means the transport
 * cannot run here.
 */
int cqwb_open(struct cqwb_session **out, const struct cqwb_transport *t,
	      const struct cqwb_params *p);
int cqwb_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	      struct cqwb_hist *lat, struct cqwb_step *out);
int cqwb_close(struct cqwb_session *s);
/* Why the last failing call failed. */
const char *cqwb_error(void);

/* One measured step with its costs. */
struct cqwb_measure {
	uint64_t ops;
	uint64_t ns;
	uint64_t cpu_parent_ns; /* the parent role's CPU time */
	uint64_t cpu_peers_ns;	/* every peer's CPU time */
	int64_t syscalls;	/* the parent's system calls; -1: not counted */
	int64_t vcsw;		/* the parent's voluntary context switches */
	int64_t peers_vcsw;	/* every peer's; -1: not known */
	uint64_t parent_rss_kib; /* the parent role's resident memory after */
};

/*
 * One step, with its CPU times. With count_syscalls (and counting set up),
 * the parent's system calls too: but enabling the tracepoint sends every
 * system call on the machine down a slower path, so a step that counts is
 * not one to time. Count in a separate step.
 */
int cqwb_measure(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
		 struct cqwb_hist *lat, int count_syscalls,
		 struct cqwb_measure *m);

/*
 * Counting system calls needs the raw_syscalls:sys_enter tracepoint. If
 * tracefs is not mounted and allow_mount is set and we are root, mount it
 * in a private mount namespace of this process (nothing outside sees it).
 * Returns NULL when counting works, else why not.
 */
const char *cqwb_syscalls_setup(int allow_mount);

/*
 * Pin this process (the parent role) to the first CPU it may use and the
 * peers it forks to the others, every transport alike (a Python parent
 * and its peers, a driver process and its peers too). 0 turns pinning off
 * for sessions opened afterwards (this process stays where it is). Call
 * before opening; -EINVAL if fewer than two CPUs may be used.
 */
int cqwb_set_pinning(int on);
/* "unpinned" or "parent on cpu 0, peers on cpu 1". */
const char *cqwb_pinning(void);
/*
 * What cqwb_set_pinning(1) would do here ("parent on cpu 0, peers on
 * cpu 1"), without pinning anything; NULL if it cannot.
 */
const char *cqwb_pin_plan(void);

/* The Python interpreter for the python and billiard peers. */
void cqwb_set_python(const char *path);
const char *cqwb_python(void);

/* The version of a C peer library ("zeromq", "nng"), or NULL. */
const char *cqwb_peer_version(const char *name);

/* Monotonic nanoseconds. */
uint64_t cqwb_now_ns(void);

#endif
