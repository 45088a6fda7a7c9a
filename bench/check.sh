#!/usr/bin/env bash
# The cheap check of the benchmark suite (what CI runs; benchmarks themselves are not
# CI tests): every bench script parses (bash -n) and config/bench-gateway.toml is a
# config the gateway accepts. The cargo test covers both, plus bench-load's unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."
for script in bench/*.sh; do
	bash -n "$script"
done
cargo test --quiet -p hotel-bench
echo "bench check: scripts parse, bench config valid"
