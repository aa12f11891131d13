"""Reliable-stream payloads: round trips, and hostile input that must never raise."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mcastkit.reliable import (
    ACK,
    RDATA_HEAD,
    RSTATE,
    ReliableConfig,
    StreamReceiver,
    decode_nack,
    encode_nack,
)
from mcastkit.session import Session
from mcastkit.wire import Flag, Frame, FrameType, encode_frame

SEQ = st.integers(min_value=0, max_value=2**64 - 1)
U32 = st.integers(min_value=0, max_value=2**32 - 1)
RELIABLE_TYPES = [FrameType.RDATA, FrameType.NACK, FrameType.RSTATE, FrameType.ACK]


@given(
    st.lists(
        st.tuples(st.integers(1, 2**64 - 1), st.integers(1, 2**32 - 1)), min_size=0, max_size=64
    ),
    st.integers(1, 2**64 - 1),
    U32,
)
def test_nack_round_trip(runs: list[tuple[int, int]], sender: int, incarnation: int) -> None:
    assert decode_nack(encode_nack(sender, incarnation, runs)) == (sender, incarnation, runs)


@given(st.binary(max_size=2000))
def test_nack_decoder_never_raises(data: bytes) -> None:
    decoded = decode_nack(data)
    if decoded is not None:
        assert encode_nack(*decoded) == data


def _payload(kind: FrameType) -> st.SearchStrategy[bytes]:
    noise = st.binary(max_size=200)
    if kind == FrameType.RDATA:
        return st.builds(lambda h, b: RDATA_HEAD.pack(*h) + b, st.tuples(SEQ, U32, U32), noise)
    if kind == FrameType.RSTATE:
        return st.one_of(st.builds(lambda a, b: RSTATE.pack(a, b), SEQ, SEQ), noise)
    if kind == FrameType.ACK:
        return st.one_of(st.builds(lambda a, b, c: ACK.pack(a, b, c), SEQ, U32, SEQ), noise)
    return st.one_of(
        st.builds(
            lambda s, i, runs: encode_nack(s, i, runs),
            SEQ,
            U32,
            st.lists(st.tuples(SEQ, U32), max_size=64),
        ),
        noise,
    )


@st.composite
def hostile_frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(RELIABLE_TYPES))
    flags = draw(st.sampled_from([0, Flag.REPAIR, Flag.ACK_WANTED, Flag.UNICAST, 0xFF]))
    frame = Frame(
        kind, flags, draw(st.integers(1, 5)), 1, draw(U32), 0, draw(st.text(max_size=5)), b""
    )
    data = encode_frame(frame._replace(payload=draw(_payload(kind))))
    if draw(st.booleans()):
        position = draw(st.integers(0, len(data) - 1))
        data = data[:position] + bytes([draw(st.integers(0, 255))]) + data[position + 1 :]
    return data


@settings(max_examples=300, deadline=None)
@given(st.lists(hostile_frames(), min_size=1, max_size=40))
def test_session_survives_hostile_reliable_frames(frames: list[bytes]) -> None:
    rng = random.Random(0)
    session = Session(
        node_id=99,
        incarnation=1,
        name="target",
        now=0.0,
        random_bytes=rng.randbytes,
        reliable=ReliableConfig(receiver_memory=100_000, max_message=50_000),
    )
    session.start(0.0)
    session.publish("t", b"x" * 3000, 0.0, reliable=True)  # a stream for NACKs/ACKs to hit
    now = 0.0
    for data in frames:
        now += 0.01
        session.receive_datagram(data, ("10.0.0.9", 5000), now)
        session.handle_timer(now)
        session.datagrams_to_send()
        while session.next_event() is not None:
            pass
    for stats in session.reliable_stats()["receivers"].values():
        assert stats["memory"] <= 100_000 + 200  # the limit, plus at most one fragment


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 300), st.integers(0, 5000), st.integers(0, 5000), st.binary()),
        max_size=60,
    )
)
def test_stream_receiver_keeps_its_bounds(fragments: list[tuple[int, int, int, bytes]]) -> None:
    config = ReliableConfig(receiver_memory=20_000, max_message=8_000)
    receiver = StreamReceiver(1, 1, config, random=lambda: 0.5)
    now = 0.0
    for seq, length, offset, chunk in fragments:
        now += 0.05
        receiver.on_data(RDATA_HEAD.pack(seq, length, offset) + chunk, "t", now)
        receiver.handle_timer(now)
        assert receiver.memory <= 20_000 + len(chunk)
        for _, message, _ in receiver.delivered:
            assert len(message) <= 8_000
        receiver.delivered.clear()
