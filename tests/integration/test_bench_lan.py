"""mcast bench between namespace hosts: clean, lossy (nftables), iperf2 as sender, overruns."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from netlab import Host, Lab, nft_drop, require_tool, wait_for_line

GROUP = "239.255.77.81:5081"


def _receiver(host: Host, *args: str) -> subprocess.Popen[str]:
    proc = host.start_mcast("bench", "recv", GROUP, "--json", "--idle", "1", "--wait", "10", *args)
    wait_for_line(proc.stderr, "waiting for traffic")
    return proc


def _summary(proc: subprocess.Popen[str]) -> dict:
    out, err = proc.communicate(timeout=60)
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines and "summary" in lines[-1], err
    return lines[-1]["summary"]


def test_bench_send_to_recv_between_hosts(lab: Lab) -> None:
    h1, h2 = lab.lan(2)
    receiver = _receiver(h2)
    sent = h1.mcast(
        "bench", "send", GROUP, "--rate", "20kpps", "--size", "200", "--duration", "1", "--json"
    )
    assert sent.returncode == 0, sent.stderr
    send_summary = json.loads(sent.stdout.splitlines()[-1])["summary"]
    summary = _summary(receiver)
    assert summary["sender"] == "mcastkit"
    assert summary["packets"] == send_summary["packets"]
    # Never above the rate. Below it only by what a stall costs: the bucket holds 2 ms, so a
    # loaded machine that deschedules the sender loses that time (17,611 of 20,000 in one CI
    # run); half the rate would be a pacing fault, not a stall.
    assert 10_000 <= send_summary["packets"] <= 21_000
    assert summary["lost"] == 0 and summary["duplicates"] == 0
    assert summary["pps"] > 10_000


def test_bench_measures_real_random_loss(lab: Lab) -> None:
    h1, h2 = lab.lan(2)
    nft_drop(h2, "ip daddr 239.0.0.0/8 numgen random mod 100 < 5 drop")
    receiver = _receiver(h2)
    assert (
        h1.mcast(
            "bench", "send", GROUP, "--rate", "20kpps", "--size", "200", "--duration", "1"
        ).returncode
        == 0
    )
    summary = _summary(receiver)
    assert 0.03 < summary["loss"] < 0.07, summary  # 5 % dropped by nftables on h2
    assert summary["lost"] + summary["packets"] > 10_000  # the rate, less any stalls


def test_bench_recv_counts_an_iperf2_sender(lab: Lab) -> None:
    require_tool("iperf")
    h1, h2 = lab.lan(2)
    receiver = _receiver(h2)
    group, port = GROUP.split(":")
    iperf = h1.run(
        "iperf",
        "-c",
        group,
        "-p",
        port,
        "-u",
        "-T",
        "1",
        "-b",
        "8M",
        "-l",
        "1000",
        "-t",
        "1",
        "-B",
        h1.ipv4,
        timeout=30,
    )
    assert iperf.returncode == 0, iperf.stderr
    summary = _summary(receiver)
    assert summary["sender"] == "iperf2"
    assert 900 <= summary["packets"] <= 1100  # 8 Mbit/s of 1000-byte datagrams for 1 s
    assert summary["lost"] == 0


def _iperf_final(report: str) -> tuple[int, int, str]:
    """iperf2 server's last Lost/Total line: lost, total, the whole output."""
    totals = re.findall(r"(\d+)/\s*(\d+) \(", report)
    assert totals, report
    lost, total = totals[-1]
    return int(lost), int(total), report


@pytest.mark.parametrize(
    ("drop", "gso"), [(0, False), (0, True), (5, False)], ids=["clean", "gso", "5%-loss"]
)
def test_bench_send_feeds_an_iperf2_receiver(lab: Lab, drop: int, gso: bool) -> None:
    # Before: iperf2 read our own header as its id and saw 100 % loss, all out of order.
    require_tool("iperf")
    h1, h2 = lab.lan(2)
    if drop:
        # The closing datagram (a negative id: the payload's first bit set) is spared: iperf2
        # sends one to a group as we do, and its server reports nothing without it (the test
        # failed in about one run in twenty).
        rule = f"ip daddr 239.0.0.0/8 @th,64,1 0 numgen random mod 100 < {drop} drop"
        nft_drop(h2, rule)
    group, port = GROUP.split(":")
    server = h2.start("iperf", "-s", "-u", "-B", group, "-p", port)  # one report, at the end
    wait_for_line(server.stdout, "Server listening")
    args = ("--rate", "4000pps", "--size", "1000", "--duration", "1.5", "--json", "--iperf2")
    sent = h1.mcast("bench", "send", GROUP, *args, *(["--gso"] if gso else []))
    assert sent.returncode == 0, sent.stderr
    packets = json.loads(sent.stdout.splitlines()[-1])["summary"]["packets"]
    final = wait_for_line(server.stdout, "%)", timeout=10)  # printed on our closing datagram
    time.sleep(0.3)  # an out-of-order count would follow it
    server.kill()
    rest, _ = server.communicate(timeout=10)
    lost, total, report = _iperf_final(final + rest)
    assert "out-of-order" not in report, report
    assert packets <= total <= packets + 1, report
    if drop:
        assert 0.02 < lost / total < 0.09, report  # 5 % dropped by nftables on h2
    else:
        assert lost == 0, report


def test_overrun_warning_with_a_tiny_buffer() -> None:
    # On loopback in the suite's namespace: a sender at full speed into a 4 KiB buffer.
    receiver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mcastkit",
            "bench",
            "recv",
            "239.255.77.82:5083",
            "--iface",
            "lo",
            "--rcvbuf",
            "4096",
            "--json",
            "--idle",
            "1",
            "--wait",
            "10",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert receiver.stderr is not None
    wait_for_line(receiver.stderr, "waiting for traffic")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mcastkit",
            "bench",
            "send",
            "239.255.77.82:5083",
            "--iface",
            "lo",
            "--rate",
            "max",
            "--size",
            "1000",
            "--duration",
            "0.5",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    summary = _summary(receiver)
    assert summary["kernel_drops"] > 0
    assert "raise it" in summary["warning"]
