"""Rendering shared by the commands: JSON lines and human text on the right streams."""

from __future__ import annotations

import json
import sys
from typing import Any


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


def preview(data: bytes, width: int = 60) -> str:
    """A printable, bounded view of a payload."""
    try:
        text = data.decode("utf-8")
        shown = text if text.isprintable() else repr(text)[1:-1]
    except UnicodeDecodeError:
        shown = data[: width // 2].hex(" ")
    return shown if len(shown) <= width else shown[: width - 1] + "…"
