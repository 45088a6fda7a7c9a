#!/usr/bin/env bash
# The whole test suite: the README's test command. Installs and starts what the tests
# need (a real Jaeger for the tracing end-to-end test), runs every test, stops Jaeger.
#
# Without Go on a developer machine, Jaeger is skipped and the end-to-end tracing test
# says so and passes; in CI (CI=true) a Jaeger that cannot be installed or started fails
# the run. Extra arguments go to `cargo test`.
#
# PostgreSQL (scripts/postgres.sh: Debian's package, a private cluster on its own port)
# is installed and started the same way: the services' tests then run on both backends
# (HOTEL_TEST_POSTGRES_URL); without it the PostgreSQL variants say they are skipped, and
# in CI they fail.
#
# Chromium (scripts/chromium.sh: Debian's package) drives the dashboard's browser test
# (tests/tests/dashboard.rs) through HOTEL_TEST_CHROMIUM; without it that test says it is
# skipped, and in CI it fails.
#
# NATS (scripts/nats.sh: Debian's nats-server, else the Go module; `nats-server -js` on
# loopback port 54222) is installed and started the same way: the event drills then also
# run over NATS JetStream (HOTEL_TEST_NATS_URL); without it the NATS variants say they are
# skipped, and in CI they fail.
#
# The container tests (tests/tests/containers.rs: compose; tests/tests/k8s.rs: the
# Kubernetes manifests with `podman kube play`) install what they need themselves through
# scripts/podman.sh (podman, runc, catatonit, podman-compose; root and apt) and
# scripts/kustomize.sh (a renderer: kustomize, kubectl, or kustomize built with Go), and
# build the image through scripts/image.sh (dev profile); without podman or a renderer
# they are skipped, except in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

jaeger_pid_we_started=""
servers_we_started=()
cleanup() {
    local script
    for script in "${servers_we_started[@]}"; do
        "$script" stop || true
    done
    if [ -n "$jaeger_pid_we_started" ]; then
        ./scripts/jaeger.sh stop || true
    fi
}
trap cleanup EXIT

jaeger_unavailable() {
    if [ "${CI:-}" = "true" ]; then
        echo "test.sh: Jaeger is required in CI: $*" >&2
        exit 1
    fi
    echo "test.sh: running without Jaeger ($*); the end-to-end tracing test will be skipped" >&2
}

ui="http://127.0.0.1:${JAEGER_UI_PORT:-16686}"
jaeger_ready=""
if curl -fsS --max-time 2 "$ui/api/services" >/dev/null 2>&1; then
    # A Jaeger is already up (scripts/jaeger.sh start, or the container): use it and
    # leave it running.
    echo "test.sh: using the Jaeger already answering on $ui" >&2
    jaeger_ready=yes
elif ./scripts/jaeger.sh install; then
    if ./scripts/jaeger.sh start; then
        jaeger_pid_we_started="$(cat tools/jaeger/jaeger.pid)"
        jaeger_ready=yes
    else
        jaeger_unavailable "it did not start"
    fi
else
    jaeger_unavailable "it could not be installed"
fi
if [ -n "$jaeger_ready" ]; then
    export HOTEL_TEST_JAEGER="$ui"
    export HOTEL_TEST_OTLP_ENDPOINT="http://127.0.0.1:${JAEGER_OTLP_GRPC_PORT:-4317}"
fi

# A private server the tests use, through scripts/SCRIPT.sh (install|status|url|start):
# with VAR already set, that one; else installed, reused when running, or started (then
# stopped at exit). Exports VAR; without one, says which tests are skipped, and fails in CI.
#   private_server NAME SCRIPT VAR
private_server() {
    local name=$1 script=./scripts/$2.sh var=$3 url="" why="it did not start"
    if [ -n "${!var:-}" ]; then
        echo "test.sh: using the $name at $var" >&2
        return
    fi
    if ! "$script" install; then
        why="it could not be installed"
    elif "$script" status | grep -q '^running'; then
        url="$("$script" url)"
    elif url="$("$script" start)"; then
        servers_we_started+=("$script")
    fi
    if [ -n "$url" ]; then
        export "$var=$url"
    elif [ "${CI:-}" = "true" ]; then
        echo "test.sh: $name is required in CI: $why" >&2
        exit 1
    else
        echo "test.sh: running without $name ($why); its tests will be skipped" >&2
    fi
}

private_server PostgreSQL postgres HOTEL_TEST_POSTGRES_URL

if [ -n "${HOTEL_TEST_CHROMIUM:-}" ]; then
    echo "test.sh: using the Chromium at HOTEL_TEST_CHROMIUM" >&2
elif ./scripts/chromium.sh install && HOTEL_TEST_CHROMIUM="$(./scripts/chromium.sh path)"; then
    export HOTEL_TEST_CHROMIUM
elif [ "${CI:-}" = "true" ]; then
    echo "test.sh: Chromium is required in CI: it could not be installed" >&2
    exit 1
else
    echo "test.sh: running without Chromium (it could not be installed); the dashboard's browser test will be skipped" >&2
fi

private_server NATS nats HOTEL_TEST_NATS_URL

# --no-fail-fast: one run shows every failing test, not only the first failing binary.
cargo test --workspace --no-fail-fast "$@"
