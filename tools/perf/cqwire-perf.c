/*
 * cqwire-perf: measure this machine's message passing, cqwire on each
 * backend against the raw system calls and the alternatives (ZeroMQ, nng,
 * Python's multiprocessing, billiard), and show where cqwire stands
 * against the targets of DESIGN §6.
 *
 * The suite is a list of groups (a scenario at one message size, or one
 * fan-out shape); every transport of a group is measured once per round,
 * the rounds interleave the transports (in a rotated order), and each
 * figure is the median of the rounds. Each measurement is a fresh
 * session, opened in a fresh process of its own so that a hang or a crash
 * of the library under test fails that transport and not the run: fork
 * the peers, warm up, measure for a fixed time, count the parent's system
 * calls in an untimed step (first round only), close. Latencies go into
 * log-linear histograms (bench/hist.h); tails come from the histogram of
 * all rounds merged.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cqwire.h>

#include "perf.h"
#include "sess.h"

static const char usage[] =
    "usage: cqwire-perf [--quick] [--only SCENARIO[,...]] "
    "[--backend uring|poll|all]\n"
    "                   [--transport NAME[,...]] [--rounds N] [--json] "
    "[--json-out FILE]\n"
    "                   [--plot DIR] [--pin | --no-pin] [--python PATH] "
    "[--list] [--help]\n"
    "\n"
    "Measures message passing on this machine: cqwire (synchronous API, "
    "and its\n"
    "loop on each backend) against raw system calls, epoll, ZeroMQ, nng, "
    "and\n"
    "Python's multiprocessing and billiard, in one run, interleaved; "
    "then the\n"
    "targets of cqwire's DESIGN §6, each met or missed. About two minutes.\n"
    "\n"
    "  --quick           a smaller suite, about 10 seconds\n"
    "  --only S          only these scenarios: rtt (round trip), stream "
    "(one way),\n"
    "                    fanout (one parent, N workers), accept "
    "(connections per\n"
    "                    second against a server process), "
    "echo-clients (N clients\n"
    "                    of one echo server)\n"
    "  --backend B       cqwire's loop on this backend only (uring, poll; "
    "default all)\n"
    "  --transport T     only transports whose name starts with one of "
    "these\n"
    "  --rounds N        rounds per figure (median; default 3, quick 2)\n"
    "  --json            one JSON document on stdout instead of the table\n"
    "  --json-out FILE   the JSON document into FILE as well\n"
    "  --plot DIR        PNG charts into DIR (needs gnuplot)\n"
    "  --pin             the default: the parent on the first CPU it may "
    "use, its\n"
    "                    peers (workers) on the others, for every "
    "transport alike\n"
    "                    (Python and nng parents included)\n"
    "  --no-pin          the scheduler places everything (on 2 vCPUs round "
    "trips\n"
    "                    then go bimodal: peer on the same CPU or not)\n"
    "  --python PATH     interpreter for the python and billiard peers\n"
    "                    (default: $CQW_PYTHON, else /usr/bin/python3)\n"
    "  --list            list the transports and whether they can run "
    "here\n"
    "\n"
    "Progress goes to stderr. Parent system calls are counted with the\n"
    "raw_syscalls tracepoint: as root, tracefs is mounted in a private "
    "mount\n"
    "namespace of this process if it is not mounted already.\n"
    "Each measurement runs in its own process group; one that hangs is "
    "killed\n"
    "after 10 s and its transport reported as failed.\n"
    "Exit status: 0, 2 for bad arguments, 3 if a transport failed.\n";

/* Client processes of the accept scenario. */
#define ACCEPT_CLIENTS 4
/* Connections in flight per client process in the second accept group. */
#define ACCEPT_INFLIGHT 16

static int tty;
static int count_sys; /* the syscall tracepoint can be used */

static struct {
	int quick;
	unsigned only; /* CQWB_BIT mask; 0 = all */
	int backend;   /* 0 all, 1 uring, 2 poll */
	char *transports;
	int rounds;
	int json;
	const char *json_out;
	const char *plot;
	int pin; /* 1: parent on one CPU, peers on the others; 0: no */
	int list;
} opt = { .pin = 1 };

const char *
perf_size_str(size_t size, char *buf, size_t len)
{
	if (size >= (1u << 20) && size % (1u << 20) == 0) {
		snprintf(buf, len, "%zu MiB", size >> 20);
	} else if (size >= 1024 && size % 1024 == 0) {
		snprintf(buf, len, "%zu KiB", size >> 10);
	} else {
		snprintf(buf, len, "%zu B", size);
	}
	return buf;
}

/* ------------------------------------------------------------------
 * The plan
 */

