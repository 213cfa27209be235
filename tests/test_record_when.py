"""`--since` / `--until` / `--before` values: ISO times, now/today/yesterday, spans back from now."""

from __future__ import annotations

import datetime as dt

import pytest

from serd.record.when import local_midnight, parse_when

NOW = dt.datetime(2026, 11, 30, 14, 30, 15).astimezone().timestamp()


def local(*args) -> float:
    return dt.datetime(*args).astimezone().timestamp()


@pytest.mark.parametrize("text, expected", [
    ("now", NOW),
    ("today", local(2026, 11, 30)),
    ("Yesterday", local(2026, 11, 29)),
    ("2h", NOW - 7200),
    ("90s", NOW - 90),
    ("30m", NOW - 1800),
    ("7d", NOW - 7 * 86400),
    ("2w", NOW - 14 * 86400),
    ("1.5h", NOW - 5400),
    ("2026-11-01", local(2026, 11, 1)),
    ("2026-11-30T08:00", local(2026, 11, 30, 8, 0)),
    ("2026-11-30 08:00:30", local(2026, 11, 30, 8, 0, 30)),
    ("2026-11-30T08:00:00+00:00", dt.datetime(2026, 11, 30, 8, tzinfo=dt.timezone.utc).timestamp()),
])
def test_accepted_forms(text, expected):
    assert parse_when(text, NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "last tuesday", "2h ago", "-2h", "2026-13-01", "5y", "1e3s"])
def test_anything_else_says_what_is_accepted(text):
    with pytest.raises(ValueError, match="expected an ISO date or time"):
        parse_when(text, NOW)


def test_local_midnight_is_idempotent_and_local():
    midnight = local_midnight(NOW)
    assert local_midnight(midnight) == midnight
    assert dt.datetime.fromtimestamp(midnight).hour == 0


@pytest.mark.parametrize("text, reason", [
    ("10000000000000000000000000000000s", "at most 36500 days"),  # 1e31 s overflowed SQLite's integers (issue 19)
    ("36501d", "at most 36500 days"),
    ("0001-01-01T00:00:00+14:00", "out of range"),
    ("9999-12-31T23:59:59-14:00", "out of range"),
])
def test_times_beyond_what_later_steps_can_hold_are_refused(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_when(text, NOW)
    assert parse_when("36500d", NOW) == pytest.approx(NOW - 36500 * 86400)
