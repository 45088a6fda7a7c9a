#!/usr/bin/env bash
# Profiles the gateway's hot path under the throughput benchmark's load: three upstreams,
# the gateway with one worker, wrk (1 thread, 64 connections), and `perf record` (the
# cpu-clock software event, which works where hardware counters are not exposed) on the
# gateway process alone. Prints the hottest functions, self time and with children, and
# keeps perf.data under bench/results/ for `perf report -i`.
#
#   bench/profile.sh                  10 s of load, 8 s sampled
#   bench/profile.sh --duration 20 --workers 2
#
# Needs perf (Debian: linux-perf); installs it with apt-get when missing.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

DURATION=10
WORKERS=1
CONNS=64

while (($# > 0)); do
	case "$1" in
	--duration) DURATION=$2 && shift ;;
	--workers) WORKERS=$2 && shift ;;
	--connections) CONNS=$2 && shift ;;
	-h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' && exit 0 ;;
	*) die "unknown argument $1" ;;
	esac
	shift
done
((DURATION >= 4)) || die "--duration must be at least 4 s"

ensure_tools
if ! command -v perf >/dev/null; then
	log "installing linux-perf with apt-get"
	RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null ||
		die "perf is missing and could not be installed"
fi
build_bins
setup_work
OUT="${BENCH_OUT:-$BENCH_DIR/results/$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
start_upstreams
port=$(free_ports 1)
start_gateway "$WORKERS" "$port"
url="http://127.0.0.1:$port$BENCH_PATH"
GW=$PROXY_PID

log "warming up"
wrk -t1 -c"$CONNS" -d2s "$url" >/dev/null
log "load for ${DURATION} s, sampling the gateway (pid $GW) for $((DURATION - 2)) s"
wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$BENCH_DIR/wrk-report.lua" "$url" >"$OUT/profile-wrk.txt" &
BENCH_PIDS+=($!)
wrk_pid=$!
# DWARF unwinding: release builds keep no frame pointers, so -g alone loses callers.
perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$GW" -o "$OUT/perf.data" -- sleep $((DURATION - 2)) 2>/dev/null
wait "$wrk_pid" || true
grep '^BENCH' "$OUT/profile-wrk.txt" || true

# head closes its pipe early on purpose; that must not end the script.
set +o pipefail
# perf pads every line to the terminal-less default width: trim it.
tidy() { grep -v '^#' | grep -v '^$' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//' | cut -c1-200; }
{
	echo "== where the time goes (by binary) =="
	perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | tidy | head -8
	echo
	echo "== self time (top 40) =="
	perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null | tidy | head -40
	echo
	echo "== with callees, gateway and library frames (top 60) =="
	perf report -i "$OUT/perf.data" --children --sort symbol --stdio -g none 2>/dev/null | tidy |
		grep -E 'hotel|tower|hyper|tracing|tokio|http|bytes|prometheus|opentelemetry' | head -60
} | tee "$OUT/profile.txt"
log "perf data in $OUT/perf.data (perf report -i $OUT/perf.data)"
