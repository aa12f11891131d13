"""What the kernel tells about each received datagram: destination, arrival interface, TTL
and its drop counter, from recvmsg's control messages (Linux layouts); and about a receiving
socket's queue: its fill and the datagrams it dropped (SO_MEMINFO)."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from .interfaces import interface_name, zoned
from .platform import CAPS

__all__ = ["CMSG_BUFSIZE", "Packet", "QueueLoad", "parse_ancillary", "queue_load"]

# Linux-only options Python does not name.
IP_MULTICAST_ALL = 49
IPV6_MULTICAST_ALL = 29
IP_PKTINFO = 8
IP_RECVTTL = 12
SO_RCVBUFFORCE = 33
SO_RXQ_OVFL = 40
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)

CMSG_BUFSIZE = 256  # room for pktinfo, TTL and the drop counter
SO_MEMINFO = 55
SK_MEMINFO_RMEM_ALLOC, SK_MEMINFO_RCVBUF, SK_MEMINFO_DROPS = 0, 1, 8
_MEMINFO = struct.Struct("=9I")


@dataclass(frozen=True)
class QueueLoad:
    """A receiving socket's queue as the kernel keeps it."""

    drops: int  # datagrams dropped for a full buffer since the socket opened
    queued: int  # bytes waiting (with the kernel's per-datagram overhead)
    capacity: int  # the receive buffer's size in bytes

    @property
    def fill(self) -> int:
        """The share of the buffer in use, in percent."""
        return self.queued * 100 // max(1, self.capacity)


def queue_load(sock: socket.socket) -> QueueLoad | None:
    """The socket's drop counter and fill (``SO_MEMINFO``, Linux), or None where not known.

    Unlike SO_RXQ_OVFL, which rides on the next datagram, this also counts the drops after
    the last datagram that arrived: a summary that reads it misses none."""
    if not CAPS.meminfo:
        return None
    try:
        info = _MEMINFO.unpack(sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO.size))
    except (OSError, struct.error):
        return None
    return QueueLoad(
        drops=int(info[SK_MEMINFO_DROPS]),
        queued=int(info[SK_MEMINFO_RMEM_ALLOC]),
        capacity=int(info[SK_MEMINFO_RCVBUF]),
    )


@dataclass(frozen=True)
class Packet:
    """One received datagram with what the kernel told us about it."""

    data: bytes
    source: str
    source_port: int
    destination: str | None = None
    ifindex: int | None = None
    ttl: int | None = None
    drops: int | None = None  # SO_RXQ_OVFL: datagrams the kernel dropped on this socket so far

    @property
    def iface(self) -> str | None:
        """The name of the interface the datagram arrived on (None when not known)."""
        return interface_name(self.ifindex)


def parse_ancillary(
    data: bytes, address: tuple[object, ...], ancillary: list[tuple[int, int, bytes]]
) -> Packet:
    """Build a Packet from recvmsg's results (Linux layouts of in_pktinfo/in6_pktinfo)."""
    destination: str | None = None
    ifindex: int | None = None
    ttl: int | None = None
    drops: int | None = None
    for level, kind, payload in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= 12:
            ifindex = struct.unpack_from("=i", payload, 0)[0]
            destination = str(IPv4Address(payload[8:12]))
        elif level == socket.IPPROTO_IP and kind == socket.IP_TTL and len(payload) >= 4:
            ttl = struct.unpack_from("=i", payload, 0)[0]
        elif level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(payload) >= 20:
            destination = str(IPv6Address(payload[:16]))
            ifindex = struct.unpack_from("=i", payload, 16)[0]
        elif level == socket.IPPROTO_IPV6 and kind == IPV6_HOPLIMIT and len(payload) >= 4:
            ttl = struct.unpack_from("=i", payload, 0)[0]
        elif level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(payload) >= 4:
            drops = struct.unpack_from("=I", payload, 0)[0]
    host, port = zoned(address)  # a link-local sender keeps its zone: it can be answered
    return Packet(data, host, port, destination, ifindex, ttl, drops)
