"""Hostile announces and planted files against ``mcast recv-file`` (real CLI, loopback).

Before: a symlink planted at the predictable temp name got a file outside --dir overwritten; a
1 TB announce cost 690 MB of RAM; 16-byte blocks or a 2**64 size crashed it with a traceback
and left the temp file behind; tiny spaced-out blocks allocated disk 105x faster than the
traffic; nothing checked free space.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ISOLATED

from mcastkit.transfer.protocol import FileInfo
from mcastkit.transfer.storage import FileSink

GROUP = ("239.255.72.72", 7272)
pytestmark = pytest.mark.skipif(not ISOLATED, reason="needs the private network namespace")


def _announce(session: int, files: list[tuple[str, int]], block_size: int) -> bytes:
    """ANNOUNCE by hand: "MKT1" | type 1 | 3 pad | session (u64) | JSON file list."""
    body = json.dumps(
        {
            "block_size": block_size,
            "files": [{"name": n, "size": s, "sha256": "ab" * 32} for n, s in files],
        }
    ).encode()
    return struct.pack("!4sB3xQ", b"MKT1", 1, session) + body


def _recv_file(directory: Path, *announces: bytes, extra: tuple[str, ...] = ()) -> tuple:
    proc = subprocess.Popen(
        [
            "prlimit",
            f"--as={1 << 30}",
            sys.executable,
            "-m",
            "mcastkit",
            "recv-file",
            "--group",
            f"{GROUP[0]}:{GROUP[1]}",
            "--iface",
            "lo",
            "--dir",
            str(directory),
            "--json",
            "--wait",
            "2",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.8)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    for data in announces:
        sock.sendto(data, GROUP)
    out, err = proc.communicate(timeout=30)
    sock.close()
    return proc.returncode, json.loads(out), err


def test_a_terabyte_announce_is_refused_cheaply(tmp_path: Path) -> None:
    code, summary, err = _recv_file(tmp_path, _announce(1, [("big.bin", 1 << 40)], 1450))
    assert code == 1 and summary["state"] == "failed"
    assert "over the" in summary["reason"] and "--max-size" in summary["reason"]
    assert summary["peak_rss_mb"] < 100  # before: 690 MB of zero-filled bitmap
    assert list(tmp_path.iterdir()) == []
    assert "Traceback" not in err


def test_tiny_blocks_and_impossible_sizes_never_crash_or_leave_files(tmp_path: Path) -> None:
    announces = [
        _announce(2, [("tiny.bin", 1 << 30)], 16),  # 16-byte blocks: refused by the decoder
        _announce(3, [("huge.bin", 2**64)], 1450),  # beyond any file: refused by the decoder
    ]
    code, summary, err = _recv_file(tmp_path, *announces)
    assert code == 1 and summary["state"] == "waiting"  # neither was taken as a transfer
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
    # Blocks at the minimum size for a large file: refused for the bitmap they would cost.
    code, summary, err = _recv_file(
        tmp_path, _announce(4, [("small-blocks.bin", 15 << 30)], 64), extra=("--max-size", "16G")
    )
    assert code == 1 and "blocks this small" in summary["reason"], summary
    assert list(tmp_path.iterdir()) == [] and "Traceback" not in err


def test_an_announce_larger_than_the_free_space_is_refused(tmp_path: Path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    size = free + (1 << 30)
    code, summary, _ = _recv_file(
        tmp_path, _announce(5, [("fill.bin", size)], 1450), extra=("--max-size", f"{size}")
    )
    assert code == 1 and "not enough space" in summary["reason"]
    assert list(tmp_path.iterdir()) == []


def test_a_planted_symlink_is_never_followed(tmp_path: Path, monkeypatch) -> None:
    outside = tmp_path / "precious"
    outside.write_bytes(b"keep me")
    target = tmp_path / "incoming"
    target.mkdir()
    # Even if an attacker guessed the random temp name, the exclusive, no-follow open fails.
    monkeypatch.setattr("secrets.token_hex", lambda _n: "guessed")
    (target / ".f.bin.guessed.mcastkit-part").symlink_to(outside)
    with pytest.raises(FileExistsError):
        FileSink(target, [FileInfo("f.bin", 10, "ab" * 32)])
    assert outside.read_bytes() == b"keep me"
    monkeypatch.undo()
    # And the names are not predictable from the announce: two sinks, two names.
    first = FileSink(target, [FileInfo("f.bin", 10, "ab" * 32)])
    second = FileSink(target, [FileInfo("f.bin", 10, "ab" * 32)])
    assert first.temps[0] != second.temps[0]
    first.discard()
    second.discard()


def test_space_is_allocated_up_front_not_by_the_traffic(tmp_path: Path) -> None:
    sink = FileSink(tmp_path, [FileInfo("f.bin", 8 << 20, "ab" * 32)])
    try:
        allocated = os.stat(sink.temps[0]).st_blocks * 512
        assert allocated >= 8 << 20  # spaced-out blocks cannot make it grow further
        sink.write(0, (4 << 20) + 7, b"x" * 64)
        assert os.stat(sink.temps[0]).st_blocks * 512 == allocated
    finally:
        sink.discard()
    assert list(tmp_path.iterdir()) == []


def test_what_a_killed_receiver_held_is_given_back_by_the_next_one(tmp_path: Path) -> None:
    # Before (issue 22, class 5): a receiver killed before its first record kept every
    # announced file's temporary file, allocated at its full size, for good.
    receiver = subprocess.Popen(
        [sys.executable, "-m", "mcastkit", "recv-file", "--group", f"{GROUP[0]}:{GROUP[1]}",
         "--iface", "lo", "--dir", str(tmp_path), "--wait", "20"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert receiver.stderr is not None
    assert "waiting for a transfer" in receiver.stderr.readline()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    files = [(f"fill{n}.bin", 32 << 20) for n in range(3)]
    deadline = time.monotonic() + 10
    while len(list(tmp_path.glob(".fill*.mcastkit-part"))) < 3:
        assert time.monotonic() < deadline, "the announce was never taken"
        sock.sendto(_announce(11, files, 1450), GROUP)
        time.sleep(0.1)
    receiver.kill()
    receiver.communicate(timeout=10)
    orphans = list(tmp_path.glob(".fill*.mcastkit-part"))
    assert sum(p.stat().st_blocks * 512 for p in orphans) >= 3 * (32 << 20)
    then = time.time() - 120  # a couple of minutes later
    for path in orphans:
        os.utime(path, (then, then))
    # The next announce looks at the directory before anything else (this one is then
    # refused for space: the quickest way to an end).
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    size = free + (1 << 30)
    code, summary, err = _recv_file(
        tmp_path, _announce(12, [("next.bin", size)], 1450), extra=("--max-size", f"{size}")
    )
    assert code == 1 and "not enough space" in summary["reason"] and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # the killed run's 96 MiB went with this one
    sock.close()
