#!/usr/bin/env bash
# Event bus benchmark: events per second through each bus, and publish-to-effect latency
# p50/p99 at 100 and 1,000 events/s, on the embedded bus and on NATS JetStream (`hotel up
# --events`, a private nats-server from scripts/nats.sh).
#
# The events are booking's: `hotel.booking.created` rows written straight into booking's
# outbox (as booking's own transactions write them, one row per commit), so the numbers
# are the bus's (feed or relay + broker, consumer, inbox transaction), not the booking
# API's. Their effect is customer's: each event is applied in one transaction with its
# inbox row (and a customer's `bookings.active` count). Latency is from the outbox row's
# time to the inbox row's `applied_at` (the effect's commit), both from this host's clock.
#
#   bench/events.sh                    both buses
#   BUSES=nats bench/events.sh         one
#
# Environment: HOTEL_BIN (default target/release/hotel), BUSES ("embedded nats"),
# SECONDS_PER_RATE (10), BURST (5000 events written in one transaction for the
# throughput), HOTEL_NATS_PORT (54333: the private server this starts and stops).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HOTEL="${HOTEL_BIN:-$ROOT/target/release/hotel}"
BUSES="${BUSES:-embedded nats}"
SECONDS_PER_RATE="${SECONDS_PER_RATE:-10}"
BURST="${BURST:-5000}"
export HOTEL_NATS_PORT="${HOTEL_NATS_PORT:-54333}"
export HOTEL_NATS_MONITOR_PORT="${HOTEL_NATS_MONITOR_PORT:-58333}"
WORK="$(mktemp -d /tmp/hotel-bench-events.XXXXXX)"
export HOTEL_NATS_DIR="$WORK/nats"
UP_PID=""
NATS_STARTED=""

log() { printf '[bench] %s\n' "$*" >&2; }
stop_up() {
    if [ -n "$UP_PID" ]; then
        kill -INT "$UP_PID" 2>/dev/null || true
        wait "$UP_PID" 2>/dev/null || true
        UP_PID=""
    fi
}
cleanup() {
    stop_up
    if [ -n "$NATS_STARTED" ]; then "$ROOT/scripts/nats.sh" stop || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

[ -x "$HOTEL" ] || { log "build it first: cargo build --release -p hotel"; exit 1; }
command -v python3 >/dev/null || { log "python3 is needed (it writes the events and reads the results)"; exit 1; }

# One bus ($1 embedded|nats): a cluster of one replica each, a customer, then the rates
# and the burst. Prints table rows.
run() {
    local bus="$1" dir="$WORK/$1" extra=()
    if [ "$bus" = nats ]; then
        # A fresh server per run: an empty stream, no durable consumer from before.
        "$ROOT/scripts/nats.sh" stop >/dev/null 2>&1 || true
        rm -rf "$HOTEL_NATS_DIR"
        "$ROOT/scripts/nats.sh" install
        extra=(--events "$("$ROOT/scripts/nats.sh" start)")
        NATS_STARTED=yes
    fi
    "$HOTEL" up --data-dir "$dir" --gateway-port 0 --admin-port 0 --registry-port 0 \
        --replicas 1 "${extra[@]}" >"$WORK/up-$bus.log" 2>&1 &
    UP_PID=$!
    local i
    for i in $(seq 1 600); do
        if grep -q '"ready": *true' "$dir/cluster.json" 2>/dev/null; then break; fi
        sleep 0.1
    done
    grep -q '"ready": *true' "$dir/cluster.json" || { log "cluster did not start"; cat "$WORK/up-$bus.log" >&2; exit 1; }
    local customer_url
    customer_url="$(python3 -c 'import json,sys; f=json.load(open(sys.argv[1])); print(next("http://"+i["address"] for i in f["instances"] if i["service"]=="customer"))' "$dir/cluster.json")"
    local customer
    customer="$(curl -fsS -H 'content-type: application/json' \
        -d '{"name":"Bench","email":"bench@example.com"}' "$customer_url/customers" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
    log "$bus: cluster up, customer $customer"
    python3 - "$bus" "$dir" "$customer" "$SECONDS_PER_RATE" "$BURST" <<'PY'
import json, sqlite3, sys, time, uuid
bus, d, customer, seconds, burst = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
booking = sqlite3.connect(f"{d}/booking.db", timeout=30, isolation_level=None)
booking.execute("PRAGMA busy_timeout = 30000")
booking.execute("PRAGMA synchronous = NORMAL")
inbox = sqlite3.connect(f"{d}/customer.db", timeout=30, isolation_level=None)
inbox.execute("PRAGMA busy_timeout = 30000")

def event(now_us):
    t = time.gmtime(now_us // 1_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{now_us % 1_000_000:06d}Z"
    eid = str(uuid.uuid4())
    body = {
        "specversion": "1.0", "id": eid, "source": "/hotel/booking/bench",
        "type": "hotel.booking.created", "subject": eid, "time": stamp,
        "datacontenttype": "application/json",
        "data": {"id": eid, "customer_id": customer},
    }
    return (eid, "hotel.booking.created", json.dumps(body), now_us)

def insert(rows):
    booking.execute("BEGIN IMMEDIATE")
    booking.executemany("INSERT INTO event_outbox (id, type, body, created_at) VALUES (?, ?, ?, ?)", rows)
    booking.execute("COMMIT")

def applied():
    return inbox.execute("SELECT COUNT(*) FROM event_inbox").fetchone()[0]

def wait_for(n, within):
    deadline = time.time() + within
    while time.time() < deadline:
        if applied() >= n:
            return time.time()
        time.sleep(0.005)
    sys.exit(f"{bus}: only {applied()} of {n} events applied within {within} s")

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def now_us():
    return time.time_ns() // 1000

inbox.execute("ATTACH DATABASE ? AS b", (f"{d}/booking.db",))
done = applied()
for rate in (100, 1000):
    n = rate * seconds
    ids = []
    start = time.time()
    for k in range(n):
        # Paced against the clock: one event per 1/rate s, late ones sent at once.
        delay = start + k / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        row = event(now_us())
        ids.append(row[0])
        insert([row])
    sent = time.time() - start
    done += n
    wait_for(done, 120)
    lat = [r[0] / 1000 for r in inbox.execute(
        "SELECT i.applied_at - o.created_at FROM event_inbox i JOIN b.event_outbox o ON o.id = i.id "
        "WHERE o.created_at >= ?", (int(start * 1e6),))]
    print(f"| {bus} | {rate}/s offered ({n / sent:.0f}/s written) | {len(lat)} | "
          f"{pct(lat, 50):.1f} ms | {pct(lat, 99):.1f} ms |", flush=True)

# Throughput: a burst in one transaction, timed from its commit to the last effect.
rows = [event(now_us()) for _ in range(burst)]
insert(rows)
t0 = time.time()
done += burst
t1 = wait_for(done, 600)
print(f"| {bus} | burst of {burst} | {burst} | {burst / (t1 - t0):.0f} events/s | |", flush=True)
PY
    stop_up
    if [ "$bus" = nats ]; then "$ROOT/scripts/nats.sh" stop >/dev/null 2>&1 || true; NATS_STARTED=""; fi
}

commit="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "events benchmark, commit $commit, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| bus | load | events | p50 / events/s | p99 |"
echo "| --- | --- | --- | --- | --- |"
for bus in $BUSES; do
    run "$bus"
done
