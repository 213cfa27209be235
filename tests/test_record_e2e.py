"""End to end: two `serd run` daemons on a recording -> `serd record` -> `serd history --csv`
holds exactly the windows each daemon published (its own count, from its final status).

The recorder connects before the daemons bind, and the file is replayed in real time, so the
first window (2 s in) is published long after the subscription is in place: a missing seq
is a real loss, not the ZeroMQ slow joiner.
"""

from __future__ import annotations

import csv
import io
import signal

import pytest
import soundfile

from helpers_daemon import DEMO_FLAC, DaemonProcess, assert_no_traceback, run_serd, short_tmpdir
from helpers_record import wait_for_rows
from serd.record.store import open_store, sqlite_url

pytestmark = pytest.mark.slow

CLIP_S = 8.0
ROOMS = ("room-101", "room-102")


def test_two_daemons_recorded_and_read_back_exactly():
    with short_tmpdir("serd-e2e-") as workdir:
        audio, rate = soundfile.read(str(DEMO_FLAC), dtype="float32")
        clip = workdir / "clip.flac"
        soundfile.write(str(clip), audio[: int(CLIP_S * rate)], rate)
        url = sqlite_url(workdir / "history.sqlite3")
        endpoints = {room: f"ipc://{workdir}/{room}" for room in ROOMS}
        recorder = DaemonProcess(["record", "--db", url, *(a for e in endpoints.values() for a in ("--connect", e))],
                                 cwd=workdir)
        daemons = []
        try:
            wait_for_rows_ready(url, recorder)
            daemons = [DaemonProcess(["run", "--source", clip, "--bind", endpoints[room], "--device-id", room],
                                     cwd=workdir) for room in ROOMS]
            for daemon in daemons:
                assert daemon.wait() == 0, daemon.stderr_text()
            published = {room: final_published(url, room, recorder) for room in ROOMS}
            for room in ROOMS:
                wait_for_rows(url, room, published[room], recorder)
            recorder.send_signal(signal.SIGTERM)
            assert recorder.wait() == 0, recorder.stderr_text()
        finally:
            for process in (*daemons, recorder):
                process.kill()
        assert_no_traceback(recorder.stderr_text())
        done = run_serd(["history", "--db", url, "--since", "1h", "--csv"], cwd=workdir)
        assert done.returncode == 0, done.stderr
        rows = list(csv.DictReader(io.StringIO(done.stdout)))
        for room in ROOMS:
            seqs = sorted(int(r["seq"]) for r in rows if r["device"] == room)
            assert published[room] > 0
            assert seqs == list(range(published[room])), room
        assert any(r["speech"] == "True" for r in rows) and any(r["label"] for r in rows)


def wait_for_rows_ready(url: str, recorder: DaemonProcess) -> None:
    """The recorder has created the database (and so is subscribing)."""
    import time

    deadline = time.monotonic() + 60
    while True:
        try:
            open_store(url).close()
            return
        except Exception:
            assert recorder.poll() is None, recorder.stderr_text()
            assert time.monotonic() < deadline, recorder.stderr_text()
            time.sleep(0.1)


def final_published(url: str, room: str, recorder: DaemonProcess) -> int:
    """The daemon's own count of published windows, from its final status as recorded."""
    import time

    deadline = time.monotonic() + 60
    while True:
        store = open_store(url)
        try:
            rows = store.query("SELECT published FROM statuses WHERE device = ? AND state = 'stopping'", (room,))
        finally:
            store.close()
        if rows:
            return int(rows[0][0])
        assert time.monotonic() < deadline, f"no final status from {room}:\n{recorder.stderr_text()}"
        time.sleep(0.1)
