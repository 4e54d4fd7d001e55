/*
 * The echo-clients scenario: `workers` concurrent client connections to
 * one echo server process, one round trip in flight on each, every echo
 * answered with the next message; one operation is one round trip. The
 * connections are spread over one client process per 256 of them (so
 * 1,024 clients are 4 processes, not 1,024), each driving its share on
 * one loop. The servers:
 *
 *   cqwire-echo  the cqwire-echo program with an authkey
 *   python       multiprocessing.connection's Listener with an authkey,
 *                a thread per connection (peers/pyserve.py)
 *   zeromq       a ROUTER echoing every message to its sender
 *
 * The wire-format servers get the same clients (cqw_connect(), then
 * SEND and RECV ops on a cqwire loop with the default backend), so only
 * the server differs; ZeroMQ gets DEALER sockets under zmq_poll().
 * A step ends when every round trip it started has come back.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef CQW_HAVE_ZMQ
#include <zmq.h>
#endif

#include "fleet.h"

#define CONNS_PER_CLIENT 256
#define REAP_MAX 256

/* Connections of client idx of n for nconns in all. */
static int
share(int nconns, int n, int idx)
{
	return nconns / n + (idx < nconns % n);
}

/* ------------------------------------------------------------------
 * The cqwire client: SEND and RECV ops on a loop
 */

struct ec_conn {
	cqw_conn *c;
	struct cqw_op send, recv;
	uint64_t t0;
	int busy; /* ops submitted and not reaped */
	int back; /* the echo of this round trip is in */
};

struct ec_client {
	struct cqwb_session base;
	cqw_loop *loop;
	struct ec_conn *conns;
	int n;
	size_t size;
	uint8_t *payload, *bufs;
	struct cqw_op *done[REAP_MAX];
};

static int
ec_start(struct ec_client *ec, struct ec_conn *k)
{
	int r;

	k->send.kind = CQW_OP_SEND;
	k->send.conn = k->c;
	k->send.buf = ec->payload;
	k->send.len = ec->size;
	k->send.user_data = k;
	k->recv.kind = CQW_OP_RECV;
	k->recv.conn = k->c;
	k->recv.buf = ec->bufs + (size_t)(k - ec->conns) * ec->size;
	k->recv.len = ec->size;
	k->recv.user_data = k;
	k->back = 0;
	k->t0 = cqwb_now_ns();
	r = cqw_submit(ec->loop, &k->recv);
	if (r == 0) {
		r = cqw_submit(ec->loop, &k->send);
	}
	if (r < 0) {
		return cqwb__fail(-EIO, "submit: %s", cqw_strerror(r));
	}
	k->busy = 2;
	return 0;
}

static int
ec_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	struct cqwb_hist *lat, struct cqwb_step *out)
{
	struct ec_client *ec = (struct ec_client *)s;
	uint64_t start = cqwb_now_ns(), now = start, started = 0, ops = 0;
	int i, n, r, inflight = 0;

	for (i = 0; i < ec->n && started < max_ops; i++) {
		r = ec_start(ec, &ec->conns[i]);
		if (r < 0) {
			return r;
		}
		started++;
		inflight++;
	}
	while (inflight > 0) {
		n = cqw_reap(ec->loop, ec->done, REAP_MAX, 10000);
		if (n <= 0) {
			return cqwb__fail(-EIO, "reap: %s",
					  n == 0 ? "no echo in 10 s"
						 : cqw_strerror(n));
		}
		now = cqwb_now_ns();
		for (i = 0; i < n; i++) {
			struct cqw_op *op = ec->done[i];
			struct ec_conn *k = op->user_data;

			if (op->result < 0) {
				return cqwb__fail(
				    -EIO, "%s: %s",
				    op == &k->send ? "send" : "receive",
				    cqw_strerror((int)op->result));
			}
			k->busy--;
			if (op == &k->recv) {
				k->back = 1;
				ops++;
				if (lat != NULL) {
					cqwb_hist_record(lat, now - k->t0);
				}
			}
			if (k->busy > 0 || !k->back) {
				continue;
			}
			if (now - start < max_ns && started < max_ops) {
				r = ec_start(ec, k);
				if (r < 0) {
					return r;
				}
				started++;
			} else {
				inflight--;
			}
		}
	}
	out->ops = ops;
	out->ns = now - start;
	return 0;
}

static int
ec_close(struct cqwb_session *s)
{
	struct ec_client *ec = (struct ec_client *)s;
	int i;

	for (i = 0; i < ec->n; i++) {
		cqw_conn_free(ec->conns[i].c);
	}
	if (ec->loop != NULL) {
		cqw_loop_free(ec->loop);
	}
	free(ec->conns);
	free(ec->payload);
	free(ec->bufs);
	cqwb__sess_free(s);
	return 0;
}

static const struct cqwb_session_ops ec_ops = { ec_step, ec_close };

