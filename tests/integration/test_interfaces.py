"""Several interfaces at once, and interfaces that change: hosts on two LANs (eth0 and eth1),
real sockets, links cut from outside the host as a cable pull would cut them.

Listeners and nodes join on every interface (``--iface all``) and tell where each datagram
arrived; a node heard on two paths is one member, its datagrams delivered once; links that
go down and come back are left and joined again with nothing the reliable layer can repair
lost; a new address is announced and peers move to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from netlab import PYTHON, Host, Lab, sh, wait_for_line

GROUP = "239.77.0.1:6100"


def _records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _send(host: Host, iface: str, text: str, count: int = 1) -> dict[str, Any]:
    result = host.mcast("send", GROUP, text, "--iface", iface, "--count", str(count), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@contextlib.contextmanager
def _listening(
    host: Host, group: str, iface: str, seconds: float
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``mcast listen --json`` on ``host`` for ``seconds``: the process and its "listening
    on" line (killed on the way out)."""
    proc = host.start_mcast("listen", group, "--iface", iface, "--json", "--timeout", str(seconds))
    try:
        yield proc, wait_for_line(proc.stderr, "listening on")
    finally:
        proc.kill()


def _heard(proc: subprocess.Popen[str]) -> tuple[list[dict[str, Any]], str]:
    """Once a listener is done: the datagrams it printed, and its stderr."""
    out, err = proc.communicate(timeout=30)
    return [r for r in _records(out) if "text" in r], err


def _cut(lab: Lab, side: int, number: int, state: str) -> None:
    """Pull (down) or plug (up) the cable of host ``number``'s eth0 (side 1) or eth1."""
    sh("ip", "link", "set", lab.dual_port(side, number), state)


def test_listen_on_all_interfaces_tells_the_arrival_interface(lab: Lab) -> None:
    sender, listener = lab.dual(2)
    with _listening(listener, GROUP, "all", 6) as (proc, started):
        assert "via eth0, eth1" in started
        time.sleep(0.3)
        _send(sender, "eth0", "by-eth0")
        _send(sender, "eth1", "by-eth1")
        both = _send(sender, "all", "by-both")
        assert both["interfaces"] == ["eth0", "eth1"]
        packets, err = _heard(proc)
    arrivals = sorted((r["text"], r["iface"], r["source"]) for r in packets)
    assert arrivals == [
        ("by-both", "eth0", "10.91.1.1"),
        ("by-both", "eth1", "10.91.2.1"),
        ("by-eth0", "eth0", "10.91.1.1"),
        ("by-eth1", "eth1", "10.91.2.1"),
    ], err


def test_ifaces_says_what_all_takes(lab: Lab) -> None:
    host, _ = lab.dual(2)
    host.run("ip", "link", "set", "eth1", "down", check=True)
    listed = {i["name"]: i["in_all"] for i in json.loads(host.mcast("ifaces", "--json").stdout)}
    assert listed["eth0"] == {"ipv4": True, "ipv6": True}
    assert listed["eth1"] == {"ipv4": False, "ipv6": False}  # down
    assert listed["lo"] == {"ipv4": False, "ipv6": False}
    assert "--iface all: IPv4/IPv6" in host.mcast("ifaces").stdout


def test_listen_on_one_interface_hears_only_that_one(lab: Lab) -> None:
    sender, listener = lab.dual(2)
    with _listening(listener, GROUP, "eth1", 4) as (proc, _):
        time.sleep(0.3)
        _send(sender, "eth0", "by-eth0")
        _send(sender, "eth1", "by-eth1")
        packets, _ = _heard(proc)
    assert [(r["text"], r["iface"]) for r in packets] == [("by-eth1", "eth1")]


def test_listen_follows_an_interface_that_goes_down_and_comes_back(lab: Lab) -> None:
    sender, listener = lab.dual(2)
    with _listening(listener, GROUP, "all", 12) as (proc, _):
        _cut(lab, 2, 2, "down")
        wait_for_line(proc.stdout, '"interface-down"', timeout=5)
        _send(sender, "eth1", "while-down")  # the link is cut: nothing can arrive
        _cut(lab, 2, 2, "up")
        wait_for_line(proc.stdout, '"interface-up"', timeout=5)
        time.sleep(0.3)
        _send(sender, "eth1", "after-up")
        _send(sender, "eth0", "on-eth0")
        packets, err = _heard(proc)
    heard = sorted((r["text"], r["iface"]) for r in packets)
    assert heard == [("after-up", "eth1"), ("on-eth0", "eth0")], err


