#!/usr/bin/env bash
# Run every libFuzzer target (tests/fuzz/fuzz-*.c) for SECONDS each
# (default 30), seeded with a copy of its corpus and saved regressions, and
# fail if any target finds a crash, a leak, a timeout or a failed invariant.
#
#   scripts/fuzz.sh [SECONDS]
#
# Builds with clang in build/fuzz (-DCQW_FUZZ=ON:
# -fsanitize=fuzzer,address,undefined). Prints per target: runs, coverage
# (cov: edges, ft: features), corpus size and time. Environment:
#   CQW_FUZZ_TARGETS  targets to run (default: all five)
#   CQW_FUZZ_KEEP     a directory to keep the grown corpora and any crash
#                     inputs in (default: a temporary one, removed)
#   CQW_FUZZ_JOBS     libFuzzer worker processes per target (default 1)
#   CQW_FUZZ_ALLOW    known bugs the targets let pass, so that a run looks
#                     past them (words of tests/fuzz/known; default "":
#                     none is open, everything is checked)
# A long manual run: CQW_FUZZ_KEEP=build/fuzz-out scripts/fuzz.sh 3600;
# then add new crash inputs to tests/fuzz/regress/<target>/ with their fix.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${1:-30}
targets=${CQW_FUZZ_TARGETS:-frame auth-server auth-client address recv}
jobs=${CQW_FUZZ_JOBS:-1}
export CQW_FUZZ_ALLOW=${CQW_FUZZ_ALLOW-}
build=$root/build/fuzz

case $secs in
'' | *[!0-9]*)
	echo "usage: $0 [SECONDS]" >&2
	exit 2
	;;
esac

# Longest input worth trying per target.
max_len() {
	case $1 in
	recv) echo 4096 ;;
	*) echo 1024 ;;
	esac
}

echo "==== build (clang, libFuzzer) in build/fuzz"
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang \
	-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCQW_WERROR=ON -DCQW_FUZZ=ON \
	-DCQW_BUILD_TOOLS=ON \
	>/dev/null
bins=()
for t in $targets; do
	bins+=("fuzz-$t")
done
cmake --build "$build" -j 2 --target "${bins[@]}" >/dev/null

if [ -n "${CQW_FUZZ_KEEP:-}" ]; then
	work=$(mkdir -p "$CQW_FUZZ_KEEP" && cd "$CQW_FUZZ_KEEP" && pwd)
else
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
fi

failed=()
printf '\n%-12s %10s %8s %8s %14s %6s %s\n' target runs cov ft corpus secs result
for t in $targets; do
	dir=$work/$t
	mkdir -p "$dir/corpus"
	# Seeds: the corpus and the regressions (never written back to).
	for src in tests/fuzz/corpus/$t tests/fuzz/regress/$t; do
		find "$src" -maxdepth 1 -type f ! -name '.*' \
			-exec cp {} "$dir/corpus/" \;
	done
	opts=()
	if [ -f "tests/fuzz/$t.dict" ]; then
		opts+=(-dict="tests/fuzz/$t.dict")
	fi
	if [ "$jobs" -gt 1 ]; then
		# Workers write fuzz-N.log; their status lines end up there.
		opts+=(-jobs="$jobs" -workers="$jobs")
	fi
	start=$(date +%s)
	rc=0
	"$build/tests/fuzz-$t" -max_total_time="$secs" -timeout=10 \
		-max_len="$(max_len "$t")" -malloc_limit_mb=64 \
		-rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$dir/" "${opts[@]}" \
		"$dir/corpus" >"$dir/log" 2>&1 || rc=$?
	took=$(($(date +%s) - start))
	# The last status line: "#RUNS ... cov: N ft: N corp: N/Nb ...".
	line=$(cat "$dir/log" "$dir"/fuzz-*.log 2>/dev/null |
		grep -E '^#[0-9]+' | tail -n 1 || true)
	runs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$line")
	cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$line")
	ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$line")
	corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$line")
	result=ok
	if [ "$rc" -ne 0 ]; then
		result="FAILED (rc $rc)"
		failed+=("$t")
	fi
	printf '%-12s %10s %8s %8s %14s %6s %s\n' "$t" "${runs:--}" \
		"${cov:--}" "${ft:--}" "${corp:--}" "$took" "$result"
	if [ "$rc" -ne 0 ]; then
		grep -E 'ERROR|invariant failed|SUMMARY|Test unit written' \
			"$dir/log" | head -n 20 | sed 's/^/    /'
		if [ -z "${CQW_FUZZ_KEEP:-}" ]; then
			mkdir -p "$build/artifacts/$t"
			find "$dir" -maxdepth 1 -type f \
				\( -name 'crash-*' -o -name 'leak-*' -o \
				-name 'timeout-*' -o -name 'oom-*' \) \
				-exec cp {} "$build/artifacts/$t/" \;
			cp "$dir/log" "$build/artifacts/$t/log"
			echo "    inputs and log kept in build/fuzz/artifacts/$t"
		fi
	fi
done

if [ "${#failed[@]}" -gt 0 ]; then
	echo "fuzz: failures in: ${failed[*]}"
	exit 1
fi
echo "fuzz: all targets ran ${secs}s each without a failure"
