"""Hostile senders of file transfers (real CLI, namespace hosts): a forged block in a signed,
unsealed transfer; a sender's --sync against a receiver's own file.

Before (issue 22, class 9): with ``recv-file --trust`` but no group key, one forged DATA
datagram (the session id is in the clear) failed the whole transfer at the sha256 check. Now
a file whose sha256 does not match is received again (three times at most): the forgery costs
that file's blocks once more, and the right file is written.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from netlab import Lab, joined_on_the_wire, wait_for_line

from mcastkit.keyfiles import write_signing_key

GROUP = "239.255.75.75:7575"

# The attacker joins the group, reads the session id, file index and block length off the
# first DATA datagram (docs/protocol.md: "MKT1", kind 4, pad, session, file, block), and at
# once sends a block far ahead of the sender's, full of garbage, so it arrives first.
FORGE = (
    joined_on_the_wire("239.255.75.75", 7575)
    + """
HEAD = struct.Struct("!4sB3xQHI")
print("listening", flush=True)
while True:
    data = sock.recv(65535)
    if data[:4] == b"MKT1" and data[4] == 4 and len(data) > HEAD.size:
        break
_, _, session, file_index, block = HEAD.unpack_from(data)
length = len(data) - HEAD.size
forged = HEAD.pack(b"MKT1", 4, session, file_index, block + 1000) + b"\\xee" * length
sock.sendto(forged, ("239.255.75.75", 7575))
print("forged", block + 1000, flush=True)
"""
)


def test_one_forged_block_in_a_signed_transfer_costs_a_pass_not_the_transfer(
    lab: Lab, tmp_path: Path
) -> None:
    sender, receiver, attacker = lab.lan(3)
    key = tmp_path / "sign.key"
    write_signing_key(key)
    source = tmp_path / "payload.bin"
    data = os.urandom(3 << 20)  # about 2,200 blocks
    source.write_bytes(data)
    inbox = tmp_path / "in"
    got = receiver.start_mcast("recv-file", "--group", GROUP, "--dir", str(inbox), "--parents",
                               "--json", "--wait", "30", "--trust", f"{key}.pub")  # fmt: skip
    wait_for_line(got.stderr, "waiting for a transfer")
    forger = attacker.start("python3", "-c", FORGE)
    wait_for_line(forger.stdout, "listening")
    sent = sender.mcast("send-file", str(source), "--group", GROUP, "--sign-key", str(key),
                        "--receivers", "1", "--rate", "20M", "--json", timeout=120)  # fmt: skip
    forged = forger.communicate(timeout=30)[0]
    result = json.loads(got.communicate(timeout=60)[0])
    summary = json.loads(sent.stdout)
    assert "forged" in forged
    # Before: state "failed", reason "sha256 mismatch for payload.bin".
    assert result["state"] == "complete" and summary["ok"], (result, summary)
    assert result["refetched_blocks"] > 0  # the forged block did land, and cost a pass
    assert hashlib.sha256((inbox / "payload.bin").read_bytes()).digest() == (
        hashlib.sha256(data).digest()
    )


def test_a_senders_sync_never_replaces_a_receivers_file(lab: Lab, tmp_path: Path) -> None:
    # Before (issue 22, class 4): recv-file obeyed the sender's --sync and replaced a file
    # that differed without --overwrite (a replayed --sync transfer rolled a file back).
    sender, receiver = lab.lan(2)
    source = tmp_path / "out" / "notes.txt"
    source.parent.mkdir()
    source.write_text("version 1, what the sender has\n")
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "notes.txt").write_text("version 2, the receiver's own\n")
    got = receiver.start_mcast("recv-file", "--group", GROUP, "--dir", str(inbox), "--json",
                               "--wait", "20")  # fmt: skip
    wait_for_line(got.stderr, "waiting for a transfer")
    sent = sender.mcast("send-file", str(source), "--group", GROUP, "--sync", "--receivers",
                        "1", "--json", timeout=60)  # fmt: skip
    result = json.loads(got.communicate(timeout=60)[0])
    assert result["state"] == "failed" and "exists with other content" in result["reason"]
    assert sent.returncode != 0
    assert (inbox / "notes.txt").read_text() == "version 2, the receiver's own\n"
    assert sorted(p.name for p in inbox.iterdir()) == ["notes.txt"]  # nothing hidden left
