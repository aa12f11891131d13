"""Who gets into a session's peer table, with no I/O: freshness of sealed frames, admission
of unknown senders, tombstones of departed peers, the answer budget for newcomers, and the
once-only rule for requests. The session asks; the gate remembers."""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from .pacing import TokenBucket
from .peers import MAX_PATHS, Address, PeerInfo
from .security import ReplayWindow
from .wire import Frame, FrameType

DEFAULT_MAX_PEERS = 4096
HOST_SHARE = 16  # a source host holds at most 1/16 of the peer table (256 of 4,096)
# A sealed frame's timestamp must be within this of our clock: a captured frame is worthless
# after it, to a newcomer or a restarted node too (whose replay windows are empty).
DEFAULT_MAX_SKEW = 30.0
# Departed peers are remembered (id, incarnation, highest seqs, stream position) so replays
# cannot bring them back and a peer that returns after a partition resumes its stream.
MAX_TOMBSTONES = 4096
TOMBSTONE_SECONDS = 600.0
SEEN_REQUESTS = 4096
GOODBYE_REACH_US = 1_000_000  # a goodbye refuses frames stamped up to 1 s past the last one
# Unicast hellos to ids we do not know (answers to a newcomer, HELLO_WANTED): a spoofed flood
# must not turn every member into a reflector. Bucket: 200 at once, 100 a second.
ANSWER_BURST = 200.0
ANSWER_RATE = 100.0


class Refusal(str, Enum):
    """Why the gate keeps a frame out; its value names the drop counter (``dropped:<value>``)."""

    STALE = "stale"  # a sealed frame outside the clock skew: a replay of a captured one
    STALE_INCARNATION = "stale-incarnation"  # an older run of a live peer
    DEPARTED = "departed"  # a peer that left or failed (a replay, or another path's copy)
    GOODBYE_FROM_UNKNOWN = "goodbye-from-unknown"
    PEER_TABLE_FULL = "peer-table-full"
    REPLAY = "replay"  # seen already (the replay window)
    TOO_OLD = "too-old"  # behind the replay window

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass
class Tombstone:
    """A departed incarnation: its highest seqs per channel, where its stream stood, and
    for one that said goodbye, its goodbye's stamp in µs (0: none): frames stamped at or
    before it were sent before it left."""

    highest: dict[bool, int]
    stream_next: int
    expires: float
    left_at: int = 0


