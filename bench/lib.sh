# shellcheck shell=bash
# Shared by bench/run.sh and bench/failover.sh: installs the peers, builds our binaries,
# starts three fast upstreams, the proxies and our gateway on 127.0.0.1, measures CPU
# from /proc, and stops everything it started by PID when the script exits.
#
# Source it; it defines functions and a few variables and changes nothing until called.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
# Debian keeps nginx and haproxy in /usr/sbin, which a non-login shell may lack.
export PATH="$PATH:/usr/sbin:/sbin"

# Gateways started so far (each gets its own data directory and log).
GATEWAY_N=0
# Every process we start, for the exit trap.
BENCH_PIDS=()
# pid files of upstreams that a failover run may have restarted (new PIDs).
BENCH_PIDFILES=()
WORK=""

# An awk function for the tables: med(arr, t), the median of arr[t SUBSEP 1..n[t]] (the
# rounds of target t; the program keeps the count in n). Spliced into each program.
AWK_MEDIAN='function med(arr, t,    i, j, m, x, tmp) {
	m = n[t]
	for (i = 1; i <= m; i++) x[i] = arr[t SUBSEP i]
	for (i = 2; i <= m; i++) for (j = i; j > 1 && x[j - 1] > x[j]; j--) { tmp = x[j]; x[j] = x[j - 1]; x[j - 1] = tmp }
	return (m % 2) ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2
}'

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
	printf '[bench] error: %s\n' "$*" >&2
	exit 1
}

