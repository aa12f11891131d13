"""Announces of any file list, in any number of parts, arriving in any order: the receiver
rebuilds exactly the list; and no byte string makes the decoder raise."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mcastkit.events import ReceiveState
from mcastkit.transfer.engine import ReceiveSession
from mcastkit.transfer.protocol import (
    MAX_ANNOUNCE_JSON,
    RESERVED_SUFFIXES,
    FileInfo,
    decode_announce,
    decode_untrusted,
    encode_announces,
)
from mcastkit.transfer.storage import MemoryStorage

SENDER = ("10.0.0.1", 4000)
component = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\x00"),
    min_size=1,
    max_size=30,
).filter(lambda c: c not in (".", "..") and not c.endswith(RESERVED_SUFFIXES))
entry = st.builds(
    FileInfo,
    name=st.lists(component, min_size=1, max_size=4).map("/".join),
    size=st.integers(0, 5000),
    sha256=st.sampled_from(["ab" * 32, "0" * 64]),
    mode=st.one_of(st.none(), st.integers(0, 0o777)),
    mtime=st.one_of(st.none(), st.floats(0, 4e9)),
)


@settings(max_examples=150, deadline=None)
@given(
    files=st.lists(entry, min_size=1, max_size=150, unique_by=lambda f: f.name), seed=st.integers()
)
def test_any_list_in_any_order_is_rebuilt_exactly(files: list[FileInfo], seed: int) -> None:
    names = {tuple(f.name.split("/")) for f in files}
    if any(n[:depth] in names for n in names for depth in range(1, len(n))):
        return  # a file and a directory of one name: refused (tested elsewhere)
    datagrams = encode_announces(42, files, 1000, sent_at=1.0)
    assert all(len(d) <= 16 + MAX_ANNOUNCE_JSON for d in datagrams)
    random.Random(seed).shuffle(datagrams)
    receiver = ReceiveSession(1, "r", MemoryStorage(), now=0.0)
    for datagram in datagrams:
        receiver.receive(datagram, SENDER, 0.0)
    assert receiver.state == ReceiveState.RECEIVING
    expected = [
        FileInfo(f.name, f.size, f.sha256, f.mode, None if f.mtime is None else round(f.mtime, 6))
        for f in files
    ]
    assert receiver.files == expected


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=400))
def test_no_announce_body_makes_the_decoder_raise(body: bytes) -> None:
    decode_announce(body)
    decode_announce(b'{"block_size":1000,"files":' + body)
    message = decode_untrusted(b"MKT1\x01\x00\x00\x00" + bytes(8) + body)
    assert message is None or message.kind == 1


def test_parts_of_many_sessions_are_held_for_two_at_most() -> None:
    """An outsider's incomplete lists (many sessions) neither pile up nor keep ours out."""
    names = [f"tree/{n:04d}-{'x' * 40}" for n in range(300)]
    files = [FileInfo(name, 10, "ab" * 32) for name in names]
    receiver = ReceiveSession(1, "r", MemoryStorage(), now=0.0)
    for session in range(100, 140):  # forty sessions, each missing its last part
        for datagram in encode_announces(session, files, 1000, sent_at=1.0)[:-1]:
            receiver.receive(datagram, SENDER, 0.0)
        assert len(receiver._parts) <= 2
    for datagram in encode_announces(7, files, 1000, sent_at=1.0):
        receiver.receive(datagram, SENDER, 0.0)
    assert receiver.state == ReceiveState.RECEIVING and receiver.session == 7
    assert [f.name for f in receiver.files] == names