static int
is_peer(const struct cqwb_transport *t, const char *name)
{
	return strcmp(t->name, name) == 0;
}

/*
 * Does the suite measure t in this group? The default suite is the whole
 * matrix where it differs (small messages) and the fast modes elsewhere;
 * cqwire-bench has every combination.
 */
static int
wanted(const struct cqwb_transport *t, const struct cqwb_params *p)
{
	int spin = t->wait != NULL || is_peer(t, "raw-spin");
	int excl = t->mode != NULL && strcmp(t->mode, "exclusive") == 0;
	int py = is_peer(t, "python") || is_peer(t, "billiard");
	int loop = is_peer(t, "cqwire-uring") || is_peer(t, "cqwire-poll");
	int small = p->size <= 1024;

	if ((t->scns & CQWB_BIT(p->scn)) == 0) {
		return 0;
	}
	if (opt.backend == 1 && is_peer(t, "cqwire-poll")) {
		return 0;
	}
	if (opt.backend == 2 && is_peer(t, "cqwire-uring")) {
		return 0;
	}
	if (opt.transports != NULL) {
		char *list = strdup(opt.transports), *save = NULL, *tok;
		int match = 0;

		for (tok = strtok_r(list, ",", &save); tok != NULL;
		     tok = strtok_r(NULL, ",", &save)) {
			if (strncmp(t->name, tok, strlen(tok)) == 0) {
				match = 1;
			}
		}
		free(list);
		if (!match) {
			return 0;
		}
	}
	/* Pipes: 64 B (the targets) and, in the default suite, 1 MiB. */
	if (cqwb_channel(t) != NULL && p->size != 64 &&
	    (opt.quick || p->size != (1u << 20))) {
		return 0;
	}
	/* The ceilings are for small frames: one copy of 16 MiB is no ceiling. */
	if ((is_peer(t, "raw-writev512") || is_peer(t, "raw-contig")) &&
	    p->size > (1u << 20)) {
		return 0;
	}
	switch (p->scn) {
	case CQWB_RTT:
		/* Spinning is the 64 B target; billiard is python's code. */
		if ((spin || is_peer(t, "billiard")) && p->size > 64) {
			return 0;
		}
		if (opt.quick) {
			if (t->wait != NULL && excl) {
				return 0;
			}
			return !(loop && !excl) && !is_peer(t, "billiard");
		}
		return small || !loop || excl;
	case CQWB_STREAM:
		if (is_peer(t, "billiard")) {
			return 0;
		}
		if (opt.quick) {
			if (loop) {
				return strcmp(t->api, "batch") == 0 && excl;
			}
			if (is_peer(t, "cqwire")) {
				return strcmp(t->api, "batch") == 0 ? excl
								    : !excl;
			}
			return 1;
		}
		if (loop && strcmp(t->api, "per-message") == 0) {
			return excl;
		}
		if (!small && (loop || strcmp(t->name, "cqwire") == 0)) {
			/* Large payloads skip the read-ahead anyway. */
			return excl || strcmp(t->api, "per-message") == 0;
		}
		return 1;
	case CQWB_ACCEPT:
		/* Python's Client connects one at a time. */
		if (p->inflight > 1 && is_peer(t, "python") && t->api == NULL) {
			return 0;
		}
		/* The quick suite: with the handshake only. */
		return !opt.quick || strcmp(t->mode, "hmac") == 0;
	case CQWB_ECHO_CLIENTS:
		return 1;
	default:
		if (is_peer(t, "billiard")) {
			return 0;
		}
		if (is_peer(t, "cqwire")) {
			return excl; /* cqw_wait() parent: its fast mode */
		}
		if (py) {
			/* Forking hundreds of interpreters takes seconds. */
			return p->workers <= 64 &&
			       (!opt.quick || p->inflight == 1);
		}
		if (opt.quick) {
			return excl || is_peer(t, "epoll") ||
			       is_peer(t, "io_uring");
		}
		return 1;
	}
}

