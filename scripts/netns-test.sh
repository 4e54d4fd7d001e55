#!/usr/bin/env bash
# A real network path: cqwire and Python's multiprocessing.connection over
# the kernel's TCP between two network namespaces, through a link with
# delay, loss and reordering.
#
#   scripts/netns-test.sh [--short] [--build DIR] [--echo PATH]
#                         [--netem PATH] [--py-legacy PATH]
#                         [--py-sha256 PATH] [--seed N]
#
# For each condition (clean; 1 ms one-way delay; 1 ms + 1% loss + 1%
# reordering) it makes two namespaces, joins them with netem-tun (two TUN
# devices and a user-space forwarder: the kernel here may lack the netem
# qdisc, TUN it has), and runs:
#   py->cqwire  cqwire-echo serve in namespace a, a Python client in b:
#               messages of 0 B .. 1 MiB with sequence numbers and CRC-32,
#               several in flight, every echo compared byte for byte; then
#               64 B ping-pongs timed by the client (RTT p50/p99).
#   cqwire->py  a Python Listener in b checking every message, and
#               cqwire-echo call in a, one connection per size; a 64 B run
#               gives cqwire's mean round trip (wall time / count).
# both with authentication, once per Python authentication form found:
# legacy MD5 (Python < 3.12) and {sha256} (3.12+). It checks that the
# delayed round trip is at least twice the one-way delay (and not absurdly
# more), that the lossy link really lost and held back packets and that
# TCP retransmitted, prints a summary table, and exits 0 only if every
# message came back intact. Addresses are 10.77.0.1/30 and 10.77.0.2/30,
# inside the two namespaces only; everything made is removed on the way
# out, however the run ends.
#
# The run is bounded (180 s with --short, 1500 s without, against about
# 20 s and 4 minutes on an idle machine; each step has its own timeout)
# and says which step it was in if stopped.
#
# --short (CI, under a minute) sends fewer messages. Binaries come from
# --build DIR (default build/dev: tools/cqwire-echo, tests/netem-tun) or
# --echo/--netem. Python: the first 3.9-3.11 on PATH or under pyenv for
# the legacy form, the newest 3.12+ under pyenv for {sha256}; a form with
# no interpreter is reported as skipped.
#
# Exit status: 0 all intact, 1 a failure, 2 bad usage, 77 cannot run here
# (not root, no namespaces, no TUN), with the reason on stdout.
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
args=("$@")
short=0
build=""
echo_bin=""
netem_bin=""
py_legacy=""
py_sha=""
seed=1

usage() {
	sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
	case "$1" in
	--short) short=1 ;;
	--build) build=${2:?}; shift ;;
	--echo) echo_bin=${2:?}; shift ;;
	--netem) netem_bin=${2:?}; shift ;;
	--py-legacy) py_legacy=${2:?}; shift ;;
	--py-sha256) py_sha=${2:?}; shift ;;
	--seed) seed=${2:?}; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "netns-test: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
[[ $seed =~ ^[0-9]+$ ]] || { echo "netns-test: --seed N" >&2; exit 2; }

skip() {
	echo "SKIP netns-test: $*"
	exit 77
}

# The whole run is bounded. Re-run under timeout(1), which signals the
# whole process group: the children die, and the EXIT trap below still
# removes the namespaces (a SIGKILL from outside would leave them). The
# inner timeouts use --foreground to stay in that group.
limit=$((short ? 180 : 1500))
if [[ -z ${CQW_NETNS_BOUNDED:-} ]]; then
	export CQW_NETNS_BOUNDED=1
	timeout --kill-after=10 "$limit" "$BASH" "$0" "${args[@]}" &
	tpid=$!
	# Ctrl-C or a TERM here goes on to the run (timeout(1) passes it to
	# its whole group), which cleans up; then wait for it to finish.
	trap 'kill -TERM $tpid 2>/dev/null' INT TERM
	while :; do
		wait "$tpid"
		rc=$?
		kill -0 "$tpid" 2>/dev/null || break
	done
	if [[ $rc == 124 || $rc == 137 ]]; then
		echo "FAIL netns-test: over the ${limit}s limit" >&2
		exit 1
	fi
	exit "$rc"
