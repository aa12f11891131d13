"""Members where multicast is not carried, on test hosts whose bridge drops multicast (as a
cloud, an overlay or a VPN does) while unicast passes: --peer seeds, gossip, unicast copies."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

from netlab import Host, Lab, nft_drop, require_tool, the_message, wait_for_line

GROUP = "239.255.60.1:5600"
SEED = "10.88.0.1"


def _group_args(*extra: str) -> tuple[str, ...]:
    return ("--group", GROUP, "--peer", SEED, *extra)


def _serve(host: Host, *extra: str) -> subprocess.Popen[str]:
    proc = host.start_mcast("serve", "who", "--reply", host.name, "--name", host.name,
                            "--timeout", "60", *_group_args(*extra))  # fmt: skip
    wait_for_line(proc.stderr, "serving")
    return proc


def _stop(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.communicate(timeout=20)


def test_peers_find_each_other_through_one_seed_within_two_seconds(lab: Lab) -> None:
    h1, h2, h3 = lab.lan(3)
    lab.block_multicast()
    servers = [_serve(h1), _serve(h2)]  # h1 is the seed: its own --peer is left out
    try:
        started = time.monotonic()
        done = h3.mcast("peers", "--once", "--wait", "2", "--json", *_group_args())
        took = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        peers = json.loads(done.stdout)["peers"]
        assert sorted(p["name"] for p in peers) == sorted([h1.name, h2.name])
        assert {p["address"].split(":")[0] for p in peers} == {h1.ipv4, h2.ipv4}
        assert {p["path"] for p in peers} == {"unicast"}
        assert all(abs(p["last_seen_unix"] - time.time()) < 10 for p in peers)  # time of day
        assert took < 6  # a 2 s wait, interpreter start included
        # h2 knew only the seed: it learned h3 and is heard by unicast both ways.
        asked = h3.mcast("request", "who", "--json", "--wait", "3", "--timeout", "2",
                         *_group_args())  # fmt: skip
        assert asked.returncode == 0, asked.stderr
        replies = json.loads(asked.stdout)["replies"]
        assert sorted(r["payload"] for r in replies) == sorted([h1.name, h2.name]), replies
    finally:
        _stop(*servers)
    assert lab.multicast_dropped() > 0  # multicast really was tried and dropped


def test_demo_across_hosts_without_multicast(lab: Lab) -> None:
    hosts = lab.lan(3)
    lab.block_multicast()
    procs = [
        h.start_mcast("demo", GROUP, "--peer", SEED, "--expect", "2", "--duration", "20")
        for h in hosts
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=40)
        assert proc.returncode == 0, (out, err)
        assert "greeted by 2, answered by 2" in out, out


def test_publish_subscribe_and_a_reliable_32_mib_under_loss_without_multicast(
    lab: Lab, tmp_path: Path
) -> None:
    h1, h2, h3 = lab.lan(3)
    lab.block_multicast()
    for host in (h2, h3):  # 5 % of every datagram the receivers get, unicast copies too
        nft_drop(host, "meta l4proto udp numgen random mod 100 < 5 drop")
    data = os.urandom(32 << 20)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    subs = [
        h.start_mcast(
            "subscribe", "big", "--count", "1", "--timeout", "120", "--json", *_group_args()
        )
        for h in (h2, h3)
    ]
    for proc in subs:
        wait_for_line(proc.stderr, "subscribed")
    done = h1.mcast("publish", "big", "--reliable", "--file", str(path), "--wait", "10",
                    "--peers", "2", "--json", *_group_args(), timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["unacknowledged"] == [] and summary["repairs_sent"] > 0
    for proc in subs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (out[-2000:], err[-2000:])
        record = the_message(out)
        assert record["size"] == 32 << 20 and record["sha256"] == digest


def test_no_multicast_sends_nothing_to_the_group(lab: Lab) -> None:
    h1, h2 = lab.lan(2)
    tcpdump = require_tool("tcpdump")
    capture = h2.start(tcpdump, "-l", "-n", "-i", "eth0", "-c", "1", "ip multicast")
    time.sleep(0.5)
    sub = h2.start_mcast("subscribe", "t", "--count", "5", "--timeout", "20",
                         "--no-multicast", *_group_args())  # fmt: skip
    wait_for_line(sub.stderr, "subscribed")
    done = h1.mcast("publish", "t", "x", "--count", "5", "--wait", "5", "--peers", "1",
                    "--no-multicast", *_group_args())  # fmt: skip
    assert done.returncode == 0, done.stderr
    out, err = sub.communicate(timeout=30)
    assert sub.returncode == 0, err
    assert len(out.splitlines()) == 5
    capture.terminate()
    seen, _ = capture.communicate(timeout=10)
    assert "239.255.60.1" not in seen and "224.0.0" not in seen, seen  # no join, no send


def test_a_mixed_group_sends_multicast_to_the_lan_and_copies_to_the_remote_member(
    lab: Lab,
) -> None:
    h1, h2, h3 = lab.lan(3)
    lab.block_multicast(lab.port(3))  # h3 is remote: no multicast to or from it
    tcpdump = require_tool("tcpdump")
    subs = [
        h2.start_mcast("subscribe", "t", "--count", "200", "--timeout", "30", "--group", GROUP),
        h3.start_mcast(
            "subscribe", "t", "--count", "200", "--timeout", "30", *_group_args()
        ),  # only h3 is configured
    ]
    for proc in subs:
        wait_for_line(proc.stderr, "subscribed")
    capture = h1.start(tcpdump, "-l", "-n", "-q", "-i", "eth0", "udp")
    time.sleep(2.5)  # membership settles: h2 hears h1 by multicast, h3 gets copies
    lines = "".join(f"m{i}\n" for i in range(200))
    done = h1.mcast_fed(lines, "publish", "t", "-", "--wait", "5", "--peers", "2",
                        "--group", GROUP)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for proc in subs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert len(out.splitlines()) == 200
    time.sleep(0.5)
    capture.terminate()
    seen, _ = capture.communicate(timeout=10)
    sent = [line for line in seen.splitlines() if f" {h1.ipv4}." in line.split(">")[0]]
    to_group = sum(" 239.255.60.1." in line for line in sent)
    to_h2 = sum(f" {h2.ipv4}." in line.split(">")[1] for line in sent)
    to_h3 = sum(f" {h3.ipv4}." in line.split(">")[1] for line in sent)
    assert to_group >= 200  # the LAN pair: by multicast
    assert to_h3 >= 200  # the remote one: a unicast copy of each
    assert to_h2 < 20, to_h2  # no copies for h2: hellos and acknowledgements only


def test_send_file_reaches_receivers_beyond_multicast_named_or_asking(
    lab: Lab, tmp_path: Path
) -> None:
    sender, named, asking = lab.lan(3)
    lab.block_multicast()
    for host in (named, asking):
        nft_drop(host, "meta l4proto udp numgen random mod 100 < 5 drop")
    data = os.urandom(8 << 20)
    source = tmp_path / "payload.bin"
    source.write_bytes(data)
    receivers = []
    for host, extra in ((named, ()), (asking, ("--peer", sender.ipv4))):
        target = tmp_path / host.name
        proc = host.start_mcast("recv-file", "--dir", str(target), "--parents", "--name",
                                host.name, "--json", "--wait", "30", "--group", GROUP,
                                *extra)  # fmt: skip
        wait_for_line(proc.stderr, "waiting for a transfer")
        receivers.append((proc, target))
    done = sender.mcast("send-file", str(source), "--json", "--group", GROUP, "--receivers",
                        "2", "--wait", "5", "--peer", named.ipv4, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert sorted(r["name"] for r in summary["receivers"]) == sorted([named.name, asking.name])
    for proc, target in receivers:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (out, err)
        assert hashlib.sha256((target / "payload.bin").read_bytes()).digest() == (
            hashlib.sha256(data).digest()
        )
    assert lab.multicast_dropped() > 0


def test_files_by_unicast_only_where_nothing_is_joined(lab: Lab, tmp_path: Path) -> None:
    sender, receiver = lab.lan(2)
    tcpdump = require_tool("tcpdump")
    capture = sender.start(tcpdump, "-l", "-n", "-i", "eth0", "-c", "1", "ip multicast")
    data = os.urandom(2 << 20)
    source = tmp_path / "payload.bin"
    source.write_bytes(data)
    target = tmp_path / "in"
    proc = receiver.start_mcast("recv-file", "--dir", str(target), "--parents", "--json",
                                "--wait", "30", "--group", GROUP, "--no-multicast", "--peer",
                                sender.ipv4)  # fmt: skip
    wait_for_line(proc.stderr, "waiting for a transfer")
    done = sender.mcast("send-file", str(source), "--json", "--group", GROUP, "--receivers",
                        "1", "--wait", "5", "--no-multicast", timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    assert (target / "payload.bin").read_bytes() == data
    capture.terminate()
    seen, _ = capture.communicate(timeout=10)
    assert "239.255.60.1" not in seen and "224.0.0" not in seen, seen  # no join, no send
    alone = receiver.mcast("recv-file", "--dir", str(target), "--no-multicast", "--wait", "1")
    assert alone.returncode == 2 and "--peer SENDER" in alone.stderr