def test_listen_on_all_before_any_interface_is_up_waits_for_one(lab: Lab) -> None:
    sender, listener = lab.dual(2)
    for iface in ("eth0", "eth1"):
        listener.run("ip", "link", "set", iface, "down", check=True)
    with _listening(listener, GROUP, "all", 8) as (proc, started):
        assert "via lo" in started
        wait_for_line(proc.stderr, "no interface is up with MULTICAST")
        listener.run("ip", "link", "set", "eth1", "up", check=True)
        up = json.loads(wait_for_line(proc.stdout, "interface-up", timeout=5))
        time.sleep(0.3)
        _send(sender, "eth1", "first-light")
        packets, err = _heard(proc)
    assert up["iface"] == "eth1"
    assert [(r["text"], r["iface"]) for r in packets] == [("first-light", "eth1")], err


def test_ipv6_link_scope_group_on_both_interfaces(lab: Lab) -> None:
    sender, listener = lab.dual(2)
    group = "[ff12::77:1]:6101"
    with _listening(listener, group, "all", 4) as (proc, _):
        time.sleep(0.3)
        for iface in ("eth0", "eth1"):
            result = sender.mcast("send", group, f"six-{iface}", "--iface", iface)
            assert result.returncode == 0, result.stderr
        packets, err = _heard(proc)
    heard = sorted((r["text"], r["iface"]) for r in packets)
    assert heard == [("six-eth0", "eth0"), ("six-eth1", "eth1")], err
    sources = {r["source"] for r in packets}
    assert all(s.startswith("fe80::") for s in sources)  # link-local senders, each link


