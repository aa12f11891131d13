"""What the doctor reads (SystemView) and says (Finding), and how findings become an exit code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...addr import GroupSpec
from ...transport import (
    Interface,
)

SEVERITIES = ("ok", "info", "warning", "error")


@dataclass(frozen=True)
class Finding:
    """One result: how bad, what, why it matters, and the command that fixes it."""

    severity: str
    check: str
    what: str
    why: str = ""
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        """Plain data for JSON output."""
        return {k: v for k, v in self.__dict__.items() if v}


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
    nft_ruleset: str | None = None
    iptables_rules: str | None = None
    container: str | None = None
    virtualization: str | None = None


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
