"""Group sockets on loopback, in the suite's private namespace (or pinned to lo without root)."""

from __future__ import annotations

import errno
import socket

import pytest

import mcastkit
from mcastkit import SocketSetupError, open_receiver, open_sender
from mcastkit.transport.platform import CAPS

LO = "127.0.0.1"


def test_sender_reaches_receiver_with_packet_info() -> None:
    with (
        open_receiver("239.255.50.1:5500", iface=LO) as rx,
        open_sender("239.255.50.1:5500", iface=LO, ttl=3) as tx,
    ):
        tx.send(b"one")
        packet = rx.recv(timeout=2)
    assert packet is not None
    assert packet.data == b"one"
    assert packet.source == LO
    if not CAPS.pktinfo:  # the POSIX path (MCASTKIT_WITHOUT=pktinfo): no packet info
        assert (packet.destination, packet.ttl, packet.ifindex) == (None, None, None)
        return
    assert packet.destination == "239.255.50.1"
    assert packet.ttl == 3
    assert packet.ifindex == socket.if_nametoindex("lo")


def test_many_receivers_share_one_port_and_each_gets_a_copy() -> None:
    receivers = [open_receiver("239.255.50.2:5501", iface=LO) for _ in range(4)]
    try:
        with open_sender("239.255.50.2:5501", iface=LO) as tx:
            tx.send(b"copy")
        assert [r.recv(timeout=2) is not None for r in receivers] == [True] * 4
    finally:
        for r in receivers:
            r.close()


def test_receiver_sees_only_its_own_group_on_a_shared_port() -> None:
    with (
        open_receiver("239.255.50.3:5502", iface=LO) as a,
        open_receiver("239.255.50.4:5502", iface=LO) as b,
        open_sender("239.255.50.4:5502", iface=LO) as tx,
    ):
        tx.send(b"for-b")
        assert b.recv(timeout=2) is not None
        assert a.recv(timeout=0.3) is None


def test_recv_timeout_returns_none_instead_of_blocking() -> None:
    with open_receiver("239.255.50.5:5503", iface=LO) as rx:
        assert rx.recv(timeout=0.1) is None


def test_ssm_join_on_loopback_filters_by_source() -> None:
    with open_receiver("232.5.5.5:5505", iface=LO, sources=["127.0.0.2"]) as rx:
        with open_sender("232.5.5.5:5505", iface=LO) as other:
            other.send(b"from .1")
        with open_sender("232.5.5.5:5505", iface=LO, source="127.0.0.2") as chosen:
            chosen.send(b"from .2")
        packet = rx.recv(timeout=2)
        assert packet is not None and packet.data == b"from .2"
        assert rx.recv(timeout=0.3) is None


def test_leave_stops_delivery_and_close_is_idempotent() -> None:
    rx = open_receiver("239.255.50.7:5506", iface=LO)
    with open_sender("239.255.50.7:5506", iface=LO) as tx:
        rx.leave()
        tx.send(b"after leave")
        assert rx.recv(timeout=0.3) is None
    rx.close()
    rx.close()


def test_receive_buffer_request_is_reported() -> None:
    with open_receiver("239.255.50.8:5507", iface=LO, rcvbuf=1 << 20) as rx:
        assert rx.rcvbuf is not None and rx.rcvbuf >= 1 << 20


def test_port_held_without_reuse_is_a_clear_error() -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("0.0.0.0", 5508))
    try:
        with pytest.raises(SocketSetupError) as caught:
            open_receiver("239.255.50.9:5508", iface=LO)
        assert caught.value.errno == errno.EADDRINUSE
        assert "ss -ulpn" in str(caught.value)
    finally:
        holder.close()


def test_group_limit_error_names_the_sysctl() -> None:
    # Linux allows net.ipv4.igmp_max_memberships (20 by default) joins per socket.
    with open("/proc/sys/net/ipv4/igmp_max_memberships") as knob:
        limit = int(knob.read())
    rx = open_receiver("239.255.51.0:5509", iface=LO)
    try:
        with pytest.raises(SocketSetupError) as caught:
            for n in range(1, limit + 1):
                mcastkit.transport.sockets._join(
                    mcastkit.GroupSocket(
                        rx.sock, mcastkit.parse_group(f"239.255.51.{n}:5509"), rx.interface
                    )
                )
        assert "igmp_max_memberships" in str(caught.value)
    finally:
        rx.close()


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(mcastkit.AddressError, match="unicast address"):
        open_receiver("10.1.2.3:5000")
    with pytest.raises(mcastkit.InterfaceError, match="no interface 'nope0'"):
        open_receiver("239.255.0.1:5000", iface="nope0")
    with pytest.raises(mcastkit.AddressError, match="IPv6"):
        open_receiver("239.255.0.1:5000", iface=LO, sources=["::1"])
    with pytest.raises(mcastkit.AddressError, match="broadcast"):
        open_sender("255.255.255.255:5000", iface=LO)
    with pytest.raises(mcastkit.AddressError, match="TTL 300"):
        open_sender("239.255.0.1:5000", iface=LO, ttl=300)
    with pytest.raises(mcastkit.AddressError, match="either sources"):
        open_receiver("239.255.0.1:5000", iface=LO, sources=[LO], exclude=["127.0.0.2"])


def test_default_interface_without_a_route_is_loopback() -> None:
    # The suite's private namespace has only lo, so there is no multicast route.
    assert mcastkit.default_interface(4).loopback
