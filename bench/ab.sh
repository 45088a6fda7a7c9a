#!/usr/bin/env bash
# Paired A/B of gateway builds: the builds take turns on one set of upstreams, each turn a
# fresh gateway (one worker), 2 s of warm-up and 5 s measured with wrk on 64 connections;
# prints req/s and the gateway's own user and system CPU per request (from /proc) for
# every turn. Interleaved turns see the same neighbours, so on this noisy VM a pair's
# ratio is steadier than two separate runs' medians (bench/README.md, twelfth pass).
#
#   bench/ab.sh BIN_A BIN_B [BIN...]     ROUNDS=5 by default
#
# Release builds of `hotel`; nothing is built here. Needs wrk and nginx (installed with
# apt-get when missing, as bench/run.sh does) and target/release/bench-load (or
# BENCH_LOAD).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
(($# >= 2)) || { echo "usage: bench/ab.sh BIN_A BIN_B [BIN...]" >&2; exit 2; }
export BENCH_NO_BUILD=1 BENCH_CADDY=0
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
ensure_tools
build_bins
setup_work
trap cleanup EXIT
start_upstreams
hz=$(getconf CLK_TCK)
printf '| round | build | req/s | user us/req | sys us/req | CPU us/req |\n|---:|---|---:|---:|---:|---:|\n'
for round in $(seq "${ROUNDS:-5}"); do
	for bin in "$@"; do
		HOTEL_BIN="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
		port=$(free_ports 1)
		start_gateway 1 "$port"
		url="http://127.0.0.1:$port$BENCH_PATH"
		wrk -t1 -c64 -d2s "$url" >/dev/null
		u0=$(user_ticks "$PROXY_PID")
		c0=$(cpu_ticks "$PROXY_PID")
		wrk -t1 -c64 -d5s "$url" >"$WORK/ab-wrk.txt"
		u1=$(user_ticks "$PROXY_PID")
		c1=$(cpu_ticks "$PROXY_PID")
		n=$(awk '/requests in/{print $1}' "$WORK/ab-wrk.txt")
		stop_pid "$PROXY_PID"
		awk -v r="$round" -v b="$(basename "$bin")" -v n="$n" -v u=$((u1 - u0)) -v c=$((c1 - c0)) -v hz="$hz" \
			'BEGIN { printf "| %d | %s | %d | %.1f | %.1f | %.1f |\n", r, b, n / 5, u / hz * 1e6 / n, (c - u) / hz * 1e6 / n, c / hz * 1e6 / n }'
	done
done
