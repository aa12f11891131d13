"""The one blocking event loop of the runtimes that do not run on asyncio (file transfer,
ping, bench recv, the doctor's listeners).

Each runtime hosts a sans-I/O core: it registers the sockets to read (drained in batches,
see batch.py) and gives one ``turn(now)`` that does the core's timed work and says when it
wants to run again. The loop sleeps in the kernel (epoll) until a socket is readable or
that time comes: no busy waits, no sleeps that ignore arriving datagrams. Sending goes
through ``BatchSender``, whose policy is the same everywhere (a full buffer waits for
room, errors are counted).
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from ..core import Core, Outgoing
from ..events import Event
from .ancillary import Packet
from .batch import BatchReceiver, RunHandler
from .handles import SocketLike, os_socket

__all__ = ["STOP", "Driver"]

STOP = None  # what ``turn`` returns when the work is done
E = TypeVar("E", bound=Event)
MAX_WAIT = 0.25  # a turn runs at least this often, so stop flags and deadlines are seen


class ReadsPackets(Protocol):
    @property
    def sock(self) -> socket.socket: ...

    def recv_nowait(self) -> Packet | None: ...


class Driver:
    """Readable sockets and one turn function, on one thread."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self.turns = 0

    def on_readable(self, sock: SocketLike, callback: Callable[[], object]) -> None:
        """Call ``callback`` whenever ``sock`` has something to read."""
        self._selector.register(os_socket(sock), selectors.EVENT_READ, callback)

    def forget(self, sock: SocketLike) -> None:
        """Stop watching ``sock`` (before it is closed)."""
        self._selector.unregister(os_socket(sock))

    def read_runs(self, receiver: BatchReceiver, handle: RunHandler, limit: int = 256) -> None:
        """Drain ``receiver`` in batches (GRO runs, ``recvmmsg``) into ``handle``."""
        self.on_readable(receiver.sock, lambda: receiver.receive_runs(handle, limit))

    def read_packets(
        self, receiver: BatchReceiver, handle: Callable[[Packet], None], limit: int = 256
    ) -> None:
        """Drain ``receiver`` into ``handle`` one ``Packet`` at a time."""

        def drain() -> None:
            for packet in receiver.receive(limit):
                handle(packet)

        self.on_readable(receiver.sock, drain)

    def read_each(
        self, sock: ReadsPackets, handle: Callable[[Packet], object], limit: int = 256
    ) -> None:
        """Drain ``sock`` (a ``GroupSocket``) into ``handle`` one datagram at a time, with
        what the kernel tells of each (destination, interface, TTL, drops): for commands
        that show every datagram. ``handle`` returning True ends the drain (a count met).
        The socket is made non-blocking."""
        os_socket(sock).setblocking(False)

        def drain() -> None:
            for _ in range(limit):
                packet = sock.recv_nowait()
                if packet is None or handle(packet) is True:
                    return

        self.on_readable(sock, drain)

    def host(
        self,
        core: Core[E],
        send: Callable[[Outgoing], object],
        turn: Callable[[float], float | None],
        on_event: Callable[[E], object] | None = None,
    ) -> None:
        """Drive ``core`` (core.Core) until ``turn(now)`` returns STOP. Each turn runs the
        core's timer when due, then ``send``s what it has (answers to what was just read go
        out at once), hands its events to ``on_event``, and waits for input at most until
        the core's next timer or the seconds ``turn`` returned. The runtime's readers feed
        ``core.receive_datagram``."""

        def step(now: float) -> float | None:
            when = core.next_timer()
            if when is not None and now >= when:
                core.handle_timer(now)
            out = core.datagrams_to_send(now)
            if out:
                send(out)
            while (event := core.next_event()) is not None:
                if on_event is not None:
                    on_event(event)
            wait = turn(now)
            if wait is STOP:
                return STOP
            when = core.next_timer()
            return wait if when is None else min(wait, max(0.0, when - now))

        self.run(step)

    def run(self, turn: Callable[[float], float | None]) -> None:
        """Until ``turn(now)`` returns ``STOP``: run it, then wait for readable sockets at
        most the seconds it returned (0: poll and go on) and read them."""
        select = self._selector.select
        clock = time.monotonic
        while True:
            wait = turn(clock())
            self.turns += 1
            if wait is None:
                return
            for key, _ in select(min(max(wait, 0.0), MAX_WAIT)):
                key.data()

    def close(self) -> None:
        """Forget the sockets (the caller closes them)."""
        self._selector.close()

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
