"""The short path of a group session's receive, with no I/O: a run of datagrams from one
source (one receive batch), where the usual frame (multicast, next in sequence, fresh, from a
member whose incarnation we know) is taken without a copy of the datagram: a message
(DATA) becomes a ``Message`` at once, a reliable fragment (RDATA) goes to its stream as
before. Anything else takes the full path (``Session.receive_opened``), which decides
exactly as before: the short path only ever takes frames the full one would take.

``Session`` (session.py) owns one ``FastReceive``; what it may use of the session is its
``SessionPort`` and the full path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from .events import Event, Message
from .peers import MAX_PATHS, Address, PeerInfo
from .security import ReplayWindow
from .session_port import SessionPort
from .wire import HEADER, MAGIC, MAX_DATAGRAM, VERSION, Flag, FrameType

_DATA = int(FrameType.DATA)
_RDATA = int(FrameType.RDATA)
_UNICAST = int(Flag.UNICAST)
_WINDOW_MASK = (1 << ReplayWindow.SIZE) - 1
_HEAD = HEADER.size
_unpack_header = HEADER.unpack_from

FullPath = Callable[[bytes, Address, float, "str | None", bool], None]
# In-order reliable fragments of one member: (flags, topic, RDATA payload) each.
ReliableRun = Callable[[PeerInfo, list[tuple[int, str, bytes]], float], None]


class FastReceive:
    """Runs of received datagrams (owned by ``Session``)."""

    def __init__(
        self,
        port: SessionPort,
        *,
        full_path: FullPath,
        reliable: ReliableRun,
        fresh: Callable[[], tuple[int, int]],
        own: Callable[[], tuple[int, int, bool]],
    ) -> None:
        self._port = port  # the short path updates, in the peer table, a member it takes
        self._full_path = full_path  # every datagram it does not take (``receive_opened``)
        self._reliable = reliable  # in-order reliable fragments, a member's run at a time
        self._fresh = fresh  # the stamps a frame may carry (sealed groups)
        self._own = own  # our id, our incarnation, and whether our own frames are delivered

    def receive_run(
        self,
        buffer: bytes | bytearray | memoryview,
        spans: Iterable[tuple[int, int]],
        source: Address,
        now: float,
        iface: str | None,
        via_group: bool,
        events: deque[Event],
    ) -> None:
        """Take the datagrams at ``spans`` (start, end) of ``buffer``, all from ``source``, as
        the full path takes each; messages go to ``events``."""
        peers = self._port.peers
        full_path = self._full_path
        reliable = self._reliable
        own_id, own_incarnation, deliver_own = self._own()
        skipped_own = 0
        oldest, newest = self._fresh()
        taken = 0
        named: PeerInfo | None = None
        name = ""
        run: list[tuple[int, str, bytes]] = []  # reliable fragments of run_peer, not yet taken
        run_peer: PeerInfo | None = None

        def flush() -> None:  # the run goes to its stream before anything after it is taken
            if run_peer is not None:
                reliable(run_peer, run, now)
            run.clear()

        for begin, end in spans:
            if _HEAD <= end - begin <= MAX_DATAGRAM:
                magic, version, kind, flags, topic_len, _, sender, incarnation, seq, stamp = (
                    _unpack_header(buffer, begin)
                )
                if sender == own_id and incarnation == own_incarnation and not deliver_own:
                    skipped_own += 1  # our own datagram looped back, as the full path skips it
                    continue
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
                        if kind == _RDATA:  # a reliable fragment: to its stream, in runs
                            if peer is not run_peer:
                                if run:
                                    flush()
                                run_peer = peer
                            run.append((flags, topic, payload))
                            continue
                        if run:
                            flush()
                        if peer is not named:  # a run is mostly one sender's
                            named, name = peer, peer.name
                        events.append(
                            Message(sender, name, topic, payload, source, stamp, seq, iface=iface)
                        )
                        continue
            named = None  # the full path may change a member (its name, its incarnation)
            if run:
                flush()
            full_path(bytes(buffer[begin:end]), source, now, iface, via_group)
        if run:
            flush()
        if skipped_own:
            counters = self._port.counters
            counters["datagrams"] += skipped_own
            counters["own"] += skipped_own
        if taken:
            counters = self._port.counters
            counters["datagrams"] += taken
            counters["frames"] += taken
