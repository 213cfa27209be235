"""Helpers for the daemon tests: real `serd` subprocesses, real SUB sockets, real audio files.

Every wait here has a timeout, so a hung daemon fails its test instead of hanging CI.
Nothing here stands in for serd: the daemon runs as `python -m serd` exactly as a user runs it.
"""

from __future__ import annotations

import json
import os
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile
import zmq

from serd.messages import EmotionMessage, Message, StatusMessage, decode

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_FLAC = REPO_ROOT / "examples" / "demo.flac"
MODEL_RATE = 16000
WINDOW_S = 2.0
HOP_S = 0.5
PROB_SUM_TOL = 1e-3
PROB_MATCH_TOL = 1.5e-5
"""Both sides round probabilities to 5 decimals; identical floats may still land 1e-5 apart at a rounding edge."""

RUN_TIMEOUT_S = 120.0
"""Generous bounds for failing (the machine may be busy), not measured figures."""
MESSAGE_TIMEOUT_S = 60.0


def serd_cmd(*args: str | os.PathLike) -> list[str]:
    return [sys.executable, "-m", "serd", *map(str, args)]


def serd_env(**extra: str) -> dict[str, str]:
    """The checkout importable (whatever the cwd), TensorFlow quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra)
    return env


def ignore_sigint() -> None:
    """A Popen preexec_fn: start the child as a shell starts a background job of a script, SIGINT
    ignored. Ctrl-C tests use it: a command must still end on SIGINT (CI runs the suite that way)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def short_tmpdir(prefix: str = "serd-") -> Iterator[Path]:
    """A short directory under /tmp: ipc:// and unix socket paths must stay under ~100 bytes."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_serd(args: list, cwd: Path, timeout: float = RUN_TIMEOUT_S, env: dict | None = None,
             input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run `serd ARGS` to completion; stdout/stderr as text."""
    done = subprocess.run(serd_cmd(*args), cwd=cwd, env=env or serd_env(), input=input, capture_output=True,
                          timeout=timeout)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode("utf-8", "replace"),
                                       done.stderr.decode("utf-8", "replace"))


def assert_no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, f"a traceback reached the user:\n{stderr}"


