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
# qemu-user-static, binfmt-support, debootstrap (serd on emulated arm64: tests/test_pi_emulated.py);
# PostgreSQL's server binaries (history tests start a throwaway cluster of their own);
# Mosquitto (the serd mqtt tests start a broker of their own on a free loopback port).
PACKAGES="libportaudio2 alsa-utils pulseaudio pulseaudio-utils libasound2-plugins systemd chromium shellcheck
  qemu-user-static binfmt-support debootstrap postgresql mosquitto"
missing=$(for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "installing: $missing"
  as_root apt-get update -qq
  # shellcheck disable=SC2086
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# CI: make (or find) the cached arm64 root for tests/test_pi_emulated.py in the background
# while the venv installs and the first pass runs; minutes when cold, instant when warm. The
# test waits for it by itself (the check holds a lock on the cache while it bootstraps); it is
# over before the serial pass, so it never loads the machine under the timing-sensitive tests
# (tests/reliability). If it failed, the test bootstraps again and says why.
pi_bootstrap=""
if [ "${SERD_CI:-}" = 1 ] && [ "$(id -u)" = 0 ]; then
  pi_bootstrap_log=$(mktemp /tmp/serd-pi-bootstrap.XXXXXX.log)
  bash packaging/pi-emulated-check.sh --bootstrap-only >"$pi_bootstrap_log" 2>&1 &
  pi_bootstrap=$!
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
# train: TensorFlow + librosa (smoke training, librosa parity); tflite-runtime: the
# fallback interpreter, tested beside ai-edge-litert (it pins numpy < 2 for the whole venv).
"$VENV/bin/pip" install -q -e ".[train,tflite-runtime,dev]"

# Two passes: every test that may share the machine, over the cores (pytest-xdist, one file per
# worker, a worker more than cores: most tests wait on real time, sockets and subprocesses, not on
# the CPU); then the `serial` ones (the reliability files that measure the daemon's pace under
# load: soak, load, attacks, a shared core at real time; tests/conftest.py), one at a time. Extra arguments (a path, -k, -x, -q) go to both passes;
# a marker expression goes in SERD_TEST_MARK (e.g. "not slow"), joined to each pass's own.
# pytest's "no tests collected" (5) counts as a failure only when neither pass ran anything.
set +e
mark=${SERD_TEST_MARK:+ and ($SERD_TEST_MARK)}
"$VENV/bin/python" -m pytest -n "${SERD_TEST_WORKERS:-$(($(nproc) + 1))}" --dist loadfile -m "not serial$mark" "$@"
shared=$?
if [ -n "$pi_bootstrap" ]; then
  wait "$pi_bootstrap" || echo "arm64 bootstrap failed: see $pi_bootstrap_log" >&2
fi
"$VENV/bin/python" -m pytest -m "serial$mark" "$@"
serial=$?
set -e
if [ "$shared" = 5 ] && [ "$serial" = 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
for status in "$shared" "$serial"; do
  if [ "$status" != 0 ] && [ "$status" != 5 ]; then
    exit "$status"
  fi
done
exit 0
