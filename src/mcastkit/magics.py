"""Every kind of datagram mcastkit sends, told apart by its first bytes: one registry.

Group frames start ``"MK" | version | type`` (types 0xE1 and 0xE2: sealed envelopes); the other
protocols carry a 4-byte magic. The 4-byte magics are checked first: ``"MKT1"`` also starts
with ``"MK"``, and only the registry knows it is not a frame.
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "BENCH_MAGIC",
    "FRAME_MAGIC",
    "MAGICS",
    "PING_MAGIC",
    "RELAY_MAGIC",
    "SEALED_GCM_TYPE",
    "SEALED_TYPE",
    "SEALED_TYPES",
    "TRANSFER_MAGIC",
    "DatagramKind",
    "kind_of",
]

FRAME_MAGIC = b"MK"  # group frames (wire.py) and their envelopes (security.py)
FRAME_VERSION = 1
SEALED_TYPE = 0xE1  # ChaCha20-Poly1305
SEALED_GCM_TYPE = 0xE2  # AES-256-GCM
SEALED_TYPES = frozenset((SEALED_TYPE, SEALED_GCM_TYPE))


class DatagramKind(Enum):
    """What a datagram is."""

    FRAME = "mcastkit"  # a group frame (wire.py)
    SEALED = "mcastkit-sealed"  # an AEAD envelope around a frame
    TRANSFER = "mcast-transfer"  # file distribution (transfer/protocol.py)
    PING = "mcast-ping"  # diag/ping.py
    BENCH = "mcast-bench"  # diag/bench.py
    RELAY = "mcast-relay"  # relay.py: between relays, by unicast
    OTHER = "raw"


TRANSFER_MAGIC = b"MKT1"
PING_MAGIC = b"MKP1"
BENCH_MAGIC = b"MKB1"
RELAY_MAGIC = b"MKR1"
MAGICS: dict[bytes, DatagramKind] = {
    TRANSFER_MAGIC: DatagramKind.TRANSFER,
    PING_MAGIC: DatagramKind.PING,
    BENCH_MAGIC: DatagramKind.BENCH,
    RELAY_MAGIC: DatagramKind.RELAY,
}


def kind_of(data: bytes | bytearray | memoryview) -> DatagramKind:
    """The kind a datagram claims to be by its first bytes (not validated further)."""
    kind = MAGICS.get(bytes(data[:4]))
    if kind is not None:
        return kind
    if len(data) >= 4 and data[:2] == FRAME_MAGIC and data[2] == FRAME_VERSION:
        return DatagramKind.SEALED if data[3] in SEALED_TYPES else DatagramKind.FRAME
    return DatagramKind.OTHER
