/*
 * ZeroMQ (libzmq) PAIR sockets over ipc://, and nng pair1 over ipc://:
 * the message libraries people reach for instead. Each process makes its
 * context or socket after the fork (neither library survives a fork).
 * Payloads of 64 KiB and more are sent by ZeroMQ without a copy
 * (zmq_send_const). ZeroMQ's receivers take each message with
 * zmq_msg_recv(), in the library's own buffer, as a ZeroMQ user would
 * (no copy), and the echo peer sends that message back with
 * zmq_msg_send(); nng's receivers copy into their own buffer as cqwire's
 * recv_bytes_into does. nng sessions run in a forked driver process
 * (ctl.c): nng may not be used in a process that forks afterwards.
 * Control messages: 0 bytes asks the stream
 * receiver for its count (8 bytes back); 1 byte tells a peer to leave.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sess.h"

#if defined(CQW_HAVE_ZMQ) || defined(CQW_HAVE_NNG)
#ifdef CQW_HAVE_ZMQ
#include <zmq.h>
#endif
#ifdef CQW_HAVE_NNG
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#endif

#define RECV_TIMEOUT_MS 20000
#define ZC_MIN (64u * 1024)

enum { LIB_ZMQ, LIB_NNG };

struct mq_sess {
	struct cqwb_session base;
	int lib;
	char url[108];
	size_t size;
	uint8_t *buf, *rx;
#ifdef CQW_HAVE_ZMQ
	void *zctx, *zsock;
	zmq_msg_t zmsg; /* what zmq_msg_recv() received last */
	int zmsg_init;
#endif
#ifdef CQW_HAVE_NNG
	nng_socket nsock;
	int nopen;
#endif
	int unlinked;
};

/*
 * The socket file is needed only until the peer is connected, which it is
 * once a step has gone through: remove it then, so that a measurement
 * killed later leaves nothing behind.
 */
static void
unlink_url(struct mq_sess *ms)
{
	if (!ms->unlinked) {
		ms->unlinked = 1;
		unlink(ms->url + strlen("ipc://"));
	}
}

static unsigned url_seq;

/* ---- the two libraries behind one small interface ---- */

static int
mq_open(struct mq_sess *ms, int listen)
{
	int r = 0;

#ifdef CQW_HAVE_ZMQ
	if (ms->lib == LIB_ZMQ) {
		int tmo = RECV_TIMEOUT_MS, linger = 2000, ivl = 1, hwm;

		ms->zctx = zmq_ctx_new();
		if (ms->zctx == NULL) {
			return -errno;
		}
		zmq_msg_init(&ms->zmsg);
		ms->zmsg_init = 1;
		ms->zsock = zmq_socket(ms->zctx, ZMQ_PAIR);
		if (ms->zsock == NULL) {
			return -errno;
		}
		/*
		 * The high-water marks count messages (1000 by default):
		 * 1000 queued 16 MiB messages take seconds to drain, so
		 * bound the bytes in flight instead (at least 2 messages).
		 */
		hwm = (int)((64u << 20) / ms->size);
		hwm = hwm < 2 ? 2 : hwm > 1000 ? 1000 : hwm;
		zmq_setsockopt(ms->zsock, ZMQ_SNDHWM, &hwm, sizeof(hwm));
		zmq_setsockopt(ms->zsock, ZMQ_RCVHWM, &hwm, sizeof(hwm));
		zmq_setsockopt(ms->zsock, ZMQ_RCVTIMEO, &tmo, sizeof(tmo));
		zmq_setsockopt(ms->zsock, ZMQ_LINGER, &linger, sizeof(linger));
		/* The peer connects before the parent binds: retry soon. */
		zmq_setsockopt(ms->zsock, ZMQ_RECONNECT_IVL, &ivl, sizeof(ivl));
		r = listen ? zmq_bind(ms->zsock, ms->url)
			   : zmq_connect(ms->zsock, ms->url);
		return r == 0 ? 0 : -errno;
	}
#endif
#ifdef CQW_HAVE_NNG
	if (ms->lib == LIB_NNG) {
		r = nng_pair1_open(&ms->nsock);
		if (r != 0) {
			return -EIO;
		}
		ms->nopen = 1;
		nng_socket_set_ms(ms->nsock, NNG_OPT_RECVTIMEO,
				  RECV_TIMEOUT_MS);
		/* The default 1 MiB limit would drop 16 MiB messages. */
		nng_socket_set_size(ms->nsock, NNG_OPT_RECVMAXSZ, 0);
		/* The peer dials before the parent listens: retry soon. */
		nng_socket_set_ms(ms->nsock, NNG_OPT_RECONNMINT, 1);
		r = listen
			? nng_listen(ms->nsock, ms->url, NULL, 0)
			: nng_dial(ms->nsock, ms->url, NULL, NNG_FLAG_NONBLOCK);
		return r == 0 ? 0 : -EIO;
	}
#endif
	(void)listen;
	return r;
}

