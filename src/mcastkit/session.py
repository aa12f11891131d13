"""The group session: membership, messaging, request/gather and security, with no I/O.

Inputs: ``receive_datagram(data, source, now)``, ``handle_timer(now)`` and the API calls.
Outputs: ``datagrams_to_send(now)`` (bytes and a destination: None for the group, else a unicast
address), ``next_event()`` and ``next_timer()``. Time and randomness are passed in, so tests
run it with a fake clock and a fake lossy link.
"""

from __future__ import annotations

import json
import struct
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from .errors import MulticastError
from .events import (
    UNKNOWN_END,
    Event,
    Failed,
    Gathered,
    IdRenewed,
    Joined,
    Left,
    Message,
    PeerEvent,
    RequestReceived,
    SlowReceiver,
    Unrecoverable,
    Updated,
)
from .peers import Address, PeerInfo, topic_matches
from .reliable import (
    ACK,
    RDATA_HEAD,
    RSTATE,
    ReliableConfig,
    StreamReceiver,
    StreamSender,
    decode_nack,
    encode_nack,
)
from .security import KeyRing, ReplayWindow
from .wire import (
    HEADER,
    MAGIC,
    MAX_TOPIC,
    VERSION,
    Flag,
    Frame,
    FrameType,
    decode_frame_untrusted,
    is_sealed,
    max_payload,
)

__all__ = [
    "Event",
    "Failed",
    "Gathered",
    "IdRenewed",
    "Joined",
    "Left",
    "Message",
    "MessageTooLarge",
    "PeerEvent",
    "PeerInfo",
    "RequestReceived",
    "Session",
    "SlowReceiver",
    "Unrecoverable",
    "Updated",
    "topic_matches",
]

Want = Literal["all", "first"] | int
T = TypeVar("T")
_REQUEST_ID = struct.Struct("!Q")
# JGroups FD_ALL3 and similar detectors use a few missed heartbeats; 3 intervals is our default.
DEFAULT_HEARTBEAT = 1.0
MISSED_HEARTBEATS = 3
MAX_META_BYTES = 1024
STREAM_KEY = "_rs"  # in a hello: the sender's next reliable seq (not part of the metadata)
TOPIC_CACHE = 1024
DEFAULT_MAX_PEERS = 4096
# A sealed frame's timestamp must be within this of our clock: a captured frame is worthless
# after it, to a newcomer or a restarted node too (whose replay windows are empty).
DEFAULT_MAX_SKEW = 30.0
# Departed peers are remembered (id, incarnation, highest seqs, stream position) so replays
# cannot bring them back and a peer that returns after a partition resumes its stream.
MAX_TOMBSTONES = 4096
TOMBSTONE_SECONDS = 600.0
SEEN_REQUESTS = 4096
# Unicast hellos to ids we do not know (answers to a newcomer, HELLO_WANTED): a spoofed flood
# must not turn every member into a reflector. Bucket: 200 at once, 100 a second.
ANSWER_BURST = 200.0
ANSWER_RATE = 100.0
POSITION = struct.Struct("!Q")  # HEARTBEAT / GOODBYE payload: our stream's next seq
_SENT_KEY = {kind: f"sent:{kind.name.lower()}" for kind in FrameType}


class MessageTooLarge(MulticastError, ValueError):
    """A payload does not fit one datagram of the configured size."""


@dataclass
class _Tombstone:
    """A departed incarnation: its highest seqs per channel and where its stream stood."""

    highest: dict[bool, int]
    stream_next: int
    expires: float


@dataclass
class _Pending:
    topic: str
    sent_at: float
    deadline: float
    want: Want
    expected: set[int]
    replies: dict[int, bytes] = field(default_factory=dict)
    rtts: dict[int, float] = field(default_factory=dict)

    def satisfied(self) -> bool:
        if self.want == "first":
            return bool(self.replies)
        if self.want == "all":
            return bool(self.expected) and self.expected <= set(self.replies)
        return len(self.replies) >= int(self.want)


