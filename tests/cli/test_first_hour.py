"""The first hour of a new user (issue 25): counters that never undercount silently, waits
that say why at once, link-local addresses, TTL hints. Real sockets in the suite's namespace."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ISOLATED
from netlab import wait_for_line

from mcastkit import Node
from mcastkit.keyfiles import load_key_file
from mcastkit.security import KeyRing
from mcastkit.wire import Frame, FrameType, encode_frame

MCAST = [sys.executable, "-m", "mcastkit"]
net = pytest.mark.skipif(not ISOLATED, reason="needs the private network namespace")


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*MCAST, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _mcast(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``mcast ARGS`` to its end (60 s at most), its output captured."""
    return subprocess.run([*MCAST, *args], input=stdin, capture_output=True, text=True, timeout=60)


def _send_lines(group: str, count: int) -> None:
    lines = "".join(f"{n}\n" for n in range(count))
    done = _mcast("send", group, "-", "--iface", "lo", "--json", stdin=lines)
    assert json.loads(done.stdout)["datagrams"] == count, done.stderr


@net
def test_listen_counts_every_datagram_it_missed_for_a_full_buffer() -> None:
    # A buffer of a few datagrams overflows at once: before, listen reported the datagrams
    # that fit and nothing about the rest.
    group = "239.255.96.1:5961"
    listener = _start(
        "listen", group, "--iface", "lo", "--rcvbuf", "4096", "--quiet", "--json",
        "--timeout", "4",
    )  # fmt: skip
    time.sleep(1.0)
    _send_lines(group, 1000)
    out, err = listener.communicate(timeout=30)
    summary = json.loads(out.splitlines()[-1])["summary"]
    assert summary["kernel_drops"] > 0
    assert summary["datagrams"] + summary["kernel_drops"] == 1000
    assert "the kernel dropped" in err and "--rcvbuf" in err


@net
def test_listen_sizes_its_buffer_for_a_burst() -> None:
    group = "239.255.96.2:5962"
    listener = _start("listen", group, "--iface", "lo", "--timeout", "4")
    time.sleep(1.0)
    _send_lines(group, 1000)
    out, err = listener.communicate(timeout=30)
    assert len(out.splitlines()) == 1000, err  # every datagram printed, none dropped
    assert "dropped" not in err


@net
def test_a_node_counts_its_kernel_drops() -> None:
    async def main() -> tuple[int, int]:
        async with Node("239.255.96.3:5963", iface="lo", rcvbuf=4096, heartbeat=5) as node:
            flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            flood.setsockopt(
                socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1")
            )
            for _ in range(300):  # the loop does not read while this runs: the buffer fills
                flood.sendto(b"x" * 200, ("239.255.96.3", 5963))
            flood.close()
            await asyncio.sleep(0.3)
            return node.kernel_drops(), node.counters["kernel-drops"]

    drops, counted = asyncio.run(main())
    assert drops > 0 and counted == drops


@net
def test_recv_file_reports_the_drops_it_had_repaired(tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(2_000_000))
    into = tmp_path / "into"
    into.mkdir()
    group = ("--group", "239.255.96.4:5964", "--iface", "lo")
    receiver = _start("recv-file", *group, "--dir", str(into), "--rcvbuf", "8192", "--json")
    time.sleep(1.0)
    sent = _mcast("send-file", str(source), *group, "--receivers", "1", "--json")
    out, err = receiver.communicate(timeout=60)
    assert sent.returncode == 0, sent.stderr
    summary = json.loads(out)
    assert summary["state"] == "complete", err
    assert summary["kernel_drops"] > 0  # a buffer of a few blocks overflows: said, repaired
    assert (into / "data.bin").read_bytes() == source.read_bytes()


def _keygen(path: Path, *flags: str) -> str:
    done = _mcast("keygen", *flags, str(path))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@net
def test_a_member_without_the_key_says_so_at_the_first_sealed_datagram(tmp_path: Path) -> None:
    key = tmp_path / "group.key"
    _keygen(key)
    group = ("--group", "239.255.96.5:5965", "--iface", "lo", "--heartbeat", "0.3")
    listener = _start("subscribe", "t", *group, "--timeout", "30")
    sealed = _start("peers", *group, "--key-file", str(key))
    try:
        # Before: nothing until --timeout ended (or Ctrl-C, which printed "interrupted").
        line = wait_for_line(listener.stderr, "sealed datagram", timeout=5)
        assert "--key-file" in line
    finally:
        sealed.kill()
        listener.kill()
        sealed.communicate(timeout=10)
        listener.communicate(timeout=10)


