"""Adaptive sending rate for file distribution (pure: samples in, packets/s out).

The signal is the receivers' kernel drop counters (SO_RXQ_OVFL), not NAKs. A receive buffer
overflows when the sender outruns a receiver, which is the congestion a sender can fix. Random
loss on the path never shows there, so it never slows the sender down: the rate does not
collapse under random loss, where NAK-driven schemes do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AdaptiveRate"]

BACK_OFF = 0.75  # multiplicative decrease on overflow (AIMD-like, but both steps are ratios)
SPEED_UP = 1.10  # growth per clean sample
OVERFLOW_SHARE = 0.005  # drops above 0.5 % of what was sent in the sample mean "too fast"


@dataclass
class AdaptiveRate:
    """Packets per second, adjusted after each sample of receiver drop counters."""

    pps: float
    floor: float = 500.0
    ceiling: float = 1e6
    history: list[float] = field(default_factory=list)
    _last: dict[int, int] = field(default_factory=dict)

    def on_sample(self, drops: dict[int, int], sent: int) -> float:
        """``drops``: each receiver's cumulative kernel drops; ``sent``: blocks since last time."""
        worst = 0
        for receiver, total in drops.items():
            previous = self._last.get(receiver, total)
            worst = max(worst, total - previous)
            self._last[receiver] = total
        if worst > max(2, sent * OVERFLOW_SHARE):
            self.pps = max(self.floor, self.pps * BACK_OFF)
        elif worst == 0:
            self.pps = min(self.ceiling, self.pps * SPEED_UP)
        self.history.append(round(self.pps))
        return self.pps
