"""Several interfaces without sockets: which interfaces "all" and lists pick, how a new
snapshot of the host's interfaces turns into events, and how a session on several paths
delivers a datagram seen twice once (and is bounded while doing so)."""

from __future__ import annotations

import argparse
import random
from ipaddress import IPv4Interface, IPv6Interface

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcastkit.cli import argtypes
from mcastkit.errors import InterfaceError
from mcastkit.events import AddressChanged, InterfaceDown, InterfaceUp, Message
from mcastkit.ifwatch import InterfaceTracker
from mcastkit.peers import MAX_PATHS
from mcastkit.session import Session
from mcastkit.transport import Interface, is_multi, resolve_interfaces
from mcastkit.transport.interfaces import eligible_for_all


def _iface(
    name: str,
    index: int,
    v4: tuple[str, ...] = ("10.0.0.1/24",),
    *,
    up: bool = True,
    running: bool = True,
    multicast: bool = True,
    loopback: bool = False,
) -> Interface:
    return Interface(
        name=name,
        index=index,
        ipv4=tuple(IPv4Interface(a) for a in v4),
        ipv6=(IPv6Interface(f"fe80::{index}/64"),),
        up=up,
        running=running,
        multicast=multicast,
        broadcast=True,
        loopback=loopback,
        mtu=1500,
    )


def test_all_takes_up_multicast_interfaces_with_an_address_of_the_family() -> None:
    assert eligible_for_all(_iface("eth0", 2), 4)
    assert not eligible_for_all(_iface("lo", 1, ("127.0.0.1/8",), loopback=True), 4)
    assert not eligible_for_all(_iface("eth1", 3, up=False), 4)
    assert not eligible_for_all(_iface("eth2", 4, running=False), 4)  # no carrier
    assert not eligible_for_all(_iface("eth3", 5, multicast=False), 4)
    assert not eligible_for_all(_iface("eth4", 6, ()), 4)
    assert eligible_for_all(_iface("eth4", 6, ()), 6)  # a link-local address is enough


def test_what_counts_as_several() -> None:
    assert is_multi("all") and is_multi("eth0,eth1") and is_multi(["eth0"])
    assert not is_multi("eth0") and not is_multi(None) and not is_multi(3)


@pytest.mark.parametrize("bad", ["eth0,", ",", "eth0,,eth1"])
def test_an_empty_name_in_a_list_is_refused(bad: str) -> None:
    with pytest.raises(InterfaceError, match="empty interface name"):
        resolve_interfaces(bad)


def test_an_unknown_name_in_a_list_names_what_exists() -> None:
    with pytest.raises(InterfaceError, match=r"no interface 'nosuch0'.*available: "):
        resolve_interfaces("lo,nosuch0")


def test_a_list_names_each_interface_once() -> None:
    assert [i.name for i in resolve_interfaces(["lo", "lo", "1"])] == ["lo"]


@pytest.mark.parametrize(
    ("text", "several", "ok"),
    [
        ("all", True, True),
        (" eth0 , eth1 ", True, True),
        ("all", False, False),
        ("eth0,eth1", False, False),
        ("all,eth0", True, False),
        ("eth0,", True, False),
        ("eth0", False, True),
    ],
)
def test_the_option_is_checked_where_it_is_parsed(text: str, several: bool, ok: bool) -> None:
    parse = argtypes.interfaces(several=several)
    if ok:
        assert "," not in parse(text) or parse(text) == "eth0,eth1"
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def test_tracker_reports_down_up_and_address_changes() -> None:
    eth0, eth1 = _iface("eth0", 2), _iface("eth1", 3, ("10.1.0.1/24",))
    tracker = InterfaceTracker(4, "all", [eth0, eth1])
    assert tracker.update([eth0, eth1]) == []
    cut = _iface("eth1", 3, ("10.1.0.1/24",), running=False)
    assert tracker.update([eth0, cut]) == [InterfaceDown("eth1", 3, ("10.1.0.1",))]
    assert tracker.update([eth0, eth1]) == [InterfaceUp("eth1", 3, ("10.1.0.1",))]
    renewed = _iface("eth0", 2, ("10.0.0.9/24",))
    assert tracker.update([renewed, eth1]) == [
        AddressChanged("eth0", 2, ("10.0.0.9",), ("10.0.0.9",), ("10.0.0.1",))
    ]
    wifi = _iface("wlan0", 7, ("192.168.1.5/24",))
    assert tracker.update([renewed, eth1, wifi]) == [InterfaceUp("wlan0", 7, ("192.168.1.5",))]
    assert set(tracker.in_use) == {"eth0", "eth1", "wlan0"}


