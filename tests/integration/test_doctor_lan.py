"""mcast doctor on namespace hosts with each broken condition made for real."""

from __future__ import annotations

import json

from netlab import Host, Lab, nft_drop


def _doctor(host: Host, *args: str) -> tuple[int, dict]:
    done = host.mcast("doctor", "--json", "--wait", "0", *args)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def _find(report: dict, check: str, severity: str) -> list[dict]:
    return [f for f in report["findings"] if f["check"] == check and f["severity"] == severity]


def test_healthy_host_passes_with_a_live_self_test(lab: Lab) -> None:
    (h1,) = lab.lan(1)
    code, report = _doctor(h1)
    assert code == 0, report
    assert _find(report, "self-test", "ok")
    assert _find(report, "route", "ok")[0]["what"].endswith("out of eth0")


def test_interface_without_multicast_flag(lab: Lab) -> None:
    (h1,) = lab.lan(1)
    h1.run("ip", "link", "set", "eth0", "multicast", "off", check=True)
    code, report = _doctor(h1)
    assert code == 2
    (finding,) = _find(report, "interface", "error")
    assert finding["fix"] == "ip link set eth0 multicast on"


def test_no_multicast_route(lab: Lab) -> None:
    (h1,) = lab.lan(1)
    h1.run("ip", "route", "del", "default", check=True)
    code, report = _doctor(h1)
    assert code == 2
    (finding,) = _find(report, "route", "error")
    assert finding["fix"] == "ip route add 239.255.77.82/32 dev eth0"  # the group alone
    assert "ip route add 224.0.0.0/4 dev eth0" in finding["why"]  # every group: said, not done
    # With the fix applied, the route check passes.
    h1.run("ip", "route", "add", "239.255.77.82/32", "dev", "eth0", check=True)
    assert _find(_doctor(h1)[1], "route", "ok")


def test_nft_drop_is_named_and_the_self_test_fails(lab: Lab) -> None:
    (h1,) = lab.lan(1)
    nft_drop(h1, "ip daddr 239.0.0.0/8 drop")
    code, report = _doctor(h1)
    assert code == 2
    assert "239.0.0.0/8 drop" in _find(report, "firewall", "error")[0]["what"]
    assert "received none" in _find(report, "self-test", "error")[0]["what"]


def test_strict_rp_filter(lab: Lab) -> None:
    (h1,) = lab.lan(1)
    h1.run("sysctl", "-qw", "net.ipv4.conf.eth0.rp_filter=1", check=True)
    code, report = _doctor(h1)
    assert code == 1
    assert "rp_filter=2" in _find(report, "rp_filter", "warning")[0]["fix"]


def test_forced_igmp_v2_breaks_ssm(lab: Lab) -> None:
    (h1,) = lab.lan(1)
    h1.run("sysctl", "-qw", "net.ipv4.conf.eth0.force_igmp_version=2", check=True)
    code, report = _doctor(h1, "232.1.1.1:5000")
    assert code == 2
    assert "version 2" in _find(report, "igmp", "error")[0]["what"]


def test_human_output_names_the_fix(lab: Lab) -> None:
    (h1,) = lab.lan(1)
    h1.run("ip", "link", "set", "eth0", "multicast", "off", check=True)
    done = h1.mcast("doctor", "--no-self-test", "--wait", "0")
    assert done.returncode == 2
    assert "ERROR interface" in done.stdout and "ip link set eth0 multicast on" in done.stdout
