/*
 * Fuzz the channel's receive path through the public API, over a real
 * socket pair or a real pipe. Byte 0 configures the run, the rest is
 * written raw to the peer end, which is then closed; the receiving end
 * reads until an error.
 *
 *   bit 0     CQW_EXCLUSIVE (read-ahead) instead of frame-exact
 *   bit 1     a pipe (Pipe(duplex=False)) instead of a socket pair
 *   bits 2-3  cqw_recv_bytes / cqw_recv_bytes_into / cqw_recv_batch /
 *             a mix of the three, chosen call by call
 *   bits 4-5  the size class: maxlength, buffer capacities
 *   bits 6-7  recv_bytes_into's offset, recv_batch's count and timeout
 *
 * In the mix, bits 4-7 mean instead:
 *   bit 4     some calls are receive ops on a loop (cqw_submit/cqw_reap,
 *             up to four queued at once), the sync calls' equal
 *   bit 5     that loop is io_uring (else poll)
 *   bit 6     every call is a loop op
 *   bit 7     the peer stays open until the stream runs out of whole
 *             frames: there a batch with timeout 0 must time out (0)
 *             having consumed nothing of the partial frame; then the peer
 *             closes and reading goes on
 *
 * The input is also parsed by a reference decoder written from WIRE.md
 * §2 (not from channel.c), and every call is checked against it: each
 * message handed up is the next frame's payload, byte for byte; the
 * errors are the documented ones at the right place (CQW_EOF at a frame
 * boundary, CQW_ETRUNC inside a frame, CQW_EMSGSIZE over maxlength and
 * the connection then poisoned, CQW_ETOOSHORT keeping the frame);
 * nothing is written outside the caller's buffer; a frame-exact
 * connection never consumes bytes of a frame it has not started (seen
 * with FIONREAD); and a batch never times out while a whole frame is
 * there (everything was sent before the first call). Leaks are ASan's to
 * see.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "fuzz.h"

#include "cqwire.h"

/* Within any pipe or socket buffer: the writes never block. */
#define MAX_INPUT (32 * 1024)
#define BATCH_MAX 8
#define FILL 0xa5
/* Bytes of FILL looked at each side of a message (and the last byte). */
#define FILL_CHECK 64

/* The reference: the next frame of the stream, as WIRE.md §2 reads it. */
enum ref_kind {
	REF_END = 1,   /* clean end: at a frame boundary */
	REF_TRUNC_HDR, /* the stream ends inside a header */
	REF_TRUNC_PAY, /* the header is whole, the payload is not */
	REF_FRAME,     /* a whole frame */
};

struct ref {
	const uint8_t *p;
	size_t n;
	size_t pos; /* start of the next frame */
};

struct ref_frame {
	enum ref_kind kind;
	size_t hdr_len;
	uint64_t len;
	const uint8_t *payload;
};

static uint64_t
be(const uint8_t *p, size_t n)
{
	uint64_t v = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		v = v << 8 | p[i];
	}
	return v;
}

/*
 * buf[from..to) must still hold FILL: a write there would be inside the
 * allocation, where ASan does not look. The ends of the range suffice
 * (and keep large buffers cheap).
 */
static void
check_fill(const uint8_t *buf, size_t from, size_t to)
{
	size_t i;

	for (i = from; i < to && i < from + FILL_CHECK; i++) {
		FUZZ_CHECK_MSG(buf[i] == FILL, "a write outside the message");
	}
	for (i = to > FILL_CHECK ? to - FILL_CHECK : 0; i < to; i++) {
		FUZZ_CHECK_MSG(i < from || buf[i] == FILL,
			       "a write outside the message");
	}
}

static void
ref_peek(const struct ref *r, struct ref_frame *f)
{
	const uint8_t *p = r->p + r->pos;
	size_t left = r->n - r->pos;
	uint32_t small;

	memset(f, 0, sizeof(*f));
	if (left == 0) {
		f->kind = REF_END;
		return;
	}
	f->kind = REF_TRUNC_HDR;
	f->hdr_len = 4;
	if (left < 4) {
		return;
	}
	small = (uint32_t)be(p, 4);
	if (small == 0xffffffffu) {
		f->hdr_len = 12;
		if (left < 12) {
			return;
		}
		f->len = be(p + 4, 8);
	} else {
		f->len = small & 0x80000000u ? 0 : small;
	}
	f->payload = p + f->hdr_len;
	f->kind = f->len > left - f->hdr_len ? REF_TRUNC_PAY : REF_FRAME;
}