@net
@pytest.mark.parametrize("missing", ["key", "trust"])
def test_recv_file_says_at_once_why_it_refuses_a_transfer(tmp_path: Path, missing: str) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(100_000))
    (tmp_path / "into").mkdir()
    group = ("--group", "239.255.96.6:5966", "--iface", "lo")
    sender_args: tuple[str, ...]
    if missing == "key":
        _keygen(tmp_path / "group.key")
        sender_args, receiver_args = ("--key-file", str(tmp_path / "group.key")), ()
        expected = "the group is sealed"
    else:
        _keygen(tmp_path / "sign.key", "--sign")
        other = _keygen(tmp_path / "other.key", "--sign")
        sender_args = ("--sign-key", str(tmp_path / "sign.key"))
        receiver_args = ("--trust", other)
        expected = "refused an announce"
    receiver = _start(
        "recv-file", *group, "--dir", str(tmp_path / "into"), "--wait", "30", *receiver_args
    )
    sender = _start("send-file", str(source), *group, "--wait", "20", *sender_args)
    try:
        started = time.monotonic()
        line = wait_for_line(receiver.stderr, "warning:", timeout=8)
        assert expected in line and time.monotonic() - started < 8
        assert receiver.poll() is None  # said while it still waits, not when the wait ends
    finally:
        for proc in (sender, receiver):
            proc.kill()
            proc.communicate(timeout=10)


@net
def test_chat_lines_arrive_in_the_order_typed() -> None:
    group = ("--group", "239.255.96.7:5967", "--iface", "lo")
    listener = _start("subscribe", "chat", *group, "--count", "5", "--timeout", "15", "--json")
    wait_for_line(listener.stderr, "subscribed")
    lines = ["first", "long " * 2000, "third", "fourth", "fifth"]  # the 2nd is 10 kB
    chat = _mcast("chat", *group, stdin="".join(line + "\n" for line in lines))
    out, err = listener.communicate(timeout=30)
    assert chat.returncode == 0, chat.stderr
    heard = [json.loads(line) for line in out.splitlines()]
    # Before: "third" and on went plainly and overtook the long line on the reliable stream.
    assert [m["size"] for m in heard] == [len(line) for line in lines], err


@net
def test_a_sync_with_nothing_to_send_says_so(tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(300_000))
    into = tmp_path / "into"
    into.mkdir()
    (into / "data.bin").write_bytes(source.read_bytes())
    group = ("--group", "239.255.96.8:5968", "--iface", "lo")
    receiver = _start("recv-file", *group, "--dir", str(into))
    wait_for_line(receiver.stderr, "waiting for a transfer")
    sent = _mcast("send-file", str(source), *group, "--receivers", "1", "--sync")
    out, _ = receiver.communicate(timeout=30)
    # Before: "sent 0.3 MB in 0.03s (10.2 MB/s), 0 pass(es), 0 blocks for 221", and the
    # receiver said "received and verified data.bin" after "up to date already".
    assert sent.returncode == 0, sent.stderr
    assert "nothing to send: every receiver had the files already" in sent.stdout
    assert "MB/s" not in sent.stdout
    assert "up to date already: 1 file(s)" in out and "received" not in out


def _flood(group: tuple[str, int], count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood:
        flood.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        for _ in range(count):
            flood.sendto(b"x" * 200, group)


@net
def test_dump_and_subscribe_report_their_kernel_drops() -> None:
    dump = _start(
        "dump", "239.255.96.12:5972", "--iface", "lo", "--rcvbuf", "4096", "--json",
        "--timeout", "3",
    )  # fmt: skip
    subscriber = _start(
        "subscribe", "t", "--group", "239.255.96.13:5973", "--iface", "lo", "--rcvbuf", "4096",
        "--json", "--timeout", "3",
    )  # fmt: skip
    wait_for_line(dump.stderr, "dumping")
    wait_for_line(subscriber.stderr, "subscribed")
    _flood(("239.255.96.12", 5972), 2000)
    _flood(("239.255.96.13", 5973), 2000)
    out, _ = dump.communicate(timeout=30)
    summary = json.loads(out.splitlines()[-1])["summary"]
    assert summary["kernel_drops"] > 0
    assert summary["datagrams"] + summary["kernel_drops"] == 2000
    out, err = subscriber.communicate(timeout=30)
    (drops,) = [json.loads(line) for line in out.splitlines() if "kernel-drops" in line]
    assert drops["count"] > 0 and "--rcvbuf" in err


@net
def test_a_member_whose_clock_is_off_is_said_not_silently_dropped(tmp_path: Path) -> None:
    # Before (issue 22, class 10): frames stamped beyond --max-skew were dropped as stale
    # with no word: the member was simply never seen.
    key_file = tmp_path / "group.key"
    _keygen(key_file)
    ring = KeyRing([load_key_file(key_file)], os.urandom)
    listener = _start(
        "subscribe", "t", "--group", "239.255.96.14:5974", "--iface", "lo",
        "--key-file", str(key_file), "--timeout", "20",
    )  # fmt: skip
    wait_for_line(listener.stderr, "subscribed")
    behind = time.time_ns() // 1000 - 120_000_000  # a clock two minutes slow
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        for seq in range(1, 6):
            frame = encode_frame(Frame(FrameType.HEARTBEAT, 0, 0xC10C, 1, seq, behind, "", b""))
            sock.sendto(ring.seal(frame), ("239.255.96.14", 5974))
    try:
        line = wait_for_line(listener.stderr, "--max-skew", timeout=5)
        assert "clock is off" in line and "NTP" in line
    finally:
        listener.kill()
        listener.communicate(timeout=10)
