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
postgres_we_started=""
nats_we_started=""
cleanup() {
    if [ -n "$nats_we_started" ]; then
        ./scripts/nats.sh stop || true
    fi
    if [ -n "$jaeger_pid_we_started" ]; then
        ./scripts/jaeger.sh stop || true
    fi
    if [ -n "$postgres_we_started" ]; then
        ./scripts/postgres.sh stop || true
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

if [ -n "${HOTEL_TEST_POSTGRES_URL:-}" ]; then
    echo "test.sh: using the PostgreSQL at HOTEL_TEST_POSTGRES_URL" >&2
elif ./scripts/postgres.sh install; then
    if ./scripts/postgres.sh status | grep -q '^running'; then
        HOTEL_TEST_POSTGRES_URL="$(./scripts/postgres.sh url)"
    elif HOTEL_TEST_POSTGRES_URL="$(./scripts/postgres.sh start)"; then
        postgres_we_started=yes
    else
        HOTEL_TEST_POSTGRES_URL=""
    fi
    if [ -n "$HOTEL_TEST_POSTGRES_URL" ]; then
        export HOTEL_TEST_POSTGRES_URL
    elif [ "${CI:-}" = "true" ]; then
        echo "test.sh: PostgreSQL is required in CI: it did not start" >&2
        exit 1
    else
        echo "test.sh: running without PostgreSQL (it did not start); its tests will be skipped" >&2
    fi
elif [ "${CI:-}" = "true" ]; then
    echo "test.sh: PostgreSQL is required in CI: it could not be installed" >&2
    exit 1
else
    echo "test.sh: running without PostgreSQL (it could not be installed); its tests will be skipped" >&2
fi

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

if [ -n "${HOTEL_TEST_NATS_URL:-}" ]; then
    echo "test.sh: using the NATS server at HOTEL_TEST_NATS_URL" >&2
elif ./scripts/nats.sh install; then
    if ./scripts/nats.sh status | grep -q '^running'; then
        HOTEL_TEST_NATS_URL="$(./scripts/nats.sh url)"
    elif HOTEL_TEST_NATS_URL="$(./scripts/nats.sh start)"; then
        nats_we_started=yes
    else
        HOTEL_TEST_NATS_URL=""
    fi
    if [ -n "$HOTEL_TEST_NATS_URL" ]; then
        export HOTEL_TEST_NATS_URL
    elif [ "${CI:-}" = "true" ]; then
        echo "test.sh: NATS is required in CI: nats-server did not start" >&2
        exit 1
    else
        echo "test.sh: running without NATS (nats-server did not start); its tests will be skipped" >&2
    fi
elif [ "${CI:-}" = "true" ]; then
    echo "test.sh: NATS is required in CI: nats-server could not be installed" >&2
    exit 1
else
    echo "test.sh: running without NATS (nats-server could not be installed); its tests will be skipped" >&2
fi

# --no-fail-fast: one run shows every failing test, not only the first failing binary.
cargo test --workspace --no-fail-fast "$@"
