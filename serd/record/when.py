"""Times on the command line: ISO dates and times (local unless they say otherwise),
`now`, `today`, `yesterday`, and spans back from now (`90s`, `30m`, `2h`, `7d`, `2w`)."""

from __future__ import annotations

import datetime as dt
import re

SPAN = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
EVERY = {"1m": 60, "1h": 3600, "1d": 86400}
"""Aggregate steps `--every` accepts, in seconds."""
MAX_SPAN_DAYS = 36500
"""The longest span back from now (100 years, the longest `record.keep_aggregate_days`): a longer one
ends before 1970, and `1e31s` overflowed SQLite's integers further on."""


def local_midnight(t: float) -> float:
    day = dt.datetime.fromtimestamp(t).astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


def parse_when(text: str, now: float) -> float:
    """Unix seconds for a --since/--until/--before value; ValueError saying what is accepted."""
    value = text.strip().lower()
    if value == "now":
        return now
    if value == "today":
        return local_midnight(now)
    if value == "yesterday":
        return local_midnight(local_midnight(now) - 3600)
    span = SPAN.match(value)
    if span:
        seconds = float(span.group(1)) * UNIT_S[span.group(2)]
        if not seconds <= MAX_SPAN_DAYS * UNIT_S["d"]:
            raise ValueError(f"{text[:40]!r}: a span back from now of at most {MAX_SPAN_DAYS} days (100 years)")
        return now - seconds
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text[:40]!r}: expected an ISO date or time (2026-11-30, 2026-11-30T08:00), "
                         "now, today, yesterday, or a span back from now (90s, 30m, 2h, 7d, 2w)") from None
    try:
        if moment.tzinfo is None:
            moment = moment.astimezone()  # a time without a zone is local time
        seconds = moment.timestamp()
        dt.datetime.fromtimestamp(seconds).astimezone()  # what every later step does with it (a local date)
    except (ValueError, OverflowError, OSError):  # 0001-01-01 local east of UTC: "year 0 is out of range"
        raise ValueError(f"{text[:40]!r}: out of range (a local date from year 1 to 9999)") from None
    return seconds


def utc_offset_s(t: float) -> int:
    """The local time zone's offset from UTC at `t`, in seconds (days and hours start at local midnight)."""
    offset = dt.datetime.fromtimestamp(t).astimezone().utcoffset()
    return int(offset.total_seconds()) if offset else 0


def iso_local(t: float) -> str:
    return dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")
