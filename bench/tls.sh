#!/usr/bin/env bash
# TLS benchmark: our gateway beside nginx, both terminating TLS with the same
# certificate (ECDSA P-256, one self-made CA) and balancing over the same three
# single-process nginx upstreams, each with the same worker count. wrk (1 thread, 64
# connections) measures two things per target:
#   handshakes   every request on a new connection (`Connection: close`): full TLS
#                handshakes per second (wrk does not resume sessions)
#   keep-alive   proxied requests per second over established TLS connections
#
#   bench/tls.sh                         both targets, both modes, 3 rounds of 10 s
#   bench/tls.sh --rounds 1 --duration 5 --workers 2
#
# Environment: as bench/run.sh (HOTEL_BIN, BENCH_LOAD, BENCH_NO_BUILD, BENCH_OUT,
# BENCH_KEEP).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

ROUNDS=3
DURATION=10
CONNS=64
WORKERS=1

while (($# > 0)); do
	case "$1" in
	--rounds) ROUNDS=$2 && shift ;;
	--duration) DURATION=$2 && shift ;;
	--connections) CONNS=$2 && shift ;;
	--workers) WORKERS=$2 && shift ;;
	-h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' && exit 0 ;;
	*) die "unknown argument $1" ;;
	esac
	shift
done

ensure_tools
command -v openssl >/dev/null || die "openssl is needed to make the benchmark's certificate"
build_bins
setup_work
OUT="${BENCH_OUT:-$BENCH_DIR/results/$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"

# One CA and one server certificate for 127.0.0.1, shared by both proxies.
CERT="$WORK/tls/server.pem"
KEY="$WORK/tls/server-key.pem"
mkdir -p "$WORK/tls"
(
	cd "$WORK/tls"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj "/CN=bench CA" -keyout ca-key.pem -out ca.pem 2>/dev/null
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-subj "/CN=127.0.0.1" -keyout server-key.pem -out server.csr 2>/dev/null
	printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >ext.cnf
	openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
		-days 2 -extfile ext.cnf -out server.pem 2>/dev/null
)

# wait_https URL: polls until URL answers 2xx over TLS (15 s at most).
wait_https() {
	local deadline=$((SECONDS + 15))
	until curl -sf --cacert "$WORK/tls/ca.pem" -o /dev/null "$1"; do
		((SECONDS < deadline)) || die "$1 did not become ready"
		sleep 0.1
	done
}

start_upstreams
declare -A URL PID

# nginx terminating TLS: the proxy of bench/run.sh with `ssl` on its listener.
port=$(free_ports 1)
start_nginx_proxy "$WORKERS" "$port"
stop_pid "$PROXY_PID"
sed -i -e "s|listen 127.0.0.1:$port backlog=4096;|listen 127.0.0.1:$port ssl backlog=4096;\n        ssl_certificate $CERT;\n        ssl_certificate_key $KEY;\n        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_session_cache off;\n        ssl_session_tickets off;|" "$WORK/nginx/nginx.conf"
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
BENCH_PIDS+=($!)
PID[nginx]=$!
URL[nginx]="https://127.0.0.1:$port$BENCH_PATH"
wait_https "${URL[nginx]}"

# The gateway with [tls] on the same files.
port=$(free_ports 1)
admin=$(free_ports 1)
gateway_conf "$WORKERS" "$port" "$admin"
printf '\n[tls]\ncert = "%s"\nkey = "%s"\n' "$CERT" "$KEY" >>"$WORK/gateway.toml"
TOKIO_WORKER_THREADS=$WORKERS RUST_LOG="${RUST_LOG:-warn}" \
	"$HOTEL_BIN" gateway --config "$WORK/gateway.toml" --data-dir "$WORK/gateway-data" \
	>"$WORK/gateway.log" 2>&1 &
BENCH_PIDS+=($!)
PID[hotel]=$!
URL[hotel]="https://127.0.0.1:$port$BENCH_PATH"
wait_https "${URL[hotel]}"

printf 'round\ttarget\tmode\tper_s\tp50_us\tp99_us\terrors\tcpu_us_per_req\n' >"$OUT/tls-rounds.tsv"
HZ=$(getconf CLK_TCK)
for ((r = 1; r <= ROUNDS; r++)); do
	for mode in handshakes keep-alive; do
		for t in nginx hotel; do
			extra=()
			[[ $mode == handshakes ]] && extra=(-H "Connection: close")
			res="$WORK/wrk-$t-$mode-$r.txt"
			c0=$(cpu_ticks "${PID[$t]}")
			wrk -t1 -c"$CONNS" -d"${DURATION}s" "${extra[@]}" -s "$BENCH_DIR/wrk-report.lua" "${URL[$t]}" >"$res"
			c1=$(cpu_ticks "${PID[$t]}")
			awk -v r="$r" -v t="$t" -v m="$mode" -v cpu="$((c1 - c0))" -v hz="$HZ" '/^BENCH / {
				for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
				rate = v["requests"] / (v["duration_us"] / 1e6)
				per = v["requests"] > 0 ? cpu * 1e6 / hz / v["requests"] : 0
				printf "%s\t%s\t%s\t%.0f\t%d\t%d\t%d\t%.1f\n", r, t, m, rate, v["p50"], v["p99"], v["errors"], per
			}' "$res" >>"$OUT/tls-rounds.tsv"
			log "round $r $t $mode: $(tail -1 "$OUT/tls-rounds.tsv" | cut -f4)/s"
		done
	done
done

{
	echo "TLS, $(date -u '+%Y-%m-%d %H:%M UTC'), $(machine_line)"
	echo "$(versions_line); $WORKERS worker(s) per proxy; wrk 1 thread, $CONNS connections, ${DURATION} s x $ROUNDS rounds (medians); ECDSA P-256 certificate"
	echo
	echo "| target | mode | per second | p50 ms | p99 ms | errors | proxy CPU us/req |"
	echo "|---|---|---:|---:|---:|---:|---:|"
	awk -F'\t' 'NR > 1 { k = $2 " " $3; n[k]++; rate[k, n[k]] = $4; p50[k, n[k]] = $5; p99[k, n[k]] = $6; err[k] += $7; cpu[k, n[k]] = $8 }
		'"$AWK_MEDIAN"'
		END {
			split("nginx handshakes,hotel handshakes,nginx keep-alive,hotel keep-alive", ks, ",")
			for (i = 1; i <= 4; i++) { k = ks[i]; split(k, tm, " ")
				if (k in n) printf "| %s | %s | %.0f | %.2f | %.2f | %d | %.1f |\n", tm[1], tm[2], med(rate, k), med(p50, k) / 1000, med(p99, k) / 1000, err[k], med(cpu, k) }
		}' "$OUT/tls-rounds.tsv"
	echo
	echo "handshakes: one request per connection, so per second = full TLS handshakes per second."
} | tee "$OUT/tls.md"
log "results in $OUT"
