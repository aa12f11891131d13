"""The session's short receive path (``receive_run``) decides exactly as the full one.

Two receivers with the same id, randomness and clocks take the same datagrams: one a datagram
at a time through ``receive_datagram`` (the full path), the other in runs through
``receive_run``, as the Node does (sealed runs opened first with ``open_spans_into``). Real
frames from three senders (hellos, messages on two topics, reliable fragments, unicast,
heartbeats, goodbyes, a restart) and the receivers' own, looped back, arrive duplicated,
reordered, truncated, bit-flipped and in runs of any length; the events, counters, peer
table and what each receiver sends must be identical.
"""

from __future__ import annotations

import random
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcastkit.events import Message
from mcastkit.reliable.config import ReliableConfig
from mcastkit.security import GroupKey, KeyRing
from mcastkit.session import Session
from mcastkit.wire import FrameType

KEY = GroupKey(bytes(range(32)))
WALL_US = 1_800_000_000_000_000
SOURCES = [("10.0.0.1", 5000), ("10.0.0.2", 5000), ("10.0.0.3", 5000), ("10.0.0.4", 5000)]
OWN = 3  # the source of the receivers' own datagrams, looped back
IFACES = ["eth0", None, "eth1"]  # the arrival interface of run n is IFACES[n % 3]


# Receivers acknowledge every second fragment (to a sender that asks) and refuse a reliable
# message over 3,000 bytes: ACKs and losses then fall in the middle of runs.
RECEIVING = ReliableConfig(ack_every=2, max_message=3000)


def _session(
    seed: int,
    name: str,
    sealed: bool,
    clock: list[int] | None = None,
    reliable: ReliableConfig | None = None,
) -> Session:
    rng = random.Random(seed)
    wall = clock or [WALL_US]
    session = Session(
        node_id=rng.getrandbits(64),
        incarnation=rng.getrandbits(32),
        name=name,
        now=0.0,
        random_bytes=rng.randbytes,
        keyring=KeyRing([KEY], random.Random(seed + 1).randbytes) if sealed else None,
        wall_clock_us=lambda: wall[0],  # set, not ticking: the paths read it unequally often
        reliable=reliable,
    )
    session.start(0.0)
    session.datagrams_to_send(0.0)
    return session


def _frames(sealed: bool) -> list[tuple[bytes, int]]:
    """Datagrams from three senders, each with the index of its source address."""
    out: list[tuple[bytes, int]] = []
    clock = [WALL_US]
    # Sender 1 holds its window for slow receivers, so it asks for ACKs.
    senders = [
        _session(
            10 + n,
            f"s{n}",
            sealed,
            clock if n == 0 else None,
            ReliableConfig(slow_receiver="wait") if n == 1 else None,
        )
        for n in range(3)
    ]
    for index, sender in enumerate(senders):
        sender.announce(0.0)
        if index == 0:
            # Unicast seqs 1 to 3: the message's is the next one on the group channel too.
            for _ in range(2):
                sender._send_hello(0.0, flags=0, to=SOURCES[0])
            sender._send(FrameType.DATA, "news", b"direct", 0.0, to=SOURCES[0])
        for n in range(6):
            sender.publish("news" if n % 3 else "other/é", bytes([index, n]) * (n + 1), 0.0)
            if index == 0 and n == 2:
                sender.update_meta(0.0, name="renamed")  # a new name in the middle of a run
        if index < 2:  # reliable messages: one fragment, five (too large for some), one
            sender.publish("bulk", bytes([index]) * 100, 0.0, reliable=True)
            sender.publish("bulk", bytes(range(256)) * 25, 0.0, reliable=True)
            sender.publish("bulk", b"after", 0.0, reliable=True)
        if index == 0:
            clock[0] += 60_000_000  # its clock jumps past the allowed skew: stale if sealed
            sender.publish("news", b"late", 0.0)
        sender.handle_timer(5.0)  # a heartbeat
        out.extend((data, index) for data, _ in sender.datagrams_to_send(5.0))
    senders[1].incarnation += 1  # a restart of the same id
    senders[1].publish("news", b"again", 6.0)
    senders[2].close(7.0)  # a goodbye
    for index in (1, 2):
        out.extend((data, index) for data, _ in senders[index].datagrams_to_send(7.0))
    # The receivers' own datagrams looped back (they share seed 1), and an earlier run's.
    for earlier in (False, True):
        own = _session(1, "r", sealed, clock)
        own.incarnation -= earlier
        own.publish("news", b"mine", 7.0)
        own.publish("bulk", bytes(range(256)) * 12, 7.0, reliable=True)
        out.extend((data, OWN) for data, _ in own.datagrams_to_send(7.0))
    return out


FRAMES = {sealed: _frames(sealed) for sealed in (False, True)}


@st.composite
def _arrivals(draw: st.DrawFn, sealed: bool) -> list[list[tuple[bytes, int]]]:
    """Runs of datagrams, each run from one source."""
    frames = FRAMES[sealed]
    picks: list[int] = []
    for _ in range(draw(st.integers(1, 60))):
        # Mostly the next frame (in order: the short path's case), else any frame again.
        follow = picks and picks[-1] + 1 < len(frames) and draw(st.integers(0, 3))
        picks.append(picks[-1] + 1 if follow else draw(st.integers(0, len(frames) - 1)))
    runs: list[list[tuple[bytes, int]]] = []
    for pick in picks:
        data, source = frames[pick]
        damage = draw(st.sampled_from(["none", "none", "none", "flip", "cut"]))
        if damage == "flip":
            position = draw(st.integers(0, len(data) - 1))
            bit = 1 << draw(st.integers(0, 7))
            data = data[:position] + bytes([data[position] ^ bit]) + data[position + 1 :]
        elif damage == "cut":
            data = data[: draw(st.integers(0, len(data) - 1))]
        if runs and runs[-1][-1][1] == source and draw(st.booleans()):
            runs[-1].append((data, source))
        else:
            runs.append([(data, source)])
    return runs


