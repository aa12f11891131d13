"""Adaptive sending rate for file distribution (pure: samples in, packets/s out).

The signals are the receivers' socket buffers: how full they are, their kernel drop counters
and how many blocks they hold, not NAKs. A receive buffer fills, then overflows, when the
sender outruns a receiver, which is the congestion a sender can fix. The fill shows it before
anything is lost, so the sender eases off before it costs a repair; random loss on the path
never shows there, so it never slows the sender down: the rate does not collapse under random
loss, where NAK-driven schemes do.

How far to ease off is measured, not guessed. Each receiver says how many blocks it holds;
per second, that is the pace it takes them at, and the best pace of its last half second is
what it can take (a backlog shows its whole capacity; a stall, a moment descheduled, takes
nothing off that). A filling or overflowing buffer sets the rate to just under that capacity,
once, and a backlog draining faster than the rate brings it straight back up. The rate does
not step down by a ratio per sample while a buffer drains: the samples lag, so ratio steps kept
cutting for one overload (205k -> 42k datagrams/s with nothing lost on the path). Every
decision starts from what was really sent: a sender held back by its CPU sends below its
nominal rate, and a cut of the nominal rate alone changed nothing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["AdaptiveRate", "Load"]

BACK_OFF = 0.75  # decrease on overflow when the receiver's capacity is not known
EASE = 0.9  # decrease when a buffer is filling and the receiver's capacity is not known
BELOW_PACE = 0.95  # a congested receiver's capacity, times this: its buffer drains
DEEPEST = 0.5  # one decision never cuts below half of what was really sent
SPEED_UP = 1.10  # growth per clean sample
SPEED_UP_EMPTY = 1.5  # growth when the receivers' buffers are empty
OVERFLOW_SHARE = 0.005  # drops above 0.5 % of what was sent in the sample mean "too fast"
HIGH_FILL = 50  # percent of a receiver's socket buffer in use: ease off
LOW_FILL = 20  # below this (and no drops): speed up
EMPTY_FILL = 2  # at most this: the receivers are idle, speed up by SPEED_UP_EMPTY
MIN_SENT = 32  # fewer blocks in a sample say little about what the sender can do
CAPACITY_SAMPLES = 10  # a receiver's capacity: its best pace over this many samples
CUTS_KEPT = 1000


class Load(NamedTuple):
    """What one receiver said in its last progress report."""

    drops: int  # its socket's kernel drop counter (cumulative)
    fill: int | None  # percent of its socket buffer in use (None: an older receiver)
    received: int  # blocks it holds
    at: float | None  # when the report came (None: none yet)


@dataclass
class AdaptiveRate:
    """Packets per second, adjusted after each sample of the receivers' loads."""

    pps: float
    floor: float = 500.0
    ceiling: float = 1e6
    history: list[float] = field(default_factory=list)
    # Every decrease, with the evidence for it: why the rate fell, when a user asks.
    cuts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=CUTS_KEPT))
    _last: dict[int, Load] = field(default_factory=dict)
    _paces: dict[int, deque[float]] = field(default_factory=dict)
    _last_fill: int = 0
    _last_now: float | None = None
    _started: float | None = None
    _settling: bool = False

    def on_sample(self, now: float, sent: int, loads: dict[int, Load]) -> float:
        """``sent``: blocks since the last sample; ``loads``: each receiver's last report."""
        elapsed = None if self._last_now is None else now - self._last_now
        self._last_now = now
        if self._started is None:
            self._started = now
        worst, fill, known, pace = 0, 0, False, None
        for receiver, load in loads.items():
            previous = self._last.get(receiver, load)
            self._last[receiver] = load
            dropped = load.drops - previous.drops
            worst = max(worst, dropped)
            if load.fill is not None:
                known = True
                fill = max(fill, load.fill)
            paces = self._paces.setdefault(receiver, deque(maxlen=CAPACITY_SAMPLES))
            if load.at is not None and previous.at is not None and load.at > previous.at:
                paces.append((load.received - previous.received) / (load.at - previous.at))
            # Its backlog decides: the least capacity among the receivers that have one.
            if paces and (dropped > 0 or (load.fill or 0) >= LOW_FILL):
                pace = max(paces) if pace is None else min(pace, max(paces))
        rising = fill >= self._last_fill
        self._last_fill = fill
        if elapsed is None or elapsed <= 0 or not sent:
            self.history.append(round(self.pps))
            return self.pps  # a baseline, or a pause: nothing to judge
        # What was really sent; a handful of blocks (a slow rate) is taken as the rate.
        actual = sent / elapsed if sent >= MIN_SENT else self.pps
        if self._settling:
            # The last decrease has not shown yet (the samples lag by one round trip and the
            # buffers drain at the receivers' pace): judge the next sample, not this one.
            self._settling = False
        elif worst > max(2, sent * OVERFLOW_SHARE):
            self._cut("overflow", BACK_OFF, actual, pace, now, worst, fill)
        elif fill >= HIGH_FILL and rising:
            self._cut("filling", EASE, actual, pace, now, worst, fill)
        elif pace is not None and pace * BELOW_PACE > self.pps:
            # A backlog that drains faster than we send (its CPU came back): catch up now,
            # not by growth steps from a cut made in a slower moment.
            self.pps = min(self.ceiling, pace * BELOW_PACE)
        elif worst == 0 and fill < LOW_FILL:
            # An empty buffer says the receivers keep up with room to spare: grow faster.
            step = SPEED_UP_EMPTY if known and fill <= EMPTY_FILL else SPEED_UP
            # Ahead of what this sender manages, the rate only stops pacing it (a paced sender
            # sends smaller batches, which costs it): cuts start from what was really sent.
            self.pps = min(self.ceiling, self.pps * step)
        self.history.append(round(self.pps))
        return self.pps

    def _cut(
        self,
        why: str,
        ratio: float,
        actual: float,
        pace: float | None,
        now: float,
        dropped: int,
        fill: int,
    ) -> None:
        before = self.pps
        # Just under the receiver's capacity, or by a ratio of what was really sent.
        target = min(self.pps, actual) * ratio if pace is None else min(self.pps, pace * BELOW_PACE)
        self.pps = min(before, max(self.floor, target, actual * DEEPEST))
        self._settling = True
        if self.pps >= before:
            return  # already there: nothing to explain
        assert self._started is not None
        self.cuts.append(
            {
                "t": round(now - self._started, 3),
                "why": why,
                "from_pps": round(before),
                "to_pps": round(self.pps),
                "sent_pps": round(actual),
                "receiver_pps": None if pace is None else round(pace),  # its capacity
                "dropped": dropped,
                "fill": fill,
            }
        )