static int
add_group(struct perf_run *run, const struct cqwb_params *p, uint64_t warm_ms,
	  uint64_t measure_ms)
{
	const struct cqwb_transport *t;
	struct perf_group *g;
	struct perf_group *n;

	if (opt.only != 0 && (opt.only & CQWB_BIT(p->scn)) == 0) {
		return 0;
	}
	n = realloc(run->groups, sizeof(*n) * (size_t)(run->ngroups + 1));
	if (n == NULL) {
		return -ENOMEM;
	}
	run->groups = n;
	g = &run->groups[run->ngroups];
	memset(g, 0, sizeof(*g));
	g->p = *p;
	g->warm_ns = warm_ms * 1000000u;
	g->measure_ns = measure_ms * 1000000u;
	for (t = cqwb_transports; t->name != NULL; t++) {
		struct perf_case *c;

		if (!wanted(t, p) || cqwb_unavailable(t, p) != NULL) {
			continue;
		}
		c = realloc(g->cases, sizeof(*c) * (size_t)(g->ncases + 1));
		if (c == NULL) {
			return -ENOMEM;
		}
		g->cases = c;
		c = &g->cases[g->ncases++];
		memset(c, 0, sizeof(*c));
		c->t = t;
		cqwb_label(t, c->label, sizeof(c->label));
		c->hist = cqwb_hist_new();
		if (c->hist == NULL) {
			return -ENOMEM;
		}
	}
	if (g->ncases > 0) {
		run->ngroups++;
	}
	return 0;
}

static int
build_plan(struct perf_run *run)
{
	static const size_t rtt_sizes[] = { 64, 1024, 64 << 10, 1 << 20 };
	static const size_t stream_sizes[] = { 64, 1024, 64 << 10, 1 << 20,
					       16 << 20 };
	static const size_t quick_sizes[] = { 64, 1 << 20 };
	static const int workers[] = { 1, 8, 64, 256 };
	static const int echo_clients[] = { 1, 64, 1024 };
	/*
	 * Fan-out windows (warm-up, measure, quick measure; ms) by N: a
	 * window of 40 ms at 256 x 16 varied 2x from one second to the next,
	 * since single requests there wait up to ~50 ms (p99.9) while 256
	 * workers share a CPU. The window is about ten times that tail (at
	 * N <= 8 the tail is under 1 ms), and the warm-up lets N freshly
	 * forked workers settle.
	 */
	static const uint64_t fanout_ms[4][3] = { { 20, 60, 40 },
						  { 20, 60, 40 },
						  { 100, 200, 80 },
						  { 150, 400, 200 } };
	struct cqwb_params p;
	uint64_t warm = opt.quick ? 5 : 10, meas = opt.quick ? 20 : 40;
	size_t i;
	int r = 0, w, k;

	memset(&p, 0, sizeof(p));
	p.scn = CQWB_RTT;
	for (i = 0; i < (opt.quick ? 1 : 4) && r == 0; i++) {
		p.size = rtt_sizes[i];
		r = add_group(run, &p, warm, meas);
	}
	p.scn = CQWB_STREAM;
	for (i = 0; i < (opt.quick ? 2 : 5) && r == 0; i++) {
		p.size = opt.quick ? quick_sizes[i] : stream_sizes[i];
		/*
		 * Large messages: a window of some hundred messages. In
		 * 40 ms a 16 MiB stream moves about ten, and its rounds
		 * spread 30-130% (a 1 MiB one's 50-100%).
		 */
		if (p.size >= (16 << 20)) {
			r = add_group(run, &p, 4 * warm, 10 * meas);
		} else if (p.size >= (1 << 20)) {
			r = add_group(run, &p, 2 * warm, 4 * meas);
		} else {
			r = add_group(run, &p, warm, meas);
		}
	}
	p.scn = CQWB_FANOUT;
	p.size = 64;
	for (w = 0; w < 4 && r == 0; w++) {
		if (opt.quick && workers[w] != 64) {
			continue;
		}
		for (k = 1; k <= 16 && r == 0; k += 15) {
			p.workers = workers[w];
			p.inflight = k;
			r = add_group(run, &p, fanout_ms[w][0],
				      fanout_ms[w][opt.quick ? 2 : 1]);
		}
	}
	/*
	 * Servers: longer steps, since a connection or a round trip of
	 * 1,024 costs more than a message.
	 */
	memset(&p, 0, sizeof(p));
	p.scn = CQWB_ACCEPT;
	p.size = 64;
	p.workers = ACCEPT_CLIENTS;
	for (k = 1; k <= ACCEPT_INFLIGHT && r == 0; k += ACCEPT_INFLIGHT - 1) {
		p.inflight = k;
		r = add_group(run, &p, 4 * warm, 5 * meas);
	}
	p.scn = CQWB_ECHO_CLIENTS;
	p.inflight = 1;
	for (w = 0; w < 3 && r == 0; w++) {
		if (opt.quick && echo_clients[w] != 64) {
			continue;
		}
		p.workers = echo_clients[w];
		r = add_group(run, &p, 4 * warm, 5 * meas);
	}
	return r;
}

/* ------------------------------------------------------------------
 * Running
 */

