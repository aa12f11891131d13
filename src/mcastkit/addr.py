"""Group addresses: parsing ``GROUP:PORT%IFACE`` specs, scopes, and the group-to-MAC mapping.

Pure functions, no sockets. Sources: RFC 5771 (IPv4 multicast blocks), RFC 2365 (administrative
scoping), RFC 4607 (SSM), RFC 3180 (GLOP), RFC 6034 (unicast-prefix-based), RFC 1112 section 6.4
(IPv4 to Ethernet), RFC 4291 sections 2.7 and 2.7.1 (IPv6 multicast), RFC 2464 section 7
(IPv6 to Ethernet), RFC 3306/3956 (IPv6 P and R flags).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from .errors import AddressError

IPAddress = IPv4Address | IPv6Address

__all__ = [
    "GroupInfo",
    "GroupSpec",
    "IPAddress",
    "classify",
    "groups_sharing_mac",
    "mac_for_group",
    "parse_address",
    "parse_group",
    "parse_port",
    "split_host_port",
]

_EXPECTED = (
    "a multicast group was expected: IPv4 224.0.0.0-239.255.255.255 "
    "(e.g. 239.255.0.1 for a private group) or IPv6 ff00::/8 (e.g. ff15::1)"
)

LIMITED_BROADCAST = IPv4Address("255.255.255.255")


@dataclass(frozen=True)
class GroupSpec:
    """A parsed destination: group (or broadcast) address, UDP port and optional interface."""

    group: IPAddress
    port: int
    iface: str | None = None
    broadcast: bool = False

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.group.version

    def __str__(self) -> str:
        host = f"[{self.group}]" if self.group.version == 6 else str(self.group)
        text = f"{host}:{self.port}"
        return f"{text}%{self.iface}" if self.iface else text


def parse_port(text: str) -> int:
    """Parse a UDP port for a group: 1-65535 (0 cannot be joined or sent to)."""
    text = text.strip()
    if not text.isdigit():
        raise AddressError(f"port {text!r} is not a number; expected 1-65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise AddressError(f"port {port} is out of range; expected 1-65535")
    return port


def format_endpoint(host: object, port: int) -> str:
    """``10.0.0.1:5000``, or ``[fd99::1]:5000`` for IPv6: the port never reads as part of it."""
    text = str(host)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def split_host_port(text: str) -> tuple[str, str]:
    """``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT`` to (host, port text; "" if none)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, port
    return text, ""


def parse_address(text: str) -> IPAddress:
    """Parse an IPv4 or IPv6 address literal, with a clear error for anything else."""
    text = text.strip()
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        hint = ""
        if text and not any(ch.isdigit() for ch in text.split(".")[-1]) and "::" not in text:
            hint = " (host names are not accepted for groups; give the address itself)"
        raise AddressError(f"{text!r} is not an IPv4 or IPv6 address{hint}") from None


def _check_group(address: IPAddress, *, allow_broadcast: bool) -> bool:
    """Raise unless ``address`` may be used; return True when it is a broadcast address."""
    if address.is_multicast:
        return False
    if allow_broadcast and address.version == 4 and not address.is_loopback:
        # Limited broadcast, or a directed (subnet) broadcast the user vouches for.
        return True
    if address == LIMITED_BROADCAST:
        raise AddressError(
            f"{address} is the IPv4 limited broadcast address, not a multicast group; "
            "use --broadcast (send/listen) to send or receive broadcast, otherwise " + _EXPECTED
        )
    kind = "unspecified" if address.is_unspecified else "unicast"
    raise AddressError(f"{address} is a {kind} address; " + _EXPECTED)


