/*
 * The C API of gbench.h over Google Benchmark 1.7. The state handed to C
 * is benchmark::State itself, cast to an opaque type.
 */
#include <benchmark/benchmark.h>

#include "gbench.h"

namespace
{

benchmark::State &
st(cqwb_gb_state *s)
{
	return *reinterpret_cast<benchmark::State *>(s);
}

const benchmark::State &
st(const cqwb_gb_state *s)
{
	return *reinterpret_cast<const benchmark::State *>(s);
}

} // namespace

extern "C" {

void
cqwb_gb_register(const char *name, cqwb_gb_fn fn, void *arg,
		 const struct cqwb_gb_opts *opts)
{
	benchmark::internal::Benchmark *b =
	    benchmark::RegisterBenchmark(name, [fn, arg](benchmark::State &s) {
		    fn(reinterpret_cast<cqwb_gb_state *>(&s), arg);
	    });

	if (opts == nullptr) {
		return;
	}
	if (opts->manual_time) {
		b->UseManualTime();
	}
	if (opts->iterations > 0) {
		b->Iterations(opts->iterations);
	}
	if (opts->min_time > 0) {
		b->MinTime(opts->min_time);
	}
	if (opts->repetitions > 0) {
		b->Repetitions(opts->repetitions);
	}
	b->Unit(benchmark::kMicrosecond);
}

int
cqwb_gb_keep_running(cqwb_gb_state *s)
{
	return st(s).KeepRunning() ? 1 : 0;
}

void
cqwb_gb_set_iteration_time(cqwb_gb_state *s, double seconds)
{
	st(s).SetIterationTime(seconds);
}

void
cqwb_gb_pause(cqwb_gb_state *s)
{
	st(s).PauseTiming();
}

void
cqwb_gb_resume(cqwb_gb_state *s)
{
	st(s).ResumeTiming();
}

int64_t
cqwb_gb_iterations(const cqwb_gb_state *s)
{
	return static_cast<int64_t>(st(s).iterations());
}

void
cqwb_gb_counter(cqwb_gb_state *s, const char *name, double value, int kind)
{
	benchmark::Counter::Flags f = benchmark::Counter::kDefaults;

	if (kind == CQWB_GB_RATE) {
		f = benchmark::Counter::kIsRate;
	} else if (kind == CQWB_GB_AVG) {
		f = benchmark::Counter::kAvgIterations;
	}
	st(s).counters[name] = benchmark::Counter(value, f);
}

void
cqwb_gb_items_processed(cqwb_gb_state *s, int64_t items)
{
	st(s).SetItemsProcessed(items);
}

void
cqwb_gb_bytes_processed(cqwb_gb_state *s, int64_t bytes)
{
	st(s).SetBytesProcessed(bytes);
}

void
cqwb_gb_label(cqwb_gb_state *s, const char *label)
{
	st(s).SetLabel(label);
}

void
cqwb_gb_skip(cqwb_gb_state *s, const char *why)
{
	st(s).SkipWithError(why);
}

int
cqwb_gb_main(int argc, char **argv)
{
	benchmark::Initialize(&argc, argv);
	if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
		return 2;
	}
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	return 0;
}

} // extern "C"
