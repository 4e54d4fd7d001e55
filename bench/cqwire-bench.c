/*
 * cqwire-bench: every scenario of scenario.h as a Google Benchmark, for
 * every transport that can run here (the others are listed as skipped).
 *
 * Each benchmark opens a session (the peer processes, forked), warms it
 * up, then each iteration is one step of the scenario (a block of round
 * trips, messages or responses) timed inside the scenario (manual time).
 * Counters: msgs_per_s, cpu_us_per_msg (all processes), p50/p99/p999_us
 * (rtt, fanout), parent_syscalls_per_msg when countable.
 *
 * Usage: cqwire-bench [--smoke] [--benchmark_filter=REGEX] [--benchmark_*]
 * --smoke runs every benchmark for two tiny iterations (CI keeps them
 * working; no figure means anything then).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gbench.h"
#include "scenario.h"

struct bcase {
	const struct cqwb_transport *t;
	struct cqwb_params p;
	uint64_t ops; /* per iteration */
	char name[160];
};

static int smoke;

static uint64_t
ops_per_step(const struct cqwb_params *p)
{
	switch (p->scn) {
	case CQWB_RTT:
		return smoke ? 4 : p->size >= (1u << 20) ? 8 : 64;
	case CQWB_STREAM:
		if (smoke) {
			return 8;
		}
		return p->size >= (4u << 20)	 ? 4
		       : p->size >= (256u << 10) ? 32
						 : 1024;
	default:
		return (uint64_t)p->workers * (uint64_t)p->inflight;
	}
}

static void
run_case(cqwb_gb_state *st, void *arg)
{
	struct bcase *c = arg;
	struct cqwb_session *s;
	struct cqwb_measure m;
	struct cqwb_hist *h = cqwb_hist_new();
	struct cqwb_step warm;
	uint64_t ops = 0, ns = 0, cpu = 0, sys = 0, sys_ops = 0;
	int sys_known = 0, r;

	if (h == NULL) {
		cqwb_gb_skip(st, "out of memory");
		return;
	}
	r = cqwb_open(&s, c->t, &c->p);
	if (r < 0) {
		cqwb_gb_skip(st, cqwb_error());
		free(h);
		return;
	}
	r = cqwb_step(s, smoke ? 2 : c->ops * 4, smoke ? 1000000 : 20000000,
		      NULL, &warm);
	while (r == 0 && cqwb_gb_keep_running(st)) {
		r = cqwb_measure(s, c->ops, 0, h, 0, &m);
		if (r < 0) {
			break;
		}
		cqwb_gb_set_iteration_time(st, (double)m.ns / 1e9);
		ops += m.ops;
		ns += m.ns;
		cpu += m.cpu_parent_ns + m.cpu_peers_ns;
	}
	/* System calls: counted in an untimed step of their own. */
	if (r == 0) {
		r = cqwb_measure(s, c->ops, 0, NULL, 1, &m);
		sys = m.syscalls >= 0 ? (uint64_t)m.syscalls : 0;
		sys_ops = m.ops;
		sys_known = m.syscalls >= 0 && m.ops > 0;
	}
	if (r < 0) {
		cqwb_gb_skip(st, cqwb_error());
		cqwb_close(s);
		free(h);
		return;
	}
	if (cqwb_close(s) < 0) {
		cqwb_gb_skip(st, "a peer process failed");
		free(h);
		return;
	}
	if (ops > 0) {
		cqwb_gb_items_processed(st, (int64_t)ops);
		cqwb_gb_bytes_processed(st, (int64_t)(ops * c->p.size));
		cqwb_gb_counter(st, "msgs_per_s",
				(double)ops * 1e9 / (double)ns,
				CQWB_GB_DEFAULT);
		cqwb_gb_counter(st, "cpu_us_per_msg",
				(double)cpu / 1e3 / (double)ops,
				CQWB_GB_DEFAULT);
		if (sys_known) {
			cqwb_gb_counter(st, "parent_syscalls_per_msg",
					(double)sys / (double)sys_ops,
					CQWB_GB_DEFAULT);
		}
	}
	if (h->count > 0) {
		cqwb_gb_counter(st, "p50_us", cqwb_hist_quantile(h, 0.5) / 1e3,
				CQWB_GB_DEFAULT);
		cqwb_gb_counter(st, "p99_us", cqwb_hist_quantile(h, 0.99) / 1e3,
				CQWB_GB_DEFAULT);
		cqwb_gb_counter(st, "p999_us",
				cqwb_hist_quantile(h, 0.999) / 1e3,
				CQWB_GB_DEFAULT);
	}
	free(h);
}

/* Every case, to free after the run. */
static struct bcase **cases;
static size_t ncases;

