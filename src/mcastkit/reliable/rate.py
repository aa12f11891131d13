"""Adaptive sending rate from NACK pressure (no I/O)."""

from __future__ import annotations

import math


class NackRateControl:
    """Adaptive rate from NACK pressure that tells congestion from random loss.

    Every ``SAMPLE`` seconds the pressure is the share of new fragments NACKed for the first
    time. Pressure well above the learned random-loss level means "maybe too fast": the rate
    drops by ``BACK_OFF`` and the next sample checks the diagnosis by what got through
    (sent x (1 - pressure)). If the slower rate delivers about as much, the receivers were
    overrun (congestion): the lower rate stays. If delivery fell with the rate, the loss is
    random (a lossy path): the rate is restored and that pressure becomes the baseline. So
    20 % random loss never drives the rate down, while a receiver that cannot keep up does.
    Otherwise the rate grows by ``SPEED_UP`` per sample.
    """

    SAMPLE = 0.1
    MIN_PACKETS = 32
    BACK_OFF = 0.7
    SPEED_UP = 1.05
    # Until the first NACK, a sample that saw none grows the rate this much (a slow start):
    # at 5 % a sample, a 64 MiB message was over before the rate had moved.
    FAST_START = 1.5
    TOLERANCE = 0.08  # delivery this much below what the baseline explains: maybe too fast
    CONGESTED = 0.85  # delivery kept above this share after a back-off: it was congestion
    FLOOR_SHARE = 0.01  # never below 1 % of the starting rate
    FLAT = 1.01  # a raise must deliver at least this much more to count as "it grew"
    EASE = 0.9  # after three flat raises
    RECHECK = 20  # samples between re-tests of a baseline above RECHECK_ABOVE
    RECHECK_ABOVE = 0.05

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.ceiling = rate * 10
        self.floor = rate * self.FLOOR_SHARE
        self.baseline = 0.0  # pressure that random loss explains
        self.next_sample = now + self.SAMPLE
        # A back-off under test: delivery before it, and samples still to skip (NACKs lag).
        self._probe: tuple[float, int, float] | None = None
        self._delivered = 0.0  # delivery rate of the last sample
        self._grew = False  # the last sample raised the rate
        self._flat = 0  # samples in a row where a raise delivered no more
        self._warm = False  # the first busy sample after idle is skipped: its NACKs trail
        self._last = now
        self._since_check = 0
        self._starting = True  # no NACK seen yet: grow by FAST_START
        self.history: list[tuple[float, float]] = []  # (rate, pressure) per sample

    def skip(self, now: float) -> None:
        """A sample that carries no evidence (the sender ran out of data): start anew."""
        self._last, self.next_sample = now, now + self.SAMPLE
        self._warm = False

    def on_sample(self, sent: int, nacked: int, now: float, volume: float | None = None) -> float:
        """Fragments sent and first-time NACKed since the last sample; returns the new rate.

        ``volume`` is what was sent in the rate's unit (bytes for a bit rate; fragments when
        None). A back-off starts from what was really sent: a sender held back by its CPU or
        socket sends below its nominal rate, and cutting the nominal rate would change nothing.
        """
        elapsed = max(1e-3, now - self._last)
        self._last, self.next_sample = now, now + self.SAMPLE
        if sent < self.MIN_PACKETS:
            self._warm = False
            return self.rate  # idle or nearly: no evidence either way
        if not self._warm:
            self._warm = True
            return self.rate
        pressure = min(1.0, nacked / sent)
        if nacked:
            self._starting = False
        delivered = sent * (1 - pressure) / elapsed
        actual = (sent if volume is None else volume) / elapsed
        self.history.append((self.rate, round(pressure, 4)))
        if len(self.history) > 600:
            del self.history[:300]
        if self._probe is not None:
            before, skip, rate_before = self._probe
            if skip:
                self._probe = (before, skip - 1, rate_before)  # NACKs for the faster sample
                return self.rate
            self._probe = None
            if delivered < before * self.CONGESTED:
                # Slower delivered less: the loss is random, not ours. Undo; expect this level.
                self.baseline = pressure
                self.rate = rate_before
                return self.rate
            # Congestion: the lower rate stays, and a baseline that blamed it on the path
            # (a wrong diagnosis from trailing NACKs) comes down.
            self.baseline = min(self.baseline, pressure)
        self._since_check += 1
        recheck = self.baseline > self.RECHECK_ABOVE and self._since_check >= self.RECHECK
        # Sampling noise: with n fragments a loss share b wobbles by sqrt(b(1-b)/n); three of
        # those are not a signal. Without this margin, small samples at a low rate trigger
        # false back-offs, and the rate ratchets down under pure random loss.
        level = max(self.baseline, 0.01)
        noise = 3 * math.sqrt(level * (1 - level) / sent)
        if recheck or 1 - pressure < (1 - self.baseline) * (1 - self.TOLERANCE) - noise:
            self._since_check = 0
            self._grew = False
            self._probe = (delivered, 1, self.rate)
            self.rate = max(self.floor, min(self.rate, actual) * self.BACK_OFF)
        elif self._grew and delivered < self._delivered * self.FLAT:
            # The last speed-up delivered nothing more: at capacity (a CPU, a link). Hold,
            # and after a few such samples ease off: a baseline that swallowed congestion
            # would otherwise keep the rate far above what gets through.
            self._grew = self._starting = False
            self._flat += 1
            if self._flat >= 3:
                self._flat = 0
                self.rate = max(self.floor, self.rate * self.EASE)
        else:
            self.baseline += (pressure - self.baseline) * 0.1
            self.rate = min(
                self.ceiling, self.rate * (self.FAST_START if self._starting else self.SPEED_UP)
            )
            self._grew, self._flat = True, 0
        self._delivered = delivered
        return self.rate
