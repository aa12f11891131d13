"""Resume: partial files and their records, between engines on a real directory (fake time).

The directory is hostile ground: a planted or damaged record must never be taken, never
raise, and never put a wrong file in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from blobs import Blobs
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastkit.events import ReceiveState, SendPhase
from mcastkit.transfer.engine import ReceiveSession, SendSession
from mcastkit.transfer.partial import PARTIAL_MAX_AGE, find_partial, state_path
from mcastkit.transfer.protocol import PENDING_DIGEST, FileInfo
from mcastkit.transfer.storage import DirectoryStorage

SENDER = ("10.0.0.1", 4000)
RECEIVER = ("10.0.0.2", 5000)
BLOCK = 100


def _info(name: str, blob: bytes, *, pending: bool = False) -> FileInfo:
    return FileInfo(
        name, len(blob), PENDING_DIGEST if pending else hashlib.sha256(blob).hexdigest()
    )


def _run(
    directory: Path,
    blob: bytes,
    *,
    stop_after: int | None = None,
    pending_until: float | None = None,
    session: int = 7,
    sync: bool = False,
    replace: bool = False,
    trust: str = "",
) -> tuple[SendSession, ReceiveSession]:
    """One transfer of ``blob`` as f.bin; the receiver stops (interrupted) once it holds
    ``stop_after`` blocks. With ``pending_until`` the digest follows the announce then."""
    files = [_info("f.bin", blob, pending=pending_until is not None)]
    sender = SendSession(
        session,
        files,
        Blobs([blob]),
        now=0.0,
        block_size=BLOCK,
        expected=1,
        register_wait=0.5,
        sync=sync,
    )
    storage = DirectoryStorage(directory, resume=True, overwrite=replace, trust=trust)
    receiver = ReceiveSession(9, "r", storage, now=0.0)
    now = 0.0
    while sender.phase != SendPhase.DONE and now < 30:
        if pending_until is not None and now >= pending_until:
            sender.set_digests([hashlib.sha256(blob).hexdigest()])
            pending_until = None
        to_receiver = sender.tick(now) + sender.next_blocks(20)
        to_sender = receiver.tick(now)
        while to_receiver or to_sender:
            for data, destination in to_receiver:
                if destination in (None, RECEIVER):
                    to_sender += receiver.receive(data, SENDER, now)
            to_receiver = []
            for reply, _ in to_sender:
                to_receiver += sender.receive(reply, RECEIVER, now)
            to_sender = []
        if stop_after is not None and receiver.received >= stop_after:
            receiver.suspend()
            break
        now += 0.01
    return sender, receiver


def _hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_an_interrupted_receiver_resumes_and_only_the_rest_is_sent(tmp_path: Path) -> None:
    blob = os.urandom(100 * BLOCK)
    _, first = _run(tmp_path, blob, stop_after=50)
    assert first.kept == first.received >= 50
    names = _hidden(tmp_path)
    assert len(names) == 2 and names[0].endswith(".mcastkit-part")
    assert names[1] == ".f.bin.mcastkit-state"
    sender, second = _run(tmp_path, blob, session=8)
    assert second.state == ReceiveState.COMPLETE
    assert second.resumed == first.kept
    assert sender.blocks_sent == 100 - first.kept  # pass 0 skipped what it held
    assert (tmp_path / "f.bin").read_bytes() == blob
    assert _hidden(tmp_path) == ["f.bin"]  # record and partial gone


def test_resume_waits_for_digests_that_follow_the_announce(tmp_path: Path) -> None:
    blob = os.urandom(100 * BLOCK)
    _, first = _run(tmp_path, blob, stop_after=60)
    sender, second = _run(tmp_path, blob, session=8, pending_until=0.8)
    assert second.state == ReceiveState.COMPLETE and second.resumed == first.kept
    assert sender.blocks_sent == 100 - first.kept
    assert (tmp_path / "f.bin").read_bytes() == blob


def test_a_partial_of_other_content_is_not_taken(tmp_path: Path) -> None:
    old, new = os.urandom(100 * BLOCK), os.urandom(100 * BLOCK)
    _run(tmp_path, old, stop_after=70)
    sender, second = _run(tmp_path, new, session=8)
    assert second.state == ReceiveState.COMPLETE and second.resumed == 0
    assert sender.blocks_sent >= 100
    assert (tmp_path / "f.bin").read_bytes() == new
    assert _hidden(tmp_path) == ["f.bin"]


def test_a_partial_with_corrupted_blocks_is_received_again_never_a_wrong_file(
    tmp_path: Path,
) -> None:
    """A record that lies (the disk lost data, or someone wrote into the partial) costs the
    file's blocks once more, never a wrong file. Before: the transfer failed."""
    blob = os.urandom(100 * BLOCK)
    _run(tmp_path, blob, stop_after=50)
    part = next(p for p in tmp_path.iterdir() if p.name.endswith(".mcastkit-part"))
    with part.open("r+b") as handle:
        handle.write(b"\xff" * BLOCK)  # block 0, recorded as held
    _, second = _run(tmp_path, blob, session=8)
    assert second.state == ReceiveState.COMPLETE and second.refetched_blocks == 100
    assert (tmp_path / "f.bin").read_bytes() == blob
    assert _hidden(tmp_path) == ["f.bin"]