# Installs wrk, nginx and haproxy from Debian's packages when missing; caddy too when
# BENCH_CADDY is not 0, but its absence is not fatal (it is the optional peer).
ensure_tools() {
	local need=() optional=()
	command -v wrk >/dev/null || need+=(wrk)
	command -v nginx >/dev/null || need+=(nginx-light)
	command -v haproxy >/dev/null || need+=(haproxy)
	if [[ "${BENCH_CADDY:-1}" != 0 ]] && ! command -v caddy >/dev/null; then
		optional+=(caddy)
	fi
	if ((${#need[@]} + ${#optional[@]} > 0)); then
		command -v apt-get >/dev/null || die "missing ${need[*]} ${optional[*]} and no apt-get to install them"
		local sudo=()
		[[ $(id -u) == 0 ]] || sudo=(sudo)
		log "installing ${need[*]} ${optional[*]} with apt-get"
		"${sudo[@]}" apt-get update -qq >/dev/null || log "apt-get update failed; trying the install anyway"
		# RUNLEVEL=1 keeps the packages' init scripts from starting system-wide daemons.
		if ((${#need[@]} > 0)); then
			RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null ||
				die "apt-get install ${need[*]} failed"
		fi
		if ((${#optional[@]} > 0)); then
			RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${optional[@]}" >/dev/null ||
				log "caddy is not installable here; running without it"
		fi
	fi
	for t in wrk nginx haproxy; do
		command -v "$t" >/dev/null || die "$t is still missing after the install"
	done
}

# Builds the release `hotel` binary, `bench-load` and `bench-floor` (crate hotel-bench)
# unless BENCH_NO_BUILD=1 (then HOTEL_BIN, BENCH_LOAD and BENCH_FLOOR name existing ones).
build_bins() {
	local target="${CARGO_TARGET_DIR:-$ROOT/target}"
	HOTEL_BIN="${HOTEL_BIN:-$target/release/hotel}"
	BENCH_LOAD="${BENCH_LOAD:-$target/release/bench-load}"
	BENCH_FLOOR="${BENCH_FLOOR:-$target/release/bench-floor}"
	if [[ "${BENCH_NO_BUILD:-0}" == 0 ]]; then
		log "building hotel, bench-load and bench-floor (release)"
		(cd "$ROOT" && cargo build --release --quiet -p hotel -p hotel-bench) || die "cargo build failed"
	fi
	[[ -x "$HOTEL_BIN" ]] || die "no hotel binary at $HOTEL_BIN"
	[[ -x "$BENCH_LOAD" ]] || die "no bench-load binary at $BENCH_LOAD"
}

# Creates the scratch directory and installs the exit trap.
setup_work() {
	WORK="$(mktemp -d "${TMPDIR:-/tmp}/hotel-bench.XXXXXX")"
	trap cleanup EXIT
	trap 'exit 130' INT TERM
}

# Stops every process we started (and any upstream restarted from a pid file): SIGCONT
# first in case it was frozen, then SIGTERM, then SIGKILL after 3 s.
cleanup() {
	# Best effort to the end: most of these processes may be gone already.
	set +e
	local pids=("${BENCH_PIDS[@]}") f p
	for f in "${BENCH_PIDFILES[@]}"; do
		[[ -s "$f" ]] && pids+=("$(cat "$f")")
	done
	for p in "${pids[@]}"; do
		kill -CONT "$p" 2>/dev/null
		kill -TERM "$p" 2>/dev/null
	done
	local deadline=$((SECONDS + 3))
	for p in "${pids[@]}"; do
		while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
		kill -KILL "$p" 2>/dev/null
	done
	wait 2>/dev/null
	if [[ -n "$WORK" && "${BENCH_KEEP:-0}" == 0 ]]; then
		rm -rf "$WORK"
	elif [[ -n "$WORK" ]]; then
		log "kept scratch files in $WORK"
	fi
}

# free_ports N: prints N distinct free ports on 127.0.0.1.
free_ports() { "$BENCH_LOAD" ports "$1"; }

# wait_http URL: polls until URL answers 2xx (15 s at most).
wait_http() { "$BENCH_LOAD" wait "$1" --timeout "${2:-15s}" >/dev/null || die "$1 did not become ready"; }

# upstream_conf I PORT: writes the config of upstream uI, a single-process nginx that
# answers every request with a small JSON body and `X-Upstream: uI`.
upstream_conf() {
	local i=$1 port=$2 dir="$WORK/u$1"
	mkdir -p "$dir"
	cat >"$dir/nginx.conf" <<-EOF
		# Upstream u$i: one process (no master), so kill -9 / SIGSTOP hit the whole server.
		daemon on;
		master_process off;
		worker_processes 1;
		pid $dir/nginx.pid;
		error_log $dir/error.log warn;
		events { worker_connections 4096; }
		http {
		    access_log off;
		    keepalive_requests 1000000;
		    keepalive_timeout 120s;
		    server {
		        listen 127.0.0.1:$port backlog=4096;
		        location / {
		            default_type application/json;
		            add_header X-Upstream u$i;
		            return 200 '{"ok":true}';
		        }
		    }
		}
	EOF
}

# start_upstream I: (re)starts upstream uI from its config; nginx daemonizes once its
# socket is bound, so it is ready when this returns. Its PID is in $WORK/uI/nginx.pid.
start_upstream() {
	local dir="$WORK/u$1"
	nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" || die "upstream u$1 did not start"
}

# start_upstreams: three upstreams on free ports; sets UP_PORTS=(p1 p2 p3).
start_upstreams() {
	mapfile -t UP_PORTS < <(free_ports 3)
	local i
	for i in 1 2 3; do
		upstream_conf "$i" "${UP_PORTS[$((i - 1))]}"
		BENCH_PIDFILES+=("$WORK/u$i/nginx.pid")
		start_upstream "$i"
		wait_http "http://127.0.0.1:${UP_PORTS[$((i - 1))]}/"
	done
	log "upstreams u1 u2 u3 on ports ${UP_PORTS[*]}"
}

# upstream_pid I: the current PID of upstream uI.
upstream_pid() { cat "$WORK/u$1/nginx.pid"; }

# The path every load generator requests: the gateway routes /api/rooms to the room
# service and strips /api; the other proxies pass it through; the upstreams ignore it.
BENCH_PATH="${BENCH_PATH:-/api/rooms}"

# start_nginx_proxy WORKERS PORT: nginx as the balancing proxy (master + WORKERS workers).
start_nginx_proxy() {
	local workers=$1 port=$2 dir="$WORK/nginx"
	mkdir -p "$dir"
	cat >"$dir/nginx.conf" <<-EOF
		daemon off;
		worker_processes $workers;
		pid $dir/nginx.pid;
		error_log $dir/error.log warn;
		events { worker_connections 4096; }
		http {
		    access_log off;
		    keepalive_requests 1000000;
		    upstream backends {
		        # Passive health checks: one failure takes a server out for 1 s.
		        server 127.0.0.1:${UP_PORTS[0]} max_fails=1 fail_timeout=1s;
		        server 127.0.0.1:${UP_PORTS[1]} max_fails=1 fail_timeout=1s;
		        server 127.0.0.1:${UP_PORTS[2]} max_fails=1 fail_timeout=1s;
		        keepalive 128;
		        keepalive_requests 1000000;
		    }
		    server {
		        listen 127.0.0.1:$port backlog=4096;
		        location / {
		            proxy_pass http://backends;
		            proxy_http_version 1.1;
		            proxy_set_header Connection "";
		            proxy_connect_timeout 1s;
		            proxy_send_timeout 1s;
		            proxy_read_timeout 1s;
		            # Two retries: three tries in all, on errors, timeouts and 502-504.
		            proxy_next_upstream error timeout http_502 http_503 http_504;
		            proxy_next_upstream_tries 3;
		        }
		    }
		}
	EOF
	nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
	BENCH_PIDS+=($!)
	PROXY_PID=$!
	wait_http "http://127.0.0.1:$port$BENCH_PATH"
}

# start_haproxy WORKERS PORT: HAProxy with WORKERS threads.
start_haproxy() {
	local workers=$1 port=$2 dir="$WORK/haproxy"
	mkdir -p "$dir"
	cat >"$dir/haproxy.cfg" <<-EOF
		global
		    nbthread $workers
		    maxconn 4096
		defaults
		    mode http
		    option http-keep-alive
		    timeout connect 1s
		    timeout server 1s
		    timeout client 30s
		    timeout http-keep-alive 30s
		    # Two retries, on another server, for failures that are safe to retry.
		    retries 2
		    option redispatch 1
		    retry-on conn-failure empty-response response-timeout 502 503 504
		frontend fe
		    bind 127.0.0.1:$port
		    default_backend be
		backend be
		    balance roundrobin
		    http-reuse always
		    # Passive checks (observe) mark a server down on its first error; the 1 s
		    # active check is what brings it back.
		    default-server check inter 1s fall 2 rise 1 observe layer7 error-limit 1 on-error mark-down
		    server u1 127.0.0.1:${UP_PORTS[0]}
		    server u2 127.0.0.1:${UP_PORTS[1]}
		    server u3 127.0.0.1:${UP_PORTS[2]}
	EOF
	haproxy -q -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
	BENCH_PIDS+=($!)
	PROXY_PID=$!
	wait_http "http://127.0.0.1:$port$BENCH_PATH"
}

# start_caddy WORKERS PORT: Caddy with GOMAXPROCS=WORKERS (returns 1 when not installed).
start_caddy() {
	local workers=$1 port=$2 dir="$WORK/caddy"
	command -v caddy >/dev/null || return 1
	mkdir -p "$dir"
	cat >"$dir/Caddyfile" <<-EOF
		{
		    admin off
		    auto_https off
		}
		http://127.0.0.1:$port {
		    reverse_proxy 127.0.0.1:${UP_PORTS[0]} 127.0.0.1:${UP_PORTS[1]} 127.0.0.1:${UP_PORTS[2]} {
		        lb_policy round_robin
		        lb_try_duration 2s
		        lb_try_interval 10ms
		        fail_duration 1s
		        max_fails 1
		        unhealthy_status 5xx
		        transport http {
		            dial_timeout 1s
		            response_header_timeout 1s
		            keepalive_idle_conns_per_host 128
		        }
		    }
		}
	EOF
	GOMAXPROCS=$workers HOME="$dir" XDG_DATA_HOME="$dir" XDG_CONFIG_HOME="$dir" \
		caddy run --adapter caddyfile --config "$dir/Caddyfile" >"$dir/caddy.log" 2>&1 &
	BENCH_PIDS+=($!)
	PROXY_PID=$!
	wait_http "http://127.0.0.1:$port$BENCH_PATH"
}

# gateway_conf WORKERS PORT ADMIN_PORT: config/bench-gateway.toml with the ports of this
# run substituted for the defaults it names (gateway 18080, admin 18090, upstreams
# 18081-18083), and worker_threads set.
gateway_conf() {
	local workers=$1 port=$2 admin=$3
	sed -e "s/127\.0\.0\.1:18080/127.0.0.1:$port/" \
		-e "s/127\.0\.0\.1:18090/127.0.0.1:$admin/" \
		-e "s/127\.0\.0\.1:18081/127.0.0.1:${UP_PORTS[0]}/" \
		-e "s/127\.0\.0\.1:18082/127.0.0.1:${UP_PORTS[1]}/" \
		-e "s/127\.0\.0\.1:18083/127.0.0.1:${UP_PORTS[2]}/" \
		-e "s/^worker_threads = .*/worker_threads = $workers/" \
		"$ROOT/config/bench-gateway.toml" >"$WORK/gateway.toml"
}

# start_gateway WORKERS PORT [RUST_LOG]: our gateway with static upstreams and WORKERS
# serving workers (the config key; TOKIO_WORKER_THREADS sizes the process runtime, which
# only waits for them). Logs at the given RUST_LOG, else at the caller's, else at the default level
# (no RUST_LOG: as users run it).
start_gateway() {
	local workers=$1 port=$2 level=${3:-${RUST_LOG:-}} admin n
	admin=$(free_ports 1)
	gateway_conf "$workers" "$port" "$admin"
	# One data directory and log per gateway: a run may start two (hotel, hotel-warn).
	GATEWAY_N=$((GATEWAY_N + 1))
	n=$GATEWAY_N
	local env=(env -u RUST_LOG TOKIO_WORKER_THREADS="$workers")
	[[ -n "$level" ]] && env+=(RUST_LOG="$level")
	"${env[@]}" "$HOTEL_BIN" gateway --config "$WORK/gateway.toml" --data-dir "$WORK/gateway-data$n" \
		>"$WORK/gateway$n.log" 2>&1 &
	BENCH_PIDS+=($!)
	PROXY_PID=$!
	wait_http "http://127.0.0.1:$port$BENCH_PATH"
}

# start_floor WORKERS PORT: bench-floor, the bare hyper forwarder, over the upstreams.
start_floor() {
	local workers=$1 port=$2
	"$BENCH_FLOOR" --listen "127.0.0.1:$port" --workers "$workers" \
		--upstream "127.0.0.1:${UP_PORTS[0]}" --upstream "127.0.0.1:${UP_PORTS[1]}" \
		--upstream "127.0.0.1:${UP_PORTS[2]}" >"$WORK/floor.log" 2>&1 &
	BENCH_PIDS+=($!)
	PROXY_PID=$!
	wait_http "http://127.0.0.1:$port$BENCH_PATH"
}

# stop_pid PID: stops one process we started (SIGTERM, then SIGKILL after 3 s).
stop_pid() {
	local p=$1 deadline=$((SECONDS + 3))
	kill -CONT "$p" 2>/dev/null || true
	kill -TERM "$p" 2>/dev/null || true
	while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
	kill -KILL "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
	local keep=() q
	for q in "${BENCH_PIDS[@]}"; do [[ "$q" == "$p" ]] || keep+=("$q"); done
	BENCH_PIDS=("${keep[@]}")
}

# tree_pids PID: the process and all its descendants.
tree_pids() {
	local p=$1 c
	echo "$p"
	for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do tree_pids "$c"; done
}

# proc_ticks AWK_EXPR PID...: the clock ticks AWK_EXPR adds up from /proc/PID/stat (after
# "pid (comm) ": $12 is user time, $13 system time) over those processes and their
# descendants.
proc_ticks() {
	local expr=$1 total=0 p q t
	shift
	for p in "$@"; do
		for q in $(tree_pids "$p"); do
			# A process may end between listing and reading: it then counts as 0.
			t=$(sed 's/^.*) //' "/proc/$q/stat" 2>/dev/null | awk "{print $expr}") || t=0
			total=$((total + ${t:-0}))
		done
	done
	echo "$total"
}

# cpu_ticks PID...: user+system clock ticks of those processes and their descendants.
cpu_ticks() { proc_ticks '$12 + $13' "$@"; }

# user_ticks PID...: their user-space clock ticks only (what the gateway's own code
# costs; the kernel's TCP work is the rest).
user_ticks() { proc_ticks '$12' "$@"; }

# busy_ticks: clock ticks all CPUs spent not idle, from /proc/stat.
busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }

# wait_quiet MAX_PCT SECONDS: waits (up to SECONDS) for a one-second span in which the
# whole machine is busy less than MAX_PCT % (our servers idle meanwhile); 1 if none came.
wait_quiet() {
	local max=$1 until=$((SECONDS + $2)) hz ncpu b0 b1
	hz=$(getconf CLK_TCK)
	ncpu=$(nproc)
	while ((SECONDS < until)); do
		b0=$(busy_ticks)
		sleep 1
		b1=$(busy_ticks)
		if awk -v d="$((b1 - b0))" -v hz="$hz" -v n="$ncpu" -v m="$max" 'BEGIN { exit !(100 * d / (hz * n) < m) }'; then
			return 0
		fi
	done
	return 1
}

# rss_kb PID...: peak resident memory (VmHWM) of those processes and descendants, in KiB.
rss_kb() {
	local total=0 p q v
	for p in "$@"; do
		for q in $(tree_pids "$p"); do
			v=$(awk '/^VmHWM:/{print $2}' "/proc/$q/status" 2>/dev/null) || v=0
			total=$((total + ${v:-0}))
		done
	done
	echo "$total"
}

# machine_line: one line naming the machine, for the tables' headings.
machine_line() {
	local cpu
	cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
	printf '%s, %s cores, %s GiB, Linux %s' "${cpu:-unknown CPU}" "$(nproc)" \
		"$(awk '/^MemTotal:/{printf "%.0f", $2 / 1048576}' /proc/meminfo)" "$(uname -r)"
}

# versions_line: peer versions and our commit.
versions_line() {
	local caddy_v="absent"
	command -v caddy >/dev/null && caddy_v=$(caddy version 2>/dev/null | awk '{print $1}')
	printf 'nginx %s, HAProxy %s, Caddy %s, wrk %s, hotel %s' \
		"$(nginx -v 2>&1 | sed 's/.*nginx\///')" \
		"$(haproxy -v 2>/dev/null | awk 'NR==1{print $3}')" \
		"$caddy_v" \
		"$(wrk -v 2>&1 | awk 'NR==1{print $2}')" \
		"$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
}