/* Rough cost of one measurement, for the ETA. */
static double
estimate_s(const struct perf_group *g, const struct perf_case *c, int round)
{
	double s = (double)(g->warm_ns + g->measure_ns) / 1e9 + 0.006;

	if (round == 0 && count_sys && g->p.scn < CQWB_ACCEPT) {
		s += 0.025 + (double)g->measure_ns / 3e9;
	}
	if (g->p.scn == CQWB_ACCEPT || g->p.scn == CQWB_ECHO_CLIENTS) {
		/* Start-up, and every client connected first. */
		s += 0.05 + 0.0005 * g->p.workers;
		if (is_peer(c->t, "python")) {
			s +=
			    0.05 * (g->p.scn == CQWB_ACCEPT ? g->p.workers : 1);
		}
	} else if (is_peer(c->t, "python") || is_peer(c->t, "billiard")) {
		s += 0.05 + 0.006 * g->p.workers;
	} else if (is_peer(c->t, "nng")) {
		s += 0.02;
	} else if (g->p.scn == CQWB_FANOUT) {
		s += 0.0003 * g->p.workers;
	}
	return s;
}

static void
progress(const struct perf_group *g, const struct perf_case *c, int round,
	 double frac, double eta)
{
	char sz[32], what[200];

	perf_size_str(g->p.size, sz, sizeof(sz));
	if (g->p.scn == CQWB_FANOUT) {
		snprintf(what, sizeof(what), "fanout %dx%d", g->p.workers,
			 g->p.inflight);
	} else if (g->p.scn == CQWB_ECHO_CLIENTS) {
		snprintf(what, sizeof(what), "echo-clients %d", g->p.workers);
	} else if (g->p.scn == CQWB_ACCEPT) {
		snprintf(what, sizeof(what), "accept %dx%d", g->p.workers,
			 g->p.inflight);
	} else {
		snprintf(what, sizeof(what), "%s %s", cqwb_scn_name(g->p.scn),
			 sz);
	}
	if (tty) {
		fprintf(stderr,
			"\r\033[K[%3.0f%%] %s, round %d/%d: %s  (%.0f s "
			"left)",
			100 * frac, what, round + 1, opt.rounds, c->label, eta);
	} else if (round == 0 && c == &g->cases[0]) {
		fprintf(stderr,
			"cqwire-perf: [%3.0f%%] %s: %d transports x %d "
			"rounds (%.0f s left)\n",
			100 * frac, what, g->ncases, opt.rounds, eta);
	}
}

/* What a measuring process sends back. */
struct wire {
	int ok;
	char why[200];
	struct cqwb_measure m;
	int sys_known;
	double sys_per_op;
	char note[96];
};

/*
 * The measuring process: open, warm up, measure, close; send the figures
 * and the histogram back on fd. It leads its own process group, so that
 * a hang costs the group, not the run.
 */
static void __attribute__((noreturn))
measurer(int fd, const struct perf_group *g, const struct perf_case *c,
	 int round, struct cqwb_hist *h)
{
	struct cqwb_session *s;
	struct cqwb_step warm;
	struct wire w;
	int r, want_lat = g->p.scn != CQWB_STREAM;

	setpgid(0, 0);
	memset(&w, 0, sizeof(w));
	/* Placement: the same for every transport of the group. */
	if (opt.pin) {
		cqwb_set_pinning(1);
	}
	cqwb_hist_reset(h);
	r = cqwb_open(&s, c->t, &g->p);
	if (r == 0 && is_peer(c->t, "io_uring")) {
		snprintf(w.note, sizeof(w.note), "%s", cqwb__uring_note());
	}
	if (r == 0) {
		r = cqwb_step(s, 0, g->warm_ns, NULL, &warm);
		if (r == 0) {
			r = cqwb_measure(s, 0, g->measure_ns,
					 want_lat ? h : NULL, 0, &w.m);
		}
		/*
		 * System calls, in the first round only: a step of its own,
		 * since counting slows every system call down. Not for the
		 * servers: the counter would see one thread of a threaded
		 * server (Python, ZeroMQ).
		 */
		w.m.syscalls = -1;
		if (r == 0 && round == 0 && count_sys &&
		    g->p.scn < CQWB_ACCEPT) {
			struct cqwb_measure cm;

			r = cqwb_measure(s, 0, g->measure_ns / 3, NULL, 1, &cm);
			if (cm.syscalls >= 0 && cm.ops > 0) {
				w.sys_per_op =
				    (double)cm.syscalls / (double)cm.ops;
				w.sys_known = 1;
			}
		}
		if (r < 0) {
			snprintf(w.why, sizeof(w.why), "%s", cqwb_error());
		}
		if (cqwb_close(s) < 0 && r == 0) {
			r = -ECHILD;
			snprintf(w.why, sizeof(w.why), "a peer process failed");
		}
	} else {
		snprintf(w.why, sizeof(w.why), "%s", cqwb_error());
	}
	w.ok = r == 0;
	if (write(fd, &w, sizeof(w)) != (ssize_t)sizeof(w) ||
	    write(fd, h, sizeof(*h)) != (ssize_t)sizeof(*h)) {
		_exit(1);
	}
	_exit(0);
}

