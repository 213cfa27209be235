"""Every `serd` option has a help line, every subcommand a description and an example."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from helpers_daemon import serd_env
from serd.cli import build_parser

EXPECTED_COMMANDS = {"run", "listen", "analyze", "devices", "keys", "train", "evaluate", "dashboard", "record",
                     "history", "mqtt"}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: sub for action in actions for name, sub in action.choices.items()}


def all_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """`serd` and every subcommand, recursively."""
    found, todo = [], [("serd", build_parser())]
    while todo:
        name, parser = todo.pop()
        found.append((name, parser))
        todo += [(f"{name} {sub_name}", sub) for sub_name, sub in subcommands(parser).items()]
    return found


def test_every_command_is_there():
    assert set(subcommands(build_parser())) == EXPECTED_COMMANDS


@pytest.mark.parametrize("name, parser", all_parsers(), ids=[name for name, _ in all_parsers()])
def test_every_option_and_argument_has_help(name: str, parser: argparse.ArgumentParser):
    missing = [
        "/".join(action.option_strings) or action.dest
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        and (not action.help or action.help == argparse.SUPPRESS or not action.help.strip())
    ]
    assert not missing, f"{name}: no help text for {missing}"


@pytest.mark.parametrize("command", sorted(EXPECTED_COMMANDS))
def test_every_subcommand_has_a_description_and_an_example(command: str):
    parser = subcommands(build_parser())[command]
    assert parser.description and len(parser.description.split()) >= 8, f"serd {command}: no description"
    assert parser.epilog and parser.epilog.startswith("examples:\n"), f"serd {command}: no examples"
    examples = parser.epilog.splitlines()[1:]
    assert examples and all("serd " in line for line in examples)
    assert any(f"serd {command}" in line for line in examples), f"serd {command}: no example of itself"


def test_the_help_pages_render_from_the_command_line():
    for command in ("", *sorted(EXPECTED_COMMANDS)):
        args = [sys.executable, "-m", "serd", *([command] if command else []), "--help"]
        done = subprocess.run(args, env=serd_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.startswith("usage: serd"), (command, done.stderr)
        assert done.stderr == ""
        if command:
            assert "examples:\n  " in done.stdout
