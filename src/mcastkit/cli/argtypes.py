"""Typed option values: every number the CLI takes is checked here, where it is parsed.

Each factory returns an argparse ``type=`` callable that raises ``ArgumentTypeError`` with a
message saying what is accepted, so a bad value exits 2 with one line and no traceback. Each
callable also lists ``bad_examples``: values it must refuse, which the tests feed to every
option that uses it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from ..addr import parse_address, parse_port, split_host_port
from ..errors import AddressError
from ..units import parse_rate, parse_size

NON_NUMBERS = ("nan", "inf", "-inf", "ten", "")


class OptionType:
    """An argparse ``type=`` callable with a name for messages and the values it refuses."""

    def __init__(
        self, name: str, convert: Callable[[str], Any], bad_examples: tuple[str, ...]
    ) -> None:
        self.__name__ = name  # argparse names the type in its own messages
        self._convert = convert
        self.bad_examples = bad_examples

    def __call__(self, text: str) -> Any:
        return self._convert(text)

    def __repr__(self) -> str:
        return self.__name__


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; {what}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; {what}")
    return value


def seconds(*, allow_zero: bool = False, maximum: float = 86400 * 365) -> OptionType:
    """A duration in seconds: positive (or zero when it means 'no wait'), finite."""
    what = f"give {'zero or more' if allow_zero else 'a positive number of'} seconds, e.g. 0.5"

    def convert(text: str) -> float:
        value = _number(text, what)
        if value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"{text!r}: {what}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{text!r}: at most {maximum:.0f} seconds")
        return value

    bad = ("-1", "1e12", *NON_NUMBERS) if allow_zero else ("0", "-1", "1e12", *NON_NUMBERS)
    return OptionType("seconds", convert, bad)


def integer(minimum: int, maximum: int, what: str) -> OptionType:
    """A whole number within [minimum, maximum]."""
    hint = f"give a whole number from {minimum} to {maximum}"

    def convert(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} {text!r} is not a number; {hint}") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{what} {value} is out of range; {hint}")
        return value

    bad = (str(minimum - 1), str(maximum + 1), "1.5", *NON_NUMBERS)
    return OptionType(what, convert, bad)


def count(what: str = "count", minimum: int = 1) -> OptionType:
    """How many of something: a whole number, at least ``minimum``."""
    return integer(minimum, 10**12, what)


TTL = integer(0, 255, "TTL")
PORT = integer(0, 65535, "port")


def percent() -> OptionType:
    """A percentage, 0 to 100."""

    def convert(text: str) -> float:
        value = _number(text, "give a percentage from 0 to 100")
        if not 0 <= value <= 100:
            raise argparse.ArgumentTypeError(f"{text!r}: give a percentage from 0 to 100")
        return value

    return OptionType("percent", convert, ("-1", "101", *NON_NUMBERS))


def size(minimum: int = 1, maximum: int = 1 << 50) -> OptionType:
    """Bytes: 65536, 64k, 64M, 1G (binary units)."""

    def convert(text: str) -> int:
        try:
            value = parse_size(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(
                f"{text!r} is out of range: from {minimum} to {maximum} bytes"
            )
        return value

    return OptionType("size", convert, ("0", "-1", "64Q", "nan", "inf", ""))


def rate(*, allow_auto: bool) -> OptionType:
    """A sending rate: 200M (bits/s), 50kpps, max, and ``auto`` where adaptive exists.

    Returns the text (validated), which the command then turns into its own rate setting.
    """

    def convert(text: str) -> str:
        if allow_auto and text.strip().lower() == "auto":
            return "auto"
        try:
            parsed = parse_rate(text)
        except ValueError as exc:
            also = "; or auto (adaptive)" if allow_auto else ""
            raise argparse.ArgumentTypeError(f"{exc}{also}") from None
        if parsed is not None and not (math.isfinite(parsed.value) and parsed.value > 0):
            raise argparse.ArgumentTypeError(f"{text!r}: a rate must be positive and finite")
        return text

    return OptionType("rate", convert, ("fast", "-5M", "0", "nanM", "infpps", ""))


def want() -> OptionType:
    """Replies a request waits for: all, first, or a count >= 1."""

    def convert(text: str) -> str | int:
        cleaned = text.strip().lower()
        if cleaned in ("all", "first"):
            return cleaned
        try:
            value = int(cleaned)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: give all, first or a number >= 1")
        return value

    return OptionType("want", convert, ("0", "-1", "most", "nan", ""))


def interfaces(*, several: bool = True) -> OptionType:
    """An interface (name, index or address); with ``several`` also "all" or "eth0,eth1".
    Whether the interfaces exist is checked when the socket opens (exit 2 naming them)."""

    def convert(text: str) -> str:
        cleaned = text.strip()
        parts = [part.strip() for part in cleaned.split(",")]
        if not cleaned or any(not part for part in parts):
            raise argparse.ArgumentTypeError(
                f"{text!r}: give an interface name, index or address"
                + (", all, or names separated by commas (eth0,eth1)" if several else "")
            )
        if not several and (len(parts) > 1 or cleaned == "all"):
            raise argparse.ArgumentTypeError(
                f"{text!r}: this command uses one interface; give one name, index or address"
            )
        if len(parts) > 1 and "all" in parts:
            raise argparse.ArgumentTypeError(f"{text!r}: give all alone, or a list of names")
        return ",".join(parts)

    bad = ("", ",", "eth0,", "all,eth0") if several else ("", "all", "eth0,eth1")
    return OptionType("interface", convert, bad)


def peer() -> OptionType:
    """A unicast peer, HOST, HOST:PORT or [V6ADDR]:PORT: the form and the port are checked
    here; the name is resolved (DNS) when the node starts, for the group's address family."""

    def convert(text: str) -> str:
        host, port = split_host_port(text)
        if not host or (text.strip().startswith("[") and "]" not in text):
            raise argparse.ArgumentTypeError(
                f"{text!r}: give HOST, HOST:PORT or [IPV6]:PORT (a member's unicast address)"
            )
        if port:
            try:
                parse_port(port)
            except AddressError as error:
                raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
        return text.strip()

    return OptionType("peer", convert, ("", ":5000", "host:0", "host:99999", "[::1", "h:x"))