def parse_group(
    text: str,
    *,
    default_port: int | None = None,
    allow_broadcast: bool = False,
) -> GroupSpec:
    """Parse ``239.1.2.3:5000``, ``[ff15::1]:5000``, ``239.1.2.3:5000%eth0`` and the like.

    The port may be left out when ``default_port`` is given. With ``allow_broadcast`` an IPv4
    broadcast address (limited or directed) is accepted and marked as such.
    """
    raw = text
    text = text.strip()
    if not text:
        raise AddressError("empty group; expected GROUP:PORT such as 239.255.0.1:5000")
    iface: str | None = None
    port_text: str | None = None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise AddressError(f"{raw!r}: missing ']' after the IPv6 address")
        host = text[1:close]
        rest = text[close + 1 :]
        if "%" in host:
            host, iface = host.split("%", 1)
        if "%" in rest:
            rest, outer_iface = rest.split("%", 1)
            if iface and outer_iface != iface:
                raise AddressError(f"{raw!r}: two different interfaces given")
            iface = outer_iface
        if rest:
            if not rest.startswith(":"):
                raise AddressError(f"{raw!r}: expected ':PORT' after ']'")
            port_text = rest[1:]
    else:
        if "%" in text:
            text, iface = text.rsplit("%", 1)
        if text.count(":") > 1:
            host = text  # bare IPv6 literal, no port
        elif ":" in text:
            host, port_text = text.split(":", 1)
        else:
            host = text
    if iface is not None and not iface.strip():
        raise AddressError(f"{raw!r}: empty interface name after '%'")
    address = parse_address(host)
    is_broadcast = _check_group(address, allow_broadcast=allow_broadcast)
    if port_text is None:
        if default_port is None:
            hint = f"[{address}]:5000" if address.version == 6 else f"{address}:5000"
            raise AddressError(f"{raw!r}: no port given; expected GROUP:PORT such as {hint}")
        port = default_port
    else:
        port = parse_port(port_text)
    return GroupSpec(
        group=address, port=port, iface=iface.strip() if iface else None, broadcast=is_broadcast
    )


# --- classification -------------------------------------------------------------------------

_V4_LINK_LOCAL = IPv4Network("224.0.0.0/24")
_V4_INTERNETWORK = IPv4Network("224.0.1.0/24")
_V4_SSM = IPv4Network("232.0.0.0/8")
_V4_GLOP = IPv4Network("233.0.0.0/8")
_V4_ADHOC3 = IPv4Network("233.252.0.0/14")
_V4_UBM = IPv4Network("234.0.0.0/8")
_V4_ADMIN = IPv4Network("239.0.0.0/8")
_V4_ADMIN_LOCAL = IPv4Network("239.255.0.0/16")
_V4_ADMIN_ORG = IPv4Network("239.192.0.0/14")
_V6_SSM = IPv6Network("ff30::/12")
_V6_SOLICITED_NODE = IPv6Network("ff02::1:ff00:0/104")

_WELL_KNOWN_V4 = {
    "224.0.0.1": "all hosts on this link",
    "224.0.0.2": "all routers on this link",
    "224.0.0.5": "OSPF routers",
    "224.0.0.6": "OSPF designated routers",
    "224.0.0.9": "RIPv2 routers",
    "224.0.0.13": "PIM routers",
    "224.0.0.18": "VRRP",
    "224.0.0.22": "IGMPv3 reports",
    "224.0.0.251": "mDNS",
    "224.0.0.252": "LLMNR",
    "224.0.1.1": "NTP",
    "224.0.1.129": "PTP (IEEE 1588) primary",
    "239.255.255.250": "SSDP (UPnP discovery)",
}
_WELL_KNOWN_V6 = {
    "ff02::1": "all nodes on this link",
    "ff02::2": "all routers on this link",
    "ff02::5": "OSPFv3 routers",
    "ff02::d": "PIM routers",
    "ff02::16": "MLDv2 reports",
    "ff02::fb": "mDNS",
    "ff02::1:2": "DHCPv6 relay agents and servers",
    "ff02::1:3": "LLMNR",
    "ff05::1:3": "DHCPv6 servers (site)",
    "ff02::c": "SSDP (UPnP discovery)",
}

_V6_SCOPES = {
    0x0: ("reserved", False),
    0x1: ("interface-local", False),
    0x2: ("link-local", False),
    0x3: ("realm-local", True),
    0x4: ("admin-local", True),
    0x5: ("site-local", True),
    0x8: ("organization-local", True),
    0xE: ("global", True),
    0xF: ("reserved", False),
}


