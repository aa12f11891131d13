"""Who speaks multicast on the link: IGMP/MLD queriers and PIM routers, heard for a while.

Raw sockets (root, or CAP_NET_RAW) receive IGMP and MLD queries and PIM hellos on the
chosen interface for a bounded time. Parsing is separate from listening, so it is tested
on crafted bytes. Nothing is sent.
"""

from __future__ import annotations

import functools
import socket
import time

from ...transport.capture import open_link_listeners
from ...transport.driver import STOP, Driver
from .model import Heard

__all__ = ["Heard", "listen", "parse_igmp", "parse_mld", "parse_pim"]


def _qqic(code: int) -> float:
    """RFC 3376 4.1.7: the Querier's Query Interval Code."""
    if code < 128:
        return float(code)
    return float(((code & 0x0F) | 0x10) << (((code >> 4) & 0x07) + 3))


def parse_igmp(packet: bytes, source: str) -> Heard | None:
    """An IPv4 packet (header included, as raw sockets deliver it): a query, or None."""
    if len(packet) < 20:
        return None
    header = (packet[0] & 0x0F) * 4
    igmp = packet[header:]
    if len(igmp) < 8 or igmp[0] != 0x11:
        return None
    if len(igmp) >= 12:
        return Heard("querier", source, "IGMPv3", _qqic(igmp[9]) or 125.0)
    return Heard("querier", source, "IGMPv2" if igmp[1] else "IGMPv1", None)


def parse_mld(message: bytes, source: str) -> Heard | None:
    """An ICMPv6 message (no IPv6 header, as raw ICMPv6 sockets deliver it)."""
    if len(message) < 24 or message[0] != 130:
        return None
    if len(message) >= 28:
        return Heard("querier", source, "MLDv2", _qqic(message[25]) or 125.0)
    return Heard("querier", source, "MLDv1", None)


def parse_pim(payload: bytes, source: str) -> Heard | None:
    """A PIM message (version 2, type 0: hello)."""
    if len(payload) < 4 or payload[0] != 0x20:
        return None
    return Heard("router", source, "PIM")


def listen(family: int, iface: str, index: int, seconds: float) -> list[Heard] | str:
    """Queriers and routers heard on ``iface`` within ``seconds`` (one of each source), or
    why nothing could be heard (no raw sockets without root)."""
    try:
        sockets = open_link_listeners(family, iface, index)
    except PermissionError:
        return "listening for queriers and routers needs root (raw sockets)"
    except OSError as exc:
        return f"cannot listen on {iface}: {exc.strerror}"
    heard: dict[tuple[str, str], Heard] = {}
    deadline = time.monotonic() + seconds

    def read(sock: socket.socket, kind: str) -> None:
        data, address = sock.recvfrom(65535)
        source = address[0].split("%")[0]
        parsed = _parse(kind, family, data, source)
        if parsed is not None:
            heard.setdefault((parsed.kind, source), parsed)

    try:
        with Driver() as driver:
            for sock, kind in sockets:
                driver.on_readable(sock, functools.partial(read, sock, kind))
            driver.run(lambda now: deadline - now if now < deadline else STOP)
    finally:
        for sock, _ in sockets:
            sock.close()
    return list(heard.values())


def _parse(kind: str, family: int, data: bytes, source: str) -> Heard | None:
    if kind == "igmp":
        return parse_igmp(data, source)
    if kind == "mld":
        return parse_mld(data, source)
    if family == 4:
        header = (data[0] & 0x0F) * 4 if data else 0
        return parse_pim(data[header:], source)
    return parse_pim(data, source)
