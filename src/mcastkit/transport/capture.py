"""Passive listening on one interface. ``open_capture``: a capture (Linux AF_PACKET, cooked)
of every IP packet on the link, the interface put in all-multicast mode so groups this host
never joined are seen too; nothing is sent, no group is joined, so a snooping switch shows us
only what it forwards. ``open_link_listeners``: raw sockets that hear IGMP/MLD queries and
PIM hellos (the all-PIM-routers group joined), for the doctor."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct

from ..errors import SocketSetupError
from .interfaces import Interface
from .joinreq import ip_mreqn

__all__ = ["Capture", "open_capture", "open_link_listeners"]

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_ALLMULTI = 2
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
ETH_P_ALL = 0x0003
IP_PROTOCOLS = (0x0800, 0x86DD)
_MREQ = struct.Struct("iHH8s")
_STATS = struct.Struct("II")  # tpacket_stats: packets, drops (both reset by each read)


class Capture:
    """An open capture: ``read`` the queued IP packets; ``drops`` counts what the kernel
    could not queue for us (the capture's own loss, said, never hidden)."""

    def __init__(self, sock: socket.socket, interface: Interface) -> None:
        self.sock = sock
        self.interface = interface
        self.drops = 0
        # On loopback every packet is seen twice, leaving and arriving: keep one.
        self._skip_outgoing = interface.loopback

    def fileno(self) -> int:
        """The descriptor to wait on."""
        return self.sock.fileno()

    def read(self, limit: int = 512) -> list[bytes]:
        """The IP packets queued now (at most ``limit``)."""
        packets = []
        for _ in range(limit):
            try:
                data, address = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            if address[1] not in IP_PROTOCOLS:
                continue
            if self._skip_outgoing and address[2] == PACKET_OUTGOING:
                continue
            packets.append(data)
        return packets

    def update_drops(self) -> int:
        """Read the kernel's capture counters (it resets them) into ``drops``."""
        with contextlib.suppress(OSError, struct.error):
            _packets, dropped = _STATS.unpack(
                self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size)
            )
            self.drops += dropped
        return self.drops

    def close(self) -> None:
        """Stop capturing (the all-multicast mode ends with the socket)."""
        self.sock.close()


def open_capture(interface: Interface) -> Capture:
    """Capture on ``interface``; needs CAP_NET_RAW (root), else SocketSetupError naming it."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    except PermissionError:
        raise SocketSetupError(
            f"capturing on {interface.name} needs CAP_NET_RAW: run as root "
            "(sudo mcast top), or give python that capability"
        ) from None
    except (OSError, AttributeError) as exc:
        raise SocketSetupError(f"cannot capture here (AF_PACKET: {exc})") from None
    try:
        sock.bind((interface.name, ETH_P_ALL))
        mreq = _MREQ.pack(interface.index, PACKET_MR_ALLMULTI, 0, b"")
        with contextlib.suppress(OSError):  # without it: only the groups joined here
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.ENODEV:
            raise SocketSetupError(
                f"no interface {interface.name!r} (see `mcast ifaces`)"
            ) from None
        raise SocketSetupError(f"capturing on {interface.name} failed: {exc.strerror}") from None
    return Capture(sock, interface)


PIM_PROTO = 103
ALL_PIM_ROUTERS = {4: "224.0.0.13", 6: "ff02::d"}


def open_link_listeners(family: int, iface: str, index: int) -> list[tuple[socket.socket, str]]:
    """Raw sockets bound to ``iface`` that receive its IGMP ("igmp") or MLD ("mld") messages
    and PIM hellos ("pim"). Raises PermissionError without root (CAP_NET_RAW), OSError for
    another reason; nothing is left open then."""
    sockets: list[tuple[socket.socket, str]] = []
    try:
        if family == 4:
            sockets.append(
                (socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IGMP), "igmp")
            )
            pim = socket.socket(socket.AF_INET, socket.SOCK_RAW, PIM_PROTO)
            sockets.append((pim, "pim"))
            group = ipaddress.IPv4Address(ALL_PIM_ROUTERS[4])
            with contextlib.suppress(OSError):  # no PIM routers heard, the rest still is
                pim.setsockopt(
                    socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, ip_mreqn(group, None, index)
                )
        else:
            sockets.append(
                (socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6), "mld")
            )
            pim6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, PIM_PROTO)
            sockets.append((pim6, "pim"))
            request = ipaddress.IPv6Address(ALL_PIM_ROUTERS[6]).packed + struct.pack("@I", index)
            with contextlib.suppress(OSError):
                pim6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, request)
        for sock, _ in sockets:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    except OSError:
        for sock, _ in sockets:
            sock.close()
        raise
    return sockets
