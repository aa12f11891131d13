"""The checks: pure functions from a SystemView to findings (unit-tested on crafted views)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass

from ...addr import classify
from .firewall import Probe, evaluate_iptables, evaluate_nft, probes_for
from .model import SEVERITIES, Finding, Severity, SystemView

# Interfaces that containers and VPNs make, by name (docker0, br-1a2b..., cni0, flannel.1).
CONTAINER_BRIDGES = ("docker", "br-", "cni", "flannel", "cali", "weave", "podman", "virbr")


def _check_interfaces(view: SystemView) -> list[Finding]:
    found: list[Finding] = []
    chosen = view.chosen
    if view.iface_given and chosen is None:
        names = ", ".join(i.name for i in view.interfaces)
        return [
            Finding(
                Severity.ERROR,
                "interface",
                f"no interface {view.iface_given!r} here",
                "joins and sends on it fail",
                hint=f"give --iface one of: {names} (see `mcast ifaces`)",
            )
        ]
    if chosen is None:
        return found
    if chosen.up is False:
        found.append(
            Finding(
                Severity.ERROR,
                "interface",
                f"{chosen.name} is down",
                "nothing is sent or received on a down interface",
                (("ip", "link", "set", chosen.name, "up"),),
            )
        )
    if chosen.multicast is False and not chosen.loopback:
        found.append(
            Finding(
                Severity.ERROR,
                "interface",
                f"{chosen.name} has no MULTICAST flag",
                "the driver says the link cannot carry multicast (or it was turned off). "
                "Linux would still join there, but mcastkit refuses to use such an "
                "interface: on such links, groups usually go nowhere",
                (("ip", "link", "set", chosen.name, "multicast", "on"),),
            )
        )
    if chosen.loopback and not view.iface_given:
        lan = _a_lan_interface(view)
        found.append(
            Finding(
                Severity.WARNING,
                "interface",
                "multicast would go out of loopback only",
                "the route for the group points at lo: other hosts hear nothing"
                + ("" if lan is None else _only_the_group(view, "lo")),
                () if lan is None else (_route_command(view, "replace", _host_prefix(view), lan),),
                hint="" if lan else "give --iface, or bring up a LAN interface",
            )
        )
    family_ok = chosen.has_family(view.group.family) or view.group.family == 6
    if not family_ok:
        found.append(
            Finding(
                Severity.ERROR,
                "interface",
                f"{chosen.name} has no IPv{view.group.family} address",
                "a sender needs a source address of the group's family",
                hint=f"give {chosen.name} an address (DHCP, or ip addr add ADDRESS/PREFIX dev "
                f"{chosen.name})",
            )
        )
    if not found:
        found.append(
            Finding(
                Severity.OK,
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
                Severity.INFO,
                "interface",
                f"other interfaces without MULTICAST: {', '.join(others)}",
                "mcastkit will not use them (see `mcast ifaces`)",
                tuple(("ip", "link", "set", name, "multicast", "on") for name in others),
            )
        )
    return found


def _a_lan_interface(view: SystemView) -> str | None:
    return next(
        (
            i.name
            for i in view.interfaces
            if i.up and i.multicast and not i.loopback and i.has_family(view.group.family)
        ),
        None,
    )


def _host_prefix(view: SystemView) -> str:
    """The group alone: a fix routes what was asked about, never every program's groups."""
    group = view.group.group
    return f"{group}/{32 if group.version == 4 else 128}"


def _only_the_group(view: SystemView, device: str) -> str:
    every = "224.0.0.0/4" if view.group.family == 4 else "ff00::/8"
    return (
        f". The fix routes {view.group.group} alone: every other group (and every other "
        f"program's) keeps its route via {device}; to move them all, route {every} instead"
    )


def _route_command(view: SystemView, verb: str, prefix: str, device: str) -> tuple[str, ...]:
    if view.group.family == 4:
        return ("ip", "route", verb, prefix, "dev", device)
    return ("ip", "-6", "route", verb, prefix, "dev", device, "table", "local")


