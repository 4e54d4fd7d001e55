/*
 * What cqwire-perf prints: the table, the DESIGN §6 targets and issue 11's
 * with their verdicts, and the JSON document (one object: machine,
 * results, and the same targets; figures that were not measured are left
 * out).
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cqwire.h>

#include "perf.h"

static int
same(const char *a, const char *b)
{
	if (a == NULL || b == NULL) {
		return a == b;
	}
	return strcmp(a, b) == 0;
}

static const struct perf_case *
find_ch(const struct perf_run *run, enum cqwb_scn scn, size_t size, int workers,
	int inflight, const char *name, const char *api, const char *mode,
	const char *wait, const char *channel)
{
	int g, k;

	for (g = 0; g < run->ngroups; g++) {
		const struct perf_group *gr = &run->groups[g];

		if (gr->p.scn != scn || gr->p.size != size ||
		    (scn == CQWB_FANOUT && (gr->p.workers != workers ||
					    gr->p.inflight != inflight)) ||
		    (scn == CQWB_ECHO_CLIENTS && gr->p.workers != workers) ||
		    (scn == CQWB_ACCEPT && gr->p.inflight != inflight)) {
			continue;
		}
		for (k = 0; k < gr->ncases; k++) {
			const struct perf_case *c = &gr->cases[k];

			/* Pipe rows only when asked for (find_pipe()). */
			if (c->done && same(c->t->name, name) &&
			    same(c->t->api, api) && same(c->t->mode, mode) &&
			    same(c->t->wait, wait) &&
			    same(cqwb_channel(c->t), channel) &&
			    cqwb_worker(c->t) == NULL) {
				return c;
			}
		}
	}
	return NULL;
}

const struct perf_case *
perf_find(const struct perf_run *run, enum cqwb_scn scn, size_t size,
	  int workers, int inflight, const char *name, const char *api,
	  const char *mode, const char *wait)
{
	return find_ch(run, scn, size, workers, inflight, name, api, mode, wait,
		       NULL);
}

/* The same over pipes (rtt and stream). */
static const struct perf_case *
find_pipe(const struct perf_run *run, enum cqwb_scn scn, size_t size,
	  const char *name, const char *api, const char *mode)
{
	return find_ch(run, scn, size, 0, 0, name, api, mode, NULL, "pipe");
}

/* ------------------------------------------------------------------
 * The table
 */

static const char *
num(double v, char *buf, size_t len)
{
	if (isnan(v)) {
		snprintf(buf, len, "-");
	} else if (v < 10) {
		snprintf(buf, len, "%.2f", v);
	} else if (v < 100) {
		snprintf(buf, len, "%.1f", v);
	} else {
		snprintf(buf, len, "%.0f", v);
	}
	return buf;
}

static const char *
rate(double v, char *buf, size_t len)
{
	if (isnan(v)) {
		snprintf(buf, len, "-");
	} else if (v >= 1e6) {
		snprintf(buf, len, "%.2f M", v / 1e6);
	} else if (v >= 1e3) {
		snprintf(buf, len, "%.1f k", v / 1e3);
	} else {
		snprintf(buf, len, "%.0f", v);
	}
	return buf;
}

static const char *const scn_title[CQWB_NSCN] = {
	"round trip: the parent sends, a forked peer echoes; latency per "
	"round trip",
	"one-way stream: the parent sends, a forked peer receives; until "
	"the last is acknowledged",
	"fan-out: one parent, N forked workers x K requests in flight each; "
	"latency per request",
	"connections per second to a server process: N client processes x K "
	"connections\n  in flight each connect, run the handshake (hmac), "
	"one round trip, close; latency per connection",
	"N concurrent clients of one echo server process, one round trip in "
	"flight each;\n  latency per round trip",
};

/* The scenarios whose parent role is a server (CQWB_ACCEPT and after). */
static int
server_scn(enum cqwb_scn scn)
{
	return scn == CQWB_ACCEPT || scn == CQWB_ECHO_CLIENTS;
}

/* What the raw stream rows are (bench/README.md has the whole list). */
static void
stream_note(FILE *f)
{
	fprintf(f, "raw: Python's framing, two reads per message at the "
		   "receiver (header, then payload);\n"
		   "raw-writev512, raw-contig: the stream ceilings, one gather "
		   "of 512 frames and 512\n"
		   "frames copied into one buffer per write, received in 1 MiB "
		   "reads;\n"
		   "... pipe: the same transport over pipe()s (rtt: one each "
		   "way) instead of a socket pair\n");
}