def test_a_file_that_never_verifies_fails_after_three_more_tries(tmp_path: Path) -> None:
    """A sender (or a forger) whose blocks never make the announced sha256: the file is
    received again three times at most, then the transfer fails, nothing left behind."""
    blob = os.urandom(100 * BLOCK)
    files = [FileInfo("f.bin", len(blob), "ab" * 32)]  # a digest no content has
    sender = SendSession(7, files, Blobs([blob]), now=0.0, block_size=BLOCK, expected=1,
                         register_wait=0.5)  # fmt: skip
    receiver = ReceiveSession(9, "r", DirectoryStorage(tmp_path, resume=True), now=0.0)
    now = 0.0
    while sender.phase != SendPhase.DONE and now < 60:
        to_receiver = sender.tick(now) + sender.next_blocks(50)
        to_sender = receiver.tick(now)
        while to_receiver or to_sender:
            for data, _ in to_receiver:
                to_sender += receiver.receive(data, SENDER, now)
            to_receiver = []
            for reply, _ in to_sender:
                to_receiver += sender.receive(reply, RECEIVER, now)
            to_sender = []
        now += 0.01
    assert receiver.state == ReceiveState.FAILED and "sha256 mismatch" in (receiver.reason or "")
    assert receiver.refetches == 3 and receiver.refetched_blocks == 300
    assert _hidden(tmp_path) == []


@pytest.mark.parametrize(
    "plant",
    ["symlink-part", "outside-part", "hardlinked-part", "symlink-state", "wrong-size", "huge"],
)
def test_planted_records_are_ignored(tmp_path: Path, plant: str) -> None:
    blob = os.urandom(100 * BLOCK)
    info = _info("f.bin", blob)
    target = tmp_path / "dir"
    target.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"v" * len(blob))
    part = ".f.bin.0123456789abcdef.mcastkit-part"
    record = {
        "mcastkit-partial": 1,
        "part": part,
        "size": len(blob),
        "sha256": info.sha256,
        "block_size": BLOCK,
        "held": "eJxjZBgFgw8AAGQAAQ==",  # not even the right length
    }
    import base64
    import zlib

    record["held"] = base64.b64encode(zlib.compress(b"\x01" * 100)).decode()
    if plant == "symlink-part":
        (target / part).symlink_to(victim)
    elif plant == "outside-part":
        record["part"] = "../victim"
    elif plant == "hardlinked-part":
        os.link(victim, target / part)
    elif plant == "wrong-size":
        (target / part).write_bytes(b"w" * 10)
    else:
        (target / part).write_bytes(b"w" * len(blob))
    if plant == "symlink-state":
        (tmp_path / "elsewhere").write_text(json.dumps(record))
        state_path(target, "f.bin").symlink_to(tmp_path / "elsewhere")
    elif plant == "huge":
        state_path(target, "f.bin").write_text(json.dumps(record) + " " * (5 << 20))
    else:
        state_path(target, "f.bin").write_text(json.dumps(record))
    assert find_partial(target, "f.bin", info) is None
    _, receiver = _run(target, blob)
    assert receiver.state == ReceiveState.COMPLETE and receiver.resumed == 0
    assert (target / "f.bin").read_bytes() == blob
    assert victim.read_bytes() == b"v" * len(blob)


@settings(max_examples=200, deadline=None)
@given(
    record=st.dictionaries(
        st.sampled_from(["mcastkit-partial", "part", "size", "sha256", "block_size", "held"]),
        st.one_of(st.integers(-5, 1 << 40), st.text(max_size=80), st.none(), st.booleans()),
    ),
    raw=st.binary(max_size=200),
)
def test_any_record_is_read_without_raising(tmp_path_factory, record: dict, raw: bytes) -> None:
    directory = tmp_path_factory.mktemp("records")
    info = FileInfo("f.bin", 1000, "ab" * 32)
    state_path(directory, "f.bin").write_text(json.dumps(record))
    assert find_partial(directory, "f.bin", info) is None or True
    state_path(directory, "f.bin").write_bytes(raw)
    assert find_partial(directory, "f.bin", info) is None


