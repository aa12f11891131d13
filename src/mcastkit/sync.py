"""Blocking facade over the asyncio Node, for scripts: ``with mcastkit.connect() as node``.

The Node runs on an event loop in a background thread; each call hops onto it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from .aio import DEFAULT_GROUP, GatherResult, Node, Request, Subscription
from .events import Message
from .gather import Want
from .peers import PeerInfo
from .subscription import MessageHandler

__all__ = ["SyncNode", "connect"]

T = TypeVar("T")
log = logging.getLogger("mcastkit")
CALL_TIMEOUT = 30.0  # the longest a quick call (start, peers, serve) may take on the loop
MARGIN = 5.0  # beyond a caller's own timeout, for the hop onto the loop and back


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a publish from a handler failed: %r", task.exception())


class SyncNode:
    """A running group node with blocking methods."""

    def __init__(self, node: Node, subscribe: str | None = "*") -> None:
        self._node = node
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mcastkit", daemon=True)
        self._thread.start()
        try:
            self._call(node.start())
        except BaseException:
            self._shutdown_loop()
            raise
        self._inbox: Subscription | None = None
        if subscribe is not None:
            self._inbox = self._call(self._subscribe(subscribe))

    async def _subscribe(self, pattern: str, handler: MessageHandler | None = None) -> Subscription:
        return self._node.subscribe(pattern, handler)

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = CALL_TIMEOUT) -> T:
        """Run on the node's loop; never wait longer than ``timeout`` (None only where the
        caller itself asked to wait without limit)."""
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError(
                "a blocking call from the node's own thread (a handler) would wait for "
                "itself: only publish() works there"
            )
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(
                f"the node's loop did not answer within {timeout:.0f}s (is the node stopped?)"
            ) from None

    @staticmethod
    def _beyond(timeout: float | None) -> float | None:
        return None if timeout is None else timeout + MARGIN

    @property
    def node(self) -> Node:
        """The asyncio Node underneath."""
        return self._node

    @property
    def node_id(self) -> int:
        """This node's id."""
        return self._node.node_id

    def peers(self) -> dict[int, PeerInfo]:
        """The members known now."""
        return self._call(self._peers())

    async def _peers(self) -> dict[int, PeerInfo]:
        return self._node.peers

    def publish(self, topic: str, payload: bytes | str, *, reliable: bool = False) -> None:
        """Send a message on ``topic`` (``reliable``: see ``Node.publish``). From a handler,
        on the node's thread, it queues the message and returns at once; a failure there is
        logged, not raised."""
        if threading.current_thread() is self._thread:
            task = self._loop.create_task(self._node.publish(topic, payload, reliable=reliable))
            task.add_done_callback(_log_failure)
            return
        # A reliable publish may wait for back-pressure: as long as the data takes to drain.
        self._call(self._node.publish(topic, payload, reliable=reliable), timeout=None)

    def flush(self, timeout: float | None = None, *, acknowledged: bool = False) -> bool:
        """Block until every reliable message went out once, and with ``acknowledged``
        until every member acknowledged it (``Node.flush``); False at the timeout."""
        flushed = self._node.flush(timeout, acknowledged=acknowledged)
        return self._call(flushed, timeout=self._beyond(timeout))

    def unacknowledged(self, among: Iterable[int] | None = None) -> list[int]:
        """Members (of ``among``, default all) not acknowledging all our reliable stream."""
        return self._call(self._unacknowledged(among))

    async def _unacknowledged(self, among: Iterable[int] | None) -> list[int]:
        return self._node.unacknowledged(among)

    def recv(self, timeout: float | None = None) -> Message | None:
        """The next message matching the subscription given to ``connect``; None at timeout."""
        if self._inbox is None:
            raise RuntimeError("connect(subscribe=None) receives no messages")
        return self._call(self._inbox.get(timeout), timeout=self._beyond(timeout))

    def request(
        self, topic: str, payload: bytes | str = b"", *, timeout: float = 1.0, want: Want = "all"
    ) -> GatherResult:
        """Ask the group; block until replies are gathered."""
        request = self._node.request(topic, payload, timeout=timeout, want=want)
        return self._call(request, timeout=self._beyond(timeout))

    def subscribe(self, pattern: str, handler: MessageHandler) -> Callable[[], None]:
        """Call ``handler`` with each message on ``pattern`` as it arrives, on the node's
        thread (``Node.subscribe`` with a handler: no hop per message; keep it short).
        Returns the function that stops it."""
        subscription = self._call(self._subscribe(pattern, handler))

        def unsubscribe() -> None:
            self._call(self._close_subscription(subscription))

        return unsubscribe

    async def _close_subscription(self, subscription: Subscription) -> None:
        subscription.close()

    def serve(self, topic: str, handler: Callable[[Request], bytes | str]) -> None:
        """Answer requests on ``topic``; ``handler`` runs on the node's thread."""
        self._call(self._serve(topic, handler))

    async def _serve(self, topic: str, handler: Callable[[Request], bytes | str]) -> None:
        self._node.serve(topic, handler)

    def close(self) -> None:
        """Say goodbye, close sockets, stop the thread."""
        if not self._loop.is_closed():
            try:
                self._call(self._node.stop(), timeout=5)
            finally:
                self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> SyncNode:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(group: str = DEFAULT_GROUP, *, subscribe: str | None = "*", **options: Any) -> SyncNode:
    """Start a Node in a background thread; options are those of ``Node``."""
    return SyncNode(Node(group, **options), subscribe=subscribe)