void
perf_print_table(FILE *f, const struct perf_run *run)
{
	char a[32], b[32], c1[32], d[32], e[32], g1[32], h[32], sz[32], w[32];
	char sp[32], label[128];
	const char *ring = NULL;
	int g, k, last = -1;

	fprintf(f,
		"cqwire-perf %d.%d.%d: %d CPUs (%s), %s; %s; load %.2f at "
		"start\n",
		CQW_VERSION_MAJOR, CQW_VERSION_MINOR, CQW_VERSION_PATCH,
		run->cpus, run->cpu_model, run->kernel, run->placement,
		run->load1);
	fprintf(f,
		"%s suite, medians of %d interleaved rounds (tails: all "
		"rounds pooled), %.0f s; default loop backend here: %s\n",
		run->quick ? "quick" : "default", run->rounds, run->seconds,
		run->backend);
	if (strcmp(run->uring, "available") != 0) {
		fprintf(f, "io_uring: %s\n", run->uring);
	}
	for (g = 0; g < run->ngroups; g++) {
		const struct perf_group *gr = &run->groups[g];

		if ((int)gr->p.scn != last) {
			last = (int)gr->p.scn;
			fprintf(f, "\n%s: %s\n", cqwb_scn_name(gr->p.scn),
				scn_title[gr->p.scn]);
			fprintf(f,
				"%-38s %7s %7s %8s %8s %8s %10s %9s %8s "
				"%8s %7s%s\n",
				"transport", "size", "workers", "p50 us",
				"p99 us", "p99.9 us", "msgs/s", "MB/s",
				"CPU us", "sys/msg", "spread",
				gr->p.scn == CQWB_FANOUT ? " parent CPU us"
				: server_scn(gr->p.scn)
				    ? " server CPU us  RSS KiB"
				    : "");
		} else {
			fprintf(f, "\n");
		}
		for (k = 0; k < gr->ncases; k++) {
			const struct perf_case *c = &gr->cases[k];

			perf_size_str(gr->p.size, sz, sizeof(sz));
			if (gr->p.scn == CQWB_FANOUT ||
			    gr->p.scn == CQWB_ACCEPT) {
				snprintf(w, sizeof(w), "%dx%d", gr->p.workers,
					 gr->p.inflight);
			} else if (server_scn(gr->p.scn)) {
				snprintf(w, sizeof(w), "%d", gr->p.workers);
			} else {
				snprintf(w, sizeof(w), "1");
			}
			if (!c->done) {
				fprintf(f, "%-38s %7s %7s failed: %s\n",
					c->label, sz, w, c->why);
				continue;
			}
			if (isnan(c->r_sys)) {
				snprintf(h, sizeof(h), "-");
			} else {
				snprintf(h, sizeof(h), "%.3f", c->r_sys);
			}
			if (isnan(c->r_spread)) {
				snprintf(sp, sizeof(sp), "-");
			} else {
				snprintf(sp, sizeof(sp), "%.1f%%",
					 100 * c->r_spread);
			}
			/* A ring that fell back says so on its row. */
			snprintf(label, sizeof(label), "%s%s", c->label,
				 strstr(c->note, "fallback") != NULL
				     ? " (no DEFER_TASKRUN)"
				     : "");
			if (c->note[0] != '\0' && ring == NULL) {
				ring = c->note;
			}
			fprintf(f,
				"%-38s %7s %7s %8s %8s %8s %10s %9s %8s "
				"%8s %7s",
				label, sz, w, num(c->r_p50, a, sizeof(a)),
				num(c->r_p99, b, sizeof(b)),
				num(c->r_p999, c1, sizeof(c1)),
				rate(c->r_mps, d, sizeof(d)),
				num(c->r_bps / 1e6, e, sizeof(e)),
				num(c->r_cpu, g1, sizeof(g1)), h, sp);
			if (gr->p.scn == CQWB_FANOUT || server_scn(gr->p.scn)) {
				fprintf(f, " %14s",
					num(c->r_pcpu, g1, sizeof(g1)));
			}
			if (server_scn(gr->p.scn)) {
				fprintf(f, " %8.0f", c->r_rss);
			}
			fprintf(f, "\n");
		}
	}
	fprintf(f, "\nmsgs/s: round trips, messages or responses per second; "
		   "MB/s: their payload (10^6 bytes)\n"
		   "CPU us: CPU time of every process involved per message "
		   "(parent CPU us: the parent's alone)\n"
		   "sys/msg: the parent's system calls per message, counted "
		   "in an untimed step\n"
		   "spread: (max - min) / median of the rounds' msgs/s "
		   "(each round a fresh session)\n"
		   "accept, echo-clients: msgs/s are connections or round "
		   "trips per second; workers: client\n"
		   "processes x connections in flight each (accept) or "
		   "connections (echo-clients);\n"
		   "server CPU us: the server process's CPU time per "
		   "connection or round trip;\n"
		   "RSS KiB: its resident memory after the step\n");
	if (ring != NULL) {
		fprintf(f,
			"io_uring: the hand-written liburing fan-out parent; "
			"its ring: %s\n",
			ring);
	}
	for (k = 0; k < run->nskips; k++) {
		fprintf(f, "skipped %s: %s\n", run->skips[k].label,
			run->skips[k].why);
	}
	if (run->syscalls_why != NULL) {
		fprintf(f, "system calls not counted: %s\n", run->syscalls_why);
	}
	stream_note(f);
}

/* ------------------------------------------------------------------
 * Targets (DESIGN §6)
 */

struct target {
	char what[200];
	double value;
	double limit;
	int ge;	 /* value >= limit (else <=) */
	int met; /* 1, 0, or -1 when it could not be measured */
	char detail[400];
	char na_why[200]; /* met < 0 although both sides were measured */
	int set;	  /* 0: DESIGN §6, 1: issue 11 */
};

#define MAX_TARGETS 112
static const char *const set_name[] = { "DESIGN §6", "issue 11" };

