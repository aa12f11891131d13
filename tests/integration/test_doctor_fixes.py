"""Every doctor finding, made for real on a namespace host, cleared by its own printed fix.

Each test builds the fault, runs ``mcast doctor --json``, checks the finding, runs the
commands the finding carries (exactly as printed), runs doctor again and checks the finding
is gone and the live self-test passes.
"""

from __future__ import annotations

import json

import pytest
from netlab import Host, Lab, require_tool, wait_for_line

V4 = "239.255.77.82:5082"
V6 = "[ff15::77]:5082"


def _doctor(host: Host, *args: str) -> dict:
    done = host.mcast("doctor", "--json", "--wait", "0", *args)
    assert done.stdout, done.stderr
    report = json.loads(done.stdout)
    report["code"] = done.returncode
    return report


def _findings(report: dict, check: str, *severities: str) -> list[dict]:
    wanted = severities or ("warning", "error")
    return [f for f in report["findings"] if f["check"] == check and f["severity"] in wanted]


def _apply(host: Host, findings: list[dict]) -> None:
    assert findings, "nothing to fix"
    for finding in findings:
        assert finding["commands"], finding
        for command in finding["commands"]:
            done = host.run(*command)
            assert done.returncode == 0, (command, done.stderr)


def _fixed(host: Host, check: str, *args: str) -> dict:
    """Apply the fixes of ``check``'s findings, then the report after them."""
    _apply(host, _findings(_doctor(host, *args), check))
    after = _doctor(host, *args)
    assert _findings(after, check) == [], after
    return after


def _self_test_ok(report: dict) -> bool:
    return any(f["check"] == "self-test" and f["severity"] == "ok" for f in report["findings"])


def _nft(host: Host, *commands: str) -> None:
    require_tool("nft")
    for command in commands:
        done = host.run("nft", command)
        assert done.returncode == 0, (command, done.stderr)


@pytest.mark.parametrize("group", [V4, V6])
def test_input_policy_drop(lab: Lab, group: str) -> None:
    (host,) = lab.lan(1)
    _nft(
        host,
        "add table inet fw",
        "add chain inet fw in { type filter hook input priority 0; policy drop; }",
    )
    report = _doctor(host, group)
    assert report["code"] == 2 and not _self_test_ok(report)
    what = [f["what"] for f in _findings(report, "firewall")]
    assert any("drops UDP to" in w and "its policy" in w for w in what), what
    after = _fixed(host, "firewall", group)
    assert _self_test_ok(after) and after["code"] == 0, after


@pytest.mark.parametrize(
    ("group", "rule"),
    [(V4, "ip protocol igmp drop"), (V6, "icmpv6 type mld2-listener-report drop")],
)
def test_output_membership_reports_dropped(lab: Lab, group: str, rule: str) -> None:
    (host,) = lab.lan(1)
    _nft(host, "add table inet fw", "add chain inet fw out { type filter hook output priority 0; }",
         f"add rule inet fw out {rule}")  # fmt: skip
    report = _doctor(host, group)
    (finding,) = _findings(report, "firewall")
    assert finding["severity"] == "error" and "reports out" in finding["what"]
    assert _self_test_ok(report)  # the data path works: only the joins are silenced
    _fixed(host, "firewall", group)


def test_accepts_before_the_policy_and_other_ports_are_not_findings(lab: Lab) -> None:
    (host,) = lab.lan(1)
    _nft(
        host,
        "add table inet fw",
        "add chain inet fw in { type filter hook input priority 0; policy drop; }",
        "add rule inet fw in ip daddr 239.255.77.82 udp dport 5082 accept",
        "add rule inet fw in ip protocol igmp accept",
        "add rule inet fw in udp sport 5082 accept",
        "add chain inet fw out { type filter hook output priority 0; }",
        "add rule inet fw out udp dport 5999 drop",  # another port: not our group's
        "add rule inet fw out ip6 daddr ff00::/8 drop",  # another family
    )
    report = _doctor(host, V4)
    assert _findings(report, "firewall") == [], report
    assert _findings(report, "firewall", "ok") and _self_test_ok(report)


