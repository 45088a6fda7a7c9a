#!/usr/bin/env bash
# Failover benchmark: steady load (64 keep-alive connections) through each proxy while
# upstream u2 of three fails at 5 s and comes back at 12 s, either frozen (SIGSTOP, then
# SIGCONT: a hung instance) or killed (kill -9, then started again). bench-load records
# every request and prints, per 100 ms, requests, errors, latency and which upstream
# served; then errors, slow requests, how long the failed upstream still got new
# requests, the worst 100 ms dip and when the restored upstream was back in rotation.
#
#   bench/failover.sh                          both modes, every proxy
#   bench/failover.sh --modes stop --targets hotel,nginx --duration 20 --all-windows
#
# Environment: as bench/run.sh (HOTEL_BIN, BENCH_LOAD, BENCH_NO_BUILD, BENCH_CADDY,
# BENCH_OUT, BENCH_KEEP).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

MODES="stop,kill"
TARGETS="nginx,haproxy,caddy,hotel"
DURATION=20
FAIL_AT=5
RESTORE_AT=12
CONNS=64
WORKERS=1
ALL_WINDOWS=()

usage() {
	sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
	exit "${1:-0}"
}

while (($# > 0)); do
	case "$1" in
	--modes) MODES=$2 && shift ;;
	--targets) TARGETS=$2 && shift ;;
	--duration) DURATION=$2 && shift ;;
	--fail-at) FAIL_AT=$2 && shift ;;
	--restore-at) RESTORE_AT=$2 && shift ;;
	--connections) CONNS=$2 && shift ;;
	--workers) WORKERS=$2 && shift ;;
	--all-windows) ALL_WINDOWS=(--all-windows) ;;
	-h | --help) usage 0 ;;
	*) printf 'unknown argument %s\n\n' "$1" >&2 && usage 2 ;;
	esac
	shift
done
((FAIL_AT < RESTORE_AT && RESTORE_AT < DURATION)) || die "need --fail-at < --restore-at < --duration"

ensure_tools
build_bins
setup_work
OUT="${BENCH_OUT:-$BENCH_DIR/results/$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
rm -f "$OUT/failover.tsv"
start_upstreams
NGINX_BIN=$(command -v nginx)

# upstreams_healthy: every upstream alive, running (not stopped) and answering.
upstreams_healthy() {
	local i pid
	for i in 1 2 3; do
		pid=$(upstream_pid "$i")
		if ! kill -0 "$pid" 2>/dev/null; then
			start_upstream "$i"
		fi
		kill -CONT "$(upstream_pid "$i")" 2>/dev/null || true
		wait_http "http://127.0.0.1:${UP_PORTS[$((i - 1))]}/"
	done
}

IFS=, read -r -a MODE_LIST <<<"$MODES"
IFS=, read -r -a TARGET_LIST <<<"$TARGETS"
for mode in "${MODE_LIST[@]}"; do
	for t in "${TARGET_LIST[@]}"; do
		upstreams_healthy
		port=$(free_ports 1)
		case "$t" in
		nginx) start_nginx_proxy "$WORKERS" "$port" ;;
		haproxy) start_haproxy "$WORKERS" "$port" ;;
		caddy) start_caddy "$WORKERS" "$port" || {
			log "caddy not installed: skipped"
			continue
		} ;;
		hotel) start_gateway "$WORKERS" "$port" ;;
		*) die "unknown target $t (nginx, haproxy, caddy, hotel)" ;;
		esac
		url="http://127.0.0.1:$port$BENCH_PATH"
		pid2=$(upstream_pid 2)
		watch=()
		case "$mode" in
		stop)
			fail="kill -STOP $pid2"
			restore="kill -CONT $pid2"
			# Only a frozen instance keeps accepting bytes that can be watched.
			watch=(--watch-port "${UP_PORTS[1]}")
			;;
		kill)
			fail="kill -KILL $pid2"
			restore="$NGINX_BIN -p $WORK/u2 -c $WORK/u2/nginx.conf -e $WORK/u2/error.log"
			;;
		*) die "unknown mode $mode (stop, kill)" ;;
		esac
		log "$t, $mode: warming up, then ${DURATION} s with u2 failing at ${FAIL_AT} s, back at ${RESTORE_AT} s"
		"$BENCH_LOAD" run --url "$url" --connections "$CONNS" --duration 2s >/dev/null
		"$BENCH_LOAD" run --url "$url" --connections "$CONNS" --duration "${DURATION}s" \
			--fail-at "${FAIL_AT}s" --fail-cmd "$fail" \
			--restore-at "${RESTORE_AT}s" --restore-cmd "$restore" \
			--failed-upstream u2 "${watch[@]}" "${ALL_WINDOWS[@]}" \
			--label "$t" --mode "$mode" \
			--csv "$OUT/failover-$t-$mode.csv" --summary-tsv "$OUT/failover.tsv" |
			tee "$OUT/failover-$t-$mode.txt"
		echo
		stop_pid "$PROXY_PID"
	done
done

{
	echo "Failover, $(date -u '+%Y-%m-%d %H:%M UTC'), $(machine_line)"
	echo "$(versions_line); $WORKERS worker(s) per proxy; $CONNS connections, ${DURATION} s, u2 failed at ${FAIL_AT} s, restored at ${RESTORE_AT} s"
	echo
	awk -F'\t' '
		NR == 1 { printf "|"; for (i = 1; i <= NF; i++) printf " %s |", $i; printf "\n|"; for (i = 1; i <= NF; i++) printf "---|"; printf "\n"; next }
		{ printf "|"; for (i = 1; i <= NF; i++) printf " %s |", $i; printf "\n" }' "$OUT/failover.tsv"
	echo
	echo "worst100ms%: fewest answers in one 100 ms window after the failure, as % of the median window"
	echo "before it; reached_failed_ms: last moment new request bytes reached the frozen upstream"
	echo "after it froze (stop only); back_ms: from the restore to the first answer from u2 for a"
	echo "request sent after it; restored_share%: u2's share of the answers in the last 2 s."
} | tee "$OUT/failover.md"
log "results in $OUT"
