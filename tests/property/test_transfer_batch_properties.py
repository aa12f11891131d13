"""The batch receive path of the transfer receiver agrees with the one-datagram path.

``receive_many`` checks DATA blocks in place and writes runs in one call; whatever the input
(valid blocks, duplicates, foreign sessions, wrong sizes, garbage), it must end in the same
state, with the same bytes stored, as ``receive`` fed the same datagrams one by one.
"""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from mcastkit.transfer.engine import ReceiveSession
from mcastkit.transfer.protocol import (
    DATA,
    DATA_HEAD,
    HEAD,
    FileInfo,
    decode_missing_map,
    encode_announce,
    encode_missing_map,
    head,
    missing_ranges,
)
from mcastkit.transfer.storage import MemoryStorage

BLOCK = 100
FILES = [bytes(range(256)) * 4, b"\x07" * 250]  # 11 blocks and 3 blocks (short last ones)
SENDER = ("10.0.0.1", 4000)


def _announced() -> tuple[ReceiveSession, MemoryStorage]:
    storage = MemoryStorage()
    receiver = ReceiveSession(5, "r", storage, now=0.0)
    infos = [FileInfo(f"f{i}", len(b), hashlib.sha256(b).hexdigest()) for i, b in enumerate(FILES)]
    receiver.receive(encode_announce(9, infos, BLOCK), SENDER, 0.0)
    return receiver, storage


def _block(file_index: int, block: int, session: int, trim: int) -> bytes:
    data = FILES[file_index % 2][block * BLOCK : (block + 1) * BLOCK]
    return head(DATA, session) + DATA_HEAD.pack(file_index, block) + data[: len(data) - trim]


datagram = st.one_of(
    st.builds(
        _block,
        st.integers(0, 2),
        st.integers(0, 12),
        st.sampled_from([9, 9, 9, 8]),
        st.sampled_from([0, 0, 0, 1]),
    ),
    st.binary(max_size=140),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(datagram, max_size=60), st.integers(1, 7))
def test_batches_end_where_single_datagrams_end(datagrams: list[bytes], batches: int) -> None:
    one, one_storage = _announced()
    many, many_storage = _announced()
    out_one = []
    for data in datagrams:
        out_one.extend(one.receive(data, SENDER, 1.0))
    out_many = []
    size = max(1, len(datagrams) // batches)
    for start in range(0, len(datagrams), size):
        chunk = datagrams[start : start + size]
        buffer = bytearray()
        spans = []
        for data in chunk:
            buffer += b"\xee" * 3  # spans need not touch: recvmmsg slots have gaps
            spans.append((len(buffer), len(buffer) + len(data)))
            buffer += data
        out_many.extend(many.receive_many(memoryview(buffer), spans, SENDER, 1.0))
    assert many.bitmaps == one.bitmaps
    assert (many.received, many.duplicates, many.state) == (one.received, one.duplicates, one.state)
    assert many_storage._sinks[0].data == one_storage._sinks[0].data
    assert set(out_many) == set(out_one)  # the same replies (a status once complete)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=2000), st.integers(0, 70_000), st.integers(0, 3))
def test_missing_maps_round_trip_to_the_same_ranges(
    raw: bytes, first: int, file_index: int
) -> None:
    have = bytes(b & 1 for b in raw)
    datagram = encode_missing_map(9, 77, 3, file_index, first, have)
    decoded = decode_missing_map(datagram[HEAD.size :])
    assert decoded is not None
    receiver, pass_number, ranges = decoded
    assert (receiver, pass_number) == (77, 3)
    expected = [(f, first + s, n) for f, s, n in missing_ranges(bytearray(have), file_index)]
    assert ranges == expected


@given(st.binary(max_size=1500))
def test_hostile_missing_maps_never_raise(body: bytes) -> None:
    decoded = decode_missing_map(body)
    if decoded is not None:
        assert all(count > 0 for _, _, count in decoded[2])
