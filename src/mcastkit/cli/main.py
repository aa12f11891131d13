"""Entry point of ``mcast``: parse, dispatch, and map errors to exit codes in one place.

Exit codes: 0 success; 1 the check failed (nothing received, a peer missing); 2 bad input or
setup error, with one line naming the fix; 3 partial result; 70 an internal error (a bug:
rerun with --debug for the traceback); 130 interrupted (SIGINT); 143 terminated (SIGTERM).
A closed stdout (``mcast listen | head -1``) is not an error: exit 0, quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

from ..errors import MulticastError
from ..version import __version__
from . import signals

EXIT_USAGE = 2
EXIT_SOFTWARE = 70  # sysexits.h EX_SOFTWARE
# The module of each command, in the order of --help. A command loads only its own module:
# `mcast send-file` never imports asyncio or the crypto library (tests check this table).
COMMAND_MODULES = {
    "demo": "demo",
    "chat": "group",
    "peers": "group",
    "keygen": "group",
    "publish": "pubsub",
    "subscribe": "pubsub",
    "request": "rpc",
    "serve": "rpc",
    "relay": "relay",
    "addr": "info",
    "ifaces": "info",
    "send": "traffic",
    "listen": "traffic",
    "ping": "diag",
    "top": "diag",
    "bench": "bench",
    "doctor": "doctor",
    "dump": "dump",
    "send-file": "transfer",
    "recv-file": "transfer",
}


def _command_in(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (the first word that is not an option), if known."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMAND_MODULES else None
        if word in ("-h", "--help", "--version"):
            return None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: every command (also used to render --help in docs), or only
    ``command``'s module, which parses that command the same way."""
    parser = argparse.ArgumentParser(
        prog="mcast",
        description="UDP multicast toolkit: explain, join, send, listen, demo.",
    )
    parser.add_argument("--version", action="version", version=f"mcastkit {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an internal error"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    names = [COMMAND_MODULES[command]] if command else dict.fromkeys(COMMAND_MODULES.values())
    for name in names:
        importlib.import_module(f".{name}", __package__).add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    signals.install()
    parser = build_parser(_command_in(sys.argv[1:] if argv is None else argv))
    try:
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        return signals.exit_code(130)
    name = f"mcast {args.command}"
    try:
        code: int = args.handler(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        _silence_stdout()  # the reader went away (`| head`): nothing more to say
        code = 0
    except (MulticastError, ValueError) as exc:
        sys.stderr.write(f"{name}: error: {exc}\n")
        code = EXIT_USAGE
    except OSError as exc:
        sys.stderr.write(f"{name}: error: {_explain_os_error(exc)}\n")
        code = EXIT_USAGE
    except Exception as exc:
        if args.debug or os.environ.get("MCAST_DEBUG"):
            raise
        sys.stderr.write(
            f"{name}: internal error: {type(exc).__name__}: {exc}\n"
            f"  this is a bug; rerun with `mcast --debug {args.command} ...` for the traceback\n"
        )
        code = EXIT_SOFTWARE
    return signals.exit_code(code)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):
        os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _explain_os_error(exc: OSError) -> str:
    import errno

    text = exc.strerror or str(exc)
    if exc.errno == errno.ENETUNREACH:
        return (
            f"{text}: no route for this group out of the chosen interface "
            "(IPv6 multicast does not run over lo on Linux; give a real interface with --iface)"
        )
    if exc.errno == errno.EMSGSIZE:
        return (
            f"{text}: a UDP datagram holds at most 65,507 bytes over IPv4 (65,527 over IPv6); "
            "send less, or use publish --reliable, which fragments"
        )
    if exc.errno == errno.EPERM:
        return f"{text}: a firewall rule refused the datagram (see nft list ruleset)"
    if exc.filename:
        return f"{exc.filename}: {text}"
    return text


if __name__ == "__main__":
    sys.exit(main())