static void
ref_advance(struct ref *r, const struct ref_frame *f)
{
	FUZZ_CHECK(f->kind == REF_FRAME);
	r->pos += f->hdr_len + (size_t)f->len;
}

/* The run: both ends, the configuration, and where the reference is. */
struct run {
	cqw_conn *c;
	int fd;
	unsigned cfg;
	int exclusive;
	int pipe;
	size_t size; /* maxlength / capacity of this run */
	struct ref ref;
	uint32_t seed;	     /* for the mixed mode */
	cqw_conn *peer;	     /* the writing end while it stays open */
	int missed_deferred; /* a loop op missed a deferred error ("deferred") */
	int done;
};

static const size_t sizes[4] = { 3, 16, 300, 5000 };

/* Bytes of the stream the connection has taken from the kernel. */
static size_t
consumed(const struct run *rn)
{
	int q = -1;

	FUZZ_CHECK(ioctl(rn->fd, FIONREAD, &q) == 0 && q >= 0);
	FUZZ_CHECK((size_t)q <= rn->ref.n);
	return rn->ref.n - (size_t)q;
}

/*
 * Known bugs (tests/fuzz/known/recv) that CQW_FUZZ_ALLOW lets pass, so
 * that a long run looks past them. The words once used, both fixed:
 * - "readahead": a frame-exact batch held the header (or more) of the
 *   frame after those it handed up;
 * - "deferred": an error such a batch deferred (CQW_ETRUNC for that
 *   frame) was not seen by loop receive ops, which reported CQW_EOF.
 */
static int
allowed(const char *word)
{
	const char *s = getenv("CQW_FUZZ_ALLOW");

	return s != NULL && strstr(s, word) != NULL;
}

/*
 * Frame-exact: between calls, the kernel holds everything from the next
 * frame on; only the header of a frame kept by CQW_ETOOSHORT may be gone.
 * Whatever is allowed, nothing past the next frame may ever be read.
 */
static void
check_exact(const struct run *rn, size_t may_extra)
{
	struct ref_frame f;
	size_t got, end;

	if (rn->exclusive) {
		return;
	}
	got = consumed(rn);
	ref_peek(&rn->ref, &f);
	end = rn->ref.pos + f.hdr_len + (size_t)f.len;
	if (f.kind != REF_FRAME) {
		end = rn->ref.n;
	}
	FUZZ_CHECK_MSG(got >= rn->ref.pos && got <= end,
		       "frame-exact read past the next frame");
	FUZZ_CHECK_MSG(got <= rn->ref.pos + may_extra || allowed("readahead"),
		       "frame-exact read into a frame it did not hand up");
}

/* The error a read of the next frame must end in, or 0 for a message. */
static int
ref_error(const struct ref_frame *f)
{
	switch (f->kind) {
	case REF_END:
		return CQW_EOF;
	case REF_TRUNC_HDR:
	case REF_TRUNC_PAY:
		return CQW_ETRUNC;
	case REF_FRAME:
		break;
	}
	return 0;
}

/* After an end: every further read says CQW_EOF again. */
static void
check_end(struct run *rn, int err)
{
	void *buf = NULL;
	int64_t r;

	FUZZ_CHECK(err == CQW_EOF || err == CQW_ETRUNC);
	r = cqw_recv_bytes(rn->c, &buf, CQW_NONE);
	if (r == CQW_ETRUNC && rn->missed_deferred) {
		r = cqw_recv_bytes(rn->c, &buf, CQW_NONE);
	}
	FUZZ_CHECK(r == CQW_EOF);
	rn->done = 1;
}

/* A refused frame: a duplex end stops reading, a pipe's reader closes. */
static void
check_poisoned(struct run *rn)
{
	void *buf = NULL;
	int64_t r = cqw_recv_bytes(rn->c, &buf, CQW_NONE);

	FUZZ_CHECK(r == (rn->pipe ? CQW_ECLOSED : CQW_EWRITEONLY));
	FUZZ_CHECK(cqw_conn_closed(rn->c) == rn->pipe);
	rn->done = 1;
}

