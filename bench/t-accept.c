/*
 * The accept scenario: connections per second, handshake included,
 * measured from the client side. `workers` client processes each
 * connect, run the handshake (unless no-auth), send a message, receive
 * its echo and close, as fast as they can; one operation is one such
 * connection and its latency the whole of it. The server is another
 * process:
 *
 *   cqwire sync    a forked C server: cqw_accept() (the handshake inline),
 *                  one echo, close; one connection at a time
 *   cqwire-uring async, cqwire-poll async
 *                  a forked C server on a loop with that backend: 32
 *                  ACCEPT ops kept submitted, then a RECV and a SEND on
 *                  each connection
 *   cqwire-echo    the cqwire-echo program, as a user runs it
 *   python         multiprocessing.connection's Listener: accept(), one
 *                  echo, close (peers/pyserve.py), with Python Clients
 *                  (api c-clients: with the C clients, so that only the
 *                  server differs from the cqwire rows)
 *
 * C clients use cqw_connect(), one connection at a time (inflight 1),
 * or keep `inflight` CQW_OP_CONNECT ops in flight on a loop each. The
 * client's half of a handshake costs about what the server's does, so
 * with one connection at a time per process the clients, not the
 * server, tend to set the pace.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fleet.h"

#define ACCEPT_BACKLOG 64 /* cqwire-echo's */

/* ------------------------------------------------------------------
 * Servers
 */

static void
sync_server(struct cqwb__fleet *f, int fd)
{
	uint8_t buf[4096];
	cqw_listener *l;
	cqw_conn *c;
	int64_t n;
	int r;

	r = cqw_listen(&l, f->addr, f->authp, ACCEPT_BACKLOG);
	if (r < 0) {
		fprintf(stderr, "accept server: listen %s: %s\n", f->addr,
			cqw_strerror(r));
		_exit(1);
	}
	if (dprintf(fd, "%s\n", cqw_listener_address(l)) < 0) {
		_exit(1);
	}
	for (;;) {
		r = cqw_accept(l, &c, -1);
		if (r == CQW_EINVAL || r == CQW_EBADF || r == CQW_ECLOSED) {
			fprintf(stderr, "accept server: %s\n", cqw_strerror(r));
			_exit(1);
		}
		if (r < 0) {
			continue; /* that client's handshake failed */
		}
		n = cqw_recv_bytes_into(c, buf, sizeof(buf), 0, NULL);
		if (n >= 0) {
			cqw_send_bytes(c, buf, (size_t)n);
		}
		cqw_conn_free(c);
	}
}

/*
 * The loop server: ACCEPT_OPS ACCEPT ops kept submitted, so that many
 * handshakes run at once; each connection then gets a RECV, the same op
 * turned into a SEND of what came, and is freed when that is written.
 */
#define ACCEPT_OPS 32
#define REAP_MAX 64

struct lconn {
	cqw_conn *c;
	struct cqw_op op;
	uint8_t buf[4096];
};