/* Read n bytes before the deadline (monotonic ns); 0 or -1. */
static int
read_until(int fd, void *buf, size_t n, uint64_t deadline_ns)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint8_t *b = buf;
	ssize_t r;

	while (n > 0) {
		uint64_t now = cqwb_now_ns();

		if (now >= deadline_ns ||
		    poll(&p, 1, (int)((deadline_ns - now) / 1000000 + 1)) <=
			0) {
			if (errno == EINTR) {
				continue;
			}
			return -1;
		}
		r = read(fd, b, n);
		if (r <= 0) {
			return -1;
		}
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

static void
measure_once(struct perf_group *g, struct perf_case *c, int round,
	     struct cqwb_hist *h)
{
	uint64_t deadline, limit, ops;
	struct wire w;
	int fds[2], status, ok;
	pid_t pid;

	if (pipe(fds) != 0) {
		snprintf(c->why, sizeof(c->why), "pipe: %s", strerror(errno));
		c->failed = 1;
		return;
	}
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		close(fds[0]);
		measurer(fds[1], g, c, round, h);
	}
	close(fds[1]);
	if (pid < 0) {
		close(fds[0]);
		snprintf(c->why, sizeof(c->why), "fork: %s", strerror(errno));
		c->failed = 1;
		return;
	}
	setpgid(pid, pid);
	/* Generous: interpreters and hundreds of workers start first. */
	limit = 10000000000ull + 3 * (g->warm_ns + g->measure_ns);
	deadline = cqwb_now_ns() + limit;
	ok = read_until(fds[0], &w, sizeof(w), deadline) == 0 &&
	     read_until(fds[0], h, sizeof(*h), deadline) == 0;
	close(fds[0]);
	if (!ok) {
		kill(-pid, SIGKILL);
	}
	waitpid(pid, &status, 0);
	if (!ok) {
		if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL) {
			snprintf(c->why, sizeof(c->why),
				 "the measuring process died (signal %d)",
				 WTERMSIG(status));
		} else {
			snprintf(c->why, sizeof(c->why),
				 "no result within %.0f s (hung; killed)",
				 (double)limit / 1e9);
		}
		c->failed = 1;
		return;
	}
	if (!w.ok) {
		snprintf(c->why, sizeof(c->why), "%s", w.why);
		c->failed = 1;
		return;
	}
	ops = w.m.ops ? w.m.ops : 1;
	c->mps[round] = (double)w.m.ops * 1e9 / (double)(w.m.ns ? w.m.ns : 1);
	c->cpu[round] =
	    (double)(w.m.cpu_parent_ns + w.m.cpu_peers_ns) / 1e3 / (double)ops;
	c->pcpu[round] = (double)w.m.cpu_parent_ns / 1e3 / (double)ops;
	c->rss[round] = (double)w.m.parent_rss_kib;
	if (w.m.peers_vcsw >= 0) {
		c->wcsw[c->nwcsw++] = (double)w.m.peers_vcsw / (double)ops;
	}
	if (w.note[0] != '\0') {
		snprintf(c->note, sizeof(c->note), "%s", w.note);
	}
	if (w.sys_known) {
		c->sys[c->nsys++] = w.sys_per_op;
	}
	c->p50[round] = h->count ? cqwb_hist_quantile(h, 0.5) / 1e3 : NAN;
	c->samples += h->count;
	cqwb_hist_merge(c->hist, h);
	c->nrounds++;
}

