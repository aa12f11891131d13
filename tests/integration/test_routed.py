"""Groups across a router: two subnets joined by a namespace router that routes multicast
with smcroute (static routes), as a small site with one multicast router would.

Everything that works on one LAN must work across it with a TTL above 1, and TTL 1 must
stay on its subnet. Repairs and answers come back by unicast, routed the ordinary way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netlab import Host, Lab, nft_drop, require_tool, the_message, wait_for_line

TTL = ("--ttl", "4")


PIMD_CONF = """frr defaults traditional
hostname router
ip prefix-list ssm-range seq 5 permit 232.0.0.0/8 ge 32
ip pim ssm prefix-list ssm-range
interface lo
 ip pim
interface ra
 ip pim
 ip igmp
 ip igmp version 3
interface rb
 ip pim
 ip igmp
 ip igmp version 3
"""


def _smcroute(router: Host, work: Path) -> list[subprocess.Popen[str]]:
    smcrouted = require_tool("smcrouted")
    conf = work / "smcroute.conf"
    conf.write_text(
        "phyint ra enable\nphyint rb enable\n"
        "mroute from ra group 239.0.0.0/8 to rb\nmroute from rb group 239.0.0.0/8 to ra\n"
        "mroute from ra group ff15::/16 to rb\nmroute from rb group ff15::/16 to ra\n"
    )
    daemon = router.start(
        smcrouted, "-n", "-N", "-f", str(conf), "-l", "debug",
        "-u", str(work / "smcroute.sock"), "-P", str(work / "smcroute.pid"),
    )  # fmt: skip
    wait_for_line(daemon.stderr, "Ready")
    return [daemon]


def _pimd(router: Host, work: Path) -> list[subprocess.Popen[str]]:
    """FRR's zebra and pimd: PIM-SM with the router as static RP for 239/8 (on its
    loopback, 10.90.0.1), IGMPv3 on both links, SSM for 232/8."""
    zebra, pimd = Path("/usr/lib/frr/zebra"), Path("/usr/lib/frr/pimd")
    vtysh = require_tool("vtysh")
    if not (zebra.exists() and pimd.exists()):
        pytest.skip("FRR is not installed (scripts/test.sh installs frr as root)")
    work.chmod(0o777)  # the daemons drop to the frr user
    (work / "zebra.conf").write_text("hostname router\n")
    (work / "pimd.conf").write_text(PIMD_CONF)
    router.run("ip", "addr", "add", "10.90.0.1/32", "dev", "lo", check=True)
    common = ("-u", "frr", "-g", "frr", "--log", "stdout", "-P", "0", "--vty_socket", str(work),
              "-z", str(work / "zserv.api"), "-N", work.name)  # fmt: skip
    daemons = [
        router.start(
            str(zebra), "-f", str(work / "zebra.conf"), "-i", str(work / "z.pid"), *common
        ),
    ]
    time.sleep(1.0)
    daemons.append(
        router.start(str(pimd), "-f", str(work / "pimd.conf"), "-i", str(work / "p.pid"), *common)
    )
    # The RP only once zebra has told pimd the routes (set at start, it has no path to it).
    deadline = time.monotonic() + 15
    while True:
        done = router.run(vtysh, "--vty_socket", str(work), "-c", "configure terminal",
                          "-c", "ip pim rp 10.90.0.1 239.0.0.0/8", "-c", "end",
                          "-c", "show ip pim rp-info")  # fmt: skip
        if done.returncode == 0 and "10.90.0.1" in done.stdout:
            return daemons
        assert time.monotonic() < deadline, (done.stdout, done.stderr)
        time.sleep(0.5)


@pytest.fixture(params=["smcroute", "pimd"])
def routed(
    request: pytest.FixtureRequest, lab: Lab, tmp_path: Path
) -> Iterator[tuple[list[Host], Host, list[Host]]]:
    """Two hosts on subnet A, the router, two on subnet B. The router runs smcroute (static
    routes for 239/8 and ff15::/16 both ways) or FRR's pimd (PIM-SM, static RP, IGMPv3,
    SSM for 232/8)."""
    side_a, router, side_b = lab.routed(2)
    # FRR's daemons drop to the frr user: their directory must be reachable for it (pytest's
    # tmp_path is not), so it lives directly under /tmp.
    work = Path(tempfile.mkdtemp(prefix=f"mcastkit-{request.param}-"))
    try:
        daemons = (_smcroute if request.param == "smcroute" else _pimd)(router, work)
        try:
            yield side_a, router, side_b
        finally:
            for daemon in daemons:
                daemon.terminate()
                daemon.communicate(timeout=10)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _listen(host: Host, group: str, *args: str) -> subprocess.Popen[str]:
    proc = host.start_mcast("listen", group, "--json", *args)
    wait_for_line(proc.stderr, "listening on")
    return proc


def test_ttl_above_one_crosses_and_ttl_one_stays_home(routed) -> None:
    (a1, a2), _router, (b1, _b2) = routed
    group = "239.7.1.1:6001"
    far = _listen(b1, group, "--timeout", "3")
    near = _listen(a2, group, "--timeout", "3")
    assert a1.mcast("send", group, "local-only", "--count", "3", "--ttl", "1").returncode == 0
    assert a1.mcast("send", group, "routed", "--count", "3", *TTL).returncode == 0
    far_lines = [json.loads(line) for line in far.communicate(timeout=20)[0].splitlines()]
    near_lines = [json.loads(line) for line in near.communicate(timeout=20)[0].splitlines()]
    far_texts = [r["text"] for r in far_lines if "text" in r]
    near_texts = [r["text"] for r in near_lines if "text" in r]
    assert far_texts == ["routed"] * 3, far_lines  # TTL 1 never crossed
    assert sorted(near_texts) == ["local-only"] * 3 + ["routed"] * 3
    assert {r["ttl"] for r in far_lines if "ttl" in r} == {3}  # one router: one hop


def test_ipv6_across_the_router_and_hop_limit_one_stays_home(routed, request) -> None:
    if "pimd" in request.node.name:
        pytest.skip("pimd here routes IPv4 only (FRR's pim6d is not in Debian 12's frr 8.4)")
    (a1, _a2), _router, (b1, _b2) = routed
    group = "[ff15::7:1]:6006"
    far = _listen(b1, group, "--timeout", "3")
    assert a1.mcast("send", group, "local-only", "--count", "3", "--ttl", "1").returncode == 0
    assert a1.mcast("send", group, "routed", "--count", "3", *TTL).returncode == 0
    lines = [json.loads(line) for line in far.communicate(timeout=20)[0].splitlines()]
    assert [r["text"] for r in lines if "text" in r] == ["routed"] * 3, lines
    assert {r["source"] for r in lines if "source" in r} == {"fd90:1::1"}


def test_source_specific_group_across(routed, request) -> None:
    if "smcroute" in request.node.name:
        pytest.skip("the static routes cover 239/8 and ff15::/16, not 232/8")
    (a1, _a2), _router, (b1, _b2) = routed
    group = "232.7.1.7:6007"
    ssm = _listen(b1, group, "--source", a1.ipv4, "--timeout", "3")
    other = _listen(b1, "232.7.1.7:6007", "--source", "10.90.1.99", "--timeout", "3")
    assert a1.mcast("send", group, "ssm", "--count", "5", "--interval", "0.2", *TTL).returncode == 0
    lines = [json.loads(line) for line in ssm.communicate(timeout=20)[0].splitlines()]
    assert [r["text"] for r in lines if "text" in r], lines  # (S,G) joined across PIM
    others = [json.loads(line) for line in other.communicate(timeout=20)[0].splitlines()]
    assert not [r for r in others if "text" in r]  # another source: nothing


def test_ping_across_shows_the_hop(routed) -> None:
    (a1, _a2), _router, (b1, _b2) = routed
    group = "239.7.1.2:6002"
    peer = b1.start_mcast("ping", group, *TTL, "--count", "8", "--json")
    time.sleep(0.5)
    done = a1.mcast("ping", group, *TTL, "--count", "4", "--json", timeout=30)
    peer.communicate(timeout=30)
    report = json.loads(done.stdout)
    assert done.returncode == 0, report
    (peer,) = [p for p in report["peers"] if p["address"].startswith("10.90.2.1")]
    multicast = peer["multicast"]
    assert multicast["hops"] == 1 and multicast["received"] > 0, peer
    assert peer["unicast"]["received"] > 0  # answers came back, routed


def test_the_demo_greets_across(routed) -> None:
    (a1, _a2), _router, (b1, _b2) = routed
    group = "239.7.1.4:6004"
    demo = ("demo", group, *TTL, "--expect", "1", "--duration", "15", "--json")
    near = a1.start_mcast(*demo)
    wait_for_line(near.stderr, "demo on")
    far = b1.start_mcast(*demo)
    out_near, err_near = near.communicate(timeout=30)
    out_far, err_far = far.communicate(timeout=30)
    assert near.returncode == 0 and far.returncode == 0, (err_near, err_far)
    (node,) = json.loads(out_far.splitlines()[-1])["summary"]["nodes"]
    (other,) = json.loads(out_near.splitlines()[-1])["summary"]["nodes"]
    assert node["greeted_by"] == [other["id"]] and node["answered_by"] == [other["id"]]
    sources = [json.loads(line)["event"].get("source", "") for line in out_far.splitlines()[:-1]]
    assert any(s.startswith("10.90.1.1:") for s in sources)  # from the other subnet


def test_membership_and_request_reply_across(routed) -> None:
    (a1, _a2), _router, (b1, _b2) = routed
    group = ("--group", "239.7.1.3:6003", *TTL)
    server = b1.start_mcast("serve", "time", "--reply", "noon", *group, "--name", "far-server")
    wait_for_line(server.stderr, "serving")
    try:
        peers = a1.mcast("peers", "--once", "--wait", "3", "--json", *group, timeout=30)
        names = [p["name"] for p in json.loads(peers.stdout)["peers"]]
        assert "far-server" in names, peers.stdout
        reply = a1.mcast("request", "time", "--timeout", "3", "--json", *group, timeout=30)
        assert reply.returncode == 0, reply.stderr
        assert "far-server" in reply.stdout
    finally:
        server.terminate()
        server.communicate(timeout=10)


def test_send_file_across_with_loss_and_repairs_coming_back(routed, tmp_path: Path) -> None:
    (a1, _a2), _router, (b1, b2) = routed
    data = os.urandom(8_000_000)
    source = tmp_path / "across.bin"
    source.write_bytes(data)
    for host in (b1, b2):
        nft_drop(host, "ip daddr 239.0.0.0/8 numgen random mod 100 < 5 drop")
    group = ("--group", "239.7.1.4:6004")
    procs = []
    for host in (b1, b2):
        proc = host.start_mcast("recv-file", *group, "--dir", str(tmp_path / host.name),
                                "--parents", "--wait", "30", "--json")  # fmt: skip
        wait_for_line(proc.stderr, "waiting for a transfer")
        procs.append(proc)
    done = a1.mcast("send-file", str(source), *group, *TTL, "--receivers", "2", "--json",
                    timeout=120)  # fmt: skip
    summary = json.loads(done.stdout)
    assert done.returncode == 0 and summary["ok"], summary
    assert summary["blocks_sent"] > summary["blocks"]  # repairs, asked for across the router
    for host, proc in zip((b1, b2), procs, strict=True):
        assert json.loads(proc.communicate(timeout=30)[0])["state"] == "complete"
        copy = (tmp_path / host.name / "across.bin").read_bytes()
        assert hashlib.sha256(copy).digest() == hashlib.sha256(data).digest()


def test_reliable_publish_across_with_loss(routed, tmp_path: Path) -> None:
    (a1, _a2), _router, (b1, _b2) = routed
    data = os.urandom(32 << 20)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    nft_drop(b1, "ip daddr 239.0.0.0/8 numgen random mod 100 < 5 drop")
    args = ("--group", "239.7.1.5:6005", *TTL, "--json")
    sub = b1.start_mcast("subscribe", "big", "--count", "1", "--timeout", "120", *args)
    wait_for_line(sub.stderr, "subscribed")
    done = a1.mcast("publish", "big", "--reliable", "--file", str(path), "--wait", "10",
                    "--peers", "1", *args, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["repairs_sent"] > 0  # NACKs crossed back, repairs crossed over
    out, err = sub.communicate(timeout=120)
    assert sub.returncode == 0, err
    record = the_message(out)
    assert record["size"] == 32 << 20
    assert record["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_silent_listener_behind_a_router_is_told_about_the_ttl(lab: Lab) -> None:
    (a1, _a2), _router, (b1, _b2) = lab.routed(per_subnet=2)
    group = "239.7.1.9:6009"
    far = b1.start_mcast("listen", group, "--timeout", "2.5")
    wait_for_line(far.stderr, "listening on")
    assert a1.mcast("send", group, "ttl-one", "--count", "3").returncode == 0  # TTL 1
    _, err = far.communicate(timeout=20)
    assert far.returncode == 1
    assert "A router is on this link (10.90.2.254)" in err, err
    assert f"mcast send {group} TEXT --ttl 4" in err
    assert f"mcast ping {group} --ttl 8" in err
    link_local = b1.mcast("listen", "[ff02::7:9]:6009", "--iface", "eth0", "--timeout", "0.5")
    assert "(fd90:2::fe), but ff02::7:9 is link-local" in link_local.stderr
    alone = b1.mcast("peers", "--group", group, "--once", "--wait", "0.5")
    assert "0 peer(s)" in alone.stderr and "A router is on this link (10.90.2.254)" in alone.stderr
    assert f"mcast peers --group {group} --ttl 4" in alone.stderr
    waited = b1.mcast("recv-file", "--group", group, "--wait", "0.5", "--dir", "/tmp")
    said = waited.stdout + waited.stderr
    assert waited.returncode == 1 and "no transfer announced" in said
    assert "A router is on this link" in said and "send-file --ttl 4" in said, said


def test_a_lone_demo_and_a_sender_nobody_took_behind_a_router_are_told_about_the_ttl(
    lab: Lab, tmp_path: Path
) -> None:
    (a1,), _router, (b1,) = lab.routed(per_subnet=1)
    group = "239.7.1.10:6010"
    # Before: the demo ran on in silence, and send-file said "start recv-file first" only.
    lone = b1.start_mcast("demo", group, "--duration", "7")
    other = a1.start_mcast("demo", group, "--duration", "7")  # TTL 1: never crosses
    said = wait_for_line(lone.stderr, "no other node heard yet", timeout=10)
    assert "A router is on this link (10.90.2.254)" in said
    assert "mcast demo --ttl 4 on every host" in said
    for proc in (lone, other):
        proc.communicate(timeout=20)
    data = tmp_path / "f.bin"
    data.write_bytes(b"x" * 10_000)
    sent = b1.mcast("send-file", str(data), "--group", group, "--wait", "0.5")
    assert sent.returncode == 1
    assert "nothing delivered: no receiver registered within 0.5s" in sent.stdout
    assert "A router is on this link" in sent.stderr and "send-file --ttl 4" in sent.stderr
    assert "MB/s" not in sent.stdout  # no rate for nothing delivered
    as_json = json.loads(
        b1.mcast("send-file", str(data), "--group", group, "--wait", "0.5", "--json").stdout
    )
    assert as_json["mb_per_s"] == 0 and "--ttl 4" in as_json["hint"]


def test_a_silent_listener_without_a_router_is_not_sent_after_one(lab: Lab) -> None:
    _sender, listener = lab.lan(2)
    result = listener.mcast("listen", "239.7.1.9:6009", "--timeout", "0.5")
    assert result.returncode == 1
    assert "Is a sender on this link?" in result.stderr and "router" not in result.stderr
