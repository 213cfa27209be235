"""Helpers for the service-level tests (security, faults, reload): real processes, sockets, devices.

Nothing here stands in for serd: the daemon runs as `python -m serd` exactly as systemd runs
it, talks to a real ZeroMQ socket and sends sd_notify datagrams to a real unix socket. Every
wait has a timeout, so a hung daemon fails its test instead of hanging the run. Timeouts are
bounds for failing on a busy machine, never measured figures.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
import zmq

from serd.messages import EmotionMessage, Message, StatusMessage, decode

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_FLAC = REPO_ROOT / "examples" / "demo.flac"
STARTUP_S = 60.0
"""Generous: a training job may share the machine; a bound for failing, not a figure."""
EXIT_S = 30.0
MESSAGE_S = 60.0
TFLITE_INFO_PREFIX = "INFO: "
"""The TFLite runtime's own stderr line ("INFO: Created TensorFlow Lite XNNPACK delegate")."""


def serd_cmd(*args: str | os.PathLike) -> list[str]:
    return [sys.executable, "-m", "serd", *map(str, args)]


def serd_env(**extra: str) -> dict[str, str]:
    """The checkout importable, no inherited systemd variables, TensorFlow quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "SERD_TFLITE_BACKEND"):
        env.pop(name, None)
    env.update(extra)
    return env


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


def write_config(path: Path, settings: dict) -> Path:
    path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    return path


def run_serd(args: list, cwd: Path, env: dict | None = None, timeout: float = STARTUP_S + EXIT_S
             ) -> subprocess.CompletedProcess:
    """`serd ARGS` to completion, output as text."""
    return subprocess.run(serd_cmd(*args), cwd=cwd, env=env or serd_env(), capture_output=True, text=True,
                          timeout=timeout)


def user_lines(stderr: str) -> list[str]:
    """What serd told the user on stderr, without log records and the TFLite runtime's INFO line."""
    return [line for line in stderr.splitlines()
            if line.strip() and not line.startswith((TFLITE_INFO_PREFIX, "INFO ", "WARNING ", "DEBUG "))]


def assert_one_line_error(stderr: str, *needles: str) -> str:
    """Exactly one non-log line on stderr, holding every needle; no traceback anywhere."""
    assert "Traceback" not in stderr, f"a traceback reached the user:\n{stderr}"
    assert "Fatal Python error" not in stderr, f"serd crashed:\n{stderr}"
    lines = user_lines(stderr)
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{stderr}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in the error line {lines[0]!r}"
    return lines[0]


