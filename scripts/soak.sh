#!/usr/bin/env bash
# The long soak (tests/soak/): 10 M messages over 64 connections, both
# backends at once (unless --backend or CQW_BACKEND picks one), peers
# killed and restarted at random, every message checked. Builds
# build/soak (RelWithDebInfo) first if needed; extra arguments go to the
# soak program and override the defaults, e.g.
#   scripts/soak.sh --messages 50000000 --conns 128 --seed 7 --json
# Prints progress on stderr and the summary table on stdout; exits 0 only
# if nothing was lost, duplicated, reordered or torn and no descriptor
# leaked.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${CQW_SOAK_BUILD:-build/soak}
jobs=${CQW_JOBS:-2}

if [ ! -f "$dir/CMakeCache.txt" ]; then
	cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DBUILD_SHARED_LIBS=ON -DCQW_WERROR=ON >/dev/null
fi
cmake --build "$dir" -j "$jobs" --target soak >/dev/null
echo "soak: $dir/tests/soak --messages 10000000 --conns 64 $*" >&2
exec "$dir/tests/soak" --messages 10000000 --conns 64 "$@"