def test_tracker_sees_a_device_recreated_under_its_name_as_down_then_up() -> None:
    tracker = InterfaceTracker(4, ["eth0"], [_iface("eth0", 2)])
    events = tracker.update([_iface("eth0", 9), _iface("eth1", 3)])
    assert [type(e) for e in events] == [InterfaceDown, InterfaceUp]
    assert events[1].index == 9 and "eth1" not in tracker.in_use  # not named: not taken


def test_tracker_for_a_named_loopback_keeps_it() -> None:
    lo = _iface("lo", 1, ("127.0.0.1/8",), multicast=False, loopback=True)
    tracker = InterfaceTracker(4, ["lo"], [lo])
    assert tracker.update([lo]) == []


@given(st.lists(st.tuples(st.integers(0, 5), st.booleans(), st.integers(0, 2)), max_size=30))
def test_tracker_state_always_matches_the_last_snapshot(steps: list[tuple[int, bool, int]]) -> None:
    tracker = InterfaceTracker(4, "all", [])
    shown: dict[str, Interface] = {}
    for number, running, address in steps:
        name = f"eth{number}"
        shown[name] = _iface(name, number + 2, (f"10.{address}.0.1/24",), running=running)
        tracker.update(list(shown.values()))
        expected = {n for n, i in shown.items() if i.running}
        assert set(tracker.in_use) == expected


def _pair(multipath: bool) -> tuple[Session, Session]:
    rng = random.Random(7)

    def make(name: str) -> Session:
        session = Session(
            node_id=rng.getrandbits(64),
            incarnation=rng.getrandbits(32),
            name=name,
            now=0.0,
            random_bytes=lambda n: rng.randbytes(n),
        )
        session.multipath = multipath
        session.start(0.0)
        return session

    return make("a"), make("b")


def test_a_datagram_seen_on_two_interfaces_is_delivered_once() -> None:
    a, b = _pair(multipath=True)
    for data, _ in a.datagrams_to_send(0.0):
        b.receive_datagram(data, ("10.1.0.1", 5000), 0.0, "eth0")
        b.receive_datagram(data, ("10.2.0.1", 5001), 0.0, "eth1")
    a.publish("t", b"hello", 0.1)
    for data, _ in a.datagrams_to_send(0.1):
        b.receive_datagram(data, ("10.2.0.1", 5001), 0.1, "eth1")
        b.receive_datagram(data, ("10.1.0.1", 5000), 0.1, "eth0")
    messages = []
    while (event := b.next_event()) is not None:
        if isinstance(event, Message):
            messages.append(event)
    assert [(m.text(), m.iface) for m in messages] == [("hello", "eth1")]
    peer = b.peers[a.node_id]
    assert peer.paths == {"eth0": ("10.1.0.1", 5000), "eth1": ("10.2.0.1", 5001)}
    assert b.counters["duplicates"] == 2 and b.counters["dropped"] == 0
    a.close(0.2)
    for data, _ in a.datagrams_to_send(0.2):  # the goodbye, by both paths
        b.receive_datagram(data, ("10.1.0.1", 5000), 0.2, "eth0")
        b.receive_datagram(data, ("10.2.0.1", 5001), 0.2, "eth1")
    assert b.counters["duplicates"] == 3 and b.counters["dropped"] == 0
    b.forget_path("eth1")  # nothing left to forget: the peer is gone


