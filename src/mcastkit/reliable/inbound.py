"""The streams a node receives, one per sender, under one memory budget shared by all.

Each ``StreamReceiver`` has its own limit (``receiver_memory``); many senders together must
not add up past ``budget`` either. Every call that can grow a stream goes through ``fed``,
which gives the stream the room left and keeps the total true.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .config import ReliableConfig
from .receiver import StreamReceiver

T = TypeVar("T")
Nacks = list[list[tuple[int, int]]]


class InboundStreams:
    """Receiver streams by sender id, and their memory together."""

    def __init__(
        self, config: ReliableConfig, random_bytes: Callable[[int], bytes], budget: int
    ) -> None:
        self.config = config
        self.budget = budget
        self.memory = 0  # the sum of every stream's memory
        self.receivers: dict[int, StreamReceiver] = {}
        self._random = random_bytes

    def get(self, sender: int) -> StreamReceiver | None:
        """The stream of ``sender``, if one is open."""
        return self.receivers.get(sender)

    def open(self, sender: int, incarnation: int, start: int) -> StreamReceiver:
        """The stream of this incarnation of ``sender``, opened at ``start`` when new (0: at
        its first data); a new incarnation replaces the old stream."""
        stream = self.receivers.get(sender)
        if stream is None or stream.incarnation != incarnation:
            if stream is not None:
                self.memory -= stream.memory
            random = self._random
            stream = StreamReceiver(
                sender, incarnation, self.config, lambda: int.from_bytes(random(4), "big") / 2**32
            )
            self.receivers[sender] = stream
            if start:
                stream.start_at(start)
        return stream

    def fed(self, stream: StreamReceiver, method: Callable[..., T], *args: Any) -> T:
        """``method(*args, room)`` on ``stream``: room is what it may hold within the budget
        shared by every sender's stream; the total across streams is kept true."""
        before = stream.memory
        result = method(*args, self.budget - (self.memory - before))
        self.memory += stream.memory - before
        return result

    def handle_timer(self, now: float) -> list[tuple[StreamReceiver, Nacks]]:
        """Run every stream's timer: the NACKs each one wants sent (maybe none)."""
        out = []
        for stream in list(self.receivers.values()):
            before = stream.memory
            nacks = stream.handle_timer(now)
            self.memory += stream.memory - before
            out.append((stream, nacks))
        return out

    def close(self, sender: int, reason: str, next_seq: int) -> StreamReceiver | None:
        """Close and drop the stream of ``sender`` (its losses are in its events)."""
        stream = self.receivers.pop(sender, None)
        if stream is not None:
            self.memory -= stream.memory
            stream.close(reason, next_seq)
        return stream

    def next_timer(self) -> float | None:
        """The earliest timer of any stream."""
        soonest = None
        for stream in self.receivers.values():
            when = stream.next_timer()
            if when is not None and (soonest is None or when < soonest):
                soonest = when
        return soonest

    def stats(self) -> dict[str, Any]:
        """Per sender: where delivery is, what is missing, memory, counters."""
        return {
            f"{sender:016x}": {
                "next_seq": r.next_deliver,
                "missing": r.missing,
                "memory": r.memory,
                "grtt_ms": round(r.grtt * 1000, 3),
                **r.counters,
            }
            for sender, r in self.receivers.items()
        }
