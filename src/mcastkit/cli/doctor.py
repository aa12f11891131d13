"""``mcast doctor``: findings with severity, why they matter, and the fixing command."""

from __future__ import annotations

import argparse
import shlex

from ..addr import parse_group
from ..diag.doctor import collect, diagnose, exit_code, report, self_test
from . import argtypes
from .output import console, emit_json, say

DEFAULT_DOCTOR_GROUP = "239.255.77.82:5082"
_MARK = {
    "ok": "[green]ok   [/]",
    "info": "[blue]info [/]",
    "warning": "[yellow]WARN [/]",
    "error": "[red]ERROR[/]",
}


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``mcast doctor``."""
    doctor = commands.add_parser(
        "doctor",
        help="find why multicast does not work on this host, and how to fix it",
        description="Checks interfaces, routes, rp_filter (with --source, the route back to "
        "it), the firewall (nft and iptables rulesets evaluated for the group's packets), "
        "IGMP/MLD versions, queriers and routers heard on the link, local bridges, limits, "
        "memberships, TTL and the environment, then sends and receives on the chosen "
        "interface (TTL 0: nothing leaves the host). Every fix is a command to paste (in "
        "--json: argument lists); after it, the finding is gone. Exit 0 ok, 1 warnings, 2 "
        "errors.",
    )
    argtypes.add_group(doctor, default=DEFAULT_DOCTOR_GROUP)
    argtypes.add_iface(doctor, several=False, help_text="interface to check (default: the route's)")
    argtypes.add_ttl(doctor, default=1, help_text="TTL your application uses")
    doctor.add_argument(
        "--source",
        action="append",
        default=[],
        type=argtypes.address(),
        help="SSM source you join (an address)",
    )
    doctor.add_argument("--no-self-test", action="store_true", help="skip the live send/receive")
    doctor.add_argument(
        "--wait",
        type=argtypes.seconds(allow_zero=True, maximum=600),
        default=2.0,
        help="seconds to listen for IGMP/MLD queriers and PIM routers on the link (default "
        "2; 130 hears a whole default query interval; 0 skips it)",
    )
    argtypes.add_json(doctor, "JSON report")
    doctor.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Diagnose."""
    spec = parse_group(args.group)
    view = collect(spec, iface=args.iface, ttl=args.ttl, sources=args.source, listen_for=args.wait)
    findings = diagnose(view, [] if args.no_self_test else [self_test(view)])
    if args.json:
        emit_json(report(findings))
        return exit_code(findings)
    from rich.markup import escape

    out = console(highlight=False)
    if not out.is_terminal:
        out = console(highlight=False, soft_wrap=True)  # pipes and logs: one line each
    where = view.chosen.name if view.chosen else "no interface"
    say(f"mcast doctor: {spec} on {where}")
    for finding in findings:
        out.print(f"{_MARK[finding.severity]} {finding.check:<13} {escape(finding.what)}")
        if finding.why:
            out.print(f"      {'why':<13} {escape(finding.why)}")
        for command in finding.commands:
            out.print(f"      {'fix':<13} [bold]{escape(shlex.join(command))}[/]")
        if finding.hint:
            out.print(f"      {'hint':<13} {escape(finding.hint)}")
    return exit_code(findings)
