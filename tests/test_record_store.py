"""The history store, the same tests against a SQLite file and a real PostgreSQL server:
schema and migrations, what is stored per window and status, sessions and gaps, per-minute
aggregates, retention, deletion, and the writer's bounded queue under a locked database."""

from __future__ import annotations

import json
import threading
import time

import pytest

from helpers_record import LABELS, db_url, emotion, pg_server_url, status  # noqa: F401 (fixtures)
from serd.record import queries
from serd.record.recorder import Recorder
from serd.record.rows import DROPPED, EMOTION, LOST, status_row, window_row
from serd.record.schema import MIGRATIONS, SCHEMA_VERSION
from serd.record.store import StoreError, open_store, sqlite_url
from serd.record.writer import BatchWriter, WriterSettings
from serd.record.writes import Batch, delete_history, load_tracker, prune, write_batch

# A day or two ago, at the time of day of 1_795_000_020 (the tests' minute and hour boundaries as they were
# written): a fixed date fell behind the writer's 14-day retention on 2026-12-02, which then deleted the rows
# these tests had just written whenever it ran after them.
T0 = 1_795_000_020.0 + 86400 * ((time.time() - 1_795_000_020.0) // 86400 - 1)
WAIT_S = 60.0


@pytest.fixture
def store(db_url):  # noqa: F811
    s = open_store(db_url, create=True)
    s.migrate()
    yield s
    s.close()


def record(store, messages) -> Recorder:
    """Feed messages through the recorder's own handling (decode already done) and write them."""
    recorder = Recorder(store, ["tcp://127.0.0.1:1"], WriterSettings())
    for m in messages:
        from serd.messages import encode

        recorder.handle(encode(m))
    last_start: dict = {}
    while batch := recorder.writer._take():  # a batch is at most batch_rows: all of them
        write_batch(store, batch, last_start)
    return recorder


def offer_window(writer: BatchWriter, device: str, seq: int) -> bool:
    m = emotion(device, seq, T0 + seq * 0.5)
    return writer.offer("windows", window_row(m, 1), m.device, EMOTION, 1, m.seq, m.time)


def wait_written(writer: BatchWriter, rows: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while writer.counts.written < rows and time.monotonic() < deadline:
        time.sleep(0.05)


def write_windows(writer: BatchWriter, device: str, seqs: range) -> None:
    """Offer a window per seq and wait until it is written (one device's windows from seq 0 are the only rows)."""
    for i in seqs:
        offer_window(writer, device, i)
    wait_written(writer, seqs.stop)


def test_a_fresh_database_gets_the_current_schema(store):
    assert store.schema_version() == SCHEMA_VERSION
    assert store.migrate() == SCHEMA_VERSION  # opening again changes nothing


def test_a_version_1_database_is_upgraded_with_its_rows_intact(db_url):  # noqa: F811
    old = open_store(db_url, create=True)
    with old.transaction():
        for statement in MIGRATIONS[0]:  # the v1 schema SQL as released
            old.execute(statement)
        old.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
        old.execute("INSERT INTO windows (device, session, seq, time, captured_at, start_s, end_s, speech, level_dbfs, "
                    "probs, smoothed, label, confidence, model) VALUES ('old', 1, 0, ?, ?, 0, 2, ?, -20, ?, ?, 'sad', "
                    "0.5, 'm')", (T0, T0, True, json.dumps({"sad": 0.5, "happy": 0.5}), json.dumps({"sad": 0.5})))
        old.execute("INSERT INTO minutes (device, minute, windows, speech_windows, recorded_s, speech_s, level_sum, "
                    "prob_sums) VALUES ('old', ?, 1, 1, 0.5, 0.5, -20, ?)", (int(T0 // 60) * 60, '{"sad":0.5}'))
    old.close()
    new = open_store(db_url, create=True)
    assert new.migrate() == 1
    assert new.schema_version() == SCHEMA_VERSION
    rows = queries.windows(new, queries.Range(T0 - 1, T0 + 1))
    assert [(r["device"], r["label"], r["arousal"], r["probs"]) for r in rows] == [("old", "sad", None, {"sad": 0.5, "happy": 0.5})]
    agg = queries.aggregates(new, queries.Range(T0 - 60, T0 + 60), 60)
    assert agg[0]["windows"] == 1 and agg[0]["arousal"] is None and agg[0]["probs"] == {"sad": 0.5}
    # and it records new windows with arousal
    record(new, [emotion("old", 1, T0 + 0.5, arousal=0.25, smoothed_arousal=0.5)])
    assert [r["arousal"] for r in queries.windows(new, queries.Range(T0 - 1, T0 + 1))] == [None, 0.25]
    new.close()


def test_a_newer_schema_is_refused(store):
    store.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StoreError, match="newer"):
        store.migrate()


def test_every_published_field_is_stored(store):
    sent = [emotion("room-1", i, T0 + i * 0.5, speech=i % 3 != 0,
                    **({"arousal": 0.1 * (i % 10), "smoothed_arousal": 0.05 * (i % 10)} if i % 3 else {}))
            for i in range(12)]
    statuses = [status("room-1", 0, T0, "starting"), status("room-1", 1, T0 + 5)]
    record(store, sent + statuses)
    got = queries.windows(store, queries.Range(T0 - 1, T0 + 60))
    assert len(got) == len(sent)
    for m, row in zip(sent, got):
        d = m.to_dict()
        for key in ("device", "seq", "time", "captured_at", "start_s", "end_s", "speech", "level_dbfs", "probs",
                    "smoothed", "label", "confidence", "model", "arousal", "smoothed_arousal"):
            assert row[key] == (pytest.approx(d[key]) if isinstance(d[key], float) else d[key]), key
    stored = store.query("SELECT device, seq, state, uptime_s, windows FROM statuses ORDER BY seq")
    assert [tuple(r) for r in stored] == [("room-1", 0, "starting", 0.0, 0), ("room-1", 1, "running", 5.0, 10)]


def test_seq_jumps_are_gaps_and_seq_back_to_zero_is_a_new_session(store):
    seqs = [0, 1, 2, 7, 8, 0, 1, 5]  # a gap of 4, a restart, a gap of 3
    messages = [emotion("room-2", s, T0 + i) for i, s in enumerate(seqs)]
    recorder = record(store, messages)
    gaps = store.query("SELECT topic, reason, after_seq, missing FROM gaps ORDER BY time")
    assert [tuple(g) for g in gaps] == [(EMOTION, LOST, 2, 4), (EMOTION, LOST, 1, 3)]
    sessions = store.query("SELECT session, first_seq FROM sessions WHERE device = 'room-2' ORDER BY session")
    assert [s[1] for s in sessions] == [0, 0]
    per_session = store.query("SELECT session, COUNT(*) FROM windows GROUP BY session ORDER BY session")
    assert [n for _, n in per_session] == [5, 3]
    assert recorder.counts.missing == 7 and recorder.counts.gaps == 2


def test_a_restarted_daemon_whose_status_comes_first_opens_one_session(store):
    record(store, [status("r", 0, T0, "starting"), emotion("r", 0, T0 + 1), emotion("r", 1, T0 + 2),
                   status("r", 0, T0 + 10, "starting"), emotion("r", 0, T0 + 11)])
    assert store.query("SELECT COUNT(*) FROM sessions")[0][0] == 2
    assert store.query("SELECT COUNT(*) FROM gaps")[0][0] == 0


def test_a_restarted_recorder_carries_on_and_counts_what_it_missed(store):
    record(store, [emotion("r", s, T0 + s) for s in range(5)])
    tracker = load_tracker(store)
    recorder = Recorder(store, ["tcp://127.0.0.1:1"], WriterSettings())
    assert recorder.tracker.sessions == tracker.sessions
    from serd.messages import encode

    recorder.handle(encode(emotion("r", 9, T0 + 9)))
    write_batch(store, recorder.writer._take())
    assert [tuple(g) for g in store.query("SELECT after_seq, missing FROM gaps")] == [(4, 4)]
    assert store.query("SELECT COUNT(DISTINCT session) FROM windows")[0][0] == 1


def test_per_minute_aggregates_and_their_rollups(store):
    # 240 windows at 0.5 s: 2 minutes of one room, 20 s into the first minute; every 4th window silent.
    messages = [emotion("agg", i, T0 + i * 0.5, speech=i % 4 != 0, arousal=None if i % 4 == 0 else 0.5 + (i % 2) * 0.25)
                for i in range(240)]
    record(store, messages)
    span = queries.Range(T0 - 60, T0 + 240, "agg")
    minutes = queries.aggregates(store, span, 60)
    assert sum(m["windows"] for m in minutes) == 240
    first_minute_start = int(T0 // 60) * 60
    in_first = [m for m in messages if m.time < first_minute_start + 60]
    speech = [m for m in in_first if m.speech]
    # Recorded time: how far the windows advanced (hop 0.5 s), the first window adding nothing.
    assert sum(m["recorded_s"] for m in minutes) == pytest.approx(239 * 0.5)
    assert sum(m["speech_s"] for m in minutes) == pytest.approx(0.5 * sum(m.speech for m in messages[1:]))
    first = minutes[0]
    assert first["speech_fraction"] == pytest.approx(first["speech_s"] / first["recorded_s"], abs=1e-4)
    assert first["start"] == first_minute_start
    assert first["windows"] == len(in_first) and first["speech_windows"] == len(speech)
    assert first["level_dbfs"] == pytest.approx(sum(m.level_dbfs for m in in_first) / len(in_first), abs=0.01)
    assert first["arousal"] == pytest.approx(sum(m.arousal for m in speech) / len(speech), abs=1e-4)
    mean = {label: sum(m.probs[label] for m in speech) / len(speech) for label in LABELS}
    assert first["probs"] == pytest.approx(mean, abs=1e-4)
    assert first["label"] == max(mean, key=mean.__getitem__)
    # An hour (or a day) adds up its minutes.
    hour = queries.aggregates(store, span, 3600)
    assert sum(h["windows"] for h in hour) == 240
    assert sum(h["speech_windows"] for h in hour) == sum(m["speech_windows"] for m in minutes)
    assert sum(h["recorded_s"] for h in hour) == pytest.approx(sum(m["recorded_s"] for m in minutes))
    (day,) = queries.aggregates(store, span, 86400)
    spoken = [m for m in messages if m.speech]
    assert day["probs"] == pytest.approx({label: sum(m.probs[label] for m in spoken) / len(spoken) for label in LABELS},
                                         abs=1e-4)


def test_writes_in_several_batches_add_up_like_one(store, db_url):  # noqa: F811
    messages = [emotion("b", i, T0 + i * 0.5) for i in range(100)]
    recorder = Recorder(store, ["tcp://127.0.0.1:1"], WriterSettings())
    from serd.messages import encode

    last_start: dict = {}
    for chunk in range(0, 100, 7):
        for m in messages[chunk:chunk + 7]:
            recorder.handle(encode(m))
        write_batch(store, recorder.writer._take(), last_start)
    minutes = queries.aggregates(store, queries.Range(T0 - 60, T0 + 120), 60)
    assert sum(m["windows"] for m in minutes) == 100
    assert sum(m["recorded_s"] for m in minutes) == pytest.approx(99 * 0.5)
    speech = [m for m in messages if m.speech]
    first_minute = [m for m in speech if m.time < int(T0 // 60) * 60 + 60]
    assert minutes[0]["probs"]["happy"] == pytest.approx(sum(m.probs["happy"] for m in first_minute) / len(first_minute),
                                                         abs=1e-4)


def test_retention_keeps_raw_windows_for_keep_days_and_aggregates_for_a_year(store):
    day = 86400
    now = T0 + 400 * day
    messages = [emotion("old", 0, now - 366 * day), emotion("old", 1, now - 20 * day), emotion("old", 2, now - 1 * day)]
    record(store, messages)
    prune(store, now, keep_days=14, keep_aggregate_days=365)
    raw = [r["seq"] for r in queries.windows(store, queries.Range(0, now))]
    assert raw == [2]
    for every in (60, 3600):
        kept = queries.aggregates(store, queries.Range(0, now), every)
        assert len(kept) == 2  # the 20-day-old window survives as an aggregate; the 366-day-old one is gone


def test_retention_says_what_it_removed_and_prunes_sessions_left_empty(store):
    day = 86400
    now = T0 + 400 * day
    record(store, [emotion("gone", 0, now - 370 * day), emotion("quiet", 0, now - 20 * day),
                   emotion("live", 0, now - 380 * day), emotion("live", 1, now - 1 * day)])
    removed = prune(store, now, keep_days=14, keep_aggregate_days=365)
    assert removed["windows"] == 3 and removed["minutes"] == 2 and removed["hours"] == 2
    # "gone": nothing of it left and begun before the aggregates' year. "quiet": its aggregates are
    # kept, so is its session. "live": begun 380 days ago, but a daemon running that long keeps it.
    assert removed["sessions"] == 1
    assert {r[0] for r in store.query("SELECT device FROM sessions")} == {"quiet", "live"}
    assert not any(prune(store, now, keep_days=14, keep_aggregate_days=365).values())  # nothing twice


def many_windows(device: str, n: int, t0: float) -> list:
    return [emotion(device, i, t0 + i * 0.5) for i in range(n)]


def file_bytes(url: str) -> int:
    from serd.record.store import sqlite_path

    return sqlite_path(url).stat().st_size


def test_a_sqlite_file_shrinks_after_a_delete(tmp_path):
    """A new file has incremental auto-vacuum: deleted history gives its disk space back."""
    url = sqlite_url(tmp_path / "h.sqlite3")
    store = open_store(url, create=True)
    store.migrate()
    assert store.query("PRAGMA auto_vacuum")[0][0] == 2  # incremental
    record(store, many_windows("a", 6000, T0) + many_windows("b", 600, T0))
    store.query("PRAGMA wal_checkpoint(TRUNCATE)")
    full = file_bytes(url)
    delete_history(store, "a", T0 + 6000)
    freed = store.reclaim_space()
    assert file_bytes(url) < 0.3 * full, (full, file_bytes(url))
    assert freed == full - file_bytes(url)
    assert len(queries.windows(store, queries.Range(0, T0 + 6000, "b"))) == 600
    assert store.reclaim_space() == 0  # nothing more to give back
    store.close()


def test_a_file_made_without_auto_vacuum_is_rewritten_once_then_shrinks(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:  # as serd before this release made it: auto_vacuum off
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE early (x INTEGER)")
    url = sqlite_url(path)
    store = open_store(url, create=True)
    store.migrate()
    assert store.query("PRAGMA auto_vacuum")[0][0] == 0
    record(store, many_windows("a", 6000, T0) + many_windows("b", 600, T0))
    store.query("PRAGMA wal_checkpoint(TRUNCATE)")
    full = file_bytes(url)
    delete_history(store, "b", T0 + 6000)  # a tenth: not worth rewriting the file for
    assert store.reclaim_space() == 0 and file_bytes(url) == full
    delete_history(store, "a", T0 + 6000)
    assert store.reclaim_space() > 0
    assert file_bytes(url) < 0.3 * full
    assert store.query("PRAGMA auto_vacuum")[0][0] == 2  # from now on, incremental
    store.close()


def test_the_writers_retention_logs_what_it_removed_and_gives_the_space_back(tmp_path, caplog):
    url = sqlite_url(tmp_path / "h.sqlite3")
    store = open_store(url, create=True)
    store.migrate()
    old = T0 - 30 * 86400
    record(store, many_windows("a", 4000, old))
    store.query("PRAGMA wal_checkpoint(TRUNCATE)")
    full = file_bytes(url)
    writer = BatchWriter(store, WriterSettings(flush_s=0.05, keep_days=14, prune_every_s=0.0))
    with caplog.at_level("INFO", logger="serd.record.writer"):
        writer.start()
        deadline = time.monotonic() + WAIT_S
        while "retention removed" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        writer.stop()
    assert writer.error is None
    lines = [r.getMessage() for r in caplog.records if "retention removed" in r.getMessage()]
    assert lines and lines[0].startswith("retention removed 4000 windows"), caplog.text
    assert "MB of disk given back" in lines[0], lines[0]
    assert file_bytes(url) < 0.5 * full
    store.close()


def test_delete_a_rooms_history_before_a_time(store):
    record(store, [emotion("a", i, T0 + i * 30) for i in range(10)] + [emotion("b", i, T0 + i * 30) for i in range(10)]
           + [status("a", 0, T0 + 1)])
    cut = T0 + 150
    counts = delete_history(store, "a", cut)
    assert counts["windows"] == 5 and counts["statuses"] == 1
    assert [r["seq"] for r in queries.windows(store, queries.Range(0, T0 + 1000, "a"))] == [5, 6, 7, 8, 9]
    assert len(queries.windows(store, queries.Range(0, T0 + 1000, "b"))) == 10
    assert all(m["start"] >= int(cut // 60) * 60 for m in queries.aggregates(store, queries.Range(0, T0 + 1000, "a"), 60))
    assert queries.aggregates(store, queries.Range(0, T0 + 1000, "a"), 3600) == []  # the hour overlapping the cut goes
    assert sum(m["windows"] for m in queries.aggregates(store, queries.Range(0, T0 + 1000, "b"), 60)) == 10


def test_a_locked_database_backs_up_into_the_bounded_queue_and_reports_its_drops(store, db_url):  # noqa: F811
    """Another connection holds the write lock: the writer retries, the queue fills, the rest is dropped
    and recorded as a gap with reason "dropped"; nothing is lost silently."""
    settings = WriterSettings(flush_s=0.05, batch_rows=10, queue_rows=50)
    writer = BatchWriter(store, settings)
    blocker = open_store(db_url)
    holding = threading.Event()
    release = threading.Event()

    def hold_lock():
        with blocker.transaction():
            blocker.execute("DELETE FROM windows WHERE device = 'nobody'")  # takes the write lock (SQLite)
            if blocker.dialect == "postgresql":
                blocker.execute("LOCK TABLE windows IN EXCLUSIVE MODE")
            holding.set()
            release.wait(WAIT_S)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    assert holding.wait(WAIT_S)
    writer.start()
    sent = range(200)
    accepted = sum(offer_window(writer, "busy", i) for i in sent)
    assert accepted <= settings.queue_rows + settings.batch_rows
    assert writer.counts.dropped == len(sent) - accepted > 0
    release.set()
    holder.join(WAIT_S)
    writer.stop()
    blocker.close()
    assert writer.error is None
    stored = store.query("SELECT COUNT(*) FROM windows")[0][0]
    dropped = store.query("SELECT SUM(missing) FROM gaps WHERE reason = ?", (DROPPED,))[0][0]
    assert stored == accepted and dropped == len(sent) - accepted
    # The dropped run starts right after the last accepted window.
    assert store.query("SELECT after_seq FROM gaps")[0][0] == accepted - 1


def test_status_rows_keep_counters(store):
    m = status("s", 3, T0)
    with store.transaction():
        store.executemany("INSERT INTO statuses VALUES (" + ", ".join("?" * 16) + ")", [status_row(m, 1)])
    assert store.query("SELECT published, version FROM statuses")[0][0] == 30


def test_queries_answer_while_the_writer_writes(store, db_url):  # noqa: F811
    """A reader (serd history, the dashboard) opens the database while a batch is being committed."""
    writer = BatchWriter(store, WriterSettings(flush_s=0.05, batch_rows=50))
    writer.start()
    reader = open_store(db_url)
    try:
        for i in range(500):
            offer_window(writer, "rw", i)
            if i % 100 == 0:
                queries.windows(reader, queries.Range(0, T0 + 1000))
        wait_written(writer, 500)
    finally:
        writer.stop()
        reader.close()
    assert len(queries.windows(store, queries.Range(0, T0 + 1000))) == 500


def test_a_lost_postgresql_connection_is_retried_and_reconnected(db_url):  # noqa: F811
    if not db_url.startswith("postgresql://"):
        pytest.skip("PostgreSQL only: a SQLite file has no connection to lose")
    store = open_store(db_url, create=True)
    store.migrate()
    writer = BatchWriter(store, WriterSettings(flush_s=0.05, batch_rows=10))
    writer.start()
    admin = open_store(db_url)
    try:
        write_windows(writer, "pg", range(20))
        pid = store.query("SELECT pg_backend_pid()")[0][0]
        admin.execute("SELECT pg_terminate_backend(?)", (pid,))  # the server drops the recorder's connection
        write_windows(writer, "pg", range(20, 40))
    finally:
        writer.stop()
        admin.close()
    assert writer.error is None and writer.counts.retries >= 1
    assert [r["seq"] for r in queries.windows(store, queries.Range(0, T0 + 100))] == list(range(40))
    store.close()


def test_a_journal_replayed_twice_or_cut_short_counts_every_row_once(store, tmp_path):
    """Journaled rows, some already in the database (a replay cut short, a COMMIT whose answer was
    lost), and a last line cut off by a crash: each window is stored and summed exactly once."""
    from serd.record.journal import Journal

    rows = [window_row(emotion("j", i, T0 + i * 0.5), 1) for i in range(30)]
    gap = ("j", 1, EMOTION, LOST, 29, 3, T0 + 20)
    write_batch(store, Batch(windows=rows[:12], gaps=[gap]))
    journal = Journal(tmp_path / "unwritten-x.jsonl")
    assert journal.append([("windows", r) for r in rows] + [("gaps", gap)]) == 31
    with open(journal.path, "a") as f:
        f.write('["windows", ["j", 1, 99')  # a write cut off mid-line
    writer = BatchWriter(store, WriterSettings(batch_rows=7), journal)
    assert writer.replay_journal() == 31
    assert not journal.pending() and not list(tmp_path.glob("unwritten-*"))
    assert [r["seq"] for r in queries.windows(store, queries.Range(0, T0 + 1000, "j"))] == list(range(30))
    assert sum(m["windows"] for m in queries.aggregates(store, queries.Range(0, T0 + 1000, "j"), 60)) == 30
    assert store.query("SELECT COUNT(*) FROM gaps")[0][0] == 1


def test_rows_journaled_during_a_replay_come_after_it(tmp_path):
    from serd.record.journal import Journal

    journal = Journal(tmp_path / "unwritten-x.jsonl")
    journal.append([("windows", ("a", 1, i)) for i in range(5)])
    first = journal.next_batch(3)
    journal.append([("windows", ("a", 1, i)) for i in range(5, 8)])  # spilled while the replay runs
    seqs = [r[2] for r in first.windows]
    while batch := journal.next_batch(3):
        seqs += [r[2] for r in batch.windows]
    journal.replayed()
    while batch := journal.next_batch(3):
        seqs += [r[2] for r in batch.windows]
    journal.replayed()
    assert seqs == list(range(8)) and not journal.pending()


# -- issue 19: refused rows, a deleted file, replays, many devices, stored infinities ------------------

def refuse_room(store, device: str) -> None:
    """Make the real database refuse every window of `device`, as it refused a sum that overflowed."""
    with store.transaction():
        if store.dialect == "postgresql":
            store.execute(f"ALTER TABLE windows ADD CONSTRAINT refuse_room CHECK (device <> '{device}')")
        else:
            store.execute(f"CREATE TRIGGER refuse_room BEFORE INSERT ON windows WHEN NEW.device = '{device}' "
                          "BEGIN SELECT RAISE(ABORT, 'this room is refused'); END")


def test_a_row_the_database_refuses_is_dropped_and_counted_and_the_rest_written(store):
    """Item 2: one refused row stopped the recorder (exit 1) and lost its whole batch."""
    refuse_room(store, "bad")
    writer = BatchWriter(store, WriterSettings(flush_s=0.05, batch_rows=100))
    for i in range(10):
        offer_window(writer, "good", i)
        if i in (3, 7):
            offer_window(writer, "bad", i)
    writer.start()
    wait_written(writer, 10)
    offer_window(writer, "good", 10)  # and the next batch is written as a whole again
    wait_written(writer, 11)
    writer.stop()
    assert writer.error is None and writer.is_alive() is False
    assert writer.counts.refused == {"windows": 2} and writer.counts.written == 11
    assert [r[0] for r in store.query("SELECT seq FROM windows ORDER BY seq")] == list(range(11))
    agg = queries.aggregates(store, queries.Range(T0 - 60, T0 + 60), 3600)
    assert [(a["device"], a["windows"]) for a in agg] == [("good", 11)]


def test_stored_infinite_sums_read_back_as_unknown_not_an_error(store):
    """Item 2: an older serd let a minute's level sum overflow; history and the dashboard failed on it."""
    minute = int(T0 // 60) * 60
    with store.transaction():
        for period, start in (("minutes", minute), ("hours", int(T0 // 3600) * 3600)):
            store.execute(f"INSERT INTO {period} (device, {period[:-1]}, windows, speech_windows, recorded_s, "
                          "speech_s, level_sum, prob_sums, arousal_sum, arousal_windows) "
                          "VALUES ('inf', ?, 2, 1, 1.0, 0.5, ?, ?, 0, 0)", (start, float("inf"), '{"sad":0.5}'))
    for every in (60, 3600):
        (bucket,) = queries.aggregates(store, queries.Range(T0 - 3600, T0 + 3600), every)
        assert bucket["level_dbfs"] is None and bucket["probs"] == {"sad": 0.5}
        json.dumps(bucket, allow_nan=False)


def test_a_deleted_sqlite_file_is_reopened_and_nothing_is_written_into_the_void(tmp_path):
    """Item 3: `rm` of the file, -wal and -shm under the writer: it wrote on into the unlinked inode."""
    path = tmp_path / "history.sqlite3"
    store = open_store(sqlite_url(path), create=True)
    store.migrate()
    writer = BatchWriter(store, WriterSettings(flush_s=0.05, batch_rows=10))
    writer.start()
    try:
        write_windows(writer, "rm", range(5))
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        write_windows(writer, "rm", range(5, 12))
    finally:
        writer.stop()
        store.close()
    assert writer.error is None and writer.counts.reopened == 1
    reader = open_store(sqlite_url(path))
    try:
        reader.check_schema()
        assert [r[0] for r in reader.query("SELECT seq FROM windows ORDER BY seq")] == list(range(5, 12))
    finally:
        reader.close()


def test_a_replayed_old_message_is_ignored_not_a_new_session(store):
    """Item 8: a replay opened a session and then stored an invented gap."""
    live = [emotion("r", s, T0 + s) for s in range(6)]
    recorder = record(store, [*live[:4], live[1], status("r", 0, T0 - 5), live[3], *live[4:]])
    assert recorder.counts.replayed == 2 and recorder.counts.sessions == 1
    assert store.query("SELECT COUNT(*) FROM sessions")[0][0] == 1
    assert store.query("SELECT COUNT(*) FROM gaps")[0][0] == 0
    assert [r[0] for r in store.query("SELECT seq FROM windows ORDER BY seq")] == list(range(6))


def test_the_tracker_keeps_the_most_recently_heard_devices_only():
    """Item 5: every device ever seen was kept (103,040 invented ids: 42 -> 138 MiB)."""
    from serd.record.rows import Tracker

    tracker = Tracker(max_devices=3)
    for i, device in enumerate(["a", "b", "c", "a", "d", "e"]):
        assert tracker.place(device, EMOTION, i, T0 + i) is not None
    assert list(tracker.devices) == ["a", "d", "e"] and tracker.forgotten == 2
    # a forgotten device that speaks again is a new session, not a gap from what it said before
    placed = tracker.place("b", EMOTION, 9, T0 + 9)
    assert placed.sessions and not placed.gaps and list(tracker.devices) == ["d", "e", "b"]


def test_a_restarted_recorder_reads_back_at_most_max_devices(store):
    record(store, [emotion(f"room-{i}", 0, T0 + i) for i in range(5)])
    tracker = load_tracker(store, max_devices=2)
    assert list(tracker.devices) == ["room-3", "room-4"]
    assert tracker.devices["room-4"].positions[EMOTION].seq == 0
