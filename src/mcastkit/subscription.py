"""A Node's subscriptions: messages on a topic pattern, queued for the application; and
``until_members``, a wait on the membership as it changes."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from .events import Event, Message, PeerEvent
from .peers import PeerInfo, topic_matches

__all__ = ["QUEUE_LIMIT", "MessageHandler", "Subscription", "deliver", "until_members"]

log = logging.getLogger("mcastkit")

QUEUE_LIMIT = 10000


MessageHandler = Callable[[Message], object]


class Subscription:
    """Messages whose topic matches ``pattern`` (exact, or a prefix ending in ``*``).

    With a ``handler``, each message is handed to it as it is taken from the socket, in the
    receive path, instead of being queued for ``get``: no turn of the event loop between
    the two (tens of microseconds less latency), and the handler's time is the node's."""

    def __init__(
        self, registry: set[Subscription], pattern: str, handler: MessageHandler | None = None
    ) -> None:
        if handler is not None and (not callable(handler) or inspect.iscoroutinefunction(handler)):
            raise TypeError(
                "a message handler is a plain function, called in the receive path; for "
                "async work, iterate the subscription (async for message in subscription)"
            )
        self.pattern = pattern
        self.dropped = 0
        self.handler = handler
        self.handler_errors = 0  # messages whose handler raised (logged once, then counted)
        self._registry = registry  # the node's live subscriptions: closing leaves it
        # A deque and the waiting getters' futures: an asyncio.Queue costs a microsecond more
        # per message, and messages arrive in runs of hundreds.
        self._messages: deque[Message | None] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()

    def matches(self, topic: str) -> bool:
        """True when ``topic`` belongs to this subscription."""
        return topic_matches(self.pattern, topic)

    def _offer(self, message: Message | None) -> bool:
        handler = self.handler
        if handler is not None and message is not None:
            try:
                result = handler(message)
                if result is not None and inspect.isawaitable(result):
                    if inspect.iscoroutine(result):
                        result.close()  # never awaited: no warning later, no work done
                    raise TypeError("it returned an awaitable, which nothing awaits")
            except Exception as exc:  # the application's bug must not stop the node
                self.handler_errors += 1
                if self.handler_errors == 1:
                    log.warning(
                        "the message handler of %r raised %r; later failures are only "
                        "counted (subscription.handler_errors)",
                        self.pattern,
                        exc,
                    )
            return True
        if len(self._messages) >= QUEUE_LIMIT and message is not None:
            self.dropped += 1  # a slow consumer never stalls the node (and is told: _dispatch)
            return False
        self._messages.append(message)
        if self._waiters:
            self._wake_one()
        return True

    def _wake_one(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def get(self, timeout: float | None = None) -> Message | None:
        """The next message; None at the timeout or when the node stopped."""
        if self.handler is not None:
            raise RuntimeError("this subscription hands its messages to its handler")
        messages = self._messages
        if messages:
            return messages.popleft()  # no future, no timer when one is already queued
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not messages:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return None
            waiter = loop.create_future()
            self._waiters.append(waiter)
            # A timer, not wait_for: wait_for returns a result that came with a cancellation,
            # and the message would go to a getter that gave up.
            timer = None if left is None else loop.call_later(left, _expire, waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if messages:
                    self._wake_one()  # what woke us goes to the next getter
                raise
            finally:
                if timer is not None:
                    timer.cancel()
                if waiter in self._waiters:  # not when a message woke it: _wake_one took it
                    self._waiters.remove(waiter)
        return messages.popleft()

    def close(self) -> None:
        """Stop receiving."""
        self._registry.discard(self)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            message = await self.get()
            if message is None:
                return
            yield message


def deliver(subscriptions: set[Subscription], message: Message) -> bool:
    """Offer ``message`` to every subscription on its topic; False when one that queues
    dropped it, having fallen ``QUEUE_LIMIT`` messages behind."""
    taken = True
    # A copy: a handler may subscribe, or close its own subscription, as it runs.
    for subscription in tuple(subscriptions):
        if subscription.matches(message.topic) and not subscription._offer(message):
            taken = False
    return taken


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Members(Protocol):
    @property
    def peers(self) -> dict[int, PeerInfo]: ...

    def events(self, *kinds: type[Event]) -> AsyncIterator[Event]: ...


async def until_members(
    node: _Members,
    ready: Callable[[dict[int, PeerInfo]], bool],
    timeout: float,
    *,
    recheck: float = 0.25,
    settle: float = 0.0,
) -> bool:
    """Wait until ``ready(node.peers)``: looked at again at each membership event (a join,
    a hello saying what a peer serves) and every ``recheck`` seconds for what no event
    tells (a peer's copies starting to flow). With ``settle``, once ready, wait on until the
    membership has been quiet that long (members a seed's gossip names are still arriving).
    False when ``timeout`` passes before it is ready."""
    if settle <= 0 and ready(node.peers):
        return True  # the usual case where it is asked per message: no watcher to start
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    changed = asyncio.Event()

    async def watch() -> None:
        async for _ in node.events(PeerEvent):
            changed.set()

    watcher = asyncio.ensure_future(watch())
    try:
        while True:
            done = ready(node.peers)
            left = deadline - loop.time()
            if left <= 0 or (done and settle <= 0):
                return done
            changed.clear()
            try:
                await asyncio.wait_for(changed.wait(), min(left, settle if done else recheck))
            except asyncio.TimeoutError:
                if done:
                    return True  # quiet for ``settle``
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