static void
mq_close(struct mq_sess *ms)
{
#ifdef CQW_HAVE_ZMQ
	if (ms->zmsg_init) {
		zmq_msg_close(&ms->zmsg);
		ms->zmsg_init = 0;
	}
	if (ms->zsock != NULL) {
		zmq_close(ms->zsock);
		ms->zsock = NULL;
	}
	if (ms->zctx != NULL) {
		zmq_ctx_term(ms->zctx);
		ms->zctx = NULL;
	}
#endif
#ifdef CQW_HAVE_NNG
	if (ms->nopen) {
		nng_close(ms->nsock);
		ms->nopen = 0;
	}
#endif
	(void)ms;
}

static int
mq_send(struct mq_sess *ms, const void *buf, size_t len)
{
#ifdef CQW_HAVE_ZMQ
	if (ms->lib == LIB_ZMQ) {
		int r;

		do {
			r = len >= ZC_MIN
				? zmq_send_const(ms->zsock, buf, len, 0)
				: zmq_send(ms->zsock, buf, len, 0);
		} while (r < 0 && errno == EINTR);
		return r < 0 ? -errno : 0;
	}
#endif
#ifdef CQW_HAVE_NNG
	if (ms->lib == LIB_NNG) {
		return nng_send(ms->nsock, (void *)buf, len, 0) == 0 ? 0 : -EIO;
	}
#endif
	(void)buf;
	(void)len;
	return -ENOTSUP;
}

/*
 * Receive one message: its length, or -errno. ZeroMQ's stays in ms->zmsg
 * (zmq_msg_data(); buf is not touched, the length is not capped at cap);
 * nng's is copied into buf.
 */
static int64_t
mq_recv(struct mq_sess *ms, void *buf, size_t cap)
{
#ifdef CQW_HAVE_ZMQ
	if (ms->lib == LIB_ZMQ) {
		int r;

		(void)buf;
		(void)cap;
		do {
			r = zmq_msg_recv(&ms->zmsg, ms->zsock, 0);
		} while (r < 0 && errno == EINTR);
		return r < 0 ? -errno : r;
	}
#endif
#ifdef CQW_HAVE_NNG
	if (ms->lib == LIB_NNG) {
		size_t len = cap;
		int r = nng_recv(ms->nsock, buf, &len, 0);

		return r == 0 ? (int64_t)len : -EIO;
	}
#endif
	(void)buf;
	(void)cap;
	return -ENOTSUP;
}

/* Send back what mq_recv() received (n bytes). */
static int
mq_echo(struct mq_sess *ms, size_t n)
{
#ifdef CQW_HAVE_ZMQ
	if (ms->lib == LIB_ZMQ) {
		int r;

		/* The message itself goes back; ms->zmsg is empty after. */
		do {
			r = zmq_msg_send(&ms->zmsg, ms->zsock, 0);
		} while (r < 0 && errno == EINTR);
		return r < 0 ? -errno : 0;
	}
#endif
	return mq_send(ms, ms->rx, n);
}

/* ---- peers ---- */

static void __attribute__((noreturn)) peer(struct mq_sess *ms)
{
	uint64_t count = 0;
	int64_t n;

	if (mq_open(ms, 0) < 0) {
		_exit(1);
	}
	for (;;) {
		n = mq_recv(ms, ms->rx, ms->size);
		if (n < 0) {
			_exit(1);
		}
		if (n == 1) {
			break;
		}
		if (ms->base.p.scn == CQWB_RTT) {
			if (mq_echo(ms, (size_t)n) < 0) {
				_exit(1);
			}
		} else if (n > 0) {
			count++;
		} else if (mq_send(ms, &count, sizeof(count)) < 0) {
			_exit(1);
		}
	}
	mq_close(ms);
	_exit(0);
}

/* ---- parent ---- */

static int
rtt_once(struct cqwb_session *s)
{
	struct mq_sess *ms = (struct mq_sess *)s;
	int64_t r = mq_send(ms, ms->buf, ms->size);

	if (r == 0) {
		r = mq_recv(ms, ms->rx, ms->size);
	}
	if (r < 0) {
		return cqwb__fail((int)r, "%s rtt", s->t->name);
	}
	return 0;
}

static int
rtt_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	 struct cqwb_hist *lat, struct cqwb_step *out)
{
	int r = cqwb__rtt_loop(s, max_ops, max_ns, lat, out, rtt_once);

	if (r == 0) {
		unlink_url((struct mq_sess *)s);
	}
	return r;
}

static int
stream_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	    struct cqwb_hist *lat, struct cqwb_step *out)
{
	struct mq_sess *ms = (struct mq_sess *)s;
	uint64_t start = cqwb_now_ns(), sent = 0, count;
	int64_t r = 0;

	(void)lat;
	while (sent < max_ops) {
		r = mq_send(ms, ms->buf, ms->size);
		if (r < 0) {
			return cqwb__fail((int)r, "%s stream", s->t->name);
		}
		sent++;
		if ((sent & 63) == 0 || ms->size >= ZC_MIN) {
			if (cqwb_now_ns() - start >= max_ns) {
				break;
			}
		}
	}
	r = mq_send(ms, ms->buf, 0);
	if (r == 0) {
		r = mq_recv(ms, &count, sizeof(count));
	}
	if (r < 0) {
		return cqwb__fail((int)r, "%s stream ack", s->t->name);
	}
	unlink_url(ms);
	out->ops = sent;
	out->ns = cqwb_now_ns() - start;
	return 0;
}