static void
step_recv_bytes(struct run *rn, int64_t maxlength)
{
	struct ref_frame f;
	void *buf = NULL;
	int64_t r;
	int want;

	ref_peek(&rn->ref, &f);
	want = ref_error(&f);
	r = cqw_recv_bytes(rn->c, &buf, maxlength);
	if (f.kind != REF_END && f.kind != REF_TRUNC_HDR &&
	    f.len > (uint64_t)maxlength) {
		/* The header is enough to refuse; the payload is not read. */
		FUZZ_CHECK(r == CQW_EMSGSIZE && buf == NULL);
		check_poisoned(rn);
		return;
	}
	if (want < 0) {
		FUZZ_CHECK(r == want && buf == NULL);
		check_end(rn, want);
		return;
	}
	FUZZ_CHECK(r >= 0 && (uint64_t)r == f.len);
	FUZZ_CHECK(buf != NULL && memcmp(buf, f.payload, (size_t)r) == 0);
	cqw_free(buf);
	ref_advance(&rn->ref, &f);
	check_exact(rn, 0);
}

static void settle(struct run *rn);

/* Take a frame that CQW_ETOOSHORT kept, with a buffer that fits it. */
static void
take_kept(struct run *rn, size_t needed)
{
	struct ref_frame f;
	uint8_t *buf;
	int64_t r;

	ref_peek(&rn->ref, &f);
	FUZZ_CHECK(f.kind == REF_FRAME || f.kind == REF_TRUNC_PAY);
	FUZZ_CHECK(needed == f.len);
	check_exact(rn, f.hdr_len);
	settle(rn);
	if (needed > MAX_INPUT) {
		/* A length no input can hold: refuse it by maxlength. */
		step_recv_bytes(rn, MAX_INPUT);
		return;
	}
	buf = malloc(needed > 0 ? needed : 1);
	FUZZ_CHECK(buf != NULL);
	r = cqw_recv_bytes_into(rn->c, buf, needed, 0, NULL);
	if (f.kind == REF_TRUNC_PAY) {
		FUZZ_CHECK(r == CQW_ETRUNC);
		free(buf);
		check_end(rn, (int)r);
		return;
	}
	FUZZ_CHECK(r >= 0 && (uint64_t)r == f.len);
	FUZZ_CHECK(memcmp(buf, f.payload, needed) == 0);
	free(buf);
	ref_advance(&rn->ref, &f);
	check_exact(rn, 0);
}

static void
step_recv_into(struct run *rn, size_t cap, size_t offset)
{
	uint8_t *buf = malloc(cap > 0 ? cap : 1);
	struct ref_frame f;
	size_t needed = 0;
	int64_t r;
	int want;

	FUZZ_CHECK(buf != NULL);
	memset(buf, FILL, cap);
	ref_peek(&rn->ref, &f);
	want = ref_error(&f);
	r = cqw_recv_bytes_into(rn->c, buf, cap, offset, &needed);
	if (f.kind != REF_END && f.kind != REF_TRUNC_HDR &&
	    f.len > cap - offset) {
		FUZZ_CHECK(r == CQW_ETOOSHORT);
		check_fill(buf, 0, cap);
		free(buf);
		take_kept(rn, needed);
		return;
	}
	if (want < 0) {
		FUZZ_CHECK(r == want);
		free(buf);
		check_end(rn, want);
		return;
	}
	FUZZ_CHECK(r >= 0 && (uint64_t)r == f.len);
	FUZZ_CHECK(memcmp(buf + offset, f.payload, (size_t)r) == 0);
	check_fill(buf, 0, offset);
	check_fill(buf, offset + (size_t)r, cap);
	free(buf);
	ref_advance(&rn->ref, &f);
	check_exact(rn, 0);
}

static void
step_recv_batch(struct run *rn, size_t n, const size_t *caps, int timeout_ms)
{
	struct cqw_msg msgs[BATCH_MAX];
	uint8_t *bufs[BATCH_MAX];
	struct ref_frame f;
	size_t i;
	int r, want;

	for (i = 0; i < n; i++) {
		bufs[i] = malloc(caps[i] > 0 ? caps[i] : 1);
		FUZZ_CHECK(bufs[i] != NULL);
		memset(bufs[i], FILL, caps[i]);
		msgs[i].buf = bufs[i];
		msgs[i].cap = caps[i];
		msgs[i].len = (size_t)-1;
	}
	ref_peek(&rn->ref, &f);
	want = ref_error(&f);
	r = cqw_recv_batch(rn->c, msgs, n, timeout_ms);
	if (f.kind != REF_END && f.kind != REF_TRUNC_HDR && f.len > caps[0]) {
		/* The first does not fit: it is kept, its size reported. */
		FUZZ_CHECK(r == CQW_ETOOSHORT);
		check_fill(bufs[0], 0, caps[0]);
		take_kept(rn, msgs[0].len);
		goto out_free;
	}
	if (want < 0) {
		FUZZ_CHECK(r == want);
		check_end(rn, want);
		goto out_free;
	}
	/* Everything was sent before the call: no timeout, no zero. */
	FUZZ_CHECK(r > 0 && (size_t)r <= n);
	for (i = 0; i < (size_t)r; i++) {
		ref_peek(&rn->ref, &f);
		FUZZ_CHECK(f.kind == REF_FRAME);
		FUZZ_CHECK(msgs[i].len == f.len && f.len <= caps[i]);
		FUZZ_CHECK(memcmp(bufs[i], f.payload, msgs[i].len) == 0);
		check_fill(bufs[i], msgs[i].len, caps[i]);
		ref_advance(&rn->ref, &f);
	}
	for (; i < n; i++) {
		check_fill(bufs[i], 0, caps[i]);
	}
	check_exact(rn, 0);
out_free:
	for (i = 0; i < n; i++) {
		free(bufs[i]);
	}
}

