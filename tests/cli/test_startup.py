"""A command loads only what it needs: the table of command modules is the parser's truth."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from mcastkit.cli.main import COMMAND_MODULES, _command_in, build_parser


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_the_table_names_every_command_and_its_module() -> None:
    full = _commands(build_parser())
    assert list(full) == list(COMMAND_MODULES)  # every command, in --help order
    for command, module in COMMAND_MODULES.items():
        alone = _commands(build_parser(command))
        assert command in alone, f"{command} is not registered by cli/{module}.py"
        # The lone parser parses the command as the full one does.
        assert alone[command].format_help() == full[command].format_help()


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["send-file", "x"], "send-file"),
        (["--debug", "recv-file"], "recv-file"),
        (["--help"], None),
        (["--version", "ping"], None),
        (["no-such-command"], None),
        ([], None),
    ],
)
def test_the_command_is_found_before_parsing(argv: list[str], command: str | None) -> None:
    assert _command_in(argv) == command


@pytest.mark.parametrize("command", ["send-file", "recv-file", "addr", "send", "listen"])
def test_commands_without_a_node_or_a_key_load_neither_asyncio_nor_cryptography(
    command: str,
) -> None:
    probe = (
        "import sys\n"
        "from mcastkit.cli.main import build_parser, _command_in\n"
        f"build_parser(_command_in([{command!r}]))\n"
        "print(sorted(m for m in ('asyncio', 'cryptography') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
