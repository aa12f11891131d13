"""Reliable streams: NACK-based repair, in-order delivery and fragmentation, with no I/O.

Each sender numbers its reliable fragments (stream seq, from 1, 64 bits: no wrap). Receivers
detect gaps, wait a random back-off, then multicast a NACK; a NACK heard from another
receiver for the same seqs suppresses one's own (SRM / NORM style), so a gap seen by many
receivers costs about one NACK. The sender repairs from a bounded retransmit window, by
multicast, so one repair serves everyone. A gap that can no longer be repaired (the window
moved past it, or no repair came in ``repair_timeout``) becomes an ``Unrecoverable`` event
and delivery resumes at the next whole message: loss is never silent.

The session (session.py) owns the frames; this package owns the stream state, one room each:
``codec`` (payloads), ``config`` (knobs), ``sender``, ``receiver`` and ``rate`` (adaptive
rate). Time and randomness come in as arguments.
"""

from __future__ import annotations

from .codec import (
    ACK,
    ACK_ECHO,
    MAX_GAP,
    MAX_NACK_RANGES,
    NACK_HEAD,
    NACK_RANGE,
    RDATA_HEAD,
    RSTATE,
    RSTATE_TIMED,
    decode_nack,
    encode_nack,
    ranges_of,
)
from .config import ReliableConfig, SlowPolicy
from .rate import NackRateControl
from .receiver import FRAGMENT_COST, GAP_COST, LOST_COST, StreamReceiver
from .sender import StreamSender

__all__ = [
    "ACK",
    "ACK_ECHO",
    "FRAGMENT_COST",
    "GAP_COST",
    "LOST_COST",
    "MAX_GAP",
    "MAX_NACK_RANGES",
    "NACK_HEAD",
    "NACK_RANGE",
    "RDATA_HEAD",
    "RSTATE",
    "RSTATE_TIMED",
    "NackRateControl",
    "ReliableConfig",
    "SlowPolicy",
    "StreamReceiver",
    "StreamSender",
    "decode_nack",
    "encode_nack",
    "ranges_of",
]