/* One loop per backend for the whole process: rings are costly to make. */
static cqw_loop *
get_loop(int uring)
{
	static cqw_loop *loops[2];
	struct cqw_loop_opts o = { uring ? CQW_BACKEND_URING : CQW_BACKEND_POLL,
				   0 };

	if (loops[uring] == NULL && cqw_loop_new(&loops[uring], &o) < 0) {
		/* No io_uring here (seccomp, old kernel): use poll. */
		FUZZ_CHECK(uring);
		loops[uring] = NULL;
		return get_loop(0);
	}
	return loops[uring];
}

/*
 * n receive ops queued at once, each of capacity cap: they complete as n
 * receives in a row would, a message that does not fit an op getting
 * CQW_ETOOSHORT and staying for the next.
 */
static void
step_loop(struct run *rn, size_t n, size_t cap, int uring)
{
	cqw_loop *loop = get_loop(uring);
	struct cqw_op ops[4], *done[4];
	uint8_t *bufs[4];
	struct ref_frame f;
	size_t i, got = 0, kept = 0;
	int r, ended = 0;

	for (i = 0; i < n; i++) {
		bufs[i] = malloc(cap > 0 ? cap : 1);
		FUZZ_CHECK(bufs[i] != NULL);
		memset(bufs[i], FILL, cap);
		memset(&ops[i], 0, sizeof(ops[i]));
		ops[i].kind = CQW_OP_RECV;
		ops[i].conn = rn->c;
		ops[i].buf = bufs[i];
		ops[i].len = cap;
		ops[i].user_data = &ops[i];
		FUZZ_CHECK(cqw_submit(loop, &ops[i]) == 0);
	}
	while (got < n) {
		r = cqw_reap(loop, done, 4, 5000);
		FUZZ_CHECK_MSG(r > 0, "a receive op never completed");
		for (i = 0; i < (size_t)r; i++) {
			FUZZ_CHECK(done[i]->user_data == done[i]);
		}
		got += (size_t)r;
	}
	for (i = 0; i < n; i++) {
		int64_t res = ops[i].result;

		ref_peek(&rn->ref, &f);
		if (ended) {
			FUZZ_CHECK(res == CQW_EOF);
			continue;
		}
		if ((f.kind == REF_FRAME || f.kind == REF_TRUNC_PAY) &&
		    f.len > cap) {
			FUZZ_CHECK(res == CQW_ETOOSHORT &&
				   ops[i].needed == f.len);
			check_fill(bufs[i], 0, cap);
			kept = f.hdr_len;
			continue;
		}
		kept = 0;
		if (ref_error(&f) < 0) {
			if (res != ref_error(&f)) {
				FUZZ_CHECK_MSG(allowed("deferred") &&
						   res == CQW_EOF &&
						   ref_error(&f) == CQW_ETRUNC,
					       "a loop receive ended with the "
					       "wrong error");
				rn->missed_deferred = 1;
			}
			ended = 1;
			continue;
		}
		FUZZ_CHECK(res >= 0 && (uint64_t)res == f.len);
		FUZZ_CHECK(memcmp(bufs[i], f.payload, (size_t)res) == 0);
		check_fill(bufs[i], (size_t)res, cap);
		ref_advance(&rn->ref, &f);
	}
	for (i = 0; i < n; i++) {
		free(bufs[i]);
	}
	if (ended) {
		check_end(rn, CQW_EOF);
		return;
	}
	check_exact(rn, kept);
	if (kept > 0) {
		/* The kept frame: taken as the sync calls take it. */
		take_kept(rn, ops[n - 1].needed);
	}
}

