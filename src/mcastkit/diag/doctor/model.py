"""What the doctor reads (SystemView) and says (Finding), and how findings become an exit code."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ...addr import GroupSpec
from ...netif import Interface


class Severity(str, Enum):
    """How bad a finding is, in rising order (a str: JSON and comparisons with text keep
    working)."""

    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


SEVERITIES = tuple(Severity)  # in rising order


@dataclass(frozen=True)
class Heard:
    """A querier or a router on the link."""

    kind: str  # "querier" or "router"
    source: str
    protocol: str  # "IGMPv3", "MLDv2", "PIM"...
    interval: float | None = None  # the querier's query interval, when it says


@dataclass(frozen=True)
class Finding:
    """One result: how bad, what, why it matters, and the commands that fix it.

    ``commands`` are complete command lines (argument lists) to run in order: after them,
    the same check passes. Where no command can fix it (a missing interface, a cloud
    network), ``hint`` says what to do instead.
    """

    severity: Severity
    check: str
    what: str
    why: str = ""
    commands: tuple[tuple[str, ...], ...] = ()
    hint: str = ""

    @property
    def fix(self) -> str:
        """The commands as one line to paste into a shell."""
        return "; ".join(shlex.join(command) for command in self.commands)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        data: dict[str, Any] = {"severity": self.severity, "check": self.check, "what": self.what}
        if self.why:
            data["why"] = self.why
        if self.commands:
            data["fix"] = self.fix
            data["commands"] = [list(command) for command in self.commands]
        if self.hint:
            data["hint"] = self.hint
        return data


@dataclass
class SystemView:
    """Everything the checks look at, gathered once."""

    group: GroupSpec
    iface_given: str | None
    ttl: int
    sources: list[str]
    interfaces: list[Interface]
    chosen: Interface | None
    route: Interface | None
    sysctl: dict[str, str] = field(default_factory=dict)
    igmp: list[tuple[str, str]] = field(default_factory=list)  # (interface, group) joined
    mcfilter_lines: int = 0
    nft_ruleset: dict[str, Any] | None = None  # nft -j list ruleset
    iptables_legacy: dict[int, str] = field(default_factory=dict)  # family -> *-legacy-save
    container: str | None = None
    virtualization: str | None = None
    # (family, interface) of every source-specific join live on the host, of any program
    ssm_joins: set[tuple[int, str]] = field(default_factory=set)
    source_routes: dict[str, str | None] = field(default_factory=dict)  # source -> dev
    bridges: list[tuple[str, bool, bool]] = field(default_factory=list)  # snooping, querier
    heard: list[Heard] | str = field(default_factory=list)  # queriers and routers, or why not
    listened: float = 0.0  # seconds the link was listened to
    kinds: dict[str, str] = field(default_factory=dict)  # interface -> kind (wireguard, ...)


def exit_code(findings: list[Finding]) -> int:
    """0 ok/info, 1 warning, 2 error (the Nagios plugin convention)."""
    worst = max((SEVERITIES.index(f.severity) for f in findings), default=0)
    return {0: 0, 1: 0, 2: 1, 3: 2}[worst]


def report(findings: list[Finding]) -> dict[str, Any]:
    """Plain data for JSON output."""
    worst = max(findings, key=lambda f: SEVERITIES.index(f.severity)).severity if findings else "ok"
    return {
        "worst": worst,
        "exit_code": exit_code(findings),
        "findings": [f.to_dict() for f in findings],
    }
