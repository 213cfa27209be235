"""`--db` for SQLite: one parser for `serd record`, `serd history` and `serd dashboard`, with
SQLAlchemy's convention (`sqlite:////abs/path.db` absolute, `sqlite:///rel.db` relative to the
working directory) and percent escapes decoded; a recorder and a reader given the same URL open
the same file (real subprocesses, real files)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from helpers_daemon import assert_no_traceback, run_serd, serd_lines
from helpers_record import TestPublisher, emotion, start_recorder, stored_seqs, wait_for_rows
from serd.dashboard.history import History
from serd.dashboard.settings import DashboardError
from serd.record.store import StoreError, open_store, sqlite_path, sqlite_url


@pytest.mark.parametrize("url, expected", [
    ("sqlite:////var/lib/serd/h.sqlite3", "/var/lib/serd/h.sqlite3"),
    ("sqlite:///h.sqlite3", "CWD/h.sqlite3"),
    ("sqlite:///sub/dir/h.sqlite3", "CWD/sub/dir/h.sqlite3"),
    ("sqlite:///room%23101%3Fx%41.db", "CWD/room#101?xA.db"),
    ("sqlite:////tmp/with%20space.db", "/tmp/with space.db"),
    ("h.sqlite3", "CWD/h.sqlite3"),
    ("/abs/h#1?.sqlite3", "/abs/h#1?.sqlite3"),  # a bare path is a path, taken as it is
])
def test_sqlite_url_forms(url, expected, tmp_path):
    assert sqlite_path(url, cwd=tmp_path) == Path(expected.replace("CWD", str(tmp_path)))


@pytest.mark.parametrize("url, says", [
    ("sqlite://host/h.db", "no host"),
    ("sqlite://", "no host"),
    ("sqlite:///", "no file name"),
    ("sqlite:////var/lib/", "no file name"),
    ("sqlite:///room#101.db", "%23"),
    ("sqlite:///h.db?mode=ro", "%3F"),
    ("sqlite:///%ff.db", "UTF-8"),
])
def test_sqlite_urls_that_name_no_file_are_refused_in_one_line(url, says):
    with pytest.raises(StoreError, match=says) as caught:
        sqlite_path(url)
    assert "\n" not in str(caught.value)


def test_sqlite_url_round_trips_any_file_name(tmp_path):
    for name in ("h.sqlite3", "a#b?c%41 d.db", "ünï.db"):
        assert sqlite_path(sqlite_url(tmp_path / name)) == tmp_path / name
    assert sqlite_url(Path("/var/lib/h.db")) == "sqlite:////var/lib/h.db"


def test_the_old_three_slash_absolute_form_is_refused_where_it_would_open_another_file(tmp_path, monkeypatch):
    """serd once read sqlite:///tmp/x/h.db as /tmp/x/h.db: with that file there and no relative one,
    opening (or creating) tmp/x/h.db in the working directory would split the history in two."""
    db = tmp_path / "h.sqlite3"
    open_store(sqlite_url(db), create=True).close()
    monkeypatch.chdir("/")
    monkeypatch.chdir(tmp_path)  # the relative reading, tmp_path/tmp/..., does not exist
    old = "sqlite://" + str(db)
    with pytest.raises(StoreError, match=f"write {sqlite_url(db)}"):
        open_store(old, create=True)
    assert not (tmp_path / str(db).lstrip("/")).exists()


def test_the_dashboard_reads_db_with_the_same_parser(tmp_path):
    with pytest.raises(DashboardError, match="%23"):
        History("sqlite:///room#1.db").check()
    with pytest.raises(DashboardError, match="no such history database"):
        History(sqlite_url(tmp_path / "none.db")).check()


@pytest.mark.parametrize("url, name", [
    ("sqlite:///rel.sqlite3", "rel.sqlite3"),
    ("sqlite:///sub/rel.sqlite3", "sub/rel.sqlite3"),
    ("ABS", "abs.sqlite3"),
    ("sqlite:///room%23101%3Fv%41.sqlite3", "room#101?vA.sqlite3"),
    ("bare#1?.sqlite3", "bare#1?.sqlite3"),
])
def test_record_and_history_open_the_same_file(workdir, url, name):
    url = sqlite_url(workdir / name) if url == "ABS" else url
    endpoint = f"ipc://{workdir}/pub"
    pub = TestPublisher(endpoint)
    recorder = start_recorder(workdir, url, endpoint)
    file = workdir / name
    try:
        pub.wait_subscribed()
        for i in range(3):
            pub.send(emotion("room-u", i, time.time() - 10 + i))
        wait_for_rows(sqlite_url(file), "room-u", 3, recorder)
        recorder.send_signal(signal.SIGTERM)
        assert recorder.wait() == 0, recorder.stderr_text()
    finally:
        recorder.kill()
        pub.close()
    assert_no_traceback(recorder.stderr_text())
    assert [p.name for p in file.parent.iterdir() if p.suffix == ".sqlite3"] == [file.name]
    done = run_serd(["history", "room-u", "--db", url, "--since", "1h", "--json"], cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3
    assert stored_seqs(sqlite_url(file), "room-u") == [0, 1, 2]


def test_a_bad_sqlite_url_is_one_line_for_each_command(workdir):
    for args in (["record", "--connect", "ipc:///nonexistent"], ["history"]):
        done = run_serd([*args, "--db", "sqlite:///room#1.db"], cwd=workdir)
        assert done.returncode == 1, done.stderr
        assert serd_lines(done.stderr) == ["serd: sqlite:///room#1.db: '#' is not part of a sqlite URL's path "
                                           "(write %23 for a # in a file name); expected sqlite:////ABSOLUTE/PATH "
                                           "or sqlite:///RELATIVE/PATH"], done.stderr
    assert not list(workdir.glob("room*"))
