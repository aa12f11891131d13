"""``mcast addr`` and ``mcast ifaces``: what an address means, what interfaces there are."""

from __future__ import annotations

import argparse

from ..addr import classify, groups_sharing_mac, parse_group
from ..transport import eligible_for_all, list_interfaces
from . import argtypes
from .output import emit_json, say


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the commands of this module."""
    addr = commands.add_parser(
        "addr",
        help="explain a multicast address: block, scope, reach, MAC, TTL advice",
        description="Explain multicast group addresses (IPv4 or IPv6, with or without :PORT).",
    )
    addr.add_argument("groups", nargs="+", metavar="GROUP", help="e.g. 239.1.2.3 or ff15::1")
    argtypes.add_json(addr, "one JSON object per group")
    addr.set_defaults(handler=cmd_addr)

    ifaces = commands.add_parser(
        "ifaces", help="list interfaces with addresses and multicast flags"
    )
    argtypes.add_json(ifaces, "a JSON array")
    ifaces.set_defaults(handler=cmd_ifaces)


def cmd_addr(args: argparse.Namespace) -> int:
    """Print what each group address means."""
    for text in args.groups:
        spec = parse_group(text, default_port=0) if ":" in text or "[" in text else None
        info = classify(spec.group if spec else text)
        if args.json:
            data = info.to_dict()
            if info.family == 4:
                data["mac_shared_groups"] = [str(g) for g in groups_sharing_mac(info.address)]
            emit_json(data)
            continue
        say(f"{info.address}  (IPv{info.family} multicast)")
        if info.well_known:
            say(f"  well known   {info.well_known}")
        say(f"  block        {info.block}")
        say(f"  scope        {info.scope}")
        reach = "yes, routers forward it" if info.routable else "no, stays on the link"
        say(f"  routed       {reach}")
        say(f"  SSM          {'yes: join with a source' if info.ssm else 'no (any-source)'}")
        say(f"  MAC          {info.mac}")
        say(f"  TTL          {info.ttl_advice}")
        if info.flags:
            on = [name for name, value in info.flags.items() if value]
            say(f"  flags        {', '.join(on) if on else 'none (permanent, well-known)'}")
        for line in info.notes:
            say(f"  note         {line}")
    return 0


def _flag(value: bool | None, name: str) -> str:
    if value is None:
        return f"{name}?"
    return name if value else f"no-{name}"


def cmd_ifaces(args: argparse.Namespace) -> int:
    """Print the interfaces."""
    interfaces = list_interfaces()
    if args.json:
        emit_json(
            [
                {
                    **i.to_dict(),
                    "in_all": {"ipv4": eligible_for_all(i, 4), "ipv6": eligible_for_all(i, 6)},
                }
                for i in interfaces
            ]
        )
        return 0
    for i in interfaces:
        flags = [
            "UP" if i.up else ("DOWN" if i.up is False else "up?"),
            _flag(i.multicast, "MULTICAST") if not i.loopback else "LOOPBACK",
        ]
        mtu = f"mtu {i.mtu}" if i.mtu else ""
        families = [f"IPv{f}" for f in (4, 6) if eligible_for_all(i, f)]
        taken = f"  --iface all: {'/'.join(families)}" if families else ""
        say(f"{i.index:>3}  {i.name:<16} {' '.join(flags):<26} {mtu}{taken}")
        for address in (*i.ipv4, *i.ipv6):
            say(f"       {address}")
        if not i.loopback and i.multicast is False:
            say(f"       multicast is off: ip link set {i.name} multicast on")
    return 0
