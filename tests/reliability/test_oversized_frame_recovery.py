"""Issue 19, item 6: one oversized frame must not leave a consumer deaf to its endpoint for good.

Every consumer refuses frames over `MAX_MESSAGE_BYTES` inside ZeroMQ, which then ends that
connection as a protocol error and never reconnects it: before, after a 100 MB frame (the
dashboard) or a 70 KB one (`serd record`), a fresh valid publisher on the same endpoint got
0 of 111 messages through, with no log line and no count. Here, against the real `serd record`,
`serd listen` and `serd dashboard` processes: a publisher on a tcp endpoint sends one oversized
frame and goes away, a new one binds the same endpoint, and all its 111 messages must arrive,
the drop logged and counted.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
import zmq

from helpers_daemon import short_tmpdir
from helpers_record import TestPublisher, emotion, start_recorder, wait_for_rows
from helpers_reliability import REPO_ROOT, DashboardProcess, free_tcp_port, serd_env
from serd.record.store import sqlite_url

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

VALID_MESSAGES = 111
WAIT_S = 60.0
DROP_LINE = "connection dropped (a frame over"


def publisher_on(endpoint: str) -> TestPublisher:
    """A publisher bound to `endpoint`, retried while the previous one's port is still being released."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            return TestPublisher(endpoint)
        except zmq.ZMQError as exc:
            assert exc.errno == zmq.EADDRINUSE and time.monotonic() < deadline, exc
            time.sleep(0.05)


def oversized_then_valid(endpoint: str, frame_bytes: int, topics: int) -> None:
    """One publisher sends one frame of `frame_bytes` and leaves; a new one sends VALID_MESSAGES emotions."""
    hostile = publisher_on(endpoint)
    hostile.wait_subscribed(topics)
    hostile.send_raw([b"serd.emotion.big", b"x" * frame_bytes])
    time.sleep(1.0)  # not a timing assertion: the frame reaches the consumer before its publisher goes
    hostile.close()
    valid = publisher_on(endpoint)
    try:
        valid.wait_subscribed(topics)  # the consumer came back: before, it never did
        for seq in range(VALID_MESSAGES):
            valid.send(emotion("after", seq, time.time()))
    finally:
        valid.close()


def test_record_hears_a_new_publisher_after_an_oversized_frame():
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    with short_tmpdir("serd-oversize-record-") as workdir:
        url = sqlite_url(workdir / "history.sqlite3")
        recorder = start_recorder(workdir, url, endpoint)
        try:
            oversized_then_valid(endpoint, 70 * 1024, topics=2)
            seqs = wait_for_rows(url, "after", VALID_MESSAGES, recorder)
            recorder.send_signal(signal.SIGTERM)
            assert recorder.wait() == 0, recorder.stderr_text()
        finally:
            recorder.kill()
        stderr = recorder.stderr_text()
    assert seqs == list(range(VALID_MESSAGES))
    assert DROP_LINE in stderr, stderr
    assert re.search(r"connections dropped by ZeroMQ 1\b", stderr), stderr
    assert "Traceback" not in stderr


def test_listen_hears_a_new_publisher_after_an_oversized_frame():
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    listen = subprocess.Popen([sys.executable, "-m", "serd", "listen", "--json", "--connect", endpoint,
                               "--count", str(VALID_MESSAGES), "--timeout", str(2 * WAIT_S)], cwd=REPO_ROOT,
                              env=serd_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        oversized_then_valid(endpoint, 70 * 1024, topics=1)
        out, err = listen.communicate(timeout=WAIT_S)
    finally:
        if listen.poll() is None:
            listen.kill()
            listen.wait(timeout=10)
    assert listen.returncode == 0, err
    assert [json.loads(line)["seq"] for line in out.splitlines()] == list(range(VALID_MESSAGES))
    assert DROP_LINE in err, err
    assert "1 publisher connection(s) dropped by ZeroMQ and reconnected" in err, err
    assert "Traceback" not in err


def test_dashboard_hears_a_new_publisher_after_a_100_mb_frame():
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    dashboard = DashboardProcess([endpoint])
    try:
        oversized_then_valid(endpoint, 100 * 1024 * 1024, topics=2)
        state = dashboard.wait_for(lambda s: any(d["device"] == "after" and d["emotion"]
                                                 and d["emotion"]["seq"] == VALID_MESSAGES - 1 for d in s["devices"]),
                                   "the new publisher's last message")
    finally:
        stderr = dashboard.close()
    after = next(d for d in state["devices"] if d["device"] == "after")
    assert after["lost"] == 0, after
    assert state["dropped_connections"] == 1, state
    assert DROP_LINE in stderr, stderr
    assert "Traceback" not in stderr

