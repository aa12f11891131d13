"""The behaviour fixes of the CLI contract, each on real sockets where it has one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ISOLATED

from mcastkit.addr import format_endpoint
from mcastkit.diag.bench import BenchStats, make_payload
from mcastkit.diag.ping import verdict
from mcastkit.peers import PeerInfo
from mcastkit.transfer.protocol import FileInfo
from mcastkit.transfer.storage import FileSink

MCAST = [sys.executable, "-m", "mcastkit"]
net = pytest.mark.skipif(not ISOLATED, reason="needs the private network namespace")


def _run(
    *args: str, timeout: float = 30, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MCAST, *args], capture_output=True, text=True, timeout=timeout, input=stdin
    )


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*MCAST, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_ipv6_endpoints_are_bracketed() -> None:
    assert format_endpoint("fd99::1", 49994) == "[fd99::1]:49994"
    assert format_endpoint("10.0.0.1", 5000) == "10.0.0.1:5000"
    peer = PeerInfo(1, 1, ("fd99::1", 49994), 0.0, 0.0)
    assert peer.to_dict()["address"] == "[fd99::1]:49994"


def test_bench_intervals_closed_while_traffic_flows_are_emitted() -> None:
    # Before: intervals closed inside on_datagram were never returned by tick().
    stats = BenchStats()
    second = 1_000_000_000
    rows = []
    for n in range(300):  # three seconds of traffic, 100 datagrams a second
        now = n * second // 100 + 1
        stats.on_datagram(make_payload(n, now, 100), now, 0)
        rows += stats.tick(now)
    assert [row["t"] for row in rows] == [1.0, 2.0]
    assert all(row["pps"] == pytest.approx(100, rel=0.05) for row in rows)


def test_ping_max_loss_counts_lost_answers() -> None:
    path = {"received": 100, "answered": 50, "loss_since_first": 0.0, "answer_loss": 0.5}
    summary = {
        "peers": [
            {
                "address": "10.0.0.2:5000",
                "id": "ab" * 8,
                "multicast": path,
                "unicast": dict(path, answer_loss=0.0),
            }
        ]
    }
    code, reasons = verdict(summary, 0.05)
    assert code == 1 and "multicast answer loss 50.0%" in reasons[0]


@net
def test_no_route_falls_back_to_loopback_with_a_warning_naming_iface() -> None:
    done = _run("send", "239.255.95.1:5951", "x")  # the suite's namespace has no routes
    assert done.returncode == 0
    assert "no route for 239.255.95.1" in done.stderr and "--iface" in done.stderr


@net
def test_an_ssm_group_without_a_source_is_warned() -> None:
    done = _run("listen", "232.1.2.3:5952", "--iface", "lo", "--timeout", "0.3")
    assert done.returncode == 1
    assert "source-specific range" in done.stderr and "--source" in done.stderr


@net
def test_serve_reports_a_failing_command_and_keeps_its_heartbeats() -> None:
    group = ("--group", "239.255.95.2:5953", "--iface", "lo", "--heartbeat", "0.2")
    server = _start(
        "serve", "work", "--command", "sleep 1.5; echo nope >&2; exit 3", *group, "--timeout", "8"
    )
    time.sleep(0.8)
    done = _run("request", "work", "do it", *group, "--timeout", "4", "--json")
    server.terminate()
    server.communicate(timeout=20)
    result = json.loads(done.stdout)
    (reply,) = result["replies"]
    # Before: a failed command was a successful (empty) reply, and the blocking run stalled
    # the server's heartbeats long enough for the requester to fail it.
    assert reply["payload"] == "error: the command exited 3: nope"
    assert not result["missing"]


@net
def test_a_reply_too_large_for_a_datagram_is_refused_at_start() -> None:
    done = _run(
        "serve",
        "t",
        "--reply",
        "x" * 5000,
        "--group",
        "239.255.95.3:5954",
        "--iface",
        "lo",
        "--timeout",
        "1",
    )
    assert done.returncode == 2 and "one reply holds" in done.stderr
    assert "Traceback" not in done.stderr


@net
def test_a_chat_line_longer_than_a_datagram_still_arrives() -> None:
    group = ("--group", "239.255.95.4:5955", "--iface", "lo")
    listener = _start("subscribe", "chat", *group, "--count", "1", "--timeout", "10", "--json")
    time.sleep(1.0)
    line = "long " * 1000  # 5,000 bytes: over one datagram
    chat = subprocess.run(
        [*MCAST, "chat", *group], input=line + "\n", capture_output=True, text=True, timeout=30
    )
    out, _ = listener.communicate(timeout=30)
    assert chat.returncode == 0, chat.stderr
    message = json.loads(out)
    assert listener.returncode == 0 and message["size"] == len(line.encode())
    assert message["reliable"]  # went over the reliable stream (before: chat ended)


def test_recv_file_refuses_to_replace_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        FileSink(tmp_path, [FileInfo("f.bin", 10, "ab" * 32)])
    sink = FileSink(tmp_path, [FileInfo("f.bin", 4, "ab" * 32)], overwrite=True)
    sink.discard()
    assert (tmp_path / "f.bin").read_bytes() == b"mine"


@net
def test_recv_file_creates_missing_directories_only_when_asked(tmp_path: Path) -> None:
    missing = tmp_path / "a" / "b"
    common = ("recv-file", "--dir", str(missing), "--group", "239.255.95.5:5956")
    done = _run(*common, "--iface", "lo", "--wait", "0.2")
    assert done.returncode == 2 and "--parents" in done.stderr
    assert not missing.exists()
    done = _run(*common, "--parents", "--iface", "lo", "--wait", "0.2")
    assert done.returncode == 1 and missing.is_dir()  # nothing announced, but the dir exists
    assert os.listdir(missing) == []


def test_ping_final_summary_counts_unanswered_probes_as_lost() -> None:
    from mcastkit.diag.ping import PingSession

    ms = 1_000_000
    a = PingSession(1, now_ns=0, interval_ns=100 * ms, ttl=1)
    b = PingSession(2, now_ns=0, interval_ns=100 * ms, ttl=1)
    for data, _ in b.tick(0):  # b's probe: a finds b
        a.receive(data, ("10.0.0.2", 5000), 1, 1)
    for step in range(1, 21):  # two seconds of probes; b answers only the first ten
        now = step * 100 * ms
        for data, to in a.tick(now):
            if to is None and step <= 10:
                for answer, _ in b.receive(data, ("10.0.0.1", 5000), 1, now):
                    a.receive(answer, ("10.0.0.2", 5000), 1, now + ms)
    now = 2050 * ms
    running = a.summary(now)["peers"][0]["multicast"]
    final = a.summary(now, final=True)["peers"][0]["multicast"]
    # Before: the final summary still counted the last second's probes as in flight, so the
    # ten unanswered ones looked like nothing lost.
    assert running["answer_loss"] == 0.0
    assert final["answer_loss"] == pytest.approx(9 / 19, abs=0.06)