static void
free_run(struct perf_run *run)
{
	int g, k;

	for (g = 0; g < run->ngroups; g++) {
		for (k = 0; k < run->groups[g].ncases; k++) {
			free(run->groups[g].cases[k].hist);
		}
		free(run->groups[g].cases);
	}
	free(run->groups);
	free(run->skips);
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double
median(const double *v, int n)
{
	double tmp[PERF_MAX_ROUNDS];

	if (n <= 0) {
		return NAN;
	}
	memcpy(tmp, v, sizeof(*v) * (size_t)n);
	qsort(tmp, (size_t)n, sizeof(*tmp), cmp_double);
	return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

static void
finish_case(const struct perf_group *g, struct perf_case *c)
{
	int k;

	c->r_p50 = c->r_p99 = c->r_p999 = NAN;
	c->r_sys = NAN;
	c->r_wcsw = NAN;
	c->r_spread = NAN;
	if (c->failed || c->nrounds == 0) {
		return;
	}
	c->done = 1;
	if (c->hist->count > 0) {
		c->r_p50 = median(c->p50, c->nrounds);
		c->r_p99 = cqwb_hist_quantile(c->hist, 0.99) / 1e3;
		c->r_p999 = cqwb_hist_quantile(c->hist, 0.999) / 1e3;
	}
	c->r_mps = median(c->mps, c->nrounds);
	if (c->nrounds >= 2 && c->r_mps > 0) {
		double lo = c->mps[0], hi = c->mps[0];

		for (k = 1; k < c->nrounds; k++) {
			lo = c->mps[k] < lo ? c->mps[k] : lo;
			hi = c->mps[k] > hi ? c->mps[k] : hi;
		}
		c->r_spread = (hi - lo) / c->r_mps;
	}
	c->r_bps = c->r_mps * (double)g->p.size;
	c->r_cpu = median(c->cpu, c->nrounds);
	c->r_pcpu = median(c->pcpu, c->nrounds);
	c->r_rss = median(c->rss, c->nrounds);
	if (c->nsys > 0) {
		c->r_sys = median(c->sys, c->nsys);
	}
	if (c->nwcsw > 0) {
		c->r_wcsw = median(c->wcsw, c->nwcsw);
	}
}

static int
run_all(struct perf_run *run)
{
	struct cqwb_hist *h = cqwb_hist_new();
	double total = 0, spent_est = 0, t0;
	int gi, ci, r, k, failed = 0;

	if (h == NULL) {
		return -ENOMEM;
	}
	for (gi = 0; gi < run->ngroups; gi++) {
		for (ci = 0; ci < run->groups[gi].ncases; ci++) {
			for (r = 0; r < opt.rounds; r++) {
				total +=
				    estimate_s(&run->groups[gi],
					       &run->groups[gi].cases[ci], r);
			}
		}
	}
	t0 = (double)cqwb_now_ns() / 1e9;
	for (gi = 0; gi < run->ngroups; gi++) {
		struct perf_group *g = &run->groups[gi];

		for (r = 0; r < opt.rounds; r++) {
			for (k = 0; k < g->ncases; k++) {
				/* Rotate the order each round. */
				struct perf_case *c =
				    &g->cases[(k + r) % g->ncases];
				double now = (double)cqwb_now_ns() / 1e9 - t0;
				double eta =
				    spent_est > 0
					? (total - spent_est) * now / spent_est
					: total;

				progress(g, c, r, spent_est / total, eta);
				if (!c->failed) {
					measure_once(g, c, r, h);
				}
				spent_est += estimate_s(g, c, r);
			}
		}
		for (k = 0; k < g->ncases; k++) {
			finish_case(g, &g->cases[k]);
			failed |= g->cases[k].failed;
		}
	}
	if (tty) {
		fprintf(stderr, "\r\033[K");
	}
	run->seconds = (double)cqwb_now_ns() / 1e9 - t0;
	fprintf(stderr, "cqwire-perf: done in %.0f s\n", run->seconds);
	free(h);
	return failed;
}

/* ------------------------------------------------------------------
 * The machine
 */

static void
read_first(const char *path, const char *key, char *out, size_t len)
{
	FILE *f = fopen(path, "r");
	char line[512], *p;

	if (f == NULL) {
		return;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, key, strlen(key)) != 0) {
			continue;
		}
		p = strchr(line, key[strlen(key) - 1] == '=' ? '=' : ':');
		if (p == NULL) {
			continue;
		}
		p++;
		while (*p == ' ' || *p == '\t' || *p == '"') {
			p++;
		}
		p[strcspn(p, "\"\n")] = '\0';
		snprintf(out, len, "%s", p);
		break;
	}
	fclose(f);
}

