"""A Node's subscriptions: messages on a topic pattern, queued for the application."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from .events import Message
from .peers import topic_matches

__all__ = ["QUEUE_LIMIT", "Subscription"]

QUEUE_LIMIT = 10000


class Subscription:
    """Messages whose topic matches ``pattern`` (exact, or a prefix ending in ``*``)."""

    def __init__(self, registry: set[Subscription], pattern: str) -> None:
        self.pattern = pattern
        self.dropped = 0
        self._registry = registry  # the node's live subscriptions: closing leaves it
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(QUEUE_LIMIT)

    def matches(self, topic: str) -> bool:
        """True when ``topic`` belongs to this subscription."""
        return topic_matches(self.pattern, topic)

    def _offer(self, message: Message | None) -> bool:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1  # a slow consumer never stalls the node (and is told: _dispatch)
            return False
        return True

    async def get(self, timeout: float | None = None) -> Message | None:
        """The next message; None at the timeout or when the node stopped."""
        if not self._queue.empty():
            return self._queue.get_nowait()  # no wait_for task when one is already queued
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def close(self) -> None:
        """Stop receiving."""
        self._registry.discard(self)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            message = await self._queue.get()
            if message is None:
                return
            yield message
