/*
 * Listener and Client, and the driver of the authentication handshake
 * (the messages themselves are auth.c's). The server speaks first:
 * it delivers a challenge and then answers the client's (WIRE.md §4.2).
 * Every handshake read is capped at 256 bytes and the whole exchange has
 * a deadline, so a silent or hostile peer costs a bounded wait.
 */
#include <stdlib.h>
#include <string.h>

#include "address.h"
#include "auth.h"
#include "internal.h"
#include "platform.h"
#include "server.h"
#include "transport.h"

#define AUTH_DEFAULT_TIMEOUT_MS 20000
#define CONNECT_DEFAULT_TIMEOUT_MS 20000

int64_t
cqw__auth_deadline(const struct cqw_auth *auth)
{
	if (auth->timeout_ms < 0) {
		return -1;
	}
	return cqw__now_ms() +
	       (auth->timeout_ms ? auth->timeout_ms : AUTH_DEFAULT_TIMEOUT_MS);
}

/* A connect's deadline: 0 is the default, < 0 none. */
static int64_t
connect_deadline(int timeout_ms)
{
	if (timeout_ms < 0) {
		return -1;
	}
	return cqw__now_ms() +
	       (timeout_ms ? timeout_ms : CONNECT_DEFAULT_TIMEOUT_MS);
}

static int
send_frame(cqw_conn *c, const void *buf, size_t len)
{
	struct cqw_msg m = { .buf = (void *)buf, .len = len };

	return c->tp->send(c, &m, 1);
}

/* Frames 1-3 (server) or 4-6 (client): challenge the peer. */
static int
deliver_challenge(cqw_conn *c, const struct cqw_auth *auth, int64_t deadline)
{
	uint8_t rnd[CQW__AUTH_MODERN_RANDOM], chal[CQW__AUTH_MAX_FRAME];
	uint8_t resp[CQW__AUTH_MAX_FRAME];
	size_t nrnd = cqw__auth_random_len(auth->flags);
	int64_t n;
	int r, len;

	r = cqw__random(rnd, nrnd);
	if (r < 0) {
		return r;
	}
	len = cqw__auth_make_challenge(auth->flags, rnd, chal, sizeof(chal));
	if (len < 0) {
		return len;
	}
	r = send_frame(c, chal, (size_t)len);
	if (r < 0) {
		return r;
	}
	n = cqw__conn_recv_small(c, resp, sizeof(resp), deadline);
	if (n < 0) {
		return (int)n;
	}
	r = cqw__auth_verify(auth->key, auth->keylen, auth->flags, chal,
			     (size_t)len, resp, (size_t)n);
	if (r < 0) {
		send_frame(c, CQW__AUTH_FAILURE, strlen(CQW__AUTH_FAILURE));
		return r;
	}
	return send_frame(c, CQW__AUTH_WELCOME, strlen(CQW__AUTH_WELCOME));
}

/* Frames 1-3 seen from the client, or 4-6 from the server: answer. */
static int
answer_challenge(cqw_conn *c, const struct cqw_auth *auth, int64_t deadline)
{
	uint8_t chal[CQW__AUTH_MAX_FRAME], resp[CQW__AUTH_MAX_FRAME];
	int64_t n;
	int r, len;

	n = cqw__conn_recv_small(c, chal, sizeof(chal), deadline);
	if (n < 0) {
		return (int)n;
	}
	len = cqw__auth_answer(auth->key, auth->keylen, auth->flags, chal,
			       (size_t)n, resp, sizeof(resp));
	if (len < 0) {
		return len; /* Python sends nothing and drops the peer. */
	}
	r = send_frame(c, resp, (size_t)len);
	if (r < 0) {
		return r;
	}
	n = cqw__conn_recv_small(c, resp, sizeof(resp), deadline);
	if (n < 0) {
		return (int)n;
	}
	return cqw__auth_check_welcome(resp, (size_t)n);
}

int
cqw__auth_peer_failed(int r)
{
	if (r == CQW_ETOOSHORT || r == CQW_EMSGSIZE || r == CQW_EPROTO) {
		return CQW_EAUTH;
	}
	return r;
}

