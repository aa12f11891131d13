"""The checks: pure functions from a SystemView to findings (unit-tested on crafted views)."""

from __future__ import annotations

import contextlib
import re
from ipaddress import IPv4Network

from ...addr import classify
from .model import SEVERITIES, Finding, SystemView


def _check_interfaces(view: SystemView) -> list[Finding]:
    found: list[Finding] = []
    chosen = view.chosen
    if view.iface_given and chosen is None:
        names = ", ".join(i.name for i in view.interfaces)
        return [
            Finding(
                "error",
                "interface",
                f"no interface {view.iface_given!r} here",
                "joins and sends on it fail",
                f"pick one of: {names} (mcast ifaces)",
            )
        ]
    if chosen is None:
        return found
    if chosen.up is False:
        found.append(
            Finding(
                "error",
                "interface",
                f"{chosen.name} is down",
                "nothing is sent or received on a down interface",
                f"ip link set {chosen.name} up",
            )
        )
    if chosen.multicast is False and not chosen.loopback:
        found.append(
            Finding(
                "error",
                "interface",
                f"{chosen.name} has no MULTICAST flag",
                "the kernel refuses to join groups on it and sends no IGMP",
                f"ip link set {chosen.name} multicast on",
            )
        )
    if chosen.loopback and not view.iface_given:
        found.append(
            Finding(
                "warning",
                "interface",
                "multicast would go out of loopback only",
                "the route for the group points at lo: other hosts hear nothing",
                "give --iface, or add a route: ip route add 224.0.0.0/4 dev IFACE",
            )
        )
    family_ok = chosen.has_family(view.group.family) or view.group.family == 6
    if not family_ok:
        found.append(
            Finding(
                "error",
                "interface",
                f"{chosen.name} has no IPv{view.group.family} address",
                "a sender needs a source address of the group's family",
                f"ip addr add ADDRESS/PREFIX dev {chosen.name}",
            )
        )
    if not found:
        found.append(
            Finding(
                "ok",
                "interface",
                f"{chosen.name} is up and multicast-capable (index {chosen.index})",
            )
        )
    others = [
        i.name
        for i in view.interfaces
        if i is not chosen and i.up and i.multicast is False and not i.loopback
    ]
    if others:
        found.append(
            Finding(
                "info",
                "interface",
                f"other interfaces without MULTICAST: {', '.join(others)}",
                "joining there would fail",
                "ip link set NAME multicast on",
            )
        )
    return found


def _check_route(view: SystemView) -> list[Finding]:
    family = view.group.family
    prefix = "224.0.0.0/4" if family == 4 else "ff00::/8"
    if view.route is None:
        severity = "warning" if view.iface_given else "error"
        fix_dev = view.chosen.name if view.chosen else "IFACE"
        command = (
            f"ip route add {prefix} dev {fix_dev}"
            if family == 4
            else f"ip -6 route add {prefix} dev {fix_dev} table local"
        )
        return [
            Finding(
                severity,
                "route",
                f"no route for {view.group.group} ({prefix})",
                "without --iface, joins fail with 'No such device' and sends with "
                "'Network is unreachable'",
                command,
            )
        ]
    if view.iface_given and view.chosen is not None and view.route.name != view.chosen.name:
        return [
            Finding(
                "warning",
                "route",
                f"the kernel routes {view.group.group} out of {view.route.name}, "
                f"not {view.chosen.name}",
                "programs that do not pick an interface use the route, as most do",
                f"ip route replace {prefix} dev {view.chosen.name}",
            )
        ]
    return [Finding("ok", "route", f"{view.group.group} is routed out of {view.route.name}")]


def _sysctl_int(view: SystemView, key: str) -> int | None:
    value = view.sysctl.get(key)
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


def _check_rp_filter(view: SystemView) -> list[Finding]:
    if view.group.family != 4 or view.chosen is None:
        return []
    name = view.chosen.name
    values = [_sysctl_int(view, f"net.ipv4.conf.{n}.rp_filter") for n in ("all", name)]
    effective = max((v for v in values if v is not None), default=None)  # the kernel uses max
    if effective == 1:
        return [
            Finding(
                "warning",
                "rp_filter",
                f"strict reverse-path filtering on {name}",
                "multicast from a source this host would not route back to via "
                f"{name} (another subnet, asymmetric paths) is dropped silently",
                f"sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.{name}.rp_filter=2",
            )
        ]
    if effective is None:
        return []
    mode = {0: "off", 2: "loose"}.get(effective, str(effective))
    return [Finding("ok", "rp_filter", f"reverse-path filtering is {mode} on {name}")]


