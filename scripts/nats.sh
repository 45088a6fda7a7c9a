#!/usr/bin/env bash
# A private NATS server with JetStream (`nats-server -js`) for the event bus's tests,
# drills and benchmark: loopback only, its own port, store directory and pid file, never
# the system's service.
#
#   scripts/nats.sh install   Debian's nats-server (apt-get, through `sudo -n` when not
#                             root) when none is found, else `go install` of the pinned
#                             Go module into tools/bin
#   scripts/nats.sh start     start it in the background, wait until it answers; prints
#                             the URL
#   scripts/nats.sh stop      stop the one started here (by the pid in its pid file)
#   scripts/nats.sh status    running or not, and the URL
#   scripts/nats.sh url       the URL only (nats://127.0.0.1:PORT)
#
# Settings (environment): HOTEL_NATS_PORT (54222), HOTEL_NATS_MONITOR_PORT (58222; the
# HTTP monitor, /healthz?js-enabled-only=true answers once JetStream is up), HOTEL_NATS_DIR
# (store, pid file and log; default tools/nats/PORT). A throw-away server for local runs
# and CI: no authentication, bound to 127.0.0.1.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# The Go module version used when Debian's package cannot be installed.
NATS_MODULE="github.com/nats-io/nats-server/v2"
NATS_MODULE_VERSION="v2.15.3"
PORT="${HOTEL_NATS_PORT:-54222}"
MONITOR_PORT="${HOTEL_NATS_MONITOR_PORT:-58222}"
DIR="${HOTEL_NATS_DIR:-$ROOT/tools/nats/$PORT}"
PIDFILE="$DIR/nats-server.pid"
LOG="$DIR/nats-server.log"
URL="nats://127.0.0.1:$PORT"
GO_BIN="$ROOT/tools/bin/nats-server"

say() { echo "nats: $*" >&2; }

# The nats-server binary: on PATH (Debian's package), else the Go build in tools/bin.
binary() {
    if command -v nats-server >/dev/null 2>&1; then
        command -v nats-server
    elif [ -x "$GO_BIN" ]; then
        echo "$GO_BIN"
    else
        return 1
    fi
}

install_apt() {
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            say "installing with apt-get needs root or sudo"
            return 1
        fi
    fi
    command -v apt-get >/dev/null 2>&1 || { say "no apt-get"; return 1; }
    say "installing nats-server (apt-get)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nats-server >/dev/null 2>&1 ||
        { "${sudo[@]}" apt-get update -q >/dev/null 2>&1 &&
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nats-server >/dev/null 2>&1; }
    command -v nats-server >/dev/null 2>&1
}

install_go() {
    command -v go >/dev/null 2>&1 || { say "no Go to build $NATS_MODULE@$NATS_MODULE_VERSION"; return 1; }
    say "building $NATS_MODULE@$NATS_MODULE_VERSION into $GO_BIN; this takes a minute or two"
    mkdir -p "$(dirname "$GO_BIN")"
    GOBIN="$(dirname "$GO_BIN")" go install "$NATS_MODULE@$NATS_MODULE_VERSION"
    [ -x "$GO_BIN" ]
}

install() {
    if binary >/dev/null; then
        return 0
    fi
    install_apt || install_go || {
        say "nats-server could not be installed (apt-get install nats-server, or Go for $NATS_MODULE)"
        return 1
    }
}

# The pid of the server started here, if it is still that process.
running_pid() {
    [ -f "$PIDFILE" ] || return 1
    local pid
    pid="$(cat "$PIDFILE")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: the process must be a nats-server.
    if [ -r "/proc/$pid/cmdline" ] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "nats-server"; then
        return 1
    fi
    echo "$pid"
}

ready() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 2 "http://127.0.0.1:$MONITOR_PORT/healthz?js-enabled-only=true" >/dev/null 2>&1
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
    fi
}

start() {
    local bin pid
    bin="$(binary)" || { say "not installed (run '$0 install')"; return 1; }
    if pid="$(running_pid)"; then
        echo "$URL"
        return 0
    fi
    mkdir -p "$DIR/store"
    # setsid: the server outlives this script and is not in the caller's process group
    # (a test's Ctrl-C does not reach it; it is stopped by pid).
    setsid "$bin" -js -a 127.0.0.1 -p "$PORT" -m "$MONITOR_PORT" -sd "$DIR/store" \
        -n "hotel-$PORT" -P "$PIDFILE" -l "$LOG" </dev/null >/dev/null 2>&1 &
    local i
    for i in $(seq 1 200); do
        if running_pid >/dev/null && ready; then
            echo "$URL"
            return 0
        fi
        sleep 0.05
    done
    say "did not start within 10 s; see $LOG"
    tail -5 "$LOG" >&2 2>/dev/null || true
    return 1
}

stop() {
    local pid i
    pid="$(running_pid)" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { say "stopped (pid $pid)"; rm -f "$PIDFILE"; return 0; }
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
    say "killed (pid $pid)"
}

case "${1:-}" in
install) install ;;
start) start ;;
stop) stop ;;
status) if pid="$(running_pid)"; then echo "running: $URL (pid $pid, $DIR)"; else echo "not running ($DIR)"; fi ;;
url) echo "$URL" ;;
*)
    echo "usage: $0 install|start|stop|status|url" >&2
    exit 2
    ;;
esac
