"""mcast top's core on packets built by hand: IGMP/MLD joins, leaves and queriers, loss from
sequence numbers, bounds against a flood of groups, and hostile bytes (also hypothesis)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

from hypothesis import given, settings
from hypothesis import strategies as st

from mcastkit.diag.bench import make_payload
from mcastkit.diag.top import MAX_GROUPS, TopView


def _ipv4(source: str, destination: str, protocol: int, body: bytes, options: bytes = b"") -> bytes:
    size = 20 + len(options)
    addresses = IPv4Address(source).packed + IPv4Address(destination).packed
    head = struct.pack("!BBHHHBBH", 0x40 | size // 4, 0, size + len(body), 0, 0, 1, protocol, 0)
    return head + addresses + options + body


def _udp(source: str, group: str, payload: bytes, port: int = 5000) -> bytes:
    return _ipv4(source, group, 17, struct.pack("!HHHH", 4000, port, 8 + len(payload), 0) + payload)


def _igmpv3_report(host: str, records: list[tuple[int, str, list[str]]]) -> bytes:
    body = struct.pack("!BBHHH", 0x22, 0, 0, 0, len(records))
    for kind, group, sources in records:
        body += struct.pack("!BBH4s", kind, 0, len(sources), IPv4Address(group).packed)
        body += b"".join(IPv4Address(s).packed for s in sources)
    return _ipv4(host, "224.0.0.22", 2, body, options=b"\x94\x04\x00\x00")  # router alert


def _mldv2_report(host: str, records: list[tuple[int, str]]) -> bytes:
    body = struct.pack("!BBHHH", 143, 0, 0, 0, len(records))
    for kind, group in records:
        body += struct.pack("!BBH16s", kind, 0, 0, IPv6Address(group).packed)
    hop_by_hop = bytes([58, 0, 5, 2, 0, 0, 1, 0])  # next ICMPv6; router alert; padding
    payload = hop_by_hop + body
    header = struct.pack(
        "!IHBB16s16s", 6 << 28, len(payload), 0, 1,
        IPv6Address(host).packed, IPv6Address("ff02::16").packed,
    )  # fmt: skip
    return header + payload


def test_bench_loss_duplicates_and_late_arrivals() -> None:
    view = TopView()
    for seq in (0, 1, 2, 5, 5, 6, 3):  # 4 lost; 3 late; 5 twice
        view.on_packet(_udp("10.0.0.1", "239.1.1.1", make_payload(seq, 0, 64)), 1.0)
    (row,) = view.snapshot(2.0)["groups"]
    assert row["group"] == "239.1.1.1:5000" and row["kind"] == "bench"
    assert row["packets"] == 7 and row["loss"] == round(1 / 7, 4)
    view.on_packet(_udp("10.0.0.1", "239.1.1.1", make_payload(7, 0, 64)), 2.5)
    (row,) = view.snapshot(3.0)["groups"]
    assert row["pps"] == 1.0 and row["mbps"] == round(64 * 8 / 1e6, 3)


def test_igmpv3_joins_and_leaves_are_events_once() -> None:
    view = TopView()
    join = _igmpv3_report("10.0.0.2", [(4, "239.1.1.1", [])])  # CHANGE_TO_EXCLUDE {}
    ssm = _igmpv3_report("10.0.0.3", [(5, "232.1.1.1", ["10.0.0.9"])])  # ALLOW_NEW
    leave = _igmpv3_report("10.0.0.2", [(3, "239.1.1.1", [])])  # CHANGE_TO_INCLUDE {}
    for packet in (join, join, ssm, leave, leave):  # reports are repeated: said once
        view.on_packet(packet, 1.0)
    shown = view.snapshot(1.0)
    assert [(e["event"], e["host"], e["group"]) for e in shown["events"]] == [
        ("join", "10.0.0.2", "239.1.1.1"),
        ("join", "10.0.0.3", "232.1.1.1"),
        ("leave", "10.0.0.2", "239.1.1.1"),
    ]
    assert {row["group"]: row["members"] for row in shown["groups"]} == {"232.1.1.1": 1}
    assert view.snapshot(2.0, events_after=3)["events"] == []


def test_mldv2_join_and_solicited_node_noise_left_out() -> None:
    view = TopView()
    view.on_packet(_mldv2_report("fe80::2", [(4, "ff15::7"), (4, "ff02::1:ff00:2")]), 1.0)
    shown = view.snapshot(1.0)
    assert [(e["event"], e["group"]) for e in shown["events"]] == [("join", "ff15::7")]
    assert shown["counters"] == {"solicited-node": 1}


def test_the_querier_and_its_version() -> None:
    view = TopView()
    query = struct.pack("!BBH4sBBH", 0x11, 100, 0, bytes(4), 2, 125, 0)  # IGMPv3 general
    view.on_packet(_ipv4("10.0.0.254", "224.0.0.1", 2, query), 5.0)
    shown = view.snapshot(7.0)
    assert shown["queriers"] == {
        "ipv4": {"address": "10.0.0.254", "protocol": "IGMPv3", "heard_s_ago": 2.0}
    }


def test_a_flood_of_groups_is_bounded_and_counted() -> None:
    view = TopView()
    for n in range(MAX_GROUPS + 50):
        view.on_packet(_udp("10.0.0.1", str(IPv4Address("239.0.0.0") + n), b"x"), 1.0)
    assert len(view.rows) == MAX_GROUPS and view.counters["overflow"] == 50


def test_malformed_packets_are_counted_not_raised() -> None:
    view = TopView()
    short_udp = _ipv4("10.0.0.1", "239.1.1.1", 17, b"\x00\x01")
    for packet in (b"", b"\x45", short_udp, b"\x60" + bytes(10), b"\x10abc"):
        view.on_packet(packet, 1.0)
    truncated = _igmpv3_report("10.0.0.2", [(4, "239.1.1.1", [])])[:-3]
    view.on_packet(truncated, 1.0)
    assert sum(view.counters.values()) == 6


@settings(max_examples=400)
@given(st.binary(max_size=200), st.sampled_from([b"", b"\x45\x00", b"\x46\x00", b"\x60\x00"]))
def test_any_bytes_never_raise(data: bytes, prefix: bytes) -> None:
    view = TopView()
    view.on_packet(prefix + data, 1.0)
    view.snapshot(2.0)