def test_on_one_interface_a_second_copy_is_still_a_replay() -> None:
    a, b = _pair(multipath=False)
    for data, _ in a.datagrams_to_send(0.0):
        b.receive_datagram(data, ("10.1.0.1", 5000), 0.0, "eth0")
        b.receive_datagram(data, ("10.1.0.1", 5000), 0.0, "eth0")
    assert b.counters["dropped:replay"] == 1 and b.counters["duplicates"] == 0


def test_paths_per_peer_are_bounded_against_forged_interface_names() -> None:
    a, b = _pair(multipath=True)
    hello = [data for data, _ in a.datagrams_to_send(0.0)]
    for number in range(MAX_PATHS * 4):
        for data in hello:
            b.receive_datagram(data, (f"10.9.{number}.1", 5000), 0.0, f"if{number}")
    assert len(b.peers[a.node_id].paths) == MAX_PATHS


ROUTE = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth1\t0000000A\tFE00000A\t0003\t0\t0\t0\t000000FF\t0\t0\t0
eth0\t0000A8C0\t010200C0\t0003\t0\t0\t0\t0000FFFF\t0\t0\t0
junk line
"""
ROUTE6 = (
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0\n"
    "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000100 00000003 00000000 00000001     eth0\n"
)


def test_gateways_are_read_from_the_kernel_routing_table() -> None:
    from mcastkit.transport.interfaces import parse_gateways

    assert parse_gateways(ROUTE, 4, "eth0") == ["192.0.2.1"]  # once, though on two routes
    assert parse_gateways(ROUTE, 4, "eth1") == ["10.0.0.254"]
    assert parse_gateways(ROUTE, 4, "eth9") == []
    assert parse_gateways(ROUTE6, 6, "eth0") == ["fd00::1"]
    assert parse_gateways("", 6, "eth0") == []


def test_all_with_nothing_up_stands_in_with_loopback_until_one_comes() -> None:
    from mcastkit.addr import parse_group
    from mcastkit.transport.interfaces import choose_interfaces, list_interfaces

    if any(eligible_for_all(i, 4) for i in list_interfaces()):
        pytest.skip("this network namespace has an interface up: nothing to stand in for")
    chosen, notice = choose_interfaces(parse_group("239.1.2.3:5000"), "all")
    assert [i.name for i in chosen] == ["lo"]
    assert notice is not None and "until one comes up" in notice
    tracker = InterfaceTracker(4, "all", chosen)
    assert tracker.in_use == {}  # the stand-in is not "in use": no down event for it
    eth0 = _iface("eth0", 2)
    assert tracker.update([*chosen, eth0]) == [InterfaceUp("eth0", 2, ("10.0.0.1",))]


def test_a_named_interface_without_carrier_comes_up_later() -> None:
    unplugged = _iface("eth0", 2, running=False)
    tracker = InterfaceTracker(4, ["eth0"], [unplugged])
    assert tracker.in_use == {}
    assert tracker.update([_iface("eth0", 2)]) == [InterfaceUp("eth0", 2, ("10.0.0.1",))]


def test_interface_events_read_as_one_line_and_as_json() -> None:
    down = InterfaceDown("eth1", 3, ("10.1.0.1",))
    assert down.describe() == "interface eth1 is down: nothing arrives there until it is back"
    assert down.to_dict() == {
        "event": "interface-down",
        "iface": "eth1",
        "index": 3,
        "addresses": ["10.1.0.1"],
    }
    moved = AddressChanged("eth0", 2, ("10.0.0.9",), ("10.0.0.9",), ("10.0.0.1",))
    assert moved.describe() == "interface eth0 now has 10.0.0.9"
    assert moved.to_dict()["added"] == ["10.0.0.9"] and moved.to_dict()["removed"] == ["10.0.0.1"]
    assert InterfaceUp("eth2", 4, ()).to_dict()["event"] == "interface-up"
