#!/usr/bin/env bash
# Run serd on emulated 64-bit Raspberry Pi OS userland (Debian bookworm arm64 under
# qemu-user) and check that it gives the same answers as this x86 machine.
#
# Usage: sudo packaging/pi-emulated-check.sh [--out DIR] [--host-python PY] [CLIP...]
#        sudo packaging/pi-emulated-check.sh --bootstrap-only [--out DIR]
#   --bootstrap-only make (or find) the cached root and stop: CI starts this early, in
#                    the background, and the check itself then waits for it
#   CLIP...          audio files to analyse on both machines (default: the files in
#                    tests/fixtures/audio/ if there are any, else examples/demo.flac)
#   --out DIR        where the logs, both analyses and summary.json go (default: a new
#                    directory under /tmp, printed at the end)
#   --host-python PY the x86 interpreter that runs `python -m serd` from this checkout
#                    for the reference answers (default: python3)
# Environment: SERD_PI_CACHE (default /var/cache/serd-pi-root) keeps the bootstrapped
#   root between runs; SERD_PI_MIRROR overrides the Debian mirror read from apt's config;
#   SERD_PI_CPU (default cortex-a72, a Pi 4; cortex-a76 is a Pi 5) is the emulated CPU.
#
# In the root, as a Pi owner would: packaging/install-pi.sh (binary wheels only, no
# systemd in a chroot), then as the service user `serd analyze --json` on the clips and
# `serd run --fast` publishing to a `serd listen --json` subscriber over ipc. Exit
# status: 0 every check passed, 1 a check failed, 2 usage, 77 this machine cannot
# emulate arm64 (not root, no binfmt_misc): the reason is the last line on stderr.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$REPO_DIR/packaging/pi-emulated
CACHE_DIR=${SERD_PI_CACHE:-/var/cache/serd-pi-root}
CPU_MODEL=${SERD_PI_CPU:-cortex-a72}
HOST_PACKAGES=(qemu-user-static binfmt-support debootstrap)
# What the cached root is made of; any change here makes (and keys) a new root.
SUITE=bookworm
ARCH=arm64
VARIANT=minbase
INCLUDE=python3,python3-venv,python3-pip,ca-certificates
MODEL_NAME=serd-emotion5-int8
# qemu 7.2 shows the guest the host's x86 /proc/cpuinfo, and ai-edge-litert's CPU
# detection then crashes in Interpreter(): the guest sees a Pi 4's cpuinfo instead.
CPUINFO=$HERE/cpuinfo-cortex-a72
# In the root, everything runs as the installed service would.
SERVICE_USER=serd
SERD=/opt/serd/venv/bin/serd
INSTALLED_MODEL=/opt/serd/models/$MODEL_NAME.tflite
SRC_IN_ROOT=/usr/src/serd
CLIPS_IN_ROOT=/usr/src/serd-clips
ENDPOINT=ipc:///tmp/serd-pi-check.ipc
LISTEN_TIMEOUT_S=900

OUT=""
HOST_PYTHON=python3
BOOTSTRAP_ONLY=0
CLIPS=()
WORK=""
ROOT=""
PARTIAL=""
MOUNTS=()

usage() { sed -n '2,23s/^# \{0,1\}//p' "$0"; }
say() { printf '==> %s\n' "$*"; }
die() { printf 'pi-emulated-check: %s\n' "$*" >&2; exit 1; }
cannot_emulate() { printf 'pi-emulated-check: cannot emulate arm64 here: %s\n' "$*" >&2; exit 77; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --host-python) HOST_PYTHON=${2:?--host-python needs an interpreter}; shift 2 ;;
        --bootstrap-only) BOOTSTRAP_ONLY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) usage >&2; printf 'pi-emulated-check: unknown option: %s\n' "$1" >&2; exit 2 ;;
        *) CLIPS+=("$1"); shift ;;
    esac
done

