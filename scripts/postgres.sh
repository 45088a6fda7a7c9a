#!/usr/bin/env bash
# A private PostgreSQL (Debian's `postgresql` package) for the tests, the drills and the
# benchmark: its own data directory, port and socket directory, loopback only, never the
# system's default cluster.
#
#   scripts/postgres.sh install   apt-get install postgresql when initdb is missing (root)
#   scripts/postgres.sh start     initdb (first time) and start it; prints the URL
#   scripts/postgres.sh stop      stop the one started here (pg_ctl on its data directory)
#   scripts/postgres.sh status    running or not, and the URL
#   scripts/postgres.sh url       the URL only (postgres://postgres@127.0.0.1:PORT/postgres)
#
# Settings (environment): HOTEL_PG_PORT (55432), HOTEL_PG_DIR (data directory, default
# ${TMPDIR:-/tmp}/hotel-postgres-$PORT: the server runs as the `postgres` user when
# started by root, which must be able to reach it). Authentication is `trust` on
# 127.0.0.1 only: a throw-away server for local runs and CI, not a deployment.
set -euo pipefail

PORT="${HOTEL_PG_PORT:-55432}"
DIR="${HOTEL_PG_DIR:-${TMPDIR:-/tmp}/hotel-postgres-$PORT}"
URL="postgres://postgres@127.0.0.1:$PORT/postgres"
LOG="$DIR/server.log"

say() { echo "postgres: $*" >&2; }

# The directory of initdb/pg_ctl: Debian keeps them out of PATH.
bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ]; then
            echo "$d"
            return 0
        fi
    done
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    return 1
}

# Runs a server binary as `postgres` when we are root (initdb refuses root).
as_server_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

install() {
    if bindir >/dev/null; then
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    fi
    if { [ "$(id -u)" != 0 ] && [ ${#sudo[@]} = 0 ]; } || ! command -v apt-get >/dev/null 2>&1; then
        say "initdb not found, and installing needs root (or sudo) and apt-get: apt-get install postgresql"
        return 1
    fi
    say "installing postgresql (apt-get)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null ||
        { "${sudo[@]}" apt-get update -q >/dev/null &&
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }
    bindir >/dev/null
}

running() {
    local bin
    bin="$(bindir)" || return 1
    [ -f "$DIR/PG_VERSION" ] && as_server_user "$bin/pg_ctl" -D "$DIR" status >/dev/null 2>&1
}

start() {
    local bin
    bin="$(bindir)" || { say "not installed (run '$0 install')"; return 1; }
    if running; then
        echo "$URL"
        return 0
    fi
    if [ ! -f "$DIR/PG_VERSION" ]; then
        mkdir -p "$DIR"
        chmod 0700 "$DIR"
        if [ "$(id -u)" = 0 ]; then chown postgres: "$DIR"; fi
        as_server_user "$bin/initdb" -D "$DIR" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
        # Loopback only, the socket in the data directory (not the system's), enough
        # connections for several replicas with their pools, and fsync off: throw-away.
        cat >>"$DIR/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    fi
    as_server_user "$bin/pg_ctl" -D "$DIR" -l "$LOG" -w -t 30 start >/dev/null ||
        { say "did not start; see $LOG"; tail -5 "$LOG" >&2 || true; return 1; }
    echo "$URL"
}

stop() {
    local bin
    bin="$(bindir)" || return 0
    if running; then
        as_server_user "$bin/pg_ctl" -D "$DIR" -m fast -w stop >/dev/null
        say "stopped ($DIR)"
    fi
}

case "${1:-}" in
install) install ;;
start) start ;;
stop) stop ;;
status) if running; then echo "running: $URL ($DIR)"; else echo "not running ($DIR)"; fi ;;
url) echo "$URL" ;;
*)
    echo "usage: $0 install|start|stop|status|url" >&2
    exit 2
    ;;
esac
