"""The reads `serd history` and the dashboard share: raw windows, aggregates at any step,
rooms. Aggregates are summed in SQL from the per-minute tables and turned into means here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from serd.record.rows import WINDOW_COLUMNS
from serd.record.store import Store
from serd.record.when import utc_offset_s
from serd.record.writes import MINUTE_S


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
    """Every room with history: first and last minute recorded (aggregates outlive raw windows)."""
    rows = store.query("SELECT device, MIN(minute), MAX(minute) FROM minutes GROUP BY device ORDER BY device")
    return [{"device": d, "first": float(first), "last": float(last) + MINUTE_S} for d, first, last in rows]


def windows(store: Store, span: Range) -> list[dict[str, Any]]:
    """Raw windows in the range, by room then time, with their probabilities as dicts."""
    where, params = span.where("time")
    rows = store.query(f"SELECT {', '.join(WINDOW_COLUMNS)} FROM windows WHERE {where} ORDER BY device, time", params)
    out = []
    for row in rows:
        record = dict(zip(WINDOW_COLUMNS, row))
        record["speech"] = bool(record["speech"])
        record["probs"] = json.loads(record["probs"]) if record["probs"] else None
        record["smoothed"] = json.loads(record["smoothed"]) if record["smoothed"] else None
        out.append(record)
    return out


def gaps(store: Store, span: Range) -> list[dict[str, Any]]:
    where, params = span.where("time")
    rows = store.query(f"SELECT device, session, topic, reason, after_seq, missing, time FROM gaps WHERE {where} "
                       "ORDER BY device, time", params)
    keys = ("device", "session", "topic", "reason", "after_seq", "missing", "time")
    return [dict(zip(keys, row)) for row in rows]


def aggregates(store: Store, span: Range, every_s: int) -> list[dict[str, Any]]:
    """Per room and step (`every_s`: 60, 3600 or 86400; steps start at local midnight):
    recorded and speech seconds, speech fraction, mean level, mean arousal of speech windows,
    mean probabilities of speech windows by label and their top label."""
    # Shift by the local UTC offset at the range's start so that hours and days are local.
    offset = utc_offset_s(span.since)
    lo = int(span.since // MINUTE_S) * MINUTE_S
    where, params = Range(lo, span.until, span.device).where("minute")
    bucket = "(minute + ?) / ?"
    totals = store.query(
        f"SELECT device, {bucket} AS b, COUNT(*), SUM(windows), SUM(speech_windows), SUM(level_sum), "
        "SUM(arousal_sum), SUM(arousal_windows), "
        "SUM(CAST(speech_windows AS DOUBLE PRECISION) / windows) "
        f"FROM minutes WHERE {where} GROUP BY device, b ORDER BY device, b", [offset, every_s, *params])
    sums: dict[tuple[str, int], dict[str, float]] = {}
    for device, b, label, total in store.query(
            f"SELECT device, {bucket} AS b, label, SUM(prob_sum) FROM minute_labels WHERE {where} "
            "GROUP BY device, b, label", [offset, every_s, *params]):
        sums.setdefault((device, int(b)), {})[label] = float(total)
    out = []
    for device, b, minutes, n, speech, level_sum, arousal_sum, arousal_n, speech_minutes in totals:
        # PostgreSQL sums BIGINTs as NUMERIC (Decimal): plain numbers from here on.
        minutes, n, speech, arousal_n = int(minutes), int(n), int(speech), int(arousal_n)
        probs = None
        label_sums = sums.get((device, int(b)))
        if speech and label_sums:
            probs = {label: round(total / speech, 5) for label, total in label_sums.items()}
        out.append({
            "device": device,
            "start": int(b) * every_s - offset,
            "recorded_s": int(minutes) * MINUTE_S,
            "speech_s": round(float(speech_minutes) * MINUTE_S, 1),
            "windows": int(n),
            "speech_windows": int(speech),
            "speech_fraction": round(float(speech_minutes) / int(minutes), 4),
            "level_dbfs": round(float(level_sum) / int(n), 2),
            "arousal": round(float(arousal_sum) / int(arousal_n), 4) if arousal_n else None,
            "probs": probs,
            "label": max(probs, key=probs.__getitem__) if probs else None,
        })
    return out