static void
loop_server(struct cqwb__fleet *f, int fd)
{
	struct cqw_loop_opts o = { .backend = CQWB_SRV_KIND(f->base.t->arg) ==
						      CQWB_SRV_LOOP_URING
						  ? CQW_BACKEND_URING
						  : CQW_BACKEND_POLL };
	struct cqw_op acc[ACCEPT_OPS], *done[REAP_MAX];
	struct lconn *lc;
	cqw_listener *l;
	cqw_loop *loop;
	int i, n, r;

	r = cqw_loop_new(&loop, &o);
	if (r == 0) {
		r = cqw_listen(&l, f->addr, f->authp, ACCEPT_BACKLOG);
	}
	if (r < 0) {
		fprintf(stderr, "accept server: %s: %s\n", f->addr,
			cqw_strerror(r));
		_exit(1);
	}
	memset(acc, 0, sizeof(acc));
	for (i = 0; i < ACCEPT_OPS; i++) {
		acc[i].kind = CQW_OP_ACCEPT;
		acc[i].listener = l;
		if (cqw_submit(loop, &acc[i]) < 0) {
			_exit(1);
		}
	}
	if (dprintf(fd, "%s\n", cqw_listener_address(l)) < 0) {
		_exit(1);
	}
	for (;;) {
		n = cqw_reap(loop, done, REAP_MAX, -1);
		if (n < 0) {
			fprintf(stderr, "accept server: reap: %s\n",
				cqw_strerror(n));
			_exit(1);
		}
		for (i = 0; i < n; i++) {
			struct cqw_op *op = done[i];

			if (op->kind == CQW_OP_ACCEPT) {
				/* A failed handshake costs only that peer. */
				lc = op->result == 0 ? calloc(1, sizeof(*lc))
						     : NULL;
				if (lc != NULL) {
					lc->c = op->conn;
					lc->op.kind = CQW_OP_RECV;
					lc->op.conn = lc->c;
					lc->op.buf = lc->buf;
					lc->op.len = sizeof(lc->buf);
					lc->op.user_data = lc;
					if (cqw_submit(loop, &lc->op) < 0) {
						_exit(1);
					}
				} else if (op->result == 0) {
					cqw_conn_free(op->conn);
				}
				op->conn = NULL;
				r = cqw_submit(loop, op);
			} else if (op->kind == CQW_OP_RECV && op->result >= 0) {
				op->kind = CQW_OP_SEND;
				op->len = (size_t)op->result;
				r = cqw_submit(loop, op);
			} else {
				lc = op->user_data;
				cqw_conn_free(lc->c);
				free(lc);
				r = 0;
			}
			if (r < 0) {
				fprintf(stderr, "accept server: submit: %s\n",
					cqw_strerror(r));
				_exit(1);
			}
		}
	}
}

/* ------------------------------------------------------------------
 * The C client
 */

struct acc_client {
	struct cqwb_session base;
	const char *addr;
	const struct cqw_auth *auth;
	size_t size;
	uint8_t *payload, *buf;
};

static int
acc_once(struct cqwb_session *s)
{
	struct acc_client *ac = (struct acc_client *)s;
	cqw_conn *c;
	int64_t n;
	int r;

	r = cqw_connect(&c, ac->addr, ac->auth);
	if (r < 0) {
		return cqwb__fail(-EIO, "connect %s: %s", ac->addr,
				  cqw_strerror(r));
	}
	r = cqw_send_bytes(c, ac->payload, ac->size);
	n = r < 0 ? r : cqw_recv_bytes_into(c, ac->buf, ac->size, 0, NULL);
	cqw_conn_free(c);
	if (n < 0) {
		return cqwb__fail(-EIO, "echo: %s", cqw_strerror((int)n));
	}
	if ((size_t)n != ac->size) {
		return cqwb__fail(-EPROTO, "echo of %lld bytes, not %zu",
				  (long long)n, ac->size);
	}
	return 0;
}

static int
acc_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	 struct cqwb_hist *lat, struct cqwb_step *out)
{
	return cqwb__rtt_loop(s, max_ops, max_ns, lat, out, acc_once);
}

static int
acc_close(struct cqwb_session *s)
{
	struct acc_client *ac = (struct acc_client *)s;

	free(ac->payload);
	free(ac->buf);
	cqwb__sess_free(s);
	return 0;
}

static const struct cqwb_session_ops acc_client_ops = { acc_step, acc_close };

static void
c_client(struct cqwb__fleet *f, int idx)
{
	struct acc_client *ac =
	    cqwb__sess_new(sizeof(*ac), &acc_client_ops, f->base.t, &f->base.p);

	(void)idx;
	if (ac == NULL) {
		_exit(1);
	}
	ac->addr = f->addr;
	ac->auth = f->authp;
	ac->size = f->base.p.size;
	ac->payload = calloc(1, ac->size);
	ac->buf = malloc(ac->size);
	if (ac->payload == NULL || ac->buf == NULL) {
		_exit(1);
	}
	cqwb__fleet_serve(&ac->base);
}