static int
mq_sess_close(struct cqwb_session *s)
{
	struct mq_sess *ms = (struct mq_sess *)s;
	int r;

	if (s->npeers > 0) {
		mq_send(ms, "q", 1);
	}
	mq_close(ms);
	r = cqwb__reap_peers(s, 10000);
	unlink_url(ms);
	free(ms->buf);
	free(ms->rx);
	cqwb__sess_free(s);
	return r;
}

static const struct cqwb_session_ops rtt_ops = { rtt_step, mq_sess_close };
static const struct cqwb_session_ops stream_ops = { stream_step,
						    mq_sess_close };

static int
mq_sess_open(struct cqwb_session **out, const struct cqwb_transport *t,
	     const struct cqwb_params *p, int lib)
{
	struct mq_sess *ms = cqwb__sess_new(
	    sizeof(*ms), p->scn == CQWB_RTT ? &rtt_ops : &stream_ops, t, p);
	pid_t pid;
	int r;

	if (ms == NULL) {
		return cqwb__fail(-ENOMEM, "session");
	}
	ms->lib = lib;
	ms->size = p->size;
	snprintf(ms->url, sizeof(ms->url), "ipc:///tmp/cqwb-%s-%d-%u.ipc",
		 lib == LIB_ZMQ ? "zmq" : "nng", (int)getpid(), url_seq++);
	ms->buf = calloc(1, p->size > 8 ? p->size : 8);
	ms->rx = malloc(p->size > 8 ? p->size : 8);
	if (ms->buf == NULL || ms->rx == NULL) {
		mq_sess_close(&ms->base);
		return cqwb__fail(-ENOMEM, "session");
	}
	pid = cqwb__fork(0);
	if (pid == 0) {
		peer(ms);
	}
	if (pid < 0 || cqwb__add_peer(&ms->base, pid) < 0) {
		mq_sess_close(&ms->base);
		return cqwb__fail(-ECHILD, "fork");
	}
	r = mq_open(ms, 1);
	if (r < 0) {
		mq_sess_close(&ms->base);
		return cqwb__fail(r, "%s listen on %s", t->name, ms->url);
	}
	*out = &ms->base;
	return 0;
}
#endif /* CQW_HAVE_ZMQ || CQW_HAVE_NNG */

#ifdef CQW_HAVE_ZMQ
const char *
cqwb__zmq_unavailable(const struct cqwb_transport *t)
{
	(void)t;
	return NULL;
}

int
cqwb__zmq_open(struct cqwb_session **out, const struct cqwb_transport *t,
	       const struct cqwb_params *p)
{
	return mq_sess_open(out, t, p, LIB_ZMQ);
}
#else
const char *
cqwb__zmq_unavailable(const struct cqwb_transport *t)
{
	(void)t;
	return "not built with libzmq (apt-get install libzmq3-dev, then "
	       "rebuild)";
}

int
cqwb__zmq_open(struct cqwb_session **out, const struct cqwb_transport *t,
	       const struct cqwb_params *p)
{
	(void)out;
	(void)t;
	(void)p;
	return -ENOTSUP;
}
#endif

#ifdef CQW_HAVE_NNG
const char *
cqwb__nng_unavailable(const struct cqwb_transport *t)
{
	(void)t;
	return NULL;
}

static int
nng_sess_open(struct cqwb_session **out, const struct cqwb_transport *t,
	      const struct cqwb_params *p)
{
	return mq_sess_open(out, t, p, LIB_NNG);
}

int
cqwb__nng_open(struct cqwb_session **out, const struct cqwb_transport *t,
	       const struct cqwb_params *p)
{
	/* nng poisons every later fork of a process that used it. */
	return cqwb__remote_open(out, t, p, nng_sess_open);
}
#else
const char *
cqwb__nng_unavailable(const struct cqwb_transport *t)
{
	(void)t;
	return "not built with nng (apt-get install libnng-dev, then "
	       "rebuild)";
}

int
cqwb__nng_open(struct cqwb_session **out, const struct cqwb_transport *t,
	       const struct cqwb_params *p)
{
	(void)out;
	(void)t;
	(void)p;
	return -ENOTSUP;
}
#endif

const char *
cqwb_peer_version(const char *name)
{
	static char v[32];

	v[0] = '\0';
#ifdef CQW_HAVE_ZMQ
	if (strcmp(name, "zeromq") == 0) {
		int maj, min, pat;

		zmq_version(&maj, &min, &pat);
		snprintf(v, sizeof(v), "%d.%d.%d", maj, min, pat);
	}
#endif
#ifdef CQW_HAVE_NNG
	if (strcmp(name, "nng") == 0) {
		/* A constant: this does not start nng in this process. */
		snprintf(v, sizeof(v), "%s", nng_version());
	}
#endif
	(void)name;
	return v[0] != '\0' ? v : NULL;
}
