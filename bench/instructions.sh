#!/usr/bin/env bash
# Instructions per proxied request on the gateway's thread: `bench-allocs` (the gateway's
# real stack in one process, see bench/README.md) under valgrind's callgrind, run twice
# with different request counts; the difference divided by the difference in requests
# leaves out start-up and warm-up. Unlike req/s it does not move with the machine's load
# (two runs agree within about 0.5 %), so it can compare two commits on a busy machine.
# It counts user-space instructions only: syscalls and the kernel's TCP work are not in it.
#
#   bench/instructions.sh                 release build of bench-allocs, 1,000 vs 4,000
#   BENCH_ALLOCS=path bench/instructions.sh   an existing binary
#
# Needs valgrind (installed with apt-get when missing).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BENCH_ALLOCS:-$ROOT/target/release/bench-allocs}"
if [[ -z "${BENCH_ALLOCS:-}" ]]; then
	(cd "$ROOT" && cargo build --release --quiet -p hotel-bench-allocs)
fi
[[ -x "$BIN" ]] || { echo "instructions: no bench-allocs at $BIN" >&2; exit 1; }
if ! command -v valgrind >/dev/null; then
	echo "instructions: installing valgrind with apt-get" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null ||
		{ echo "instructions: valgrind is missing and could not be installed" >&2; exit 1; }
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/hotel-instructions.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# The gateway's thread is the process's third: main, the load client's runtime worker,
# then the gateway (see bench/allocs/src/main.rs).
gateway_ir() {
	rm -f "$WORK"/cg.*
	valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$WORK/cg.%p" \
		"$BIN" --requests "$1" --warmup 500 >"$WORK/out.txt" 2>"$WORK/err.txt" ||
		{ cat "$WORK/err.txt" >&2; exit 1; }
	awk '/^summary:/{print $2}' "$WORK"/cg.*-03
}
a=$(gateway_ir 1000)
b=$(gateway_ir 4000)
echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "gateway instructions per proxied request: $(((b - a) / 3000))"
