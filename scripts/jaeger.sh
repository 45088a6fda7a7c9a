#!/usr/bin/env bash
# A local Jaeger (v2.12, in-memory storage, loopback only) for reading hotel traces.
#
#   scripts/jaeger.sh install   put Jaeger in tools/bin/jaeger: the official release archive
#                               (checksum verified; real web UI) when it can be downloaded,
#                               else a build from the Go module (query API, no web UI)
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
# Which kind of binary is installed: `release` (official archive, with the UI) or
# `go-build` (from the Go module: a placeholder page instead of the UI).
KIND_FILE="$BIN.kind"
# Where the release archives are; a mirror can be set with JAEGER_RELEASE_BASE.
RELEASE_BASE="${JAEGER_RELEASE_BASE:-https://github.com/jaegertracing/jaeger/releases/download/v$JAEGER_VERSION}"
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

installed_kind() {
    if [ -f "$KIND_FILE" ]; then
        cat "$KIND_FILE"
    elif [ ! -x "$BIN" ]; then
        echo none
    elif grep -aq "This is not the Jaeger UI" "$BIN"; then
        # Installed before the kind file existed: the Go build embeds the UI placeholder.
        echo go-build
    else
        echo release
    fi
}

ui_missing_note() {
    say "this Jaeger has no web UI: it is built from the Go module, which lacks the UI assets;"
    say "the query API works (curl $UI_URL/api/v3/traces/<trace_id>)."
    say "For the UI: rerun '$0 install' where github.com is reachable (it fetches"
    say "$RELEASE_BASE/$(archive_name)), or run the image jaegertracing/jaeger:$JAEGER_VERSION."
}

# The release archive for this machine: jaeger-2.12.0-linux-amd64.tar.gz.
archive_name() {
    local os arch
    os="$(uname -s | tr '[:upper:]' '[:lower:]')"
    case "$(uname -m)" in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    ppc64le) arch=ppc64le ;;
    s390x) arch=s390x ;;
    *) arch="$(uname -m)" ;;
    esac
    echo "jaeger-$JAEGER_VERSION-$os-$arch.tar.gz"
}

# Downloads the official release archive and the release's checksum file
# (jaeger-<version>.sha256sum.txt, one `<sha256> *<archive>` line per archive), checks the
# archive with `sha256sum -c`, and extracts its `jaeger` binary. Any failure returns 1 and
# leaves nothing behind.
install_release() {
    command -v curl >/dev/null 2>&1 || { say "no curl: cannot download the release"; return 1; }
    command -v sha256sum >/dev/null 2>&1 || { say "no sha256sum: cannot verify the release"; return 1; }
    local tmp rc=0
    tmp="$(mktemp -d)"
    install_release_via "$tmp" || rc=1
    rm -rf "$tmp"
    return "$rc"
}

install_release_via() {
    local tmp="$1" archive sums
    archive="$(archive_name)"
    sums="jaeger-$JAEGER_VERSION.sha256sum.txt"
    say "downloading $RELEASE_BASE/$archive"
    if ! curl -fsSL --connect-timeout 5 --max-time 300 -o "$tmp/$archive" "$RELEASE_BASE/$archive" ||
        ! curl -fsSL --connect-timeout 5 --max-time 60 -o "$tmp/$sums" "$RELEASE_BASE/$sums"; then
        say "could not download the release archive or its checksum file"
        return 1
    fi
    # Only the line of our archive: the file lists every platform's archive.
    if ! grep -E "^[0-9a-f]{64} [ *]$archive\$" "$tmp/$sums" >"$tmp/check.txt" ||
        ! (cd "$tmp" && sha256sum -c --status check.txt); then
        say "the checksum of $archive does not match $sums: not using it"
        return 1
    fi
    if ! tar -xzf "$tmp/$archive" -C "$tmp" "${archive%.tar.gz}/jaeger" 2>/dev/null ||
        [ ! -x "$tmp/${archive%.tar.gz}/jaeger" ]; then
        say "$archive has no executable ${archive%.tar.gz}/jaeger"
        return 1
    fi
    mkdir -p "$(dirname "$BIN")"
    mv "$tmp/${archive%.tar.gz}/jaeger" "$BIN.partial" || return 1
    mv "$BIN.partial" "$BIN" || return 1
    echo release >"$KIND_FILE"
    say "installed the official Jaeger $JAEGER_VERSION release (with the web UI) at $BIN"
}

# Builds the Go module (no web UI); the fallback where the release cannot be downloaded.
install_go_build() {
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
    mv "$BIN.partial" "$BIN" || return 1
    echo go-build >"$KIND_FILE"
    say "installed at $BIN (built from the Go module)"
}

install() {
    local kind
    kind="$(installed_kind)"
    if [ -x "$BIN" ] && [ "$kind" = release ]; then
        say "installed at $BIN (official release, with the web UI)"
        return 0
    fi
    # No binary, or a Go build: the release (seconds, and the UI) is worth a try first.
    if install_release; then
        return 0
    fi
    if [ -x "$BIN" ]; then
        say "keeping the Go build at $BIN"
        echo go-build >"$KIND_FILE"
    else
        say "falling back to building Jaeger from its Go module"
        install_go_build || return 1
    fi
    ui_missing_note
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
    if [ "$(installed_kind)" = go-build ]; then
        ui_missing_note
    fi
    say "running (pid $pid, $(installed_kind)): UI and query API $UI_URL," \
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
            say "running (pid $pid), ready: UI $UI_URL ($(installed_kind))"
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
