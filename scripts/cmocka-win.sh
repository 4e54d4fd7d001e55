#!/usr/bin/env bash
# Fetch Debian's own cmocka source package for the Windows (mingw-w64)
# build, which cannot use Debian's Linux-only libcmocka-dev. Nothing is
# vendored: the source comes from the machine's own Debian mirror (the URIs
# of its apt entry for the release it runs, turned into a deb-src entry in
# a private apt directory under DIR; the system's apt setup is not
# touched), at the version of the installed libcmocka-dev when there is
# one, so that both builds test with the same cmocka.
#
# Usage: scripts/cmocka-win.sh DIR
# Leaves the unpacked tree in DIR/cmocka (DIR/cmocka/src/cmocka.c,
# DIR/cmocka/include/cmocka.h); a second run with the tree present does
# nothing. Needs apt-get and dpkg-source (dpkg-dev), no root.
set -euo pipefail

dir=${1:?usage: $0 DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ -f "$dir/cmocka/.cqw-done" ]; then
	exit 0
fi

for tool in apt-get dpkg-source; do
	if ! command -v "$tool" >/dev/null; then
		echo "cmocka-win: $tool is missing (scripts/deps.sh test)" >&2
		exit 1
	fi
done

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
if [ -z "$codename" ]; then
	echo "cmocka-win: no VERSION_CODENAME in /etc/os-release" >&2
	exit 1
fi

# The mirror and keyring of the machine's entry for $codename: deb822
# stanzas (*.sources) first, then one-line entries (sources.list).
uri=""
keyring=""
for f in /etc/apt/sources.list.d/*.sources; do
	[ -f "$f" ] || continue
	read -r uri keyring < <(awk -v want="$codename" '
	function flush() {
		if (deb && hit && uri != "" && !done) {
			print uri, (key == "" ? "-" : key); done = 1
		}
		deb = 0; hit = 0; uri = ""; key = ""
	}
	/^[ \t]*$/ { flush(); next }
	/^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
	/^URIs:/ { uri = $2 }
	/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == want) hit = 1 }
	/^Signed-By:/ { key = $2 }
	END { flush() }' "$f") || true
	[ -n "$uri" ] && break
done
if [ -z "$uri" ]; then
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		uri=$(awk -v want="$codename" '
		$1 == "deb" {
			i = 2
			if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
			if ($(i + 1) == want) { print $i; exit }
		}' "$f")
		[ -n "$uri" ] && break
	done
	keyring=-
fi
if [ -z "$uri" ]; then
	echo "cmocka-win: no apt entry for $codename to derive a deb-src from" >&2
	exit 1
fi

apt=$dir/apt
rm -rf "$apt"
mkdir -p "$apt/parts" "$apt/lists/partial" "$apt/cache/archives/partial"
if [ "$keyring" != "-" ]; then
	echo "deb-src [signed-by=$keyring] $uri $codename main" >"$apt/sources.list"
else
	echo "deb-src $uri $codename main" >"$apt/sources.list"
fi
opts=(-o "Dir::Etc::SourceList=$apt/sources.list"
	-o "Dir::Etc::SourceParts=$apt/parts"
	-o "Dir::State::Lists=$apt/lists"
	-o "Dir::Cache=$apt/cache"
	-o "Debug::NoLocking=1")
# Root's apt downloads as _apt, which may not write into a build tree.
[ "$(id -u)" -eq 0 ] && opts+=(-o "APT::Sandbox::User=root")

want=cmocka
ver=$(dpkg-query -W -f='${Version}' libcmocka-dev 2>/dev/null || true)
[ -n "$ver" ] && want=cmocka=$ver

apt-get -qq "${opts[@]}" update
work=$dir/fetch
rm -rf "$work" "$dir/cmocka"
mkdir -p "$work"
(cd "$work" && apt-get -qq "${opts[@]}" source "$want" >/dev/null)
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'cmocka-*' | head -n 1)
if [ -z "$src" ] || [ ! -f "$src/src/cmocka.c" ]; then
	echo "cmocka-win: apt-get source $want gave no src/cmocka.c" >&2
	exit 1
fi
mv "$src" "$dir/cmocka"
rm -rf "$work" "$apt"
echo "$want from $uri" >"$dir/cmocka/.cqw-done"