static void
machine(struct perf_run *run)
{
	const struct cqwb_transport *t;
	static char placement[200];
	const char *why = NULL, *v, *plan;
	struct utsname u;
	cqw_loop *loop;
	char cmd[400];
	struct tm tm;
	time_t now = time(NULL);
	FILE *f;
	double l[1];

	run->cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
	snprintf(run->cpu_model, sizeof(run->cpu_model), "unknown");
	read_first("/proc/cpuinfo", "model name", run->cpu_model,
		   sizeof(run->cpu_model));
	if (uname(&u) == 0) {
		snprintf(run->kernel, sizeof(run->kernel), "%s %s %s",
			 u.sysname, u.release, u.machine);
	}
	read_first("/etc/os-release", "PRETTY_NAME=", run->os, sizeof(run->os));
	gmtime_r(&now, &tm);
	strftime(run->date, sizeof(run->date), "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (getloadavg(l, 1) == 1) {
		run->load1 = l[0];
	}
	snprintf(cmd, sizeof(cmd),
		 "'%s' -c 'import sys; print(sys.version.split()[0])' "
		 "2>/dev/null",
		 cqwb_python());
	f = popen(cmd, "r");
	if (f != NULL) {
		if (fgets(run->python, sizeof(run->python), f) != NULL) {
			run->python[strcspn(run->python, "\n")] = '\0';
		}
		pclose(f);
	}
	v = cqwb_peer_version("zeromq");
	snprintf(run->zeromq, sizeof(run->zeromq), "%s", v ? v : "");
	v = cqwb_peer_version("nng");
	snprintf(run->nng, sizeof(run->nng), "%s", v ? v : "");
	/* The uring entry of the transport list says why it cannot run. */
	for (t = cqwb_transports; t->name != NULL; t++) {
		if (is_peer(t, "cqwire-uring")) {
			why = t->unavailable(t);
			break;
		}
	}
	snprintf(run->uring, sizeof(run->uring), "%s", why ? why : "available");
	/* What a loop gets without asking (CQW_BACKEND, else the best). */
	if (cqw_loop_new(&loop, NULL) == 0) {
		snprintf(run->backend, sizeof(run->backend), "%s",
			 cqw_loop_backend(loop));
		cqw_loop_free(loop);
	} else {
		snprintf(run->backend, sizeof(run->backend), "none");
	}
	plan = cqwb_pin_plan();
	if (plan == NULL || opt.pin == 0) {
		snprintf(placement, sizeof(placement), "unpinned%s",
			 plan == NULL ? " (fewer than 2 CPUs to use)" : "");
	} else {
		snprintf(placement, sizeof(placement), "%s", plan);
	}
	run->placement = placement;
}

static void
collect_skips(struct perf_run *run)
{
	const struct cqwb_transport *t;

	for (t = cqwb_transports; t->name != NULL; t++) {
		const char *why = t->unavailable ? t->unavailable(t) : NULL;
		struct perf_skip *n;
		int i, dup = 0;

		if (why == NULL) {
			continue;
		}
		/* One line per transport name is enough. */
		for (i = 0; i < run->nskips; i++) {
			if (strncmp(run->skips[i].label, t->name,
				    strlen(t->name)) == 0) {
				dup = 1;
			}
		}
		if (dup) {
			continue;
		}
		n = realloc(run->skips, sizeof(*n) * (size_t)(run->nskips + 1));
		if (n == NULL) {
			return;
		}
		run->skips = n;
		snprintf(n[run->nskips].label, sizeof(n[run->nskips].label),
			 "%s", t->name);
		n[run->nskips].why = why;
		run->nskips++;
	}
}

static void
list_transports(void)
{
	const struct cqwb_transport *t;
	char label[96];

	printf("%-40s %-20s %s\n", "transport", "scenarios", "here");
	for (t = cqwb_transports; t->name != NULL; t++) {
		const char *why = t->unavailable ? t->unavailable(t) : NULL;
		char scns[32] = "";
		int s;

		for (s = 0; s < CQWB_NSCN; s++) {
			if (t->scns & CQWB_BIT(s)) {
				strcat(scns, scns[0] ? "," : "");
				strcat(scns, cqwb_scn_name((enum cqwb_scn)s));
			}
		}
		cqwb_label(t, label, sizeof(label));
		printf("%-40s %-20s %s\n", label, scns, why ? why : "yes");
	}
}

/* ------------------------------------------------------------------
 * Arguments
 */

static int
parse_only(const char *arg)
{
	char *list = strdup(arg), *save = NULL, *tok;
	int s, r = 0;

	for (tok = strtok_r(list, ",", &save); tok != NULL;
	     tok = strtok_r(NULL, ",", &save)) {
		s = cqwb_scn_parse(tok);
		if (s < 0) {
			fprintf(stderr,
				"cqwire-perf: unknown scenario '%s' (rtt, "
				"stream, fanout, accept, echo-clients)\n",
				tok);
			r = -1;
			break;
		}
		opt.only |= CQWB_BIT(s);
	}
	free(list);
	return r;
}

