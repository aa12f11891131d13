"""Network interfaces: list them, resolve a user's choice, pick the kernel's default.

Addresses come from ``ifaddr`` (getifaddrs on POSIX, GetAdaptersAddresses on Windows). Flags
and MTU come from the SIOCGIFFLAGS / SIOCGIFMTU ioctls on Linux, which answer for the network
namespace of the calling thread (``/sys/class/net`` would answer for the mounting one).
Elsewhere flags are reported as unknown (None) and never block a join.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct
import sys
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Any

import ifaddr

from ..errors import InterfaceError

__all__ = [
    "Interface",
    "default_interface",
    "list_interfaces",
    "resolve_interface",
    "route_interface",
]

_SIOCGIFFLAGS = 0x8913
_SIOCGIFMTU = 0x8921
_IFF_UP = 0x1
_IFF_BROADCAST = 0x2
_IFF_LOOPBACK = 0x8
_IFF_RUNNING = 0x40
_IFF_MULTICAST = 0x1000


@dataclass(frozen=True)
class Interface:
    """One network interface as the multicast code needs to know it."""

    name: str
    index: int
    ipv4: tuple[IPv4Interface, ...]
    ipv6: tuple[IPv6Interface, ...]
    up: bool | None
    running: bool | None
    multicast: bool | None
    broadcast: bool | None
    loopback: bool
    mtu: int | None

    @property
    def ipv4_address(self) -> IPv4Address | None:
        """First IPv4 address, used where an API wants an address instead of an index."""
        return self.ipv4[0].ip if self.ipv4 else None

    def has_family(self, family: int) -> bool:
        """True when the interface has an address of that family (4 or 6)."""
        return bool(self.ipv4 if family == 4 else self.ipv6)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "name": self.name,
            "index": self.index,
            "ipv4": [str(a) for a in self.ipv4],
            "ipv6": [str(a) for a in self.ipv6],
            "up": self.up,
            "running": self.running,
            "multicast": self.multicast,
            "broadcast": self.broadcast,
            "loopback": self.loopback,
            "mtu": self.mtu,
        }


def _linux_flags_mtu(name: str) -> tuple[int | None, int | None]:
    if not sys.platform.startswith("linux"):
        return None, None
    import fcntl

    request = struct.pack("16sh14x", name.encode()[:15], 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            flags = struct.unpack("16sh14x", fcntl.ioctl(probe, _SIOCGIFFLAGS, request))[1]
            mtu = struct.unpack("16si12x", fcntl.ioctl(probe, _SIOCGIFMTU, request))[1]
        except OSError:
            return None, None
    return flags & 0xFFFF, mtu


def _index_of(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return 0


def _make_interface(
    name: str, index: int, v4: tuple[IPv4Interface, ...], v6: tuple[IPv6Interface, ...]
) -> Interface:
    flags, mtu = _linux_flags_mtu(name)
    if flags is None:
        loopback = any(a.ip.is_loopback for a in v4) or any(a.ip.is_loopback for a in v6)
    else:
        loopback = bool(flags & _IFF_LOOPBACK)
    return Interface(
        name=name,
        index=index,
        ipv4=v4,
        ipv6=v6,
        up=None if flags is None else bool(flags & _IFF_UP),
        running=None if flags is None else bool(flags & _IFF_RUNNING),
        multicast=None if flags is None else bool(flags & _IFF_MULTICAST),
        broadcast=None if flags is None else bool(flags & _IFF_BROADCAST),
        loopback=loopback,
        mtu=mtu,
    )


def list_interfaces() -> list[Interface]:
    """Every interface of this host (this network namespace), sorted by index."""
    result: list[Interface] = []
    seen: set[str] = set()
    for adapter in ifaddr.get_adapters():
        name = str(adapter.name)
        if name in seen:
            continue
        seen.add(name)
        v4: list[IPv4Interface] = []
        v6: list[IPv6Interface] = []
        for ip in adapter.ips:
            if isinstance(ip.ip, tuple):
                v6.append(IPv6Interface(f"{ip.ip[0]}/{ip.network_prefix}"))
            else:
                v4.append(IPv4Interface(f"{ip.ip}/{ip.network_prefix}"))
        index = int(getattr(adapter, "index", 0) or 0) or _index_of(name)
        result.append(_make_interface(name, index, tuple(v4), tuple(v6)))
    # getifaddrs omits interfaces with no address at all; the kernel still knows them.
    with contextlib.suppress(OSError):
        for index, name in socket.if_nameindex():
            if name not in seen:
                result.append(_make_interface(name, index, (), ()))
    return sorted(result, key=lambda i: i.index)


def _names(interfaces: list[Interface]) -> str:
    return ", ".join(i.name for i in interfaces) or "none"


def _loopback(interfaces: list[Interface]) -> Interface:
    for candidate in interfaces:
        if candidate.loopback:
            return candidate
    raise InterfaceError("this host has no loopback interface; bring it up: ip link set lo up")


def route_interface(
    group: IPv4Address | IPv6Address, interfaces: list[Interface] | None = None
) -> Interface | None:
    """The interface the kernel's routing table picks for ``group``; None when there is no route.

    Found by connecting a UDP socket (which sends nothing) and reading the source address the
    routing table chose for it.
    """
    interfaces = list_interfaces() if interfaces is None else interfaces
    af = socket.AF_INET if group.version == 4 else socket.AF_INET6
    try:
        with socket.socket(af, socket.SOCK_DGRAM) as probe:
            probe.connect((str(group), 9))
            source = ipaddress.ip_address(probe.getsockname()[0].split("%", 1)[0])
    except OSError as exc:
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EINVAL, errno.EADDRNOTAVAIL):
            return None
        raise InterfaceError(f"cannot ask the kernel for a route to {group}: {exc}") from exc
    return _owner_of(interfaces, source)


def default_interface(family: int = 4, group: IPv4Address | IPv6Address | None = None) -> Interface:
    """The interface the kernel would send ``group`` out of; loopback when there is no route."""
    interfaces = list_interfaces()
    if group is None:
        group = IPv4Address("239.255.255.250") if family == 4 else IPv6Address("ff05::1:3")
    return route_interface(group, interfaces) or _loopback(interfaces)


def resolve_interface(
    spec: str | int | None,
    family: int = 4,
    *,
    group: IPv4Address | IPv6Address | None = None,
    require_multicast: bool = True,
) -> Interface:
    """Find an interface by name, index, or one of its addresses; None means the default.

    With ``require_multicast`` an interface that is down or lacks the MULTICAST flag is an
    error naming the command that fixes it. Loopback is accepted although Linux does not flag
    it MULTICAST: the kernel delivers multicast on it all the same.
    """
    if spec is None or spec == "":
        chosen = default_interface(family, group)
    else:
        interfaces = list_interfaces()
        chosen_or_none = _find(interfaces, spec)
        if chosen_or_none is None:
            raise InterfaceError(
                f"no interface {spec!r} on this host; available: {_names(interfaces)} "
                "(see `mcast ifaces`)"
            )
        chosen = chosen_or_none
    if require_multicast:
        check_multicast_capable(chosen)
    return chosen


def _find(interfaces: list[Interface], spec: str | int) -> Interface | None:
    text = str(spec).strip()
    if text.isdigit():
        for candidate in interfaces:
            if candidate.index == int(text):
                return candidate
        return None
    for candidate in interfaces:
        if candidate.name == text:
            return candidate
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    return _owner_of(interfaces, address)


def _owner_of(interfaces: list[Interface], address: IPv4Address | IPv6Address) -> Interface | None:
    for candidate in interfaces:
        if address.version == 4 and any(a.ip == address for a in candidate.ipv4):
            return candidate
        if address.version == 6 and any(a.ip == address for a in candidate.ipv6):
            return candidate
    return None


def check_multicast_capable(interface: Interface) -> None:
    """Raise InterfaceError when multicast cannot work on ``interface``, naming the fix."""
    if interface.up is False:
        raise InterfaceError(
            f"interface {interface.name} is down; bring it up: ip link set {interface.name} up"
        )
    if interface.multicast is False and not interface.loopback:
        raise InterfaceError(
            f"interface {interface.name} has no MULTICAST flag, so the kernel will not join "
            f"groups on it; enable it: ip link set {interface.name} multicast on"
        )
