#!/usr/bin/env bash
# Set up everything the tests need and run them: bash scripts/test.sh [pytest args]
# Works on a fresh Debian 12 machine with Python 3.11 (as root, or with sudo for apt).
# Dataset-scale tests need the full RAVDESS/nEMO corpora in $SERD_DATA (default ../shared/data);
# without them they are skipped and the run ends with one line saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-test}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# System packages: PortAudio (microphone); ALSA tools, PulseAudio and the ALSA pulse
# plugin (a fake microphone paced by a PulseAudio null sink); systemd (systemd-analyze
# checks of the unit); Chromium (dashboard browser test); shellcheck (install scripts);
# PostgreSQL's server binaries (history tests start a throwaway cluster of their own).
PACKAGES="libportaudio2 alsa-utils pulseaudio pulseaudio-utils libasound2-plugins systemd chromium shellcheck postgresql"
missing=$(for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "installing: $missing"
  as_root apt-get update -qq
  # shellcheck disable=SC2086
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
# train: TensorFlow + librosa (smoke training, librosa parity); tflite-runtime: the
# fallback interpreter, tested beside ai-edge-litert (it pins numpy < 2 for the whole venv).
"$VENV/bin/pip" install -q -e ".[train,tflite-runtime,dev]"

set +e
"$VENV/bin/python" -m pytest "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$status"
