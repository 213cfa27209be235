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
    Position,
    Tracker,
)
from serd.record.store import Store

MINUTE_S = 60
DAY_S = 86400


def _insert(table: str, columns: tuple[str, ...], conflict: str = " ON CONFLICT DO NOTHING") -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}){conflict}"


INSERT_WINDOW = _insert("windows", WINDOW_COLUMNS)
INSERT_STATUS = _insert("statuses", STATUS_COLUMNS)
INSERT_SESSION = _insert("sessions", SESSION_COLUMNS)
INSERT_GAP = _insert("gaps", GAP_COLUMNS, "")
ADD_MINUTE = _insert(
    "minutes", ("device", "minute", "windows", "speech_windows", "level_sum", "arousal_sum", "arousal_windows"),
    " ON CONFLICT (device, minute) DO UPDATE SET windows = minutes.windows + excluded.windows, "
    "speech_windows = minutes.speech_windows + excluded.speech_windows, "
    "level_sum = minutes.level_sum + excluded.level_sum, arousal_sum = minutes.arousal_sum + excluded.arousal_sum, "
    "arousal_windows = minutes.arousal_windows + excluded.arousal_windows")
ADD_MINUTE_LABEL = _insert(
    "minute_labels", ("device", "minute", "label", "prob_sum"),
    " ON CONFLICT (device, minute, label) DO UPDATE SET prob_sum = minute_labels.prob_sum + excluded.prob_sum")

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


def minute_aggregates(windows: list[tuple]) -> tuple[list[tuple], list[tuple]]:
    """Per (device, minute): window counts, level and arousal sums; per label the summed `probs` of speech windows.

    Sums, not means, so that minutes from several batches (and hours from minutes) add up.
    """
    minutes: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0, 0])
    labels: dict[tuple[str, int, str], float] = defaultdict(float)
    for row in windows:
        key = (row[_W["device"]], int(row[_W["time"]] // MINUTE_S) * MINUTE_S)
        agg = minutes[key]
        agg[0] += 1
        agg[2] += row[_W["level_dbfs"]]
        if row[_W["speech"]] and row[_W["probs"]] is not None:
            agg[1] += 1
            for label, p in json.loads(row[_W["probs"]]).items():
                labels[(*key, label)] += p
            if row[_W["arousal"]] is not None:
                agg[3] += row[_W["arousal"]]
                agg[4] += 1
    return ([(*k, *v) for k, v in minutes.items()], [(*k, v) for k, v in labels.items()])


def write_batch(store: Store, batch: Batch) -> None:
    """One transaction: raw rows and the aggregates they add to."""
    minutes, labels = minute_aggregates(batch.windows)
    with store.transaction():
        for sql, rows in ((INSERT_SESSION, batch.sessions), (INSERT_WINDOW, batch.windows),
                          (INSERT_STATUS, batch.statuses), (INSERT_GAP, batch.gaps),
                          (ADD_MINUTE, minutes), (ADD_MINUTE_LABEL, labels)):
            if rows:
                store.executemany(sql, rows)


def prune(store: Store, now: float, keep_days: float, keep_aggregate_days: float) -> None:
    """Retention: raw windows and statuses for `keep_days`, aggregates, gaps and sessions for `keep_aggregate_days`."""
    raw_before = now - keep_days * DAY_S
    aggregate_before = now - keep_aggregate_days * DAY_S
    with store.transaction():
        store.execute("DELETE FROM windows WHERE time < ?", (raw_before,))
        store.execute("DELETE FROM statuses WHERE time < ?", (raw_before,))
        store.execute("DELETE FROM gaps WHERE time < ?", (aggregate_before,))
        store.execute("DELETE FROM minutes WHERE minute < ?", (aggregate_before,))
        store.execute("DELETE FROM minute_labels WHERE minute < ?", (aggregate_before,))


def delete_history(store: Store, device: str, before: float, since: float | None = None) -> dict[str, int]:
    """Delete a room's history in [since, before): raw windows, statuses, gaps, sessions and the
    aggregates of every minute that starts before `before` (so nothing from the range survives).
    Returns rows deleted per table."""
    lo = float("-inf") if since is None else since
    minute_lo = float("-inf") if since is None else int(since // MINUTE_S) * MINUTE_S
    counts: dict[str, int] = {}
    with store.transaction():
        for table, column, start in (("windows", "time", lo), ("statuses", "time", lo), ("gaps", "time", lo),
                                     ("minutes", "minute", minute_lo), ("minute_labels", "minute", minute_lo)):
            counts[table] = store.query(f"SELECT COUNT(*) FROM {table} WHERE device = ? AND {column} >= ? AND "
                                        f"{column} < ?", (device, start, before))[0][0]
            store.execute(f"DELETE FROM {table} WHERE device = ? AND {column} >= ? AND {column} < ?",
                          (device, start, before))
        # A session goes once none of its windows or statuses is left.
        store.execute("DELETE FROM sessions WHERE device = ? AND started_at < ? AND NOT EXISTS "
                      "(SELECT 1 FROM windows w WHERE w.device = sessions.device AND w.session = sessions.session) "
                      "AND NOT EXISTS (SELECT 1 FROM statuses s WHERE s.device = sessions.device "
                      "AND s.session = sessions.session)", (device, before))
    return counts


def load_tracker(store: Store) -> Tracker:
    """Each device's latest session and last seq per topic, so that a restarted recorder carries on."""
    tracker = Tracker()
    for device, session in store.query("SELECT device, MAX(session) FROM sessions GROUP BY device"):
        tracker.sessions[device] = int(session)
        for topic, table in ((EMOTION, "windows"), (STATUS, "statuses")):
            seq = store.query(f"SELECT MAX(seq) FROM {table} WHERE device = ? AND session = ?", (device, session))[0][0]
            if seq is not None:
                tracker.positions[(device, topic)] = Position(int(session), int(seq))
    return tracker
