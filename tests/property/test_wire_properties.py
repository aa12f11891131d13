"""Wire format v1: golden vectors, round trips, and hostile input that must never raise."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mcastkit.events import Message
from mcastkit.security import GroupKey, KeyRing
from mcastkit.session import Session
from mcastkit.wire import Flag, Frame, FrameType, decode_frame_untrusted, encode_frame

GOLDEN = [
    (
        Frame(
            FrameType.DATA,
            0,
            0x0102030405060708,
            0x0A0B0C0D,
            42,
            1_700_000_000_000_000,
            "news",
            b"hi",
        ),
        "4d4b01040004000001020304050607080a0b0c0d0000002a00060a24181e40006e6577736869",
    ),
    (
        Frame(
            FrameType.HELLO,
            Flag.HELLO_ANSWER | Flag.UNICAST,
            0xFFFFFFFFFFFFFFFF,
            1,
            1,
            0,
            "",
            b'{"name":"a"}',
        ),
        "4d4b010103000000ffffffffffffffff000000010000000100000000000000007b226e616d65223a2261227d",
    ),
]


def test_golden_vectors_encode_and_decode() -> None:
    for frame, hex_bytes in GOLDEN:
        assert encode_frame(frame).hex() == hex_bytes
        assert decode_frame_untrusted(bytes.fromhex(hex_bytes)) == frame


frames = st.builds(
    Frame,
    type=st.sampled_from(list(FrameType)),
    flags=st.integers(0, 255),
    sender=st.integers(1, 2**64 - 1),
    incarnation=st.integers(0, 2**32 - 1),
    seq=st.integers(0, 2**32 - 1),
    timestamp_us=st.integers(0, 2**64 - 1),
    topic=st.text(max_size=60).filter(lambda t: len(t.encode()) <= 255),
    payload=st.binary(max_size=300),
)


@given(frames)
def test_round_trip(frame: Frame) -> None:
    assert decode_frame_untrusted(encode_frame(frame)) == frame


@given(st.binary(max_size=400))
def test_random_bytes_decode_to_a_frame_or_a_reason(data: bytes) -> None:
    result = decode_frame_untrusted(data)
    assert isinstance(result, (Frame, str))


def _session(key: GroupKey | None) -> Session:
    rng = random.Random(3)
    return Session(
        node_id=99,
        incarnation=1,
        name="victim",
        now=0.0,
        random_bytes=lambda n: rng.randbytes(n),
        keyring=KeyRing([key], lambda n: rng.randbytes(n)) if key else None,
    )


@given(st.binary(max_size=400))
def test_session_never_raises_on_random_datagrams(data: bytes) -> None:
    session = _session(None)
    session.receive_datagram(data, ("10.0.0.9", 9), 1.0)
    session.receive_datagram(b"MK\x01" + data, ("10.0.0.9", 9), 1.0)


@settings(max_examples=300)
@given(frames, st.data())
def test_mutated_sealed_frames_never_deliver(frame: Frame, data: st.DataObject) -> None:
    key = GroupKey(b"k" * 32)
    sender = KeyRing([key], random.Random(5).randbytes)
    sealed = bytearray(sender.seal(encode_frame(frame)))
    # Unique positions: two flips of one byte could cancel and restore the original.
    flips = data.draw(
        st.lists(st.integers(0, len(sealed) - 1), min_size=1, max_size=4, unique=True)
    )
    for position in flips:
        sealed[position] ^= data.draw(st.integers(1, 255))
    victim = _session(key)
    victim.receive_datagram(bytes(sealed), ("10.0.0.9", 9), 1.0)
    assert victim.next_event() is None
    assert victim.peers == {}


@given(frames)
def test_unmutated_sealed_data_frames_deliver(frame: Frame) -> None:
    key = GroupKey(b"k" * 32)
    sealed = KeyRing([key], random.Random(5).randbytes).seal(
        encode_frame(Frame(FrameType.DATA, 0, 7, 1, 1, 0, frame.topic, frame.payload))
    )
    victim = _session(key)
    victim.receive_datagram(sealed, ("10.0.0.9", 9), 1.0)
    events = []
    while (event := victim.next_event()) is not None:
        events.append(event)
    messages = [e for e in events if isinstance(e, Message)]
    assert [(m.topic, m.payload) for m in messages] == [(frame.topic, frame.payload)]
