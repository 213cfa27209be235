"""`serd record`: settings from the `record:` section and flags, then store, migrate, record."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from serd import config
from serd.config import EX_CONFIG, ConfigError, RecordSettings, Settings
from serd.subcommand import add_command

_LOGGER = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    p = add_command(
        subparsers, "record", "store what daemons publish (history for serd history and the dashboard)",
        "Subscribe to one or more serd daemons and keep every message they publish in a SQLite file (the "
        "default, in the state directory) or a PostgreSQL database: raw windows for --keep-days, per-minute and "
        "per-hour summaries for a year. Settings come from the record: section of the config file; flags win.",
        ("serd record                                 # tcp://127.0.0.1:5556 into the state directory",
         "serd record --connect tcp://pi-room1:5556 --connect tcp://pi-room2:5556 --keep-days 7",
         "serd record --config /etc/serd/config.yaml --db postgresql://serd@dbhost/serd"),
    )
    p.add_argument("--config", type=Path, default=None, help="YAML config file: its record: section")
    p.add_argument("--connect", action="append", default=None, metavar="ADDR",
                   help="publisher endpoint (repeatable; default tcp://127.0.0.1:5556)")
    p.add_argument("--db", default=None, metavar="URL",
                   help="sqlite:////ABS/PATH, sqlite:///REL/PATH or postgresql://USER@HOST/DB "
                        "(default: history.sqlite3 in the state directory)")
    p.add_argument("--keep-days", type=float, default=None, metavar="N", help="days raw windows are kept (default 14)")
    p.add_argument("--server-key", default=None, help="CURVE: the publishers' public key file")
    p.add_argument("--client-key", default=None, help="CURVE: this recorder's secret key file")
    p.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help="serve Prometheus /metrics there (needs serd[metrics]; default: metrics.record_bind, off)")
    p.set_defaults(func=record_command)


def load_settings(args: argparse.Namespace) -> Settings:
    changes: dict[str, Any] = {}
    for flag, key in (("connect", "connect"), ("db", "db"), ("keep_days", "keep_days"),
                      ("server_key", "server_key"), ("client_key", "client_key")):
        value = getattr(args, flag)
        if value is not None:
            changes[f"record.{key}"] = tuple(value) if isinstance(value, list) else value
    if getattr(args, "metrics", None) is not None:
        changes["metrics.record_bind"] = args.metrics
    return config.override(config.load(args.config), changes)


def load_record_settings(args: argparse.Namespace) -> RecordSettings:
    return load_settings(args).record


def record_command(args: argparse.Namespace) -> int:
    from serd.record.journal import Journal, journal_path
    from serd.record.recorder import Recorder
    from serd.record.store import StoreError, default_state_dir, default_url, open_store
    from serd.record.writer import WriterSettings
    from serd.subcommand import import_extra

    try:
        full = load_settings(args)
        metrics = None if full.metrics.record_bind is None else import_extra("serd.metrics", "metrics",
                                                                              "metrics.record_bind")
    except (ConfigError, ImportError) as exc:
        print(f"serd: config error: {exc}" if isinstance(exc, ConfigError) else f"serd: {exc}", file=sys.stderr)
        return EX_CONFIG
    settings = full.record
    url = settings.db or default_url()
    try:
        store = open_store(url, create=True)
    except StoreError as exc:
        print(f"serd: {exc}", file=sys.stderr)
        return 1
    server = None
    try:
        store.migrate()
        recorder = Recorder(
            store, list(settings.connect),
            WriterSettings(flush_s=settings.flush_s, batch_rows=settings.batch_rows, queue_rows=settings.queue_rows,
                           keep_days=settings.keep_days, keep_aggregate_days=settings.keep_aggregate_days),
            settings.server_key and Path(settings.server_key), settings.client_key and Path(settings.client_key),
            journal=Journal(journal_path(default_state_dir(), store.identity)))
        if metrics is not None:
            try:
                server = metrics.serve(metrics.RecorderMetrics(recorder).registry, full.metrics.record_bind,
                                       "metrics.record_bind")
            except metrics.MetricsError as exc:  # address in use: a runtime failure, as for the daemon
                print(f"serd: {exc}", file=sys.stderr)
                return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, recorder.request_stop)
        code = recorder.run()
        outcome = recorder.writer.outcome()
        if outcome:
            print(f"serd: {outcome}", file=sys.stderr)
        return code
    except StoreError as exc:
        print(f"serd: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:  # CURVE key files: missing, unreadable, not a key
        print(f"serd: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    finally:
        if server is not None:
            server.stop()
        store.close()
