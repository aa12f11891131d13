"""Adaptive sending rate for file distribution (pure: samples in, packets/s out).

The signals are the receivers' socket buffers: how full they are and their kernel drop
counters, not NAKs. A receive buffer fills, then overflows, when the sender outruns a
receiver, which is the congestion a sender can fix. The fill shows it before anything is lost,
so the sender eases off before it costs a repair; random loss on the path never shows there,
so it never slows the sender down: the rate does not collapse under random loss, where
NAK-driven schemes do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AdaptiveRate"]

BACK_OFF = 0.75  # multiplicative decrease on overflow (AIMD-like, but both steps are ratios)
SPEED_UP = 1.10  # growth per clean sample
OVERFLOW_SHARE = 0.005  # drops above 0.5 % of what was sent in the sample mean "too fast"
EASE = 0.9  # decrease when a buffer is filling up, before it overflows
HIGH_FILL = 50  # percent of a receiver's socket buffer in use: ease off
LOW_FILL = 20  # below this (and no drops): speed up
EMPTY_FILL = 2  # at most this: the receivers are idle, speed up by SPEED_UP_EMPTY
SPEED_UP_EMPTY = 1.25


@dataclass
class AdaptiveRate:
    """Packets per second, adjusted after each sample of receiver drop counters."""

    pps: float
    floor: float = 500.0
    ceiling: float = 1e6
    history: list[float] = field(default_factory=list)
    _last: dict[int, int] = field(default_factory=dict)
    _last_fill: int = 0
    _settling: bool = False

    def on_sample(self, drops: dict[int, int], sent: int, fill: int | None = None) -> float:
        """``drops``: each receiver's cumulative kernel drops; ``sent``: blocks since last time;
        ``fill``: the fullest receiver's socket buffer, in percent (None: not reported)."""
        worst = 0
        for receiver, total in drops.items():
            previous = self._last.get(receiver, total)
            worst = max(worst, total - previous)
            self._last[receiver] = total
        known = fill is not None
        fill = fill or 0
        rising = fill >= self._last_fill
        self._last_fill = fill
        if self._settling:
            # The last decrease has not shown yet (the samples lag by one round trip and the
            # buffers drain at the receivers' pace): judge the next sample, not this one.
            self._settling = False
        elif worst > max(2, sent * OVERFLOW_SHARE):
            self.pps = max(self.floor, self.pps * BACK_OFF)
            self._settling = True
        elif fill >= HIGH_FILL and rising:
            self.pps = max(self.floor, self.pps * EASE)
            self._settling = True
        elif worst == 0 and fill < LOW_FILL:
            # An empty buffer says the receivers keep up with room to spare: grow faster.
            step = SPEED_UP_EMPTY if known and fill <= EMPTY_FILL else SPEED_UP
            self.pps = min(self.ceiling, self.pps * step)
        self.history.append(round(self.pps))
        return self.pps