def test_sync_with_everything_in_place_sends_nothing(tmp_path: Path) -> None:
    """A receiver that already holds every file completes at once; the sender neither
    waits for its report nor sends a block (it used to send them all after 2 s)."""
    blob = os.urandom(100 * BLOCK)
    (tmp_path / "f.bin").write_bytes(blob)
    before = (tmp_path / "f.bin").stat().st_ino
    sender, receiver = _run(tmp_path, blob, sync=True)
    assert receiver.state == ReceiveState.COMPLETE and receiver.up_to_date == ["f.bin"]
    assert sender.first_pass_blocks == 0 and sender.blocks_sent == 0
    assert sender.summary(0.0)["receivers"][0]["complete"]
    assert (tmp_path / "f.bin").stat().st_ino == before
    assert _hidden(tmp_path) == ["f.bin"]


def test_sync_sends_only_the_files_that_changed(tmp_path: Path) -> None:
    blob = os.urandom(100 * BLOCK)
    (tmp_path / "f.bin").write_bytes(os.urandom(100 * BLOCK))  # same size, other content
    sender, receiver = _run(tmp_path, blob, sync=True, replace=True)  # recv-file --sync
    assert receiver.state == ReceiveState.COMPLETE and receiver.up_to_date == []
    assert sender.first_pass_blocks == 100
    assert (tmp_path / "f.bin").read_bytes() == blob


def test_a_senders_sync_never_replaces_a_file_the_receiver_did_not_give_up(
    tmp_path: Path,
) -> None:
    # Before (issue 22, class 4): the sender's --sync made every receiver replace files
    # that differed, --overwrite or not (a replayed old transfer rolled a file back).
    blob = os.urandom(100 * BLOCK)
    mine = os.urandom(100 * BLOCK)
    (tmp_path / "f.bin").write_bytes(mine)
    _sender, receiver = _run(tmp_path, blob, sync=True)
    assert receiver.state == ReceiveState.FAILED
    assert "exists with other content" in (receiver.reason or "")
    assert (tmp_path / "f.bin").read_bytes() == mine
    assert _hidden(tmp_path) == ["f.bin"]  # nothing left behind


def test_a_partial_is_never_taken_over_across_trust_levels(tmp_path: Path) -> None:
    # Before (issue 22, class 9): a partial written by an unauthenticated transfer was
    # adopted by a later sealed, signed one (its blocks then fed the authenticated file).
    blob = os.urandom(100 * BLOCK)
    _, first = _run(tmp_path, blob, stop_after=50, trust="open")
    assert first.kept >= 50
    sender, second = _run(tmp_path, blob, session=8, trust="sealed/signed")
    assert second.state == ReceiveState.COMPLETE and second.resumed == 0
    assert sender.blocks_sent >= 100  # everything sent again, nothing adopted
    assert (tmp_path / "f.bin").read_bytes() == blob
    (tmp_path / "again").mkdir()
    _, third = _run(tmp_path / "again", blob, stop_after=50, trust="sealed/signed")
    _, fourth = _run(tmp_path / "again", blob, session=9, trust="sealed/signed")
    assert fourth.resumed == third.kept  # the same level resumes as before


def test_a_kept_partial_holds_only_the_space_of_what_arrived(tmp_path: Path) -> None:
    # Before (issue 22, class 5): a partial kept for resume stayed allocated at its full
    # announced size (an announce sized to the free space, a few blocks sent, then silence).
    blob = os.urandom(2000 * BLOCK)
    _, first = _run(tmp_path, blob, stop_after=20)
    (part,) = [p for p in tmp_path.iterdir() if p.name.endswith(".mcastkit-part")]
    facts = part.stat()
    assert facts.st_size == len(blob)  # the size stays: a later transfer resumes into it
    assert facts.st_blocks * 512 < 3 * first.kept * BLOCK + (64 << 10)  # not 2,000 blocks


def test_partials_not_resumed_for_a_week_are_removed(tmp_path: Path) -> None:
    blob = os.urandom(100 * BLOCK)
    _run(tmp_path, blob, stop_after=50)
    record = tmp_path / ".f.bin.mcastkit-state"
    week_ago = time.time() - PARTIAL_MAX_AGE - 60
    os.utime(record, (week_ago, week_ago))
    other = [_info("g.bin", os.urandom(10 * BLOCK))]  # any later transfer there looks
    DirectoryStorage(tmp_path, resume=True).open(other).discard()
    assert _hidden(tmp_path) == []  # record and partial gone: nothing kept for good


