"""The transfer engines on the one core contract (core.Core), driven as Driver.host drives
them: a timer runs only when ``next_timer`` says, and time jumps straight to it. A deadline
the engines forgot to state would stall these runs; one they state but do not consume would
spin them."""

from __future__ import annotations

import hashlib
import os
import random

import pytest
from blobs import Blobs

from mcastkit.events import ReceiveState, SendPhase, TransferFinished
from mcastkit.transfer.engine import SENDER_SILENCE, ReceiveSession, SendSession
from mcastkit.transfer.protocol import FileInfo
from mcastkit.transfer.storage import MemoryStorage

SENDER = ("10.0.0.1", 4000)


def _sender(blobs: list[bytes], *, expected: int | None = None) -> SendSession:
    files = [
        FileInfo(f"f{i}.bin", len(b), hashlib.sha256(b).hexdigest()) for i, b in enumerate(blobs)
    ]
    return SendSession(
        7,
        files,
        Blobs(blobs),
        now=0.0,
        block_size=100,
        expected=expected,
        register_wait=0.5,
        receiver_timeout=1.0,
    )


def _host(
    sender: SendSession,
    receivers: list[ReceiveSession],
    *,
    loss: float,
    silent_after: float | None = None,
    until: float = 60.0,
) -> tuple[float, int]:
    """Run the cores as a host would until the sender is done (or ``until``); return the
    time reached and the turns in which time did not move (outside the paced data)."""
    rng = random.Random(5)
    address = {id(r): (f"10.0.0.{n + 2}", 5000) for n, r in enumerate(receivers)}
    cores = [sender, *receivers]
    now, standing = 0.0, 0
    for _ in range(20_000):  # bounded: a timer due but never consumed spins here
        if now >= until or (sender.phase == SendPhase.DONE and all(r.finished for r in receivers)):
            break
        for core in cores:
            when = core.next_timer()
            if when is not None and now >= when:
                core.handle_timer(now)
        muted = silent_after is not None and now >= silent_after
        out = [] if muted else sender.datagrams_to_send(now)
        if sender.phase == SendPhase.DATA and not muted:
            out += sender.next_blocks(20)
        for data, destination in out:
            for receiver in receivers:
                if destination not in (None, address[id(receiver)]) or rng.random() < loss:
                    continue
                receiver.receive_datagram(data, SENDER, now)
        for receiver in receivers:
            for reply, _ in receiver.datagrams_to_send(now):
                if rng.random() >= loss:
                    sender.receive_datagram(reply, address[id(receiver)], now)
        if sender.phase == SendPhase.DATA and not muted:
            now += 0.001  # the host's pace: 20 blocks a millisecond
            continue
        timers = [t for core in cores if (t := core.next_timer()) is not None]
        if not timers:
            break
        later = max(now, min(timers))
        standing += later == now
        now = later
    return now, standing


@pytest.mark.parametrize("loss", [0.0, 0.2])
def test_a_transfer_runs_on_the_contract_alone(loss: float) -> None:
    blobs = [os.urandom(30_000), os.urandom(777), b""]
    storages = [MemoryStorage() for _ in range(3)]
    receivers = [ReceiveSession(100 + n, f"r{n}", s, now=0.0) for n, s in enumerate(storages)]
    sender = _sender(blobs, expected=3)
    now, standing = _host(sender, receivers, loss=loss)
    assert sender.phase == SendPhase.DONE
    assert all(r.state == ReceiveState.COMPLETE for r in receivers)
    for storage in storages:
        assert storage.collect() == {f"f{i}.bin": blob for i, blob in enumerate(blobs)}
    assert now < 10.0  # no deadline waited out: registration ended with the three in
    assert standing < 100  # what is due is done, not looked at again and again


def test_registration_ends_at_its_wait_when_fewer_came() -> None:
    sender = _sender([os.urandom(500)], expected=2)
    assert sender.next_timer() == 0.0  # nothing announced yet
    sender.handle_timer(0.0)
    assert sender.datagrams_to_send(0.0)  # the announce
    assert 0.0 < (sender.next_timer() or 0.0) <= 0.5  # the next announce, or the wait's end
    receiver = ReceiveSession(1, "only", MemoryStorage(), now=0.0)
    now, standing = _host(sender, [receiver], loss=0.0)
    assert receiver.state == ReceiveState.COMPLETE
    assert sender.pass_number >= 1 and now >= 0.5  # it waited the 0.5 s for the second
    # ... and once more, after the first was done, before it gave up on the second
    assert sender.phase == SendPhase.DONE and now >= 1.0 and standing < 100


def test_a_receiver_gives_up_on_a_silent_sender_when_its_timer_says() -> None:
    receiver = ReceiveSession(1, "r", MemoryStorage(), now=0.0)
    assert receiver.next_timer() is None  # waiting: only an announce wakes it
    sender = _sender([os.urandom(2_000_000)])  # 1 s of data at the pace
    _host(sender, [receiver], loss=0.0, silent_after=0.6, until=0.6 + SENDER_SILENCE + 5)
    assert receiver.state == ReceiveState.FAILED
    assert receiver.reason is not None and "silent" in receiver.reason
    finished = [e for e in receiver.events() if isinstance(e, TransferFinished)]
    assert [e.state for e in finished] == [ReceiveState.FAILED]


def test_events_come_one_at_a_time_in_order() -> None:
    sender = _sender([os.urandom(300)], expected=1)
    receiver = ReceiveSession(1, "r", MemoryStorage(), now=0.0)
    _host(sender, [receiver], loss=0.0)
    kinds = []
    while (event := sender.next_event()) is not None:
        kinds.append(type(event).__name__)
    assert kinds[0] == "PhaseChanged" or kinds[0] == "ReceiverRegistered"
    assert kinds[-1] == "PhaseChanged" and "ReceiverFinished" in kinds
    assert sender.next_event() is None
