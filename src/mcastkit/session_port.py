"""How the parts a ``Session`` owns reach back to it, with no I/O: one narrow port."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .events import Event
from .peers import Address, PeerInfo
from .wire import FrameType


class SendFrame(Protocol):
    """Frame and queue one datagram (``to`` None: the group)."""

    def __call__(
        self,
        kind: FrameType,
        topic: str,
        payload: bytes,
        now: float,
        *,
        flags: int = 0,
        to: Address | None = None,
    ) -> None: ...


# Frame and queue group datagrams, (topic, payload, flags) each, in order.
SendRun = Callable[[FrameType, list[tuple[str, bytes, int]], float], None]


@dataclass(frozen=True)
class SessionPort:
    """All a session's part may do back: send a frame, count a drop, emit an event, read
    the peer table, ask how much one frame holds. Anything more is passed to it by name."""

    send: SendFrame
    send_run: SendRun
    drop: Callable[[str], None]  # count a datagram dropped, by reason
    emit: Callable[[Event], None]  # an event for the application
    room: Callable[[str], int]  # payload bytes one frame on a topic holds
    peers: dict[int, PeerInfo]  # read only: the session keeps the table
    counters: Counter[str]