/*
 * With the peer still open and no whole frame left, a batch must time
 * out without taking any of what is there (or, for a header that is in
 * and too big, say CQW_ETOOSHORT keeping it); then the peer closes.
 */
static void
settle(struct run *rn)
{
	struct cqw_msg m;
	struct ref_frame f;
	uint8_t *buf;
	int r, want;

	if (rn->peer == NULL) {
		return;
	}
	ref_peek(&rn->ref, &f);
	if (f.kind == REF_FRAME) {
		return;
	}
	buf = malloc(rn->size);
	FUZZ_CHECK(buf != NULL);
	m.buf = buf;
	m.cap = rn->size;
	m.len = (size_t)-1;
	r = cqw_recv_batch(rn->c, &m, 1, 0);
	want = f.kind == REF_TRUNC_PAY && f.len > rn->size ? CQW_ETOOSHORT : 0;
	FUZZ_CHECK(r == want);
	check_exact(rn, want == CQW_ETOOSHORT ? f.hdr_len : 0);
	free(buf);
	cqw_conn_free(rn->peer);
	rn->peer = NULL;
}

/* One call of the configured kind (or, mixed, of a random kind). */
static void
step(struct run *rn)
{
	unsigned api = (rn->cfg >> 2) & 3, extra = rn->cfg >> 6;
	size_t size = rn->size, caps[BATCH_MAX], n, i;

	settle(rn);
	if (api == 3) {
		uint32_t x = fuzz_rand(&rn->seed);

		api = x % ((rn->cfg & 0x10) ? 4 : 3);
		if (rn->cfg & 0x40) {
			api = 3;
		}
		size = sizes[(x >> 2) & 3];
		extra = (x >> 4) & 3;
	}
	switch (api) {
	case 3:
		/* Several ops only while the peer is closed: none may wait. */
		n = rn->peer != NULL ? 1 : 1 + extra;
		step_loop(rn, n, size, (rn->cfg & 0x20) != 0);
		break;
	case 0:
		step_recv_bytes(rn, (int64_t)size);
		break;
	case 1:
		step_recv_into(rn, size, extra & 1 ? size / 2 : 0);
		break;
	default:
		/* Batches of 1, 2 or 8; capacities around the size. */
		n = extra == 0 ? 1 : extra == 1 ? 2 : BATCH_MAX;
		for (i = 0; i < n; i++) {
			caps[i] = i % 3 == 2 ? size / 2 : size;
		}
		step_recv_batch(rn, n, caps, extra == 3 ? -1 : 0);
		break;
	}
}

/* Write all of p to fd, then close it. */
static void
write_all(int fd, const uint8_t *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(fd, p, n);
		if (w < 0 && errno == EINTR) {
			continue;
		}
		FUZZ_CHECK(w > 0);
		p += w;
		n -= (size_t)w;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run rn;
	cqw_conn *peer = NULL;
	unsigned flags;
	size_t steps = 0;

	if (size == 0) {
		return 0;
	}
	memset(&rn, 0, sizeof(rn));
	rn.cfg = data[0];
	rn.exclusive = rn.cfg & 1;
	rn.pipe = (rn.cfg >> 1) & 1;
	rn.size = sizes[(rn.cfg >> 4) & 3];
	rn.seed = rn.cfg * 0x01010101u;
	rn.ref.p = data + 1;
	rn.ref.n = size - 1 < MAX_INPUT ? size - 1 : MAX_INPUT;

	flags = (rn.pipe ? 0 : CQW_DUPLEX) | (rn.exclusive ? CQW_EXCLUSIVE : 0);
	FUZZ_CHECK(cqw_pipe(&rn.c, &peer, flags) == 0);
	rn.fd = cqw_conn_fileno(rn.c);
	write_all(cqw_conn_fileno(peer), rn.ref.p, rn.ref.n);
	if ((rn.cfg & 0x8c) == 0x8c) {
		rn.peer = peer; /* closed by settle() */
	} else {
		cqw_conn_free(peer);
	}

	/* Each call takes a frame or ends the run: bound the calls. */
	while (!rn.done) {
		FUZZ_CHECK(steps++ <= rn.ref.n + 2);
		step(&rn);
	}
	/* A refused frame ends the run with the peer maybe still open. */
	cqw_conn_free(rn.peer);
	cqw_conn_free(rn.c);
	return 0;
}