class MembershipGate:
    """The admission rules of one session (every refusal is a drop reason string)."""

    def __init__(
        self,
        *,
        now: float,
        counters: Counter[str],
        drop: Callable[[str], None],
        sealed: bool,
        wall_clock_us: Callable[[], int],
        max_peers: int = DEFAULT_MAX_PEERS,
        max_skew: float = DEFAULT_MAX_SKEW,
    ) -> None:
        if max_peers < 1 or max_skew <= 0:
            raise ValueError("max_peers and max_skew must be positive")
        self.max_peers = max_peers
        # One source host holds at most this share of the table: ids forged from a few hosts
        # cannot fill it, so a newcomer from elsewhere always finds room.
        self.host_share = max(1, max_peers // HOST_SHARE)
        self._hosts: dict[str, dict[int, None]] = {}  # host -> its ids, oldest first
        self._seated: dict[int, str] = {}  # id -> the host it took its seat from
        self.max_skew_us = int(max_skew * 1e6)
        self.tombstones: OrderedDict[tuple[int, int], Tombstone] = OrderedDict()
        self._counters = counters
        self._drop = drop  # the session's count of a datagram dropped, by reason
        self.sealed = sealed  # frames are stamped and opened: freshness is checked
        self._wall_us = wall_clock_us
        self._started_us = 0
        self._seen_requests: OrderedDict[tuple[int, int], float] = OrderedDict()
        self._answers = TokenBucket(ANSWER_RATE, ANSWER_BURST, now, full=True)

    def start(self) -> None:
        """From now on, sealed frames stamped earlier are refused."""
        self._started_us = self._wall_us()

    def fresh(self, frame: Frame) -> bool:
        """A sealed frame's (authenticated) timestamp is within the allowed skew of ours, and
        not from before we started: no frame captured earlier reaches a newcomer or a
        restarted node, whose replay windows are still empty."""
        lowest, highest = self.fresh_range()
        return lowest <= frame.timestamp_us <= highest

    def fresh_range(self) -> tuple[int, int]:
        """The stamps ``fresh`` accepts now, as (lowest, highest): a batch checks each frame
        against it without reading the clock per frame."""
        ours = self._wall_us()
        if not ours:
            return (-1 << 64, 1 << 64)
        return (max(ours - self.max_skew_us, self._started_us), ours + self.max_skew_us)

    def admit(self, frame: Frame, unicast: bool, peer_count: int) -> Refusal | None:
        """Why a frame from a sender we do not know is refused, or None to accept it."""
        tomb = self.tombstones.get((frame.sender, frame.incarnation))
        if tomb is not None and (
            frame.seq <= tomb.highest.get(unicast, 0)
            # Sent before its goodbye and overtaken by it (a unicast copy, another path):
            # not a member coming back.
            or (tomb.left_at and frame.timestamp_us <= tomb.left_at)
        ):
            return Refusal.DEPARTED  # a replay (or another path's copy) of one that left or failed
        if frame.type == FrameType.GOODBYE:
            return Refusal.GOODBYE_FROM_UNKNOWN
        if peer_count >= self.max_peers:
            return Refusal.PEER_TABLE_FULL
        return None

    def let_in(
        self,
        frame: Frame,
        unicast: bool,
        peer: PeerInfo | None,
        peer_count: int,
        multipath: bool,
        source: Address,
        iface: str | None,
        via_group: bool,
        now: float,
    ) -> ReplayWindow | None:
        """Whether a frame from ``peer`` (None: an unknown sender) gets in: the replay window
        that took it (the peer keeps it), or None when it is dropped or a duplicate (counted).
        ``multipath``: a frame seen again is a copy by another path, not a replay;
        ``via_group``: it came in on the group socket."""
        if self.sealed and not self.fresh(frame):
            self._drop(Refusal.STALE)  # outside the clock skew: a replay of a captured frame
            return None
        if peer is not None and peer.incarnation != frame.incarnation:
            if frame.timestamp_us and frame.timestamp_us < peer.last_stamp:
                self._drop(Refusal.STALE_INCARNATION)  # an older run of a live peer: a replay
                return None
        elif peer is None:
            verdict = self.admit(frame, unicast, peer_count)
            if verdict == Refusal.DEPARTED and multipath:
                self._counters["duplicates"] += 1  # e.g. a goodbye's copy by another path
                return None
            if verdict is not None:
                self._drop(verdict)
                return None
        window = None
        if peer is not None and peer.incarnation == frame.incarnation:
            window = peer.windows.get(unicast)
        if window is None:
            window = ReplayWindow()
        checked = window.check_and_mark(frame.seq, not self.sealed)
        verdict = None if checked is None else Refusal(checked)
        if peer is not None and via_group and not unicast and verdict in (None, Refusal.REPLAY):
            peer.heard_multicast = now  # before the replay check: a copy may have come first
        if verdict is None:
            return window
        if peer is not None and peer.watched and verdict in (Refusal.REPLAY, Refusal.TOO_OLD):
            self._counters["duplicates"] += 1  # a unicast copy and its multicast original
            return None
        if multipath and verdict == Refusal.REPLAY and peer is not None:
            # Another interface's copy: one delivery, one more path (no interface: apart).
            self._counters["duplicates"] += 1
            if not iface:
                self._counters["duplicates-interface-unknown"] += 1
            elif iface not in peer.paths and len(peer.paths) < MAX_PATHS:
                peer.paths[iface] = source
            return None
        self._drop(verdict)
        return None

    def seat(self, peer: PeerInfo) -> int | None:
        """A new peer takes a seat from its source host: the id to make room for it (that
        host's oldest) when the host already holds its share, else None."""
        host = str(peer.address[0]) if peer.address is not None else ""
        ids = self._hosts.setdefault(host, {})
        oldest = next(iter(ids)) if len(ids) >= self.host_share else None
        if oldest is not None:
            self._counters["evicted:host-share"] += 1
        ids[peer.node_id] = None
        self._seated[peer.node_id] = host
        return oldest

    def _unseat(self, node_id: int) -> None:
        host = self._seated.pop(node_id, None)
        if host is None:
            return  # never seated (a peer of a table from before, or buried twice)
        ids = self._hosts[host]
        del ids[node_id]
        if not ids:
            del self._hosts[host]

    def may_answer_unknown(self, now: float) -> bool:
        """Token bucket for unicast hellos to peers we do not know yet."""
        self._answers.refill(now)
        if not self._answers.spend(1):
            self._counters["answers-rate-limited"] += 1
            return False
        return True

    def bury(self, peer: PeerInfo, stream_next: int, now: float, goodbye_stamp: int = 0) -> None:
        """Remember a departed peer: its replays are refused, its stream can resume.

        ``goodbye_stamp``: the timestamp of its goodbye; what it sent before is refused too.
        It reaches at most ``GOODBYE_REACH_US`` past the last frame we had from the peer and
        past our own clock, so a forged one with a future stamp (an open group), even after a
        forged future-stamped heartbeat, shuts a member out for a second at most.
        """
        self._unseat(peer.node_id)
        key = (peer.node_id, peer.incarnation)
        highest = {unicast: window.highest for unicast, window in peer.windows.items()}
        left_at = min(goodbye_stamp, peer.last_stamp + GOODBYE_REACH_US) if peer.last_stamp else 0
        ours = self._wall_us()
        if ours and left_at:
            left_at = min(left_at, ours + GOODBYE_REACH_US)
        self.tombstones[key] = Tombstone(highest, stream_next, now + TOMBSTONE_SECONDS, left_at)
        self.tombstones.move_to_end(key)
        while len(self.tombstones) > MAX_TOMBSTONES:
            self.tombstones.popitem(last=False)

    def exhume(self, node_id: int, incarnation: int) -> Tombstone | None:
        """A departed peer is back (after a partition): its tombstone, if we kept one."""
        return self.tombstones.pop((node_id, incarnation), None)

    def expire(self, now: float) -> None:
        """Forget tombstones older than ``TOMBSTONE_SECONDS``."""
        while self.tombstones:
            oldest = next(iter(self.tombstones.values()))
            if oldest.expires > now:
                break
            self.tombstones.popitem(last=False)

    def first_request(self, sender: int, request_id: int, now: float) -> bool:
        """True the first time a request is seen; a replay is never served again."""
        key = (sender, request_id)
        if key in self._seen_requests:
            return False
        self._seen_requests[key] = now
        if len(self._seen_requests) > SEEN_REQUESTS:
            self._seen_requests.popitem(last=False)
        return True
