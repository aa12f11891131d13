"""Directory trees between namespace hosts: nested and empty directories, names that try to
escape, links that are not followed, sync that skips what is already there, modes and
mtimes kept."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from netlab import Host, Lab, wait_for_line

from mcastkit.transfer.protocol import ANNOUNCE, FileInfo, encode_announces, head

GROUP = ("239.255.77.83", 5083)


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and directory (None) under ``root``, by relative path."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.name.endswith((".mcastkit-part", ".mcastkit-state")):
            found[name] = b"LEFTOVER"
        elif path.is_dir():
            found[name] = None
        else:
            found[name] = path.read_bytes()
    return found


def _make_tree(base: Path) -> Path:
    tree = base / "site"
    (tree / "a" / "b" / "c").mkdir(parents=True)
    (tree / "empty" / "deeper-empty").mkdir(parents=True)
    (tree / "a" / "one.bin").write_bytes(os.urandom(300_000))
    (tree / "a" / "b" / "two.txt").write_text("two\n")
    (tree / "a" / "b" / "c" / "zero").write_bytes(b"")
    (tree / "ü n i c ø d e.txt").write_text("names with spaces and accents\n")
    (tree / ".hidden").write_text("dot files travel too\n")
    for n in range(120):  # enough entries for several announce datagrams
        (tree / "many" / f"file-{n:03d}-with-a-longish-name.dat").parent.mkdir(exist_ok=True)
        (tree / "many" / f"file-{n:03d}-with-a-longish-name.dat").write_bytes(bytes([n]) * n)
    (tree / "a" / "script.sh").write_text("#!/bin/sh\n")
    (tree / "a" / "script.sh").chmod(0o750)
    os.utime(tree / "a" / "b" / "two.txt", (1e9, 1e9))
    secret = base / "outside-secret"
    secret.write_text("must not travel")
    (tree / "link-out").symlink_to(secret)
    (tree / "dir-link").symlink_to(base)
    return tree


def _receiver(host: Host, directory: Path, *args: str):
    proc = host.start_mcast(
        "recv-file", "--dir", str(directory), "--parents", "--json", "--wait", "20", *args
    )
    wait_for_line(proc.stderr, "waiting for a transfer")
    return proc


def test_a_tree_arrives_exactly_and_links_stay_home(lab: Lab, tmp_path: Path) -> None:
    sender, receiver = lab.lan(2)
    tree = _make_tree(tmp_path / "src")
    target = tmp_path / "dst"
    proc = _receiver(receiver, target, "--preserve")
    done = sender.mcast("send-file", str(tree), "--json", "--receivers", "1", timeout=60)
    summary = json.loads(done.stdout)
    result = json.loads(proc.communicate(timeout=30)[0])
    assert done.returncode == 0 and summary["ok"], summary
    assert sorted(summary["skipped"]) == ["site/dir-link", "site/link-out"]
    assert result["state"] == "complete"
    expected = {
        name: data
        for name, data in _tree(tree.parent).items()
        if not name.endswith(("link-out", "dir-link")) and name != "outside-secret"
    }
    assert _tree(target) == expected
    assert "must not travel" not in json.dumps(result)
    assert (target / "site" / "a" / "script.sh").stat().st_mode & 0o777 == 0o750
    assert (target / "site" / "a" / "b" / "two.txt").stat().st_mtime == 1e9


def test_sync_skips_files_already_there_and_replaces_changed_ones(lab: Lab, tmp_path: Path) -> None:
    sender, receiver = lab.lan(2)
    tree = tmp_path / "src" / "data"
    tree.mkdir(parents=True)
    same = os.urandom(2_000_000)
    (tree / "same.bin").write_bytes(same)
    (tree / "changed.bin").write_bytes(os.urandom(1_000_000))
    (tree / "new.bin").write_bytes(os.urandom(500_000))
    target = tmp_path / "dst"
    (target / "data").mkdir(parents=True)
    (target / "data" / "same.bin").write_bytes(same)
    (target / "data" / "changed.bin").write_bytes(os.urandom(1_000_000))  # same size, other
    before = (target / "data" / "same.bin").stat().st_ino
    proc = _receiver(receiver, target, "--sync")  # the receiver lets changed files go
    done = sender.mcast("send-file", str(tree), "--sync", "--json", "--receivers", "1")
    summary = json.loads(done.stdout)
    result = json.loads(proc.communicate(timeout=30)[0])
    assert done.returncode == 0 and summary["ok"], summary
    assert result["up_to_date"] == ["data/same.bin"]
    blocks_same = -(-len(same) // 1450)
    assert summary["first_pass_blocks"] == summary["blocks"] - blocks_same, summary
    assert (target / "data" / "same.bin").stat().st_ino == before  # kept, not rewritten
    for name in ("same.bin", "changed.bin", "new.bin"):
        assert (target / "data" / name).read_bytes() == (tree / name).read_bytes()
    assert sorted(p.name for p in (target / "data").iterdir()) == [
        "changed.bin",
        "new.bin",
        "same.bin",
    ]


def _hostile_announce(session: int, names: list[str]) -> list[bytes]:
    files = [FileInfo(name, 3, hashlib.sha256(b"bad").hexdigest()) for name in names]
    datagrams = encode_announces(session, files, 1000, sent_at=time.time())
    assert datagrams[0][: len(head(ANNOUNCE, session))] == head(ANNOUNCE, session)
    return datagrams


def test_hostile_names_from_the_network_are_refused(lab: Lab, tmp_path: Path) -> None:
    """A sender of our own making announces names that climb out, absolute paths, our own
    temporary names, a file and a directory of one name: the receiver refuses each
    announce and writes nothing anywhere."""
    attacker, receiver = lab.lan(2)
    target = tmp_path / "dst"
    hostile = [
        ["../escape.txt"],
        ["/etc/cron.d/evil"],
        ["ok/../../escape.txt"],
        ["a/.b.0123456789abcdef.mcastkit-part"],
        ["dup.txt", "dup.txt"],
        ["x", "x/y"],
        ["back\\slash"],
    ]
    script = f"""
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
datagrams = [bytes.fromhex(h) for h in sys.argv[1:]]
for _ in range(20):
    for datagram in datagrams:
        sock.sendto(datagram, {GROUP!r})
    time.sleep(0.05)
