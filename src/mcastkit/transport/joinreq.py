"""Platform facts and the RFC 3678 join requests (``group_req``, ``group_source_req``), whose
option numbers and struct layouts differ per OS."""

from __future__ import annotations

import socket
import struct
import sys

from ..addr import IPAddress

LINUX = sys.platform.startswith("linux")
WINDOWS = sys.platform == "win32"
BSD_LIKE = sys.platform == "darwin" or "bsd" in sys.platform

# RFC 3678 option numbers differ per OS: linux/in.h, macOS netinet/in.h, Windows ws2ipdef.h.
if LINUX:
    MCAST_JOIN_GROUP, MCAST_BLOCK_SOURCE, MCAST_LEAVE_GROUP = 42, 43, 45
    MCAST_JOIN_SOURCE_GROUP, MCAST_LEAVE_SOURCE_GROUP = 46, 47
elif WINDOWS:
    MCAST_JOIN_GROUP, MCAST_LEAVE_GROUP, MCAST_BLOCK_SOURCE = 41, 42, 43
    MCAST_JOIN_SOURCE_GROUP, MCAST_LEAVE_SOURCE_GROUP = 45, 46
else:  # macOS / BSD
    MCAST_JOIN_GROUP, MCAST_LEAVE_GROUP = 80, 81
    MCAST_JOIN_SOURCE_GROUP, MCAST_LEAVE_SOURCE_GROUP, MCAST_BLOCK_SOURCE = 82, 83, 84

# struct group_req / group_source_req: a uint32 interface index, then sockaddr_storage(s).
# Linux and Windows align sockaddr_storage to a long (padding after the index on 64-bit);
# macOS packs the struct to 4 bytes (no padding).
_GSR_PAD = 0 if BSD_LIKE else struct.calcsize("P") - 4
_SOCKADDR_STORAGE = 128


def _sockaddr(address: IPAddress) -> bytes:
    """A sockaddr_in / sockaddr_in6 (port 0) padded to sockaddr_storage."""
    if address.version == 4:
        family, body = socket.AF_INET, struct.pack("!H", 0) + address.packed
    else:
        family, body = socket.AF_INET6, struct.pack("!HI", 0, 0) + address.packed + b"\0" * 4
    if BSD_LIKE:
        length = 16 if address.version == 4 else 28
        head = struct.pack("BB", length, family)
    else:
        head = struct.pack("=H", family)
    raw = head + body
    return bytes(raw + b"\0" * (_SOCKADDR_STORAGE - len(raw)))


def _group_req(ifindex: int, group: IPAddress) -> bytes:
    return struct.pack("=I", ifindex) + b"\0" * _GSR_PAD + _sockaddr(group)


def ip_mreqn(group: IPAddress | None, local: IPAddress | None, ifindex: int) -> bytes:
    """struct ip_mreqn (Linux): a group (none: for IP_MULTICAST_IF), the local address and
    the interface index. The one builder of it."""
    none = b"\0" * 4
    return struct.pack(
        "=4s4si", group.packed if group else none, local.packed if local else none, ifindex
    )


def _group_source_req(ifindex: int, group: IPAddress, source: IPAddress) -> bytes:
    return _group_req(ifindex, group) + _sockaddr(source)
