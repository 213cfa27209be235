"""The reads `serd history` and the dashboard share: raw windows, aggregates at any step,
rooms. Aggregates are summed in SQL from the per-minute tables and turned into means here."""

from __future__ import annotations

import json
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


def gaps(store: Store, span: Range) -> list[dict[str, Any]]:
    where, params = span.where("time")
    rows = store.query(f"SELECT device, session, topic, reason, after_seq, missing, time FROM gaps WHERE {where} "
                       "ORDER BY device, time", params)
    keys = ("device", "session", "topic", "reason", "after_seq", "missing", "time")
    return [dict(zip(keys, row)) for row in rows]


def aggregates(store: Store, span: Range, every_s: int) -> list[dict[str, Any]]:
    """Per room and step (`every_s`: 60, 3600 or 86400; steps start at local midnight): recorded
    and speech seconds and their ratio, mean level, mean arousal and mean probabilities (with
    their top label) of the speech windows. Minutes come from the per-minute table, hours and
    days from the per-hour one (a day in a zone with a half-hour offset then starts 30 min off)."""
    period, period_s = ("minute", MINUTE_S) if every_s < HOUR_S else ("hour", HOUR_S)
    # Shift by the local UTC offset at the range's start so that hours and days are local.
    offset = utc_offset_s(span.since)
    lo = int(span.since // period_s) * period_s
    where, params = Range(lo, span.until, span.device).where(period)
    rows = store.query(
        f"SELECT device, ({period} + ?) / ?, windows, speech_windows, recorded_s, speech_s, level_sum, arousal_sum, "
        f"arousal_windows, prob_sums FROM {period}s WHERE {where} ORDER BY device, {period}",
        [offset, every_s, *params])
    # Summed here, not in SQL: the label sums are JSON, and a week of twenty rooms is 3,360 hour rows.
    buckets: dict[tuple[str, int], list] = {}
    for device, b, *values, prob_sums in rows:
        bucket = buckets.setdefault((device, int(b)), [0, 0, 0.0, 0.0, 0.0, 0.0, 0, {}])
        for i, value in enumerate(values):
            bucket[i] += value
        for label, total in json.loads(prob_sums).items():
            bucket[7][label] = bucket[7].get(label, 0.0) + total
    out = []
    for (device, b), (n, speech, recorded_s, speech_s, level_sum, arousal_sum, arousal_n, label_sums) in buckets.items():
        probs = {label: round(total / speech, 5) for label, total in label_sums.items()} if speech else None
        out.append({
            "device": device,
            "start": b * every_s - offset,
            "recorded_s": round(recorded_s, 1),
            "speech_s": round(speech_s, 1),
            "speech_fraction": round(speech_s / recorded_s if recorded_s else speech / n, 4),
            "windows": n,
            "speech_windows": speech,
            "level_dbfs": round(level_sum / n, 2),
            "arousal": round(arousal_sum / arousal_n, 4) if arousal_n else None,
            "probs": probs or None,
            "label": max(probs, key=probs.__getitem__) if probs else None,
        })
    return out
