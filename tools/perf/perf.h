/*
 * cqwire-perf's run: groups of cases (one scenario at one size and fan-out
 * shape, every transport measured in it), their rounds, and what the
 * report, the JSON document and the plots are made from.
 */
#ifndef CQW_PERF_H
#define CQW_PERF_H

#include <stdio.h>

#include "scenario.h"

#define PERF_MAX_ROUNDS 15

struct perf_case {
	const struct cqwb_transport *t;
	char label[96];
	/* Per round. */
	int nrounds;
	double p50[PERF_MAX_ROUNDS];  /* us */
	double mps[PERF_MAX_ROUNDS];  /* operations per second */
	double cpu[PERF_MAX_ROUNDS];  /* us of CPU (all processes) per op */
	double pcpu[PERF_MAX_ROUNDS]; /* us of parent CPU per op */
	double sys[PERF_MAX_ROUNDS];  /* parent system calls per op */
	double rss[PERF_MAX_ROUNDS];  /* parent (server) RSS after, KiB */
	double wcsw[PERF_MAX_ROUNDS]; /* peers' voluntary switches per op */
	int nwcsw;		      /* rounds that counted them */
	int nsys;		      /* rounds that counted them */
	uint64_t samples;
	struct cqwb_hist *hist; /* every round's latencies, merged */
	int failed;
	char why[200];
	char note[96]; /* io_uring: the ring's setup flags (and any fallback) */
	/* Results: medians of the rounds (tails from the merged histogram). */
	int done;
	double r_p50, r_p99, r_p999; /* us; NAN when absent */
	double r_mps, r_bps, r_cpu, r_pcpu, r_sys, r_rss, r_wcsw;
	/* (max - min) / median of the rounds' msgs/s; NAN under 2 rounds */
	double r_spread;
};

struct perf_group {
	struct cqwb_params p;
	struct perf_case *cases;
	int ncases;
	uint64_t warm_ns, measure_ns;
};

struct perf_skip {
	char label[96];
	const char *why;
};

struct perf_run {
	struct perf_group *groups;
	int ngroups;
	struct perf_skip *skips;
	int nskips;
	int quick;
	int rounds;
	double seconds; /* wall time of the whole run */
	/* Machine. */
	char cpu_model[128];
	int cpus;
	char kernel[200];
	char os[128];
	char date[32];
	char python[64];
	char zeromq[32];
	char nng[32];
	const char *syscalls_why; /* NULL if counted */
	char uring[160];	  /* "available" or why not */
	char backend[16];	  /* what cqw_loop_new(NULL) picks here */
	const char *placement;
	double load1; /* load average when the run began */
};

/* "64 B", "1 KiB", "16 MiB". */
const char *perf_size_str(size_t size, char *buf, size_t len);

/* report.c */
void perf_print_table(FILE *f, const struct perf_run *run);
void perf_print_targets(FILE *f, const struct perf_run *run);
void perf_print_json(FILE *f, const struct perf_run *run);

/* plot.c: PNG charts with gnuplot; 0, or -1 with the reason printed. */
int perf_plot(const struct perf_run *run, const char *dir);

/* Find a finished case (NULL if not measured). */
const struct perf_case *perf_find(const struct perf_run *run, enum cqwb_scn scn,
				  size_t size, int workers, int inflight,
				  const char *name, const char *api,
				  const char *mode, const char *wait);

#endif
