"""`serd history`: windows or aggregates out of the history database as a table, CSV or JSON lines,
streamed (a week of twenty rooms is never held in memory), and `--delete ROOM --before WHEN` to
remove a room's history (`--dry-run` first; it asks on a terminal, and needs `--yes` elsewhere)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Iterable
from typing import Any

from serd.record.store import DB_FILE_NAME, SERVICE_STATE_DIR, describe_url
from serd.record.when import EVERY, iso_local, parse_when
from serd.subcommand import add_command

WINDOW_FIELDS = ("device", "session", "seq", "time", "captured_at", "start_s", "end_s", "speech", "level_dbfs",
                 "label", "confidence", "model", "arousal", "smoothed_arousal")
ROOMS_LISTED = 10
"""Rooms named in an unknown-room error, at most."""
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
         "serd history --delete room-101 --before 2026-11-01 --dry-run",
         "serd history --delete room-101 --before 2026-11-01 --yes"),
    )
    p.add_argument("room", nargs="?", default=None, help="device id (default: every room)")
    p.add_argument("--db", default=None, metavar="URL",
                   help="history database (default: as serd record; when this user has none, the one of "
                        f"serd-record.service, {SERVICE_STATE_DIR / DB_FILE_NAME}, if it exists)")
    p.add_argument("--since", default=None, metavar="WHEN",
                   help="ISO date/time, today, yesterday, or a span back like 2h, 7d (default: today)")
    p.add_argument("--until", default="now", metavar="WHEN", help="end of the range (default: now)")
    p.add_argument("--every", choices=sorted(EVERY), default=None,
                   help="aggregates per minute, hour or day (kept a year) instead of raw windows (kept --keep-days)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="CSV with a header row (probabilities one column each)")
    out.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--delete", nargs="?", const="", default=None, metavar="ROOM",
                   help="delete ROOM's history (ROOM here or as the first argument) before --before")
    p.add_argument("--before", default=None, metavar="WHEN",
                   help="with --delete: delete what is older than this (with --since: only from then on)")
    p.add_argument("--dry-run", action="store_true", help="with --delete: say what would be deleted, delete nothing")
    p.add_argument("--yes", action="store_true",
                   help="with --delete: do not ask (needed when stdin is not a terminal)")
    p.set_defaults(func=history_command)


def history_command(args: argparse.Namespace) -> int:
    from serd.record import queries
    from serd.record.store import StoreError, default_read_url, open_store

    now = time.time()
    try:
        since = parse_when(args.since or "today", now)
        until = parse_when(args.until, now)
        before = parse_when(args.before, now) if args.before is not None else None
    except ValueError as exc:
        print(f"serd: {exc}", file=sys.stderr)
        return 2
    problem = _check_delete(args, since, before) if args.delete is not None else (
        "--dry-run and --yes go with --delete" if args.dry_run or args.yes else
        _reversed("--since", since, "--until", until) if args.since is not None else None)
    if problem:
        print(f"serd: {problem}", file=sys.stderr)
        return 2
    url, fallback = (args.db, None) if args.db else default_read_url()
    if fallback:
        print(f"serd: {fallback}", file=sys.stderr)
    try:
        store = open_store(url)
    except StoreError as exc:
        print(f"serd: {exc}", file=sys.stderr)
        return 1
    try:
        store.check_schema()
        if args.delete is not None:
            return _delete(store, args, before, since if args.since is not None else None)
        if args.room is not None and args.room not in queries.room_names(store):
            print(f"serd: {_unknown_room(store, args.room)}", file=sys.stderr)
            return 2
        span = queries.Range(since, until, args.room)
        labels = queries.labels(store, span)
        if args.every:
            rows = queries.iter_aggregates(store, span, EVERY[args.every])
            _print(rows, labels, AGGREGATE_FIELDS, args, time_field="start")
        else:
            _print(queries.iter_windows(store, span), labels, WINDOW_FIELDS, args, time_field="time", smoothed=True)
    except StoreError as exc:
        print(f"serd: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def _check_delete(args: argparse.Namespace, since: float, before: float | None) -> str | None:
    """What is wrong with a --delete command line (before the database is opened), or None."""
    if args.delete and args.room and args.delete != args.room:
        return f"--delete {args.delete} and {args.room}: which room? (one room at a time)"
    args.delete = args.delete or args.room
    if not args.delete:
        return "--delete needs a ROOM (serd history --delete ROOM --before WHEN)"
    if before is None:
        return "--delete ROOM needs --before WHEN (e.g. --before now for all of it)"
    return _reversed("--since", since, "--before", before) if args.since is not None else None


def _reversed(start_flag: str, start: float, end_flag: str, end: float) -> str | None:
    if start < end:
        return None
    return (f"{start_flag} {iso_local(start)[:19]} is not before {end_flag} {iso_local(end)[:19]}: "
            "an empty range (the later time goes last)")


def _unknown_room(store, room: str) -> str:
    from serd.record import queries

    known = queries.room_names(store)
    listed = ", ".join(known[:ROOMS_LISTED]) + (f" and {len(known) - ROOMS_LISTED} more" if len(known) > ROOMS_LISTED
                                                 else "")
    return f"no room {room!r} in {describe_url(store.url)} (rooms: {listed or 'none yet'})"


def _delete(store, args: argparse.Namespace, before: float, since: float | None) -> int:
    from serd.record import queries
    from serd.record.writes import count_history, delete_history

    room = args.delete
    if room not in queries.room_names(store):
        print(f"serd: {_unknown_room(store, room)}", file=sys.stderr)
        return 2
    span = f"{room}, {'from ' + iso_local(since)[:19] + ' ' if since is not None else ''}to {iso_local(before)[:19]}"
    counts = count_history(store, room, before, since)
    what = ", ".join(f"{n} {table}" for table, n in counts.items())
    if not any(counts.values()):
        print(f"nothing to delete: {span} holds no history")
        return 0
    if args.dry_run:
        print(f"would delete ({span}): {what}")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            print("serd: --delete asks before deleting, and stdin is not a terminal: add --yes "
                  "(--dry-run shows what would go)", file=sys.stderr)
            return 2
        print(f"this deletes ({span}): {what}")
        try:
            answer = input("delete? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    counts = delete_history(store, room, before, since)
    freed = store.reclaim_space()
    print(f"deleted ({span}): " + ", ".join(f"{n} {table}" for table, n in counts.items())
          + (f"; {freed / 1e6:.1f} MB of disk given back" if freed else ""))
    return 0


def _print(rows: Iterable[dict[str, Any]], labels: list[str], fields: tuple[str, ...], args: argparse.Namespace,
           time_field: str, smoothed: bool = False) -> None:
    """Rows (streamed) as JSON lines, CSV with a column per label, or a line each for a terminal."""
    if args.json:
        for row in rows:
            row[f"{time_field}_iso"] = iso_local(row[time_field])
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
