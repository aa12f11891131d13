"""``Framer.frame_run`` frames a run as ``frame`` frames each datagram of it: the same
headers but for the stamps, which come from one clock read and still never go backwards or
repeat, with the group sequence carried on between the two."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcastkit.framing import Framer
from mcastkit.security import GroupKey, KeyRing
from mcastkit.wire import Frame, FrameType, decode_frame_untrusted

KEY = GroupKey(bytes(range(32)))


def _framer(clock: list[int], sealed: bool) -> Framer:
    return Framer(
        node_id=0x1234,
        incarnation=7,
        max_datagram=1472,
        keyring=KeyRing([KEY], random.Random(1).randbytes) if sealed else None,
        wall_clock_us=lambda: clock[0],
    )


def _decode(data: bytes, sealed: bool) -> Frame:
    if sealed:
        opened = KeyRing([KEY], random.Random(2).randbytes).open_untrusted(data)
        assert isinstance(opened, bytes), opened
        data = opened
    frame = decode_frame_untrusted(data)
    assert isinstance(frame, Frame), frame
    return frame


ITEMS = st.lists(
    st.tuples(
        st.sampled_from(["", "bulk", "é/x"]),
        st.binary(max_size=64),
        st.sampled_from([0, 0x02, 0x04, 0x06]),
    ),
    max_size=40,
)


@pytest.mark.parametrize("sealed", [False, True])
@given(
    before=st.integers(0, 3),
    items=ITEMS,
    clock_steps=st.lists(st.integers(-5, 50), min_size=2, max_size=2),
)
def test_a_run_is_framed_as_one_at_a_time(
    sealed: bool, before: int, items: list[tuple[str, bytes, int]], clock_steps: list[int]
) -> None:
    clock = [1_800_000_000_000_000]
    framer = _framer(clock, sealed)
    frames = []
    for _ in range(before):
        frames.append(framer.frame(FrameType.DATA, "x", b"", flags=0, unicast=False))
        clock[0] += clock_steps[0]  # the wall clock may stand still or step back
    run = framer.frame_run(FrameType.RDATA, items)
    clock[0] += clock_steps[1]
    frames.extend(run)
    frames.append(framer.frame(FrameType.DATA, "x", b"after", flags=0, unicast=False))
    decoded = [_decode(data, sealed) for data in frames]
    assert [f.seq for f in decoded] == list(range(1, len(frames) + 1))
    stamps = [f.timestamp_us for f in decoded]
    assert all(a < b for a, b in pairwise(stamps))  # never backwards, never equal
    if items:
        assert stamps[before] >= clock[0] - clock_steps[1]  # the run starts at the clock
    got = [(f.type, f.topic, f.payload, f.flags, f.sender, f.incarnation) for f in decoded]
    want = [(FrameType.RDATA, t, p, fl, 0x1234, 7) for t, p, fl in items]
    assert got[before : before + len(items)] == want


def test_a_node_without_a_clock_stamps_nothing() -> None:
    framer = _framer([0], sealed=False)
    run = framer.frame_run(FrameType.RDATA, [("a", b"1", 0), ("a", b"2", 0)])
    assert [_decode(data, False).timestamp_us for data in run] == [0, 0]