static int
parse_args(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			fputs(usage, stdout);
			exit(0);
		} else if (strcmp(a, "--quick") == 0) {
			opt.quick = 1;
		} else if (strcmp(a, "--json") == 0) {
			opt.json = 1;
		} else if (strcmp(a, "--pin") == 0) {
			opt.pin = 1;
		} else if (strcmp(a, "--no-pin") == 0) {
			opt.pin = 0;
		} else if (strcmp(a, "--list") == 0) {
			opt.list = 1;
		} else if (v == NULL) {
			fprintf(stderr,
				"cqwire-perf: %s: unknown, or it needs "
				"a value\n%s",
				a, usage);
			return -1;
		} else if (strcmp(a, "--only") == 0) {
			if (parse_only(v) < 0) {
				return -1;
			}
			i++;
		} else if (strcmp(a, "--backend") == 0) {
			if (strcmp(v, "uring") == 0) {
				opt.backend = 1;
			} else if (strcmp(v, "poll") == 0) {
				opt.backend = 2;
			} else if (strcmp(v, "all") != 0) {
				fprintf(stderr, "cqwire-perf: --backend uring, "
						"poll or all\n");
				return -1;
			}
			i++;
		} else if (strcmp(a, "--transport") == 0) {
			opt.transports = argv[++i];
		} else if (strcmp(a, "--rounds") == 0) {
			opt.rounds = atoi(v);
			if (opt.rounds < 1 || opt.rounds > PERF_MAX_ROUNDS) {
				fprintf(stderr, "cqwire-perf: --rounds 1..%d\n",
					PERF_MAX_ROUNDS);
				return -1;
			}
			i++;
		} else if (strcmp(a, "--plot") == 0) {
			opt.plot = argv[++i];
		} else if (strcmp(a, "--json-out") == 0) {
			opt.json_out = argv[++i];
		} else if (strcmp(a, "--python") == 0) {
			cqwb_set_python(argv[++i]);
		} else {
			fprintf(stderr, "cqwire-perf: unknown option %s\n%s", a,
				usage);
			return -1;
		}
	}
	if (opt.rounds == 0) {
		opt.rounds = opt.quick ? 2 : 3;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct perf_run run;
	const char *why;
	int i, k, failed;

	if (parse_args(argc, argv) < 0) {
		return 2;
	}
	if (opt.list) {
		list_transports();
		return 0;
	}
	memset(&run, 0, sizeof(run));
	run.quick = opt.quick;
	run.rounds = opt.rounds;
	tty = isatty(2);
	signal(SIGPIPE, SIG_IGN);
	if (opt.pin && cqwb_pin_plan() == NULL) {
		fprintf(stderr, "cqwire-perf: pinning needs two CPUs that this "
				"process may use; running unpinned\n");
		opt.pin = 0;
	}
	run.syscalls_why = cqwb_syscalls_setup(1);
	count_sys = run.syscalls_why == NULL;
	machine(&run);
	collect_skips(&run);
	for (i = 0; i < run.nskips; i++) {
		fprintf(stderr, "cqwire-perf: skipped %s: %s\n",
			run.skips[i].label, run.skips[i].why);
	}
	if (run.syscalls_why != NULL) {
		fprintf(stderr, "cqwire-perf: system calls not counted: %s\n",
			run.syscalls_why);
	}
	if (build_plan(&run) < 0) {
		fprintf(stderr, "cqwire-perf: out of memory\n");
		free_run(&run);
		return 1;
	}
	if (run.ngroups == 0) {
		fprintf(stderr, "cqwire-perf: nothing to measure with these "
				"options\n");
		free_run(&run);
		return 2;
	}
	failed = run_all(&run);
	if (failed < 0) {
		fprintf(stderr, "cqwire-perf: out of memory\n");
		free_run(&run);
		return 1;
	}
	if (opt.json) {
		perf_print_json(stdout, &run);
	} else {
		perf_print_table(stdout, &run);
		perf_print_targets(stdout, &run);
	}
	if (opt.json_out != NULL) {
		FILE *jf = fopen(opt.json_out, "w");

		if (jf == NULL) {
			fprintf(stderr, "cqwire-perf: %s: %s\n", opt.json_out,
				strerror(errno));
		} else {
			perf_print_json(jf, &run);
			fclose(jf);
		}
	}
	if (opt.plot != NULL && perf_plot(&run, opt.plot) == 0) {
		fprintf(stderr, "cqwire-perf: charts in %s\n", opt.plot);
	}
	why = NULL;
	for (i = 0; i < run.ngroups; i++) {
		for (k = 0; k < run.groups[i].ncases; k++) {
			const struct perf_case *c = &run.groups[i].cases[k];

			if (c->failed) {
				fprintf(stderr,
					"cqwire-perf: %s %s failed: %s\n",
					cqwb_scn_name(run.groups[i].p.scn),
					c->label, c->why);
				why = c->why;
			}
		}
	}
	free_run(&run);
	return why != NULL ? 3 : 0;
}
