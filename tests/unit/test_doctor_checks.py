"""Doctor checks on crafted system views (no host state involved)."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv6Interface

from mcastkit.addr import parse_group
from mcastkit.diag.doctor import Finding, SystemView, diagnose, exit_code
from mcastkit.diag.doctor.collect import _parse_igmp
from mcastkit.diag.doctor.link import Heard, parse_igmp, parse_mld, parse_pim
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


def _chain(family: str, name: str, hook: str | None, policy: str = "accept") -> dict:
    chain = {"family": family, "table": "t", "name": name, "handle": 1}
    if hook:
        chain.update(type="filter", hook=hook, prio=0, policy=policy)
    return {"chain": chain}


def _rule(family: str, chain: str, handle: int, *expr: dict) -> dict:
    return {
        "rule": {
            "family": family,
            "table": "t",
            "chain": chain,
            "handle": handle,
            "expr": list(expr),
        }
    }


def _match(protocol: str, field: str, right: object, op: str = "==") -> dict:
    return {
        "match": {
            "op": op,
            "left": {"payload": {"protocol": protocol, "field": field}},
            "right": right,
        }
    }


def _meta(key: str, right: object) -> dict:
    return {"match": {"op": "==", "left": {"meta": {"key": key}}, "right": right}}


DROP, ACCEPT = {"drop": None}, {"accept": None}


def _ruleset(*items: dict) -> dict:
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, *items]}


def test_nft_rules_that_hit_the_group_and_ones_that_do_not() -> None:
    ruleset = _ruleset(
        _chain("inet", "input", "input"),
        _rule(
            "inet",
            "input",
            2,
            {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}},
            DROP,
        ),
        _rule("inet", "input", 3, _match("tcp", "dport", 22), DROP),
        _rule("inet", "input", 4, _meta("iifname", "wlan0"), DROP),
        _rule(
            "inet",
            "input",
            5,
            _match("ip", "daddr", {"prefix": {"addr": "10.200.0.0", "len": 16}}),
            DROP,
        ),
        _rule(
            "inet",
            "input",
            6,
            _match("ip6", "daddr", {"prefix": {"addr": "ff00::", "len": 8}}),
            DROP,
        ),
        _rule("inet", "input", 7, _match("udp", "dport", 5999), DROP),  # another port
        _rule(
            "inet",
            "input",
            8,
            _match("ip", "daddr", {"prefix": {"addr": "239.0.0.0", "len": 8}}),
            _match("udp", "dport", {"range": [4000, 6000]}),
            DROP,
        ),
    )
    findings = _by_check(diagnose(_view(nft_ruleset=ruleset)), "firewall")
    # Answers come to an ephemeral port: the dport rules may hit them, which is all we know.
    assert all("may drop answers" in f.what for f in findings if f.severity != "error")
    (finding,) = [f for f in findings if f.severity == "error"]
    assert finding.severity == "error" and "handle 8" in finding.what
    assert finding.commands == (
        (
            "nft",
            "insert",
            "rule",
            "inet",
            "t",
            "input",
            "ip",
            "daddr",
            "239.1.2.3",
            "udp",
            "dport",
            "5000",
            "accept",
        ),
    )


def test_an_accept_before_a_drop_policy_counts_and_the_fix_clears_it() -> None:
    accept_group = _rule("ip", "c", 2, _match("ip", "daddr", "239.1.2.3"), ACCEPT)
    accept_igmp = _rule("ip", "c", 3, _match("ip", "protocol", "igmp"), ACCEPT)
    policy_drop = _chain("ip", "c", "input", "drop")
    first = _by_check(diagnose(_view(nft_ruleset=_ruleset(policy_drop))), "firewall")
    assert {f.what.split(" drops ")[1].split(": ")[0] for f in first} == {
        "UDP to 239.1.2.3:5000 in",
        "IGMP queries in",
        "answers from peers' port 5000 in",
    }
    fixed = _ruleset(
        policy_drop,
        accept_group,
        accept_igmp,
        _rule("ip", "c", 4, _match("udp", "sport", 5000), ACCEPT),
    )
    (ok,) = _by_check(diagnose(_view(nft_ruleset=fixed)), "firewall")
    assert ok.severity == "ok"


def test_jumps_returns_and_families() -> None:
    ruleset = _ruleset(
        _chain("inet", "out", "output"),
        _chain("inet", "sub", None),
        _chain("ip6", "six", "output", "drop"),  # IPv6 only: not our packets
        _rule("inet", "out", 2, _meta("oifname", "eth0"), {"jump": {"target": "sub"}}),
        _rule("inet", "sub", 3, _match("ip", "daddr", "239.9.9.9"), DROP),  # another group
        _rule("inet", "sub", 4, {"return": None}),
        _rule("inet", "out", 5, _match("ip", "protocol", 2), DROP),  # IGMP by number
    )
    findings = _by_check(diagnose(_view(nft_ruleset=ruleset)), "firewall")
    assert [f.what for f in findings] == [
        "nft inet t out drops IGMP reports out: ip protocol 2 drop (handle 5)"
    ]


def test_a_rule_we_cannot_read_is_reported_as_may_drop() -> None:
    ruleset = _ruleset(
        _chain("inet", "input", "input"),
        _rule(
            "inet",
            "input",
            2,
            {"match": {"op": "==", "left": {"fib": {"result": "type"}}, "right": "multicast"}},
            DROP,
        ),
    )
    findings = _by_check(diagnose(_view(nft_ruleset=ruleset)), "firewall")
    assert findings and all(f.severity == "warning" and "may drop" in f.what for f in findings)


def test_iptables_legacy_rules() -> None:
    rules = "\n".join(
        [
            "*filter",
            ":INPUT DROP [0:0]",
            ":OUTPUT ACCEPT [0:0]",
            "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
            "-A INPUT -d 239.1.2.3/32 -p udp -m udp --dport 5000 -j ACCEPT",
            "-A INPUT -p igmp -j ACCEPT",
            "-A INPUT -p udp -m udp --sport 5000 -j ACCEPT",
            "-A OUTPUT -d 224.0.0.0/4 -p udp -j DROP",
            "COMMIT",
        ]
    )
    findings = _by_check(diagnose(_view(iptables_legacy={4: rules})), "firewall")
    assert len(findings) == 1  # only the output rule: the input accepts come before the policy
    assert findings[0].commands == (
        (
            "iptables-legacy",
            "-I",
            "OUTPUT",
            "1",
            "-d",
            "239.1.2.3/32",
            "-p",
            "udp",
            "--dport",
            "5000",
            "-j",
            "ACCEPT",
        ),
    )


def test_no_route_is_an_error_naming_the_interface() -> None:
    (finding,) = _by_check(diagnose(_view(route=None)), "route")
    assert finding.severity == "error" and finding.fix == "ip route add 239.1.2.3/32 dev eth0"
    assert finding.to_dict()["commands"] == [["ip", "route", "add", "239.1.2.3/32", "dev", "eth0"]]
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
    (finding,) = _by_check(diagnose(ssm), "igmp")
    assert finding.severity == "error"
    assert finding.commands == (
        (
            "sysctl",
            "-w",
            "net.ipv4.conf.all.force_igmp_version=0",
            "net.ipv4.conf.eth0.force_igmp_version=0",
        ),
    )
    assert _by_check(diagnose(_view(sysctl=sysctl)), "igmp")[0].severity == "info"
    live = _view(sysctl=sysctl, ssm_joins={(4, "eth0")})  # any group, an SSM join live
    (finding,) = _by_check(diagnose(live), "igmp")
    assert finding.severity == "error" and "source-specific join is live" in finding.what


def test_forced_mldv1_fix_clears_all_and_the_interface() -> None:
    eth0 = Interface(
        "eth0", 2, (), (IPv6Interface("fd00::5/64"),), True, True, True, True, False, 1500
    )
    view = _view(
        group=parse_group("[ff3e::8000:1]:5000"),
        chosen=eth0,
        route=eth0,
        interfaces=[LO, eth0],
        sysctl={"net.ipv6.conf.all.force_mld_version": "1"},
    )
    (finding,) = _by_check(diagnose(view), "igmp")
    assert finding.severity == "error"
    assert finding.commands[0][2:] == (
        "net.ipv6.conf.all.force_mld_version=0",
        "net.ipv6.conf.eth0.force_mld_version=0",
    )


def test_rp_filter_with_a_known_source() -> None:
    strict = {"net.ipv4.conf.all.rp_filter": "1", "net.ipv4.conf.eth0.rp_filter": "1"}
    elsewhere = _view(sysctl=strict, sources=["10.7.0.9"], source_routes={"10.7.0.9": "eth1"})
    (finding,) = _by_check(diagnose(elsewhere), "rp_filter")
    assert finding.severity == "error" and "routed out of eth1" in finding.what
    assert "net.ipv4.conf.eth0.rp_filter=2" in finding.commands[0]
    for mode in ("1", "2"):  # no route at all: loose drops it too
        sysctl = {"net.ipv4.conf.all.rp_filter": mode, "net.ipv4.conf.eth0.rp_filter": "0"}
        nowhere = _view(sysctl=sysctl, sources=["10.7.0.9"], source_routes={"10.7.0.9": None})
        (finding,) = _by_check(diagnose(nowhere), "rp_filter")
        assert finding.severity == "error" and "no route back" in finding.what
        assert "net.ipv4.conf.all.rp_filter=0" in finding.commands[0]
    same = _view(sysctl=strict, sources=["10.0.0.9"], source_routes={"10.0.0.9": "eth0"})
    assert _by_check(diagnose(same), "rp_filter")[0].severity == "ok"


def test_link_findings() -> None:
    heard = [Heard("querier", "10.0.0.1", "IGMPv3", 125.0), Heard("router", "10.0.0.254", "PIM")]
    findings = _by_check(diagnose(_view(heard=heard, listened=2.0)), "link")
    assert [f.severity for f in findings] == ["info", "ok"]  # worst first
    assert "querier 10.0.0.1" in findings[1].what and "every 125 s" in findings[1].what
    assert "router 10.0.0.254" in findings[0].what and "--ttl" in findings[0].why
    quiet = _view(listened=2.0, bridges=[("br0", True, False), ("br1", False, False)])
    findings = _by_check(diagnose(quiet), "link")
    assert [f.severity for f in findings] == ["warning", "warning"]
    assert findings[1].commands == (
        ("ip", "link", "set", "br0", "type", "bridge", "mcast_querier", "1"),
    )


def test_every_fix_is_a_command_and_advice_is_a_hint() -> None:
    views = [
        _view(route=None),
        _view(chosen=LO, route=LO),
        _view(iface_given="eth9", chosen=None),
        _view(
            group=parse_group("232.1.1.1:5000"),
            sysctl={"net.ipv4.conf.eth0.force_igmp_version": "2"},
        ),
        _view(container="docker", virtualization="Amazon EC2", kinds={"wg0": "wireguard"}),
    ]
    for view in views:
        for finding in diagnose(view):
            for command in finding.commands:
                assert command and all(isinstance(word, str) and word for word in command)
                assert not any(w.isupper() and len(w) > 3 for w in command), command  # no IFACE


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


def test_query_and_hello_parsers() -> None:
    ip = bytes([0x46]) + bytes(23)  # a 24-byte header (router alert)
    v3 = ip + bytes([0x11, 100, 0, 0, 0, 0, 0, 0, 0x02, 125, 0, 0])
    assert parse_igmp(v3, "10.0.0.1") == Heard("querier", "10.0.0.1", "IGMPv3", 125.0)
    assert parse_igmp(ip + bytes([0x11, 100]) + bytes(6), "a").protocol == "IGMPv2"
    assert parse_igmp(ip + bytes([0x11, 0]) + bytes(6), "a").protocol == "IGMPv1"
    assert parse_igmp(ip + bytes([0x16]) + bytes(7), "a") is None  # a report, not a query
    long = ip + bytes([0x11, 100, 0, 0, 0, 0, 0, 0, 0x02, 0x8C, 0, 0])  # QQIC 0x8C
    assert parse_igmp(long, "a").interval == 224.0  # (0xC | 0x10) << (0 + 3)
    assert parse_mld(bytes([130]) + bytes(27), "fe80::1").protocol == "MLDv2"
    assert parse_mld(bytes([130]) + bytes(23), "fe80::1").protocol == "MLDv1"
    assert parse_mld(bytes([143]) + bytes(27), "fe80::1") is None
    assert parse_pim(bytes([0x20, 0, 0, 0]), "10.0.0.254").kind == "router"
    for junk in (b"", b"\x45", bytes(19), bytes([0x4F]) + bytes(10)):
        assert parse_igmp(junk, "x") is None and parse_mld(junk, "x") is None
        assert parse_pim(junk, "x") is None


def test_where_multicast_is_not_carried_the_doctor_names_peer_and_relay_commands() -> None:
    views = {
        "container": _view(container="kubernetes"),
        "tunnel": _view(kinds={"wg0": "wireguard"}),
        "overlay": _view(kinds={"flannel.1": "vxlan"}),
        "cloud": _view(virtualization="Google Compute Engine"),
    }
    for name, view in views.items():
        hints = " ".join(f.hint for f in _by_check(diagnose(view), "environment"))
        assert "mcast chat --group 239.1.2.3:5000 --peer OTHER_HOST" in hints, name
        assert "mcast relay 239.1.2.3:5000 --peer OTHER_SITE_RELAY" in hints, name
    plain = " ".join(f.hint for f in _by_check(diagnose(_view()), "environment"))
    assert "--peer" not in plain  # a plain LAN host is not told to give up on multicast
