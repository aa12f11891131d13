"""Outgoing group frames, with no I/O: sequence numbers per channel, timestamps that never go
backwards, the topic cache and payload limits, and sealing."""

from __future__ import annotations

import struct
from collections.abc import Callable

from .errors import MulticastError
from .security import KeyRing
from .wire import HEADER, MAGIC, MAX_TOPIC, VERSION, Flag, FrameType, max_payload

TOPIC_CACHE = 1024
_UNICAST = int(Flag.UNICAST)  # per frame: an int, not an IntFlag's Python-level '|'


class MessageTooLarge(MulticastError, ValueError):
    """A payload does not fit one datagram of the configured size."""


class Framer:
    """Builds this node's frames: its id, incarnation, seqs and clock in every header."""

    def __init__(
        self,
        *,
        node_id: int,
        incarnation: int,
        max_datagram: int,
        keyring: KeyRing | None,
        wall_clock_us: Callable[[], int],
    ) -> None:
        self._incarnation = incarnation
        self.node_id = node_id
        self.max_datagram = max_datagram
        self.keyring = keyring
        self._wall_us = wall_clock_us
        self._group_seq = 0
        self._unicast_seq = 0
        self._last_stamp = 0
        self._topics: dict[str, tuple[bytes, int]] = {}

    @property
    def node_id(self) -> int:
        """The id in our headers (renewed when another node drew the same one)."""
        return self._node_id

    @node_id.setter
    def node_id(self, value: int) -> None:
        self._node_id = value
        # Bytes 8..20 of our headers: a looped-back frame of ours is known without decoding.
        self.own_key = struct.pack("!QI", value, self._incarnation)

    @property
    def incarnation(self) -> int:
        """This run of the node (drawn at start; a restart draws another)."""
        return self._incarnation

    @incarnation.setter
    def incarnation(self, value: int) -> None:
        self._incarnation = value
        self.own_key = struct.pack("!QI", self._node_id, value)

    def frame(
        self, kind: FrameType, topic: str, payload: bytes, *, flags: int, unicast: bool
    ) -> bytes:
        """One frame, sealed when the group has a key."""
        if unicast:
            flags |= _UNICAST
            self._unicast_seq = (self._unicast_seq + 1) & 0xFFFFFFFF
            seq = self._unicast_seq
        else:
            self._group_seq = (self._group_seq + 1) & 0xFFFFFFFF
            seq = self._group_seq
        raw_topic = self.topic_info(topic)[0]
        header = HEADER.pack(
            MAGIC,
            VERSION,
            kind,
            flags,
            len(raw_topic),
            0,
            self._node_id,
            self._incarnation,
            seq,
            self._stamp(),
        )
        data = header + raw_topic + payload
        return data if self.keyring is None else self.keyring.seal(data)

    def frame_run(self, kind: FrameType, items: list[tuple[str, bytes, int]]) -> list[bytes]:
        """Group frames of (topic, payload, flags), as ``frame`` makes each: one clock read
        for the run, the stamps counting up from it (never backwards, never equal)."""
        if not items:
            return []  # (a stamp drawn for nothing would set the last one back)
        stamp = self._stamp()
        if stamp:
            self._last_stamp = stamp + len(items) - 1
        node_id, incarnation, seq = self._node_id, self._incarnation, self._group_seq
        pack, seal = HEADER.pack, None if self.keyring is None else self.keyring.seal
        topics = self._topics
        out = []
        for topic, payload, flags in items:
            seq = (seq + 1) & 0xFFFFFFFF
            info = topics.get(topic)
            raw_topic = (info or self.topic_info(topic))[0]
            data = b"".join(
                (
                    pack(
                        MAGIC,
                        VERSION,
                        kind,
                        flags,
                        len(raw_topic),
                        0,
                        node_id,
                        incarnation,
                        seq,
                        stamp,
                    ),
                    raw_topic,
                    payload,
                )
            )
            out.append(data if seal is None else seal(data))
            if stamp:
                stamp += 1
        self._group_seq = seq
        return out

    def topic_info(self, topic: str) -> tuple[bytes, int]:
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

    def check_size(self, topic: str, payload: bytes, extra: int = 0) -> None:
        """Raise ``MessageTooLarge`` when ``payload`` (plus ``extra``) does not fit one frame."""
        limit = self.topic_info(topic)[1] - extra
        if len(payload) > limit:
            raise MessageTooLarge(
                f"payload of {len(payload)} bytes exceeds the {limit}-byte limit of one "
                f"{self.max_datagram}-byte datagram for topic {topic!r}; raise max_datagram "
                "only where the path MTU allows it"
            )

    def _stamp(self) -> int:
        # Never backwards (a clock step): peers tell an older run of us by its timestamps.
        wall = self._wall_us()
        if wall:
            wall = self._last_stamp = max(wall, self._last_stamp + 1)
        return wall
