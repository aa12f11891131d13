"""Unicast beside the group: peers from text (``HOST``, ``HOST:PORT``, ``[V6]:PORT``, names
through DNS), sockets for unicast only, and the port a node listens on for unicast."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterable

from ..addr import GroupSpec, parse_port, split_host_port
from ..errors import AddressError
from ..peers import Address
from .handles import SocketLike, os_socket
from .interfaces import Interface, interface_name
from .sockets import GroupSocket, new_socket

__all__ = ["bind_unicast", "open_unicast", "resolve_peer", "resolve_peers", "resolve_seeds"]


def resolve_peer(text: str, family: int, default_port: int) -> tuple[str, int]:
    """One peer's unicast address of ``family`` (4 or 6); AddressError names what is wrong."""
    host, port_text = split_host_port(text)
    if not host:
        raise AddressError(f"peer {text!r} has no host; expected HOST[:PORT] or [V6ADDR]:PORT")
    port = parse_port(port_text) if port_text else default_port
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    try:
        found = socket.getaddrinfo(host, port, af, socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise AddressError(
            f"peer {text!r}: cannot resolve {host!r} to an IPv{family} address ({exc}); "
            f"give an address or a name DNS knows"
        ) from None
    address = found[0][4]
    ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
    if ip.is_multicast or ip.is_unspecified:
        raise AddressError(f"peer {text!r} is {ip}, not a unicast address of a host")
    if family == 6 and len(address) >= 4 and address[3]:
        # A link-local peer keeps its zone, by name: as the kernel names our sources, so
        # its answers match it (transport.scoped turns it back into a scope id to send).
        return (f"{ip}%{interface_name(address[3]) or address[3]}", port)
    return (str(ip), port)


def resolve_peers(
    texts: Iterable[str], family: int, default_port: int
) -> tuple[tuple[str, int], ...]:
    """Every peer of ``texts``, in order, duplicates once."""
    return tuple(dict.fromkeys(resolve_peer(text, family, default_port) for text in texts))


def resolve_seeds(texts: Iterable[str], spec: GroupSpec, *, multicast: bool) -> tuple[Address, ...]:
    """A node's seeds (PORT defaults to the group's); with ``multicast`` off there must be one,
    as nothing else can find the members."""
    seeds = resolve_peers(texts, spec.family, spec.port)
    if not multicast and not seeds:
        raise AddressError(
            "with multicast off a node finds others only through seeds: give --peer "
            "HOST[:PORT] (peers=[...]), the unicast address of another member"
        )
    return seeds


def open_unicast(group: GroupSpec, interface: Interface) -> GroupSocket:
    """A plain UDP socket of the group's family for unicast only (no multicast option set:
    the interface may lack the MULTICAST flag, as tunnels do)."""
    return GroupSocket(new_socket(group.family), group, interface)


def bind_unicast(handle: SocketLike, family: int, interface: Interface, port: int) -> bool:
    """Bind ``handle`` to ``interface``'s address and ``port`` (0: any port there), made
    non-blocking (a loop drives it). Exclusive (no SO_REUSEADDR while binding), so of several
    nodes on one host the first gets the port and the others any free one. False when it did
    not get ``port``."""
    sock = os_socket(handle)
    sock.setblocking(False)
    where: tuple[str, int] | tuple[str, int, int, int] | None = None
    if family == 4:
        if interface.ipv4_address is not None:
            where = (str(interface.ipv4_address), port)
    elif interface.ipv6:
        ip = sorted(interface.ipv6, key=lambda a: a.ip.is_link_local)[0].ip
        where = (str(ip), port, 0, interface.index if ip.is_link_local else 0)
    if where is None:
        return False
    try:
        sock.bind(where)
    except OSError:
        # Another node of this host listens there: any port of that address will do.
        with contextlib.suppress(OSError):
            sock.bind((*where[:1], 0, *where[2:]))
        return False
    # Set after the bind: a later group socket binding the wildcard on this port (with
    # SO_REUSEADDR, as every receiver here does) is not refused because of us, and unicast to
    # our address still comes to us (the more specific bind wins).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return True