def test_iptables_nft_rule_is_reported_once_and_fixed(lab: Lab) -> None:
    (host,) = lab.lan(1)
    iptables = require_tool("iptables-nft")
    host.run(iptables, "-A", "INPUT", "-d", "239.0.0.0/8", "-p", "udp", "-j", "DROP", check=True)
    report = _doctor(host, V4)
    findings = _findings(report, "firewall")
    assert len(findings) == 1 and "ip filter INPUT" in findings[0]["what"], findings
    after = _fixed(host, "firewall", V4)
    assert _self_test_ok(after)
    listed = host.run(iptables, "-S", "INPUT").stdout  # iptables still reads its chain
    assert "-j ACCEPT" in listed and "-j DROP" in listed


def test_iptables_legacy_rules(lab: Lab) -> None:
    (host,) = lab.lan(1)
    legacy = require_tool("iptables-legacy")
    host.run(legacy, "-A", "INPUT", "-p", "udp", "--dport", "5000:6000", "-j", "DROP", check=True)
    host.run(legacy, "-A", "OUTPUT", "-p", "igmp", "-j", "REJECT", check=True)
    report = _doctor(host, V4)
    what = " ".join(f["what"] for f in _findings(report, "firewall", "error"))
    assert "iptables-legacy filter INPUT drops UDP" in what
    assert "iptables-legacy filter OUTPUT drops IGMP reports out" in what
    after = _fixed(host, "firewall", V4)
    assert _self_test_ok(after)


def test_rp_filter_with_a_source_routed_elsewhere_and_with_no_route(lab: Lab) -> None:
    (host,) = lab.lan(1)
    host.run("ip", "link", "add", "side0", "type", "veth", "peer", "name", "side1", check=True)
    host.run("ip", "addr", "add", "10.77.0.1/24", "dev", "side0", check=True)
    for link in ("side0", "side1"):
        host.run("ip", "link", "set", link, "up", check=True)
    host.run("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", check=True)
    report = _doctor(host, V4, "--source", "10.77.0.5")
    (finding,) = _findings(report, "rp_filter")
    assert finding["severity"] == "error" and "routed out of side0" in finding["what"]
    _fixed(host, "rp_filter", V4, "--source", "10.77.0.5")
    # No route at all: loose mode drops it too, and the doctor says so.
    host.run("ip", "route", "del", "default", check=True)
    host.run("ip", "route", "add", "224.0.0.0/4", "dev", "eth0", check=True)
    report = _doctor(host, V4, "--source", "192.0.2.9")
    (finding,) = _findings(report, "rp_filter")
    assert "no route back" in finding["what"] and "loose mode drops it too" in finding["why"]
    after = _fixed(host, "rp_filter", V4, "--source", "192.0.2.9")
    assert _self_test_ok(after)


@pytest.mark.parametrize(
    ("family", "listen", "sysctl"),
    [
        (4, ("232.1.1.1:5000", "--source", "10.88.0.9"),
         "net.ipv4.conf.eth0.force_igmp_version=2"),
        (6, ("[ff3e::8000:1]:5000", "--source", "fd88::9"),
         "net.ipv6.conf.all.force_mld_version=1"),
    ],
)  # fmt: skip
def test_forced_old_igmp_or_mld_with_a_live_ssm_join(
    lab: Lab, family: int, listen: tuple[str, ...], sysctl: str
) -> None:
    (host,) = lab.lan(1)
    host.run("sysctl", "-qw", sysctl, check=True)
    listener = host.start_mcast("listen", *listen, "--iface", "eth0")
    try:
        wait_for_line(listener.stderr, "listening")
        group = V4 if family == 4 else V6
        report = _doctor(host, group)  # any group: the live SSM join is what matters
        (finding,) = _findings(report, "igmp")
        assert finding["severity"] == "error" and "source-specific join is live" in finding["what"]
        # Plain doctor (its IPv4 default group) finds a live IPv6 join's forced MLDv1 too.
        (plain,) = _findings(_doctor(host), "igmp")
        assert plain["what"] == finding["what"] and plain["commands"] == finding["commands"]
        _fixed(host, "igmp", group)
    finally:
        listener.terminate()
        listener.communicate(timeout=10)


def test_listen_with_a_source_warns_when_igmp_is_forced_old(lab: Lab) -> None:
    (host,) = lab.lan(1)
    host.run("sysctl", "-qw", "net.ipv4.conf.eth0.force_igmp_version=2", check=True)
    listener = host.start_mcast("listen", "232.1.1.1:5000", "--source", "10.88.0.9")
    try:
        line = wait_for_line(listener.stderr, "IGMP is forced to version 2")
        assert "source-specific joins (SSM)" in line and "force_igmp_version=0" in line
    finally:
        listener.terminate()
        listener.communicate(timeout=10)


