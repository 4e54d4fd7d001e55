/*
 * The parent's groups: a loop group drives its connections with
 * cqw_submit/cqw_flush/cqw_reap on one backend; the synchronous group
 * with cqw_wait and the blocking calls. Both keep each connection's
 * outstanding messages in a FIFO and check every echo against it, and
 * both kill and restart peers (main.c describes a slot's life).
 */
#include "soak.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * Error codes a killed peer's connection may end with, for the report;
 * CQW_ECANCELED for ops that a close (--close-early) ended.
 */
static const int end_codes[] = { CQW_EOF, CQW_ETRUNC, CQW_ECONNRESET, CQW_EPIPE,
				 CQW_ECANCELED };

struct opts soak_opt;
char soak_self_exe[4096];
atomic_int soak_pause_req, soak_stop_req;
atomic_uint_fast64_t soak_budget;

static void group_fail(struct group *g, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
group_fail(struct group *g, const char *fmt, ...)
{
	va_list ap;

	if (atomic_exchange(&g->failed, 1)) {
		return;
	}
	va_start(ap, fmt);
	vsnprintf(g->err, sizeof(g->err), fmt, ap);
	va_end(ap);
	fprintf(stderr, "soak: %s: %s\n", g->name, g->err);
}

/* Take one message from the global soak_budget; 0 when it is spent. */
static int
take_budget(void)
{
	uint_fast64_t b = atomic_load(&soak_budget);

	while (b > 0) {
		if (atomic_compare_exchange_weak(&soak_budget, &b, b - 1)) {
			return 1;
		}
	}
	return 0;
}

static void
end_code_count(atomic_uint_fast64_t *ends, int r)
{
	size_t i;

	for (i = 0; i < N_END; i++) {
		if (r == end_codes[i]) {
			break;
		}
	}
	if (i == N_END) {
		fprintf(stderr, "soak: a killed peer's connection ended %s\n",
			cqw_err_name(r));
	}
	atomic_fetch_add(&ends[i], 1);
}

static void
plan_kill(struct slot *s)
{
	s->kill_kind = KILL_NONE;
	if (soak_opt.kill_every == 0) {
		return;
	}
	s->kill_after = soak_rnd_range(&s->g->rng, 1, 2 * soak_opt.kill_every);
	s->kill_kind = KILL_PARENT + (int)(soak_rnd(&s->g->rng) % 3);
}

static void
close_slot_conns(struct slot *s)
{
	if (s->tx != s->rx) {
		cqw_conn_free(s->tx);
	}
	cqw_conn_free(s->rx);
	s->tx = s->rx = NULL;
}

/*
 * New connections and a new peer for slot s. The child moves its ends to
 * descriptors 3 (and 4) and execs itself: everything else it inherited is
 * close-on-exec, so no sibling keeps this peer's connection open.
 */
static int
spawn_peer(struct slot *s)
{
	char a_backend[16], a_flags[16], a_conn[16], a_gen[16], a_seed[32];
	char a_fault[16];
	char *argv[10];
	cqw_conn *pa = NULL, *pb = NULL, *qa = NULL, *qb = NULL;
	int cfd3, cfd4 = -1, r;
	const char *api = s->g->kind == G_LOOP ? "sync" : "loop";
	pid_t pid;

	if (s->flags & CQW_DUPLEX) {
		r = cqw_pipe(&pa, &pb, s->flags);
		if (r < 0) {
			return r;
		}
		s->tx = s->rx = pa;
		cfd3 = cqw_conn_fileno(pb);
	} else {
		/* pa/pb: parent to peer; qa/qb: peer to parent. */
		r = cqw_pipe(&pa, &pb, s->flags);
		if (r < 0) {
			return r;
		}
		r = cqw_pipe(&qa, &qb, s->flags);
		if (r < 0) {
			cqw_conn_free(pa);
			cqw_conn_free(pb);
			return r;
		}
		s->tx = pb;
		s->rx = qa;
		cfd3 = cqw_conn_fileno(pa);
		cfd4 = cqw_conn_fileno(qb);
	}
	snprintf(a_backend, sizeof(a_backend), "%d", (int)s->peer_backend);
	snprintf(a_flags, sizeof(a_flags), "%u", s->flags);
	snprintf(a_conn, sizeof(a_conn), "%u", s->id);
	snprintf(a_gen, sizeof(a_gen), "%u", s->gen);
	snprintf(a_seed, sizeof(a_seed), "%" PRIu64, soak_rnd(&s->g->rng));
	snprintf(a_fault, sizeof(a_fault), "%d", soak_opt.fault);
	argv[0] = soak_self_exe;
	argv[1] = "--peer";
	argv[2] = (char *)api;
	argv[3] = a_backend;
	argv[4] = a_flags;
	argv[5] = a_conn;
	argv[6] = a_gen;
	argv[7] = a_seed;
	argv[8] = a_fault;
	argv[9] = NULL;
	pid = fork();
	if (pid < 0) {
		r = -errno;
		goto out_free;
	}
	if (pid == 0) {
		/* Only async-signal-safe calls between fork and exec. */
		int h3 = fcntl(cfd3, F_DUPFD_CLOEXEC, 100);
		int h4 = cfd4 >= 0 ? fcntl(cfd4, F_DUPFD_CLOEXEC, 100) : -1;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (h3 < 0 || dup2(h3, 3) != 3 ||
		    (h4 >= 0 && dup2(h4, 4) != 4)) {
			_exit(126);
		}
		execv(soak_self_exe, argv);
		_exit(127);
	}
	s->pid = pid;
	r = 0;
out_free:
	/* The parent's copies of the peer's ends. */
	if (s->flags & CQW_DUPLEX) {
		cqw_conn_free(pb);
	} else {
		cqw_conn_free(pa);
		cqw_conn_free(qb);
	}
	if (r < 0) {
		close_slot_conns(s);
	}
	return r;
}

static int
slot_start(struct slot *s)
{
	s->state = ST_LIVE;
	s->head = s->count = s->bytes = 0;
	s->nskipped = 0;
	s->nrecent = 0;
	s->gen_sent = 0;
	s->rx_err = 0;
	s->broken = 0;
	s->rop_busy = 0;
	s->sends = 0;
	s->cancelled = 0;
	s->close_now = 0;
	memset(&s->rop, 0, sizeof(s->rop));
	plan_kill(s);
	return spawn_peer(s);
}

/* The slot's connections have failed and no op is left: reap, restart. */
static int
slot_finish(struct slot *s)
{
	struct stats *st = &s->g->st;
	int status = 0, killed = s->kill_kind != KILL_NONE;
	pid_t r;

	close_slot_conns(s);
	do {
		r = waitpid(s->pid, &status, 0);
	} while (r < 0 && errno == EINTR);
	if (r != s->pid) {
		group_fail(s->g, "waitpid %d: %s", (int)s->pid,
			   strerror(errno));
		return -1;
	}
	if (s->broken) {
		atomic_fetch_add(&st->lost, s->count);
		fprintf(stderr, "soak: conn %u gen %u: peer status 0x%x\n",
			s->id, s->gen, status);
		s->gen++;
		return slot_start(s);
	}
	if (killed && !(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
		atomic_fetch_add(&st->bad_exit, 1);
		group_fail(s->g, "conn %u gen %u: peer status 0x%x, not killed",
			   s->id, s->gen, status);
	}
	if (killed) {
		atomic_fetch_add(&st->lost_kill, s->count);
	} else {
		/* A peer that died on its own lost what it held. */
		atomic_fetch_add(&st->lost, s->count);
	}
	s->gen++;
	return slot_start(s);
}

static void
kill_peer(struct slot *s)
{
	kill(s->pid, SIGKILL);
	atomic_fetch_add(&s->g->st.killed_parent, 1);
	s->state = ST_DYING;
	/* Sometimes drop the connection at once, as a pool parent would. */
	if (s->g->kind == G_LOOP && !s->broken &&
	    soak_rnd(&s->g->rng) % 100 < (uint64_t)soak_opt.close_early) {
		s->close_now = 1;
	}
}

/* A connection error: expected once the peer was killed, else a failure. */
static void
slot_error(struct slot *s, const char *what, int r)
{
	if (s->state == ST_LIVE) {
		atomic_fetch_add(&s->g->st.unexpected, 1);
		group_fail(s->g, "conn %u gen %u: %s: %s on a live peer", s->id,
			   s->gen, what, cqw_err_name(r));
		s->kill_kind = KILL_PARENT;
		s->broken = 1;
		kill_peer(s);
	}
}

/*
 * Build the next message for s; NULL when the budget is spent. A message
 * that ends the peer (die, from next_is_die()) is a large one.
 */
static uint8_t *
make_msg(struct slot *s, size_t *lenp, int die)
{
	struct hdr h;
	struct rec *rc;
	uint8_t *buf;
	size_t len, cap = soak_opt.window;

	if (!take_budget()) {
		return NULL;
	}
	len = soak_pick_size(&s->g->rng, soak_opt.max_size);
	if (die) {
		len = soak_rnd_range(&s->g->rng, MAX_MSG / 4, MAX_MSG);
		len = len < soak_opt.max_size ? len : soak_opt.max_size;
		len = len < HDR_LEN ? HDR_LEN : len;
	}
	buf = malloc(len ? len : 1);
	if (buf == NULL) {
		return NULL;
	}
	if (len < HDR_LEN) {
		soak_fill(buf, len,
			  soak_content_key(soak_opt.seed, s->id, s->gen,
					   s->next_seq));
	} else {
		soak_fill(buf + HDR_LEN, len - HDR_LEN, soak_rnd(&s->g->rng));
		h.magic = SOAK_MAGIC;
		h.conn = s->id;
		h.gen = s->gen;
		h.flags = die == KILL_SELF ? F_DIE : 0;
		h.seq = s->next_seq;
		h.len = (uint32_t)len;
		h.sum = 0;
		soak_hdr_put(buf, &h);
		h.sum = soak_msg_sum(buf, len);
		soak_hdr_put(buf, &h);
	}
	rc = &s->ring[(s->head + s->count) % cap];
	rc->seq = s->next_seq++;
	rc->len = (uint32_t)len;
	rc->sum = len < HDR_LEN ? 0 : soak_msg_sum(buf, len);
	s->count++;
	s->bytes += len;
	s->gen_sent++;
	atomic_fetch_add(&s->g->st.sent, 1);
	*lenp = len;
	return buf;
}

/* Room for another message in the window, and no kill pending? */
static int
may_send(struct slot *s)
{
	if (s->state != ST_LIVE || atomic_load(&soak_pause_req) ||
	    s->count >= soak_opt.window || s->bytes >= soak_opt.window_bytes) {
		return 0;
	}
	if (s->kill_kind == KILL_PARENT && s->gen_sent >= s->kill_after) {
		kill_peer(s);
		return 0;
	}
	return 1;
}

/*
 * The message that crosses kill_after ends the peer: KILL_SELF, it tells
 * the peer to die a moment later (in its echo); KILL_LARGE, the parent
 * kills the peer as soon as its write has started. 0 for the others.
 */
static int
next_is_die(struct slot *s)
{
	if ((s->kill_kind == KILL_SELF || s->kill_kind == KILL_LARGE) &&
	    s->gen_sent + 1 >= s->kill_after) {
		return s->kill_kind;
	}
	return 0;
}

static void
after_send(struct slot *s, int die)
{
	if (die == KILL_SELF) {
		atomic_fetch_add(&s->g->st.killed_self, 1);
		s->state = ST_DYING;
	} else if (die == KILL_LARGE) {
		atomic_fetch_add(&s->g->st.killed_large, 1);
		kill_peer(s);
	}
}

static void
pop_rec(struct slot *s)
{
	s->bytes -= s->ring[s->head].len;
	s->head = (s->head + 1) % soak_opt.window;
	s->count--;
}

static int
short_matches(struct slot *s, const struct rec *rc, const uint8_t *p,
	      size_t len)
{
	uint8_t want[HDR_LEN];

	if (rc->len != len) {
		return 0;
	}
	soak_fill(want, len,
		  soak_content_key(soak_opt.seed, s->id, s->gen, rc->seq));
	return memcmp(want, p, len) == 0;
}

/* Count records before position k as lost (they may still come late). */
static void
skip_to(struct slot *s, size_t k)
{
	struct stats *st = &s->g->st;

	while (k-- > 0) {
		if (s->nskipped < SKIPPED_MAX) {
			s->skipped[s->nskipped++] = s->ring[s->head];
		}
		atomic_fetch_add(&st->lost, 1);
		pop_rec(s);
	}
}

/* seq (or, for a message shorter than our header, p) was counted lost. */
static int
was_skipped(struct slot *s, uint64_t seq, const uint8_t *p, size_t len)
{
	size_t i;

	for (i = 0; i < s->nskipped; i++) {
		if (p != NULL ? short_matches(s, &s->skipped[i], p, len)
			      : s->skipped[i].seq == seq) {
			s->skipped[i] = s->skipped[--s->nskipped];
			return 1;
		}
	}
	return 0;
}

/* A short message like one of the last received. */
static int
was_recent(struct slot *s, const uint8_t *p, size_t len)
{
	size_t i;

	for (i = 0; i < s->nrecent && i < RECENT_MAX; i++) {
		if (short_matches(s, &s->recent[i], p, len)) {
			return 1;
		}
	}
	return 0;
}

/*
 * One message came back on s: it must be the oldest outstanding one. A
 * later one means the ones before it were lost; an earlier one that was
 * counted lost is a reorder; any other earlier one a duplicate; one that
 * fails its own checks is torn.
 */
static void
check_msg(struct slot *s, const uint8_t *p, size_t len)
{
	struct stats *st = &s->g->st;
	size_t k, cap = soak_opt.window;
	struct hdr h;

	if (len >= HDR_LEN) {
		soak_hdr_get(&h, p);
		if (h.magic != SOAK_MAGIC || h.conn != s->id ||
		    h.gen != s->gen || h.len != len ||
		    h.sum != soak_msg_sum(p, len) || h.seq >= s->next_seq) {
			atomic_fetch_add(&st->torn, 1);
			group_fail(
			    s->g,
			    "conn %u gen %u: torn message, len %zu"
			    " (header: magic %08x conn %u gen %u seq %" PRIu64
			    " len %u)",
			    s->id, s->gen, len, h.magic, h.conn, h.gen, h.seq,
			    h.len);
			return;
		}
		for (k = 0; k < s->count; k++) {
			if (s->ring[(s->head + k) % cap].seq == h.seq) {
				break;
			}
		}
		if (k == s->count) {
			if (was_skipped(s, h.seq, NULL, 0)) {
				atomic_fetch_sub(&st->lost, 1);
				atomic_fetch_add(&st->reordered, 1);
				group_fail(s->g,
					   "conn %u: seq %" PRIu64 " reordered",
					   s->id, h.seq);
				atomic_fetch_add(&st->received, 1);
			} else {
				atomic_fetch_add(&st->dup, 1);
				group_fail(
				    s->g, "conn %u: seq %" PRIu64 " duplicated",
				    s->id, h.seq);
			}
			return;
		}
		if (s->ring[(s->head + k) % cap].sum != h.sum) {
			atomic_fetch_add(&st->torn, 1);
			group_fail(s->g, "conn %u: seq %" PRIu64 " altered",
				   s->id, h.seq);
		}
	} else {
		for (k = 0; k < s->count && k < 8; k++) {
			if (short_matches(s, &s->ring[(s->head + k) % cap], p,
					  len)) {
				break;
			}
		}
		if (k == s->count || k == 8) {
			if (was_skipped(s, 0, p, len)) {
				atomic_fetch_sub(&st->lost, 1);
				atomic_fetch_add(&st->reordered, 1);
				atomic_fetch_add(&st->received, 1);
			} else if (was_recent(s, p, len)) {
				atomic_fetch_add(&st->dup, 1);
			} else {
				atomic_fetch_add(&st->torn, 1);
			}
			group_fail(
			    s->g, "conn %u gen %u: unexpected %zu-byte message",
			    s->id, s->gen, len);
			return;
		}
	}
	if (k > 0) {
		group_fail(s->g, "conn %u gen %u: %zu messages lost", s->id,
			   s->gen, k);
		skip_to(s, k);
	}
	s->recent[s->nrecent++ % RECENT_MAX] = s->ring[s->head];
	pop_rec(s);
	atomic_fetch_add(&st->received, 1);
	atomic_fetch_add(&st->bytes, len);
}

/* Block here while the main thread measures; 1 when asked to stop. */
static int
idle_point(struct group *g, int quiet)
{
	if (atomic_load(&soak_stop_req)) {
		return 1;
	}
	if (!atomic_load(&soak_pause_req) || !quiet) {
		return 0;
	}
	atomic_store(&g->paused, 1);
	while (atomic_load(&soak_pause_req) && !atomic_load(&soak_stop_req)) {
		soak_sleep_ms(1);
	}
	atomic_store(&g->paused, 0);
	return atomic_load(&soak_stop_req);
}

/* Every slot live with nothing outstanding. */
static int
group_quiet(struct group *g)
{
	size_t i;

	for (i = 0; i < g->nslots; i++) {
		if (g->slots[i]->state != ST_LIVE || g->slots[i]->count > 0) {
			return 0;
		}
	}
	return 1;
}

/* Close every write side, and let each peer see EOF and exit 0. */
static void
group_shutdown(struct group *g)
{
	size_t i;
	int status;

	for (i = 0; i < g->nslots; i++) {
		struct slot *s = g->slots[i];

		close_slot_conns(s);
		if (waitpid(s->pid, &status, 0) != s->pid ||
		    !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			atomic_fetch_add(&g->st.bad_exit, 1);
			group_fail(g, "conn %u: peer ended with status 0x%x",
				   s->id, status);
		}
	}
}

/* --- the loop groups --- */

static int
loop_submit_recv(cqw_loop *loop, struct slot *s)
{
	s->rop.kind = CQW_OP_RECV;
	s->rop.conn = s->rx;
	s->rop.buf = s->rbuf;
	s->rop.len = s->rcap;
	s->rop.user_data = s;
	s->rop_busy = 1;
	return cqw_submit(loop, &s->rop);
}

static int
loop_fill(cqw_loop *loop, struct slot *s)
{
	struct sop *o;
	uint8_t *buf;
	size_t len;
	int die, r;

	while (may_send(s)) {
		die = next_is_die(s);
		buf = make_msg(s, &len, die);
		if (buf == NULL) {
			break;
		}
		o = calloc(1, sizeof(*o));
		if (o == NULL) {
			return CQW_ENOMEM;
		}
		o->s = s;
		o->op.kind = CQW_OP_SEND;
		o->op.conn = s->tx;
		o->op.buf = buf;
		o->op.len = len;
		r = cqw_submit(loop, &o->op);
		if (r < 0) {
			return r;
		}
		s->sends++;
		if (die == KILL_LARGE) {
			/* Start the write: the kill should land inside it. */
			r = cqw_flush(loop);
			if (r < 0) {
				return r;
			}
		}
		after_send(s, die);
	}
	if (!s->rop_busy && !s->rx_err) {
		r = loop_submit_recv(loop, s);
		if (r < 0) {
			return r;
		}
	}
	if (s->close_now) {
		/*
		 * cqw_conn_close() cancels the ops still queued or in flight
		 * (the receive just submitted, flushed or not) and waits for
		 * them; they come back from cqw_reap() all the same.
		 */
		s->close_now = 0;
		s->rx_err = 1;
		atomic_fetch_add(&s->g->st.closed_early, 1);
		r = soak_rnd(&s->g->rng) % 2 ? cqw_flush(loop) : 0;
		if (r == 0) {
			r = cqw_conn_close(s->tx);
		}
		if (r == 0 && s->rx != s->tx) {
			r = cqw_conn_close(s->rx);
		}
		return r;
	}
	return 0;
}

static int
loop_done(cqw_loop *loop, struct cqw_op *op)
{
	struct slot *s;

	if (op->kind == CQW_OP_SEND) {
		struct sop *o = (struct sop *)op;

		s = o->s;
		s->sends--;
		if (op->result < 0) {
			slot_error(s, "send", (int)op->result);
			end_code_count(s->g->st.send_ends, (int)op->result);
		}
		free(op->buf);
		free(o);
		return 0;
	}
	s = op->user_data;
	s->rop_busy = 0;
	if (op->result == CQW_ETOOSHORT && s->rx_err) {
		return 0; /* closed meanwhile (--close-early): it ends here */
	}
	if (op->result == CQW_ETOOSHORT) {
		free(s->rbuf);
		s->rcap = op->needed;
		s->rbuf = malloc(s->rcap ? s->rcap : 1);
		return s->rbuf == NULL ? CQW_ENOMEM : loop_submit_recv(loop, s);
	}
	if (op->result < 0) {
		slot_error(s, "receive", (int)op->result);
		end_code_count(s->g->st.ends, (int)op->result);
		s->rx_err = 1;
		return 0;
	}
	check_msg(s, s->rbuf, (size_t)op->result);
	if (s->rcap > SMALL_CAP) {
		/* Do not keep a large buffer per connection. */
		free(s->rbuf);
		s->rcap = SMALL_CAP;
		s->rbuf = malloc(s->rcap);
		if (s->rbuf == NULL) {
			return CQW_ENOMEM;
		}
	}
	return 0;
}

static void
loop_group(struct group *g)
{
	struct cqw_loop_opts lo = { g->backend, 0 };
	struct cqw_op *done[64];
	cqw_loop *loop;
	size_t i;
	int n, r;

	r = cqw_loop_new(&loop, &lo);
	if (r < 0) {
		group_fail(g, "cqw_loop_new: %s", cqw_err_name(r));
		return;
	}
	for (i = 0; i < g->nslots; i++) {
		g->slots[i]->rcap = SMALL_CAP;
		g->slots[i]->rbuf = malloc(SMALL_CAP);
		if (g->slots[i]->rbuf == NULL || slot_start(g->slots[i]) < 0) {
			group_fail(g, "start conn %zu", i);
			goto out_free;
		}
	}
	for (;;) {
		if (idle_point(g, group_quiet(g))) {
			break;
		}
		for (i = 0; i < g->nslots; i++) {
			struct slot *s = g->slots[i];

			if (s->state == ST_DYING && s->rx_err &&
			    s->sends == 0 && !s->rop_busy) {
				if (slot_finish(s) < 0) {
					goto out_drain;
				}
			}
			r = loop_fill(loop, s);
			if (r < 0) {
				group_fail(g, "submit: %s", cqw_err_name(r));
				goto out_drain;
			}
		}
		n = cqw_reap(loop, done, 64, 100);
		if (n < 0) {
			group_fail(g, "reap: %s", cqw_err_name(n));
			goto out_drain;
		}
		for (i = 0; i < (size_t)n; i++) {
			r = loop_done(loop, done[i]);
			if (r < 0) {
				group_fail(g, "resubmit: %s", cqw_err_name(r));
			}
		}
	}
out_drain:
	/*
	 * Every op must end before its connection closes: close the write
	 * side of pipes (the peer sees EOF and closes its own, which ends
	 * our receive) and cancel the receive on socket pairs.
	 */
	for (;;) {
		int busy = 0;

		for (i = 0; i < g->nslots; i++) {
			struct slot *s = g->slots[i];

			if (s->pid > 0 && atomic_load(&g->failed)) {
				kill(s->pid, SIGKILL);
			}
			if (s->tx != s->rx && s->tx != NULL && s->sends == 0) {
				cqw_conn_free(s->tx);
				s->tx = NULL;
			}
			if (s->tx == s->rx && s->rop_busy && s->sends == 0 &&
			    !s->cancelled) {
				cqw_cancel(loop, &s->rop);
				s->cancelled = 1;
			}
			busy += s->sends + s->rop_busy;
		}
		if (busy == 0) {
			break;
		}
		n = cqw_reap(loop, done, 64, 5000);
		if (n <= 0) {
			group_fail(g, "ops left at shutdown: %s",
				   n < 0 ? cqw_err_name(n) : "timeout");
			break;
		}
		for (i = 0; i < (size_t)n; i++) {
			if (done[i]->kind == CQW_OP_SEND) {
				((struct sop *)done[i])->s->sends--;
				free(done[i]->buf);
				free(done[i]);
			} else {
				((struct slot *)done[i]->user_data)->rop_busy =
				    0;
			}
		}
	}
	group_shutdown(g);
out_free:
	cqw_loop_free(loop);
	for (i = 0; i < g->nslots; i++) {
		free(g->slots[i]->rbuf);
		g->slots[i]->rbuf = NULL;
	}
}

/* --- the synchronous group --- */

static void
sync_fill(struct slot *s)
{
	struct cqw_msg msgs[BATCH_MAX];
	size_t i, n, want;
	int die = 0, r;

	want = soak_rnd(&s->g->rng) % 3 == 0
		   ? soak_rnd_range(&s->g->rng, 2, BATCH_MAX)
		   : 1;
	for (n = 0; n < want && !die && may_send(s); n++) {
		die = next_is_die(s);
		msgs[n].buf = make_msg(s, &msgs[n].len, die);
		if (msgs[n].buf == NULL) {
			break;
		}
	}
	if (n == 0) {
		return;
	}
	if (n == 1) {
		r = cqw_send_bytes(s->tx, msgs[0].buf, msgs[0].len);
	} else {
		r = cqw_send_batch(s->tx, msgs, n);
	}
	for (i = 0; i < n; i++) {
		free(msgs[i].buf);
	}
	after_send(s, die);
	if (r < 0) {
		slot_error(s, "send", r);
		end_code_count(s->g->st.send_ends, r);
		s->state = ST_DYING;
	}
}

struct sync_bufs {
	struct cqw_msg msgs[BATCH_MAX];
	uint8_t *small[BATCH_MAX];
	uint8_t *big;
};

/* One receive call on s, by a randomly chosen API; < 0 on error. */
static int
sync_recv_one(struct slot *s, struct sync_bufs *b)
{
	size_t i, needed, off;
	int64_t r;
	void *p;
	int k;

	switch (soak_rnd(&s->g->rng) % 3) {
	case 0:
		for (i = 0; i < BATCH_MAX; i++) {
			b->msgs[i].buf = b->small[i];
			b->msgs[i].cap = SMALL_CAP;
		}
		k = cqw_recv_batch(s->rx, b->msgs, BATCH_MAX,
				   soak_opt.sync_batch_timeout);
		if (k == CQW_ETOOSHORT) {
			r = cqw_recv_bytes_into(s->rx, b->big, MAX_MSG, 0,
						NULL);
			if (r >= 0) {
				check_msg(s, b->big, (size_t)r);
			}
			return r < 0 ? (int)r : 1;
		}
		for (i = 0; k > 0 && i < (size_t)k; i++) {
			check_msg(s, b->msgs[i].buf, b->msgs[i].len);
		}
		return k;
	case 1:
		r = cqw_recv_bytes(s->rx, &p, CQW_NONE);
		if (r >= 0) {
			check_msg(s, p, (size_t)r);
			cqw_free(p);
		}
		return r < 0 ? (int)r : 1;
	default:
		off = soak_rnd(&s->g->rng) % 16;
		r = cqw_recv_bytes_into(s->rx, b->small[0], SMALL_CAP, off,
					&needed);
		if (r == CQW_ETOOSHORT) {
			if (needed > MAX_MSG) {
				return CQW_EMSGSIZE;
			}
			off = 0;
			r = cqw_recv_bytes_into(s->rx, b->big, MAX_MSG, 0,
						NULL);
			if (r >= 0) {
				check_msg(s, b->big, (size_t)r);
			}
		} else if (r >= 0) {
			check_msg(s, b->small[0] + off, (size_t)r);
		}
		return r < 0 ? (int)r : 1;
	}
}

static void
sync_group(struct group *g)
{
	struct cqw_wait_item *items;
	struct sync_bufs b;
	size_t i, ni;
	int n, r, rounds;

	memset(&b, 0, sizeof(b));
	items = calloc(g->nslots, sizeof(*items));
	b.big = malloc(MAX_MSG);
	for (i = 0; i < BATCH_MAX; i++) {
		b.small[i] = malloc(SMALL_CAP);
		if (b.small[i] == NULL) {
			goto out_free;
		}
	}
	if (items == NULL || b.big == NULL) {
		goto out_free;
	}
	for (i = 0; i < g->nslots; i++) {
		if (slot_start(g->slots[i]) < 0) {
			group_fail(g, "start conn %zu", i);
			goto out_free;
		}
	}
	for (;;) {
		if (idle_point(g, group_quiet(g))) {
			break;
		}
		ni = 0;
		for (i = 0; i < g->nslots; i++) {
			struct slot *s = g->slots[i];

			if (s->state == ST_DYING && s->rx_err) {
				if (slot_finish(s) < 0) {
					goto out_shutdown;
				}
			}
			sync_fill(s);
			items[ni].conn = s->rx;
			items[ni].fd = -1;
			items[ni].ready = 0;
			ni++;
		}
		n = cqw_wait(items, ni, 100);
		if (n < 0) {
			group_fail(g, "cqw_wait: %s", cqw_err_name(n));
			goto out_shutdown;
		}
		for (i = 0; n > 0 && i < ni; i++) {
			struct slot *s = g->slots[i];

			if (!items[i].ready) {
				continue;
			}
			/* A few receives while data is there. */
			for (rounds = 0; rounds < 8; rounds++) {
				r = sync_recv_one(s, &b);
				if (r < 0) {
					slot_error(s, "receive", r);
					end_code_count(g->st.ends, r);
					s->rx_err = 1;
					break;
				}
				if (cqw_poll(s->rx, 0) <= 0) {
					break;
				}
			}
		}
	}
out_shutdown:
	if (atomic_load(&g->failed)) {
		for (i = 0; i < g->nslots; i++) {
			kill(g->slots[i]->pid, SIGKILL);
		}
	}
	group_shutdown(g);
out_free:
	for (i = 0; i < BATCH_MAX; i++) {
		free(b.small[i]);
	}
	free(b.big);
	free(items);
}

void *
soak_group_main(void *arg)
{
	struct group *g = arg;

	if (g->kind == G_LOOP) {
		loop_group(g);
	} else {
		sync_group(g);
	}
	atomic_store(&g->paused, 1);
	return NULL;
}
