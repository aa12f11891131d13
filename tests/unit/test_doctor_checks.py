"""Doctor checks on crafted system views (no host state involved)."""

from __future__ import annotations

from ipaddress import IPv4Interface

from mcastkit.addr import parse_group
from mcastkit.diag.doctor import Finding, SystemView, diagnose, exit_code
from mcastkit.diag.doctor.collect import _parse_igmp
from mcastkit.transport import Interface

ETH0 = Interface(
    "eth0", 2, (IPv4Interface("10.0.0.5/24"),), (), True, True, True, True, False, 1500
)
LO = Interface("lo", 1, (IPv4Interface("127.0.0.1/8"),), (), True, True, False, False, True, 65536)


def _view(**changes: object) -> SystemView:
    base: dict[str, object] = {
        "group": parse_group("239.1.2.3:5000"),
        "iface_given": None,
        "ttl": 1,
        "sources": [],
        "interfaces": [LO, ETH0],
        "chosen": ETH0,
        "route": ETH0,
        "sysctl": {"net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.eth0.rp_filter": "0"},
    }
    base.update(changes)
    return SystemView(**base)  # type: ignore[arg-type]


def _by_check(findings: list[Finding], check: str) -> list[Finding]:
    return [f for f in findings if f.check == check]


def test_healthy_view_has_no_warnings() -> None:
    findings = diagnose(_view())
    assert exit_code(findings) == 0
    assert {f.severity for f in findings} <= {"ok", "info"}


def test_strict_rp_filter_uses_the_max_of_all_and_the_interface() -> None:
    view = _view(sysctl={"net.ipv4.conf.all.rp_filter": "1", "net.ipv4.conf.eth0.rp_filter": "0"})
    (finding,) = _by_check(diagnose(view), "rp_filter")
    assert finding.severity == "warning" and "rp_filter=2" in finding.fix
    loose = _view(sysctl={"net.ipv4.conf.all.rp_filter": "2", "net.ipv4.conf.eth0.rp_filter": "1"})
    assert _by_check(diagnose(loose), "rp_filter")[0].severity == "ok"


def test_nft_rules_that_hit_the_group_and_ones_that_do_not() -> None:
    ruleset = """table inet filter {
    chain input {
        type filter hook input priority filter; policy accept;
        ct state invalid drop
        tcp dport 22 drop
        iifname "wlan0" drop
        ip daddr 10.0.0.0/8 drop
        ip daddr 239.0.0.0/8 udp dport 5000 drop
    }
    chain output {
        type filter hook output priority filter; policy accept;
        ip daddr 239.0.0.0/8 drop
    }
}"""
    findings = _by_check(diagnose(_view(nft_ruleset=ruleset)), "firewall")
    assert len(findings) == 1
    assert "239.0.0.0/8 udp dport 5000 drop" in findings[0].what


def test_nft_input_policy_drop() -> None:
    ruleset = "table ip t {\n chain c {\n  type filter hook input priority 0; policy drop;\n }\n}"
    (finding,) = _by_check(diagnose(_view(nft_ruleset=ruleset)), "firewall")
    assert "drops by default" in finding.what and "igmp accept" in finding.fix


def test_iptables_rules() -> None:
    rules = "\n".join(
        [
            "-P INPUT DROP",
            "-A INPUT -p tcp --dport 22 -j DROP",
            "-A INPUT -d 10.0.0.0/8 -j DROP",
            "-A INPUT -d 224.0.0.0/4 -p udp -j DROP",
        ]
    )
    findings = _by_check(diagnose(_view(iptables_rules=rules)), "firewall")
    assert len(findings) == 2
    assert any("policy is DROP" in f.what for f in findings)
    assert any(
        "-d 224.0.0.0/4" in f.what and f.fix.startswith("iptables -D INPUT") for f in findings
    )


def test_no_route_is_an_error_naming_the_interface() -> None:
    (finding,) = _by_check(diagnose(_view(route=None)), "route")
    assert finding.severity == "error" and finding.fix == "ip route add 224.0.0.0/4 dev eth0"
    assert exit_code(diagnose(_view(route=None))) == 2


def test_route_out_of_another_interface_than_given() -> None:
    other = Interface(
        "eth1", 3, (IPv4Interface("10.1.0.5/24"),), (), True, True, True, True, False, 1500
    )
    view = _view(iface_given="eth0", route=other)
    (finding,) = _by_check(diagnose(view), "route")
    assert finding.severity == "warning" and "out of eth1" in finding.what


def test_forced_igmp_v2_is_an_error_for_ssm_only() -> None:
    sysctl = {"net.ipv4.conf.eth0.force_igmp_version": "2"}
    ssm = _view(group=parse_group("232.1.1.1:5000"), sysctl=sysctl)
    assert _by_check(diagnose(ssm), "igmp")[0].severity == "error"
    assert _by_check(diagnose(_view(sysctl=sysctl)), "igmp")[0].severity == "info"


def test_ttl_advice() -> None:
    assert "subnet" in _by_check(diagnose(_view()), "ttl")[0].what
    link_local = _view(group=parse_group("224.0.0.99:5000"), ttl=8)
    assert "never" in _by_check(diagnose(link_local), "ttl")[0].what


def test_interface_problems() -> None:
    down = Interface("eth0", 2, ETH0.ipv4, (), False, False, True, True, False, 1500)
    assert _by_check(diagnose(_view(chosen=down)), "interface")[0].fix == "ip link set eth0 up"
    missing = _view(iface_given="eth9", chosen=None)
    assert "no interface 'eth9'" in _by_check(diagnose(missing), "interface")[0].what
    via_lo = _view(chosen=LO, route=LO)
    assert "loopback only" in _by_check(diagnose(via_lo), "interface")[0].what


def test_proc_net_igmp_parser() -> None:
    text = (
        "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n"
        "1\tlo        :     1      V3\n\t\t\t\t010000E0     1 0:00000000\t\t0\n"
        "2\teth0      :     2      V3\n\t\t\t\t030201EF     1 0:00000000\t\t0\n"
    )
    assert _parse_igmp(text) == [("lo", "224.0.0.1"), ("eth0", "239.1.2.3")]
