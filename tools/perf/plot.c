/*
 * --plot DIR: the figures as PNG charts drawn by gnuplot (gnuplot-nox):
 *
 *   rtt-latency.png       the 64 B round-trip latency distribution of each
 *                         transport (percentile spectrum, HDR style)
 *   stream-throughput.png MB/s against message size, one line a transport
 *   fanout-scaling.png    responses/s against the number of workers, for
 *                         K = 1 and K = 16 requests in flight
 *
 * The data (*.dat) and the script (plots.gp) stay in DIR, so the charts
 * can be redrawn or restyled without measuring again.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "perf.h"

#define TERM "set terminal pngcairo size 860,520 font ',10' noenhanced\n"

/* Percentiles 50% .. 99.99%, as far as the samples reach. */
static void
spectrum(FILE *d, const struct cqwb_hist *h)
{
	double x;

	for (x = 0.30103; x <= 4.0001; x += 0.05) {
		double q = 1 - pow(10, -x);

		if ((1 - q) * (double)h->count < 1) {
			break;
		}
		fprintf(d, "%.6g %.6g\n", 1 / (1 - q),
			cqwb_hist_quantile(h, q) / 1e3);
	}
}

static int
rtt_chart(const struct perf_run *run, const char *dir, FILE *gp)
{
	char path[4096];
	int g, k, n = 0;
	FILE *d;

	snprintf(path, sizeof(path), "%s/rtt-latency.dat", dir);
	d = fopen(path, "w");
	if (d == NULL) {
		return -errno;
	}
	fprintf(gp,
		TERM "set output '%s/rtt-latency.png'\n"
		     "set title 'Round trip, 64 B: latency by percentile "
		     "(all rounds pooled)'\n"
		     "set logscale xy\nset grid\nset key outside right\n"
		     "set xlabel 'percentile'\nset ylabel 'us'\n"
		     "set xtics ('50%%%%' 2, '90%%%%' 10, '99%%%%' 100, "
		     "'99.9%%%%' 1000, '99.99%%%%' 10000)\nplot ",
		dir);
	for (g = 0; g < run->ngroups; g++) {
		const struct perf_group *gr = &run->groups[g];

		if (gr->p.scn != CQWB_RTT || gr->p.size != 64) {
			continue;
		}
		for (k = 0; k < gr->ncases; k++) {
			const struct perf_case *c = &gr->cases[k];

			if (!c->done || c->hist->count < 2) {
				continue;
			}
			fprintf(d, "# %s\n", c->label);
			spectrum(d, c->hist);
			fprintf(d, "\n\n");
			fprintf(gp,
				"%s'%s' index %d using 1:2 with lines lw 2 "
				"lt %d dt %d title '%s'",
				n ? ", \\\n     " : "", path, n, n % 8 + 1,
				n / 8 + 1, c->label);
			n++;
		}
	}
	fprintf(gp, n ? "\nunset xtics\nset xtics auto\n"
		      : "0 notitle\nset xtics auto\n");
	fclose(d);
	return 0;
}

/* One block per label, x = what, y = value. */
static int
series_chart(const struct perf_run *run, const char *dir, FILE *gp,
	     enum cqwb_scn scn, int inflight, const char *name)
{
	char path[4096], labels[64][96];
	int g, k, i, nl = 0;
	FILE *d;

