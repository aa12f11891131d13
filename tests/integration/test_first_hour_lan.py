"""The first hour on a network (issue 25): what a new user meets on real links. A membership
report when a carrier returns (seen with tcpdump on the wire), ..."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from netlab import Host, Lab, require_tool, sh, wait_for_line

REPORT_FILTERS = {
    # IGMP membership reports (v1 0x12, v2 0x16, v3 0x22), not queries or leaves; the IP
    # header carries the router alert option, so the IGMP type sits after ip[0]'s length
    4: "igmp and (ip[(ip[0] & 0xf) << 2] == 0x12 or ip[(ip[0] & 0xf) << 2] == 0x16"
    " or ip[(ip[0] & 0xf) << 2] == 0x22)",
    # MLD reports (v1 131, v2 143) after the hop-by-hop header (8 bytes), which the icmp6
    # primitive does not look past
    6: "ip6[6] == 0 and ip6[40] == 58 and (ip6[48] == 131 or ip6[48] == 143)",
}


def _capture_reports(host: Host, family: int) -> subprocess.Popen[str]:
    tcpdump = require_tool("tcpdump")
    capture = host.start(tcpdump, "-l", "-n", "-i", "eth0", REPORT_FILTERS[family])
    wait_for_line(capture.stderr, "listening on")
    return capture


@pytest.mark.parametrize(
    ("family", "group"), [(4, "239.77.5.1:6150"), (6, "[ff15::77:5]:6151")], ids=["igmp", "mld"]
)
@pytest.mark.parametrize("command", ["listen", "subscribe"])
def test_a_returning_carrier_sends_a_membership_report(
    lab: Lab, family: int, group: str, command: str
) -> None:
    (host,) = lab.lan(1)
    if command == "listen":
        member = host.start_mcast("listen", group, "--iface", "eth0", "--json", "--timeout", "20")
    else:
        member = host.start_mcast(
            "subscribe", "t", "--group", group, "--iface", "eth0", "--json", "--timeout", "20"
        )
    try:
        wait_for_line(member.stderr, "listening on" if command == "listen" else "subscribed")
        sh("ip", "link", "set", lab.port(1), "down")  # the cable is pulled at the switch
        if command == "listen":
            wait_for_line(member.stdout, '"interface-down"', timeout=8)
        time.sleep(3)  # the reports of the first join are long done
        capture = _capture_reports(host, family)
        sh("ip", "link", "set", lab.port(1), "up")
        if command == "listen":
            wait_for_line(member.stdout, '"interface-up"', timeout=8)
        # Before: "joined there", and not a report on the wire until the next query.
        report = wait_for_line(capture.stdout, "", timeout=8)
        assert report
        capture.kill()
    finally:
        member.kill()


def _link_local(host: Host) -> str:
    shown = host.run("ip", "-6", "addr", "show", "dev", "eth0", "scope", "link", check=True)
    found = re.search(r"inet6 (fe80::[0-9a-f:]+)/", shown.stdout)
    assert found, shown.stdout
    return found.group(1)


@pytest.mark.parametrize("form", ["{}%eth0", "{}", "[{}%eth0]:7777"])
def test_send_from_a_link_local_source(lab: Lab, form: str) -> None:
    sender, receiver = lab.lan(2)
    source = _link_local(sender)
    group = "[ff15::77:6]:6152"
    listener = receiver.start_mcast("listen", group, "--iface", "eth0", "--json", "--count", "1")
    wait_for_line(listener.stderr, "listening on")
    # Before: "binding source fe80::...%eth0 failed: Invalid argument; it must be an address
    # of this host" (the zone was dropped, and a link-local bind needs one)
    sent = sender.mcast("send", group, "hi", "--iface", "eth0", "--source", form.format(source))
    assert sent.returncode == 0, sent.stderr
    out, err = listener.communicate(timeout=20)
    record = json.loads(out.splitlines()[0])
    assert record["source"] == f"{source}%eth0", err  # the zone a reply needs, by name
    assert record["source_port"] == (7777 if "7777" in form else record["source_port"])


def test_ping_a_link_local_peer_where_multicast_is_dropped(lab: Lab) -> None:
    prober, peer = lab.lan(2)
    table = f"{lab.tag}v6"
    sh("nft", "add", "table", "bridge", table)
    lab.tables.append(table)
    sh("nft", "add", "chain", "bridge", table, "c", "{ type filter hook forward priority 0; }")
    # The group's UDP only: neighbour discovery (multicast too) must pass for unicast to work.
    sh("nft", f"add rule bridge {table} c ip6 daddr ff00::/8 udp dport 6153 counter drop")
    address = _link_local(peer)
    group = "[ff15::77:7]:6153"
    answering = peer.start_mcast("ping", group, "--iface", "eth0", "--duration", "7")
    time.sleep(0.5)
    done = prober.mcast(
        "ping", group, "--iface", "eth0", "--duration", "4", "--json",
        "--peer", f"[{address}%eth0]",
    )  # fmt: skip
    answering.kill()
    answering.communicate(timeout=10)
    summary = json.loads(done.stdout)
    # Before: no peers, "no peers answered" (the probes went out without their zone).
    (found,) = summary["peers"]
    assert found["address"] == f"[{address}%eth0]:6153"
    assert found["unicast"]["answered"] >= 2
    assert found["multicast"]["received"] == 0 and done.returncode == 1  # the verdict stands
    assert lab.multicast_dropped() > 0