def test_a_record_half_written_by_a_killed_receiver_is_cleaned_up(tmp_path: Path) -> None:
    # A receiver killed inside save_state leaves its temporary copy of the record (seen in
    # CI: '.payload.bin.mcastkit-state.9547e5de.tmp' beside the finished file).
    blob = os.urandom(100 * BLOCK)
    _run(tmp_path, blob, stop_after=50)  # interrupted: a record kept
    (tmp_path / ".f.bin.mcastkit-state.9547e5de.tmp").write_text("{")  # then killed mid-save
    (tmp_path / ".f.bin.mcastkit-state.notours.tmp").write_text("kept: not our name")
    _, receiver = _run(tmp_path, blob, session=8)  # resumed to the end
    assert receiver.state == ReceiveState.COMPLETE and receiver.resumed
    assert _hidden(tmp_path) == [".f.bin.mcastkit-state.notours.tmp", "f.bin"]


def _as_if_killed(directory: Path, files: list[FileInfo], ago: float = 120.0) -> list[Path]:
    """A receiver killed before its first record: its temporary files stay, nobody holds
    them (the kernel drops a dead process's locks), last touched ``ago`` seconds back."""
    sink = DirectoryStorage(directory, resume=True).open(files)
    temps = [t for t in sink.temps if t is not None]
    for fd in sink.handles:
        os.close(fd)  # what the kernel does at the kill: no keep(), no discard()
    then = time.time() - ago
    for temp in temps:
        os.utime(temp, (then, then))
    return temps


def test_a_killed_receivers_unrecorded_partials_go_with_the_next_transfer(tmp_path: Path) -> None:
    # Before (issue 22, class 5): a receiver killed before its first checkpoint left every
    # file's temporary file, allocated at its full size, for good.
    files = [_info(f"f{n}.bin", os.urandom(50 * BLOCK)) for n in range(3)]
    orphans = _as_if_killed(tmp_path, files)
    assert len(orphans) == 3 and all(p.exists() for p in orphans)
    running = DirectoryStorage(tmp_path, resume=True).open([_info("busy.bin", b"x" * 500)])
    (busy,) = running.temps
    assert busy is not None
    old = time.time() - 3600
    os.utime(busy, (old, old))  # old, but a live transfer holds it
    young = _as_if_killed(tmp_path, [_info("young.bin", b"y" * 500)], ago=1.0)
    _, receiver = _run(tmp_path, os.urandom(100 * BLOCK))
    assert receiver.state == ReceiveState.COMPLETE
    assert not any(p.exists() for p in orphans)
    assert busy.exists() and young[0].exists()  # held, or just made: never taken
    running.discard()


def test_kept_partials_over_the_space_cap_go_oldest_first(tmp_path: Path) -> None:
    blob = os.urandom(300 * BLOCK)
    for number, age in ((1, 300.0), (2, 200.0), (3, 100.0)):
        (tmp_path / f"d{number}").mkdir()
        _run(tmp_path / f"d{number}", blob, stop_after=150, session=number)
        record = tmp_path / f"d{number}" / ".f.bin.mcastkit-state"
        then = time.time() - age
        os.utime(record, (then, then))
        (tmp_path / f"d{number}" / ".f.bin.mcastkit-state").rename(
            tmp_path / f".f{number}.bin.mcastkit-state"
        )
    # Three partials side by side in one directory, each holding what arrived.
    for number in (1, 2, 3):
        (part,) = (tmp_path / f"d{number}").glob("*.mcastkit-part")
        record = tmp_path / f".f{number}.bin.mcastkit-state"
        data = json.loads(record.read_text())
        data["part"] = f".f{number}.bin.{part.name.split('.')[3]}.mcastkit-part"
        part.rename(tmp_path / data["part"])
        stamp = record.stat().st_mtime
        record.write_text(json.dumps(data))
        os.utime(record, (stamp, stamp))
    held = sum(p.stat().st_blocks * 512 for p in tmp_path.glob("*.mcastkit-part"))
    assert held >= 3 * 100 * BLOCK
    storage = DirectoryStorage(tmp_path, resume=True, max_partials=held * 2 // 3)
    storage.open([_info("g.bin", b"z" * 500)]).discard()
    left = sorted(p.name.split(".")[1] for p in tmp_path.glob("*.mcastkit-part"))
    assert left in (["f2", "f3"], ["f3"])  # the oldest went first, until under the cap
    assert not (tmp_path / ".f1.bin.mcastkit-state").exists()


def test_a_finished_file_takes_an_older_transfers_partial_of_it_along(tmp_path: Path) -> None:
    blob = os.urandom(100 * BLOCK)
    _run(tmp_path, blob, stop_after=50)  # a partial of f.bin kept
    (tmp_path / "f.bin").write_bytes(blob)  # then the file came some other way
    _, receiver = _run(tmp_path, blob, session=8, sync=True, replace=True)
    assert receiver.state == ReceiveState.COMPLETE
    assert _hidden(tmp_path) == ["f.bin"]  # before: the partial and its record stayed