class ServeProcess:
    """`serd ARGS` in the background; stderr goes to a file in `log_dir` (a full pipe must never stall it).

    `log_dir` is separate from `cwd` so that tests can check the daemon's working directory stays empty.
    """

    def __init__(self, args: list, cwd: Path, log_dir: Path, env: dict | None = None,
                 prefix: tuple[str, ...] = ()) -> None:
        self._stderr_path = log_dir / f"serd-{time.monotonic_ns()}.stderr"
        self._stderr = open(self._stderr_path, "wb")
        self.process = subprocess.Popen([*prefix, *serd_cmd(*args)], cwd=cwd, env=env or serd_env(),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr)

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def send_signal(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def wait(self, timeout_s: float = EXIT_S) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"serd did not exit within {timeout_s} s\nstderr:\n{self.stderr_text()}") from None

    def stop(self, timeout_s: float = EXIT_S) -> int:
        """SIGTERM, as systemd stops the service; the exit code."""
        self.send_signal(signal.SIGCONT)  # in case a test left it stopped
        self.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def stderr_text(self) -> str:
        self._stderr.flush()
        return self._stderr_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_stderr(self, needle: str, timeout_s: float = STARTUP_S) -> str:
        deadline = time.monotonic() + timeout_s
        while needle not in (text := self.stderr_text()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} never appeared on stderr (exit {self.process.poll()}):\n{text}")
            time.sleep(0.05)
        return text

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)

    def close(self) -> None:
        self.kill()
        self._stderr.close()

    def __enter__(self) -> "ServeProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def get_json(url: str) -> tuple[int, dict]:
    """GET a JSON endpoint: (HTTP status, body), an error status included."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# -- ZeroMQ subscribers --------------------------------------------------------------------------

@dataclass(frozen=True)
class CurveKeys:
    server_public: Path
    client_secret: Path


def sub_socket(context: zmq.Context, endpoint: str, curve: CurveKeys | None = None,
               topics: tuple[str, ...] = ("serd.",), connect: bool = True) -> zmq.Socket:
    """A SUB socket, plain or with CURVE client keys (the same calls `serd listen` makes).

    `connect=False`: the caller connects it to `endpoint` later (e.g. after attaching a monitor).
    """
    import zmq.auth

    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        server_public, _ = zmq.auth.load_certificate(curve.server_public)
        client_public, client_secret = zmq.auth.load_certificate(curve.client_secret)
        sock.curve_serverkey = server_public
        sock.curve_publickey = client_public
        sock.curve_secretkey = client_secret
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    if connect:
        sock.connect(endpoint)
    return sock


class Collector:
    """Decodes every message of one SUB socket (a MessageError fails the test: serd sent a bad message)."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.socket = sock
        self.messages: list[Message] = []
        self.bodies: list[bytes] = []
        self.received_at: list[float] = []  # wall clock, comparable with the daemon's `time`

    def drain(self) -> int:
        got = 0
        while True:
            try:
                frames = self.socket.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return got
            self.bodies.append(frames[1])
            self.messages.append(decode(frames))
            self.received_at.append(time.time())
            got += 1

    def wait_for(self, done: Callable[["Collector"], bool], timeout_s: float = MESSAGE_S,
                 process: ServeProcess | None = None, what: str = "messages") -> None:
        deadline = time.monotonic() + timeout_s
        while not done(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {self.summary()}"
                                     + (f"\nstderr:\n{process.stderr_text()}" if process else ""))
            if process is not None and process.poll() is not None:
                self.socket.poll(500)
                self.drain()
                if not done(self):
                    raise AssertionError(f"serd exited ({process.poll()}) before {what}; got {self.summary()}\n"
                                         f"stderr:\n{process.stderr_text()}")
                return
            if self.socket.poll(100):
                self.drain()

    @property
    def emotions(self) -> list[EmotionMessage]:
        return [m for m in self.messages if isinstance(m, EmotionMessage)]

    @property
    def statuses(self) -> list[StatusMessage]:
        return [m for m in self.messages if isinstance(m, StatusMessage)]

    def summary(self) -> str:
        seqs = [m.seq for m in self.emotions]
        states: list = []
        for m in self.statuses:  # repeated heartbeats once
            state = f"{m.state} ({m.detail})" if m.detail else m.state
            if not states or states[-1] != state:
                states.append(state)
        return f"{len(seqs)} emotion messages (seq {seqs[:3]}..{seqs[-3:]}), states {states[-8:]}"


def emotions_at_least(n: int) -> Callable[[Collector], bool]:
    return lambda c: len(c.emotions) >= n


def state_seen(state: str, after: int = 0) -> Callable[[Collector], bool]:
    """A status with `state` among the messages from index `after` on."""
    return lambda c: any(isinstance(m, StatusMessage) and m.state == state for m in c.messages[after:])


# -- sd_notify -----------------------------------------------------------------------------------

class NotifySocket:
    """A real unix datagram socket, as systemd's $NOTIFY_SOCKET; records every datagram with its arrival."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self.datagrams: list[tuple[float, dict[str, str]]] = []  # (time.monotonic(), fields)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify-socket", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closing.is_set():
            try:
                data = self._sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode("utf-8").splitlines() if "=" in line)
            with self._lock:
                self.datagrams.append((time.monotonic(), fields))

    def snapshot(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self.datagrams)

    def with_key(self, key: str, since: float = 0.0) -> list[tuple[float, dict[str, str]]]:
        return [(t, f) for t, f in self.snapshot() if key in f and t >= since]

    def wait_for(self, key: str, count: int = 1, since: float = 0.0, timeout_s: float = STARTUP_S,
                 process: ServeProcess | None = None) -> list[tuple[float, dict[str, str]]]:
        deadline = time.monotonic() + timeout_s
        while len(found := self.with_key(key, since)) < count:
            if time.monotonic() > deadline or (process is not None and process.poll() is not None):
                raise AssertionError(f"{count} x {key} not received (got {len(found)}); all: {self.keys()}"
                                     + (f"\nstderr:\n{process.stderr_text()}" if process else ""))
            time.sleep(0.02)
        return found

    def keys(self) -> list[str]:
        return [",".join(k for k in f if k != "MONOTONIC_USEC") for _, f in self.snapshot()]

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> "NotifySocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
