#!/usr/bin/env bash
# Cache benchmark (issue 14): one real room service (SQLite, ROOMS rooms seeded) with,
# in front of it, our gateway and its HTTP cache beside nginx with `proxy_cache` (same
# worker count, both honouring the room's `Cache-Control: public, max-age=5,
# stale-if-error=300`), and the room service alone ("direct", no cache) for reference.
#
#  (a) hits: wrk (1 thread, 64 keep-alive connections) GETs one room, which each cache
#      holds, one target at a time in an order that rotates every round; medians.
#  (b) Zipf: wrk GETs /api/rooms/{id} over all ROOMS rooms, room k drawn with weight
#      1/k^S, through each target; the room service's own database query counter
#      (hotel_db_query_duration_seconds_count on its /metrics) tells how many reads
#      reached the database: "avoided" = 1 - queries / reads.
#
#   bench/cache.sh
#   bench/cache.sh --rounds 5 --duration 20 --workers 2 --rooms 2000 --zipf-s 0.9
#
# Environment: HOTEL_BIN / BENCH_LOAD (use these binaries), BENCH_NO_BUILD=1 (do not run
# cargo), BENCH_OUT (results directory), BENCH_KEEP=1 (keep configs and logs).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

ROUNDS=3
DURATION=10
WARMUP=3
CONNS=64
WORKERS=1
ROOMS=1000
ZIPF_S=1.0
ZIPF_DURATION=20

usage() {
	sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
	exit "${1:-0}"
}

while (($# > 0)); do
	case "$1" in
	--rounds) ROUNDS=$2 && shift ;;
	--duration) DURATION=$2 && shift ;;
	--warmup) WARMUP=$2 && shift ;;
	--connections) CONNS=$2 && shift ;;
	--workers) WORKERS=$2 && shift ;;
	--rooms) ROOMS=$2 && shift ;;
	--zipf-s) ZIPF_S=$2 && shift ;;
	--zipf-duration) ZIPF_DURATION=$2 && shift ;;
	-h | --help) usage 0 ;;
	*) printf 'unknown argument %s\n\n' "$1" >&2 && usage 2 ;;
	esac
	shift
done