"""
    for session, names in enumerate(hostile, 1):
        proc = _receiver(receiver, target)
        datagrams = [d.hex() for d in _hostile_announce(session, names)]
        sent = attacker.run("python3", "-c", script, *datagrams)
        assert sent.returncode == 0, sent.stderr
        proc.send_signal(2)
        out, err = proc.communicate(timeout=20)
        result = json.loads(out)
        assert "Traceback" not in err
        if result["state"] == "failed":  # refused with a reason the sender is told
            assert "cannot prepare files" in result["reason"], result
        else:
            assert result["state"] == "waiting", result
        assert not (tmp_path / "escape.txt").exists()
        assert _tree(target) == {}, _tree(target)


def test_a_senders_sync_keeps_what_is_the_same_and_replaces_nothing(
    lab: Lab, tmp_path: Path
) -> None:
    # Before (issue 22, class 4): a sender's --sync made the receiver replace a file that
    # differed, without --overwrite or --sync of its own.
    sender, receiver = lab.lan(2)
    tree = tmp_path / "src" / "data"  # a directory goes under its own name: data/...
    tree.mkdir(parents=True)
    (tree / "changed.bin").write_bytes(os.urandom(300_000))
    target = tmp_path / "dst"
    (target / "data").mkdir(parents=True)
    mine = os.urandom(300_000)
    (target / "data" / "changed.bin").write_bytes(mine)
    proc = _receiver(receiver, target)
    done = sender.mcast("send-file", str(tree), "--sync", "--json", "--receivers", "1")
    result = json.loads(proc.communicate(timeout=30)[0])
    assert result["state"] == "failed", (done.stdout, result)
    assert done.returncode == 1, done.stdout
    assert "exists with other content" in result["reason"] and "--sync" in result["reason"]
    assert (target / "data" / "changed.bin").read_bytes() == mine
    assert sorted(p.name for p in (target / "data").iterdir()) == ["changed.bin"]  # no debris