def _check_route(view: SystemView) -> list[Finding]:
    family = view.group.family
    prefix = "224.0.0.0/4" if family == 4 else "ff00::/8"
    if view.route is None:
        severity = Severity.WARNING if view.iface_given else Severity.ERROR
        device = view.chosen.name if view.chosen else None
        every = _route_command(view, "add", prefix, device or "IFACE")
        return [
            Finding(
                severity,
                "route",
                f"no route for {view.group.group} ({prefix})",
                "without --iface, joins fail with 'No such device' and sends with "
                "'Network is unreachable'. The fix routes this group alone; "
                f"to route every group, {shlex.join(every)}",
                ()
                if device is None
                else (_route_command(view, "add", _host_prefix(view), device),),
                hint="" if device else "bring up an interface, then add a route to it",
            )
        ]
    if view.iface_given and view.chosen is not None and view.route.name != view.chosen.name:
        return [
            Finding(
                Severity.WARNING,
                "route",
                f"the kernel routes {view.group.group} out of {view.route.name}, "
                f"not {view.chosen.name}",
                "programs that do not pick an interface use the route, as most do"
                + _only_the_group(view, view.route.name),
                (_route_command(view, "replace", _host_prefix(view), view.chosen.name),),
            )
        ]
    return [Finding(Severity.OK, "route", f"{view.group.group} is routed out of {view.route.name}")]


def _sysctl_int(view: SystemView, key: str) -> int | None:
    value = view.sysctl.get(key)
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


def _check_rp_filter(view: SystemView) -> list[Finding]:
    if view.group.family != 4 or view.chosen is None:
        return []
    name = view.chosen.name
    values = [_sysctl_int(view, f"net.ipv4.conf.{n}.rp_filter") for n in ("all", name)]
    effective = max((v for v in values if v is not None), default=None)  # the kernel uses max
    if effective is None:
        return []
    mode = {0: "off", 1: "strict", 2: "loose"}.get(effective, str(effective))

    def setting(value: int) -> tuple[tuple[str, ...], ...]:
        # The kernel takes the larger of `all` and the interface: both must change.
        return (
            (
                "sysctl",
                "-w",
                f"net.ipv4.conf.all.rp_filter={value}",
                f"net.ipv4.conf.{name}.rp_filter={value}",
            ),
        )

    found = []
    for source, device in view.source_routes.items():
        if device is None and effective in (1, 2):
            found.append(
                Finding(
                    Severity.ERROR,
                    "rp_filter",
                    f"no route back to source {source}: {mode} reverse-path filtering on "
                    f"{name} drops its multicast",
                    "loose mode drops it too (it needs a route, by any interface)",
                    setting(0),
                    hint=f"or add a route to {source}: ip route add {source} dev {name}",
                )
            )
        elif device is not None and device != name and effective == 1:
            found.append(
                Finding(
                    Severity.ERROR,
                    "rp_filter",
                    f"source {source} is routed out of {device}, not {name}: strict "
                    "reverse-path filtering drops its multicast",
                    "strict mode wants the route back by the interface the packet came in on",
                    setting(2),
                )
            )
    if found:
        return found
    if effective == 1 and not view.source_routes:
        return [
            Finding(
                Severity.WARNING,
                "rp_filter",
                f"strict reverse-path filtering on {name}",
                "multicast from a source this host would not route back to via "
                f"{name} (another subnet, asymmetric paths) is dropped silently; give "
                "--source to check a source",
                setting(2),
            )
        ]
    return [Finding(Severity.OK, "rp_filter", f"reverse-path filtering is {mode} on {name}")]


_FIREWALL_WHY = {
    "igmp-out": "this host's joins are never announced: snooping switches and routers do "
    "not forward the group here",
    "igmp-in": "queries are not heard, so joins are refreshed only by the host's own "
    "unsolicited reports",
    "udp-in": "datagrams to the group never reach the application",
    "udp-out": "nothing this host sends to the group leaves it",
    "answers": "answers to requests (mcast request, ping, gather) are dropped",
}


