#!/usr/bin/env bash
# Does every runtime dependency of serd install on a Raspberry Pi from a binary
# wheel? A dependency without one makes pip compile it on the Pi (slow, needs a
# toolchain, often fails), so this check fails if any runtime dependency lacks
# a wheel for 64-bit Pi OS Bookworm: aarch64, glibc 2.36, CPython 3.11.
#
# Usage: packaging/check-pi-wheels.sh [--arch aarch64|armv7l] [--python-version 3.11]
#   --arch armv7l   check 32-bit Pi OS instead (expected to fail: see install-pi.sh)
# Environment: PYTHON (default python3) is the interpreter whose pip is used;
#   pip's own settings (PIP_INDEX_URL, ...) apply.
# Needs network access to the package index. Exit status: 0 all resolved,
# 1 some did not, 2 usage error.
set -euo pipefail

PYTHON=${PYTHON:-python3}
ARCH=aarch64
PY_VERSION=3.11

# Keep in step with [project] dependencies in pyproject.toml
# (tests/test_install_scripts.py checks that every one of them is here).
# The speech gate's voice detector (serd/vad.py) adds nothing here: Silero VAD's weights
# ship in models/ and run in numpy. onnxruntime (aarch64/cp311 wheels exist, 62 MB with its
# dependencies) and webrtcvad-wheels were measured against it, not adopted
# (benchmarks/RESULTS.md, Speech gate).
RUNTIME_REQUIREMENTS=(
    "numpy>=1.24"
    "pyzmq>=25"
    "pyyaml>=6"
    "soundfile>=0.12"
    "soxr>=0.3"
    "sounddevice>=0.4.6"
    "ai-edge-litert>=1.2"
)
# The fallback interpreter (the `tflite-runtime` extra): its last release,
# which needs numpy < 2.
FALLBACK_REQUIREMENTS=(
    "tflite-runtime==2.14.0"
    "numpy<2"
)

# serd[postgres]: history in a PostgreSQL server (serd record --db postgresql://...).
# psycopg's C speed-ups and libpq come in psycopg-binary's manylinux_2_28 wheel.
POSTGRES_REQUIREMENTS=(
    "psycopg[binary]>=3.1"
)

usage() {
    sed -n '2,13s/^# \{0,1\}//p' "$0"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --arch) ARCH=${2:?--arch needs a value}; shift 2 ;;
        --python-version) PY_VERSION=${2:?--python-version needs a value}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "check-pi-wheels: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

# Pi OS Bookworm has glibc 2.36, so pip on the Pi takes any manylinux_2_X wheel
# with X <= 36. Every one of those tags is listed: pip does not widen a --platform
# to older glibc versions by itself, and a check with only manylinux_2_17 and
# manylinux_2_36 would miss the manylinux_2_27/2_28 wheels that current numpy,
# pyzmq, soxr and ai-edge-litert ship (it "passes" with older releases), take
# soundfile's none-any wheel (no bundled libsndfile) instead of its manylinux_2_28
# one, and find no tflite-runtime 2.14.0 (manylinux_2_34) at all.
OLDEST_MANYLINUX_GLIBC_MINOR=17
PI_OS_GLIBC_MINOR=36
case "$ARCH" in
    aarch64|armv7l) ;;
    *) echo "check-pi-wheels: --arch must be aarch64 or armv7l, not $ARCH" >&2; exit 2 ;;
esac
PLATFORMS=("linux_$ARCH" "manylinux2014_$ARCH")
for ((minor = OLDEST_MANYLINUX_GLIBC_MINOR; minor <= PI_OS_GLIBC_MINOR; minor++)); do
    PLATFORMS+=("manylinux_2_${minor}_$ARCH")
done

PLATFORM_ARGS=()
for platform in "${PLATFORMS[@]}"; do
    PLATFORM_ARGS+=(--platform "$platform")
done

WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/serd-wheels.XXXXXX")
trap 'rm -rf "$WORK_DIR"' EXIT

echo "Wheels for CPython $PY_VERSION on $ARCH (linux, manylinux2014, manylinux_2_${OLDEST_MANYLINUX_GLIBC_MINOR}..2_${PI_OS_GLIBC_MINOR})"
failures=0

check() {  # check GROUP REQUIREMENT
    local group=$1 requirement=$2 dest wheel kind
    dest="$WORK_DIR/$(printf '%s' "$requirement" | tr -c 'A-Za-z0-9._-' '_')"
    mkdir -p "$dest"
    if ! "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
            --only-binary=:all: "${PLATFORM_ARGS[@]}" --python-version "$PY_VERSION" \
            --implementation cp -d "$dest" "$requirement" >"$dest.log" 2>&1; then
        printf 'FAIL  %-9s %-24s no binary wheel: %s\n' "$group" "$requirement" \
            "$(grep -m1 -E 'ERROR' "$dest.log" || tail -n1 "$dest.log")"
        failures=$((failures + 1))
        return
    fi
    wheel=$(find "$dest" -maxdepth 1 -name '*.whl' -printf '%f\n' | head -n1)
    if [[ -z "$wheel" ]]; then
        printf 'FAIL  %-9s %-24s pip downloaded no wheel\n' "$group" "$requirement"
        failures=$((failures + 1))
        return
    fi
    case "$wheel" in
        *-none-any.whl) kind="pure Python" ;;
        *) kind="binary" ;;
    esac
    printf 'ok    %-9s %-24s %-12s %s\n' "$group" "$requirement" "$kind" "$wheel"
}

check_tree() {  # check_tree GROUP REQUIREMENT...: the whole dependency tree, resolved together
    local group=$1 dest wheel kind
    shift
    dest="$WORK_DIR/tree-$group"
    mkdir -p "$dest"
    if ! "$PYTHON" -m pip download --quiet --disable-pip-version-check \
            --only-binary=:all: "${PLATFORM_ARGS[@]}" --python-version "$PY_VERSION" \
            --implementation cp -d "$dest" "$@" >"$dest.log" 2>&1; then
        printf 'FAIL  %-9s %-24s %s\n' "$group" "(with dependencies)" \
            "$(grep -m1 -E 'ERROR' "$dest.log" || tail -n1 "$dest.log")"
        failures=$((failures + 1))
        return
    fi
    while IFS= read -r wheel; do
        case "$wheel" in
            *-none-any.whl) kind="pure Python" ;;
            *) kind="binary" ;;
        esac
        printf 'ok    %-9s %-24s %-12s %s\n' "$group" "${wheel%%-*}" "$kind" "$wheel"
    done < <(find "$dest" -maxdepth 1 -name '*.whl' -printf '%f\n' | sort)
}

echo "== each requirement on its own (--no-deps)"
for requirement in "${RUNTIME_REQUIREMENTS[@]}"; do
    check runtime "$requirement"
done
for requirement in "${FALLBACK_REQUIREMENTS[@]}"; do
    check fallback "$requirement"
done
check postgres "psycopg-binary>=3.1"
# A transitive dependency without a wheel (cffi, ml_dtypes, protobuf, ...) would
# be compiled just the same, so resolve each set as pip on the Pi would.
echo "== with their dependencies, resolved together"
check_tree runtime "${RUNTIME_REQUIREMENTS[@]}"
check_tree fallback "${FALLBACK_REQUIREMENTS[@]}"
check_tree postgres "${POSTGRES_REQUIREMENTS[@]}"

if [[ $failures -gt 0 ]]; then
    echo "check-pi-wheels: $failures requirement(s) without a wheel for $ARCH / CPython $PY_VERSION" >&2
    exit 1
fi
echo "check-pi-wheels: every requirement resolves to a wheel for $ARCH / CPython $PY_VERSION"