# wrk and nginx only (lib.sh's ensure_tools also wants HAProxy, which this run does not).
ensure_cache_tools() {
	local need=()
	command -v wrk >/dev/null || need+=(wrk)
	command -v nginx >/dev/null || need+=(nginx-light)
	if ((${#need[@]} > 0)); then
		local sudo=()
		[[ $(id -u) == 0 ]] || sudo=(sudo -n)
		log "installing ${need[*]} with apt-get"
		"${sudo[@]}" apt-get update -qq >/dev/null || log "apt-get update failed; trying the install anyway"
		RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null ||
			die "apt-get install ${need[*]} failed"
	fi
	command -v wrk >/dev/null && command -v nginx >/dev/null || die "wrk or nginx still missing"
}

ensure_cache_tools
build_bins
setup_work
OUT="${BENCH_OUT:-$BENCH_DIR/results/cache-$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
HZ=$(getconf CLK_TCK)

# The room service, at its shipped cache settings.
mapfile -t P < <(free_ports 4)
ROOM_PORT=${P[0]} GW_PORT=${P[1]} GW_ADMIN=${P[2]} NGINX_PORT=${P[3]}
ROOM_URL="http://127.0.0.1:$ROOM_PORT"
env -u RUST_LOG "$HOTEL_BIN" service room --listen "127.0.0.1:$ROOM_PORT" --data-dir "$WORK/room" \
	--name room-bench >"$WORK/room.log" 2>&1 &
BENCH_PIDS+=($!)
ROOM_PID=$!
wait_http "$ROOM_URL/readyz"

log "seeding $ROOMS rooms"
python3 - "$ROOM_URL" "$ROOMS" >"$WORK/ids.txt" <<'EOF'
import json, sys, urllib.request
base, n = sys.argv[1], int(sys.argv[2])
for k in range(n):
    body = json.dumps({"number": f"B{k:05d}", "kind": "double", "capacity": 2,
                       "nightly_rate_cents": 10000}).encode()
    req = urllib.request.Request(f"{base}/rooms", data=body, method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as res:
        print(json.load(res)["id"])
EOF
sed 's|^|/api/rooms/|' "$WORK/ids.txt" >"$WORK/paths.txt"
HIT_PATH=$(head -n1 "$WORK/paths.txt")

# Our gateway: one route to the room service, the cache at its defaults.
cat >"$WORK/gateway.toml" <<EOF
listen = "127.0.0.1:$GW_PORT"
admin_listen = "127.0.0.1:$GW_ADMIN"
instance = "gateway-cache-bench"
worker_threads = $WORKERS
pool_max_idle_per_host = 128

[[routes]]
prefix = "/api/rooms"
service = "room"

[services.room]
instances = ["$ROOM_URL"]
EOF
env -u RUST_LOG TOKIO_WORKER_THREADS="$WORKERS" "$HOTEL_BIN" gateway --config "$WORK/gateway.toml" \
	--data-dir "$WORK/gateway-data" >"$WORK/gateway.log" 2>&1 &
BENCH_PIDS+=($!)
GW_PID=$!
wait_http "http://127.0.0.1:$GW_PORT$HIT_PATH"

# nginx with proxy_cache: /api/rooms/... to the room's /rooms/..., keep-alive upstream,
# one fetch per key (proxy_cache_lock), conditional revalidation, stale on error.
mkdir -p "$WORK/nginx/cache"
# Started as root, nginx's workers run as an unprivileged user: they must reach the
# cache directory inside the private scratch directory.
chmod 711 "$WORK" "$WORK/nginx"
chmod 777 "$WORK/nginx/cache"
cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
worker_processes $WORKERS;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    proxy_cache_path $WORK/nginx/cache keys_zone=rooms:16m max_size=64m inactive=10m use_temp_path=off;
    upstream room {
        server 127.0.0.1:$ROOM_PORT;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location /api/rooms {
            rewrite ^/api(/rooms.*)\$ \$1 break;
            proxy_pass http://room;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache rooms;
            proxy_cache_lock on;
            proxy_cache_revalidate on;
            proxy_cache_use_stale error timeout http_500 http_502 http_503 http_504;
            add_header X-Cache \$upstream_cache_status;
        }
    }
}
EOF
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
BENCH_PIDS+=($!)
NGINX_PID=$!
wait_http "http://127.0.0.1:$NGINX_PORT$HIT_PATH"

declare -A URL PID
URL[direct]="$ROOM_URL"
PID[direct]=$ROOM_PID
URL[nginx-cache]="http://127.0.0.1:$NGINX_PORT"
PID[nginx-cache]=$NGINX_PID
URL[hotel-cache]="http://127.0.0.1:$GW_PORT"
PID[hotel-cache]=$GW_PID
TARGETS=(direct nginx-cache hotel-cache)

# path_for TARGET PATH: direct has no /api prefix.
path_for() { [[ $1 == direct ]] && echo "${2#/api}" || echo "$2"; }

# Both caches must answer the hit path from memory (x-cache HIT) before measuring.
for t in nginx-cache hotel-cache; do
	curl -fsS -o /dev/null "${URL[$t]}$HIT_PATH"
	got=$(curl -fsS -D - -o /dev/null "${URL[$t]}$HIT_PATH" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}')
	[[ $got == HIT ]] || die "$t did not answer the second read from its cache (x-cache: ${got:-none})"
done

# run_wrk TARGET OUTFILE DURATION [SCRIPT ARGS...]: one wrk run; prints "ticks" of the
# target's CPU after the BENCH line in OUTFILE.
run_wrk() {
	local t=$1 out=$2 dur=$3 script=$4
	shift 4
	local c0 c1
	c0=$(cpu_ticks "${PID[$t]}")
	wrk -t1 -c"$CONNS" -d"${dur}s" -s "$script" "$@" >"$out"
	c1=$(cpu_ticks "${PID[$t]}")
	grep -q '^BENCH ' "$out" || die "wrk printed no result for $t: $(cat "$out")"
	echo "CPU ticks=$((c1 - c0))" >>"$out"
}

log "warming up (${WARMUP} s each)"
for t in "${TARGETS[@]}"; do
	wrk -t1 -c"$CONNS" -d"${WARMUP}s" "${URL[$t]}$(path_for "$t" "$HIT_PATH")" >/dev/null
done

# (a) hits.
printf 'round\ttarget\treq/s\tp50_us\tp99_us\tp999_us\terrors\tcpu_us_per_req\n' >"$OUT/hits.tsv"
n=${#TARGETS[@]}
for ((r = 1; r <= ROUNDS; r++)); do
	for ((k = 0; k < n; k++)); do
		t=${TARGETS[$(((k + r - 1) % n))]}
		res="$WORK/hit-$t-$r.txt"
		run_wrk "$t" "$res" "$DURATION" "$BENCH_DIR/wrk-report.lua" "${URL[$t]}$(path_for "$t" "$HIT_PATH")"
		awk -v t="$t" -v r="$r" -v hz="$HZ" '
			/^BENCH / { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
			/^CPU / { split($2, kv, "="); ticks = kv[2] }
			END {
				printf "%s\t%s\t%.0f\t%d\t%d\t%d\t%d\t%.1f\n", r, t, v["requests"] / (v["duration_us"] / 1e6),
					v["p50"], v["p99"], v["p999"], v["errors"], (v["requests"] > 0 ? ticks * 1e6 / hz / v["requests"] : 0)
			}' "$res" >>"$OUT/hits.tsv"
		log "hits round $r $t: $(tail -n1 "$OUT/hits.tsv" | cut -f3) req/s, p99 $(tail -n1 "$OUT/hits.tsv" | cut -f5) us"
	done
done

# room_counts: "<database queries> <GET /rooms/{id} answered>" from the room's /metrics.
room_counts() {
	curl -fsS "$ROOM_URL/metrics" | awk '
		/^hotel_db_query_duration_seconds_count/ { q += $NF }
		/^hotel_http_requests_total/ && /route="\/rooms\/\{id\}"/ && /method="GET"/ { g += $NF }
		END { printf "%d %d\n", q, g }'
}

# (b) Zipf reads; each cache starts holding only the room of (a).
printf 'target\treads\treq/s\tp99_us\terrors\tdb_queries\troom_reads\tavoided_pct\n' >"$OUT/zipf.tsv"
for t in "${TARGETS[@]}"; do
	res="$WORK/zipf-$t.txt"
	if [[ $t == direct ]]; then sed 's|^/api||' "$WORK/paths.txt" >"$WORK/zipf-paths-$t.txt"; else cp "$WORK/paths.txt" "$WORK/zipf-paths-$t.txt"; fi
	read -r q0 g0 < <(room_counts)
	run_wrk "$t" "$res" "$ZIPF_DURATION" "$BENCH_DIR/zipf.lua" "${URL[$t]}/" -- "$WORK/zipf-paths-$t.txt" "$ZIPF_S" 7
	read -r q1 g1 < <(room_counts)
	awk -v t="$t" -v q="$((q1 - q0))" -v g="$((g1 - g0))" '
		/^BENCH / { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
		END {
			reads = v["requests"]
			printf "%s\t%d\t%.0f\t%d\t%d\t%d\t%d\t%.2f\n", t, reads, reads / (v["duration_us"] / 1e6), v["p99"], v["errors"], q, g,
				(reads > 0 ? 100 * (1 - q / reads) : 0)
		}' "$res" >>"$OUT/zipf.tsv"
	log "zipf $t: $(tail -n1 "$OUT/zipf.tsv")"
done

{
	echo "Cache, $(date -u '+%Y-%m-%d %H:%M UTC'), $(machine_line)"
	echo "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), wrk $(wrk -v 2>&1 | awk 'NR==1{print $2}'), hotel $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '+dirty'); $WORKERS worker(s) per proxy; wrk 1 thread, $CONNS connections"
	echo
	echo "(a) Cache hits: one room, ${DURATION} s x $ROUNDS rounds (medians)"
	echo
	awk -F'\t' -v order="${TARGETS[*]}" '
		NR == 1 { next }
		{ n[$2]++; k = $2 SUBSEP n[$2]; rps[k] = $3; p50[k] = $4; p99[k] = $5; p999[k] = $6; cpu[k] = $8; err[$2] += $7 }
		'"$AWK_MEDIAN"'
		END {
			print "| target | req/s | p50 ms | p99 ms | p99.9 ms | errors | CPU us/req |"
			print "|---|---:|---:|---:|---:|---:|---:|"
			nt = split(order, ts, " ")
			for (i = 1; i <= nt; i++) {
				t = ts[i]; if (!(t in n)) continue
				printf "| %s | %.0f | %.2f | %.2f | %.2f | %d | %.1f |\n", t, med(rps, t), med(p50, t) / 1000, med(p99, t) / 1000, med(p999, t) / 1000, err[t], med(cpu, t)
			}
			if (("hotel-cache" in n) && ("nginx-cache" in n))
				printf "\nreq/s hotel-cache/nginx-cache %.2f, p99 hotel-cache/nginx-cache %.2f\n", med(rps, "hotel-cache") / med(rps, "nginx-cache"), med(p99, "hotel-cache") / med(p99, "nginx-cache")
		}' "$OUT/hits.tsv"
	echo
	echo "(b) Zipf reads over $ROOMS rooms (s = $ZIPF_S), ${ZIPF_DURATION} s per target; room max-age 5 s"
	echo
	echo "| target | reads | req/s | p99 ms | errors | room DB queries | room GETs | reads without a query |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|"
	awk -F'\t' 'NR > 1 { printf "| %s | %d | %.0f | %.2f | %d | %d | %d | %.1f %% |\n", $1, $2, $3, $4 / 1000, $5, $6, $7, $8 }' "$OUT/zipf.tsv"
} | tee "$OUT/cache.md"
log "results in $OUT"
