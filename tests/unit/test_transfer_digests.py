"""Digests that follow the announce: the sender starts before it has hashed its files."""

from __future__ import annotations

import hashlib
import os

from blobs import Blobs

from mcastkit.events import ReceiveState, SendPhase
from mcastkit.transfer.engine import ReceiveSession, SendSession
from mcastkit.transfer.protocol import PENDING_DIGEST, FileInfo, encode_announce
from mcastkit.transfer.storage import MemoryStorage

RECEIVER_ADDRESS = ("10.0.0.2", 5000)
SENDER_ADDRESS = ("10.0.0.1", 4000)


def _pending_pair(blobs: list[bytes]) -> tuple[SendSession, ReceiveSession, MemoryStorage]:
    files = [FileInfo(f"f{i}", len(b), PENDING_DIGEST) for i, b in enumerate(blobs)]
    sender = SendSession(
        3, files, Blobs(blobs), now=0.0, block_size=100, expected=1, register_wait=0.5
    )
    storage = MemoryStorage()
    return sender, ReceiveSession(9, "r", storage, now=0.0), storage


def _step(sender: SendSession, receiver: ReceiveSession, now: float) -> None:
    out = sender.tick(now) + sender.next_blocks(50)
    for data, destination in out:
        if destination in (None, RECEIVER_ADDRESS):
            for reply, _ in receiver.receive(data, SENDER_ADDRESS, now):
                sender.receive(reply, RECEIVER_ADDRESS, now)
    for reply, _ in receiver.tick(now):
        sender.receive(reply, RECEIVER_ADDRESS, now)


def test_the_receiver_waits_for_the_digest_then_verifies() -> None:
    blobs = [os.urandom(5_000), os.urandom(333)]
    sender, receiver, storage = _pending_pair(blobs)
    now = 0.0
    while receiver.received < receiver.total_blocks or receiver.total_blocks == 0:
        now += 0.01
        _step(sender, receiver, now)
        assert now < 10
    for _ in range(100):  # every block is in, but no digest yet: it must not verify
        now += 0.01
        _step(sender, receiver, now)
    assert receiver.state == ReceiveState.RECEIVING and storage.collect() == {}
    sender.set_digests([hashlib.sha256(b).hexdigest() for b in blobs])
    while sender.phase != SendPhase.DONE and now < 20:
        now += 0.01
        _step(sender, receiver, now)
    assert receiver.state == ReceiveState.COMPLETE
    assert storage.collect() == {"f0": blobs[0], "f1": blobs[1]}
    assert all(r.complete for r in sender.receivers.values())


def test_a_digest_that_does_not_match_fails_the_transfer() -> None:
    blobs = [os.urandom(2_000)]
    sender, receiver, storage = _pending_pair(blobs)
    sender.set_digests(["ab" * 32])  # what a file changed under the sender would give
    now = 0.0
    while sender.phase != SendPhase.DONE and now < 20:
        now += 0.01
        _step(sender, receiver, now)
    assert receiver.state == ReceiveState.FAILED and "sha256 mismatch" in (receiver.reason or "")
    assert storage.collect() == {}


def test_an_announce_of_another_file_list_teaches_nothing() -> None:
    blobs = [os.urandom(1_000)]
    sender, receiver, _ = _pending_pair(blobs)
    _step(sender, receiver, 0.01)
    assert receiver.files[0].digest_pending
    other = [FileInfo("f0", 999, "cd" * 32)]  # same name, another size: not our transfer
    receiver.receive(encode_announce(3, other, 100), SENDER_ADDRESS, 0.02)
    other = [FileInfo("f0", 1000, "cd" * 32)]  # right list, another block size
    receiver.receive(encode_announce(3, other, 200), SENDER_ADDRESS, 0.03)
    assert receiver.files[0].digest_pending
    right = [FileInfo("f0", 1000, "ef" * 32)]
    receiver.receive(encode_announce(3, right, 100), SENDER_ADDRESS, 0.04)
    assert receiver.files[0].sha256 == "ef" * 32
    again = [FileInfo("f0", 1000, "12" * 32)]  # a digest, once known, is never replaced
    receiver.receive(encode_announce(3, again, 100), SENDER_ADDRESS, 0.05)
    assert receiver.files[0].sha256 == "ef" * 32


def test_a_sender_that_cannot_read_aborts_and_every_receiver_is_told() -> None:
    blobs = [os.urandom(3_000)]
    sender, receiver, _ = _pending_pair(blobs)
    for step in range(1, 30):
        _step(sender, receiver, step * 0.01)
    for data, _ in sender.abort("the sender could not read its files"):
        receiver.receive(data, SENDER_ADDRESS, 0.5)
    assert sender.phase == SendPhase.DONE
    assert [r.failed for r in sender.receivers.values()] == ["the sender could not read its files"]
    assert receiver.state == ReceiveState.FAILED
