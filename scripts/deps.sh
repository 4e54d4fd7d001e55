#!/usr/bin/env bash
# Install the Debian packages that a cqwire job needs, or say exactly which
# are missing. Usage: scripts/deps.sh build|perf|win|test
# (win: cross-compiling for Windows with mingw-w64 and running the result
# under wine; dpkg-dev unpacks Debian's cmocka source for it.)
set -euo pipefail

# The library; what the perf tool and bench/ compare against; the tests.
build_pkgs=(gcc make cmake pkg-config libssl-dev liburing-dev)
perf_pkgs=(g++ libbenchmark-dev libzmq3-dev libnng-dev gnuplot-nox python3
	python3-billiard)
test_pkgs=(libcmocka-dev clang-format valgrind iproute2 clang libclang-rt-14-dev
	python3-dev libpython3.11-testsuite python3-setuptools python3-pip python3-billiard)
win_pkgs=(gcc-mingw-w64-x86-64-win32 wine wine64 dpkg-dev)

case "${1:-build}" in
build) want=("${build_pkgs[@]}") ;;
perf) want=("${build_pkgs[@]}" "${perf_pkgs[@]}") ;;
win) want=("${win_pkgs[@]}") ;;
test) want=("${build_pkgs[@]}" "${perf_pkgs[@]}" "${test_pkgs[@]}"
	"${win_pkgs[@]}") ;;
*) echo "usage: $0 build|perf|win|test" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
		grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "cqwire: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
	echo "cqwire: missing Debian packages: ${missing[*]}" >&2
	echo "cqwire: run as root: apt-get install -y ${missing[*]}" >&2
	exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
