"""The reliable streams of a group session, with no I/O: our stream out (publish, repairs on
NACK, state probes, acknowledgements wanted), every member's stream in (data, state, NACKs
heard from others, positions from heartbeats and goodbyes), and what each delivers or gives
up, as events.

``Session`` (session.py) owns one ``ReliableFrames`` and hands it the frames of its kinds;
all it may do back is through its ``SessionPort`` (send a frame, count a drop, emit an
event, read the peer table), and it may ask who we are, the arrival interface and the time.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any

from .events import UNKNOWN_END, Message, Unrecoverable
from .peers import Address, PeerInfo
from .reliable import (
    ACK,
    ACK_ECHO,
    RDATA_HEAD,
    RSTATE,
    RSTATE_TIMED,
    StreamReceiver,
    StreamSender,
    decode_nack,
    encode_nack,
)
from .reliable.inbound import InboundStreams
from .session_port import SessionPort
from .wire import Flag, Frame, FrameType

POSITION = struct.Struct("!Q")  # HEARTBEAT / GOODBYE payload: our stream's next seq
# Per fragment: plain ints, not IntFlags (whose '|' runs in Python).
_ACK_WANTED = int(Flag.ACK_WANTED)
_REPAIR = int(Flag.REPAIR)


class ReliableFrames:
    """Reliable streams over a session's frames (owned by ``Session``)."""

    def __init__(
        self,
        inbound: InboundStreams,
        port: SessionPort,
        *,
        identity: Callable[[], tuple[int, int]],
        arrival: Callable[[], str | None],
        clock: Callable[[], float],
    ) -> None:
        self.inbound = inbound  # every sender's stream, their memory within one budget
        self.stream: StreamSender | None = None  # ours, from the first reliable publish
        self._port = port
        self._identity = identity  # our node id and incarnation (an id may be renewed)
        self._arrival = arrival  # the interface the datagram being taken came in on
        self._clock = clock  # the session's time: the last it was given

    # --- our stream ----------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Bytes of reliable messages queued and not yet sent once."""
        return 0 if self.stream is None else self.stream.queued_bytes

    def settled(self) -> bool:
        """True when every reliable message went out and no repair within its asker's share
        is pending (deferred ones go out later; ``flush(acknowledged=True)`` waits for the
        receivers themselves)."""
        return self.stream is None or self.stream.settled

    def confirm(self, on: bool) -> None:
        """While ``on``, our idle stream's probes ask every receiver to acknowledge."""
        if self.stream is not None:
            self.stream.confirm(on, self._clock())

    def awaited(self, peers: Iterable[int]) -> list[int]:
        """Those of ``peers`` still members that have not acknowledged all of our stream."""
        stream = self.stream
        if stream is None:
            return []
        members = self._port.peers
        return [
            p for p in peers if p in members and not stream.acknowledged(p) and not _left(stream, p)
        ]

    def unacknowledged(self, peers: Iterable[int]) -> list[int]:
        """Those of ``peers`` that did not acknowledge all of our stream: members still
        awaited, and members that failed (silent) before they did. One that said goodbye
        chose to leave and is not counted."""
        stream = self.stream
        if stream is None:
            return []
        missing = []
        for peer in peers:
            if _left(stream, peer):
                continue
            if peer in self._port.peers:
                if not stream.acknowledged(peer):
                    missing.append(peer)
            elif stream.departed.get(peer) == (False, False):
                missing.append(peer)
        return missing

    def stats(self) -> dict[str, Any]:
        """Counters of the reliable stream we send and of those we receive."""
        stats: dict[str, Any] = {}
        if self.stream is not None:
            stream = self.stream
            stats["sender"] = {
                "next_seq": stream.next_seq,
                "window_oldest": stream.oldest,
                "window_bytes": stream.window_bytes,
                "queued_bytes": stream.queued_bytes,
                "rate": stream.rate,
                "grtt_ms": round(stream.grtt * 1000, 3),
                "rtt_ms": {f"{peer:016x}": round(r * 1000, 3) for peer, r in stream.rtts.items()},
                "rate_history": [] if stream.control is None else stream.control.history[-100:],
                **stream.counters,
            }
        stats["receivers"] = self.inbound.stats()
        return stats

    def enqueue(self, topic: str, payload: bytes, now: float) -> None:
        """One reliable message on our stream (opened at the first)."""
        if self.stream is None:
            self.stream = StreamSender(self.inbound.config, now)
        chunk = self._port.room(topic) - RDATA_HEAD.size
        self.stream.enqueue(topic, payload, chunk)

    @property
    def next_seq(self) -> int:
        """Where our stream stands (1 before the first reliable publish)."""
        return 1 if self.stream is None else self.stream.next_seq

    def position(self) -> bytes:
        """Our stream's position as a heartbeat or goodbye carries it (none: no stream)."""
        return b"" if self.stream is None else POSITION.pack(self.stream.next_seq)

    def next_timer(self, now: float) -> float | None:
        """The earliest of our stream's timer and every received stream's."""
        ours = None if self.stream is None else self.stream.next_timer(now)
        theirs = self.inbound.next_timer()
        if ours is None or (theirs is not None and theirs < ours):
            return theirs
        return ours

    def heartbeat(self, now: float) -> None:
        """Our heartbeat went out: a state probe goes with it."""
        if self.stream is not None:
            self.send_state(now)

    def handle_timer(self, now: float) -> None:
        """Our stream's probes and pacing; every received stream's NACKs and give-ups."""
        if self.stream is not None:
            if self.stream.probe_due(now):
                self.send_state(now)
            self.pull(now)
        send = self._port.send
        for stream, nacks in self.inbound.handle_timer(now):
            peer = self._port.peers.get(stream.sender) if nacks else None
            for runs in nacks:
                payload = encode_nack(stream.sender, stream.incarnation, runs)
                # To the group, so other receivers hold theirs back; and straight to the
                # sender, whose group socket may be flooded by the loopback of its own data.
                send(FrameType.NACK, "", payload, now)
                if peer is not None and peer.address is not None:
                    send(FrameType.NACK, "", payload, now, to=peer.address)
            self._collect(stream, now)

    def close_peer(self, peer: PeerInfo, said_goodbye: bool, stream_next: int, now: float) -> int:
        """Close a departing peer's stream, report what it leaves missing, and return where
        its stream will resume if it comes back."""
        position = peer.resume_from or peer.stream_start
        stream = self.inbound.close(peer.node_id, "sender-gone", stream_next)
        if stream is not None:
            if stream.position:
                # Past the data seen, never past a claim (a goodbye's position, a heartbeat's):
                # a forged one must not make the stream resume past data yet to come.
                position = max(stream.position, stream.seen + 1)
                if not said_goodbye:
                    # Silent, not gone: whatever it sent after what we saw never arrived.
                    # Said now (never silent); if it comes back, its stream resumes here and
                    # what can still be repaired is delivered after all.
                    stream.events.append(
                        Unrecoverable(peer.node_id, position, UNKNOWN_END, "sender-failed")
                    )
            self._collect(stream, now)
        elif said_goodbye and stream_next > max(peer.resume_from, peer.stream_start, 1):
            # It published while we heard none of it, and says so as it leaves.
            first = peer.resume_from or peer.stream_start
            self._port.emit(Unrecoverable(peer.node_id, first, stream_next - 1, "sender-gone"))
            self._port.counters["reliable-unrecoverable"] += 1
        if self.stream is not None:
            self.stream.forget_peer(peer.node_id, said_goodbye)
        return position

    def pull(self, now: float) -> None:
        """Send what our stream's rate allows now, repairs first."""
        stream = self.stream
        if stream is None:
            return
        flags = _ACK_WANTED if stream.wants_acks else 0
        repair_flags = flags | _REPAIR
        self._port.send_run(
            FrameType.RDATA,
            [
                (topic, payload, repair_flags if repair else flags)
                for topic, payload, repair in stream.pull(now)
            ],
            now,
        )
        for slow in stream.take_slow_events():
            self._port.emit(slow)

    def send_state(self, now: float) -> None:
        stream = self.stream
        assert stream is not None
        flags = Flag.ACK_WANTED if stream.wants_acks else 0
        grtt_us = min(int(stream.grtt * 1e6), 0xFFFFFFFF)
        state = RSTATE_TIMED.pack(stream.oldest, stream.next_seq, stream.stamp(now), grtt_us)
        self._port.send(FrameType.RSTATE, "", state, now, flags=flags)

    # --- streams in -----------------------------------------------------------------------

    def _receiver(self, frame: Frame, peer: PeerInfo) -> StreamReceiver:
        start = peer.resume_from or peer.stream_start
        stream = self.inbound.open(frame.sender, frame.incarnation, start)
        if frame.flags & _ACK_WANTED:
            stream.acks_wanted = True
        return stream

    def _collect(self, stream: StreamReceiver, now: float) -> None:
        """Move a receiver stream's messages and losses to our events; acknowledge if due."""
        self._emit(stream)
        self._ack_if_due(stream, now)

    def _ack_if_due(self, stream: StreamReceiver, now: float) -> None:
        through = stream.ack_due(now)
        if through is not None:
            self._send_ack(stream, through, now)

    def _emit(self, stream: StreamReceiver) -> None:
        """Move a receiver stream's messages, then its losses, to our events."""
        if stream.delivered:
            peer = self._port.peers.get(stream.sender)
            name = peer.name if peer else "?"
            source = peer.address if peer and peer.address else ("", 0)
            arrival = self._arrival()
            emit = self._port.emit
            sender = stream.sender
            for topic, payload, first_seq in stream.delivered:
                emit(Message(sender, name, topic, payload, source, 0, first_seq, True, arrival))
            stream.delivered.clear()
        if stream.events:
            for event in stream.events:
                self._port.emit(event)
            self._port.counters["reliable-unrecoverable"] += len(stream.events)
            stream.events.clear()

    def _send_ack(
        self, stream: StreamReceiver, through: int, now: float, echo: int | None = None
    ) -> None:
        peer = self._port.peers.get(stream.sender)
        if peer is not None and peer.address is not None:
            if echo is None:
                payload = ACK.pack(stream.sender, stream.incarnation, through)
            else:  # answered at once: held for no time
                payload = ACK_ECHO.pack(stream.sender, stream.incarnation, through, echo, 0)
            self._port.send(FrameType.ACK, "", payload, now, to=peer.address)

    def on_rdata(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        """One reliable fragment from the full path (``peer`` is its sender, at its
        incarnation): a run of one."""
        self.on_rdata_run(peer, [(frame.flags, frame.topic, frame.payload)], now)

    def on_rdata_run(self, peer: PeerInfo, run: list[tuple[int, str, bytes]], now: float) -> None:
        """Reliable fragments of one member, (flags, topic, RDATA payload), in the order they
        came (the short path's runs): each taken in turn, with what the stream holds counted
        once for the run (the other streams, and so the room left to this one, do not change
        meanwhile)."""
        stream = self.inbound.open(
            peer.node_id, peer.incarnation, peer.resume_from or peer.stream_start
        )
        self.inbound.fed(stream, self._take_run, stream, run, now)
        self._emit(stream)

    def _take_run(
        self, stream: StreamReceiver, run: list[tuple[int, str, bytes]], now: float, room: int
    ) -> None:
        on_data = stream.on_data
        for flags, topic, payload in run:
            if flags & _ACK_WANTED:
                stream.acks_wanted = True
            if not on_data(payload, topic, now, room):
                self._port.drop("bad-rdata")
                continue
            if stream.events:  # a loss goes after the messages delivered before it
                self._emit(stream)
            if stream.acks_wanted:
                self._ack_if_due(stream, now)

    def on_rstate(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        size = len(frame.payload)
        if size not in (RSTATE.size, RSTATE_TIMED.size):
            self._port.drop("bad-rstate")
            return
        stream = self._receiver(frame, peer)
        oldest, next_seq = RSTATE.unpack_from(frame.payload)
        self.inbound.fed(stream, stream.on_state, oldest, next_seq, now)
        echo = None
        if size == RSTATE_TIMED.size:
            _, _, stamp, grtt_us = RSTATE_TIMED.unpack(frame.payload)
            if stream.on_probe(grtt_us, now):
                echo = stamp
        if frame.flags & _ACK_WANTED or echo is not None:
            through = stream.ack_now()
            if through is not None or echo is not None:
                self._send_ack(stream, through or 0, now, echo)
        self._collect(stream, now)

    def on_nack(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        decoded = decode_nack(frame.payload)
        if decoded is None:
            self._port.drop("bad-nack")
            return
        target, incarnation, runs = decoded
        if (target, incarnation) == self._identity():
            if not peer.hello_seen:
                # Repairs are for members: a forged NACK from an id that never said hello
                # (a spoofed source) gets nothing multicast for it.
                self._port.drop("nack-from-non-member")
                return
            if self.stream is not None:
                self.stream.on_nack(runs, now, frame.sender)
                if self.stream.probe_due(now):  # at once when the NACK asked for gone seqs
                    self.send_state(now)
            return
        stream = self.inbound.get(target)
        if stream is not None and stream.incarnation == incarnation:
            stream.on_foreign_nack(runs, now)

    def on_ack(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        size = len(frame.payload)
        if size not in (ACK.size, ACK_ECHO.size):
            self._port.drop("bad-ack")
            return
        target, incarnation, through = ACK.unpack_from(frame.payload)
        if not peer.hello_seen:
            self._port.drop("ack-from-non-member")
            return
        if (target, incarnation) == self._identity() and self.stream:
            if through:  # 0: an echo from a receiver that has nothing delivered yet
                self.stream.on_ack(frame.sender, through, now)
            if size == ACK_ECHO.size:
                _, _, _, stamp, held_us = ACK_ECHO.unpack(frame.payload)
                self.stream.on_echo(frame.sender, stamp, held_us, now)

    def on_position(self, frame: Frame, peer: PeerInfo, payload: bytes, now: float) -> None:
        """Where a member's stream stands, from its heartbeat: a tail we never saw becomes
        a gap, asked for or reported."""
        if len(payload) != POSITION.size:
            return
        (next_seq,) = POSITION.unpack(payload)
        stream = self.inbound.get(frame.sender)
        start = peer.resume_from or peer.stream_start
        if stream is None and start and next_seq > start:
            stream = self._receiver(frame, peer)  # it published and we heard none of it
        if stream is None or not stream.position:
            return
        self.inbound.fed(stream, stream.on_state, 0, next_seq, now)
        self._collect(stream, now)


def _left(stream: StreamSender, peer: int) -> bool:
    """It said goodbye while we waited: not waited for, even if a frame it sent before its
    goodbye arrives after it (a unicast copy overtaken by the multicast goodbye) and makes
    it look like a member again (the gate refuses such frames by their stamp; this covers
    peers whose frames carry none)."""
    departed = stream.departed.get(peer)
    return departed is not None and departed[0]
