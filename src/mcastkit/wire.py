"""Wire format v1: frames to bytes and back (see docs/protocol.md).

Decoding takes untrusted bytes and never raises: it returns a Frame or a drop reason string,
so the receive path can count and drop.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag
from typing import NamedTuple

from .magics import FRAME_MAGIC, SEALED_TYPES

__all__ = [
    "ENVELOPE",
    "HEADER",
    "MAGIC",
    "VERSION",
    "Flag",
    "Frame",
    "FrameType",
    "decode_frame_untrusted",
    "encode_frame",
    "encode_header",
    "max_payload",
]

MAGIC = FRAME_MAGIC
VERSION = 1
# SEALED_TYPES (magics.py): an AEAD envelope around a whole frame (security.py)

# magic, version, type, flags, topic length, reserved, sender, incarnation, seq, timestamp (µs)
HEADER = struct.Struct("!2sBBBBHQIIQ")
# magic, version, sealed type (the cipher), key id, 12-byte nonce; then ciphertext and tag (16)
ENVELOPE = struct.Struct("!2sBBI12s")
TAG_SIZE = 16
MAX_TOPIC = 255
MAX_DATAGRAM = 65507  # largest UDP payload over IPv4


class FrameType(IntEnum):
    """What a frame carries."""

    HELLO = 1
    HEARTBEAT = 2
    GOODBYE = 3
    DATA = 4
    REQUEST = 5
    REPLY = 6
    RDATA = 7  # a fragment of a reliable stream (reliable.py)
    NACK = 8  # a receiver asks a sender to repair seqs (multicast: others hear it)
    RSTATE = 9  # a sender's window: oldest repairable seq and next seq
    ACK = 10  # a receiver has a sender's stream through a seq (only under "wait")
    PEERS = 11  # members' unicast addresses (gossip to members met by unicast: reach.py)


class Flag(IntFlag):
    """Bits of the flags byte (hot paths test and set them as plain ints: ``int(Flag.X)``)."""

    UNICAST = 0x01  # sent to one peer: its seq is from the sender's unicast counter
    HELLO_ANSWER = 0x02  # a HELLO answering another's HELLO: do not answer it again
    HELLO_WANTED = 0x04  # the receiver does not know us: please send a HELLO
    REPAIR = 0x08  # RDATA: a retransmission answering a NACK
    ACK_WANTED = 0x10  # RDATA / RSTATE: the sender waits for slow receivers: acknowledge
    WANT_COPIES = 0x20  # unicast: your multicast does not reach me, send me unicast copies


class Frame(NamedTuple):
    """One decoded frame (a NamedTuple: the cheapest immutable record to build per datagram)."""

    type: FrameType
    flags: int
    sender: int
    incarnation: int
    seq: int
    timestamp_us: int
    topic: str
    payload: bytes


def encode_header(
    kind: int, flags: int, sender: int, incarnation: int, seq: int, timestamp_us: int, topic: str
) -> bytes:
    """Header and topic of a frame (the payload follows). ValueError for a too-long topic."""
    raw_topic = topic.encode("utf-8")
    if len(raw_topic) > MAX_TOPIC:
        raise ValueError(f"topic is {len(raw_topic)} bytes; the limit is {MAX_TOPIC}")
    header = HEADER.pack(
        MAGIC, VERSION, kind, flags, len(raw_topic), 0, sender, incarnation, seq, timestamp_us
    )
    return header + raw_topic


def encode_frame(frame: Frame) -> bytes:
    """Frame to bytes. Raises ValueError for fields out of range (a local misuse)."""
    header = encode_header(
        int(frame.type),
        frame.flags,
        frame.sender,
        frame.incarnation,
        frame.seq,
        frame.timestamp_us,
        frame.topic,
    )
    return header + frame.payload


_TYPES = {int(t): t for t in FrameType}


def decode_frame_untrusted(data: bytes) -> Frame | str:
    """Bytes from the network to a Frame, or the reason to drop them (never raises)."""
    if len(data) < HEADER.size:
        return "short"
    if len(data) > MAX_DATAGRAM:
        return "oversized"
    magic, version, kind, flags, topic_len, _reserved, sender, incarnation, seq, stamp = (
        HEADER.unpack_from(data)
    )
    if magic != MAGIC:
        return "not-mcastkit"
    if version != VERSION:
        return "unknown-version"
    if kind in SEALED_TYPES:
        return "sealed"
    frame_type = _TYPES.get(kind)
    if frame_type is None:
        return "unknown-type"
    if sender == 0:
        return "bad-sender"  # id 0 is reserved: an all-zero header is never a member
    end = HEADER.size + topic_len
    if end > len(data):
        return "truncated-topic"
    try:
        topic = data[HEADER.size : end].decode("utf-8")
    except UnicodeDecodeError:
        return "bad-topic"
    return Frame(frame_type, flags, sender, incarnation, seq, stamp, topic, bytes(data[end:]))


def is_sealed(data: bytes) -> bool:
    """True when ``data`` looks like an AEAD envelope (checked again by opening it)."""
    return len(data) >= 4 and data[:2] == MAGIC and data[2] == VERSION and data[3] in SEALED_TYPES


def max_payload(max_datagram: int, topic: str, *, sealed: bool) -> int:
    """Largest payload that keeps a frame with ``topic`` within ``max_datagram`` bytes."""
    overhead = HEADER.size + len(topic.encode("utf-8"))
    if sealed:
        overhead += ENVELOPE.size + TAG_SIZE
    return max_datagram - overhead
