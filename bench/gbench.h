/*
 * A small C API over Google Benchmark (C++), so that benchmark bodies are
 * C. gbench.cc is its only implementation and the only C++ in cqwire.
 *
 * A benchmark is a C function called with an opaque state; it loops on
 * cqwb_gb_keep_running() and, with manual time, reports each iteration's
 * time itself (the body times its own work inside the scenario).
 */
#ifndef CQWB_GBENCH_H
#define CQWB_GBENCH_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cqwb_gb_state cqwb_gb_state;
typedef void (*cqwb_gb_fn)(cqwb_gb_state *st, void *arg);

struct cqwb_gb_opts {
	int manual_time;    /* the body calls cqwb_gb_set_iteration_time() */
	int64_t iterations; /* fixed count; 0: let the library choose */
	double min_time;    /* seconds; 0: the library's default */
	int repetitions;    /* 0: one */
};

/* Register fn(state, arg) under name; arg must outlive the run. */
void cqwb_gb_register(const char *name, cqwb_gb_fn fn, void *arg,
		      const struct cqwb_gb_opts *opts);

/* The benchmark loop: 1 while iterations remain. */
int cqwb_gb_keep_running(cqwb_gb_state *st);
void cqwb_gb_set_iteration_time(cqwb_gb_state *st, double seconds);
void cqwb_gb_pause(cqwb_gb_state *st);
void cqwb_gb_resume(cqwb_gb_state *st);
int64_t cqwb_gb_iterations(const cqwb_gb_state *st);

enum {
	CQWB_GB_DEFAULT = 0, /* the value as given */
	CQWB_GB_RATE = 1,    /* divided by the benchmark's time */
	CQWB_GB_AVG = 2,     /* divided by the iterations */
};
void cqwb_gb_counter(cqwb_gb_state *st, const char *name, double value,
		     int kind);
void cqwb_gb_items_processed(cqwb_gb_state *st, int64_t items);
void cqwb_gb_bytes_processed(cqwb_gb_state *st, int64_t bytes);
void cqwb_gb_label(cqwb_gb_state *st, const char *label);
/* End this benchmark with an error; the loop must not run after it. */
void cqwb_gb_skip(cqwb_gb_state *st, const char *why);

/*
 * Initialize with argv (--benchmark_* flags), run what matches, shut
 * down. Returns 0, or 2 for an unknown argument.
 */
int cqwb_gb_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif

#endif
