"""The one contract of a sans-I/O protocol core, as its runtime drives it (aioquic's shape):
datagrams in, a timer, datagrams and events out. Time is float seconds of one monotonic
clock the runtime owns and passes in; a core never reads a clock or touches a socket.

``Session`` (a group member), ``PingSession`` (``mcast ping``) and the file transfer's
``SendSession`` and ``ReceiveSession`` offer it; the asyncio Node and the blocking
``Driver.host`` drive it.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from .events import Event
from .peers import Address

__all__ = ["Core", "Outgoing"]

Outgoing = list[tuple[bytes, "Address | None"]]  # datagrams to send; None: to the group
E = TypeVar("E", bound=Event, covariant=True)  # the events a core gives


class Core(Protocol[E]):
    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        """Take one datagram (hostile input is counted and dropped, never raised)."""

    def handle_timer(self, now: float) -> None:
        """Do what was due by ``now`` (a harmless call when nothing was)."""

    def datagrams_to_send(self, now: float) -> Outgoing:
        """Everything to send now, and forget it."""

    def next_event(self) -> E | None:
        """The next event for the application, or None."""

    def next_timer(self) -> float | None:
        """When ``handle_timer`` must run next (None: only input wakes it)."""