static int
handshake(cqw_conn *c, const struct cqw_auth *auth, int server)
{
	int64_t deadline = cqw__auth_deadline(auth);
	int r;

	if (server) {
		r = deliver_challenge(c, auth, deadline);
		if (r == 0) {
			r = answer_challenge(c, auth, deadline);
		}
	} else {
		r = answer_challenge(c, auth, deadline);
		if (r == 0) {
			r = deliver_challenge(c, auth, deadline);
		}
	}
	return cqw__auth_peer_failed(r);
}

int
cqw__check_auth(const struct cqw_auth *auth)
{
	if (auth == NULL || auth->key == NULL) {
		return auth != NULL && auth->keylen > 0 ? CQW_EINVAL : 0;
	}
	if (auth->flags & ~(CQW_AUTH_REFUSE_MD5 | CQW_AUTH_LEGACY_CHALLENGE)) {
		return CQW_EINVAL;
	}
	/* A legacy challenge is answered with MD5 only. */
	if ((auth->flags & CQW_AUTH_REFUSE_MD5) &&
	    (auth->flags & CQW_AUTH_LEGACY_CHALLENGE)) {
		return CQW_EINVAL;
	}
	return 0;
}

int
cqw_listen(cqw_listener **out, const char *address, const struct cqw_auth *auth,
	   int backlog)
{
	cqw_listener *l;
	struct cqw__addr bound;
	int r;

	if (out == NULL) {
		return CQW_EINVAL;
	}
	r = cqw__check_auth(auth);
	if (r < 0) {
		return r;
	}
	l = calloc(1, sizeof(*l));
	if (l == NULL) {
		return CQW_ENOMEM;
	}
	r = cqw__addr_parse(&l->addr, address);
	if (r < 0) {
		goto out_free;
	}
	if (auth != NULL && auth->key != NULL) {
		l->auth = *auth;
		l->keybuf = malloc(auth->keylen ? auth->keylen : 1);
		if (l->keybuf == NULL) {
			r = CQW_ENOMEM;
			goto out_free;
		}
		memcpy(l->keybuf, auth->key, auth->keylen);
		l->auth.key = l->keybuf;
	}
	r = cqw__listen_open(&l->ls, &l->addr, backlog > 0 ? backlog : 1,
			     &bound);
	if (r < 0) {
		goto out_free;
	}
	r = cqw__addr_format(&bound, l->address, sizeof(l->address));
	if (r < 0) {
		cqw__listen_close(l->ls);
		goto out_free;
	}
	*out = l;
	return 0;

out_free:
	free(l->keybuf);
	free(l);
	return r;
}

int
cqw_accept_raw(cqw_listener *l, cqw_conn **out, int timeout_ms)
{
	cqw_fd fd;
	int r, kind;

	if (l == NULL || out == NULL) {
		return CQW_EINVAL;
	}
	if (l->closed) {
		return CQW_ECLOSED;
	}
	r = cqw__listen_accept(l->ls, &fd, &kind, timeout_ms);
	if (r < 0) {
		return r;
	}
	r = cqw__conn_new(out, fd, kind, CQW_DUPLEX);
	if (r < 0) {
		cqw__io_close(fd);
	}
	return r;
}

int
cqw_accept(cqw_listener *l, cqw_conn **out, int timeout_ms)
{
	cqw_conn *c;
	int r;

	r = cqw_accept_raw(l, &c, timeout_ms);
	if (r < 0) {
		return r;
	}
	if (l->auth.key != NULL) {
		r = handshake(c, &l->auth, 1);
		if (r < 0) {
			cqw_conn_free(c);
			return r;
		}
	}
	*out = c;
	return 0;
}

