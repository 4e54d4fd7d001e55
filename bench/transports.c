/*
 * Every transport that bench/ and cqwire-perf measure, in display order.
 * The JSON names are a contract (BENCHMARKS.md): "transport" is one of
 * raw, raw-buffered, raw-spin, raw-writev, epoll, cqwire (the synchronous
 * API, no loop), cqwire-uring and cqwire-poll (the loop with that
 * backend), zeromq, nng, python, billiard, python-cqwire (Python on
 * both ends as python, over the project's cqwire.connection module).
 * "api" says which calls: sync/async for rtt and fanout, per-message/batch
 * for stream.
 * io_uring is a fan-out parent written by hand with liburing (t-uring.c).
 * The server scenarios (accept, echo-clients) add cqwire-echo; there the
 * transport names the server, and "mode" is hmac or no-auth.
 * The stream ceilings raw-writev512 (one gather write of 512 frames) and
 * raw-contig (512 frames copied into one buffer per write) have a receiver
 * that reads 1 MiB at a time and walks the headers.
 * Pipe variants (CQWB_V_PIPE) keep their name and add "channel": "pipe".
 * Fan-out rows with cqwire sync workers (CQWB_V_CQWW) keep the parent's
 * name and add "worker": "cqwire-sync frame-exact" or "cqwire-sync
 * exclusive".
 */
#include <stddef.h>

#include "sess.h"

#define RTT CQWB_BIT(CQWB_RTT)
#define STREAM CQWB_BIT(CQWB_STREAM)
#define FANOUT CQWB_BIT(CQWB_FANOUT)
#define FE "frame-exact"
#define EX "exclusive"
#define U CQWB_V_URING
#define X CQWB_V_EXCL
#define B CQWB_V_BATCH
#define P CQWB_V_PIPE
#define WF CQWB_V_CQWW
#define WX (CQWB_V_CQWW | CQWB_V_CQWW_EX)

#define RAWT(name, scns, v)                                           \
	{                                                             \
		name, NULL, NULL, NULL, scns, v, NULL, cqwb__raw_open \
	}
#define CQW(api, mode, wait, scns, v)                                    \
	{                                                                \
		"cqwire", api, mode, wait, scns, v, NULL, cqwb__cqw_open \
	}
#define LOOP(name, api, mode, scns, v)                                  \
	{                                                               \
		name, api, mode, NULL, scns, v, cqwb__loop_unavailable, \
		    cqwb__loop_open                                     \
	}

#define ACCEPT CQWB_BIT(CQWB_ACCEPT)
#define NOAUTH CQWB_V_NOAUTH
#define SRV(name, api, mode, scns, v)                                  \
	{                                                              \
		name, api, mode, NULL, scns, v, cqwb__srv_unavailable, \
		    cqwb__accept_open                                  \
	}
#define ECHO(name, api, mode, v)                                       \
	{                                                              \
		name, api, mode, NULL, CQWB_BIT(CQWB_ECHO_CLIENTS), v, \
		    cqwb__srv_unavailable, cqwb__echo_open             \
	}

