"""The transfer engines' states and events: typed, moved only along their tables, reported."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastkit.events import (
    PhaseChanged,
    ReceiverFinished,
    ReceiverRegistered,
    ReceiveState,
    SendPhase,
    TransferAnnounced,
    TransferFinished,
)
from mcastkit.transfer.engine import ReceiveSession
from mcastkit.transfer.protocol import ABORT, FileInfo, encode_announce, head
from mcastkit.transfer.states import RECEIVE_TRANSITIONS, SEND_TRANSITIONS, StateError, advance
from mcastkit.transfer.storage import MemoryStorage
from tests.unit.test_transfer_engine import _run

SENDER = ("10.0.0.1", 4000)


def test_every_state_has_a_row_and_final_states_lead_nowhere() -> None:
    assert set(SEND_TRANSITIONS) == set(SendPhase)
    assert set(RECEIVE_TRANSITIONS) == set(ReceiveState)
    assert SEND_TRANSITIONS[SendPhase.DONE] == frozenset()
    assert RECEIVE_TRANSITIONS[ReceiveState.COMPLETE] == frozenset()
    assert RECEIVE_TRANSITIONS[ReceiveState.FAILED] == frozenset()


@pytest.mark.parametrize(
    ("table", "current", "new"),
    [
        (SEND_TRANSITIONS, SendPhase.DONE, SendPhase.DATA),
        (SEND_TRANSITIONS, SendPhase.REGISTER, SendPhase.STATUS),
        (RECEIVE_TRANSITIONS, ReceiveState.COMPLETE, ReceiveState.FAILED),
        (RECEIVE_TRANSITIONS, ReceiveState.FAILED, ReceiveState.RECEIVING),
        (RECEIVE_TRANSITIONS, ReceiveState.WAITING, ReceiveState.COMPLETE),
    ],
)
def test_a_move_the_table_forbids_raises(table, current, new) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StateError, match="not allowed"):
        advance(table, current, new)


def test_a_whole_transfer_reports_typed_events_in_order() -> None:
    blobs = [os.urandom(20_000), os.urandom(999)]
    receivers = [ReceiveSession(100 + n, f"m{n}", MemoryStorage(), now=0.0) for n in range(2)]
    sender = _run(blobs, receivers, loss=0.1, expected=2)
    events = sender.events()
    assert sender.events() == []  # drained
    phases = [e.phase for e in events if isinstance(e, PhaseChanged)]
    assert phases[0] == SendPhase.DATA and phases[-1] == SendPhase.DONE
    assert phases.count(SendPhase.DATA) == sender.pass_number + 1  # passes 0..n, each a DATA
    for before, after in zip([SendPhase.REGISTER, *phases], phases, strict=False):
        assert after in SEND_TRANSITIONS[before]
    registered = [e for e in events if isinstance(e, ReceiverRegistered)]
    finished = [e for e in events if isinstance(e, ReceiverFinished)]
    assert sorted(e.name for e in registered) == ["m0", "m1"]
    assert sorted(e.name for e in finished) == ["m0", "m1"]  # once each, however many ACKs
    assert all(e.complete and e.reason is None for e in finished)
    for receiver in receivers:
        got = receiver.events()
        assert [type(e) for e in got] == [TransferAnnounced, TransferFinished]
        assert got[0].files == ("f0.bin", "f1.bin") and got[0].size == 20_999  # type: ignore[attr-defined]
        assert got[1].state == ReceiveState.COMPLETE  # type: ignore[attr-defined]
        assert receiver.state == ReceiveState.COMPLETE  # (its DONE_ACK may be lost)
        assert receiver.summary()["state"] == "complete"


def test_a_dead_receiver_is_reported_as_failed() -> None:
    blobs = [os.urandom(50_000)]
    receivers = [ReceiveSession(100 + n, f"m{n}", MemoryStorage(), now=0.0) for n in range(2)]
    sender = _run(blobs, receivers, loss=0.0, kill_at={1: 10}, expected=2)
    finished = {e.name: e for e in sender.events() if isinstance(e, ReceiverFinished)}
    assert finished["m0"].complete
    assert not finished["m1"].complete and finished["m1"].reason == "stopped answering"


def _announced(size: int = 300) -> tuple[ReceiveSession, bytes]:
    blob = os.urandom(size)
    info = FileInfo("a.bin", size, hashlib.sha256(blob).hexdigest())
    receiver = ReceiveSession(5, "r", MemoryStorage(), now=0.0)
    receiver.receive(encode_announce(9, [info], 100), SENDER, 0.0)
    return receiver, blob


def test_an_abort_while_verification_is_due_fails_cleanly() -> None:
    # Every block arrived (verification is due at the next tick), then the sender aborted:
    # the receiver fails; it must not verify and call the transfer complete.
    receiver, blob = _announced()
    from mcastkit.transfer.protocol import DATA, DATA_HEAD

    for block in range(3):
        chunk = blob[block * 100 : block * 100 + 100]
        receiver.receive(head(DATA, 9) + DATA_HEAD.pack(0, block) + chunk, SENDER, 0.1)
    receiver.receive(head(ABORT, 9), SENDER, 0.2)
    receiver.tick(0.3)
    assert receiver.state == ReceiveState.FAILED and "gave up" in (receiver.reason or "")
    outcome = [e for e in receiver.events() if isinstance(e, TransferFinished)]
    assert [e.state for e in outcome] == [ReceiveState.FAILED]


def test_a_refused_announce_is_announced_then_failed() -> None:
    info = FileInfo("big.bin", 10_000, "0" * 64)
    receiver = ReceiveSession(5, "r", MemoryStorage(), now=0.0, max_size=1000)
    receiver.receive(encode_announce(9, [info], 100), SENDER, 0.0)
    got = receiver.events()
    assert [type(e) for e in got] == [TransferAnnounced, TransferFinished]
    assert receiver.state == ReceiveState.FAILED and "--max-size" in (receiver.reason or "")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=120), max_size=40))
def test_hostile_datagrams_only_move_the_receiver_along_its_table(datagrams: list[bytes]) -> None:
    # advance() raises on a forbidden move, so any path hostile input drives must be legal.
    receiver, _ = _announced()
    before = receiver.state
    for n, data in enumerate(datagrams):
        receiver.receive(head(data[0] % 12 if data else 0, 9) + data[1:], SENDER, n * 0.01)
        receiver.tick(n * 0.01)
        assert receiver.state == before or receiver.state in RECEIVE_TRANSITIONS[before]
        before = receiver.state
