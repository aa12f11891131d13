"""``mcast relay``: join two or more sites' multicast through unicast between relays."""

from __future__ import annotations

import argparse

from ..addr import parse_group
from ..aio import DEFAULT_GROUP
from ..units import parse_rate
from . import argtypes, signals
from .output import add_key_options, emit_json, group_key, note, say

DEFAULT_RELAY_PORT = 5070  # relaying.DEFAULT_RELAY_PORT (not imported: --help stays light)


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the command."""
    relay = commands.add_parser(
        "relay",
        help="carry a group between sites over unicast (clouds, VPNs, WANs without multicast)",
        description=(
            "Join GROUP on this site and forward what is heard there to the other relays by "
            "unicast UDP (sealed with the group key when there is one); send what they "
            "forward on this site's group. Members need no configuration: replies, repairs "
            "and hellos they send to a remote member come back through the relays. Run one "
            "relay per site; give each the others with --peer (or one: relays tell each "
            "other whom they know)."
        ),
    )
    argtypes.add_group(relay, default=DEFAULT_GROUP)
    argtypes.add_peer_option(
        relay, "peers", f"another site's relay (repeatable; PORT defaults to {DEFAULT_RELAY_PORT})"
    )
    relay.add_argument(
        "--port",
        type=argtypes.integer(1, 65535, "port"),
        default=DEFAULT_RELAY_PORT,
        help=f"UDP port this relay hears the others on (default {DEFAULT_RELAY_PORT})",
    )
    relay.add_argument("--listen", default="", help="address to hear the relays on (default all)")
    argtypes.add_iface(relay, several=False, help_text="this site's interface")
    argtypes.add_ttl(relay, default=1, help_text="TTL on this site (default 1)")
    relay.add_argument(
        "--rate",
        type=argtypes.rate(allow_auto=False),
        help="most a relay forwards to the others together, e.g. 200M (bits/s; default no cap)",
    )
    relay.add_argument(
        "--duration", type=argtypes.seconds(), help="seconds to run (default until Ctrl-C)"
    )
    relay.add_argument(
        "--stats", type=argtypes.seconds(), metavar="SECONDS", help="print counters this often"
    )
    add_key_options(relay)
    argtypes.add_json(relay, "NDJSON counters, then a summary")
    relay.set_defaults(handler=cmd_relay)


def cmd_relay(args: argparse.Namespace) -> int:
    """Relay until --duration or a signal."""
    from ..relaying import RelayOptions, run_relay

    spec = parse_group(args.group)
    rate = None
    if args.rate is not None:
        parsed = parse_rate(args.rate)
        if parsed is not None and parsed.per_packet:
            raise ValueError("--rate for a relay is in bits/s (e.g. 200M), not packets/s")
        rate = None if parsed is None else parsed.value / 8
    options = RelayOptions(
        group=spec,
        peers=tuple(args.peers),
        iface=args.iface,
        port=args.port,
        listen=args.listen,
        ttl=args.ttl,
        key=group_key(args, args.group),
        rate_bytes=rate,
        duration=args.duration,
        stats_every=args.stats,
    )

    def show(stats: dict[str, object]) -> None:
        if args.json:
            emit_json(stats)
        else:
            counters = stats["counters"]
            assert isinstance(counters, dict)
            say(
                f"{stats['seconds']:>8}s  relays {len(stats['relays'])}  "  # type: ignore[arg-type]
                f"forwarded {counters.get('forwarded', 0)}  emitted {counters.get('emitted', 0)}  "
                f"unicast in {counters.get('unicast-in', 0)} out {counters.get('unicast-out', 0)}"
            )

    peers = ", ".join(args.peers) or "none yet: other relays must name this one"
    note(f"relaying {spec} on port {args.port}; relays: {peers}; Ctrl-C to stop")
    if options.key is None:
        note(
            f"warning: the relay is open: any host that reaches UDP port {args.port} can "
            "join as a relay, read and inject; give a key (docs/security.md)"
        )
    with signals.CtrlC() as pressed:
        relay = run_relay(options, stop=pressed, on_stats=show)
    summary = relay.stats()
    if args.json:
        emit_json({"summary": summary})
    else:
        show(summary)
        dropped = {k: v for k, v in summary["counters"].items() if k.startswith("dropped:")}
        if dropped:
            note("dropped: " + ", ".join(f"{k[8:]} {v}" for k, v in dropped.items()))
    return signals.exit_code(0)
