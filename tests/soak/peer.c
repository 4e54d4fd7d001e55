/*
 * The peer: echo every message until EOF, by the synchronous API (peers
 * of the parent's loop groups) or on a loop (peers of the parent's
 * synchronous group). A message flagged F_DIE arms a SIGKILL a moment
 * later, most often while its echo is half written.
 */
#include "soak.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static void
die_now(int sig)
{
	(void)sig;
	kill(getpid(), SIGKILL);
}

/* Arm a SIGKILL 0-1500 us from now: mostly lands inside the echo. */
static void
arm_kill(uint64_t *rng)
{
	struct itimerval it;

	memset(&it, 0, sizeof(it));
	it.it_value.tv_usec = (long)soak_rnd_range(rng, 1, 1500);
	signal(SIGALRM, die_now);
	setitimer(ITIMER_REAL, &it, NULL);
}

/* A peer checks what it can (our header) before echoing. */
static int
peer_check(const uint8_t *p, size_t len, uint32_t conn, uint32_t gen,
	   unsigned *flags)
{
	struct hdr h;

	*flags = 0;
	if (len < HDR_LEN) {
		return 0;
	}
	soak_hdr_get(&h, p);
	if (h.magic != SOAK_MAGIC || h.conn != conn || h.gen != gen ||
	    h.len != len || h.sum != soak_msg_sum(p, len)) {
		fprintf(stderr,
			"soak peer %u/%u: corrupt message: len %zu magic %08x"
			" conn %u gen %u seq %" PRIu64 " hlen %u\n",
			conn, gen, len, h.magic, h.conn, h.gen, h.seq, h.len);
		return -1;
	}
	*flags = h.flags;
	return 0;
}

struct peer {
	cqw_conn *rx, *tx;
	uint32_t conn, gen;
	uint64_t rng;
	int fault;
	uint64_t seen;
	struct cqw_msg held; /* FAULT_REORDER: goes out after the next */
};

/*
 * The echo of in[0..n) into out[] (room for 2n + 1), with the fault
 * applied where it falls due. Returns the count.
 */
static size_t
peer_faults(struct peer *p, struct cqw_msg *in, size_t n, struct cqw_msg *out)
{
	size_t i, m = 0;
	int hit;

	for (i = 0; i < n; i++) {
		hit = p->fault != FAULT_NONE && p->seen++ == FAULT_AT;
		if (hit && in[i].len == 0 && p->fault != FAULT_DROP &&
		    p->fault != FAULT_DUP) {
			p->seen--; /* nothing to cut or flip: the next one */
			hit = 0;
		}
		if (hit && p->fault == FAULT_DROP) {
			continue;
		}
		if (hit && p->fault == FAULT_REORDER) {
			p->held.buf = malloc(in[i].len);
			if (p->held.buf == NULL) {
				abort();
			}
			memcpy(p->held.buf, in[i].buf, in[i].len);
			p->held.len = in[i].len;
			continue;
		}
		out[m] = in[i];
		if (hit && p->fault == FAULT_CORRUPT) {
			((uint8_t *)in[i].buf)[in[i].len - 1] ^= 0x40;
		} else if (hit && p->fault == FAULT_TRUNCATE) {
			out[m].len--;
		} else if (hit && p->fault == FAULT_DUP) {
			out[++m] = in[i];
		}
		m++;
		if (!hit && p->held.buf != NULL && p->held.cap == 0) {
			out[m++] = p->held;
			p->held.cap = 1; /* sent with this echo, then freed */
		}
	}
	return m;
}

static int
peer_fail(const char *what, int r)
{
	fprintf(stderr, "soak peer: %s: %s\n", what, cqw_err_name(r));
	return 4;
}

