"""The reads `serd history` and the dashboard share: raw windows, aggregates at any step,
rooms. Aggregates are summed in SQL from the per-minute tables and turned into means here."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from collections.abc import Iterator
from typing import Any

from serd.record.rows import WINDOW_COLUMNS
from serd.record.store import Store
from serd.record.when import utc_offset_s
from serd.record.writes import HOUR_S, MINUTE_S


@dataclass(frozen=True)
class Range:
    since: float
    until: float
    device: str | None = None

    def where(self, column: str) -> tuple[str, list[Any]]:
        sql = f"{column} >= ? AND {column} < ?"
        params: list[Any] = [self.since, self.until]
        if self.device is not None:
            sql += " AND device = ?"
            params.append(self.device)
        return sql, params


def rooms(store: Store) -> list[dict[str, Any]]:
    """Every room with history, and the hours it spans (aggregates outlive raw windows)."""
    rows = store.query("SELECT device, MIN(hour), MAX(hour) FROM hours GROUP BY device ORDER BY device")
    return [{"device": d, "first": float(first), "last": float(last) + HOUR_S} for d, first, last in rows]


def room_names(store: Store) -> list[str]:
    """Every room the database knows: with raw history (sessions) or summaries (hours)."""
    return [d for (d,) in store.query("SELECT device FROM sessions UNION SELECT device FROM hours ORDER BY 1")]


def iter_windows(store: Store, span: Range) -> Iterator[dict[str, Any]]:
    """Raw windows in the range, by room then time, with their probabilities as dicts, streamed."""
    where, params = span.where("time")
    for row in store.stream(f"SELECT {', '.join(WINDOW_COLUMNS)} FROM windows WHERE {where} ORDER BY device, time",
                            params):
        record = dict(zip(WINDOW_COLUMNS, row))
        record["speech"] = bool(record["speech"])
        record["probs"] = json.loads(record["probs"]) if record["probs"] else None
        record["smoothed"] = json.loads(record["smoothed"]) if record["smoothed"] else None
        yield record


def windows(store: Store, span: Range) -> list[dict[str, Any]]:
    return list(iter_windows(store, span))


def labels(store: Store, span: Range) -> list[str]:
    """The labels of the probabilities in the range (the CSV's columns), from the hourly summaries."""
    where, params = Range(int(span.since // HOUR_S) * HOUR_S, span.until, span.device).where("hour")
    found: dict[str, None] = {}
    for (prob_sums,) in store.query(f"SELECT DISTINCT prob_sums FROM hours WHERE {where}", params):
        found.update(dict.fromkeys(json.loads(prob_sums)))
    return list(found)


def gaps(store: Store, span: Range, limit: int | None = None) -> list[dict[str, Any]]:
    """The gaps in the range, by room and time; the first `limit` of them if given."""
    where, params = span.where("time")
    cap = "" if limit is None else f" LIMIT {int(limit)}"
    rows = store.query(f"SELECT device, session, topic, reason, after_seq, missing, time FROM gaps WHERE {where} "
                       f"ORDER BY device, time{cap}", params)
    keys = ("device", "session", "topic", "reason", "after_seq", "missing", "time")
    return [dict(zip(keys, row)) for row in rows]


def aggregates(store: Store, span: Range, every_s: int) -> list[dict[str, Any]]:
    """`iter_aggregates` as a list, for answers known to be small (the dashboard bounds its steps)."""
    return list(iter_aggregates(store, span, every_s))


def iter_aggregates(store: Store, span: Range, every_s: int) -> Iterator[dict[str, Any]]:
    """Per room and step (`every_s`: 60, 3600 or 86400; steps start at local midnight): recorded
    and speech seconds and their ratio, mean level, mean arousal and mean probabilities (with
    their top label) of the speech windows. Minutes come from the per-minute table, hours and
    days from the per-hour one (a day in a zone with a half-hour offset then starts 30 min off).
    Streamed: rows come by room and time, so a step is complete when the next one starts, and a
    week of twenty rooms per minute (201,600 steps) is never held in memory."""
    period, period_s = ("minute", MINUTE_S) if every_s < HOUR_S else ("hour", HOUR_S)
    # Shift by the local UTC offset at the range's start so that hours and days are local.
    offset = utc_offset_s(span.since)
    lo = int(span.since // period_s) * period_s
    where, params = Range(lo, span.until, span.device).where(period)
    rows = store.stream(
        f"SELECT device, ({period} + ?) / ?, windows, speech_windows, recorded_s, speech_s, level_sum, arousal_sum, "
        f"arousal_windows, prob_sums FROM {period}s WHERE {where} ORDER BY device, {period}",
        [offset, every_s, *params])
    # Summed here, not in SQL: the label sums are JSON.
    key: tuple[str, int] | None = None
    bucket: list = []
    for device, b, *values, prob_sums in rows:
        if (device, int(b)) != key:
            if key is not None:
                yield _step(key, bucket, every_s, offset)
            key, bucket = (device, int(b)), [0, 0, 0.0, 0.0, 0.0, 0.0, 0, {}]
        for i, value in enumerate(values):
            bucket[i] += value
        for label, total in json.loads(prob_sums).items():
            bucket[7][label] = bucket[7].get(label, 0.0) + total
    if key is not None:
        yield _step(key, bucket, every_s, offset)


def _step(key: tuple[str, int], bucket: list, every_s: int, offset: int) -> dict[str, Any]:
    (device, b), (n, speech, recorded_s, speech_s, level_sum, arousal_sum, arousal_n, label_sums) = key, bucket
    probs = {label: _ratio(total, speech, 5) for label, total in label_sums.items()} if speech else None
    probs = {label: p for label, p in probs.items() if p is not None} if probs else None
    return {
        "device": device,
        "start": b * every_s - offset,
        "recorded_s": _ratio(recorded_s, 1, 1),
        "speech_s": _ratio(speech_s, 1, 1),
        "speech_fraction": _ratio(speech_s, recorded_s, 4) if recorded_s else _ratio(speech, n, 4),
        "windows": n,
        "speech_windows": speech,
        "level_dbfs": _ratio(level_sum, n, 2),
        "arousal": _ratio(arousal_sum, arousal_n, 4),
        "probs": probs or None,
        "label": max(probs, key=probs.__getitem__) if probs else None,
    }


def _ratio(total: float, count: float, digits: int) -> float | None:
    """total / count rounded; None when there is none or it is not finite (a sum an older serd let
    overflow: decode bounds every value since issue 19, but a stored infinity stays)."""
    if not count:
        return None
    value = total / count
    return round(value, digits) if math.isfinite(value) else None