_DROP = re.compile(r"\b(drop|reject)\b")
_MCAST_DADDR = re.compile(r"(?:ip|ip6) daddr ([0-9a-f:.]+(?:/\d+)?)")


def _covers_group(rule: str, view: SystemView) -> bool:
    match = _MCAST_DADDR.search(rule)
    if match is None:
        return True  # no destination condition: it applies to the group too
    with contextlib.suppress(ValueError):
        network = IPv4Network(match.group(1), strict=False) if "." in match.group(1) else None
        if network is not None:
            return view.group.group.version == 4 and view.group.group in network
        from ipaddress import IPv6Network

        return view.group.group.version == 6 and view.group.group in IPv6Network(
            match.group(1), strict=False
        )
    return False


def _rule_may_hit(rule: str, view: SystemView) -> bool:
    """Could this drop rule match UDP (or IGMP) to the group on the chosen interface?"""
    if "tcp" in rule or "ct state invalid" in rule or "icmp" in rule:
        return False
    interface = re.search(r'iifname "?([\w.-]+)"?', rule)
    if interface and view.chosen is not None and interface.group(1) != view.chosen.name:
        return False
    return _covers_group(rule, view)


def _check_nft(view: SystemView) -> list[Finding]:
    if not view.nft_ruleset:
        return []
    found: list[Finding] = []
    chain, hook = "", ""
    table = ""
    for raw in view.nft_ruleset.splitlines():
        line = raw.strip()
        if line.startswith("table "):
            table = line.removeprefix("table ").removesuffix("{").strip()
        elif line.startswith("chain "):
            chain = line.split()[1]
            hook = ""
        elif "hook " in line:
            hook = line.split("hook ", 1)[1].split()[0]
            if "policy drop" in line and hook in ("input", "prerouting"):
                found.append(
                    Finding(
                        "warning",
                        "firewall",
                        f"nft chain {table} {chain} drops by default ({hook})",
                        "multicast and IGMP are dropped unless a rule accepts them",
                        f"nft insert rule {table} {chain} ip daddr 224.0.0.0/4 accept; "
                        f"nft insert rule {table} {chain} ip protocol igmp accept",
                    )
                )
        elif hook in ("input", "prerouting") and _DROP.search(line) and _rule_may_hit(line, view):
            found.append(
                Finding(
                    "warning",
                    "firewall",
                    f"nft rule in {table} {chain} drops traffic: {line}",
                    f"datagrams to {view.group.group}:{view.group.port} (or IGMP) match it",
                    f"nft -a list chain {table} {chain}; then nft delete rule {table} {chain} "
                    "handle N",
                )
            )
    return found


def _check_iptables(view: SystemView) -> list[Finding]:
    if not view.iptables_rules:
        return []
    found = []
    for line in view.iptables_rules.splitlines():
        if line.startswith("-P INPUT DROP"):
            found.append(
                Finding(
                    "warning",
                    "firewall",
                    "iptables INPUT policy is DROP",
                    "multicast and IGMP need an accept rule",
                    "iptables -I INPUT -d 224.0.0.0/4 -j ACCEPT; "
                    "iptables -I INPUT -p igmp -j ACCEPT",
                )
            )
        elif line.startswith("-A INPUT") and re.search(r"-j (DROP|REJECT)", line):
            if "-p tcp" in line:
                continue
            destination = re.search(r"-d (\S+)", line)
            if destination and not _covers_group(f"ip daddr {destination.group(1)}", view):
                continue
            found.append(
                Finding(
                    "warning",
                    "firewall",
                    f"iptables rule drops traffic: {line}",
                    "datagrams to the group may match it",
                    f"iptables -D {line.removeprefix('-A ')}",
                )
            )
    return found


