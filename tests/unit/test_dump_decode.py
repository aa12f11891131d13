"""Datagram descriptions and pcap records, checked against the formats' own rules."""

from __future__ import annotations

import io
import random
import struct

from hypothesis import given
from hypothesis import strategies as st

from mcastkit.diag.bench import make_payload
from mcastkit.diag.dump import PcapWriter, _checksum, describe_untrusted, flag_names
from mcastkit.diag.ping import PingSession
from mcastkit.security import GroupKey, KeyRing
from mcastkit.wire import Flag, Frame, FrameType, encode_frame

FRAME = Frame(FrameType.DATA, Flag.UNICAST, 0xAB, 3, 9, 0, "news/x", b"hello")


def test_dump_names_every_flag_bit_a_frame_carries() -> None:
    # Totality: each bit the protocol defines has its name (REPAIR and ACK_WANTED were never
    # shown once), and a bit it does not define is shown, not hidden.
    for bit in Flag:
        frame = Frame(FrameType.RDATA, int(bit), 0xAB, 3, 9, 0, "t", b"x")
        named = describe_untrusted(encode_frame(frame))["flags"]
        assert named == [str(bit.name).lower().replace("_", "-")]
    assert "repair" in flag_names(0xFF) and "ack-wanted" in flag_names(0xFF)


@given(st.integers(0, 255))
def test_flag_names_account_for_every_bit(flags: int) -> None:
    names = flag_names(flags)
    assert len(names) == bin(flags).count("1")
    unknown = [int(n, 16) for n in names if n.startswith("0x")]
    named = sum(int(bit) for bit in Flag if str(bit.name).lower().replace("_", "-") in names)
    assert named + sum(unknown) == flags


def test_plain_sealed_and_opened_frames() -> None:
    plain = describe_untrusted(encode_frame(FRAME))
    assert plain == {
        "kind": "mcastkit",
        "type": "DATA",
        "flags": ["unicast"],
        "sender": f"{0xAB:016x}",
        "incarnation": 3,
        "seq": 9,
        "topic": "news/x",
        "payload_size": 5,
        "encrypted": False,
    }
    key = GroupKey(b"k" * 32)
    sealed = KeyRing([key], random.Random(1).randbytes).seal(encode_frame(FRAME))
    closed = describe_untrusted(sealed)
    assert closed == {"kind": "mcastkit", "encrypted": True, "key_id": f"{key.key_id:08x}"}
    opened = describe_untrusted(sealed, KeyRing([key], random.Random(2).randbytes))
    assert opened["topic"] == "news/x" and opened["encrypted"] is True
    wrong = describe_untrusted(sealed, KeyRing([GroupKey(b"w" * 32)], random.Random(3).randbytes))
    assert wrong["error"] == "unknown-key"


def test_ping_bench_and_raw() -> None:
    session = PingSession(7, now_ns=0, interval_ns=1, ttl=5)
    probe = session.tick(0)[0][0]
    assert describe_untrusted(probe)["kind"] == "mcast-ping"
    assert describe_untrusted(make_payload(42, 0, 64)) == {"kind": "mcast-bench", "seq": 42}
    assert describe_untrusted(b"hello") == {"kind": "raw"}


@given(st.binary(max_size=300))
def test_describe_never_raises(data: bytes) -> None:
    assert "kind" in describe_untrusted(data)
    assert "kind" in describe_untrusted(b"MK" + data)


def test_pcap_ipv4_record_has_valid_header_checksum() -> None:
    stream = io.BytesIO()
    writer = PcapWriter(stream)
    writer.write(
        b"abc",
        source="10.0.0.1",
        source_port=4000,
        destination="239.1.2.3",
        destination_port=5000,
        ttl=3,
        wall_time=1700000000.25,
    )
    raw = stream.getvalue()
    magic, major, minor, _zone, _sigfigs, snaplen, linktype = struct.unpack_from("<IHHiIII", raw)
    assert (magic, major, minor, snaplen, linktype) == (0xA1B2C3D4, 2, 4, 65535, 101)
    seconds, micros, captured, original = struct.unpack_from("<IIII", raw, 24)
    assert (seconds, micros, captured, original) == (1700000000, 250000, 31, 31)
    packet = raw[40:]
    assert _checksum(packet[:20]) == 0  # a valid IPv4 header sums to zero
    assert packet[8] == 3 and packet[9] == 17
    assert struct.unpack("!HHH", packet[20:26]) == (4000, 5000, 11)
    assert packet[28:] == b"abc"


def test_pcap_ipv6_record_has_valid_udp_checksum() -> None:
    stream = io.BytesIO()
    PcapWriter(stream).write(
        b"xyz",
        source="fe80::1",
        source_port=1,
        destination="ff12::9",
        destination_port=2,
        ttl=1,
        wall_time=0.0,
    )
    packet = stream.getvalue()[40:]
    src, dst = packet[8:24], packet[24:40]
    udp = packet[40:]
    pseudo = src + dst + struct.pack("!I3xB", len(udp), 17)
    assert _checksum(pseudo + udp) == 0


def test_every_kind_of_datagram_is_told_apart_by_the_registry() -> None:
    # Before: a file-transfer datagram ("MKT1" starts with "MK") was shown as a broken frame.
    from mcastkit.magics import DatagramKind, kind_of
    from mcastkit.transfer.protocol import TransferKind, head

    transfer = head(TransferKind.STATUS_REQ, 0xABCD) + b"\x00\x00\x00\x01"
    assert kind_of(transfer) is DatagramKind.TRANSFER
    described = describe_untrusted(transfer)
    assert described == {
        "kind": "mcast-transfer",
        "type": "status_req",
        "session": f"{0xABCD:016x}",
        "size": 4,
    }
    assert kind_of(encode_frame(FRAME)) is DatagramKind.FRAME
    assert kind_of(b"MK\x01\xe1" + bytes(40)) is DatagramKind.SEALED
    assert kind_of(b"MKB1") is DatagramKind.BENCH and kind_of(b"MKP1") is DatagramKind.PING
    assert kind_of(b"") is DatagramKind.OTHER and kind_of(b"MK") is DatagramKind.OTHER
    assert describe_untrusted(b"MKT1\x63")["error"] == "malformed"
