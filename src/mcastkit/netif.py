"""A network interface as mcastkit knows it, and the words for choosing some: vocabulary,
no I/O (``transport.interfaces`` reads them from the host)."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface
from typing import Any

__all__ = ["ALL", "IfaceChoice", "Interface", "eligible_for_all"]

ALL = "all"
# What an ``iface`` argument may be: None (the route's), one name/index/address, "all",
# "eth0,eth1", or a list of any of these.
IfaceChoice = str | int | list[str | int] | tuple[str | int, ...] | None


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


def eligible_for_all(interface: Interface, family: int) -> bool:
    """True when "all" takes ``interface``: up, with carrier, MULTICAST, not loopback, and
    with an address of the family (for IPv6 a link-local one is enough)."""
    return (
        not interface.loopback
        and interface.up is not False
        and interface.running is not False
        and interface.multicast is not False
        and interface.has_family(family)
    )