def _check_igmp_version(view: SystemView) -> list[Finding]:
    if view.chosen is None:
        return []
    name = view.chosen.name
    ssm = bool(view.sources) or classify(view.group.group).ssm
    if view.group.family == 4:
        forced = max(
            (
                v
                for n in ("all", name)
                if (v := _sysctl_int(view, f"net.ipv4.conf.{n}.force_igmp_version"))
            ),
            default=0,
        )
        if forced in (1, 2):
            return [
                Finding(
                    "error" if ssm else "info",
                    "igmp",
                    f"IGMP is forced to version {forced} on {name}",
                    "IGMPv1/v2 cannot express source-specific joins (SSM needs v3)",
                    f"sysctl -w net.ipv4.conf.all.force_igmp_version=0 "
                    f"net.ipv4.conf.{name}.force_igmp_version=0",
                )
            ]
    else:
        forced = max(
            (
                v
                for n in ("all", name)
                if (v := _sysctl_int(view, f"net.ipv6.conf.{n}.force_mld_version"))
            ),
            default=0,
        )
        if forced == 1:
            return [
                Finding(
                    "error" if ssm else "info",
                    "igmp",
                    f"MLD is forced to version 1 on {name}",
                    "MLDv1 cannot express source-specific joins (SSM needs MLDv2)",
                    f"sysctl -w net.ipv6.conf.{name}.force_mld_version=0",
                )
            ]
    return []


def _check_limits_and_memberships(view: SystemView) -> list[Finding]:
    found = []
    limit = _sysctl_int(view, "net.ipv4.igmp_max_memberships")
    if limit is not None:
        found.append(
            Finding(
                "info",
                "limits",
                f"a socket may join {limit} IPv4 groups (igmp_max_memberships)",
                "joining more fails with 'No buffer space available'",
                "sysctl -w net.ipv4.igmp_max_memberships=1024",
            )
        )
    found.append(
        Finding(
            "info",
            "multicast_all",
            "sockets bound to the wildcard get every group joined on their port "
            "(IP_MULTICAST_ALL=1 is the Linux default)",
            "a program may see traffic of groups it never joined; mcastkit sets 0",
        )
    )
    if view.chosen is not None:
        mine = sorted({g for i, g in view.igmp if i == view.chosen.name})
        if mine:
            found.append(
                Finding(
                    "info", "memberships", f"groups joined on {view.chosen.name}: {', '.join(mine)}"
                )
            )
    if view.mcfilter_lines:
        found.append(
            Finding(
                "info",
                "memberships",
                f"{view.mcfilter_lines} source filter(s) in /proc/net/mcfilter",
            )
        )
    return found


def _check_ttl(view: SystemView) -> list[Finding]:
    info = classify(view.group.group)
    if not info.routable and view.ttl > 1:
        return [
            Finding(
                "info",
                "ttl",
                f"{view.group.group} is {info.scope}: routers never "
                f"forward it, whatever the TTL ({view.ttl})",
            )
        ]
    if info.routable and view.ttl <= 1:
        return [
            Finding(
                "info",
                "ttl",
                f"TTL {view.ttl} keeps {view.group.group} on this subnet",
                "a routed group needs TTL = routers to cross + 1",
                "mcast send --ttl N (or the application's TTL setting)",
            )
        ]
    return []


def _check_environment(view: SystemView) -> list[Finding]:
    found = []
    if view.container:
        found.append(
            Finding(
                "info",
                "environment",
                f"running in a container ({view.container})",
                "bridge networks of Docker/Kubernetes do not carry multicast between hosts",
                "use host networking (--network host) or macvlan",
            )
        )
    if view.virtualization:
        found.append(
            Finding(
                "info",
                "environment",
                f"running under virtualisation: {view.virtualization}",
                "cloud networks (AWS VPC, Azure, GCP) drop multicast unless a "
                "multicast domain is configured; virtual switches may need IGMP "
                "snooping or promiscuous settings",
            )
        )
    return found


CHECKS = (
    _check_interfaces,
    _check_route,
    _check_rp_filter,
    _check_nft,
    _check_iptables,
    _check_igmp_version,
    _check_limits_and_memberships,
    _check_ttl,
    _check_environment,
)


def diagnose(view: SystemView, extra: list[Finding] | None = None) -> list[Finding]:
    """All findings for a view (plus ``extra``, e.g. the self-test), worst first."""
    findings = [*(extra or []), *(finding for check in CHECKS for finding in check(view))]
    return sorted(findings, key=lambda f: -SEVERITIES.index(f.severity))