/* The checks Python's deliver_challenge/answer_challenge make first. */
static int
check_split(cqw_conn *c, const struct cqw_auth *auth)
{
	int r;

	if (c == NULL || auth == NULL || auth->key == NULL) {
		return CQW_EINVAL;
	}
	r = cqw__check_auth(auth);
	if (r < 0) {
		return r;
	}
	if (c->closed) {
		return CQW_ECLOSED;
	}
	if ((c->flags & CQW_DUPLEX) != CQW_DUPLEX) {
		return CQW_EINVAL;
	}
	if (c->inflight) {
		return CQW_EBUSY; /* ops on a loop: they own the stream now */
	}
	return c->recv_error < 0 ? c->recv_error : c->send_error;
}

int
cqw_deliver_challenge(cqw_conn *c, const struct cqw_auth *auth)
{
	int r = check_split(c, auth);

	return r < 0 ? r
		     : cqw__auth_peer_failed(deliver_challenge(
			   c, auth, cqw__auth_deadline(auth)));
}

int
cqw_answer_challenge(cqw_conn *c, const struct cqw_auth *auth)
{
	int r = check_split(c, auth);

	return r < 0 ? r
		     : cqw__auth_peer_failed(
			   answer_challenge(c, auth, cqw__auth_deadline(auth)));
}

const char *
cqw_listener_address(const cqw_listener *l)
{
	return l != NULL ? l->address : NULL;
}

cqw_fd
cqw_listener_fileno(const cqw_listener *l)
{
	if (l == NULL) {
		return CQW_EINVAL;
	}
	return l->closed ? CQW_ECLOSED : cqw__listen_fileno(l->ls);
}

void
cqw__listener_close_now(cqw_listener *l)
{
	l->close_pending = 0;
	cqw__listen_close(l->ls); /* unlinks only in the creator */
	l->ls = NULL;
}

int
cqw_listener_close(cqw_listener *l)
{
	int r;

	if (l == NULL) {
		return CQW_EINVAL;
	}
	if (l->closed) {
		return 0;
	}
	/*
	 * ACCEPT ops in flight may have the kernel still using the handle:
	 * they are cancelled, and the endpoint closes with the last.
	 */
	if (l->nops > 0) {
		r = cqw__srv_listener_close(l);
		if (r < 0) {
			return r;
		}
		if (r == 0) {
			l->closed = 1;
			return 0;
		}
	}
	l->closed = 1;
	r = cqw__listen_close(l->ls); /* unlinks only in the creator */
	l->ls = NULL;
	return r;
}

void
cqw_listener_free(cqw_listener *l)
{
	if (l == NULL) {
		return;
	}
	cqw_listener_close(l);
	if (l->nops > 0) {
		l->free_pending = 1; /* with the last of its ops */
		return;
	}
	cqw__listener_free_now(l);
}

void
cqw__listener_free_now(cqw_listener *l)
{
	if (l->ls != NULL) {
		cqw__listen_close(l->ls);
	}
	if (l->keybuf != NULL) {
		/* Do not leave the key in freed memory. */
		cqw__wipe(l->keybuf, l->auth.keylen);
	}
	free(l->keybuf);
	free(l);
}

int
cqw_connect_timeout(cqw_conn **out, const char *address,
		    const struct cqw_auth *auth, int timeout_ms)
{
	struct cqw__addr a;
	cqw_conn *c;
	cqw_fd fd;
	int r, kind;

	if (out == NULL) {
		return CQW_EINVAL;
	}
	r = cqw__check_auth(auth);
	if (r < 0) {
		return r;
	}
	r = cqw__addr_parse(&a, address);
	if (r < 0) {
		return r;
	}
	r = cqw__os_connect(&a, &fd, &kind, connect_deadline(timeout_ms));
	if (r < 0) {
		return r;
	}
	r = cqw__conn_new(&c, fd, kind, CQW_DUPLEX);
	if (r < 0) {
		cqw__io_close(fd);
		return r;
	}
	if (auth != NULL && auth->key != NULL) {
		r = handshake(c, auth, 0);
		if (r < 0) {
			cqw_conn_free(c);
			return r;
		}
	}
	*out = c;
	return 0;
}

int
cqw_connect(cqw_conn **out, const char *address, const struct cqw_auth *auth)
{
	return cqw_connect_timeout(out, address, auth, -1);
}
