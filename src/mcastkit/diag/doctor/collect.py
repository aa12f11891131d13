"""Reading the host into a SystemView: interfaces, routes, sysctls, IGMP, firewall, hints."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from typing import Any

from ...addr import GroupSpec
from ...errors import InterfaceError
from ...transport import (
    list_interfaces,
    resolve_interface,
    route_interface,
)
from .link import Heard, listen
from .model import SystemView


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _run(*command: str) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _parse_igmp(text: str) -> list[tuple[str, str]]:
    """/proc/net/igmp: an interface line, then its groups as little-endian hex."""
    joined: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines()[1:]:
        if not line.startswith((" ", "\t")):
            parts = line.split()
            current = parts[1] if len(parts) > 1 else ""
        else:
            word = line.split()[0]
            with contextlib.suppress(ValueError):
                joined.append((current, str(IPv4Address(bytes.fromhex(word)[::-1]))))
    return joined


def _parse_igmp6(text: str) -> list[tuple[str, str]]:
    joined = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and len(parts[2]) == 32:
            joined.append((parts[1], str(ip_address(bytes.fromhex(parts[2])))))
    return joined


def _sysctls(names: list[str]) -> dict[str, str]:
    keys = ["net.ipv4.igmp_max_memberships", "net.ipv6.mld_max_memberships"]
    for name in ["all", "default", *names]:
        keys += [
            f"net.ipv4.conf.{name}.rp_filter",
            f"net.ipv4.conf.{name}.force_igmp_version",
            f"net.ipv6.conf.{name}.force_mld_version",
        ]
    values = {}
    for key in keys:
        text = _read("/proc/sys/" + key.replace(".", "/"))
        if text is not None:
            values[key] = text.strip()
    return values


def _container() -> str | None:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes"
    if os.path.exists("/.dockerenv"):
        return "docker"
    if os.path.exists("/run/.containerenv"):
        return "podman"
    if os.environ.get("container"):  # noqa: SIM112 (systemd's name for it is lowercase)
        return os.environ["container"]  # noqa: SIM112
    cgroup = _read("/proc/1/cgroup") or ""
    for marker in ("kubepods", "docker", "lxc", "containerd"):
        if marker in cgroup:
            return marker
    return None


def _virtualization() -> str | None:
    text = " ".join(
        (_read(f"/sys/class/dmi/id/{name}") or "").strip()
        for name in ("sys_vendor", "product_name")
    )
    for marker in (
        "QEMU",
        "KVM",
        "VMware",
        "VirtualBox",
        "Xen",
        "Microsoft",
        "Amazon",
        "Google",
        "Firecracker",
        "OpenStack",
    ):
        if marker.lower() in text.lower():
            return text.strip()
    cpuinfo = _read("/proc/cpuinfo") or ""
    return "a hypervisor (cpu flag)" if " hypervisor" in cpuinfo else None


def _ssm_joins() -> set[tuple[int, str]]:
    """(family, interface) of the source-specific joins live (/proc/net/mcfilter, mcfilter6)."""
    joins = set()
    for family, path in ((4, "/proc/net/mcfilter"), (6, "/proc/net/mcfilter6")):
        for line in (_read(path) or "").splitlines()[1:]:
            parts = line.split()
            if len(parts) > 2:
                joins.add((family, parts[1]))
    return joins


def _route_to(source: str) -> str | None:
    """The interface this host would send to ``source`` from (None: no route)."""
    text = _run("ip", "-j", "route", "get", source)
    try:
        routes = json.loads(text) if text else []
    except ValueError:
        return None
    if not routes or routes[0].get("type") in ("unreachable", "blackhole", "prohibit"):
        return None
    return str(routes[0].get("dev")) if routes[0].get("dev") else None


def _bridges() -> list[tuple[str, bool, bool]]:
    """Linux bridges here: (name, IGMP snooping on, querier on)."""
    found = []
    for bridge in sorted(Path("/sys/class/net").glob("*/bridge")):
        snooping = (_read(str(bridge / "multicast_snooping")) or "0").strip() == "1"
        querier = (_read(str(bridge / "multicast_querier")) or "0").strip() == "1"
        found.append((bridge.parent.name, snooping, querier))
    return found


def _kinds() -> dict[str, str]:
    """What each interface is, where the kernel says (wireguard, tun, bridge, veth...)."""
    kinds = {}
    for uevent in Path("/sys/class/net").glob("*/uevent"):
        text = _read(str(uevent)) or ""
        for line in text.splitlines():
            if line.startswith("DEVTYPE="):
                kinds[uevent.parent.name] = line.split("=", 1)[1]
        if uevent.parent.name not in kinds and (uevent.parent / "tun_flags").exists():
            kinds[uevent.parent.name] = "tun"
    return kinds


def _nft_json() -> dict[str, Any] | None:
    text = _run("nft", "-j", "list", "ruleset")
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def collect(
    group: GroupSpec,
    *,
    iface: str | None = None,
    ttl: int = 1,
    sources: list[str] | None = None,
    listen_for: float = 0.0,
) -> SystemView:
    """Read the host into a view; ``listen_for`` seconds of listening for queriers and
    routers on the chosen interface (nothing is sent)."""
    interfaces = list_interfaces()
    route = route_interface(group.group, interfaces)
    name = iface or group.iface
    chosen = route
    if name:
        try:
            chosen = resolve_interface(name, group.family, require_multicast=False)
        except InterfaceError:
            chosen = None  # reported by the interface check
    elif chosen is None:
        # No route: check the interface a fix would most likely use.
        chosen = next(
            (
                i
                for i in interfaces
                if i.up and i.multicast and not i.loopback and i.has_family(group.family)
            ),
            None,
        )
    names = [i.name for i in interfaces]
    igmp = _parse_igmp(_read("/proc/net/igmp") or "") + _parse_igmp6(_read("/proc/net/igmp6") or "")
    mcfilter = _read("/proc/net/mcfilter") or ""
    legacy = {}
    for family, tool in ((4, "iptables-legacy-save"), (6, "ip6tables-legacy-save")):
        saved = _run(tool)
        if saved and "*filter" in saved:  # legacy tables in use (iptables-nft's are in nft)
            legacy[family] = saved
    heard: list[Heard] | str = []
    if listen_for > 0 and chosen is not None:
        heard = listen(group.family, chosen.name, chosen.index, listen_for)
    return SystemView(
        group=group,
        iface_given=str(name) if name else None,
        ttl=ttl,
        sources=sources or [],
        interfaces=interfaces,
        chosen=chosen,
        route=route,
        sysctl=_sysctls(names),
        igmp=igmp,
        mcfilter_lines=max(0, len(mcfilter.splitlines()) - 1),
        nft_ruleset=_nft_json(),
        iptables_legacy=legacy,
        container=_container(),
        virtualization=_virtualization(),
        ssm_joins=_ssm_joins(),
        source_routes={source: _route_to(source) for source in sources or []},
        bridges=_bridges(),
        heard=heard,
        listened=listen_for,
        kinds=_kinds(),
    )