# Phase timings, as "name seconds" lines in $OUT/timings.txt (summary.json carries them).
PHASE_NAME=""
PHASE_START=0
phase() {
    local now=$SECONDS
    if [[ -n $PHASE_NAME ]]; then
        printf '%s %d\n' "$PHASE_NAME" $((now - PHASE_START)) >>"$OUT/timings.txt"
    fi
    PHASE_NAME=${1:-}
    PHASE_START=$now
    if [[ -n $PHASE_NAME ]]; then say "$PHASE_NAME"; fi
}

# Each line prefixed with the seconds since it started: where an emulated install spends its time.
elapsed() {
    local start=$SECONDS line
    while IFS= read -r line; do printf '%4ds %s\n' $((SECONDS - start)) "$line"; done
}

default_clips() {
    local fixtures=$REPO_DIR/tests/fixtures/audio
    if compgen -G "$fixtures/*.wav" >/dev/null || compgen -G "$fixtures/*.flac" >/dev/null; then
        find "$fixtures" -maxdepth 1 -type f \( -name '*.wav' -o -name '*.flac' \) | sort
    else
        printf '%s\n' "$REPO_DIR/examples/demo.flac"
    fi
}

setup_host() {
    [[ $EUID -eq 0 ]] || cannot_emulate "needs root (debootstrap, chroot and mounts): sudo $0"
    local missing=() package
    for package in "${HOST_PACKAGES[@]}"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        say "installing ${missing[*]}"
        apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
            || cannot_emulate "apt-get could not install ${missing[*]}"
    fi
    local binfmt=/proc/sys/fs/binfmt_misc
    if [[ ! -e $binfmt/status ]]; then
        mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null \
            || cannot_emulate "binfmt_misc is not mounted and cannot be (a container without it?)"
    fi
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    grep -qsx enabled "$binfmt/qemu-aarch64" \
        || cannot_emulate "no enabled qemu-aarch64 entry in $binfmt after update-binfmts --enable"
    # fix_binary (F): the kernel keeps qemu open, so the root needs no copy of it.
    grep -q '^flags:.*F' "$binfmt/qemu-aarch64" \
        || cannot_emulate "the qemu-aarch64 binfmt entry lacks the F (fix-binary) flag"
}

# The Debian mirror this machine's apt uses for $SUITE, from apt's own configuration.
debian_mirror() {
    if [[ -n ${SERD_PI_MIRROR:-} ]]; then
        printf '%s\n' "$SERD_PI_MIRROR"
        return
    fi
    local mirror
    # shellcheck disable=SC2016  # $(...) here is apt's field syntax, not the shell's
    mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 2>/dev/null \
        | awk -v suite="$SUITE" '$2 == suite && $3 == "main" { print $1; exit }')
    [[ -n $mirror ]] || die "apt has no '$SUITE main' source to bootstrap from (set SERD_PI_MIRROR)"
    printf '%s\n' "$mirror"
}

# The bootstrapped root, made once per package list and kept in $CACHE_DIR; a root is
# renamed into place only when complete, so an interrupted bootstrap is never reused.
cached_root() {
    local key root partial mirror
    key=$(printf '%s\n' "$SUITE" "$ARCH" "$VARIANT" "$INCLUDE" | sha256sum | cut -c1-16)
    root=$CACHE_DIR/root-$key
    if [[ -x $root/usr/bin/python3 ]]; then
        echo "warm" >"$OUT/cache.txt"
        say "using the cached root $root"
        printf '%s\n' "$root" >"$OUT/root.txt"
        return
    fi
    echo "cold" >"$OUT/cache.txt"
    mirror=$(debian_mirror)
    partial=$root.partial
    PARTIAL=$partial  # unmounted by cleanup if the bootstrap fails
    remove_tree "$partial"
    say "debootstrap $SUITE $ARCH from $mirror into $partial (first stage)"
    debootstrap --arch="$ARCH" --foreign --variant="$VARIANT" --include="$INCLUDE" \
        "$SUITE" "$partial" "$mirror" >"$OUT/debootstrap.log" 2>&1 \
        || die "debootstrap failed; see $OUT/debootstrap.log"
    say "debootstrap second stage under qemu ($CPU_MODEL), a few minutes"
    QEMU_CPU=$CPU_MODEL chroot "$partial" /debootstrap/debootstrap --second-stage >>"$OUT/debootstrap.log" 2>&1 \
        || die "debootstrap --second-stage failed; see $OUT/debootstrap.log"
    unmount_under "$partial"
    # Roots of an older package list are never used again.
    local stale
    for stale in "$CACHE_DIR"/root-*; do
        [[ -d $stale && $stale != "$root" && $stale != "$partial" ]] && remove_tree "$stale"
    done
    mv "$partial" "$root"
    PARTIAL=""
    printf '%s\n' "$root" >"$OUT/root.txt"
}