class Session:
    """One member of a group, as a pure state machine."""

    def __init__(
        self,
        *,
        node_id: int,
        incarnation: int,
        name: str,
        now: float,
        random_bytes: Callable[[int], bytes],
        meta: dict[str, Any] | None = None,
        heartbeat: float = DEFAULT_HEARTBEAT,
        failure_timeout: float | None = None,
        keyring: KeyRing | None = None,
        deliver_own: bool = False,
        max_datagram: int = 1472,
        wall_clock_us: Callable[[], int] | None = None,
        reliable: ReliableConfig | None = None,
        max_peers: int = DEFAULT_MAX_PEERS,
        max_skew: float = DEFAULT_MAX_SKEW,
        receive_budget: int | None = None,
    ) -> None:
        if heartbeat <= 0:
            raise ValueError("heartbeat must be positive")
        if max_peers < 1 or max_skew <= 0:
            raise ValueError("max_peers and max_skew must be positive")
        self.incarnation = incarnation
        self.node_id = node_id  # after incarnation: the setter derives the own-frame key
        self.meta: dict[str, Any] = {"name": name, **(meta or {})}
        self.heartbeat = heartbeat
        self.failure_timeout = failure_timeout or heartbeat * MISSED_HEARTBEATS
        self.keyring = keyring
        self.deliver_own = deliver_own
        self.max_datagram = max_datagram
        self.peers: dict[int, PeerInfo] = {}
        self.counters: Counter[str] = Counter()
        self._random = random_bytes
        self._wall_us = wall_clock_us or (lambda: 0)
        self._outgoing: deque[tuple[bytes, Address | None]] = deque()
        self._events: deque[Event] = deque()
        self._group_seq = 0
        self._unicast_seq = 0
        self._last_stamp = 0
        self._started_us = 0
        self.max_peers = max_peers
        self.max_skew_us = int(max_skew * 1e6)
        self._tombstones: OrderedDict[tuple[int, int], _Tombstone] = OrderedDict()
        self._seen_requests: OrderedDict[tuple[int, int], float] = OrderedDict()
        self._answer_tokens = ANSWER_BURST
        self._answer_refilled = now
        self._pending: dict[int, _Pending] = {}
        self._topics: dict[str, tuple[bytes, int]] = {}
        self._next_heartbeat = now
        # Peers are checked for silence on a short tick, not one timer per peer: detection is
        # late by at most one tick, and next_timer() stays O(1) on the send path.
        self._check_every = min(0.1, self.failure_timeout / 10)
        self._next_check = now + self._check_every
        self._last_timer = now
        self._started = False
        self._closed = False
        self.reliable = reliable or ReliableConfig()
        self._stream: StreamSender | None = None
        self._streams: dict[int, StreamReceiver] = {}
        # Memory for every sender's stream together (each stream also has its own limit).
        self.receive_budget = receive_budget or 2 * self.reliable.receiver_memory
        self._stream_memory = 0
        self._now = now

    @property
    def node_id(self) -> int:
        """Our random 64-bit id (renewed when another node drew the same one)."""
        return self._node_id

    @node_id.setter
    def node_id(self, value: int) -> None:
        self._node_id = value
        self._own_key = struct.pack("!QI", value, self.incarnation)

    # --- API calls -----------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Announce ourselves (HELLO) and start heartbeats."""
        self._started = True
        self._started_us = self._wall_us()
        self._send_hello(now, flags=0, to=None)

    def close(self, now: float) -> None:
        """Say goodbye; the session sends nothing after this."""
        if self._started and not self._closed:
            self._send(FrameType.GOODBYE, "", self._position(), now)
        self._closed = True

    def serve(self, topic: str, now: float) -> None:
        """Announce that this node answers requests on ``topic`` (``prefix*`` allowed)."""
        serves = list(self.meta.get("serves", []))
        if topic not in serves:
            self.meta["serves"] = [*serves, topic]
            if self._started:
                self._send_hello(now, flags=Flag.HELLO_ANSWER, to=None)

    def update_meta(self, now: float, **values: Any) -> None:
        """Change our metadata and tell the group."""
        self.meta.update(values)
        if self._started:
            self._send_hello(now, flags=Flag.HELLO_ANSWER, to=None)

    def publish(self, topic: str, payload: bytes, now: float, *, reliable: bool = False) -> None:
        """Send a message on ``topic`` to the group.

        Reliable messages go on this node's stream: any size up to ``max_message``, repaired
        on NACK, delivered in order; they leave at the configured rate through
        ``datagrams_to_send``.
        """
        if not reliable:
            self._check_size(topic, payload)
            self._send(FrameType.DATA, topic, payload, now)
            return
        if self._closed:
            return
        if self._stream is None:
            self._stream = StreamSender(self.reliable, now)
        chunk = self._topic_info(topic)[1] - RDATA_HEAD.size
        self._stream.enqueue(topic, payload, chunk)

    @property
    def reliable_backlog(self) -> int:
        """Bytes of reliable messages queued and not yet sent once."""
        return 0 if self._stream is None else self._stream.queued_bytes

    def reliable_settled(self) -> bool:
        """True when every reliable message went out and no repair is pending."""
        return self._stream is None or self._stream.idle

    def reliable_stats(self) -> dict[str, Any]:
        """Counters of the reliable stream we send and of those we receive."""
        stats: dict[str, Any] = {}
        if self._stream is not None:
            stream = self._stream
            stats["sender"] = {
                "next_seq": stream.next_seq,
                "window_oldest": stream.oldest,
                "window_bytes": stream.window_bytes,
                "queued_bytes": stream.queued_bytes,
                "rate": stream.rate,
                "rate_history": [] if stream.control is None else stream.control.history[-100:],
                **stream.counters,
            }
        stats["receivers"] = {
            f"{sender:016x}": {
                "next_seq": r.next_deliver,
                "missing": r.missing,
                "memory": r.memory,
                **r.counters,
            }
            for sender, r in self._streams.items()
        }
        return stats

    def request(
        self, topic: str, payload: bytes, now: float, *, timeout: float, want: Want = "all"
    ) -> int:
        """Ask the group; a Gathered event follows when ``want`` is met or at the timeout."""
        if not (want in ("all", "first") or (isinstance(want, int) and want >= 1)):
            raise ValueError("want must be 'all', 'first' or a count >= 1")
        self._check_size(topic, payload, extra=_REQUEST_ID.size)
        request_id = int.from_bytes(self._random(8), "big")
        expected = {p.node_id for p in self.peers.values() if p.serves(topic)}
        self._pending[request_id] = _Pending(topic, now, now + timeout, want, expected)
        self._send(FrameType.REQUEST, topic, _REQUEST_ID.pack(request_id) + payload, now)
        return request_id

    def max_reply(self, topic: str) -> int:
        """The largest reply payload for ``topic`` that fits one datagram."""
        return self._topic_info(topic)[1] - _REQUEST_ID.size

    def max_unreliable(self, topic: str) -> int:
        """The largest unreliable message payload for ``topic`` (one datagram)."""
        return self._topic_info(topic)[1]

    def reply(self, request: RequestReceived, payload: bytes, now: float) -> None:
        """Answer a request (unicast to the requester's address as seen)."""
        self._check_size(request.topic, payload, extra=_REQUEST_ID.size)
        body = _REQUEST_ID.pack(request.request_id) + payload
        self._send(FrameType.REPLY, request.topic, body, now, to=request.reply_to)

    # --- outputs -------------------------------------------------------------------------

    def datagrams_to_send(self, now: float | None = None) -> list[tuple[bytes, Address | None]]:
        """Datagrams due at ``now``; None as destination means the group.

        Runtimes pass the time: the reliable stream's rate budget refills up to it. Without
        it, the time of the last input is used (fine for tests that step time themselves).
        """
        if now is not None and now > self._now:
            self._now = now
        if self._stream is not None and not self._closed:
            self._pull_stream(self._now)
        out = list(self._outgoing)
        self._outgoing.clear()
        return out

    def next_event(self) -> Event | None:
        """The next event, or None."""
        return self._events.popleft() if self._events else None

    def next_timer(self) -> float | None:
        """When ``handle_timer`` must run next."""
        if self._closed:
            return None
        soonest = self._next_heartbeat
        if self.peers and self._next_check < soonest:
            soonest = self._next_check
        if self._pending:
            soonest = min(soonest, min(p.deadline for p in self._pending.values()))
        if self._stream is not None:
            when = self._stream.next_timer(self._now)
            if when is not None and when < soonest:
                soonest = when
        for stream in self._streams.values():
            when = stream.next_timer()
            if when is not None and when < soonest:
                soonest = when
        return soonest

    # --- inputs --------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Heartbeats, failure detection and request deadlines."""
        if self._closed:
            return
        self._now = now
        if self._started and now >= self._next_heartbeat:
            self._send(FrameType.HEARTBEAT, "", self._position(), now)
            if self._stream is not None:
                self._send_state(now)
            self._next_heartbeat = now + self.heartbeat
        if self._stream is not None:
            if self._stream.probe_due(now):
                self._send_state(now)
            self._pull_stream(now)
        for stream in list(self._streams.values()):
            before = stream.memory
            nacks = stream.handle_timer(now)
            self._stream_memory += stream.memory - before
            peer = self.peers.get(stream.sender) if nacks else None
            for runs in nacks:
                payload = encode_nack(stream.sender, stream.incarnation, runs)
                # To the group, so other receivers hold theirs back; and straight to the
                # sender, whose group socket may be flooded by the loopback of its own data.
                self._send(FrameType.NACK, "", payload, now)
                if peer is not None and peer.address is not None:
                    self._send(FrameType.NACK, "", payload, now, to=peer.address)
            self._collect(stream, now)
        if now - self._last_timer > max(3 * self._check_every, self.failure_timeout / 2):
            # We did not run (stopped, suspended, starved): the silence was ours, not the
            # peers'. Give what waits in the socket time to arrive before judging anyone.
            for peer in self.peers.values():
                peer.last_seen = max(peer.last_seen, now - self.failure_timeout / 2)
            self.counters["timer-stalls"] += 1
        self._last_timer = now
        if now >= self._next_check:
            self._next_check = now + self._check_every
            silent = [p for p in self.peers.values() if now - p.last_seen > self.failure_timeout]
            for peer in silent:
                self._forget(peer, said_goodbye=False)
                self._events.append(Failed(peer))
            while self._tombstones:
                oldest = next(iter(self._tombstones.values()))
                if oldest.expires > now:
                    break
                self._tombstones.popitem(last=False)
        for request_id in [r for r, p in self._pending.items() if now >= p.deadline]:
            self._finish(request_id)

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        """Take one datagram from the network: hostile input is counted and dropped."""
        if self._closed:
            return
        self._now = now
        self.counters["datagrams"] += 1
        if self.keyring is not None:
            if not is_sealed(data):
                self._drop("unsealed")
                return
            opened = self.keyring.open_untrusted(data)
            if isinstance(opened, str):
                self._drop(opened)
                return
            data = opened
        if data[8:20] == self._own_key and not self.deliver_own:
            self.counters["own"] += 1  # our own datagram looped back: skip the full decode
            return
        frame = decode_frame_untrusted(data)
        if isinstance(frame, str):
            self._drop("sealed-without-key" if frame == "sealed" else frame)
            return
        if frame.sender == self.node_id:
            self._from_own_id(frame, source, now)
            return
        if self.keyring is not None and not self._fresh(frame):
            self._drop("stale")  # outside the clock skew: a replay of a captured frame
            return
        unicast = bool(frame.flags & Flag.UNICAST)
        peer = self.peers.get(frame.sender)
        if peer is not None and peer.incarnation != frame.incarnation:
            if frame.timestamp_us and frame.timestamp_us < peer.last_stamp:
                self._drop("stale-incarnation")  # an older run of a live peer: a replay
                return
        elif peer is None:
            verdict = self._admit(frame, unicast)
            if verdict is not None:
                self._drop(verdict)
                return
        window = None
        if peer is not None and peer.incarnation == frame.incarnation:
            window = peer.windows.get(unicast)
        if window is None:
            window = ReplayWindow()
        verdict = window.check_and_mark(frame.seq)
        if verdict is not None:
            self._drop(verdict)
            return
        self.counters["frames"] += 1
        peer = self._touch(frame, source, now, unicast)
        if peer is None:
            return
        peer.windows.setdefault(unicast, window)
        if frame.timestamp_us > peer.last_stamp:
            peer.last_stamp = frame.timestamp_us
        handler = _HANDLERS[frame.type]
        handler(self, frame, peer, source, now)

    # --- internals -----------------------------------------------------------------------

    def _fresh(self, frame: Frame) -> bool:
        """A sealed frame's (authenticated) timestamp is within the allowed skew of ours, and
        not from before we started: no frame captured earlier reaches a newcomer or a
        restarted node, whose replay windows are still empty."""
        ours = self._wall_us()
        if not ours:
            return True
        stamp = frame.timestamp_us
        return abs(ours - stamp) <= self.max_skew_us and stamp >= self._started_us

    def _admit(self, frame: Frame, unicast: bool) -> str | None:
        """Why a frame from a sender we do not know is refused, or None to accept it."""
        if frame.type == FrameType.GOODBYE:
            return "goodbye-from-unknown"
        tomb = self._tombstones.get((frame.sender, frame.incarnation))
        if tomb is not None and frame.seq <= tomb.highest.get(unicast, 0):
            return "departed"  # a replay of a peer that left or failed
        if len(self.peers) >= self.max_peers:
            return "peer-table-full"
        return None

    def _may_answer_unknown(self, now: float) -> bool:
        """Token bucket for unicast hellos to peers we do not know yet."""
        self._answer_tokens = min(
            ANSWER_BURST, self._answer_tokens + (now - self._answer_refilled) * ANSWER_RATE
        )
        self._answer_refilled = now
        if self._answer_tokens < 1:
            self.counters["answers-rate-limited"] += 1
            return False
        self._answer_tokens -= 1
        return True

    def _position(self) -> bytes:
        return b"" if self._stream is None else POSITION.pack(self._stream.next_seq)

    def _drop(self, reason: str) -> None:
        self.counters["dropped"] += 1
        self.counters[f"dropped:{reason}"] += 1

    def _topic_info(self, topic: str) -> tuple[bytes, int]:
        """The encoded topic and the payload limit for it, cached: both cost on every send."""
        info = self._topics.get(topic)
        if info is None:
            raw = topic.encode("utf-8")
            if len(raw) > MAX_TOPIC:
                raise ValueError(f"topic is {len(raw)} bytes; the limit is {MAX_TOPIC}")
            if len(self._topics) >= TOPIC_CACHE:
                self._topics.clear()
            limit = max_payload(self.max_datagram, topic, sealed=self.keyring is not None)
            info = self._topics[topic] = (raw, limit)
        return info

    def _check_size(self, topic: str, payload: bytes, extra: int = 0) -> None:
        limit = self._topic_info(topic)[1] - extra
        if len(payload) > limit:
            raise MessageTooLarge(
                f"payload of {len(payload)} bytes exceeds the {limit}-byte limit of one "
                f"{self.max_datagram}-byte datagram for topic {topic!r}; raise max_datagram "
                "only where the path MTU allows it"
            )

    def _send(
        self,
        kind: FrameType,
        topic: str,
        payload: bytes,
        now: float,
        *,
        flags: int = 0,
        to: Address | None = None,
    ) -> None:
        if self._closed:
            return
        if to is None:
            self._group_seq = (self._group_seq + 1) & 0xFFFFFFFF
            seq = self._group_seq
        else:
            flags |= Flag.UNICAST
            self._unicast_seq = (self._unicast_seq + 1) & 0xFFFFFFFF
            seq = self._unicast_seq
        raw_topic = self._topic_info(topic)[0]
        header = HEADER.pack(
            MAGIC,
            VERSION,
            kind,
            flags,
            len(raw_topic),
            0,
            self._node_id,
            self.incarnation,
            seq,
            self._stamp(),
        )
        data = header + raw_topic + payload
        if self.keyring is not None:
            data = self.keyring.seal(data)
        self._outgoing.append((data, to))
        self.counters[_SENT_KEY[kind]] += 1

    def _stamp(self) -> int:
        # Never backwards (a clock step): peers tell an older run of us by its timestamps.
        wall = self._wall_us()
        if wall:
            wall = self._last_stamp = max(wall, self._last_stamp + 1)
        return wall

    def _send_hello(self, now: float, *, flags: int, to: Address | None) -> None:
        # Where our reliable stream stands: a member that hears this before our next data
        # starts there (and repairs a lost first fragment); a late joiner starts cleanly.
        stream_next = 1 if self._stream is None else self._stream.next_seq
        meta = json.dumps({**self.meta, STREAM_KEY: stream_next}, separators=(",", ":")).encode()
        if len(meta) > MAX_META_BYTES:
            raise MessageTooLarge(f"metadata is {len(meta)} bytes; the limit is {MAX_META_BYTES}")
        self._send(FrameType.HELLO, "", meta, now, flags=flags, to=to)

    def _from_own_id(self, frame: Frame, source: Address, now: float) -> None:
        if frame.incarnation == self.incarnation:
            self.counters["own"] += 1
            if self.deliver_own and frame.type == FrameType.DATA:
                name = str(self.meta.get("name", "?"))
                self._events.append(
                    Message(
                        self.node_id,
                        name,
                        frame.topic,
                        frame.payload,
                        source,
                        frame.timestamp_us,
                        frame.seq,
                    )
                )
            return
        # Another node drew our id. The lower incarnation gives way, so only one renews.
        self.counters["id-conflicts"] += 1
        if self.incarnation < frame.incarnation:
            old = self.node_id
            self.node_id = int.from_bytes(self._random(8), "big") or 1  # 0 is reserved
            self._events.append(IdRenewed(old, self.node_id))
            self._send_hello(now, flags=0, to=None)

    def _touch(self, frame: Frame, source: Address, now: float, unicast: bool) -> PeerInfo | None:
        peer = self.peers.get(frame.sender)
        if peer is not None and peer.incarnation != frame.incarnation:
            # Same id, new incarnation: a restart. Treat the old one as gone.
            self._forget(peer, said_goodbye=True)
            self._events.append(Left(peer))
            peer = None
        if peer is None:
            if frame.type == FrameType.GOODBYE:
                return None
            peer = PeerInfo(frame.sender, frame.incarnation, source, now, now)
            tomb = self._tombstones.pop((frame.sender, frame.incarnation), None)
            if tomb is not None:
                # Back after we failed it (a partition): its stream resumes where we were, so
                # what it sent meanwhile is repaired or reported, never skipped.
                peer.resume_from = tomb.stream_next
                peer.highest_seq = tomb.highest.get(False, -1)
            self.peers[frame.sender] = peer
            if frame.type != FrameType.HELLO:
                # We missed its hello (we joined later, or it was lost): ask for one.
                peer.reported = True
                self._events.append(Joined(peer))
                if self._may_answer_unknown(now):
                    self._send_hello(now, flags=Flag.HELLO_WANTED, to=source)
        peer.last_seen = now
        peer.address = source
        if not unicast:
            if peer.highest_seq >= 0 and frame.seq > peer.highest_seq + 1:
                peer.lost += frame.seq - peer.highest_seq - 1
            peer.highest_seq = max(peer.highest_seq, frame.seq)
            peer.received += 1
        return peer

    def _forget(self, peer: PeerInfo, *, said_goodbye: bool, stream_next: int = 0) -> None:
        """Drop a peer in O(1); keep a tombstone so replays of it are refused."""
        self.peers.pop(peer.node_id, None)
        # Where its stream will resume if it comes back: where we were, or where its hello
        # said the stream stood (it may publish while we cannot hear it).
        position = peer.resume_from or peer.stream_start
        stream = self._streams.pop(peer.node_id, None)
        if stream is not None:
            before = stream.memory
            stream.close("sender-gone", stream_next)
            self._stream_memory -= before
            if stream.position:
                position = max(stream.position, stream.highest + 1, stream_next)
                if not said_goodbye:
                    # Silent, not gone: whatever it sent after what we saw never arrived.
                    # Said now (never silent); if it comes back, its stream resumes here and
                    # what can still be repaired is delivered after all.
                    stream.events.append(
                        Unrecoverable(peer.node_id, position, UNKNOWN_END, "sender-failed")
                    )
            self._collect(stream, self._now)
        elif said_goodbye and stream_next > max(peer.resume_from, peer.stream_start, 1):
            # It published while we heard none of it, and says so as it leaves.
            first = peer.resume_from or peer.stream_start
            self._events.append(Unrecoverable(peer.node_id, first, stream_next - 1, "sender-gone"))
            self.counters["reliable-unrecoverable"] += 1
        if self._stream is not None:
            self._stream.forget_peer(peer.node_id)
        highest = {unicast: window.highest for unicast, window in peer.windows.items()}
        self._tombstones[(peer.node_id, peer.incarnation)] = _Tombstone(
            highest, position, self._now + TOMBSTONE_SECONDS
        )
        self._tombstones.move_to_end((peer.node_id, peer.incarnation))
        while len(self._tombstones) > MAX_TOMBSTONES:
            self._tombstones.popitem(last=False)

    # --- reliable streams ----------------------------------------------------------------

    def _pull_stream(self, now: float) -> None:
        stream = self._stream
        assert stream is not None
        flags = Flag.ACK_WANTED if stream.wants_acks else 0
        for topic, payload, repair in stream.pull(now):
            self._send(
                FrameType.RDATA, topic, payload, now, flags=flags | (Flag.REPAIR if repair else 0)
            )
        for slow in stream.take_slow_events():
            self._events.append(slow)

    def _send_state(self, now: float) -> None:
        stream = self._stream
        assert stream is not None
        flags = Flag.ACK_WANTED if stream.wants_acks else 0
        self._send(
            FrameType.RSTATE, "", RSTATE.pack(stream.oldest, stream.next_seq), now, flags=flags
        )

    def _receiver(self, frame: Frame, peer: PeerInfo) -> StreamReceiver:
        stream = self._streams.get(frame.sender)
        if stream is None or stream.incarnation != frame.incarnation:
            random = self._random
            stream = StreamReceiver(
                frame.sender,
                frame.incarnation,
                self.reliable,
                lambda: int.from_bytes(random(4), "big") / 2**32,
            )
            self._streams[frame.sender] = stream
            if peer.resume_from or peer.stream_start:
                stream.start_at(peer.resume_from or peer.stream_start)
        if frame.flags & Flag.ACK_WANTED:
            stream.acks_wanted = True
        return stream

    def _collect(self, stream: StreamReceiver, now: float) -> None:
        """Move a receiver stream's messages and losses to our events; acknowledge if due."""
        if stream.delivered:
            peer = self.peers.get(stream.sender)
            name = peer.name if peer else "?"
            source = peer.address if peer and peer.address else ("", 0)
            for topic, payload, first_seq in stream.delivered:
                self._events.append(
                    Message(stream.sender, name, topic, payload, source, 0, first_seq, True)
                )
            stream.delivered.clear()
        if stream.events:
            self._events.extend(stream.events)
            self.counters["reliable-unrecoverable"] += len(stream.events)
            stream.events.clear()
        through = stream.ack_due(now)
        if through is not None:
            self._send_ack(stream, through, now)

    def _send_ack(self, stream: StreamReceiver, through: int, now: float) -> None:
        peer = self.peers.get(stream.sender)
        if peer is not None and peer.address is not None:
            payload = ACK.pack(stream.sender, stream.incarnation, through)
            self._send(FrameType.ACK, "", payload, now, to=peer.address)

    def _fed(self, stream: StreamReceiver, method: Callable[..., T], *args: Any) -> T:
        """``method(*args, room)`` on ``stream``: room is what it may hold within the budget
        shared by every sender's stream; the total across streams is kept true."""
        before = stream.memory
        result = method(*args, self.receive_budget - (self._stream_memory - before))
        self._stream_memory += stream.memory - before
        return result

    def _on_rdata(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        stream = self._receiver(frame, peer)
        if not self._fed(stream, stream.on_data, frame.payload, frame.topic, now):
            self._drop("bad-rdata")
            return
        self._collect(stream, now)

    def _on_rstate(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        if len(frame.payload) != RSTATE.size:
            self._drop("bad-rstate")
            return
        stream = self._receiver(frame, peer)
        oldest, next_seq = RSTATE.unpack(frame.payload)
        self._fed(stream, stream.on_state, oldest, next_seq, now)
        if frame.flags & Flag.ACK_WANTED:
            through = stream.ack_now()
            if through is not None:
                self._send_ack(stream, through, now)
        self._collect(stream, now)

    def _on_nack(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        decoded = decode_nack(frame.payload)
        if decoded is None:
            self._drop("bad-nack")
            return
        target, incarnation, runs = decoded
        if target == self.node_id and incarnation == self.incarnation:
            if not peer.hello_seen:
                # Repairs are for members: a forged NACK from an id that never said hello
                # (a spoofed source) gets nothing multicast for it.
                self._drop("nack-from-non-member")
                return
            if self._stream is not None:
                self._stream.on_nack(runs, now)
                if self._stream.probe_due(now):  # at once when the NACK asked for gone seqs
                    self._send_state(now)
            return
        stream = self._streams.get(target)
        if stream is not None and stream.incarnation == incarnation:
            stream.on_foreign_nack(runs, now)

    def _on_ack(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        if len(frame.payload) != ACK.size:
            self._drop("bad-ack")
            return
        target, incarnation, through = ACK.unpack(frame.payload)
        if not peer.hello_seen:
            self._drop("ack-from-non-member")
            return
        if target == self.node_id and incarnation == self.incarnation and self._stream:
            self._stream.on_ack(frame.sender, through, now)

    def _on_hello(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        try:
            meta = json.loads(frame.payload)
        except (ValueError, UnicodeDecodeError):
            self._drop("bad-hello")
            return
        if not isinstance(meta, dict):
            self._drop("bad-hello")
            return
        stream_next = meta.pop(STREAM_KEY, None)
        if type(stream_next) is int and stream_next > 0:
            peer.stream_start = stream_next
        changed = meta != peer.meta
        peer.meta = meta
        peer.hello_seen = True
        if not peer.reported:
            peer.reported = True
            self._events.append(Joined(peer))
        elif changed:
            self._events.append(Updated(peer))
        if not frame.flags & Flag.HELLO_ANSWER and self._may_answer_unknown(now):
            # A newcomer (or one that asked): tell it who we are, directly.
            self._send_hello(now, flags=Flag.HELLO_ANSWER, to=source)

    def _on_heartbeat(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        # Where its stream stands: a tail we never saw becomes a gap, asked for or reported.
        if len(frame.payload) != POSITION.size:
            return
        (next_seq,) = POSITION.unpack(frame.payload)
        stream = self._streams.get(frame.sender)
        start = peer.resume_from or peer.stream_start
        if stream is None and start and next_seq > start:
            stream = self._receiver(frame, peer)  # it published and we heard none of it
        if stream is None or not stream.position:
            return
        self._fed(stream, stream.on_state, 0, next_seq, now)
        self._collect(stream, now)

    def _on_goodbye(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        stream_next = 0
        if len(frame.payload) == POSITION.size:
            (stream_next,) = POSITION.unpack(frame.payload)
        self._forget(peer, said_goodbye=True, stream_next=stream_next)
        self._events.append(Left(peer))

    def _on_data(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        self._events.append(
            Message(
                frame.sender,
                peer.name,
                frame.topic,
                frame.payload,
                source,
                frame.timestamp_us,
                frame.seq,
            )
        )

    def _on_request(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        if len(frame.payload) < _REQUEST_ID.size:
            self._drop("bad-request")
            return
        if not any(topic_matches(p, frame.topic) for p in self.meta.get("serves", [])):
            self.counters["requests-not-served"] += 1
            return
        (request_id,) = _REQUEST_ID.unpack_from(frame.payload)
        key = (frame.sender, request_id)
        if key in self._seen_requests:
            self._drop("request-replay")  # served once already: a replay is never run again
            return
        self._seen_requests[key] = now
        if len(self._seen_requests) > SEEN_REQUESTS:
            self._seen_requests.popitem(last=False)
        self._events.append(
            RequestReceived(
                request_id, frame.sender, frame.topic, frame.payload[_REQUEST_ID.size :], source
            )
        )

    def _on_reply(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        if len(frame.payload) < _REQUEST_ID.size:
            self._drop("bad-reply")
            return
        (request_id,) = _REQUEST_ID.unpack_from(frame.payload)
        pending = self._pending.get(request_id)
        if pending is None:
            self.counters["late-replies"] += 1
            return
        pending.replies[frame.sender] = frame.payload[_REQUEST_ID.size :]
        pending.rtts[frame.sender] = now - pending.sent_at
        peer.rtt = now - pending.sent_at
        if pending.satisfied():
            self._finish(request_id)

    def _finish(self, request_id: int) -> None:
        pending = self._pending.pop(request_id)
        missing = sorted(pending.expected - set(pending.replies))
        self._events.append(
            Gathered(
                request_id,
                pending.topic,
                dict(pending.replies),
                missing,
                pending.satisfied(),
                dict(pending.rtts),
            )
        )


_HANDLERS: dict[FrameType, Callable[[Session, Frame, PeerInfo, Address, float], None]] = {
    FrameType.HELLO: Session._on_hello,
    FrameType.HEARTBEAT: Session._on_heartbeat,
    FrameType.GOODBYE: Session._on_goodbye,
    FrameType.DATA: Session._on_data,
    FrameType.REQUEST: Session._on_request,
    FrameType.REPLY: Session._on_reply,
    FrameType.RDATA: Session._on_rdata,
    FrameType.NACK: Session._on_nack,
    FrameType.RSTATE: Session._on_rstate,
    FrameType.ACK: Session._on_ack,
}