static void add(struct target *t, int *n, double value, double limit, int ge,
		const char *detail, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static void
add(struct target *t, int *n, double value, double limit, int ge,
    const char *detail, const char *fmt, ...)
{
	struct target *x;
	va_list ap;

	if (*n >= MAX_TARGETS) {
		return;
	}
	x = &t[(*n)++];
	va_start(ap, fmt);
	vsnprintf(x->what, sizeof(x->what), fmt, ap);
	va_end(ap);
	x->value = value;
	x->limit = limit;
	x->ge = ge;
	x->met = isnan(value) ? -1 : ge ? value >= limit : value <= limit;
	snprintf(x->detail, sizeof(x->detail), "%s", detail ? detail : "");
	x->na_why[0] = '\0';
	x->set = 0;
}

static double
p50(const struct perf_case *c)
{
	return c != NULL ? c->r_p50 : NAN;
}

static double
mps(const struct perf_case *c)
{
	return c != NULL ? c->r_mps : NAN;
}

/* The faster of two cases by throughput (either may be NULL). */
static const struct perf_case *
faster(const struct perf_case *a, const struct perf_case *b)
{
	if (a == NULL) {
		return b;
	}
	if (b == NULL) {
		return a;
	}
	return b->r_mps > a->r_mps ? b : a;
}

/*
 * RTT 64 B with spin-then-sleep against the raw spin loop (best: the
 * best raw blocking loop). A spin loop slower than blocking means the
 * spinners did not each have a CPU: nothing to judge.
 */
static void
spin_targets(const struct perf_run *run, const struct perf_case *best,
	     struct target *t, int *n)
{
	static const char *const modes[] = { "frame-exact", "exclusive" };
	const struct perf_case *x, *cq;
	char detail[200];
	double v;
	int i;

	x = perf_find(run, CQWB_RTT, 64, 0, 0, "raw-spin", NULL, NULL, NULL);
	for (i = 0; i < 2; i++) {
		cq = perf_find(run, CQWB_RTT, 64, 0, 0, "cqwire", "sync",
			       modes[i], "spin");
		if (cq == NULL && i == 1) {
			continue; /* the quick suite runs one spinner */
		}
		snprintf(detail, sizeof(detail), "%.2f us vs raw-spin %.2f us",
			 p50(cq), p50(x));
		v = p50(cq) / p50(x);
		if (x != NULL && best != NULL && p50(x) >= p50(best)) {
			v = NAN;
		}
		add(t, n, v, 1.1, 0, detail,
		    "RTT 64 B p50, cqwire sync %s spin / raw spin loop",
		    modes[i]);
		if (isnan(v) && cq != NULL && x != NULL) {
			snprintf(t[*n - 1].na_why, sizeof(t[*n - 1].na_why),
				 "not judged: raw-spin (%.0f us) was slower "
				 "than blocking (%.1f us), the spinners did "
				 "not have a CPU each",
				 p50(x), p50(best));
		}
	}
}

/* The best raw blocking round trip at 64 B (raw or raw-buffered). */
static const struct perf_case *
best_raw_rtt(const struct perf_run *run)
{
	const struct perf_case *raw, *rawb;

	raw = perf_find(run, CQWB_RTT, 64, 0, 0, "raw", NULL, NULL, NULL);
	rawb = perf_find(run, CQWB_RTT, 64, 0, 0, "raw-buffered", NULL, NULL,
			 NULL);
	if (rawb != NULL && (raw == NULL || rawb->r_p50 < raw->r_p50)) {
		return rawb;
	}
	return raw;
}

/* The faster of the modes of one transport and api (rtt: lower p50). */
static const struct perf_case *
best_mode(const struct perf_run *run, enum cqwb_scn scn, size_t size,
	  const char *name, const char *api, int pipe)
{
	static const char *const modes[] = { "frame-exact", "exclusive" };
	const struct perf_case *best = NULL, *c;
	int i;

	for (i = 0; i < 2; i++) {
		c = pipe ? find_pipe(run, scn, size, name, api, modes[i])
			 : perf_find(run, scn, size, 0, 0, name, api, modes[i],
				     NULL);
		if (c == NULL) {
			continue;
		}
		if (best == NULL ||
		    (scn == CQWB_RTT ? c->r_p50 < best->r_p50
				     : c->r_mps > best->r_mps)) {
			best = c;
		}
	}
	return best;
}

/* The better of two cases by the scenario's figure (either may be NULL). */
static const struct perf_case *
better(enum cqwb_scn scn, const struct perf_case *a, const struct perf_case *b)
{
	if (a == NULL || b == NULL) {
		return a != NULL ? a : b;
	}
	if (scn == CQWB_RTT) {
		return b->r_p50 < a->r_p50 ? b : a;
	}
	return b->r_mps > a->r_mps ? b : a;
}

/*
 * The fastest fan-out parent of a transport in a shape, whatever its api
 * and mode (the hand-written io_uring parent may have either or none).
 */
static const struct perf_case *
fastest_parent(const struct perf_run *run, int workers, int inflight,
	       const char *name)
{
	const struct perf_case *best = NULL;
	int g, k;

	for (g = 0; g < run->ngroups; g++) {
		const struct perf_group *gr = &run->groups[g];

		if (gr->p.scn != CQWB_FANOUT || gr->p.size != 64 ||
		    gr->p.workers != workers || gr->p.inflight != inflight) {
			continue;
		}
		for (k = 0; k < gr->ncases; k++) {
			const struct perf_case *c = &gr->cases[k];

			if (c->done && same(c->t->name, name) &&
			    cqwb_channel(c->t) == NULL) {
				best = faster(best, c);
			}
		}
	}
	return best;
}

static double
ratio(double a, double b)
{
	return a / b;
}

static double
pcpu(const struct perf_case *c)
{
	return c != NULL ? c->r_pcpu : NAN;
}

static double
sysc(const struct perf_case *c)
{
	return c != NULL ? c->r_sys : NAN;
}

static const char *
lbl(const struct perf_case *c, const char *dflt)
{
	return c != NULL ? c->label : dflt;
}

/*
 * Issue 11's targets table, every row this suite measures. The
 * hand-written io_uring fan-out parent is the transport "io_uring"; its
 * rows say "not measured" when it is not in the run.
 */
static void
issue11_targets(const struct perf_run *run, struct target *t, int *n)
{
	static const char *const modes[] = { "frame-exact", "exclusive" };
	static const char *const loops[] = { "cqwire-uring", "cqwire-poll" };
	static const size_t large[] = { 1 << 20, 16 << 20 };
	static const int fan_n[] = { 64, 256 };
	const struct perf_case *u, *e, *io, *a, *b, *contig, *zmq, *sync, *lp;
	const struct perf_case *raw;
	char detail[400], sz[32];
	int i, j, k;
	double v;

	/* Fan-out: cqwire-uring against epoll and the io_uring parent. */
	for (i = 0; i < 2; i++) {
		for (k = 1; k <= 16; k += 15) {
			e = perf_find(run, CQWB_FANOUT, 64, fan_n[i], k,
				      "epoll", NULL, NULL, NULL);
			io = fastest_parent(run, fan_n[i], k, "io_uring");
			u = NULL;
			for (j = 0; j < 2; j++) {
				u = faster(u, perf_find(run, CQWB_FANOUT, 64,
							fan_n[i], k,
							"cqwire-uring", "async",
							modes[j], NULL));
			}
			if (u == NULL && e == NULL && io == NULL) {
				continue;
			}
			snprintf(detail, sizeof(detail),
				 "%s %.2f vs epoll %.2f us",
				 lbl(u, "cqwire-uring"), pcpu(u), pcpu(e));
			add(t, n, ratio(pcpu(u), pcpu(e)), 0.8, 0, detail,
			    "fan-out %dx%d parent CPU per message, "
			    "cqwire-uring / epoll",
			    fan_n[i], k);
			snprintf(detail, sizeof(detail),
				 "%s %.2f vs %s %.2f us",
				 lbl(u, "cqwire-uring"), pcpu(u),
				 lbl(io, "io_uring"), pcpu(io));
			add(t, n, ratio(pcpu(u), pcpu(io)), 1.0, 0, detail,
			    "fan-out %dx%d parent CPU per message, "
			    "cqwire-uring / io_uring parent",
			    fan_n[i], k);
			snprintf(detail, sizeof(detail), "%s %.3f vs %s %.3f",
				 lbl(u, "cqwire-uring"), sysc(u),
				 lbl(io, "io_uring"), sysc(io));
			add(t, n, ratio(sysc(u), sysc(io)), 1.0, 0, detail,
			    "fan-out %dx%d parent system calls per message, "
			    "cqwire-uring / io_uring parent",
			    fan_n[i], k);
			if (run->syscalls_why != NULL) {
				snprintf(t[*n - 1].na_why,
					 sizeof(t[*n - 1].na_why),
					 "system calls not counted: %s",
					 run->syscalls_why);
			}
			snprintf(detail, sizeof(detail),
				 "%s %.0f k/s vs epoll %.0f k/s",
				 lbl(u, "cqwire-uring"), mps(u) / 1e3,
				 mps(e) / 1e3);
			add(t, n, ratio(mps(u), mps(e)), 1.2, 1, detail,
			    "fan-out %dx%d responses/s, cqwire-uring / epoll",
			    fan_n[i], k);
			snprintf(detail, sizeof(detail),
				 "%s %.0f k/s vs %s %.0f k/s",
				 lbl(u, "cqwire-uring"), mps(u) / 1e3,
				 lbl(io, "io_uring"), mps(io) / 1e3);
			add(t, n, ratio(mps(u), mps(io)), 1.0, 1, detail,
			    "fan-out %dx%d responses/s, cqwire-uring / "
			    "io_uring parent",
			    fan_n[i], k);
		}
	}
	/* RTT 64 B: the async API on each loop against the sync API. */
	for (i = 0; i < 2; i++) {
		for (j = 0; j < 2; j++) {
			a = perf_find(run, CQWB_RTT, 64, 0, 0, loops[i],
				      "async", modes[j], NULL);
			b = perf_find(run, CQWB_RTT, 64, 0, 0, "cqwire", "sync",
				      modes[j], NULL);
			if (a == NULL && b == NULL) {
				continue;
			}
			snprintf(detail, sizeof(detail),
				 "%.2f us vs sync %.2f us", p50(a), p50(b));
			add(t, n, ratio(p50(a), p50(b)), 1.1, 0, detail,
			    "RTT 64 B p50, %s async %s / cqwire sync", loops[i],
			    modes[j]);
		}
	}
	/* RTT 64 B, opt-in spin: as DESIGN §6's. */
	spin_targets(run, best_raw_rtt(run), t, n);
	/*
	 * 64 B stream, batch API: the best sync and the best loop variant,
	 * each against 50 M/s, the contiguous-buffer ceiling and ZeroMQ.
	 */
	contig = perf_find(run, CQWB_STREAM, 64, 0, 0, "raw-contig", NULL, NULL,
			   NULL);
	zmq = perf_find(run, CQWB_STREAM, 64, 0, 0, "zeromq", NULL, NULL, NULL);
	sync = best_mode(run, CQWB_STREAM, 64, "cqwire", "batch", 0);
	lp = better(CQWB_STREAM,
		    best_mode(run, CQWB_STREAM, 64, loops[0], "batch", 0),
		    best_mode(run, CQWB_STREAM, 64, loops[1], "batch", 0));
	for (i = 0; i < 2; i++) {
		const struct perf_case *c = i == 0 ? sync : lp;
		const char *api = i == 0 ? "sync" : "loop";

		snprintf(detail, sizeof(detail), "best: %s",
			 lbl(c, "not measured"));
		add(t, n, mps(c) / 1e6, 50, 1, detail,
		    "64 B stream, batch API (%s): M msgs/s", api);
		snprintf(detail, sizeof(detail),
			 "%s %.2f M/s vs raw-contig %.2f M/s", lbl(c, "cqwire"),
			 mps(c) / 1e6, mps(contig) / 1e6);
		add(t, n, ratio(mps(c), mps(contig)), 0.67, 1, detail,
		    "64 B stream, batch API (%s) / contiguous-buffer ceiling",
		    api);
		snprintf(detail, sizeof(detail),
			 "%s %.2f M/s vs zeromq %.2f M/s", lbl(c, "cqwire"),
			 mps(c) / 1e6, mps(zmq) / 1e6);
		add(t, n, ratio(mps(c), mps(zmq)), 10, 1, detail,
		    "64 B stream, batch API (%s) / zeromq", api);
	}
	snprintf(detail, sizeof(detail), "%s %.2f M/s vs %s %.2f M/s",
		 lbl(lp, "loop"), mps(lp) / 1e6, lbl(sync, "sync"),
		 mps(sync) / 1e6);
	add(t, n, ratio(mps(lp), mps(sync)), 0.95, 1, detail,
	    "64 B stream, batch API: best loop / best sync");
	/*
	 * Pipes at 64 B: cqwire against raw write()/read() on the same
	 * kind of pipe (rtt: p50 at most 5% above; stream: per message, at
	 * most 5% below; batch calls are no raw equivalent).
	 */
	raw = find_pipe(run, CQWB_RTT, 64, "raw", NULL, NULL);
	a = best_mode(run, CQWB_RTT, 64, "cqwire", "sync", 1);
	b = better(CQWB_RTT, best_mode(run, CQWB_RTT, 64, loops[0], "async", 1),
		   best_mode(run, CQWB_RTT, 64, loops[1], "async", 1));
	for (i = 0; i < 2; i++) {
		const struct perf_case *c = i == 0 ? a : b;

		snprintf(detail, sizeof(detail),
			 "%s %.2f us vs raw pipe %.2f us", lbl(c, "cqwire"),
			 p50(c), p50(raw));
		add(t, n, ratio(p50(c), p50(raw)), 1.05, 0, detail,
		    "RTT 64 B over pipes p50, cqwire %s / raw",
		    i == 0 ? "sync" : "async (best loop)");
	}
	raw = find_pipe(run, CQWB_STREAM, 64, "raw", NULL, NULL);
	a = best_mode(run, CQWB_STREAM, 64, "cqwire", "per-message", 1);
	snprintf(detail, sizeof(detail), "%s %.2f M/s vs raw pipe %.2f M/s",
		 lbl(a, "cqwire"), mps(a) / 1e6, mps(raw) / 1e6);
	add(t, n, ratio(mps(a), mps(raw)), 0.95, 1, detail,
	    "64 B stream over pipes, cqwire per-message / raw");
	/* Large messages: at least raw's rate. */
	for (i = 0; i < 2; i++) {
		perf_size_str(large[i], sz, sizeof(sz));
		raw = faster(perf_find(run, CQWB_STREAM, large[i], 0, 0, "raw",
				       NULL, NULL, NULL),
			     perf_find(run, CQWB_STREAM, large[i], 0, 0,
				       "raw-writev", NULL, NULL, NULL));
		a = perf_find(run, CQWB_STREAM, large[i], 0, 0, "cqwire",
			      "per-message", "frame-exact", NULL);
		if (a == NULL && raw == NULL) {
			continue;
		}
		v = ratio(mps(a), mps(raw));
		snprintf(detail, sizeof(detail), "%.2f vs %s %.2f GB/s",
			 mps(a) * (double)large[i] / 1e9, lbl(raw, "raw"),
			 mps(raw) * (double)large[i] / 1e9);
		add(t, n, v, 1.0, 1, detail,
		    "%s stream, cqwire per-message frame-exact / raw", sz);
	}
}

static int
compute_targets(const struct perf_run *run, struct target *t)
{
	static const char *const modes[] = { "frame-exact", "exclusive" };
	static const char *const peers[] = { "zeromq", "nng", "python",
					     "billiard" };
	static const double peer_x[] = { 4, 4, 1.8, 1.8 };
	static const size_t large[] = { 1 << 20, 16 << 20 };
	static const int fan_n[] = { 64, 256 };
	const struct perf_case *raw, *rawb, *best, *cq, *x, *u, *e, *py;
	char detail[200], sz[32];
	int n = 0, i, j, k, all_cpu = 1, any = 0;
	double v;

	/* RTT 64 B, synchronous API, blocking. */
	raw = perf_find(run, CQWB_RTT, 64, 0, 0, "raw", NULL, NULL, NULL);
	rawb = perf_find(run, CQWB_RTT, 64, 0, 0, "raw-buffered", NULL, NULL,
			 NULL);
	best = raw;
	if (rawb != NULL && (best == NULL || rawb->r_p50 < best->r_p50)) {
		best = rawb;
	}
	for (i = 0; i < 2; i++) {
		cq = perf_find(run, CQWB_RTT, 64, 0, 0, "cqwire", "sync",
			       modes[i], NULL);
		snprintf(detail, sizeof(detail), "%.2f us vs %s %.2f us",
			 p50(cq), best ? best->label : "raw", p50(best));
		add(t, &n, p50(cq) / p50(best), 1.05, 0, detail,
		    "RTT 64 B p50, cqwire sync %s / best raw blocking loop",
		    modes[i]);
	}
	cq = perf_find(run, CQWB_RTT, 64, 0, 0, "cqwire", "sync", "frame-exact",
		       NULL);
	for (i = 0; i < 4; i++) {
		x = perf_find(run, CQWB_RTT, 64, 0, 0, peers[i], NULL, NULL,
			      NULL);
		snprintf(detail, sizeof(detail), "%s %.2f us vs cqwire %.2f us",
			 peers[i], p50(x), p50(cq));
		add(t, &n, p50(x) / p50(cq), peer_x[i], 1, detail,
		    "RTT 64 B p50, %s / cqwire sync frame-exact (x faster)",
		    peers[i]);
	}
	spin_targets(run, best, t, &n);
	/* 64 B stream, batch API: the best batch variant. */
	best = NULL;
	for (i = 0; i < 2; i++) {
		best =
		    faster(best, perf_find(run, CQWB_STREAM, 64, 0, 0, "cqwire",
					   "batch", modes[i], NULL));
		best = faster(best, perf_find(run, CQWB_STREAM, 64, 0, 0,
					      "cqwire-uring", "batch", modes[i],
					      NULL));
		best = faster(best, perf_find(run, CQWB_STREAM, 64, 0, 0,
					      "cqwire-poll", "batch", modes[i],
					      NULL));
	}
	snprintf(detail, sizeof(detail), "best: %s",
		 best ? best->label : "not measured");
	add(t, &n, mps(best) / 1e6, 10, 1, detail,
	    "64 B stream, batch API: M msgs/s");
	x = perf_find(run, CQWB_STREAM, 64, 0, 0, "zeromq", NULL, NULL, NULL);
	snprintf(detail, sizeof(detail), "%s %.2f M/s vs zeromq %.2f M/s",
		 best ? best->label : "cqwire", mps(best) / 1e6, mps(x) / 1e6);
	add(t, &n, mps(best) / mps(x), 5, 1, detail,
	    "64 B stream, batch API / zeromq");
	/* Large messages: the default receive, per message. */
	for (i = 0; i < 2; i++) {
		perf_size_str(large[i], sz, sizeof(sz));
		raw = faster(perf_find(run, CQWB_STREAM, large[i], 0, 0, "raw",
				       NULL, NULL, NULL),
			     perf_find(run, CQWB_STREAM, large[i], 0, 0,
				       "raw-writev", NULL, NULL, NULL));
		cq = perf_find(run, CQWB_STREAM, large[i], 0, 0, "cqwire",
			       "per-message", "frame-exact", NULL);
		if (cq == NULL && raw == NULL) {
			continue;
		}
		snprintf(detail, sizeof(detail), "%.2f vs %s %.2f GB/s",
			 mps(cq) * (double)large[i] / 1e9,
			 raw ? raw->label : "raw",
			 mps(raw) * (double)large[i] / 1e9);
		add(t, &n, mps(cq) / mps(raw), 0.95, 1, detail,
		    "%s stream, cqwire per-message frame-exact / raw", sz);
		x = perf_find(run, CQWB_STREAM, large[i], 0, 0, "zeromq", NULL,
			      NULL, NULL);
		snprintf(detail, sizeof(detail), "%.2f vs zeromq %.2f GB/s",
			 mps(cq) * (double)large[i] / 1e9,
			 mps(x) * (double)large[i] / 1e9);
		add(t, &n, mps(cq) / mps(x), 2.5, 1, detail,
		    "%s stream, cqwire per-message frame-exact / zeromq", sz);
	}
	/* Fan-out: the io_uring parent against epoll and Python. */
	for (i = 0; i < 2; i++) {
		for (k = 1; k <= 16; k += 15) {
			e = perf_find(run, CQWB_FANOUT, 64, fan_n[i], k,
				      "epoll", NULL, NULL, NULL);
			u = NULL;
			for (j = 0; j < 2; j++) {
				u = faster(u, perf_find(run, CQWB_FANOUT, 64,
							fan_n[i], k,
							"cqwire-uring", "async",
							modes[j], NULL));
			}
			if (u == NULL && e == NULL) {
				continue;
			}
			snprintf(detail, sizeof(detail),
				 "%s %.0f k/s vs epoll %.0f k/s",
				 u ? u->label : "cqwire-uring", mps(u) / 1e3,
				 mps(e) / 1e3);
			add(t, &n, mps(u) / mps(e), 1.2, 1, detail,
			    "fan-out %dx%d responses/s, cqwire-uring / epoll",
			    fan_n[i], k);
			snprintf(detail, sizeof(detail),
				 "%.2f vs epoll %.2f us", u ? u->r_pcpu : NAN,
				 e ? e->r_pcpu : NAN);
			add(t, &n,
			    (u ? u->r_pcpu : NAN) / (e ? e->r_pcpu : NAN), 0.8,
			    0, detail,
			    "fan-out %dx%d parent CPU per message, "
			    "cqwire-uring / epoll",
			    fan_n[i], k);
			v = u ? u->r_sys : NAN;
			snprintf(detail, sizeof(detail), "epoll: %.3f",
				 e ? e->r_sys : NAN);
			add(t, &n, v, 0.01, 0,
			    run->syscalls_why ? run->syscalls_why : detail,
			    "fan-out %dx%d parent system calls per message, "
			    "cqwire-uring",
			    fan_n[i], k);
			py = perf_find(run, CQWB_FANOUT, 64, fan_n[i], k,
				       "python", NULL, NULL, NULL);
			if (py == NULL) {
				continue;
			}
			snprintf(detail, sizeof(detail),
				 "%.0f k/s vs python %.1f k/s", mps(u) / 1e3,
				 mps(py) / 1e3);
			add(t, &n, mps(u) / mps(py), 2.5, 1, detail,
			    "fan-out %dx%d responses/s, cqwire-uring / "
			    "python wait() parent",
			    fan_n[i], k);
		}
	}
	/* CPU per message beside every figure. */
	for (i = 0; i < run->ngroups; i++) {
		for (k = 0; k < run->groups[i].ncases; k++) {
			const struct perf_case *c = &run->groups[i].cases[k];

			if (c->done) {
				any = 1;
				all_cpu &= !isnan(c->r_cpu);
			}
		}
	}
	add(t, &n, any ? (double)all_cpu : NAN, 1, 1,
	    "getrusage/clock_getcpuclockid of every process",
	    "CPU per message reported beside every figure");
	k = n;
	issue11_targets(run, t, &n);
	for (; k < n; k++) {
		t[k].set = 1;
	}
	return n;
}

void
perf_print_targets(FILE *f, const struct perf_run *run)
{
	struct target t[MAX_TARGETS];
	int n = compute_targets(run, t), i, set, met, missed, total;

	for (set = 0; set < 2; set++) {
		met = missed = total = 0;
		fprintf(f, "\n%s targets, from this run:\n", set_name[set]);
		for (i = 0; i < n; i++) {
			const char *v = t[i].met < 0 ? "n/a"
					: t[i].met   ? "met"
						     : "MISSED";

			if (t[i].set != set) {
				continue;
			}
			total++;
			if (t[i].met > 0) {
				met++;
			} else if (t[i].met == 0) {
				missed++;
			}
			if (strncmp(t[i].what, "CPU per", 7) == 0) {
				fprintf(f, "  %-7s %s\n", v, t[i].what);
				continue;
			}
			if (t[i].met < 0) {
				fprintf(f, "  %-7s %s: %s\n", v, t[i].what,
					t[i].na_why[0]
					    ? t[i].na_why
					    : "not measured in this run");
				continue;
			}
			fprintf(f, "  %-7s %s: %.3g (target %s %.3g)%s%s\n", v,
				t[i].what, t[i].value,
				t[i].ge ? ">=" : "<=", t[i].limit,
				t[i].detail[0] ? "; " : "", t[i].detail);
		}
		fprintf(f, "%d met, %d missed, %d not measured or not judged\n",
			met, missed, total - met - missed);
	}
	if (run->load1 > 0.5 * run->cpus) {
		fprintf(f,
			"note: the machine was busy when the run began (load "
			"%.2f on %d CPUs): figures are noisy, and spinning "
			"transports suffer most\n",
			run->load1, run->cpus);
	}
}

/* ------------------------------------------------------------------
 * JSON
 */

static void
json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\') {
			fprintf(f, "\\%c", ch);
		} else if (ch < 0x20) {
			fprintf(f, "\\u%04x", ch);
		} else {
			fputc(ch, f);
		}
	}
	fputc('"', f);
}

