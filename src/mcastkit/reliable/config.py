"""The knobs of reliable streams."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .codec import MAX_MESSAGE_WIRE

SlowPolicy = Literal["drop", "wait"]


@dataclass(frozen=True)
class ReliableConfig:
    """Knobs of reliable streams; the defaults suit one LAN segment.

    Receiver side: ``nack_backoff`` is the largest random delay before a NACK (larger for
    bigger groups, so suppression has time to work); ``nack_repeat`` is how long to wait for
    a repair before asking again; ``repair_timeout`` is when a gap is given up;
    ``max_message`` and ``receiver_memory`` bound one sender's reassembly and out-of-order
    buffer; ``message_timeout`` bounds how long a half-received message may make no progress.

    Sender side: ``window_bytes`` is the retransmit window. ``slow_receiver`` is the policy
    when a receiver falls behind: ``"drop"`` (default) never waits, so a receiver that falls
    out of the window gets ``Unrecoverable``; ``"wait"`` holds new data until every receiver
    that acknowledges has the oldest data in the window, and drops a receiver whose
    acknowledgements stall for ``slow_timeout`` (a ``SlowReceiver`` event). ``rate_pps`` /
    ``rate_bps`` set the sending rate; with ``adaptive_rate`` (default) it is the starting
    rate (1 Gbit/s when unset) and NACK pressure moves it (``NackRateControl``); without,
    it is fixed, and None means as fast as the socket takes it.
    """

    nack_backoff: float = 0.01
    nack_repeat: float = 0.05
    repair_timeout: float = 5.0
    max_message: int = 64 << 20
    receiver_memory: int = 160 << 20
    message_timeout: float = 30.0
    window_bytes: int = 32 << 20
    slow_receiver: SlowPolicy = "drop"
    slow_timeout: float = 5.0
    rate_pps: float | None = None
    rate_bps: float | None = None
    adaptive_rate: bool = True
    ack_every: int = 256
    ack_delay: float = 0.02

    def __post_init__(self) -> None:
        if self.slow_receiver not in ("drop", "wait"):
            raise ValueError("slow_receiver must be 'drop' or 'wait'")
        positive = {
            "nack_backoff": self.nack_backoff,
            "nack_repeat": self.nack_repeat,
            "repair_timeout": self.repair_timeout,
            "max_message": self.max_message,
            "receiver_memory": self.receiver_memory,
            "message_timeout": self.message_timeout,
            "window_bytes": self.window_bytes,
            "slow_timeout": self.slow_timeout,
            "ack_every": self.ack_every,
            "ack_delay": self.ack_delay,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_message > MAX_MESSAGE_WIRE:
            raise ValueError(f"max_message is at most {MAX_MESSAGE_WIRE} bytes")
        for name, rate in (("rate_pps", self.rate_pps), ("rate_bps", self.rate_bps)):
            if rate is not None and rate <= 0:
                raise ValueError(f"{name} must be positive")
        if self.rate_pps is not None and self.rate_bps is not None:
            raise ValueError("give rate_pps or rate_bps, not both")
