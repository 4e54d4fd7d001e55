#!/usr/bin/env bash
# The main job: build cqwire (release) and run the round-trip demo, which
# measures cqwire against raw blocking write()/read() in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DCQW_BUILD_TESTS=OFF >/dev/null
cmake --build build/release -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
exec build/release/examples/cqwire-rtt "$@"