static void
json_kv_str(FILE *f, const char *key, const char *v, int *first)
{
	fprintf(f, "%s\"%s\": ", *first ? "" : ", ", key);
	json_str(f, v);
	*first = 0;
}

static void
json_kv_num(FILE *f, const char *key, double v, int *first)
{
	if (isnan(v) || isinf(v)) {
		return; /* absent figures are omitted */
	}
	/*
	 * Whole numbers exactly (a size of 1 MiB is 1048576, not 1.04858e+06);
	 * measured fractions with six significant digits.
	 */
	if (v == floor(v) && fabs(v) < 9007199254740992.0) {
		fprintf(f, "%s\"%s\": %.0f", *first ? "" : ", ", key, v);
	} else {
		fprintf(f, "%s\"%s\": %.6g", *first ? "" : ", ", key, v);
	}
	*first = 0;
}

/*
 * How a raw transport's receiver reads, where it differs: raw receives
 * with Python's framing (a read() of the header, then one of the
 * payload), the ceilings in 1 MiB reads.
 */
static const char *
receiver_note(const struct cqwb_transport *t)
{
	if (strcmp(t->name, "raw") == 0) {
		return "two reads per message (header, payload), as Python";
	}
	if (strcmp(t->name, "raw-writev512") == 0 ||
	    strcmp(t->name, "raw-contig") == 0) {
		return "1 MiB reads, headers walked in place";
	}
	return NULL;
}

