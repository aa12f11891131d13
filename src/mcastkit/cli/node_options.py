"""Options every group command shares (group, interface, keys, heartbeats, reliable
streams), and the Node they describe."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ..aio import DEFAULT_GROUP, DEFAULT_RCVBUF, Node
from ..refusals import why_refused
from ..reliable import ReliableConfig
from ..units import parse_rate
from . import argtypes
from .output import UsageError, add_key_options, group_key, note


def node_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--group",
        default=DEFAULT_GROUP,
        metavar="GROUP:PORT",
        help=f"group to join (default {DEFAULT_GROUP})",
    )
    argtypes.add_iface(
        parser,
        help_text="interface name, index or address (default: route); all, or eth0,eth1: be a "
        "member on each (all follows interfaces that come and go)",
    )
    parser.add_argument("--name", help="this node's name (default host-pid)")
    argtypes.add_ttl(parser)
    parser.add_argument(
        "--rcvbuf",
        type=argtypes.size(1024),
        default=DEFAULT_RCVBUF,
        help=f"receive buffer bytes (default {DEFAULT_RCVBUF >> 20} MiB; without root at most "
        "net.core.rmem_max)",
    )
    add_key_options(parser)
    parser.add_argument(
        "--heartbeat", type=argtypes.seconds(), default=1.0, help="seconds between heartbeats"
    )
    parser.add_argument(
        "--failure-timeout",
        type=argtypes.seconds(),
        help="seconds of silence before a peer is failed (default 3 heartbeats)",
    )
    reach_options(parser)
    parser.add_argument(
        "--max-skew",
        type=argtypes.seconds(),
        default=30.0,
        help="sealed groups: refuse frames stamped further than this from our clock "
        "(default 30 s; the hosts' clocks must agree this well)",
    )


def reach_options(parser: argparse.ArgumentParser) -> None:
    """Members beyond multicast: unicast seeds, multicast off, the port seeds name."""
    argtypes.add_peer_option(
        parser,
        "seeds",
        "a member to say hello to by unicast, where multicast is not carried (cloud, "
        "overlay, VPN); repeatable; PORT defaults to the group's. Members found through it "
        "tell us the rest, and members we do not hear by multicast get unicast copies",
    )
    parser.add_argument(
        "--no-multicast",
        dest="multicast",
        action="store_false",
        help="send and receive by unicast only (no join, nothing sent to the group); needs --peer",
    )
    parser.add_argument(
        "--unicast-port",
        type=argtypes.integer(0, 65535, "port"),
        help="port to hear unicast on, which --peer names (default: the group's; taken by "
        "another node of this host: any; 0: any)",
    )


def reach_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The Node's keyword arguments for the options of ``reach_options``."""
    return {"peers": args.seeds, "multicast": args.multicast, "unicast_port": args.unicast_port}


def reliable_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reliable streams")
    group.add_argument(
        "--max-message",
        type=argtypes.size(),
        default="64M",
        metavar="SIZE",
        help="largest reliable message accepted or sent (default 64M)",
    )
    group.add_argument(
        "--window",
        type=argtypes.size(64 << 10),
        default="32M",
        metavar="SIZE",
        help="retransmit window the sender keeps for repairs (default 32M; a larger message is "
        "kept whole while it is sent)",
    )
    group.add_argument(
        "--rate",
        type=argtypes.rate(allow_auto=True),
        default="auto",
        help="reliable sending rate: auto (default: from 1 Gbit/s, backing off when receivers "
        "are overrun, not for random loss), a fixed 200M (bits/s) or 50kpps, or max (no cap)",
    )
    group.add_argument(
        "--slow-receiver",
        choices=("drop", "wait"),
        default="drop",
        help="drop: never wait, laggards get an unrecoverable event (default); wait: hold "
        "new data until receivers acknowledge, dropping one stalled for --slow-timeout",
    )
    group.add_argument(
        "--slow-timeout",
        type=argtypes.seconds(),
        default=5.0,
        help="seconds a stalled receiver is waited for",
    )


def reliable_config(args: argparse.Namespace) -> ReliableConfig | None:
    if not hasattr(args, "max_message"):
        return None
    try:
        adaptive = args.rate == "auto"
        rate = None if adaptive else parse_rate(args.rate)
        return ReliableConfig(
            adaptive_rate=adaptive,
            max_message=args.max_message,
            window_bytes=args.window,
            rate_pps=rate.value if rate and rate.per_packet else None,
            rate_bps=rate.value if rate and not rate.per_packet else None,
            slow_receiver=args.slow_receiver,
            slow_timeout=args.slow_timeout,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None


def make_node(args: argparse.Namespace) -> Node:
    return Node(
        args.group,
        iface=args.iface,
        name=args.name,
        ttl=args.ttl,
        rcvbuf=args.rcvbuf,
        key=group_key(args, args.group),
        heartbeat=args.heartbeat,
        failure_timeout=args.failure_timeout,
        reliable=reliable_config(args),
        max_skew=args.max_skew,
        **reach_arguments(args),
    )


@contextlib.asynccontextmanager
async def member(args: argparse.Namespace) -> AsyncIterator[Node]:
    """The command's node, started, that says at once why it refuses what it hears."""
    async with make_node(args) as node:
        node.run_task(_say_refusals(node))
        yield node


async def _say_refusals(node: Node, every: float = 0.25) -> None:
    """The first time the node drops datagrams for a reason the user fixes (no key, another
    key, a sender without the key), say so and how: not an unexplained silence."""
    while True:
        await asyncio.sleep(every)
        dropped = {
            name.removeprefix("dropped:"): count
            for name, count in node.counters.items()
            if name.startswith("dropped:")
        }
        why = why_refused(dropped)
        if why is not None:
            note(f"warning: {why}")
            return