@pytest.mark.parametrize("group", [V4, V6], ids=["ipv4", "ipv6"])
def test_a_route_fix_moves_the_group_alone(lab: Lab, group: str) -> None:
    # doctor --iface docker0 once prescribed 'ip route replace 224.0.0.0/4 dev docker0',
    # moving every program's multicast onto the container bridge.
    host, _ = lab.dual(2)
    six = group.startswith("[")
    if six:
        route = ("ff00::/8", "dev", "eth0", "table", "local", "metric", "1")
        host.run("ip", "-6", "route", "add", *route, check=True)
    else:
        host.run("ip", "route", "add", "224.0.0.0/4", "dev", "eth0", check=True)
    args = (group, "--iface", "eth1")
    (finding,) = _findings(_doctor(host, *args), "route")
    assert "routes" in finding["what"] and "alone" in finding["why"]
    prefix = finding["commands"][0][4 if six else 3]
    assert prefix == ("ff15::77/128" if six else "239.255.77.82/32")
    _fixed(host, "route", *args)
    other = "ff15::78" if six else "239.255.77.83"
    route = host.run("ip", "-6" if six else "-4", "route", "get", other).stdout
    assert "dev eth0" in route, route  # every other group stays where it was


def test_interface_without_multicast(lab: Lab) -> None:
    (host,) = lab.lan(1)
    host.run("ip", "link", "set", "eth0", "multicast", "off", check=True)
    report = _doctor(host, V4)
    (finding,) = _findings(report, "interface")
    assert "mcastkit refuses" in finding["why"] and "Linux would still join" in finding["why"]
    assert _self_test_ok(_fixed(host, "interface", V4))


def test_local_bridge_snooping_without_querier(lab: Lab) -> None:
    (host,) = lab.lan(1)
    host.run("ip", "link", "add", "br7", "type", "bridge", "mcast_snooping", "1",
             "mcast_querier", "0", check=True)  # fmt: skip
    host.run("ip", "link", "set", "br7", "up", check=True)
    report = _doctor(host, V4)
    (finding,) = [f for f in _findings(report, "link") if "br7" in f["what"]]
    assert "no querier" in finding["what"]
    _fixed(host, "link", V4)


def test_querier_and_pim_router_heard_on_the_link(lab: Lab) -> None:
    host, router = lab.lan(2)
    # The lab's bridge becomes a snooping switch with a querier, querying every second.
    lab.snooping_querier()
    hello = router.start("python3", "-c", PIM_HELLOS)
    try:
        wait_for_line(hello.stdout, "hello")
        done = host.mcast("doctor", "--json", "--wait", "3", V4, timeout=30)
        report = json.loads(done.stdout)
    finally:
        hello.terminate()
        hello.communicate(timeout=10)
    link = [f["what"] for f in report["findings"] if f["check"] == "link"]
    assert any(w.startswith("querier ") and "IGMPv" in w for w in link), link
    assert any(f"multicast router {router.ipv4}" in w for w in link), link


PIM_HELLOS = r"""
import socket, struct, time
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 103)
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
# PIMv2 hello: version 2, type 0, reserved, checksum; option 1 (hold time) 105 s.
body = struct.pack("!BBH", 0x20, 0, 0) + struct.pack("!HHH", 1, 2, 105)
total = sum(struct.unpack("!%dH" % (len(body) // 2), body))
total = (total >> 16) + (total & 0xFFFF)
checksum = ~(total + (total >> 16)) & 0xFFFF
hello = body[:2] + struct.pack("!H", checksum) + body[4:]
print("hello", flush=True)
for _ in range(100):
    sock.sendto(hello, ("224.0.0.13", 0))
    time.sleep(0.1)
"""


def test_containers_and_tunnels_are_explained(lab: Lab) -> None:
    (host,) = lab.lan(1)
    host.run("ip", "link", "add", "docker0", "type", "bridge", check=True)
    host.run("ip", "link", "set", "docker0", "up", check=True)
    host.run("ip", "tuntap", "add", "tun7", "mode", "tun", check=True)
    report = _doctor(host, V4)
    environment = [f for f in report["findings"] if f["check"] == "environment"]
    texts = " ".join(f["what"] + " " + f.get("hint", "") for f in environment)
    assert "docker0" in texts and "macvlan" in texts
    assert "tun7 (tun)" in texts and "carry no multicast" in " ".join(
        f.get("why", "") for f in environment
    )
    assert all("commands" not in f for f in environment)  # advice, not a command
