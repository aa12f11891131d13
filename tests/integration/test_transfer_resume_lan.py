"""Resume between namespace hosts: a receiver killed halfway gets only the rest next time."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import time
import zlib
from pathlib import Path

from netlab import Host, Lab, wait_for_line


def _receiver(host: Host, directory: Path, *args: str):
    proc = host.start_mcast(
        "recv-file", "--dir", str(directory), "--parents", "--json", "--wait", "30", *args
    )
    wait_for_line(proc.stderr, "waiting for a transfer")
    return proc


def _held(directory: Path) -> int:
    record = json.loads((directory / ".payload.bin.mcastkit-state").read_text())
    return zlib.decompress(base64.b64decode(record["held"])).count(1)


def _wait_for(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _killed_partway(
    sender: Host, receiver: Host, source: Path, target: Path, rate: str, after: float
) -> dict:
    """Send ``source`` at ``rate`` to a receiver killed ``after`` seconds into the data (its
    partial and record stay); the sender's summary."""
    proc = _receiver(receiver, target)
    first = sender.start_mcast(
        "send-file", str(source), "--json", "--receivers", "1", "--rate", rate,
        "--receiver-timeout", "2",
    )  # fmt: skip
    _wait_for(target / ".payload.bin.mcastkit-state")
    time.sleep(after)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    return json.loads(first.communicate(timeout=60)[0])


def test_a_receiver_killed_halfway_gets_only_the_missing_blocks(lab: Lab, tmp_path: Path) -> None:
    sender, receiver = lab.lan(2)
    data = os.urandom(40_000_000)
    source = tmp_path / "payload.bin"
    source.write_bytes(data)
    target = tmp_path / "in"
    # killed after about half of the 3.2 s the file takes at 100 Mbit/s
    summary = _killed_partway(sender, receiver, source, target, "100M", 1.0)
    assert not summary["ok"] and summary["receivers"][0]["failed"] == "stopped answering"
    held = _held(target)
    blocks = summary["blocks"]
    assert 0.2 * blocks < held < 0.9 * blocks, (held, blocks)
    assert not (target / "payload.bin").exists()

    proc = _receiver(receiver, target)
    done = sender.mcast("send-file", str(source), "--json", "--receivers", "1", timeout=60)
    again = json.loads(done.stdout)
    result = json.loads(proc.communicate(timeout=30)[0])
    assert done.returncode == 0 and again["ok"], again
    assert result["state"] == "complete" and result["resumed_blocks"] == held
    assert again["receivers"][0]["resumed"]
    # The first pass sent exactly what was missing; later passes only repair this
    # transfer's own losses (a busy machine's receiver drops some at full rate).
    assert again["first_pass_blocks"] == blocks - held, again
    assert again["blocks_sent"] >= blocks - held
    assert hashlib.sha256((target / "payload.bin").read_bytes()).digest() == (
        hashlib.sha256(data).digest()
    )
    assert sorted(p.name for p in target.iterdir()) == ["payload.bin"]


def test_an_interrupted_receiver_says_what_it_kept_and_no_resume_keeps_nothing(
    lab: Lab, tmp_path: Path
) -> None:
    sender, receiver = lab.lan(2)
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(30_000_000))
    for label, extra in (("kept", ()), ("none", ("--no-resume",))):
        target = tmp_path / label
        proc = receiver.start_mcast("recv-file", "--dir", str(target), "--parents", *extra)
        wait_for_line(proc.stderr, "waiting for a transfer")
        send = sender.start_mcast(
            "send-file", str(source), "--receivers", "1", "--rate", "100M",
            "--receiver-timeout", "2",
        )  # fmt: skip
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        send.communicate(timeout=60)
        assert proc.returncode == 130, err
        if label == "kept":
            assert "kept" in out and "only the rest is sent" in out, out
            names = sorted(p.name for p in target.iterdir())
            assert names[-1] == ".payload.bin.mcastkit-state" and len(names) == 2, names
        else:
            assert list(target.iterdir()) == []


def test_a_nearly_full_disk_still_resumes_into_the_space_its_partial_holds(
    lab: Lab, tmp_path: Path
) -> None:
    sender, receiver = lab.lan(2)
    data = os.urandom(8 << 20)
    source = tmp_path / "payload.bin"
    source.write_bytes(data)
    target = tmp_path / "small"
    target.mkdir()
    # 12 MiB: room for the 8 MiB file once, not for a second 8 MiB beside its partial.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(target)], check=True)
    try:
        # killed well before the 3.4 s the file takes at 20 Mbit/s
        _killed_partway(sender, receiver, source, target, "20M", 0.8)
        held = _held(target)
        assert held > 0
        free = os.statvfs(target).f_bavail * os.statvfs(target).f_frsize
        assert free < len(data)  # a fresh copy would not fit now

        proc = _receiver(receiver, target)
        done = sender.mcast("send-file", str(source), "--json", "--receivers", "1", timeout=60)
        result = json.loads(proc.communicate(timeout=30)[0])
        assert done.returncode == 0, done.stdout
        assert result["state"] == "complete" and result["resumed_blocks"] == held
        assert (target / "payload.bin").read_bytes() == data
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)
