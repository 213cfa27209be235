"""The README's subscriber (examples/subscriber.py) works against a real daemon: docs match code."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import soundfile

from conftest import REPO_ROOT, subprocess_env

SUBSCRIBER = REPO_ROOT / "examples" / "subscriber.py"
DEMO = REPO_ROOT / "examples" / "demo.flac"
SCRIPT = REPO_ROOT / "examples" / "demo.script.tsv"


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
    # As a user runs it: output to a pipe is block-buffered unless the example flushes each line.
    subscriber_env = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}
    subscriber = subprocess.Popen([sys.executable, str(SUBSCRIBER), endpoint], env=subscriber_env, stdout=subprocess.PIPE,
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


def test_make_demo_rebuilds_the_demo_and_its_script_from_the_fixtures(tmp_path: Path):
    """demo.flac and demo.script.tsv are what the committed script makes from the fixture clips."""
    out = tmp_path / "demo.flac"
    done = subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "make_demo.py"), "--out", str(out)],
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == DEMO.read_bytes()
    assert (tmp_path / "demo.script.tsv").read_text() == SCRIPT.read_text()
    rows = [line.split("\t") for line in SCRIPT.read_text().splitlines()[1:]]
    assert [row[2].split()[0] for row in rows] == ["neutral", "angry", "sad", "happy", "fearful", "disgust"]
    starts = [float(row[0]) for row in rows]
    ends = [float(row[1]) for row in rows]
    assert starts == sorted(starts) and all(s < e for s, e in zip(starts, ends))
    assert ends[-1] < soundfile.info(str(DEMO)).duration
