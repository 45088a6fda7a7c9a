#!/usr/bin/env bash
# Renders a kustomization (deploy/k8s, or an overlay of it) to plain Kubernetes YAML on
# stdout, with the first renderer found here:
#
#   scripts/kustomize.sh build [DIR]   # DIR defaults to deploy/k8s
#   scripts/kustomize.sh which         # prints the renderer it would use (installs first)
#
# 1. tools/bin/kustomize (what step 4 built before), 2. `kustomize` on PATH,
# 3. `kubectl kustomize` (kubectl embeds kustomize), 4. kustomize $KUSTOMIZE_VERSION built
# from the Go module proxy into tools/bin (`go install`, about a minute the first time;
# Go's module and build caches make later installs quick).
# The renderer used is named on stderr. Exits 3 when there is none and none can be built
# (no Go), so callers can tell "no renderer here" from a failure.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

KUSTOMIZE_VERSION="v5.8.1"
local_bin="$root/tools/bin/kustomize"

say() { echo "kustomize.sh: $*" >&2; }

# Sets `renderer` (an array: the command that takes a directory and prints YAML).
find_renderer() {
    if [ -x "$local_bin" ]; then
        renderer=("$local_bin" build)
    elif command -v kustomize >/dev/null 2>&1; then
        renderer=(kustomize build)
    elif command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
        renderer=(kubectl kustomize)
    elif command -v go >/dev/null 2>&1; then
        say "building kustomize $KUSTOMIZE_VERSION from the Go module proxy into tools/bin"
        mkdir -p "$root/tools/bin"
        GOBIN="$root/tools/bin" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2 ||
            return 1
        renderer=("$local_bin" build)
    else
        say "no kustomize, no kubectl and no Go to build kustomize with"
        return 1
    fi
}

case "${1:-build}" in
build)
    dir="${2:-$root/deploy/k8s}"
    find_renderer || exit 3
    say "rendering $dir with ${renderer[*]}"
    "${renderer[@]}" "$dir"
    ;;
which)
    find_renderer || exit 3
    echo "${renderer[*]}"
    ;;
*)
    echo "usage: scripts/kustomize.sh build [DIR] | which" >&2
    exit 2
    ;;
esac
