"""``mcast demo``: the seed's demo — random ids, join, announce, answer every other node."""

from __future__ import annotations

import argparse

from ..addr import GroupSpec, parse_group
from ..demo import DemoEvent, run_demo_async
from ..transport.interfaces import router_hint
from . import argtypes, signals
from .node_options import reach_arguments, reach_options
from .output import add_key_options, emit_json, group_key, note, say

DEFAULT_GROUP = "239.255.77.77:5077"


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the command."""
    demo = commands.add_parser(
        "demo",
        help="the seed's demo: nodes with random ids greet and answer each other",
        description=(
            "Each node draws a random id, joins the group, announces itself once and answers "
            "every hello that is not its own. --nodes N runs N nodes in this process on "
            "loopback (no network setup needed); without it, one node runs on the default "
            "interface: start it on two hosts of a LAN to see them greet each other."
        ),
    )
    argtypes.add_group(demo, default=DEFAULT_GROUP)
    demo.add_argument(
        "--nodes",
        type=argtypes.integer(1, 64, "nodes"),
        help="run N nodes in this process (default iface: lo)",
    )
    argtypes.add_iface(
        demo, help_text="interface name, index or address; all, or eth0,eth1: join on each"
    )
    argtypes.add_ttl(demo)
    demo.add_argument("--name", help="a name for this node (default node-1 ...)")
    demo.add_argument(
        "--duration",
        type=argtypes.seconds(),
        help="seconds to run (default: 3 with --nodes, until Ctrl-C or --expect otherwise)",
    )
    demo.add_argument(
        "--expect",
        type=argtypes.count("nodes"),
        help="stop once this many other nodes greeted and answered",
    )
    add_key_options(demo)
    reach_options(demo)
    argtypes.add_json(demo, "NDJSON events, then a JSON summary")
    demo.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo."""
    spec = parse_group(args.group)
    nodes = args.nodes or 1
    iface = args.iface
    if args.nodes and iface is None:
        iface = "::1" if spec.family == 6 else "127.0.0.1"
    duration = args.duration
    if duration is None and (args.nodes or args.expect is None):
        duration = 3.0 if args.nodes else None
    names = [args.name] if args.name and nodes == 1 else None

    def show(event: DemoEvent) -> None:
        if args.json:
            emit_json({"event": event.to_dict()})
            return
        me = f"{event.node_name} [{event.node[:8]}]"
        who = f"{event.peer_name} [{(event.peer or '')[:8]}]"
        if event.kind == "greeted":
            say(f"{me}: hello from {who} at {event.source} -> answered")
        elif event.kind == "answered":
            say(f"{me}: {who} answered our hello")
        elif event.kind == "invalid":
            say(f"{me}: ignored a datagram that is not a demo message from {event.source}")
        elif event.kind == "alone":
            note(f"{me}: no other node heard yet. {_alone_hint(spec, event.interface, args)}")

    where = f"via {iface}" if iface else "on the default interface"
    note(f"demo on {spec} {where}: {nodes} node(s); own messages are recognised by id")
    key = group_key(args, args.group)
    result = signals.run_async(
        lambda: run_demo_async(
            spec,
            nodes=nodes,
            iface=iface,
            ttl=args.ttl,
            duration=duration,
            names=names,
            on_event=show,
            expect_peers=args.expect,
            key=key,
            **reach_arguments(args),
        )
    )
    if args.json:
        emit_json({"summary": result.to_dict()})
    else:
        say("")
        for peer, own in zip(result.peers, result.own_ignored, strict=True):
            say(
                f"{peer.name} [{peer.node_id}] greeted by {len(peer.greeted_by)}, "
                f"answered by {len(peer.answered_by)}, ignored {own} own message(s)"
            )
    wanted = args.expect if args.expect is not None else (nodes - 1 if nodes > 1 else 0)
    if wanted and not result.heard_at_least(wanted):
        note(f"not every node was greeted and answered by {wanted} other(s) in time")
        if not result.heard_at_least(1):
            note(_alone_hint(spec, result.interface, args))
        return 1
    return 0


def _alone_hint(spec: GroupSpec, interface: str | None, args: argparse.Namespace) -> str:
    """Why a node hears no other: across a router, the TTL first (1 stops at it)."""
    beyond = None
    if args.ttl <= 1 and interface is not None:
        beyond = router_hint(spec, [interface], "mcast demo --ttl 4 on every host")
    return beyond or (
        "Start `mcast demo` with the same group on another host of this link, or try "
        "`mcast demo --nodes 3` here; `mcast doctor` checks this host."
    )