	snprintf(path, sizeof(path), "%s/%s.dat", dir, name);
	d = fopen(path, "w");
	if (d == NULL) {
		return -errno;
	}
	/* The labels, in the order they first appear. */
	for (g = 0; g < run->ngroups; g++) {
		const struct perf_group *gr = &run->groups[g];

		if (gr->p.scn != scn ||
		    (inflight && gr->p.inflight != inflight)) {
			continue;
		}
		for (k = 0; k < gr->ncases; k++) {
			for (i = 0; i < nl; i++) {
				if (strcmp(labels[i], gr->cases[k].label) ==
				    0) {
					break;
				}
			}
			if (i == nl && nl < 64) {
				snprintf(labels[nl++], sizeof(labels[0]), "%s",
					 gr->cases[k].label);
			}
		}
	}
	for (i = 0; i < nl; i++) {
		fprintf(d, "# %s\n", labels[i]);
		for (g = 0; g < run->ngroups; g++) {
			const struct perf_group *gr = &run->groups[g];

			if (gr->p.scn != scn ||
			    (inflight && gr->p.inflight != inflight)) {
				continue;
			}
			for (k = 0; k < gr->ncases; k++) {
				const struct perf_case *c = &gr->cases[k];

				if (!c->done || strcmp(c->label, labels[i])) {
					continue;
				}
				if (scn == CQWB_STREAM) {
					fprintf(d, "%zu %.6g\n", gr->p.size,
						c->r_bps / 1e6);
				} else {
					fprintf(d, "%d %.6g\n", gr->p.workers,
						c->r_mps / 1e3);
				}
			}
		}
		fprintf(d, "\n\n");
	}
	fclose(d);
	for (i = 0; i < nl; i++) {
		fprintf(gp,
			"%s'%s' index %d using 1:2 with linespoints lw 2 "
			"lt %d dt %d title '%s'",
			i ? ", \\\n     " : "plot ", path, i, i % 8 + 1,
			i / 8 + 1, labels[i]);
	}
	fprintf(gp, nl ? "\n" : "plot 0 notitle\n");
	return 0;
}

/* x tics at the measured stream sizes, named in binary units. */
static void
size_tics(const struct perf_run *run, FILE *gp)
{
	char sz[32];
	int g, n = 0;

	fprintf(gp, "set xtics (");
	for (g = 0; g < run->ngroups; g++) {
		if (run->groups[g].p.scn != CQWB_STREAM) {
			continue;
		}
		perf_size_str(run->groups[g].p.size, sz, sizeof(sz));
		fprintf(gp, "%s'%s' %zu", n++ ? ", " : "", sz,
			run->groups[g].p.size);
	}
	fprintf(gp, n ? ")\n" : "'' 1)\n");
}

int
perf_plot(const struct perf_run *run, const char *dir)
{
	char path[4096];
	int status, r;
	pid_t pid;
	FILE *gp;

	if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
		fprintf(stderr, "cqwire-perf: --plot %s: %s\n", dir,
			strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/plots.gp", dir);
	gp = fopen(path, "w");
	if (gp == NULL) {
		fprintf(stderr, "cqwire-perf: %s: %s\n", path, strerror(errno));
		return -1;
	}
	fprintf(gp, "# cqwire-perf charts: gnuplot %s\n", path);
	r = rtt_chart(run, dir, gp);
	fprintf(gp,
		"reset\n" TERM "set output '%s/stream-throughput.png'\n"
		"set title 'One-way stream: throughput by message size'\n"
		"set logscale xy\nset grid\nset key outside right\n"
		"set xlabel 'message size'\n"
		"set ylabel 'MB/s (payload)'\n",
		dir);
	size_tics(run, gp);
	if (r == 0) {
		r = series_chart(run, dir, gp, CQWB_STREAM, 0,
				 "stream-throughput");
	}
	fprintf(gp,
		"reset\n" TERM "set output '%s/fanout-scaling.png'\n"
		"set multiplot layout 1,2 title 'Fan-out, 64 B "
		"request/response: one parent, N workers'\n"
		"set logscale x 2\nset grid\nset key below "
		"font ',8'\nset xlabel 'workers'\n"
		"set ylabel 'k responses/s'\nset yrange [0:*]\n"
		"set title 'K = 1 in flight per worker'\n",
		dir);
	if (r == 0) {
		r = series_chart(run, dir, gp, CQWB_FANOUT, 1, "fanout-k1");
	}
	fprintf(gp, "set title 'K = 16 in flight per worker'\n");
	if (r == 0) {
		r = series_chart(run, dir, gp, CQWB_FANOUT, 16, "fanout-k16");
	}
	fprintf(gp, "unset multiplot\n");
	fclose(gp);
	if (r < 0) {
		fprintf(stderr, "cqwire-perf: --plot %s: %s\n", dir,
			strerror(-r));
		return -1;
	}
	pid = fork();
	if (pid == 0) {
		execlp("gnuplot", "gnuplot", path, (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid) {
		return -1;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
		fprintf(stderr,
			"cqwire-perf: charts not drawn: gnuplot not "
			"found (apt-get install gnuplot-nox); data and "
			"script are in %s\n",
			dir);
		return -1;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "cqwire-perf: gnuplot failed on %s\n", path);
		return -1;
	}
	return 0;
}
