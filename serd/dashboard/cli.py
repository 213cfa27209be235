"""`serd dashboard`: parse, build the `Dashboard`, serve until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import os
import signal
import sys
import threading
from pathlib import Path

from serd.config import DEFAULT_MODEL, EX_INTERRUPTED
from serd.dashboard.server import (
    MAX_UPLOAD_BYTES,
    MB,
    TOKEN_ENV,
    Dashboard,
    DashboardError,
    DashboardSettings,
    is_loopback_host,
    parse_listen,
)
from serd.dashboard.state import HISTORY_S, STALE_AFTER_S
from serd.subcommand import add_command

_LOGGER = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    p = add_command(
        subparsers, "dashboard", "serve a live web page of one or more serd daemons",
        "Serve a browser page with each daemon's current emotion, a timeline and its status, and an upload "
        "panel that analyses a recording. Loopback only unless you give an address and a token.",
        ("serd dashboard                     # then open http://127.0.0.1:8080",
         "serd dashboard --connect tcp://127.0.0.1:5556 --connect ipc:///run/serd/room2.ipc",
         "SERD_DASHBOARD_TOKEN=... serd dashboard --listen 0.0.0.0:8080"),
    )
    p.add_argument("--connect", action="append", default=None, metavar="ADDR",
                   help="serd publisher endpoint (repeatable; default tcp://127.0.0.1:5556)")
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="where to serve the page (default %(default)s; port 0 picks a free one)")
    p.add_argument("--token", default=None,
                   help=f"access token; required on a non-loopback address. Prefer env {TOKEN_ENV} or --token-file: "
                        "a command line is visible to every user of the machine (/proc/PID/cmdline)")
    p.add_argument("--token-file", type=Path, default=None, metavar="FILE",
                   help="read the access token from the first line of FILE (keep it mode 600)")
    p.add_argument("--allow-insecure", action="store_true",
                   help="serve a non-loopback address without a token (anyone who can reach it sees the page)")
    p.add_argument("--trusted-proxy", default=None, metavar="ADDR",
                   help="IP address of a reverse proxy in front (e.g. 127.0.0.1): wrong tokens that come through it "
                        "are throttled per client by the last X-Forwarded-For entry, which that proxy adds")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="model for the upload panel: name or .tflite path (default %(default)s)")
    p.add_argument("--server-key", type=Path, default=None, help="CURVE: the publisher's public key file")
    p.add_argument("--client-key", type=Path, default=None, help="CURVE: this client's secret key file")
    p.add_argument("--stale-after", type=float, default=STALE_AFTER_S, metavar="SECONDS",
                   help="show a device as stale after this long without a message (default %(default)s)")
    p.add_argument("--history", type=float, default=HISTORY_S, metavar="SECONDS",
                   help="seconds of timeline kept per device (default %(default)s)")
    p.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / MB, metavar="MB",
                   help="largest recording accepted by the upload panel (default %(default)s)")
    p.add_argument("--db", default=None, metavar="URL",
                   help="history database written by serd record (sqlite:////ABS/PATH, sqlite:///REL/PATH or postgresql://...): adds the history view")
    p.set_defaults(func=dashboard_command)


def read_token_file(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            first = handle.read(1024).decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--token-file {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    token = first[0].strip() if first else ""
    if not token:
        raise ValueError(f"--token-file {path}: the file is empty")
    return token


def settings_from_args(args: argparse.Namespace) -> DashboardSettings:
    """DashboardSettings from the command line; ValueError naming the flag that is wrong."""
    host, port = parse_listen(args.listen)
    for flag, value in (("--stale-after", args.stale_after), ("--history", args.history),
                        ("--max-upload-mb", args.max_upload_mb)):
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{flag} must be a finite number > 0, got {value}")
    if args.trusted_proxy is not None:
        try:
            ipaddress.ip_address(args.trusted_proxy)
        except ValueError:
            raise ValueError(f"--trusted-proxy {args.trusted_proxy!r}: expected an IP address, e.g. 127.0.0.1") from None
    if args.token is not None:
        token = args.token
    elif args.token_file is not None:
        token = read_token_file(args.token_file)
    else:
        token = os.environ.get(TOKEN_ENV) or None
    return DashboardSettings(
        connect=tuple(args.connect or ["tcp://127.0.0.1:5556"]),
        host=host,
        port=port,
        token=token or None,
        allow_insecure=args.allow_insecure,
        trusted_proxy=args.trusted_proxy,
        model=args.model,
        server_key=args.server_key,
        client_key=args.client_key,
        stale_after_s=args.stale_after,
        history_s=args.history,
        max_upload_bytes=int(args.max_upload_mb * MB),
        db=args.db,
    )


def dashboard_command(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        dashboard = Dashboard(settings)
    except (ValueError, DashboardError) as exc:
        print(f"serd dashboard: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    interrupted = []

    def request_stop(signum: int, _frame) -> None:
        if signum == signal.SIGINT:
            interrupted.append(signum)  # Ctrl-C: exit 130, as every serd command does
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            dashboard.start()
        except DashboardError as exc:
            print(f"serd dashboard: {exc}", file=sys.stderr)
            return 1
        _LOGGER.info("serving on %s (subscribed to %s)", dashboard.url, ", ".join(settings.connect))
        if args.token is not None:
            _LOGGER.warning("--token on the command line is visible to every user of this machine; "
                            "prefer %s or --token-file", TOKEN_ENV)
        if settings.token:
            _LOGGER.info("access token required: open %s?token=YOUR_TOKEN once (it becomes a cookie)", dashboard.url)
        elif not is_loopback_host(settings.host):
            _LOGGER.warning("no access token: anyone who can reach %s sees the dashboard", dashboard.url)
        if not dashboard.analyzer.available():
            _LOGGER.warning("upload panel: model %s not found (%s); give one with --model", settings.model,
                            dashboard.analyzer.model_path())
        while not stop.wait(0.5):  # a timed wait, so that signal handlers run promptly
            pass
        _LOGGER.info("stopping")
    finally:
        dashboard.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EX_INTERRUPTED if interrupted else 0