/* Synchronous peer: rotates over every receive call and both sends. */
static int
peer_sync(struct peer *p)
{
	struct cqw_msg msgs[BATCH_MAX], out[2 * BATCH_MAX + 1];
	uint8_t *bufs[BATCH_MAX];
	size_t i, n, needed;
	unsigned fl;
	int64_t r;
	void *big;
	int k, mine, rc = 0;

	for (i = 0; i < BATCH_MAX; i++) {
		bufs[i] = malloc(SMALL_CAP);
		if (bufs[i] == NULL) {
			return 4;
		}
	}
	for (;;) {
		n = 0;
		big = NULL;
		mine = 1; /* big from malloc(), else from cqw_recv_bytes() */
		switch (soak_rnd(&p->rng) % 3) {
		case 0:
			for (i = 0; i < BATCH_MAX; i++) {
				msgs[i].buf = bufs[i];
				msgs[i].cap = SMALL_CAP;
				msgs[i].len = 0;
			}
			k = cqw_recv_batch(p->rx, msgs, BATCH_MAX, -1);
			if (k == CQW_ETOOSHORT) {
				needed = msgs[0].len;
				big = malloc(needed ? needed : 1);
				r = cqw_recv_bytes_into(p->rx, big, needed, 0,
							NULL);
				if (r < 0) {
					free(big);
					k = (int)r;
				} else {
					msgs[0].buf = big;
					msgs[0].len = (size_t)r;
					k = 1;
				}
			}
			if (k < 0) {
				r = k;
				break;
			}
			n = (size_t)k;
			r = 0;
			break;
		case 1:
			r = cqw_recv_bytes(p->rx, &big, CQW_NONE);
			mine = 0;
			if (r >= 0) {
				msgs[0].buf = big;
				msgs[0].len = (size_t)r;
				n = 1;
			}
			break;
		default:
			r = cqw_recv_bytes_into(p->rx, bufs[0], SMALL_CAP, 0,
						&needed);
			if (r == CQW_ETOOSHORT) {
				big = malloc(needed ? needed : 1);
				r = cqw_recv_bytes_into(p->rx, big, needed, 0,
							NULL);
				msgs[0].buf = big;
			} else {
				msgs[0].buf = bufs[0];
			}
			if (r >= 0) {
				msgs[0].len = (size_t)r;
				n = 1;
			}
			break;
		}
		if (r < 0) {
			free(big);
			rc = r == CQW_EOF ? 0 : peer_fail("receive", (int)r);
			break;
		}
		for (i = 0; i < n; i++) {
			if (peer_check(msgs[i].buf, msgs[i].len, p->conn,
				       p->gen, &fl) != 0) {
				return 3;
			}
			if (fl & F_DIE) {
				arm_kill(&p->rng);
			}
		}
		n = peer_faults(p, msgs, n, out);
		if (n > 1 && soak_rnd(&p->rng) % 2 == 0) {
			k = cqw_send_batch(p->tx, out, n);
		} else {
			for (i = 0, k = 0; i < n && k == 0; i++) {
				k = cqw_send_bytes(p->tx, out[i].buf,
						   out[i].len);
			}
		}
		if (p->held.cap != 0) {
			free(p->held.buf);
			p->held.buf = NULL;
			p->held.cap = 0;
		}
		if (mine) {
			free(big);
		} else {
			cqw_free(big);
		}
		if (k < 0) {
			rc = peer_fail("send", k);
			break;
		}
	}
	for (i = 0; i < BATCH_MAX; i++) {
		free(bufs[i]);
	}
	return rc;
}

struct peer_op {
	struct cqw_op op;
	uint8_t *buf;
};

static int
peer_submit_recv(cqw_loop *loop, struct peer_op *o, cqw_conn *rx, size_t cap)
{
	o->buf = malloc(cap ? cap : 1);
	if (o->buf == NULL) {
		return CQW_ENOMEM;
	}
	o->op.kind = CQW_OP_RECV;
	o->op.conn = rx;
	o->op.buf = o->buf;
	o->op.len = cap;
	return cqw_submit(loop, &o->op);
}

