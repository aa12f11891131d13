"""The short path of a group session's receive, with no I/O: a run of datagrams from one
source (one receive batch), where the usual frame (multicast, next in sequence, fresh, from a
member whose incarnation we know) is taken without a copy of the datagram: a message
(DATA) becomes a ``Message`` at once, a reliable fragment (RDATA) goes to its stream as
before. Anything else takes the full path (``Session.receive_opened``), which decides
exactly as before: the short path only ever takes frames the full one would take.

``Session`` (session.py) inherits it; this class only uses what the session has.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable

from .events import Event, Message
from .gate import MembershipGate
from .peers import MAX_PATHS, Address, PeerInfo
from .security import KeyRing, ReplayWindow
from .wire import HEADER, MAGIC, MAX_DATAGRAM, VERSION, Flag, Frame, FrameType

_DATA = int(FrameType.DATA)
_RDATA = int(FrameType.RDATA)
_RDATA_TYPE = FrameType.RDATA
_UNICAST = int(Flag.UNICAST)
_WINDOW_MASK = (1 << ReplayWindow.SIZE) - 1
_HEAD = HEADER.size
_unpack_header = HEADER.unpack_from


class FastReceive:
    """Runs of received datagrams (a base of ``Session``)."""

    # Provided by Session.
    gate: MembershipGate
    keyring: KeyRing | None
    node_id: int
    peers: dict[int, PeerInfo]
    counters: Counter[str]
    _events: deque[Event]
    _closed: bool
    _now: float
    _arrival: str | None

    def receive_opened(
        self,
        data: bytes,
        source: Address,
        now: float,
        iface: str | None = None,
        via_group: bool = True,
    ) -> None:
        raise NotImplementedError

    def _on_rdata(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        raise NotImplementedError

    def take_events(self) -> deque[Event]:
        """Every event pending, at once (a runtime's drain after a run); ``next_event`` is
        the same one at a time."""
        events, self._events = self._events, deque()
        return events

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
        ``receive_opened`` takes each (a sealed group's runtime opened them already).
        ``via_group``: they came in on the group socket (False: a unicast one)."""
        if self._closed:
            return
        self._now = now
        self._arrival = iface
        peers = self.peers
        events = self._events
        full_path = self.receive_opened
        own_id = self.node_id
        stamps = self.gate.fresh_range() if self.keyring is not None else (-1 << 64, 1 << 64)
        oldest, newest = stamps
        taken = 0
        named: PeerInfo | None = None
        name = ""
        for begin, end in spans:
            if _HEAD <= end - begin <= MAX_DATAGRAM:
                magic, version, kind, flags, topic_len, _, sender, incarnation, seq, stamp = (
                    _unpack_header(buffer, begin)
                )
                peer = peers.get(sender)
                window = None if peer is None else peer.windows.get(False)
                topic_end = begin + _HEAD + topic_len
                if (
                    peer is not None
                    and window is not None
                    and ((kind == _DATA and not flags) or (kind == _RDATA and not flags & _UNICAST))
                    and seq == window.highest + 1  # in order: no gap, no replay to judge
                    and peer.incarnation == incarnation
                    and magic == MAGIC
                    and version == VERSION
                    and oldest <= stamp <= newest
                    and topic_end <= end
                    and sender != own_id
                ):
                    try:
                        topic: str | None = str(buffer[begin + _HEAD : topic_end], "utf-8")
                    except UnicodeDecodeError:
                        topic = None  # the full path counts and drops it
                    if topic is not None:
                        window.bitmap = ((window.bitmap << 1) | 1) & _WINDOW_MASK
                        window.highest = seq
                        taken += 1
                        peer.last_seen = now
                        if via_group:
                            peer.heard_multicast = now
                        peer.address = source
                        paths = peer.paths
                        if iface is not None and (iface in paths or len(paths) < MAX_PATHS):
                            paths[iface] = source
                        # No gap to count: highest_seq is never below the window's highest.
                        if seq > peer.highest_seq:
                            peer.highest_seq = seq
                        peer.received += 1
                        if stamp > peer.last_stamp:
                            peer.last_stamp = stamp
                        payload = bytes(buffer[topic_end:end])
                        if kind == _RDATA:  # a reliable fragment: to the stream, as before
                            frame = Frame(
                                _RDATA_TYPE, flags, sender, incarnation, seq, stamp, topic, payload
                            )
                            self._on_rdata(frame, peer, source, now)
                            continue
                        if peer is not named:  # a run is mostly one sender's
                            named, name = peer, peer.name
                        events.append(
                            Message(sender, name, topic, payload, source, stamp, seq, iface=iface)
                        )
                        continue
            named = None  # the full path may change a member (its name, its incarnation)
            full_path(bytes(buffer[begin:end]), source, now, iface, via_group)
        if taken:
            counters = self.counters
            counters["datagrams"] += taken
            counters["frames"] += taken
