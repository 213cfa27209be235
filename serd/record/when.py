"""Times on the command line: ISO dates and times (local unless they say otherwise),
`now`, `today`, `yesterday`, and spans back from now (`90s`, `30m`, `2h`, `7d`, `2w`)."""

from __future__ import annotations

import datetime as dt
import re

SPAN = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
EVERY = {"1m": 60, "1h": 3600, "1d": 86400}
"""Aggregate steps `--every` accepts, in seconds."""


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
        return now - float(span.group(1)) * UNIT_S[span.group(2)]
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r}: expected an ISO date or time (2026-11-30, 2026-11-30T08:00), "
                         "now, today, yesterday, or a span back from now (90s, 30m, 2h, 7d, 2w)") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a time without a zone is local time
    return moment.timestamp()


def utc_offset_s(t: float) -> int:
    """The local time zone's offset from UTC at `t`, in seconds (days and hours start at local midnight)."""
    offset = dt.datetime.fromtimestamp(t).astimezone().utcoffset()
    return int(offset.total_seconds()) if offset else 0


def iso_local(t: float) -> str:
    return dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")
