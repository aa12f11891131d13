"""Diagnostics commands: ``mcast ping`` and ``mcast top`` (and friends, registered from their
own modules)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..addr import parse_group
from ..diag.ping import PingSession, verdict
from ..diag.runner import PingOptions, run_ping, run_top
from ..transport.unicast import resolve_peers
from . import argtypes
from .output import console, emit_json, note
from .signals import CtrlC

DEFAULT_PING_GROUP = "239.255.77.80:5080"


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the commands of this module."""
    ping = commands.add_parser(
        "ping",
        help="multicast and unicast ping between every host running it (like omping)",
        description=(
            "Run on several hosts: they find each other on the group (no host list) and "
            "probe each other over multicast and unicast. Exit 1 when multicast fails while "
            "unicast works, when a path loses more than --max-loss, or when no peer answers."
        ),
    )
    argtypes.add_group(ping, default=DEFAULT_PING_GROUP)
    argtypes.add_iface(
        ping,
        help_text="interface name, index or address (default: route); all, or eth0,eth1: probe "
        "out of each (a host on two of our links shows as two peers, one per path)",
    )
    ping.add_argument(
        "--interval", type=argtypes.seconds(), default=1.0, help="seconds between probes"
    )
    ping.add_argument(
        "--count", type=argtypes.count("rounds"), help="stop after this many probe rounds"
    )
    ping.add_argument("--duration", type=argtypes.seconds(), help="stop after this many seconds")
    argtypes.add_ttl(ping, default=64, help_text="TTL / hop limit of probes (64)")
    ping.add_argument(
        "--peer",
        action="append",
        default=[],
        type=argtypes.peer(),
        metavar="HOST[:PORT]",
        help="also probe this host by unicast (found even if multicast fails: a cloud, a VPN); "
        "a name is resolved by DNS",
    )
    ping.add_argument(
        "--unicast-port",
        type=argtypes.PORT,
        help="local unicast port (default: the group port; 0 for several pings on one host)",
    )
    ping.add_argument(
        "--loop",
        action="store_true",
        help="let this host hear its own probes (several pings on one host, real interface); "
        "off by default: the looped-back copies inflate RTTs",
    )
    ping.add_argument(
        "--max-loss",
        type=argtypes.percent(),
        metavar="PERCENT",
        help="exit 1 when a path loses more than this (counted from its first packet)",
    )
    argtypes.add_json(ping, "a JSON summary at the end")
    ping.add_argument(
        "--ndjson",
        action="store_true",
        help="a JSON snapshot line every 0.5 s while running, then the summary",
    )
    ping.set_defaults(handler=cmd_ping)

    top = commands.add_parser(
        "top",
        help="a live view of the groups on an interface: rates, loss, joins, the querier",
        description=(
            "Capture passively on IFACE (root: AF_PACKET, all-multicast mode; nothing is "
            "sent or joined) and show each group and port: senders, members that reported, "
            "packets/s, Mbit/s, loss estimated from mcastkit's sequence numbers (group "
            "frames, bench, ping), what the datagrams are; IGMP/MLD joins and leaves as they "
            "happen, and the querier. A snooping switch shows a port only what it forwards."
        ),
    )
    top.add_argument(
        "iface",
        nargs="?",
        type=argtypes.interfaces(several=False),
        metavar="IFACE",
        help="interface name, index or address (default: the multicast route's)",
    )
    top.add_argument(
        "--interval", type=argtypes.seconds(), default=1.0, help="seconds between views (1)"
    )
    top.add_argument("--count", type=argtypes.count("views"), help="stop after this many views")
    top.add_argument("--duration", type=argtypes.seconds(), help="stop after this many seconds")
    argtypes.add_json(top, "NDJSON: one snapshot per interval")
    top.set_defaults(handler=cmd_top)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}{unit}"
    return f"{value}{unit}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def ping_table(summary: dict[str, Any]) -> Any:
    """A rich table of every peer and path."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=f"mcast ping {summary.get('group', '')} — {len(summary['peers'])} peer(s)",
        title_justify="left",
    )
    for column in (
        "peer",
        "path",
        "sent",
        "answered",
        "recv",
        "loss",
        "loss 1st",
        "dup",
        "reord",
        "gap ms",
        "rtt min/avg/max ms",
        "p50/p99 ms",
        "jitter ms",
        "ttl/hops",
    ):
        table.add_column(column, justify="left" if column in ("peer", "path") else "right")
    interval = summary.get("interval_s") or 1.0
    for peer in summary["peers"]:
        label = f"{peer['address']} [{peer['id'][:8]}]"
        silent = peer.get("silent_s") or 0.0
        if silent > 3 * interval:  # gone, or cut off: its figures are history
            label += f" silent {silent:.0f} s"
        for path in ("multicast", "unicast"):
            stats = peer[path]
            rtt = stats["rtt_ms"]
            table.add_row(
                escape(label) if path == "multicast" else "",
                path,
                str(stats["sent"]),
                str(stats["answered"]),
                str(stats["received"]),
                _pct(stats["loss"]),
                _pct(stats["loss_since_first"]),
                str(stats["duplicates"]),
                str(stats["reordered"]),
                _fmt(stats["longest_gap_ms"]),
                f"{_fmt(rtt['min'])}/{_fmt(rtt['avg'])}/{_fmt(rtt['max'])}",
                f"{_fmt(rtt['p50'])}/{_fmt(rtt['p99'])}",
                _fmt(stats["jitter_ms"]),
                f"{_fmt(stats['ttl_seen'])}/{_fmt(stats['hops'])}",
            )
    return table


def cmd_ping(args: argparse.Namespace) -> int:
    """Ping until --count, --duration or Ctrl-C; then summarise."""
    spec = parse_group(args.group)
    pinned = list(resolve_peers(args.peer, spec.family, spec.port))
    interrupted = CtrlC().install()
    live = None
    on_update = None
    if args.ndjson:
        args.json = True

        def snapshot(session: PingSession, now_ns: int) -> None:
            emit_json({"snapshot": session.summary(now_ns)})

        on_update = snapshot
    elif not args.json and sys.stdout.isatty():
        from rich.live import Live

        live = Live(refresh_per_second=2)
        live.start()

        def update(session: PingSession, now_ns: int) -> None:
            summary = session.summary(now_ns)
            summary["group"] = str(spec)
            live.update(ping_table(summary))

        on_update = update
    note(f"ping {spec}: probing every {args.interval}s over multicast and unicast; Ctrl-C ends")
    try:
        summary = run_ping(
            spec,
            PingOptions(
                iface=args.iface,
                interval=args.interval,
                duration=args.duration,
                count=args.count,
                ttl=args.ttl,
                peers=tuple(pinned or ()),
                unicast_port=args.unicast_port,
                loopback=args.loop,
            ),
            on_update=on_update,
            stop=interrupted,
        )
    finally:
        if live is not None:
            live.stop()
        interrupted.restore()
    max_loss = None if args.max_loss is None else args.max_loss / 100
    code, reasons = verdict(summary, max_loss)
    summary["ok"] = code == 0
    summary["problems"] = reasons
    if args.json:
        emit_json(summary)
    else:
        out = console()
        if not out.is_terminal:
            out = console(width=170)  # logs and pipes: one row per path, never wrapped
        out.print(ping_table(summary))
    for reason in reasons:
        note(f"problem: {reason}")
    return code


def top_table(view: dict[str, Any]) -> Any:
    """The view as a rich table, the querier and capture drops in its title."""
    from rich.markup import escape
    from rich.table import Table

    queriers = ", ".join(
        f"{q['address']} ({q['protocol']}, {q['heard_s_ago']:.0f}s ago)"
        for q in view["queriers"].values()
    )
    title = (
        f"mcast top {view['interface']}: {len(view['groups'])} group(s); "
        f"querier {queriers or 'none heard'}; capture drops {view['capture_drops']}"
    )
    table = Table(title=escape(title), title_justify="left")
    for column in ("group", "senders", "members", "kind", "pps", "Mbit/s", "loss", "packets"):
        table.add_column(column, justify="left" if column in ("group", "kind") else "right")
    for row in view["groups"]:
        senders = row["sources"]
        table.add_row(
            escape(row["group"]),
            escape(senders[0] + (f" +{len(senders) - 1}" if len(senders) > 1 else ""))
            if senders
            else "-",
            str(row["members"]),
            row["kind"],
            _fmt(row.get("pps")),
            _fmt(row.get("mbps")),
            _pct(row.get("loss")),
            str(row.get("packets", 0)),
        )
    return table


def _describe_event(event: dict[str, Any]) -> str:
    if event["event"] == "querier":
        return f"querier {event['host']} ({event['protocol']})"
    return f"{event['host']} {'joined' if event['event'] == 'join' else 'left'} {event['group']}"


def cmd_top(args: argparse.Namespace) -> int:
    """Show the link's groups until --count, --duration or Ctrl-C."""
    interrupted = CtrlC().install()
    live = None
    log: list[str] = []
    out = console()

    def show(view: dict[str, Any]) -> None:
        if args.json:
            emit_json(view)
            return
        lines = [_describe_event(e) for e in view["events"]]
        if live is not None:
            from rich.console import Group

            log.extend(lines)
            del log[:-8]
            live.update(Group(top_table(view), *log))
            return
        for line in lines:
            note(line)
        console(width=170).print(top_table(view))

    if not args.json and out.is_terminal:
        from rich.live import Live

        live = Live(refresh_per_second=2, console=out)
        live.start()
    try:
        run_top(
            args.iface,
            interval=args.interval,
            duration=args.duration,
            count=args.count,
            on_snapshot=show,
            stop=interrupted,
        )
    finally:
        if live is not None:
            live.stop()
        interrupted.restore()
    return 0
