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
 * C clients use cqw_connect().
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

/* ------------------------------------------------------------------
 * Opening
 */

int
cqwb__accept_open(struct cqwb_session **out, const struct cqwb_transport *t,
		  const struct cqwb_params *p)
{
	int kind = CQWB_SRV_KIND(t->arg), nclients = p->workers, i, r;
	struct cqwb__fleet *f;
	char size[32];

	if (nclients < 1) {
		nclients = 1;
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
				r = cqwb__fleet_client_fork(f, i, c_client);
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
			r = cqwb__fleet_client_fork(f, i, c_client);
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