def _probe_role(probe: Probe) -> str:
    if probe.l4 in ("igmp", "icmpv6"):
        return f"igmp-{probe.direction}"
    if probe.sport is not None:
        return "answers"
    return f"udp-{probe.direction}"


def _check_firewall(view: SystemView) -> list[Finding]:
    chosen = view.chosen
    if view.nft_ruleset is None and not view.iptables_legacy:
        return []
    address = None
    if chosen is not None:
        addresses = chosen.ipv4 if view.group.family == 4 else chosen.ipv6
        address = str(addresses[0].ip) if addresses else None
    probes = probes_for(
        str(view.group.group),
        view.group.port,
        view.group.family,
        None if chosen is None else chosen.name,
        address,
    )
    found = []
    for probe in probes:
        blocks = [] if view.nft_ruleset is None else evaluate_nft(view.nft_ruleset, probe)
        saved = view.iptables_legacy.get(view.group.family)
        if saved:
            tool = "iptables-legacy" if view.group.family == 4 else "ip6tables-legacy"
            blocks += evaluate_iptables(saved, probe, tool=tool)
        for block in blocks:
            role = _probe_role(probe)
            severity = (
                Severity.ERROR if role in ("udp-in", "udp-out", "igmp-out") else Severity.WARNING
            )
            by = block.rule or "its policy"
            found.append(
                Finding(
                    severity if block.certain else Severity.WARNING,
                    "firewall",
                    f"{block.where} {'drops' if block.certain else 'may drop'} {probe.label}: {by}",
                    _FIREWALL_WHY[role],
                    block.commands,
                )
            )
    if not found:
        found.append(
            Finding(Severity.OK, "firewall", "the firewall lets the group's traffic through")
        )
    return found


@dataclass(frozen=True)
class ForcedVersion:
    """IGMP (or MLD) forced to a version that cannot join a source (SSM)."""

    protocol: str  # "IGMP" or "MLD"
    version: int
    needed: str  # the version SSM needs: "v3" or "v2"
    fix: tuple[str, ...]  # the sysctl command that lifts it


def forced_old_version(
    family: int, iface: str, read: Callable[[str], int | None]
) -> ForcedVersion | None:
    """Whether ``iface`` is forced to IGMPv1/v2 (MLDv1), given ``read`` (a sysctl name to
    its value). The kernel honours ``all`` when it is set, so the fix clears both."""
    if family == 4:
        key, protocol, old, needed = "net.ipv4.conf.{}.force_igmp_version", "IGMP", {1, 2}, "v3"
    else:
        key, protocol, old, needed = "net.ipv6.conf.{}.force_mld_version", "MLD", {1}, "v2"
    forced = max(read(key.format(name)) or 0 for name in ("all", iface))
    if forced not in old:
        return None
    fix = ("sysctl", "-w", key.format("all") + "=0", key.format(iface) + "=0")
    return ForcedVersion(protocol, forced, needed, fix)


def _check_igmp_version(view: SystemView) -> list[Finding]:
    """Forced old IGMP/MLD on the chosen interface, and wherever a source-specific join of
    either family is live (an IPv6 SSM join is broken by forced MLDv1 whatever group the
    doctor was asked about)."""
    found: list[Finding] = []
    checked: set[tuple[int, str]] = set()
    if view.chosen is not None:
        checked.add((view.group.family, view.chosen.name))
        found += _forced_version(view, view.group.family, view.chosen.name, asked=True)
    for family, name in sorted(view.ssm_joins - checked):
        found += _forced_version(view, family, name, asked=False)
    return found


def _forced_version(view: SystemView, family: int, name: str, *, asked: bool) -> list[Finding]:
    forced = forced_old_version(family, name, lambda key: _sysctl_int(view, key))
    if forced is None:
        return []
    reasons = []
    if (family, name) in view.ssm_joins:
        reasons.append(f"a source-specific join is live on {name}")
    if asked and classify(view.group.group).ssm:
        reasons.append(f"{view.group.group} is a source-specific group")
    if asked and view.sources:
        reasons.append("you named a source")
    if not reasons and not asked:
        return []
    protocol = forced.protocol
    return [
        Finding(
            Severity.ERROR if reasons else Severity.INFO,
            "igmp",
            f"{protocol} is forced to version {forced.version} on {name}"
            + (f" while {' and '.join(reasons)}" if reasons else ""),
            f"{protocol}v{forced.version} cannot express source-specific joins (SSM needs "
            f"{forced.needed}): the join goes out as a plain one, or not at all",
            (forced.fix,),
        )
    ]