def _state(session: Session) -> Any:
    peers = {
        node_id: (
            repr(peer),
            sorted((channel, w.highest, w.bitmap) for channel, w in peer.windows.items()),
        )
        for node_id, peer in session.peers.items()
    }
    events = [repr(event) for event in session.take_events()]
    sent = session.datagrams_to_send(9.0)
    counters = {name: count for name, count in session.counters.items() if count}
    return events, counters, peers, sent


def _laid_end_to_end(datagrams: list[bytes]) -> tuple[memoryview, list[tuple[int, int]]]:
    """One buffer holding ``datagrams`` and their (start, end) spans, as a receive batch."""
    spans, start = [], 0
    for data in datagrams:
        spans.append((start, start + len(data)))
        start += len(data)
    return memoryview(b"".join(datagrams)), spans


def _by_runs(session: Session, runs: list[list[tuple[bytes, int]]], sealed: bool) -> None:
    for number, run in enumerate(runs):
        source = SOURCES[run[0][1]]
        now = 8.0 + number / 1000
        buffer, spans = _laid_end_to_end([data for data, _ in run])
        if sealed:
            assert session.keyring is not None
            opened = memoryview(bytearray(len(buffer)))
            spans, refused = session.keyring.open_spans_into(buffer, spans, opened)
            for reason in refused:
                session.refuse_datagram(reason)
            buffer = opened
        session.receive_run(buffer, spans, source, now, IFACES[number % 3])


def _one_by_one(session: Session, runs: list[list[tuple[bytes, int]]]) -> None:
    for number, run in enumerate(runs):
        for data, index in run:
            session.receive_datagram(data, SOURCES[index], 8.0 + number / 1000, IFACES[number % 3])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_runs_and_single_datagrams_end_the_same(data: st.DataObject) -> None:
    sealed = data.draw(st.booleans())
    runs = data.draw(_arrivals(sealed))
    single = _session(1, "r", sealed, reliable=RECEIVING)
    batched = _session(1, "r", sealed, reliable=RECEIVING)
    _one_by_one(single, runs)
    _by_runs(batched, runs, sealed)
    assert _state(batched) == _state(single)


def test_the_short_path_is_taken_and_delivers_in_order() -> None:
    """In-order messages from a known member are the short path's (no full decode)."""
    receiver = _session(1, "r", False)
    frames = FRAMES[False]
    run = [data for data, source in frames if source == 0]
    buffer, spans = _laid_end_to_end(run)
    full_calls = 0
    full_path = receiver._fast._full_path  # the session's receive_opened

    def counting(*args: Any) -> None:
        nonlocal full_calls
        full_calls += 1
        full_path(*args)

    receiver._fast._full_path = counting
    receiver.receive_run(buffer, spans, SOURCES[0], 1.0, None)
    messages = [e for e in receiver.take_events() if isinstance(e, Message)]
    payloads = [b"direct"] + [bytes([0, n]) * (n + 1) for n in range(6)] + [b"late"]
    assert [m.payload for m in messages if not m.reliable] == payloads
    assert [m.topic for m in messages][:3] == ["news", "other/é", "news"]
    assert [m.sender_name for m in messages if not m.reliable] == ["s0"] * 4 + ["renamed"] * 4
    reliable = [m.payload for m in messages if m.reliable]
    assert reliable == [bytes([0]) * 100, bytes(range(256)) * 25, b"after"]
    # Hellos, the unicast hellos and message, the heartbeat and stream states take the full
    # path; the 7 group messages and the 7 reliable fragments do not.
    assert full_calls == len(run) - 7 - 7
    assert receiver.counters["frames"] == len(run)


def test_a_fragment_marked_unicast_is_judged_on_its_own_channel() -> None:
    """The UNICAST flag puts a frame on the unicast replay window: not the short path's."""
    frames = FRAMES[False]
    run = [(data, source) for data, source in frames if source == 0]
    first_rdata = next(i for i, (data, _) in enumerate(run) if data[3] == FrameType.RDATA)
    data = bytearray(run[first_rdata][0])
    data[4] |= 0x01  # flags: UNICAST
    run[first_rdata] = (bytes(data), 0)
    single, batched = _session(1, "r", False), _session(1, "r", False)
    _one_by_one(single, [run])
    _by_runs(batched, [run], False)
    assert _state(batched) == _state(single)


@pytest.mark.parametrize("sealed", [False, True])
def test_whole_streams_in_one_run_end_as_one_by_one(sealed: bool) -> None:
    """Each sender's frames in order, one run each: a refused (too large) reliable message
    and the one after it, and ACKs due every second fragment, all fall inside a run; the
    loss must come before the next message, and each ACK when it falls due."""
    frames = FRAMES[sealed]
    runs = [[(d, s) for d, s in frames if s == source] for source in range(3)]
    single = _session(1, "r", sealed, reliable=RECEIVING)
    batched = _session(1, "r", sealed, reliable=RECEIVING)
    _one_by_one(single, runs)
    _by_runs(batched, runs, sealed)
    state = _state(single)
    assert state == _state(batched)
    events = [e for e in state[0] if "too-large" in e or "b'after'" in e]
    assert any("too-large" in a and "b'after'" in b for a, b in pairwise(events))
    assert state[1]["sent:ack"] >= 2
