#!/usr/bin/env bash
# Install serd as a systemd service on a Raspberry Pi (64-bit Pi OS Bookworm).
#
# Usage, from a checkout of the repository:
#   sudo ./packaging/install-pi.sh            install (or upgrade) and start serd
#   ./packaging/install-pi.sh --dry-run       print what would be done, change nothing
#   --with-metrics, --with-mqtt               also the serd[metrics] / serd[mqtt] extras
#   --with-postgres                           also serd[postgres] (psycopg: serd record --db postgresql://...)
#   --with-record                             also serd-record.service, enabled: the history (docs/history.md)
#
# What it does (safe to run again; an existing /etc/serd/config.yaml is kept):
#   - apt: libportaudio2 (microphone) and python3-venv
#   - the system user `serd` (no home, no login shell, in group audio)
#   - /opt/serd/venv with serd and its dependencies, from binary wheels only
#   - /usr/local/bin/serd, a link to /opt/serd/venv/bin/serd (serd on the PATH; a file
#     already there that is not that link is left alone)
#   - /opt/serd/models from the checkout's models/
#   - /etc/serd/config.yaml from the checkout's config.yaml, if there is none yet
#   - /etc/systemd/system/serd.service, enabled and (re)started
#   - with --with-mqtt: /etc/systemd/system/serd-mqtt.service, installed but not enabled
#     (set mqtt.broker in the config first; docs/home-assistant.md)
#   - with --with-record: /etc/systemd/system/serd-record.service, enabled and (re)started
#
# 64-bit Pi OS is required. The TFLite interpreter serd uses, ai-edge-litert, has
# no wheel for 32-bit ARM (armv7l) at all, and for CPython 3.11 on armv7l the
# package index has no numpy, pyzmq, pyyaml or soxr wheel either (checked with
# packaging/check-pi-wheels.sh --arch armv7l). 32-bit Pi OS would need the
# tflite-runtime 2.14.0 fallback (it does have a cp311 manylinux_2_34_armv7l
# wheel, and needs numpy < 2) plus armv7l builds of the others from piwheels.org
# or Debian (python3-numpy, python3-zmq, python3-yaml): not supported here.
set -euo pipefail

PREFIX=/opt/serd
VENV=$PREFIX/venv
MODELS_DIR=$PREFIX/models
CONFIG_DIR=/etc/serd
CONFIG=$CONFIG_DIR/config.yaml
BIN_LINK=/usr/local/bin/serd   # uninstall-pi.sh removes it only while it is the link to $VENV/bin/serd
UNIT_PATH=/etc/systemd/system/serd.service
SERVICE_USER=serd
MODEL_NAME=serd-emotion5-int8
MODEL_PATH=$MODELS_DIR/$MODEL_NAME.tflite
APT_PACKAGES=(libportaudio2 python3-venv)
MIN_PYTHON_MINOR=10   # pyproject.toml: requires-python >= 3.10 (Bookworm has 3.11)
START_WAIT_S=20       # how long to wait for the service to report it is running

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRY_RUN=0
RECORD=0              # --with-record: install and start serd-record.service too
EXTRAS=()             # optional extras: metrics (Prometheus), mqtt (Home Assistant), postgres (psycopg)
BUILD_DIR=""
# Root's umask may be 077; the service user must be able to read the venv and models.
umask 022

usage() {
    sed -n '2,9s/^# \{0,1\}//p' "$0"
}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'install-pi: warning: %s\n' "$*" >&2; }
die() { printf 'install-pi: error: %s\n' "$*" >&2; exit 1; }

# Every command that changes the system goes through run: printed in --dry-run,
# executed otherwise. Read-only checks run in both modes.
run() {
    if [[ $DRY_RUN -eq 1 ]]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run|-n) DRY_RUN=1; shift ;;
        --with-metrics) EXTRAS+=(metrics); shift ;;
        --with-mqtt) EXTRAS+=(mqtt); shift ;;
        --with-postgres) EXTRAS+=(postgres); shift ;;
        --with-record) RECORD=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

# systemd's own test (sd_booted): it is PID 1 only if it made /run/systemd/system.
have_systemd() { [[ -d /run/systemd/system ]]; }