static void
add_case(const struct cqwb_transport *t, const struct cqwb_params *p,
	 const struct cqwb_gb_opts *o)
{
	struct bcase *c = calloc(1, sizeof(*c)), **n;
	size_t len;

	n = realloc(cases, sizeof(*n) * (ncases + 1));
	if (c == NULL || n == NULL) {
		free(c);
		return;
	}
	cases = n;
	cases[ncases++] = c;
	c->t = t;
	c->p = *p;
	c->ops = ops_per_step(p);
	len = (size_t)snprintf(c->name, sizeof(c->name), "%s/%s",
			       cqwb_scn_name(p->scn), t->name);
	if (t->api != NULL) {
		len += (size_t)snprintf(c->name + len, sizeof(c->name) - len,
					"/%s", t->api);
	}
	if (t->mode != NULL) {
		len += (size_t)snprintf(c->name + len, sizeof(c->name) - len,
					"/%s", t->mode);
	}
	if (t->wait != NULL) {
		len += (size_t)snprintf(c->name + len, sizeof(c->name) - len,
					"/%s", t->wait);
	}
	if (cqwb_channel(t) != NULL) {
		len += (size_t)snprintf(c->name + len, sizeof(c->name) - len,
					"/%s", cqwb_channel(t));
	}
	len += (size_t)snprintf(c->name + len, sizeof(c->name) - len,
				"/size:%zu", p->size);
	if (p->scn == CQWB_FANOUT) {
		snprintf(c->name + len, sizeof(c->name) - len,
			 "/workers:%d/inflight:%d", p->workers, p->inflight);
	}
	cqwb_gb_register(c->name, run_case, c, o);
}

static void
add_all(const struct cqwb_params *p, const struct cqwb_gb_opts *o)
{
	const struct cqwb_transport *t;
	const char *why;

	for (t = cqwb_transports; t->name != NULL; t++) {
		if ((t->scns & CQWB_BIT(p->scn)) == 0) {
			continue;
		}
		why = cqwb_unavailable(t, p);
		if (why != NULL) {
			continue;
		}
		add_case(t, p, o);
	}
}

static void
report_skips(void)
{
	const struct cqwb_transport *t;
	char label[96];

	for (t = cqwb_transports; t->name != NULL; t++) {
		const char *why = t->unavailable ? t->unavailable(t) : NULL;

		if (why != NULL) {
			cqwb_label(t, label, sizeof(label));
			fprintf(stderr, "cqwire-bench: skipped %s: %s\n", label,
				why);
		}
	}
}

int
main(int argc, char **argv)
{
	static const size_t rtt_sizes[] = { 64, 1024, 64 << 10, 1 << 20 };
	static const size_t stream_sizes[] = { 64,	 1024,	    16 << 10,
					       64 << 10, 256 << 10, 1 << 20,
					       4 << 20,	 16 << 20 };
	static const size_t smoke_sizes[] = { 64, 1 << 20 };
	static const int workers[] = { 1, 8, 64, 256 };
	static const int inflight[] = { 1, 16 };
	struct cqwb_gb_opts o = { .manual_time = 1, .min_time = 0.2 };
	struct cqwb_params p;
	size_t i, j;
	int k, out = 1;

	for (k = 1; k < argc; k++) {
		if (strcmp(argv[k], "--smoke") == 0) {
			smoke = 1;
		} else if (strcmp(argv[k], "--help") == 0 ||
			   strcmp(argv[k], "-h") == 0) {
			printf("usage: cqwire-bench [--smoke] "
			       "[--benchmark_filter=REGEX] [--benchmark_...]\n"
			       "Google Benchmark suites of cqwire against raw "
			       "system calls, ZeroMQ, nng and Python.\n"
			       "Names: "
			       "SCENARIO/TRANSPORT[/API][/MODE][/WAIT][/pipe]/"
			       "size:N"
			       "[/workers:N/inflight:K]\n"
			       "--smoke  every benchmark, two tiny iterations "
			       "(CI)\n"
			       "--benchmark_list_tests, --benchmark_filter, "
			       "--benchmark_format=json...: Google "
			       "Benchmark's flags\n");
			return 0;
		} else {
			argv[out++] = argv[k];
		}
	}
	argc = out;
	argv[argc] = NULL;
	cqwb_syscalls_setup(0);
	if (smoke) {
		o.iterations = 2;
		o.min_time = 0;
	}
	report_skips();
	memset(&p, 0, sizeof(p));
	p.scn = CQWB_RTT;
	for (i = 0; i < (smoke ? 2 : 4); i++) {
		p.size = smoke ? smoke_sizes[i] : rtt_sizes[i];
		add_all(&p, &o);
	}
	p.scn = CQWB_STREAM;
	for (i = 0; i < (smoke ? 2 : 8); i++) {
		p.size = smoke ? smoke_sizes[i] : stream_sizes[i];
		add_all(&p, &o);
	}
	p.scn = CQWB_FANOUT;
	p.size = 64;
	for (i = 0; i < 4; i++) {
		if (smoke && workers[i] != 8) {
			continue;
		}
		for (j = 0; j < 2; j++) {
			p.workers = workers[i];
			p.inflight = inflight[j];
			add_all(&p, &o);
		}
	}
	k = cqwb_gb_main(argc, argv);
	for (i = 0; i < ncases; i++) {
		free(cases[i]);
	}
	free(cases);
	return k;
}
