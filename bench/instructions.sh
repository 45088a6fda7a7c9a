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
#   bench/instructions.sh --process [HOTEL_BIN]   the whole gateway process as users run
#                                         it (default target/release/hotel, the release
#                                         profile with LTO): behind the benchmark's three
#                                         nginx upstreams, wrk on 16 connections, counts
#                                         zeroed after a 4 s warm-up, then 10 s counted;
#                                         all its threads, divided by wrk's requests
#
# glibc copies blocks past a few KiB with `rep movsb`, which callgrind counts once per
# byte, and whether it does depends on the two addresses (it avoids 4 KiB aliasing): one
# 6 KiB future moved into a box counted 13k "instructions" in one build and 450 in the
# next. Both modes make glibc copy with its vector loop instead (GLIBC_TUNABLES below), so
# a copy counts about what it costs and a count does not move with addresses.
#
# Needs valgrind (installed with apt-get when missing).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=1073741824

if [[ "${1:-}" == "--process" ]]; then
	HOTEL_BIN="${2:-$ROOT/target/release/hotel}"
	HOTEL_BIN="$(cd "$(dirname "$HOTEL_BIN")" && pwd)/$(basename "$HOTEL_BIN")"
	[[ -x "$HOTEL_BIN" ]] || { echo "instructions: no gateway binary at $HOTEL_BIN" >&2; exit 1; }
	export BENCH_NO_BUILD=1
	# shellcheck source=bench/lib.sh
	source "$ROOT/bench/lib.sh"
	ensure_tools
	command -v valgrind >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null ||
		die "valgrind is missing and could not be installed"
	build_bins
	setup_work
	trap cleanup EXIT
	start_upstreams
	# The gateway under callgrind, started as bench/run.sh starts it.
	printf '#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s/cg.%%p %s "$@"\n' \
		"$WORK" "$HOTEL_BIN" >"$WORK/under-callgrind"
	chmod +x "$WORK/under-callgrind"
	port=$(free_ports 1)
	HOTEL_BIN="$WORK/under-callgrind" start_gateway 1 "$port"
	url="http://127.0.0.1:$port$BENCH_PATH"
	wrk -t1 -c16 -d4s "$url" >/dev/null
	callgrind_control -z "$PROXY_PID" >/dev/null
	wrk -t1 -c16 -d10s "$url" >"$WORK/wrk.txt"
	callgrind_control -d "$PROXY_PID" >/dev/null
	requests=$(awk '/requests in/{print $1}' "$WORK/wrk.txt")
	# The dump after the zeroing: cg.PID.1 (cg.PID is written at exit).
	deadline=$((SECONDS + 30))
	until [[ -s "$WORK/cg.$PROXY_PID.1" ]] || ((SECONDS > deadline)); do sleep 0.2; done
	ir=$(awk '/^summary:/{print $2}' "$WORK/cg.$PROXY_PID.1")
	[[ -n "$ir" && "$requests" -gt 0 ]] || die "no callgrind dump or no requests"
	echo "$("$HOTEL_BIN" --version 2>/dev/null || basename "$HOTEL_BIN"); $requests requests counted"
	echo "gateway process instructions per proxied request: $((ir / requests))"
	exit 0
fi
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
