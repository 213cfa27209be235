"""Issue 19, item 8 (and item 2's readers): what a user or a browser can type at the history readers.

A real `serd dashboard --db` and real `serd history` runs on a real SQLite history (written with the
recorder's own code): a day with no next midnight, a span back of 1e31 seconds, and sums an older
serd let overflow to infinity. Each is a one-line answer (HTTP 400 with a JSON error, or exit 2 and
one stderr line), never a closed connection or a traceback.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from helpers_daemon import run_serd, short_tmpdir
from helpers_record import emotion
from helpers_service import STARTUP_S, ServeProcess, assert_one_line_error, get_json
from serd.messages import encode
from serd.record.recorder import Recorder
from serd.record.store import open_store, sqlite_url
from serd.record.writer import WriterSettings
from serd.record.writes import write_batch

pytestmark = pytest.mark.reliability

ROOM = "room-19"


@pytest.fixture(scope="module")
def history_db():
    """A room's last few minutes, then its minute and hour level sums made infinite (as an older
    serd stored them after +1e308 and -1e308 dBFS): (workdir, url)."""
    with short_tmpdir("serd-hostile-history-") as workdir:
        url = sqlite_url(workdir / "history.sqlite3")
        store = open_store(url, create=True)
        store.migrate()
        recorder = Recorder(store, ["tcp://127.0.0.1:1"], WriterSettings())
        now = time.time() - 600
        for seq in range(20):
            recorder.handle(encode(emotion(ROOM, seq, now + seq * 0.5)))
        write_batch(store, recorder.writer._take())
        with store.transaction():
            for table in ("minutes", "hours"):
                store.execute(f"UPDATE {table} SET level_sum = ?", (float("inf"),))
        store.close()
        yield workdir, url


def test_dashboard_history_answers_400_to_a_day_without_a_next_midnight_and_200_to_infinite_sums(history_db):
    workdir, url = history_db
    with ServeProcess(["dashboard", "--db", url, "--connect", f"ipc://{workdir}/none", "--listen", "127.0.0.1:0"],
                      cwd=workdir, log_dir=workdir) as dashboard:
        base = re.search(r"serving on (http://\S+/)", dashboard.wait_for_stderr("serving on", STARTUP_S)).group(1)
        for day in ("9999-12-31", "0001-01-01", "2026-02-30"):
            status, body = get_json(f"{base}api/history/room?device={ROOM}&day={day}&every=1m")
            assert status == 400 and body["error"].startswith("day: expected a date") and "\n" not in body["error"]
        today = time.strftime("%Y-%m-%d", time.localtime(time.time() - 600))
        for every in ("1m", "1h"):
            status, body = get_json(f"{base}api/history/room?device={ROOM}&day={today}&every={every}")
            assert status == 200 and sum(b["windows"] for b in body["buckets"]) == 20
            assert {b["level_dbfs"] for b in body["buckets"]} == {None}
        status, table = get_json(f"{base}api/history/table?days=2")
        assert status == 200 and [row["device"] for row in table["rows"]] == [ROOM]
        assert dashboard.stop() == 0
        stderr = dashboard.stderr_text()
    assert "Traceback" not in stderr and "ValueError" not in stderr, stderr


@pytest.mark.parametrize("args, needle", [
    (["--since", "10000000000000000000000000000000s"], "at most 36500 days"),
    (["--since", "10000000000000000000000000000000s", "--every", "1h"], "at most 36500 days"),
    (["--until", "0001-01-01T00:00:00+14:00"], "out of range"),
])
def test_history_refuses_times_out_of_range_in_one_line(history_db, args, needle):
    workdir, url = history_db
    done = run_serd(["history", "--db", url, *args], cwd=workdir)
    assert done.returncode == 2
    assert_one_line_error(done.stderr, needle)


def test_history_prints_summaries_over_infinite_sums(history_db):
    workdir, url = history_db
    for every in ("1m", "1h", "1d"):
        done = run_serd(["history", "--db", url, "--since", "1d", "--every", every, "--json"], cwd=workdir)
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in done.stdout.splitlines()]
        assert sum(r["windows"] for r in rows) == 20 and {r["level_dbfs"] for r in rows} == {None}
    done = run_serd(["history", "--db", url, "--since", "1d", "--every", "1h"], cwd=workdir)
    assert done.returncode == 0 and "level ? dBFS" in done.stdout, done.stderr
