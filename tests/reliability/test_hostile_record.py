"""Issue 13: a hostile publisher against `serd record`, the third consumer (after the dashboard and
`serd listen`, test_hostile_publisher.py).

A real `serd record` writing a real SQLite file, fed through a real ZeroMQ socket: every listed
hostile message, a hypothesis stream of mistyped and non-finite ones, then the memory attacks
(big messages, many devices, one huge frame). It must stay up, count each bad message in its
summary, keep recording valid ones, and hold its memory within a stated bound.
"""

from __future__ import annotations

import contextlib
import re
import signal
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_daemon import DaemonProcess, assert_no_traceback, short_tmpdir
from helpers_record import TestPublisher, emotion, start_recorder, status, wait_for_rows
from helpers_reliability import rss_mb
from hostile_messages import HOSTILE, OVERSIZE, mutated_frames, padded, rejected
from serd.record.store import open_store, sqlite_url

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

BIG_PADDING = 60 * 1024
"""Under MAX_MESSAGE_BYTES: ZeroMQ delivers it, decode drops the unknown field."""
MEMORY_BOUND_MB = 60.0
"""Recorder RSS growth allowed over the memory attacks (48 MB of padding and 2000 rooms go through it)."""


@contextlib.contextmanager
def recording():
    """A publisher and a `serd record` subscribed to it, writing a fresh SQLite file: (url, pub, recorder)."""
    with short_tmpdir("serd-hostile-record-") as workdir:
        url, endpoint = sqlite_url(workdir / "history.sqlite3"), f"ipc://{workdir}/pub"
        pub = TestPublisher(endpoint)
        recorder = start_recorder(workdir, url, endpoint)
        try:
            pub.wait_subscribed()
            yield url, pub, recorder
        finally:
            recorder.kill()
            pub.close()


def stop(recorder: DaemonProcess) -> str:
    recorder.send_signal(signal.SIGTERM)
    assert recorder.wait() == 0, recorder.stderr_text()
    stderr = recorder.stderr_text()
    assert_no_traceback(stderr)
    return stderr


def malformed_in(stderr: str) -> int:
    return int(re.search(r"malformed (\d+)", stderr).group(1))


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(generated=st.lists(mutated_frames(), min_size=60, max_size=60))
def test_record_counts_hostile_and_generated_messages_and_keeps_recording(generated):
    stream = [HOSTILE[name] for name in HOSTILE if name not in OVERSIZE] + generated
    with recording() as (url, pub, recorder):
        for frames in stream:
            pub.send_raw(frames)
        now = time.time()
        for seq in range(3):
            pub.send(emotion("after", seq, now + seq))
        assert wait_for_rows(url, "after", 3, recorder) == [0, 1, 2]
        stderr = stop(recorder)
    assert malformed_in(stderr) == sum(rejected(f) for f in stream), stderr


def test_record_memory_is_bounded_by_bytes_not_counts():
    """The dashboard's memory attacks, against the recorder: padded messages, 2000 rooms, a 100 MB frame."""
    with recording() as (url, pub, recorder):
        now = time.time()
        pub.send(emotion("marker", 0, now))
        wait_for_rows(url, "marker", 1, recorder)
        baseline = peak = rss_mb(recorder.pid)
        for seq in range(800):
            pub.send_raw(padded(emotion("padded", seq, now + seq * 0.5), BIG_PADDING))
        for i in range(400):
            pub.send_raw(padded(status(f"{i:03d}" + "d" * 61, 0, now), BIG_PADDING))
        for i in range(2000):
            pub.send(emotion(f"room-{i:04d}", 0, now))
        pub.send(emotion("marker", 1, now + 1))
        wait_for_rows(url, "marker", 2, recorder)
        peak = max(peak, rss_mb(recorder.pid))
        # One 100 MB frame: ZeroMQ drops that publisher on the frame's header (ZMQ_MAXMSGSIZE).
        pub.send_raw([b"serd.status.big", b"x" * (100 * 1024 * 1024)])
        watch_until = time.monotonic() + 2.0  # not a timing assertion: RSS is sampled while the frame arrives
        while time.monotonic() < watch_until and recorder.poll() is None:
            peak = max(peak, rss_mb(recorder.pid))
            time.sleep(0.1)
        assert recorder.poll() is None, recorder.stderr_text()
        peak = max(peak, rss_mb(recorder.pid))
        stderr = stop(recorder)
        store = open_store(url)
        try:
            padded_rows = store.query("SELECT COUNT(*) FROM windows WHERE device = ?", ("padded",))[0][0]
            rooms = store.query("SELECT COUNT(DISTINCT device) FROM windows WHERE device LIKE ?", ("room-%",))[0][0]
        finally:
            store.close()
    print(f"hostile publisher vs serd record: RSS {baseline:.1f} -> peak {peak:.1f} MiB after 800 x 60 KB "
          f"emotions, 400 x 60 KB statuses, 2000 rooms and a 100 MB frame; {padded_rows} padded windows "
          f"and {rooms} rooms recorded")
    assert padded_rows == 800 and rooms == 2000
    assert malformed_in(stderr) == 0, stderr
    assert peak - baseline < MEMORY_BOUND_MB, (baseline, peak)
