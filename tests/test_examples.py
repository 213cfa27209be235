"""The README's subscriber (examples/subscriber.py) works against a real daemon: docs match code."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO_ROOT, subprocess_env

SUBSCRIBER = REPO_ROOT / "examples" / "subscriber.py"
DEMO = REPO_ROOT / "examples" / "demo.flac"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_subscriber_is_the_example_file():
    readme = (REPO_ROOT / "README.md").read_text()
    lines = SUBSCRIBER.read_text().splitlines()
    # The README shows the same subscription and loop (with a fixed endpoint).
    start = next(i for i, line in enumerate(lines) if line.startswith("sub.setsockopt"))
    for line in lines[start:]:
        if line.strip():
            assert line in readme, f"README subscriber differs from examples/subscriber.py at: {line!r}"


def test_example_subscriber_prints_labels(tiny_models, tmp_path: Path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    env = subprocess_env()
    subscriber = subprocess.Popen([sys.executable, str(SUBSCRIBER), endpoint], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    time.sleep(1.0)  # let the SUB connect before the first window completes (2 s of audio)
    daemon = subprocess.run(
        [sys.executable, "-m", "serd", "run", "--source", str(DEMO), "--bind", endpoint, "--model",
         str(tiny_models["int8"]), "--device-id", "example-room"],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    subscriber.terminate()
    out, err = subscriber.communicate(timeout=10)
    assert daemon.returncode == 0, daemon.stderr
    lines = [line.split() for line in out.splitlines()]
    assert lines, f"the subscriber printed nothing; stderr: {err}"
    labels = {"neutral", "happy", "sad", "angry", "fearful", "disgust"}
    for device, label, confidence in lines:
        assert device == "example-room" and label in labels and confidence.endswith("%")
    # speech windows of the demo: six clips, each gives a few windows; silence gives none
    assert 6 <= len(lines) < 75
