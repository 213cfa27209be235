"""The `serd` command: parse, configure logging, dispatch. Nothing else lives here."""

from __future__ import annotations

import argparse
import logging
import sys

from serd import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serd", description="speech emotion recognition daemon")
    parser.add_argument("--version", action="version", version=f"serd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from serd.train.cli import add_evaluate_parser, add_train_parser

    add_train_parser(sub)
    add_evaluate_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.func(args) or 0)
