"""Sealed and signed file distribution between namespace hosts, attacked from the LAN.

A group key keeps outsiders out (they read nothing, inject nothing, register nothing); a
signature says which insider sent the files; a time stamp keeps old transfers from being
played back to a newcomer.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path

from netlab import Host, Lab, nft_drop, require_tool, wait_for_line

from mcastkit.keyfiles import write_key_file, write_signing_key

GROUP = "239.255.77.83:5083"
CANARY = b"mcastkit plaintext canary: if you read this in a capture, sealing failed\n"


def _canary_file(tmp_path: Path, size: int) -> tuple[Path, str]:
    data = (CANARY * (size // len(CANARY) + 1))[:size]
    path = tmp_path / "secret.txt"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _receiver(host: Host, directory: Path, *args: str, wait: str = "20") -> subprocess.Popen[str]:
    proc = host.start_mcast(
        "recv-file", "--dir", str(directory), "--parents", "--name", host.name, "--json",
        "--wait", wait, *args,
    )  # fmt: skip
    wait_for_line(proc.stderr, "waiting for a transfer")
    return proc


def _send(host: Host, path: Path, *args: str) -> tuple[int, dict]:
    done = host.mcast("send-file", str(path), "--json", *args, timeout=120)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def _capture(host: Host, pcap: Path) -> subprocess.Popen[str]:
    tcpdump = require_tool("tcpdump")
    proc = host.start(tcpdump, "-i", "eth0", "-U", "-n", "-w", str(pcap), "udp")
    wait_for_line(proc.stderr, "listening on")
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=10)


def _keys(tmp_path: Path) -> tuple[Path, Path]:
    good, other = tmp_path / "group.key", tmp_path / "other.key"
    write_key_file(good)
    write_key_file(other)
    return good, other


def test_sealed_transfer_reaches_key_holders_only_and_shows_no_plaintext(
    lab: Lab, tmp_path: Path
) -> None:
    sender, near, lossy, outsider, stranger = lab.lan(5)
    key, other = _keys(tmp_path)
    path, digest = _canary_file(tmp_path, 3_000_000)
    nft_drop(lossy, "ip daddr 239.0.0.0/8 numgen random mod 100 < 5 drop")
    pcap = tmp_path / "sealed.pcap"
    capture = _capture(outsider, pcap)
    holders = [_receiver(h, tmp_path / h.name, "--key-file", str(key)) for h in (near, lossy)]
    keyless = _receiver(outsider, tmp_path / "outsider", wait="8")
    wrong = _receiver(stranger, tmp_path / "stranger", "--key-file", str(other), wait="8")
    code, summary = _send(sender, path, "--key-file", str(key), "--receivers", "2")
    results = [json.loads(p.communicate(timeout=60)[0]) for p in holders]
    shut_out = [json.loads(p.communicate(timeout=60)[0]) for p in (keyless, wrong)]
    _stop(capture)
    assert code == 0 and summary["ok"], summary
    assert summary["sealed"] in ("aes-256-gcm", "chacha20-poly1305")
    assert sorted(r["name"] for r in summary["receivers"]) == sorted([near.name, lossy.name])
    for host, result in zip((near, lossy), results, strict=True):
        assert result["state"] == "complete" and result["sealed"]
        received = (tmp_path / host.name / "secret.txt").read_bytes()
        assert hashlib.sha256(received).hexdigest() == digest
    assert summary["blocks_sent"] > summary["blocks"]  # the lossy one was repaired, sealed
    keyless_result, wrong_result = shut_out
    assert keyless_result["state"] == "waiting" and keyless_result["files"] == []
    assert "the group is sealed; give its --key-file" in keyless_result["reason"]
    assert keyless_result["dropped"]["sealed-without-key"] > 1000
    assert "sealed with another key" in wrong_result["reason"]
    assert not list((tmp_path / "outsider").iterdir())
    assert not list((tmp_path / "stranger").iterdir())
    captured = pcap.read_bytes()
    assert len(captured) > 3_000_000  # the whole transfer went past the outsider
    assert CANARY[:24] not in captured

    # The same capture of a transfer in the clear does show the file: the check can fail.
    plain_pcap = tmp_path / "plain.pcap"
    capture = _capture(outsider, plain_pcap)
    proc = _receiver(near, tmp_path / "plain")
    code, _ = _send(sender, path, "--receivers", "1")
    proc.communicate(timeout=60)
    _stop(capture)
    assert code == 0
    assert CANARY[:24] in plain_pcap.read_bytes()


INJECTOR = r"""
import json, os, socket, struct, sys, time
group, port = sys.argv[1], int(sys.argv[2])
listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listen.bind((group, port))
listen.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                  socket.inet_aton(group) + socket.inet_aton("0.0.0.0"))
listen.settimeout(10)
seen, sender = listen.recvfrom(2048)  # a sealed datagram: its key id and the sender's port
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
out.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
head = lambda kind, session: struct.pack("!4sB3xQ", b"MKT1", kind, session)
files = [{"name": "secret.txt", "size": 3000, "sha256": "ab" * 32}]
announce = json.dumps({"block_size": 1000, "files": files, "time": time.time()}).encode()
forged = bytearray(seen)
forged[30] ^= 0xFF
sent = 0
deadline = time.monotonic() + 4
while time.monotonic() < deadline:
    for datagram in (
        head(1, 666) + announce,  # a transfer of our own, in the clear
        head(4, 666) + struct.pack("!HI", 0, 0) + b"X" * 1000,  # its blocks
        bytes(forged),  # a sealed datagram with a flipped byte
        os.urandom(20) + seen[20:],  # the same ciphertext under a made-up header
    ):
        out.sendto(datagram, (group, port))
        sent += 1
    # Registering in the clear at the sender, and a completion report.
    out.sendto(head(2, 1) + struct.pack("!Q", 42) + b"intruder", sender)
    out.sendto(head(7, 1) + struct.pack("!Q", 42) + b"\x00", sender)
    time.sleep(0.002)