preflight() {
    if [[ $DRY_RUN -eq 0 && $EUID -ne 0 ]]; then
        die "run as root: sudo $0"
    fi
    [[ -f $REPO_DIR/pyproject.toml && -d $REPO_DIR/serd ]] \
        || die "$REPO_DIR does not look like a serd checkout (no pyproject.toml / serd/)"
    [[ -f $REPO_DIR/systemd/serd.service ]] || die "missing $REPO_DIR/systemd/serd.service"
    [[ -f $REPO_DIR/config.yaml ]] || die "missing $REPO_DIR/config.yaml"
    [[ -f $REPO_DIR/models/$MODEL_NAME.tflite && -f $REPO_DIR/models/$MODEL_NAME.json ]] \
        || die "missing models/$MODEL_NAME.tflite or its .json sidecar in $REPO_DIR"

    local arch
    arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
    case "$arch" in
        arm64|aarch64) ;;
        amd64|x86_64) warn "installing on $arch, not a Raspberry Pi: fine for a test machine" ;;
        armhf|armel|armv7l|armv6l)
            die "this is 32-bit ($arch) Pi OS; serd needs 64-bit Pi OS (no ai-edge-litert wheel for 32-bit ARM, see the top of $0)" ;;
        *) die "unsupported architecture $arch (serd needs 64-bit Pi OS, arm64)" ;;
    esac

    if command -v python3 >/dev/null; then
        python3 -c "import sys; sys.exit(sys.version_info < (3, $MIN_PYTHON_MINOR))" \
            || die "python3 is $(python3 -V 2>&1); serd needs Python >= 3.$MIN_PYTHON_MINOR"
    elif [[ $DRY_RUN -eq 0 ]]; then
        die "python3 not found"
    fi
    have_systemd || warn "systemd is not running here: the unit is installed but not started"
}

install_apt_packages() {
    local missing=() package
    for package in "${APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$package")
        fi
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        say "apt packages present: ${APT_PACKAGES[*]}"
        return
    fi
    say "installing apt packages: ${missing[*]}"
    run apt-get update
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

# The user is made here rather than by a sysusers.d file: one script installs and
# one removes everything (systemd-sysusers never deletes a user), and the user must
# exist before /etc/serd is given to its group, a few lines below.
create_user() {
    if getent passwd "$SERVICE_USER" >/dev/null; then
        say "user $SERVICE_USER exists"
        if ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx audio; then
            run usermod --append --groups audio "$SERVICE_USER"
        fi
        return
    fi
    say "creating system user $SERVICE_USER (no home, no login, group audio)"
    run useradd --system --user-group --groups audio --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin \
        --comment "serd speech emotion recognition daemon" "$SERVICE_USER"
}

# Built from a copy: building in the checkout would leave a root-owned build/ and
# serd.egg-info/ there, in the way of the next `git pull`.
copy_source() {  # copy_source DEST: the checkout without VCS data, build output or runs
    local dest=$1
    local excludes=(--exclude-vcs --exclude=./build --exclude=./dist --exclude='*.egg-info'
        --exclude=__pycache__ --exclude=./runs --exclude='./.venv*' --exclude='./venv*')
    if [[ $DRY_RUN -eq 1 ]]; then
        printf '+ tar -C %q' "$REPO_DIR"
        printf ' %q' "${excludes[@]}"
        printf ' -cf - . | tar -C %q -xf -\n' "$dest"
        return
    fi
    mkdir -p "$dest"
    tar -C "$REPO_DIR" "${excludes[@]}" -cf - . | tar -C "$dest" -xf -
}

