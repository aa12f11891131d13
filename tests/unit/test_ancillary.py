"""Parsing recvmsg ancillary data and building the RFC 3678 request structs."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv6Address

from mcastkit.transport import ancillary, joinreq
from mcastkit.transport.interfaces import scoped, zoned


def test_ipv4_pktinfo_and_ttl() -> None:
    pktinfo = struct.pack("=i4s4s", 7, bytes(4), IPv4Address("239.1.2.3").packed)
    ttl = struct.pack("=i", 5)
    packet = ancillary.parse_ancillary(
        b"data",
        ("10.0.0.1", 4000),
        [
            (socket.IPPROTO_IP, ancillary.IP_PKTINFO, pktinfo),
            (socket.IPPROTO_IP, socket.IP_TTL, ttl),
        ],
    )
    assert (packet.destination, packet.ifindex, packet.ttl) == ("239.1.2.3", 7, 5)
    assert (packet.source, packet.source_port) == ("10.0.0.1", 4000)


def test_ipv6_pktinfo_and_hoplimit_and_short_payloads_ignored() -> None:
    info = IPv6Address("ff12::1").packed + struct.pack("=i", 3)
    packet = ancillary.parse_ancillary(
        b"",
        ("fe80::1%eth0", 1, 0, 3),
        [
            (socket.IPPROTO_IPV6, ancillary.IPV6_PKTINFO, info),
            (socket.IPPROTO_IPV6, ancillary.IPV6_HOPLIMIT, struct.pack("=i", 1)),
            (socket.IPPROTO_IP, ancillary.IP_PKTINFO, b"\x00"),  # truncated: ignored
        ],
    )
    assert (packet.destination, packet.ifindex, packet.ttl) == ("ff12::1", 3, 1)


def test_group_source_req_layout_on_linux() -> None:
    req = joinreq._group_source_req(9, IPv4Address("232.1.1.1"), IPv4Address("10.0.0.1"))
    assert len(req) == 4 + joinreq._GSR_PAD + 2 * 128
    assert struct.unpack_from("=I", req)[0] == 9
    group_at = 4 + joinreq._GSR_PAD
    assert struct.unpack_from("=H", req, group_at)[0] == socket.AF_INET
    assert req[group_at + 4 : group_at + 8] == IPv4Address("232.1.1.1").packed
    assert req[group_at + 128 + 4 : group_at + 128 + 8] == IPv4Address("10.0.0.1").packed


def test_a_link_local_source_keeps_its_zone_by_name_and_sends_with_its_scope() -> None:
    # Python gives the host without its zone and the scope id apart; a 2-tuple sent back
    # loses it (sendto's scope id defaults to 0), which the kernel refuses for fe80::/10.
    lo = socket.if_nametoindex("lo")
    packet = ancillary.parse_ancillary(b"", ("fe80::1", 4000, 0, lo), [])
    assert (packet.source, packet.source_port) == ("fe80::1%lo", 4000)
    assert scoped((packet.source, 4000)) == ("fe80::1", 4000, 0, lo)
    assert scoped(("fe80::1%" + str(lo), 4000)) == ("fe80::1", 4000, 0, lo)
    assert zoned(("fd00::1", 1, 0, 0)) == ("fd00::1", 1)  # no scope: unchanged
    assert scoped(("10.0.0.1", 5)) == ("10.0.0.1", 5)
    assert scoped(("fd00::1", 5, 0, 0)) == ("fd00::1", 5, 0, 0)