def test_recv_file_on_all_interfaces_takes_a_transfer_on_either(lab: Lab, tmp_path: Path) -> None:
    sender, receiver = lab.dual(2)
    data = os.urandom(3_000_000)
    (tmp_path / "f.bin").write_bytes(data)
    out_dir = tmp_path / "in"
    out_dir.mkdir()
    group = "239.77.0.5:6105"
    got = receiver.start_mcast(
        "recv-file", "--group", group, "--iface", "all", "--dir", str(out_dir), "--json",
        "--wait", "30",
    )  # fmt: skip
    wait_for_line(got.stderr, "waiting for a transfer")
    sent = sender.mcast(
        "send-file", str(tmp_path / "f.bin"), "--group", group, "--iface", "eth1",
        "--receivers", "1", "--json", timeout=60,
    )  # fmt: skip
    _, err = got.communicate(timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert got.returncode == 0, err
    assert (out_dir / "f.bin").read_bytes() == data
    refused = sender.mcast("send-file", str(tmp_path / "f.bin"), "--iface", "all")
    assert refused.returncode == 2 and "one interface" in refused.stderr


def test_ping_on_all_interfaces_measures_each_path(lab: Lab) -> None:
    a, b = lab.dual(2)
    group = "239.77.0.6:6106"
    peer = b.start_mcast("ping", group, "--iface", "all", "--count", "8", "--json")
    time.sleep(0.5)
    done = a.mcast("ping", group, "--iface", "all", "--count", "4", "--json", timeout=30)
    peer.communicate(timeout=30)
    report = json.loads(done.stdout)
    assert done.returncode == 0, report
    assert report["interfaces"] == ["eth0", "eth1"]
    paths = {p["address"].split(":")[0]: p for p in report["peers"]}
    assert set(paths) == {"10.91.1.2", "10.91.2.2"}  # one host, two paths
    for found in paths.values():
        assert found["multicast"]["received"] > 0 and found["unicast"]["received"] > 0


def test_peers_prints_interface_events(lab: Lab) -> None:
    _other, watcher = lab.dual(2)
    peers = watcher.start_mcast("peers", "--group", GROUP, "--iface", "all", "--json")
    try:
        wait_for_line(peers.stderr, "via eth0, eth1")
        _cut(lab, 2, 2, "down")
        down = json.loads(wait_for_line(peers.stdout, "interface-down", timeout=5))
        _cut(lab, 2, 2, "up")
        up = json.loads(wait_for_line(peers.stdout, "interface-up", timeout=5))
    finally:
        peers.terminate()
        peers.communicate(timeout=10)
    assert down["iface"] == up["iface"] == "eth1" and up["addresses"] == ["10.91.2.2"]


NODE = r"""
import asyncio, json, sys
from mcastkit import Node

NAME, ROLE, COUNT = sys.argv[1], sys.argv[2], int(sys.argv[3])

async def main():
    async with Node(GROUP, iface="all", name=NAME, heartbeat=0.2, failure_timeout=3) as node:
        node.serve("who", lambda request: f"{NAME} here")
        events = []
        async def watch():
            async for event in node.events():
                if hasattr(event, "to_dict") and not hasattr(event, "peer"):
                    events.append(event.to_dict())
                    print("EVENT", json.dumps(event.to_dict()), flush=True)
        node.run_task(watch())
        sub = node.subscribe("data")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not node.peers and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6)  # hellos on both paths
        print("READY", flush=True)
        got = []
        if ROLE == "send":
            for n in range(COUNT):
                await node.publish("data", f"{n:06d}".encode() * 500, reliable=True)
                await asyncio.sleep(0.004)
            await node.flush(timeout=20)
            gathered = await node.request("who", timeout=2)
            print("REPLIES", json.dumps(gathered.to_dict()["replies"]), flush=True)
            peers = {p.name: p.to_dict() for p in node.peers.values()}
            await asyncio.sleep(0.5)
        else:
            while len(got) < COUNT:
                message = await sub.get(timeout=25)
                if message is None:
                    break
                got.append((message.payload[:6].decode(), message.iface))
            peers = {p.name: p.to_dict() for p in node.peers.values()}
            await asyncio.sleep(2.5)  # stay a member until the sender has looked
        print("RESULT", json.dumps({
            "got": got,
            "peers": peers,
            "interfaces": node.interfaces,
            "counters": {k: v for k, v in node.counters.items()
                         if k.startswith(("dup", "dropped", "interface"))},
            "stats": node.reliable_stats(),
        }), flush=True)

asyncio.run(main())
""".replace("GROUP", repr(GROUP))


def _result(proc: subprocess.Popen[str]) -> tuple[dict[str, Any], str, str]:
    out, err = proc.communicate(timeout=60)
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, (out, err[-3000:])
    return json.loads(line[len("RESULT ") :]), out, err


def test_a_node_on_two_interfaces_is_one_member_with_two_paths(lab: Lab) -> None:
    a, b = lab.dual(2)
    receiver = b.start(PYTHON, "-c", NODE, "b", "receive", "40")
    sender = a.start(PYTHON, "-c", NODE, "a", "send", "40")
    try:
        wait_for_line(sender.stdout, "READY", timeout=15)
        sent, sent_out, _ = _result(sender)
        got, _, err = _result(receiver)
    finally:
        sender.kill()
        receiver.kill()
    seqs = [text for text, _ in got["got"]]
    assert seqs == [f"{n:06d}" for n in range(40)], err[-2000:]  # each once, in order
    assert {iface for _, iface in got["got"]} <= {"eth0", "eth1"}
    assert got["counters"].get("duplicates", 0) > 0  # the second path's copies
    assert not any(k.startswith("dropped") for k in got["counters"]), got["counters"]
    paths = got["peers"]["a"]["paths"]
    assert set(paths) == {"eth0", "eth1"}
    assert paths["eth0"].startswith("10.91.1.1:") and paths["eth1"].startswith("10.91.2.1:")
    assert got["interfaces"] == sent["interfaces"] == ["eth0", "eth1"]
    assert set(sent["peers"]["b"]["paths"]) == {"eth0", "eth1"}
    grtt = sent["stats"]["sender"]["grtt_ms"]  # measured from b's echoes of our probes
    assert 0 < grtt < 50 and list(sent["stats"]["sender"]["rtt_ms"].values()) != []
    replies = json.loads(next(x for x in sent_out.splitlines() if x.startswith("REPLIES "))[8:])
    assert [r["payload"] for r in replies] == ["b here"]  # one member, one answer


def test_a_link_cut_and_restored_mid_stream_loses_nothing(lab: Lab) -> None:
    a, b = lab.dual(2)
    receiver = b.start(PYTHON, "-c", NODE, "b", "receive", "300")
    sender = a.start(PYTHON, "-c", NODE, "a", "send", "300")
    try:
        wait_for_line(sender.stdout, "READY", timeout=15)
        time.sleep(0.4)
        _cut(lab, 2, 2, "down")  # b's eth1: b leaves there, a's copies on eth1 are lost
        time.sleep(0.6)
        _cut(lab, 2, 2, "up")
        time.sleep(0.3)
        _cut(lab, 1, 1, "down")  # then a's eth0: a goes on through eth1 alone
        sent, sent_out, _ = _result(sender)
        got, out, err = _result(receiver)
    finally:
        sender.kill()
        receiver.kill()
        _cut(lab, 1, 1, "up")
    seqs = [text for text, _ in got["got"]]
    assert seqs == [f"{n:06d}" for n in range(300)], err[-2000:]  # all, once, in order

    def events(text: str) -> list[tuple[str, str]]:
        found = [json.loads(x[6:]) for x in text.splitlines() if x.startswith("EVENT ")]
        return [(e["event"], e["iface"]) for e in found]

    assert events(out)[:2] == [("interface-down", "eth1"), ("interface-up", "eth1")]
    assert ("interface-down", "eth0") in events(sent_out)
    assert sent["interfaces"] == ["eth1"]
    assert "reliable-unrecoverable" not in got["counters"]


ADDRESS = r"""
import asyncio, json, sys
from mcastkit import Node

async def main():
    async with Node(GROUP, iface="eth0", name=sys.argv[1], heartbeat=0.2) as node:
        async def watch():
            async for event in node.events():
                if hasattr(event, "added"):
                    print("EVENT", json.dumps(event.to_dict()), flush=True)
        node.run_task(watch())
        print("READY", flush=True)
        seen = set()
        for _ in range(int(float(sys.argv[2]) / 0.1)):
            await asyncio.sleep(0.1)
            for peer in node.peers.values():
                if peer.address and peer.address[0] not in seen:
                    seen.add(peer.address[0])
                    print("PEER-AT", peer.address[0], flush=True)

asyncio.run(main())
""".replace("GROUP", repr(GROUP))


LATE = r"""
import asyncio, json, sys
from mcastkit import InterfaceUp, Node

async def main():
    async with Node(GROUP, iface=sys.argv[1], name=sys.argv[2], heartbeat=0.2) as node:
        print("READY", json.dumps(node.interfaces), flush=True)
        async def watch():
            async for event in node.events(InterfaceUp):
                print("UP", event.name, flush=True)
        node.run_task(watch())
        loop = asyncio.get_running_loop()
        end = loop.time() + float(sys.argv[3])
        # A member is known by name once its hello is in (a heartbeat may come first).
        while loop.time() < end and not any(p.hello_seen for p in node.peers.values()):
            await asyncio.sleep(0.05)
        print("RESULT", json.dumps({"peers": [p.name for p in node.peers.values()],
                                    "interfaces": node.interfaces}), flush=True)
        await asyncio.sleep(1.0)  # stay a member while the other side looks

asyncio.run(main())
""".replace("GROUP", repr(GROUP))


def test_a_node_on_all_started_before_the_network_joins_when_it_comes(lab: Lab) -> None:
    late, other = lab.dual(2)
    for iface in ("eth0", "eth1"):
        late.run("ip", "link", "set", iface, "down", check=True)
    waiting = late.start(PYTHON, "-c", LATE, "all", "late", "10")
    assert wait_for_line(waiting.stdout, "READY").split(" ", 1)[1].strip() == "[]"
    peer = other.start(PYTHON, "-c", LATE, "eth0", "other", "10")
    wait_for_line(peer.stdout, "READY")
    late.run("ip", "link", "set", "eth0", "up", check=True)
    wait_for_line(waiting.stdout, "UP eth0", timeout=5)
    out, err = waiting.communicate(timeout=20)
    peer.communicate(timeout=20)
    result = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])
    assert result == {"peers": ["other"], "interfaces": ["eth0"]}, err


def test_a_new_address_is_announced_and_peers_move_to_it(lab: Lab) -> None:
    a, b = lab.dual(2)
    watcher = b.start(PYTHON, "-c", ADDRESS, "b", "8")
    mover = a.start(PYTHON, "-c", ADDRESS, "a", "6")
    try:
        wait_for_line(watcher.stdout, "PEER-AT 10.91.1.1", timeout=10)
        # As a DHCP renewal with a new lease would: the new address first, then the old
        # one goes (promoted, so the new one is not removed with it).
        a.run("sysctl", "-qw", "net.ipv4.conf.eth0.promote_secondaries=1", check=True)
        sh("ip", "-n", a.name, "addr", "add", "10.91.1.101/24", "dev", "eth0")
        sh("ip", "-n", a.name, "addr", "del", "10.91.1.1/24", "dev", "eth0")
        line = wait_for_line(mover.stdout, '"removed": ["10.91.1.1"]', timeout=5)
        event = json.loads(line.split(" ", 1)[1])
        assert event["event"] == "interface-address"
        assert event["addresses"] == ["10.91.1.101"]
        wait_for_line(watcher.stdout, "PEER-AT 10.91.1.101", timeout=5)
    finally:
        mover.kill()
        watcher.kill()
