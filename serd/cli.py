"""The `serd` command: parse, configure logging, dispatch. Nothing else lives here."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

# Before numpy loads: the frontend's matrices are small, and BLAS threads spinning on a
# busy Pi cost more than they save (measured: 2 threads were 2x slower under load).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from serd import __version__
from serd.config import EX_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    from serd import commands, listen, run
    from serd.mqtt import cli as mqtt_cli
    from serd.record import cli as record_cli
    from serd.record import history as history_cli
    from serd.train.cli import add_evaluate_parser, add_train_parser

    parser = argparse.ArgumentParser(prog="serd", description="speech emotion recognition for small devices")
    parser.add_argument("--version", action="version", version=f"serd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks on internal errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run.add_parser(sub)
    listen.add_parser(sub)
    commands.add_parsers(sub)
    record_cli.add_parser(sub)
    history_cli.add_parser(sub)
    mqtt_cli.add_parser(sub)
    add_train_parser(sub)
    add_evaluate_parser(sub)
    try:
        from serd.dashboard.cli import add_parser as add_dashboard_parser
    except ImportError:
        add_dashboard_parser = None
    if add_dashboard_parser is not None:
        add_dashboard_parser(sub)
    return parser


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    import faulthandler

    # A hard crash or a watchdog abort leaves every thread's stack in the journal.
    faulthandler.enable()
    # Until the daemon installs its own handlers: a SIGTERM during start-up is a clean exit.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # Ctrl-C (SIGINT) ends every command with 130, also one started from a script in the background,
    # where the shell hands it SIGINT ignored and Python would keep it so (`serd analyze` in CI did).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = build_parser().parse_args(argv)
    # Under systemd the journal adds timestamps; on a terminal they are noise.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    except BrokenPipeError:  # `serd analyze ... | head`
        return 0
    except Exception as exc:  # the promise: one line, never a traceback (unless asked)
        if args.verbose:
            raise
        print(f"serd {args.command}: {type(exc).__name__}: {exc} (run with -v for details)", file=sys.stderr)
        return 1