def _check_limits_and_memberships(view: SystemView) -> list[Finding]:
    found = []
    limit = _sysctl_int(view, "net.ipv4.igmp_max_memberships")
    if limit is not None:
        found.append(
            Finding(
                Severity.INFO,
                "limits",
                f"a socket may join {limit} IPv4 groups (igmp_max_memberships)",
                "joining more fails with 'No buffer space available'",
                (("sysctl", "-w", "net.ipv4.igmp_max_memberships=1024"),) if limit < 1024 else (),
            )
        )
    found.append(
        Finding(
            Severity.INFO,
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
                    Severity.INFO,
                    "memberships",
                    f"groups joined on {view.chosen.name}: {', '.join(mine)}",
                )
            )
    if view.ssm_joins:
        where = sorted({name for _family, name in view.ssm_joins})
        found.append(
            Finding(
                Severity.INFO, "memberships", f"source-specific joins live on {', '.join(where)}"
            )
        )
    return found


def _check_ttl(view: SystemView) -> list[Finding]:
    info = classify(view.group.group)
    if not info.routable and view.ttl > 1:
        return [
            Finding(
                Severity.INFO,
                "ttl",
                f"{view.group.group} is {info.scope}: routers never "
                f"forward it, whatever the TTL ({view.ttl})",
            )
        ]
    if info.routable and view.ttl <= 1:
        return [
            Finding(
                Severity.INFO,
                "ttl",
                f"TTL {view.ttl} keeps {view.group.group} on this subnet",
                "a routed group needs TTL = routers to cross + 1",
                hint="give --ttl (routers to cross + 1) to the sending command",
            )
        ]
    return []


def _check_link(view: SystemView) -> list[Finding]:
    """Queriers and routers heard on the link; local bridges that snoop without a querier."""
    found = []
    heard = view.heard
    name = view.chosen.name if view.chosen else "?"
    if isinstance(heard, str):
        found.append(Finding(Severity.INFO, "link", f"did not listen for queriers: {heard}"))
        heard = []
    queriers = [h for h in heard if h.kind == "querier"]
    routers = [h for h in heard if h.kind == "router"]
    for querier in queriers:
        every = f", every {querier.interval:g} s" if querier.interval else ""
        found.append(
            Finding(
                Severity.OK,
                "link",
                f"querier {querier.source} on {name} ({querier.protocol}{every})",
            )
        )
    quiet_snoopers = [b for b, snooping, querier in view.bridges if snooping and not querier]
    if view.listened and not queriers and not isinstance(view.heard, str):
        found.append(
            Finding(
                Severity.WARNING if quiet_snoopers else Severity.INFO,
                "link",
                f"no IGMP/MLD querier heard on {name} in {view.listened:g} s",
                "behind a switch with IGMP snooping, joins age out after about 260 s without "
                "a querier and the group goes quiet (give --wait 130 to hear a whole query "
                "interval before concluding)",
                hint=""
                if quiet_snoopers
                else "enable the IGMP querier on the switch, or on "
                "a Linux bridge: ip link set BRIDGE type bridge mcast_querier 1",
            )
        )
    for bridge in quiet_snoopers:
        found.append(
            Finding(
                Severity.WARNING,
                "link",
                f"bridge {bridge} snoops IGMP/MLD but has no querier",
                "its ports forward a group only while members answer queries: without "
                "them, memberships age out and multicast stops after about 260 s",
                (("ip", "link", "set", bridge, "type", "bridge", "mcast_querier", "1"),),
            )
        )
    for router in routers:
        hops = "TTL 1 (the default)"
        found.append(
            Finding(
                Severity.INFO,
                "link",
                f"multicast router {router.source} on {name} ({router.protocol} hellos)",
                f"groups sent with {hops} stay on this link; to reach members behind it, "
                "send with --ttl (routers to cross + 1): `mcast ping` shows the hops",
            )
        )
    return found


