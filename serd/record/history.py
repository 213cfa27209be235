"""`serd history`: windows or aggregates out of the history database as a table, CSV or JSON lines,
and `--delete ROOM --before WHEN` to remove a room's history."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Iterable
from typing import Any

from serd.record.when import EVERY, iso_local, parse_when
from serd.subcommand import add_command

WINDOW_FIELDS = ("device", "session", "seq", "time", "captured_at", "start_s", "end_s", "speech", "level_dbfs",
                 "label", "confidence", "model", "arousal", "smoothed_arousal")
AGGREGATE_FIELDS = ("device", "start", "recorded_s", "speech_s", "speech_fraction", "windows", "speech_windows",
                    "level_dbfs", "arousal", "label")


def add_parser(subparsers) -> None:
    p = add_command(
        subparsers, "history", "print recorded windows or summaries; delete a room's history",
        "Read what serd record stored: raw windows (one per line, or CSV with a column per probability, or JSON "
        "lines), or per-minute, per-hour or per-day summaries with --every. --delete ROOM --before WHEN removes "
        "a room's history.",
        ("serd history --since 2h",
         "serd history room-101 --since yesterday --until today --csv > room-101.csv",
         "serd history --every 1h --since 7d --json",
         "serd history --delete room-101 --before 2026-11-01"),
    )
    p.add_argument("room", nargs="?", default=None, help="device id (default: every room)")
    p.add_argument("--db", default=None, metavar="URL", help="history database (default: as serd record)")
    p.add_argument("--since", default=None, metavar="WHEN",
                   help="ISO date/time, today, yesterday, or a span back like 2h, 7d (default: today)")
    p.add_argument("--until", default="now", metavar="WHEN", help="end of the range (default: now)")
    p.add_argument("--every", choices=sorted(EVERY), default=None,
                   help="aggregates per minute, hour or day (kept a year) instead of raw windows (kept --keep-days)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="CSV with a header row (probabilities one column each)")
    out.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--delete", default=None, metavar="ROOM", help="delete ROOM's history before --before")
    p.add_argument("--before", default=None, metavar="WHEN", help="with --delete: delete what is older than this (with --since: only from then on)")
    p.set_defaults(func=history_command)


def history_command(args: argparse.Namespace) -> int:
    from serd.record import queries
    from serd.record.store import StoreError, default_url, open_store

    now = time.time()
    try:
        since = parse_when(args.since or "today", now)
        until = parse_when(args.until, now)
        before = parse_when(args.before, now) if args.before is not None else None
    except ValueError as exc:
        print(f"serd: {exc}", file=sys.stderr)
        return 2
    if args.delete is not None and before is None:
        print("serd: --delete ROOM needs --before WHEN (e.g. --before now for all of it)", file=sys.stderr)
        return 2
    try:
        store = open_store(args.db or default_url())
    except StoreError as exc:
        print(f"serd: {exc}", file=sys.stderr)
        return 1
    try:
        store.check_schema()
        if args.delete is not None:
            return _delete(store, args, before, since if args.since is not None else None)
        span = queries.Range(since, until, args.room)
        labels = queries.labels(store, span)
        if args.every:
            rows = queries.aggregates(store, span, EVERY[args.every])
            _print(rows, labels, AGGREGATE_FIELDS, args, time_field="start")
        else:
            _print(queries.iter_windows(store, span), labels, WINDOW_FIELDS, args, time_field="time", smoothed=True)
    except StoreError as exc:
        print(f"serd: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def _delete(store, args: argparse.Namespace, before: float, since: float | None) -> int:
    from serd.record.writes import delete_history

    counts = delete_history(store, args.delete, before, since)
    what = ", ".join(f"{n} {table}" for table, n in counts.items())
    print(f"deleted from {args.delete} before {iso_local(before)}: {what}")
    return 0


def _print(rows: Iterable[dict[str, Any]], labels: list[str], fields: tuple[str, ...], args: argparse.Namespace,
           time_field: str, smoothed: bool = False) -> None:
    """Rows (streamed) as JSON lines, CSV with a column per label, or a line each for a terminal."""
    if args.json:
        for row in rows:
            print(json.dumps(row, separators=(",", ":"), allow_nan=False))
        return
    if args.csv:
        prob_columns = [f"probs_{label}" for label in labels]
        if smoothed:
            prob_columns += [f"smoothed_{label}" for label in labels]
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([*fields, f"{time_field}_iso", *prob_columns])
        for row in rows:
            values = [row[f] for f in fields]
            probs = [(row["probs"] or {}).get(label) for label in labels]
            if smoothed:
                probs += [(row["smoothed"] or {}).get(label) for label in labels]
            writer.writerow([*("" if v is None else v for v in values), iso_local(row[time_field]),
                             *("" if v is None else v for v in probs)])
        return
    printed = 0
    for printed, row in enumerate(rows, 1):
        when = iso_local(row[time_field])[:19].replace("T", " ")
        if smoothed:
            what = f"{row['label']} {row['confidence']:.0%}" if row["label"] else "(no speech)"
            print(f"{row['device']:<16} {when}  seq {row['seq']:<7} {what:<16} level {row['level_dbfs']:.0f} dBFS")
        else:
            top = f"{row['label']}" if row["label"] else "(no speech)"
            arousal = f"  arousal {row['arousal']:.2f}" if row["arousal"] is not None else ""
            # None: a sum an older serd let overflow (queries.aggregates), shown as unknown
            speech = "     ?" if row["speech_fraction"] is None else f"{row['speech_fraction']:6.1%}"
            level = "?" if row["level_dbfs"] is None else f"{row['level_dbfs']:.0f}"
            print(f"{row['device']:<16} {when}  speech {speech}  {top:<10} level {level} dBFS{arousal}")
    if not printed:
        print("no history in that range (serd history --since 7d, or check --db)", file=sys.stderr)