/*
 * The loop client (inflight > 1): that many CONNECT ops in flight on one
 * loop, each connection then a SEND and a RECV, freed when both are in,
 * and the next CONNECT submitted in its place.
 */
struct acc_slot {
	struct cqw_op cop, sop, rop;
	uint64_t t0;
	int busy; /* SEND and RECV not reaped */
};

struct acc_loop {
	struct cqwb_session base;
	cqw_loop *loop;
	const char *addr;
	const struct cqw_auth *auth;
	size_t size;
	uint8_t *payload, *bufs;
	struct acc_slot *slots;
	int k;
	struct cqw_op *done[REAP_MAX];
};

static int
slot_connect(struct acc_loop *al, struct acc_slot *sl)
{
	int r;

	memset(&sl->cop, 0, sizeof(sl->cop));
	sl->cop.kind = CQW_OP_CONNECT;
	sl->cop.address = al->addr;
	sl->cop.auth = al->auth;
	sl->cop.user_data = sl;
	sl->t0 = cqwb_now_ns();
	r = cqw_submit(al->loop, &sl->cop);
	return r < 0 ? cqwb__fail(-EIO, "submit: %s", cqw_strerror(r)) : 0;
}

static int
slot_echo(struct acc_loop *al, struct acc_slot *sl)
{
	cqw_conn *c = sl->cop.conn;
	int r;

	sl->rop.kind = CQW_OP_RECV;
	sl->rop.conn = c;
	sl->rop.buf = al->bufs + (size_t)(sl - al->slots) * al->size;
	sl->rop.len = al->size;
	sl->rop.user_data = sl;
	sl->sop.kind = CQW_OP_SEND;
	sl->sop.conn = c;
	sl->sop.buf = al->payload;
	sl->sop.len = al->size;
	sl->sop.user_data = sl;
	r = cqw_submit(al->loop, &sl->rop);
	if (r == 0) {
		r = cqw_submit(al->loop, &sl->sop);
	}
	sl->busy = 2;
	return r < 0 ? cqwb__fail(-EIO, "submit: %s", cqw_strerror(r)) : 0;
}