def beyond_multicast(group: object) -> str:
    """The exact commands that work where multicast is not carried (docs: README's
    "No multicast here?")."""
    return (
        f"members reach each other by unicast with --peer: `mcast chat --group {group} --peer "
        f"OTHER_HOST` (any group command; one member's address is enough, the rest is learned); "
        f"or join whole sites with a relay on one host of each: `mcast relay {group} --peer "
        f"OTHER_SITE_RELAY`"
    )


def _check_environment(view: SystemView) -> list[Finding]:
    found = []
    unicast_way = beyond_multicast(view.group)
    if view.container:
        found.append(
            Finding(
                Severity.INFO,
                "environment",
                f"running in a container ({view.container})",
                "a container's bridge network (Docker, Kubernetes CNI) does not carry "
                "multicast to other hosts, and often not between containers",
                hint="run with host networking (docker run --network host) or a macvlan "
                f"network on the LAN interface; where neither is possible, {unicast_way}",
            )
        )
    bridges = sorted(
        i.name for i in view.interfaces if i.name.startswith(CONTAINER_BRIDGES) and i.up
    )
    if bridges:
        found.append(
            Finding(
                Severity.INFO,
                "environment",
                f"container or VM bridges here: {', '.join(bridges)}",
                "containers behind them reach the LAN through NAT, which forwards no "
                "multicast; between containers on one bridge it works",
                hint="host networking or macvlan for containers that need the LAN's groups; "
                "smcroute (or pimd) to route a group between a bridge and the LAN",
            )
        )
    tunnels = sorted(
        name
        for name, kind in view.kinds.items()
        if kind in ("wireguard", "tun", "ipip", "gre", "vxlan", "geneve")
    )
    if tunnels:
        found.append(
            Finding(
                Severity.INFO,
                "environment",
                f"tunnels here: {', '.join(f'{n} ({view.kinds[n]})' for n in tunnels)}",
                "WireGuard and most VPN tunnels carry no multicast (WireGuard routes by "
                "destination to one peer; no IGMP crosses it), nor do the VXLAN overlays of "
                "container networks (flannel, Swarm, most CNIs)",
                hint=f"{unicast_way}; or a GRE/VXLAN tunnel that carries multicast, with "
                "smcroute routing the group into it",
            )
        )
    if view.virtualization:
        cloud = next(
            (c for c in ("Amazon", "Google", "Microsoft") if c in view.virtualization), None
        )
        why = {
            "Amazon": "an AWS VPC drops multicast unless a Transit Gateway multicast domain "
            "with these instances as members is set up",
            "Google": "Google Cloud VPCs do not carry multicast at all",
            "Microsoft": "Azure virtual networks do not carry multicast at all",
        }.get(
            cloud or "",
            "virtual switches may need IGMP snooping or promiscuous settings; cloud "
            "networks drop multicast unless a multicast domain is configured",
        )
        found.append(
            Finding(
                Severity.INFO,
                "environment",
                f"running under virtualisation: {view.virtualization}",
                why,
                hint=f"where the network has no multicast, {unicast_way}; or an overlay "
                "(VXLAN) that carries it",
            )
        )
    return found


CHECKS = (
    _check_interfaces,
    _check_route,
    _check_rp_filter,
    _check_firewall,
    _check_igmp_version,
    _check_limits_and_memberships,
    _check_ttl,
    _check_link,
    _check_environment,
)


def diagnose(view: SystemView, extra: list[Finding] | None = None) -> list[Finding]:
    """All findings for a view (plus ``extra``, e.g. the self-test), worst first."""
    findings = [*(extra or []), *(finding for check in CHECKS for finding in check(view))]
    return sorted(findings, key=lambda f: -SEVERITIES.index(f.severity))