# Never rm -rf a tree with something mounted in it (a bound /dev would go with it).
unmount_under() {
    local dir=$1 target
    [[ -d $dir ]] || return 0
    while read -r target; do
        umount -l "$target" 2>/dev/null || true
    done < <(findmnt -rn -o TARGET | awk -v dir="$dir" 'index($0, dir "/") == 1 || $0 == dir' | sort -r)
}

remove_tree() {
    local dir=$1
    [[ -e $dir ]] || return 0
    unmount_under "$dir"
    if findmnt -rn -o TARGET | awk -v dir="$dir" 'index($0, dir "/") == 1 || $0 == dir { found = 1 } END { exit !found }'; then
        die "refusing to delete $dir: something is still mounted in it"
    fi
    rm -rf --one-file-system "$dir"
}

bind() {  # bind SOURCE TARGET-IN-ROOT
    mount --bind "$1" "$ROOT$2"
    MOUNTS+=("$ROOT$2")
}

# A throwaway layer over the cached root (overlayfs; a full copy where that is not
# available), so that every run installs into a fresh Pi OS-like system.
prepare_root() {
    local base
    base=$(cat "$OUT/root.txt")
    WORK=$(mktemp -d /var/tmp/serd-pi-run.XXXXXX)
    ROOT=$WORK/root
    mkdir -p "$WORK/upper" "$WORK/work" "$ROOT"
    if mount -t overlay overlay -o "lowerdir=$base,upperdir=$WORK/upper,workdir=$WORK/work" "$ROOT" 2>/dev/null; then
        MOUNTS+=("$ROOT")
    else
        say "overlayfs unavailable: copying the cached root"
        cp -a "$base/." "$ROOT/"
    fi
    mount -t proc proc "$ROOT/proc"
    MOUNTS+=("$ROOT/proc")
    # Read-only sysfs: ai-edge-litert's cpuinfo counts processors there.
    mount -t sysfs -o ro sysfs "$ROOT/sys"
    MOUNTS+=("$ROOT/sys")
    bind "$CPUINFO" /proc/cpuinfo
    bind /dev /dev
    # DNS, pip's settings and the CA bundle this machine trusts (a proxy's CA, say), so
    # that pip in the root reaches the package index as pip here does. The bundle is
    # copied, not rebuilt: update-ca-certificates under emulation takes minutes.
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    if [[ -f /etc/pip.conf ]]; then cp /etc/pip.conf "$ROOT/etc/pip.conf"; fi
    if [[ -d /etc/xdg/pip ]]; then mkdir -p "$ROOT/etc/xdg" && cp -r /etc/xdg/pip "$ROOT/etc/xdg/"; fi
    cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
    # The checkout, read-only: install-pi.sh builds from its own copy of it.
    mkdir -p "$ROOT$SRC_IN_ROOT" "$ROOT$CLIPS_IN_ROOT"
    bind "$REPO_DIR" "$SRC_IN_ROOT"
    mount -o remount,bind,ro "$ROOT$SRC_IN_ROOT"
}

cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null || true
    done
    MOUNTS=()
    if [[ -n $WORK ]]; then remove_tree "$WORK"; fi
    if [[ -n $PARTIAL ]]; then unmount_under "$PARTIAL"; fi
}