static void __attribute__((noreturn)) client_fail(const char *what, int err)
{
	printf("error client %d: %s: %s\n", (int)getpid(), what,
	       cqw_strerror(err));
	fflush(stdout);
	_exit(1);
}

static void
cqw_client(struct cqwb__fleet *f, int idx)
{
	struct ec_client *ec =
	    cqwb__sess_new(sizeof(*ec), &ec_ops, f->base.t, &f->base.p);
	int i, r;

	if (ec == NULL) {
		_exit(1);
	}
	ec->n = share(f->base.p.workers, f->nwant, idx);
	ec->size = f->base.p.size;
	ec->conns = calloc((size_t)ec->n, sizeof(*ec->conns));
	ec->payload = calloc(1, ec->size);
	ec->bufs = malloc((size_t)ec->n * ec->size);
	if (ec->conns == NULL || ec->payload == NULL || ec->bufs == NULL) {
		_exit(1);
	}
	r = cqw_loop_new(&ec->loop, NULL);
	if (r < 0) {
		client_fail("loop", r);
	}
	for (i = 0; i < ec->n; i++) {
		r = cqw_connect(&ec->conns[i].c, f->addr, f->authp);
		if (r < 0) {
			client_fail(f->addr, r);
		}
	}
	cqwb__fleet_serve(&ec->base);
}

/* ------------------------------------------------------------------
 * ZeroMQ: a ROUTER server, DEALER clients
 */

#ifdef CQW_HAVE_ZMQ
static void
zmq_server(struct cqwb__fleet *f, int fd)
{
	char url[160];
	zmq_msg_t id, msg;
	void *ctx = zmq_ctx_new(), *s;
	int zero = 0;

	snprintf(url, sizeof(url), "ipc://%s", f->path);
	s = ctx != NULL ? zmq_socket(ctx, ZMQ_ROUTER) : NULL;
	if (s == NULL) {
		_exit(1);
	}
	zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
	/* No high-water mark: every client has one message in flight. */
	zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof(zero));
	zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof(zero));
	if (zmq_bind(s, url) != 0) {
		fprintf(stderr, "zeromq server: bind %s: %s\n", url,
			zmq_strerror(zmq_errno()));
		_exit(1);
	}
	if (dprintf(fd, "%s\n", url) < 0) {
		_exit(1);
	}
	zmq_msg_init(&id);
	zmq_msg_init(&msg);
	for (;;) {
		if (zmq_msg_recv(&id, s, 0) < 0 ||
		    zmq_msg_recv(&msg, s, 0) < 0) {
			if (zmq_errno() == EINTR) {
				continue;
			}
			_exit(1);
		}
		if (zmq_msg_send(&id, s, ZMQ_SNDMORE) < 0 ||
		    zmq_msg_send(&msg, s, 0) < 0) {
			_exit(1);
		}
	}
}

struct zc_client {
	struct cqwb_session base;
	void *ctx;
	void **socks;
	zmq_pollitem_t *items;
	uint64_t *t0;
	int n;
	size_t size;
	uint8_t *payload, *buf;
};

static int
zc_send(struct zc_client *zc, int i)
{
	zc->t0[i] = cqwb_now_ns();
	if (zmq_send(zc->socks[i], zc->payload, zc->size, 0) < 0) {
		return cqwb__fail(-zmq_errno(), "zmq_send");
	}
	return 0;
}

static int
zc_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	struct cqwb_hist *lat, struct cqwb_step *out)
{
	struct zc_client *zc = (struct zc_client *)s;
	uint64_t start = cqwb_now_ns(), now = start, started = 0, ops = 0;
	int i, n, r, inflight = 0;

	for (i = 0; i < zc->n; i++) {
		zc->items[i].events = 0;
		if (started < max_ops) {
			r = zc_send(zc, i);
			if (r < 0) {
				return r;
			}
			zc->items[i].events = ZMQ_POLLIN;
			started++;
			inflight++;
		}
	}
	while (inflight > 0) {
		n = zmq_poll(zc->items, zc->n, 10000);
		if (n < 0 && zmq_errno() == EINTR) {
			continue;
		}
		if (n <= 0) {
			return cqwb__fail(n < 0 ? -zmq_errno() : -ETIMEDOUT,
					  "zmq_poll");
		}
		for (i = 0; i < zc->n; i++) {
			if ((zc->items[i].revents & ZMQ_POLLIN) == 0) {
				continue;
			}
			r = zmq_recv(zc->socks[i], zc->buf, zc->size,
				     ZMQ_DONTWAIT);
			if (r < 0) {
				if (zmq_errno() == EAGAIN) {
					continue;
				}
				return cqwb__fail(-zmq_errno(), "zmq_recv");
			}
			now = cqwb_now_ns();
			ops++;
			if (lat != NULL) {
				cqwb_hist_record(lat, now - zc->t0[i]);
			}
			if (now - start < max_ns && started < max_ops) {
				r = zc_send(zc, i);
				if (r < 0) {
					return r;
				}
				started++;
			} else {
				zc->items[i].events = 0;
				inflight--;
			}
		}
	}
	out->ops = ops;
	out->ns = now - start;
	return 0;
}