const struct cqwb_transport cqwb_transports[] = {
	RAWT("raw", RTT | STREAM, CQWB_RAW),
	RAWT("raw-buffered", RTT, CQWB_RAW_BUFFERED),
	RAWT("raw-spin", RTT, CQWB_RAW_SPIN),
	RAWT("raw-writev", STREAM, CQWB_RAW_WRITEV),
	RAWT("raw-writev512", STREAM, CQWB_RAW_WRITEV512),
	RAWT("raw-contig", STREAM, CQWB_RAW_CONTIG),
	RAWT("epoll", FANOUT, CQWB_RAW_EPOLL),
	/* Fan-out with cqwire sync workers (JSON "worker"), same parents. */
	RAWT("epoll", FANOUT, CQWB_RAW_EPOLL | WF),
	RAWT("epoll", FANOUT, CQWB_RAW_EPOLL | WX),
	LOOP("cqwire-uring", "async", EX, FANOUT, U | X | WF),
	LOOP("cqwire-uring", "async", EX, FANOUT, U | X | WX),
	{ "io_uring", NULL, NULL, NULL, FANOUT, 0, cqwb__uring_unavailable,
	  cqwb__uring_open },

	CQW("sync", FE, NULL, RTT | FANOUT, 0),
	CQW("sync", EX, NULL, RTT | FANOUT, X),
	CQW("sync", FE, "spin", RTT, CQWB_V_SPIN),
	CQW("sync", EX, "spin", RTT, X | CQWB_V_SPIN),
	CQW("per-message", FE, NULL, STREAM, 0),
	CQW("per-message", EX, NULL, STREAM, X),
	CQW("batch", FE, NULL, STREAM, B),
	CQW("batch", EX, NULL, STREAM, X | B),

	LOOP("cqwire-uring", "async", FE, RTT | FANOUT, U),
	LOOP("cqwire-uring", "async", EX, RTT | FANOUT, U | X),
	LOOP("cqwire-uring", "per-message", FE, STREAM, U),
	LOOP("cqwire-uring", "per-message", EX, STREAM, U | X),
	LOOP("cqwire-uring", "batch", FE, STREAM, U | B),
	LOOP("cqwire-uring", "batch", EX, STREAM, U | X | B),
	LOOP("cqwire-poll", "async", FE, RTT | FANOUT, 0),
	LOOP("cqwire-poll", "async", EX, RTT | FANOUT, X),
	LOOP("cqwire-poll", "per-message", FE, STREAM, 0),
	LOOP("cqwire-poll", "per-message", EX, STREAM, X),
	LOOP("cqwire-poll", "batch", FE, STREAM, B),
	LOOP("cqwire-poll", "batch", EX, STREAM, X | B),

	{ "zeromq", NULL, NULL, NULL, RTT | STREAM, 0, cqwb__zmq_unavailable,
	  cqwb__zmq_open },
	{ "nng", NULL, NULL, NULL, RTT | STREAM, 0, cqwb__nng_unavailable,
	  cqwb__nng_open },
	{ "python", NULL, NULL, NULL, RTT | STREAM | FANOUT, CQWB_PY_MP,
	  cqwb__py_unavailable, cqwb__py_open },
	{ "billiard", NULL, NULL, NULL, RTT | STREAM | FANOUT, CQWB_PY_BILLIARD,
	  cqwb__py_unavailable, cqwb__py_open },
	{ "python-cqwire", "sync", NULL, NULL, RTT | FANOUT, CQWB_PY_MP,
	  cqwb__py_unavailable, cqwb__py_open },
	{ "python-cqwire", "per-message", NULL, NULL, STREAM, CQWB_PY_MP,
	  cqwb__py_unavailable, cqwb__py_open },
	{ "python-cqwire", "batch", NULL, NULL, STREAM, CQWB_PY_MP,
	  cqwb__py_unavailable, cqwb__py_open },

	/* The same over pipe()s (rtt: two, one each way). */
	RAWT("raw", RTT | STREAM, CQWB_RAW | P),
	CQW("sync", FE, NULL, RTT, P),
	CQW("sync", EX, NULL, RTT, X | P),
	CQW("per-message", FE, NULL, STREAM, P),
	CQW("per-message", EX, NULL, STREAM, X | P),
	CQW("batch", FE, NULL, STREAM, B | P),
	CQW("batch", EX, NULL, STREAM, X | B | P),
	LOOP("cqwire-uring", "async", FE, RTT, U | P),
	LOOP("cqwire-uring", "async", EX, RTT, U | X | P),
	LOOP("cqwire-uring", "batch", FE, STREAM, U | B | P),
	LOOP("cqwire-uring", "batch", EX, STREAM, U | X | B | P),
	LOOP("cqwire-poll", "async", FE, RTT, P),
	LOOP("cqwire-poll", "async", EX, RTT, X | P),
	LOOP("cqwire-poll", "batch", FE, STREAM, B | P),
	LOOP("cqwire-poll", "batch", EX, STREAM, X | B | P),
	{ "python", NULL, NULL, NULL, RTT | STREAM, CQWB_PY_MP | P,
	  cqwb__py_unavailable, cqwb__py_open },

	/*
	 * The server scenarios: the server is the transport ("cqwire" is a
	 * forked C server on the synchronous API, "cqwire-echo" the
	 * program); mode says whether connections run the handshake.
	 */
	SRV("cqwire-uring", "async", "hmac", ACCEPT, CQWB_SRV_LOOP_URING),
	SRV("cqwire-uring", "async", "no-auth", ACCEPT,
	    CQWB_SRV_LOOP_URING | NOAUTH),
	SRV("cqwire-poll", "async", "hmac", ACCEPT, CQWB_SRV_LOOP_POLL),
	SRV("cqwire-poll", "async", "no-auth", ACCEPT,
	    CQWB_SRV_LOOP_POLL | NOAUTH),
	SRV("cqwire", "sync", "hmac", ACCEPT, CQWB_SRV_SYNC),
	SRV("cqwire", "sync", "no-auth", ACCEPT, CQWB_SRV_SYNC | NOAUTH),
	SRV("cqwire-echo", NULL, "hmac", ACCEPT, CQWB_SRV_ECHO),
	SRV("cqwire-echo", NULL, "no-auth", ACCEPT, CQWB_SRV_ECHO | NOAUTH),
	SRV("python", NULL, "hmac", ACCEPT, CQWB_SRV_PYTHON),
	SRV("python", NULL, "no-auth", ACCEPT, CQWB_SRV_PYTHON | NOAUTH),
	SRV("python", "c-clients", "hmac", ACCEPT,
	    CQWB_SRV_PYTHON | CQWB_V_CCLIENTS),
	ECHO("cqwire-echo", NULL, "hmac", CQWB_SRV_ECHO),
	ECHO("python", "threads", "hmac", CQWB_SRV_PYTHON),
	ECHO("zeromq", NULL, NULL, CQWB_SRV_ZMQ),
	{ NULL, NULL, NULL, NULL, 0, 0, NULL, NULL },
};

const char *
cqwb_channel(const struct cqwb_transport *t)
{
	return (t->arg & CQWB_V_PIPE) != 0 ? "pipe" : NULL;
}

const char *
cqwb_worker(const struct cqwb_transport *t)
{
	unsigned v = (unsigned)t->arg;

	if ((v & CQWB_V_CQWW) == 0) {
		return NULL;
	}
	return (v & CQWB_V_CQWW_EX) != 0 ? "cqwire-sync exclusive"
					 : "cqwire-sync frame-exact";
}
