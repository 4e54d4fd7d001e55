#!/usr/bin/env bash
# Run Windows test programs under wine for ctest (the build's
# CMAKE_CROSSCOMPILING_EMULATOR, see cmake/wine.cmake), headless and with
# the three traps of WINDOWS.md avoided:
# - a persistent wineserver and wine's services are started once (--start,
#   a ctest FIXTURES_SETUP test) with their output sent to /dev/null: a
#   service started by a test would inherit the test's output pipe and
#   ctest would wait for it until the timeout;
# - wine's crash debugger is disabled, so a crash is a failing exit status
#   and never a pass;
# - the prefix reports Windows 10 (a new one says Windows 7).
# One prefix per build directory (the caller names it); --start refuses a
# prefix that another live ctest run holds, so two runs never share one.
#
# Usage: wine-run.sh --prefix DIR PROGRAM [ARGS...]   run PROGRAM
#        wine-run.sh --prefix DIR --start             ready DIR, start
#        wine-run.sh --prefix DIR --stop              stop DIR's wineserver
# PROGRAM's exit status is returned as it is (77 for a skip).
set -euo pipefail

if [ "${1:-}" != "--prefix" ] || [ -z "${2:-}" ] || [ -z "${3:-}" ]; then
	echo "usage: $0 --prefix DIR (--start | --stop | PROGRAM [ARGS...])" >&2
	exit 2
fi
mkdir -p "$2"
WINEPREFIX=$(cd "$2" && pwd)
shift 2
export WINEPREFIX
export WINEDEBUG=-all
export WINEDLLOVERRIDES="mscoree,mshtml=;winedbg.exe=d"
export WINEARCH=win64
# No display here: nothing may try to open one.
unset DISPLAY WAYLAND_DISPLAY

# Debian's /usr/bin/wine is a shell wrapper that looks for wine32 first;
# call the 64-bit loader itself.
if command -v wine64 >/dev/null; then
	loader=$(command -v wine64)
elif [ -x /usr/lib/wine/wine64 ]; then
	loader=/usr/lib/wine/wine64
else
	echo "wine-run: no wine64 (scripts/deps.sh test installs it)" >&2
	exit 1
fi
export WINELOADER=$loader
if [ -x /usr/lib/wine/wineserver64 ]; then
	server=/usr/lib/wine/wineserver64
elif [ -x /usr/lib/wine/wineserver ]; then
	server=/usr/lib/wine/wineserver
else
	server=$(command -v wineserver)
fi
export WINESERVER=$server

owner=$WINEPREFIX/.cqw-owner

case "$1" in
--start)
	# The ctest run that starts the fixture is this script's parent.
	if [ -f "$owner" ]; then
		pid=$(cat "$owner")
		if [ "$pid" != "$PPID" ] && kill -0 "$pid" 2>/dev/null; then
			echo "wine-run: $WINEPREFIX is in use by process $pid" \
				"(another ctest run); wait for it, use another" \
				"build directory, or remove $owner if $pid is" \
				"not a ctest run" >&2
			exit 1
		fi
	fi
	echo "$PPID" >"$owner"
	# A server left by a run that died may hold stale state.
	"$server" -k >/dev/null 2>&1 || true
	"$server" -w >/dev/null 2>&1 || true
	"$server" -p </dev/null >/dev/null 2>&1
	if [ ! -f "$WINEPREFIX/.cqw-ready" ]; then
		"$loader" wineboot --init </dev/null >/dev/null 2>&1
		"$loader" reg add 'HKCU\Software\Wine' /v Version /d win10 /f \
			</dev/null >/dev/null 2>&1
		touch "$WINEPREFIX/.cqw-ready"
	else
		# Starts the services (output to /dev/null, see above).
		"$loader" wineboot </dev/null >/dev/null 2>&1
	fi
	ver=$("$loader" reg query 'HKCU\Software\Wine' /v Version \
		</dev/null 2>/dev/null | tr -d '\r' | awk '$1 == "Version" { print $3 }')
	if [ "$ver" != "win10" ]; then
		echo "wine-run: $WINEPREFIX reports \"$ver\", not win10" >&2
		rm -f "$WINEPREFIX/.cqw-ready"
		exit 1
	fi
	exit 0
	;;
--stop)
	# A run refused at --start must not stop the run that holds it.
	if [ -f "$owner" ]; then
		pid=$(cat "$owner")
		if [ "$pid" != "$PPID" ] && kill -0 "$pid" 2>/dev/null; then
			echo "wine-run: $WINEPREFIX belongs to process $pid;" \
				"left running" >&2
			exit 0
		fi
	fi
	"$server" -k >/dev/null 2>&1 || true
	"$server" -w >/dev/null 2>&1 || true
	rm -f "$owner"
	exit 0
	;;
esac

exec "$loader" "$@"
