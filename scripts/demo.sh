#!/usr/bin/env bash
# Set up serd and run the daemon, showing what it makes of the sound: bash scripts/demo.sh
# Uses the microphone when one is present, else the bundled recording
# (examples/demo.flac, six RAVDESS clips, played in real time), printing which
# emotion each clip was acted as when it starts (examples/demo.script.tsv). Ctrl-C stops.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
step() { printf '\n== %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! dpkg -s libportaudio2 >/dev/null 2>&1; then
  step "installing libportaudio2 (for the microphone)"
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libportaudio2 >/dev/null || \
    echo "could not install libportaudio2; continuing with the recording"
fi
if [ ! -x "$VENV/bin/serd" ]; then
  step "creating a virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --upgrade pip
  step "installing serd and its dependencies into $VENV (10-40 s the first time)"
  "$VENV/bin/pip" install .
else
  step "updating serd in $VENV"
  "$VENV/bin/pip" install -q .
fi

SOURCE=${SERD_SOURCE:-}
if [ -z "$SOURCE" ]; then
  if "$VENV/bin/serd" devices 2>/dev/null | grep -q '^ *[0-9]'; then SOURCE=mic; else SOURCE=examples/demo.flac; fi
fi
ENDPOINT="ipc://${TMPDIR:-/tmp}/serd-demo-$$.ipc"
LOG="${TMPDIR:-/tmp}/serd-demo.log"
step "source: $SOURCE"
if [ "$SOURCE" = examples/demo.flac ]; then
  # One line per window; before the first window that hears a clip, what the actor was asked to play.
  "$VENV/bin/serd" listen --connect "$ENDPOINT" --exit-on-stop | awk -v script=examples/demo.script.tsv '
    BEGIN { while ((getline row < script) > 0) if (row !~ /^start_s/) { split(row, f, "\t"); n++; at[n] = f[1]; acted[n] = f[3]; who[n] = f[4] }; k = 1 }
    $2 != "status" && k <= n && $3 + 0 > at[k] { printf "\n>>> %s s: acted as %s (%s)\n", at[k], toupper(acted[k]), who[k]; k++ }
    { print; fflush() }' &
else
  "$VENV/bin/serd" listen --connect "$ENDPOINT" --exit-on-stop &
fi
LISTEN=$!
sleep 1
trap 'kill $DAEMON 2>/dev/null || true' INT TERM
"$VENV/bin/serd" run --source "$SOURCE" --bind "$ENDPOINT" --device-id demo 2>"$LOG" &
DAEMON=$!
wait $DAEMON || true
wait $LISTEN || true
echo "daemon log: $LOG"
