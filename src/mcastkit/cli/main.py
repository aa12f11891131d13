"""Entry point of ``mcast``: parse, dispatch, and map errors to exit codes in one place.

Exit codes: 0 success; 1 the check failed (nothing received, a peer missing); 2 usage or
setup error (bad address, missing interface, refused socket option); 3 partial result;
130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import AddressError, InterfaceError, MulticastError, SocketSetupError
from . import bench, demo, diag, doctor, dump, group, info, traffic, transfer

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to render --help in docs)."""
    parser = argparse.ArgumentParser(
        prog="mcast",
        description="UDP multicast toolkit: explain, join, send, listen, demo.",
    )
    parser.add_argument("--version", action="version", version=f"mcastkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for module in (demo, group, info, traffic, diag, bench, doctor, dump, transfer):
        module.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except (AddressError, InterfaceError, SocketSetupError, MulticastError) as exc:
        sys.stderr.write(f"mcast {args.command}: error: {exc}\n")
        return EXIT_USAGE
    except OSError as exc:
        sys.stderr.write(f"mcast {args.command}: error: {_explain_os_error(exc)}\n")
        return EXIT_USAGE
    except BrokenPipeError:
        return 0
    return code


def _explain_os_error(exc: OSError) -> str:
    import errno

    text = exc.strerror or str(exc)
    if exc.errno == errno.ENETUNREACH:
        return (
            f"{text}: no route for this group out of the chosen interface "
            "(IPv6 multicast does not run over lo on Linux; give a real interface with --iface)"
        )
    if exc.errno == errno.EPERM:
        return f"{text}: a firewall rule refused the datagram (see nft list ruleset)"
    return text


if __name__ == "__main__":
    sys.exit(main())