static int
zc_close(struct cqwb_session *s)
{
	struct zc_client *zc = (struct zc_client *)s;
	int i;

	for (i = 0; i < zc->n; i++) {
		if (zc->socks[i] != NULL) {
			zmq_close(zc->socks[i]);
		}
	}
	if (zc->ctx != NULL) {
		zmq_ctx_term(zc->ctx);
	}
	free(zc->socks);
	free(zc->items);
	free(zc->t0);
	free(zc->payload);
	free(zc->buf);
	cqwb__sess_free(s);
	return 0;
}

static const struct cqwb_session_ops zc_ops = { zc_step, zc_close };

static void
zmq_client(struct cqwb__fleet *f, int idx)
{
	struct zc_client *zc =
	    cqwb__sess_new(sizeof(*zc), &zc_ops, f->base.t, &f->base.p);
	struct cqwb_step st;
	char url[160];
	int i, zero = 0;

	if (zc == NULL) {
		_exit(1);
	}
	zc->n = share(f->base.p.workers, f->nwant, idx);
	zc->size = f->base.p.size;
	zc->socks = calloc((size_t)zc->n, sizeof(*zc->socks));
	zc->items = calloc((size_t)zc->n, sizeof(*zc->items));
	zc->t0 = calloc((size_t)zc->n, sizeof(*zc->t0));
	zc->payload = calloc(1, zc->size);
	zc->buf = malloc(zc->size);
	zc->ctx = zmq_ctx_new();
	if (zc->socks == NULL || zc->items == NULL || zc->t0 == NULL ||
	    zc->payload == NULL || zc->buf == NULL || zc->ctx == NULL) {
		_exit(1);
	}
	/* The default is 1,023 sockets a context. */
	zmq_ctx_set(zc->ctx, ZMQ_MAX_SOCKETS, zc->n + 16);
	snprintf(url, sizeof(url), "ipc://%s", f->path);
	for (i = 0; i < zc->n; i++) {
		zc->socks[i] = zmq_socket(zc->ctx, ZMQ_DEALER);
		if (zc->socks[i] == NULL ||
		    zmq_setsockopt(zc->socks[i], ZMQ_LINGER, &zero,
				   sizeof(zero)) != 0 ||
		    zmq_connect(zc->socks[i], url) != 0) {
			printf("error zeromq client: %s\n",
			       zmq_strerror(zmq_errno()));
			fflush(stdout);
			_exit(1);
		}
		zc->items[i].socket = zc->socks[i];
	}
	/* One round trip each: every DEALER is connected before "ready". */
	if (zc_step(&zc->base, UINT64_MAX, 0, NULL, &st) < 0) {
		printf("error %s\n", cqwb_error());
		fflush(stdout);
		_exit(1);
	}
	cqwb__fleet_serve(&zc->base);
}
#endif

/* ------------------------------------------------------------------
 * Opening
 */

int
cqwb__echo_open(struct cqwb_session **out, const struct cqwb_transport *t,
		const struct cqwb_params *p)
{
	int kind = CQWB_SRV_KIND(t->arg), n = p->workers, procs, i, r;
	void (*client)(struct cqwb__fleet * f, int idx) = cqw_client;
	struct cqwb__fleet *f;

	if (n < 1) {
		return cqwb__fail(-EINVAL, "echo-clients needs clients");
	}
	procs = (n + CONNS_PER_CLIENT - 1) / CONNS_PER_CLIENT;
	r = cqwb__fleet_new(&f, t, p, procs, 2L * n + 256);
	if (r < 0) {
		return r;
	}
	if (kind == CQWB_SRV_PYTHON) {
		char *argv[] = { (char *)cqwb_python(),
				 "-c",
				 (char *)cqwb_pyserve_src,
				 "echo-server",
				 f->path,
				 f->authp ? (char *)cqwb__fleet_key : "-",
				 NULL };

		r = cqwb__fleet_server_exec(f, argv);
	} else if (kind == CQWB_SRV_ECHO) {
		char *argv[] = { (char *)cqwb__echo_path(),
				 "serve",
				 f->addr,
				 "--authkey-env",
				 CQWB_FLEET_KEY_ENV,
				 NULL };

		if (f->authp == NULL) {
			argv[3] = NULL;
		}
		r = cqwb__fleet_server_exec(f, argv);
	} else {
#ifdef CQW_HAVE_ZMQ
		r = cqwb__fleet_server_fork(f, zmq_server);
		client = zmq_client;
#else
		r = cqwb__fail(-ENOTSUP, "not built with libzmq");
#endif
	}
	for (i = 0; i < procs && r == 0; i++) {
		r = cqwb__fleet_client_fork(f, i, client);
	}
	if (r == 0) {
		r = cqwb__fleet_ready(f);
	}
	if (r < 0) {
		return cqwb__fleet_abort(f, r);
	}
	*out = &f->base;
	return 0;
}
