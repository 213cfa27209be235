"""`serd record` when the database goes away: a real PostgreSQL cluster stopped and started again
under a running recorder, a SQLite file on a full disk (a small tmpfs), real subprocesses.

Nothing published is lost and nothing is claimed that did not happen: rows the database cannot
take at a stop (or during a long outage) go to a journal in the state directory and are written,
in order, when it is back; only rows the journal cannot take either are lost, and the exit status
and one line say how many."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from helpers_daemon import assert_no_traceback, serd_env, serd_lines
from helpers_record import (TestPublisher, emotion, pg_cluster, start_recorder, stored_seqs,  # noqa: F401
                            wait_for_rows)
from serd.record.rows import DROPPED, WINDOW_COLUMNS
from serd.record.store import open_store, sqlite_url
from serd.record.writer import RETRY_MAX_S, STOP_FLUSH_S
from test_record_cli import _mount_tmpfs, _umount

WAIT_S = 60.0
RECEIVE_S = 1.5
"""Time for messages sent on a local socket to reach the recorder's queue."""
MAX_LOG_BYTES = 8000
"""The whole stderr of a recorder across an outage: a handful of lines, not a line per attempt."""


def journal_rows(state: Path) -> list[list]:
    rows = []
    for path in sorted(state.glob("unwritten-*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    return rows


def minute_windows(url: str, device: str) -> int:
    store = open_store(url)
    try:
        return store.query("SELECT SUM(windows) FROM minutes WHERE device = ?", (device,))[0][0] or 0
    finally:
        store.close()


def test_a_stop_during_a_postgresql_outage_keeps_every_row_for_the_next_start(workdir, pg_cluster):  # noqa: F811
    url, state = pg_cluster.url, workdir / "state"
    env = serd_env(STATE_DIRECTORY=str(state))
    endpoint = f"ipc://{workdir}/pub"
    pub = TestPublisher(endpoint)
    recorder = start_recorder(workdir, url, endpoint, env=env)
    t0 = time.time() - 60
    try:
        pub.wait_subscribed()
        for i in range(10):
            pub.send(emotion("room-pg", i, t0 + i * 0.5))
        wait_for_rows(url, "room-pg", 10, recorder)
        pg_cluster.stop()
        for i in range(10, 24):
            pub.send(emotion("room-pg", i, t0 + i * 0.5))
        time.sleep(RECEIVE_S)
        stopping = time.monotonic()
        recorder.send_signal(signal.SIGTERM)
        assert recorder.wait() == 0, recorder.stderr_text()
        stop_s = time.monotonic() - stopping
    finally:
        recorder.kill()
    stderr = recorder.stderr_text()
    assert_no_traceback(stderr)
    assert stop_s < STOP_FLUSH_S + 10, stop_s
    assert len(stderr) < MAX_LOG_BYTES, stderr[-2000:]
    assert "connection refused" in stderr.lower(), stderr
    assert "busy" not in stderr
    assert not [line for line in serd_lines(stderr) if line.startswith("serd: ")], stderr  # nothing lost
    assert re.search(r"did not take 14 rows before the stop .*kept in .*unwritten-\w+\.jsonl", stderr), stderr
    kept = journal_rows(state)
    assert [row[1][2] for row in kept] == list(range(10, 24))
    assert all(kind == "windows" and len(row) == len(WINDOW_COLUMNS) for kind, row in kept)

    pg_cluster.start()
    recorder = start_recorder(workdir, url, endpoint, env=env)
    try:
        pub.wait_subscribed()
        pub.send(emotion("room-pg", 24, t0 + 24 * 0.5))
        assert wait_for_rows(url, "room-pg", 25, recorder) == list(range(25))
        recorder.send_signal(signal.SIGTERM)
        assert recorder.wait() == 0, recorder.stderr_text()
    finally:
        recorder.kill()
        pub.close()
    assert "wrote 14 rows kept in" in recorder.stderr_text()
    assert not list(state.glob("unwritten-*"))
    assert minute_windows(url, "room-pg") == 25  # each window counted once in the summaries
    store = open_store(url)
    try:
        assert store.query("SELECT COUNT(*) FROM gaps")[0][0] == 0
    finally:
        store.close()


def test_a_long_outage_moves_the_queue_to_the_journal_and_catches_up_when_the_database_returns(
        workdir, pg_cluster):  # noqa: F811
    """A queue of 300 rows and 500 windows published during the outage: nothing dropped, every window
    written in order within seconds of the server's return, one log line per change, not per attempt."""
    url, state = pg_cluster.url, workdir / "state"
    (workdir / "c.yaml").write_text("record:\n  queue_rows: 300\n  batch_rows: 50\n")
    env = serd_env(STATE_DIRECTORY=str(state))
    endpoint = f"ipc://{workdir}/pub"
    pub = TestPublisher(endpoint)
    recorder = start_recorder(workdir, url, endpoint, "--config", "c.yaml", env=env)
    t0 = time.time() - 600
    try:
        pub.wait_subscribed()
        for i in range(10):
            pub.send(emotion("room-long", i, t0 + i * 0.5))
        wait_for_rows(url, "room-long", 10, recorder)
        pg_cluster.stop()
        for i in range(10, 510):  # 50 a second for 10 s
            pub.send(emotion("room-long", i, t0 + i * 0.5))
            time.sleep(0.02)
        time.sleep(RECEIVE_S)
        assert list(state.glob("unwritten-*.jsonl")), recorder.stderr_text()
        pg_cluster.start()
        back = time.monotonic()
        while stored_seqs_or_none(url, "room-long") in (None, 10):
            assert time.monotonic() - back < WAIT_S, recorder.stderr_text()
            time.sleep(0.05)
        reconnect_s = time.monotonic() - back
        assert wait_for_rows(url, "room-long", 510, recorder) == list(range(510))
        recorder.send_signal(signal.SIGTERM)
        assert recorder.wait() == 0, recorder.stderr_text()
    finally:
        recorder.kill()
        pub.close()
    print(f"reconnect delay after the server came back: {reconnect_s:.2f} s")
    assert reconnect_s < RETRY_MAX_S + 3, reconnect_s
    stderr = recorder.stderr_text()
    assert_no_traceback(stderr)
    assert len(stderr) < MAX_LOG_BYTES, stderr[-2000:]
    assert "rows to" in stderr and "the database is back after" in stderr, stderr
    assert "messages (the database fell behind)" not in stderr and "dropped 0," in stderr
    assert not list(state.glob("unwritten-*"))
    assert minute_windows(url, "room-long") == 510
    store = open_store(url)
    try:
        assert store.query("SELECT COUNT(*) FROM gaps WHERE reason = ?", (DROPPED,))[0][0] == 0
    finally:
        store.close()


def stored_seqs_or_none(url: str, device: str) -> int | None:
    try:
        return len(stored_seqs(url, device))
    except Exception:  # the server is still starting
        return None


def _fill_until_it_fails(workdir: Path, url: str, env: dict) -> tuple[int, str]:
    """Record into a database on a small disk until the recorder gives up; (messages it received, stderr)."""
    endpoint = f"ipc://{workdir}/pub"
    pub = TestPublisher(endpoint)
    recorder = start_recorder(workdir, url, endpoint, env=env)
    try:
        pub.wait_subscribed()
        t, i = time.time() - 3600, 0
        deadline = time.monotonic() + WAIT_S
        while recorder.poll() is None and time.monotonic() < deadline:
            for _ in range(200):
                pub.send(emotion("full", i, t + i * 0.5))
                i += 1
            time.sleep(0.05)
        assert recorder.wait(WAIT_S) == 1, recorder.stderr_text()
    finally:
        recorder.kill()
        pub.close()
    stderr = recorder.stderr_text()
    assert_no_traceback(stderr)
    received = int(re.search(r"stopped: .*received (\d+)", stderr).group(1))
    return received, stderr


def _replay_after_freeing_space(workdir: Path, disk: Path, url: str, env: dict) -> list[int]:
    import subprocess

    subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
    recorder = start_recorder(workdir, url, f"ipc://{workdir}/none", env=env)
    try:
        deadline = time.monotonic() + WAIT_S
        # "recording" is logged once the journal is replayed and the signal handlers are in place.
        while list((Path(env["STATE_DIRECTORY"])).glob("unwritten-*")) or "recording" not in recorder.stderr_text():
            assert recorder.poll() is None, recorder.stderr_text()
            assert time.monotonic() < deadline, recorder.stderr_text()
            time.sleep(0.1)
        recorder.send_signal(signal.SIGTERM)
        assert recorder.wait() == 0, recorder.stderr_text()
    finally:
        recorder.kill()
    return stored_seqs(url, "full")


def test_a_full_sqlite_disk_keeps_the_unwritten_rows_in_the_journal(workdir):
    disk = workdir / "disk"
    if not _mount_tmpfs(disk, "200k"):
        pytest.skip("needs root to mount a small tmpfs (CI runs as root)")
    try:
        url, state = sqlite_url(disk / "h.sqlite3"), workdir / "state"
        env = serd_env(STATE_DIRECTORY=str(state))
        received, stderr = _fill_until_it_fails(workdir, url, env)
        errors = [line for line in serd_lines(stderr) if line.startswith("serd: ")]
        assert len(errors) == 1 and "full" in errors[0], stderr
        kept = len(journal_rows(state))
        assert kept > 0 and f"{kept} rows kept in {state}/unwritten-" in errors[0], errors
        assert "lost" not in errors[0]
        assert _replay_after_freeing_space(workdir, disk, url, env) == list(range(received))
    finally:
        _umount(disk)


def test_a_journal_that_cannot_be_written_either_says_how_many_rows_were_lost(workdir):
    disk = workdir / "disk"
    if not _mount_tmpfs(disk, "200k"):
        pytest.skip("needs root to mount a small tmpfs (CI runs as root)")
    try:
        url, state = sqlite_url(disk / "h.sqlite3"), disk / "state"  # the journal on the same full disk
        env = serd_env(STATE_DIRECTORY=str(state))
        received, stderr = _fill_until_it_fails(workdir, url, env)
        errors = [line for line in serd_lines(stderr) if line.startswith("serd: ")]
        assert len(errors) == 1 and "full" in errors[0], stderr
        lost = int(re.search(r"(\d+) rows lost \(the journal: .*No space left on device\)", errors[0]).group(1))
        assert lost > 0
        # Honest accounting: what is in the database, plus what the journal kept, plus what was lost.
        stored = _replay_after_freeing_space(workdir, disk, url, env)
        assert stored == list(range(len(stored)))
        store = open_store(url)
        try:
            sessions_lost = 1 - store.query("SELECT COUNT(*) FROM sessions")[0][0]  # rows are windows and sessions
        finally:
            store.close()
        assert len(stored) + lost == received + sessions_lost
    finally:
        _umount(disk)
