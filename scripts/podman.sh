#!/usr/bin/env bash
# Podman for the container tests and for running compose.yaml on a machine without a
# Docker engine.
#
#   scripts/podman.sh install   # podman + runc + catatonit (apt), podman-compose (PyPI, tools/podman-compose)
#   scripts/podman.sh compose   # prints the podman-compose path (installs first)
#   scripts/podman.sh check     # exits 0 when podman can run a container here
#
# podman-compose is pinned and installed into a virtualenv under tools/ (gitignored).
# On these machines Podman only works as root with the runc runtime and explicit ulimits
# (crun and the default ulimits are refused); `install` writes those two settings to
# /etc/containers/containers.conf, once, and only when a plain `podman run` needs them.
# Exits 3 when podman cannot be installed (no root, no apt, no network), so callers can
# tell "no podman here" from a failure.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

PODMAN_COMPOSE_VERSION="1.5.0"
venv="$root/tools/podman-compose"
pc="$venv/bin/podman-compose"
conf="/etc/containers/containers.conf"

say() { echo "podman.sh: $*" >&2; }

# Whether podman answers at all; running the image is the real check (the tests do).
podman_works() {
    command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1
}

# podman, the runc runtime, and what rootful bridge networks need: netavark (with
# aardvark-dns, so containers find each other by service name) and iptables, which
# netavark runs (without it every `podman run` fails with "netavark: No such file").
# catatonit: `podman kube play` puts an infra container in every pod, and with no
# registry to pull a pause image from, podman builds its own (localhost/podman-pause)
# around catatonit ("finding pause binary: catatonit" without it).
PACKAGES=(podman runc netavark aardvark-dns iptables catatonit)

packages_present() {
    command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 &&
        command -v iptables >/dev/null 2>&1 && command -v catatonit >/dev/null 2>&1 &&
        [ -x /usr/lib/podman/netavark ] &&
        [ -x /usr/lib/podman/aardvark-dns ]
}

install_packages() {
    if packages_present; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        say "podman is missing and installing it needs root"
        return 1
    fi
    command -v apt-get >/dev/null 2>&1 || { say "no apt-get to install podman with"; return 1; }
    say "installing ${PACKAGES[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 &&
            apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null; } ||
        return 1
    packages_present
}

# Whether podman still runs crun or would ask for more open files than the hard limit.
needs_settings() {
    local hard
    hard="$(ulimit -Hn)"
    [ "$(podman info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null)" != runc ] ||
        { [ "$hard" != unlimited ] && [ "$hard" -lt 1048576 ] && ! grep -qs '^default_ulimits' "$conf"; }
}

# runc and explicit ulimits, in containers.conf, only when podman needs them here.
configure() {
    if grep -qs '^runtime = "runc"' "$conf"; then
        return 0
    fi
    say "writing runtime = runc and default_ulimits to $conf (crun and the default ulimits are refused here)"
    mkdir -p "$(dirname "$conf")"
    # Appending a second [containers] or [engine] table would break the file: leave a
    # file that has them to its owner.
    if grep -qsE '^\[(containers|engine)\]' "$conf"; then
        say "$conf has its own [containers]/[engine] tables: add runtime = \"runc\" under" \
            "[engine] and default_ulimits = [\"nofile=1024:1024\", \"nproc=1000:1000\"] under [containers]"
        return 1
    fi
    if [ -f "$conf" ]; then
        cp "$conf" "$conf.before-hotel"
    fi
    cat >>"$conf" <<'EOF'

# Written by hotel-booking's scripts/podman.sh: on this machine Podman only runs
# containers with runc and explicit ulimits.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]

[engine]
runtime = "runc"
EOF
}

install_compose() {
    if [ -x "$pc" ] && "$pc" version 2>/dev/null | grep -q "$PODMAN_COMPOSE_VERSION"; then
        return 0
    fi
    say "installing podman-compose $PODMAN_COMPOSE_VERSION into $venv"
    python3 -m venv "$venv" >&2 || return 1
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "podman-compose==$PODMAN_COMPOSE_VERSION" >&2 || return 1
}

install() {
    install_packages || return 1
    # crun (podman's default runtime) and podman's default ulimits (nofile 1048576,
    # above the hard limit here) are refused on these machines: switch once.
    if needs_settings; then
        configure || return 1
    fi
    podman_works || { say "podman is installed but 'podman info' fails"; return 1; }
    install_compose || return 1
}

case "${1:-install}" in
install)
    install || { say "podman could not be installed here"; exit 3; }
    ;;
compose)
    install || { say "podman could not be installed here"; exit 3; }
    echo "$pc"
    ;;
check)
    podman_works
    ;;
*)
    echo "usage: scripts/podman.sh install|compose|check" >&2
    exit 2
    ;;
esac