fi

[[ $(id -u) == 0 ]] || skip "not root (network namespaces need it)"
command -v ip >/dev/null || skip "no ip(8) (iproute2)"
[[ -c /dev/net/tun ]] || skip "no /dev/net/tun (TUN devices)"
for t in timeout awk nstat; do
	command -v $t >/dev/null || skip "no $t"
done

build=${build:-$here/build/dev}
echo_bin=$(realpath -- "${echo_bin:-$build/tools/cqwire-echo}")
netem_bin=$(realpath -- "${netem_bin:-$build/tests/netem-tun}")
peer=$here/tests/netns/peer.py
for b in "$echo_bin" "$netem_bin"; do
	if [[ ! -x $b ]]; then
		echo "FAIL netns-test: $b is not built (cmake --build $build)" >&2
		exit 1
	fi
done

# "MAJOR.MINOR EXECUTABLE" of a Python, or nothing.
py_info() {
	"$1" -c 'import sys; print("%d.%d" % sys.version_info[:2],
	    sys.executable)' 2>/dev/null
}
# 1 if version $1 >= $2.
ver_ge() {
	awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, "."); split(b, y, ".");
	    print (x[1] > y[1] || (x[1] == y[1] && x[2] >= y[2])) ? 1 : 0 }'
}
find_pythons() {
	local c info v e cands=() root
	cands+=("$(command -v python3 || true)" /usr/bin/python3)
	if root=$(pyenv root 2>/dev/null); then
		while IFS= read -r c; do
			cands+=("$c")
		done < <(printf '%s\n' "$root"/versions/3.*/bin/python3 |
			sort -V)
	fi
	for c in "${cands[@]}"; do
		[[ -n $c && -x $c ]] || continue
		info=$(py_info "$c") || continue
		v=${info%% *}
		e=${info#* }
		if [[ $(ver_ge "$v" 3.12) == 1 ]]; then
			auto_sha=$e # the newest wins: the list is sorted
		elif [[ $(ver_ge "$v" 3.9) == 1 && -z $auto_legacy ]]; then
			auto_legacy=$e
		fi
	done
}
auto_legacy=""
auto_sha=""
find_pythons
py_legacy=${py_legacy:-$auto_legacy}
py_sha=${py_sha:-$auto_sha}
forms=()
pys=()
notes=()
if [[ -n $py_legacy ]]; then
	forms+=(md5)
	pys+=("$py_legacy")
else
	notes+=("SKIP legacy MD5 form: no Python 3.9-3.11 found")
fi
if [[ -n $py_sha ]]; then
	forms+=(sha256)
	pys+=("$py_sha")
else
	notes+=("SKIP {sha256} form: no Python 3.12+ found (pyenv root)")
fi
[[ ${#pys[@]} -gt 0 ]] || skip "no Python 3.9+ found"

# cqwire-echo call runs, one connection each: "SIZE COUNT" (the count
# scaled by c_scale); then a timed run of c_ping_count x 64 B.
if [[ $short == 1 ]]; then
	py_msgs=40 py_pings=200 c_scale=1 step_t=45
	c_plan=("0 5" "64 20" "1461 5" "16385 3" "100000 2" "1048576 1")
else
	py_msgs=400 py_pings=2000 c_scale=10 step_t=300
	c_plan=("0 5" "1 5" "64 50" "1000 5" "1460 5" "1461 5" "16384 3"
		"16385 3" "65536 2" "100000 2" "262144 1" "1048576 1")
fi
c_ping=64
c_ping_count=$((100 * c_scale))

work=$(mktemp -d "${TMPDIR:-/tmp}/cqw-netns.XXXXXX")
ns_a=cqwnet-$$-a
ns_b=cqwnet-$$-b
pids=()
export CQW_NETNS_KEY
CQW_NETNS_KEY=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

# Stop what we started (by pid), then remove the namespaces and links.
stop_all() {
	local p
	for p in "${pids[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null
	done
	pids=()
	for ns in "$ns_a" "$ns_b"; do
		if [[ -e /run/netns/$ns ]]; then
			for p in $(ip netns pids "$ns" 2>/dev/null); do
				kill -KILL "$p" 2>/dev/null
			done
			ip netns del "$ns" 2>/dev/null
		fi
	done
}
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	stop_all
	rm -rf "$work"
}
# What is running now and its log, said when the run is stopped.
step=starting
step_log=/dev/null
step_t0=0
# shellcheck disable=SC2317 # called by the INT and TERM traps
stopped() {
	echo "FAIL netns-test: stopped during $step (for" \
		"$((SECONDS - step_t0)) s of ${SECONDS} s); its log ends:" >&2
	tail -5 "$step_log" >&2
	exit "$1"
}
trap cleanup EXIT
trap 'stopped 130' INT
trap 'stopped 143' TERM

failures=0
fail() {
	echo "FAIL netns-test: $*" >&2
	failures=$((failures + 1))
}

# Wait (bounded) until file $1 has a line matching $2; print that line.
wait_line() {
	local i
	for ((i = 0; i < 200; i++)); do
		if grep -m1 -- "$2" "$1" 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	return 1
}

# value of key $2 in "k=v k=v" line $1
field() {
	local kv
	for kv in $1; do
		if [[ ${kv%%=*} == "$2" ]]; then
			echo "${kv#*=}"
			return
		fi
	done
	echo 0
}

# The link for one condition: namespaces, netem-tun, addresses.
make_link() {
	local name=$1 delay=$2 loss=$3 reorder=$4 rc
	ip netns add "$ns_a" 2>"$work/err" ||
		skip "cannot create network namespaces: $(cat "$work/err")"
	ip netns add "$ns_b" 2>"$work/err" ||
		skip "cannot create network namespaces: $(cat "$work/err")"
	timeout --foreground $((limit + 10)) "$netem_bin" \
		--ns-a "$ns_a" --ns-b "$ns_b" --delay-us "$delay" \
		--loss "$loss" --reorder "$reorder" --reorder-extra-us 2000 \
		--seed "$seed" --timeout-s "$limit" \
		>"$work/$name.link" 2>&1 &
	link_pid=$!
	pids+=("$link_pid")
	if ! wait_line "$work/$name.link" '^ready' >/dev/null; then
		wait "$link_pid"
		rc=$?
		if [[ $rc == 77 ]]; then
			skip "cannot make TUN devices in namespaces:" \
				"$(cat "$work/$name.link")"
		fi
		echo "FAIL netns-test: netem-tun did not start:" \
			"$(cat "$work/$name.link")" >&2
		exit 1
	fi
	local side ns dev ip4 v
	for side in "$ns_a cqwt0 10.77.0.1" "$ns_b cqwt1 10.77.0.2"; do
		read -r ns dev ip4 <<<"$side"
		# No IPv6 if the kernel has it: only our TCP on the link.
		for v in all default; do
			ip netns exec "$ns" sh -c "echo 1 \
			    >/proc/sys/net/ipv6/conf/$v/disable_ipv6" 2>/dev/null
		done
		if ! { ip -n "$ns" link set lo up &&
			ip -n "$ns" link set "$dev" txqueuelen 1000 &&
			ip -n "$ns" addr add "$ip4/30" dev "$dev" &&
			ip -n "$ns" link set "$dev" up; }; then
			echo "FAIL netns-test: cannot configure $dev in $ns" >&2
			exit 1
		fi
	done
}

# Stop the link; link_stats="lost held other", summed over both
# directions (other: dropped for want of room, in netem-tun's queue or in
# the TUN device's, or refused by the receiving device).
stop_link() {
	local name=$1 line lost=0 held=0 other=0 side ns dev v
	for side in "$ns_a cqwt0" "$ns_b cqwt1"; do
		read -r ns dev <<<"$side"
		v=$(ip netns exec "$ns" cat \
			"/sys/class/net/$dev/statistics/tx_dropped" 2>/dev/null)
		other=$((other + ${v:-0}))
	done
	step="$name: stopping netem-tun"
	step_t0=$SECONDS
	step_log=$work/$name.link
	kill -TERM "$link_pid" 2>/dev/null
	wait "$link_pid"
	v=$?
	if [[ $v != 0 ]]; then
		fail "$name: netem-tun exited with $v: $(cat "$work/$name.link")"
	fi
	while read -r line; do
		lost=$((lost + $(field "$line" lost)))
		held=$((held + $(field "$line" held)))
		other=$((other + $(field "$line" overflow) + $(field "$line" werr)))
	done < <(grep '^stats' "$work/$name.link")
	link_stats="$lost $held $other"
}

# The kernel's TCP counters, summed over both namespaces: "segments
# retransmitted, tail-loss probes sent, segments queued out of order".
tcp_counters() {
	local ns c v out=""
	for c in TcpRetransSegs TcpExtTCPLossProbes TcpExtTCPOFOQueue; do
		v=0
		for ns in "$ns_a" "$ns_b"; do
			v=$((v + $(ip netns exec "$ns" nstat -asz "$c" |
				awk -v c="$c" '$1 == c { n = $2 }
				    END { print n + 0 }')))
		done
		out+="$v "
	done
	echo "$out"
}

rows=()
cond_notes=()
declare -A p50_of min_of mean_of

# Python client against cqwire-echo serve. Appends a row.
py_to_cqwire() {
	local name=$1 form=$2 py=$3 res rc
	step="$name: Python client ($form)"
	step_t0=$SECONDS
	step_log=$work/$name.$form.client
	timeout --foreground "$step_t" ip netns exec "$ns_b" "$py" "$peer" \
		client "$addr_serve" --key-env CQW_NETNS_KEY --messages "$py_msgs" \
		--pings "$py_pings" --seed "$seed" --timeout "$step_t" \
		>"$work/$name.$form.client" 2>&1
	rc=$?
	res=$(grep '^RESULT' "$work/$name.$form.client")
	if [[ $rc != 0 || -z $res ]]; then
		fail "$name py->cqwire $form: exit $rc:" \
			"$(cat "$work/$name.$form.client")"
	fi
	local m b i p50 p99 mn
	m=$(field "$res" messages)
	b=$(field "$res" bytes)
	i=$(field "$res" intact)
	mn=$(field "$res" rtt_min_us)
	p50=$(field "$res" rtt_p50_us)
	p99=$(field "$res" rtt_p99_us)
	local intact=all
	if [[ $rc != 0 || $i != "$m" || $m == 0 ]]; then
		intact="NO:$i/$m"
		fail "$name py->cqwire $form: $i/$m intact"
	fi
	local times
	times="$(us_ms "$mn") $(us_ms "$p50") $(us_ms "$p99")"
	rows+=("$name py->cqwire $form $m $b $intact $times -")
	p50_of[$name.$form]=$p50
	min_of[$name.$form]=$mn
}

us_ms() {
	awk -v u="$1" 'BEGIN { printf "%.3f", u / 1000 }'
}

# cqwire-echo call against a Python Listener. Appends a row.
cqwire_to_py() {
	local name=$1 form=$2 py=$3 addr conns=$((${#c_plan[@]} + 1))
	local m=0 b=0 size count rc t0 t1 mean=- served
	timeout --foreground "$step_t" ip netns exec "$ns_b" "$py" "$peer" \
		server 10.77.0.2 --key-env CQW_NETNS_KEY --conns "$conns" \
		--timeout "$step_t" >"$work/$name.$form.server" 2>&1 &
	local spid=$!
	pids+=("$spid")
	addr=$(wait_line "$work/$name.$form.server" '^LISTENING') || {
		fail "$name cqwire->py $form: no listener:" \
			"$(cat "$work/$name.$form.server")"
		rows+=("$name cqwire->py $form 0 0 NO - - - -")
		return
	}
	addr=${addr#LISTENING }
	for entry in "${c_plan[@]}" "$c_ping $c_ping_count"; do
		read -r size count <<<"$entry"
		[[ $entry == "$c_ping $c_ping_count" ]] || count=$((count * c_scale))
		step="$name: cqwire-echo call --size $size --count $count ($form)"
		step_t0=$SECONDS
		step_log=$work/$name.$form.call
		t0=$(date +%s%N)
		timeout --foreground "$step_t" ip netns exec "$ns_a" \
			"$echo_bin" call "$addr" --authkey-env CQW_NETNS_KEY \
			--count "$count" --size "$size" \
			>>"$work/$name.$form.call" 2>&1
		rc=$?
		t1=$(date +%s%N)
		if [[ $rc != 0 ]]; then
			fail "$name cqwire->py $form: call --size $size" \
				"--count $count: exit $rc:" \
				"$(tail -3 "$work/$name.$form.call")"
			break
		fi
		m=$((m + count))
		b=$((b + count * size))
		if [[ $entry == "$c_ping $c_ping_count" ]]; then
			mean=$(awk -v n="$((t1 - t0))" -v c="$count" \
				'BEGIN { printf "%.3f", n / c / 1e6 }')
		fi
	done
	step="$name: waiting for the Python server ($form)"
	step_t0=$SECONDS
	step_log=$work/$name.$form.server
	wait "$spid"
	rc=$?
	served=$(grep '^SERVED' "$work/$name.$form.server")
	if [[ $rc != 0 || $(field "$served" bad) != 0 ||
		$(field "$served" messages) != "$m" ]]; then
		fail "$name cqwire->py $form: server exit $rc, '$served'" \
			"(sent $m): $(cat "$work/$name.$form.server")"
		m="$m!"
	fi
	local intact=all
	[[ $m == *! ]] && intact=NO
	rows+=("$name cqwire->py $form ${m%!} $b $intact - - - $mean")
	mean_of[$name.$form]=$mean
}

# One condition: name, one-way delay (us), loss %, reorder %.
run_condition() {
	local name=$1 delay=$2 loss=$3 reorder=$4 i tc t0=$SECONDS
	echo "== $name: delay ${delay} us one way, loss ${loss}%, reorder ${reorder}%"
	make_link "$name" "$delay" "$loss" "$reorder"
	timeout --foreground $((3 * step_t)) ip netns exec "$ns_a" \
		"$echo_bin" serve tcp:10.77.0.1:0 --authkey-env CQW_NETNS_KEY \
		>"$work/$name.serve" 2>"$work/$name.serve.err" &
	local serve_pid=$!
	pids+=("$serve_pid")
	addr_serve=$(wait_line "$work/$name.serve" '^tcp:') || {
		fail "$name: cqwire-echo serve did not start:" \
			"$(cat "$work/$name.serve.err")"
	}
	for i in "${!pys[@]}"; do
		if [[ -n $addr_serve ]]; then
			py_to_cqwire "$name" "${forms[$i]}" "${pys[$i]}"
		else
			rows+=("$name py->cqwire ${forms[$i]} 0 0 NO - - - -")
		fi
	done
	step="$name: stopping cqwire-echo serve"
	step_t0=$SECONDS
	step_log=$work/$name.serve.err
	kill -TERM "$serve_pid" 2>/dev/null
	wait "$serve_pid" 2>/dev/null
	if grep -q . "$work/$name.serve.err"; then
		fail "$name: cqwire-echo serve complained:" \
			"$(cat "$work/$name.serve.err")"
	fi
	for i in "${!pys[@]}"; do
		cqwire_to_py "$name" "${forms[$i]}" "${pys[$i]}"
	done
	tc=$(tcp_counters)
	stop_link "$name"
	stop_all
	local lost held other retrans probes ofo
	read -r lost held other <<<"$link_stats"
	read -r retrans probes ofo <<<"$tc"
	cond_notes+=("$name: the link lost $lost packets at random, held back\
 $held, dropped $other for want of queue room; TCP retransmitted\
 $retrans segments and sent $probes tail-loss probes, queued $ofo out of\
 order")
	if [[ $loss != 0 && ($lost == 0 || $retrans == 0) ]]; then
		fail "$name: the link lost $lost packets and TCP retransmitted" \
			"$retrans: the impairment did not happen"
	fi
	if [[ $reorder != 0 && ($held == 0 || $ofo == 0) ]]; then
		fail "$name: $held packets held back, $ofo queued out of order:" \
			"no reordering happened"
	fi
	echo "   $name: $((SECONDS - t0)) s"
}

start=$SECONDS
echo "netns-test: $([[ $short == 1 ]] && echo short || echo full) run," \
	"seed $seed; cqwire-echo $echo_bin"
for i in "${!pys[@]}"; do
	echo "netns-test: ${forms[$i]} form: ${pys[$i]}"
done
for n in "${notes[@]}"; do
	echo "netns-test: $n"
done

run_condition clean 0 0 0
run_condition delay 1000 0 0
run_condition lossy 1000 1 1

# The delayed round trip: at least the 2 ms the link adds (a hard floor:
# no packet leaves early), and not wildly more on an idle link.
for f in "${forms[@]}"; do
	mn=${min_of[delay.$f]:-}
	p=${p50_of[delay.$f]:-}
	[[ -n $mn && -n $p ]] || continue
	if [[ $(awk -v m="$mn" 'BEGIN { print (m >= 2000) }') != 1 ]]; then
		fail "delay $f: a round trip of ${mn} us under 2x1 ms of delay"
	fi
	if [[ $(awk -v p="$p" 'BEGIN { print (p <= 2000 + 50000) }') != 1 ]]; then
		fail "delay $f: p50 round trip ${p} us, over 2 ms + 50 ms"
	fi
	mn=${mean_of[delay.$f]:-}
	if [[ $mn != - && -n $mn &&
		$(awk -v m="$mn" 'BEGIN { print (m >= 2.0) }') != 1 ]]; then
		fail "delay $f: cqwire's mean round trip ${mn} ms under 2x1 ms"
	fi
done

echo
row_fmt='%-9s %-11s %-6s %6s %10s %6s %7s %7s %8s %8s\n'
# shellcheck disable=SC2059 # one format for the header and the rows
printf "$row_fmt" condition direction auth msgs bytes intact "min ms" \
	"p50 ms" "p99 ms" "mean ms"
for r in "${rows[@]}"; do
	read -r -a cols <<<"$r"
	# shellcheck disable=SC2059
	printf "$row_fmt" "${cols[@]}"
done
echo "(min/p50/p99: 64 B ping-pong timed by the Python client;" \
	"mean: cqwire-echo call of $c_ping_count x 64 B, wall time / count," \
	"connect and handshake included)"
for n in "${cond_notes[@]}"; do
	echo "$n"
done
for f in "${forms[@]}"; do
	c=${p50_of[clean.$f]:-}
	d=${p50_of[delay.$f]:-}
	[[ -n $c && -n $d ]] || continue
	awk -v c="$c" -v d="$d" -v f="$f" 'BEGIN { printf "round trip under" \
	    " 1 ms one-way delay (%s): p50 %.3f ms = base %.3f ms + %.3f ms" \
	    " (expect ~2 ms + base)\n", f, d / 1000, c / 1000, (d - c) / 1000 }'
done
for n in "${notes[@]}"; do
	echo "$n"
done
echo "netns-test: $((SECONDS - start)) s"
if [[ $failures != 0 ]]; then
	echo "netns-test: FAILED ($failures failures)"
	exit 1
fi
echo "netns-test: all messages intact"
exit 0
