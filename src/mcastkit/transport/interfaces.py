"""Network interfaces: list them, resolve a user's choice, pick the kernel's default.

Addresses come from ``ifaddr`` (getifaddrs on POSIX, GetAdaptersAddresses on Windows). Flags
and MTU come from the SIOCGIFFLAGS / SIOCGIFMTU ioctls on Linux, which answer for the network
namespace of the calling thread (``/sys/class/net`` would answer for the mounting one).
Elsewhere flags are reported as unknown (None) and never block a join.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import socket
import struct
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Any

import ifaddr

from ..addr import GroupSpec, classify
from ..errors import InterfaceError
from ..netif import ALL, IfaceChoice, Interface, eligible_for_all
from .platform import CAPS

__all__ = [
    "ALL",
    "IfaceChoice",
    "Interface",
    "choose_interfaces",
    "default_interface",
    "device_exists",
    "eligible_for_all",
    "gateways",
    "interface_name",
    "is_multi",
    "list_interfaces",
    "parse_gateways",
    "resolve_interface",
    "resolve_interfaces",
    "route_interface",
    "router_hint",
    "scoped",
    "zoned",
]

_SIOCGIFFLAGS = 0x8913
_SIOCGIFMTU = 0x8921
_IFF_UP = 0x1
_IFF_BROADCAST = 0x2
_IFF_LOOPBACK = 0x8
_IFF_RUNNING = 0x40
_IFF_MULTICAST = 0x1000


def _linux_flags_mtu(name: str) -> tuple[int | None, int | None]:
    if not CAPS.ifflags:
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


@functools.lru_cache(maxsize=1024)
def scoped(destination: tuple[Any, ...]) -> tuple[Any, ...]:
    """``destination`` as sendto and bind keep it. Python drops the zone of a 2-tuple's host
    ("fe80::1%eth0": the scope id argument defaults to 0) and the kernel refuses a link-local
    address without one, silently for a caller that counts send errors; so a zoned host
    becomes (address, port, 0, index). Anything else is returned as it is."""
    host = destination[0]
    if len(destination) != 2 or "%" not in host:
        return destination
    address, zone = host.split("%", 1)
    index = int(zone) if zone.isdigit() else _index_of(zone)
    return (address, destination[1], 0, index)


def zoned(address: tuple[Any, ...]) -> tuple[str, int]:
    """(host, port) of a received socket address. A link-local IPv6 host keeps its zone, by
    name (``fe80::1%eth0``): shown as a user writes it, and ``scoped`` can answer it."""
    host = str(address[0])
    if len(address) == 4 and address[3] and "%" not in host:
        host = f"{host}%{interface_name(address[3])}"
    return host, int(address[1])


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


def is_multi(spec: IfaceChoice) -> bool:
    """True when ``spec`` names a set of interfaces ("all", "a,b" or a list)."""
    if isinstance(spec, (list, tuple)):
        return True
    return isinstance(spec, str) and (spec.strip() == ALL or "," in spec)


def _items(spec: IfaceChoice) -> list[str | int]:
    if isinstance(spec, (list, tuple)):
        items = list(spec)
    elif isinstance(spec, str):
        items = [part.strip() for part in spec.split(",")]
    else:
        items = [spec] if spec is not None else []
    if not items or any(str(item).strip() == "" for item in items):
        raise InterfaceError(
            f"empty interface name in {spec!r}; give names separated by commas, e.g. eth0,eth1"
        )
    return items


def resolve_interfaces(
    spec: IfaceChoice,
    family: int = 4,
    *,
    group: IPv4Address | IPv6Address | None = None,
    require_multicast: bool = True,
) -> list[Interface]:
    """The interfaces ``spec`` names: "all" (every interface ``eligible_for_all``), a list
    or "a,b" (each resolved, duplicates once), or one (``resolve_interface``)."""
    if not is_multi(spec):
        single = spec[0] if isinstance(spec, (list, tuple)) else spec
        return [resolve_interface(single, family, group=group, require_multicast=require_multicast)]
    if isinstance(spec, str) and spec.strip() == ALL:
        interfaces = list_interfaces()
        chosen = [i for i in interfaces if eligible_for_all(i, family)]
        if not chosen:
            raise InterfaceError(
                f"no interface is up with MULTICAST and an IPv{family} address (not counting "
                f"loopback); available: {_names(interfaces)} (see `mcast ifaces`)"
            )
        return chosen
    result: list[Interface] = []
    for item in _items(spec):
        interface = resolve_interface(
            item, family, group=group, require_multicast=require_multicast
        )
        if all(interface.index != seen.index for seen in result):
            result.append(interface)
    return result


@functools.lru_cache(maxsize=256)
def _name_of_index(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return str(index)


def device_exists(index: int) -> bool:
    """True while interface ``index`` exists (up or down) in this network namespace."""
    try:
        socket.if_indextoname(index)
    except OSError:
        return False
    return True


def interface_name(index: int | None) -> str | None:
    """The name of interface ``index`` (its number when it is gone); None for None."""
    if index is None or index <= 0:
        return None
    return _name_of_index(index)


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


def choose_interfaces(
    spec: GroupSpec, iface: IfaceChoice, *, single: bool = False
) -> tuple[list[Interface], str | None]:
    """The interfaces for ``spec`` (``iface`` wins over ``%iface`` in the spec).

    Multicast needs interfaces that are up with the MULTICAST flag; broadcast does not, and
    takes one. Returns the loopback-fallback notice too (None when the choice was the user's
    or a route's). ``single``: a set of interfaces is an error (a sending socket has one).
    """
    chosen = iface if iface is not None else spec.iface
    target = None if spec.broadcast else spec.group
    if is_multi(chosen):
        if single:
            raise InterfaceError(
                f"sending takes one interface, not {chosen!r}; give one name (see `mcast "
                "ifaces`), or run one sender per interface"
            )
        if spec.broadcast:
            raise InterfaceError("broadcast takes one interface; give one name")
        if isinstance(chosen, str) and chosen.strip() == ALL:
            interfaces = list_interfaces()
            taken = [i for i in interfaces if eligible_for_all(i, spec.family)]
            if taken:
                return taken, None
            # Nothing up yet (a laptop before its network): loopback until one comes up.
            loopback = _loopback(interfaces)
            return [loopback], (
                f"no interface is up with MULTICAST and an IPv{spec.family} address yet: on "
                f"{loopback.name} meanwhile, so only this host takes part until one comes up "
                "(see `mcast ifaces`)"
            )
        return resolve_interfaces(chosen, spec.family, group=target), None
    assert not isinstance(chosen, (list, tuple))
    interface = resolve_interface(
        chosen, spec.family, group=target, require_multicast=not spec.broadcast
    )
    fallback = None
    no_choice = chosen in (None, "") and interface.loopback and not spec.broadcast
    if no_choice and route_interface(spec.group) is None:
        fallback = (
            f"no route for {spec.group}: using {interface.name}, so only this host takes "
            f"part; give --iface NAME (see `mcast ifaces`) to reach a network"
        )
    return [interface], fallback


_RTF_GATEWAY = 0x2


def parse_gateways(route_table: str, family: int, name: str) -> list[str]:
    """Next-hop routers on interface ``name`` in the text of /proc/net/route (IPv4) or
    /proc/net/ipv6_route (IPv6), each once, in table order."""
    found: list[str] = []
    for line in route_table.splitlines():
        fields = line.split()
        try:
            if family == 4 and len(fields) >= 4 and fields[0] == name:
                flags, raw = int(fields[3], 16), bytes.fromhex(fields[2])[::-1]
                gateway = str(IPv4Address(raw))
            elif family == 6 and len(fields) >= 10 and fields[9] == name:
                flags, gateway = int(fields[8], 16), str(IPv6Address(bytes.fromhex(fields[4])))
            else:
                continue
        except ValueError:
            continue  # a line this parser does not know (the header)
        if flags & _RTF_GATEWAY and gateway not in found and gateway not in ("0.0.0.0", "::"):
            found.append(gateway)
    return found


def router_hint(spec: GroupSpec, names: list[str], fix: str) -> str | None:
    """Why nothing from another subnet may arrive, when a router is on one of our links:
    TTL 1 (the default) stops at it. ``fix`` says which TTL to raise where. None when no
    router is on any of the interfaces ``names``."""
    routers = [router for name in names for router in gateways(name, spec.family)]
    if not routers:
        return None
    where = ", ".join(dict.fromkeys(routers))
    if not classify(spec.group).routable:
        return (
            f"A router is on this link ({where}), but {spec.group} is link-local and never "
            "crosses one: the others must be on this link."
        )
    return (
        f"A router is on this link ({where}): a sender on another subnet is heard here only "
        "if the routers forward the group and its TTL is above the number of routers in "
        f"between (TTL 1, the default, stops at the first): {fix}. From the other side, "
        f"`mcast ping {spec} --ttl 8` shows the hops."
    )


def gateways(name: str, family: int) -> list[str]:
    """Routers this host sends through on interface ``name`` (its routing table's next
    hops there); empty where the table cannot be read (not Linux)."""
    path = "/proc/net/route" if family == 4 else "/proc/net/ipv6_route"
    try:
        with open(path) as table:
            return parse_gateways(table.read(), family, name)
    except OSError:
        return []
