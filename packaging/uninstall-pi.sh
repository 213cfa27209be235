#!/usr/bin/env bash
# Remove what packaging/install-pi.sh installed.
#
# Usage:
#   sudo ./packaging/uninstall-pi.sh            remove serd, keep /etc/serd (config, keys)
#   sudo ./packaging/uninstall-pi.sh --purge    remove /etc/serd too
#   ./packaging/uninstall-pi.sh --dry-run       print what would be done, change nothing
#
# Removes: the services (serd, serd-record, serd-mqtt: stopped, disabled, unit files), /opt/serd (venv and models),
# /usr/local/bin/serd if it is the installer's link to /opt/serd/venv/bin/serd, and the
# user serd. The apt packages (libportaudio2, python3-venv) stay: other
# software may use them. Safe to run again.
set -euo pipefail

PREFIX=/opt/serd
CONFIG_DIR=/etc/serd
UNIT_DIR=/etc/systemd/system
UNITS=(serd.service serd-record.service serd-mqtt.service)  # all three run /opt/serd/venv, about to go
SERVICE_USER=serd
BIN_LINK=/usr/local/bin/serd
BIN_TARGET=$PREFIX/venv/bin/serd   # what install-pi.sh links BIN_LINK to

DRY_RUN=0
PURGE=0

usage() {
    sed -n '2,7s/^# \{0,1\}//p' "$0"
}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'uninstall-pi: warning: %s\n' "$*" >&2; }
die() { printf 'uninstall-pi: error: %s\n' "$*" >&2; exit 1; }

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
        --purge) PURGE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

if [[ $DRY_RUN -eq 0 && $EUID -ne 0 ]]; then
    die "run as root: sudo $0"
fi

have_systemd() { [[ -d /run/systemd/system ]]; }

remove_service() {
    local unit="$1" path="$UNIT_DIR/$1"
    if have_systemd && systemctl cat "$unit" >/dev/null 2>&1; then
        say "stopping and disabling $unit"
        run systemctl disable --now "$unit"
    fi
    if [[ -e $path ]]; then
        say "removing $path"
        run rm -f "$path"
        if have_systemd; then
            run systemctl daemon-reload
            # Forget a failed state, so that `systemctl --failed` does not list it.
            run systemctl reset-failed "$unit" 2>/dev/null || true
        fi
    elif [[ $unit == serd.service ]]; then
        say "no $path"
    fi
}

remove_files() {
    if [[ -e $PREFIX ]]; then
        say "removing $PREFIX (virtualenv and models)"
        run rm -rf "$PREFIX"
    else
        say "no $PREFIX"
    fi
}

remove_command_link() {
    if [[ -L $BIN_LINK && $(readlink "$BIN_LINK") == "$BIN_TARGET" ]]; then
        say "removing $BIN_LINK (the link to $BIN_TARGET)"
        run rm -f "$BIN_LINK"
    elif [[ -e $BIN_LINK || -L $BIN_LINK ]]; then
        say "keeping $BIN_LINK: it is not the installer's link to $BIN_TARGET"
    fi
}

remove_config() {
    if [[ ! -e $CONFIG_DIR ]]; then
        return
    fi
    if [[ $PURGE -eq 1 ]]; then
        say "removing $CONFIG_DIR (--purge)"
        run rm -rf "$CONFIG_DIR"
    else
        # Kept, but given to root: the group serd is about to go, and its number could
        # be reused by some other group. install-pi.sh gives it back to serd.
        say "keeping $CONFIG_DIR (config and keys; --purge removes it)"
        run chgrp -R root "$CONFIG_DIR"
    fi
}

remove_user() {
    local user_exists=0
    if getent passwd "$SERVICE_USER" >/dev/null; then
        user_exists=1
        say "removing user $SERVICE_USER"
        run userdel "$SERVICE_USER"
    else
        say "no user $SERVICE_USER"
    fi
    # userdel also removes the user's own group when USERGROUPS_ENAB is on (Debian's
    # default); remove a group left over otherwise. (In a dry run the user is still
    # there, so its group is expected to go with it.)
    if getent group "$SERVICE_USER" >/dev/null && [[ $DRY_RUN -eq 0 || $user_exists -eq 0 ]]; then
        say "removing group $SERVICE_USER"
        run groupdel "$SERVICE_USER"
    fi
}

for unit in "${UNITS[@]}"; do
    remove_service "$unit"
done
remove_command_link
remove_files
remove_config
remove_user
if [[ $DRY_RUN -eq 1 ]]; then
    say "dry run: nothing was changed"
else
    say "serd is uninstalled"
fi