print(sent)
"""


def test_a_keyless_host_cannot_inject_register_or_disturb(lab: Lab, tmp_path: Path) -> None:
    sender, receiver, attacker = lab.lan(3)
    key, _ = _keys(tmp_path)
    path, digest = _canary_file(tmp_path, 20_000_000)
    proc = _receiver(receiver, tmp_path / "in", "--key-file", str(key))
    host, port = GROUP.split(":")
    injector = attacker.start("python3", "-c", INJECTOR, host, port)
    code, summary = _send(
        sender, path, "--key-file", str(key), "--receivers", "1", "--rate", "300M", "--wait", "1"
    )
    result = json.loads(proc.communicate(timeout=60)[0])
    out, err = injector.communicate(timeout=30)
    assert injector.returncode == 0, err
    assert int(out) > 100
    assert code == 0 and summary["ok"], summary
    assert [r["name"] for r in summary["receivers"]] == [receiver.name]
    assert summary["dropped"].get("unsealed", 0) > 0  # the clear registrations, refused
    assert [r["host"] for r in summary["refused"]] == [attacker.ipv4]  # and who sent them
    assert result["state"] == "complete"
    assert result["dropped"].get("unsealed", 0) > 0
    assert result["dropped"].get("forged", 0) + result["dropped"].get("unknown-key", 0) > 0
    assert hashlib.sha256((tmp_path / "in" / "secret.txt").read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["secret.txt"]


def test_receivers_trust_only_announces_their_keys_signed(lab: Lab, tmp_path: Path) -> None:
    sender, receiver = lab.lan(2)
    trusted, untrusted = tmp_path / "trusted.key", tmp_path / "untrusted.key"
    write_signing_key(trusted)
    write_signing_key(untrusted)
    path, digest = _canary_file(tmp_path, 200_000)
    trust = ("--trust", f"{trusted}.pub")
    for label, sign in (("untrusted", ("--sign-key", str(untrusted))), ("unsigned", ())):
        proc = _receiver(receiver, tmp_path / label, *trust, wait="4")
        code, summary = _send(sender, path, *sign, "--receivers", "1", "--wait", "2")
        result = json.loads(proc.communicate(timeout=30)[0])
        assert code == 1 and summary["receivers"] == [], summary
        assert result["state"] == "waiting"
        expected = "untrusted key" if label == "untrusted" else "unsigned announce"
        assert expected in result["reason"], result
        assert not list((tmp_path / label).iterdir())
    public = (Path(f"{trusted}.pub")).read_text().strip()
    proc = _receiver(receiver, tmp_path / "signed", "--trust", public)
    code, summary = _send(sender, path, "--sign-key", str(trusted), "--receivers", "1")
    result = json.loads(proc.communicate(timeout=30)[0])
    assert code == 0 and summary["signed_by"], summary
    assert result["state"] == "complete"
    assert hashlib.sha256((tmp_path / "signed" / "secret.txt").read_bytes()).hexdigest() == digest


RECORDER = r"""
import socket, struct, sys, time
group, port, path, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
sock.bind((group, port))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                socket.inet_aton(group) + socket.inet_aton("0.0.0.0"))
sock.settimeout(0.2)
print("recording", flush=True)
deadline = time.monotonic() + seconds
with open(path, "wb") as out:
    while time.monotonic() < deadline:
        try:
            data = sock.recv(2048)
        except TimeoutError:
            continue
        out.write(struct.pack("!H", len(data)) + data)
