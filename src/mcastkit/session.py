"""The group session: membership, messaging, request/gather and security, with no I/O.

Inputs: ``receive_datagram`` (or a batch: ``receive_run``), ``handle_timer(now)``, the API calls.
Outputs: ``datagrams_to_send(now)`` (destination None: the group), ``next_event()``, ``next_timer``.
Time and randomness are passed in, so tests run it with a fake clock and a fake lossy link.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

from .events import Event, Failed, IdRenewed, Joined, Left, Message, RequestReceived, Updated
from .framing import Framer, MessageTooLarge
from .gate import DEFAULT_MAX_PEERS, DEFAULT_MAX_SKEW, MembershipGate
from .gather import Requests, Want
from .peers import MAX_PATHS, Address, PeerInfo, random_id
from .reach import Reach
from .reliable import ReliableConfig
from .reliable.inbound import InboundStreams
from .security import KeyRing
from .session_fast import FastReceive
from .session_port import SessionPort
from .session_streams import POSITION, ReliableFrames
from .wire import Flag, Frame, FrameType, decode_frame_untrusted, is_sealed

__all__ = ["Session"]

# JGroups FD_ALL3 and similar detectors use a few missed heartbeats; 3 intervals is our default.
DEFAULT_HEARTBEAT = 1.0
MISSED_HEARTBEATS = 3
MAX_META_BYTES = 1024
STREAM_KEY = "_rs"  # in a hello: the sender's next reliable seq (not part of the metadata)
_SENT_KEY = {kind: f"sent:{kind.name.lower()}" for kind in FrameType}
_ANY_STAMP = (-1 << 64, 1 << 64)  # an open group's frames carry no trusted stamp
# Per frame: plain ints, not an IntFlag's Python-level '&'.
_UNICAST, _WANT_COPIES = int(Flag.UNICAST), int(Flag.WANT_COPIES)
Handler = Callable[[Frame, PeerInfo, Address, float], None]


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
        multicast: bool = True,
        seeds: tuple[Address, ...] = (),
    ) -> None:
        if heartbeat <= 0:
            raise ValueError("heartbeat must be positive")
        wall_us = wall_clock_us or (lambda: 0)
        self.counters: Counter[str] = Counter()
        self.gate = MembershipGate(
            now=now,
            counters=self.counters,
            drop=self._drop,
            sealed=keyring is not None,
            wall_clock_us=wall_us,
            max_peers=max_peers,
            max_skew=max_skew,
        )
        self.framer = Framer(
            node_id=node_id,
            incarnation=incarnation,
            max_datagram=max_datagram,
            keyring=keyring,
            wall_clock_us=wall_us,
        )
        self.meta: dict[str, Any] = {"name": name, **(meta or {})}
        self.heartbeat = heartbeat
        self.failure_timeout = failure_timeout or heartbeat * MISSED_HEARTBEATS
        self.keyring = keyring
        self.deliver_own = deliver_own
        self.max_datagram = max_datagram
        self.peers: dict[int, PeerInfo] = {}
        self._random = random_bytes
        self._outgoing: deque[tuple[bytes, Address | None]] = deque()
        self._events: deque[Event] = deque()
        self._next_heartbeat = now
        # Peers are checked for silence on a short tick, not one timer per peer: detection is
        # late by at most one tick, and next_timer() stays O(1) on the send path.
        self._check_every = min(0.1, self.failure_timeout / 10)
        self._next_check = now + self._check_every
        self._last_timer = now
        self._started = False
        self._closed = False
        self._arrival: str | None = None  # interface of the datagram being taken
        self._via_group = True  # the datagram being taken came in on the group socket
        # Unicast seeds, gossip, and copies for members our multicast does not reach.
        self.reach = Reach(multicast, seeds, heartbeat, self.failure_timeout, random_bytes(16))
        self.reach.connect(self._send, self._send_hello, self.gate.may_answer_unknown)
        # Set by a runtime on several interfaces: a frame seen again is a copy that took
        # another path (counted as a duplicate), not a replay.
        self.multipath = False
        self._now = now
        config = reliable or ReliableConfig()
        # Every sender's stream; their memory together within the budget (2x one stream's).
        inbound = InboundStreams(config, random_bytes, receive_budget or 2 * config.receiver_memory)
        self._own_parts(inbound, random_bytes)

    def _own_parts(self, inbound: InboundStreams, random_bytes: Callable[[int], bytes]) -> None:
        """The parts this session owns, each given the one port back to it, and the table
        that hands every frame kind to its handler."""
        port = SessionPort(
            send=self._send,
            send_run=self._send_run,
            drop=self._drop,
            emit=self._events.append,
            room=lambda topic: self.framer.topic_info(topic)[1],
            peers=self.peers,
            counters=self.counters,
        )
        self.streaming = ReliableFrames(
            inbound,
            port,
            identity=lambda: (self.node_id, self.incarnation),
            arrival=lambda: self._arrival,
            clock=lambda: self._now,
        )
        self._fast = FastReceive(
            port,
            full_path=self.receive_opened,
            reliable=self.streaming.on_rdata_run,
            fresh=self.gate.fresh_range if self.keyring is not None else lambda: _ANY_STAMP,
            own=lambda: (self.node_id, self.incarnation, self.deliver_own),
        )
        self.requests = Requests(
            port,
            check_size=self.framer.check_size,
            random_bytes=random_bytes,
            serves=lambda: self.meta.get("serves", []),
            first_request=self.gate.first_request,
        )
        streams = self.streaming
        self._handlers: dict[FrameType, Handler] = {
            FrameType.HELLO: self._on_hello,
            FrameType.HEARTBEAT: self._on_heartbeat,
            FrameType.GOODBYE: self._on_goodbye,
            FrameType.DATA: self._on_data,
            FrameType.REQUEST: self.requests.on_request,
            FrameType.REPLY: self.requests.on_reply,
            FrameType.RDATA: streams.on_rdata,
            FrameType.NACK: streams.on_nack,
            FrameType.RSTATE: streams.on_rstate,
            FrameType.ACK: streams.on_ack,
            FrameType.PEERS: self._on_peers,
        }

    @property
    def node_id(self) -> int:
        """Our random 64-bit id (renewed when another node drew the same one)."""
        return self.framer.node_id

    @node_id.setter
    def node_id(self, value: int) -> None:
        self.framer.node_id = value

    @property
    def incarnation(self) -> int:
        """This run of the node: a restart under the same id is a new incarnation."""
        return self.framer.incarnation

    @incarnation.setter
    def incarnation(self, value: int) -> None:
        self.framer.incarnation = value

    @property
    def reliable(self) -> ReliableConfig:
        """The reliable streams' knobs (ours, and those we receive from now on)."""
        return self.streaming.inbound.config

    @reliable.setter
    def reliable(self, config: ReliableConfig) -> None:
        self.streaming.inbound.config = config

    # --- API calls -----------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Announce ourselves (HELLO) and start heartbeats."""
        self._started = True
        self.gate.start()
        self._send_hello(now, flags=0, to=None)
        self.reach.greet_seeds(now)

    def close(self, now: float) -> None:
        """Say goodbye; the session sends nothing after this."""
        if self._started and not self._closed:
            self._send(FrameType.GOODBYE, "", self.streaming.position(), now)
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
        self.announce(now)

    def publish(self, topic: str, payload: bytes, now: float, *, reliable: bool = False) -> None:
        """Send a message on ``topic`` to the group. Reliable messages go on this node's
        stream: any size up to ``max_message``, repaired on NACK, delivered in order; they
        leave at the configured rate through ``datagrams_to_send``."""
        if not reliable:
            self.framer.check_size(topic, payload)
            self._send(FrameType.DATA, topic, payload, now)
            return
        if not self._closed:
            self.streaming.enqueue(topic, payload, now)

    def request(
        self, topic: str, payload: bytes, now: float, *, timeout: float, want: Want = "all"
    ) -> int:
        """Ask the group; a Gathered event follows when ``want`` is met or at the timeout."""
        return self.requests.request(topic, payload, now, timeout=timeout, want=want)

    def max_reply(self, topic: str) -> int:
        """The largest reply payload for ``topic`` that fits one datagram."""
        return self.requests.max_reply(topic)

    def reliable_stats(self) -> dict[str, Any]:
        """Counters of the reliable stream we send and of those we receive."""
        return self.streaming.stats()

    def reply(self, request: RequestReceived, payload: bytes, now: float) -> None:
        """Answer a request (unicast to the requester's address as seen)."""
        self.requests.reply(request, payload, now)

    # --- outputs -------------------------------------------------------------------------

    def datagrams_to_send(
        self, now: float | None = None, copies: bool = True
    ) -> list[tuple[bytes, Address | None]]:
        """Datagrams due at ``now`` (runtimes pass it: the stream's budget refills to it); None
        as destination means the group. ``copies`` False: the runtime sends the unicast copies
        itself, a whole run to each target, and nothing to the group with multicast off."""
        if now is not None and now > self._now:
            self._now = now
        if not self._closed:
            self.streaming.pull(self._now)
        out = list(self._outgoing)
        self._outgoing.clear()
        return self.reach.expand(out) if copies and self.reach.active else out

    def next_event(self) -> Event | None:
        """The next event, or None."""
        return self._events.popleft() if self._events else None

    def take_events(self) -> deque[Event]:
        """Every event pending, at once (a runtime's drain after a run); ``next_event`` is
        the same one at a time."""
        events = self._events.copy()
        self._events.clear()
        return events

    def next_timer(self) -> float | None:
        """When ``handle_timer`` must run next."""
        if self._closed:
            return None
        soonest = self._next_heartbeat
        if self.peers and self._next_check < soonest:
            soonest = self._next_check
        gathering = self.requests.gatherer.next_deadline()
        for when in (gathering, self.streaming.next_timer(self._now)):
            if when is not None and when < soonest:  # no list, no min(): runs per datagram
                soonest = when
        return soonest

    # --- inputs --------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Heartbeats, failure detection and request deadlines."""
        if self._closed:
            return
        self._now = now
        if self._started and now >= self._next_heartbeat:
            self._send(FrameType.HEARTBEAT, "", self.streaming.position(), now)
            self.streaming.heartbeat(now)
            self._next_heartbeat = now + self.heartbeat
            self.reach.round(self.peers.values(), self.streaming.position(), now)
        self.streaming.handle_timer(now)
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
            self.gate.expire(now)
        self._events.extend(self.requests.gatherer.expire(now))

    def announce(self, now: float) -> None:
        """Send a hello to the group now (a new interface or address: peers learn the path)."""
        if self._started:
            self._send_hello(now, flags=Flag.HELLO_ANSWER, to=None)

    def forget_path(self, iface: str) -> None:
        """An interface of ours went down: no peer is reachable through it any more."""
        for peer in self.peers.values():
            peer.paths.pop(iface, None)

    def receive_datagram(
        self,
        data: bytes,
        source: Address,
        now: float,
        iface: str | None = None,
        via_group: bool = True,
    ) -> None:
        """Take one datagram from the network: hostile input is counted and dropped. ``iface``:
        the interface it arrived on, if known; ``via_group``: it came in on the group socket."""
        if self._closed:
            return
        if self.keyring is not None:
            if not is_sealed(data):
                self.refuse_datagram("unsealed")
                return
            opened = self.keyring.open_untrusted(data)
            if isinstance(opened, str):
                self.refuse_datagram(opened)
                return
            data = opened
        self.receive_opened(data, source, now, iface, via_group)

    def receive_run(
        self,
        buffer: bytes | bytearray | memoryview,
        spans: Iterable[tuple[int, int]],
        source: Address,
        now: float,
        iface: str | None = None,
        via_group: bool = True,
    ) -> None:
        """Take the datagrams at ``spans`` (start, end) of ``buffer``, all from ``source``, as
        ``receive_opened`` takes each (a sealed group's runtime opened them already), the
        usual ones on the short path (session_fast.py). ``via_group``: they came in on the
        group socket (False: a unicast one)."""
        if self._closed:
            return
        self._now = now
        self._arrival = iface
        self._fast.receive_run(buffer, spans, source, now, iface, via_group, self._events)

    def refuse_datagram(self, reason: str) -> None:
        """A datagram the runtime could not open (``KeyRing.open_spans_into``'s reasons)."""
        self.counters["datagrams"] += 1
        self._drop(reason)

    def receive_opened(
        self,
        data: bytes,
        source: Address,
        now: float,
        iface: str | None = None,
        via_group: bool = True,
    ) -> None:
        """Take one datagram of an open group, or a sealed one's runtime opened (a run: see
        ``receive_run``; sealed runs open in one call with ``KeyRing.open_spans_into``)."""
        if self._closed:
            return
        self._now = now
        self._arrival = iface
        self._via_group = via_group
        self.counters["datagrams"] += 1
        if data[8:20] == self.framer.own_key and not self.deliver_own:
            self.counters["own"] += 1  # our own datagram looped back: skip the full decode
            return
        frame = decode_frame_untrusted(data)
        if isinstance(frame, str):
            self._drop("sealed-without-key" if frame == "sealed" else frame)
            return
        if frame.sender == self.node_id:
            self._from_own_id(frame, source, now)
            return
        unicast = bool(frame.flags & _UNICAST)
        peer = self.peers.get(frame.sender)
        window = self.gate.let_in(
            frame, unicast, peer, len(self.peers), self.multipath, source, iface, via_group, now
        )
        if window is None:
            return
        self.counters["frames"] += 1
        peer = self._touch(frame, source, now, unicast)
        if peer is None:
            return
        peer.windows.setdefault(unicast, window)
        self._handlers[frame.type](frame, peer, source, now)
        if frame.flags & _WANT_COPIES and unicast and frame.sender in self.peers:
            position = self.streaming.position()
            said = self.reach.wants_copies(peer, source, frame.payload, position, now)
            if said is not None:  # heard you, or prove it first
                self._send(FrameType.HEARTBEAT, "", said, now, to=source)
        elif source in self.reach.contacted:
            peer.watched = True  # it answers a unicast hello of ours: judge its multicast
        if frame.timestamp_us > peer.last_stamp:  # after: a goodbye is judged by what came before
            peer.last_stamp = frame.timestamp_us

    # --- internals -----------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self.counters["dropped"] += 1
        self.counters[f"dropped:{reason}"] += 1

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
        data = self.framer.frame(kind, topic, payload, flags=flags, unicast=to is not None)
        self._outgoing.append((data, to))
        self.counters[_SENT_KEY[kind]] += 1

    def _send_run(self, kind: FrameType, items: list[tuple[str, bytes, int]], now: float) -> None:
        if not self._closed:
            self._outgoing.extend((data, None) for data in self.framer.frame_run(kind, items))
            self.counters[_SENT_KEY[kind]] += len(items)

    def _send_hello(self, now: float, *, flags: int, to: Address | None) -> None:
        # Where our reliable stream stands: a member that hears this before our next data
        # starts there (and repairs a lost first fragment); a late joiner starts cleanly.
        stream_next = self.streaming.next_seq
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
                        iface=self._arrival,
                    )
                )
            return
        # Another node drew our id. The lower incarnation gives way, so only one renews.
        self.counters["id-conflicts"] += 1
        if self.incarnation < frame.incarnation:
            old = self.node_id
            self.node_id = random_id(self._random)
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
            tomb = self.gate.exhume(frame.sender, frame.incarnation)
            if tomb is not None:
                # Back after we failed it (a partition): its stream resumes where we were, so
                # what it sent meanwhile is repaired or reported, never skipped.
                peer.resume_from = tomb.stream_next
                peer.highest_seq = tomb.highest.get(False, -1)
            self.peers[frame.sender] = peer
            if (crowded := self.peers.get(self.gate.seat(peer) or 0)) is not None:
                self._forget(crowded, said_goodbye=False)  # its host's share is full: its oldest
            if frame.type != FrameType.HELLO:
                # We missed its hello (we joined later, or it was lost): ask for one.
                peer.reported = True
                self._events.append(Joined(peer))
                if self.gate.may_answer_unknown(now):
                    self._send_hello(now, flags=Flag.HELLO_WANTED, to=source)
        peer.last_seen = now
        peer.address = source
        iface = self._arrival
        if iface is not None and (iface in peer.paths or len(peer.paths) < MAX_PATHS):
            peer.paths[iface] = source
        if not unicast:
            if peer.highest_seq >= 0 and frame.seq > peer.highest_seq + 1:
                peer.lost += frame.seq - peer.highest_seq - 1
            peer.highest_seq = max(peer.highest_seq, frame.seq)
            peer.received += 1
        return peer

    def _forget(
        self, peer: PeerInfo, *, said_goodbye: bool, stream_next: int = 0, stamp: int = 0
    ) -> None:
        """Drop a peer in O(1); a tombstone refuses its replays and what preceded its goodbye."""
        self.peers.pop(peer.node_id, None)
        # Where its stream will resume if it comes back: where we were, or where its hello
        # said the stream stood (it may publish while we cannot hear it).
        position = self.streaming.close_peer(peer, said_goodbye, stream_next, self._now)
        self.gate.bury(peer, position, self._now, stamp)

    def _on_hello(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        try:
            meta = json.loads(frame.payload)
        except (ValueError, UnicodeDecodeError):
            self._drop("bad-hello")
            return
        if not isinstance(meta, dict):
            self._drop("bad-hello")
            return
        self.reach.claims(peer, meta, source)
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
        if direct := not self._via_group and not frame.flags & Flag.HELLO_ANSWER:
            peer.watched = True  # it found us by unicast (a seed, gossip): maybe no multicast
        ask = Flag.WANT_COPIES if self.reach.asks(peer, now) else 0
        if not frame.flags & Flag.HELLO_ANSWER and self.gate.may_answer_unknown(now):
            # A newcomer (or one that asked): tell it who we are, directly.
            self._send_hello(now, flags=Flag.HELLO_ANSWER | ask, to=source)
            if direct:  # and whom else it may contact, so one seed leads to all
                self.reach.send_peers(self.peers.values(), source, now)

    def _on_heartbeat(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        payload, new = self.reach.challenged(peer, frame.payload, frame.flags)
        if new and self.reach.asks(peer, now):
            # A cookie it gave us: prove we hear it at once, not a heartbeat later.
            ask = self.reach.ask(peer, self.streaming.position())
            self._send(FrameType.HEARTBEAT, "", ask, now, flags=Flag.WANT_COPIES, to=source)
        self.streaming.on_position(frame, peer, payload, now)

    def _on_peers(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        if not peer.hello_seen:
            self._drop("peers-from-non-member")
        elif not self.reach.on_peers(frame.payload, self.node_id, self.peers, now):
            self._drop("bad-peers")

    def _on_goodbye(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        stream_next = 0
        if len(frame.payload) == POSITION.size:
            (stream_next,) = POSITION.unpack(frame.payload)
        self._forget(peer, said_goodbye=True, stream_next=stream_next, stamp=frame.timestamp_us)
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
                iface=self._arrival,
            )
        )
