"""Everything that changes a history database: a batch of rows (with its per-minute
aggregates, in the same transaction), retention, and deleting a room's history."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

from serd.record.rows import (
    EMOTION,
    GAP_COLUMNS,
    SESSION_COLUMNS,
    STATUS,
    STATUS_COLUMNS,
    WINDOW_COLUMNS,
    MAX_TRACKED_DEVICES,
    Tracker,
)
from serd.record.store import Store

MINUTE_S = 60
HOUR_S = 3600
DAY_S = 86400


def _insert(table: str, columns: tuple[str, ...], conflict: str = " ON CONFLICT DO NOTHING") -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}){conflict}"


INSERT_WINDOW = _insert("windows", WINDOW_COLUMNS)
INSERT_STATUS = _insert("statuses", STATUS_COLUMNS)
INSERT_SESSION = _insert("sessions", SESSION_COLUMNS)
INSERT_GAP = _insert("gaps", GAP_COLUMNS, "")


AGGREGATE_COLUMNS = ("windows", "speech_windows", "recorded_s", "speech_s", "level_sum", "arousal_sum",
                     "arousal_windows")


def _add(period: str) -> str:
    """The upsert that adds a batch's sums to a period's row (period: minute or hour). The label
    sums (JSON) are merged by the caller, which read the row first in the same transaction."""
    return _insert(f"{period}s", ("device", period, *AGGREGATE_COLUMNS, "prob_sums"),
                   f" ON CONFLICT (device, {period}) DO UPDATE SET "
                   + ", ".join(f"{c} = {period}s.{c} + excluded.{c}" for c in AGGREGATE_COLUMNS)
                   + ", prob_sums = excluded.prob_sums")


PERIODS = {"minute": MINUTE_S, "hour": HOUR_S}
ADD = {period: _add(period) for period in PERIODS}
MAX_ADVANCE_S = 10.0
"""A window advances the recording by its distance from the previous one (the hop); a larger
distance (a gap, a pause) is not counted as recorded time. 10 s is the largest hop serd allows."""

_W = {name: i for i, name in enumerate(WINDOW_COLUMNS)}


@dataclass
class Batch:
    """Rows to commit together."""

    windows: list[tuple] = field(default_factory=list)
    statuses: list[tuple] = field(default_factory=list)
    sessions: list[tuple] = field(default_factory=list)
    gaps: list[tuple] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.windows) + len(self.statuses) + len(self.sessions) + len(self.gaps)


@dataclass
class Sums:
    """One room's sums over one minute or hour."""

    totals: list[float] = field(default_factory=lambda: [0, 0, 0.0, 0.0, 0.0, 0.0, 0])
    """In AGGREGATE_COLUMNS order."""
    probs: dict[str, float] = field(default_factory=lambda: defaultdict(float))


