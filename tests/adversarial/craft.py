"""Frames built by hand from docs/protocol.md, as an attacker would: no mcastkit encoder used.

Everything here is what any host on the path can send to an open group (or replay to a sealed
one); the tests aim these at real nodes and sessions and measure what it costs them.
"""

from __future__ import annotations

import struct

# docs/protocol.md, "Frame": magic, version, type, flags, topic length, reserved, sender,
# incarnation, seq, timestamp (µs); all big-endian.
HEADER = struct.Struct("!2sBBBBHQIIQ")
HELLO, HEARTBEAT, GOODBYE, DATA, REQUEST, REPLY, RDATA, NACK, RSTATE, ACK = range(1, 11)
UNICAST, HELLO_ANSWER = 0x01, 0x02


def frame(
    kind: int,
    sender: int,
    seq: int,
    payload: bytes = b"",
    *,
    topic: str = "",
    incarnation: int = 1,
    flags: int = 0,
    stamp: int = 0,
) -> bytes:
    raw = topic.encode()
    head = HEADER.pack(b"MK", 1, kind, flags, len(raw), 0, sender, incarnation, seq, stamp)
    return head + raw + payload


def rdata(
    sender: int, seq: int, length: int, offset: int, chunk: bytes, *, frame_seq: int
) -> bytes:
    """A reliable fragment: stream seq (8), message length (4), offset (4), bytes."""
    body = struct.pack("!QII", seq, length, offset) + chunk
    return frame(RDATA, sender, frame_seq, body, topic="t")


def nack(
    sender: int, target: int, target_incarnation: int, runs: list[tuple[int, int]], *, seq: int
) -> bytes:
    """A NACK: target id (8), target incarnation (4), run count (2), runs of (first 8, count 4)."""
    body = struct.pack("!QIH", target, target_incarnation, len(runs))
    body += b"".join(struct.pack("!QI", first, count) for first, count in runs)
    return frame(NACK, sender, seq, body)


def hello(sender: int, seq: int, name: str = "intruder", *, flags: int = 0) -> bytes:
    return frame(HELLO, sender, seq, f'{{"name":"{name}"}}'.encode(), flags=flags)


WANT_COPIES = 0x20  # docs/protocol.md: "your multicast does not reach me, send me copies"
