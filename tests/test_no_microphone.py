"""No microphone at all: the daemon says so in words a teacher can act on, and keeps retrying.

Real sounddevice/PortAudio in a process that can see no capture device: no PulseAudio
server (PULSE_SERVER points nowhere) and a HOME without an .asoundrc. On a machine whose
ALSA lists a real sound card the premise does not hold, and the test says so and skips.
"""

from __future__ import annotations

import json
import re
import signal
import pytest

from helpers_daemon import DaemonProcess, Subscriber, assert_no_traceback, run_serd, serd_env, short_tmpdir
from serd.messages import StatusMessage
from serd.sources import NO_INPUT_DEVICE

WAIT_S = 60.0


@pytest.fixture
def no_device_env():
    with short_tmpdir("serd-nomic-") as root:
        (root / "home").mkdir()
        env = serd_env(HOME=str(root / "home"), XDG_RUNTIME_DIR=str(root), PULSE_SERVER=f"unix:{root}/no-pulse")
        done = run_serd(["devices", "--json"], cwd=root, env=env)
        if done.returncode != 0:
            pytest.skip(f"serd devices failed here (PortAudio?): {done.stderr.strip()[-200:]}")
        if json.loads(done.stdout):
            pytest.skip(f"this machine has capture devices even without PulseAudio: {done.stdout.strip()[:200]}")
        yield root, env


def lost_details(messages) -> list[str]:
    return [m.detail for m in messages if isinstance(m, StatusMessage) and m.state == "source_lost"]


def test_no_input_device_is_said_plainly_and_retried(no_device_env):
    root, env = no_device_env
    endpoint = f"ipc://{root}/pub.ipc"
    with Subscriber(endpoint) as sub, DaemonProcess(["run", "--source", "mic", "--bind", endpoint], cwd=root,
                                                    env=env) as daemon:
        sub.collect_until(lambda messages: len(lost_details(messages)) >= 2, timeout_s=WAIT_S, process=daemon)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout_s=WAIT_S) == 0, daemon.stderr_text()
        stderr = daemon.stderr_text()
    assert_no_traceback(stderr)
    # The subscriber may join after the first status (ZeroMQ's slow joiner); the log has them all.
    details = lost_details(sub.messages)
    delays = [int(re.fullmatch(rf"{re.escape(NO_INPUT_DEVICE)}; retrying in (\d+) s", d).group(1)) for d in details]
    assert delays == sorted(set(delays)) and len(delays) >= 2, f"it must keep retrying, with backoff: {details}"
    assert NO_INPUT_DEVICE == "no input device found; see `serd devices`, or use `--source FILE`"
    assert f"state source_lost: {NO_INPUT_DEVICE}; retrying in 1 s" in stderr
    assert f"state source_lost: {NO_INPUT_DEVICE}; retrying in 2 s" in stderr
    assert "querying device -1" not in stderr