static int
accl_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	  struct cqwb_hist *lat, struct cqwb_step *out)
{
	struct acc_loop *al = (struct acc_loop *)s;
	uint64_t start = cqwb_now_ns(), now = start, started = 0, ops = 0;
	int i, n, r, inflight = 0;

	for (i = 0; i < al->k && started < max_ops; i++) {
		r = slot_connect(al, &al->slots[i]);
		if (r < 0) {
			return r;
		}
		started++;
		inflight++;
	}
	while (inflight > 0) {
		n = cqw_reap(al->loop, al->done, REAP_MAX, 30000);
		if (n <= 0) {
			return cqwb__fail(-EIO, "reap: %s",
					  n == 0 ? "nothing in 30 s"
						 : cqw_strerror(n));
		}
		now = cqwb_now_ns();
		for (i = 0; i < n; i++) {
			struct cqw_op *op = al->done[i];
			struct acc_slot *sl = op->user_data;

			if (op->result < 0) {
				return cqwb__fail(
				    -EIO, "%s %s: %s",
				    op == &sl->cop   ? "connect"
				    : op == &sl->sop ? "send"
						     : "receive",
				    al->addr, cqw_strerror((int)op->result));
			}
			if (op == &sl->cop) {
				r = slot_echo(al, sl);
				if (r < 0) {
					return r;
				}
				continue;
			}
			if (--sl->busy > 0) {
				continue;
			}
			if (sl->rop.result != (int64_t)al->size) {
				return cqwb__fail(-EPROTO, "a short echo");
			}
			cqw_conn_free(sl->cop.conn);
			sl->cop.conn = NULL;
			ops++;
			if (lat != NULL) {
				cqwb_hist_record(lat, now - sl->t0);
			}
			if (now - start < max_ns && started < max_ops) {
				r = slot_connect(al, sl);
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
accl_close(struct cqwb_session *s)
{
	struct acc_loop *al = (struct acc_loop *)s;

	if (al->loop != NULL) {
		cqw_loop_free(al->loop);
	}
	free(al->slots);
	free(al->payload);
	free(al->bufs);
	cqwb__sess_free(s);
	return 0;
}

static const struct cqwb_session_ops acc_loop_ops = { accl_step, accl_close };

static void
loop_client(struct cqwb__fleet *f, int idx)
{
	struct acc_loop *al =
	    cqwb__sess_new(sizeof(*al), &acc_loop_ops, f->base.t, &f->base.p);
	int r;

	(void)idx;
	if (al == NULL) {
		_exit(1);
	}
	al->addr = f->addr;
	al->auth = f->authp;
	al->size = f->base.p.size;
	al->k = f->base.p.inflight;
	al->slots = calloc((size_t)al->k, sizeof(*al->slots));
	al->payload = calloc(1, al->size);
	al->bufs = malloc((size_t)al->k * al->size);
	if (al->slots == NULL || al->payload == NULL || al->bufs == NULL) {
		_exit(1);
	}
	r = cqw_loop_new(&al->loop, NULL);
	if (r < 0) {
		printf("error client loop: %s\n", cqw_strerror(r));
		fflush(stdout);
		_exit(1);
	}
	cqwb__fleet_serve(&al->base);
}

/* ------------------------------------------------------------------
 * Opening
 */

int
cqwb__accept_open(struct cqwb_session **out, const struct cqwb_transport *t,
		  const struct cqwb_params *p)
{
	int kind = CQWB_SRV_KIND(t->arg), nclients = p->workers, i, r;
	struct cqwb__fleet *f;
	void (*client)(struct cqwb__fleet * f, int idx) = c_client;
	char size[32];

	if (nclients < 1) {
		nclients = 1;
	}
	if (p->inflight > 1) {
		if (kind == CQWB_SRV_PYTHON &&
		    (t->arg & CQWB_V_CCLIENTS) == 0) {
			return cqwb__fail(-ENOTSUP, "Python clients connect "
						    "one at a time");
		}
		client = loop_client;
	}
	r = cqwb__fleet_new(&f, t, p, nclients, 4L * nclients + 256);
	if (r < 0) {
		return r;
	}
	snprintf(size, sizeof(size), "%zu", p->size);
	if (kind == CQWB_SRV_PYTHON) {
		const char *key = f->authp ? cqwb__fleet_key : "-";
		char *sargv[] = { (char *)cqwb_python(),
				  "-c",
				  (char *)cqwb_pyserve_src,
				  "accept-server",
				  f->path,
				  (char *)key,
				  NULL };
		char *cargv[] = { (char *)cqwb_python(),
				  "-c",
				  (char *)cqwb_pyserve_src,
				  "accept-client",
				  f->path,
				  (char *)key,
				  size,
				  NULL };

		r = cqwb__fleet_server_exec(f, sargv);
		for (i = 0; i < nclients && r == 0; i++) {
			if (t->arg & CQWB_V_CCLIENTS) {
				r = cqwb__fleet_client_fork(f, i, client);
			} else {
				r = cqwb__fleet_client_exec(f, i, cargv);
			}
		}
	} else {
		if (kind == CQWB_SRV_ECHO) {
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
		} else if (kind == CQWB_SRV_SYNC) {
			r = cqwb__fleet_server_fork(f, sync_server);
		} else {
			r = cqwb__fleet_server_fork(f, loop_server);
		}
		for (i = 0; i < nclients && r == 0; i++) {
			r = cqwb__fleet_client_fork(f, i, client);
		}
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
