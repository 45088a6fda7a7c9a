#!/usr/bin/env bash
# A local Jaeger (v2.12, in-memory storage, loopback only) for reading hotel traces.
#
#   scripts/jaeger.sh install   build tools/bin/jaeger with Go if it is missing
#   scripts/jaeger.sh start     start it in the background and wait until it is ready
#   scripts/jaeger.sh stop      stop the one we started (by the PID in its pid file)
#   scripts/jaeger.sh status    running or not, and where
#   scripts/jaeger.sh env       the export lines that point `hotel` at it
#
# Ports (all on 127.0.0.1, each overridable by the variable named):
#   OTLP/gRPC 4317 (JAEGER_OTLP_GRPC_PORT), OTLP/HTTP 4318 (JAEGER_OTLP_HTTP_PORT),
#   UI + query API 16686 (JAEGER_UI_PORT), query gRPC 16685 (JAEGER_QUERY_GRPC_PORT),
#   health 13133 (JAEGER_HEALTH_PORT).
# Without Go, run the official image instead:
#   docker run --rm -p 127.0.0.1:16686:16686 -p 127.0.0.1:4317:4317 \
#     -p 127.0.0.1:4318:4318 jaegertracing/jaeger:2.12.0
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# The one place the Jaeger version is pinned. The Go module v1.75.0 of
# github.com/jaegertracing/jaeger is Jaeger v2.12.0, the approved release (the module
# proxy also serves v1.76.0, which is not an approved release).
JAEGER_MODULE="github.com/jaegertracing/jaeger"
JAEGER_MODULE_VERSION="v1.75.0"
JAEGER_VERSION="2.12.0"
BIN="${JAEGER_BIN:-$ROOT/tools/bin/jaeger}"
CONFIG="$ROOT/deploy/jaeger/config.yaml"
STATE="$ROOT/tools/jaeger"
PIDFILE="$STATE/jaeger.pid"
LOG="$STATE/jaeger.log"

export JAEGER_OTLP_GRPC_PORT="${JAEGER_OTLP_GRPC_PORT:-4317}"
export JAEGER_OTLP_HTTP_PORT="${JAEGER_OTLP_HTTP_PORT:-4318}"
export JAEGER_UI_PORT="${JAEGER_UI_PORT:-16686}"
export JAEGER_QUERY_GRPC_PORT="${JAEGER_QUERY_GRPC_PORT:-16685}"
export JAEGER_HEALTH_PORT="${JAEGER_HEALTH_PORT:-13133}"
UI_URL="http://127.0.0.1:$JAEGER_UI_PORT"
HEALTH_URL="http://127.0.0.1:$JAEGER_HEALTH_PORT/status"

say() { echo "jaeger: $*" >&2; }

install() {
    if [ -x "$BIN" ]; then
        say "installed at $BIN"
        return 0
    fi
    if ! command -v go >/dev/null 2>&1; then
        say "Go is not installed, so $BIN cannot be built."
        say "Install Go (https://go.dev/dl/) or run the image jaegertracing/jaeger:$JAEGER_VERSION."
        return 1
    fi
    mkdir -p "$(dirname "$BIN")"
    say "building Jaeger $JAEGER_MODULE_VERSION (Jaeger $JAEGER_VERSION) into $BIN; this takes minutes"
    # `go install module@version` refuses this module (its go.mod has replace
    # directives), so build it from its own source in the module cache, where those
    # directives apply exactly as in Jaeger's release builds.
    local dir
    dir="$(go mod download -json "$JAEGER_MODULE@$JAEGER_MODULE_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    if [ -z "$dir" ] || [ ! -d "$dir" ]; then
        say "could not download $JAEGER_MODULE@$JAEGER_MODULE_VERSION"
        return 1
    fi
    (cd "$dir" && go build -trimpath -o "$BIN.partial" ./cmd/jaeger)
    mv "$BIN.partial" "$BIN"
    say "installed at $BIN"
}

# The PID of the Jaeger we started, if it is still that process.
running_pid() {
    [ -f "$PIDFILE" ] || return 1
    local pid
    pid="$(cat "$PIDFILE")"
    [ -n "$pid" ] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled PID: the process must be our binary.
    if [ -r "/proc/$pid/cmdline" ] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "jaeger"; then
        return 1
    fi
    echo "$pid"
}

need_curl() {
    command -v curl >/dev/null 2>&1 || { say "curl is required to check readiness"; return 1; }
}

ready() {
    curl -fsS --max-time 2 "$HEALTH_URL" >/dev/null 2>&1 &&
        curl -fsS --max-time 2 "$UI_URL/api/services" >/dev/null 2>&1
}

start() {
    need_curl || return 1
    local pid
    if pid="$(running_pid)"; then
        say "already running (pid $pid), UI $UI_URL"
        return 0
    fi
    if [ ! -x "$BIN" ]; then
        say "$BIN is missing: run '$0 install' first"
        return 1
    fi
    if ready; then
        say "something already answers on $UI_URL and $HEALTH_URL; not starting a second one"
        return 1
    fi
    mkdir -p "$STATE"
    : >"$LOG"
    # setsid: Ctrl-C in the terminal that started it does not reach it; `stop` does.
    setsid "$BIN" --config "$CONFIG" >>"$LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PIDFILE"
    local deadline=$((SECONDS + 60))
    until ready; do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "exited during start-up; log ($LOG):"
            tail -n 30 "$LOG" >&2
            rm -f "$PIDFILE"
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "not ready after 60 s; stopping it. Log ($LOG):"
            tail -n 30 "$LOG" >&2
            stop
            return 1
        fi
        sleep 0.2
    done
    say "running (pid $pid): UI and query API $UI_URL," \
        "OTLP gRPC 127.0.0.1:$JAEGER_OTLP_GRPC_PORT, OTLP HTTP 127.0.0.1:$JAEGER_OTLP_HTTP_PORT"
}

stop() {
    local pid
    if ! pid="$(running_pid)"; then
        say "not running"
        rm -f "$PIDFILE"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "pid $pid ignored SIGTERM for 10 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$PIDFILE"
    say "stopped (pid $pid)"
}

status() {
    need_curl || return 1
    local pid
    if pid="$(running_pid)"; then
        if ready; then
            say "running (pid $pid), ready: UI $UI_URL"
        else
            say "running (pid $pid) but not answering on $UI_URL"
        fi
        return 0
    fi
    say "not running"
    return 3
}

env_lines() {
    echo "export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$JAEGER_OTLP_GRPC_PORT"
    echo "export OTEL_EXPORTER_OTLP_PROTOCOL=grpc"
    echo "# traces: $UI_URL"
}

case "${1:-}" in
install) install ;;
start) start ;;
stop) stop ;;
status) status ;;
env) env_lines ;;
*)
    echo "usage: $0 install|start|stop|status|env" >&2
    exit 2
    ;;
esac
