#!/usr/bin/env bash
# Headless Chromium for the dashboard's browser test (tests/tests/dashboard.rs):
# Debian's `chromium` package, installed through apt-get (as root, or through `sudo -n`).
#
#   scripts/chromium.sh install   apt-get install chromium when it is missing
#   scripts/chromium.sh path      print the browser's path (exit 1 when there is none)
#
# The test drives it over `--remote-debugging-pipe` (no port, no extra crate); nothing is
# downloaded at test time, so it works offline once installed.
set -euo pipefail

say() { echo "chromium: $*" >&2; }

path() {
    local b
    for b in chromium chromium-browser; do
        if command -v "$b" >/dev/null 2>&1; then
            command -v "$b"
            return 0
        fi
    done
    return 1
}

install() {
    if path >/dev/null; then
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    fi
    if { [ "$(id -u)" != 0 ] && [ ${#sudo[@]} = 0 ]; } || ! command -v apt-get >/dev/null 2>&1; then
        say "chromium not found, and installing needs root (or sudo) and apt-get: apt-get install chromium"
        return 1
    fi
    say "installing chromium (apt-get)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null ||
        { "${sudo[@]}" apt-get update -q >/dev/null &&
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null; }
    path >/dev/null
}

case "${1:-}" in
install) install ;;
path) path ;;
*)
    echo "usage: $0 install|path" >&2
    exit 2
    ;;
esac
