#!/usr/bin/env bash
# Throughput benchmark: our gateway beside nginx, HAProxy, (when installable) Caddy and
# the floor (bench-floor, a bare hyper forwarder), each balancing over the same three
# single-process nginx upstreams on loopback, each with the same worker count. wrk (1
# thread, 64 keep-alive connections) drives one target at a time, in an order that
# rotates every round; the table shows medians. `hotel` is the gateway at its default log
# level (no RUST_LOG), `hotel-warn` the same binary at RUST_LOG=warn.
#
#   bench/run.sh                 throughput table (3 rounds of 10 s)
#   bench/run.sh all             throughput table, then bench/failover.sh
#   bench/run.sh --rounds 5 --duration 20 --workers 2 --targets direct,nginx,floor,hotel
#   HOTEL_BIN_B=path/to/other/hotel bench/run.sh --targets nginx,hotel,hotel-b
#                                (a second gateway: HOTEL_BIN_B, default HOTEL_BIN, at
#                                RUST_LOG=HOTEL_B_LOG, default unset)
#
# Environment: HOTEL_BIN / BENCH_LOAD / BENCH_FLOOR (use these binaries), BENCH_NO_BUILD=1
# (do not run cargo), BENCH_CADDY=0 (skip Caddy), BENCH_OUT (results directory),
# BENCH_KEEP=1 (keep the scratch directory with every config and log).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

ROUNDS=3
DURATION=10
WARMUP=3
CONNS=64
WORKERS=1
MAX_OTHER=10
RETRIES=2
TARGETS="direct,nginx,haproxy,caddy,floor,hotel,hotel-warn"
ALSO_FAILOVER=0

usage() {
	sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
	exit "${1:-0}"
}

while (($# > 0)); do
	case "$1" in
	all) ALSO_FAILOVER=1 ;;
	--rounds) ROUNDS=$2 && shift ;;
	--duration) DURATION=$2 && shift ;;
	--warmup) WARMUP=$2 && shift ;;
	--connections) CONNS=$2 && shift ;;
	--workers) WORKERS=$2 && shift ;;
	--targets) TARGETS=$2 && shift ;;
	--max-other) MAX_OTHER=$2 && shift ;;
	-h | --help) usage 0 ;;
	*) printf 'unknown argument %s\n\n' "$1" >&2 && usage 2 ;;
	esac
	shift
done

ensure_tools
build_bins
setup_work
OUT="${BENCH_OUT:-$BENCH_DIR/results/$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
HZ=$(getconf CLK_TCK)
NCPU=$(nproc)

start_upstreams
declare -A URL PID
IFS=, read -r -a WANTED <<<"$TARGETS"
ACTIVE=()
for t in "${WANTED[@]}"; do
	case "$t" in
	direct)
		URL[$t]="http://127.0.0.1:${UP_PORTS[0]}$BENCH_PATH"
		PID[$t]=$(upstream_pid 1)
		;;
	nginx | haproxy | caddy | floor | hotel | hotel-warn | hotel-b)
		port=$(free_ports 1)
		case "$t" in
		nginx) start_nginx_proxy "$WORKERS" "$port" ;;
		haproxy) start_haproxy "$WORKERS" "$port" ;;
		caddy) start_caddy "$WORKERS" "$port" || {
			log "caddy not installed: skipped"
			continue
		} ;;
		floor) start_floor "$WORKERS" "$port" ;;
		hotel) start_gateway "$WORKERS" "$port" ;;
		hotel-warn) start_gateway "$WORKERS" "$port" warn ;;
		hotel-b)
			[[ -x "${HOTEL_BIN_B:-$HOTEL_BIN}" ]] || die "HOTEL_BIN_B is not an executable"
			HOTEL_BIN="${HOTEL_BIN_B:-$HOTEL_BIN}" start_gateway "$WORKERS" "$port" "${HOTEL_B_LOG:-}"
			;;
		esac
		URL[$t]="http://127.0.0.1:$port$BENCH_PATH"
		PID[$t]=$PROXY_PID
		;;
	*) die "unknown target $t (direct, nginx, haproxy, caddy, floor, hotel, hotel-warn, hotel-b)" ;;
	esac
	ACTIVE+=("$t")
