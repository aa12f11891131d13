"""Requests and replies, with no I/O: ours asked and the replies gathered, each request
closed by one ``Gathered``; theirs handed to the application once and answered."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .events import Gathered, RequestReceived
from .peers import Address, PeerInfo, topic_matches
from .session_port import SessionPort
from .wire import Frame, FrameType

Want = Literal["all", "first"] | int
REQUEST_ID = struct.Struct("!Q")  # first in a REQUEST or REPLY payload


@dataclass
class Pending:
    """One open request: who is expected to answer, who did, how fast."""

    topic: str
    sent_at: float
    deadline: float
    want: Want
    expected: set[int]
    replies: dict[int, bytes] = field(default_factory=dict)
    rtts: dict[int, float] = field(default_factory=dict)

    def satisfied(self) -> bool:
        """``want`` is met."""
        if self.want == "first":
            return bool(self.replies)
        if self.want == "all":
            return bool(self.expected) and self.expected <= set(self.replies)
        return len(self.replies) >= int(self.want)

    def outcome(self, request_id: int) -> Gathered:
        """The event that closes this request."""
        missing = sorted(self.expected - set(self.replies))
        return Gathered(
            request_id,
            self.topic,
            dict(self.replies),
            missing,
            self.satisfied(),
            dict(self.rtts),
        )


def fitted_reply(answer: bytes, limit: int) -> bytes:
    """``answer``, or when it is over ``limit`` (one reply datagram) an error saying so: the
    requester is never left with "no reply" for a reply too long to send."""
    if len(answer) <= limit:
        return answer
    error = f"error: the reply is {len(answer)} bytes; one reply datagram holds {limit}"
    return error.encode()[:limit]


def check_want(want: Want) -> None:
    """Raise ValueError unless ``want`` is 'all', 'first' or a count >= 1."""
    if not (want in ("all", "first") or (isinstance(want, int) and want >= 1)):
        raise ValueError("want must be 'all', 'first' or a count >= 1")


class Gatherer:
    """Open requests by id; each ends in one ``Gathered``, when satisfied or at its deadline."""

    def __init__(self) -> None:
        self.pending: dict[int, Pending] = {}

    def open(
        self,
        request_id: int,
        topic: str,
        now: float,
        *,
        timeout: float,
        want: Want,
        expected: set[int],
    ) -> None:
        """Start gathering for a request just sent."""
        self.pending[request_id] = Pending(topic, now, now + timeout, want, expected)

    def reply(
        self, request_id: int, sender: int, payload: bytes, now: float
    ) -> tuple[float, Gathered | None] | None:
        """A reply: its round-trip time and, when it satisfies the request, the outcome.
        None for a reply to no open request (late, or not ours)."""
        pending = self.pending.get(request_id)
        if pending is None:
            return None
        rtt = now - pending.sent_at
        pending.replies[sender] = payload
        pending.rtts[sender] = rtt
        if pending.satisfied():
            del self.pending[request_id]
            return rtt, pending.outcome(request_id)
        return rtt, None

    def expire(self, now: float) -> list[Gathered]:
        """Requests past their deadline, closed."""
        due = [r for r, p in self.pending.items() if now >= p.deadline]
        return [self.pending.pop(r).outcome(r) for r in due]

    def next_deadline(self) -> float | None:
        """The earliest deadline of an open request."""
        return min((p.deadline for p in self.pending.values()), default=None)


class Requests:
    """REQUEST and REPLY frames of a session (owned by ``Session``)."""

    def __init__(
        self,
        port: SessionPort,
        *,
        check_size: Callable[[str, bytes, int], None],
        random_bytes: Callable[[int], bytes],
        serves: Callable[[], list[str]],
        first_request: Callable[[int, int, float], bool],
    ) -> None:
        self.gatherer = Gatherer()
        self._port = port
        self._check_size = check_size  # raises MessageTooLarge
        self._random = random_bytes
        self._serves = serves  # the topics we answer (``prefix*`` allowed)
        self._first = first_request  # False: served once already (a replay)

    def request(self, topic: str, payload: bytes, now: float, *, timeout: float, want: Want) -> int:
        """Ask the group; a Gathered event follows when ``want`` is met or at the timeout."""
        check_want(want)
        self._check_size(topic, payload, REQUEST_ID.size)
        request_id = int.from_bytes(self._random(8), "big")
        expected = {p.node_id for p in self._port.peers.values() if p.serves(topic)}
        self.gatherer.open(request_id, topic, now, timeout=timeout, want=want, expected=expected)
        self._port.send(FrameType.REQUEST, topic, REQUEST_ID.pack(request_id) + payload, now)
        return request_id

    def max_reply(self, topic: str) -> int:
        """The largest reply payload for ``topic`` that fits one datagram."""
        return self._port.room(topic) - REQUEST_ID.size

    def reply(self, request: RequestReceived, payload: bytes, now: float) -> None:
        """Answer a request (unicast to the requester's address as seen)."""
        self._check_size(request.topic, payload, REQUEST_ID.size)
        body = REQUEST_ID.pack(request.request_id) + payload
        self._port.send(FrameType.REPLY, request.topic, body, now, to=request.reply_to)

    def on_request(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        if len(frame.payload) < REQUEST_ID.size:
            self._port.drop("bad-request")
            return
        if not any(topic_matches(p, frame.topic) for p in self._serves()):
            self._port.counters["requests-not-served"] += 1
            return
        (request_id,) = REQUEST_ID.unpack_from(frame.payload)
        if not self._first(frame.sender, request_id, now):
            self._port.drop("request-replay")  # served once already: a replay is never run again
            return
        asked = frame.payload[REQUEST_ID.size :]
        self._port.emit(RequestReceived(request_id, frame.sender, frame.topic, asked, source))

    def on_reply(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        if len(frame.payload) < REQUEST_ID.size:
            self._port.drop("bad-reply")
            return
        (request_id,) = REQUEST_ID.unpack_from(frame.payload)
        payload = frame.payload[REQUEST_ID.size :]
        answered = self.gatherer.reply(request_id, frame.sender, payload, now)
        if answered is None:
            self._port.counters["late-replies"] += 1
            return
        peer.rtt, outcome = answered
        if outcome is not None:
            self._port.emit(outcome)


@dataclass(frozen=True)
class Request:
    """A request this node was asked to answer."""

    topic: str
    payload: bytes
    sender: int
    sender_name: str

    def text(self) -> str:
        """The payload as text."""
        return self.payload.decode("utf-8", errors="replace")


@dataclass
class GatherResult:
    """Replies gathered by ``Node.request``."""

    topic: str
    replies: dict[int, bytes]
    names: dict[int, str]
    missing: list[int]
    complete: bool
    rtts: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "topic": self.topic,
            "complete": self.complete,
            "replies": [
                {
                    "id": f"{peer:016x}",
                    "name": self.names.get(peer, "?"),
                    "payload": data.decode("utf-8", errors="replace"),
                    "rtt_ms": round(self.rtts.get(peer, 0.0) * 1000, 3),
                }
                for peer, data in self.replies.items()
            ],
            "missing": [
                {"id": f"{peer:016x}", "name": self.names.get(peer, "?")} for peer in self.missing
            ],
        }
