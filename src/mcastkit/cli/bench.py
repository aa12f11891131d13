"""``mcast bench send|recv``: multicast throughput, interoperable with iperf2 as the sender."""

from __future__ import annotations

import argparse
from typing import Any

from ..addr import parse_group
from ..diag.bench import MIN_SIZE
from ..diag.runner import run_bench_recv, run_bench_send
from ..units import parse_rate
from . import argtypes
from .output import UsageError, emit_json, note, say
from .signals import CtrlC

DEFAULT_BENCH_GROUP = "239.255.77.81:5081"


def _count(number: int, noun: str) -> str:
    """``1 datagram``, ``1,200 datagrams``."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _send_errors(by_name: dict[str, int]) -> str:
    """``393 send errors: EPERM (a firewall drops them)``: what each errno means here."""
    meaning = {"ENOBUFS": "queue full", "EAGAIN": "queue full", "EPERM": "a firewall drops them"}
    parts = [
        f"{name} x{count} ({meaning.get(name, 'see errno')})" for name, count in by_name.items()
    ]
    return f"{_count(sum(by_name.values()), 'send error')}: {', '.join(parts)}"


def _article(word: str) -> str:
    """``an iperf2``, ``an mcast``, ``a raw``: by the sound, which for these is the letter."""
    return "an" if word[:1].lower() in "aeiomx" else "a"


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``mcast bench``."""
    bench = commands.add_parser("bench", help="throughput test: bench send / bench recv")
    sides = bench.add_subparsers(dest="side", metavar="send|recv")
    sides.required = True

    send = sides.add_parser("send", help="send at a rate for a duration")
    argtypes.add_group(send, default=DEFAULT_BENCH_GROUP)
    send.add_argument(
        "--rate",
        type=argtypes.rate(allow_auto=False),
        default="10M",
        help="bits/s (100M, 1G), packets/s (50kpps), or max (default 10M)",
    )
    send.add_argument(
        "--size",
        type=argtypes.integer(MIN_SIZE, 65507, "datagram size"),
        default=1400,
        help=f"UDP payload bytes ({MIN_SIZE}-65507, default 1400)",
    )
    send.add_argument(
        "--duration", type=argtypes.seconds(), default=10.0, help="seconds (default 10)"
    )
    argtypes.add_iface(send, several=False)
    argtypes.add_ttl(send)
    send.add_argument(
        "--iperf2",
        action="store_true",
        help="iperf2's datagrams (its UDP header and closing datagram), for an "
        "`iperf -s -u -B GROUP` receiver",
    )
    send.add_argument(
        "--gso",
        action="store_true",
        help="send in UDP GSO batches (up to 64 datagrams per system call) where the kernel "
        "can; the summary says whether it did",
    )
    argtypes.add_json(send, "NDJSON per second, then a summary")
    send.set_defaults(handler=cmd_send)

    recv = sides.add_parser(
        "recv",
        help="receive and measure (mcast bench send or iperf -c GROUP -u as the sender)",
        description="Measure received pps/bps, loss, duplicates, reordering and jitter per "
        "second and in total. Exit 1 when nothing arrived.",
    )
    argtypes.add_group(recv, default=DEFAULT_BENCH_GROUP)
    argtypes.add_iface(recv)
    recv.add_argument("--source", action="append", default=[], help="SSM source (repeatable)")
    recv.add_argument("--duration", type=argtypes.seconds(), help="stop after this many seconds")
    recv.add_argument(
        "--idle",
        type=argtypes.seconds(),
        default=2.0,
        help="stop after this long without traffic once it started (default 2)",
    )
    recv.add_argument(
        "--wait", type=argtypes.seconds(), help="give up if nothing arrives in this time"
    )
    recv.add_argument(
        "--rcvbuf",
        type=argtypes.size(1024),
        default=8 << 20,
        help="receive buffer bytes (default 8 MiB)",
    )
    argtypes.add_json(recv, "NDJSON per second, then a summary")
    recv.set_defaults(handler=cmd_recv)


def _second_printer(as_json: bool, side: str) -> Any:
    def show(interval: dict[str, Any]) -> None:
        if as_json:
            emit_json({"interval": interval})
        elif side == "send":
            note(
                f"{interval['t']:7.1f}s  sent {interval['pps']:>11,.0f} pps "
                f"{interval['mbps']:>10,.1f} Mbit/s"
            )
        else:
            note(
                f"{interval['t']:7.1f}s  recv {interval['pps']:>11,.0f} pps "
                f"{interval['mbps']:>10,.1f} Mbit/s  loss {interval['loss']:6.2%}  "
                f"dup {interval['duplicates']}  reord {interval['reordered']}  "
                f"jitter {interval['jitter_ms']:.3f} ms"
            )

    return show


def cmd_send(args: argparse.Namespace) -> int:
    """Send."""
    spec = parse_group(args.group)
    rate = parse_rate(args.rate)
    kind = "iperf2 " if args.iperf2 else ""
    note(f"bench send to {spec}: {args.rate}, {args.size} B {kind}datagrams for {args.duration}s")
    try:
        summary = run_bench_send(
            spec,
            rate=rate,
            size=args.size,
            duration=args.duration,
            iface=args.iface,
            ttl=args.ttl,
            on_second=_second_printer(args.json, "send"),
            gso=args.gso,
            iperf2=args.iperf2,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        emit_json({"summary": summary})
    else:
        say(
            f"sent {_count(summary['packets'], 'datagram')} in {summary['seconds']:.2f}s: "
            f"{summary['pps']:,.0f} pps, {summary['mbps']:,.1f} Mbit/s"
            + (f" ({_send_errors(summary['send_errors_by'])})" if summary["send_errors"] else "")
        )
    return 0


def cmd_recv(args: argparse.Namespace) -> int:
    """Receive and measure."""
    spec = parse_group(args.group)
    note(f"bench recv on {spec}: waiting for traffic (mcast bench send, or iperf -c GROUP -u)")
    with CtrlC() as interrupted:
        summary = run_bench_recv(
            spec,
            iface=args.iface,
            sources=args.source,
            duration=args.duration,
            idle=args.idle,
            wait=args.wait,
            rcvbuf=args.rcvbuf,
            on_second=_second_printer(args.json, "recv"),
            stop=interrupted,
        )
    if args.json:
        emit_json({"summary": summary})
    else:
        loss = "-" if summary["loss"] is None else f"{summary['loss']:.3%}"
        rate = (
            ""
            if summary["pps"] is None
            else f": {summary['pps']:,.0f} pps, {summary['mbps']:,.1f} Mbit/s"
        )
        say(
            f"received {_count(summary['packets'], 'datagram')} from "
            f"{_article(summary['sender'])} {summary['sender']} sender in "
            f"{summary['seconds']:.2f}s{rate}; lost {summary['lost']} ({loss}), "
            f"dup {summary['duplicates']}, reordered {summary['reordered']}, "
            f"jitter {summary['jitter_ms']:.3f} ms"
        )
    if "warning" in summary:
        note(f"warning: {summary['warning']}")
    if summary["packets"] == 0:
        note("nothing arrived: check the sender's TTL and interface, or run `mcast doctor`")
        return 1
    return 0
