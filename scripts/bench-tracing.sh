#!/usr/bin/env bash
# What tracing costs the gateway: wrk through the gateway to three nginx upstreams with
# span export off, on at 100 % sampling, and on at 1 % (parentbased_traceidratio), to a
# local Jaeger. Prints req/s and p99 per mode (median of ROUNDS, order rotated each
# round) and the ratio to "off". Not part of CI.
#
#   cargo build --release -p hotel && scripts/jaeger.sh install && scripts/bench-tracing.sh
#
# Needs wrk, nginx and python3 (for free ports). Env: HOTEL_BIN (target/release/hotel),
# DURATION (10s), CONNECTIONS (64), ROUNDS (3), WORKERS (gateway worker threads, 1).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HOTEL_BIN="${HOTEL_BIN:-$ROOT/target/release/hotel}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
ROUNDS="${ROUNDS:-3}"
WORKERS="${WORKERS:-1}"
for tool in wrk nginx python3; do
    command -v "$tool" >/dev/null || { echo "bench-tracing: $tool is required" >&2; exit 1; }
done
[ -x "$HOTEL_BIN" ] || { echo "bench-tracing: build $HOTEL_BIN first (cargo build --release -p hotel)" >&2; exit 1; }

WORK="$(mktemp -d /tmp/bench-tracing.XXXXXX)"
PIDS=()
JAEGER_STARTED=""
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for i in 1 2 3; do
        [ -f "$WORK/u$i/nginx.pid" ] && kill -TERM "$(cat "$WORK/u$i/nginx.pid")" 2>/dev/null || true
    done
    [ -n "$JAEGER_STARTED" ] && "$ROOT/scripts/jaeger.sh" stop || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

wait_http() {
    local deadline=$((SECONDS + 30))
    until curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "bench-tracing: $1 not ready" >&2; exit 1; }
        sleep 0.1
    done
}

if ! "$ROOT/scripts/jaeger.sh" status >/dev/null 2>&1; then
    "$ROOT/scripts/jaeger.sh" start
    JAEGER_STARTED=yes
fi

read -r -a UP <<<"$(free_ports 3)"
for i in 1 2 3; do
    mkdir -p "$WORK/u$i"
    cat >"$WORK/u$i/nginx.conf" <<EOF
daemon on;
master_process off;
worker_processes 1;
pid $WORK/u$i/nginx.pid;
error_log $WORK/u$i/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:${UP[$((i - 1))]} backlog=4096;
        location / { default_type application/json; return 200 '{"ok":true}'; }
    }
}
EOF
    nginx -p "$WORK/u$i" -c "$WORK/u$i/nginx.conf" -e "$WORK/u$i/error.log"
done

# cpu_ticks PID: user + system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_mode NAME ENV...: one gateway with that environment, wrk against it; prints
# "req/s p99_ms non2xx cpu_us_per_request".
run_mode() {
    local name=$1
    shift
    local port admin
    read -r port admin <<<"$(free_ports 2)"
    sed -e "s/127\.0\.0\.1:18080/127.0.0.1:$port/" \
        -e "s/127\.0\.0\.1:18090/127.0.0.1:$admin/" \
        -e "s/127\.0\.0\.1:18081/127.0.0.1:${UP[0]}/" \
        -e "s/127\.0\.0\.1:18082/127.0.0.1:${UP[1]}/" \
        -e "s/127\.0\.0\.1:18083/127.0.0.1:${UP[2]}/" \
        -e "s/^worker_threads = .*/worker_threads = $WORKERS/" \
        "$ROOT/config/bench-gateway.toml" >"$WORK/gateway-$name.toml"
    env -u OTEL_EXPORTER_OTLP_ENDPOINT -u OTEL_TRACES_SAMPLER -u OTEL_TRACES_SAMPLER_ARG \
        "$@" TOKIO_WORKER_THREADS="$WORKERS" RUST_LOG=warn \
        "$HOTEL_BIN" gateway --config "$WORK/gateway-$name.toml" --data-dir "$WORK/gw-$name" \
        >"$WORK/gateway-$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_http "http://127.0.0.1:$port/api/rooms"
    wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$port/api/rooms" >/dev/null # warm-up
    local out cpu0 cpu1
    cpu0="$(cpu_ticks "$pid")"
    out="$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$port/api/rooms")"
    cpu1="$(cpu_ticks "$pid")"
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local rps p99 non2xx requests cpu_us
    rps="$(awk '/^Requests\/sec/ {print $2}' <<<"$out")"
    p99="$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' <<<"$out")"
    non2xx="$(awk '/Non-2xx/ {print $5}' <<<"$out")"
    requests="$(awk '/requests in/ {print $1}' <<<"$out")"
    # CPU time of the gateway per request, in microseconds: unlike req/s, it barely
    # depends on what else the machine is doing.
    cpu_us="$(awk -v t=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
        'BEGIN {printf "%.1f", t / hz * 1e6 / n}')"
    echo "$rps $p99 ${non2xx:-0} $cpu_us"
}

OTLP=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 OTEL_EXPORTER_OTLP_PROTOCOL=grpc)
declare -A RPS P99 BAD CPU
MODES=(off full one_percent)
for ((r = 0; r < ROUNDS; r++)); do
    for ((k = 0; k < 3; k++)); do
        mode="${MODES[$(((k + r) % 3))]}"
        case "$mode" in
        off) res="$(run_mode off)" ;;
        full) res="$(run_mode full "${OTLP[@]}")" ;;
        one_percent) res="$(run_mode one_percent "${OTLP[@]}" \
            OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.01)" ;;
        esac
        read -r rps p99 bad cpu <<<"$res"
        echo "round $((r + 1)) $mode: $rps req/s, p99 $p99 ms, non-2xx $bad, $cpu us CPU/req" >&2
        CPU[$mode]+="$cpu "
        RPS[$mode]+="$rps "
        P99[$mode]+="$p99 "
        BAD[$mode]+="$bad "
    done
done

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
off_rps="$(median "${RPS[off]}")"
off_cpu="$(median "${CPU[off]}")"
echo
echo "| tracing | req/s (median of $ROUNDS) | p99 ms | ratio to off | gateway CPU µs/req | CPU ratio to off |"
echo "| --- | --- | --- | --- | --- | --- |"
for mode in off full one_percent; do
    rps="$(median "${RPS[$mode]}")"
    p99="$(median "${P99[$mode]}")"
    label="$mode"
    [ "$mode" = full ] && label="export, 100 % sampled"
    [ "$mode" = one_percent ] && label="export, 1 % sampled"
    [ "$mode" = off ] && label="off (no endpoint)"
    cpu="$(median "${CPU[$mode]}")"
    printf '| %s | %s | %s | %s | %s | %s |\n' "$label" "$rps" "$p99" \
        "$(awk -v a="$rps" -v b="$off_rps" 'BEGIN {printf "%.2f", a / b}')" "$cpu" \
        "$(awk -v a="$cpu" -v b="$off_cpu" 'BEGIN {printf "%.2f", a / b}')"
done
echo
echo "(wrk -t1 -c$CONNECTIONS -d$DURATION, gateway worker_threads=$WORKERS, $(nproc) cores," \
    "load average $(cut -d' ' -f1 /proc/loadavg))"