done
UP_PIDS=("$(upstream_pid 1)" "$(upstream_pid 2)" "$(upstream_pid 3)")

# measure TARGET ROUND: one wrk run; appends a row to $OUT/rounds.tsv and prints the
# share of CPU that other processes used meanwhile.
measure() {
	local t=$1 round=$2 res="$WORK/wrk-$1-$2.txt" timing="$WORK/time-$1-$2.txt"
	local p0 u0 b0 s0 p1 u1 b1 s1 q0 q1
	q0=$(user_ticks "${PID[$t]}")
	p0=$(cpu_ticks "${PID[$t]}")
	u0=$(cpu_ticks "${UP_PIDS[@]}")
	b0=$(busy_ticks)
	s0=$(date +%s%N)
	TIMEFORMAT='%3U %3S'
	{ time wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$BENCH_DIR/wrk-report.lua" "${URL[$t]}" >"$res"; } 2>"$timing"
	s1=$(date +%s%N)
	b1=$(busy_ticks)
	u1=$(cpu_ticks "${UP_PIDS[@]}")
	p1=$(cpu_ticks "${PID[$t]}")
	q1=$(user_ticks "${PID[$t]}")
	local rss
	rss=$(rss_kb "${PID[$t]}")
	grep -q '^BENCH ' "$res" || die "wrk printed no result for $t: $(cat "$res")"
	# For "direct" the target is upstream u1, already counted among the upstreams.
	local proxy=$((p1 - p0)) ups=$((u1 - u0))
	[[ $t == direct ]] && proxy=$((p1 - p0)) && ups=$((ups - proxy))
	awk -v t="$t" -v r="$round" -v proxy="$proxy" -v user="$((q1 - q0))" -v ups="$ups" -v busy="$((b1 - b0))" \
		-v ns="$((s1 - s0))" -v hz="$HZ" -v ncpu="$NCPU" -v rss="$rss" -v dur="$DURATION" \
		-v wrkcpu="$(cat "$timing")" '
		/^BENCH / {
			for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
			split(wrkcpu, w, " ")
			wrk_ticks = (w[1] + w[2]) * hz
			elapsed = ns / 1e9 * hz
			other = busy - proxy - ups - wrk_ticks
			if (other < 0) other = 0
			rps = v["requests"] / (v["duration_us"] / 1e6)
			cpu = v["requests"] > 0 ? proxy * 1e6 / hz / v["requests"] : 0
			ucpu = v["requests"] > 0 ? user * 1e6 / hz / v["requests"] : 0
			printf "%s\t%s\t%.0f\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t%d\t%d\t%.1f\n", r, t, rps, v["p50"], v["p99"], v["p999"], v["errors"], cpu, 100 * other / (ncpu * elapsed), rss, v["requests"], ucpu
		}' "$res" >"$WORK/row"
	OTHER=$(cut -f9 "$WORK/row")
	printf '%s\n' "$(cat "$WORK/row")" >>"$WORK/attempts.tsv"
}

printf 'round\ttarget\treq/s\tp50_us\tp99_us\tp999_us\terrors\tcpu_us_per_req\tother_cpu_pct\tpeak_rss_kb\trequests\tuser_us_per_req\n' >"$OUT/rounds.tsv"
log "warming up ${ACTIVE[*]} (${WARMUP} s each)"
for t in "${ACTIVE[@]}"; do
	wrk -t1 -c"$CONNS" -d"${WARMUP}s" "${URL[$t]}" >/dev/null
done

n=${#ACTIVE[@]}
for ((r = 1; r <= ROUNDS; r++)); do
	for ((k = 0; k < n; k++)); do
		t=${ACTIVE[$(((k + r - 1) % n))]}
		for ((attempt = 0; attempt <= RETRIES; attempt++)); do
			measure "$t" "$r"
			if awk -v o="$OTHER" -v m="$MAX_OTHER" 'BEGIN { exit !(o <= m) }'; then break; fi
			if ((attempt < RETRIES)); then
				log "round $r $t: other processes used ${OTHER} % of the CPU (> ${MAX_OTHER} %), running it again when the machine is quieter"
				wait_quiet "$MAX_OTHER" 30 || log "the machine stayed busy for 30 s; running anyway"
			else
				log "round $r $t: other processes used ${OTHER} % of the CPU; kept, marked in the table"
			fi
		done
		cat "$WORK/row" >>"$OUT/rounds.tsv"
		log "round $r $t: $(cut -f3 "$WORK/row") req/s, p99 $(cut -f5 "$WORK/row") us, other CPU ${OTHER} %"
	done
done

# The table: medians over rounds, errors summed, the highest "other CPU" share.
{
	echo "Throughput, $(date -u '+%Y-%m-%d %H:%M UTC'), $(machine_line)"
	echo "$(versions_line); $WORKERS worker(s) per proxy; wrk 1 thread, $CONNS connections, ${DURATION} s x $ROUNDS rounds (medians)"
	echo
	awk -F'\t' -v order="${ACTIVE[*]}" -v max="$MAX_OTHER" '
		NR == 1 { next }
		{ n[$2]++; k = $2 SUBSEP n[$2]; rps[k] = $3; p50[k] = $4; p99[k] = $5; p999[k] = $6; cpu[k] = $8; rss[k] = $10; ucpu[k] = $12
		  err[$2] += $7; if ($9 > oth[$2]) oth[$2] = $9 }
		'"$AWK_MEDIAN"'
		END {
			print "| target | req/s | p50 ms | p99 ms | p99.9 ms | errors | vs direct | CPU us/req | user us/req | peak RSS MB | other CPU % |"
			print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
			nt = split(order, ts, " ")
			direct = ("direct" in n) ? med(rps, "direct") : 0
			for (i = 1; i <= nt; i++) {
				t = ts[i]; if (!(t in n)) continue
				r = med(rps, t)
				ratio = (direct > 0) ? sprintf("%.2f", r / direct) : "-"
				printf "| %s | %.0f | %.2f | %.2f | %.2f | %d | %s | %.1f | %.1f | %.1f | %.1f%s |\n", t, r, med(p50, t) / 1000, med(p99, t) / 1000, med(p999, t) / 1000, err[t], ratio, med(cpu, t), med(ucpu, t), med(rss, t) / 1024, oth[t], (oth[t] > max) ? " (busy)" : ""
			}
			# Ratios of medians, req/s: the gateway against each peer and the floor, the
			# floor against the peers, the default log level against warn.
			line = ""
			split("hotel/nginx hotel/haproxy hotel/floor floor/nginx floor/haproxy hotel/hotel-warn hotel-b/hotel", pairs, " ")
			for (i = 1; i in pairs; i++) {
				split(pairs[i], ab, "/")
				if ((ab[1] in n) && (ab[2] in n) && med(rps, ab[2]) > 0)
					line = line sprintf("%s%s %.2f", (line == "") ? "" : ", ", pairs[i], med(rps, ab[1]) / med(rps, ab[2]))
			}
			if (line != "") { print ""; print "req/s ratios: " line }
		}' "$OUT/rounds.tsv"
	echo
	echo "CPU us/req is the proxy's own CPU (for direct: the upstream's), user us/req its user-space part"
	echo "(the rest is the kernel's, mostly loopback TCP); other CPU % is the share of"
	echo "the machine that processes outside the benchmark used during the run (rerun above ${MAX_OTHER} %)."
} | tee "$OUT/throughput.md"
log "results in $OUT"

if ((ALSO_FAILOVER)); then
	cleanup
	trap - EXIT
	BENCH_OUT="$OUT" BENCH_NO_BUILD=1 HOTEL_BIN="$HOTEL_BIN" BENCH_LOAD="$BENCH_LOAD" BENCH_FLOOR="$BENCH_FLOOR" \
		"$BENCH_DIR/failover.sh" --workers "$WORKERS"
fi