install_venv() {
    if [[ -x $VENV/bin/python ]]; then
        say "virtualenv $VENV exists"
    else
        say "creating virtualenv $VENV"
        run install -d -m 0755 "$PREFIX"
        run python3 -m venv "$VENV"
    fi
    say "installing serd and its dependencies into $VENV (binary wheels only)"
    copy_source "$BUILD_DIR/src"
    # --only-binary: never compile a dependency on the Pi (packaging/check-pi-wheels.sh
    # checks that they all have aarch64 wheels); serd itself is built from source.
    local target=$BUILD_DIR/src
    if [[ ${#EXTRAS[@]} -gt 0 ]]; then
        # prometheus-client and paho-mqtt are pure Python wheels; psycopg-binary has aarch64
        # CPython 3.11 wheels (packaging/check-pi-wheels.sh).
        target="${target}[$(IFS=,; echo "${EXTRAS[*]}")]"
    fi
    run "$VENV/bin/pip" install --disable-pip-version-check --no-cache-dir \
        --only-binary=:all: --upgrade "$target"
}

# `sudo -u serd serd history`, as the docs say, needs serd on the PATH: a link, so that an
# upgrade of the venv is an upgrade of the command too.
link_command() {
    local target=$VENV/bin/serd
    if [[ -L $BIN_LINK && $(readlink "$BIN_LINK") == "$target" ]]; then
        say "$BIN_LINK links to $target"
    elif [[ -e $BIN_LINK || -L $BIN_LINK ]]; then
        warn "$BIN_LINK exists and is not a link to $target: left alone (run $target instead)"
    else
        say "linking $BIN_LINK -> $target"
        run ln -s "$target" "$BIN_LINK"
    fi
}

install_models() {
    say "copying models to $MODELS_DIR"
    run install -d -m 0755 "$MODELS_DIR"
    run cp -r "$REPO_DIR/models/." "$MODELS_DIR/"
    run chmod -R u=rwX,go=rX "$MODELS_DIR"
}

install_config() {
    run install -d -m 0750 -o root -g "$SERVICE_USER" "$CONFIG_DIR"
    if [[ -e $CONFIG ]]; then
        say "keeping the existing $CONFIG"
    else
        say "installing $CONFIG (model: $MODEL_PATH)"
        # Edited and checked in a copy, so that a failure leaves no half-made config
        # (which the next run would then keep).
        local draft=$BUILD_DIR/config.yaml
        run cp "$REPO_DIR/config.yaml" "$draft"
        # The model as an absolute path: a bare name would be looked up next to the
        # installed package, not in $MODELS_DIR. Replace a top-level `model:` line,
        # or add one.
        if grep -q '^model:' "$REPO_DIR/config.yaml"; then
            run sed -i "s|^model:.*\$|model: $MODEL_PATH|" "$draft"
        else
            run sed -i "\$a model: $MODEL_PATH" "$draft"
        fi
        if [[ $DRY_RUN -eq 0 ]]; then
            "$VENV/bin/python" - "$draft" "$MODEL_PATH" <<'PY' || die "could not set model: $MODEL_PATH in a copy of config.yaml; install $CONFIG by hand"
import sys, yaml
with open(sys.argv[1], encoding="utf-8") as handle:
    settings = yaml.safe_load(handle)
sys.exit(0 if isinstance(settings, dict) and settings.get("model") == sys.argv[2] else 1)
PY
        fi
        run install -m 0640 -o root -g "$SERVICE_USER" "$draft" "$CONFIG"
    fi
    # The group may be new (a reinstall after uninstall): give /etc/serd to it again,
    # so the service can read its config and CURVE keys.
    run chgrp -R "$SERVICE_USER" "$CONFIG_DIR"
}

install_unit() {
    say "installing $UNIT_PATH"
    run install -m 0644 "$REPO_DIR/systemd/serd.service" "$UNIT_PATH"
    if [[ " ${EXTRAS[*]} " == *" mqtt "* ]]; then
        # Not enabled: the broker's address and credentials go into the config first.
        say "installing /etc/systemd/system/serd-mqtt.service (not enabled: set mqtt.broker, then systemctl enable --now serd-mqtt)"
        run install -m 0644 "$REPO_DIR/systemd/serd-mqtt.service" /etc/systemd/system/serd-mqtt.service
    fi
    if [[ $RECORD -eq 1 ]]; then
        say "installing /etc/systemd/system/serd-record.service (history in /var/lib/serd-record)"
        run install -m 0644 "$REPO_DIR/systemd/serd-record.service" /etc/systemd/system/serd-record.service
    fi
    if ! have_systemd; then
        # A chroot, a container or an image being built: there is no service manager
        # to enable or start the unit with. Said plainly rather than pretended.
        say "systemd is not running here: serd.service installed but not enabled or started"
        say "on the booted system: sudo systemctl enable --now serd$([[ $RECORD -eq 1 ]] && echo ' serd-record')"
        return
    fi
    run systemctl daemon-reload
    run systemctl enable serd.service
    # restart, not just start: after an upgrade the new code must run. --no-block:
    # Type=notify waits for READY=1 (audio flowing); report() waits for it instead.
    run systemctl restart --no-block serd.service
    if [[ $RECORD -eq 1 ]]; then
        run systemctl enable serd-record.service
        run systemctl restart --no-block serd-record.service
    fi
}

report() {
    if [[ $DRY_RUN -eq 1 ]]; then
        say "dry run: nothing was changed"
        return
    fi
    if have_systemd; then
        local state waited=0
        while :; do
            state=$(systemctl is-active serd.service || true)
            [[ $state == activating && $waited -lt $START_WAIT_S ]] || break
            sleep 1
            waited=$((waited + 1))
        done
        systemctl --no-pager --lines=5 status serd.service || true
        case "$state" in
            active) say "serd is running" ;;
            activating) warn "serd is still starting after ${START_WAIT_S} s (no audio yet? is a microphone plugged in?)" ;;
            *) die "serd is $state; see: journalctl -u serd -e" ;;
        esac
    fi
    say "config: $CONFIG (after editing: sudo systemctl reload serd, or restart)"
    say "logs: journalctl -u serd -f    messages: $VENV/bin/serd listen"
}

cleanup() {
    if [[ -n $BUILD_DIR && $DRY_RUN -eq 0 ]]; then
        rm -rf "$BUILD_DIR"
    fi
}

preflight
if [[ $DRY_RUN -eq 1 ]]; then
    BUILD_DIR=/tmp/serd-install.XXXXXX
else
    BUILD_DIR=$(mktemp -d /tmp/serd-install.XXXXXX)
fi
trap cleanup EXIT
install_apt_packages
create_user
install_venv
link_command
install_models
install_config
install_unit
report