@dataclass(frozen=True)
class GroupInfo:
    """What a group address means: its block, scope, reach, Ethernet MAC and TTL advice."""

    address: str
    family: int
    scope: str
    block: str
    routable: bool
    ssm: bool
    mac: str
    mac_shared_with: int
    ttl_advice: str
    well_known: str | None = None
    notes: list[str] = field(default_factory=list)
    flags: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "address": self.address,
            "family": self.family,
            "scope": self.scope,
            "block": self.block,
            "routable": self.routable,
            "ssm": self.ssm,
            "mac": self.mac,
            "mac_shared_with": self.mac_shared_with,
            "ttl_advice": self.ttl_advice,
            "well_known": self.well_known,
            "notes": list(self.notes),
            "flags": dict(self.flags),
        }


def _as_group(address: IPAddress | str) -> IPAddress:
    if isinstance(address, str):
        address = parse_address(address.split("%", 1)[0])
    _check_group(address, allow_broadcast=False)
    return address


def mac_for_group(address: IPAddress | str) -> str:
    """Ethernet destination MAC for a group (RFC 1112 6.4, RFC 2464 7)."""
    group = _as_group(address)
    if group.version == 4:
        low23 = int(group) & 0x7FFFFF
        octets = [0x01, 0x00, 0x5E, low23 >> 16, (low23 >> 8) & 0xFF, low23 & 0xFF]
    else:
        low32 = int(group) & 0xFFFFFFFF
        octets = [0x33, 0x33, low32 >> 24, (low32 >> 16) & 0xFF, (low32 >> 8) & 0xFF, low32 & 0xFF]
    return ":".join(f"{o:02x}" for o in octets)


def groups_sharing_mac(address: IPAddress | str) -> list[IPv4Address]:
    """The other IPv4 groups with the same MAC (the 5 bits the mapping drops): always 31.

    A NIC filtering by MAC passes all of them up, so the kernel (not the NIC) must tell them
    apart, and a busy group that shares the MAC costs CPU on every member of this one. For IPv6
    the set (every group with the same low 32 bits) is too large to list; this returns [].
    """
    group = _as_group(address)
    if group.version == 6:
        return []
    low23 = int(group) & 0x7FFFFF
    same = []
    for high in range(224, 240):
        for bit in (0, 1):
            candidate = IPv4Address((high << 24) | (bit << 23) | low23)
            if candidate != group:
                same.append(candidate)
    return same


def classify(address: IPAddress | str) -> GroupInfo:
    """Describe a multicast group address."""
    group = _as_group(address)
    if group.version == 4:
        return _classify_v4(group)
    return _classify_v6(group)