"""

REPLAYER = r"""
import socket, struct, sys, time
group, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
out.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
data = open(path, "rb").read()
at = sent = 0
while at < len(data):
    (size,) = struct.unpack_from("!H", data, at)
    out.sendto(data[at + 2 : at + 2 + size], (group, port))
    at += 2 + size
    sent += 1
    if sent % 64 == 0:
        time.sleep(0.001)
print(sent)
"""


def test_a_recorded_sealed_transfer_replayed_later_is_refused(lab: Lab, tmp_path: Path) -> None:
    sender, recorder, receiver, newcomer = lab.lan(4)
    key, _ = _keys(tmp_path)
    path, _digest = _canary_file(tmp_path, 500_000)
    host, port = GROUP.split(":")
    recording = tmp_path / "recording.bin"
    tape = recorder.start("python3", "-c", RECORDER, host, port, str(recording), "6")
    wait_for_line(tape.stdout, "recording")
    proc = _receiver(receiver, tmp_path / "first", "--key-file", str(key))
    code, _ = _send(sender, path, "--key-file", str(key), "--receivers", "1", "--rate", "100M")
    assert code == 0
    proc.communicate(timeout=30)
    tape.communicate(timeout=30)
    assert recording.stat().st_size > 500_000
    time.sleep(2.5)  # the recording is now older than the newcomer's --max-skew
    for label, skew, refused in (("strict", "1", True), ("lax", "600", False)):
        proc = _receiver(
            newcomer, tmp_path / label, "--key-file", str(key), "--max-skew", skew, wait="4"
        )
        replay = recorder.run("python3", "-c", REPLAYER, host, port, str(recording))
        assert replay.returncode == 0, replay.stderr
        proc.send_signal(signal.SIGINT)  # the lax one would wait for an acknowledgement
        result = json.loads(proc.communicate(timeout=30)[0])
        if refused:
            assert result["state"] == "waiting", result
            assert any("stamped" in reason for reason in result["refused_announces"]), result
            assert not list((tmp_path / label).iterdir())
        else:  # without the stamp check the replay is taken: the check is what stops it
            assert result["session"] is not None and result["received"] > 0, result


def test_readme_sealed_example_runs_as_written(lab: Lab, tmp_path: Path) -> None:
    """The README's sealed send-file example, line by line, on two hosts."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b for b in readme.split("```sh\n") if "keygen --sign" in b).split("```")[0]
    lines = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    sender, receiver = lab.lan(2)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (tmp_path / "image.iso").write_bytes(b"iso" * 100_000)
    proc = None
    for line in lines:
        args = line.replace("/srv/incoming", str(incoming)).split()
        assert args[0] == "mcast", line
        args = [str(tmp_path / a) if a.endswith((".key", ".pub", ".iso")) else a for a in args]
        if args[1] == "keygen":
            done = sender.mcast(*args[1:])
            assert done.returncode == 0, done.stderr
        elif args[1] == "recv-file":
            proc = receiver.start_mcast(*args[1:], "--wait", "20")
            wait_for_line(proc.stderr, "waiting for a transfer")
        else:
            done = sender.mcast(*args[1:], "--receivers", "1", "--wait", "3", timeout=60)
            assert done.returncode == 0, done.stdout + done.stderr
    assert proc is not None
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert (incoming / "image.iso").read_bytes() == b"iso" * 100_000
