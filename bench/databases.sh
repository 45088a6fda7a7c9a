#!/usr/bin/env bash
# Database benchmark: bookings per second and p99 latency through the gateway of a
# `hotel up` cluster, on SQLite (the file in the data directory) and on PostgreSQL
# (`hotel up --postgres`, a private server from scripts/postgres.sh), with 1 and 2
# booking replicas (customer and room: 1 each). The load is closed-loop: CONC clients
# each POST /api/bookings (with an Idempotency-Key, random room and dates) as soon as
# their last answer arrived, for DURATION seconds; a 409 (room taken) counts as an
# answer but not as a booking.
#
#   bench/databases.sh                      both backends, 1 and 2 replicas
#   CONC=32 DURATION=20 bench/databases.sh
#
# Environment: HOTEL_BIN (default target/release/hotel), CONC (16), DURATION (15),
# HOTEL_PG_PORT (55432: the private server scripts/postgres.sh starts and this stops).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HOTEL="${HOTEL_BIN:-$ROOT/target/release/hotel}"
CONC="${CONC:-16}"
DURATION="${DURATION:-15}"
WORK="$(mktemp -d /tmp/hotel-bench-db.XXXXXX)"
UP_PID=""
PG_STARTED=""

log() { printf '[bench] %s\n' "$*" >&2; }
cleanup() {
    if [ -n "$UP_PID" ]; then kill -INT "$UP_PID" 2>/dev/null || true; wait "$UP_PID" 2>/dev/null || true; fi
    if [ -n "$PG_STARTED" ]; then "$ROOT/scripts/postgres.sh" stop || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

[ -x "$HOTEL" ] || { log "build it first: cargo build --release -p hotel"; exit 1; }
"$ROOT/scripts/postgres.sh" install
if "$ROOT/scripts/postgres.sh" status | grep -q '^running'; then
    PG_URL="$("$ROOT/scripts/postgres.sh" url)"
else
    PG_URL="$("$ROOT/scripts/postgres.sh" start)"
    PG_STARTED=yes
fi

# One run: backend ($1 sqlite|postgres), booking replicas ($2). Prints a table row.
run() {
    local backend="$1" replicas="$2" dir="$WORK/$1-$2" extra=()
    if [ "$backend" = postgres ]; then
        for db in hotel_customer hotel_room hotel_booking; do
            psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
        done
        extra=(--postgres "$PG_URL")
    fi
    "$HOTEL" up --data-dir "$dir" --gateway-port 0 --admin-port 0 --registry-port 0 \
        --replicas "customer=1,room=1,booking=$replicas" "${extra[@]}" >"$WORK/up-$backend-$replicas.log" 2>&1 &
    UP_PID=$!
    local i
    for i in $(seq 1 600); do
        if grep -q '"ready": *true' "$dir/cluster.json" 2>/dev/null; then break; fi
        sleep 0.1
    done
    grep -q '"ready": *true' "$dir/cluster.json" || { log "cluster did not start"; cat "$WORK/up-$backend-$replicas.log" >&2; exit 1; }
    local json
    json="$("$HOTEL" load --data-dir "$dir" --mix book=1 --concurrency "$CONC" \
        --duration "${DURATION}s" --seed-rooms 200 --json --quiet --max-error-rate 1)"
    kill -INT "$UP_PID"; wait "$UP_PID" || true; UP_PID=""
    python3 - "$backend" "$replicas" "$json" <<'EOF'
import json, sys
backend, replicas, s = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
book = s["by_op"]["book"]
print(f"| {backend} | {replicas} | {book['ok'] / s['duration_s']:.0f} | {s['latency']['p50_ms']:.1f} | "
      f"{s['latency']['p99_ms']:.1f} | {book['requests']} | {s['errors_by_kind']} |")
EOF
}

echo "| database | booking replicas | bookings/s | p50 ms | p99 ms | requests | errors |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for backend in sqlite postgres; do
    for replicas in 1 2; do
        run "$backend" "$replicas"
    done
done