def serd_lines(stderr: str) -> list[str]:
    """stderr lines written by serd (not the TFLite runtime's own INFO line about XNNPACK)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("INFO: ")]


class Subscriber:
    """A real ZeroMQ SUB socket, decoding every message with `serd.messages.decode`."""

    def __init__(self, endpoint: str, topics: tuple[str, ...] = ("serd.",), rcvhwm: int = 0,
                 rcvbuf: int | None = None, context: zmq.Context | None = None) -> None:
        self._context = context or zmq.Context.instance()
        self.socket = self._context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, rcvhwm)  # 0: unlimited, the I/O thread keeps draining the wire
        if rcvbuf is not None:
            self.socket.setsockopt(zmq.RCVBUF, rcvbuf)  # before connect: options are copied at connect time
        for topic in topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.socket.connect(endpoint)
        self.messages: list[Message] = []
        self.frame_bytes = 0

    def recv(self, timeout_s: float) -> Message | None:
        if not self.socket.poll(int(timeout_s * 1000)):
            return None
        frames = self.socket.recv_multipart()
        self.frame_bytes += sum(len(f) for f in frames)
        message = decode(frames)  # a MessageError here fails the test: the daemon sent a bad message
        self.messages.append(message)
        return message

    def collect_until(self, done: Callable[[list[Message]], bool], timeout_s: float = MESSAGE_TIMEOUT_S,
                      process: "DaemonProcess | None" = None) -> list[Message]:
        """Receive until `done(messages)`; fail on timeout (or if `process` died first and went quiet)."""
        deadline = time.monotonic() + timeout_s
        while not done(self.messages):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout_s} s; got {summarise(self.messages)}"
                                     + (f"\nstderr:\n{process.stderr_text()}" if process else ""))
            if self.recv(min(left, 0.5)) is None and process is not None and process.poll() is not None:
                # The daemon is gone; whatever it sent has arrived by now (or never will).
                if self.recv(1.0) is None and not done(self.messages):
                    raise AssertionError(f"serd exited ({process.returncode}) before the expected messages; got "
                                         f"{summarise(self.messages)}\nstderr:\n{process.stderr_text()}")
        return self.messages

    @property
    def emotions(self) -> list[EmotionMessage]:
        return [m for m in self.messages if isinstance(m, EmotionMessage)]

    @property
    def statuses(self) -> list[StatusMessage]:
        return [m for m in self.messages if isinstance(m, StatusMessage)]

    def close(self) -> None:
        self.socket.close(linger=0)

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def summarise(messages: list[Message]) -> str:
    emotions = [m.seq for m in messages if isinstance(m, EmotionMessage)]
    states = [m.state for m in messages if isinstance(m, StatusMessage)]
    return f"{len(emotions)} emotion messages (seq {emotions[:3]}..{emotions[-3:]}), statuses {states}"


def stopped(messages: list[Message]) -> bool:
    return any(isinstance(m, StatusMessage) and m.state == "stopping" for m in messages)


def emotion_count_at_least(n: int) -> Callable[[list[Message]], bool]:
    return lambda messages: sum(isinstance(m, EmotionMessage) for m in messages) >= n


class DaemonProcess:
    """`serd ARGS` as a background process; stderr goes to a file (a full pipe must never stall it)."""

    def __init__(self, args: list, cwd: Path, env: dict | None = None, stdin=None) -> None:
        self._stderr_path = Path(cwd) / f"serd-stderr-{time.monotonic_ns()}.log"
        self._stderr = open(self._stderr_path, "wb")
        self.process = subprocess.Popen(serd_cmd(*args), cwd=cwd, env=env or serd_env(), stdin=stdin,
                                        stdout=subprocess.DEVNULL, stderr=self._stderr)
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        self.returncode = self.process.poll()
        return self.returncode

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout_s: float = RUN_TIMEOUT_S) -> int:
        try:
            self.returncode = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"serd did not exit within {timeout_s} s\nstderr:\n{self.stderr_text()}") from None
        return self.returncode

    def stderr_text(self) -> str:
        self._stderr.flush()
        return self._stderr_path.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def close(self) -> None:
        self.kill()
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        self._stderr.close()

    def __enter__(self) -> "DaemonProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- audio -------------------------------------------------------------------------------------

def noise(seconds: float, dbfs: float, rate: int = MODEL_RATE, seed: int = 0) -> np.ndarray:
    """Gaussian noise at an RMS level of `dbfs` (a room's noise floor, far below the speech gate)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(round(seconds * rate))) * 10 ** (dbfs / 20)).astype(np.float32)


def load_clip(path: Path, rate: int = MODEL_RATE) -> np.ndarray:
    from serd.audiofile import read_audio

    return read_audio(path, rate)


def clip_then_quiet(clip: np.ndarray, clip_s: float, quiet_s: float, rate: int = MODEL_RATE) -> np.ndarray:
    """The first `clip_s` of a clip, then `quiet_s` of a -70 dBFS noise floor."""
    return np.concatenate([clip[: int(round(clip_s * rate))], noise(quiet_s, -70.0, rate)])


def as_pcm16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")


def write_pcm16_wav(path: Path, samples: np.ndarray, rate: int = MODEL_RATE) -> np.ndarray:
    """Write 16-bit PCM; return the int16 samples written (what every reader will see, exactly)."""
    pcm = as_pcm16(samples)
    soundfile.write(str(path), pcm, rate, subtype="PCM_16")
    return pcm


# -- serd analyze --------------------------------------------------------------------------------

def analyze_json(model: Path, files: list[Path], cwd: Path, *extra: str) -> list[dict]:
    done = run_serd(["analyze", "--json", "--model", model, *extra, *files], cwd=cwd)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@dataclass(frozen=True)
class Labels:
    names: tuple[str, ...]

    @classmethod
    def of(cls, model: Path) -> "Labels":
        return cls(tuple(json.loads(model.with_suffix(".json").read_text())["labels"]))


def assert_windows_match(emotions: list[EmotionMessage], windows: list[dict]) -> None:
    """Daemon messages and `serd analyze --json` windows: same bounds, speech decision and probabilities."""
    assert len(emotions) == len(windows), f"{len(emotions)} messages, {len(windows)} analyze windows"
    for message, window in zip(emotions, windows):
        where = f"window {window['start']}-{window['end']}"
        assert message.start_s == pytest_approx(window["start"]) and message.end_s == pytest_approx(window["end"]), where
        assert message.speech == window["speech"], where
        assert abs(message.level_dbfs - window["level_dbfs"]) <= 0.011, where
        if window["probs"] is None:
            assert message.probs is None, where
        else:
            assert message.probs is not None, where
            assert list(message.probs) == list(window["probs"]), where
            for label, p in window["probs"].items():
                assert abs(message.probs[label] - p) <= PROB_MATCH_TOL, f"{where} {label}: {message.probs[label]} != {p}"
            assert abs(message.arousal - window["arousal"]) <= 2 * PROB_MATCH_TOL, where


def pytest_approx(x: float, abs_tol: float = 1e-6):
    return pytest.approx(x, abs=abs_tol)


def assert_emotion_stream(emotions: list[EmotionMessage], labels: tuple[str, ...], device: str,
                          alpha: float = 0.3, reset_s: float = 5.0, first_seq: int = 0) -> None:
    """Every emotion message valid, contiguous, on the 2 s / 0.5 s grid, and smoothed as configured."""
    assert emotions, "no emotion messages"
    seqs = [m.seq for m in emotions]
    gaps = [(a, b) for a, b in zip(seqs, seqs[1:]) if b != a + 1]
    assert seqs[0] == first_seq and not gaps, f"seq not contiguous from {first_seq}: starts at {seqs[0]}, gaps {gaps[:10]}"
    check_smoothing = first_seq == 0  # joined late: the moving average's history is unknown
    state = None
    last_speech_end = None
    for m in emotions:
        where = f"seq {m.seq} ({m.start_s}-{m.end_s} s)"
        assert m.schema == "serd.emotion/1" and m.device == device and m.topic == f"serd.emotion.{device}", where
        assert m.end_s - m.start_s == pytest_approx(WINDOW_S, 1e-4), where
        assert m.start_s == pytest_approx(m.seq * HOP_S, 1e-4), where
        assert m.captured_at <= m.time + 1e-3, where
        if m.speech:
            assert m.probs is not None and m.smoothed is not None, where
            assert tuple(m.probs) == labels and tuple(m.smoothed) == labels, where
            assert abs(sum(m.probs.values()) - 1.0) <= PROB_SUM_TOL, where
            assert abs(sum(m.smoothed.values()) - 1.0) <= PROB_SUM_TOL, where
            assert all(0.0 <= p <= 1.0 for p in m.probs.values()), where
            raw = np.array([m.probs[k] for k in labels])
            state = raw if state is None else alpha * raw + (1 - alpha) * state
            last_speech_end = m.end_s
            if check_smoothing:
                np.testing.assert_allclose([m.smoothed[k] for k in labels], state, atol=1e-4, err_msg=where)
            assert m.label == max(m.smoothed, key=m.smoothed.get), where
            assert m.confidence == pytest_approx(m.smoothed[m.label], 1e-5), where
            # arousal = P(angry, happy, fearful) / P(those or neutral, sad), of this window and of the average
            for value, probs in ((m.arousal, m.probs), (m.smoothed_arousal, m.smoothed)):
                high = probs["angry"] + probs["happy"] + probs["fearful"]
                assert value == pytest_approx(high / (high + probs["neutral"] + probs["sad"]), 1e-4), where
        else:
            assert m.probs is None and m.smoothed is None and m.label is None and m.confidence is None, where
            assert m.arousal is None and m.smoothed_arousal is None, where
            if last_speech_end is not None and m.end_s - last_speech_end >= reset_s:
                state = None


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
