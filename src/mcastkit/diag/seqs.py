"""Sequence numbers as they arrive (no I/O): duplicates within a window, reordering, the
first and the highest seen, and RFC 3550's interarrival jitter. Ping's paths and bench's
receiver both count with it."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["DUPLICATE", "LATE", "SeqTracker"]

DUPLICATE = -2  # ``take``: seen already (within the window)
LATE = -1  # ``take``: below the highest seen: reordered (a gap's seq after all)


@dataclass
class SeqTracker:
    """What arrived, by sequence number."""

    window: int  # seqs remembered to tell a duplicate
    first: int = -1  # the first seq taken (-1: none yet)
    highest: int = -1
    received: int = 0  # distinct seqs taken
    duplicates: int = 0
    reordered: int = 0
    jitter_ns: float = 0.0  # RFC 3550 6.4.1: J += (|D| - J) / 16
    _last_transit: int | None = None
    _seen: set[int] = field(default_factory=set)
    _order: deque[int] = field(default_factory=deque)

    def take(self, seq: int, transit_ns: int) -> int:
        """Count one arrival: ``DUPLICATE``, ``LATE``, or the seqs skipped before it (a new
        highest; 0 when it follows on). ``transit_ns``: arrival minus send time (clocks may
        differ by a constant: only differences are used)."""
        if seq in self._seen:
            self.duplicates += 1
            return DUPLICATE
        self._seen.add(seq)
        self._order.append(seq)
        if len(self._order) > self.window:
            self._seen.discard(self._order.popleft())
        if self.first < 0:
            self.first = seq
        self.received += 1
        if self._last_transit is not None:
            self.jitter_ns += (abs(transit_ns - self._last_transit) - self.jitter_ns) / 16
        self._last_transit = transit_ns
        if seq < self.highest:
            self.reordered += 1
            return LATE
        skipped = seq - self.highest - 1 if self.highest >= 0 else 0
        self.highest = seq
        return skipped
