"""Fixtures and helpers for the history tests: the same tests run against a SQLite file and a real
PostgreSQL server (a throwaway cluster for the session), and real messages made with serd.messages."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers_daemon import DaemonProcess, serd_env
from pg_cluster import reset_database, server_bin_dir, throwaway_cluster
from serd.messages import EmotionMessage, StatusMessage, decode, encode
from serd.record.store import open_store, sqlite_url

LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgust")
BACKENDS = ("sqlite", "postgresql")
WAIT_ROWS_S = 60.0


def _need_postgresql() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[dev]')")
    if server_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql); CI installs them")


@pytest.fixture(scope="session")
def pg_server_url():
    _need_postgresql()
    with throwaway_cluster() as cluster:
        yield cluster.url


@pytest.fixture
def pg_cluster():
    """A cluster of the test's own, to stop and start (the session's one stays up for the others)."""
    _need_postgresql()
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path: Path) -> str:
    """A fresh, empty history database URL of each kind."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "history.sqlite3")
    url = request.getfixturevalue("pg_server_url")
    reset_database(url)
    return url


def probs_for(i: int) -> dict[str, float]:
    raw = [((i * 7 + k * 3) % 11) + 1.0 for k in range(len(LABELS))]
    total = sum(raw)
    return {label: round(v / total, 5) for label, v in zip(LABELS, raw)}


def emotion(device: str, seq: int, time: float, speech: bool = True, **extra) -> EmotionMessage:
    """A message as a daemon publishes it, passed through encode/decode (the one wire format)."""
    probs = probs_for(seq) if speech else None
    label = max(probs, key=probs.__getitem__) if probs else None
    message = EmotionMessage(device=device, seq=seq, time=time, captured_at=time - 0.01, start_s=seq * 0.5,
                             end_s=seq * 0.5 + 2.0, speech=speech, level_dbfs=-30.0 - (seq % 10) if speech else -70.0,
                             probs=probs, smoothed=probs, label=label, confidence=probs[label] if probs else None,
                             model="serd-test", **extra)
    return decode(encode(message))


def status(device: str, seq: int, time: float, state: str = "running") -> StatusMessage:
    return decode(encode(StatusMessage(device=device, seq=seq, time=time, state=state, uptime_s=seq * 5.0,
                                       source="file:test", model="serd-test", windows=seq * 10, published=seq * 10)))


class TestPublisher:
    """A real ZeroMQ XPUB socket standing in for daemons: it sees the recorder's subscriptions,
    so a test sends only once the recorder is listening (no slow-joiner losses)."""

    __test__ = False  # not a test class

    def __init__(self, endpoint: str) -> None:
        import zmq

        self.socket = zmq.Context.instance().socket(zmq.XPUB)
        self.socket.setsockopt(zmq.LINGER, 2000)
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.socket.bind(endpoint)
        self.endpoint = endpoint

    def wait_subscribed(self, topics: int = 2, timeout_s: float = 60.0) -> None:
        seen = 0
        deadline = time.monotonic() + timeout_s
        while seen < topics:
            left = deadline - time.monotonic()
            assert left > 0, "the recorder never subscribed"
            if self.socket.poll(int(left * 1000)):
                if self.socket.recv()[:1] == b"\x01":
                    seen += 1

    def send(self, message) -> None:
        self.socket.send_multipart(encode(message))

    def send_raw(self, frames: list[bytes]) -> None:
        self.socket.send_multipart(frames)

    def close(self) -> None:
        self.socket.close()


def stored_seqs(url: str, device: str) -> list[int]:
    store = open_store(url)
    try:
        return [r[0] for r in store.query("SELECT seq FROM windows WHERE device = ? ORDER BY seq", (device,))]
    finally:
        store.close()


def wait_for_rows(url: str, device: str, n: int, recorder: DaemonProcess, timeout_s: float = WAIT_ROWS_S) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            seqs = stored_seqs(url, device)
        except Exception:  # not created yet
            seqs = []
        if len(seqs) >= n:
            return seqs
        assert recorder.poll() is None, f"serd record exited early:\n{recorder.stderr_text()}"
        assert time.monotonic() < deadline, f"only {len(seqs)} of {n} rows after {timeout_s} s:\n{recorder.stderr_text()}"
        time.sleep(0.1)


def start_recorder(workdir: Path, url: str, endpoint: str, *extra: str, env: dict | None = None) -> DaemonProcess:
    """`serd record`; its state directory (where a journal would go) in `workdir` unless `env` says otherwise."""
    env = env or serd_env(STATE_DIRECTORY=str(workdir / "state"))
    return DaemonProcess(["record", "--connect", endpoint, "--db", url, *extra], cwd=workdir, env=env)
