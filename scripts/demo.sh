#!/usr/bin/env bash
# The main job: build cqwire-perf (release) and measure this machine's
# message passing: cqwire (sync API, and its loop on each backend) against
# raw system calls, epoll, ZeroMQ, nng, Python's multiprocessing and
# billiard, in one interleaved run of about a minute, with the DESIGN §6
# targets marked met or missed. Arguments go to cqwire-perf (--quick,
# --json, --plot DIR, --only rtt|stream|fanout, --backend uring|poll, --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh perf
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DCQW_BUILD_TESTS=OFF \
	-DCQW_BUILD_BENCH=ON >/dev/null
cmake --build build/release -j "$(nproc 2>/dev/null || echo 2)" \
	--target cqwire-perf >/dev/null
exec build/release/tools/perf/cqwire-perf "$@"