def add_json(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--json``: what the command prints for a script (``help_text`` says its shape)."""
    parser.add_argument("--json", action="store_true", help=help_text)


def add_group(
    parser: argparse.ArgumentParser,
    *,
    default: str | None = None,
    optional: bool = False,
    help_text: str | None = None,
) -> None:
    """The ``GROUP:PORT`` positional (optional when it has a ``default`` or ``optional``)."""
    if default is not None or optional:
        parser.add_argument(
            "group", nargs="?", default=default, metavar="GROUP:PORT", help=help_text
        )
    else:
        parser.add_argument("group", metavar="GROUP:PORT", help=help_text)


_IFACE_HELP = "interface name, index or address (default: route)"


def add_iface(
    parser: argparse.ArgumentParser, *, several: bool = True, help_text: str | None = None
) -> None:
    """``--iface``: one interface (name, index or address), or with ``several`` also ``all``
    or ``eth0,eth1``; checked where parsed."""
    if help_text is None:
        help_text = _IFACE_HELP + ("; all, or eth0,eth1: join on each" if several else "")
    parser.add_argument("--iface", type=interfaces(several=several), help=help_text)


def add_ttl(
    parser: argparse.ArgumentParser, *, default: int = 1, help_text: str | None = None
) -> None:
    """``--ttl``: the TTL / hop limit, 0-255."""
    text = help_text or f"TTL / hop limit (default {default})"
    parser.add_argument("--ttl", type=TTL, default=default, help=text)


def add_peer_option(parser: argparse.ArgumentParser, dest: str, help_text: str) -> None:
    """``--peer HOST[:PORT]``, repeatable, collected in ``dest``."""
    parser.add_argument(
        "--peer",
        dest=dest,
        action="append",
        default=[],
        type=peer(),
        metavar="HOST[:PORT]",
        help=help_text,
    )


MAX_TOPIC_BYTES = 255  # wire.MAX_TOPIC (not imported: argument types stay light)


def topic(*, pattern: bool = False) -> OptionType:
    """A topic: 1-255 bytes of UTF-8. With ``pattern`` also ``prefix*`` or ``*`` (all)."""

    def convert(text: str) -> str:
        size = len(text.encode("utf-8", "surrogateescape"))
        if not text:
            raise argparse.ArgumentTypeError(
                "the topic is empty; give a name" + (" or * for every topic" if pattern else "")
            )
        if size > MAX_TOPIC_BYTES:
            raise argparse.ArgumentTypeError(
                f"the topic is {size} bytes; the limit is {MAX_TOPIC_BYTES}"
            )
        return text

    return OptionType("topic", convert, ("", "t" * 256))


def address() -> OptionType:
    """An IPv4 or IPv6 address literal (a source to join, to check)."""

    def convert(text: str) -> str:
        try:
            return str(parse_address(text))
        except AddressError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an IPv4 or IPv6 address; give the source's address"
            ) from None

    return OptionType("address", convert, ("", "notanip", "300.1.1.1", "239.1.1.1:5"))
