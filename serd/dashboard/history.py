"""The dashboard's history endpoints (`serd dashboard --db URL`): JSON read from the database
`serd record` writes, through the same queries as `serd history`.

- `/api/history/rooms`: the rooms with history;
- `/api/history/room?device=D&day=YYYY-MM-DD&every=1m|1h` (one local day) or
  `...&days=7&every=1h` (the last N days): per-step speech, emotions, arousal, level; at most
  MAX_STEPS steps (a week per minute) and MAX_GAPS gaps, so an answer's size is bounded;
- `/api/history/table?days=7`: rooms x days (speech time, top emotion, mean arousal).

One connection, opened on first use and again after a failure, used under a lock (a
connection is not thread-safe and the HTTP server runs a thread per request).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import urllib.parse
from http import HTTPStatus
from typing import Any

from serd.dashboard.settings import DashboardError
from serd.messages import MAX_DEVICE_CHARS
from serd.record import queries
from serd.record.store import Store, StoreError, open_store
from serd.record.when import EVERY, local_midnight

_LOGGER = logging.getLogger(__name__)

PREFIX = "/api/history/"
MAX_DAYS = 31
MAX_STEPS = 7 * 24 * 60 + 60
"""Steps one /api/history/room answer holds at most (a week per minute, and a DST hour; 31 days per hour): it is
built in memory, so its size is bounded (a few MB), whatever the request."""
MAX_GAPS = 1000
"""Gaps listed in one answer at most (`gaps_truncated` says when there were more)."""
DAY_S = 86400


class HistoryError(ValueError):
    """A bad request: answered 400 with this text."""


class History:
    def __init__(self, url: str) -> None:
        self.url = url
        self._store: Store | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        """At start-up: the database exists and this serd can read it; DashboardError otherwise."""
        with self._lock:
            try:
                self._open()
            except StoreError as exc:
                raise DashboardError(f"--db: {exc}") from None

    def _open(self) -> Store:
        if self._store is None:
            store = open_store(self.url)
            try:
                store.check_schema()
            except StoreError:
                store.close()
                raise
            self._store = store
        return self._store

    def close(self) -> None:
        with self._lock:
            self.close_quietly()

    def answer(self, path: str, query: str) -> tuple[int, Any]:
        """(HTTP status, JSON body) for a GET under /api/history/."""
        params = {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}
        route = {"rooms": self._rooms, "room": self._room, "table": self._table}.get(path[len(PREFIX):])
        if route is None:
            return HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {path}"}
        try:
            with self._lock:
                return HTTPStatus.OK, route(self._open(), params, time.time())
        except HistoryError as exc:
            return HTTPStatus.BAD_REQUEST, {"error": str(exc)}
        except StoreError as exc:
            _LOGGER.warning("history: %s", exc)
            self.close_quietly()
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"history database unavailable: {exc}"}

    def close_quietly(self) -> None:
        if self._store is not None:
            try:
                self._store.close()
            except Exception:  # a broken connection may fail to close; it is dropped either way
                pass
            self._store = None

    # -- routes ------------------------------------------------------------------------------------
    def _rooms(self, store: Store, params: dict[str, str], now: float) -> dict[str, Any]:
        return {"rooms": queries.rooms(store), "now": now, "today": local_midnight(now)}

    def _room(self, store: Store, params: dict[str, str], now: float) -> dict[str, Any]:
        device = _device(params.get("device"))
        every = params.get("every", "1m")
        if every not in ("1m", "1h"):
            raise HistoryError(f"every: expected 1m or 1h, got {every!r}")
        if "day" in params:
            since, until = _day(params["day"])
        else:
            days = _days(params.get("days", "7"))
            until = local_midnight(now) + DAY_S
            since = local_midnight(until - days * DAY_S + 3 * 3600)
        if (until - since) / EVERY[every] > MAX_STEPS:
            raise HistoryError(f"every={every} over {round((until - since) / DAY_S)} days is more than {MAX_STEPS} "
                               "steps: ask for fewer days, or every=1h")
        buckets = queries.aggregates(store, queries.Range(since, until, device), EVERY[every])
        gaps = queries.gaps(store, queries.Range(since, until, device), MAX_GAPS + 1)
        return {"device": device, "since": since, "until": until, "every_s": EVERY[every], "buckets": buckets,
                "gaps": gaps[:MAX_GAPS], "gaps_truncated": len(gaps) > MAX_GAPS}

    def _table(self, store: Store, params: dict[str, str], now: float) -> dict[str, Any]:
        days = _days(params.get("days", "7"))
        until = local_midnight(now) + DAY_S
        since = local_midnight(until - days * DAY_S + 3 * 3600)
        starts = []
        day = since
        while day < until:
            starts.append(day)
            day = local_midnight(day + DAY_S + 3 * 3600)
        cells: dict[str, dict[float, dict[str, Any]]] = {}
        for bucket in queries.aggregates(store, queries.Range(since, until), DAY_S):
            cells.setdefault(bucket["device"], {})[bucket["start"]] = bucket
        rows = [{"device": device, "days": [_cell(by_day, start) for start in starts]}
                for device, by_day in sorted(cells.items())]
        return {"days": starts, "rows": rows}


def _cell(by_day: dict[float, dict[str, Any]], start: float) -> dict[str, Any] | None:
    # Days are keyed by local midnight; a bucket's start may differ by a DST hour.
    for key, bucket in by_day.items():
        if abs(key - start) <= 3600:
            return {k: bucket[k] for k in ("speech_s", "recorded_s", "label", "arousal", "speech_fraction")}
    return None


def _device(value: str | None) -> str:
    if not value or len(value) > MAX_DEVICE_CHARS:
        raise HistoryError(f"device: expected a room name of 1-{MAX_DEVICE_CHARS} characters")
    return value


def _day(value: str) -> tuple[float, float]:
    """The local day's start and end (the next midnight, across a DST change too)."""
    try:
        since = dt.datetime.combine(dt.date.fromisoformat(value), dt.time()).astimezone().timestamp()
        return since, local_midnight(since + DAY_S + 3 * 3600)
    except (ValueError, OverflowError, OSError):  # 9999-12-31 has no next midnight: "year 10000 is out of range"
        raise HistoryError(f"day: expected a date YYYY-MM-DD from 1970-01-01 to 9999-12-30, got {value[:20]!r}") from None


def _days(value: str) -> int:
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_DAYS:
        raise HistoryError(f"days: expected 1..{MAX_DAYS}, got {value[:20]!r}")
    return int(value)