/* Loop peer: one receive always posted, echoes queued as sends. */
static int
peer_loop(struct peer *p, enum cqw_backend backend)
{
	struct cqw_loop_opts opts = { backend, 0 };
	struct cqw_op *done[32];
	struct peer_op *rop, *sop;
	int i, n, r, rc = 0, eof = 0, sends = 0;
	unsigned fl;
	cqw_loop *loop;

	r = cqw_loop_new(&loop, &opts);
	if (r < 0) {
		return peer_fail("loop", r);
	}
	rop = calloc(1, sizeof(*rop));
	if (rop == NULL || peer_submit_recv(loop, rop, p->rx, SMALL_CAP)) {
		return 4;
	}
	while (!eof || sends > 0) {
		n = cqw_reap(loop, done, 32, -1);
		if (n < 0) {
			rc = peer_fail("reap", n);
			break;
		}
		for (i = 0; i < n; i++) {
			struct peer_op *o = (struct peer_op *)done[i];

			if (o->op.kind == CQW_OP_SEND) {
				sends--;
				if (o->op.result < 0) {
					return peer_fail("send",
							 (int)o->op.result);
				}
				free(o->buf);
				free(o);
				continue;
			}
			if (o->op.result == CQW_EOF) {
				eof = 1;
				free(o->buf);
				free(o);
				continue;
			}
			if (o->op.result == CQW_ETOOSHORT) {
				free(o->buf);
				r = peer_submit_recv(loop, o, p->rx,
						     o->op.needed);
				if (r < 0) {
					return peer_fail("submit", r);
				}
				continue;
			}
			if (o->op.result < 0) {
				return peer_fail("receive", (int)o->op.result);
			}
			if (peer_check(o->buf, (size_t)o->op.result, p->conn,
				       p->gen, &fl) != 0) {
				return 3;
			}
			if (fl & F_DIE) {
				arm_kill(&p->rng);
			}
			/* The received op becomes the echo's send. */
			sop = o;
			sop->op.kind = CQW_OP_SEND;
			sop->op.conn = p->tx;
			sop->op.len = (size_t)o->op.result;
			r = cqw_submit(loop, &sop->op);
			if (r < 0) {
				return peer_fail("submit", r);
			}
			sends++;
			o = calloc(1, sizeof(*o));
			if (o == NULL ||
			    peer_submit_recv(loop, o, p->rx, SMALL_CAP)) {
				return 4;
			}
		}
	}
	cqw_loop_free(loop);
	return rc;
}

/*
 * argv: --peer sync|loop BACKEND FLAGS CONN GEN SEED FAULT; the connection
 * is descriptor 3 (socket pair) or 3 and 4 (read and write pipes).
 */
int
soak_peer_main(int argc, char **argv)
{
	struct peer p;
	unsigned flags;
	int backend, r;

	memset(&p, 0, sizeof(p));
	if (argc != 9) {
		fprintf(stderr, "soak: bad peer arguments\n");
		return 4;
	}
	backend = atoi(argv[3]);
	flags = (unsigned)strtoul(argv[4], NULL, 0);
	p.conn = (uint32_t)strtoul(argv[5], NULL, 0);
	p.gen = (uint32_t)strtoul(argv[6], NULL, 0);
	p.rng = strtoull(argv[7], NULL, 0);
	p.fault = atoi(argv[8]);
	if ((flags & CQW_DUPLEX) == CQW_DUPLEX) {
		r = cqw_conn_from_fd(&p.rx, 3, flags);
		p.tx = p.rx;
	} else {
		r = cqw_conn_from_fd(&p.rx, 3, CQW_READABLE | flags);
		if (r == 0) {
			r = cqw_conn_from_fd(&p.tx, 4, CQW_WRITABLE | flags);
		}
	}
	if (r < 0) {
		return peer_fail("conn", r);
	}
	if (strcmp(argv[2], "sync") == 0) {
		r = peer_sync(&p);
	} else {
		r = peer_loop(&p, (enum cqw_backend)backend);
	}
	if (p.tx != p.rx) {
		cqw_conn_free(p.tx);
	}
	cqw_conn_free(p.rx);
	return r;
}