def _classify_v4(group: IPv4Address) -> GroupInfo:
    notes: list[str] = []
    ssm = group in _V4_SSM
    if group in _V4_LINK_LOCAL:
        scope, block, routable = "link-local", "224.0.0.0/24 Local Network Control Block", False
        ttl = "TTL 1: routers never forward this block, whatever the TTL"
        notes.append("reserved for link protocols; pick a 239.x group for applications")
        if group == IPv4Address("224.0.0.0"):
            notes.append("224.0.0.0 is the base address and is never used as a group")
    elif group in _V4_INTERNETWORK:
        scope, block, routable = "global", "224.0.1.0/24 Internetwork Control Block", True
        ttl = "set TTL to the number of routers to cross + 1"
        notes.append("assigned to network protocols (NTP, PTP, ...); not for ad-hoc use")
    elif ssm:
        scope, block, routable = "global", "232.0.0.0/8 Source-Specific Multicast (RFC 4607)", True
        ttl = "set TTL to the number of routers to cross + 1"
        notes.append(
            "receivers must join with a source (--source S, IGMPv3); any-source joins "
            "of this block are not forwarded by SSM routers"
        )
    elif group in _V4_GLOP and group not in _V4_ADHOC3:
        scope, block, routable = "global", "233.0.0.0/8 GLOP (RFC 3180)", True
        packed = group.packed
        notes.append(f"GLOP group of AS {packed[1] * 256 + packed[2]}")
        ttl = "set TTL to the number of routers to cross + 1"
    elif group in _V4_UBM:
        scope, block, routable = (
            "global",
            "234.0.0.0/8 Unicast-Prefix-based (RFC 6034)",
            True,
        )
        ttl = "set TTL to the number of routers to cross + 1"
    elif group in _V4_ADMIN:
        routable = True
        if group in _V4_ADMIN_LOCAL:
            scope, block = "admin-local", "239.255.0.0/16 IPv4 Local Scope (RFC 2365)"
        elif group in _V4_ADMIN_ORG:
            scope, block = "organization-local", "239.192.0.0/14 Organization Local (RFC 2365)"
        else:
            scope, block = "admin", "239.0.0.0/8 Administratively Scoped (RFC 2365)"
        ttl = (
            "TTL 1 keeps it on this subnet (the default); raise it to the routers to cross + 1; "
            "scope boundaries on routers stop it at the edge of the site or organisation"
        )
        notes.append("private to your organisation, like 10/8 for unicast: the usual choice")
    else:
        scope, block, routable = "global", "globally scoped (ad-hoc / reserved ranges)", True
        ttl = "set TTL to the number of routers to cross + 1"
        notes.append("global ranges are assigned by IANA; prefer 239.x for private use")
    shared = groups_sharing_mac(group)
    notes.append(
        f"shares its MAC with 31 other groups, e.g. {shared[0]} and {shared[-1]} "
        "(the NIC cannot tell them apart; the kernel filters)"
    )
    return GroupInfo(
        address=str(group),
        family=4,
        scope=scope,
        block=block,
        routable=routable,
        ssm=ssm,
        mac=mac_for_group(group),
        mac_shared_with=len(shared),
        ttl_advice=ttl,
        well_known=_WELL_KNOWN_V4.get(str(group)),
        notes=notes,
    )


def _classify_v6(group: IPv6Address) -> GroupInfo:
    packed = group.packed
    flag_bits = packed[1] >> 4
    scope_bits = packed[1] & 0x0F
    flags = {
        "R_rendezvous_point_embedded": bool(flag_bits & 0x4),
        "P_prefix_based": bool(flag_bits & 0x2),
        "T_transient": bool(flag_bits & 0x1),
    }
    scope, routable = _V6_SCOPES.get(scope_bits, (f"unassigned ({scope_bits:x})", True))
    ssm = group in _V6_SSM and packed[2] == 0 and packed[3] == 0
    notes: list[str] = []
    if ssm:
        block = "ff3x::/32 Source-Specific Multicast (RFC 4607)"
        notes.append("receivers must join with a source (--source S, MLDv2)")
    elif flags["R_rendezvous_point_embedded"]:
        block = "ff7x::/12 embedded-RP (RFC 3956)"
    elif flags["P_prefix_based"]:
        block = "ff3x::/12 unicast-prefix-based (RFC 3306)"
    elif flags["T_transient"]:
        block = "ff1x::/12 transient (dynamically assigned)"
    else:
        block = "ff0x::/12 well-known (permanently assigned)"
    if scope_bits == 0x1:
        ttl = "interface-local: never leaves the host (loopback only)"
    elif scope_bits == 0x2:
        ttl = "hop limit 1: link-local groups never cross a router; give the interface (%eth0)"
        notes.append("link-local groups need an interface: GROUP:PORT%IFACE")
    elif routable:
        ttl = f"{scope} scope: set the hop limit to the routers to cross + 1"
    else:
        ttl = "reserved scope: do not use"
    if group in _V6_SOLICITED_NODE:
        notes.append("solicited-node group (neighbour discovery)")
    notes.append(
        "shares its MAC with every IPv6 group that ends in the same 32 bits "
        f"(::{group.exploded[-9:]})"
    )
    return GroupInfo(
        address=str(group),
        family=6,
        scope=scope,
        block=block,
        routable=routable,
        ssm=ssm,
        mac=mac_for_group(group),
        mac_shared_with=-1,
        ttl_advice=ttl,
        well_known=_WELL_KNOWN_V6.get(str(group)),
        notes=notes,
        flags=flags,
    )
