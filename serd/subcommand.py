"""How a `serd` subcommand presents itself: a one-line summary, a description and examples.

Every subcommand is added through `add_command`, so that each `serd COMMAND --help`
page reads the same way (tests/test_cli_help.py walks them all).
"""

from __future__ import annotations

import argparse
import textwrap

WIDTH = 79


def add_command(subparsers, name: str, summary: str, description: str,
                examples: tuple[str, ...]) -> argparse.ArgumentParser:
    """A subparser with `summary` in `serd --help`, and a description and examples on its own page."""
    epilog = "examples:\n" + "\n".join(f"  {example}" for example in examples)
    return subparsers.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, WIDTH),
        epilog=epilog,
        # Keeps the examples one per line (the description is wrapped above).
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def import_extra(module: str, extra: str, what: str):
    """Import `module` (a command's optional part); ImportError with one line saying which extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{what} needs {exc.name or 'a package'}: pip install 'serd[{extra}]'") from None
