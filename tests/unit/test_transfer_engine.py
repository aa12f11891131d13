"""File distribution engines on a fake lossy link, with real files in a temp directory."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
from blobs import Blobs

from mcastkit.transfer.engine import ReceiveSession, SendSession, safe_path
from mcastkit.transfer.protocol import FileInfo, decode_untrusted
from mcastkit.transfer.storage import DirectoryStorage, MemoryStorage


def _run(
    blobs: list[bytes],
    receivers: list[ReceiveSession],
    *,
    loss: float,
    seed: int = 1,
    block_size: int = 100,
    kill_at: dict[int, int] | None = None,
    join_at: dict[int, int] | None = None,
    expected: int | None = None,
) -> SendSession:
    rng = random.Random(seed)
    files = [
        FileInfo(f"f{i}.bin", len(b), hashlib.sha256(b).hexdigest()) for i, b in enumerate(blobs)
    ]
    now = 0.0
    sender = SendSession(
        7,
        files,
        Blobs(blobs),
        now=now,
        block_size=block_size,
        expected=expected,
        register_wait=0.5,
        receiver_timeout=1.0,
    )
    address = {id(r): (f"10.0.0.{n + 2}", 5000) for n, r in enumerate(receivers)}
    dead: set[int] = set()
    step = 0
    while sender.phase != "done" and step < 200_000:
        step += 1
        now += 0.001
        for index in range(len(receivers)):
            if kill_at and kill_at.get(index) == step:
                dead.add(index)
        out = sender.tick(now) + sender.next_blocks(20)
        for data, destination in out:
            for index, receiver in enumerate(receivers):
                if index in dead or (join_at and step < join_at.get(index, 0)):
                    continue
                if destination is not None and destination != address[id(receiver)]:
                    continue
                if rng.random() < loss:
                    continue
                for reply, _ in receiver.receive(data, ("10.0.0.1", 4000), now):
                    if rng.random() >= loss:
                        sender.receive(reply, address[id(receiver)], now)
        for index, receiver in enumerate(receivers):
            if index not in dead:
                for reply, _ in receiver.tick(now):
                    sender.receive(reply, address[id(receiver)], now)
    return sender


def _receivers(tmp_path: Path, count: int) -> list[ReceiveSession]:
    result = []
    for n in range(count):
        directory = tmp_path / f"r{n}"
        directory.mkdir()
        result.append(ReceiveSession(100 + n, f"r{n}", DirectoryStorage(directory), now=0.0))
    return result


@pytest.mark.parametrize("loss", [0.0, 0.05, 0.2])
def test_every_receiver_gets_identical_files_under_loss(tmp_path: Path, loss: float) -> None:
    blobs = [os.urandom(25_000), os.urandom(777), b""]
    receivers = _receivers(tmp_path, 3)
    sender = _run(blobs, receivers, loss=loss, expected=3)
    assert all(r["complete"] for r in sender.summary(0)["receivers"])
    for receiver in receivers:
        for index, blob in enumerate(blobs):
            assert (receiver.storage.directory / f"f{index}.bin").read_bytes() == blob
        assert not list(receiver.storage.directory.glob(".*part"))
    if loss:
        assert sender.pass_number >= 2 and sender.blocks_sent > sender.total_blocks


def test_killed_receiver_is_reported_and_others_complete(tmp_path: Path) -> None:
    receivers = _receivers(tmp_path, 3)
    sender = _run([os.urandom(50_000)], receivers, loss=0.02, kill_at={1: 10}, expected=3)
    states = {r["name"]: (r["complete"], r["failed"]) for r in sender.summary(0)["receivers"]}
    assert states["r0"] == (True, None) and states["r2"] == (True, None)
    assert states["r1"] == (False, "stopped answering")
    assert not (receivers[1].storage.directory / "f0.bin").exists()


def test_late_joiner_gets_everything_through_repair(tmp_path: Path) -> None:
    receivers = _receivers(tmp_path, 2)
    blob = os.urandom(200_000)  # 2000 blocks at 20 per step: the pass runs steps 1-100
    # Two expected; the second appears in the middle of the first pass.
    sender = _run([blob], receivers, loss=0.0, join_at={1: 50}, expected=2)
    assert [r["complete"] for r in sender.summary(0)["receivers"]] == [True, True]
    assert (receivers[1].storage.directory / "f0.bin").read_bytes() == blob


def test_corrupted_announce_hash_never_leaves_a_final_file(tmp_path: Path) -> None:
    (receiver,) = _receivers(tmp_path, 1)
    blob = os.urandom(5000)
    files = [FileInfo("f0.bin", len(blob), "1" * 64)]  # the wrong hash ("0" * 64: pending)
    sender = SendSession(
        7, files, Blobs([blob]), now=0.0, block_size=100, expected=1, register_wait=0.1
    )
    now = 0.0
    for _ in range(5000):
        now += 0.001
        for data, _ in sender.tick(now) + sender.next_blocks(50):
            for reply, _ in receiver.receive(data, ("10.0.0.1", 1), now):
                sender.receive(reply, ("10.0.0.2", 5000), now)
        for reply, _ in receiver.tick(now):  # verification runs here
            sender.receive(reply, ("10.0.0.2", 5000), now)
        if sender.phase == "done":
            break
    (state,) = sender.summary(now)["receivers"]
    assert state["failed"] == "sha256 mismatch for f0.bin"
    assert list(receiver.storage.directory.iterdir()) == []


@pytest.mark.parametrize("name", ["a.txt", "tree/a.txt", "tree/sub/.hidden", "t/ü n i/ç"])
def test_relative_paths_are_taken_as_components(name: str) -> None:
    assert safe_path(name) == name.split("/")


@pytest.mark.parametrize(
    "name",
    [
        "..", ".", "", "dir/..", "../etc/passwd", "/abs/path.txt", "a\\b\\c.txt", "a//b",
        "a/./b", "nul\x00.txt", "x/" + "y" * 256, "/".join("d" * 65),
        ".f.bin.0123456789abcdef.mcastkit-part", "t/.f.bin.mcastkit-state",
    ],
)  # fmt: skip
def test_unsafe_paths_are_refused(name: str) -> None:
    """Names that would escape the target, or clash with our own hidden files, are
    refused, never quietly rewritten (the old flattening could merge two files)."""
    with pytest.raises(ValueError):
        safe_path(name)


def test_hostile_datagrams_never_raise(tmp_path: Path) -> None:
    (receiver,) = _receivers(tmp_path, 1)
    rng = random.Random(4)
    for _ in range(2000):
        junk = b"MKT1" + bytes([rng.randrange(1, 10)]) + rng.randbytes(rng.randrange(0, 60))
        receiver.receive(junk, ("10.0.0.9", 1), 0.0)
        assert decode_untrusted(rng.randbytes(rng.randrange(0, 40))) is None or True
    assert receiver.state in ("waiting", "receiving", "failed")


def test_receiver_gives_up_on_a_silent_sender_and_leaves_nothing(tmp_path: Path) -> None:
    (receiver,) = _receivers(tmp_path, 1)
    blob = os.urandom(1000)
    files = [FileInfo("f0.bin", len(blob), hashlib.sha256(blob).hexdigest())]
    sender = SendSession(7, files, Blobs([blob]), now=0.0, block_size=100)
    announce = sender.tick(0.0)[0][0]
    receiver.receive(announce, ("10.0.0.1", 1), 0.0)
    assert receiver.state == "receiving"
    assert receiver.tick(10.0) == [] or receiver.state == "receiving"
    out = receiver.tick(16.0)
    assert receiver.state == "failed" and "went silent" in (receiver.reason or "")
    assert out and decode_untrusted(out[0][0]) is not None
    assert list(receiver.storage.directory.iterdir()) == []


def test_one_status_round_reports_thousands_of_gaps(tmp_path: Path) -> None:
    (receiver,) = _receivers(tmp_path, 1)
    blob = os.urandom(200_000)  # 2000 blocks
    files = [FileInfo("f0.bin", len(blob), hashlib.sha256(blob).hexdigest())]
    sender = SendSession(7, files, Blobs([blob]), now=0.0, block_size=100, expected=1)
    now, delivered = 0.0, 0
    while sender.phase != "done" and now < 60:
        now += 0.001
        for data, _ in sender.tick(now) + sender.next_blocks(100):
            message = decode_untrusted(data)
            if message is not None and message.kind == 4 and sender.pass_number == 0:
                delivered += 1
                if delivered % 2:  # pass 0 loses every other block: 1000 separate gaps
                    continue
            for reply, _ in receiver.receive(data, ("10.0.0.1", 1), now):
                sender.receive(reply, ("10.0.0.2", 5000), now)
        for reply, _ in receiver.tick(now):
            sender.receive(reply, ("10.0.0.2", 5000), now)
    assert sender.summary(now)["receivers"][0]["complete"]
    assert sender.blocks_sent == 3000  # one full pass, then exactly the 1000 missing blocks


def test_the_engine_runs_on_memory_without_touching_a_file() -> None:
    # The storage seam: the receiver engine writes through a sink; here, memory only.
    blobs = [os.urandom(30_000), os.urandom(1234)]
    storages = [MemoryStorage(), MemoryStorage()]
    receivers = [ReceiveSession(100 + n, f"m{n}", s, now=0.0) for n, s in enumerate(storages)]
    sender = _run(blobs, receivers, loss=0.05, expected=2)
    assert all(r["complete"] for r in sender.summary(0)["receivers"])
    for storage in storages:
        assert storage.collect() == {"f0.bin": blobs[0], "f1.bin": blobs[1]}


def test_dense_random_loss_is_repaired_in_a_few_passes() -> None:
    # 20 % random loss over 30,000 blocks leaves about 5,000 separate gaps: far more than the
    # ranges of one status round. Bitmaps (MISSING_MAP) report them all at once, so each pass
    # repairs everything missing and the passes shrink geometrically.
    blob = os.urandom(3_000_000)
    receivers = [ReceiveSession(100, "m", MemoryStorage(), now=0.0)]
    sender = _run([blob], receivers, loss=0.2, seed=5, block_size=100, expected=1)
    assert all(r["complete"] for r in sender.summary(0)["receivers"])
    assert receivers[0].storage.collect() == {"f0.bin": blob}
    assert sender.pass_number <= 7, sender.pass_number
    assert sender.blocks_sent < 30_000 * 1.5  # ~1.25x: no pass resends more than is missing
