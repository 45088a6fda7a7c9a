#!/usr/bin/env bash
# Builds the `hotel` image (Containerfile): a statically linked `hotel` and nothing else.
#
#   scripts/image.sh [--profile release|dev] [--tag NAME] [--engine podman|docker]
#
# release (the default) is what to deploy; dev reuses a debug build's dependencies and
# is what the container test uses, so CI does not pay a second optimised build.
# The binary is linked statically against glibc (`-C target-feature=+crt-static` on the
# gnu target: no musl target needed); it is built with an explicit --target so its
# artifacts (target/x86_64-unknown-linux-gnu/) never invalidate the normal build's.
# The build context is target/image/<profile>/: the binary and an empty data directory.
# Prints the image id on stdout.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

profile=release
tag=""
engine="${CONTAINER_ENGINE:-}"
while [ $# -gt 0 ]; do
    case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --engine) engine="$2"; shift 2 ;;
    *) echo "usage: scripts/image.sh [--profile release|dev] [--tag NAME] [--engine podman|docker]" >&2; exit 2 ;;
    esac
done
case "$profile" in
release) dir=release ;;
dev) dir=debug ;;
*) echo "image.sh: unknown profile $profile (release or dev)" >&2; exit 2 ;;
esac
tag="${tag:-hotel:$( [ "$profile" = release ] && echo latest || echo dev )}"
if [ -z "$engine" ]; then
    if command -v podman >/dev/null 2>&1; then engine=podman; else engine=docker; fi
fi

target=x86_64-unknown-linux-gnu
echo "image.sh: building hotel ($profile, static, $target)" >&2
start=$(date +%s)
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --profile "$profile" --target "$target" -p hotel >&2
echo "image.sh: binary built in $(( $(date +%s) - start ))s" >&2

bin="target/$target/$dir/hotel"
# A dynamic executable lists its libraries (`lib => path`); a static one none.
if ldd "$bin" 2>&1 | grep -q '=>'; then
    echo "image.sh: $bin is not statically linked" >&2
    exit 1
fi
context="target/image/$profile"
rm -rf "$context"
mkdir -p "$context/data"
# Symbols and debug info stay in cargo's artifact (for debugging); the image gets a
# stripped copy when `strip` is at hand.
if command -v strip >/dev/null 2>&1; then
    strip -o "$context/hotel" "$bin"
else
    cp "$bin" "$context/hotel"
fi

revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
start=$(date +%s)
layers=(); [ "$(basename "$engine")" = podman ] && layers=(--layers=false) # no intermediate images left behind
"$engine" build --quiet "${layers[@]}" -f Containerfile -t "$tag" \
    --build-arg VERSION="$version" \
    --build-arg REVISION="$revision" \
    --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "$context" >/dev/null
echo "image.sh: image $tag built in $(( $(date +%s) - start ))s" >&2
"$engine" image inspect --format '{{.Id}}' "$tag"
