"""The one token bucket every paced sender uses (reliable streams, file distribution, bench).

Pure: the caller passes the time. Tokens are whatever the caller charges (datagrams, bytes),
they accrue at ``rate`` per second up to ``depth``, and the rate or depth may change at any
moment (an adaptive controller) without a burst: what was saved stays capped by the depth.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """Tokens at ``rate`` per second, holding ``depth`` at most; ``rate`` None: no limit."""

    def __init__(self, rate: float | None, depth: float, now: float, *, full: bool = False) -> None:
        self.rate: float | None = None
        self.depth = 0.0
        self.tokens = 0.0
        self._refilled = now
        self.set_rate(rate, depth)
        if full:
            self.tokens = self.depth

    def set_rate(self, rate: float | None, depth: float) -> None:
        """A new rate and depth; tokens saved stay, capped by the new depth."""
        if rate is not None and not rate > 0:
            raise ValueError(f"a rate must be positive, not {rate}")
        if not depth > 0:
            raise ValueError(f"a bucket depth must be positive, not {depth}")
        self.rate, self.depth = rate, float(depth)
        self.tokens = min(self.tokens, self.depth)

    def refill(self, now: float) -> None:
        """Add what accrued since the last refill (a clock that goes back adds nothing)."""
        if self.rate is not None and now > self._refilled:
            self.tokens = min(self.depth, self.tokens + (now - self._refilled) * self.rate)
        self._refilled = max(self._refilled, now)

    def spend(self, cost: float) -> bool:
        """Charge ``cost`` if the bucket holds it (or is full, for a cost over its depth:
        the bucket then goes into debt, repaid before the next spend)."""
        if self.rate is None:
            return True
        if self.tokens < min(cost, self.depth):
            return False
        self.tokens -= cost
        return True

    def take(self, least: float, most: int) -> int:
        """Spend as many whole tokens as the bucket holds, up to ``most``, or none while it
        holds fewer than ``least`` (a batch is worth a system call)."""
        if self.rate is None:
            return most
        if self.tokens < least:
            return 0
        count = min(most, int(self.tokens))
        self.tokens -= count
        return count

    def wait(self, need: float) -> float:
        """Seconds from the last refill until the bucket holds ``need`` (at most its depth)."""
        if self.rate is None:
            return 0.0
        return max(0.0, min(need, self.depth) - self.tokens) / self.rate

    def ready_at(self, need: float) -> float:
        """When (on the caller's clock) the bucket will hold ``need``."""
        return self._refilled + self.wait(need)
