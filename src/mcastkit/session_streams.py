"""The reliable-stream half of a group session, with no I/O: our stream out (publish,
repairs on NACK, state probes, acknowledgements wanted), every member's stream in (data, state,
NACKs heard from others, positions from heartbeats and goodbyes), and what each delivers or
gives up, as events.

``Session`` (session.py) inherits it and keeps the dispatcher, the membership and the frames:
this class only uses what the session has (``_send``, ``_drop``, ``_events``, ``peers``).
"""

from __future__ import annotations

import struct
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from .events import UNKNOWN_END, Event, Message, Unrecoverable
from .framing import Framer
from .peers import Address, PeerInfo
from .reach import Reach
from .reliable import (
    ACK,
    ACK_ECHO,
    RDATA_HEAD,
    RSTATE,
    RSTATE_TIMED,
    ReliableConfig,
    StreamReceiver,
    StreamSender,
    decode_nack,
    encode_nack,
)
from .reliable.inbound import InboundStreams
from .wire import Flag, Frame, FrameType

POSITION = struct.Struct("!Q")  # HEARTBEAT / GOODBYE payload: our stream's next seq


class ReliableFrames:
    """Reliable streams over the session's frames (a base of ``Session``)."""

    # Provided by Session.
    framer: Framer
    reach: Reach
    streams: InboundStreams
    peers: dict[int, PeerInfo]
    counters: Counter[str]
    _events: deque[Event]
    _stream: StreamSender | None
    _closed: bool
    _now: float
    _arrival: str | None
    node_id: int
    incarnation: int
    reliable: ReliableConfig

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
        raise NotImplementedError

    def _drop(self, reason: str) -> None:
        raise NotImplementedError

    # --- our stream ----------------------------------------------------------------------

    @property
    def reliable_backlog(self) -> int:
        """Bytes of reliable messages queued and not yet sent once."""
        return 0 if self._stream is None else self._stream.queued_bytes

    def reliable_settled(self) -> bool:
        """True when every reliable message went out and no repair within its asker's share
        is pending (deferred ones go out later; ``flush(acknowledged=True)`` waits for the
        receivers themselves)."""
        return self._stream is None or self._stream.settled

    def confirm_reliable(self, on: bool) -> None:
        """While ``on``, our idle stream's probes ask every receiver to acknowledge."""
        if self._stream is not None:
            self._stream.confirm(on, self._now)

    def reliable_awaited(self, peers: Iterable[int]) -> list[int]:
        """Those of ``peers`` still members that have not acknowledged all of our stream."""
        stream = self._stream
        if stream is None:
            return []
        return [
            p
            for p in peers
            if p in self.peers and not stream.acknowledged(p) and not _left(stream, p)
        ]

    def reliable_unacknowledged(self, peers: Iterable[int]) -> list[int]:
        """Those of ``peers`` that did not acknowledge all of our stream: members still
        awaited, and members that failed (silent) before they did. One that said goodbye
        chose to leave and is not counted."""
        stream = self._stream
        if stream is None:
            return []
        missing = []
        for peer in peers:
            if _left(stream, peer):
                continue
            if peer in self.peers:
                if not stream.acknowledged(peer):
                    missing.append(peer)
            elif stream.departed.get(peer) == (False, False):
                missing.append(peer)
        return missing

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
                "grtt_ms": round(stream.grtt * 1000, 3),
                "rtt_ms": {f"{peer:016x}": round(r * 1000, 3) for peer, r in stream.rtts.items()},
                "rate_history": [] if stream.control is None else stream.control.history[-100:],
                **stream.counters,
            }
        stats["receivers"] = self.streams.stats()
        return stats

    def _enqueue_reliable(self, topic: str, payload: bytes, now: float) -> None:
        if self._stream is None:
            self._stream = StreamSender(self.reliable, now)
        chunk = self.framer.topic_info(topic)[1] - RDATA_HEAD.size
        self._stream.enqueue(topic, payload, chunk)

    def _position(self) -> bytes:
        return b"" if self._stream is None else POSITION.pack(self._stream.next_seq)

    def _stream_timers(self, now: float) -> None:
        """Our stream's probes and pacing; every received stream's NACKs and give-ups."""
        if self._stream is not None:
            if self._stream.probe_due(now):
                self._send_state(now)
            self._pull_stream(now)
        for stream, nacks in self.streams.handle_timer(now):
            peer = self.peers.get(stream.sender) if nacks else None
            for runs in nacks:
                payload = encode_nack(stream.sender, stream.incarnation, runs)
                # To the group, so other receivers hold theirs back; and straight to the
                # sender, whose group socket may be flooded by the loopback of its own data.
                self._send(FrameType.NACK, "", payload, now)
                if peer is not None and peer.address is not None:
                    self._send(FrameType.NACK, "", payload, now, to=peer.address)
            self._collect(stream, now)

    def _close_stream(self, peer: PeerInfo, said_goodbye: bool, stream_next: int) -> int:
        """Close a departing peer's stream, report what it leaves missing, and return where
        its stream will resume if it comes back."""
        position = peer.resume_from or peer.stream_start
        stream = self.streams.close(peer.node_id, "sender-gone", stream_next)
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
            self._collect(stream, self._now)
        elif said_goodbye and stream_next > max(peer.resume_from, peer.stream_start, 1):
            # It published while we heard none of it, and says so as it leaves.
            first = peer.resume_from or peer.stream_start
            self._events.append(Unrecoverable(peer.node_id, first, stream_next - 1, "sender-gone"))
            self.counters["reliable-unrecoverable"] += 1
        if self._stream is not None:
            self._stream.forget_peer(peer.node_id, said_goodbye)
        return position

    # --- streams in -----------------------------------------------------------------------

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
        grtt_us = min(int(stream.grtt * 1e6), 0xFFFFFFFF)
        state = RSTATE_TIMED.pack(stream.oldest, stream.next_seq, stream.stamp(now), grtt_us)
        self._send(FrameType.RSTATE, "", state, now, flags=flags)

    def _receiver(self, frame: Frame, peer: PeerInfo) -> StreamReceiver:
        start = peer.resume_from or peer.stream_start
        stream = self.streams.open(frame.sender, frame.incarnation, start)
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
                    Message(
                        stream.sender,
                        name,
                        topic,
                        payload,
                        source,
                        0,
                        first_seq,
                        True,
                        self._arrival,
                    )
                )
            stream.delivered.clear()
        if stream.events:
            self._events.extend(stream.events)
            self.counters["reliable-unrecoverable"] += len(stream.events)
            stream.events.clear()
        through = stream.ack_due(now)
        if through is not None:
            self._send_ack(stream, through, now)

    def _send_ack(
        self, stream: StreamReceiver, through: int, now: float, echo: int | None = None
    ) -> None:
        peer = self.peers.get(stream.sender)
        if peer is not None and peer.address is not None:
            if echo is None:
                payload = ACK.pack(stream.sender, stream.incarnation, through)
            else:  # answered at once: held for no time
                payload = ACK_ECHO.pack(stream.sender, stream.incarnation, through, echo, 0)
            self._send(FrameType.ACK, "", payload, now, to=peer.address)

    def _on_rdata(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        stream = self._receiver(frame, peer)
        if not self.streams.fed(stream, stream.on_data, frame.payload, frame.topic, now):
            self._drop("bad-rdata")
            return
        self._collect(stream, now)

    def _on_rstate(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        size = len(frame.payload)
        if size not in (RSTATE.size, RSTATE_TIMED.size):
            self._drop("bad-rstate")
            return
        stream = self._receiver(frame, peer)
        oldest, next_seq = RSTATE.unpack_from(frame.payload)
        self.streams.fed(stream, stream.on_state, oldest, next_seq, now)
        echo = None
        if size == RSTATE_TIMED.size:
            _, _, stamp, grtt_us = RSTATE_TIMED.unpack(frame.payload)
            if stream.on_probe(grtt_us, now):
                echo = stamp
        if frame.flags & Flag.ACK_WANTED or echo is not None:
            through = stream.ack_now()
            if through is not None or echo is not None:
                self._send_ack(stream, through or 0, now, echo)
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
                self._stream.on_nack(runs, now, frame.sender)
                if self._stream.probe_due(now):  # at once when the NACK asked for gone seqs
                    self._send_state(now)
            return
        stream = self.streams.get(target)
        if stream is not None and stream.incarnation == incarnation:
            stream.on_foreign_nack(runs, now)

    def _on_ack(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        size = len(frame.payload)
        if size not in (ACK.size, ACK_ECHO.size):
            self._drop("bad-ack")
            return
        target, incarnation, through = ACK.unpack_from(frame.payload)
        if not peer.hello_seen:
            self._drop("ack-from-non-member")
            return
        if target == self.node_id and incarnation == self.incarnation and self._stream:
            if through:  # 0: an echo from a receiver that has nothing delivered yet
                self._stream.on_ack(frame.sender, through, now)
            if size == ACK_ECHO.size:
                _, _, _, stamp, held_us = ACK_ECHO.unpack(frame.payload)
                self._stream.on_echo(frame.sender, stamp, held_us, now)

    def _on_heartbeat(self, frame: Frame, peer: PeerInfo, source: Address, now: float) -> None:
        payload, new = self.reach.challenged(peer, frame.payload, frame.flags)
        if new and self.reach.asks(peer, now):
            # A cookie it gave us: prove we hear it at once, not a heartbeat later.
            self._send(FrameType.HEARTBEAT, "", self.reach.ask(peer, self._position()), now,
                       flags=Flag.WANT_COPIES, to=source)  # fmt: skip
        # Where its stream stands: a tail we never saw becomes a gap, asked for or reported.
        if len(payload) != POSITION.size:
            return
        (next_seq,) = POSITION.unpack(payload)
        stream = self.streams.get(frame.sender)
        start = peer.resume_from or peer.stream_start
        if stream is None and start and next_seq > start:
            stream = self._receiver(frame, peer)  # it published and we heard none of it
        if stream is None or not stream.position:
            return
        self.streams.fed(stream, stream.on_state, 0, next_seq, now)
        self._collect(stream, now)


def _left(stream: StreamSender, peer: int) -> bool:
    """It said goodbye while we waited: not waited for, even if a frame it sent before its
    goodbye arrives after it (a unicast copy overtaken by the multicast goodbye) and makes
    it look like a member again (the gate refuses such frames by their stamp; this covers
    peers whose frames carry none)."""
    departed = stream.departed.get(peer)
    return departed is not None and departed[0]
