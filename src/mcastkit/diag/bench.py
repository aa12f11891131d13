"""Throughput test, no I/O: rates, the bench payload, and receiver statistics.

The receiver understands two payloads:
- mcastkit's: ``"MKB1" | seq (u64) | sender monotonic ns (u64) | padding``;
- iperf2's UDP header: ``id (i32) | tv_sec (u32) | tv_usec (u32) | ...``. A negative id marks
  iperf's final datagrams, which are not counted as data.
Anything else is counted (packets, bytes) without loss or jitter figures.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from ..magics import BENCH_MAGIC
from ..units import Rate, parse_rate
from .seqs import DUPLICATE, LATE, SeqTracker

__all__ = ["BenchStats", "Rate", "make_payload", "parse_rate"]


MAGIC = BENCH_MAGIC
HEAD = struct.Struct("!4sQQ")
IPERF_READ = struct.Struct("!iII")  # id, tv_sec, tv_usec
IPERF_HEAD = struct.Struct("!0siQ")  # written: nothing, id, tv_sec << 32 | tv_usec
IPERF_CLOSE = struct.Struct("!iIIi")  # the closing datagram: -id, tv_sec, tv_usec, id2 -1
MIN_SIZE = HEAD.size
DUP_WINDOW = 4096


def make_payload(seq: int, sent_ns: int, size: int) -> bytes:
    """A bench datagram of ``size`` bytes."""
    return HEAD.pack(MAGIC, seq, sent_ns) + b"\0" * (size - HEAD.size)


@dataclass
class _Interval:
    packets: int = 0
    bytes: int = 0
    lost: int = 0
    duplicates: int = 0
    reordered: int = 0


@dataclass
class BenchStats:
    """Receiver counters, totals and per interval."""

    interval_ns: int = 1_000_000_000
    packets: int = 0
    total_bytes: int = 0
    lost: int = 0
    untracked: int = 0  # datagrams with no sequence number we understand
    iperf: bool = False
    first_ns: int = 0
    last_ns: int = 0
    kernel_drops: int = 0
    _drop_base: int | None = None
    seqs: SeqTracker = field(default_factory=lambda: SeqTracker(DUP_WINDOW))
    _current: _Interval = field(default_factory=_Interval)
    _interval_start: int = 0
    intervals: list[dict[str, Any]] = field(default_factory=list)
    _emitted: int = 0  # intervals already returned by tick()

    def on_datagram(
        self, data: bytes | memoryview, now_ns: int, wall_ns: int, drops: int | None = None
    ) -> None:
        """Account one datagram (never raises). ``drops`` is SO_RXQ_OVFL's counter."""
        if drops is not None:
            if self._drop_base is None:
                self._drop_base = drops
            self.kernel_drops = drops - self._drop_base
        seq: int | None = None
        transit = 0
        if len(data) >= HEAD.size and data[:4] == MAGIC:
            _magic, seq, sent_ns = HEAD.unpack_from(data)
            transit = now_ns - sent_ns
        elif len(data) >= IPERF_HEAD.size:
            ident, seconds, micros = IPERF_READ.unpack_from(data)
            if ident < 0:
                return  # iperf2's closing datagrams
            self.iperf = True
            seq = ident
            transit = wall_ns - (seconds * 1_000_000_000 + micros * 1000)
        if not self.first_ns:
            self.first_ns = self._interval_start = now_ns
        self._roll(now_ns)
        self.last_ns = now_ns
        self.packets += 1
        self.total_bytes += len(data)
        self._current.packets += 1
        self._current.bytes += len(data)
        if seq is None:
            self.untracked += 1
            return
        arrival = self.seqs.take(seq, transit)
        if arrival == DUPLICATE:
            self._current.duplicates += 1
        elif arrival == LATE:  # it was counted lost when the gap opened
            self._current.reordered += 1
            self.lost -= 1
            self._current.lost -= 1
        else:
            self.lost += arrival
            self._current.lost += arrival

    def _roll(self, now_ns: int) -> None:
        while now_ns - self._interval_start >= self.interval_ns:
            self._close_interval()
            self._interval_start += self.interval_ns

    def _close_interval(self) -> None:
        seconds = self.interval_ns / 1e9
        c = self._current
        expected = c.packets - c.duplicates + c.lost
        self.intervals.append(
            {
                "t": round((self._interval_start - self.first_ns) / 1e9 + seconds, 3),
                "pps": round(c.packets / seconds, 1),
                "mbps": round(c.bytes * 8 / seconds / 1e6, 3),
                "lost": c.lost,
                "loss": round(c.lost / expected, 6) if expected > 0 else 0.0,
                "duplicates": c.duplicates,
                "reordered": c.reordered,
                "jitter_ms": round(self.seqs.jitter_ns / 1e6, 4),
                "kernel_drops": self.kernel_drops,
            }
        )
        self._current = _Interval()

    def tick(self, now_ns: int) -> list[dict[str, Any]]:
        """Close the intervals that ended by ``now_ns``; return every interval not yet
        returned (``on_datagram`` closes them too while traffic flows)."""
        if not self.first_ns:
            return []
        self._roll(now_ns)
        fresh = self.intervals[self._emitted :]
        self._emitted = len(self.intervals)
        return fresh

    def summary(self) -> dict[str, Any]:
        """Totals."""
        seconds = (self.last_ns - self.first_ns) / 1e9 if self.packets > 1 else 0.0
        tracked = self.packets - self.untracked - self.seqs.duplicates
        expected = tracked + max(0, self.lost)
        return {
            "packets": self.packets,
            "bytes": self.total_bytes,
            "seconds": round(seconds, 4),
            "pps": round(self.packets / seconds, 1) if seconds else None,
            "mbps": round(self.total_bytes * 8 / seconds / 1e6, 3) if seconds else None,
            "lost": max(0, self.lost),
            "loss": round(max(0, self.lost) / expected, 6) if expected else None,
            "duplicates": self.seqs.duplicates,
            "reordered": self.seqs.reordered,
            "jitter_ms": round(self.seqs.jitter_ns / 1e6, 4),
            "kernel_drops": self.kernel_drops,
            "sender": "iperf2" if self.iperf else ("mcastkit" if tracked else "unknown"),
        }
