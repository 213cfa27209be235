"""Issue 13: a hostile publisher against `serd record`, the third consumer (after the dashboard and
`serd listen`, test_hostile_publisher.py).

A real `serd record` writing a real SQLite file, fed through a real ZeroMQ socket: every listed
hostile message, a hypothesis stream of mistyped and non-finite ones, then the memory attacks
(big messages, many devices, one huge frame). It must stay up, count each bad message in its
summary, keep recording valid ones, and hold its memory within a stated bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_daemon import DaemonProcess, assert_no_traceback, short_tmpdir
from helpers_record import TestPublisher, emotion, start_recorder, status, stored_seqs, wait_for_rows
from helpers_reliability import rss_mb
from hostile_messages import HOSTILE, OVERSIZE, mutated_frames, padded, rejected
from serd.messages import MAX_DEVICE_CHARS
from serd.record.store import open_store, sqlite_path, sqlite_url

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


# -- issue 19 ---------------------------------------------------------------------------------------

MANY_DEVICES = 100_000
DEVICES_PER_ROUND = 5_000
"""Sent between two markers, so the writer keeps up (its queue holds 100,000 rows) and none is dropped."""
MANY_DEVICES_BOUND_MB = 20.0
"""Recorder RSS growth allowed over 100,000 invented device ids (before issue 19: +79 MiB, measured
51.2 -> 130.6 MiB here; the review saw 42 -> 138)."""
RESTART_BOUND_MB = 10.0
"""A recorder restarted on those 100,000 devices, over a fresh one's RSS: it reads back at most
MAX_TRACKED_DEVICES (before: all of them, +41 MiB, and 5.6 s to start instead of 0.6 s; the time is
printed, not asserted)."""


def history(url: str, workdir, *args: str):
    from helpers_daemon import run_serd

    return run_serd(["history", "--db", url, *args], cwd=workdir)


def test_two_huge_levels_in_one_minute_neither_stop_record_nor_break_history():
    """Item 2: +1e308 then -1e308 dBFS made a minute's sum infinite; the database refused it, the
    recorder exited 1 with its batch lost, and `history --every 1m --json` failed on what was stored."""
    with recording() as (url, pub, recorder):
        # In the past: `history --since 1h` ends now, and a window stamped up to 2.5 s ahead fell out of
        # it when the query ran within those seconds (a flaky 2 of 3 windows).
        now = time.time() - 10
        for seq, level in enumerate((1e308, -1e308, 1e308)):
            message = emotion("loud", seq, now + seq * 0.5)
            topic, body = padded(message, 0)  # real frames, then the level replaced on the wire
            pub.send_raw([topic, body.replace(f'"level_dbfs":{message.level_dbfs}'.encode(),
                                              f'"level_dbfs":{level!r}'.encode())])
        for seq in range(3, 6):
            pub.send(emotion("loud", seq, now + seq * 0.5))
        assert wait_for_rows(url, "loud", 3, recorder) == [3, 4, 5]
        stderr = stop(recorder)
        workdir = sqlite_path(url).parent
        for every in ("1m", "1h"):
            done = history(url, workdir, "--every", every, "--since", "1h", "--json")
            assert done.returncode == 0, done.stderr
            rows = [json.loads(line) for line in done.stdout.splitlines()]
            assert sum(r["windows"] for r in rows) == 3 and all(-60 < r["level_dbfs"] < 0 for r in rows)
    assert malformed_in(stderr) == 3, stderr
    assert "level_dbfs: expected a number in [-200, 20]" in stderr


@pytest.mark.parametrize("chars", [1, MAX_DEVICE_CHARS])
def test_a_device_name_of_1_or_64_characters_reaches_the_recorder(chars):
    """Item 4: a 64-character device id passed the config, but its emotion topic (77 bytes) was over
    the 76-byte topic limit: every consumer refused every emotion message of that room."""
    from serd.config import PublisherSettings
    from serd.publisher import Publisher

    device = "r" * chars
    with short_tmpdir("serd-hostile-record-") as workdir:
        url, endpoint = sqlite_url(workdir / "history.sqlite3"), f"ipc://{workdir}/pub"
        publisher = Publisher(PublisherSettings(bind=endpoint, linger_ms=0), device)
        recorder = start_recorder(workdir, url, endpoint)
        try:
            now, seq, rows = time.time(), 0, []
            deadline = time.monotonic() + 60.0
            while len(rows) < 3 and time.monotonic() < deadline:  # until the slow joiner has the first ones
                publisher.send(emotion(device, seq, now + seq * 0.5))
                publisher.send(status(device, seq, now + seq * 0.5))
                seq += 1
                time.sleep(0.2)
                with contextlib.suppress(Exception):
                    rows = stored_seqs(url, device)
            assert len(rows) >= 3, recorder.stderr_text()
            stderr = stop(recorder)
        finally:
            recorder.kill()
            publisher.close()
        assert malformed_in(stderr) == 0, stderr
        store = open_store(url)
        try:
            assert store.query("SELECT COUNT(*) FROM statuses WHERE device = ?", (device,))[0][0] >= 3
        finally:
            store.close()


def test_a_deleted_database_is_reopened_and_what_follows_is_findable():
    """Item 3: `rm` of the file, -wal and -shm while recording: the recorder wrote on into the unlinked
    file, said "written 226" and exited 0; no reader could find a row of it."""
    with recording() as (url, pub, recorder):
        now = time.time()
        for seq in range(5):
            pub.send(emotion("rm", seq, now + seq * 0.5))
        wait_for_rows(url, "rm", 5, recorder)
        path = str(sqlite_path(url))
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + suffix)
        for seq in range(5, 12):
            pub.send(emotion("rm", seq, now + seq * 0.5))
        assert wait_for_rows(url, "rm", 7, recorder) == list(range(5, 12))
        stderr = stop(recorder)
        written = int(re.search(r"stopped: .* written (\d+)", stderr).group(1))
        store = open_store(url)
        try:
            in_new_file = sum(store.query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("windows", "sessions"))
        finally:
            store.close()
    assert stderr.count("deleted or replaced") == 1, stderr
    # 5 windows + their session went into the file that was deleted; everything after is in the new one
    assert written - 6 == in_new_file == 7, stderr


def test_a_replayed_message_opens_no_session_and_no_gap():
    """Item 8: an old message sent again made the recorder open a session and store an invented gap."""
    with recording() as (url, pub, recorder):
        now = time.time()
        live = [emotion("replay", seq, now + seq * 0.5) for seq in range(8)]
        for message in [*live[:5], live[2], live[0], *live[5:]]:
            pub.send(message)
        assert wait_for_rows(url, "replay", 8, recorder) == list(range(8))
        stderr = stop(recorder)
        store = open_store(url)
        try:
            sessions = store.query("SELECT COUNT(*) FROM sessions WHERE device = 'replay'")[0][0]
            gaps = store.query("SELECT COUNT(*) FROM gaps WHERE device = 'replay'")[0][0]
        finally:
            store.close()
    assert (sessions, gaps) == (1, 0)
    assert re.search(r"replayed 2\b", stderr), stderr


def test_100k_invented_devices_cost_bounded_memory_and_restart_time():
    """Item 5: every device ever seen was kept (103,040 ids: 42 -> 138 MiB, never released), and a
    restart read every one of them back."""
    with recording() as (url, pub, recorder):
        now = time.time()
        pub.send(emotion("marker", 0, now))
        wait_for_rows(url, "marker", 1, recorder)
        baseline = rss_mb(recorder.pid)
        for round_ in range(MANY_DEVICES // DEVICES_PER_ROUND):
            for i in range(DEVICES_PER_ROUND):
                pub.send(emotion(f"invented-{round_ * DEVICES_PER_ROUND + i:06d}", 0, now))
            pub.send(emotion("marker", round_ + 1, now + round_ + 1))
            wait_for_rows(url, "marker", round_ + 2, recorder, timeout_s=300.0)
        after = rss_mb(recorder.pid)
        stderr = stop(recorder)
        workdir = sqlite_path(url).parent
        started = time.monotonic()
        again = start_recorder(workdir, url, pub.endpoint)
        try:
            while "recording" not in again.stderr_text():
                assert again.poll() is None, again.stderr_text()
                assert time.monotonic() - started < 120.0, again.stderr_text()
                time.sleep(0.05)
            restart_s = time.monotonic() - started
            restarted_rss = rss_mb(again.pid)
            stop(again)
        finally:
            again.kill()
        store = open_store(url)
        try:
            devices = store.query("SELECT COUNT(DISTINCT device) FROM windows")[0][0]
        finally:
            store.close()
    print(f"{MANY_DEVICES} invented device ids vs serd record: RSS {baseline:.1f} -> {after:.1f} MiB, "
          f"{devices} devices stored; restart to 'recording' {restart_s:.2f} s at RSS {restarted_rss:.1f} MiB")
    assert devices == MANY_DEVICES + 1, stderr
    assert malformed_in(stderr) == 0 and "dropped 0" in stderr, stderr
    assert after - baseline < MANY_DEVICES_BOUND_MB, (baseline, after)
    assert restarted_rss - baseline < RESTART_BOUND_MB, (baseline, restarted_rss)
