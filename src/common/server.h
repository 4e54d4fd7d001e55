/*
 * Servers on the loop: CQW_OP_ACCEPT and CQW_OP_CONNECT (server.c), and
 * the listener they share with the synchronous calls (listener.c).
 */
#ifndef CQW_SERVER_H
#define CQW_SERVER_H

#include "address.h"
#include "internal.h"

struct cqw__hs;

struct cqw_listener {
	struct cqw__lsock *ls; /* the platform's endpoint */
	int closed;
	struct cqw__addr addr;
	char address[CQW__ADDR_PATH_MAX + 16];
	struct cqw_auth auth; /* key copied into keybuf */
	uint8_t *keybuf;

	/* ACCEPT ops (server.c), all on one loop at a time. */
	cqw_loop *loop;	   /* the loop they are on, NULL if none */
	unsigned nops;	   /* submitted and not yet completed */
	int close_pending; /* closed with ops in flight: ls goes with the last */
	int free_pending;  /* freed likewise: l goes with the last */
	uint64_t bound_to; /* the loop whose backend took ls's handle */
	int64_t retry_at;  /* after EMFILE: no accept before (cqw__now_ms) */
};

/* 0 if auth (NULL: none) is one the handshake can use, else CQW_EINVAL. */
int cqw__check_auth(const struct cqw_auth *auth);
/*
 * A handshake's error as the caller sees it: a frame over the 256-byte
 * cap (CQW_ETOOSHORT on the loop, CQW_EMSGSIZE in the sync calls) or a
 * lie about a length is a failed peer, CQW_EAUTH; the rest as it is.
 */
int cqw__auth_peer_failed(int r);
/* The handshake's deadline under auth (absolute; -1: none). */
int64_t cqw__auth_deadline(const struct cqw_auth *auth);
/* Listener endpoint teardown once no op uses it (listener.c). */
void cqw__listener_close_now(cqw_listener *l);
void cqw__listener_free_now(cqw_listener *l);

/* The loop's side (loop.c calls these; all on the loop's thread). */
int cqw__srv_submit(cqw_loop *loop, struct cqw_op *op);
int cqw__srv_cancel(cqw_loop *loop, struct cqw_op *op);
/* Start the accepts and connects submitted since the last flush. */
void cqw__srv_kick(cqw_loop *loop);
/* An accept or connect io (io->conn == NULL) completed. */
void cqw__srv_io_done(cqw_loop *loop, struct cqw__io *io);
/* Take the next steps of handshakes whose frames completed. */
void cqw__srv_run(cqw_loop *loop);
/* Deadlines: the wait a reap may make (<= timeout_ms), and expiry. */
int cqw__srv_wait_ms(cqw_loop *loop, int timeout_ms);
void cqw__srv_expire(cqw_loop *loop);
/* In a forked child: every accept and connect ends with CQW_EFORK. */
void cqw__srv_fork(cqw_loop *loop);
/*
 * Close l with its ops in flight on loop: cancel them (loop's thread);
 * the endpoint closes with the last (0). 1: none was left (a fork ended
 * them): close it now.
 */
int cqw__srv_listener_close(cqw_listener *l);

/* An internal op of a handshake: priv[5] names its handshake. */
#define CQW__OP_HS(op) ((struct cqw__hs *)(op)->priv[5])
/* A user's ACCEPT or CONNECT op: priv[2] holds its handshake. */
#define CQW__OP_SRV(op) ((struct cqw__hs *)(op)->priv[2])
/* An internal op of hs completed (from cqw__loop_op_done). */
void cqw__srv_ready(cqw_loop *loop, struct cqw_op *op);

#endif
