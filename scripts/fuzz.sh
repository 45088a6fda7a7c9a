#!/usr/bin/env bash
# Fuzzes one running service against its own OpenAPI document with schemathesis.
#
#   scripts/fuzz.sh BASE_URL [OPENAPI_URL_OR_FILE] [extra schemathesis run flags...]
#   scripts/fuzz.sh --install          # only install (or find) schemathesis, print its path
#
# BASE_URL is a service instance (`http://127.0.0.1:PORT`, from its `listening on` line);
# the document defaults to BASE_URL/openapi.json. Every check is on (scripts/schemathesis.toml
# says `[checks] enabled = true`, which is `--checks all` but lets one operation opt out
# of one check, as `--checks all` on the command line would not): no 5xx, status codes,
# content types, headers and bodies as documented, invalid data refused, valid data
# accepted, responses within 10 s, and the stateful ones (use after free, resource
# availability) along the links the documents declare. The few expectations a schema
# cannot state are in scripts/schemathesis.toml, each with its reason.
#
# Environment: FUZZ_MAX_EXAMPLES (default 30, per operation), FUZZ_SEED (default 1),
# FUZZ_PHASES (default examples,coverage,fuzzing,stateful), FUZZ_WORKERS (default 1),
# FUZZ_EXTRA_CONFIG (a TOML file appended to scripts/schemathesis.toml for this run, such
# as dictionaries of ids that exist in the services booking calls).
# schemathesis is installed from PyPI, pinned, into tools/schemathesis (a virtualenv,
# gitignored) and reused from there. Exits 3 when it cannot be installed, so callers can
# tell "no fuzzer" from "the fuzzer found something" (exit 1).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

SCHEMATHESIS_VERSION="4.32.5"
venv="$root/tools/schemathesis"
st="$venv/bin/schemathesis"

install() {
    if [ -x "$st" ] && "$st" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\$"; then
        return 0
    fi
    echo "fuzz.sh: installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
    python3 -m venv "$venv" >&2 || return 1
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION" >&2 || return 1
    "$st" --version >/dev/null 2>&1
}

if ! install; then
    echo "fuzz.sh: could not install schemathesis $SCHEMATHESIS_VERSION from PyPI" >&2
    exit 3
fi
if [ "${1:-}" = "--install" ]; then
    echo "$st"
    exit 0
fi

base="${1:?usage: scripts/fuzz.sh BASE_URL [OPENAPI_URL_OR_FILE] [schemathesis flags...]}"
shift
doc="${1:-$base/openapi.json}"
[ $# -gt 0 ] && shift

# Reports (JUnit, and an NDJSON event log to replay a failure) go beside the run.
report_dir="${FUZZ_REPORT_DIR:-$root/tools/fuzz-reports}"
mkdir -p "$report_dir"

config="$root/scripts/schemathesis.toml"
if [ -n "${FUZZ_EXTRA_CONFIG:-}" ]; then
    config="$report_dir/schemathesis-$$.toml"
    cat "$root/scripts/schemathesis.toml" "$FUZZ_EXTRA_CONFIG" > "$config"
    trap 'rm -f "$config"' EXIT
fi

cd "$report_dir"
"$st" --config-file "$config" run "$doc" \
    --url "$base" \
    --phases "${FUZZ_PHASES:-examples,coverage,fuzzing,stateful}" \
    --max-examples "${FUZZ_MAX_EXAMPLES:-30}" \
    --seed "${FUZZ_SEED:-1}" \
    --workers "${FUZZ_WORKERS:-1}" \
    --generation-database none \
    --request-timeout 10 \
    --no-color \
    --report junit --report-dir "$report_dir" \
    "$@"
