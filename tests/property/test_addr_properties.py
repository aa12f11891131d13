"""Hypothesis: the address parser and the demo decoder on arbitrary input."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import given
from hypothesis import strategies as st

from mcastkit import AddressError, mac_for_group, parse_group
from mcastkit.addr import groups_sharing_mac
from mcastkit.demo import DemoPeer

v4_groups = st.integers(0xE0000000, 0xEFFFFFFF).map(IPv4Address)
v6_groups = st.integers(0xFF << 120, (1 << 128) - 1).map(IPv6Address)
ports = st.integers(1, 65535)
iface_names = st.none() | st.from_regex(r"[a-z][a-z0-9_.-]{0,14}", fullmatch=True)


@given(group=v4_groups | v6_groups, port=ports, iface=iface_names)
def test_spec_round_trips_through_text(group, port, iface) -> None:
    host = f"[{group}]" if group.version == 6 else str(group)
    text = f"{host}:{port}" + (f"%{iface}" if iface else "")
    spec = parse_group(text)
    assert (spec.group, spec.port, spec.iface) == (group, port, iface)
    assert parse_group(str(spec)) == spec


@given(st.text(max_size=80))
def test_any_text_parses_or_raises_address_error(text: str) -> None:
    try:
        spec = parse_group(text)
    except AddressError:
        return
    assert spec.group.is_multicast
    assert 1 <= spec.port <= 65535


@given(st.integers(0, (1 << 32) - 1).map(IPv4Address))
def test_non_multicast_ipv4_is_rejected(address: IPv4Address) -> None:
    if address.is_multicast:
        return
    try:
        parse_group(f"{address}:5000")
    except AddressError as exc:
        assert str(address) in str(exc)
    else:
        raise AssertionError("accepted a non-multicast address")


@given(v4_groups)
def test_groups_sharing_a_mac_really_share_it(group: IPv4Address) -> None:
    shared = groups_sharing_mac(group)
    assert len(set(shared)) == 31
    assert all(mac_for_group(other) == mac_for_group(group) for other in shared)
    assert all(other.is_multicast for other in shared)


@given(v6_groups)
def test_ipv6_mac_keeps_the_low_32_bits(group: IPv6Address) -> None:
    mac = mac_for_group(group)
    assert mac.startswith("33:33:")
    assert bytes.fromhex(mac[6:].replace(":", "")) == group.packed[-4:]


@given(st.text(max_size=300), st.text(max_size=20))
def test_demo_logic_never_raises(text: str, sender: str) -> None:
    peer = DemoPeer("me", "me")
    event, reply = peer.receive(sender, "name", text, "fuzz")
    assert event.kind in {"invalid", "greeted", "answered", "overheard"}
    if event.kind in {"invalid", "overheard"}:
        assert reply is None