# Everything in the root runs emulated as a Pi 4's CPU: with qemu's default `max` CPU,
# XNNPACK's int8 kernels take a code path (SME) on which qemu 7.2 gives wrong logits.
in_root() {
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 QEMU_CPU="$CPU_MODEL" chroot "$ROOT" "$@"
}

as_service_user() {
    in_root runuser -u "$SERVICE_USER" -- "$@"
}

main() {
    setup_host
    if [[ -z $OUT ]]; then OUT=$(mktemp -d /tmp/serd-pi-check.XXXXXX); fi
    mkdir -p "$OUT"
    OUT=$(cd "$OUT" && pwd)
    : >"$OUT/timings.txt"
    if [[ ${#CLIPS[@]} -eq 0 ]]; then mapfile -t CLIPS < <(default_clips); fi
    local clip
    for clip in "${CLIPS[@]}"; do [[ -f $clip ]] || die "$clip: no such file"; done
    printf '%s\n' "${CLIPS[@]}" >"$OUT/clips.txt"

    mkdir -p "$CACHE_DIR"
    exec 9>"$CACHE_DIR/lock"
    flock 9  # one run at a time uses (or makes) the cache

    trap cleanup EXIT
    phase "bootstrap"
    cached_root
    if [[ $BOOTSTRAP_ONLY -eq 1 ]]; then
        phase ""
        say "root ready: $(cat "$OUT/root.txt") ($(cat "$OUT/cache.txt"), $(cat "$OUT/timings.txt"))"
        return
    fi
    phase "prepare_root"
    prepare_root
    local clips_in_root=() name
    for clip in "${CLIPS[@]}"; do
        name=$(basename "$clip")
        install -m 0644 "$clip" "$ROOT$CLIPS_IN_ROOT/$name"
        clips_in_root+=("$CLIPS_IN_ROOT/$name")
    done

    phase "install_pi"
    local install_status=0
    in_root bash "$SRC_IN_ROOT/packaging/install-pi.sh" 2>&1 | elapsed >"$OUT/install-pi.log" \
        || install_status=${PIPESTATUS[0]}
    echo "$install_status" >"$OUT/install-pi.status"
    [[ $install_status -eq 0 ]] || die "install-pi.sh failed ($install_status); see $OUT/install-pi.log"

    phase "analyze_arm64"
    as_service_user "$SERD" analyze --json --model "$INSTALLED_MODEL" "${clips_in_root[@]}" \
        >"$OUT/analyze-arm64.jsonl" 2>"$OUT/analyze-arm64.stderr" \
        || die "serd analyze failed on arm64; see $OUT/analyze-arm64.stderr"

    phase "run_listen_arm64"
    # The subscriber connects first (ZeroMQ retries until the daemon binds).
    as_service_user "$SERD" listen --connect "$ENDPOINT" --json --exit-on-stop --timeout "$LISTEN_TIMEOUT_S" \
        >"$OUT/listen.jsonl" 2>"$OUT/listen.stderr" &
    local listen_pid=$! run_status=0 listen_status=0
    as_service_user "$SERD" run --source "${clips_in_root[0]}" --fast --bind "$ENDPOINT" \
        --model "$INSTALLED_MODEL" --device-id pi-emulated >"$OUT/run.log" 2>&1 || run_status=$?
    wait "$listen_pid" || listen_status=$?
    printf 'run %d\nlisten %d\n' "$run_status" "$listen_status" >"$OUT/run-listen.status"

    phase "analyze_x86"
    PYTHONPATH=$REPO_DIR${PYTHONPATH:+:$PYTHONPATH} "$HOST_PYTHON" -m serd analyze --json \
        --model "$REPO_DIR/models/$MODEL_NAME.tflite" "${CLIPS[@]}" \
        >"$OUT/analyze-x86.jsonl" 2>"$OUT/analyze-x86.stderr" \
        || die "serd analyze failed on this machine; see $OUT/analyze-x86.stderr"
    phase ""

    "$HOST_PYTHON" "$HERE/compare.py" --out "$OUT" --sidecar "$REPO_DIR/models/$MODEL_NAME.json" \
        --cpu "$CPU_MODEL"
}

main
