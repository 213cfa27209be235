#!/usr/bin/env bash
# Set up serd and run the daemon with a live view: bash scripts/demo.sh
# Uses the microphone when one is present, else the bundled recording
# (examples/demo.flac, six RAVDESS clips, played in real time). Ctrl-C stops.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! dpkg -s libportaudio2 >/dev/null 2>&1; then
  echo "installing libportaudio2 (for the microphone)"
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libportaudio2 >/dev/null || \
    echo "could not install libportaudio2; continuing with the recording"
fi
if [ ! -x "$VENV/bin/serd" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
"$VENV/bin/pip" install -q .

SOURCE=${SERD_SOURCE:-}
if [ -z "$SOURCE" ]; then
  if "$VENV/bin/serd" devices 2>/dev/null | grep -q '^ *[0-9]'; then SOURCE=mic; else SOURCE=examples/demo.flac; fi
fi
ENDPOINT="ipc://${TMPDIR:-/tmp}/serd-demo-$$.ipc"
echo "source: $SOURCE"
"$VENV/bin/serd" listen --connect "$ENDPOINT" --exit-on-stop &
LISTEN=$!
sleep 1
trap 'kill $DAEMON 2>/dev/null || true' INT TERM
"$VENV/bin/serd" run --source "$SOURCE" --bind "$ENDPOINT" --device-id demo 2>"${TMPDIR:-/tmp}/serd-demo.log" &
DAEMON=$!
wait $DAEMON || true
wait $LISTEN || true
echo "daemon log: ${TMPDIR:-/tmp}/serd-demo.log"