void
perf_print_json(FILE *f, const struct perf_run *run)
{
	struct target t[MAX_TARGETS];
	int n = compute_targets(run, t), g, k, first, sep = 0;
	char ver[32];

	snprintf(ver, sizeof(ver), "%d.%d.%d", CQW_VERSION_MAJOR,
		 CQW_VERSION_MINOR, CQW_VERSION_PATCH);
	fprintf(f, "{\"machine\": {");
	first = 1;
	json_kv_num(f, "cpus", run->cpus, &first);
	json_kv_str(f, "cpu_model", run->cpu_model, &first);
	json_kv_str(f, "kernel", run->kernel, &first);
	json_kv_str(f, "os", run->os, &first);
	json_kv_str(f, "date", run->date, &first);
	json_kv_num(f, "load_average", run->load1, &first);
	json_kv_str(f, "cqwire", ver, &first);
	json_kv_str(f, "io_uring", run->uring, &first);
	json_kv_str(f, "default_backend", run->backend, &first);
	json_kv_str(f, "placement", run->placement, &first);
	json_kv_str(f, "syscall_counting",
		    run->syscalls_why ? run->syscalls_why
				      : "raw_syscalls:sys_enter tracepoint",
		    &first);
	json_kv_str(f, "python", run->python[0] ? run->python : "none", &first);
	json_kv_str(f, "python_path", cqwb_python(), &first);
	if (run->zeromq[0]) {
		json_kv_str(f, "zeromq", run->zeromq, &first);
	}
	if (run->nng[0]) {
		json_kv_str(f, "nng", run->nng, &first);
	}
	json_kv_str(f, "suite", run->quick ? "quick" : "default", &first);
	json_kv_num(f, "rounds", run->rounds, &first);
	json_kv_num(f, "seconds", run->seconds, &first);
	fprintf(f, "},\n \"results\": [");
	for (g = 0; g < run->ngroups; g++) {
		const struct perf_group *gr = &run->groups[g];

		for (k = 0; k < gr->ncases; k++) {
			const struct perf_case *c = &gr->cases[k];

			if (!c->done) {
				continue;
			}
			fprintf(f, "%s\n  {", sep ? "," : "");
			sep = 1;
			first = 1;
			json_kv_str(f, "scenario", cqwb_scn_name(gr->p.scn),
				    &first);
			json_kv_str(f, "transport", c->t->name, &first);
			if (c->t->api) {
				json_kv_str(f, "api", c->t->api, &first);
			}
			if (c->t->mode) {
				json_kv_str(f, "mode", c->t->mode, &first);
			}
			if (c->t->wait) {
				json_kv_str(f, "wait", c->t->wait, &first);
			}
			if (cqwb_channel(c->t) != NULL) {
				json_kv_str(f, "channel", cqwb_channel(c->t),
					    &first);
			}
			if (cqwb_worker(c->t) != NULL) {
				json_kv_str(f, "worker", cqwb_worker(c->t),
					    &first);
			}
			if (receiver_note(c->t) != NULL) {
				json_kv_str(f, "receiver", receiver_note(c->t),
					    &first);
			}
			json_kv_num(f, "size", (double)gr->p.size, &first);
			json_kv_num(f, "workers",
				    gr->p.scn == CQWB_FANOUT ||
					    server_scn(gr->p.scn)
					? gr->p.workers
					: 1,
				    &first);
			if (gr->p.scn == CQWB_ACCEPT) {
				json_kv_num(f, "client_processes",
					    gr->p.workers, &first);
			} else if (gr->p.scn == CQWB_ECHO_CLIENTS) {
				json_kv_num(f, "clients", gr->p.workers,
					    &first);
			}
			if (gr->p.scn == CQWB_FANOUT ||
			    gr->p.scn == CQWB_ACCEPT) {
				json_kv_num(f, "inflight", gr->p.inflight,
					    &first);
			}
			json_kv_num(f, "p50_us", c->r_p50, &first);
			json_kv_num(f, "p99_us", c->r_p99, &first);
			json_kv_num(f, "p999_us", c->r_p999, &first);
			json_kv_num(f, "msgs_per_s", c->r_mps, &first);
			json_kv_num(f, "bytes_per_s", c->r_bps, &first);
			json_kv_num(f, "cpu_us_per_msg", c->r_cpu, &first);
			json_kv_num(f, "parent_cpu_us_per_msg", c->r_pcpu,
				    &first);
			if (server_scn(gr->p.scn)) {
				json_kv_num(f, "server_cpu_us_per_msg",
					    c->r_pcpu, &first);
				json_kv_num(f, "server_rss_kib", c->r_rss,
					    &first);
			}
			json_kv_num(f, "parent_syscalls_per_msg", c->r_sys,
				    &first);
			if (gr->p.scn == CQWB_FANOUT) {
				json_kv_num(f, "worker_cpu_us_per_msg",
					    c->r_cpu - c->r_pcpu, &first);
				json_kv_num(f, "worker_vcsw_per_msg", c->r_wcsw,
					    &first);
			} else if (gr->p.scn == CQWB_RTT) {
				json_kv_num(f, "peer_vcsw_per_msg", c->r_wcsw,
					    &first);
			}
			json_kv_num(f, "rounds", c->nrounds, &first);
			json_kv_num(f, "msgs_per_s_spread", c->r_spread,
				    &first);
			if (c->note[0] != '\0') {
				json_kv_str(f, "ring_setup", c->note, &first);
			}
			if (c->samples) {
				json_kv_num(f, "samples", (double)c->samples,
					    &first);
			}
			fprintf(f, "}");
		}
	}
	fprintf(f, "\n ],\n \"skipped\": [");
	for (k = 0; k < run->nskips; k++) {
		fprintf(f, "%s{\"transport\": ", k ? ", " : "");
		json_str(f, run->skips[k].label);
		fprintf(f, ", \"reason\": ");
		json_str(f, run->skips[k].why);
		fprintf(f, "}");
	}
	fprintf(f, "],\n \"failed\": [");
	sep = 0;
	for (g = 0; g < run->ngroups; g++) {
		for (k = 0; k < run->groups[g].ncases; k++) {
			const struct perf_case *c = &run->groups[g].cases[k];

			if (!c->failed) {
				continue;
			}
			fprintf(f, "%s{\"scenario\": ", sep ? ", " : "");
			sep = 1;
			json_str(f, cqwb_scn_name(run->groups[g].p.scn));
			fprintf(f, ", \"transport\": ");
			json_str(f, c->label);
			fprintf(f, ", \"size\": %zu, \"reason\": ",
				run->groups[g].p.size);
			json_str(f, c->why);
			fprintf(f, "}");
		}
	}
	fprintf(f, "],\n \"targets\": [");
	for (k = 0; k < n; k++) {
		fprintf(f, "%s\n  {\"target\": ", k ? "," : "");
		json_str(f, t[k].what);
		first = 0;
		json_kv_num(f, "value", t[k].value, &first);
		json_kv_num(f, "limit", t[k].limit, &first);
		fprintf(f, ", \"op\": \"%s\", \"met\": %s",
			t[k].ge ? ">=" : "<=",
			t[k].met < 0 ? "null"
			: t[k].met   ? "true"
				     : "false");
		fprintf(f, ", \"set\": ");
		json_str(f, set_name[t[k].set]);
		if (t[k].na_why[0]) {
			fprintf(f, ", \"detail\": ");
			json_str(f, t[k].na_why);
		} else if (t[k].detail[0] && t[k].met >= 0) {
			fprintf(f, ", \"detail\": ");
			json_str(f, t[k].detail);
		}
		fprintf(f, "}");
	}
	fprintf(f, "\n ]}\n");
}
