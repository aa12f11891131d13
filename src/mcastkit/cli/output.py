"""Rendering shared by the commands: JSON lines and human text on the right streams."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..errors import MulticastError

if TYPE_CHECKING:
    from ..security import GroupKey

PASSPHRASE_ENV = "MCAST_PASSPHRASE"


async def stdin_lines() -> AsyncIterator[str]:
    """Stdin's lines as they come, read on a daemon thread so the event loop stays free:
    SIGINT and SIGTERM end the command with its summary (130, 143) even while stdin is
    silent, and leaving early never waits for stdin to close."""
    import asyncio
    import threading

    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\n"))
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    while (line := await lines.get()) is not None:
        yield line


def console(**options: Any) -> Any:
    """A rich Console for stdout whose closed pipe is a closed pipe: rich's own handling
    exits 1 (``mcast doctor | head -1`` did), where a closed stdout is not an error here
    (the entry point exits 0 on ``BrokenPipeError``)."""
    from rich.console import Console

    made = Console(**options)

    def closed() -> None:
        raise BrokenPipeError

    made.on_broken_pipe = closed  # type: ignore[method-assign]
    return made


class UsageError(MulticastError):
    """A bad value or a bad combination of options found after parsing: exit 2."""


def emit_json(data: Any) -> None:
    """One JSON document on one line (NDJSON-friendly), flushed at once for pipes."""
    sys.stdout.write(json.dumps(data, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def say(text: str = "") -> None:
    """A line for the human on stdout, flushed for pipes."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def note(text: str) -> None:
    """Status and hints go to stderr so stdout stays parseable."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def drop_warning(drops: int, rcvbuf: int | None = None, meaning: str = "") -> str:
    """The one line every receiving command gives when the kernel dropped datagrams for a
    full receive buffer: how many, the buffer, what it meant here, and the fix."""
    size = f" ({rcvbuf} bytes)" if rcvbuf else ""
    meaning = f"{meaning}; " if meaning else ""
    return (
        f"warning: the kernel dropped {drops} datagram(s) for a full receive buffer{size}: "
        f"{meaning}raise --rcvbuf (beyond net.core.rmem_max needs root) or slow the sender"
    )


def preview(data: bytes, width: int = 60) -> str:
    """A printable, bounded view of a payload."""
    try:
        text = data.decode("utf-8")
        shown = text if text.isprintable() else repr(text)[1:-1]
    except UnicodeDecodeError:
        shown = data[: width // 2].hex(" ")
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def add_key_options(parser: argparse.ArgumentParser) -> None:
    """Where the group key comes from, shared by every command that speaks to a group."""
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--key-file", help="group key file made by `mcast keygen` (mode 0600)")
    keys.add_argument(
        "--passphrase-file", help="derive the group key from the first line of this file (0600)"
    )
    keys.add_argument(
        "--ask-passphrase", action="store_true", help="prompt for the passphrase (not echoed)"
    )
    keys.add_argument(
        "--passphrase",
        help=f"derive the key from this passphrase (wiped from `ps` once mcast starts, visible "
        f"to local users until then: prefer ${PASSPHRASE_ENV}, --passphrase-file or "
        f"--ask-passphrase)",
    )


def group_key(args: argparse.Namespace, group: object) -> GroupKey | None:
    """The group key the options (or $MCAST_PASSPHRASE) name, or None for an open group."""
    # Here, not at the top: only commands with key options load the crypto library.
    from ..keyfiles import load_key_file, read_passphrase_file
    from ..security import SecurityError, key_from_passphrase

    if getattr(args, "key_file", None):
        return load_key_file(args.key_file)
    passphrase: str | None = None
    if getattr(args, "passphrase_file", None):
        passphrase = read_passphrase_file(args.passphrase_file)
    elif getattr(args, "ask_passphrase", False):
        try:
            passphrase = getpass.getpass("group passphrase: ")
        except EOFError:
            passphrase = ""
    elif getattr(args, "passphrase", None) is not None:
        passphrase = args.passphrase
        from .hide import hide_from_ps

        if hide_from_ps(passphrase):  # gone from `ps` now; it was there while mcast started
            note(
                f"warning: --passphrase was visible to every local user in `ps` until mcast "
                f"started, and stays in your shell history; use ${PASSPHRASE_ENV}, "
                f"--passphrase-file or --ask-passphrase"
            )
        else:
            note(
                f"warning: --passphrase is visible to every local user in `ps`; use "
                f"${PASSPHRASE_ENV}, --passphrase-file or --ask-passphrase"
            )
    elif os.environ.get(PASSPHRASE_ENV) is not None:
        passphrase = os.environ[PASSPHRASE_ENV]
    if passphrase is None:
        return None
    if not passphrase:
        raise SecurityError(
            "the passphrase is empty; give a non-empty one (an open group has none)"
        )
    return key_from_passphrase(passphrase, group=group)


class ProgressBar:
    """Progress on stderr: a rich bar on a terminal, else a plain line every few seconds."""

    PLAIN_EVERY = 2.0

    def __init__(self, label: str, total_bytes: int) -> None:
        self.total = max(1, total_bytes)
        self._label = label
        self._last_plain = 0.0
        self._bar: Any = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(stderr=True),
            )
            self._task = self._bar.add_task(label, total=self.total, info="")
            self._bar.start()

    def update(self, fraction: float, info: str = "") -> None:
        """Show ``fraction`` (0..1) of the bytes done, with a short status."""
        done = int(self.total * min(1.0, max(0.0, fraction)))
        if self._bar is not None:
            self._bar.update(self._task, completed=done, info=info)
            return
        now = time.monotonic()
        if now - self._last_plain >= self.PLAIN_EVERY:
            self._last_plain = now
            note(f"{self._label}: {done / 1e6:.1f}/{self.total / 1e6:.1f} MB {info}")

    def log(self, text: str) -> None:
        """A line of news above the bar (the bar is redrawn below it)."""
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            note(text)

    def close(self) -> None:
        """Stop drawing (the bar stays on screen)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
