"""``mcast dump`` helpers, no I/O: describe a datagram, and encode pcap records.

A joined socket sees UDP payloads, not packets, so the pcap records carry rebuilt IPv4/IPv6
and UDP headers (LINKTYPE_RAW) with the real addresses, ports and TTL: tshark and Wireshark
read them like a capture.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, BinaryIO

from ..addr import format_endpoint
from ..magics import DatagramKind, kind_of
from ..relay import decode_relay
from ..security import KeyRing
from ..transfer.protocol import TransferKind
from ..transfer.protocol import decode_untrusted as decode_transfer
from ..wire import ENVELOPE, Flag, decode_frame_untrusted, is_sealed
from .bench import HEAD as BENCH_HEAD
from .ping import PATH_NAMES, PingKind, decode_untrusted

__all__ = ["PcapWriter", "describe_untrusted"]


def flag_names(flags: int) -> list[str]:
    """Every bit of a frame's flags byte by name ("repair", "ack-wanted"); a bit no
    version of the protocol defines shows as its value ("0x80")."""
    names = [str(bit.name).lower().replace("_", "-") for bit in Flag if flags & bit]
    unknown = flags & ~sum(Flag) & 0xFF
    return names + [f"0x{1 << n:02x}" for n in range(8) if unknown >> n & 1]


def describe_untrusted(data: bytes, keyring: KeyRing | None = None) -> dict[str, Any]:
    """What a datagram is, as far as mcastkit can tell (never raises).

    The kind comes from the one registry of magics (magics.py), so every protocol's
    datagrams are told apart, file transfers included.
    """
    kind = kind_of(data)
    if kind is DatagramKind.SEALED and is_sealed(data):
        key_id = ENVELOPE.unpack_from(data)[3] if len(data) >= ENVELOPE.size else None
        info: dict[str, Any] = {
            "kind": "mcastkit",
            "encrypted": True,
            "key_id": None if key_id is None else f"{key_id:08x}",
        }
        if keyring is None:
            return info
        opened = keyring.open_untrusted(data)
        if isinstance(opened, str):
            info["error"] = opened
            return info
        return {**_describe_frame(opened), "encrypted": True, "key_id": info["key_id"]}
    if kind is DatagramKind.FRAME:
        return {**_describe_frame(data), "encrypted": False}
    if kind is DatagramKind.PING:
        probe = decode_untrusted(data)
        if probe is None:
            return {"kind": kind.value, "error": "malformed"}
        return {
            "kind": kind.value,
            "type": PingKind(probe.kind).name.lower(),
            "path": PATH_NAMES[probe.path],
            "sender": f"{probe.sender:016x}",
            "seq": probe.seq,
        }
    if kind is DatagramKind.BENCH and len(data) >= BENCH_HEAD.size:
        return {"kind": kind.value, "seq": BENCH_HEAD.unpack_from(data)[1]}
    if kind is DatagramKind.TRANSFER:
        message = decode_transfer(data)
        if message is None:
            return {"kind": kind.value, "error": "malformed"}
        return {
            "kind": kind.value,
            "type": TransferKind(message.kind).name.lower(),
            "session": f"{message.session:016x}",
            "size": len(message.body),
        }
    if kind is DatagramKind.RELAY:
        relayed = decode_relay(bytes(data))
        if relayed is None:
            return {"kind": kind.value, "error": "malformed"}
        what, hop, relay_id, endpoints, inner = relayed
        return {
            "kind": kind.value,
            "type": what.name.lower(),
            "relay": f"{relay_id:016x}",
            "hop": hop,
            "endpoints": [format_endpoint(*e) for e in endpoints],
            "size": len(inner),
        }
    return {"kind": DatagramKind.OTHER.value}


def _describe_frame(data: bytes) -> dict[str, Any]:
    frame = decode_frame_untrusted(data)
    if isinstance(frame, str):
        return {"kind": "mcastkit", "error": frame}
    return {
        "kind": "mcastkit",
        "type": frame.type.name,
        "flags": flag_names(frame.flags),
        "sender": f"{frame.sender:016x}",
        "incarnation": frame.incarnation,
        "seq": frame.seq,
        "topic": frame.topic,
        "payload_size": len(frame.payload),
    }


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class PcapWriter:
    """Write datagrams as a classic pcap file (LINKTYPE_RAW: IP packets, no link layer)."""

    LINKTYPE_RAW = 101

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._ident = 0
        stream.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, self.LINKTYPE_RAW))

    def write(
        self,
        data: bytes,
        *,
        source: str,
        source_port: int,
        destination: str,
        destination_port: int,
        ttl: int | None,
        wall_time: float,
    ) -> None:
        """Append one datagram as an IP/UDP packet."""
        src = ip_address(source.split("%", 1)[0])
        dst = ip_address(destination.split("%", 1)[0])
        udp_length = 8 + len(data)
        hops = 64 if ttl is None else ttl
        if isinstance(src, IPv4Address) and isinstance(dst, IPv4Address):
            self._ident = (self._ident + 1) & 0xFFFF
            header = struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                20 + udp_length,
                self._ident,
                0,
                hops,
                17,
                0,
                src.packed,
                dst.packed,
            )
            header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
            udp = struct.pack("!HHHH", source_port, destination_port, udp_length, 0)
        elif isinstance(src, IPv6Address) and isinstance(dst, IPv6Address):
            header = struct.pack(
                "!IHBB16s16s", 6 << 28, udp_length, 17, hops, src.packed, dst.packed
            )
            pseudo = src.packed + dst.packed + struct.pack("!I3xB", udp_length, 17)
            udp = struct.pack("!HHHH", source_port, destination_port, udp_length, 0)
            checksum = _checksum(pseudo + udp + data) or 0xFFFF
            udp = udp[:6] + struct.pack("!H", checksum)
        else:
            raise ValueError("source and destination must be of one family")
        packet = header + udp + data
        seconds = int(wall_time)
        micros = int((wall_time - seconds) * 1e6)
        self._stream.write(struct.pack("<IIII", seconds, micros, len(packet), len(packet)))
        self._stream.write(packet)

    def flush(self) -> None:
        """Push buffered records to the file."""
        self._stream.flush()