def aggregate(windows: list[tuple], last_start: dict[tuple[str, int], float], period_s: int
              ) -> dict[tuple[str, int], Sums]:
    """Per (device, period start): window counts, recorded and speech seconds, level and arousal sums,
    and per label the summed `probs` of speech windows.

    Sums, not means, so that several batches (and hours from minutes) add up. `last_start`
    (device, session) -> the previous window's start_s, kept by the caller across batches:
    a window's recorded seconds are its advance over the previous one.
    """
    out: dict[tuple[str, int], Sums] = defaultdict(Sums)
    for row in windows:
        device, start_s = row[_W["device"]], row[_W["start_s"]]
        previous = last_start.pop((device, row[_W["session"]]), None)  # popped: re-inserted last, the newest
        advance = start_s - previous if previous is not None and 0 < start_s - previous <= MAX_ADVANCE_S else 0.0
        last_start[(device, row[_W["session"]])] = start_s
        sums = out[(device, int(row[_W["time"]] // period_s) * period_s)]
        t = sums.totals
        t[0] += 1
        t[2] += advance
        t[4] += row[_W["level_dbfs"]]
        if row[_W["speech"]] and row[_W["probs"]] is not None:
            t[1] += 1
            t[3] += advance
            for label, p in json.loads(row[_W["probs"]]).items():
                sums.probs[label] += p
            if row[_W["arousal"]] is not None:
                t[5] += row[_W["arousal"]]
                t[6] += 1
    return out


def _add_to(store: Store, period: str, sums: dict[tuple[str, int], Sums]) -> None:
    """Add a batch's sums to the stored rows (inside the batch's transaction)."""
    stored: dict[tuple[str, int], str] = {}
    for device in {device for device, _ in sums}:
        starts = [start for d, start in sums if d == device]
        for start, prob_sums in store.query(f"SELECT {period}, prob_sums FROM {period}s WHERE device = ? AND "
                                            f"{period} >= ? AND {period} <= ?", (device, min(starts), max(starts))):
            stored[(device, int(start))] = prob_sums
    rows = []
    for key, s in sums.items():
        probs = dict(s.probs)
        for label, total in json.loads(stored.get(key, "{}")).items():
            probs[label] = probs.get(label, 0.0) + total
        rows.append((*key, *s.totals, json.dumps(probs, separators=(",", ":"))))
    store.executemany(ADD[period], rows)


def write_batch(store: Store, batch: Batch, last_start: dict[tuple[str, int], float] | None = None,
                skip_written: bool = False) -> None:
    """One transaction: raw rows and the aggregates they add to. `skip_written`: leave out rows the
    database already holds (a batch replayed from the journal, or retried after a failed COMMIT
    that may have gone through), so that nothing is counted twice in the aggregates."""
    last_start = {} if last_start is None else last_start
    with store.transaction():
        if skip_written:
            batch = _unwritten(store, batch)
        per_period = {}
        for period, period_s in PERIODS.items():
            starts = dict(last_start)
            per_period[period] = aggregate(batch.windows, starts, period_s)
        for sql, rows in ((INSERT_SESSION, batch.sessions), (INSERT_WINDOW, batch.windows),
                          (INSERT_STATUS, batch.statuses), (INSERT_GAP, batch.gaps)):
            if rows:
                store.executemany(sql, rows)
        for period, sums in per_period.items():
            if sums:
                _add_to(store, period, sums)
    last_start.clear()
    last_start.update(starts)
    for key in list(last_start)[:max(0, len(last_start) - MAX_TRACKED_DEVICES)]:
        del last_start[key]  # the least recently written sessions: a device that speaks again starts afresh


def _unwritten(store: Store, batch: Batch) -> Batch:
    """The batch without the windows, statuses and gaps the database already has."""
    out = Batch(sessions=batch.sessions)
    for table, rows, kept in (("windows", batch.windows, out.windows), ("statuses", batch.statuses, out.statuses)):
        by_session: dict[tuple[str, int], list[tuple]] = defaultdict(list)
        for row in rows:
            by_session[(row[0], row[1])].append(row)
        for (device, session), group in by_session.items():
            seqs = [row[2] for row in group]
            have = {seq for (seq,) in store.query(f"SELECT seq FROM {table} WHERE device = ? AND session = ? AND "
                                                  "seq >= ? AND seq <= ?", (device, session, min(seqs), max(seqs)))}
            kept.extend(row for row in group if row[2] not in have)
    have_gaps: set[tuple] = set()
    for device in {row[0] for row in batch.gaps}:
        times = [row[6] for row in batch.gaps if row[0] == device]
        have_gaps.update(tuple(r) for r in store.query(
            "SELECT device, session, topic, after_seq FROM gaps WHERE device = ? AND time >= ? AND time <= ?",
            (device, min(times), max(times))))
    out.gaps.extend(row for row in batch.gaps if tuple(row[:3]) + (row[4],) not in have_gaps)
    return out


def prune(store: Store, now: float, keep_days: float, keep_aggregate_days: float) -> dict[str, int]:
    """Retention: raw windows and statuses for `keep_days`; aggregates, gaps and sessions for
    `keep_aggregate_days` (a session once none of its rows is left). Returns rows deleted per table."""
    raw_before = now - keep_days * DAY_S
    aggregate_before = now - keep_aggregate_days * DAY_S
    with store.transaction():
        removed = {
            "windows": store.execute("DELETE FROM windows WHERE time < ?", (raw_before,)),
            "statuses": store.execute("DELETE FROM statuses WHERE time < ?", (raw_before,)),
            "gaps": store.execute("DELETE FROM gaps WHERE time < ?", (aggregate_before,)),
        }
        for period in PERIODS:
            removed[f"{period}s"] = store.execute(f"DELETE FROM {period}s WHERE {period} < ?", (aggregate_before,))
        removed["sessions"] = _delete_empty_sessions(store, aggregate_before)
    return removed


def _delete_empty_sessions(store: Store, started_before: float, device: str | None = None) -> int:
    """Sessions begun before `started_before` none of whose windows or statuses is left (a daemon
    running for months keeps its session: its recent rows are there)."""
    where, params = ("device = ? AND ", (device, started_before)) if device is not None else ("", (started_before,))
    return store.execute(f"DELETE FROM sessions WHERE {where}started_at < ? AND NOT EXISTS "
                         "(SELECT 1 FROM windows w WHERE w.device = sessions.device AND w.session = sessions.session) "
                         "AND NOT EXISTS (SELECT 1 FROM statuses s WHERE s.device = sessions.device "
                         "AND s.session = sessions.session)", params)


def _history_ranges(device: str, before: float, since: float | None) -> list[tuple[str, str, float]]:
    """(table, time column, start) of what deleting a room's history in [since, before) takes: raw rows
    in the range, and the aggregates of every minute and hour that overlaps it."""
    lo = float("-inf") if since is None else since
    tables = [("windows", "time", lo), ("statuses", "time", lo), ("gaps", "time", lo)]
    for period, period_s in PERIODS.items():
        tables.append((f"{period}s", period, lo if since is None else int(since // period_s) * period_s))
    return tables


def count_history(store: Store, device: str, before: float, since: float | None = None) -> dict[str, int]:
    """What `delete_history` would delete, per table (for --dry-run and the question before deleting)."""
    return {table: store.query(f"SELECT COUNT(*) FROM {table} WHERE device = ? AND {column} >= ? AND {column} < ?",
                               (device, start, before))[0][0]
            for table, column, start in _history_ranges(device, before, since)}


def delete_history(store: Store, device: str, before: float, since: float | None = None) -> dict[str, int]:
    """Delete a room's history in [since, before): raw windows, statuses, gaps, sessions and the
    aggregates of every minute and hour that overlaps the range (so nothing from it survives).
    Returns rows deleted per table."""
    with store.transaction():
        counts = count_history(store, device, before, since)
        for table, column, start in _history_ranges(device, before, since):
            store.execute(f"DELETE FROM {table} WHERE device = ? AND {column} >= ? AND {column} < ?",
                          (device, start, before))
        _delete_empty_sessions(store, before, device)
    return counts


def load_tracker(store: Store, max_devices: int = MAX_TRACKED_DEVICES) -> Tracker:
    """The latest session and last message per topic of the `max_devices` devices whose sessions began
    most recently, so that a restarted recorder carries on; its start-up reads at most that many."""
    tracker = Tracker(max_devices)
    latest = store.query("SELECT device, MAX(session) FROM sessions GROUP BY device ORDER BY MAX(session) DESC "
                         "LIMIT ?", (max_devices,))
    for device, session in reversed(latest):  # the most recent last: the last to be forgotten
        tracker.seed(device, int(session))
        for topic, table in ((EMOTION, "windows"), (STATUS, "statuses")):
            last = store.query(f"SELECT seq, time FROM {table} WHERE device = ? AND session = ? "
                               "ORDER BY seq DESC LIMIT 1", (device, session))
            if last:
                tracker.seed(device, int(session), topic, int(last[0][0]), float(last[0][1]))
    return tracker
