"""Payload codecs of the reliable frames (RDATA, NACK, RSTATE, ACK): bytes in, values out."""

from __future__ import annotations

import struct
from collections.abc import Iterable

RDATA_HEAD = struct.Struct("!QII")  # stream seq, message length, fragment offset
NACK_HEAD = struct.Struct("!QIH")  # target sender, target incarnation, range count
NACK_RANGE = struct.Struct("!QI")  # first seq, count
RSTATE = struct.Struct("!QQ")  # oldest seq still in the window, next seq to be sent
# RSTATE with a probe: + the sender's clock (µs, mod 2**32) to echo, and its group round
# trip (GRTT, µs; 0: not measured yet) that receivers scale their NACK timing by
RSTATE_TIMED = struct.Struct("!QQII")
ACK = struct.Struct("!QIQ")  # target sender, target incarnation, delivered through seq
# ACK answering a probe: + the echoed stamp and how long the receiver held it (µs)
ACK_ECHO = struct.Struct("!QIQII")
MAX_GRTT = 1.0  # seconds: a larger round trip (or a forged one) is taken as this
MAX_NACK_RANGES = 64
MAX_GAP = 1 << 17  # seqs; a larger jump is beyond any window: restart instead of tracking it
MAX_MESSAGE_WIRE = 0xFFFFFFFF


def ranges_of(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted seqs to (first, count) runs."""
    runs: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if runs and runs[-1][0] + runs[-1][1] == seq:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((seq, 1))
    return runs


def encode_nack(sender: int, incarnation: int, runs: list[tuple[int, int]]) -> bytes:
    """A NACK payload (at most MAX_NACK_RANGES runs: the caller splits longer lists)."""
    parts = [NACK_HEAD.pack(sender, incarnation, len(runs))]
    parts += [NACK_RANGE.pack(first, count) for first, count in runs]
    return b"".join(parts)


def decode_nack(payload: bytes) -> tuple[int, int, list[tuple[int, int]]] | None:
    """(sender, incarnation, runs), or None for a malformed NACK (never raises)."""
    if len(payload) < NACK_HEAD.size:
        return None
    sender, incarnation, count = NACK_HEAD.unpack_from(payload)
    if count > MAX_NACK_RANGES or len(payload) != NACK_HEAD.size + count * NACK_RANGE.size:
        return None
    runs = []
    for index in range(count):
        first, length = NACK_RANGE.unpack_from(payload, NACK_HEAD.size + index * NACK_RANGE.size)
        if first == 0 or length == 0:
            return None
        runs.append((first, length))
    return sender, incarnation, runs
